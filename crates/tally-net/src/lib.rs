//! The security plumbing of tally's network: the county CA and its certificates, mutual TLS
//! for tonic servers and clients, and authorization by the role a certificate carries.
//!
//! This crate owns the role encoding (a `tally://ROLE/NAME` URI SAN, see [`certs`]) and the
//! mapping of authentication failures to `tonic::Status`. It must not depend on the domain
//! core or the wire contract: it knows certificates, not tally sheets, so any service can use
//! it. It holds no clock of its own beyond reading the time when a certificate is made or
//! checked.
//!
//! # Layout
//!
//! - [`certs`]: [`Role`], [`Identity`], [`identity_of`], making a CA and leaves with rcgen,
//!   and [`write_dev_pki`] (what `tally certs` writes).
//! - [`tls`]: [`server_tls`] and [`client_tls`] build tonic's TLS configurations, from PEM
//!   text or from files ([`TlsFiles`]), checking the material first so a bad file is named.
//! - [`auth`]: [`peer_identity`], [`require`] and the [`RequireRole`] interceptor.
//! - [`limits`]: [`guard`] (roles, message sizes and calls in flight per method, checked
//!   before a request body is read) and [`limit_connections`] (connections open at once).
//!
//! # Using an existing CA
//!
//! See `crates/tally-net/README.md`: which fields a leaf certificate must carry.

pub mod auth;
pub mod certs;
pub mod limits;
pub mod tls;

use std::path::PathBuf;

pub use auth::{RequireRole, authorized_identity, identity_in, peer_identity, require};
pub use certs::{
    CaFiles, DevPki, Identity, LeafFiles, Role, identity_of, make_ca, make_leaf, write_dev_pki,
    write_dev_pki_for,
};
pub use limits::{
    Guarded, MethodLimit, ServiceLimits, guard, health_limits, limit_connections, reflection_limits,
};
pub use tls::{TlsFiles, client_tls, server_tls};

/// How to get certificates, said at the end of every error about a missing or bad one.
pub const HOW_TO_MAKE_CERTS: &str = "make a county CA and certificates with `tally certs`, \
     or see crates/tally-net/README.md to use an existing CA";

/// The origin named in errors about PEM handed over as text rather than read from a file.
pub(crate) const PEM_TEXT: &str = "(given as PEM text)";

/// Everything that can go wrong with certificates and keys.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("{what} {} does not exist; {HOW_TO_MAKE_CERTS}", path.display())]
    Missing { what: &'static str, path: PathBuf },

    #[error("cannot read {what} {}: {source}", path.display())]
    Read {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("{what} {origin} is not usable: {reason}; {HOW_TO_MAKE_CERTS}")]
    Invalid {
        what: &'static str,
        origin: String,
        reason: String,
    },

    #[error("{what} {origin} is not valid now: {reason}; make a new one with `tally certs`")]
    OutsideValidity {
        what: &'static str,
        origin: String,
        reason: String,
    },

    #[error(
        "certificate {cert} was not issued by the CA in {ca}: the two come from different \
         CAs; use the ca.pem written with this certificate"
    )]
    NotIssuedByCa { cert: String, ca: String },

    #[error("key {key} does not belong to certificate {cert}; use the .key written with it")]
    KeyMismatch { cert: String, key: String },

    #[error("the CA key does not belong to the CA certificate")]
    CaKeyMismatch,

    #[error(
        "certificate {subject} carries no tally identity: {reason}; a tally certificate needs \
         exactly one URI SAN tally://ROLE/NAME (see crates/tally-net/README.md)"
    )]
    NoIdentity { subject: String, reason: String },

    #[error("invalid identity {identity}: {reason}")]
    BadIdentity { identity: String, reason: String },

    #[error(
        "{} already exists; tally never overwrites certificates or keys: move it away or \
         choose another directory",
        path.display()
    )]
    Exists { path: PathBuf },

    #[error(
        "{} is missing while the other half of the CA is there; restore it, or move the \
         CA away to make a new one",
        missing.display()
    )]
    CaHalfPresent { missing: PathBuf },

    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("cannot make a certificate: {0}")]
    Generate(#[from] rcgen::Error),
}
