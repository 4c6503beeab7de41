//! In-process cluster tests: 3 or 5 replicas, each with its own redb database on disk, joined
//! by an in-memory network that the test controls (delivery order, loss, partitions, crashes).
//! Deterministic for a seed; the seed is printed when a check fails.
//!
//! After every scenario the same checks run: every acknowledged sheet is recorded exactly once
//! on every replica, and replicas that applied the same index hold the same state.

use raft::eraftpb::{ConfChangeType, Message, MessageType};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use tally_core::definition::Definition;
use tally_county::command::Command;
use tally_county::replica::{Options, ProposalId, Replica};
use tally_county::state::SheetOutcome;
use tally_county::storage::{DiskStorage, Identity};
use tally_county::{LogIndex, ReplicaId};
use tally_proto::SignedSheet;
use tally_synth::GenParams;

/// Steps between ticks: several message rounds fit in one tick, as on a fast LAN.
const STEPS_PER_TICK: u64 = 4;
/// Bound on steps any wait may take, so a stuck cluster fails instead of hanging.
const STEPS_MAX: u64 = 20_000;
const CLUSTER_ID: &str = "test-county";

/// The generator's seeded SplitMix64 drives delivery order and loss, so a seed replays a run.
use tally_synth::Rng;

struct Fixture {
    definition: Arc<Definition>,
    sheets: Vec<SignedSheet>,
}

fn fixture() -> Fixture {
    let generated = tally_synth::generate(&GenParams {
        seed: 11,
        county_name: "测试县".into(),
        townships: 2,
        population: 120_000,
        voters_per_station: 1_500,
        scenarios: false,
    })
    .expect("valid generator parameters");
    let definition = Arc::new(tally_synth::definition(&generated).expect("valid definition"));
    // One township's sheets: the state machine refuses a sheet forwarded by another
    // township than its unit's, and any slice of these may form a batch.
    let township = |s: &SignedSheet| {
        definition
            .unit_by_key(&s.key_id)
            .map(|u| u.township.clone())
    };
    let sheets: Vec<SignedSheet> = tally_synth::sign_all(&generated);
    let first = township(&sheets[0]);
    let sheets = sheets
        .into_iter()
        .filter(|s| township(s) == first)
        .collect();
    Fixture { definition, sheets }
}

struct Cluster {
    seed: u64,
    rng: Rng,
    definition: Arc<Definition>,
    root: tempfile::TempDir,
    replicas: BTreeMap<u64, Option<Replica>>,
    network: Vec<Message>,
    /// Replicas cut off from everyone else.
    isolated: BTreeSet<u64>,
    drop_per_mille: u64,
    step: u64,
    /// Proposals waiting for their outcome: (replica, proposal) → the sheets' digests.
    proposals: BTreeMap<(u64, u64), Vec<SignedSheet>>,
    /// Sheets whose proposal was applied and answered: the client got an acknowledgement.
    acknowledged: Vec<SignedSheet>,
    /// Proposals their replica gave up on (overwritten by a newer leader, or covered by a
    /// snapshot): a client would retry them.
    abandoned: usize,
    options: Options,
}

impl Cluster {
    fn new(seed: u64, voters: &[u64], definition: Arc<Definition>) -> Self {
        Self::with_options(seed, voters, definition, Options::default())
    }

    fn with_options(
        seed: u64,
        voters: &[u64],
        definition: Arc<Definition>,
        options: Options,
    ) -> Self {
        let mut cluster = Cluster {
            seed,
            rng: Rng(seed),
            definition,
            root: tempfile::tempdir().expect("temp dir"),
            replicas: BTreeMap::new(),
            network: Vec::new(),
            isolated: BTreeSet::new(),
            drop_per_mille: 0,
            step: 0,
            proposals: BTreeMap::new(),
            acknowledged: Vec::new(),
            abandoned: 0,
            options,
        };
        for &id in voters {
            // The database allows one open handle: bootstrap, close, then start.
            cluster
                .open_storage(id)
                .bootstrap(
                    &voters
                        .iter()
                        .copied()
                        .map(ReplicaId::new)
                        .collect::<Vec<_>>(),
                )
                .expect("first boot");
            cluster.replicas.insert(id, None);
            cluster.start(id);
        }
        cluster
    }

    fn dir(&self, id: u64) -> PathBuf {
        self.root.path().join(format!("replica-{id}"))
    }

    fn open_storage(&self, id: u64) -> DiskStorage {
        let dir = self.dir(id);
        std::fs::create_dir_all(&dir).expect("data dir");
        DiskStorage::open(
            &dir,
            &Identity {
                cluster_id: CLUSTER_ID.into(),
                replica_id: ReplicaId::new(id),
            },
        )
        .unwrap_or_else(|e| panic!("seed {}: open replica {id}: {e}", self.seed))
    }

    fn start(&mut self, id: u64) {
        let storage = self.open_storage(id);
        let replica = Replica::open_with(
            ReplicaId::new(id),
            storage,
            self.definition.clone(),
            self.options,
        )
        .unwrap_or_else(|e| panic!("seed {}: start replica {id}: {e}", self.seed));
        self.replicas.insert(id, Some(replica));
    }

    /// Stops a replica as a power cut would: what it had not fsynced is gone with it.
    fn crash(&mut self, id: u64) {
        self.replicas.insert(id, None);
        self.proposals.retain(|(replica, _), _| *replica != id);
    }

    fn live(&self) -> impl Iterator<Item = &Replica> {
        self.replicas.values().flatten()
    }

    /// The leader of the highest term among live, reachable replicas: a deposed leader that
    /// has not yet heard of the newer term still says it leads, and must not be chosen.
    fn leader(&self) -> Option<u64> {
        self.live()
            .filter(|r| r.is_leader() && !self.isolated.contains(&r.id().get()))
            .max_by_key(|r| (r.status().term, r.id()))
            .map(|r| r.id().get())
    }

    fn reachable(&self, from: u64, to: u64) -> bool {
        !(self.isolated.contains(&from) || self.isolated.contains(&to))
    }

    /// One round: tick, run every replica's ready cycle, deliver the messages in a seeded order.
    fn step(&mut self) {
        self.step += 1;
        let tick = self.step.is_multiple_of(STEPS_PER_TICK);
        let ids: Vec<u64> = self.replicas.keys().copied().collect();
        for id in ids {
            let Some(replica) = self.replicas.get_mut(&id).and_then(Option::as_mut) else {
                continue;
            };
            if tick {
                replica.tick();
            }
            let out = replica
                .handle_ready()
                .unwrap_or_else(|e| panic!("seed {}: replica {id} ready: {e}", self.seed));
            self.network.extend(out.messages);
            for ProposalId(number) in out.abandoned {
                if self.proposals.remove(&(id, number)).is_some() {
                    self.abandoned += 1;
                }
            }
            for tally_county::replica::AppliedProposal {
                id: ProposalId(number),
                applied,
                ..
            } in out.applied
            {
                if let Some(sheets) = self.proposals.remove(&(id, number)) {
                    for (sheet, outcome) in sheets.into_iter().zip(applied.outcomes) {
                        if !matches!(outcome, SheetOutcome::Refused { .. }) {
                            self.acknowledged.push(sheet);
                        }
                    }
                }
            }
        }
        let mut messages = std::mem::take(&mut self.network);
        // A seeded shuffle: the network does not keep order between different pairs.
        for i in (1..messages.len()).rev() {
            let j = (self.rng.next() % (i as u64 + 1)) as usize;
            messages.swap(i, j);
        }
        for message in messages {
            let (from, to) = (message.from, message.to);
            let snapshot = message.get_msg_type() == MessageType::MsgSnapshot;
            let lost = self.rng.next() % 1000 < self.drop_per_mille;
            let delivered = self.reachable(from, to)
                && !lost
                && self.replicas.get(&to).is_some_and(Option::is_some);
            if delivered {
                let seed = self.seed;
                let target = self
                    .replicas
                    .get_mut(&to)
                    .and_then(Option::as_mut)
                    .expect("live");
                target
                    .step(message)
                    .unwrap_or_else(|e| panic!("seed {seed}: replica {to} step: {e}"));
            }
            if let Some(sender) = self.replicas.get_mut(&from).and_then(Option::as_mut) {
                if !delivered {
                    sender.report_unreachable(ReplicaId::new(to));
                }
                if snapshot {
                    sender.report_snapshot(ReplicaId::new(to), delivered);
                }
            }
        }
    }

    fn run_until(&mut self, what: &str, mut done: impl FnMut(&Cluster) -> bool) {
        for _ in 0..STEPS_MAX {
            if done(self) {
                return;
            }
            self.step();
        }
        panic!(
            "seed {}: gave up waiting for {what} after {STEPS_MAX} steps",
            self.seed
        );
    }

    fn wait_for_leader(&mut self) -> u64 {
        self.run_until("a leader", |c| c.leader().is_some());
        self.leader().expect("just waited for it")
    }

    /// Proposes a batch at the current leader. Returns false if there is none.
    fn submit(&mut self, sheets: &[SignedSheet]) -> bool {
        let Some(leader) = self.leader() else {
            return false;
        };
        // The state machine does not check countersignatures (the leader does, before it
        // proposes), so the batches here carry none. It does refuse a sheet of another
        // township's unit, so a batch goes as its first sheet's township (the fixture holds
        // one township's sheets).
        let township = sheets
            .first()
            .and_then(|s| self.definition.unit_by_key(&s.key_id))
            .map_or_else(|| "T01".into(), |u| u.township.clone());
        let command = Command::Ingest {
            township,
            sheets: sheets.to_vec(),
            countersignature: None,
        };
        let replica = self
            .replicas
            .get_mut(&leader)
            .and_then(Option::as_mut)
            .expect("live");
        match replica.propose(&command) {
            Ok(ProposalId(number)) => {
                self.proposals.insert((leader, number), sheets.to_vec());
                true
            }
            Err(_) => false,
        }
    }

    /// Waits until no proposal is outstanding.
    fn drain(&mut self) {
        self.run_until("outstanding proposals to be applied", |c| {
            c.proposals.is_empty()
        });
    }

    /// Whether there is a leader, it has applied its whole log, and every live replica has
    /// applied the same index and holds the same state.
    fn settled(&self) -> bool {
        let Some(leader) = self.leader() else {
            return false;
        };
        let status = self.replicas[&leader].as_ref().expect("live").status();
        if status.applied_index != status.last_index {
            return false;
        }
        let fingerprint = self.replicas[&leader]
            .as_ref()
            .expect("live")
            .state()
            .fingerprint();
        self.live().all(|r| {
            r.state().applied_index() == status.applied_index
                && r.state().fingerprint() == fingerprint
        })
    }

    /// After faults are healed: waits until the cluster is settled and every proposal has
    /// been answered, acknowledged or abandoned. A proposal a deposed leader appended beyond
    /// the current leader's log is answered (abandoned) only once the log reaches its index,
    /// so empty batches are proposed to get it there.
    fn settle(&mut self) {
        for _ in 0..20 {
            self.run_until("the cluster to settle", Cluster::settled);
            if self.proposals.is_empty() {
                return;
            }
            for _ in 0..16 {
                self.submit(&[]);
            }
            // Let time pass, so a deposed leader hears of the new term (or steps down for
            // want of a quorum) before the cluster is judged settled again.
            for _ in 0..STEPS_PER_TICK * 2 * tally_county::replica::ELECTION_TICKS as u64 {
                self.step();
            }
        }
        let statuses: Vec<String> = self
            .live()
            .map(|r| {
                let s = r.status();
                format!(
                    "replica {} {:?} term {} leader {:?} commit {} applied {} last {}",
                    s.id, s.role, s.term, s.leader, s.commit_index, s.applied_index, s.last_index
                )
            })
            .collect();
        panic!(
            "seed {}: proposals never answered: {:?}\n{}",
            self.seed,
            self.proposals.keys().take(5).collect::<Vec<_>>(),
            statuses.join("\n")
        );
    }

    /// Waits until every live replica has applied everything the leader has.
    fn converge(&mut self) {
        self.run_until("replicas to converge", |c| {
            let applied: BTreeSet<LogIndex> = c.live().map(|r| r.state().applied_index()).collect();
            let fingerprints: BTreeSet<[u8; 32]> =
                c.live().map(|r| r.state().fingerprint()).collect();
            applied.len() == 1 && fingerprints.len() == 1
        });
    }

    /// The checks every scenario ends with.
    fn check(&self) {
        let digests: Vec<[u8; 32]> = self.acknowledged.iter().map(SignedSheet::digest).collect();
        for replica in self.live() {
            let state = replica.state();
            let recorded = state.recorded_digests();
            for (i, digest) in digests.iter().enumerate() {
                let copies = recorded.iter().filter(|d| *d == digest).count();
                assert_eq!(
                    copies,
                    1,
                    "seed {}: acknowledged sheet #{i} is recorded {copies} times on replica {}",
                    self.seed,
                    replica.id()
                );
            }
        }
        let mut by_index: BTreeMap<LogIndex, BTreeSet<[u8; 32]>> = BTreeMap::new();
        for replica in self.live() {
            by_index
                .entry(replica.state().applied_index())
                .or_default()
                .insert(replica.state().fingerprint());
        }
        for (index, fingerprints) in by_index {
            assert_eq!(
                fingerprints.len(),
                1,
                "seed {}: replicas at applied index {index} disagree",
                self.seed
            );
        }
    }
}

// Goal: a fresh 3-replica cluster elects one leader and every sheet submitted is applied on
// all three, exactly once, with identical state.
// Method: submit the fixture's sheets in batches of 16, wait, converge, check.
#[test]
fn elect_and_ingest() {
    let f = fixture();
    let mut c = Cluster::new(1, &[1, 2, 3], f.definition.clone());
    c.wait_for_leader();
    for batch in f.sheets.chunks(16) {
        c.run_until("a leader to accept", |c| c.leader().is_some());
        assert!(c.submit(batch), "seed 1: the leader took the batch");
        c.step();
    }
    c.drain();
    c.converge();
    assert_eq!(c.acknowledged.len(), f.sheets.len());
    c.check();
    let leader = c.leader().expect("a leader");
    let replica = c.replicas[&leader].as_ref().expect("live");
    assert_eq!(replica.state().ledger().len(), f.sheets.len());
}

// Goal: resubmitting sheets changes nothing; the acknowledgement says duplicate.
#[test]
fn resubmission_is_a_duplicate() {
    let f = fixture();
    let mut c = Cluster::new(2, &[1, 2, 3], f.definition.clone());
    c.wait_for_leader();
    assert!(c.submit(&f.sheets[..10]));
    c.drain();
    // drain() waits for the leader only; a follower may still lag behind it.
    c.converge();
    let before: Vec<[u8; 32]> = c.live().map(|r| r.state().fingerprint()).collect();
    let head_before = c.live().next().unwrap().state().chain_head().head;
    assert!(c.submit(&f.sheets[..10]));
    c.drain();
    c.converge();
    for after in c.live().map(Replica::state) {
        assert_eq!(
            after.chain_head().head,
            head_before,
            "a duplicate does not extend the chain"
        );
        assert_eq!(after.ledger().len(), 10);
    }
    assert!(before.iter().all(|b| *b == before[0]));
    c.check();
}

// Goal: a follower that crashes and restarts catches up and applies nothing twice; a leader
// crash elects a new leader and loses no acknowledged sheet.
#[test]
fn follower_and_leader_crash_and_restart() {
    let f = fixture();
    let mut c = Cluster::new(3, &[1, 2, 3], f.definition.clone());
    let leader = c.wait_for_leader();
    let follower = [1, 2, 3].into_iter().find(|&id| id != leader).unwrap();
    let (first, rest) = f.sheets.split_at(f.sheets.len() / 2);
    assert!(c.submit(&first[..20]));
    c.drain();
    c.crash(follower);
    assert!(c.submit(&first[20..]));
    c.drain();
    c.start(follower);
    c.converge();
    c.check();

    let leader = c.leader().unwrap();
    c.crash(leader);
    let new_leader = c.wait_for_leader();
    assert_ne!(new_leader, leader);
    for batch in rest.chunks(32) {
        c.run_until("a leader", |c| c.leader().is_some());
        c.submit(batch);
        c.step();
    }
    c.drain();
    c.start(leader);
    c.converge();
    c.check();
}

// Goal: under message loss and a minority partition, sheets keep flowing and nothing
// acknowledged is lost or doubled. Several seeds.
#[test]
fn loss_and_partitions_over_seeds() {
    let f = fixture();
    for seed in [10, 11, 12, 13] {
        let mut c = Cluster::new(seed, &[1, 2, 3, 4, 5], f.definition.clone());
        c.drop_per_mille = 50;
        c.wait_for_leader();
        for (i, batch) in f.sheets.chunks(8).enumerate() {
            if i % 5 == 2 {
                let victim = c.leader().unwrap_or(1);
                c.isolated = BTreeSet::from([victim]);
            }
            if i % 5 == 4 {
                c.isolated.clear();
            }
            c.run_until("a leader", |c| c.leader().is_some());
            c.submit(batch);
            for _ in 0..3 {
                c.step();
            }
        }
        c.isolated.clear();
        c.drop_per_mille = 0;
        // Proposals at a deposed leader may be abandoned (the client retries), but every
        // proposal is answered one way or the other, and whatever was acknowledged must be
        // everywhere.
        c.settle();
        assert!(
            !c.acknowledged.is_empty(),
            "seed {seed}: sheets kept flowing under faults"
        );
        c.check();
    }
}

/// The compaction threshold of the snapshot test: small, so the log really is compacted.
const COMPACT_AFTER_ENTRIES: u64 = 50;

// Goal: a replica wiped and re-added under a new id catches up by snapshot after compaction.
// Method: ingest enough entries to compact (threshold 50 entries), remove replica 3, add
// replica 4 as learner, promote it, and check it holds the same state, having started from a
// snapshot beyond the founding one.
#[test]
fn wiped_replica_rejoins_under_new_id_by_snapshot() {
    let f = fixture();
    let options = Options {
        compact_after_entries: COMPACT_AFTER_ENTRIES,
    };
    let mut c = Cluster::with_options(4, &[1, 2, 3], f.definition.clone(), options);
    c.wait_for_leader();
    for sheet in &f.sheets {
        c.run_until("a leader", |c| c.leader().is_some());
        c.submit(std::slice::from_ref(sheet));
        c.step();
    }
    c.drain();
    c.crash(3);
    let leader = c.wait_for_leader();
    c.replicas
        .get_mut(&leader)
        .and_then(Option::as_mut)
        .unwrap()
        .propose_membership(ConfChangeType::RemoveNode, ReplicaId::new(3), Vec::new())
        .expect("leader takes the change");
    c.run_until("replica 3 removed", |c| {
        c.live()
            .all(|r| !r.status().voters.contains(&ReplicaId::new(3)))
    });
    c.replicas.remove(&3);
    for replica in c.live() {
        let status = replica.status();
        assert!(
            status.first_index.get() > COMPACT_AFTER_ENTRIES,
            "seed 4: replica {} compacted its log (first index {})",
            status.id,
            status.first_index
        );
    }
    // Replica 4 starts empty (not bootstrapped): it learns the configuration from the leader.
    c.replicas.insert(4, None);
    c.start(4);
    let leader = c.wait_for_leader();
    c.replicas
        .get_mut(&leader)
        .and_then(Option::as_mut)
        .unwrap()
        .propose_membership(
            ConfChangeType::AddLearnerNode,
            ReplicaId::new(4),
            Vec::new(),
        )
        .expect("leader takes the change");
    c.converge();
    let leader = c.wait_for_leader();
    c.replicas
        .get_mut(&leader)
        .and_then(Option::as_mut)
        .unwrap()
        .propose_membership(ConfChangeType::AddNode, ReplicaId::new(4), Vec::new())
        .expect("leader takes the change");
    c.run_until("replica 4 is a voter", |c| {
        c.live()
            .all(|r| r.status().voters.contains(&ReplicaId::new(4)))
    });
    c.converge();
    c.check();
    let joined = c.replicas[&4].as_ref().expect("live").status();
    assert!(
        joined.first_index.get() > COMPACT_AFTER_ENTRIES,
        "seed 4: replica 4 started from a snapshot of the compacted log (first index {})",
        joined.first_index
    );
    assert_eq!(
        c.replicas[&4]
            .as_ref()
            .expect("live")
            .state()
            .ledger()
            .len(),
        f.sheets.len()
    );

    // The new voter takes part: ingest goes on with replica 1 down, so 2 and 4 must agree.
    let more = &f.sheets[..COMPACT_AFTER_ENTRIES as usize];
    c.crash(if c.leader() == Some(1) { 2 } else { 1 });
    for sheet in more {
        c.run_until("a leader", |c| c.leader().is_some());
        c.submit(std::slice::from_ref(sheet));
        c.step();
    }
    c.settle();
    c.check();
}

// Goal: a leadership transfer moves the leader to the chosen replica and ingest continues
// there; nothing acknowledged is lost or doubled.
// Method: ingest a third of the sheets, transfer to a follower, wait until it leads, ingest
// the rest at the new leader, settle, check.
#[test]
fn leadership_transfer_moves_the_leader() {
    let f = fixture();
    let mut c = Cluster::new(5, &[1, 2, 3], f.definition.clone());
    let old = c.wait_for_leader();
    let (first, rest) = f.sheets.split_at(f.sheets.len() / 3);
    for batch in first.chunks(16) {
        c.run_until("a leader", |c| c.leader().is_some());
        c.submit(batch);
        c.step();
    }
    c.settle();
    let target = [1, 2, 3].into_iter().find(|&id| id != old).unwrap();
    c.replicas
        .get_mut(&old)
        .and_then(Option::as_mut)
        .unwrap()
        .transfer_leader(ReplicaId::new(target));
    c.run_until("the transfer", |c| c.leader() == Some(target));
    let term = c.replicas[&target].as_ref().unwrap().status().term;
    for batch in rest.chunks(16) {
        c.run_until("a leader", |c| c.leader().is_some());
        assert!(c.submit(batch), "seed 5: the new leader took the batch");
        c.step();
    }
    c.settle();
    assert_eq!(c.leader(), Some(target), "seed 5: the leader stayed put");
    assert_eq!(c.replicas[&target].as_ref().unwrap().status().term, term);
    assert_eq!(c.acknowledged.len(), f.sheets.len());
    assert_eq!(c.abandoned, 0, "seed 5: no fault, nothing abandoned");
    c.check();
}
