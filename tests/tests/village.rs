//! End-to-end tests of `tally village`, run as a clerk runs it: the binary in a fresh folder
//! per test, on the hand-written `examples/small-town` county (unit T01-U01 of township T01).
//!
//! The township aggregator is a fake here, kept in this file: a real tonic `Township` server
//! on 127.0.0.1 over mutual TLS (certificates from `tally_net::write_dev_pki_for`) that
//! verifies each sheet against the definition, stores it once by digest, answers as the
//! contract says (ACCEPTED, DUPLICATE, SUPERSEDED, CONFLICT, REFUSED), and can be told to
//! fail calls, to drop the link after storing, or to hang after storing. The village dials
//! it through a small TCP relay, which is how the test drops a link mid-call.
//!
//! Every wait polls its condition with a deadline; nothing sleeps to wait.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tally_core::definition::Definition;
use tally_net::{Identity, Role, TlsFiles};
use tally_proto::SignedSheet;
use tally_rpc::pb;
use tally_rpc::pb::township_server::{Township, TownshipServer};
use tally_tests::{Run, poll, small_town, tally};
use tempfile::TempDir;
use tonic::{Request, Response, Status};

const EXIT_SUCCESS: i32 = 0;
const EXIT_REFUSED: i32 = 1;
const EXIT_PENDING: i32 = 2;
const EXIT_FINDINGS: i32 = 3;
const UNIT: &str = "T01-U01";
const WAIT_MAX: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(20);

// ---- the fake township ----

/// What the fake township has seen and what it is told to do.
#[derive(Default)]
struct Seen {
    /// Every Submit call that reached the handler.
    calls: usize,
    /// The sheets stored, once each, in arrival order.
    stored: Vec<SignedSheet>,
    digests: HashSet<[u8; 32]>,
    /// (unit, contest, round, version) → digest, to answer CONFLICT and SUPERSEDED.
    slots: HashMap<(String, String, u32, u32), [u8; 32]>,
    /// Answer the next N calls UNAVAILABLE, storing nothing.
    fail_next: usize,
    /// Store the next N calls' sheets, then cut the link instead of answering.
    drop_next: usize,
    /// Store the next N calls' sheets, then never answer (the test kills the village).
    hang_next: usize,
    /// Set when a call is hanging.
    hanging: bool,
    /// Refuse the sheets of the next N calls with this code (nothing stored).
    refuse_next: usize,
}

#[derive(Clone)]
struct FakeTownship {
    definition: Arc<Definition>,
    seen: Arc<Mutex<Seen>>,
    cut: tokio::sync::watch::Sender<u64>,
}

impl FakeTownship {
    fn outcome(&self, caller: &str, signed: &SignedSheet) -> pb::SheetOutcome {
        use pb::sheet_outcome::Kind;
        let digest = signed.digest();
        let answer = |kind: Kind, code: &str, message: String| pb::SheetOutcome {
            kind: kind as i32,
            code: code.into(),
            message,
            warnings: vec![],
            digest: hex::encode(digest),
        };
        let verified = match tally_proto::verify(&self.definition, signed) {
            Ok(v) => v,
            Err(e) => return answer(Kind::Refused, e.code(), e.to_string()),
        };
        if verified.unit.as_str() != caller {
            return answer(
                Kind::Refused,
                "E205",
                format!(
                    "the certificate is unit {caller} but the sheet is unit {}'s",
                    verified.unit
                ),
            );
        }
        let mut seen = self.seen.lock().unwrap();
        if seen.refuse_next > 0 {
            return answer(
                Kind::Refused,
                "E104",
                "void + valid is not collected".into(),
            );
        }
        if seen.digests.contains(&digest) {
            return answer(Kind::Duplicate, "", String::new());
        }
        let s = &verified.sheet;
        let key = (
            s.unit.to_string(),
            s.contest.to_string(),
            s.round.0,
            s.version,
        );
        if seen.slots.contains_key(&key) {
            return answer(
                Kind::Conflict,
                "",
                "another sheet holds this version".into(),
            );
        }
        let higher = seen
            .slots
            .keys()
            .any(|k| (&k.0, &k.1, k.2) == (&key.0, &key.1, key.2) && k.3 > key.3);
        seen.slots.insert(key, digest);
        seen.digests.insert(digest);
        seen.stored.push(signed.clone());
        if higher {
            answer(Kind::Superseded, "", String::new())
        } else {
            answer(Kind::Accepted, "", String::new())
        }
    }
}

#[tonic::async_trait]
impl Township for FakeTownship {
    async fn submit(
        &self,
        request: Request<pb::SubmitRequest>,
    ) -> Result<Response<pb::SubmitResponse>, Status> {
        let caller = tally_net::peer_identity(&request)?;
        tally_net::require(&caller, &[Role::Village])?;
        {
            let mut seen = self.seen.lock().unwrap();
            seen.calls += 1;
            if seen.fail_next > 0 {
                seen.fail_next -= 1;
                return Err(Status::unavailable("the fake township is restarting"));
            }
        }
        let mut outcomes = Vec::new();
        for sheet in request.into_inner().sheets {
            let signed =
                SignedSheet::from_pb(sheet).map_err(|e| Status::invalid_argument(e.to_string()))?;
            outcomes.push(self.outcome(caller.name(), &signed));
        }
        let (drop_link, hang) = {
            let mut seen = self.seen.lock().unwrap();
            seen.refuse_next = seen.refuse_next.saturating_sub(1);
            let drop_link = seen.drop_next > 0;
            seen.drop_next = seen.drop_next.saturating_sub(1);
            let hang = !drop_link && seen.hang_next > 0;
            seen.hang_next = seen.hang_next.saturating_sub(usize::from(hang));
            seen.hanging |= hang;
            (drop_link, hang)
        };
        if drop_link {
            // Stored, and the answer is lost with the link.
            self.cut.send_modify(|n| *n += 1);
            std::future::pending::<()>().await;
        }
        if hang {
            std::future::pending::<()>().await;
        }
        Ok(Response::new(pb::SubmitResponse { outcomes }))
    }

    async fn import(
        &self,
        _: Request<pb::SubmitRequest>,
    ) -> Result<Response<pb::SubmitResponse>, Status> {
        Err(Status::unimplemented("the fake township takes Submit only"))
    }

    async fn picture(
        &self,
        _: Request<pb::PictureRequest>,
    ) -> Result<Response<pb::PictureResponse>, Status> {
        Err(Status::unimplemented("the fake township takes Submit only"))
    }
}

/// Relays TCP from `listener` to `upstream`; every connection is cut when `cut` changes.
async fn relay(
    listener: tokio::net::TcpListener,
    upstream: SocketAddr,
    cut: tokio::sync::watch::Sender<u64>,
) {
    loop {
        let Ok((mut downstream, _)) = listener.accept().await else {
            return;
        };
        let mut cut = cut.subscribe();
        tokio::spawn(async move {
            let Ok(mut up) = tokio::net::TcpStream::connect(upstream).await else {
                return;
            };
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut downstream, &mut up) => {}
                _ = cut.changed() => {}
            }
        });
    }
}

// ---- the fixture ----

/// A folder with a PKI, the unit's village.toml, and (when started) the fake township.
struct Fixture {
    dir: TempDir,
    runtime: Option<tokio::runtime::Runtime>,
    seen: Arc<Mutex<Seen>>,
    /// The relay's address: what the village dials.
    address: Option<SocketAddr>,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tally_tests::tempdir();
        let identities = [
            Identity::new(Role::Village, UNIT).unwrap(),
            Identity::new(Role::Village, "T01-U02").unwrap(),
            Identity::new(Role::Township, "T01").unwrap(),
        ];
        tally_net::write_dev_pki_for(
            &dir.path().join("pki"),
            "小河县",
            &identities,
            &["127.0.0.1".to_owned()],
        )
        .expect("a dev PKI");
        let fixture = Fixture {
            dir,
            runtime: None,
            seen: Arc::default(),
            address: None,
        };
        fixture.write_config("127.0.0.1:9", "T01-U01.key", "T01-U01");
        fixture
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes village.toml; `key` is a key file of the small town, `cert` a unit whose
    /// village certificate to use.
    fn write_config(&self, township: &str, key: &str, cert: &str) {
        let text = format!(
            "unit_id = \"{UNIT}\"\ntownship = \"{township}\"\nsigning_key = {:?}\ndefinition = {:?}\njournal = \"journal\"\n[tls]\nca = \"pki/ca.pem\"\ncert = \"pki/village-{cert}.pem\"\nkey = \"pki/village-{cert}.key\"\n",
            small_town().join("keys").join(key).display().to_string(),
            small_town().join("election.toml").display().to_string(),
        );
        std::fs::write(self.path("village.toml"), text).unwrap();
    }

    /// Starts the fake township and the relay in front of it, and points the config at it.
    fn start_township(&mut self) {
        let runtime = tally_tests::runtime();
        let definition = Arc::new(
            tally_tests::files::load_definition(&small_town().join("election.toml")).unwrap(),
        );
        let (cut, _) = tokio::sync::watch::channel(0u64);
        let fake = FakeTownship {
            definition,
            seen: self.seen.clone(),
            cut: cut.clone(),
        };
        let files = TlsFiles::in_dir(
            &self.path("pki"),
            &Identity::new(Role::Township, "T01").unwrap(),
        );
        let (tls, _) = files.server_tls().expect("the township's TLS files");
        let address = runtime.block_on(async move {
            let server = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let upstream = server.local_addr().unwrap();
            let router = tonic::transport::Server::builder()
                .tls_config(tls)
                .unwrap()
                .add_service(TownshipServer::new(fake));
            tokio::spawn(async move {
                let incoming = tokio_stream::wrappers::TcpListenerStream::new(server);
                if let Err(e) = router.serve_with_incoming(incoming).await {
                    eprintln!("the fake township ended: {e}");
                }
            });
            let front = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let address = front.local_addr().unwrap();
            tokio::spawn(relay(front, upstream, cut));
            address
        });
        self.runtime = Some(runtime);
        self.address = Some(address);
        self.write_config(&address.to_string(), "T01-U01.key", UNIT);
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = tally();
        command.args(args).current_dir(self.dir.path());
        command
    }

    /// Runs `tally` with `args` and `stdin` piped in, to its end.
    fn tally(&self, args: &[&str], stdin: &str) -> Run {
        let run = Run::with_input(&mut self.command(args), stdin);
        run.assert_no_panic();
        run
    }

    /// `tally village fill --contest T01-X01 --out OUT`, the clerks' answers on its input.
    fn fill(&self, out: &str, answers: &str) -> Run {
        self.tally(
            &[
                "village",
                "fill",
                "--config",
                "village.toml",
                "--contest",
                "T01-X01",
                "--out",
                out,
            ],
            answers,
        )
    }

    fn village(&self, args: &[&str]) -> Run {
        let mut all = vec!["village"];
        all.extend_from_slice(&args[..1]);
        all.extend_from_slice(&["--config", "village.toml"]);
        all.extend_from_slice(&args[1..]);
        self.tally(&all, "")
    }

    /// The journal as `status --format json` gives it.
    fn status(&self) -> Vec<serde_json::Value> {
        let run = self.village(&["status", "--format", "json"]);
        assert!(
            run.code == EXIT_SUCCESS || run.code == EXIT_FINDINGS,
            "{}",
            run.dump()
        );
        serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {}", run.dump()))
    }

    fn seen<T>(&self, look: impl FnOnce(&Seen) -> T) -> T {
        look(&self.seen.lock().unwrap())
    }

    /// Copies a sheet file of the small town into the test folder, edited by `edit`.
    fn sheet_file(&self, name: &str, edit: impl FnOnce(String) -> String) -> String {
        let text = std::fs::read_to_string(small_town().join("sheets").join(name)).unwrap();
        std::fs::write(self.path(name), edit(text)).unwrap();
        name.to_owned()
    }
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    poll(WAIT_MAX, POLL, || {
        if done() { Ok(()) } else { Err(String::new()) }
    })
    .unwrap_or_else(|_| panic!("waited {WAIT_MAX:?} for {what}"));
}

fn states(status: &[serde_json::Value]) -> Vec<String> {
    status
        .iter()
        .map(|row| {
            let state = row["state"].as_str().unwrap_or("?");
            match state {
                "delivered" => format!(
                    "v{} delivered {}",
                    row["version"],
                    row["outcome"].as_str().unwrap()
                ),
                "refused" => format!(
                    "v{} refused {}",
                    row["version"],
                    row["code"].as_str().unwrap()
                ),
                other => format!("v{} {other}", row["version"]),
            }
        })
        .collect()
}

// ---- fill ----

/// The answers one clerk types for contest T01-X01 (刘文, 陈静; one seat), in prompt order,
/// with `void` void ballots and one person written in.
fn clerk_counts(void: u64, write_ins: u64) -> Vec<String> {
    [
        "1500".to_owned(),
        "1200".into(),
        "1200".into(),
        void.to_string(),
        (1200 - void).to_string(),
        "5".into(),
        "0".into(),
        "700".into(),
        "480".into(),
        write_ins.to_string(),
        "王五、赵六".into(),
        "钱七".into(),
        "2026-11-28 18:30".into(),
    ]
    .to_vec()
}

// Goal: two clerks who type the same paper sheet get a sheet file in the clerk's format,
// with the candidates shown by their Chinese names, which `tally sheet sign` accepts.
// Method: pipe both clerks' identical answers into `village fill`; parse the file written.
#[test]
fn fill_when_both_clerks_agree() {
    let fixture = Fixture::new();
    let mut input = clerk_counts(10, 1);
    input.extend(clerk_counts(10, 1));
    input.extend(["李四".into(), "5".into(), "李四".into(), "5".into()]);
    let run = fixture.fill("sheet.toml", &(input.join("\n") + "\n"));
    run.assert_code(EXIT_SUCCESS);
    run.assert_stdout_contains("刘文 approvals 赞成票");
    run.assert_stdout_contains("陈静 approvals 赞成票");
    run.assert_stdout_contains("城关镇东街投票站");
    assert!(!run.stdout.contains("The clerks differ"), "{}", run.dump());
    let text = std::fs::read_to_string(fixture.path("sheet.toml")).unwrap();
    assert!(text.contains("id = \"T01-X01-1\" # 刘文"), "{text}");
    let sheet = tally_core::sheet_file::parse("sheet.toml", &text).unwrap();
    assert_eq!(sheet.unit.as_str(), UNIT);
    assert_eq!(sheet.ballots_void, 10);
    assert_eq!(sheet.ballots_valid, 1190);
    assert_eq!(sheet.candidates[1].approvals, 480);
    assert_eq!(sheet.write_ins[0].name, "李四");
    assert_eq!(sheet.scrutineers, vec!["王五", "赵六"]);
    assert_eq!(
        sheet.count_closed_at.to_string(),
        "2026-11-28T18:30:00+08:00"
    );

    let signed = fixture.tally(
        &[
            "sheet",
            "sign",
            "--definition",
            small_town().join("election.toml").to_str().unwrap(),
            "--key",
            small_town().join("keys/T01-U01.key").to_str().unwrap(),
            "--out",
            "sheet.sheets",
            "sheet.toml",
        ],
        "",
    );
    signed.assert_code(EXIT_SUCCESS);

    // The file is never overwritten, and that is said before anyone types.
    let again = fixture.fill("sheet.toml", "");
    again.assert_code(1);
    again.assert_stderr_contains("sheet.toml already exists");
}

// Goal: where the clerks differ, every differing field is shown with both values and asked
// again of both until they agree; an unreadable answer is asked again at once; the file
// holds the agreed values. A different count of written-in people is settled before their
// names are asked.
// Method: the second clerk mistypes void and valid ballots and the written-in count, and
// once types "12a"; on the second pass both type the paper's values.
#[test]
fn fill_when_the_clerks_differ_asks_again_until_they_agree() {
    let fixture = Fixture::new();
    let mut input = clerk_counts(10, 1);
    let mut second = clerk_counts(19, 2);
    second.insert(3, "12a".into());
    input.extend(second);
    // Second pass, first clerk then second: void, valid, written-in count.
    input.extend(["10", "1190", "1", "10", "1190", "1"].map(String::from));
    // The written-in person: the second clerk writes another name first.
    input.extend(["李四", "5", "李思", "5", "李四", "李四"].map(String::from));
    let run = fixture.fill("sheet.toml", &(input.join("\n") + "\n"));
    run.assert_code(EXIT_SUCCESS);
    run.assert_stdout_contains("\"12a\" is not a whole number");
    run.assert_stdout_contains("The clerks differ on 3 fields");
    let void_row = run
        .stdout
        .lines()
        .find(|l| l.starts_with("void ballots 无效票 (ballots_void)"))
        .unwrap_or_else(|| panic!("no row for ballots_void: {}", run.dump()));
    let cells: Vec<&str> = void_row.split_whitespace().collect();
    assert_eq!(cells[cells.len() - 2..], ["10", "19"], "{void_row}");
    run.assert_stdout_contains("The clerks differ on 1 field");
    assert!(
        run.stdout.contains("李四") && run.stdout.contains("李思"),
        "{}",
        run.dump()
    );
    let text = std::fs::read_to_string(fixture.path("sheet.toml")).unwrap();
    let sheet = tally_core::sheet_file::parse("sheet.toml", &text).unwrap();
    assert_eq!((sheet.ballots_void, sheet.ballots_valid), (10, 1190));
    assert_eq!(sheet.write_ins.len(), 1);
    assert_eq!(sheet.write_ins[0].name, "李四");

    // Input that ends before the clerks agree writes nothing.
    let cut_short = fixture.fill("short.toml", &(clerk_counts(10, 0).join("\n") + "\n"));
    cut_short.assert_code(1);
    cut_short.assert_stderr_contains("nothing was written");
    assert!(!fixture.path("short.toml").exists());
}

// ---- submit ----

// Goal: a township that fails its first calls still gets the sheet, once, and the journal
// records it delivered.
// Method: the fake answers UNAVAILABLE three times; submit a clerk's file.
#[test]
fn submit_retries_until_the_township_answers() {
    let mut fixture = Fixture::new();
    fixture.start_township();
    fixture.seen.lock().unwrap().fail_next = 3;
    let file = fixture.sheet_file("T01-U01-XH-C01.toml", |t| t);
    let run = fixture.village(&["submit", &file]);
    run.assert_code(EXIT_SUCCESS);
    run.assert_stderr_contains("trying again");
    run.assert_stdout_contains("contest XH-C01, round 1, version 1");
    run.assert_stdout_contains("delivered ACCEPTED");
    assert_eq!(fixture.seen(|s| (s.calls, s.stored.len())), (4, 1));
    assert_eq!(states(&fixture.status()), ["v1 delivered ACCEPTED"]);
}

// Goal: with the township unreachable the sheet stays in the journal, pending, and the
// command says to run it again (exit 2); the next run sends it and it is counted once.
// Method: submit against a closed port with a short --retry-for; then start the township
// and run `submit` with no file.
#[test]
fn a_sheet_waits_in_the_journal_while_the_township_is_unreachable() {
    let mut fixture = Fixture::new();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_address = closed.local_addr().unwrap().to_string();
    drop(closed);
    fixture.write_config(&closed_address, "T01-U01.key", UNIT);
    let file = fixture.sheet_file("T01-U01-XH-C01.toml", |t| t);
    let run = fixture.village(&["submit", "--retry-for", "1", &file]);
    run.assert_code(EXIT_PENDING);
    run.assert_stdout_contains("run the same command again");
    let status = fixture.status();
    assert_eq!(states(&status), ["v1 pending"]);
    assert!(status[0]["attempts"].as_u64().unwrap() >= 2, "{status:?}");

    fixture.start_township();
    let run = fixture.village(&["submit"]);
    run.assert_code(EXIT_SUCCESS);
    run.assert_stdout_contains("delivered ACCEPTED");
    assert_eq!(fixture.seen(|s| (s.calls, s.stored.len())), (1, 1));
    assert_eq!(states(&fixture.status()), ["v1 delivered ACCEPTED"]);

    // Nothing pending: nothing is sent.
    let run = fixture.village(&["submit"]);
    run.assert_code(EXIT_SUCCESS);
    run.assert_stdout_contains("nothing to send");
    assert_eq!(fixture.seen(|s| s.calls), 1);
}

// Goal: a village killed after the township stored its sheet but before the answer came
// loses nothing and counts nothing twice: the next run resends the same bytes and the
// township answers DUPLICATE.
// Method: the fake stores and then hangs; the test kills the village process (SIGKILL),
// then runs `submit` again.
#[test]
fn a_village_killed_mid_submit_resends_and_is_counted_once() {
    let mut fixture = Fixture::new();
    fixture.start_township();
    fixture.seen.lock().unwrap().hang_next = 1;
    let file = fixture.sheet_file("T01-U01-T01-X01.toml", |t| t);
    let mut child = fixture
        .command(&["village", "submit", "--config", "village.toml", &file])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("the township to store the sheet", || {
        fixture.seen(|s| s.hanging)
    });
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(states(&fixture.status()), ["v1 pending"]);

    let run = fixture.village(&["submit"]);
    run.assert_code(EXIT_SUCCESS);
    run.assert_stdout_contains("delivered DUPLICATE");
    assert_eq!(fixture.seen(|s| (s.calls, s.stored.len())), (2, 1));
    assert_eq!(states(&fixture.status()), ["v1 delivered DUPLICATE"]);
}

// Goal: a link dropped after the township stored the sheet and before its answer arrived is
// retried within the same run; the resend is DUPLICATE, stored once.
// Method: the fake stores, then cuts every connection through the relay.
#[test]
fn a_dropped_link_is_retried_and_the_sheet_counted_once() {
    let mut fixture = Fixture::new();
    fixture.start_township();
    fixture.seen.lock().unwrap().drop_next = 1;
    let file = fixture.sheet_file("T01-U01-XH-C01.toml", |t| t);
    let run = fixture.village(&["submit", &file]);
    run.assert_code(EXIT_SUCCESS);
    run.assert_stderr_contains("trying again");
    run.assert_stdout_contains("delivered DUPLICATE");
    assert_eq!(fixture.seen(|s| (s.calls, s.stored.len())), (2, 1));
}

// Goal: the same file submitted again is journaled once and answered DUPLICATE; a different
// sheet under the same version is refused here, before the township could flag a
// conflict, and says to make a correction; a sheet of another unit is refused here.
// Method: submit a file twice, then an edited copy with the same version, then a bundle
// signed by unit T01-U02.
#[test]
fn resubmitting_is_duplicate_and_a_changed_sheet_needs_a_correction() {
    let mut fixture = Fixture::new();
    fixture.start_township();
    let file = fixture.sheet_file("T01-U01-XH-C01.toml", |t| t);
    assert_eq!(fixture.village(&["submit", &file]).code, EXIT_SUCCESS);
    let run = fixture.village(&["submit", &file]);
    run.assert_code(EXIT_SUCCESS);
    run.assert_stdout_contains("already in the journal (delivered ACCEPTED); sending it again");
    run.assert_stdout_contains("delivered DUPLICATE");
    assert_eq!(fixture.seen(|s| (s.calls, s.stored.len())), (2, 1));
    assert_eq!(fixture.status().len(), 1);

    std::fs::write(
        fixture.path("changed.toml"),
        std::fs::read_to_string(fixture.path(&file))
            .unwrap()
            .replace("approvals = 640", "approvals = 641"),
    )
    .unwrap();
    let run = fixture.village(&["submit", "changed.toml"]);
    run.assert_code(EXIT_REFUSED);
    run.assert_stdout_contains(
        "changed.toml: not submitted: version 1 of contest XH-C01 round 1 is already journaled",
    );
    run.assert_stdout_contains("tally village correct --contest XH-C01 --round 1");
    assert_eq!(fixture.seen(|s| s.calls), 2, "nothing was sent");

    let other = fixture.tally(
        &[
            "sheet",
            "sign",
            "--definition",
            small_town().join("election.toml").to_str().unwrap(),
            "--key",
            small_town().join("keys/T01-U02.key").to_str().unwrap(),
            "--out",
            "other.sheets",
            small_town()
                .join("sheets/T01-U02-XH-C01.toml")
                .to_str()
                .unwrap(),
        ],
        "",
    );
    other.assert_code(EXIT_SUCCESS);
    let run = fixture.village(&["submit", "other.sheets"]);
    run.assert_code(EXIT_REFUSED);
    run.assert_stdout_contains("other.sheets #1: not submitted: it is unit T01-U02's sheet");
}

// Goal: a sheet the township refuses is recorded refused with its code, and submit exits 1.
// Method: the fake refuses the next call's sheets with E104.
#[test]
fn a_refused_sheet_is_recorded_with_its_code() {
    let mut fixture = Fixture::new();
    fixture.start_township();
    fixture.seen.lock().unwrap().refuse_next = 1;
    let file = fixture.sheet_file("T01-U01-XH-C01.toml", |t| t);
    let run = fixture.village(&["submit", &file]);
    run.assert_code(EXIT_REFUSED);
    run.assert_stdout_contains("refused E104: void + valid is not collected");
    assert_eq!(states(&fixture.status()), ["v1 refused E104"]);
    let table = fixture.village(&["status"]);
    table.assert_code(EXIT_FINDINGS);
    table.assert_stdout_contains("refused E104");
}

// Goal: a correction is the journal's highest version + 1 naming the one it replaces,
// signed again and delivered; the township then holds both and the newest counts. The QR
// code of the slot is the newest version, and its PNG reads back to the very bytes sent.
// Method: submit version 1, correct twice, print the QR as a PNG, read it back.
#[test]
fn a_correction_is_the_next_version_and_its_qr_reads_back() {
    let mut fixture = Fixture::new();
    fixture.start_township();
    let file = fixture.sheet_file("T01-U01-XH-C01.toml", |t| t);
    assert_eq!(fixture.village(&["submit", &file]).code, EXIT_SUCCESS);
    let fixed = fixture.sheet_file("T01-U01-XH-C01.toml", |t| {
        t.replace("approvals = 640", "approvals = 604")
    });
    std::fs::rename(fixture.path(&fixed), fixture.path("fixed.toml")).unwrap();
    let run = fixture.village(&["correct", "--contest", "XH-C01", "fixed.toml"]);
    run.assert_code(EXIT_SUCCESS);
    run.assert_stdout_contains("made version 2 replacing version 1");
    run.assert_stdout_contains("contest XH-C01, round 1, version 2");
    let stored_v2 = fixture.seen(|s| s.stored.last().unwrap().clone());
    let sheet = tally_proto::decode_sheet(&stored_v2.sheet).unwrap();
    assert_eq!((sheet.version, sheet.replaces_version), (2, Some(1)));
    assert_eq!(
        sheet.approvals(&tally_core::ids::CandidateId::new("XH-C01-3")),
        604
    );

    let run = fixture.village(&["correct", "--contest", "XH-C01", "fixed.toml"]);
    run.assert_code(EXIT_SUCCESS);
    assert_eq!(
        states(&fixture.status()),
        [
            "v1 delivered ACCEPTED",
            "v2 delivered ACCEPTED",
            "v3 delivered ACCEPTED"
        ]
    );
    let stored_v3 = fixture.seen(|s| s.stored.last().unwrap().clone());
    assert_eq!(
        tally_proto::decode_sheet(&stored_v3.sheet)
            .unwrap()
            .replaces_version,
        Some(2)
    );

    let wrong = fixture.village(&["correct", "--contest", "T01-X01", "fixed.toml"]);
    wrong.assert_code(1);
    wrong.assert_stderr_contains("fixed.toml is a sheet of contest XH-C01, not T01-X01");

    let run = fixture.village(&["qr", "--contest", "XH-C01", "--png", "sheet.png"]);
    run.assert_code(EXIT_SUCCESS);
    run.assert_stdout_contains("version 3");
    assert!(
        run.stdout.contains('\u{2580}') && run.stdout.contains("TALLY1:"),
        "{}",
        run.dump()
    );
    let read = tally_tests::offline::read_offline(&fixture.path("sheet.png")).unwrap();
    assert_eq!(read.len(), 1);
    assert_eq!(
        tally_proto::encode_signed(&read[0]),
        tally_proto::encode_signed(&stored_v3)
    );
}

// Goal: a config whose key or certificate is another unit's is refused before anything is
// signed, with every problem in one message naming the file, the line and the key.
// Method: point signing_key and the certificate at unit T01-U02's files.
#[test]
fn another_units_key_and_certificate_are_refused_at_once() {
    let fixture = Fixture::new();
    fixture.write_config("127.0.0.1:9", "T01-U02.key", "T01-U02");
    let file = fixture.sheet_file("T01-U01-XH-C01.toml", |t| t);
    let run = fixture.village(&["submit", &file]);
    run.assert_code(1);
    run.assert_stderr_contains("village.toml has 2 problems");
    run.assert_stderr_contains("village.toml, line 3, signing_key:");
    run.assert_stderr_contains("is the key of unit T01-U02");
    run.assert_stderr_contains("village.toml, line 8, tls.cert:");
    run.assert_stderr_contains("tally://village/T01-U02's certificate, but this is unit T01-U01");
    assert!(!fixture.path("journal").exists(), "nothing was journaled");
}
