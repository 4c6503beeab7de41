//! The domain core of tally: the election definition, tally sheets, their validation, the
//! Election Law outcome of each contest, congress sizes and seat apportionment.
//!
//! This crate does no I/O and must not depend on tokio, tonic, prost, a clock or randomness:
//! the replicated state machine built on it has to be deterministic. Callers hand it text they
//! have read and get values back.
//!
//! # Layout
//! - [`ids`]: newtypes for every identifier.
//! - [`error`]: the crate's one error type, [`Error`].
//! - [`definition`]: the election definition (TOML + CSV), loaded and validated.
//! - [`sheet`]: the tally sheet a polling unit reports for one contest.
//! - [`sheet_file`]: the sheet as a clerk fills it in (TOML).
//! - [`toml_text`]: a value's line and key in a TOML file's text, for messages.
//! - [`validate`]: checks on a sheet, with stable codes, errors apart from warnings.
//! - [`ledger`]: the set of accepted sheets; exactly-once, versions and conflicts.
//! - [`act`]: the committee's signed acts; [`committee`]: its decisions, confirmations and locks;
//!   [`record`]: an act applied to the record, the one copy of what each act means.
//! - [`results`]: the Election Law outcome per contest, and township and county summaries.
//! - [`congress`]: total seats of a congress from population (Art 12).
//! - [`apportion`]: seat apportionment by population or votes, in exact integer arithmetic.

pub mod act;
pub mod apportion;
pub mod canonical;
pub mod committee;
pub mod congress;
pub mod definition;
pub mod error;
pub mod ids;
pub mod ledger;
pub mod record;
pub mod results;
pub mod sheet;
pub mod sheet_file;
pub mod strokes;
pub mod toml_text;
pub mod validate;

pub use error::Error;
