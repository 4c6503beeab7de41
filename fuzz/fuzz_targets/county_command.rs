//! The raft command: arbitrary bytes as a log entry's data through `Command::decode`
//! (crates/tally-county/src/command.rs), as every replica decodes each committed entry. A
//! command that decodes must re-encode to one that decodes the same, and applying it to the
//! county state must not panic and must be deterministic (two fresh states that apply it
//! agree byte for byte).
#![no_main]

#[path = "fixture.rs"]
mod fixture;

use libfuzzer_sys::fuzz_target;
use tally_county::command::Command;
use tally_county::state::CountyState;

fuzz_target!(|data: &[u8]| {
    let command = match Command::decode(data) {
        Ok(command) => command,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    match Command::decode(&command.encode()) {
        Ok(again) => assert_eq!(again, command),
        Err(e) => panic!("a decoded command re-encodes to bytes that do not decode: {e}"),
    }
    let mut first = CountyState::new(fixture::definition_arc());
    let mut second = CountyState::new(fixture::definition_arc());
    let applied = first.apply(tally_county::LogIndex::new(2), &command);
    let again = second.apply(tally_county::LogIndex::new(2), &command);
    assert_eq!(applied, again);
    assert_eq!(first.fingerprint(), second.fingerprint());
    assert_eq!(first.chain_head(), second.chain_head());
});
