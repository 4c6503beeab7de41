//! The township's facts in memory: the same as the database holds, rebuilt from it on start
//! and changed only after the transaction that stores a change has committed, so it never runs
//! ahead of the disk. Every decision about a new sheet (duplicate, conflict, superseded, over
//! capacity) is taken here, against the book and the sheets of the same group commit not yet
//! in it (`Pending`).

use crate::error::Error;
use crate::store::{
    CountyLink, Digest, Loaded, Note, NotesDropped, SheetRecord, UNIT_CONFLICTS_KEPT_MAX,
    UNIT_REFUSALS_KEPT_MAX,
};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};
use tally_core::ledger::{Ledger, Submission};
use tally_core::sheet::{SheetSlot, TallySheet};

/// The most notes (refusals, conflicts) the picture lists: every sender's conflicts first,
/// then refusals, newest first. Each sender has at most [`UNIT_REFUSALS_KEPT_MAX`] refusals
/// kept, so one unit takes at most that many of these places.
pub const PICTURE_NOTES_MAX: usize = 200;

/// One sender's notes ([`Note::sender`]): its newest refusals and conflicts, by note number,
/// and how many older ones were dropped for the caps.
#[derive(Debug, Default)]
pub struct SenderNotes {
    pub refusals: BTreeMap<u64, Note>,
    pub conflicts: BTreeMap<u64, Note>,
    pub dropped: NotesDropped,
}

/// The notes the picture shows, per sender, with the same caps the store keeps
/// (`store::write_notes`), so that one unit cannot push out the rest, and refusals never
/// push out a conflict.
#[derive(Debug, Default)]
pub struct NoteShelf {
    pub senders: BTreeMap<String, SenderNotes>,
}

impl NoteShelf {
    /// Adds a note, dropping (and counting) the sender's oldest past its cap.
    pub fn push(&mut self, number: u64, note: Note) {
        let sender = self.senders.entry(note.sender().to_owned()).or_default();
        let (list, dropped, kept_max) = if note.is_conflict() {
            (
                &mut sender.conflicts,
                &mut sender.dropped.conflicts,
                UNIT_CONFLICTS_KEPT_MAX,
            )
        } else {
            (
                &mut sender.refusals,
                &mut sender.dropped.refusals,
                UNIT_REFUSALS_KEPT_MAX,
            )
        };
        list.insert(number, note);
        while list.len() > kept_max {
            list.pop_first();
            *dropped += 1;
        }
    }

    /// Every note kept, conflicts then refusals, each newest first.
    pub fn newest_first(&self) -> Vec<(u64, &Note)> {
        let mut conflicts: Vec<(u64, &Note)> = Vec::new();
        let mut refusals: Vec<(u64, &Note)> = Vec::new();
        for s in self.senders.values() {
            conflicts.extend(s.conflicts.iter().map(|(n, note)| (*n, note)));
            refusals.extend(s.refusals.iter().map(|(n, note)| (*n, note)));
        }
        conflicts.sort_by_key(|(n, _)| std::cmp::Reverse(*n));
        refusals.sort_by_key(|(n, _)| std::cmp::Reverse(*n));
        conflicts.extend(refusals);
        conflicts
    }
}

/// What the township holds, in memory.
pub(crate) struct Book {
    /// Every stored sheet, for the provisional results and for telling duplicates, conflicts
    /// and superseded versions apart. Conflicting sheets are never stored, so the ledger
    /// records none.
    pub ledger: Ledger,
    /// Every stored sheet's record, by digest.
    pub records: HashMap<Digest, SheetRecord>,
    /// Units with at least one stored sheet.
    pub units_reported: BTreeSet<String>,
    /// Sheets not yet answered by the county: arrival number → digest.
    pub outbox: BTreeMap<u64, Digest>,
    /// The notes kept, per sender.
    pub notes: NoteShelf,
    pub link: CountyLink,
    /// Whether the last attempt to reach the county succeeded (unknown, so false, at start).
    pub county_reachable: bool,
    /// The last error from the county; empty after a success.
    pub last_error: String,
    /// Sheets the county has answered.
    pub forwarded: u64,
    /// The next arrival number and note number to hand out. Numbers are handed out when a
    /// write is decided, before it commits, so two writers never take the same one; a failed
    /// write leaves a gap, which is harmless.
    pub next_seq: u64,
    pub next_note: u64,
    /// One more after every change of the stored sheets, so the picture's results are
    /// computed again only when they can differ.
    pub generation: u64,
}

impl Book {
    /// The book of what was read from the database.
    pub fn rebuild(loaded: Loaded) -> Result<Book, Error> {
        let mut book = Book {
            ledger: Ledger::new(),
            records: HashMap::with_capacity(loaded.sheets.len()),
            units_reported: BTreeSet::new(),
            outbox: loaded.outbox.into_iter().collect(),
            notes: NoteShelf::default(),
            link: loaded.link,
            county_reachable: false,
            last_error: String::new(),
            forwarded: 0,
            next_seq: loaded.next_seq,
            next_note: loaded.next_note,
            generation: 0,
        };
        for stored in loaded.sheets {
            let digest_hex = hex::encode(stored.digest);
            // Only verified sheets are stored, so the bytes decode; they are not verified
            // again (the database is this aggregator's own).
            let sheet =
                tally_proto::decode_sheet(&stored.signed.sheet).map_err(|e| Error::Corrupt {
                    what: format!("sheet {digest_hex}"),
                    problem: e.to_string(),
                })?;
            match book.ledger.submit(sheet, stored.digest) {
                Submission::Accepted | Submission::Superseded { .. } => {}
                other => {
                    return Err(Error::Corrupt {
                        what: format!("sheet {digest_hex}"),
                        problem: format!("is {other:?} of another stored sheet"),
                    });
                }
            }
            if stored.record.county.is_some() {
                book.forwarded += 1;
            }
            book.units_reported.insert(stored.record.unit.clone());
            book.records.insert(stored.digest, stored.record);
        }
        for (sender, dropped) in loaded.notes_dropped {
            book.notes.senders.entry(sender).or_default().dropped = dropped;
        }
        for (number, note) in loaded.notes {
            book.notes.push(number, note);
        }
        Ok(book)
    }

    pub fn push_note(&mut self, number: u64, note: Note) {
        self.notes.push(number, note);
    }

    /// Hands out the next note number.
    pub fn take_note_number(&mut self) -> u64 {
        let n = self.next_note;
        self.next_note += 1;
        n
    }

    /// What a new sheet is, given the book and the sheets decided before it in the same write
    /// (`layers`, not yet in the book).
    pub fn decide(&self, layers: &[&Pending], sheet: &TallySheet, digest: &Digest) -> Decision {
        let slot = sheet.slot();
        let version = sheet.version;
        if self.records.contains_key(digest) || layers.iter().any(|p| p.digests.contains(digest)) {
            return Decision::Duplicate;
        }
        let stored = self
            .ledger
            .versions(&slot)
            .find(|r| r.sheet.version == version)
            .map(|r| r.digest);
        let existing = stored.or_else(|| {
            layers
                .iter()
                .find_map(|p| p.at_version.get(&(slot.clone(), version)).copied())
        });
        if let Some(existing) = existing {
            return Decision::Conflict { existing };
        }
        let highest = self
            .ledger
            .versions(&slot)
            .map(|r| r.sheet.version)
            .chain(layers.iter().filter_map(|p| p.highest.get(&slot).copied()))
            .max();
        match highest {
            Some(highest) if highest > version => Decision::Superseded { highest },
            _ => Decision::New,
        }
    }
}

/// What a new sheet is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// The very same sheet is stored (or is being stored in this write).
    Duplicate,
    /// Another sheet holds its slot and version; it is not stored.
    Conflict { existing: Digest },
    /// A lower version than one stored: stored, forwarded, not counted.
    Superseded { highest: u32 },
    /// Stored, and it counts.
    New,
}

/// Sheets decided for one write and not yet in the book.
#[derive(Default)]
pub(crate) struct Pending {
    pub digests: HashSet<Digest>,
    pub at_version: HashMap<(SheetSlot, u32), Digest>,
    pub highest: HashMap<SheetSlot, u32>,
}

impl Pending {
    pub fn add(&mut self, sheet: &TallySheet, digest: Digest) {
        let slot = sheet.slot();
        self.digests.insert(digest);
        self.at_version
            .insert((slot.clone(), sheet.version), digest);
        let highest = self.highest.entry(slot).or_insert(sheet.version);
        *highest = (*highest).max(sheet.version);
    }

    pub fn merge(&mut self, other: Pending) {
        self.digests.extend(other.digests);
        self.at_version.extend(other.at_version);
        for (slot, version) in other.highest {
            let highest = self.highest.entry(slot).or_insert(version);
            *highest = (*highest).max(version);
        }
    }
}

pub(crate) fn lock(book: &Mutex<Book>) -> MutexGuard<'_, Book> {
    // The book is changed only after a commit, in one step per write; a panic elsewhere while
    // it was held left it as it was, so a poisoned lock still guards a consistent book.
    book.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    //! The township's exactly-once decisions against the core's `Ledger`, the county's.

    use super::*;
    use crate::store::{Loaded, SheetRecord};
    use proptest::prelude::*;
    use tally_core::ids::{ContestId, UnitId};
    use tally_core::ledger::Ledger;
    use tally_core::sheet::{CountClosedAt, Round};

    /// A sheet by the numbers that matter here: slot, version, and which of a few different
    /// contents it has (the same content is the same bytes, hence the same digest).
    #[derive(Debug, Clone, Copy)]
    struct Spec {
        unit: u8,
        contest: u8,
        round: u8,
        version: u8,
        content: u8,
    }

    fn sheet(spec: Spec) -> (TallySheet, Digest) {
        let sheet = TallySheet {
            unit: UnitId::new(format!("T01-U{}", spec.unit)),
            contest: ContestId::new(format!("T01-C{}", spec.contest)),
            round: Round(u32::from(spec.round)),
            version: u32::from(spec.version),
            replaces_version: (spec.version > 1).then(|| u32::from(spec.version) - 1),
            registered_voters: 100,
            ballots_issued: 50,
            ballots_collected: 50,
            ballots_void: u64::from(spec.content),
            ballots_valid: 50 - u64::from(spec.content),
            ballots_blank: 0,
            proxies: 0,
            candidates: Vec::new(),
            write_ins: Vec::new(),
            scrutineers: Vec::new(),
            counters: Vec::new(),
            count_closed_at: CountClosedAt::default(),
        };
        // The digest stands for the exact bytes: the same spec, the same bytes.
        let mut digest = [0u8; 32];
        digest[..5].copy_from_slice(&[
            spec.unit,
            spec.contest,
            spec.round,
            spec.version,
            spec.content,
        ]);
        (sheet, digest)
    }

    /// Few units, contests, rounds, versions and contents, so that duplicates, conflicts and
    /// superseded versions are common.
    fn spec() -> impl Strategy<Value = Spec> {
        (0u8..2, 0u8..2, 1u8..3, 1u8..5, 0u8..3).prop_map(
            |(unit, contest, round, version, content)| Spec {
                unit,
                contest,
                round,
                version,
                content,
            },
        )
    }

    /// A group commit: its submits (each a list of sheets), and whether its write fails.
    fn group() -> impl Strategy<Value = (Vec<Vec<Spec>>, bool)> {
        (
            prop::collection::vec(prop::collection::vec(spec(), 1..5), 1..4),
            prop::bool::weighted(0.1),
        )
    }

    /// The ledger's answer in the book's words.
    fn as_decision(submission: Submission) -> Decision {
        match submission {
            Submission::Accepted => Decision::New,
            Submission::Duplicate => Decision::Duplicate,
            Submission::Conflict { existing } => Decision::Conflict { existing },
            Submission::Superseded { current_version } => Decision::Superseded {
                highest: current_version,
            },
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        // Goal: on any sequence of sheets, however split into group commits and submits and
        // whichever writes fail, the township decides duplicate, conflict, superseded and new
        // exactly as the core `Ledger` (which the county applies) does when it is handed the
        // same sheets one by one; a failed write changes nothing; and the township's counted
        // sheets are the ledger's.
        // Method: the book decides each sheet against itself and the sheets decided before it
        // in the same submit and group (as `township::decide_job` does), and takes a group's
        // stored sheets in after its write (as `commit_group` does); a reference `Ledger` is
        // handed every sheet in the same order, and put back as it was when a write fails.
        #[test]
        fn book_decides_as_the_ledger(groups in prop::collection::vec(group(), 1..12)) {
            let mut book = Book::rebuild(Loaded::default()).unwrap();
            let mut reference = Ledger::new();
            for (submits, write_fails) in groups {
                let before = reference.clone();
                let mut group_pending = Pending::default();
                let mut stored = Vec::new();
                for submit in submits {
                    let mut pending = Pending::default();
                    for spec in submit {
                        let (sheet, digest) = sheet(spec);
                        let decision = book.decide(&[&group_pending, &pending], &sheet, &digest);
                        let expected = as_decision(reference.submit(sheet.clone(), digest));
                        prop_assert_eq!(decision, expected, "sheet {:?}", spec);
                        if matches!(decision, Decision::New | Decision::Superseded { .. }) {
                            pending.add(&sheet, digest);
                            stored.push((sheet, digest));
                        }
                    }
                    group_pending.merge(pending);
                }
                if write_fails {
                    // Nothing of the group reached the disk, so nothing reaches the book: the
                    // same sheets sent again are decided afresh.
                    reference = before;
                    continue;
                }
                for (sheet, digest) in stored {
                    let record = SheetRecord {
                        seq: book.next_seq,
                        unit: sheet.unit.to_string(),
                        contest: sheet.contest.to_string(),
                        round: sheet.round.0,
                        version: sheet.version,
                        received_unix_ms: 0,
                        source: String::new(),
                        warnings: Vec::new(),
                        county: None,
                    };
                    book.next_seq += 1;
                    book.ledger.submit(sheet, digest);
                    book.records.insert(digest, record);
                }
            }
            let counted: Vec<&TallySheet> = book.ledger.counted().collect();
            let expected: Vec<&TallySheet> = reference.counted().collect();
            prop_assert_eq!(counted, expected);
            prop_assert_eq!(book.ledger.recorded_len(), reference.recorded_len());
        }
    }
}
