//! `tally demo`: the whole chain on the built-in sample county, as real processes talking gRPC
//! over mutual TLS on 127.0.0.1.
//!
//! It generates the county, a dev CA with a certificate for every replica, township, polling
//! unit and the operator, and the config of each; starts a three-replica county cluster and
//! one aggregator per township (`tally county`, `tally township`); and lets every polling unit
//! submit its signed sheets through its own `tally village submit` process, spread over a
//! window as counts close through the evening. Partway it kills the county leader with SIGKILL
//! and starts it again; a township clerk imports a few sheets a second time from the offline
//! copies (answered DUPLICATE); a correction and the second-round votes follow. It ends with
//! the county's results (checked against an offline recount of the same sheets), the seat
//! allocation and the replication status, and leaves everything in one folder.
//!
//! Every process is a child of this one; whatever happens (an error, Ctrl-C), [`Fleet`]'s drop
//! stops them, so a demo never leaves servers behind.

use crate::cli::Outcome;
use crate::county_cmd::{self, ClientArgs};
use crate::files::load_definition;
use crate::report::{self, Format};
use crate::say;
use anyhow::{Context, Result, anyhow, bail};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tally_core::definition::Definition;
use tally_net::{Identity, Role, TlsFiles};
use tally_proto::SignedSheet;
use tally_rpc::pb;
use tally_rpc::pb::county_client::CountyClient;
use tally_rpc::pb::township_client::TownshipClient;
use tally_synth::GenParams;
use tonic::transport::{Channel, ClientTlsConfig};

/// The replicas of the demo's county cluster.
const REPLICAS: [u64; 3] = [1, 2, 3];
/// The operator whose certificate the demo watches with.
const OPERATOR: &str = "operator";
/// Village processes running at once: a machine of two cores also runs the cluster and the
/// townships.
const VILLAGES_AT_ONCE: usize = 6;
/// How long a server may take to come up before the demo gives up and shows its log.
const START_DEADLINE: Duration = Duration::from_secs(60);
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
    say!("tally demo: the whole chain on the built-in sample county, as processes on 127.0.0.1\n");
    let layout = Layout::new(&dir)?;
    let setup = prepare(&layout)?;
    let runtime = county_cmd::runtime()?;
    let mut fleet = Fleet::default();
    let outcome = runtime.block_on(drive(&args, &layout, &setup, &mut fleet));
    let keep = args.keep_running && outcome.is_ok();
    if keep {
        say!("\nThe cluster and the townships keep running; Ctrl-C stops them.");
        runtime.block_on(async {
            let _ = tokio::signal::ctrl_c().await;
        });
    }
    fleet.stop_all();
    let outcome = outcome?;
    say!(
        "\nDone in {:.0} s. Everything is in {}:",
        started.elapsed().as_secs_f64(),
        dir.display()
    );
    explain(&layout, &setup);
    Ok(outcome)
}

/// Where everything lives under the demo folder.
struct Layout {
    root: PathBuf,
    county: PathBuf,
    pki: PathBuf,
    keys: PathBuf,
    servers: PathBuf,
    villages: PathBuf,
    logs: PathBuf,
}

impl Layout {
    fn new(root: &Path) -> Result<Layout> {
        if root.exists()
            && fs::read_dir(root)
                .with_context(|| format!("cannot list {}", root.display()))?
                .next()
                .is_some()
        {
            bail!(
                "{} is not empty; give a new folder with --dir (the demo never overwrites)",
                root.display()
            );
        }
        let layout = Layout {
            root: root.to_path_buf(),
            county: root.join("sample-county"),
            pki: root.join("pki"),
            keys: root.join("keys"),
            servers: root.join("servers"),
            villages: root.join("villages"),
            logs: root.join("logs"),
        };
        for d in [&layout.keys, &layout.servers, &layout.villages, &layout.logs] {
            fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
        }
        Ok(layout)
    }

    fn replica_config(&self, id: u64) -> PathBuf {
        self.servers.join(format!("replica-{id}.toml"))
    }

    fn township_config(&self, township: &str) -> PathBuf {
        self.servers.join(format!("township-{township}.toml"))
    }

    fn village_dir(&self, unit: &str) -> PathBuf {
        self.villages.join(unit)
    }
}

/// What the set-up made: the definition, addresses, and each unit's sheets by wave.
struct Setup {
    definition: Arc<Definition>,
    replica_addresses: BTreeMap<u64, String>,
    township_addresses: BTreeMap<String, String>,
    /// Every signed sheet of the sample, in the generator's arrival order.
    sheets: Vec<SignedSheet>,
    /// Per unit, in the order their counts close: the bundle of its first reports.
    first_reports: Vec<(String, PathBuf)>,
    /// Corrections (a version above 1), then the later rounds, as bundles per unit.
    corrections: Vec<(String, PathBuf)>,
    later_rounds: Vec<(String, PathBuf)>,
}

fn prepare(layout: &Layout) -> Result<Setup> {
    let step = Instant::now();
    say!("1. Generating the sample county, its keys and every polling unit's signed sheets");
    let written = crate::cli::write_generated_full(&GenParams::sample(), &layout.county)?;
    say!("   {}", written.summary);
    let definition = Arc::new(load_definition(&layout.county.join("election.toml"))?);
    let generated = &written.generated;

    say!(
        "2. Making a dev CA and certificates: {} replicas, {} townships, {} polling units, 1 operator",
        REPLICAS.len(),
        generated.townships.len(),
        generated.units.len()
    );
    let mut identities = Vec::new();
    for id in REPLICAS {
        identities.push(Identity::replica(id)?);
    }
    for t in &generated.townships {
        identities.push(Identity::new(Role::Township, t.id.as_str())?);
    }
    identities.push(Identity::new(Role::Operator, OPERATOR)?);
    for u in &generated.units {
        identities.push(Identity::new(Role::Village, u.id.as_str())?);
    }
    let hosts = vec!["127.0.0.1".to_owned(), "localhost".to_owned()];
    let pki = tally_net::write_dev_pki_for(
        &layout.pki,
        &generated.params.county_name,
        &identities,
        &hosts,
    )
    .with_context(|| format!("cannot make certificates in {}", layout.pki.display()))?;
    say!(
        "   {} files in {} ({:.1} s)",
        pki.written.len(),
        layout.pki.display(),
        step.elapsed().as_secs_f64()
    );

    say!("3. Writing a config for every replica, township and polling unit");
    let ports = free_ports(REPLICAS.len() + generated.townships.len())?;
    let replica_addresses: BTreeMap<u64, String> = REPLICAS
        .iter()
        .zip(&ports)
        .map(|(id, port)| (*id, format!("127.0.0.1:{port}")))
        .collect();
    let township_addresses: BTreeMap<String, String> = generated
        .townships
        .iter()
        .zip(&ports[REPLICAS.len()..])
        .map(|(t, port)| (t.id.clone(), format!("127.0.0.1:{port}")))
        .collect();
    let definition_path = layout.county.join("election.toml");
    for id in REPLICAS {
        write_config(
            &layout.replica_config(id),
            &replica_config(id, &replica_addresses, &definition_path, layout),
        )?;
    }
    let county_list = replica_addresses
        .values()
        .map(|a| format!("{a:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    for (township, key) in &generated.township_keys {
        let key_path = layout.keys.join(format!("township-{township}.key"));
        crate::files::write_secret(&key_path, &format!("{}\n", hex::encode(key.to_bytes())))?;
        let t = township.as_str();
        let text = format!(
            "# Township aggregator {t} of the demo county.\n\
             township_id = \"{t}\"\n\
             listen = \"{listen}\"\n\
             data_dir = \"data/township-{t}\"\n\
             definition = {definition:?}\n\
             countersign_key = {key:?}\n\
             county = [{county_list}]\n\
             [tls]\n\
             ca = {ca:?}\n\
             cert = {cert:?}\n\
             key = {tls_key:?}\n",
            listen = township_addresses[t],
            definition = path_text(&definition_path),
            key = path_text(&key_path),
            ca = path_text(&layout.pki.join("ca.pem")),
            cert = path_text(&layout.pki.join(format!("township-{t}.pem"))),
            tls_key = path_text(&layout.pki.join(format!("township-{t}.key"))),
        );
        write_config(&layout.township_config(t), &text)?;
    }
    for unit in &generated.units {
        let u = unit.id.as_str();
        let dir = layout.village_dir(u);
        fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let key_path = dir.join("unit.key");
        crate::files::write_secret(&key_path, &format!("{}\n", hex::encode(unit.key.to_bytes())))?;
        let township = &generated.townships[unit.township].id;
        let text = format!(
            "# Polling unit {u} ({name}) of the demo county.\n\
             unit_id = \"{u}\"\n\
             township = \"{township_address}\"\n\
             signing_key = \"unit.key\"\n\
             definition = {definition:?}\n\
             journal = \"journal\"\n\
             [tls]\n\
             ca = {ca:?}\n\
             cert = {cert:?}\n\
             key = {tls_key:?}\n",
            name = unit.name,
            township_address = township_addresses[township],
            definition = path_text(&definition_path),
            ca = path_text(&layout.pki.join("ca.pem")),
            cert = path_text(&layout.pki.join(format!("village-{u}.pem"))),
            tls_key = path_text(&layout.pki.join(format!("village-{u}.key"))),
        );
        write_config(&dir.join("village.toml"), &text)?;
    }

    // Split the sample's sheets into the unit's bundles: first reports, corrections, later
    // rounds. A unit's first reports go in the order its counts closed.
    let sheets = written.signed;
    let mut first: BTreeMap<String, (i64, Vec<SignedSheet>)> = BTreeMap::new();
    let mut corrections: BTreeMap<String, Vec<SignedSheet>> = BTreeMap::new();
    let mut later: BTreeMap<String, Vec<SignedSheet>> = BTreeMap::new();
    for (signed, sheet) in sheets.iter().zip(&generated.sheets) {
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
    Ok(Setup {
        definition,
        replica_addresses,
        township_addresses,
        sheets,
        first_reports,
        corrections: correction_bundles,
        later_rounds: later_bundles,
    })
}

fn replica_config(
    id: u64,
    addresses: &BTreeMap<u64, String>,
    definition: &Path,
    layout: &Layout,
) -> String {
    let mut text = format!(
        "# Replica {id} of the demo county's coordinator.\n\
         cluster_id = \"demo-county\"\n\
         replica_id = {id}\n\
         listen = \"{listen}\"\n\
         data_dir = \"data/replica-{id}\"\n\
         definition = {definition:?}\n\
         initial_voters = [{voters}]\n\
         [peers]\n",
        listen = addresses[&id],
        definition = path_text(definition),
        voters = REPLICAS.map(|r| r.to_string()).join(", "),
    );
    for (peer, address) in addresses {
        let _ = writeln!(text, "{peer} = \"{address}\"");
    }
    let _ = write!(
        text,
        "[tls]\nca = {:?}\ncert = {:?}\nkey = {:?}\n",
        path_text(&layout.pki.join("ca.pem")),
        path_text(&layout.pki.join(format!("replica-{id}.pem"))),
        path_text(&layout.pki.join(format!("replica-{id}.key"))),
    );
    text
}

/// A path as TOML string content (the configs are read by tally, which takes UTF-8 paths).
fn path_text(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

fn write_config(path: &Path, text: &str) -> Result<()> {
    fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// Ports free on 127.0.0.1 now, all different. Another program could take one before the
/// server binds it; the server then says the port is in use, and the demo shows that.
fn free_ports(n: usize) -> Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()
        .context("cannot find free ports on 127.0.0.1")?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr()?.port()))
        .collect::<std::io::Result<Vec<u16>>>()
        .context("cannot read a port")
}

/// One child process: a replica, a township or a village, with its log file.
struct Proc {
    name: String,
    args: Vec<OsString>,
    log: PathBuf,
    child: Option<Child>,
}

impl Proc {
    fn start(name: &str, args: Vec<OsString>, log: PathBuf) -> Result<Proc> {
        let mut proc = Proc {
            name: name.to_owned(),
            args,
            log,
            child: None,
        };
        proc.spawn()?;
        Ok(proc)
    }

    fn spawn(&mut self) -> Result<()> {
        let exe = std::env::current_exe().context("cannot find the tally program")?;
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("cannot open {}", self.log.display()))?;
        let child = Command::new(exe)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .env("TALLY_LOG", std::env::var("TALLY_LOG").unwrap_or("info".into()))
            .spawn()
            .with_context(|| format!("cannot start {}", self.name))?;
        self.child = Some(child);
        Ok(())
    }

    /// The exit status if the process has ended.
    fn exited(&mut self) -> Option<ExitStatus> {
        self.child.as_mut()?.try_wait().ok().flatten()
    }

    /// SIGKILL, as a power cut or a crash would end it.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then SIGKILL if it has not stopped within a few seconds.
    fn terminate(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if child.try_wait().ok().flatten().is_some() {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }
}

/// The long-running servers; stopped when dropped.
#[derive(Default)]
struct Fleet {
    replicas: BTreeMap<u64, Proc>,
    townships: BTreeMap<String, Proc>,
}

impl Fleet {
    fn stop_all(&mut self) {
        for p in self.townships.values_mut() {
            p.terminate();
        }
        for p in self.replicas.values_mut() {
            p.terminate();
        }
    }

    /// An error naming the first server that ended on its own, with the end of its log.
    fn check_alive(&mut self) -> Result<()> {
        for p in self.replicas.values_mut().chain(self.townships.values_mut()) {
            if p.child.is_some()
                && let Some(status) = p.exited()
            {
                bail!(
                    "{} stopped ({status}); the end of its log {}:\n{}",
                    p.name,
                    p.log.display(),
                    p.log_tail()
                );
            }
        }
        Ok(())
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.stop_all();
    }
}

fn os_args(args: &[&str]) -> Vec<OsString> {
    args.iter().map(OsString::from).collect()
}

/// The operator's view: channels to every replica and township.
struct Watch {
    replicas: BTreeMap<u64, Channel>,
    townships: BTreeMap<String, Channel>,
}

impl Watch {
    fn new(layout: &Layout, setup: &Setup) -> Result<Watch> {
        let identity = Identity::new(Role::Operator, OPERATOR)?;
        let files = TlsFiles::in_dir(&layout.pki, &identity);
        let tls: ClientTlsConfig = county_cmd::client_config(&files)?;
        let mut replicas = BTreeMap::new();
        for (id, address) in &setup.replica_addresses {
            replicas.insert(*id, county_cmd::channel(&tls, address)?);
        }
        let mut townships = BTreeMap::new();
        for (t, address) in &setup.township_addresses {
            townships.insert(t.clone(), county_cmd::channel(&tls, address)?);
        }
        Ok(Watch {
            replicas,
            townships,
        })
    }

    async fn status(&self, id: u64) -> Option<pb::StatusResponse> {
        let mut client = CountyClient::new(self.replicas[&id].clone());
        tokio::time::timeout(Duration::from_secs(2), client.status(pb::StatusRequest {}))
            .await
            .ok()?
            .ok()
            .map(|r| r.into_inner())
    }

    /// The leader of the highest term any replica reports, with that replica's status.
    async fn leader(&self) -> Option<(u64, pb::StatusResponse)> {
        let mut best: Option<(u64, pb::StatusResponse)> = None;
        for id in self.replicas.keys() {
            if let Some(s) = self.status(*id).await
                && s.role == "leader"
                && best.as_ref().is_none_or(|(_, b)| s.term > b.term)
            {
                best = Some((*id, s));
            }
        }
        best
    }

    async fn picture(&self, township: &str) -> Option<pb::PictureResponse> {
        let mut client = TownshipClient::new(self.townships[township].clone())
            .max_decoding_message_size(64 << 20);
        tokio::time::timeout(
            Duration::from_secs(2),
            client.picture(pb::PictureRequest {}),
        )
        .await
        .ok()?
        .ok()
        .map(|r| r.into_inner())
    }

    /// Sheets stored at the townships, and sheets still in their outboxes (None if a
    /// township did not answer).
    async fn townships(&self) -> Option<(u64, u64)> {
        let (mut stored, mut waiting) = (0, 0);
        for t in self.townships.keys() {
            let p = self.picture(t).await?;
            stored += p.sheets_stored;
            waiting += p.outbox.map_or(0, |o| o.depth);
        }
        Some((stored, waiting))
    }

    /// Sheets in the county's chain as the most advanced replica has them.
    async fn county_chain(&self) -> u64 {
        let mut best = 0;
        for id in self.replicas.keys() {
            if let Some(s) = self.status(*id).await {
                best = best.max(s.chain_length);
            }
        }
        best
    }
}

/// Counters the progress display reads.
#[derive(Default)]
struct Progress {
    units_done: AtomicU64,
    stored: AtomicU64,
    counted: AtomicU64,
}

async fn drive(
    args: &DemoArgs,
    layout: &Layout,
    setup: &Setup,
    fleet: &mut Fleet,
) -> Result<Outcome> {
    say!(
        "4. Starting the county cluster: {} replicas",
        REPLICAS.len()
    );
    for id in REPLICAS {
        let config = layout.replica_config(id);
        let proc = Proc::start(
            &format!("replica {id}"),
            vec!["county".into(), "--config".into(), config.into()],
            layout.logs.join(format!("replica-{id}.log")),
        )?;
        fleet.replicas.insert(id, proc);
    }
    let watch = Watch::new(layout, setup)?;
    let deadline = Instant::now() + START_DEADLINE;
    let (leader, _) = loop {
        fleet.check_alive()?;
        if let Some(found) = watch.leader().await {
            break found;
        }
        if Instant::now() > deadline {
            bail!(
                "the county cluster elected no leader within {} s; see the logs in {}",
                START_DEADLINE.as_secs(),
                layout.logs.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    say!(
        "   replicas at {}; replica {leader} leads",
        setup
            .replica_addresses
            .values()
            .cloned()
            .collect::<Vec<_>>()
            .join(", ")
    );

    say!(
        "5. Starting {} township aggregators",
        setup.township_addresses.len()
    );
    for t in setup.township_addresses.keys() {
        let proc = Proc::start(
            &format!("township {t}"),
            vec![
                "township".into(),
                "--config".into(),
                layout.township_config(t).into(),
            ],
            layout.logs.join(format!("township-{t}.log")),
        )?;
        fleet.townships.insert(t.clone(), proc);
    }
    let deadline = Instant::now() + START_DEADLINE;
    loop {
        fleet.check_alive()?;
        if watch.townships().await.is_some() {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "not every township answered within {} s; see the logs in {}",
                START_DEADLINE.as_secs(),
                layout.logs.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let units = setup.first_reports.len() as u64;
    let total = setup.sheets.len() as u64;
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
        let watch = Watch::new(layout, setup)?;
        tokio::spawn(async move {
            loop {
                if let Some((stored, _)) = watch.townships().await {
                    progress.stored.store(stored, Ordering::Relaxed);
                }
                progress
                    .counted
                    .store(watch.county_chain().await, Ordering::Relaxed);
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

    let mut villages = Villages::new(layout, progress.clone());
    let kill_at = setup.first_reports.len() * 2 / 5;
    let first_started = Instant::now();
    let mut killed: Option<(u64, Instant)> = None;
    for (i, (unit, bundle)) in setup.first_reports.iter().enumerate() {
        let due = Duration::from_secs_f64(args.pace * i as f64 / units.max(1) as f64);
        while first_started.elapsed() < due || villages.running() >= VILLAGES_AT_ONCE {
            villages.reap(&say_line)?;
            fleet.check_alive()?;
            if let Some((id, at)) = killed
                && at.elapsed() > Duration::from_secs(3)
            {
                fleet
                    .replicas
                    .get_mut(&id)
                    .expect("a known replica")
                    .spawn()?;
                say_line(format!(
                    "replica {id} started again: it catches up from the others"
                ));
                killed = None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if i == kill_at {
            if let Some((id, status)) = watch.leader().await {
                fleet.replicas.get_mut(&id).expect("a known replica").kill();
                say_line(format!(
                    "killed replica {id}, the county leader (term {}), with SIGKILL; the townships keep going",
                    status.term
                ));
                killed = Some((id, Instant::now()));
            }
        }
        villages.start(unit, bundle)?;
    }
    villages.wait_all(&say_line).await?;
    if let Some((id, _)) = killed {
        fleet
            .replicas
            .get_mut(&id)
            .expect("a known replica")
            .spawn()?;
        say_line(format!(
            "replica {id} started again: it catches up from the others"
        ));
    }

    say_line(format!(
        "a township clerk imports the sheets of {DUPLICATE_IMPORTS} units a second time, from the copies carried from the polling place"
    ));
    for (unit, bundle) in setup.first_reports.iter().take(DUPLICATE_IMPORTS) {
        let township = setup
            .definition
            .unit(&tally_core::ids::UnitId::new(unit))
            .map(|u| u.township.to_string())
            .ok_or_else(|| anyhow!("unit {unit} is not in the definition"))?;
        let output = Command::new(std::env::current_exe()?)
            .args(["township", "import", "--config"])
            .arg(layout.township_config(&township))
            .arg(bundle)
            .output()
            .context("cannot run tally township import")?;
        let text = String::from_utf8_lossy(&output.stdout);
        let duplicates = text.matches("DUPLICATE").count();
        say_line(format!(
            "  {unit} at township {township}: {duplicates} answered DUPLICATE (counted once)"
        ));
        if !output.status.success() {
            bail!(
                "tally township import for {unit} failed ({}):\n{text}{}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
        }
    }
    if !setup.corrections.is_empty() {
        say_line(format!(
            "{} unit(s) correct a sheet: a new version, signed again, replaces the first",
            setup.corrections.len()
        ));
        for (unit, bundle) in &setup.corrections {
            villages.start(unit, bundle)?;
        }
        villages.wait_all(&say_line).await?;
    }
    if !setup.later_rounds.is_empty() {
        say_line(format!(
            "{} units report the second round (revotes, run-offs and further elections the first round called for)",
            setup.later_rounds.len()
        ));
        for (unit, bundle) in &setup.later_rounds {
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
        fleet.check_alive()?;
        let townships = watch.townships().await;
        let chain = watch.county_chain().await;
        if matches!(townships, Some((_, 0))) && chain >= total {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "the county has {chain} of {total} sheets {} s after the last arrival (townships: {townships:?} stored, waiting); see the logs in {}",
                DRAIN_DEADLINE.as_secs(),
                layout.logs.display()
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
    let outcome = county_results(layout, setup).await?;

    say!("\n8. Seats (Art 12) and the apportionment of county seats to townships\n");
    report::definition_seats(
        &setup.definition,
        setup.definition.rules.apportionment,
        setup.definition.rules.apportionment_tie_rule,
        Format::Table,
    )?;

    say!("\n9. Replication status\n");
    let client = ClientArgs {
        servers: setup.replica_addresses.values().cloned().collect(),
        pki: layout.pki.clone(),
    };
    let files = TlsFiles::in_dir(&layout.pki, &Identity::new(Role::Operator, OPERATOR)?);
    // The restarted replica may still be catching up for a moment; status says so.
    for _ in 0..50 {
        if county_cmd::healthy(&client, &files).await? {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    county_cmd::status(&client, &files, Format::Table).await?;
    Ok(outcome)
}

/// The village processes in flight.
struct Villages<'a> {
    layout: &'a Layout,
    progress: Arc<Progress>,
    running: Vec<(String, PathBuf, Proc, u32)>,
    runs: usize,
    retried: usize,
}

impl<'a> Villages<'a> {
    fn new(layout: &'a Layout, progress: Arc<Progress>) -> Self {
        Villages {
            layout,
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
        let dir = self.layout.village_dir(unit);
        let mut args = os_args(&["village", "submit", "--config"]);
        args.push(dir.join("village.toml").into());
        args.push(bundle.into());
        Proc::start(&format!("village {unit}"), args, dir.join("village.log"))
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
async fn county_results(layout: &Layout, setup: &Setup) -> Result<Outcome> {
    let identity = Identity::new(Role::Operator, OPERATOR)?;
    let tls = county_cmd::client_config(&TlsFiles::in_dir(&layout.pki, &identity))?;
    let mut response = None;
    for address in setup.replica_addresses.values() {
        let mut client = CountyClient::new(county_cmd::channel(&tls, address)?)
            .max_decoding_message_size(1 << 30);
        if let Ok(r) = client.results(pb::ResultsRequest::default()).await {
            response = Some(r.into_inner());
            break;
        }
    }
    let response = response.ok_or_else(|| anyhow!("no replica answered a results read"))?;
    let online: serde_json::Value =
        serde_json::from_str(&response.result_json).context("the county's result_json")?;

    let bundles = vec![(layout.county.join("sheets.sheets"), setup.sheets.clone())];
    let intake = crate::intake::intake(&setup.definition, &bundles);
    let offline = tally_core::results::compute(&setup.definition, &intake.ledger);
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
            setup.sheets.len(),
            layout.root.display()
        );
    }
    say!(
        "It equals an offline recount of the {} signed sheets, each counted once.\n",
        setup.sheets.len()
    );
    crate::say_part!(
        "{}",
        report::results_table(&setup.definition, &intake, &offline)
    );
    Ok(if response.conflicts.is_empty() {
        Outcome::Clean
    } else {
        Outcome::Findings
    })
}

/// Where to look afterwards.
fn explain(layout: &Layout, setup: &Setup) {
    let program =
        std::env::current_exe().map_or_else(|_| "tally".to_owned(), |p| p.display().to_string());
    let root = &layout.root;
    say!("  sample-county/   the election definition, keys and every signed sheet");
    say!("  pki/             the dev CA and a certificate for every replica, township, unit and the operator");
    say!("  servers/         replica-N.toml and township-T.toml; their data in servers/data/");
    say!("  villages/UNIT/   each polling unit's config, journal and log");
    say!("  logs/            each server's log");
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
