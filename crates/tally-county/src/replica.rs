//! The consensus driver of one replica: a raft-rs `RawNode` over [`DiskStorage`], with the
//! [`CountyState`] it applies committed entries to.
//!
//! The driver does no I/O of its own beyond the storage it owns and reads no clock: the caller
//! ticks it on a fixed interval, steps it with received messages, and sends the messages each
//! [`Replica::handle_ready`] returns. That keeps the same code usable under tokio, in the
//! deterministic in-process cluster of the tests, and in a simulation.
//!
//! `handle_ready` follows the safe order of `../shared/design/replication-notes.md`:
//! send the leader's messages at once; persist snapshot, entries and hard state in one fsynced
//! transaction; install the snapshot's state; apply committed entries; only then send the
//! messages that had to wait for persistence; advance; handle the light ready likewise.

use crate::command::Command;
use crate::error::Error;
use crate::error::WriteError;
use crate::ids::{LogIndex, ReplicaId, Term};
use crate::state::{Applied, ChainHead, CountyState};
use crate::storage::DiskStorage;
use raft::eraftpb::{
    ConfChangeType, ConfChangeV2, Entry, EntryType, Message, MessageType, Snapshot,
};
use raft::{RawNode, ReadState, StateRole, Storage};
use std::collections::HashMap;
use std::sync::Arc;
use tally_core::canonical::DefinitionDigest;
use tally_core::definition::Definition;

/// Ticks without hearing from a leader before a follower campaigns (with PreVote first).
pub const ELECTION_TICKS: usize = 10;
/// Ticks between a leader's heartbeats.
pub const HEARTBEAT_TICKS: usize = 3;
/// Bound on the bytes of entries in one append message.
pub const MESSAGE_BYTES_MAX: u64 = 4 << 20;
/// Bound on append messages in flight to one follower.
pub const INFLIGHT_MESSAGES_MAX: usize = 256;
/// Applied entries kept in the log before it is compacted into a snapshot (the default of
/// [`Options::compact_after_entries`]).
pub const LOG_ENTRIES_BEFORE_COMPACTION: u64 = 10_000;

/// Tunables of one replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// Applied entries kept in the log before it is compacted into a snapshot.
    pub compact_after_entries: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            compact_after_entries: LOG_ENTRIES_BEFORE_COMPACTION,
        }
    }
}

/// Identifies a proposal of this replica, so its outcome can be returned to whoever asked.
/// Carried in the entry's context: the proposing replica's id, then this number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProposalId(pub u64);

/// What one ready cycle produced.
#[derive(Debug, Default)]
pub struct ReadyOutput {
    /// Raft messages to send, in order.
    pub messages: Vec<Message>,
    /// Outcomes of this replica's proposals that were applied.
    pub applied: Vec<AppliedProposal>,
    /// This replica's proposals that will never be answered here: another entry was committed
    /// at the index they were appended at (a newer leader overwrote them, so they were not
    /// committed), or a snapshot covered that index (their outcome is unknown here). The
    /// submitter retries; a sheet sent again is recognized as a duplicate.
    pub abandoned: Vec<ProposalId>,
    /// Read requests (by their context) that are now safe to answer: the index they need has
    /// been applied.
    pub reads_ready: Vec<Vec<u8>>,
    /// Each single change of the configuration changes applied, with the context it was
    /// proposed with (the address of an added replica).
    pub conf_changes: Vec<AppliedConfChange>,
}

/// A proposal of this replica, applied: what became of each sheet, and where in the log and
/// the hash chain it landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedProposal {
    pub id: ProposalId,
    pub applied: Applied,
    /// The chain after the command: its head, length, and the command's log index.
    pub chain: ChainHead,
}

/// One change of membership, as applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedConfChange {
    pub change: ConfChangeType,
    pub node: ReplicaId,
    /// The proposer's context: for an added replica, the address it is reached at.
    pub context: Vec<u8>,
}

/// The leader's view of one other replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerProgress {
    pub id: ReplicaId,
    /// The highest log index known to be in its log.
    pub matched: LogIndex,
    /// `probe`, `replicate` or `snapshot` (a snapshot is being sent to it).
    pub state: &'static str,
    pub voter: bool,
}

/// A snapshot of the replica's view, for the status API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaStatus {
    pub id: ReplicaId,
    pub role: StateRole,
    pub term: Term,
    pub leader: Option<ReplicaId>,
    pub commit_index: LogIndex,
    pub applied_index: LogIndex,
    pub first_index: LogIndex,
    pub last_index: LogIndex,
    pub voters: Vec<ReplicaId>,
    pub learners: Vec<ReplicaId>,
    /// For the leader: every replica's progress (its own included).
    pub progress: Vec<PeerProgress>,
}

pub struct Replica {
    id: ReplicaId,
    raw: RawNode<DiskStorage>,
    storage: DiskStorage,
    state: CountyState,
    next_proposal: u64,
    /// Read requests waiting for their index to be applied.
    pending_reads: Vec<ReadState>,
    /// Proposals whose outcome this replica reports: proposal number → the log index its
    /// entry was appended at. Only the entry committed at that index, with that number in
    /// its context, answers it (numbers restart with the process; indexes do not repeat).
    proposals_in_flight: HashMap<u64, u64>,
    options: Options,
    /// This replica's own definition, as loaded from its file: proposed as the founding act by
    /// a first leader, and checked against the founding one (docs/design/record.md).
    local: Arc<Definition>,
    /// Its digest. The encoding itself (megabytes for a large county) is made only when the
    /// founding is proposed, and not kept.
    local_digest: DefinitionDigest,
    /// The term in which this replica last proposed the founding act, so it proposes it once
    /// per term of its leadership until it is applied.
    founding_proposed: Option<u64>,
}

fn bad_entry(entry: &Entry, message: String) -> Error {
    Error::BadEntry {
        index: LogIndex::new(entry.index),
        message,
    }
}

/// Decodes a committed conf change entry (either version of the message).
fn decode_conf_change<M: protobuf::Message + Default>(entry: &Entry) -> Result<M, Error> {
    let mut change = M::default();
    change
        .merge_from_bytes(&entry.data)
        .map_err(|e| bad_entry(entry, e.to_string()))?;
    Ok(change)
}

/// Whether the state's founding definition (if it has one yet) is this replica's own.
fn check_founding(
    state: &CountyState,
    local: &Definition,
    local_digest: DefinitionDigest,
) -> Result<(), Error> {
    match state.founding() {
        Some(founding) if founding != local_digest => Err(Error::DefinitionDiffers {
            founding,
            ours: local_digest,
            difference: tally_core::canonical::first_difference(local, &state.definition())
                .unwrap_or_else(|| "none found field by field".into()),
        }),
        _ => Ok(()),
    }
}

fn raft_config(id: ReplicaId, applied: LogIndex) -> raft::Config {
    raft::Config {
        id: id.get(),
        election_tick: ELECTION_TICKS,
        heartbeat_tick: HEARTBEAT_TICKS,
        applied: applied.get(),
        max_size_per_msg: MESSAGE_BYTES_MAX,
        max_inflight_msgs: INFLIGHT_MESSAGES_MAX,
        pre_vote: true,
        check_quorum: true,
        ..Default::default()
    }
}

impl Replica {
    /// Opens a replica over its storage: restores the state machine and the applied index, so
    /// committed entries are not applied twice after a restart.
    pub fn open(
        id: ReplicaId,
        storage: DiskStorage,
        definition: Arc<Definition>,
    ) -> Result<Self, Error> {
        Self::open_with(id, storage, definition, Options::default())
    }

    /// [`Replica::open`] with explicit [`Options`].
    pub fn open_with(
        id: ReplicaId,
        storage: DiskStorage,
        definition: Arc<Definition>,
        options: Options,
    ) -> Result<Self, Error> {
        let local_digest = tally_core::canonical::digest(&definition);
        let state = storage
            .load_state(definition.clone())
            .map_err(Error::storage)?;
        check_founding(&state, &definition, local_digest)?;
        let config = raft_config(id, state.applied_index());
        config.validate()?;
        let logger = slog::Logger::root(crate::raft_log::TracingDrain, slog::o!());
        let raw = RawNode::new(&config, storage.clone(), &logger)?;
        Ok(Replica {
            id,
            raw,
            storage,
            state,
            next_proposal: 1,
            pending_reads: Vec::new(),
            proposals_in_flight: HashMap::new(),
            options,
            local: definition,
            local_digest,
            founding_proposed: None,
        })
    }

    /// A leader of a cluster not yet founded proposes the founding act (its own definition),
    /// once in each term it leads, until the founding is applied.
    fn maybe_found(&mut self) {
        let term = self.raw.raft.term;
        if !self.is_leader()
            || self.state.founding().is_some()
            || self.founding_proposed == Some(term)
        {
            return;
        }
        let command = Command::Found {
            definition: tally_core::canonical::encode(&self.local),
        };
        // No context: nobody waits for this outcome; the state says whether it was founded.
        if self.raw.propose(Vec::new(), command.encode()).is_ok() {
            self.founding_proposed = Some(term);
            tracing::info!(
                replica = self.id.get(),
                term,
                digest = %self.local_digest,
                "proposed the founding act"
            );
        }
    }

    pub fn id(&self) -> ReplicaId {
        self.id
    }

    pub fn state(&self) -> &CountyState {
        &self.state
    }

    /// The storage the replica persists to (shared; the driver keeps its own records there).
    pub fn storage(&self) -> &DiskStorage {
        &self.storage
    }

    pub fn is_leader(&self) -> bool {
        self.raw.raft.state == StateRole::Leader
    }

    /// The raft term this replica is in.
    pub fn term(&self) -> Term {
        Term::new(self.raw.raft.term)
    }

    pub fn leader(&self) -> Option<ReplicaId> {
        let leader = self.raw.raft.leader_id;
        (leader != raft::INVALID_ID).then_some(ReplicaId::new(leader))
    }

    /// Advances the logical clock by one tick.
    pub fn tick(&mut self) {
        self.raw.tick();
    }

    /// Feeds a message from a peer. Messages from unknown or removed peers are dropped by raft.
    pub fn step(&mut self, message: Message) -> Result<(), Error> {
        // A leader's heartbeat commits at most what this replica acknowledged it holds; a log
        // shorter than that lost acknowledged entries, and raft-rs would panic on it.
        let last_index = self.raw.raft.raft_log.last_index();
        if message.get_msg_type() == MessageType::MsgHeartbeat && message.commit > last_index {
            return Err(Error::LostLog {
                leader: ReplicaId::new(message.from),
                commit: LogIndex::new(message.commit),
                last_index: LogIndex::new(last_index),
            });
        }
        match self.raw.step(message) {
            // A message for a stale term or from a peer no longer in the group is expected.
            Ok(()) | Err(raft::Error::StepPeerNotFound) | Err(raft::Error::StepLocalMsg) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Proposes a command; its outcome comes back from a later `handle_ready` under the
    /// returned id, once the entry is committed on a majority and applied here.
    pub fn propose(&mut self, command: &Command) -> Result<ProposalId, WriteError> {
        if !self.is_leader() {
            return Err(WriteError::NotLeader {
                leader: self.leader(),
            });
        }
        // Before the founding is applied, a command may follow the founding this leader
        // proposed in its term: the log keeps them in order, so it applies after it (and a
        // later entry is never committed without an earlier one). A leader that has not had
        // a ready cycle since its election proposes the founding now.
        self.maybe_found();
        if self.state.founding().is_none()
            && !matches!(command, Command::Found { .. })
            && self.founding_proposed != Some(self.raw.raft.term)
        {
            return Err(WriteError::NotFounded);
        }
        let id = ProposalId(self.next_proposal);
        self.next_proposal += 1;
        let mut context = Vec::with_capacity(16);
        context.extend_from_slice(&self.id.get().to_be_bytes());
        context.extend_from_slice(&id.0.to_be_bytes());
        match self.raw.propose(context, command.encode()) {
            Ok(()) => {
                // A leader's accepted proposal is appended at the end of its log at once.
                let index = self.raw.raft.raft_log.last_index();
                self.proposals_in_flight.insert(id.0, index);
                Ok(id)
            }
            Err(raft::Error::ProposalDropped) => Err(WriteError::Dropped),
            Err(_) => Err(WriteError::NotLeader {
                leader: self.leader(),
            }),
        }
    }

    /// Proposes a membership change: add a learner, promote a learner to voter, or remove.
    /// `context` travels with the change to every replica (the address of an added one).
    /// Raft turns a change proposed while another is pending into an empty entry, so the
    /// caller judges the outcome by the configuration it sees applied, not by this call.
    pub fn propose_membership(
        &mut self,
        change: ConfChangeType,
        node: ReplicaId,
        context: Vec<u8>,
    ) -> Result<(), WriteError> {
        if !self.is_leader() {
            return Err(WriteError::NotLeader {
                leader: self.leader(),
            });
        }
        let mut single = raft::eraftpb::ConfChangeSingle::default();
        single.set_change_type(change);
        single.node_id = node.get();
        let mut cc = ConfChangeV2::default();
        cc.mut_changes().push(single);
        self.raw
            .propose_conf_change(context, cc)
            .map_err(|_| WriteError::Dropped)
    }

    pub fn transfer_leader(&mut self, to: ReplicaId) {
        self.raw.transfer_leader(to.get());
    }

    /// Starts a linearizable read; `handle_ready` returns `context` once it is safe to answer.
    pub fn read_index(&mut self, context: Vec<u8>) {
        self.raw.read_index(context);
    }

    /// Forgets the confirmed reads waiting to be applied whose context `keep` refuses (their
    /// callers were answered otherwise).
    pub fn retain_reads(&mut self, mut keep: impl FnMut(&[u8]) -> bool) {
        self.pending_reads.retain(|read| keep(&read.request_ctx));
    }

    /// Tells raft whether a snapshot sent to `peer` arrived.
    pub fn report_snapshot(&mut self, peer: ReplicaId, delivered: bool) {
        let status = if delivered {
            raft::SnapshotStatus::Finish
        } else {
            raft::SnapshotStatus::Failure
        };
        self.raw.report_snapshot(peer.get(), status);
    }

    /// Tells raft a message to `peer` could not be sent, so it goes back to probing.
    pub fn report_unreachable(&mut self, peer: ReplicaId) {
        self.raw.report_unreachable(peer.get());
    }

    pub fn has_ready(&self) -> bool {
        self.raw.has_ready()
    }

    /// Runs one ready cycle in the safe order. Returns what to send and what was applied.
    pub fn handle_ready(&mut self) -> Result<ReadyOutput, Error> {
        let mut early = Vec::new();
        let mut out = self.handle_ready_with(&mut |messages| early.extend(messages))?;
        early.append(&mut out.messages);
        out.messages = early;
        Ok(out)
    }

    /// [`Replica::handle_ready`], handing the messages that may go before this replica's own
    /// fsync (a leader's appends and heartbeats) to `send_now` before it persists, so the
    /// followers write their copy while the leader writes its own. The rest are returned.
    pub fn handle_ready_with(
        &mut self,
        send_now: &mut dyn FnMut(Vec<Message>),
    ) -> Result<ReadyOutput, Error> {
        let mut out = ReadyOutput::default();
        if !self.raw.has_ready() {
            return Ok(out);
        }
        let mut ready = self.raw.ready();

        // 1. A leader's messages may go before its own fsync (raft thesis 10.2.1).
        let early = ready.take_messages();
        if !early.is_empty() {
            send_now(early);
        }

        // 2. Snapshot, entries and hard state: one transaction, one fsync. A hard state whose
        // term and vote are unchanged (only the commit index moved) needs no fsync: the
        // commit index is learnt again from the leader after a crash (as etcd does).
        let snapshot: Option<Snapshot> =
            (*ready.snapshot() != Snapshot::default()).then(|| ready.snapshot().clone());
        let commit_only = snapshot.is_none()
            && ready.entries().is_empty()
            && ready.hs().is_some_and(|hs| {
                let stored = self.storage.hard_state();
                hs.term == stored.term && hs.vote == stored.vote
            });
        if commit_only {
            let commit = ready.hs().map_or(0, |hs| hs.commit);
            self.storage
                .set_commit(LogIndex::new(commit))
                .map_err(Error::storage)?;
        } else if snapshot.is_some() || !ready.entries().is_empty() || ready.hs().is_some() {
            self.storage
                .persist(snapshot.as_ref(), ready.entries(), ready.hs())
                .map_err(Error::storage)?;
        }

        // 3. A snapshot replaces the state machine.
        if snapshot.is_some() {
            self.state = self
                .storage
                .load_state(self.local.clone())
                .map_err(Error::storage)?;
            check_founding(&self.state, &self.local, self.local_digest)?;
        }

        // 4. Apply what is committed (entries persisted in earlier readies).
        let committed = ready.take_committed_entries();
        self.apply_entries(committed, &mut out)?;

        // 5. Messages that promise persisted state (votes, append responses) only now.
        out.messages.extend(ready.take_persisted_messages());
        self.pending_reads.extend(ready.take_read_states());

        // 6. The light ready: the new commit index, more messages and committed entries.
        let mut light = self.raw.advance(ready);
        if let Some(commit) = light.commit_index() {
            self.storage
                .set_commit(LogIndex::new(commit))
                .map_err(Error::storage)?;
        }
        out.messages.extend(light.take_messages());
        let committed = light.take_committed_entries();
        self.apply_entries(committed, &mut out)?;
        self.raw.advance_apply();

        // 7. Reads whose index is applied can be answered.
        let applied = self.state.applied_index().get();
        let (ready_reads, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending_reads)
            .into_iter()
            .partition(|r| r.index <= applied);
        self.pending_reads = waiting;
        out.reads_ready
            .extend(ready_reads.into_iter().map(|r| r.request_ctx));

        self.abandon_overtaken(&mut out);
        self.maybe_compact()?;
        self.maybe_found();
        Ok(out)
    }

    fn apply_entries(&mut self, entries: Vec<Entry>, out: &mut ReadyOutput) -> Result<(), Error> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut last_index = self.state.applied_index();
        for entry in entries {
            // raft-rs's entries carry the bare number.
            let index = LogIndex::new(entry.index);
            last_index = index;
            match entry.get_entry_type() {
                EntryType::EntryNormal => {
                    if entry.data.is_empty() {
                        // A new leader's empty entry.
                        self.state.apply_empty(index);
                        continue;
                    }
                    let command = Command::decode(&entry.data)
                        .map_err(|e| bad_entry(&entry, e.to_string()))?;
                    let applied = self.state.apply(index, &command);
                    if let Command::Found { .. } = command {
                        // A replica that joined later learns the founding here.
                        check_founding(&self.state, &self.local, self.local_digest)?;
                    }
                    if let Some(id) = self.own_proposal(entry.index, &entry.context) {
                        out.applied.push(AppliedProposal {
                            id,
                            applied,
                            chain: self.state.chain_head(),
                        });
                    }
                }
                EntryType::EntryConfChange | EntryType::EntryConfChangeV2 => {
                    let conf_state = if entry.get_entry_type() == EntryType::EntryConfChange {
                        let cc: raft::eraftpb::ConfChange = decode_conf_change(&entry)?;
                        out.conf_changes.push(AppliedConfChange {
                            change: cc.get_change_type(),
                            node: ReplicaId::new(cc.node_id),
                            context: entry.context.to_vec(),
                        });
                        self.raw.apply_conf_change(&cc)?
                    } else {
                        let cc: ConfChangeV2 = decode_conf_change(&entry)?;
                        for single in cc.get_changes() {
                            out.conf_changes.push(AppliedConfChange {
                                change: single.get_change_type(),
                                node: ReplicaId::new(single.node_id),
                                context: entry.context.to_vec(),
                            });
                        }
                        self.raw.apply_conf_change(&cc)?
                    };
                    self.storage
                        .set_conf_state(&conf_state)
                        .map_err(Error::storage)?;
                    self.state.apply_empty(index);
                }
            }
        }
        self.storage
            .save_applied(&self.state)
            .map_err(Error::storage)?;
        debug_assert_eq!(self.state.applied_index(), last_index);
        Ok(())
    }

    fn own_proposal(&mut self, index: u64, context: &[u8]) -> Option<ProposalId> {
        if context.len() != 16 || context[..8] != self.id.get().to_be_bytes() {
            return None;
        }
        let mut number = [0u8; 8];
        number.copy_from_slice(&context[8..]);
        let number = u64::from_be_bytes(number);
        if self.proposals_in_flight.get(&number) != Some(&index) {
            // A proposal of an earlier run of this replica (numbers restart), or not ours.
            return None;
        }
        self.proposals_in_flight.remove(&number);
        Some(ProposalId(number))
    }

    /// Gives up the proposals whose index is applied without having answered them.
    fn abandon_overtaken(&mut self, out: &mut ReadyOutput) {
        let applied = self.state.applied_index().get();
        let mut gone: Vec<u64> = self
            .proposals_in_flight
            .iter()
            .filter(|&(_, &index)| index <= applied)
            .map(|(&number, _)| number)
            .collect();
        gone.sort_unstable();
        for number in gone {
            self.proposals_in_flight.remove(&number);
            out.abandoned.push(ProposalId(number));
        }
    }

    fn maybe_compact(&mut self) -> Result<(), Error> {
        let first = self.storage.first_index()?;
        if self.state.applied_index().get() >= first + self.options.compact_after_entries {
            let conf_state = self.raw.raft.prs().conf().to_conf_state();
            self.storage
                .compact(&self.state, &conf_state)
                .map_err(Error::storage)?;
        }
        Ok(())
    }

    pub fn status(&self) -> ReplicaStatus {
        let raft = &self.raw.raft;
        let conf = raft.prs().conf().to_conf_state();
        let progress = if self.is_leader() {
            let mut p: Vec<PeerProgress> = raft
                .prs()
                .iter()
                .map(|(id, pr)| PeerProgress {
                    id: ReplicaId::new(*id),
                    matched: LogIndex::new(pr.matched),
                    state: match pr.state {
                        raft::ProgressState::Probe => "probe",
                        raft::ProgressState::Replicate => "replicate",
                        raft::ProgressState::Snapshot => "snapshot",
                    },
                    voter: conf.voters.contains(id),
                })
                .collect();
            p.sort_unstable_by_key(|p| p.id);
            p
        } else {
            Vec::new()
        };
        ReplicaStatus {
            id: self.id,
            role: raft.state,
            term: Term::new(raft.term),
            leader: self.leader(),
            commit_index: LogIndex::new(raft.raft_log.committed),
            applied_index: self.state.applied_index(),
            first_index: LogIndex::new(self.storage.first_index().unwrap_or(0)),
            last_index: LogIndex::new(self.storage.last_index().unwrap_or(0)),
            voters: conf.voters.iter().copied().map(ReplicaId::new).collect(),
            learners: conf.learners.iter().copied().map(ReplicaId::new).collect(),
            progress,
        }
    }
}
