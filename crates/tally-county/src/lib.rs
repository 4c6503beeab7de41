//! The county coordinator: the authority of record on election night. A cluster of 3 or 5
//! replicas, replicated with raft (tikv raft-rs), each keeping its raft log and its state
//! machine in one redb database. See `docs/design/county.md`.
//!
//! This crate owns consensus, durable storage and the replicated state machine. It does not
//! own the network (tonic services and TLS live beside it; the config only names the TLS
//! files) and takes time and messages as inputs, so a cluster can run deterministically in one
//! thread.
//!
//! # Layout
//! - [`storage`]: `DiskStorage`, raft-rs `Storage` on redb, with atomic persist and apply.
//! - [`state`]: `CountyState`, the deterministic state machine: ledger, hash chain, conflicts.
//! - [`command`]: `Command`, what one raft log entry carries.
//! - [`config`]: `CountyConfig`, one replica's config file (`county.toml`), checked as a whole.
//! - [`forward`]: how a follower hands a write to the leader (deadline, cancel, resend).
//! - [`metrics`]: the Prometheus metrics; [`http`]: `/metrics` and the dashboard over HTTP.

pub mod command;
pub mod config;
pub mod forward;
pub mod http;
pub mod metrics;
pub mod node;
pub mod replica;
pub mod server;
pub mod service;
pub mod state;
pub mod storage;
pub mod transport;
