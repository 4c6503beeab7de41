//! `tally township` as a township office runs it: the aggregator as a process with its config
//! file, the clerk's `import` of sheets carried on a file, `picture` as the clerk and as an
//! operator, and SIGTERM. The county is not running here (the library's tests forward into
//! one): the sheets wait in the outbox, and the picture says so.

use serde_json::Value;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tally_tests::{Process, free_port, import, output, poll, tally};
use tempfile::TempDir;

const START_DEADLINE: Duration = Duration::from_secs(20);
/// SIGTERM stops the aggregator within 2 s; the margin is for a loaded test machine.
const STOP_DEADLINE: Duration = Duration::from_secs(4);
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Starts `tally township` on T01's config, its log in `log_path` (JSON lines when `json_logs`),
/// and waits until it answers its picture.
fn serve(root: &Path, log_path: &Path, json_logs: bool) -> Process {
    let mut command = tally();
    if json_logs {
        command.env("TALLY_LOG_FORMAT", "json");
    }
    let mut township = Process(
        command
            .args(["township", "--config", "townships/T01.toml"])
            .current_dir(root)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log_path).unwrap())
            .spawn()
            .expect("tally township starts"),
    );
    let log = || std::fs::read_to_string(log_path).unwrap_or_default();
    poll(START_DEADLINE, POLL_INTERVAL, || {
        let (code, _, _) = output(
            root,
            &["township", "picture", "--config", "townships/T01.toml"],
        );
        if code == 0 || code == 3 {
            return Ok(());
        }
        if let Some(status) = township.exited() {
            panic!("the aggregator exited ({status}): {}", log());
        }
        Err(format!("picture exit {code}"))
    })
    .unwrap_or_else(|last| {
        panic!(
            "the aggregator did not answer within {START_DEADLINE:?} ({last}): {}",
            log()
        )
    });
    township
}

/// A generated county of three townships, its PKI with village certificates, T01's key and
/// config (the county at three addresses where nothing listens).
fn township_office() -> (TempDir, u16) {
    let dir = tally_tests::tempdir();
    let root = dir.path();
    let (code, out, err) = output(
        root,
        &[
            "gen",
            "--out",
            "county",
            "--townships",
            "3",
            "--population",
            "120000",
            "--voters-per-station",
            "2000",
            "--seed",
            "11",
            "--no-scenarios",
        ],
    );
    assert_eq!(code, 0, "tally gen: {out}{err}");
    let (code, out, err) = output(
        root,
        &[
            "certs",
            "--out",
            "pki",
            "--definition",
            "county/election.toml",
            "--villages",
            "--operators",
            "alice",
        ],
    );
    assert_eq!(code, 0, "tally certs: {out}{err}");
    let keys = std::fs::read_to_string(root.join("county/township-keys.csv")).unwrap();
    let secret = keys
        .lines()
        .find_map(|line| line.strip_prefix("T01,"))
        .expect("township-keys.csv has T01");
    std::fs::create_dir(root.join("keys")).unwrap();
    std::fs::write(
        root.join("keys/township-T01.key"),
        format!("# township T01\n{}\n", secret.trim()),
    )
    .unwrap();
    let port = free_port();
    let county: Vec<String> = (0..3)
        .map(|_| format!("\"127.0.0.1:{}\"", free_port()))
        .collect();
    std::fs::create_dir(root.join("townships")).unwrap();
    std::fs::write(
        root.join("townships/T01.toml"),
        format!(
            r#"township_id = "T01"
listen = "127.0.0.1:{port}"
data_dir = "../data/township-T01"
definition = "../county/election.toml"
countersign_key = "../keys/township-T01.key"
county = [{}]
[tls]
ca = "../pki/ca.pem"
cert = "../pki/township-T01.pem"
key = "../pki/township-T01.key"
[outbox]
retry_max_ms = 500
"#,
            county.join(", ")
        ),
    )
    .unwrap();
    // The sheets a clerk carries: T01's (the generator names units after their township),
    // and one of T02's that does not belong here.
    let bundle = std::fs::read(root.join("county/sheets.sheets")).unwrap();
    let sheets = tally_proto::read_bundle(&bundle).unwrap();
    let of = |prefix: &str| -> Vec<tally_proto::SignedSheet> {
        sheets
            .iter()
            .filter(|s| {
                tally_proto::decode_sheet(&s.sheet)
                    .unwrap()
                    .unit
                    .as_str()
                    .starts_with(prefix)
            })
            .cloned()
            .collect()
    };
    std::fs::write(
        root.join("t01.sheets"),
        tally_proto::write_bundle(&of("T01-")),
    )
    .unwrap();
    std::fs::write(
        root.join("t02.sheets"),
        tally_proto::write_bundle(&of("T02-")[..1]),
    )
    .unwrap();
    (dir, port)
}

fn picture_json(root: &Path, args: &[&str]) -> (i32, Value) {
    let mut all = vec!["township", "picture", "--format", "json"];
    all.extend_from_slice(args);
    let (code, out, err) = output(root, &all);
    let json = serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("picture prints JSON ({e}): {out}{err}"));
    (code, json)
}

// Goal: the township office's whole routine from the command line: the aggregator starts from
// its config, the clerk imports a carried file and sees each sheet's outcome, a sheet of
// another township is refused with E210 (exit 3), the picture shows the stored sheets waiting
// for an unreachable county (exit 3) to the clerk and to an operator, and SIGTERM stops the
// aggregator within two seconds.
// Method: run `tally township --config` as a process; wait until `picture` answers; import;
// read the picture as JSON and as a table; send SIGTERM and time the exit.
#[cfg(unix)]
#[test]
fn serve_import_picture_and_stop() {
    let (dir, port) = township_office();
    let root = dir.path();
    let mut township = serve(root, &root.join("township.log"), false);
    let log = || std::fs::read_to_string(root.join("township.log")).unwrap_or_default();

    let (code, out, err) = import(root, "townships/T01.toml", &["t01.sheets"]);
    assert_eq!(code, 0, "{out}{err}");
    let accepted = out.lines().filter(|l| l.contains(": accepted: ")).count();
    assert!(accepted >= 10, "{out}");
    assert!(
        out.contains(&format!("accepted {accepted}, duplicate 0")),
        "{out}"
    );

    let (code, out, err) = import(root, "townships/T01.toml", &["t02.sheets", "t01.sheets"]);
    assert_eq!(code, 3, "a refused sheet is a finding: {out}{err}");
    assert!(out.contains("t02.sheets #1: refused E210"), "{out}");
    assert!(
        out.contains(&format!("duplicate {accepted}")),
        "a second import changes nothing: {out}"
    );

    let (code, picture) = picture_json(root, &["--config", "townships/T01.toml"]);
    assert_eq!(code, 3, "sheets wait in the outbox: {picture}");
    assert_eq!(picture["township"], "T01");
    assert_eq!(picture["sheets_stored"], accepted as u64);
    assert_eq!(picture["outbox"]["depth"], accepted as u64);
    assert_eq!(picture["refused"][0]["code"], "E210");
    assert_eq!(picture["units_reported"], picture["units_expected"]);
    assert!(
        picture["result"]["contests"]
            .as_array()
            .is_some_and(|c| !c.is_empty())
    );

    let server = format!("127.0.0.1:{port}");
    let (code, operator_view) = picture_json(
        root,
        &["--server", &server, "--pki", "pki", "--operator", "alice"],
    );
    assert_eq!(code, 3);
    assert_eq!(operator_view["sheets_stored"], accepted as u64);

    let (_, out, _) = output(
        root,
        &["township", "picture", "--config", "townships/T01.toml"],
    );
    assert!(
        out.contains(&format!("{accepted} waiting")),
        "the table says what waits: {out}"
    );
    assert!(out.contains("county: NOT reachable"), "{out}");

    let pid = township.0.id().to_string();
    let stopping = Instant::now();
    let status = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let exit = loop {
        if let Some(status) = township.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            stopping.elapsed() < STOP_DEADLINE,
            "the aggregator did not stop within {STOP_DEADLINE:?} of SIGTERM: {}",
            log()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(exit.success(), "exit {exit}: {}", log());
    assert!(log().contains("township aggregator stopped"), "{}", log());

    // The config is checked before anything starts: the key of another township is refused.
    let keys = std::fs::read_to_string(root.join("county/township-keys.csv")).unwrap();
    let t02 = keys
        .lines()
        .find_map(|line| line.strip_prefix("T02,"))
        .unwrap();
    std::fs::write(root.join("keys/township-T01.key"), t02).unwrap();
    let (code, out, err) = output(root, &["township", "--config", "townships/T01.toml"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains(
            "countersign_key is not the key the election definition registers for township T01"
        ),
        "{err}"
    );

    // And a certificate of another township.
    std::fs::write(
        root.join("keys/township-T01.key"),
        keys.lines()
            .find_map(|line| line.strip_prefix("T01,"))
            .unwrap(),
    )
    .unwrap();
    let config = std::fs::read_to_string(root.join("townships/T01.toml"))
        .unwrap()
        .replace("pki/township-T01.", "pki/township-T02.");
    std::fs::write(root.join("townships/T01.toml"), config).unwrap();
    let (code, out, err) = output(root, &["township", "--config", "townships/T01.toml"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("is township:T02's certificate, but this is township T01's aggregator"),
        "{err}"
    );
}

// Goal: with TALLY_LOG_FORMAT=json every log line about one sheet is a JSON object whose
// fields name the sheet (digest prefix), unit, contest, round and version, for an accepted
// sheet and a refused one alike.
// Method: run `tally township --config` with JSON logs; import T01's sheets and one of T02's
// (refused E210); read the log lines and check the fields against the imported sheets.
#[cfg(unix)]
#[test]
fn json_logs_name_the_sheet_unit_and_contest() {
    let (dir, _port) = township_office();
    let root = dir.path();
    let log_path = root.join("township.log");
    // Runs until the test ends (dropped last).
    let _township = serve(root, &log_path, true);
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let (code, out, err) = import(root, "townships/T01.toml", &["t01.sheets", "t02.sheets"]);
    assert_eq!(code, 3, "{out}{err}");
    let t01 = tally_proto::read_bundle(&std::fs::read(root.join("t01.sheets")).unwrap()).unwrap();
    let first = &t01[0];
    let sheet = tally_proto::decode_sheet(&first.sheet).unwrap();
    let digest = hex::encode(first.digest());

    // The writer logs after its commit; poll the log for both lines.
    let deadline = Instant::now() + START_DEADLINE;
    let (accepted, refused) = loop {
        let lines: Vec<Value> = log()
            .lines()
            .map(|l| {
                serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}"))
            })
            .collect();
        let find = |message: &str, unit_prefix: &str| {
            lines
                .iter()
                .find(|l| {
                    l["fields"]["message"]
                        .as_str()
                        .is_some_and(|m| m.starts_with(message))
                        && l["fields"]["unit"]
                            .as_str()
                            .is_some_and(|u| u.starts_with(unit_prefix))
                })
                .cloned()
        };
        let accepted = lines
            .iter()
            .find(|l| {
                l["fields"]["message"] == "sheet accepted"
                    && l["fields"]["sheet"]
                        .as_str()
                        .is_some_and(|s| digest.starts_with(s))
            })
            .cloned();
        if let (Some(a), Some(r)) = (accepted, find("sheet refused", "T02-")) {
            break (a, r);
        }
        assert!(
            Instant::now() < deadline,
            "no sheet lines in the log: {}",
            log()
        );
        std::thread::sleep(POLL_INTERVAL);
    };
    let fields = &accepted["fields"];
    assert_eq!(fields["sheet"].as_str().unwrap().len(), 12, "{accepted}");
    assert_eq!(fields["unit"], sheet.unit.as_str(), "{accepted}");
    assert_eq!(fields["contest"], sheet.contest.as_str(), "{accepted}");
    assert_eq!(fields["round"], sheet.round.0, "{accepted}");
    assert_eq!(fields["version"], sheet.version, "{accepted}");
    assert_eq!(fields["township"], "T01", "{accepted}");
    assert_eq!(accepted["level"], "INFO");
    let fields = &refused["fields"];
    assert_eq!(fields["code"], "E210", "{refused}");
    assert_eq!(fields["sheet"].as_str().unwrap().len(), 12, "{refused}");
    assert!(
        fields["contest"].as_str().is_some_and(|c| !c.is_empty()),
        "{refused}"
    );
    assert!(
        fields["round"].is_u64() && fields["version"].is_u64(),
        "{refused}"
    );
    assert_eq!(refused["level"], "WARN");
}
