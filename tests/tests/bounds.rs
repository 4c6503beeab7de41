//! Bounds before trust, against real processes: three `tally county` replicas and the township
//! aggregators (`tally township`) of a small generated county on 127.0.0.1, attacked as a
//! stolen polling-unit device and a misbehaving township would attack them.
//!
//! Goal: a server checks the caller's role and each message's size before it reads a request
//! body, and keeps what one caller may have in flight within a limit; an attack costs a server
//! no memory to speak of. Method: requests are sent through a real mutual-TLS channel as raw
//! HTTP/2 with a body made on the fly (hundreds of MB are never held by the test), counting
//! the bytes the client let go before the server answered; each server's peak resident memory
//! (`VmHWM` in `/proc/PID/status`, reset first through `/proc/PID/clear_refs`) is read before
//! and after. Figures are printed (`--nocapture` shows them) and go in docs/design/county.md.

use std::future::Future as _;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tally_net::{Identity, Role, TlsFiles};
use tally_tests::localnet::{LocalCounty, Tuning, Watch};
use tally_tests::{lay_out_county, small_county};
use tonic::Code;
use tonic::body::Body;
use tonic::codegen::{Bytes, Service, http};
use tonic::transport::{Channel, Endpoint};

const TUNING: Tuning = Tuning {
    raft_tick_ms: Some(50),
    outbox_retry_max_ms: None,
    outbox_batch_max: None,
};

/// The County.Ingest a polling unit's certificate sends the leader (the 600 MB).
const INGEST_TO_LEADER_BYTES: u64 = 600 << 20;
/// The County.Ingest a polling unit's certificate sends a follower (the 300 MB).
const INGEST_TO_FOLLOWER_BYTES: u64 = 300 << 20;
/// A County.Ingest from a township's own certificate (a role that may ingest), larger than the
/// largest batch the county takes, sent to a follower: refused there, never forwarded.
const OVERSIZED_BATCH_BYTES: u64 = 300 << 20;
/// A Township.Submit from one of the township's own units, far over the 64-sheet maximum.
const OVERSIZED_SUBMIT_BYTES: u64 = 100 << 20;
/// Each piece of an attacking body.
const PIECE_BYTES: usize = 256 << 10;
/// The most a client may have let go before a refusal: HTTP/2 flow control lets it send one
/// stream window (1 MiB by default) before the server reads anything, plus what sits in the
/// client's buffers.
const SENT_BEFORE_ANSWER_MAX: u64 = 8 << 20;
/// The most a server's peak resident memory may grow during the attacks.
const PEAK_GROWTH_MAX: u64 = 50 << 20;
/// Calls one peer opens at once in the flood, beyond what it may have in flight.
const FLOOD_EXTRA_CALLS: usize = 40;
/// How long a refused call may take to be answered.
const ANSWER_WITHIN: Duration = Duration::from_secs(10);
/// How long the test waits for a condition before it fails.
const WAIT_MAX: Duration = Duration::from_secs(30);

/// A request body: a gRPC prefix declaring `declared` bytes, then that many zero bytes made
/// as the client asks for them; `pulled` counts what the client has taken.
struct Declared {
    prefix: Option<Bytes>,
    left: u64,
    piece: Bytes,
    pulled: Arc<AtomicU64>,
}

impl Declared {
    fn new(declared: u64) -> (Declared, Arc<AtomicU64>) {
        let pulled = Arc::new(AtomicU64::new(0));
        let mut prefix = vec![0u8];
        prefix.extend_from_slice(
            &u32::try_from(declared)
                .expect("a gRPC length fits 32 bits")
                .to_be_bytes(),
        );
        (
            Declared {
                prefix: Some(Bytes::from(prefix)),
                left: declared,
                piece: Bytes::from(vec![0u8; PIECE_BYTES]),
                pulled: pulled.clone(),
            },
            pulled,
        )
    }
}

impl http_body::Body for Declared {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, tonic::Status>>> {
        let data = if let Some(prefix) = self.prefix.take() {
            prefix
        } else if self.left > 0 {
            let n = self.left.min(PIECE_BYTES as u64);
            self.left -= n;
            self.piece.slice(..n as usize)
        } else {
            return Poll::Ready(None);
        };
        self.pulled.fetch_add(data.len() as u64, Ordering::Relaxed);
        Poll::Ready(Some(Ok(http_body::Frame::data(data))))
    }
}

/// A request body that sends nothing until its sender is dropped, then ends: a call that
/// holds its place in flight.
struct Stalled(tokio::sync::oneshot::Receiver<()>);

impl http_body::Body for Stalled {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, tonic::Status>>> {
        match Pin::new(&mut self.0).poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(_) => Poll::Ready(None),
        }
    }
}

/// A mutual-TLS channel to `address` with `identity`'s certificate from the county's PKI.
async fn channel(county: &LocalCounty, identity: &Identity, address: &str) -> Channel {
    let (tls, _) = TlsFiles::in_dir(&county.layout.pki, identity)
        .client_tls("localhost")
        .expect("the certificate loads");
    let host = address.rsplit_once(':').expect("host:port").0;
    Endpoint::from_shared(format!("https://{address}"))
        .expect("an address")
        .tls_config(tls.domain_name(host))
        .expect("TLS")
        .connect()
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {address}: {e}"))
}

/// Sends `body` to `path` (`/tally.v1.County/Ingest`) on `channel`; the gRPC status the server
/// answered with and how long the answer took.
async fn call(channel: &Channel, path: &str, body: Body) -> (tonic::Status, Duration) {
    let mut channel = channel.clone();
    std::future::poll_fn(|cx| channel.poll_ready(cx))
        .await
        .expect("the channel is ready");
    let request = http::Request::builder()
        .method("POST")
        .uri(path)
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(body)
        .expect("a request");
    let started = Instant::now();
    let response = tokio::time::timeout(ANSWER_WITHIN, channel.call(request))
        .await
        .unwrap_or_else(|_| panic!("{path} was not answered within {ANSWER_WITHIN:?}"))
        .expect("an HTTP answer");
    let took = started.elapsed();
    let status = tonic::Status::from_header_map(response.headers())
        .expect("a refusal is answered in the headers (a trailers-only answer)");
    (status, took)
}

/// Peak and current resident memory of process `pid`, in bytes.
fn memory(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/PID/status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .unwrap_or_else(|| panic!("{name} in /proc/{pid}/status"))
            * 1024
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// Resets the peak (`VmHWM`) of process `pid` to its current resident memory, so the next
/// peak read is this test's; returns the resident memory then. Without the reset (a kernel
/// that refuses it), the peak growth measured is from the current resident memory, which
/// over-counts if the process had a higher peak before.
fn reset_peak(pid: u32) -> u64 {
    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
    memory(pid).1
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

struct Measured {
    what: String,
    pid: u32,
    resident_before: u64,
}

impl Measured {
    fn start(what: &str, pid: u32) -> Measured {
        Measured {
            what: what.to_owned(),
            pid,
            resident_before: reset_peak(pid),
        }
    }

    /// Prints the growth of the peak and checks it.
    fn check(&self) -> u64 {
        let (peak, resident) = memory(self.pid);
        let growth = peak.saturating_sub(self.resident_before);
        println!(
            "{}: resident {:.1} MiB before, peak {:.1} MiB during, resident {:.1} MiB after: peak growth {:.1} MiB",
            self.what,
            mib(self.resident_before),
            mib(peak),
            mib(resident),
            mib(growth)
        );
        assert!(
            growth <= PEAK_GROWTH_MAX,
            "{}: the peak resident memory grew by {:.1} MiB (at most {:.1} allowed)",
            self.what,
            mib(growth),
            mib(PEAK_GROWTH_MAX)
        );
        growth
    }
}

/// Sends a body declaring `declared` bytes and checks the refusal: its code, that its message
/// contains `says`, and that the client let go of little before the answer.
async fn attack(channel: &Channel, path: &str, declared: u64, code: Code, says: &str, what: &str) {
    let (body, pulled) = Declared::new(declared);
    let (status, took) = call(channel, path, Body::new(body)).await;
    let sent = pulled.load(Ordering::Relaxed);
    println!(
        "{what}: {:?} after {:.1} MiB of {:.0} MiB sent, in {} ms: {}",
        status.code(),
        mib(sent),
        mib(declared),
        took.as_millis(),
        status.message()
    );
    assert_eq!(status.code(), code, "{what}: {status:?}");
    assert!(
        status.message().contains(says),
        "{what}: the answer says {says:?}: {}",
        status.message()
    );
    assert!(
        sent <= SENT_BEFORE_ANSWER_MAX,
        "{what}: the client had sent {:.1} MiB when the answer came (at most {:.1} allowed): the server read the body",
        mib(sent),
        mib(SENT_BEFORE_ANSWER_MAX)
    );
}

/// Opens `limit + FLOOD_EXTRA_CALLS` calls of `path` at once from one peer, each with a body
/// that sends nothing: the first `limit` hold their places, every other is refused at once
/// with RESOURCE_EXHAUSTED saying what to do. Then lets them all go.
async fn flood(channel: &Channel, path: &str, limit: usize, what: &str) {
    let mut senders = Vec::new();
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..limit + FLOOD_EXTRA_CALLS {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        senders.push(tx);
        let channel = channel.clone();
        let path = path.to_owned();
        calls.spawn(async move {
            let mut channel = channel;
            std::future::poll_fn(|cx| channel.poll_ready(cx))
                .await
                .expect("the channel is ready");
            let request = http::Request::builder()
                .method("POST")
                .uri(path)
                .header("content-type", "application/grpc")
                .header("te", "trailers")
                .body(Body::new(Stalled(rx)))
                .expect("a request");
            let response = channel.call(request).await.expect("an HTTP answer");
            tonic::Status::from_header_map(response.headers())
        });
    }
    let mut refused = 0;
    let deadline = tokio::time::Instant::now() + ANSWER_WITHIN;
    while refused < FLOOD_EXTRA_CALLS {
        let answer = tokio::time::timeout_at(deadline, calls.join_next())
            .await
            .unwrap_or_else(|_| {
                panic!("{what}: {refused} of {FLOOD_EXTRA_CALLS} calls over the limit refused within {ANSWER_WITHIN:?}")
            })
            .expect("calls are left")
            .expect("the call task ends");
        let status = answer.expect("a refusal in the headers");
        assert_eq!(status.code(), Code::ResourceExhausted, "{what}: {status:?}");
        assert!(
            status.message().contains("wait for their answers"),
            "{what}: {}",
            status.message()
        );
        if refused == 0 {
            println!("{what}: {}", status.message());
        }
        refused += 1;
    }
    // The calls within the limit are still waiting for their bodies.
    assert_eq!(
        calls.len(),
        limit,
        "{what}: the calls within the limit hold their places"
    );
    drop(senders);
    while calls.join_next().await.is_some() {}
}

#[test]
fn oversized_and_flooding_requests_are_refused_before_their_bodies() {
    let dir = tally_tests::tempdir();
    let mut county = lay_out_county(
        &dir.path().join("county"),
        &small_county(17, 2),
        Default::default(),
    );
    county.tune(&TUNING).expect("the configs take the tuning");
    let runtime = tally_tests::runtime();
    let logs = county.layout.logs.clone();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        runtime.block_on(run(&mut county));
    }));
    county.fleet.stop_all();
    if let Err(panic) = outcome {
        eprintln!("--- server logs are in {}", logs.display());
        let _ = dir.keep();
        std::panic::resume_unwind(panic);
    }
}

async fn run(county: &mut LocalCounty) {
    county
        .start_county()
        .await
        .unwrap_or_else(|e| panic!("the county did not start: {e:#}"));
    county
        .start_townships()
        .await
        .unwrap_or_else(|e| panic!("the townships did not start: {e:#}"));
    let watch = Watch::new(county).expect("the operator's certificate loads");
    let (leader, _) = watch.leader().await.expect("a leader");
    let follower = *county
        .replica_addresses
        .keys()
        .find(|id| **id != leader)
        .expect("a follower");
    let pid = |id: u64| county.fleet.replicas[&id].pid().expect("the replica runs");
    let township = county
        .township_addresses
        .keys()
        .next()
        .expect("a township")
        .clone();
    let unit = county
        .definition
        .units
        .iter()
        .find(|u| u.township.as_str() == township)
        .expect("a unit of the township")
        .id
        .to_string();
    let village = Identity::new(Role::Village, &unit).expect("a village identity");
    let township_identity = Identity::new(Role::Township, &township).expect("a township identity");

    // A stolen polling unit's certificate: refused by role, before the body, by the leader and
    // by a follower.
    let leader_memory = Measured::start(&format!("replica {leader} (leader)"), pid(leader));
    let follower_memory = Measured::start(&format!("replica {follower} (follower)"), pid(follower));
    let to_leader = channel(county, &village, &county.replica_addresses[&leader]).await;
    let to_follower = channel(county, &village, &county.replica_addresses[&follower]).await;
    let denied = format!(
        "village:{unit} may not make this call: this call needs a township or replica certificate"
    );
    attack(
        &to_leader,
        "/tally.v1.County/Ingest",
        INGEST_TO_LEADER_BYTES,
        Code::PermissionDenied,
        &denied,
        "a unit's 600 MiB County.Ingest to the leader",
    )
    .await;
    attack(
        &to_follower,
        "/tally.v1.County/Ingest",
        INGEST_TO_FOLLOWER_BYTES,
        Code::PermissionDenied,
        &denied,
        "a unit's 300 MiB County.Ingest to a follower",
    )
    .await;
    // A township may ingest, but not a batch larger than the largest the county takes: the
    // follower refuses it at its length prefix and never forwards it (the refusal names the
    // follower, and the leader's memory does not move).
    let township_to_follower = channel(
        county,
        &township_identity,
        &county.replica_addresses[&follower],
    )
    .await;
    attack(
        &township_to_follower,
        "/tally.v1.County/Ingest",
        OVERSIZED_BATCH_BYTES,
        Code::ResourceExhausted,
        &format!(
            "tally.v1.County/Ingest refused by replica {follower}: the message is {OVERSIZED_BATCH_BYTES} bytes, more than the {}",
            tally_county::limits::INGEST_REQUEST_BYTES_MAX
        ),
        "a township's 300 MiB County.Ingest to a follower",
    )
    .await;
    // Several at once, from many units' certificates, as the issue feared.
    let units: Vec<String> = county
        .definition
        .units
        .iter()
        .take(8)
        .map(|u| u.id.to_string())
        .collect();
    let mut many = tokio::task::JoinSet::new();
    for unit in &units {
        let identity = Identity::new(Role::Village, unit).expect("a village identity");
        let channel = channel(county, &identity, &county.replica_addresses[&leader]).await;
        many.spawn(async move {
            let (body, pulled) = Declared::new(INGEST_TO_FOLLOWER_BYTES);
            let (status, _) = call(&channel, "/tally.v1.County/Ingest", Body::new(body)).await;
            (status.code(), pulled.load(Ordering::Relaxed))
        });
    }
    while let Some(answer) = many.join_next().await {
        let (code, sent) = answer.expect("the call task ends");
        assert_eq!(code, Code::PermissionDenied);
        assert!(sent <= SENT_BEFORE_ANSWER_MAX, "{:.1} MiB sent", mib(sent));
    }
    println!(
        "{} units' 300 MiB County.Ingest at once to the leader: all refused",
        units.len()
    );
    let leader_growth = leader_memory.check();
    let follower_growth = follower_memory.check();

    // A flood of calls from one township's certificate at a replica: Results calls that hold
    // their places; the ones over the per-caller limit are refused at once.
    flood(
        &township_to_follower,
        "/tally.v1.County/Results",
        tally_county::limits::READS_IN_FLIGHT_PER_CALLER,
        "a township's flood of County.Results",
    )
    .await;

    // The township aggregator: an oversized Submit from its own unit, and a flood of Submits.
    let township_pid = county.fleet.townships[&township]
        .pid()
        .expect("the township runs");
    let township_memory = Measured::start(&format!("township {township}"), township_pid);
    let to_township = channel(county, &village, &county.township_addresses[&township]).await;
    attack(
        &to_township,
        "/tally.v1.Township/Submit",
        OVERSIZED_SUBMIT_BYTES,
        Code::ResourceExhausted,
        &format!(
            "tally.v1.Township/Submit refused by township {township}'s aggregator: the message is {OVERSIZED_SUBMIT_BYTES} bytes, more than the {}",
            tally_township::limits::SUBMIT_BYTES_MAX
        ),
        "a unit's 100 MiB Township.Submit",
    )
    .await;
    flood(
        &to_township,
        "/tally.v1.Township/Submit",
        tally_township::limits::SUBMITS_IN_FLIGHT_PER_UNIT,
        "a unit's flood of Township.Submit",
    )
    .await;
    let township_growth = township_memory.check();

    // The servers still serve: the cluster has a leader, the refused caller's places are
    // given back, and the township answers its unit.
    let deadline = Instant::now() + WAIT_MAX;
    loop {
        let mut client =
            tally_rpc::pb::county_client::CountyClient::new(township_to_follower.clone());
        if watch.leader().await.is_some()
            && client.status(tally_rpc::pb::StatusRequest {}).await.is_ok()
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the replicas answer again within {WAIT_MAX:?} after the attacks"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    county
        .fleet
        .check_alive()
        .expect("every server is still running");
    println!(
        "peak growth: leader {:.1} MiB, follower {:.1} MiB, township {:.1} MiB",
        mib(leader_growth),
        mib(follower_growth),
        mib(township_growth)
    );
}
