//! A committee act applied to the record (docs/design/record.md): the one place its meaning
//! is decided, for every replica of the county, for `tally verify`'s replay and for the
//! simulation's offline replay, so they cannot disagree.
//!
//! The record's parts an act may change are the definition in force, the zero report's log
//! index and the committee's decisions; the ledger of sheets is read, never changed (a
//! decision on a conflict names the sheet that counts, and the results apply it). Nothing changes unless the act is taken as a whole.

use crate::act::{self, ActBody, Change, SignedAct};
use crate::committee::Decisions;
use crate::definition::Definition;
use crate::ledger::Ledger;
use crate::results::compute_with;
use crate::validate::Code;

/// What of the record an act may change.
pub struct Parts<'a> {
    pub definition: &'a Definition,
    pub ledger: &'a Ledger,
    pub zero_report: &'a mut Option<u64>,
    pub decisions: &'a mut Decisions,
}

/// Checks `act` (k valid signatures of the committee, this election and mode) and applies it
/// at `log_index`. Returns the amended definition when it is an amendment. `head_at` gives the
/// chain head at a log index (a confirmation names the head its officials saw). On refusal,
/// every problem, starting with its stable code where it has one; nothing changed.
pub fn apply(
    parts: Parts<'_>,
    log_index: u64,
    act: &SignedAct,
    head_at: &dyn Fn(u64) -> Option<[u8; 32]>,
) -> Result<Option<Definition>, String> {
    let Parts {
        definition,
        ledger,
        zero_report,
        decisions,
    } = parts;
    let (body, _signers) = act::check(definition, act).map_err(|e| e.to_string())?;
    match body {
        ActBody::ZeroReport(report) => {
            let recorded = !ledger.is_empty() || !ledger.conflicts().is_empty();
            act::check_zero_report(definition, &report, recorded, *zero_report)
                .map_err(|e| e.to_string())?;
            *zero_report = Some(log_index);
            Ok(None)
        }
        ActBody::Amendment(amendment) => {
            // A confirmed result stays as it was signed: what would change it waits for a
            // reopening.
            let touched: Vec<&crate::ids::ContestId> = amendment
                .changes
                .iter()
                .flat_map(|c| match c {
                    Change::RegisteredVoters { contest, .. }
                    | Change::WithdrawCandidate { contest, .. } => vec![contest],
                    Change::AddUnit { contests, .. } => contests.iter().collect(),
                    Change::ReplaceKey { .. } => Vec::new(),
                })
                .filter(|c| decisions.locked(c))
                .collect();
            if let Some(contest) = touched.first() {
                return Err(format!(
                    "{} amendment {}: contest {contest} is confirmed and locked; reopen it first (`tally committee reopen`)",
                    Code::ContestLocked.as_str(),
                    amendment.id
                ));
            }
            let amended = act::amend(definition, &amendment, log_index, &|c| ledger.polled(c))
                .map_err(|e| e.to_string())?;
            Ok(Some(amended))
        }
        ActBody::Decision(decision) => {
            let result = compute_with(definition, ledger, decisions);
            decisions
                .decide(definition, ledger, &result, log_index, &decision)
                .map_err(|e| e.to_string())?;
            Ok(None)
        }
        ActBody::Confirmation(confirmation) => {
            let result = compute_with(definition, ledger, decisions);
            decisions
                .confirm(
                    definition,
                    ledger,
                    &result,
                    log_index,
                    &confirmation,
                    head_at,
                )
                .map_err(|e| e.to_string())?;
            Ok(None)
        }
        ActBody::Reopening(reopening) => {
            decisions
                .reopen(log_index, &reopening)
                .map_err(|e| e.to_string())?;
            Ok(None)
        }
    }
}
