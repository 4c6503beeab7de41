//! Putting one replica together: open (or found) its data directory, start its driver, and
//! serve its services with gRPC health checking and reflection beside them.
//!
//! [`open`] and [`router`] take their network from outside (a [`Dialer`] and whatever the
//! router is served on), so tests and the simulation assemble replicas the same way
//! [`crate::config`]'s `tally county` does over TCP and TLS.

use crate::node::{self, NodeHandle, Placement};
use crate::replica::{Options, Replica, ReplicaError};
use crate::service::{AdminService, CountyService, RaftService, Shared};
use crate::storage::{self, DiskStorage, StorageError};
use crate::transport::{Dialer, RAFT_MESSAGE_BYTES_MAX};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tally_core::definition::Definition;
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

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("data_dir {dir}: {source}")]
    Storage {
        dir: PathBuf,
        #[source]
        source: StorageError,
    },
    #[error("data_dir {dir}: {source}")]
    Replica {
        dir: PathBuf,
        #[source]
        source: ReplicaError,
    },
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
pub fn open(setup: ReplicaSetup) -> Result<Opened, ServeError> {
    open_on(setup, Placement::Thread, None)
}

/// [`open`], with the driver where `placement` says: [`Placement::Task`] in the simulation,
/// whose runtime and clock are simulated.
pub fn open_with(setup: ReplicaSetup, placement: Placement) -> Result<Opened, ServeError> {
    open_on(setup, placement, None)
}

/// As [`open_with`], with the database on `backend` instead of its file in the data directory
/// (the simulation's power-loss disk, see [`DiskStorage::open_with_backend`]).
pub fn open_with_backend(
    setup: ReplicaSetup,
    placement: Placement,
    backend: Box<dyn storage::StorageBackend>,
) -> Result<Opened, ServeError> {
    open_on(setup, placement, Some(backend))
}

fn open_on(
    setup: ReplicaSetup,
    placement: Placement,
    backend: Option<Box<dyn storage::StorageBackend>>,
) -> Result<Opened, ServeError> {
    let dir = setup.data_dir.clone();
    let storage_error = |source| ServeError::Storage {
        dir: dir.clone(),
        source,
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
    .map_err(|source| ServeError::Replica {
        dir: dir.clone(),
        source,
    })?;
    let node = node::start(
        replica,
        setup.cluster_id,
        setup.peers,
        setup.tick,
        setup.dialer.clone(),
        placement,
    )
    .map_err(|source| ServeError::Replica {
        dir: dir.clone(),
        source,
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

/// Adds the replica's services to `server`: County, Admin, Raft, grpc.health.v1 and gRPC
/// reflection. Health says SERVING for `tally.v1.County` (and the whole server) while the
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
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(tally_rpc::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .expect("the descriptor sets are built with the binary");
    server
        .add_service(health)
        .add_service(reflection)
        .add_service(
            CountyServer::new(CountyService {
                shared: shared.clone(),
            })
            .max_decoding_message_size(RAFT_MESSAGE_BYTES_MAX)
            .max_encoding_message_size(RAFT_MESSAGE_BYTES_MAX),
        )
        .add_service(AdminServer::new(AdminService {
            shared: shared.clone(),
        }))
        .add_service(
            RaftServer::new(RaftService { shared })
                .max_decoding_message_size(RAFT_MESSAGE_BYTES_MAX),
        )
}
