//! `tally county` (run one replica of the county coordinator), `tally cluster` (an operator's
//! view and administration of the cluster) and `tally submit` (forward signed sheets to the
//! county as a township).

use crate::client::{
    ClientArgs, channel, client_config, init_logging, look, operator_files, runtime,
    shutdown_signal,
};
use crate::outcome::Outcome;
use crate::{say, say_part};
use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Subcommand};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tally_county::config::CountyConfig;
use tally_county::server::{self, Served};
use tally_files::load_definition;
use tally_net::{Identity, Role, TlsFiles};
use tally_rpc::pb;
use tally_rpc::pb::admin_client::AdminClient;
use tally_rpc::pb::county_client::CountyClient;
use tally_table::Table;
use tonic::transport::Channel;

/// `tally county --config county.toml`: reads the config and the definition, checks the
/// replica's certificate, binds its listeners, then serves with `tally_county::server::serve`
/// until SIGTERM or Ctrl-C.
pub fn serve(config_path: &Path) -> Result<Outcome> {
    let config = CountyConfig::load(config_path).map_err(|e| anyhow!("{e}"))?;
    let definition = Arc::new(
        load_definition(&config.definition)
            .with_context(|| format!("{}: definition", config.file.display()))?,
    );
    let tls = server::server_tls(&config).map_err(|e| anyhow!("{e}"))?;
    init_logging();
    runtime()?.block_on(async move {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| {
                format!(
                    "{}: listen = {}: cannot bind (is another replica or program using the port?)",
                    config.file.display(),
                    config.listen
                )
            })?;
        // Bound before the replica opens, so a taken port is reported before anything starts.
        let http_listener = match config.http_listen {
            Some(address) => Some(tokio::net::TcpListener::bind(address).await.with_context(
                || {
                    format!(
                        "{}: http_listen = {address}: cannot bind (is another program using the port?)",
                        config.file.display()
                    )
                },
            )?),
            None => None,
        };
        let served = match server::serve(
            &config,
            definition,
            tls,
            listener,
            http_listener,
            shutdown_signal(),
        )
        .await
        {
            Ok(served) => served,
            // Starting it again changes nothing until its operator gives it the founding
            // definition: EX_CONFIG, which the systemd unit does not restart on.
            Err(e) if tally_county::fault::definition_differs(&e) => {
                eprintln!("error: {e}");
                return Ok(Outcome::Stopped(tally_county::fault::EXIT_DEFINITION));
            }
            Err(e) => return Err(anyhow!("{e}")),
        };
        Ok(match served {
            Served::Stopped => Outcome::Clean,
            Served::Failed { exit_status, .. } => Outcome::Stopped(exit_status),
        })
    })
}

#[derive(Subcommand)]
pub enum ClusterCommand {
    /// Each replica's role, term, indexes, lag and chain head; exits 3 when something needs attention.
    Status {
        #[command(flatten)]
        client: ClientArgs,
        /// The operator certificate to use (operator-NAME.pem in --pki).
        #[arg(long, default_value = "operator")]
        operator: String,
        #[arg(long, value_enum, default_value_t = crate::report::Format::Table)]
        format: crate::report::Format,
    },
    /// The county's results as the cluster has them (linearizable unless --stale).
    Results {
        #[command(flatten)]
        client: ClientArgs,
        #[arg(long, default_value = "operator")]
        operator: String,
        /// Only this township's contests.
        #[arg(long)]
        township: Option<String>,
        /// Only this contest.
        #[arg(long)]
        contest: Option<String>,
        /// Read the replica's own state without asking the leader (may be behind; works
        /// without a majority).
        #[arg(long)]
        stale: bool,
        /// json prints the full result (rounds, votes needed, further-election lists).
        #[arg(long, value_enum, default_value_t = crate::report::Format::Table)]
        format: crate::report::Format,
    },
    /// Add a replica as a learner; promote it when it has caught up.
    Add {
        #[command(flatten)]
        client: ClientArgs,
        #[arg(long, default_value = "operator")]
        operator: String,
        /// The new replica's id: never used in this cluster before.
        id: u64,
        /// host:port the other replicas reach it at.
        address: String,
    },
    /// Make a learner a voter.
    Promote {
        #[command(flatten)]
        client: ClientArgs,
        #[arg(long, default_value = "operator")]
        operator: String,
        id: u64,
        /// The most entries it may lag behind the leader.
        #[arg(long, default_value_t = 100)]
        max_lag: u64,
    },
    /// Remove a replica; its id is never used again.
    Remove {
        #[command(flatten)]
        client: ClientArgs,
        #[arg(long, default_value = "operator")]
        operator: String,
        id: u64,
    },
    /// Hand leadership to another voter (before maintenance of the leader's machine).
    Transfer {
        #[command(flatten)]
        client: ClientArgs,
        #[arg(long, default_value = "operator")]
        operator: String,
        id: u64,
    },
}

pub fn cluster(command: ClusterCommand) -> Result<Outcome> {
    runtime()?.block_on(async move {
        match command {
            ClusterCommand::Status {
                client,
                operator,
                format,
            } => status(&client, &operator_files(&client.pki, &operator)?, format).await,
            ClusterCommand::Results {
                client,
                operator,
                township,
                contest,
                stale,
                format,
            } => {
                let files = operator_files(&client.pki, &operator)?;
                let request = pb::ResultsRequest {
                    township_id: township.unwrap_or_default(),
                    contest_id: contest.unwrap_or_default(),
                    stale,
                    min_interval_ms: 0,
                };
                cluster_results(&client, &files, request, format).await
            }
            ClusterCommand::Add {
                client,
                operator,
                id,
                address,
            } => {
                let files = operator_files(&client.pki, &operator)?;
                admin(&client, &files, |mut c| {
                    let address = address.clone();
                    async move { c.add_replica(pb::AddReplicaRequest { id, address }).await }
                })
                .await
            }
            ClusterCommand::Promote {
                client,
                operator,
                id,
                max_lag,
            } => {
                let files = operator_files(&client.pki, &operator)?;
                admin(&client, &files, |mut c| async move {
                    c.promote_replica(pb::ReplicaRequest { id, max_lag }).await
                })
                .await
            }
            ClusterCommand::Remove {
                client,
                operator,
                id,
            } => {
                let files = operator_files(&client.pki, &operator)?;
                admin(&client, &files, |mut c| async move {
                    c.remove_replica(pb::ReplicaRequest { id, max_lag: 0 })
                        .await
                })
                .await
            }
            ClusterCommand::Transfer {
                client,
                operator,
                id,
            } => {
                let files = operator_files(&client.pki, &operator)?;
                admin(&client, &files, |mut c| async move {
                    c.transfer_leader(pb::ReplicaRequest { id, max_lag: 0 })
                        .await
                })
                .await
            }
        }
    })
}

/// Sends an admin call to the first replica that answers (a follower forwards it to the
/// leader).
async fn admin<F, Fut>(client: &ClientArgs, files: &TlsFiles, call: F) -> Result<Outcome>
where
    F: Fn(AdminClient<Channel>) -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<pb::AdminResponse>, tonic::Status>>,
{
    let tls = client_config(files)?;
    let mut errors = Vec::new();
    for address in &client.servers {
        match call(AdminClient::new(channel(&tls, address)?)).await {
            Ok(response) => {
                let r = response.into_inner();
                say!("{}", r.message);
                say!(
                    "voters {:?}  learners {:?}  leader {}",
                    r.voters,
                    r.learners,
                    r.leader_id
                );
                return Ok(Outcome::Clean);
            }
            // Another replica may answer (a lost connection is UNKNOWN; a follower that knows
            // no leader is UNAVAILABLE).
            Err(status)
                if matches!(
                    status.code(),
                    tonic::Code::Unavailable | tonic::Code::Unknown
                ) =>
            {
                errors.push(format!("{address}: {}", status.message()));
            }
            Err(status) => bail!("{address}: {}", status.message()),
        }
    }
    bail!("no replica could take the call:\n  {}", errors.join("\n  "))
}

/// The county's results, from the first replica that answers (an unavailable one is skipped).
pub(crate) async fn fetch_results(
    client: &ClientArgs,
    files: &TlsFiles,
    request: pb::ResultsRequest,
) -> Result<pb::ResultsResponse> {
    let tls = client_config(files)?;
    let mut errors = Vec::new();
    let mut response = None;
    for address in &client.servers {
        let mut county =
            CountyClient::new(channel(&tls, address)?).max_decoding_message_size(1 << 30);
        match county.results(request.clone()).await {
            Ok(r) => {
                response = Some(r.into_inner());
                break;
            }
            Err(status)
                if matches!(
                    status.code(),
                    tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Unknown
                ) =>
            {
                errors.push(format!("{address}: {}", status.message()))
            }
            Err(status) => bail!("{address}: {}", status.message()),
        }
    }
    response.ok_or_else(|| {
        anyhow!(
            "no replica could answer:\n  {}\n(--stale reads a replica's own state without a majority)",
            errors.join("\n  ")
        )
    })
}

async fn cluster_results(
    client: &ClientArgs,
    files: &TlsFiles,
    request: pb::ResultsRequest,
    format: crate::report::Format,
) -> Result<Outcome> {
    let r = fetch_results(client, files, request).await?;
    match format {
        crate::report::Format::Json => say!("{}", r.result_json),
        crate::report::Format::Table | crate::report::Format::Csv => {
            use tally_table::Align::{Left, Right};
            let mut table = Table::new(&[
                ("contest", Left),
                ("name", Left),
                ("seats", Right),
                ("units", Right),
                ("status", Left),
                ("elected (votes)", Left),
            ]);
            for c in &r.contests {
                let mut elected: Vec<String> = c
                    .elected
                    .iter()
                    .map(|e| format!("{} ({})", e.name, tally_table::thousands(e.votes)))
                    .collect();
                if c.vacancies > 0 {
                    elected.push(format!("{} seat(s) vacant", c.vacancies));
                }
                table.row(vec![
                    c.contest_id.clone(),
                    c.name.clone(),
                    format!("{}/{}", c.seats_filled, c.seats),
                    format!("{}/{}", c.units_reported, c.units_expected),
                    c.status.clone(),
                    elected.join(", "),
                ]);
            }
            if format == crate::report::Format::Csv {
                say_part!("{}", table.to_csv());
                return Ok(Outcome::Clean);
            }
            let banner = (r.mode == "rehearsal").then(|| {
                format!(
                    "【{}】 a rehearsal, not the election's result",
                    tally_core::definition::Mode::Rehearsal.banner()
                )
            });
            if let Some(banner) = &banner {
                say!("{banner}");
            }
            say!(
                "{} — replica {}, log index {}, {} records in the chain, head {}",
                r.election,
                r.replica_id,
                r.log_index,
                r.chain_length,
                hex::encode(&r.chain_head[..r.chain_head.len().min(8)])
            );
            if let Some(county) = &r.county {
                say!(
                    "county: {} of {} contests decided, {} of {} seats filled, {} of {} unit reports in, turnout {}",
                    county.contests_decided,
                    county.contests_total,
                    county.seats_filled,
                    county.seats_total,
                    tally_table::thousands(county.units_reported),
                    tally_table::thousands(county.units_expected),
                    tally_table::percent(county.voted, county.registered_voters)
                );
            }
            // The amendments the result reflects, as the county's result says.
            let amendments = serde_json::from_str::<serde_json::Value>(&r.result_json)
                .ok()
                .and_then(|v| {
                    serde_json::from_value::<Vec<tally_core::definition::AmendmentNote>>(
                        v["amendments"].clone(),
                    )
                    .ok()
                })
                .unwrap_or_default();
            for a in &amendments {
                say!(
                    "under amendment {} (log index {}): {}; {}",
                    a.id,
                    a.log_index,
                    a.reason,
                    a.changes.join("; ")
                );
            }
            say_part!("{}", table.render());
            // The committee's decisions, confirmations and reopenings, contest by contest.
            let result: serde_json::Value =
                serde_json::from_str(&r.result_json).unwrap_or_default();
            for c in result["contests"].as_array().into_iter().flatten() {
                for n in c["decisions"].as_array().into_iter().flatten() {
                    say!(
                        "committee: {} {} (log index {}): {}{}",
                        c["contest"].as_str().unwrap_or_default(),
                        n["id"].as_str().unwrap_or_default(),
                        n["log_index"],
                        n["what"].as_str().unwrap_or_default(),
                        n["reason"]
                            .as_str()
                            .filter(|r| !r.is_empty())
                            .map_or_else(String::new, |r| format!("（理由：{r}）"))
                    );
                }
                if let Some(late) = c["after_lock"].as_array().filter(|l| !l.is_empty()) {
                    say!(
                        "committee: {} confirmed; {} sheet(s) arrived after the lock, not counted",
                        c["contest"].as_str().unwrap_or_default(),
                        late.len()
                    );
                }
            }
            for c in &r.conflicts {
                say!(
                    "conflict: unit {} contest {} round {} version {}: counted sheet {}, conflicting sheet {} (log index {}) — not counted; the committee decides",
                    c.unit_id,
                    c.contest_id,
                    c.round,
                    c.version,
                    &c.counted_digest[..16.min(c.counted_digest.len())],
                    &c.conflicting_digest[..16.min(c.conflicting_digest.len())],
                    c.log_index
                );
            }
            if let Some(banner) = &banner {
                say!("{banner}");
            }
        }
    }
    Ok(if r.conflicts.is_empty() {
        Outcome::Clean
    } else {
        Outcome::Findings
    })
}

pub(crate) async fn status(
    client: &ClientArgs,
    files: &TlsFiles,
    format: crate::report::Format,
) -> Result<Outcome> {
    let (rows, problems) = look(client, files).await?;
    let leader = rows
        .iter()
        .filter_map(|(_, s)| s.as_ref())
        .find(|s| s.role == "leader");
    if format == crate::report::Format::Json {
        let json: Vec<serde_json::Value> = rows
            .iter()
            .map(|(address, s)| match s {
                Some(s) => serde_json::json!({
                    "address": address, "replica": s.replica_id, "role": s.role, "term": s.term,
                    "leader": s.leader_id, "commit_index": s.commit_index, "applied_index": s.applied_index,
                    "first_index": s.first_index, "last_index": s.last_index, "voters": s.voters,
                    "learners": s.learners, "chain_head": hex::encode(&s.chain_head),
                    "chain_length": s.chain_length, "sheets_counted": s.sheets_counted,
                    "conflicts": s.conflicts, "definition_digest": s.definition_digest,
                    "election_id": s.election_id, "mode": s.mode, "amendments": s.amendments, "zero_report_log_index": s.zero_report_log_index,
                    "lag": leader.and_then(|l| l.peers.iter().find(|p| p.replica_id == s.replica_id)).map(|p| p.lag),
                }),
                None => serde_json::json!({ "address": address, "reachable": false }),
            })
            .collect();
        say!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({ "replicas": json, "problems": problems })
            )?
        );
    } else {
        use tally_table::Align::{Left, Right};
        let mut table = Table::new(&[
            ("replica", Right),
            ("address", Left),
            ("role", Left),
            ("term", Right),
            ("leader", Right),
            ("commit", Right),
            ("applied", Right),
            ("lag", Right),
            ("counted", Right),
            ("conflicts", Right),
            ("chain head", Left),
            ("definition", Left),
        ]);
        for (address, s) in &rows {
            match s {
                Some(s) => {
                    let lag = leader
                        .and_then(|l| l.peers.iter().find(|p| p.replica_id == s.replica_id))
                        .map_or_else(
                            || {
                                if s.role == "leader" {
                                    "0".to_owned()
                                } else {
                                    "?".to_owned()
                                }
                            },
                            |p| p.lag.to_string(),
                        );
                    table.row(vec![
                        s.replica_id.to_string(),
                        address.clone(),
                        if s.running {
                            s.role.clone()
                        } else {
                            "stopped".to_owned()
                        },
                        s.term.to_string(),
                        s.leader_id.to_string(),
                        s.commit_index.to_string(),
                        s.applied_index.to_string(),
                        lag,
                        s.sheets_counted.to_string(),
                        s.conflicts.to_string(),
                        hex::encode(&s.chain_head[..s.chain_head.len().min(8)]),
                        if s.definition_digest.is_empty() {
                            "(not founded)".to_owned()
                        } else {
                            s.definition_digest.chars().take(12).collect()
                        },
                    ]);
                }
                None => table.row(vec![
                    "?".into(),
                    address.clone(),
                    "unreachable".into(),
                    "".into(),
                    "".into(),
                    "".into(),
                    "".into(),
                    "".into(),
                    "".into(),
                    "".into(),
                    "".into(),
                    "".into(),
                ]),
            }
        }
        if let Some(s) = leader.or_else(|| rows.iter().find_map(|(_, s)| s.as_ref())) {
            say!(
                "{}",
                crate::client::founding_line(&s.election_id, &s.mode, &s.definition_digest)
            );
            if !s.amendments.is_empty() {
                say!("amended by {}", s.amendments.join(", "));
            }
            if s.zero_report_log_index > 0 {
                say!(
                    "zero report recorded at log index {}",
                    s.zero_report_log_index
                );
            } else if s.mode == "official" && !s.definition_digest.is_empty() {
                say!(
                    "waiting for the zero report: no sheet is taken before it (`tally zero-report`)"
                );
            }
        }
        say_part!("{}", table.render());
        for p in &problems {
            say!("attention: {p}");
        }
    }
    Ok(if problems.is_empty() {
        Outcome::Clean
    } else {
        Outcome::Findings
    })
}

/// `tally submit`: forward signed sheets to the county as a township (or, with a file of
/// township keys, as each township whose units signed them: the demo, tests and benchmarks).
#[derive(Args)]
pub struct SubmitArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// The election definition (to find each sheet's township).
    #[arg(long, short)]
    pub definition: PathBuf,
    /// An amendment file the county recorded (`tally amend`), applied to the definition
    /// to find the township of a unit it added or whose key it replaced; repeat in order.
    #[arg(long = "amendment")]
    pub amendments: Vec<PathBuf>,
    /// Submit as this township only, countersigning with --key.
    #[arg(long, requires = "key", conflicts_with = "keys")]
    pub township: Option<String>,
    /// The township's secret key file (from `tally keygen`).
    #[arg(long)]
    pub key: Option<PathBuf>,
    /// A CSV of `township,secret_key` rows (as `tally gen` writes township-keys.csv): submit
    /// every sheet as its unit's township.
    #[arg(long, required_unless_present = "township")]
    pub keys: Option<PathBuf>,
    /// Sheets per batch (at most 4096).
    #[arg(long, default_value_t = 256)]
    pub batch: usize,
    /// Batches in flight at once.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Give up on a batch after this many seconds of retrying.
    #[arg(long, default_value_t = 120)]
    pub retry_for: u64,
    /// Send only the first N sheets, in file order (benchmarks, trials).
    #[arg(long)]
    pub limit: Option<usize>,
    #[arg(long, short, value_enum, default_value_t = crate::report::Format::Table)]
    pub format: crate::report::Format,
    /// Signed-sheet bundles (.sheets), or folders of them.
    #[arg(required = true)]
    pub sheets: Vec<PathBuf>,
}

/// One batch to send: its township, its sheets, and where each came from.
struct Job {
    township: tally_core::ids::TownshipId,
    sheets: Vec<tally_proto::SignedSheet>,
    sources: Vec<String>,
}

/// What became of everything submitted.
#[derive(Default, serde::Serialize)]
pub struct SubmitReport {
    pub sheets: usize,
    pub batches: usize,
    pub accepted: usize,
    pub duplicates: usize,
    pub conflicts: usize,
    pub superseded: usize,
    pub refused: Vec<tally_evidence::intake::Refusal>,
    /// Batches sent again after an unavailable replica, a new leader or a timeout.
    pub retries: usize,
    pub seconds: f64,
    pub sheets_per_second: f64,
    /// Latency of a batch from its first send to its answer, milliseconds.
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
    pub latency_max_ms: f64,
    /// The chain head after the last batch the county answered.
    pub chain_head: String,
    pub log_index: u64,
}

fn township_keys(
    args: &SubmitArgs,
) -> Result<std::collections::HashMap<String, ed25519_dalek::SigningKey>> {
    let mut keys = std::collections::HashMap::new();
    if let (Some(township), Some(key)) = (&args.township, &args.key) {
        keys.insert(township.clone(), tally_files::read_secret_key(key)?);
        return Ok(keys);
    }
    let Some(path) = &args.keys else {
        bail!("give --township and --key, or --keys");
    };
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with("township,") {
            continue;
        }
        let (township, secret) = line.split_once(',').ok_or_else(|| {
            anyhow!(
                "{} line {}: expected `township,secret_key`",
                path.display(),
                i + 1
            )
        })?;
        let seed: [u8; 32] = hex::decode(secret.trim())
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| {
                anyhow!(
                    "{} line {}: secret_key must be 64 hex digits",
                    path.display(),
                    i + 1
                )
            })?;
        keys.insert(
            township.trim().to_owned(),
            ed25519_dalek::SigningKey::from_bytes(&seed),
        );
    }
    Ok(keys)
}

pub fn submit(args: SubmitArgs) -> Result<Outcome> {
    if args.batch == 0 || args.batch > tally_county::command::INGEST_SHEETS_MAX {
        bail!(
            "--batch {}: a batch carries 1 to {} sheets",
            args.batch,
            tally_county::command::INGEST_SHEETS_MAX
        );
    }
    if args.concurrency == 0 {
        bail!("--concurrency must be at least 1");
    }
    let founding = load_definition(&args.definition)?;
    let founding_digest = tally_core::canonical::digest(&founding).to_string();
    let definition = tally_files::apply_amendments(founding, &args.amendments)?;
    let keys = township_keys(&args)?;
    let mut bundles = tally_files::read_bundles(&args.sheets)?;
    if let Some(limit) = args.limit {
        let mut left = limit;
        for (_, sheets) in &mut bundles {
            sheets.truncate(left);
            left -= sheets.len();
        }
    }
    let mut report = SubmitReport::default();
    // Group by township in file order; a sheet whose key no unit holds is refused here.
    let mut groups: std::collections::BTreeMap<String, (Vec<_>, Vec<String>)> = Default::default();
    for (path, sheets) in bundles {
        for (i, signed) in sheets.into_iter().enumerate() {
            report.sheets += 1;
            let source = format!("{} #{}", path.display(), i + 1);
            let township = match (&args.township, definition.unit_by_key(&signed.key_id)) {
                (Some(t), _) => t.clone(),
                (None, Some(unit)) => unit.township.to_string(),
                (None, None) => {
                    report.refused.push(tally_evidence::intake::Refusal {
                        source,
                        sheet: String::new(),
                        code: "E205".into(),
                        message: "the signing key is no unit's in the definition; not sent".into(),
                    });
                    continue;
                }
            };
            let group = groups.entry(township).or_default();
            group.0.push(signed);
            group.1.push(source);
        }
    }
    let mut jobs = std::collections::VecDeque::new();
    for (township, (sheets, sources)) in groups {
        if !keys.contains_key(&township) {
            bail!(
                "no key for township {township} in {}; its sheets cannot be countersigned",
                args.keys
                    .as_ref()
                    .map_or("--key".to_owned(), |p| p.display().to_string())
            );
        }
        for (sheets, sources) in sheets.chunks(args.batch).zip(sources.chunks(args.batch)) {
            jobs.push_back(Job {
                township: tally_core::ids::TownshipId::new(&township),
                sheets: sheets.to_vec(),
                sources: sources.to_vec(),
            });
        }
    }
    report.batches = jobs.len();
    let report = runtime()?.block_on(send_all(
        &args,
        &definition.election,
        &founding_digest,
        keys,
        jobs,
        report,
    ))?;
    print_submit(&report, args.format)?;
    Ok(if report.refused.is_empty() && report.conflicts == 0 {
        Outcome::Clean
    } else {
        Outcome::Findings
    })
}

async fn send_all(
    args: &SubmitArgs,
    election: &tally_core::definition::Election,
    definition_digest: &str,
    keys: std::collections::HashMap<String, ed25519_dalek::SigningKey>,
    jobs: std::collections::VecDeque<Job>,
    mut report: SubmitReport,
) -> Result<SubmitReport> {
    // One channel per township and replica: each township speaks with its own certificate.
    let mut channels = std::collections::HashMap::new();
    for job in &jobs {
        let t = job.township.to_string();
        if channels.contains_key(&t) {
            continue;
        }
        let identity =
            Identity::new(Role::Township, t.as_str()).map_err(|e| anyhow!("township {t}: {e}"))?;
        let tls = client_config(&TlsFiles::in_dir(&args.client.pki, &identity))?;
        let mut per_server = Vec::new();
        for address in &args.client.servers {
            per_server.push(channel(&tls, address)?);
        }
        channels.insert(t, per_server);
    }
    let channels = Arc::new(channels);
    let keys = Arc::new(keys);
    let jobs = Arc::new(std::sync::Mutex::new(jobs));
    let started = std::time::Instant::now();
    let retry_for = Duration::from_secs(args.retry_for);
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..args.concurrency {
        let (channels, keys, jobs) = (channels.clone(), keys.clone(), jobs.clone());
        let election = election.clone();
        let digest = definition_digest.to_owned();
        workers.spawn(async move {
            let mut done = Vec::new();
            let mut server = worker;
            loop {
                let Some(job) = jobs.lock().unwrap().pop_front() else {
                    return Ok::<_, anyhow::Error>(done);
                };
                let key = &keys[job.township.as_str()];
                let request = pb::IngestRequest {
                    township_id: job.township.to_string(),
                    sheets: job.sheets.iter().map(|s| s.to_pb()).collect(),
                    countersignature: Some(
                        tally_proto::countersign(&election, &job.township, &job.sheets, key)
                            .to_pb(),
                    ),
                    definition_digest: digest.clone(),
                };
                let servers = &channels[job.township.as_str()];
                let first = std::time::Instant::now();
                let mut retries = 0;
                let mut pause = Duration::from_millis(50);
                let response = loop {
                    let mut client = CountyClient::new(servers[server % servers.len()].clone())
                        .max_decoding_message_size(64 << 20)
                        .max_encoding_message_size(64 << 20);
                    match client.ingest(request.clone()).await {
                        Ok(r) => break r.into_inner(),
                        Err(status)
                            if matches!(
                                status.code(),
                                tonic::Code::Unavailable
                                    | tonic::Code::DeadlineExceeded
                                    | tonic::Code::Unknown
                                    | tonic::Code::Cancelled
                            ) && first.elapsed() < retry_for =>
                        {
                            tracing::debug!(error = %status.message(), "retrying a batch");
                            retries += 1;
                            server += 1;
                            tokio::time::sleep(pause).await;
                            pause = (pause * 2).min(Duration::from_secs(2));
                        }
                        Err(status) => bail!(
                            "township {}, batch from {}: {} ({:?})",
                            job.township,
                            job.sources[0],
                            status.message(),
                            status.code()
                        ),
                    }
                };
                done.push((job, response, first.elapsed(), retries));
            }
        });
    }
    let mut latencies = Vec::new();
    while let Some(result) = workers.join_next().await {
        for (job, response, latency, retries) in result.context("a submitter failed")?? {
            latencies.push(latency);
            report.retries += retries;
            if response.log_index >= report.log_index {
                report.log_index = response.log_index;
                report.chain_head = hex::encode(&response.chain_head);
            }
            for (outcome, source) in response.outcomes.iter().zip(&job.sources) {
                use pb::sheet_outcome::Kind;
                match Kind::try_from(outcome.kind).unwrap_or(Kind::Unspecified) {
                    Kind::Accepted => report.accepted += 1,
                    Kind::Duplicate => report.duplicates += 1,
                    Kind::Superseded => report.superseded += 1,
                    Kind::Conflict => {
                        report.conflicts += 1;
                        report.refused.push(tally_evidence::intake::Refusal {
                            source: source.clone(),
                            sheet: String::new(),
                            code: "conflict".into(),
                            message: outcome.message.clone(),
                        });
                    }
                    Kind::Refused | Kind::Unspecified => {
                        report.refused.push(tally_evidence::intake::Refusal {
                            source: source.clone(),
                            sheet: String::new(),
                            code: outcome.code.clone(),
                            message: outcome.message.clone(),
                        })
                    }
                }
            }
        }
    }
    report.seconds = started.elapsed().as_secs_f64();
    report.sheets_per_second = report.sheets as f64 / report.seconds.max(1e-9);
    latencies.sort_unstable();
    let pick = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q).ceil() as usize).saturating_sub(1))
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    report.latency_p50_ms = pick(0.50);
    report.latency_p99_ms = pick(0.99);
    report.latency_max_ms = pick(1.0);
    Ok(report)
}

fn print_submit(report: &SubmitReport, format: crate::report::Format) -> Result<()> {
    if format == crate::report::Format::Json {
        say!("{}", serde_json::to_string_pretty(report)?);
        return Ok(());
    }
    say!(
        "sent {} sheets in {} batches in {:.2} s ({:.0} sheets/s; batch latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; {} retries)",
        report.sheets,
        report.batches,
        report.seconds,
        report.sheets_per_second,
        report.latency_p50_ms,
        report.latency_p99_ms,
        report.latency_max_ms,
        report.retries
    );
    say!(
        "accepted {}, duplicates {}, superseded {}, conflicts {}, refused {}",
        report.accepted,
        report.duplicates,
        report.superseded,
        report.conflicts,
        report.refused.len() - report.conflicts
    );
    if !report.chain_head.is_empty() {
        say!(
            "county chain head {} at log index {}",
            &report.chain_head[..16.min(report.chain_head.len())],
            report.log_index
        );
    }
    for r in &report.refused {
        say!("  {} {}: {}", r.source, r.code, r.message);
    }
    Ok(())
}
