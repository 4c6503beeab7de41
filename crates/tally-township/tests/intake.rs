//! A township aggregator taking sheets: real aggregators in this process, on 127.0.0.1 port 0
//! with mutual TLS, called with the certificates a polling unit, the township clerk and an
//! operator hold. No county runs here (its address refuses connections), so every stored
//! sheet stays in the outbox; tests/forwarding.rs drains it.
//!
//! Each test checks what a clerk or operator would: the outcome each sheet was answered with,
//! the picture (units reported, sheets stored, the outbox, warnings, refused), and what is in
//! the database after a restart.

mod common;

use common::*;
use tally_core::ids::UnitId;
use tally_core::sheet::TallySheet;
use tally_proto::SignedSheet;
use tally_rpc::pb;
use tally_rpc::pb::sheet_outcome::Kind;
use tally_township::OutboxSettings;
use tally_township::store::Store;
use tonic::Code;

const T01: &str = "T01";
const T02: &str = "T02";

/// Settings for a township whose county never answers: short pauses, so a test that ends
/// does not wait on them.
fn settings() -> OutboxSettings {
    OutboxSettings {
        retry_max: std::time::Duration::from_millis(300),
        ..OutboxSettings::default()
    }
}

/// A township aggregator for T01 forwarding to a county that is not there.
async fn start(env: &Env) -> TestTownship {
    env.start_township(T01, "127.0.0.1:0", &[unused_address()], settings())
        .await
}

/// The sheets of one unit of T01 (its first), with their envelopes.
fn unit_sheets(unit: &UnitId) -> Vec<(TallySheet, SignedSheet)> {
    sheets_of(T01)
        .into_iter()
        .filter(|(s, _)| s.unit == *unit)
        .collect()
}

fn envelopes(sheets: &[(TallySheet, SignedSheet)]) -> Vec<SignedSheet> {
    sheets.iter().map(|(_, s)| s.clone()).collect()
}

// Goal: a sheet the township acknowledged survives a crash of the aggregator: after the
// restart it is in the database, in the picture, still in the outbox (no county answered),
// and sending it again is answered DUPLICATE, not stored twice.
// Method: every unit of T01 submits its sheets with its own certificate; kill the aggregator
// (its runtime dropped, nothing shut down cleanly); open the database directly and check it
// holds exactly the acknowledged sheets; start the aggregator again on the same directory and
// check its picture; resend everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_sheets_survive_a_crash_and_resubmission_is_duplicate() {
    let env = Env::new();
    let township = start(&env).await;
    let mut acknowledged = Vec::new();
    for unit in units_of(T01) {
        let sheets = envelopes(&unit_sheets(&unit));
        let outcomes = submit(&mut env.village(&township.address, &unit), &sheets)
            .await
            .expect("a unit's own sheets are taken");
        assert_eq!(
            kinds(&outcomes),
            vec![Kind::Accepted; sheets.len()],
            "unit {unit}: {outcomes:?}"
        );
        for (sheet, outcome) in sheets.iter().zip(&outcomes) {
            assert_eq!(outcome.digest, hex::encode(sheet.digest()));
        }
        acknowledged.extend(sheets);
    }
    assert!(
        acknowledged.len() >= 10,
        "the fixture gives T01 enough sheets"
    );
    township.crash().await;

    // What is on disk, read by opening the database itself.
    {
        let (_store, loaded) = Store::open(&env.data_dir("township-T01"), &township_id())
            .expect("the database opens after a crash");
        let stored: Vec<[u8; 32]> = loaded.sheets.iter().map(|s| s.digest).collect();
        let expected: Vec<[u8; 32]> = acknowledged.iter().map(SignedSheet::digest).collect();
        assert_eq!(
            stored, expected,
            "every acknowledged sheet is stored, once, in arrival order"
        );
        for s in &loaded.sheets {
            assert_eq!(
                tally_proto::encode_signed(&s.signed),
                tally_proto::encode_signed(&acknowledged[s.record.seq as usize]),
                "the envelope is kept as signed"
            );
        }
        assert_eq!(
            loaded.outbox.len(),
            acknowledged.len(),
            "all wait for the county"
        );
    }

    let township = start(&env).await;
    let p = picture(&env, &township.address, &clerk(T01)).await;
    assert_eq!(p.township_id, T01);
    assert_eq!(p.sheets_stored, acknowledged.len() as u64);
    assert_eq!(p.units_reported, units_of(T01).len() as u64);
    assert_eq!(p.units_expected, units_of(T01).len() as u64);
    let outbox = p.outbox.expect("the picture has the outbox");
    assert_eq!(outbox.depth, acknowledged.len() as u64);
    assert!(!outbox.county_reachable);
    assert!(outbox.oldest_age_ms > 0);

    for unit in units_of(T01) {
        let sheets = envelopes(&unit_sheets(&unit));
        let outcomes = submit(&mut env.village(&township.address, &unit), &sheets)
            .await
            .expect("a resend is taken");
        assert_eq!(
            kinds(&outcomes),
            vec![Kind::Duplicate; sheets.len()],
            "unit {unit}"
        );
    }
    let p = picture(&env, &township.address, &operator()).await;
    assert_eq!(
        p.sheets_stored,
        acknowledged.len() as u64,
        "a resend stores nothing"
    );
    township.stop().await;
}

fn township_id() -> tally_core::ids::TownshipId {
    township(T01)
}

// Goal: a correction supersedes, an older version arriving late is stored but does not count,
// and a different sheet under a stored version is refused as a conflict, not stored, and
// flagged in the picture.
// Method: one unit sends version 2 of a sheet first (it counts), then version 1 (SUPERSEDED),
// then another version 2 with other numbers (CONFLICT); check the outcomes, the counted
// sheets, and the picture's refused list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn correction_late_version_and_conflict() {
    let env = Env::new();
    let township = start(&env).await;
    let (first, _) = sheets_of(T01)[0].clone();
    let unit = first.unit.clone();
    let mut client = env.village(&township.address, &unit);

    let mut correction = first.clone();
    correction.version = 2;
    correction.replaces_version = Some(1);
    let correction = sign(&correction);
    let v1 = sign(&first);
    let mut other = first.clone();
    other.version = 2;
    other.replaces_version = Some(1);
    other.count_closed_at.unix_seconds += 60;
    let other = sign(&other);

    let outcomes = submit(&mut client, std::slice::from_ref(&correction))
        .await
        .unwrap();
    assert_eq!(kinds(&outcomes), [Kind::Accepted]);
    let outcomes = submit(&mut client, std::slice::from_ref(&v1))
        .await
        .unwrap();
    assert_eq!(kinds(&outcomes), [Kind::Superseded], "{outcomes:?}");
    let outcomes = submit(&mut client, std::slice::from_ref(&other))
        .await
        .unwrap();
    assert_eq!(kinds(&outcomes), [Kind::Conflict], "{outcomes:?}");
    assert_eq!(outcomes[0].code, "conflict");
    assert!(
        outcomes[0].message.contains("not stored"),
        "{}",
        outcomes[0].message
    );

    let p = picture(&env, &township.address, &clerk(T01)).await;
    assert_eq!(p.sheets_stored, 2, "the conflicting sheet is not stored");
    assert_eq!(p.sheets_counted, 1, "one slot counts");
    assert_eq!(p.outbox.as_ref().unwrap().depth, 2);
    let note = p
        .refused
        .iter()
        .find(|n| n.code == "conflict")
        .expect("the conflict is in the picture's refused list");
    assert_eq!(note.digest, hex::encode(other.digest()));
    assert_eq!(note.refused_by, "township");
    assert_eq!(
        (note.unit_id.as_str(), note.version),
        (unit.as_str(), 2),
        "{note:?}"
    );
    // The provisional result counts version 2.
    let result: serde_json::Value = serde_json::from_str(&p.result_json).unwrap();
    assert_eq!(
        result["contests"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["contest"] == first.contest.as_str())
            .count(),
        1
    );
    township.stop().await;
}

// Goal: sheets that must not count are refused with their code and the clerk can see why:
// a tampered sheet (E204), a sheet of another unit sent with this unit's certificate (E205),
// a unit of another township imported by the clerk (E210), a sheet with a blocking error
// (E1xx); none is stored, each is in the picture's refused list.
// Method: send each through the call a real sender would use; check outcome, code and the
// message's advice, then the picture.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_name_the_sheet_and_what_to_do() {
    let env = Env::new();
    let township = start(&env).await;
    let t01 = sheets_of(T01);
    let (sheet_a, signed_a) = t01[0].clone();
    let (sheet_b, signed_b) = t01
        .iter()
        .find(|(s, _)| s.unit != sheet_a.unit)
        .cloned()
        .expect("T01 has two units");
    let mut a = env.village(&township.address, &sheet_a.unit);

    // Tampered after signing: one byte of the sheet changed.
    let mut tampered = signed_a.clone();
    let last = tampered.sheet.len() - 1;
    tampered.sheet[last] ^= 0x01;
    let outcomes = submit(&mut a, &[tampered.clone()]).await.unwrap();
    assert_eq!(kinds(&outcomes), [Kind::Refused]);
    assert_eq!(outcomes[0].code, "E204", "{outcomes:?}");
    assert!(
        outcomes[0].message.contains("sign the sheet again"),
        "{}",
        outcomes[0].message
    );

    // Unit B's sheet, properly signed by B, sent over unit A's connection.
    let outcomes = submit(&mut a, std::slice::from_ref(&signed_b))
        .await
        .unwrap();
    assert_eq!(kinds(&outcomes), [Kind::Refused]);
    assert_eq!(outcomes[0].code, "E205", "{outcomes:?}");
    let message = &outcomes[0].message;
    assert!(
        message.contains(&format!("polling unit {}'s", sheet_a.unit))
            && message.contains(&format!("is unit {}'s", sheet_b.unit)),
        "the message names the certificate's unit and the sheet's: {message}"
    );

    // The clerk imports a sheet of T02's unit at T01.
    let (_, signed_t02) = sheets_of(T02)[0].clone();
    let imported = env
        .township_client(&township.address, &clerk(T01))
        .import(pb::SubmitRequest {
            sheets: vec![signed_t02.to_pb()],
            source: "carried.sheets".into(),
        })
        .await
        .expect("the clerk may import")
        .into_inner()
        .outcomes;
    assert_eq!(kinds(&imported), [Kind::Refused]);
    assert_eq!(imported[0].code, "E210", "{imported:?}");
    assert!(
        imported[0].message.contains("township T02's aggregator"),
        "{}",
        imported[0].message
    );

    // A blocking error: more valid ballots than collected.
    let mut broken = sheet_a.clone();
    broken.ballots_valid = broken.ballots_collected + 1;
    let outcomes = submit(&mut a, &[sign(&broken)]).await.unwrap();
    assert_eq!(kinds(&outcomes), [Kind::Refused]);
    assert!(outcomes[0].code.starts_with("E1"), "{outcomes:?}");

    // The clerk's import of B's sheet is fine: Import takes any unit of the township.
    let imported = env
        .township_client(&township.address, &clerk(T01))
        .import(pb::SubmitRequest {
            sheets: vec![signed_b.to_pb()],
            source: "qr".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .outcomes;
    assert_eq!(kinds(&imported), [Kind::Accepted]);

    let p = picture(&env, &township.address, &clerk(T01)).await;
    assert_eq!(p.sheets_stored, 1, "only the imported sheet of B is stored");
    let codes: Vec<&str> = p.refused.iter().map(|n| n.code.as_str()).collect();
    assert_eq!(codes.len(), 4, "{codes:?}");
    assert!(codes.contains(&"E204") && codes.contains(&"E205") && codes.contains(&"E210"));
    assert_eq!(
        p.refused[codes.len() - 1].code,
        "E204",
        "newest first: the first refusal is last"
    );
    assert!(p.refused.iter().all(|n| n.refused_by == "township"));
    township.stop().await;
    let (_store, loaded) = Store::open(&env.data_dir("township-T01"), &township_id()).unwrap();
    assert_eq!(
        loaded.sheets.iter().map(|s| s.digest).collect::<Vec<_>>(),
        [signed_b.digest()]
    );
    assert!(loaded.sheets[0].record.source.contains("from qr"));
    assert_eq!(loaded.notes.len(), 4, "refusals are kept across restarts");
}

// Goal: who may call what. A polling unit of another township is turned away whole, naming
// both townships; a township certificate cannot submit as a unit, nor read another township's
// picture; a village cannot import or read the picture; an operator can read any.
// Method: call each with the wrong certificate and check the status code and message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_are_authorized_by_their_certificate() {
    let env = Env::new();
    let township = start(&env).await;
    let (sheet_t02, signed_t02) = sheets_of(T02)[0].clone();
    let (_, signed_t01) = sheets_of(T01)[0].clone();

    let status = submit(
        &mut env.village(&township.address, &sheet_t02.unit),
        std::slice::from_ref(&signed_t02),
    )
    .await
    .expect_err("a unit of T02 may not submit at T01");
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(
        status
            .message()
            .contains("of township T02, not of township T01"),
        "{}",
        status.message()
    );

    let status = env
        .township_client(&township.address, &clerk(T01))
        .submit(pb::SubmitRequest {
            sheets: vec![signed_t01.to_pb()],
            source: String::new(),
        })
        .await
        .expect_err("Submit is for polling units");
    assert_eq!(status.code(), Code::PermissionDenied);

    let status = env
        .township_client(&township.address, &clerk(T02))
        .picture(pb::PictureRequest {})
        .await
        .expect_err("T02's clerk may not read T01's picture");
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(
        status.message().contains("township T02's"),
        "{}",
        status.message()
    );

    let status = env
        .township_client(&township.address, &clerk(T02))
        .import(pb::SubmitRequest {
            sheets: vec![signed_t01.to_pb()],
            source: String::new(),
        })
        .await
        .expect_err("T02's clerk may not import at T01");
    assert_eq!(status.code(), Code::PermissionDenied);

    let unit = units_of(T01)[0].clone();
    let status = env
        .village(&township.address, &unit)
        .import(pb::SubmitRequest {
            sheets: vec![signed_t01.to_pb()],
            source: String::new(),
        })
        .await
        .expect_err("a unit may not import");
    assert_eq!(status.code(), Code::PermissionDenied);
    let status = env
        .village(&township.address, &unit)
        .picture(pb::PictureRequest {})
        .await
        .expect_err("a unit may not read the picture");
    assert_eq!(status.code(), Code::PermissionDenied);

    let status = submit(&mut env.village(&township.address, &unit), &[])
        .await
        .expect_err("an empty submit is refused");
    assert_eq!(status.code(), Code::InvalidArgument);

    let p = picture(&env, &township.address, &operator()).await;
    assert_eq!(
        p.sheets_stored, 0,
        "nothing was stored by any of these calls"
    );
    assert!(p.refused.is_empty(), "calls refused whole leave no notes");
    township.stop().await;
}

// Goal: a sheet with warnings (W3xx) is stored and counts, and the warnings travel with it:
// in the answer, in the picture's warnings list, and after a restart.
// Method: make a unit's sheet report more ballots issued than collected by a wide margin
// (W303), sign it with the unit's key, submit; restart; check the picture.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warnings_are_kept_with_the_sheet() {
    let env = Env::new();
    let township = start(&env).await;
    let definition = &fixture().definition;
    let warned = sheets_of(T01)
        .into_iter()
        .map(|(mut sheet, _)| {
            sheet.ballots_issued = (sheet.ballots_collected + sheet.ballots_collected / 10)
                .min(sheet.registered_voters);
            sheet
        })
        .find(|sheet| {
            let findings = tally_core::validate::check_sheet(definition, sheet);
            !findings.is_empty() && !tally_core::validate::has_errors(&findings)
        })
        .expect("a T01 sheet can be made to carry a warning only");
    let signed = sign(&warned);
    let outcomes = submit(
        &mut env.village(&township.address, &warned.unit),
        std::slice::from_ref(&signed),
    )
    .await
    .unwrap();
    assert_eq!(kinds(&outcomes), [Kind::Accepted]);
    assert!(
        outcomes[0].warnings.iter().any(|w| w.starts_with("W303")),
        "{outcomes:?}"
    );
    township.crash().await;

    let township = start(&env).await;
    let p = picture(&env, &township.address, &clerk(T01)).await;
    assert_eq!(p.sheets_stored, 1);
    assert_eq!(p.warnings.len(), 1, "{:?}", p.warnings);
    let note = &p.warnings[0];
    assert_eq!(note.digest, hex::encode(signed.digest()));
    assert_eq!(note.code, "W303");
    assert_eq!(note.messages, outcomes[0].warnings);
    assert!(note.refused_by.is_empty());
    assert!(p.refused.is_empty());
    township.stop().await;
}

// Goal: backpressure. When the outbox holds its capacity, Submit answers RESOURCE_EXHAUSTED
// and stores nothing of that submit; a submit that fits is taken; a resend of a stored sheet
// is still answered (DUPLICATE), since it adds nothing.
// Method: capacity 3, the county unreachable; submit 2, then 2 (refused whole: 4 > 3), then
// 1 (taken: 3), then 1 more (refused); check the picture after each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_outbox_refuses_with_resource_exhausted_and_stores_nothing() {
    let env = Env::new();
    let outbox = OutboxSettings {
        capacity: 3,
        ..settings()
    };
    let township = env
        .start_township(T01, "127.0.0.1:0", &[unused_address()], outbox)
        .await;
    // Four sheets, sent unit by unit (each with its own unit's certificate).
    let sheets: Vec<(TallySheet, SignedSheet)> = sheets_of(T01).into_iter().take(4).collect();
    let send = async |range: std::ops::Range<usize>| {
        let unit = sheets[range.start].0.unit.clone();
        let batch: Vec<SignedSheet> = sheets[range].iter().map(|(_, s)| s.clone()).collect();
        submit(&mut env.village(&township.address, &unit), &batch).await
    };
    let stored = async || {
        picture(&env, &township.address, &clerk(T01))
            .await
            .sheets_stored
    };
    // Units send two sheets each: T01-U001 sheets 0 and 1, T01-U002 sheets 2 and 3.
    assert_eq!(sheets[0].0.unit, sheets[1].0.unit);
    assert_eq!(sheets[2].0.unit, sheets[3].0.unit);

    let outcomes = send(0..2).await.expect("2 of 3 fit");
    assert_eq!(kinds(&outcomes), [Kind::Accepted, Kind::Accepted]);
    let status = send(2..4).await.expect_err("2 more would make 4 of 3");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status
            .message()
            .contains("nothing of this submit was stored"),
        "{}",
        status.message()
    );
    assert_eq!(stored().await, 2, "the refused submit stored nothing");
    let outcomes = send(2..3).await.expect("1 more fits");
    assert_eq!(kinds(&outcomes), [Kind::Accepted]);
    let status = send(3..4).await.expect_err("the outbox is full");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(stored().await, 3);
    let p = picture(&env, &township.address, &clerk(T01)).await;
    let outbox = p.outbox.unwrap();
    assert_eq!(outbox.depth, 3);
    assert_eq!(outbox.capacity, 3);

    // A resend of a stored sheet adds nothing, so it is still answered.
    let (first_sheet, first_signed) = &sheets[0];
    let outcomes = submit(
        &mut env.village(&township.address, &first_sheet.unit),
        std::slice::from_ref(first_signed),
    )
    .await
    .expect("a duplicate fits in a full outbox");
    assert_eq!(kinds(&outcomes), [Kind::Duplicate]);
    township.stop().await;
}

// Goal: many polling units submitting at once are all stored, each once, through the group
// commit, and the picture agrees with what was sent.
// Method: every unit of T01 submits each of its sheets in its own call, all concurrently;
// then check each answer and the stored count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_submits_are_all_stored_once() {
    let env = Env::new();
    let township = start(&env).await;
    let sheets = sheets_of(T01);
    let mut calls = tokio::task::JoinSet::new();
    for (sheet, signed) in sheets.clone() {
        let mut client = env.village(&township.address, &sheet.unit);
        calls.spawn(async move {
            // Each sheet twice at once: one is stored, the other is its duplicate.
            let mut twin = client.clone();
            let (a, b) = tokio::join!(
                submit(&mut twin, std::slice::from_ref(&signed)),
                submit(&mut client, std::slice::from_ref(&signed))
            );
            let mut got = kinds(&a.unwrap());
            got.extend(kinds(&b.unwrap()));
            got.sort_by_key(|k| *k as i32);
            assert_eq!(got, [Kind::Accepted, Kind::Duplicate], "{}", sheet.label());
        });
    }
    while let Some(done) = calls.join_next().await {
        done.expect("a submitter finished");
    }
    let p = picture(&env, &township.address, &clerk(T01)).await;
    assert_eq!(p.sheets_stored, sheets.len() as u64);
    assert_eq!(p.outbox.unwrap().depth, sheets.len() as u64);
    township.stop().await;
}

// Goal: an aggregator refuses to start on what is not its own: a countersigning key other than
// the one the definition registers for its township, or the data directory of another
// township; each error says what is wrong.
// Method: start T01 once (making its data directory) and stop it; start T01 with T02's key;
// start T02 on T01's data directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_refuses_another_townships_key_or_data_directory() {
    let env = Env::new();
    start(&env).await.stop().await;
    let listener = || async { tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap() };
    let server_tls = |id: &str| {
        tally_net::TlsFiles::in_dir(&env.pki, &clerk(id))
            .server_tls()
            .unwrap()
            .0
    };

    let mut wrong_key = env.setup(T01, &[unused_address()], settings());
    wrong_key.countersign_key = fixture().township_keys[&township(T02)].clone();
    let error = tally_township::start(wrong_key, server_tls(T01), listener().await)
        .err()
        .expect("T02's key is refused for T01");
    assert!(
        error
            .to_string()
            .contains("not the key the election definition registers for township T01"),
        "{error}"
    );

    let mut wrong_dir = env.setup(T02, &[unused_address()], settings());
    wrong_dir.data_dir = env.data_dir("township-T01");
    let error = tally_township::start(wrong_dir, server_tls(T02), listener().await)
        .err()
        .expect("T01's data directory is refused for T02");
    assert!(
        error
            .to_string()
            .contains("belongs to township T01, not to township T02"),
        "{error}"
    );
}

// Goal: gRPC reflection lists what a township aggregator serves and nothing else (the
// descriptor set also holds the county's services), in both versions of the protocol, so
// grpcurl (v1) and Python's grpcio-reflection (v1alpha) both work.
// Method: ask the aggregator for its list of services over reflection v1 and v1alpha with a
// polling unit's certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_lists_only_the_township_services_in_both_versions() {
    use tally_rpc::reflection::{list_services_v1, list_services_v1alpha};
    let env = Env::new();
    let township = start(&env).await;
    let unit = units_of(T01)[0].clone();
    let village = tally_net::Identity::new(tally_net::Role::Village, unit.as_str()).unwrap();
    let served: std::collections::BTreeSet<String> = [
        "tally.v1.Township",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    ]
    .into_iter()
    .map(String::from)
    .collect();

    let names = list_services_v1(env.channel(&township.address, &village))
        .await
        .expect("reflection v1 answers");
    assert_eq!(names, served, "reflection v1");
    let names = list_services_v1alpha(env.channel(&township.address, &clerk(T01)))
        .await
        .expect("reflection v1alpha answers");
    assert_eq!(names, served, "reflection v1alpha");
    township.stop().await;
}

// Goal: one unit cannot flood the township's refused list: after unit A sends 16 calls of 64
// copies of one tampered envelope, unit B's real refusal and A's own conflict are still in
// the picture, A keeps only its newest refusals, and the picture says how many more A had
// ("… and 1,008 more refusals from A"); the same after a restart, from the database.
// Method: B sends a sheet with a blocking error, A a correction and a conflicting sheet, then
// A floods; read the picture; stop, start on the same data directory, read it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_unit_cannot_flood_the_refused_list() {
    use tally_township::store::UNIT_REFUSALS_KEPT_MAX;
    const CALLS: usize = 16;
    let env = Env::new();
    let township = start(&env).await;
    let t01 = sheets_of(T01);
    let (sheet_a, _) = t01[0].clone();
    let (sheet_b, _) = t01
        .iter()
        .find(|(s, _)| s.unit != sheet_a.unit)
        .cloned()
        .expect("T01 has two units");
    let mut a = env.village(&township.address, &sheet_a.unit);
    let mut b = env.village(&township.address, &sheet_b.unit);

    let mut broken = sheet_b.clone();
    broken.ballots_valid = broken.ballots_collected + 1;
    let broken = sign(&broken);
    let outcomes = submit(&mut b, std::slice::from_ref(&broken)).await.unwrap();
    assert_eq!(kinds(&outcomes), [Kind::Refused]);

    let mut correction = sheet_a.clone();
    correction.version = 2;
    correction.replaces_version = Some(1);
    let mut other = correction.clone();
    other.count_closed_at.unix_seconds += 60;
    let other = sign(&other);
    let outcomes = submit(&mut a, &[sign(&correction), other.clone()])
        .await
        .unwrap();
    assert_eq!(kinds(&outcomes), [Kind::Accepted, Kind::Conflict]);

    let mut tampered = sign(&sheet_a);
    let last = tampered.sheet.len() - 1;
    tampered.sheet[last] ^= 0x01;
    let flood = vec![tampered.clone(); tally_township::township::SUBMIT_SHEETS_MAX];
    for _ in 0..CALLS {
        let outcomes = submit(&mut a, &flood).await.unwrap();
        assert!(outcomes.iter().all(|o| o.code == "E204"), "{outcomes:?}");
    }
    let sent = (CALLS * flood.len()) as u64;

    let check = |p: &pb::PictureResponse, when: &str| {
        let ours = |n: &&pb::SheetNote| n.digest == hex::encode(tampered.digest());
        assert!(
            p.refused
                .iter()
                .any(|n| n.digest == hex::encode(broken.digest()) && n.code.starts_with("E1")),
            "{when}: B's refusal is still listed: {:?}",
            p.refused
        );
        assert!(
            p.refused
                .iter()
                .any(|n| n.digest == hex::encode(other.digest()) && n.code == "conflict"),
            "{when}: A's conflict is still listed"
        );
        assert_eq!(
            p.refused[0].code, "conflict",
            "{when}: conflicts are listed first"
        );
        assert_eq!(
            p.refused.iter().filter(ours).count(),
            UNIT_REFUSALS_KEPT_MAX,
            "{when}: A keeps its newest refusals"
        );
        assert_eq!(
            p.refused_not_listed,
            [pb::NotesNotListed {
                unit_id: sheet_a.unit.to_string(),
                refusals: sent - UNIT_REFUSALS_KEPT_MAX as u64,
                conflicts: 0,
            }],
            "{when}"
        );
    };
    check(
        &picture(&env, &township.address, &clerk(T01)).await,
        "running",
    );
    assert_eq!(sent - UNIT_REFUSALS_KEPT_MAX as u64, 1_008);
    township.stop().await;
    let township = start(&env).await;
    check(
        &picture(&env, &township.address, &clerk(T01)).await,
        "after a restart",
    );
    township.stop().await;
}
