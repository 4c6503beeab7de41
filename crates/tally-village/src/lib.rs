//! The polling unit's device (`tally village`): its config, its journal of signed sheets, the
//! double entry of a paper sheet, submitting to the township, and the QR payloads of the
//! offline path. See docs/village.md.
//!
//! This crate owns what a unit's machine keeps and decides; the `tally` binary parses the
//! commands' arguments and prints. It must not depend on the server crates (`tally-county`,
//! `tally-township`): it speaks the Township gRPC service through `tally-rpc`, and knows the
//! township only by its address and its certificate.
//!
//! # Layout
//!
//! ```text
//! config.rs   village.toml, all problems at once; the key and certificate checked against
//!             the definition
//! journal.rs  the redb journal that makes a crash or a dropped link lose nothing and count
//!             nothing twice (see its module doc)
//! fill.rs     the double-entry prompts
//! submit.rs   submit and correct: sign, check, journal, deliver with retries; told to a Clerk
//! offline.rs  QR payloads (TALLY1:), QR pictures for the terminal and PNG, and reading
//!             bundles, payload files and pictures back
//! error.rs    Error, the crate's one error type
//! ```

pub mod config;
mod error;
pub mod fill;
pub mod journal;
pub mod offline;
pub mod submit;

pub use error::{Error, Result};
