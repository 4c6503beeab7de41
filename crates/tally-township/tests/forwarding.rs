//! The outbox draining into a real county: township aggregators and a 3-replica county
//! cluster, all in this process on 127.0.0.1 with mutual TLS, each on a runtime of its own.
//!
//! Every scenario ends with the check a county operator makes (`check_county_equals_offline`):
//! the county recorded each sheet the townships stored exactly once, and its results equal the
//! offline computation (`tally_core::results::compute`) over those sheets.

mod common;

use common::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tally_core::ids::UnitId;
use tally_proto::SignedSheet;
use tally_rpc::pb::sheet_outcome::Kind;
use tally_township::OutboxSettings;

const T01: &str = "T01";
const T02: &str = "T02";

/// Small batches, so a township's sheets take several; short pauses, so a county that comes
/// back is noticed quickly.
fn settings() -> OutboxSettings {
    OutboxSettings {
        batch_max: 7,
        retry_max: Duration::from_millis(300),
        ..OutboxSettings::default()
    }
}

/// Three addresses for the county's replicas, free now.
fn county_addresses() -> Vec<String> {
    (0..3).map(|_| unused_address()).collect()
}

/// Every unit of `township` submits all its sheets with its own certificate; returns the
/// envelopes stored (all of them: each is answered ACCEPTED).
async fn submit_all(env: &Env, township: &TestTownship) -> Vec<SignedSheet> {
    submit_units(env, township, &units_of(&township.id)).await
}

/// Each of `units` of `township` submits all its sheets with its own certificate; returns the
/// envelopes stored (all of them: each is answered ACCEPTED, whether or not the county can be
/// reached).
async fn submit_units(env: &Env, township: &TestTownship, units: &[UnitId]) -> Vec<SignedSheet> {
    let mut stored = Vec::new();
    for unit in units {
        let sheets: Vec<SignedSheet> = sheets_of(&township.id)
            .into_iter()
            .filter(|(s, _)| s.unit == *unit)
            .map(|(_, s)| s)
            .collect();
        let outcomes = submit(&mut env.village(&township.address, unit), &sheets)
            .await
            .unwrap_or_else(|s| panic!("unit {unit}: {s:?}"));
        assert_eq!(
            kinds(&outcomes),
            vec![Kind::Accepted; sheets.len()],
            "unit {unit}"
        );
        stored.extend(sheets);
    }
    stored
}

/// Waits until the township's outbox is empty; returns its picture then.
async fn drained(env: &Env, township: &TestTownship) -> tally_rpc::pb::PictureResponse {
    poll(
        &format!("township {}'s outbox to drain", township.id),
        async || {
            let p = picture(env, &township.address, &clerk(&township.id)).await;
            let outbox = p.outbox.clone().unwrap_or_default();
            if outbox.depth == 0 {
                Ok(p)
            } else {
                Err(format!(
                    "depth {}, reachable {}, last error {:?}",
                    outbox.depth, outbox.county_reachable, outbox.last_error
                ))
            }
        },
    )
    .await
}

/// The county's outcome of every sheet a township stored, by kind.
fn county_kinds(township: &TestTownship) -> Vec<String> {
    township
        .running()
        .township()
        .records()
        .into_iter()
        .map(|(_, r)| r.county.map_or("none".to_owned(), |c| c.kind))
        .collect()
}

// Goal: sheets stored at two townships reach the county through their outboxes, a correction
// among them, each counted once, and the county's results equal the offline computation.
// Method: a running 3-replica county; T01 and T02 take all their units' sheets, and one unit
// of T01 sends a correction (version 2); wait until both outboxes are empty; check each
// township's picture (forwarded, reachable, the county's log index) and the county.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outboxes_drain_into_the_county_and_its_results_equal_offline() {
    let env = Env::new();
    let county = County::start(&env, &county_addresses()).await;
    county.leader_status(&env).await;
    let t01 = env
        .start_township(T01, "127.0.0.1:0", &county.addresses, settings())
        .await;
    let t02 = env
        .start_township(T02, "127.0.0.1:0", &county.addresses, settings())
        .await;
    let mut stored = submit_all(&env, &t01).await;
    stored.extend(submit_all(&env, &t02).await);

    let (first, _) = sheets_of(T01)[0].clone();
    let mut correction = first.clone();
    correction.version = 2;
    correction.replaces_version = Some(1);
    correction.count_closed_at.unix_seconds += 3600;
    let correction = sign(&correction);
    let outcomes = submit(
        &mut env.village(&t01.address, &first.unit),
        std::slice::from_ref(&correction),
    )
    .await
    .unwrap();
    assert_eq!(kinds(&outcomes), [Kind::Accepted], "{outcomes:?}");
    stored.push(correction);

    for township in [&t01, &t02] {
        let p = drained(&env, township).await;
        let outbox = p.outbox.unwrap();
        assert_eq!(
            outbox.forwarded, p.sheets_stored,
            "township {}",
            township.id
        );
        assert!(outbox.county_reachable);
        assert!(outbox.last_error.is_empty(), "{}", outbox.last_error);
        assert!(outbox.county_log_index > 0);
        assert!(!outbox.county_chain_head.is_empty());
        assert!(p.refused.is_empty(), "{:?}", p.refused);
        assert!(
            county_kinds(township).iter().all(|k| k == "accepted"),
            "{:?}",
            county_kinds(township)
        );
    }
    check_county_equals_offline(&env, &county, &stored).await;
    t01.stop().await;
    t02.stop().await;
    county.stop().await;
}

// Goal: a county outage of any length does not stop a township: it keeps taking sheets, its
// outbox grows, the picture says the county is unreachable and why; when the county starts,
// the outbox drains and the county counts every sheet once.
// Method: T01 forwards to three addresses where nothing listens yet; half its units submit;
// wait until the picture reports the failure; the other half submit while the county is still
// down; start the county on those addresses; wait for the outbox to drain; check the county.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn county_outage_township_keeps_taking_sheets_then_drains() {
    let env = Env::new();
    let addresses = county_addresses();
    let t01 = env
        .start_township(T01, "127.0.0.1:0", &addresses, settings())
        .await;
    let units = units_of(T01);
    let (early, late) = units.split_at(units.len() / 2);
    let send = async |units: &[UnitId]| submit_units(&env, &t01, units).await;
    let mut stored = send(early).await;
    let p = poll("the picture to report the county unreachable", async || {
        let p = picture(&env, &t01.address, &clerk(T01)).await;
        let outbox = p.outbox.clone().unwrap_or_default();
        if !outbox.last_error.is_empty() && !outbox.county_reachable {
            Ok(p)
        } else {
            Err(format!("{outbox:?}"))
        }
    })
    .await;
    let outbox = p.outbox.unwrap();
    assert_eq!(outbox.depth, stored.len() as u64);
    assert_eq!(outbox.forwarded, 0);
    assert!(
        addresses
            .iter()
            .any(|a| outbox.last_error.contains(a.as_str())),
        "the error names the replica: {}",
        outbox.last_error
    );
    stored.extend(send(late).await);
    assert_eq!(
        t01.running().township().outbox_depth(),
        stored.len() as u64,
        "the outbox grows while the county is down"
    );

    let county = County::start(&env, &addresses).await;
    let p = drained(&env, &t01).await;
    assert_eq!(p.outbox.unwrap().forwarded, stored.len() as u64);
    check_county_equals_offline(&env, &county, &stored).await;
    t01.stop().await;
    county.stop().await;
}

// Goal: a township restarted with a full outbox drains it; and a batch sent again after the
// county already recorded it (a crash between the county's answer and the township's record
// of it) is answered DUPLICATE and counted once.
// Method: the county is down while T01 takes its sheets; T01 stops; its data directory is
// copied (the outbox full); the county starts, T01 starts again and drains. Then T01 stops,
// the copy is put back (the township forgot the county's answers), and T01 starts once more:
// it sends everything again; the county's chain does not grow and every answer is DUPLICATE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_with_a_full_outbox_drains_and_a_resend_counts_once() {
    let env = Env::new();
    let addresses = county_addresses();
    let t01 = env
        .start_township(T01, "127.0.0.1:0", &addresses, settings())
        .await;
    let stored = submit_all(&env, &t01).await;
    t01.stop().await;
    let data_dir = env.data_dir("township-T01");
    let copy = env.data_dir("township-T01-before");
    copy_dir(&data_dir, &copy);

    let county = County::start(&env, &addresses).await;
    let t01 = env
        .start_township(T01, "127.0.0.1:0", &addresses, settings())
        .await;
    assert_eq!(
        t01.running().township().outbox_depth() as usize,
        stored.len(),
        "the restarted township finds its outbox"
    );
    let p = drained(&env, &t01).await;
    assert_eq!(p.sheets_stored, stored.len() as u64);
    check_county_equals_offline(&env, &county, &stored).await;
    t01.stop().await;

    std::fs::remove_dir_all(&data_dir).unwrap();
    copy_dir(&copy, &data_dir);
    let t01 = env
        .start_township(T01, "127.0.0.1:0", &addresses, settings())
        .await;
    assert_eq!(
        t01.running().township().outbox_depth() as usize,
        stored.len()
    );
    drained(&env, &t01).await;
    assert!(
        county_kinds(&t01).iter().all(|k| k == "duplicate"),
        "{:?}",
        county_kinds(&t01)
    );
    check_county_equals_offline(&env, &county, &stored).await;
    t01.stop().await;
    county.stop().await;
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

// Goal: when the county refuses the township's batches whole (here: the aggregator presents
// township T02's certificate while forwarding T01's sheets), nothing leaves the outbox, and
// the picture carries the county's refusal as last_error for the operator to act on.
// Method: start T01 with T02's client certificate toward a running county; submit; wait for
// last_error; check it names the refusal and the outbox still holds every sheet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_the_county_refuses_whole_stays_and_is_reported() {
    let env = Env::new();
    let county = County::start(&env, &county_addresses()).await;
    county.leader_status(&env).await;
    let mut setup = env.setup(T01, &county.addresses, settings());
    let wrong = tally_net::TlsFiles::in_dir(&env.pki, &clerk(T02));
    setup.county_tls = wrong.client_tls("localhost").unwrap().0;
    let (server_tls, _) = tally_net::TlsFiles::in_dir(&env.pki, &clerk(T01))
        .server_tls()
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let running = tally_township::start(setup, server_tls, listener).unwrap();
    let address = running.address().to_string();
    let unit = units_of(T01)[0].clone();
    let sheets: Vec<SignedSheet> = sheets_of(T01)
        .into_iter()
        .filter(|(s, _)| s.unit == unit)
        .map(|(_, s)| s)
        .collect();
    submit(&mut env.village(&address, &unit), &sheets)
        .await
        .unwrap();
    let p = poll("the county's refusal in the picture", async || {
        let p = picture(&env, &address, &clerk(T01)).await;
        let outbox = p.outbox.clone().unwrap_or_default();
        if outbox.last_error.contains("PermissionDenied") {
            Ok(p)
        } else {
            Err(format!("{outbox:?}"))
        }
    })
    .await;
    let outbox = p.outbox.unwrap();
    assert!(
        outbox.last_error.contains("township T02's"),
        "the county's reason is kept: {}",
        outbox.last_error
    );
    assert_eq!(outbox.depth, sheets.len() as u64);
    assert_eq!(outbox.forwarded, 0);
    running.stop().await;
    county.stop().await;
}

/// A TCP relay in front of `target` that can be frozen: from then on it keeps every connection
/// open and passes nothing on, in either direction, as a partition or a hung machine does (a
/// closed port, by contrast, is refused at once). Returns its address and the switch.
async fn freezable_relay(target: String) -> (String, Arc<AtomicBool>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a relay port");
    let address = listener
        .local_addr()
        .expect("the relay's address")
        .to_string();
    let frozen = Arc::new(AtomicBool::new(false));
    let switch = frozen.clone();
    tokio::spawn(async move {
        while let Ok((inbound, _)) = listener.accept().await {
            let Ok(outbound) = tokio::net::TcpStream::connect(&target).await else {
                continue;
            };
            let (inbound, outbound) = (Arc::new(inbound), Arc::new(outbound));
            tokio::spawn(pipe(inbound.clone(), outbound.clone(), frozen.clone()));
            tokio::spawn(pipe(outbound, inbound, frozen.clone()));
        }
    });
    (address, switch)
}

/// Copies bytes from `from` to `to` until either closes; once `frozen`, holds what it read and
/// both connections for ever.
async fn pipe(
    from: Arc<tokio::net::TcpStream>,
    to: Arc<tokio::net::TcpStream>,
    frozen: Arc<AtomicBool>,
) {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        if from.readable().await.is_err() {
            return;
        }
        let n = match from.try_read(&mut buffer) {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(_) => return,
        };
        if frozen.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        let mut sent = 0;
        while sent < n {
            if to.writable().await.is_err() {
                return;
            }
            match to.try_write(&buffer[sent..n]) {
                Ok(k) => sent += k,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(_) => return,
            }
        }
    }
}

// Goal: a township leaves a county replica that stops answering (the connection stays open
// and nothing comes back, as in a partition or on a hung machine) within a few seconds, well
// before its 10 s call deadline, and forwards the rest through another replica; every sheet is
// counted once.
// Method: T01's first county address is a relay in front of replica 1; half its units submit
// and the outbox drains through the relay; the relay is frozen; the other half submit; the
// outbox must drain sooner than CALL_DEADLINE after the freeze (the HTTP/2 ping goes
// unanswered: SILENCE_PING_AFTER + PING_ANSWER_TIMEOUT), and the county must equal offline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_replica_is_left_before_the_call_deadline() {
    use tally_township::forward::{CALL_DEADLINE, PING_ANSWER_TIMEOUT, SILENCE_PING_AFTER};
    let env = Env::new();
    let addresses = county_addresses();
    let county = County::start(&env, &addresses).await;
    let (relay, frozen) = freezable_relay(addresses[0].clone()).await;
    let route = vec![relay.clone(), addresses[1].clone(), addresses[2].clone()];
    let t01 = env
        .start_township(T01, "127.0.0.1:0", &route, settings())
        .await;
    let units = units_of(T01);
    let (early, late) = units.split_at(units.len() / 2);
    let send = async |units: &[UnitId]| submit_units(&env, &t01, units).await;
    let mut stored = send(early).await;
    drained(&env, &t01).await;
    frozen.store(true, Ordering::SeqCst);
    let frozen_at = std::time::Instant::now();
    stored.extend(send(late).await);
    drained(&env, &t01).await;
    let took = frozen_at.elapsed();
    println!(
        "the outbox drained {:.2} s after the replica went silent",
        took.as_secs_f64()
    );
    assert!(
        took < CALL_DEADLINE,
        "the township took {took:?} to leave a silent replica: it waited out the call deadline ({CALL_DEADLINE:?}) instead of noticing the unanswered ping ({:?})",
        SILENCE_PING_AFTER + PING_ANSWER_TIMEOUT
    );
    check_county_equals_offline(&env, &county, &stored).await;
    t01.stop().await;
    county.stop().await;
}
