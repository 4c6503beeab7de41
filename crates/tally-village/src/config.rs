//! The polling unit's config file (`village.toml`): which unit this device is, where its
//! township aggregator is, and where its key, definition, journal and TLS files are.
//!
//! ```toml
//! unit_id = "T01-U001"
//! township = "127.0.0.1:7201"          # the township aggregator, host:port
//! signing_key = "keys/T01-U001.key"    # the unit's secret key (64 hex digits)
//! definition = "../sample-county/election.toml"
//! amendments = ["A-003.json"]          # optional: amendments the county recorded, in order
//! journal = "journal/T01-U001"         # a folder; holds journal.redb
//! [tls]
//! ca = "pki/ca.pem"
//! cert = "pki/village-T01-U001.pem"
//! key = "pki/village-T01-U001.key"
//! ```
//!
//! Paths are relative to the config file's folder. As with the county's config, the file is
//! checked as a whole and every problem is reported at once with the file, the line and the
//! key. [`VillageConfig::parse`] touches no file; [`VillageConfig::load`] also checks that
//! the files exist; [`VillageConfig::check_identity`] checks that the key and the certificate
//! are this unit's, against the definition.

use crate::error::{Error, Result};
use ed25519_dalek::SigningKey;
use serde::Deserialize;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use tally_config::line_of;
use tally_core::definition::Definition;
use tally_core::ids::{KeyId, UnitId};
use tally_net::{Role, TlsFiles};
use toml::Spanned;
use tonic::transport::ClientTlsConfig;

/// The largest config file read; a wrong path (a log, a disk image) is refused, not read.
pub const CONFIG_BYTES_MAX: u64 = 64 * 1024;

/// One polling unit's configuration, checked. Paths are resolved against the file's folder.
#[derive(Debug, Clone)]
pub struct VillageConfig {
    /// The config file, for messages.
    pub file: PathBuf,
    pub unit_id: UnitId,
    /// The township aggregator's `host:port`.
    pub township: String,
    pub signing_key: PathBuf,
    pub definition: PathBuf,
    /// Amendment files the county recorded (`tally amend`), applied to the definition in
    /// order: a unit whose key was replaced, or a unit added on the day, finds itself here.
    pub amendments: Vec<PathBuf>,
    /// The journal folder (holds `journal.redb`); created on first use.
    pub journal: PathBuf,
    pub tls: TlsFiles,
    /// The line of each key in the file, for messages about what the files hold.
    lines: Vec<(&'static str, usize)>,
}

/// What the unit's files hold, checked against each other: the definition, the unit's
/// signing key, and the TLS client configuration of its village certificate.
pub struct Identity {
    pub definition: Definition,
    pub key: SigningKey,
    pub tls: ClientTlsConfig,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    unit_id: Spanned<String>,
    township: Spanned<String>,
    signing_key: Spanned<String>,
    definition: Spanned<String>,
    #[serde(default)]
    amendments: Vec<String>,
    journal: Spanned<String>,
    tls: RawTls,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    ca: Spanned<String>,
    cert: Spanned<String>,
    key: Spanned<String>,
}

/// One problem: the line (0 when the file as a whole), the key and what to do.
struct Problem {
    line: usize,
    field: String,
    message: String,
}

/// Every problem in one message: `the village config F has N problems:` and one line each,
/// `F, line L, KEY: message`, so a clerk fixes them all in one pass.
fn problem_list(file: &Path, problems: &[Problem]) -> Error {
    let count = problems.len();
    let mut text = format!(
        "the village config {} has {count} problem{}:",
        file.display(),
        if count == 1 { "" } else { "s" }
    );
    for p in problems {
        let _ = write!(text, "\n  {}", file.display());
        if p.line > 0 {
            let _ = write!(text, ", line {}", p.line);
        }
        if !p.field.is_empty() {
            let _ = write!(text, ", {}", p.field);
        }
        let _ = write!(text, ": {}", p.message);
    }
    Error::Config(text)
}

/// Checks `host:port` loosely: a host name or address, a colon, a port from 1 to 65535.
/// The host of `host:port` (brackets taken off an IPv6 address): the name the township's
/// certificate must carry.
fn host_of(address: &str) -> &str {
    let host = address.rsplit_once(':').map_or(address, |(host, _)| host);
    host.trim_start_matches('[').trim_end_matches(']')
}

fn check_host_port(address: &str) -> Result<(), String> {
    const EXPECTED: &str =
        "write host:port, e.g. \"township-t01.example.gov.cn:7201\" or \"10.0.0.7:7201\"";
    let Some((host, port)) = address.rsplit_once(':') else {
        return Err(format!("has no port; {EXPECTED}"));
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let is_host_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | ':');
    if host.is_empty() || !host.chars().all(is_host_char) {
        return Err(format!(
            "has host {host:?}, which is not a host name or an address; {EXPECTED}"
        ));
    }
    match port.parse::<u16>() {
        Ok(p) if p != 0 => Ok(()),
        _ => Err(format!("has port {port:?}; a port is 1 to 65535")),
    }
}

impl VillageConfig {
    /// Reads and checks the config at `path`, including that the files it names exist.
    pub fn load(path: &Path) -> Result<VillageConfig> {
        let cannot_read =
            || Error::io(format!("cannot read the village config {}", path.display()));
        let len = std::fs::metadata(path).map_err(cannot_read())?.len();
        if len > CONFIG_BYTES_MAX {
            return Err(Error::Config(format!(
                "the village config {} is {len} bytes, more than {CONFIG_BYTES_MAX}; is this the right file?",
                path.display()
            )));
        }
        let text = std::fs::read_to_string(path).map_err(cannot_read())?;
        check(path, &text, true)
    }

    /// Parses and checks the text of the config `file`; touches no file.
    pub fn parse(file: &Path, text: &str) -> Result<VillageConfig> {
        check(file, text, false)
    }

    fn line(&self, field: &str) -> usize {
        self.lines
            .iter()
            .find(|(f, _)| *f == field)
            .map_or(0, |(_, line)| *line)
    }

    /// Loads the definition and checks that the unit is in it.
    pub fn definition(&self) -> Result<Definition> {
        let definition =
            tally_files::load_amended(&self.definition, &self.amendments).map_err(|cause| {
                Error::Definition {
                    file: self.file.clone(),
                    line: self.line("definition"),
                    cause: Box::new(cause),
                }
            })?;
        if definition.unit(&self.unit_id).is_none() {
            return Err(problem_list(
                &self.file,
                &[self.unit_not_in_definition(&definition)],
            ));
        }
        Ok(definition)
    }

    fn unit_not_in_definition(&self, definition: &Definition) -> Problem {
        Problem {
            line: self.line("unit_id"),
            field: "unit_id".into(),
            message: format!(
                "{:?} is not a polling unit of the election definition {} ({} units, e.g. {}); give this unit's id as the definition writes it",
                self.unit_id.as_str(),
                self.definition.display(),
                definition.units.len(),
                definition.units.first().map_or("none", |u| u.id.as_str())
            ),
        }
    }

    /// Checks, all at once, that the definition loads and lists this unit, that the signing
    /// key is the one the definition registers for the unit, and that the certificate is
    /// this unit's village certificate (`tally://village/UNIT`) from the county CA.
    pub fn check_identity(&self) -> Result<Identity> {
        let mut problems = Vec::new();
        let definition = match tally_files::load_amended(&self.definition, &self.amendments) {
            Ok(d) => Some(d),
            Err(e) => {
                problems.push(Problem {
                    line: self.line("definition"),
                    field: "definition".into(),
                    message: format!("{e}"),
                });
                None
            }
        };
        let unit = definition.as_ref().and_then(|d| {
            let unit = d.unit(&self.unit_id);
            if unit.is_none() {
                problems.push(self.unit_not_in_definition(d));
            }
            unit
        });
        let key = match tally_files::read_secret_key(&self.signing_key) {
            Ok(key) => Some(key),
            Err(e) => {
                problems.push(Problem {
                    line: self.line("signing_key"),
                    field: "signing_key".into(),
                    message: format!("{e}"),
                });
                None
            }
        };
        if let (Some(definition), Some(unit), Some(key)) = (&definition, unit, &key) {
            let key_id = KeyId::of(&key.verifying_key());
            if key_id != unit.key_id {
                let whose = match definition.unit_by_key(&key_id) {
                    Some(other) => format!("the key of unit {}", other.id),
                    None => "no unit's key in the definition".to_owned(),
                };
                problems.push(Problem {
                    line: self.line("signing_key"),
                    field: "signing_key".into(),
                    message: format!(
                        "{} is {whose} (key id {key_id}), but unit {} is registered with key id {}; point signing_key at this unit's own key file",
                        self.signing_key.display(),
                        self.unit_id,
                        unit.key_id
                    ),
                });
            }
        }
        let tls = match self.tls.client_tls(host_of(&self.township)) {
            Ok((tls, identity)) => {
                if identity.role() != Role::Village || identity.name() != self.unit_id.as_str() {
                    problems.push(Problem {
                        line: self.line("tls.cert"),
                        field: "tls.cert".into(),
                        message: format!(
                            "{} is {}'s certificate, but this is unit {}; point cert and key at village-{}.pem and village-{}.key (`tally certs --villages` writes them)",
                            self.tls.cert.display(),
                            identity.uri(),
                            self.unit_id,
                            self.unit_id,
                            self.unit_id
                        ),
                    });
                }
                Some(tls)
            }
            Err(e) => {
                problems.push(Problem {
                    line: self.line("tls.cert"),
                    field: "tls".into(),
                    message: e.to_string(),
                });
                None
            }
        };
        match (definition, key, tls) {
            (Some(definition), Some(key), Some(tls)) if problems.is_empty() => Ok(Identity {
                definition,
                key,
                tls,
            }),
            _ => Err(problem_list(&self.file, &problems)),
        }
    }
}

fn check(file: &Path, text: &str, check_files: bool) -> Result<VillageConfig> {
    let raw: RawConfig = match toml::from_str(text) {
        Ok(raw) => raw,
        // A TOML or type error stops the parse, so it is the only problem reported.
        Err(e) => {
            return Err(problem_list(
                file,
                &[Problem {
                    line: e.span().map_or(0, |s| line_of(text, s.start)),
                    field: String::new(),
                    message: e.message().trim_end().to_owned(),
                }],
            ));
        }
    };
    let mut problems = Vec::new();
    let mut lines = Vec::new();
    let mut at = |value: &Spanned<String>, field: &'static str| {
        let line = line_of(text, value.span().start);
        lines.push((field, line));
        line
    };
    let fields: [(&'static str, &Spanned<String>); 8] = [
        ("unit_id", &raw.unit_id),
        ("township", &raw.township),
        ("signing_key", &raw.signing_key),
        ("definition", &raw.definition),
        ("journal", &raw.journal),
        ("tls.ca", &raw.tls.ca),
        ("tls.cert", &raw.tls.cert),
        ("tls.key", &raw.tls.key),
    ];
    for (field, value) in fields {
        let line = at(value, field);
        if value.get_ref().trim().is_empty() {
            problems.push(Problem {
                line,
                field: field.into(),
                message: if field == "unit_id" {
                    "is empty; give this polling unit's id as the election definition writes it"
                        .into()
                } else if field == "township" {
                    "is empty; give the township aggregator's host:port".into()
                } else {
                    "is empty; give a path, relative to this config file's folder".into()
                },
            });
        }
    }
    let unit_id = raw.unit_id.get_ref().trim();
    if !unit_id.is_empty()
        && let Err(why) = tally_core::ids::check_id(unit_id)
    {
        problems.push(Problem {
            line: line_of(text, raw.unit_id.span().start),
            field: "unit_id".into(),
            message: format!("{unit_id:?}: {why}"),
        });
    }
    let township = raw.township.get_ref().trim();
    if !township.is_empty()
        && let Err(why) = check_host_port(township)
    {
        problems.push(Problem {
            line: line_of(text, raw.township.span().start),
            field: "township".into(),
            message: format!("{township:?} {why}"),
        });
    }

    let folder = file.parent().unwrap_or(Path::new(""));
    let resolve = |value: &Spanned<String>| folder.join(value.get_ref().trim());
    let config = VillageConfig {
        file: file.to_path_buf(),
        unit_id: UnitId::new(unit_id),
        township: township.to_owned(),
        signing_key: resolve(&raw.signing_key),
        definition: resolve(&raw.definition),
        amendments: raw
            .amendments
            .iter()
            .map(|a| folder.join(a.trim()))
            .collect(),
        journal: resolve(&raw.journal),
        tls: TlsFiles {
            ca: resolve(&raw.tls.ca),
            cert: resolve(&raw.tls.cert),
            key: resolve(&raw.tls.key),
        },
        lines,
    };
    if check_files {
        let wanted = [
            (
                "definition",
                &raw.definition,
                &config.definition,
                "the election definition",
            ),
            (
                "signing_key",
                &raw.signing_key,
                &config.signing_key,
                "the unit's secret key",
            ),
            (
                "tls.ca",
                &raw.tls.ca,
                &config.tls.ca,
                "the county CA certificate",
            ),
            (
                "tls.cert",
                &raw.tls.cert,
                &config.tls.cert,
                "this unit's certificate",
            ),
            (
                "tls.key",
                &raw.tls.key,
                &config.tls.key,
                "this unit's TLS key",
            ),
        ];
        for (field, written, resolved, what) in wanted {
            if written.get_ref().trim().is_empty() || resolved.is_file() {
                continue;
            }
            let state = if resolved.exists() {
                "is not a file"
            } else {
                "does not exist"
            };
            let hint = match field {
                "definition" => {
                    "give the path of the election definition, relative to this config file's folder"
                }
                "signing_key" => "give the path of the key file `tally keygen` wrote for this unit",
                _ => tally_net::HOW_TO_MAKE_CERTS,
            };
            problems.push(Problem {
                line: line_of(text, written.span().start),
                field: field.into(),
                message: format!("{what} {} {state}; {hint}", resolved.display()),
            });
        }
        if config.journal.exists() && !config.journal.is_dir() {
            problems.push(Problem {
                line: line_of(text, raw.journal.span().start),
                field: "journal".into(),
                message: format!(
                    "{} is a file; journal names a folder (it holds journal.redb)",
                    config.journal.display()
                ),
            });
        }
    }
    if problems.is_empty() {
        Ok(config)
    } else {
        Err(problem_list(file, &problems))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"# village.toml of one polling unit
unit_id = "T01-U001"
township = "127.0.0.1:7201"
signing_key = "keys/T01-U001.key"
definition = "../sample-county/election.toml"
journal = "journal/T01-U001"
[tls]
ca = "pki/ca.pem"
cert = "pki/village-T01-U001.pem"
key = "pki/village-T01-U001.key"
"#;

    // Goal: the module doc's config parses, with paths resolved against the file's folder.
    #[test]
    fn good_config_parses() {
        let config = VillageConfig::parse(Path::new("/units/v/village.toml"), GOOD).unwrap();
        assert_eq!(config.unit_id.as_str(), "T01-U001");
        assert_eq!(config.township, "127.0.0.1:7201");
        assert_eq!(config.journal, Path::new("/units/v/journal/T01-U001"));
        assert_eq!(
            config.tls.cert,
            Path::new("/units/v/pki/village-T01-U001.pem")
        );
        assert_eq!(config.line("tls.cert"), 9);
    }

    // Goal: every problem is reported at once, each with the file, its line and its key.
    // Method: spoil three values and check the one message names all three.
    #[test]
    fn all_problems_at_once() {
        let bad = GOOD
            .replace("127.0.0.1:7201", "township-t01")
            .replace("\"journal/T01-U001\"", "\"\"")
            .replace("\"T01-U001\"\n", "\"T01 U001\"\n");
        let err = VillageConfig::parse(Path::new("v.toml"), &bad)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("the village config v.toml has 3 problems:"),
            "{err}"
        );
        assert!(
            err.contains("v.toml, line 2, unit_id: \"T01 U001\""),
            "{err}"
        );
        assert!(
            err.contains("v.toml, line 3, township: \"township-t01\" has no port"),
            "{err}"
        );
        assert!(err.contains("v.toml, line 6, journal: is empty"), "{err}");

        let err = VillageConfig::parse(Path::new("v.toml"), &GOOD.replace("journal =", "jurnal ="))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("v.toml, line 6") && err.contains("jurnal"),
            "{err}"
        );
    }

    // Goal: load names every missing file with its key and says what to do.
    #[test]
    fn load_names_missing_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("village.toml");
        std::fs::write(&path, GOOD).unwrap();
        let err = VillageConfig::load(&path).unwrap_err().to_string();
        assert!(err.contains("has 5 problems"), "{err}");
        assert!(
            err.contains("line 4, signing_key: the unit's secret key"),
            "{err}"
        );
        assert!(
            err.contains("line 9, tls.cert: this unit's certificate"),
            "{err}"
        );
        assert!(err.contains("tally certs"), "{err}");
    }
}
