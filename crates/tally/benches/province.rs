//! The province benchmark of issue 2: a synthetic province of about 100,000 polling units and
//! 200,000 signed sheets, on this machine.
//!
//! It prints, as a table for the closing note:
//! - ed25519-dalek's own batch verification rate over the same signatures, chunked the same
//!   way and spread over all cores with rayon: the ceiling;
//! - tally's `verify_batch` rate (key lookup, batch equation, decode, digest) and its ratio to
//!   that ceiling (target: at least 80%);
//! - the full offline intake (verify, validate, record exactly once);
//! - the Election Law results over every contest (target: under one second);
//! - peak memory (VmHWM) after each stage.
//!
//! Run: `cargo bench -p tally --bench province` (add `-- --units N` for another size).
//! Timings are taken as the best of a few runs, because the machine is shared.

use std::time::{Duration, Instant};
use tally_evidence::intake::intake;
use tally_synth::{self as synth, GenParams};

fn peak_memory_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn best_of<T>(runs: usize, mut f: impl FnMut() -> T) -> (Duration, T) {
    let mut best = Duration::MAX;
    let mut last = None;
    for _ in 0..runs {
        // Drop the previous run's value first, so peak memory is that of one run.
        drop(last.take());
        let started = Instant::now();
        let value = f();
        best = best.min(started.elapsed());
        last = Some(value);
    }
    // `runs` is at least 1, so a value was produced.
    (best, last.expect("at least one run"))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let target_units: u64 = args
        .iter()
        .position(|a| a == "--units")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    // About 1.3 units per township constituency of ~1,100 voters at 160 voters per station
    // gives ~8 units per constituency; scale the population to reach the target.
    let params = GenParams {
        seed: 7,
        county_name: "合成省".into(),
        townships: (target_units / 333).clamp(1, 1_000) as usize,
        population: target_units * 200,
        voters_per_station: 160,
        scenarios: false,
    };
    let threads = rayon::current_num_threads();
    println!("province benchmark: {threads} threads");

    let started = Instant::now();
    let generated = synth::generate(&params).expect("the benchmark parameters are valid");
    // The same loader `tally` runs on the files, handed the generated text directly.
    let definition = synth::definition(&generated).expect("the generated definition is valid");
    let signed = synth::sign_all(&generated);
    println!(
        "generated and signed: {} units, {} contests, {} sheets in {:.1} s (peak {:.0} MiB)",
        definition.units.len(),
        definition.contests.len(),
        signed.len(),
        started.elapsed().as_secs_f64(),
        peak_memory_mib()
    );
    drop(generated);

    // The ceiling: ed25519-dalek's batch verification of the same messages, chunked the same.
    let prepared: Vec<(
        Vec<u8>,
        ed25519_dalek::Signature,
        ed25519_dalek::VerifyingKey,
    )> = signed
        .iter()
        .map(|s| {
            let unit = definition
                .unit_by_key(&s.key_id)
                .expect("every key is registered");
            (
                tally_proto::signing_message(
                    &definition.election.id,
                    definition.election.mode,
                    &s.key_id,
                    &s.sheet,
                ),
                s.signature,
                unit.public_key,
            )
        })
        .collect();
    let (dalek_time, ()) = best_of(3, || {
        use rayon::prelude::*;
        prepared
            .par_chunks(tally_proto::VERIFY_BATCH_CHUNK)
            .for_each(|chunk| {
                let messages: Vec<&[u8]> = chunk.iter().map(|(m, _, _)| m.as_slice()).collect();
                let signatures: Vec<_> = chunk.iter().map(|(_, s, _)| *s).collect();
                let keys: Vec<_> = chunk.iter().map(|(_, _, k)| *k).collect();
                ed25519_dalek::verify_batch(&messages, &signatures, &keys)
                    .expect("every generated signature is valid");
            });
    });
    drop(prepared);
    let dalek_rate = signed.len() as f64 / dalek_time.as_secs_f64();

    let (ours_time, verified) = best_of(3, || tally_proto::verify_batch(&definition, &signed));
    assert!(
        verified.iter().all(Result::is_ok),
        "every generated sheet verifies"
    );
    drop(verified);
    let ours_rate = signed.len() as f64 / ours_time.as_secs_f64();
    let after_verify_mib = peak_memory_mib();

    let bundles = vec![(std::path::PathBuf::from("province.sheets"), signed)];
    let (intake_time, intake) = best_of(2, || intake(&definition, &bundles));
    assert_eq!(intake.refused.len(), 0, "no generated sheet is refused");
    let after_intake_mib = peak_memory_mib();

    let (results_time, result) = best_of(5, || {
        tally_core::results::compute(&definition, &intake.ledger)
    });
    let decided = result.county.all.contests_decided;

    println!();
    println!("| figure | value |");
    println!("|---|---|");
    println!("| sheets | {} |", intake.accepted);
    println!(
        "| ed25519-dalek verify_batch, chunks of {}, {threads} threads | {:.0} sheets/s |",
        tally_proto::VERIFY_BATCH_CHUNK,
        dalek_rate
    );
    println!("| tally verify_batch (lookup, verify, decode, digest) | {ours_rate:.0} sheets/s |");
    println!(
        "| ratio to ed25519-dalek | {:.1}% (target >= 80%) |",
        100.0 * ours_rate / dalek_rate
    );
    println!(
        "| full intake (verify, validate, record) | {:.2} s, {:.0} sheets/s |",
        intake_time.as_secs_f64(),
        intake.accepted as f64 / intake_time.as_secs_f64()
    );
    println!(
        "| results over {} contests ({} decided) | {:.0} ms (target < 1000 ms) |",
        result.contests.len(),
        decided,
        results_time.as_secs_f64() * 1000.0
    );
    println!("| peak memory after verify | {after_verify_mib:.0} MiB |");
    println!("| peak memory after intake | {after_intake_mib:.0} MiB |");
    println!("| peak memory at the end | {:.0} MiB |", peak_memory_mib());
}
