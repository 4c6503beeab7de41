//! The crate's one error type, [`Error`]. Messages are lowercase without a trailing period,
//! name the file and say what to do, and are byte-identical to those the command line printed
//! before this crate had its own type (tests and docs quote them). No error here is the
//! source of another: each message carries its cause's text, as `chain` writes it, so the
//! binary's `{:#}` prints it once.

use std::path::PathBuf;

/// Why a definition, a key, a bundle or a generated county could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or folder could not be read, written, listed or created: what was being done,
    /// and the operating system's reason.
    #[error("{what}: {}", chain(.cause))]
    Io { what: String, cause: std::io::Error },
    /// The election definition does not load (every problem, one per line).
    #[error("{0}")]
    Definition(tally_core::Error),
    /// An amendment file does not apply: not an act file, too few signatures, or a change
    /// the definition refuses (every problem).
    #[error("{path}: {message}")]
    Amendment { path: PathBuf, message: String },
    /// A key file's first line is not hex.
    #[error(
        "{path}: expected the secret key as 64 hex digits on one line (as `tally keygen` writes it)"
    )]
    KeyNotHex { path: PathBuf },
    /// A key file's hex is not a 32-byte seed.
    #[error("{path}: the secret key is {bytes} bytes, expected 32")]
    KeyLength { path: PathBuf, bytes: usize },
    /// A secret is never written over an existing file.
    #[error(
        "{path} already exists; a key file is never overwritten, so move the old one away first"
    )]
    SecretExists { path: PathBuf },
    /// A folder given for `--sheets` holds no bundle.
    #[error("{path} holds no .sheets files")]
    NoBundles { path: PathBuf },
    /// A clerk's unsigned sheet file was given where a signed bundle belongs.
    #[error(
        "{path} is a sheet file a clerk fills in, not a signed bundle; sign it first with `tally sheet sign`: {}",
        chain(.cause)
    )]
    UnsignedSheetFile {
        path: PathBuf,
        cause: Box<tally_proto::Error>,
    },
    /// A file given as a bundle does not decode as one.
    #[error("{path} is not a readable sheet bundle: {}", chain(.cause))]
    NotABundle {
        path: PathBuf,
        cause: Box<tally_proto::Error>,
    },
    /// `tally gen` writes only into a new or empty folder.
    #[error("{path} is not empty; give a new folder to generate into")]
    NotEmpty { path: PathBuf },
    /// The synthetic county's parameters are refused (the generator's whole message).
    #[error("{0}")]
    Generate(String),
}

impl Error {
    /// The [`Error::Io`] of doing `what`, for `map_err`.
    pub(crate) fn io(what: String) -> impl FnOnce(std::io::Error) -> Error {
        move |cause| Error::Io { what, cause }
    }
}

/// What this crate's functions return.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error and each of its sources, joined by `: ` (as anyhow's `{:#}` prints a chain), so a
/// cause keeps the whole text the command line printed for it. Shared by the libraries built on
/// this one (the device, localnet), whose errors hold their causes' text the same way.
pub fn chain(cause: &dyn std::error::Error) -> String {
    let texts: Vec<String> = std::iter::successors(Some(cause), |e| e.source())
        .map(ToString::to_string)
        .collect();
    texts.join(": ")
}
