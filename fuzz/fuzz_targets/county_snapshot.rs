//! The snapshot image: arbitrary bytes as a raft snapshot's data through `decode_image` and
//! `CountyState::restore`, as a follower installs a snapshot from the leader and a replica
//! rebuilds its state from its store. An image that decodes must re-encode to one that decodes
//! the same; a state that restores must write an image that restores to the same state.
#![no_main]

#[path = "fixture.rs"]
mod fixture;

use libfuzzer_sys::fuzz_target;
use tally_county::state::CountyState;
use tally_proto::county::{decode_image, encode_image};

fuzz_target!(|data: &[u8]| {
    match decode_image(data) {
        Ok(image) => {
            assert_eq!(decode_image(&encode_image(&image)).as_ref(), Ok(&image));
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
    match CountyState::restore(fixture::definition_arc(), data) {
        Ok(state) => {
            let again = CountyState::restore(fixture::definition_arc(), &state.snapshot_bytes())
                .expect("a restored state's own image restores");
            assert_eq!(again.fingerprint(), state.fingerprint());
            assert_eq!(again.chain_head(), state.chain_head());
            assert_eq!(again.applied_index(), state.applied_index());
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
