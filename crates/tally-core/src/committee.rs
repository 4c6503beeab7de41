//! The committee closes the count (docs/design/committee.md): its decisions on what the count
//! leaves open, its confirmation of each contest's result (确认选举结果有效, Art 46) and the
//! lock that confirmation puts on the contest, and the reopening that lifts it.
//!
//! Each is a committee act ([`crate::act`]), signed by k of the committee's officials and
//! applied by [`crate::record::apply`] in record order, alike at every replica and in
//! `tally verify`. The result is then [`crate::results::compute_with`] of the definition in
//! force, the ledger and these decisions: a pure function of the record.
//!
//! Invariants:
//! - A decision is taken only where the count leaves a matter open, and only while it is
//!   open (E401); nothing is erased by it.
//! - A confirmed contest is locked: its result is the one its officials signed; a sheet
//!   arriving after the lock is recorded and shown, never counted, until a reopening (E407).
//! - A contest is confirmed only with nothing open (E402), and only for the result, chain
//!   head and log index the record holds (E408).
//!
//! No I/O.

use crate::definition::{Definition, Mode};
use crate::ids::{ContestId, UnitId};
use crate::ledger::{Digest, Ledger};
use crate::results::{ContestResult, ContestStatus, ElectionResult, FollowUp, Person, RoundStatus};
use crate::sheet::{Round, SheetSlot, TallySheet};
use crate::validate::{Code, Finding, Severity};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// The domain separation prefix of a contest result's digest (what a confirmation signs).
pub const RESULT_DIGEST_DOMAIN: &[u8] = b"tally.v2.contest-result\0";

/// A decision of the committee on one contest, with its reason in the committee's words.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Decision {
    pub election: String,
    pub mode: Mode,
    /// The committee's own number for it, e.g. `D-004`; an id is applied once.
    pub id: String,
    pub contest: ContestId,
    pub reason: String,
    pub decide: DecisionKind,
}

/// What the committee decides.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum DecisionKind {
    /// Of two (or more) sheets claiming one unit's slot and version, the one with this digest
    /// (hex, as `tally committee pending` lists it) counts; the others stay recorded, set
    /// aside.
    KeepSheet {
        unit: UnitId,
        round: u32,
        version: u32,
        sheet_digest: String,
    },
    /// The further election's candidate list tied at the cut-off: these of the tied people
    /// take the open places, and the contest proceeds to its further election.
    CutoffTie { round: u32, chosen: Vec<Person> },
    /// Written-in names adjudicated: each merge counts its names as one person (a candidate
    /// of the contest, or one written-in name); names ruled invalid count for no one.
    WriteIns {
        #[serde(default)]
        merge: Vec<Merge>,
        #[serde(default)]
        invalid: Vec<String>,
    },
    /// The round is void for a violation of the law (破坏选举 → 选举无效) and held again.
    VoidRound { round: u32 },
    /// A unit's sheet of one round is to be recounted (a conflict, or a doubt the committee
    /// has): the contest waits for the recount.
    OrderRecount { unit: UnitId, round: u32 },
    /// The committee's recount of a unit's round, entered by double entry and signed by its
    /// officials: it counts in place of the unit's sheet from now on; the corrigendum prints
    /// the original and the corrected figures side by side, and both stay in the record.
    Recount { sheet: TallySheet },
    /// A warning on the contest reviewed; the note prints with it.
    Review {
        code: String,
        /// Where the warning is: `contest T01-X05, round 1`, or a sheet's label.
        at: String,
        note: String,
    },
}

/// Names written for one person.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Merge {
    pub names: Vec<String>,
    pub into: Person,
}

/// The committee determines contests' results valid (确认选举结果有效): one contest, or
/// every contest of a township's level or of the county level at once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Confirmation {
    pub election: String,
    pub mode: Mode,
    pub id: String,
    /// The log index the officials saw, and the chain head at it (hex).
    pub log_index: u64,
    pub head: String,
    pub contests: Vec<ConfirmedContest>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfirmedContest {
    pub contest: ContestId,
    /// [`result_digest`] of the contest's result at `log_index`, hex.
    pub result_digest: String,
}

/// A confirmed contest reopened (VxAdmin's logged revert, with a reason): it is unlocked and
/// must be confirmed again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reopening {
    pub election: String,
    pub mode: Mode,
    pub id: String,
    pub contest: ContestId,
    /// The confirmation it lifts.
    pub confirmation: String,
    pub reason: String,
}

/// One act the contest was touched by, as results and papers show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DecisionNote {
    pub id: String,
    pub log_index: u64,
    /// `keep-sheet`, `cutoff-tie`, `write-ins`, `void-round`, `review`, `confirmation`,
    /// `reopening`.
    pub kind: String,
    pub reason: String,
    /// What it decided, in plain words (Chinese: the official papers print it).
    pub what: String,
}

/// A recount the committee entered, and the sheet it corrects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Recounted {
    pub decision: String,
    pub log_index: u64,
    /// The sheet that counted before (the unit's, or an earlier recount).
    pub original: Option<TallySheet>,
    pub sheet: TallySheet,
}

/// A contest's confirmation in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Lock {
    pub confirmation: String,
    /// Where the confirmation was recorded.
    pub log_index: u64,
    /// The log index the officials signed at.
    pub signed_at: u64,
    pub result_digest: String,
    /// The version counted per slot when it was confirmed: exactly these count while locked.
    #[serde(skip)]
    pub counted: BTreeMap<SheetSlot, u32>,
    /// The ledger's conflicts when it was confirmed: later ones arrived after the lock.
    #[serde(skip)]
    pub conflicts_before: usize,
}

/// What the committee has decided about one contest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContestDecisions {
    /// Every decision, confirmation and reopening, in record order.
    pub notes: Vec<DecisionNote>,
    /// Counting name → the person it counts for, or `None`: invalid.
    pub write_ins: BTreeMap<String, Option<Person>>,
    /// Rounds void by decision → the decision's id.
    pub voided: BTreeMap<u32, String>,
    /// Round whose further-election list tied → the tied people the committee chose.
    pub cutoff: BTreeMap<u32, Vec<Person>>,
    /// `(code, at)` of reviewed warnings → the note.
    pub reviewed: BTreeMap<(String, String), String>,
    /// Conflicts decided: `(slot, version)` → the digest of the sheet that counts.
    pub kept: BTreeMap<(SheetSlot, u32), Digest>,
    /// Recounts ordered and not yet entered: slot → the order's id.
    pub recount_ordered: BTreeMap<SheetSlot, String>,
    /// Recounts entered: slot → the recount, counted in place of the unit's sheet.
    pub recounted: BTreeMap<SheetSlot, Recounted>,
    pub lock: Option<Lock>,
}

/// The committee's decisions so far, per contest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decisions {
    ids: BTreeSet<String>,
    contests: BTreeMap<ContestId, ContestDecisions>,
}

/// Why an act of the committee was refused: the stable code, the act and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: Code,
    pub message: String,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.code.as_str(), self.message)
    }
}

fn refuse(code: Code, message: impl Into<String>) -> Refusal {
    Refusal {
        code,
        message: message.into(),
    }
}

/// A matter waiting for the committee.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Matter {
    pub contest: ContestId,
    /// `conflict`, `cutoff-tie`, `write-ins`, `warning`, `ready`, `after-lock`.
    pub kind: &'static str,
    /// Whether it keeps the contest from being confirmed.
    pub blocking: bool,
    pub what: String,
    /// A command that prepares the decision, where one applies.
    pub how: String,
    /// For a warning: its code and where it is (what `tally committee review` names).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub code: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub at: String,
}

/// The warnings that keep a contest from being confirmed until reviewed: a unit that found
/// more ballots than it issued (W301) and units whose registered voters do not add up to the
/// contest's (W306). The others are shown for review but do not block.
pub const BLOCKING_WARNINGS: [Code; 2] = [Code::CollectedOverIssued, Code::RegisteredSumMismatch];

/// The digest a confirmation signs for one contest: SHA-256 over the domain and the canonical
/// JSON of its result, without what the confirmation itself adds (the lock, after-lock
/// arrivals, the committee's notes).
pub fn result_digest(result: &ContestResult) -> [u8; 32] {
    let mut bare = result.clone();
    bare.confirmed = None;
    bare.after_lock.clear();
    bare.decisions.clear();
    let value = serde_json::to_value(&bare).expect("a result always converts to JSON");
    let mut hasher = Sha256::new();
    hasher.update(RESULT_DIGEST_DOMAIN);
    hasher.update(serde_json::to_vec(&value).expect("a result always encodes"));
    hasher.finalize().into()
}

impl Decisions {
    /// What the committee decided about `contest` (empty when nothing).
    pub fn contest(&self, contest: &ContestId) -> Option<&ContestDecisions> {
        self.contests.get(contest)
    }

    /// Every contest the committee touched, with what it decided.
    pub fn contests(&self) -> impl Iterator<Item = (&ContestId, &ContestDecisions)> {
        self.contests.iter()
    }

    /// The sheet that counts in `sheet`'s place: the committee's recount of the slot if it
    /// entered one; else the one it chose where that slot and version were in conflict; else
    /// `sheet` itself.
    pub fn effective<'a>(&'a self, ledger: &'a Ledger, sheet: &'a TallySheet) -> &'a TallySheet {
        let Some(d) = self.contests.get(&sheet.contest) else {
            return sheet;
        };
        if let Some(r) = d.recounted.get(&sheet.slot()) {
            return &r.sheet;
        }
        d.kept
            .get(&(sheet.slot(), sheet.version))
            .and_then(|digest| ledger.chosen(&sheet.slot(), sheet.version, digest))
            .unwrap_or(sheet)
    }

    /// Whether `contest` is confirmed and locked.
    pub fn locked(&self, contest: &ContestId) -> bool {
        self.contests.get(contest).is_some_and(|c| c.lock.is_some())
    }

    /// Whether any act id was recorded already (each is applied once).
    pub fn has_id(&self, id: &str) -> bool {
        self.ids.contains(id)
    }

    /// Applies a decision recorded at `log_index`, after checking it is needed now (E401),
    /// the contest is not locked (E407), and the decision itself holds. `result` is the
    /// result of the record just before it. Nothing changes unless it is taken.
    pub fn decide(
        &mut self,
        definition: &Definition,
        ledger: &Ledger,
        result: &ElectionResult,
        log_index: u64,
        decision: &Decision,
    ) -> Result<(), Refusal> {
        let label = format!("decision {}", decision.id);
        self.fresh_id(&decision.id, &label)?;
        if decision.reason.trim().is_empty() {
            return Err(refuse(
                Code::DecisionNotNeeded,
                format!(
                    "{label} gives no reason; the committee states why, in its own words (--reason)"
                ),
            ));
        }
        let Some(contest_def) = definition.contest(&decision.contest) else {
            return Err(refuse(
                Code::DecisionNotNeeded,
                format!(
                    "{label} names contest {}, which is not in the definition",
                    decision.contest
                ),
            ));
        };
        if self.locked(&decision.contest) {
            return Err(refuse(
                Code::ContestLocked,
                format!(
                    "{label}: contest {} is confirmed and locked; reopen it first (`tally committee reopen`)",
                    decision.contest
                ),
            ));
        }
        let contest = result
            .contests
            .iter()
            .find(|c| c.contest == decision.contest)
            .expect("every contest of the definition has a result");
        // Worked on a copy, kept only if the decision is taken.
        let mut decided = self
            .contests
            .get(&decision.contest)
            .cloned()
            .unwrap_or_default();
        let entry = &mut decided;
        let not_needed = |why: String| {
            refuse(
                Code::DecisionNotNeeded,
                format!("{label} on contest {}: {why}", decision.contest),
            )
        };
        let what = match &decision.decide {
            DecisionKind::KeepSheet {
                unit,
                round,
                version,
                sheet_digest,
            } => {
                let slot = SheetSlot {
                    unit: unit.clone(),
                    contest: decision.contest.clone(),
                    round: Round(*round),
                };
                let digest = parse_digest(sheet_digest)
                    .map_err(|e| not_needed(format!("sheet_digest {e}")))?;
                if entry.kept.contains_key(&(slot.clone(), *version)) {
                    return Err(not_needed(format!(
                        "the conflict of unit {unit}, round {round}, version {version} is already decided"
                    )));
                }
                ledger
                    .conflict_choice(&slot, *version, &digest)
                    .map_err(not_needed)?;
                entry.kept.insert((slot, *version), digest);
                format!(
                    "投票单位 {unit} 第 {round} 轮第 {version} 版的冲突计票单中，采用摘要为 {} 的一份；其余仍存于记录，不计入",
                    &sheet_digest[..16.min(sheet_digest.len())]
                )
            }
            DecisionKind::CutoffTie { round, chosen } => {
                let tie = contest.rounds.iter().find_map(|r| match &r.follow_up {
                    FollowUp::FurtherCandidatesTie {
                        listed,
                        tied,
                        places,
                        ..
                    } if r.round == *round => Some((listed, tied, *places)),
                    _ => None,
                });
                let Some((listed, tied, places)) = tie else {
                    return Err(not_needed(format!(
                        "round {round} has no tie at the further election's candidate cut-off"
                    )));
                };
                let unique: BTreeSet<&Person> = chosen.iter().collect();
                if unique.len() != chosen.len() || chosen.len() != places as usize {
                    return Err(not_needed(format!(
                        "{places} of the tied people take the open place(s); the decision names {} (distinct: {})",
                        chosen.len(),
                        unique.len()
                    )));
                }
                if let Some(p) = chosen.iter().find(|p| !tied.contains(p)) {
                    return Err(not_needed(format!(
                        "{} is not among the tied: {}",
                        p.name(contest_def),
                        names(tied, contest_def)
                    )));
                }
                entry.cutoff.insert(*round, chosen.clone());
                format!(
                    "第 {round} 轮后的另行选举候选人：{}，以及票数相等者中的 {}",
                    names(listed, contest_def),
                    names(chosen, contest_def)
                )
            }
            DecisionKind::WriteIns { merge, invalid } => {
                let written = written_in(contest);
                let mut problems = Vec::new();
                let mut seen = BTreeSet::new();
                let named = merge
                    .iter()
                    .flat_map(|m| m.names.iter())
                    .chain(invalid.iter());
                for name in named {
                    let name = crate::sheet::counting_name(name);
                    if !written.contains(&name) {
                        problems.push(format!("no one wrote in {name:?} in this contest"));
                    } else if entry.write_ins.contains_key(&name) {
                        problems.push(format!("{name:?} was adjudicated before"));
                    } else if !seen.insert(name.clone()) {
                        problems.push(format!("{name:?} is named twice"));
                    }
                }
                for m in merge {
                    match &m.into {
                        Person::Candidate(id)
                            if !contest_def.candidates.iter().any(|c| &c.id == id) =>
                        {
                            problems
                                .push(format!("candidate {id} is not a candidate of this contest"));
                        }
                        Person::WriteIn(name) if name.trim().is_empty() => {
                            problems.push("a merge into an empty name".to_owned());
                        }
                        _ => {}
                    }
                    if m.names.is_empty() {
                        problems.push("a merge of no names".to_owned());
                    }
                }
                if merge.is_empty() && invalid.is_empty() {
                    problems.push("it merges no names and rules none invalid".to_owned());
                }
                if !problems.is_empty() {
                    return Err(not_needed(problems.join("; ")));
                }
                let mut parts = Vec::new();
                for m in merge {
                    let into = match &m.into {
                        Person::WriteIn(name) => Person::WriteIn(crate::sheet::counting_name(name)),
                        other => other.clone(),
                    };
                    for name in &m.names {
                        entry
                            .write_ins
                            .insert(crate::sheet::counting_name(name), Some(into.clone()));
                    }
                    // The spelling merged into is adjudicated too: it is that person.
                    if let Person::WriteIn(name) = &into {
                        entry
                            .write_ins
                            .entry(name.clone())
                            .or_insert(Some(into.clone()));
                    }
                    parts.push(format!(
                        "另选他人 {} 计为 {}",
                        m.names.join(" / "),
                        into.name(contest_def)
                    ));
                }
                for name in invalid {
                    entry
                        .write_ins
                        .insert(crate::sheet::counting_name(name), None);
                }
                if !invalid.is_empty() {
                    parts.push(format!("另选他人 {} 无效", invalid.join(" / ")));
                }
                parts.join("；")
            }
            DecisionKind::VoidRound { round } => {
                let last = contest.rounds.last().map(|r| r.round);
                if last != Some(*round) || contest.rounds.iter().all(|r| r.units_reported == 0) {
                    return Err(not_needed(format!(
                        "round {round} is not the contest's latest voted round ({}); only the round in course can be declared void",
                        last.map_or("none".to_owned(), |r| r.to_string())
                    )));
                }
                if entry.voided.contains_key(round) {
                    return Err(not_needed(format!("round {round} is void already")));
                }
                entry.voided.insert(*round, decision.id.clone());
                format!("第 {round} 轮选举无效，重新选举")
            }
            DecisionKind::OrderRecount { unit, round } => {
                let slot = SheetSlot {
                    unit: unit.clone(),
                    contest: decision.contest.clone(),
                    round: Round(*round),
                };
                if ledger.versions(&slot).next().is_none() {
                    return Err(not_needed(format!(
                        "no sheet of unit {unit} for round {round} is recorded: there is nothing to recount"
                    )));
                }
                if entry.recount_ordered.contains_key(&slot) {
                    return Err(not_needed(format!(
                        "a recount of unit {unit}, round {round} is ordered already"
                    )));
                }
                entry.recount_ordered.insert(slot, decision.id.clone());
                format!("投票单位 {unit} 第 {round} 轮的选票须重新清点，结果待选举委员会录入")
            }
            DecisionKind::Recount { sheet } => {
                let slot = sheet.slot();
                if sheet.contest != decision.contest {
                    return Err(not_needed(format!(
                        "the recounted sheet is of contest {}, not of {}",
                        sheet.contest, decision.contest
                    )));
                }
                if !entry.recount_ordered.contains_key(&slot) {
                    return Err(not_needed(format!(
                        "no recount of unit {}, round {} is ordered (tally committee order-recount first)",
                        sheet.unit, sheet.round.0
                    )));
                }
                let errors: Vec<String> = crate::validate::check_sheet(definition, sheet)
                    .into_iter()
                    .filter(Finding::is_error)
                    .map(|f| format!("{} {}: {}", f.code.as_str(), f.field, f.message))
                    .collect();
                if !errors.is_empty() {
                    return Err(refuse(
                        Code::RecountSheetInvalid,
                        format!(
                            "{label}: the recounted sheet of unit {}, round {} fails its checks: {}",
                            sheet.unit,
                            sheet.round.0,
                            errors.join("; ")
                        ),
                    ));
                }
                let original = ledger.get(&slot).map(|s| self.effective(ledger, s).clone());
                entry.recount_ordered.remove(&slot);
                entry.recounted.insert(
                    slot,
                    Recounted {
                        decision: decision.id.clone(),
                        log_index,
                        original,
                        sheet: sheet.clone(),
                    },
                );
                format!(
                    "投票单位 {} 第 {} 轮重新清点的结果计入（更正单列出原数与更正数）",
                    sheet.unit, sheet.round.0
                )
            }
            DecisionKind::Review { code, at, note } => {
                let open: Vec<(String, String)> =
                    warnings(definition, ledger, self, &result.findings, &|c| {
                        *c == decision.contest
                    })
                    .remove(&decision.contest)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|f| (f.code.as_str().to_owned(), f.sheet))
                    .collect();
                let key = (code.clone(), at.clone());
                if !open.contains(&key) {
                    return Err(not_needed(format!(
                        "there is no warning {code} at {at} to review"
                    )));
                }
                if entry.reviewed.contains_key(&key) {
                    return Err(not_needed(format!(
                        "warning {code} at {at} is reviewed already"
                    )));
                }
                if note.trim().is_empty() {
                    return Err(not_needed(
                        "a review carries a note for the report".to_owned(),
                    ));
                }
                entry.reviewed.insert(key, note.clone());
                format!("警示 {code}（{at}）已审查：{note}")
            }
        };
        entry.notes.push(DecisionNote {
            id: decision.id.clone(),
            log_index,
            kind: decision.decide.kind().to_owned(),
            reason: decision.reason.clone(),
            what,
        });
        self.contests.insert(decision.contest.clone(), decided);
        self.ids.insert(decision.id.clone());
        Ok(())
    }

    /// Applies a confirmation recorded at `log_index`: every contest it names is decided,
    /// has nothing open (E402), is not confirmed already (E407), and its result is the one
    /// signed (E408); `head_at` gives the chain head at a log index, so the head the officials
    /// saw is checked to be the record's.
    pub fn confirm(
        &mut self,
        definition: &Definition,
        ledger: &Ledger,
        result: &ElectionResult,
        log_index: u64,
        confirmation: &Confirmation,
        head_at: &dyn Fn(u64) -> Option<[u8; 32]>,
    ) -> Result<(), Refusal> {
        let label = format!("confirmation {}", confirmation.id);
        self.fresh_id(&confirmation.id, &label)?;
        if confirmation.contests.is_empty() {
            return Err(refuse(
                Code::OpenMatters,
                format!("{label} names no contest"),
            ));
        }
        let head = parse_digest(&confirmation.head)
            .map_err(|e| refuse(Code::ConfirmationStale, format!("{label}: head {e}")))?;
        if confirmation.log_index > log_index || head_at(confirmation.log_index) != Some(head) {
            return Err(refuse(
                Code::ConfirmationStale,
                format!(
                    "{label} was signed at log index {} with head {}, which is not this record's head there; prepare it again (`tally committee confirm`)",
                    confirmation.log_index,
                    &confirmation.head[..16.min(confirmation.head.len())]
                ),
            ));
        }
        let mut problems = Vec::new();
        let mut seen = BTreeSet::new();
        for c in &confirmation.contests {
            if !seen.insert(&c.contest) {
                problems.push(format!("contest {} is named twice", c.contest));
                continue;
            }
            let Some(contest) = result.contests.iter().find(|r| r.contest == c.contest) else {
                problems.push(format!("contest {} is not in the definition", c.contest));
                continue;
            };
            if self.locked(&c.contest) {
                return Err(refuse(
                    Code::ContestLocked,
                    format!("{label}: contest {} is confirmed already", c.contest),
                ));
            }
            let warned = warnings(definition, ledger, self, &result.findings, &|x| {
                *x == c.contest
            })
            .remove(&c.contest)
            .unwrap_or_default();
            let open: Vec<String> = self
                .matters(definition, ledger, contest, &warned)
                .into_iter()
                .filter(|m| m.blocking)
                .map(|m| m.what)
                .collect();
            if !open.is_empty() {
                return Err(refuse(
                    Code::OpenMatters,
                    format!(
                        "{label}: contest {} has open matters: {}",
                        c.contest,
                        open.join("; ")
                    ),
                ));
            }
            if hex::encode(result_digest(contest)) != c.result_digest {
                return Err(refuse(
                    Code::ConfirmationStale,
                    format!(
                        "{label}: the result of contest {} is no longer the one signed (a sheet or decision changed it since); prepare the confirmation again",
                        c.contest
                    ),
                ));
            }
        }
        if !problems.is_empty() {
            return Err(refuse(
                Code::OpenMatters,
                format!("{label}: {}", problems.join("; ")),
            ));
        }
        for c in &confirmation.contests {
            let entry = self.contests.entry(c.contest.clone()).or_default();
            let counted = ledger
                .counted()
                .filter(|s| s.contest == c.contest)
                .map(|s| (s.slot(), s.version))
                .collect();
            entry.lock = Some(Lock {
                confirmation: confirmation.id.clone(),
                log_index,
                signed_at: confirmation.log_index,
                result_digest: c.result_digest.clone(),
                counted,
                conflicts_before: ledger.conflicts().len(),
            });
            entry.notes.push(DecisionNote {
                id: confirmation.id.clone(),
                log_index,
                kind: "confirmation".into(),
                reason: String::new(),
                what: format!(
                    "确认选举结果有效（依据日志索引 {} 时的结果）",
                    confirmation.log_index
                ),
            });
        }
        self.ids.insert(confirmation.id.clone());
        Ok(())
    }

    /// Applies a reopening: the contest's confirmation is lifted (with a reason, E406), the
    /// sheets that arrived after the lock count from now on, and it must be confirmed again.
    pub fn reopen(&mut self, log_index: u64, reopening: &Reopening) -> Result<(), Refusal> {
        let label = format!("reopening {}", reopening.id);
        self.fresh_id(&reopening.id, &label)?;
        if reopening.reason.trim().is_empty() {
            return Err(refuse(
                Code::ReopenWithoutReason,
                format!(
                    "{label} gives no reason; a confirmed result is reopened only with the committee's reason (--reason)"
                ),
            ));
        }
        let entry = self.contests.get_mut(&reopening.contest);
        let Some(entry) = entry.filter(|e| e.lock.is_some()) else {
            return Err(refuse(
                Code::ReopenWithoutReason,
                format!(
                    "{label}: contest {} is not confirmed, so there is nothing to reopen",
                    reopening.contest
                ),
            ));
        };
        let lock = entry.lock.as_ref().expect("filtered on a lock");
        if lock.confirmation != reopening.confirmation {
            return Err(refuse(
                Code::ReopenWithoutReason,
                format!(
                    "{label} lifts confirmation {}, but contest {} is confirmed by {}",
                    reopening.confirmation, reopening.contest, lock.confirmation
                ),
            ));
        }
        entry.lock = None;
        entry.notes.push(DecisionNote {
            id: reopening.id.clone(),
            log_index,
            kind: "reopening".into(),
            reason: reopening.reason.clone(),
            what: format!("撤销确认 {}，该选区须重新确认", reopening.confirmation),
        });
        self.ids.insert(reopening.id.clone());
        Ok(())
    }

    fn fresh_id(&self, id: &str, label: &str) -> Result<(), Refusal> {
        if id.trim().is_empty() {
            return Err(refuse(
                Code::DecisionNotNeeded,
                format!("{label} has no id"),
            ));
        }
        if self.ids.contains(id) {
            return Err(refuse(
                Code::DecisionNotNeeded,
                format!("{label} is recorded already; each act of the committee is applied once"),
            ));
        }
        Ok(())
    }

    /// What waits for the committee, contest by contest in definition order, blocking matters
    /// first within each: conflicts, cut-off ties, warnings, write-ins, arrivals after a lock,
    /// and contests ready to confirm. (A contest still counting waits for its units, not for
    /// the committee, and is not listed unless something else in it waits.)
    ///
    /// Warnings are reviewed once a contest is decided, so they are gathered for decided
    /// contests only: while the night's sheets arrive, the county's results (which list what
    /// waits) do not check every counted sheet again.
    pub fn pending(
        &self,
        definition: &Definition,
        ledger: &Ledger,
        result: &ElectionResult,
    ) -> Vec<Matter> {
        let decided: BTreeSet<&ContestId> = result
            .contests
            .iter()
            .filter(|c| c.status == ContestStatus::Decided)
            .map(|c| &c.contest)
            .collect();
        let mut warned = warnings(definition, ledger, self, &result.findings, &|c| {
            decided.contains(c)
        });
        result
            .contests
            .iter()
            .flat_map(|c| {
                let w = warned.remove(&c.contest).unwrap_or_default();
                self.matters(definition, ledger, c, &w)
            })
            .filter(|m| m.kind != "pending")
            .collect()
    }

    /// What waits for the committee in one contest, blocking first; `warned` are the
    /// contest's warnings ([`warnings`]).
    pub fn matters(
        &self,
        definition: &Definition,
        ledger: &Ledger,
        contest: &ContestResult,
        warned: &[Finding],
    ) -> Vec<Matter> {
        let id = &contest.contest;
        let decided = self.contests.get(id);
        let mut out = Vec::new();
        let matter = |kind, blocking, what: String, how: String| Matter {
            contest: id.clone(),
            kind,
            blocking,
            what,
            how,
            code: String::new(),
            at: String::new(),
        };
        let locked = decided.and_then(|d| d.lock.as_ref());
        if let Some(lock) = locked {
            let late = contest.after_lock.len();
            if late > 0 {
                out.push(matter(
                    "after-lock",
                    false,
                    format!("{late} sheet(s) arrived after confirmation {}; they count only if the contest is reopened", lock.confirmation),
                    format!("tally committee reopen --contest {id} --confirmation {} --reason ...", lock.confirmation),
                ));
            }
            return out;
        }
        for c in ledger.conflicts().iter().filter(|c| c.slot.contest == *id) {
            if decided.is_some_and(|d| {
                d.kept.contains_key(&(c.slot.clone(), c.version))
                    || d.recount_ordered.contains_key(&c.slot)
                    || d.recounted.contains_key(&c.slot)
            }) {
                continue;
            }
            out.push(matter(
                "conflict",
                true,
                format!(
                    "unit {}, round {}, version {}: two sheets differ (recorded {}, refused {})",
                    c.slot.unit,
                    c.slot.round.0,
                    c.version,
                    hex::encode(c.existing),
                    hex::encode(c.conflicting)
                ),
                format!(
                    "tally committee keep-sheet --contest {id} --unit {} --round {} --version {} --sheet-digest HEX --reason ...",
                    c.slot.unit, c.slot.round.0, c.version
                ),
            ));
        }
        for (slot, order) in decided.into_iter().flat_map(|d| d.recount_ordered.iter()) {
            out.push(matter(
                "recount",
                true,
                format!(
                    "{order}: the recount of unit {}, round {} is to be entered",
                    slot.unit, slot.round.0
                ),
                format!(
                    "tally committee recount --contest {id} --unit {} --round {} --reason ... (double entry)",
                    slot.unit, slot.round.0
                ),
            ));
        }
        for r in &contest.rounds {
            if decided.is_some_and(|d| d.cutoff.contains_key(&r.round)) {
                continue;
            }
            if let FollowUp::FurtherCandidatesTie { tied, places, .. } = &r.follow_up {
                let def = definition.contest(id);
                out.push(matter(
                    "cutoff-tie",
                    true,
                    format!(
                        "round {}: {places} place(s) on the further election's list among the tied {}",
                        r.round,
                        def.map_or_else(String::new, |d| names(tied, d))
                    ),
                    format!("tally committee cutoff-tie --contest {id} --round {} --chosen ID,... --reason ...", r.round),
                ));
            }
        }
        let reviewed = decided.map(|d| &d.reviewed);
        for f in warned {
            let key = (f.code.as_str().to_owned(), f.sheet.clone());
            if reviewed.is_some_and(|r| r.contains_key(&key)) {
                continue;
            }
            out.push(Matter {
                code: f.code.as_str().to_owned(),
                at: f.sheet.clone(),
                ..matter(
                "warning",
                BLOCKING_WARNINGS.contains(&f.code),
                format!("{} at {}: {}", f.code.as_str(), f.sheet, f.message),
                format!("tally committee review --contest {id} --code {} --at {:?} --note ... --reason ...", f.code.as_str(), f.sheet),
            )
            });
        }
        let adjudicated = decided.map(|d| &d.write_ins);
        let open_names: Vec<String> = written_in(contest)
            .into_iter()
            .filter(|n| !adjudicated.is_some_and(|a| a.contains_key(n)))
            .collect();
        if !open_names.is_empty() {
            out.push(matter(
                "write-ins",
                false,
                format!("written-in names not adjudicated: {}", open_names.join(", ")),
                format!("tally committee write-ins --contest {id} --merge NAME=NAME,... --invalid NAME --reason ..."),
            ));
        }
        let open_round = !matches!(contest.status, ContestStatus::Decided);
        if open_round {
            let why = match contest.status {
                ContestStatus::Counting => "units are still reporting",
                ContestStatus::AwaitingRound => "a further round is called and not yet voted",
                ContestStatus::CommitteeDecision => {
                    "the committee decides the further election's list"
                }
                ContestStatus::RoundLimit => {
                    "the round limit is reached; the committee holds the vote again"
                }
                ContestStatus::Decided => unreachable!(),
            };
            out.push(matter(
                "pending",
                true,
                format!("not decided: {why}"),
                String::new(),
            ));
        }
        if out.iter().all(|m| !m.blocking) {
            out.push(matter(
                "ready",
                false,
                "ready to confirm".into(),
                format!("tally committee confirm --contest {id}"),
            ));
        }
        out.sort_by_key(|m| !m.blocking);
        out
    }
}

impl DecisionKind {
    pub fn kind(&self) -> &'static str {
        match self {
            DecisionKind::KeepSheet { .. } => "keep-sheet",
            DecisionKind::CutoffTie { .. } => "cutoff-tie",
            DecisionKind::WriteIns { .. } => "write-ins",
            DecisionKind::VoidRound { .. } => "void-round",
            DecisionKind::OrderRecount { .. } => "order-recount",
            DecisionKind::Recount { .. } => "recount",
            DecisionKind::Review { .. } => "review",
        }
    }
}

/// The warnings of a contest's counted sheets and of the contest itself (from `findings`, the
/// result's), as the committee reviews them (their `sheet` is where they are).
pub fn warnings(
    definition: &Definition,
    ledger: &Ledger,
    decisions: &Decisions,
    findings: &[Finding],
    only: &dyn Fn(&ContestId) -> bool,
) -> BTreeMap<ContestId, Vec<Finding>> {
    let mut out: BTreeMap<ContestId, Vec<Finding>> = BTreeMap::new();
    for sheet in ledger.counted().filter(|s| only(&s.contest)) {
        let sheet = decisions.effective(ledger, sheet);
        let found: Vec<Finding> = crate::validate::check_sheet(definition, sheet)
            .into_iter()
            .filter(|f| f.severity() == Severity::Warning)
            .collect();
        if !found.is_empty() {
            out.entry(sheet.contest.clone()).or_default().extend(found);
        }
    }
    // The result's own findings of a contest are `contest C, round r`.
    for f in findings
        .iter()
        .filter(|f| f.severity() == Severity::Warning)
    {
        let Some(rest) = f.sheet.strip_prefix("contest ") else {
            continue;
        };
        let Some((contest, _)) = rest.split_once(", round ") else {
            continue;
        };
        let contest = ContestId::new(contest.to_owned());
        if only(&contest) {
            out.entry(contest).or_default().push(f.clone());
        }
    }
    out
}

/// Every written-in name with votes in any round of the contest (as counted).
fn written_in(contest: &ContestResult) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for r in &contest.rounds {
        for v in &r.votes {
            if let Person::WriteIn(name) = &v.person {
                names.insert(name.clone());
            }
        }
    }
    names
}

fn names(people: &[Person], contest: &crate::definition::Contest) -> String {
    people
        .iter()
        .map(|p| p.name(contest))
        .collect::<Vec<_>>()
        .join("、")
}

fn parse_digest(text: &str) -> Result<Digest, String> {
    let bytes = hex::decode(text).map_err(|_| format!("{text:?} is not hex"))?;
    bytes
        .try_into()
        .map_err(|_| format!("{text:?} is not 64 hex digits"))
}

/// Whether a round's status was set by a committee decision.
pub fn void_by_committee(status: &RoundStatus) -> bool {
    matches!(status, RoundStatus::VoidByCommittee { .. })
}

#[cfg(test)]
mod tests;
