//! Batch verification: many envelopes at once, with Ed25519 batch verification over chunks
//! spread across all cores.
//!
//! A chunk whose batch equation fails is verified again one envelope at a time, so one bad
//! signature is pinpointed and the good ones around it still verify. The results are in the
//! order of the input and are the same as [`crate::verify`] gives for each envelope,
//! apart from the edge case `docs/signing.md` describes.

use crate::envelope::{SignedSheet, VerifiedSheet, finish, message_for, unit_of_key, verify};
use crate::error::Error;
use rayon::prelude::*;
use tally_core::definition::Definition;

/// Envelopes per batch equation. Larger chunks make the multiscalar multiplication cheaper
/// per signature, with diminishing returns past a few dozen, and make the fallback after a
/// failure costlier; 64 is where ed25519-dalek's own benchmarks flatten out.
pub const VERIFY_BATCH_CHUNK: usize = 64;

/// Verifies every envelope, in parallel over chunks of [`VERIFY_BATCH_CHUNK`], returning one
/// result per envelope in input order.
pub fn verify_batch(def: &Definition, signed: &[SignedSheet]) -> Vec<Result<VerifiedSheet, Error>> {
    let per_chunk: Vec<Vec<Result<VerifiedSheet, Error>>> = signed
        .par_chunks(VERIFY_BATCH_CHUNK)
        .map(|chunk| verify_chunk(def, chunk))
        .collect();
    per_chunk.into_iter().flatten().collect()
}

fn verify_chunk(def: &Definition, chunk: &[SignedSheet]) -> Vec<Result<VerifiedSheet, Error>> {
    // One envelope alone is cheaper to check by itself than as a batch of one (about half
    // the time), and single verification is what decides a failed batch anyway.
    if let [signed] = chunk {
        return vec![verify(def, signed)];
    }
    // Envelopes with an unknown key get their error now and stay out of the batch equation.
    let units: Vec<_> = chunk.iter().map(|s| unit_of_key(def, s)).collect();
    let mut messages = Vec::with_capacity(chunk.len());
    let mut signatures = Vec::with_capacity(chunk.len());
    let mut keys = Vec::with_capacity(chunk.len());
    for (signed, unit) in chunk.iter().zip(&units) {
        if let Ok(unit) = unit {
            messages.push(message_for(def, signed));
            signatures.push(signed.signature);
            keys.push(unit.public_key);
        }
    }
    let message_refs: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
    let batch_ok = ed25519_dalek::verify_batch(&message_refs, &signatures, &keys).is_ok();

    let mut out = Vec::with_capacity(chunk.len());
    for (signed, unit) in chunk.iter().zip(units) {
        out.push(match unit {
            Err(e) => Err(e),
            Ok(unit) if batch_ok => finish(unit, signed),
            // The batch failed: find out which envelopes are bad, one by one.
            Ok(_) => verify(def, signed),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::convert::tests::sample_sheet;
    use crate::envelope::sign;
    use crate::envelope::tests::{definition, election, unit_key};

    fn signed_sheets(count: usize, units: u8) -> Vec<SignedSheet> {
        (0..count)
            .map(|i| {
                let n = (i % usize::from(units)) as u8 + 1;
                let mut sheet = sample_sheet(&format!("T01-U{n:03}"));
                sheet.version = (i / usize::from(units)) as u32 % 1000 + 1;
                sign(&sheet, &unit_key(n), &election())
            })
            .collect()
    }

    // Goal: one bad sheet among 200 is pinpointed and the other 199 verify.
    // Method: tamper one sheet in the middle of a chunk, batch verify, and compare every
    // result with single verification.
    #[test]
    fn batch_pinpoints_one_bad_sheet_among_200() {
        let def = definition(5);
        let mut signed = signed_sheets(200, 5);
        let bad = 137;
        let last = signed[bad].sheet.len() - 1;
        signed[bad].sheet[last] ^= 0x01;
        let results = verify_batch(&def, &signed);
        assert_eq!(results.len(), 200);
        for (i, result) in results.iter().enumerate() {
            if i == bad {
                assert_eq!(result.as_ref().unwrap_err().code(), "E204");
            } else {
                let verified = result.as_ref().unwrap();
                assert_eq!(verified.signed, signed[i], "result {i} out of order");
            }
            assert_eq!(result, &verify(&def, &signed[i]), "result {i}");
        }
    }

    // Goal: unknown keys, another unit's key and malformed sheets get the same errors in a
    // batch as alone, even when the rest of the batch equation holds.
    // Method: mix one of each into otherwise good chunks and compare with single verification.
    #[test]
    fn batch_errors_match_single_verification() {
        let def = definition(3);
        let mut signed = signed_sheets(130, 3);
        signed[3] = sign(&sample_sheet("T01-U001"), &unit_key(9), &election());
        signed[70] = sign(&sample_sheet("T01-U001"), &unit_key(2), &election());
        let mut too_many = sample_sheet("T01-U003");
        too_many.counters = vec![String::new(); 51];
        signed[129] = sign(&too_many, &unit_key(3), &election());
        let results = verify_batch(&def, &signed);
        let codes: Vec<_> = results
            .iter()
            .enumerate()
            .filter_map(|(i, r)| r.as_ref().err().map(|e| (i, e.code())))
            .collect();
        assert_eq!(codes, vec![(3, "E205"), (70, "E205"), (129, "E206")]);
        for (i, result) in results.iter().enumerate() {
            assert_eq!(result, &verify(&def, &signed[i]), "result {i}");
        }
        assert!(verify_batch(&def, &[]).is_empty());
        // A batch of one is checked alone, with the same results.
        for i in [0, 3, 70, 129] {
            assert_eq!(
                verify_batch(&def, &signed[i..=i]),
                vec![verify(&def, &signed[i])]
            );
        }
    }
}
