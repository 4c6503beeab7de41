//! `tally publish`: the list of elected deputies as printable HTML per congress, and the CSV
//! and JSON exports, checked against `tally results --format json` over the same sheets.

use serde_json::Value;
use tally_tests::{output, publish, read, tempdir};

// Goal: every contest's elected deputies appear, with their votes, in the report of their own
// congress; vacancies and pending contests are stated; the CSV has its columns and one row
// per person per round; the JSON is the whole result; a results JSON file gives the same files.
// Method: a generated county with the planted cases (a vacancy, a further election, a tie);
// `tally results --format json` as the reference; `tally publish` from the sheets, then from
// that JSON, and the files compared.
#[test]
fn publish_writes_reports_and_exports() {
    let dir = tempdir();
    let work = dir.path();
    let (code, out, err) = output(
        work,
        &[
            "gen",
            "--out",
            "county",
            "--seed",
            "3",
            "--townships",
            "3",
            "--population",
            "90000",
        ],
    );
    assert_eq!(code, 0, "{out}\n{err}");
    let (_, out, err) = tally_tests::offline_results(work);
    let reference: Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("results JSON ({e}): {err}"));
    std::fs::write(work.join("results.json"), &out).unwrap();
    let result = &reference["result"];
    let contests = result["contests"].as_array().unwrap();

    let (code, out, err) = output(
        work,
        &[
            "publish",
            "-d",
            "county/election.toml",
            "-s",
            "county/sheets.sheets",
            "--out",
            "pub",
        ],
    );
    let pending = contests.iter().filter(|c| c["status"] != "Decided").count();
    assert_eq!(code, if pending > 0 { 3 } else { 0 }, "{out}\n{err}");
    assert!(out.contains("published"), "{out}");
    let published = work.join("pub");

    // One report per congress: the county's, and one per township with township contests.
    let county_name = result["county"]["name"].as_str().unwrap();
    let county_html = read(&published.join("elected-county.html"));
    assert!(county_html.contains("<meta charset=\"utf-8\">"));
    assert!(county_html.contains("Noto Serif CJK SC"));
    assert!(county_html.contains("size: A4"));
    assert!(
        county_html.contains(&format!("{county_name}人民代表大会代表当选名单")),
        "{county_html}"
    );
    assert!(county_html.contains("选举委员会（盖章）"));
    // A generated county is a rehearsal: a banner at the top, a watermark on every printed
    // page, and the title.
    assert_eq!(result["mode"], "rehearsal");
    for mark in [
        "<title>【演练 REHEARSAL】",
        "<div class=\"rehearsal-mark\">演练 REHEARSAL</div>",
        "<div class=\"rehearsal-banner\">演练 / REHEARSAL",
    ] {
        assert!(county_html.contains(mark), "{mark}: {county_html}");
    }
    assert!(county_html.contains(result["election"].as_str().unwrap()));
    let mut vacancies_seen = 0;
    for c in contests {
        let file = if c["level"] == "county" {
            "elected-county.html".to_owned()
        } else {
            format!("elected-{}.html", c["township"].as_str().unwrap())
        };
        let html = read(&published.join(&file));
        let name = c["name"].as_str().unwrap();
        assert!(html.contains(name), "{file} lacks contest {name}");
        for e in c["elected"].as_array().unwrap() {
            let row = format!(
                "<tr><td>{}</td><td class=\"votes\">{}</td>",
                e["name"].as_str().unwrap(),
                e["votes"]
            );
            assert!(html.contains(&row), "{file} lacks {row}");
        }
        if c["status"] == "Decided" && c["vacancies"].as_u64().unwrap() > 0 {
            vacancies_seen += 1;
            assert!(
                html.contains(&format!("缺额 {} 名", c["vacancies"])),
                "{file}: the vacancy of {name}"
            );
        }
        if c["status"] != "Decided" {
            assert!(html.contains("尚未最终确定"), "{file}: {name} is pending");
        }
    }
    assert!(
        vacancies_seen > 0 || pending > 0,
        "the planted cases give a vacancy or a pending contest"
    );

    // results.csv: its columns, one row per person per round per contest.
    let mut reader = csv::Reader::from_path(published.join("results.csv")).unwrap();
    let header: Vec<String> = reader
        .headers()
        .unwrap()
        .iter()
        .map(str::to_owned)
        .collect();
    assert_eq!(
        header,
        publish::RESULTS_CSV_COLUMNS
            .iter()
            .map(|s| (*s).to_owned())
            .collect::<Vec<_>>()
    );
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    let expected_rows: usize = contests
        .iter()
        .flat_map(|c| c["rounds"].as_array().unwrap())
        .map(|r| r["votes"].as_array().unwrap().len())
        .sum();
    assert_eq!(rows.len(), expected_rows);
    let elected_rows = rows.iter().filter(|r| &r[15] == "yes").count();
    let elected_total: usize = contests
        .iter()
        .map(|c| c["elected"].as_array().unwrap().len())
        .sum();
    assert_eq!(elected_rows, elected_total);
    // A person's votes as the result has them.
    let first = &contests[0];
    let top = &first["rounds"][0]["votes"][0];
    assert!(
        rows.iter()
            .any(|r| &r[0] == first["contest"].as_str().unwrap()
                && &r[6] == "1"
                && &r[13] == top["name"].as_str().unwrap()
                && r[14] == *top["votes"].to_string())
    );

    // contests.csv: one row per contest.
    let mut reader = csv::Reader::from_path(published.join("contests.csv")).unwrap();
    assert_eq!(
        reader.headers().unwrap().iter().collect::<Vec<_>>(),
        publish::CONTESTS_CSV_COLUMNS.to_vec()
    );
    assert_eq!(reader.records().count(), contests.len());

    // results.json: the whole result.
    let json: Value = serde_json::from_str(&read(&published.join("results.json"))).unwrap();
    assert_eq!(json["contests"], result["contests"]);

    // From the results JSON file: the same files.
    let (code, out, err) = output(
        work,
        &["publish", "--result", "results.json", "--out", "pub2"],
    );
    assert_eq!(code, if pending > 0 { 3 } else { 0 }, "{out}\n{err}");
    for file in [
        "elected-county.html",
        "results.csv",
        "contests.csv",
        "index.html",
    ] {
        assert_eq!(
            read(&published.join(file)),
            read(&work.join("pub2").join(file)),
            "{file}"
        );
    }

    // An existing folder is never overwritten.
    let (code, _, err) = output(
        work,
        &["publish", "--result", "results.json", "--out", "pub"],
    );
    assert_eq!(code, 1);
    assert!(err.contains("not empty"), "{err}");
}
