//! Network partitions for real: three `tally county` replicas and a township client, each in
//! its own Linux network namespace, linked by veth pairs to a hub namespace that routes
//! between them. Faults are routing-policy rules in the hub (`ip rule ... blackhole`), which
//! drop packets silently, as a dead switch port or a hung machine does; a SIGKILL (tested in
//! county_processes.rs) refuses connections at once and never showed the stall this test
//! measures.
//!
//! Needs root and `ip netns` (iproute2): without them the test prints why and passes without
//! running (CI runs as root). Every namespace it makes carries a name unique to the run, and
//! is deleted when the test ends, passed or failed; every process it starts is killed.
//!
//! Run alone, with the figures printed:
//! `cargo test -p tally-tests --test partition -- --nocapture`

use std::collections::{BTreeMap, BTreeSet};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tally_core::ids::TownshipId;
use tally_net::{Identity, Role, TlsFiles};
use tally_proto::SignedSheet;
use tally_rpc::pb;
use tally_rpc::pb::county_client::CountyClient;
use tally_synth::GenParams;
use tally_tests::{Process, tail};
use tempfile::TempDir;
use tonic::transport::{Channel, Endpoint};

const REPLICAS: [u64; 3] = [1, 2, 3];
/// The township client's node number (its namespace and subnet), after the replicas'.
const TOWNSHIP_NODE: u64 = 4;
/// The port every replica listens on, in its own namespace.
const REPLICA_PORT: u16 = 7100;
/// One township of about 500 polling units, two sheets each: a stream of sheets that lasts the
/// whole test at the pace below (sheets are sent again, answered DUPLICATE, once all went).
fn params() -> GenParams {
    GenParams {
        seed: 11,
        county_name: "partition county".into(),
        townships: 1,
        population: 1_000_000,
        voters_per_station: 2_000,
        scenarios: false,
    }
}
/// Concurrent submitters, each starting at a different replica (one at the leader, two at
/// followers, which forward to it).
const SUBMITTERS: usize = 3;
/// Sheets per `County.Ingest` batch.
const BATCH: usize = 2;
/// The pause between one submitter's batches: some 60 sheets a second in all.
const PACE: Duration = Duration::from_millis(100);
/// What the township forwarder allows one call (crates/tally-township/src/forward.rs).
const CALL_DEADLINE: Duration = tally_township::forward::CALL_DEADLINE;
/// The pause before a submitter tries the next replica after a failed call.
const RETRY_PAUSE: Duration = Duration::from_millis(100);
/// The bar of issue 10: ingest resumes within this long of the new leader's election (or of
/// the fault, when no election follows it).
const RESUME_MAX: Duration = Duration::from_secs(3);
/// How soon every submitter is acknowledged again after a follower is cut off, well before the
/// 10 s call deadline: the one talking to an isolated replica leaves it when an HTTP/2 ping
/// goes unanswered (1 s + 2 s); the one talking to a follower that no longer hears the leader
/// is told UNAVAILABLE after an election timeout without one (up to 2 s) and the follower's
/// wait for a new leader (one more); then one retry pause.
const SILENT_REPLICA_LEFT_MAX: Duration = Duration::from_secs(6);
/// The isolated leader must say it no longer leads within this long: check_quorum makes it
/// step down after an election timeout (1 to 2 s at the default 100 ms tick) without hearing
/// from a majority.
const STEP_DOWN_MAX: Duration = Duration::from_secs(5);
/// How long a fault lasts before it is healed.
const FAULT_HOLD: Duration = Duration::from_secs(6);
/// Acknowledgements the load must have reached before the first fault.
const WARM_ACKS: usize = 30;
const POLL: Duration = Duration::from_millis(50);
const WAIT_MAX: Duration = Duration::from_secs(60);
const STATUS_TIMEOUT: Duration = Duration::from_millis(500);
/// Lines of each replica's log shown when a check fails.
const LOG_TAIL_LINES: usize = 30;

fn sh(args: &[&str]) -> Result<String, String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{}: {e}", args.join(" ")))?;
    if !out.status.success() {
        return Err(format!(
            "{} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn must(args: &[&str]) {
    if let Err(e) = sh(args) {
        panic!("{e}");
    }
}

/// Why the test cannot run here, if it cannot.
fn cannot_run() -> Option<String> {
    match sh(&["id", "-u"]) {
        Ok(uid) if uid.trim() == "0" => {}
        Ok(uid) => {
            return Some(format!(
                "not root (uid {}): network namespaces need root",
                uid.trim()
            ));
        }
        Err(e) => return Some(format!("cannot tell the user id: {e}")),
    }
    if let Err(e) = sh(&["ip", "netns", "list"]) {
        return Some(format!(
            "`ip netns` is unavailable ({e}); install the Debian package iproute2"
        ));
    }
    None
}

/// The namespaces and links of one run, deleted on drop.
struct Net {
    run: String,
    /// Made so far, deleted in reverse.
    namespaces: Vec<String>,
}

impl Net {
    fn ns(&self, node: &str) -> String {
        format!("tpt{}-{node}", self.run)
    }

    fn hub(&self) -> String {
        self.ns("hub")
    }

    /// Node `k`'s address: 10.77.k.2 in its own subnet, whose gateway is the hub's 10.77.k.1.
    fn address(k: u64) -> String {
        format!("10.77.{k}.2")
    }

    fn make(run: String) -> Net {
        let mut net = Net {
            run,
            namespaces: Vec::new(),
        };
        let hub = net.hub();
        net.add_namespace(&hub);
        must(&[
            "ip",
            "netns",
            "exec",
            &hub,
            "sh",
            "-c",
            "echo 1 > /proc/sys/net/ipv4/ip_forward",
        ]);
        for k in REPLICAS.iter().copied().chain([TOWNSHIP_NODE]) {
            let ns = net.ns(&k.to_string());
            net.add_namespace(&ns);
            let (hub_end, node_end) = (format!("tp{}h{k}", net.run), format!("tp{}n{k}", net.run));
            must(&[
                "ip", "link", "add", &hub_end, "type", "veth", "peer", "name", &node_end,
            ]);
            must(&["ip", "link", "set", &hub_end, "netns", &hub]);
            must(&["ip", "link", "set", &node_end, "netns", &ns]);
            must(&[
                "ip",
                "-n",
                &hub,
                "addr",
                "add",
                &format!("10.77.{k}.1/24"),
                "dev",
                &hub_end,
            ]);
            must(&["ip", "-n", &hub, "link", "set", &hub_end, "up"]);
            must(&[
                "ip",
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{}/24", Net::address(k)),
                "dev",
                &node_end,
            ]);
            must(&["ip", "-n", &ns, "link", "set", &node_end, "up"]);
            must(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
            must(&[
                "ip",
                "-n",
                &ns,
                "route",
                "add",
                "default",
                "via",
                &format!("10.77.{k}.1"),
            ]);
        }
        net
    }

    fn add_namespace(&mut self, name: &str) {
        must(&["ip", "netns", "add", name]);
        self.namespaces.push(name.to_owned());
    }

    /// Drops, in the hub, every packet from node `from` to node `to` (one direction).
    fn cut(&self, from: u64, to: u64) {
        must(&[
            "ip",
            "-n",
            &self.hub(),
            "rule",
            "add",
            "from",
            &Net::address(from),
            "to",
            &Net::address(to),
            "blackhole",
        ]);
    }

    /// Drops every packet to and from node `k` in the hub.
    fn isolate(&self, k: u64) {
        let hub = self.hub();
        let address = Net::address(k);
        must(&[
            "ip",
            "-n",
            &hub,
            "rule",
            "add",
            "from",
            &address,
            "blackhole",
        ]);
        must(&["ip", "-n", &hub, "rule", "add", "to", &address, "blackhole"]);
    }

    /// Removes every fault rule.
    fn heal(&self) {
        let hub = self.hub();
        let rules = sh(&["ip", "-n", &hub, "rule", "show"]).unwrap_or_default();
        for line in rules.lines().filter(|l| l.contains("blackhole")) {
            let Some((pref, _)) = line.split_once(':') else {
                continue;
            };
            must(&["ip", "-n", &hub, "rule", "del", "pref", pref.trim()]);
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        // Deleting a namespace deletes the veth ends inside it, and so their peers.
        for ns in self.namespaces.iter().rev() {
            if let Err(e) = sh(&["ip", "netns", "del", ns]) {
                eprintln!("could not delete network namespace {ns}: {e}");
            }
        }
        // A pair made but not yet moved into its namespaces (set-up failed half-way) is still
        // in this one; otherwise these names are gone already and the errors mean nothing.
        for k in REPLICAS.iter().copied().chain([TOWNSHIP_NODE]) {
            let _ = sh(&["ip", "link", "del", &format!("tp{}h{k}", self.run)]);
            let _ = sh(&["ip", "link", "del", &format!("tp{}n{k}", self.run)]);
        }
    }
}

/// Runs `f` on a new thread inside network namespace `ns`, with its own tokio runtime: every
/// socket it opens belongs to that namespace.
fn in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce(&tokio::runtime::Runtime) -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        rustix::thread::move_into_link_name_space(
            file.as_fd(),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )
        .unwrap_or_else(|e| panic!("cannot enter network namespace {path}: {e}"));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime can be built");
        f(&runtime)
    })
}

/// A channel as the township forwarder makes one: a connect timeout, and HTTP/2 pings that
/// close a connection whose replica stops answering (a silent replica is left within 3 s).
fn channel(files: &TlsFiles, address: &str) -> Channel {
    let host = address.rsplit_once(':').map_or(address, |(h, _)| h);
    let (tls, _) = files.client_tls(host).expect("the certificates load");
    Endpoint::from_shared(format!("https://{address}"))
        .expect("an address")
        .tls_config(tls)
        .expect("a TLS config")
        .connect_timeout(tally_township::forward::CONNECT_TIMEOUT)
        .http2_keep_alive_interval(tally_township::forward::SILENCE_PING_AFTER)
        .keep_alive_timeout(tally_township::forward::PING_ANSWER_TIMEOUT)
        .connect_lazy()
}

/// One acknowledged batch: when, which replica answered as leader, the digests.
#[derive(Clone)]
struct Ack {
    submitter: usize,
    at: Instant,
    leader: u64,
    digests: Vec<String>,
}

/// What the submitters saw.
#[derive(Default)]
struct Seen {
    acks: Vec<Ack>,
    failures: Vec<(Instant, String)>,
}

struct Setup {
    _dir: TempDir,
    root: PathBuf,
    program: PathBuf,
    township: TownshipId,
    countersign_key: ed25519_dalek::SigningKey,
    election: tally_core::definition::Election,
    sheets: Vec<SignedSheet>,
    township_files: TlsFiles,
    operator_files: TlsFiles,
}

fn prepare() -> Setup {
    let dir = tally_tests::tempdir();
    let root = dir.path().join("county");
    let program = tally_tests::tally_binary().to_path_buf();
    let county = tally_tests::lay_out_county(&root, &params(), Default::default());
    let (township, countersign_key) = county.generated.township_keys[0].clone();
    let sheets: Vec<SignedSheet> = county
        .sheets
        .iter()
        .filter(|s| {
            tally_proto::decode_sheet(&s.sheet)
                .ok()
                .and_then(|sheet| {
                    county
                        .definition
                        .unit(&sheet.unit)
                        .map(|u| u.township.clone())
                })
                .as_ref()
                == Some(&township)
        })
        .cloned()
        .collect();
    // Certificates naming the namespaces' addresses (the local county's name 127.0.0.1).
    let pki = dir.path().join("pki-netns");
    let mut identities: Vec<Identity> = REPLICAS
        .iter()
        .map(|id| Identity::replica(*id).expect("a replica identity"))
        .collect();
    let township_identity = Identity::new(Role::Township, township.as_str()).expect("township");
    let operator = Identity::new(Role::Operator, "operator").expect("operator");
    identities.push(township_identity.clone());
    identities.push(operator.clone());
    let hosts: Vec<String> = REPLICAS.iter().map(|k| Net::address(*k)).collect();
    tally_net::write_dev_pki_for(&pki, "partition county", &identities, &hosts)
        .expect("the certificates");
    let definition = root.join("sample-county/election.toml");
    let peers: String = REPLICAS
        .iter()
        .map(|k| format!("{k} = \"{}:{REPLICA_PORT}\"\n", Net::address(*k)))
        .collect();
    for id in REPLICAS {
        let address = format!("{}:{REPLICA_PORT}", Net::address(id));
        let text = format!(
            "cluster_id = \"partition-test\"\n\
             replica_id = {id}\n\
             listen = \"{address}\"\n\
             advertise = \"{address}\"\n\
             data_dir = {data:?}\n\
             definition = {definition:?}\n\
             initial_voters = [1, 2, 3]\n\
             \n[peers]\n{peers}\n\
             [tls]\n\
             ca = {ca:?}\n\
             cert = {cert:?}\n\
             key = {key:?}\n",
            data = dir.path().join(format!("data/replica-{id}")),
            ca = pki.join("ca.pem"),
            cert = pki.join(format!("replica-{id}.pem")),
            key = pki.join(format!("replica-{id}.key")),
        );
        std::fs::write(dir.path().join(format!("replica-{id}.toml")), text).expect("config");
    }
    Setup {
        root: dir.path().to_path_buf(),
        _dir: dir,
        program,
        township,
        countersign_key,
        election: county.generated.election(),
        sheets,
        township_files: TlsFiles::in_dir(&pki, &township_identity),
        operator_files: TlsFiles::in_dir(&pki, &operator),
    }
}

fn start_replica(net: &Net, setup: &Setup, id: u64) -> Process {
    let log = std::fs::File::create(setup.root.join(format!("replica-{id}.log"))).expect("log");
    let child = Command::new("ip")
        .args(["netns", "exec", &net.ns(&id.to_string())])
        .arg(&setup.program)
        .args(["county", "--config"])
        .arg(setup.root.join(format!("replica-{id}.toml")))
        .current_dir(&setup.root)
        .env("NO_COLOR", "1")
        .env("TALLY_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("tally county starts");
    Process(child)
}

fn logs(root: &Path) -> String {
    let mut out = String::new();
    for id in REPLICAS {
        let tail = tail(&root.join(format!("replica-{id}.log")), LOG_TAIL_LINES);
        out.push_str(&format!("\n--- replica {id}\n{tail}"));
    }
    out
}

async fn status(channel: &Channel) -> Option<pb::StatusResponse> {
    let mut client = CountyClient::new(channel.clone());
    tokio::time::timeout(STATUS_TIMEOUT, client.status(pb::StatusRequest {}))
        .await
        .ok()?
        .ok()
        .map(|r| r.into_inner())
}

/// The leader of the highest term that any of `ids` reports, and that term.
async fn leader(replicas: &BTreeMap<u64, Channel>, ids: &[u64]) -> Option<(u64, u64)> {
    let mut best: Option<(u64, u64)> = None;
    for id in ids {
        if let Some(s) = status(&replicas[id]).await
            && s.role == "leader"
            && best.is_none_or(|(_, term)| s.term > term)
        {
            best = Some((*id, s.term));
        }
    }
    best
}

/// Polls until one of `ids` leads with a term above `after_term`; when it was seen.
async fn elected(
    replicas: &BTreeMap<u64, Channel>,
    ids: &[u64],
    after_term: u64,
    within: Duration,
) -> Option<(u64, u64, Instant)> {
    let until = Instant::now() + within;
    while Instant::now() < until {
        if let Some((id, term)) = leader(replicas, ids).await
            && term > after_term
        {
            return Some((id, term, Instant::now()));
        }
        tokio::time::sleep(POLL).await;
    }
    None
}

/// One submitter: sends its sheets in batches of [`BATCH`], one at a time, to the replica it
/// talks to, and to the next one after a failed call, until `stop`.
async fn submit(
    index: usize,
    setup: Arc<SubmitSetup>,
    seen: Arc<Mutex<Seen>>,
    stop: tokio::sync::watch::Receiver<bool>,
    mut home: tokio::sync::watch::Receiver<()>,
) {
    let sheets: Vec<&SignedSheet> = setup
        .sheets
        .iter()
        .skip(index)
        .step_by(SUBMITTERS)
        .collect();
    let mut current = index % setup.channels.len();
    let mut next = 0usize;
    while !*stop.borrow() {
        if home.has_changed().unwrap_or(false) {
            home.borrow_and_update();
            current = index % setup.channels.len();
        }
        let batch: Vec<SignedSheet> = (0..BATCH)
            .map(|i| sheets[(next + i) % sheets.len()].clone())
            .collect();
        let countersignature = tally_proto::countersign(
            &setup.election,
            &setup.township,
            &batch,
            &setup.countersign_key,
        );
        let mut request = tonic::Request::new(pb::IngestRequest {
            township_id: setup.township.to_string(),
            sheets: batch.iter().map(SignedSheet::to_pb).collect(),
            countersignature: Some(countersignature.to_pb()),
            definition_digest: String::new(),
        });
        request.set_timeout(CALL_DEADLINE);
        let mut client = CountyClient::new(setup.channels[current].clone());
        let answer = tokio::time::timeout(
            CALL_DEADLINE + Duration::from_secs(1),
            client.ingest(request),
        )
        .await;
        match answer {
            Ok(Ok(response)) => {
                let response = response.into_inner();
                let recorded: Vec<String> = response
                    .outcomes
                    .iter()
                    .filter(|o| o.kind != pb::sheet_outcome::Kind::Refused as i32)
                    .map(|o| o.digest.clone())
                    .collect();
                assert_eq!(
                    recorded.len(),
                    BATCH,
                    "the county refused a generated sheet: {:?}",
                    response.outcomes
                );
                seen.lock().unwrap().acks.push(Ack {
                    submitter: index,
                    at: Instant::now(),
                    leader: response.leader_id,
                    digests: recorded,
                });
                next += BATCH;
                tokio::time::sleep(PACE).await;
            }
            failed => {
                let error = match failed {
                    Ok(Err(status)) => format!("{:?}: {}", status.code(), status.message()),
                    _ => "no answer within the call deadline".to_owned(),
                };
                seen.lock().unwrap().failures.push((
                    Instant::now(),
                    format!("submitter {index} at replica {}: {error}", current + 1),
                ));
                current = (current + 1) % setup.channels.len();
                tokio::time::sleep(RETRY_PAUSE).await;
            }
        }
    }
}

struct SubmitSetup {
    township: TownshipId,
    countersign_key: ed25519_dalek::SigningKey,
    election: tally_core::definition::Election,
    sheets: Vec<SignedSheet>,
    /// To replicas 1, 2, 3 in order.
    channels: Vec<Channel>,
}

/// Whether the isolated replica `id` says it no longer leads, asked from inside its own
/// namespace (nothing else can reach it); when it first did.
fn watch_step_down(
    net: &Net,
    operator: TlsFiles,
    id: u64,
) -> std::thread::JoinHandle<Option<Instant>> {
    in_netns(&net.ns(&id.to_string()), move |runtime| {
        runtime.block_on(async move {
            let channel = channel(&operator, &format!("{}:{REPLICA_PORT}", Net::address(id)));
            let until = Instant::now() + STEP_DOWN_MAX * 2;
            while Instant::now() < until {
                if let Some(s) = status(&channel).await
                    && s.role != "leader"
                {
                    return Some(Instant::now());
                }
                tokio::time::sleep(POLL).await;
            }
            None
        })
    })
}

/// The first batch acknowledged after `since` by a leader other than `not_by`, to
/// `submitter` (any when `None`).
fn first_ack_after(
    seen: &Mutex<Seen>,
    since: Instant,
    not_by: Option<u64>,
    submitter: Option<usize>,
) -> Option<Instant> {
    seen.lock()
        .unwrap()
        .acks
        .iter()
        .filter(|a| a.at > since && Some(a.leader) != not_by)
        .filter(|a| submitter.is_none_or(|s| s == a.submitter))
        .map(|a| a.at)
        .min()
}

async fn wait_first_ack(
    seen: &Mutex<Seen>,
    since: Instant,
    not_by: Option<u64>,
    submitter: Option<usize>,
) -> Option<Instant> {
    let until = Instant::now() + WAIT_MAX;
    while Instant::now() < until {
        if let Some(at) = first_ack_after(seen, since, not_by, submitter) {
            return Some(at);
        }
        tokio::time::sleep(POLL).await;
    }
    None
}

/// When each submitter was first acknowledged after `since` (by a leader other than
/// `not_by`), printed, and the longest wait from `from`.
async fn each_resumed(
    seen: &Mutex<Seen>,
    since: Instant,
    not_by: Option<u64>,
    from: Instant,
    phase: &str,
) -> Duration {
    let mut longest = Duration::ZERO;
    let mut line = format!("{phase} each submitter's first acknowledgement:");
    for s in 0..SUBMITTERS {
        let at = wait_first_ack(seen, since, not_by, Some(s))
            .await
            .unwrap_or_else(|| panic!("{phase}: submitter {s} never resumed"));
        let wait = at.saturating_duration_since(from);
        longest = longest.max(wait);
        line.push_str(&format!(" {s}: {}", secs(wait)));
    }
    println!("{line}");
    longest
}

/// Every digest exported by a linearizable `Export`, from the first replica that answers.
async fn exported(replicas: &BTreeMap<u64, Channel>) -> BTreeSet<String> {
    let until = Instant::now() + WAIT_MAX;
    loop {
        for channel in replicas.values() {
            let mut client = CountyClient::new(channel.clone()).max_decoding_message_size(64 << 20);
            let Ok(Ok(response)) = tokio::time::timeout(
                Duration::from_secs(10),
                client.export(pb::ExportRequest { stale: false }),
            )
            .await
            else {
                continue;
            };
            let mut stream = response.into_inner();
            let mut digests = BTreeSet::new();
            let mut complete = true;
            loop {
                match stream.message().await {
                    Ok(Some(chunk)) => {
                        for record in chunk.records {
                            // The founding is the first record; the others are sheets.
                            let Some(sheet) = record.sheet else {
                                assert!(record.founding.is_some(), "a record is one act");
                                continue;
                            };
                            let sheet =
                                SignedSheet::from_pb(sheet).expect("an exported sheet decodes");
                            digests.insert(hex::encode(sheet.digest()));
                        }
                    }
                    Ok(None) => break,
                    Err(_) => {
                        complete = false;
                        break;
                    }
                }
            }
            if complete {
                return digests;
            }
        }
        assert!(
            Instant::now() < until,
            "no replica answered a linearizable export"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Asserts every digest acknowledged so far is in an export issued now.
/// Holds the fault until [`FAULT_HOLD`] after `fault_at`, heals the network, waits until the
/// replicas agree on a leader, and checks that every acknowledged sheet is in an Export: the
/// leader and its term.
async fn heal_after_hold(
    net: &Net,
    replicas: &BTreeMap<u64, Channel>,
    seen: &Mutex<Seen>,
    fault_at: Instant,
    phase: &str,
) -> (u64, u64) {
    tokio::time::sleep(FAULT_HOLD.saturating_sub(fault_at.elapsed())).await;
    net.heal();
    let settled = settled(replicas).await;
    check_acknowledged(replicas, seen, phase).await;
    settled
}

/// A replica other than `leader`.
fn a_follower(leader: u64) -> u64 {
    REPLICAS
        .iter()
        .copied()
        .find(|r| *r != leader)
        .expect("a follower")
}

async fn check_acknowledged(replicas: &BTreeMap<u64, Channel>, seen: &Mutex<Seen>, phase: &str) {
    let acked: BTreeSet<String> = seen
        .lock()
        .unwrap()
        .acks
        .iter()
        .flat_map(|a| a.digests.iter().cloned())
        .collect();
    let exported = exported(replicas).await;
    let missing: Vec<&String> = acked.difference(&exported).collect();
    assert!(
        missing.is_empty(),
        "{phase}: {} acknowledged sheets are missing from a linearizable export issued after their acknowledgement, e.g. {:?}",
        missing.len(),
        missing.iter().take(3).collect::<Vec<_>>()
    );
    println!(
        "{phase}: all {} acknowledged sheets are in the linearizable export ({} records)",
        acked.len(),
        exported.len()
    );
}

/// Waits until all three replicas answer and agree on one leader.
async fn settled(replicas: &BTreeMap<u64, Channel>) -> (u64, u64) {
    let until = Instant::now() + WAIT_MAX;
    loop {
        let mut views = Vec::new();
        for channel in replicas.values() {
            views.push(status(channel).await);
        }
        if let [Some(a), Some(b), Some(c)] = &views[..]
            && a.leader_id != 0
            && a.leader_id == b.leader_id
            && b.leader_id == c.leader_id
            && a.term == b.term
            && b.term == c.term
        {
            return (a.leader_id, a.term);
        }
        assert!(
            Instant::now() < until,
            "the cluster did not settle on one leader: {views:?}"
        );
        tokio::time::sleep(POLL).await;
    }
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

// Goal: under a steady stream of ingest, a partition that isolates the leader, then one that
// isolates a follower, then a cut in one direction only between the leader and a follower,
// lose no acknowledged sheet, make the cut-off leader step down, and stall ingest for at most
// 3 s after the new leader's election (or after the fault, when no election follows).
// Method: real processes in network namespaces (see the module comment); three submitters
// acting as the township (its certificate and countersigning key) call County.Ingest on
// different replicas with the township forwarder's deadline and rotation; the test times each
// fault, the election it causes (polled through Status) and the first acknowledgement after
// it, and checks a linearizable Export after each phase.
#[test]
fn partitions_lose_nothing_and_ingest_resumes_soon() {
    if let Some(reason) = cannot_run() {
        println!("SKIPPED partition test: {reason}");
        return;
    }
    let run = format!(
        "{:04x}",
        (std::process::id() as u64 ^ Instant::now().elapsed().as_nanos() as u64 ^ {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            t.subsec_nanos() as u64
        }) & 0xffff
    );
    let setup = prepare();
    let net = Net::make(run);
    let mut processes: Vec<Process> = REPLICAS
        .iter()
        .map(|id| start_replica(&net, &setup, *id))
        .collect();
    let root = setup.root.clone();
    let operator = setup.operator_files.clone();
    let submit_setup = Arc::new(SubmitSetup {
        township: setup.township.clone(),
        countersign_key: setup.countersign_key.clone(),
        election: setup.election.clone(),
        sheets: setup.sheets.clone(),
        channels: Vec::new(),
    });
    let township_files = setup.township_files.clone();
    let net = Arc::new(net);
    let net_in = net.clone();
    let outcome = in_netns(&net.ns(&TOWNSHIP_NODE.to_string()), move |runtime| {
        runtime.block_on(scenario(net_in, operator, township_files, submit_setup))
    })
    .join();
    processes.clear();
    if let Err(panic) = outcome {
        eprintln!("{}", logs(&root));
        std::panic::resume_unwind(panic);
    }
    drop(net);
}

async fn scenario(
    net: Arc<Net>,
    operator: TlsFiles,
    township_files: TlsFiles,
    submit_setup: Arc<SubmitSetup>,
) {
    let address = |id: u64| format!("{}:{REPLICA_PORT}", Net::address(id));
    let replicas: BTreeMap<u64, Channel> = REPLICAS
        .iter()
        .map(|id| (*id, channel(&operator, &address(*id))))
        .collect();
    let (first_leader, first_term) = settled(&replicas).await;
    println!("replica {first_leader} leads (term {first_term})");

    let submit_setup = Arc::new(SubmitSetup {
        township: submit_setup.township.clone(),
        countersign_key: submit_setup.countersign_key.clone(),
        election: submit_setup.election.clone(),
        sheets: submit_setup.sheets.clone(),
        channels: REPLICAS
            .iter()
            .map(|id| channel(&township_files, &address(*id)))
            .collect(),
    });
    let seen = Arc::new(Mutex::new(Seen::default()));
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let (home_tx, home) = tokio::sync::watch::channel(());
    let submitters: Vec<_> = (0..SUBMITTERS)
        .map(|i| {
            tokio::spawn(submit(
                i,
                submit_setup.clone(),
                seen.clone(),
                stop.clone(),
                home.clone(),
            ))
        })
        .collect();
    // Before each fault every submitter goes back to its own replica (submitter i to replica
    // i + 1), so one talks to each, whatever the fault before made them do.
    let go_home = || async {
        let sent = Instant::now();
        home_tx.send_replace(());
        for s in 0..SUBMITTERS {
            wait_first_ack(&seen, sent, None, Some(s))
                .await
                .unwrap_or_else(|| panic!("submitter {s} is not acknowledged at its own replica"));
        }
    };
    let until = Instant::now() + WAIT_MAX;
    while seen.lock().unwrap().acks.len() < WARM_ACKS {
        assert!(
            Instant::now() < until,
            "the load did not start: {:?}",
            seen.lock().unwrap().failures
        );
        tokio::time::sleep(POLL).await;
    }

    // (a) The leader is cut off from everyone.
    let old = first_leader;
    let others: Vec<u64> = REPLICAS.iter().copied().filter(|r| *r != old).collect();
    let step_down = watch_step_down(&net, operator.clone(), old);
    let isolated_at = Instant::now();
    net.isolate(old);
    let (new_leader, new_term, elected_at) = elected(&replicas, &others, first_term, WAIT_MAX)
        .await
        .expect("the two connected replicas elect a new leader");
    let resumed_at = wait_first_ack(&seen, isolated_at, Some(old), None)
        .await
        .expect("ingest resumes after the leader is isolated");
    let stepped_down_at = tokio::task::spawn_blocking(move || step_down.join())
        .await
        .expect("the watcher ends")
        .expect("the watcher does not panic");
    println!(
        "(a) leader {old} isolated: replica {new_leader} elected (term {new_term}) after {}; first acknowledgement after {} (from the election: {}); the old leader stepped down after {}",
        secs(elected_at - isolated_at),
        secs(resumed_at - isolated_at),
        secs(resumed_at.saturating_duration_since(elected_at)),
        stepped_down_at.map_or("never".to_owned(), |at| secs(at - isolated_at)),
    );
    let stepped_down_at = stepped_down_at.expect("the isolated leader steps down");
    assert!(
        stepped_down_at - isolated_at <= STEP_DOWN_MAX,
        "the isolated leader took {} to step down",
        secs(stepped_down_at - isolated_at)
    );
    assert!(
        resumed_at.saturating_duration_since(elected_at) <= RESUME_MAX,
        "ingest resumed {} after the new leader's election (at most {} allowed)",
        secs(resumed_at.saturating_duration_since(elected_at)),
        secs(RESUME_MAX)
    );
    // Each submitter on its own: those at a follower had their calls forwarded to the cut-off
    // leader, and the one at the leader must leave it for another replica.
    let longest = each_resumed(
        &seen,
        isolated_at,
        Some(old),
        elected_at,
        "(a) after the election,",
    )
    .await;
    assert!(
        longest <= RESUME_MAX,
        "a submitter resumed only {} after the new leader's election (at most {} allowed)",
        secs(longest),
        secs(RESUME_MAX)
    );
    let (leader, term) = heal_after_hold(&net, &replicas, &seen, isolated_at, "(a)").await;

    go_home().await;
    // (b) A follower is cut off from everyone: the leader keeps its majority.
    let follower = a_follower(leader);
    let isolated_at = Instant::now();
    net.isolate(follower);
    let resumed_at = wait_first_ack(&seen, isolated_at, None, None)
        .await
        .expect("ingest goes on while a follower is isolated");
    let still = leader_of_rest(&replicas, follower).await;
    println!(
        "(b) follower {follower} isolated: first acknowledgement after {}; leader now {still:?} (was {leader}, term {term})",
        secs(resumed_at - isolated_at)
    );
    assert!(
        resumed_at - isolated_at <= RESUME_MAX,
        "ingest stalled {} while a follower was isolated",
        secs(resumed_at - isolated_at)
    );
    let longest = each_resumed(
        &seen,
        isolated_at,
        None,
        isolated_at,
        "(b) after the fault,",
    )
    .await;
    assert!(
        longest <= SILENT_REPLICA_LEFT_MAX,
        "a submitter resumed only {} after a follower was isolated",
        secs(longest)
    );
    let (leader, term) = heal_after_hold(&net, &replicas, &seen, isolated_at, "(b)").await;

    go_home().await;
    // (c) One direction only: the leader's packets to a follower are dropped, the follower's
    // to the leader pass. The follower stops hearing the leader (and TCP both ways stalls);
    // pre-vote and check_quorum keep the leader in office with the third replica.
    let follower = a_follower(leader);
    let cut_at = Instant::now();
    net.cut(leader, follower);
    let election = elected(&replicas, &REPLICAS, term, FAULT_HOLD).await;
    let since = election.map_or(cut_at, |(_, _, at)| at);
    let resumed_at = wait_first_ack(&seen, cut_at, None, None)
        .await
        .expect("ingest goes on with one direction cut");
    println!(
        "(c) packets from leader {leader} to follower {follower} dropped: {}; first acknowledgement after {}",
        election.map_or("no new election".to_owned(), |(id, t, at)| format!(
            "replica {id} elected (term {t}) after {}",
            secs(at - cut_at)
        )),
        secs(resumed_at - cut_at)
    );
    assert!(
        resumed_at.saturating_duration_since(since) <= RESUME_MAX,
        "ingest stalled {} with one direction cut",
        secs(resumed_at.saturating_duration_since(since))
    );
    let longest = each_resumed(&seen, cut_at, None, cut_at, "(c) after the fault,").await;
    assert!(
        longest <= SILENT_REPLICA_LEFT_MAX,
        "a submitter resumed only {} after one direction was cut",
        secs(longest)
    );
    tokio::time::sleep(FAULT_HOLD.saturating_sub(cut_at.elapsed())).await;
    net.heal();
    settled(&replicas).await;
    let _ = stop_tx.send(true);
    for s in submitters {
        let _ = s.await;
    }
    check_acknowledged(&replicas, &seen, "(c)").await;
    let seen = seen.lock().unwrap();
    println!(
        "{} batches acknowledged, {} failed calls sent again",
        seen.acks.len(),
        seen.failures.len()
    );
}

/// The leader the replicas other than `except` name, if they agree.
async fn leader_of_rest(replicas: &BTreeMap<u64, Channel>, except: u64) -> Option<u64> {
    let mut named = BTreeSet::new();
    for (id, channel) in replicas {
        if *id != except {
            named.insert(status(channel).await?.leader_id);
        }
    }
    (named.len() == 1).then(|| named.into_iter().next().unwrap_or(0))
}
