//! What the config files of tally's servers (`tally county`, `tally township`) share.
//!
//! Each file is checked as a whole and every problem is reported at once, each with the
//! file, the line and the key, so an operator fixes them in one pass on election night
//! rather than one per restart. The files differ in their keys; this crate holds the rest:
//! the error ([`ConfigError`]), one problem ([`ConfigProblem`]), the collector that gives
//! each problem its line ([`Problems`]), reading a file with a size bound ([`read`]),
//! parsing the TOML into a file's raw shape ([`parse_toml`]), and the address checks both
//! servers make ([`check_host_port`], [`host_is_unspecified`], [`http_listen`]).

use serde::de::DeserializeOwned;
use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
pub use tally_core::toml_text::{line_of, toml_key_at};
use toml::Spanned;

/// The largest config file read; a wrong path (a log, a disk image) is refused, not read.
pub const CONFIG_BYTES_MAX: u64 = 64 * 1024;

/// What is wrong with a config file. `kind` names the file for people: "county",
/// "township".
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the {kind} config {}: {source}", file.display())]
    Read {
        kind: &'static str,
        file: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the {kind} config {} is {len} bytes, more than {CONFIG_BYTES_MAX}; is this the right file?",
        file.display()
    )]
    TooLarge {
        kind: &'static str,
        file: PathBuf,
        len: u64,
    },
    #[error("{}", ProblemList { kind, file, problems })]
    Invalid {
        kind: &'static str,
        file: PathBuf,
        problems: Vec<ConfigProblem>,
    },
}

impl ConfigError {
    /// Every problem found in the file; empty when the file could not be read.
    pub fn problems(&self) -> &[ConfigProblem] {
        match self {
            ConfigError::Invalid { problems, .. } => problems,
            ConfigError::Read { .. } | ConfigError::TooLarge { .. } => &[],
        }
    }
}

/// One problem: where in the file, which key, and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// `line 12`; empty when the problem is with the file as a whole.
    pub location: String,
    /// The key as the file writes it: `replica_id`, `peers.2`, `tls.cert`, `outbox.capacity`.
    pub field: String,
    pub message: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.location.is_empty() {
            write!(f, "{}, ", self.location)?;
        }
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        f.write_str(&self.message)
    }
}

struct ProblemList<'a> {
    kind: &'a str,
    file: &'a Path,
    problems: &'a [ConfigProblem],
}

impl fmt::Display for ProblemList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = self.problems.len();
        write!(
            f,
            "the {} config {} has {count} problem{}:",
            self.kind,
            self.file.display(),
            if count == 1 { "" } else { "s" }
        )?;
        for p in self.problems {
            write!(f, "\n  {}, {p}", self.file.display())?;
        }
        Ok(())
    }
}

/// Reads the config at `path`, refusing a file larger than [`CONFIG_BYTES_MAX`].
pub fn read(kind: &'static str, path: &Path) -> Result<String, ConfigError> {
    let read_error = |source| ConfigError::Read {
        kind,
        file: path.to_path_buf(),
        source,
    };
    let len = std::fs::metadata(path).map_err(read_error)?.len();
    if len > CONFIG_BYTES_MAX {
        return Err(ConfigError::TooLarge {
            kind,
            file: path.to_path_buf(),
            len,
        });
    }
    std::fs::read_to_string(path).map_err(read_error)
}

/// Parses `text` into a file's raw shape. A TOML or type error stops the parse, so it is the
/// only problem reported, with its line and the key it was given to.
pub fn parse_toml<T: DeserializeOwned>(
    kind: &'static str,
    file: &Path,
    text: &str,
) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|e| {
        let start = e.span().map(|s| s.start);
        let field = start.and_then(|s| toml_key_at(text, s)).unwrap_or_default();
        ConfigError::Invalid {
            kind,
            file: file.to_path_buf(),
            problems: vec![ConfigProblem {
                location: start
                    .map(|s| format!("line {}", line_of(text, s)))
                    .unwrap_or_default(),
                field: field.to_owned(),
                message: e.message().trim_end().to_owned(),
            }],
        }
    })
}

/// Collects the problems of one file, each with its line.
pub struct Problems<'a> {
    text: &'a str,
    pub list: Vec<ConfigProblem>,
}

impl<'a> Problems<'a> {
    pub fn new(text: &'a str) -> Self {
        Problems {
            text,
            list: Vec::new(),
        }
    }

    /// A problem at the byte `span_start` of the text, or with the file as a whole (`None`).
    pub fn add(&mut self, span_start: Option<usize>, field: &str, message: String) {
        self.list.push(ConfigProblem {
            location: span_start
                .map(|start| format!("line {}", line_of(self.text, start)))
                .unwrap_or_default(),
            field: field.to_owned(),
            message,
        });
    }

    /// A problem with `value`, on its line.
    pub fn at<T>(&mut self, value: &Spanned<T>, field: &str, message: String) {
        self.add(Some(value.span().start), field, message);
    }

    /// The error for these problems in `file`.
    pub fn into_error(self, kind: &'static str, file: &Path) -> ConfigError {
        ConfigError::Invalid {
            kind,
            file: file.to_path_buf(),
            problems: self.list,
        }
    }
}

/// Checks `host:port`, where host is a DNS name, an IPv4 address or a bracketed IPv6
/// address, as a county replica is dialled. Returns why not, to follow the quoted address.
pub fn check_host_port(address: &str) -> Result<(), String> {
    const EXPECTED: &str = "write host:port, e.g. \"county-1.example.gov.cn:7100\", \
         \"10.0.0.7:7100\" or \"[::1]:7100\"";
    let address = address.trim();
    let (host, port) = if let Some(rest) = address.strip_prefix('[') {
        let Some((ip, port)) = rest.split_once("]:") else {
            return Err(format!("is not host:port; {EXPECTED}"));
        };
        if ip.parse::<Ipv6Addr>().is_err() {
            return Err(format!(
                "has {ip:?} in brackets, which is not an IPv6 address"
            ));
        }
        (None, port)
    } else {
        let Some((host, port)) = address.rsplit_once(':') else {
            return Err(format!("has no port; {EXPECTED}"));
        };
        if host.contains(':') {
            return Err(format!(
                "looks like an IPv6 address without brackets; {EXPECTED}"
            ));
        }
        (Some(host), port)
    };
    if let Some(host) = host {
        let is_name_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '.');
        if host.is_empty() || !host.chars().all(is_name_char) {
            return Err(format!(
                "has host {host:?}, which is not a host name or an address; {EXPECTED}"
            ));
        }
    }
    match port.parse::<u16>() {
        Ok(p) if p != 0 => Ok(()),
        _ => Err(format!("has port {port:?}; a port is 1 to 65535")),
    }
}

/// True for `0.0.0.0:P` and `[::]:P`: fine to bind, impossible to dial.
pub fn host_is_unspecified(address: &str) -> bool {
    address
        .parse::<SocketAddr>()
        .is_ok_and(|a| a.ip().is_unspecified())
        || address
            .rsplit_once(':')
            .and_then(|(host, _)| host.parse::<IpAddr>().ok())
            .is_some_and(|ip| ip.is_unspecified())
}

/// The optional `http_listen` address (metrics, dashboard): a socket address of its own, not
/// `listen`'s. `example` is the address shown in the problem, e.g. `"127.0.0.1:7180"`.
pub fn http_listen(
    problems: &mut Problems<'_>,
    written: Option<&Spanned<String>>,
    listen: Option<SocketAddr>,
    example: &str,
) -> Option<SocketAddr> {
    let h = written?;
    match h.get_ref().trim().parse::<SocketAddr>() {
        Ok(addr) if Some(addr) == listen => {
            problems.at(
                h,
                "http_listen",
                format!(
                    "is {:?}, the same as listen; give the HTTP listener a port of its own, \
                     e.g. \"{example}\"",
                    h.get_ref()
                ),
            );
            None
        }
        Ok(addr) => Some(addr),
        Err(_) => {
            problems.at(
                h,
                "http_listen",
                format!(
                    "{:?} is not a socket address; write IP:PORT, e.g. \"{example}\", \
                     or leave http_listen out to serve no HTTP",
                    h.get_ref()
                ),
            );
            None
        }
    }
}

/// `listen`: the socket address a server binds, as IP:PORT. `how` follows "write IP:PORT, e.g."
/// in the problem: the examples that suit this server.
pub fn listen(
    problems: &mut Problems<'_>,
    written: &Spanned<String>,
    how: &str,
) -> Option<SocketAddr> {
    match written.get_ref().trim().parse::<SocketAddr>() {
        Ok(addr) => Some(addr),
        Err(_) => {
            problems.at(
                written,
                "listen",
                format!(
                    "{:?} is not a socket address; write IP:PORT, e.g. {how}",
                    written.get_ref()
                ),
            );
            None
        }
    }
}

/// A server's `[tls]` table as written: the county CA, and this server's certificate and key.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub ca: Spanned<String>,
    pub cert: Spanned<String>,
    pub key: Spanned<String>,
}

/// Whether the files a config names must exist: when it is loaded to run a server, yes; when
/// its text is only checked (tests, `--check` of another machine's file), no.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum FileChecks {
    Yes,
    No,
}

/// A path a config names, resolved against the config file's folder (a path as written is
/// relative to the file, so the file can be moved with its folder).
pub fn resolve(config_file: &Path, written: &Spanned<String>) -> PathBuf {
    config_file
        .parent()
        .unwrap_or(Path::new(""))
        .join(written.get_ref().trim())
}

/// A path a config names: its key, the path as written, and, for a file that must exist when
/// the server starts, what it is and what to do when it is missing.
pub struct ConfigPath<'a> {
    pub field: &'static str,
    pub written: &'a Spanned<String>,
    /// `Some((what, hint))` for a file that must exist, e.g. `("this replica's key",
    /// HOW_TO_MAKE_CERTS)`; `None` for a folder the server makes (`data_dir`).
    pub must_exist: Option<(&'static str, &'a str)>,
}

impl<'a> ConfigPath<'a> {
    /// A folder the server makes when it is missing (`data_dir`): only checked not to be empty.
    pub fn folder(field: &'static str, written: &'a Spanned<String>) -> Self {
        ConfigPath {
            field,
            written,
            must_exist: None,
        }
    }

    /// A file that must exist when the server starts: `what` it is, and what to do without it.
    pub fn file(
        field: &'static str,
        written: &'a Spanned<String>,
        what: &'static str,
        hint: &'a str,
    ) -> Self {
        ConfigPath {
            field,
            written,
            must_exist: Some((what, hint)),
        }
    }

    /// The `definition` key: the election definition, relative to the config's folder.
    pub fn definition(written: &'a Spanned<String>) -> Self {
        ConfigPath::file(
            "definition",
            written,
            "the election definition",
            "give the path of the election definition, relative to this config file's folder",
        )
    }
}

impl RawTls {
    /// The three files of `[tls]` as paths that must exist: the county CA, then this server's
    /// certificate and key, named for people by `cert_is` and `key_is` ("this replica's
    /// certificate"); `hint` says how to make them.
    pub fn paths<'a>(
        &'a self,
        cert_is: &'static str,
        key_is: &'static str,
        hint: &'a str,
    ) -> [ConfigPath<'a>; 3] {
        [
            ConfigPath::file("tls.ca", &self.ca, "the county CA certificate", hint),
            ConfigPath::file("tls.cert", &self.cert, cert_is, hint),
            ConfigPath::file("tls.key", &self.key, key_is, hint),
        ]
    }
}

/// Checks the paths a config names: none is empty, and, with [`FileChecks::Yes`], every file
/// that must exist is a file, named as written and as resolved.
pub fn check_paths(
    problems: &mut Problems<'_>,
    config_file: &Path,
    paths: &[ConfigPath<'_>],
    file_checks: FileChecks,
) {
    for path in paths {
        if path.written.get_ref().trim().is_empty() {
            problems.at(path.written, path.field, "is empty; give a path".to_owned());
        }
    }
    if file_checks == FileChecks::No {
        return;
    }
    for path in paths {
        let Some((what, hint)) = path.must_exist else {
            continue;
        };
        let written = path.written.get_ref();
        let resolved = resolve(config_file, path.written);
        if written.trim().is_empty() || resolved.is_file() {
            continue;
        }
        let state = if resolved.exists() {
            "is not a file"
        } else {
            "does not exist"
        };
        let shown = if Path::new(written.trim()) == resolved.as_path() {
            format!("{written:?}")
        } else {
            format!("{written:?} ({})", resolved.display())
        };
        problems.at(
            path.written,
            path.field,
            format!("{what} {shown} {state}; {hint}"),
        );
    }
}

/// For the config loaders' tests: `good` with the first line that starts with `line_start`
/// replaced by `replacement` (removed when it is empty), and the 1-based number of that line.
/// Panics when no line starts so, since the test itself is wrong then.
#[doc(hidden)]
pub fn edited(good: &str, line_start: &str, replacement: &str) -> (String, usize) {
    let mut found = None;
    let lines: Vec<&str> = good
        .lines()
        .enumerate()
        .filter_map(|(i, line)| {
            if found.is_none() && line.starts_with(line_start) {
                found = Some(i + 1);
                (!replacement.is_empty()).then_some(replacement)
            } else {
                Some(line)
            }
        })
        .collect();
    let line = found.unwrap_or_else(|| panic!("no line starts with {line_start:?}"));
    (lines.join("\n") + "\n", line)
}

/// For the config loaders' tests: the cases `(line_start, replacement, expected)` whose
/// expected problem is not among the problems of `good` so edited, each described for the
/// failure message. The expected text follows `line N, ` of the edited line; for a removed line
/// (empty replacement) the mistake is reported on another line, which the case names in full.
#[doc(hidden)]
pub fn unmet_cases(
    good: &str,
    cases: &[(&str, &str, &str)],
    problems_of: impl Fn(&str) -> Vec<String>,
) -> Vec<String> {
    let mut missed = Vec::new();
    for &(line_start, replacement, expected) in cases {
        let (text, line) = edited(good, line_start, replacement);
        let problems = problems_of(&text);
        let wanted = if replacement.is_empty() {
            expected.to_string()
        } else {
            format!("line {line}, {expected}")
        };
        if !problems.iter().any(|p| p.starts_with(&wanted)) {
            missed.push(format!(
                "{replacement:?}: expected {wanted:?} in {problems:#?}"
            ));
        }
    }
    missed
}

/// For the config loaders' tests: asserts that `error` lists exactly the `expected` problems
/// (each as printed after `file, `), under the header naming the file and the count.
#[doc(hidden)]
pub fn assert_lists_problems(error: &ConfigError, kind: &str, file: &str, expected: &[&str]) {
    assert_eq!(error.problems().len(), expected.len(), "{error}");
    let shown = error.to_string();
    let count = expected.len();
    assert!(
        shown.starts_with(&format!("the {kind} config {file} has {count} problems:\n")),
        "{shown}"
    );
    for expected in expected {
        assert!(
            shown.contains(&format!("\n  {file}, {expected}")),
            "{expected:?} not in:\n{shown}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_keys_are_found_where_the_value_is() {
        // Goal: a problem names the line and key a value was written at.
        // Method: find the offset of a value and ask for its line and key.
        let text = "a = 1\n[tls]\ncert = \"x.pem\"\n";
        let at = text.find("\"x.pem\"").unwrap();
        assert_eq!(line_of(text, at), 3);
        assert_eq!(toml_key_at(text, at), Some("cert"));
        assert_eq!(toml_key_at(text, text.find("[tls]").unwrap()), None);
    }

    #[test]
    fn addresses_are_checked_as_they_are_dialled() {
        // Goal: host:port is refused with the reason, and a bind-only address is recognised.
        // Method: check good and bad addresses.
        assert!(check_host_port("county-1.example.gov.cn:7100").is_ok());
        assert!(check_host_port("[::1]:7100").is_ok());
        assert!(
            check_host_port("county-1")
                .unwrap_err()
                .starts_with("has no port")
        );
        assert!(
            check_host_port("::1:7100")
                .unwrap_err()
                .contains("without brackets")
        );
        assert!(
            check_host_port("h:0")
                .unwrap_err()
                .contains("a port is 1 to 65535")
        );
        assert!(host_is_unspecified("0.0.0.0:7100"));
        assert!(host_is_unspecified("[::]:7100"));
        assert!(!host_is_unspecified("127.0.0.1:7100"));
    }
}
