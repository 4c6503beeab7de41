//! The one error type of tally-core: what stops a definition loading, a sheet file being read,
//! or an apportionment being made. Outcomes the law foresees (a void contest, a tie, a
//! vacancy) are not errors: they are data in the result.

use crate::definition::DefinitionProblem;
use std::fmt;

/// Why tally-core could not do what it was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Every problem found in an election definition, in file order: the clerk fixes them all
    /// in one pass.
    #[error("{}", ProblemList(.0))]
    Definition(Vec<DefinitionProblem>),
    /// A clerk's sheet file that could not be read, with where and why.
    #[error("{file}{}: {message}", if location.is_empty() { String::new() } else { format!(", {location}") })]
    SheetFile {
        file: String,
        /// `line 7`; empty when the problem is with the sheet as a whole.
        location: String,
        message: String,
    },

    // Why an apportionment cannot be made.
    /// The method name is not one of [`Method::ALL`](crate::apportion::Method::ALL).
    #[error("unknown apportionment method {given:?}, valid methods are: {valid}", valid = crate::apportion::METHOD_NAMES)]
    UnknownMethod { given: String },
    /// More seats than [`MAX_SEATS`](crate::apportion::MAX_SEATS).
    #[error("{seats} seats requested, more than the limit of {limit}", limit = crate::apportion::MAX_SEATS)]
    TooManySeats { seats: u32 },
    /// More units than [`MAX_UNITS`](crate::apportion::MAX_UNITS).
    #[error("{units} units given, more than the limit of {limit}", limit = crate::apportion::MAX_UNITS)]
    TooManyUnits { units: usize },
    /// A weight above [`MAX_WEIGHT`](crate::apportion::MAX_WEIGHT).
    #[error(
        "unit {unit} has weight {weight}, more than the limit of {limit} for exact arithmetic",
        limit = crate::apportion::MAX_WEIGHT
    )]
    WeightTooLarge { unit: usize, weight: u64 },
    /// Bounds were given but not one per unit.
    #[error("bounds given for {bounds} units but there are {units} units")]
    BoundsLength { bounds: usize, units: usize },
    /// A unit's minimum is above its maximum.
    #[error("unit {unit} has minimum {min} above its maximum {max}")]
    MinAboveMax { unit: usize, min: u32, max: u32 },
    /// The minimums alone need more seats than there are.
    #[error("minimum seats sum to {minima}, more than the {seats} seats to apportion")]
    MinimaExceedSeats { minima: u64, seats: u32 },
    /// The units cannot take all the seats.
    #[error(
        "maximum seats sum to {maxima}, fewer than the {seats} seats to apportion \
         (a unit with weight zero counts at its minimum)"
    )]
    MaximaBelowSeats { maxima: u64, seats: u32 },
    /// Seats were requested but there is no unit to give them to.
    #[error("no units to apportion {seats} seats among")]
    NoUnits { seats: u32 },
    /// Every weight is zero, so only the minimums can be given.
    #[error("all weights are zero, so only {minima} of the {seats} seats can be given")]
    AllWeightsZero { seats: u32, minima: u64 },
    /// The threshold is not a fraction between 0 and 1.
    #[error("threshold {numerator}/{denominator} is not a fraction between 0 and 1")]
    InvalidThreshold { numerator: u64, denominator: u64 },
    /// Every list fell under the threshold.
    #[error(
        "no list reaches the threshold of {numerator}/{denominator} of the votes, so the {seats} seats cannot be allocated"
    )]
    NoListReachesThreshold {
        numerator: u64,
        denominator: u64,
        seats: u32,
    },
}

impl Error {
    /// The problems of a definition that did not load; empty for any other error.
    pub fn definition_problems(&self) -> &[DefinitionProblem] {
        match self {
            Error::Definition(problems) => problems,
            _ => &[],
        }
    }
}

/// A definition's problems under a header that counts them.
struct ProblemList<'a>(&'a [DefinitionProblem]);

impl fmt::Display for ProblemList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = self.0.len();
        writeln!(
            f,
            "the election definition has {count} problem{}:",
            if count == 1 { "" } else { "s" }
        )?;
        for problem in self.0 {
            writeln!(f, "  {problem}")?;
        }
        Ok(())
    }
}
