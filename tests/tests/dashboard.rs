//! The county replicas' HTTP side end to end: Prometheus `/metrics` and the dashboard, on a
//! real cluster (three `tally county` processes with `http_listen`), rendered by a real
//! headless browser (Debian's `chromium`; CI installs it, with a CJK font).
//!
//! The screenshot is kept as a test artifact: `<target dir>/test-artifacts/dashboard.png`
//! (the path is printed).

use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use tally_synth::GenParams;
use tally_tests::localnet::Options;
use tally_tests::{Response, http_get, metric, poll};

/// Three townships; the last one's sheets are held back, so it is a silent township.
fn params() -> GenParams {
    GenParams {
        seed: 5,
        county_name: "青山县".into(),
        townships: 3,
        population: 150_000,
        voters_per_station: 1_200,
        scenarios: true,
    }
}

const CHROMIUM: &str = "/usr/bin/chromium";
const METRICS_POLL: Duration = Duration::from_millis(100);

/// 1234567 as the dashboard prints it (zh-CN grouping: 1,234,567).
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

// Goal: every replica serves Prometheus metrics whose counts agree with what was ingested, and
// its dashboard, rendered by a real browser, shows the results (Chinese contest and elected
// names, reporting progress and turnout), replication health and the alerts.
// Method: three replica processes with http_listen; `tally submit` of every sheet except the
// last township's; scrape /metrics on each replica and compare with submit's report; read
// plus one sheet with a broken signature and one conflicting sheet; read /api/dashboard on a
// follower and the leader; run headless chromium (--dump-dom and --screenshot) on the leader's
// page.
#[test]
fn metrics_and_dashboard_in_a_browser() {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: this test renders the dashboard in Debian's chromium; install it \
         with `apt-get install -y chromium fonts-noto-cjk` (.ci/run does)"
    );
    let root = tally_tests::tempdir();
    let work = root.path();
    let mut county =
        tally_tests::lay_out_county(&work.join("net"), &params(), Options { http: true });
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let leader = runtime
        .block_on(county.start_county())
        .expect("the cluster elects a leader");

    // Every sheet but those of the last township's units (and every sheet that does not
    // verify, so the bad signatures are counted).
    let silent = county.generated.townships.last().unwrap().id.clone();
    let verified = tally_proto::verify_batch(&county.definition, &county.sheets);
    let subset: Vec<_> = county
        .sheets
        .iter()
        .zip(&verified)
        .filter(|(_, v)| match v {
            Ok(v) => county.definition.unit(&v.unit).unwrap().township.as_str() != silent,
            Err(_) => true,
        })
        .map(|(s, _)| s.clone())
        .collect();
    assert!(subset.len() < county.sheets.len());
    // Two bad sheets for the alerts: one whose signature does not verify (E204), and one
    // that conflicts (the same unit, contest, round and version as an accepted sheet, with
    // another scrutineer's name, signed by the unit).
    let mut good = subset
        .iter()
        .zip(tally_proto::verify_batch(&county.definition, &subset));
    let (forged_from, _) = good.find(|(_, v)| v.is_ok()).unwrap();
    let mut forged = forged_from.clone();
    let mut signature = forged.signature.to_bytes();
    signature[0] ^= 1;
    forged.signature = ed25519_dalek::Signature::from_bytes(&signature);
    let (_, original) = good.find(|(_, v)| v.is_ok()).unwrap();
    let mut changed = original.unwrap().sheet;
    changed.scrutineers.push("王五".to_owned());
    let key = &county
        .generated
        .units
        .iter()
        .find(|u| u.id == changed.unit)
        .unwrap()
        .key;
    let conflicting = tally_proto::envelope::sign(&changed, key, &county.generated.election());
    let mut subset = subset;
    subset.push(forged);
    subset.push(conflicting);
    let bundle = work.join("subset.sheets");
    std::fs::write(&bundle, tally_proto::write_bundle(&subset)).unwrap();

    let (code, out, err) = tally_tests::submit(&county, work, &bundle);
    assert!(code == 0 || code == 3, "submit: {code}\n{out}\n{err}");
    let report: Value = serde_json::from_str(&out).expect("submit prints JSON");
    let accepted = report["accepted"].as_u64().unwrap();
    assert!(accepted > 50, "{report:#}");
    let results = runtime
        .block_on(county.county_results())
        .expect("the cluster serves its results");

    // /metrics on every replica: wait until each applied the whole chain, then compare.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut scrapes = Vec::new();
    for (id, address) in &county.replica_http_addresses {
        let scrape = poll(
            deadline.saturating_duration_since(Instant::now()),
            METRICS_POLL,
            || {
                let Response { code, body, .. } =
                    http_get(address, "/metrics").expect("the replica serves HTTP");
                assert_eq!(code, 200, "{body}");
                if metric(&body, "tally_chain_length") == Some(results.chain_length as f64) {
                    Ok(body)
                } else {
                    Err(body)
                }
            },
        )
        .unwrap_or_else(|body| {
            panic!(
                "replica {id} did not reach chain length {}:\n{body}",
                results.chain_length
            )
        });
        // OpenMetrics names a counter's family without `_total` (its samples carry it).
        for family in [
            "# TYPE tally_raft_term gauge",
            "# TYPE tally_raft_role gauge",
            "# TYPE tally_raft_leader_changes counter",
            "# TYPE tally_raft_commit_index gauge",
            "# TYPE tally_raft_applied_index gauge",
            "# TYPE tally_raft_peer_lag_entries gauge",
            "# TYPE tally_raft_proposal_duration_seconds histogram",
            "# TYPE tally_storage_fsync_duration_seconds histogram",
            "# TYPE tally_sheets counter",
            "# TYPE tally_signature_failures counter",
            "# TYPE tally_chain_length gauge",
        ] {
            assert!(scrape.contains(family), "replica {id}: {family} missing");
        }
        assert!(metric(&scrape, "tally_raft_term").unwrap() >= 1.0);
        let is_leader = metric(&scrape, "tally_raft_is_leader").unwrap();
        assert_eq!(
            is_leader,
            f64::from(u8::from(*id == leader)),
            "replica {id}"
        );
        assert_eq!(
            metric(&scrape, "tally_raft_role{role=\"leader\"}"),
            Some(is_leader)
        );
        assert!(metric(&scrape, "tally_raft_leader_changes_total").unwrap() >= 1.0);
        assert!(metric(&scrape, "tally_storage_fsync_duration_seconds_count").unwrap() > 0.0);
        scrapes.push((*id, scrape));
    }
    // The leader answered every batch (followers forward), so its counts are the submit's.
    let (_, leader_scrape) = scrapes.iter().find(|(id, _)| *id == leader).unwrap();
    assert_eq!(
        metric(leader_scrape, "tally_sheets_total{outcome=\"accepted\"}"),
        Some(accepted as f64),
        "{leader_scrape}"
    );
    let conflicts = report["conflicts"].as_u64().unwrap();
    assert!(conflicts >= 1, "{report:#}");
    assert_eq!(
        metric(
            leader_scrape,
            "tally_sheets_total{outcome=\"refused\",code=\"E204\"}"
        ),
        Some(1.0),
        "{leader_scrape}"
    );
    assert_eq!(
        metric(
            leader_scrape,
            "tally_signature_failures_total{kind=\"sheet\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(leader_scrape, "tally_conflicts"),
        Some(conflicts as f64)
    );
    assert_eq!(
        metric(leader_scrape, "tally_sheets_total{outcome=\"conflict\"}").unwrap_or(0.0),
        conflicts as f64
    );
    assert!(metric(leader_scrape, "tally_raft_proposal_duration_seconds_count").unwrap() >= 1.0);
    let lags: Vec<&str> = leader_scrape
        .lines()
        .filter(|l| l.starts_with("tally_raft_peer_lag_entries{peer="))
        .collect();
    assert_eq!(lags.len(), 2, "{leader_scrape}");

    // The dashboard's JSON on a follower.
    let follower = *county
        .replica_http_addresses
        .keys()
        .find(|id| **id != leader)
        .unwrap();
    let http = county.replica_http_addresses[&follower].clone();
    let Response { code, body, .. } = http_get(&http, "/api/dashboard").unwrap();
    assert_eq!(code, 200, "{body}");
    let dashboard: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(dashboard["replica"]["id"], follower);
    assert_eq!(dashboard["replicas"].as_array().unwrap().len(), 3);
    assert!(
        dashboard["replicas"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["reachable"] == true),
        "{:#}",
        dashboard["replicas"]
    );
    // The committee's side: the conflict waits for it and blocks its contest's confirmation.
    let committee = &dashboard["committee"];
    assert!(
        committee["blocking"].as_u64().unwrap() >= 1,
        "{committee:#}"
    );
    assert!(
        committee["waiting"].as_u64() >= committee["blocking"].as_u64(),
        "{committee:#}"
    );
    assert_eq!(committee["confirmed"], 0, "{committee:#}");
    let alerts = dashboard["alerts"].to_string();
    let silent_name = &county.generated.townships.last().unwrap().name;
    assert!(alerts.contains(silent_name.as_str()), "{alerts}");
    let Response {
        code, body: page, ..
    } = http_get(&http, "/").unwrap();
    assert_eq!(code, 200);
    assert!(page.contains("<meta charset=\"utf-8\">"));
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "the page loads nothing from the network"
    );

    // The leader's JSON names the bad signatures and the conflicts too.
    let leader_http = county.replica_http_addresses[&leader].clone();
    let Response { body, .. } = http_get(&leader_http, "/api/dashboard").unwrap();
    let leader_dashboard: Value = serde_json::from_str(&body).unwrap();
    let leader_alerts = leader_dashboard["alerts"].to_string();
    // The election the cluster was founded with: a generated county is a rehearsal.
    let digest = leader_dashboard["definition_digest"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(digest.len(), 64, "{leader_dashboard:#}");
    assert_eq!(
        leader_dashboard["mode"], "rehearsal",
        "{leader_dashboard:#}"
    );
    assert!(leader_alerts.contains("签名验证失败"), "{leader_alerts}");
    assert!(leader_alerts.contains("冲突计票单"), "{leader_alerts}");
    assert!(
        alerts.contains("冲突计票单"),
        "a follower shows the conflicts too: {alerts}"
    );
    // And the bad signature the leader refused: each replica reports the refusals it
    // answered, and the page sums them, so any replica's page has the alert.
    assert!(
        alerts.contains("1 个签名验证失败"),
        "a follower shows the bad signature too: {alerts}"
    );

    // The leader's page in a real browser.
    let url = format!("http://{leader_http}/");
    let browse = |extra: &[&str]| {
        let output = Command::new(CHROMIUM)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--hide-scrollbars",
                "--window-size=1280,2000",
                "--virtual-time-budget=5000",
            ])
            .args(extra)
            .arg(&url)
            .output()
            .expect("chromium runs");
        assert!(
            output.status.success(),
            "chromium failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let dom = browse(&["--dump-dom"]);
    let county_summary = results.county.as_ref().unwrap();
    let mut expected: Vec<String> = vec![
        "青山县".to_owned(),
        "当选代表名单".to_owned(),
        silent_name.clone(),
        format!(
            "{} / {}",
            grouped(county_summary.units_reported),
            grouped(county_summary.units_expected)
        ),
        format!(
            "{}.{}%",
            county_summary.turnout_per_mille / 10,
            county_summary.turnout_per_mille % 10
        ),
        grouped(results.chain_length),
        "主副本 leader".to_owned(),
        "【演练 / REHEARSAL】".to_owned(),
        format!("定义 definition {}", &digest[..16]),
        "签名验证失败".to_owned(),
        "冲突计票单".to_owned(),
        "委员会确认 Confirmed".to_owned(),
    ];
    let mut elected = 0;
    for contest in &results.contests {
        expected.push(contest.name.clone());
        for e in &contest.elected {
            expected.push(e.name.clone());
            elected += 1;
        }
    }
    assert!(elected > 5, "some deputies are elected");
    let missing: Vec<&String> = expected
        .iter()
        .filter(|s| !dom.contains(s.as_str()))
        .collect();
    assert!(missing.is_empty(), "the page lacks {missing:?}:\n{dom}");

    let artifacts = tally_tests::tally_binary()
        .ancestors()
        .nth(2)
        .unwrap()
        .join("test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let screenshot = artifacts.join("dashboard.png");
    let _ = std::fs::remove_file(&screenshot);
    browse(&[&format!("--screenshot={}", screenshot.display())]);
    let png = std::fs::read(&screenshot).expect("chromium wrote the screenshot");
    assert!(png.starts_with(b"\x89PNG") && png.len() > 20_000);
    println!("dashboard screenshot: {}", screenshot.display());
    county.fleet.stop_all();
}
