//! `tally county` (run one replica of the county coordinator), `tally cluster` (an operator's
//! view and administration of the cluster) and `tally submit` (forward signed sheets to the
//! county as a township).

use crate::cli::Outcome;
use crate::files::load_definition;
use crate::table::Table;
use crate::{say, say_part};
use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Subcommand};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tally_county::config::CountyConfig;
use tally_county::server::{self, ReplicaSetup};
use tally_county::transport::{TlsDialer, host_of};
use tally_net::{Identity, Role, TlsFiles};
use tally_rpc::pb;
use tally_rpc::pb::admin_client::AdminClient;
use tally_rpc::pb::county_client::CountyClient;
use tonic::transport::{Channel, Endpoint};

/// Logs go to standard error: human-readable by default, JSON lines with `TALLY_LOG_FORMAT=json`;
/// the level comes from `TALLY_LOG` (e.g. `info`, `tally_county=debug`), default `info`.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TALLY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::env::var("TALLY_LOG_FORMAT").as_deref() == Ok("json") {
        let _ = builder.json().try_init();
    } else {
        let _ = builder.try_init();
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// `tally county --config county.toml`.
pub fn serve(config_path: &Path) -> Result<Outcome> {
    let config = CountyConfig::load(config_path).map_err(|e| anyhow!("{e}"))?;
    let definition = Arc::new(
        load_definition(&config.definition)
            .with_context(|| format!("{}: definition", config.file.display()))?,
    );
    let (tls, identity) = config
        .tls
        .server_tls()
        .map_err(|e| anyhow!("{}: [tls]: {e}", config.file.display()))?;
    if identity.role() != Role::Replica || identity.replica_id() != Some(config.replica_id) {
        bail!(
            "{}: [tls] cert {} is {}'s certificate, but this is replica {}; point cert and key at replica-{}.pem and replica-{}.key",
            config.file.display(),
            config.tls.cert.display(),
            identity.uri(),
            config.replica_id,
            config.replica_id,
            config.replica_id
        );
    }
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
        let dialer = Arc::new(TlsDialer {
            tls: config.tls.clone(),
        });
        let opened = server::open(ReplicaSetup {
            cluster_id: config.cluster_id.clone(),
            replica_id: config.replica_id,
            data_dir: config.data_dir.clone(),
            definition,
            initial_voters: config.initial_voters.clone(),
            peers: config.peers.clone(),
            tick: config.tick,
            compact_after_entries: config.compact_after_entries,
            dialer,
        })
        .map_err(|e| anyhow!("{}: {e}", config.file.display()))?;
        let status = opened.node.status().borrow().clone();
        let how = if opened.founded {
            format!("founded cluster {} with voters {:?}", config.cluster_id, config.initial_voters)
        } else if status.voters.is_empty() && status.learners.is_empty() {
            "waiting to be added to the cluster (tally cluster add) and sent a snapshot".to_owned()
        } else {
            format!("resumed at applied index {}", status.applied_index)
        };
        tracing::info!(
            replica = config.replica_id,
            cluster = %config.cluster_id,
            listen = %config.listen,
            data_dir = %config.data_dir.display(),
            "replica {} serving; {how}",
            config.replica_id
        );
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        let server = tonic::transport::Server::builder()
            .tls_config(tls)
            .context("TLS configuration")?
            .tcp_nodelay(true)
            .http2_keepalive_interval(Some(Duration::from_secs(10)));
        server::router(server, opened.shared)
            .serve_with_incoming_shutdown(incoming, shutdown_signal())
            .await
            .context("the gRPC server failed")?;
        tracing::info!(replica = config.replica_id, "stopped");
        Ok(Outcome::Clean)
    })
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        let term = async {
            match term.as_mut() {
                Some(t) => {
                    t.recv().await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// How an operator or township client reaches the cluster.
#[derive(Args, Clone)]
pub struct ClientArgs {
    /// Replica addresses (host:port), comma-separated; any one will do, the others are tried
    /// when it does not answer.
    #[arg(long, value_delimiter = ',', required = true, env = "TALLY_SERVERS")]
    pub servers: Vec<String>,
    /// The folder with ca.pem and your certificate (as `tally certs` writes it).
    #[arg(long, env = "TALLY_PKI")]
    pub pki: PathBuf,
}

fn channel(files: &TlsFiles, address: &str) -> Result<Channel> {
    let (tls, _) = files
        .client_tls(host_of(address))
        .map_err(|e| anyhow!("{e}"))?;
    Ok(Endpoint::from_shared(format!("https://{address}"))
        .with_context(|| format!("{address} is not host:port"))?
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(30))
        .connect_lazy())
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

fn operator_files(pki: &Path, name: &str) -> Result<TlsFiles> {
    let identity = Identity::new(Role::Operator, name).map_err(|e| anyhow!("--operator: {e}"))?;
    Ok(TlsFiles::in_dir(pki, &identity))
}

pub fn cluster(command: ClusterCommand) -> Result<Outcome> {
    runtime()?.block_on(async move {
        match command {
            ClusterCommand::Status {
                client,
                operator,
                format,
            } => status(&client, &operator_files(&client.pki, &operator)?, format).await,
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
                    c.remove_replica(pb::ReplicaRequest { id, max_lag: 0 }).await
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
                    c.transfer_leader(pb::ReplicaRequest { id, max_lag: 0 }).await
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
    let mut errors = Vec::new();
    for address in &client.servers {
        match call(AdminClient::new(channel(files, address)?)).await {
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
            Err(status) if status.code() == tonic::Code::Unavailable => {
                errors.push(format!("{address}: {}", status.message()));
            }
            Err(status) => bail!("{address}: {}", status.message()),
        }
    }
    bail!("no replica could take the call:\n  {}", errors.join("\n  "))
}

async fn status(
    client: &ClientArgs,
    files: &TlsFiles,
    format: crate::report::Format,
) -> Result<Outcome> {
    let mut rows = Vec::new();
    let mut problems = Vec::new();
    let mut addresses: Vec<String> = client.servers.clone();
    let mut i = 0;
    while i < addresses.len() {
        let address = addresses[i].clone();
        i += 1;
        let mut county = CountyClient::new(channel(files, &address)?);
        match tokio::time::timeout(
            Duration::from_secs(5),
            county.status(pb::StatusRequest {}),
        )
        .await
        {
            Ok(Ok(response)) => {
                let s = response.into_inner();
                for a in s.addresses.values() {
                    if !addresses.contains(a) {
                        addresses.push(a.clone());
                    }
                }
                rows.push((address, Some(s)));
            }
            Ok(Err(e)) => {
                problems.push(format!("{address}: {}", e.message()));
                rows.push((address, None));
            }
            Err(_) => {
                problems.push(format!("{address}: no answer within 5 s"));
                rows.push((address, None));
            }
        }
    }
    let answered: Vec<&pb::StatusResponse> = rows.iter().filter_map(|(_, s)| s.as_ref()).collect();
    let leader = answered.iter().find(|s| s.role == "leader");
    match leader {
        None => problems.push("no replica is the leader: the cluster cannot accept sheets".to_owned()),
        Some(l) => {
            for p in &l.peers {
                if !p.recent_active {
                    problems.push(format!("replica {} has not been heard from recently", p.replica_id));
                } else if p.lag > 1000 {
                    problems.push(format!("replica {} lags {} entries behind", p.replica_id, p.lag));
                }
            }
        }
    }
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
                    "conflicts": s.conflicts,
                    "lag": leader.and_then(|l| l.peers.iter().find(|p| p.replica_id == s.replica_id)).map(|p| p.lag),
                }),
                None => serde_json::json!({ "address": address, "reachable": false }),
            })
            .collect();
        say!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "replicas": json, "problems": problems }))?
        );
    } else {
        use crate::table::Align::{Left, Right};
        let mut table = Table::new(&[
            ("replica", Right),
            ("address", Left),
            ("role", Left),
            ("term", Right),
            ("leader", Right),
            ("commit", Right),
            ("applied", Right),
            ("lag", Right),
            ("sheets", Right),
            ("conflicts", Right),
            ("chain head", Left),
        ]);
        for (address, s) in &rows {
            match s {
                Some(s) => {
                    let lag = leader
                        .and_then(|l| l.peers.iter().find(|p| p.replica_id == s.replica_id))
                        .map_or_else(|| if s.role == "leader" { "0".to_owned() } else { "?".to_owned() }, |p| p.lag.to_string());
                    table.row(vec![
                        s.replica_id.to_string(),
                        address.clone(),
                        s.role.clone(),
                        s.term.to_string(),
                        s.leader_id.to_string(),
                        s.commit_index.to_string(),
                        s.applied_index.to_string(),
                        lag,
                        s.sheets_counted.to_string(),
                        s.conflicts.to_string(),
                        hex::encode(&s.chain_head[..s.chain_head.len().min(8)]),
                    ]);
                }
                None => table.row(vec![
                    "?".into(), address.clone(), "unreachable".into(), "".into(), "".into(),
                    "".into(), "".into(), "".into(), "".into(), "".into(), "".into(),
                ]),
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
