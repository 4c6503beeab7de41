//! Mutual TLS configurations for tonic servers and clients.
//!
//! Both sides trust only the county CA (no system roots), and both present a leaf
//! certificate: the server requires a client certificate signed by the county CA, so every
//! request reaching a handler has a verified [`Identity`] behind it.
//!
//! tonic reads PEM only when the server starts or the client connects, and rustls then
//! reports a bad file without its name. So every function here first checks the material:
//! the CA file holds CA certificates, the certificate file holds a leaf with a tally
//! identity that the CA issued and that is valid now, and the key belongs to it. The errors
//! name the file and say how to make a good one.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{KeyPair, PublicKeyData};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use time::OffsetDateTime;
use tonic::transport::{Certificate, ClientTlsConfig, ServerTlsConfig};
use x509_parser::prelude::{FromDer, X509Certificate};

pub use crate::certs::PEM_FILE_BYTES_MAX;
use crate::certs::{CA_CERT_FILE, identity_of_parsed, read_file};
use crate::{CertError, Identity, PEM_TEXT};

/// The longest a TLS handshake may take before the connection is dropped, so a peer that
/// opens a connection and stalls cannot hold it.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The most certificates one PEM file may hold.
pub const PEM_CERTS_MAX: usize = 16;

/// A server configuration that presents `cert_pem` and requires every client to present a
/// certificate issued by the CA in `ca_pem`.
pub fn server_tls(
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
) -> Result<ServerTlsConfig, CertError> {
    let material = Material::text(ca_pem, cert_pem, key_pem);
    material.check()?;
    Ok(material.server_config())
}

/// A client configuration that presents `cert_pem`, trusts only the CA in `ca_pem`, and
/// expects the server's certificate to carry `server_name` (a DNS or IP SAN, e.g.
/// `localhost` or a replica's host name).
pub fn client_tls(
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
    server_name: &str,
) -> Result<ClientTlsConfig, CertError> {
    let material = Material::text(ca_pem, cert_pem, key_pem);
    material.check()?;
    material.client_config(server_name)
}

/// Where one party's TLS files are: the CA certificate, its own certificate and its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TlsFiles {
    /// The files [`crate::write_dev_pki`] writes for `identity` in `dir`: `ca.pem`,
    /// `ROLE-NAME.pem` and `ROLE-NAME.key`.
    pub fn in_dir(dir: &Path, identity: &Identity) -> Self {
        let stem = identity.file_stem();
        TlsFiles {
            ca: dir.join(CA_CERT_FILE),
            cert: dir.join(format!("{stem}.pem")),
            key: dir.join(format!("{stem}.key")),
        }
    }

    /// Reads and checks the files; returns the server configuration and the identity the
    /// certificate carries.
    pub fn server_tls(&self) -> Result<(ServerTlsConfig, Identity), CertError> {
        let material = self.read()?;
        let identity = material.check()?;
        Ok((material.server_config(), identity))
    }

    /// Reads and checks the files; returns the client configuration and the identity the
    /// certificate carries.
    pub fn client_tls(&self, server_name: &str) -> Result<(ClientTlsConfig, Identity), CertError> {
        let material = self.read()?;
        let identity = material.check()?;
        Ok((material.client_config(server_name)?, identity))
    }

    fn read(&self) -> Result<Material, CertError> {
        Ok(Material {
            ca: Pem::file(&self.ca, read_file("CA certificate", &self.ca)?),
            cert: Pem::file(&self.cert, read_file("certificate", &self.cert)?),
            key: Pem::file(&self.key, read_file("key", &self.key)?),
        })
    }
}

/// One PEM text and where it came from, for error messages.
struct Pem {
    origin: String,
    text: String,
}

impl Pem {
    fn file(path: &Path, text: String) -> Self {
        Pem {
            origin: path.display().to_string(),
            text,
        }
    }
}

struct Material {
    ca: Pem,
    cert: Pem,
    key: Pem,
}

impl Material {
    fn text(ca: &str, cert: &str, key: &str) -> Self {
        let pem = |text: &str| Pem {
            origin: PEM_TEXT.to_string(),
            text: text.to_string(),
        };
        Material {
            ca: pem(ca),
            cert: pem(cert),
            key: pem(key),
        }
    }

    /// Checks everything rustls would, and names the file at fault; returns the identity of
    /// the leaf certificate.
    fn check(&self) -> Result<Identity, CertError> {
        let now = OffsetDateTime::now_utc();
        let ca_ders = certificates("CA certificate", &self.ca)?;
        let mut cas = Vec::with_capacity(ca_ders.len());
        for der in &ca_ders {
            let ca = parse("CA certificate", &self.ca, der)?;
            if !ca.is_ca() {
                return Err(CertError::Invalid {
                    what: "CA certificate",
                    origin: self.ca.origin.clone(),
                    reason: format!("{} is not a CA certificate", ca.subject()),
                });
            }
            check_validity("CA certificate", &self.ca, &ca, now)?;
            cas.push(ca);
        }

        let chain_ders = certificates("certificate", &self.cert)?;
        let mut chain = Vec::with_capacity(chain_ders.len());
        for der in &chain_ders {
            chain.push(parse("certificate", &self.cert, der)?);
        }
        // certificates() refuses an empty file, so the chain has a first element.
        let leaf = &chain[0];
        let identity = identity_of_parsed(leaf)?;
        check_validity("certificate", &self.cert, leaf, now)?;
        // The leaf must be signed by a CA in the CA file, or by an intermediate sent with it.
        let issued = cas
            .iter()
            .chain(chain.iter().skip(1))
            .any(|issuer| leaf.verify_signature(Some(issuer.public_key())).is_ok());
        if !issued {
            return Err(CertError::NotIssuedByCa {
                cert: self.cert.origin.clone(),
                ca: self.ca.origin.clone(),
            });
        }

        PrivateKeyDer::from_pem_slice(self.key.text.as_bytes()).map_err(|e| {
            CertError::Invalid {
                what: "key",
                origin: self.key.origin.clone(),
                reason: format!("no PEM private key (PKCS#8, PKCS#1 or SEC1) in it: {e}"),
            }
        })?;
        // rcgen reads PKCS#8 keys, which is what tally and most CAs write; a key in another
        // format is left for rustls to match when the server starts or the client connects.
        if let Ok(key) = KeyPair::from_pem(&self.key.text)
            && key.subject_public_key_info().as_slice() != leaf.public_key().raw
        {
            return Err(CertError::KeyMismatch {
                cert: self.cert.origin.clone(),
                key: self.key.origin.clone(),
            });
        }
        Ok(identity)
    }

    fn identity(&self) -> tonic::transport::Identity {
        tonic::transport::Identity::from_pem(&self.cert.text, &self.key.text)
    }

    fn server_config(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(self.identity())
            .client_ca_root(Certificate::from_pem(&self.ca.text))
            // Every client must present a certificate; authorization depends on it.
            .client_auth_optional(false)
            .timeout(TLS_HANDSHAKE_TIMEOUT)
    }

    fn client_config(&self, server_name: &str) -> Result<ClientTlsConfig, CertError> {
        if server_name.trim().is_empty() {
            return Err(CertError::BadIdentity {
                identity: "(server name)".to_string(),
                reason: "the server name to verify is empty".to_string(),
            });
        }
        Ok(ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca.text))
            .identity(self.identity())
            .domain_name(server_name.trim())
            .timeout(TLS_HANDSHAKE_TIMEOUT))
    }
}

fn certificates(what: &'static str, pem: &Pem) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let invalid = |reason: String| CertError::Invalid {
        what,
        origin: pem.origin.clone(),
        reason,
    };
    let mut ders = Vec::new();
    for der in CertificateDer::pem_slice_iter(pem.text.as_bytes()) {
        ders.push(der.map_err(|e| invalid(format!("bad PEM: {e}")))?);
        if ders.len() > PEM_CERTS_MAX {
            return Err(invalid(format!(
                "more than {PEM_CERTS_MAX} certificates in it"
            )));
        }
    }
    if ders.is_empty() {
        return Err(invalid("no PEM CERTIFICATE block in it".to_string()));
    }
    Ok(ders)
}

fn parse<'a>(
    what: &'static str,
    pem: &Pem,
    der: &'a CertificateDer<'static>,
) -> Result<X509Certificate<'a>, CertError> {
    X509Certificate::from_der(der)
        .map(|(_, cert)| cert)
        .map_err(|e| CertError::Invalid {
            what,
            origin: pem.origin.clone(),
            reason: format!("not an X.509 certificate: {e}"),
        })
}

fn check_validity(
    what: &'static str,
    pem: &Pem,
    cert: &X509Certificate<'_>,
    now: OffsetDateTime,
) -> Result<(), CertError> {
    let validity = cert.validity();
    let not_before = validity.not_before.to_datetime();
    let not_after = validity.not_after.to_datetime();
    let reason = if now < not_before {
        format!("{} is valid only from {not_before}", cert.subject())
    } else if now > not_after {
        format!("{} expired on {not_after}", cert.subject())
    } else {
        return Ok(());
    };
    Err(CertError::OutsideValidity {
        what,
        origin: pem.origin.clone(),
        reason,
    })
}
