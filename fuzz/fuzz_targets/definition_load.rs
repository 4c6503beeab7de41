//! Election definition loading: the input, when it is UTF-8, is both the TOML file and every
//! CSV file the TOML names, so one input can reach the TOML and the CSV readers.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match tally_core::definition::load("fuzz.toml", text, &mut |_path| Ok(text.to_owned())) {
        Ok(def) => {
            let _ = tally_core::definition::contest_counts(&def);
        }
        Err(errors) => {
            let _ = errors.to_string();
        }
    }
});
