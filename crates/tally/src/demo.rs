//! `tally demo`: the offline path end to end on the built-in sample county. Generates the
//! county, verifies and records every signed sheet, computes the result and the seats, and
//! says where everything is. The networked demo comes with the county and township services.

use crate::outcome::Outcome;
use crate::report::{self, Format};
use anyhow::Result;
use std::path::PathBuf;
use std::time::Instant;
use tally_evidence::intake::intake;
use tally_files::load_definition;
use tally_files::{read_bundles, write_generated};
use tally_synth::GenParams;

pub fn run(dir: Option<PathBuf>) -> Result<Outcome> {
    let dir = match dir {
        Some(d) => d,
        None => std::env::temp_dir().join(format!("tally-demo-{}", std::process::id())),
    };
    let county = dir.join("sample-county");
    crate::say!("tally demo: the offline path on the built-in sample county\n");

    let started = Instant::now();
    crate::say!(
        "1. Generating the sample county (definition, unit and township keys, signed sheets)"
    );
    crate::say!("   {}", write_generated(&GenParams::sample(), &county)?);

    crate::say!("2. Loading and checking the election definition");
    let definition_path = county.join("election.toml");
    let definition = load_definition(&definition_path)?;
    crate::say!(
        "   {}: {} townships, {} contests, {} polling units",
        definition.election.name,
        definition.townships.len(),
        definition.contests.len(),
        definition.units.len()
    );

    crate::say!("3. Verifying every signature and checking every sheet");
    let bundles = read_bundles(&[county.join("sheets.sheets")])?;
    let total: usize = bundles.iter().map(|(_, s)| s.len()).sum();
    let verify_started = Instant::now();
    let intake = intake(&definition, &bundles);
    crate::say!(
        "   {total} signed sheets in {} ms: {} accepted ({} of them corrections), {} refused, {} carry warnings",
        verify_started.elapsed().as_millis(),
        intake.accepted,
        intake.corrections,
        intake.refused.len(),
        intake.warnings.len()
    );

    crate::say!("4. Applying the Election Law\n");
    let result = tally_core::results::compute(&definition, &intake.ledger);
    crate::say_part!("{}", report::results_table(&definition, &intake, &result));

    crate::say!("\n5. Seats (Art 12) and the apportionment of county seats to townships\n");
    report::definition_seats(
        &definition,
        definition.rules.apportionment,
        definition.rules.apportionment_tie_rule,
        Format::Table,
    )?;

    crate::say!(
        "\nDone in {:.1} s. The files are in {}:",
        started.elapsed().as_secs_f64(),
        county.display()
    );
    crate::say!("  election.toml + *.csv   the election definition");
    crate::say!("  sheets.sheets           every signed sheet (a bundle)");
    crate::say!(
        "  SCENARIOS.md            the planted cases: void vote, tie, further election, vacancy, correction"
    );
    // The binary's own path, so the command works pasted as is even when `tally` is not
    // installed on the PATH (as after `cargo run`).
    let program =
        std::env::current_exe().map_or_else(|_| "tally".to_owned(), |p| p.display().to_string());
    crate::say!("Look again with:");
    crate::say!(
        "  {program} results --definition {} --sheets {}",
        definition_path.display(),
        county.join("sheets.sheets").display()
    );
    crate::say!("  {program} results ... --format csv     (or json)");
    Ok(Outcome::Clean)
}
