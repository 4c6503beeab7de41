//! The crate's one error type, [`Error`]. Messages are lowercase without a trailing period and
//! byte-identical to those the demo printed before this crate had its own type. No error here
//! is the source of another: each message carries its cause's text, as `chain` writes it, so
//! the binary's `{:#}` prints it once.

use std::path::PathBuf;
use std::process::ExitStatus;
use tally_files::error::chain;

/// Why a local county could not be laid out, started or read.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file, folder, port or process could not be made, read or started: what was being
    /// done, and the operating system's reason.
    #[error("{what}: {}", chain(.cause))]
    Io { what: String, cause: std::io::Error },
    /// A child's log file could not be shared between its standard output and error.
    #[error("{}", chain(.0))]
    Log(std::io::Error),
    /// The folder to lay the county out in holds files already.
    #[error("{path} is not empty; give a new folder with --dir (the demo never overwrites)")]
    NotEmpty { path: PathBuf },
    /// The county's files could not be generated, written or read back.
    #[error(transparent)]
    Files(#[from] tally_files::Error),
    /// An identity or a certificate could not be made or read.
    #[error("{}", chain(.0))]
    Certificate(tally_net::CertError),
    /// The operator's TLS files do not make a client configuration.
    #[error("{0}")]
    OperatorTls(tally_net::CertError),
    /// The dev CA and certificates could not be written.
    #[error("cannot make certificates in {dir}: {}", chain(.cause))]
    Pki {
        dir: PathBuf,
        cause: tally_net::CertError,
    },
    /// An address or the TLS settings do not make a channel.
    #[error("{what}{}", chain(.cause))]
    Transport {
        /// What was being done, with its `: `, or nothing.
        what: String,
        cause: tonic::transport::Error,
    },
    /// A server ended on its own: its name, its exit status, and the end of its log.
    #[error("{name} stopped ({status}); the end of its log {log}:\n{tail}")]
    Stopped {
        name: String,
        status: ExitStatus,
        log: PathBuf,
        tail: String,
    },
    /// The servers did not come up in time (the message says which and where the logs are).
    #[error("{0}")]
    NotStarted(String),
    /// No replica answered a results read: each replica's answer, one per line.
    #[error("no replica answered a results read:\n  {}", .0.join("\n  "))]
    NoResults(Vec<String>),
}

impl Error {
    /// The [`Error::Io`] of doing `what`, for `map_err`.
    pub(crate) fn io(what: String) -> impl FnOnce(std::io::Error) -> Error {
        move |cause| Error::Io { what, cause }
    }
}

impl From<tally_net::CertError> for Error {
    fn from(cause: tally_net::CertError) -> Error {
        Error::Certificate(cause)
    }
}

/// What this crate's functions return.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    // Goal: a cause with sources of its own keeps its whole chain, joined by `: ` as anyhow's
    // `{:#}` joined it, and the error reports no source (so `{:#}` prints it once). Method: a
    // certificate that cannot be read, whose message and source both name the io error.
    #[test]
    fn a_cause_keeps_its_whole_chain() {
        let cause = tally_net::CertError::Read {
            what: "the CA certificate",
            path: PathBuf::from("ca.pem"),
            source: std::io::Error::other("gone"),
        };
        let e = Error::Pki {
            dir: PathBuf::from("pki"),
            cause,
        };
        assert_eq!(
            e.to_string(),
            "cannot make certificates in pki: cannot read the CA certificate ca.pem: gone: gone"
        );
        assert!(std::error::Error::source(&e).is_none());
    }
}
