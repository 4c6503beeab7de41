//! What the command line prints: tables for people (Chinese names aligned), JSON for scripts,
//! CSV for spreadsheets. Output is deterministic: the same input always prints the same bytes.

use crate::outcome::Outcome;
use anyhow::{Context, Result, anyhow, bail};
use serde::Serialize;
use std::path::Path;
use tally_core::apportion::{self, Bounds, Method, Threshold, TieRule};
use tally_core::congress::{Level, congress_seats};
use tally_core::definition::Definition;
use tally_files::load_definition;
use tally_table::{Align, Table, percent, thousands};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
    Csv,
}

fn print_json<T: Serialize>(value: &T) -> Result<()> {
    crate::say!(
        "{}",
        serde_json::to_string_pretty(value).context("encoding JSON")?
    );
    Ok(())
}

pub struct SeatsArgs<'a> {
    pub definition: Option<&'a Path>,
    pub weights: Option<&'a Path>,
    pub total: Option<u32>,
    pub method: Option<&'a str>,
    pub min: u32,
    pub max: Option<u32>,
    pub threshold_percent: Option<u32>,
    /// `None`: the definition's recorded rule, or `report` without a definition.
    pub tie_rule: Option<&'a str>,
    pub format: Format,
}

fn parse_tie_rule(text: &str) -> Result<TieRule> {
    match text {
        "report" => Ok(TieRule::Report),
        "definition-order" => Ok(TieRule::DefinitionOrder),
        "larger-weight-first" => Ok(TieRule::LargerWeightFirst),
        other => {
            bail!("unknown tie rule {other:?}; use report, definition-order or larger-weight-first")
        }
    }
}

#[derive(Serialize)]
struct SeatRow {
    name: String,
    weight: u64,
    seats: u32,
    tied: bool,
}

#[derive(Serialize)]
struct SeatsReport {
    method: Method,
    seats: u32,
    rows: Vec<SeatRow>,
    tie: Option<apportion::Tie>,
    broken_ties: Vec<apportion::Tie>,
}

pub fn seats_command(args: SeatsArgs) -> Result<Outcome> {
    let tie_rule =
        |default: TieRule| -> Result<TieRule> { args.tie_rule.map_or(Ok(default), parse_tie_rule) };
    let method = |default: Method| -> Result<Method> {
        args.method
            .map(|m| m.parse::<Method>().map_err(|e| anyhow!("--method: {e}")))
            .unwrap_or(Ok(default))
    };
    if let Some(path) = args.definition {
        let definition = load_definition(path)?;
        let method = method(definition.rules.apportionment)?;
        let tie_rule = tie_rule(definition.rules.apportionment_tie_rule)?;
        return definition_seats(&definition, method, tie_rule, args.format);
    }
    let Some(weights_path) = args.weights else {
        bail!("give --definition FILE, or --weights FILE with --total N");
    };
    let total = args.total.context("--weights needs --total N")?;
    let method = method(Method::LargestRemainderHare)?;
    let tie_rule = tie_rule(TieRule::Report)?;
    let text = std::fs::read_to_string(weights_path)
        .with_context(|| format!("cannot read {}", weights_path.display()))?;
    let (names, weights) = parse_weights(weights_path, &text)?;
    let result = match args.threshold_percent {
        Some(percent) => apportion::allocate_lists(
            &weights,
            total,
            method,
            Some(Threshold {
                numerator: u64::from(percent),
                denominator: 100,
            }),
            tie_rule,
        ),
        None => {
            let bounds = vec![
                Bounds {
                    min: args.min,
                    max: args.max
                };
                weights.len()
            ];
            apportion::apportion(&apportion::Request {
                weights: &weights,
                seats: total,
                method,
                bounds: &bounds,
                tie_rule,
            })
        }
    }
    .with_context(|| format!("apportioning the rows of {}", weights_path.display()))?;
    let report = SeatsReport {
        method,
        seats: total,
        rows: names
            .into_iter()
            .zip(&weights)
            .enumerate()
            .map(|(i, (name, &weight))| SeatRow {
                name,
                weight,
                seats: result.seats[i],
                tied: result.tie.as_ref().is_some_and(|t| t.units.contains(&i)),
            })
            .collect(),
        tie: result.tie.clone(),
        broken_ties: result.broken_ties.clone(),
    };
    print_seats(&report, args.format)?;
    Ok(if report.tie.is_some() {
        Outcome::Findings
    } else {
        Outcome::Clean
    })
}

/// Reads `name,weight` rows (a spreadsheet's CSV export). Only the first row may be a header;
/// any other row whose weight is not a whole number is an error naming its line, never skipped.
fn parse_weights(path: &Path, text: &str) -> Result<(Vec<String>, Vec<u64>)> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::All)
        .comment(Some(b'#'))
        .from_reader(text.trim_start_matches('\u{feff}').as_bytes());
    let mut names = Vec::new();
    let mut weights = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let record = record.with_context(|| format!("{} is not readable CSV", path.display()))?;
        let line = record.position().map_or(i as u64 + 1, |p| p.line());
        if record.len() != 2 {
            bail!(
                "{}, line {line}: expected two fields, name and weight, found {}",
                path.display(),
                record.len()
            );
        }
        let weight_text = record[1].replace(['_'], "");
        match weight_text.parse::<u64>() {
            Ok(weight) => {
                names.push(record[0].to_owned());
                weights.push(weight);
            }
            // A header names its columns; a first row with digits in it is data gone wrong.
            Err(_) if i == 0 && !record[1].chars().any(|c| c.is_ascii_digit()) => {}
            Err(_) => bail!(
                "{}, line {line}: weight {:?} of {:?} is not a whole number; write digits only, without separators",
                path.display(),
                &record[1],
                &record[0]
            ),
        }
    }
    if names.is_empty() {
        bail!("{} has no name,weight rows", path.display());
    }
    Ok((names, weights))
}

fn print_seats(report: &SeatsReport, format: Format) -> Result<()> {
    let mut table = Table::new(&[
        ("name", Align::Left),
        ("weight", Align::Right),
        ("seats", Align::Right),
    ]);
    for row in &report.rows {
        table.row(vec![
            row.name.clone(),
            if format == Format::Csv {
                row.weight.to_string()
            } else {
                thousands(row.weight)
            },
            if row.tied {
                format!("{} + tie", row.seats)
            } else {
                row.seats.to_string()
            },
        ]);
    }
    match format {
        Format::Json => print_json(report),
        Format::Csv => {
            crate::say_part!("{}", table.to_csv());
            Ok(())
        }
        Format::Table => {
            crate::say!("{} seats by {}", report.seats, report.method);
            crate::say_part!("{}", table.render());
            for t in &report.broken_ties {
                crate::say!(
                    "tie for {} seat(s) among rows {:?} broken by the tie rule",
                    t.seats,
                    t.units
                );
            }
            if let Some(t) = &report.tie {
                let names: Vec<&str> = t
                    .units
                    .iter()
                    .map(|&i| report.rows[i].name.as_str())
                    .collect();
                crate::say!(
                    "TIE: {} seat(s) undecided between {}; the tie rule is `report`, so the committee decides (e.g. by drawing lots) and records the order",
                    t.seats,
                    names.join(", ")
                );
            }
            Ok(())
        }
    }
}

#[derive(Serialize)]
struct AreaSeats {
    id: String,
    name: String,
    level: Level,
    population: u64,
    /// Art 12's total, or the stated total for a small area.
    congress_seats: Option<u64>,
    /// Seats of this level's contests defined in the area.
    defined_seats: u64,
    /// County congress seats apportioned to this township by population (townships only).
    county_seats_apportioned: Option<u32>,
    /// County congress seats of the county contests defined in this township.
    county_seats_defined: u64,
    /// Contests whose defined seats differ from an apportionment of the area's seats among
    /// its contests by registered voters (1 to 3 seats each, Art 25), at either level.
    constituencies_differing: Vec<ConstituencyCheck>,
}

#[derive(Serialize)]
struct ConstituencyCheck {
    contest: String,
    name: String,
    registered_voters: u64,
    defined: u32,
    apportioned: Option<u32>,
}

/// Apportions the seats defined at one level in one township among its contests by their
/// registered voters (each deputy should represent about as many people, Art 15, 26) and
/// returns the contests where the definition differs, so an office can review its districting.
fn check_constituencies(
    definition: &Definition,
    township: &str,
    level: Level,
    method: Method,
    tie_rule: TieRule,
) -> Vec<ConstituencyCheck> {
    let contests: Vec<_> = definition
        .contests
        .iter()
        .filter(|c| c.level == level && c.township.as_str() == township)
        .collect();
    let seats: u32 = contests.iter().map(|c| c.seats).sum();
    let weights: Vec<u64> = contests.iter().map(|c| c.registered_voters).collect();
    let bounds = vec![
        Bounds {
            min: 1,
            max: Some(3)
        };
        contests.len()
    ];
    let apportioned = apportion::apportion(&apportion::Request {
        weights: &weights,
        seats,
        method,
        bounds: &bounds,
        tie_rule,
    })
    .ok();
    contests
        .iter()
        .enumerate()
        .filter_map(|(i, c)| {
            let got = apportioned.as_ref().and_then(|a| {
                let tied = a.tie.as_ref().is_some_and(|t| t.units.contains(&i));
                (!tied).then_some(a.seats[i])
            });
            (got != Some(c.seats)).then(|| ConstituencyCheck {
                contest: c.id.to_string(),
                name: c.name.clone(),
                registered_voters: c.registered_voters,
                defined: c.seats,
                apportioned: got,
            })
        })
        .collect()
}

#[derive(Serialize)]
struct DefinitionSeats {
    method: Method,
    county: AreaSeats,
    townships: Vec<AreaSeats>,
    tie: Option<apportion::Tie>,
}

/// Congress totals and apportionments of a loaded definition (`tally seats --definition`).
pub fn definition_seats(
    definition: &Definition,
    method: Method,
    tie_rule: TieRule,
    format: Format,
) -> Result<Outcome> {
    let county_total = definition
        .congress_seats(Level::County, &definition.county)
        .context("the county's congress total is not known")?;
    let populations: Vec<u64> = definition.townships.iter().map(|t| t.population).collect();
    // Every township, however small, gets at least one county deputy (rulebook, Seats).
    let bounds = vec![Bounds { min: 1, max: None }; populations.len()];
    let apportioned = apportion::apportion(&apportion::Request {
        weights: &populations,
        seats: u32::try_from(county_total).context("county total too large")?,
        method,
        bounds: &bounds,
        tie_rule,
    })
    .context("apportioning county seats to townships")?;
    let defined = |level: Level, township: Option<&str>| -> u64 {
        definition
            .contests
            .iter()
            .filter(|c| c.level == level && township.is_none_or(|t| c.township.as_str() == t))
            .map(|c| u64::from(c.seats))
            .sum()
    };
    let report = DefinitionSeats {
        method,
        county: AreaSeats {
            id: definition.county.id.to_string(),
            name: definition.county.name.clone(),
            level: Level::County,
            population: definition.county.population,
            congress_seats: Some(county_total),
            defined_seats: defined(Level::County, None),
            county_seats_apportioned: None,
            county_seats_defined: defined(Level::County, None),
            constituencies_differing: Vec::new(),
        },
        townships: definition
            .townships
            .iter()
            .enumerate()
            .map(|(i, t)| AreaSeats {
                id: t.id.to_string(),
                name: t.name.clone(),
                level: Level::Township,
                population: t.population,
                congress_seats: definition.congress_seats(Level::Township, t),
                defined_seats: defined(Level::Township, Some(t.id.as_str())),
                county_seats_apportioned: Some(apportioned.seats[i]),
                county_seats_defined: defined(Level::County, Some(t.id.as_str())),
                constituencies_differing: [Level::County, Level::Township]
                    .into_iter()
                    .flat_map(|level| {
                        check_constituencies(definition, t.id.as_str(), level, method, tie_rule)
                    })
                    .collect(),
            })
            .collect(),
        tie: apportioned.tie.clone(),
    };
    let mut table = Table::new(&[
        ("township", Align::Left),
        ("name", Align::Left),
        ("population", Align::Right),
        ("township congress (Art 12)", Align::Right),
        ("township seats defined", Align::Right),
        ("county seats apportioned", Align::Right),
        ("county seats defined", Align::Right),
        ("constituencies to review", Align::Right),
    ]);
    // Spreadsheets want plain numbers; people want thousands separators.
    let number = |n: u64| {
        if format == Format::Csv {
            n.to_string()
        } else {
            thousands(n)
        }
    };
    for t in &report.townships {
        table.row(vec![
            t.id.clone(),
            t.name.clone(),
            number(t.population),
            t.congress_seats.map_or("-".into(), |s| s.to_string()),
            t.defined_seats.to_string(),
            t.county_seats_apportioned
                .map_or("-".into(), |s| s.to_string()),
            t.county_seats_defined.to_string(),
            t.constituencies_differing.len().to_string(),
        ]);
    }
    match format {
        Format::Json => print_json(&report)?,
        Format::Csv => crate::say_part!("{}", table.to_csv()),
        Format::Table => {
            let working = congress_seats(
                Level::County,
                definition.county.population,
                definition.rules.law_revision,
                definition.rules.seat_rounding,
                definition.county.extra_seats,
            );
            crate::say!(
                "{} county congress: {} seats for {} people{}; {} seats defined in county contests",
                definition.county.name,
                county_total,
                thousands(definition.county.population),
                working
                    .map(|w| format!(
                        " (Art 12: {} + {}{}{})",
                        w.base,
                        w.added_for_population,
                        if w.capped { ", capped" } else { "" },
                        if w.extra > 0 {
                            format!(" + {} extra", w.extra)
                        } else {
                            String::new()
                        }
                    ))
                    .unwrap_or_default(),
                report.county.defined_seats
            );
            crate::say!("County seats apportioned to townships by {method}, at least one each:");
            crate::say_part!("{}", table.render());
            let township_total: u64 = report
                .townships
                .iter()
                .filter_map(|t| t.congress_seats)
                .sum();
            crate::say!(
                "Deputies across both congresses: {} county + {} township = {}",
                county_total,
                township_total,
                county_total + township_total
            );
            if let Some(t) = &report.tie {
                crate::say!(
                    "TIE: {} county seat(s) undecided between townships {:?}",
                    t.seats,
                    t.units
                );
            }
            let review: Vec<&ConstituencyCheck> = report
                .townships
                .iter()
                .flat_map(|t| &t.constituencies_differing)
                .collect();
            if !review.is_empty() {
                crate::say!(
                    "\nConstituencies whose seats differ from an apportionment by registered voters ({method}, 1 to 3 seats each); review the districting:"
                );
                let mut table = Table::new(&[
                    ("contest", Align::Left),
                    ("name", Align::Left),
                    ("registered voters", Align::Right),
                    ("defined", Align::Right),
                    ("apportioned", Align::Right),
                ]);
                for c in review {
                    table.row(vec![
                        c.contest.clone(),
                        c.name.clone(),
                        thousands(c.registered_voters),
                        c.defined.to_string(),
                        c.apportioned.map_or("tie".into(), |a| a.to_string()),
                    ]);
                }
                crate::say_part!("{}", table.render());
            }
        }
    }
    let mismatch = report
        .townships
        .iter()
        .any(|t| t.congress_seats.is_some_and(|s| s != t.defined_seats));
    if mismatch && format == Format::Table {
        crate::say!(
            "note: a township's contests do not add up to its Art 12 total; check the contests of the definition"
        );
    }
    Ok(if report.tie.is_some() || mismatch {
        Outcome::Findings
    } else {
        Outcome::Clean
    })
}

/// Sheets as the intake saw them.
pub fn print_intake(intake: &tally_evidence::intake::Intake, format: Format) -> Result<()> {
    match format {
        Format::Json => print_json(intake),
        Format::Csv | Format::Table => {
            let mut table = Table::new(&[
                ("source", Align::Left),
                ("sheet", Align::Left),
                ("code", Align::Left),
                ("problem", Align::Left),
            ]);
            for r in &intake.refused {
                table.row(vec![
                    r.source.clone(),
                    r.sheet.clone(),
                    r.code.clone(),
                    r.message.clone(),
                ]);
            }
            for w in &intake.warnings {
                table.row(vec![
                    String::new(),
                    w.sheet.clone(),
                    w.code.as_str().to_owned(),
                    w.message.clone(),
                ]);
            }
            if format == Format::Csv {
                crate::say_part!("{}", table.to_csv());
                return Ok(());
            }
            crate::say!(
                "{} accepted ({} of them corrections), {} duplicate, {} superseded by a later version, {} conflicting, {} refused, {} warning(s)",
                intake.accepted,
                intake.corrections,
                intake.duplicates,
                intake.superseded,
                intake.conflicts,
                intake.refused.len(),
                intake.warnings.len()
            );
            if !table.is_empty() {
                crate::say_part!("{}", table.render());
            }
            Ok(())
        }
    }
}

use tally_core::results::{
    ContestResult, ContestStatus, ElectionResult, FollowUp, Person, RoundResult, RoundStatus,
    Summary,
};

/// One line that says where a contest stands, in words a clerk reads at 2 a.m.
pub fn contest_state(contest: &ContestResult) -> String {
    contest
        .rounds
        .last()
        .map_or_else(|| "no round".into(), |round| round_state(contest, round))
}

/// Where one round of a contest stands, with the one-third threshold it was decided by.
fn round_state(contest: &ContestResult, round: &RoundResult) -> String {
    let state = round_state_only(contest, round);
    match &round.threshold {
        Some(t) if round.status == RoundStatus::Decided => format!(
            "{state} (one third of {} ballots {}: {} votes needed)",
            thousands(t.ballots),
            t.base.as_str(),
            thousands(round.votes_needed)
        ),
        _ => state,
    }
}

fn round_state_only(contest: &ContestResult, round: &RoundResult) -> String {
    let names = |people: &[Person]| -> String {
        people
            .iter()
            .map(|p| match p {
                Person::Candidate(id) => contest
                    .rounds
                    .iter()
                    .flat_map(|r| &r.votes)
                    .find(|v| &v.person == p)
                    .map_or_else(|| id.to_string(), |v| v.name.clone()),
                Person::WriteIn(name) => name.clone(),
            })
            .collect::<Vec<_>>()
            .join("、")
    };
    let round_label = if round.round > 1 {
        format!("round {}: ", round.round)
    } else {
        String::new()
    };
    match (&round.status, &round.follow_up) {
        (RoundStatus::Pending, _) => format!(
            "{round_label}counting, {} of {} units reported",
            round.units_reported, round.units_expected
        ),
        (RoundStatus::VoidArt44 { issued, collected }, _) => format!(
            "{round_label}VOID (Art 44): {} ballots collected, {} issued; hold the vote again",
            thousands(*collected),
            thousands(*issued)
        ),
        (RoundStatus::VoidByCommittee { decision }, _) => format!(
            "{round_label}VOID by the committee's decision {decision} (选举无效); hold the vote again"
        ),
        (RoundStatus::TurnoutFailed { voted, registered }, _) => format!(
            "{round_label}INVALID (Art 45): {} of {} voted, not more than half; hold the vote again",
            thousands(*voted),
            thousands(*registered)
        ),
        (RoundStatus::Decided, FollowUp::Revote { seats, people }) => format!(
            "{round_label}TIE for {seats} seat(s): {} vote again (再次投票)",
            names(people)
        ),
        (RoundStatus::Decided, FollowUp::Further { seats, candidates }) => format!(
            "{round_label}FURTHER ELECTION (另行选举) for {seats} seat(s) between {}",
            names(candidates)
        ),
        (RoundStatus::Decided, FollowUp::FurtherCandidatesTie { tied, places, .. }) => format!(
            "{round_label}COMMITTEE DECISION: {places} further-election place(s) tied between {}",
            names(tied)
        ),
        (RoundStatus::Decided, FollowUp::Vacant { seats }) => {
            format!("{round_label}decided, {seats} seat(s) VACANT")
        }
        (RoundStatus::Decided, _) if contest.status == ContestStatus::RoundLimit => {
            "ROUND LIMIT reached; the committee decides".into()
        }
        (RoundStatus::Decided, _) => format!("{round_label}decided"),
    }
}

fn summary_cells(s: &Summary) -> Vec<String> {
    vec![
        format!("{}/{}", s.contests_decided, s.contests_total),
        format!("{}/{}", s.seats_filled, s.seats_total),
        s.vacancies.to_string(),
        format!("{}/{}", s.units_reported, s.units_expected),
        percent(s.voted, s.registered_voters),
    ]
}

#[derive(Serialize)]
struct ResultsJson<'a> {
    intake: &'a tally_evidence::intake::Intake,
    result: &'a ElectionResult,
}

pub fn print_results(
    definition: &Definition,
    intake: &tally_evidence::intake::Intake,
    result: &ElectionResult,
    format: Format,
) -> Result<()> {
    match format {
        Format::Json => print_json(&ResultsJson { intake, result }),
        Format::Csv => {
            crate::say_part!("{}", results_csv(result).to_csv());
            Ok(())
        }
        Format::Table => {
            crate::say_part!("{}", results_table(definition, intake, result));
            Ok(())
        }
    }
}

/// One row per person per round per contest: the full count, for spreadsheets.
pub fn results_csv(result: &ElectionResult) -> Table {
    let mut table = Table::new(&[
        ("contest", Align::Left),
        ("contest_name", Align::Left),
        ("level", Align::Left),
        ("township", Align::Left),
        ("seats", Align::Right),
        ("round", Align::Right),
        ("round_kind", Align::Left),
        ("round_status", Align::Left),
        ("units_reported", Align::Right),
        ("units_expected", Align::Right),
        ("registered_voters", Align::Right),
        ("ballots_issued", Align::Right),
        ("ballots_collected", Align::Right),
        ("ballots_void", Align::Right),
        ("person", Align::Left),
        ("name", Align::Left),
        ("write_in", Align::Left),
        ("votes", Align::Right),
        ("elected", Align::Left),
    ]);
    for c in &result.contests {
        for r in &c.rounds {
            for v in &r.votes {
                let (person, write_in) = match &v.person {
                    Person::Candidate(id) => (id.to_string(), "no"),
                    Person::WriteIn(name) => (name.clone(), "yes"),
                };
                let elected = r.elected.iter().any(|e| e.person == v.person);
                table.row(vec![
                    c.contest.to_string(),
                    c.name.clone(),
                    c.level.name().into(),
                    c.township.to_string(),
                    c.seats.to_string(),
                    r.round.to_string(),
                    format!("{:?}", r.kind).to_lowercase(),
                    match r.status {
                        RoundStatus::Pending => "pending",
                        RoundStatus::VoidArt44 { .. } => "void-art44",
                        RoundStatus::TurnoutFailed { .. } => "turnout-failed",
                        RoundStatus::VoidByCommittee { .. } => "void-by-committee",
                        RoundStatus::Decided => "decided",
                    }
                    .into(),
                    r.units_reported.to_string(),
                    r.units_expected.to_string(),
                    r.totals.registered_voters.to_string(),
                    r.totals.ballots_issued.to_string(),
                    r.totals.ballots_collected.to_string(),
                    r.totals.ballots_void.to_string(),
                    person,
                    v.name.clone(),
                    write_in.into(),
                    v.votes.to_string(),
                    if elected { "yes" } else { "no" }.into(),
                ]);
            }
        }
    }
    table
}

/// The line a rehearsal's report begins and ends with.
pub fn rehearsal_banner(result: &ElectionResult) -> Option<String> {
    (result.mode == tally_core::definition::Mode::Rehearsal).then(|| {
        format!(
            "【{}】 a rehearsal, not the election's result (the definition's [election] mode)",
            result.mode.banner()
        )
    })
}

/// The readable report: county and township progress, the contests that need the committee,
/// and every contest with its elected deputies.
pub fn results_table(
    definition: &Definition,
    intake: &tally_evidence::intake::Intake,
    result: &ElectionResult,
) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    // Writing to a String cannot fail.
    if let Some(banner) = rehearsal_banner(result) {
        let _ = writeln!(out, "{banner}");
    }
    let _ = writeln!(out, "{}\n", definition.election.name);
    let _ = writeln!(
        out,
        "Sheets: {} accepted ({} of them corrections), {} duplicate, {} older versions superseded, {} conflicting, {} refused, {} with warnings",
        intake.accepted,
        intake.corrections,
        intake.duplicates,
        intake.superseded,
        intake.conflicts,
        intake.refused.len(),
        intake.warnings.len()
    );
    let mut progress = Table::new(&[
        ("area", Align::Left),
        ("congress", Align::Left),
        ("contests decided", Align::Right),
        ("seats filled", Align::Right),
        ("vacant", Align::Right),
        ("units reported", Align::Right),
        ("turnout", Align::Right),
    ]);
    let mut add = |area: &str, congress: &str, s: &Summary| {
        let mut cells = vec![area.to_owned(), congress.to_owned()];
        cells.extend(summary_cells(s));
        progress.row(cells);
    };
    add(
        &result.county.name,
        "县级 county",
        &result.county.county_level,
    );
    add(
        &result.county.name,
        "乡级 township (all)",
        &result.county.township_level,
    );
    for t in &result.townships {
        add(&t.name, "乡级 township", &t.township_level);
    }
    let _ = writeln!(out, "\nProgress");
    out.push_str(&progress.render());

    let mut attention = Table::new(&[
        ("contest", Align::Left),
        ("name", Align::Left),
        ("seats", Align::Right),
        ("state", Align::Left),
    ]);
    for c in &result.contests {
        let special = c.rounds.len() > 1
            || c.status != ContestStatus::Decided
            || c.vacancies > 0
            || c.rounds
                .iter()
                .any(|r| !matches!(r.follow_up, FollowUp::None));
        if special {
            let history: Vec<String> = c.rounds.iter().map(|r| round_state(c, r)).collect();
            attention.row(vec![
                c.contest.to_string(),
                c.name.clone(),
                c.seats.to_string(),
                history.join(" → "),
            ]);
        }
    }
    if !attention.is_empty() {
        let _ = writeln!(out, "\nContests that needed or need the committee");
        out.push_str(&attention.render());
    }

    for level in [Level::County, Level::Township] {
        let mut elected = Table::new(&[
            ("contest", Align::Left),
            ("name", Align::Left),
            ("seats", Align::Right),
            ("turnout", Align::Right),
            ("elected (votes)", Align::Left),
            ("state", Align::Left),
        ]);
        for c in result.contests.iter().filter(|c| c.level == level) {
            // The turnout of the round that decided (or is deciding) the contest.
            let first = c.rounds.last().unwrap_or(&c.rounds[0]);
            elected.row(vec![
                c.contest.to_string(),
                c.name.clone(),
                c.seats.to_string(),
                percent(first.totals.ballots_issued, first.totals.registered_voters),
                c.elected
                    .iter()
                    .map(|e| format!("{} ({})", e.name, thousands(e.votes)))
                    .collect::<Vec<_>>()
                    .join("、"),
                contest_state(c),
            ]);
        }
        let _ = writeln!(
            out,
            "\n{} congress: elected deputies by contest",
            level.chinese()
        );
        out.push_str(&elected.render());
    }
    if !result.findings.is_empty() || !intake.warnings.is_empty() || !intake.refused.is_empty() {
        let _ = writeln!(out, "\nFindings for the committee");
        for r in &intake.refused {
            let _ = writeln!(out, "  refused {} {}: {}", r.code, r.source, r.message);
        }
        for f in intake.warnings.iter().chain(&result.findings) {
            let _ = writeln!(out, "  {f}");
        }
    }
    if let Some(banner) = rehearsal_banner(result) {
        let _ = writeln!(out, "{banner}");
    }
    out
}
