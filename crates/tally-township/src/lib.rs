//! The township aggregator (`tally township`): it takes the signed sheets of its own polling
//! units over gRPC on mutual TLS, stores each one durably before it answers, forwards them to
//! the county coordinator in countersigned batches through a durable outbox, and shows the
//! township its own picture. See `docs/design/township.md`.
//!
//! This crate owns the township's storage, its checks at intake, its outbox and its picture.
//! The rules (validation, the ledger, results) are `tally-core`'s; the wire format is
//! `tally-proto`'s and `tally-rpc`'s; certificates and roles are `tally-net`'s. It does not
//! depend on the county crate: it speaks to the county only through `County.Ingest`.
//!
//! # Layout
//! - [`config`]: `TownshipConfig`, the config file (`township.toml`), checked as a whole.
//! - [`store`]: `Store`, the redb database: envelopes, records, slots, outbox, notes.
//! - [`disk`]: the store as the writer and forwarder reach it: closed after a storage
//!   failure (a full disk), opened again by the next write, the book rebuilt.
//! - [`book`]: the same facts in memory, and the decisions (duplicate, conflict, superseded).
//! - [`township`]: `Township`, the shared core: the intake checks and the group-committing
//!   writer.
//! - [`forward`]: the forwarder, draining the outbox into `County.Ingest`.
//! - [`picture`]: `Township::picture`, provisional results and the outbox's state.
//! - [`metrics`]: the Prometheus counters, histogram and gauges in one prometheus-client
//!   registry; [`http`]: `GET /metrics` (OpenMetrics text) on
//!   the optional `http_listen`.
//! - [`service`]: the `Township` gRPC service and who may call what.
//! - [`limits`]: what each method takes (roles, message sizes, calls in flight) and the
//!   connection and stream limits, checked before a request body is read.
//! - [`server`]: `prepare` (a config checked), `start` (served on a listener), `Running`.
//! - [`error`]: [`Error`], the crate's one error type (starting, and the store).
//!
//! # Running one
//! From a config file: [`start_from_config`]. In a test or a demo, on any listener (port 0):
//! build a [`TownshipSetup`] (or take [`prepare`]'s) and call [`start`] inside a tokio
//! runtime; it returns a [`Running`] with its address, its [`Township`] (picture, outbox
//! depth, stored records) and `stop()`.
//!
//! # Invariants
//! - **A sheet is acknowledged only once it is on disk.** Its envelope, record and outbox
//!   entry are written in one redb transaction committed with `Durability::Immediate` before
//!   any answer about it is sent; concurrent submits share that transaction (group commit).
//! - **What is stored is what was signed.** Envelopes are kept and forwarded as the exact bytes
//!   the unit signed; nothing is re-encoded.
//! - **A sheet is stored once.** The same bytes again are DUPLICATE; another sheet under a
//!   stored slot and version is CONFLICT and is not stored (it is noted for the picture); a
//!   lower version than one stored is stored, forwarded, and SUPERSEDED.
//! - **Only checked sheets are stored.** Each passed its signature (the key the definition
//!   registers for its unit), the caller's unit (Submit), the township (E210) and validation
//!   without a blocking error.
//! - **The outbox holds every stored sheet until the county answers it**, in arrival order,
//!   and never more than its capacity: a submit that would pass it stores nothing and is
//!   answered RESOURCE_EXHAUSTED. A county answer is recorded and its sheets leave the outbox
//!   in one transaction; a crash in between resends them, and the county answers DUPLICATE.
//! - **Memory never runs ahead of the disk.** The in-memory book changes only after the
//!   transaction that stores the change has committed, and is rebuilt from the database on
//!   every start.
//! - **A data directory belongs to one township.** Its township id is written when it is
//!   made; opening it for another township is an error.
//! - **Every list has a bound**: sheets per submit, queued submits, submits per group, sheets
//!   per batch, outbox capacity, notes kept, retry pauses.

pub mod amend;
pub mod book;
pub mod config;
pub mod disk;
pub mod error;
pub mod forward;
pub mod http;
pub mod limits;
pub mod metrics;
pub mod picture;
pub mod server;
pub mod service;
pub mod store;
pub mod township;

pub use config::{OutboxSettings, TownshipConfig};
pub use error::Error;
pub use server::{Prepared, Running, TownshipSetup, prepare, start, start_from_config};
pub use township::Township;
