//! The crate's one error type, [`Error`]: why bytes are not a well-formed sheet, signed sheet,
//! bundle or county command (decoding), why an envelope did not verify (E204, E205, E206,
//! E211, E212),
//! and why a batch's countersignature was refused (E208, E209). A verification or
//! countersignature error has a stable code ([`Error::code`]); messages are those vendors,
//! tests and docs quote.

use tally_core::ids::{KeyId, TownshipId, UnitId};
use tally_core::validate::Code;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    // Decoding (convert.rs, bundle.rs, county.rs). Each message names the part and the
    // field, so a vendor can find the fault in their encoder.
    #[error(
        "{what} is {len} bytes, more than the {max} allowed; a tally sheet is a few hundred bytes, so these bytes are not one"
    )]
    TooLarge {
        what: &'static str,
        len: usize,
        max: usize,
    },
    // The cause is in the message, so it is not also a `source` (anyhow would print it twice).
    #[error("{what} is not valid protobuf: {cause}")]
    Protobuf {
        what: &'static str,
        cause: prost::DecodeError,
    },
    #[error("{what} field {field} {problem}")]
    Field {
        what: &'static str,
        /// The field as the proto names it, with an index for a list: `write_ins[3].name`.
        field: String,
        problem: String,
    },
    #[error("{what} is cut short: it needs {needed} bytes but only {available} remain")]
    Truncated {
        what: &'static str,
        needed: usize,
        available: usize,
    },
    #[error("bundle record {record} (at byte {offset}): {cause}")]
    BundleRecord {
        /// 1 for the first record.
        record: usize,
        /// Where the record's length prefix starts.
        offset: usize,
        cause: Box<Error>,
    },
    #[error("bundle holds more than {max} records; split it into several bundles")]
    BundleTooLong { max: usize },

    // Verifying an envelope (envelope.rs, batch.rs).
    /// E204.
    #[error(
        "E204 bad signature on {claimed}, signed with the key {key_id} of unit {unit}: the sheet was changed after signing or signed with another key; ask unit {unit} to sign the sheet again and resend it"
    )]
    BadSignature {
        key_id: KeyId,
        unit: UnitId,
        /// The sheet's unverified description of itself.
        claimed: String,
    },
    /// E205: no unit of the election definition has this key.
    #[error(
        "E205 {claimed} is signed with the key {key_id}, which no polling unit of the election definition has; check that the unit signed with its registered key (tally keygen) and that the definition is the current one"
    )]
    UnknownKey { key_id: KeyId, claimed: String },
    /// E214: the key was the unit's until an amendment replaced it.
    #[error(
        "E214 {claimed} is signed with the key {key_id}, which {replaced_by} replaced as unit {unit}'s key; sheets recorded before stand, and from then on the unit signs with its new key: install it on the device and sign the sheet again"
    )]
    KeyReplaced {
        key_id: KeyId,
        claimed: String,
        unit: UnitId,
        /// `amendment A-003 (log index 412)`.
        replaced_by: String,
    },
    /// E205: the key belongs to a unit other than the one the sheet reports for.
    #[error(
        "E205 the sheet for {label} is signed with the key {key_id} of unit {key_unit}; a unit signs only its own sheets, so ask unit {sheet_unit} to sign it with its own key"
    )]
    KeyOfAnotherUnit {
        key_id: KeyId,
        key_unit: UnitId,
        sheet_unit: UnitId,
        label: String,
    },
    /// E211: the envelope names another election, or the other mode.
    #[error(
        "E211 {claimed} was signed for the election {theirs}, not for this one, {ours}; a sheet counts only in the election and mode it was signed for: sign it again with the current definition (a rehearsal's sheets never count in the official election)"
    )]
    AnotherElection {
        claimed: String,
        /// The election and mode the envelope names.
        theirs: String,
        /// This receiver's.
        ours: String,
    },
    /// E212: the envelope names no election: signed by the tally.v1 scheme.
    #[error(
        "E212 {claimed} names no election: it was signed by the tally.v1 scheme, which did not sign the election; sign it again by the tally.v2 scheme for the election {election:?} (docs/signing.md)"
    )]
    NoElection { claimed: String, election: String },
    /// E206: the envelope or the sheet inside it breaks the contract.
    #[error(
        "E206 malformed sheet signed with the key {key_id} of unit {unit}: {source}; fix the sending software's encoder (see docs/signing.md)"
    )]
    Malformed {
        key_id: KeyId,
        unit: UnitId,
        source: Box<Error>,
    },
    /// E206: the envelope could not be decoded at all.
    #[error(
        "E206 malformed signed sheet: {source}; fix the sending software's encoder (see docs/signing.md)"
    )]
    MalformedEnvelope { source: Box<Error> },

    // Checking a batch's countersignature (countersign.rs): E208 for a signature that does
    // not verify, E209 for a key that is not the township's registered one.
    /// E208: the key is the township's, but the signature is not over this batch.
    #[error(
        "E208 bad countersignature on the batch of {sheets} sheet(s) from township {township}, made with its key {key_id}: the batch changed after countersigning (a sheet altered, added, dropped or moved) or was countersigned for another township; have township {township}'s aggregator countersign the batch exactly as it sends it, and resend"
    )]
    BadCountersignature {
        township: TownshipId,
        key_id: KeyId,
        sheets: usize,
    },
    /// E209: the election definition has no such township.
    #[error(
        "E209 township {township} is not in the election definition, so it has no registered countersigning key; check the township id the aggregator sends and that the definition is the current one"
    )]
    UnknownTownship { township: TownshipId },
    /// E209: the township has no registered key.
    #[error(
        "E209 township {township} has no registered countersigning key; register the township's key in townships.csv's public_key column or its [[townships]] entry (`tally keygen` makes one)"
    )]
    NoRegisteredKey { township: TownshipId },
    /// E209: the key is another township's.
    #[error(
        "E209 the batch from township {township} is countersigned with the key {key_id} of township {key_township}; a township countersigns only what it forwards, so have township {township} countersign with its own registered key"
    )]
    KeyOfAnotherTownship {
        township: TownshipId,
        key_id: KeyId,
        key_township: TownshipId,
    },
    /// E209: the key is a polling unit's.
    #[error(
        "E209 the batch from township {township} is countersigned with the key {key_id} of polling unit {unit}; a unit's key signs only its sheets, so have township {township} countersign with its own registered key"
    )]
    KeyOfUnit {
        township: TownshipId,
        key_id: KeyId,
        unit: UnitId,
    },
    /// E209: nobody in the definition has the key.
    #[error(
        "E209 the batch from township {township} is countersigned with the key {key_id}, which is not the township's registered key {registered}; have the aggregator countersign with the registered key, or register its key in the definition if the township has a new one"
    )]
    UnknownCountersignKey {
        township: TownshipId,
        key_id: KeyId,
        registered: KeyId,
    },
}

impl Error {
    /// The stable code of a verification or countersignature error, for logs, replies and
    /// documentation. A decoding error met on its own has no code of its own; it is reported
    /// as a malformed envelope (E206), which is what it is when it comes with a sheet.
    pub fn code(&self) -> &'static str {
        self.finding_code().as_str()
    }

    /// The code in the core's table (`tally_core::validate`), so a refusal at the signature
    /// layer is reported like any other finding.
    pub fn finding_code(&self) -> Code {
        match self {
            Error::BadSignature { .. } => Code::BadSignature,
            Error::UnknownKey { .. } | Error::KeyOfAnotherUnit { .. } => Code::KeyNotUnits,
            Error::Malformed { .. } | Error::MalformedEnvelope { .. } => Code::MalformedEnvelope,
            Error::AnotherElection { .. } => Code::AnotherElection,
            Error::NoElection { .. } => Code::NoElection,
            Error::KeyReplaced { .. } => Code::KeyReplaced,
            Error::BadCountersignature { .. } => Code::BadCountersignature,
            Error::UnknownTownship { .. }
            | Error::NoRegisteredKey { .. }
            | Error::KeyOfAnotherTownship { .. }
            | Error::KeyOfUnit { .. }
            | Error::UnknownCountersignKey { .. } => Code::CountersignKeyNotTownships,
            Error::TooLarge { .. }
            | Error::Protobuf { .. }
            | Error::Field { .. }
            | Error::Truncated { .. }
            | Error::BundleRecord { .. }
            | Error::BundleTooLong { .. } => Code::MalformedEnvelope,
        }
    }

    /// Bytes that did not decode as a signed sheet at all (E206).
    pub fn malformed_envelope(source: Error) -> Error {
        Error::MalformedEnvelope {
            source: Box::new(source),
        }
    }
}
