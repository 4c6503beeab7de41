//! The county coordinator: the authority of record on election night. A cluster of 3 or 5
//! replicas, replicated with raft (tikv raft-rs), each keeping its raft log and its state
//! machine in one redb database. See `docs/design/county.md`.
//!
//! This crate owns consensus, durable storage, the replicated state machine and the replica's
//! servers: the tally.v1 County, Admin and Raft services over mutual TLS, and the optional
//! plain HTTP side. The state machine and the raft driver take time and messages as inputs, so
//! a cluster can also run deterministically in one thread (the simulation). It must not depend
//! on the township crate or the binary: townships speak to it only through `County.Ingest`.
//!
//! # Layout
//! - [`storage`]: `DiskStorage`, raft-rs `Storage` on redb, with atomic persist and apply.
//! - [`state`]: `CountyState`, the deterministic state machine: ledger, hash chain, conflicts.
//! - [`command`]: `Command`, what one raft log entry carries.
//! - [`ids`]: [`LogIndex`], [`Term`], [`ReplicaId`], raft's numbers as types of their own; bare
//!   `u64` only at raft-rs, the wire and the disk.
//! - [`replica`]: `Replica`, the RawNode driver: time and messages in, messages and outcomes out.
//! - [`node`]: the driver run for the network, on a thread of its own: one input channel, group
//!   commit, status watch, and the `NodeHandle` the services use; `input.rs` (private): the
//!   `Input` messages the services and the transport send the driver.
//! - [`reads`]: results computed outside the driver, once per applied index.
//! - [`raft_log`]: raft-rs's slog records forwarded to `tracing`.
//! - [`transport`]: raft messages between replicas over client-streaming gRPC, per-peer links.
//! - [`service`]: the County, Admin and Raft services: authorization by role, forwarding to
//!   the leader, linearizable reads.
//! - [`shared`]: [`shared::Shared`], what the services, forwarding and the HTTP side of one
//!   replica share; the Status answer.
//! - [`server`]: open a replica (founding the cluster on first start) and serve it.
//! - [`config`]: `CountyConfig`, one replica's config file (`county.toml`), checked as a whole.
//! - [`error`]: [`Error`], the crate's one error type, and its mapping to `tonic::Status`.
//! - [`fault`]: a storage failure told apart (full disk or I/O error) for the status and the
//!   exit status.
//! - [`forward`]: how a follower hands a write to the leader (deadline, cancel, resend).
//! - [`limits`]: what each method takes (roles, message sizes, calls in flight) and the
//!   connection and stream limits, checked before a request body is read.
//! - [`metrics`]: the Prometheus metrics in one prometheus-client registry; [`http`]:
//!   `/metrics` (OpenMetrics text) and the dashboard over HTTP.

pub mod command;
pub mod config;
pub mod error;
pub mod fault;
pub mod forward;
pub mod http;
pub mod ids;
mod input;
pub mod limits;
pub mod metrics;
pub mod node;
pub mod raft_log;
pub mod reads;
pub mod replica;
pub mod server;
pub mod service;
pub mod shared;
pub mod state;
pub mod storage;
pub mod transport;

pub use error::Error;
pub use ids::{LogIndex, ReplicaId, Term};
