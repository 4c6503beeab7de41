//! The Election Law outcome of each contest, computed from the counted sheets of a [`Ledger`],
//! and the township and county summaries built from it.
//!
//! # The rules, in the order they apply (election-rules.md, "Ballots and the count")
//!
//! A contest is counted round by round. Round 1 is the election day vote; the outcome of each
//! round decides, deterministically, whether another round is called, of which kind, for how
//! many seats and between whom. A round is decided only when every unit serving the contest has
//! reported; before that it is `Pending` and its tallies are provisional.
//!
//! 1. **Art 44, ballots vs voters.** More ballots collected than issued across the contest:
//!    the round is void as a whole and held again.
//! 2. **Art 45, turnout.** Not more than half of the contest's registered voters (from the
//!    definition) voted (`issued * 2 <= registered`): the round is invalid and held again. The
//!    law is silent on the later rounds: a further election skips this check when
//!    `rules.further_election_turnout_required` is false, a revote (再次投票) when
//!    `rules.revote_turnout_required` is false (both default to `true`).
//! 3. **Art 45, majority** (rounds of kind `First` and `Repeat`). Elected with
//!    `votes * 2 > ballots issued`; void ballots stay in the denominator. Write-ins (另选他人)
//!    can be elected like candidates. If more pass than there are seats, the highest win and a
//!    tie at the last seat sends the tied people to a revote for the seats left. If fewer pass,
//!    those who passed stand and the remaining seats go to a further election (另行选举).
//! 4. **Further election candidates (Art 31 ratio).** The candidates on the round's ballot who
//!    were not elected, in vote order. *Chosen count:* for one seat exactly 2; for `n` seats the
//!    least the ratio allows, `max(ceil(4n/3), n + 1)`. Written-in people who were not elected
//!    are listed too, in the same vote order, only when `rules.further_election_lists_write_ins`
//!    is true; by default (`false`) they are not put on the ballot (the law speaks of
//!    candidates; they may still be written in again). If the person at the cut-off ties with
//!    the next one, the list cannot be drawn without a rule the law does not give: the outcome
//!    reports the tie ([`FollowUp::FurtherCandidatesTie`]) for the committee, and no round is
//!    called. If fewer people are left than the ratio asks, all of them are listed. A listed
//!    written-in person's votes are reported on the sheet as a write-in under that name, as in
//!    a revote.
//! 5. **Further election** (kind `Further`). The most votes win, but only with
//!    `votes * 3 >= ballots issued` (at least one third). Written-in people can win it too
//!    (Art 41 applies to every vote). A tie at the last seat among those who reach a third
//!    goes to a revote. A seat still unfilled stays vacant.
//! 6. **Revote** (kind `Revote`). Decided among the tied people only (votes for anyone else
//!    are not counted for a seat), by `rules.revote_rule`: `plurality` (default; Art 45, 以得票多
//!    的当选) elects the most votes; `one-third` elects the most votes only with
//!    `votes * 3 >= ballots issued`. Under either, a new tie at the last seat goes to another
//!    revote, and a seat nobody wins (under `plurality` only when the tied people have no
//!    votes) stays vacant.
//! 7. **Held again.** A void or turnout-failed round is held again with the same candidates and
//!    seats. A first round or a repeat is held again as a `Repeat` (first-round rules); a
//!    further election or a revote is held again as the same kind, since holding it again does
//!    not change the rule it is decided by.
//!
//! Nobody with zero votes is elected, whatever the rule. At most [`ROUND_MAX`] rounds are
//! counted; a contest that needs more is reported with [`ContestStatus::RoundLimit`].
//!
//! Sheets for a round no outcome called for (E207), later-round sheets whose candidate list
//! is not that round's ballot (E118), and sheets with more marks in total than valid ballots
//! times the *round's* seats (E105) or one person with more votes than valid ballots (E103)
//! are reported in [`ElectionResult::findings`] and not counted (the sheet checks of
//! `validate` know only the contest's seats; a revote or further election may be for fewer).
//! So are the contest-level warnings W305 (turnout outlier) and W306 (registered voters do not
//! add up).
//!
//! Everything is integer arithmetic and ordered collections: the same ledger contents give the
//! same result, byte for byte.

use crate::committee::{ContestDecisions, Decisions};
use crate::congress::Level;
use crate::definition::{Contest, Definition, RevoteRule, Rules, ThresholdBase};
use crate::ids::{CandidateId, ContestId, TownshipId};
use crate::ledger::Ledger;
use crate::sheet::{ROUND_MAX, TallySheet};
use crate::validate::{Code, Finding};
use serde::Serialize;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};

/// What kind of vote a round is, which decides the rule it is counted by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum RoundKind {
    /// The election day vote: majority of the people who voted.
    First,
    /// A first round or repeat held again after a void or turnout-failed vote: majority.
    Repeat,
    /// Another vote (再次投票) between people tied for the last seat(s), decided by
    /// `rules.revote_rule`.
    Revote,
    /// A further election (另行选举) for seats left unfilled: most votes, at least one third.
    Further,
}

/// Someone who can receive votes: a candidate on the ballot, or a written-in person by the
/// name voters wrote, as counted ([`crate::sheet::counting_name`]: NFC, spaces collapsed).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, serde::Deserialize)]
pub enum Person {
    Candidate(CandidateId),
    WriteIn(String),
}

impl Person {
    /// The name to print: the candidate's name from the definition, or the written-in name.
    pub fn name(&self, contest: &Contest) -> String {
        match self {
            Person::Candidate(id) => contest
                .candidates
                .iter()
                .find(|c| &c.id == id)
                .map_or_else(|| id.to_string(), |c| c.name.clone()),
            Person::WriteIn(name) => name.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PersonVotes {
    pub person: Person,
    pub name: String,
    pub votes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ElectedPerson {
    pub person: Person,
    pub name: String,
    pub votes: u64,
    /// The round the person was elected in.
    pub round: u32,
}

/// The base a one-third threshold was measured against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Threshold {
    pub base: crate::definition::ThresholdBase,
    /// The ballots of that base in the round.
    pub ballots: u64,
}

/// A round the outcome so far calls for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NextRound {
    pub round: u32,
    pub kind: RoundKind,
    pub seats: u32,
    pub candidates: Vec<Person>,
}

/// Sums over the counted sheets of one round.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RoundTotals {
    /// The contest's registered voters, from the definition: the turnout denominator.
    pub registered_voters: u64,
    /// The registered voters the reporting units say they served.
    pub registered_voters_served: u64,
    pub ballots_issued: u64,
    pub ballots_collected: u64,
    pub ballots_void: u64,
    pub ballots_valid: u64,
    pub ballots_blank: u64,
    pub proxies: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum RoundStatus {
    /// Not every unit has reported; the tallies are provisional.
    Pending,
    /// More ballots collected than issued: void as a whole, held again (Art 44).
    VoidArt44 { issued: u64, collected: u64 },
    /// Not more than half of the registered voters voted: invalid, held again (Art 45).
    TurnoutFailed { voted: u64, registered: u64 },
    /// Counted under the round's rule; see `elected` and `follow_up`.
    Decided,
    /// Declared void by the committee for a violation of the law (选举无效), held again.
    VoidByCommittee { decision: String },
}

/// What a decided (or void) round leaves to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum FollowUp {
    /// Nothing: every seat at stake is filled, or the round is still pending.
    None,
    /// The round was void or invalid and is held again.
    HeldAgain,
    /// A tie at the last seat: the tied people vote again (再次投票) for `seats`.
    Revote { seats: u32, people: Vec<Person> },
    /// Too few passed: a further election (另行选举) for `seats` between `candidates`.
    Further { seats: u32, candidates: Vec<Person> },
    /// The further election's candidate list cannot be drawn: `listed` are certain, and
    /// `places` more are to be chosen among `tied`, who have equal votes. The committee decides.
    FurtherCandidatesTie {
        seats: u32,
        listed: Vec<Person>,
        tied: Vec<Person>,
        places: u32,
    },
    /// Seats that no one won in a further election or revote stay vacant.
    Vacant { seats: u32 },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RoundResult {
    pub round: u32,
    pub kind: RoundKind,
    /// Seats at stake in this round.
    pub seats: u32,
    /// The people on this round's ballot.
    pub candidates: Vec<Person>,
    pub units_reported: usize,
    pub units_expected: usize,
    pub totals: RoundTotals,
    /// Votes per person, most first; ties in definition order, then write-ins by name.
    pub votes: Vec<PersonVotes>,
    /// The fewest votes that can win under this round's rule, for the ballots so far (1 for
    /// a `plurality` revote: any votes can win it).
    pub votes_needed: u64,
    /// For a one-third threshold (a further election, a one-third revote): what the third is
    /// of, `collected` or `issued` (`rules.further_election_threshold_base`), and that count.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threshold: Option<Threshold>,
    pub status: RoundStatus,
    pub elected: Vec<ElectedPerson>,
    pub follow_up: FollowUp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ContestStatus {
    /// The latest round is waiting for units to report.
    Counting,
    /// A round has been called and no sheet for it has arrived yet (see `next_round`).
    AwaitingRound,
    /// The further election's candidate list ties at the cut-off; the committee must decide.
    CommitteeDecision,
    /// More than [`ROUND_MAX`] rounds would be needed.
    RoundLimit,
    /// Every seat is filled or finally vacant.
    Decided,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ContestResult {
    pub contest: ContestId,
    pub name: String,
    pub level: Level,
    pub township: TownshipId,
    pub seats: u32,
    pub registered_voters: u64,
    pub status: ContestStatus,
    /// Round 1 always; each later round once a sheet for it has arrived.
    pub rounds: Vec<RoundResult>,
    /// Everyone elected so far, in the order they were elected.
    pub elected: Vec<ElectedPerson>,
    pub seats_filled: u32,
    /// Seats left vacant; final only once the contest is `Decided`.
    pub vacancies: u32,
    /// The round called for that is not yet decided (also while its sheets are arriving).
    pub next_round: Option<NextRound>,
    /// The committee's decisions, confirmations and reopenings on this contest, in record
    /// order (docs/design/committee.md).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub decisions: Vec<crate::committee::DecisionNote>,
    /// The confirmation in force: the result is locked as its officials signed it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub confirmed: Option<crate::committee::Lock>,
    /// Sheets recorded after the lock (labels), never counted while it holds.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub after_lock: Vec<String>,
}

/// Figures over a set of contests. Units are counted per contest: a unit serving a county
/// and a township contest counts once in each. Units reported and people who voted are taken
/// from each contest's latest round shown.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub contests_total: u32,
    pub contests_decided: u32,
    pub seats_total: u32,
    pub seats_filled: u32,
    pub vacancies: u32,
    pub units_reported: u64,
    pub units_expected: u64,
    pub registered_voters: u64,
    pub voted: u64,
    /// `voted * 1000 / registered_voters`, rounded down (0 when there are no voters).
    pub turnout_per_mille: u64,
}

impl Summary {
    fn add(&mut self, contest: &ContestResult) {
        self.contests_total += 1;
        self.contests_decided += u32::from(contest.status == ContestStatus::Decided);
        self.seats_total += contest.seats;
        self.seats_filled += contest.seats_filled;
        self.vacancies += contest.vacancies;
        self.registered_voters = self
            .registered_voters
            .saturating_add(contest.registered_voters);
        if let Some(round) = contest.rounds.last() {
            self.units_reported += round.units_reported as u64;
            self.units_expected += round.units_expected as u64;
            self.voted = self.voted.saturating_add(round.totals.ballots_issued);
        }
        self.turnout_per_mille = per_mille(self.voted, self.registered_voters);
    }

    fn merge(&mut self, other: &Summary) {
        self.contests_total += other.contests_total;
        self.contests_decided += other.contests_decided;
        self.seats_total += other.seats_total;
        self.seats_filled += other.seats_filled;
        self.vacancies += other.vacancies;
        self.units_reported += other.units_reported;
        self.units_expected += other.units_expected;
        self.registered_voters = self
            .registered_voters
            .saturating_add(other.registered_voters);
        self.voted = self.voted.saturating_add(other.voted);
        self.turnout_per_mille = per_mille(self.voted, self.registered_voters);
    }
}

fn per_mille(part: u64, whole: u64) -> u64 {
    if whole == 0 {
        return 0;
    }
    // Fits: part * 1000 < 2^74, and the quotient is at most part * 1000.
    u64::try_from(u128::from(part) * 1000 / u128::from(whole)).unwrap_or(u64::MAX)
}

/// A township: the contests whose `township` it is, by level.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AreaSummary {
    pub township: TownshipId,
    pub name: String,
    pub county_level: Summary,
    pub township_level: Summary,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CountySummary {
    pub county: TownshipId,
    pub name: String,
    /// The county congress contests.
    pub county_level: Summary,
    /// Every township congress contest in the county.
    pub township_level: Summary,
    /// Everything.
    pub all: Summary,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ElectionResult {
    pub election: String,
    /// Official, or a rehearsal: every report of a rehearsal says so.
    pub mode: crate::definition::Mode,
    /// In definition order.
    pub contests: Vec<ContestResult>,
    /// In definition order.
    pub townships: Vec<AreaSummary>,
    pub county: CountySummary,
    /// Contest-level findings (E103, E105, E118, E202, E203, E207, W305, W306), in contest and
    /// round order.
    pub findings: Vec<Finding>,
    /// The amendments of the definition this result reflects, in record order (absent when
    /// there are none).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub amendments: Vec<crate::definition::AmendmentNote>,
}

/// Computes every contest's outcome and the summaries, before any decision of the committee.
/// Deterministic: depends only on the definition and the ledger's counted sheets.
pub fn compute(definition: &Definition, ledger: &Ledger) -> ElectionResult {
    compute_with(definition, ledger, &Decisions::default())
}

/// Computes every contest's outcome under the committee's decisions so far: written-in names
/// adjudicated, rounds voided, further-election lists decided, and each confirmed contest as
/// it was confirmed (only the sheets counted then; later arrivals are listed, not counted).
/// Deterministic: depends only on the definition, the ledger and the decisions.
pub fn compute_with(
    definition: &Definition,
    ledger: &Ledger,
    decisions: &Decisions,
) -> ElectionResult {
    let mut findings = Vec::new();
    let mut by_contest: BTreeMap<&ContestId, BTreeMap<u32, Vec<&TallySheet>>> = BTreeMap::new();
    let mut after_lock: BTreeMap<&ContestId, Vec<String>> = BTreeMap::new();
    // A locked contest counts the versions counted when it was confirmed, whatever came since.
    let mut counted: Vec<&TallySheet> = Vec::new();
    for sheet in ledger.counted() {
        let sheet = decisions.effective(ledger, sheet);
        let lock = decisions
            .contest(&sheet.contest)
            .and_then(|d| d.lock.as_ref());
        let Some(lock) = lock else {
            counted.push(sheet);
            continue;
        };
        let slot = sheet.slot();
        let frozen = lock.counted.get(&slot).copied();
        if frozen == Some(sheet.version) {
            counted.push(sheet);
            continue;
        }
        if let Some(version) = frozen
            && let Some(recorded) = ledger.versions(&slot).find(|r| r.sheet.version == version)
        {
            counted.push(decisions.effective(ledger, &recorded.sheet));
        }
        let late = after_lock.entry(&sheet.contest).or_default();
        for recorded in ledger
            .versions(&slot)
            .filter(|r| frozen.is_none_or(|v| r.sheet.version > v))
        {
            late.push(recorded.sheet.label());
        }
    }
    for (id, d) in decisions.contests() {
        if let Some(lock) = &d.lock {
            for c in ledger
                .conflicts()
                .iter()
                .skip(lock.conflicts_before)
                .filter(|c| &c.slot.contest == id)
            {
                after_lock
                    .entry(id)
                    .or_default()
                    .push(format!("{} (in conflict)", c.sheet.label()));
            }
        }
    }
    for sheet in counted {
        let Some(contest) = definition.contest(&sheet.contest) else {
            findings.push(sheet_finding(
                sheet,
                Code::UnknownContest,
                "contest",
                format!(
                    "contest {} is not in the election definition; the sheet is not counted",
                    sheet.contest
                ),
            ));
            continue;
        };
        let serves = definition
            .unit(&sheet.unit)
            .is_some_and(|u| u.contests.contains(&contest.id));
        if !serves {
            findings.push(sheet_finding(
                sheet,
                Code::UnitNotServingContest,
                "unit",
                format!(
                    "unit {} does not serve contest {}; the sheet is not counted",
                    sheet.unit, sheet.contest
                ),
            ));
            continue;
        }
        by_contest
            .entry(&contest.id)
            .or_default()
            .entry(sheet.round.0)
            .or_default()
            .push(sheet);
    }

    let empty = BTreeMap::new();
    let contests: Vec<ContestResult> = definition
        .contests
        .iter()
        .map(|contest| {
            let sheets = by_contest.get(&contest.id).unwrap_or(&empty);
            let decided = decisions.contest(&contest.id);
            let mut result = contest_result(definition, contest, sheets, decided, &mut findings);
            if let Some(d) = decided {
                result.decisions = d.notes.clone();
                result.confirmed = d.lock.clone();
            }
            result.after_lock = after_lock.remove(&contest.id).unwrap_or_default();
            result
        })
        .collect();

    let mut townships = Vec::new();
    for area in &definition.townships {
        let mut summary = AreaSummary {
            township: area.id.clone(),
            name: area.name.clone(),
            county_level: Summary::default(),
            township_level: Summary::default(),
        };
        for c in contests.iter().filter(|c| c.township == area.id) {
            match c.level {
                Level::County => summary.county_level.add(c),
                Level::Township => summary.township_level.add(c),
            }
        }
        townships.push(summary);
    }
    let mut county = CountySummary {
        county: definition.county.id.clone(),
        name: definition.county.name.clone(),
        county_level: Summary::default(),
        township_level: Summary::default(),
        all: Summary::default(),
    };
    for c in &contests {
        match c.level {
            Level::County => county.county_level.add(c),
            Level::Township => county.township_level.add(c),
        }
    }
    county.all.merge(&county.county_level);
    county.all.merge(&county.township_level);

    ElectionResult {
        election: definition.election.id.clone(),
        mode: definition.election.mode,
        contests,
        townships,
        county,
        findings,
        amendments: definition.amended.amendments.clone(),
    }
}

fn sheet_finding(
    sheet: &TallySheet,
    code: Code,
    field: &str,
    message: impl Into<String>,
) -> Finding {
    Finding {
        code,
        sheet: sheet.label(),
        field: field.into(),
        message: message.into(),
    }
}

fn contest_finding(
    contest: &Contest,
    round: u32,
    code: Code,
    field: &str,
    message: String,
) -> Finding {
    Finding {
        code,
        sheet: format!("contest {}, round {round}", contest.id),
        field: field.into(),
        message,
    }
}

fn contest_result(
    definition: &Definition,
    contest: &Contest,
    sheets_by_round: &BTreeMap<u32, Vec<&TallySheet>>,
    decided: Option<&ContestDecisions>,
    findings: &mut Vec<Finding>,
) -> ContestResult {
    let mut spec = NextRound {
        round: 1,
        kind: RoundKind::First,
        seats: contest.seats,
        candidates: contest
            .candidates
            .iter()
            .map(|c| Person::Candidate(c.id.clone()))
            .collect(),
    };
    let mut rounds: Vec<RoundResult> = Vec::new();
    let mut elected = Vec::new();
    let mut vacancies = 0;
    let mut next_round = None;
    let status = loop {
        let sheets = sheets_by_round
            .get(&spec.round)
            .map_or(&[][..], Vec::as_slice);
        if spec.round > 1 && sheets.is_empty() {
            next_round = Some(spec);
            break ContestStatus::AwaitingRound;
        }
        let round = count_round(definition, contest, &spec, sheets, decided, findings);
        elected.extend(round.elected.iter().cloned());
        let pending = round.status == RoundStatus::Pending;
        let follow_up = round.follow_up.clone();
        rounds.push(round);
        if pending {
            if spec.round > 1 {
                next_round = Some(spec);
            }
            break ContestStatus::Counting;
        }
        let next = match follow_up {
            FollowUp::None => break ContestStatus::Decided,
            FollowUp::Vacant { seats } => {
                vacancies += seats;
                break ContestStatus::Decided;
            }
            FollowUp::FurtherCandidatesTie {
                seats,
                listed,
                places: _,
                tied: _,
            } => match decided.and_then(|d| d.cutoff.get(&spec.round)) {
                // The committee chose who of the tied take the open places.
                Some(chosen) => NextRound {
                    round: spec.round + 1,
                    kind: RoundKind::Further,
                    seats,
                    candidates: listed.iter().chain(chosen).cloned().collect(),
                },
                None => break ContestStatus::CommitteeDecision,
            },
            FollowUp::HeldAgain => NextRound {
                round: spec.round + 1,
                kind: match spec.kind {
                    RoundKind::First => RoundKind::Repeat,
                    other => other,
                },
                seats: spec.seats,
                candidates: spec.candidates.clone(),
            },
            FollowUp::Revote { seats, people } => NextRound {
                round: spec.round + 1,
                kind: RoundKind::Revote,
                seats,
                candidates: people,
            },
            FollowUp::Further { seats, candidates } => NextRound {
                round: spec.round + 1,
                kind: RoundKind::Further,
                seats,
                candidates,
            },
        };
        if next.round > ROUND_MAX {
            break ContestStatus::RoundLimit;
        }
        spec = next;
    };

    // Sheets for rounds nobody called for.
    let shown: BTreeSet<u32> = rounds.iter().map(|r| r.round).collect();
    for (&round, sheets) in sheets_by_round {
        if shown.contains(&round) {
            continue;
        }
        let why = match (&next_round, status) {
            (Some(n), _) => format!(
                "the count so far calls for round {} ({:?}), not round {round}",
                n.round, n.kind
            ),
            (None, ContestStatus::Counting) => {
                "the rounds before it are still being counted, so no later round is called yet"
                    .to_string()
            }
            (None, ContestStatus::CommitteeDecision) => {
                "the committee must first settle the further election's candidate list".to_string()
            }
            (None, _) => "the contest is decided without it".to_string(),
        };
        for sheet in sheets {
            findings.push(sheet_finding(
                sheet,
                Code::RoundNotCalled,
                "round",
                format!(
                    "no round {round} was called for contest {}: {why}; the sheet is not counted",
                    contest.id
                ),
            ));
        }
    }

    ContestResult {
        contest: contest.id.clone(),
        name: contest.name.clone(),
        level: contest.level,
        township: contest.township.clone(),
        seats: contest.seats,
        registered_voters: contest.registered_voters,
        status,
        rounds,
        seats_filled: elected.len() as u32,
        elected,
        vacancies,
        next_round,
        decisions: Vec::new(),
        confirmed: None,
        after_lock: Vec::new(),
    }
}

fn count_round(
    definition: &Definition,
    contest: &Contest,
    spec: &NextRound,
    sheets: &[&TallySheet],
    decided: Option<&ContestDecisions>,
    findings: &mut Vec<Finding>,
) -> RoundResult {
    let rules = &definition.rules;
    // The candidate ids a sheet of this round must list, exactly once each.
    let ballot_ids: BTreeSet<&CandidateId> = spec
        .candidates
        .iter()
        .filter_map(|p| match p {
            Person::Candidate(id) => Some(id),
            Person::WriteIn(_) => None,
        })
        .collect();
    let mut counted: Vec<&TallySheet> = Vec::new();
    for &sheet in sheets {
        let listed: BTreeSet<&CandidateId> =
            sheet.candidates.iter().map(|c| &c.candidate).collect();
        if listed != ballot_ids || sheet.candidates.len() != ballot_ids.len() {
            findings.push(sheet_finding(
                sheet,
                Code::RoundBallotMismatch,
                "candidates",
                format!(
                    "round {} ({:?}) has the candidates {}, but the sheet lists {}; the sheet is not counted, send a corrected version",
                    spec.round,
                    spec.kind,
                    join_ids(ballot_ids.iter().copied()),
                    join_ids(sheet.candidates.iter().map(|c| &c.candidate)),
                ),
            ));
            continue;
        }
        if let Some(finding) = round_marks_finding(spec, sheet) {
            findings.push(finding);
            continue;
        }
        counted.push(sheet);
    }

    let mut totals = RoundTotals {
        registered_voters: contest.registered_voters,
        ..RoundTotals::default()
    };
    // Sums saturate rather than wrap: validated sheets are far below u64, and a saturated total
    // can only make a check fail loudly, never pass.
    let mut votes: BTreeMap<Person, u64> = spec.candidates.iter().map(|p| (p.clone(), 0)).collect();
    for sheet in &counted {
        totals.registered_voters_served = totals
            .registered_voters_served
            .saturating_add(sheet.registered_voters);
        totals.ballots_issued = totals.ballots_issued.saturating_add(sheet.ballots_issued);
        totals.ballots_collected = totals
            .ballots_collected
            .saturating_add(sheet.ballots_collected);
        totals.ballots_void = totals.ballots_void.saturating_add(sheet.ballots_void);
        totals.ballots_valid = totals.ballots_valid.saturating_add(sheet.ballots_valid);
        totals.ballots_blank = totals.ballots_blank.saturating_add(sheet.ballots_blank);
        totals.proxies = totals.proxies.saturating_add(sheet.proxies);
        for c in &sheet.candidates {
            let v = votes
                .entry(Person::Candidate(c.candidate.clone()))
                .or_default();
            *v = v.saturating_add(c.approvals);
        }
        for w in &sheet.write_ins {
            // Counted under the counting name (NFC, spaces collapsed), never the raw bytes:
            // two spellings of one name are one person here, at the county, at the township
            // and offline alike. Beyond that, the committee's adjudication decides (merged
            // spellings, names ruled invalid).
            let name = w.counting_name();
            let person = match decided.and_then(|d| d.write_ins.get(&name)) {
                Some(Some(person)) => person.clone(),
                Some(None) => continue,
                None => Person::WriteIn(name),
            };
            let v = votes.entry(person).or_default();
            *v = v.saturating_add(w.votes);
        }
    }
    let order = |p: &Person| match p {
        Person::Candidate(id) => (
            0,
            contest
                .candidates
                .iter()
                .position(|c| &c.id == id)
                .unwrap_or(usize::MAX),
            String::new(),
        ),
        Person::WriteIn(name) => (1, 0, name.clone()),
    };
    let mut votes: Vec<PersonVotes> = votes
        .into_iter()
        .map(|(person, votes)| PersonVotes {
            name: person.name(contest),
            person,
            votes,
        })
        .collect();
    votes.sort_by_cached_key(|pv| (Reverse(pv.votes), order(&pv.person)));

    let units_expected = definition.units_serving_count(&contest.id);
    let issued = totals.ballots_issued;
    let third_of = match rules.further_election_threshold_base {
        ThresholdBase::Collected => totals.ballots_collected,
        ThresholdBase::Issued => issued,
    };
    let (votes_needed, threshold) = match (spec.kind, rules.revote_rule) {
        (RoundKind::First | RoundKind::Repeat, _) => (issued / 2 + 1, None),
        (RoundKind::Revote, RevoteRule::Plurality) => (1, None),
        (RoundKind::Further, _) | (RoundKind::Revote, RevoteRule::OneThird) => (
            third_of.div_ceil(3).max(1),
            Some(Threshold {
                base: rules.further_election_threshold_base,
                ballots: third_of,
            }),
        ),
    };
    let mut result = RoundResult {
        round: spec.round,
        kind: spec.kind,
        seats: spec.seats,
        candidates: spec.candidates.clone(),
        units_reported: counted.len(),
        units_expected,
        totals,
        votes,
        votes_needed,
        threshold,
        status: RoundStatus::Pending,
        elected: Vec::new(),
        follow_up: FollowUp::None,
    };
    contest_warnings(contest, spec.round, rules, &counted, &result, findings);
    // A round the committee declared void is void whoever has reported.
    if let Some(decision) = decided.and_then(|d| d.voided.get(&spec.round)) {
        result.status = RoundStatus::VoidByCommittee {
            decision: decision.clone(),
        };
        result.follow_up = FollowUp::HeldAgain;
        return result;
    }
    if result.units_reported < units_expected {
        return result;
    }
    let t = &result.totals;
    let turnout_required = match spec.kind {
        RoundKind::First | RoundKind::Repeat => true,
        RoundKind::Further => rules.further_election_turnout_required,
        RoundKind::Revote => rules.revote_turnout_required,
    };
    if t.ballots_collected > t.ballots_issued {
        result.status = RoundStatus::VoidArt44 {
            issued: t.ballots_issued,
            collected: t.ballots_collected,
        };
        result.follow_up = FollowUp::HeldAgain;
    } else if turnout_required
        && u128::from(t.ballots_issued) * 2 <= u128::from(t.registered_voters)
    {
        result.status = RoundStatus::TurnoutFailed {
            voted: t.ballots_issued,
            registered: t.registered_voters,
        };
        result.follow_up = FollowUp::HeldAgain;
    } else {
        result.status = RoundStatus::Decided;
        let (elected, follow_up) = decide(contest, rules, spec, &result.votes, issued, third_of);
        result.elected = elected
            .into_iter()
            .map(|pv| ElectedPerson {
                person: pv.person.clone(),
                name: pv.name.clone(),
                votes: pv.votes,
                round: spec.round,
            })
            .collect();
        result.follow_up = follow_up;
    }
    result
}

/// E103 or E105 for a sheet whose marks cannot fit the round's ballot: one person with more
/// votes than valid ballots, or more marks in total than valid ballots times the round's seats.
fn round_marks_finding(spec: &NextRound, sheet: &TallySheet) -> Option<Finding> {
    let valid = sheet.ballots_valid;
    let people = sheet
        .candidates
        .iter()
        .map(|c| (c.candidate.to_string(), c.approvals))
        .chain(sheet.write_ins.iter().map(|w| (w.counting_name(), w.votes)));
    let mut marks: u128 = 0;
    for (name, votes) in people {
        if votes > valid {
            return Some(sheet_finding(
                sheet,
                Code::VotesOverValid,
                "candidates",
                format!(
                    "{name} has {votes} votes, but only {valid} valid ballots; the sheet is not counted, send a corrected version"
                ),
            ));
        }
        marks += u128::from(votes);
    }
    let limit = u128::from(valid) * u128::from(spec.seats);
    (marks > limit).then(|| {
        sheet_finding(
            sheet,
            Code::MarksOverSeats,
            "candidates",
            format!(
                "round {} ({:?}) elects {} seat{}: {marks} approvals and written-in votes in total, but {valid} valid ballots × {} = {limit}; a ballot marking more people than the round's seats is void; the sheet is not counted, recount and send a corrected version",
                spec.round,
                spec.kind,
                spec.seats,
                if spec.seats == 1 { "" } else { "s" },
                spec.seats,
            ),
        )
    })
}

fn join_ids<'a>(ids: impl Iterator<Item = &'a CandidateId>) -> String {
    let list: Vec<&str> = ids.map(CandidateId::as_str).collect();
    if list.is_empty() {
        "none".into()
    } else {
        list.join(", ")
    }
}

/// The candidates a further election for `seats` seats lists: exactly 2 for one seat, else the
/// least the Art 31 ratio allows, `ceil(4n/3)`, and at least one more than the seats.
pub fn further_election_candidates(seats: u32) -> u32 {
    if seats == 1 {
        2
    } else {
        (4 * seats).div_ceil(3).max(seats + 1)
    }
}

/// Applies the round's rule to a complete, valid round. `votes` is sorted, most first.
fn decide<'a>(
    contest: &Contest,
    rules: &Rules,
    spec: &NextRound,
    votes: &'a [PersonVotes],
    issued: u64,
    third_of: u64,
) -> (Vec<&'a PersonVotes>, FollowUp) {
    let issued = u128::from(issued);
    let third_of = u128::from(third_of);
    let qualifies = |pv: &PersonVotes| {
        let v = u128::from(pv.votes);
        pv.votes > 0
            && match spec.kind {
                RoundKind::First | RoundKind::Repeat => v * 2 > issued,
                RoundKind::Further => v * 3 >= third_of,
                RoundKind::Revote => {
                    spec.candidates.contains(&pv.person)
                        && match rules.revote_rule {
                            RevoteRule::Plurality => true,
                            RevoteRule::OneThird => v * 3 >= third_of,
                        }
                }
            }
    };
    let qualified: Vec<&PersonVotes> = votes.iter().filter(|pv| qualifies(pv)).collect();
    let seats = spec.seats as usize;
    if qualified.len() > seats {
        let last = qualified[seats - 1].votes;
        if qualified[seats].votes == last {
            let elected: Vec<&PersonVotes> = qualified
                .iter()
                .copied()
                .filter(|pv| pv.votes > last)
                .collect();
            let people = qualified
                .iter()
                .filter(|pv| pv.votes == last)
                .map(|pv| pv.person.clone())
                .collect();
            let seats = spec.seats - elected.len() as u32;
            return (elected, FollowUp::Revote { seats, people });
        }
        return (qualified[..seats].to_vec(), FollowUp::None);
    }
    let remaining = spec.seats - qualified.len() as u32;
    if remaining == 0 {
        return (qualified, FollowUp::None);
    }
    if !matches!(spec.kind, RoundKind::First | RoundKind::Repeat) {
        return (qualified, FollowUp::Vacant { seats: remaining });
    }
    // Too few passed: a further election between the ballot's candidates not elected (and,
    // if the rules say so, the written-in people not elected who received votes).
    let pool: Vec<&PersonVotes> = votes
        .iter()
        .filter(|pv| match pv.person {
            Person::Candidate(_) => spec.candidates.contains(&pv.person),
            Person::WriteIn(_) => rules.further_election_lists_write_ins && pv.votes > 0,
        })
        .filter(|pv| !qualified.iter().any(|q| q.person == pv.person))
        .collect();
    debug_assert!(pool.iter().all(|pv| match &pv.person {
        Person::Candidate(id) => contest.candidates.iter().any(|c| &c.id == id),
        Person::WriteIn(_) => true,
    }));
    if pool.is_empty() {
        return (qualified, FollowUp::Vacant { seats: remaining });
    }
    let wanted = further_election_candidates(remaining) as usize;
    if pool.len() > wanted && pool[wanted - 1].votes == pool[wanted].votes {
        let cutoff = pool[wanted - 1].votes;
        let listed: Vec<Person> = pool
            .iter()
            .filter(|pv| pv.votes > cutoff)
            .map(|pv| pv.person.clone())
            .collect();
        let tied = pool
            .iter()
            .filter(|pv| pv.votes == cutoff)
            .map(|pv| pv.person.clone())
            .collect();
        let places = (wanted - listed.len()) as u32;
        return (
            qualified,
            FollowUp::FurtherCandidatesTie {
                seats: remaining,
                listed,
                tied,
                places,
            },
        );
    }
    let candidates = pool
        .iter()
        .take(wanted)
        .map(|pv| pv.person.clone())
        .collect();
    (
        qualified,
        FollowUp::Further {
            seats: remaining,
            candidates,
        },
    )
}

/// W305 (a unit's turnout far from the contest's) and W306 (registered voters do not add up).
fn contest_warnings(
    contest: &Contest,
    round: u32,
    rules: &Rules,
    sheets: &[&TallySheet],
    result: &RoundResult,
    findings: &mut Vec<Finding>,
) {
    let all_reported = result.units_reported >= result.units_expected;
    let served = result.totals.registered_voters_served;
    if all_reported && served != contest.registered_voters {
        findings.push(contest_finding(
            contest,
            round,
            Code::RegisteredSumMismatch,
            "registered_voters",
            format!(
                "the {} units served {served} registered voters in total, but the definition gives constituency {} {}; check the rolls",
                result.units_reported, contest.id, contest.registered_voters
            ),
        ));
    }
    if sheets.len() < 2 || served == 0 {
        return;
    }
    let total_issued = u128::from(result.totals.ballots_issued);
    let total_registered = u128::from(served);
    let points = u128::from(rules.turnout_outlier_warn_points);
    for sheet in sheets {
        if sheet.registered_voters == 0 {
            continue;
        }
        let issued = u128::from(sheet.ballots_issued);
        let registered = u128::from(sheet.registered_voters);
        // |issued/registered - total_issued/total_registered| > points/100, cross-multiplied.
        let diff = (issued * total_registered).abs_diff(total_issued * registered);
        if diff.saturating_mul(100) > points.saturating_mul(registered * total_registered) {
            findings.push(sheet_finding(
                sheet,
                Code::TurnoutOutlier,
                "ballots_issued",
                format!(
                    "turnout here is {} of {} ({}), the constituency's is {} of {} ({}): more than {} points apart; check the numbers",
                    sheet.ballots_issued,
                    sheet.registered_voters,
                    percent(sheet.ballots_issued, sheet.registered_voters),
                    result.totals.ballots_issued,
                    served,
                    percent(result.totals.ballots_issued, served),
                    rules.turnout_outlier_warn_points
                ),
            ));
        }
    }
}

/// `part / whole` as a percentage with one decimal, rounded down.
fn percent(part: u64, whole: u64) -> String {
    let pm = per_mille(part, whole);
    format!("{}.{}%", pm / 10, pm % 10)
}

#[cfg(test)]
pub(crate) mod testkit {
    //! Inline election definitions and clean sheets for the tests of this crate.

    use crate::congress::Level;
    use crate::definition::{self, Definition};
    use crate::sheet::{CandidateCount, CountClosedAt, Round, TallySheet};
    use std::collections::BTreeSet;
    use std::fmt::Write;

    pub(crate) struct ContestSpec {
        pub id: &'static str,
        pub seats: u32,
        pub candidates: usize,
        pub registered: u64,
        pub level: Level,
        pub township: &'static str,
    }

    impl ContestSpec {
        pub fn new(id: &'static str, seats: u32, candidates: usize, registered: u64) -> Self {
            ContestSpec {
                id,
                seats,
                candidates,
                registered,
                level: Level::Township,
                township: "T1",
            }
        }
        pub fn county(mut self) -> Self {
            self.level = Level::County;
            self
        }
        pub fn in_township(mut self, township: &'static str) -> Self {
            self.township = township;
            self
        }
    }

    pub(crate) struct UnitSpec {
        pub id: &'static str,
        pub kind: &'static str,
        pub township: &'static str,
        pub contests: Vec<&'static str>,
    }

    impl UnitSpec {
        pub fn new(id: &'static str, kind: &'static str, contests: &[&'static str]) -> Self {
            UnitSpec {
                id,
                kind,
                township: "T1",
                contests: contests.to_vec(),
            }
        }
        pub fn in_township(mut self, township: &'static str) -> Self {
            self.township = township;
            self
        }
    }

    /// Candidate names are letters, `A` first; ids are `<contest>-<letter>`.
    pub(crate) const LETTERS: [&str; 6] = ["A", "B", "C", "D", "E", "F"];

    /// Builds a definition through the real loader: county CTY, the townships the specs name,
    /// unit keys from `SigningKey::from_bytes(&[n; 32])`, n = 1, 2, ...
    pub(crate) fn definition(
        contests: &[ContestSpec],
        units: &[UnitSpec],
        rules: &str,
    ) -> Definition {
        let mut t = String::new();
        writeln!(t, "[election]\nid = \"test\"\nname = \"测试选举\"\n").unwrap();
        writeln!(t, "[rules]\n{rules}\n").unwrap();
        writeln!(
            t,
            "[county]\nid = \"CTY\"\nname = \"测试县\"\npopulation = 823400\n"
        )
        .unwrap();
        let townships: BTreeSet<&str> = contests
            .iter()
            .map(|c| c.township)
            .chain(units.iter().map(|u| u.township))
            .collect();
        for id in townships {
            writeln!(
                t,
                "[[townships]]\nid = \"{id}\"\nname = \"{id}乡\"\npopulation = 38700\n"
            )
            .unwrap();
        }
        for c in contests {
            let candidates: Vec<String> = LETTERS[..c.candidates]
                .iter()
                .map(|l| format!("{{ id = \"{}-{l}\", name = \"{l}\" }}", c.id))
                .collect();
            writeln!(
                t,
                "[[contests]]\nid = \"{}\"\nname = \"{}选区\"\nlevel = \"{}\"\ntownship = \"{}\"\nseats = {}\nregistered_voters = {}\ncandidates = [{}]\n",
                c.id,
                c.id,
                c.level.name(),
                c.township,
                c.seats,
                c.registered,
                candidates.join(", ")
            )
            .unwrap();
        }
        for (i, u) in units.iter().enumerate() {
            let key = ed25519_dalek::SigningKey::from_bytes(&[i as u8 + 1; 32]).verifying_key();
            let contests: Vec<String> = u.contests.iter().map(|c| format!("\"{c}\"")).collect();
            writeln!(
                t,
                "[[units]]\nid = \"{}\"\nname = \"{}站\"\nkind = \"{}\"\ntownship = \"{}\"\ncontests = [{}]\npublic_key = \"{}\"\n",
                u.id,
                u.id,
                u.kind,
                u.township,
                contests.join(", "),
                hex::encode(key.as_bytes())
            )
            .unwrap();
        }
        match definition::load("test.toml", &t, &mut |_| Err("no csv".into())) {
            Ok(d) => d,
            Err(e) => panic!("{e}\n{t}"),
        }
    }

    /// A round 1, version 1 sheet with no findings: the unit's share of the registered voters,
    /// 60% turnout, no void ballots, a third of the ballots to each candidate.
    pub(crate) fn clean_sheet(d: &Definition, unit: &str, contest: &str) -> TallySheet {
        let c = d.contest(&contest.into()).expect("contest in fixture");
        let registered = c.registered_voters / d.units_serving_count(&c.id).max(1) as u64;
        let issued = registered * 3 / 5;
        let record = d.rules.record_disapprovals;
        TallySheet {
            unit: unit.into(),
            contest: contest.into(),
            round: Round::FIRST,
            version: 1,
            replaces_version: None,
            registered_voters: registered,
            ballots_issued: issued,
            ballots_collected: issued,
            ballots_void: 0,
            ballots_valid: issued,
            ballots_blank: 0,
            proxies: 0,
            candidates: c
                .candidates
                .iter()
                .map(|cand| CandidateCount {
                    candidate: cand.id.clone(),
                    approvals: issued / 3,
                    disapprovals: record.then_some(0),
                    abstentions: record.then_some(0),
                })
                .collect(),
            write_ins: Vec::new(),
            scrutineers: vec!["张三".into(), "李四".into()],
            counters: vec!["赵六".into()],
            count_closed_at: CountClosedAt::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testkit::*;
    use super::*;
    use crate::sheet::{CandidateCount, Round, WriteIn};
    use crate::validate::check_sheet;

    /// One contest C1 served by one station U1.
    fn single(seats: u32, candidates: usize, registered: u64, rules: &str) -> Definition {
        definition(
            &[ContestSpec::new("C1", seats, candidates, registered)],
            &[UnitSpec::new("U1", "station", &["C1"])],
            rules,
        )
    }

    fn cid(letter: &str) -> CandidateId {
        CandidateId::new(format!("C1-{letter}"))
    }

    fn cand(letter: &str) -> Person {
        Person::Candidate(cid(letter))
    }

    /// A sheet of U1 for C1: `approvals` by candidate letter (the ballot of the round), all
    /// registered voters of the contest served, void ballots as given.
    fn sheet(
        d: &Definition,
        round: u32,
        issued: u64,
        collected: u64,
        void: u64,
        approvals: &[(&str, u64)],
    ) -> TallySheet {
        let mut s = clean_sheet(d, "U1", "C1");
        s.round = Round(round);
        s.registered_voters = d.contests[0].registered_voters;
        s.ballots_issued = issued;
        s.ballots_collected = collected;
        s.ballots_void = void;
        s.ballots_valid = collected - void;
        s.candidates = approvals
            .iter()
            .map(|&(letter, approvals)| CandidateCount {
                candidate: cid(letter),
                approvals,
                disapprovals: None,
                abstentions: None,
            })
            .collect();
        s
    }

    /// Submits sheets (asserting validation lets them through) and computes.
    fn run(d: &Definition, sheets: Vec<TallySheet>) -> ElectionResult {
        let mut ledger = Ledger::new();
        for (i, s) in sheets.into_iter().enumerate() {
            let errors: Vec<_> = check_sheet(d, &s)
                .into_iter()
                .filter(|f| f.is_error())
                .collect();
            assert!(errors.is_empty(), "{errors:#?}");
            ledger.submit(s, [i as u8; 32]);
        }
        compute(d, &ledger)
    }

    fn elected_letters(c: &ContestResult) -> Vec<String> {
        c.elected.iter().map(|e| e.name.clone()).collect()
    }

    // Goal: rulebook rows "1,000 registered, 480 / 500 / 501 voted": turnout must be more
    // than half; exactly half is not enough.
    // Method: one station, 2 seats, 3 candidates; compare the status and the follow-up.
    #[test]
    fn rulebook_turnout() {
        let d = single(2, 3, 1000, "");
        for voted in [480, 500] {
            let r = run(
                &d,
                vec![sheet(
                    &d,
                    1,
                    voted,
                    voted,
                    0,
                    &[("A", 300), ("B", 280), ("C", 200)],
                )],
            );
            let c = &r.contests[0];
            assert_eq!(
                c.rounds[0].status,
                RoundStatus::TurnoutFailed {
                    voted,
                    registered: 1000
                }
            );
            assert_eq!(c.rounds[0].follow_up, FollowUp::HeldAgain);
            assert_eq!(c.status, ContestStatus::AwaitingRound);
            assert!(c.elected.is_empty());
            assert_eq!(
                c.next_round,
                Some(NextRound {
                    round: 2,
                    kind: RoundKind::Repeat,
                    seats: 2,
                    candidates: vec![cand("A"), cand("B"), cand("C")],
                })
            );
        }
        let r = run(
            &d,
            vec![sheet(
                &d,
                1,
                501,
                501,
                0,
                &[("A", 300), ("B", 280), ("C", 200)],
            )],
        );
        let c = &r.contests[0];
        assert_eq!(c.rounds[0].status, RoundStatus::Decided);
        assert_eq!(elected_letters(c), ["A", "B"]);
        assert_eq!(c.status, ContestStatus::Decided);
    }

    // Goal: rulebook rows "620 voted, 623 ballots in the boxes: void as a whole" and "620
    // voted, 618 ballots: valid".
    // Method: one station; 623 collected is a warning on the sheet and Art 44 in the result.
    #[test]
    fn rulebook_ballots_vs_voters() {
        let d = single(2, 3, 1000, "");
        let r = run(
            &d,
            vec![sheet(
                &d,
                1,
                620,
                623,
                0,
                &[("A", 400), ("B", 330), ("C", 290)],
            )],
        );
        let c = &r.contests[0];
        assert_eq!(
            c.rounds[0].status,
            RoundStatus::VoidArt44 {
                issued: 620,
                collected: 623
            }
        );
        assert!(c.elected.is_empty());
        assert_eq!(
            c.next_round.as_ref().map(|n| n.kind),
            Some(RoundKind::Repeat)
        );

        let r = run(
            &d,
            vec![sheet(
                &d,
                1,
                620,
                618,
                0,
                &[("A", 400), ("B", 330), ("C", 290)],
            )],
        );
        let c = &r.contests[0];
        assert_eq!(c.rounds[0].status, RoundStatus::Decided);
        assert_eq!(elected_letters(c), ["A", "B"]);
    }

    // Goal: rulebook row "a ballot approving 2 candidates and writing in a third is void".
    // Void ballots arrive pre-counted on the sheet, so the software's part is that a void
    // ballot still counts among the people who voted: the majority denominator is ballots
    // issued, not valid ballots.
    // Method: 620 voted, 1 void; A with 310 has more than half of the 619 valid ballots but
    // not of the 620 who voted, so A is not elected; with 311 A is.
    #[test]
    fn rulebook_void_ballot_stays_in_denominator() {
        let d = single(2, 3, 1000, "");
        let r = run(
            &d,
            vec![sheet(
                &d,
                1,
                620,
                620,
                1,
                &[("A", 310), ("B", 309), ("C", 0)],
            )],
        );
        let c = &r.contests[0];
        let round = &c.rounds[0];
        assert_eq!(round.totals.ballots_void, 1);
        assert_eq!(round.totals.ballots_valid, 619);
        assert_eq!(round.totals.ballots_issued, 620);
        assert_eq!(round.votes_needed, 311);
        assert!(c.elected.is_empty());
        assert_eq!(
            round.follow_up,
            FollowUp::Further {
                seats: 2,
                candidates: vec![cand("A"), cand("B"), cand("C")]
            }
        );
        let r = run(
            &d,
            vec![sheet(
                &d,
                1,
                620,
                620,
                1,
                &[("A", 311), ("B", 308), ("C", 0)],
            )],
        );
        assert_eq!(elected_letters(&r.contests[0]), ["A"]);
    }

    // Goal: rulebook row "620 voted; A 400, B 330, C 290 (need >= 311): A and B elected".
    // Method: one station, 2 seats.
    #[test]
    fn rulebook_two_pass() {
        let d = single(2, 3, 1000, "");
        let r = run(
            &d,
            vec![sheet(
                &d,
                1,
                620,
                620,
                0,
                &[("A", 400), ("B", 330), ("C", 290)],
            )],
        );
        let c = &r.contests[0];
        assert_eq!(c.rounds[0].votes_needed, 311);
        assert_eq!(elected_letters(c), ["A", "B"]);
        assert_eq!((c.seats_filled, c.vacancies), (2, 0));
        assert_eq!(c.status, ContestStatus::Decided);
        assert_eq!(c.next_round, None);
        assert_eq!(
            c.rounds[0]
                .votes
                .iter()
                .map(|v| v.votes)
                .collect::<Vec<_>>(),
            [400, 330, 290]
        );
    }

    // Goal: rulebook row "620 voted; A 400, B 320, C 320: A elected; B and C vote again for
    // one seat", and the revote decides by the further-election rule.
    // Method: round 1 as in the rulebook; then a revote sheet listing B and C only.
    #[test]
    fn rulebook_tie_at_last_seat_revote() {
        let d = single(2, 3, 1000, "");
        let first = sheet(&d, 1, 620, 620, 0, &[("A", 400), ("B", 320), ("C", 320)]);
        let r = run(&d, vec![first.clone()]);
        let c = &r.contests[0];
        assert_eq!(elected_letters(c), ["A"]);
        assert_eq!(
            c.rounds[0].follow_up,
            FollowUp::Revote {
                seats: 1,
                people: vec![cand("B"), cand("C")]
            }
        );
        assert_eq!(
            c.next_round,
            Some(NextRound {
                round: 2,
                kind: RoundKind::Revote,
                seats: 1,
                candidates: vec![cand("B"), cand("C")],
            })
        );
        assert_eq!(c.status, ContestStatus::AwaitingRound);

        let revote = sheet(&d, 2, 600, 600, 0, &[("B", 350), ("C", 240)]);
        let r = run(&d, vec![first, revote]);
        let c = &r.contests[0];
        assert_eq!(elected_letters(c), ["A", "B"]);
        assert_eq!(c.elected[1].round, 2);
        assert_eq!(c.status, ContestStatus::Decided);
        assert_eq!(c.next_round, None);
        assert!(r.findings.is_empty(), "{:#?}", r.findings);
    }

    // Goal: rulebook rows "A 400, B 300, C 290, D 150: A elected; further election for 1 seat
    // between B and C", then "further election, 600 ballots: B 210, C 190: B elected (210 >=
    // 200)" and "B 190, C 180: the seat stays vacant".
    // Method: 2 seats, 4 candidates; round 1, then each further election in turn.
    #[test]
    fn rulebook_further_election() {
        let d = single(2, 4, 1000, "");
        let first = sheet(
            &d,
            1,
            620,
            620,
            0,
            &[("A", 400), ("B", 300), ("C", 290), ("D", 150)],
        );
        let r = run(&d, vec![first.clone()]);
        let c = &r.contests[0];
        assert_eq!(elected_letters(c), ["A"]);
        assert_eq!(
            c.next_round,
            Some(NextRound {
                round: 2,
                kind: RoundKind::Further,
                seats: 1,
                candidates: vec![cand("B"), cand("C")],
            })
        );

        let r = run(
            &d,
            vec![
                first.clone(),
                sheet(&d, 2, 600, 600, 0, &[("B", 210), ("C", 190)]),
            ],
        );
        let c = &r.contests[0];
        assert_eq!(c.rounds[1].votes_needed, 200);
        assert_eq!(elected_letters(c), ["A", "B"]);
        assert_eq!((c.seats_filled, c.vacancies), (2, 0));
        assert_eq!(c.status, ContestStatus::Decided);

        let r = run(
            &d,
            vec![first, sheet(&d, 2, 600, 600, 0, &[("B", 190), ("C", 180)])],
        );
        let c = &r.contests[0];
        assert_eq!(elected_letters(c), ["A"]);
        assert_eq!(c.rounds[1].follow_up, FollowUp::Vacant { seats: 1 });
        assert_eq!((c.seats_filled, c.vacancies), (1, 1));
        assert_eq!(c.status, ContestStatus::Decided);
    }

    // Goal: the further election's turnout follows `further_election_turnout_required`, and a
    // further election held again stays a further election (not first-round rules).
    // Method: 400 of 1000 vote in the further election, under both settings.
    #[test]
    fn further_election_turnout_option() {
        second_round_turnout_follows_option(
            4,
            &[("A", 400), ("B", 300), ("C", 290), ("D", 150)],
            &[("B", 210), ("C", 190)],
            "further_election_turnout_required",
            RoundKind::Further,
        );
    }

    /// A 2-seat contest of `candidates` where only A passes in round 1 (`first_votes` of 620
    /// of 1000 registered) and 400 of 1000 vote in round 2 (`second_votes`): by default the
    /// second round fails the turnout test and a round of `kind` follows as round 3; with
    /// `option = false` it decides, electing A and B.
    fn second_round_turnout_follows_option(
        candidates: usize,
        first_votes: &[(&str, u64)],
        second_votes: &[(&str, u64)],
        option: &str,
        kind: RoundKind,
    ) {
        let sheets = |d: &Definition| {
            vec![
                sheet(d, 1, 620, 620, 0, first_votes),
                sheet(d, 2, 400, 400, 0, second_votes),
            ]
        };
        let d = single(2, candidates, 1000, "");
        let r = run(&d, sheets(&d));
        let c = &r.contests[0];
        assert_eq!(
            c.rounds[1].status,
            RoundStatus::TurnoutFailed {
                voted: 400,
                registered: 1000
            }
        );
        assert_eq!(c.next_round.as_ref().unwrap().kind, kind);
        assert_eq!(c.next_round.as_ref().unwrap().round, 3);

        let d = single(2, candidates, 1000, &format!("{option} = false"));
        let r = run(&d, sheets(&d));
        let c = &r.contests[0];
        assert_eq!(c.rounds[1].status, RoundStatus::Decided);
        assert_eq!(elected_letters(c), ["A", "B"]);
    }

    // Goal: the further election's candidate count follows the chosen Art 31 reading, and a
    // tie at the cut-off is reported for the committee instead of guessed.
    // Method: 3 seats, 6 candidates, only A passes: 2 seats left need 3 candidates; first
    // with distinct votes, then with D and E tied for the third place.
    #[test]
    fn further_election_candidate_list_and_cutoff_tie() {
        assert_eq!(
            (1..=3).map(further_election_candidates).collect::<Vec<_>>(),
            [2, 3, 4]
        );
        let d = single(3, 6, 1000, "");
        let votes = [
            ("A", 400),
            ("B", 300),
            ("C", 250),
            ("D", 200),
            ("E", 150),
            ("F", 100),
        ];
        let r = run(&d, vec![sheet(&d, 1, 620, 620, 0, &votes)]);
        assert_eq!(
            r.contests[0].next_round.as_ref().unwrap().candidates,
            vec![cand("B"), cand("C"), cand("D")]
        );

        let tied = [
            ("A", 400),
            ("B", 300),
            ("C", 250),
            ("D", 200),
            ("E", 200),
            ("F", 100),
        ];
        let r = run(&d, vec![sheet(&d, 1, 620, 620, 0, &tied)]);
        let c = &r.contests[0];
        assert_eq!(c.status, ContestStatus::CommitteeDecision);
        assert_eq!(c.next_round, None);
        assert_eq!(
            c.rounds[0].follow_up,
            FollowUp::FurtherCandidatesTie {
                seats: 2,
                listed: vec![cand("B"), cand("C")],
                tied: vec![cand("D"), cand("E")],
                places: 1
            }
        );
    }

    // Goal: the one third a further election's winner needs is of the ballots collected in
    // that round by default (the rulebook's reading), of those issued when the definition says
    // so; the round says which. Method: round 2 with 600 issued and 570 collected; B has 195:
    // 195 * 3 = 585 is at least 570 but below 600.
    #[test]
    fn further_election_third_of_collected_or_issued() {
        let votes = [("A", 400), ("B", 200), ("C", 150)];
        for (rules, ballots, needed, elected) in [
            ("", 570, 190, vec!["A", "B"]),
            (
                r#"further_election_threshold_base = "issued""#,
                600,
                200,
                vec!["A"],
            ),
        ] {
            let d = single(2, 3, 1000, rules);
            let first = sheet(&d, 1, 620, 620, 0, &votes);
            let r = run(
                &d,
                vec![first, sheet(&d, 2, 600, 570, 0, &[("B", 195), ("C", 180)])],
            );
            let c = &r.contests[0];
            let round = &c.rounds[1];
            assert_eq!(round.kind, RoundKind::Further);
            assert_eq!(
                round.threshold.as_ref().map(|t| t.ballots),
                Some(ballots),
                "{rules}"
            );
            assert_eq!(round.votes_needed, needed, "{rules}");
            assert_eq!(elected_letters(c), elected, "{rules}");
        }
    }

    // Goal: W301 (a unit collected more ballots than it issued) and Art 44 agree: the warning
    // flags the unit, and the contest is void only when its totals over all units show more
    // collected than issued. Method: two stations, one 3 ballots over and the other 5 under
    // (the totals are not over: decided, W301 on the first); then both over (void).
    #[test]
    fn w301_at_one_unit_and_art44_on_the_totals() {
        let d = definition(
            &[ContestSpec::new("C1", 1, 2, 1000)],
            &[
                UnitSpec::new("U1", "station", &["C1"]),
                UnitSpec::new("U2", "station", &["C1"]),
            ],
            "",
        );
        let unit_sheet = |unit: &str, collected_minus_issued: i64| {
            let mut s = clean_sheet(&d, unit, "C1");
            s.ballots_collected = s
                .ballots_issued
                .checked_add_signed(collected_minus_issued)
                .unwrap();
            s.ballots_valid = s.ballots_collected - s.ballots_void;
            s.candidates[0].approvals = s.ballots_valid * 2 / 3;
            s.candidates[1].approvals = s.ballots_valid / 4;
            s
        };
        let over = unit_sheet("U1", 3);
        let w301: Vec<_> = check_sheet(&d, &over)
            .into_iter()
            .filter(|f| f.code == Code::CollectedOverIssued)
            .collect();
        assert_eq!(w301.len(), 1);
        assert!(
            w301[0].message.contains("contest C1's totals"),
            "{}",
            w301[0].message
        );

        let r = run(&d, vec![over.clone(), unit_sheet("U2", -5)]);
        assert_eq!(r.contests[0].rounds[0].status, RoundStatus::Decided);
        assert_eq!(r.contests[0].status, ContestStatus::Decided);

        let r = run(&d, vec![over, unit_sheet("U2", 1)]);
        assert!(
            matches!(
                r.contests[0].rounds[0].status,
                RoundStatus::VoidArt44 { .. }
            ),
            "{:?}",
            r.contests[0].rounds[0].status
        );
    }

    // Goal: a written-in person can win a first round, and write-ins are merged by counting
    // name (trimmed, NFC).
    // Method: two stations report "王五" with and without a trailing space.
    #[test]
    fn write_in_elected() {
        let d = definition(
            &[ContestSpec::new("C1", 1, 2, 1000)],
            &[
                UnitSpec::new("U1", "station", &["C1"]),
                UnitSpec::new("U2", "station", &["C1"]),
            ],
            "",
        );
        let mut sheets = Vec::new();
        for (unit, name) in [("U1", "王五"), ("U2", "王五 ")] {
            let mut s = clean_sheet(&d, unit, "C1");
            for c in &mut s.candidates {
                c.approvals = 50;
            }
            s.write_ins = vec![WriteIn {
                name: name.into(),
                votes: 200,
            }];
            sheets.push(s);
        }
        let r = run(&d, sheets);
        let c = &r.contests[0];
        // 600 voted; 王五 has 400, A and B 100 each.
        assert_eq!(c.rounds[0].votes[0].person, Person::WriteIn("王五".into()));
        assert_eq!(c.rounds[0].votes[0].votes, 400);
        assert_eq!(elected_letters(c), ["王五"]);
        assert_eq!(c.status, ContestStatus::Decided);
    }

    // Goal: before every unit reports, the round is pending with provisional tallies, and a
    // sheet for a later round is reported (E207) and not counted.
    // Method: two units, one reports round 1, the other sends a round 2 sheet.
    #[test]
    fn pending_and_uncalled_round() {
        let d = definition(
            &[ContestSpec::new("C1", 2, 3, 1000)],
            &[
                UnitSpec::new("U1", "station", &["C1"]),
                UnitSpec::new("U2", "station", &["C1"]),
            ],
            "",
        );
        let mut early = clean_sheet(&d, "U2", "C1");
        early.round = Round(2);
        let r = run(&d, vec![clean_sheet(&d, "U1", "C1"), early]);
        let c = &r.contests[0];
        assert_eq!(c.status, ContestStatus::Counting);
        assert_eq!(c.rounds.len(), 1);
        assert_eq!(c.rounds[0].status, RoundStatus::Pending);
        assert_eq!(
            (c.rounds[0].units_reported, c.rounds[0].units_expected),
            (1, 2)
        );
        assert_eq!(c.rounds[0].votes[0].votes, 100);
        assert_eq!(r.findings.len(), 1);
        assert_eq!(r.findings[0].code, Code::RoundNotCalled);
        assert!(r.findings[0].message.contains("not counted"));
    }

    // Goal: a later round's sheet must list exactly that round's ballot (E118), else it is
    // not counted.
    // Method: after a revote is called for B and C, U1 reports round 2 with all candidates.
    #[test]
    fn e118_round_ballot_mismatch() {
        let d = single(2, 3, 1000, "");
        let first = sheet(&d, 1, 620, 620, 0, &[("A", 400), ("B", 320), ("C", 320)]);
        let wrong = sheet(&d, 2, 600, 600, 0, &[("A", 10), ("B", 350), ("C", 240)]);
        let r = run(&d, vec![first, wrong]);
        let c = &r.contests[0];
        assert_eq!(r.findings.len(), 1);
        assert_eq!(r.findings[0].code, Code::RoundBallotMismatch);
        assert_eq!(c.rounds[1].units_reported, 0);
        assert_eq!(c.rounds[1].status, RoundStatus::Pending);
        assert_eq!(c.status, ContestStatus::Counting);
    }

    // Goal: a later round's sheet is checked against the round's seats, not the contest's:
    // a revote for 1 seat with 600 valid ballots cannot have 750 marks (E105), nor one person
    // more votes than valid ballots (E103); such a sheet is not counted.
    // Method: 2 seats, revote for 1 between B and C; B 400, C 350 passes the sheet checks
    // (750 <= 600 × 2) but not the round's; then a write-in with 601 votes.
    #[test]
    fn later_round_marks_checked_against_round_seats() {
        let d = single(2, 3, 1000, "");
        let first = sheet(&d, 1, 620, 620, 0, &[("A", 400), ("B", 320), ("C", 320)]);
        let over = sheet(&d, 2, 600, 600, 0, &[("B", 400), ("C", 350)]);
        let r = run(&d, vec![first.clone(), over]);
        let c = &r.contests[0];
        assert_eq!(r.findings.len(), 1, "{:#?}", r.findings);
        assert_eq!(r.findings[0].code, Code::MarksOverSeats);
        assert!(
            r.findings[0]
                .message
                .contains("round 2 (Revote) elects 1 seat: 750 approvals and written-in votes in total, but 600 valid ballots × 1 = 600"),
            "{}",
            r.findings[0].message
        );
        assert_eq!(c.rounds[1].units_reported, 0);
        assert_eq!(c.rounds[1].status, RoundStatus::Pending);
        assert_eq!(elected_letters(c), ["A"]);
        assert_eq!(c.status, ContestStatus::Counting);

        // Exactly valid × round seats is counted.
        let full = sheet(&d, 2, 600, 600, 0, &[("B", 350), ("C", 250)]);
        let r = run(&d, vec![first.clone(), full]);
        assert!(r.findings.is_empty(), "{:#?}", r.findings);
        assert_eq!(elected_letters(&r.contests[0]), ["A", "B"]);

        // One person over the valid ballots: the sheet checks would block it, but the ledger
        // does not check; the results refuse to count it either way.
        let mut ledger = Ledger::new();
        ledger.submit(first, [1; 32]);
        let mut bad = sheet(&d, 2, 600, 600, 0, &[("B", 0), ("C", 0)]);
        bad.write_ins = vec![WriteIn {
            name: "王五".into(),
            votes: 601,
        }];
        ledger.submit(bad, [2; 32]);
        let r = compute(&d, &ledger);
        assert_eq!(r.findings.len(), 1, "{:#?}", r.findings);
        assert_eq!(r.findings[0].code, Code::VotesOverValid);
        assert_eq!(r.contests[0].rounds[1].units_reported, 0);
    }

    // Goal: `revote_rule`: rulebook numbers "600 ballots: B 190, C 180" in a revote for one
    // seat. `plurality` (default, Art 45 以得票多的当选) elects B; `one-third` needs 200 and
    // leaves the seat vacant.
    // Method: round 1 A 400, B 320, C 320 (2 seats), then the revote under each rule.
    #[test]
    fn revote_rule_option() {
        let revote_votes = [("B", 190), ("C", 180)];
        let d = single(2, 3, 1000, "");
        let first = sheet(&d, 1, 620, 620, 0, &[("A", 400), ("B", 320), ("C", 320)]);
        let r = run(
            &d,
            vec![first.clone(), sheet(&d, 2, 600, 600, 0, &revote_votes)],
        );
        let c = &r.contests[0];
        assert_eq!(c.rounds[1].kind, RoundKind::Revote);
        assert_eq!(c.rounds[1].votes_needed, 1);
        assert_eq!(elected_letters(c), ["A", "B"]);
        assert_eq!(c.elected[1].round, 2);
        assert_eq!((c.seats_filled, c.vacancies), (2, 0));
        assert_eq!(c.status, ContestStatus::Decided);

        let d = single(2, 3, 1000, r#"revote_rule = "one-third""#);
        let r = run(
            &d,
            vec![first.clone(), sheet(&d, 2, 600, 600, 0, &revote_votes)],
        );
        let c = &r.contests[0];
        assert_eq!(c.rounds[1].votes_needed, 200);
        assert_eq!(elected_letters(c), ["A"]);
        assert_eq!(c.rounds[1].follow_up, FollowUp::Vacant { seats: 1 });
        assert_eq!((c.seats_filled, c.vacancies), (1, 1));
        assert_eq!(c.status, ContestStatus::Decided);
    }

    // Goal: under `plurality`, a new tie at the last seat goes to another revote, and nobody
    // with zero votes is elected.
    // Method: revote B 150, C 150 -> round 3 revote; then B 0, C 0 -> vacant.
    #[test]
    fn plurality_revote_tie_and_zero_votes() {
        let d = single(2, 3, 1000, "");
        let first = sheet(&d, 1, 620, 620, 0, &[("A", 400), ("B", 320), ("C", 320)]);
        let tie = sheet(&d, 2, 600, 600, 0, &[("B", 150), ("C", 150)]);
        let r = run(&d, vec![first.clone(), tie.clone()]);
        let c = &r.contests[0];
        assert_eq!(
            c.next_round,
            Some(NextRound {
                round: 3,
                kind: RoundKind::Revote,
                seats: 1,
                candidates: vec![cand("B"), cand("C")],
            })
        );
        let r = run(
            &d,
            vec![first, tie, sheet(&d, 3, 600, 600, 0, &[("B", 0), ("C", 0)])],
        );
        let c = &r.contests[0];
        assert_eq!(c.rounds[2].follow_up, FollowUp::Vacant { seats: 1 });
        assert_eq!(elected_letters(c), ["A"]);
        assert_eq!(c.status, ContestStatus::Decided);
    }

    // Goal: `revote_turnout_required` (default true) decides whether a revote needs more than
    // half of the registered voters.
    // Method: 400 of 1000 vote in the revote, under both settings.
    #[test]
    fn revote_turnout_option() {
        second_round_turnout_follows_option(
            3,
            &[("A", 400), ("B", 320), ("C", 320)],
            &[("B", 250), ("C", 150)],
            "revote_turnout_required",
            RoundKind::Revote,
        );
    }

    // Goal: `further_election_lists_write_ins` (default false) decides whether a written-in
    // person who was not elected is put on the further election's ballot in vote order.
    // Method: 1 seat; A 250, 王五 (written in) 200, B 150 of 620: nobody passes. By default
    // the further election is A against B; with the option, A against 王五, whose votes in
    // the further election arrive as a write-in.
    #[test]
    fn further_election_write_ins_option() {
        let first = |d: &Definition| {
            let mut s = sheet(d, 1, 620, 620, 0, &[("A", 250), ("B", 150)]);
            s.write_ins = vec![WriteIn {
                name: "王五".into(),
                votes: 200,
            }];
            s
        };
        let d = single(1, 2, 1000, "");
        let r = run(&d, vec![first(&d)]);
        assert_eq!(
            r.contests[0].next_round.as_ref().unwrap().candidates,
            vec![cand("A"), cand("B")]
        );

        let d = single(1, 2, 1000, "further_election_lists_write_ins = true");
        let r = run(&d, vec![first(&d)]);
        let wang = Person::WriteIn("王五".into());
        assert_eq!(
            r.contests[0].next_round,
            Some(NextRound {
                round: 2,
                kind: RoundKind::Further,
                seats: 1,
                candidates: vec![cand("A"), wang.clone()],
            })
        );
        let mut further = sheet(&d, 2, 600, 600, 0, &[("A", 250)]);
        further.write_ins = vec![WriteIn {
            name: "王五".into(),
            votes: 340,
        }];
        let r = run(&d, vec![first(&d), further]);
        let c = &r.contests[0];
        assert!(r.findings.is_empty(), "{:#?}", r.findings);
        assert_eq!(elected_letters(c), ["王五"]);
        assert_eq!(c.elected[0].person, wang);
        assert_eq!(c.status, ContestStatus::Decided);
    }

    // Goal: W305 flags a unit whose turnout is more than 25 points from its contest's; W306
    // flags registered voters that do not add up.
    // Method: three stations at 60%, 60% and 95% turnout (contest 71.6%), rolls of 300 each
    // against a contest of 1000.
    #[test]
    fn contest_level_warnings() {
        let d = definition(
            &[ContestSpec::new("C1", 1, 2, 1000)],
            &[
                UnitSpec::new("U1", "station", &["C1"]),
                UnitSpec::new("U2", "station", &["C1"]),
                UnitSpec::new("U3", "station", &["C1"]),
            ],
            "",
        );
        let mut sheets = Vec::new();
        for (unit, issued) in [("U1", 180), ("U2", 180), ("U3", 285)] {
            let mut s = clean_sheet(&d, unit, "C1");
            s.registered_voters = 300;
            s.ballots_issued = issued;
            s.ballots_collected = issued;
            s.ballots_valid = issued;
            for c in &mut s.candidates {
                c.approvals = issued / 3;
            }
            sheets.push(s);
        }
        // 645 of 900 is 71.6%: U1 and U2 (60%) are 11.6 points off, U3 (95%) 23.3: none.
        let r = run(&d, sheets.clone());
        let codes: Vec<Code> = r.findings.iter().map(|f| f.code).collect();
        assert_eq!(codes, [Code::RegisteredSumMismatch]);
        // 385 of 900 is 42.7%: U3 at 25 of 300 (8.3%) is 34.4 points below, U1 and U2
        // (60%) are 17.2 above.
        sheets[2].ballots_issued = 25;
        sheets[2].ballots_collected = 25;
        sheets[2].ballots_valid = 25;
        for c in &mut sheets[2].candidates {
            c.approvals = 8;
        }
        let r = run(&d, sheets);
        let codes: Vec<Code> = r.findings.iter().map(|f| f.code).collect();
        assert_eq!(codes, [Code::RegisteredSumMismatch, Code::TurnoutOutlier]);
        assert!(r.findings[1].sheet.starts_with("unit U3"));
    }

    // Goal: township and county summaries add up contests by level and township.
    // Method: a county contest and a township contest in T1, a township contest in T2; only
    // some units report.
    #[test]
    fn summaries() {
        let d = summary_fixture();
        // 300 voted in X2; A's 200 is a majority, so X2 is decided.
        let mut x2_sheet = clean_sheet(&d, "U3", "X2");
        x2_sheet.candidates[0].approvals = 200;
        let r = run(
            &d,
            vec![
                clean_sheet(&d, "U1", "K1"),
                clean_sheet(&d, "U1", "X1"),
                x2_sheet,
            ],
        );
        let t1 = &r.townships[0];
        assert_eq!(t1.township.as_str(), "T1");
        assert_eq!(t1.county_level.contests_total, 1);
        assert_eq!(
            (
                t1.county_level.units_reported,
                t1.county_level.units_expected
            ),
            (1, 3)
        );
        assert_eq!(t1.township_level.units_expected, 2);
        let x2 = &r.contests[2];
        assert_eq!(x2.status, ContestStatus::Decided);
        let t2 = &r.townships[1];
        assert_eq!(t2.township_level.contests_decided, 1);
        assert_eq!(t2.township_level.seats_filled, x2.seats_filled);
        assert_eq!(t2.township_level.voted, 300);
        assert_eq!(t2.township_level.registered_voters, 500);
        assert_eq!(t2.township_level.turnout_per_mille, 600);
        assert_eq!(r.county.all.contests_total, 3);
        assert_eq!(
            r.county.all.voted,
            r.county.county_level.voted + r.county.township_level.voted
        );
    }

    fn summary_fixture() -> Definition {
        definition(
            &[
                ContestSpec::new("K1", 2, 3, 3000).county(),
                ContestSpec::new("X1", 2, 4, 1200),
                ContestSpec::new("X2", 1, 2, 500).in_township("T2"),
            ],
            &[
                UnitSpec::new("U1", "station", &["K1", "X1"]),
                UnitSpec::new("U2", "mobile-box", &["K1", "X1"]),
                UnitSpec::new("U3", "assembly", &["K1", "X2"]).in_township("T2"),
            ],
            "",
        )
    }

    /// A tiny deterministic generator (splitmix64), so proptest shrinks plain seeds.
    struct Mix(u64);
    impl Mix {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }
        fn below(&mut self, n: u64) -> u64 {
            if n == 0 { 0 } else { self.next() % n }
        }
    }

    /// Random valid sheets for the summary fixture: each (unit, contest) pair reports 0 to 3
    /// versions of round 1, and with `later_rounds` sometimes a round 2 sheet too.
    fn random_sheets(d: &Definition, seed: u64, later_rounds: bool) -> Vec<TallySheet> {
        let mut mix = Mix(seed);
        let mut out = Vec::new();
        for unit in &d.units {
            for contest_id in &unit.contests {
                let contest = d.contest(contest_id).unwrap();
                let rounds = if later_rounds && mix.below(4) == 0 {
                    2
                } else {
                    1
                };
                for round in 1..=rounds {
                    for version in 1..=mix.below(4) as u32 {
                        let mut s = clean_sheet(d, unit.id.as_str(), contest_id.as_str());
                        s.round = Round(round);
                        s.version = version;
                        s.replaces_version = (version > 1).then(|| version - 1);
                        let registered = 1 + mix.below(600);
                        let issued = mix.below(registered + 1);
                        // Now and then more collected than issued (a warning, Art 44).
                        let collected = if mix.below(8) == 0 {
                            issued + mix.below(3)
                        } else {
                            issued - mix.below(issued.min(5) + 1)
                        };
                        s.registered_voters = registered;
                        s.ballots_issued = issued;
                        s.ballots_collected = collected;
                        s.ballots_void = mix.below(collected.min(10) + 1);
                        s.ballots_valid = collected - s.ballots_void;
                        s.ballots_blank = mix.below(s.ballots_valid.min(5) + 1);
                        s.proxies = mix.below(issued.min(3) + 1);
                        // Each part at most valid * seats / (candidates + 1): the total stays
                        // within valid * seats, and one part within valid.
                        let parts = contest.candidates.len() as u64 + 1;
                        let part = s.ballots_valid * u64::from(contest.seats) / parts;
                        for c in &mut s.candidates {
                            c.approvals = mix.below(part + 1);
                        }
                        if mix.below(3) == 0 {
                            s.write_ins = vec![WriteIn {
                                name: "王五".into(),
                                votes: mix.below(part + 1),
                            }];
                        }
                        let findings = check_sheet(d, &s);
                        assert!(!crate::validate::has_errors(&findings), "{findings:#?}");
                        out.push(s);
                    }
                }
            }
        }
        out
    }

    fn digest(sheet: &TallySheet) -> crate::ledger::Digest {
        use sha2::Digest as _;
        sha2::Sha256::digest(serde_json::to_vec(sheet).unwrap()).into()
    }

    fn shuffled<T: Clone>(items: &[T], seed: u64) -> Vec<T> {
        let mut mix = Mix(seed);
        let mut out = items.to_vec();
        for i in (1..out.len()).rev() {
            let j = mix.below(i as u64 + 1) as usize;
            out.swap(i, j);
        }
        out
    }

    fn ledger_of(sheets: &[TallySheet]) -> Ledger {
        let mut ledger = Ledger::new();
        for s in sheets {
            ledger.submit(s.clone(), digest(s));
        }
        ledger
    }

    /// Three names, each in three spellings that differ only in encoding (NFC or not),
    /// spacing, or which middle dot an input method typed; the first is the counting name.
    const SPELLINGS: [[&str; 3]; 3] = [
        ["Zoë", "Zoe\u{308}", " Zoë\u{3000}"],
        ["阿卜杜拉·艾力", "阿卜杜拉・艾力", "阿卜杜拉‧艾力 "],
        ["María José", "Mari\u{301}a  José", "María\u{a0}José"],
    ];

    proptest::proptest! {
        // Goal: written-in names that differ only by normalisation are one person: the result
        // is the same whichever spelling each unit sent.
        // Method: random valid sheets (later rounds too); each write-in gets one of three
        // names, once in its counting spelling and once in a random equivalent spelling; both
        // sets of sheets pass the checks, and their results are the same JSON.
        #[test]
        fn equivalent_write_in_spellings_count_together(seed: u64, pick: u64) {
            let d = summary_fixture();
            let mut counting = random_sheets(&d, seed, true);
            let mut variant = counting.clone();
            let mut mix = Mix(pick);
            for (c, v) in counting.iter_mut().zip(&mut variant) {
                for (cw, vw) in c.write_ins.iter_mut().zip(&mut v.write_ins) {
                    let spellings = SPELLINGS[mix.below(3) as usize];
                    cw.name = spellings[0].into();
                    vw.name = spellings[mix.below(3) as usize].into();
                }
                proptest::prop_assert!(!crate::validate::has_errors(&check_sheet(&d, v)));
            }
            let a = compute(&d, &ledger_of(&counting));
            let b = compute(&d, &ledger_of(&variant));
            proptest::prop_assert_eq!(
                serde_json::to_string(&a).unwrap(),
                serde_json::to_string(&b).unwrap()
            );
        }

        // Goal: the result does not depend on the order sheets arrive in, versions included.
        // Method: random valid sheets with up to 3 versions per slot and some round 2 sheets,
        // submitted in two random orders; compare the JSON of the results.
        #[test]
        fn order_independent(seed: u64, order_a: u64, order_b: u64) {
            let d = summary_fixture();
            let sheets = random_sheets(&d, seed, true);
            let a = compute(&d, &ledger_of(&shuffled(&sheets, order_a)));
            let b = compute(&d, &ledger_of(&shuffled(&sheets, order_b)));
            proptest::prop_assert_eq!(
                serde_json::to_string(&a).unwrap(),
                serde_json::to_string(&b).unwrap()
            );
        }

        // Goal: submitting a sheet already submitted changes nothing.
        // Method: submit a random set, then each sheet again; the ledger stays equal.
        #[test]
        fn resubmission_changes_nothing(seed: u64) {
            let d = summary_fixture();
            let sheets = random_sheets(&d, seed, true);
            let mut ledger = ledger_of(&sheets);
            let before = ledger.clone();
            for s in &sheets {
                let outcome = ledger.submit(s.clone(), digest(s));
                proptest::prop_assert_eq!(outcome, crate::ledger::Submission::Duplicate);
            }
            proptest::prop_assert_eq!(&ledger, &before);
        }

        // Goal: a township's summary equals the sum over its units' counted sheets.
        // Method: random round 1 sheets; add up each township's counted sheets by level.
        #[test]
        fn township_totals_add_up(seed: u64) {
            let d = summary_fixture();
            let ledger = ledger_of(&random_sheets(&d, seed, false));
            let r = compute(&d, &ledger);
            for area in &r.townships {
                for (level, summary) in [
                    (Level::County, &area.county_level),
                    (Level::Township, &area.township_level),
                ] {
                    let contests: Vec<&Contest> = d
                        .contests
                        .iter()
                        .filter(|c| c.township == area.township && c.level == level)
                        .collect();
                    let sheets: Vec<&TallySheet> = ledger
                        .counted()
                        .filter(|s| contests.iter().any(|c| c.id == s.contest))
                        .collect();
                    proptest::prop_assert_eq!(
                        summary.voted,
                        sheets.iter().map(|s| s.ballots_issued).sum::<u64>()
                    );
                    proptest::prop_assert_eq!(summary.units_reported, sheets.len() as u64);
                    proptest::prop_assert_eq!(
                        summary.units_expected,
                        contests.iter().map(|c| d.units_serving_count(&c.id) as u64).sum::<u64>()
                    );
                    proptest::prop_assert_eq!(
                        summary.registered_voters,
                        contests.iter().map(|c| c.registered_voters).sum::<u64>()
                    );
                    proptest::prop_assert_eq!(summary.contests_total as usize, contests.len());
                }
            }
        }
    }
}
