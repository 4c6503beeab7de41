//! The `tally` command line. The binary in `main.rs` only calls [`cli::main`]; each command
//! module parses its arguments, calls a library and prints.
//!
//! The components live in libraries: the polling unit's device in `tally-village`, evidence
//! bundles, their verifier and the offline intake in `tally-evidence`, the county's and the
//! township's servers in `tally-county` and `tally-township`, the local county of processes
//! in `tally-localnet`; the rules in `tally-core`, the wire format in `tally-proto`.
//!
//! # Layout
//!
//! ```text
//! cli.rs           the subcommands (clap) and the offline ones: keygen, sheet, results, seats, gen
//! outcome.rs       Outcome and the exit codes
//! output.rs        say!/say_part!: standard output that stops quietly when the reader goes away
//! client.rs        what the networked commands share: runtime, logging, --servers/--pki, channels
//! report.rs        results, seats and intake as tables, JSON or CSV
//! county_cmd.rs    `tally county`, `tally cluster`, `tally submit`
//! township_cmd.rs  `tally township`
//! village_cmd.rs   `tally village`
//! evidence_cmd.rs  `tally export`, `tally verify`
//! status_cmd.rs    `tally status`
//! publish.rs       `tally publish`
//! certs_cmd.rs     `tally certs`
//! demo.rs          `tally demo --offline`; demo_net.rs: `tally demo`, the whole chain as processes
//! ```
//!
//! No command module imports `cli.rs`; `cli.rs` imports the commands.

pub mod amend_cmd;
pub mod certs_cmd;
pub mod cli;
pub mod client;
pub mod committee_cmd;
pub mod county_cmd;
pub mod demo;
pub mod demo_committee;
pub mod demo_net;
pub mod evidence_cmd;
pub mod outcome;
pub mod output;
pub mod papers;
pub mod publish;
pub mod report;
pub mod status_cmd;
pub mod township_cmd;
pub mod village_cmd;
