//! The receiving edge: bytes from the network through `decode_signed` and `verify`.
//!
//! The first byte picks a mode. Even: the rest is an envelope, decoded and verified as it
//! stands (its signature will almost never hold, so this explores the envelope decoder and
//! the error paths). Odd: the rest is taken as sheet bytes and signed with a test key picked
//! by the first byte (one key belongs to no unit), so verification gets past the signature
//! and exercises sheet decoding and the unit check. Both modes also check that batch
//! verification agrees with single verification.
#![no_main]

#[path = "fixture.rs"]
mod fixture;

use ed25519_dalek::Signer;
use libfuzzer_sys::fuzz_target;
use tally_core::ids::KeyId;
use tally_proto::{
    SignedSheet, decode_sheet, decode_signed, encode_sheet, encode_signed, signing_message, verify,
    verify_batch,
};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let def = fixture::definition();
    let signed = if mode % 2 == 0 {
        match decode_signed(rest) {
            Ok(signed) => {
                // What decoded re-encodes to an envelope that decodes to the same value.
                assert_eq!(decode_signed(&encode_signed(&signed)).as_ref(), Ok(&signed));
                signed
            }
            Err(e) => {
                let _ = e.to_string();
                return;
            }
        }
    } else {
        // Keys 1..=UNITS belong to units; UNITS + 1 belongs to none.
        let n = (mode / 2) % (fixture::UNITS + 1) + 1;
        let key = fixture::unit_key(n);
        let key_id = KeyId::of(&key.verifying_key());
        let election = &def.election;
        SignedSheet {
            signature: key.sign(&signing_message(&election.id, election.mode, &key_id, rest)),
            sheet: rest.to_vec(),
            key_id,
            election_id: election.id.clone(),
            mode: Some(election.mode),
        }
    };

    let result = verify(def, &signed);
    let batch = verify_batch(def, std::slice::from_ref(&signed));
    assert_eq!(batch.len(), 1);
    assert_eq!(batch[0], result);
    match &result {
        Ok(verified) => {
            assert_eq!(verified.sheet.unit, verified.unit);
            assert_eq!(verified.signed, signed);
            // The verified sheet survives a round trip through the encoder.
            let again = decode_sheet(&encode_sheet(&verified.sheet)).expect("re-encoding decodes");
            assert_eq!(again, verified.sheet);
            let _ = verified.sheet.label();
            let _ = verified.sheet.count_closed_at.to_string();
        }
        Err(e) => {
            let _ = (e.code(), e.to_string());
            if mode % 2 == 1 {
                // A signature we just made is never reported bad.
                assert_ne!(e.code(), "E204", "{e}");
            }
        }
    }
});
