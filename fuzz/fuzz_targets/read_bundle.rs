//! Bundle reading: arbitrary bytes through `read_bundle`. What reads must write back to a
//! bundle that reads the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tally_proto::{read_bundle, write_bundle};

fuzz_target!(|data: &[u8]| {
    match read_bundle(data) {
        Ok(records) => {
            let again = read_bundle(&write_bundle(&records)).expect("a written bundle reads");
            assert_eq!(again, records);
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
