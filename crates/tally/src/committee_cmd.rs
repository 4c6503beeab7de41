//! `tally committee`: the committee closes the count (docs/design/committee.md). It lists what
//! waits for the committee, prepares a decision, a confirmation or a reopening as an act file,
//! which each official signs offline with their own key (`tally committee sign`), and submits
//! it once k have signed; the county checks and records it, and results follow from it.

use crate::amend_cmd::{ActCommand, write_new};
use crate::client::{ClientArgs, operator_files, runtime};
use crate::county_cmd::fetch_results;
use crate::outcome::Outcome;
use crate::say;
use anyhow::{Result, anyhow, bail};
use clap::{Args, Subcommand};
use std::path::PathBuf;
use tally_core::act::{ActBody, ActFile, describe};
use tally_core::committee::{
    Confirmation, ConfirmedContest, Decision, DecisionKind, Merge, Reopening,
};
use tally_core::congress::Level;
use tally_core::definition::{Contest, Definition};
use tally_core::ids::{ContestId, UnitId};
use tally_core::results::Person;
use tally_files::load_definition;
use tally_rpc::pb;

#[derive(Subcommand)]
pub enum CommitteeCommand {
    /// List what waits for the committee: conflicts, cut-off ties, warnings, written-in names,
    /// sheets that arrived after a lock, and contests ready to confirm. Exits 3 while anything
    /// waits.
    Pending {
        #[command(flatten)]
        client: ClientArgs,
        #[arg(long, default_value = "operator")]
        operator: String,
        /// Only this township's contests.
        #[arg(long)]
        township: Option<String>,
        #[arg(long, value_enum, default_value_t = crate::report::Format::Table)]
        format: crate::report::Format,
    },
    /// Prepare: of two sheets in conflict (same unit, round and version), the one that counts.
    KeepSheet {
        #[command(flatten)]
        decide: DecideArgs,
        #[arg(long)]
        unit: String,
        #[arg(long, default_value_t = 1)]
        round: u32,
        #[arg(long, default_value_t = 1)]
        version: u32,
        /// The chosen sheet's digest (64 hex digits), as `tally committee pending` lists it.
        #[arg(long)]
        sheet_digest: String,
    },
    /// Prepare: who of the people tied at the further election's cut-off take the open
    /// places; the contest then proceeds to its further election.
    CutoffTie {
        #[command(flatten)]
        decide: DecideArgs,
        /// The round whose outcome tied at the cut-off.
        #[arg(long, default_value_t = 1)]
        round: u32,
        /// The chosen: candidate ids, or written-in names, comma-separated.
        #[arg(long, value_delimiter = ',', required = true)]
        chosen: Vec<String>,
    },
    /// Prepare: adjudicate written-in names: merge spellings into one person, rule names
    /// invalid.
    WriteIns {
        #[command(flatten)]
        decide: DecideArgs,
        /// NAMES=PERSON: the names (separated by `/`) count for PERSON (a candidate id or a
        /// written-in name), e.g. `刘桦=刘华`; repeat for each person.
        #[arg(long)]
        merge: Vec<String>,
        /// A written-in name that counts for no one; repeat for each.
        #[arg(long)]
        invalid: Vec<String>,
    },
    /// Prepare: declare the contest's round in course void for a violation of the law
    /// (破坏选举 → 选举无效); it is held again.
    VoidRound {
        #[command(flatten)]
        decide: DecideArgs,
        #[arg(long)]
        round: u32,
    },
    /// Prepare: order the recount of a unit's ballots of one round (a conflict, or a doubt);
    /// the contest waits for the recount.
    OrderRecount {
        #[command(flatten)]
        decide: DecideArgs,
        #[arg(long)]
        unit: String,
        #[arg(long, default_value_t = 1)]
        round: u32,
    },
    /// Prepare: the recount of a unit's round, typed by two clerks of the committee (double
    /// entry at the prompts, as `tally village fill`): it counts in place of the unit's sheet;
    /// the papers print the corrigendum.
    Recount {
        #[command(flatten)]
        decide: DecideArgs,
        #[arg(long)]
        unit: String,
        #[arg(long, default_value_t = 1)]
        round: u32,
    },
    /// Prepare: mark a warning reviewed, with the note the report prints.
    Review {
        #[command(flatten)]
        decide: DecideArgs,
        /// The warning's code, e.g. W301.
        #[arg(long)]
        code: String,
        /// Where it is, as `tally committee pending` lists it (a sheet's label, or
        /// `contest C, round r`).
        #[arg(long)]
        at: String,
        #[arg(long)]
        note: String,
    },
    /// Prepare the confirmation (确认选举结果有效) of contests with nothing open, from the
    /// county's results now: one contest, a township's contests of one level, or every
    /// county-level contest. Confirmed, a contest is locked.
    Confirm {
        /// The election definition the county was founded with (TOML).
        #[arg(long, short)]
        definition: PathBuf,
        /// The confirmation's id, the committee's number for it (used once).
        #[arg(long)]
        id: String,
        /// A contest to confirm; repeat, or use --township / --county-level.
        #[arg(long)]
        contest: Vec<String>,
        /// Every township-level contest of this township.
        #[arg(long)]
        township: Option<String>,
        /// Every county-level contest.
        #[arg(long)]
        county_level: bool,
        #[command(flatten)]
        client: ClientArgs,
        #[arg(long, default_value = "operator")]
        operator: String,
        /// The act file to write (new).
        #[arg(long, short)]
        out: PathBuf,
    },
    /// Prepare the reopening of a confirmed contest, with the reason; it must be confirmed
    /// again afterwards.
    Reopen {
        /// The election definition the county was founded with (TOML).
        #[arg(long, short)]
        definition: PathBuf,
        #[arg(long)]
        id: String,
        #[arg(long)]
        contest: String,
        /// The confirmation it lifts.
        #[arg(long)]
        confirmation: String,
        /// Why, in the committee's words (required).
        #[arg(long)]
        reason: String,
        #[arg(long, short)]
        out: PathBuf,
    },
    /// Print the official papers (选举结果报告单, 当选代表名单 in surname-stroke order, 当选证书)
    /// as A4 HTML from an evidence bundle (`tally export`), after verifying it; the lists hold
    /// confirmed contests only, the others go on drafts marked 未确认 / DRAFT.
    Papers {
        /// The bundle folder `tally export` wrote.
        bundle: PathBuf,
        #[command(flatten)]
        anchors: crate::evidence_cmd::AnchorArgs,
        /// The folder to write (new or empty).
        #[arg(long, short)]
        out: PathBuf,
    },
    #[command(flatten)]
    Act(ActCommand),
}

#[derive(Args)]
pub struct DecideArgs {
    /// The election definition the county was founded with (TOML).
    #[arg(long, short)]
    definition: PathBuf,
    /// The decision's id, the committee's own number for it, e.g. D-004 (used once).
    #[arg(long)]
    id: String,
    /// The contest it decides on.
    #[arg(long)]
    contest: String,
    /// Why, in the committee's words; the results and papers print it.
    #[arg(long)]
    reason: String,
    /// The act file to write (new).
    #[arg(long, short)]
    out: PathBuf,
}

pub fn run(command: CommitteeCommand) -> Result<Outcome> {
    match command {
        CommitteeCommand::Pending {
            client,
            operator,
            township,
            format,
        } => pending(&client, &operator, township, format),
        CommitteeCommand::KeepSheet {
            decide,
            unit,
            round,
            version,
            sheet_digest,
        } => prepare_decision(&decide, |_| {
            Ok(DecisionKind::KeepSheet {
                unit: UnitId::new(unit),
                round,
                version,
                sheet_digest: sheet_digest.to_lowercase(),
            })
        }),
        CommitteeCommand::CutoffTie {
            decide,
            round,
            chosen,
        } => prepare_decision(&decide, |contest| {
            Ok(DecisionKind::CutoffTie {
                round,
                chosen: chosen.iter().map(|p| person(contest, p)).collect(),
            })
        }),
        CommitteeCommand::WriteIns {
            decide,
            merge,
            invalid,
        } => prepare_decision(&decide, |contest| {
            let merge = merge
                .iter()
                .map(|m| {
                    let (names, into) = m.split_once('=').ok_or_else(|| {
                        anyhow!("--merge {m:?} is not NAMES=PERSON, e.g. 刘桦=刘华")
                    })?;
                    Ok(Merge {
                        names: names.split('/').map(str::to_owned).collect(),
                        into: person(contest, into),
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(DecisionKind::WriteIns { merge, invalid })
        }),
        CommitteeCommand::OrderRecount {
            decide,
            unit,
            round,
        } => prepare_decision(&decide, |_| {
            Ok(DecisionKind::OrderRecount {
                unit: UnitId::new(unit),
                round,
            })
        }),
        CommitteeCommand::Recount {
            decide,
            unit,
            round,
        } => {
            let definition = load_definition(&decide.definition)?;
            let sheet = recount_by_double_entry(&definition, &decide.contest, &unit, round)?;
            prepare_decision(&decide, |_| Ok(DecisionKind::Recount { sheet }))
        }
        CommitteeCommand::VoidRound { decide, round } => {
            prepare_decision(&decide, |_| Ok(DecisionKind::VoidRound { round }))
        }
        CommitteeCommand::Review {
            decide,
            code,
            at,
            note,
        } => prepare_decision(&decide, |_| Ok(DecisionKind::Review { code, at, note })),
        CommitteeCommand::Confirm {
            definition,
            id,
            contest,
            township,
            county_level,
            client,
            operator,
            out,
        } => confirm(
            &definition,
            id,
            Scope {
                contests: contest,
                township,
                county_level,
            },
            &client,
            &operator,
            &out,
        ),
        CommitteeCommand::Reopen {
            definition,
            id,
            contest,
            confirmation,
            reason,
            out,
        } => {
            let d = load_definition(&definition)?;
            if reason.trim().is_empty() {
                bail!(
                    "--reason is empty: a confirmed result is reopened only with the committee's reason (E406)"
                );
            }
            let contest = ContestId::new(contest);
            if d.contest(&contest).is_none() {
                bail!("contest {contest} is not in {}", definition.display());
            }
            write_act(
                &d,
                &definition,
                &out,
                ActBody::Reopening(Reopening {
                    election: d.election.id.clone(),
                    mode: d.election.mode,
                    id,
                    contest,
                    confirmation,
                    reason,
                }),
            )
        }
        CommitteeCommand::Papers {
            bundle,
            anchors,
            out,
        } => {
            let papers = crate::papers::run(&bundle, &anchors.anchors()?, &out)?;
            crate::papers::say_written(&papers, &out);
            Ok(if papers.draft_deputies > 0 {
                Outcome::Findings
            } else {
                Outcome::Clean
            })
        }
        CommitteeCommand::Act(command) => crate::amend_cmd::act(command),
    }
}

/// Two clerks of the committee type the recounted sheet at the prompts; the agreed sheet, or
/// why there is none (its figures are checked again when the record applies it, E405).
fn recount_by_double_entry(
    definition: &Definition,
    contest: &str,
    unit: &str,
    round: u32,
) -> Result<tally_core::sheet::TallySheet> {
    use std::io::IsTerminal;
    let unit_id = UnitId::new(unit);
    let Some(unit) = definition.unit(&unit_id) else {
        bail!("unit {unit_id} is not in the definition");
    };
    let contest_id = ContestId::new(contest);
    let Some(contest) = definition
        .contest(&contest_id)
        .filter(|c| unit.contests.contains(&c.id))
    else {
        bail!("--contest {contest_id}: unit {unit_id} does not report that contest");
    };
    if round == 0 {
        bail!("--round 0: rounds start at 1");
    }
    let form = tally_village::fill::Form {
        definition,
        unit,
        contest,
        round: tally_core::sheet::Round(round),
    };
    let stdin = std::io::stdin();
    let stdout = std::io::stdout();
    let mut prompter = tally_village::fill::Prompter {
        terminal: stdin.is_terminal() && stdout.is_terminal(),
        echo: !stdin.is_terminal(),
        input: stdin.lock(),
        output: stdout.lock(),
    };
    let sheet = form.fill(&mut prompter)?;
    let errors: Vec<String> = tally_core::validate::check_sheet(definition, &sheet)
        .into_iter()
        .filter(|f| f.is_error())
        .map(|f| f.to_string())
        .collect();
    if !errors.is_empty() {
        bail!(
            "E405 the recounted figures do not add up, so no decision file was written:\n  {}",
            errors.join("\n  ")
        );
    }
    Ok(sheet)
}

/// A candidate of the contest by id (or by name when it is one candidate's), else a
/// written-in name.
fn person(contest: &Contest, text: &str) -> Person {
    let text = text.trim();
    if let Some(c) = contest.candidates.iter().find(|c| c.id.as_str() == text) {
        return Person::Candidate(c.id.clone());
    }
    let named: Vec<_> = contest
        .candidates
        .iter()
        .filter(|c| c.name == text)
        .collect();
    match named.as_slice() {
        [one] => Person::Candidate(one.id.clone()),
        _ => Person::WriteIn(tally_core::sheet::counting_name(text)),
    }
}

fn prepare_decision(
    args: &DecideArgs,
    decide: impl FnOnce(&Contest) -> Result<DecisionKind>,
) -> Result<Outcome> {
    let definition = load_definition(&args.definition)?;
    let contest_id = ContestId::new(args.contest.clone());
    let Some(contest) = definition.contest(&contest_id) else {
        bail!(
            "contest {contest_id} is not in {}; no decision file was written",
            args.definition.display()
        );
    };
    if args.reason.trim().is_empty() {
        bail!("--reason is empty: the committee states why, in its own words (E401)");
    }
    let decision = Decision {
        election: definition.election.id.clone(),
        mode: definition.election.mode,
        id: args.id.clone(),
        contest: contest_id,
        reason: args.reason.clone(),
        decide: decide(contest)?,
    };
    write_act(
        &definition,
        &args.definition,
        &args.out,
        ActBody::Decision(Box::new(decision)),
    )
}

fn write_act(
    definition: &Definition,
    definition_path: &std::path::Path,
    out: &std::path::Path,
    body: ActBody,
) -> Result<Outcome> {
    let (committee, whose) = tally_core::act::committee_for(definition, &body).map_err(|e| {
        anyhow!(
            "{e}\nno act file was written ({})",
            definition_path.display()
        )
    })?;
    let file = ActFile::new(body);
    write_new(out, &file.text())?;
    say!("wrote {}:", out.display());
    for line in describe(&file.act) {
        say!("  {line}");
    }
    say!(
        "next: {} official(s) of {whose} sign it, each with `tally committee sign {} --definition {} --official ID --key KEY`; then `tally committee submit`. Whether it is needed and holds is checked by the county when it is submitted.",
        committee.threshold,
        out.display(),
        definition_path.display()
    );
    Ok(Outcome::Clean)
}

struct Scope {
    contests: Vec<String>,
    township: Option<String>,
    county_level: bool,
}

fn confirm(
    definition_path: &std::path::Path,
    id: String,
    scope: Scope,
    client: &ClientArgs,
    operator: &str,
    out: &std::path::Path,
) -> Result<Outcome> {
    let definition = load_definition(definition_path)?;
    let mut wanted: Vec<ContestId> = scope.contests.into_iter().map(ContestId::new).collect();
    if let Some(t) = &scope.township {
        wanted.extend(
            definition
                .contests
                .iter()
                .filter(|c| c.level == Level::Township && c.township.as_str() == t)
                .map(|c| c.id.clone()),
        );
    }
    if scope.county_level {
        wanted.extend(
            definition
                .contests
                .iter()
                .filter(|c| c.level == Level::County)
                .map(|c| c.id.clone()),
        );
    }
    if wanted.is_empty() {
        bail!("name what to confirm: --contest C (repeat), --township T, or --county-level");
    }
    if let Some(c) = wanted.iter().find(|c| definition.contest(c).is_none()) {
        bail!("contest {c} is not in {}", definition_path.display());
    }
    let files = operator_files(&client.pki, operator)?;
    let r = runtime()?.block_on(fetch_results(client, &files, pb::ResultsRequest::default()))?;
    let mut contests = Vec::new();
    let mut problems = Vec::new();
    for id in &wanted {
        let Some(c) = r.contests.iter().find(|c| c.contest_id == id.as_str()) else {
            problems.push(format!("contest {id}: the county's results do not list it"));
            continue;
        };
        if !c.confirmation.is_empty() {
            problems.push(format!(
                "contest {id} is confirmed already ({}) (E407)",
                c.confirmation
            ));
        }
        let open: Vec<&str> = r
            .matters
            .iter()
            .filter(|m| m.contest_id == id.as_str() && m.blocking)
            .map(|m| m.what.as_str())
            .collect();
        if !open.is_empty() {
            problems.push(format!(
                "contest {id} has open matters (E402): {}",
                open.join("; ")
            ));
        }
        if c.status != "decided" {
            problems.push(format!("contest {id} is not decided ({}) (E402)", c.status));
        }
        contests.push(ConfirmedContest {
            contest: id.clone(),
            result_digest: hex::encode(&c.result_digest),
        });
    }
    if !problems.is_empty() {
        bail!(
            "{}\nno confirmation file was written: the committee decides what is open first (`tally committee pending`)",
            problems.join("\n")
        );
    }
    say!(
        "the county's results at log index {}, chain head {}:",
        r.log_index,
        hex::encode(&r.chain_head)
    );
    write_act(
        &definition,
        definition_path,
        out,
        ActBody::Confirmation(Confirmation {
            election: definition.election.id.clone(),
            mode: definition.election.mode,
            id,
            log_index: r.log_index,
            head: hex::encode(&r.chain_head),
            contests,
        }),
    )
}

fn pending(
    client: &ClientArgs,
    operator: &str,
    township: Option<String>,
    format: crate::report::Format,
) -> Result<Outcome> {
    let files = operator_files(client.pki.as_path(), operator)?;
    let request = pb::ResultsRequest {
        township_id: township.unwrap_or_default(),
        ..Default::default()
    };
    let r = runtime()?.block_on(fetch_results(client, &files, request))?;
    let blocking = r.matters.iter().filter(|m| m.blocking).count();
    match format {
        crate::report::Format::Json => {
            let list: Vec<serde_json::Value> = r
                .matters
                .iter()
                .map(|m| {
                    serde_json::json!({
                        "contest": m.contest_id,
                        "kind": m.kind,
                        "blocking": m.blocking,
                        "what": m.what,
                        "how": m.how,
                        "code": m.code,
                        "at": m.at,
                    })
                })
                .collect();
            say!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({
                    "log_index": r.log_index,
                    "chain_head": hex::encode(&r.chain_head),
                    "matters": list,
                }))?
            );
        }
        crate::report::Format::Table | crate::report::Format::Csv => {
            use tally_table::Align::Left;
            let mut table = tally_table::Table::new(&[
                ("contest", Left),
                ("matter", Left),
                ("blocks", Left),
                ("what", Left),
                ("how", Left),
            ]);
            for m in &r.matters {
                table.row(vec![
                    m.contest_id.clone(),
                    m.kind.clone(),
                    if m.blocking { "yes" } else { "no" }.into(),
                    m.what.clone(),
                    m.how.clone(),
                ]);
            }
            if matches!(format, crate::report::Format::Csv) {
                say!("{}", table.to_csv());
            } else {
                say!(
                    "what waits for the committee at log index {} (chain head {}):",
                    r.log_index,
                    &hex::encode(&r.chain_head)[..16]
                );
                if r.matters.is_empty() {
                    say!("nothing: every contest is confirmed, or still counting");
                } else {
                    say!("{}", table.render());
                }
                let confirmed = r
                    .contests
                    .iter()
                    .filter(|c| !c.confirmation.is_empty())
                    .count();
                say!(
                    "{confirmed} of {} contests confirmed; {blocking} matter(s) keep a contest from being confirmed",
                    r.contests.len()
                );
            }
        }
    }
    // Exit 3 while anything waits for the committee, a contest ready to confirm included.
    Ok(if r.matters.is_empty() {
        Outcome::Clean
    } else {
        Outcome::Findings
    })
}
