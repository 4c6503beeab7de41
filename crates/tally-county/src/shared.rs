//! What the services of one replica share ([`Shared`]): the driver's handle, the definition,
//! the storage, the metrics, results computed outside the driver, what is known of each peer,
//! and the channels for forwarded calls. The County, Admin and Raft services (service.rs), a
//! follower's forwarding (forward.rs) and the HTTP side (http.rs) all work from it.

use crate::error::Error;
use crate::error::status;
use crate::ids::{LogIndex, ReplicaId};
use crate::node::{NodeHandle, NodeStatus};
use crate::reads::ResultsCache;
use crate::storage::{DiskStorage, INCARNATION_BYTES};
use crate::transport::Dialer;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tally_core::definition::Definition;
use tally_rpc::pb;
use tonic::Status;

/// What the services of one replica share.
pub struct Shared {
    pub node: NodeHandle,
    pub definition: Arc<Definition>,
    pub dialer: Arc<dyn Dialer>,
    pub storage: DiskStorage,
    /// Sheets answered by this replica as leader, by outcome, for `/metrics`.
    pub sheets: crate::metrics::SheetMetrics,
    /// This replica's registry: the node's, the storage's and [`Shared::sheets`]'s metrics.
    pub metrics: crate::metrics::Metrics,
    /// Results computed outside the driver, once per applied index.
    results: Arc<ResultsCache>,
    /// Each peer's data directory incarnation, as first seen.
    incarnations: Mutex<HashMap<ReplicaId, [u8; INCARNATION_BYTES]>>,
    /// When a raft batch last arrived from each peer.
    pub(crate) heard: Mutex<HashMap<ReplicaId, tokio::time::Instant>>,
    /// Channels to other replicas for forwarded calls, by address: one connection each,
    /// reused (HTTP/2 multiplexes the calls), instead of a TLS handshake per call.
    forward_channels: Mutex<HashMap<String, tonic::transport::Channel>>,
    /// When a refused incarnation was last logged, per peer.
    refusals_logged: Mutex<HashMap<ReplicaId, tokio::time::Instant>>,
    /// A peer not heard from for this long is reported unreachable (two election timeouts).
    silence_max: Duration,
    /// The longest randomized election timeout (2 × `ELECTION_TICKS` ticks): forwarded calls
    /// size their deadlines from it (see [`crate::forward`]).
    election_timeout_max: Duration,
}

const INCARNATION_RECORD: &str = "incarnation";

use crate::reads::ResultsAt;

impl Shared {
    pub fn new(
        node: NodeHandle,
        definition: Arc<Definition>,
        dialer: Arc<dyn Dialer>,
        storage: DiskStorage,
        tick: Duration,
    ) -> Result<Arc<Shared>, Error> {
        let mut incarnations = HashMap::new();
        for (id, value) in storage.peer_records(INCARNATION_RECORD)? {
            if let Ok(bytes) = <[u8; INCARNATION_BYTES]>::try_from(value.as_slice()) {
                incarnations.insert(id, bytes);
            }
        }
        let sheets = crate::metrics::SheetMetrics::default();
        let metrics =
            crate::metrics::Metrics::new(node.metrics(), &sheets, storage.fsync_seconds());
        Ok(Arc::new(Shared {
            results: ResultsCache::new(node.clone()),
            node,
            definition,
            dialer,
            storage,
            sheets,
            metrics,
            incarnations: Mutex::new(incarnations),
            heard: Mutex::new(HashMap::new()),
            forward_channels: Mutex::new(HashMap::new()),
            refusals_logged: Mutex::new(HashMap::new()),
            silence_max: tick * (2 * crate::replica::ELECTION_TICKS as u32),
            election_timeout_max: tick * (2 * crate::replica::ELECTION_TICKS as u32),
        }))
    }

    /// The definition in force at the applied index: the founding one and its amendments.
    /// Sheets and batches are checked against it, never against the replica's own file.
    pub fn in_force(&self) -> Arc<Definition> {
        Arc::clone(&self.node.status().borrow().definition.0)
    }

    pub(crate) fn status(&self) -> Arc<NodeStatus> {
        self.node.status().borrow().clone()
    }

    /// The Status call's answer: the driver's status and when each peer was last heard.
    pub fn status_response(&self) -> pb::StatusResponse {
        let mut response = status_response(&self.status());
        response.signature_failures = self.sheets.signature_failures();
        response.election_id = self.definition.election.id.clone();
        response.mode = self.definition.election.mode.as_str().to_owned();
        let heard = self.heard.lock().unwrap();
        for peer in &mut response.peers {
            if let Some(at) = heard.get(&ReplicaId::new(peer.replica_id)) {
                let silence = at.elapsed();
                peer.last_heard_ms = (silence.as_millis() as u64).max(1);
                peer.reachable = silence <= self.silence_max;
            }
        }
        response
    }

    /// The results as of this replica's applied index, computed outside the driver once per
    /// index however many callers ask ([`crate::reads`]).
    /// `at_least` is the index a linearizable read must reflect (from the read barrier); a
    /// stale read passes this replica's published applied index.
    pub async fn results(&self, at_least: LogIndex) -> Result<Arc<ResultsAt>, Status> {
        self.results.at_least(at_least).await.map_err(status)
    }

    /// Results at `at_least` or computed within `age_max`, for readers of the applied state
    /// that poll (the dashboard): they cannot make the replica compute more often than that.
    pub async fn recent_results(
        &self,
        at_least: LogIndex,
        age_max: Duration,
    ) -> Result<Arc<ResultsAt>, Status> {
        self.results.recent(at_least, age_max).await.map_err(status)
    }

    /// The longest randomized election timeout.
    pub(crate) fn election_timeout_max(&self) -> Duration {
        self.election_timeout_max
    }

    /// Drops the cached channel to `address`, so the next call dials a new connection.
    pub(crate) fn forget_peer_channel(&self, address: &str) {
        self.forward_channels.lock().unwrap().remove(address);
    }

    /// A channel to the replica at `address`, shared with forwarded calls.
    pub(crate) fn peer_channel(&self, address: &str) -> Result<tonic::transport::Channel, String> {
        let mut channels = self.forward_channels.lock().unwrap();
        if let Some(channel) = channels.get(address) {
            return Ok(channel.clone());
        }
        let channel = self.dialer.channel(address)?;
        channels.insert(address.to_owned(), channel.clone());
        Ok(channel)
    }

    pub(crate) fn check_incarnation(
        &self,
        peer: ReplicaId,
        incarnation: &[u8],
    ) -> Result<(), Status> {
        let incarnation = <[u8; INCARNATION_BYTES]>::try_from(incarnation).map_err(|_| {
            Status::invalid_argument("the raft batch carries no 16-byte incarnation")
        })?;
        let mut known = self.incarnations.lock().unwrap();
        match known.get(&peer) {
            Some(seen) if *seen == incarnation => Ok(()),
            Some(_) => {
                let message = format!(
                    "replica {peer}'s data directory was made again since it last spoke to this cluster; a replica that lost its data must not rejoin under its old id: remove it (`tally cluster remove {peer}`) and add it under a new id (`tally cluster add`)"
                );
                // Said once a minute per peer: the refused replica keeps dialling.
                let now = tokio::time::Instant::now();
                let mut warned = self.refusals_logged.lock().unwrap();
                if warned
                    .get(&peer)
                    .is_none_or(|at| now.duration_since(*at) >= Duration::from_secs(60))
                {
                    tracing::warn!(replica = peer.get(), "{message}");
                    warned.insert(peer, now);
                }
                Err(Status::failed_precondition(message))
            }
            None => {
                self.storage
                    .put_peer_record(INCARNATION_RECORD, peer, &incarnation)
                    .map_err(|e| Status::internal(e.to_string()))?;
                known.insert(peer, incarnation);
                Ok(())
            }
        }
    }
}

/// The Status answer from the driver's status alone (peers' `last_heard_ms` and `reachable`
/// are filled in by [`Shared::status_response`]).
pub fn status_response(s: &NodeStatus) -> pb::StatusResponse {
    // The wire carries the bare numbers (tally.v1's fields are uint64).
    let last = s.last_index.get();
    pb::StatusResponse {
        replica_id: s.id.get(),
        cluster_id: s.cluster_id.to_string(),
        role: s.role.to_owned(),
        term: s.term.get(),
        leader_id: s.leader.map_or(0, ReplicaId::get),
        commit_index: s.commit_index.get(),
        applied_index: s.applied_index.get(),
        first_index: s.first_index.get(),
        last_index: s.last_index.get(),
        voters: ids_on_the_wire(&s.voters),
        learners: ids_on_the_wire(&s.learners),
        peers: s
            .progress
            .iter()
            .filter(|p| p.id != s.id)
            .map(|p| pb::PeerProgress {
                replica_id: p.id.get(),
                match_index: p.matched.get(),
                lag: last.saturating_sub(p.matched.get()),
                state: p.state.to_owned(),
                voter: p.voter,
                last_heard_ms: 0,
                reachable: false,
            })
            .collect(),
        chain_head: s.chain.head.to_vec(),
        chain_length: s.chain.length,
        definition_digest: s.founding.map(|d| d.to_string()).unwrap_or_default(),
        // The services fill these in from the definition (Shared::status_response).
        election_id: String::new(),
        mode: String::new(),
        amendments: s
            .definition
            .0
            .amended
            .amendments
            .iter()
            .map(|a| a.id.clone())
            .collect(),
        zero_report_log_index: s.zero_report.map_or(0, LogIndex::get),
        sheets_counted: s.sheets_counted,
        conflicts: s.conflicts,
        // Known to the service, not the driver: `Shared::status_response` fills it in.
        signature_failures: 0,
        addresses: s
            .addresses
            .iter()
            .map(|(id, address)| (id.get(), address.clone()))
            .collect(),
        running: s.running,
        stopped: s.stopped.clone().unwrap_or_default(),
    }
}

/// Replica ids as tally.v1 carries them.
pub(crate) fn ids_on_the_wire(ids: &[ReplicaId]) -> Vec<u64> {
    ids.iter().map(|id| id.get()).collect()
}
