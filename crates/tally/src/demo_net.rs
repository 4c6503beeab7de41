//! `tally demo`: the whole chain on the built-in sample county, as real processes talking gRPC
//! over mutual TLS on 127.0.0.1.
//!
//! It generates the county, a dev CA with a certificate for every replica, township, polling
//! unit and the operator, and the config of each ([`tally_localnet`]); starts a three-replica
//! county cluster and one aggregator per township (`tally county`, `tally township`); and lets
//! every polling unit submit its signed sheets through its own `tally village submit` process,
//! spread over a window as counts close through the evening. Partway it kills the county
//! leader with SIGKILL and starts it again; a township clerk imports a few sheets a second time
//! from the offline copies (answered DUPLICATE); a correction and the second-round votes
//! follow. It ends with the county's results (checked against an offline recount of the same
//! sheets), the seat allocation and the replication status, and leaves everything in one
//! folder.

use crate::client::ClientArgs;
use crate::county_cmd;
use crate::outcome::Outcome;
use crate::report::{self, Format};
use crate::say;
use anyhow::{Context, Result, bail};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tally_localnet::{Layout, LocalCounty, Proc, REPLICAS, Watch};
use tally_proto::SignedSheet;
use tally_synth::GenParams;

/// Village processes running at once: a machine of two cores also runs the cluster and the
/// townships.
const VILLAGES_AT_ONCE: usize = 6;
/// How long the county may take to count the last sheet after the last village is done.
const DRAIN_DEADLINE: Duration = Duration::from_secs(180);
/// Units whose sheets the township clerk imports a second time from the offline copies.
const DUPLICATE_IMPORTS: usize = 3;

#[derive(clap::Args)]
pub struct DemoArgs {
    /// Where to keep the demo's files (default: a new folder under the system temp dir).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Run the offline path only: verify and count the sample's sheets in this process.
    #[arg(long)]
    pub offline: bool,
    /// Seconds over which the polling units' first reports arrive.
    #[arg(long, default_value_t = 20.0)]
    pub pace: f64,
    /// Keep the cluster and the townships running at the end, until Ctrl-C.
    #[arg(long)]
    pub keep_running: bool,
}

pub fn run(args: DemoArgs) -> Result<Outcome> {
    let dir = match &args.dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("tally-demo-{}", std::process::id())),
    };
    if args.offline {
        return crate::demo::run(Some(dir));
    }
    if !(0.0..=3600.0).contains(&args.pace) {
        bail!("--pace {}: give 0 to 3600 seconds", args.pace);
    }
    let started = Instant::now();
    say!(
        "tally demo: the whole chain on the built-in sample county, as processes on 127.0.0.1\n\
         【演练 / REHEARSAL】 the sample county is a rehearsal (its definition's [election] mode), and says so\n"
    );
    let program = tally_localnet::this_program()?;
    let mut county = LocalCounty::prepare_noting(
        &dir,
        &GenParams::sample(),
        &program,
        tally_localnet::Options { http: true },
        &|line| say!("{line}"),
    )?;
    let waves = Waves::split(&county)?;
    let runtime = crate::client::runtime()?;
    let outcome = runtime.block_on(drive(&args, &mut county, &waves));
    if args.keep_running && outcome.is_ok() {
        say!("\nThe cluster and the townships keep running; Ctrl-C stops them.");
        runtime.block_on(async {
            let _ = tokio::signal::ctrl_c().await;
        });
    }
    county.fleet.stop_all();
    let outcome = outcome?;
    say!(
        "\nDone in {:.0} s. Everything is in {}:",
        started.elapsed().as_secs_f64(),
        county.layout.root.display()
    );
    explain(&county);
    Ok(outcome)
}

/// Each unit's sheets as bundles in its folder, by when they are sent.
struct Waves {
    /// Per unit, in the order their counts close: the bundle of its first reports.
    first_reports: Vec<(String, PathBuf)>,
    /// Corrections (a version above 1).
    corrections: Vec<(String, PathBuf)>,
    /// The later rounds the first one called for.
    later_rounds: Vec<(String, PathBuf)>,
}

impl Waves {
    fn split(county: &LocalCounty) -> Result<Waves> {
        let layout = &county.layout;
        // Split the sample's sheets into the unit's bundles: first reports, corrections, later
        // rounds. A unit's first reports go in the order its counts closed.
        let sheets = &county.sheets;
        let mut first: BTreeMap<String, (i64, Vec<SignedSheet>)> = BTreeMap::new();
        let mut corrections: BTreeMap<String, Vec<SignedSheet>> = BTreeMap::new();
        let mut later: BTreeMap<String, Vec<SignedSheet>> = BTreeMap::new();
        for (signed, sheet) in sheets.iter().zip(&county.generated.sheets) {
            let unit = sheet.unit.to_string();
            if sheet.round.0 > 1 {
                later.entry(unit).or_default().push(signed.clone());
            } else if sheet.version > 1 {
                corrections.entry(unit).or_default().push(signed.clone());
            } else {
                let entry = first.entry(unit).or_insert((i64::MIN, Vec::new()));
                entry.0 = entry.0.max(sheet.count_closed_at.unix_seconds);
                entry.1.push(signed.clone());
            }
        }
        let bundle = |unit: &str, name: &str, sheets: &[SignedSheet]| -> Result<PathBuf> {
            let path = layout.village_dir(unit).join(name);
            fs::write(&path, tally_proto::write_bundle(sheets))
                .with_context(|| format!("cannot write {}", path.display()))?;
            Ok(path)
        };
        let mut order: Vec<(i64, String, Vec<SignedSheet>)> = first
            .into_iter()
            .map(|(unit, (closed, sheets))| (closed, unit, sheets))
            .collect();
        order.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        let mut first_reports = Vec::new();
        for (_, unit, sheets) in &order {
            first_reports.push((unit.clone(), bundle(unit, "first-report.sheets", sheets)?));
        }
        let mut correction_bundles = Vec::new();
        for (unit, sheets) in &corrections {
            correction_bundles.push((unit.clone(), bundle(unit, "correction.sheets", sheets)?));
        }
        let mut later_bundles = Vec::new();
        for (unit, sheets) in &later {
            later_bundles.push((unit.clone(), bundle(unit, "round-2.sheets", sheets)?));
        }
        Ok(Waves {
            first_reports,
            corrections: correction_bundles,
            later_rounds: later_bundles,
        })
    }
}

/// Counters the progress display reads.
#[derive(Default)]
struct Progress {
    units_done: AtomicU64,
    stored: AtomicU64,
    counted: AtomicU64,
}

async fn drive(args: &DemoArgs, county: &mut LocalCounty, waves: &Waves) -> Result<Outcome> {
    say!(
        "4. Starting the county cluster: {} replicas",
        REPLICAS.len()
    );
    let leader = county.start_county().await?;
    say!(
        "   replicas at {}; replica {leader} leads",
        county
            .replica_addresses
            .values()
            .cloned()
            .collect::<Vec<_>>()
            .join(", ")
    );
    if let Some(http) = county.replica_http_addresses.values().next() {
        say!("   the live dashboard: http://{http}/ (and /metrics on every replica)");
    }
    say!(
        "5. Starting {} township aggregators",
        county.township_addresses.len()
    );
    county.start_townships().await?;
    let watch = Watch::new(county)?;

    let units = waves.first_reports.len() as u64;
    let total = county.sheets.len() as u64;
    say!(
        "6. Polling units report: {units} `tally village submit` processes over {:.0} s, {VILLAGES_AT_ONCE} at a time",
        args.pace
    );
    let bars = MultiProgress::new();
    let style = ProgressStyle::with_template("   {prefix:<24} [{bar:40}] {pos:>5}/{len:5} {msg}")
        .expect("a valid template")
        .progress_chars("=> ");
    let unit_bar = bars.add(ProgressBar::new(units).with_style(style.clone()));
    unit_bar.set_prefix("units reported");
    let stored_bar = bars.add(ProgressBar::new(total).with_style(style.clone()));
    stored_bar.set_prefix("sheets at townships");
    let counted_bar = bars.add(ProgressBar::new(total).with_style(style));
    counted_bar.set_prefix("sheets counted at county");
    let progress = Arc::new(Progress::default());
    let say_line = |line: String| {
        if bars.is_hidden() {
            say!("   {line}");
        } else {
            let _ = bars.println(format!("   {line}"));
        }
    };

    // The display: every 200 ms, the townships' and the county's counts.
    let poller = {
        let progress = progress.clone();
        let watch = Watch::new(county)?;
        tokio::spawn(async move {
            loop {
                // The county first: a sheet reaches it only after a township stored it, so
                // read in this order the county never seems ahead of the townships.
                let counted = watch.county_sheets().await;
                if let Some((stored, _)) = watch.townships().await {
                    progress.stored.store(stored, Ordering::Relaxed);
                }
                progress.counted.store(counted, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    let show = {
        let progress = progress.clone();
        let (u, s, c) = (unit_bar.clone(), stored_bar.clone(), counted_bar.clone());
        let hidden = bars.is_hidden();
        tokio::spawn(async move {
            let mut last_line = Instant::now();
            loop {
                let (units_done, stored, counted) = (
                    progress.units_done.load(Ordering::Relaxed),
                    progress.stored.load(Ordering::Relaxed),
                    progress.counted.load(Ordering::Relaxed),
                );
                u.set_position(units_done);
                s.set_position(stored);
                c.set_position(counted);
                if hidden && last_line.elapsed() > Duration::from_secs(5) {
                    say!(
                        "   {units_done} units reported, {stored} sheets at townships, {counted} counted at county"
                    );
                    last_line = Instant::now();
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };

    let mut villages = Villages::new(county, progress.clone());
    let kill_at = waves.first_reports.len() * 2 / 5;
    let first_started = Instant::now();
    let mut killed: Option<(u64, Instant)> = None;
    for (i, (unit, bundle)) in waves.first_reports.iter().enumerate() {
        let due = Duration::from_secs_f64(args.pace * i as f64 / units.max(1) as f64);
        while first_started.elapsed() < due || villages.running() >= VILLAGES_AT_ONCE {
            villages.reap(&say_line)?;
            county.fleet.check_alive()?;
            if let Some((id, at)) = killed
                && at.elapsed() > Duration::from_secs(3)
            {
                restart_replica(county, id, &say_line)?;
                killed = None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if i == kill_at
            && let Some((id, status)) = watch.leader().await
        {
            county
                .fleet
                .replicas
                .get_mut(&id)
                .expect("a known replica")
                .kill();
            say_line(format!(
                "killed replica {id}, the county leader (term {}), with SIGKILL; the townships keep going",
                status.term
            ));
            killed = Some((id, Instant::now()));
        }
        villages.start(unit, bundle)?;
    }
    villages.wait_all(&say_line).await?;
    if let Some((id, _)) = killed {
        restart_replica(county, id, &say_line)?;
    }

    say_line(format!(
        "a township clerk imports {DUPLICATE_IMPORTS} units' sheets a second time, carried from the polling place as QR codes (PNG)"
    ));
    for (unit, _) in waves.first_reports.iter().take(DUPLICATE_IMPORTS) {
        let found = county.definition.unit(&tally_core::ids::UnitId::new(unit));
        let Some(found) = found else {
            bail!("unit {unit} is not in the definition");
        };
        let township = found.township.to_string();
        let mut answers = Vec::new();
        for contest in &found.contests {
            // The unit prints its sheet as a QR code; the township reads the picture.
            let png = county
                .layout
                .village_dir(unit)
                .join(format!("qr-{contest}.png"));
            let village = county.layout.village_dir(unit).join("village.toml");
            run_quiet(
                Command::new(&county.program)
                    .args(["village", "qr", "--contest", contest.as_str(), "--config"])
                    .arg(&village)
                    .arg("--png")
                    .arg(&png),
                "tally village qr",
            )?;
            let text = run_quiet(
                Command::new(&county.program)
                    .args(["township", "import", "--config"])
                    .arg(county.layout.township_config(&township))
                    .arg(&png),
                "tally township import",
            )?;
            answers.push(if text.contains(": duplicate:") {
                format!("{contest} duplicate")
            } else {
                format!("{contest}: {}", text.lines().next().unwrap_or_default())
            });
        }
        say_line(format!(
            "  {unit} at township {township}: {} (counted once)",
            answers.join(", ")
        ));
    }
    if !waves.corrections.is_empty() {
        say_line(format!(
            "{} unit(s) correct a sheet: a new version, signed again, replaces the first",
            waves.corrections.len()
        ));
        for (unit, bundle) in &waves.corrections {
            villages.start(unit, bundle)?;
        }
        villages.wait_all(&say_line).await?;
    }
    if !waves.later_rounds.is_empty() {
        say_line(format!(
            "{} units report the second round (revotes, run-offs and further elections the first round called for)",
            waves.later_rounds.len()
        ));
        for (unit, bundle) in &waves.later_rounds {
            villages.start(unit, bundle)?;
            while villages.running() >= VILLAGES_AT_ONCE {
                villages.reap(&say_line)?;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        villages.wait_all(&say_line).await?;
    }
    let last_arrival = Instant::now();

    // Wait for every township to have forwarded everything, and the county to have it.
    let deadline = Instant::now() + DRAIN_DEADLINE;
    loop {
        county.fleet.check_alive()?;
        let townships = watch.townships().await;
        let chain = watch.county_sheets().await;
        if matches!(townships, Some((_, 0))) && chain >= total {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "the county has {chain} of {total} sheets {} s after the last arrival (townships: {townships:?} stored, waiting); see the logs in {}",
                DRAIN_DEADLINE.as_secs(),
                county.layout.logs.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let drained = last_arrival.elapsed();
    progress.counted.store(total, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(150)).await;
    poller.abort();
    show.abort();
    unit_bar.finish();
    stored_bar.finish();
    counted_bar.finish();
    drop(bars);
    say!(
        "   all {total} sheets counted at the county {:.1} s after the last one arrived at a township; {} village runs, {} retried",
        drained.as_secs_f64(),
        villages.runs,
        villages.retried
    );

    say!("\n7. The county's result, read from the cluster (linearizable)\n");
    let outcome = county_results(county).await?;

    say!("\n8. The committee closes the count: decisions, confirmation, publication\n");
    crate::demo_committee::run(county).await?;

    say!("\n9. Seats (Art 12) and the apportionment of county seats to townships\n");
    report::definition_seats(
        &county.definition,
        county.definition.rules.apportionment,
        county.definition.rules.apportionment_tie_rule,
        Format::Table,
    )?;

    say!("\n10. Replication status\n");
    let (servers, pki, files) = county.operator_client()?;
    let client = ClientArgs { servers, pki };
    // The restarted replica may still be catching up for a moment; status says so.
    for _ in 0..50 {
        if crate::client::healthy(&client, &files).await? {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    county_cmd::status(&client, &files, Format::Table).await?;
    Ok(outcome)
}

/// Starts a killed replica again with the same config and data.
fn restart_replica(county: &mut LocalCounty, id: u64, say_line: &dyn Fn(String)) -> Result<()> {
    let Some(replica) = county.fleet.replicas.get_mut(&id) else {
        bail!("replica {id} is not one the demo started");
    };
    replica.spawn()?;
    say_line(format!(
        "replica {id} started again: it catches up from the others"
    ));
    Ok(())
}

/// Runs a short command to its end; its standard output, or an error with everything it said.
fn run_quiet(command: &mut Command, what: &str) -> Result<String> {
    let output = command
        .output()
        .with_context(|| format!("cannot run {what}"))?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        bail!(
            "{what} failed ({}):\n{text}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(text)
}

/// The village processes in flight.
struct Villages {
    program: PathBuf,
    layout: Layout,
    progress: Arc<Progress>,
    running: Vec<(String, PathBuf, Proc, u32)>,
    runs: usize,
    retried: usize,
}

impl Villages {
    fn new(county: &LocalCounty, progress: Arc<Progress>) -> Self {
        Villages {
            program: county.program.clone(),
            layout: county.layout.clone(),
            progress,
            running: Vec::new(),
            runs: 0,
            retried: 0,
        }
    }

    fn running(&self) -> usize {
        self.running.len()
    }

    fn start(&mut self, unit: &str, bundle: &Path) -> Result<()> {
        let proc = self.spawn(unit, bundle)?;
        self.running
            .push((unit.to_owned(), bundle.to_path_buf(), proc, 1));
        Ok(())
    }

    fn spawn(&mut self, unit: &str, bundle: &Path) -> Result<Proc> {
        self.runs += 1;
        Ok(self
            .layout
            .village_submit(&self.program, unit, &[bundle.to_path_buf()])?)
    }

    /// Collects the villages that have finished. One still holding pending sheets (the
    /// township was unreachable for its whole retry window) runs again, as the clerk would.
    fn reap(&mut self, say_line: &dyn Fn(String)) -> Result<()> {
        let mut i = 0;
        while i < self.running.len() {
            let Some(status) = self.running[i].2.exited() else {
                i += 1;
                continue;
            };
            let (unit, bundle, proc, attempt) = self.running.swap_remove(i);
            match status.code() {
                Some(0) => {
                    self.progress.units_done.fetch_add(1, Ordering::Relaxed);
                }
                Some(2) if attempt < 5 => {
                    say_line(format!(
                        "village {unit}: sheets still pending, run again (attempt {})",
                        attempt + 1
                    ));
                    self.retried += 1;
                    let proc = self.spawn(&unit, &bundle)?;
                    self.running.push((unit, bundle, proc, attempt + 1));
                }
                _ => bail!(
                    "village {unit} ended with {status}; the end of its log {}:\n{}",
                    proc.log.display(),
                    proc.log_tail()
                ),
            }
        }
        Ok(())
    }

    async fn wait_all(&mut self, say_line: &dyn Fn(String)) -> Result<()> {
        while !self.running.is_empty() {
            self.reap(say_line)?;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }
}

/// Prints the county's result and checks it against an offline recount of the same sheets.
async fn county_results(county: &LocalCounty) -> Result<Outcome> {
    let response = county.county_results().await?;
    let online: serde_json::Value =
        serde_json::from_str(&response.result_json).context("the county's result_json")?;

    let bundles = vec![(
        county.layout.county.join("sheets.sheets"),
        county.sheets.clone(),
    )];
    let intake = tally_evidence::intake::intake(&county.definition, &bundles);
    let offline = tally_core::results::compute(&county.definition, &intake.ledger);
    let same = serde_json::to_value(&offline)? == online;
    say!(
        "{} — replica {} answered at log index {}: {} sheets in the hash chain, head {}",
        response.election,
        response.replica_id,
        response.log_index,
        response.chain_length,
        hex::encode(&response.chain_head[..response.chain_head.len().min(8)])
    );
    if !same {
        bail!(
            "the county's result differs from an offline recount of the {} sheets the polling units signed; keep {} and report this",
            county.sheets.len(),
            county.layout.root.display()
        );
    }
    say!(
        "It equals an offline recount of the {} signed sheets, each counted once.\n",
        county.sheets.len()
    );
    crate::say_part!(
        "{}",
        report::results_table(&county.definition, &intake, &offline)
    );
    Ok(if response.conflicts.is_empty() {
        Outcome::Clean
    } else {
        Outcome::Findings
    })
}

/// Where to look afterwards.
fn explain(county: &LocalCounty) {
    let (layout, setup) = (&county.layout, county);
    let program = tally_localnet::this_program()
        .map_or_else(|_| "tally".to_owned(), |p| p.display().to_string());
    let root = &layout.root;
    say!("  sample-county/   the election definition, keys and every signed sheet");
    say!(
        "  pki/             the dev CA and a certificate for every replica, township, unit and the operator"
    );
    say!("  servers/         replica-N.toml and township-T.toml; their data in servers/data/");
    say!("  villages/UNIT/   each polling unit's config, journal and log");
    say!("  logs/            each server's log");
    say!(
        "  committee/       the committee's acts (decisions, confirmations), each signed by 3 officials"
    );
    say!("  evidence/        the county's evidence bundle (`tally verify evidence`)");
    say!(
        "  papers/          the official papers printed from it: reports, lists of the elected, certificates"
    );
    let servers = setup
        .replica_addresses
        .values()
        .cloned()
        .collect::<Vec<_>>()
        .join(",");
    say!("Start the servers again, each in its own terminal (or add --keep-running to the demo):");
    for id in REPLICAS {
        say!(
            "  {program} county --config {}",
            layout.replica_config(id).display()
        );
    }
    say!(
        "  {program} township --config {}   (and the other townships)",
        layout.township_config("T01").display()
    );
    say!("then look:");
    for http in county.replica_http_addresses.values() {
        say!("  http://{http}/   the dashboard of a replica (and /metrics)");
    }
    say!(
        "  {program} cluster status  --servers {servers} --pki {}",
        layout.pki.display()
    );
    say!(
        "  {program} cluster results --servers {servers} --pki {}",
        layout.pki.display()
    );
    say!(
        "  {program} township picture --config {}",
        layout.township_config("T01").display()
    );
    say!(
        "  {program} village status --config {}",
        root.join("villages/T01-U001/village.toml").display()
    );
    say!(
        "Or count offline: {program} results --definition {} --sheets {}",
        layout.county.join("election.toml").display(),
        layout.county.join("sheets.sheets").display()
    );
}
