//! The whole-chain benchmark of issue 4: polling units submit to township aggregators, which
//! forward to a three-replica county cluster; every part a real process on 127.0.0.1 talking
//! gRPC over mutual TLS, with real fsyncs.
//!
//! A synthetic county of 20 townships and about 5,000 polling units (10,000 signed sheets) is
//! laid out with [`tally_localnet`]. 1,000 polling units submit at once, each over its own
//! TLS connection with its own village certificate, one sheet per call as a unit's device
//! does; a unit that is done hands its place to the next, which connects afresh.
//!
//! It prints, for the closing note:
//! - sheets per second from the first village submit to the county's commit of the last sheet;
//! - the latency of each sheet from its village submit to the township's answer (stored,
//!   fsynced) and to the county's commit (when its township has the county's answer), p50
//!   and p99;
//! - the time from the last sheet's arrival at a township to the county holding every sheet,
//!   and to a linearizable results read that includes it.
//!
//! Run: `cargo bench -p tally --bench chain` (`-- --concurrency N --townships N --population N`
//! for others).

use anyhow::{Context, Result, anyhow};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tally_core::ids::TownshipId;
use tally_localnet::{LocalCounty, Watch};
use tally_net::{Identity, Role, TlsFiles};
use tally_proto::SignedSheet;
use tally_rpc::pb;
use tally_rpc::pb::township_client::TownshipClient;
use tally_synth::GenParams;
use tally_township::store::Store;

fn arg(args: &[String], name: &str, default: u64) -> u64 {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1]
}

/// One sheet's trip: when its unit sent it and when the township answered, Unix ms.
struct Trip {
    digest: String,
    sent_ms: u64,
    stored_ms: u64,
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let concurrency = arg(&args, "--concurrency", 1_000) as usize;
    let townships = arg(&args, "--townships", 20) as usize;
    let population = arg(&args, "--population", 3_200_000);
    let params = GenParams {
        seed: 4,
        county_name: "合成县".into(),
        townships,
        population,
        voters_per_station: 500,
        scenarios: false,
    };
    let dir = tempfile::tempdir()?;
    let program = std::path::PathBuf::from(env!("CARGO_BIN_EXE_tally"));
    let prepared = Instant::now();
    let mut county = LocalCounty::prepare(dir.path(), &params, &program, false)?;
    eprintln!(
        "laid out {} townships, {} units, {} sheets in {:.1} s",
        county.township_addresses.len(),
        county.generated.units.len(),
        county.sheets.len(),
        prepared.elapsed().as_secs_f64()
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(&mut county, concurrency))?;
    county.fleet.stop_all();
    Ok(())
}

async fn run(county: &mut LocalCounty, concurrency: usize) -> Result<()> {
    county.start_county().await?;
    county.start_townships().await?;
    let watch = Watch::new(county)?;

    // Each unit's sheets, and a client per unit with its own certificate.
    let mut by_unit: HashMap<String, Vec<SignedSheet>> = HashMap::new();
    for (signed, sheet) in county.sheets.iter().zip(&county.generated.sheets) {
        by_unit
            .entry(sheet.unit.to_string())
            .or_default()
            .push(signed.clone());
    }
    let mut units = Vec::new();
    for unit in &county.generated.units {
        let township = &county.generated.townships[unit.township].id;
        let address = county.township_addresses[township].clone();
        let identity = Identity::new(Role::Village, unit.id.as_str())?;
        let (tls, _) = TlsFiles::in_dir(&county.layout.pki, &identity)
            .client_tls("127.0.0.1")
            .map_err(|e| anyhow!("{e}"))?;
        let channel = tonic::transport::Endpoint::from_shared(format!("https://{address}"))?
            .tls_config(tls)?
            .connect_lazy();
        let sheets = by_unit.remove(unit.id.as_str()).unwrap_or_default();
        units.push((unit.id.to_string(), channel, sheets));
    }
    let total: usize = units.iter().map(|(_, _, s)| s.len()).sum();
    let queue = Arc::new(Mutex::new(units));
    let trips = Arc::new(Mutex::new(Vec::with_capacity(total)));

    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (queue, trips) = (queue.clone(), trips.clone());
        workers.spawn(async move {
            loop {
                let Some((unit, channel, sheets)) = queue.lock().expect("queue").pop() else {
                    return Ok::<_, anyhow::Error>(());
                };
                let mut client = TownshipClient::new(channel);
                for signed in sheets {
                    let sent_ms = unix_ms();
                    let digest = hex::encode(signed.digest());
                    let mut pause = Duration::from_millis(100);
                    let response = loop {
                        match client
                            .submit(pb::SubmitRequest {
                                sheets: vec![signed.to_pb()],
                                source: String::new(),
                            })
                            .await
                        {
                            Ok(r) => break r.into_inner(),
                            Err(status)
                                if matches!(
                                    status.code(),
                                    tonic::Code::Unavailable
                                        | tonic::Code::ResourceExhausted
                                        | tonic::Code::DeadlineExceeded
                                ) =>
                            {
                                tokio::time::sleep(pause).await;
                                pause = (pause * 2).min(Duration::from_secs(2));
                            }
                            Err(status) => {
                                return Err(anyhow!("unit {unit}: {}", status.message()));
                            }
                        }
                    };
                    let kind = response.outcomes.first().map_or(0, |o| o.kind);
                    if kind != pb::sheet_outcome::Kind::Accepted as i32 {
                        return Err(anyhow!("unit {unit}: sheet {digest} answered {response:?}"));
                    }
                    trips.lock().expect("trips").push(Trip {
                        digest,
                        sent_ms,
                        stored_ms: unix_ms(),
                    });
                }
            }
        });
    }
    while let Some(done) = workers.join_next().await {
        done.context("a polling unit task failed")??;
    }
    let all_stored = Instant::now();
    loop {
        if watch.county_sheets().await >= total as u64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let all_committed = Instant::now();
    let results = county.county_results().await?;
    let results_read = Instant::now();
    assert_eq!(results.chain_length, total as u64);

    let trips = std::mem::take(&mut *trips.lock().expect("trips"));
    let mut stored: Vec<f64> = trips
        .iter()
        .map(|t| t.stored_ms.saturating_sub(t.sent_ms) as f64)
        .collect();
    stored.sort_by(f64::total_cmp);
    // The townships' databases say when the county answered each sheet; read them stopped.
    for township in county.fleet.townships.values_mut() {
        township.terminate();
    }
    let (committed, steady) = commit_latencies(county, &trips)?;
    let seconds = all_committed.duration_since(started).as_secs_f64();
    println!("whole chain, {total} sheets, {concurrency} polling units at once:");
    println!(
        "  throughput, first submit to last county commit: {:.0} sheets/s ({seconds:.2} s)",
        total as f64 / seconds
    );
    println!(
        "  steady rate, county answers between the 10th and 90th percentile sheet: {steady:.0} sheets/s"
    );
    println!(
        "  village submit -> stored at township (fsynced): p50 {:.0} ms, p99 {:.0} ms",
        percentile(&stored, 0.50),
        percentile(&stored, 0.99)
    );
    println!(
        "  village submit -> county commit:                p50 {:.0} ms, p99 {:.0} ms ({} sheets timed)",
        percentile(&committed, 0.50),
        percentile(&committed, 0.99),
        committed.len()
    );
    println!(
        "  last sheet stored at a township -> every sheet in the county: {:.0} ms; -> results read: {:.0} ms",
        all_committed.duration_since(all_stored).as_secs_f64() * 1000.0,
        results_read.duration_since(all_stored).as_secs_f64() * 1000.0
    );
    Ok(())
}

/// Each sheet's latency from its village submit to the county's commit, as its township saw
/// the county's answer (read from the township's database once it has stopped).
/// Also the rate of county answers between the 10th and the 90th percentile sheet, which
/// leaves out the start (a thousand TLS handshakes) and the tail.
fn commit_latencies(county: &LocalCounty, trips: &[Trip]) -> Result<(Vec<f64>, f64)> {
    let mut answered: HashMap<String, u64> = HashMap::new();
    for township in county.township_addresses.keys() {
        let dir = county
            .layout
            .servers
            .join(format!("data/township-{township}"));
        let (_, loaded) = Store::open(&dir, &TownshipId::new(township))
            .map_err(|e| anyhow!("township {township}: {e}"))?;
        for sheet in loaded.sheets {
            if let Some(outcome) = sheet.record.county {
                answered.insert(hex::encode(sheet.digest), outcome.unix_ms);
            }
        }
    }
    let mut latencies: Vec<f64> = trips
        .iter()
        .filter_map(|t| {
            answered
                .get(&t.digest)
                .map(|&at| at.saturating_sub(t.sent_ms) as f64)
        })
        .collect();
    latencies.sort_by(f64::total_cmp);
    let mut times: Vec<u64> = answered.values().copied().collect();
    times.sort_unstable();
    let (from, to) = (times.len() / 10, times.len() * 9 / 10);
    let steady = match (times.get(from), times.get(to)) {
        (Some(a), Some(b)) if b > a => (to - from) as f64 * 1000.0 / (b - a) as f64,
        _ => f64::NAN,
    };
    Ok((latencies, steady))
}
