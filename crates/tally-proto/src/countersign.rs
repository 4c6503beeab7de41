//! The township's countersignature over a batch of signed sheets it forwards to the county.
//!
//! Each sheet already carries its polling unit's signature, which proves what the unit
//! reported. The countersignature adds what the sheet signatures cannot: which township
//! forwarded which sheets, in which order, as one batch. The county's leader checks it before
//! proposing the batch, and the raft log keeps it beside the sheets as evidence.
//!
//! The message signed is [`batch_message`]: [`BATCH_DOMAIN`], the election (id and mode, as
//! a sheet's signing message has it), the township id, the number of
//! sheets and the SHA-256 of each sheet's bytes ([`SignedSheet::digest`]), each length as a
//! big-endian `u32`. Digests rather than the envelopes keep the message small (32 bytes a
//! sheet) while still naming the exact bytes each unit signed; the count and the fixed digest
//! length make the encoding unambiguous. `docs/signing.md` gives it byte by byte with a worked
//! example that a test below asserts.

use crate::envelope::SignedSheet;
use crate::envelope::election_bytes;
use crate::error::Error;
use crate::pb;
use ed25519_dalek::{Signature, Signer, SigningKey};
use tally_core::definition::{Definition, Election};
use tally_core::ids::{KeyId, TownshipId};

/// The domain separation prefix of the batch message: the 20 ASCII bytes
/// `tally.v2.IngestBatch` and one zero byte. It differs from the sheet's
/// [`SIGNING_DOMAIN`](crate::SIGNING_DOMAIN) in its first bytes, so a countersignature is never
/// a valid sheet signature or the other way round.
pub const BATCH_DOMAIN: &[u8] = b"tally.v2.IngestBatch\0";

/// A township's Ed25519 signature over a batch, with the id of the key that made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Countersignature {
    /// The first 16 bytes of SHA-256 over the township's public key.
    pub key_id: KeyId,
    pub signature: Signature,
}

impl Countersignature {
    /// The protobuf form, for embedding in an ingest batch or request.
    pub fn to_pb(&self) -> pb::Countersignature {
        pb::Countersignature {
            key_id: self.key_id.0.to_vec(),
            signature: self.signature.to_bytes().to_vec(),
        }
    }

    /// From the protobuf form, checking the lengths of the key id and the signature.
    pub fn from_pb(countersignature: pb::Countersignature) -> Result<Self, Error> {
        let field_error = |field: &str, problem: String| Error::Field {
            what: "countersignature",
            field: field.into(),
            problem,
        };
        let key_id: [u8; 16] = countersignature.key_id.as_slice().try_into().map_err(|_| {
            field_error(
                "key_id",
                format!(
                    "is {} bytes; a key id is the first 16 bytes of SHA-256 over the township's public key",
                    countersignature.key_id.len()
                ),
            )
        })?;
        let signature: [u8; 64] =
            countersignature
                .signature
                .as_slice()
                .try_into()
                .map_err(|_| {
                    field_error(
                        "signature",
                        format!(
                            "is {} bytes; an Ed25519 signature is 64",
                            countersignature.signature.len()
                        ),
                    )
                })?;
        Ok(Countersignature {
            key_id: KeyId(key_id),
            signature: Signature::from_bytes(&signature),
        })
    }
}

/// The message a countersignature covers, with nothing between or after the parts:
///
/// ```text
/// BATCH_DOMAIN                      21 bytes, "tally.v2.IngestBatch\0"
/// u32be(len(election_id))           4 bytes
/// election_id                       its ASCII bytes (1 to 64)
/// mode                              1 byte: 1 official, 2 rehearsal
/// u32be(len(township_id))           4 bytes
/// township_id                       its UTF-8 bytes (ASCII, 1 to 64)
/// u32be(number of sheets)           4 bytes
/// SHA-256(sheet bytes), each sheet  32 bytes a sheet, in batch order
/// ```
pub fn batch_message(
    election: &Election,
    township: &TownshipId,
    sheets: &[SignedSheet],
) -> Vec<u8> {
    let digests: Vec<[u8; 32]> = sheets.iter().map(SignedSheet::digest).collect();
    batch_message_of_digests(election, township, &digests)
}

/// [`batch_message`] from the sheets' digests, as a chain record keeps them (the evidence
/// checks a countersignature long after the sheets of the batch that were not recorded are
/// gone).
pub fn batch_message_of_digests(
    election: &Election,
    township: &TownshipId,
    digests: &[[u8; 32]],
) -> Vec<u8> {
    let sheets = digests;
    let election = election_bytes(&election.id, election.mode);
    let township = township.as_str().as_bytes();
    // Ids are at most 64 bytes (check_id) and a batch at most INGEST_SHEETS_MAX sheets; even
    // unchecked, neither can reach 4 GiB entries in memory, so the conversions cannot fail.
    let township_len = u32::try_from(township.len()).expect("a township id is under 4 GiB");
    let sheet_count = u32::try_from(sheets.len()).expect("a batch holds under 2^32 sheets");
    let mut message = Vec::with_capacity(
        BATCH_DOMAIN.len() + election.len() + 4 + township.len() + 4 + 32 * sheets.len(),
    );
    message.extend_from_slice(BATCH_DOMAIN);
    message.extend_from_slice(&election);
    message.extend_from_slice(&township_len.to_be_bytes());
    message.extend_from_slice(township);
    message.extend_from_slice(&sheet_count.to_be_bytes());
    for digest in sheets {
        message.extend_from_slice(digest);
    }
    message
}

/// Countersigns a batch with the township's key, for `election`.
pub fn countersign(
    election: &Election,
    township: &TownshipId,
    sheets: &[SignedSheet],
    key: &SigningKey,
) -> Countersignature {
    Countersignature {
        key_id: KeyId::of(&key.verifying_key()),
        signature: key.sign(&batch_message(election, township, sheets)),
    }
}

/// Checks that `countersignature` is the registered key of `township` signing exactly this
/// batch: these sheets, in this order, forwarded by this township. The sheets' own signatures
/// are not checked here ([`verify`](crate::verify) does that, sheet by sheet).
pub fn verify_countersignature(
    def: &Definition,
    township: &TownshipId,
    sheets: &[SignedSheet],
    countersignature: &Countersignature,
) -> Result<(), Error> {
    let digests: Vec<[u8; 32]> = sheets.iter().map(SignedSheet::digest).collect();
    verify_countersignature_of_digests(def, township, &digests, countersignature)
}

/// [`verify_countersignature`] over the sheets' digests (a chain record's batch).
pub fn verify_countersignature_of_digests(
    def: &Definition,
    township: &TownshipId,
    digests: &[[u8; 32]],
    countersignature: &Countersignature,
) -> Result<(), Error> {
    let sheets = digests;
    let area = def
        .township(township)
        .ok_or_else(|| Error::UnknownTownship {
            township: township.clone(),
        })?;
    let (Some(public_key), Some(registered)) = (area.public_key, area.key_id) else {
        return Err(Error::NoRegisteredKey {
            township: township.clone(),
        });
    };
    let key_id = countersignature.key_id;
    if key_id != registered {
        return Err(if let Some(other) = def.township_by_key(&key_id) {
            Error::KeyOfAnotherTownship {
                township: township.clone(),
                key_id,
                key_township: other.id.clone(),
            }
        } else if let Some(unit) = def.unit_by_key(&key_id) {
            Error::KeyOfUnit {
                township: township.clone(),
                key_id,
                unit: unit.id.clone(),
            }
        } else {
            Error::UnknownCountersignKey {
                township: township.clone(),
                key_id,
                registered,
            }
        });
    }
    // Strict verification: no batch equation has to agree with this one, so there is no
    // reason to accept the small-order edge cases the cofactorless check lets through.
    public_key
        .verify_strict(
            &batch_message_of_digests(&def.election, township, sheets),
            &countersignature.signature,
        )
        .map_err(|_| Error::BadCountersignature {
            township: township.clone(),
            key_id,
            sheets: sheets.len(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::convert::tests::sample_sheet;
    use crate::envelope::sign;
    use crate::envelope::tests::{election, unit_key};
    use prost::Message;

    /// The secret key of township `T0n`: 32 bytes of `0x10 + n`, apart from every unit key of
    /// the envelope tests (32 bytes of `n`).
    fn township_key(n: u8) -> SigningKey {
        SigningKey::from_bytes(&[0x10 + n; 32])
    }

    /// Two townships with registered keys, T01 with three units and T02 with one, and T03
    /// without a key.
    fn definition() -> Definition {
        let key = |k: &SigningKey| hex::encode(k.verifying_key().as_bytes());
        let mut toml = format!(
            r#"
[election]
id = "test"
name = "测试选举"

[county]
id = "C"
name = "测试县"
population = 3000
seats = 30

[[townships]]
id = "T01"
name = "一乡"
population = 1000
seats = 20
public_key = "{}"

[[townships]]
id = "T02"
name = "二乡"
population = 1000
seats = 20
public_key = "{}"

[[townships]]
id = "T03"
name = "三乡"
population = 1000
seats = 20

[[contests]]
id = "T01-C01"
name = "第一选区"
level = "township"
township = "T01"
seats = 1
registered_voters = 1000
candidates = [{{ id = "T01-C01-K1", name = "甲" }}, {{ id = "T01-C01-K2", name = "乙" }}]
"#,
            key(&township_key(1)),
            key(&township_key(2)),
        );
        for n in 1..=3u8 {
            toml.push_str(&format!(
                "\n[[units]]\nid = \"T01-U{n:03}\"\nname = \"站{n}\"\nkind = \"station\"\ntownship = \"T01\"\ncontests = [\"T01-C01\"]\npublic_key = \"{}\"\n",
                key(&unit_key(n))
            ));
        }
        tally_core::definition::load("test.toml", &toml, &mut |path| {
            Err(format!("no file {path} in tests"))
        })
        .expect("the test definition is valid")
    }

    fn batch() -> Vec<SignedSheet> {
        (1..=3u8)
            .map(|n| {
                sign(
                    &sample_sheet(&format!("T01-U{n:03}")),
                    &unit_key(n),
                    &election(),
                )
            })
            .collect()
    }

    fn t01() -> TownshipId {
        TownshipId::new("T01")
    }

    // Goal: a batch countersigned by its township's registered key verifies, and survives
    // the protobuf form unchanged.
    // Method: countersign three signed sheets with T01's key; verify; round-trip to_pb/from_pb.
    #[test]
    fn countersign_and_verify() {
        let def = definition();
        let sheets = batch();
        let cs = countersign(&election(), &t01(), &sheets, &township_key(1));
        assert_eq!(cs.key_id, def.township(&t01()).unwrap().key_id.unwrap());
        verify_countersignature(&def, &t01(), &sheets, &cs).unwrap();
        let decoded = pb::Countersignature::decode(cs.to_pb().encode_to_vec().as_slice())
            .map(Countersignature::from_pb)
            .unwrap()
            .unwrap();
        assert_eq!(decoded, cs);
        // An empty batch is countersigned like any other.
        let empty = countersign(&election(), &t01(), &[], &township_key(1));
        verify_countersignature(&def, &t01(), &[], &empty).unwrap();
    }

    // Goal: the countersignature binds every sheet's bytes, their order and their number:
    // any change is E208, while the unit signatures themselves are not part of the message.
    // Method: countersign a batch, then change one sheet byte, swap two sheets, drop one,
    // repeat one; and replace a unit signature, which still verifies.
    #[test]
    fn changed_batch_is_e208() {
        let def = definition();
        let sheets = batch();
        let cs = countersign(&election(), &t01(), &sheets, &township_key(1));
        let expect_e208 = |changed: &[SignedSheet], what: &str| {
            let err = verify_countersignature(&def, &t01(), changed, &cs).unwrap_err();
            assert_eq!(err.code(), "E208", "{what}: {err}");
            assert!(matches!(err, Error::BadCountersignature { .. }), "{what}");
        };

        let mut changed = sheets.clone();
        changed[1].sheet[5] ^= 0x01;
        expect_e208(&changed, "a changed sheet byte");
        let mut reordered = sheets.clone();
        reordered.swap(0, 2);
        expect_e208(&reordered, "reordered sheets");
        expect_e208(&sheets[..2], "a dropped sheet");
        let mut added = sheets.clone();
        added.push(sheets[0].clone());
        expect_e208(&added, "a repeated sheet");
        // The unit signature is not in the message: the digest of the sheet bytes is, so a
        // re-signed envelope of the same bytes still matches, and different bytes never do.
        let mut resigned = sheets.clone();
        resigned[0].signature = Signature::from_bytes(&[0; 64]);
        verify_countersignature(&def, &t01(), &resigned, &cs).unwrap();

        let err = verify_countersignature(&def, &t01(), &sheets[..2], &cs).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "E208 bad countersignature on the batch of 2 sheet(s) from township T01, made with its key {}: the batch changed after countersigning (a sheet altered, added, dropped or moved) or was countersigned for another township; have township T01's aggregator countersign the batch exactly as it sends it, and resend",
                cs.key_id
            )
        );
    }

    // Goal: a countersignature made for one township id does not verify for another, even
    // with the right key (the township id is in the message).
    // Method: T01's key countersigns the batch as if for T02; verified as T01's batch it is
    // E208. Ids that are prefixes of each other give different messages.
    #[test]
    fn another_township_id_fails() {
        let def = definition();
        let sheets = batch();
        let key = township_key(1);
        // Signed as if for T02 with T01's key: verified as T01's batch, the message differs.
        let for_t02 = countersign(&election(), &TownshipId::new("T02"), &sheets, &key);
        let err = verify_countersignature(&def, &t01(), &sheets, &for_t02).unwrap_err();
        assert_eq!(err.code(), "E208", "{err}");
        // The township id is length-prefixed, so a longer id never shares a prefix with the
        // count that follows.
        assert_ne!(
            batch_message(&election(), &TownshipId::new("T0"), &sheets),
            batch_message(&election(), &TownshipId::new("T01"), &sheets)
        );
    }

    // Goal: only the township's registered key countersigns its batches: another township's
    // key, a unit's key or an unknown key is E209, as is a township without a key or one the
    // definition lacks; each message says what to do.
    // Method: countersign T01's batch with T02's key, unit 1's key and a stranger's key;
    // verify as T03 (no key) and T09 (undefined).
    #[test]
    fn wrong_key_is_e209() {
        let def = definition();
        let sheets = batch();

        let err = verify_countersignature(
            &def,
            &t01(),
            &sheets,
            &countersign(&election(), &t01(), &sheets, &township_key(2)),
        )
        .unwrap_err();
        assert_eq!(err.code(), "E209");
        assert!(
            matches!(&err, Error::KeyOfAnotherTownship { key_township, .. } if key_township.as_str() == "T02"),
            "{err}"
        );

        let err = verify_countersignature(
            &def,
            &t01(),
            &sheets,
            &countersign(&election(), &t01(), &sheets, &unit_key(1)),
        )
        .unwrap_err();
        assert_eq!(err.code(), "E209");
        assert!(
            err.to_string().contains("of polling unit T01-U001"),
            "{err}"
        );

        let stranger = countersign(&election(), &t01(), &sheets, &township_key(9));
        let err = verify_countersignature(&def, &t01(), &sheets, &stranger).unwrap_err();
        assert_eq!(err.code(), "E209");
        assert!(matches!(err, Error::UnknownCountersignKey { .. }), "{err}");

        let t03 = TownshipId::new("T03");
        let err = verify_countersignature(
            &def,
            &t03,
            &sheets,
            &countersign(&election(), &t03, &sheets, &township_key(3)),
        )
        .unwrap_err();
        assert_eq!(err.code(), "E209");
        assert_eq!(
            err.to_string(),
            "E209 township T03 has no registered countersigning key; register the township's key in townships.csv's public_key column or its [[townships]] entry (`tally keygen` makes one)"
        );

        let t09 = TownshipId::new("T09");
        let err = verify_countersignature(
            &def,
            &t09,
            &sheets,
            &countersign(&election(), &t09, &sheets, &township_key(1)),
        )
        .unwrap_err();
        assert_eq!(err.code(), "E209");
        assert!(matches!(err, Error::UnknownTownship { .. }), "{err}");
    }

    // Goal: a countersignature of the wrong lengths is a decoding error naming the field.
    // Method: from_pb with a 15-byte key id and a 63-byte signature.
    #[test]
    fn malformed_countersignature_is_a_decode_error() {
        let err = Countersignature::from_pb(pb::Countersignature {
            key_id: vec![0; 15],
            signature: vec![0; 64],
        })
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("countersignature field key_id is 15 bytes"),
            "{err}"
        );
        let err = Countersignature::from_pb(pb::Countersignature {
            key_id: vec![0; 16],
            signature: vec![0; 63],
        })
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "countersignature field signature is 63 bytes; an Ed25519 signature is 64"
        );
    }

    // Goal: the batch message is laid out exactly as docs/signing.md says.
    // Method: build it for a known township and two sheets and compare byte ranges.
    #[test]
    fn batch_message_layout() {
        assert_eq!(BATCH_DOMAIN.len(), 21);
        assert_eq!(
            hex::encode(BATCH_DOMAIN),
            "74616c6c792e76322e496e67657374426174636800"
        );
        let sheets = &batch()[..2];
        let message = batch_message(&election(), &t01(), sheets);
        assert_eq!(message.len(), 21 + 4 + 4 + 1 + 4 + 3 + 4 + 2 * 32);
        assert_eq!(&message[..21], BATCH_DOMAIN);
        assert_eq!(&message[21..25], &[0, 0, 0, 4]);
        assert_eq!(&message[25..29], b"test");
        assert_eq!(message[29], 2, "rehearsal");
        assert_eq!(&message[30..34], &[0, 0, 0, 3]);
        assert_eq!(&message[34..37], b"T01");
        assert_eq!(&message[37..41], &[0, 0, 0, 2]);
        assert_eq!(&message[41..73], &sheets[0].digest());
        assert_eq!(&message[73..105], &sheets[1].digest());
    }

    // Goal: the same key and batch always give the same countersignature, byte for byte, so
    // an implementation in another language can be checked against it.
    // Method: T01's test key countersigns three fixed signed sheets; compare with fixed hex.
    #[test]
    fn golden_countersignature() {
        let cs = countersign(&election(), &t01(), &batch(), &township_key(1));
        assert_eq!(hex::encode(cs.key_id.0), "10ba682c8ad13513971e8b56881aab8b");
        assert_eq!(
            hex::encode(cs.signature.to_bytes()),
            "758bad9a91003eae5dedef5b5882fbb657a6934f3efec95a1af8e4a5c8e66c47\
             b3547306e9304b53bf2864cb77532345fe83cd6ac7959bd2eb82267fbef55c09"
        );
    }
}

/// The worked example of `docs/signing.md`, "Countersignature", asserted here so the document
/// and the code agree.
#[cfg(test)]
mod golden {
    use super::*;
    use crate::envelope::golden::{example_election, tiny_sheet};
    use crate::envelope::sign;

    // Goal: the countersignature worked example in docs/signing.md is what the code produces,
    // byte for byte.
    // Method: the unit key 0x01 signs the sheet of the sheet example; township T01's key,
    // 32 bytes of 0x02, countersigns the one-sheet batch; each hex string is compared with
    // the document's, and looked for in its text.
    #[test]
    fn worked_example() {
        let signed = sign(
            &tiny_sheet(),
            &SigningKey::from_bytes(&[0x01; 32]),
            &example_election(),
        );
        let key = SigningKey::from_bytes(&[0x02; 32]);
        let township = TownshipId::new("T01");
        let sheets = [signed];
        let cs = countersign(&example_election(), &township, &sheets, &key);
        let public_key = hex::encode(key.verifying_key().as_bytes());
        let key_id = cs.key_id.to_string();
        let digest = hex::encode(sheets[0].digest());
        let message = hex::encode(batch_message(&example_election(), &township, &sheets));
        let signature = hex::encode(cs.signature.to_bytes());
        let encoded = hex::encode(prost::Message::encode_to_vec(&cs.to_pb()));
        assert_eq!(
            digest,
            "54b0558cfd310f778fb0a5b8f954a229141004a7698724e82817e6b14ef00126"
        );
        assert_eq!(
            public_key,
            "8139770ea87d175f56a35466c34c7ecccb8d8a91b4ee37a25df60f5b8fc9b394"
        );
        assert_eq!(key_id, "6a3803d5f059902a1c6dafbc9ba47292");
        assert_eq!(
            message,
            "74616c6c792e76322e496e676573744261746368000000000758482d32303236\
             01000000035430310000000154b0558cfd310f778fb0a5b8f954a229141004a7\
             698724e82817e6b14ef00126"
        );
        assert_eq!(
            signature,
            "6d8f1fee26a850a4764bcc0343d2ca925609e92946c9866af1ab1cfa83335fda\
             c8448557bf11f23b1afd368a35e5eda6b59cea8ef28b6b4455727a58e1313e0b"
        );
        assert_eq!(message.len(), 2 * (21 + 4 + 7 + 1 + 4 + 3 + 4 + 32));

        let doc = include_str!("../../../docs/signing.md");
        for value in [&public_key, &key_id, &message, &signature, &encoded] {
            assert!(
                doc.contains(value.as_str()),
                "docs/signing.md lacks {value}"
            );
        }
    }
}
