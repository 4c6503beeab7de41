//! The sheet bundle: many signed sheets in one file or message, for export, archives and
//! replays.
//!
//! A bundle is a sequence of records with no header or trailer. Each record is a protobuf
//! varint length followed by that many bytes of encoded `SignedSheet`: the framing of
//! prost's `encode_length_delimited` and of protobuf's `writeDelimitedTo` in other languages.
//! Each record is bounded by [`SIGNED_SHEET_BYTES_MAX`] and a bundle by [`BUNDLE_RECORDS_MAX`]
//! records; a reader checks a record's length before it reads the record.

use crate::convert::SIGNED_SHEET_BYTES_MAX;
use crate::envelope::{SignedSheet, decode_signed};
use crate::error::Error;
use prost::Message;

/// The most records a bundle may hold: ten times the units of a very large county holding a
/// sheet per contest, and at the record size bound still far more than a bundle ever needs.
pub const BUNDLE_RECORDS_MAX: usize = 10_000_000;

/// Writes signed sheets as a bundle, in the order given.
pub fn write_bundle(signed: &[SignedSheet]) -> Vec<u8> {
    let mut out = Vec::new();
    for s in signed {
        s.to_pb()
            .encode_length_delimited(&mut out)
            // A Vec grows as needed, so encoding into it cannot run out of room.
            .expect("encoding into a Vec cannot fail");
    }
    out
}

/// Reads a bundle. An error names the record (1 for the first) and the byte offset of its
/// length prefix. The sheets stay unverified bytes; pass them to
/// [`verify_batch`](crate::verify_batch).
pub fn read_bundle(bytes: &[u8]) -> Result<Vec<SignedSheet>, Error> {
    let mut out = Vec::new();
    let mut offset = 0;
    while offset < bytes.len() {
        let record = out.len() + 1;
        if out.len() == BUNDLE_RECORDS_MAX {
            return Err(Error::BundleTooLong {
                max: BUNDLE_RECORDS_MAX,
            });
        }
        let in_record = |cause: Error| Error::BundleRecord {
            record,
            offset,
            cause: Box::new(cause),
        };
        let mut rest = &bytes[offset..];
        let before = rest.len();
        let len = prost::encoding::decode_varint(&mut rest).map_err(|cause| {
            in_record(Error::Protobuf {
                what: "length prefix",
                cause,
            })
        })?;
        let prefix_len = before - rest.len();
        if len > SIGNED_SHEET_BYTES_MAX as u64 {
            return Err(in_record(Error::TooLarge {
                what: "signed sheet",
                // Saturates only on a 32-bit machine, where the length could not be real anyway.
                len: usize::try_from(len).unwrap_or(usize::MAX),
                max: SIGNED_SHEET_BYTES_MAX,
            }));
        }
        // The bound above keeps `len` far below usize::MAX.
        let len = len as usize;
        if rest.len() < len {
            return Err(in_record(Error::Truncated {
                what: "signed sheet",
                needed: len,
                available: rest.len(),
            }));
        }
        out.push(decode_signed(&rest[..len]).map_err(in_record)?);
        offset += prefix_len + len;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::convert::tests::sample_sheet;
    use crate::envelope::sign;
    use crate::envelope::tests::{election, unit_key};

    fn three() -> Vec<SignedSheet> {
        (1..=3)
            .map(|n| {
                sign(
                    &sample_sheet(&format!("T01-U00{n}")),
                    &unit_key(n),
                    &election(),
                )
            })
            .collect()
    }

    // Goal: a bundle reads back as the sheets written, in order; an empty bundle is empty.
    // Method: write three signed sheets and read them.
    #[test]
    fn bundle_round_trip() {
        let signed = three();
        assert_eq!(read_bundle(&write_bundle(&signed)).unwrap(), signed);
        assert!(read_bundle(&[]).unwrap().is_empty());
    }

    // Goal: a damaged bundle's error names the record and its byte offset, and no cut panics.
    // Method: cut the bundle at every byte; corrupt the third record's length prefix.
    #[test]
    fn damaged_bundle_names_record_and_offset() {
        let signed = three();
        let bytes = write_bundle(&signed);
        let record_len = bytes.len() / 3;
        for cut in 0..bytes.len() {
            let result = read_bundle(&bytes[..cut]);
            if cut % record_len == 0 {
                assert_eq!(result.unwrap().len(), cut / record_len);
            } else {
                let err = result.unwrap_err();
                let expected = format!(
                    "bundle record {} (at byte {}): ",
                    cut / record_len + 1,
                    cut / record_len * record_len
                );
                assert!(err.to_string().starts_with(&expected), "{err}");
            }
        }

        let mut oversized = bytes.clone();
        let third = 2 * record_len;
        // A varint of 2^20: 0x80 0x80 0x40, longer than any record may be.
        oversized.splice(third..third + 2, [0x80, 0x80, 0x40]);
        let err = read_bundle(&oversized).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!(
                "bundle record 3 (at byte {third}): signed sheet is 1048576 bytes"
            )),
            "{err}"
        );
    }
}
