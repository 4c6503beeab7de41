//! The `tally` command line and the offline tools behind it: synthetic counties, the offline
//! intake of signed sheets, reports, and the demo. The binary in `main.rs` only calls [`cli::main`].
//!
//! This crate may do I/O; the rules themselves live in `tally-core`, the wire format in
//! `tally-proto`.

pub mod certs_cmd;
pub mod cli;
pub mod county_cmd;
pub mod demo;
pub mod demo_net;
pub mod evidence;
pub mod files;
pub mod intake;
pub mod localnet;
pub mod offline;
pub mod output;
pub mod publish;
pub mod report;
pub mod status_cmd;
pub mod township_cmd;

pub mod table;
pub mod village_cmd;
