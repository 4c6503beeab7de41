//! A disk that can lose power, under redb (`redb::StorageBackend`).
//!
//! Each file keeps two images: what the running process sees (every write it made) and what
//! survives a power cut (the file as of its last `sync_data`), and the writes and length
//! changes made since that sync, in order. Three ways a replica can stop:
//!
//! - a clean stop: redb closes the file (its shutdown header and fsync go through);
//! - a kill ([`Disk::kill`]): the process dies, the operating system keeps every write it made
//!   (still unsynced: a later power cut can lose them);
//! - a power cut ([`Disk::power_cut`]): the file becomes what was synced plus, drawn from the
//!   seed, nothing more, or an in-order prefix of the unsynced writes whose last one is torn,
//!   or any subset of them, each whole or torn.
//!
//! redb keeps the pages of a commit in its own memory until the commit's fsync, and writes
//! them all just before it, so between two of the simulation's steps a file has no unsynced
//! writes: a power cut there loses only what the process held in memory. The cut that tears
//! is the one during a commit, between its writes and its fsync: [`Disk::arm`] makes the file
//! lose power at its n-th next `sync_data`, which then fails (the process sees an I/O error
//! and stops writing; the schedule then stops its host, see [`Disk::take_fired`]).
//!
//! The third is as much as redb's design allows a disk to do (docs/design.md of redb 4,
//! "Assumptions about underlying media"): single bytes are written whole, a write touches no
//! bytes outside its range, and what was written before an `fsync` is durable after it. Writes
//! between two fsyncs may land in any order, or not at all. A torn write keeps a prefix of its
//! bytes, cut at any byte.
//!
//! After a kill or a power cut the old process's database may still be dropped (turmoil drops
//! a crashed host's runtime): its handle belongs to an older generation of the file, and what
//! it writes then is discarded, as nothing reaches a disk from a dead process; it reads the
//! file as it last saw it.

/// Part of the error a file answers when its power was cut during a commit; the simulation
/// expects the replica's error log that follows.
pub const POWER_CUT_MARKER: &str = "simulated power cut";

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use tally_county::storage::StorageBackend;
use tally_synth::Rng;

/// A change to a file not yet synced.
#[derive(Clone)]
enum Op {
    Write { offset: u64, data: Vec<u8> },
    SetLen(u64),
}

#[derive(Default)]
struct FileState {
    /// What the running process sees.
    current: Vec<u8>,
    /// What survives a power cut.
    synced: Vec<u8>,
    /// Changes since the last sync, in the order they were made.
    unsynced: Vec<Op>,
    /// The generation of the process allowed to change the file.
    generation: u64,
    /// What the process that lost power last saw, for its reads until its host is stopped.
    dead_view: Option<Vec<u8>>,
    /// A power cut waiting for the file's n-th next sync.
    armed: Option<Armed>,
    /// An armed cut that happened, until the schedule takes it.
    fired: Option<CutReport>,
}

struct Armed {
    syncs_left: u32,
    mode: CutMode,
    rng: Rng,
}

impl FileState {
    /// The power goes: the file becomes what `mode` keeps of it, and the running process can
    /// no longer change it.
    fn cut(&mut self, mode: CutMode, rng: &mut Rng) -> CutReport {
        self.generation += 1;
        self.armed = None;
        let unsynced = std::mem::take(&mut self.unsynced);
        let mut report = CutReport {
            unsynced_writes: unsynced
                .iter()
                .filter(|op| matches!(op, Op::Write { .. }))
                .count() as u64,
            ..CutReport::default()
        };
        let mut image = self.synced.clone();
        match mode {
            CutMode::LoseAll => {}
            CutMode::TornPrefix => {
                let reached = (rng.next() % (unsynced.len() as u64 + 1)) as usize;
                for (i, op) in unsynced.iter().take(reached).enumerate() {
                    match op {
                        Op::SetLen(len) => image.resize(*len as usize, 0),
                        Op::Write { offset, data } if i + 1 == reached => {
                            let cut = (rng.next() % (data.len() as u64 + 1)) as usize;
                            apply_write(&mut image, *offset, &data[..cut]);
                            if cut < data.len() {
                                report.torn += 1;
                            } else {
                                report.kept_whole += 1;
                            }
                        }
                        Op::Write { offset, data } => {
                            apply_write(&mut image, *offset, data);
                            report.kept_whole += 1;
                        }
                    }
                }
            }
            CutMode::AnySubset => {
                // The length is the synced one or the last one set; a kept write beyond it
                // extends the file (its metadata reached the disk with it).
                if rng.next().is_multiple_of(2)
                    && let Some(len) = unsynced.iter().rev().find_map(|op| match op {
                        Op::SetLen(len) => Some(*len),
                        Op::Write { .. } => None,
                    })
                {
                    image.resize(len as usize, 0);
                }
                for op in &unsynced {
                    let Op::Write { offset, data } = op else {
                        continue;
                    };
                    match rng.next() % 4 {
                        0 => {}
                        1 => {
                            let cut = (rng.next() % (data.len() as u64 + 1)) as usize;
                            apply_write(&mut image, *offset, &data[..cut]);
                            report.torn += u64::from(cut < data.len());
                            report.kept_whole += u64::from(cut == data.len());
                        }
                        _ => {
                            apply_write(&mut image, *offset, data);
                            report.kept_whole += 1;
                        }
                    }
                }
            }
        }
        self.synced = image.clone();
        self.dead_view = Some(std::mem::replace(&mut self.current, image));
        report
    }
}

/// How a power cut left a file, for the run's figures.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CutReport {
    /// Unsynced writes at the moment of the cut.
    pub unsynced_writes: u64,
    /// Of those, how many reached the disk whole.
    pub kept_whole: u64,
    /// And how many reached it torn (a prefix of their bytes).
    pub torn: u64,
}

/// How a power cut treats the unsynced writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CutMode {
    /// Every unsynced write is lost.
    LoseAll,
    /// The unsynced writes reach the disk in order up to one, which is torn.
    TornPrefix,
    /// Any of the unsynced writes reach the disk, each whole or torn, in any order.
    AnySubset,
}

impl fmt::Display for CutMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CutMode::LoseAll => "every unsynced write lost",
            CutMode::TornPrefix => "unsynced writes kept in order up to a torn one",
            CutMode::AnySubset => "any unsynced writes kept, some torn",
        })
    }
}

/// Every file of a simulated run, by name; shared by the replicas (which open files on it) and
/// the fault schedule (which kills them and cuts their power).
#[derive(Default, Clone)]
pub struct Disk {
    files: Arc<Mutex<BTreeMap<String, Arc<Mutex<FileState>>>>>,
}

fn lock(file: &Mutex<FileState>) -> MutexGuard<'_, FileState> {
    // A panic under the lock happens between whole operations (each is applied under one
    // lock), so the state is still consistent.
    file.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Disk {
    fn file(&self, name: &str) -> Arc<Mutex<FileState>> {
        self.files
            .lock()
            .unwrap()
            .entry(name.to_owned())
            .or_default()
            .clone()
    }

    /// Opens `name` (made empty the first time) for a new process: handles of earlier
    /// processes can no longer change it.
    pub fn open(&self, name: &str) -> Box<dyn StorageBackend> {
        let file = self.file(name);
        let generation = {
            let mut state = lock(&file);
            state.generation += 1;
            state.dead_view = None;
            state.generation
        };
        Box::new(PowerLossFile {
            name: name.to_owned(),
            file,
            generation,
        })
    }

    /// The process that has `name` open dies; its writes stay, unsynced.
    pub fn kill(&self, name: &str) {
        let file = self.file(name);
        let mut state = lock(&file);
        state.generation += 1;
        state.armed = None;
        state.dead_view = None;
    }

    /// The machine holding `name` loses power now, treating unsynced writes as `mode` says.
    pub fn power_cut(&self, name: &str, mode: CutMode, rng: &mut Rng) -> CutReport {
        lock(&self.file(name)).cut(mode, rng)
    }

    /// The machine holding `name` will lose power at the file's `syncs`-th next `sync_data`
    /// (during a commit, its writes made and not yet synced), treating them as `mode` says.
    pub fn arm(&self, name: &str, syncs: u32, mode: CutMode, rng: Rng) {
        lock(&self.file(name)).armed = Some(Armed {
            syncs_left: syncs.max(1),
            mode,
            rng,
        });
    }

    /// Takes back a cut armed and not yet happened.
    pub fn disarm(&self, name: &str) {
        lock(&self.file(name)).armed = None;
    }

    /// What an armed cut did, once it happened (then the host is to be stopped).
    pub fn take_fired(&self, name: &str) -> Option<CutReport> {
        lock(&self.file(name)).fired.take()
    }
}

/// Writes `data` at `offset`, extending the image with zeros if it ends past it.
fn apply_write(image: &mut Vec<u8>, offset: u64, data: &[u8]) {
    let end = offset as usize + data.len();
    if image.len() < end {
        image.resize(end, 0);
    }
    image[offset as usize..end].copy_from_slice(data);
}

/// One process's handle on a file of the [`Disk`].
struct PowerLossFile {
    name: String,
    file: Arc<Mutex<FileState>>,
    generation: u64,
}

impl fmt::Debug for PowerLossFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PowerLossFile")
            .field("name", &self.name)
            .field("generation", &self.generation)
            .finish()
    }
}

impl PowerLossFile {
    /// The file's state if this handle's process is still the one running, else `None`.
    fn live(&self) -> Option<MutexGuard<'_, FileState>> {
        let state = lock(&self.file);
        (state.generation == self.generation).then_some(state)
    }
}

impl StorageBackend for PowerLossFile {
    fn len(&self) -> std::io::Result<u64> {
        Ok(lock(&self.file).current.len() as u64)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        let state = lock(&self.file);
        let image = match &state.dead_view {
            Some(seen) if state.generation != self.generation => seen,
            _ => &state.current,
        };
        let source = image
            .get(offset as usize..offset as usize + out.len())
            .ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!(
                        "{}: read of {} bytes at {offset} past its end ({})",
                        self.name,
                        out.len(),
                        image.len()
                    ),
                )
            })?;
        out.copy_from_slice(source);
        Ok(())
    }

    fn set_len(&self, len: u64) -> std::io::Result<()> {
        // A dead process's changes go nowhere; it is told they were made, as it would be by a
        // page cache that is about to vanish.
        if let Some(mut state) = self.live() {
            state.current.resize(len as usize, 0);
            state.unsynced.push(Op::SetLen(len));
        }
        Ok(())
    }

    fn sync_data(&self) -> std::io::Result<()> {
        if let Some(mut state) = self.live() {
            if let Some(armed) = &mut state.armed {
                armed.syncs_left -= 1;
                if armed.syncs_left == 0 {
                    let Armed { mode, mut rng, .. } = state.armed.take().expect("armed");
                    let report = state.cut(mode, &mut rng);
                    state.fired = Some(report);
                    return Err(std::io::Error::other(format!(
                        "{}: the power went during this fsync ({POWER_CUT_MARKER})",
                        self.name
                    )));
                }
            }
            let unsynced = std::mem::take(&mut state.unsynced);
            for op in unsynced {
                match op {
                    Op::SetLen(len) => state.synced.resize(len as usize, 0),
                    Op::Write { offset, data } => apply_write(&mut state.synced, offset, &data),
                }
            }
            debug_assert_eq!(state.synced.len(), state.current.len());
        }
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        if let Some(mut state) = self.live() {
            let end = offset as usize + data.len();
            if end > state.current.len() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!(
                        "{}: write of {} bytes at {offset} past its end ({})",
                        self.name,
                        data.len(),
                        state.current.len()
                    ),
                ));
            }
            state.current[offset as usize..end].copy_from_slice(data);
            state.unsynced.push(Op::Write {
                offset,
                data: data.to_vec(),
            });
        }
        Ok(())
    }
}
