//! What one raft log entry carries: a [`Command`] of the county state machine, encoded as
//! `tally.v1.CountyCommand` (`proto/tally/v1/county.proto`, owned by `tally-proto`).
//!
//! An entry with no data is raft's own (the empty entry a new leader appends) and is not a
//! command: [`Command::decode`] says so with [`Error::EmptyEntry`], which the driver skips.

use crate::error::Error;
use tally_core::act::SignedAct;
use tally_core::ids::TownshipId;
use tally_proto::county::{CountyCommand, decode_command, encode_act, encode_found, encode_ingest};
use tally_proto::{Countersignature, SignedSheet};

pub use tally_proto::county::INGEST_SHEETS_MAX;

/// A command of the county state machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Signed sheets a township's aggregator forwarded, recorded in this order. The leader
    /// verified the signatures, the township's countersignature and the sheets before
    /// proposing; at most [`INGEST_SHEETS_MAX`] sheets (a proposer splits a larger batch).
    Ingest {
        township: TownshipId,
        sheets: Vec<SignedSheet>,
        /// The township's countersignature over these sheets. The state machine carries it
        /// in the log as evidence and does not check it: applying must depend only on the
        /// log, and the leader already checked it. `None` in entries from before
        /// countersignatures.
        countersignature: Option<Countersignature>,
    },
    /// The founding act: the definition's canonical encoding (`tally_core::canonical`),
    /// proposed by the cluster's first leader (docs/design/record.md).
    Found { definition: Vec<u8> },
    /// A committee act (an amendment), as its officials signed it; every replica checks the
    /// signatures and applies it, or refuses it, alike (docs/design/record.md).
    Act(SignedAct),
}

impl Command {
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Command::Ingest {
                township,
                sheets,
                countersignature,
            } => encode_ingest(township, sheets, countersignature.as_ref()),
            Command::Found { definition } => encode_found(definition),
            Command::Act(act) => encode_act(act),
        }
    }

    pub fn decode(bytes: &[u8]) -> Result<Command, Error> {
        // An encoded command is never empty (the oneof's tag is always written), so empty
        // data can only be raft's own entry.
        if bytes.is_empty() {
            return Err(Error::EmptyEntry);
        }
        match decode_command(bytes).map_err(Error::NotACommand)? {
            CountyCommand::Ingest {
                township,
                sheets,
                countersignature,
            } => Ok(Command::Ingest {
                township,
                sheets,
                countersignature,
            }),
            CountyCommand::Found { definition } => Ok(Command::Found { definition }),
            CountyCommand::Act(act) => Ok(Command::Act(act)),
        }
    }

    /// The signed sheets the command carries, in order.
    pub fn sheets(&self) -> &[SignedSheet] {
        match self {
            Command::Ingest { sheets, .. } => sheets,
            Command::Found { .. } | Command::Act(_) => &[],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Goal: a command survives encoding, with its countersignature or without; an empty entry
    // is not a command; garbage is an error.
    // Method: round-trip an ingest with no sheets (state.rs tests carry real sheets), once
    // with a real countersignature and once without, then decode empty bytes and bytes that
    // are not protobuf.
    #[test]
    fn encode_decode_and_empty_entry() {
        let township = TownshipId::new("T1");
        let key = ed25519_dalek::SigningKey::from_bytes(&[0x21; 32]);
        let countersignature = tally_proto::countersign(
            &crate::state::testkit::definition().election,
            &township,
            &[],
            &key,
        );
        for countersignature in [None, Some(countersignature)] {
            let command = Command::Ingest {
                township: township.clone(),
                sheets: vec![],
                countersignature,
            };
            let bytes = command.encode();
            assert!(!bytes.is_empty());
            assert_eq!(Command::decode(&bytes).unwrap(), command);
        }
        assert!(matches!(Command::decode(&[]), Err(Error::EmptyEntry)));
        assert!(matches!(
            Command::decode(b"\xff\xff\xff"),
            Err(Error::NotACommand(_))
        ));
    }
}
