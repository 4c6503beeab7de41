//! Submitting and correcting: a unit's sheets signed (or taken from offline files), checked
//! against the definition, journaled (fsynced) before the first byte is sent, and delivered to
//! the township with retries; every answer is journaled before the next call. What happens is
//! told to a [`Clerk`], line by line; the binary prints it.

use crate::config::{Identity, VillageConfig};
use crate::error::{Error, Result};
use crate::journal::{Entry, Journal, Record, State};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tally_core::sheet::{ROUND_MAX, Round, TallySheet};
use tally_proto::SignedSheet;
use tally_rpc::pb;
use tally_rpc::pb::township_client::TownshipClient;
use tonic::transport::Endpoint;

/// Where submitting tells the clerk what happens: `say` lines are for standard output (what
/// became of each sheet), `warn` lines for standard error (a call that will be made again).
pub trait Clerk {
    fn say(&self, line: &str);
    fn warn(&self, line: &str);
}

/// How a submit or a correction ended, for the command's exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivered {
    /// Every sheet was delivered (or there was nothing to send).
    Clean,
    /// Some sheets were refused (by the township, or here before sending); the others went
    /// through.
    Refused,
    /// Some sheets are still pending after the retry window; they are safe in the journal and
    /// the same command sends them.
    Pending,
}

/// The most sheets in one Submit call (the township's bound).
pub const SUBMIT_SHEETS_MAX: usize = 64;
/// The first pause after a failed call; it doubles after each failure.
pub const RETRY_PAUSE_FIRST: Duration = Duration::from_millis(200);
/// The longest pause between two calls.
pub const RETRY_PAUSE_MAX: Duration = Duration::from_secs(5);
/// How long one call may take, answer included (the township fsyncs before it answers).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long connecting to the township may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// The default of `--retry-for`, seconds.
pub const RETRY_FOR_SECS_DEFAULT: u64 = 120;

/// Now, in milliseconds since the Unix epoch (0 before it).
pub fn now_unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A round as given on the command line (`--round`), within 1 to [`ROUND_MAX`].
pub fn check_round(round: u32) -> Result<Round> {
    if !(1..=ROUND_MAX).contains(&round) {
        return Err(Error::Round {
            round,
            max: ROUND_MAX,
        });
    }
    Ok(Round(round))
}

/// A sheet ready to journal: signed by this unit and checked against the definition.
struct Ready {
    signed: SignedSheet,
    sheet: TallySheet,
    source: String,
}

/// What one run refused before sending: the file or sheet, and why (told to the clerk).
struct LocalRefusals<'a> {
    count: usize,
    clerk: &'a dyn Clerk,
}

impl<'a> LocalRefusals<'a> {
    fn new(clerk: &'a dyn Clerk) -> Self {
        LocalRefusals { count: 0, clerk }
    }

    fn refuse(&mut self, what: &str, why: &str) {
        self.count += 1;
        let clerk = self.clerk;
        clerk.say(&format!("{what}: not submitted: {why}"));
    }
}

/// Reads the files named on the command line into signed sheets of this unit, refusing
/// (and saying why) any that is not this unit's or does not pass the checks.
fn read_files(
    config: &VillageConfig,
    identity: &Identity,
    files: &[PathBuf],
    refusals: &mut LocalRefusals<'_>,
) -> Vec<Ready> {
    let mut ready = Vec::new();
    for path in files {
        let name = path.display().to_string();
        if path.extension().is_some_and(|e| e == "toml") {
            let sheet = match std::fs::read_to_string(path)
                .map_err(Error::io(format!("cannot read {name}")))
                .and_then(|text| {
                    tally_core::sheet_file::parse(&name, &text).map_err(Error::SheetFile)
                }) {
                Ok(sheet) => sheet,
                Err(e) => {
                    refusals.refuse(&name, &e.to_string());
                    continue;
                }
            };
            if let Some(sheet) = checked(config, identity, sheet, &name, refusals) {
                let signed =
                    tally_proto::sign(&sheet, &identity.key, &identity.definition.election);
                ready.push(Ready {
                    signed,
                    sheet,
                    source: name,
                });
            }
            continue;
        }
        let sheets = match crate::offline::read_offline(path) {
            Ok(sheets) => sheets,
            Err(e) => {
                refusals.refuse(&name, &e.to_string());
                continue;
            }
        };
        for (i, signed) in sheets.into_iter().enumerate() {
            let source = format!("{name} #{}", i + 1);
            let verified = match tally_proto::verify(&identity.definition, &signed) {
                Ok(v) => v,
                Err(e) => {
                    refusals.refuse(&source, &format!("{} {e}", e.code()));
                    continue;
                }
            };
            if verified.unit != config.unit_id {
                refusals.refuse(
                    &source,
                    &format!(
                        "it is unit {}'s sheet, signed with its key; this device is unit {} and submits its own sheets only",
                        verified.unit, config.unit_id
                    ),
                );
                continue;
            }
            if let Some(sheet) = checked(config, identity, verified.sheet, &source, refusals) {
                ready.push(Ready {
                    signed,
                    sheet,
                    source,
                });
            }
        }
    }
    ready
}

/// The sheet if it is this unit's and has no blocking finding; warnings are printed.
fn checked(
    config: &VillageConfig,
    identity: &Identity,
    sheet: TallySheet,
    source: &str,
    refusals: &mut LocalRefusals<'_>,
) -> Option<TallySheet> {
    let clerk = refusals.clerk;
    if sheet.unit != config.unit_id {
        refusals.refuse(
            source,
            &format!(
                "the sheet is for unit {}, but this device is unit {} ({}); each unit signs its own sheets",
                sheet.unit,
                config.unit_id,
                config.file.display()
            ),
        );
        return None;
    }
    let findings = tally_core::validate::check_sheet(&identity.definition, &sheet);
    for f in findings.iter().filter(|f| !f.is_error()) {
        clerk.say(&format!("{source}: warning {f}"));
    }
    if findings.iter().any(|f| f.is_error()) {
        for f in findings.iter().filter(|f| f.is_error()) {
            clerk.say(&format!("{source}: error {f}"));
        }
        refusals.refuse(
            source,
            "the errors above block it; fix the sheet file and submit it again",
        );
        return None;
    }
    Some(sheet)
}

fn new_record(ready: &Ready, now_unix_ms: u64) -> Record {
    Record {
        contest: ready.sheet.contest.to_string(),
        round: ready.sheet.round.0,
        version: ready.sheet.version,
        replaces_version: ready.sheet.replaces_version,
        digest: hex::encode(ready.signed.digest()),
        source: ready.source.clone(),
        journaled_unix_ms: now_unix_ms,
        state: State::Pending,
        attempts: 0,
        last_attempt_unix_ms: None,
        answered_unix_ms: None,
        warnings: Vec::new(),
    }
}

/// Journals the sheets not journaled yet (one fsynced transaction) and returns the
/// sequence numbers of those that were already there, which this run sends again. A
/// different sheet under a version the journal already has is refused here: the township
/// would flag it as a conflict.
fn journal_ready(
    journal: &Journal,
    ready: Vec<Ready>,
    refusals: &mut LocalRefusals<'_>,
) -> Result<BTreeSet<u64>> {
    let clerk = refusals.clerk;
    let entries = journal.entries()?;
    let mut again = BTreeSet::new();
    let mut new: Vec<(SignedSheet, Record)> = Vec::new();
    let now = now_unix_ms();
    for r in ready {
        let record = new_record(&r, now);
        if let Some(e) = entries.iter().find(|e| e.record.digest == record.digest) {
            if !e.record.state.is_pending() {
                clerk.say(&format!(
                    "{}: {} is already in the journal ({}); sending it again",
                    r.source,
                    e.label(),
                    e.record.state.short()
                ));
            }
            again.insert(e.seq);
            continue;
        }
        if new.iter().any(|(_, n)| n.digest == record.digest) {
            continue;
        }
        let same_version = entries
            .iter()
            .map(|e| &e.record)
            .chain(new.iter().map(|(_, n)| n))
            .find(|o| {
                o.contest == record.contest
                    && o.round == record.round
                    && o.version == record.version
            });
        if let Some(other) = same_version {
            refusals.refuse(
                &r.source,
                &format!(
                    "version {} of contest {} round {} is already journaled as a different sheet (digest {}, {}, from {}); sending this one would be a conflict. To change that sheet, make a correction: `tally village correct --contest {} --round {} FILE`",
                    record.version,
                    record.contest,
                    record.round,
                    &other.digest[..16],
                    other.state.short(),
                    other.source,
                    record.contest,
                    record.round
                ),
            );
            continue;
        }
        new.push((r.signed, record));
    }
    if !new.is_empty() {
        journal.append(&new)?;
        clerk.say(&format!(
            "journaled {} new sheet{} in {}",
            new.len(),
            if new.len() == 1 { "" } else { "s" },
            journal.path().display()
        ));
    }
    Ok(again)
}

/// `tally village submit`: signs (sheet files) or takes (offline files) this unit's sheets,
/// journals the new ones and sends every pending one to the township.
pub fn submit(
    config_path: &Path,
    retry_for: Duration,
    files: &[PathBuf],
    clerk: &dyn Clerk,
) -> Result<Delivered> {
    let config = VillageConfig::load(config_path)?;
    let identity = config.check_identity()?;
    let journal = Journal::open(&config.journal, &config.unit_id)?;
    let mut refusals = LocalRefusals::new(clerk);
    let ready = read_files(&config, &identity, files, &mut refusals);
    let again = journal_ready(&journal, ready, &mut refusals)?;
    deliver(&config, &identity, &journal, &again, retry_for, refusals)
}

/// `tally village correct`: the sheet in `file` as the next version of its slot (contest,
/// round), replacing the journal's highest, signed, journaled and sent.
pub fn correct(
    config_path: &Path,
    contest: &str,
    round: Option<u32>,
    retry_for: Duration,
    file: &Path,
    clerk: &dyn Clerk,
) -> Result<Delivered> {
    let config = VillageConfig::load(config_path)?;
    let identity = config.check_identity()?;
    let name = file.display().to_string();
    let text = std::fs::read_to_string(file)
        .map_err(Error::io(format!("cannot read the sheet file {name}")))?;
    let mut sheet = tally_core::sheet_file::parse(&name, &text).map_err(Error::SheetFile)?;
    if sheet.contest.as_str() != contest {
        return Err(Error::Correction(format!(
            "{name} is a sheet of contest {}, not {contest}; give the file of contest {contest}, or --contest {}",
            sheet.contest, sheet.contest
        )));
    }
    let round = check_round(round.unwrap_or(sheet.round.0))?;
    if sheet.round != round {
        return Err(Error::Correction(format!(
            "{name} is a sheet of round {}, not {}; give the file of round {}, or --round {}",
            sheet.round.0, round.0, round.0, sheet.round.0
        )));
    }
    let journal = Journal::open(&config.journal, &config.unit_id)?;
    let highest = journal
        .entries()?
        .into_iter()
        .filter(|e| e.record.contest == contest && e.record.round == round.0)
        .map(|e| e.record.version)
        .max();
    let Some(highest) = highest else {
        return Err(Error::Correction(format!(
            "nothing to correct: the journal {} holds no sheet of contest {contest}, round {}; send the first version with `tally village submit`",
            journal.path().display(),
            round.0
        )));
    };
    if sheet.version != highest + 1 || sheet.replaces_version != Some(highest) {
        clerk.say(&format!(
            "{name}: made version {} replacing version {highest}, the journal's highest (the file says version {}{})",
            highest + 1,
            sheet.version,
            sheet
                .replaces_version
                .map_or(String::new(), |r| format!(", replaces_version {r}"))
        ));
    }
    sheet.version = highest + 1;
    sheet.replaces_version = Some(highest);
    let mut refusals = LocalRefusals::new(clerk);
    let source = format!("correct {name}");
    let Some(sheet) = checked(&config, &identity, sheet, &source, &mut refusals) else {
        return Ok(Delivered::Refused);
    };
    let signed = tally_proto::sign(&sheet, &identity.key, &identity.definition.election);
    let ready = Ready {
        signed,
        sheet,
        source,
    };
    let again = journal_ready(&journal, vec![ready], &mut refusals)?;
    deliver(&config, &identity, &journal, &again, retry_for, refusals)
}

/// Whether a failed call may succeed if made again: the township or the link was down,
/// slow or busy. Anything else (a refused certificate, a malformed request) needs a person.
fn worth_retrying(code: tonic::Code) -> bool {
    matches!(
        code,
        tonic::Code::Unavailable
            | tonic::Code::DeadlineExceeded
            | tonic::Code::Unknown
            | tonic::Code::Cancelled
            | tonic::Code::ResourceExhausted
            | tonic::Code::Aborted
            | tonic::Code::Internal
    )
}

/// The state a township's answer puts a sheet in.
fn state_of(outcome: &pb::SheetOutcome) -> Result<State> {
    use pb::sheet_outcome::Kind;
    let kind = Kind::try_from(outcome.kind).unwrap_or(Kind::Unspecified);
    Ok(match kind {
        Kind::Accepted | Kind::Duplicate | Kind::Superseded => State::Delivered {
            outcome: kind.as_str_name().to_owned(),
        },
        Kind::Conflict => State::Refused {
            outcome: "CONFLICT".into(),
            code: "conflict".into(),
            message: outcome.message.clone(),
        },
        Kind::Refused => State::Refused {
            outcome: "REFUSED".into(),
            code: outcome.code.clone(),
            message: outcome.message.clone(),
        },
        Kind::Unspecified => {
            return Err(Error::Answer(format!(
                "the township answered an outcome of kind {} for a sheet, which this version of tally does not know",
                outcome.kind
            )));
        }
    })
}

fn tell_entry(clerk: &dyn Clerk, entry: &Entry) {
    let digest = &entry.record.digest[..12];
    match &entry.record.state {
        State::Refused { message, .. } => clerk.say(&format!(
            "{} ({digest}): {}: {message}",
            entry.label(),
            entry.record.state.short()
        )),
        state => clerk.say(&format!("{} ({digest}): {}", entry.label(), state.short())),
    }
    for w in &entry.record.warnings {
        clerk.say(&format!("    warning {w}"));
    }
}

/// Sends every pending sheet, and the journaled sheets in `again`, to the township, oldest
/// first, in calls of up to [`SUBMIT_SHEETS_MAX`]. A call that fails for a reason worth
/// retrying is made again after a pause that doubles from [`RETRY_PAUSE_FIRST`] to
/// [`RETRY_PAUSE_MAX`], until `retry_for` has passed (the first call is always made, the
/// last one at the deadline); each answer is recorded in the journal
/// (fsynced) before the next call.
fn deliver(
    config: &VillageConfig,
    identity: &Identity,
    journal: &Journal,
    again: &BTreeSet<u64>,
    retry_for: Duration,
    refusals: LocalRefusals<'_>,
) -> Result<Delivered> {
    let clerk = refusals.clerk;
    let mut to_send: Vec<Entry> = journal
        .entries()?
        .into_iter()
        .filter(|e| e.record.state.is_pending() || again.contains(&e.seq))
        .collect();
    if to_send.is_empty() {
        clerk.say("nothing to send: the journal holds no pending sheet");
        return Ok(if refusals.count > 0 {
            Delivered::Refused
        } else {
            Delivered::Clean
        });
    }
    let address = config.township.clone();
    let tls = identity.tls.clone();
    let deadline = Instant::now() + retry_for;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Error::io("cannot start the async runtime".into()))?;
    let mut answered = 0;
    let mut last_error = String::new();
    let result: Result<()> = runtime.block_on(async {
        let channel = Endpoint::from_shared(format!("https://{address}"))
            .map_err(|cause| Error::Transport {
                what: format!(
                    "{}: township {address} is not host:port: ",
                    config.file.display()
                ),
                cause,
            })?
            .tls_config(tls)
            .map_err(|cause| Error::Transport {
                what: String::new(),
                cause,
            })?
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(CALL_TIMEOUT)
            .connect_lazy();
        let mut client = TownshipClient::new(channel);
        let mut pause = RETRY_PAUSE_FIRST;
        for chunk in to_send.chunks_mut(SUBMIT_SHEETS_MAX) {
            let request = pb::SubmitRequest {
                sheets: chunk.iter().map(|e| e.signed.to_pb()).collect(),
                source: String::new(),
            };
            let response = loop {
                let now = now_unix_ms();
                for e in chunk.iter_mut() {
                    e.record.attempts += 1;
                    e.record.last_attempt_unix_ms = Some(now);
                }
                match client.submit(request.clone()).await {
                    Ok(response) => break response.into_inner(),
                    Err(status) if worth_retrying(status.code()) => {
                        last_error = format!("{:?}: {}", status.code(), status.message());
                        // The last try is made at the deadline, not a pause before it.
                        let left = deadline.saturating_duration_since(Instant::now());
                        if left.is_zero() {
                            return Ok(());
                        }
                        let wait = pause.min(left);
                        clerk.warn(&format!(
                            "township {address} did not take the sheets ({last_error}); trying again in {} ms",
                            wait.as_millis()
                        ));
                        tokio::time::sleep(wait).await;
                        pause = (pause * 2).min(RETRY_PAUSE_MAX);
                    }
                    Err(status) => {
                        return Err(Error::CallRefused {
                            address: address.clone(),
                            code: status.code(),
                            message: status.message().to_owned(),
                        });
                    }
                }
            };
            pause = RETRY_PAUSE_FIRST;
            if response.outcomes.len() != chunk.len() {
                return Err(Error::Answer(format!(
                    "township {address} answered {} outcomes for {} sheets",
                    response.outcomes.len(),
                    chunk.len()
                )));
            }
            let now = now_unix_ms();
            let mut updates = Vec::new();
            for (entry, outcome) in chunk.iter_mut().zip(&response.outcomes) {
                if !outcome.digest.is_empty() && outcome.digest != entry.record.digest {
                    return Err(Error::Answer(format!(
                        "township {address} answered for sheet {} where {} ({}) was sent",
                        outcome.digest,
                        entry.label(),
                        entry.record.digest
                    )));
                }
                entry.record.state = state_of(outcome)?;
                entry.record.warnings = outcome.warnings.clone();
                entry.record.answered_unix_ms = Some(now);
                updates.push((entry.seq, entry.record.clone()));
            }
            journal.update(&updates)?;
            for entry in chunk.iter() {
                tell_entry(clerk, entry);
            }
            answered += chunk.len();
        }
        Ok(())
    });
    // Attempts on sheets still unanswered are recorded too, so status shows them; a sheet
    // answered before a resend keeps its earlier state.
    let stored = journal.entries()?;
    let unanswered: Vec<(u64, Record)> = to_send[answered..]
        .iter()
        .map(|e| {
            let mut record = stored
                .iter()
                .find(|s| s.seq == e.seq)
                .map_or_else(|| e.record.clone(), |s| s.record.clone());
            record.attempts = e.record.attempts;
            record.last_attempt_unix_ms = e.record.last_attempt_unix_ms;
            (e.seq, record)
        })
        .collect();
    journal.update(&unanswered)?;
    let pending = unanswered
        .iter()
        .filter(|(_, r)| r.state.is_pending())
        .count();
    if let Err(e) = result {
        return Err(e.context(format!(
            "{pending} sheet{} stay pending in the journal {}; once the cause is fixed, run `tally village submit --config {}` to send them",
            if pending == 1 { "" } else { "s" },
            journal.path().display(),
            config.file.display()
        )));
    }
    let refused = to_send[..answered]
        .iter()
        .filter(|e| matches!(e.record.state, State::Refused { .. }))
        .count();
    let delivered = answered - refused;
    clerk.say(&format!(
        "{delivered} delivered, {refused} refused by the township, {} refused here, {pending} pending",
        refusals.count
    ));
    if pending > 0 {
        clerk.say(&format!(
            "{pending} sheet{} still pending after {} s: the township at {address} {} ({last_error}). They are safe in the journal {}; run the same command again to resend them.",
            if pending == 1 { " is" } else { "s are" },
            retry_for.as_secs(),
            // The township answered and stored nothing (its disk is full, its outbox is
            // full), or nothing answered at all.
            if last_error.contains(": the township") {
                "did not store them"
            } else {
                "did not answer"
            },
            journal.path().display()
        ));
        return Ok(Delivered::Pending);
    }
    if refused > 0 || refusals.count > 0 {
        clerk.say(
            "Refused sheets are not counted: fix what the message says, then send a corrected version with `tally village correct`.",
        );
        return Ok(Delivered::Refused);
    }
    Ok(Delivered::Clean)
}
