//! The signed sheet envelope: signing a sheet with its unit's key, and verifying an envelope
//! against the election definition into a [`VerifiedSheet`].
//!
//! The message signed is `SIGNING_DOMAIN || election || key_id || sheet bytes` (see
//! [`signing_message`]), the election being its id and mode, so a sheet counts only in the
//! election and the mode it was signed for; verification checks the signature over the bytes
//! as received and only then decodes them.
//! It never re-encodes: protobuf encoding is not canonical, so a re-encoding could differ from
//! what was signed.

use crate::convert::{SIGNED_SHEET_BYTES_MAX, decode_sheet, encode_sheet};
use crate::error::Error;
use crate::pb;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier};
use prost::Message;
use sha2::{Digest, Sha256};
use tally_core::definition::{Definition, Election, Mode, PollingUnit};
use tally_core::ids::{KeyId, UnitId};
use tally_core::sheet::TallySheet;

/// The domain separation prefix of the signing message: the 20 ASCII bytes
/// `tally.v2.SignedSheet` and one zero byte. A signature made for a sheet can therefore not be
/// valid for any other message a unit's key might be asked to sign. (`tally.v1.SignedSheet`,
/// the scheme before the election was signed, is refused with E212.)
pub const SIGNING_DOMAIN: &[u8; 21] = b"tally.v2.SignedSheet\0";

/// An encoded sheet with its signature, as carried on the wire. Holding one proves nothing;
/// [`verify`] turns it into a [`VerifiedSheet`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedSheet {
    /// The encoded `TallySheet`, exactly the bytes that were signed.
    pub sheet: Vec<u8>,
    pub signature: Signature,
    /// The id of the key that signed: the first 16 bytes of SHA-256 over its public key.
    pub key_id: KeyId,
    /// The election the sheet was signed for (empty in a tally.v1 envelope).
    pub election_id: String,
    /// The mode it was signed for; `None` in a tally.v1 envelope, or a number no mode has.
    pub mode: Option<Mode>,
}

impl SignedSheet {
    /// The digest a sheet is known by everywhere (ledger, chain, conflicts): SHA-256 over the
    /// exact signed sheet bytes.
    pub fn digest(&self) -> [u8; 32] {
        Sha256::digest(&self.sheet).into()
    }

    /// The protobuf form, for embedding in other messages.
    pub fn to_pb(&self) -> pb::SignedSheet {
        pb::SignedSheet {
            sheet: self.sheet.clone(),
            signature: self.signature.to_bytes().to_vec(),
            key_id: self.key_id.0.to_vec(),
            election_id: self.election_id.clone(),
            mode: mode_to_pb(self.mode) as i32,
        }
    }

    /// From the protobuf form, checking the lengths of the signature and key id. The sheet
    /// bytes are not decoded: that waits until the signature has been checked.
    pub fn from_pb(signed: pb::SignedSheet) -> Result<SignedSheet, Error> {
        let envelope_error = |field: &str, problem: String| Error::Field {
            what: "signed sheet",
            field: field.into(),
            problem,
        };
        let signature: [u8; 64] = signed.signature.as_slice().try_into().map_err(|_| {
            envelope_error(
                "signature",
                format!(
                    "is {} bytes; an Ed25519 signature is 64",
                    signed.signature.len()
                ),
            )
        })?;
        let key_id: [u8; 16] = signed.key_id.as_slice().try_into().map_err(|_| {
            envelope_error(
                "key_id",
                format!(
                    "is {} bytes; a key id is the first 16 bytes of SHA-256 over the public key",
                    signed.key_id.len()
                ),
            )
        })?;
        if signed.sheet.len() > SIGNED_SHEET_BYTES_MAX {
            return Err(Error::TooLarge {
                what: "sheet",
                len: signed.sheet.len(),
                max: SIGNED_SHEET_BYTES_MAX,
            });
        }
        if signed.election_id.len() > ELECTION_ID_BYTES_MAX {
            return Err(envelope_error(
                "election_id",
                format!(
                    "is {} bytes; an election id is at most {ELECTION_ID_BYTES_MAX}",
                    signed.election_id.len()
                ),
            ));
        }
        Ok(SignedSheet {
            sheet: signed.sheet,
            signature: Signature::from_bytes(&signature),
            key_id: KeyId(key_id),
            election_id: signed.election_id,
            mode: mode_from_pb(signed.mode),
        })
    }

    /// The sheet's own description of itself, for messages about a sheet that did not verify.
    /// Unverified, so it says "claims"; ids in it passed `check_id`, so they are plain ASCII.
    fn claimed_label(&self) -> String {
        match decode_sheet(&self.sheet) {
            Ok(sheet) => format!("the sheet for {}", sheet.label()),
            Err(_) => "a sheet that does not decode".to_owned(),
        }
    }
}

/// The longest election id an envelope may carry; the definition's ids are at most 64 bytes.
pub const ELECTION_ID_BYTES_MAX: usize = 64;

fn mode_to_pb(mode: Option<Mode>) -> pb::Mode {
    match mode {
        None => pb::Mode::Unspecified,
        Some(Mode::Official) => pb::Mode::Official,
        Some(Mode::Rehearsal) => pb::Mode::Rehearsal,
    }
}

fn mode_from_pb(mode: i32) -> Option<Mode> {
    match pb::Mode::try_from(mode) {
        Ok(pb::Mode::Official) => Some(Mode::Official),
        Ok(pb::Mode::Rehearsal) => Some(Mode::Rehearsal),
        _ => None,
    }
}

/// The election part of every signing message (sheets and batches): the id's length as a
/// big-endian `u32`, the id's bytes, and the mode's byte ([`Mode::wire_byte`]).
pub fn election_bytes(election_id: &str, mode: Mode) -> Vec<u8> {
    let len = u32::try_from(election_id.len()).expect("an election id is under 4 GiB");
    let mut bytes = Vec::with_capacity(4 + election_id.len() + 1);
    bytes.extend_from_slice(&len.to_be_bytes());
    bytes.extend_from_slice(election_id.as_bytes());
    bytes.push(mode.wire_byte());
    bytes
}

/// The message an Ed25519 signature covers: [`SIGNING_DOMAIN`] (21 bytes), the election
/// ([`election_bytes`]), the key id (16 bytes), then the encoded sheet, with nothing between
/// or after.
pub fn signing_message(election_id: &str, mode: Mode, key_id: &KeyId, sheet: &[u8]) -> Vec<u8> {
    let election = election_bytes(election_id, mode);
    let mut message =
        Vec::with_capacity(SIGNING_DOMAIN.len() + election.len() + key_id.0.len() + sheet.len());
    message.extend_from_slice(SIGNING_DOMAIN);
    message.extend_from_slice(&election);
    message.extend_from_slice(&key_id.0);
    message.extend_from_slice(sheet);
    message
}

/// Encodes a sheet and signs the encoding with a unit's key, for `election`.
pub fn sign(sheet: &TallySheet, key: &SigningKey, election: &Election) -> SignedSheet {
    let key_id = KeyId::of(&key.verifying_key());
    let bytes = encode_sheet(sheet);
    let signature = key.sign(&signing_message(
        &election.id,
        election.mode,
        &key_id,
        &bytes,
    ));
    SignedSheet {
        sheet: bytes,
        signature,
        key_id,
        election_id: election.id.clone(),
        mode: Some(election.mode),
    }
}

/// Encodes an envelope for the wire or a file.
pub fn encode_signed(signed: &SignedSheet) -> Vec<u8> {
    signed.to_pb().encode_to_vec()
}

/// Decodes an envelope, bounded by [`SIGNED_SHEET_BYTES_MAX`]. The sheet inside stays bytes.
pub fn decode_signed(bytes: &[u8]) -> Result<SignedSheet, Error> {
    if bytes.len() > SIGNED_SHEET_BYTES_MAX {
        return Err(Error::TooLarge {
            what: "signed sheet",
            len: bytes.len(),
            max: SIGNED_SHEET_BYTES_MAX,
        });
    }
    let signed = pb::SignedSheet::decode(bytes).map_err(|cause| Error::Protobuf {
        what: "signed sheet",
        cause,
    })?;
    SignedSheet::from_pb(signed)
}

/// A sheet whose signature checked out against the key the election definition registers for
/// the sheet's own unit, and which passed the decoding limits. Only [`verify`] and
/// [`verify_batch`](crate::verify_batch) make one (`non_exhaustive` forbids building one
/// outside this crate), so a
/// function taking a `VerifiedSheet` need not check again. Changing a field afterwards voids
/// that promise; don't.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerifiedSheet {
    pub sheet: TallySheet,
    /// SHA-256 over the exact sheet bytes that were signed (the envelope's `sheet` field).
    /// It names these bytes: two encodings of the same sheet have different digests, so the
    /// identity of a report is its slot and version, and the digest tells resubmissions of
    /// the very same bytes apart from a conflicting sheet.
    pub digest: [u8; 32],
    /// The unit that owns the signing key; equal to `sheet.unit`.
    pub unit: UnitId,
    pub key_id: KeyId,
    /// The envelope as received, kept so the bytes can be stored and forwarded as signed.
    pub signed: SignedSheet,
}

/// Verifies an envelope against the election definition: finds the unit by key id, checks
/// the signature over the bytes as received, decodes them, and checks the sheet is that
/// unit's own.
pub fn verify(def: &Definition, signed: &SignedSheet) -> Result<VerifiedSheet, Error> {
    let unit = unit_of_key(def, signed)?;
    let message = message_for(def, signed);
    // Cofactorless verification, the same equation ed25519-dalek's batch verification uses,
    // so a chunk that passes in a batch would pass here too (docs/signing.md has the one
    // exception, which only the key's holder can construct).
    unit.public_key
        .verify(&message, &signed.signature)
        .map_err(|_| bad_signature(unit, signed))?;
    finish(unit, signed)
}

/// The message `signed`'s signature must cover in the election of `def`.
pub(crate) fn message_for(def: &Definition, signed: &SignedSheet) -> Vec<u8> {
    signing_message(
        &def.election.id,
        def.election.mode,
        &signed.key_id,
        &signed.sheet,
    )
}

/// Whether the envelope names this election and mode: E212 when it names none (a tally.v1
/// envelope), E211 when it names another.
pub(crate) fn check_election(def: &Definition, signed: &SignedSheet) -> Result<(), Error> {
    let ours = &def.election;
    if signed.election_id.is_empty() && signed.mode.is_none() {
        return Err(Error::NoElection {
            claimed: signed.claimed_label(),
            election: ours.id.clone(),
        });
    }
    if signed.election_id != ours.id || signed.mode != Some(ours.mode) {
        return Err(Error::AnotherElection {
            claimed: signed.claimed_label(),
            theirs: format!(
                "{:?} ({})",
                signed.election_id,
                signed.mode.map_or("no known mode", Mode::as_str)
            ),
            ours: format!("{:?} ({})", ours.id, ours.mode),
        });
    }
    Ok(())
}

/// The unit whose registered key has the envelope's key id, once the envelope is for this
/// election.
pub(crate) fn unit_of_key<'d>(
    def: &'d Definition,
    signed: &SignedSheet,
) -> Result<&'d PollingUnit, Error> {
    check_election(def, signed)?;
    def.unit_by_key(&signed.key_id)
        .ok_or_else(|| unknown_key(def, signed))
}

/// Why no unit has the envelope's key: an amendment replaced it (E214), or it never was a
/// unit's (E205).
pub fn unknown_key(def: &Definition, signed: &SignedSheet) -> Error {
    match def.retired_key(&signed.key_id) {
        Some(retired) => Error::KeyReplaced {
            key_id: signed.key_id,
            claimed: signed.claimed_label(),
            unit: retired.unit.clone(),
            replaced_by: format!(
                "amendment {} (log index {})",
                retired.amendment, retired.log_index
            ),
        },
        None => Error::UnknownKey {
            key_id: signed.key_id,
            claimed: signed.claimed_label(),
        },
    }
}

pub(crate) fn bad_signature(unit: &PollingUnit, signed: &SignedSheet) -> Error {
    Error::BadSignature {
        key_id: signed.key_id,
        unit: unit.id.clone(),
        claimed: signed.claimed_label(),
    }
}

/// The steps after a good signature: decode, check the unit, digest.
pub(crate) fn finish(unit: &PollingUnit, signed: &SignedSheet) -> Result<VerifiedSheet, Error> {
    let sheet = decode_sheet(&signed.sheet).map_err(|source| Error::Malformed {
        key_id: signed.key_id,
        unit: unit.id.clone(),
        source: Box::new(source),
    })?;
    if sheet.unit != unit.id {
        return Err(Error::KeyOfAnotherUnit {
            key_id: signed.key_id,
            key_unit: unit.id.clone(),
            sheet_unit: sheet.unit.clone(),
            label: sheet.label(),
        });
    }
    Ok(VerifiedSheet {
        digest: signed.digest(),
        unit: unit.id.clone(),
        key_id: signed.key_id,
        signed: signed.clone(),
        sheet,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::convert::tests::sample_sheet;

    /// The election of the test definitions: `test`, a rehearsal (the default mode).
    pub(crate) fn election() -> Election {
        Election {
            id: "test".into(),
            name: "测试选举".into(),
            mode: Mode::Rehearsal,
        }
    }

    /// The secret key of unit `T01-U00n`: 32 bytes of `n`. Test keys only, obviously.
    pub(crate) fn unit_key(n: u8) -> SigningKey {
        SigningKey::from_bytes(&[n; 32])
    }

    /// A definition with one township, one contest and `units` polling units, unit n having
    /// the key [`unit_key`]`(n)`.
    pub(crate) fn definition(units: u8) -> Definition {
        let mut toml = String::from(
            r#"
[election]
id = "test"
name = "测试选举"

[county]
id = "C"
name = "测试县"
population = 1000
seats = 30

[[townships]]
id = "T01"
name = "一乡"
population = 1000
seats = 20

[[contests]]
id = "T01-C01"
name = "第一选区"
level = "township"
township = "T01"
seats = 1
registered_voters = 1000
candidates = [{ id = "T01-C01-K1", name = "甲" }, { id = "T01-C01-K2", name = "乙" }]
"#,
        );
        for n in 1..=units {
            let public_key = hex::encode(unit_key(n).verifying_key().as_bytes());
            toml.push_str(&format!(
                "\n[[units]]\nid = \"T01-U{n:03}\"\nname = \"站{n}\"\nkind = \"station\"\ntownship = \"T01\"\ncontests = [\"T01-C01\"]\npublic_key = \"{public_key}\"\n"
            ));
        }
        tally_core::definition::load("test.toml", &toml, &mut |path| {
            Err(format!("no file {path} in tests"))
        })
        .expect("the test definition is valid")
    }

    // Goal: a sheet signed by its own unit verifies, and the verified value carries the
    // sheet, unit, key id, digest and envelope.
    // Method: sign, encode, decode, verify; compare every part.
    #[test]
    fn sign_and_verify_round_trip() {
        let def = definition(2);
        let sheet = sample_sheet("T01-U002");
        let signed = sign(&sheet, &unit_key(2), &election());
        let decoded = decode_signed(&encode_signed(&signed)).unwrap();
        assert_eq!(decoded, signed);
        let verified = verify(&def, &decoded).unwrap();
        assert_eq!(verified.sheet, sheet);
        assert_eq!(verified.unit, UnitId::new("T01-U002"));
        assert_eq!(verified.key_id, KeyId::of(&unit_key(2).verifying_key()));
        assert_eq!(
            verified.digest,
            <[u8; 32]>::from(Sha256::digest(&signed.sheet))
        );
        assert_eq!(verified.signed, signed);
    }

    // Goal: changing any byte of the signed sheet fails with E204, never with a panic.
    // Method: flip each bit of one byte at every position of the sheet bytes.
    #[test]
    fn tampered_byte_is_e201() {
        let def = definition(1);
        let signed = sign(&sample_sheet("T01-U001"), &unit_key(1), &election());
        for i in 0..signed.sheet.len() {
            let mut tampered = signed.clone();
            tampered.sheet[i] ^= 0x01;
            let err = verify(&def, &tampered).unwrap_err();
            assert_eq!(err.code(), "E204", "byte {i}: {err}");
        }
        let mut tampered = signed.clone();
        let mut signature = tampered.signature.to_bytes();
        signature[10] ^= 0x80;
        tampered.signature = Signature::from_bytes(&signature);
        let err = verify(&def, &tampered).unwrap_err();
        assert_eq!(err.code(), "E204");
        assert!(
            err.to_string().starts_with(
                "E204 bad signature on the sheet for unit T01-U001, contest T01-C01, round 1, version 1, signed with the key"
            ),
            "{err}"
        );
    }

    // Goal: a sheet for one unit signed with another unit's key is E205, as is an unknown key.
    // Method: unit 2 signs unit 1's sheet; a key not in the definition signs unit 1's sheet.
    #[test]
    fn key_of_another_unit_is_e202() {
        let def = definition(2);
        let err = verify(
            &def,
            &sign(&sample_sheet("T01-U001"), &unit_key(2), &election()),
        )
        .unwrap_err();
        assert_eq!(err.code(), "E205");
        assert!(
            matches!(&err, Error::KeyOfAnotherUnit { key_unit, sheet_unit, .. }
                if key_unit.as_str() == "T01-U002" && sheet_unit.as_str() == "T01-U001"),
            "{err}"
        );
        assert!(
            err.to_string()
                .contains("ask unit T01-U001 to sign it with its own key")
        );

        let err = verify(
            &def,
            &sign(&sample_sheet("T01-U001"), &unit_key(9), &election()),
        )
        .unwrap_err();
        assert_eq!(err.code(), "E205");
        assert!(matches!(err, Error::UnknownKey { .. }), "{err}");
    }

    // Goal: a correctly signed sheet that breaks the contract is E206, naming the sheet's
    // unit and the field.
    // Method: sign a sheet with 201 write-ins, and bytes that are not a sheet at all.
    #[test]
    fn signed_but_malformed_is_e203() {
        let def = definition(1);
        let mut sheet = sample_sheet("T01-U001");
        sheet.write_ins = vec![sheet.write_ins[0].clone(); 201];
        let err = verify(&def, &sign(&sheet, &unit_key(1), &election())).unwrap_err();
        assert_eq!(err.code(), "E206");
        assert!(
            err.to_string().contains("write_ins has 201 entries"),
            "{err}"
        );

        let key = unit_key(1);
        let key_id = KeyId::of(&key.verifying_key());
        let garbage = vec![0xff; 40];
        let signed = SignedSheet {
            signature: key.sign(&signing_message("test", Mode::Rehearsal, &key_id, &garbage)),
            sheet: garbage,
            key_id,
            election_id: "test".into(),
            mode: Some(Mode::Rehearsal),
        };
        assert_eq!(verify(&def, &signed).unwrap_err().code(), "E206");
    }

    // Goal: garbage, truncated and oversized envelopes are E206 errors and never panic.
    // Method: every prefix of a good envelope, wrong field lengths, and an oversized buffer.
    #[test]
    fn garbage_envelopes_are_e203() {
        let def = definition(1);
        let signed = sign(&sample_sheet("T01-U001"), &unit_key(1), &election());
        let encoded = encode_signed(&signed);
        for cut in 0..encoded.len() {
            match decode_signed(&encoded[..cut]) {
                Err(err) => assert_eq!(Error::malformed_envelope(err).code(), "E206"),
                // Cut in or before the election's fields (the last two), what is left
                // decodes but names another election or none.
                Ok(short) => {
                    assert_ne!(short, signed);
                    let code = verify(&def, &short).unwrap_err().code();
                    assert!(["E211", "E212"].contains(&code), "cut at {cut}: {code}");
                }
            }
        }
        let short_signature = pb::SignedSheet {
            sheet: vec![],
            signature: vec![0; 63],
            key_id: vec![0; 16],
            ..Default::default()
        }
        .encode_to_vec();
        let err = decode_signed(&short_signature).unwrap_err();
        assert_eq!(
            err.to_string(),
            "signed sheet field signature is 63 bytes; an Ed25519 signature is 64"
        );
        let long_key_id = pb::SignedSheet {
            sheet: vec![],
            signature: vec![0; 64],
            key_id: vec![0; 32],
            ..Default::default()
        }
        .encode_to_vec();
        assert!(
            decode_signed(&long_key_id)
                .unwrap_err()
                .to_string()
                .starts_with("signed sheet field key_id is 32 bytes")
        );
        let oversized = vec![0u8; SIGNED_SHEET_BYTES_MAX + 1];
        assert!(matches!(
            decode_signed(&oversized),
            Err(Error::TooLarge { .. })
        ));
        assert!(decode_signed(b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff").is_err());
    }

    // Goal: the signing message is laid out exactly as the contract says.
    // Method: build it for known parts and compare byte ranges.
    #[test]
    fn signing_message_layout() {
        assert_eq!(SIGNING_DOMAIN.len(), 21);
        assert_eq!(
            hex::encode(SIGNING_DOMAIN),
            "74616c6c792e76322e5369676e6564536865657400"
        );
        let key_id = KeyId([0xab; 16]);
        let message = signing_message("test", Mode::Rehearsal, &key_id, b"xyz");
        assert_eq!(&message[..21], SIGNING_DOMAIN);
        assert_eq!(&message[21..25], &[0, 0, 0, 4]);
        assert_eq!(&message[25..29], b"test");
        assert_eq!(message[29], 2);
        assert_eq!(&message[30..46], &[0xab; 16]);
        assert_eq!(&message[46..], b"xyz");
        let official = signing_message("test", Mode::Official, &key_id, b"xyz");
        assert_eq!(official[29], 1);
    }

    // Goal: a sheet signed for another election, or for the other mode, is E211 at any
    // receiver, naming both elections; an envelope naming no election (the tally.v1 scheme)
    // is E212; relabelling an envelope with this election's id breaks its signature (E204).
    // Method: sign one sheet for election "other", for "test" as official, and by the v1
    // scheme; verify each against the test definition (election "test", rehearsal).
    #[test]
    fn another_election_or_mode_is_e211_and_v1_is_e212() {
        let def = definition(1);
        let sheet = sample_sheet("T01-U001");
        let mut other = election();
        other.id = "other".into();
        let err = verify(&def, &sign(&sheet, &unit_key(1), &other)).unwrap_err();
        assert_eq!(err.code(), "E211");
        assert!(
            err.to_string().contains(
                "was signed for the election \"other\" (rehearsal), not for this one, \"test\" (rehearsal)"
            ),
            "{err}"
        );
        let mut official = election();
        official.mode = Mode::Official;
        let signed = sign(&sheet, &unit_key(1), &official);
        let err = verify(&def, &signed).unwrap_err();
        assert_eq!(err.code(), "E211");
        assert!(err.to_string().contains("\"test\" (official)"), "{err}");
        // Relabelled to this election and mode, the signature no longer covers the message.
        let mut relabelled = signed.clone();
        relabelled.mode = Some(Mode::Rehearsal);
        assert_eq!(verify(&def, &relabelled).unwrap_err().code(), "E204");
        // Batch verification gives the same answers.
        let results = crate::verify_batch(&def, &[signed.clone(), signed.clone(), relabelled]);
        let codes: Vec<_> = results
            .iter()
            .map(|r| r.as_ref().unwrap_err().code())
            .collect();
        assert_eq!(codes, ["E211", "E211", "E204"]);

        // The tally.v1 scheme: the old domain, no election, no fields 4 and 5.
        let key = unit_key(1);
        let key_id = KeyId::of(&key.verifying_key());
        let bytes = encode_sheet(&sheet);
        let mut message = b"tally.v1.SignedSheet\0".to_vec();
        message.extend_from_slice(&key_id.0);
        message.extend_from_slice(&bytes);
        let v1 = pb::SignedSheet {
            sheet: bytes,
            signature: key.sign(&message).to_bytes().to_vec(),
            key_id: key_id.0.to_vec(),
            ..Default::default()
        };
        let err = verify(&def, &decode_signed(&v1.encode_to_vec()).unwrap()).unwrap_err();
        assert_eq!(err.code(), "E212");
        assert!(err.to_string().contains("tally.v1 scheme"), "{err}");
    }
}

/// The worked example of `docs/signing.md`, asserted here so the document and the code agree.
#[cfg(test)]
pub(crate) mod golden {
    use super::*;
    use tally_core::ids::{CandidateId, ContestId};
    use tally_core::sheet::{CandidateCount, CountClosedAt, Round, WriteIn};

    /// The worked example's election: 小河县 (examples/small-town), official.
    pub(crate) fn example_election() -> Election {
        Election {
            id: "XH-2026".into(),
            name: "小河县2026年县乡两级人民代表大会代表换届选举".into(),
            mode: Mode::Official,
        }
    }

    pub(crate) fn tiny_sheet() -> TallySheet {
        TallySheet {
            unit: UnitId::new("T01-U001"),
            contest: ContestId::new("T01-C01"),
            round: Round::FIRST,
            version: 1,
            replaces_version: None,
            registered_voters: 120,
            ballots_issued: 100,
            ballots_collected: 100,
            ballots_void: 2,
            ballots_valid: 98,
            ballots_blank: 1,
            proxies: 0,
            candidates: vec![
                CandidateCount {
                    candidate: CandidateId::new("K1"),
                    approvals: 60,
                    disapprovals: None,
                    abstentions: None,
                },
                CandidateCount {
                    candidate: CandidateId::new("K2"),
                    approvals: 35,
                    disapprovals: None,
                    abstentions: None,
                },
            ],
            write_ins: vec![WriteIn {
                name: "张三".into(),
                votes: 2,
            }],
            scrutineers: vec!["李四".into()],
            counters: vec![],
            // 2026-11-28T18:30:00+08:00
            count_closed_at: CountClosedAt {
                unix_seconds: 1_795_861_800,
                utc_offset_minutes: 480,
            },
        }
    }

    // Goal: the worked example in docs/signing.md is what the code produces, byte for byte.
    // Method: sign the example sheet with the example key and compare each hex string with
    // the document's; the document's text is checked too, so neither can drift alone.
    #[test]
    fn worked_example() {
        let key = SigningKey::from_bytes(&[0x01; 32]);
        let signed = sign(&tiny_sheet(), &key, &example_election());
        let public_key = hex::encode(key.verifying_key().as_bytes());
        let key_id = signed.key_id.to_string();
        let sheet = hex::encode(&signed.sheet);
        let message = hex::encode(signing_message(
            "XH-2026",
            Mode::Official,
            &signed.key_id,
            &signed.sheet,
        ));
        let signature = hex::encode(signed.signature.to_bytes());
        let envelope = hex::encode(encode_signed(&signed));
        let digest = hex::encode(Sha256::digest(&signed.sheet));
        assert_eq!(
            public_key,
            "8a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c"
        );
        assert_eq!(key_id, "34750f98bd59fcfc946da45aaabe933b");
        assert_eq!(
            signature,
            "62d58298eb064d02ff7bb0ee42a6284f88370302dd713f3ce38c8ccf5e08bd27\
             1af92da10e874665922750289a962c1ac4cf9ce33e7d753d646f88ec9cc3b60a"
        );
        assert_eq!(signed.sheet.len(), 82);
        assert_eq!(message.len(), 2 * (21 + 4 + 7 + 1 + 16 + 82));

        let doc = include_str!("../../../docs/signing.md");
        for value in [
            &public_key,
            &key_id,
            &sheet,
            &message,
            &signature,
            &envelope,
            &digest,
        ] {
            assert!(
                doc.contains(value.as_str()),
                "docs/signing.md lacks {value}"
            );
        }
    }
}
