//! Results computed outside the driver, once per applied index however many callers ask.
//!
//! The driver hands out a [`StateView`] (the chain records, shared in chunks, and the head at
//! its applied index; see [`crate::state::Records`]) and does nothing else for a read. The
//! ledger follows from the records: replaying them through a fresh `Ledger` rebuilds it (the
//! state machine's invariant that snapshots rely on too). So [`ResultsCache`] keeps a ledger
//! of its own, fed with the records added since its last computation, and computes the result
//! from that, on the blocking pool when the driver has a thread of its own (in place under
//! the simulation, whose runtime is one thread).
//!
//! Single flight: one computation runs at a time, and whoever waited for it takes its answer
//! when that is new enough, so a hundred callers at one applied index cost one computation.
//! Callers that can do with a slightly older picture (the unauthenticated dashboard) take the
//! last result while it is younger than their bound, so polling cannot make a replica compute
//! more than once per bound whatever the request rate.

use crate::error::Error;
use crate::ids::LogIndex;
use crate::node::{NodeHandle, Placement};
use crate::state::{ChainHead, Records, StateView};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tally_core::ledger::{Digest, Ledger, Submission};
use tally_core::results::{ElectionResult, compute_with};
use tally_rpc::pb;

/// The full results at one log index, the conflicts recorded up to it, and the state view they
/// were computed from (whose records an export streams).
pub struct ResultsAt {
    pub result: ElectionResult,
    pub chain: ChainHead,
    pub conflicts: Vec<pb::ConflictNotice>,
    /// What waits for the committee at this log index.
    pub matters: Vec<tally_core::committee::Matter>,
    pub view: StateView,
    /// When the view was taken.
    pub taken: tokio::time::Instant,
    /// `result` as JSON, written once with the computation rather than for every caller
    /// (it is the bulk of a whole county's Results answer).
    pub result_json: String,
}

/// The ledger as of the first `consumed` chain records, kept outside the driver.
#[derive(Default)]
struct Mirror {
    ledger: Ledger,
    consumed: usize,
    /// The head after the last consumed record, to notice records that are not a
    /// continuation (never, while replicas agree; then the mirror starts again).
    head: Option<[u8; 32]>,
    /// The log index of each conflicting sheet, by digest.
    conflict_at: HashMap<Digest, u64>,
}

impl Mirror {
    fn advance(&mut self, records: &Records) -> Result<(), Error> {
        let continues = match self.consumed {
            0 => true,
            n => records.len() >= n && records.get(n - 1).map(|r| r.head) == self.head,
        };
        if !continues {
            tracing::warn!(
                "the chain records no longer continue those the results were computed from; computing from the start"
            );
            *self = Mirror::default();
        }
        for record in records.iter_from(self.consumed) {
            // The founding fixes the definition (the view carries it); only sheets count.
            let Some(signed) = record.act.sheet() else {
                self.consumed += 1;
                self.head = Some(record.head);
                continue;
            };
            let sheet = tally_proto::decode_sheet(&signed.sheet).map_err(|e| {
                Error::Compute(format!(
                    "the sheet of chain record {} does not decode: {e}",
                    self.consumed
                ))
            })?;
            let digest = signed.digest();
            if let Submission::Conflict { .. } = self.ledger.submit(sheet, digest) {
                self.conflict_at.insert(digest, record.log_index);
            }
            self.consumed += 1;
            self.head = Some(record.head);
        }
        Ok(())
    }

    fn results(&self, view: StateView, taken: tokio::time::Instant) -> ResultsAt {
        let conflicts = self
            .ledger
            .conflicts()
            .iter()
            .map(|c| pb::ConflictNotice {
                unit_id: c.slot.unit.to_string(),
                contest_id: c.slot.contest.to_string(),
                round: c.slot.round.0,
                version: c.version,
                counted_digest: hex::encode(c.existing),
                conflicting_digest: hex::encode(c.conflicting),
                log_index: self.conflict_at.get(&c.conflicting).copied().unwrap_or(0),
            })
            .collect();
        let result = compute_with(&view.definition, &self.ledger, &view.decisions);
        let matters = view
            .decisions
            .pending(&view.definition, &self.ledger, &result);
        // An ElectionResult is plain data (strings, numbers, lists): it always serializes.
        let result_json = serde_json::to_string(&result).unwrap_or_default();
        ResultsAt {
            result,
            chain: view.chain,
            conflicts,
            matters,
            view,
            taken,
            result_json,
        }
    }
}

/// The newest results and the one computation that may be running (see the module
/// documentation).
pub struct ResultsCache {
    node: NodeHandle,
    latest: Mutex<Option<Arc<ResultsAt>>>,
    /// Held while a computation runs; waiters queue here and then look at `latest` again.
    mirror: Arc<tokio::sync::Mutex<Mirror>>,
}

impl ResultsCache {
    pub fn new(node: NodeHandle) -> Arc<ResultsCache> {
        Arc::new(ResultsCache {
            node,
            latest: Mutex::new(None),
            mirror: Arc::default(),
        })
    }

    /// Results reflecting at least log index `at_least` (a linearizable read passes the index
    /// its read barrier returned; a stale read the published applied index).
    pub async fn at_least(self: &Arc<Self>, at_least: LogIndex) -> Result<Arc<ResultsAt>, Error> {
        self.get(|at| at.chain.log_index >= at_least).await
    }

    /// Results reflecting at least `at_least`, or any computed within `age_max`: for readers
    /// that show this replica's applied state and refresh on their own (the dashboard).
    pub async fn recent(
        self: &Arc<Self>,
        at_least: LogIndex,
        age_max: Duration,
    ) -> Result<Arc<ResultsAt>, Error> {
        self.get(|at| at.chain.log_index >= at_least || at.taken.elapsed() <= age_max)
            .await
    }

    fn cached(&self, fresh: &impl Fn(&ResultsAt) -> bool) -> Option<Arc<ResultsAt>> {
        let latest = self.latest.lock().unwrap_or_else(|e| e.into_inner());
        latest.as_ref().filter(|at| fresh(at)).cloned()
    }

    async fn get(
        self: &Arc<Self>,
        fresh: impl Fn(&ResultsAt) -> bool,
    ) -> Result<Arc<ResultsAt>, Error> {
        if let Some(at) = self.cached(&fresh) {
            return Ok(at);
        }
        let mut mirror = self.mirror.clone().lock_owned().await;
        // Whoever held the lock before may have computed what this caller needs.
        if let Some(at) = self.cached(&fresh) {
            return Ok(at);
        }
        let taken = tokio::time::Instant::now();
        let view = self.node.view().await?;
        let this = self.clone();
        let compute = move || -> Result<Arc<ResultsAt>, Error> {
            mirror.advance(&view.records)?;
            let at = Arc::new(mirror.results(view, taken));
            this.node.metrics().results_computed.inc();
            let mut latest = this.latest.lock().unwrap_or_else(|e| e.into_inner());
            if latest
                .as_ref()
                .is_none_or(|l| l.chain.log_index <= at.chain.log_index)
            {
                *latest = Some(at.clone());
            }
            // Only now may the next caller in line look at `latest` again.
            drop(latest);
            drop(mirror);
            Ok(at)
        };
        match self.node.placement() {
            // Stored in `latest` even if this caller stops waiting.
            Placement::Thread => tokio::task::spawn_blocking(compute)
                .await
                .map_err(|e| Error::Compute(e.to_string()))?,
            Placement::Task => compute(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::Command;
    use crate::state::testkit::*;
    use tally_core::ids::TownshipId;

    fn ingest(sheets: Vec<tally_proto::SignedSheet>) -> Command {
        Command::Ingest {
            township: TownshipId::new("T1"),
            sheets,
            countersignature: None,
        }
    }

    // Goal: results computed outside the driver, from views and a ledger kept beside them,
    // equal the state machine's own, conflicts with their log indexes included, whether the
    // mirror catches up in one step or many, and when it must start again.
    // Method: apply accepted, corrected, superseded, conflicting and duplicate sheets to a
    // CountyState; advance one mirror after every command and another only at the end;
    // compare both with `CountyState::results` and the conflicts; then hand a mirror the
    // records of another history (a different first sheet) and compare again.
    #[test]
    fn mirror_computes_what_the_state_machine_holds() {
        let commands = [
            ingest(vec![signed(1, 1, 100), signed(2, 1, 80)]),
            ingest(vec![signed(1, 2, 120)]),
            ingest(vec![signed(2, 1, 81), signed(3, 1, 7)]),
            ingest(vec![signed(1, 1, 100), signed(2, 1, 81)]),
        ];
        let mut state = founded();
        let mut step = Mirror::default();
        for (i, command) in commands.iter().enumerate() {
            state.apply(at(i as u64 + 1), command);
            step.advance(&state.view().records).unwrap();
        }
        let mut once = Mirror::default();
        once.advance(&state.view().records).unwrap();
        let (expected, chain) = state.results();
        for mirror in [&step, &once] {
            let at = mirror.results(state.view(), tokio::time::Instant::now());
            assert_eq!(at.result, expected);
            assert_eq!(at.chain, chain);
            assert_eq!(at.conflicts.len(), 1);
            assert_eq!(
                at.conflicts[0].log_index, 4,
                "the third command, after the founding"
            );
            assert_eq!(
                at.conflicts[0].conflicting_digest,
                hex::encode(signed(2, 1, 81).digest())
            );
            assert_eq!(mirror.ledger, *state.ledger());
        }

        let mut other = founded();
        other.apply(at(1), &ingest(vec![signed(3, 1, 9)]));
        step.advance(&other.view().records).unwrap();
        assert_eq!(step.ledger, *other.ledger());
        assert_eq!(
            step.results(other.view(), tokio::time::Instant::now())
                .result,
            other.results().0
        );
    }
}
