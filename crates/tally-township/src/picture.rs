//! The township's own picture (`Township.Picture`): units reported of units expected, the
//! outbox, provisional results of its contests computed from the sheets stored here
//! (`tally_core::results::compute`, the same computation the county runs), and the sheets
//! that carry warnings or were refused.

use crate::book::PICTURE_NOTES_MAX;
use crate::book::lock;
use crate::store::Note;
use crate::township::{Township, unix_ms};
use std::sync::Arc;
use tally_core::results::ElectionResult;
use tally_rpc::pb;

/// The most sheets with warnings listed, newest first.
pub const PICTURE_WARNINGS_MAX: usize = 1_000;

fn sheet_note(note: &Note) -> pb::SheetNote {
    pb::SheetNote {
        unit_id: note.unit.clone(),
        contest_id: note.contest.clone(),
        round: note.round,
        version: note.version,
        digest: note.digest.clone(),
        refused_by: note.refused_by.clone(),
        code: note.code.clone(),
        messages: note.messages.clone(),
        received_unix_ms: note.received_unix_ms,
    }
}

impl Township {
    /// The provisional result over every sheet stored here, computed again only after the
    /// stored sheets changed.
    ///
    /// The computation runs on a copy of the ledger, outside the book's lock, so the writer
    /// (every submit) never waits for a picture.
    pub fn provisional_result(&self) -> Arc<ElectionResult> {
        let (generation, ledger) = {
            let book = lock(&self.book);
            let cache = self
                .results_cache
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if let Some((generation, result)) = cache.as_ref()
                && *generation == book.generation
            {
                return result.clone();
            }
            (book.generation, book.ledger.clone())
        };
        let result = Arc::new(tally_core::results::compute(&self.definition(), &ledger));
        let mut cache = self
            .results_cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // A picture computed meanwhile from newer sheets is kept.
        if cache
            .as_ref()
            .is_none_or(|(cached, _)| *cached < generation)
        {
            *cache = Some((generation, result.clone()));
        }
        result
    }

    /// What `Township.Picture` answers.
    pub fn picture(&self) -> pb::PictureResponse {
        // Asked before the book is locked: a reopen holds the disk's lock while it rebuilds
        // the book.
        let storage_error = self
            .disk
            .failure()
            .map(|f| f.describe())
            .unwrap_or_default();
        let result = self.provisional_result();
        let township = self.township.as_str();
        let now = unix_ms();
        let book = lock(&self.book);
        let units_expected = self
            .definition()
            .units
            .iter()
            .filter(|u| u.township == self.township)
            .count() as u64;
        let oldest_age_ms = book
            .outbox
            .values()
            .next()
            .and_then(|digest| book.records.get(digest))
            .map_or(0, |r| now.saturating_sub(r.received_unix_ms));
        let mut with_warnings: Vec<(&crate::store::Digest, &crate::store::SheetRecord)> = book
            .records
            .iter()
            .filter(|(_, r)| !r.warnings.is_empty())
            .collect();
        with_warnings.sort_by_key(|(_, r)| std::cmp::Reverse(r.seq));
        let warnings = with_warnings
            .into_iter()
            .take(PICTURE_WARNINGS_MAX)
            .map(|(digest, r)| pb::SheetNote {
                unit_id: r.unit.clone(),
                contest_id: r.contest.clone(),
                round: r.round,
                version: r.version,
                digest: hex::encode(digest),
                refused_by: String::new(),
                // The first warning's code: "W303 ballots_collected: ..." starts with it.
                code: r
                    .warnings
                    .first()
                    .and_then(|w| w.split_whitespace().next())
                    .unwrap_or_default()
                    .to_owned(),
                messages: r.warnings.clone(),
                received_unix_ms: r.received_unix_ms,
            })
            .collect();
        let kept = book.notes.newest_first();
        let mut not_listed: std::collections::BTreeMap<&str, (u64, u64)> = book
            .notes
            .senders
            .iter()
            .map(|(sender, s)| (sender.as_str(), (s.dropped.refusals, s.dropped.conflicts)))
            .collect();
        for (_, note) in kept.iter().skip(PICTURE_NOTES_MAX) {
            let count = not_listed.entry(note.sender()).or_default();
            if note.is_conflict() {
                count.1 += 1;
            } else {
                count.0 += 1;
            }
        }
        let refused_not_listed = not_listed
            .into_iter()
            .filter(|(_, (refusals, conflicts))| refusals + conflicts > 0)
            .map(|(sender, (refusals, conflicts))| pb::NotesNotListed {
                unit_id: sender.to_owned(),
                refusals,
                conflicts,
            })
            .collect();
        let refused = kept
            .into_iter()
            .take(PICTURE_NOTES_MAX)
            .map(|(_, note)| sheet_note(note))
            .collect();
        let contests: Vec<&tally_core::results::ContestResult> = result
            .contests
            .iter()
            .filter(|c| c.township.as_str() == township)
            .collect();
        let result_json = serde_json::json!({
            "election": result.election,
            "contests": contests,
            "townships": result.townships.iter().filter(|t| t.township.as_str() == township).collect::<Vec<_>>(),
        })
        .to_string();
        pb::PictureResponse {
            township_id: township.to_owned(),
            township_name: self.name.clone(),
            units_reported: book.units_reported.len() as u64,
            units_expected,
            sheets_stored: book.records.len() as u64,
            sheets_counted: book.ledger.len() as u64,
            storage_error,
            amendments: self
                .definition()
                .amended
                .amendments
                .iter()
                .map(|a| {
                    format!(
                        "{} (log index {}): {}; {}",
                        a.id,
                        a.log_index,
                        a.reason,
                        a.changes.join("; ")
                    )
                })
                .collect(),
            outbox: Some(pb::Outbox {
                depth: book.outbox.len() as u64,
                oldest_age_ms,
                capacity: self.settings.capacity,
                forwarded: book.forwarded,
                county_reachable: book.county_reachable,
                last_success_unix_ms: book.link.last_success_unix_ms,
                last_error: book.last_error.clone(),
                county_leader_id: book.link.leader_id,
                county_log_index: book.link.log_index,
                county_chain_head: hex::decode(&book.link.chain_head).unwrap_or_default(),
            }),
            contests: contests
                .into_iter()
                .map(tally_rpc::results::contest_result)
                .collect(),
            warnings,
            refused,
            result_json,
            refused_not_listed,
        }
    }
}

impl Township {
    /// The OpenMetrics text of this aggregator (`GET /metrics`).
    pub fn metrics_text(&self) -> String {
        let now = unix_ms();
        let units_expected = self
            .definition()
            .units
            .iter()
            .filter(|u| u.township == self.township)
            .count() as u64;
        // Asked before the book is locked: a reopen holds the disk's lock while it rebuilds
        // the book.
        let storage_failed = self.disk.failure().is_some();
        let gauges = {
            let book = lock(&self.book);
            crate::metrics::Gauges {
                outbox_sheets: book.outbox.len() as u64,
                outbox_oldest_age_ms: book
                    .outbox
                    .values()
                    .next()
                    .and_then(|digest| book.records.get(digest))
                    .map_or(0, |r| now.saturating_sub(r.received_unix_ms)),
                outbox_capacity_sheets: self.settings.capacity,
                county_reachable: book.county_reachable,
                forwarded_sheets: book.forwarded,
                units_reported: book.units_reported.len() as u64,
                units_expected,
                sheets_stored: book.records.len() as u64,
                storage_failed,
            }
        };
        self.metrics.render(&gauges)
    }
}
