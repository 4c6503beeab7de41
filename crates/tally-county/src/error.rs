//! The crate's one error type, [`Error`]: why a log entry is not a command, why a state does
//! not rebuild, why the storage or the replica's driver failed, why a data directory does not
//! open, and why a read was not answered. Messages are lowercase without a trailing period and
//! byte-identical to those operators, tests and docs quote; a layer that adds context (the
//! driver's `storage: `, the storage's `stored county state does not rebuild: `, the server's
//! `data_dir {dir}: `) wraps the inner error in its own variant.
//!
//! Why a write or a read was not done is a value, [`WriteError`] (the service turns it into a
//! gRPC code), carried here by [`Error::Write`]. [`status`] is the one place an [`Error`]
//! becomes a `tonic::Status`.

use std::path::PathBuf;

use crate::ids::{LogIndex, ReplicaId};

/// How a write ended when it was not applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteError {
    NotLeader {
        leader: Option<ReplicaId>,
    },
    Dropped,
    Abandoned,
    /// The cluster's founding act is not applied yet, so there is no definition to count under.
    NotFounded,
    Stopped(String),
    /// A linearizable read that raft will not answer (no leader, the leadership changed, or it
    /// waited [`READ_WAIT_MAX`](crate::node::READ_WAIT_MAX)); nothing was read.
    ReadDropped(String),
}

/// What the caller is told. Not an [`std::error::Error`]: it is a reason, carried by
/// [`crate::Error::Write`] where it meets other errors.
impl std::fmt::Display for WriteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WriteError::NotLeader { leader } => {
                write!(f, "this replica is not the leader (leader: {leader:?})")
            }
            WriteError::Dropped => f.write_str(
                "the proposal was dropped (a leadership transfer or a new election is in progress); send it again",
            ),
            WriteError::NotFounded => f.write_str(
                "the cluster is being founded (its first leader is recording the election definition); send it again in a moment",
            ),
            WriteError::Abandoned => f.write_str(
                "the entry was overtaken by a new leader before it was committed; send it again (a sheet recorded meanwhile is answered as a duplicate)",
            ),
            WriteError::Stopped(reason) => write!(f, "the replica stopped: {reason}"),
            WriteError::ReadDropped(reason) => {
                write!(f, "the read was not confirmed: {reason}; send it again")
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    // A raft log entry (command.rs).
    /// Raft's own empty entry; not an error for the driver, which skips it.
    #[error("the log entry is empty: raft's own entry, not a command")]
    EmptyEntry,
    #[error("the log entry is not a county command: {0}")]
    NotACommand(tally_proto::Error),

    // A snapshot image or stored rows rebuilt into a state (state.rs). Each means the bytes
    // are corrupt or were made for another election definition.
    /// This replica's definition is not the one the cluster was founded with.
    #[error(
        "this replica's election definition is not the one the cluster was founded with: the founding definition's digest is {founding}, this replica's is {ours}; first difference: {difference}. Nothing was changed. Start the replica with the founding definition (every replica's `tally cluster status` shows its digest), or found a new cluster for a new definition"
    )]
    DefinitionDiffers {
        founding: tally_core::canonical::DefinitionDigest,
        ours: tally_core::canonical::DefinitionDigest,
        difference: String,
    },
    #[error("the county state image does not decode: {0}")]
    StateImage(tally_proto::Error),
    #[error(
        "chain record {position} (log index {log_index}) was not recorded again when replayed ({outcome}); the evidence is corrupt or belongs to another election definition"
    )]
    NotRecorded {
        position: u64,
        log_index: LogIndex,
        outcome: String,
    },
    #[error(
        "chain record {position} (log index {log_index}) gives another head when replayed than the one stored; the evidence is corrupt"
    )]
    HeadMismatch { position: u64, log_index: LogIndex },
    #[error(
        "chain record {position} has log index {log_index}, before the {previous} of the record before it or after the applied index {applied_index}"
    )]
    OutOfOrder {
        position: u64,
        log_index: LogIndex,
        previous: LogIndex,
        applied_index: LogIndex,
    },

    // The replica's storage (storage.rs).
    #[error("cannot create the data directory {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("storage database: {0}")]
    Database(#[from] redb::Error),
    #[error(
        "{path} is in use by another process (is this replica already running?); stop it first, or give this replica its own data_dir"
    )]
    InUse { path: PathBuf },
    #[error(
        "the data directory {dir} belongs to cluster {stored_cluster:?} replica {stored_replica}, not to cluster {cluster:?} replica {replica}; check the configuration, or give a new replica an empty directory and a new id"
    )]
    IdentityMismatch {
        dir: PathBuf,
        stored_cluster: String,
        stored_replica: ReplicaId,
        cluster: String,
        replica: ReplicaId,
    },
    #[error(
        "the replica is already initialized (it has a configuration or a log); bootstrap only an empty founding replica"
    )]
    AlreadyInitialized,
    #[error(
        "{path} was written by a newer tally (storage schema version {stored}; this binary reads up to version {supported}); run the tally release that wrote it, or restore this data directory from a backup made by this release"
    )]
    SchemaTooNew {
        path: PathBuf,
        stored: u32,
        supported: u32,
    },
    #[error("stored {what} is corrupt: {problem}")]
    Corrupt { what: String, problem: String },
    /// A state error met while the storage rebuilt its state.
    #[error("stored county state does not rebuild: {0}")]
    StoredState(#[source] Box<Error>),
    #[error("snapshot at index {index} is not newer than the stored one at {snapshot_index}")]
    SnapshotOutOfDate {
        index: LogIndex,
        snapshot_index: LogIndex,
    },
    #[error(
        "entries from index {first} would overwrite the compacted log (first index {first_index})"
    )]
    OverwriteCompacted {
        first: LogIndex,
        first_index: LogIndex,
    },
    #[error("entries from index {first} would leave a gap after the last index {last_index}")]
    LogGap {
        first: LogIndex,
        last_index: LogIndex,
    },
    #[error("entries to append are not consecutive: index {found} where {expected} was due")]
    EntriesNotConsecutive { expected: LogIndex, found: LogIndex },
    #[error("cannot compact to applied index {index}: the log ends at {last_index}")]
    CompactBeyondLog {
        index: LogIndex,
        last_index: LogIndex,
    },
    #[error(
        "the state to save has {records} chain records and applied index {applied_index}, behind the stored {stored_records} and {stored_applied_index}"
    )]
    StateBehind {
        records: u64,
        applied_index: LogIndex,
        stored_records: u64,
        stored_applied_index: LogIndex,
    },

    // The replica's driver (replica.rs, node.rs).
    /// A storage error met by the driver.
    #[error("storage: {0}")]
    Storage(#[source] Box<Error>),
    #[error("raft: {0}")]
    Raft(#[from] raft::Error),
    #[error("a committed entry at index {index} cannot be decoded: {message}")]
    BadEntry { index: LogIndex, message: String },
    /// The leader says entries this replica acknowledged are committed, but its log does not
    /// have them: its data directory lost them (wiped, or restored from an older copy).
    #[error(
        "replica {leader} leads with entries up to {commit} committed, which this replica acknowledged, but its log ends at {last_index}: its data directory lost them (made again or restored from an older copy); a replica that lost its data must not rejoin under its old id: stop it, remove it (`tally cluster remove`) and add it under a new id with an empty data directory (`tally cluster add`)"
    )]
    LostLog {
        leader: ReplicaId,
        commit: LogIndex,
        last_index: LogIndex,
    },
    #[error("cannot start the replica's driver thread: {0}")]
    Thread(std::io::Error),

    // Opening a replica (server.rs): the storage's or the driver's error, with its data_dir.
    #[error("data_dir {dir}: {source}")]
    DataDir {
        dir: PathBuf,
        #[source]
        source: Box<Error>,
    },

    // Serving a replica from its config (server.rs's `serve`).
    /// The replica's TLS files, or its certificate is not this replica's (`file` is the
    /// config file). The message includes the cause.
    #[error("{file}: [tls]{message}")]
    Tls { file: PathBuf, message: String },
    /// The data directory could not be opened (`file` is the config file).
    #[error("{file}: {open}")]
    Open { file: PathBuf, open: Box<Error> },
    /// The gRPC server could not start or failed; the message includes the cause.
    #[error("{0}")]
    Server(String),

    // Reads (reads.rs, node.rs).
    /// A write or read the driver did not do.
    #[error("{0}")]
    Write(WriteError),
    /// A recorded sheet did not decode again, or the computation panicked: a bug.
    #[error("computing the results failed (a bug; the replica's log has it): {0}")]
    Compute(String),
}

impl From<WriteError> for Error {
    fn from(reason: WriteError) -> Self {
        Error::Write(reason)
    }
}

impl Error {
    /// `error` met by the driver: its message gets the `storage: ` prefix.
    pub fn storage(error: Error) -> Error {
        Error::Storage(Box::new(error))
    }

    /// `error` met while the storage rebuilt its state.
    pub fn stored_state(error: Error) -> Error {
        Error::StoredState(Box::new(error))
    }
}

impl From<Error> for raft::Error {
    fn from(error: Error) -> Self {
        raft::Error::Store(raft::StorageError::Other(Box::new(error)))
    }
}

/// The one place an [`Error`] becomes a gRPC status: a write or read not done is UNAVAILABLE
/// (the caller sends it again, to the leader if one is named); anything else is INTERNAL.
pub fn status(error: Error) -> tonic::Status {
    match error {
        Error::Write(reason) => unavailable(reason),
        other => tonic::Status::internal(other.to_string()),
    }
}

/// A write or read the driver did not do, as the caller is told: UNAVAILABLE, so it sends
/// again (to the leader, when one is named).
pub fn unavailable(reason: WriteError) -> tonic::Status {
    match reason {
        WriteError::NotLeader { leader } => tonic::Status::unavailable(format!(
            "this replica is not the leader (leader: {}); send again",
            leader.map_or("unknown".to_owned(), |l| format!("replica {l}"))
        )),
        other => tonic::Status::unavailable(other.to_string()),
    }
}
