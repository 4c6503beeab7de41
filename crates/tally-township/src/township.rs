//! The aggregator's core: the checks every incoming sheet goes through, and the writer that
//! stores them with one transaction and one fsync per group of submits.
//!
//! A submit is checked on the blocking pool (signatures, the caller's unit, the township,
//! validation), then handed to the writer task with everything it needs. The writer takes that
//! submit and every other already queued (up to [`GROUP_SUBMITS_MAX`]), decides each sheet
//! against the book (`crate::book`), writes the group in one transaction, and only then
//! answers all of them: a sheet is acknowledged only once it is on disk.

use crate::book::{Book, Decision, Pending, lock};
use crate::config::OutboxSettings;
use crate::disk::Disk;
use crate::store::{Digest, GroupWrite, Note, SheetRecord, Store, StoredSheet};
use std::sync::{Arc, Mutex};
use tally_core::definition::Definition;
use tally_core::ids::{TownshipId, UnitId};
use tally_core::sheet::TallySheet;
use tally_core::validate;
use tally_proto::SignedSheet;
use tally_rpc::pb;
use tally_rpc::pb::sheet_outcome::Kind;
use tokio::sync::{Notify, mpsc, oneshot};
use tonic::Status;

/// The most sheets one Submit or Import may carry.
pub const SUBMIT_SHEETS_MAX: usize = 64;
/// Submits waiting for the writer before callers wait for room.
pub const SUBMITS_QUEUED_MAX: usize = 1024;
/// The most submits stored in one transaction.
pub const GROUP_SUBMITS_MAX: usize = 256;

/// The township aggregator's shared core: its definition, database, book and writer queue.
/// The gRPC service, the forwarder and the picture all work through it.
pub struct Township {
    pub(crate) township: TownshipId,
    pub(crate) name: String,
    /// The definition in force here: the township's own file, and the amendments learned
    /// from the county since it started (crate::amend), which its intake checks sheets
    /// against. Replaced whole when an amendment applies.
    definition: Mutex<Arc<Definition>>,
    /// The digest of the township's own definition file (tally_core::canonical), sent with
    /// every batch: the county refuses a batch forwarded under another definition than its
    /// founding one (E213).
    pub(crate) definition_digest: String,
    /// The log index of the last amendment learned from the county (0: none yet).
    pub(crate) acts_after: Mutex<u64>,
    pub(crate) settings: OutboxSettings,
    /// The database, closed after a storage failure and opened again by the next write.
    pub(crate) disk: Arc<Disk>,
    pub(crate) book: Arc<Mutex<Book>>,
    /// The writer's queue; taken away when the aggregator stops, which ends the writer once it
    /// has stored what was queued.
    writer: Mutex<Option<mpsc::Sender<Job>>>,
    /// Woken when sheets enter the outbox.
    pub(crate) wake: Arc<Notify>,
    /// The picture's results, computed at a book generation.
    pub(crate) results_cache: Mutex<Option<(u64, Arc<tally_core::results::ElectionResult>)>>,
    /// Counters and histogram for `GET /metrics`.
    pub(crate) metrics: Arc<crate::metrics::Metrics>,
}

/// A submit waiting for the writer.
struct Job {
    items: Vec<Item>,
    source: String,
    reply: oneshot::Sender<Result<Vec<pb::SheetOutcome>, Status>>,
}

/// One sheet of a submit, after the checks.
pub(crate) enum Item {
    Refused {
        outcome: pb::SheetOutcome,
        note: Note,
    },
    Passed(Passed),
}

/// A sheet that passed every check: verified, its unit's, of this township, without errors.
pub(crate) struct Passed {
    signed: SignedSheet,
    sheet: TallySheet,
    digest: Digest,
    warnings: Vec<String>,
}

/// A mutex's value, also after a panic elsewhere poisoned it (each value here is replaced
/// whole, so it is never seen half-changed).
pub(crate) fn held<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub(crate) fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The first characters of a hex digest, for log lines and messages.
pub(crate) fn short(digest: &Digest) -> String {
    hex::encode(&digest[..6])
}

impl Township {
    /// Makes the core and starts its writer task on the current tokio runtime. The writer ends
    /// once the last `Arc<Township>` is dropped and the queued submits are stored.
    pub(crate) fn new(
        township: TownshipId,
        definition: Arc<Definition>,
        settings: OutboxSettings,
        store: Store,
        book: Book,
    ) -> (Arc<Township>, tokio::task::JoinHandle<()>) {
        let disk = Arc::new(Disk::new(store, township.clone()));
        let name = definition
            .township(&township)
            .map(|t| t.name.clone())
            .unwrap_or_default();
        let (writer, queue) = mpsc::channel(SUBMITS_QUEUED_MAX);
        let book = Arc::new(Mutex::new(book));
        let wake = Arc::new(Notify::new());
        let metrics = Arc::new(crate::metrics::Metrics::default());
        let task = tokio::spawn(run_writer(
            queue,
            disk.clone(),
            book.clone(),
            wake.clone(),
            settings,
            township.clone(),
            metrics.clone(),
        ));
        let core = Arc::new(Township {
            township,
            name,
            definition_digest: tally_core::canonical::digest(&definition).to_string(),
            definition: Mutex::new(definition),
            acts_after: Mutex::new(0),
            settings,
            disk,
            book,
            writer: Mutex::new(Some(writer)),
            wake,
            results_cache: Mutex::new(None),
            metrics,
        });
        (core, task)
    }

    /// Takes no more submits; the writer stores what is queued and ends.
    pub(crate) fn close_writer(&self) {
        self.writer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
    }

    pub fn township_id(&self) -> &TownshipId {
        &self.township
    }

    /// The definition in force here (the township's file and the amendments learned).
    pub fn definition(&self) -> Arc<Definition> {
        Arc::clone(&held(&self.definition))
    }

    /// Puts an amended definition in force (crate::amend).
    pub(crate) fn amend(&self, amended: Arc<Definition>) {
        *held(&self.definition) = amended;
        // The picture's provisional result reflects the amendments too.
        held(&self.results_cache).take();
    }

    /// Sheets stored and not yet answered by the county.
    pub fn outbox_depth(&self) -> u64 {
        lock(&self.book).outbox.len() as u64
    }

    /// Every stored sheet's digest and record, in arrival order.
    pub fn records(&self) -> Vec<(Digest, SheetRecord)> {
        let book = lock(&self.book);
        let mut records: Vec<(Digest, SheetRecord)> =
            book.records.iter().map(|(d, r)| (*d, r.clone())).collect();
        records.sort_by_key(|(_, r)| r.seq);
        records
    }

    /// Checks and stores sheets: `caller_unit` is the polling unit whose certificate sent them
    /// (Submit), or `None` for the township clerk or an operator (Import). Answers one outcome
    /// per sheet, in order, once the stored ones are on disk.
    pub async fn take(
        &self,
        envelopes: Vec<pb::SignedSheet>,
        caller_unit: Option<UnitId>,
        source: String,
    ) -> Result<Vec<pb::SheetOutcome>, Status> {
        let n = envelopes.len();
        if n == 0 || n > SUBMIT_SHEETS_MAX {
            return Err(Status::invalid_argument(format!(
                "a submit carries 1 to {SUBMIT_SHEETS_MAX} sheets; this one has {n}: send them in parts"
            )));
        }
        let definition = self.definition();
        let township = self.township.clone();
        let received = unix_ms();
        let items = tokio::task::spawn_blocking(move || {
            check_sheets(
                &definition,
                &township,
                caller_unit.as_ref(),
                envelopes,
                received,
            )
        })
        .await
        .map_err(|e| {
            if e.is_cancelled() {
                Status::unavailable(
                    "the township aggregator is shutting down; nothing was stored: send again",
                )
            } else {
                Status::internal(format!("checking the sheets failed: {e}"))
            }
        })?;
        let (reply, answer) = oneshot::channel();
        let stopping = || {
            Status::unavailable(
                "the township aggregator is shutting down; nothing was stored: send again",
            )
        };
        let writer = self
            .writer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
            .ok_or_else(stopping)?;
        writer
            .send(Job {
                items,
                source,
                reply,
            })
            .await
            .map_err(|_| stopping())?;
        answer.await.map_err(|_| stopping())?
    }
}

// ---------------------------------------------------------------- checks

fn outcome(kind: Kind, code: &str, message: String, digest: &Digest) -> pb::SheetOutcome {
    pb::SheetOutcome {
        kind: kind as i32,
        code: code.to_owned(),
        message,
        warnings: Vec::new(),
        digest: hex::encode(digest),
    }
}

/// A refused sheet: its outcome for the caller and its note for the picture. The sheet's
/// unit, contest, round and version in the note are what it claims (unverified).
fn refusal(code: &str, message: String, signed: &SignedSheet, received: u64) -> Item {
    let message = match message.strip_prefix(code) {
        Some(rest) => rest.trim_start_matches(':').trim_start().to_owned(),
        None => message,
    };
    let digest = signed.digest();
    let claimed = tally_proto::decode_sheet(&signed.sheet).ok();
    Item::Refused {
        note: Note {
            unit: claimed
                .as_ref()
                .map(|s| s.unit.to_string())
                .unwrap_or_default(),
            contest: claimed
                .as_ref()
                .map(|s| s.contest.to_string())
                .unwrap_or_default(),
            round: claimed.as_ref().map_or(0, |s| s.round.0),
            version: claimed.as_ref().map_or(0, |s| s.version),
            digest: hex::encode(digest),
            refused_by: "township".to_owned(),
            code: code.to_owned(),
            messages: vec![message.clone()],
            received_unix_ms: received,
            // Set by `check_sheets`, which knows the caller.
            from: None,
        },
        outcome: outcome(Kind::Refused, code, message, &digest),
    }
}

/// The checks of every sheet, in order: the envelope decodes and its signature is the
/// registered key's of the unit it reports for (E204, E205, E206); the caller's certificate
/// is that unit's (E205); the unit is of this township (E210); and validation finds no
/// blocking error (the warnings go with the sheet).
pub(crate) fn check_sheets(
    definition: &Definition,
    township: &TownshipId,
    caller_unit: Option<&UnitId>,
    envelopes: Vec<pb::SignedSheet>,
    received: u64,
) -> Vec<Item> {
    let mut items: Vec<Option<Item>> = Vec::with_capacity(envelopes.len());
    let mut signed = Vec::with_capacity(envelopes.len());
    let mut positions = Vec::with_capacity(envelopes.len());
    for (i, envelope) in envelopes.into_iter().enumerate() {
        match SignedSheet::from_pb(envelope.clone()) {
            Ok(s) => {
                signed.push(s);
                positions.push(i);
                items.push(None);
            }
            Err(e) => {
                let digest: Digest = sha256(&envelope.sheet);
                let message = format!(
                    "malformed signed sheet: {e}; fix the sending software's encoder (see docs/signing.md)"
                );
                items.push(Some(Item::Refused {
                    note: Note {
                        unit: String::new(),
                        contest: String::new(),
                        round: 0,
                        version: 0,
                        digest: hex::encode(digest),
                        refused_by: "township".to_owned(),
                        code: "E206".to_owned(),
                        messages: vec![message.clone()],
                        received_unix_ms: received,
                        from: None,
                    },
                    outcome: outcome(Kind::Refused, "E206", message, &digest),
                }));
            }
        }
    }
    let verified = tally_proto::verify_batch(definition, &signed);
    for ((signed, verified), position) in signed.into_iter().zip(verified).zip(positions) {
        items[position] = Some(check_one(
            definition,
            township,
            caller_unit,
            signed,
            verified,
            received,
        ));
    }
    items
        .into_iter()
        .map(|item| {
            let mut item = item.expect("every position is filled above");
            if let Item::Refused { note, .. } = &mut item {
                note.from = Some(note_sender(definition, township, caller_unit, &note.unit));
            }
            item
        })
        .collect()
}

/// Whom a refusal is kept against for the per-sender caps (`store::Note::from`): the unit
/// whose certificate sent it, which no other caller can pose as; for the clerk's imports the
/// unit the sheet names when it is one of this township's; else nobody (empty), one list for
/// every sheet that names no unit of this township.
fn note_sender(
    definition: &Definition,
    township: &TownshipId,
    caller_unit: Option<&UnitId>,
    claimed_unit: &str,
) -> String {
    match caller_unit {
        Some(unit) => unit.to_string(),
        None => definition
            .unit(&UnitId::new(claimed_unit))
            .filter(|u| &u.township == township)
            .map(|u| u.id.to_string())
            .unwrap_or_default(),
    }
}

/// SHA-256 of bytes that did not even make an envelope: the same name a sheet has everywhere.
fn sha256(bytes: &[u8]) -> Digest {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes).into()
}

fn check_one(
    definition: &Definition,
    township: &TownshipId,
    caller_unit: Option<&UnitId>,
    signed: SignedSheet,
    verified: Result<tally_proto::VerifiedSheet, tally_proto::Error>,
    received: u64,
) -> Item {
    let verified = match verified {
        Ok(v) => v,
        Err(e) => {
            let mut item = refusal(e.code(), e.to_string(), &signed, received);
            // Bytes that do not decode claim no unit; the key that signed them names one,
            // which is the polling unit the clerk should call.
            if let Item::Refused { note, .. } = &mut item
                && note.unit.is_empty()
                && let Some(unit) = definition.unit_by_key(&signed.key_id)
            {
                note.unit = unit.id.to_string();
            }
            return item;
        }
    };
    let label = verified.sheet.label();
    if let Some(caller) = caller_unit
        && *caller != verified.unit
    {
        return refusal(
            validate::Code::KeyNotUnits.as_str(),
            format!(
                "this connection's certificate is polling unit {caller}'s, but the sheet ({label}) is unit {}'s, signed with its key; a unit submits only its own sheets: unit {} sends it with its own certificate, or the township clerk imports it",
                verified.unit, verified.unit
            ),
            &signed,
            received,
        );
    }
    let unit_township = definition.unit(&verified.unit).map(|u| u.township.clone());
    if unit_township.as_ref() != Some(township) {
        return refusal(
            validate::Code::UnitOfAnotherTownship.as_str(),
            format!(
                "unit {} belongs to township {}, not to township {township}; this aggregator takes only its own units' sheets: send the sheet to township {}'s aggregator",
                verified.unit,
                unit_township
                    .as_ref()
                    .map_or("(none)".to_owned(), ToString::to_string),
                unit_township
                    .as_ref()
                    .map_or("(none)".to_owned(), ToString::to_string),
            ),
            &signed,
            received,
        );
    }
    let findings = validate::check_sheet(definition, &verified.sheet);
    if let Some((code, message)) = validate::refusal(&findings) {
        return refusal(
            code.as_str(),
            format!("{label}: {message}; the unit corrects the sheet and signs it again"),
            &signed,
            received,
        );
    }
    let warnings = findings
        .iter()
        .map(|f| format!("{} {}: {}", f.code.as_str(), f.field, f.message))
        .collect();
    Item::Passed(Passed {
        digest: verified.digest,
        sheet: verified.sheet,
        signed,
        warnings,
    })
}

// ---------------------------------------------------------------- the writer

async fn run_writer(
    mut queue: mpsc::Receiver<Job>,
    disk: Arc<Disk>,
    book: Arc<Mutex<Book>>,
    wake: Arc<Notify>,
    settings: OutboxSettings,
    township: TownshipId,
    metrics: Arc<crate::metrics::Metrics>,
) {
    while let Some(first) = queue.recv().await {
        let mut jobs = vec![first];
        while jobs.len() < GROUP_SUBMITS_MAX {
            match queue.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        commit_group(jobs, &disk, &book, &wake, settings, &township, &metrics).await;
    }
}

/// What was decided for one submit.
struct Decided {
    reply: oneshot::Sender<Result<Vec<pb::SheetOutcome>, Status>>,
    answer: Result<Vec<pb::SheetOutcome>, Status>,
    /// Log lines to write once the outcome is durable.
    log: Vec<LogLine>,
}

/// One sheet's decision as a log line: every line about one sheet carries `sheet` (the digest's
/// first 12 hex digits), `unit`, `contest`, `round` and `version`, so a log search for any of
/// them finds it.
struct LogLine {
    /// The digest's first 12 hex digits.
    sheet: String,
    /// As the sheet claims (empty when it does not decode).
    unit: String,
    contest: String,
    round: u32,
    version: u32,
    kind: Kind,
    code: String,
    message: String,
    warnings: usize,
}

/// The store, opened again first if a storage failure closed it (which rebuilds the book, so
/// it runs before any decision is taken against the book).
async fn open_store(disk: &Arc<Disk>, book: &Arc<Mutex<Book>>) -> Result<Arc<Store>, Status> {
    // The usual case, without a trip to the blocking pool.
    if let Some(store) = disk.open_store() {
        return Ok(store);
    }
    let (disk, book) = (disk.clone(), book.clone());
    match tokio::task::spawn_blocking(move || disk.store(&book)).await {
        Ok(Ok(store)) => Ok(store),
        Ok(Err(failure)) => Err(failure.status()),
        Err(e) => Err(Status::unavailable(format!(
            "opening the township's database did not finish ({e}); nothing of this call was stored: send it again"
        ))),
    }
}

async fn commit_group(
    jobs: Vec<Job>,
    disk: &Arc<Disk>,
    book: &Arc<Mutex<Book>>,
    wake: &Notify,
    settings: OutboxSettings,
    township: &TownshipId,
    metrics: &crate::metrics::Metrics,
) {
    let store = match open_store(disk, book).await {
        Ok(store) => store,
        Err(status) => {
            tracing::warn!(%township, submits = jobs.len(), "{}", status.message());
            for job in jobs {
                let _ = job.reply.send(Err(status.clone()));
            }
            return;
        }
    };
    let now = unix_ms();
    let mut group = GroupWrite::default();
    let mut decided = Vec::with_capacity(jobs.len());
    let mut group_pending = Pending::default();
    {
        let mut book = lock(book);
        for job in jobs {
            decided.push(decide_job(
                job,
                &mut book,
                &mut group,
                &mut group_pending,
                settings,
                now,
            ));
        }
        group.next_seq = book.next_seq;
        group.next_note = book.next_note;
    }
    let stored_any = !group.sheets.is_empty();
    let write = if stored_any || !group.notes.is_empty() {
        let disk = disk.clone();
        let group_for_write = std::mem::take(&mut group);
        match tokio::task::spawn_blocking(move || {
            store
                .write_group(&group_for_write)
                .map(|()| {
                    disk.wrote(&store);
                    group_for_write
                })
                .map_err(|e| match disk.failed(&store, &e) {
                    // The disk's doing: never acknowledged, and the store is opened again by
                    // the next write.
                    Some(failure) => failure.status(),
                    None => Status::unavailable(format!(
                        "township could not store the sheets ({e}); nothing of this call was stored: send it again"
                    )),
                })
        })
        .await
        {
            Ok(result) => result,
            Err(e) => Err(Status::unavailable(format!(
                "the township's write did not finish ({e}); nothing of this call was stored: send it again"
            ))),
        }
    } else {
        Ok(group)
    };
    let written = match write {
        Ok(written) => written,
        Err(status) => {
            tracing::error!(%township, code = ?status.code(), "cannot store sheets: {}", status.message());
            for d in decided {
                if d.answer.is_ok() {
                    let _ = d.reply.send(Err(status.clone()));
                } else {
                    let _ = d.reply.send(d.answer);
                }
            }
            return;
        }
    };
    {
        let mut book = lock(book);
        for stored in written.sheets {
            // Decided against the book under this lock's predecessor; only this task adds
            // sheets, so the decision still holds.
            if let Ok(sheet) = tally_proto::decode_sheet(&stored.signed.sheet) {
                book.ledger.submit(sheet, stored.digest);
            }
            book.units_reported.insert(stored.record.unit.clone());
            book.outbox.insert(stored.record.seq, stored.digest);
            book.records.insert(stored.digest, stored.record);
        }
        for (number, note) in written.notes {
            book.push_note(number, note);
        }
        if stored_any {
            book.generation += 1;
        }
    }
    if stored_any {
        wake.notify_one();
    }
    for d in decided {
        for line in &d.log {
            log_line(township, line);
            metrics.sheet(&line.kind.as_str_name().to_ascii_lowercase(), &line.code);
        }
        let _ = d.reply.send(d.answer);
    }
}

fn log_line(township: &TownshipId, line: &LogLine) {
    let kind = line.kind.as_str_name().to_ascii_lowercase();
    match line.kind {
        Kind::Accepted | Kind::Superseded | Kind::Duplicate => tracing::info!(
            %township,
            sheet = %line.sheet,
            unit = %line.unit,
            contest = %line.contest,
            round = line.round,
            version = line.version,
            outcome = %kind,
            warnings = line.warnings,
            "sheet {kind}"
        ),
        _ => tracing::warn!(
            %township,
            sheet = %line.sheet,
            unit = %line.unit,
            contest = %line.contest,
            round = line.round,
            version = line.version,
            outcome = %kind,
            code = %line.code,
            "sheet {kind}: {}",
            line.message
        ),
    }
}

/// Decides every sheet of one submit against the book and the sheets decided before it in
/// the same group. A submit whose new sheets would take the outbox past its capacity stores
/// nothing and is answered RESOURCE_EXHAUSTED.
fn decide_job(
    job: Job,
    book: &mut Book,
    group: &mut GroupWrite,
    group_pending: &mut Pending,
    settings: OutboxSettings,
    now: u64,
) -> Decided {
    let mut pending = Pending::default();
    let mut outcomes = Vec::with_capacity(job.items.len());
    let mut new_sheets = Vec::new();
    let mut notes = Vec::new();
    let mut log = Vec::new();
    for item in job.items {
        match item {
            Item::Refused { outcome, note } => {
                log.push(LogLine {
                    sheet: note.digest[..12.min(note.digest.len())].to_owned(),
                    unit: note.unit.clone(),
                    contest: note.contest.clone(),
                    round: note.round,
                    version: note.version,
                    kind: Kind::Refused,
                    code: outcome.code.clone(),
                    message: outcome.message.clone(),
                    warnings: 0,
                });
                notes.push(note);
                outcomes.push(outcome);
            }
            Item::Passed(p) => {
                let decision = book.decide(&[group_pending, &pending], &p.sheet, &p.digest);
                let line = |kind: Kind, code: &str, message: &str| LogLine {
                    sheet: short(&p.digest),
                    unit: p.sheet.unit.to_string(),
                    contest: p.sheet.contest.to_string(),
                    round: p.sheet.round.0,
                    version: p.sheet.version,
                    kind,
                    code: code.to_owned(),
                    message: message.to_owned(),
                    warnings: p.warnings.len(),
                };
                match decision {
                    Decision::Duplicate => {
                        let message = "stored here before; nothing changed".to_owned();
                        log.push(line(Kind::Duplicate, "", &message));
                        outcomes.push(outcome(Kind::Duplicate, "", message, &p.digest));
                    }
                    Decision::Conflict { existing } => {
                        let message = format!(
                            "another sheet ({}) holds {} here; this one is not stored. A unit corrects its report with a new version ({}, replaces_version = {}), never a second sheet under the same version",
                            short(&existing),
                            p.sheet.label(),
                            format_args!("version {}", p.sheet.version + 1),
                            p.sheet.version
                        );
                        log.push(line(Kind::Conflict, "conflict", &message));
                        notes.push(Note {
                            unit: p.sheet.unit.to_string(),
                            contest: p.sheet.contest.to_string(),
                            round: p.sheet.round.0,
                            version: p.sheet.version,
                            digest: hex::encode(p.digest),
                            refused_by: "township".to_owned(),
                            code: "conflict".to_owned(),
                            messages: vec![message.clone()],
                            received_unix_ms: now,
                            // The verified unit: the caller's own (E205 otherwise), or
                            // one of this township's for an import (E210 otherwise).
                            from: Some(p.sheet.unit.to_string()),
                        });
                        outcomes.push(outcome(Kind::Conflict, "conflict", message, &p.digest));
                    }
                    Decision::Superseded { .. } | Decision::New => {
                        let (kind, message) = match decision {
                            Decision::Superseded { highest } => (
                                Kind::Superseded,
                                format!(
                                    "version {highest} of this slot is stored here and counts; this version {} is stored and forwarded, not counted",
                                    p.sheet.version
                                ),
                            ),
                            _ => (Kind::Accepted, String::new()),
                        };
                        log.push(line(kind, "", &message));
                        let mut answer = outcome(kind, "", message, &p.digest);
                        answer.warnings = p.warnings.clone();
                        outcomes.push(answer);
                        pending.add(&p.sheet, p.digest);
                        new_sheets.push(p);
                    }
                }
            }
        }
    }
    let depth = book.outbox.len() as u64 + group.sheets.len() as u64;
    if depth + new_sheets.len() as u64 > settings.capacity {
        return Decided {
            reply: job.reply,
            answer: Err(Status::resource_exhausted(format!(
                "the township's outbox holds {depth} sheets not yet taken by the county, and {} more would pass its capacity of {}; nothing of this submit was stored: send it again later (the county has been unreachable; the township clerk sees why in `tally township picture`)",
                new_sheets.len(),
                settings.capacity
            ))),
            log: Vec::new(),
        };
    }
    group_pending.merge(pending);
    for p in new_sheets {
        let seq = book.next_seq;
        book.next_seq += 1;
        group.sheets.push(StoredSheet {
            digest: p.digest,
            record: SheetRecord {
                seq,
                unit: p.sheet.unit.to_string(),
                contest: p.sheet.contest.to_string(),
                round: p.sheet.round.0,
                version: p.sheet.version,
                received_unix_ms: now,
                source: job.source.clone(),
                warnings: p.warnings,
                county: None,
            },
            signed: p.signed,
        });
    }
    for note in notes {
        let n = book.take_note_number();
        group.notes.push((n, note));
    }
    Decided {
        reply: job.reply,
        answer: Ok(outcomes),
        log,
    }
}
