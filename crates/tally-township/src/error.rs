//! The crate's one error type: why an aggregator did not start, and why its store failed.
//! Messages are lowercase without a trailing period; operators and tests quote them.

use std::net::SocketAddr;
use std::path::PathBuf;

use tally_core::ids::{KeyId, TownshipId};
use tally_net::Identity;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    // Starting: the config, the definition, the key, TLS and the listener.
    #[error("definition: {0}")]
    Definition(String),
    #[error("countersign_key {}: {message}", file.display())]
    KeyFile { file: PathBuf, message: String },
    #[error(
        "township_id {township:?} is not a township of the election definition; give the id the definition's townships.csv uses"
    )]
    UnknownTownship { township: TownshipId },
    #[error(
        "the election definition registers no countersigning key for township {township} (the public_key column of townships.csv); add the public key of this township's key, or the county will refuse every batch (E209)"
    )]
    KeyNotRegistered { township: TownshipId },
    #[error(
        "countersign_key is not the key the election definition registers for township {township}: the file's key has id {file_key}, the definition's {registered}; give the secret key made for this township, or the county refuses every batch (E209)"
    )]
    KeyMismatch {
        township: TownshipId,
        file_key: KeyId,
        registered: KeyId,
    },
    #[error("[tls]: {0}")]
    Tls(#[from] tally_net::CertError),
    #[error(
        "[tls] cert {} is {found}'s certificate, but this is township {township}'s aggregator; point cert and key at township-{township}.pem and township-{township}.key",
        cert.display()
    )]
    WrongCertificate {
        cert: PathBuf,
        found: Identity,
        township: TownshipId,
    },
    /// A store error met while opening the data directory, given the `data_dir: ` prefix.
    #[error("data_dir: {0}")]
    DataDir(Box<Error>),
    #[error(
        "listen = {address}: cannot bind ({source}); is another aggregator or program using the port?"
    )]
    Bind {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("the gRPC server: {0}")]
    Server(String),

    // The store: the data directory and its redb database.
    #[error("cannot create the data directory {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("township database: {0}")]
    Database(#[from] redb::Error),
    #[error(
        "{} is in use by another process (is this township's aggregator already running?); stop it first, or give this aggregator its own data_dir",
        path.display()
    )]
    InUse { path: PathBuf },
    #[error(
        "the data directory {} belongs to township {stored}, not to township {township}; check township_id and data_dir in the config (each township keeps its own data directory)",
        dir.display()
    )]
    OtherTownship {
        dir: PathBuf,
        stored: String,
        township: String,
    },
    #[error(
        "the data directory {} holds a county replica's database ({database}), not a township's; give the township aggregator a data_dir of its own",
        dir.display()
    )]
    CountyDirectory {
        dir: PathBuf,
        database: &'static str,
    },
    #[error(
        "{} was written by a newer tally (township schema version {stored}; this binary reads up to version {supported}); run the tally release that wrote it, or restore this data directory from a backup made by this release",
        path.display()
    )]
    SchemaTooNew {
        path: PathBuf,
        stored: u32,
        supported: u32,
    },
    #[error(
        "stored {what} is corrupt: {problem}; restore the data directory from a backup, or ask the county which sheets it holds"
    )]
    Corrupt { what: String, problem: String },
}
