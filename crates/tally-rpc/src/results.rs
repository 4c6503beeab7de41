//! The tally.v1 form of a computed result (`tally_core::results`): one copy, used by the county
//! coordinator's Results call and by the township aggregator's Picture, so the two never
//! describe the same contest differently.

use crate::pb;
use tally_core::results::{AreaSummary, ContestResult, ContestStatus, Person, Summary};

/// The wire name of a contest's status (`ContestResult.status`).
pub fn contest_status_name(status: ContestStatus) -> &'static str {
    match status {
        ContestStatus::Counting => "counting",
        ContestStatus::AwaitingRound => "awaiting_round",
        ContestStatus::CommitteeDecision => "committee_decision",
        ContestStatus::RoundLimit => "round_limit",
        ContestStatus::Decided => "decided",
    }
}

pub fn summary(s: &Summary) -> pb::Summary {
    pb::Summary {
        contests_total: s.contests_total,
        contests_decided: s.contests_decided,
        seats_total: s.seats_total,
        seats_filled: s.seats_filled,
        vacancies: s.vacancies,
        units_reported: s.units_reported,
        units_expected: s.units_expected,
        registered_voters: s.registered_voters,
        voted: s.voted,
        turnout_per_mille: s.turnout_per_mille,
    }
}

pub fn township_summary(t: &AreaSummary) -> pb::TownshipSummary {
    pb::TownshipSummary {
        township_id: t.township.to_string(),
        name: t.name.clone(),
        county_level: Some(summary(&t.county_level)),
        township_level: Some(summary(&t.township_level)),
    }
}

/// A candidate's id, or empty for a write-in (whose name is in `CandidateVotes.name`).
pub fn candidate_id(person: &Person) -> String {
    match person {
        Person::Candidate(id) => id.to_string(),
        Person::WriteIn(_) => String::new(),
    }
}

/// One contest: its status, seats, the latest round's units and votes, and who is elected.
pub fn contest_result(c: &ContestResult) -> pb::ContestResult {
    let latest = c.rounds.last();
    pb::ContestResult {
        contest_id: c.contest.to_string(),
        name: c.name.clone(),
        level: c.level.name().to_owned(),
        township_id: c.township.to_string(),
        seats: c.seats,
        status: contest_status_name(c.status).to_owned(),
        seats_filled: c.seats_filled,
        vacancies: c.vacancies,
        rounds: c.rounds.len() as u32,
        units_reported: latest.map_or(0, |r| r.units_reported as u64),
        units_expected: latest.map_or(0, |r| r.units_expected as u64),
        votes: latest
            .map(|r| {
                r.votes
                    .iter()
                    .map(|v| pb::CandidateVotes {
                        candidate_id: candidate_id(&v.person),
                        name: v.name.clone(),
                        votes: v.votes,
                        round: r.round,
                    })
                    .collect()
            })
            .unwrap_or_default(),
        elected: c
            .elected
            .iter()
            .map(|e| pb::CandidateVotes {
                candidate_id: candidate_id(&e.person),
                name: e.name.clone(),
                votes: e.votes,
                round: e.round,
            })
            .collect(),
        result_digest: tally_core::committee::result_digest(c).to_vec(),
        confirmation: c
            .confirmed
            .as_ref()
            .map(|l| l.confirmation.clone())
            .unwrap_or_default(),
        after_lock: c.after_lock.len() as u32,
    }
}

/// One matter waiting for the committee.
pub fn matter(m: &tally_core::committee::Matter) -> pb::CommitteeMatter {
    pb::CommitteeMatter {
        contest_id: m.contest.to_string(),
        kind: m.kind.to_owned(),
        blocking: m.blocking,
        what: m.what.clone(),
        how: m.how.clone(),
        code: m.code.clone(),
        at: m.at.clone(),
    }
}
