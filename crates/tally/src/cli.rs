//! The `tally` command line. Each subcommand parses its arguments and calls into the library;
//! exit codes tell success (0), failure (1), a usage error (2, from clap) and findings (3)
//! apart, so scripts can act on them.

use crate::outcome::{EXIT_FAILURE, EXIT_FINDINGS, EXIT_PENDING, Outcome};
use crate::report::{self, Format};
use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use tally_evidence::intake::intake;
use tally_files::{self as files, load_definition, read_bundles, read_secret_key, write_generated};
use tally_synth::GenParams;

#[derive(Parser)]
#[command(
    name = "tally",
    version,
    about = "Election-night tally for county and township people's congress elections (县乡两级人大换届选举)",
    after_help = "Exit codes: 0 success, 1 failure, 2 usage error, 3 findings to review (refused sheets, warnings, conflicts). `tally village submit` and `correct`: 1 some sheets refused, 2 some still pending (run the same command again)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Make a signing key for a polling unit, or a township's countersigning key: writes the
    /// secret key file, prints the public key.
    Keygen {
        /// Where to write the secret key (never overwritten).
        #[arg(long, short)]
        out: PathBuf,
        /// How to print the public key and key id: text, or json (`{"secret_key_file",
        /// "public_key", "key_id"}`) for scripts.
        #[arg(long, value_enum, default_value_t = KeygenFormat::Text)]
        format: KeygenFormat,
    },
    /// Sign and verify tally sheets.
    #[command(subcommand)]
    Sheet(SheetCommand),
    /// Compute the Election Law result of every contest from signed sheets.
    Results {
        /// The election definition (TOML).
        #[arg(long, short)]
        definition: PathBuf,
        /// Signed-sheet bundles (.sheets files), or folders of them.
        #[arg(long, short, num_args = 1.., required = true)]
        sheets: Vec<PathBuf>,
        #[arg(long, short, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Seat totals (Art 12) and apportionment of seats by population or votes.
    Seats {
        /// Congress totals and the apportionment of county seats to townships for a definition.
        #[arg(long, short, conflicts_with = "weights")]
        definition: Option<PathBuf>,
        /// A CSV of `name,weight` rows (population or votes) to apportion --total seats among.
        #[arg(long, requires = "total")]
        weights: Option<PathBuf>,
        /// Seats to apportion (with --weights).
        #[arg(long)]
        total: Option<u32>,
        /// The method; defaults to the definition's, or largest-remainder-hare.
        #[arg(long, value_parser = method_names())]
        method: Option<String>,
        /// Minimum seats per row (with --weights).
        #[arg(long, default_value_t = 0)]
        min: u32,
        /// Maximum seats per row (with --weights).
        #[arg(long)]
        max: Option<u32>,
        /// Treat weights as votes for lists and give no seats to a list under this percentage.
        #[arg(long)]
        threshold_percent: Option<u32>,
        /// How a tie is resolved. Defaults to the definition's recorded rule, or report.
        #[arg(long, value_parser = ["report", "definition-order", "larger-weight-first"])]
        tie_rule: Option<String>,
        #[arg(long, short, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Generate a synthetic county (definition, keys and signed sheets) for tests and benchmarks.
    Gen {
        /// The folder to write (created; must be empty or absent).
        #[arg(long, short)]
        out: PathBuf,
        /// The built-in sample county (the one in examples/sample-county).
        #[arg(long)]
        sample: bool,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long, default_value_t = 18)]
        townships: usize,
        /// Total population.
        #[arg(long, default_value_t = 700_000)]
        population: u64,
        /// Registered voters per polling station, roughly (smaller gives more units).
        #[arg(long, default_value_t = 1_200)]
        voters_per_station: u64,
        /// Leave out the planted cases (void vote, tie, further election, vacancy, correction).
        #[arg(long)]
        no_scenarios: bool,
    },
    /// Make a county CA and certificates for replicas, townships and operators (tests, small deployments).
    Certs(crate::certs_cmd::CertsArgs),
    /// Run one replica of the county coordinator.
    County {
        /// The replica's config file (see examples/county-local/replica-1.toml).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Amend the definition on the night, as the committee: prepare an amendment, each
    /// official signs it offline, then submit it to the county once k have signed.
    #[command(subcommand)]
    Amend(crate::amend_cmd::AmendCommand),
    /// The official count starts from a zero report: prepare it, each official signs it
    /// offline, then submit it to the county before the first sheet.
    #[command(subcommand)]
    ZeroReport(crate::amend_cmd::ZeroReportCommand),
    /// The committee closes the count: list what waits for it, prepare a decision, a
    /// confirmation or a reopening; each official signs it offline; submit it once k have.
    #[command(subcommand)]
    Committee(crate::committee_cmd::CommitteeCommand),
    /// Print the table of findings: every E and W code, what it means and what it does
    /// (docs/findings.md is this table).
    Codes,
    /// Look at and administer the county cluster (as an operator).
    #[command(subcommand)]
    Cluster(crate::county_cmd::ClusterCommand),
    /// Write an evidence bundle (as an operator): every sheet the county recorded as its unit
    /// signed it, the hash chain, the county's results at that log index and the definition.
    Export {
        #[command(flatten)]
        client: crate::client::ClientArgs,
        /// The operator certificate to use (operator-NAME.pem in --pki).
        #[arg(long, default_value = "operator")]
        operator: String,
        /// The election definition the county runs (TOML; the CSV files it names are copied too).
        #[arg(long, short)]
        definition: PathBuf,
        /// The bundle folder to write (new or empty).
        #[arg(long, short)]
        out: PathBuf,
        /// Read one replica's own state without asking the leader (may be behind).
        #[arg(long)]
        stale: bool,
    },
    /// Check an evidence bundle offline: file hashes, every signature, every chain link, and
    /// the results recomputed from the sheets against the county's. Exits 3 with findings.
    Verify {
        /// The bundle folder `tally export` wrote.
        bundle: PathBuf,
        #[command(flatten)]
        anchors: crate::evidence_cmd::AnchorArgs,
        #[arg(long, short, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// The county at a glance (as an operator): every replica and every township aggregator,
    /// with what needs attention; exits 3 when something does.
    Status(crate::status_cmd::StatusArgs),
    /// Publish the list of elected deputies (当选代表名单): a printable HTML report per
    /// congress, and CSV and JSON exports of all results. Exits 3 when a contest is not decided.
    Publish(crate::publish::PublishArgs),
    /// Forward signed sheets to the county cluster as a township (countersigned batches).
    Submit(crate::county_cmd::SubmitArgs),
    /// Run a township aggregator (--config township.toml), import sheets carried offline, or
    /// show the township's picture.
    Township(crate::township_cmd::TownshipArgs),
    /// A polling unit's device: fill in a sheet by double entry, sign and submit it to the
    /// township through a local journal, correct it, print it as a QR code.
    #[command(subcommand)]
    Village(crate::village_cmd::VillageCommand),
    /// The whole chain on the built-in sample county: a county cluster, township aggregators
    /// and polling units as processes on 127.0.0.1 (--offline: count the sample in-process).
    Demo(crate::demo_net::DemoArgs),
}

#[derive(Subcommand)]
enum SheetCommand {
    /// Check a clerk's sheet files against the definition and sign them with the unit's key.
    Sign {
        #[arg(long, short)]
        definition: PathBuf,
        /// The unit's secret key file (from `tally keygen`).
        #[arg(long, short)]
        key: PathBuf,
        /// Where to write the signed sheets (a .sheets bundle).
        #[arg(long, short)]
        out: PathBuf,
        /// An amendment file the county recorded (`tally amend`): the unit's new key, or a
        /// unit added on the day. Repeat in order.
        #[arg(long = "amendment")]
        amendments: Vec<PathBuf>,
        /// Sheet files (TOML) as the clerk filled them in.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Verify the signatures and check the numbers of signed sheets.
    Verify {
        #[arg(long, short)]
        definition: PathBuf,
        /// Signed-sheet bundles (.sheets), or folders of them.
        #[arg(required = true)]
        sheets: Vec<PathBuf>,
        #[arg(long, short, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(Outcome::Clean) => ExitCode::SUCCESS,
        Ok(Outcome::Findings) => ExitCode::from(EXIT_FINDINGS),
        Ok(Outcome::Refused) => ExitCode::from(EXIT_FAILURE),
        Ok(Outcome::Pending) => ExitCode::from(EXIT_PENDING),
        Ok(Outcome::Stopped(status)) => ExitCode::from(status),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

fn run(command: Command) -> Result<Outcome> {
    match command {
        Command::Keygen { out, format } => keygen(&out, format),
        Command::Sheet(SheetCommand::Sign {
            definition,
            key,
            out,
            amendments,
            files,
        }) => sign(&definition, &amendments, &key, &out, &files),
        Command::Sheet(SheetCommand::Verify {
            definition,
            sheets,
            format,
        }) => verify(&definition, &sheets, format),
        Command::Results {
            definition,
            sheets,
            format,
        } => results(&definition, &sheets, format),
        Command::Seats {
            definition,
            weights,
            total,
            method,
            min,
            max,
            threshold_percent,
            tie_rule,
            format,
        } => report::seats_command(report::SeatsArgs {
            definition: definition.as_deref(),
            weights: weights.as_deref(),
            total,
            method: method.as_deref(),
            min,
            max,
            threshold_percent,
            tie_rule: tie_rule.as_deref(),
            format,
        }),
        Command::Gen {
            out,
            sample,
            seed,
            townships,
            population,
            voters_per_station,
            no_scenarios,
        } => {
            let params = if sample {
                GenParams::sample()
            } else {
                GenParams {
                    seed,
                    county_name: "合成县".into(),
                    townships,
                    population,
                    voters_per_station,
                    scenarios: !no_scenarios,
                }
            };
            let summary = write_generated(&params, &out)?;
            crate::say!("{summary}");
            Ok(Outcome::Clean)
        }
        Command::Demo(args) => crate::demo_net::run(args),
        Command::Certs(args) => crate::certs_cmd::run(&args),
        Command::County { config } => crate::county_cmd::serve(&config),
        Command::Cluster(command) => crate::county_cmd::cluster(command),
        Command::Amend(command) => crate::amend_cmd::run(command),
        Command::ZeroReport(command) => crate::amend_cmd::zero_report(command),
        Command::Committee(command) => crate::committee_cmd::run(command),
        Command::Codes => {
            crate::say_part!("{}", tally_core::validate::findings_table());
            Ok(Outcome::Clean)
        }
        Command::Export {
            client,
            operator,
            definition,
            out,
            stale,
        } => crate::evidence_cmd::export(crate::evidence_cmd::ExportArgs {
            client,
            operator,
            definition,
            out,
            stale,
        }),
        Command::Verify {
            bundle,
            anchors,
            format,
        } => crate::evidence_cmd::verify(&bundle, &anchors.anchors()?, format),
        Command::Status(args) => crate::status_cmd::run(args),
        Command::Publish(args) => crate::publish::run(args),
        Command::Submit(args) => crate::county_cmd::submit(args),
        Command::Township(args) => crate::township_cmd::run(args),
        Command::Village(command) => crate::village_cmd::run(command),
    }
}

/// The apportionment methods by name, so `--help` lists them and another name is a usage
/// error (exit 2).
fn method_names() -> clap::builder::PossibleValuesParser {
    clap::builder::PossibleValuesParser::new(
        tally_core::apportion::Method::ALL.map(tally_core::apportion::Method::name),
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KeygenFormat {
    Text,
    Json,
}

fn keygen(out: &Path, format: KeygenFormat) -> Result<Outcome> {
    let mut seed = [0u8; 32];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut seed);
    let key = ed25519_dalek::SigningKey::from_bytes(&seed);
    files::write_secret(
        out,
        &format!(
            "# tally unit signing key (Ed25519 secret). Keep it on the unit's machine only.\n{}\n",
            hex::encode(seed)
        ),
    )?;
    let public = key.verifying_key();
    let key_id = tally_core::ids::KeyId::of(&public);
    match format {
        KeygenFormat::Json => crate::say!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "secret_key_file": out.display().to_string(),
                "public_key": hex::encode(public.as_bytes()),
                "key_id": key_id.to_string(),
            }))?
        ),
        KeygenFormat::Text => {
            crate::say!("secret key written to {}", out.display());
            crate::say!(
                "public key (put it in the unit's public_key field): {}",
                hex::encode(public.as_bytes())
            );
            crate::say!("key id: {key_id}");
        }
    }
    Ok(Outcome::Clean)
}

fn sign(
    definition: &Path,
    amendments: &[PathBuf],
    key: &Path,
    out: &Path,
    sheet_files: &[PathBuf],
) -> Result<Outcome> {
    let definition = files::load_amended(definition, amendments)?;
    let key = read_secret_key(key)?;
    let key_id = tally_core::ids::KeyId::of(&key.verifying_key());
    let Some(unit) = definition.unit_by_key(&key_id) else {
        bail!(
            "the key's public key (id {key_id}) is not the key of any unit in the definition; check the unit's public_key"
        );
    };
    let mut signed = Vec::new();
    let mut problems = Vec::new();
    for path in sheet_files {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the sheet file {}", path.display()))?;
        let sheet = tally_core::sheet_file::parse(&path.display().to_string(), &text)?;
        if sheet.unit != unit.id {
            problems.push(format!(
                "{}: the sheet is for unit {}, but the key is unit {}'s",
                path.display(),
                sheet.unit,
                unit.id
            ));
            continue;
        }
        let findings = tally_core::validate::check_sheet(&definition, &sheet);
        for f in &findings {
            let kind = if f.is_error() { "error" } else { "warning" };
            eprintln!("{}: {kind} {f}", path.display());
        }
        if findings.iter().any(|f| f.is_error()) {
            problems.push(format!(
                "{}: not signed, fix the errors above and sign again",
                path.display()
            ));
            continue;
        }
        signed.push(tally_proto::sign(&sheet, &key, &definition.election));
    }
    if !problems.is_empty() {
        bail!("{}", problems.join("\n"));
    }
    // A bundle already there may hold sheets not yet sent; never overwrite it silently.
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(out)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                anyhow::anyhow!(
                    "{} already exists; give a new file name (a bundle may hold sheets not yet sent)",
                    out.display()
                )
            } else {
                anyhow::anyhow!("cannot create {}: {e}", out.display())
            }
        })?;
    std::io::Write::write_all(&mut file, &tally_proto::write_bundle(&signed))
        .with_context(|| format!("cannot write {}", out.display()))?;
    crate::say!(
        "signed {} sheet(s) of unit {} into {}",
        signed.len(),
        unit.id,
        out.display()
    );
    Ok(Outcome::Clean)
}

/// Refuses to report on nothing: an empty set of bundles is a mistake worth naming.
fn require_sheets(bundles: &[(PathBuf, Vec<tally_proto::SignedSheet>)]) -> Result<()> {
    if bundles.iter().all(|(_, sheets)| sheets.is_empty()) {
        let names: Vec<String> = bundles
            .iter()
            .map(|(p, _)| p.display().to_string())
            .collect();
        bail!("{} hold no signed sheets", names.join(", "));
    }
    Ok(())
}

fn verify(definition: &Path, sheets: &[PathBuf], format: Format) -> Result<Outcome> {
    let definition = load_definition(definition)?;
    let bundles = read_bundles(sheets)?;
    require_sheets(&bundles)?;
    let intake = intake(&definition, &bundles);
    report::print_intake(&intake, format)?;
    Ok(if intake.has_findings() {
        Outcome::Findings
    } else {
        Outcome::Clean
    })
}

fn results(definition: &Path, sheets: &[PathBuf], format: Format) -> Result<Outcome> {
    let definition = load_definition(definition)?;
    let bundles = read_bundles(sheets)?;
    require_sheets(&bundles)?;
    let intake = intake(&definition, &bundles);
    let result = tally_core::results::compute(&definition, &intake.ledger);
    report::print_results(&definition, &intake, &result, format)?;
    Ok(if intake.has_findings() || !result.findings.is_empty() {
        Outcome::Findings
    } else {
        Outcome::Clean
    })
}
