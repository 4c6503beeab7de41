//! The tally.v1 gRPC services of `proto/tally/v1/service.proto`: `County` (ingest, results,
//! status), `Admin` (membership and leadership) and `Raft` (the replicas' transport), as
//! generated tonic servers and clients; and `Township` (`proto/tally/v1/township.proto`), the
//! township aggregator's service for its polling units and clerks.
//!
//! Messages the services share with the signed-sheet contract (`SignedSheet`,
//! `Countersignature`) are `tally_proto::pb` types, re-exported here under the same names.
//!
//! [`reflection`] builds gRPC reflection (v1 and v1alpha) listing one server's services.
//!
//! [`results`] turns a computed result (`tally_core::results`) into its tally.v1 messages, once
//! for every service that reports results (the county's Results, the township's Picture).

pub mod reflection;
pub mod results;

/// The generated service types, package `tally.v1`.
#[allow(clippy::all)]
pub mod pb {
    pub use tally_proto::pb::*;
    include!(concat!(env!("OUT_DIR"), "/tally.v1.rs"));
}

/// The encoded `FileDescriptorSet` of service.proto, township.proto and everything they import, for the gRPC
/// reflection service.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/tally_descriptor.bin"));
