//! The county coordinator's replicated records (`proto/tally/v1/county.proto`): the command a
//! raft log entry carries, and the state-machine image a raft snapshot carries.
//!
//! Both travel only between the replicas of one cluster and are read back from their own
//! data directories, so they are trusted as far as their origin goes; the decoders still
//! bound what they accept and check every length, so a corrupt entry is an error and never a
//! panic. Signatures inside are not checked here: the leader verified them (the sheets' and
//! the township's countersignature) before proposing.

use crate::convert::SIGNED_SHEET_BYTES_MAX;
use crate::countersign::Countersignature;
use crate::envelope::SignedSheet;
use crate::error::Error;
use crate::pb;
use prost::Message;
use tally_core::act::{OfficialSignature, SignedAct};
use tally_core::canonical::digest_of;
use tally_core::ids::{TownshipId, check_id};

/// The most sheets one ingest command carries. A proposer splits a larger batch: one raft
/// entry stays a few hundred kilobytes for ordinary sheets, so a slow follower is never sent
/// one huge message.
pub const INGEST_SHEETS_MAX: usize = 4096;

/// The largest encoded command a reader accepts: [`INGEST_SHEETS_MAX`] sheets of the largest
/// size a sheet may have, plus room for the framing.
pub const COUNTY_COMMAND_BYTES_MAX: usize = INGEST_SHEETS_MAX * (SIGNED_SHEET_BYTES_MAX + 128);

/// A county command, decoded. The sheets stay signed bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CountyCommand {
    /// Signed sheets a township's aggregator forwarded, to be recorded in this order.
    Ingest {
        township: TownshipId,
        sheets: Vec<SignedSheet>,
        /// The township's countersignature over exactly these sheets, kept as evidence of
        /// who forwarded them; `None` in entries written before countersignatures existed.
        countersignature: Option<Countersignature>,
    },
    /// The founding act: the definition's canonical encoding (`tally_core::canonical`).
    Found { definition: Vec<u8> },
    /// A committee act, as its officials signed it (`tally_core::act`).
    Act(SignedAct),
}

/// Encodes a committee act command.
pub fn encode_act(act: &SignedAct) -> Vec<u8> {
    pb::CountyCommand {
        command: Some(pb::county_command::Command::Act(act_to_pb(act))),
    }
    .encode_to_vec()
}

/// A committee act as its protobuf message.
pub fn act_to_pb(act: &SignedAct) -> pb::CommitteeAct {
    pb::CommitteeAct {
        body: act.body.clone(),
        signatures: act
            .signatures
            .iter()
            .map(|s| pb::OfficialSignature {
                official_id: s.official.clone(),
                signature: s.signature.to_vec(),
            })
            .collect(),
    }
}

/// The largest body of a committee act a reader accepts.
pub const ACT_BODY_BYTES_MAX: usize = 1 << 20;

/// A committee act from its protobuf message, every length checked (the signatures are
/// checked where it is applied, against the committee).
pub fn act_from_pb(act: pb::CommitteeAct) -> Result<SignedAct, Error> {
    let field = |field: String, problem: String| Error::Field {
        what: "committee act",
        field,
        problem,
    };
    if act.body.len() > ACT_BODY_BYTES_MAX {
        return Err(field(
            "body".into(),
            format!(
                "is {} bytes, more than {ACT_BODY_BYTES_MAX}",
                act.body.len()
            ),
        ));
    }
    if act.signatures.len() > tally_core::act::SIGNATURES_MAX {
        return Err(field(
            "signatures".into(),
            format!(
                "has {} entries, more than {}",
                act.signatures.len(),
                tally_core::act::SIGNATURES_MAX
            ),
        ));
    }
    let signatures = act
        .signatures
        .into_iter()
        .enumerate()
        .map(|(i, s)| {
            check_id(&s.official_id)
                .map_err(|p| field(format!("signatures[{i}].official_id"), p))?;
            let signature = <[u8; 64]>::try_from(s.signature.as_slice()).map_err(|_| {
                field(
                    format!("signatures[{i}].signature"),
                    format!("is {} bytes; an Ed25519 signature is 64", s.signature.len()),
                )
            })?;
            Ok(OfficialSignature {
                official: s.official_id,
                signature,
            })
        })
        .collect::<Result<Vec<_>, Error>>()?;
    Ok(SignedAct {
        body: act.body,
        signatures,
    })
}

/// Encodes a founding command.
pub fn encode_found(definition: &[u8]) -> Vec<u8> {
    pb::CountyCommand {
        command: Some(pb::county_command::Command::Found(pb::Founding {
            definition: definition.to_vec(),
        })),
    }
    .encode_to_vec()
}

/// Encodes an ingest command. Does not check [`INGEST_SHEETS_MAX`]: the proposer splits (and
/// the township countersigns each part it sends).
pub fn encode_ingest(
    township: &TownshipId,
    sheets: &[SignedSheet],
    countersignature: Option<&Countersignature>,
) -> Vec<u8> {
    pb::CountyCommand {
        command: Some(pb::county_command::Command::Ingest(pb::IngestBatch {
            township_id: township.as_str().to_owned(),
            sheets: sheets.iter().map(SignedSheet::to_pb).collect(),
            countersignature: countersignature.map(Countersignature::to_pb),
        })),
    }
    .encode_to_vec()
}

/// Decodes a command, checking the township id, the number of sheets, every envelope's field
/// lengths and the countersignature's.
pub fn decode_command(bytes: &[u8]) -> Result<CountyCommand, Error> {
    if bytes.len() > COUNTY_COMMAND_BYTES_MAX {
        return Err(Error::TooLarge {
            what: "county command",
            len: bytes.len(),
            max: COUNTY_COMMAND_BYTES_MAX,
        });
    }
    let command = pb::CountyCommand::decode(bytes).map_err(|cause| Error::Protobuf {
        what: "county command",
        cause,
    })?;
    match command.command {
        Some(pb::county_command::Command::Ingest(batch)) => {
            check_id(&batch.township_id).map_err(|problem| Error::Field {
                what: "ingest batch",
                field: "township_id".into(),
                problem,
            })?;
            if batch.sheets.len() > INGEST_SHEETS_MAX {
                return Err(Error::Field {
                    what: "ingest batch",
                    field: "sheets".into(),
                    problem: format!(
                        "has {} entries, more than {INGEST_SHEETS_MAX}",
                        batch.sheets.len()
                    ),
                });
            }
            let sheets = batch
                .sheets
                .into_iter()
                .map(SignedSheet::from_pb)
                .collect::<Result<Vec<_>, _>>()?;
            let countersignature = batch
                .countersignature
                .map(Countersignature::from_pb)
                .transpose()?;
            Ok(CountyCommand::Ingest {
                township: TownshipId::new(batch.township_id),
                sheets,
                countersignature,
            })
        }
        Some(pb::county_command::Command::Found(founding)) => Ok(CountyCommand::Found {
            definition: founding.definition,
        }),
        Some(pb::county_command::Command::Act(act)) => Ok(CountyCommand::Act(act_from_pb(act)?)),
        // A command kind this version does not know. Applying it as nothing would let
        // replicas of different versions diverge, so it is an error the caller must stop on.
        None => Err(Error::Field {
            what: "county command",
            field: "command".into(),
            problem: "is not set or is a kind this version does not know".into(),
        }),
    }
}

/// The domain separation prefix of a chain link: `tally.v1.chain` and one zero byte.
pub const CHAIN_DOMAIN: &[u8; 15] = b"tally.v1.chain\0";

/// The chain's head before any record.
pub const CHAIN_HEAD_EMPTY: [u8; 32] = [0; 32];

/// One link: the head after recording the sheet whose bytes have SHA-256 `digest` at
/// `log_index` on top of `head`:
/// `SHA-256(CHAIN_DOMAIN || head || u64be(log_index) || digest)`.
///
/// The county's state machine extends its chain with it and `tally verify` recomputes an
/// evidence bundle's chain with it, so the two can never disagree on the formula.
pub fn chain_link(head: &[u8; 32], log_index: u64, digest: &[u8; 32]) -> [u8; 32] {
    use sha2::{Digest as _, Sha256};
    let mut hasher = Sha256::new();
    hasher.update(CHAIN_DOMAIN);
    hasher.update(head);
    hasher.update(log_index.to_be_bytes());
    hasher.update(digest);
    hasher.finalize().into()
}

/// One link of the hash chain: one act of the election record, the log index of the command
/// that recorded it, and the chain's head after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainRecord {
    pub log_index: u64,
    pub act: Act,
    pub head: [u8; 32],
    /// On the first sheet a command recorded: the countersigned batch that brought it
    /// (shared, not copied, by the records of the same command in memory).
    pub batch: Option<std::sync::Arc<ForwardedBatch>>,
}

/// A township's countersigned batch as a chain record keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardedBatch {
    pub township: TownshipId,
    /// Every sheet of the batch by digest, in batch order, recorded or not.
    pub digests: Vec<[u8; 32]>,
    pub countersignature: Countersignature,
}

/// The domain of a link over a sheet and the batch that brought it.
pub const FORWARDED_DOMAIN: &[u8] = b"tally.v2.forwarded\0";
/// The domain of a batch's digest.
pub const BATCH_RECORD_DOMAIN: &[u8] = b"tally.v2.batch\0";

impl ForwardedBatch {
    /// `SHA-256("tally.v2.batch\0" || u32be(len township) || township || u32be(n) ||
    /// digests || key_id || signature)`.
    pub fn digest(&self) -> [u8; 32] {
        use sha2::{Digest as _, Sha256};
        let township = self.township.as_str().as_bytes();
        let mut hasher = Sha256::new();
        hasher.update(BATCH_RECORD_DOMAIN);
        hasher.update((township.len() as u32).to_be_bytes());
        hasher.update(township);
        hasher.update((self.digests.len() as u32).to_be_bytes());
        for digest in &self.digests {
            hasher.update(digest);
        }
        hasher.update(self.countersignature.key_id.0);
        hasher.update(self.countersignature.signature.to_bytes());
        hasher.finalize().into()
    }
}

impl ChainRecord {
    /// The digest the chain links for this record: the act's, or with a batch
    /// `SHA-256("tally.v2.forwarded\0" || act digest || batch digest)`.
    pub fn link_digest(&self) -> [u8; 32] {
        link_digest(&self.act, self.batch.as_deref())
    }
}

/// [`ChainRecord::link_digest`] of an act and the batch a record keeps with it.
pub fn link_digest(act: &Act, batch: Option<&ForwardedBatch>) -> [u8; 32] {
    use sha2::{Digest as _, Sha256};
    match batch {
        None => act.digest(),
        Some(batch) => {
            let mut hasher = Sha256::new();
            hasher.update(FORWARDED_DOMAIN);
            hasher.update(act.digest());
            hasher.update(batch.digest());
            hasher.finalize().into()
        }
    }
}

/// An act of the election record (docs/design/record.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Act {
    /// The founding: the definition's canonical encoding. Always the first record.
    /// Shared, not copied, when a record is cloned: it is the size of the definition, and the
    /// state's record list copies its open chunk of records when a reader holds it.
    Founding { definition: std::sync::Arc<[u8]> },
    /// A sheet the ledger recorded, as its unit signed it.
    Sheet(SignedSheet),
    /// A committee act that was applied, with its officials' signatures.
    Committee(std::sync::Arc<SignedAct>),
}

impl Act {
    /// The digest the chain links for this act: a sheet's `SHA-256(sheet bytes)`; the
    /// founding's definition digest, `SHA-256("tally.v2.definition\0" || encoding)`.
    pub fn digest(&self) -> [u8; 32] {
        match self {
            Act::Founding { definition } => digest_of(definition).0,
            Act::Sheet(signed) => signed.digest(),
            Act::Committee(act) => act.link_digest(),
        }
    }

    /// The signed sheet, for a sheet's record.
    pub fn sheet(&self) -> Option<&SignedSheet> {
        match self {
            Act::Sheet(signed) => Some(signed),
            Act::Founding { .. } | Act::Committee(_) => None,
        }
    }
}

/// The county state machine as a raft snapshot carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateImage {
    pub applied_index: u64,
    /// The chain's head after the last record; all zero for an empty chain.
    pub chain_head: [u8; 32],
    /// In chain order.
    pub records: Vec<ChainRecord>,
}

/// A chain record as its protobuf message (a store row, a snapshot's record, an export chunk's).
pub fn record_to_pb(record: &ChainRecord) -> pb::ChainRecord {
    let (sheet, founding, act) = match &record.act {
        Act::Sheet(signed) => (Some(signed.to_pb()), None, None),
        Act::Founding { definition } => (
            None,
            Some(pb::Founding {
                definition: definition.to_vec(),
            }),
            None,
        ),
        Act::Committee(act) => (None, None, Some(act_to_pb(act))),
    };
    pb::ChainRecord {
        log_index: record.log_index,
        sheet,
        head: record.head.to_vec(),
        founding,
        act,
        batch: record.batch.as_deref().map(|b| pb::ForwardedBatch {
            township_id: b.township.as_str().to_owned(),
            sheet_digests: b.digests.iter().map(|d| d.to_vec()).collect(),
            countersignature: Some(b.countersignature.to_pb()),
        }),
    }
}

/// A chain record's batch from its protobuf message, every length checked.
pub fn batch_from_pb(batch: pb::ForwardedBatch) -> Result<ForwardedBatch, Error> {
    let field = |field: &str, problem: String| Error::Field {
        what: "chain record batch",
        field: field.into(),
        problem,
    };
    check_id(&batch.township_id).map_err(|p| field("township_id", p))?;
    if batch.sheet_digests.len() > INGEST_SHEETS_MAX {
        return Err(field(
            "sheet_digests",
            format!(
                "has {} entries, more than {INGEST_SHEETS_MAX}",
                batch.sheet_digests.len()
            ),
        ));
    }
    let digests = batch
        .sheet_digests
        .iter()
        .enumerate()
        .map(|(i, d)| {
            <[u8; 32]>::try_from(d.as_slice()).map_err(|_| {
                field(
                    &format!("sheet_digests[{i}]"),
                    format!("is {} bytes; a SHA-256 is 32", d.len()),
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let countersignature = batch
        .countersignature
        .ok_or_else(|| field("countersignature", "is missing".into()))
        .and_then(Countersignature::from_pb)?;
    Ok(ForwardedBatch {
        township: TownshipId::new(batch.township_id),
        digests,
        countersignature,
    })
}

fn head_from(what: &'static str, field: &str, bytes: &[u8]) -> Result<[u8; 32], Error> {
    bytes.try_into().map_err(|_| Error::Field {
        what,
        field: field.into(),
        problem: format!("is {} bytes; a SHA-256 head is 32", bytes.len()),
    })
}

/// A chain record from its protobuf message: exactly one act set.
pub fn record_from_pb(record: pb::ChainRecord) -> Result<ChainRecord, Error> {
    let act = match (record.sheet, record.founding, record.act) {
        (Some(signed), None, None) => Act::Sheet(SignedSheet::from_pb(signed)?),
        (None, Some(founding), None) => Act::Founding {
            definition: founding.definition.into(),
        },
        (None, None, Some(act)) => Act::Committee(std::sync::Arc::new(act_from_pb(act)?)),
        (sheet, founding, act) => {
            let set = [sheet.is_some(), founding.is_some(), act.is_some()];
            return Err(Error::Field {
                what: "chain record",
                field: "sheet, founding, act".into(),
                problem: if set.contains(&true) {
                    "has more than one set; a record is one act".into()
                } else {
                    "are all missing; a record is one act".into()
                },
            });
        }
    };
    let batch = match record.batch {
        Some(batch) if matches!(act, Act::Sheet(_)) => {
            Some(std::sync::Arc::new(batch_from_pb(batch)?))
        }
        Some(_) => {
            return Err(Error::Field {
                what: "chain record",
                field: "batch".into(),
                problem: "is set on a record that is not a sheet".into(),
            });
        }
        None => None,
    };
    Ok(ChainRecord {
        log_index: record.log_index,
        act,
        head: head_from("chain record", "head", &record.head)?,
        batch,
    })
}

/// Encodes one chain record (a row of a replica's store).
pub fn encode_chain_record(record: &ChainRecord) -> Vec<u8> {
    record_to_pb(record).encode_to_vec()
}

/// Decodes one chain record.
pub fn decode_chain_record(bytes: &[u8]) -> Result<ChainRecord, Error> {
    let record = pb::ChainRecord::decode(bytes).map_err(|cause| Error::Protobuf {
        what: "chain record",
        cause,
    })?;
    record_from_pb(record)
}

/// Encodes a state image.
pub fn encode_image(image: &StateImage) -> Vec<u8> {
    pb::CountySnapshot {
        applied_index: image.applied_index,
        chain_head: image.chain_head.to_vec(),
        chain_length: image.records.len() as u64,
        records: image.records.iter().map(record_to_pb).collect(),
    }
    .encode_to_vec()
}

/// Decodes a state image, checking that the stated chain length is the number of records.
/// An image is as large as the county's evidence, so it has no size bound beyond the raft
/// snapshot that carries it.
pub fn decode_image(bytes: &[u8]) -> Result<StateImage, Error> {
    let image = pb::CountySnapshot::decode(bytes).map_err(|cause| Error::Protobuf {
        what: "county snapshot",
        cause,
    })?;
    if image.chain_length != image.records.len() as u64 {
        return Err(Error::Field {
            what: "county snapshot",
            field: "chain_length".into(),
            problem: format!(
                "is {} but the snapshot holds {} records",
                image.chain_length,
                image.records.len()
            ),
        });
    }
    Ok(StateImage {
        applied_index: image.applied_index,
        chain_head: head_from("county snapshot", "chain_head", &image.chain_head)?,
        records: image
            .records
            .into_iter()
            .map(record_from_pb)
            .collect::<Result<Vec<_>, _>>()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::convert::tests::sample_sheet;
    use crate::countersign::countersign;
    use crate::envelope::sign;
    use crate::envelope::tests::{election, unit_key};

    // Goal: an ingest command, with or without a countersignature, and a state image survive
    // encoding unchanged.
    // Method: encode and decode each with two real signed sheets, the command once
    // countersigned and once not.
    #[test]
    fn command_and_image_round_trip() {
        let sheets = vec![
            sign(&sample_sheet("T01-U001"), &unit_key(1), &election()),
            sign(&sample_sheet("T01-U002"), &unit_key(2), &election()),
        ];
        let township = TownshipId::new("T01");
        let countersignature = countersign(&election(), &township, &sheets, &unit_key(0x11));
        for countersignature in [None, Some(countersignature)] {
            let bytes = encode_ingest(&township, &sheets, countersignature.as_ref());
            assert_eq!(
                decode_command(&bytes).unwrap(),
                CountyCommand::Ingest {
                    township: township.clone(),
                    sheets: sheets.clone(),
                    countersignature,
                }
            );
        }

        let image = StateImage {
            applied_index: 7,
            chain_head: [9; 32],
            records: vec![
                ChainRecord {
                    log_index: 3,
                    act: Act::Sheet(sheets[0].clone()),
                    head: [1; 32],
                    batch: Some(std::sync::Arc::new(ForwardedBatch {
                        township: township.clone(),
                        digests: sheets.iter().map(SignedSheet::digest).collect(),
                        countersignature: countersign(
                            &election(),
                            &township,
                            &sheets,
                            &unit_key(0x11),
                        ),
                    })),
                },
                ChainRecord {
                    log_index: 7,
                    act: Act::Sheet(sheets[1].clone()),
                    head: [9; 32],
                    batch: None,
                },
            ],
        };
        assert_eq!(decode_image(&encode_image(&image)).unwrap(), image);
        for record in &image.records {
            assert_eq!(
                decode_chain_record(&encode_chain_record(record)).unwrap(),
                *record
            );
        }
        // The batch is in the link: the same sheet without it links another digest.
        let with = &image.records[0];
        let without = ChainRecord {
            batch: None,
            ..with.clone()
        };
        assert_ne!(with.link_digest(), without.link_digest());
        assert_eq!(without.link_digest(), sheets[0].digest());
        // The founding: its command and its record.
        let definition = br#"{"election":{}}"#.to_vec();
        assert_eq!(
            decode_command(&encode_found(&definition)).unwrap(),
            CountyCommand::Found {
                definition: definition.clone()
            }
        );
        let founding = ChainRecord {
            log_index: 2,
            act: Act::Founding {
                definition: definition.clone().into(),
            },
            head: [7; 32],
            batch: None,
        };
        assert_eq!(
            decode_chain_record(&encode_chain_record(&founding)).unwrap(),
            founding
        );
        assert_eq!(founding.act.digest(), digest_of(&definition).0);
        // A record with both acts, or none, is refused.
        let mut both = record_to_pb(&founding);
        both.sheet = Some(sheets[0].to_pb());
        assert!(
            record_from_pb(both)
                .unwrap_err()
                .to_string()
                .contains("has more than one set")
        );
        let mut none = record_to_pb(&founding);
        none.founding = None;
        assert!(
            record_from_pb(none)
                .unwrap_err()
                .to_string()
                .contains("are all missing")
        );

        // A committee act: its command and its record, every signature kept.
        let act = SignedAct {
            body: br#"{"type":"amendment"}"#.to_vec(),
            signatures: vec![
                OfficialSignature {
                    official: "O1".into(),
                    signature: [1; 64],
                },
                OfficialSignature {
                    official: "O3".into(),
                    signature: [3; 64],
                },
            ],
        };
        assert_eq!(
            decode_command(&encode_act(&act)).unwrap(),
            CountyCommand::Act(act.clone())
        );
        let recorded = ChainRecord {
            log_index: 9,
            act: Act::Committee(std::sync::Arc::new(act.clone())),
            head: [9; 32],
            batch: None,
        };
        assert_eq!(
            decode_chain_record(&encode_chain_record(&recorded)).unwrap(),
            recorded
        );
        assert_eq!(recorded.act.digest(), act.link_digest());
        let mut short = act_to_pb(&act);
        short.signatures[1].signature.pop();
        assert!(
            act_from_pb(short)
                .unwrap_err()
                .to_string()
                .contains("signatures[1].signature")
        );
    }

    // Goal: bytes that are not a command, an unset command and a bad township id are errors.
    // Method: decode garbage, an empty message and a batch with an empty township id.
    #[test]
    fn malformed_commands_are_errors() {
        assert!(decode_command(b"\xff\xff\xff").is_err());
        assert!(
            decode_command(&[])
                .unwrap_err()
                .to_string()
                .contains("is not set")
        );
        let bytes = encode_ingest(&TownshipId::new(""), &[], None);
        assert!(
            decode_command(&bytes)
                .unwrap_err()
                .to_string()
                .contains("township_id is empty")
        );
    }

    // Goal: a countersignature of the wrong length in a logged command is an error naming the
    // field, never a panic.
    // Method: an ingest batch whose countersignature has a 10-byte signature.
    #[test]
    fn malformed_countersignature_in_a_command_is_an_error() {
        let bytes = pb::CountyCommand {
            command: Some(pb::county_command::Command::Ingest(pb::IngestBatch {
                township_id: "T01".into(),
                sheets: vec![],
                countersignature: Some(pb::Countersignature {
                    key_id: vec![0; 16],
                    signature: vec![0; 10],
                }),
            })),
        }
        .encode_to_vec();
        assert_eq!(
            decode_command(&bytes).unwrap_err().to_string(),
            "countersignature field signature is 10 bytes; an Ed25519 signature is 64"
        );
    }
}
