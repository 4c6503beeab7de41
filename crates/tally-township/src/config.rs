//! The config file of one township aggregator (`township.toml`): which township it is, where it
//! listens, where its data, definition, key and TLS files are, and where the county is.
//!
//! ```toml
//! township_id = "T01"
//! listen = "127.0.0.1:7201"                   # socket address to bind
//! http_listen = "127.0.0.1:7281"              # optional; plain HTTP: GET /metrics (Prometheus)
//! data_dir = "data/township-T01"
//! definition = "../sample-county/election.toml"
//! countersign_key = "keys/township-T01.key"   # 64 hex digits, as `tally keygen` writes
//! county = ["127.0.0.1:7101", "127.0.0.1:7102", "127.0.0.1:7103"]   # the replicas
//! [tls]
//! ca = "pki/ca.pem"
//! cert = "pki/township-T01.pem"
//! key = "pki/township-T01.key"
//! [outbox]                                    # optional
//! batch_max = 256        # sheets per forwarded batch (1..=4096)
//! capacity = 100000      # outbox depth at which Submit answers RESOURCE_EXHAUSTED
//! retry_max_ms = 5000    # the longest pause between two attempts to reach the county
//! ```
//!
//! Paths are relative to the config file's folder, so a config works from any working
//! directory. As with the county's config (`tally_county::config`), the file is checked as a
//! whole and every problem is reported at once, each with the file, the line and the key.
//!
//! [`TownshipConfig::parse`] checks the text only and touches no file;
//! [`TownshipConfig::load`] also checks that the definition, the key and the TLS files exist.
//! Their contents (the key is the one the definition registers, the certificate is this
//! township's) are checked when the aggregator starts ([`crate::server::prepare`]).

use serde::Deserialize;
use std::collections::HashSet;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tally_core::ids::TownshipId;
use toml::Spanned;

pub use tally_config::{CONFIG_BYTES_MAX, ConfigError, ConfigProblem};
use tally_config::{
    ConfigPath, FileChecks, Problems, RawTls, check_host_port, host_is_unspecified,
};

/// How this file is named in its problems: "the %s config F has N problems".
const KIND: &str = "township";
/// The most county replicas listed: a cluster has 3, 5 or 7 voters and a few being added.
pub const COUNTY_ADDRESSES_MAX: usize = 16;
/// The most sheets in one forwarded batch: the county's bound on an ingest.
pub const BATCH_MAX_LIMIT: usize = 4096;
/// Sheets per forwarded batch when `[outbox]` does not say.
pub const BATCH_MAX_DEFAULT: usize = 256;
/// The outbox depth at which Submit refuses, when `[outbox]` does not say: a township has at
/// most a few thousand sheets, so this is reached only after a very long county outage.
pub const CAPACITY_DEFAULT: u64 = 100_000;
/// The largest outbox allowed: every entry is a stored sheet, and a few hundred megabytes of
/// sheets is far beyond any township.
pub const CAPACITY_MAX: u64 = 10_000_000;
/// The longest pause between attempts to reach the county, when `[outbox]` does not say.
pub const RETRY_MAX_MS_DEFAULT: u64 = 5_000;
/// The pause the backoff starts from; `retry_max_ms` may not be shorter.
pub const RETRY_MIN_MS: u64 = 100;
/// The longest `retry_max_ms`: beyond a minute a county that is back is noticed too late.
pub const RETRY_MAX_MS_LIMIT: u64 = 60_000;

/// How the outbox forwards to the county.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxSettings {
    /// Sheets per forwarded batch.
    pub batch_max: usize,
    /// The outbox depth at which Submit answers RESOURCE_EXHAUSTED and stores nothing.
    pub capacity: u64,
    /// The longest pause between two attempts to reach the county.
    pub retry_max: Duration,
}

impl Default for OutboxSettings {
    fn default() -> Self {
        OutboxSettings {
            batch_max: BATCH_MAX_DEFAULT,
            capacity: CAPACITY_DEFAULT,
            retry_max: Duration::from_millis(RETRY_MAX_MS_DEFAULT),
        }
    }
}

/// One township aggregator's configuration, checked. Paths are resolved against the config
/// file's folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TownshipConfig {
    /// The config file this came from, for messages.
    pub file: PathBuf,
    pub township_id: TownshipId,
    /// The socket address the aggregator binds.
    pub listen: SocketAddr,
    /// Where the aggregator serves plain HTTP (`GET /metrics`, Prometheus text); `None` serves
    /// no HTTP. Read-only and unauthenticated, so bind it where only operators and the metrics
    /// collector reach it.
    pub http_listen: Option<SocketAddr>,
    pub data_dir: PathBuf,
    /// The election definition (TOML).
    pub definition: PathBuf,
    /// The township's secret countersigning key file.
    pub countersign_key: PathBuf,
    /// `host:port` of each county replica; any one will do (followers forward to the leader).
    pub county: Vec<String>,
    pub tls: tally_net::TlsFiles,
    pub outbox: OutboxSettings,
}

impl TownshipConfig {
    /// Reads, parses and checks the config at `path`, including that the definition, the key
    /// and the TLS files exist.
    pub fn load(path: &Path) -> Result<TownshipConfig, ConfigError> {
        let text = tally_config::read(KIND, path)?;
        check(path, &text, FileChecks::Yes)
    }

    /// Parses and checks the text of the config `file`, resolving its paths against the
    /// file's folder. Touches no file.
    pub fn parse(file: &Path, text: &str) -> Result<TownshipConfig, ConfigError> {
        check(file, text, FileChecks::No)
    }
}

// ---- The file as written. Spanned values carry their byte position, for the line. ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    township_id: Spanned<String>,
    listen: Spanned<String>,
    http_listen: Option<Spanned<String>>,
    data_dir: Spanned<String>,
    definition: Spanned<String>,
    countersign_key: Spanned<String>,
    county: Spanned<Vec<Spanned<String>>>,
    tls: RawTls,
    outbox: Option<RawOutbox>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOutbox {
    batch_max: Option<Spanned<u64>>,
    capacity: Option<Spanned<u64>>,
    retry_max_ms: Option<Spanned<u64>>,
}

fn check(file: &Path, text: &str, file_checks: FileChecks) -> Result<TownshipConfig, ConfigError> {
    let invalid = |problems| ConfigError::Invalid {
        kind: KIND,
        file: file.to_path_buf(),
        problems,
    };
    let raw: RawConfig = tally_config::parse_toml(KIND, file, text)?;
    let mut problems = Problems::new(text);

    let township_id = raw.township_id.get_ref().trim();
    if let Err(why) = tally_core::ids::check_id(township_id) {
        problems.at(
            &raw.township_id,
            "township_id",
            format!("{township_id:?} {why}; give the township's id as the definition writes it, e.g. \"T01\""),
        );
    }

    let listen = tally_config::listen(
        &mut problems,
        &raw.listen,
        "\"127.0.0.1:7201\" or \"0.0.0.0:7201\"",
    );

    let mut county = Vec::new();
    let mut seen = HashSet::new();
    if raw.county.get_ref().is_empty() {
        problems.at(
            &raw.county,
            "county",
            "is empty; list the county replicas' host:port, e.g. [\"county-1.example.gov.cn:7100\", \
             \"county-2.example.gov.cn:7100\", \"county-3.example.gov.cn:7100\"]"
                .to_owned(),
        );
    }
    if raw.county.get_ref().len() > COUNTY_ADDRESSES_MAX {
        problems.at(
            &raw.county,
            "county",
            format!(
                "lists {} addresses, more than {COUNTY_ADDRESSES_MAX}",
                raw.county.get_ref().len()
            ),
        );
    }
    for address in raw.county.get_ref() {
        let written = address.get_ref().trim();
        if let Err(why) = check_host_port(written) {
            problems.at(address, "county", format!("{written:?} {why}"));
        } else if host_is_unspecified(written) {
            problems.at(
                address,
                "county",
                format!(
                    "{written:?} cannot be dialled; give the host name or address the county \
                     replica is reached at"
                ),
            );
        } else if !seen.insert(written.to_owned()) {
            problems.at(address, "county", format!("{written:?} is listed twice"));
        } else {
            county.push(written.to_owned());
        }
    }

    let mut outbox = OutboxSettings::default();
    if let Some(raw_outbox) = &raw.outbox {
        if let Some(batch_max) = &raw_outbox.batch_max {
            let n = *batch_max.get_ref();
            if n == 0 || n > BATCH_MAX_LIMIT as u64 {
                problems.at(
                    batch_max,
                    "outbox.batch_max",
                    format!(
                        "is {n}; give 1 to {BATCH_MAX_LIMIT} (the county takes at most \
                         {BATCH_MAX_LIMIT} sheets in one batch), or leave it out for \
                         {BATCH_MAX_DEFAULT}"
                    ),
                );
            } else {
                outbox.batch_max = n as usize;
            }
        }
        if let Some(capacity) = &raw_outbox.capacity {
            let n = *capacity.get_ref();
            if n == 0 || n > CAPACITY_MAX {
                problems.at(
                    capacity,
                    "outbox.capacity",
                    format!(
                        "is {n}; give 1 to {CAPACITY_MAX}, or leave it out for \
                         {CAPACITY_DEFAULT}"
                    ),
                );
            } else {
                outbox.capacity = n;
            }
        }
        if let Some(retry) = &raw_outbox.retry_max_ms {
            let ms = *retry.get_ref();
            if !(RETRY_MIN_MS..=RETRY_MAX_MS_LIMIT).contains(&ms) {
                problems.at(
                    retry,
                    "outbox.retry_max_ms",
                    format!(
                        "is {ms}; give {RETRY_MIN_MS} to {RETRY_MAX_MS_LIMIT} (the backoff \
                         starts at {RETRY_MIN_MS} ms and doubles up to this), or leave it out \
                         for {RETRY_MAX_MS_DEFAULT}"
                    ),
                );
            } else {
                outbox.retry_max = Duration::from_millis(ms);
            }
        }
    }

    let resolve = |written| tally_config::resolve(file, written);
    let definition = resolve(&raw.definition);
    let countersign_key = resolve(&raw.countersign_key);
    let tls = tally_net::TlsFiles {
        ca: resolve(&raw.tls.ca),
        cert: resolve(&raw.tls.cert),
        key: resolve(&raw.tls.key),
    };
    let [ca, cert, key] = raw.tls.paths(
        "this township's certificate",
        "this township's TLS key",
        tally_net::HOW_TO_MAKE_CERTS,
    );
    let paths = [
        ConfigPath::folder("data_dir", &raw.data_dir),
        ConfigPath::definition(&raw.definition),
        ConfigPath::file(
            "countersign_key",
            &raw.countersign_key,
            "the township's countersigning key",
            "give the secret key whose public key the definition registers for this township \
             (townships.csv), as `tally keygen` wrote it",
        ),
        ca,
        cert,
        key,
    ];
    tally_config::check_paths(&mut problems, file, &paths, file_checks);

    let http_listen = tally_config::http_listen(
        &mut problems,
        raw.http_listen.as_ref(),
        listen,
        "127.0.0.1:7281",
    );

    let listen = match listen {
        Some(listen) if problems.list.is_empty() => listen,
        _ => {
            debug_assert!(!problems.list.is_empty(), "a bad address went unreported");
            return Err(invalid(problems.list));
        }
    };
    Ok(TownshipConfig {
        file: file.to_path_buf(),
        township_id: TownshipId::new(township_id),
        listen,
        http_listen,
        data_dir: resolve(&raw.data_dir),
        definition,
        countersign_key,
        county,
        tls,
        outbox,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The config of the module doc.
    const GOOD: &str = r#"# township.toml: the aggregator of township T01
township_id = "T01"
listen = "127.0.0.1:7201"
data_dir = "data/township-T01"
definition = "../sample-county/election.toml"
countersign_key = "keys/township-T01.key"
county = ["127.0.0.1:7101", "127.0.0.1:7102", "127.0.0.1:7103"]
[tls]
ca = "pki/ca.pem"
cert = "pki/township-T01.pem"
key = "pki/township-T01.key"
[outbox]
batch_max = 256
capacity = 100000
retry_max_ms = 5000
"#;

    const FILE: &str = "/srv/townships/T01.toml";

    fn problems_of(text: &str) -> Vec<String> {
        match TownshipConfig::parse(Path::new(FILE), text) {
            Ok(_) => Vec::new(),
            Err(e) => e.problems().iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn http_listen_is_optional_and_checked() {
        // Goal: http_listen is left out (no HTTP), given, or named when wrong or the same as
        // listen. Method: parse GOOD without it, with it, and with two bad values.
        assert_eq!(
            TownshipConfig::parse(Path::new(FILE), GOOD)
                .unwrap()
                .http_listen,
            None
        );
        let with = |value: &str| {
            GOOD.replacen(
                "listen = ",
                &format!("http_listen = {value:?}\nlisten = "),
                1,
            )
        };
        let config = TownshipConfig::parse(Path::new(FILE), &with("127.0.0.1:7281")).unwrap();
        assert_eq!(config.http_listen, Some("127.0.0.1:7281".parse().unwrap()));
        let found = problems_of(&with("localhost:7281"));
        assert!(
            found
                .iter()
                .any(|p| p.contains("http_listen") && p.contains("not a socket address")),
            "{found:?}"
        );
        let found = problems_of(&with("127.0.0.1:7201"));
        assert!(
            found.iter().any(|p| p.contains("the same as listen")),
            "{found:?}"
        );
    }

    #[test]
    fn good_config_parses() {
        // Goal: the documented config gives the values it says, paths resolved against the
        // config's folder; [outbox] may be left out for its defaults.
        // Method: parse the module doc's config, then one without [outbox].
        let config = TownshipConfig::parse(Path::new(FILE), GOOD).unwrap();
        let folder = Path::new("/srv/townships");
        assert_eq!(config.file, Path::new(FILE));
        assert_eq!(config.township_id, TownshipId::new("T01"));
        assert_eq!(config.listen, "127.0.0.1:7201".parse().unwrap());
        assert_eq!(config.data_dir, folder.join("data/township-T01"));
        assert_eq!(
            config.definition,
            folder.join("../sample-county/election.toml")
        );
        assert_eq!(config.countersign_key, folder.join("keys/township-T01.key"));
        assert_eq!(
            config.county,
            ["127.0.0.1:7101", "127.0.0.1:7102", "127.0.0.1:7103"]
        );
        assert_eq!(config.tls.ca, folder.join("pki/ca.pem"));
        assert_eq!(config.tls.cert, folder.join("pki/township-T01.pem"));
        assert_eq!(config.tls.key, folder.join("pki/township-T01.key"));
        assert_eq!(
            config.outbox,
            OutboxSettings {
                batch_max: 256,
                capacity: 100_000,
                retry_max: Duration::from_secs(5)
            }
        );

        let bare = GOOD.replace(
            "[outbox]\nbatch_max = 256\ncapacity = 100000\nretry_max_ms = 5000\n",
            "",
        );
        let config = TownshipConfig::parse(Path::new(FILE), &bare).unwrap();
        assert_eq!(config.outbox, OutboxSettings::default());
    }

    #[test]
    fn each_mistake_is_named_with_its_line_and_key() {
        // Goal: every check refuses its mistake with the line and key, and says what to do.
        // Method: a table of one-line edits of the good config, each with the message expected
        // as printed after the file name.
        let cases: &[(&str, &str, &str)] = &[
            (
                "township_id",
                "township_id = \"\"",
                "township_id: \"\" is empty; give the township's id",
            ),
            (
                "township_id",
                "township_id = \"青山\"",
                "township_id: \"青山\" contains '青'",
            ),
            (
                "listen",
                "listen = \"localhost:7201\"",
                "listen: \"localhost:7201\" is not a socket address; write IP:PORT",
            ),
            (
                "county",
                "county = []",
                "county: is empty; list the county replicas' host:port",
            ),
            (
                "county",
                "county = [\"127.0.0.1\"]",
                "county: \"127.0.0.1\" has no port",
            ),
            (
                "county",
                "county = [\"0.0.0.0:7101\"]",
                "county: \"0.0.0.0:7101\" cannot be dialled",
            ),
            (
                "county",
                "county = [\"127.0.0.1:7101\", \"127.0.0.1:7101\"]",
                "county: \"127.0.0.1:7101\" is listed twice",
            ),
            (
                "county",
                "county = [\"::1:7101\"]",
                "county: \"::1:7101\" looks like an IPv6 address without brackets",
            ),
            (
                "batch_max",
                "batch_max = 0",
                "outbox.batch_max: is 0; give 1 to 4096",
            ),
            (
                "batch_max",
                "batch_max = 5000",
                "outbox.batch_max: is 5000; give 1 to 4096",
            ),
            (
                "capacity",
                "capacity = 0",
                "outbox.capacity: is 0; give 1 to 10000000",
            ),
            (
                "retry_max_ms",
                "retry_max_ms = 10",
                "outbox.retry_max_ms: is 10; give 100 to 60000",
            ),
            (
                "capacity",
                "capacity = -1",
                "capacity: invalid value: integer `-1`",
            ),
            (
                "data_dir",
                "data = \"data/township-T01\"",
                "unknown field `data`",
            ),
            (
                "countersign_key",
                "countersign_key = \" \"",
                "countersign_key: is empty; give a path",
            ),
        ];
        let missed = tally_config::unmet_cases(GOOD, cases, problems_of);
        assert!(missed.is_empty(), "{}", missed.join("\n"));
    }

    #[test]
    fn all_problems_are_reported_at_once() {
        // Goal: a clerk sees every problem in one pass, the file named in a header and on
        // each line.
        // Method: break three keys on three lines; check the error's whole text.
        let text = GOOD
            .replace("township_id = \"T01\"", "township_id = \"T 01\"")
            .replace("capacity = 100000", "capacity = 0")
            .replace("retry_max_ms = 5000", "retry_max_ms = 1");
        let error = TownshipConfig::parse(Path::new(FILE), &text).unwrap_err();
        tally_config::assert_lists_problems(
            &error,
            "township",
            FILE,
            &[
                "line 2, township_id: \"T 01\" contains ' '",
                "line 14, outbox.capacity: is 0",
                "line 15, outbox.retry_max_ms: is 1",
            ],
        );
    }

    #[test]
    fn load_names_missing_files() {
        // Goal: load reports every missing file with its key and the path as written and as
        // resolved; with the files in place it loads.
        // Method: write the good config alone into a temporary folder and load it; then create
        // the files it names (their contents are not read here) and load again.
        let dir = tempfile::tempdir().unwrap();
        let townships = dir.path().join("townships");
        std::fs::create_dir(&townships).unwrap();
        let file = townships.join("T01.toml");
        std::fs::write(&file, GOOD).unwrap();

        let error = TownshipConfig::load(&file).unwrap_err();
        let problems: Vec<String> = error.problems().iter().map(ToString::to_string).collect();
        assert_eq!(problems.len(), 5, "{error}");
        assert!(
            problems[0].starts_with("line 5, definition: the election definition"),
            "{}",
            problems[0]
        );
        assert!(
            problems[1].starts_with(&format!(
                "line 6, countersign_key: the township's countersigning key \"keys/township-T01.key\" ({}) does not exist",
                townships.join("keys/township-T01.key").display()
            )),
            "{}",
            problems[1]
        );
        for (i, key) in ["tls.ca", "tls.cert", "tls.key"].into_iter().enumerate() {
            assert!(
                problems[i + 2].starts_with(&format!("line {}, {key}: ", 9 + i)),
                "{}",
                problems[i + 2]
            );
            assert!(
                problems[i + 2].contains("tally certs"),
                "{}",
                problems[i + 2]
            );
        }

        std::fs::create_dir_all(dir.path().join("sample-county")).unwrap();
        std::fs::write(dir.path().join("sample-county/election.toml"), "").unwrap();
        std::fs::create_dir(townships.join("keys")).unwrap();
        std::fs::write(townships.join("keys/township-T01.key"), "").unwrap();
        std::fs::create_dir(townships.join("pki")).unwrap();
        for name in ["ca.pem", "township-T01.pem", "township-T01.key"] {
            std::fs::write(townships.join("pki").join(name), "").unwrap();
        }
        let config = TownshipConfig::load(&file).unwrap();
        assert_eq!(config.tls.key, townships.join("pki/township-T01.key"));

        let missing = TownshipConfig::load(&townships.join("absent.toml")).unwrap_err();
        assert!(
            missing
                .to_string()
                .starts_with("cannot read the township config"),
            "{missing}"
        );
    }
}
