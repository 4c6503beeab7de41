//! End-to-end test of the county coordinator as operators run it: three `tally county`
//! processes on 127.0.0.1, each with its own data folder, fed by `tally submit` and watched
//! with `tally cluster status`, while the test kills and restarts the leader's process.
//!
//! Every wait polls its condition with a deadline; a wait that runs out panics with the tail
//! of each replica's log. Every process the test starts is killed when the test ends, passed
//! or failed.

use serde_json::Value;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tally_net::{Identity, Role, TlsFiles};
use tally_rpc::pb;
use tally_rpc::pb::county_client::CountyClient;
use tally_tests::{Process, free_ports, output, poll, tail, tally, tempdir};
use tempfile::TempDir;
use tonic::transport::Endpoint;

const REPLICAS: [u64; 3] = [1, 2, 3];
/// A short raft tick, so an election (10 to 20 ticks) takes well under a second.
const TICK_MS: u64 = 30;
/// The fewest entries a replica keeps before compacting its log into a snapshot, so the
/// ingest (some 330 entries) compacts it several times and the restarted replica, whose
/// log the leader has compacted away meanwhile, catches up from a snapshot.
const COMPACT_AFTER_ENTRIES: u64 = 100;
/// The generated county: 18 townships of 4,000,000 people give 5,166 signed sheets (two per
/// unit), enough that ingest in batches of 16 takes several seconds.
const COUNTY_POPULATION: u64 = 4_000_000;
const COUNTY_SEED: u64 = 7;
const SUBMIT_BATCH: usize = 16;
const SUBMIT_CONCURRENCY: usize = 4;
/// The leader is killed once this share (per mille) of the sheets is counted: early enough
/// that the other two compact their logs past the killed one's while the ingest goes on.
const KILL_AFTER_COUNTED_PER_MILLE: u64 = 150;
/// Entries the leader may append between the status that names it and its kill (a status
/// call takes tens of milliseconds; the ingest appends some 50 entries a second).
const KILLED_LOG_GROWTH_MAX: u64 = 20;

const POLL_INTERVAL: Duration = Duration::from_millis(100);
const CLUSTER_READY_DEADLINE: Duration = Duration::from_secs(15);
const SUBMIT_DEADLINE: Duration = Duration::from_secs(45);
const CONVERGE_DEADLINE: Duration = Duration::from_secs(15);
const RESULTS_DEADLINE: Duration = Duration::from_secs(20);
/// Times the settled cluster's status is read, each of which must be healthy.
const HEALTHY_LOOKS: usize = 10;
/// Lines of each replica's log shown when a check fails.
const LOG_TAIL_LINES: usize = 40;

/// Three `tally county` processes in a temporary folder, with the generated county, the PKI
/// and one config per replica.
struct Cluster {
    dir: TempDir,
    addresses: Vec<String>,
    /// Indexed by replica id - 1; `None` while the replica is down.
    processes: Vec<Option<Process>>,
}

impl Cluster {
    /// Generates the county and the certificates, writes the configs and starts the replicas.
    fn start() -> Self {
        Self::start_with(|_| {})
    }

    /// [`Cluster::start`], with `edit` given the generated county's folder before the
    /// replicas start.
    fn start_with(edit: impl FnOnce(&Path)) -> Self {
        let dir = tempdir();
        let population = COUNTY_POPULATION.to_string();
        let seed = COUNTY_SEED.to_string();
        let (code, stdout, stderr) = output(
            dir.path(),
            &[
                "gen",
                "--out",
                "county",
                "--population",
                &population,
                "--seed",
                &seed,
                "--no-scenarios",
            ],
        );
        assert_eq!(code, 0, "tally gen: {stdout}{stderr}");
        edit(&dir.path().join("county"));
        let (code, stdout, stderr) = output(
            dir.path(),
            &[
                "certs",
                "--out",
                "pki",
                "--definition",
                "county/election.toml",
                "--hosts",
                "127.0.0.1,localhost",
            ],
        );
        assert_eq!(code, 0, "tally certs: {stdout}{stderr}");

        let addresses: Vec<String> = free_ports(REPLICAS.len())
            .iter()
            .map(|port| format!("127.0.0.1:{port}"))
            .collect();
        let peers: String = REPLICAS
            .iter()
            .zip(&addresses)
            .map(|(id, address)| format!("{id} = \"{address}\"\n"))
            .collect();
        for (id, address) in REPLICAS.iter().zip(&addresses) {
            let config = format!(
                "cluster_id = \"process-test\"\n\
                 replica_id = {id}\n\
                 listen = \"{address}\"\n\
                 advertise = \"{address}\"\n\
                 data_dir = \"data/replica-{id}\"\n\
                 definition = \"county/election.toml\"\n\
                 initial_voters = [1, 2, 3]\n\
                 \n[peers]\n{peers}\n\
                 [tls]\n\
                 ca = \"pki/ca.pem\"\n\
                 cert = \"pki/replica-{id}.pem\"\n\
                 key = \"pki/replica-{id}.key\"\n\
                 \n[raft]\n\
                 tick_ms = {TICK_MS}\n\
                 compact_after_entries = {COMPACT_AFTER_ENTRIES}\n"
            );
            std::fs::write(dir.path().join(format!("replica-{id}.toml")), config)
                .expect("the config can be written");
        }
        let mut cluster = Cluster {
            dir,
            addresses,
            processes: REPLICAS.iter().map(|_| None).collect(),
        };
        for id in REPLICAS {
            cluster.start_replica(id);
        }
        cluster
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn servers(&self) -> String {
        self.addresses.join(",")
    }

    fn log_path(&self, id: u64) -> PathBuf {
        self.path().join(format!("replica-{id}.log"))
    }

    /// Starts (or restarts) replica `id` with its config; its log is appended to its file.
    fn start_replica(&mut self, id: u64) {
        use std::io::Write;
        let mut log = File::options()
            .create(true)
            .append(true)
            .open(self.log_path(id))
            .expect("the log file opens");
        writeln!(log, "--- tally county --config replica-{id}.toml ---").unwrap();
        let child = tally()
            .args(["county", "--config", &format!("replica-{id}.toml")])
            .current_dir(self.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("tally county starts");
        self.processes[index(id)] = Some(Process(child));
    }

    /// Kills replica `id` with SIGKILL: no shutdown, no flush beyond what it already did.
    fn kill_replica(&mut self, id: u64) {
        let mut process = self.processes[index(id)]
            .take()
            .unwrap_or_else(|| panic!("replica {id} is not running"));
        process.0.kill().expect("the replica can be killed");
        process.0.wait().expect("the killed replica is reaped");
    }

    /// The last lines of every replica's log, for a failure message.
    fn logs(&self) -> String {
        let mut out = String::new();
        for id in REPLICAS {
            let tail = tail(&self.log_path(id), LOG_TAIL_LINES);
            out.push_str(&format!(
                "\n--- replica {id} log (last {} lines)\n{tail}",
                tail.lines().count()
            ));
        }
        out
    }

    /// Panics with `message` and the replicas' logs.
    fn fail(&self, message: &str) -> ! {
        panic!("{message}\n{}", self.logs())
    }

    /// Polls `check` until it gives a value, at most `deadline`; `what` names the condition.
    fn wait_for<T>(
        &self,
        what: &str,
        deadline: Duration,
        check: impl FnMut() -> Result<T, String>,
    ) -> T {
        poll(deadline, POLL_INTERVAL, check).unwrap_or_else(|last| {
            self.fail(&format!(
                "timed out after {deadline:?} waiting for {what}; last seen: {last}"
            ))
        })
    }

    /// `tally cluster status --format json`: the replicas as they answer, and the problems
    /// it names (exit 3 when there are any).
    fn status(&self) -> Result<Status, String> {
        let (code, stdout, stderr) = output(
            self.path(),
            &[
                "cluster",
                "status",
                "--servers",
                &self.servers(),
                "--pki",
                "pki",
                "--format",
                "json",
            ],
        );
        if code != 0 && code != 3 {
            return Err(format!("exit {code}: {stdout}{stderr}"));
        }
        let json: Value = serde_json::from_str(&stdout)
            .map_err(|e| format!("status is not JSON ({e}): {stdout}"))?;
        let replicas = json["replicas"]
            .as_array()
            .ok_or_else(|| format!("no replicas in {json}"))?
            .clone();
        let problems = json["problems"]
            .as_array()
            .ok_or_else(|| format!("no problems list in {json}"))?
            .iter()
            .map(|p| p.as_str().unwrap_or_default().to_owned())
            .collect();
        Ok(Status {
            code,
            replicas,
            problems,
            text: stdout,
        })
    }

    /// Waits until the cluster is healthy (exit 0), all three replicas answer, agree on one
    /// leader and have applied the same index with the same chain head; returns that state.
    fn converged(&self, what: &str, deadline: Duration) -> Converged {
        self.wait_for(what, deadline, || {
            let status = self.status()?;
            if status.code != 0 || status.replicas.len() != REPLICAS.len() {
                return Err(status.text);
            }
            let field = |name: &str| -> Vec<Value> {
                status.replicas.iter().map(|r| r[name].clone()).collect()
            };
            let all_same = |values: &[Value]| values.iter().all(|v| *v == values[0]);
            let (applied, heads, lengths, leaders) = (
                field("applied_index"),
                field("chain_head"),
                field("chain_length"),
                field("leader"),
            );
            let leader = leaders[0].as_u64().unwrap_or(0);
            if leader == 0
                || !all_same(&leaders)
                || !all_same(&applied)
                || !all_same(&heads)
                || !all_same(&lengths)
                || field("commit_index") != applied
            {
                return Err(status.text);
            }
            Ok(Converged {
                applied_index: applied[0].as_u64().expect("applied_index is a number"),
                chain_head: heads[0].as_str().expect("chain_head is hex").to_owned(),
                chain_length: lengths[0].as_u64().expect("chain_length is a number"),
            })
        })
    }

    /// Starts `tally submit` of the county's sheets in the background, the JSON report to a
    /// file named `report`.
    fn submit(&self, report: &str) -> Submit {
        let stdout = File::create(self.path().join(report)).expect("the report file");
        let stderr = File::create(self.path().join(format!("{report}.err"))).expect("a file");
        let child = tally()
            .args([
                "submit",
                "--servers",
                &self.servers(),
                "--pki",
                "pki",
                "-d",
                "county/election.toml",
                "--keys",
                "county/township-keys.csv",
                "--batch",
                &SUBMIT_BATCH.to_string(),
                "--concurrency",
                &SUBMIT_CONCURRENCY.to_string(),
                "--format",
                "json",
                "county/sheets.sheets",
            ])
            .current_dir(self.path())
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .expect("tally submit starts");
        Submit {
            process: Process(child),
            report: report.to_owned(),
        }
    }

    /// Waits for a submit to end; it must succeed. Returns its JSON report.
    fn finish(&self, mut submit: Submit) -> Value {
        let exit = self.wait_for("tally submit to end", SUBMIT_DEADLINE, || {
            match submit.process.exited() {
                Some(exit) => Ok(exit),
                None => Err("still running".to_owned()),
            }
        });
        let stdout = std::fs::read_to_string(self.path().join(&submit.report)).unwrap();
        let stderr =
            std::fs::read_to_string(self.path().join(format!("{}.err", submit.report))).unwrap();
        if !exit.success() {
            self.fail(&format!(
                "tally submit failed ({exit}):\n{stdout}\n--- stderr\n{stderr}"
            ));
        }
        serde_json::from_str(&stdout)
            .unwrap_or_else(|e| self.fail(&format!("the report is not JSON ({e}): {stdout}")))
    }

    /// The county's results by the Results RPC, linearizable (not `stale`), as an operator.
    fn results(&self) -> pb::ResultsResponse {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let identity = Identity::new(Role::Operator, "operator").expect("a valid name");
        let (tls, _) = TlsFiles::in_dir(&self.path().join("pki"), &identity)
            .client_tls("127.0.0.1")
            .expect("the operator's files load");
        self.wait_for("the Results RPC", RESULTS_DEADLINE, || {
            runtime.block_on(async {
                let mut errors = Vec::new();
                for address in &self.addresses {
                    let channel = Endpoint::from_shared(format!("https://{address}"))
                        .expect("a valid URI")
                        .tls_config(tls.clone())
                        .expect("a valid TLS config")
                        .connect_timeout(Duration::from_secs(3))
                        .timeout(Duration::from_secs(10))
                        .connect_lazy();
                    // The whole county's results JSON is several megabytes.
                    let mut client = CountyClient::new(channel).max_decoding_message_size(64 << 20);
                    match client.results(pb::ResultsRequest::default()).await {
                        Ok(response) => return Ok(response.into_inner()),
                        Err(status) => errors.push(format!("{address}: {status}")),
                    }
                }
                Err(errors.join("; "))
            })
        })
    }
}

fn index(id: u64) -> usize {
    usize::try_from(id - 1).expect("a replica id is small")
}

/// One `tally cluster status --format json`.
struct Status {
    code: i32,
    replicas: Vec<Value>,
    problems: Vec<String>,
    text: String,
}

impl Status {
    /// The replica that says it is the leader.
    fn leader(&self) -> Option<Leader> {
        let number = |r: &Value, field: &str| {
            r[field]
                .as_u64()
                .unwrap_or_else(|| panic!("{field} is not a number in {r}"))
        };
        self.replicas
            .iter()
            .find(|r| r["role"] == "leader")
            .map(|r| Leader {
                id: number(r, "replica"),
                sheets_counted: number(r, "sheets_counted"),
                first_index: number(r, "first_index"),
                last_index: number(r, "last_index"),
            })
    }
}

/// The leader's view of its own log and count.
struct Leader {
    id: u64,
    sheets_counted: u64,
    /// The first entry still in its log; those before it are compacted into its snapshot.
    first_index: u64,
    last_index: u64,
}

/// What all three replicas agree on.
#[derive(Debug)]
struct Converged {
    applied_index: u64,
    chain_head: String,
    chain_length: u64,
}

/// A `tally submit` running in the background.
struct Submit {
    process: Process,
    report: String,
}

fn count(report: &Value, field: &str) -> u64 {
    report[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} is not a count in {report}"))
}

// Goal: a county of three replica processes loses its leader to SIGKILL in the middle of
// ingest and still counts every sheet exactly once: `tally submit` finishes without a refusal,
// the chain holds each sheet once, the replicas converge (the restarted one included), the
// county's results equal the offline count of the same sheets, and a second submit of
// everything changes nothing. Method: generate a county of 5,166 sheets; start three
// `tally county` processes (tick 30 ms, compaction after 100 entries) on free ports; run
// `tally submit --batch 16 --concurrency 4` in the background; once 15% of the sheets is
// counted, find the leader with `tally cluster status` and SIGKILL its process; wait for
// the other two to elect a new leader and compact their logs past the killed one's, then
// restart it with the same config (it catches up from a snapshot); then check the submit
// report, the converged status, the Results RPC against `tally results`, and submit
// everything again.
#[test]
fn leader_killed_mid_ingest_counts_every_sheet_once() {
    let mut cluster = Cluster::start();
    let ready = cluster.converged(
        "a leader among three running replicas",
        CLUSTER_READY_DEADLINE,
    );
    assert!(
        ready.chain_length <= 1,
        "a new cluster has recorded nothing but its founding: {}",
        ready.chain_length
    );

    let (code, stdout, stderr) = tally_tests::offline_results(cluster.path());
    assert_eq!(code, 0, "tally results: {stderr}");
    let offline: Value = serde_json::from_str(&stdout).expect("results JSON");
    let sheets = count(&offline["intake"], "accepted");
    // Every generated sheet is distinct and none corrects another: each is counted once.
    assert_eq!(count(&offline["intake"], "duplicates"), 0);
    assert_eq!(count(&offline["intake"], "superseded"), 0);
    assert_eq!(offline["intake"]["refused"], Value::Array(vec![]));
    assert_eq!(
        sheets, 5_166,
        "the generated county changed; update the comments"
    );

    let mut submit = cluster.submit("submit-1.json");
    let kill_at = sheets * KILL_AFTER_COUNTED_PER_MILLE / 1000;
    let killed = cluster.wait_for("the first sheets to be counted", SUBMIT_DEADLINE, || {
        let status = cluster.status()?;
        match status.leader() {
            Some(leader) if leader.sheets_counted >= kill_at => Ok(leader),
            _ => Err(status.text),
        }
    });
    if submit.process.exited().is_some() {
        cluster.fail("tally submit ended before the leader was killed; make the county bigger");
    }
    cluster.kill_replica(killed.id);
    // The killed replica's log ends near the last index it reported. Once the new leader's
    // log starts past it, the restarted replica cannot catch up from the log: it is sent a
    // snapshot.
    let killed_last_index = killed.last_index + KILLED_LOG_GROWTH_MAX;
    cluster.wait_for(
        "the other two to elect a leader and compact past the killed replica's log",
        SUBMIT_DEADLINE,
        || {
            let status = cluster.status()?;
            match status.leader() {
                Some(new) if new.id != killed.id && new.first_index > killed_last_index + 1 => {
                    Ok(())
                }
                _ => Err(status.text),
            }
        },
    );
    if submit.process.exited().is_some() {
        cluster.fail("tally submit ended while the leader was down; make the county bigger");
    }
    cluster.start_replica(killed.id);

    let report = cluster.finish(submit);
    assert_eq!(count(&report, "sheets"), sheets, "{report}");
    assert_eq!(report["refused"], Value::Array(vec![]), "{report}");
    assert_eq!(count(&report, "conflicts"), 0, "{report}");
    // A batch the killed leader had committed but not answered comes back as duplicates.
    assert_eq!(
        count(&report, "accepted") + count(&report, "duplicates") + count(&report, "superseded"),
        sheets,
        "{report}"
    );

    let after = cluster.converged(
        "all three replicas, the restarted one too, to agree",
        CONVERGE_DEADLINE,
    );
    assert_eq!(
        after.chain_length,
        sheets + 1,
        "the founding, then each sheet recorded exactly once\n{report}{}",
        cluster.logs()
    );
    assert!(
        after.applied_index >= count(&report, "log_index"),
        "{after:?} {report}"
    );
    // A settled cluster is healthy on every look, not only on most: status once took raft's
    // "recently active" flag, which raft clears at each quorum check (every election timeout),
    // and reported a healthy peer as silent about one look in eight. The looks span several
    // election timeouts.
    for _ in 0..HEALTHY_LOOKS {
        let status = cluster.status().unwrap_or_else(|e| cluster.fail(&e));
        assert_eq!(status.code, 0, "{}", status.text);
        assert!(status.problems.is_empty(), "{:?}", status.problems);
        for replica in &status.replicas {
            assert_eq!(
                replica["sheets_counted"].as_u64(),
                Some(sheets),
                "{}",
                status.text
            );
            assert_eq!(replica["conflicts"].as_u64(), Some(0), "{}", status.text);
        }
        std::thread::sleep(Duration::from_millis(TICK_MS * 4));
    }

    let online = cluster.results();
    assert_eq!(
        online.chain_length,
        sheets + 1,
        "the founding and every sheet"
    );
    assert_eq!(hex::encode(&online.chain_head), after.chain_head);
    assert!(online.log_index <= after.applied_index, "{after:?}");
    let online_result: Value =
        serde_json::from_str(&online.result_json).expect("result_json is JSON");
    let offline_contests = offline["result"]["contests"].as_array().expect("contests");
    let online_contests = online_result["contests"].as_array().expect("contests");
    assert!(!offline_contests.is_empty());
    assert_eq!(online_contests.len(), offline_contests.len());
    for (online, offline) in online_contests.iter().zip(offline_contests) {
        let contest = &offline["contest"];
        assert_eq!(online["contest"], *contest);
        for field in ["status", "elected", "rounds", "vacancies", "seats_filled"] {
            assert_eq!(
                online[field], offline[field],
                "contest {contest}: the county's {field} differs from the offline count"
            );
        }
        // The whole contest too; not printed, as a contest's JSON is long.
        assert!(
            online == offline,
            "contest {contest}: the county's result differs from the offline count"
        );
    }
    // Nothing in a result depends on time or on the order sheets arrived in. The whole
    // result is megabytes of JSON, so a difference is named by its part, not printed.
    for part in ["election", "townships", "county", "findings"] {
        assert!(
            online_result[part] == offline["result"][part],
            "the county's {part} differs from the offline count"
        );
    }
    assert!(online_result == offline["result"], "the results differ");

    let again = cluster.submit("submit-2.json");
    let report = cluster.finish(again);
    assert_eq!(count(&report, "duplicates"), sheets, "{report}");
    assert_eq!(count(&report, "accepted"), 0, "{report}");
    assert_eq!(report["refused"], Value::Array(vec![]), "{report}");
    let resubmitted = cluster.converged(
        "all three replicas to agree after the resubmit",
        CONVERGE_DEADLINE,
    );
    assert_eq!(resubmitted.chain_length, sheets + 1, "{resubmitted:?}");
    assert_eq!(resubmitted.chain_head, after.chain_head, "{resubmitted:?}");
}

// Goal: a replica started with a definition other than the one the cluster was founded with
// refuses to start, changes nothing, and tells its operator both digests and what differs;
// started again with the founding definition, it rejoins.
// Method: three replica processes found the cluster; replica 3 is killed, its config pointed
// at a copy of the definition with one contest's registered voters changed, and started:
// it exits 78 (EX_CONFIG) naming the contest, the field and both digests, which `tally cluster
// status` confirms is the founding one. With its own config back it converges again.
#[test]
fn replica_with_another_definition_refuses_to_start() {
    let mut cluster = Cluster::start();
    let founded = cluster.wait_for(
        "the founding on every replica",
        CLUSTER_READY_DEADLINE,
        || {
            let status = cluster.status()?;
            let digests: Vec<&str> = status
                .replicas
                .iter()
                .filter_map(|r| r["definition_digest"].as_str())
                .collect();
            match digests.as_slice() {
                [a, b, c] if !a.is_empty() && a == b && b == c => Ok(a.to_string()),
                _ => Err(status.text),
            }
        },
    );
    assert_eq!(founded.len(), 64, "{founded}");
    cluster.kill_replica(3);

    // The same county, one contest's voter count changed.
    let county = cluster.path().join("county");
    let changed = cluster.path().join("county-changed");
    std::fs::create_dir_all(&changed).unwrap();
    for entry in std::fs::read_dir(&county).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), changed.join(entry.file_name())).unwrap();
    }
    let contests = std::fs::read_to_string(changed.join("contests.csv")).unwrap();
    let mut lines: Vec<String> = contests.lines().map(str::to_owned).collect();
    let mut cells: Vec<String> = lines[1].split(',').map(str::to_owned).collect();
    let contest = cells[0].clone();
    let voters: u64 = cells.last().unwrap().parse().unwrap();
    *cells.last_mut().unwrap() = (voters + 1).to_string();
    lines[1] = cells.join(",");
    std::fs::write(changed.join("contests.csv"), lines.join("\n") + "\n").unwrap();
    let config_path = cluster.path().join("replica-3.toml");
    let config = std::fs::read_to_string(&config_path).unwrap();
    std::fs::write(
        &config_path,
        config.replace("county/election.toml", "county-changed/election.toml"),
    )
    .unwrap();

    let (code, stdout, stderr) = output(cluster.path(), &["county", "--config", "replica-3.toml"]);
    assert_eq!(code, 78, "exit 78 (EX_CONFIG): {stdout}{stderr}");
    for expected in [
        "is not the one the cluster was founded with",
        &format!("the founding definition's digest is {founded}"),
        &format!(
            "first difference: contest {contest}: registered_voters is {} here, {voters} there",
            voters + 1
        ),
        "Nothing was changed",
    ] {
        assert!(stderr.contains(expected), "{expected:?} in:\n{stderr}");
    }

    // With the founding definition it starts and catches up.
    std::fs::write(&config_path, config).unwrap();
    cluster.start_replica(3);
    let after = cluster.converged(
        "replica 3 back with the founding definition",
        CONVERGE_DEADLINE,
    );
    assert!(after.chain_length >= 1, "{after:?}");
}

/// `tally submit --format json` of one bundle (relative to the cluster's folder), with the
/// amendment files given: the JSON report, whatever the exit.
fn submit_bundle(cluster: &Cluster, bundle: &str, amendments: &[&str]) -> Value {
    let mut args = vec![
        "submit".to_owned(),
        "--servers".into(),
        cluster.servers(),
        "--pki".into(),
        "pki".into(),
        "-d".into(),
        "county/election.toml".into(),
        "--keys".into(),
        "county/township-keys.csv".into(),
        "--format".into(),
        "json".into(),
    ];
    for a in amendments {
        args.extend(["--amendment".to_owned(), (*a).to_owned()]);
    }
    args.push(bundle.to_owned());
    let (code, stdout, stderr) = output(cluster.path(), &args);
    serde_json::from_str(&stdout).unwrap_or_else(|e| {
        cluster.fail(&format!(
            "tally submit {bundle} (exit {code}) is not JSON ({e}): {stdout}{stderr}"
        ))
    })
}

/// The refusal codes of a submit report, in order.
fn refusal_codes(report: &Value) -> Vec<String> {
    report["refused"]
        .as_array()
        .unwrap_or_else(|| panic!("no refused list in {report}"))
        .iter()
        .map(|r| r["code"].as_str().unwrap_or_default().to_owned())
        .collect()
}

// Goal: a polling unit's key is replaced on election night by a signed amendment, and the
// county takes it from that log index on: an amendment with fewer than k signatures is
// refused before it is sent; with k it is recorded; the old key is refused after it (E214)
// while the sheet it signed before stands; the device's new key counts; the amendment
// survives the leader's SIGKILL (the new leader applies it) and reaches the killed replica
// again from a snapshot; every replica reports it, and the exported evidence replays it.
// Method: the generated county (3 of 5 officials sign); submit one unit's first sheet
// signed with its registered key; `tally keygen` a new key; `tally amend replace-key`, sign
// as O1 and O2 and submit (refused: 2 of 3), sign as O3 and submit; SIGKILL the leader;
// submit version 2 of the sheet signed with the old key (E214) and with the new key
// (accepted, `--amendment` tells `tally submit` the new key's unit); submit every other sheet
// so the two left compact their logs; restart the killed replica; check the converged
// status lists the amendment on all three; export and verify the evidence.
#[test]
fn a_unit_key_replaced_by_amendment_counts_from_its_log_index() {
    let mut cluster = Cluster::start();
    cluster.wait_for("the founding", CLUSTER_READY_DEADLINE, || {
        let status = cluster.status()?;
        match status.replicas.iter().all(|r| {
            r["definition_digest"]
                .as_str()
                .is_some_and(|d| !d.is_empty())
        }) && status.leader().is_some()
        {
            true => Ok(()),
            false => Err(status.text),
        }
    });
    let dir = cluster.path().to_path_buf();
    let sheets = tally_files::read_bundles(&[dir.join("county/sheets.sheets")])
        .unwrap()
        .remove(0)
        .1;
    let first = tally_proto::decode_sheet(&sheets[0].sheet).unwrap();
    let unit = first.unit.clone();
    let (of_unit, others): (Vec<_>, Vec<_>) = sheets
        .into_iter()
        .partition(|s| tally_proto::decode_sheet(&s.sheet).unwrap().unit == unit);
    let write = |name: &str, signed: &[tally_proto::SignedSheet]| {
        std::fs::write(dir.join(name), tally_proto::write_bundle(signed)).unwrap();
    };
    write("before.sheets", &of_unit[..1]);
    write("others.sheets", &others);
    let report = submit_bundle(&cluster, "before.sheets", &[]);
    assert_eq!(count(&report, "accepted"), 1, "{report}");

    // The device's new key, and the committee's keys (SAMPLE ONLY in the generated county).
    let public_key = tally_tests::keygen(&dir, Path::new("new.key"));
    tally_tests::official_key_files(&dir.join("county"), &dir);
    let amend = |args: &[&str]| output(&dir, &[&["amend"], args].concat());
    let (code, stdout, stderr) = amend(&[
        "replace-key",
        "-d",
        "county/election.toml",
        "--id",
        "A-1",
        "--reason",
        "设备损坏，更换密钥",
        "--unit",
        unit.as_str(),
        "--public-key",
        &public_key,
        "--out",
        "A-1.json",
    ]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let sign = |official: &str| {
        let key = format!("{official}.key");
        let (code, stdout, stderr) = amend(&[
            "sign",
            "A-1.json",
            "-d",
            "county/election.toml",
            "--official",
            official,
            "--key",
            &key,
        ]);
        assert_eq!(code, 0, "{stdout}{stderr}");
    };
    let submit_amendment = || {
        let servers = cluster.servers();
        amend(&[
            "submit",
            "A-1.json",
            "-d",
            "county/election.toml",
            "--servers",
            &servers,
            "--pki",
            "pki",
        ])
    };
    sign("O1");
    sign("O2");
    let (code, stdout, stderr) = submit_amendment();
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(stderr.contains("2 valid signature(s) of the 3"), "{stderr}");
    sign("O3");
    let (code, stdout, stderr) = submit_amendment();
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains("amendment A-1 recorded at log index"),
        "{stdout}"
    );
    // Sent again, it is a replay: refused, nothing changes.
    let (code, _, stderr) = submit_amendment();
    assert_eq!(code, 1);
    assert!(stderr.contains("already in force"), "{stderr}");

    let leader = cluster.status().unwrap().leader().expect("a leader").id;
    cluster.kill_replica(leader);

    // Version 2 of the same sheet: signed with the old key it is refused from the amendment
    // on; signed with the new key it counts.
    let new_key = tally_files::read_secret_key(&dir.join("new.key")).unwrap();
    let definition = tally_files::load_definition(&dir.join("county/election.toml")).unwrap();
    let mut corrected = first.clone();
    corrected.version = 2;
    corrected.replaces_version = Some(1);
    let old_key = tally_tests::unit_secret_key(&dir.join("county"), unit.as_str());
    write(
        "old-key.sheets",
        &[tally_proto::sign(
            &corrected,
            &old_key,
            &definition.election,
        )],
    );
    write(
        "new-key.sheets",
        &[tally_proto::sign(
            &corrected,
            &new_key,
            &definition.election,
        )],
    );
    let report = submit_bundle(&cluster, "old-key.sheets", &[]);
    assert_eq!(refusal_codes(&report), ["E214"], "{report}");
    let report = submit_bundle(&cluster, "new-key.sheets", &["A-1.json"]);
    assert_eq!(count(&report, "accepted"), 1, "{report}");

    let report = submit_bundle(&cluster, "others.sheets", &[]);
    assert!(refusal_codes(&report).is_empty(), "{report}");
    cluster.start_replica(leader);
    let converged = cluster.converged("the killed replica back", CONVERGE_DEADLINE);
    let status = cluster.status().unwrap();
    for replica in &status.replicas {
        assert_eq!(
            replica["amendments"],
            serde_json::json!(["A-1"]),
            "{}",
            status.text
        );
    }
    // The founding, the first sheet, the act, the corrected sheet and every other sheet.
    assert_eq!(
        converged.chain_length,
        4 + others_len(&dir),
        "{converged:?}"
    );

    let (code, stdout, stderr) = output(
        &dir,
        &[
            "export",
            "--servers",
            &cluster.servers(),
            "--pki",
            "pki",
            "-d",
            "county/election.toml",
            "--out",
            "evidence",
        ],
    );
    assert_eq!(code, 0, "{stdout}{stderr}");
    let (code, stdout, stderr) = output(&dir, &["verify", "evidence"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("amendment A-1 (log index "), "{stdout}");
}

/// Sheets in others.sheets.
fn others_len(dir: &Path) -> u64 {
    tally_files::read_bundles(&[dir.join("others.sheets")]).unwrap()[0]
        .1
        .len() as u64
}

// Goal: an official cluster takes no sheet before its zero report, and never a rehearsal's:
// it waits for the committee's signed report of every contest at zero; with it recorded, a
// sheet signed during the rehearsal (the same election id, the same unit key) is refused
// with E211, and the same sheet signed for the official election counts.
// Method: the generated county with `mode = "official"`; `tally cluster status` says it waits
// for the zero report; `tally zero-report prepare`, three officials sign, submit (a second
// submit is refused: there is one); submit three sheets as `tally gen` signed them (for the
// rehearsal); sign the first again for the official election and submit it.
#[test]
fn an_official_cluster_starts_from_its_zero_report_and_refuses_rehearsal_sheets() {
    let cluster = Cluster::start_with(|county| {
        let path = county.join("election.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("mode = \"rehearsal\""), "{text}");
        std::fs::write(
            &path,
            text.replace("mode = \"rehearsal\"", "mode = \"official\""),
        )
        .unwrap();
    });
    let dir = cluster.path().to_path_buf();
    let waiting = cluster.wait_for("the founding", CLUSTER_READY_DEADLINE, || {
        let (code, stdout, stderr) = output(
            &dir,
            &[
                "cluster",
                "status",
                "--servers",
                &cluster.servers(),
                "--pki",
                "pki",
            ],
        );
        match code {
            0 if stdout.contains("waiting for the zero report") => Ok(stdout),
            _ => Err(format!("{stdout}{stderr}")),
        }
    });
    assert!(waiting.contains("正式 / OFFICIAL"), "{waiting}");

    tally_tests::official_key_files(&dir.join("county"), &dir);
    let zero = |args: &[&str]| output(&dir, &[&["zero-report"], args].concat());
    let (code, stdout, stderr) = zero(&[
        "prepare",
        "-d",
        "county/election.toml",
        "--out",
        "zero.json",
    ]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("0 of "), "every contest at zero: {stdout}");
    for official in ["O2", "O4", "O5"] {
        let key = format!("{official}.key");
        let (code, stdout, stderr) = zero(&[
            "sign",
            "zero.json",
            "-d",
            "county/election.toml",
            "--official",
            official,
            "--key",
            &key,
        ]);
        assert_eq!(code, 0, "{stdout}{stderr}");
    }
    let servers = cluster.servers();
    let submit = || {
        zero(&[
            "submit",
            "zero.json",
            "-d",
            "county/election.toml",
            "--servers",
            &servers,
            "--pki",
            "pki",
        ])
    };
    let (code, stdout, stderr) = submit();
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains("the zero report recorded at log index"),
        "{stdout}"
    );
    let (code, _, stderr) = submit();
    assert_eq!(code, 1);
    assert!(
        stderr.contains("a zero report is already recorded"),
        "{stderr}"
    );

    let sheets = tally_files::read_bundles(&[dir.join("county/sheets.sheets")])
        .unwrap()
        .remove(0)
        .1;
    std::fs::write(
        dir.join("rehearsal.sheets"),
        tally_proto::write_bundle(&sheets[..3]),
    )
    .unwrap();
    let report = submit_bundle(&cluster, "rehearsal.sheets", &[]);
    assert_eq!(refusal_codes(&report), ["E211", "E211", "E211"], "{report}");
    assert_eq!(count(&report, "accepted"), 0, "{report}");

    let definition = tally_files::load_definition(&dir.join("county/election.toml")).unwrap();
    let sheet = tally_proto::decode_sheet(&sheets[0].sheet).unwrap();
    let key = tally_tests::unit_secret_key(&dir.join("county"), sheet.unit.as_str());
    let official = tally_proto::sign(&sheet, &key, &definition.election);
    std::fs::write(
        dir.join("official.sheets"),
        tally_proto::write_bundle(&[official]),
    )
    .unwrap();
    let report = submit_bundle(&cluster, "official.sheets", &[]);
    assert_eq!(count(&report, "accepted"), 1, "{report}");
}

// Goal: the committee closes a contest through the real cluster. A conflict keeps the contest
// from being confirmed (listed by `tally committee pending`, which exits 3; a confirmation is
// not even prepared); a decision on a contest that does not need it is refused (E401); the
// committee keeps the second sheet, and the result counts it; confirmed, the contest is
// locked: a version 2 sent afterwards is recorded as an after-lock arrival and changes
// nothing; reopened with a reason, it counts, and the contest waits to be confirmed again;
// the exported evidence replays every decision and verifies.
// Method: the generated county; only the sheets of one county-level contest are submitted,
// so it is decided; a second version-1 sheet of one of its units (two candidates' approvals
// swapped), signed with the unit's key, makes the conflict; every act is prepared, signed by
// three officials and submitted with the CLI.
#[test]
fn the_committee_decides_confirms_and_reopens_a_contest() {
    let cluster = Cluster::start();
    let dir = cluster.path().to_path_buf();
    let sheets = tally_files::read_bundles(&[dir.join("county/sheets.sheets")])
        .unwrap()
        .remove(0)
        .1;
    let definition = tally_files::load_definition(&dir.join("county/election.toml")).unwrap();
    let contest = definition
        .contests
        .iter()
        .find(|c| c.level == tally_core::congress::Level::County)
        .unwrap()
        .id
        .clone();
    let of_contest: Vec<_> = sheets
        .into_iter()
        .filter(|s| tally_proto::decode_sheet(&s.sheet).unwrap().contest == contest)
        .collect();
    let write = |name: &str, signed: &[tally_proto::SignedSheet]| {
        std::fs::write(dir.join(name), tally_proto::write_bundle(signed)).unwrap();
    };
    write("contest.sheets", &of_contest);
    cluster.wait_for("the founding", CLUSTER_READY_DEADLINE, || {
        let report = submit_bundle(&cluster, "contest.sheets", &[]);
        match count(&report, "accepted") as usize == of_contest.len() {
            true => Ok(()),
            false => Err(report.to_string()),
        }
    });
    // The conflict: the same unit, round and version, two candidates' approvals swapped.
    let first = tally_proto::decode_sheet(&of_contest[0].sheet).unwrap();
    let key = tally_tests::unit_secret_key(&dir.join("county"), first.unit.as_str());
    let mut other = first.clone();
    let (a, b) = (other.candidates[0].approvals, other.candidates[1].approvals);
    assert_ne!(a, b, "the swap must change the sheet: {first:?}");
    other.candidates[0].approvals = b;
    other.candidates[1].approvals = a;
    let conflicting = tally_proto::sign(&other, &key, &definition.election);
    let chosen = hex::encode(conflicting.digest());
    write("conflict.sheets", &[conflicting]);
    let report = submit_bundle(&cluster, "conflict.sheets", &[]);
    assert_eq!(count(&report, "conflicts"), 1, "{report}");

    let servers = cluster.servers();
    let run = |args: &[&str]| output(&dir, args);
    let with_cluster = |args: &[&str]| -> (i32, String, String) {
        run(&[args, &["--servers", &servers, "--pki", "pki"]].concat())
    };
    let pending = || {
        let (code, stdout, stderr) = with_cluster(&["committee", "pending", "--format", "json"]);
        let value: Value = serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}{stderr}"));
        (
            code,
            value["matters"].as_array().cloned().unwrap_or_default(),
        )
    };
    let (code, matters) = pending();
    assert_eq!(code, 3, "{matters:?}");
    assert!(
        matters.iter().any(|m| m["kind"] == "conflict"
            && m["blocking"] == true
            && m["contest"] == contest.as_str()
            && m["what"].as_str().unwrap().contains(&chosen)),
        "{matters:?}"
    );
    let (code, stdout, stderr) = with_cluster(&[
        "committee",
        "confirm",
        "-d",
        "county/election.toml",
        "--id",
        "K-0",
        "--contest",
        contest.as_str(),
        "--out",
        "K-0.json",
    ]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(
        stderr.contains("E402") && stderr.contains("differ"),
        "{stderr}"
    );
    assert!(!dir.join("K-0.json").exists());

    tally_tests::official_key_files(&dir.join("county"), &dir);
    let sign_and_submit = |file: &str| {
        for official in ["O1", "O3", "O5"] {
            let key = format!("{official}.key");
            let (code, stdout, stderr) = run(&[
                "committee",
                "sign",
                file,
                "-d",
                "county/election.toml",
                "--official",
                official,
                "--key",
                &key,
            ]);
            assert_eq!(code, 0, "{stdout}{stderr}");
        }
        with_cluster(&["committee", "submit", file, "-d", "county/election.toml"])
    };
    let contest_result = || -> Value {
        let (code, stdout, stderr) = with_cluster(&[
            "cluster",
            "results",
            "--contest",
            contest.as_str(),
            "--format",
            "json",
        ]);
        // 3 while the county holds conflicts, as for the clerk's `tally results`.
        assert!(code == 0 || code == 3, "{code}: {stdout}{stderr}");
        let v: Value = serde_json::from_str(&stdout).unwrap();
        v["contests"][0].clone()
    };
    let votes = |result: &Value| result["rounds"][0]["votes"].clone();
    let before = contest_result();

    // A decision on a matter that is not open: refused, nothing recorded.
    let (code, stdout, stderr) = run(&[
        "committee",
        "void-round",
        "-d",
        "county/election.toml",
        "--id",
        "D-0",
        "--contest",
        contest.as_str(),
        "--round",
        "2",
        "--reason",
        "测试",
        "--out",
        "D-0.json",
    ]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let (code, stdout, stderr) = sign_and_submit("D-0.json");
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(stderr.contains("E401"), "{stderr}");

    let (code, stdout, stderr) = run(&[
        "committee",
        "keep-sheet",
        "-d",
        "county/election.toml",
        "--id",
        "D-1",
        "--contest",
        contest.as_str(),
        "--unit",
        first.unit.as_str(),
        "--sheet-digest",
        &chosen,
        "--reason",
        "经核对原始选票，第二份报告单正确",
        "--out",
        "D-1.json",
    ]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let (code, stdout, stderr) = sign_and_submit("D-1.json");
    assert_eq!(code, 0, "{stdout}{stderr}");
    let decided = contest_result();
    assert_ne!(votes(&decided), votes(&before), "the kept sheet counts");
    assert_eq!(decided["decisions"][0]["id"], "D-1", "{decided}");
    let (code, matters) = pending();
    assert_eq!(code, 3);
    assert!(
        matters
            .iter()
            .any(|m| m["kind"] == "ready" && m["contest"] == contest.as_str()),
        "{matters:?}"
    );

    let (code, stdout, stderr) = with_cluster(&[
        "committee",
        "confirm",
        "-d",
        "county/election.toml",
        "--id",
        "K-1",
        "--contest",
        contest.as_str(),
        "--out",
        "K-1.json",
    ]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let (code, stdout, stderr) = sign_and_submit("K-1.json");
    assert_eq!(code, 0, "{stdout}{stderr}");
    let confirmed = contest_result();
    assert_eq!(confirmed["confirmed"]["confirmation"], "K-1", "{confirmed}");
    // The table shows the decisions where it shows the contest.
    let (_, table, _) = with_cluster(&["cluster", "results", "--contest", contest.as_str()]);
    for id in ["D-1", "K-1"] {
        assert!(
            table.contains(&format!("committee: {contest} {id} (log index ")),
            "{table}"
        );
    }

    // After the lock: recorded, listed, not counted.
    let mut late = other.clone();
    late.version = 2;
    late.replaces_version = Some(1);
    late.candidates[0].approvals = a;
    late.candidates[1].approvals = b;
    write(
        "late.sheets",
        &[tally_proto::sign(&late, &key, &definition.election)],
    );
    let report = submit_bundle(&cluster, "late.sheets", &[]);
    assert_eq!(count(&report, "accepted"), 1, "{report}");
    let locked = contest_result();
    assert_eq!(votes(&locked), votes(&confirmed), "the lock holds");
    assert_eq!(
        locked["after_lock"].as_array().map(Vec::len),
        Some(1),
        "{locked}"
    );

    let (code, stdout, stderr) = run(&[
        "committee",
        "reopen",
        "-d",
        "county/election.toml",
        "--id",
        "R-1",
        "--contest",
        contest.as_str(),
        "--confirmation",
        "K-1",
        "--reason",
        "",
        "--out",
        "R-0.json",
    ]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(stderr.contains("E406"), "{stderr}");
    let (code, stdout, stderr) = run(&[
        "committee",
        "reopen",
        "-d",
        "county/election.toml",
        "--id",
        "R-1",
        "--contest",
        contest.as_str(),
        "--confirmation",
        "K-1",
        "--reason",
        "该选区送来更正报告单，重新审核",
        "--out",
        "R-1.json",
    ]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let (code, stdout, stderr) = sign_and_submit("R-1.json");
    assert_eq!(code, 0, "{stdout}{stderr}");
    let reopened = contest_result();
    assert_eq!(
        votes(&reopened),
        votes(&before),
        "version 2 (the first figures) counts now"
    );
    assert!(reopened.get("confirmed").is_none(), "{reopened}");

    let (code, stdout, stderr) =
        with_cluster(&["export", "-d", "county/election.toml", "--out", "evidence"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let (code, stdout, stderr) = run(&["verify", "evidence"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
}
