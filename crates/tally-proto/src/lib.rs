//! The tally.v1 wire contract: the protobuf types of `proto/tally/v1/sheet.proto`, their
//! conversion to and from the domain types of `tally-core`, and the signed sheet envelope.
//!
//! This is the only crate that knows protobuf. It turns untrusted bytes into proof-carrying
//! domain values at the edge: a [`VerifiedSheet`] exists only if its signature checked out
//! against the key the election definition registers for the sheet's unit, and its sheet
//! passed the decoding limits. It must not depend on tokio, tonic, a clock or storage; the
//! servers and the command line hand it bytes and get values back.
//!
//! # Layout
//! - [`pb`]: the generated protobuf types, package `tally.v1`.
//! - [`convert`]: [`encode_sheet`] and [`decode_sheet`], with the limits a reader enforces.
//! - [`envelope`]: [`SignedSheet`], [`sign`], [`verify`] and the signing message.
//! - [`batch`]: [`verify_batch`], Ed25519 batch verification spread over all cores.
//! - [`bundle`]: [`write_bundle`] and [`read_bundle`], many signed sheets in one file.
//! - [`countersign`](mod@countersign): a township's [`Countersignature`] over a batch it forwards, and
//!   [`verify_countersignature`].
//! - [`error`]: [`Error`], the crate's one error type: decoding, verifying (E204-E206),
//!   countersignatures (E208, E209), each with its stable code.
//! - [`county`]: the county coordinator's raft entry (a command) and snapshot image.
//!
//! The signing scheme is documented byte by byte in the proto file and in `docs/signing.md`,
//! whose worked example is asserted by a test here so the two cannot drift.

pub mod batch;
pub mod bundle;
pub mod convert;
pub mod countersign;
pub mod county;
pub mod envelope;
pub mod error;
#[cfg(test)]
mod proptests;

/// The types generated from `proto/tally/v1/sheet.proto` and `proto/tally/v1/county.proto`.
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/tally.v1.rs"));
}

pub use batch::{VERIFY_BATCH_CHUNK, verify_batch};
pub use bundle::{BUNDLE_RECORDS_MAX, read_bundle, write_bundle};
pub use convert::{
    NAME_LEN_MAX, SIGNED_SHEET_BYTES_MAX, UNIX_SECONDS_MAX, UTC_OFFSET_MINUTES_MAX, decode_sheet,
    encode_sheet,
};
pub use countersign::{
    BATCH_DOMAIN, Countersignature, batch_message, batch_message_of_digests, countersign,
    verify_countersignature, verify_countersignature_of_digests,
};
pub use envelope::{
    SIGNING_DOMAIN, SignedSheet, VerifiedSheet, decode_signed, encode_signed, sign,
    signing_message, unknown_key, verify,
};
pub use error::Error;
