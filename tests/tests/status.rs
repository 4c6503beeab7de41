//! `tally status` against real processes: three `tally county` replicas and two `tally
//! township` aggregators of a synthetic county (crates/tally/src/localnet.rs).
//!
//! Every process the test starts is killed when the test ends (the fleet's drop).

use serde_json::Value;
use std::time::Duration;
use tally_synth::GenParams;
use tally_tests::localnet::LocalCounty;
use tally_tests::{Response, http_get, import, metric, output, poll};

/// A county of two townships without planted cases: every sheet is clean.
fn params() -> GenParams {
    GenParams {
        seed: 5,
        county_name: "状态县".into(),
        townships: 2,
        population: 60_000,
        voters_per_station: 1_500,
        scenarios: false,
    }
}

/// How long the first township's outbox may take to drain, and how often status is asked.
const CLEAN_DEADLINE: Duration = Duration::from_secs(60);
const CLEAN_POLL: Duration = Duration::from_millis(200);

/// `tally status ... --format json`: the exit code and the report.
fn status(county: &LocalCounty, extra: &[&str]) -> (i32, Value) {
    let servers = tally_tests::servers(county);
    let mut args = vec![
        "status",
        "--servers",
        &servers,
        "--pki",
        county.layout.pki.to_str().unwrap(),
        "--format",
        "json",
    ];
    args.extend_from_slice(extra);
    let (code, out, err) = output(&county.layout.root, &args);
    let report: Value = serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("status prints JSON ({e}); stdout {out}, stderr {err}"));
    (code, report)
}

/// `GET /metrics`: the body, after checking the answer is Prometheus text.
fn scrape(address: &str) -> String {
    let Response { head, body, .. } =
        http_get(address, "/metrics").expect("the metrics port answers");
    assert!(
        head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
        "{head}"
    );
    assert!(
        head.to_ascii_lowercase()
            .contains("application/openmetrics-text; version=1.0.0"),
        "{head}"
    );
    body
}

fn problems(report: &Value) -> Vec<String> {
    report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_owned())
        .collect()
}

// Goal: `tally status` shows every replica and township, exits 0 when all is well, and exits 3
// naming the problem when a township or a replica is gone; townships are found from their
// config files as well as from the flag.
// Method: a local county; one township's sheets imported; status polled (with a deadline) until
// the outbox drained and it is clean; then a township killed, then a replica killed, and status
// asked each time.
#[test]
fn status_shows_cluster_and_townships_and_flags_problems() {
    let root = tally_tests::tempdir();
    let mut county =
        tally_tests::lay_out_county(&root.path().join("net"), &params(), Default::default());
    // Every township serves GET /metrics on a port of its own.
    let mut metrics_addresses = std::collections::BTreeMap::new();
    let ports = tally_tests::localnet::free_ports(county.township_addresses.len()).unwrap();
    for (t, port) in county.township_addresses.keys().zip(ports) {
        let path = county.layout.township_config(t);
        let text = std::fs::read_to_string(&path).unwrap();
        let address = format!("127.0.0.1:{port}");
        let text = text.replacen(
            "\nlisten = ",
            &format!("\nhttp_listen = \"{address}\"\nlisten = "),
            1,
        );
        std::fs::write(&path, text).unwrap();
        metrics_addresses.insert(t.clone(), address);
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime
        .block_on(county.start_county())
        .expect("the cluster elects a leader");
    runtime
        .block_on(county.start_townships())
        .expect("the townships answer");
    let townships: Vec<String> = county.township_addresses.keys().cloned().collect();
    let first = townships[0].clone();

    // The first township's sheets, imported by its clerk.
    let sheets: Vec<_> = county
        .sheets
        .iter()
        .filter(|s| {
            county
                .definition
                .unit_by_key(&s.key_id)
                .is_some_and(|u| u.township.as_str() == first)
        })
        .cloned()
        .collect();
    assert!(!sheets.is_empty());
    let bundle = county.layout.root.join("first.sheets");
    std::fs::write(&bundle, tally_proto::write_bundle(&sheets)).unwrap();
    let config = county.layout.township_config(&first);
    let (code, out, err) = import(
        &county.layout.root,
        config.to_str().unwrap(),
        &[bundle.to_str().unwrap()],
    );
    assert_eq!(code, 0, "import: {out}\n{err}");

    let servers_dir = county.layout.servers.to_str().unwrap().to_owned();
    let by_config = ["--township-config", servers_dir.as_str()];
    let report = poll(CLEAN_DEADLINE, CLEAN_POLL, || {
        let (code, report) = status(&county, &by_config);
        let drained = report["townships"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["outbox_depth"] == 0);
        // Clean but for the committee: the counted contests wait to be confirmed (exit 3).
        let only_committee = problems(&report)
            .iter()
            .all(|p| p.contains("wait for the committee"));
        if code == 3 && drained && only_committee {
            Ok(report)
        } else {
            Err(format!("{report:#}"))
        }
    })
    .unwrap_or_else(|report| panic!("status never came clean: {report}"));
    assert_eq!(problems(&report).len(), 1, "{report:#}");
    let committee = &report["committee"];
    assert!(committee["waiting"].as_u64().unwrap() > 0, "{report:#}");
    assert_eq!(committee["confirmed"], 0, "{report:#}");
    let replicas = report["replicas"].as_array().unwrap();
    assert_eq!(replicas.len(), 3, "{report:#}");
    assert_eq!(
        replicas.iter().filter(|r| r["role"] == "leader").count(),
        1,
        "{report:#}"
    );
    assert!(replicas.iter().all(|r| r["lag"].is_u64()), "{report:#}");
    let shown: Vec<&Value> = report["townships"].as_array().unwrap().iter().collect();
    assert_eq!(shown.len(), townships.len(), "{report:#}");
    let t = shown
        .iter()
        .find(|t| t["township"] == first.as_str())
        .unwrap();
    assert_eq!(t["reachable"], true);
    assert_eq!(t["county_reachable"], true, "{report:#}");
    assert_eq!(t["sheets_stored"].as_u64(), Some(sheets.len() as u64));
    assert_eq!(t["forwarded"].as_u64(), Some(sheets.len() as u64));
    assert!(t["units_reported"].as_u64().unwrap() > 0);
    assert_eq!(t["units_reported"], t["units_expected"], "{report:#}");

    // The table names every replica and township.
    let servers = tally_tests::servers(&county);
    let flag = format!("{first}={}", county.township_addresses[&first]);
    let (code, table, err) = output(
        &county.layout.root,
        &[
            "status",
            "--servers",
            &servers,
            "--pki",
            county.layout.pki.to_str().unwrap(),
            "--townships",
            &flag,
        ],
    );
    // Exit 3: the first township's contests are counted and wait for the committee to confirm
    // them; that is the only thing that needs attention.
    assert_eq!(code, 3, "{table}\n{err}");
    assert!(
        table.contains("leader") && table.contains(&first),
        "{table}"
    );
    let attention: Vec<&str> = table
        .lines()
        .filter(|l| l.starts_with("attention: "))
        .collect();
    assert_eq!(attention.len(), 1, "{table}");
    assert!(attention[0].contains("wait for the committee"), "{table}");
    assert!(table.contains("committee: 0 of "), "{table}");

    // Publication from the cluster: the reports and exports are written; the other township
    // has not reported, so contests are pending (exit 3).
    let out_dir = county.layout.root.join("published");
    let (code, out, err) = output(
        &county.layout.root,
        &[
            "publish",
            "--servers",
            &servers,
            "--pki",
            county.layout.pki.to_str().unwrap(),
            "--out",
            out_dir.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 3, "publish: {out}\n{err}");
    let html = std::fs::read_to_string(out_dir.join("elected-county.html")).unwrap();
    assert!(html.contains("状态县人民代表大会代表当选名单"), "{html}");
    assert!(out_dir.join("results.csv").exists());

    // The township's metrics, scraped: what was imported and forwarded.
    let text = scrape(&metrics_addresses[&first]);
    let value = |name: &str| metric(&text, name);
    let n = sheets.len() as f64;
    assert_eq!(
        value("tally_township_sheets_total{outcome=\"accepted\"}"),
        Some(n),
        "{text}"
    );
    assert_eq!(value("tally_township_outbox_sheets"), Some(0.0), "{text}");
    assert_eq!(
        value("tally_township_outbox_oldest_age_seconds"),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        value("tally_township_outbox_capacity_sheets"),
        Some(100_000.0),
        "{text}"
    );
    assert_eq!(
        value("tally_township_county_reachable"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value("tally_township_forwarded_sheets_total"),
        Some(n),
        "{text}"
    );
    assert_eq!(
        value("tally_township_county_outcomes_total{outcome=\"accepted\"}"),
        Some(n),
        "{text}"
    );
    assert_eq!(
        value("tally_township_signature_failures_total"),
        Some(0.0),
        "{text}"
    );
    assert!(
        value("tally_township_forward_batch_duration_seconds_count").unwrap() >= 1.0,
        "{text}"
    );
    assert_eq!(
        value("tally_township_forward_batch_duration_seconds_bucket{le=\"+Inf\"}"),
        value("tally_township_forward_batch_duration_seconds_count"),
        "{text}"
    );

    // A sheet with a broken signature, imported: refused E204, counted, and flagged by status.
    let mut forged = sheets[0].clone();
    let mut signature = forged.signature.to_bytes();
    signature[0] ^= 1;
    forged.signature = ed25519_dalek::Signature::from_bytes(&signature);
    let forged_bundle = county.layout.root.join("forged.sheets");
    std::fs::write(&forged_bundle, tally_proto::write_bundle(&[forged])).unwrap();
    let (code, out, err) = import(
        &county.layout.root,
        config.to_str().unwrap(),
        &[forged_bundle.to_str().unwrap()],
    );
    assert_eq!(code, 3, "import of a forged sheet: {out}\n{err}");
    let text = scrape(&metrics_addresses[&first]);
    assert_eq!(
        metric(&text, "tally_township_signature_failures_total"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            "tally_township_sheets_total{outcome=\"refused\",code=\"E204\"}"
        ),
        Some(1.0),
        "{text}"
    );
    let (code, report) = status(&county, &by_config);
    assert_eq!(code, 3, "{report:#}");
    assert!(
        problems(&report)
            .iter()
            .any(|p| p.contains(&format!("township {first}")) && p.contains("E204")),
        "{report:#}"
    );

    // A township gone: exit 3, named.
    let second = townships[1].clone();
    county.fleet.townships.get_mut(&second).unwrap().kill();
    let (code, report) = status(&county, &by_config);
    assert_eq!(code, 3, "{report:#}");
    let found = problems(&report);
    assert!(
        found
            .iter()
            .any(|p| p.contains(&format!("township {second}")) && p.contains("unreachable")),
        "{report:#}"
    );

    // A replica gone as well: exit 3, the replica's address named.
    let (&id, address) = county.replica_addresses.iter().next().unwrap();
    let address = address.clone();
    county.fleet.replicas.get_mut(&id).unwrap().kill();
    let (code, report) = status(&county, &by_config);
    assert_eq!(code, 3, "{report:#}");
    let found = problems(&report);
    assert!(found.iter().any(|p| p.contains(&address)), "{report:#}");
    assert!(
        report["replicas"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["address"] == address.as_str() && r["reachable"] == false),
        "{report:#}"
    );
    county.fleet.stop_all();
}
