//! `CountyState`, the replicated state machine: the election record (docs/design/record.md):
//! the founding definition, the ledger of recorded sheets, the hash chain over every act, and
//! the evidence (the founding definition and the signed bytes of every recorded sheet).
//!
//! Invariants:
//! - [`CountyState::apply`] is deterministic: it depends only on the state and
//!   `(index, command)`. No clock, no randomness, no hash-map iteration order, no I/O.
//! - Results are a pure function of the record: sheets are counted under the definition the
//!   founding act recorded, never under a replica's own file; before the founding no sheet is
//!   recorded. The first founding fixes the definition; a later one changes nothing.
//! - Every sheet the ledger records (accepted, superseded, or a new conflict) extends the
//!   chain exactly once and is kept as evidence; a duplicate (and a conflicting sheet sent
//!   again) changes nothing.
//! - The evidence, in chain order, determines everything else: replaying it through a fresh
//!   ledger rebuilds the ledger, the conflicts and the chain. Snapshots and the store's rows
//!   rely on this.
//!
//! Apply re-checks only what is cheap. The leader verified each signature and validated each
//! sheet before proposing; repeating Ed25519 on every replica for every entry would cost more
//! than the rest of apply together. What apply checks: the sheet bytes decode within the
//! contract's limits, the key id is a unit's registered key, and the sheet is that unit's own.

use crate::command::Command;
use crate::error::Error;
use crate::ids::LogIndex;
use serde::Serialize;
use sha2::{Digest as _, Sha256};
use std::sync::Arc;
use tally_core::act::SignedAct;
use tally_core::canonical::{DefinitionDigest, digest_of};
use tally_core::committee::Decisions;
use tally_core::definition::{Definition, Mode};
use tally_core::ledger::{ConflictRecord, Digest, Ledger, Submission};
use tally_core::results::{ElectionResult, compute_with};
use tally_core::validate::{self, Code};
use tally_proto::county::{StateImage, decode_image, encode_image};
use tally_proto::{SignedSheet, decode_sheet};

/// The link function lives in `tally-proto`, shared with `tally verify`, which recomputes an
/// evidence bundle's chain offline.
pub use tally_proto::county::{
    Act, CHAIN_DOMAIN, CHAIN_HEAD_EMPTY, ChainRecord, ForwardedBatch, chain_link,
};

/// The refusal code of a sheet applied before the cluster was founded (the services refuse
/// ingests until then, so only a log from before the founding act existed holds one).
pub const NOT_FOUNDED: &str = "not-founded";

/// The refusal code of a sheet of an official election applied before its zero report (the
/// services refuse ingests until then, so only a race with the report's own entry gives one).
pub const NO_ZERO_REPORT: &str = "no-zero-report";

/// The domain separation prefix of [`CountyState::fingerprint`].
const FINGERPRINT_DOMAIN: &[u8; 22] = b"tally.v1.county-state\0";

/// Chain records per shared chunk of [`Records`]: a copy of the records costs one pointer per
/// chunk, and the first push after a copy was taken copies at most this many less one.
pub const RECORDS_PER_CHUNK: usize = 1024;

/// The chain records in chain order, kept in chunks that are shared rather than copied: full
/// chunks never change again, so a clone of `Records` is one pointer per chunk and the open
/// last chunk. The driver hands such a clone to the services, which compute results and
/// stream exports from it while the driver goes on applying (see `crate::reads`).
#[derive(Clone, Default)]
pub struct Records {
    /// Full chunks of exactly [`RECORDS_PER_CHUNK`] records.
    sealed: Vec<Arc<Vec<ChainRecord>>>,
    /// Fewer than [`RECORDS_PER_CHUNK`]; copied on the next push only while a clone holds it.
    open: Arc<Vec<ChainRecord>>,
}

impl Records {
    pub fn len(&self) -> usize {
        self.sealed.len() * RECORDS_PER_CHUNK + self.open.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn get(&self, position: usize) -> Option<&ChainRecord> {
        match self.sealed.get(position / RECORDS_PER_CHUNK) {
            Some(chunk) => chunk.get(position % RECORDS_PER_CHUNK),
            None => self
                .open
                .get(position - self.sealed.len() * RECORDS_PER_CHUNK),
        }
    }

    pub fn last(&self) -> Option<&ChainRecord> {
        self.open
            .last()
            .or_else(|| self.sealed.last().and_then(|chunk| chunk.last()))
    }

    /// The records in chain order.
    pub fn iter(&self) -> impl Iterator<Item = &ChainRecord> {
        self.chunks().flatten()
    }

    /// The records from chain position `from` on.
    pub fn iter_from(&self, from: usize) -> impl Iterator<Item = &ChainRecord> {
        let chunk = from / RECORDS_PER_CHUNK;
        let skip = from % RECORDS_PER_CHUNK;
        self.chunks().skip(chunk).flatten().skip(skip)
    }

    /// The records as consecutive slices, in chain order.
    pub fn chunks(&self) -> impl Iterator<Item = &[ChainRecord]> {
        self.sealed
            .iter()
            .map(|chunk| chunk.as_slice())
            .chain(std::iter::once(self.open.as_slice()))
            .filter(|chunk| !chunk.is_empty())
    }

    pub fn to_vec(&self) -> Vec<ChainRecord> {
        self.iter().cloned().collect()
    }

    fn push(&mut self, record: ChainRecord) {
        Arc::make_mut(&mut self.open).push(record);
        if self.open.len() == RECORDS_PER_CHUNK {
            let full = std::mem::replace(
                &mut self.open,
                Arc::new(Vec::with_capacity(RECORDS_PER_CHUNK)),
            );
            self.sealed.push(full);
        }
    }
}

impl PartialEq for Records {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Eq for Records {}

impl std::fmt::Debug for Records {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// What the services read of the state at one applied index, taken from the driver cheaply
/// ([`CountyState::view`]): the definition, the chain records and the head. The ledger and the
/// conflicts follow from the records (see the module documentation).
#[derive(Debug, Clone)]
pub struct StateView {
    pub definition: Arc<Definition>,
    /// The committee's decisions at the view's log index (shared, copied on a change).
    pub decisions: Arc<Decisions>,
    pub records: Records,
    pub chain: ChainHead,
}

/// The hash chain's head, and the log index the state it describes reflects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ChainHead {
    /// `SHA-256(CHAIN_DOMAIN || previous head || log_index_be || digest)` of the last record;
    /// all zero for an empty chain.
    #[serde(serialize_with = "serialize_hex")]
    pub head: [u8; 32],
    /// The number of records in the chain.
    pub length: u64,
    /// The applied index of the state: the last log index whose command the head reflects
    /// (the head may have been last extended at an earlier index).
    pub log_index: LogIndex,
}

fn serialize_hex<S: serde::Serializer>(bytes: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex::encode(bytes))
}

/// What became of one sheet of a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SheetOutcome {
    /// A new slot or a higher version: it counts now. Recorded, chained.
    Accepted,
    /// The very same bytes are already recorded: nothing changed.
    Duplicate,
    /// Another sheet holds this slot and version: kept for the committee, never counted.
    /// Recorded and chained the first time; sent again, it changes nothing.
    Conflict,
    /// A version lower than the one counted: recorded and chained, not counted.
    Superseded,
    /// Failed a check the leader should have made; nothing changed. `code` is the stable
    /// code of the refusal (E205, E206).
    Refused { code: &'static str, message: String },
}

/// The outcome of applying one command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// One per sheet of the command, in order.
    pub outcomes: Vec<SheetOutcome>,
    /// For a committee act: applied (and chained), or refused with every problem.
    pub act: Option<Result<(), String>>,
}

/// The county state machine.
#[derive(Debug, Clone)]
pub struct CountyState {
    /// The definition in force: the founding one once the founding is applied; before it, the
    /// replica's own, which counts nothing (no sheet is recorded before the founding).
    definition: Arc<Definition>,
    /// The founding definition's digest, once founded.
    founding: Option<DefinitionDigest>,
    /// The log index of the zero report, once recorded: an official election counts no
    /// sheet before it (docs/design/record.md).
    zero_report: Option<u64>,
    ledger: Ledger,
    /// The committee's decisions, confirmations and reopenings (docs/design/committee.md);
    /// shared with the views, copied when an act changes them.
    decisions: Arc<Decisions>,
    /// The evidence in chain order, each with the head after it; the last one's is the head.
    records: Records,
    applied_index: u64,
}

impl CountyState {
    pub fn new(definition: Arc<Definition>) -> Self {
        CountyState {
            definition,
            founding: None,
            zero_report: None,
            ledger: Ledger::new(),
            decisions: Arc::default(),
            records: Records::default(),
            applied_index: 0,
        }
    }

    /// Applies the command of log entry `index`. Deterministic: depends only on the state
    /// and `(index, command)`.
    ///
    /// # Panics
    /// If `index` is not after the applied index: raft delivers each entry once, in order,
    /// so anything else is a bug in the driver, and applying it would fork the chain.
    pub fn apply(&mut self, index: LogIndex, command: &Command) -> Applied {
        let index = index.get();
        assert!(
            index > self.applied_index,
            "apply of log index {index} at applied index {}",
            self.applied_index
        );
        let mut act_outcome = None;
        let outcomes = match command {
            Command::Found { definition } => {
                self.found(index, definition);
                Vec::new()
            }
            Command::Act(act) => {
                act_outcome = Some(self.act(index, act));
                Vec::new()
            }
            Command::Ingest { sheets, .. }
                if self.definition.election.mode == Mode::Official
                    && self.founding.is_some()
                    && self.zero_report.is_none() =>
            {
                sheets
                    .iter()
                    .map(|_| SheetOutcome::Refused {
                        code: NO_ZERO_REPORT,
                        message: "the official count starts from the zero report, which is not recorded yet: the committee signs it (`tally zero-report`), then send the sheets again".into(),
                    })
                    .collect()
            }
            Command::Ingest { sheets, .. } if self.founding.is_none() => sheets
                .iter()
                .map(|_| SheetOutcome::Refused {
                    code: NOT_FOUNDED,
                    message: "the cluster was not founded when this batch was applied, so there was no definition to count it under; send it again".into(),
                })
                .collect(),
            Command::Ingest {
                township,
                sheets,
                countersignature,
            } => {
                // The batch goes with the first sheet the command records, so the chain keeps
                // who forwarded what (docs/design/record.md); the rest share it by log index.
                let mut batch = countersignature.clone().map(|countersignature| {
                    Arc::new(ForwardedBatch {
                        township: township.clone(),
                        digests: sheets.iter().map(SignedSheet::digest).collect(),
                        countersignature,
                    })
                });
                sheets
                .iter()
                .map(|signed| match self.definition.unit_by_key(&signed.key_id) {
                    // Each township forwards only its own units' sheets; the leader checked,
                    // and this cheap check keeps a wrong entry from counting anyway.
                    Some(unit) if unit.township != *township => SheetOutcome::Refused {
                        code: Code::UnitOfAnotherTownship.as_str(),
                        message: format!(
                            "unit {} belongs to township {}, not to {township}, which forwarded it",
                            unit.id, unit.township
                        ),
                    },
                    _ => self.record(index, signed, &mut batch),
                })
                .collect()
            }
        };
        self.applied_index = index;
        Applied {
            outcomes,
            act: act_outcome,
        }
    }

    /// A committee act: its signatures checked against the committee of the definition in
    /// force, then applied to it; recorded and chained only if every check passes, so every
    /// replica (and `tally verify`) decides alike. Before the founding nothing is applied.
    fn act(&mut self, index: u64, act: &SignedAct) -> Result<(), String> {
        if self.founding.is_none() {
            return Err(
                "the cluster was not founded when this act was applied; submit it again".into(),
            );
        }
        let records = &self.records;
        let head_at = |i: u64| Some(head_at(records, i));
        let amended = tally_core::record::apply(
            tally_core::record::Parts {
                definition: &self.definition,
                ledger: &self.ledger,
                zero_report: &mut self.zero_report,
                decisions: Arc::make_mut(&mut self.decisions),
            },
            index,
            act,
            &head_at,
        )?;
        if let Some(amended) = amended {
            self.definition = Arc::new(amended);
        }
        let act = Arc::new(act.clone());
        let head = chain_link(&self.head(), index, &act.link_digest());
        self.records.push(ChainRecord {
            log_index: index,
            act: Act::Committee(act),
            head,
            batch: None,
        });
        Ok(())
    }

    /// Applies an entry that is not a command (raft's empty entry, a configuration change):
    /// only the applied index moves, so the state says which index it reflects.
    ///
    /// # Panics
    /// If `index` is not after the applied index, as [`CountyState::apply`].
    pub fn apply_empty(&mut self, index: LogIndex) {
        let index = index.get();
        assert!(
            index > self.applied_index,
            "apply of log index {index} at applied index {}",
            self.applied_index
        );
        self.applied_index = index;
    }

    /// Sets the applied index stored beside the evidence, when rebuilding a state.
    pub(crate) fn set_applied_index(&mut self, index: LogIndex) {
        let index = index.get();
        debug_assert!(index >= self.applied_index);
        self.applied_index = index;
    }

    /// The founding act: the first one fixes the definition in force and is the first link of
    /// the chain; a later one (proposed by a leader that had not yet seen the first) changes
    /// nothing. An encoding that does not decode to a valid definition is not recorded (every
    /// replica decides so alike); the leader proposes its own definition's encoding, so this
    /// only happens to a corrupted entry. Returns whether it was recorded.
    fn found(&mut self, index: u64, encoding: &[u8]) -> bool {
        if self.founding.is_some() {
            return false;
        }
        // Nearly always the founding definition is the one this state was made with (a
        // replica with another stops: `crate::replica`), and then that one is kept rather than
        // decoded again: a canonical encoding decodes to the definition it came from, and the
        // decode of a county's few megabytes (JSON, TOML, the loader) peaks at some 85 MB of
        // heap for 12,000 polling units, most of which the allocator keeps from the process.
        let definition = if tally_core::canonical::encode(&self.definition) == encoding {
            Arc::clone(&self.definition)
        } else {
            match tally_core::canonical::decode("the founding definition", encoding) {
                Ok(definition) => Arc::new(definition),
                Err(e) => {
                    tracing::error!(log_index = index, "the founding act does not decode: {e}");
                    return false;
                }
            }
        };
        let digest = digest_of(encoding);
        self.definition = definition;
        self.founding = Some(digest);
        let head = chain_link(&self.head(), index, &digest.0);
        self.records.push(ChainRecord {
            log_index: index,
            act: Act::Founding {
                definition: encoding.into(),
            },
            head,
            batch: None,
        });
        true
    }

    /// The founding definition's digest, once the founding is applied.
    pub fn founding(&self) -> Option<DefinitionDigest> {
        self.founding
    }

    /// The log index of the zero report, once recorded.
    pub fn zero_report(&self) -> Option<LogIndex> {
        self.zero_report.map(LogIndex::new)
    }

    /// Checks and records one sheet; extends the chain if the ledger recorded it.
    fn record(
        &mut self,
        index: u64,
        signed: &SignedSheet,
        batch: &mut Option<Arc<ForwardedBatch>>,
    ) -> SheetOutcome {
        let sheet = match decode_sheet(&signed.sheet) {
            Ok(sheet) => sheet,
            Err(source) => {
                let error = match self.definition.unit_by_key(&signed.key_id) {
                    Some(unit) => tally_proto::Error::Malformed {
                        key_id: signed.key_id,
                        unit: unit.id.clone(),
                        source: Box::new(source),
                    },
                    None => tally_proto::Error::malformed_envelope(source),
                };
                return refused(&error);
            }
        };
        let Some(unit) = self.definition.unit_by_key(&signed.key_id) else {
            return refused(&tally_proto::unknown_key(&self.definition, signed));
        };
        if sheet.unit != unit.id {
            return refused(&tally_proto::Error::KeyOfAnotherUnit {
                key_id: signed.key_id,
                key_unit: unit.id.clone(),
                sheet_unit: sheet.unit.clone(),
                label: sheet.label(),
            });
        }
        // Under an amended definition the leader may have checked the sheet before the
        // amendment applied (a withdrawn candidate, a corrected contest): apply checks it
        // again under the definition in force, as `tally verify` does. Without amendments
        // the leader's check stands (the module documentation).
        if !self.definition.amended.amendments.is_empty()
            && let Some((code, message)) =
                validate::refusal(&validate::check_sheet(&self.definition, &sheet))
        {
            return SheetOutcome::Refused {
                code: code.as_str(),
                message,
            };
        }
        let digest = signed.digest();
        let conflicts_before = self.ledger.conflicts().len();
        let (outcome, recorded) = match self.ledger.submit(sheet, digest) {
            Submission::Accepted => (SheetOutcome::Accepted, true),
            Submission::Superseded { .. } => (SheetOutcome::Superseded, true),
            Submission::Duplicate => (SheetOutcome::Duplicate, false),
            // The ledger keeps a conflicting sheet once; sent again it is not recorded again.
            Submission::Conflict { .. } => (
                SheetOutcome::Conflict,
                self.ledger.conflicts().len() > conflicts_before,
            ),
        };
        if recorded {
            let record = ChainRecord {
                log_index: index,
                act: Act::Sheet(signed.clone()),
                head: [0; 32],
                batch: batch.take(),
            };
            let head = chain_link(&self.head(), index, &record.link_digest());
            self.records.push(ChainRecord { head, ..record });
        }
        outcome
    }

    /// Replays one stored record on top of this state: it must be recorded again and give
    /// the stored head. Used to rebuild a state from a snapshot image or stored rows.
    pub(crate) fn replay(&mut self, record: &ChainRecord) -> Result<(), Error> {
        let position = self.records.len() as u64;
        let previous = self.records.last().map_or(0, |r| r.log_index);
        if record.log_index < previous || record.log_index == 0 {
            return Err(Error::OutOfOrder {
                position,
                log_index: LogIndex::new(record.log_index),
                previous: LogIndex::new(previous),
                applied_index: LogIndex::new(self.applied_index),
            });
        }
        let outcome = match &record.act {
            Act::Sheet(signed)
                if self.founding.is_some()
                    && (self.definition.election.mode != Mode::Official
                        || self.zero_report.is_some()) =>
            {
                format!(
                    "{:?}",
                    self.record(record.log_index, signed, &mut record.batch.clone())
                )
            }
            Act::Sheet(_) => {
                "a sheet before the founding, or of an official election before its zero report"
                    .to_owned()
            }
            Act::Committee(act) => match self.act(record.log_index, act) {
                Ok(()) => "applied".to_owned(),
                Err(e) => format!("refused: {e}"),
            },
            Act::Founding { definition } => {
                let recorded = self.found(record.log_index, definition);
                if recorded {
                    "founded".to_owned()
                } else {
                    "a founding that does not decode, or a second one".to_owned()
                }
            }
        };
        if self.records.len() as u64 != position + 1 {
            return Err(Error::NotRecorded {
                position,
                log_index: LogIndex::new(record.log_index),
                outcome,
            });
        }
        if self.head() != record.head {
            return Err(Error::HeadMismatch {
                position,
                log_index: LogIndex::new(record.log_index),
            });
        }
        self.applied_index = self.applied_index.max(record.log_index);
        Ok(())
    }

    /// The election definition (a shared handle).
    pub fn definition(&self) -> Arc<Definition> {
        Arc::clone(&self.definition)
    }

    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    pub fn chain_head(&self) -> ChainHead {
        ChainHead {
            head: self.head(),
            length: self.records.len() as u64,
            log_index: LogIndex::new(self.applied_index),
        }
    }

    pub fn applied_index(&self) -> LogIndex {
        LogIndex::new(self.applied_index)
    }

    /// The chain's head: that of the last record, all zero for an empty chain.
    fn head(&self) -> [u8; 32] {
        self.records.last().map_or(CHAIN_HEAD_EMPTY, |r| r.head)
    }

    /// The evidence in chain order: every recorded sheet as signed, with its log index and
    /// the head after it. `records().iter_from(n)` are the records after the first `n`.
    pub fn records(&self) -> &Records {
        &self.records
    }

    /// The state at its applied index as the services read it, without copying the records:
    /// one pointer per [`RECORDS_PER_CHUNK`] records (the next push copies the open chunk).
    pub fn view(&self) -> StateView {
        StateView {
            definition: Arc::clone(&self.definition),
            decisions: Arc::clone(&self.decisions),
            records: self.records.clone(),
            chain: self.chain_head(),
        }
    }

    /// The digests of the recorded sheets in chain order (each appears once). Hashes every
    /// record, so it is for tests and audits, not for a hot path.
    pub fn recorded_digests(&self) -> Vec<Digest> {
        self.records
            .iter()
            .filter_map(|r| r.act.sheet().map(SignedSheet::digest))
            .collect()
    }

    /// The election result of the counted sheets under the committee's decisions, with the
    /// chain head it reflects.
    pub fn results(&self) -> (ElectionResult, ChainHead) {
        (
            compute_with(&self.definition, &self.ledger, &self.decisions),
            self.chain_head(),
        )
    }

    /// The committee's decisions so far.
    pub fn decisions(&self) -> &Decisions {
        &self.decisions
    }

    /// Refused sheets that claimed a recorded slot and version, in arrival order.
    pub fn conflicts(&self) -> &[ConflictRecord] {
        self.ledger.conflicts()
    }

    /// A full image for a raft snapshot: the evidence in chain order and the applied index.
    pub fn snapshot_bytes(&self) -> Vec<u8> {
        encode_image(&StateImage {
            applied_index: self.applied_index,
            chain_head: self.head(),
            records: self.records.to_vec(),
        })
    }

    /// Rebuilds a state from [`CountyState::snapshot_bytes`] by replaying its records, checking
    /// every link and the final head.
    pub fn restore(definition: Arc<Definition>, bytes: &[u8]) -> Result<Self, Error> {
        let image = decode_image(bytes).map_err(Error::StateImage)?;
        let mut state = CountyState::new(definition);
        for record in &image.records {
            state.replay(record)?;
        }
        let last = state.records.last().map_or(0, |r| r.log_index);
        if image.applied_index < last {
            return Err(Error::OutOfOrder {
                position: state.records.len() as u64 - 1,
                log_index: LogIndex::new(last),
                previous: LogIndex::new(last),
                applied_index: LogIndex::new(image.applied_index),
            });
        }
        if state.head() != image.chain_head {
            return Err(Error::HeadMismatch {
                position: state.records.len() as u64,
                log_index: LogIndex::new(image.applied_index),
            });
        }
        state.applied_index = image.applied_index;
        Ok(state)
    }

    /// A digest of the whole state (evidence, chain and applied index, which determine the
    /// ledger and conflicts), for tests that compare replicas.
    pub fn fingerprint(&self) -> [u8; 32] {
        let mut hasher = Sha256::new();
        hasher.update(FINGERPRINT_DOMAIN);
        hasher.update(self.snapshot_bytes());
        hasher.finalize().into()
    }
}

/// The chain head after the last record at or before log index `index` (the empty chain's
/// head before the first).
fn head_at(records: &Records, index: u64) -> [u8; 32] {
    records
        .iter()
        .take_while(|r| r.log_index <= index)
        .last()
        .map_or(CHAIN_HEAD_EMPTY, |r| r.head)
}

fn refused(error: &tally_proto::Error) -> SheetOutcome {
    SheetOutcome::Refused {
        code: error.code(),
        message: error.to_string(),
    }
}

#[cfg(test)]
pub(crate) mod testkit {
    //! A small election with real keys, and signed sheets for it.

    use super::CountyState;
    use crate::command::Command;
    use crate::ids::LogIndex;
    use ed25519_dalek::SigningKey;
    use std::sync::Arc;
    use tally_core::definition::Definition;
    use tally_core::ids::{CandidateId, ContestId, UnitId};
    use tally_core::sheet::{CandidateCount, CountClosedAt, Round, TallySheet};
    use tally_proto::{SignedSheet, sign};

    /// Units in the fixture.
    pub(crate) const UNITS: u8 = 3;

    /// A state founded with [`definition`] at log index 1, as a cluster's first leader
    /// founds it; tests apply their commands from [`at`]`(1)` = index 2 on.
    pub(crate) fn founded() -> CountyState {
        let mut state = CountyState::new(definition());
        let definition = tally_core::canonical::encode(&definition());
        state.apply(LogIndex::new(1), &Command::Found { definition });
        assert!(state.founding().is_some());
        state
    }

    /// The log index of a test's `n`th entry after the founding.
    pub(crate) fn at(n: u64) -> LogIndex {
        LogIndex::new(n + 1)
    }

    /// The secret key of unit `T1-U{n}`: 32 bytes of `n`. Test keys only.
    pub(crate) fn unit_key(n: u8) -> SigningKey {
        SigningKey::from_bytes(&[n; 32])
    }

    /// The secret key of committee official `O{n}`: 32 bytes of `100 + n`. Test keys only.
    pub(crate) fn official_key(n: u8) -> SigningKey {
        SigningKey::from_bytes(&[100 + n; 32])
    }

    /// An amendment of the test election, signed by officials `O{n}` for each `n` given.
    pub(crate) fn amendment(
        id: &str,
        changes: Vec<tally_core::act::Change>,
        officials: &[u8],
    ) -> tally_core::act::SignedAct {
        let body = tally_core::act::ActBody::Amendment(tally_core::act::Amendment {
            election: "test".into(),
            mode: tally_core::definition::Mode::Rehearsal,
            id: id.into(),
            reason: "设备损坏".into(),
            changes,
        })
        .encode();
        tally_core::act::SignedAct {
            signatures: officials
                .iter()
                .map(|&n| tally_core::act::sign(&body, &format!("O{n}"), &official_key(n)))
                .collect(),
            body,
        }
    }

    /// Township T1, one contest T1-C1 (1 seat, candidates A and B, 900 voters), served by
    /// units T1-U1..T1-U3; a committee of officials O1..O3, two of whom sign an act.
    pub(crate) fn definition() -> Arc<Definition> {
        let mut toml = String::from(
            r#"
[election]
id = "test"
name = "测试选举"

[county]
id = "C"
name = "测试县"
population = 1000
seats = 30

[[townships]]
id = "T1"
name = "一乡"
population = 1000
seats = 20

[[contests]]
id = "T1-C1"
name = "第一选区"
level = "township"
township = "T1"
seats = 1
registered_voters = 900
candidates = [{ id = "T1-C1-A", name = "甲" }, { id = "T1-C1-B", name = "乙" }]
"#,
        );
        toml.push_str("\n[committee]\nthreshold = 2\n");
        for n in 1..=3 {
            let public_key = hex::encode(official_key(n).verifying_key().as_bytes());
            toml.push_str(&format!(
                "[[committee.officials]]\nid = \"O{n}\"\nname = \"委员{n}\"\npublic_key = \"{public_key}\"\n"
            ));
        }
        for n in 1..=UNITS {
            let public_key = hex::encode(unit_key(n).verifying_key().as_bytes());
            toml.push_str(&format!(
                "\n[[units]]\nid = \"T1-U{n}\"\nname = \"站{n}\"\nkind = \"station\"\ntownship = \"T1\"\ncontests = [\"T1-C1\"]\npublic_key = \"{public_key}\"\n"
            ));
        }
        Arc::new(
            tally_core::definition::load("test.toml", &toml, &mut |path| {
                Err(format!("no file {path} in tests"))
            })
            .expect("the test definition is valid"),
        )
    }

    /// Unit `n`'s sheet, version `version`, with `approvals` for candidate A (and 10 for B).
    pub(crate) fn sheet(n: u8, version: u32, approvals: u64) -> TallySheet {
        TallySheet {
            unit: UnitId::new(format!("T1-U{n}")),
            contest: ContestId::new("T1-C1"),
            round: Round::FIRST,
            version,
            replaces_version: (version > 1).then(|| version - 1),
            registered_voters: 300,
            ballots_issued: 200,
            ballots_collected: 200,
            ballots_void: 0,
            ballots_valid: 200,
            ballots_blank: 0,
            proxies: 0,
            candidates: vec![
                CandidateCount {
                    candidate: CandidateId::new("T1-C1-A"),
                    approvals,
                    disapprovals: None,
                    abstentions: None,
                },
                CandidateCount {
                    candidate: CandidateId::new("T1-C1-B"),
                    approvals: 10,
                    disapprovals: None,
                    abstentions: None,
                },
            ],
            write_ins: vec![],
            scrutineers: vec!["张三".into(), "李四".into()],
            counters: vec!["赵六".into()],
            count_closed_at: CountClosedAt {
                unix_seconds: 1_795_861_800,
                utc_offset_minutes: 480,
            },
        }
    }

    /// [`sheet`] signed by its own unit.
    pub(crate) fn signed(n: u8, version: u32, approvals: u64) -> SignedSheet {
        sign(
            &sheet(n, version, approvals),
            &unit_key(n),
            &definition().election,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::testkit::*;
    use super::*;
    use proptest::prelude::*;
    use tally_core::ids::TownshipId;
    use tally_proto::sign;

    fn ingest(sheets: Vec<SignedSheet>) -> Command {
        Command::Ingest {
            township: TownshipId::new("T1"),
            sheets,
            countersignature: None,
        }
    }

    fn digest(signed: &SignedSheet) -> Digest {
        signed.digest()
    }

    // Goal: a sheet forwarded by a township other than its unit's is never recorded, even if
    // a leader proposed it. Method: apply a batch as township "T9" holding a T1 unit's sheet;
    // the outcome is E210, the chain stays empty, the applied index moves.
    #[test]
    fn a_sheet_of_another_townships_unit_is_refused() {
        let mut state = founded();
        let applied = state.apply(
            at(2),
            &Command::Ingest {
                township: TownshipId::new("T9"),
                sheets: vec![signed(1, 1, 100)],
                countersignature: None,
            },
        );
        assert!(matches!(
            &applied.outcomes[..],
            [SheetOutcome::Refused { code: "E210", message }] if message.contains("T1-U1")
        ));
        assert_eq!(state.records().len(), 1, "only the founding");
        assert_eq!(state.applied_index(), at(2));
    }

    // Goal: a sheet is recorded exactly once: the same bytes again are a duplicate and leave
    // the ledger and the chain as they were; the chain link is the documented hash.
    // Method: apply one sheet at index 3, then the same sheet at index 4; recompute the head.
    #[test]
    fn exactly_once() {
        let mut state = founded();
        let founding_head = state.chain_head().head;
        let sheet = signed(1, 1, 100);
        let applied = state.apply(at(3), &ingest(vec![sheet.clone()]));
        assert_eq!(applied.outcomes, vec![SheetOutcome::Accepted]);
        let head = state.chain_head();
        let expected = chain_link(&founding_head, 4, &digest(&sheet));
        assert_eq!(
            head,
            ChainHead {
                head: expected,
                length: 2,
                log_index: at(3)
            }
        );
        let mut by_hand = Sha256::new();
        by_hand.update(b"tally.v1.chain\0");
        by_hand.update(founding_head);
        by_hand.update([0, 0, 0, 0, 0, 0, 0, 4]);
        by_hand.update(digest(&sheet));
        assert_eq!(expected, <[u8; 32]>::from(by_hand.finalize()));

        let ledger_before = state.ledger().clone();
        let applied = state.apply(at(4), &ingest(vec![sheet]));
        assert_eq!(applied.outcomes, vec![SheetOutcome::Duplicate]);
        assert_eq!(state.ledger(), &ledger_before);
        assert_eq!(
            (state.chain_head().head, state.chain_head().length),
            (expected, 2)
        );
        assert_eq!(state.applied_index(), at(4));
        assert_eq!(state.records().len(), 2);
    }

    // Goal: a conflicting sheet (same slot and version, other bytes) is recorded, chained
    // once, flagged, and not counted; sent again it changes nothing.
    // Method: apply version 1 with 100 approvals, then version 1 with 999 twice.
    #[test]
    fn conflict_recorded_not_counted() {
        let mut state = founded();
        let first = signed(1, 1, 100);
        let conflicting = signed(1, 1, 999);
        state.apply(at(1), &ingest(vec![first]));
        let applied = state.apply(at(2), &ingest(vec![conflicting.clone()]));
        assert_eq!(applied.outcomes, vec![SheetOutcome::Conflict]);
        assert_eq!(state.chain_head().length, 3, "the founding and two sheets");
        assert_eq!(state.conflicts().len(), 1);
        assert_eq!(state.conflicts()[0].conflicting, digest(&conflicting));
        let counted: Vec<_> = state.ledger().counted().collect();
        assert_eq!(counted.len(), 1);
        assert_eq!(counted[0].candidates[0].approvals, 100);

        let head = state.chain_head().head;
        let applied = state.apply(at(3), &ingest(vec![conflicting]));
        assert_eq!(applied.outcomes, vec![SheetOutcome::Conflict]);
        assert_eq!(state.chain_head().head, head);
        assert_eq!(state.chain_head().length, 3);
        assert_eq!(state.conflicts().len(), 1);
    }

    // Goal: a correction (a higher version) counts and the lower version stays recorded; a
    // late lower version is superseded, recorded and chained; the result shows the correction.
    // Method: apply v1, v2, then v1 of another unit and v1 of unit 1 again, in one command.
    #[test]
    fn correction_counted() {
        let mut state = founded();
        state.apply(at(1), &ingest(vec![signed(1, 2, 150)]));
        let applied = state.apply(at(2), &ingest(vec![signed(1, 1, 100), signed(2, 1, 50)]));
        assert_eq!(
            applied.outcomes,
            vec![SheetOutcome::Superseded, SheetOutcome::Accepted]
        );
        assert_eq!(
            state.chain_head().length,
            4,
            "the founding and three sheets"
        );
        assert_eq!(state.ledger().recorded_len(), 3);
        let (result, head) = state.results();
        assert_eq!(head, state.chain_head());
        let round = &result.contests[0].rounds[0];
        assert_eq!(round.units_reported, 2);
        let a = round
            .votes
            .iter()
            .find(|v| v.name == "甲")
            .expect("candidate A has votes");
        assert_eq!(a.votes, 200);
    }

    // Goal: the cheap checks refuse what the leader should not have proposed, changing
    // nothing: bytes that are not a sheet (E206), a key no unit has (E205), a unit's key on
    // another unit's sheet (E205).
    // Method: apply one command with each, and a good sheet after them.
    #[test]
    fn cheap_checks_refuse() {
        let mut state = founded();
        let mut garbage = signed(1, 1, 100);
        garbage.sheet = vec![0xff; 10];
        let unknown = tally_proto::sign(
            &sheet(1, 1, 100),
            &unit_key(9),
            &state.definition().election,
        );
        let other = tally_proto::sign(
            &sheet(1, 1, 100),
            &unit_key(2),
            &state.definition().election,
        );
        let applied = state.apply(
            at(1),
            &ingest(vec![garbage, unknown, other, signed(3, 1, 5)]),
        );
        let codes: Vec<_> = applied
            .outcomes
            .iter()
            .map(|o| match o {
                SheetOutcome::Refused { code, .. } => *code,
                _ => "ok",
            })
            .collect();
        assert_eq!(codes, vec!["E206", "E205", "E205", "ok"]);
        assert_eq!(state.chain_head().length, 2, "the founding and one sheet");
        assert_eq!(state.ledger().recorded_len(), 1);
    }

    // Goal: apply is deterministic, and a snapshot image restores to the same state.
    // Method: feed two states the same commands; compare fingerprints, heads, ledgers; then
    // restore one from its snapshot bytes and compare again, and apply more to both.
    #[test]
    fn deterministic_and_snapshot_round_trip() {
        let commands = [
            ingest(vec![signed(1, 1, 100), signed(2, 1, 80)]),
            ingest(vec![signed(1, 1, 101)]),
            ingest(vec![signed(1, 2, 120), signed(2, 1, 80)]),
        ];
        let mut a = founded();
        let mut b = founded();
        for (i, command) in commands.iter().enumerate() {
            a.apply(at(i as u64 + 1), command);
            b.apply(at(i as u64 + 1), command);
        }
        a.apply_empty(at(5));
        b.apply_empty(at(5));
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert_eq!(a.chain_head(), b.chain_head());

        let restored = CountyState::restore(definition(), &a.snapshot_bytes()).unwrap();
        assert_eq!(restored.fingerprint(), a.fingerprint());
        assert_eq!(restored.chain_head(), a.chain_head());
        assert_eq!(restored.ledger(), a.ledger());
        assert_eq!(restored.conflicts(), a.conflicts());
        assert_eq!(restored.applied_index(), at(5));

        let mut restored = restored;
        let more = ingest(vec![signed(3, 1, 7)]);
        restored.apply(at(6), &more);
        a.apply(at(6), &more);
        assert_eq!(restored.fingerprint(), a.fingerprint());
        assert_ne!(a.fingerprint(), b.fingerprint());
    }

    // Goal: nothing is recorded before the founding; the first founding fixes the definition
    // in force (not the replica's own) and is the chain's first link over the definition
    // digest; a second founding changes nothing.
    // Method: a state built with another definition (a different voter count) gets a sheet
    // (refused, not founded), then the founding of the test definition, then a second
    // founding of the other one; check outcomes, the definition in force, the chain.
    #[test]
    fn the_first_founding_fixes_the_definition() {
        let ours = definition();
        let mut other = (*ours).clone();
        other.contests[0].registered_voters += 1;
        let other = Arc::new(other);
        let mut state = CountyState::new(other.clone());
        let applied = state.apply(LogIndex::new(1), &ingest(vec![signed(1, 1, 100)]));
        assert!(matches!(
            &applied.outcomes[..],
            [SheetOutcome::Refused {
                code: NOT_FOUNDED,
                ..
            }]
        ));
        assert!(state.records().is_empty() && state.founding().is_none());

        let encoding = tally_core::canonical::encode(&ours);
        state.apply(
            LogIndex::new(2),
            &Command::Found {
                definition: encoding.clone(),
            },
        );
        let digest = tally_core::canonical::digest(&ours);
        assert_eq!(state.founding(), Some(digest));
        assert_eq!(tally_core::canonical::digest(&state.definition()), digest);
        assert_eq!(state.records().len(), 1);
        assert_eq!(
            state.chain_head().head,
            chain_link(&CHAIN_HEAD_EMPTY, 2, &digest.0)
        );
        let head = state.chain_head().head;
        let second = tally_core::canonical::encode(&other);
        state.apply(LogIndex::new(3), &Command::Found { definition: second });
        assert_eq!(state.founding(), Some(digest));
        assert_eq!((state.records().len(), state.chain_head().head), (1, head));
        // Restored from its image, the state has the founding definition too.
        let restored = CountyState::restore(other, &state.snapshot_bytes()).unwrap();
        assert_eq!(restored.founding(), Some(digest));
        assert_eq!(restored.fingerprint(), state.fingerprint());
    }

    // Goal: an amendment signed by k officials changes the definition in force from its log
    // index on, is chained, and survives a snapshot: the replaced key is refused after it
    // (E214) while the sheet it signed before stands, and the new key counts. An act with
    // too few signatures, or replayed, is refused and changes nothing.
    // Method: record unit 1's sheet; apply an amendment replacing unit 1's key signed by one
    // official (refused), then by two (applied), then again (refused as a replay); send a
    // version 2 signed by the old key and by the new one; restore from the image.
    #[test]
    fn an_amendment_applies_from_its_log_index() {
        use tally_core::act::Change;
        let mut state = founded();
        state.apply(at(1), &ingest(vec![signed(1, 1, 100)]));
        let new_key = ed25519_dalek::SigningKey::from_bytes(&[0x51; 32]);
        let change = || {
            vec![Change::ReplaceKey {
                unit: tally_core::ids::UnitId::new("T1-U1"),
                public_key: hex::encode(new_key.verifying_key().as_bytes()),
            }]
        };
        let before = state.chain_head();
        let one = state.apply(at(2), &Command::Act(amendment("A-1", change(), &[1])));
        let Some(Err(problems)) = &one.act else {
            panic!("{one:?}")
        };
        assert!(
            problems.contains("1 valid signature(s) of the 2"),
            "{problems}"
        );
        assert_eq!(state.chain_head().head, before.head);

        let applied = state.apply(at(3), &Command::Act(amendment("A-1", change(), &[1, 3])));
        assert_eq!(applied.act, Some(Ok(())));
        assert_eq!(state.records().len(), 3);
        assert!(matches!(
            state.records().last().unwrap().act,
            Act::Committee(_)
        ));
        let replayed = state.apply(at(4), &Command::Act(amendment("A-1", change(), &[1, 2])));
        assert!(
            matches!(&replayed.act, Some(Err(p)) if p.contains("already in force (log index 4)")),
            "{replayed:?}"
        );

        let old = state.apply(at(5), &ingest(vec![signed(1, 2, 150)]));
        assert!(
            matches!(&old.outcomes[..], [SheetOutcome::Refused { code: "E214", message }] if message.contains("amendment A-1")),
            "{old:?}"
        );
        let renewed = sign(&sheet(1, 2, 150), &new_key, &definition().election);
        let new = state.apply(at(6), &ingest(vec![renewed]));
        assert_eq!(new.outcomes, [SheetOutcome::Accepted]);
        let (result, _) = state.results();
        assert_eq!(result.amendments.len(), 1);
        assert_eq!(
            (
                result.amendments[0].id.as_str(),
                result.amendments[0].log_index
            ),
            ("A-1", 4)
        );
        // The first sheet, signed by the old key before the amendment, stays in the record.
        assert_eq!(state.recorded_digests().len(), 2);

        let restored = CountyState::restore(definition(), &state.snapshot_bytes()).unwrap();
        assert_eq!(restored.fingerprint(), state.fingerprint());
        assert_eq!(restored.definition().amended, state.definition().amended);
        assert_eq!(restored.results().0, result);
    }

    // Goal: a founding of the state's own definition keeps that definition (shared, not
    // decoded again), and the state is the one a decoded founding gives.
    // Method: found a state made with the test definition and one made with another, with the
    // test definition's encoding; apply the same ingest to both; compare.
    #[test]
    fn founding_of_the_own_definition_keeps_it() {
        let ours = definition();
        let mut other = (*ours).clone();
        other.contests[0].registered_voters += 1;
        let mut kept = CountyState::new(ours.clone());
        let mut decoded = CountyState::new(Arc::new(other));
        let found = Command::Found {
            definition: tally_core::canonical::encode(&ours),
        };
        let more = ingest(vec![signed(1, 1, 100), signed(2, 1, 50)]);
        for state in [&mut kept, &mut decoded] {
            state.apply(LogIndex::new(1), &found);
            state.apply(LogIndex::new(2), &more);
        }
        assert!(Arc::ptr_eq(&kept.definition(), &ours));
        assert!(!Arc::ptr_eq(&decoded.definition(), &ours));
        assert_eq!(
            tally_core::canonical::encode(&decoded.definition()),
            tally_core::canonical::encode(&ours)
        );
        assert_eq!(kept.founding(), decoded.founding());
        assert_eq!(kept.fingerprint(), decoded.fingerprint());
        assert_eq!(kept.results(), decoded.results());
    }

    // Goal: the countersigned batch stays in the chain: on the first sheet its command
    // recorded (not on a duplicate, not repeated on the others), in the link, and in a
    // restored state; a command whose sheets are all duplicates adds nothing.
    // Method: a countersigned ingest of sheets 1 (already recorded), 2 and 3; then the same
    // command again; then restore from the snapshot image.
    #[test]
    fn the_batch_goes_with_its_first_recorded_sheet() {
        let mut state = founded();
        state.apply(at(1), &ingest(vec![signed(1, 1, 100)]));
        let sheets = vec![signed(1, 1, 100), signed(2, 1, 50), signed(3, 1, 5)];
        let township = TownshipId::new("T1");
        let key = ed25519_dalek::SigningKey::from_bytes(&[0x31; 32]);
        let countersignature =
            tally_proto::countersign(&definition().election, &township, &sheets, &key);
        let command = Command::Ingest {
            township: township.clone(),
            sheets: sheets.clone(),
            countersignature: Some(countersignature.clone()),
        };
        state.apply(at(2), &command);
        let records = state.records().to_vec();
        assert_eq!(records.len(), 4, "the founding and three sheets");
        let batch = records[2]
            .batch
            .as_deref()
            .expect("the first recorded sheet has it");
        assert_eq!(records[2].act, Act::Sheet(sheets[1].clone()));
        assert_eq!(batch.township, township);
        assert_eq!(batch.countersignature, countersignature);
        assert_eq!(
            batch.digests,
            sheets.iter().map(SignedSheet::digest).collect::<Vec<_>>(),
            "every sheet of the batch, the duplicate too"
        );
        assert!(records[1].batch.is_none() && records[3].batch.is_none());
        assert_eq!(
            records[2].head,
            chain_link(&records[1].head, at(2).get(), &records[2].link_digest())
        );
        assert_ne!(records[2].link_digest(), sheets[1].digest());

        let head = state.chain_head();
        state.apply(at(3), &command);
        assert_eq!(
            state.chain_head().head,
            head.head,
            "a resend changes nothing"
        );
        let restored = CountyState::restore(definition(), &state.snapshot_bytes()).unwrap();
        assert_eq!(restored.fingerprint(), state.fingerprint());
        assert_eq!(restored.records().to_vec(), state.records().to_vec());
    }

    // Goal: a corrupt image is an error, never a wrong state.
    // Method: change the stored head of one record; change the chain head; cut the bytes.
    #[test]
    fn corrupt_image_refused() {
        let mut state = founded();
        state.apply(at(1), &ingest(vec![signed(1, 1, 100), signed(2, 1, 80)]));
        let image = decode_image(&state.snapshot_bytes()).unwrap();

        let mut bad = image.clone();
        bad.records[0].head[0] ^= 1;
        let err = CountyState::restore(definition(), &encode_image(&bad)).unwrap_err();
        assert!(
            matches!(err, Error::HeadMismatch { position: 0, .. }),
            "{err}"
        );

        let mut bad = image.clone();
        bad.chain_head[0] ^= 1;
        assert!(CountyState::restore(definition(), &encode_image(&bad)).is_err());

        let mut bad = image.clone();
        bad.records.push(bad.records[1].clone());
        let err = CountyState::restore(definition(), &encode_image(&bad)).unwrap_err();
        assert!(
            matches!(err, Error::NotRecorded { position: 3, .. }),
            "{err}"
        );

        let bytes = state.snapshot_bytes();
        assert!(CountyState::restore(definition(), &bytes[..bytes.len() - 1]).is_err());
    }

    // Goal: the chunked records behave as one list: positions, order, `iter_from`, `last`
    // across chunk boundaries, and a copy taken earlier keeps what it saw while the original
    // grows (the driver hands such copies to readers).
    // Method: push 2.5 chunks of records one by one, taking a copy after each push in the
    // first chunk and at each boundary; compare everything with a plain Vec.
    #[test]
    fn records_are_shared_in_chunks() {
        let record = |i: usize| ChainRecord {
            log_index: i as u64 + 1,
            act: Act::Sheet(signed(1, 1, 100)),
            head: [(i % 251) as u8; 32],
            batch: None,
        };
        let total = RECORDS_PER_CHUNK * 5 / 2;
        let mut records = Records::default();
        let mut plain = Vec::new();
        let mut copies = Vec::new();
        assert!(records.is_empty() && records.last().is_none());
        for i in 0..total {
            records.push(record(i));
            plain.push(record(i));
            if i < 3 || (i + 1) % RECORDS_PER_CHUNK == 0 || i + 1 == total {
                copies.push((records.clone(), plain.clone()));
            }
        }
        assert_eq!(records.len(), total);
        assert_eq!(records.to_vec(), plain);
        assert_eq!(records.last(), plain.last());
        for from in [
            0,
            1,
            RECORDS_PER_CHUNK - 1,
            RECORDS_PER_CHUNK,
            total - 1,
            total,
        ] {
            assert!(
                records.iter_from(from).eq(plain[from..].iter()),
                "from {from}"
            );
        }
        for position in [0, RECORDS_PER_CHUNK - 1, RECORDS_PER_CHUNK, total - 1] {
            assert_eq!(records.get(position), Some(&plain[position]));
        }
        assert_eq!(records.get(total), None);
        for (copy, then) in copies {
            assert_eq!(copy.len(), then.len());
            assert!(copy.iter().eq(then.iter()));
            assert_eq!(copy.last(), then.last());
        }
    }

    /// A sheet drawn from a small space so that duplicates, corrections, superseded versions
    /// and conflicts all occur: unit 1..=3 (sometimes signed with another unit's key),
    /// version 1..=3, approvals 0..=2.
    fn arbitrary_sheet() -> impl Strategy<Value = SignedSheet> {
        (1..=UNITS, 1..=3u32, 0..=2u64, 0..8u8).prop_map(|(n, version, approvals, key)| {
            let signer = if key == 0 { n % UNITS + 1 } else { n };
            tally_proto::sign(
                &sheet(n, version, approvals),
                &unit_key(signer),
                &definition().election,
            )
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        // Goal: any command sequence gives equal states on two replicas, and the ledger is
        // exactly a plain `Ledger` fed the sheets that pass the cheap checks; the snapshot
        // restores to the same fingerprint.
        // Method: random batches of random sheets; apply to two fresh states at increasing
        // indexes with gaps; feed a Ledger alongside; compare.
        #[test]
        fn any_sequence_is_deterministic(
            batches in prop::collection::vec(prop::collection::vec(arbitrary_sheet(), 0..5), 0..12),
            gaps in prop::collection::vec(1..3u64, 12),
        ) {
            let mut a = founded();
            let mut b = founded();
            let mut plain = Ledger::new();
            let mut index = 0;
            for (batch, gap) in batches.into_iter().zip(gaps) {
                index += gap;
                for signed in &batch {
                    let sheet = decode_sheet(&signed.sheet).unwrap();
                    if sheet.unit == a.definition().unit_by_key(&signed.key_id).unwrap().id {
                        plain.submit(sheet, digest(signed));
                    }
                }
                let command = ingest(batch);
                let outcome_a = a.apply(at(index), &command);
                let outcome_b = b.apply(at(index), &command);
                prop_assert_eq!(outcome_a, outcome_b);
            }
            prop_assert_eq!(a.fingerprint(), b.fingerprint());
            prop_assert_eq!(a.chain_head(), b.chain_head());
            prop_assert_eq!(a.ledger(), &plain);
            let restored = CountyState::restore(definition(), &a.snapshot_bytes()).unwrap();
            prop_assert_eq!(restored.fingerprint(), a.fingerprint());
            prop_assert_eq!(restored.ledger(), a.ledger());
        }
    }
}
