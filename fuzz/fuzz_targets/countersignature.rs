//! The countersignature: arbitrary bytes as a raft ingest batch (`tally.v1.IngestBatch`: the
//! township id, the signed sheets, the township's countersignature) through the decoders the
//! leader and the log use (`SignedSheet::from_pb`, `Countersignature::from_pb`) and
//! `verify_countersignature`.
//!
//! The first byte picks a mode. Even: the rest is the batch as it stands (its countersignature
//! will almost never hold, so this explores the decoders and the error paths). Odd: the batch's
//! sheets are countersigned by township T01's key (or, by the first byte, by a unit's key or
//! for another township), so verification gets past the signature; a batch signed by T01's
//! key for T01 must verify, and one changed after signing must not.
#![no_main]

#[path = "fixture.rs"]
mod fixture;

use libfuzzer_sys::fuzz_target;
use prost::Message;
use tally_core::ids::TownshipId;
use tally_proto::{Countersignature, SignedSheet, countersign, pb, verify_countersignature};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let Ok(batch) = pb::IngestBatch::decode(rest) else {
        return;
    };
    let sheets: Result<Vec<SignedSheet>, _> =
        batch.sheets.into_iter().map(SignedSheet::from_pb).collect();
    let Ok(sheets) = sheets else {
        return;
    };
    let def = fixture::definition();
    if mode % 2 == 0 {
        let Some(countersignature) = batch.countersignature else {
            return;
        };
        let countersignature = match Countersignature::from_pb(countersignature) {
            Ok(c) => c,
            Err(e) => {
                let _ = e.to_string();
                return;
            }
        };
        assert_eq!(
            Countersignature::from_pb(countersignature.to_pb()).as_ref(),
            Ok(&countersignature)
        );
        let township = TownshipId::new(&batch.township_id);
        if let Err(e) = verify_countersignature(def, &township, &sheets, &countersignature) {
            let _ = (e.code(), e.to_string());
        }
        return;
    }
    let township = TownshipId::new(fixture::TOWNSHIP);
    let (key, signed_for) = match (mode / 2) % 4 {
        0 | 1 => (fixture::township_key(), township.clone()),
        2 => (fixture::unit_key(1), township.clone()),
        _ => (fixture::township_key(), TownshipId::new("T02")),
    };
    let countersignature = countersign(&def.election, &signed_for, &sheets, &key);
    let result = verify_countersignature(def, &township, &sheets, &countersignature);
    if (mode / 2) % 4 <= 1 {
        assert!(result.is_ok(), "{result:?}");
        // The same signature over the batch with a sheet dropped does not hold.
        if let Some((_, fewer)) = sheets.split_last() {
            assert!(verify_countersignature(def, &township, fewer, &countersignature).is_err());
        }
    } else {
        let error =
            result.expect_err("a countersignature by the wrong key or for another township");
        let _ = (error.code(), error.to_string());
    }
});
