//! Storage failures of a replica: telling a full disk from another I/O error, so that the
//! replica's last status, its log line and its exit status say which (docs/design/county.md,
//! "When the disk fails").
//!
//! A replica whose store fails does not try to write again: after a failed write or fsync the
//! kernel may have dropped the pages it could not write and marked them clean ("fsyncgate";
//! etcd, TigerBeetle and PostgreSQL treat it as fatal for the same reason), and redb answers
//! every later write "Previous I/O error occurred" until the database is opened again. The
//! driver stops, the status says `stopped` with this module's message, and `tally county`
//! exits with [`EXIT_STORAGE`] so that systemd starts it again; the new process reads only
//! what redb's commit protocol says was committed, and raft sends it whatever it lacks.

use crate::error::Error;
use crate::ids::ReplicaId;
use std::error::Error as StdError;
use std::io;

/// The exit status of a replica whose storage failed (a full disk, an I/O error): 74,
/// `EX_IOERR` in sysexits.h. Any status but 0 makes systemd's `Restart=on-failure` start it
/// again.
pub const EXIT_STORAGE: u8 = 74;
/// The exit status of a replica whose driver stopped for another reason (a panic, a lost log,
/// an entry that does not decode): 70, `EX_SOFTWARE` in sysexits.h.
pub const EXIT_DRIVER: u8 = 70;
/// The exit status of a replica whose election definition is not the cluster's founding one:
/// 78, `EX_CONFIG` in sysexits.h. Starting it again changes nothing until its operator
/// gives it the founding definition (the systemd unit does not restart it on 78).
pub const EXIT_DEFINITION: u8 = 78;

/// The I/O error at the bottom of `error`, if there is one. redb's errors do not report their
/// cause as a `source`, so they are looked into by hand.
pub fn io_cause<'a>(error: &'a (dyn StdError + 'static)) -> Option<&'a io::Error> {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            return Some(io);
        }
        if let Some(redb::Error::Io(io)) = e.downcast_ref::<redb::Error>() {
            return Some(io);
        }
        if let Some(redb::StorageError::Io(io)) = e.downcast_ref::<redb::StorageError>() {
            return Some(io);
        }
        next = e.source();
    }
    None
}

/// Whether an I/O error means the filesystem has no room (ENOSPC, or a quota: EDQUOT).
pub fn is_disk_full(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    )
}

/// Whether the driver stopped because its storage failed (as opposed to a bug or a lost log).
pub fn is_storage_failure(error: &Error) -> bool {
    match error {
        Error::Storage(inner) if matches!(**inner, Error::Database(_) | Error::Io { .. }) => true,
        other => io_cause(other).is_some(),
    }
}

/// What the replica's status and log say when its driver stopped on `error`.
pub fn stop_reason(replica: ReplicaId, error: &Error) -> String {
    if io_cause(error).is_some_and(is_disk_full) {
        format!(
            "replica {replica}'s disk is full ({error}); nothing more is written or acknowledged here: the process exits with status {EXIT_STORAGE} and systemd starts it again; free space on the disk of its data_dir, and it catches up from the other replicas"
        )
    } else if is_storage_failure(error) {
        format!(
            "replica {replica}'s storage failed ({error}); nothing more is written or acknowledged here: the process exits with status {EXIT_STORAGE} and systemd starts it again; check the disk of its data_dir (the kernel log says more)"
        )
    } else {
        error.to_string()
    }
}

/// Whether `error`, or an error it was caused by, is a definition that is not the founding one.
pub fn definition_differs(error: &Error) -> bool {
    match error {
        Error::DefinitionDiffers { .. } => true,
        Error::Open { open: inner, .. } | Error::DataDir { source: inner, .. } => {
            definition_differs(inner)
        }
        _ => false,
    }
}

/// The exit status for a driver that stopped on `error`.
pub fn exit_status(error: &Error) -> u8 {
    if definition_differs(error) {
        EXIT_DEFINITION
    } else if is_storage_failure(error) {
        EXIT_STORAGE
    } else {
        EXIT_DRIVER
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::LogIndex;

    // Goal: a full disk is told apart through redb's error, which hides its cause. Method:
    // wrap ENOSPC the way the storage layer does and look for it.
    #[test]
    fn a_full_disk_is_found_under_redb() {
        let enospc = io::Error::from_raw_os_error(28);
        let error = Error::storage(Error::Database(redb::Error::Io(enospc)));
        assert!(is_storage_failure(&error));
        assert!(io_cause(&error).is_some_and(is_disk_full));
        assert!(stop_reason(ReplicaId::new(2), &error).starts_with("replica 2's disk is full"));
        assert_eq!(exit_status(&error), EXIT_STORAGE);

        let eio = io::Error::from_raw_os_error(5);
        let error = Error::storage(Error::Database(redb::Error::Io(eio)));
        assert!(!io_cause(&error).is_some_and(is_disk_full));
        assert!(stop_reason(ReplicaId::new(2), &error).starts_with("replica 2's storage failed"));

        let previous = Error::storage(Error::Database(redb::Error::PreviousIo));
        assert_eq!(exit_status(&previous), EXIT_STORAGE);
        let lost = Error::LostLog {
            leader: ReplicaId::new(1),
            commit: LogIndex::new(9),
            last_index: LogIndex::new(3),
        };
        assert_eq!(exit_status(&lost), EXIT_DRIVER);
    }
}
