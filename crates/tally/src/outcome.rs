//! What a command found, and the exit code that tells it: every command returns an
//! [`Outcome`], and `cli::main` turns it into the process's exit status.

/// What a command found, for its exit code.
pub enum Outcome {
    /// Done, nothing to flag.
    Clean,
    /// Done, and there are findings the user must look at (refused sheets, warnings, conflicts).
    Findings,
    /// `tally village submit`: some sheets were refused (by the township, or here before
    /// sending); the others went through. Exit 1.
    Refused,
    /// `tally village submit`: some sheets are still pending after the retry window; they are
    /// safe in the journal and the same command sends them. Exit 2.
    Pending,
    /// `tally county`: the replica stopped on a failure of its own (its storage failed: 74,
    /// `tally_county::fault::EXIT_STORAGE`; another: 70), logged with the cause. Not 0, so
    /// systemd's `Restart=on-failure` starts it again.
    Stopped(u8),
}

pub const EXIT_FAILURE: u8 = 1;
pub const EXIT_FINDINGS: u8 = 3;
/// `tally village submit` only: sheets still pending, run it again.
pub const EXIT_PENDING: u8 = 2;
