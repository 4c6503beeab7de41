//! The crate's one error type, [`Error`]: why the config, the journal, the double entry, a
//! submit or an offline file failed. Messages are lowercase without a trailing period and
//! byte-identical to those the command line printed before this crate had its own type
//! (tests and docs quote them). No error here is the source of another: each message carries
//! its cause's text, as `chain` writes it, so the binary's `{:#}` prints it once.
//!
//! What happened to each sheet (delivered, refused, pending) is not an error: it is told to
//! the [`Clerk`](crate::submit::Clerk) and summed up in [`Delivered`](crate::submit::Delivered).

use std::path::PathBuf;
use tally_files::error::chain;

/// Why a `tally village` command could not do its work.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or folder could not be read, written or created, or the runtime not started:
    /// what was being done, and the operating system's reason.
    #[error("{what}: {}", chain(.cause))]
    Io { what: String, cause: std::io::Error },
    /// The village config has problems: the whole list, one per line with the file, the line
    /// and the key.
    #[error("{0}")]
    Config(String),
    /// The definition the config names does not load.
    #[error("{file}, line {line}, definition: {cause}")]
    Definition {
        file: PathBuf,
        line: usize,
        cause: Box<tally_files::Error>,
    },
    /// A sheet file does not parse.
    #[error("{}", chain(.0))]
    SheetFile(tally_core::Error),
    /// `--round` is outside 1 to `ROUND_MAX`.
    #[error("--round {round}: a round is 1 to {max}")]
    Round { round: u32, max: u32 },
    /// A correction names a file that is not the slot's sheet, or there is nothing to correct
    /// (the message says which and what to do).
    #[error("{0}")]
    Correction(String),

    // The journal (journal.rs).
    /// Another `tally village` run of this unit holds the journal.
    #[error(
        "the journal {path} is in use by another `tally village` run of this unit; wait for it to end, then run this again"
    )]
    JournalInUse { path: PathBuf },
    /// The journal was made for another unit.
    #[error(
        "the journal {path} belongs to unit {stored}, not {unit}; give this unit its own journal folder in the config"
    )]
    JournalOfAnotherUnit {
        path: PathBuf,
        stored: String,
        unit: String,
    },
    /// The journal's schema version is newer than this binary reads.
    #[error(
        "the journal {path} was written by a newer tally (journal schema version {stored}; this binary reads up to version {supported}); run the tally release that wrote it, and keep this journal: it holds the unit's signed sheets"
    )]
    JournalTooNew {
        path: PathBuf,
        stored: u32,
        supported: u32,
    },
    /// The journal holds as many sheets as it may.
    #[error(
        "the journal {path} holds {max} sheets, its limit; a unit never needs more, so check what is being submitted"
    )]
    JournalFull { path: PathBuf, max: u64 },
    /// The journal's database failed.
    #[error("the journal {path}: {cause}")]
    Database { path: PathBuf, cause: redb::Error },
    /// What the journal holds is damaged (the message says where).
    #[error("{0}")]
    JournalDamaged(String),
    /// An update names a sheet the journal does not hold.
    #[error("the journal has no sheet {seq}")]
    NoSuchSheet { seq: u64 },
    /// A journal record could not be encoded or decoded.
    #[error("{what}: {}", chain(.cause))]
    Json {
        what: String,
        cause: serde_json::Error,
    },

    // Double entry (fill.rs).
    /// The prompts could not be read or written.
    #[error("{}", chain(.0))]
    Prompt(std::io::Error),
    /// The clerks' input ended, or gave no usable answer (nothing was written).
    #[error("{0}")]
    Fill(String),

    // Submitting (submit.rs).
    /// The township's address or the TLS settings do not make a channel.
    #[error("{what}{}", chain(.cause))]
    Transport {
        /// What was being done, with its `: `, or nothing.
        what: String,
        cause: tonic::transport::Error,
    },
    /// The township refused the call itself, for a reason retrying does not fix.
    #[error("township {address} refused the call: {code:?}: {message}")]
    CallRefused {
        address: String,
        code: tonic::Code,
        message: String,
    },
    /// The township's answer breaks the protocol (the message says how).
    #[error("{0}")]
    Answer(String),

    // Offline files and QR codes (offline.rs).
    /// A QR payload, a payload file, a picture or a bundle is not readable (the message names
    /// the file and says why).
    #[error("{0}")]
    Offline(String),
    /// A picture could not be encoded or decoded.
    #[error("{what}: {}", chain(.cause))]
    Image {
        what: String,
        cause: image::ImageError,
    },
    /// The QR code is too large to draw.
    #[error("the QR code is too large: {0}")]
    QrTooLarge(std::num::TryFromIntError),

    /// An error with what was being done before it (a payload's file and line, the sheets left
    /// pending by a failed submit).
    #[error("{context}: {cause}")]
    Context { context: String, cause: Box<Error> },
}

impl Error {
    /// The [`Error::Io`] of doing `what`, for `map_err`.
    pub(crate) fn io(what: String) -> impl FnOnce(std::io::Error) -> Error {
        move |cause| Error::Io { what, cause }
    }

    /// This error with `context` before it.
    pub(crate) fn context(self, context: String) -> Error {
        Error::Context {
            context,
            cause: Box::new(self),
        }
    }
}

/// What this crate's functions return.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    // Goal: a cause is printed once, inside the message, as anyhow's `{:#}` printed the same
    // chain before this type existed. Method: wrap an io error with what was being done and a
    // context; check the whole text, and that no error here reports a source.
    #[test]
    fn a_cause_is_printed_once_inside_the_message() {
        let io = std::io::Error::other("disk on fire");
        let e = Error::io("cannot write x".into())(io).context("2 sheets stay pending".into());
        assert_eq!(
            e.to_string(),
            "2 sheets stay pending: cannot write x: disk on fire"
        );
        assert!(std::error::Error::source(&e).is_none());
    }
}
