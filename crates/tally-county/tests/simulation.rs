//! A seeded simulation of a county cluster on turmoil's simulated network and clock: 3 or 5
//! replicas, each the real networked replica (`server::open` and `server::router`, mutual TLS,
//! the raft transport over tonic) with its own redb data directory, and township clients that
//! submit signed sheets through their own certificates, all in one thread.
//!
//! While the clients submit, a fault schedule drawn from the seed, aimed at the leader half
//! the time, partitions replicas (both ways and one way), holds links, slows the network and
//! makes it lose messages, stops, kills or cuts the power of replicas and restarts them, one or
//! all at once. Each replica's redb database lies on a simulated disk (`support::power_loss`):
//! a killed replica's disk keeps every write it made; a power cut keeps only what was synced,
//! plus, drawn from the seed, an in-order prefix of the unsynced writes ending in a torn one,
//! or any subset of them, some torn (as much as redb's design allows a disk to do). A restart
//! re-opens the database on that disk, and must recover every sheet acknowledged; a replica
//! that cannot open its database after a power cut fails the run with its error (the refusal
//! is counted, and would be rebuilt from its peers by an operator). Clients send a batch again when the answer is UNAVAILABLE or
//! DEADLINE_EXCEEDED (or the call timed out or its connection broke), sometimes a large one
//! (checked on the blocking pool), and sometimes send an acknowledged batch again on purpose.
//! Then everything is healed, the cluster settles, and the checks run:
//!
//! 1. no sheet was answered ACCEPTED twice, and a sheet sent again after an acknowledgement
//!    was answered DUPLICATE;
//! 2. every replica recorded every sheet exactly once (so every acknowledged one);
//! 3. all replicas hold identical state (fingerprint) and chain head at the same applied index,
//!    which a linearizable Results call confirms;
//! 4. a committee client proposes amendments of the definition among the sheets (County.Amend,
//!    3 of 5 officials' signatures, sent again like a batch when the answer is lost): every
//!    replica holds each exactly once, and its results equal an offline replay of its record
//!    (the founding definition, then each sheet and each amendment in chain order).
//!
//! A failure names its seed and prints the fault schedule. `TALLY_SIM_SEED=N cargo test -p
//! tally-county --test simulation -- --nocapture` runs that seed alone and prints what
//! happened; `TALLY_SIM_SEED=1000-1099` sweeps a range; `TALLY_SIM_SEEDS=2000` runs the first
//! 2,000 seeds of each test (the long sweep, docs/design/county.md) instead of the few CI runs,
//! and prints the power-loss figures of the whole sweep at the end. The schedule and turmoil's network
//! follow from the seed, but raft-rs draws its election jitter from the thread RNG and tokio's
//! `select!` picks branches at random, so a replay has the same faults at the same times and
//! not always the same interleaving.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

mod support;

use hyper_util::rt::TokioIo;
use support::power_loss::{CutMode, CutReport, Disk, POWER_CUT_MARKER};
use tally_core::definition::Definition;
use tally_core::ids::TownshipId;
use tally_county::ReplicaId;
use tally_county::node::{NodeHandle, Placement};
use tally_county::server::{self, ReplicaSetup};
use tally_county::service::CHECK_IN_PLACE_MAX;
use tally_county::state::ChainHead;
use tally_county::transport::{Dialer, host_of};
use tally_net::{Identity, Role, TlsFiles};
use tally_proto::SignedSheet;
use tally_rpc::pb;
use tally_rpc::pb::county_client::CountyClient;
use tally_synth::{GenParams, Rng};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::{Connected, TcpConnectInfo};
use tonic::transport::{Channel, Endpoint, Uri};

/// Seeds CI runs with 3 replicas; `TALLY_SIM_SEEDS=N` runs N seeds from the first.
const SEEDS_THREE: &[u64] = &[1, 2, 3, 4, 5, 6];
/// Seeds CI runs with 5 replicas; `TALLY_SIM_SEEDS=N` runs N seeds from the first.
const SEEDS_FIVE: &[u64] = &[101, 102, 103];

const CLUSTER_ID: &str = "sim-county";
/// Every replica serves on this port of its simulated host.
const PORT: u16 = 7000;
/// The replicas' raft tick in simulated time: elections after 10 to 20 ticks.
const RAFT_TICK: Duration = Duration::from_millis(20);
/// One turmoil step: every host runs this much simulated time per step.
const SIM_STEP: Duration = Duration::from_millis(1);
/// Faults are injected during this much simulated time; then everything is healed.
const FAULT_PHASE: Duration = Duration::from_secs(20);
/// turmoil fails a run that has not finished after this much simulated time.
const SIM_DURATION_MAX: Duration = Duration::from_secs(240);
/// Pause between two fault events, in simulated milliseconds.
const FAULT_GAP_MS_MIN: u64 = 300;
const FAULT_GAP_MS_MAX: u64 = 2_000;
/// Message latency on every link.
const LATENCY_MIN: Duration = Duration::from_millis(1);
const LATENCY_MAX: Duration = Duration::from_millis(15);
/// Chance that a randomly partitioned link is repaired at each message turmoil tries to send
/// on it, while the network loses messages.
const LOSS_REPAIR_RATE: f64 = 0.3;

/// Sheets one township submits in a run, and the most in one batch.
const SHEETS_PER_TOWNSHIP_MAX: usize = 100;
const BATCH_SHEETS_MAX: u64 = 6;
/// Per mille of batches that are large: more than the replica checks in place, so they go
/// through `spawn_blocking` (and rayon) on the simulated host.
const LARGE_BATCH_PER_MILLE: u64 = 150;
/// A client gives up on a batch after this many attempts (the run then fails).
const ATTEMPTS_MAX: u32 = 1_000;
/// Pause between two batches, in simulated milliseconds, so submissions span the faults.
const BATCH_GAP_MS_MAX: u64 = 1_500;
/// Pause before sending a batch again, in simulated milliseconds.
const RETRY_PAUSE_MS_MIN: u64 = 50;
const RETRY_PAUSE_MS_MAX: u64 = 500;
/// A client's call gives up after this long: longer than the replica's write deadline, so a
/// slow commit answers DEADLINE_EXCEEDED itself.
const CLIENT_CALL_TIMEOUT: Duration = Duration::from_secs(12);
/// Per mille of acknowledged batches a client sends again on purpose.
const RESEND_PER_MILLE: u64 = 250;
/// How long the checker waits for the healed cluster to agree, in simulated time.
const SETTLE_DEADLINE: Duration = Duration::from_secs(60);
/// Applied entries a replica keeps before compacting its log: small, so a replica that was
/// down or cut off catches up by snapshot, sent over the raft transport.
const COMPACT_AFTER_ENTRIES: u64 = 16;
/// Per mille of stopped replicas stopped cleanly; the rest are killed (the disk keeps every
/// write) or lose power (the disk keeps what was synced, and maybe part of the rest).
const CLEAN_STOP_PER_MILLE: u64 = 250;
/// Per mille of the other stops that are power cuts rather than kills.
const POWER_CUT_PER_MILLE: u64 = 600;
/// Per mille of crash events that arm a power cut during a commit instead (between its writes
/// and its fsync: the only moment a redb file holds unsynced writes to lose or tear).
const ARMED_CUT_PER_MILLE: u64 = 400;
/// An armed cut happens at one of the replica's next this many fsyncs.
const ARMED_CUT_SYNCS_MAX: u64 = 6;
/// How long one query of a replica's state may take.
const QUERY_TIMEOUT: Duration = Duration::from_secs(2);

// ---------------------------------------------------------------- fixture

/// The election and its signed sheets, made once per test process.
struct Fixture {
    definition: Arc<Definition>,
    /// Each township's first-round, first-version sheets (so every outcome is ACCEPTED or
    /// DUPLICATE), at most [`SHEETS_PER_TOWNSHIP_MAX`].
    by_township: BTreeMap<String, Vec<SignedSheet>>,
    /// Each township's countersigning key: a batch carries the township's signature over it.
    township_keys: BTreeMap<String, ed25519_dalek::SigningKey>,
    /// The amendments the committee client proposes, in order, each signed by 3 officials.
    amendments: Vec<(String, tally_core::act::SignedAct)>,
}

/// The committee's amendments of the fixture's definition: two voter corrections and a mobile
/// ballot box added on the day (a unit with a key of its own and no sheets).
fn amendments(
    generated: &tally_synth::Generated,
    definition: &Definition,
) -> Vec<(String, tally_core::act::SignedAct)> {
    use tally_core::act::{ActBody, Amendment, Change, SignedAct, sign};
    let township_contest = definition
        .contests
        .iter()
        .find(|c| c.level == tally_core::congress::Level::Township)
        .expect("a township contest");
    let box_key = ed25519_dalek::SigningKey::from_bytes(&[0xB0; 32]);
    let changes = [
        Change::RegisteredVoters {
            contest: definition.contests[0].id.clone(),
            registered_voters: definition.contests[0].registered_voters + 7,
        },
        Change::AddUnit {
            id: tally_core::ids::UnitId::new(format!("{}-M99", township_contest.township)),
            name: "临时流动票箱".into(),
            kind: tally_core::definition::UnitKind::MobileBox,
            township: township_contest.township.clone(),
            contests: vec![township_contest.id.clone()],
            public_key: hex::encode(box_key.verifying_key().as_bytes()),
        },
        Change::RegisteredVoters {
            contest: township_contest.id.clone(),
            registered_voters: township_contest.registered_voters - 3,
        },
    ];
    let officials = generated.official_keys();
    changes
        .into_iter()
        .enumerate()
        .map(|(i, change)| {
            let id = format!("A-{}", i + 1);
            let body = ActBody::Amendment(Amendment {
                election: definition.election.id.clone(),
                mode: definition.election.mode,
                id: id.clone(),
                reason: "选举委员会决定".into(),
                changes: vec![change],
            })
            .encode();
            let signatures = officials
                .iter()
                .skip(i % 2)
                .take(3)
                .map(|(official, _, key)| sign(&body, official, key))
                .collect();
            (id, SignedAct { body, signatures })
        })
        .collect()
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let generated = tally_synth::generate(&GenParams {
            seed: 23,
            county_name: "模拟县".into(),
            townships: 2,
            population: 120_000,
            voters_per_station: 1_500,
            scenarios: false,
        })
        .expect("valid generator parameters");
        let definition = Arc::new(tally_synth::definition(&generated).expect("valid definition"));
        let signed = tally_synth::sign_all(&generated);
        let mut by_township: BTreeMap<String, Vec<SignedSheet>> = BTreeMap::new();
        for (sheet, signed) in generated.sheets.iter().zip(signed) {
            if sheet.version != 1 || sheet.round.0 != 1 {
                continue;
            }
            let unit = definition
                .unit(&sheet.unit)
                .expect("the sheet's unit is defined");
            let sheets = by_township
                .entry(unit.township.as_str().to_owned())
                .or_default();
            if sheets.len() < SHEETS_PER_TOWNSHIP_MAX {
                sheets.push(signed);
            }
        }
        let township_keys = generated
            .township_keys
            .iter()
            .map(|(id, key)| (id.as_str().to_owned(), key.clone()))
            .collect();
        Fixture {
            amendments: amendments(&generated, &definition),
            definition,
            by_township,
            township_keys,
        }
    })
}

// ---------------------------------------------------------------- simulated network

/// A turmoil stream as tonic's server takes it. It reports `TcpConnectInfo`, so tonic files
/// the client certificate under `TlsConnectInfo<TcpConnectInfo>` where
/// `tally_net::peer_identity` looks for it.
struct SimConnection(turmoil::net::TcpStream);

impl Connected for SimConnection {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        TcpConnectInfo {
            local_addr: self.0.local_addr().ok(),
            remote_addr: self.0.peer_addr().ok(),
        }
    }
}

impl AsyncRead for SimConnection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl AsyncWrite for SimConnection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

/// Dials over turmoil with mutual TLS, as `TlsDialer` does over TCP (same timeouts and
/// keepalives: on turmoil a lost segment stalls a connection for good, and only the HTTP/2
/// keepalive notices).
struct SimDialer {
    tls: TlsFiles,
    /// A deadline for every call (clients); none for replicas, whose raft calls stay open.
    call_timeout: Option<Duration>,
}

impl Dialer for SimDialer {
    fn channel(&self, address: &str) -> Result<Channel, String> {
        let (tls, _) = self
            .tls
            .client_tls(host_of(address))
            .map_err(|e| e.to_string())?;
        let mut endpoint = Endpoint::from_shared(format!("https://{address}"))
            .map_err(|e| format!("{address} is not an address: {e}"))?
            .tls_config(tls)
            .map_err(|e| e.to_string())?
            .connect_timeout(Duration::from_secs(3))
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(5));
        if let Some(timeout) = self.call_timeout {
            endpoint = endpoint.timeout(timeout);
        }
        Ok(
            endpoint.connect_with_connector_lazy(tower::service_fn(|uri: Uri| async move {
                let host = uri.host().unwrap_or_default().to_owned();
                let port = uri.port_u16().unwrap_or(PORT);
                let stream = turmoil::net::TcpStream::connect((host.as_str(), port)).await?;
                Ok::<_, std::io::Error>(TokioIo::new(stream))
            })),
        )
    }
}

fn replica_host(id: u64) -> String {
    format!("replica-{id}")
}

fn township_host(township: &str) -> String {
    format!("township-{township}")
}

const CHECKER_HOST: &str = "operator";
const OPERATOR: &str = "sim";

// ---------------------------------------------------------------- what the hosts share

/// What the clients saw, and what the checker found; read by the test after the run.
#[derive(Default)]
struct Journal {
    /// How many answers said ACCEPTED, per sheet digest.
    accepted: BTreeMap<[u8; 32], u32>,
    /// Sheets that have been sent at least once.
    sent: BTreeSet<[u8; 32]>,
    /// Sheets answered DUPLICATE.
    duplicates: u64,
    /// Batches sent again on purpose after their acknowledgement.
    resent_batches: u64,
    /// Calls that failed with a status a client retries, by code.
    retried: BTreeMap<String, u64>,
    /// For batches whose ACCEPTED never reached the client: how its attempts failed.
    answer_lost_notes: Vec<String>,
    /// The first message of each retried code, to see what the failures were.
    retry_samples: BTreeMap<String, String>,
    /// Broken promises seen by the clients.
    violations: Vec<String>,
    townships_done: usize,
    /// The committee client has had every amendment recorded.
    committee_done: bool,
    /// Set by the test when the fault phase is over and everything is healed.
    healed: bool,
    /// Each replica's state once the cluster settled, from the checker.
    settled: Option<Vec<ReplicaView>>,
    /// The Results call's chain head, chain length and log index, from the checker.
    results: Option<(Vec<u8>, u64, u64)>,
}

type Shared<T> = Arc<Mutex<T>>;

/// The replicas' current handles, replaced on every restart.
type Registry = Shared<BTreeMap<u64, NodeHandle>>;

#[derive(Debug, Clone)]
struct ReplicaView {
    id: u64,
    applied_index: u64,
    last_index: u64,
    term: u64,
    fingerprint: [u8; 32],
    chain: ChainHead,
    digests: Vec<[u8; 32]>,
    /// The amendments in force, by id.
    amendments: Vec<String>,
    /// The chain records and the results the replica computes from them.
    records: Vec<tally_county::state::ChainRecord>,
    result: tally_core::results::ElectionResult,
}

// ---------------------------------------------------------------- replica host

#[derive(Clone)]
struct ReplicaHost {
    id: u64,
    data_dir: PathBuf,
    pki: PathBuf,
    definition: Arc<Definition>,
    voters: Vec<u64>,
    peers: BTreeMap<u64, String>,
    registry: Registry,
    /// The disk its database lies on, and what power cuts did to it.
    disk: Disk,
    power: Shared<PowerJournal>,
}

/// What became of replicas that lost power.
#[derive(Default)]
struct PowerJournal {
    /// Replicas whose power was cut and which have not started since.
    after_cut: BTreeSet<u64>,
    /// Starts after a power cut that opened the database.
    recoveries: u64,
    /// Starts after a power cut that refused to open it, with the error.
    refusals: Vec<String>,
}

/// The name of a replica's database file on the simulated disk.
fn database_name(id: u64) -> String {
    format!("replica-{id}/{}", tally_county::storage::DATABASE_FILE)
}

/// One start of a replica: open (or re-open) its database and serve until crashed.
async fn run_replica(host: ReplicaHost) -> turmoil::Result {
    let identity = Identity::replica(host.id)?;
    let tls = TlsFiles::in_dir(&host.pki, &identity);
    let setup = ReplicaSetup {
        cluster_id: CLUSTER_ID.to_owned(),
        replica_id: ReplicaId::new(host.id),
        data_dir: host.data_dir.clone(),
        definition: host.definition.clone(),
        initial_voters: host.voters.iter().copied().map(ReplicaId::new).collect(),
        peers: host
            .peers
            .iter()
            .map(|(id, address)| (ReplicaId::new(*id), address.clone()))
            .collect(),
        tick: RAFT_TICK,
        compact_after_entries: COMPACT_AFTER_ENTRIES,
        dialer: Arc::new(SimDialer {
            tls: tls.clone(),
            call_timeout: None,
        }),
    };
    // The driver runs as a task of the host's runtime: turmoil drives that runtime's clock
    // and scheduling, which a thread of its own would escape.
    let opened = server::open_with_backend(
        setup,
        Placement::Task,
        host.disk.open(&database_name(host.id)),
    );
    let opened = {
        let mut power = host.power.lock().unwrap();
        let after_cut = power.after_cut.remove(&host.id);
        match opened {
            Ok(opened) => {
                power.recoveries += u64::from(after_cut);
                opened
            }
            Err(e) => {
                let refusal = format!(
                    "replica {} refused to start{}: {e}",
                    host.id,
                    if after_cut { " after a power cut" } else { "" }
                );
                power.refusals.push(refusal.clone());
                return Err(refusal.into());
            }
        }
    };
    host.registry
        .lock()
        .unwrap()
        .insert(host.id, opened.node.clone());
    let (server_tls, _) = tls.server_tls()?;
    let listener = turmoil::net::TcpListener::bind(("0.0.0.0", PORT)).await?;
    let (accepted, incoming) = tokio::sync::mpsc::channel::<std::io::Result<SimConnection>>(16);
    tokio::task::spawn_local(async move {
        loop {
            let next = listener.accept().await.map(|(s, _)| SimConnection(s));
            let failed = next.is_err();
            if accepted.send(next).await.is_err() || failed {
                return;
            }
        }
    });
    let server = tonic::transport::Server::builder()
        .tls_config(server_tls)?
        .http2_keepalive_interval(Some(Duration::from_secs(10)));
    server::router(server, opened.shared)
        .serve_with_incoming(tokio_stream::wrappers::ReceiverStream::new(incoming))
        .await?;
    Ok(())
}

// ---------------------------------------------------------------- township client

struct TownshipClient {
    seed: u64,
    township: String,
    sheets: Vec<SignedSheet>,
    key: ed25519_dalek::SigningKey,
    /// The election its countersignatures are for, and its definition's digest.
    election: tally_core::definition::Election,
    definition_digest: String,
    pki: PathBuf,
    replicas: Vec<u64>,
    journal: Shared<Journal>,
}

fn retryable(code: tonic::Code) -> bool {
    // UNAVAILABLE and DEADLINE_EXCEEDED are what the replica answers when a write may be
    // sent again; CANCELLED is the client's own call timeout; UNKNOWN is a connection torn
    // down under a call (an h2 reset).
    matches!(
        code,
        tonic::Code::Unavailable
            | tonic::Code::DeadlineExceeded
            | tonic::Code::Cancelled
            | tonic::Code::Unknown
    )
}

/// Submits the township's sheets in batches, each until it is answered, and now and then an
/// answered batch again; every answer is written to the journal.
async fn run_township(client: TownshipClient) -> turmoil::Result {
    let mut rng = Rng(client.seed ^ 0x7A11_0000 ^ fnv(&client.township));
    let tls = TlsFiles::in_dir(
        &client.pki,
        &Identity::new(Role::Township, client.township.as_str())?,
    );
    let dialer = SimDialer {
        tls,
        call_timeout: Some(CLIENT_CALL_TIMEOUT),
    };
    let mut channels = Vec::new();
    for &id in &client.replicas {
        channels.push(CountyClient::new(
            dialer.channel(&format!("{}:{PORT}", replica_host(id)))?,
        ));
    }
    let mut rest: &[SignedSheet] = &client.sheets;
    while !rest.is_empty() {
        let size = if chance(&mut rng, LARGE_BATCH_PER_MILLE) {
            let large = CHECK_IN_PLACE_MAX as u64 + 1;
            range(&mut rng, large, large + 8)
        } else {
            range(&mut rng, 1, BATCH_SHEETS_MAX)
        };
        let take = (size as usize).min(rest.len());
        let (batch, more) = rest.split_at(take);
        rest = more;
        submit(&client, &mut rng, &mut channels, batch, false).await?;
        if chance(&mut rng, RESEND_PER_MILLE) {
            submit(&client, &mut rng, &mut channels, batch, true).await?;
        }
        let gap = range(&mut rng, 0, BATCH_GAP_MS_MAX);
        tokio::time::sleep(Duration::from_millis(gap)).await;
    }
    client.journal.lock().unwrap().townships_done += 1;
    Ok(())
}

/// Sends one batch to replicas picked at random until one answers, and checks the answer.
async fn submit(
    client: &TownshipClient,
    rng: &mut Rng,
    channels: &mut [CountyClient<Channel>],
    batch: &[SignedSheet],
    resend: bool,
) -> turmoil::Result {
    let digests: Vec<[u8; 32]> = batch.iter().map(SignedSheet::digest).collect();
    let request = pb::IngestRequest {
        township_id: client.township.clone(),
        sheets: batch.iter().map(SignedSheet::to_pb).collect(),
        countersignature: Some(
            tally_proto::countersign(
                &client.election,
                &TownshipId::new(&client.township),
                batch,
                &client.key,
            )
            .to_pb(),
        ),
        definition_digest: client.definition_digest.clone(),
    };
    // How each failed attempt of this batch ended, to explain a lost answer.
    let mut failures: Vec<String> = Vec::new();
    for attempt in 1..=ATTEMPTS_MAX {
        let target = (rng.next() % channels.len() as u64) as usize;
        let sent_before: Vec<bool> = {
            let mut journal = client.journal.lock().unwrap();
            digests.iter().map(|d| !journal.sent.insert(*d)).collect()
        };
        match channels[target].ingest(request.clone()).await {
            Ok(response) => {
                let response = response.into_inner();
                let mut journal = client.journal.lock().unwrap();
                if resend {
                    journal.resent_batches += 1;
                }
                if response.outcomes.len() != batch.len() {
                    journal.violations.push(format!(
                        "township {}: {} outcomes for a batch of {}",
                        client.township,
                        response.outcomes.len(),
                        batch.len()
                    ));
                    return Ok(());
                }
                for ((outcome, digest), sent_before) in
                    response.outcomes.iter().zip(&digests).zip(sent_before)
                {
                    let hex_digest = hex::encode(digest);
                    if outcome.digest != hex_digest {
                        journal.violations.push(format!(
                            "sheet {hex_digest}: the outcome names sheet {}",
                            outcome.digest
                        ));
                    }
                    match pb::sheet_outcome::Kind::try_from(outcome.kind) {
                        Ok(pb::sheet_outcome::Kind::Accepted) => {
                            let times = {
                                let times = journal.accepted.entry(*digest).or_default();
                                *times += 1;
                                *times
                            };
                            if times > 1 {
                                journal.violations.push(format!(
                                    "sheet {hex_digest} was answered ACCEPTED {times} times (attempt {attempt}, replica {}{})",
                                    client.replicas[target],
                                    if resend { ", sent again on purpose" } else { "" }
                                ));
                            }
                        }
                        Ok(pb::sheet_outcome::Kind::Duplicate) if sent_before => {
                            journal.duplicates += 1;
                            if !journal.accepted.contains_key(digest) && !resend {
                                let note = format!(
                                    "a batch of {} sheets of {} (answered DUPLICATE by replica {} at attempt {attempt}) after: {}",
                                    batch.len(),
                                    client.township,
                                    client.replicas[target],
                                    failures.join(" | ")
                                );
                                if journal.answer_lost_notes.last() != Some(&note) {
                                    journal.answer_lost_notes.push(note);
                                }
                            }
                        }
                        other => journal.violations.push(format!(
                            "sheet {hex_digest} (sent before: {sent_before}) was answered {other:?} {} {}",
                            outcome.code, outcome.message
                        )),
                    }
                }
                return Ok(());
            }
            Err(status) if retryable(status.code()) => {
                {
                    let mut journal = client.journal.lock().unwrap();
                    let code = format!("{:?}", status.code());
                    *journal.retried.entry(code.clone()).or_default() += 1;
                    journal
                        .retry_samples
                        .entry(code)
                        .or_insert_with(|| status.message().to_owned());
                }
                failures.push(format!(
                    "replica {}: {:?} {}",
                    client.replicas[target],
                    status.code(),
                    status.message()
                ));
                let pause = range(rng, RETRY_PAUSE_MS_MIN, RETRY_PAUSE_MS_MAX);
                tokio::time::sleep(Duration::from_millis(pause)).await;
            }
            Err(status) => {
                return Err(format!(
                    "township {}: replica {} answered {:?}: {}",
                    client.township,
                    client.replicas[target],
                    status.code(),
                    status.message()
                )
                .into());
            }
        }
    }
    Err(format!(
        "township {}: a batch was not answered in {ATTEMPTS_MAX} attempts",
        client.township
    )
    .into())
}

// ---------------------------------------------------------------- committee

const COMMITTEE_HOST: &str = "committee";

/// Proposes the fixture's amendments in order, among the townships' batches, as an operator:
/// each sent (to a replica drawn at random) until it is answered recorded, or refused as
/// already in force after an answer was lost.
async fn run_committee(
    seed: u64,
    pki: PathBuf,
    replicas: Vec<u64>,
    journal: Shared<Journal>,
) -> turmoil::Result {
    let mut rng = Rng(seed ^ 0xC0_33_17_7E);
    let dialer = SimDialer {
        tls: TlsFiles::in_dir(&pki, &Identity::new(Role::Operator, OPERATOR)?),
        call_timeout: Some(CLIENT_CALL_TIMEOUT),
    };
    for (id, act) in &fixture().amendments {
        tokio::time::sleep(Duration::from_millis(range(&mut rng, 500, 6_000))).await;
        let mut attempts = 0;
        loop {
            attempts += 1;
            if attempts > ATTEMPTS_MAX {
                return Err(
                    format!("amendment {id} was not recorded in {ATTEMPTS_MAX} attempts").into(),
                );
            }
            let target = *pick(&mut rng, &replicas);
            let mut client =
                CountyClient::new(dialer.channel(&format!("{}:{PORT}", replica_host(target)))?);
            let request = pb::AmendRequest {
                definition_digest: String::new(),
                body: act.body.clone(),
                signatures: tally_proto::county::act_to_pb(act).signatures,
            };
            match client.amend(request).await {
                Ok(answer) => {
                    let answer = answer.into_inner();
                    if answer.amendment_id != *id {
                        journal.lock().unwrap().violations.push(format!(
                            "amendment {id} was answered as {}",
                            answer.amendment_id
                        ));
                    }
                    break;
                }
                // An earlier attempt was recorded and its answer lost.
                Err(status)
                    if attempts > 1
                        && status.code() == tonic::Code::InvalidArgument
                        && status.message().contains("already in force") =>
                {
                    break;
                }
                Err(status) if retryable(status.code()) => {
                    let pause = range(&mut rng, RETRY_PAUSE_MS_MIN, RETRY_PAUSE_MS_MAX);
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                }
                Err(status) => {
                    journal.lock().unwrap().violations.push(format!(
                        "amendment {id} (attempt {attempts}) was answered {:?}: {}",
                        status.code(),
                        status.message()
                    ));
                    break;
                }
            }
        }
    }
    journal.lock().unwrap().committee_done = true;
    Ok(())
}

/// The results of a record replayed offline, apart from the state machine: the founding
/// definition, then each sheet (verified against the definition in force) into a ledger and
/// each amendment (its signatures checked) applied, in chain order.
fn replay_offline(
    records: &[tally_county::state::ChainRecord],
) -> Result<tally_core::results::ElectionResult, String> {
    use tally_county::state::Act;
    let mut definition: Option<Definition> = None;
    let mut ledger = tally_core::ledger::Ledger::new();
    for record in records {
        match &record.act {
            Act::Founding {
                definition: encoding,
            } => {
                definition = Some(
                    tally_core::canonical::decode("the founding", encoding)
                        .map_err(|e| e.to_string())?,
                );
            }
            Act::Sheet(signed) => {
                let d = definition.as_ref().ok_or("a sheet before the founding")?;
                let verified = tally_proto::verify(d, signed).map_err(|e| e.to_string())?;
                ledger.submit(verified.sheet, verified.digest);
            }
            Act::Committee(act) => {
                let d = definition.as_ref().ok_or("an act before the founding")?;
                let (body, _) = tally_core::act::check(d, act).map_err(|e| e.to_string())?;
                let tally_core::act::ActBody::Amendment(amendment) = body else {
                    continue;
                };
                definition = Some(
                    tally_core::act::amend(d, &amendment, record.log_index, &|c| ledger.polled(c))
                        .map_err(|e| e.to_string())?,
                );
            }
        }
    }
    let definition = definition.ok_or("no founding")?;
    Ok(tally_core::results::compute(&definition, &ledger))
}

// ---------------------------------------------------------------- checker

struct Checker {
    townships: usize,
    replicas: Vec<u64>,
    expected_sheets: u64,
    pki: PathBuf,
    registry: Registry,
    journal: Shared<Journal>,
}

/// Waits for the clients and the heal, then for every replica to reach the same applied
/// index with nothing more in its log, and records what each holds.
async fn run_checker(checker: Checker) -> turmoil::Result {
    loop {
        {
            let journal = checker.journal.lock().unwrap();
            if journal.healed
                && journal.townships_done == checker.townships
                && journal.committee_done
            {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let started = tokio::time::Instant::now();
    let mut last_seen = String::new();
    let views = loop {
        if started.elapsed() > SETTLE_DEADLINE {
            return Err(format!(
                "the healed cluster did not settle within {SETTLE_DEADLINE:?}: {last_seen}"
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        let handles: Vec<(u64, NodeHandle)> = checker
            .registry
            .lock()
            .unwrap()
            .iter()
            .map(|(id, h)| (*id, h.clone()))
            .collect();
        if handles.len() != checker.replicas.len() {
            last_seen = format!("{} replicas registered", handles.len());
            continue;
        }
        let mut views = Vec::new();
        for (id, handle) in handles {
            let view = tokio::time::timeout(
                QUERY_TIMEOUT,
                handle.query(move |replica| {
                    let state = replica.state();
                    ReplicaView {
                        id,
                        applied_index: state.applied_index().get(),
                        last_index: replica.status().last_index.get(),
                        term: replica.status().term.get(),
                        fingerprint: state.fingerprint(),
                        chain: state.chain_head(),
                        digests: state.recorded_digests(),
                        amendments: state
                            .definition()
                            .amended
                            .amendments
                            .iter()
                            .map(|a| a.id.clone())
                            .collect(),
                        records: state.records().to_vec(),
                        result: state.results().0,
                    }
                }),
            )
            .await;
            match view {
                Ok(Ok(view)) => views.push(view),
                Ok(Err(e)) => last_seen = format!("replica {id}: {e}"),
                Err(_) => last_seen = format!("replica {id} did not answer a query"),
            }
        }
        if views.len() != checker.replicas.len() {
            continue;
        }
        let first = &views[0];
        let agreed = views
            .iter()
            .all(|v| v.applied_index == first.applied_index && v.last_index == v.applied_index)
            && first.digests.len() as u64 >= checker.expected_sheets;
        last_seen = views
            .iter()
            .map(|v| {
                format!(
                    "replica {} applied {} of {} with {} sheets",
                    v.id,
                    v.applied_index,
                    v.last_index,
                    v.digests.len()
                )
            })
            .collect::<Vec<_>>()
            .join("; ");
        if agreed {
            break views;
        }
    };
    checker.journal.lock().unwrap().settled = Some(views);

    // The operator's view: a linearizable Results call through the first replica that
    // answers.
    let dialer = SimDialer {
        tls: TlsFiles::in_dir(&checker.pki, &Identity::new(Role::Operator, OPERATOR)?),
        call_timeout: Some(CLIENT_CALL_TIMEOUT),
    };
    let mut last_error = String::new();
    for _ in 0..20 {
        for &id in &checker.replicas {
            let mut client =
                CountyClient::new(dialer.channel(&format!("{}:{PORT}", replica_host(id)))?)
                    .max_decoding_message_size(64 << 20);
            match client.results(pb::ResultsRequest::default()).await {
                Ok(response) => {
                    let r = response.into_inner();
                    checker.journal.lock().unwrap().results =
                        Some((r.chain_head, r.chain_length, r.log_index));
                    return Ok(());
                }
                Err(status) => last_error = format!("replica {id}: {status}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(format!("no replica answered Results: {last_error}").into())
}

// ---------------------------------------------------------------- faults

/// The seeded fault schedule, drawn as the run goes.
struct Faults {
    rng: Rng,
    replicas: Vec<u64>,
    clients: Vec<String>,
    crashed: BTreeSet<u64>,
    next_at: Duration,
    lossy: bool,
    /// To find the leader: faults aimed at it are the ones that test the most.
    registry: Registry,
    /// The replicas' disk, to kill them and cut their power.
    disk: Disk,
    power: Shared<PowerJournal>,
    /// Replicas whose power will go at a coming fsync, and how it treats the unsynced writes.
    armed: BTreeMap<u64, CutMode>,
    stops: StopFigures,
    log: Vec<String>,
}

impl Faults {
    fn new(
        seed: u64,
        replicas: &[u64],
        clients: &[String],
        registry: Registry,
        disk: Disk,
        power: Shared<PowerJournal>,
    ) -> Self {
        Faults {
            rng: Rng(seed ^ 0xFA17_5EED),
            replicas: replicas.to_vec(),
            clients: clients.to_vec(),
            crashed: BTreeSet::new(),
            next_at: Duration::from_millis(1_000),
            lossy: false,
            registry,
            disk,
            power,
            armed: BTreeMap::new(),
            stops: StopFigures::default(),
            log: Vec::new(),
        }
    }

    fn pick_replica(&mut self) -> u64 {
        self.replicas[(self.rng.next() % self.replicas.len() as u64) as usize]
    }

    /// The leader of the highest term among the running replicas, as they last said.
    fn leader(&self) -> Option<u64> {
        self.registry
            .lock()
            .unwrap()
            .iter()
            .filter(|(id, _)| !self.crashed.contains(id))
            .map(|(_, handle)| handle.status().borrow().clone())
            .filter(|s| s.role == "leader")
            .max_by_key(|s| s.term)
            .map(|s| s.id.get())
    }

    /// The leader half of the time (when there is one), otherwise any replica.
    fn pick_target(&mut self) -> u64 {
        match self.leader() {
            Some(leader) if self.rng.next().is_multiple_of(2) => leader,
            _ => self.pick_replica(),
        }
    }

    fn all_hosts(&self) -> Vec<String> {
        self.replicas
            .iter()
            .map(|&id| replica_host(id))
            .chain(self.clients.iter().cloned())
            .chain([CHECKER_HOST.to_owned(), COMMITTEE_HOST.to_owned()])
            .collect()
    }

    /// Stops the hosts whose armed power cut happened in the last step (their process saw
    /// the fsync fail and wrote nothing more).
    fn stop_fired(&mut self, sim: &mut turmoil::Sim<'_>) {
        let now = sim.elapsed();
        for (r, mode) in std::mem::take(&mut self.armed) {
            let Some(cut) = self.disk.take_fired(&database_name(r)) else {
                self.armed.insert(r, mode);
                continue;
            };
            sim.crash(replica_host(r));
            self.crashed.insert(r);
            self.power.lock().unwrap().after_cut.insert(r);
            self.stops.cuts_during_fsync += 1;
            let what = self.count_cut(mode, &cut);
            self.log.push(format!(
                "{:>8.3}s the power of replica {r} went during an fsync ({what})",
                now.as_secs_f64()
            ));
        }
    }

    /// Counts a power cut in the figures and says what it did.
    fn count_cut(&mut self, mode: CutMode, cut: &CutReport) -> String {
        self.stops.power_cuts += 1;
        match mode {
            CutMode::LoseAll => self.stops.cuts_lose_all += 1,
            CutMode::TornPrefix => self.stops.cuts_torn_prefix += 1,
            CutMode::AnySubset => self.stops.cuts_any_subset += 1,
        }
        self.stops.unsynced_writes += cut.unsynced_writes;
        self.stops.kept_whole += cut.kept_whole;
        self.stops.torn_writes += cut.torn;
        format!(
            "{mode}: {} unsynced writes, {} kept whole, {} torn",
            cut.unsynced_writes, cut.kept_whole, cut.torn
        )
    }

    /// Draws how a power cut treats the unsynced writes.
    fn cut_mode(&mut self) -> CutMode {
        *pick(
            &mut self.rng,
            &[CutMode::LoseAll, CutMode::TornPrefix, CutMode::AnySubset],
        )
    }

    /// Injects the next fault if its time has come.
    fn step(&mut self, sim: &mut turmoil::Sim<'_>) {
        self.stop_fired(sim);
        let now = sim.elapsed();
        if now < self.next_at {
            return;
        }
        self.next_at =
            now + Duration::from_millis(range(&mut self.rng, FAULT_GAP_MS_MIN, FAULT_GAP_MS_MAX));
        let n = self.replicas.len();
        let event = match self.rng.next() % 100 {
            // Cut one replica off from the other replicas (clients still reach it: a leader
            // cut off this way takes writes it cannot commit).
            0..=14 => {
                let r = self.pick_target();
                for &other in &self.replicas {
                    if other != r {
                        sim.partition(replica_host(r), replica_host(other));
                    }
                }
                format!("isolate replica {r} from the replicas")
            }
            // Split the replicas in two groups, the smaller one possibly with the leader.
            15..=24 => {
                let mut minority = BTreeSet::from([self.pick_target()]);
                while minority.len() < n / 2 {
                    minority.insert(self.pick_replica());
                }
                for &a in &minority {
                    for &b in &self.replicas {
                        if !minority.contains(&b) {
                            sim.partition(replica_host(a), replica_host(b));
                        }
                    }
                }
                format!("split off replicas {minority:?}")
            }
            // One way only: a hears nothing from b.
            25..=31 => {
                let (a, b) = (self.pick_replica(), self.pick_replica());
                if a == b {
                    return;
                }
                sim.partition_oneway(replica_host(b), replica_host(a));
                format!("replica {a} no longer hears replica {b}")
            }
            // Hold a link: messages wait until it is released.
            32..=37 => {
                let (a, b) = (self.pick_replica(), self.pick_replica());
                if a == b {
                    return;
                }
                sim.hold(replica_host(a), replica_host(b));
                format!("hold the link between replicas {a} and {b}")
            }
            // Cut a replica off from the clients.
            38..=42 => {
                let r = self.pick_target();
                for c in &self.clients {
                    sim.partition(replica_host(r), c.as_str());
                }
                format!("cut replica {r} off from the townships")
            }
            43..=59 => {
                self.repair(sim);
                "repair every link".to_owned()
            }
            // Crash a replica; at most a majority are down at once.
            60..=71 => {
                let r = self.pick_target();
                if self.crashed.contains(&r)
                    || self.armed.contains_key(&r)
                    || self.crashed.len() + self.armed.len() > n / 2
                {
                    return;
                }
                if chance(&mut self.rng, ARMED_CUT_PER_MILLE) {
                    let syncs = range(&mut self.rng, 1, ARMED_CUT_SYNCS_MAX) as u32;
                    let mode = self.cut_mode();
                    let rng = Rng(self.rng.next());
                    self.disk.arm(&database_name(r), syncs, mode, rng);
                    self.armed.insert(r, mode);
                    format!(
                        "replica {r} will lose power during its fsync number {syncs} from now ({mode})"
                    )
                } else {
                    let how = self.stop(sim, r, false);
                    self.crashed.insert(r);
                    how
                }
            }
            // Restart a crashed replica on its data directory.
            72..=83 => {
                let Some(&r) = self
                    .crashed
                    .iter()
                    .nth((self.rng.next() % self.crashed.len().max(1) as u64) as usize)
                else {
                    return;
                };
                sim.bounce(replica_host(r));
                self.crashed.remove(&r);
                format!("restart replica {r}")
            }
            // Every replica loses power and comes back: all recover from their disks.
            84..=85 => {
                let mut how = Vec::new();
                for r in std::mem::take(&mut self.armed).into_keys() {
                    self.disk.disarm(&database_name(r));
                }
                for r in self.replicas.clone() {
                    if !self.crashed.contains(&r) {
                        how.push(self.stop(sim, r, true));
                    }
                    sim.bounce(replica_host(r));
                }
                self.crashed.clear();
                format!("restart every replica ({})", how.join(", "))
            }
            // Crash and restart at once.
            86..=89 => {
                let r = self.pick_target();
                if self.crashed.contains(&r) || self.armed.contains_key(&r) {
                    return;
                }
                let how = self.stop(sim, r, false);
                sim.bounce(replica_host(r));
                format!("{how} and restart it")
            }
            // Lose messages for a while (turmoil breaks a link at random and drops what is
            // on it; a TCP stream over it stalls until a keepalive notices).
            90..=95 => {
                if self.lossy {
                    sim.set_fail_rate(0.0);
                    self.lossy = false;
                    "stop losing messages".to_owned()
                } else {
                    let per_mille = range(&mut self.rng, 2, 20);
                    sim.set_fail_rate(per_mille as f64 / 1000.0);
                    self.lossy = true;
                    format!("lose messages ({per_mille} per mille)")
                }
            }
            // Slow the network down, or back to normal.
            _ => {
                let max_ms = *pick(&mut self.rng, &[15, 50, 150, 400]);
                sim.set_max_message_latency(Duration::from_millis(max_ms));
                format!("message latency up to {max_ms} ms")
            }
        };
        self.log
            .push(format!("{:>8.3}s {event}", now.as_secs_f64()));
    }

    /// Stops replica `r` as a graceful stop does or, more often, as a killed process or a
    /// power cut does; says which, and to which replica.
    ///
    /// turmoil stops a host by dropping its runtime, and redb closes its database cleanly on
    /// the way (it writes its shutdown header, which also makes its non-durable commits
    /// durable). A killed replica's or a power cut's disk takes no write from the dying
    /// process after the moment of the stop: that happens between two steps, when no write is
    /// under way (the driver and the services run on this thread), so a kill leaves every
    /// write made, and a power cut what was synced plus what `support::power_loss` draws.
    /// `power_cut` makes it a power cut for certain (the whole county's machines lose power).
    fn stop(&mut self, sim: &mut turmoil::Sim<'_>, r: u64, power_cut: bool) -> String {
        if !power_cut && chance(&mut self.rng, CLEAN_STOP_PER_MILLE) {
            sim.crash(replica_host(r));
            self.stops.clean_stops += 1;
            return format!("stop replica {r}");
        }
        let name = database_name(r);
        if !power_cut && !chance(&mut self.rng, POWER_CUT_PER_MILLE) {
            self.disk.kill(&name);
            sim.crash(replica_host(r));
            self.stops.kills += 1;
            return format!("kill replica {r}");
        }
        let mode = self.cut_mode();
        let cut = self.disk.power_cut(&name, mode, &mut self.rng);
        sim.crash(replica_host(r));
        self.power.lock().unwrap().after_cut.insert(r);
        let what = self.count_cut(mode, &cut);
        format!("cut the power of replica {r} ({what})")
    }

    fn repair(&mut self, sim: &mut turmoil::Sim<'_>) {
        let hosts = self.all_hosts();
        for (i, a) in hosts.iter().enumerate() {
            for b in &hosts[i + 1..] {
                // `release` makes the link healthy both ways and delivers what was held.
                sim.release(a.as_str(), b.as_str());
            }
        }
    }

    /// Ends every fault: no loss, normal latency, every link healthy, every replica running.
    fn heal(&mut self, sim: &mut turmoil::Sim<'_>) {
        self.stop_fired(sim);
        for r in std::mem::take(&mut self.armed).into_keys() {
            self.disk.disarm(&database_name(r));
        }
        sim.set_fail_rate(0.0);
        self.lossy = false;
        sim.set_max_message_latency(LATENCY_MAX);
        self.repair(sim);
        for r in std::mem::take(&mut self.crashed) {
            sim.bounce(replica_host(r));
        }
        self.log.push(format!(
            "{:>8.3}s heal everything",
            sim.elapsed().as_secs_f64()
        ));
    }
}

// ---------------------------------------------------------------- what the replicas log

/// Counts the replicas' log events by message (snapshots sent, leader changes) and keeps
/// every error, so a run shows which paths it took and a stopped driver fails it. Installed
/// for the simulation's thread only: turmoil runs every host there.
#[derive(Default)]
struct EventCounter {
    events: Shared<Events>,
}

#[derive(Default)]
struct Events {
    counts: BTreeMap<String, u64>,
    errors: Vec<String>,
}

/// Collects an event's message and its other fields.
#[derive(Default)]
struct EventFields {
    message: String,
    fields: Vec<String>,
}

impl tracing::field::Visit for EventFields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.message = format!("{value:?}");
        } else {
            self.fields.push(format!("{}={value:?}", field.name()));
        }
    }
}

impl tracing::Subscriber for EventCounter {
    fn enabled(&self, metadata: &tracing::Metadata<'_>) -> bool {
        metadata.target().starts_with("tally_county") && *metadata.level() <= tracing::Level::INFO
    }

    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }

    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}

    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}

    fn event(&self, event: &tracing::Event<'_>) {
        let mut fields = EventFields::default();
        event.record(&mut fields);
        let mut events = self.events.lock().unwrap();
        let key = if fields.message == "sent a snapshot" {
            let delivered = fields.fields.iter().any(|f| f == "delivered=true");
            format!("sent a snapshot (delivered: {delivered})")
        } else {
            fields.message.clone()
        };
        *events.counts.entry(key).or_default() += 1;
        let text = format!("{} {}", fields.message, fields.fields.join(" "));
        // A replica whose power went during an fsync sees the fsync fail and stops its driver
        // before its host is stopped: that error is the power cut, expected.
        if *event.metadata().level() == tracing::Level::ERROR && !text.contains(POWER_CUT_MARKER) {
            events.errors.push(text);
        }
    }

    fn enter(&self, _: &tracing::span::Id) {}

    fn exit(&self, _: &tracing::span::Id) {}
}

// ---------------------------------------------------------------- one run

struct Summary {
    sheets: u64,
    /// Sheets recorded by an attempt whose answer was lost (a later attempt said DUPLICATE).
    answer_lost: u64,
    duplicates: u64,
    resent_batches: u64,
    retried: BTreeMap<String, u64>,
    retry_samples: BTreeMap<String, String>,
    answer_lost_notes: Vec<String>,
    faults: usize,
    /// The replicas' log events by message.
    events: BTreeMap<String, u64>,
    simulated: Duration,
    applied_index: u64,
    term: u64,
    /// What the stops did to the replicas' disks.
    stops: StopFigures,
}

/// How replicas were stopped in a run (or a sweep), and what power cuts did to their disks.
#[derive(Debug, Default, Clone, Copy)]
struct StopFigures {
    clean_stops: u64,
    kills: u64,
    power_cuts: u64,
    /// Of those, cuts during an fsync (after the commit's writes, before they were synced).
    cuts_during_fsync: u64,
    /// Power cuts that lost every unsynced write, kept an in-order prefix ending in a torn
    /// write, or kept any subset.
    cuts_lose_all: u64,
    cuts_torn_prefix: u64,
    cuts_any_subset: u64,
    /// Unsynced writes at the cuts; of those, kept whole and torn.
    unsynced_writes: u64,
    kept_whole: u64,
    torn_writes: u64,
    /// Starts after a power cut that recovered, and that refused to open the database.
    recoveries: u64,
    refusals: u64,
}

impl StopFigures {
    fn add(&mut self, other: &StopFigures) {
        self.clean_stops += other.clean_stops;
        self.kills += other.kills;
        self.power_cuts += other.power_cuts;
        self.cuts_during_fsync += other.cuts_during_fsync;
        self.cuts_lose_all += other.cuts_lose_all;
        self.cuts_torn_prefix += other.cuts_torn_prefix;
        self.cuts_any_subset += other.cuts_any_subset;
        self.unsynced_writes += other.unsynced_writes;
        self.kept_whole += other.kept_whole;
        self.torn_writes += other.torn_writes;
        self.recoveries += other.recoveries;
        self.refusals += other.refusals;
    }
}

impl std::fmt::Display for StopFigures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} clean stops, {} kills, {} power cuts ({} during an fsync; {} lost every unsynced write, {} kept a torn prefix, {} kept any subset; {} unsynced writes: {} kept whole, {} torn), {} recoveries and {} refusals after a power cut",
            self.clean_stops,
            self.kills,
            self.power_cuts,
            self.cuts_during_fsync,
            self.cuts_lose_all,
            self.cuts_torn_prefix,
            self.cuts_any_subset,
            self.unsynced_writes,
            self.kept_whole,
            self.torn_writes,
            self.recoveries,
            self.refusals
        )
    }
}

fn simulate(
    replica_count: u64,
    seed: u64,
    log: &mut Vec<String>,
    stops: &mut StopFigures,
) -> Result<Summary, String> {
    let fixture = fixture();
    let events: Shared<Events> = Arc::default();
    let _counting = tracing::subscriber::set_default(EventCounter {
        events: events.clone(),
    });
    let root = tempfile::tempdir().map_err(|e| e.to_string())?;
    let pki = root.path().join("pki");
    let replicas: Vec<u64> = (1..=replica_count).collect();
    let townships: Vec<String> = fixture.by_township.keys().cloned().collect();
    tally_net::write_dev_pki(
        &pki,
        "模拟县",
        &replicas,
        &townships,
        &[OPERATOR.to_owned()],
        &replicas
            .iter()
            .map(|&id| replica_host(id))
            .collect::<Vec<_>>(),
    )
    .map_err(|e| format!("writing the PKI: {e}"))?;

    let mut sim = turmoil::Builder::new()
        .rng_seed(seed)
        .simulation_duration(SIM_DURATION_MAX)
        .tick_duration(SIM_STEP)
        .min_message_latency(LATENCY_MIN)
        .max_message_latency(LATENCY_MAX)
        .repair_rate(LOSS_REPAIR_RATE)
        .build();

    let registry: Registry = Arc::default();
    let journal: Shared<Journal> = Arc::default();
    let disk = Disk::default();
    let power: Shared<PowerJournal> = Arc::default();
    let peers: BTreeMap<u64, String> = replicas
        .iter()
        .map(|&id| (id, format!("{}:{PORT}", replica_host(id))))
        .collect();
    for &id in &replicas {
        let host = ReplicaHost {
            id,
            data_dir: data_dir(root.path(), id),
            pki: pki.clone(),
            definition: fixture.definition.clone(),
            voters: replicas.clone(),
            peers: peers.clone(),
            registry: registry.clone(),
            disk: disk.clone(),
            power: power.clone(),
        };
        sim.host(replica_host(id), move || run_replica(host.clone()));
    }
    let mut expected: BTreeSet<[u8; 32]> = BTreeSet::new();
    for (township, sheets) in &fixture.by_township {
        expected.extend(sheets.iter().map(SignedSheet::digest));
        sim.client(
            township_host(township),
            run_township(TownshipClient {
                seed,
                township: township.clone(),
                sheets: sheets.clone(),
                key: fixture.township_keys[township].clone(),
                election: fixture.definition.election.clone(),
                definition_digest: tally_core::canonical::digest(&fixture.definition).to_string(),
                pki: pki.clone(),
                replicas: replicas.clone(),
                journal: journal.clone(),
            }),
        );
    }
    sim.client(
        COMMITTEE_HOST,
        run_committee(seed, pki.clone(), replicas.clone(), journal.clone()),
    );
    sim.client(
        CHECKER_HOST,
        run_checker(Checker {
            townships: townships.len(),
            replicas: replicas.clone(),
            expected_sheets: expected.len() as u64,
            pki: pki.clone(),
            registry: registry.clone(),
            journal: journal.clone(),
        }),
    );

    let clients: Vec<String> = townships.iter().map(|t| township_host(t)).collect();
    let mut faults = Faults::new(
        seed,
        &replicas,
        &clients,
        registry.clone(),
        disk,
        power.clone(),
    );
    let mut healed = false;
    let outcome = loop {
        if sim.elapsed() < FAULT_PHASE {
            faults.step(&mut sim);
        } else if !healed {
            faults.heal(&mut sim);
            journal.lock().unwrap().healed = true;
            healed = true;
        }
        match sim.step() {
            Ok(true) => break Ok(()),
            Ok(false) => {}
            Err(e) => break Err(format!("{e}")),
        }
    };
    log.append(&mut faults.log);
    let simulated = sim.elapsed();
    // The hosts' runtimes (and with them the databases) close before the data goes.
    drop(sim);
    *stops = faults.stops;
    {
        let power = power.lock().unwrap();
        stops.recoveries = power.recoveries;
        stops.refusals = power.refusals.len() as u64;
        if !power.refusals.is_empty() {
            // A refusal is the safe outcome, but redb promises to recover from any power cut
            // this disk makes, so it is a bug to report (an operator would rebuild the
            // replica from its peers under a new id).
            return Err(format!(
                "a replica refused to start:\n  {}",
                power.refusals.join("\n  ")
            ));
        }
    }
    outcome?;
    let events = std::mem::take(&mut *events.lock().unwrap());
    if !events.errors.is_empty() {
        return Err(format!(
            "replicas logged errors:\n  {}",
            events.errors.join("\n  ")
        ));
    }

    let journal = journal.lock().unwrap();
    if !journal.violations.is_empty() {
        return Err(format!(
            "clients saw broken promises:\n  {}",
            journal.violations.join("\n  ")
        ));
    }
    let acknowledged: BTreeSet<[u8; 32]> = journal.accepted.keys().copied().collect();
    let views = journal
        .settled
        .as_ref()
        .ok_or("the checker recorded no state")?;
    for view in views {
        let recorded: BTreeSet<[u8; 32]> = view.digests.iter().copied().collect();
        if recorded.len() != view.digests.len() {
            return Err(format!(
                "replica {} recorded {} sheets but only {} distinct ones",
                view.id,
                view.digests.len(),
                recorded.len()
            ));
        }
        if let Some(missing) = acknowledged.difference(&recorded).next() {
            return Err(format!(
                "replica {} lacks sheet {} that was answered ACCEPTED",
                view.id,
                hex::encode(missing)
            ));
        }
        if recorded != expected {
            return Err(format!(
                "replica {} recorded {} sheets; {} were submitted",
                view.id,
                recorded.len(),
                expected.len()
            ));
        }
    }
    let first = &views[0];
    for view in &views[1..] {
        if view.applied_index != first.applied_index
            || view.fingerprint != first.fingerprint
            || view.chain != first.chain
        {
            return Err(format!(
                "replicas disagree: replica {} at {} has state {} and chain {:?}; replica {} at {} has state {} and chain {:?}",
                first.id,
                first.applied_index,
                hex::encode(first.fingerprint),
                first.chain,
                view.id,
                view.applied_index,
                hex::encode(view.fingerprint),
                view.chain
            ));
        }
    }
    let amendment_ids: Vec<String> = fixture
        .amendments
        .iter()
        .map(|(id, _)| id.clone())
        .collect();
    for view in views {
        if view.amendments != amendment_ids {
            return Err(format!(
                "replica {} holds amendments {:?}; {:?} were proposed",
                view.id, view.amendments, amendment_ids
            ));
        }
        let offline = replay_offline(&view.records)
            .map_err(|e| format!("replica {}'s record does not replay: {e}", view.id))?;
        if offline != view.result {
            return Err(format!(
                "replica {}'s results are not those of an offline replay of its record",
                view.id
            ));
        }
    }
    let (head, length, log_index) = journal
        .results
        .as_ref()
        .ok_or("the checker recorded no Results answer")?;
    if head.as_slice() != first.chain.head
        || *length != first.chain.length
        || *log_index < first.applied_index
    {
        return Err(format!(
            "Results answered chain {} of length {length} at index {log_index}; the replicas hold {} of length {} at index {}",
            hex::encode(head),
            hex::encode(first.chain.head),
            first.chain.length,
            first.applied_index
        ));
    }
    Ok(Summary {
        sheets: expected.len() as u64,
        answer_lost: (expected.len() - acknowledged.len()) as u64,
        duplicates: journal.duplicates,
        resent_batches: journal.resent_batches,
        retried: journal.retried.clone(),
        retry_samples: journal.retry_samples.clone(),
        answer_lost_notes: journal.answer_lost_notes.clone(),
        faults: log.len(),
        events: events.counts,
        simulated,
        applied_index: first.applied_index,
        term: views.iter().map(|v| v.term).max().unwrap_or(0),
        stops: *stops,
    })
}

/// Runs each seed (or those `TALLY_SIM_SEED` / `TALLY_SIM_SEEDS` choose), then fails naming
/// every seed that failed. `TALLY_SIM_SEED` is one seed (`7`) or an inclusive range to sweep
/// (`1000-1099`); `TALLY_SIM_SEEDS=N` runs N consecutive seeds from the first of `seeds`.
fn run_seeds(replica_count: u64, seeds: &[u64]) {
    let seeds: Vec<u64> = match (
        std::env::var("TALLY_SIM_SEED"),
        std::env::var("TALLY_SIM_SEEDS"),
    ) {
        (Ok(chosen), _) => {
            let number = |s: &str| {
                s.trim().parse::<u64>().unwrap_or_else(|_| {
                    panic!("TALLY_SIM_SEED={chosen}: give a seed (7) or a range (1000-1099)")
                })
            };
            match chosen.split_once('-') {
                Some((first, last)) => (number(first)..=number(last)).collect(),
                None => vec![number(&chosen)],
            }
        }
        (Err(_), Ok(count)) => {
            let count: u64 = count.trim().parse().unwrap_or_else(|_| {
                panic!("TALLY_SIM_SEEDS={count}: give how many seeds to run (2000)")
            });
            (seeds[0]..seeds[0] + count).collect()
        }
        (Err(_), Err(_)) => seeds.to_vec(),
    };
    let only_one = seeds.len() == 1;
    let sweep_started = Instant::now();
    let mut totals = StopFigures::default();
    let mut failures: Vec<String> = Vec::new();
    let seed_count = seeds.len();
    for seed in seeds {
        let started = Instant::now();
        let mut log = Vec::new();
        let mut stops = StopFigures::default();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            simulate(replica_count, seed, &mut log, &mut stops)
        }));
        totals.add(&stops);
        let failure = match result {
            Ok(Ok(summary)) => {
                println!(
                    "seed {seed}, {replica_count} replicas: {} sheets recorded exactly once at index {} (term {}) after {} faults; {} answered DUPLICATE ({} whose ACCEPTED was lost), {} batches sent again on purpose, retried {:?}; {} leader changes seen, {} snapshots delivered; {}; {:.1} s simulated in {:.1} s",
                    summary.sheets,
                    summary.applied_index,
                    summary.term,
                    summary.faults,
                    summary.duplicates,
                    summary.answer_lost,
                    summary.resent_batches,
                    summary.retried,
                    summary.events.get("leader changed").copied().unwrap_or(0),
                    summary
                        .events
                        .get("sent a snapshot (delivered: true)")
                        .copied()
                        .unwrap_or(0),
                    summary.stops,
                    summary.simulated.as_secs_f64(),
                    started.elapsed().as_secs_f64()
                );
                if only_one {
                    println!("faults:\n{}", log.join("\n"));
                    for (code, message) in &summary.retry_samples {
                        println!("first {code}: {message}");
                    }
                    for note in &summary.answer_lost_notes {
                        println!("answer lost: {note}");
                    }
                    for (message, count) in &summary.events {
                        println!("logged {count}× {message}");
                    }
                }
                continue;
            }
            Ok(Err(message)) => message,
            Err(panic) => panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "a panic".to_owned()),
        };
        let failure = format!(
            "simulation seed {seed} failed ({replica_count} replicas; replay with TALLY_SIM_SEED={seed}): {failure}\nfaults:\n{}",
            log.join("\n")
        );
        println!("{failure}");
        failures.push(failure);
    }
    println!(
        "sweep of {seed_count} seeds with {replica_count} replicas: {} failed; {totals}; {:.0} s",
        failures.len(),
        sweep_started.elapsed().as_secs_f64()
    );
    assert!(
        failures.is_empty(),
        "{} of {seed_count} seeds failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn three_replicas_record_every_sheet_once_through_faults() {
    // Goal: under partitions, message loss, crashes and restarts, a 3-replica cluster answers
    // no sheet ACCEPTED twice, loses no acknowledged sheet, and ends with identical replicas.
    // Method: turmoil runs 3 networked replicas and 2 township clients that retry; a seeded
    // schedule injects faults for 20 s, then everything heals and the replicas are compared.
    run_seeds(3, SEEDS_THREE);
}

#[test]
fn five_replicas_record_every_sheet_once_through_faults() {
    // Goal: the same promises hold with 5 replicas, where two may be down at once.
    // Method: as for 3 replicas, with a 5-replica cluster and its own seeds.
    run_seeds(5, SEEDS_FIVE);
}

// ---------------------------------------------------------------- helpers

/// Uniform in `low..=high`.
fn range(rng: &mut Rng, low: u64, high: u64) -> u64 {
    low + rng.next() % (high - low + 1)
}

/// True with a chance of `per_mille` in a thousand.
fn chance(rng: &mut Rng, per_mille: u64) -> bool {
    rng.next() % 1000 < per_mille
}

fn pick<'a, T>(rng: &mut Rng, items: &'a [T]) -> &'a T {
    &items[(rng.next() % items.len() as u64) as usize]
}

fn data_dir(root: &Path, id: u64) -> PathBuf {
    root.join(format!("data-{id}"))
}

/// A stable hash of a name, to give each client its own random stream.
fn fnv(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}
