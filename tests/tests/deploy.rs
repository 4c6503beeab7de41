//! The examples in `deploy/` as an operator uses them. Every config is parsed by the code that
//! reads it in production; the systemd units and the compose file are checked against the real
//! `tally` command line (its `--help`) and against the configs they run; the compose file's
//! one-shot setup is run and makes every file its services name; and the county and township
//! configs, moved to 127.0.0.1 and a temporary folder and nothing else, are started as real
//! processes that elect a leader, forward a polling unit's sheets, and stop on SIGTERM within
//! the grace the units allow.
//!
//! What cannot run here is said when the test runs, not skipped silently: Docker (no daemon,
//! no compose) and, where `systemd-analyze` is missing or does not work, the units' verify.

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tally_county::config::CountyConfig;
use tally_tests::{
    Process, SHUTDOWN_GRACE, VillageConfig, output, poll, read, repo_root, sample_county, tail,
    tally,
};
use tally_township::config::TownshipConfig;
use yaml_rust2::{Yaml, YamlLoader};

/// Where `deploy/README.md` installs each server config: the file in `deploy/` and its path on
/// its machine. The systemd units run these paths.
const INSTALLED: &[(&str, &str)] = &[
    ("county/replica-1.toml", "/etc/tally/county.toml"),
    ("county/replica-2.toml", "/etc/tally/county.toml"),
    ("county/replica-3.toml", "/etc/tally/county.toml"),
    ("township/township.toml", "/etc/tally/township.toml"),
];
/// Where the README installs the binary; the units' ExecStart runs it.
const INSTALLED_BINARY: &str = "/usr/local/bin/tally";
/// The highest `systemd-analyze security` exposure a unit may have (0 = locked down, 10 =
/// unprotected; "OK" is below 2.0 in systemd's words). The units score 1.4 today.
const EXPOSURE_MAX: f64 = 2.0;
/// The image's tag in compose.yaml; its ENTRYPOINT is tally.
const COMPOSE_IMAGE: &str = "tally:trial";

const START_DEADLINE: Duration = Duration::from_secs(30);
const FORWARD_DEADLINE: Duration = Duration::from_secs(30);
/// What a loaded test machine may add to the 2 s SIGTERM grace before a process has exited.
const STOP_MARGIN: Duration = Duration::from_millis(1500);
const POLL_INTERVAL: Duration = Duration::from_millis(100);
const LOG_TAIL_LINES: usize = 30;

// ---- Files of the repository ----

fn deploy(relative: &str) -> PathBuf {
    repo_root().join("deploy").join(relative)
}

fn parse_county(path: &Path) -> CountyConfig {
    CountyConfig::parse(path, &read(path)).unwrap_or_else(|e| panic!("{e}"))
}

fn parse_township(path: &Path) -> TownshipConfig {
    TownshipConfig::parse(path, &read(path)).unwrap_or_else(|e| panic!("{e}"))
}

fn host_of(address: &str) -> &str {
    address.rsplit_once(':').map_or(address, |(host, _)| host)
}

fn port_of(address: &str) -> u16 {
    address
        .rsplit_once(':')
        .and_then(|(_, port)| port.parse().ok())
        .unwrap_or_else(|| panic!("{address:?} has no port"))
}

// ---- The tally binary ----

/// What `tally PATH --help` says a command takes.
struct Help {
    subcommands: BTreeSet<String>,
    flags: BTreeSet<String>,
    text: String,
}

fn help(path: &[String]) -> Help {
    let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
    args.push("--help");
    let (code, text, err) = output(&repo_root(), &args);
    assert_eq!(code, 0, "tally {} exits 0: {text}{err}", args.join(" "));
    let mut subcommands = BTreeSet::new();
    let mut in_commands = false;
    for line in text.lines() {
        if line.starts_with("Commands:") {
            in_commands = true;
        } else if line.trim().is_empty() || !line.starts_with(' ') {
            in_commands = false;
        } else if in_commands
            // A command's line is indented by two; its wrapped description by more.
            && !line.starts_with("   ")
            && let Some(name) = line.split_whitespace().next()
        {
            subcommands.insert(name.to_owned());
        }
    }
    let flags = text
        .split(|c: char| c.is_whitespace() || c == ',' || c == '[' || c == ']' || c == '<')
        .filter(|word| word.starts_with('-') && word.len() > 1)
        .map(|word| word.trim_end_matches(['=', '.']).to_owned())
        .collect();
    Help {
        subcommands,
        flags,
        text,
    }
}

/// Checks that `args` (what follows `tally`) names real subcommands and only flags they take;
/// returns the subcommand path (e.g. `["cluster", "status"]`).
fn check_command_line(args: &[String], context: &str) -> Vec<String> {
    let mut path: Vec<String> = Vec::new();
    let mut rest = args;
    let mut last = help(&path);
    while let Some(next) = rest.first() {
        if !last.subcommands.contains(next) {
            break;
        }
        path.push(next.clone());
        rest = &rest[1..];
        last = help(&path);
    }
    assert!(
        !path.is_empty(),
        "{context}: `tally {}` names no subcommand of tally (it has {:?})",
        args.join(" "),
        help(&[]).subcommands
    );
    for arg in rest.iter().filter(|a| a.starts_with('-')) {
        let flag = arg.split_once('=').map_or(arg.as_str(), |(flag, _)| flag);
        assert!(
            last.flags.contains(flag),
            "{context}: `tally {}` does not take {flag}:\n{}",
            path.join(" "),
            last.text
        );
    }
    path
}

/// The value given to `flag` in `args`, as `--flag VALUE` or `--flag=VALUE`.
fn flag_value<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    args.iter().enumerate().find_map(|(i, arg)| {
        if arg == flag {
            args.get(i + 1).map(String::as_str)
        } else {
            arg.strip_prefix(flag)
                .and_then(|rest| rest.strip_prefix('='))
        }
    })
}

// ---- The example configs ----

// Goal: the county, township and village examples are valid and describe one county: the
// township dials exactly the county's replicas and shares its definition and CA, it is a
// township of the sample definition, and the village device is a unit of that township that
// dials the township's host at the port the township listens on.
// Method: parse each with the parser the server or device uses (no file checks: the
// certificates are not committed), load the sample definition, and compare.
#[test]
fn example_configs_parse_and_describe_one_county() {
    let replicas: Vec<CountyConfig> = (1..=3)
        .map(|n| parse_county(&deploy(&format!("county/replica-{n}.toml"))))
        .collect();
    let township = parse_township(&deploy("township/township.toml"));
    let village = VillageConfig::parse(
        &deploy("village/village.toml"),
        &read(&deploy("village/village.toml")),
    )
    .unwrap_or_else(|e| panic!("{e:#}"));

    let peers: BTreeSet<&str> = replicas[0].peers.values().map(String::as_str).collect();
    let county: BTreeSet<&str> = township.county.iter().map(String::as_str).collect();
    assert_eq!(county, peers, "the township dials every replica, no other");
    for replica in &replicas {
        assert_eq!(replica.definition, township.definition);
        assert_eq!(replica.tls.ca, township.tls.ca);
        assert_ne!(replica.data_dir, township.data_dir);
    }
    let id = township.township_id.as_str();
    assert_eq!(
        township.tls.cert.file_name().unwrap(),
        format!("township-{id}.pem").as_str()
    );
    assert_eq!(
        township.tls.key.file_name().unwrap(),
        format!("township-{id}.key").as_str()
    );
    assert!(
        township
            .countersign_key
            .to_string_lossy()
            .contains(&format!("township-{id}")),
        "{}",
        township.countersign_key.display()
    );
    assert!(township.listen.ip().is_unspecified());

    let definition = tally_tests::files::load_definition(&sample_county().join("election.toml"))
        .expect("the sample definition loads");
    assert!(
        definition.township(&township.township_id).is_some(),
        "{id} is a township of the sample county"
    );
    let unit = definition
        .unit(&village.unit_id)
        .unwrap_or_else(|| panic!("{} is not a unit of the sample", village.unit_id));
    assert_eq!(unit.township, township.township_id);
    assert_eq!(
        host_of(&village.township),
        format!("township-{}.example.gov.cn", id.to_lowercase()),
        "the device dials its township's machine by name"
    );
    assert_eq!(port_of(&village.township), township.listen.port());
    let folder = deploy("village");
    assert_eq!(village.definition, folder.join("election/election.toml"));
    assert_eq!(
        village.tls.cert,
        folder.join(format!("pki/village-{}.pem", village.unit_id))
    );
    assert_eq!(
        village.tls.key,
        folder.join(format!("pki/village-{}.key", village.unit_id))
    );
    assert_eq!(village.signing_key, folder.join("unit.key"));

    // The README installs each of these where the units look for it.
    let readme = read(&deploy("README.md"));
    for (file, installed) in INSTALLED {
        assert!(readme.contains(installed), "README.md names {installed}");
        // The README writes the replicas' files once, as replica-N.toml.
        let written = file.replace(|c: char| c.is_ascii_digit(), "N");
        assert!(readme.contains(&written), "README.md names {written}");
    }
}

// ---- systemd ----

/// A unit file's settings in order: (section, key, value); comments and blank lines dropped.
fn parse_unit(path: &Path) -> Vec<(String, String, String)> {
    let mut section = String::new();
    let mut settings = Vec::new();
    for (i, line) in read(path).lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        assert!(
            !line.ends_with('\\'),
            "{} line {}: no continued lines, please",
            path.display(),
            i + 1
        );
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_owned();
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("{} line {}: not KEY=VALUE", path.display(), i + 1));
        settings.push((
            section.clone(),
            key.trim().to_owned(),
            value.trim().to_owned(),
        ));
    }
    settings
}

fn unit_values<'a>(settings: &'a [(String, String, String)], key: &str) -> Vec<&'a str> {
    settings
        .iter()
        .filter(|(section, k, _)| section == "Service" && k == key)
        .map(|(_, _, v)| v.as_str())
        .collect()
}

fn unit_value<'a>(settings: &'a [(String, String, String)], key: &str) -> &'a str {
    match unit_values(settings, key).as_slice() {
        [value] => value,
        other => panic!("[Service] {key}= is set {} times", other.len()),
    }
}

/// A systemd time span as the units write it: `5s`, `500ms`, `1min` or plain seconds.
fn parse_timespan(text: &str) -> Duration {
    let number_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(number_end);
    let n: u64 = number
        .parse()
        .unwrap_or_else(|_| panic!("{text:?} is not a time span"));
    match unit {
        "" | "s" | "sec" => Duration::from_secs(n),
        "ms" | "msec" => Duration::from_millis(n),
        "min" | "m" => Duration::from_secs(n * 60),
        _ => panic!("{text:?}: unit {unit:?} not known to this test"),
    }
}

/// The environment a unit sets: `Environment=KEY=VALUE` lines.
fn unit_environment(settings: &[(String, String, String)]) -> Vec<(String, String)> {
    unit_values(settings, "Environment")
        .iter()
        .flat_map(|value| value.split_whitespace())
        .map(|pair| {
            let (k, v) = pair
                .split_once('=')
                .unwrap_or_else(|| panic!("Environment {pair:?} is not KEY=VALUE"));
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

fn unit_files() -> Vec<PathBuf> {
    let mut units: Vec<PathBuf> = fs::read_dir(deploy("systemd"))
        .expect("deploy/systemd lists")
        .map(|e| e.expect("an entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "service"))
        .collect();
    units.sort();
    let names: Vec<String> = units
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["tally-county.service", "tally-township.service"]);
    units
}

/// Whether `systemd-analyze verify` works on this machine: it verifies a unit known to be
/// good without a word. Says why not when it does not.
fn systemd_analyze_works(scratch: &Path) -> bool {
    let probe = scratch.join("tally-probe.service");
    fs::write(
        &probe,
        "[Unit]\nDescription=probe\n[Service]\nType=exec\nExecStart=/bin/true\n",
    )
    .unwrap();
    match Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&probe)
        .output()
    {
        Ok(out) if out.status.success() && out.stdout.is_empty() && out.stderr.is_empty() => true,
        Ok(out) => {
            eprintln!(
                "NOTE: not verifying the units with systemd-analyze: it does not work here \
                 (a known-good unit gave {}: {}{})",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            false
        }
        Err(e) => {
            eprintln!("NOTE: not verifying the units with systemd-analyze: cannot run it ({e})");
            false
        }
    }
}

// Goal: each unit runs a real `tally` subcommand with flags it has, on a config the README
// installs from deploy/; the config's data dir is writable under the unit's sandbox and the
// files it reads are not hidden by it; the stop timeout outlasts tally's SIGTERM grace; the
// hardening the README promises is there; and systemd itself finds nothing wrong with the
// units and rates their exposure OK.
// Method: parse each unit; check ExecStart against `tally --help`; parse the deploy configs
// it runs with the real parsers; then, where systemd-analyze works, `verify` a copy with the
// binary path set to the built tally (verify checks that it exists and is executable) and
// read `security --offline=yes`.
#[test]
fn systemd_units_run_the_deploy_configs() {
    let scratch = tally_tests::tempdir();
    let analyze = systemd_analyze_works(scratch.path());
    for unit in unit_files() {
        let name = unit.file_name().unwrap().to_string_lossy().into_owned();
        let settings = parse_unit(&unit);
        let exec: Vec<String> = unit_value(&settings, "ExecStart")
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        assert_eq!(exec[0], INSTALLED_BINARY, "{name}");
        let subcommand = check_command_line(&exec[1..], &name);
        let config = flag_value(&exec, "--config")
            .unwrap_or_else(|| panic!("{name}: ExecStart gives no --config"));
        let sources: Vec<&str> = INSTALLED
            .iter()
            .filter(|(_, installed)| *installed == config)
            .map(|(file, _)| *file)
            .collect();
        assert!(
            !sources.is_empty(),
            "{name}: {config} is not where the README installs a deploy/ config"
        );

        // What the service may write (StateDirectory under /var/lib, ReadWritePaths) and what
        // it cannot see (ProtectHome, PrivateTmp).
        assert_eq!(unit_value(&settings, "ProtectSystem"), "strict", "{name}");
        let mut writable: Vec<PathBuf> = unit_values(&settings, "StateDirectory")
            .iter()
            .flat_map(|v| v.split_whitespace())
            .map(|dir| Path::new("/var/lib").join(dir))
            .collect();
        writable.extend(
            unit_values(&settings, "ReadWritePaths")
                .iter()
                .flat_map(|v| v.split_whitespace())
                .map(|p| PathBuf::from(p.trim_start_matches('-'))),
        );
        let hidden = ["/home", "/root", "/run/user", "/tmp", "/var/tmp"];
        for source in &sources {
            let path = deploy(source);
            let (data_dir, reads): (PathBuf, Vec<PathBuf>) = match subcommand[0].as_str() {
                "county" => {
                    let c = parse_county(&path);
                    (
                        c.data_dir,
                        vec![c.definition, c.tls.ca, c.tls.cert, c.tls.key],
                    )
                }
                "township" => {
                    let c = parse_township(&path);
                    (
                        c.data_dir,
                        vec![
                            c.definition,
                            c.countersign_key,
                            c.tls.ca,
                            c.tls.cert,
                            c.tls.key,
                        ],
                    )
                }
                other => panic!("{name}: no deploy config is known for `tally {other}`"),
            };
            assert!(
                writable.iter().any(|w| data_dir.starts_with(w)),
                "{name}: data_dir {} of {source} is not writable under the unit (writable: {writable:?})",
                data_dir.display()
            );
            for file in reads.iter().chain([&data_dir]) {
                assert!(
                    !hidden.iter().any(|h| file.starts_with(h)),
                    "{name}: {} of {source} is hidden from the service",
                    file.display()
                );
            }
        }

        assert_eq!(unit_value(&settings, "User"), "tally", "{name}");
        assert_eq!(unit_value(&settings, "Restart"), "on-failure", "{name}");
        // A replica whose storage failed exits 74 (EX_IOERR), another stopped driver 70: both
        // must count as failures, so that on-failure starts it again (docs/design/county.md).
        for status in [
            tally_county::fault::EXIT_STORAGE,
            tally_county::fault::EXIT_DRIVER,
        ] {
            for key in ["RestartPreventExitStatus", "SuccessExitStatus"] {
                assert!(
                    !unit_values(&settings, key)
                        .iter()
                        .flat_map(|v| v.split_whitespace())
                        .any(|v| v == status.to_string() || v == "EX_IOERR" || v == "EX_SOFTWARE"),
                    "{name}: {key} keeps exit status {status} from restarting it"
                );
            }
        }
        for (key, value) in [
            ("NoNewPrivileges", "yes"),
            ("ProtectHome", "yes"),
            ("PrivateTmp", "yes"),
        ] {
            assert_eq!(unit_value(&settings, key), value, "{name}: {key}");
        }
        let files: u64 = unit_value(&settings, "LimitNOFILE")
            .parse()
            .expect("LimitNOFILE is a number");
        assert!(files >= 4096, "{name}: LimitNOFILE={files}");
        let environment = unit_environment(&settings);
        assert!(
            environment.contains(&("TALLY_LOG_FORMAT".into(), "json".into())),
            "{name}: {environment:?}"
        );
        // SIGKILL must not come while tally still finishes its calls in progress.
        let stop_timeout = parse_timespan(unit_value(&settings, "TimeoutStopSec"));
        assert!(
            stop_timeout >= SHUTDOWN_GRACE + STOP_MARGIN,
            "{name}: TimeoutStopSec {stop_timeout:?} leaves no margin over the {SHUTDOWN_GRACE:?} grace"
        );

        if analyze {
            let copy = scratch.path().join(&name);
            let text = read(&unit).replace(
                INSTALLED_BINARY,
                &tally_tests::tally_binary().display().to_string(),
            );
            fs::write(&copy, text).unwrap();
            let out = Command::new("systemd-analyze")
                .args(["verify", "--man=no"])
                .arg(&copy)
                .output()
                .expect("systemd-analyze runs");
            // verify exits 0 on warnings such as an unknown key: any word from it is a finding.
            assert!(
                out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
                "systemd-analyze verify {name}: {}\n{}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            let out = Command::new("systemd-analyze")
                .args(["security", "--offline=yes", "--no-pager"])
                .arg(&copy)
                .output()
                .expect("systemd-analyze runs");
            let text = String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr);
            let exposure: f64 = text
                .lines()
                .find_map(|l| {
                    l.split_once("Overall exposure level for ")?
                        .1
                        .split_once(": ")
                })
                .and_then(|(_, rest)| rest.split_whitespace().next()?.parse().ok())
                .unwrap_or_else(|| panic!("no exposure level in:\n{text}"));
            assert!(
                exposure <= EXPOSURE_MAX,
                "{name}: exposure {exposure} > {EXPOSURE_MAX}:\n{text}"
            );
        }
    }
}

// ---- Compose ----

fn compose() -> Yaml {
    let path = deploy("compose/compose.yaml");
    let mut docs = YamlLoader::load_from_str(&read(&path))
        .unwrap_or_else(|e| panic!("{} is not YAML: {e}", path.display()));
    assert_eq!(docs.len(), 1, "one document");
    docs.remove(0)
}

fn str_of(yaml: &Yaml, what: &str) -> String {
    yaml.as_str()
        .unwrap_or_else(|| panic!("{what} is not a string: {yaml:?}"))
        .to_owned()
}

fn strings(yaml: &Yaml, what: &str) -> Vec<String> {
    yaml.as_vec()
        .unwrap_or_else(|| panic!("{what} is not a list: {yaml:?}"))
        .iter()
        .map(|item| str_of(item, what))
        .collect()
}

/// One mount of a service: `SOURCE:TARGET[:ro]`, SOURCE a named volume or a `./` path.
#[derive(Debug, Clone)]
struct Mount {
    source: String,
    target: String,
    read_only: bool,
}

impl Mount {
    fn is_volume(&self) -> bool {
        !self.source.starts_with('.') && !self.source.starts_with('/')
    }
}

/// A service of compose.yaml: the tally command lines it runs and its mounts.
struct Service {
    name: String,
    yaml: Yaml,
    /// Each tally command line, without the leading `tally`.
    commands: Vec<Vec<String>>,
    /// The shell script, for the one service that runs one.
    script: Option<String>,
    mounts: Vec<Mount>,
}

/// Compose's variable interpolation: `$$` is a literal `$`; a lone `$` would be replaced by a
/// variable from the host's environment, which none of these files means to do.
fn interpolate(text: &str, what: &str) -> String {
    assert!(
        !text.replace("$$", "").contains('$'),
        "{what}: a lone $ would be interpolated by compose; write $$ for the shell"
    );
    text.replace("$$", "$")
}

fn services() -> Vec<Service> {
    let doc = compose();
    let services = doc["services"]
        .as_hash()
        .expect("compose.yaml has services");
    services
        .iter()
        .map(|(name, yaml)| {
            let name = str_of(name, "a service name");
            assert_eq!(
                str_of(&yaml["image"], "image"),
                COMPOSE_IMAGE,
                "service {name}"
            );
            let mounts = match &yaml["volumes"] {
                Yaml::BadValue => Vec::new(),
                list => strings(list, "volumes")
                    .iter()
                    .map(|m| {
                        let parts: Vec<&str> = m.split(':').collect();
                        match parts.as_slice() {
                            [source, target] => Mount {
                                source: source.to_string(),
                                target: target.to_string(),
                                read_only: false,
                            },
                            [source, target, "ro"] => Mount {
                                source: source.to_string(),
                                target: target.to_string(),
                                read_only: true,
                            },
                            _ => panic!("service {name}: mount {m:?} is not SOURCE:TARGET[:ro]"),
                        }
                    })
                    .collect(),
            };
            let (commands, script) = match &yaml["entrypoint"] {
                Yaml::BadValue => (
                    vec![strings(&yaml["command"], &format!("{name}: command"))],
                    None,
                ),
                entrypoint => {
                    let entrypoint = strings(entrypoint, "entrypoint");
                    assert_eq!(
                        entrypoint,
                        ["/bin/sh", "-euc"],
                        "service {name}: a script stops at its first error"
                    );
                    let command = strings(&yaml["command"], "command");
                    assert_eq!(command.len(), 1, "service {name}: one script");
                    let script = interpolate(&command[0], &name);
                    let commands = script
                        .lines()
                        .map(str::trim)
                        .filter(|line| line.starts_with("tally "))
                        .map(|line| {
                            assert!(
                                !line.contains(['"', '\'', '$', ';', '|', '&']),
                                "service {name}: keep each tally line plain words: {line}"
                            );
                            line.split_whitespace().skip(1).map(str::to_owned).collect()
                        })
                        .collect();
                    (commands, Some(script))
                }
            };
            Service {
                name,
                yaml: yaml.clone(),
                commands,
                script,
                mounts,
            }
        })
        .collect()
}

/// Where the image puts what the Dockerfile copies from the repository: (path in the image,
/// path in the repository).
fn image_copies() -> Vec<(String, PathBuf)> {
    let dockerfile = read(&deploy("compose/Dockerfile"));
    let stages: Vec<&str> = dockerfile.split("\nFROM ").collect();
    let last = stages.last().expect("a stage");
    let entrypoint = last
        .lines()
        .filter_map(|l| l.strip_prefix("ENTRYPOINT "))
        .next_back()
        .expect("the image has an ENTRYPOINT");
    assert_eq!(
        entrypoint, "[\"/usr/local/bin/tally\"]",
        "compose's commands are tally's arguments"
    );
    assert!(
        last.lines().any(|l| l == "USER tally"),
        "the image runs as tally"
    );
    last.lines()
        .filter_map(|l| l.strip_prefix("COPY "))
        .filter(|l| !l.starts_with("--from"))
        .map(|l| {
            let (from, to) = l.split_once(' ').expect("COPY FROM TO");
            let from = repo_root().join(from);
            assert!(from.exists(), "the Dockerfile copies {}", from.display());
            (to.to_owned(), from)
        })
        .collect()
}

/// The paths a server's config names, parsed by the server's own parser: (key, path), the
/// data dir first, and the listen port.
fn config_paths(subcommand: &str, file: &Path) -> (Vec<(&'static str, PathBuf)>, u16) {
    match subcommand {
        "county" => {
            let c = parse_county(file);
            (
                vec![
                    ("data_dir", c.data_dir),
                    ("definition", c.definition),
                    ("tls.ca", c.tls.ca),
                    ("tls.cert", c.tls.cert),
                    ("tls.key", c.tls.key),
                ],
                c.listen.port(),
            )
        }
        "township" => {
            let c = parse_township(file);
            (
                vec![
                    ("data_dir", c.data_dir),
                    ("definition", c.definition),
                    ("countersign_key", c.countersign_key),
                    ("tls.ca", c.tls.ca),
                    ("tls.cert", c.tls.cert),
                    ("tls.key", c.tls.key),
                ],
                c.listen.port(),
            )
        }
        other => panic!("no config parser is known for `tally {other}`"),
    }
}

/// The config file a server service mounts for its `--config`, in the repository.
fn mounted_config(service: &Service, config: &str) -> PathBuf {
    let mount = service
        .mounts
        .iter()
        .find(|m| m.target == config)
        .unwrap_or_else(|| {
            panic!(
                "service {}: --config {config} is not a file it mounts",
                service.name
            )
        });
    assert!(
        !mount.is_volume() && mount.read_only,
        "service {}: {config} comes from a file in deploy/compose, read-only",
        service.name
    );
    let source = deploy("compose").join(&mount.source);
    assert!(
        source.is_file(),
        "service {}: {} does not exist",
        service.name,
        source.display()
    );
    source
}

// Goal: every service of compose.yaml runs a real tally subcommand with flags it has; a
// server's --config is a file the service mounts from deploy/compose, valid by the server's
// own parser; every path that config names is in a mount of the service or in the image,
// its data dir in a writable volume of its own and everything else read-only; the addresses
// the servers dial are compose services at the ports their configs listen on, and on the
// certificates setup makes; and every server waits for setup.
// Method: parse compose.yaml (yaml-rust2) and the Dockerfile's final stage; check each
// command line against `tally ... --help`; parse the mounted configs.
#[test]
fn compose_services_run_real_subcommands_with_mounted_configs() {
    let services = services();
    let image = image_copies();
    let doc = compose();
    let declared: BTreeSet<String> = doc["volumes"]
        .as_hash()
        .expect("named volumes are declared")
        .keys()
        .map(|k| str_of(k, "a volume"))
        .collect();
    let mut used = BTreeSet::new();
    // Service name → the port its config listens on, for the servers.
    let mut listening: BTreeMap<String, (String, u16)> = BTreeMap::new();
    let mut dialled: Vec<(String, String)> = Vec::new();
    let mut certificate_hosts: BTreeMap<&'static str, BTreeSet<String>> = BTreeMap::new();

    for service in &services {
        for mount in service.mounts.iter().filter(|m| m.is_volume()) {
            assert!(
                declared.contains(&mount.source),
                "service {}: volume {} is not declared",
                service.name,
                mount.source
            );
            used.insert(mount.source.clone());
        }
        assert!(
            !service.commands.is_empty(),
            "service {} runs tally",
            service.name
        );
        for args in &service.commands {
            let subcommand = check_command_line(args, &format!("service {}", service.name));
            if subcommand == ["certs"] {
                let hosts: BTreeSet<String> = flag_value(args, "--hosts")
                    .expect("certs gets --hosts")
                    .split(',')
                    .map(str::to_owned)
                    .collect();
                let kind = if flag_value(args, "--replicas").is_some() {
                    "county"
                } else {
                    assert!(flag_value(args, "--definition").is_some(), "{args:?}");
                    "township"
                };
                certificate_hosts.entry(kind).or_default().extend(hosts);
            }
            let Some(config) = flag_value(args, "--config") else {
                continue;
            };
            assert_eq!(subcommand.len(), 1, "{}: a server", service.name);
            let file = mounted_config(service, config);
            let (paths, port) = config_paths(&subcommand[0], &file);
            for (i, (key, path)) in paths.iter().enumerate() {
                let path_text = path.to_string_lossy();
                let mount = service.mounts.iter().find(|m| path.starts_with(&m.target));
                if i == 0 {
                    let mount = mount.unwrap_or_else(|| {
                        panic!(
                            "service {}: data_dir {path_text} is in no volume",
                            service.name
                        )
                    });
                    assert!(mount.is_volume() && !mount.read_only, "{}", service.name);
                    let sharers: Vec<&str> = services
                        .iter()
                        .filter(|s| s.mounts.iter().any(|m| m.source == mount.source))
                        .map(|s| s.name.as_str())
                        .collect();
                    assert_eq!(sharers, [service.name.as_str()], "a data volume of its own");
                    continue;
                }
                match mount {
                    Some(mount) => assert!(
                        mount.read_only,
                        "service {}: {key} {path_text} is in a writable mount",
                        service.name
                    ),
                    None => {
                        let (in_image, from) = image
                            .iter()
                            .find(|(to, _)| path.starts_with(to))
                            .unwrap_or_else(|| {
                                panic!(
                                    "service {}: {key} {path_text} is neither mounted nor in the image",
                                    service.name
                                )
                            });
                        let in_repo = from.join(path.strip_prefix(in_image).unwrap());
                        assert!(in_repo.is_file(), "{}", in_repo.display());
                    }
                }
            }
            let ports: Vec<String> = strings(&service.yaml["ports"], "ports");
            for published in &ports {
                assert_eq!(
                    port_of(published),
                    port,
                    "service {}: publishes {published}, listens on {port}",
                    service.name
                );
            }
            // Each server service is the one its name says: county-N replica N, township-tNN
            // township TNN, so the host names on the certificates reach the right server.
            let named = if subcommand[0] == "county" {
                format!("county-{}", parse_county(&file).replica_id)
            } else {
                format!("township-{}", parse_township(&file).township_id).to_lowercase()
            };
            assert_eq!(
                service.name, named,
                "service {} runs {named}'s config",
                service.name
            );
            listening.insert(service.name.clone(), (subcommand[0].clone(), port));
            if subcommand[0] == "county" {
                dialled.extend(
                    parse_county(&file)
                        .peers
                        .into_values()
                        .map(|a| (service.name.clone(), a)),
                );
            } else {
                dialled.extend(
                    parse_township(&file)
                        .county
                        .into_iter()
                        .map(|a| (service.name.clone(), a)),
                );
            }
            let depends = &service.yaml["depends_on"]["setup"]["condition"];
            assert_eq!(
                depends.as_str(),
                Some("service_completed_successfully"),
                "service {} waits for setup",
                service.name
            );
        }
    }
    assert_eq!(used, declared, "every declared volume is used");

    let of_kind = |kind: &str| -> BTreeSet<String> {
        listening
            .iter()
            .filter(|(_, (k, _))| k == kind)
            .map(|(name, _)| name.clone())
            .collect()
    };
    assert_eq!(of_kind("county").len(), 3, "three replicas");
    assert!(!of_kind("township").is_empty(), "some townships");
    for (who, address) in &dialled {
        let host = host_of(address);
        let (kind, port) = listening
            .get(host)
            .unwrap_or_else(|| panic!("{who} dials {address}, which is no server service"));
        assert_eq!(kind, "county", "{who} dials {address}");
        assert_eq!(port_of(address), *port, "{who} dials {address}");
    }
    assert_eq!(
        certificate_hosts.get("county"),
        Some(&of_kind("county")),
        "the replicas' certificates name the county services"
    );
    assert_eq!(
        certificate_hosts.get("township"),
        Some(&of_kind("township")),
        "the townships' certificates name the township services"
    );

    // The operator's tools dial every replica with the operator certificate setup makes.
    let operator = services
        .iter()
        .find(|s| s.name == "operator")
        .expect("an operator service");
    let servers: BTreeSet<String> = str_of(
        &operator.yaml["environment"]["TALLY_SERVERS"],
        "TALLY_SERVERS",
    )
    .split(',')
    .map(|a| {
        let (kind, port) = &listening[host_of(a)];
        assert_eq!((kind.as_str(), *port), ("county", port_of(a)), "{a}");
        host_of(a).to_owned()
    })
    .collect();
    assert_eq!(servers, of_kind("county"));
    let pki = str_of(&operator.yaml["environment"]["TALLY_PKI"], "TALLY_PKI");
    assert!(operator.mounts.iter().any(|m| m.target == pki));
    eprintln!(
        "NOTE: compose.yaml is parsed and its setup script is run \
         (compose_setup_makes_every_file_the_services_name), but these tests build and start no \
         container: they assume no Docker daemon or compose"
    );
}

/// Rewrites the container paths in `text` to where a service's mounts are on this machine:
/// `mounts` is (container path, path here), longest first so nested mounts win.
fn rehome(text: &str, mounts: &[(String, PathBuf)]) -> String {
    let mut mounts = mounts.to_vec();
    mounts.sort_by_key(|(target, _)| std::cmp::Reverse(target.len()));
    let mut out = text.to_owned();
    for (target, here) in &mounts {
        out = out.replace(target.as_str(), &here.to_string_lossy());
    }
    out
}

// Goal: the one-shot setup of compose.yaml makes every file the servers' configs name, of the
// right identity (replica N's certificate for replica N; township T's certificate and the key
// the definition registers for T), with the keys readable by their owner only; and a second
// `up` runs it again harmlessly.
// Method: give each named volume a folder and map the image's copied paths to the
// repository; run the setup script with `sh -euc` as compose would (after compose's `$$`
// interpolation), with the built tally first on PATH; then rewrite each server's mounted
// config to those folders and load it as the server does at start (files checked,
// certificate identity, and for a township `prepare`, which checks its key against the
// definition).
#[cfg(unix)]
#[test]
fn compose_setup_makes_every_file_the_services_name() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tally_tests::tempdir();
    let services = services();
    let image: Vec<(String, PathBuf)> = image_copies();
    let volume = |name: &str| dir.path().join("volumes").join(name);
    let mounts_of = |service: &Service| -> Vec<(String, PathBuf)> {
        let mut mounts = image.clone();
        for m in service.mounts.iter().filter(|m| m.is_volume()) {
            fs::create_dir_all(volume(&m.source)).unwrap();
            mounts.push((m.target.clone(), volume(&m.source)));
        }
        mounts
    };
    let bin = dir.path().join("bin");
    fs::create_dir(&bin).unwrap();
    std::os::unix::fs::symlink(tally_tests::tally_binary(), bin.join("tally")).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );

    let setup = services.iter().find(|s| s.name == "setup").expect("setup");
    let script = rehome(setup.script.as_ref().expect("a script"), &mounts_of(setup));
    let run_setup = || {
        Command::new("/bin/sh")
            .args(["-euc", &script])
            .env("PATH", &path)
            .current_dir(dir.path())
            .output()
            .expect("sh runs")
    };
    let out = run_setup();
    assert!(
        out.status.success(),
        "setup: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let again = run_setup();
    assert!(again.status.success(), "a second up runs setup again");
    assert!(
        String::from_utf8_lossy(&again.stdout).contains("nothing to do"),
        "{}",
        String::from_utf8_lossy(&again.stdout)
    );

    let mut started = 0;
    for service in &services {
        let Some(config) = service
            .commands
            .first()
            .and_then(|args| flag_value(args, "--config"))
        else {
            continue;
        };
        let subcommand = &service.commands[0][0];
        let text = rehome(&read(&mounted_config(service, config)), &mounts_of(service));
        let file = dir.path().join(format!("{}.toml", service.name));
        fs::write(&file, text).unwrap();
        match subcommand.as_str() {
            "county" => {
                let c = CountyConfig::load(&file).unwrap_or_else(|e| panic!("{e}"));
                let (_, identity) = c.tls.server_tls().unwrap_or_else(|e| panic!("{e}"));
                assert_eq!(
                    identity.replica_id(),
                    Some(c.replica_id.get()),
                    "{}",
                    service.name
                );
                assert_key_mode(&c.tls.key);
            }
            "township" => {
                let c = TownshipConfig::load(&file).unwrap_or_else(|e| panic!("{e}"));
                tally_township::server::prepare(&c)
                    .unwrap_or_else(|e| panic!("service {}: {e}", service.name));
                assert_key_mode(&c.tls.key);
                assert_key_mode(&c.countersign_key);
            }
            other => panic!("no config known for `tally {other}`"),
        }
        started += 1;
    }
    assert!(started >= 4, "the replicas and townships were checked");

    // The operator's default --operator has its certificate.
    let operator = services.iter().find(|s| s.name == "operator").unwrap();
    let pki = str_of(&operator.yaml["environment"]["TALLY_PKI"], "TALLY_PKI");
    let pki_here = PathBuf::from(rehome(&pki, &mounts_of(operator)));
    for file in ["ca.pem", "operator-operator.pem", "operator-operator.key"] {
        assert!(pki_here.join(file).is_file(), "{file} in {pki}");
    }

    fn assert_key_mode(path: &Path) {
        let mode = fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{} is mode {mode:o}", path.display());
    }
}

// ---- Started: the deploy configs as real processes ----

/// A server the test started, killed when dropped, and where its log goes.
struct Server {
    name: String,
    process: Process,
    log: PathBuf,
}

impl Server {
    fn log_tail(&self) -> String {
        format!(
            "--- {} (last lines of {})\n{}",
            self.name,
            self.log.display(),
            tail(&self.log, LOG_TAIL_LINES)
        )
    }
}

fn logs(processes: &[Server]) -> String {
    processes
        .iter()
        .map(Server::log_tail)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Polls `check` until it gives a value; panics after `deadline` with the last answer and the
/// servers' logs.
fn wait_for<T>(
    what: &str,
    deadline: Duration,
    processes: &mut [Server],
    mut check: impl FnMut() -> Result<T, String>,
) -> T {
    let result = poll(deadline, POLL_INTERVAL, || {
        let exited = processes
            .iter_mut()
            .find_map(|p| Some((p.name.clone(), p.process.exited()?)));
        if let Some((name, status)) = exited {
            panic!("{name} exited ({status})\n{}", logs(processes));
        }
        check()
    });
    result.unwrap_or_else(|last| {
        panic!(
            "timed out after {deadline:?} waiting for {what}; last: {last}\n{}",
            logs(processes)
        )
    })
}

fn copy_mode(from: &Path, to: &Path, mode: u32) {
    fs::create_dir_all(to.parent().unwrap()).unwrap();
    fs::copy(from, to).unwrap_or_else(|e| panic!("copy {}: {e}", from.display()));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(to, fs::Permissions::from_mode(mode)).unwrap();
    }
    #[cfg(not(unix))]
    let _ = mode;
}

/// A secret key from one of the sample's published `*-keys.csv` files, as a key file.
fn sample_secret(csv: &str, id: &str, to: &Path) {
    let text = read(&sample_county().join(csv));
    let secret = text
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{id},")))
        .unwrap_or_else(|| panic!("{csv} has {id}"));
    fs::create_dir_all(to.parent().unwrap()).unwrap();
    fs::write(to, format!("{}\n", secret.trim())).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(to, fs::Permissions::from_mode(0o600)).unwrap();
    }
}

/// The election definition as installed: election.toml and the CSV files beside it.
fn install_definition(folder: &Path) {
    fs::create_dir_all(folder).unwrap();
    for entry in fs::read_dir(sample_county()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml" || e == "csv")
            && !path
                .file_name()
                .unwrap()
                .to_string_lossy()
                .ends_with("-keys.csv")
        {
            copy_mode(&path, &folder.join(path.file_name().unwrap()), 0o644);
        }
    }
}

/// `text` with every absolute path moved under `root` and each address in `addresses`
/// replaced: a machine of the deploy examples, laid out in a folder of this one.
fn relocate(text: &str, root: &Path, addresses: &[(String, String)]) -> String {
    let mut out = text.replace("\"/", &format!("\"{}/", root.display()));
    for (from, to) in addresses {
        out = out.replace(&format!("\"{from}\""), &format!("\"{to}\""));
    }
    out
}

fn under(root: &Path, absolute: &Path) -> PathBuf {
    root.join(absolute.strip_prefix("/").expect("an absolute path"))
}

fn start(name: &str, root: &Path, args: &[&str], env: &[(String, String)]) -> Server {
    let log = root.join(format!("{name}.log"));
    let mut command = tally();
    command
        .args(args)
        .current_dir(root)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log).unwrap());
    for (k, v) in env {
        command.env(k, v);
    }
    Server {
        name: name.to_owned(),
        process: Process(command.spawn().expect("tally starts")),
        log,
    }
}

fn json_of(code: i32, out: &str, err: &str, accept: &[i32]) -> Result<Value, String> {
    if !accept.contains(&code) {
        return Err(format!("exit {code}: {out}{err}"));
    }
    serde_json::from_str(out).map_err(|e| format!("not JSON ({e}): {out}{err}"))
}

// Goal: the deploy configs run as they are, but for where they listen and where their files
// are: three replicas elect a leader; the township aggregator answers its picture, to its
// clerk and to an operator; a polling unit's device, from the village sample_county, submits its
// signed sheets to the township, which forwards them to the county; and on SIGTERM every
// server exits cleanly within the 2 s grace (plus a margin), well before the units'
// TimeoutStopSec.
// Method: make the PKI with the two `tally certs` runs of deploy/README.md and the hosts the
// configs dial; lay out each machine's /etc/tally and /var/lib/tally in a folder of its own
// as the README's tables say; rewrite only the configs' absolute paths (under the machine's
// folder) and addresses (to 127.0.0.1 ports), and check by parsing both that nothing else
// differs; start `tally county` and `tally township` with the environment of their systemd
// units; watch them with `tally cluster status`, `tally township picture` and `tally village
// submit`; send SIGTERM to all four and time each exit.
#[cfg(unix)]
#[test]
fn deploy_configs_start_elect_a_leader_and_stop_within_the_grace() {
    let dir = tally_tests::tempdir();
    let root = dir.path();
    let replicas: Vec<(PathBuf, CountyConfig)> = (1..=3)
        .map(|n| {
            let path = deploy(&format!("county/replica-{n}.toml"));
            let config = parse_county(&path);
            (path, config)
        })
        .collect();
    let township_path = deploy("township/township.toml");
    let township = parse_township(&township_path);
    let village_path = deploy("village/village.toml");
    let village = VillageConfig::parse(&village_path, &read(&village_path)).unwrap();
    let township_id = township.township_id.as_str().to_owned();

    // The certificates, as deploy/README.md makes them, naming the hosts the configs dial.
    let county_hosts: Vec<&str> = replicas[0].1.peers.values().map(|a| host_of(a)).collect();
    let township_host = host_of(&village.township);
    let definition = sample_county().join("election.toml");
    let definition = definition.to_str().unwrap();
    for args in [
        vec![
            "certs",
            "--out",
            "county-pki",
            "--replicas",
            "1,2,3",
            "--operators",
            "alice,bob",
            "--hosts",
            &county_hosts.join(","),
        ],
        vec![
            "certs",
            "--out",
            "county-pki",
            "--definition",
            definition,
            "--villages",
            "--hosts",
            township_host,
        ],
    ] {
        let (code, out, err) = output(root, &args);
        assert_eq!(code, 0, "tally {}: {out}{err}", args.join(" "));
    }
    let readme = read(&deploy("README.md"));
    assert!(
        readme.contains("tally certs --out county-pki --replicas 1,2,3 --operators alice,bob")
            && readme
                .contains("tally certs --out county-pki --definition election.toml --villages"),
        "the README makes the certificates as this test does"
    );
    let pki = root.join("county-pki");

    // Every address the configs name, to a port of 127.0.0.1.
    let listeners: Vec<std::net::TcpListener> = (0..4)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let ports: Vec<u16> = listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect();
    drop(listeners);
    let local = |i: usize| format!("127.0.0.1:{}", ports[i]);
    let mut addresses: Vec<(String, String)> = replicas[0]
        .1
        .peers
        .iter()
        .map(|(id, address)| (address.clone(), local(id.get() as usize - 1)))
        .collect();
    addresses.push((village.township.clone(), local(3)));

    let unit_env = |unit: &str| unit_environment(&parse_unit(&deploy(&format!("systemd/{unit}"))));
    let mut processes = Vec::new();
    let mut servers = Vec::new();
    for (i, (path, original)) in replicas.iter().enumerate() {
        let n = original.replica_id;
        let machine = root.join(format!("county-{n}"));
        let mut these = addresses.clone();
        these.push((original.listen.to_string(), local(i)));
        let text = relocate(&read(path), &machine, &these);
        let config_path = under(&machine, Path::new("/etc/tally/county.toml"));
        fs::create_dir_all(config_path.parent().unwrap()).unwrap();
        fs::write(&config_path, &text).unwrap();
        let moved = CountyConfig::parse(&config_path, &text).unwrap_or_else(|e| panic!("{e}"));
        // Only the addresses and the folder differ from the deploy config.
        let map = |a: &String| {
            these
                .iter()
                .find(|(from, _)| from == a)
                .map(|(_, to)| to.clone())
                .unwrap_or_else(|| panic!("{a} was not moved"))
        };
        assert_eq!(moved.cluster_id, original.cluster_id);
        assert_eq!(moved.replica_id, n);
        assert_eq!(moved.initial_voters, original.initial_voters);
        assert_eq!(moved.listen.to_string(), local(i));
        assert_eq!(moved.advertise, map(&original.advertise));
        let peers: BTreeMap<tally_county::ReplicaId, String> =
            original.peers.iter().map(|(k, a)| (*k, map(a))).collect();
        assert_eq!(moved.peers, peers);
        for (moved_path, original_path) in [
            (&moved.data_dir, &original.data_dir),
            (&moved.definition, &original.definition),
            (&moved.tls.ca, &original.tls.ca),
            (&moved.tls.cert, &original.tls.cert),
            (&moved.tls.key, &original.tls.key),
        ] {
            assert_eq!(*moved_path, under(&machine, original_path));
        }
        assert_eq!(
            (moved.tick, moved.compact_after_entries),
            (original.tick, original.compact_after_entries)
        );
        // The files of a replica machine (deploy/county/README.md, section 2).
        install_definition(moved.definition.parent().unwrap());
        copy_mode(&pki.join("ca.pem"), &moved.tls.ca, 0o644);
        copy_mode(
            &pki.join(format!("replica-{n}.pem")),
            &moved.tls.cert,
            0o644,
        );
        copy_mode(&pki.join(format!("replica-{n}.key")), &moved.tls.key, 0o600);
        CountyConfig::load(&config_path).unwrap_or_else(|e| panic!("{e}"));
        processes.push(start(
            &format!("county-{n}"),
            &machine,
            &["county", "--config", config_path.to_str().unwrap()],
            &unit_env("tally-county.service"),
        ));
        servers.push(local(i));
    }

    let machine = root.join(format!("township-{}", township_id.to_lowercase()));
    let mut these = addresses.clone();
    these.push((township.listen.to_string(), local(3)));
    let text = relocate(&read(&township_path), &machine, &these);
    let township_config = under(&machine, Path::new("/etc/tally/township.toml"));
    fs::create_dir_all(township_config.parent().unwrap()).unwrap();
    fs::write(&township_config, &text).unwrap();
    let moved = TownshipConfig::parse(&township_config, &text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(moved.township_id, township.township_id);
    assert_eq!(moved.listen.to_string(), local(3));
    assert_eq!(
        moved.county, servers,
        "the township dials the three replicas"
    );
    assert_eq!(moved.outbox, township.outbox);
    for (moved_path, original_path) in [
        (&moved.data_dir, &township.data_dir),
        (&moved.definition, &township.definition),
        (&moved.countersign_key, &township.countersign_key),
        (&moved.tls.ca, &township.tls.ca),
        (&moved.tls.cert, &township.tls.cert),
        (&moved.tls.key, &township.tls.key),
    ] {
        assert_eq!(*moved_path, under(&machine, original_path));
    }
    // The files of a township machine (deploy/README.md, section 3).
    install_definition(moved.definition.parent().unwrap());
    sample_secret("township-keys.csv", &township_id, &moved.countersign_key);
    copy_mode(&pki.join("ca.pem"), &moved.tls.ca, 0o644);
    for ext in ["pem", "key"] {
        let to = if ext == "pem" {
            &moved.tls.cert
        } else {
            &moved.tls.key
        };
        let mode = if ext == "pem" { 0o644 } else { 0o600 };
        copy_mode(&pki.join(format!("township-{township_id}.{ext}")), to, mode);
    }
    TownshipConfig::load(&township_config).unwrap_or_else(|e| panic!("{e}"));
    processes.push(start(
        &format!("township-{township_id}"),
        &machine,
        &["township", "--config", township_config.to_str().unwrap()],
        &unit_env("tally-township.service"),
    ));

    // An operator's folder (deploy/README.md, section 3).
    let operator = root.join("operator");
    for file in ["ca.pem", "operator-alice.pem", "operator-alice.key"] {
        let mode = if file.ends_with(".key") { 0o600 } else { 0o644 };
        copy_mode(&pki.join(file), &operator.join(file), mode);
    }
    let servers_arg = servers.join(",");
    let operator_arg = operator.to_str().unwrap().to_owned();
    let status = || {
        let (code, out, err) = output(
            root,
            &[
                "cluster",
                "status",
                "--servers",
                &servers_arg,
                "--pki",
                &operator_arg,
                "--operator",
                "alice",
                "--format",
                "json",
            ],
        );
        json_of(code, &out, &err, &[0])
    };
    let leader = wait_for(
        "the replicas to elect a leader",
        START_DEADLINE,
        &mut processes,
        || {
            let status = status()?;
            let replicas = status["replicas"].as_array().cloned().unwrap_or_default();
            let leaders: BTreeSet<u64> = replicas
                .iter()
                .filter_map(|r| r["leader"].as_u64())
                .collect();
            match (replicas.len(), leaders.iter().next()) {
                (3, Some(&leader)) if leader != 0 && leaders.len() == 1 => Ok(leader),
                _ => Err(status.to_string()),
            }
        },
    );
    assert!((1..=3).contains(&leader));

    let township_config_arg = township_config.to_str().unwrap().to_owned();
    let picture = || {
        let (code, out, err) = output(
            root,
            &[
                "township",
                "picture",
                "--config",
                &township_config_arg,
                "--format",
                "json",
            ],
        );
        json_of(code, &out, &err, &[0, 3])
    };
    let first = wait_for(
        "the township to answer its picture",
        START_DEADLINE,
        &mut processes,
        picture,
    );
    assert_eq!(first["township"], township_id.as_str(), "{first}");
    assert_eq!(first["sheets_stored"], 0, "{first}");

    // The polling unit's device, from the village example: its folder as the README lays it
    // out, its township's host moved to 127.0.0.1, its paths relative as they are.
    let device = root.join("device");
    let text = read(&village_path).replace(&village.township, &local(3));
    fs::create_dir_all(&device).unwrap();
    fs::write(device.join("village.toml"), &text).unwrap();
    let unit = village.unit_id.as_str();
    let moved = VillageConfig::parse(&device.join("village.toml"), &text).unwrap();
    assert_eq!(moved.township, local(3));
    install_definition(moved.definition.parent().unwrap());
    sample_secret("unit-keys.csv", unit, &moved.signing_key);
    copy_mode(&pki.join("ca.pem"), &moved.tls.ca, 0o644);
    copy_mode(
        &pki.join(format!("village-{unit}.pem")),
        &moved.tls.cert,
        0o644,
    );
    copy_mode(
        &pki.join(format!("village-{unit}.key")),
        &moved.tls.key,
        0o600,
    );
    VillageConfig::load(&device.join("village.toml")).unwrap_or_else(|e| panic!("{e:#}"));
    let sheets: Vec<tally_proto::SignedSheet> =
        tally_proto::read_bundle(&fs::read(sample_county().join("sheets.sheets")).unwrap())
            .unwrap()
            .into_iter()
            .filter(|s| tally_proto::decode_sheet(&s.sheet).unwrap().unit.as_str() == unit)
            .collect();
    assert!(!sheets.is_empty(), "the sample has sheets of {unit}");
    fs::write(
        device.join("unit.sheets"),
        tally_proto::write_bundle(&sheets),
    )
    .unwrap();
    let (code, out, err) = output(
        &device,
        &[
            "village",
            "submit",
            "--config",
            "village.toml",
            "--retry-for",
            "30",
            "unit.sheets",
        ],
    );
    assert_eq!(code, 0, "village submit: {out}{err}\n{}", logs(&processes));

    // The township stores them and forwards them; the county counts them, a correction in
    // place of the sheet it replaces (the sample corrects one of this unit's sheets).
    let sheets_sent = sheets.len() as u64;
    let slots: BTreeSet<(String, u32)> = sheets
        .iter()
        .map(|s| {
            let sheet = tally_proto::decode_sheet(&s.sheet).unwrap();
            (sheet.contest.to_string(), sheet.round.0)
        })
        .collect();
    let slots_counted = slots.len() as u64;
    assert!(
        slots_counted < sheets_sent,
        "the sample's correction is among them"
    );
    let drained = wait_for(
        "the township to forward the unit's sheets",
        FORWARD_DEADLINE,
        &mut processes,
        || {
            let p = picture()?;
            let outbox = &p["outbox"];
            if p["sheets_stored"] == sheets_sent
                && outbox["depth"] == 0
                && outbox["forwarded"] == sheets_sent
                && outbox["county_reachable"] == true
            {
                Ok(p)
            } else {
                Err(p.to_string())
            }
        },
    );
    assert_eq!(drained["units_reported"], 1, "{drained}");
    wait_for(
        "the county to count the sheets",
        FORWARD_DEADLINE,
        &mut processes,
        || {
            let s = status()?;
            let counted: Vec<u64> = s["replicas"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|r| r["sheets_counted"].as_u64())
                .collect();
            if counted.len() == 3 && counted.iter().all(|c| *c == slots_counted) {
                Ok(())
            } else {
                Err(s.to_string())
            }
        },
    );
    let (code, out, err) = output(
        root,
        &[
            "township",
            "picture",
            "--server",
            &local(3),
            "--pki",
            &operator_arg,
            "--operator",
            "alice",
            "--format",
            "json",
        ],
    );
    let operator_view = json_of(code, &out, &err, &[0]).unwrap();
    assert_eq!(operator_view["sheets_stored"], sheets_sent);

    // The units' environment asks for JSON lines: every line the servers logged is one.
    for p in &processes {
        let text = read(&p.log);
        assert!(!text.trim().is_empty(), "{} logged nothing", p.name);
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            serde_json::from_str::<Value>(line)
                .unwrap_or_else(|e| panic!("{}: not a JSON line ({e}): {line}", p.name));
        }
    }

    // SIGTERM, as systemctl stop sends it, to every server at once.
    let stop_timeout = parse_timespan(unit_value(
        &parse_unit(&deploy("systemd/tally-county.service")),
        "TimeoutStopSec",
    ));
    let deadline = SHUTDOWN_GRACE + STOP_MARGIN;
    assert!(deadline <= stop_timeout);
    let stopping = Instant::now();
    for p in &processes {
        let sent = Command::new("kill")
            .args(["-TERM", &p.process.0.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success());
    }
    let mut running: Vec<usize> = (0..processes.len()).collect();
    while !running.is_empty() {
        let mut still = Vec::new();
        for i in running {
            match processes[i].process.exited() {
                Some(exit) => {
                    let took = stopping.elapsed();
                    assert!(
                        took < deadline,
                        "{} took {took:?} to stop, more than {deadline:?}\n{}",
                        processes[i].name,
                        processes[i].log_tail()
                    );
                    assert!(
                        exit.success(),
                        "{} exited {exit}\n{}",
                        processes[i].name,
                        processes[i].log_tail()
                    );
                    eprintln!("{} stopped {took:?} after SIGTERM", processes[i].name);
                }
                None => still.push(i),
            }
        }
        running = still;
        assert!(
            running.is_empty() || stopping.elapsed() < deadline,
            "still running {deadline:?} after SIGTERM: {:?}\n{}",
            running
                .iter()
                .map(|&i| processes[i].name.as_str())
                .collect::<Vec<_>>(),
            logs(&processes)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `1.90` or `1.90.1` as numbers, for comparing Rust versions.
fn rust_version(text: &str) -> (u64, u64, u64) {
    let mut parts = text.split('.').map(|p| {
        p.parse::<u64>()
            .unwrap_or_else(|_| panic!("{text:?} is not a Rust version"))
    });
    (
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
    )
}

// Goal: the Dockerfile's Rust image can build the tally binary with the versions locked in
// Cargo.lock: no crate the binary is built from asks for a newer Rust (rust-version) than the
// image has. Docker cannot build the image here, so this is the check that catches a
// dependency update that would break `docker compose up --build`.
// Method: read the build stage's `FROM rust:X.Y-…`; walk `cargo metadata --locked`'s resolved
// graph from the tally package along normal and build dependencies (not dev), and compare.
// The graph is the image's platform's (x86_64 Linux), and cargo may fetch a package the local
// registry cache lacks: the test must not depend on what an earlier build downloaded.
#[test]
fn dockerfile_rust_builds_the_locked_dependencies() {
    let dockerfile = read(&deploy("compose/Dockerfile"));
    let image = dockerfile
        .lines()
        .find_map(|l| l.strip_prefix("FROM rust:"))
        .and_then(|rest| rest.split(['-', ' ']).next())
        .expect("the build stage is FROM rust:X.Y-...");
    let image_version = rust_version(image);

    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--locked"])
        .args(["--filter-platform", "x86_64-unknown-linux-gnu"])
        .current_dir(repo_root())
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let metadata: Value = serde_json::from_slice(&out.stdout).expect("metadata is JSON");
    let packages: BTreeMap<&str, &Value> = metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["id"].as_str().unwrap(), p))
        .collect();
    let nodes: BTreeMap<&str, &Value> = metadata["resolve"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["id"].as_str().unwrap(), n))
        .collect();
    let root = packages
        .values()
        .find(|p| {
            p["name"] == "tally"
                && p["manifest_path"]
                    .as_str()
                    .is_some_and(|m| m.ends_with("crates/tally/Cargo.toml"))
        })
        .and_then(|p| p["id"].as_str())
        .expect("the tally package");
    let mut seen = BTreeSet::from([root]);
    let mut queue = vec![root];
    while let Some(id) = queue.pop() {
        for dep in nodes[id]["deps"].as_array().into_iter().flatten() {
            let built = dep["dep_kinds"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|k| k["kind"].is_null() || k["kind"] == "build");
            let dep_id = dep["pkg"].as_str().unwrap();
            if built && seen.insert(dep_id) {
                queue.push(dep_id);
            }
        }
    }
    assert!(
        seen.len() > 50,
        "the walk found the dependencies: {}",
        seen.len()
    );
    let too_new: Vec<String> = seen
        .iter()
        .filter_map(|id| {
            let p = packages[id];
            let wanted = p["rust_version"].as_str()?;
            (rust_version(wanted) > image_version).then(|| {
                format!(
                    "{} {} needs Rust {wanted}",
                    p["name"].as_str().unwrap_or("?"),
                    p["version"].as_str().unwrap_or("?")
                )
            })
        })
        .collect();
    assert!(
        too_new.is_empty(),
        "the Dockerfile builds with rust:{image}, but {too_new:?}"
    );
}
