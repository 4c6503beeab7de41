//! The whole chain as processes on 127.0.0.1: a county cluster of three `tally county`
//! replicas, one `tally township` aggregator per township, and `tally village` polling units,
//! laid out by `tally::localnet` (a small synthetic county of three townships, a dev CA and a
//! certificate for every replica, township, unit and the operator). Election night's accidents
//! are played on it: the county goes away, a township is killed with a full outbox, a unit's
//! device is killed mid-submit, clerks resend and sign conflicting sheets, a sheet is tampered
//! with on the way, a unit signs for another, a sheet is corrected.
//!
//! Every test ends with the same check ([`Chain::check_county`]): every township's outbox is
//! empty, the townships hold exactly the sheets they answered ACCEPTED or SUPERSEDED, every
//! replica's hash chain holds each of them once, and the county's linearizable results equal
//! the results computed offline (`tally::intake::intake`, `tally_core::results::compute`)
//! from exactly those sheets.
//!
//! Every wait polls its condition with a deadline; a wait that runs out panics with what it
//! saw last. A failing test prints the end of every server's log and keeps its folder (and
//! names it). Every process a test starts is stopped when the test ends, passed or failed.

use pb::sheet_outcome::Kind;
use serde_json::Value;
use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tally_core::sheet::TallySheet;
use tally_net::{Identity, Role, TlsFiles};
use tally_proto::SignedSheet;
use tally_rpc::pb;
use tally_rpc::pb::township_client::TownshipClient;
use tally_tests::localnet::{LocalCounty, Proc, Tuning, Watch};
use tally_tests::{Process, Run, lay_out_county, poll, small_county, tally};
use tempfile::TempDir;
use tonic::transport::Endpoint;

/// A short raft tick, so the county elects a leader in well under a second once it is back;
/// short pauses between a township's attempts, so it notices soon; small batches, so an
/// outbox drains in several.
const TUNING: Tuning = Tuning {
    raft_tick_ms: Some(50),
    outbox_retry_max_ms: Some(300),
    outbox_batch_max: Some(16),
};

const POLL: Duration = Duration::from_millis(50);
/// How long a condition may take to hold. Generous: the machine has two cores and other
/// builds run beside the tests.
const WAIT_MAX: Duration = Duration::from_secs(60);
/// How long one `tally` command may run before the test gives up on it.
const RUN_MAX: Duration = Duration::from_secs(90);
/// `--retry-for` of the village runs that must reach their township.
const RETRY_FOR_SECS: &str = "30";
/// The delay of the slow link in [`village_killed_mid_submit_resends_and_is_counted_once`]:
/// the TLS handshake takes one such delay (the village allows 3 s to connect), and the test
/// has one delay to kill the village between the township storing a sheet and its answer
/// arriving.
const SLOW_LINK_DELAY: Duration = Duration::from_millis(2_000);

const EXIT_SUCCESS: i32 = 0;
const EXIT_REFUSED: i32 = 1;
const EXIT_PENDING: i32 = 2;
const EXIT_FINDINGS: i32 = 3;

/// The county with its servers running, and what the test has had stored.
struct Chain {
    county: LocalCounty,
    runtime: tokio::runtime::Runtime,
    watch: Watch,
    /// Every sheet a township answered ACCEPTED or SUPERSEDED: what the county must count,
    /// each once.
    stored: Vec<SignedSheet>,
    /// Files the test writes (bundles, sheet files, command output).
    scratch: PathBuf,
    runs: Cell<usize>,
    /// Kept (not removed) when the test fails.
    dir: Option<TempDir>,
}

/// A failing test (a panic anywhere, an assertion or [`Chain::fail`]) prints the end of every
/// server's log and keeps the county's folder; then the servers are stopped.
impl Drop for Chain {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let fleet = &self.county.fleet;
        for proc in fleet.replicas.values().chain(fleet.townships.values()) {
            eprintln!(
                "--- {} ({}), last lines:\n{}",
                proc.name,
                proc.log.display(),
                proc.log_tail()
            );
        }
        if let Some(dir) = self.dir.take() {
            eprintln!("--- everything is kept in {}", dir.keep().display());
        }
    }
}

impl Chain {
    /// Lays out the county, starts its three replicas and its township aggregators, and waits
    /// until a replica leads and every township answers.
    fn start() -> Chain {
        let dir = tally_tests::tempdir();
        let scratch = dir.path().join("test");
        std::fs::create_dir_all(&scratch).expect("the scratch folder");
        let county = lay_out_county(
            &dir.path().join("county"),
            &small_county(5, 3),
            Default::default(),
        );
        county.tune(&TUNING).expect("the configs take the tuning");
        let runtime = tally_tests::runtime();
        // The watch's channels spawn their workers on the runtime they are made in.
        let watch = {
            let _inside = runtime.enter();
            Watch::new(&county).expect("the operator's certificate loads")
        };
        let mut chain = Chain {
            county,
            runtime,
            watch,
            stored: Vec::new(),
            scratch,
            runs: Cell::new(0),
            dir: Some(dir),
        };
        chain.start_county();
        if let Err(e) = chain.runtime.block_on(chain.county.start_townships()) {
            chain.fail(&format!("the townships did not start: {e:#}"));
        }
        chain
    }

    /// Starts the county's replicas (again, after [`LocalCounty::kill_county`]) and waits for
    /// a leader.
    fn start_county(&mut self) {
        if let Err(e) = self.runtime.block_on(self.county.start_county()) {
            self.fail(&format!("the county did not start: {e:#}"));
        }
    }

    /// Panics with `message`; the servers' logs follow ([`Chain`]'s `Drop`).
    fn fail(&self, message: &str) -> ! {
        panic!("{message}")
    }

    /// Polls `check` until it gives a value; fails with its last error after [`WAIT_MAX`].
    fn wait_for<T>(&self, what: &str, mut check: impl FnMut(&Chain) -> Result<T, String>) -> T {
        poll(WAIT_MAX, POLL, || check(self)).unwrap_or_else(|last| {
            self.fail(&format!(
                "waited {WAIT_MAX:?} for {what}; last seen: {last}"
            ))
        })
    }

    // ---- the county's data

    fn townships(&self) -> Vec<String> {
        self.county.township_addresses.keys().cloned().collect()
    }

    /// The units of `township`, in the definition's order.
    fn units_of(&self, township: &str) -> Vec<String> {
        let generated = &self.county.generated;
        generated
            .units
            .iter()
            .filter(|u| generated.townships[u.township].id == township)
            .map(|u| u.id.to_string())
            .collect()
    }

    /// The election the generated county's sheets are signed for.
    fn election(&self) -> tally_core::definition::Election {
        self.county.generated.election()
    }

    fn unit_key(&self, unit: &str) -> &ed25519_dalek::SigningKey {
        &self
            .county
            .generated
            .units
            .iter()
            .find(|u| u.id.as_str() == unit)
            .unwrap_or_else(|| panic!("no unit {unit}"))
            .key
    }

    /// The generated sheets of `unit`, as it signed them.
    fn sheets_of(&self, unit: &str) -> Vec<(TallySheet, SignedSheet)> {
        tally_tests::sheets_of_unit(&self.county, unit)
    }

    fn signed_of(&self, unit: &str) -> Vec<SignedSheet> {
        self.sheets_of(unit).into_iter().map(|(_, s)| s).collect()
    }

    /// Writes `sheets` as a `.sheets` bundle in the scratch folder.
    fn bundle(&self, name: &str, sheets: &[SignedSheet]) -> PathBuf {
        let path = self.scratch.join(format!("{name}.sheets"));
        std::fs::write(&path, tally_proto::write_bundle(sheets)).expect("the bundle is written");
        path
    }

    fn village_config(&self, unit: &str) -> PathBuf {
        self.county.layout.village_dir(unit).join("village.toml")
    }

    fn township_config(&self, township: &str) -> PathBuf {
        self.county.layout.township_config(township)
    }

    // ---- commands

    /// Runs `tally ARGS` to its end (at most [`RUN_MAX`]).
    fn tally(&self, args: &[&str]) -> Run {
        let n = self.runs.get() + 1;
        self.runs.set(n);
        let out = self.scratch.join(format!("run-{n}.out"));
        let err = self.scratch.join(format!("run-{n}.err"));
        let child = tally()
            .args(args)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).expect("an output file"))
            .stderr(std::fs::File::create(&err).expect("an output file"))
            .spawn()
            .expect("tally starts");
        let mut child = Process(child);
        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.0.try_wait().expect("the child can be waited for") {
                break status;
            }
            if started.elapsed() > RUN_MAX {
                drop(child);
                self.fail(&format!(
                    "`tally {}` ran longer than {RUN_MAX:?}; its output so far:\n{}{}",
                    args.join(" "),
                    std::fs::read_to_string(&out).unwrap_or_default(),
                    std::fs::read_to_string(&err).unwrap_or_default()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        Run {
            // A run ended by a signal has no code; -1 shows in the assertion.
            code: status.code().unwrap_or(-1),
            stdout: std::fs::read_to_string(&out).unwrap_or_default(),
            stderr: std::fs::read_to_string(&err).unwrap_or_default(),
        }
    }

    /// `tally village submit --config <unit's> --retry-for 30 FILES...`.
    fn village_submit(&self, unit: &str, files: &[&Path]) -> Run {
        let config = self.village_config(unit);
        let mut args = vec![
            "village",
            "submit",
            "--config",
            text(&config),
            "--retry-for",
            RETRY_FOR_SECS,
        ];
        args.extend(files.iter().map(|f| text(f)));
        self.tally(&args)
    }

    /// `tally village submit` of every sheet of `unit`, which must all be answered ACCEPTED;
    /// records them as stored.
    fn report_unit(&mut self, unit: &str) {
        let sheets = self.signed_of(unit);
        let bundle = self.bundle(&format!("{unit}-first-report"), &sheets);
        let run = self.village_submit(unit, &[&bundle]);
        if run.code != EXIT_SUCCESS {
            self.fail(&format!("unit {unit} did not deliver:\n{}", run.dump()));
        }
        let states = self.journal_states(unit);
        for signed in &sheets {
            let state = states.get(&digest(signed)).map(String::as_str);
            if state != Some("delivered ACCEPTED") {
                self.fail(&format!(
                    "unit {unit}: a sheet is {state:?} in the journal, not delivered ACCEPTED\n{}",
                    run.dump()
                ));
            }
        }
        self.stored.extend(sheets);
    }

    /// `tally township import --config <township's> BUNDLE`: the clerk at the township
    /// imports sheets carried from the polling places.
    fn import(&self, township: &str, bundle: &Path) -> Run {
        self.tally(&[
            "township",
            "import",
            "--config",
            text(&self.township_config(township)),
            text(bundle),
        ])
    }

    /// Imports every sheet of `units` at `township`, which must all be answered ACCEPTED;
    /// records them as stored and returns how many.
    fn import_units(&mut self, township: &str, units: &[String]) -> usize {
        let sheets: Vec<SignedSheet> = units.iter().flat_map(|u| self.signed_of(u)).collect();
        let bundle = self.bundle(&format!("{township}-import-{}", self.runs.get()), &sheets);
        let run = self.import(township, &bundle);
        let summary = format!("accepted {}, duplicate 0,", sheets.len());
        if run.code != EXIT_SUCCESS || !run.stdout.contains(&summary) {
            self.fail(&format!(
                "township {township} did not accept the {} imported sheets:\n{}",
                sheets.len(),
                run.dump()
            ));
        }
        self.stored.extend(sheets.iter().cloned());
        sheets.len()
    }

    /// `tally submit --township T --key <T's countersigning key> --format json BUNDLE`: the
    /// county takes `bundle` from township `township` by another way than its aggregator (an
    /// operator, or a dishonest township). Returns the submit's JSON report; the run must
    /// end with exit 3, as every use here has the county refuse a sheet.
    fn submit_to_county_as(&self, township: &str, bundle: &Path) -> Value {
        let layout = &self.county.layout;
        let servers = tally_tests::servers(&self.county);
        let run = self.tally(&[
            "submit",
            "--servers",
            &servers,
            "--pki",
            text(&layout.pki),
            "--definition",
            text(&layout.county.join("election.toml")),
            "--township",
            township,
            "--key",
            text(&layout.keys.join(format!("township-{township}.key"))),
            "--retry-for",
            RETRY_FOR_SECS,
            "--format",
            "json",
            text(bundle),
        ]);
        if run.code != EXIT_FINDINGS {
            self.fail(&format!(
                "tally submit did not end with findings (exit 3):\n{}",
                run.dump()
            ));
        }
        serde_json::from_str(&run.stdout).unwrap_or_else(|e| {
            self.fail(&format!("the report is not JSON ({e}):\n{}", run.dump()))
        })
    }

    /// `tally township picture --config <township's> --format json`: its exit code and the
    /// picture.
    fn picture(&self, township: &str) -> (i32, Value) {
        self.try_picture(township).unwrap_or_else(|e| self.fail(&e))
    }

    /// [`Chain::picture`], or why there is none (the township does not answer yet).
    fn try_picture(&self, township: &str) -> Result<(i32, Value), String> {
        let run = self.tally(&[
            "township",
            "picture",
            "--config",
            text(&self.township_config(township)),
            "--format",
            "json",
        ]);
        if run.code != EXIT_SUCCESS && run.code != EXIT_FINDINGS {
            return Err(format!("tally township picture failed:\n{}", run.dump()));
        }
        let json = serde_json::from_str(&run.stdout)
            .map_err(|e| format!("the picture is not JSON ({e}):\n{}", run.dump()))?;
        Ok((run.code, json))
    }

    /// The process of township `township`'s aggregator.
    fn township(&mut self, township: &str) -> &mut Proc {
        self.county
            .fleet
            .townships
            .get_mut(township)
            .unwrap_or_else(|| panic!("township {township} runs"))
    }

    /// Starts `tally village submit --retry-for 60 BUNDLE` for `unit`, in the background.
    fn start_village_submit(&self, unit: &str, bundle: &Path) -> Proc {
        self.county
            .village(
                unit,
                "submit",
                &["--retry-for".into(), "60".into(), bundle.into()],
            )
            .expect("tally village starts")
    }

    /// Asserts that each of `sheets` is `state` in `unit`'s journal; shows the journal and
    /// `context` when one is not.
    fn assert_journal(&self, unit: &str, sheets: &[SignedSheet], state: &str, context: &str) {
        let states = self.journal_states(unit);
        for signed in sheets {
            assert_eq!(
                states.get(&digest(signed)).map(String::as_str),
                Some(state),
                "{states:?}\n{context}"
            );
        }
    }

    /// The unit's journal (`tally village status --format json`): each sheet's state by
    /// digest, as `pending`, `delivered OUTCOME` or `refused OUTCOME CODE`.
    fn journal_states(&self, unit: &str) -> BTreeMap<String, String> {
        let run = self.tally(&[
            "village",
            "status",
            "--config",
            text(&self.village_config(unit)),
            "--format",
            "json",
        ]);
        if run.code != EXIT_SUCCESS && run.code != EXIT_FINDINGS {
            self.fail(&format!("tally village status failed:\n{}", run.dump()));
        }
        let rows: Vec<Value> = serde_json::from_str(&run.stdout).unwrap_or_else(|e| {
            self.fail(&format!("the status is not JSON ({e}):\n{}", run.dump()))
        });
        rows.iter()
            .map(|row| {
                let state = row["state"].as_str().unwrap_or_default();
                let mut words = vec![state];
                if state != "pending" {
                    words.push(row["outcome"].as_str().unwrap_or_default());
                }
                if state == "refused" {
                    words.push(row["code"].as_str().unwrap_or_default());
                }
                (
                    row["digest"].as_str().unwrap_or_default().to_owned(),
                    words.join(" "),
                )
            })
            .collect()
    }

    /// Submits `sheets` to `township` over gRPC as polling unit `unit` (its own village
    /// certificate), as a unit's device that does not check what it sends would.
    fn submit_as(
        &self,
        unit: &str,
        township: &str,
        sheets: &[SignedSheet],
    ) -> Vec<pb::SheetOutcome> {
        let identity = Identity::new(Role::Village, unit).expect("a unit id");
        let (tls, _) = TlsFiles::in_dir(&self.county.layout.pki, &identity)
            .client_tls("127.0.0.1")
            .expect("the unit's certificate loads");
        let address = self.county.township_addresses[township].clone();
        let request = pb::SubmitRequest {
            sheets: sheets.iter().map(SignedSheet::to_pb).collect(),
            source: String::new(),
        };
        let answer = self.runtime.block_on(async move {
            let channel = Endpoint::from_shared(format!("https://{address}"))
                .expect("an address")
                .tls_config(tls)
                .expect("a TLS config")
                .connect_timeout(Duration::from_secs(5))
                .timeout(Duration::from_secs(30))
                .connect()
                .await
                .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
            TownshipClient::new(channel).submit(request).await
        });
        match answer {
            Ok(response) => response.into_inner().outcomes,
            Err(status) => self.fail(&format!(
                "township {township} did not answer unit {unit}'s submit: {status:?}"
            )),
        }
    }

    /// The picture of every township, over gRPC (the operator's certificate).
    fn pictures(&self) -> Result<BTreeMap<String, pb::PictureResponse>, String> {
        let mut pictures = BTreeMap::new();
        for t in self.townships() {
            let p = self
                .runtime
                .block_on(self.watch.picture(&t))
                .ok_or_else(|| format!("township {t} did not answer"))?;
            pictures.insert(t, p);
        }
        Ok(pictures)
    }

    /// Every replica's status; an error names one that does not answer.
    fn statuses(&self) -> Result<BTreeMap<u64, pb::StatusResponse>, String> {
        let mut statuses = BTreeMap::new();
        for id in self.watch.replicas.keys() {
            let s = self
                .runtime
                .block_on(self.watch.status(*id))
                .ok_or_else(|| format!("replica {id} did not answer"))?;
            statuses.insert(*id, s);
        }
        Ok(statuses)
    }

    /// Waits until the county's chain holds `sheets` sheets on every replica (and the
    /// townships' outboxes are empty); fails at once if a replica holds more.
    fn wait_counted(&self, what: &str, sheets: usize) -> BTreeMap<u64, pb::StatusResponse> {
        let sheets = sheets as u64;
        self.wait_for(what, |chain| {
            let pictures = chain.pictures()?;
            let waiting: Vec<String> = pictures
                .iter()
                .filter(|(_, p)| p.outbox.as_ref().is_some_and(|o| o.depth > 0))
                .map(|(t, p)| format!("{t}: {:?}", p.outbox))
                .collect();
            if !waiting.is_empty() {
                return Err(format!("outboxes not empty: {}", waiting.join("; ")));
            }
            let statuses = chain.statuses()?;
            for (id, s) in &statuses {
                // The chain's first record is the founding; the rest are sheets.
                let in_chain = s.chain_length.saturating_sub(1);
                if in_chain > sheets {
                    chain.fail(&format!(
                        "replica {id} holds {in_chain} sheets in its chain, more than the {sheets} the townships stored: a sheet was counted twice"
                    ));
                }
                if in_chain < sheets || s.applied_index < s.commit_index {
                    return Err(format!(
                        "replica {id}: {in_chain} of {sheets} sheets, applied {} of {}",
                        s.applied_index, s.commit_index
                    ));
                }
            }
            Ok(statuses)
        })
    }

    /// The check every test ends with: every township forwarded everything it stored and
    /// holds exactly the sheets the test had it store; every replica's chain holds each of
    /// them once, `counted` of them counting (one per unit, contest and round), and no
    /// conflict; and the county's linearizable results equal the offline results over
    /// exactly those sheets.
    fn check_county(&self, counted: usize) {
        self.check_county_with_conflicts(counted, &[]);
    }

    /// [`Chain::check_county`] for a county that has also recorded `conflicting` sheets,
    /// which reached it by another way than a township aggregator: each is in every
    /// replica's chain and the results' conflict list, and none is counted.
    fn check_county_with_conflicts(&self, counted: usize, conflicting: &[SignedSheet]) {
        let sheets = self.stored.len() as u64;
        let conflicts = conflicting.len() as u64;
        let statuses = self.wait_counted(
            "the county to hold every stored sheet",
            self.stored.len() + conflicting.len(),
        );
        let mut digests = BTreeSet::new();
        for signed in &self.stored {
            assert!(
                digests.insert(signed.digest()),
                "the test recorded a sheet as stored twice"
            );
        }
        for (id, s) in &statuses {
            // The founding, then every sheet.
            if s.chain_length != 1 + sheets + conflicts
                || s.sheets_counted != counted as u64
                || s.conflicts != conflicts
            {
                self.fail(&format!(
                    "replica {id}: chain_length {} (expected the founding, {sheets} + {conflicts} conflicting), sheets_counted {} (expected {counted}), conflicts {} (expected {conflicts})",
                    s.chain_length, s.sheets_counted, s.conflicts
                ));
            }
        }
        let pictures = self.pictures().unwrap_or_else(|e| self.fail(&e));
        let stored_at_townships: u64 = pictures.values().map(|p| p.sheets_stored).sum();
        if stored_at_townships != sheets {
            self.fail(&format!(
                "the townships hold {stored_at_townships} sheets; the test had them store {sheets}"
            ));
        }
        for (t, p) in &pictures {
            let outbox = p.outbox.clone().unwrap_or_default();
            // Not `county_reachable`: a township that has had nothing to forward since it
            // started has not called the county.
            if outbox.forwarded != p.sheets_stored || !outbox.last_error.is_empty() {
                self.fail(&format!(
                    "township {t} stored {} sheets and the county acknowledged {} (reachable {}, last error {:?})",
                    p.sheets_stored, outbox.forwarded, outbox.county_reachable, outbox.last_error
                ));
            }
        }

        let online = self.wait_for("a linearizable results read", |chain| {
            chain
                .runtime
                .block_on(chain.county.county_results())
                .map_err(|e| format!("{e:#}"))
        });
        let listed: BTreeSet<&str> = online
            .conflicts
            .iter()
            .map(|c| c.conflicting_digest.as_str())
            .collect();
        let expected: Vec<String> = conflicting.iter().map(digest).collect();
        let expected: BTreeSet<&str> = expected.iter().map(String::as_str).collect();
        if online.chain_length != 1 + sheets + conflicts || listed != expected {
            self.fail(&format!(
                "the results read reflects {} sheets (expected {sheets} + {conflicts} conflicting) and the conflicts {listed:?} (expected {expected:?})",
                online.chain_length,
            ));
        }
        let online: Value = serde_json::from_str(&online.result_json).expect("result_json is JSON");
        let offline = self.offline_result(&self.stored);
        if online != offline {
            let contests = |v: &Value| v["contests"].as_array().cloned().unwrap_or_default();
            let differing: Vec<String> = contests(&online)
                .iter()
                .zip(contests(&offline))
                .filter(|(a, b)| *a != b)
                .map(|(a, b)| format!("county: {a}\noffline: {b}"))
                .take(2)
                .collect();
            self.fail(&format!(
                "the county's results differ from the offline results over the {sheets} stored sheets; first differing contests:\n{}",
                differing.join("\n")
            ));
        }
    }

    /// `tally_core::results::compute` over a ledger of `sheets`, as JSON (the county's
    /// `result_json`); every sheet must go into the ledger.
    fn offline_result(&self, sheets: &[SignedSheet]) -> Value {
        let definition = &self.county.definition;
        let intake =
            tally_tests::intake::intake(definition, &[(PathBuf::from("stored"), sheets.to_vec())]);
        assert!(
            intake.refused.is_empty() && intake.conflicts == 0 && intake.duplicates == 0,
            "the stored sheets do not all go into an offline ledger: {:?}",
            intake.refused
        );
        let result = tally_core::results::compute(definition, &intake.ledger);
        serde_json::to_value(&result).expect("a result serializes")
    }
}

/// A township's picture without its provisional results, for a failure message.
fn brief(picture: &Value) -> String {
    let mut brief = picture.clone();
    if let Some(object) = brief.as_object_mut() {
        object.remove("result");
    }
    brief.to_string()
}

fn text(path: &Path) -> &str {
    path.to_str().expect("the test's paths are UTF-8")
}

fn digest(signed: &SignedSheet) -> String {
    hex::encode(signed.digest())
}

fn kinds(outcomes: &[pb::SheetOutcome]) -> Vec<(Kind, String)> {
    outcomes
        .iter()
        .map(|o| {
            (
                Kind::try_from(o.kind).unwrap_or(Kind::Unspecified),
                o.code.clone(),
            )
        })
        .collect()
}

/// The same sheet with two candidates' counts swapped: it still adds up, and it changes the
/// result.
fn swap_first_candidates(sheet: &TallySheet) -> TallySheet {
    let mut changed = sheet.clone();
    assert!(
        changed.candidates.len() >= 2,
        "{}: a contested seat",
        sheet.label()
    );
    let (first, second) = (changed.candidates[0].clone(), changed.candidates[1].clone());
    changed.candidates[0] = tally_core::sheet::CandidateCount {
        candidate: first.candidate,
        ..second.clone()
    };
    changed.candidates[1] = tally_core::sheet::CandidateCount {
        candidate: second.candidate,
        ..first
    };
    changed
}

/// The envelope with one byte of its signed sheet bytes flipped; signature and key id kept.
fn flip_a_byte(signed: &SignedSheet) -> SignedSheet {
    let mut tampered = signed.clone();
    let middle = tampered.sheet.len() / 2;
    tampered.sheet[middle] ^= 0x01;
    tampered
}

// Goal: while the whole county cluster is down the townships keep taking sheets (the units
// get ACCEPTED, their outboxes grow and the picture says the county is unreachable and why);
// when the county comes back every outbox drains and the county counts each sheet once.
// Method: one unit per township reports and is counted; SIGKILL all three replicas; two
// units per township report with `tally village submit` and township T03's clerk imports ten
// more units' sheets; poll `tally township picture --format json` until each shows its
// outbox depth equal to what it took during the outage, the county unreachable and an error;
// start the replicas again on their data; check the county; the pictures are clean (exit 0).
#[test]
fn county_outage_townships_keep_accepting_then_drain() {
    let mut chain = Chain::start();
    let townships = chain.townships();
    for t in &townships {
        let unit = chain.units_of(t)[0].clone();
        chain.report_unit(&unit);
    }
    chain.wait_counted("the first reports to be counted", chain.stored.len());
    let before: BTreeMap<String, u64> = townships
        .iter()
        .map(|t| {
            (
                t.clone(),
                chain.picture(t).1["sheets_stored"].as_u64().unwrap_or(0),
            )
        })
        .collect();

    chain.county.kill_county();
    let mut during: BTreeMap<String, usize> = BTreeMap::new();
    for t in &townships {
        let stored_before = chain.stored.len();
        for unit in chain.units_of(t)[1..3].to_vec() {
            chain.report_unit(&unit);
        }
        during.insert(t.clone(), chain.stored.len() - stored_before);
    }
    let offline_units: Vec<String> = chain.units_of("T03")[3..13].to_vec();
    *during.get_mut("T03").expect("township T03") += chain.import_units("T03", &offline_units);

    for t in &townships {
        let depth = during[t] as u64;
        let (code, picture) = chain.wait_for(
            &format!(
                "township {t}'s picture to show {depth} sheets waiting for an unreachable county"
            ),
            |chain| {
                let (code, p) = chain.try_picture(t)?;
                let outbox = &p["outbox"];
                if outbox["depth"] == depth
                    && outbox["county_reachable"] == false
                    && !outbox["last_error"].as_str().unwrap_or_default().is_empty()
                {
                    Ok((code, p))
                } else {
                    Err(p["outbox"].to_string())
                }
            },
        );
        assert_eq!(
            code,
            EXIT_FINDINGS,
            "a waiting outbox is a finding: {}",
            brief(&picture)
        );
        assert_eq!(
            picture["sheets_stored"].as_u64(),
            Some(before[t] + depth),
            "township {t}: {}",
            brief(&picture)
        );
        assert_eq!(
            picture["outbox"]["forwarded"].as_u64(),
            Some(before[t]),
            "township {t} forwarded only what it had before the outage: {}",
            brief(&picture)
        );
        let error = picture["outbox"]["last_error"].as_str().unwrap_or_default();
        assert!(
            chain
                .county
                .replica_addresses
                .values()
                .any(|a| error.contains(a.as_str())),
            "the error names the replica it could not reach: {error}"
        );
    }

    chain.start_county();
    chain.check_county(chain.stored.len());
    for t in &townships {
        let (code, picture) = chain.picture(t);
        assert_eq!(code, EXIT_SUCCESS, "township {t}: {}", brief(&picture));
        let outbox = &picture["outbox"];
        assert_eq!(outbox["depth"], 0, "township {t}: {}", brief(&picture));
        assert_eq!(
            outbox["county_reachable"],
            true,
            "township {t}: {}",
            brief(&picture)
        );
        assert_eq!(
            outbox["last_error"],
            "",
            "township {t}: {}",
            brief(&picture)
        );
    }
}

// Goal: a township killed with a full outbox loses nothing: after a restart it still holds
// every sheet it acknowledged, in its outbox, answers resends DUPLICATE, and drains into the
// county when the county is back; a second kill as it drains changes nothing either.
// Method: kill the county; two units of T01 report with `tally village submit` and its clerk
// imports fifteen more units' sheets; SIGKILL T01 and start it again; its picture shows the
// same depth; the units and the clerk send everything again (all DUPLICATE); start the
// county, then SIGKILL T01 again as soon as a replica leads (while T01 forwards or just
// after: a batch the county committed but T01 did not record is sent again and answered
// DUPLICATE) and restart it; check the county.
#[test]
fn township_restart_with_full_outbox_loses_nothing() {
    let mut chain = Chain::start();
    chain.county.kill_county();
    let units = chain.units_of("T01");
    let (villages, offline) = (&units[..2], &units[2..17]);
    for unit in villages {
        chain.report_unit(unit);
    }
    chain.import_units("T01", offline);
    let depth = chain.stored.len() as u64;
    let full = |chain: &Chain| {
        let (_, p) = chain.try_picture("T01")?;
        if p["outbox"]["depth"] == depth
            && p["sheets_stored"] == depth
            && p["units_reported"] == units[..17].len()
        {
            Ok(p)
        } else {
            Err(brief(&p))
        }
    };
    chain.wait_for("T01 to hold every sheet in its outbox", full);

    chain.township("T01").kill();
    chain
        .county
        .start_township("T01")
        .expect("T01 starts again");
    let picture = chain.wait_for("the restarted T01 to hold every sheet in its outbox", full);
    assert_eq!(picture["outbox"]["forwarded"], 0, "{}", brief(&picture));

    for unit in villages {
        let bundle = chain.scratch.join(format!("{unit}-first-report.sheets"));
        let run = chain.village_submit(unit, &[&bundle]);
        run.assert_code(EXIT_SUCCESS);
        chain.assert_journal(
            unit,
            &chain.signed_of(unit),
            "delivered DUPLICATE",
            &format!(
                "unit {unit} sent again after the township's restart\n{}",
                run.dump()
            ),
        );
    }
    let again: Vec<SignedSheet> = offline.iter().flat_map(|u| chain.signed_of(u)).collect();
    let run = chain.import("T01", &chain.bundle("T01-import-again", &again));
    run.assert_code(EXIT_SUCCESS);
    run.assert_stdout_contains(&format!("accepted 0, duplicate {},", again.len()));
    chain.wait_for("T01 to still hold every sheet once", full);

    chain.start_county();
    let t01 = chain.township("T01");
    t01.kill();
    chain
        .county
        .start_township("T01")
        .expect("T01 starts again");
    chain.check_county(chain.stored.len());
}

/// A TCP relay on `listener` to `target` that delays every byte from the target by `delay`:
/// a slow link. What the village sends arrives at once.
async fn slow_link(listener: tokio::net::TcpListener, target: String, delay: Duration) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    loop {
        let Ok((client, _)) = listener.accept().await else {
            return;
        };
        let target = target.clone();
        tokio::spawn(async move {
            let Ok(server) = tokio::net::TcpStream::connect(&target).await else {
                return;
            };
            let (mut client_read, mut client_write) = client.into_split();
            let (mut server_read, mut server_write) = server.into_split();
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
                let _ = server_write.shutdown().await;
            });
            let (late, mut due) = tokio::sync::mpsc::unbounded_channel();
            tokio::spawn(async move {
                let mut buffer = vec![0u8; 16 * 1024];
                while let Ok(n) = server_read.read(&mut buffer).await {
                    if n == 0
                        || late
                            .send((Instant::now() + delay, buffer[..n].to_vec()))
                            .is_err()
                    {
                        break;
                    }
                }
            });
            while let Some((at, bytes)) = due.recv().await {
                tokio::time::sleep_until(at.into()).await;
                if client_write.write_all(&bytes).await.is_err() {
                    return;
                }
            }
            let _ = client_write.shutdown().await;
        });
    }
}

/// Points `unit`'s village.toml at another township address.
fn point_village_at(chain: &Chain, unit: &str, from: &str, to: &str) {
    let path = chain.village_config(unit);
    let text = std::fs::read_to_string(&path).expect("the village config");
    let from = format!("township = \"{from}\"");
    assert!(text.contains(&from), "{text}");
    std::fs::write(&path, text.replace(&from, &format!("township = \"{to}\"")))
        .expect("the village config is written");
}

// Goal: a unit's device killed in the middle of a submit loses nothing and counts nothing
// twice, whether the township had stored the sheets or not: the journal keeps them pending,
// and the next `tally village submit` delivers them (DUPLICATE where the township already had
// them, ACCEPTED where not); a run that gives up (exit 2) is the same.
// Method: (a) a unit of T01 reaches its township over a slow link (a relay in this test that
// delays the township's bytes by 2 s); once T01's picture shows the unit's sheets stored, the
// village process is SIGKILLed before the answer arrives; its journal shows them pending; run
// again over the direct link: DUPLICATE. (b) T02 is frozen (SIGSTOP): a unit's village
// journals its sheets and hangs in the call; SIGKILL it; pending; T02 goes on (SIGCONT); run
// again: ACCEPTED. (c) T03 is down: a unit's submit with --retry-for 1 exits 2, pending;
// T03 starts again; run again: ACCEPTED. Check the county.
#[test]
fn village_killed_mid_submit_resends_and_is_counted_once() {
    let mut chain = Chain::start();

    // (a) The township stored the sheets; the answer never reached the village.
    let unit = chain.units_of("T01")[0].clone();
    let sheets = chain.signed_of(&unit);
    let bundle = chain.bundle(&format!("{unit}-sheets"), &sheets);
    let direct = chain.county.township_addresses["T01"].clone();
    let listener = chain
        .runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("a port for the relay");
    let relay = listener.local_addr().expect("an address").to_string();
    chain
        .runtime
        .spawn(slow_link(listener, direct.clone(), SLOW_LINK_DELAY));
    point_village_at(&chain, &unit, &direct, &relay);
    let mut village = chain.start_village_submit(&unit, &bundle);
    let stored_at = chain.wait_for("T01 to store the unit's sheets", |chain| {
        let p = chain
            .runtime
            .block_on(chain.watch.picture("T01"))
            .ok_or("T01 did not answer")?;
        if p.sheets_stored == sheets.len() as u64 {
            Ok(Instant::now())
        } else {
            Err(format!("{} stored", p.sheets_stored))
        }
    });
    village.kill();
    chain.assert_journal(
        &unit,
        &sheets,
        "pending",
        &format!(
            "the village was killed {:?} after T01 stored its sheets, before their answer (delayed {SLOW_LINK_DELAY:?}) could arrive\n{}",
            stored_at.elapsed(),
            village.log_tail()
        ),
    );
    point_village_at(&chain, &unit, &relay, &direct);
    let run = chain.village_submit(&unit, &[]);
    run.assert_code(EXIT_SUCCESS);
    chain.assert_journal(&unit, &sheets, "delivered DUPLICATE", &run.dump());
    chain.stored.extend(sheets);

    // (b) The township froze; the village was killed while it waited.
    let unit = chain.units_of("T02")[0].clone();
    let sheets = chain.signed_of(&unit);
    let bundle = chain.bundle(&format!("{unit}-sheets"), &sheets);
    chain.township("T02").pause();
    let log = chain.county.layout.village_dir(&unit).join("village.log");
    let mut village = chain.start_village_submit(&unit, &bundle);
    chain.wait_for("the village to journal its sheets", |_| {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains(&format!("journaled {} new sheets", sheets.len())) {
            Ok(())
        } else {
            Err(text)
        }
    });
    village.kill();
    chain.assert_journal(&unit, &sheets, "pending", "");
    chain.township("T02").resume();
    let run = chain.village_submit(&unit, &[]);
    run.assert_code(EXIT_SUCCESS);
    chain.assert_journal(&unit, &sheets, "delivered ACCEPTED", &run.dump());
    chain.stored.extend(sheets);

    // (c) The township is down for longer than the village keeps trying.
    let unit = chain.units_of("T03")[0].clone();
    let sheets = chain.signed_of(&unit);
    let bundle = chain.bundle(&format!("{unit}-sheets"), &sheets);
    chain.township("T03").kill();
    let run = chain.tally(&[
        "village",
        "submit",
        "--config",
        text(&chain.village_config(&unit)),
        "--retry-for",
        "1",
        text(&bundle),
    ]);
    run.assert_code(EXIT_PENDING);
    run.assert_stdout_contains("run the same command again");
    let states = chain.journal_states(&unit);
    assert!(states.values().all(|s| s == "pending"), "{states:?}");
    chain
        .county
        .start_township("T03")
        .expect("T03 starts again");
    let run = chain.village_submit(&unit, &[&bundle]);
    run.assert_code(EXIT_SUCCESS);
    chain.assert_journal(&unit, &sheets, "delivered ACCEPTED", &run.dump());
    chain.stored.extend(sheets);

    chain.check_county(chain.stored.len());
}

// Goal: the same sheet sent twice is DUPLICATE everywhere and counted once; another sheet
// under the same unit, contest, round and version, signed with the unit's own key, is refused
// as a conflict at the township, flagged in its picture, and never counted (the township does
// not forward it; the county, reached another way, records it as a conflict).
// Method: a unit of T01 reports; the same `tally village submit` again (DUPLICATE) and the
// clerk's import of the same bundle (duplicate); a second sheet for the unit's first slot and
// version 1 (closed a minute later), signed with its key: the unit's own device refuses to
// send it (its journal has version 1), a spare device of the unit (a fresh journal) sends it
// and is answered CONFLICT (exit 1), and a direct submit with the unit's certificate is
// answered CONFLICT; T01's picture lists it as a conflict. Then the same sheet is sent to the
// county past the aggregator (`tally submit --township T01`): the county records it as a
// conflict. Check the county: the conflict in its chain and results, not counted.
#[test]
fn duplicate_and_conflicting_submissions() {
    let mut chain = Chain::start();
    let unit = chain.units_of("T01")[0].clone();
    chain.report_unit(&unit);
    let bundle = chain.scratch.join(format!("{unit}-first-report.sheets"));
    let sheets = chain.signed_of(&unit);

    let run = chain.village_submit(&unit, &[&bundle]);
    run.assert_code(EXIT_SUCCESS);
    run.assert_stdout_contains("sending it again");
    chain.assert_journal(&unit, &sheets, "delivered DUPLICATE", &run.dump());
    let run = chain.import("T01", &bundle);
    run.assert_code(EXIT_SUCCESS);
    run.assert_stdout_contains(&format!("accepted 0, duplicate {},", sheets.len()));

    let (first, _) = chain.sheets_of(&unit)[0].clone();
    let mut other = first.clone();
    other.count_closed_at.unix_seconds += 60;
    let conflicting = tally_proto::sign(&other, chain.unit_key(&unit), &chain.election());
    let conflict_bundle = chain.bundle("conflicting", std::slice::from_ref(&conflicting));

    // The unit's own device knows it signed version 1 already.
    let run = chain.village_submit(&unit, &[&conflict_bundle]);
    run.assert_code(EXIT_REFUSED);
    run.assert_stdout_contains("would be a conflict");
    assert!(
        !chain
            .journal_states(&unit)
            .contains_key(&digest(&conflicting)),
        "the refused sheet is not journaled"
    );

    // A spare device of the same unit does not; the township refuses it.
    let spare = chain.county.layout.village_dir(&unit).join("spare.toml");
    let config = std::fs::read_to_string(chain.village_config(&unit)).expect("the config");
    let config = config.replace("journal = \"journal\"", "journal = \"journal-spare\"");
    std::fs::write(&spare, config).expect("the spare config");
    let run = chain.tally(&[
        "village",
        "submit",
        "--config",
        text(&spare),
        "--retry-for",
        RETRY_FOR_SECS,
        text(&conflict_bundle),
    ]);
    run.assert_code(EXIT_REFUSED);
    run.assert_stdout_contains("refused conflict");

    let outcomes = chain.submit_as(&unit, "T01", std::slice::from_ref(&conflicting));
    assert_eq!(
        kinds(&outcomes),
        [(Kind::Conflict, "conflict".to_owned())],
        "{outcomes:?}"
    );
    assert!(
        outcomes[0].message.contains(&digest(&sheets[0])[..12]),
        "the answer names the sheet stored under that version: {outcomes:?}"
    );

    let (code, picture) = chain.picture("T01");
    assert_eq!(
        code,
        EXIT_FINDINGS,
        "a conflict is a finding: {}",
        brief(&picture)
    );
    let flagged: Vec<&Value> = picture["refused"]
        .as_array()
        .expect("a refused list")
        .iter()
        .filter(|n| n["digest"] == digest(&conflicting))
        .collect();
    assert_eq!(
        flagged.len(),
        2,
        "the spare device's submit and the direct one are flagged: {}",
        brief(&picture)
    );
    for note in &flagged {
        assert_eq!(note["code"], "conflict", "{note}");
        assert_eq!(note["refused_by"], "township", "{note}");
        assert_eq!(note["unit"], unit.as_str(), "{note}");
        assert_eq!(note["version"], 1, "{note}");
    }
    assert_eq!(
        picture["sheets_stored"],
        sheets.len(),
        "{}",
        brief(&picture)
    );

    // The same conflicting sheet reaching the county past the aggregator (an operator's
    // `tally submit` as T01, once the unit's report is counted): recorded as a conflict in
    // the chain and the results, never counted.
    chain.wait_counted("the unit's report to be counted", chain.stored.len());
    let report = chain.submit_to_county_as("T01", &conflict_bundle);
    assert_eq!(report["conflicts"], 1, "{report}");
    assert_eq!(report["refused"][0]["code"], "conflict", "{report}");

    chain.check_county_with_conflicts(chain.stored.len(), &[conflicting]);
}

// Goal: a sheet changed after its unit signed it is refused: at the township (E204) when it
// arrives from a polling place, and at the county (E204) when a dishonest township alters a
// sheet it forwards and countersigns the batch with its own key; neither is counted.
// Method: a unit of T02 reports. At the township: one byte of the signed bytes of the unit's
// second sheet is flipped: the unit's own `tally village submit` refuses it before sending
// (exit 1, E204), the township clerk's `tally township import` is answered refused E204, a
// direct submit with the unit's certificate is answered REFUSED E204; T02's picture lists
// them (refused by the township, E204). At the county: `tally submit --township T02 --key
// <T02's key>` sends a batch of the unit's honest first sheet (DUPLICATE), the same sheet
// with two candidates' votes swapped (re-encoded, the unit's signature kept) and another
// unit's unsent sheet with a flipped byte: the county refuses both altered ones E204. Check
// the county.
#[test]
fn tampered_sheets_refused_at_township_and_county() {
    let mut chain = Chain::start();
    let units = chain.units_of("T02");
    let unit = units[0].clone();
    chain.report_unit(&unit);
    let sheets = chain.sheets_of(&unit);

    let tampered = flip_a_byte(&sheets[1].1);
    let tampered_bundle = chain.bundle("tampered", std::slice::from_ref(&tampered));
    let run = chain.village_submit(&unit, &[&tampered_bundle]);
    run.assert_code(EXIT_REFUSED);
    run.assert_stdout_contains("E204");
    let run = chain.import("T02", &tampered_bundle);
    run.assert_code(EXIT_FINDINGS);
    run.assert_stdout_contains("refused E204");
    let outcomes = chain.submit_as(&unit, "T02", std::slice::from_ref(&tampered));
    assert_eq!(
        kinds(&outcomes),
        [(Kind::Refused, "E204".to_owned())],
        "{outcomes:?}"
    );
    let (code, picture) = chain.picture("T02");
    assert_eq!(code, EXIT_FINDINGS, "{}", brief(&picture));
    let notes: Vec<&Value> = picture["refused"]
        .as_array()
        .expect("a refused list")
        .iter()
        .filter(|n| n["digest"] == digest(&tampered))
        .collect();
    assert_eq!(
        notes.len(),
        2,
        "the import and the submit: {}",
        brief(&picture)
    );
    for note in notes {
        assert_eq!(note["code"], "E204", "{note}");
        assert_eq!(note["refused_by"], "township", "{note}");
        // The clerk is told which unit to call: the sheet's own claim, or the key's owner
        // when the bytes do not decode.
        assert_eq!(note["unit"], unit.as_str(), "{note}");
    }

    // A dishonest township: alters what it forwards and countersigns it. The honest sheet
    // has reached the county through T02 first, so the county knows it.
    chain.wait_counted("the unit's report to be counted", chain.stored.len());
    let (honest_sheet, honest) = sheets[0].clone();
    let mut altered = honest.clone();
    altered.sheet = tally_proto::encode_sheet(&swap_first_candidates(&honest_sheet));
    assert_ne!(altered.sheet, honest.sheet);
    let unsent = flip_a_byte(&chain.signed_of(&units[1])[0]);
    let batch = chain.bundle("altered-by-township", &[honest, altered, unsent]);
    let report = chain.submit_to_county_as("T02", &batch);
    assert_eq!(report["duplicates"], 1, "{report}");
    assert_eq!(report["accepted"], 0, "{report}");
    let refused = report["refused"].as_array().expect("a refused list");
    assert_eq!(refused.len(), 2, "{report}");
    for r in refused {
        assert_eq!(r["code"], "E204", "{report}");
    }
    // The county's log names each refused sheet: its digest, unit and contest, and the code.
    let logs: String = (1..=3)
        .map(|id| {
            std::fs::read_to_string(chain.county.layout.logs.join(format!("replica-{id}.log")))
                .unwrap_or_default()
        })
        .collect();
    // The altered sheet decodes, so its line names its contest; the flipped one does not, so
    // its line names the unit whose key signed it.
    for (unit, contest) in [(&units[0], "contest=T02-"), (&units[1], "contest=")] {
        let line = logs
            .lines()
            .find(|l| l.contains("E204") && l.contains(&format!("unit={unit} ")))
            .unwrap_or_else(|| panic!("no county log line names {unit}'s refused sheet:\n{logs}"));
        for field in ["sheet=", contest, "township=T02", "outcome=\"refused\""] {
            assert!(line.contains(field), "{field} missing in {line}");
        }
    }

    chain.check_county(chain.stored.len());
}

// Goal: a unit's key signs only that unit's sheets: a sheet for unit A signed with unit B's
// key is refused (E205) whoever sends it, and so is A's genuine sheet sent with B's
// certificate; nothing of it is counted.
// Method: units A and B of T03; a sheet of A's signed with B's key: B's own `tally village
// submit` refuses it before sending (exit 1, E205); direct submits with B's and with A's
// certificate are answered REFUSED E205; the township clerk's import is refused E205; T03's
// picture lists it; the county refuses it from T03 (`tally submit`, E205). A's genuine
// sheets sent with B's certificate: REFUSED E205. Then A reports its own sheets (ACCEPTED).
// Check the county.
#[test]
fn key_of_another_unit_refused() {
    let mut chain = Chain::start();
    let units = chain.units_of("T03");
    let (a, b) = (units[0].clone(), units[1].clone());
    let (sheet_of_a, genuine) = chain.sheets_of(&a)[0].clone();
    let forged = tally_proto::sign(&sheet_of_a, chain.unit_key(&b), &chain.election());
    let forged_bundle = chain.bundle(
        "signed-with-another-units-key",
        std::slice::from_ref(&forged),
    );

    let run = chain.village_submit(&b, &[&forged_bundle]);
    run.assert_code(EXIT_REFUSED);
    run.assert_stdout_contains("E205");
    for sender in [&b, &a] {
        let outcomes = chain.submit_as(sender, "T03", std::slice::from_ref(&forged));
        assert_eq!(
            kinds(&outcomes),
            [(Kind::Refused, "E205".to_owned())],
            "sent by {sender}: {outcomes:?}"
        );
    }
    let run = chain.import("T03", &forged_bundle);
    run.assert_code(EXIT_FINDINGS);
    run.assert_stdout_contains("refused E205");
    let outcomes = chain.submit_as(&b, "T03", std::slice::from_ref(&genuine));
    assert_eq!(
        kinds(&outcomes),
        [(Kind::Refused, "E205".to_owned())],
        "A's sheet with B's certificate: {outcomes:?}"
    );
    assert!(
        outcomes[0].message.contains(b.as_str()) && outcomes[0].message.contains(a.as_str()),
        "the refusal names both units: {outcomes:?}"
    );

    let (code, picture) = chain.picture("T03");
    assert_eq!(code, EXIT_FINDINGS, "{}", brief(&picture));
    let refused = picture["refused"].as_array().expect("a refused list");
    let forged_notes = refused
        .iter()
        .filter(|n| n["digest"] == digest(&forged))
        .count();
    // A digest names the sheet bytes, not the signature: the forged sheet and A's genuine
    // one are the same bytes.
    assert_eq!(
        forged_notes,
        4,
        "the submits of B and A, the import, and A's sheet with B's certificate: {}",
        brief(&picture)
    );
    assert!(
        refused.iter().all(|n| n["code"] == "E205"),
        "{}",
        brief(&picture)
    );
    assert_eq!(picture["sheets_stored"], 0, "{}", brief(&picture));

    let report = chain.submit_to_county_as("T03", &forged_bundle);
    assert_eq!(report["refused"][0]["code"], "E205", "{report}");
    assert_eq!(report["accepted"], 0, "{report}");

    chain.report_unit(&a);
    chain.check_county(chain.stored.len());
}

// Goal: a correction made with `tally village correct` (version 2, replacing version 1,
// signed again) supersedes the first report: the county records both and counts version 2;
// a version 1 that arrives after its correction is stored SUPERSEDED and does not count.
// Method: a unit of T01 reports and is counted; a sheet file of its first contest with two
// candidates' votes swapped goes through `tally village correct` (ACCEPTED); the journal's
// digest of version 2 is the test's own signature of the same sheet (signing is
// deterministic). Another unit's corrected version 2 is imported by the clerk first, then
// its version 1 arrives from the unit (SUPERSEDED). Check the county, and that the
// corrections changed the result.
#[test]
fn correction_supersedes_a_sheet() {
    let mut chain = Chain::start();
    let units = chain.units_of("T01");
    let unit = units[0].clone();
    chain.report_unit(&unit);
    chain.wait_counted("the first report to be counted", chain.stored.len());
    let before_corrections = chain.stored.clone();

    let (first, _) = chain.sheets_of(&unit)[0].clone();
    let mut corrected = swap_first_candidates(&first);
    corrected.version = 2;
    corrected.replaces_version = Some(1);
    let file = chain.scratch.join("corrected.toml");
    std::fs::write(&file, tally_core::sheet_file::to_toml(&corrected)).expect("the sheet file");
    let run = chain.tally(&[
        "village",
        "correct",
        "--config",
        text(&chain.village_config(&unit)),
        "--contest",
        first.contest.as_str(),
        "--retry-for",
        RETRY_FOR_SECS,
        text(&file),
    ]);
    run.assert_code(EXIT_SUCCESS);
    let signed = tally_proto::sign(&corrected, chain.unit_key(&unit), &chain.election());
    let states = chain.journal_states(&unit);
    assert_eq!(
        states.get(&digest(&signed)).map(String::as_str),
        Some("delivered ACCEPTED"),
        "version 2 as the test signs it is the one the unit signed and delivered: {states:?}\n{}",
        run.dump()
    );
    chain.stored.push(signed);

    // The correction overtakes the first report of another unit.
    let late = units[1].clone();
    let (first_of_late, _) = chain.sheets_of(&late)[0].clone();
    let mut correction = swap_first_candidates(&first_of_late);
    correction.version = 2;
    correction.replaces_version = Some(1);
    let correction = tally_proto::sign(&correction, chain.unit_key(&late), &chain.election());
    let run = chain.import(
        "T01",
        &chain.bundle("late-correction", std::slice::from_ref(&correction)),
    );
    run.assert_code(EXIT_SUCCESS);
    run.assert_stdout_contains("accepted 1,");
    chain.stored.push(correction);
    let late_sheets = chain.signed_of(&late);
    let bundle = chain.bundle(&format!("{late}-first-report"), &late_sheets);
    let run = chain.village_submit(&late, &[&bundle]);
    run.assert_code(EXIT_SUCCESS);
    let states = chain.journal_states(&late);
    assert_eq!(
        states.get(&digest(&late_sheets[0])).map(String::as_str),
        Some("delivered SUPERSEDED"),
        "{states:?}\n{}",
        run.dump()
    );
    assert_eq!(
        states.get(&digest(&late_sheets[1])).map(String::as_str),
        Some("delivered ACCEPTED"),
        "{states:?}\n{}",
        run.dump()
    );
    chain.stored.extend(late_sheets);

    // Two slots have two versions each: the chain holds every version, one per slot counts.
    chain.check_county(chain.stored.len() - 2);
    let uncorrected: Vec<SignedSheet> = before_corrections
        .into_iter()
        .chain(chain.signed_of(&late))
        .collect();
    assert_ne!(
        chain.offline_result(&uncorrected),
        chain.offline_result(&chain.stored),
        "the corrections change the result, so the check above saw version 2 counted"
    );
}
