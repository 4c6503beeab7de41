use super::*;
use crate::definition::Mode;
use crate::ids::CandidateId;
use crate::results::testkit::{ContestSpec, UnitSpec, clean_sheet, definition};
use crate::results::{RoundKind, compute_with};
use crate::sheet::{CandidateCount, TallySheet, WriteIn};

/// One contest C1 of `seats`, six candidates A..F, 1,000 voters, served by U1.
fn single(seats: u32) -> Definition {
    definition(
        &[ContestSpec::new("C1", seats, 6, 1000)],
        &[UnitSpec::new("U1", "station", &["C1"])],
        "",
    )
}

fn cand(letter: &str) -> Person {
    Person::Candidate(CandidateId::new(format!("C1-{letter}")))
}

/// U1's first-round sheet: 620 voted, approvals by letter.
fn sheet(d: &Definition, version: u32, votes: &[(&str, u64)]) -> TallySheet {
    let mut s = clean_sheet(d, "U1", "C1");
    s.version = version;
    s.replaces_version = (version > 1).then(|| version - 1);
    s.registered_voters = 1000;
    s.ballots_issued = 620;
    s.ballots_collected = 620;
    s.ballots_valid = 620;
    s.candidates = votes
        .iter()
        .map(|&(l, approvals)| CandidateCount {
            candidate: CandidateId::new(format!("C1-{l}")),
            approvals,
            disapprovals: None,
            abstentions: None,
        })
        .collect();
    s
}

const TIED: [(&str, u64); 6] = [
    ("A", 400),
    ("B", 300),
    ("C", 250),
    ("D", 200),
    ("E", 200),
    ("F", 100),
];
const CLEAR: [(&str, u64); 6] = [
    ("A", 400),
    ("B", 350),
    ("C", 320),
    ("D", 200),
    ("E", 150),
    ("F", 100),
];

fn decision(id: &str, decide: DecisionKind) -> Decision {
    Decision {
        election: "test".into(),
        mode: Mode::Rehearsal,
        id: id.into(),
        contest: "C1".into(),
        reason: "选举委员会第3次会议决定".into(),
        decide,
    }
}

struct Record {
    d: Definition,
    ledger: Ledger,
    decisions: Decisions,
    index: u64,
}

impl Record {
    fn new(d: Definition) -> Self {
        Record {
            d,
            ledger: Ledger::new(),
            decisions: Decisions::default(),
            index: 1,
        }
    }
    fn submit(&mut self, s: TallySheet, digest: u8) {
        self.index += 1;
        self.ledger.submit(s, [digest; 32]);
    }
    fn result(&self) -> ElectionResult {
        compute_with(&self.d, &self.ledger, &self.decisions)
    }
    fn decide(&mut self, decision: &Decision) -> Result<(), Refusal> {
        self.index += 1;
        let result = self.result();
        self.decisions
            .decide(&self.d, &self.ledger, &result, self.index, decision)
    }
    /// A confirmation of C1 as the officials would prepare it now (the head is a stand-in the
    /// `head_at` below agrees with).
    fn confirmation(&self, id: &str) -> Confirmation {
        let result = self.result();
        Confirmation {
            election: "test".into(),
            mode: Mode::Rehearsal,
            id: id.into(),
            log_index: self.index,
            head: hex::encode([self.index as u8; 32]),
            contests: vec![ConfirmedContest {
                contest: "C1".into(),
                result_digest: hex::encode(result_digest(&result.contests[0])),
            }],
        }
    }
    fn confirm(&mut self, c: &Confirmation) -> Result<(), Refusal> {
        self.index += 1;
        let result = self.result();
        let now = self.index;
        self.decisions
            .confirm(&self.d, &self.ledger, &result, now, c, &|i| {
                (i <= now).then_some([i as u8; 32])
            })
    }
    fn matters(&self) -> Vec<Matter> {
        let result = self.result();
        let mut all = self.decisions.pending(&self.d, &self.ledger, &result);
        let warned = warnings(
            &self.d,
            &self.ledger,
            &self.decisions,
            &result.findings,
            // As `pending` does: warnings wait until the contest is decided.
            &|_| result.contests[0].status == ContestStatus::Decided,
        )
        .remove(&"C1".into())
        .unwrap_or_default();
        let one = self
            .decisions
            .matters(&self.d, &self.ledger, &result.contests[0], &warned);
        all.retain(|m| m.kind != "pending");
        assert_eq!(
            all,
            one.into_iter()
                .filter(|m| m.kind != "pending")
                .collect::<Vec<_>>()
        );
        all
    }
}

// Goal: a tie at the further election's cut-off waits for the committee; a decision naming
// the right number of the tied lets the contest proceed with that list, and anything else is
// refused with E401 and changes nothing.
// Method: 3 seats, only A passes, D and E tie for the third place on the list.
#[test]
fn a_cutoff_tie_is_decided_and_the_contest_proceeds() {
    let mut r = Record::new(single(3));
    r.submit(sheet(&r.d, 1, &TIED), 1);
    assert_eq!(
        r.result().contests[0].status,
        ContestStatus::CommitteeDecision
    );
    assert!(
        r.matters()
            .iter()
            .any(|m| m.kind == "cutoff-tie" && m.blocking)
    );

    let before = r.decisions.clone();
    for (chosen, why) in [
        (vec![cand("D"), cand("E")], "1 of the tied"),
        (vec![cand("F")], "not among the tied"),
    ] {
        let refused = r
            .decide(&decision(
                "D-1",
                DecisionKind::CutoffTie { round: 1, chosen },
            ))
            .unwrap_err();
        assert_eq!(refused.code, Code::DecisionNotNeeded, "{refused}");
        assert!(refused.message.contains(why), "{refused}");
    }
    let refused = r
        .decide(&decision(
            "D-1",
            DecisionKind::CutoffTie {
                round: 2,
                chosen: vec![cand("D")],
            },
        ))
        .unwrap_err();
    assert_eq!(refused.code, Code::DecisionNotNeeded);
    assert_eq!(
        r.decisions.contest(&"C1".into()).map(|c| c.notes.len()),
        before.contest(&"C1".into()).map(|c| c.notes.len())
    );

    r.decide(&decision(
        "D-1",
        DecisionKind::CutoffTie {
            round: 1,
            chosen: vec![cand("E")],
        },
    ))
    .unwrap();
    let c = &r.result().contests[0];
    assert_eq!(c.status, ContestStatus::AwaitingRound);
    let next = c.next_round.as_ref().unwrap();
    assert_eq!((next.round, next.kind), (2, RoundKind::Further));
    assert_eq!(next.candidates, vec![cand("B"), cand("C"), cand("E")]);
    assert!(
        !r.matters().iter().any(|m| m.kind == "cutoff-tie"),
        "decided, the tie no longer waits"
    );
    assert_eq!(c.decisions.len(), 1);
    assert!(
        c.decisions[0].what.contains('E'),
        "the chosen, by name: {:?}",
        c.decisions[0]
    );
    // The same id again is a replay.
    let again = r
        .decide(&decision(
            "D-1",
            DecisionKind::CutoffTie {
                round: 1,
                chosen: vec![cand("E")],
            },
        ))
        .unwrap_err();
    assert!(again.message.contains("recorded already"), "{again}");
}

// Goal: variant spellings of one written-in person are merged into one with their votes
// added; a name ruled invalid counts for no one; a name nobody wrote is refused.
// Method: 刘华 200, 刘桦 150, 某某 10 written in; merge 刘桦 into 刘华, rule 某某 invalid.
#[test]
fn write_ins_are_merged_and_ruled_invalid() {
    let mut r = Record::new(definition(
        &[ContestSpec::new("C1", 1, 2, 1000)],
        &[UnitSpec::new("U1", "station", &["C1"])],
        "",
    ));
    let mut s = sheet(&r.d, 1, &[("A", 100), ("B", 100)]);
    s.write_ins = vec![
        WriteIn {
            name: "刘华".into(),
            votes: 200,
        },
        WriteIn {
            name: "刘桦".into(),
            votes: 150,
        },
        WriteIn {
            name: "某某".into(),
            votes: 10,
        },
    ];
    r.submit(s, 1);
    let c = &r.result().contests[0];
    assert!(c.elected.is_empty(), "no one has a majority of 620 yet");
    assert!(
        r.matters()
            .iter()
            .any(|m| m.kind == "write-ins" && !m.blocking)
    );

    let refused = r
        .decide(&decision(
            "D-2",
            DecisionKind::WriteIns {
                merge: vec![Merge {
                    names: vec!["王五".into()],
                    into: Person::WriteIn("刘华".into()),
                }],
                invalid: vec![],
            },
        ))
        .unwrap_err();
    assert_eq!(refused.code, Code::DecisionNotNeeded);
    assert!(refused.message.contains("王五"), "{refused}");

    r.decide(&decision(
        "D-2",
        DecisionKind::WriteIns {
            merge: vec![Merge {
                names: vec!["刘桦".into()],
                into: Person::WriteIn("刘华".into()),
            }],
            invalid: vec!["某某".into()],
        },
    ))
    .unwrap();
    let c = &r.result().contests[0];
    let votes = &c.rounds[0].votes;
    assert_eq!(votes[0].person, Person::WriteIn("刘华".into()));
    assert_eq!(votes[0].votes, 350);
    assert!(
        !votes.iter().any(|v| v.name == "刘桦" || v.name == "某某"),
        "{votes:?}"
    );
    // 350 of 620 is a majority: 刘华 is elected once the spellings are one person.
    assert_eq!(c.elected[0].name, "刘华");
    assert!(!r.matters().iter().any(|m| m.kind == "write-ins"));
}

// Goal: a conflict blocks confirmation until decided; keeping the other sheet makes it count
// and leaves the first one recorded; a second decision on it is refused.
#[test]
fn a_conflict_is_decided_by_keeping_one_sheet() {
    let mut r = Record::new(single(3));
    r.submit(sheet(&r.d, 1, &CLEAR), 1);
    let mut other = sheet(&r.d, 1, &CLEAR);
    other.candidates[3].approvals = 330; // D above C: another outcome
    r.submit(other, 2);
    assert_eq!(r.ledger.conflicts().len(), 1);
    let blocking: Vec<_> = r.matters().into_iter().filter(|m| m.blocking).collect();
    assert_eq!(blocking.len(), 1, "{blocking:?}");
    assert_eq!(blocking[0].kind, "conflict");
    let elected = |r: &Record| -> Vec<String> {
        r.result().contests[0]
            .elected
            .iter()
            .map(|e| e.name.clone())
            .collect()
    };
    assert_eq!(elected(&r), ["A", "B", "C"]);

    let keep = |digest: u8| {
        decision(
            "D-3",
            DecisionKind::KeepSheet {
                unit: "U1".into(),
                round: 1,
                version: 1,
                sheet_digest: hex::encode([digest; 32]),
            },
        )
    };
    let refused = r.decide(&keep(9)).unwrap_err();
    assert_eq!(refused.code, Code::DecisionNotNeeded);
    r.decide(&keep(2)).unwrap();
    assert_eq!(elected(&r), ["A", "B", "D"]);
    assert_eq!(
        r.ledger.conflicts()[0].conflicting,
        [2; 32],
        "the ledger is not changed: both sheets stay recorded"
    );
    assert!(r.matters().iter().all(|m| m.kind != "conflict"));
    let mut again = keep(1);
    again.id = "D-4".into();
    assert_eq!(r.decide(&again).unwrap_err().code, Code::DecisionNotNeeded);
}

// Goal: the lock. A confirmed contest keeps the result its officials signed: a later version
// is recorded and listed as an after-lock arrival but not counted; decisions on it are
// refused (E407); a reopening needs a reason (E406), counts the late arrival, and the contest
// must be confirmed again; a confirmation of a changed result is stale (E408).
#[test]
fn a_confirmed_contest_is_locked_until_reopened() {
    let mut r = Record::new(single(3));
    r.submit(sheet(&r.d, 1, &CLEAR), 1);
    assert!(r.matters().iter().any(|m| m.kind == "ready"));
    let signed = r.confirmation("K-1");
    let confirmed_result = r.result().contests[0].clone();
    r.confirm(&signed).unwrap();
    assert!(r.decisions.locked(&"C1".into()));
    assert_eq!(
        r.confirm(&r.confirmation("K-2")).unwrap_err().code,
        Code::ContestLocked
    );

    let mut late = sheet(&r.d, 2, &CLEAR);
    late.candidates[3].approvals = 330;
    r.submit(late, 2);
    let c = r.result().contests[0].clone();
    assert_eq!(
        c.elected, confirmed_result.elected,
        "the lock holds the signed result"
    );
    assert_eq!(
        hex::encode(result_digest(&c)),
        signed.contests[0].result_digest
    );
    assert_eq!(c.after_lock, ["unit U1, contest C1, round 1, version 2"]);
    assert_eq!(c.confirmed.as_ref().unwrap().confirmation, "K-1");

    let refused = r
        .decide(&decision("D-5", DecisionKind::VoidRound { round: 1 }))
        .unwrap_err();
    assert_eq!(refused.code, Code::ContestLocked);

    let reopening = |reason: &str| Reopening {
        election: "test".into(),
        mode: Mode::Rehearsal,
        id: "R-1".into(),
        contest: "C1".into(),
        confirmation: "K-1".into(),
        reason: reason.into(),
    };
    assert_eq!(
        r.decisions.reopen(20, &reopening(" ")).unwrap_err().code,
        Code::ReopenWithoutReason
    );
    r.decisions
        .reopen(20, &reopening("第2版报告单更正了计票错误"))
        .unwrap();
    let c = r.result().contests[0].clone();
    let names: Vec<&str> = c.elected.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(
        names,
        ["A", "B", "D"],
        "the late version counts once reopened"
    );
    assert!(c.confirmed.is_none() && c.after_lock.is_empty());
    assert!(r.matters().iter().any(|m| m.kind == "ready"));
    // The old confirmation's result digest is no longer this result's.
    let mut stale = signed.clone();
    stale.id = "K-3".into();
    stale.log_index = r.index;
    stale.head = hex::encode([r.index as u8; 32]);
    assert_eq!(r.confirm(&stale).unwrap_err().code, Code::ConfirmationStale);
    // A head that is not the record's at that index is stale too.
    let mut wrong_head = r.confirmation("K-4");
    wrong_head.head = hex::encode([0xee; 32]);
    assert_eq!(
        r.confirm(&wrong_head).unwrap_err().code,
        Code::ConfirmationStale
    );
    r.confirm(&r.confirmation("K-5")).unwrap();
    let result = r.result();
    let kinds: Vec<&str> = result.contests[0]
        .decisions
        .iter()
        .map(|d| d.kind.as_str())
        .collect();
    assert_eq!(kinds, ["confirmation", "reopening", "confirmation"]);
}

// Goal: a contest with an open matter cannot be confirmed (E402), nor one still counting.
#[test]
fn open_matters_block_confirmation() {
    let mut r = Record::new(single(3));
    r.submit(sheet(&r.d, 1, &TIED), 1);
    let refused = r.confirm(&r.confirmation("K-1")).unwrap_err();
    assert_eq!(refused.code, Code::OpenMatters);
    assert!(
        refused.message.contains("cut-off") || refused.message.contains("further"),
        "{refused}"
    );

    let mut counting = Record::new(definition(
        &[ContestSpec::new("C1", 1, 2, 1000)],
        &[
            UnitSpec::new("U1", "station", &["C1"]),
            UnitSpec::new("U2", "station", &["C1"]),
        ],
        "",
    ));
    let s = clean_sheet(&counting.d, "U1", "C1");
    counting.submit(s, 1);
    let refused = counting.confirm(&counting.confirmation("K-1")).unwrap_err();
    assert_eq!(refused.code, Code::OpenMatters);
    assert!(refused.message.contains("still reporting"), "{refused}");
}

// Goal: a round declared void by the committee is held again, with the decision named.
#[test]
fn a_round_declared_void_is_held_again() {
    let mut r = Record::new(single(3));
    r.submit(sheet(&r.d, 1, &CLEAR), 1);
    assert_eq!(
        r.decide(&decision("D-6", DecisionKind::VoidRound { round: 2 }))
            .unwrap_err()
            .code,
        Code::DecisionNotNeeded
    );
    r.decide(&decision("D-6", DecisionKind::VoidRound { round: 1 }))
        .unwrap();
    let c = &r.result().contests[0];
    assert_eq!(
        c.rounds[0].status,
        crate::results::RoundStatus::VoidByCommittee {
            decision: "D-6".into()
        }
    );
    assert!(c.elected.is_empty());
    let next = c.next_round.as_ref().unwrap();
    assert_eq!((next.round, next.kind), (2, RoundKind::Repeat));
}

// Goal: an act body of each new kind survives the canonical encoding (what officials sign).
#[test]
fn decision_acts_round_trip_in_the_canonical_encoding() {
    let bodies = [
        crate::act::ActBody::Decision(Box::new(decision(
            "D-7",
            DecisionKind::WriteIns {
                merge: vec![Merge {
                    names: vec!["刘桦".into()],
                    into: cand("A"),
                }],
                invalid: vec![],
            },
        ))),
        crate::act::ActBody::Reopening(Reopening {
            election: "test".into(),
            mode: Mode::Official,
            id: "R-1".into(),
            contest: "C1".into(),
            confirmation: "K-1".into(),
            reason: "复查".into(),
        }),
    ];
    for body in bodies {
        let bytes = body.encode();
        assert_eq!(crate::act::ActBody::decode(&bytes).unwrap(), body);
    }
}

// Goal: a recount. A conflict is settled by ordering a recount (the conflict no longer waits,
// the recount does, blocking confirmation); a recounted sheet that fails its checks is E405;
// without an order it is E401; entered, it counts in place of the unit's sheet, the ledger
// keeps both, and the decision keeps the original figures for the corrigendum.
#[test]
fn a_recount_is_ordered_entered_and_counts() {
    let mut r = Record::new(single(3));
    r.submit(sheet(&r.d, 1, &CLEAR), 1);
    let mut other = sheet(&r.d, 1, &CLEAR);
    other.candidates[3].approvals = 330;
    r.submit(other, 2);
    let mut recounted = sheet(&r.d, 1, &CLEAR);
    recounted.candidates[2].approvals = 100; // C falls, D passes: D is elected instead
    recounted.candidates[3].approvals = 330;
    let enter = |id: &str, sheet: TallySheet| decision(id, DecisionKind::Recount { sheet });

    let refused = r.decide(&enter("D-1", recounted.clone())).unwrap_err();
    assert_eq!(refused.code, Code::DecisionNotNeeded);
    assert!(refused.message.contains("order-recount"), "{refused}");

    r.decide(&decision(
        "D-2",
        DecisionKind::OrderRecount {
            unit: "U1".into(),
            round: 1,
        },
    ))
    .unwrap();
    let kinds: Vec<&str> = r
        .matters()
        .iter()
        .filter(|m| m.blocking)
        .map(|m| m.kind)
        .collect();
    assert_eq!(
        kinds,
        ["recount"],
        "the ordered recount waits, the conflict no longer"
    );

    let mut wrong = recounted.clone();
    wrong.ballots_valid += 1; // void + valid no longer equal collected
    let refused = r.decide(&enter("D-3", wrong)).unwrap_err();
    assert_eq!(refused.code, Code::RecountSheetInvalid);
    assert!(refused.message.contains("E101"), "{refused}");

    r.decide(&enter("D-4", recounted.clone())).unwrap();
    let c = &r.result().contests[0];
    let names: Vec<&str> = c.elected.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["A", "B", "D"]);
    assert_eq!(r.ledger.counted().count(), 1);
    assert_eq!(
        r.ledger.conflicts().len(),
        1,
        "both unit sheets stay recorded"
    );
    let done = &r.decisions.contest(&"C1".into()).unwrap().recounted;
    let entered = done.values().next().unwrap();
    assert_eq!(entered.sheet, recounted);
    assert_eq!(
        entered.original.as_ref().unwrap().candidates[2].approvals,
        320,
        "the original figures, for the corrigendum"
    );
    assert!(r.matters().iter().all(|m| !m.blocking));
}
