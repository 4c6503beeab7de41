//! The support library of the system tests: what every test in `tests/tests/` needs to run the
//! real `tally` binary and the servers it starts, written once.
//!
//! The system tests are the ones that start `tally` processes or a cluster; tests of one crate
//! stay beside that crate (`crates/<name>/tests/`). This package is not published.
//!
//! # Layout
//!
//! - [`tally_binary`], [`tally()`]: the freshly built binary, and a command for it.
//! - [`Run`], [`run`], [`output`]: a command run to its end, with its exit code and output.
//! - [`Process`]: a child process killed and reaped when dropped.
//! - [`poll`]: waiting for a condition, with a deadline.
//! - [`http_get`], [`metric`]: plain HTTP/1.1 to the servers' HTTP side, and the Prometheus text.
//! - [`free_port`], [`free_ports`], [`tempdir`], [`repo_root`], [`small_town`],
//!   [`sample_county`], [`copy_dir`], [`read`]: ports, folders and files.
//! - [`small_county`], [`lay_out_county`], [`servers`], [`submit`], [`import`],
//!   [`sheets_of_unit`], [`offline_results`]: a synthetic county laid out for the binary, its
//!   sheets, and its clients.
//! - [`localnet`], [`files`], [`intake`], [`publish`], [`offline`], [`SHUTDOWN_GRACE`],
//!   [`VillageConfig`]: the parts of the `tally` library the tests use, named once here.
//!
//! # Which binary runs
//!
//! A test of another package cannot use `env!("CARGO_BIN_EXE_tally")`: cargo builds a
//! package's binaries only for that package's own tests. So [`tally_binary`] builds it: once
//! per test process, it runs `cargo build -p tally --bin tally -p tally-tests --lib --locked
//! --quiet --profile test` with the cargo that runs the tests (`CARGO`), in the target folder
//! and profile folder the test binary itself was built in (read from the test's own path,
//! `<target>/<profile>/deps/`), and returns `<target>/<profile>/tally`. Cargo then decides
//! what is stale, as it does for `cargo build`, so a test never runs a binary left by an
//! earlier build: after a change to the tally crate, even `cargo test -p tally-tests --test
//! NAME` runs the changed code. When nothing changed the build only checks fingerprints (0.2
//! to 0.5 s measured).
//!
//! Why this works, and what else was considered:
//! - `cargo test` holds the target folder's build lock only while it compiles, not while it
//!   runs the test binaries, so the inner `cargo build` does not wait on the outer one.
//! - `-p tally-tests --lib` is in the build so that it resolves the same features as the test
//!   build of this package (the package has no dev-dependencies, see its Cargo.toml): the
//!   tally binary it finds is the one the test build already made, not a second variant.
//!   Under `cargo test --workspace` other packages' dev-dependencies may turn on more features
//!   of shared dependencies; the first run then builds the tally binary once more, for these
//!   features, and later runs find it fresh.
//! - The inner build runs without the variables cargo sets for the test process
//!   (`CARGO_MANIFEST_DIR`, `CARGO_PKG_*`, ...): build scripts that watch one would otherwise
//!   run again, and the two builds would rebuild each other's dependencies every time.
//! - It builds in the `test` profile when the test runs in `debug`: a `dev` build makes the
//!   same file names with other fingerprints, with the same result.
//! - A build script cannot build the binary (it would wait on the build lock it runs under),
//!   and artifact dependencies (`-Z bindeps`) are not stable cargo.

use serde_json::Value;
use std::ffi::OsStr;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use tally_synth::GenParams;
use tempfile::TempDir;

// ---- The tally libraries

/// The published reports' columns.
pub use tally::publish;
/// How long `tally county` waits for its work to end after SIGTERM.
pub use tally_county::server::SHUTDOWN_GRACE;
/// The offline intake of signed sheets (the results a test computes to compare with).
pub use tally_evidence::intake;
/// Loading definitions and keys from files.
pub use tally_files as files;
/// The county on 127.0.0.1 that most system tests start (layout, processes, tuning, watch).
pub use tally_localnet as localnet;
/// The polling unit device's config file.
pub use tally_village::config::VillageConfig;
/// Reading a sheet from a QR image.
pub use tally_village::offline;

/// A small synthetic county for tests of the whole chain: `townships` townships of about 31
/// polling units each (60,000 people, 2,000 voters per station), two sheets per unit, none of
/// the planted cases: big enough that an outbox takes several batches, small enough to lay out
/// in a second or two.
pub fn small_county(seed: u64, townships: usize) -> GenParams {
    GenParams {
        seed,
        county_name: "测试县".into(),
        townships,
        population: 60_000,
        voters_per_station: 2_000,
        scenarios: false,
    }
}

/// Lays out the county of `params` under `root` (new or empty) for the freshly built binary:
/// a dev CA, certificates and every config ([`localnet::LocalCounty::prepare_with`], quietly).
pub fn lay_out_county(
    root: &Path,
    params: &GenParams,
    options: localnet::Options,
) -> localnet::LocalCounty {
    localnet::LocalCounty::prepare_with(root, params, tally_binary(), false, options)
        .unwrap_or_else(|e| panic!("cannot lay out the county: {e:#}"))
}

/// The county's replicas as `--servers` takes them: `ADDRESS,ADDRESS,...`.
pub fn servers(county: &localnet::LocalCounty) -> String {
    county
        .replica_addresses
        .values()
        .cloned()
        .collect::<Vec<_>>()
        .join(",")
}

/// `tally submit --format json` of `bundle` to the county's replicas, as its townships (their
/// countersigning keys), run in `cwd`: the exit code, standard output and standard error.
pub fn submit(county: &localnet::LocalCounty, cwd: &Path, bundle: &Path) -> (i32, String, String) {
    let definition = county.layout.county.join("election.toml");
    let keys = county.layout.county.join("township-keys.csv");
    output(
        cwd,
        &[
            "submit".as_ref(),
            "--servers".as_ref(),
            servers(county).as_ref(),
            "--pki".as_ref(),
            county.layout.pki.as_os_str(),
            "-d".as_ref(),
            definition.as_os_str(),
            "--keys".as_ref(),
            keys.as_os_str(),
            "--format".as_ref(),
            "json".as_ref(),
            bundle.as_os_str(),
        ] as &[&OsStr],
    )
}

/// `tally township import --config CONFIG BUNDLE...` in `cwd`, as a township's clerk runs it:
/// the exit code, standard output and standard error.
pub fn import<P: AsRef<OsStr>>(cwd: &Path, config: P, bundles: &[P]) -> (i32, String, String) {
    let mut args: Vec<&OsStr> = vec![
        "township".as_ref(),
        "import".as_ref(),
        "--config".as_ref(),
        config.as_ref(),
    ];
    args.extend(bundles.iter().map(AsRef::as_ref));
    output(cwd, &args)
}

/// A tokio runtime for a test's own clients beside the servers: two worker threads, enough for
/// the calls a test has in flight, few enough to leave the processes under test the cores.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime")
}

/// The generated sheets of `unit`, each with its signed envelope, in the county's order.
pub fn sheets_of_unit(
    county: &localnet::LocalCounty,
    unit: &str,
) -> Vec<(tally_core::sheet::TallySheet, tally_proto::SignedSheet)> {
    county
        .generated
        .sheets
        .iter()
        .zip(&county.sheets)
        .filter(|(sheet, _)| sheet.unit.as_str() == unit)
        .map(|(sheet, signed)| (sheet.clone(), signed.clone()))
        .collect()
}

/// `tally results --format json` of the county `tally gen --out county` wrote in `cwd`,
/// counted offline: the exit code, standard output and standard error.
pub fn offline_results(cwd: &Path) -> (i32, String, String) {
    output(
        cwd,
        &[
            "results",
            "-d",
            "county/election.toml",
            "-s",
            "county/sheets.sheets",
            "--format",
            "json",
        ],
    )
}

// ---- The binary

/// The variables cargo sets for a test process (beyond `CARGO`, which names cargo itself).
const TEST_RUN_VARIABLES: &[&str] = &[
    "CARGO_MANIFEST_DIR",
    "CARGO_MANIFEST_PATH",
    "CARGO_CRATE_NAME",
    "CARGO_PRIMARY_PACKAGE",
    "CARGO_TARGET_TMPDIR",
    "CARGO_RUSTC_CURRENT_DIR",
];
const TEST_RUN_VARIABLE_PREFIXES: &[&str] = &["CARGO_PKG_", "CARGO_BIN_"];

/// The `tally` binary, built fresh for this test process (see the crate's documentation).
pub fn tally_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(build_binary)
}

/// Runs `cargo build` for the tally binary in this test's target folder and profile, and
/// gives the binary's path.
fn build_binary() -> PathBuf {
    let test = std::env::current_exe().expect("the test binary knows its path");
    // <target>/[<triple>/]<profile>/deps/<test>-<hash>
    let deps = test.parent().expect("the test binary is in a folder");
    let profile_dir = deps
        .parent()
        .expect("the deps folder is in a profile folder");
    let profile = profile_dir
        .file_name()
        .and_then(OsStr::to_str)
        .expect("the profile folder has a name");
    let mut target_dir = profile_dir
        .parent()
        .expect("the profile folder is in a target folder");
    // With `--target TRIPLE` the profile folders are one level down; the target folder itself
    // is the one cargo marks with CACHEDIR.TAG.
    let mut triple = None;
    if !target_dir.join("CACHEDIR.TAG").exists()
        && let Some(parent) = target_dir.parent()
        && parent.join("CACHEDIR.TAG").exists()
    {
        triple = target_dir.file_name();
        target_dir = parent;
    }
    // `cargo test` builds in the `test` profile, whose folder is `debug`; `cargo test
    // --release` in `release`; `--profile NAME` in a folder of that name. The `test` profile
    // matters even though its settings are dev's: a build in `dev` shares the artifacts' file
    // names but not their fingerprints, so the two would rebuild each other's every time.
    let profile = match profile {
        "debug" => "test",
        other => other,
    };
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let manifest = repo_root().join("Cargo.toml");
    let mut command = Command::new(&cargo);
    command
        .args(["build", "--locked", "--quiet", "--profile", profile])
        .args([
            "-p",
            "tally",
            "--bin",
            "tally",
            "-p",
            "tally-tests",
            "--lib",
        ])
        .arg("--manifest-path")
        .arg(&manifest)
        .arg("--target-dir")
        .arg(target_dir);
    if let Some(triple) = triple {
        command.arg("--target").arg(triple);
    }
    // Cargo gives the test process the variables of the tests package (CARGO_MANIFEST_DIR,
    // CARGO_PKG_NAME, ...). The inner cargo must not inherit them: build scripts that watch
    // one (ring's watches CARGO_MANIFEST_DIR) would run again, and everything above them
    // would be rebuilt, on every test run and again by the next `cargo test`.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if TEST_RUN_VARIABLES.contains(&name.as_ref())
            || TEST_RUN_VARIABLE_PREFIXES
                .iter()
                .any(|prefix| name.starts_with(prefix))
        {
            command.env_remove(name.as_ref());
        }
    }
    let started = Instant::now();
    let status = command
        .status()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", Path::new(&cargo).display()));
    assert!(
        status.success(),
        "building the tally binary failed: {status}"
    );
    let binary = profile_dir.join(format!("tally{}", std::env::consts::EXE_SUFFIX));
    assert!(binary.exists(), "cargo built no {}", binary.display());
    eprintln!(
        "tally-tests: {} is fresh (cargo build took {:.1} s)",
        binary.display(),
        started.elapsed().as_secs_f64()
    );
    binary
}

/// A command for the `tally` binary. Its output has no colour codes and its log level is
/// `info`, the default, whatever the environment of the test says, so the tests read the same
/// text everywhere.
pub fn tally() -> Command {
    let mut command = Command::new(tally_binary());
    command.env("NO_COLOR", "1").env("TALLY_LOG", "info");
    command
}

// ---- Commands run to their end

/// What one finished command gave.
#[derive(Debug)]
pub struct Run {
    /// The exit code; -1 for a run killed by a signal (it has no code), so an assertion shows it.
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Runs `command` to its end, its output captured.
    pub fn of(command: &mut Command) -> Run {
        Run::from(command.output().expect("the command runs"))
    }

    /// Runs `command` to its end with `input` on its standard input (a clerk's typed answers:
    /// small, far below a pipe's buffer, so writing it all first cannot block).
    pub fn with_input(command: &mut Command, input: &str) -> Run {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the command runs");
        child
            .stdin
            .take()
            .expect("standard input is piped")
            .write_all(input.as_bytes())
            .expect("the command reads its input");
        Run::from(
            child
                .wait_with_output()
                .expect("the command can be waited for"),
        )
    }

    /// No run may end in a panic, whatever the input.
    pub fn assert_no_panic(&self) {
        assert!(!self.stderr.contains("panicked"), "{}", self.dump());
    }

    /// Everything the run printed, for messages when an assertion fails.
    pub fn dump(&self) -> String {
        format!(
            "exit {}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }

    /// Asserts the exit code, showing the whole run when it differs.
    #[track_caller]
    pub fn assert_code(&self, code: i32) {
        assert_eq!(self.code, code, "{}", self.dump());
    }

    /// Asserts that standard output contains `text`, showing the whole run when it does not.
    #[track_caller]
    pub fn assert_stdout_contains(&self, text: &str) {
        assert!(self.stdout.contains(text), "{}", self.dump());
    }

    /// Asserts that standard error contains `text`, showing the whole run when it does not.
    #[track_caller]
    pub fn assert_stderr_contains(&self, text: &str) {
        assert!(self.stderr.contains(text), "{}", self.dump());
    }

    /// Standard output as JSON; panics with the whole run when it is not.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.dump()))
    }

    /// The exit code and standard output and error, for tests that name them.
    pub fn parts(self) -> (i32, String, String) {
        (self.code, self.stdout, self.stderr)
    }
}

impl From<Output> for Run {
    fn from(output: Output) -> Run {
        Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8(output.stdout).expect("stdout is UTF-8"),
            stderr: String::from_utf8(output.stderr).expect("stderr is UTF-8"),
        }
    }
}

/// Runs `tally ARGS` in the folder `cwd` to its end; the commands run this way finish in
/// seconds.
pub fn run<I, S>(cwd: &Path, args: I) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    Run::of(tally().args(args).current_dir(cwd))
}

/// [`run`], as the exit code, standard output and standard error.
pub fn output<S: AsRef<OsStr>>(cwd: &Path, args: &[S]) -> (i32, String, String) {
    run(cwd, args).parts()
}

// ---- Processes

/// A child process killed (SIGKILL) and reaped when dropped, so a failing test leaves no
/// process behind.
pub struct Process(pub Child);

impl Process {
    /// How it ended, or `None` while it runs.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.0
            .try_wait()
            .expect("a child process can be waited for")
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The last `lines` lines of the text file at `path` (empty when it cannot be read), for
/// failure messages.
pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

// ---- Waiting

/// Calls `check` every `interval` until it gives a value, for at most `deadline`; then the
/// last error it gave. Tests never sleep to wait for something: they poll it with this.
pub fn poll<T>(
    deadline: Duration,
    interval: Duration,
    mut check: impl FnMut() -> Result<T, String>,
) -> Result<T, String> {
    let started = Instant::now();
    loop {
        match check() {
            Ok(value) => return Ok(value),
            Err(last) if started.elapsed() > deadline => return Err(last),
            Err(_) => std::thread::sleep(interval),
        }
    }
}

// ---- HTTP

/// How long an HTTP answer may take before [`http_get`] gives up.
const HTTP_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// An HTTP answer.
#[derive(Debug)]
pub struct Response {
    /// The status code (0 when the status line cannot be read).
    pub code: u16,
    /// The status line and headers.
    pub head: String,
    /// The body, de-chunked.
    pub body: String,
}

/// `GET path` over plain HTTP/1.1 (no client library needed): the whole answer.
pub fn http_get(address: &str, path: &str) -> std::io::Result<Response> {
    let mut stream = std::net::TcpStream::connect(address)?;
    stream.set_read_timeout(Some(HTTP_READ_TIMEOUT))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    Ok(Response {
        code,
        head: head.to_owned(),
        body: if chunked {
            dechunk(body)
        } else {
            body.to_owned()
        },
    })
}

/// The body of a chunked HTTP/1.1 answer.
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

/// The value of the sample `series` (the name with its labels, exactly as exposed) in a
/// Prometheus text scrape.
pub fn metric(scrape: &str, series: &str) -> Option<f64> {
    scrape
        .lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            line.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
}

// ---- Ports, folders and files

/// A free port on 127.0.0.1: bound to port 0, read, and let go for a server to bind.
pub fn free_port() -> u16 {
    free_ports(1)[0]
}

/// `n` different free ports on 127.0.0.1 (all bound at once, so they differ).
pub fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("a free port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("a bound address").port())
        .collect()
}

/// A fresh temporary folder, removed when dropped.
pub fn tempdir() -> TempDir {
    tempfile::tempdir().expect("a temporary folder can be made")
}

/// The repository's root folder.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests package is a folder of the repository")
        .to_path_buf()
}

/// `examples/small-town`: the hand-written county of the README's walkthrough.
pub fn small_town() -> PathBuf {
    repo_root().join("examples/small-town")
}

/// `examples/sample-county`: the generated county (`tally gen sample`).
pub fn sample_county() -> PathBuf {
    repo_root().join("examples/sample-county")
}

/// Copies the folder `from` into `to`, sub-folders included.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// The text of the file at `path`; panics naming the file when it cannot be read.
pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

// ---- the committee and keys of a generated county (SAMPLE ONLY secrets)

/// Writes each committee official's secret key of the generated county in `county` (its
/// official-keys.csv) to `OFFICIAL.key` in `out`; returns each official's id and key file,
/// in order.
pub fn official_key_files(county: &Path, out: &Path) -> Vec<(String, PathBuf)> {
    read(&county.join("official-keys.csv"))
        .lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with("official,"))
        .map(|line| {
            let (id, secret) = line
                .split_once(',')
                .unwrap_or_else(|| panic!("official-keys.csv row {line:?}"));
            let path = out.join(format!("{id}.key"));
            std::fs::write(&path, format!("{secret}\n")).expect("the key file is written");
            (id.to_owned(), path)
        })
        .collect()
}

/// The registered secret key of `unit` in the generated county in `county` (unit-keys.csv).
pub fn unit_secret_key(county: &Path, unit: &str) -> ed25519_dalek::SigningKey {
    let keys = read(&county.join("unit-keys.csv"));
    let secret = keys
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{unit},")))
        .unwrap_or_else(|| panic!("unit-keys.csv has no row for {unit}"));
    let seed: [u8; 32] = hex::decode(secret.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .unwrap_or_else(|| panic!("unit-keys.csv: {unit}'s key is not 64 hex digits"));
    ed25519_dalek::SigningKey::from_bytes(&seed)
}

/// `tally keygen --out PATH` in `cwd`; returns the public key it prints (64 hex digits).
pub fn keygen(cwd: &Path, path: &Path) -> String {
    let run = run(
        cwd,
        [OsStr::new("keygen"), OsStr::new("--out"), path.as_os_str()],
    );
    run.assert_code(0);
    run.stdout
        .lines()
        .find_map(|l| l.strip_prefix("public key (put it in the unit's public_key field): "))
        .unwrap_or_else(|| panic!("no public key in {}", run.dump()))
        .to_owned()
}

/// Has three of the generated county's officials sign the committee act `file` (in `cwd`),
/// each with the key `official_key_files` wrote, then submits it to the cluster at
/// `servers`; panics with what the CLI said if any step fails.
pub fn sign_and_submit_act(
    cwd: &Path,
    file: &str,
    definition: &str,
    keys: &[(String, PathBuf)],
    servers: &str,
    pki: &str,
) {
    for (id, key) in keys.iter().take(3) {
        let (code, out, err) = output(
            cwd,
            &[
                "committee",
                "sign",
                file,
                "-d",
                definition,
                "--official",
                id,
                "--key",
                key.to_str().expect("paths here are UTF-8"),
            ],
        );
        assert_eq!(code, 0, "{out}{err}");
    }
    let (code, out, err) = output(
        cwd,
        &[
            "committee",
            "submit",
            file,
            "-d",
            definition,
            "--servers",
            servers,
            "--pki",
            pki,
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
}
