//! Putting one replica together: open (or found) its data directory, start its driver, and
//! serve its services with gRPC health checking and reflection beside them.
//!
//! [`open`] and [`router`] take their network from outside (a [`Dialer`] and whatever the
//! router is served on), so tests and the simulation assemble replicas the same way
//! [`crate::config`]'s `tally county` does over TCP and TLS.

use crate::error::Error;
use crate::limits;
use crate::node::{self, NodeHandle, Placement};
use crate::replica::{Options, Replica};
use crate::service::{AdminService, CountyService, RaftService, Shared};
use crate::storage::{self, DiskStorage};
use crate::transport::Dialer;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tally_core::definition::Definition;
use tally_net::guard;
use tally_rpc::pb::admin_server::AdminServer;
use tally_rpc::pb::county_server::CountyServer;
use tally_rpc::pb::raft_server::RaftServer;
use tonic::transport::server::Router;

/// Everything a replica needs to start, however it was configured.
pub struct ReplicaSetup {
    pub cluster_id: String,
    pub replica_id: u64,
    pub data_dir: PathBuf,
    pub definition: Arc<Definition>,
    /// The founding voters. A replica among them founds the cluster with them the first time
    /// its data directory is opened; any other replica waits to be added and sent a snapshot.
    pub initial_voters: Vec<u64>,
    /// Addresses of the replicas known from the configuration.
    pub peers: BTreeMap<u64, String>,
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
            replica = setup.replica_id,
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
/// The largest answer a replica sends: a Results answer carries the whole county's result
/// as JSON beside its messages (an Export sends its records in chunks well under this).
pub const RESPONSE_BYTES_MAX: usize = 1 << 30;

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
            .max_encoding_message_size(RESPONSE_BYTES_MAX),
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
