//! The chain record: arbitrary bytes as a row of a replica's `chain` table through
//! `decode_chain_record`. A record that decodes must re-encode to one that decodes the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tally_proto::county::{decode_chain_record, encode_chain_record};

fuzz_target!(|data: &[u8]| {
    match decode_chain_record(data) {
        Ok(record) => {
            let again = decode_chain_record(&encode_chain_record(&record))
                .expect("a re-encoded record decodes");
            assert_eq!(again, record);
            let _ = record.act.digest();
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
