//! The clerk's sheet file (TOML): any text either parses to a sheet or gives an error naming
//! the file, and a parsed sheet writes back to text that parses to the same sheet.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(sheet) = tally_core::sheet_file::parse("fuzz.toml", text) {
        let again = tally_core::sheet_file::to_toml(&sheet);
        let reparsed = tally_core::sheet_file::parse("again.toml", &again)
            .expect("a written sheet file parses");
        assert_eq!(reparsed, sheet);
    }
});
