//! Evidence bundles end to end: a real county cluster (three `tally county` processes) takes a
//! synthetic county's signed sheets through `tally submit`; `tally export` writes the bundle
//! and `tally verify` checks it offline; then copies of the bundle are tampered with, and
//! verify must name what was changed and exit 3.
//!
//! Every process the test starts is killed when the test ends (the fleet's drop, and the
//! submit runs to its end).

use serde_json::Value;
use std::path::Path;
use tally_synth::GenParams;
use tally_tests::{copy_dir, output};

/// A county of two townships: some two hundred sheets, with the planted cases.
fn params() -> GenParams {
    GenParams {
        seed: 11,
        county_name: "证据县".into(),
        townships: 2,
        population: 120_000,
        voters_per_station: 1_200,
        scenarios: true,
    }
}

/// `tally verify BUNDLE --format json`: the exit code and the report.
fn verify(cwd: &Path, bundle: &Path) -> (i32, Value) {
    let (code, out, err) = output(
        cwd,
        &["verify", bundle.to_str().unwrap(), "--format", "json"],
    );
    let report: Value = serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("verify prints JSON ({e}); stdout {out}, stderr {err}"));
    (code, report)
}

fn findings(report: &Value) -> Vec<Value> {
    report["findings"].as_array().cloned().unwrap_or_default()
}

/// Rewrites one file of a bundle and, like a careful forger, its SHA-256 in the manifest.
fn rewrite(bundle: &Path, relative: &str, contents: &str, fix_manifest: bool) {
    std::fs::write(bundle.join(relative), contents).unwrap();
    if fix_manifest {
        use sha2::Digest as _;
        let path = bundle.join("manifest.json");
        let mut manifest: Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        manifest["files"][relative] =
            Value::String(hex::encode(sha2::Sha256::digest(contents.as_bytes())));
        std::fs::write(&path, serde_json::to_string_pretty(&manifest).unwrap()).unwrap();
    }
}

/// The id of the `n`th contest in a bundle's results.json.
fn bundle_contest(bundle: &Path, n: usize) -> String {
    let result: Value =
        serde_json::from_str(&std::fs::read_to_string(bundle.join("results.json")).unwrap())
            .unwrap();
    result["contests"][n]["contest"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// A copy of `bundle` named `name` whose results.json `edit` changed (the manifest's hash made
/// to match), verified: its one finding, which is about the results.
fn verify_changed_results(
    work: &Path,
    bundle: &Path,
    name: &str,
    edit: impl FnOnce(&mut Value),
) -> Value {
    let changed = work.join(name);
    copy_dir(bundle, &changed);
    let mut result: Value =
        serde_json::from_str(&std::fs::read_to_string(bundle.join("results.json")).unwrap())
            .unwrap();
    edit(&mut result);
    rewrite(
        &changed,
        "results.json",
        &serde_json::to_string(&result).unwrap(),
        true,
    );
    let (code, report) = verify(work, &changed);
    assert_eq!(code, 3, "{name}: {report:#}");
    let found = findings(&report);
    assert_eq!(found.len(), 1, "{name}: {report:#}");
    assert_eq!(found[0]["kind"], "result", "{name}: {report:#}");
    found[0].clone()
}

// Goal: a bundle exported from a real cluster after ingest verifies, its head is the one the
// cluster's results carry; and each kind of tampering (a changed sheet byte, a dropped record,
// a changed claimed result) is found, named by record or contest, with exit 3.
// Method: three replica processes, `tally submit` of every generated sheet, `tally export`,
// `tally verify`; then three tampered copies of the bundle, each verified.
#[test]
fn export_verify_and_tampering() {
    let root = tally_tests::tempdir();
    let work = root.path();
    let mut county = tally_tests::lay_out_county(&work.join("net"), &params(), Default::default());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime
        .block_on(county.start_county())
        .expect("the cluster elects a leader");
    let servers = tally_tests::servers(&county);
    let pki = county.layout.pki.to_str().unwrap().to_owned();
    let definition = county.layout.county.join("election.toml");
    let definition = definition.to_str().unwrap();
    let sheets = county.layout.county.join("sheets.sheets");

    let (code, out, err) = tally_tests::submit(&county, work, &sheets);
    assert!(code == 0 || code == 3, "submit: {code}\n{out}\n{err}");

    let bundle = work.join("bundle");
    let (code, out, err) = output(
        work,
        &[
            "export",
            "--servers",
            &servers,
            "--pki",
            &pki,
            "-d",
            definition,
            "--out",
            bundle.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "export: {out}\n{err}");
    let claimed = runtime
        .block_on(county.county_results())
        .expect("the cluster serves its results");
    county.fleet.stop_all();

    // The bundle as exported checks, and is the cluster's evidence.
    let (code, report) = verify(work, &bundle);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["ok"], true);
    let records = report["records"].as_u64().unwrap();
    assert!(records > 100, "{report:#}");
    assert_eq!(report["chain_length"].as_u64(), Some(claimed.chain_length));
    assert_eq!(
        report["chain_head"].as_str(),
        Some(hex::encode(&claimed.chain_head).as_str())
    );
    let (code, table, _) = output(work, &["verify", bundle.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(table.contains("OK:"), "{table}");
    // Unanchored, it says so in its first and last line.
    let text_lines: Vec<&str> = table.lines().collect();
    for line in [text_lines[0], text_lines[text_lines.len() - 1]] {
        assert!(line.starts_with("UNANCHORED: "), "{table}");
    }
    assert_eq!(report["anchored"], false);

    // Anchored to what the committee announces (the founding digest `tally export` printed
    // and the county's head): it checks, and says what matched.
    let digest = report["definition_digest"].as_str().unwrap().to_owned();
    assert!(
        out.contains(&format!("founding definition {digest}")),
        "{out}"
    );
    let head = hex::encode(&claimed.chain_head);
    let (code, anchored, err) = output(
        work,
        &[
            "verify",
            bundle.to_str().unwrap(),
            "--definition-digest",
            &digest,
            "--head",
            &head,
        ],
    );
    assert_eq!(code, 0, "{anchored}{err}");
    assert!(!anchored.contains("UNANCHORED"), "{anchored}");
    assert!(
        anchored.contains("anchored: the founding definition is the announced one"),
        "{anchored}"
    );
    assert!(
        anchored.contains(&format!(
            "anchored: the announced chain head {head} is the head after record"
        )),
        "{anchored}"
    );
    // The same from a published file.
    let published = work.join("published.json");
    std::fs::write(
        &published,
        serde_json::json!({ "definition_digest": digest, "chain_head": head }).to_string(),
    )
    .unwrap();
    let (code, _, err) = output(
        work,
        &[
            "verify",
            bundle.to_str().unwrap(),
            "--published",
            published.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{err}");
    // Announced for another definition and another chain, the same bundle does not check:
    // a bundle made whole from another definition checks by itself, never against anchors.
    let other = "ab".repeat(32);
    let (code, refused, _) = output(
        work,
        &[
            "verify",
            bundle.to_str().unwrap(),
            "--definition-digest",
            &other,
            "--head",
            &other,
            "--format",
            "json",
        ],
    );
    assert_eq!(code, 3, "{refused}");
    let refused: Value = serde_json::from_str(&refused).unwrap();
    let kinds: Vec<String> = findings(&refused)
        .iter()
        .map(|f| f["kind"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(kinds, ["anchor", "anchor"], "{refused:#}");
    let (code, _, err) = output(
        work,
        &["verify", bundle.to_str().unwrap(), "--head", "not-hex"],
    );
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("--head \"not-hex\" is not 64 hex digits"),
        "{err}"
    );

    let chain = std::fs::read_to_string(bundle.join("chain.jsonl")).unwrap();
    let lines: Vec<&str> = chain.lines().collect();
    let middle = lines.len() / 2;
    let line: Value = serde_json::from_str(lines[middle]).unwrap();

    // 1. One byte of one sheet changed: its link and its signature fail, by record.
    let changed = work.join("changed-sheet");
    copy_dir(&bundle, &changed);
    let mut edited: Value = line.clone();
    let sheet = edited["sheet"].as_str().unwrap().to_owned();
    // The last byte of the sheet (a field of the count-closed time or a name), flipped.
    let last = u8::from_str_radix(&sheet[sheet.len() - 2..], 16).unwrap() ^ 1;
    edited["sheet"] = Value::String(format!("{}{last:02x}", &sheet[..sheet.len() - 2]));
    let mut tampered: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    tampered[middle] = serde_json::to_string(&edited).unwrap();
    rewrite(
        &changed,
        "chain.jsonl",
        &(tampered.join("\n") + "\n"),
        false,
    );
    let (code, report) = verify(work, &changed);
    assert_eq!(code, 3, "{report:#}");
    let found = findings(&report);
    let at_record = |kind: &str, record: usize| {
        found
            .iter()
            .any(|f| f["kind"] == kind && f["record"].as_u64() == Some(record as u64))
    };
    assert!(found.iter().any(|f| f["kind"] == "file"), "{report:#}");
    assert!(at_record("chain", middle), "{report:#}");
    assert!(
        found.iter().any(|f| f["kind"] == "signature"
            && f["record"].as_u64() == Some(middle as u64)
            && f["code"] == "E204"),
        "{report:#}"
    );

    // 1b. Two batches' countersignatures swapped, and the chain and manifest made to match
    // (as a forger would, with the verifier's own link function): every link checks, but
    // neither countersignature is over its batch (E208).
    let swapped = work.join("swapped-countersignature");
    copy_dir(&bundle, &swapped);
    let mut parsed: Vec<tally_evidence::RecordLine> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let with_batch: Vec<usize> = (0..parsed.len())
        .filter(|&i| parsed[i].batch.is_some())
        .collect();
    assert!(with_batch.len() >= 2, "the chain keeps its batches");
    let (a, b) = (with_batch[0], with_batch[1]);
    let signature_a = parsed[a].batch.as_ref().unwrap().signature.clone();
    let signature_b = parsed[b].batch.as_ref().unwrap().signature.clone();
    parsed[a].batch.as_mut().unwrap().signature = signature_b;
    parsed[b].batch.as_mut().unwrap().signature = signature_a;
    let mut head = tally_proto::county::CHAIN_HEAD_EMPTY;
    for line in &mut parsed {
        head = tally_evidence::record_link(line, &head).unwrap();
        line.head = hex::encode(head);
    }
    let text: Vec<String> = parsed
        .iter()
        .map(|l| serde_json::to_string(l).unwrap())
        .collect();
    rewrite(&swapped, "chain.jsonl", &(text.join("\n") + "\n"), true);
    let mut manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(swapped.join("manifest.json")).unwrap())
            .unwrap();
    manifest["chain_head"] = Value::String(hex::encode(head));
    std::fs::write(
        swapped.join("manifest.json"),
        serde_json::to_string_pretty(&manifest).unwrap(),
    )
    .unwrap();
    let (code, report) = verify(work, &swapped);
    assert_eq!(code, 3, "{report:#}");
    let found = findings(&report);
    assert!(
        !found
            .iter()
            .any(|f| f["kind"] == "chain" || f["kind"] == "file"),
        "the forger made the links and hashes check: {report:#}"
    );
    for record in [a, b] {
        assert!(
            found.iter().any(|f| f["kind"] == "countersignature"
                && f["record"].as_u64() == Some(record as u64)
                && f["code"] == "E208"),
            "record {record}: {report:#}"
        );
    }

    // 2. A record dropped (and the manifest's hash made to match): the chain breaks at the
    // record after the gap.
    let dropped = work.join("dropped-record");
    copy_dir(&bundle, &dropped);
    let mut kept: Vec<&str> = lines.clone();
    kept.remove(middle);
    rewrite(&dropped, "chain.jsonl", &(kept.join("\n") + "\n"), true);
    let (code, report) = verify(work, &dropped);
    assert_eq!(code, 3, "{report:#}");
    let found = findings(&report);
    assert!(
        found.iter().any(|f| f["kind"] == "chain"
            && f["record"].as_u64() == Some(middle as u64 + 1)
            && f["message"].as_str().unwrap().contains("missing")),
        "{report:#}"
    );
    assert!(!found.iter().any(|f| f["kind"] == "file"), "{report:#}");

    // 3. A claimed result changed (and the manifest's hash made to match): verify names the
    // contest.
    let contest = bundle_contest(&bundle, 1);
    let found = verify_changed_results(work, &bundle, "changed-result", |result| {
        let votes = &mut result["contests"][1]["rounds"][0]["votes"][0]["votes"];
        *votes = Value::from(votes.as_u64().unwrap() + 1);
    });
    assert_eq!(found["contest"].as_str(), Some(contest.as_str()));
    assert!(
        found["message"]
            .as_str()
            .unwrap()
            .contains("rounds[0].votes[0].votes"),
        "{found:#}"
    );

    // 4. A second, altered copy of a contest put before the true one: claimed contests were
    // once collected into a map by id, where the true copy hid the altered one. The repeated
    // id is a finding of its own.
    let found = verify_changed_results(work, &bundle, "repeated-contest", |result| {
        let mut altered = result["contests"][1].clone();
        let votes = &mut altered["rounds"][0]["votes"][0]["votes"];
        *votes = Value::from(votes.as_u64().unwrap() + 1000);
        result["contests"]
            .as_array_mut()
            .unwrap()
            .insert(1, altered);
    });
    assert_eq!(found["contest"].as_str(), Some(contest.as_str()));
    assert!(
        found["message"]
            .as_str()
            .unwrap()
            .contains("more than once"),
        "{found:#}"
    );
}

/// Relinks every line of a `chain.jsonl` with the verifier's own link function (as a forger
/// would), renumbers the positions, and writes it into `bundle` with the manifest's hash,
/// length and head made to match.
fn relink(bundle: &Path, lines: &mut [tally_evidence::RecordLine]) {
    let mut head = tally_proto::county::CHAIN_HEAD_EMPTY;
    for (position, line) in lines.iter_mut().enumerate() {
        line.position = position as u64;
        head = tally_evidence::record_link(line, &head).unwrap();
        line.head = hex::encode(head);
    }
    let text: Vec<String> = lines
        .iter()
        .map(|l| serde_json::to_string(l).unwrap())
        .collect();
    rewrite(bundle, "chain.jsonl", &(text.join("\n") + "\n"), true);
    let path = bundle.join("manifest.json");
    let mut manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    manifest["chain_head"] = Value::String(hex::encode(head));
    manifest["chain_length"] = Value::from(lines.len() as u64);
    std::fs::write(&path, serde_json::to_string_pretty(&manifest).unwrap()).unwrap();
}

fn read_lines(bundle: &Path) -> Vec<tally_evidence::RecordLine> {
    std::fs::read_to_string(bundle.join("chain.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

// Goal: the evidence holds the committee's amendments with their signatures and `tally
// verify` replays them; a changed amendment, a removed one, and a bundle made consistently
// from another definition are each caught, the last only against the announced anchors
// (unanchored it verifies, and says it is unanchored).
// Method: a cluster takes the county's sheets and one amendment (a contest's registered
// voters corrected, signed by 3 of the 5 officials with `tally amend`); export and verify;
// then three forged copies, each relinked and its manifest fixed: the amendment's reason
// changed; the amendment's record removed; the founding definition replaced by one with a
// unit renamed (the definition files too, every link and hash made to match).
#[test]
fn amendments_in_the_evidence_and_a_bundle_forged_from_another_definition() {
    let root = tally_tests::tempdir();
    let work = root.path();
    let mut county = tally_tests::lay_out_county(&work.join("net"), &params(), Default::default());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime
        .block_on(county.start_county())
        .expect("the cluster elects a leader");
    let servers = tally_tests::servers(&county);
    let pki = county.layout.pki.to_str().unwrap().to_owned();
    let folder = county.layout.county.clone();
    let definition = folder.join("election.toml");
    let definition = definition.to_str().unwrap();
    let (code, out, err) = tally_tests::submit(&county, work, &folder.join("sheets.sheets"));
    assert!(code == 0 || code == 3, "submit: {code}\n{out}\n{err}");

    let loaded = tally_files::load_definition(&folder.join("election.toml")).unwrap();
    let contest = &loaded.contests[0];
    let voters = (contest.registered_voters + 11).to_string();
    let (code, out, err) = output(
        work,
        &[
            "amend",
            "registered-voters",
            "-d",
            definition,
            "--id",
            "A-7",
            "--reason",
            "选民名单更正",
            "--contest",
            contest.id.as_str(),
            "--voters",
            &voters,
            "--out",
            "A-7.json",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    for (id, key) in tally_tests::official_key_files(&folder, work)
        .iter()
        .skip(2)
    {
        let (code, out, err) = output(
            work,
            &[
                "amend",
                "sign",
                "A-7.json",
                "-d",
                definition,
                "--official",
                id,
                "--key",
                key.to_str().unwrap(),
            ],
        );
        assert_eq!(code, 0, "{out}{err}");
    }
    let (code, out, err) = output(
        work,
        &[
            "amend",
            "submit",
            "A-7.json",
            "-d",
            definition,
            "--servers",
            &servers,
            "--pki",
            &pki,
        ],
    );
    assert_eq!(code, 0, "{out}{err}");

    let bundle = work.join("bundle");
    let (code, out, err) = output(
        work,
        &[
            "export",
            "--servers",
            &servers,
            "--pki",
            &pki,
            "-d",
            definition,
            "--out",
            bundle.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "export: {out}\n{err}");
    let claimed = runtime
        .block_on(county.county_results())
        .expect("the cluster serves its results");
    county.fleet.stop_all();
    let (code, report) = verify(work, &bundle);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["amendments"][0]["id"], "A-7", "{report:#}");
    let digest = report["definition_digest"].as_str().unwrap().to_owned();
    let head = hex::encode(&claimed.chain_head);
    let lines = read_lines(&bundle);
    let act = lines
        .iter()
        .position(|l| l.act.is_some())
        .expect("the amendment is in the chain");

    // 1. The amendment's reason changed after the officials signed: every link checks (the
    // forger relinked), but no official's signature does.
    let changed = work.join("changed-amendment");
    copy_dir(&bundle, &changed);
    let mut forged = lines.clone();
    let body = &mut forged[act].act.as_mut().unwrap().body;
    *body = body.replace("选民名单更正", "选民名单更正（补）");
    relink(&changed, &mut forged);
    let (code, report) = verify(work, &changed);
    assert_eq!(code, 3, "{report:#}");
    let found = findings(&report);
    assert!(!found.iter().any(|f| f["kind"] == "chain"), "{report:#}");
    assert!(
        found.iter().any(|f| f["kind"] == "act"
            && f["record"].as_u64() == Some(act as u64)
            && f["message"].as_str().unwrap().contains("does not verify")),
        "{report:#}"
    );

    // 2. The amendment removed: the links check, the claimed results do not (they reflect
    // the amendment).
    let removed = work.join("removed-amendment");
    copy_dir(&bundle, &removed);
    let mut forged = lines.clone();
    forged.remove(act);
    relink(&removed, &mut forged);
    let (code, report) = verify(work, &removed);
    assert_eq!(code, 3, "{report:#}");
    let found = findings(&report);
    assert!(!found.iter().any(|f| f["kind"] == "chain"), "{report:#}");
    assert!(found.iter().any(|f| f["kind"] == "result"), "{report:#}");

    // 3. Made consistently from another definition (a unit renamed, which no result shows):
    // the founding record, the definition files, every link and every hash agree, so by
    // itself it verifies; against the announced digest and head it does not.
    let other = work.join("other-definition");
    copy_dir(&bundle, &other);
    let units = std::fs::read_to_string(other.join("definition/units.csv")).unwrap();
    let mut rows: Vec<String> = units.lines().map(str::to_owned).collect();
    let mut cells: Vec<String> = rows[1].split(',').map(str::to_owned).collect();
    cells[1] = format!("{}（改）", cells[1]);
    rows[1] = cells.join(",");
    rewrite(
        &other,
        "definition/units.csv",
        &(rows.join("\n") + "\n"),
        true,
    );
    let forged_definition = tally_files::load_definition(&other.join("definition/election.toml"))
        .expect("the forged definition loads");
    let mut forged = lines.clone();
    forged[0].founding =
        Some(String::from_utf8(tally_core::canonical::encode(&forged_definition)).unwrap());
    relink(&other, &mut forged);
    let (code, report) = verify(work, &other);
    assert_eq!(
        code, 0,
        "made consistently, it verifies by itself: {report:#}"
    );
    assert_eq!(report["anchored"], false);
    assert_ne!(report["definition_digest"].as_str(), Some(digest.as_str()));
    let (code, anchored, _) = output(
        work,
        &[
            "verify",
            other.to_str().unwrap(),
            "--definition-digest",
            &digest,
            "--head",
            &head,
            "--format",
            "json",
        ],
    );
    assert_eq!(code, 3, "{anchored}");
    let anchored: Value = serde_json::from_str(&anchored).unwrap();
    let kinds: Vec<String> = findings(&anchored)
        .iter()
        .map(|f| f["kind"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(kinds, ["anchor", "anchor"], "{anchored:#}");
}

// Goal: the committee's decisions and confirmations are in the evidence and `tally verify`
// replays them: the bundle verifies as exported, and a decision altered after signing, a
// decision removed, or a confirmation removed is each caught.
// Method: a cluster takes the county's sheets; the committee rules a written-in name of a
// decided contest invalid (`tally committee write-ins`), then confirms the contest, each
// signed by 3 of the 5 officials; export and verify; then three forged copies, each relinked
// and its manifest fixed: the decision's reason changed; the decision's record removed (the
// confirmation no longer matches the result it signed); the confirmation's record removed
// (the claimed results say confirmed).
#[test]
fn decisions_and_confirmations_in_the_evidence() {
    let root = tally_tests::tempdir();
    let work = root.path();
    let mut county = tally_tests::lay_out_county(&work.join("net"), &params(), Default::default());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime
        .block_on(county.start_county())
        .expect("the cluster elects a leader");
    let servers = tally_tests::servers(&county);
    let pki = county.layout.pki.to_str().unwrap().to_owned();
    let folder = county.layout.county.clone();
    let definition = folder.join("election.toml");
    let definition = definition.to_str().unwrap();
    let (code, out, err) = tally_tests::submit(&county, work, &folder.join("sheets.sheets"));
    assert!(code == 0 || code == 3, "submit: {code}\n{out}\n{err}");

    let cluster = |args: &[&str]| {
        output(
            work,
            &[args, &["--servers", &servers, "--pki", &pki]].concat(),
        )
    };
    let (_, results, _) = cluster(&["cluster", "results", "--format", "json"]);
    let results: Value = serde_json::from_str(&results).unwrap();
    let (contest, name) = results["contests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["status"] == "Decided" && c["rounds"].as_array().unwrap().len() == 1)
        .find_map(|c| {
            let name = c["rounds"][0]["votes"]
                .as_array()
                .unwrap()
                .iter()
                .find_map(|v| v["person"]["WriteIn"].as_str())?;
            Some((c["contest"].as_str()?.to_owned(), name.to_owned()))
        })
        .expect("a decided contest with a written-in name");
    let keys = tally_tests::official_key_files(&folder, work);
    let prepare_sign_submit = |prepare: &[&str], file: &str| {
        let (code, out, err) = output(work, prepare);
        assert_eq!(code, 0, "{out}{err}");
        tally_tests::sign_and_submit_act(work, file, definition, &keys, &servers, &pki);
    };
    prepare_sign_submit(
        &[
            "committee",
            "write-ins",
            "-d",
            definition,
            "--id",
            "D-1",
            "--contest",
            &contest,
            "--invalid",
            &name,
            "--reason",
            "所写姓名无法辨认",
            "--out",
            "D-1.json",
        ],
        "D-1.json",
    );
    let confirm = [
        &[
            "committee",
            "confirm",
            "-d",
            definition,
            "--id",
            "K-1",
            "--contest",
            &contest,
        ][..],
        &["--out", "K-1.json", "--servers", &servers, "--pki", &pki],
    ]
    .concat();
    prepare_sign_submit(&confirm, "K-1.json");

    let bundle = work.join("bundle");
    let (code, out, err) = cluster(&[
        "export",
        "-d",
        definition,
        "--out",
        bundle.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "export: {out}\n{err}");
    county.fleet.stop_all();
    let (code, report) = verify(work, &bundle);
    assert_eq!(code, 0, "{report:#}");
    let lines = read_lines(&bundle);
    let acts: Vec<usize> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.act.is_some())
        .map(|(i, _)| i)
        .collect();
    assert_eq!(acts.len(), 2, "the decision and the confirmation");
    let (decision, confirmation) = (acts[0], acts[1]);

    // 1. The decision's reason changed after the officials signed.
    let changed = work.join("changed-decision");
    copy_dir(&bundle, &changed);
    let mut forged = lines.clone();
    let body = &mut forged[decision].act.as_mut().unwrap().body;
    *body = body.replace("所写姓名无法辨认", "所写姓名无效");
    relink(&changed, &mut forged);
    let (code, report) = verify(work, &changed);
    assert_eq!(code, 3, "{report:#}");
    let found = findings(&report);
    assert!(!found.iter().any(|f| f["kind"] == "chain"), "{report:#}");
    assert!(
        found.iter().any(|f| f["kind"] == "act"
            && f["record"].as_u64() == Some(decision as u64)
            && f["message"].as_str().unwrap().contains("does not verify")),
        "{report:#}"
    );

    // 2. The decision removed: the confirmation no longer applies to the record, and the
    // claimed results are not the record's.
    let removed = work.join("removed-decision");
    copy_dir(&bundle, &removed);
    let mut forged = lines.clone();
    forged.remove(decision);
    relink(&removed, &mut forged);
    let (code, report) = verify(work, &removed);
    assert_eq!(code, 3, "{report:#}");
    let found = findings(&report);
    assert!(
        found
            .iter()
            .any(|f| f["kind"] == "act" && f["message"].as_str().unwrap().contains("E408")),
        "{report:#}"
    );
    assert!(found.iter().any(|f| f["kind"] == "result"), "{report:#}");

    // 3. The confirmation removed: the claimed results say the contest is confirmed.
    let unconfirmed = work.join("removed-confirmation");
    copy_dir(&bundle, &unconfirmed);
    let mut forged = lines.clone();
    forged.remove(confirmation);
    relink(&unconfirmed, &mut forged);
    let (code, report) = verify(work, &unconfirmed);
    assert_eq!(code, 3, "{report:#}");
    let found = findings(&report);
    assert!(found.iter().any(|f| f["kind"] == "result"), "{report:#}");
}
