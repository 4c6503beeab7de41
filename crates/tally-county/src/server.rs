//! Putting one replica together: open (or found) its data directory, start its driver, and
//! serve its services with gRPC health checking and reflection beside them.
//!
//! [`open`] and [`router`] take their network from outside (a [`Dialer`] and whatever the
//! router is served on), so tests and the simulation assemble replicas the same way
//! [`serve`] does over TCP and TLS for `tally county`: [`server_tls`] checks the replica's
//! certificate, [`serve`] runs the replica a [`CountyConfig`] describes on listeners it is
//! handed until `shutdown` ends or its driver stops.

use crate::config::CountyConfig;
use crate::error::Error;
use crate::ids::ReplicaId;
use crate::limits;
use crate::node::{self, NodeHandle, Placement};
use crate::replica::{Options, Replica};
use crate::service::{AdminService, CountyService, RaftService};
use crate::shared::Shared;
use crate::storage::{self, DiskStorage};
use crate::transport::Dialer;
use crate::transport::TlsDialer;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tally_core::definition::Definition;
use tally_net::{Role, guard};
use tally_rpc::pb::admin_server::AdminServer;
use tally_rpc::pb::county_server::CountyServer;
use tally_rpc::pb::raft_server::RaftServer;
use tonic::transport::server::Router;

/// Everything a replica needs to start, however it was configured.
pub struct ReplicaSetup {
    pub cluster_id: String,
    pub replica_id: ReplicaId,
    pub data_dir: PathBuf,
    pub definition: Arc<Definition>,
    /// The founding voters. A replica among them founds the cluster with them the first time
    /// its data directory is opened; any other replica waits to be added and sent a snapshot.
    pub initial_voters: Vec<ReplicaId>,
    /// Addresses of the replicas known from the configuration.
    pub peers: BTreeMap<ReplicaId, String>,
    pub tick: Duration,
    pub compact_after_entries: u64,
    pub dialer: Arc<dyn Dialer>,
}

/// A started replica: its handle and what its services share.
pub struct Opened {
    pub node: NodeHandle,
    pub shared: Arc<Shared>,
    /// True when this start founded the cluster (first start of a founding replica).
    pub founded: bool,
}

/// Opens the replica's data directory (founding the cluster on a founder's first start) and
/// starts its driver on a thread of its own. Must be called inside a tokio runtime; the
/// driver stops when that runtime shuts down.
pub fn open(setup: ReplicaSetup) -> Result<Opened, Error> {
    open_on(setup, Placement::Thread, None)
}

/// [`open`], with the driver where `placement` says: [`Placement::Task`] in the simulation,
/// whose runtime and clock are simulated.
pub fn open_with(setup: ReplicaSetup, placement: Placement) -> Result<Opened, Error> {
    open_on(setup, placement, None)
}

/// As [`open_with`], with the database on `backend` instead of its file in the data directory
/// (the simulation's power-loss disk, see [`DiskStorage::open_with_backend`]).
pub fn open_with_backend(
    setup: ReplicaSetup,
    placement: Placement,
    backend: Box<dyn storage::StorageBackend>,
) -> Result<Opened, Error> {
    open_on(setup, placement, Some(backend))
}

fn open_on(
    setup: ReplicaSetup,
    placement: Placement,
    backend: Option<Box<dyn storage::StorageBackend>>,
) -> Result<Opened, Error> {
    let dir = setup.data_dir.clone();
    let storage_error = |source| Error::DataDir {
        dir: dir.clone(),
        source: Box::new(source),
    };
    let identity = storage::Identity {
        cluster_id: setup.cluster_id.clone(),
        replica_id: setup.replica_id,
    };
    let storage = match backend {
        Some(backend) => DiskStorage::open_with_backend(&setup.data_dir, &identity, backend),
        None => DiskStorage::open(&setup.data_dir, &identity),
    }
    .map_err(storage_error)?;
    let mut founded = false;
    if !storage.is_initialized() && setup.initial_voters.contains(&setup.replica_id) {
        storage
            .bootstrap(&setup.initial_voters)
            .map_err(storage_error)?;
        founded = true;
        tracing::info!(
            replica = setup.replica_id.get(),
            voters = ?setup.initial_voters,
            "founded the cluster"
        );
    }
    let replica = Replica::open_with(
        setup.replica_id,
        storage.clone(),
        setup.definition.clone(),
        Options {
            compact_after_entries: setup.compact_after_entries,
        },
    )
    .map_err(|source| Error::DataDir {
        dir: dir.clone(),
        source: Box::new(source),
    })?;
    let node = node::start(
        replica,
        setup.cluster_id,
        setup.peers,
        setup.tick,
        setup.dialer.clone(),
        placement,
    )
    .map_err(|source| Error::DataDir {
        dir: dir.clone(),
        source: Box::new(source),
    })?;
    let shared = Shared::new(
        node.clone(),
        setup.definition,
        setup.dialer,
        storage,
        setup.tick,
    )
    .map_err(storage_error)?;
    Ok(Opened {
        node,
        shared,
        founded,
    })
}

/// The name the health service reports the county service under.
pub const COUNTY_SERVICE_NAME: &str = "tally.v1.County";
/// The full name of the Admin service.
pub const ADMIN_SERVICE_NAME: &str = "tally.v1.Admin";
/// The full name of the Raft service.
pub const RAFT_SERVICE_NAME: &str = "tally.v1.Raft";

/// Adds the replica's services to `server`: County, Admin, Raft, grpc.health.v1 and gRPC
/// reflection (v1 and v1alpha, listing these services only), each behind its limits
/// ([`crate::limits`]), with the streams per connection limited. Serve it on
/// [`tally_net::limit_connections`]`(incoming, `[`limits::CONNECTIONS_MAX`]`)`. Health says SERVING for `tally.v1.County` (and the whole server) while the
/// replica knows a leader, NOT_SERVING otherwise.
pub fn router(mut server: tonic::transport::Server, shared: Arc<Shared>) -> Router {
    let (reporter, health) = tonic_health::server::health_reporter();
    let mut status = shared.node.status();
    tokio::spawn(async move {
        let mut last = None;
        loop {
            let serving = {
                let s = status.borrow_and_update();
                s.running && s.leader.is_some()
            };
            if last != Some(serving) {
                let health = if serving {
                    tonic_health::ServingStatus::Serving
                } else {
                    tonic_health::ServingStatus::NotServing
                };
                reporter.set_service_status("", health).await;
                reporter
                    .set_service_status(COUNTY_SERVICE_NAME, health)
                    .await;
                last = Some(serving);
            }
            if status.changed().await.is_err() {
                return;
            }
        }
    });
    let replica = shared.node.status().borrow().id;
    let who = format!("replica {replica}");
    let (reflection_v1, reflection_v1alpha) = tally_rpc::reflection::reflection(&[
        COUNTY_SERVICE_NAME,
        ADMIN_SERVICE_NAME,
        RAFT_SERVICE_NAME,
    ]);
    // The limits are checked before a request body is read (see `crate::limits`); tonic's own
    // decode limit, per service, is set to the service's largest method as a second fence.
    let county = limits::county(replica);
    let admin = limits::admin(replica);
    let raft = limits::raft(replica);
    let health_limits = tally_net::health_limits(who.clone());
    let v1_limits = tally_net::reflection_limits(tally_rpc::reflection::REFLECTION_V1, who.clone());
    let v1alpha_limits =
        tally_net::reflection_limits(tally_rpc::reflection::REFLECTION_V1ALPHA, who);
    server = server
        .max_concurrent_streams(limits::STREAMS_PER_CONNECTION_MAX)
        .concurrency_limit_per_connection(limits::STREAMS_PER_CONNECTION_MAX as usize);
    server
        .add_service(guard(
            health.max_decoding_message_size(health_limits.message_bytes_max()),
            health_limits,
        ))
        .add_service(guard(
            reflection_v1.max_decoding_message_size(v1_limits.message_bytes_max()),
            v1_limits,
        ))
        .add_service(guard(
            reflection_v1alpha.max_decoding_message_size(v1alpha_limits.message_bytes_max()),
            v1alpha_limits,
        ))
        .add_service(guard(
            CountyServer::new(CountyService {
                shared: shared.clone(),
            })
            .max_decoding_message_size(county.message_bytes_max())
            .max_encoding_message_size(limits::RESPONSE_BYTES_MAX),
            county,
        ))
        .add_service(guard(
            AdminServer::new(AdminService {
                shared: shared.clone(),
            })
            .max_decoding_message_size(admin.message_bytes_max()),
            admin,
        ))
        .add_service(guard(
            RaftServer::new(RaftService { shared })
                .max_decoding_message_size(raft.message_bytes_max()),
            raft,
        ))
}

/// How long calls in progress may take to finish once a replica is told to stop.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// How a replica that served stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Served {
    /// Told to stop (`shutdown` ended); calls in progress had [`SHUTDOWN_GRACE`] to finish.
    Stopped,
    /// Its driver stopped on a failure of its own: `exit_status` is
    /// [`crate::fault::EXIT_STORAGE`] when its storage failed,
    /// [`crate::fault::EXIT_DEFINITION`] when its definition is not the founding one,
    /// [`crate::fault::EXIT_DRIVER`] otherwise; `reason` is the stopped status's. Logged
    /// already.
    Failed { exit_status: u8, reason: String },
}

/// The replica's server TLS configuration, after checking that its certificate is this
/// replica's own (`tally://replica/ID` for the config's `replica_id`).
pub fn server_tls(config: &CountyConfig) -> Result<tonic::transport::ServerTlsConfig, Error> {
    let file = config.file.clone();
    let (tls, identity) = config.tls.server_tls().map_err(|e| Error::Tls {
        file: file.clone(),
        message: format!(": {e}"),
    })?;
    if identity.role() != Role::Replica || identity.replica_id() != Some(config.replica_id.get()) {
        return Err(Error::Tls {
            file,
            message: format!(
                " cert {} is {}'s certificate, but this is replica {}; point cert and key at replica-{}.pem and replica-{}.key",
                config.tls.cert.display(),
                identity.uri(),
                config.replica_id,
                config.replica_id,
                config.replica_id
            ),
        });
    }
    Ok(tls)
}

/// `tally county`: opens the replica `config` describes (founding the cluster on a founder's
/// first start) and serves it on `listener` with mutual TLS, and `/metrics` and the dashboard
/// on `http_listener` when there is one, until `shutdown` ends (then calls in progress get
/// [`SHUTDOWN_GRACE`]) or the replica's driver stops (its storage failed). Must be called
/// inside a multi-threaded tokio runtime.
pub async fn serve(
    config: &CountyConfig,
    definition: Arc<Definition>,
    tls: tonic::transport::ServerTlsConfig,
    listener: tokio::net::TcpListener,
    http_listener: Option<tokio::net::TcpListener>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<Served, Error> {
    let dialer = Arc::new(TlsDialer::new(&config.tls).map_err(|e| Error::Tls {
        file: config.file.clone(),
        message: format!(": {e}"),
    })?);
    let opened = open(ReplicaSetup {
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
    .map_err(|e| Error::Open {
        file: config.file.clone(),
        open: Box::new(e),
    })?;
    log_start(config, &opened);
    // Small answers must not wait for Nagle's algorithm (tonic's `tcp_nodelay` does not
    // reach sockets from a listener given to it, so it is set here).
    let incoming = tonic::transport::server::TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .with_keepalive(Some(Duration::from_secs(30)));
    let incoming = tally_net::limit_connections(incoming, limits::CONNECTIONS_MAX);
    let server = tonic::transport::Server::builder()
        .tls_config(tls)
        .map_err(|e| Error::Server(format!("TLS configuration: {}", with_causes(&e))))?
        .tcp_nodelay(true)
        .http2_keepalive_interval(Some(Duration::from_secs(10)));
    // On SIGTERM or Ctrl-C stop taking calls, give calls in progress a moment, then stop:
    // the other replicas' raft streams never end by themselves.
    let (stopping, stop) = tokio::sync::oneshot::channel::<()>();
    // The HTTP listener (metrics, dashboard) stops when the gRPC server is told to.
    let (http_stopping, http_stop) = tokio::sync::watch::channel(false);
    if let Some(listener) = http_listener {
        serve_http(
            config.replica_id,
            listener,
            opened.shared.clone(),
            http_stop,
        );
    }
    // A replica whose driver stopped (its storage failed) takes no more calls and exits
    // non-zero, so that systemd starts it again: staying up would only answer "stopped".
    let mut driver = opened.node.status();
    let replica_id = config.replica_id;
    let serve = router(server, opened.shared).serve_with_incoming_shutdown(incoming, async move {
        tokio::select! {
            _ = shutdown => {
                tracing::info!(replica = replica_id.get(), "stopping");
            }
            _ = driver.wait_for(|s| !s.running) => {}
        }
        let _ = http_stopping.send(true);
        let _ = stopping.send(());
    });
    tokio::select! {
        served = serve => served.map_err(|e| {
            Error::Server(format!("the gRPC server failed: {}", with_causes(&e)))
        })?,
        _ = async {
            let _ = stop.await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => {}
    }
    let last = opened.node.status().borrow().clone();
    if !last.running {
        let status = last.exit_status;
        let reason = last.stopped.clone().unwrap_or_default();
        tracing::error!(
            replica = config.replica_id.get(),
            exit_status = status,
            "replica {} stopped: {reason}; exiting with status {status}",
            config.replica_id
        );
        return Ok(Served::Failed {
            exit_status: status,
            reason,
        });
    }
    tracing::info!(replica = config.replica_id.get(), "stopped");
    Ok(Served::Stopped)
}

/// Logs how the replica started: founded the cluster, waits to be added, or resumed.
fn log_start(config: &CountyConfig, opened: &Opened) {
    let status = opened.node.status().borrow().clone();
    let how = if opened.founded {
        format!(
            "founded cluster {} with voters {:?}",
            config.cluster_id, config.initial_voters
        )
    } else if status.voters.is_empty() && status.learners.is_empty() {
        "waiting to be added to the cluster (tally cluster add) and sent a snapshot".to_owned()
    } else {
        format!("resumed at applied index {}", status.applied_index)
    };
    tracing::info!(
        replica = config.replica_id.get(),
        cluster = %config.cluster_id,
        listen = %config.listen,
        data_dir = %config.data_dir.display(),
        "replica {} serving; {how}",
        config.replica_id
    );
}

/// Serves `/metrics` and the dashboard on `listener` until `http_stop` turns true.
fn serve_http(
    replica_id: ReplicaId,
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    mut http_stop: tokio::sync::watch::Receiver<bool>,
) {
    let address = listener.local_addr().ok();
    tracing::info!(
        replica = replica_id.get(),
        http = ?address,
        "serving /metrics and the dashboard over HTTP"
    );
    tokio::spawn(async move {
        let stopped = async move {
            let _ = http_stop.wait_for(|stop| *stop).await;
        };
        if let Err(e) = crate::http::serve(listener, shared, stopped).await {
            tracing::error!(error = %e, "the HTTP listener failed");
        }
    });
}

/// An error and every error under it, as `error: cause: cause`.
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        text.push_str(&format!(": {e}"));
        cause = e.source();
    }
    text
}
