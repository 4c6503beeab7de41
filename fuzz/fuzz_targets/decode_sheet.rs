//! Sheet decoding: arbitrary bytes through `decode_sheet`. A sheet that decodes must survive
//! a round trip through the encoder, and printing it must not panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tally_proto::{decode_sheet, encode_sheet};

fuzz_target!(|data: &[u8]| {
    match decode_sheet(data) {
        Ok(sheet) => {
            let again = decode_sheet(&encode_sheet(&sheet)).expect("re-encoding decodes");
            assert_eq!(again, sheet);
            let _ = sheet.label();
            let _ = sheet.count_closed_at.to_string();
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
