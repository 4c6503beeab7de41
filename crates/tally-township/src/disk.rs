//! The township's database as the writer and the forwarder reach it, and what happens when the
//! disk fails under it (docs/design/township.md, "When the disk fails").
//!
//! After a failed write redb answers every later one "Previous I/O error occurred" until the
//! database is closed and opened again. So a write that fails for a storage reason (a full
//! disk, an I/O error) closes the store here, and is never acknowledged: its callers are told
//! the township's disk is full (RESOURCE_EXHAUSTED) or failed (UNAVAILABLE), and that nothing of
//! their call was stored. The next write that comes (a submit, an import, a county answer)
//! opens the database again first, which redb does from what its commit protocol says was
//! committed, and the book is rebuilt from what it then holds: memory never runs ahead of the
//! disk, even when the failed transaction reached the disk after all. While the cause lasts
//! (the disk still full) the open fails too and the caller is answered the same; once space
//! is freed the township takes sheets and records the county's answers again by itself.
//!
//! Why reopen rather than exit as a county replica does: a process restart would read the
//! same file through the same page cache, so it gains nothing over closing and opening the
//! database; and a township that stays up keeps answering its polling units "the disk is
//! full" (a process that exits answers nothing, and its units would be told "is it
//! running?") and keeps showing its picture, while every acknowledged sheet stays on disk.

use crate::book::{Book, lock};
use crate::error::Error;
use crate::store::Store;
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tally_core::ids::TownshipId;
use tonic::Status;

/// Why the township cannot store anything now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// ENOSPC or a quota: the disk has no room.
    pub disk_full: bool,
    /// The error as the operating system or redb said it.
    pub cause: String,
    /// The data directory, whose disk is to be mended.
    pub dir: PathBuf,
}

impl Failure {
    /// The answer to a caller whose call stored nothing because of this failure.
    pub fn status(&self) -> Status {
        if self.disk_full {
            Status::resource_exhausted(format!(
                "the township's disk is full ({}): its operator frees space on the disk of {}; nothing of this call was stored: send it again once there is room (the aggregator takes sheets again by itself)",
                self.cause,
                self.dir.display()
            ))
        } else {
            Status::unavailable(format!(
                "the township's disk failed ({}): its operator checks the disk of {} (the aggregator's log says more); nothing of this call was stored: send it again later (the aggregator takes sheets again by itself once its database opens)",
                self.cause,
                self.dir.display()
            ))
        }
    }

    /// One line for the log and the forwarder's last error.
    pub fn describe(&self) -> String {
        if self.disk_full {
            format!(
                "the township's disk is full ({}); free space on the disk of {}",
                self.cause,
                self.dir.display()
            )
        } else {
            format!(
                "the township's disk failed ({}); check the disk of {}",
                self.cause,
                self.dir.display()
            )
        }
    }
}

/// The I/O error at the bottom of a store error, if there is one (redb's errors do not give
/// their cause as a `source`).
fn io_cause(error: &Error) -> Option<&io::Error> {
    match error {
        Error::Io { source, .. } => Some(source),
        Error::Database(redb::Error::Io(e)) => Some(e),
        _ => None,
    }
}

/// Whether a store error is the disk's doing (the store must be opened again), as opposed to
/// a mistake in what was asked or a corrupt record.
fn is_storage_failure(error: &Error) -> bool {
    matches!(
        error,
        Error::Io { .. }
            | Error::Database(
                redb::Error::Io(_)
                    | redb::Error::PreviousIo
                    | redb::Error::Backend(_)
                    | redb::Error::DatabaseClosed
            )
    )
}

fn is_disk_full(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    )
}

/// The township's store, closed after a storage failure and opened again by the next caller.
pub(crate) struct Disk {
    dir: PathBuf,
    township: TownshipId,
    slot: Mutex<Slot>,
}

struct Slot {
    /// `None` once a storage failure closed it.
    store: Option<Arc<Store>>,
    /// The failure that closed it, until a write succeeds again: opening the database needs no
    /// free space, so a store opened again on a disk that is still full says nothing yet, and
    /// the clerk's picture would show all well between the open and the next failed write.
    failure: Option<Failure>,
}

impl Disk {
    pub(crate) fn new(store: Store, township: TownshipId) -> Disk {
        Disk {
            dir: store.dir().to_owned(),
            township,
            slot: Mutex::new(Slot {
                store: Some(Arc::new(store)),
                failure: None,
            }),
        }
    }

    /// The store while it is open, without blocking (`None` once a failure closed it).
    pub(crate) fn open_store(&self) -> Option<Arc<Store>> {
        self.lock().store.clone()
    }

    /// The storage failure not yet followed by a successful write, if there is one.
    pub(crate) fn failure(&self) -> Option<Failure> {
        self.lock().failure.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Slot> {
        // The slot is replaced whole under the lock; a panic elsewhere leaves it consistent.
        self.slot
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The store, opened again first when a storage failure closed it, in which case `book`
    /// is rebuilt from what the database holds. Blocking: call it on the blocking pool.
    pub(crate) fn store(&self, book: &Mutex<Book>) -> Result<Arc<Store>, Failure> {
        let mut slot = self.lock();
        if let Some(store) = &slot.store {
            return Ok(store.clone());
        }
        let previous = slot
            .failure
            .clone()
            .unwrap_or_else(|| self.failure_of("closed", false));
        let opened = Store::open(&self.dir, &self.township)
            .and_then(|(store, loaded)| Book::rebuild(loaded).map(|rebuilt| (store, rebuilt)));
        match opened {
            Ok((store, rebuilt)) => {
                {
                    let mut book = lock(book);
                    let generation = book.generation + 1;
                    let county_reachable = book.county_reachable;
                    let last_error = std::mem::take(&mut book.last_error);
                    *book = rebuilt;
                    book.generation = generation;
                    book.county_reachable = county_reachable;
                    book.last_error = last_error;
                }
                let store = Arc::new(store);
                slot.store = Some(store.clone());
                // Kept until a write succeeds ([`Disk::wrote`]): the disk may still be full.
                slot.failure = Some(previous.clone());
                tracing::info!(
                    township = %self.township,
                    data_dir = %self.dir.display(),
                    "the township's database is open again after a storage failure ({}); the next write tells whether there is room again",
                    previous.cause
                );
                Ok(store)
            }
            // Another handle of the old database is still being dropped: the same failure.
            Err(Error::InUse { .. }) => Err(previous),
            Err(e) => {
                let failure = if is_storage_failure(&e) {
                    self.classify(&e).unwrap_or(previous)
                } else {
                    self.failure_of(&e.to_string(), false)
                };
                tracing::debug!(township = %self.township, error = %e, "the township's database does not open yet");
                slot.failure = Some(failure.clone());
                Err(failure)
            }
        }
    }

    /// Called after a write on `store` committed: a storage failure before it is over.
    pub(crate) fn wrote(&self, store: &Arc<Store>) {
        let mut slot = self.lock();
        if slot.failure.is_none() || !slot.store.as_ref().is_some_and(|s| Arc::ptr_eq(s, store)) {
            return;
        }
        if let Some(previous) = slot.failure.take() {
            tracing::warn!(
                township = %self.township,
                data_dir = %self.dir.display(),
                "the township writes to its database again after a storage failure ({}); it takes sheets again",
                previous.cause
            );
        }
    }

    /// Called with the error of a write made on `store`: when it is the disk's doing, closes
    /// the store (the next caller opens it again) and returns the failure; otherwise `None`.
    pub(crate) fn failed(&self, store: &Arc<Store>, error: &Error) -> Option<Failure> {
        if !is_storage_failure(error) {
            return None;
        }
        let mut slot = self.lock();
        // "Previous I/O error" hides the cause: keep the one that closed the store.
        let failure = match (self.classify(error), &slot.failure) {
            (Some(failure), _) => failure,
            (None, Some(known)) => known.clone(),
            (None, None) => self.failure_of(&error.to_string(), false),
        };
        if slot.store.as_ref().is_some_and(|s| Arc::ptr_eq(s, store)) {
            slot.store = None;
            tracing::error!(
                township = %self.township,
                data_dir = %self.dir.display(),
                error = %error,
                "{}; nothing more is stored or acknowledged until the database opens again (tried at the next submit or county answer)",
                failure.describe()
            );
        }
        slot.failure = Some(failure.clone());
        Some(failure)
    }

    /// The failure an I/O error makes, when the error has one at its bottom.
    fn classify(&self, error: &Error) -> Option<Failure> {
        io_cause(error).map(|io| self.failure_of(&io.to_string(), is_disk_full(io)))
    }

    fn failure_of(&self, cause: &str, disk_full: bool) -> Failure {
        Failure {
            disk_full,
            cause: cause.to_owned(),
            dir: self.dir.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Goal: a full disk is told apart from another I/O error and from a corrupt record, and
    // its answer says so. Method: classify the errors redb gives.
    #[test]
    fn a_full_disk_is_resource_exhausted_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let township = TownshipId::new("T01");
        let (store, _) = Store::open(dir.path(), &township).unwrap();
        let disk = Disk::new(store, township);
        let full = Error::Database(redb::Error::Io(io::Error::from_raw_os_error(28)));
        let failure = disk.classify(&full).unwrap();
        assert!(failure.disk_full);
        let status = failure.status();
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert!(
            status.message().starts_with("the township's disk is full"),
            "{}",
            status.message()
        );
        assert!(status.message().contains("nothing of this call was stored"));

        let eio = Error::Database(redb::Error::Io(io::Error::from_raw_os_error(5)));
        let failure = disk.classify(&eio).unwrap();
        assert!(!failure.disk_full);
        assert_eq!(failure.status().code(), tonic::Code::Unavailable);

        assert!(is_storage_failure(&Error::Database(
            redb::Error::PreviousIo
        )));
        assert!(!is_storage_failure(&Error::Corrupt {
            what: "x".into(),
            problem: "y".into()
        }));
    }
}
