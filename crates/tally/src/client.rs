//! What the commands that reach servers share: the runtime, logging, the shutdown signal, how
//! an operator reaches the cluster (`--servers`, `--pki`), TLS channels, and the look at every
//! replica's status that `tally cluster status` and `tally status` print.

use anyhow::{Context, Result, anyhow};
use clap::Args;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tally_county::transport::host_of;
use tally_net::{Identity, Role, TlsFiles};
use tally_rpc::pb;
use tally_rpc::pb::county_client::CountyClient;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

/// Logs go to standard error: human-readable by default, JSON lines with `TALLY_LOG_FORMAT=json`;
/// the level comes from `TALLY_LOG` (e.g. `info`, `tally_county=debug`), default `info`.
/// The line `tally cluster status` and `tally status` print above their tables: the election,
/// its mode and the founding definition's digest, as a replica's Status reports them.
pub fn founding_line(election_id: &str, mode: &str, definition_digest: &str) -> String {
    format!(
        "election {election_id} ({}); founding definition {}",
        tally_core::definition::Mode::banner_of(mode),
        if definition_digest.is_empty() {
            "not yet recorded"
        } else {
            definition_digest
        }
    )
}

pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TALLY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    if std::env::var("TALLY_LOG_FORMAT").as_deref() == Ok("json") {
        let _ = builder.json().try_init();
    } else {
        let _ = builder.try_init();
    }
}

/// The async runtime of a command that reaches servers.
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Ends on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
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

/// Reads and checks a client's TLS files once; [`channel`] names the host per address.
pub fn client_config(files: &TlsFiles) -> Result<ClientTlsConfig> {
    let (tls, _) = files.client_tls("localhost").map_err(|e| anyhow!("{e}"))?;
    Ok(tls)
}

pub fn channel(tls: &ClientTlsConfig, address: &str) -> Result<Channel> {
    Ok(Endpoint::from_shared(format!("https://{address}"))
        .with_context(|| format!("{address} is not host:port"))?
        .tls_config(tls.clone().domain_name(host_of(address)))?
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(30))
        .connect_lazy())
}

pub fn operator_files(pki: &Path, name: &str) -> Result<TlsFiles> {
    let identity = Identity::new(Role::Operator, name).map_err(|e| anyhow!("--operator: {e}"))?;
    Ok(TlsFiles::in_dir(pki, &identity))
}

/// Each replica's answer (None: unreachable) and what needs attention.
pub type ClusterLook = (Vec<(String, Option<pb::StatusResponse>)>, Vec<String>);

/// Asks every replica named, and every replica they know of, for its status.
pub async fn look(client: &ClientArgs, files: &TlsFiles) -> Result<ClusterLook> {
    let tls = client_config(files)?;
    let mut rows = Vec::new();
    let mut problems = Vec::new();
    let mut addresses: Vec<String> = client.servers.clone();
    let mut i = 0;
    while i < addresses.len() {
        let address = addresses[i].clone();
        i += 1;
        let mut county = CountyClient::new(channel(&tls, &address)?);
        match tokio::time::timeout(Duration::from_secs(5), county.status(pb::StatusRequest {}))
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
    for s in &answered {
        if !s.running {
            problems.push(format!(
                "replica {} has stopped: {}",
                s.replica_id, s.stopped
            ));
        }
    }
    let leader = answered.iter().find(|s| s.role == "leader");
    match leader {
        None => {
            problems.push("no replica is the leader: the cluster cannot accept sheets".to_owned())
        }
        Some(l) => {
            for p in &l.peers {
                if !p.reachable {
                    problems.push(match p.last_heard_ms {
                        0 => format!(
                            "replica {} has not been heard from since the leader started",
                            p.replica_id
                        ),
                        ms => format!(
                            "replica {} has not been heard from for {:.1} s",
                            p.replica_id,
                            ms as f64 / 1000.0
                        ),
                    });
                } else if p.lag > 1000 {
                    problems.push(format!(
                        "replica {} lags {} entries behind",
                        p.replica_id, p.lag
                    ));
                }
            }
        }
    }
    Ok((rows, problems))
}

/// True when nothing about the cluster needs attention.
pub async fn healthy(client: &ClientArgs, files: &TlsFiles) -> Result<bool> {
    Ok(look(client, files).await?.1.is_empty())
}
