use super::*;
use crate::definition::load;

/// Test keys only: 32 bytes of `n`.
fn key(n: u8) -> SigningKey {
    SigningKey::from_bytes(&[n; 32])
}

fn public(n: u8) -> String {
    hex::encode(key(n).verifying_key().as_bytes())
}

/// Township T1 with two contests (T1-C1, 2 seats, candidates A, B, C, F; T1-C2, 1 seat, D and E), units U1 and U2
/// (keys 1 and 2), and a committee of three officials (keys 101..103), two of whom must sign.
fn definition() -> Definition {
    load("am.toml", &definition_text(), &mut |p| {
        Err(format!("no {p}"))
    })
    .expect("the fixture loads")
}

fn definition_text() -> String {
    format!(
        r#"
[election]
id = "AM-2026"
name = "测试"

[committee]
threshold = 2
officials = [
  {{ id = "O1", name = "主任", public_key = "{o1}" }},
  {{ id = "O2", name = "副主任", public_key = "{o2}" }},
  {{ id = "O3", name = "委员", public_key = "{o3}" }},
]

[county]
id = "C"
name = "县"
population = 1000
seats = 30

[[townships]]
id = "T1"
name = "一乡"
population = 1000
seats = 20

[[contests]]
id = "T1-C1"
name = "第一选区"
level = "township"
township = "T1"
seats = 2
registered_voters = 900
candidates = [{{ id = "A", name = "甲" }}, {{ id = "B", name = "乙" }}, {{ id = "C", name = "丙" }}, {{ id = "F", name = "己" }}]

[[contests]]
id = "T1-C2"
name = "第二选区"
level = "township"
township = "T1"
seats = 1
registered_voters = 800
candidates = [{{ id = "D", name = "丁" }}, {{ id = "E", name = "戊" }}]

[[units]]
id = "U1"
name = "站一"
kind = "station"
township = "T1"
contests = ["T1-C1"]
public_key = "{u1}"

[[units]]
id = "U2"
name = "站二"
kind = "station"
township = "T1"
contests = ["T1-C2"]
public_key = "{u2}"
"#,
        o1 = public(101),
        o2 = public(102),
        o3 = public(103),
        u1 = public(1),
        u2 = public(2),
    )
}

fn amendment(id: &str, changes: Vec<Change>) -> Amendment {
    Amendment {
        election: "AM-2026".into(),
        mode: Mode::Rehearsal,
        id: id.into(),
        reason: "设备损坏".into(),
        changes,
    }
}

fn signed(body: &ActBody, officials: &[(&str, u8)]) -> SignedAct {
    let bytes = body.encode();
    SignedAct {
        signatures: officials
            .iter()
            .map(|(id, n)| sign(&bytes, id, &key(*n)))
            .collect(),
        body: bytes,
    }
}

fn problems(e: Error) -> Vec<String> {
    match e {
        Error::Definition(p) => p
            .iter()
            .map(|p| format!("{}: {}", p.field, p.message))
            .collect(),
        other => panic!("not a definition problem: {other}"),
    }
}

fn never_polled(_: &ContestId) -> bool {
    false
}

// Goal: an act counts only with k valid signatures by distinct officials of the committee,
// over the very bytes signed, for this election and mode.
// Method: the fixture's committee asks for 2 of 3; check acts signed by 2 (passes), 1, one
// official twice, an outsider, a changed body, and another election; each problem is named.
#[test]
fn an_act_needs_k_valid_signatures_of_distinct_officials() {
    let d = definition();
    let body = ActBody::Amendment(amendment("A-1", vec![]));
    let (_, signers) = check(&d, &signed(&body, &[("O1", 101), ("O3", 103)])).unwrap();
    assert_eq!(signers, ["O1", "O3"]);

    let one = problems(check(&d, &signed(&body, &[("O1", 101)])).unwrap_err());
    assert!(
        one.iter()
            .any(|p| p.contains("1 valid signature(s) of the 2")),
        "{one:?}"
    );

    let twice = problems(check(&d, &signed(&body, &[("O1", 101), ("O1", 101)])).unwrap_err());
    assert!(
        twice.iter().any(|p| p.contains("official O1 signed twice")),
        "{twice:?}"
    );

    let outsider = problems(check(&d, &signed(&body, &[("O1", 101), ("X9", 109)])).unwrap_err());
    assert!(
        outsider
            .iter()
            .any(|p| p.contains("\"X9\", who is not an official")),
        "{outsider:?}"
    );

    let wrong_key = problems(check(&d, &signed(&body, &[("O1", 101), ("O2", 103)])).unwrap_err());
    assert!(
        wrong_key
            .iter()
            .any(|p| p.contains("O2's signature does not verify")),
        "{wrong_key:?}"
    );

    let mut changed = signed(&body, &[("O1", 101), ("O2", 102)]);
    changed.body = ActBody::Amendment(Amendment {
        reason: "另一个理由".into(),
        ..amendment("A-1", vec![])
    })
    .encode();
    let changed = problems(check(&d, &changed).unwrap_err());
    assert_eq!(
        changed
            .iter()
            .filter(|p| p.contains("does not verify"))
            .count(),
        2,
        "{changed:?}"
    );

    let other = ActBody::Amendment(Amendment {
        mode: Mode::Official,
        ..amendment("A-1", vec![])
    });
    let other = problems(check(&d, &signed(&other, &[("O1", 101), ("O2", 102)])).unwrap_err());
    assert!(
        other.iter().any(|p| p.contains(
            "is for election AM-2026 (official), but this is election AM-2026 (rehearsal)"
        )),
        "{other:?}"
    );
}

// Goal: one act has one encoding: bytes that are not the canonical form are refused.
// Method: pretty-print a canonical body and decode it.
#[test]
fn a_body_that_is_not_canonical_is_refused() {
    let body = ActBody::Amendment(amendment("A-1", vec![]));
    assert_eq!(ActBody::decode(&body.encode()).unwrap(), body);
    let value: serde_json::Value = serde_json::from_slice(&body.encode()).unwrap();
    let pretty = serde_json::to_vec_pretty(&value).unwrap();
    assert!(ActBody::decode(&pretty).unwrap_err().contains("canonical"));
}

// Goal: each kind of change does what it says, and the amended definition says which
// amendments it reflects; a replaced key is retired from the amendment's log index on.
// Method: apply the four kinds in two amendments and look the result up by key and id.
#[test]
fn each_change_applies_and_is_noted() {
    let d = definition();
    let old_key = d.unit(&UnitId::new("U1")).unwrap().key_id;
    let first = amend(
        &d,
        &amendment(
            "A-1",
            vec![
                Change::ReplaceKey {
                    unit: UnitId::new("U1"),
                    public_key: public(11),
                },
                Change::AddUnit {
                    id: UnitId::new("M1"),
                    name: "流动票箱一".into(),
                    kind: UnitKind::MobileBox,
                    township: TownshipId::new("T1"),
                    contests: vec![ContestId::new("T1-C1"), ContestId::new("T1-C2")],
                    public_key: public(12),
                },
            ],
        ),
        7,
        &never_polled,
    )
    .unwrap();
    let u1 = first.unit(&UnitId::new("U1")).unwrap();
    assert_eq!(u1.key_id, KeyId::of(&key(11).verifying_key()));
    assert!(first.unit_by_key(&old_key).is_none());
    let retired = first.retired_key(&old_key).unwrap();
    assert_eq!(
        (
            retired.unit.as_str(),
            retired.amendment.as_str(),
            retired.log_index
        ),
        ("U1", "A-1", 7)
    );
    assert_eq!(first.units_serving_count(&ContestId::new("T1-C2")), 2);
    assert_eq!(
        first
            .unit_by_key(&KeyId::of(&key(12).verifying_key()))
            .unwrap()
            .id
            .as_str(),
        "M1"
    );

    let second = amend(
        &first,
        &amendment(
            "A-2",
            vec![
                Change::RegisteredVoters {
                    contest: ContestId::new("T1-C2"),
                    registered_voters: 812,
                },
                Change::WithdrawCandidate {
                    contest: ContestId::new("T1-C1"),
                    candidate: CandidateId::new("C"),
                },
            ],
        ),
        9,
        &never_polled,
    )
    .unwrap();
    assert_eq!(
        second
            .contest(&ContestId::new("T1-C2"))
            .unwrap()
            .registered_voters,
        812
    );
    let c1: Vec<_> = second
        .contest(&ContestId::new("T1-C1"))
        .unwrap()
        .candidates
        .iter()
        .map(|c| c.id.as_str())
        .collect();
    assert_eq!(c1, ["A", "B", "F"]);
    let notes: Vec<(&str, u64)> = second
        .amended
        .amendments
        .iter()
        .map(|a| (a.id.as_str(), a.log_index))
        .collect();
    assert_eq!(notes, [("A-1", 7), ("A-2", 9)]);
    assert!(
        second.amended.amendments[1].changes[0].contains("registered voters 800 corrected to 812")
    );
    // The retired key stays retired through later amendments.
    assert!(second.retired_key(&old_key).is_some());
}

// Goal: a bad amendment names every problem at once and changes nothing: a replayed id, an
// unknown unit, a key already in use (a unit's, an official's, a replaced one), a withdrawal
// after polling, no reason.
// Method: apply A-1 (replacing U1's key), then one amendment with all these faults.
#[test]
fn a_bad_amendment_names_every_problem() {
    let d = definition();
    let first = amend(
        &d,
        &amendment(
            "A-1",
            vec![Change::ReplaceKey {
                unit: UnitId::new("U1"),
                public_key: public(11),
            }],
        ),
        5,
        &never_polled,
    )
    .unwrap();
    let bad = Amendment {
        reason: " ".into(),
        ..amendment(
            "A-1",
            vec![
                Change::ReplaceKey {
                    unit: UnitId::new("U9"),
                    public_key: public(21),
                },
                Change::ReplaceKey {
                    unit: UnitId::new("U2"),
                    public_key: public(1),
                },
                Change::ReplaceKey {
                    unit: UnitId::new("U2"),
                    public_key: public(102),
                },
                Change::ReplaceKey {
                    unit: UnitId::new("U2"),
                    public_key: public(2),
                },
                Change::WithdrawCandidate {
                    contest: ContestId::new("T1-C1"),
                    candidate: CandidateId::new("A"),
                },
            ],
        )
    };
    let polled = |c: &ContestId| c.as_str() == "T1-C1";
    let found = problems(amend(&first, &bad, 8, &polled).unwrap_err());
    for expected in [
        "id: amendment A-1 is already in force (log index 5)",
        "reason: is empty",
        "unit: no polling unit U9",
        "candidate: polling has begun in contest T1-C1",
    ] {
        assert!(
            found.iter().any(|p| p.starts_with(expected)),
            "{expected:?} not in {found:?}"
        );
    }
    // U1's replaced key (1), an official's (102), U2's own (2).
    assert_eq!(
        found
            .iter()
            .filter(|p| p.contains("is already in use"))
            .count(),
        3,
        "{found:?}"
    );
}

// Goal: the amended definition is checked as a file is: what the loader refuses (a unit with
// no contest; a withdrawal that leaves fewer candidates than Art 31 asks for) is refused,
// naming the amendment, every problem at once.
// Method: one amendment that adds a unit serving nothing and withdraws one of T1-C2's two
// candidates (1 seat).
#[test]
fn the_amended_definition_is_checked_as_a_file() {
    let d = definition();
    let bad = amendment(
        "A-3",
        vec![
            Change::WithdrawCandidate {
                contest: ContestId::new("T1-C2"),
                candidate: CandidateId::new("E"),
            },
            Change::AddUnit {
                id: UnitId::new("M2"),
                name: "流动票箱二".into(),
                kind: UnitKind::MobileBox,
                township: TownshipId::new("T1"),
                contests: vec![],
                public_key: public(31),
            },
        ],
    );
    let e = amend(&d, &bad, 4, &never_polled).unwrap_err();
    let Error::Definition(found) = e else {
        panic!()
    };
    assert!(
        found
            .iter()
            .all(|p| p.file == "the definition as amended by A-3"),
        "{found:?}"
    );
    let messages: Vec<&str> = found.iter().map(|p| p.message.as_str()).collect();
    assert!(
        messages.iter().any(|m| m.contains("Art 31")),
        "{messages:?}"
    );
    assert_eq!(found.len(), 2, "{messages:?}");
}

// Goal: the record takes the zero report only as the definition in force has it at zero,
// before the first sheet, once; the report lists every contest at zero.
// Method: check the report of the fixture, of an amended definition against the original,
// after sheets, and a second time.
#[test]
fn the_zero_report_is_of_the_definition_in_force_before_any_sheet() {
    let d = definition();
    let report = zero_report(&d);
    assert_eq!(report.contests, 2);
    let contests = zero_contests(&d);
    assert!(contests.iter().all(|c| c.units_reported == 0
        && c.ballots_collected == 0
        && c.candidates.iter().all(|x| x.votes == 0)));
    assert!(check_zero_report(&d, &report, false, None).is_ok());
    let amended = amend(
        &d,
        &amendment(
            "A-1",
            vec![Change::RegisteredVoters {
                contest: ContestId::new("T1-C2"),
                registered_voters: 801,
            }],
        ),
        3,
        &never_polled,
    )
    .unwrap();
    let stale = problems(check_zero_report(&amended, &report, false, None).unwrap_err());
    assert!(stale[0].starts_with("definition_digest: is "), "{stale:?}");
    let late = problems(check_zero_report(&d, &report, true, Some(4)).unwrap_err());
    assert!(
        late.iter()
            .any(|p| p.contains("already recorded (log index 4)")),
        "{late:?}"
    );
    assert!(
        late.iter().any(|p| p.contains("before the first sheet")),
        "{late:?}"
    );
    let mut forged = report.clone();
    forged.contests = 1;
    let forged = problems(check_zero_report(&d, &forged, false, None).unwrap_err());
    assert!(forged[0].starts_with("report_digest: "), "{forged:?}");
}

/// The fixture with township T1's own committee (officials T1-O1..T1-O3, keys 111..113, two
/// of whom sign), and `extra` TOML after it.
fn with_township_committee(extra: &str) -> Result<Definition, Error> {
    let text = format!(
        "{}\n[[township_committees]]\ntownship = \"T1\"\nthreshold = 2\nofficials = [\n  {{ id = \"T1-O1\", name = \"主任\", public_key = \"{}\" }},\n  {{ id = \"T1-O2\", name = \"委员\", public_key = \"{}\" }},\n  {{ id = \"T1-O3\", name = \"委员\", public_key = \"{}\" }},\n]\n{extra}",
        definition_text(),
        public(111),
        public(112),
        public(113),
    );
    load("am.toml", &text, &mut |p| Err(format!("no {p}")))
}

// Goal: a township's own committee decides on its township-level contests: its officials'
// signatures count there, the county committee's are refused as another committee's (E404),
// too few are E403; the county committee still signs amendments. The loader refuses a
// committee of an unknown township, an official id or a key used twice.
#[test]
fn a_township_committee_signs_its_own_contests_acts() {
    let d = with_township_committee("").expect("the fixture with a township committee loads");
    assert_eq!(d.township_committees.len(), 1);
    let decision = ActBody::Decision(Box::new(crate::committee::Decision {
        election: "AM-2026".into(),
        mode: Mode::Rehearsal,
        id: "D-1".into(),
        contest: "T1-C1".into(),
        reason: "审查".into(),
        decide: crate::committee::DecisionKind::VoidRound { round: 1 },
    }));
    let (_, signers) = check(&d, &signed(&decision, &[("T1-O1", 111), ("T1-O3", 113)]))
        .expect("two of the township's officials sign its contest's decision");
    assert_eq!(signers, ["T1-O1", "T1-O3"]);

    let county = problems(check(&d, &signed(&decision, &[("O1", 101), ("O2", 102)])).unwrap_err());
    assert!(
        county
            .iter()
            .any(|p| p.contains("E404") && p.contains("O1") && p.contains("township T1")),
        "{county:?}"
    );
    let few = problems(check(&d, &signed(&decision, &[("T1-O2", 112)])).unwrap_err());
    assert!(few.iter().any(|p| p.contains("E403")), "{few:?}");

    let change = ActBody::Amendment(amendment(
        "A-1",
        vec![Change::RegisteredVoters {
            contest: "T1-C1".into(),
            registered_voters: 901,
        }],
    ));
    assert!(check(&d, &signed(&change, &[("O1", 101), ("O2", 102)])).is_ok());
    let township =
        problems(check(&d, &signed(&change, &[("T1-O1", 111), ("T1-O2", 112)])).unwrap_err());
    assert!(township.iter().any(|p| p.contains("E404")), "{township:?}");

    // The loader: an unknown township, an id and a key of another committee's official.
    let bad = format!(
        "\n[[township_committees]]\ntownship = \"T9\"\nthreshold = 1\nofficials = [{{ id = \"O1\", name = \"重\", public_key = \"{}\" }}, {{ id = \"T9-O2\", name = \"重\", public_key = \"{}\" }}]\n",
        public(120),
        public(111),
    );
    let found = problems(with_township_committee(&bad).unwrap_err());
    for expected in [
        "township T9 is not in the definition",
        "official O1 is named twice",
        "is also the key of official T1-O1",
    ] {
        assert!(
            found.iter().any(|p| p.contains(expected)),
            "{expected:?} in {found:?}"
        );
    }
}
