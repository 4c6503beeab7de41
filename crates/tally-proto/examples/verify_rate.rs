//! Measures `verify_batch` against ed25519-dalek's own batch verification, both over chunks
//! of 64 on all cores. The target is at least 80% of dalek's rate.
//!
//!     cargo run --release -p tally-proto --example verify_rate [sheets]

use ed25519_dalek::SigningKey;
use rayon::prelude::*;
use std::time::Instant;
use tally_core::ids::{CandidateId, ContestId, UnitId};
use tally_core::sheet::{CandidateCount, CountClosedAt, Round, TallySheet, WriteIn};
use tally_proto::{VERIFY_BATCH_CHUNK, sign, signing_message, verify_batch};

const UNITS: u8 = 20;
const ROUNDS: usize = 10;

fn main() {
    let count: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse().expect("sheets is a number"))
        .unwrap_or(20_000);
    let def = definition();
    let signed: Vec<_> = (0..count)
        .map(|i| {
            let n = (i % usize::from(UNITS)) as u8 + 1;
            sign(
                &sheet(n, i),
                &SigningKey::from_bytes(&[n; 32]),
                &def.election,
            )
        })
        .collect();
    let keys: Vec<_> = signed
        .iter()
        .map(|s| def.unit_by_key(&s.key_id).expect("known key").public_key)
        .collect();
    let messages: Vec<Vec<u8>> = signed
        .iter()
        .map(|s| signing_message(&def.election.id, def.election.mode, &s.key_id, &s.sheet))
        .collect();
    let signatures: Vec<_> = signed.iter().map(|s| s.signature).collect();

    let mut dalek_best = f64::MAX;
    let mut ours_best = f64::MAX;
    for _ in 0..ROUNDS {
        let start = Instant::now();
        let ok = (0..count)
            .into_par_iter()
            .step_by(VERIFY_BATCH_CHUNK)
            .map(|at| {
                let end = (at + VERIFY_BATCH_CHUNK).min(count);
                let refs: Vec<&[u8]> = messages[at..end].iter().map(Vec::as_slice).collect();
                ed25519_dalek::verify_batch(&refs, &signatures[at..end], &keys[at..end]).is_ok()
            })
            .all(|ok| ok);
        assert!(ok);
        dalek_best = dalek_best.min(start.elapsed().as_secs_f64());

        let start = Instant::now();
        let results = verify_batch(&def, &signed);
        assert!(results.iter().all(Result::is_ok));
        ours_best = ours_best.min(start.elapsed().as_secs_f64());
    }
    let start = Instant::now();
    for s in &signed {
        std::hint::black_box(tally_proto::decode_sheet(&s.sheet).expect("decodes"));
    }
    let decode_each = start.elapsed().as_secs_f64() / count as f64;
    let start = Instant::now();
    for s in &signed {
        use sha2::Digest;
        std::hint::black_box(sha2::Sha256::digest(&s.sheet));
    }
    let digest_each = start.elapsed().as_secs_f64() / count as f64;
    println!(
        "one thread: decode {:.2} us/sheet, digest {:.2} us/sheet, sheet {} bytes",
        decode_each * 1e6,
        digest_each * 1e6,
        signed[0].sheet.len()
    );
    let dalek_rate = count as f64 / dalek_best;
    let ours_rate = count as f64 / ours_best;
    println!(
        "{count} sheets, {} threads, best of {ROUNDS}: ed25519-dalek batch {dalek_rate:.0}/s, verify_batch {ours_rate:.0}/s, ratio {:.2}",
        rayon::current_num_threads(),
        ours_rate / dalek_rate
    );
}

fn sheet(n: u8, i: usize) -> TallySheet {
    TallySheet {
        unit: UnitId::new(format!("T01-U{n:03}")),
        contest: ContestId::new("T01-C01"),
        round: Round::FIRST,
        version: (i % 1000) as u32 + 1,
        replaces_version: None,
        registered_voters: 1_000,
        ballots_issued: 800,
        ballots_collected: 798,
        ballots_void: 8,
        ballots_valid: 790,
        ballots_blank: 5,
        proxies: 3,
        candidates: vec![
            CandidateCount {
                candidate: CandidateId::new("K1"),
                approvals: 500,
                disapprovals: None,
                abstentions: None,
            },
            CandidateCount {
                candidate: CandidateId::new("K2"),
                approvals: 270,
                disapprovals: None,
                abstentions: None,
            },
        ],
        write_ins: vec![WriteIn {
            name: "张三".into(),
            votes: 10,
        }],
        scrutineers: vec!["李四".into(), "王五".into()],
        counters: vec!["赵六".into(), "钱七".into()],
        count_closed_at: CountClosedAt {
            unix_seconds: 1_795_861_800,
            utc_offset_minutes: 480,
        },
    }
}

fn definition() -> tally_core::definition::Definition {
    let mut toml = String::from(
        r#"
[election]
id = "bench"
name = "bench"
[county]
id = "C"
name = "county"
population = 1000
seats = 30
[[townships]]
id = "T01"
name = "township"
population = 1000
seats = 20
[[contests]]
id = "T01-C01"
name = "contest"
level = "township"
township = "T01"
seats = 1
registered_voters = 1000
candidates = [{ id = "K1", name = "a" }, { id = "K2", name = "b" }]
"#,
    );
    for n in 1..=UNITS {
        let public_key = hex::encode(SigningKey::from_bytes(&[n; 32]).verifying_key().as_bytes());
        toml.push_str(&format!(
            "[[units]]\nid = \"T01-U{n:03}\"\nname = \"unit {n}\"\nkind = \"station\"\ntownship = \"T01\"\ncontests = [\"T01-C01\"]\npublic_key = \"{public_key}\"\n"
        ));
    }
    tally_core::definition::load("bench.toml", &toml, &mut |path| Err(format!("no {path}")))
        .expect("the bench definition is valid")
}
