//! The county CA, leaf certificates, and the identity a certificate carries.
//!
//! # Role encoding
//!
//! A leaf certificate names exactly one tally identity in a URI subject alternative name:
//!
//! ```text
//! tally://replica/3        a county replica, by its raft id (decimal, 1 or more, no leading zero)
//! tally://township/T01     a township aggregator, by its township id
//! tally://operator/alice   a person at the county, by name
//! ```
//!
//! The URI SAN is the only thing authorization reads. The subject common name
//! (`replica:3`, `township:T01`, `operator:alice`) is written too, for people reading the
//! certificate with `openssl x509 -text`, but it is never trusted: a CA that issues
//! certificates for other purposes may put anything in a CN, while a SAN with the `tally`
//! scheme is unlikely to be issued by accident. A certificate with no `tally://` URI SAN, or
//! with more than one, has no identity.
//!
//! Names are 1 to [`NAME_LEN_MAX`] ASCII letters, digits, `-`, `_` or `.`, the same rule as
//! the domain core's ids, so a name is safe in a URI and in a file name.

use std::collections::HashSet;
use std::fmt;
use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PublicKeyData, SanType,
};
use time::{Duration, OffsetDateTime};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use crate::{CertError, PEM_TEXT};

/// The URI scheme of the subject alternative name that carries a role.
pub const ROLE_URI_SCHEME: &str = "tally";

/// The longest replica id, township id or operator name, in bytes (the core's `ID_LEN_MAX`).
pub const NAME_LEN_MAX: usize = 64;

/// How long a county CA made by [`make_ca`] is valid: ten years, several election terms.
pub const CA_VALIDITY_DAYS: u32 = 3650;

/// The longest validity [`make_leaf`] accepts: a leaf is renewed at least once per term.
pub const LEAF_VALIDITY_DAYS_MAX: u32 = 1825;

/// How long the leaves written by [`write_dev_pki`] are valid.
pub const DEV_LEAF_VALIDITY_DAYS: u32 = 365;

/// Certificates start this long before they are made, so a peer whose clock is a little
/// behind does not see them as not yet valid.
pub const CLOCK_SKEW_ALLOWANCE_MINUTES: i64 = 60;

/// The most leaves [`write_dev_pki`] writes in one call; a county has a few replicas, some
/// tens of townships, a handful of operators and up to some thousands of polling units.
pub const DEV_PKI_LEAVES_MAX: usize = 20_000;

/// The most host names or addresses one leaf may carry.
pub const HOSTS_MAX: usize = 64;

/// What a certificate allows its holder to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// A replica of the county coordinator; its name is its raft id.
    Replica,
    /// A township aggregator; its name is its township id.
    Township,
    /// A person at the county office; its name is the operator's login.
    Operator,
    /// A village polling unit (a station, an election assembly or a mobile ballot box); its
    /// name is the unit's id in the election definition. It talks to its township only.
    Village,
}

impl Role {
    /// Every role, in a fixed order.
    pub const ALL: [Role; 4] = [Role::Replica, Role::Township, Role::Operator, Role::Village];

    /// The word used in the URI SAN, the common name and file names.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Replica => "replica",
            Role::Township => "township",
            Role::Operator => "operator",
            Role::Village => "village",
        }
    }

    /// What a holder of this role is for, said in the refusals of [`crate::auth::require`].
    pub fn may(self) -> &'static str {
        match self {
            Role::Replica => "replicate the county ledger among the county's replicas",
            Role::Township => {
                "submit the signed tally sheets of its own township and read their status"
            }
            Role::Operator => "read results and administer the county service",
            Role::Village => "submit its own polling unit's signed tally sheets to its township",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = CertError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|role| role.as_str() == s)
            .ok_or_else(|| CertError::BadIdentity {
                identity: s.to_string(),
                reason: "the role is not one of replica, township, operator, village".to_string(),
            })
    }
}

/// Who a certificate names: a role and a name within it. Made only through [`Identity::new`]
/// or [`identity_of`], so the name always obeys the naming rule.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Identity {
    role: Role,
    name: String,
}

impl Identity {
    /// Checks the name against the rule for its role: 1 to [`NAME_LEN_MAX`] ASCII letters,
    /// digits, `-`, `_` or `.`; a replica's name is its raft id, a decimal number from 1 with
    /// no leading zero (so every id has one spelling).
    pub fn new(role: Role, name: impl Into<String>) -> Result<Self, CertError> {
        let name = name.into();
        let bad = |reason: String| CertError::BadIdentity {
            identity: format!("{role}:{name}"),
            reason,
        };
        if name.is_empty() {
            return Err(bad("the name is empty".to_string()));
        }
        if name.len() > NAME_LEN_MAX {
            return Err(bad(format!(
                "the name is {} bytes long, more than {NAME_LEN_MAX}",
                name.len()
            )));
        }
        if let Some(c) = name
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
        {
            return Err(bad(format!(
                "the name contains {c:?}; only ASCII letters, digits, '-', '_' and '.' are allowed"
            )));
        }
        if role == Role::Replica {
            let canonical = name
                .parse::<u64>()
                .ok()
                .filter(|id| *id >= 1 && id.to_string() == name);
            if canonical.is_none() {
                return Err(bad(
                    "a replica's name is its raft id: a decimal number from 1, with no leading zero"
                        .to_string(),
                ));
            }
        }
        Ok(Identity { role, name })
    }

    /// A replica's identity from its raft id.
    pub fn replica(id: u64) -> Result<Self, CertError> {
        Identity::new(Role::Replica, id.to_string())
    }

    pub fn role(&self) -> Role {
        self.role
    }

    /// The replica id, township id or operator name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The raft id of a replica; `None` for other roles.
    pub fn replica_id(&self) -> Option<u64> {
        match self.role {
            // Identity::new checked that a replica's name is a decimal u64.
            Role::Replica => self.name.parse().ok(),
            Role::Township | Role::Operator | Role::Village => None,
        }
    }

    /// The URI SAN that carries this identity: `tally://township/T01`.
    pub fn uri(&self) -> String {
        format!("{ROLE_URI_SCHEME}://{}/{}", self.role, self.name)
    }

    /// The subject common name written for people: `township:T01`.
    pub fn common_name(&self) -> String {
        format!("{}:{}", self.role, self.name)
    }

    /// The stem of this identity's files in a PKI directory: `township-T01`.
    pub fn file_stem(&self) -> String {
        format!("{}-{}", self.role, self.name)
    }

    /// Parses `tally://ROLE/NAME`; `None` when the URI has another scheme.
    fn from_uri(uri: &str) -> Option<Result<Self, CertError>> {
        let rest = uri.strip_prefix(ROLE_URI_SCHEME)?.strip_prefix("://")?;
        let bad = |reason: &str| CertError::BadIdentity {
            identity: uri.to_string(),
            reason: reason.to_string(),
        };
        Some(match rest.split_once('/') {
            None => Err(bad("expected tally://ROLE/NAME")),
            Some((role, name)) => role
                .parse::<Role>()
                .map_err(|_| bad("the role is not one of replica, township, operator, village"))
                .and_then(|role| Identity::new(role, name)),
        })
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.role, self.name)
    }
}

/// Reads the tally identity from a DER certificate: its one `tally://ROLE/NAME` URI SAN.
///
/// This does not verify the certificate; call it on a certificate that TLS has already
/// verified against the county CA (as [`crate::auth::peer_identity`] does).
pub fn identity_of(cert_der: &[u8]) -> Result<Identity, CertError> {
    let (_, cert) = X509Certificate::from_der(cert_der).map_err(|e| CertError::Invalid {
        what: "certificate",
        origin: "(given as DER)".to_string(),
        reason: e.to_string(),
    })?;
    identity_of_parsed(&cert)
}

pub(crate) fn identity_of_parsed(cert: &X509Certificate<'_>) -> Result<Identity, CertError> {
    let subject = cert.subject().to_string();
    let no_role = |reason: String| CertError::NoIdentity {
        subject: subject.clone(),
        reason,
    };
    let san = cert
        .subject_alternative_name()
        .map_err(|e| no_role(format!("its subject alternative names are malformed: {e}")))?
        .ok_or_else(|| no_role("it has no subject alternative names".to_string()))?;
    let mut identities = san
        .value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::URI(uri) => Identity::from_uri(uri),
            _ => None,
        });
    let identity = identities
        .next()
        .ok_or_else(|| no_role(format!("it has no {ROLE_URI_SCHEME}:// URI SAN")))??;
    if identities.next().is_some() {
        return Err(no_role(format!(
            "it has more than one {ROLE_URI_SCHEME}:// URI SAN, so its role is ambiguous"
        )));
    }
    Ok(identity)
}

/// A CA certificate and its private key, PEM encoded.
#[derive(Clone)]
pub struct CaFiles {
    pub cert_pem: String,
    /// Secret: anyone holding it can make certificates for any role.
    pub key_pem: String,
}

impl fmt::Debug for CaFiles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CaFiles")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"(secret)")
            .finish()
    }
}

/// A leaf certificate, its private key, and the identity it carries.
#[derive(Clone)]
pub struct LeafFiles {
    pub identity: Identity,
    pub cert_pem: String,
    /// Secret: anyone holding it can act as `identity`.
    pub key_pem: String,
}

impl fmt::Debug for LeafFiles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeafFiles")
            .field("identity", &self.identity)
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"(secret)")
            .finish()
    }
}

/// Makes a county CA: a self-signed certificate that may sign leaves but no further CAs
/// (path length 0), valid for [`CA_VALIDITY_DAYS`], with an ECDSA P-256 key.
pub fn make_ca(county_name: &str) -> Result<CaFiles, CertError> {
    let county_name = county_name.trim();
    if county_name.is_empty() {
        return Err(CertError::BadIdentity {
            identity: "(county CA)".to_string(),
            reason: "the county name is empty".to_string(),
        });
    }
    let now = OffsetDateTime::now_utc();
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, format!("{county_name} tally CA"));
    params
        .distinguished_name
        .push(DnType::OrganizationName, county_name);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = now - Duration::minutes(CLOCK_SKEW_ALLOWANCE_MINUTES);
    params.not_after = now + Duration::days(i64::from(CA_VALIDITY_DAYS));
    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    Ok(CaFiles {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// Makes a leaf certificate for `role`/`name`, signed by `ca`.
///
/// The leaf carries the identity as a URI SAN (see the module doc), both the ServerAuth and
/// ClientAuth extended key usages (a replica is a server to its peers and a client of them),
/// and a DNS or IP SAN for each of `hosts`. A replica or township (the servers) also always gets `localhost`,
/// `127.0.0.1` and `::1`, so a single machine's cluster and the tests need no host names.
///
/// `ca` may be a CA made elsewhere, as long as its key is one rcgen reads (PKCS#8 PEM).
pub fn make_leaf(
    ca: &CaFiles,
    role: Role,
    name: &str,
    hosts: &[String],
    validity_days: u32,
) -> Result<LeafFiles, CertError> {
    let identity = Identity::new(role, name)?;
    if !(1..=LEAF_VALIDITY_DAYS_MAX).contains(&validity_days) {
        return Err(CertError::BadIdentity {
            identity: identity.to_string(),
            reason: format!(
                "a validity of {validity_days} days is outside 1 to {LEAF_VALIDITY_DAYS_MAX}"
            ),
        });
    }
    if hosts.len() > HOSTS_MAX {
        return Err(CertError::BadIdentity {
            identity: identity.to_string(),
            reason: format!("{} hosts, more than {HOSTS_MAX}", hosts.len()),
        });
    }

    let ca_key = KeyPair::from_pem(&ca.key_pem).map_err(|e| CertError::Invalid {
        what: "CA key",
        origin: PEM_TEXT.to_string(),
        reason: e.to_string(),
    })?;
    let ca_not_after = check_ca(&ca.cert_pem, &ca_key)?;
    let issuer =
        Issuer::from_ca_cert_pem(&ca.cert_pem, &ca_key).map_err(|e| CertError::Invalid {
            what: "CA certificate",
            origin: PEM_TEXT.to_string(),
            reason: e.to_string(),
        })?;

    let now = OffsetDateTime::now_utc();
    let not_after = now + Duration::days(i64::from(validity_days));
    if not_after > ca_not_after {
        return Err(CertError::BadIdentity {
            identity: identity.to_string(),
            reason: format!(
                "a leaf valid until {not_after} would outlive its CA, which expires {ca_not_after}; \
                 choose fewer days or renew the CA"
            ),
        });
    }

    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, identity.common_name());
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    params.not_before = now - Duration::minutes(CLOCK_SKEW_ALLOWANCE_MINUTES);
    params.not_after = not_after;
    params.subject_alt_names = host_sans(&identity, hosts)?;

    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    Ok(LeafFiles {
        identity,
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// The identity URI first, then the hosts, without duplicates.
fn host_sans(identity: &Identity, hosts: &[String]) -> Result<Vec<SanType>, CertError> {
    let mut all_hosts: Vec<&str> = Vec::new();
    if matches!(identity.role(), Role::Replica | Role::Township) {
        all_hosts.extend(["localhost", "127.0.0.1", "::1"]);
    }
    all_hosts.extend(hosts.iter().map(|h| h.trim()));

    let ia5 = |s: &str| {
        s.to_string()
            .try_into()
            .map_err(|_| CertError::BadIdentity {
                identity: identity.to_string(),
                reason: format!("host {s:?} is not an ASCII name or an IP address"),
            })
    };
    let mut sans = vec![SanType::URI(ia5(&identity.uri())?)];
    for host in all_hosts {
        let san = match host.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) if host.is_empty() => {
                return Err(CertError::BadIdentity {
                    identity: identity.to_string(),
                    reason: "a host name is empty".to_string(),
                });
            }
            Err(_) => SanType::DnsName(ia5(host)?),
        };
        if !sans.contains(&san) {
            sans.push(san);
        }
    }
    Ok(sans)
}

/// Checks that `cert_pem` is a CA certificate for `key` and returns when it expires.
fn check_ca(cert_pem: &str, key: &KeyPair) -> Result<OffsetDateTime, CertError> {
    let invalid = |reason: String| CertError::Invalid {
        what: "CA certificate",
        origin: PEM_TEXT.to_string(),
        reason,
    };
    let (_, pem) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes())
        .map_err(|e| invalid(e.to_string()))?;
    let cert = pem.parse_x509().map_err(|e| invalid(e.to_string()))?;
    if !cert.is_ca() {
        return Err(invalid(
            "it is not a CA certificate (basic constraints CA:FALSE or absent)".to_string(),
        ));
    }
    if cert.public_key().raw != key.subject_public_key_info().as_slice() {
        return Err(CertError::CaKeyMismatch);
    }
    Ok(cert.validity().not_after.to_datetime())
}

/// What [`write_dev_pki`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevPki {
    /// True when `ca.pem` and `ca.key` were already there and signed the new leaves.
    pub ca_reused: bool,
    /// Every file written, in the order written.
    pub written: Vec<PathBuf>,
}

/// File name of the CA certificate in a PKI directory.
pub const CA_CERT_FILE: &str = "ca.pem";
/// File name of the CA key in a PKI directory.
pub const CA_KEY_FILE: &str = "ca.key";

/// Writes a county PKI for development and small deployments into `dir` (created if absent):
/// `ca.pem`, `ca.key`, and for each identity `ROLE-NAME.pem` and `ROLE-NAME.key`
/// (`replica-1.pem`, `township-T01.pem`, `operator-alice.pem`, ...). Keys are mode 0600.
///
/// It never overwrites a file. When `ca.pem` and `ca.key` both exist they are reused, so a
/// new township or replica can be added to a running county; any leaf file that exists is an
/// error naming it, found before anything is written. `hosts` go on the replica and township
/// certificates (the servers).
pub fn write_dev_pki(
    dir: &Path,
    county: &str,
    replicas: &[u64],
    townships: &[String],
    operators: &[String],
    hosts: &[String],
) -> Result<DevPki, CertError> {
    let mut identities = Vec::new();
    for id in replicas {
        identities.push(Identity::replica(*id)?);
    }
    for name in townships {
        identities.push(Identity::new(Role::Township, name.as_str())?);
    }
    for name in operators {
        identities.push(Identity::new(Role::Operator, name.as_str())?);
    }
    write_dev_pki_for(dir, county, &identities, hosts)
}

/// [`write_dev_pki`] for any list of identities (villages among them): the same files, the
/// same refusal to overwrite, the same reuse of an existing CA.
pub fn write_dev_pki_for(
    dir: &Path,
    county: &str,
    identities: &[Identity],
    hosts: &[String],
) -> Result<DevPki, CertError> {
    if identities.len() > DEV_PKI_LEAVES_MAX {
        return Err(CertError::BadIdentity {
            identity: "(pki)".to_string(),
            reason: format!(
                "{} certificates asked for, more than {DEV_PKI_LEAVES_MAX}",
                identities.len()
            ),
        });
    }
    let mut seen = HashSet::new();
    if let Some(dup) = identities.iter().find(|i| !seen.insert((*i).clone())) {
        return Err(CertError::BadIdentity {
            identity: dup.to_string(),
            reason: "asked for twice".to_string(),
        });
    }

    let ca_cert_path = dir.join(CA_CERT_FILE);
    let ca_key_path = dir.join(CA_KEY_FILE);
    let ca_reused = match (ca_cert_path.exists(), ca_key_path.exists()) {
        (true, true) => true,
        (false, false) => false,
        (true, false) => {
            return Err(CertError::CaHalfPresent {
                missing: ca_key_path,
            });
        }
        (false, true) => {
            return Err(CertError::CaHalfPresent {
                missing: ca_cert_path,
            });
        }
    };
    let leaf_paths: Vec<(PathBuf, PathBuf)> = identities
        .iter()
        .map(|i| {
            let stem = i.file_stem();
            (
                dir.join(format!("{stem}.pem")),
                dir.join(format!("{stem}.key")),
            )
        })
        .collect();
    if let Some(path) = leaf_paths
        .iter()
        .flat_map(|(cert, key)| [cert, key])
        .find(|path| path.exists())
    {
        return Err(CertError::Exists { path: path.clone() });
    }

    fs::create_dir_all(dir).map_err(|source| CertError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut written = Vec::new();
    let ca = if ca_reused {
        CaFiles {
            cert_pem: read_file("CA certificate", &ca_cert_path)?,
            key_pem: read_file("CA key", &ca_key_path)?,
        }
    } else {
        let ca = make_ca(county)?;
        write_new(&ca_cert_path, &ca.cert_pem, false)?;
        written.push(ca_cert_path);
        write_new(&ca_key_path, &ca.key_pem, true)?;
        written.push(ca_key_path);
        ca
    };
    for (identity, (cert_path, key_path)) in identities.iter().zip(leaf_paths) {
        // Servers are dialled by name: replicas by townships, operators and each other,
        // townships by their polling units.
        let leaf_hosts: &[String] = if matches!(identity.role(), Role::Replica | Role::Township) {
            hosts
        } else {
            &[]
        };
        let leaf = make_leaf(
            &ca,
            identity.role(),
            identity.name(),
            leaf_hosts,
            DEV_LEAF_VALIDITY_DAYS,
        )?;
        write_new(&cert_path, &leaf.cert_pem, false)?;
        written.push(cert_path);
        write_new(&key_path, &leaf.key_pem, true)?;
        written.push(key_path);
    }
    Ok(DevPki { ca_reused, written })
}

/// Creates `path`, failing if it exists; a secret is created readable by its owner only,
/// from the start, so it is never briefly world-readable.
fn write_new(path: &Path, contents: &str, secret: bool) -> Result<(), CertError> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if secret { 0o600 } else { 0o644 });
    }
    #[cfg(not(unix))]
    let _ = secret;
    let mut file = options.open(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::AlreadyExists {
            CertError::Exists {
                path: path.to_path_buf(),
            }
        } else {
            CertError::Write {
                path: path.to_path_buf(),
                source,
            }
        }
    })?;
    file.write_all(contents.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|source| CertError::Write {
            path: path.to_path_buf(),
            source,
        })
}

/// The largest certificate or key file read, far above any real one, so a wrong path
/// (a log, a disk image) is refused instead of read into memory.
pub const PEM_FILE_BYTES_MAX: u64 = 1024 * 1024;

/// Reads a PEM file, naming it in every error.
pub(crate) fn read_file(what: &'static str, path: &Path) -> Result<String, CertError> {
    let read_error = |source: std::io::Error| {
        if source.kind() == std::io::ErrorKind::NotFound {
            CertError::Missing {
                what,
                path: path.to_path_buf(),
            }
        } else {
            CertError::Read {
                what,
                path: path.to_path_buf(),
                source,
            }
        }
    };
    let len = std::fs::metadata(path).map_err(read_error)?.len();
    if len > PEM_FILE_BYTES_MAX {
        return Err(CertError::Invalid {
            what,
            origin: path.display().to_string(),
            reason: format!(
                "it is {len} bytes, more than {PEM_FILE_BYTES_MAX}; is this the right file?"
            ),
        });
    }
    std::fs::read_to_string(path).map_err(read_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_rule_for_their_role() {
        // Goal: each role's name rule holds, so every identity has one spelling.
        // Method: try good and bad names through Identity::new.
        assert!(Identity::new(Role::Replica, "3").is_ok());
        for bad in ["0", "03", "-1", "x", "", "18446744073709551616"] {
            assert!(Identity::new(Role::Replica, bad).is_err(), "{bad}");
        }
        assert!(Identity::new(Role::Township, "T01").is_ok());
        assert!(Identity::new(Role::Operator, "alice.w").is_ok());
        for bad in ["", "a/b", "a b", "张", &"x".repeat(NAME_LEN_MAX + 1)] {
            assert!(Identity::new(Role::Operator, bad).is_err(), "{bad}");
        }
        let id = Identity::new(Role::Township, "T01").unwrap();
        assert_eq!(id.uri(), "tally://township/T01");
        assert_eq!(id.common_name(), "township:T01");
        assert_eq!(id.file_stem(), "township-T01");
        assert_eq!(Identity::replica(7).unwrap().replica_id(), Some(7));
    }

    #[test]
    fn role_uri_parses_strictly() {
        // Goal: only a well-formed tally:// URI gives an identity; other schemes are ignored.
        // Method: feed URIs to Identity::from_uri.
        assert!(Identity::from_uri("https://example.org/x").is_none());
        assert_eq!(
            Identity::from_uri("tally://replica/3").unwrap().unwrap(),
            Identity::replica(3).unwrap()
        );
        for bad in [
            "tally://replica",
            "tally://admin/x",
            "tally://township/T01/extra",
            "tally://replica/03",
        ] {
            assert!(Identity::from_uri(bad).unwrap().is_err(), "{bad}");
        }
    }
}
