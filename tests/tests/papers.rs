//! The official papers (`tally committee papers`), printed from verified evidence and looked
//! at in a real browser: Debian's headless Chromium prints each to PDF, and reads each as a
//! page's text.

use serde_json::Value;
use std::path::Path;
use std::process::Command;
use tally_synth::GenParams;
use tally_tests::output;

const CHROMIUM: &str = "/usr/bin/chromium";

/// `chromium --headless` on a local file: with `--dump-dom` the page as rendered, with
/// `--print-to-pdf=FILE` the printed pages.
fn chromium(extra: &str, file: &Path) -> String {
    let out = Command::new(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-pdf-header-footer",
            extra,
        ])
        .arg(format!("file://{}", file.display()))
        .output()
        .expect("chromium runs");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Pages in a PDF Chromium printed: its page objects.
fn pdf_pages(pdf: &[u8]) -> usize {
    let text = String::from_utf8_lossy(pdf);
    text.matches("/Type /Page").count() - text.matches("/Type /Pages").count()
}

// Goal: the papers say what the record proves. From an exported bundle the county's
// confirmed contests get the list of elected deputies, in surname-stroke order, and one
// certificate page each; the contests not confirmed appear only on a draft marked 未确认 /
// DRAFT; every constituency gets its 选举结果报告单 with its figures, the committee's decisions
// and its scrutineers; every page names the log index and chain head; and a bundle that does
// not verify prints nothing.
// Method: a cluster takes a generated county's sheets; the committee confirms every
// county-level contest that is ready (`tally committee confirm --contest ...`); export;
// `tally committee papers`; Chromium prints each paper to PDF (page counts) and renders it
// (text).
#[test]
fn papers_from_the_evidence_in_chromium() {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: scripts/test installs Debian's chromium"
    );
    let root = tally_tests::tempdir();
    let work = root.path();
    let params = GenParams {
        seed: 5,
        county_name: "纸县".into(),
        townships: 2,
        population: 90_000,
        voters_per_station: 1_500,
        scenarios: false,
    };
    let mut county = tally_tests::lay_out_county(&work.join("net"), &params, Default::default());
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

    let keys = tally_tests::official_key_files(&folder, work);
    let sign_and_submit = |file: &str| {
        tally_tests::sign_and_submit_act(work, file, definition, &keys, &servers, &pki);
    };

    // A recount of one county-level unit's round: ordered, then typed by two clerks.
    let loaded = tally_files::load_definition(&folder.join("election.toml")).unwrap();
    let signed = tally_files::read_bundles(&[folder.join("sheets.sheets")]).unwrap();
    let recounted = signed[0]
        .1
        .iter()
        .map(|s| tally_proto::decode_sheet(&s.sheet).unwrap())
        .find(|s| {
            loaded.contest(&s.contest).unwrap().level == tally_core::congress::Level::County
                && s.candidates.len() >= 2
                && s.candidates[0].approvals > 0
        })
        .expect("a county-level sheet");
    let (contest, unit) = (recounted.contest.to_string(), recounted.unit.to_string());
    let (code, out, err) = output(
        work,
        &[
            "committee",
            "order-recount",
            "-d",
            definition,
            "--id",
            "D-1",
            "--contest",
            &contest,
            "--unit",
            &unit,
            "--reason",
            "选票数存疑，重新清点",
            "--out",
            "D-1.json",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    sign_and_submit("D-1.json");
    let mut answers: Vec<String> = [
        recounted.registered_voters,
        recounted.ballots_issued,
        recounted.ballots_collected,
        recounted.ballots_void,
        recounted.ballots_valid,
        recounted.ballots_blank,
        recounted.proxies,
    ]
    .iter()
    .map(u64::to_string)
    .collect();
    let before = recounted.candidates[0].approvals;
    for (i, c) in recounted.candidates.iter().enumerate() {
        // One ballot found to be the second candidate's, not the first's.
        let approvals = match i {
            0 => c.approvals - 1,
            1 => c.approvals + 1,
            _ => c.approvals,
        };
        answers.push(approvals.to_string());
    }
    answers.extend([
        "0".to_owned(),
        recounted.scrutineers.join("、"),
        recounted.counters.join("、"),
        "2026-11-29 10:00".to_owned(),
    ]);
    let typed = [answers.clone(), answers].concat().join("\n") + "\n";
    let mut recount = Command::new(tally_tests::tally_binary());
    recount.current_dir(work).args([
        "committee",
        "recount",
        "-d",
        definition,
        "--id",
        "D-2",
        "--contest",
        &contest,
        "--unit",
        &unit,
        "--reason",
        "重新清点后以更正数为准",
        "--out",
        "D-2.json",
    ]);
    let run = tally_tests::Run::with_input(&mut recount, &typed);
    assert_eq!(run.code, 0, "{}", run.dump());
    sign_and_submit("D-2.json");

    // Confirm the county level's ready contests.
    let (_, pending, _) = cluster(&["committee", "pending", "--format", "json"]);
    let pending: Value = serde_json::from_str(&pending).unwrap();
    let county_level: Vec<String> = pending["matters"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["kind"] == "ready")
        .map(|m| m["contest"].as_str().unwrap().to_owned())
        .filter(|c| {
            loaded.contest(&c.as_str().into()).unwrap().level == tally_core::congress::Level::County
        })
        .collect();
    assert!(county_level.len() >= 2, "{pending:#}");
    assert!(
        county_level.contains(&contest),
        "the recounted contest is ready: {pending:#}"
    );
    let mut confirm = vec![
        "committee",
        "confirm",
        "-d",
        definition,
        "--id",
        "K-1",
        "--out",
        "K-1.json",
    ];
    for c in &county_level {
        confirm.extend(["--contest", c.as_str()]);
    }
    let (code, out, err) = cluster(&confirm);
    assert_eq!(code, 0, "{out}{err}");
    sign_and_submit("K-1.json");

    let bundle = work.join("bundle");
    let (code, out, err) = cluster(&[
        "export",
        "-d",
        definition,
        "--out",
        bundle.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let claimed: Value =
        serde_json::from_str(&std::fs::read_to_string(bundle.join("results.json")).unwrap())
            .unwrap();
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(bundle.join("manifest.json")).unwrap())
            .unwrap();
    county.fleet.stop_all();
    let head = manifest["chain_head"].as_str().unwrap().to_owned();

    let papers = work.join("papers");
    let (code, out, err) = output(
        work,
        &[
            "committee",
            "papers",
            bundle.to_str().unwrap(),
            "--out",
            papers.to_str().unwrap(),
        ],
    );
    // Exit 3: the township contests are not confirmed, so their lists are drafts.
    assert_eq!(code, 3, "{out}{err}");

    // The county's list: the deputies of the confirmed contests, in surname-stroke order.
    let contests = claimed["contests"].as_array().unwrap();
    let mut deputies: Vec<String> = contests
        .iter()
        .filter(|c| county_level.contains(&c["contest"].as_str().unwrap().to_owned()))
        .flat_map(|c| c["elected"].as_array().unwrap().iter())
        .map(|e| e["name"].as_str().unwrap().to_owned())
        .collect();
    deputies.sort_by(|a, b| tally_core::strokes::surname_order(a, b));
    let list = chromium("--dump-dom", &papers.join("elected-county.html"));
    let mut at = 0;
    for name in &deputies {
        let found = list[at..]
            .find(&format!("<td>{name}</td>"))
            .unwrap_or_else(|| {
                panic!("{name} missing, or out of surname-stroke order, in:\n{list}")
            });
        at += found + 1;
    }
    assert!(
        list.contains(&format!("（{} 名，按姓氏笔画为序）", deputies.len())),
        "{list}"
    );
    assert!(
        list.contains(&head),
        "every page names the chain head: {list}"
    );
    assert!(list.contains("演练"), "a rehearsal says so: {list}");
    assert!(!list.contains("未确认 / DRAFT"), "{list}");

    // One certificate page per deputy.
    let pdf = work.join("certificates.pdf");
    chromium(
        &format!("--print-to-pdf={}", pdf.display()),
        &papers.join("certificates-county.html"),
    );
    let bytes = std::fs::read(&pdf).unwrap();
    assert!(bytes.starts_with(b"%PDF"));
    assert_eq!(pdf_pages(&bytes), deputies.len());

    // A township's contests are not confirmed: only a draft, marked on every page.
    let township = loaded.townships[0].id.to_string();
    let official = chromium(
        "--dump-dom",
        &papers.join(format!("elected-{township}.html")),
    );
    assert!(official.contains("（0 名，按姓氏笔画为序）"), "{official}");
    let draft = chromium(
        "--dump-dom",
        &papers.join(format!("elected-{township}-draft.html")),
    );
    assert!(
        draft.contains("未确认 / DRAFT") && draft.contains("class=\"mark\">演练 · 未确认"),
        "{draft}"
    );

    // Every constituency's report: its figures, and the scrutineers its units named.
    let reports = chromium("--dump-dom", &papers.join("reports-county.html"));
    for c in contests.iter().filter(|c| c["level"] == "county") {
        assert!(
            reports.contains(c["name"].as_str().unwrap()),
            "{}",
            c["name"]
        );
        let issued = c["rounds"][0]["totals"]["ballots_issued"].as_u64().unwrap();
        assert!(
            reports.contains(&format!(">{issued}<")),
            "{} issued {issued}",
            c["name"]
        );
    }
    let sheets = tally_files::read_bundles(&[folder.join("sheets.sheets")]).unwrap();
    let first = tally_proto::decode_sheet(&sheets[0].1[0].sheet).unwrap();
    assert!(
        reports.contains(&first.scrutineers.join("、")) || {
            let t = chromium(
                "--dump-dom",
                &papers.join(format!(
                    "reports-{}.html",
                    loaded.contest(&first.contest).unwrap().township
                )),
            );
            t.contains(&first.scrutineers.join("、"))
        }
    );
    assert!(reports.contains("确认选举结果有效（K-1"), "{reports}");
    let pdf = work.join("reports.pdf");
    chromium(
        &format!("--print-to-pdf={}", pdf.display()),
        &papers.join("reports-county.html"),
    );
    let county_contests = contests.iter().filter(|c| c["level"] == "county").count();
    assert!(pdf_pages(&std::fs::read(&pdf).unwrap()) >= county_contests);

    // The corrigendum of the recount: the original and the corrected figures side by side.
    let corrigenda = chromium("--dump-dom", &papers.join("corrigenda-county.html"));
    assert!(
        corrigenda.contains("计票更正单") && corrigenda.contains(&unit),
        "{corrigenda}"
    );
    assert!(
        corrigenda.contains(&format!(
            "<td class=\"n\">{before}</td><td class=\"n\">{}</td><td>更正</td>",
            before - 1
        )),
        "{corrigenda}"
    );
    assert!(
        corrigenda.contains("重新清点后以更正数为准"),
        "{corrigenda}"
    );

    // Evidence that does not verify prints nothing: here results.json no longer has the
    // SHA-256 the manifest gives.
    let results = bundle.join("results.json");
    let text = std::fs::read_to_string(&results).unwrap();
    std::fs::write(&results, format!("{text}\n")).unwrap();
    let refused = work.join("refused");
    let (code, out, err) = output(
        work,
        &[
            "committee",
            "papers",
            bundle.to_str().unwrap(),
            "--out",
            refused.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("does not verify"), "{err}");
    assert!(!refused.exists());
}
