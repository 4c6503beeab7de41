//! The replica's driver: one loop owns the [`Replica`] and is the only code that touches it.
//! Everything else talks to it through a [`NodeHandle`]: proposals, raft messages from peers,
//! linearizable reads, membership changes and queries of the state come in on one channel;
//! the state of the replica goes out on a `watch` channel ([`NodeStatus`]).
//!
//! # Where the driver runs
//! Each ready cycle commits a redb transaction and fsyncs it, which blocks the thread for as
//! long as the disk takes. In production ([`Placement::Thread`]) the driver therefore runs on a
//! thread of its own, in a single-threaded tokio runtime that serves nothing else: its fsyncs
//! never hold up the async workers that serve gRPC calls, and heartbeats never wait for a
//! call's work. Its peer links still run on the runtime that started it, so a leader's appends
//! go out while its own fsync runs. The simulation ([`Placement::Task`]) runs the same loop as
//! a task of the host's runtime, whose clock and scheduling the simulation drives.
//!
//! # Group commit
//! The driver takes one input, then every input already waiting (up to
//! [`INPUTS_PER_READY_MAX`]), and only then runs one ready cycle: all the proposals that
//! arrived while the previous cycle was fsyncing go into the log with one fsync. Under load
//! the batches grow by themselves; idle, a lone sheet is written at once.
//!
//! # Time
//! The driver reads no clock of its own: it ticks on a `tokio::time::interval`, which the
//! simulation's runtime controls, so the same code runs under turmoil.

use crate::command::Command;
use crate::error::{Error, WriteError};
use crate::ids::{LogIndex, ReplicaId, Term};
use crate::input::Input;
use crate::metrics::NodeMetrics;
use crate::replica::{AppliedProposal, PeerProgress, Replica};
use crate::state::ChainHead;
use crate::state::StateView;
use crate::storage::INCARNATION_BYTES;
use crate::transport::{Dialer, PeerLink};
use raft::eraftpb::{ConfChangeType, Message, MessageType};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};

/// The most inputs taken into one ready cycle, so ticks and peers' messages are never starved
/// by a flood of proposals.
pub const INPUTS_PER_READY_MAX: usize = 4096;

/// Inputs waiting for the driver before senders wait.
pub const INPUT_QUEUE: usize = 16 * 1024;

/// Node records key prefix for the addresses replicas are reached at.
const ADDRESS_RECORD: &str = "address";

/// How long a linearizable read may wait in the driver for raft to confirm its index. Raft
/// drops a read without a word when the leadership changes under it; the driver answers such a
/// read at the latest after this long (and at once when it sees the term or leader change).
pub const READ_WAIT_MAX: Duration = Duration::from_secs(3);

/// Linearizable reads waiting in the driver before new ones are refused (each is a few words;
/// the bound keeps a flood of reads from growing the map while no leader answers them).
pub const READS_PENDING_MAX: usize = 4096;

/// Where the driver loop runs (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// A thread of its own with a single-threaded runtime: production.
    Thread,
    /// A task of the current runtime: the simulation, whose runtime and clock are simulated.
    Task,
}

/// The replica as the services and operators see it; published after every ready cycle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStatus {
    pub id: ReplicaId,
    pub cluster_id: Arc<str>,
    /// `leader`, `follower`, `candidate`, `pre-candidate`, `learner`, `joining` (waiting to be
    /// added and sent a snapshot), `removed` (no longer a member) or `stopped` (the driver
    /// stopped: the replica has no role, whatever it had before).
    pub role: &'static str,
    pub term: Term,
    pub leader: Option<ReplicaId>,
    pub commit_index: LogIndex,
    pub applied_index: LogIndex,
    pub first_index: LogIndex,
    pub last_index: LogIndex,
    pub voters: Vec<ReplicaId>,
    pub learners: Vec<ReplicaId>,
    pub progress: Vec<PeerProgress>,
    pub chain: ChainHead,
    /// The founding definition's digest, once the founding act is applied.
    pub founding: Option<tally_core::canonical::DefinitionDigest>,
    /// The definition in force: the founding one and the amendments applied so far (before
    /// the founding, the replica's own). The services check sheets against it.
    pub definition: InForce,
    /// The log index of the zero report, once recorded.
    pub zero_report: Option<LogIndex>,
    pub sheets_counted: u64,
    pub conflicts: u64,
    /// Shared with the driver: published every cycle without copying the map.
    pub addresses: Arc<BTreeMap<ReplicaId, String>>,
    /// False once the driver has stopped (a storage error); the reason is in `stopped`.
    pub running: bool,
    pub stopped: Option<String>,
    /// True when the driver stopped because its storage failed (`crate::fault`).
    pub storage_failed: bool,
    /// The exit status `tally county` ends with once the driver stopped
    /// (`crate::fault::exit_status`): 74 storage, 78 another definition, 70 otherwise.
    pub exit_status: u8,
}

/// The definition in force, compared by identity: the state replaces it when an act applies
/// and never changes it in place.
#[derive(Debug, Clone)]
pub struct InForce(pub Arc<tally_core::definition::Definition>);

impl PartialEq for InForce {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for InForce {}

/// The way in to a running replica. Cheap to clone.
#[derive(Clone)]
pub struct NodeHandle {
    inputs: mpsc::Sender<Input>,
    metrics: Arc<NodeMetrics>,
    status: watch::Receiver<Arc<NodeStatus>>,
    incarnation: [u8; INCARNATION_BYTES],
    placement: Placement,
}

/// How long a caller whose answer was dropped waits for the driver's last status, so that it
/// is told why the replica stopped (a full disk) rather than only that it did.
const STOP_REASON_WAIT: Duration = Duration::from_millis(500);

impl NodeHandle {
    async fn send(&self, input: Input) -> Result<(), WriteError> {
        match self.inputs.send(input).await {
            Ok(()) => Ok(()),
            Err(_) => Err(self.stopped().await),
        }
    }

    /// The error for a call the driver will not answer, once its status says why.
    async fn stopped(&self) -> WriteError {
        let mut status = self.status.clone();
        let _ = tokio::time::timeout(STOP_REASON_WAIT, status.wait_for(|s| !s.running)).await;
        WriteError::Stopped(self.stop_reason())
    }

    fn stop_reason(&self) -> String {
        self.status
            .borrow()
            .stopped
            .clone()
            .unwrap_or_else(|| "the replica is shutting down".to_owned())
    }

    /// Proposes a command and waits until it is applied here (committed on a majority, each
    /// of which fsynced it) or known not to be.
    pub async fn propose(&self, command: Command) -> Result<AppliedProposal, WriteError> {
        let (reply, answer) = oneshot::channel();
        self.send(Input::Propose { command, reply }).await?;
        match answer.await {
            Ok(result) => result,
            Err(_) => Err(self.stopped().await),
        }
    }

    /// Waits until this replica has applied everything committed when the read began
    /// (ReadIndex): a read of the state afterwards is linearizable. Answered
    /// [`WriteError::ReadDropped`] at once while no leader is known, when the leadership
    /// changes before raft confirms it, and after [`READ_WAIT_MAX`]. Returns the index
    /// applied when the read became safe: a read of any state at or after it is
    /// linearizable.
    pub async fn read_barrier(&self) -> Result<LogIndex, WriteError> {
        let (reply, answer) = oneshot::channel();
        self.send(Input::Read { reply }).await?;
        match answer.await {
            Ok(answered) => answered,
            Err(_) => Err(self.stopped().await),
        }
    }

    /// The applied state as the services read it ([`crate::state::CountyState::view`]): cheap
    /// for the driver, which copies no record.
    pub async fn view(&self) -> Result<StateView, WriteError> {
        self.query(|replica| replica.state().view()).await
    }

    /// Where the driver runs; heavy work of the services (results) follows it: on the
    /// blocking pool beside a driver thread, in place under the simulation.
    pub fn placement(&self) -> Placement {
        self.placement
    }

    /// Runs `f` on the replica in the driver and returns its value. Keep it short: the
    /// driver does nothing else meanwhile.
    pub async fn query<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Replica) -> T + Send + 'static,
    ) -> Result<T, WriteError> {
        let (reply, answer) = oneshot::channel();
        self.send(Input::Query(Box::new(move |replica| {
            let _ = reply.send(f(replica));
        })))
        .await?;
        answer
            .await
            .map_err(|_| WriteError::Stopped(self.stop_reason()))
    }

    /// Proposes a membership change; the caller watches [`NodeHandle::status`] for its effect.
    pub async fn change_membership(
        &self,
        change: ConfChangeType,
        node: ReplicaId,
        context: Vec<u8>,
    ) -> Result<(), WriteError> {
        let (reply, answer) = oneshot::channel();
        self.send(Input::Membership {
            change,
            node,
            context,
            reply,
        })
        .await?;
        answer
            .await
            .map_err(|_| WriteError::Stopped(self.stop_reason()))?
    }

    pub async fn transfer_leader(&self, to: ReplicaId) -> Result<(), WriteError> {
        self.send(Input::Transfer { to }).await
    }

    /// Hands raft messages from a peer to the driver.
    pub async fn step(&self, messages: Vec<Message>) -> Result<(), WriteError> {
        self.send(Input::Raft(messages)).await
    }

    /// The latest status; `changed()` on the receiver waits for the next.
    pub fn status(&self) -> watch::Receiver<Arc<NodeStatus>> {
        self.status.clone()
    }

    /// The driver's counters and proposal latencies.
    pub fn metrics(&self) -> &NodeMetrics {
        &self.metrics
    }

    pub fn incarnation(&self) -> [u8; INCARNATION_BYTES] {
        self.incarnation
    }
}

/// Starts the driver of `replica` where `placement` says. `addresses` are the replicas known
/// from the config; addresses learned from membership changes are added and kept in the data
/// directory. Must be called inside a tokio runtime: the peer links run on it, and the driver
/// stops when it shuts down.
pub fn start(
    replica: Replica,
    cluster_id: String,
    addresses: BTreeMap<ReplicaId, String>,
    tick: Duration,
    dialer: Arc<dyn Dialer>,
    placement: Placement,
) -> Result<NodeHandle, Error> {
    let storage = replica.storage().clone();
    let incarnation = storage.incarnation().map_err(Error::storage)?;
    let mut book = addresses;
    for (id, address) in storage
        .peer_records(ADDRESS_RECORD)
        .map_err(Error::storage)?
    {
        if let Ok(address) = String::from_utf8(address) {
            book.insert(id, address);
        }
    }
    let (inputs_tx, inputs) = mpsc::channel(INPUT_QUEUE);
    let replica_id = replica.id();
    let metrics = Arc::new(NodeMetrics::default());
    let mut driver = Driver {
        metrics: metrics.clone(),
        replica,
        cluster_id: cluster_id.into(),
        peers: Peers {
            from: replica_id,
            addresses: Arc::new(book),
            dialer,
            links: HashMap::new(),
            inputs: inputs_tx.clone(),
            incarnation,
            runtime: tokio::runtime::Handle::current(),
        },
        proposals: HashMap::new(),
        reads: HashMap::new(),
        next_read: 1,
        last_leader: None,
        reads_for: (Term::default(), None),
    };
    let (status_tx, status) = watch::channel(Arc::new(driver.status()));
    let status_tx = Arc::new(status_tx);
    let driver_status = status_tx.clone();
    // The driver stops when this sender goes: with the runtime that started it (its watcher
    // task below holds it), as a task of that runtime would.
    let (stop_tx, stop) = oneshot::channel::<()>();
    let run = async move { driver.run(inputs, &driver_status, tick, stop).await };
    // The driver is watched by a task of the calling runtime, so that even a panic in it (a
    // bug) ends in a status that says the replica stopped and why, instead of a frozen status
    // that looks alive.
    let ended: futures_ended::Ended = match placement {
        Placement::Task => {
            let task = tokio::spawn(run);
            Box::pin(async move {
                let _stop = stop_tx;
                match task.await {
                    Ok(result) => Some(result),
                    Err(e) if e.is_panic() => None,
                    Err(_) => Some(Ok(())),
                }
            })
        }
        Placement::Thread => {
            let (done, ended) = oneshot::channel();
            let thread = std::thread::Builder::new()
                .name(format!("raft-driver-{replica_id}"))
                .spawn(move || {
                    let result = match tokio::runtime::Builder::new_current_thread()
                        .enable_time()
                        .build()
                    {
                        Ok(runtime) => runtime.block_on(run),
                        Err(e) => Err(Error::Thread(e)),
                    };
                    // A panic drops `done` unsent, which the watcher reports as a bug.
                    let _ = done.send(result);
                })
                .map_err(Error::Thread)?;
            let thread = DriverThread {
                stop: Some(stop_tx),
                thread: Some(thread),
            };
            Box::pin(async move {
                let result = ended.await.ok();
                drop(thread);
                result
            })
        }
    };
    tokio::spawn(async move {
        let mut storage_failed = false;
        let mut exit_status = crate::fault::EXIT_DRIVER;
        let reason = match ended.await {
            Some(Ok(())) => "the replica is shutting down".to_owned(),
            Some(Err(e)) => {
                storage_failed = crate::fault::is_storage_failure(&e);
                exit_status = crate::fault::exit_status(&e);
                let reason = crate::fault::stop_reason(replica_id, &e);
                tracing::error!(replica = replica_id.get(), error = %e, "replica driver stopped: {reason}");
                reason
            }
            None => {
                let reason =
                    "the replica's driver failed (a bug; its log has the panic)".to_owned();
                tracing::error!("{reason}");
                reason
            }
        };
        let mut last = (**status_tx.borrow()).clone();
        last.running = false;
        // A stopped replica leads and follows no one, whatever it was: its last role would
        // show a second leader once the others elect one.
        last.role = "stopped";
        last.leader = None;
        last.stopped = Some(reason);
        last.storage_failed = storage_failed;
        last.exit_status = exit_status;
        status_tx.send_replace(Arc::new(last));
    });
    Ok(NodeHandle {
        inputs: inputs_tx,
        metrics,
        status,
        incarnation,
        placement,
    })
}

mod futures_ended {
    /// How the driver ended: its result, or `None` if it panicked.
    pub(super) type Ended = std::pin::Pin<
        Box<dyn std::future::Future<Output = Option<Result<(), super::Error>>> + Send>,
    >;
}

/// The driver's thread, stopped and joined when dropped: when the runtime that started the
/// replica shuts down (a process exiting, a test dropping a replica's runtime to crash it),
/// its tasks are dropped, this with them, and the driver has closed its database by the time
/// the shutdown returns, as it had when the driver was one of those tasks.
struct DriverThread {
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for DriverThread {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            // The driver ends its current cycle (at most one fsync) and returns; it waits for
            // nothing on this runtime. A panic in it was reported by the watcher already.
            let _ = thread.join();
        }
    }
}

/// A proposal waiting for its entry: whom to answer, and since when (for the latency).
type Waiting = (
    oneshot::Sender<Result<AppliedProposal, WriteError>>,
    tokio::time::Instant,
);

/// A linearizable read waiting for raft: whom to answer, the term it was issued in, and when
/// it is given up.
struct PendingRead {
    reply: oneshot::Sender<Result<LogIndex, WriteError>>,
    term: Term,
    leader: ReplicaId,
    deadline: tokio::time::Instant,
}

struct Driver {
    replica: Replica,
    metrics: Arc<NodeMetrics>,
    cluster_id: Arc<str>,
    peers: Peers,
    proposals: HashMap<u64, Waiting>,
    /// At most [`READS_PENDING_MAX`]; each leaves when answered, when the term or leader
    /// changes, after [`READ_WAIT_MAX`], or when its caller gave up.
    reads: HashMap<u64, PendingRead>,
    next_read: u64,
    last_leader: Option<ReplicaId>,
    /// The term and leader when the waiting reads were last looked at.
    reads_for: (Term, Option<ReplicaId>),
}

impl Driver {
    async fn run(
        &mut self,
        mut inputs: mpsc::Receiver<Input>,
        status: &watch::Sender<Arc<NodeStatus>>,
        tick: Duration,
        mut stop: oneshot::Receiver<()>,
    ) -> Result<(), Error> {
        let mut ticker = tokio::time::interval(tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let mut ticked = false;
            tokio::select! {
                _ = &mut stop => return Ok(()),
                _ = ticker.tick() => {
                    self.replica.tick();
                    ticked = true;
                }
                input = inputs.recv() => {
                    let Some(input) = input else { return Ok(()) };
                    self.handle(input)?;
                    let mut taken = 1;
                    while taken < INPUTS_PER_READY_MAX {
                        match inputs.try_recv() {
                            Ok(input) => self.handle(input)?,
                            Err(_) => break,
                        }
                        taken += 1;
                    }
                }
            }
            // A ready cycle may leave more to do (a light ready's committed entries make the
            // next one); run until raft has nothing.
            while self.replica.has_ready() {
                // Appends go out before this replica's own fsync (followers write in parallel);
                // a link that cannot take one is reported once the cycle is done.
                let mut failed = Vec::new();
                let peers = &mut self.peers;
                let out = self.replica.handle_ready_with(&mut |messages| {
                    for message in messages {
                        peers.send(message, &mut failed);
                    }
                })?;
                self.report_failed(failed);
                self.dispatch(out)?;
            }
            let now = self.status();
            if now.leader != self.last_leader {
                tracing::info!(
                    replica = now.id.get(),
                    term = now.term.get(),
                    leader = ?now.leader,
                    "leader changed"
                );
                if now.leader.is_some() {
                    self.metrics.leader_changes.inc();
                }
                self.last_leader = now.leader;
            }
            self.drop_unanswerable_reads(&now, ticked);
            status.send_if_modified(|current| {
                if **current == now {
                    false
                } else {
                    *current = Arc::new(now);
                    true
                }
            });
        }
    }

    fn handle(&mut self, input: Input) -> Result<(), Error> {
        match input {
            Input::Propose { command, reply } => match self.replica.propose(&command) {
                Ok(id) => {
                    self.proposals
                        .insert(id.0, (reply, tokio::time::Instant::now()));
                }
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            },
            Input::Raft(messages) => {
                for message in messages {
                    self.replica.step(message)?;
                }
            }
            Input::Read { reply } => {
                // Raft drops a read while no leader is known, without a word: answer it now.
                let Some(leader) = self.replica.leader() else {
                    let _ = reply.send(Err(WriteError::ReadDropped(format!(
                        "replica {} knows no leader right now (an election is under way or a majority is unreachable)",
                        self.replica.id()
                    ))));
                    return Ok(());
                };
                if self.reads.len() >= READS_PENDING_MAX {
                    let _ = reply.send(Err(WriteError::ReadDropped(format!(
                        "{READS_PENDING_MAX} reads are already waiting on replica {}",
                        self.replica.id()
                    ))));
                    return Ok(());
                }
                let number = self.next_read;
                self.next_read += 1;
                self.reads.insert(
                    number,
                    PendingRead {
                        reply,
                        term: self.replica.term(),
                        leader,
                        deadline: tokio::time::Instant::now() + READ_WAIT_MAX,
                    },
                );
                self.replica.read_index(number.to_be_bytes().to_vec());
            }
            Input::Membership {
                change,
                node,
                context,
                reply,
            } => {
                let result = self.replica.propose_membership(change, node, context);
                let _ = reply.send(result);
            }
            Input::Transfer { to } => self.replica.transfer_leader(to),
            Input::Unreachable(peer) => self.replica.report_unreachable(peer),
            Input::SnapshotReport { peer, delivered } => {
                self.replica.report_snapshot(peer, delivered)
            }
            Input::Query(f) => f(&self.replica),
        }
        Ok(())
    }

    fn dispatch(&mut self, out: crate::replica::ReadyOutput) -> Result<(), Error> {
        for change in &out.conf_changes {
            if matches!(
                change.change,
                ConfChangeType::AddNode | ConfChangeType::AddLearnerNode
            ) && !change.context.is_empty()
                && let Ok(address) = String::from_utf8(change.context.clone())
                && self.peers.addresses.get(&change.node) != Some(&address)
            {
                self.replica
                    .storage()
                    .put_peer_record(ADDRESS_RECORD, change.node, address.as_bytes())
                    .map_err(Error::storage)?;
                tracing::info!(replica = change.node.get(), %address, "learned a replica's address");
                Arc::make_mut(&mut self.peers.addresses).insert(change.node, address);
                // A link to the old address is dropped; the next message dials the new one.
                self.peers.links.remove(&change.node);
            }
            if change.change == ConfChangeType::RemoveNode {
                self.peers.links.remove(&change.node);
            }
        }
        for message in out.messages {
            self.send(message);
        }
        for applied in out.applied {
            if let Some((reply, since)) = self.proposals.remove(&applied.id.0) {
                self.metrics.proposal_seconds.observe(since.elapsed());
                let _ = reply.send(Ok(applied));
            }
        }
        for id in out.abandoned {
            if let Some((reply, _)) = self.proposals.remove(&id.0) {
                let _ = reply.send(Err(WriteError::Abandoned));
            }
        }
        for context in out.reads_ready {
            if let Ok(bytes) = <[u8; 8]>::try_from(context.as_slice())
                && let Some(read) = self.reads.remove(&u64::from_be_bytes(bytes))
            {
                let _ = read.reply.send(Ok(self.replica.state().applied_index()));
            }
        }
        Ok(())
    }

    /// Answers the reads raft will not: all of them when the term or the leader changed since
    /// they were issued (raft forgets a read on a new term, and a leaderless follower's read
    /// has nowhere to go); on a tick, those past [`READ_WAIT_MAX`] and those whose caller
    /// gave up. Keeps the pending-reads gauge.
    fn drop_unanswerable_reads(&mut self, now: &NodeStatus, ticked: bool) {
        if self.reads.is_empty() {
            self.metrics.reads_pending.set(0);
            return;
        }
        let changed = self.reads_for != (now.term, now.leader);
        if changed || ticked {
            let at = tokio::time::Instant::now();
            let id = self.replica.id();
            let mut dropped = Vec::new();
            for (number, read) in &self.reads {
                let reason = if read.term != now.term || Some(read.leader) != now.leader {
                    match now.leader {
                        Some(leader) => format!(
                            "the leadership changed while replica {id} waited for the leader to confirm it (now replica {leader} in term {})",
                            now.term
                        ),
                        None => format!(
                            "replica {id} lost its leader while it waited for the leader to confirm it"
                        ),
                    }
                } else if at >= read.deadline {
                    format!(
                        "the leader did not confirm it within {} s",
                        READ_WAIT_MAX.as_secs()
                    )
                } else if read.reply.is_closed() {
                    String::new()
                } else {
                    continue;
                };
                dropped.push((*number, reason));
            }
            for (number, reason) in dropped {
                if let Some(read) = self.reads.remove(&number) {
                    let _ = read.reply.send(Err(WriteError::ReadDropped(reason)));
                }
            }
            self.reads_for = (now.term, now.leader);
            let reads = &self.reads;
            self.replica.retain_reads(|context| {
                <[u8; 8]>::try_from(context)
                    .is_ok_and(|bytes| reads.contains_key(&u64::from_be_bytes(bytes)))
            });
        }
        self.metrics.reads_pending.set(self.reads.len() as u64);
    }

    fn send(&mut self, message: Message) {
        let mut failed = Vec::new();
        self.peers.send(message, &mut failed);
        self.report_failed(failed);
    }

    /// Tells raft about messages that could not be queued: the peer goes back to probing,
    /// and a snapshot that did not go is reported failed.
    fn report_failed(&mut self, failed: Vec<(ReplicaId, bool)>) {
        for (to, snapshot) in failed {
            if snapshot {
                self.replica.report_snapshot(to, false);
            }
            self.replica.report_unreachable(to);
        }
    }

    fn status(&self) -> NodeStatus {
        let s = self.replica.status();
        let state = self.replica.state();
        let role = if s.voters.is_empty() && s.learners.is_empty() {
            "joining"
        } else if s.learners.contains(&s.id) {
            "learner"
        } else if !s.voters.contains(&s.id) {
            "removed"
        } else {
            match s.role {
                raft::StateRole::Leader => "leader",
                raft::StateRole::Follower => "follower",
                raft::StateRole::Candidate => "candidate",
                raft::StateRole::PreCandidate => "pre-candidate",
            }
        };
        NodeStatus {
            id: s.id,
            cluster_id: self.cluster_id.clone(),
            role,
            term: s.term,
            leader: s.leader,
            commit_index: s.commit_index,
            applied_index: s.applied_index,
            first_index: s.first_index,
            last_index: s.last_index,
            voters: sorted(s.voters),
            learners: sorted(s.learners),
            progress: s.progress,
            chain: state.chain_head(),
            founding: state.founding(),
            definition: InForce(state.definition()),
            zero_report: state.zero_report(),
            sheets_counted: state.ledger().len() as u64,
            conflicts: state.conflicts().len() as u64,
            addresses: self.peers.addresses.clone(),
            running: true,
            stopped: None,
            storage_failed: false,
            exit_status: 0,
        }
    }
}

/// The driver's links to its peers, a field apart from the replica so messages can be sent
/// from inside a ready cycle.
struct Peers {
    from: ReplicaId,
    links: HashMap<ReplicaId, PeerLink>,
    /// Shared with the published status, so publishing does not copy the map.
    addresses: Arc<BTreeMap<ReplicaId, String>>,
    incarnation: [u8; INCARNATION_BYTES],
    dialer: Arc<dyn Dialer>,
    inputs: mpsc::Sender<Input>,
    /// The runtime that started the replica: links run there, not on the driver's thread.
    runtime: tokio::runtime::Handle,
}

impl Peers {
    /// Queues `message` on its peer's link (opened on first use). A message that cannot be
    /// queued is noted in `failed` with whether it was a snapshot.
    fn send(&mut self, message: Message, failed: &mut Vec<(ReplicaId, bool)>) {
        // raft-rs's message names its addressee by the bare number.
        let to = ReplicaId::new(message.to);
        let snapshot = message.get_msg_type() == MessageType::MsgSnapshot;
        if !self.links.contains_key(&to) {
            let Some(address) = self.addresses.get(&to) else {
                tracing::warn!(
                    replica = to.get(),
                    "no address known for replica {to}; add it to [peers] in the config"
                );
                failed.push((to, snapshot));
                return;
            };
            let _on_the_server_runtime = self.runtime.enter();
            let link = PeerLink::start(
                self.from,
                to,
                address.clone(),
                self.incarnation,
                self.dialer.clone(),
                self.inputs.clone(),
            );
            self.links.insert(to, link);
        }
        if !self.links[&to].send(message) {
            // The link's queue is full or its task ended: raft sends again after probing.
            failed.push((to, snapshot));
        }
    }
}

fn sorted(mut ids: Vec<ReplicaId>) -> Vec<ReplicaId> {
    ids.sort_unstable();
    ids
}
