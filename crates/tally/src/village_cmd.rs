//! `tally village`: a polling unit's device. The clerks fill in a sheet by double entry
//! (`fill`), the unit signs it with its key and submits it to its township through a local
//! journal (`submit`), corrects it with a new version (`correct`), prints it as a QR code for
//! the offline path (`qr`), and looks at what became of every sheet (`status`).
//!
//! The device's config, journal, double entry, submitting and QR payloads are
//! `tally-village`'s; this module parses the commands' arguments and prints.

use crate::outcome::Outcome;
use crate::{say, say_part};
use anyhow::{Context, Result, anyhow, bail};
use clap::{Subcommand, ValueEnum};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tally_core::ids::ContestId;
use tally_table::{Align, Table};
use tally_village::config::VillageConfig;
use tally_village::fill;
use tally_village::journal::{Journal, Record, State};
use tally_village::submit::{self, Delivered, RETRY_FOR_SECS_DEFAULT, check_round};

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StatusFormat {
    Table,
    Json,
}

#[derive(Subcommand)]
pub enum VillageCommand {
    /// Two clerks type a paper tally sheet at the prompts (double entry); where they differ,
    /// both type it again. Writes the sheet file once they agree. Nothing is signed here.
    Fill {
        /// The unit's village.toml.
        #[arg(long, short)]
        config: PathBuf,
        /// The contest (constituency) the sheet reports, e.g. XH-C01.
        #[arg(long)]
        contest: String,
        /// The voting round: 1 on election day, 2 and up for a vote held again.
        #[arg(long, default_value_t = 1)]
        round: u32,
        /// Where to write the sheet file (never overwritten).
        #[arg(long, short)]
        out: PathBuf,
    },
    /// Sign sheet files with the unit's key (or take .sheets bundles this unit signed),
    /// journal them, and send every pending sheet to the township, retrying until it answers.
    /// Exit 0 all delivered, 1 some refused, 2 some still pending (run it again).
    Submit {
        #[arg(long, short)]
        config: PathBuf,
        /// Keep retrying an unreachable township this many seconds.
        #[arg(long, default_value_t = RETRY_FOR_SECS_DEFAULT)]
        retry_for: u64,
        /// Sheet files (.toml, signed here) or .sheets bundles of this unit. None: send what
        /// is pending in the journal.
        files: Vec<PathBuf>,
    },
    /// Correct a sheet already submitted: the file becomes the next version of its slot
    /// (the journal's highest + 1, replacing it), signed and submitted.
    Correct {
        #[arg(long, short)]
        config: PathBuf,
        #[arg(long)]
        contest: String,
        /// The round (default: the one the file gives).
        #[arg(long)]
        round: Option<u32>,
        #[arg(long, default_value_t = RETRY_FOR_SECS_DEFAULT)]
        retry_for: u64,
        /// The corrected sheet file (.toml).
        file: PathBuf,
    },
    /// Show the latest signed sheet of a contest as a QR code (terminal, and PNG with --png)
    /// for the offline path: the township imports it with `tally township import`.
    Qr {
        #[arg(long, short)]
        config: PathBuf,
        #[arg(long)]
        contest: String,
        #[arg(long, default_value_t = 1)]
        round: u32,
        /// Also write the code as a PNG picture here.
        #[arg(long)]
        png: Option<PathBuf>,
    },
    /// Every sheet in the journal and its state: pending, delivered (ACCEPTED, DUPLICATE,
    /// SUPERSEDED) or refused (code and message). Exit 3 when some are pending or refused.
    Status {
        #[arg(long, short)]
        config: PathBuf,
        #[arg(long, short, value_enum, default_value_t = StatusFormat::Table)]
        format: StatusFormat,
    },
}

pub fn run(command: VillageCommand) -> Result<Outcome> {
    match command {
        VillageCommand::Fill {
            config,
            contest,
            round,
            out,
        } => fill_command(&config, &contest, round, &out),
        VillageCommand::Submit {
            config,
            retry_for,
            files,
        } => delivered(submit::submit(
            &config,
            Duration::from_secs(retry_for),
            &files,
            &Printed,
        )),
        VillageCommand::Correct {
            config,
            contest,
            round,
            retry_for,
            file,
        } => delivered(submit::correct(
            &config,
            &contest,
            round,
            Duration::from_secs(retry_for),
            &file,
            &Printed,
        )),
        VillageCommand::Qr {
            config,
            contest,
            round,
            png,
        } => qr(&config, &contest, round, png.as_deref()),
        VillageCommand::Status { config, format } => status(&config, format),
    }
}

/// A time for people: `2026-11-28T10:31:02+00:00`.
fn time_text(unix_ms: u64) -> String {
    tally_core::sheet::CountClosedAt {
        unix_seconds: i64::try_from(unix_ms / 1000).unwrap_or(i64::MAX),
        utc_offset_minutes: 0,
    }
    .to_string()
}

/// The device's notes as the clerk reads them: on standard output, retries on standard error.
struct Printed;

impl submit::Clerk for Printed {
    fn say(&self, line: &str) {
        say!("{line}");
    }

    fn warn(&self, line: &str) {
        eprintln!("{line}");
    }
}

/// The exit code of a submit or a correction.
fn delivered(result: tally_village::Result<Delivered>) -> Result<Outcome> {
    Ok(match result? {
        Delivered::Clean => Outcome::Clean,
        Delivered::Refused => Outcome::Refused,
        Delivered::Pending => Outcome::Pending,
    })
}

// ---- fill ----

fn fill_command(config_path: &Path, contest: &str, round: u32, out: &Path) -> Result<Outcome> {
    use std::io::IsTerminal;
    let config = VillageConfig::load(config_path)?;
    let definition = config.definition()?;
    // config.definition() checked that the unit is in the definition.
    let unit = definition
        .unit(&config.unit_id)
        .ok_or_else(|| anyhow!("unit {} is not in the definition", config.unit_id))?;
    let serves: Vec<String> = unit
        .contests
        .iter()
        .map(|c| {
            let name = definition.contest(c).map_or("", |c| c.name.as_str());
            format!("{c} {name}")
        })
        .collect();
    let Some(contest) = definition
        .contest(&ContestId::new(contest))
        .filter(|c| unit.contests.contains(&c.id))
    else {
        bail!(
            "--contest {contest}: unit {} does not report that contest; it reports {}",
            unit.id,
            serves.join(", ")
        );
    };
    let round = check_round(round)?;
    if out.exists() {
        bail!(
            "{} already exists; give a new file name (a sheet file is never overwritten)",
            out.display()
        );
    }
    let form = fill::Form {
        definition: &definition,
        unit,
        contest,
        round,
    };
    let sheet = {
        let stdin = std::io::stdin();
        let stdout = std::io::stdout();
        let mut prompter = fill::Prompter {
            terminal: stdin.is_terminal() && stdout.is_terminal(),
            echo: !stdin.is_terminal(),
            input: stdin.lock(),
            output: stdout.lock(),
        };
        form.fill(&mut prompter)?
    };
    let text = fill::sheet_file_text(&form, &sheet);
    write_new_file(out, text.as_bytes())?;
    let findings = tally_core::validate::check_sheet(&definition, &sheet);
    say!("\nThe sheet file {} is written.", out.display());
    for f in &findings {
        let kind = if f.is_error() { "error" } else { "warning" };
        say!("  {kind} {f}");
    }
    if findings.iter().any(|f| f.is_error()) {
        say!(
            "The numbers both clerks typed do not add up, so the sheet cannot be signed: the committee checks the paper sheet; then fix {} (or fill it in again) before `tally village submit`.",
            out.display()
        );
    } else {
        say!(
            "Next: sign and send it with `tally village submit --config {} {}`.",
            config_path.display(),
            out.display()
        );
    }
    Ok(if findings.is_empty() {
        Outcome::Clean
    } else {
        Outcome::Findings
    })
}

fn write_new_file(path: &Path, contents: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                anyhow!(
                    "{} already exists; give a new file name (a sheet file is never overwritten)",
                    path.display()
                )
            } else {
                anyhow!("cannot create {}: {e}", path.display())
            }
        })?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))
}

// ---- qr and status ----

fn qr(config_path: &Path, contest: &str, round: u32, png: Option<&Path>) -> Result<Outcome> {
    use std::io::IsTerminal;
    let config = VillageConfig::load(config_path)?;
    let round = check_round(round)?;
    let journal = Journal::open(&config.journal, &config.unit_id)?;
    let Some(entry) = journal
        .entries()?
        .into_iter()
        .filter(|e| e.record.contest == contest && e.record.round == round.0)
        .max_by_key(|e| e.record.version)
    else {
        bail!(
            "the journal {} holds no signed sheet of contest {contest}, round {}; sign it first with `tally village submit` (it is journaled even when the township cannot be reached)",
            journal.path().display(),
            round.0
        );
    };
    let payload = tally_village::offline::qr_payload(&entry.signed);
    let colours = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    say!(
        "Unit {}, {} ({}), digest {}",
        config.unit_id,
        entry.label(),
        entry.record.state.short(),
        &entry.record.digest[..16]
    );
    if let State::Refused { message, .. } = &entry.record.state {
        say!(
            "note: the township refused this sheet ({message}); a township import of this code will refuse it too"
        );
    }
    say_part!(
        "{}",
        tally_village::offline::terminal_qr(&payload, colours)?
    );
    say!("payload (the same, as text): {payload}");
    if let Some(png) = png {
        let picture = tally_village::offline::qr_png(&payload)?;
        std::fs::write(png, picture).with_context(|| format!("cannot write {}", png.display()))?;
        say!("QR code written to {}", png.display());
    }
    Ok(Outcome::Clean)
}

#[derive(serde::Serialize)]
struct StatusRow<'a> {
    seq: u64,
    unit: &'a str,
    #[serde(flatten)]
    record: &'a Record,
}

fn status(config_path: &Path, format: StatusFormat) -> Result<Outcome> {
    let config = VillageConfig::load(config_path)?;
    let journal = Journal::open(&config.journal, &config.unit_id)?;
    let entries = journal.entries()?;
    match format {
        StatusFormat::Json => {
            let rows: Vec<StatusRow> = entries
                .iter()
                .map(|e| StatusRow {
                    seq: e.seq,
                    unit: config.unit_id.as_str(),
                    record: &e.record,
                })
                .collect();
            say!("{}", serde_json::to_string_pretty(&rows)?);
        }
        StatusFormat::Table => {
            say!(
                "Journal {} of unit {}: {} sheet{}",
                journal.path().display(),
                config.unit_id,
                entries.len(),
                if entries.len() == 1 { "" } else { "s" }
            );
            let mut table = Table::new(&[
                ("#", Align::Right),
                ("contest", Align::Left),
                ("round", Align::Right),
                ("version", Align::Right),
                ("state", Align::Left),
                ("digest", Align::Left),
                ("journaled", Align::Left),
                ("attempts", Align::Right),
                ("message", Align::Left),
            ]);
            for e in &entries {
                let r = &e.record;
                let message = match &r.state {
                    State::Refused { message, .. } => message.clone(),
                    _ => r.warnings.join("; "),
                };
                table.row(vec![
                    e.seq.to_string(),
                    r.contest.clone(),
                    r.round.to_string(),
                    r.version.to_string(),
                    r.state.short(),
                    r.digest[..12].to_owned(),
                    time_text(r.journaled_unix_ms),
                    r.attempts.to_string(),
                    message,
                ]);
            }
            if !table.is_empty() {
                say_part!("{}", table.render());
            }
        }
    }
    let attention = entries
        .iter()
        .any(|e| !matches!(e.record.state, State::Delivered { .. }));
    Ok(if attention {
        Outcome::Findings
    } else {
        Outcome::Clean
    })
}
