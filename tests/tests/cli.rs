//! End-to-end tests of the `tally` command line: the binary is run as a user runs it, in a
//! fresh temporary folder per test, on the hand-written `examples/small-town` county and on the
//! generated `examples/sample-county`. Tests check what a user checks: exit codes, the names
//! and codes in messages, and the results in the table, JSON and CSV output.

use serde_json::Value;
use std::path::Path;
use tally_tests::{Run, run, sample_county, small_town, tempdir};
use tempfile::TempDir;

/// Exit codes of `tally` (see `crates/tally/src/cli.rs`).
const EXIT_SUCCESS: i32 = 0;
const EXIT_FAILURE: i32 = 1;
const EXIT_FINDINGS: i32 = 3;

/// The three units of the small town, each with the sheets its clerk filled in.
const SMALL_TOWN_UNITS: [(&str, &[&str]); 3] = [
    ("T01-U01", &["T01-U01-XH-C01.toml", "T01-U01-T01-X01.toml"]),
    ("T01-U02", &["T01-U02-XH-C01.toml", "T01-U02-T01-X01.toml"]),
    ("T02-U01", &["T02-U01-T02-X01.toml"]),
];

/// Runs `tally` with `args` in the folder `cwd`; no run may end in a panic, whatever the input.
fn tally_in<I, S>(cwd: &Path, args: I) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let run = run(cwd, args);
    run.assert_no_panic();
    run
}

/// A fresh temporary folder holding a copy of the small town ([`copy_small_town`]).
fn small_town_copy() -> TempDir {
    let dir = tempdir();
    copy_small_town(dir.path());
    dir
}

/// Copies the small town's definition, keys and sheets into `dir`, so a test can change them.
fn copy_small_town(dir: &Path) {
    for sub in ["", "keys", "sheets"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
        for entry in std::fs::read_dir(small_town().join(sub)).unwrap() {
            let path = entry.unwrap().path();
            if path.is_file() {
                std::fs::copy(&path, dir.join(sub).join(path.file_name().unwrap())).unwrap();
            }
        }
    }
}

/// Copies the sample county's files into `dir`.
fn copy_sample_county(dir: &Path) {
    for entry in std::fs::read_dir(sample_county()).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.join(path.file_name().unwrap())).unwrap();
    }
}

/// Signs every unit's sheets with its key, in `dir` (a copy of the small town), into
/// `dir/signed/UNIT.sheets`, as the README shows.
fn sign_small_town(dir: &Path) {
    std::fs::create_dir_all(dir.join("signed")).unwrap();
    for (unit, sheets) in SMALL_TOWN_UNITS {
        let mut args = vec![
            "sheet".to_owned(),
            "sign".into(),
            "--definition".into(),
            "election.toml".into(),
            "--key".into(),
            format!("keys/{unit}.key"),
            "--out".into(),
            format!("signed/{unit}.sheets"),
        ];
        args.extend(sheets.iter().map(|s| format!("sheets/{s}")));
        let run = tally_in(dir, &args);
        run.assert_code(EXIT_SUCCESS);
        run.assert_stdout_contains(&format!("signed {} sheet(s) of unit {unit}", sheets.len()));
    }
}

/// `tally sheet sign` of unit T01-U01's first sheet file with `key`, into `out.sheets`, in
/// `dir` (a copy of the small town).
fn sign_first_sheet(dir: &Path, key: &str) -> Run {
    tally_in(
        dir,
        [
            "sheet",
            "sign",
            "--definition",
            "election.toml",
            "--key",
            key,
            "--out",
            "out.sheets",
            "sheets/T01-U01-XH-C01.toml",
        ],
    )
}

/// Splits a bundle into its records (each a varint length prefix and that many bytes), to
/// reorder or damage them.
fn bundle_records(bytes: &[u8]) -> Vec<&[u8]> {
    let mut records = Vec::new();
    let mut offset = 0;
    while offset < bytes.len() {
        let (len, prefix) = varint(&bytes[offset..]);
        let end = offset + prefix + len;
        records.push(&bytes[offset..end]);
        offset = end;
    }
    records
}

/// A protobuf varint: the value and the bytes it took.
fn varint(bytes: &[u8]) -> (usize, usize) {
    let mut value = 0usize;
    for (i, &b) in bytes.iter().enumerate().take(10) {
        value |= usize::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return (value, i + 1);
        }
    }
    panic!("a varint longer than 10 bytes");
}

/// The contest of a results JSON with the given id.
fn contest<'a>(results: &'a Value, id: &str) -> &'a Value {
    results["result"]["contests"]
        .as_array()
        .expect("result.contests is a list")
        .iter()
        .find(|c| c["contest"] == id)
        .unwrap_or_else(|| panic!("no contest {id} in the results"))
}

/// The candidate ids of a contest's elected people (write-ins by name).
fn elected_ids(contest: &Value) -> Vec<String> {
    contest["elected"]
        .as_array()
        .expect("elected is a list")
        .iter()
        .map(|e| match &e["person"] {
            Value::Object(o) if o.contains_key("Candidate") => {
                o["Candidate"].as_str().unwrap().to_owned()
            }
            Value::Object(o) => o["WriteIn"].as_str().unwrap().to_owned(),
            other => panic!("unexpected person {other}"),
        })
        .collect()
}

/// The name of a value that serializes as a plain string or as a one-key object
/// (`"Decided"`, `{"VoidArt44": {...}}`).
fn variant(value: &Value) -> &str {
    match value {
        Value::String(s) => s,
        Value::Object(o) if o.len() == 1 => o.keys().next().unwrap(),
        other => panic!("not an enum value: {other}"),
    }
}

// ---- The small town walkthrough ----

// Goal: the README's walkthrough of the small town works as written and elects the people the
// README says. Method: sign each unit's sheets with its own key, verify the signed bundles,
// then read the results as a table, as JSON and as CSV.
#[test]
fn small_town_walkthrough() {
    let dir = small_town_copy();
    sign_small_town(dir.path());

    let verify = tally_in(
        dir.path(),
        ["sheet", "verify", "--definition", "election.toml", "signed"],
    );
    verify.assert_code(EXIT_SUCCESS);
    assert!(verify.stdout.starts_with("5 accepted"), "{}", verify.dump());
    verify.assert_stdout_contains("0 refused");

    let table = tally_in(
        dir.path(),
        [
            "results",
            "--definition",
            "election.toml",
            "--sheets",
            "signed",
        ],
    );
    table.assert_code(EXIT_SUCCESS);
    for line in [
        "小河县2026年县乡两级人民代表大会代表换届选举",
        "张建国 (1,350)、李春梅 (1,100)",
        "刘文 (790)",
        "孙丽 (520)",
    ] {
        assert!(
            table.stdout.contains(line),
            "missing {line:?}:\n{}",
            table.dump()
        );
    }
    assert!(!table.stdout.contains("王志强 ("), "{}", table.dump());
    // small-town's definition names no mode, so it is a rehearsal: the report says so in its
    // first and last line.
    let lines: Vec<&str> = table.stdout.lines().filter(|l| !l.is_empty()).collect();
    for line in [lines[0], lines[lines.len() - 1]] {
        assert!(
            line.starts_with("【演练 / REHEARSAL】"),
            "{line:?}:\n{}",
            table.dump()
        );
    }

    let json = tally_in(
        dir.path(),
        [
            "results",
            "--definition",
            "election.toml",
            "--sheets",
            "signed",
            "--format",
            "json",
        ],
    );
    json.assert_code(EXIT_SUCCESS);
    let results = json.json();
    assert_eq!(results["intake"]["accepted"], 5);
    assert_eq!(results["intake"]["refused"], Value::Array(vec![]));
    let expected = [
        ("XH-C01", vec!["XH-C01-1", "XH-C01-2"]),
        ("T01-X01", vec!["T01-X01-1"]),
        ("T02-X01", vec!["T02-X01-1"]),
    ];
    assert_eq!(results["result"]["contests"].as_array().unwrap().len(), 3);
    for (id, elected) in expected {
        let c = contest(&results, id);
        assert_eq!(c["status"], "Decided", "{id}");
        assert_eq!(c["vacancies"], 0, "{id}");
        assert_eq!(elected_ids(c), elected, "{id}");
    }

    let csv = tally_in(
        dir.path(),
        [
            "results",
            "--definition",
            "election.toml",
            "--sheets",
            "signed",
            "--format",
            "csv",
        ],
    );
    csv.assert_code(EXIT_SUCCESS);
    let lines: Vec<&str> = csv.stdout.lines().collect();
    let header: Vec<&str> = lines[0].split(',').collect();
    for column in ["contest", "person", "name", "write_in", "votes", "elected"] {
        assert!(header.contains(&column), "no column {column}: {}", lines[0]);
    }
    // One row per person per contest: 3 + 2 + 2 candidates and 3 written-in people.
    assert_eq!(lines.len(), 1 + 10, "{}", csv.stdout);
    let column = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let rows: Vec<Vec<&str>> = lines[1..].iter().map(|l| l.split(',').collect()).collect();
    let elected: Vec<(&str, &str)> = rows
        .iter()
        .filter(|r| r[column("elected")] == "yes")
        .map(|r| (r[column("contest")], r[column("name")]))
        .collect();
    assert_eq!(
        elected,
        [
            ("XH-C01", "张建国"),
            ("XH-C01", "李春梅"),
            ("T01-X01", "刘文"),
            ("T02-X01", "孙丽")
        ]
    );
    let write_in = rows
        .iter()
        .find(|r| r[column("name")] == "赵海燕")
        .expect("the written-in 赵海燕 has a row");
    assert_eq!(write_in[column("write_in")], "yes");
    assert_eq!(write_in[column("votes")], "30");
}

// ---- keygen ----

// Goal: `tally keygen` writes a secret key only its owner can read, never overwrites one, and
// prints the public key to put in the definition. Method: make a key, check the file, its
// mode and the printed key; make it again at the same path.
#[test]
fn keygen_writes_a_private_key_once() {
    let dir = tempdir();
    let run = tally_in(dir.path(), ["keygen", "--out", "unit.key"]);
    run.assert_code(EXIT_SUCCESS);
    let key_path = dir.path().join("unit.key");
    let written = std::fs::read_to_string(&key_path).unwrap();
    assert!(
        written
            .lines()
            .any(|l| l.len() == 64 && l.chars().all(|c| c.is_ascii_hexdigit())),
        "{written}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "mode {mode:o}");
    }
    let public = run
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("public key (put it in the unit's public_key field): "))
        .unwrap_or_else(|| panic!("no public key line:\n{}", run.dump()));
    assert_eq!(public.len(), 64, "{public}");
    assert!(public.chars().all(|c| c.is_ascii_hexdigit()), "{public}");

    let again = tally_in(dir.path(), ["keygen", "--out", "unit.key"]);
    again.assert_code(EXIT_FAILURE);
    again.assert_stderr_contains("unit.key");
    again.assert_stderr_contains("never overwritten");
    assert_eq!(std::fs::read_to_string(&key_path).unwrap(), written);
}

// ---- sheet sign refuses ----

// Goal: a sheet whose ballots do not add up is not signed, and the clerk is told which file and
// which check (E101: void + valid differ from collected). Method: change ballots_valid in a
// copy of a small-town sheet and sign it.
#[test]
fn sign_refuses_unbalanced_sheet() {
    let dir = small_town_copy();
    let sheet = dir.path().join("sheets/T01-U01-XH-C01.toml");
    let text = std::fs::read_to_string(&sheet).unwrap();
    std::fs::write(
        &sheet,
        text.replace("ballots_valid = 1606", "ballots_valid = 1605"),
    )
    .unwrap();
    let run = sign_first_sheet(dir.path(), "keys/T01-U01.key");
    run.assert_code(EXIT_FAILURE);
    run.assert_stderr_contains("sheets/T01-U01-XH-C01.toml: error E101");
    run.assert_stderr_contains("not signed");
    assert!(!dir.path().join("out.sheets").exists());
}

// Goal: a unit can sign only its own sheets, and only with a key the definition knows.
// Method: sign a T01-U01 sheet with T02-U01's key, then with a new key no unit has.
#[test]
fn sign_refuses_a_key_that_is_not_the_units() {
    let dir = small_town_copy();
    let sign = |key: &str| sign_first_sheet(dir.path(), key);
    let other_unit = sign("keys/T02-U01.key");
    other_unit.assert_code(EXIT_FAILURE);
    other_unit.assert_stderr_contains(
        "sheets/T01-U01-XH-C01.toml: the sheet is for unit T01-U01, but the key is unit T02-U01's",
    );

    let keygen = tally_in(dir.path(), ["keygen", "--out", "stranger.key"]);
    keygen.assert_code(EXIT_SUCCESS);
    let stranger = sign("stranger.key");
    stranger.assert_code(EXIT_FAILURE);
    stranger.assert_stderr_contains("is not the key of any unit in the definition");
    assert!(!dir.path().join("out.sheets").exists());
}

// Goal: a misspelled field in a clerk's sheet file is named with the file and its line.
// Method: misspell ballots_blank (line 9 of the file) and sign.
#[test]
fn sign_refuses_misspelled_field() {
    let dir = small_town_copy();
    let sheet = dir.path().join("sheets/T01-U01-XH-C01.toml");
    let text = std::fs::read_to_string(&sheet).unwrap();
    let line = text
        .lines()
        .position(|l| l.starts_with("ballots_blank"))
        .unwrap()
        + 1;
    std::fs::write(&sheet, text.replace("ballots_blank", "ballots_blnk")).unwrap();
    let run = sign_first_sheet(dir.path(), "keys/T01-U01.key");
    run.assert_code(EXIT_FAILURE);
    run.assert_stderr_contains(&format!("sheets/T01-U01-XH-C01.toml, line {line}:"));
    run.assert_stderr_contains("ballots_blnk");
}

// ---- sheet verify finds ----

// Goal: a sheet changed after signing is refused and shown with the bad-signature code, and
// the run exits with "findings". Method: flip one byte inside the first sheet's bytes of a
// signed small-town bundle, then verify it.
#[test]
fn verify_finds_a_tampered_sheet() {
    let dir = small_town_copy();
    sign_small_town(dir.path());
    let bundle = dir.path().join("signed/T01-U01.sheets");
    let mut bytes = std::fs::read(&bundle).unwrap();
    // Record 1: length prefix, then field 1 (tag 0x0a), its length, then the sheet's bytes.
    let (_, record_prefix) = varint(&bytes);
    assert_eq!(
        bytes[record_prefix], 0x0a,
        "field 1, the sheet, comes first"
    );
    let (sheet_len, sheet_prefix) = varint(&bytes[record_prefix + 1..]);
    let sheet_start = record_prefix + 1 + sheet_prefix;
    bytes[sheet_start + sheet_len / 2] ^= 0x01;
    std::fs::write(&bundle, &bytes).unwrap();

    let run = tally_in(
        dir.path(),
        ["sheet", "verify", "--definition", "election.toml", "signed"],
    );
    run.assert_code(EXIT_FINDINGS);
    run.assert_stdout_contains("4 accepted");
    run.assert_stdout_contains("1 refused");
    run.assert_stdout_contains("T01-U01.sheets #1");
    run.assert_stdout_contains("bad signature");
    // The signature layer's codes are those of the core's table: E204 is a bad signature.
    assert!(
        run.stdout.contains("E204") && run.stdout.contains("bad signature"),
        "{}",
        run.dump()
    );

    let json = tally_in(
        dir.path(),
        [
            "sheet",
            "verify",
            "--definition",
            "election.toml",
            "signed",
            "--format",
            "json",
        ],
    );
    json.assert_code(EXIT_FINDINGS);
    let refused = &json.json()["refused"];
    assert_eq!(refused.as_array().unwrap().len(), 1, "{}", json.dump());
    assert_eq!(refused[0]["code"], "E204");
}

// Goal: a bundle cut short is a failure with a message naming the file, not a panic.
// Method: cut a signed small-town bundle in the middle of its last record and verify it.
#[test]
fn verify_reports_a_truncated_bundle() {
    let dir = small_town_copy();
    sign_small_town(dir.path());
    let bundle = dir.path().join("signed/T01-U01.sheets");
    let bytes = std::fs::read(&bundle).unwrap();
    std::fs::write(&bundle, &bytes[..bytes.len() - 10]).unwrap();

    let run = tally_in(
        dir.path(),
        [
            "sheet",
            "verify",
            "--definition",
            "election.toml",
            "signed/T01-U01.sheets",
        ],
    );
    run.assert_code(EXIT_FAILURE);
    run.assert_stderr_contains("signed/T01-U01.sheets is not a readable sheet bundle");
    run.assert_stderr_contains("bundle record 2");
}

// ---- The sample county ----

fn sample_results(dir: &Path, sheets: &[&str]) -> Run {
    let definition = sample_county().join("election.toml");
    let mut args = vec![
        "results".into(),
        "--definition".into(),
        definition.into_os_string(),
        "--format".into(),
        "json".into(),
        "--sheets".into(),
    ];
    args.extend(sheets.iter().map(|s| s.into()));
    tally_in(dir, args)
}

// Goal: the sample county's planted cases come out as SCENARIOS.md says, and the run exits
// with "findings" because of the planted W301. Method: results as JSON on the committed
// sample; check each planted contest's rounds and that every other contest is decided.
#[test]
fn sample_county_planted_outcomes() {
    let dir = tempdir();
    let sheets = sample_county().join("sheets.sheets");
    let run = sample_results(dir.path(), &[sheets.to_str().unwrap()]);
    run.assert_code(EXIT_FINDINGS);
    let results = run.json();
    let intake = &results["intake"];
    assert_eq!(intake["corrections"], 1);
    assert_eq!(intake["refused"], Value::Array(vec![]));
    let warnings: Vec<&str> = intake["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["code"].as_str().unwrap())
        .collect();
    assert_eq!(warnings, ["W301"]);

    let first_round = |id: &str| contest(&results, id)["rounds"][0].clone();
    assert_eq!(variant(&first_round("T01-X05")["follow_up"]), "Revote");
    assert_eq!(variant(&first_round("T01-X06")["follow_up"]), "Further");
    assert_eq!(variant(&first_round("T03-C02")["status"]), "VoidArt44");
    assert_eq!(variant(&first_round("T01-X02")["status"]), "TurnoutFailed");
    let x03 = contest(&results, "T01-X03");
    assert_eq!(x03["vacancies"], 1);
    let last = x03["rounds"].as_array().unwrap().last().unwrap();
    assert_eq!(variant(&last["follow_up"]), "Vacant");

    // The tie at the further election's cut-off waits for the committee: its round 2 (voted
    // with the candidate the committee will choose) is not counted until it has (E207).
    let x11 = contest(&results, "T01-X11");
    assert_eq!(x11["status"], "CommitteeDecision", "{x11}");
    let tie = &x11["rounds"][0]["follow_up"]["FurtherCandidatesTie"];
    assert_eq!(tie["places"], 1, "{x11}");
    assert_eq!(tie["tied"].as_array().map(Vec::len), Some(2), "{x11}");
    let e207: Vec<&Value> = results["result"]["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["code"] == "E207")
        .collect();
    assert!(
        !e207.is_empty()
            && e207
                .iter()
                .all(|f| f["sheet"].as_str().unwrap().contains("T01-X11, round 2")),
        "{e207:?}"
    );
    // One written-in person, two spellings: two people until the committee merges them.
    let written: Vec<&str> = contest(&results, "T01-X08")["rounds"][0]["votes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v["person"]["WriteIn"].as_str())
        .collect();
    assert!(
        written.contains(&"刘华") && written.contains(&"刘桦"),
        "{written:?}"
    );

    let contests = results["result"]["contests"].as_array().unwrap();
    assert!(contests.len() > 600, "{} contests", contests.len());
    for c in contests.iter().filter(|c| c["contest"] != "T01-X11") {
        assert_eq!(c["status"], "Decided", "{}", c["contest"]);
    }
    let planted = [
        "T01-X05", "T01-X06", "T01-X03", "T03-C02", "T01-X02", "T01-X11",
    ];
    for c in contests
        .iter()
        .filter(|c| !planted.contains(&c["contest"].as_str().unwrap()))
    {
        assert_eq!(c["rounds"].as_array().unwrap().len(), 1, "{}", c["contest"]);
        assert_eq!(c["vacancies"], 0, "{}", c["contest"]);
    }
}

// Goal: the result does not depend on the order sheets arrive in, and a resubmitted sheet is
// counted once. Method: compare the JSON `result` of the sample bundle with (a) the bundle
// concatenated with itself, and (b) its records in reverse order, split into two files,
// followed by the doubled bundle (so every sheet arrives three times).
#[test]
fn order_independent_and_counted_once() {
    let dir = tempdir();
    let original = std::fs::read(sample_county().join("sheets.sheets")).unwrap();
    let records = bundle_records(&original);
    let doubled = [original.as_slice(), original.as_slice()].concat();
    std::fs::write(dir.path().join("doubled.sheets"), &doubled).unwrap();
    let reversed: Vec<&[u8]> = records.iter().rev().copied().collect();
    let (first_half, second_half) = reversed.split_at(reversed.len() / 2);
    std::fs::write(dir.path().join("first-half.sheets"), first_half.concat()).unwrap();
    std::fs::write(dir.path().join("second-half.sheets"), second_half.concat()).unwrap();

    let sheets = sample_county().join("sheets.sheets");
    let single = sample_results(dir.path(), &[sheets.to_str().unwrap()]).json();

    let twice = sample_results(dir.path(), &["doubled.sheets"]);
    twice.assert_code(EXIT_FINDINGS);
    let twice = twice.json();
    assert_eq!(twice["result"], single["result"]);
    assert_eq!(twice["intake"]["duplicates"], records.len());
    assert_eq!(twice["intake"]["accepted"], single["intake"]["accepted"]);

    let shuffled = sample_results(
        dir.path(),
        &["first-half.sheets", "second-half.sheets", "doubled.sheets"],
    );
    shuffled.assert_code(EXIT_FINDINGS);
    let shuffled = shuffled.json();
    assert_eq!(shuffled["result"], single["result"]);
    // In reverse order the correction (version 2) of T01-U001's sheet arrives before the
    // version it replaces, so that first version is superseded rather than accepted.
    assert_eq!(shuffled["intake"]["superseded"], 1);
    assert_eq!(
        shuffled["intake"]["accepted"].as_u64().unwrap() + 1,
        single["intake"]["accepted"].as_u64().unwrap()
    );
    assert_eq!(shuffled["intake"]["duplicates"], 2 * records.len());
    assert_eq!(shuffled["intake"]["conflicts"], 0);
}

// Goal: the committed sample county is exactly what the generator makes, so the two cannot
// drift apart. Method: `tally gen --sample` into a new folder; compare every file byte for
// byte, both ways.
#[test]
fn gen_sample_reproduces_examples_sample_county() {
    let dir = tempdir();
    let out = dir.path().join("sample");
    let run = tally_in(dir.path(), ["gen", "--sample", "--out", "sample"]);
    run.assert_code(EXIT_SUCCESS);
    let names = |folder: &Path| -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(folder)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    };
    assert_eq!(names(&out), names(&sample_county()));
    for name in names(&out) {
        let generated = std::fs::read(out.join(&name)).unwrap();
        let committed = std::fs::read(sample_county().join(&name)).unwrap();
        assert!(
            generated == committed,
            "examples/sample-county/{name} differs from `tally gen --sample`; regenerate it"
        );
    }
}

// Goal: the township key files of both examples are the keys their definitions register, so
// the examples' batches can be countersigned. Method: read small-town's keys/T0n.key and each
// row of the sample county's township-keys.csv; find the township by the key's id.
#[test]
fn example_township_keys_match_their_definitions() {
    use tally_core::ids::KeyId;
    use tally_tests::files::{load_definition, read_secret_key};
    let key_id = |key: &ed25519_dalek::SigningKey| KeyId::of(&key.verifying_key());

    let definition = load_definition(&small_town().join("election.toml")).unwrap();
    for township in ["T01", "T02"] {
        let key = read_secret_key(&small_town().join(format!("keys/{township}.key"))).unwrap();
        let registered = definition.township_by_key(&key_id(&key));
        assert_eq!(registered.map(|t| t.id.as_str()), Some(township));
    }

    let definition = load_definition(&sample_county().join("election.toml")).unwrap();
    let keys = std::fs::read_to_string(sample_county().join("township-keys.csv")).unwrap();
    let rows: Vec<(&str, &str)> = keys
        .lines()
        .filter(|l| !l.starts_with('#') && *l != "township,secret_key")
        .map(|l| l.split_once(',').unwrap())
        .collect();
    assert_eq!(rows.len(), definition.townships.len());
    for (township, secret) in rows {
        let seed: [u8; 32] = hex::decode(secret).unwrap().try_into().unwrap();
        let key = ed25519_dalek::SigningKey::from_bytes(&seed);
        let registered = definition.township_by_key(&key_id(&key));
        assert_eq!(registered.map(|t| t.id.as_str()), Some(township));
    }
}

// ---- Definition errors ----

// Goal: a broken definition is refused, each problem named with file, line or record, and
// field. Method: give a small-town contest 5 seats (Art 25 allows 1 to 3); in a copy of the
// sample county, make units.csv name a contest that does not exist.
#[test]
fn definition_errors_name_file_place_and_field() {
    let dir = small_town_copy();
    let definition = dir.path().join("election.toml");
    let text = std::fs::read_to_string(&definition).unwrap();
    let line = text.lines().position(|l| l == r#"id = "XH-C01""#).unwrap() + 1;
    std::fs::write(&definition, text.replacen("seats = 2", "seats = 5", 1)).unwrap();
    let run = tally_in(dir.path(), ["seats", "--definition", "election.toml"]);
    run.assert_code(EXIT_FAILURE);
    run.assert_stderr_contains(&format!(
            "election.toml, line {line}, contests[0].seats: is 5; a constituency elects 1 to 3 deputies (Art 25)"
        ));

    let county = dir.path().join("county");
    std::fs::create_dir(&county).unwrap();
    copy_sample_county(&county);
    let units = std::fs::read_to_string(county.join("units.csv")).unwrap();
    // Record 1 is T01-U001, serving T01-C01 and T01-X01.
    assert!(units.lines().nth(1).unwrap().contains("T01-C01;T01-X01"));
    std::fs::write(
        county.join("units.csv"),
        units.replacen("T01-C01;T01-X01", "T01-C01;T01-X99", 1),
    )
    .unwrap();
    let run = tally_in(&county, ["seats", "--definition", "election.toml"]);
    run.assert_code(EXIT_FAILURE);
    run.assert_stderr_contains(
        r#"units.csv, record 1, contests: contest "T01-X99" is not defined"#,
    );
}

// ---- Seats ----

// Goal: the seats of the sample county's congress are Art 12's 280, and it exits cleanly.
// Method: `tally seats --definition` as a table and as JSON.
#[test]
fn seats_of_the_sample_county() {
    let dir = tempdir();
    let definition = sample_county().join("election.toml");
    let definition = definition.to_str().unwrap();
    let table = tally_in(dir.path(), ["seats", "--definition", definition]);
    table.assert_code(EXIT_SUCCESS);
    table.assert_stdout_contains("青山县 county congress: 280 seats for 700,000 people");
    let json = tally_in(
        dir.path(),
        ["seats", "--definition", definition, "--format", "json"],
    );
    json.assert_code(EXIT_SUCCESS);
    let report = json.json();
    assert_eq!(report["county"]["congress_seats"], 280);
    let apportioned: u64 = report["townships"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["county_seats_apportioned"].as_u64().unwrap())
        .sum();
    assert_eq!(apportioned, 280);
}

/// Runs `tally seats --weights` on the given rows, as JSON, and returns the run.
fn seats_by_weights(dir: &Path, rows: &str, extra: &[&str]) -> Run {
    std::fs::write(dir.join("weights.csv"), rows).unwrap();
    let mut args = vec!["seats", "--weights", "weights.csv", "--format", "json"];
    args.extend(extra);
    tally_in(dir, args)
}

fn seats_column(report: &Value) -> Vec<u64> {
    report["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["seats"].as_u64().unwrap())
        .collect()
}

// Goal: the rulebook's worked example of divisor methods comes out as the rulebook says.
// Method: populations 100,000 / 80,000 / 30,000 / 20,000 and 8 seats, by d'Hondt (4,3,1,0)
// and by Sainte-Laguë (3,3,1,1).
#[test]
fn seats_by_weights_rulebook_example() {
    let dir = tempdir();
    let rows = "name,population\n甲乡,100000\n乙乡,80000\n丙乡,30000\n丁乡,20000\n";
    let d_hondt = seats_by_weights(dir.path(), rows, &["--total", "8", "--method", "d-hondt"]);
    d_hondt.assert_code(EXIT_SUCCESS);
    assert_eq!(seats_column(&d_hondt.json()), [4, 3, 1, 0]);
    assert_eq!(d_hondt.json()["rows"][0]["name"], "甲乡");

    let sainte_lague = seats_by_weights(
        dir.path(),
        rows,
        &["--total", "8", "--method", "sainte-lague"],
    );
    sainte_lague.assert_code(EXIT_SUCCESS);
    assert_eq!(seats_column(&sainte_lague.json()), [3, 3, 1, 1]);
}

// Goal: a tie the method cannot break is reported for the committee, with exit 3, and never
// broken silently. Method: two equal rows and one seat with `--tie-rule report`.
#[test]
fn seats_tie_is_reported() {
    let dir = tempdir();
    let run = seats_by_weights(
        dir.path(),
        "甲乡,5000\n乙乡,5000\n",
        &["--total", "1", "--tie-rule", "report"],
    );
    run.assert_code(EXIT_FINDINGS);
    let report = run.json();
    assert_eq!(report["tie"]["seats"], 1);
    assert_eq!(seats_column(&report), [0, 0]);
    assert_eq!(report["rows"][0]["tied"], true);
    assert_eq!(report["rows"][1]["tied"], true);

    let table = tally_in(
        dir.path(),
        [
            "seats",
            "--weights",
            "weights.csv",
            "--total",
            "1",
            "--tie-rule",
            "report",
        ],
    );
    table.assert_code(EXIT_FINDINGS);
    table.assert_stdout_contains("TIE: 1 seat(s) undecided between 甲乡, 乙乡");
}

// ---- demo ----

// Goal: `tally demo --offline` runs the offline path on the sample county and ends by saying
// where the files are. Method: run it into a temporary folder; check the exit code, the last
// lines and that the folder holds the files it names. (The networked `tally demo` is what CI
// runs after the tests, and what tests/chain.rs builds on.)
#[test]
fn offline_demo_runs_and_says_where_the_files_are() {
    let dir = tempdir();
    let run = tally_in(dir.path(), ["demo", "--offline", "--dir", "demo"]);
    run.assert_code(EXIT_SUCCESS);
    let county = Path::new("demo").join("sample-county");
    let ending: Vec<&str> = run.stdout.lines().rev().take(10).collect();
    assert!(
        ending
            .iter()
            .any(|l| l.contains(&format!("The files are in {}", county.display()))),
        "{}",
        run.dump()
    );
    assert!(
        ending.iter().any(|l| l.contains(&format!(
            "tally results --definition {}",
            county.join("election.toml").display()
        ))),
        "{}",
        run.dump()
    );
    for file in ["election.toml", "sheets.sheets", "SCENARIOS.md"] {
        assert!(dir.path().join(&county).join(file).is_file(), "{file}");
    }
}

// Goal: `tally demo` (the whole chain as processes) ends with the county's result equal to an
// offline recount, a healthy cluster, and says where to look. Method: run it with a short pace
// into a relative folder (the configs it writes must still find their files) and read the
// report; then check no server it started is still running.
#[test]
fn networked_demo_counts_every_sheet_once_and_stops_its_servers() {
    let dir = tempdir();
    let run = tally_in(dir.path(), ["demo", "--dir", "demo", "--pace", "3"]);
    run.assert_code(EXIT_SUCCESS);
    for expected in [
        "killed replica",
        "started again: it catches up from the others",
        "duplicate (counted once)",
        "all 1447 sheets counted at the county",
        "It equals an offline recount of the 1447 signed sheets, each counted once.",
        // The committee closes the count.
        "the cut-off tie in T01-X11",
        "刘华 and 刘桦 are one person",
        "warning W301 in T03-C02",
        "679 of 679 contests confirmed; 0 matter(s) keep a contest from being confirmed",
        "选举结果报告单, 1547 deputies on the lists of confirmed contests, 0 on drafts",
        "published:",
        "10. Replication status",
    ] {
        assert!(
            run.stdout.contains(expected),
            "{expected:?}\n{}",
            run.dump()
        );
    }
    assert!(
        !run.stdout.contains("attention:"),
        "the cluster was not healthy at the end\n{}",
        run.dump()
    );
    let root = std::fs::canonicalize(dir.path().join("demo")).unwrap();
    run.assert_stdout_contains(&format!("Everything is in {}", root.display()));
    // Every server was stopped: none of the demo's configs is in a running command line.
    let ps = std::process::Command::new("ps")
        .args(["-eo", "args"])
        .output()
        .unwrap();
    let running = String::from_utf8_lossy(&ps.stdout);
    assert!(
        !running.contains(&root.display().to_string()),
        "servers still running:\n{running}"
    );
}

// Goal: the networked demo refuses a folder that holds something, before starting anything,
// and names the folder. Method: run it into a folder with a file in it.
#[test]
fn demo_refuses_a_folder_that_is_not_empty() {
    let dir = tempdir();
    std::fs::create_dir(dir.path().join("demo")).unwrap();
    std::fs::write(dir.path().join("demo").join("keep.txt"), "mine").unwrap();
    let run = tally_in(dir.path(), ["demo", "--dir", "demo"]);
    run.assert_code(EXIT_FAILURE);
    run.assert_stderr_contains("demo is not empty; give a new folder with --dir");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("demo").join("keep.txt")).unwrap(),
        "mine"
    );
}

// ---- Certificates ----

/// The mode bits of a file's permissions (0 where there are none to read).
fn file_mode(path: &Path) -> u32 {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        0
    }
}

// Goal: a first `tally certs` makes a whole small county: the CA, replicas 1 to 3, every
// township of the definition and the default operator; it prints every file, keeps keys
// private, points at the doc for an existing CA, and the files load as mutual TLS material.
// Method: run it on the small town's definition; check the files, the output and the modes,
// and load replica 1's files with tally-net as a replica will.
#[test]
fn certs_makes_a_county_pki() {
    let dir = tempdir();
    let definition = small_town().join("election.toml");
    let definition = definition.to_str().expect("the repository path is UTF-8");
    let run = tally_in(
        dir.path(),
        ["certs", "--out", "pki", "--definition", definition],
    );
    run.assert_code(EXIT_SUCCESS);
    run.assert_stdout_contains("made a new county CA for 小河县 in pki");
    let pki = dir.path().join("pki");
    let stems = [
        "ca",
        "replica-1",
        "replica-2",
        "replica-3",
        "township-T01",
        "township-T02",
        "operator-operator",
    ];
    for stem in stems {
        for ext in ["pem", "key"] {
            let name = format!("{stem}.{ext}");
            assert!(pki.join(&name).is_file(), "{name}");
            let shown = Path::new("pki").join(&name);
            assert!(
                run.stdout
                    .lines()
                    .any(|l| l == format!("wrote {}", shown.display())),
                "{name} not listed\n{}",
                run.dump()
            );
        }
        if cfg!(unix) {
            assert_eq!(file_mode(&pki.join(format!("{stem}.key"))), 0o600, "{stem}");
        }
    }
    assert_eq!(run.stdout.matches("wrote ").count(), stems.len() * 2);
    run.assert_stdout_contains("mode 0600");
    run.assert_stdout_contains(
        "crates/tally-net/README.md#using-an-existing-ca-instead-of-tally-certs",
    );

    let replica = tally_net::Identity::replica(1).unwrap();
    let (_, identity) = tally_net::TlsFiles::in_dir(&pki, &replica)
        .server_tls()
        .unwrap_or_else(|e| panic!("replica 1's files do not load: {e}"));
    assert_eq!(identity, replica);
}

// Goal: `tally certs` never overwrites a certificate or key, and refuses a bad name, exiting 1
// with a message naming the file or the name. Method: make township T01's certificate, ask for
// it again and compare the file before and after; ask for a township named "T 1".
#[test]
fn certs_refuses_to_overwrite() {
    let dir = tempdir();
    let first = tally_in(dir.path(), ["certs", "--out", "pki", "--townships", "T01"]);
    first.assert_code(EXIT_SUCCESS);
    let cert = dir.path().join("pki/township-T01.pem");
    let before = std::fs::read_to_string(&cert).unwrap();

    let again = tally_in(dir.path(), ["certs", "--out", "pki", "--townships", "T01"]);
    again.assert_code(EXIT_FAILURE);
    again.assert_stderr_contains("township-T01.pem");
    again.assert_stderr_contains("never overwrites");
    assert!(!again.stdout.contains("wrote"), "{}", again.dump());
    assert_eq!(std::fs::read_to_string(&cert).unwrap(), before);

    let bad = tally_in(
        dir.path(),
        ["certs", "--out", "fresh", "--townships", "T 1"],
    );
    bad.assert_code(EXIT_FAILURE);
    bad.assert_stderr_contains("township:T 1");
    bad.assert_stderr_contains("' '");
    assert!(
        !dir.path().join("fresh").exists(),
        "nothing is written when a name is bad"
    );
}

// Goal: a county's CA signs certificates added later, and a later run makes only what it
// names (the first run's defaults are not made again). Method: make a county with township
// T01, then add T02 into the same folder; the CA files are unchanged, only T02's files are
// written, and T02's certificate loads against the CA; a run naming nothing is refused.
#[test]
fn certs_reuses_the_ca_for_an_added_township() {
    let dir = tempdir();
    let first = tally_in(dir.path(), ["certs", "--out", "pki", "--townships", "T01"]);
    first.assert_code(EXIT_SUCCESS);
    let pki = dir.path().join("pki");
    let ca_before = std::fs::read(pki.join("ca.pem")).unwrap();
    let ca_key_before = std::fs::read(pki.join("ca.key")).unwrap();

    let added = tally_in(dir.path(), ["certs", "--out", "pki", "--townships", "T02"]);
    added.assert_code(EXIT_SUCCESS);
    added.assert_stdout_contains("reused the county CA in pki");
    let written: Vec<&str> = added
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix("wrote "))
        .collect();
    let expected: Vec<String> = ["township-T02.pem", "township-T02.key"]
        .iter()
        .map(|f| Path::new("pki").join(f).display().to_string())
        .collect();
    assert_eq!(written, expected, "{}", added.dump());
    assert_eq!(std::fs::read(pki.join("ca.pem")).unwrap(), ca_before);
    assert_eq!(std::fs::read(pki.join("ca.key")).unwrap(), ca_key_before);

    let township = tally_net::Identity::new(tally_net::Role::Township, "T02").unwrap();
    let (_, identity) = tally_net::TlsFiles::in_dir(&pki, &township)
        .client_tls("localhost")
        .unwrap_or_else(|e| panic!("township T02's files do not load against the CA: {e}"));
    assert_eq!(identity, township);

    let nothing = tally_in(dir.path(), ["certs", "--out", "pki"]);
    nothing.assert_code(EXIT_FAILURE);
    nothing.assert_stderr_contains("nothing to make");
}

// Goal: the vendor's small contract of two commands. `tally keygen --format json` prints the
// public key and key id a script needs (and they are the key file's); `tally seats --help`
// lists the apportionment methods, and a method that is not one is a usage error (exit 2)
// naming them. Method: run each; read the key file back.
#[test]
fn keygen_json_and_seats_method_names() {
    let dir = tempdir();
    let run = tally_in(
        dir.path(),
        ["keygen", "--out", "unit.key", "--format", "json"],
    );
    run.assert_code(EXIT_SUCCESS);
    let printed: Value = serde_json::from_str(&run.stdout).expect("keygen --format json is JSON");
    let key = tally_files::read_secret_key(&dir.path().join("unit.key")).unwrap();
    let public = key.verifying_key();
    assert_eq!(printed["public_key"], hex::encode(public.as_bytes()));
    assert_eq!(
        printed["key_id"],
        tally_core::ids::KeyId::of(&public).to_string()
    );

    let help = tally_in(dir.path(), ["seats", "--help"]);
    help.assert_code(EXIT_SUCCESS);
    for method in tally_core::apportion::Method::ALL {
        help.assert_stdout_contains(method.name());
    }
    let wrong = tally_in(
        dir.path(),
        [
            "seats",
            "--weights",
            "w.csv",
            "--total",
            "5",
            "--method",
            "hondt",
        ],
    );
    wrong.assert_code(2);
    assert!(
        wrong.stderr.contains("d-hondt") && wrong.stderr.contains("sainte-lague"),
        "{}",
        wrong.dump()
    );
}
