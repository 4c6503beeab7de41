//! The set of accepted tally sheets: each sheet is recorded exactly once, and per slot (unit,
//! contest, round) the highest version counts.
//!
//! Invariants:
//! - Nothing recorded is ever removed or changed: a correction is a new version beside the old.
//! - The counted set depends only on the set of sheets submitted, not on their order, as long
//!   as no two different sheets claim the same slot and version (a conflict).
//! - A conflict never changes what counts by itself: the sheet first recorded for that slot
//!   and version keeps its place and the other is kept in [`Ledger::conflicts`] for the
//!   committee, whose decision may count the other instead ([`Ledger::chosen`]); the ledger
//!   itself is not changed by it.
//! - Submitting a sheet already recorded (same digest) changes nothing.
//!
//! The ledger trusts its caller: signatures are verified and [`crate::validate::check_sheet`]
//! found no error before `submit` is called. It does no hashing itself; the caller supplies
//! the SHA-256 of the signed sheet's exact bytes, so the same bytes always give the same digest.

use crate::sheet::{SheetSlot, TallySheet};
use serde::Serialize;
use std::collections::BTreeMap;

/// SHA-256 of the signed sheet's exact bytes, supplied by the caller.
pub type Digest = [u8; 32];

/// What became of a submitted sheet. Every outcome the ledger foresees is a value, not an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Submission {
    /// A new slot, or a version higher than the one counted so far: it now counts.
    Accepted,
    /// The same slot, version and digest are already recorded: nothing changes.
    Duplicate,
    /// The same slot and version are recorded with a different digest: this sheet is kept in
    /// [`Ledger::conflicts`] and never counted.
    Conflict {
        #[serde(serialize_with = "serialize_digest")]
        existing: Digest,
    },
    /// A version lower than the one counted: recorded, not counted.
    Superseded { current_version: u32 },
}

/// Two different sheets claiming the same slot and version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConflictRecord {
    pub slot: SheetSlot,
    pub version: u32,
    /// The digest recorded first, which keeps its place.
    #[serde(serialize_with = "serialize_digest")]
    pub existing: Digest,
    /// The digest of the sheet that was refused.
    #[serde(serialize_with = "serialize_digest")]
    pub conflicting: Digest,
    /// The refused sheet, kept for the committee.
    pub sheet: TallySheet,
}

fn serialize_digest<S: serde::Serializer>(digest: &Digest, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex::encode(digest))
}

/// One recorded version of a slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedSheet {
    pub sheet: TallySheet,
    pub digest: Digest,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ledger {
    /// Every recorded version of every slot; the last entry of each inner map counts.
    slots: BTreeMap<SheetSlot, BTreeMap<u32, RecordedSheet>>,
    conflicts: Vec<ConflictRecord>,
}

impl Ledger {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a sheet whose signature and validation the caller has checked.
    pub fn submit(&mut self, sheet: TallySheet, digest: Digest) -> Submission {
        let slot = sheet.slot();
        let version = sheet.version;
        let versions = self.slots.entry(slot.clone()).or_default();
        if let Some(recorded) = versions.get(&version) {
            if recorded.digest == digest {
                return Submission::Duplicate;
            }
            let existing = recorded.digest;
            // A conflicting sheet submitted again is recorded once, so a resubmission still
            // changes nothing.
            let known = self
                .conflicts
                .iter()
                .any(|c| c.slot == slot && c.version == version && c.conflicting == digest);
            if !known {
                self.conflicts.push(ConflictRecord {
                    slot,
                    version,
                    existing,
                    conflicting: digest,
                    sheet,
                });
            }
            return Submission::Conflict { existing };
        }
        let current_version = versions.last_key_value().map(|(&v, _)| v);
        versions.insert(version, RecordedSheet { sheet, digest });
        match current_version {
            Some(current) if current > version => Submission::Superseded {
                current_version: current,
            },
            _ => Submission::Accepted,
        }
    }

    /// The sheets that count: the highest version per slot, in slot order (unit, contest, round).
    pub fn counted(&self) -> impl Iterator<Item = &TallySheet> {
        self.slots
            .values()
            .filter_map(|versions| versions.last_key_value().map(|(_, r)| &r.sheet))
    }

    /// The counted sheet of one slot.
    pub fn get(&self, slot: &SheetSlot) -> Option<&TallySheet> {
        self.slots
            .get(slot)
            .and_then(|versions| versions.last_key_value().map(|(_, r)| &r.sheet))
    }

    /// Every recorded version of one slot, lowest first.
    pub fn versions(&self, slot: &SheetSlot) -> impl Iterator<Item = &RecordedSheet> {
        self.slots.get(slot).into_iter().flat_map(|v| v.values())
    }

    /// Refused sheets that claimed a recorded slot and version, in arrival order.
    pub fn conflicts(&self) -> &[ConflictRecord] {
        &self.conflicts
    }

    /// Whether polling has begun in a contest: a sheet of it is counted or in conflict.
    /// (Scans the ledger: for the rare committee act, not for every sheet.)
    pub fn polled(&self, contest: &crate::ids::ContestId) -> bool {
        self.counted().any(|s| s.contest == *contest)
            || self.conflicts.iter().any(|c| c.sheet.contest == *contest)
    }

    /// Whether the committee may choose the sheet with `digest` for `slot` and `version`:
    /// there is a conflict there, and the sheet is one of those in it (the one in place or
    /// one refused). The ledger itself never changes: the choice is the committee's decision
    /// ([`crate::committee`]), which the results apply ([`Ledger::chosen`]).
    pub fn conflict_choice(
        &self,
        slot: &SheetSlot,
        version: u32,
        digest: &Digest,
    ) -> Result<(), String> {
        let unit = &slot.unit;
        let round = slot.round.0;
        let Some(recorded) = self.slots.get(slot).and_then(|v| v.get(&version)) else {
            return Err(format!(
                "no sheet is recorded for unit {unit}, round {round}, version {version}"
            ));
        };
        let in_conflict: Vec<&ConflictRecord> = self
            .conflicts
            .iter()
            .filter(|c| c.slot == *slot && c.version == version)
            .collect();
        if in_conflict.is_empty() {
            return Err(format!(
                "the sheet of unit {unit}, round {round}, version {version} is in conflict with no other; there is nothing to choose"
            ));
        }
        if recorded.digest == *digest || in_conflict.iter().any(|c| c.conflicting == *digest) {
            return Ok(());
        }
        Err(format!(
            "no sheet of unit {unit}, round {round}, version {version} has digest {}; the sheets are {} (recorded first) and {}",
            hex::encode(digest),
            hex::encode(recorded.digest),
            in_conflict
                .iter()
                .map(|c| hex::encode(c.conflicting))
                .collect::<Vec<_>>()
                .join(", ")
        ))
    }

    /// The sheet the committee chose for `slot` and `version` (the digest it named): the one
    /// recorded first, or the conflicting one kept beside it.
    pub fn chosen(&self, slot: &SheetSlot, version: u32, digest: &Digest) -> Option<&TallySheet> {
        let recorded = self.slots.get(slot).and_then(|v| v.get(&version))?;
        if recorded.digest == *digest {
            return Some(&recorded.sheet);
        }
        self.conflicts
            .iter()
            .find(|c| c.slot == *slot && c.version == version && c.conflicting == *digest)
            .map(|c| &c.sheet)
    }

    /// The number of slots with a counted sheet (not counting older versions or conflicts).
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The number of sheets recorded, every version counted once (conflicts apart).
    pub fn recorded_len(&self) -> usize {
        self.slots.values().map(BTreeMap::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::testkit::{ContestSpec, UnitSpec, clean_sheet, definition};

    fn versioned(version: u32, approvals: u64) -> TallySheet {
        let d = definition(
            &[ContestSpec::new("C1", 1, 2, 1000)],
            &[UnitSpec::new("U1", "station", &["C1"])],
            "",
        );
        let mut s = clean_sheet(&d, "U1", "C1");
        s.version = version;
        s.replaces_version = (version > 1).then(|| version - 1);
        s.candidates[0].approvals = approvals;
        s
    }

    // Goal: the highest version counts whatever the arrival order; lower versions stay
    // recorded; a resubmission is a duplicate.
    // Method: submit versions 1..3 in two orders and compare.
    #[test]
    fn highest_version_counts_in_any_order() {
        let mut forward = Ledger::new();
        assert_eq!(
            forward.submit(versioned(1, 10), [1; 32]),
            Submission::Accepted
        );
        assert_eq!(
            forward.submit(versioned(2, 20), [2; 32]),
            Submission::Accepted
        );
        assert_eq!(
            forward.submit(versioned(3, 30), [3; 32]),
            Submission::Accepted
        );

        let mut backward = Ledger::new();
        assert_eq!(
            backward.submit(versioned(3, 30), [3; 32]),
            Submission::Accepted
        );
        assert_eq!(
            backward.submit(versioned(1, 10), [1; 32]),
            Submission::Superseded { current_version: 3 }
        );
        assert_eq!(
            backward.submit(versioned(2, 20), [2; 32]),
            Submission::Superseded { current_version: 3 }
        );
        assert_eq!(forward, backward);
        assert_eq!(forward.len(), 1);
        assert_eq!(forward.recorded_len(), 3);
        let counted: Vec<_> = forward.counted().collect();
        assert_eq!(counted.len(), 1);
        assert_eq!(counted[0].version, 3);

        let before = forward.clone();
        assert_eq!(
            forward.submit(versioned(2, 20), [2; 32]),
            Submission::Duplicate
        );
        assert_eq!(forward, before);
    }

    // Goal: two different sheets for one slot and version: the first keeps its place, the
    // second is recorded as a conflict once and never counted.
    // Method: submit a conflicting version 1 twice.
    #[test]
    fn conflicts_are_recorded_not_counted() {
        let mut ledger = Ledger::new();
        ledger.submit(versioned(1, 10), [1; 32]);
        let conflict = ledger.submit(versioned(1, 11), [9; 32]);
        assert_eq!(conflict, Submission::Conflict { existing: [1; 32] });
        let after_first = ledger.clone();
        assert_eq!(ledger.submit(versioned(1, 11), [9; 32]), conflict);
        assert_eq!(ledger, after_first);
        assert_eq!(ledger.conflicts().len(), 1);
        let c = &ledger.conflicts()[0];
        assert_eq!(
            (c.version, c.existing, c.conflicting),
            (1, [1; 32], [9; 32])
        );
        assert_eq!(ledger.counted().next().unwrap().candidates[0].approvals, 10);
    }
}
