//! A synthetic county on this machine, as real processes on 127.0.0.1: its files, a dev CA
//! with a certificate for every replica, township, polling unit and operator, every config,
//! and the servers (`tally county`, `tally township`) as child processes. The demo, the
//! whole-chain tests and the chain benchmark are built on it.
//!
//! [`Fleet`] stops every server it started when it is dropped, so an error or a panic never
//! leaves servers behind.
//!
//! It runs the `tally` program it is given (the demo passes itself; tests and benchmarks the
//! built binary) and talks to the servers over gRPC as an operator would. It must not depend on
//! the server crates (`tally-county`, `tally-township`) nor on the binary: what it knows of them
//! is their config files, their command lines and their gRPC services.
//!
//! # Layout
//!
//! ```text
//! lib.rs   Layout (the folders), LocalCounty (prepare, start, stop, clients), Proc and Fleet
//!          (child processes, killed on drop), Watch (status and results over gRPC), free_ports
//! error.rs Error, the crate's one error type
//! ```

mod error;

pub use error::{Error, Result};
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tally_core::definition::Definition;
use tally_files::load_definition;
use tally_net::{Identity, Role, TlsFiles};
use tally_proto::SignedSheet;
use tally_rpc::pb;
use tally_rpc::pb::county_client::CountyClient;
use tally_rpc::pb::township_client::TownshipClient;
use tally_synth::GenParams;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

/// The operator's TLS files read and checked once; [`channel`] names the host per address.
fn client_config(files: &TlsFiles) -> Result<ClientTlsConfig> {
    let (tls, _) = files.client_tls("localhost").map_err(Error::OperatorTls)?;
    Ok(tls)
}

/// A lazy channel to `address` (host:port on 127.0.0.1) over mutual TLS.
fn channel(tls: &ClientTlsConfig, address: &str) -> Result<Channel> {
    let host = address.rsplit_once(':').map_or(address, |(host, _)| host);
    Ok(Endpoint::from_shared(format!("https://{address}"))
        .map_err(|cause| Error::Transport {
            what: format!("{address} is not host:port: "),
            cause,
        })?
        .tls_config(tls.clone().domain_name(host))
        .map_err(|cause| Error::Transport {
            what: String::new(),
            cause,
        })?
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(30))
        .connect_lazy())
}

/// Every child process started here and not yet reaped, so a command that must exit at once
/// (its reader went away: `tally demo | head`) can still stop them: see [`kill_all_children`].
static CHILDREN: std::sync::Mutex<std::collections::BTreeSet<u32>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());

/// Kills (SIGKILL) every child process started here that is still running. For the paths that
/// end the process without running destructors.
pub fn kill_all_children() {
    let pids: Vec<u32> = CHILDREN
        .lock()
        .map(|mut c| std::mem::take(&mut *c).into_iter().collect())
        .unwrap_or_default();
    for pid in pids {
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
    }
}

fn forget_child(pid: u32) {
    if let Ok(mut c) = CHILDREN.lock() {
        c.remove(&pid);
    }
}

/// The path of the running `tally` program. When the file was replaced while it ran (a
/// rebuild), Linux names it `PATH (deleted)`; the path itself is what to run and to print.
pub fn this_program() -> Result<PathBuf> {
    let path =
        std::env::current_exe().map_err(Error::io("cannot find the tally program".into()))?;
    Ok(
        match path.to_str().and_then(|p| p.strip_suffix(" (deleted)")) {
            Some(stripped) => PathBuf::from(stripped),
            None => path,
        },
    )
}

/// The replicas of a local county cluster.
pub const REPLICAS: [u64; 3] = [1, 2, 3];
/// The operator whose certificate the local tools watch with.
pub const OPERATOR: &str = "operator";
/// How long a server may take to come up before giving up and showing its log.
pub const START_DEADLINE: Duration = Duration::from_secs(60);

/// Where everything lives under the demo folder.
#[derive(Debug, Clone)]
pub struct Layout {
    pub root: PathBuf,
    pub county: PathBuf,
    pub pki: PathBuf,
    pub keys: PathBuf,
    pub servers: PathBuf,
    pub villages: PathBuf,
    pub logs: PathBuf,
}

impl Layout {
    pub fn new(root: &Path) -> Result<Layout> {
        if root.exists()
            && fs::read_dir(root)
                .map_err(Error::io(format!("cannot list {}", root.display())))?
                .next()
                .is_some()
        {
            return Err(Error::NotEmpty {
                path: root.to_path_buf(),
            });
        }
        fs::create_dir_all(root).map_err(Error::io(format!("cannot create {}", root.display())))?;
        // The configs name their files by absolute path, so they work from any folder (a
        // relative --dir would otherwise be read against each config's own folder).
        let root = &fs::canonicalize(root)
            .map_err(Error::io(format!("cannot resolve {}", root.display())))?;
        let layout = Layout {
            root: root.to_path_buf(),
            county: root.join("sample-county"),
            pki: root.join("pki"),
            keys: root.join("keys"),
            servers: root.join("servers"),
            villages: root.join("villages"),
            logs: root.join("logs"),
        };
        for d in [
            &layout.keys,
            &layout.servers,
            &layout.villages,
            &layout.logs,
        ] {
            fs::create_dir_all(d).map_err(Error::io(format!("cannot create {}", d.display())))?;
        }
        Ok(layout)
    }

    pub fn replica_config(&self, id: u64) -> PathBuf {
        self.servers.join(format!("replica-{id}.toml"))
    }

    pub fn township_config(&self, township: &str) -> PathBuf {
        self.servers.join(format!("township-{township}.toml"))
    }

    pub fn village_dir(&self, unit: &str) -> PathBuf {
        self.villages.join(unit)
    }

    /// Starts `program village submit` for `unit` sending `files`, logging to the unit's
    /// folder.
    pub fn village_submit(&self, program: &Path, unit: &str, files: &[PathBuf]) -> Result<Proc> {
        let files: Vec<OsString> = files.iter().map(|f| f.into()).collect();
        self.village(program, unit, "submit", &files)
    }

    /// Starts `program village COMMAND --config <unit's village.toml> ARGS...` (submit with
    /// `--retry-for`, correct, status, ...), logging to the unit's folder.
    pub fn village(
        &self,
        program: &Path,
        unit: &str,
        command: &str,
        args: &[OsString],
    ) -> Result<Proc> {
        let dir = self.village_dir(unit);
        let mut all = os_args(&["village", command, "--config"]);
        all.push(dir.join("village.toml").into());
        all.extend(args.iter().cloned());
        Proc::start(
            program,
            &format!("village {unit} {command}"),
            all,
            dir.join("village.log"),
        )
    }
}

/// Settings a test or a benchmark may change from the configs [`LocalCounty::prepare`] writes;
/// `None` leaves the server's default.
#[derive(Debug, Clone, Copy, Default)]
pub struct Tuning {
    /// The replicas' raft tick (`[raft] tick_ms`): shorter elects a leader sooner.
    pub raft_tick_ms: Option<u64>,
    /// The townships' longest pause between attempts to reach the county
    /// (`[outbox] retry_max_ms`): shorter notices a county that is back sooner.
    pub outbox_retry_max_ms: Option<u64>,
    /// The townships' sheets per forwarded batch (`[outbox] batch_max`).
    pub outbox_batch_max: Option<usize>,
}

/// A synthetic county laid out on this machine: its files, certificates and configs, and the
/// servers once started.
pub struct LocalCounty {
    /// The `tally` program the servers and villages run as.
    pub program: PathBuf,
    pub layout: Layout,
    pub definition: Arc<Definition>,
    pub replica_addresses: BTreeMap<u64, String>,
    /// Each replica's HTTP address (`http_listen`: metrics and dashboard); empty unless
    /// [`Options::http`] asked for them.
    pub replica_http_addresses: BTreeMap<u64, String>,
    pub township_addresses: BTreeMap<String, String>,
    /// The generated county, with every unit's and township's key.
    pub generated: tally_synth::Generated,
    /// Every generated sheet, signed by its unit, in the generator's arrival order.
    pub sheets: Vec<SignedSheet>,
    pub fleet: Fleet,
}

/// What [`LocalCounty::prepare_with`] sets up beyond the defaults.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Give every replica an `http_listen` port (metrics and dashboard).
    pub http: bool,
}

impl LocalCounty {
    /// [`LocalCounty::prepare_with`] the default options.
    pub fn prepare(
        root: &Path,
        params: &GenParams,
        program: &Path,
        say: bool,
    ) -> Result<LocalCounty> {
        Self::prepare_with(root, params, program, say, Options::default())
    }

    /// [`LocalCounty::prepare_noting`], printing each step to standard output when `say`.
    pub fn prepare_with(
        root: &Path,
        params: &GenParams,
        program: &Path,
        say: bool,
        options: Options,
    ) -> Result<LocalCounty> {
        let print = |line: &str| {
            if say {
                println!("{line}");
            }
        };
        Self::prepare_noting(root, params, program, options, &print)
    }

    /// Generates the county of `params` under `root` (which must be new or empty), with a dev CA,
    /// a certificate for every replica, township, polling unit and the operator, and every
    /// config. Each step is handed to `say` as a line (the demo prints it its own way).
    pub fn prepare_noting(
        root: &Path,
        params: &GenParams,
        program: &Path,
        options: Options,
        say: &dyn Fn(&str),
    ) -> Result<LocalCounty> {
        let layout = Layout::new(root)?;
        let note = |line: String| say(&line);
        let step = Instant::now();
        note("1. Generating the county, its keys and every polling unit's signed sheets".into());
        let written = tally_files::write_generated_full(params, &layout.county)?;
        note(format!("   {}", written.summary));
        let definition = Arc::new(load_definition(&layout.county.join("election.toml"))?);
        let generated = &written.generated;

        note(format!(
            "2. Making a dev CA and certificates: {} replicas, {} townships, {} polling units, 1 operator",
            REPLICAS.len(),
            generated.townships.len(),
            generated.units.len()
        ));
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
        .map_err(|cause| Error::Pki {
            dir: layout.pki.clone(),
            cause,
        })?;
        note(format!(
            "   {} files in {} ({:.1} s)",
            pki.written.len(),
            layout.pki.display(),
            step.elapsed().as_secs_f64()
        ));

        note("3. Writing a config for every replica, township and polling unit".into());
        // One call for every port, so no two of them can be the same.
        let http_ports = if options.http { REPLICAS.len() } else { 0 };
        let ports = free_ports(REPLICAS.len() + generated.townships.len() + http_ports)?;
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
        let replica_http_addresses: BTreeMap<u64, String> = REPLICAS
            .iter()
            .zip(&ports[REPLICAS.len() + generated.townships.len()..])
            .map(|(id, port)| (*id, format!("127.0.0.1:{port}")))
            .collect();
        let definition_path = layout.county.join("election.toml");
        for id in REPLICAS {
            let mut text = replica_config(id, &replica_addresses, &definition_path, &layout);
            if let Some(http) = replica_http_addresses.get(&id) {
                // Top-level keys must come before the first table.
                text = text.replacen(
                    "data_dir",
                    &format!("http_listen = \"{http}\"\ndata_dir"),
                    1,
                );
            }
            write_config(&layout.replica_config(id), &text)?;
        }
        let county_list = replica_addresses
            .values()
            .map(|a| format!("{a:?}"))
            .collect::<Vec<_>>()
            .join(", ");
        for (township, key) in &generated.township_keys {
            let key_path = layout.keys.join(format!("township-{township}.key"));
            tally_files::write_secret(&key_path, &format!("{}\n", hex::encode(key.to_bytes())))?;
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
            fs::create_dir_all(&dir)
                .map_err(Error::io(format!("cannot create {}", dir.display())))?;
            let key_path = dir.join("unit.key");
            tally_files::write_secret(
                &key_path,
                &format!("{}\n", hex::encode(unit.key.to_bytes())),
            )?;
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

        Ok(LocalCounty {
            program: program.to_path_buf(),
            layout,
            definition,
            replica_addresses,
            replica_http_addresses,
            township_addresses,
            generated: written.generated,
            sheets: written.signed,
            fleet: Fleet::default(),
        })
    }
}

impl LocalCounty {
    /// Changes the configs [`LocalCounty::prepare`] wrote; call it before the servers start.
    pub fn tune(&self, tuning: &Tuning) -> Result<()> {
        // Each config ends with its [tls] table, so a table appended after it is its own.
        if let Some(tick_ms) = tuning.raft_tick_ms {
            for id in REPLICAS {
                append_config(
                    &self.layout.replica_config(id),
                    &format!("[raft]\ntick_ms = {tick_ms}\n"),
                )?;
            }
        }
        let mut outbox = String::new();
        if let Some(ms) = tuning.outbox_retry_max_ms {
            let _ = writeln!(outbox, "retry_max_ms = {ms}");
        }
        if let Some(batch_max) = tuning.outbox_batch_max {
            let _ = writeln!(outbox, "batch_max = {batch_max}");
        }
        if !outbox.is_empty() {
            for township in self.township_addresses.keys() {
                append_config(
                    &self.layout.township_config(township),
                    &format!("[outbox]\n{outbox}"),
                )?;
            }
        }
        Ok(())
    }
}

fn append_config(path: &Path, text: &str) -> Result<()> {
    use std::io::Write as _;
    fs::OpenOptions::new()
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(Error::io(format!("cannot add to {}", path.display())))
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
    fs::write(path, text).map_err(Error::io(format!("cannot write {}", path.display())))
}

/// Ports free on 127.0.0.1 now, all different. Another program could take one before the
/// server binds it; the server then says the port is in use, and the demo shows that.
pub fn free_ports(n: usize) -> Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()
        .map_err(Error::io("cannot find free ports on 127.0.0.1".into()))?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr()?.port()))
        .collect::<std::io::Result<Vec<u16>>>()
        .map_err(Error::io("cannot read a port".into()))
}

/// One child process: a replica, a township or a village, with its log file.
pub struct Proc {
    pub name: String,
    program: PathBuf,
    args: Vec<OsString>,
    pub log: PathBuf,
    child: Option<Child>,
}

impl Proc {
    pub fn start(program: &Path, name: &str, args: Vec<OsString>, log: PathBuf) -> Result<Proc> {
        let mut proc = Proc {
            name: name.to_owned(),
            program: program.to_path_buf(),
            args,
            log,
            child: None,
        };
        proc.spawn()?;
        Ok(proc)
    }

    /// Starts the process (again, after [`Proc::kill`]) with the same arguments and log.
    pub fn spawn(&mut self) -> Result<()> {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(Error::io(format!("cannot open {}", self.log.display())))?;
        let child = Command::new(&self.program)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(Error::Log)?)
            .stderr(log)
            .env(
                "TALLY_LOG",
                std::env::var("TALLY_LOG").unwrap_or("info".into()),
            )
            .spawn()
            .map_err(Error::io(format!("cannot start {}", self.name)))?;
        if let Ok(mut c) = CHILDREN.lock() {
            c.insert(child.id());
        }
        self.child = Some(child);
        Ok(())
    }

    /// The operating system's id of the process, while it runs (tests read its memory from
    /// `/proc/PID/status`).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The exit status if the process has ended.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let status = child.try_wait().ok().flatten()?;
        forget_child(child.id());
        Some(status)
    }

    /// Whether the process was started and has not been seen to end.
    pub fn running(&mut self) -> bool {
        self.child.is_some() && self.exited().is_none()
    }

    /// SIGSTOP: the process holds its sockets and answers nothing, as a machine that hangs
    /// (or a link so slow it times out) would. [`Proc::resume`] lets it go on.
    pub fn pause(&mut self) {
        self.signal("-STOP");
    }

    /// SIGCONT after [`Proc::pause`].
    pub fn resume(&mut self) {
        self.signal("-CONT");
    }

    fn signal(&mut self, signal: &str) {
        if let Some(child) = &self.child {
            let _ = Command::new("kill")
                .args([signal, &child.id().to_string()])
                .status();
        }
    }

    /// SIGKILL, as a power cut or a crash would end it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            forget_child(child.id());
        }
    }

    /// SIGTERM, then SIGKILL if it has not stopped within a few seconds.
    pub fn terminate(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        forget_child(child.id());
        if child.try_wait().ok().flatten().is_some() {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        // A paused process (`Proc::pause`) handles the SIGTERM only once it runs again.
        let _ = Command::new("kill")
            .args(["-CONT", &child.id().to_string()])
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

    pub fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }
}

/// The long-running servers; stopped when dropped.
#[derive(Default)]
pub struct Fleet {
    pub replicas: BTreeMap<u64, Proc>,
    pub townships: BTreeMap<String, Proc>,
}

impl Fleet {
    pub fn stop_all(&mut self) {
        for p in self.townships.values_mut() {
            p.terminate();
        }
        for p in self.replicas.values_mut() {
            p.terminate();
        }
    }

    /// An error naming the first server that ended on its own, with the end of its log.
    pub fn check_alive(&mut self) -> Result<()> {
        for p in self
            .replicas
            .values_mut()
            .chain(self.townships.values_mut())
        {
            if p.child.is_some()
                && let Some(status) = p.exited()
            {
                return Err(Error::Stopped {
                    name: p.name.clone(),
                    status,
                    log: p.log.clone(),
                    tail: p.log_tail(),
                });
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

pub fn os_args(args: &[&str]) -> Vec<OsString> {
    args.iter().map(OsString::from).collect()
}

/// The operator's view: channels to every replica and township.
pub struct Watch {
    pub replicas: BTreeMap<u64, Channel>,
    pub townships: BTreeMap<String, Channel>,
}

impl Watch {
    pub fn new(county: &LocalCounty) -> Result<Watch> {
        let (layout, setup) = (&county.layout, county);
        let identity = Identity::new(Role::Operator, OPERATOR)?;
        let files = TlsFiles::in_dir(&layout.pki, &identity);
        let tls: ClientTlsConfig = client_config(&files)?;
        let mut replicas = BTreeMap::new();
        for (id, address) in &setup.replica_addresses {
            replicas.insert(*id, channel(&tls, address)?);
        }
        let mut townships = BTreeMap::new();
        for (t, address) in &setup.township_addresses {
            townships.insert(t.clone(), channel(&tls, address)?);
        }
        Ok(Watch {
            replicas,
            townships,
        })
    }

    pub async fn status(&self, id: u64) -> Option<pb::StatusResponse> {
        let mut client = CountyClient::new(self.replicas[&id].clone());
        tokio::time::timeout(Duration::from_secs(2), client.status(pb::StatusRequest {}))
            .await
            .ok()?
            .ok()
            .map(|r| r.into_inner())
    }

    /// The leader of the highest term any replica reports, with that replica's status.
    pub async fn leader(&self) -> Option<(u64, pb::StatusResponse)> {
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

    pub async fn picture(&self, township: &str) -> Option<pb::PictureResponse> {
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
    pub async fn townships(&self) -> Option<(u64, u64)> {
        let (mut stored, mut waiting) = (0, 0);
        for t in self.townships.keys() {
            let p = self.picture(t).await?;
            stored += p.sheets_stored;
            waiting += p.outbox.map_or(0, |o| o.depth);
        }
        Some((stored, waiting))
    }

    /// Sheets in the county's chain as the most advanced replica has them: its records but
    /// the first, the founding (docs/design/record.md).
    pub async fn county_sheets(&self) -> u64 {
        let mut best = 0;
        for id in self.replicas.keys() {
            if let Some(s) = self.status(*id).await {
                best = best.max(s.chain_length.saturating_sub(1));
            }
        }
        best
    }
}

impl LocalCounty {
    /// Starts the county replicas (again, those that were stopped) and waits until one leads;
    /// returns its id.
    pub async fn start_county(&mut self) -> Result<u64> {
        for id in REPLICAS {
            if let Some(proc) = self.fleet.replicas.get_mut(&id) {
                if !proc.running() {
                    proc.spawn()?;
                }
                continue;
            }
            let config = self.layout.replica_config(id);
            let proc = Proc::start(
                &self.program,
                &format!("replica {id}"),
                vec!["county".into(), "--config".into(), config.into()],
                self.layout.logs.join(format!("replica-{id}.log")),
            )?;
            self.fleet.replicas.insert(id, proc);
        }
        let watch = Watch::new(self)?;
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            self.fleet.check_alive()?;
            if let Some((id, _)) = watch.leader().await {
                return Ok(id);
            }
            if Instant::now() > deadline {
                return Err(Error::NotStarted(format!(
                    "the county cluster elected no leader within {} s; see the logs in {}",
                    START_DEADLINE.as_secs(),
                    self.layout.logs.display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Starts every township aggregator and waits until each answers.
    pub async fn start_townships(&mut self) -> Result<()> {
        let townships: Vec<String> = self.township_addresses.keys().cloned().collect();
        for t in &townships {
            self.start_township(t)?;
        }
        let watch = Watch::new(self)?;
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            self.fleet.check_alive()?;
            if watch.townships().await.is_some() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Error::NotStarted(format!(
                    "not every township answered within {} s; see the logs in {}",
                    START_DEADLINE.as_secs(),
                    self.layout.logs.display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Starts one township aggregator (again, if it was stopped; a running one is left alone)
    /// without waiting for it.
    pub fn start_township(&mut self, township: &str) -> Result<()> {
        if let Some(proc) = self.fleet.townships.get_mut(township) {
            return if proc.running() { Ok(()) } else { proc.spawn() };
        }
        let proc = Proc::start(
            &self.program,
            &format!("township {township}"),
            vec![
                "township".into(),
                "--config".into(),
                self.layout.township_config(township).into(),
            ],
            self.layout.logs.join(format!("township-{township}.log")),
        )?;
        self.fleet.townships.insert(township.to_owned(), proc);
        Ok(())
    }

    /// A `tally village submit` process for `unit` sending `files`, logging to the unit's
    /// folder.
    pub fn village_submit(&self, unit: &str, files: &[PathBuf]) -> Result<Proc> {
        self.layout.village_submit(&self.program, unit, files)
    }

    /// A `tally village COMMAND --config <unit's village.toml> ARGS...` process.
    pub fn village(&self, unit: &str, command: &str, args: &[OsString]) -> Result<Proc> {
        self.layout.village(&self.program, unit, command, args)
    }

    /// Kills (SIGKILL) every county replica: a county outage. [`LocalCounty::start_county`]
    /// brings them back on their data.
    pub fn kill_county(&mut self) {
        for proc in self.fleet.replicas.values_mut() {
            proc.kill();
        }
    }

    /// The operator's client settings for `tally cluster` functions: the replicas' addresses,
    /// the folder of certificates, and the operator's TLS files in it.
    pub fn operator_client(&self) -> Result<(Vec<String>, PathBuf, TlsFiles)> {
        let servers = self.replica_addresses.values().cloned().collect();
        let files = TlsFiles::in_dir(&self.layout.pki, &Identity::new(Role::Operator, OPERATOR)?);
        Ok((servers, self.layout.pki.clone(), files))
    }

    /// The county's results, linearizable, from the first replica that answers.
    pub async fn county_results(&self) -> Result<pb::ResultsResponse> {
        let (_, _, files) = self.operator_client()?;
        let tls = client_config(&files)?;
        let mut errors = Vec::new();
        for address in self.replica_addresses.values() {
            let mut client =
                CountyClient::new(channel(&tls, address)?).max_decoding_message_size(1 << 30);
            match client.results(pb::ResultsRequest::default()).await {
                Ok(r) => return Ok(r.into_inner()),
                Err(status) => errors.push(format!("{address}: {}", status.message())),
            }
        }
        Err(Error::NoResults(errors))
    }
}
