//! What a replica takes from its callers, method by method: who may call, the largest message,
//! and how many calls one caller and all callers may have in progress; and how many
//! connections and streams it holds open. [`tally_net::limits`] enforces the method table
//! before a request body is read; [`crate::server::router`] wraps every service in it.
//!
//! The roles here are the union of what the handlers allow; the handlers keep their finer
//! checks (a township forwards only its own sheets and reads only its own results).

use crate::ids::ReplicaId;
use std::sync::Arc;

/// The largest answer a replica sends: a Results answer carries the whole county's result
/// as JSON beside its messages (an Export sends its records in chunks well under this).
pub const RESPONSE_BYTES_MAX: usize = 1 << 30;
use tally_net::{MethodLimit, Role, ServiceLimits};

/// Connections a replica holds open at once; the next waits in the listen backlog until one
/// closes (as mini-redis's `MAX_CONNECTIONS`). A county has tens of townships, a few replicas,
/// operators and dashboards: well under this.
pub const CONNECTIONS_MAX: usize = 1024;
/// Concurrent streams (calls) on one HTTP/2 connection. A follower forwards every ingest its
/// townships send it over one connection to the leader, so this matches
/// [`INGESTS_IN_FLIGHT_PER_CALLER`].
pub const STREAMS_PER_CONNECTION_MAX: u32 = 256;

/// The largest `County.Ingest` request: the largest batch the county takes
/// (`INGEST_SHEETS_MAX` sheets of the largest size a signed sheet may have, with their
/// framing: `COUNTY_COMMAND_BYTES_MAX`), plus the township id and countersignature.
pub const INGEST_REQUEST_BYTES_MAX: usize =
    tally_proto::county::COUNTY_COMMAND_BYTES_MAX + INGEST_ENVELOPE_BYTES;
/// What an ingest request carries besides its sheets (township id, countersignature, framing),
/// with ample room.
const INGEST_ENVELOPE_BYTES: usize = 64 << 10;
/// The largest request of every other County and Admin method: ids, an address, flags. The
/// largest real one (AddReplica with a long host name) is well under a kilobyte.
pub const SMALL_REQUEST_BYTES_MAX: usize = 64 << 10;

/// Ingest calls one caller may have in progress. A township's forwarder sends one batch at a
/// time; `tally submit --concurrency 256` (the benchmark's largest submitter count) sends up
/// to 256 batches of one township at once, and a follower forwards the calls of all the
/// townships that reach it under its own certificate.
pub const INGESTS_IN_FLIGHT_PER_CALLER: usize = 256;
/// Ingest calls all callers together may have in progress.
pub const INGESTS_IN_FLIGHT_MAX: usize = 1024;
/// Read calls (Results, WatchResults, Status, Export) one caller may have in progress: a
/// clerk's or an operator's few windows, `tally status` and the dashboard, with room. A
/// `WatchResults` stream holds its place until it ends.
pub const READS_IN_FLIGHT_PER_CALLER: usize = 16;
/// Read calls all callers together may have in progress.
pub const READS_IN_FLIGHT_MAX: usize = 1024;
/// Status calls one caller may have in progress: a replica's dashboard asks every other
/// replica's status under the replica's own certificate for each page view, so several open
/// dashboards add up.
pub const STATUS_IN_FLIGHT_PER_CALLER: usize = 64;
/// Admin calls one operator may have in progress: one membership change at a time is all
/// raft allows anyway.
pub const ADMIN_IN_FLIGHT_PER_CALLER: usize = 4;
/// Admin calls all callers together may have in progress.
pub const ADMIN_IN_FLIGHT_MAX: usize = 16;
/// Raft.Send calls one replica may have open: its link's stream, a snapshot's, and the one a
/// redial opens while the server has not yet seen the old one end.
pub const RAFT_CALLS_PER_REPLICA: usize = 8;
/// Raft.Send calls all replicas together may have open (a cluster has 3 to 5, and a learner
/// or two while it changes).
pub const RAFT_CALLS_MAX: usize = 64;

const INGEST_ROLES: &[Role] = &[Role::Township, Role::Replica];
const RESULTS_ROLES: &[Role] = &[Role::Operator, Role::Township];
const STATUS_ROLES: &[Role] = &[Role::Operator, Role::Township, Role::Replica];
const EXPORT_ROLES: &[Role] = &[Role::Operator];
/// An operator submits a committee act; a follower forwards it to the leader as a replica.
const AMEND_ROLES: &[Role] = &[Role::Operator, Role::Replica];
const ACTS_ROLES: &[Role] = &[Role::Operator, Role::Township, Role::Replica];
const ADMIN_ROLES: &[Role] = &[Role::Operator, Role::Replica];
const RAFT_ROLES: &[Role] = &[Role::Replica];

fn read(method: &'static str, roles: &'static [Role]) -> MethodLimit {
    MethodLimit {
        method,
        roles,
        message_bytes_max: SMALL_REQUEST_BYTES_MAX,
        in_flight_per_caller: READS_IN_FLIGHT_PER_CALLER,
        in_flight_max: READS_IN_FLIGHT_MAX,
    }
}

/// `tally.v1.County` on replica `replica`.
pub fn county(replica: ReplicaId) -> Arc<ServiceLimits> {
    Arc::new(ServiceLimits::new(
        "tally.v1.County",
        format!("replica {replica}"),
        vec![
            MethodLimit {
                method: "Ingest",
                roles: INGEST_ROLES,
                message_bytes_max: INGEST_REQUEST_BYTES_MAX,
                in_flight_per_caller: INGESTS_IN_FLIGHT_PER_CALLER,
                in_flight_max: INGESTS_IN_FLIGHT_MAX,
            },
            read("Results", RESULTS_ROLES),
            read("WatchResults", RESULTS_ROLES),
            MethodLimit {
                in_flight_per_caller: STATUS_IN_FLIGHT_PER_CALLER,
                ..read("Status", STATUS_ROLES)
            },
            read("Export", EXPORT_ROLES),
            MethodLimit {
                in_flight_per_caller: ADMIN_IN_FLIGHT_PER_CALLER,
                ..read("Amend", AMEND_ROLES)
            },
            read("Acts", ACTS_ROLES),
        ],
    ))
}

/// `tally.v1.Admin` on replica `replica`.
pub fn admin(replica: ReplicaId) -> Arc<ServiceLimits> {
    let change = |method| MethodLimit {
        method,
        roles: ADMIN_ROLES,
        message_bytes_max: SMALL_REQUEST_BYTES_MAX,
        in_flight_per_caller: ADMIN_IN_FLIGHT_PER_CALLER,
        in_flight_max: ADMIN_IN_FLIGHT_MAX,
    };
    Arc::new(ServiceLimits::new(
        "tally.v1.Admin",
        format!("replica {replica}"),
        vec![
            change("AddReplica"),
            change("PromoteReplica"),
            change("RemoveReplica"),
            change("TransferLeader"),
        ],
    ))
}

/// `tally.v1.Raft` on replica `replica`.
pub fn raft(replica: ReplicaId) -> Arc<ServiceLimits> {
    Arc::new(ServiceLimits::new(
        "tally.v1.Raft",
        format!("replica {replica}"),
        vec![MethodLimit {
            method: "Send",
            roles: RAFT_ROLES,
            message_bytes_max: crate::transport::RAFT_BATCH_BYTES_MAX,
            in_flight_per_caller: RAFT_CALLS_PER_REPLICA,
            in_flight_max: RAFT_CALLS_MAX,
        }],
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message as _;

    #[test]
    fn every_method_of_the_replica_services_has_a_limit() {
        // Goal: a method added to service.proto cannot go unguarded (the guard answers
        // UNIMPLEMENTED for a method it has no entry for). Method: read every method of
        // County, Admin and Raft from the descriptor set the binary carries and look it up.
        let set = prost_types::FileDescriptorSet::decode(tally_rpc::FILE_DESCRIPTOR_SET)
            .expect("the descriptor set decodes");
        let one = ReplicaId::new(1);
        let tables = [county(one), admin(one), raft(one)];
        let mut checked = 0;
        for file in &set.file {
            for service in &file.service {
                let name = format!("{}.{}", file.package(), service.name());
                let Some(table) = tables.iter().find(|t| t.service() == name) else {
                    continue;
                };
                for method in &service.method {
                    assert!(
                        table.method(method.name()).is_some(),
                        "{name}/{} has no limit",
                        method.name()
                    );
                    checked += 1;
                }
            }
        }
        assert_eq!(checked, 12, "County 7, Admin 4, Raft 1");
    }
}
