//! The evidence bundle's `chain.jsonl`: arbitrary text through `read_chain`
//! (crates/tally-evidence/src/lib.rs), which `tally verify` runs on a bundle from anyone. It must
//! never panic, and a chain it finds nothing wrong with must hold, for every record, an
//! envelope that decodes and a head that the next link starts from.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tally_evidence::{Findings, read_chain};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut findings = Findings::default();
    let Ok(chain) = read_chain(text, &mut findings) else {
        return;
    };
    if findings.total() == 0 {
        for (i, (line, signed, head)) in chain.records.iter().enumerate() {
            assert_eq!(line.position, i as u64);
            assert!(signed.is_some() && head.is_some());
        }
        if let Some((_, _, Some(last))) = chain.records.last() {
            assert_eq!(&chain.head, last);
        }
    }
});
