//! The township's database: one redb file (`township.redb`) in its data directory, holding
//! every sheet it stored, the outbox, the county's answers and the notes the picture shows.
//!
//! # Tables
//! - `envelopes`: digest (32 bytes) → the signed envelope exactly as the unit signed it
//!   (`tally_proto::encode_signed`), so what is forwarded is byte for byte what arrived.
//! - `records`: digest → [`SheetRecord`] (JSON): arrival number, slot, version, when and from
//!   where it arrived, its warnings, and the county's outcome once there is one.
//! - `slots`: `unit/contest/round/version` → digest: which sheet holds each version of a slot.
//! - `outbox`: arrival number → digest: the sheets not yet answered by the county, oldest
//!   first.
//! - `notes`: note number → [`Note`] (JSON): sheets refused here or by the county, and
//!   conflicting sheets; per sender ([`Note::sender`]) the newest
//!   [`UNIT_REFUSALS_KEPT_MAX`] refusals and [`UNIT_CONFLICTS_KEPT_MAX`] conflicts are kept.
//! - `meta`: `schema_version` (decimal text, [`SCHEMA_VERSION`]) and `township_id` (both
//!   written when the directory is made, checked on every open), `next_seq`, `next_note`,
//!   `county` (the [`CountyLink`] after the last answer), and `notes_dropped` (per sender, how
//!   many notes were dropped for the caps: JSON).
//!
//! # Schema version
//! `schema_version` names the layout above. A database of a newer version than this binary
//! knows is refused at open, naming the file and both versions. A database without one was
//! made by the release before versions were recorded, whose layout is version 1: it is read as
//! version 1, and the version is written.
//!
//! # Durability
//! Every write is one transaction committed with `Durability::Immediate` (one fsync): a group
//! of submits ([`Store::write_group`]) or one county answer ([`Store::record_county`]). A sheet
//! and its outbox entry are written in the same transaction, and a county answer's outcomes
//! are written in the same transaction that takes the sheets out of the outbox, so a crash
//! leaves either both or neither. A crash after the county recorded a batch but before
//! [`Store::record_county`] committed leaves the batch in the outbox; it is sent again and the
//! county answers DUPLICATE.
//!
//! The store keeps no policy: what is a duplicate, a conflict or over capacity is decided by
//! the caller ([`crate::book`]), which holds the same facts in memory.

use crate::error::Error;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use tally_core::ids::TownshipId;
use tally_proto::SignedSheet;

/// SHA-256 of a sheet's exact signed bytes: the name of a sheet everywhere.
pub type Digest = [u8; 32];

const ENVELOPES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("envelopes");
const RECORDS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("records");
const SLOTS: TableDefinition<&str, &[u8]> = TableDefinition::new("slots");
const OUTBOX: TableDefinition<u64, &[u8]> = TableDefinition::new("outbox");
const NOTES: TableDefinition<u64, &[u8]> = TableDefinition::new("notes");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

const META_TOWNSHIP_ID: &str = "township_id";
const META_NEXT_SEQ: &str = "next_seq";
const META_NEXT_NOTE: &str = "next_note";
const META_COUNTY: &str = "county";
const META_SCHEMA_VERSION: &str = "schema_version";
const META_NOTES_DROPPED: &str = "notes_dropped";

/// The version of the table layout this binary reads and writes. A database without one is
/// version 1, the layout of the release before versions were kept.
pub const SCHEMA_VERSION: u32 = 1;

/// The database file inside a township's data directory.
pub const DATABASE_FILE: &str = "township.redb";
/// The county replica's database file; a data directory holding one is not a township's.
pub(crate) const COUNTY_DATABASE_FILE: &str = "county.redb";
/// Refusals kept per sender ([`Note::sender`]); older ones are dropped (and counted) as new
/// ones arrive. Per sender, so one unit sending a bad sheet over and over (16 calls of 64
/// copies) fills only its own list and pushes out no other unit's refusals; a bound, so it
/// cannot grow the database either. The picture says how many more each sender had.
pub const UNIT_REFUSALS_KEPT_MAX: usize = 16;
/// Conflicts kept per sender, in a list of their own, so refusals never push one out.
pub const UNIT_CONFLICTS_KEPT_MAX: usize = 16;

/// What the township knows about one stored sheet, beside its envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SheetRecord {
    /// Arrival number: the order sheets were stored in, and their outbox key.
    pub seq: u64,
    pub unit: String,
    pub contest: String,
    pub round: u32,
    pub version: u32,
    pub received_unix_ms: u64,
    /// Who sent it and how: `submit by village:T01-U003`, `import by township:T01 from x.sheets`.
    pub source: String,
    /// The warnings it was accepted with, `W303 ballots_collected: ...` each.
    pub warnings: Vec<String>,
    /// The county's answer, once it has one.
    pub county: Option<CountyOutcome>,
}

/// The county's answer for one forwarded sheet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CountyOutcome {
    /// `accepted`, `duplicate`, `superseded`, `conflict` or `refused`.
    pub kind: String,
    /// The refusal's code (`E204`, `conflict`), empty otherwise.
    pub code: String,
    pub message: String,
    pub unix_ms: u64,
}

/// A sheet refused here or by the county, or a conflicting sheet: what the picture lists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Note {
    /// The sheet's unit, contest, round and version as it claims them (a refused sheet's
    /// claims are unverified; empty when it does not even decode).
    pub unit: String,
    pub contest: String,
    pub round: u32,
    pub version: u32,
    /// Hex SHA-256 of the sheet bytes.
    pub digest: String,
    /// `township` or `county`.
    pub refused_by: String,
    /// `E204`, `E210`, `conflict`, ...
    pub code: String,
    pub messages: Vec<String>,
    pub received_unix_ms: u64,
    /// Whom the note is kept against for the per-sender caps: the polling unit whose
    /// certificate sent the sheet (Submit), else the sheet's unit when it is one of this
    /// township's (an import, a county answer), else empty (no unit of this township).
    /// Absent in notes written before the caps: then the note's unit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
}

impl Note {
    /// The sender the note is kept against (see [`Note::from`]).
    pub fn sender(&self) -> &str {
        self.from.as_deref().unwrap_or(&self.unit)
    }

    /// Whether the note is a conflicting sheet (kept apart from refusals).
    pub fn is_conflict(&self) -> bool {
        self.code == "conflict"
    }
}

/// How many notes of one sender were dropped for the caps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotesDropped {
    pub refusals: u64,
    pub conflicts: u64,
}

/// The township's link to the county after the last answer, kept across restarts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CountyLink {
    pub last_success_unix_ms: u64,
    /// The replica that answered last (the leader then).
    pub leader_id: u64,
    /// The county's log index and chain head (hex) after the last batch it recorded.
    pub log_index: u64,
    pub chain_head: String,
}

/// One stored sheet, as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSheet {
    pub digest: Digest,
    pub signed: SignedSheet,
    pub record: SheetRecord,
}

/// Everything in the database, read when it is opened.
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    /// Every stored sheet, in arrival order.
    pub sheets: Vec<StoredSheet>,
    /// The outbox, oldest first: arrival number and digest.
    pub outbox: Vec<(u64, Digest)>,
    /// Notes with their numbers, oldest first.
    pub notes: Vec<(u64, Note)>,
    /// Per sender, the notes dropped for the caps.
    pub notes_dropped: std::collections::BTreeMap<String, NotesDropped>,
    pub link: CountyLink,
    pub next_seq: u64,
    pub next_note: u64,
}

/// The sheets and notes of one group of submits, written in one transaction.
#[derive(Debug, Default)]
pub struct GroupWrite {
    pub sheets: Vec<StoredSheet>,
    /// Note number and note.
    pub notes: Vec<(u64, Note)>,
    pub next_seq: u64,
    pub next_note: u64,
}

/// One county answer, written in one transaction.
#[derive(Debug, Default)]
pub struct CountyWrite {
    /// Each answered sheet: its arrival number (its outbox key), digest and outcome.
    pub answered: Vec<(u64, Digest, CountyOutcome)>,
    pub notes: Vec<(u64, Note)>,
    pub next_note: u64,
    pub link: CountyLink,
}

fn db(error: impl Into<redb::Error>) -> Error {
    Error::Database(error.into())
}

fn corrupt(what: impl Into<String>, problem: impl ToString) -> Error {
    Error::Corrupt {
        what: what.into(),
        problem: problem.to_string(),
    }
}

fn decode_u64(what: &str, bytes: &[u8]) -> Result<u64, Error> {
    let bytes: [u8; 8] = bytes
        .try_into()
        .map_err(|_| corrupt(what, format!("is {} bytes, not 8", bytes.len())))?;
    Ok(u64::from_be_bytes(bytes))
}

fn to_json(value: &impl Serialize) -> Vec<u8> {
    // Plain structs of strings and integers always serialize.
    serde_json::to_vec(value).expect("records of strings and integers serialize")
}

fn digest_of(what: &str, bytes: &[u8]) -> Result<Digest, Error> {
    bytes
        .try_into()
        .map_err(|_| corrupt(what, format!("a key of {} bytes, not 32", bytes.len())))
}

/// The `slots` key: ids hold no `/` (ASCII letters, digits, `-`, `_`, `.`), so it is
/// unambiguous, and the zero-padded numbers sort versions in order.
pub fn slot_key(unit: &str, contest: &str, round: u32, version: u32) -> String {
    format!("{unit}/{contest}/{round:010}/{version:010}")
}

/// The township's database. Writes are serialized by redb (one write transaction at a time).
pub struct Store {
    database: Database,
    dir: PathBuf,
}

impl Store {
    /// Opens the database in `dir` (creating both if needed) for `township`, and reads
    /// everything in it. A directory made for another township, or a county replica's, is an
    /// error that says so.
    pub fn open(dir: &Path, township: &TownshipId) -> Result<(Store, Loaded), Error> {
        if dir.join(COUNTY_DATABASE_FILE).exists() {
            return Err(Error::CountyDirectory {
                dir: dir.to_owned(),
                database: COUNTY_DATABASE_FILE,
            });
        }
        std::fs::create_dir_all(dir).map_err(|source| Error::Io {
            path: dir.to_owned(),
            source,
        })?;
        let path = dir.join(DATABASE_FILE);
        let database = Database::create(&path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => Error::InUse { path: path.clone() },
            e => db(e),
        })?;
        let store = Store {
            database,
            dir: dir.to_owned(),
        };
        let txn = store.begin_write()?;
        {
            // Opening each table in a write transaction creates it, so reads always find all.
            for table in [ENVELOPES, RECORDS] {
                txn.open_table(table).map_err(db)?;
            }
            txn.open_table(SLOTS).map_err(db)?;
            txn.open_table(OUTBOX).map_err(db)?;
            txn.open_table(NOTES).map_err(db)?;
            let mut meta = txn.open_table(META).map_err(db)?;
            let stored_version = match meta.get(META_SCHEMA_VERSION).map_err(db)? {
                Some(v) => Some(
                    std::str::from_utf8(v.value())
                        .ok()
                        .and_then(|text| text.parse::<u32>().ok())
                        .ok_or_else(|| corrupt("schema version", "is not a number"))?,
                ),
                None => None,
            };
            match stored_version {
                Some(stored) if stored > SCHEMA_VERSION => {
                    return Err(Error::SchemaTooNew {
                        path: path.clone(),
                        stored,
                        supported: SCHEMA_VERSION,
                    });
                }
                Some(_) => {}
                // New, or made by the release before versions were recorded, whose layout is
                // version 1 (this binary's). A binary with a later version must migrate an
                // unversioned database from version 1.
                None => {
                    meta.insert(META_SCHEMA_VERSION, SCHEMA_VERSION.to_string().as_bytes())
                        .map_err(db)?;
                }
            }
            let stored = meta
                .get(META_TOWNSHIP_ID)
                .map_err(db)?
                .map(|v| String::from_utf8_lossy(v.value()).into_owned());
            match stored {
                Some(stored) if stored != township.as_str() => {
                    return Err(Error::OtherTownship {
                        dir: dir.to_owned(),
                        stored,
                        township: township.to_string(),
                    });
                }
                Some(_) => {}
                None => {
                    meta.insert(META_TOWNSHIP_ID, township.as_str().as_bytes())
                        .map_err(db)?;
                }
            }
        }
        txn.commit().map_err(db)?;
        let loaded = store.load()?;
        Ok((store, loaded))
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn begin_write(&self) -> Result<redb::WriteTransaction, Error> {
        let mut txn = self.database.begin_write().map_err(db)?;
        txn.set_durability(Durability::Immediate).map_err(db)?;
        Ok(txn)
    }

    /// Reads everything: the sheets in arrival order, the outbox, the notes, the county link.
    pub fn load(&self) -> Result<Loaded, Error> {
        let txn = self.database.begin_read().map_err(db)?;
        let envelopes = txn.open_table(ENVELOPES).map_err(db)?;
        let records = txn.open_table(RECORDS).map_err(db)?;
        let outbox_table = txn.open_table(OUTBOX).map_err(db)?;
        let notes_table = txn.open_table(NOTES).map_err(db)?;
        let meta = txn.open_table(META).map_err(db)?;

        let mut sheets = Vec::new();
        for row in records.iter().map_err(db)? {
            let (key, value) = row.map_err(db)?;
            let digest = digest_of("sheet record", key.value())?;
            let what = || format!("record of sheet {}", hex::encode(digest));
            let record: SheetRecord =
                serde_json::from_slice(value.value()).map_err(|e| corrupt(what(), e))?;
            let envelope = envelopes
                .get(digest.as_slice())
                .map_err(db)?
                .ok_or_else(|| corrupt(what(), "has no envelope"))?;
            let signed = tally_proto::decode_signed(envelope.value())
                .map_err(|e| corrupt(format!("envelope of sheet {}", hex::encode(digest)), e))?;
            if signed.digest() != digest {
                return Err(corrupt(
                    format!("envelope of sheet {}", hex::encode(digest)),
                    "does not hash to its key",
                ));
            }
            sheets.push(StoredSheet {
                digest,
                signed,
                record,
            });
        }
        sheets.sort_by_key(|s| s.record.seq);

        let mut outbox = Vec::new();
        for row in outbox_table.iter().map_err(db)? {
            let (key, value) = row.map_err(db)?;
            outbox.push((key.value(), digest_of("outbox entry", value.value())?));
        }
        let mut notes = Vec::new();
        let mut last_note = None;
        for row in notes_table.iter().map_err(db)? {
            let (key, value) = row.map_err(db)?;
            last_note = Some(key.value());
            notes.push((
                key.value(),
                serde_json::from_slice(value.value())
                    .map_err(|e| corrupt(format!("note {}", key.value()), e))?,
            ));
        }
        let read_u64 = |name: &str| -> Result<u64, Error> {
            match meta.get(name).map_err(db)? {
                Some(v) => decode_u64(name, v.value()),
                None => Ok(0),
            }
        };
        let link = match meta.get(META_COUNTY).map_err(db)? {
            Some(v) => serde_json::from_slice(v.value()).map_err(|e| corrupt("county link", e))?,
            None => CountyLink::default(),
        };
        let notes_dropped = match meta.get(META_NOTES_DROPPED).map_err(db)? {
            Some(v) => {
                serde_json::from_slice(v.value()).map_err(|e| corrupt("notes dropped", e))?
            }
            None => Default::default(),
        };
        // Numbers are handed out before a write commits and two transactions (a group of
        // submits, a county answer) each store the counter they saw, so the stored counter may
        // lag the highest number in use; the next number is past both.
        let next_seq = read_u64(META_NEXT_SEQ)?.max(sheets.last().map_or(0, |s| s.record.seq + 1));
        let next_note = read_u64(META_NEXT_NOTE)?.max(last_note.map_or(0, |n| n + 1));
        Ok(Loaded {
            sheets,
            outbox,
            notes,
            notes_dropped,
            link,
            next_seq,
            next_note,
        })
    }

    /// Writes a group of submits in one transaction with one fsync: each new sheet (envelope,
    /// record, slot, outbox entry) and each note.
    pub fn write_group(&self, group: &GroupWrite) -> Result<(), Error> {
        let txn = self.begin_write()?;
        {
            let mut envelopes = txn.open_table(ENVELOPES).map_err(db)?;
            let mut records = txn.open_table(RECORDS).map_err(db)?;
            let mut slots = txn.open_table(SLOTS).map_err(db)?;
            let mut outbox = txn.open_table(OUTBOX).map_err(db)?;
            for sheet in &group.sheets {
                let r = &sheet.record;
                let digest = sheet.digest.as_slice();
                envelopes
                    .insert(digest, tally_proto::encode_signed(&sheet.signed).as_slice())
                    .map_err(db)?;
                records.insert(digest, to_json(r).as_slice()).map_err(db)?;
                slots
                    .insert(
                        slot_key(&r.unit, &r.contest, r.round, r.version).as_str(),
                        digest,
                    )
                    .map_err(db)?;
                outbox.insert(r.seq, digest).map_err(db)?;
            }
            let mut notes = txn.open_table(NOTES).map_err(db)?;
            let mut meta = txn.open_table(META).map_err(db)?;
            write_notes(&mut notes, &mut meta, &group.notes)?;
            meta.insert(META_NEXT_SEQ, group.next_seq.to_be_bytes().as_slice())
                .map_err(db)?;
            meta.insert(META_NEXT_NOTE, group.next_note.to_be_bytes().as_slice())
                .map_err(db)?;
        }
        txn.commit().map_err(db)
    }

    /// The envelopes of these sheets, in the order given.
    pub fn envelopes(&self, digests: &[Digest]) -> Result<Vec<SignedSheet>, Error> {
        let txn = self.database.begin_read().map_err(db)?;
        let envelopes = txn.open_table(ENVELOPES).map_err(db)?;
        digests
            .iter()
            .map(|digest| {
                let what = || format!("envelope of sheet {}", hex::encode(digest));
                let value = envelopes
                    .get(digest.as_slice())
                    .map_err(db)?
                    .ok_or_else(|| corrupt(what(), "is missing"))?;
                tally_proto::decode_signed(value.value()).map_err(|e| corrupt(what(), e))
            })
            .collect()
    }

    /// Records the county's answer to one batch in one transaction with one fsync: each
    /// sheet's outcome, its removal from the outbox, the notes, and the county link.
    pub fn record_county(&self, write: &CountyWrite) -> Result<(), Error> {
        let txn = self.begin_write()?;
        {
            let mut records = txn.open_table(RECORDS).map_err(db)?;
            let mut outbox = txn.open_table(OUTBOX).map_err(db)?;
            for (seq, digest, outcome) in &write.answered {
                let what = || format!("record of sheet {}", hex::encode(digest));
                let mut record: SheetRecord = {
                    let value = records
                        .get(digest.as_slice())
                        .map_err(db)?
                        .ok_or_else(|| corrupt(what(), "is missing"))?;
                    serde_json::from_slice(value.value()).map_err(|e| corrupt(what(), e))?
                };
                record.county = Some(outcome.clone());
                records
                    .insert(digest.as_slice(), to_json(&record).as_slice())
                    .map_err(db)?;
                outbox.remove(*seq).map_err(db)?;
            }
            let mut notes = txn.open_table(NOTES).map_err(db)?;
            let mut meta = txn.open_table(META).map_err(db)?;
            write_notes(&mut notes, &mut meta, &write.notes)?;
            meta.insert(META_NEXT_NOTE, write.next_note.to_be_bytes().as_slice())
                .map_err(db)?;
            meta.insert(META_COUNTY, to_json(&write.link).as_slice())
                .map_err(db)?;
        }
        txn.commit().map_err(db)
    }

    /// The digest stored under a slot and version, if any (for checks and tests; the service
    /// decides from memory).
    pub fn slot(
        &self,
        unit: &str,
        contest: &str,
        round: u32,
        version: u32,
    ) -> Result<Option<Digest>, Error> {
        let txn = self.database.begin_read().map_err(db)?;
        let slots = txn.open_table(SLOTS).map_err(db)?;
        slots
            .get(slot_key(unit, contest, round, version).as_str())
            .map_err(db)?
            .map(|v| digest_of("slot entry", v.value()))
            .transpose()
    }
}

/// Inserts notes, then for each sender and list the notes touched, drops the oldest past
/// [`UNIT_REFUSALS_KEPT_MAX`] or [`UNIT_CONFLICTS_KEPT_MAX`] and adds them to the sender's
/// count in `meta`. Decided here, inside the transaction, from what the table holds, so the
/// two writers of notes (submits, county answers) cannot undo each other's pruning.
fn write_notes(
    table: &mut redb::Table<u64, &[u8]>,
    meta: &mut redb::Table<&str, &[u8]>,
    notes: &[(u64, Note)],
) -> Result<(), Error> {
    use std::collections::{BTreeMap, BTreeSet};
    if notes.is_empty() {
        return Ok(());
    }
    for (seq, note) in notes {
        table.insert(*seq, to_json(note).as_slice()).map_err(db)?;
    }
    let touched: BTreeSet<(String, bool)> = notes
        .iter()
        .map(|(_, n)| (n.sender().to_owned(), n.is_conflict()))
        .collect();
    // The table holds at most the caps per sender (plus this write's notes), so reading it
    // whole is bounded.
    let mut lists: BTreeMap<(String, bool), Vec<u64>> = BTreeMap::new();
    for row in table.iter().map_err(db)? {
        let (key, value) = row.map_err(db)?;
        let note: Note = serde_json::from_slice(value.value())
            .map_err(|e| corrupt(format!("note {}", key.value()), e))?;
        let list = (note.sender().to_owned(), note.is_conflict());
        if touched.contains(&list) {
            lists.entry(list).or_default().push(key.value());
        }
    }
    let mut dropped: BTreeMap<String, NotesDropped> = match meta
        .get(META_NOTES_DROPPED)
        .map_err(db)?
    {
        Some(v) => serde_json::from_slice(v.value()).map_err(|e| corrupt("notes dropped", e))?,
        None => BTreeMap::new(),
    };
    let mut changed = false;
    for ((sender, conflict), numbers) in lists {
        let kept_max = if conflict {
            UNIT_CONFLICTS_KEPT_MAX
        } else {
            UNIT_REFUSALS_KEPT_MAX
        };
        // The table iterates in key order, so the first numbers are the oldest.
        let excess = numbers.len().saturating_sub(kept_max);
        for seq in &numbers[..excess] {
            table.remove(*seq).map_err(db)?;
        }
        if excess > 0 {
            let count = dropped.entry(sender).or_default();
            if conflict {
                count.conflicts += excess as u64;
            } else {
                count.refusals += excess as u64;
            }
            changed = true;
        }
    }
    if changed {
        meta.insert(META_NOTES_DROPPED, to_json(&dropped).as_slice())
            .map_err(db)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sets (or, with `None`, removes) the stored schema version of the database in `dir`, as
    /// another release would have left it.
    fn set_stored_version(dir: &Path, version: Option<&str>) {
        let database = Database::create(dir.join(DATABASE_FILE)).unwrap();
        let txn = database.begin_write().unwrap();
        {
            let mut meta = txn.open_table(META).unwrap();
            match version {
                Some(v) => meta.insert(META_SCHEMA_VERSION, v.as_bytes()).unwrap(),
                None => meta.remove(META_SCHEMA_VERSION).unwrap(),
            };
        }
        txn.commit().unwrap();
    }

    fn stored_version(dir: &Path) -> Option<String> {
        let database = Database::create(dir.join(DATABASE_FILE)).unwrap();
        let txn = database.begin_read().unwrap();
        let meta = txn.open_table(META).unwrap();
        meta.get(META_SCHEMA_VERSION)
            .unwrap()
            .map(|v| String::from_utf8(v.value().to_vec()).unwrap())
    }

    // Goal: the township database records its schema version; one written by a newer release
    // is refused naming the file, both versions and what to do, and left as it was; one made
    // before versions were recorded opens as version 1 and is stamped so.
    // Method: open a new store and read the stamp; set it one past this binary's and reopen;
    // remove it and reopen.
    #[test]
    fn schema_version_is_written_checked_and_defaults_to_one() {
        let dir = tempfile::tempdir().unwrap();
        let township = TownshipId::new("T01");
        drop(Store::open(dir.path(), &township).unwrap());
        assert_eq!(stored_version(dir.path()), Some(SCHEMA_VERSION.to_string()));

        let newer = (SCHEMA_VERSION + 1).to_string();
        set_stored_version(dir.path(), Some(&newer));
        let err = Store::open(dir.path(), &township).err().unwrap();
        assert!(matches!(err, Error::SchemaTooNew { .. }), "{err}");
        let message = err.to_string();
        for part in [
            dir.path().join(DATABASE_FILE).display().to_string(),
            format!("township schema version {newer}"),
            format!("reads up to version {SCHEMA_VERSION}"),
            "run the tally release that wrote it".to_owned(),
        ] {
            assert!(message.contains(&part), "{message} lacks {part:?}");
        }
        assert_eq!(stored_version(dir.path()), Some(newer));

        set_stored_version(dir.path(), None);
        let (store, loaded) = Store::open(dir.path(), &township).unwrap();
        assert!(loaded.sheets.is_empty());
        drop(store);
        assert_eq!(stored_version(dir.path()), Some("1".to_owned()));
    }
}
