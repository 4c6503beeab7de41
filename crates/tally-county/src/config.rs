//! The config file of one replica (`county.toml`): who it is, where it listens, where its
//! data, definition and TLS files are, and which replicas found the cluster.
//!
//! ```toml
//! cluster_id = "qingshan-2026"      # a data dir made for another cluster is refused
//! replica_id = 1
//! listen = "127.0.0.1:7101"          # socket address to bind
//! advertise = "127.0.0.1:7101"       # optional; what other replicas dial, default = listen
//! http_listen = "127.0.0.1:7180"     # optional; plain HTTP: /metrics, the dashboard at /
//! data_dir = "data/replica-1"
//! definition = "../sample-county/election.toml"
//! initial_voters = [1, 2, 3]         # the founders; a replica added later is not among them
//! [peers]
//! 1 = "127.0.0.1:7101"
//! 2 = "127.0.0.1:7102"
//! 3 = "127.0.0.1:7103"
//! [tls]
//! ca = "pki/ca.pem"
//! cert = "pki/replica-1.pem"
//! key = "pki/replica-1.key"
//! [raft]                             # optional
//! tick_ms = 100
//! compact_after_entries = 10000
//! ```
//!
//! Paths are relative to the config file's folder, so a config works from any working
//! directory. Like the election definition, the file is checked as a whole and every problem
//! is reported at once, each with the file, the line and the key, so an operator fixes them
//! in one pass on election night rather than one per restart.
//!
//! [`CountyConfig::parse`] checks the text only and touches no file, so the example configs
//! can be checked without certificates; [`CountyConfig::load`] also checks that the
//! definition and the TLS files exist. The certificates' contents are checked when the
//! replica starts ([`tally_net::TlsFiles::server_tls`]), not here.

use serde::Deserialize;
use std::collections::{BTreeMap, HashSet};

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;

use crate::ids::ReplicaId;
use crate::replica::LOG_ENTRIES_BEFORE_COMPACTION;

/// The longest cluster id, in bytes (the same bound as every other id).
pub const CLUSTER_ID_LEN_MAX: usize = 64;
/// The most founding voters. Every write waits for a majority, so each voter past seven
/// slows every write for a failure tolerance a county does not need.
pub const VOTERS_MAX: usize = 7;
/// The most entries under `[peers]`: the voters and a few replicas being added or removed.
pub const PEERS_MAX: usize = 16;
/// The shortest raft tick. Elections take [`crate::replica::ELECTION_TICKS`] ticks, and below
/// this a busy disk's fsync would outlast an election timeout and leaders would churn.
pub const TICK_MS_MIN: u64 = 10;
/// The longest raft tick: beyond it a failed leader is replaced too slowly for election night.
pub const TICK_MS_MAX: u64 = 1000;
/// The tick when `[raft]` does not set one.
pub const TICK_MS_DEFAULT: u64 = 100;
/// The fewest entries kept before compaction: fewer would send snapshots to a follower that is
/// only briefly behind.
pub const COMPACT_AFTER_ENTRIES_MIN: u64 = 100;
pub use tally_config::{CONFIG_BYTES_MAX, ConfigError, ConfigProblem};
use tally_config::{
    ConfigPath, FileChecks, Problems, RawTls, check_host_port, host_is_unspecified,
};

/// How this file is named in its problems: "the %s config F has N problems".
const KIND: &str = "county";

/// One replica's configuration, checked. Paths are resolved against the config file's folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CountyConfig {
    /// The config file this came from, for messages.
    pub file: PathBuf,
    pub cluster_id: String,
    pub replica_id: ReplicaId,
    /// The socket address the replica binds.
    pub listen: SocketAddr,
    /// `host:port` the other replicas dial to reach this one.
    pub advertise: String,
    /// Where the replica serves plain HTTP (Prometheus `/metrics`, the dashboard at `/`);
    /// `None` serves no HTTP. Read-only and unauthenticated, so bind it where only operators
    /// and the metrics collector reach it.
    pub http_listen: Option<SocketAddr>,
    pub data_dir: PathBuf,
    /// The election definition (TOML).
    pub definition: PathBuf,
    /// The replicas that found the cluster; see [`CountyConfig::is_founder`].
    pub initial_voters: Vec<ReplicaId>,
    /// Replica id to `host:port`.
    pub peers: BTreeMap<ReplicaId, String>,
    pub tls: tally_net::TlsFiles,
    /// How often raft is ticked.
    pub tick: Duration,
    /// Applied entries kept in the log before it is compacted into a snapshot.
    pub compact_after_entries: u64,
}

impl CountyConfig {
    /// Reads, parses and checks the config at `path`, including that the definition and the
    /// TLS files exist.
    pub fn load(path: &Path) -> Result<CountyConfig, ConfigError> {
        let text = tally_config::read(KIND, path)?;
        check(path, &text, FileChecks::Yes)
    }

    /// Parses and checks the text of the config `file`, resolving its paths against the
    /// file's folder. Touches no file: [`CountyConfig::load`] checks that the files exist.
    pub fn parse(file: &Path, text: &str) -> Result<CountyConfig, ConfigError> {
        check(file, text, FileChecks::No)
    }

    /// True when this replica is one of the founders: it starts the cluster with
    /// `initial_voters` the first time, while a replica added later waits for a snapshot.
    pub fn is_founder(&self) -> bool {
        self.initial_voters.contains(&self.replica_id)
    }
}

// ---- The file as written. Spanned values carry their byte position, for the line. ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    cluster_id: Spanned<String>,
    replica_id: Spanned<u64>,
    listen: Spanned<String>,
    advertise: Option<Spanned<String>>,
    http_listen: Option<Spanned<String>>,
    data_dir: Spanned<String>,
    definition: Spanned<String>,
    initial_voters: Spanned<Vec<Spanned<u64>>>,
    peers: BTreeMap<Spanned<String>, Spanned<String>>,
    tls: RawTls,
    raft: Option<RawRaft>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRaft {
    tick_ms: Option<Spanned<u64>>,
    compact_after_entries: Option<Spanned<u64>>,
}

fn check(file: &Path, text: &str, file_checks: FileChecks) -> Result<CountyConfig, ConfigError> {
    let invalid = |problems| ConfigError::Invalid {
        kind: KIND,
        file: file.to_path_buf(),
        problems,
    };
    let raw: RawConfig = tally_config::parse_toml(KIND, file, text)?;
    let mut problems = Problems::new(text);

    let cluster_id = raw.cluster_id.get_ref();
    if let Err(why) = check_cluster_id(cluster_id) {
        problems.at(
            &raw.cluster_id,
            "cluster_id",
            format!("{cluster_id:?} {why}"),
        );
    }

    let replica_id = *raw.replica_id.get_ref();
    if replica_id == 0 {
        problems.at(
            &raw.replica_id,
            "replica_id",
            "is 0; a replica id is 1 or more (raft reserves 0 for \"no replica\")".to_owned(),
        );
    }

    let listen = tally_config::listen(
        &mut problems,
        &raw.listen,
        "\"127.0.0.1:7101\" or \"0.0.0.0:7100\" (a host name belongs in advertise, not here)",
    );

    let http_listen = tally_config::http_listen(
        &mut problems,
        raw.http_listen.as_ref(),
        listen,
        "127.0.0.1:7180",
    );

    // What the other replicas dial; usable only if it names a host they can reach.
    let (advertise, advertise_field, advertise_span) = match &raw.advertise {
        Some(a) => (a.get_ref().trim().to_owned(), "advertise", a.span().start),
        None => (
            raw.listen.get_ref().trim().to_owned(),
            "listen",
            raw.listen.span().start,
        ),
    };
    let mut advertise_usable = listen.is_some() || raw.advertise.is_some();
    if let Some(a) = &raw.advertise
        && let Err(why) = check_host_port(a.get_ref())
    {
        problems.at(a, "advertise", format!("{:?} {why}", a.get_ref()));
        advertise_usable = false;
    }
    if advertise_usable && host_is_unspecified(&advertise) {
        let message = if raw.advertise.is_some() {
            format!(
                "{advertise:?} cannot be dialled by other replicas; give the host name or \
                 address they reach this replica at"
            )
        } else {
            format!(
                "is {advertise:?}, which other replicas cannot dial; add advertise = \
                 \"HOST:PORT\" with the host name or address they reach this replica at"
            )
        };
        problems.add(Some(advertise_span), advertise_field, message);
        advertise_usable = false;
    }

    let mut peers = BTreeMap::new();
    if raw.peers.len() > PEERS_MAX {
        problems.add(
            None,
            "peers",
            format!("lists {} replicas, more than {PEERS_MAX}", raw.peers.len()),
        );
    }
    for (key, address) in &raw.peers {
        let field = format!("peers.{}", key.get_ref());
        let id = match parse_replica_id(key.get_ref()) {
            Some(id) => Some(id),
            None => {
                problems.at(
                    key,
                    &field,
                    format!(
                        "{:?} is not a replica id; each key under [peers] is a replica id \
                         (1, 2, 3, ...), each value its \"host:port\"",
                        key.get_ref()
                    ),
                );
                None
            }
        };
        if let Err(why) = check_host_port(address.get_ref()) {
            problems.at(address, &field, format!("{:?} {why}", address.get_ref()));
        } else if let Some(id) = id {
            peers.insert(id, address.get_ref().trim().to_owned());
        }
    }

    let voters = &raw.initial_voters;
    let mut initial_voters = Vec::new();
    let mut seen = HashSet::new();
    for voter in voters.get_ref() {
        let id = *voter.get_ref();
        if !seen.insert(id) {
            problems.at(voter, "initial_voters", format!("{id} is listed twice"));
            continue;
        }
        initial_voters.push(id);
        let listed_as_peer = raw
            .peers
            .keys()
            .any(|key| parse_replica_id(key.get_ref()) == Some(id));
        if !listed_as_peer {
            let example = if id == replica_id {
                format!("(this replica) has no address in [peers]; add {id} = {advertise:?}")
            } else {
                format!("has no address in [peers]; add {id} = \"HOST:PORT\" under [peers]")
            };
            problems.at(voter, "initial_voters", format!("{id} {example}"));
        }
    }
    match initial_voters.len() {
        0 => problems.at(
            voters,
            "initial_voters",
            "is empty; list the replicas that found the cluster, e.g. [1, 2, 3]".to_owned(),
        ),
        n if n > VOTERS_MAX => problems.at(
            voters,
            "initial_voters",
            format!(
                "lists {n} voters, more than {VOTERS_MAX}; every write waits for a majority, \
                 so more voters slow every write; use 3 or 5"
            ),
        ),
        n if n % 2 == 0 => problems.at(
            voters,
            "initial_voters",
            format!(
                "lists {n} voters; use an odd number (1, 3, 5 or 7): a majority of {n} is {}, \
                 so {n} voters survive the loss of {} replica{}, no more than {} do, while \
                 every write waits for one more replica",
                n / 2 + 1,
                (n - 1) / 2,
                if (n - 1) / 2 == 1 { "" } else { "s" },
                n - 1
            ),
        ),
        _ => {}
    }

    // The other replicas dial what [peers] says; if this replica's entry differs from what
    // it advertises, they would dial the wrong place (or another replica).
    let own_entry = raw
        .peers
        .iter()
        .find(|(key, _)| parse_replica_id(key.get_ref()) == Some(replica_id));
    if advertise_usable
        && let Some((key, address)) = own_entry
        && address.get_ref().trim() != advertise
    {
        let advertised_by = if raw.advertise.is_some() {
            "advertise"
        } else {
            "listen, as advertise is not set"
        };
        problems.at(
            address,
            &format!("peers.{}", key.get_ref()),
            format!(
                "is {:?}, but this replica (replica_id = {replica_id}) advertises \
                 {advertise:?} ({advertised_by}); make the two the same, since the other \
                 replicas dial the address under [peers]",
                address.get_ref(),
            ),
        );
    }

    let raft = raw.raft.as_ref();
    let tick_ms = raft.and_then(|r| r.tick_ms.as_ref());
    if let Some(tick_ms) = tick_ms {
        let ms = *tick_ms.get_ref();
        if !(TICK_MS_MIN..=TICK_MS_MAX).contains(&ms) {
            problems.at(
                tick_ms,
                "raft.tick_ms",
                format!(
                    "is {ms}; give {TICK_MS_MIN} to {TICK_MS_MAX} (an election timeout is {} to \
                     {} ticks, so {TICK_MS_DEFAULT} ms gives one to two seconds)",
                    crate::replica::ELECTION_TICKS,
                    2 * crate::replica::ELECTION_TICKS
                ),
            );
        }
    }
    let compact = raft.and_then(|r| r.compact_after_entries.as_ref());
    if let Some(compact) = compact {
        let entries = *compact.get_ref();
        if entries < COMPACT_AFTER_ENTRIES_MIN {
            problems.at(
                compact,
                "raft.compact_after_entries",
                format!(
                    "is {entries}; give {COMPACT_AFTER_ENTRIES_MIN} or more, or leave it out \
                     for {LOG_ENTRIES_BEFORE_COMPACTION}; fewer would send a whole snapshot \
                     to a follower that is only briefly behind"
                ),
            );
        }
    }

    let resolve = |written| tally_config::resolve(file, written);
    let definition = resolve(&raw.definition);
    let tls = tally_net::TlsFiles {
        ca: resolve(&raw.tls.ca),
        cert: resolve(&raw.tls.cert),
        key: resolve(&raw.tls.key),
    };
    let [ca, cert, key] = raw.tls.paths(
        "this replica's certificate",
        "this replica's key",
        tally_net::HOW_TO_MAKE_CERTS,
    );
    let paths = [
        ConfigPath::folder("data_dir", &raw.data_dir),
        ConfigPath::definition(&raw.definition),
        ca,
        cert,
        key,
    ];
    tally_config::check_paths(&mut problems, file, &paths, file_checks);

    // Every branch that leaves `listen` unset or `advertise` unusable added a problem.
    let listen = match listen {
        Some(listen) if problems.list.is_empty() && advertise_usable => listen,
        _ => {
            debug_assert!(!problems.list.is_empty(), "a bad address went unreported");
            return Err(invalid(problems.list));
        }
    };
    Ok(CountyConfig {
        file: file.to_path_buf(),
        cluster_id: cluster_id.clone(),
        // Checked as bare numbers above (the file's spelling); typed from here on.
        replica_id: ReplicaId::new(replica_id),
        listen,
        advertise,
        http_listen,
        data_dir: resolve(&raw.data_dir),
        definition,
        initial_voters: initial_voters.into_iter().map(ReplicaId::new).collect(),
        peers: peers
            .into_iter()
            .map(|(id, address)| (ReplicaId::new(id), address))
            .collect(),
        tls,
        tick: Duration::from_millis(tick_ms.map_or(TICK_MS_DEFAULT, |t| *t.get_ref())),
        compact_after_entries: compact.map_or(LOG_ENTRIES_BEFORE_COMPACTION, |c| *c.get_ref()),
    })
}

/// The cluster id rule: 1 to [`CLUSTER_ID_LEN_MAX`] ASCII letters, digits, `.`, `_`, `-`,
/// so it is safe in a file name and a log line. Returns why not, to follow the quoted id.
fn check_cluster_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("is empty; name the cluster, e.g. \"qingshan-2026\"".to_owned());
    }
    if id.len() > CLUSTER_ID_LEN_MAX {
        return Err(format!(
            "is {} bytes long, more than {CLUSTER_ID_LEN_MAX}",
            id.len()
        ));
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "contains {c:?}; use only ASCII letters, digits, '.', '_' and '-'"
        ));
    }
    Ok(())
}

/// A replica id as a `[peers]` key: a decimal number from 1 with no leading zero, the same
/// spelling as in certificates (`tally://replica/3`).
fn parse_replica_id(key: &str) -> Option<u64> {
    key.parse::<u64>()
        .ok()
        .filter(|id| *id >= 1 && id.to_string() == key)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The config of the module doc, as replica 1 of a local cluster writes it.
    const GOOD: &str = r#"# county.toml: one replica of the county coordinator
cluster_id = "qingshan-2026"
replica_id = 1
listen = "127.0.0.1:7101"
advertise = "127.0.0.1:7101"
data_dir = "data/replica-1"
definition = "../sample-county/election.toml"
initial_voters = [1, 2, 3]
[peers]
1 = "127.0.0.1:7101"
2 = "127.0.0.1:7102"
3 = "127.0.0.1:7103"
[tls]
ca = "pki/ca.pem"
cert = "pki/replica-1.pem"
key = "pki/replica-1.key"
[raft]
tick_ms = 100
compact_after_entries = 10000
"#;

    const FILE: &str = "/srv/county/replica-1.toml";

    /// `GOOD` with the line that starts with `line_start` replaced by `replacement` (removed
    /// when it is empty), and the 1-based number of that line.
    fn edited(line_start: &str, replacement: &str) -> (String, usize) {
        tally_config::edited(GOOD, line_start, replacement)
    }

    /// The problems of `text`, each as printed after the file name.
    fn problems_of(text: &str) -> Vec<String> {
        match CountyConfig::parse(Path::new(FILE), text) {
            Ok(_) => Vec::new(),
            Err(e) => e.problems().iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn good_config_parses() {
        // Goal: the documented config gives the values it says, paths resolved against the
        // config's folder; [raft] and advertise may be left out for their defaults.
        // Method: parse the module doc's config, then one without [raft] and advertise.
        let config = CountyConfig::parse(Path::new(FILE), GOOD).unwrap();
        let folder = Path::new("/srv/county");
        assert_eq!(config.file, Path::new(FILE));
        assert_eq!(config.cluster_id, "qingshan-2026");
        assert_eq!(config.replica_id, ReplicaId::new(1));
        assert_eq!(config.listen, "127.0.0.1:7101".parse().unwrap());
        assert_eq!(config.advertise, "127.0.0.1:7101");
        assert_eq!(config.http_listen, None);
        assert_eq!(config.data_dir, folder.join("data/replica-1"));
        assert_eq!(
            config.definition,
            folder.join("../sample-county/election.toml")
        );
        assert_eq!(config.initial_voters, [1, 2, 3].map(ReplicaId::new));
        assert_eq!(config.peers.len(), 3);
        assert_eq!(config.peers[&ReplicaId::new(2)], "127.0.0.1:7102");
        assert_eq!(config.tls.ca, folder.join("pki/ca.pem"));
        assert_eq!(config.tls.cert, folder.join("pki/replica-1.pem"));
        assert_eq!(config.tls.key, folder.join("pki/replica-1.key"));
        assert_eq!(config.tick, Duration::from_millis(100));
        assert_eq!(config.compact_after_entries, 10_000);
        assert!(config.is_founder());

        let bare = GOOD
            .replace("advertise = \"127.0.0.1:7101\"\n", "")
            .replace("[raft]\ntick_ms = 100\ncompact_after_entries = 10000\n", "");
        let config = CountyConfig::parse(Path::new(FILE), &bare).unwrap();
        assert_eq!(config.advertise, "127.0.0.1:7101");
        assert_eq!(config.tick, Duration::from_millis(TICK_MS_DEFAULT));
        assert_eq!(config.compact_after_entries, LOG_ENTRIES_BEFORE_COMPACTION);

        // A replica added later is not among the founders and need not list itself.
        let (added, _) = edited("replica_id", "replica_id = 4");
        let added = added.replace(
            "listen = \"127.0.0.1:7101\"\nadvertise = \"127.0.0.1:7101\"",
            "listen = \"0.0.0.0:7104\"\nadvertise = \"county-4.example.gov.cn:7104\"",
        );
        let config = CountyConfig::parse(Path::new(FILE), &added).unwrap();
        assert!(!config.is_founder());
        assert_eq!(config.advertise, "county-4.example.gov.cn:7104");
    }

    #[test]
    fn http_listen_is_optional_and_checked() {
        // Goal: http_listen turns the HTTP listener on at its address; a bad address or the
        // gRPC address is refused with its line and key.
        // Method: add the key after advertise (line 6) with a good and two bad values.
        let with = |value: &str| {
            GOOD.replace(
                "advertise = \"127.0.0.1:7101\"\n",
                &format!("advertise = \"127.0.0.1:7101\"\nhttp_listen = \"{value}\"\n"),
            )
        };
        let config = CountyConfig::parse(Path::new(FILE), &with("127.0.0.1:7180")).unwrap();
        assert_eq!(config.http_listen, Some("127.0.0.1:7180".parse().unwrap()));
        let problems = problems_of(&with("localhost:7180"));
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with("line 6, http_listen: \"localhost:7180\" is not a socket"),
            "{problems:?}"
        );
        let problems = problems_of(&with("127.0.0.1:7101"));
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("the same as listen"), "{problems:?}");
    }

    #[test]
    fn each_mistake_is_named_with_its_line_and_key() {
        // Goal: every check refuses its mistake with the line and key, and says what to do.
        // Method: a table of one-line edits of the good config, each with the message expected
        // as printed after the file name.
        let long = "q".repeat(CLUSTER_ID_LEN_MAX + 1);
        let long_id = format!("cluster_id = \"{long}\"");
        let long_expected = format!("cluster_id: \"{long}\" is 65 bytes long, more than 64");
        let cases: &[(&str, &str, &str)] = &[
            (
                "replica_id",
                "replica_id = 0",
                "replica_id: is 0; a replica id is 1 or more",
            ),
            (
                "cluster_id",
                "cluster_id = \"\"",
                "cluster_id: \"\" is empty",
            ),
            (
                "cluster_id",
                "cluster_id = \"青山 2026\"",
                "cluster_id: \"青山 2026\" contains '青'",
            ),
            ("cluster_id", &long_id, &long_expected),
            (
                "listen",
                "listen = \"localhost:7101\"",
                "listen: \"localhost:7101\" is not a socket address; write IP:PORT",
            ),
            (
                "advertise",
                "advertise = \"county-1\"",
                "advertise: \"county-1\" has no port",
            ),
            (
                "advertise",
                "advertise = \"0.0.0.0:7101\"",
                "advertise: \"0.0.0.0:7101\" cannot be dialled",
            ),
            (
                "2 =",
                "2 = \"127.0.0.1\"",
                "peers.2: \"127.0.0.1\" has no port",
            ),
            (
                "2 =",
                "2 = \"::1:7102\"",
                "peers.2: \"::1:7102\" looks like an IPv6 address without brackets",
            ),
            (
                "2 =",
                "2 = \"[::1]:0\"",
                "peers.2: \"[::1]:0\" has port \"0\"; a port is 1 to 65535",
            ),
            (
                "2 =",
                "two = \"127.0.0.1:7102\"",
                "peers.two: \"two\" is not a replica id",
            ),
            (
                "1 =",
                "1 = \"127.0.0.1:7109\"",
                "peers.1: is \"127.0.0.1:7109\", but this replica (replica_id = 1) advertises \"127.0.0.1:7101\" (advertise)",
            ),
            (
                "1 =",
                "",
                "line 8, initial_voters: 1 (this replica) has no address in [peers]; add 1 = \"127.0.0.1:7101\"",
            ),
            (
                "initial_voters",
                "initial_voters = []",
                "initial_voters: is empty",
            ),
            (
                "initial_voters",
                "initial_voters = [1, 2, 4]",
                "initial_voters: 4 has no address in [peers]",
            ),
            (
                "initial_voters",
                "initial_voters = [1, 2, 3, 2]",
                "initial_voters: 2 is listed twice",
            ),
            (
                "initial_voters",
                "initial_voters = [1, 2]",
                "initial_voters: lists 2 voters; use an odd number (1, 3, 5 or 7): a majority of 2 is 2, so 2 voters survive the loss of 0 replicas, no more than 1 do",
            ),
            (
                "tick_ms",
                "tick_ms = 5",
                "raft.tick_ms: is 5; give 10 to 1000",
            ),
            ("tick_ms", "tick_ms = 5000", "raft.tick_ms: is 5000"),
            (
                "compact_after_entries",
                "compact_after_entries = 10",
                "raft.compact_after_entries: is 10; give 100 or more",
            ),
            (
                "replica_id",
                "replica_id = -1",
                "replica_id: invalid value: integer `-1`",
            ),
            ("tick_ms", "tick = 100", "unknown field `tick`"),
            (
                "data_dir",
                "data = \"data/replica-1\"",
                "unknown field `data`",
            ),
        ];
        let missed = tally_config::unmet_cases(GOOD, cases, problems_of);
        assert!(missed.is_empty(), "{}", missed.join("\n"));
    }

    #[test]
    fn an_even_cluster_is_refused_with_the_reason() {
        // Goal: four founders are refused with the arithmetic that makes an odd count better.
        // Method: add replica 4 to [peers] and initial_voters.
        let text = GOOD
            .replace(
                "initial_voters = [1, 2, 3]",
                "initial_voters = [1, 2, 3, 4]",
            )
            .replace(
                "3 = \"127.0.0.1:7103\"",
                "3 = \"127.0.0.1:7103\"\n4 = \"127.0.0.1:7104\"",
            );
        assert_eq!(
            problems_of(&text),
            [
                "line 8, initial_voters: lists 4 voters; use an odd number (1, 3, 5 or 7): a \
                 majority of 4 is 3, so 4 voters survive the loss of 1 replica, no more than 3 \
                 do, while every write waits for one more replica"
            ]
        );
        let eight = GOOD.replace(
            "initial_voters = [1, 2, 3]",
            "initial_voters = [1, 2, 3, 4, 5, 6, 7, 8]",
        );
        assert!(
            problems_of(&eight)
                .iter()
                .any(|p| p.starts_with("line 8, initial_voters: lists 8 voters, more than 7")),
            "{:#?}",
            problems_of(&eight)
        );
    }

    #[test]
    fn all_problems_are_reported_at_once() {
        // Goal: an operator sees every problem in one pass, in the file's terms, with the
        // file named once in a header and again on each line.
        // Method: break four keys on four lines; check the error's whole text.
        let text = GOOD
            .replace("replica_id = 1", "replica_id = 0")
            .replace(
                "cluster_id = \"qingshan-2026\"",
                "cluster_id = \"qingshan 2026\"",
            )
            .replace("tick_ms = 100", "tick_ms = 1")
            .replace("compact_after_entries = 10000", "compact_after_entries = 0");
        let error = CountyConfig::parse(Path::new(FILE), &text).unwrap_err();
        tally_config::assert_lists_problems(
            &error,
            "county",
            FILE,
            &[
                "line 2, cluster_id: \"qingshan 2026\" contains ' '",
                "line 3, replica_id: is 0",
                "line 18, raft.tick_ms: is 1",
                "line 19, raft.compact_after_entries: is 0",
            ],
        );
    }

    #[test]
    fn listen_on_every_address_needs_advertise() {
        // Goal: a replica bound to 0.0.0.0 without advertise is refused, since its peers
        // cannot dial 0.0.0.0; the message says to add advertise.
        // Method: drop advertise and listen on 0.0.0.0.
        let text = GOOD
            .replace("advertise = \"127.0.0.1:7101\"\n", "")
            .replace("listen = \"127.0.0.1:7101\"", "listen = \"0.0.0.0:7101\"");
        assert_eq!(
            problems_of(&text),
            [
                "line 4, listen: is \"0.0.0.0:7101\", which other replicas cannot dial; add \
                 advertise = \"HOST:PORT\" with the host name or address they reach this \
                 replica at"
            ]
        );
    }

    #[test]
    fn load_names_missing_files_and_how_to_make_certificates() {
        // Goal: load reports every missing file with its key, the path as written and as
        // resolved, and points at `tally certs`; with the files in place it loads.
        // Method: write the good config alone into a temporary folder and load it; then
        // create the files it names (contents are not read here) and load again.
        let dir = tempfile::tempdir().unwrap();
        let county = dir.path().join("county");
        std::fs::create_dir(&county).unwrap();
        let file = county.join("replica-1.toml");
        std::fs::write(&file, GOOD).unwrap();

        let error = CountyConfig::load(&file).unwrap_err();
        let problems: Vec<String> = error.problems().iter().map(ToString::to_string).collect();
        assert_eq!(problems.len(), 4, "{error}");
        let definition = county.join("../sample-county/election.toml");
        assert_eq!(
            problems[0],
            format!(
                "line 7, definition: the election definition \"../sample-county/election.toml\" \
                 ({}) does not exist; give the path of the election definition, relative to this \
                 config file's folder",
                definition.display()
            )
        );
        for (i, (key, written)) in [
            ("tls.ca", "pki/ca.pem"),
            ("tls.cert", "pki/replica-1.pem"),
            ("tls.key", "pki/replica-1.key"),
        ]
        .into_iter()
        .enumerate()
        {
            let problem = &problems[i + 1];
            assert!(
                problem.starts_with(&format!("line {}, {key}: ", 14 + i)),
                "{problem}"
            );
            assert!(
                problem.contains(&county.join(written).display().to_string()),
                "{problem}"
            );
            assert!(problem.contains("tally certs"), "{problem}");
        }
        assert!(error.to_string().contains(&file.display().to_string()));

        std::fs::create_dir_all(dir.path().join("sample-county")).unwrap();
        std::fs::write(&definition, "").unwrap();
        std::fs::create_dir(county.join("pki")).unwrap();
        for name in ["ca.pem", "replica-1.pem", "replica-1.key"] {
            std::fs::write(county.join("pki").join(name), "").unwrap();
        }
        let config = CountyConfig::load(&file).unwrap();
        assert_eq!(config.tls.key, county.join("pki/replica-1.key"));

        let missing = CountyConfig::load(&county.join("absent.toml")).unwrap_err();
        assert!(
            missing.to_string().starts_with(&format!(
                "cannot read the county config {}",
                county.join("absent.toml").display()
            )),
            "{missing}"
        );
    }

    /// Every example config in the repository, by folder.
    fn example_configs(folder: &str) -> Vec<(PathBuf, CountyConfig)> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../..")
            .join(folder);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
            .map(|entry| entry.unwrap().path())
            .filter(|path| path.extension().is_some_and(|e| e == "toml"))
            .collect();
        files.sort();
        files
            .into_iter()
            .map(|path| {
                let text = std::fs::read_to_string(&path).unwrap();
                let config = CountyConfig::parse(&path, &text).unwrap_or_else(|e| panic!("{e}"));
                (path, config)
            })
            .collect()
    }

    #[test]
    fn example_configs_parse_and_agree() {
        // Goal: the example configs an operator copies are valid and describe one cluster:
        // the same cluster id, founders and peers in every file, each replica advertising
        // its own [peers] address, and the local one pointing at the sample county.
        // Method: parse (no file checks: the certificates are not committed) every *.toml in
        // examples/county-local and deploy/county, and compare them.
        for folder in ["examples/county-local", "deploy/county"] {
            let configs = example_configs(folder);
            assert_eq!(configs.len(), 3, "{folder}");
            let (_, first) = &configs[0];
            for (i, (path, config)) in configs.iter().enumerate() {
                let id = i as u64 + 1;
                assert!(
                    path.ends_with(format!("replica-{id}.toml")),
                    "{}",
                    path.display()
                );
                assert_eq!(config.replica_id, ReplicaId::new(id), "{}", path.display());
                assert!(config.is_founder(), "{}", path.display());
                assert_eq!(config.cluster_id, first.cluster_id, "{}", path.display());
                assert_eq!(
                    config.initial_voters,
                    [1, 2, 3].map(ReplicaId::new),
                    "{}",
                    path.display()
                );
                assert_eq!(config.peers, first.peers, "{}", path.display());
                assert_eq!(
                    config.peers[&ReplicaId::new(id)],
                    config.advertise,
                    "{}",
                    path.display()
                );
                assert_eq!(
                    config.tls.cert.file_name().unwrap(),
                    format!("replica-{id}.pem").as_str()
                );
                assert_eq!(
                    config.tls.key.file_name().unwrap(),
                    format!("replica-{id}.key").as_str()
                );
                if folder == "examples/county-local" {
                    assert!(
                        config.definition.is_file(),
                        "{}",
                        config.definition.display()
                    );
                    assert_eq!(config.listen.port(), 7100 + id as u16);
                } else {
                    assert_eq!(config.listen, "0.0.0.0:7100".parse().unwrap());
                    assert_eq!(config.data_dir, Path::new("/var/lib/tally/county"));
                    assert_eq!(config.definition, Path::new("/etc/tally/election.toml"));
                }
            }
        }
    }
}
