//! What the township tests share: a small synthetic county with its keys, a dev PKI with a
//! certificate for every polling unit, townships run in-process on 127.0.0.1 port 0 (each on a
//! tokio runtime of its own, so dropping it is a crash), clients as a polling unit, a township
//! clerk or an operator would hold them, and a 3-replica county cluster to forward to.

#![allow(dead_code)] // Each test file uses its own part of the harness.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use ed25519_dalek::SigningKey;
use tally_core::definition::Definition;
use tally_core::ids::{TownshipId, UnitId};
use tally_core::ledger::Ledger;
use tally_core::results::ElectionResult;
use tally_core::sheet::TallySheet;
use tally_net::{Identity, Role, TlsFiles};
use tally_proto::SignedSheet;
use tally_rpc::pb;
use tally_rpc::pb::county_client::CountyClient;
use tally_rpc::pb::sheet_outcome::Kind;
use tally_rpc::pb::township_client::TownshipClient;
use tally_synth::GenParams;
use tally_township::{OutboxSettings, Running, TownshipSetup};
use tokio::runtime::Runtime;
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};

/// The longest any wait for a condition may take before the test fails.
pub const WAIT_MAX: Duration = Duration::from_secs(30);
/// Pause between two polls of a condition.
pub const POLL_INTERVAL: Duration = Duration::from_millis(25);
/// A short raft tick, so a county election takes 0.2 to 0.4 s.
pub const TICK: Duration = Duration::from_millis(20);
pub const OPERATOR: &str = "alice";
pub const REPLICAS: [u64; 3] = [1, 2, 3];
const CLUSTER_ID: &str = "township-test";

// ---------------------------------------------------------------- the county

/// A small county: three townships, a few dozen units, one sheet per unit and contest.
pub struct Fixture {
    pub county_name: String,
    pub definition: Arc<Definition>,
    /// Every generated sheet and its envelope, in the generator's order.
    pub sheets: Vec<(TallySheet, SignedSheet)>,
    pub township_keys: BTreeMap<TownshipId, SigningKey>,
    pub unit_keys: HashMap<UnitId, SigningKey>,
}

pub fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let params = GenParams {
            seed: 11,
            county_name: "测试县".into(),
            townships: 3,
            population: 120_000,
            voters_per_station: 2_000,
            scenarios: false,
        };
        let generated = tally_synth::generate(&params).expect("the parameters are valid");
        let definition =
            Arc::new(tally_synth::definition(&generated).expect("the definition loads"));
        let signed = tally_synth::sign_all(&generated);
        Fixture {
            county_name: params.county_name,
            definition,
            sheets: generated.sheets.iter().cloned().zip(signed).collect(),
            township_keys: generated.township_keys.iter().cloned().collect(),
            unit_keys: generated
                .units
                .iter()
                .map(|u| (u.id.clone(), u.key.clone()))
                .collect(),
        }
    })
}

pub fn township(id: &str) -> TownshipId {
    TownshipId::new(id)
}

/// The generated sheets of one township's units, with their envelopes.
pub fn sheets_of(township: &str) -> Vec<(TallySheet, SignedSheet)> {
    let f = fixture();
    f.sheets
        .iter()
        .filter(|(sheet, _)| {
            f.definition
                .unit(&sheet.unit)
                .is_some_and(|u| u.township.as_str() == township)
        })
        .cloned()
        .collect()
}

/// The units of one township, in definition order.
pub fn units_of(township: &str) -> Vec<UnitId> {
    fixture()
        .definition
        .units
        .iter()
        .filter(|u| u.township.as_str() == township)
        .map(|u| u.id.clone())
        .collect()
}

/// Signs `sheet` with its own unit's key.
pub fn sign(sheet: &TallySheet) -> SignedSheet {
    tally_proto::sign(
        sheet,
        &fixture().unit_keys[&sheet.unit],
        &fixture().definition.election,
    )
}

/// The offline computation over the given sheets, verified, in this order.
pub fn offline(sheets: &[SignedSheet]) -> ElectionResult {
    let definition = &fixture().definition;
    let mut ledger = Ledger::new();
    for signed in sheets {
        let verified = tally_proto::verify(definition, signed).expect("a stored sheet verifies");
        ledger.submit(verified.sheet, verified.digest);
    }
    tally_core::results::compute(definition, &ledger)
}

pub fn kind(outcome: &pb::SheetOutcome) -> Kind {
    Kind::try_from(outcome.kind).unwrap_or(Kind::Unspecified)
}

pub fn kinds(outcomes: &[pb::SheetOutcome]) -> Vec<Kind> {
    outcomes.iter().map(kind).collect()
}

/// Polls `probe` until it gives a value, or panics after [`WAIT_MAX`] with what it last said.
pub async fn poll<T>(what: &str, mut probe: impl AsyncFnMut() -> Result<T, String>) -> T {
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

/// An address nobody listens on (bound, then let go).
pub fn unused_address() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("a bound address").to_string()
}

// ---------------------------------------------------------------- the environment

/// One test's world: a temporary folder with the PKI and every data directory.
pub struct Env {
    pub root: tempfile::TempDir,
    pub pki: PathBuf,
}

impl Env {
    /// A PKI with certificates for the county's replicas, every township, every polling unit
    /// (village) and one operator.
    pub fn new() -> Env {
        let f = fixture();
        let root = tempfile::tempdir().expect("a temp dir");
        let pki = root.path().join("pki");
        let mut identities = Vec::new();
        for id in REPLICAS {
            identities.push(Identity::replica(id).expect("a replica id"));
        }
        for township in f.township_keys.keys() {
            identities.push(Identity::new(Role::Township, township.as_str()).expect("an id"));
        }
        for unit in &f.definition.units {
            identities.push(Identity::new(Role::Village, unit.id.as_str()).expect("an id"));
        }
        identities.push(Identity::new(Role::Operator, OPERATOR).expect("a name"));
        tally_net::write_dev_pki_for(
            &pki,
            &f.county_name,
            &identities,
            &["127.0.0.1".into(), "localhost".into()],
        )
        .expect("the dev PKI is written");
        Env { root, pki }
    }

    pub fn data_dir(&self, name: &str) -> PathBuf {
        self.root.path().join(name)
    }

    /// The setup of township `id`'s aggregator, forwarding to `county`.
    pub fn setup(&self, id: &str, county: &[String], outbox: OutboxSettings) -> TownshipSetup {
        let f = fixture();
        let identity = Identity::new(Role::Township, id).expect("a township id");
        let (county_tls, _) = TlsFiles::in_dir(&self.pki, &identity)
            .client_tls("localhost")
            .expect("the township's TLS files");
        TownshipSetup {
            township_id: township(id),
            data_dir: self.data_dir(&format!("township-{id}")),
            definition: f.definition.clone(),
            countersign_key: f.township_keys[&township(id)].clone(),
            county: county.to_vec(),
            county_tls,
            outbox,
        }
    }

    /// Starts township `id`'s aggregator on `address` (`127.0.0.1:0` for any port), on a
    /// runtime of its own; retries while the port or the database are still held by an
    /// aggregator that ran there before.
    pub async fn start_township(
        &self,
        id: &str,
        address: &str,
        county: &[String],
        outbox: OutboxSettings,
    ) -> TestTownship {
        let deadline = Instant::now() + WAIT_MAX;
        loop {
            match self.try_start(id, address, county, outbox) {
                Ok(t) => return t,
                Err(e) if Instant::now() >= deadline => {
                    panic!("township {id} did not start within {WAIT_MAX:?}: {e}")
                }
                Err(_) => tokio::time::sleep(POLL_INTERVAL).await,
            }
        }
    }

    pub fn try_start(
        &self,
        id: &str,
        address: &str,
        county: &[String],
        outbox: OutboxSettings,
    ) -> Result<TestTownship, String> {
        let identity = Identity::new(Role::Township, id).expect("a township id");
        let (server_tls, _) = TlsFiles::in_dir(&self.pki, &identity)
            .server_tls()
            .map_err(|e| e.to_string())?;
        let listener =
            std::net::TcpListener::bind(address).map_err(|e| format!("bind {address}: {e}"))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| format!("nonblocking: {e}"))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(format!("township-{id}"))
            .enable_all()
            .build()
            .map_err(|e| format!("runtime: {e}"))?;
        let started = {
            let _inside = runtime.enter();
            tokio::net::TcpListener::from_std(listener)
                .map_err(|e| e.to_string())
                .and_then(|listener| {
                    tally_township::start(self.setup(id, county, outbox), server_tls, listener)
                        .map_err(|e| e.to_string())
                })
        };
        match started {
            Ok(running) => Ok(TestTownship {
                id: id.to_owned(),
                address: running.address().to_string(),
                running: Some(running),
                runtime: Some(runtime),
            }),
            Err(e) => {
                runtime.shutdown_background();
                Err(e)
            }
        }
    }

    pub fn channel(&self, address: &str, who: &Identity) -> Channel {
        let (tls, _) = TlsFiles::in_dir(&self.pki, who)
            .client_tls("127.0.0.1")
            .expect("the test PKI has this identity");
        Endpoint::from_shared(format!("https://{address}"))
            .expect("host:port")
            .tls_config(tls)
            .expect("a client TLS config")
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(20))
            .connect_lazy()
    }

    /// A Township client with `who`'s certificate.
    pub fn township_client(&self, address: &str, who: &Identity) -> TownshipClient<Channel> {
        TownshipClient::new(self.channel(address, who)).max_decoding_message_size(64 << 20)
    }

    /// The polling unit `unit`'s client of the township at `address`.
    pub fn village(&self, address: &str, unit: &UnitId) -> TownshipClient<Channel> {
        self.township_client(
            address,
            &Identity::new(Role::Village, unit.as_str()).expect("a unit id"),
        )
    }

    pub fn county_client(&self, address: &str) -> CountyClient<Channel> {
        CountyClient::new(self.channel(address, &operator())).max_decoding_message_size(64 << 20)
    }
}

pub fn operator() -> Identity {
    Identity::new(Role::Operator, OPERATOR).expect("a valid operator name")
}

pub fn clerk(township: &str) -> Identity {
    Identity::new(Role::Township, township).expect("a valid township id")
}

/// Submits envelopes as `unit`'s polling unit; the outcomes, or the call's error.
pub async fn submit(
    client: &mut TownshipClient<Channel>,
    sheets: &[SignedSheet],
) -> Result<Vec<pb::SheetOutcome>, tonic::Status> {
    client
        .submit(pb::SubmitRequest {
            sheets: sheets.iter().map(SignedSheet::to_pb).collect(),
            source: String::new(),
        })
        .await
        .map(|r| r.into_inner().outcomes)
}

pub async fn picture(env: &Env, address: &str, who: &Identity) -> pb::PictureResponse {
    env.township_client(address, who)
        .picture(pb::PictureRequest {})
        .await
        .unwrap_or_else(|s| panic!("Picture as {who}: {s:?}"))
        .into_inner()
}

/// A township aggregator running in the test process on a runtime of its own.
pub struct TestTownship {
    pub id: String,
    pub address: String,
    running: Option<Running>,
    runtime: Option<Runtime>,
}

impl TestTownship {
    pub fn running(&self) -> &Running {
        self.running.as_ref().expect("the township runs")
    }

    /// Stops it as SIGTERM does: no more calls, calls in progress finish, queued sheets are
    /// stored; its database is closed when this returns.
    pub async fn stop(mut self) {
        let running = self.running.take().expect("the township runs");
        let runtime = self.runtime.take().expect("the township has its runtime");
        let stopped = runtime.spawn(running.stop());
        tokio::time::timeout(WAIT_MAX, stopped)
            .await
            .expect("a township stops in time")
            .expect("the stop task ends");
        drop_runtime(runtime).await;
    }

    /// Kills it: its runtime is dropped with every task, connection and its open database, as
    /// a killed process would lose them. Only what was committed is on disk.
    pub async fn crash(mut self) {
        drop(self.running.take());
        let runtime = self.runtime.take().expect("the township has its runtime");
        drop_runtime(runtime).await;
    }
}

impl Drop for TestTownship {
    fn drop(&mut self) {
        drop(self.running.take());
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Dropping a runtime blocks until its workers stop, which the test's own runtime may not do
/// on its thread.
async fn drop_runtime(runtime: Runtime) {
    let stopped = tokio::task::spawn_blocking(move || drop(runtime));
    tokio::time::timeout(WAIT_MAX, stopped)
        .await
        .expect("a runtime stops in time")
        .expect("a runtime stops");
}

// ---------------------------------------------------------------- a county cluster

/// A 3-replica county cluster, each replica on a runtime of its own, on fixed addresses.
pub struct County {
    pub addresses: Vec<String>,
    runtimes: Vec<Runtime>,
}

impl County {
    /// Starts the cluster on `addresses` (one per replica of [`REPLICAS`]).
    pub async fn start(env: &Env, addresses: &[String]) -> County {
        let peers: BTreeMap<u64, String> = REPLICAS
            .iter()
            .copied()
            .zip(addresses.iter().cloned())
            .collect();
        let mut runtimes = Vec::new();
        for (&id, address) in REPLICAS.iter().zip(addresses) {
            let deadline = Instant::now() + WAIT_MAX;
            let runtime = loop {
                match start_replica(env, id, address, &peers) {
                    Ok(runtime) => break runtime,
                    Err(e) if Instant::now() >= deadline => {
                        panic!("replica {id} did not start on {address}: {e}")
                    }
                    Err(_) => tokio::time::sleep(POLL_INTERVAL).await,
                }
            };
            runtimes.push(runtime);
        }
        County {
            addresses: addresses.to_vec(),
            runtimes,
        }
    }

    /// A linearizable Results read of the whole county, read again after transient errors.
    pub async fn results(&self, env: &Env) -> pb::ResultsResponse {
        let mut i = 0;
        poll("the county to serve Results", async || {
            i += 1;
            let address = &self.addresses[i % self.addresses.len()];
            env.county_client(address)
                .results(pb::ResultsRequest::default())
                .await
                .map(|r| r.into_inner())
                .map_err(|s| format!("{address}: {s:?}"))
        })
        .await
    }

    /// The leader's status, once there is one.
    pub async fn leader_status(&self, env: &Env) -> pb::StatusResponse {
        poll("the county to elect a leader", async || {
            for address in &self.addresses {
                if let Ok(s) = env
                    .county_client(address)
                    .status(pb::StatusRequest {})
                    .await
                {
                    let s = s.into_inner();
                    if s.role == "leader" {
                        return Ok(s);
                    }
                }
            }
            Err("no replica says it leads".to_owned())
        })
        .await
    }

    pub async fn stop(self) {
        for runtime in self.runtimes {
            drop_runtime(runtime).await;
        }
    }
}

fn start_replica(
    env: &Env,
    id: u64,
    address: &str,
    peers: &BTreeMap<u64, String>,
) -> Result<Runtime, String> {
    use tally_county::server::{self, ReplicaSetup};
    let listener =
        std::net::TcpListener::bind(address).map_err(|e| format!("bind {address}: {e}"))?;
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
        (|| -> Result<(), String> {
            let identity = Identity::replica(id).expect("a replica id");
            let tls_files = TlsFiles::in_dir(&env.pki, &identity);
            let opened = server::open(ReplicaSetup {
                cluster_id: CLUSTER_ID.into(),
                replica_id: tally_county::ReplicaId::new(id),
                data_dir: env.data_dir(&format!("replica-{id}")),
                definition: fixture().definition.clone(),
                initial_voters: REPLICAS
                    .iter()
                    .copied()
                    .map(tally_county::ReplicaId::new)
                    .collect(),
                peers: peers
                    .iter()
                    .map(|(id, address)| (tally_county::ReplicaId::new(*id), address.clone()))
                    .collect(),
                tick: TICK,
                compact_after_entries: 10_000,
                dialer: Arc::new(
                    tally_county::transport::TlsDialer::new(&tls_files)
                        .map_err(|e| e.to_string())?,
                ),
            })
            .map_err(|e| e.to_string())?;
            let (tls, _) = tls_files.server_tls().map_err(|e| e.to_string())?;
            let builder = tonic::transport::Server::builder()
                .tls_config(tls)
                .map_err(|e| e.to_string())?;
            let router = server::router(builder, opened.shared);
            let listener = tokio::net::TcpListener::from_std(listener)
                .map_err(|e| format!("listener: {e}"))?;
            tokio::spawn(async move {
                let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
                let _ = router.serve_with_incoming(incoming).await;
            });
            Ok(())
        })()
    };
    match started {
        Ok(()) => Ok(runtime),
        Err(e) => {
            runtime.shutdown_background();
            Err(e)
        }
    }
}

/// Checks what a county operator checks at the end: the county holds every sheet the township
/// stored, each once (its chain is exactly that long), and its results equal the offline
/// computation over those sheets.
pub async fn check_county_equals_offline(env: &Env, county: &County, stored: &[SignedSheet]) {
    let results = county.results(env).await;
    assert_eq!(
        results.chain_length,
        stored.len() as u64 + 1,
        "the county recorded its founding, then each sheet the township stored exactly once"
    );
    let expected = serde_json::to_value(offline(stored)).expect("a result serializes");
    let served: serde_json::Value =
        serde_json::from_str(&results.result_json).expect("result_json is JSON");
    if served != expected {
        let differing: Vec<String> = expected["contests"]
            .as_array()
            .into_iter()
            .flatten()
            .zip(served["contests"].as_array().into_iter().flatten())
            .filter(|(e, s)| e != s)
            .map(|(e, _)| e["contest"].to_string())
            .collect();
        panic!(
            "the county's results differ from the offline computation over the {} stored sheets; contests differing: {differing:?}",
            stored.len()
        );
    }
}
