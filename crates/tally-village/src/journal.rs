//! The polling unit's journal: every sheet this unit signed or was given to submit, its exact
//! signed bytes, and what became of it. One redb database, `journal.redb`, in the journal
//! folder.
//!
//! # Tables
//! - `envelopes`: sequence number (1, 2, ... in the order journaled) → the envelope exactly as
//!   sent ([`tally_proto::encode_signed`]); never changed once written.
//! - `records`: sequence number → [`Record`] as JSON: slot, version, digest, state, times.
//! - `digests`: SHA-256 of the sheet bytes → sequence number, so the same sheet is journaled
//!   once however often it is submitted.
//! - `meta`: `schema_version` ([`SCHEMA_VERSION`]) and `unit_id`, so a journal folder is never
//!   used by another unit.
//!
//! # Schema version
//! `schema_version` names the layout above, written when the journal is made and checked at
//! every open: a journal of a newer version than this binary knows is refused, naming the file
//! and both versions. A journal without one was made by the release before versions were
//! recorded, whose layout is version 1: it is read as version 1, and the version is written.
//!
//! # Why nothing is lost and nothing counts twice
//! A sheet is journaled `pending` in a transaction committed with `Durability::Immediate`
//! (fsynced) before its first byte goes to the township. Whatever happens next (the process
//! is killed, the link drops, the township answers but the answer is lost), the next
//! `submit` finds it pending and sends the very same bytes again. The township identifies a
//! sheet by the digest of those bytes, so a sheet it already stored is answered DUPLICATE and
//! counted once. The answer is recorded in another fsynced transaction.

use crate::error::{Error, Result};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use tally_core::ids::UnitId;
use tally_proto::SignedSheet;

/// The database file inside the journal folder.
pub const JOURNAL_FILE: &str = "journal.redb";

/// The most sheets one unit's journal holds: a unit reports a handful of contests, a few
/// rounds and a few corrections each, so this is far above any real night.
pub const JOURNAL_SHEETS_MAX: u64 = 10_000;

const ENVELOPES: TableDefinition<u64, &[u8]> = TableDefinition::new("envelopes");
const RECORDS: TableDefinition<u64, &str> = TableDefinition::new("records");
const DIGESTS: TableDefinition<&[u8], u64> = TableDefinition::new("digests");
const META: TableDefinition<&str, &str> = TableDefinition::new("meta");
const META_UNIT_ID: &str = "unit_id";
const META_SCHEMA_VERSION: &str = "schema_version";

/// The version of the journal's table layout this binary reads and writes. A journal without
/// one is version 1, the layout of the release before versions were kept.
pub const SCHEMA_VERSION: u32 = 1;

/// Where a journaled sheet stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum State {
    /// Journaled, not yet answered by the township: sent again by the next `submit`.
    Pending,
    /// Stored by the township: `outcome` is ACCEPTED, DUPLICATE or SUPERSEDED.
    Delivered { outcome: String },
    /// Not stored by the township: CONFLICT, or REFUSED with its code (E1xx, E2xx).
    Refused {
        outcome: String,
        code: String,
        message: String,
    },
}

impl State {
    pub fn is_pending(&self) -> bool {
        matches!(self, State::Pending)
    }

    /// One word or two for a table: `pending`, `delivered ACCEPTED`, `refused E104`.
    pub fn short(&self) -> String {
        match self {
            State::Pending => "pending".into(),
            State::Delivered { outcome } => format!("delivered {outcome}"),
            State::Refused { outcome, code, .. } if code.is_empty() => {
                format!("refused {outcome}")
            }
            State::Refused { code, .. } => format!("refused {code}"),
        }
    }
}

/// What the journal knows of one sheet besides its bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub contest: String,
    pub round: u32,
    pub version: u32,
    pub replaces_version: Option<u32>,
    /// Hex SHA-256 of the signed sheet bytes.
    pub digest: String,
    /// Where it came from: the file submitted, or `correct FILE`.
    pub source: String,
    pub journaled_unix_ms: u64,
    #[serde(flatten)]
    pub state: State,
    /// Calls to the township that carried this sheet.
    pub attempts: u32,
    pub last_attempt_unix_ms: Option<u64>,
    /// When the township's answer was recorded.
    pub answered_unix_ms: Option<u64>,
    /// Warnings (W3xx) the township stored it with.
    #[serde(default)]
    pub warnings: Vec<String>,
}

/// One journaled sheet.
#[derive(Debug, Clone)]
pub struct Entry {
    pub seq: u64,
    pub signed: SignedSheet,
    pub record: Record,
}

impl Entry {
    /// `contest XH-C01, round 1, version 2`.
    pub fn label(&self) -> String {
        format!(
            "contest {}, round {}, version {}",
            self.record.contest, self.record.round, self.record.version
        )
    }
}

/// The open journal. Holding it holds redb's lock on the file, so two `tally village` runs
/// of one unit never send from the same journal at once.
pub struct Journal {
    database: Database,
    path: PathBuf,
}

fn db(path: &Path, e: impl Into<redb::Error>) -> Error {
    Error::Database {
        path: path.to_path_buf(),
        cause: e.into(),
    }
}

/// The [`Error::Json`] of doing `what` to a record, for `map_err`.
fn json_error(what: &str) -> impl FnOnce(serde_json::Error) -> Error {
    move |cause| Error::Json {
        what: what.to_owned(),
        cause,
    }
}

impl Journal {
    /// Opens (or creates) the journal in `dir` for `unit`. A journal made for another unit is
    /// refused, naming both.
    pub fn open(dir: &Path, unit: &UnitId) -> Result<Journal> {
        std::fs::create_dir_all(dir).map_err(Error::io(format!(
            "cannot create the journal folder {}",
            dir.display()
        )))?;
        let path = dir.join(JOURNAL_FILE);
        let database = Database::create(&path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => Error::JournalInUse { path: path.clone() },
            e => db(&path, e),
        })?;
        let journal = Journal { database, path };
        let txn = journal.begin_write()?;
        {
            // Opening each table in a write transaction creates it, so reads find them all.
            txn.open_table(ENVELOPES)
                .map_err(|e| db(&journal.path, e))?;
            txn.open_table(RECORDS).map_err(|e| db(&journal.path, e))?;
            txn.open_table(DIGESTS).map_err(|e| db(&journal.path, e))?;
            let mut meta = txn.open_table(META).map_err(|e| db(&journal.path, e))?;
            let stored_version = meta
                .get(META_SCHEMA_VERSION)
                .map_err(|e| db(&journal.path, e))?
                .map(|v| v.value().to_owned());
            match stored_version {
                Some(text) => {
                    let stored: u32 = text.parse().map_err(|_| {
                        Error::JournalDamaged(format!(
                            "the journal {} is damaged: its schema version {text:?} is not a number",
                            journal.path.display()
                        ))
                    })?;
                    if stored > SCHEMA_VERSION {
                        return Err(Error::JournalTooNew {
                            path: journal.path.clone(),
                            stored,
                            supported: SCHEMA_VERSION,
                        });
                    }
                }
                // New, or made by the release before versions were recorded, whose layout is
                // version 1 (this binary's). A binary with a later version must migrate an
                // unversioned journal from version 1.
                None => {
                    meta.insert(META_SCHEMA_VERSION, SCHEMA_VERSION.to_string().as_str())
                        .map_err(|e| db(&journal.path, e))?;
                }
            }
            let stored = meta
                .get(META_UNIT_ID)
                .map_err(|e| db(&journal.path, e))?
                .map(|v| v.value().to_owned());
            match stored {
                Some(stored) if stored != unit.as_str() => {
                    return Err(Error::JournalOfAnotherUnit {
                        path: journal.path.clone(),
                        stored,
                        unit: unit.to_string(),
                    });
                }
                Some(_) => {}
                None => {
                    meta.insert(META_UNIT_ID, unit.as_str())
                        .map_err(|e| db(&journal.path, e))?;
                }
            }
        }
        txn.commit().map_err(|e| db(&journal.path, e))?;
        Ok(journal)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A write transaction that is fsynced when it commits.
    fn begin_write(&self) -> Result<redb::WriteTransaction> {
        let mut txn = self.database.begin_write().map_err(|e| db(&self.path, e))?;
        txn.set_durability(Durability::Immediate)
            .map_err(|e| db(&self.path, e))?;
        Ok(txn)
    }

    /// Every journaled sheet, in the order journaled. Each envelope is checked against its
    /// record's digest, so a damaged file is named rather than sent.
    pub fn entries(&self) -> Result<Vec<Entry>> {
        let txn = self.database.begin_read().map_err(|e| db(&self.path, e))?;
        let envelopes = txn.open_table(ENVELOPES).map_err(|e| db(&self.path, e))?;
        let records = txn.open_table(RECORDS).map_err(|e| db(&self.path, e))?;
        let mut out = Vec::new();
        for row in records.iter().map_err(|e| db(&self.path, e))? {
            let (seq, record) = row.map_err(|e| db(&self.path, e))?;
            let seq = seq.value();
            let record: Record =
                serde_json::from_str(record.value()).map_err(|cause| Error::Json {
                    what: format!(
                        "the journal {}: record {seq} is damaged",
                        self.path.display()
                    ),
                    cause,
                })?;
            let envelope = envelopes
                .get(seq)
                .map_err(|e| db(&self.path, e))?
                .ok_or_else(|| {
                    Error::JournalDamaged(format!(
                        "the journal {}: sheet {seq} has no envelope",
                        self.path.display()
                    ))
                })?;
            let signed = tally_proto::decode_signed(envelope.value()).map_err(|e| {
                Error::JournalDamaged(format!(
                    "the journal {}: sheet {seq} is damaged: {e}",
                    self.path.display()
                ))
            })?;
            if hex::encode(signed.digest()) != record.digest {
                return Err(Error::JournalDamaged(format!(
                    "the journal {}: sheet {seq} ({}, round {}, version {}) does not match its digest; the file is damaged",
                    self.path.display(),
                    record.contest,
                    record.round,
                    record.version
                )));
            }
            out.push(Entry {
                seq,
                signed,
                record,
            });
        }
        Ok(out)
    }

    /// Journals new sheets as one fsynced transaction and returns their sequence numbers. A
    /// sheet already journaled (same digest) is a programming error: callers look first.
    pub fn append(&self, sheets: &[(SignedSheet, Record)]) -> Result<Vec<u64>> {
        let txn = self.begin_write()?;
        let mut seqs = Vec::new();
        {
            let mut envelopes = txn.open_table(ENVELOPES).map_err(|e| db(&self.path, e))?;
            let mut records = txn.open_table(RECORDS).map_err(|e| db(&self.path, e))?;
            let mut digests = txn.open_table(DIGESTS).map_err(|e| db(&self.path, e))?;
            let first = match records.last().map_err(|e| db(&self.path, e))? {
                Some((seq, _)) => seq.value() + 1,
                None => 1,
            };
            for (next, (signed, record)) in (first..).zip(sheets) {
                if next > JOURNAL_SHEETS_MAX {
                    return Err(Error::JournalFull {
                        path: self.path.clone(),
                        max: JOURNAL_SHEETS_MAX,
                    });
                }
                let digest = signed.digest();
                assert_eq!(
                    hex::encode(digest),
                    record.digest,
                    "a record names its own sheet"
                );
                assert!(
                    digests
                        .get(digest.as_slice())
                        .map_err(|e| db(&self.path, e))?
                        .is_none(),
                    "a sheet is journaled once"
                );
                let json = serde_json::to_string(record)
                    .map_err(json_error("encoding a journal record"))?;
                envelopes
                    .insert(next, tally_proto::encode_signed(signed).as_slice())
                    .map_err(|e| db(&self.path, e))?;
                records
                    .insert(next, json.as_str())
                    .map_err(|e| db(&self.path, e))?;
                digests
                    .insert(digest.as_slice(), next)
                    .map_err(|e| db(&self.path, e))?;
                seqs.push(next);
            }
        }
        txn.commit().map_err(|e| db(&self.path, e))?;
        Ok(seqs)
    }

    /// Replaces the records of journaled sheets (their state, attempts, answer), as one
    /// fsynced transaction. The envelopes never change.
    pub fn update(&self, updates: &[(u64, Record)]) -> Result<()> {
        if updates.is_empty() {
            return Ok(());
        }
        let txn = self.begin_write()?;
        {
            let mut records = txn.open_table(RECORDS).map_err(|e| db(&self.path, e))?;
            for (seq, record) in updates {
                let old: Record = {
                    let old = records
                        .get(*seq)
                        .map_err(|e| db(&self.path, e))?
                        .ok_or(Error::NoSuchSheet { seq: *seq })?;
                    serde_json::from_str(old.value()).map_err(json_error("a journal record"))?
                };
                assert_eq!(
                    old.digest, record.digest,
                    "an update keeps the sheet it is about"
                );
                let json = serde_json::to_string(record)
                    .map_err(json_error("encoding a journal record"))?;
                records
                    .insert(*seq, json.as_str())
                    .map_err(|e| db(&self.path, e))?;
            }
        }
        txn.commit().map_err(|e| db(&self.path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sheet(version: u32) -> (SignedSheet, Record) {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/small-town");
        let key = tally_files::read_secret_key(&root.join("keys/T01-U01.key")).unwrap();
        let text = std::fs::read_to_string(root.join("sheets/T01-U01-XH-C01.toml")).unwrap();
        let mut sheet = tally_core::sheet_file::parse("s.toml", &text).unwrap();
        sheet.version = version;
        sheet.replaces_version = (version > 1).then_some(version - 1);
        let election = tally_core::definition::Election {
            id: "XH-2026".into(),
            name: "小河县".into(),
            mode: tally_core::definition::Mode::Rehearsal,
        };
        let signed = tally_proto::sign(&sheet, &key, &election);
        let record = Record {
            contest: "XH-C01".into(),
            round: 1,
            version,
            replaces_version: sheet.replaces_version,
            digest: hex::encode(signed.digest()),
            source: "s.toml".into(),
            journaled_unix_ms: 1,
            state: State::Pending,
            attempts: 0,
            last_attempt_unix_ms: None,
            answered_unix_ms: None,
            warnings: vec![],
        };
        (signed, record)
    }

    // Goal: what is journaled survives closing and reopening, in order, with its state; an
    // update changes the state only; another unit cannot open the journal.
    // Method: append two sheets, deliver one, reopen, read back; open as another unit.
    #[test]
    fn journal_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let unit = UnitId::new("T01-U01");
        {
            let journal = Journal::open(dir.path(), &unit).unwrap();
            let seqs = journal.append(&[sheet(1), sheet(2)]).unwrap();
            assert_eq!(seqs, vec![1, 2]);
            let mut delivered = journal.entries().unwrap()[0].record.clone();
            delivered.state = State::Delivered {
                outcome: "ACCEPTED".into(),
            };
            journal.update(&[(1, delivered)]).unwrap();
            // A second open of the same file while this one holds it is refused.
            let err = Journal::open(dir.path(), &unit).err().unwrap().to_string();
            assert!(err.contains("in use by another"), "{err}");
        }
        let journal = Journal::open(dir.path(), &unit).unwrap();
        let entries = journal.entries().unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].signed, sheet(1).0);
        assert_eq!(entries[0].record.state.short(), "delivered ACCEPTED");
        assert_eq!(entries[1].record.state, State::Pending);
        assert_eq!(journal.append(&[sheet(3)]).unwrap(), vec![3]);
        drop(journal);
        let err = Journal::open(dir.path(), &UnitId::new("T01-U02"))
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("belongs to unit T01-U01, not T01-U02"),
            "{err}"
        );
    }

    /// Sets (or, with `None`, removes) the journal's stored schema version, as another
    /// release would have left it.
    fn set_stored_version(dir: &Path, version: Option<&str>) {
        let database = Database::create(dir.join(JOURNAL_FILE)).unwrap();
        let txn = database.begin_write().unwrap();
        {
            let mut meta = txn.open_table(META).unwrap();
            match version {
                Some(v) => meta.insert(META_SCHEMA_VERSION, v).unwrap(),
                None => meta.remove(META_SCHEMA_VERSION).unwrap(),
            };
        }
        txn.commit().unwrap();
    }

    fn stored_version(dir: &Path) -> Option<String> {
        let database = Database::create(dir.join(JOURNAL_FILE)).unwrap();
        let txn = database.begin_read().unwrap();
        let meta = txn.open_table(META).unwrap();
        meta.get(META_SCHEMA_VERSION)
            .unwrap()
            .map(|v| v.value().to_owned())
    }

    // Goal: the journal records its schema version; one written by a newer release is refused
    // naming the file, both versions and what to do, and left as it was; one made before
    // versions were recorded opens as version 1, keeps its sheets, and is stamped so.
    // Method: journal a sheet and read the stamp; set it one past this binary's and reopen;
    // remove it and reopen.
    #[test]
    fn schema_version_is_written_checked_and_defaults_to_one() {
        let dir = tempfile::tempdir().unwrap();
        let unit = UnitId::new("T01-U01");
        Journal::open(dir.path(), &unit)
            .unwrap()
            .append(&[sheet(1)])
            .unwrap();
        assert_eq!(stored_version(dir.path()), Some(SCHEMA_VERSION.to_string()));

        let newer = (SCHEMA_VERSION + 1).to_string();
        set_stored_version(dir.path(), Some(&newer));
        let message = Journal::open(dir.path(), &unit).err().unwrap().to_string();
        for part in [
            dir.path().join(JOURNAL_FILE).display().to_string(),
            format!("journal schema version {newer}"),
            format!("reads up to version {SCHEMA_VERSION}"),
            "run the tally release that wrote it".to_owned(),
        ] {
            assert!(message.contains(&part), "{message} lacks {part:?}");
        }
        assert_eq!(stored_version(dir.path()), Some(newer));

        set_stored_version(dir.path(), None);
        let journal = Journal::open(dir.path(), &unit).unwrap();
        assert_eq!(journal.entries().unwrap().len(), 1);
        drop(journal);
        assert_eq!(stored_version(dir.path()), Some("1".to_owned()));
    }
}
