//! Property tests over arbitrary and mutated bytes: decoding never panics, and what decodes
//! survives a round trip.

use crate::convert::tests::sample_sheet;
use crate::envelope::tests::{definition, election, unit_key};
use crate::{
    decode_sheet, decode_signed, encode_sheet, encode_signed, read_bundle, sign, verify,
    write_bundle,
};
use proptest::prelude::*;

proptest! {
    // Goal: no byte string makes a decoder panic.
    // Method: feed arbitrary bytes to the sheet, envelope and bundle decoders; whatever
    // decodes must encode and decode to the same value.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(sheet) = decode_sheet(&bytes) {
            prop_assert_eq!(decode_sheet(&encode_sheet(&sheet)), Ok(sheet));
        }
        if let Ok(signed) = decode_signed(&bytes) {
            prop_assert_eq!(decode_signed(&encode_signed(&signed)), Ok(signed));
        }
        if let Ok(records) = read_bundle(&bytes) {
            prop_assert_eq!(read_bundle(&write_bundle(&records)), Ok(records));
        }
    }

    // Goal: near-valid input, where bugs hide, never panics a decoder or verification.
    // Method: overwrite a few bytes of a valid signed envelope, then decode and verify it;
    // a change inside the signed bytes is never accepted.
    #[test]
    fn mutated_envelopes_never_panic(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let def = definition(1);
        let signed = sign(&sample_sheet("T01-U001"), &unit_key(1), &election());
        let mut bytes = encode_signed(&signed);
        for (index, value) in edits {
            let at = index.index(bytes.len());
            bytes[at] = value;
        }
        if let Ok(decoded) = decode_signed(&bytes) {
            match verify(&def, &decoded) {
                Ok(verified) => prop_assert_eq!(verified.sheet, sample_sheet("T01-U001")),
                Err(e) => prop_assert!(["E204", "E205", "E206", "E211", "E212"].contains(&e.code())),
            }
        }
        let _ = decode_sheet(&bytes);
    }
}
