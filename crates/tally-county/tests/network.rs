//! Networked cluster tests: real replicas, each in a tokio runtime of its own with its own redb
//! database, serving tally.v1 over mutual TLS on 127.0.0.1, driven by clients the way a
//! township's aggregator and an operator drive them (certificates of a dev PKI per test).
//!
//! A crash drops the replica's runtime, and with it every task it ran (its driver, its server,
//! its raft links) and its open database, as a killed process would; a restart opens the same
//! data directory on the same port. Waits poll the replicas' Status with a deadline and panic
//! with the last statuses seen, so a stuck cluster fails with a message instead of hanging.
//!
//! Every scenario ends with the same checks (`Cluster::check_end`): each sheet the cluster
//! acknowledged is recorded exactly once on every member and nothing else is, every member
//! reports the same chain head at the same applied index, and every member's Results equal
//! the offline computation (`tally_core::results::compute`) over the acknowledged sheets.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use ed25519_dalek::SigningKey;
use tally_core::definition::Definition;
use tally_core::ids::{TownshipId, UnitId};
use tally_core::ledger::Ledger;
use tally_core::results::{ElectionResult, Person};
use tally_core::sheet::TallySheet;
use tally_county::node::NodeHandle;
use tally_county::server::{self, COUNTY_SERVICE_NAME, ReplicaSetup};
use tally_county::service::contest_status_name;
use tally_county::transport::TlsDialer;
use tally_county::{LogIndex, ReplicaId};
use tally_net::{Identity, Role, TlsFiles};
use tally_proto::SignedSheet;
use tally_rpc::pb;
use tally_rpc::pb::admin_client::AdminClient;
use tally_rpc::pb::county_client::CountyClient;
use tally_rpc::pb::raft_client::RaftClient;
use tally_rpc::pb::sheet_outcome::Kind;
use tally_synth::GenParams;
use tokio::runtime::Runtime;
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

const CLUSTER_ID: &str = "network-test";
/// A short raft tick, so an election takes 0.2 to 0.4 s (10 to 20 ticks).
const TICK: Duration = Duration::from_millis(20);
/// The longest any wait for a condition of the cluster may take before the test fails.
const WAIT_MAX: Duration = Duration::from_secs(20);
/// Pause between two polls of a condition.
const POLL_INTERVAL: Duration = Duration::from_millis(25);
/// A client's bound on one call: longer than the server's own write deadline (10 s), so the
/// server's answer (DEADLINE_EXCEEDED with advice) arrives before the client gives up.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a client keeps sending one batch again after transient errors.
const RETRY_DEADLINE: Duration = Duration::from_secs(30);
/// Pause before a client sends a batch again after a transient error.
const RETRY_PAUSE: Duration = Duration::from_millis(50);
/// How long a test watches a condition that must keep holding (nothing to wait for).
const HOLD: Duration = Duration::from_secs(2);
/// The most sheets a test puts in one ingest batch.
const BATCH_SHEETS_MAX: usize = 256;
/// Results carry the whole result as JSON; more than tonic's default 4 MiB is allowed.
const RESPONSE_BYTES_MAX: usize = 64 << 20;
/// The production default: the log is not compacted in these tests.
const COMPACT_AFTER_ENTRIES_DEFAULT: u64 = 10_000;
/// The least the config allows: the log is compacted every 100 applied entries.
const COMPACT_AFTER_ENTRIES_SMALL: u64 = 100;
/// Replica ids the test PKI has certificates for.
const REPLICAS_CERTIFIED: [u64; 6] = [1, 2, 3, 4, 5, 6];
const OPERATOR: &str = "alice";

// ---------------------------------------------------------------- the sample county

/// One sheet of the sample county: its township, the sheet, and the envelope its unit signed.
struct Sheet {
    township: TownshipId,
    sheet: TallySheet,
    signed: SignedSheet,
}

struct Fixture {
    county_name: String,
    definition: Arc<Definition>,
    /// Every sheet of the sample county, in the generator's arrival order.
    sheets: Vec<Sheet>,
    township_keys: BTreeMap<TownshipId, SigningKey>,
    unit_keys: HashMap<UnitId, SigningKey>,
}

/// The sample county (18 townships, about 1,400 sheets), generated and signed once per run.
fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let params = GenParams::sample();
        let generated = tally_synth::generate(&params).expect("the sample parameters are valid");
        let definition =
            Arc::new(tally_synth::definition(&generated).expect("the sample definition loads"));
        let signed = tally_synth::sign_all(&generated);
        let sheets = generated
            .sheets
            .iter()
            .zip(signed)
            .map(|(sheet, signed)| Sheet {
                township: definition
                    .unit(&sheet.unit)
                    .expect("every generated sheet's unit is defined")
                    .township
                    .clone(),
                sheet: sheet.clone(),
                signed,
            })
            .collect();
        Fixture {
            county_name: params.county_name,
            definition,
            sheets,
            township_keys: generated.township_keys.iter().cloned().collect(),
            unit_keys: generated
                .units
                .iter()
                .map(|u| (u.id.clone(), u.key.clone()))
                .collect(),
        }
    })
}

/// What a township's aggregator sends in one call: sheets of its own units.
#[derive(Clone)]
struct Batch {
    township: TownshipId,
    sheets: Vec<SignedSheet>,
}

impl Batch {
    /// The request, countersigned with the township's key over the sheets as sent.
    fn request(&self) -> pb::IngestRequest {
        let key = &fixture().township_keys[&self.township];
        request(&self.township, &self.sheets, key)
    }
}

fn request(township: &TownshipId, sheets: &[SignedSheet], key: &SigningKey) -> pb::IngestRequest {
    pb::IngestRequest {
        township_id: township.to_string(),
        sheets: sheets.iter().map(SignedSheet::to_pb).collect(),
        countersignature: Some(
            tally_proto::countersign(&fixture().definition.election, township, sheets, key).to_pb(),
        ),
        definition_digest: tally_core::canonical::digest(&fixture().definition).to_string(),
    }
}

/// Splits sheets per township, keeping their order, into batches of at most `size`.
fn batches<'a>(sheets: impl IntoIterator<Item = &'a Sheet>, size: usize) -> Vec<Batch> {
    let mut per_township: BTreeMap<TownshipId, Vec<SignedSheet>> = BTreeMap::new();
    for sheet in sheets {
        per_township
            .entry(sheet.township.clone())
            .or_default()
            .push(sheet.signed.clone());
    }
    per_township
        .into_iter()
        .flat_map(|(township, list)| {
            list.chunks(size)
                .map(|chunk| Batch {
                    township: township.clone(),
                    sheets: chunk.to_vec(),
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

fn operator() -> Identity {
    Identity::new(Role::Operator, OPERATOR).expect("a valid operator name")
}

fn township_identity(township: &TownshipId) -> Identity {
    Identity::new(Role::Township, township.as_str()).expect("a valid township id")
}

fn kind(outcome: &pb::SheetOutcome) -> Kind {
    Kind::try_from(outcome.kind).unwrap_or(Kind::Unspecified)
}

/// Errors after which a client sends the same batch again, to the next replica: the replica
/// was down or lost its leader (UNAVAILABLE), the write's outcome is unknown
/// (DEADLINE_EXCEEDED), or the connection broke under the call (tonic reports a connection
/// reset mid-call as CANCELLED or UNKNOWN, and the client's own timeout as CANCELLED).
fn transient(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown
    )
}

fn short(head: &[u8]) -> String {
    hex::encode(&head[..head.len().min(4)])
}

/// One line per replica status, for failure messages.
fn describe(statuses: &[Result<pb::StatusResponse, String>]) -> String {
    statuses
        .iter()
        .map(|s| match s {
            Ok(s) => format!(
                "[replica {} {} term {} leader {} applied {} commit {} first {} last {} chain {}@{} voters {:?} learners {:?} peers {:?}]",
                s.replica_id,
                s.role,
                s.term,
                s.leader_id,
                s.applied_index,
                s.commit_index,
                s.first_index,
                s.last_index,
                short(&s.chain_head),
                s.chain_length,
                s.voters,
                s.learners,
                s.peers
                    .iter()
                    .map(|p| format!(
                        "{}:match {} lag {} {} heard {} ms ago{}",
                        p.replica_id,
                        p.match_index,
                        p.lag,
                        p.state,
                        p.last_heard_ms,
                        if p.reachable { "" } else { " unreachable" }
                    ))
                    .collect::<Vec<_>>()
            ),
            Err(e) => format!("[{e}]"),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Polls `probe` until it gives a value, or panics after [`WAIT_MAX`] with what it last said.
async fn poll<T>(what: &str, mut probe: impl AsyncFnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + WAIT_MAX;
    loop {
        match probe().await {
            Ok(value) => return value,
            Err(last) if Instant::now() >= deadline => {
                panic!("gave up after {WAIT_MAX:?} waiting for {what}; last seen: {last}")
            }
            Err(_) => tokio::time::sleep(POLL_INTERVAL).await,
        }
    }
}

/// Makes a call again while it fails with UNAVAILABLE (no leader known right now, or a leader
/// change dropped it), as an operator's tool would; returns any other answer.
async fn while_unavailable<T>(
    what: &str,
    mut call: impl AsyncFnMut() -> Result<tonic::Response<T>, Status>,
) -> Result<T, Status> {
    let deadline = Instant::now() + WAIT_MAX;
    loop {
        match call().await {
            Err(status) if status.code() == Code::Unavailable => {
                if Instant::now() >= deadline {
                    panic!("{what}: still UNAVAILABLE after {WAIT_MAX:?}: {status:?}");
                }
                tokio::time::sleep(RETRY_PAUSE).await;
            }
            other => return other.map(tonic::Response::into_inner),
        }
    }
}

/// Checks that `probe` holds on every poll for `duration`: for what must *not* happen.
async fn hold(what: &str, duration: Duration, mut probe: impl AsyncFnMut() -> Result<(), String>) {
    let end = Instant::now() + duration;
    while Instant::now() < end {
        if let Err(seen) = probe().await {
            panic!("{what} stopped holding: {seen}");
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

// ---------------------------------------------------------------- acknowledgements

/// What the cluster told the clients about the sheets they sent.
#[derive(Default)]
struct Journal {
    /// Every sheet the cluster said it holds (accepted, superseded, conflict, or duplicate of
    /// an earlier send whose answer was lost), once each, in the order the answers came.
    recorded: Vec<SignedSheet>,
    digests: HashSet<[u8; 32]>,
    duplicates: usize,
    conflicts: usize,
    refused: usize,
    /// Calls that failed with a transient error and were sent again.
    transient_errors: Vec<String>,
}

impl Journal {
    fn note(&mut self, sheets: &[SignedSheet], response: &pb::IngestResponse) {
        assert_eq!(
            response.outcomes.len(),
            sheets.len(),
            "an ingest answer has one outcome per sheet"
        );
        for (signed, outcome) in sheets.iter().zip(&response.outcomes) {
            assert_eq!(
                outcome.digest,
                hex::encode(signed.digest()),
                "outcomes come in the order of the request's sheets"
            );
            match kind(outcome) {
                Kind::Accepted | Kind::Superseded => {}
                Kind::Duplicate => self.duplicates += 1,
                Kind::Conflict => self.conflicts += 1,
                Kind::Refused => {
                    self.refused += 1;
                    continue;
                }
                Kind::Unspecified => panic!("an outcome without a kind: {outcome:?}"),
            }
            if self.digests.insert(signed.digest()) {
                self.recorded.push(signed.clone());
            }
        }
    }
}

/// The offline computation: a ledger fed the given sheets, verified, in this order.
fn offline(sheets: &[SignedSheet]) -> (Ledger, ElectionResult) {
    let definition = &fixture().definition;
    let mut ledger = Ledger::new();
    for signed in sheets {
        let verified = tally_proto::verify(definition, signed).expect("a recorded sheet verifies");
        ledger.submit(verified.sheet, verified.digest);
    }
    let result = tally_core::results::compute(definition, &ledger);
    (ledger, result)
}

/// Each candidate's votes in a contest's latest round, by candidate id, from a computed result.
fn offline_votes(result: &ElectionResult, contest: &str) -> BTreeMap<String, u64> {
    let contest = result
        .contests
        .iter()
        .find(|c| c.contest.as_str() == contest)
        .expect("the contest is in the result");
    let round = contest.rounds.last().expect("round 1 is always there");
    round
        .votes
        .iter()
        .filter_map(|v| match &v.person {
            Person::Candidate(id) => Some((id.to_string(), v.votes)),
            Person::WriteIn(_) => None,
        })
        .collect()
}

/// The same, from a Results answer.
fn served_votes(results: &pb::ResultsResponse, contest: &str) -> BTreeMap<String, u64> {
    results
        .contests
        .iter()
        .find(|c| c.contest_id == contest)
        .expect("the contest is in the results")
        .votes
        .iter()
        .filter(|v| !v.candidate_id.is_empty())
        .map(|v| (v.candidate_id.clone(), v.votes))
        .collect()
}

// ---------------------------------------------------------------- the cluster

/// A replica that runs: its runtime (dropping it is the crash) and its handle.
struct Running {
    runtime: Option<Runtime>,
    node: NodeHandle,
    /// Whether this start founded a cluster in its data directory.
    founded: bool,
}

impl Drop for Running {
    fn drop(&mut self) {
        // The test's own runtime may not block; replicas still running when a test ends are
        // left to stop in the background.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

struct Cluster {
    /// Holds the PKI and every replica's data directory.
    root: tempfile::TempDir,
    pki: PathBuf,
    initial_voters: Vec<u64>,
    compact_after_entries: u64,
    /// Every replica's address, known before any starts.
    addresses: Mutex<BTreeMap<u64, String>>,
    /// Listeners bound for replicas not yet started.
    listeners: Mutex<BTreeMap<u64, std::net::TcpListener>>,
    running: Mutex<BTreeMap<u64, Running>>,
    /// Client channels by (address, client identity); they reconnect by themselves.
    channels: Mutex<HashMap<(String, String), Channel>>,
    journal: Mutex<Journal>,
    /// The raft tick of every replica: [`TICK`] unless a test needs the production one.
    tick: Duration,
}

impl Cluster {
    /// Founds a cluster of `voters` and starts each of them.
    async fn start(voters: &[u64], compact_after_entries: u64) -> Cluster {
        Self::start_with_tick(voters, compact_after_entries, TICK).await
    }

    /// [`Cluster::start`] with raft ticks of `tick`.
    async fn start_with_tick(
        voters: &[u64],
        compact_after_entries: u64,
        tick: Duration,
    ) -> Cluster {
        let f = fixture();
        let root = tempfile::tempdir().expect("a temp dir");
        let pki = root.path().join("pki");
        let townships: Vec<String> = f.township_keys.keys().map(|t| t.to_string()).collect();
        tally_net::write_dev_pki(
            &pki,
            &f.county_name,
            &REPLICAS_CERTIFIED,
            &townships,
            &[OPERATOR.into()],
            &["127.0.0.1".into(), "localhost".into()],
        )
        .expect("the dev PKI is written");
        let cluster = Cluster {
            root,
            pki,
            initial_voters: voters.to_vec(),
            compact_after_entries,
            addresses: Mutex::new(BTreeMap::new()),
            listeners: Mutex::new(BTreeMap::new()),
            running: Mutex::new(BTreeMap::new()),
            channels: Mutex::new(HashMap::new()),
            journal: Mutex::new(Journal::default()),
            tick,
        };
        // Every port is known before any replica starts, so each has the whole peers map.
        for &id in voters {
            cluster.reserve(id);
        }
        for &id in voters {
            cluster.launch(id).await;
        }
        cluster
    }

    /// Binds a listener for replica `id` on a free port; returns its address.
    fn reserve(&self, id: u64) -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        let address = listener.local_addr().expect("a bound address").to_string();
        self.addresses.lock().unwrap().insert(id, address.clone());
        self.listeners.lock().unwrap().insert(id, listener);
        address
    }

    fn address(&self, id: u64) -> String {
        self.addresses.lock().unwrap()[&id].clone()
    }

    fn data_dir(&self, id: u64) -> PathBuf {
        self.root.path().join(format!("replica-{id}"))
    }

    /// Starts replica `id` on its address, retrying while its port or its database are still
    /// held by the replica that ran there before.
    async fn launch(&self, id: u64) -> bool {
        let deadline = Instant::now() + WAIT_MAX;
        loop {
            match self.try_launch(id) {
                Ok(running) => {
                    let founded = running.founded;
                    self.running.lock().unwrap().insert(id, running);
                    return founded;
                }
                Err(e) if Instant::now() >= deadline => {
                    panic!("replica {id} did not start within {WAIT_MAX:?}: {e}")
                }
                Err(_) => tokio::time::sleep(RETRY_PAUSE).await,
            }
        }
    }

    fn try_launch(&self, id: u64) -> Result<Running, String> {
        let address = self.address(id);
        let reserved = self.listeners.lock().unwrap().remove(&id);
        let listener = match reserved {
            Some(listener) => listener,
            None => {
                std::net::TcpListener::bind(&address).map_err(|e| format!("bind {address}: {e}"))?
            }
        };
        listener
            .set_nonblocking(true)
            .map_err(|e| format!("nonblocking: {e}"))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(format!("replica-{id}"))
            .enable_all()
            .build()
            .map_err(|e| format!("runtime: {e}"))?;
        let started = {
            let _inside = runtime.enter();
            self.serve(id, listener)
        };
        match started {
            Ok((node, founded)) => Ok(Running {
                runtime: Some(runtime),
                node,
                founded,
            }),
            Err(e) => {
                runtime.shutdown_background();
                Err(e)
            }
        }
    }

    /// Opens replica `id` and serves it on `listener`; runs inside the replica's runtime.
    fn serve(
        &self,
        id: u64,
        listener: std::net::TcpListener,
    ) -> Result<(NodeHandle, bool), String> {
        let identity = Identity::replica(id).expect("a valid replica id");
        let tls_files = TlsFiles::in_dir(&self.pki, &identity);
        let data_dir = self.data_dir(id);
        std::fs::create_dir_all(&data_dir).map_err(|e| format!("data dir: {e}"))?;
        let opened = server::open(ReplicaSetup {
            cluster_id: CLUSTER_ID.into(),
            replica_id: ReplicaId::new(id),
            data_dir,
            definition: fixture().definition.clone(),
            initial_voters: self
                .initial_voters
                .iter()
                .copied()
                .map(ReplicaId::new)
                .collect(),
            peers: self
                .addresses
                .lock()
                .unwrap()
                .iter()
                .map(|(id, address)| (ReplicaId::new(*id), address.clone()))
                .collect(),
            tick: self.tick,
            compact_after_entries: self.compact_after_entries,
            dialer: Arc::new(TlsDialer::new(&tls_files).map_err(|e| e.to_string())?),
        })
        .map_err(|e| e.to_string())?;
        let (tls, _) = tls_files.server_tls().map_err(|e| e.to_string())?;
        let builder = tonic::transport::Server::builder()
            .tls_config(tls)
            .map_err(|e| e.to_string())?;
        let node = opened.node.clone();
        let router = server::router(builder, opened.shared);
        let listener =
            tokio::net::TcpListener::from_std(listener).map_err(|e| format!("listener: {e}"))?;
        tokio::spawn(async move {
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
            if let Err(e) = router.serve_with_incoming(incoming).await {
                eprintln!("replica {id}: the server ended: {e}");
            }
        });
        Ok((node, opened.founded))
    }

    /// Kills replica `id`: its runtime is dropped with every task, connection and the open
    /// database, as a killed process would lose them.
    async fn crash(&self, id: u64) {
        let mut running = self
            .running
            .lock()
            .unwrap()
            .remove(&id)
            .unwrap_or_else(|| panic!("replica {id} is not running"));
        let runtime = running
            .runtime
            .take()
            .expect("a running replica has its runtime");
        // Dropping a runtime blocks until its workers have stopped, which the test's own
        // runtime may not do on its thread.
        let stopped = tokio::task::spawn_blocking(move || drop(runtime));
        tokio::time::timeout(WAIT_MAX, stopped)
            .await
            .unwrap_or_else(|_| panic!("replica {id} did not stop within {WAIT_MAX:?}"))
            .expect("a runtime stops");
    }

    fn node(&self, id: u64) -> NodeHandle {
        self.running.lock().unwrap()[&id].node.clone()
    }

    fn channel(&self, to: u64, who: &Identity) -> Channel {
        let address = self.address(to);
        let mut channels = self.channels.lock().unwrap();
        channels
            .entry((address.clone(), who.file_stem()))
            .or_insert_with(|| {
                let (tls, _) = TlsFiles::in_dir(&self.pki, who)
                    .client_tls("127.0.0.1")
                    .expect("the test PKI has this identity");
                Endpoint::from_shared(format!("https://{address}"))
                    .expect("host:port")
                    .tls_config(tls)
                    .expect("a client TLS config")
                    .connect_timeout(CONNECT_TIMEOUT)
                    .timeout(CALL_TIMEOUT)
                    .connect_lazy()
            })
            .clone()
    }

    fn county(&self, to: u64, who: &Identity) -> CountyClient<Channel> {
        CountyClient::new(self.channel(to, who)).max_decoding_message_size(RESPONSE_BYTES_MAX)
    }

    fn admin(&self, to: u64, who: &Identity) -> AdminClient<Channel> {
        AdminClient::new(self.channel(to, who))
    }

    async fn status(&self, id: u64) -> Result<pb::StatusResponse, String> {
        self.county(id, &operator())
            .status(pb::StatusRequest {})
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| format!("replica {id}: {:?}: {}", s.code(), s.message()))
    }

    /// A linearizable Results read of the whole county from replica `id`, read again after a
    /// transient error (a leader change drops a pending read; the replica says UNAVAILABLE).
    async fn results(&self, id: u64) -> pb::ResultsResponse {
        poll(
            &format!("replica {id} to serve Results"),
            async || match self
                .county(id, &operator())
                .results(pb::ResultsRequest::default())
                .await
            {
                Ok(response) => Ok(response.into_inner()),
                Err(status) if transient(&status) => Err(format!("{status:?}")),
                Err(status) => panic!("replica {id} refuses Results: {status:?}"),
            },
        )
        .await
    }

    async fn statuses(&self, ids: &[u64]) -> Vec<Result<pb::StatusResponse, String>> {
        let mut all = Vec::new();
        for &id in ids {
            all.push(self.status(id).await);
        }
        all
    }

    /// Waits until every one of `members` names the same leader among them, which says it
    /// leads; returns the leader's status.
    async fn wait_for_leader(&self, members: &[u64]) -> pb::StatusResponse {
        poll(&format!("one leader among {members:?}"), async || {
            let seen = self.statuses(members).await;
            agreed_leader(members, &seen).ok_or_else(|| describe(&seen))
        })
        .await
    }

    /// Waits until `members` agree on a leader that has applied its whole log, and each has
    /// applied the same index with the same chain head; returns the leader's status.
    async fn wait_converged(&self, members: &[u64]) -> pb::StatusResponse {
        poll(&format!("{members:?} to converge"), async || {
            let seen = self.statuses(members).await;
            let leader = agreed_leader(members, &seen).ok_or_else(|| describe(&seen))?;
            let settled = leader.applied_index == leader.last_index
                && seen.iter().flatten().all(|s| {
                    s.applied_index == leader.applied_index && s.chain_head == leader.chain_head
                });
            if settled {
                Ok(leader)
            } else {
                Err(describe(&seen))
            }
        })
        .await
    }

    /// One ingest call through replica `via`, with the batch's township certificate.
    async fn ingest(&self, via: u64, batch: &Batch) -> Result<pb::IngestResponse, Status> {
        let response = self
            .county(via, &township_identity(&batch.township))
            .ingest(batch.request())
            .await?
            .into_inner();
        self.journal.lock().unwrap().note(&batch.sheets, &response);
        Ok(response)
    }

    /// Sends a batch until a replica answers it, as a township's aggregator does: after a
    /// transient error it sends the same batch to the next of `replicas`.
    async fn ingest_retrying(
        &self,
        replicas: &[u64],
        first: u64,
        batch: &Batch,
    ) -> pb::IngestResponse {
        let deadline = Instant::now() + RETRY_DEADLINE;
        let start = replicas.iter().position(|&r| r == first).unwrap_or(0);
        let mut attempt = 0;
        loop {
            let via = replicas[(start + attempt) % replicas.len()];
            match self.ingest(via, batch).await {
                Ok(response) => return response,
                Err(status) if transient(&status) && Instant::now() < deadline => {
                    self.journal.lock().unwrap().transient_errors.push(format!(
                        "via replica {via}: {:?}: {}",
                        status.code(),
                        status.message()
                    ));
                    attempt += 1;
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                Err(status) => panic!(
                    "a batch of {} sheets of township {} was not answered (last via replica {via}): {:?}: {}",
                    batch.sheets.len(),
                    batch.township,
                    status.code(),
                    status.message()
                ),
            }
        }
    }

    /// Sends batches one after another, each to the replica that answered the previous one
    /// (the leader) first, and counts each answered batch in `progress`.
    async fn ingest_lane(
        &self,
        replicas: &[u64],
        first: u64,
        batches: &[Batch],
        progress: Option<&tokio::sync::watch::Sender<usize>>,
    ) {
        let mut next = first;
        for batch in batches {
            let response = self.ingest_retrying(replicas, next, batch).await;
            if replicas.contains(&response.leader_id) {
                next = response.leader_id;
            }
            if let Some(progress) = progress {
                progress.send_modify(|n| *n += 1);
            }
        }
    }

    /// The checks every scenario ends with; see the file's header.
    async fn check_end(&self, members: &[u64]) {
        let leader = self.wait_converged(members).await;
        let recorded = self.journal.lock().unwrap().recorded.clone();
        let (_, expected) = offline(&recorded);
        let expected_json = serde_json::to_value(&expected).expect("a result serializes");
        for &id in members {
            let node = self.node(id);
            let query = node.query(|replica| replica.state().recorded_digests());
            let digests = tokio::time::timeout(WAIT_MAX, query)
                .await
                .unwrap_or_else(|_| panic!("replica {id}'s driver did not answer in {WAIT_MAX:?}"))
                .unwrap_or_else(|e| panic!("replica {id} answers a query: {e}"));
            let mut copies: HashMap<[u8; 32], usize> = HashMap::new();
            for digest in &digests {
                *copies.entry(*digest).or_default() += 1;
            }
            for (i, signed) in recorded.iter().enumerate() {
                assert_eq!(
                    copies.get(&signed.digest()).copied().unwrap_or(0),
                    1,
                    "replica {id}: acknowledged sheet #{i} ({}) is recorded exactly once",
                    hex::encode(signed.digest())
                );
            }
            assert_eq!(
                digests.len(),
                recorded.len(),
                "replica {id} records the acknowledged sheets and nothing else"
            );

            let results = self.results(id).await;
            assert_eq!(results.replica_id, id);
            // A leader elected meanwhile appends an empty entry: the index may move on, the
            // chain may not.
            assert!(
                results.log_index >= leader.applied_index,
                "replica {id}'s Results reflect at least the index all members had applied ({} < {})",
                results.log_index,
                leader.applied_index
            );
            assert_eq!(
                (hex::encode(&results.chain_head), results.chain_length),
                (hex::encode(&leader.chain_head), recorded.len() as u64 + 1),
                "replica {id}'s Results are over the chain all members hold: the founding and every acknowledged sheet"
            );
            let served: serde_json::Value =
                serde_json::from_str(&results.result_json).expect("result_json is JSON");
            if served != expected_json {
                let differing: Vec<&str> = expected
                    .contests
                    .iter()
                    .zip(served["contests"].as_array().into_iter().flatten())
                    .filter(|(e, s)| serde_json::to_value(e).ok().as_ref() != Some(*s))
                    .map(|(e, _)| e.contest.as_str())
                    .collect();
                panic!(
                    "replica {id}'s results differ from the offline computation over the {} acknowledged sheets; contests differing: {differing:?}",
                    recorded.len()
                );
            }
            // The structured fields an operator reads say the same.
            assert_eq!(results.contests.len(), expected.contests.len());
            for (served, expected) in results.contests.iter().zip(&expected.contests) {
                assert_eq!(served.contest_id, expected.contest.as_str());
                assert_eq!(
                    served.status,
                    contest_status_name(expected.status),
                    "replica {id}: status of contest {}",
                    served.contest_id
                );
                let elected: Vec<&str> = served.elected.iter().map(|e| e.name.as_str()).collect();
                let expected_elected: Vec<&str> =
                    expected.elected.iter().map(|e| e.name.as_str()).collect();
                assert_eq!(
                    elected, expected_elected,
                    "replica {id}: elected in contest {}",
                    served.contest_id
                );
            }
        }
    }
}

/// The leader all of `members` name, if they agree and it says it leads.
fn agreed_leader(
    members: &[u64],
    seen: &[Result<pb::StatusResponse, String>],
) -> Option<pb::StatusResponse> {
    let statuses: Vec<&pb::StatusResponse> = seen.iter().flatten().collect();
    if statuses.len() != members.len() {
        return None;
    }
    let leader = statuses[0].leader_id;
    if leader == 0 || !members.contains(&leader) || statuses.iter().any(|s| s.leader_id != leader) {
        return None;
    }
    statuses
        .into_iter()
        .find(|s| s.replica_id == leader && s.role == "leader")
        .cloned()
}

fn others(members: &[u64], but: u64) -> Vec<u64> {
    members.iter().copied().filter(|&m| m != but).collect()
}

fn peer(status: &pb::StatusResponse, id: u64) -> Option<&pb::PeerProgress> {
    status.peers.iter().find(|p| p.replica_id == id)
}

/// A port nothing listens on (bound, then closed).
fn unused_address() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("a bound address").to_string()
}

// ---------------------------------------------------------------- scenarios

// Goal: three replicas elect one leader, and the whole sample county ingested through a
// follower (which forwards) and through the leader at once is counted as the offline
// computation counts it.
// Method: wait until all three name one leader; split the sheets per township into batches of
// at most 256 and send alternate batches to a follower and to the leader concurrently; the
// follower's are answered by the leader it forwards them to, and every sheet is ACCEPTED (or,
// only if a leader change made the client send a batch again, DUPLICATE). The common end
// checks then compare every replica's Results with `results::compute` over a ledger fed the
// same verified sheets (elected lists and statuses as well as the full JSON).
#[tokio::test]
async fn elect_and_ingest_through_follower_and_leader() {
    let f = fixture();
    let members = [1, 2, 3];
    let cluster = Cluster::start(&members, COMPACT_AFTER_ENTRIES_DEFAULT).await;
    let leader = cluster.wait_for_leader(&members).await;
    assert_eq!(leader.voters, members.to_vec());
    assert!(leader.term > 0);
    let leader = leader.replica_id;
    let follower = others(&members, leader)[0];

    let all = batches(&f.sheets, BATCH_SHEETS_MAX);
    assert!(all.iter().all(|b| b.sheets.len() <= BATCH_SHEETS_MAX));
    let (to_follower, to_leader): (Vec<_>, Vec<_>) =
        all.iter().enumerate().partition(|(i, _)| i % 2 == 0);
    // Each lane sends to its replica first and only after a transient error elsewhere;
    // returns how many of its batches another replica answered (forwarded).
    let lane = async |via: u64, list: Vec<(usize, &Batch)>| -> usize {
        let mut forwarded = 0;
        for (_, batch) in list {
            let retries_before = cluster.journal.lock().unwrap().transient_errors.len();
            let response = cluster.ingest_retrying(&members, via, batch).await;
            let resent = cluster.journal.lock().unwrap().transient_errors.len() > retries_before;
            forwarded += usize::from(response.leader_id != via);
            for outcome in &response.outcomes {
                let expected =
                    kind(outcome) == Kind::Accepted || (resent && kind(outcome) == Kind::Duplicate);
                assert!(expected, "a sample sheet is accepted: {outcome:?}");
            }
            assert!(response.log_index > 0 && response.chain_head.len() == 32);
        }
        forwarded
    };
    let (forwarded, _) = tokio::join!(lane(follower, to_follower), lane(leader, to_leader));
    assert!(
        forwarded > 0,
        "the follower forwarded its batches to the leader, which answered them"
    );

    let journal = cluster.journal.lock().unwrap().recorded.len();
    assert_eq!(
        journal,
        f.sheets.len(),
        "every sheet of the county is acknowledged"
    );
    cluster.check_end(&members).await;
    let counted = offline(&cluster.journal.lock().unwrap().recorded).0.len() as u64;
    for status in cluster.statuses(&members).await {
        let status = status.expect("a member answers");
        assert_eq!(
            status.sheets_counted, counted,
            "replica {}",
            status.replica_id
        );
        assert_eq!(status.conflicts, 0);
    }
}

// Goal: a follower killed while sheets are flowing does not stop the count, and once
// restarted on its data directory it catches up to the same chain head.
// Method: ingest the county in batches of 32 through the leader; after a third, kill a
// follower (drop its runtime) and see the leader report it unreachable; after two thirds,
// restart it on the same directory and port; the end checks find it at the leader's applied
// index and chain head.
#[tokio::test]
async fn follower_crash_and_restart_during_ingest() {
    let f = fixture();
    let members = [1, 2, 3];
    let cluster = Cluster::start(&members, COMPACT_AFTER_ENTRIES_DEFAULT).await;
    let leader = cluster.wait_for_leader(&members).await.replica_id;
    let follower = others(&members, leader)[0];
    let all = batches(&f.sheets, 32);
    let (progress, mut answered) = tokio::sync::watch::channel(0usize);

    let ingest = cluster.ingest_lane(&members, leader, &all, Some(&progress));
    let faults = async {
        answered
            .wait_for(|&n| n >= all.len() / 3)
            .await
            .expect("the lane reports");
        cluster.crash(follower).await;
        // Asked of whichever survivor leads: a loaded machine may see an election meanwhile.
        let survivors = others(&members, follower);
        poll(
            &format!("the leader to report replica {follower} unreachable"),
            async || {
                let seen = cluster.statuses(&survivors).await;
                let reported = seen
                    .iter()
                    .flatten()
                    .filter(|s| s.role == "leader")
                    .filter_map(|s| peer(s, follower))
                    .any(|p| !p.reachable);
                reported.then_some(()).ok_or_else(|| describe(&seen))
            },
        )
        .await;
        answered
            .wait_for(|&n| n >= 2 * all.len() / 3)
            .await
            .expect("the lane reports");
        let behind = cluster.wait_for_leader(&survivors).await;
        let lag = peer(&behind, follower).map_or(0, |p| p.lag);
        assert!(
            lag > 0,
            "the leader reports the dead follower behind: {}",
            describe(&[Ok(behind)])
        );
        assert!(
            !cluster.launch(follower).await,
            "a restart does not found anything"
        );
    };
    tokio::join!(ingest, faults);

    assert_eq!(
        cluster.journal.lock().unwrap().recorded.len(),
        f.sheets.len()
    );
    cluster.check_end(&members).await;
    // The leader reports the restarted follower heard from and caught up (unless, on a loaded
    // machine, an election made the restarted replica the leader itself).
    let caught_up = cluster.wait_converged(&members).await;
    if caught_up.replica_id != follower {
        let p = peer(&caught_up, follower).expect("the leader tracks the follower");
        assert!(
            p.reachable && p.lag == 0,
            "{}",
            describe(&[Ok(caught_up.clone())])
        );
    }
}

// Goal: killing the leader mid-ingest loses no acknowledged sheet and counts none twice;
// clients that send again get DUPLICATE; the old leader, restarted, catches up.
// Method: ingest in batches of 32, each client sending a batch again to the next replica on
// UNAVAILABLE or DEADLINE_EXCEEDED (or a connection cut mid-call); after a third, kill the
// leader; wait for a new one among the other two; after two thirds restart the old leader.
// Then send every batch again: every sheet must come back DUPLICATE and the chain must not
// grow; the end checks run on all three.
#[tokio::test]
async fn leader_crash_and_restart_during_ingest() {
    let f = fixture();
    let members = [1, 2, 3];
    let cluster = Cluster::start(&members, COMPACT_AFTER_ENTRIES_DEFAULT).await;
    let old_leader = cluster.wait_for_leader(&members).await.replica_id;
    let all = batches(&f.sheets, 32);
    let (progress, mut answered) = tokio::sync::watch::channel(0usize);

    let ingest = cluster.ingest_lane(&members, old_leader, &all, Some(&progress));
    let faults = async {
        answered
            .wait_for(|&n| n >= all.len() / 3)
            .await
            .expect("the lane reports");
        cluster.crash(old_leader).await;
        let survivors = others(&members, old_leader);
        let new_leader = cluster.wait_for_leader(&survivors).await;
        assert_ne!(new_leader.replica_id, old_leader);
        assert!(new_leader.term > 1);
        answered
            .wait_for(|&n| n >= 2 * all.len() / 3)
            .await
            .expect("the lane reports");
        assert!(
            !cluster.launch(old_leader).await,
            "a restart does not found anything"
        );
    };
    tokio::join!(ingest, faults);
    let before = cluster.wait_converged(&members).await;
    assert_ne!(before.replica_id, 0);

    let (sent_before, transient) = {
        let journal = cluster.journal.lock().unwrap();
        (journal.recorded.len(), journal.transient_errors.clone())
    };
    assert_eq!(
        sent_before,
        f.sheets.len(),
        "every sheet is acknowledged in the end"
    );
    eprintln!(
        "leader crash: {} calls were sent again after: {transient:?}",
        transient.len()
    );
    // Everything sent again, through whichever replica: nothing new is recorded.
    let duplicates_before = cluster.journal.lock().unwrap().duplicates;
    for (i, batch) in all.iter().enumerate() {
        let via = members[i % members.len()];
        let response = cluster.ingest_retrying(&members, via, batch).await;
        for outcome in &response.outcomes {
            assert_eq!(
                kind(outcome),
                Kind::Duplicate,
                "a resent sheet: {outcome:?}"
            );
        }
    }
    let duplicates = cluster.journal.lock().unwrap().duplicates - duplicates_before;
    assert_eq!(duplicates, f.sheets.len());
    let after = cluster.wait_converged(&members).await;
    assert_eq!(
        (after.chain_head.clone(), after.chain_length),
        (before.chain_head.clone(), before.chain_length),
        "resending changes nothing"
    );
    cluster.check_end(&members).await;
}

// Goal: a replica that lost its data cannot rejoin under its old id, and a new replica added
// under a new id catches up from a snapshot of the compacted log, then votes.
// Method: with compaction every 100 entries, ingest the county in batches of 6 (about 250
// log entries) and see every replica's first index pass 100. Stop replica 3, wipe its
// directory, start it again as 3: it founds afresh, its raft batches are refused by the
// leader (checked by sending one with its new incarnation and replica 3's certificate), the
// leader sees no progress from 3 and reports it unreachable while sheets keep flowing, the
// wiped replica holds none of them, and once a heartbeat tells it that entries it had
// acknowledged are committed it stops, saying why, and health says NOT_SERVING (before the fix
// in replica.rs its driver panicked in raft-rs). Stop it, remove 3, see AddReplica of id 3 refused (ids are
// never reused), add replica 4 (new directory and port; not a founder) as a learner, wait
// until it has caught up by snapshot (its first index is past the compacted entries) and
// promote it. Ingest through 4, then kill the other follower: the leader and 4 still commit.
#[tokio::test]
async fn wiped_replica_is_refused_and_a_new_one_catches_up_by_snapshot() {
    let f = fixture();
    let founders = [1, 2, 3];
    let cluster = Cluster::start(&founders, COMPACT_AFTER_ENTRIES_SMALL).await;
    let mut leader = cluster.wait_for_leader(&founders).await.replica_id;
    let all = batches(&f.sheets, 6);
    let (phase1, rest) = all.split_at(all.len() - 24);
    let (phase2, phase3) = rest.split_at(8);
    let lanes: Vec<Vec<Batch>> = (0..3)
        .map(|lane| phase1.iter().skip(lane).step_by(3).cloned().collect())
        .collect();
    tokio::join!(
        cluster.ingest_lane(&founders, leader, &lanes[0], None),
        cluster.ingest_lane(&founders, leader, &lanes[1], None),
        cluster.ingest_lane(&founders, leader, &lanes[2], None),
    );
    cluster.wait_converged(&founders).await;
    for status in cluster.statuses(&founders).await {
        let status = status.expect("a founder answers");
        assert!(
            status.first_index > COMPACT_AFTER_ENTRIES_SMALL,
            "replica {} compacted its log: {}",
            status.replica_id,
            describe(&[Ok(status.clone())])
        );
    }

    // Replica 3 is the one to lose its data; it must not be leading when it goes.
    if leader == 3 {
        while_unavailable("leadership moves to replica 1", async || {
            cluster
                .admin(3, &operator())
                .transfer_leader(pb::ReplicaRequest { id: 1, max_lag: 0 })
                .await
        })
        .await
        .expect("leadership moves to replica 1");
        leader = cluster.wait_for_leader(&founders).await.replica_id;
        assert_eq!(leader, 1);
    }
    let survivors = others(&founders, 3);
    let before = cluster.wait_converged(&founders).await;
    let matched_3 = peer(&before, 3).expect("the leader tracks 3").match_index;
    cluster.crash(3).await;
    std::fs::remove_dir_all(cluster.data_dir(3)).expect("wipe replica 3");
    assert!(
        cluster.launch(3).await,
        "started on an empty directory with the same config, replica 3 founds a cluster of its own"
    );
    let wiped_incarnation = cluster.node(3).incarnation();
    // What the leader answers the wiped replica's raft batches.
    let mut raft = RaftClient::new(cluster.channel(leader, &Identity::replica(3).unwrap()));
    let refusal = raft
        .send(tokio_stream::iter([pb::RaftBatch {
            from: 3,
            messages: Vec::new(),
            incarnation: wiped_incarnation.to_vec(),
            snapshot: None,
        }]))
        .await
        .expect_err("the leader refuses a batch from replica 3's new incarnation");
    assert_eq!(refusal.code(), Code::FailedPrecondition, "{refusal:?}");
    assert!(
        refusal.message().contains("made again"),
        "the refusal says why: {}",
        refusal.message()
    );

    cluster.ingest_lane(&survivors, leader, phase2, None).await;
    // The leader keeps 3 where the old replica 3 left it: no answer of the wiped one counts.
    // (Whichever survivor leads: under a loaded machine the two may hold an election.)
    hold(
        "the survivors ignoring the wiped replica 3",
        HOLD,
        async || {
            let seen = cluster.statuses(&[1, 2, 3]).await;
            let wiped = seen[2].as_ref().map_err(Clone::clone)?;
            let leaders_ignore_3 =
                seen.iter()
                    .flatten()
                    .filter(|s| s.role == "leader")
                    .all(|leading| {
                        leading.replica_id != 3
                            && peer(leading, 3).is_some_and(|three| {
                                three.match_index <= matched_3 && three.lag > 0
                            })
                    });
            let ignored = leaders_ignore_3 && wiped.chain_length == 0;
            ignored.then_some(()).ok_or_else(|| describe(&seen))
        },
    )
    .await;
    // Told by a heartbeat that entries it had acknowledged are committed, the wiped replica
    // stops and says why (raft-rs alone would panic in its driver task, leaving a Status that
    // looks like a follower's), and health checks say it does not serve.
    poll("the wiped replica 3 to stop, saying why", async || {
        let status = cluster.node(3).status().borrow().clone();
        match &status.stopped {
            Some(reason) if !status.running && reason.contains("new id") => Ok(()),
            _ => Err(format!("{status:?}")),
        }
    })
    .await;
    let health = HealthClient::new(cluster.channel(3, &operator()))
        .check(tonic_health::pb::HealthCheckRequest {
            service: COUNTY_SERVICE_NAME.into(),
        })
        .await
        .expect("the wiped replica answers health checks")
        .into_inner();
    assert_eq!(health.status(), ServingStatus::NotServing);
    let leading = cluster.wait_for_leader(&survivors).await;
    let three = peer(&leading, 3).expect("the leader tracks 3");
    assert!(
        !three.reachable,
        "the leader reports 3 unreachable: {}",
        describe(&[Ok(leading.clone())])
    );

    cluster.crash(3).await;
    let removed = while_unavailable("replica 3 is removed", async || {
        cluster
            .admin(survivors[0], &operator())
            .remove_replica(pb::ReplicaRequest { id: 3, max_lag: 0 })
            .await
    })
    .await
    .expect("replica 3 is removed");
    assert_eq!(
        removed.voters.iter().copied().collect::<BTreeSet<_>>(),
        BTreeSet::from([1, 2])
    );
    let reused = while_unavailable("id 3 is never used again", async || {
        cluster
            .admin(leader, &operator())
            .add_replica(pb::AddReplicaRequest {
                id: 3,
                address: cluster.address(3),
            })
            .await
    })
    .await
    .expect_err("id 3 is never used again");
    assert_eq!(reused.code(), Code::InvalidArgument, "{reused:?}");
    assert!(reused.message().contains("not new"), "{}", reused.message());

    let address_4 = cluster.reserve(4);
    assert!(
        !cluster.launch(4).await,
        "replica 4 is not a founder: it waits to be added"
    );
    let added = while_unavailable("replica 4 is added", async || {
        cluster
            .admin(leader, &operator())
            .add_replica(pb::AddReplicaRequest {
                id: 4,
                address: address_4.clone(),
            })
            .await
    })
    .await
    .expect("replica 4 is added");
    assert_eq!(added.learners, vec![4]);
    poll("replica 4 to catch up by snapshot", async || {
        let seen = cluster.statuses(&[leader, 4]).await;
        let (Ok(l), Ok(four)) = (&seen[0], &seen[1]) else {
            return Err(describe(&seen));
        };
        let caught_up = four.role == "learner"
            && four.applied_index == l.applied_index
            && four.chain_head == l.chain_head
            && four.first_index > COMPACT_AFTER_ENTRIES_SMALL
            && peer(l, 4).is_some_and(|p| p.lag == 0);
        caught_up.then_some(()).ok_or_else(|| describe(&seen))
    })
    .await;
    let promoted = while_unavailable("replica 4 is promoted", async || {
        cluster
            .admin(4, &operator())
            .promote_replica(pb::ReplicaRequest { id: 4, max_lag: 0 })
            .await
    })
    .await
    .expect("replica 4 is promoted");
    assert_eq!(
        promoted.voters.iter().copied().collect::<BTreeSet<_>>(),
        BTreeSet::from([1, 2, 4])
    );

    let members = [1, 2, 4];
    let (through_4, without_follower) = phase3.split_at(phase3.len() / 2);
    cluster.ingest_lane(&[4], 4, through_4, None).await;
    let leader = cluster.wait_converged(&members).await.replica_id;
    let follower = others(&survivors, leader)[0];
    cluster.crash(follower).await;
    let quorum = [leader, 4];
    cluster
        .ingest_lane(&quorum, leader, without_follower, None)
        .await;
    assert_eq!(
        cluster.journal.lock().unwrap().recorded.len(),
        f.sheets.len()
    );
    cluster.check_end(&quorum).await;
}

// Goal: an operator moves leadership to a named voter, removes a voter, and is refused where
// the cluster would suffer: removing the leader, promoting a learner that lags.
// Method: ingest some sheets; TransferLeader to a follower, sent through the other follower
// (forwarded); RemoveReplica of the new leader is FAILED_PRECONDITION; TransferLeader to a
// non-voter is INVALID_ARGUMENT; AddReplica 4 at an address nothing listens on, then
// PromoteReplica 4 with max_lag 1 is FAILED_PRECONDITION (it has nothing), and 4 is removed;
// RemoveReplica of the other follower succeeds; ingest the rest through the old leader.
#[tokio::test]
async fn membership_and_leadership() {
    let f = fixture();
    let members = [1, 2, 3];
    let cluster = Cluster::start(&members, COMPACT_AFTER_ENTRIES_DEFAULT).await;
    let old_leader = cluster.wait_for_leader(&members).await.replica_id;
    let mut sheets = batches(&f.sheets, 64);
    let rest = sheets.split_off(sheets.len() / 2);
    cluster
        .ingest_lane(&members, old_leader, &sheets, None)
        .await;

    let followers = others(&members, old_leader);
    let (target, other) = (followers[0], followers[1]);
    let moved = while_unavailable("leadership is transferred", async || {
        cluster
            .admin(other, &operator())
            .transfer_leader(pb::ReplicaRequest {
                id: target,
                max_lag: 0,
            })
            .await
    })
    .await
    .expect("leadership is transferred");
    assert_eq!(moved.leader_id, target, "{}", moved.message);
    assert_eq!(cluster.wait_for_leader(&members).await.replica_id, target);

    let refused = while_unavailable("the leader cannot be removed", async || {
        cluster
            .admin(target, &operator())
            .remove_replica(pb::ReplicaRequest {
                id: target,
                max_lag: 0,
            })
            .await
    })
    .await
    .expect_err("the leader cannot be removed");
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(
        refused.message().contains("is the leader"),
        "{}",
        refused.message()
    );
    let refused = while_unavailable("only a voter can lead", async || {
        cluster
            .admin(target, &operator())
            .transfer_leader(pb::ReplicaRequest { id: 5, max_lag: 0 })
            .await
    })
    .await
    .expect_err("only a voter can lead");
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");

    let added = while_unavailable("a learner is added", async || {
        cluster
            .admin(old_leader, &operator())
            .add_replica(pb::AddReplicaRequest {
                id: 4,
                address: unused_address(),
            })
            .await
    })
    .await
    .expect("a learner is added");
    assert_eq!(added.learners, vec![4]);
    let lagging = while_unavailable("a learner that has nothing is not promoted", async || {
        cluster
            .admin(target, &operator())
            .promote_replica(pb::ReplicaRequest { id: 4, max_lag: 1 })
            .await
    })
    .await
    .expect_err("a learner that has nothing is not promoted");
    assert_eq!(lagging.code(), Code::FailedPrecondition, "{lagging:?}");
    assert!(
        lagging.message().contains("entries behind"),
        "{}",
        lagging.message()
    );
    let gone = while_unavailable("the learner is removed", async || {
        cluster
            .admin(target, &operator())
            .remove_replica(pb::ReplicaRequest { id: 4, max_lag: 0 })
            .await
    })
    .await
    .expect("the learner is removed");
    assert!(gone.learners.is_empty(), "{gone:?}");

    let removed = while_unavailable("a follower is removed", async || {
        cluster
            .admin(target, &operator())
            .remove_replica(pb::ReplicaRequest {
                id: other,
                max_lag: 0,
            })
            .await
    })
    .await
    .expect("a follower is removed");
    let remaining = [old_leader.min(target), old_leader.max(target)];
    assert_eq!(removed.voters, remaining.to_vec());
    cluster.crash(other).await;
    for status in cluster.statuses(&remaining).await {
        let status = status.expect("a member answers");
        assert_eq!(
            status.voters,
            remaining.to_vec(),
            "every member sees the new membership"
        );
    }
    cluster
        .ingest_lane(&remaining, old_leader, &rest, None)
        .await;
    assert_eq!(
        cluster.journal.lock().unwrap().recorded.len(),
        f.sheets.len()
    );
    cluster.check_end(&remaining).await;
}

// Goal: two different sheets for the same unit, contest, round and version are a conflict:
// the second is recorded for the committee and never counted; Results list it.
// Method: ingest one township's sheets (one without planted scenarios), then the same unit's
// sheet for the same contest, round and version with one approval less, signed with the unit's
// key: CONFLICT; sent again, CONFLICT again and the chain does not grow. Every replica's
// Results list the conflict with both digests, and the contest's votes are the first sheet's
// (they differ from what the second would give).
#[tokio::test]
async fn conflicting_sheet_is_recorded_not_counted() {
    let f = fixture();
    let members = [1, 2, 3];
    let cluster = Cluster::start(&members, COMPACT_AFTER_ENTRIES_DEFAULT).await;
    let leader = cluster.wait_for_leader(&members).await.replica_id;
    // The last township has no planted scenario (they are in the first few): one round, one
    // version everywhere.
    let township = f.township_keys.keys().last().expect("townships").clone();
    let own: Vec<&Sheet> = f.sheets.iter().filter(|s| s.township == township).collect();
    assert!(
        own.iter()
            .all(|s| s.sheet.round.0 == 1 && s.sheet.version == 1)
    );
    cluster
        .ingest_lane(
            &members,
            leader,
            &batches(own.iter().copied(), BATCH_SHEETS_MAX),
            None,
        )
        .await;

    let original = own[0];
    let mut changed = original.sheet.clone();
    let top = (0..changed.candidates.len())
        .max_by_key(|&i| changed.candidates[i].approvals)
        .expect("a contest has candidates");
    assert!(changed.candidates[top].approvals > 0);
    changed.candidates[top].approvals -= 1;
    let conflicting = tally_proto::sign(
        &changed,
        &f.unit_keys[&changed.unit],
        &f.definition.election,
    );
    assert_ne!(conflicting.digest(), original.signed.digest());
    let batch = Batch {
        township: township.clone(),
        sheets: vec![conflicting.clone()],
    };
    let follower = others(&members, leader)[0];
    let first = cluster.ingest_retrying(&members, follower, &batch).await;
    assert_eq!(
        kind(&first.outcomes[0]),
        Kind::Conflict,
        "{:?}",
        first.outcomes[0]
    );
    assert_eq!(first.outcomes[0].code, "conflict");
    let length = cluster.wait_converged(&members).await.chain_length;
    let again = cluster.ingest_retrying(&members, leader, &batch).await;
    assert_eq!(
        kind(&again.outcomes[0]),
        Kind::Conflict,
        "{:?}",
        again.outcomes[0]
    );
    assert_eq!(
        cluster.wait_converged(&members).await.chain_length,
        length,
        "a conflicting sheet sent again is not recorded again"
    );

    let contest = original.sheet.contest.to_string();
    let recorded = cluster.journal.lock().unwrap().recorded.clone();
    let (_, counted_first) = offline(&recorded);
    let with_second: Vec<SignedSheet> = recorded
        .iter()
        .filter(|s| s.digest() != original.signed.digest())
        .cloned()
        .collect();
    let (_, counted_second) = offline(&with_second);
    assert_ne!(
        offline_votes(&counted_first, &contest),
        offline_votes(&counted_second, &contest),
        "the two sheets would count differently"
    );
    for &id in &members {
        let results = cluster.results(id).await;
        assert_eq!(
            results.conflicts.len(),
            1,
            "replica {id}: {:?}",
            results.conflicts
        );
        let notice = &results.conflicts[0];
        assert_eq!(
            (
                notice.unit_id.as_str(),
                notice.contest_id.as_str(),
                notice.round,
                notice.version
            ),
            (original.sheet.unit.as_str(), contest.as_str(), 1, 1)
        );
        assert_eq!(notice.counted_digest, hex::encode(original.signed.digest()));
        assert_eq!(notice.conflicting_digest, hex::encode(conflicting.digest()));
        assert!(notice.log_index > 0);
        assert_eq!(
            served_votes(&results, &contest),
            offline_votes(&counted_first, &contest),
            "replica {id} counts the first sheet"
        );
        let status = cluster.status(id).await.expect("status");
        assert_eq!(status.conflicts, 1);
    }
    assert_eq!(
        cluster.journal.lock().unwrap().conflicts,
        2,
        "both sends said CONFLICT"
    );
    cluster.check_end(&members).await;
}

// Goal: who may send what is enforced at the edge: a township forwards only its own units'
// sheets under its own countersignature, an operator cannot ingest, a township cannot
// administer, and a sheet changed after signing is refused.
// Method: with township T01's and T02's certificates and keys, send: T02's batch with T01's
// certificate (PERMISSION_DENIED, through a follower); T01's sheets plus one of T02's, all
// countersigned by T01 (the stranger REFUSED E210, the rest ACCEPTED); T01's batch with the
// operator's certificate (PERMISSION_DENIED); Admin calls with T01's certificate
// (PERMISSION_DENIED); T01's batch countersigned over other sheets (PERMISSION_DENIED, E208)
// or with T02's key (PERMISSION_DENIED, E209); a T01 sheet with a byte changed after signing
// (REFUSED E204). Only the accepted sheets are recorded.
#[tokio::test]
async fn unauthorized_calls_are_refused() {
    let f = fixture();
    let members = [1, 2, 3];
    let cluster = Cluster::start(&members, COMPACT_AFTER_ENTRIES_DEFAULT).await;
    let leader = cluster.wait_for_leader(&members).await.replica_id;
    let follower = others(&members, leader)[0];
    let mut townships = f.township_keys.keys();
    let (t01, t02) = (
        townships.next().expect("a township").clone(),
        townships.next().expect("two townships").clone(),
    );
    let sheets_of = |t: &TownshipId| -> Vec<SignedSheet> {
        f.sheets
            .iter()
            .filter(|s| &s.township == t)
            .map(|s| s.signed.clone())
            .take(12)
            .collect()
    };
    let (own, foreign) = (sheets_of(&t01), sheets_of(&t02));
    let t01_cert = township_identity(&t01);
    // An ingest call, made again while the cluster is between leaders.
    let ingest = async |via: u64, who: &Identity, request: pb::IngestRequest| {
        while_unavailable("an ingest call", async || {
            cluster.county(via, who).ingest(request.clone()).await
        })
        .await
    };

    let denied = ingest(
        follower,
        &t01_cert,
        request(&t02, &foreign, &f.township_keys[&t02]),
    )
    .await
    .expect_err("T01 may not forward T02's batch");
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");

    let mut mixed = own[..6].to_vec();
    mixed.push(foreign[0].clone());
    let response = ingest(
        follower,
        &t01_cert,
        request(&t01, &mixed, &f.township_keys[&t01]),
    )
    .await
    .expect("a batch with a stranger is answered sheet by sheet");
    cluster.journal.lock().unwrap().note(&mixed, &response);
    let (stranger, rest) = response.outcomes.split_last().expect("outcomes");
    assert_eq!(
        (kind(stranger), stranger.code.as_str()),
        (Kind::Refused, "E210"),
        "{stranger:?}"
    );
    assert!(rest.iter().all(|o| kind(o) == Kind::Accepted), "{rest:?}");

    // Export is for operators only; an operator's export, from a follower, carries the six
    // records just accepted, linked by the county's own chain function, ending at the head.
    let denied = while_unavailable("a township does not export", async || {
        cluster
            .county(follower, &t01_cert)
            .export(pb::ExportRequest { stale: false })
            .await
    })
    .await
    .expect_err("a township does not export");
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    let mut stream = while_unavailable("an export", async || {
        cluster
            .county(follower, &operator())
            .export(pb::ExportRequest { stale: false })
            .await
    })
    .await
    .expect("an operator exports");
    let header = stream
        .message()
        .await
        .expect("the stream reads")
        .and_then(|c| c.header)
        .expect("the first chunk is the header");
    let mut records = Vec::new();
    while let Some(chunk) = stream.message().await.expect("the stream reads") {
        assert!(chunk.header.is_none());
        records.extend(chunk.records);
    }
    assert_eq!(records.len() as u64, header.chain_length);
    assert_eq!(records.len(), 7, "the founding and six sheets");
    assert!(header.log_index >= response.log_index);
    assert!(header.result_json.contains(&header.election));
    // The founding: the definition the cluster runs, in its canonical encoding.
    let founding = records[0]
        .founding
        .as_ref()
        .expect("the first record is the founding");
    assert_eq!(
        founding.definition,
        tally_core::canonical::encode(&f.definition),
        "the founding definition is the cluster's"
    );
    let mut head = tally_proto::county::chain_link(
        &tally_proto::county::CHAIN_HEAD_EMPTY,
        records[0].log_index,
        &tally_core::canonical::digest(&f.definition).0,
    );
    assert_eq!(records[0].head, head.to_vec());
    for (record, sent) in records[1..].iter().zip(&mixed) {
        let signed = record.sheet.as_ref().expect("a record carries its sheet");
        assert_eq!(signed, &sent.to_pb(), "the envelope exactly as signed");
        head = tally_proto::county::chain_link(&head, record.log_index, &sent.digest());
        assert_eq!(record.head, head.to_vec());
    }
    assert_eq!(header.chain_head, head.to_vec());

    // A township whose definition is not the county's founding one forwards nothing (E213).
    let mut other_definition = request(&t01, &own[6..], &f.township_keys[&t01]);
    other_definition.definition_digest = "00".repeat(32);
    let refused = ingest(follower, &t01_cert, other_definition)
        .await
        .expect_err("a batch under another definition is refused");
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(
        refused.message().starts_with(&format!(
            "E213 township {t01}'s election definition (digest {}) is not the one the county was founded with (digest {})",
            "00".repeat(32),
            tally_core::canonical::digest(&f.definition)
        )),
        "{refused:?}"
    );

    let denied = ingest(
        leader,
        &operator(),
        request(&t01, &own[6..], &f.township_keys[&t01]),
    )
    .await
    .expect_err("an operator does not ingest");
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    let denied = while_unavailable("a township does not administer", async || {
        cluster
            .admin(leader, &t01_cert)
            .add_replica(pb::AddReplicaRequest {
                id: 4,
                address: unused_address(),
            })
            .await
    })
    .await
    .expect_err("a township does not administer");
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    let denied = while_unavailable("a township does not administer", async || {
        cluster
            .admin(follower, &t01_cert)
            .transfer_leader(pb::ReplicaRequest {
                id: follower,
                max_lag: 0,
            })
            .await
    })
    .await
    .expect_err("a township does not administer");
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");

    let mut countersigned_other = request(&t01, &own[6..11], &f.township_keys[&t01]);
    countersigned_other.sheets = own[6..12].iter().map(SignedSheet::to_pb).collect();
    let denied = ingest(leader, &t01_cert, countersigned_other)
        .await
        .expect_err("a countersignature over other sheets");
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    // The message opens with its code, once.
    assert!(
        denied.message().starts_with("E208 "),
        "{}",
        denied.message()
    );
    assert_eq!(
        denied.message().matches("E208").count(),
        1,
        "{}",
        denied.message()
    );
    let denied = ingest(
        leader,
        &t01_cert,
        request(&t01, &own[6..12], &f.township_keys[&t02]),
    )
    .await
    .expect_err("a countersignature with another township's key");
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    // The message opens with its code, once.
    assert!(
        denied.message().starts_with("E209 "),
        "{}",
        denied.message()
    );
    assert_eq!(
        denied.message().matches("E209").count(),
        1,
        "{}",
        denied.message()
    );

    let mut tampered = own[6].clone();
    let last = tampered.sheet.len() - 1;
    tampered.sheet[last] ^= 0x01;
    let response = ingest(
        leader,
        &t01_cert,
        request(
            &t01,
            std::slice::from_ref(&tampered),
            &f.township_keys[&t01],
        ),
    )
    .await
    .expect("a tampered sheet is answered");
    cluster
        .journal
        .lock()
        .unwrap()
        .note(std::slice::from_ref(&tampered), &response);
    assert_eq!(
        (
            kind(&response.outcomes[0]),
            response.outcomes[0].code.as_str()
        ),
        (Kind::Refused, "E204"),
        "{:?}",
        response.outcomes[0]
    );

    {
        let journal = cluster.journal.lock().unwrap();
        assert_eq!((journal.recorded.len(), journal.refused), (6, 2));
    }
    cluster.check_end(&members).await;
}

// Goal: stock gRPC health checking tells an operator (or a load balancer) whether a replica
// can serve: SERVING while it knows a leader, NOT_SERVING once it cannot.
// Method: check "tally.v1.County" and the whole server ("") on each replica until SERVING;
// ingest one township's sheets and run the end checks; kill two of the three replicas and
// check the survivor until it says NOT_SERVING (and its Status names no leader).
#[tokio::test]
async fn health_reports_serving_with_a_leader() {
    let members = [1, 2, 3];
    let cluster = Cluster::start(&members, COMPACT_AFTER_ENTRIES_DEFAULT).await;
    let health = async |id: u64, service: &str| -> Result<ServingStatus, String> {
        HealthClient::new(cluster.channel(id, &operator()))
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .map(|r| r.into_inner().status())
            .map_err(|s| format!("replica {id}: {s:?}"))
    };
    for id in members {
        for service in [COUNTY_SERVICE_NAME, ""] {
            poll(
                &format!("replica {id} to serve {service:?}"),
                async || match health(id, service).await? {
                    ServingStatus::Serving => Ok(()),
                    other => Err(format!("{other:?}")),
                },
            )
            .await;
        }
    }
    let leader = cluster.wait_for_leader(&members).await.replica_id;
    // Serving means serving: a township's sheets go in and come out in the results.
    let f = fixture();
    let township = f.township_keys.keys().next().expect("a township");
    let own = f.sheets.iter().filter(|s| &s.township == township);
    cluster
        .ingest_lane(&members, leader, &batches(own, BATCH_SHEETS_MAX), None)
        .await;
    cluster.check_end(&members).await;

    let survivor = 1;
    for id in others(&members, survivor) {
        cluster.crash(id).await;
    }
    poll(
        "the survivor to report NOT_SERVING",
        async || match health(survivor, COUNTY_SERVICE_NAME).await? {
            ServingStatus::NotServing => Ok(()),
            other => Err(format!("{other:?}")),
        },
    )
    .await;
    let alone = cluster
        .status(survivor)
        .await
        .expect("the survivor answers");
    assert_eq!(alone.leader_id, 0, "{}", describe(&[Ok(alone.clone())]));
}

// Goal: an operator's results stream follows the count as it grows, a township sees only
// its own township, and stock gRPC tools can discover the services (reflection).
// Method: subscribe to WatchResults on a follower before any sheet; ingest one township's
// sheets; read updates until one reflects every acknowledged sheet, checking the log index
// never goes back; ask Results as that township (its own contests only) and for another
// township (refused); list services through grpc.reflection.v1.
#[tokio::test]
async fn results_stream_township_scope_and_reflection() {
    use tally_rpc::reflection::{list_services_v1, list_services_v1alpha};
    use tokio_stream::StreamExt;

    let members = [1, 2, 3];
    let cluster = Cluster::start(&members, COMPACT_AFTER_ENTRIES_DEFAULT).await;
    let leader = cluster.wait_for_leader(&members).await.replica_id;
    let follower = others(&members, leader)[0];

    let mut updates = cluster
        .county(follower, &operator())
        .watch_results(pb::ResultsRequest {
            min_interval_ms: 50,
            ..Default::default()
        })
        .await
        .expect("an operator may watch the results")
        .into_inner();
    let first = tokio::time::timeout(Duration::from_secs(20), updates.next())
        .await
        .expect("the first update comes at once")
        .expect("the stream is open")
        .expect("an update");
    assert!(
        first.chain_length <= 1,
        "nothing but the founding is recorded yet: {}",
        first.chain_length
    );

    let f = fixture();
    let township = f.township_keys.keys().next().expect("a township").clone();
    let own: Vec<&Sheet> = f.sheets.iter().filter(|s| s.township == township).collect();
    cluster
        .ingest_lane(&members, leader, &batches(own.iter().copied(), 32), None)
        .await;
    let recorded = cluster.journal.lock().unwrap().recorded.len() as u64;
    assert_eq!(recorded, own.len() as u64);

    let mut last_index = first.log_index;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let update = tokio::time::timeout_at(deadline, updates.next())
            .await
            .expect("an update reflecting every sheet within 20 s")
            .expect("the stream stays open")
            .expect("an update");
        assert!(
            update.log_index >= last_index,
            "updates never go back: {} after {last_index}",
            update.log_index
        );
        last_index = update.log_index;
        // The founding and every sheet.
        if update.chain_length == recorded + 1 {
            assert!(
                update.county.is_some(),
                "a county-wide update has the summary"
            );
            break;
        }
    }

    let mine = cluster
        .county(follower, &township_identity(&township))
        .results(pb::ResultsRequest::default())
        .await
        .expect("a township may read its own results")
        .into_inner();
    assert!(!mine.contests.is_empty());
    assert!(
        mine.contests
            .iter()
            .all(|c| c.township_id == township.as_str()),
        "a township sees only its own contests"
    );
    let other = f
        .township_keys
        .keys()
        .find(|t| **t != township)
        .expect("a second township");
    let refused = cluster
        .county(follower, &township_identity(&township))
        .results(pb::ResultsRequest {
            township_id: other.to_string(),
            ..Default::default()
        })
        .await
        .expect_err("another township's results are refused");
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");

    // Reflection, in both versions, lists what a replica serves and nothing else (the
    // descriptor set also holds the township's service).
    let served: BTreeSet<String> = [
        "tally.v1.County",
        "tally.v1.Admin",
        "tally.v1.Raft",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    let names = list_services_v1(cluster.channel(follower, &operator()))
        .await
        .expect("reflection v1 answers");
    assert_eq!(names, served, "reflection v1 lists the replica's services");
    let names = list_services_v1alpha(cluster.channel(leader, &township_identity(&township)))
        .await
        .expect("reflection v1alpha answers");
    assert_eq!(
        names, served,
        "reflection v1alpha lists the replica's services"
    );
    cluster.check_end(&members).await;
}

// Goal: a linearizable read that raft will not answer (its leader died, or no leader is
// known) is answered UNAVAILABLE with advice to send it again, soon, and leaves nothing
// waiting in the driver: the map of pending reads does not grow.
// Method: three replicas; kill the leader and at once issue 100 reads on a follower (which
// still names the dead leader, so raft sends them there and never hears back); every read is
// answered within the driver's read deadline plus a second, either confirmed by a new leader
// or dropped, and the pending-reads gauge goes back to 0. Then kill the other follower too:
// the survivor knows no leader, 200 more reads are all dropped at once, the gauge stays 0,
// and a Results call says UNAVAILABLE and to send it again.
#[tokio::test]
async fn reads_raft_drops_are_answered_and_forgotten() {
    use tally_county::error::WriteError;
    use tally_county::node::READ_WAIT_MAX;
    let members = [1, 2, 3];
    let cluster = Cluster::start(&members, COMPACT_AFTER_ENTRIES_DEFAULT).await;
    let leader = cluster.wait_for_leader(&members).await.replica_id;
    let followers = others(&members, leader);
    let (survivor, other) = (followers[0], followers[1]);
    let node = cluster.node(survivor);
    // A new leader confirms reads once it has committed an entry of its term.
    poll(
        "a read on a follower with a live leader to be confirmed",
        async || node.read_barrier().await.map_err(|e| e.to_string()),
    )
    .await;

    let reads = async |count: usize| -> Vec<(Result<LogIndex, WriteError>, Duration)> {
        let calls = (0..count).map(|_| {
            let node = node.clone();
            async move {
                let started = Instant::now();
                let answer = tokio::time::timeout(WAIT_MAX, node.read_barrier())
                    .await
                    .expect("a read is answered");
                (answer, started.elapsed())
            }
        });
        futures_join_all(calls).await
    };
    let pending = || node.metrics().reads_pending.get();

    cluster.crash(leader).await;
    let answers = reads(100).await;
    let mut dropped = 0;
    for (answer, took) in &answers {
        assert!(
            *took <= READ_WAIT_MAX + Duration::from_secs(1),
            "a read took {took:?}: {answer:?}"
        );
        match answer {
            Ok(_) => {}
            Err(WriteError::ReadDropped(reason)) => {
                dropped += 1;
                assert!(
                    WriteError::ReadDropped(reason.clone())
                        .to_string()
                        .ends_with("send it again"),
                    "{reason}"
                );
            }
            Err(e) => panic!("a read failed otherwise: {e}"),
        }
    }
    eprintln!(
        "leader {leader} killed: {dropped} of 100 reads on replica {survivor} dropped, the rest confirmed by a new leader; slowest answer {:?}",
        answers.iter().map(|(_, t)| *t).max().unwrap_or_default()
    );
    poll(
        "no read left pending on the survivor",
        async || match pending() {
            0 => Ok(()),
            n => Err(format!("{n} reads pending")),
        },
    )
    .await;

    cluster.crash(other).await;
    poll("the survivor to know no leader", async || {
        let status = cluster.status(survivor).await?;
        if status.leader_id == 0 {
            Ok(())
        } else {
            Err(format!("leader {}", status.leader_id))
        }
    })
    .await;
    let answers = reads(200).await;
    for (answer, took) in &answers {
        assert!(
            matches!(answer, Err(WriteError::ReadDropped(reason)) if reason.contains("knows no leader")),
            "{answer:?}"
        );
        assert!(*took < Duration::from_secs(1), "a read took {took:?}");
    }
    assert_eq!(pending(), 0, "nothing waits in the driver");
    let refused = cluster
        .county(survivor, &operator())
        .results(pb::ResultsRequest::default())
        .await
        .expect_err("no linearizable read without a leader");
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert!(
        refused.message().contains("send it again"),
        "{}",
        refused.message()
    );
}

// Goal: results are computed outside the driver, once per applied index however many callers
// ask, and heartbeats are not held up by them: while results are read hard and the count
// goes on, no election happens and the driver keeps answering within a tick or so.
// Method: three replicas with the production tick (100 ms: heartbeats every 300 ms, an
// election after 1 to 2 s without one), the whole sample county ingested; 16 stale Results
// calls at once on the leader at one applied index (as many as one caller may have in
// progress: `READS_IN_FLIGHT_PER_CALLER`) cost exactly one computation (the
// leader's `results_computed` counter); then for 3 s, 8 callers read linearizable Results on the
// leader in a loop while a lane sends the county's batches again (duplicates, each a new log
// entry, so every read may need a new computation) and the driver's round trip is timed
// every 10 ms; afterwards every replica is in the same term under the same leader, no
// replica saw a leader change, and the computations are at most the applied indexes passed.
#[tokio::test]
async fn results_once_per_index_while_the_leader_keeps_its_lease() {
    let f = fixture();
    let members = [1, 2, 3];
    let cluster = Cluster::start_with_tick(
        &members,
        COMPACT_AFTER_ENTRIES_DEFAULT,
        Duration::from_millis(100),
    )
    .await;
    let leader = cluster.wait_for_leader(&members).await.replica_id;
    let all = batches(&f.sheets, BATCH_SHEETS_MAX);
    cluster.ingest_lane(&members, leader, &all, None).await;
    let before = cluster.wait_converged(&members).await;
    let node = cluster.node(leader);
    let computed = || node.metrics().results_computed.get();

    let computed_before = computed();
    let stale = pb::ResultsRequest {
        stale: true,
        ..Default::default()
    };
    let calls = (0..tally_county::limits::READS_IN_FLIGHT_PER_CALLER).map(|_| {
        let mut client = cluster.county(leader, &operator());
        let request = stale.clone();
        async move {
            client
                .results(request)
                .await
                .expect("a stale read is served")
                .into_inner()
        }
    });
    let answers = futures_join_all(calls).await;
    assert!(
        answers
            .iter()
            .all(|a| a.log_index == before.applied_index && a.result_json == answers[0].result_json)
    );
    assert_eq!(
        computed() - computed_before,
        1,
        "16 callers at one applied index, one computation"
    );

    let changes = |id: u64| cluster.node(id).metrics().leader_changes.get();
    let changes_before: Vec<u64> = members.iter().map(|&id| changes(id)).collect();
    let computed_before = computed();
    let load_for = Duration::from_secs(3);
    let end = Instant::now() + load_for;
    let readers = (0..8).map(|_| {
        let mut client = cluster.county(leader, &operator());
        async move {
            let mut reads = 0u64;
            while Instant::now() < end {
                client
                    .results(pb::ResultsRequest::default())
                    .await
                    .expect("a linearizable read is served while the leader keeps its lease");
                reads += 1;
            }
            reads
        }
    });
    let resend = async {
        let mut sent = 0;
        for batch in all.iter().cycle() {
            if Instant::now() >= end {
                break;
            }
            cluster
                .ingest(leader, batch)
                .await
                .expect("the leader answers");
            sent += 1;
        }
        sent
    };
    let timing = async {
        let mut round_trips = Vec::new();
        while Instant::now() < end {
            let started = Instant::now();
            node.query(|_| ()).await.expect("the driver answers");
            round_trips.push(started.elapsed());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        round_trips.sort();
        round_trips
    };
    let (reads, resent, round_trips) = tokio::join!(futures_join_all(readers), resend, timing);
    let after = cluster.wait_converged(&members).await;
    let computations = computed() - computed_before;
    let reads: u64 = reads.iter().sum();
    let p99 = round_trips[round_trips.len() * 99 / 100];
    let max = *round_trips.last().expect("timed at least once");
    eprintln!(
        "{reads} linearizable reads and {resent} batches sent again in {load_for:?}: {computations} computations over {} applied indexes; driver round trip p99 {p99:?}, max {max:?}",
        after.applied_index - before.applied_index
    );
    assert!(reads > 0 && resent > 0);
    assert_eq!(
        (after.replica_id, after.term),
        (before.replica_id, before.term),
        "the leader kept its lease: no election"
    );
    let changes_after: Vec<u64> = members.iter().map(|&id| changes(id)).collect();
    assert_eq!(
        changes_after, changes_before,
        "no replica saw a leader change"
    );
    assert!(
        computations <= after.applied_index - before.applied_index,
        "at most one computation per applied index"
    );
    cluster.check_end(&members).await;
}

/// Runs futures concurrently on this task and returns their outputs in order.
async fn futures_join_all<F: std::future::Future>(
    futures: impl IntoIterator<Item = F>,
) -> Vec<F::Output> {
    let mut set: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = set.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, output) in set.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    std::task::Poll::Ready(value) => *output = Some(value),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    outputs
        .into_iter()
        .map(|o| o.expect("every future ended"))
        .collect()
}
