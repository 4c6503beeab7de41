//! The QR and offline payloads: arbitrary bytes as a file carried from the polling place
//! through `read_offline_bytes` (crates/tally-village/src/offline.rs: a PNG of QR codes, a text file of
//! `TALLY1:` payloads, or a `.sheets` bundle), and, if they are text, as one payload through
//! `parse_payload`. A payload that parses must print (`qr_payload`) to one that parses the
//! same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;
use tally_village::offline::{parse_payload, qr_payload, read_offline_bytes};

fuzz_target!(|data: &[u8]| {
    if let Err(e) = read_offline_bytes(Path::new("fuzz.input"), data) {
        let _ = format!("{e:#}");
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match parse_payload(text) {
        Ok(signed) => {
            let again = parse_payload(&qr_payload(&signed)).expect("a printed payload parses");
            assert_eq!(again, signed);
        }
        Err(e) => {
            let _ = format!("{e:#}");
        }
    }
});
