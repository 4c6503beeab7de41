//! `tally status`: the whole county at a glance for an operator: every replica (role, term,
//! indexes, lag, health, from `client::look`) and every township aggregator (reachable,
//! outbox depth and age, units reported, whether it reaches the county, its last error and
//! refused sheets, from `Township.Picture`), as a table or as JSON; exit 3 with a list of
//! problems when something needs attention.
//!
//! Townships are found from flags (`--townships T01=host:port,...`) or from their own config
//! files (`--township-config DIR|FILE`): the township's `township.toml` already names its id and
//! its `listen` address, so an operator who deploys the configs need not copy addresses into a
//! second list that could drift; the flag serves an operator who holds no configs. The county
//! itself does not know the townships' addresses (townships dial the county, never the
//! reverse), so they cannot be discovered from the cluster.

use crate::client::{ClientArgs, client_config, look, operator_files, runtime};
use crate::outcome::Outcome;
use crate::{say, say_part};
use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tally_rpc::pb;
use tally_rpc::pb::township_client::TownshipClient;
use tally_table::{Align, Table};
use tonic::transport::{Channel, Endpoint};

/// How long one township may take to answer its picture.
pub const TOWNSHIP_ANSWER_TIMEOUT: Duration = Duration::from_secs(5);
/// The most townships one status asks (a county has a few dozen).
pub const TOWNSHIPS_MAX: usize = 1_000;
/// An outbox this full (percent of capacity) needs attention before it refuses sheets.
pub const OUTBOX_FULL_PERCENT: u64 = 80;

#[derive(Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// The operator certificate to use (operator-NAME.pem in --pki).
    #[arg(long, default_value = "operator")]
    pub operator: String,
    /// Township aggregators as ID=host:port, comma-separated.
    #[arg(long, value_delimiter = ',', env = "TALLY_TOWNSHIPS")]
    pub townships: Vec<String>,
    /// Township config files (township.toml), or folders of them: each gives the township's id
    /// and its `listen` address. Other .toml files in a folder (replica configs) are skipped.
    #[arg(long)]
    pub township_config: Vec<PathBuf>,
    /// An outbox whose oldest sheet has waited longer than this (seconds) needs attention.
    #[arg(long, default_value_t = 120)]
    pub outbox_age_max_s: u64,
    #[arg(long, short, value_enum, default_value_t = crate::report::Format::Table)]
    pub format: crate::report::Format,
}

/// One replica as `tally status` shows it.
#[derive(Serialize)]
pub struct ReplicaRow {
    pub address: String,
    pub reachable: bool,
    pub replica: Option<u64>,
    pub role: Option<String>,
    pub running: Option<bool>,
    pub term: Option<u64>,
    pub leader: Option<u64>,
    pub commit_index: Option<u64>,
    pub applied_index: Option<u64>,
    /// Entries behind the leader (None: no leader answered, or it does not track this one).
    pub lag: Option<u64>,
    pub sheets_counted: Option<u64>,
    pub conflicts: Option<u64>,
    pub chain_head: Option<String>,
    /// The founding definition's digest (empty until the cluster is founded), the election
    /// and its mode.
    pub definition_digest: Option<String>,
    pub election_id: Option<String>,
    pub mode: Option<String>,
    /// The amendments of the definition in force on the replica, by id.
    pub amendments: Option<Vec<String>>,
    /// The log index of the zero report; 0 while none is recorded.
    pub zero_report_log_index: Option<u64>,
}

/// One township as `tally status` shows it.
#[derive(Serialize, Default)]
pub struct TownshipRow {
    pub township: String,
    pub name: String,
    pub address: String,
    pub reachable: bool,
    /// Why it could not be asked (when not reachable).
    pub error: String,
    pub units_reported: u64,
    pub units_expected: u64,
    pub sheets_stored: u64,
    pub outbox_depth: u64,
    pub outbox_oldest_age_ms: u64,
    pub outbox_capacity: u64,
    pub forwarded: u64,
    pub county_reachable: bool,
    pub last_error: String,
    /// Set while a storage failure (a full disk) keeps the township's database closed.
    pub storage_error: String,
    /// Sheets refused or in conflict (by the township or by the county), newest first.
    pub refused: Vec<RefusedSheet>,
    /// Refusals and conflicts the township keeps no room for in `refused` (each unit keeps
    /// its newest few): how many more there were.
    pub refused_not_listed: u64,
}

#[derive(Serialize)]
pub struct RefusedSheet {
    pub unit: String,
    pub contest: String,
    pub round: u32,
    pub version: u32,
    pub digest: String,
    pub refused_by: String,
    pub code: String,
}

/// The committee's side of the count, from the county's results (docs/design/committee.md).
#[derive(Serialize, Default)]
pub struct CommitteeRow {
    pub contests: u64,
    pub confirmed: u64,
    /// Matters waiting for the committee, a contest ready to confirm included.
    pub waiting: u64,
    /// Of them, those that keep a contest from being confirmed.
    pub blocking: u64,
    /// Sheets recorded for confirmed contests after their lock.
    pub after_lock: u64,
    /// Why the results could not be read, if they could not.
    pub error: String,
}

/// What `tally status` found.
#[derive(Serialize)]
pub struct StatusReport {
    pub replicas: Vec<ReplicaRow>,
    pub townships: Vec<TownshipRow>,
    pub committee: CommitteeRow,
    /// Everything that needs attention, one sentence each; empty when all is well.
    pub problems: Vec<String>,
}

/// Reads `ID=host:port` flags and township configs into (id, address) pairs, in order, once each.
pub fn township_addresses(flags: &[String], configs: &[PathBuf]) -> Result<Vec<(String, String)>> {
    let mut found: Vec<(String, String)> = Vec::new();
    let mut add = |id: String, address: String| -> Result<()> {
        if let Some((_, known)) = found.iter().find(|(t, _)| *t == id) {
            if *known != address {
                bail!("township {id} is given twice, at {known} and at {address}");
            }
            return Ok(());
        }
        if found.len() >= TOWNSHIPS_MAX {
            bail!("more than {TOWNSHIPS_MAX} townships given");
        }
        found.push((id, address));
        Ok(())
    };
    for flag in flags.iter().filter(|f| !f.trim().is_empty()) {
        let (id, address) = flag
            .split_once('=')
            .ok_or_else(|| anyhow!("--townships {flag}: expected ID=host:port"))?;
        add(id.trim().to_owned(), address.trim().to_owned())?;
    }
    for path in configs {
        let files: Vec<PathBuf> = if path.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(path)
                .with_context(|| format!("cannot list {}", path.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "toml"))
                .collect();
            files.sort();
            files
        } else {
            vec![path.clone()]
        };
        let explicit = !path.is_dir();
        for file in files {
            match township_of_config(&file)? {
                Some((id, address)) => add(id, address)?,
                None if explicit => bail!(
                    "{}: not a township config (it has no township_id and listen)",
                    file.display()
                ),
                None => {}
            }
        }
    }
    Ok(found)
}

/// A township config's id and the address to reach it at; None for another kind of config.
fn township_of_config(path: &Path) -> Result<Option<(String, String)>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let value: toml::Table =
        toml::from_str(&text).with_context(|| format!("{} is not TOML", path.display()))?;
    let (Some(id), Some(listen)) = (
        value.get("township_id").and_then(|v| v.as_str()),
        value.get("listen").and_then(|v| v.as_str()),
    ) else {
        return Ok(None);
    };
    let listen: std::net::SocketAddr = listen
        .parse()
        .with_context(|| format!("{}: listen = {listen:?} is not host:port", path.display()))?;
    // A township listening on every address is reached on the loopback address here; its
    // certificate carries 127.0.0.1.
    let address = if listen.ip().is_unspecified() {
        format!("127.0.0.1:{}", listen.port())
    } else {
        listen.to_string()
    };
    Ok(Some((id.to_owned(), address)))
}

fn township_channel(tls: &tonic::transport::ClientTlsConfig, address: &str) -> Result<Channel> {
    Ok(Endpoint::from_shared(format!("https://{address}"))
        .with_context(|| format!("{address} is not host:port"))?
        .tls_config(
            tls.clone()
                .domain_name(tally_township::forward::host_of(address)),
        )?
        .connect_timeout(Duration::from_secs(3))
        .timeout(TOWNSHIP_ANSWER_TIMEOUT)
        .connect_lazy())
}

/// Asks one township for its picture.
async fn ask_township(channel: Channel) -> Result<pb::PictureResponse, String> {
    let mut client = TownshipClient::new(channel).max_decoding_message_size(64 << 20);
    match tokio::time::timeout(
        TOWNSHIP_ANSWER_TIMEOUT,
        client.picture(pb::PictureRequest {}),
    )
    .await
    {
        Ok(Ok(r)) => Ok(r.into_inner()),
        Ok(Err(status)) => Err(format!("{} ({:?})", status.message(), status.code())),
        Err(_) => Err(format!(
            "no answer within {} s",
            TOWNSHIP_ANSWER_TIMEOUT.as_secs()
        )),
    }
}

fn township_row(
    id: &str,
    address: &str,
    answer: Result<pb::PictureResponse, String>,
) -> TownshipRow {
    match answer {
        Err(error) => TownshipRow {
            township: id.to_owned(),
            address: address.to_owned(),
            error,
            ..TownshipRow::default()
        },
        Ok(p) => {
            let outbox = p.outbox.unwrap_or_default();
            TownshipRow {
                township: id.to_owned(),
                name: p.township_name,
                address: address.to_owned(),
                reachable: true,
                error: if p.township_id == id {
                    String::new()
                } else {
                    format!("the aggregator at {address} is township {}", p.township_id)
                },
                units_reported: p.units_reported,
                units_expected: p.units_expected,
                sheets_stored: p.sheets_stored,
                outbox_depth: outbox.depth,
                outbox_oldest_age_ms: outbox.oldest_age_ms,
                outbox_capacity: outbox.capacity,
                forwarded: outbox.forwarded,
                county_reachable: outbox.county_reachable,
                last_error: outbox.last_error,
                storage_error: p.storage_error,
                refused: p
                    .refused
                    .into_iter()
                    .map(|n| RefusedSheet {
                        unit: n.unit_id,
                        contest: n.contest_id,
                        round: n.round,
                        version: n.version,
                        digest: n.digest,
                        refused_by: n.refused_by,
                        code: n.code,
                    })
                    .collect(),
                refused_not_listed: p
                    .refused_not_listed
                    .iter()
                    .map(|m| m.refusals + m.conflicts)
                    .sum(),
            }
        }
    }
}

/// What needs attention about one township.
fn township_problems(t: &TownshipRow, outbox_age_max_s: u64, problems: &mut Vec<String>) {
    let who = format!("township {} ({})", t.township, t.address);
    if !t.reachable {
        problems.push(format!("{who}: unreachable: {}", t.error));
        return;
    }
    if !t.error.is_empty() {
        problems.push(format!("{who}: {}", t.error));
    }
    if !t.storage_error.is_empty() {
        problems.push(format!(
            "{who}: {}; it stores nothing until then",
            t.storage_error
        ));
    }
    if t.outbox_depth > 0 && t.outbox_oldest_age_ms > outbox_age_max_s * 1000 {
        problems.push(format!(
            "{who}: {} sheet(s) waiting in the outbox, the oldest for {:.0} s (more than {outbox_age_max_s} s)",
            t.outbox_depth,
            t.outbox_oldest_age_ms as f64 / 1000.0
        ));
    }
    if t.outbox_capacity > 0 && t.outbox_depth * 100 >= t.outbox_capacity * OUTBOX_FULL_PERCENT {
        problems.push(format!(
            "{who}: the outbox holds {} of {} sheets; it refuses sheets when full",
            t.outbox_depth, t.outbox_capacity
        ));
    }
    if t.outbox_depth > 0 && !t.county_reachable && !t.last_error.is_empty() {
        problems.push(format!("{who}: cannot reach the county: {}", t.last_error));
    }
    if !t.refused.is_empty() {
        let mut codes: Vec<String> = t
            .refused
            .iter()
            .map(|r| format!("{} by the {}", r.code, r.refused_by))
            .collect();
        codes.sort();
        codes.dedup();
        problems.push(format!(
            "{who}: {} sheet(s) refused or in conflict ({}); see `tally township picture`",
            t.refused.len() as u64 + t.refused_not_listed,
            codes.join(", ")
        ));
    }
}

/// Asks the cluster and every township; never fails because one of them does not answer.
pub async fn gather(args: &StatusArgs) -> Result<StatusReport> {
    let files = operator_files(&args.client.pki, &args.operator)?;
    let townships = township_addresses(&args.townships, &args.township_config)?;
    let tls = client_config(&files)?;
    let mut asks = tokio::task::JoinSet::new();
    for (i, (_, address)) in townships.iter().enumerate() {
        let channel = township_channel(&tls, address)?;
        asks.spawn(async move { (i, ask_township(channel).await) });
    }
    let (rows, mut problems) = look(&args.client, &files).await?;
    let mut answers: Vec<Option<Result<pb::PictureResponse, String>>> =
        townships.iter().map(|_| None).collect();
    while let Some(joined) = asks.join_next().await {
        let (i, answer) = joined.context("a township query failed")?;
        answers[i] = Some(answer);
    }
    let leader = rows
        .iter()
        .filter_map(|(_, s)| s.as_ref())
        .find(|s| s.role == "leader")
        .cloned();
    let replicas = rows
        .into_iter()
        .map(|(address, s)| match s {
            None => ReplicaRow {
                address,
                reachable: false,
                replica: None,
                role: None,
                running: None,
                term: None,
                leader: None,
                commit_index: None,
                applied_index: None,
                lag: None,
                sheets_counted: None,
                conflicts: None,
                chain_head: None,
                definition_digest: None,
                election_id: None,
                mode: None,
                amendments: None,
                zero_report_log_index: None,
            },
            Some(s) => {
                let lag = match &leader {
                    Some(l) if l.replica_id == s.replica_id => Some(0),
                    Some(l) => l
                        .peers
                        .iter()
                        .find(|p| p.replica_id == s.replica_id)
                        .map(|p| p.lag),
                    None => None,
                };
                ReplicaRow {
                    address,
                    reachable: true,
                    replica: Some(s.replica_id),
                    role: Some(s.role),
                    running: Some(s.running),
                    term: Some(s.term),
                    leader: Some(s.leader_id),
                    commit_index: Some(s.commit_index),
                    applied_index: Some(s.applied_index),
                    lag,
                    sheets_counted: Some(s.sheets_counted),
                    conflicts: Some(s.conflicts),
                    chain_head: Some(hex::encode(&s.chain_head)),
                    definition_digest: Some(s.definition_digest),
                    election_id: Some(s.election_id),
                    mode: Some(s.mode),
                    amendments: Some(s.amendments),
                    zero_report_log_index: Some(s.zero_report_log_index),
                }
            }
        })
        .collect::<Vec<_>>();
    let townships: Vec<TownshipRow> = townships
        .iter()
        .zip(answers)
        .map(|((id, address), answer)| {
            // Every spawned ask answers once (join_next ran to the end).
            let answer = answer.unwrap_or_else(|| Err("not asked".to_owned()));
            township_row(id, address, answer)
        })
        .collect();
    for t in &townships {
        township_problems(t, args.outbox_age_max_s, &mut problems);
    }
    let mut digests: Vec<&str> = replicas
        .iter()
        .filter_map(|r| r.definition_digest.as_deref())
        .filter(|d| !d.is_empty())
        .collect();
    digests.sort_unstable();
    digests.dedup();
    if digests.len() > 1 {
        problems.push(format!(
            "the replicas report different founding definitions ({}): they are not one cluster's replicas",
            digests.join(", ")
        ));
    }
    // An official election counts nothing before its zero report: the night cannot start.
    let founded_official = replicas.iter().find(|r| {
        r.mode.as_deref() == Some("official")
            && r.definition_digest
                .as_deref()
                .is_some_and(|d| !d.is_empty())
    });
    if founded_official.is_some()
        && !replicas
            .iter()
            .any(|r| r.zero_report_log_index.is_some_and(|i| i > 0))
    {
        problems.push(
            "the official count waits for the zero report: no sheet is taken before it; the committee prepares it (`tally zero-report prepare`), k officials sign it and an operator submits it".to_owned(),
        );
    }
    let committee = committee_row(&args.client, &files, &replicas).await;
    if committee.waiting > 0 {
        problems.push(format!(
            "{} matter(s) wait for the committee ({} keep a contest from being confirmed); {} of {} contests confirmed: `tally committee pending`",
            committee.waiting, committee.blocking, committee.confirmed, committee.contests
        ));
    }
    if committee.after_lock > 0 {
        problems.push(format!(
            "{} sheet(s) arrived for confirmed contests after their lock; they count only if the committee reopens the contest",
            committee.after_lock
        ));
    }
    Ok(StatusReport {
        replicas,
        townships,
        committee,
        problems,
    })
}

/// What waits for the committee, from one replica's results as it has applied them (a
/// stale read: status must answer while the cluster has no leader). Nothing to say before the
/// founding, or when no replica answers (the replica rows say so).
async fn committee_row(
    client: &crate::client::ClientArgs,
    files: &tally_net::TlsFiles,
    replicas: &[ReplicaRow],
) -> CommitteeRow {
    let founded = replicas.iter().any(|r| {
        r.definition_digest
            .as_deref()
            .is_some_and(|d| !d.is_empty())
    });
    if !founded {
        return CommitteeRow::default();
    }
    let request = pb::ResultsRequest {
        stale: true,
        ..Default::default()
    };
    match crate::county_cmd::fetch_results(client, files, request).await {
        Ok(r) => CommitteeRow {
            contests: r.contests.len() as u64,
            confirmed: r
                .contests
                .iter()
                .filter(|c| !c.confirmation.is_empty())
                .count() as u64,
            waiting: r.matters.len() as u64,
            blocking: r.matters.iter().filter(|m| m.blocking).count() as u64,
            after_lock: r.contests.iter().map(|c| u64::from(c.after_lock)).sum(),
            error: String::new(),
        },
        Err(e) => CommitteeRow {
            error: format!("{e:#}"),
            ..Default::default()
        },
    }
}

/// `tally status`.
pub fn run(args: StatusArgs) -> Result<Outcome> {
    let report = runtime()?.block_on(gather(&args))?;
    match args.format {
        crate::report::Format::Json => say!("{}", serde_json::to_string_pretty(&report)?),
        crate::report::Format::Table | crate::report::Format::Csv => print_table(&report),
    }
    Ok(if report.problems.is_empty() {
        Outcome::Clean
    } else {
        Outcome::Findings
    })
}

fn opt<T: ToString>(value: &Option<T>) -> String {
    value.as_ref().map_or_else(String::new, T::to_string)
}

fn print_table(report: &StatusReport) {
    use Align::{Left, Right};
    let mut replicas = Table::new(&[
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
    ]);
    for r in &report.replicas {
        let role = match (&r.role, r.running) {
            (None, _) => "unreachable".to_owned(),
            (Some(_), Some(false)) => "stopped".to_owned(),
            (Some(role), _) => role.clone(),
        };
        replicas.row(vec![
            opt(&r.replica),
            r.address.clone(),
            role,
            opt(&r.term),
            opt(&r.leader),
            opt(&r.commit_index),
            opt(&r.applied_index),
            if r.reachable {
                r.lag.map_or("?".to_owned(), |l| l.to_string())
            } else {
                String::new()
            },
            opt(&r.sheets_counted),
            opt(&r.conflicts),
        ]);
    }
    if let Some(r) = report
        .replicas
        .iter()
        .find(|r| r.definition_digest.is_some())
    {
        say!(
            "{}",
            crate::client::founding_line(
                r.election_id.as_deref().unwrap_or_default(),
                r.mode.as_deref().unwrap_or_default(),
                r.definition_digest.as_deref().unwrap_or_default(),
            )
        );
    }
    say!("county replicas:");
    say_part!("{}", replicas.render());
    if !report.townships.is_empty() {
        let mut townships = Table::new(&[
            ("township", Left),
            ("name", Left),
            ("address", Left),
            ("state", Left),
            ("units", Right),
            ("outbox", Right),
            ("oldest", Right),
            ("forwarded", Right),
            ("county", Left),
            ("refused", Right),
        ]);
        for t in &report.townships {
            let (state, county) = if t.reachable {
                (
                    "up".to_owned(),
                    if t.county_reachable {
                        "reachable".to_owned()
                    } else if t.last_error.is_empty() {
                        "not yet".to_owned()
                    } else {
                        "UNREACHABLE".to_owned()
                    },
                )
            } else {
                ("UNREACHABLE".to_owned(), String::new())
            };
            let up = t.reachable;
            townships.row(vec![
                t.township.clone(),
                t.name.clone(),
                t.address.clone(),
                state,
                if up {
                    format!("{}/{}", t.units_reported, t.units_expected)
                } else {
                    String::new()
                },
                if up {
                    t.outbox_depth.to_string()
                } else {
                    String::new()
                },
                if up && t.outbox_depth > 0 {
                    format!("{:.0} s", t.outbox_oldest_age_ms as f64 / 1000.0)
                } else {
                    String::new()
                },
                if up {
                    t.forwarded.to_string()
                } else {
                    String::new()
                },
                county,
                if up {
                    (t.refused.len() as u64 + t.refused_not_listed).to_string()
                } else {
                    String::new()
                },
            ]);
        }
        say!("townships:");
        say_part!("{}", townships.render());
        for t in report.townships.iter().filter(|t| !t.last_error.is_empty()) {
            say!("township {}: last error: {}", t.township, t.last_error);
        }
    }
    let c = &report.committee;
    if c.contests > 0 {
        say!(
            "committee: {} of {} contests confirmed, {} matter(s) waiting ({} blocking), {} after-lock arrival(s)",
            c.confirmed,
            c.contests,
            c.waiting,
            c.blocking,
            c.after_lock
        );
    }
    if !c.error.is_empty() {
        say!("committee: the results could not be read: {}", c.error);
    }
    if report.problems.is_empty() {
        say!("all well");
    }
    for p in &report.problems {
        say!("attention: {p}");
    }
}
