//! `DiskStorage`: raft-rs's `Storage` on one redb database per replica, holding the raft log,
//! the raft metadata and the state machine's evidence.
//!
//! # Tables
//! - `log`: log index → `term (u64 big-endian) || Entry (rust-protobuf)`. The term comes
//!   first so [`raft::Storage::term`] reads 8 bytes and parses nothing.
//! - `meta`: `schema_version` (decimal text, [`SCHEMA_VERSION`]), `cluster_id`, `replica_id`
//!   (the identity; all three written when the directory is created),
//!   `hard_state`, `conf_state`, `snapshot_metadata` (rust-protobuf), `applied_index` (u64
//!   big-endian).
//! - `snapshot`: `snapshot_data`, the state image (`tally.v1.CountySnapshot`). It is
//!   megabytes (the founding definition and every sheet up to the last compaction), so it has
//!   a table of its own: redb copies, checksums and writes a whole leaf whenever a key in it
//!   changes, and `meta` changes on every commit (the hard state, the applied index).
//! - `chain`: chain position (0 for the first sheet ever recorded) → `tally.v1.ChainRecord`:
//!   the signed sheet, the log index that recorded it and the chain head after it. Positions
//!   the snapshot image covers are dropped when it is taken; the rows are the records after it.
//!
//! The state machine is rebuilt on restart by restoring the image and replaying the rows
//! after it ([`DiskStorage::load_state`]); conflicts and the ledger follow from the evidence,
//! so they have no table of their own.
//!
//! # Schema version
//! `schema_version` names the layout above. It is written when the database is created and
//! checked at every open: a database of a newer version than this binary knows is refused
//! (its tables may mean something else), naming the file and both versions. A database
//! without one was made by the release before versions were recorded, whose layout is
//! version 1. Version 1 kept `snapshot_data` in `meta`; an older database is migrated when it
//! is opened (the image moves to `snapshot`) and stamped with this version.
//!
//! # Durability
//! - [`DiskStorage::persist`] (log, hard state, snapshot), [`DiskStorage::compact`],
//!   [`DiskStorage::set_conf_state`], [`DiskStorage::bootstrap`] and the identity commit with
//!   `Durability::Immediate`: one fsync each, and each is one transaction, so a snapshot's
//!   metadata is never on disk without the hard state and log that go with it.
//! - [`DiskStorage::save_applied`] and [`DiskStorage::set_commit`] commit with
//!   `Durability::None`. redb makes such a commit durable with the next `Immediate` one and a
//!   crash loses a suffix of them whole, never part of one. Losing a `save_applied` loses its
//!   rows together with its applied index, so the restarted replica is an older, consistent
//!   state and raft delivers the entries after that applied index again (`Config.applied` is
//!   set from [`DiskStorage::applied_index`]); apply is deterministic, so it rebuilds the same
//!   state. Nothing is acknowledged on the strength of an apply being durable: a sheet is
//!   acknowledged once its entry is committed, i.e. fsynced in the logs of a majority. Losing
//!   a `set_commit` only lowers the commit index, which the leader tells us again; an applied
//!   index is never stored above the commit index because `save_applied` raises the stored
//!   commit to it in the same transaction. Compaction is `Immediate`, so no log entry is
//!   dropped before the state that applied it is durable.
//!
//! Reads are cheap: the hard state, conf state, snapshot metadata and the log's bounds are
//! cached in memory behind a mutex, so `initial_state`, `first_index`, `last_index` and
//! most `term` calls touch no disk.

use crate::error::Error;
use crate::ids::{LogIndex, ReplicaId};
use crate::state::{CountyState, Records};

/// The log index of the founding configuration's snapshot (see [`DiskStorage::bootstrap`]).
pub const BOOTSTRAP_INDEX: u64 = 1;
use protobuf::Message as _;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use raft::{GetEntriesContext, RaftState};
/// What [`DiskStorage::open_with_backend`] takes: the storage under the database.
pub use redb::StorageBackend;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use tally_core::definition::Definition;
use tally_proto::county::{decode_chain_record, decode_image, encode_chain_record};

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// The state image alone (see the module documentation).
const SNAPSHOT: TableDefinition<&str, &[u8]> = TableDefinition::new("snapshot");
const CHAIN: TableDefinition<u64, &[u8]> = TableDefinition::new("chain");
/// Records of the networked replica beside raft's own (peer addresses, peers' incarnations).
const NODE: TableDefinition<&str, &[u8]> = TableDefinition::new("node");

const META_CLUSTER_ID: &str = "cluster_id";
const META_REPLICA_ID: &str = "replica_id";
const META_HARD_STATE: &str = "hard_state";
const META_CONF_STATE: &str = "conf_state";
const META_SNAPSHOT_METADATA: &str = "snapshot_metadata";
/// The state image's key, in `snapshot` (in `meta` in version 1).
const SNAPSHOT_DATA: &str = "snapshot_data";
const META_APPLIED_INDEX: &str = "applied_index";
const META_INCARNATION: &str = "incarnation";
const META_SCHEMA_VERSION: &str = "schema_version";

/// The version of the table layout this binary reads and writes (see the module documentation).
/// A database without one is version 1, the layout of the release before versions were kept.
pub const SCHEMA_VERSION: u32 = 2;

/// Bytes of a data directory's incarnation: random, made when the directory is created.
pub const INCARNATION_BYTES: usize = 16;

/// The database file inside a replica's data directory.
pub const DATABASE_FILE: &str = "county.redb";

/// Who a data directory belongs to: recorded when it is created, checked on every open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub cluster_id: String,
    pub replica_id: ReplicaId,
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

/// What is cached of the database. Changed only after the transaction that stores the change
/// has committed, so it never runs ahead of the disk.
#[derive(Debug, Clone, Default)]
struct Cache {
    hard_state: HardState,
    conf_state: ConfState,
    snapshot_metadata: SnapshotMetadata,
    /// The last index in the log, or the snapshot's index if the log is empty.
    last_index: u64,
    applied_index: u64,
    /// Chain positions stored: those the snapshot image covers plus the rows after them.
    chain_stored: u64,
}

impl Cache {
    fn first_index(&self) -> u64 {
        self.snapshot_metadata.index + 1
    }
}

/// raft-rs `Storage` on redb. Clones share the database and the cache.
#[derive(Clone)]
pub struct DiskStorage {
    database: Arc<Database>,
    cache: Arc<Mutex<Cache>>,
    /// How long each Ready's transaction (one fsync) took, for `/metrics`.
    fsync_seconds: Arc<crate::metrics::Histogram>,
}

fn encode_pb(message: &impl protobuf::Message) -> Vec<u8> {
    // rust-protobuf fails to encode only a message missing a proto2 required field; raft's
    // messages are proto3 and have none.
    message
        .write_to_bytes()
        .expect("raft's proto3 messages always encode")
}

fn decode_pb<M: protobuf::Message>(what: &str, bytes: &[u8]) -> Result<M, Error> {
    M::parse_from_bytes(bytes).map_err(|e| corrupt(what, e))
}

fn decode_u64(what: &str, bytes: &[u8]) -> Result<u64, Error> {
    let bytes: [u8; 8] = bytes
        .try_into()
        .map_err(|_| corrupt(what, format!("is {} bytes, not 8", bytes.len())))?;
    Ok(u64::from_be_bytes(bytes))
}

fn encode_log_value(entry: &Entry) -> Vec<u8> {
    let mut value = entry.term.to_be_bytes().to_vec();
    value.extend_from_slice(&encode_pb(entry));
    value
}

fn decode_log_term(index: u64, value: &[u8]) -> Result<u64, Error> {
    let term = value
        .get(..8)
        .ok_or_else(|| corrupt(format!("log entry {index}"), "is shorter than its term"))?;
    decode_u64("log entry term", term)
}

fn decode_log_entry(index: u64, value: &[u8]) -> Result<Entry, Error> {
    let what = format!("log entry {index}");
    let entry: Entry = decode_pb(&what, value.get(8..).unwrap_or_default())?;
    if entry.index != index || decode_log_term(index, value)? != entry.term {
        return Err(corrupt(
            what,
            format!("holds index {} term {}", entry.index, entry.term),
        ));
    }
    Ok(entry)
}

impl DiskStorage {
    /// Opens the replica's database in `dir`, creating both if needed. A directory created
    /// for another cluster id or replica id is an error naming both.
    pub fn open(dir: &Path, identity: &Identity) -> Result<Self, Error> {
        Self::open_on(dir, identity, None)
    }

    /// As [`DiskStorage::open`], with the database on `backend` instead of the file in `dir`:
    /// the seeded simulation puts a disk there that loses unsynced writes and tears the last
    /// one (`tests/support/power_loss.rs`), to test recovery after a power cut.
    pub fn open_with_backend(
        dir: &Path,
        identity: &Identity,
        backend: Box<dyn StorageBackend>,
    ) -> Result<Self, Error> {
        Self::open_on(dir, identity, Some(backend))
    }

    fn open_on(
        dir: &Path,
        identity: &Identity,
        backend: Option<Box<dyn StorageBackend>>,
    ) -> Result<Self, Error> {
        std::fs::create_dir_all(dir).map_err(|source| Error::Io {
            path: dir.to_owned(),
            source,
        })?;
        let opened = match backend {
            Some(backend) => Database::builder().create_with_backend(BoxedBackend(backend)),
            None => Database::create(dir.join(DATABASE_FILE)),
        };
        let database = opened.map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => Error::InUse {
                path: dir.join(DATABASE_FILE),
            },
            e => db(e),
        })?;
        let mut txn = database.begin_write().map_err(db)?;
        txn.set_durability(Durability::Immediate).map_err(db)?;
        let cache = {
            // Opening each table in a write transaction creates it, so later read
            // transactions always find them all.
            txn.open_table(LOG).map_err(db)?;
            txn.open_table(CHAIN).map_err(db)?;
            txn.open_table(NODE).map_err(db)?;
            let mut images = txn.open_table(SNAPSHOT).map_err(db)?;
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
                        path: dir.join(DATABASE_FILE),
                        stored,
                        supported: SCHEMA_VERSION,
                    });
                }
                Some(SCHEMA_VERSION) => {}
                // New, version 1, or made by the release before versions were recorded, whose
                // layout is version 1: the image moves out of `meta` (a new database has
                // none), in the transaction that stamps this version.
                Some(_) | None => {
                    if let Some(image) = meta.remove(SNAPSHOT_DATA).map_err(db)? {
                        images.insert(SNAPSHOT_DATA, image.value()).map_err(db)?;
                    }
                    meta.insert(META_SCHEMA_VERSION, SCHEMA_VERSION.to_string().as_bytes())
                        .map_err(db)?;
                }
            }
            drop(images);
            let stored_cluster = meta
                .get(META_CLUSTER_ID)
                .map_err(db)?
                .map(|v| String::from_utf8_lossy(v.value()).into_owned());
            let stored_replica = match meta.get(META_REPLICA_ID).map_err(db)? {
                Some(v) => Some(ReplicaId::new(decode_u64("replica id", v.value())?)),
                None => None,
            };
            match (stored_cluster, stored_replica) {
                (Some(stored_cluster), Some(stored_replica)) => {
                    if stored_cluster != identity.cluster_id
                        || stored_replica != identity.replica_id
                    {
                        return Err(Error::IdentityMismatch {
                            dir: dir.to_owned(),
                            stored_cluster,
                            stored_replica,
                            cluster: identity.cluster_id.clone(),
                            replica: identity.replica_id,
                        });
                    }
                }
                (None, None) => {
                    meta.insert(META_CLUSTER_ID, identity.cluster_id.as_bytes())
                        .map_err(db)?;
                    meta.insert(
                        META_REPLICA_ID,
                        identity.replica_id.get().to_be_bytes().as_slice(),
                    )
                    .map_err(db)?;
                    let mut incarnation = [0u8; INCARNATION_BYTES];
                    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut incarnation);
                    meta.insert(META_INCARNATION, incarnation.as_slice())
                        .map_err(db)?;
                }
                _ => {
                    return Err(corrupt(
                        "identity",
                        "has only one of cluster and replica id",
                    ));
                }
            }
            drop(meta);
            load_cache(&txn)?
        };
        txn.commit().map_err(db)?;
        Ok(DiskStorage {
            database: Arc::new(database),
            cache: Arc::new(Mutex::new(cache)),
            fsync_seconds: Arc::default(),
        })
    }

    /// The data directory's incarnation: random bytes made when it was created. A replica
    /// whose directory was wiped and made again has another, so its peers can tell it is not
    /// the replica that voted and acknowledged entries under its id.
    pub fn incarnation(&self) -> Result<[u8; INCARNATION_BYTES], Error> {
        let txn = self.database.begin_read().map_err(db)?;
        let meta = txn.open_table(META).map_err(db)?;
        let value = meta
            .get(META_INCARNATION)
            .map_err(db)?
            .ok_or_else(|| corrupt("incarnation", "is missing"))?;
        value
            .value()
            .try_into()
            .map_err(|_| corrupt("incarnation", "is not 16 bytes"))
    }

    /// Stores what the networked replica keeps about another replica (its address, its
    /// incarnation), under `kind` (fsynced before it returns).
    pub fn put_peer_record(&self, kind: &str, peer: ReplicaId, value: &[u8]) -> Result<(), Error> {
        let txn = self.begin_write(Durability::Immediate)?;
        {
            let mut table = txn.open_table(NODE).map_err(db)?;
            table
                .insert(format!("{kind}/{peer}").as_str(), value)
                .map_err(db)?;
        }
        txn.commit().map_err(db)
    }

    /// Every record of `kind` ([`DiskStorage::put_peer_record`]), by replica id.
    pub fn peer_records(&self, kind: &str) -> Result<Vec<(ReplicaId, Vec<u8>)>, Error> {
        let prefix = format!("{kind}/");
        let txn = self.database.begin_read().map_err(db)?;
        let table = txn.open_table(NODE).map_err(db)?;
        let mut out = Vec::new();
        for row in table.range(prefix.as_str()..).map_err(db)? {
            let (key, value) = row.map_err(db)?;
            let Some(id) = key.value().strip_prefix(&prefix) else {
                break;
            };
            let id = id.parse().map(ReplicaId::new).map_err(|_| {
                corrupt(
                    format!("{kind} record {:?}", key.value()),
                    "has no replica id",
                )
            })?;
            out.push((id, value.value().to_vec()));
        }
        Ok(out)
    }

    fn cache(&self) -> MutexGuard<'_, Cache> {
        // A panic while the lock was held left the cache as it was before that write (it is
        // replaced only after a commit), so a poisoned lock still guards a consistent value.
        self.cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn begin_write(&self, durability: Durability) -> Result<redb::WriteTransaction, Error> {
        let mut txn = self.database.begin_write().map_err(db)?;
        txn.set_durability(durability).map_err(db)?;
        Ok(txn)
    }

    /// First boot of a founding replica: records the initial voters. An error if the replica
    /// already has a configuration, a log or a snapshot.
    pub fn bootstrap(&self, voters: &[ReplicaId]) -> Result<(), Error> {
        {
            let cache = self.cache();
            if cache.conf_state != ConfState::default()
                || cache.last_index > 0
                || cache.snapshot_metadata.index > 0
            {
                return Err(Error::AlreadyInitialized);
            }
        }
        // The founding configuration is an initial snapshot at index 1, term 1, identical on
        // every founding replica (as raft-rs's examples do). A replica added later starts
        // empty and, since index 1 is behind every leader's first index, is sent a snapshot
        // that carries the configuration and the state, instead of replaying conf changes it
        // has no configuration for.
        let mut snapshot = Snapshot::default();
        let metadata = snapshot.mut_metadata();
        metadata.index = BOOTSTRAP_INDEX;
        metadata.term = BOOTSTRAP_INDEX;
        metadata.mut_conf_state().voters = voters.iter().map(|id| id.get()).collect();
        snapshot.data = tally_proto::county::encode_image(&tally_proto::county::StateImage {
            applied_index: BOOTSTRAP_INDEX,
            chain_head: crate::state::CHAIN_HEAD_EMPTY,
            records: Vec::new(),
        })
        .into();
        self.persist(Some(&snapshot), &[], None)
    }

    /// Whether the replica has a configuration (bootstrapped, or given one by a snapshot).
    pub fn is_initialized(&self) -> bool {
        self.cache().conf_state != ConfState::default()
    }

    /// Persists one Ready in ONE transaction with one fsync: installs `snapshot` if given
    /// (its metadata, its state image, the log and chain rows it replaces, and the hard state
    /// and conf state it implies), appends `entries` (first dropping any stored suffix from
    /// their first index), and sets `hard_state` if given.
    pub fn persist(
        &self,
        snapshot: Option<&Snapshot>,
        entries: &[Entry],
        hard_state: Option<&HardState>,
    ) -> Result<(), Error> {
        let mut cache = self.cache();
        let mut next = cache.clone();
        let txn = self.begin_write(Durability::Immediate)?;
        {
            let mut log = txn.open_table(LOG).map_err(db)?;
            let mut meta = txn.open_table(META).map_err(db)?;
            let mut chain = txn.open_table(CHAIN).map_err(db)?;
            let mut images = txn.open_table(SNAPSHOT).map_err(db)?;
            if let Some(snapshot) = snapshot {
                let metadata = snapshot.get_metadata();
                if metadata.index <= next.snapshot_metadata.index {
                    return Err(Error::SnapshotOutOfDate {
                        index: LogIndex::new(metadata.index),
                        snapshot_index: LogIndex::new(next.snapshot_metadata.index),
                    });
                }
                let image = decode_image(&snapshot.data)
                    .map_err(|e| corrupt("snapshot data from the leader", e))?;
                // As raft-rs's MemStorage: the snapshot replaces the whole log; entries that
                // follow it come in `entries`.
                log.retain(|_, _| false).map_err(db)?;
                chain.retain(|_, _| false).map_err(db)?;
                next.hard_state.term = next.hard_state.term.max(metadata.term);
                next.hard_state.commit = metadata.index;
                next.conf_state = metadata.get_conf_state().clone();
                next.snapshot_metadata = metadata.clone();
                next.last_index = metadata.index;
                next.applied_index = metadata.index;
                next.chain_stored = image.records.len() as u64;
                meta.insert(META_SNAPSHOT_METADATA, encode_pb(metadata).as_slice())
                    .map_err(db)?;
                images
                    .insert(SNAPSHOT_DATA, &snapshot.data[..])
                    .map_err(db)?;
                meta.insert(META_CONF_STATE, encode_pb(&next.conf_state).as_slice())
                    .map_err(db)?;
                meta.insert(
                    META_APPLIED_INDEX,
                    next.applied_index.to_be_bytes().as_slice(),
                )
                .map_err(db)?;
            }
            if let Some(first) = entries.first() {
                if first.index < next.first_index() {
                    return Err(Error::OverwriteCompacted {
                        first: LogIndex::new(first.index),
                        first_index: LogIndex::new(next.first_index()),
                    });
                }
                if first.index > next.last_index + 1 {
                    return Err(Error::LogGap {
                        first: LogIndex::new(first.index),
                        last_index: LogIndex::new(next.last_index),
                    });
                }
                for (offset, entry) in entries.iter().enumerate() {
                    let expected = first.index + offset as u64;
                    if entry.index != expected {
                        return Err(Error::EntriesNotConsecutive {
                            expected: LogIndex::new(expected),
                            found: LogIndex::new(entry.index),
                        });
                    }
                }
                // Every stored entry from the first new index on conflicts or is replaced.
                log.retain_in(first.index.., |_, _| false).map_err(db)?;
                for entry in entries {
                    log.insert(entry.index, encode_log_value(entry).as_slice())
                        .map_err(db)?;
                }
                next.last_index = first.index + entries.len() as u64 - 1;
            }
            if let Some(hard_state) = hard_state {
                next.hard_state = hard_state.clone();
            }
            if snapshot.is_some() || hard_state.is_some() {
                meta.insert(META_HARD_STATE, encode_pb(&next.hard_state).as_slice())
                    .map_err(db)?;
            }
        }
        let started = std::time::Instant::now();
        txn.commit().map_err(db)?;
        self.fsync_seconds.observe(started.elapsed());
        *cache = next;
        Ok(())
    }

    /// The latency of [`DiskStorage::persist`]'s commits (one fsync each).
    pub fn fsync_seconds(&self) -> &crate::metrics::Histogram {
        &self.fsync_seconds
    }

    /// Records the commit index of a light ready. `Durability::None`: see the module
    /// documentation.
    pub fn set_commit(&self, commit: LogIndex) -> Result<(), Error> {
        let mut cache = self.cache();
        let mut hard_state = cache.hard_state.clone();
        hard_state.commit = commit.get();
        let txn = self.begin_write(Durability::None)?;
        {
            let mut meta = txn.open_table(META).map_err(db)?;
            meta.insert(META_HARD_STATE, encode_pb(&hard_state).as_slice())
                .map_err(db)?;
        }
        txn.commit().map_err(db)?;
        cache.hard_state = hard_state;
        Ok(())
    }

    /// The hard state as stored (term, vote, commit).
    pub fn hard_state(&self) -> HardState {
        self.cache().hard_state.clone()
    }

    /// Records the configuration after a configuration change was applied.
    pub fn set_conf_state(&self, conf_state: &ConfState) -> Result<(), Error> {
        let mut cache = self.cache();
        let txn = self.begin_write(Durability::Immediate)?;
        {
            let mut meta = txn.open_table(META).map_err(db)?;
            meta.insert(META_CONF_STATE, encode_pb(conf_state).as_slice())
                .map_err(db)?;
        }
        txn.commit().map_err(db)?;
        cache.conf_state = conf_state.clone();
        Ok(())
    }

    /// Records what the state machine applied since the last save, in one transaction: the
    /// chain records it added (as rows) and its applied index. `Durability::None`: see the
    /// module documentation.
    pub fn save_applied(&self, state: &CountyState) -> Result<(), Error> {
        let mut cache = self.cache();
        let records = state.records();
        // The redb rows and raft's hard state hold the bare number.
        let applied_index = state.applied_index().get();
        if (records.len() as u64) < cache.chain_stored || applied_index < cache.applied_index {
            return Err(Error::StateBehind {
                records: records.len() as u64,
                applied_index: state.applied_index(),
                stored_records: cache.chain_stored,
                stored_applied_index: LogIndex::new(cache.applied_index),
            });
        }
        let mut hard_state = cache.hard_state.clone();
        hard_state.commit = hard_state.commit.max(applied_index);
        let txn = self.begin_write(Durability::None)?;
        {
            let mut chain = txn.open_table(CHAIN).map_err(db)?;
            write_rows(&mut chain, records, cache.chain_stored)?;
            let mut meta = txn.open_table(META).map_err(db)?;
            meta.insert(META_APPLIED_INDEX, applied_index.to_be_bytes().as_slice())
                .map_err(db)?;
            if hard_state.commit != cache.hard_state.commit {
                meta.insert(META_HARD_STATE, encode_pb(&hard_state).as_slice())
                    .map_err(db)?;
            }
        }
        txn.commit().map_err(db)?;
        cache.chain_stored = records.len() as u64;
        cache.applied_index = applied_index;
        cache.hard_state = hard_state;
        Ok(())
    }

    /// The state machine as stored: the snapshot image, if any, and the chain rows after it,
    /// at the stored applied index.
    pub fn load_state(&self, definition: Arc<Definition>) -> Result<CountyState, Error> {
        let cache = self.cache();
        let txn = self.database.begin_read().map_err(db)?;
        let images = txn.open_table(SNAPSHOT).map_err(db)?;
        let mut state = match images.get(SNAPSHOT_DATA).map_err(db)? {
            Some(image) => {
                CountyState::restore(definition, image.value()).map_err(Error::stored_state)?
            }
            None => CountyState::new(definition),
        };
        let chain = txn.open_table(CHAIN).map_err(db)?;
        for row in chain.range(state.records().len() as u64..).map_err(db)? {
            let (position, value) = row.map_err(db)?;
            let position = position.value();
            if position != state.records().len() as u64 {
                return Err(corrupt(
                    "chain",
                    format!("has row {position} where {} was due", state.records().len()),
                ));
            }
            let record = decode_chain_record(value.value()).map_err(|e| corrupt("chain row", e))?;
            state.replay(&record).map_err(Error::stored_state)?;
        }
        if state.records().len() as u64 != cache.chain_stored {
            return Err(corrupt(
                "chain",
                format!(
                    "rebuilds {} records where {} were stored",
                    state.records().len(),
                    cache.chain_stored
                ),
            ));
        }
        if cache.applied_index < state.applied_index().get() {
            return Err(corrupt(
                "applied index",
                format!(
                    "is {}, before the {} of the last chain record",
                    cache.applied_index,
                    state.applied_index()
                ),
            ));
        }
        state.set_applied_index(LogIndex::new(cache.applied_index));
        Ok(state)
    }

    /// The applied index stored with the state machine's rows; `Config.applied` on restart.
    pub fn applied_index(&self) -> LogIndex {
        LogIndex::new(self.cache().applied_index)
    }

    /// Log compaction: stores a snapshot of `state` at its applied index as the current
    /// snapshot (with `conf_state`, the configuration at that index), drops the log up to it
    /// and the chain rows the image now holds. Also saves the applied state. Does nothing if
    /// the stored snapshot is already at that index.
    pub fn compact(&self, state: &CountyState, conf_state: &ConfState) -> Result<(), Error> {
        let mut cache = self.cache();
        // The redb rows and raft's snapshot metadata hold the bare number.
        let index = state.applied_index().get();
        if index <= cache.snapshot_metadata.index {
            return Ok(());
        }
        if index > cache.last_index {
            return Err(Error::CompactBeyondLog {
                index: LogIndex::new(index),
                last_index: LogIndex::new(cache.last_index),
            });
        }
        if (state.records().len() as u64) < cache.chain_stored || index < cache.applied_index {
            return Err(Error::StateBehind {
                records: state.records().len() as u64,
                applied_index: LogIndex::new(index),
                stored_records: cache.chain_stored,
                stored_applied_index: LogIndex::new(cache.applied_index),
            });
        }
        let term = self.stored_term(index)?;
        let metadata = SnapshotMetadata {
            index,
            term,
            conf_state: protobuf::SingularPtrField::some(conf_state.clone()),
            ..Default::default()
        };
        let mut hard_state = cache.hard_state.clone();
        hard_state.commit = hard_state.commit.max(index);
        let image_records = state.records().len() as u64;
        let txn = self.begin_write(Durability::Immediate)?;
        {
            let mut meta = txn.open_table(META).map_err(db)?;
            meta.insert(META_SNAPSHOT_METADATA, encode_pb(&metadata).as_slice())
                .map_err(db)?;
            let mut images = txn.open_table(SNAPSHOT).map_err(db)?;
            images
                .insert(SNAPSHOT_DATA, state.snapshot_bytes().as_slice())
                .map_err(db)?;
            meta.insert(META_APPLIED_INDEX, index.to_be_bytes().as_slice())
                .map_err(db)?;
            meta.insert(META_HARD_STATE, encode_pb(&hard_state).as_slice())
                .map_err(db)?;
            let mut log = txn.open_table(LOG).map_err(db)?;
            log.retain_in(..=index, |_, _| false).map_err(db)?;
            let mut chain = txn.open_table(CHAIN).map_err(db)?;
            chain.retain(|_, _| false).map_err(db)?;
        }
        txn.commit().map_err(db)?;
        cache.snapshot_metadata = metadata;
        cache.applied_index = index;
        cache.chain_stored = image_records;
        cache.hard_state = hard_state;
        Ok(())
    }

    /// The current snapshot's metadata (index 0 if there is none).
    pub fn snapshot_metadata(&self) -> SnapshotMetadata {
        self.cache().snapshot_metadata.clone()
    }

    /// The term of a log entry in `[first_index, last_index]`, read from disk.
    fn stored_term(&self, index: u64) -> Result<u64, Error> {
        let txn = self.database.begin_read().map_err(db)?;
        let log = txn.open_table(LOG).map_err(db)?;
        let value = log
            .get(index)
            .map_err(db)?
            .ok_or_else(|| corrupt("log", format!("lacks entry {index} inside its bounds")))?;
        decode_log_term(index, value.value())
    }
}

/// A boxed backend as redb takes one (redb's `create_with_backend` wants a sized type).
#[derive(Debug)]
struct BoxedBackend(Box<dyn StorageBackend>);

impl StorageBackend for BoxedBackend {
    fn len(&self) -> std::io::Result<u64> {
        self.0.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        self.0.read(offset, out)
    }

    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.0.set_len(len)
    }

    fn sync_data(&self) -> std::io::Result<()> {
        self.0.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.0.write(offset, data)
    }

    fn close(&self) -> std::io::Result<()> {
        self.0.close()
    }
}

fn write_rows(
    chain: &mut redb::Table<'_, u64, &[u8]>,
    records: &Records,
    from: u64,
) -> Result<(), Error> {
    for (position, record) in (from..).zip(records.iter_from(from as usize)) {
        chain
            .insert(position, encode_chain_record(record).as_slice())
            .map_err(db)?;
    }
    Ok(())
}

/// Reads the cache from the tables, checking that they agree with each other.
fn load_cache(txn: &redb::WriteTransaction) -> Result<Cache, Error> {
    let meta = txn.open_table(META).map_err(db)?;
    let mut cache = Cache::default();
    if let Some(v) = meta.get(META_HARD_STATE).map_err(db)? {
        cache.hard_state = decode_pb("hard state", v.value())?;
    }
    if let Some(v) = meta.get(META_CONF_STATE).map_err(db)? {
        cache.conf_state = decode_pb("conf state", v.value())?;
    }
    if let Some(v) = meta.get(META_SNAPSHOT_METADATA).map_err(db)? {
        cache.snapshot_metadata = decode_pb("snapshot metadata", v.value())?;
    }
    if let Some(v) = meta.get(META_APPLIED_INDEX).map_err(db)? {
        cache.applied_index = decode_u64("applied index", v.value())?;
    }
    let images = txn.open_table(SNAPSHOT).map_err(db)?;
    let image_records = match images.get(SNAPSHOT_DATA).map_err(db)? {
        Some(v) => decode_image(v.value())
            .map_err(|e| corrupt("snapshot data", e))?
            .records
            .len() as u64,
        None => 0,
    };
    let log = txn.open_table(LOG).map_err(db)?;
    cache.last_index = match log.last().map_err(db)? {
        Some((index, _)) => index.value(),
        None => cache.snapshot_metadata.index,
    };
    if let Some((index, _)) = log.first().map_err(db)?
        && index.value() != cache.first_index()
    {
        return Err(corrupt(
            "log",
            format!(
                "starts at {} but the snapshot is at {}",
                index.value(),
                cache.snapshot_metadata.index
            ),
        ));
    }
    let chain = txn.open_table(CHAIN).map_err(db)?;
    cache.chain_stored = match chain.last().map_err(db)? {
        Some((position, _)) => position.value() + 1,
        None => image_records,
    };
    Ok(cache)
}

impl raft::Storage for DiskStorage {
    fn initial_state(&self) -> raft::Result<RaftState> {
        let cache = self.cache();
        Ok(RaftState::new(
            cache.hard_state.clone(),
            cache.conf_state.clone(),
        ))
    }

    /// Entries `[low, high)`, at most `max_size` bytes but always at least one, as raft-rs's
    /// MemStorage.
    ///
    /// # Panics
    /// If `high > last_index + 1`, as MemStorage: raft never asks for entries it has not
    /// handed to storage.
    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        let max_size = max_size.into();
        let (first_index, last_index) = {
            let cache = self.cache();
            (cache.first_index(), cache.last_index)
        };
        if low < first_index {
            return Err(raft::Error::Store(raft::StorageError::Compacted));
        }
        assert!(
            high <= last_index + 1,
            "index out of bound (last: {}, high: {high})",
            last_index + 1
        );
        let txn = self.database.begin_read().map_err(db)?;
        let log = txn.open_table(LOG).map_err(db)?;
        let mut entries = Vec::new();
        let mut size = 0u64;
        let mut cut_by_size = false;
        for row in log.range(low..high).map_err(db)? {
            let (index, value) = row.map_err(db)?;
            let entry = decode_log_entry(index.value(), value.value())?;
            size += u64::from(entry.compute_size());
            // The first entry always goes, whatever its size (raft-rs's limit_size).
            if !entries.is_empty() && max_size.is_some_and(|max| size > max) {
                cut_by_size = true;
                break;
            }
            entries.push(entry);
        }
        if !cut_by_size && entries.len() as u64 != high - low {
            return Err(corrupt("log", format!("lacks entries in [{low}, {high})")).into());
        }
        Ok(entries)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        let (snapshot_index, snapshot_term, first_index, last_index) = {
            let cache = self.cache();
            (
                cache.snapshot_metadata.index,
                cache.snapshot_metadata.term,
                cache.first_index(),
                cache.last_index,
            )
        };
        if idx == snapshot_index {
            return Ok(snapshot_term);
        }
        if idx < first_index {
            return Err(raft::Error::Store(raft::StorageError::Compacted));
        }
        if idx > last_index {
            return Err(raft::Error::Store(raft::StorageError::Unavailable));
        }
        Ok(self.stored_term(idx)?)
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.cache().first_index())
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.cache().last_index)
    }

    /// A snapshot of the applied state, as raft-rs's MemStorage makes one at request time:
    /// at the stored applied index, with the current configuration (the one applied at that
    /// index) and the state image there (the stored image plus the chain rows after it).
    ///
    /// Not the stored snapshot: that one may carry an old configuration (the founding one
    /// of [`DiskStorage::bootstrap`], or the one at the last compaction) that lacks the peer
    /// it is for, and raft-rs's follower refuses a snapshot whose configuration does not
    /// name it. Unavailable if nothing is applied or the applied index is before
    /// `request_index`; raft asks again later.
    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        let cache = self.cache();
        let index = cache.applied_index;
        if index == 0 || index < request_index {
            return Err(raft::Error::Store(
                raft::StorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        let term = if index == cache.snapshot_metadata.index {
            cache.snapshot_metadata.term
        } else {
            self.stored_term(index)?
        };
        let txn = self.database.begin_read().map_err(db)?;
        let images = txn.open_table(SNAPSHOT).map_err(db)?;
        let mut image = match images.get(SNAPSHOT_DATA).map_err(db)? {
            Some(v) => decode_image(v.value()).map_err(|e| corrupt("snapshot data", e))?,
            None => tally_proto::county::StateImage {
                applied_index: 0,
                chain_head: crate::state::CHAIN_HEAD_EMPTY,
                records: Vec::new(),
            },
        };
        let chain = txn.open_table(CHAIN).map_err(db)?;
        for row in chain.range(image.records.len() as u64..).map_err(db)? {
            let (position, value) = row.map_err(db)?;
            if position.value() != image.records.len() as u64 {
                return Err(corrupt(
                    "chain",
                    format!(
                        "has row {} where {} was due",
                        position.value(),
                        image.records.len()
                    ),
                )
                .into());
            }
            let record = decode_chain_record(value.value()).map_err(|e| corrupt("chain row", e))?;
            image.chain_head = record.head;
            image.records.push(record);
        }
        if image.records.len() as u64 != cache.chain_stored {
            return Err(corrupt(
                "chain",
                format!(
                    "holds {} records where {} were stored",
                    image.records.len(),
                    cache.chain_stored
                ),
            )
            .into());
        }
        image.applied_index = index;
        let mut snapshot = Snapshot::default();
        let metadata = snapshot.mut_metadata();
        metadata.index = index;
        metadata.term = term;
        metadata.set_conf_state(cache.conf_state.clone());
        snapshot.data = tally_proto::county::encode_image(&image).into();
        Ok(snapshot)
    }
}

#[cfg(test)]
mod tests {
    //! The raft-rs MemStorage contract tests, ported (raft-0.7.0 `src/storage.rs`), then the
    //! durability and identity tests of this store.
    //!
    //! Porting note: MemStorage tests fill the log directly with entries 3..=5 and no
    //! snapshot. A DiskStorage log always starts right after its snapshot, so the fixture
    //! installs a snapshot at (2, 2) first: `term(2)` is then 2 where MemStorage said
    //! Compacted, and MemStorage's `compact(i)` (drop entries before i) is a snapshot at i - 1.

    use super::*;
    use crate::command::Command;
    use crate::state::testkit::{definition, signed};
    use raft::Storage as _;
    use raft::StorageError as RaftStorageError;
    use tally_core::ids::TownshipId;
    use tempfile::TempDir;

    fn identity(replica_id: u64) -> Identity {
        Identity {
            cluster_id: "county-test".into(),
            replica_id: ReplicaId::new(replica_id),
        }
    }

    fn new_entry(index: u64, term: u64) -> Entry {
        Entry {
            term,
            index,
            ..Default::default()
        }
    }

    fn size_of(entry: &Entry) -> u64 {
        u64::from(entry.compute_size())
    }

    /// An empty state image at `index`, as a snapshot would carry.
    fn image_at(index: u64) -> Vec<u8> {
        let mut state = CountyState::new(definition());
        if index > 0 {
            state.apply_empty(LogIndex::new(index));
        }
        state.snapshot_bytes()
    }

    fn new_snapshot(index: u64, term: u64, voters: Vec<u64>) -> Snapshot {
        let mut s = Snapshot::default();
        s.mut_metadata().index = index;
        s.mut_metadata().term = term;
        s.mut_metadata().mut_conf_state().voters = voters;
        s.data = image_at(index).into();
        s
    }

    /// A store holding `entries`, after a snapshot at the index before the first.
    fn storage_with(entries: &[Entry]) -> (TempDir, DiskStorage) {
        let dir = TempDir::new().unwrap();
        let storage = DiskStorage::open(dir.path(), &identity(1)).unwrap();
        let first = entries[0].index;
        if first > 1 {
            let snapshot = new_snapshot(first - 1, first - 1, vec![1, 2, 3]);
            storage.persist(Some(&snapshot), &[], None).unwrap();
        }
        storage.persist(None, entries, None).unwrap();
        (dir, storage)
    }

    /// Compacts to `index` with an empty state there.
    fn compact_to(storage: &DiskStorage, index: u64) -> Result<(), Error> {
        let mut state = CountyState::new(definition());
        state.apply_empty(LogIndex::new(index));
        let conf_state = ConfState {
            voters: vec![1, 2, 3],
            ..Default::default()
        };
        storage.compact(&state, &conf_state)
    }

    fn all_entries(storage: &DiskStorage) -> Vec<Entry> {
        let first = storage.first_index().unwrap();
        let last = storage.last_index().unwrap();
        storage
            .entries(first, last + 1, None, GetEntriesContext::empty(false))
            .unwrap()
    }

    // Goal: term() answers inside the log, at the snapshot, and the two errors outside it.
    // Method: MemStorage's test_storage_term on entries 3..=5 after a snapshot at 2.
    #[test]
    fn storage_term() {
        let ents = [new_entry(3, 3), new_entry(4, 4), new_entry(5, 5)];
        let (_dir, storage) = storage_with(&ents);
        let cases = [
            (1, Err(raft::Error::Store(RaftStorageError::Compacted))),
            (2, Ok(2)),
            (3, Ok(3)),
            (4, Ok(4)),
            (5, Ok(5)),
            (6, Err(raft::Error::Store(RaftStorageError::Unavailable))),
        ];
        for (idx, want) in cases {
            assert_eq!(storage.term(idx), want, "term({idx})");
        }
    }

    // Goal: entries() returns [low, high), at least one entry, bounded by max_size exactly as
    // raft-rs's limit_size, and Compacted below the first index.
    // Method: MemStorage's test_storage_entries table.
    #[test]
    fn storage_entries() {
        let ents = [
            new_entry(3, 3),
            new_entry(4, 4),
            new_entry(5, 5),
            new_entry(6, 6),
        ];
        let (_dir, storage) = storage_with(&ents);
        let max = u64::MAX;
        let cases: Vec<(u64, u64, u64, raft::Result<Vec<Entry>>)> = vec![
            (
                2,
                6,
                max,
                Err(raft::Error::Store(RaftStorageError::Compacted)),
            ),
            (3, 4, max, Ok(vec![new_entry(3, 3)])),
            (4, 5, max, Ok(vec![new_entry(4, 4)])),
            (4, 6, max, Ok(vec![new_entry(4, 4), new_entry(5, 5)])),
            (
                4,
                7,
                max,
                Ok(vec![new_entry(4, 4), new_entry(5, 5), new_entry(6, 6)]),
            ),
            // Even if max_size is zero, the first entry is returned.
            (4, 7, 0, Ok(vec![new_entry(4, 4)])),
            (
                4,
                7,
                size_of(&ents[1]) + size_of(&ents[2]),
                Ok(vec![new_entry(4, 4), new_entry(5, 5)]),
            ),
            (
                4,
                7,
                size_of(&ents[1]) + size_of(&ents[2]) + size_of(&ents[3]) / 2,
                Ok(vec![new_entry(4, 4), new_entry(5, 5)]),
            ),
            (
                4,
                7,
                size_of(&ents[1]) + size_of(&ents[2]) + size_of(&ents[3]) - 1,
                Ok(vec![new_entry(4, 4), new_entry(5, 5)]),
            ),
            (
                4,
                7,
                size_of(&ents[1]) + size_of(&ents[2]) + size_of(&ents[3]),
                Ok(vec![new_entry(4, 4), new_entry(5, 5), new_entry(6, 6)]),
            ),
        ];
        for (i, (low, high, max_size, want)) in cases.into_iter().enumerate() {
            let got = storage.entries(low, high, max_size, GetEntriesContext::empty(false));
            assert_eq!(got, want, "case {i}: entries({low}, {high}, {max_size})");
        }
    }

    // Goal: first and last index follow appends and compaction.
    // Method: MemStorage's test_storage_last_index and test_storage_first_index.
    #[test]
    fn storage_first_and_last_index() {
        let ents = [new_entry(3, 3), new_entry(4, 4), new_entry(5, 5)];
        let (_dir, storage) = storage_with(&ents);
        assert_eq!(storage.last_index(), Ok(5));
        storage.persist(None, &[new_entry(6, 5)], None).unwrap();
        assert_eq!(storage.last_index(), Ok(6));

        let (_dir, storage) = storage_with(&ents);
        assert_eq!(storage.first_index(), Ok(3));
        compact_to(&storage, 3).unwrap();
        assert_eq!(storage.first_index(), Ok(4));
        assert_eq!(storage.term(3), Ok(3));
    }

    // Goal: compaction drops the log up to the snapshot index and keeps the rest; compacting
    // to or below the current snapshot changes nothing.
    // Method: MemStorage's test_storage_compact, MemStorage compact(i) being a snapshot at i-1.
    #[test]
    fn storage_compact() {
        let ents = [new_entry(3, 3), new_entry(4, 4), new_entry(5, 5)];
        // (MemStorage compact index, first index, its term, entries left)
        let cases = [(2, 3, 3, 3), (3, 3, 3, 3), (4, 4, 4, 2), (5, 5, 5, 1)];
        for (compact, want_first, want_term, want_len) in cases {
            let (_dir, storage) = storage_with(&ents);
            compact_to(&storage, compact - 1).unwrap();
            let first = storage.first_index().unwrap();
            assert_eq!(first, want_first, "compact {compact}");
            let term = storage
                .entries(first, first + 1, 1, GetEntriesContext::empty(false))
                .unwrap()[0]
                .term;
            assert_eq!(term, want_term, "compact {compact}");
            assert_eq!(all_entries(&storage).len(), want_len, "compact {compact}");
        }
        let (_dir, storage) = storage_with(&ents);
        assert!(matches!(
            compact_to(&storage, 6),
            Err(Error::CompactBeyondLog { .. })
        ));
    }

    // Goal: snapshot() hands out a snapshot of the applied state with its conf state and
    // state image; none before anything is applied, and a request beyond the applied index
    // is temporarily unavailable.
    // Method: after MemStorage's test_storage_create_snapshot: compact at 4, ask at 0, 4, 5.
    #[test]
    fn storage_snapshot() {
        let ents = [new_entry(3, 3), new_entry(4, 4), new_entry(5, 5)];
        let dir = TempDir::new().unwrap();
        let storage = DiskStorage::open(dir.path(), &identity(1)).unwrap();
        storage.persist(None, &[new_entry(1, 1)], None).unwrap();
        assert_eq!(
            storage.snapshot(0, 2),
            Err(raft::Error::Store(
                RaftStorageError::SnapshotTemporarilyUnavailable
            ))
        );

        let (_dir, storage) = storage_with(&ents);
        compact_to(&storage, 4).unwrap();
        let mut want = new_snapshot(4, 4, vec![1, 2, 3]);
        want.data = image_at(4).into();
        assert_eq!(storage.snapshot(0, 2), Ok(want.clone()));
        assert_eq!(storage.snapshot(4, 2), Ok(want));
        assert_eq!(
            storage.snapshot(5, 2),
            Err(raft::Error::Store(
                RaftStorageError::SnapshotTemporarilyUnavailable
            ))
        );
    }

    // Goal: appending replaces a conflicting suffix, extends the log, and refuses to overwrite
    // the compacted log or leave a gap.
    // Method: MemStorage's test_storage_append table (its panics are errors here), plus a gap.
    #[test]
    fn storage_append() {
        let ents = [new_entry(3, 3), new_entry(4, 4), new_entry(5, 5)];
        let cases: Vec<(Vec<Entry>, Option<Vec<Entry>>)> = vec![
            (
                vec![new_entry(3, 3), new_entry(4, 4), new_entry(5, 5)],
                Some(vec![new_entry(3, 3), new_entry(4, 4), new_entry(5, 5)]),
            ),
            (
                vec![new_entry(3, 3), new_entry(4, 6), new_entry(5, 6)],
                Some(vec![new_entry(3, 3), new_entry(4, 6), new_entry(5, 6)]),
            ),
            (
                vec![
                    new_entry(3, 3),
                    new_entry(4, 4),
                    new_entry(5, 5),
                    new_entry(6, 5),
                ],
                Some(vec![
                    new_entry(3, 3),
                    new_entry(4, 4),
                    new_entry(5, 5),
                    new_entry(6, 5),
                ]),
            ),
            // Overwriting the compacted log is not allowed.
            (
                vec![new_entry(2, 3), new_entry(3, 3), new_entry(4, 5)],
                None,
            ),
            // Truncate the existing entries and append.
            (
                vec![new_entry(4, 5)],
                Some(vec![new_entry(3, 3), new_entry(4, 5)]),
            ),
            // Direct append.
            (
                vec![new_entry(6, 6)],
                Some(vec![
                    new_entry(3, 3),
                    new_entry(4, 4),
                    new_entry(5, 5),
                    new_entry(6, 6),
                ]),
            ),
            // A gap is not allowed.
            (vec![new_entry(7, 6)], None),
        ];
        for (i, (entries, want)) in cases.into_iter().enumerate() {
            let (_dir, storage) = storage_with(&ents);
            let result = storage.persist(None, &entries, None);
            match want {
                Some(want) => {
                    result.unwrap();
                    assert_eq!(all_entries(&storage), want, "case {i}");
                    assert_eq!(storage.last_index(), Ok(want.last().unwrap().index));
                }
                None => {
                    result.unwrap_err();
                    assert_eq!(all_entries(&storage), ents.to_vec(), "case {i} unchanged");
                }
            }
        }
    }

    // Goal: installing a snapshot replaces the log, sets commit, term and conf state from it
    // and records its image; an older snapshot is refused.
    // Method: MemStorage's test_storage_apply_snapshot, checking the effects as well.
    #[test]
    fn storage_apply_snapshot() {
        let dir = TempDir::new().unwrap();
        let storage = DiskStorage::open(dir.path(), &identity(1)).unwrap();
        storage
            .set_conf_state(&ConfState {
                voters: vec![1],
                ..Default::default()
            })
            .unwrap(); // a configuration without the bootstrap snapshot, so the log starts at 1
        storage
            .persist(None, &[new_entry(1, 1), new_entry(2, 1)], None)
            .unwrap();
        storage
            .persist(Some(&new_snapshot(4, 4, vec![1, 2, 3])), &[], None)
            .unwrap();
        assert_eq!(storage.first_index(), Ok(5));
        assert_eq!(storage.last_index(), Ok(4));
        assert_eq!(storage.term(4), Ok(4));
        let initial = storage.initial_state().unwrap();
        assert_eq!(initial.hard_state.commit, 4);
        assert_eq!(initial.hard_state.term, 4);
        assert_eq!(initial.conf_state.voters, vec![1, 2, 3]);
        assert_eq!(storage.applied_index(), LogIndex::new(4));
        assert_eq!(
            storage.load_state(definition()).unwrap().applied_index(),
            LogIndex::new(4)
        );

        let err = storage
            .persist(Some(&new_snapshot(3, 3, vec![1, 2, 3])), &[], None)
            .unwrap_err();
        assert!(matches!(err, Error::SnapshotOutOfDate { .. }), "{err}");
    }

    /// An entry carrying an ingest command.
    fn command_entry(index: u64, term: u64, sheets: Vec<tally_proto::SignedSheet>) -> Entry {
        let mut e = new_entry(index, term);
        e.data = Command::Ingest {
            township: TownshipId::new("T1"),
            sheets,
            countersignature: None,
        }
        .encode()
        .into();
        e
    }

    /// The founding entry of the test definition.
    fn found_entry(index: u64, term: u64) -> Entry {
        let mut e = new_entry(index, term);
        e.data = Command::Found {
            definition: tally_core::canonical::encode(&definition()),
        }
        .encode()
        .into();
        e
    }

    fn apply(state: &mut CountyState, entry: &Entry) {
        if entry.data.is_empty() {
            state.apply_empty(LogIndex::new(entry.index));
        } else {
            state.apply(
                LogIndex::new(entry.index),
                &Command::decode(&entry.data).unwrap(),
            );
        }
    }

    // Goal: everything a replica stores survives closing and reopening: hard state, conf
    // state, log, snapshot metadata, applied index and the state machine, both from rows
    // alone and from a snapshot image plus rows.
    // Method: bootstrap, persist entries carrying sheets, apply and save some, reopen and
    // compare; compact, apply and save more, reopen and compare again.
    #[test]
    fn durable_across_reopen() {
        let dir = TempDir::new().unwrap();
        let entries = vec![
            found_entry(1, 1),
            command_entry(2, 1, vec![signed(1, 1, 100), signed(2, 1, 50)]),
            command_entry(3, 1, vec![signed(1, 1, 100)]),
            command_entry(4, 2, vec![signed(1, 1, 999)]),
            command_entry(5, 2, vec![signed(1, 2, 120)]),
            command_entry(6, 2, vec![signed(3, 1, 7)]),
        ];
        let mut hard_state = HardState {
            term: 2,
            vote: 1,
            commit: 3,
            ..Default::default()
        };
        let mut state = CountyState::new(definition());
        {
            let storage = DiskStorage::open(dir.path(), &identity(1)).unwrap();
            assert!(!storage.is_initialized());
            storage
                .set_conf_state(&ConfState {
                    voters: vec![1, 2, 3],
                    ..Default::default()
                })
                .unwrap(); // a configuration without the bootstrap snapshot, so the log starts at 1
            assert!(storage.is_initialized());
            storage.persist(None, &entries, Some(&hard_state)).unwrap();
            for entry in &entries[..3] {
                apply(&mut state, entry);
            }
            storage.save_applied(&state).unwrap();
            storage.set_commit(LogIndex::new(5)).unwrap();
            apply(&mut state, &entries[3]);
            apply(&mut state, &entries[4]);
            storage.save_applied(&state).unwrap();
        }
        hard_state.commit = 5;
        {
            let storage = DiskStorage::open(dir.path(), &identity(1)).unwrap();
            let initial = storage.initial_state().unwrap();
            assert_eq!(initial.hard_state, hard_state);
            assert_eq!(initial.conf_state.voters, vec![1, 2, 3]);
            assert_eq!(all_entries(&storage), entries);
            assert_eq!(storage.applied_index(), LogIndex::new(5));
            let loaded = storage.load_state(definition()).unwrap();
            assert_eq!(loaded.fingerprint(), state.fingerprint());
            assert_eq!(loaded.chain_head(), state.chain_head());
            assert_eq!(loaded.ledger(), state.ledger());
            assert_eq!(loaded.conflicts().len(), 1);

            let conf_state = initial.conf_state.clone();
            storage.compact(&state, &conf_state).unwrap();
            apply(&mut state, &entries[5]);
            storage.save_applied(&state).unwrap();
        }
        let storage = DiskStorage::open(dir.path(), &identity(1)).unwrap();
        let metadata = storage.snapshot_metadata();
        assert_eq!((metadata.index, metadata.term), (5, 2));
        assert_eq!(metadata.get_conf_state().voters, vec![1, 2, 3]);
        assert_eq!(storage.first_index(), Ok(6));
        assert_eq!(storage.last_index(), Ok(6));
        assert_eq!(all_entries(&storage), entries[5..].to_vec());
        assert_eq!(storage.applied_index(), LogIndex::new(6));
        let loaded = storage.load_state(definition()).unwrap();
        assert_eq!(loaded.fingerprint(), state.fingerprint());
        assert_eq!(loaded.applied_index(), LogIndex::new(6));
        // The snapshot handed to raft is of the applied state (6), not the stored one (5).
        let snapshot = storage.snapshot(0, 2).unwrap();
        assert_eq!(
            (snapshot.get_metadata().index, snapshot.get_metadata().term),
            (6, 2)
        );
        assert_eq!(
            snapshot.get_metadata().get_conf_state().voters,
            vec![1, 2, 3]
        );
        let from_snapshot = CountyState::restore(definition(), &snapshot.data).unwrap();
        assert_eq!(from_snapshot.applied_index(), LogIndex::new(6));
        assert_eq!(
            from_snapshot.chain_head().length,
            6,
            "the founding and five sheets"
        );
        assert_eq!(from_snapshot.fingerprint(), state.fingerprint());
    }

    // Goal: a follower that installs a leader's snapshot stores its image, and the state
    // rebuilt from storage (after more applies and a reopen) equals the leader's.
    // Method: a leader state at 4 becomes a snapshot; a follower with an older log installs
    // it, appends and applies entry 5, saves, reopens; fingerprints compare.
    #[test]
    fn installed_snapshot_rebuilds_state() {
        let mut leader = CountyState::new(definition());
        leader.apply(
            LogIndex::new(2),
            &Command::decode(&command_entry(2, 1, vec![signed(1, 1, 100)]).data).unwrap(),
        );
        leader.apply_empty(LogIndex::new(4));
        let mut snapshot = new_snapshot(4, 2, vec![1, 2, 3]);
        snapshot.data = leader.snapshot_bytes().into();

        let dir = TempDir::new().unwrap();
        {
            let storage = DiskStorage::open(dir.path(), &identity(2)).unwrap();
            storage
                .set_conf_state(&ConfState {
                    voters: vec![1, 2, 3],
                    ..Default::default()
                })
                .unwrap(); // a configuration without the bootstrap snapshot, so the log starts at 1
            storage.persist(None, &[new_entry(1, 1)], None).unwrap();
            let mut follower = CountyState::new(definition());
            follower.apply_empty(LogIndex::new(1));
            storage.save_applied(&follower).unwrap();

            let next = command_entry(5, 2, vec![signed(2, 1, 40)]);
            storage
                .persist(Some(&snapshot), std::slice::from_ref(&next), None)
                .unwrap();
            let mut follower = storage.load_state(definition()).unwrap();
            assert_eq!(follower.fingerprint(), leader.fingerprint());
            apply(&mut follower, &next);
            apply(&mut leader, &next);
            storage.save_applied(&follower).unwrap();
        }
        let storage = DiskStorage::open(dir.path(), &identity(2)).unwrap();
        assert_eq!(
            storage.load_state(definition()).unwrap().fingerprint(),
            leader.fingerprint()
        );
    }

    // Goal: a directory created for one cluster and replica refuses another, naming both;
    // bootstrap works once.
    // Method: open as replica 1, reopen as replica 2 and as another cluster; bootstrap twice.
    #[test]
    fn identity_and_bootstrap() {
        let dir = TempDir::new().unwrap();
        {
            let storage = DiskStorage::open(dir.path(), &identity(1)).unwrap();
            storage.bootstrap(&[1, 2, 3].map(ReplicaId::new)).unwrap();
            assert!(matches!(
                storage.bootstrap(&[1, 2, 3].map(ReplicaId::new)),
                Err(Error::AlreadyInitialized)
            ));
        }
        let err = DiskStorage::open(dir.path(), &identity(2)).err().unwrap();
        let message = err.to_string();
        assert!(
            message.contains("cluster \"county-test\" replica 1")
                && message.contains("not to cluster \"county-test\" replica 2"),
            "{message}"
        );
        let other = Identity {
            cluster_id: "another".into(),
            replica_id: ReplicaId::new(1),
        };
        let err = DiskStorage::open(dir.path(), &other).err().unwrap();
        assert!(
            err.to_string()
                .contains("not to cluster \"another\" replica 1"),
            "{err}"
        );
        let storage = DiskStorage::open(dir.path(), &identity(1)).unwrap();
        assert!(storage.is_initialized());
        assert!(storage.bootstrap(&[1].map(ReplicaId::new)).is_err());
    }

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

    // Goal: every county database records its schema version; one written by a newer release
    // is refused with an error naming the file, both versions and what to do, and one made
    // before versions were recorded opens as version 1 and is stamped with this version.
    // Method: create a database and read the stamp; set it to one past this binary's and
    // reopen; remove it and reopen.
    #[test]
    fn schema_version_is_written_checked_and_defaults_to_one() {
        let dir = TempDir::new().unwrap();
        {
            let storage = DiskStorage::open(dir.path(), &identity(1)).unwrap();
            storage.bootstrap(&[1, 2, 3].map(ReplicaId::new)).unwrap();
        }
        assert_eq!(stored_version(dir.path()), Some(SCHEMA_VERSION.to_string()));

        let newer = (SCHEMA_VERSION + 1).to_string();
        set_stored_version(dir.path(), Some(&newer));
        let err = DiskStorage::open(dir.path(), &identity(1)).err().unwrap();
        assert!(matches!(err, Error::SchemaTooNew { .. }), "{err}");
        let message = err.to_string();
        let file = dir.path().join(DATABASE_FILE);
        for part in [
            file.display().to_string(),
            format!("schema version {newer}"),
            format!("reads up to version {SCHEMA_VERSION}"),
            "run the tally release that wrote it".to_owned(),
        ] {
            assert!(message.contains(&part), "{message} lacks {part:?}");
        }
        // The refusal changed nothing: the newer release can still open its database.
        assert_eq!(stored_version(dir.path()), Some(newer));

        set_stored_version(dir.path(), None);
        let storage = DiskStorage::open(dir.path(), &identity(1)).unwrap();
        assert!(
            storage.is_initialized(),
            "the old database is read as it is"
        );
        drop(storage);
        assert_eq!(stored_version(dir.path()), Some(SCHEMA_VERSION.to_string()));

        set_stored_version(dir.path(), Some("one"));
        let err = DiskStorage::open(dir.path(), &identity(1)).err().unwrap();
        assert!(
            err.to_string().contains("schema version is corrupt"),
            "{err}"
        );
    }

    // Goal: a version 1 database, whose state image is in `meta`, opens as the same replica:
    // the image moves to `snapshot` and the version is stamped.
    // Method: store, compact and save a state; move the image back into `meta` and stamp
    // version 1, as that release left it; reopen and compare the state and the tables.
    #[test]
    fn version_one_image_moves_out_of_meta() {
        let dir = TempDir::new().unwrap();
        let entries = vec![
            found_entry(2, 1),
            command_entry(3, 1, vec![signed(1, 1, 100), signed(2, 1, 50)]),
            command_entry(4, 1, vec![signed(3, 1, 7)]),
        ];
        let mut state = CountyState::new(definition());
        {
            let storage = DiskStorage::open(dir.path(), &identity(1)).unwrap();
            storage.bootstrap(&[1, 2, 3].map(ReplicaId::new)).unwrap();
            storage.persist(None, &entries, None).unwrap();
            for entry in &entries[..2] {
                apply(&mut state, entry);
            }
            let conf_state = storage.initial_state().unwrap().conf_state;
            storage.compact(&state, &conf_state).unwrap();
            apply(&mut state, &entries[2]);
            storage.save_applied(&state).unwrap();
        }
        {
            let database = Database::create(dir.path().join(DATABASE_FILE)).unwrap();
            let txn = database.begin_write().unwrap();
            {
                let mut images = txn.open_table(SNAPSHOT).unwrap();
                let image = images
                    .remove(SNAPSHOT_DATA)
                    .unwrap()
                    .unwrap()
                    .value()
                    .to_vec();
                let mut meta = txn.open_table(META).unwrap();
                meta.insert(SNAPSHOT_DATA, image.as_slice()).unwrap();
                meta.insert(META_SCHEMA_VERSION, "1".as_bytes()).unwrap();
            }
            txn.commit().unwrap();
        }
        let storage = DiskStorage::open(dir.path(), &identity(1)).unwrap();
        assert_eq!(storage.snapshot_metadata().index, 3);
        assert_eq!(
            storage.load_state(definition()).unwrap().fingerprint(),
            state.fingerprint()
        );
        drop(storage);
        assert_eq!(stored_version(dir.path()), Some(SCHEMA_VERSION.to_string()));
        let database = Database::create(dir.path().join(DATABASE_FILE)).unwrap();
        let txn = database.begin_read().unwrap();
        assert!(
            txn.open_table(META)
                .unwrap()
                .get(SNAPSHOT_DATA)
                .unwrap()
                .is_none()
        );
        assert!(
            txn.open_table(SNAPSHOT)
                .unwrap()
                .get(SNAPSHOT_DATA)
                .unwrap()
                .is_some()
        );
    }
}
