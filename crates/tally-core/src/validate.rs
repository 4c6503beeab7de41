//! Checks on one tally sheet, each with a stable code in the style of the Dutch Kiesraad's
//! Abacus: errors block the sheet (its numbers cannot all be true, or it is not what it claims
//! to be); warnings accept it and flag it for the election committee.
//!
//! Codes never change meaning once published; a retired code is not reused. Numbers are
//! grouped by range: E1xx the numbers and lists on a sheet, E2xx authenticity and identity
//! (which unit, which contest, which round; the signature layer in another crate uses E204 to
//! E206, and the township countersignature over a batch E208 and E209), W3xx warnings.
//!
//! | code | severity | found by | meaning |
//! |------|----------|----------|---------|
//! | E101 | error | sheet | void + valid ballots differ from ballots collected |
//! | E102 | error | sheet | more blank ballots than valid ballots |
//! | E103 | error | sheet, results | one person (candidate or written-in) has more votes than valid ballots; in the results, not counted |
//! | E104 | error | sheet | a candidate's approvals + disapprovals + abstentions exceed valid ballots |
//! | E105 | error | sheet, results | more marks in total than valid ballots times seats: the contest's seats on the sheet; the round's seats in the results (a revote or further election may be for fewer), not counted |
//! | E106 | error | sheet | more ballots issued than registered voters served |
//! | E107 | error | sheet | more proxy votes than ballots issued |
//! | E108 | error | sheet | candidate list is not the contest's (missing, unknown, listed twice) |
//! | E109 | error | sheet | disapprovals/abstentions given where not recorded, or missing where recorded |
//! | E110 | error | sheet | a mobile ballot box names fewer scrutineers than the rules ask |
//! | E111 | error | sheet | no scrutineer or no counter named |
//! | E112 | error | sheet | version 0, or `replaces_version` inconsistent with `version` |
//! | E113 | error | sheet | a write-in with an empty name |
//! | E114 | error | sheet | a write-in names a candidate on this ballot |
//! | E115 | error | sheet | the same write-in name listed twice |
//! | E116 | error | sheet | round 0 |
//! | E117 | error | sheet | a list, name, round or version over the bounds of `sheet.rs` |
//! | E118 | error | results | a later round's sheet does not list exactly that round's candidates; not counted |
//! | E119 | error | sheet | a write-in name that is not a plausible name: a control character, a character that is not a letter, mark, space, middle dot, hyphen or apostrophe, no letter first, or longer than `WRITE_IN_NAME_CHARS_MAX` characters |
//! | E201 | error | sheet | unknown polling unit |
//! | E202 | error | sheet | unknown contest |
//! | E203 | error | sheet | the unit does not serve the contest |
//! | E204 | error | signature layer | bad signature |
//! | E205 | error | signature layer | the signing key is not the unit's (another unit's, or no unit's) |
//! | E206 | error | signature layer | malformed envelope |
//! | E207 | error | results | a sheet for a round no outcome has called for; not counted |
//! | E208 | error | countersignature | the batch's countersignature does not verify |
//! | E209 | error | countersignature | the countersigning key is not this township's registered key, or the township has none |
//! | E210 | error | batch | the sheet's unit is not in the township that forwarded it |
//! | E211 | error | signature layer | the sheet was signed for another election, or the other mode (rehearsal, official) |
//! | E212 | error | signature layer | the sheet names no election: signed by the tally.v1 scheme |
//! | E213 | error | batch | the forwarding township's definition is not the one the county was founded with |
//! | E214 | error | signature layer | signed with a unit key that an amendment replaced |
//! | W301 | warning | sheet | more ballots collected than issued: voids the whole contest (Art 44) |
//! | W302 | warning | sheet | void ballots over `rules.void_ballots_warn_percent` of collected |
//! | W303 | warning | sheet | ballots collected short of issued by more than `rules.issued_collected_gap_warn_percent` |
//! | W304 | warning | sheet | the unit serves more registered voters than the whole constituency has |
//! | W305 | warning | results | a unit's turnout is more than `rules.turnout_outlier_warn_points` points from its contest's |
//! | W306 | warning | results | all units reported, but their registered voters do not add up to the contest's |
//!
//! All arithmetic is on integers: sums in `u128` so no sheet can overflow them, and percentages
//! by cross-multiplication.

use crate::definition::{Definition, NAME_LEN_MAX, UnitKind};
use crate::sheet::{
    CANDIDATES_MAX, ROUND_MAX, SIGNERS_MAX, TallySheet, VERSION_MAX, WRITE_IN_NAME_CHARS_MAX,
    WRITE_INS_MAX, counting_name,
};
use serde::Serialize;
use std::collections::BTreeSet;
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Severity {
    /// The sheet is blocked (or, for a finding of the results, not counted).
    Error,
    /// The sheet counts, and the committee is shown the finding.
    Warning,
}

/// A stable finding code. Serialized as its code (`"E101"`), never as the Rust name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Code {
    #[serde(rename = "E101")]
    BallotsNotBalanced,
    #[serde(rename = "E102")]
    BlankOverValid,
    #[serde(rename = "E103")]
    VotesOverValid,
    #[serde(rename = "E104")]
    CandidateMarksOverValid,
    #[serde(rename = "E105")]
    MarksOverSeats,
    #[serde(rename = "E106")]
    IssuedOverRegistered,
    #[serde(rename = "E107")]
    ProxiesOverIssued,
    #[serde(rename = "E108")]
    CandidateListMismatch,
    #[serde(rename = "E109")]
    DisapprovalsMismatch,
    #[serde(rename = "E110")]
    MobileBoxScrutineersTooFew,
    #[serde(rename = "E111")]
    SignersMissing,
    #[serde(rename = "E112")]
    VersionInconsistent,
    #[serde(rename = "E113")]
    WriteInNameEmpty,
    #[serde(rename = "E114")]
    WriteInIsCandidate,
    #[serde(rename = "E115")]
    WriteInDuplicate,
    #[serde(rename = "E116")]
    RoundZero,
    #[serde(rename = "E117")]
    OverBounds,
    #[serde(rename = "E118")]
    RoundBallotMismatch,
    #[serde(rename = "E119")]
    WriteInNameImplausible,
    #[serde(rename = "E201")]
    UnknownUnit,
    #[serde(rename = "E202")]
    UnknownContest,
    #[serde(rename = "E203")]
    UnitNotServingContest,
    #[serde(rename = "E204")]
    BadSignature,
    #[serde(rename = "E205")]
    KeyNotUnits,
    #[serde(rename = "E206")]
    MalformedEnvelope,
    #[serde(rename = "E207")]
    RoundNotCalled,
    #[serde(rename = "E208")]
    BadCountersignature,
    #[serde(rename = "E209")]
    CountersignKeyNotTownships,
    #[serde(rename = "E210")]
    UnitOfAnotherTownship,
    #[serde(rename = "E211")]
    AnotherElection,
    #[serde(rename = "E212")]
    NoElection,
    #[serde(rename = "E213")]
    DefinitionDiffers,
    #[serde(rename = "E214")]
    KeyReplaced,
    #[serde(rename = "E401")]
    DecisionNotNeeded,
    #[serde(rename = "E402")]
    OpenMatters,
    #[serde(rename = "E403")]
    TooFewSignatures,
    #[serde(rename = "E404")]
    AnotherCommittee,
    #[serde(rename = "E405")]
    RecountSheetInvalid,
    #[serde(rename = "E406")]
    ReopenWithoutReason,
    #[serde(rename = "E407")]
    ContestLocked,
    #[serde(rename = "E408")]
    ConfirmationStale,
    #[serde(rename = "W301")]
    CollectedOverIssued,
    #[serde(rename = "W302")]
    ManyVoidBallots,
    #[serde(rename = "W303")]
    IssuedCollectedGap,
    #[serde(rename = "W304")]
    RegisteredOverContest,
    #[serde(rename = "W305")]
    TurnoutOutlier,
    #[serde(rename = "W306")]
    RegisteredSumMismatch,
}

impl Code {
    /// Every code, in table order.
    pub const ALL: [Code; 47] = [
        Code::BallotsNotBalanced,
        Code::BlankOverValid,
        Code::VotesOverValid,
        Code::CandidateMarksOverValid,
        Code::MarksOverSeats,
        Code::IssuedOverRegistered,
        Code::ProxiesOverIssued,
        Code::CandidateListMismatch,
        Code::DisapprovalsMismatch,
        Code::MobileBoxScrutineersTooFew,
        Code::SignersMissing,
        Code::VersionInconsistent,
        Code::WriteInNameEmpty,
        Code::WriteInIsCandidate,
        Code::WriteInDuplicate,
        Code::RoundZero,
        Code::OverBounds,
        Code::RoundBallotMismatch,
        Code::WriteInNameImplausible,
        Code::UnknownUnit,
        Code::UnknownContest,
        Code::UnitNotServingContest,
        Code::BadSignature,
        Code::KeyNotUnits,
        Code::MalformedEnvelope,
        Code::RoundNotCalled,
        Code::BadCountersignature,
        Code::CountersignKeyNotTownships,
        Code::UnitOfAnotherTownship,
        Code::AnotherElection,
        Code::NoElection,
        Code::DefinitionDiffers,
        Code::KeyReplaced,
        Code::DecisionNotNeeded,
        Code::OpenMatters,
        Code::TooFewSignatures,
        Code::AnotherCommittee,
        Code::RecountSheetInvalid,
        Code::ReopenWithoutReason,
        Code::ContestLocked,
        Code::ConfirmationStale,
        Code::CollectedOverIssued,
        Code::ManyVoidBallots,
        Code::IssuedCollectedGap,
        Code::RegisteredOverContest,
        Code::TurnoutOutlier,
        Code::RegisteredSumMismatch,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Code::BallotsNotBalanced => "E101",
            Code::BlankOverValid => "E102",
            Code::VotesOverValid => "E103",
            Code::CandidateMarksOverValid => "E104",
            Code::MarksOverSeats => "E105",
            Code::IssuedOverRegistered => "E106",
            Code::ProxiesOverIssued => "E107",
            Code::CandidateListMismatch => "E108",
            Code::DisapprovalsMismatch => "E109",
            Code::MobileBoxScrutineersTooFew => "E110",
            Code::SignersMissing => "E111",
            Code::VersionInconsistent => "E112",
            Code::WriteInNameEmpty => "E113",
            Code::WriteInIsCandidate => "E114",
            Code::WriteInDuplicate => "E115",
            Code::RoundZero => "E116",
            Code::OverBounds => "E117",
            Code::RoundBallotMismatch => "E118",
            Code::WriteInNameImplausible => "E119",
            Code::UnknownUnit => "E201",
            Code::UnknownContest => "E202",
            Code::UnitNotServingContest => "E203",
            Code::BadSignature => "E204",
            Code::KeyNotUnits => "E205",
            Code::MalformedEnvelope => "E206",
            Code::RoundNotCalled => "E207",
            Code::BadCountersignature => "E208",
            Code::CountersignKeyNotTownships => "E209",
            Code::UnitOfAnotherTownship => "E210",
            Code::AnotherElection => "E211",
            Code::NoElection => "E212",
            Code::DefinitionDiffers => "E213",
            Code::KeyReplaced => "E214",
            Code::DecisionNotNeeded => "E401",
            Code::OpenMatters => "E402",
            Code::TooFewSignatures => "E403",
            Code::AnotherCommittee => "E404",
            Code::RecountSheetInvalid => "E405",
            Code::ReopenWithoutReason => "E406",
            Code::ContestLocked => "E407",
            Code::ConfirmationStale => "E408",
            Code::CollectedOverIssued => "W301",
            Code::ManyVoidBallots => "W302",
            Code::IssuedCollectedGap => "W303",
            Code::RegisteredOverContest => "W304",
            Code::TurnoutOutlier => "W305",
            Code::RegisteredSumMismatch => "W306",
        }
    }

    pub fn severity(self) -> Severity {
        if self.as_str().starts_with('W') {
            Severity::Warning
        } else {
            Severity::Error
        }
    }

    pub fn summary(self) -> &'static str {
        match self {
            Code::BallotsNotBalanced => "void plus valid ballots differ from ballots collected",
            Code::BlankOverValid => "more blank ballots than valid ballots",
            Code::VotesOverValid => "one person has more votes than there are valid ballots",
            Code::CandidateMarksOverValid => {
                "a candidate's approvals, disapprovals and abstentions exceed the valid ballots"
            }
            Code::MarksOverSeats => "more marks in total than valid ballots times seats",
            Code::IssuedOverRegistered => "more ballots issued than registered voters served",
            Code::ProxiesOverIssued => "more proxy votes than ballots issued",
            Code::CandidateListMismatch => "the candidate list is not the contest's",
            Code::DisapprovalsMismatch => {
                "disapprovals and abstentions do not match what the definition records"
            }
            Code::MobileBoxScrutineersTooFew => "a mobile ballot box names too few scrutineers",
            Code::SignersMissing => "no scrutineer or no counter is named",
            Code::VersionInconsistent => "the version and the version it replaces do not fit",
            Code::WriteInNameEmpty => "a written-in person has no name",
            Code::WriteInIsCandidate => "a written-in name is a candidate on this ballot",
            Code::WriteInDuplicate => "the same written-in name is listed twice",
            Code::RoundZero => "the round is 0; rounds start at 1",
            Code::OverBounds => "a list, name, round or version is over its bound",
            Code::RoundBallotMismatch => {
                "the sheet does not list exactly the candidates of its round; not counted"
            }
            Code::WriteInNameImplausible => "a written-in name is not a plausible name",
            Code::UnknownUnit => "the polling unit is not in the election definition",
            Code::UnknownContest => "the contest is not in the election definition",
            Code::UnitNotServingContest => "the polling unit does not serve this contest",
            Code::BadSignature => "the signature does not verify",
            Code::KeyNotUnits => "the signing key is not the polling unit's",
            Code::MalformedEnvelope => "the signed envelope is malformed",
            Code::RoundNotCalled => "a sheet for a round no outcome has called for; not counted",
            Code::BadCountersignature => "the batch's countersignature does not verify",
            Code::CountersignKeyNotTownships => {
                "the countersigning key is not the township's registered key, or the township has none"
            }
            Code::UnitOfAnotherTownship => {
                "the sheet's unit is not in the township that forwarded it"
            }
            Code::AnotherElection => "the sheet was signed for another election or mode",
            Code::NoElection => "the sheet names no election (signed by the tally.v1 scheme)",
            Code::DefinitionDiffers => {
                "the forwarding township's definition is not the county's founding one"
            }
            Code::KeyReplaced => "signed with a unit key that an amendment replaced",
            Code::DecisionNotNeeded => {
                "a committee decision on a matter that is not open (or given twice, or without a reason)"
            }
            Code::OpenMatters => "a confirmation of a contest with open matters",
            Code::TooFewSignatures => {
                "a committee act with fewer valid signatures than its committee's threshold"
            }
            Code::AnotherCommittee => {
                "a committee act signed by an official of another committee than the one it belongs to"
            }
            Code::RecountSheetInvalid => {
                "the committee's recounted sheet fails a check of its figures"
            }
            Code::ReopenWithoutReason => {
                "a reopening without a reason, or of a contest that is not confirmed"
            }
            Code::ContestLocked => {
                "the contest is confirmed and locked; a decision or amendment needs a reopening first"
            }
            Code::ConfirmationStale => {
                "the confirmation is not for this record's result, chain head or log index"
            }
            Code::CollectedOverIssued => {
                "more ballots collected than issued at a unit; the contest is void (Art 44) if its totals show it too"
            }
            Code::ManyVoidBallots => "many void ballots",
            Code::IssuedCollectedGap => "many issued ballots were not collected",
            Code::RegisteredOverContest => {
                "the unit serves more registered voters than the constituency has"
            }
            Code::TurnoutOutlier => "a unit's turnout is far from its constituency's",
            Code::RegisteredSumMismatch => {
                "the units' registered voters do not add up to the constituency's"
            }
        }
    }

    /// What a finding with this code does, for the table of findings: an error refuses the
    /// sheet (E1xx numbers that cannot all be true, E2xx identity and authenticity) or the
    /// committee act (E4xx); a warning counts the sheet and flags it for the committee, and
    /// W301 and W306 keep its contest from being confirmed until the committee reviews them.
    pub fn effect(self) -> &'static str {
        match self.as_str().as_bytes()[..2] {
            [b'E', b'1'] => "refuses the sheet (its numbers)",
            [b'E', b'2'] => "refuses the sheet (who signed it, for what)",
            [b'E', b'4'] => "refuses the committee act; nothing changes",
            _ if crate::committee::BLOCKING_WARNINGS.contains(&self) => {
                "counts the sheet; blocks the contest's confirmation until reviewed"
            }
            _ => "counts the sheet; shown to the committee",
        }
    }
}

/// The table of findings, as `docs/findings.md` holds it (a test keeps the two the same):
/// every code with what it means and what it does.
pub fn findings_table() -> String {
    let mut out = String::from(
        "# Findings\n\nEvery check has a stable code. This table is generated from \
         `crates/tally-core/src/validate.rs` (`tally codes` prints it; a test keeps this file \
         the same).\n\n| code | meaning | effect |\n|---|---|---|\n",
    );
    for code in Code::ALL {
        out.push_str(&format!(
            "| {} | {} | {} |\n",
            code.as_str(),
            code.summary(),
            code.effect()
        ));
    }
    out
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One problem found on a sheet (or, from the results, in a contest).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub code: Code,
    /// [`TallySheet::label`] of the sheet, or `contest X, round n` for a contest-level finding.
    pub sheet: String,
    /// The field, as the sheet names it: `ballots_valid`, `candidates[T01-C01-2].approvals`.
    pub field: String,
    /// Names the numbers involved and what to do.
    pub message: String,
}

impl Finding {
    pub fn severity(&self) -> Severity {
        self.code.severity()
    }
    pub fn is_error(&self) -> bool {
        self.severity() == Severity::Error
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}: {}: {}",
            self.code, self.sheet, self.field, self.message
        )
    }
}

/// Whether any finding blocks the sheet.
pub fn has_errors(findings: &[Finding]) -> bool {
    findings.iter().any(Finding::is_error)
}

/// The blocking findings of one sheet as one refusal: the first error's code, and every
/// error as `CODE field: message`, joined with `; `. `None` when nothing blocks the sheet.
pub fn refusal(findings: &[Finding]) -> Option<(Code, String)> {
    let first = findings.iter().find(|f| f.is_error())?;
    let message = findings
        .iter()
        .filter(|f| f.is_error())
        .map(|f| format!("{} {}: {}", f.code.as_str(), f.field, f.message))
        .collect::<Vec<_>>()
        .join("; ");
    Some((first.code, message))
}

struct Findings {
    sheet: String,
    list: Vec<Finding>,
}

impl Findings {
    fn add(&mut self, code: Code, field: impl Into<String>, message: impl Into<String>) {
        self.list.push(Finding {
            code,
            sheet: self.sheet.clone(),
            field: field.into(),
            message: message.into(),
        });
    }
}

/// `a * 100 > percent * b`: whether `a` is more than `percent`% of `b`, exactly.
pub(crate) fn over_percent(a: u64, percent: u32, b: u64) -> bool {
    u128::from(a) * 100 > u128::from(percent) * u128::from(b)
}

/// Why a written-in name is not a plausible person's name (E119), or `None`. `raw` is the
/// name as signed, `name` its [`counting_name`] (not empty).
///
/// A name is letters (any script: Han, Latin, Cyrillic, Arabic, Tibetan, ...) and combining
/// marks, with single spaces, middle dots, hyphens, apostrophes and Tibetan tshegs between
/// them, and begins with a letter. That admits `刘华`, `欧阳娜娜`, `阿卜杜拉·艾力`, `María José`, `Zoë`,
/// `O'Brien`, `Jean-Luc`, and refuses digits, punctuation, symbols and emoji, invisible
/// format characters (zero-width spaces, right-to-left overrides, which make a name look like
/// another), and any control character: a tab or line break in a name is a software fault or
/// an attempt on the CSV and the logs, so it is refused even though the counting name would
/// have turned it into a space. A name that begins with `=`, `+`, `-` or `@` cannot pass,
/// which the spreadsheets that open `tally`'s CSV are glad of (they escape it too).
fn implausible_name(raw: &str, name: &str) -> Option<String> {
    if let Some(c) = raw.chars().find(|c| c.is_control()) {
        return Some(format!(
            "it contains the control character U+{:04X}",
            u32::from(c)
        ));
    }
    let length = name.chars().count();
    if length > WRITE_IN_NAME_CHARS_MAX {
        return Some(format!(
            "it is {length} characters long, more than {WRITE_IN_NAME_CHARS_MAX}"
        ));
    }
    let in_name = |c: char| {
        c.is_alphabetic()
            || unicode_normalization::char::is_combining_mark(c)
            // The Tibetan tsheg (U+0F0B, U+0F0C) separates syllables as a space does.
            || matches!(c, ' ' | '\u{00B7}' | '-' | '\'' | '\u{0F0B}' | '\u{0F0C}')
    };
    if let Some(c) = name.chars().find(|c| !in_name(*c)) {
        return Some(format!(
            "it contains {c:?} (U+{:04X}), which is not a letter, a space, a middle dot, a hyphen or an apostrophe",
            u32::from(c)
        ));
    }
    if !name.starts_with(char::is_alphabetic) {
        return Some("it does not begin with a letter".to_owned());
    }
    None
}

/// Checks one sheet against the definition. Returns every finding, errors and warnings, in
/// a fixed order (identity, version, bounds, ballots, candidates, write-ins, signers). The
/// sheet may be counted only if no finding is an error.
///
/// For round 1 the sheet must list exactly the contest's candidates. A later round's ballot
/// carries only that round's candidates (the outcome of the round before decides them, which
/// this function does not know): it must list known candidates once each, and the results
/// check that the list is exactly the round's (E118).
pub fn check_sheet(definition: &Definition, sheet: &TallySheet) -> Vec<Finding> {
    let mut out = Findings {
        sheet: sheet.label(),
        list: Vec::new(),
    };
    let rules = &definition.rules;

    // Identity.
    let unit = definition.unit(&sheet.unit);
    let contest = definition.contest(&sheet.contest);
    if unit.is_none() {
        out.add(
            Code::UnknownUnit,
            "unit",
            format!(
                "polling unit {} is not in the election definition; check the unit id on the sheet",
                sheet.unit
            ),
        );
    }
    if contest.is_none() {
        out.add(
            Code::UnknownContest,
            "contest",
            format!(
                "contest {} is not in the election definition; check the contest id on the sheet",
                sheet.contest
            ),
        );
    }
    if let (Some(unit), Some(contest)) = (unit, contest)
        && !unit.contests.contains(&contest.id)
    {
        out.add(
            Code::UnitNotServingContest,
            "contest",
            format!(
                "polling unit {} does not serve contest {}; it serves {}",
                unit.id,
                contest.id,
                unit.contests
                    .iter()
                    .map(|c| c.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        );
    }

    // Round and version.
    if sheet.round.0 == 0 {
        out.add(
            Code::RoundZero,
            "round",
            "is 0; the election day vote is round 1",
        );
    } else if sheet.round.0 > ROUND_MAX {
        out.add(
            Code::OverBounds,
            "round",
            format!("is {}, more than {ROUND_MAX}", sheet.round.0),
        );
    }
    if sheet.version > VERSION_MAX {
        out.add(
            Code::OverBounds,
            "version",
            format!("is {}, more than {VERSION_MAX}", sheet.version),
        );
    }
    match (sheet.version, sheet.replaces_version) {
        (0, _) => out.add(
            Code::VersionInconsistent,
            "version",
            "is 0; the first report is version 1",
        ),
        (1, None) => {}
        (1, Some(r)) => out.add(
            Code::VersionInconsistent,
            "replaces_version",
            format!("is {r}, but version 1 is the first report and replaces nothing"),
        ),
        (v, None) => out.add(
            Code::VersionInconsistent,
            "replaces_version",
            format!(
                "is missing; version {v} is a correction and must name the version it replaces"
            ),
        ),
        (v, Some(r)) if r == 0 || r >= v => out.add(
            Code::VersionInconsistent,
            "replaces_version",
            format!(
                "is {r}, but version {v} can only replace a version from 1 to {}",
                v - 1
            ),
        ),
        _ => {}
    }

    // Bounds on lists and names.
    if sheet.candidates.len() > CANDIDATES_MAX {
        out.add(
            Code::OverBounds,
            "candidates",
            format!(
                "lists {} candidates, more than {CANDIDATES_MAX}",
                sheet.candidates.len()
            ),
        );
    }
    if sheet.write_ins.len() > WRITE_INS_MAX {
        out.add(
            Code::OverBounds,
            "write_ins",
            format!(
                "lists {} names, more than {WRITE_INS_MAX}; enter the rest as void if they are",
                sheet.write_ins.len()
            ),
        );
    }
    let signers = sheet.scrutineers.len() + sheet.counters.len();
    if signers > SIGNERS_MAX {
        out.add(
            Code::OverBounds,
            "scrutineers",
            format!("{signers} scrutineers and counters, more than {SIGNERS_MAX}"),
        );
    }
    for (field, names) in [
        ("scrutineers", &sheet.scrutineers),
        ("counters", &sheet.counters),
    ] {
        for (i, name) in names.iter().enumerate() {
            if name.len() > NAME_LEN_MAX {
                out.add(
                    Code::OverBounds,
                    format!("{field}[{i}]"),
                    format!("is {} bytes long, more than {NAME_LEN_MAX}", name.len()),
                );
            }
        }
    }
    for (i, w) in sheet.write_ins.iter().enumerate() {
        if w.name.len() > NAME_LEN_MAX {
            out.add(
                Code::OverBounds,
                format!("write_ins[{i}].name"),
                format!("is {} bytes long, more than {NAME_LEN_MAX}", w.name.len()),
            );
        }
    }

    // Ballots.
    let void_plus_valid = u128::from(sheet.ballots_void) + u128::from(sheet.ballots_valid);
    if void_plus_valid != u128::from(sheet.ballots_collected) {
        out.add(
            Code::BallotsNotBalanced,
            "ballots_valid",
            format!(
                "void {} + valid {} = {void_plus_valid}, but {} ballots were collected; recount and correct the sheet",
                sheet.ballots_void, sheet.ballots_valid, sheet.ballots_collected
            ),
        );
    }
    if sheet.ballots_blank > sheet.ballots_valid {
        out.add(
            Code::BlankOverValid,
            "ballots_blank",
            format!(
                "{} blank ballots, but only {} valid ones; a blank ballot is a valid ballot with no mark, correct the sheet",
                sheet.ballots_blank, sheet.ballots_valid
            ),
        );
    }
    if sheet.ballots_issued > sheet.registered_voters {
        out.add(
            Code::IssuedOverRegistered,
            "ballots_issued",
            format!(
                "{} ballots issued to {} registered voters served; check both numbers against the roll",
                sheet.ballots_issued, sheet.registered_voters
            ),
        );
    }
    if sheet.proxies > sheet.ballots_issued {
        out.add(
            Code::ProxiesOverIssued,
            "proxies",
            format!(
                "{} proxy votes, but only {} ballots issued; every proxy vote is an issued ballot, correct the sheet",
                sheet.proxies, sheet.ballots_issued
            ),
        );
    }
    if sheet.ballots_collected > sheet.ballots_issued {
        out.add(
            Code::CollectedOverIssued,
            "ballots_collected",
            format!(
                "{} ballots collected but only {} issued at this unit; Art 44 is applied to contest {}'s totals over all its units: if they too show more ballots collected than issued, the contest's vote is void and held again (the result says so); check this sheet against the paper",
                sheet.ballots_collected, sheet.ballots_issued, sheet.contest
            ),
        );
    }
    if over_percent(
        sheet.ballots_void,
        rules.void_ballots_warn_percent,
        sheet.ballots_collected,
    ) {
        out.add(
            Code::ManyVoidBallots,
            "ballots_void",
            format!(
                "{} of {} collected ballots are void, more than {}%; the committee should look at them",
                sheet.ballots_void, sheet.ballots_collected, rules.void_ballots_warn_percent
            ),
        );
    }
    // The other direction (collected over issued) is W301, which says more.
    if sheet.ballots_issued > sheet.ballots_collected
        && over_percent(
            sheet.ballots_issued - sheet.ballots_collected,
            rules.issued_collected_gap_warn_percent,
            sheet.ballots_issued,
        )
    {
        out.add(
            Code::IssuedCollectedGap,
            "ballots_collected",
            format!(
                "{} ballots issued but only {} collected: {} missing, more than {}% of issued; the committee should ask why",
                sheet.ballots_issued,
                sheet.ballots_collected,
                sheet.ballots_issued - sheet.ballots_collected,
                rules.issued_collected_gap_warn_percent
            ),
        );
    }
    if let Some(contest) = contest
        && sheet.registered_voters > contest.registered_voters
    {
        out.add(
                Code::RegisteredOverContest,
                "registered_voters",
                format!(
                    "the unit served {} registered voters, but constituency {} has only {}; check the roll",
                    sheet.registered_voters, contest.id, contest.registered_voters
                ),
            );
    }

    // Candidates.
    let valid = sheet.ballots_valid;
    let mut marks: u128 = 0;
    let mut listed = BTreeSet::new();
    for (i, count) in sheet.candidates.iter().enumerate() {
        let field = format!("candidates[{}]", count.candidate);
        marks += u128::from(count.approvals);
        if let Some(contest) = contest
            && !contest.candidates.iter().any(|c| c.id == count.candidate)
        {
            out.add(
                Code::CandidateListMismatch,
                &field,
                format!(
                    "entry {i}: {} is not a candidate of contest {}; remove it",
                    count.candidate, contest.id
                ),
            );
        }
        if !listed.insert(&count.candidate) {
            out.add(
                Code::CandidateListMismatch,
                &field,
                format!(
                    "entry {i}: {} is listed twice; list each candidate once",
                    count.candidate
                ),
            );
        }
        if count.approvals > valid {
            out.add(
                Code::VotesOverValid,
                format!("{field}.approvals"),
                format!(
                    "{} approvals, but only {valid} valid ballots; correct the sheet",
                    count.approvals
                ),
            );
        }
        match (
            rules.record_disapprovals,
            count.disapprovals,
            count.abstentions,
        ) {
            (true, Some(d), Some(a)) => {
                let total = u128::from(count.approvals) + u128::from(d) + u128::from(a);
                if total > u128::from(valid) {
                    out.add(
                        Code::CandidateMarksOverValid,
                        &field,
                        format!(
                            "approvals {} + disapprovals {d} + abstentions {a} = {total}, more than {valid} valid ballots; correct the sheet",
                            count.approvals
                        ),
                    );
                }
            }
            (true, _, _) => out.add(
                Code::DisapprovalsMismatch,
                &field,
                "disapprovals or abstentions missing; this election records both for every candidate",
            ),
            (false, None, None) => {}
            (false, _, _) => out.add(
                Code::DisapprovalsMismatch,
                &field,
                "gives disapprovals or abstentions, which this election does not record; leave them out",
            ),
        }
    }
    if let Some(contest) = contest
        && sheet.round == crate::sheet::Round::FIRST
    {
        for c in &contest.candidates {
            if !listed.contains(&c.id) {
                out.add(
                        Code::CandidateListMismatch,
                        "candidates",
                        format!(
                            "candidate {} ({}) is missing; list every candidate on the ballot, with 0 if none",
                            c.id, c.name
                        ),
                    );
            }
        }
    }

    // Write-ins. Each is checked, compared and counted under its counting name (NFC, spaces
    // collapsed, separators folded: `sheet::counting_name`); the signed name is not changed.
    let mut write_in_names = BTreeSet::new();
    for (i, w) in sheet.write_ins.iter().enumerate() {
        let field = format!("write_ins[{i}]");
        let name = counting_name(&w.name);
        marks += u128::from(w.votes);
        if name.is_empty() {
            out.add(
                Code::WriteInNameEmpty,
                format!("{field}.name"),
                format!(
                    "has {} votes but no name; write the name as on the ballots",
                    w.votes
                ),
            );
            continue;
        }
        // A name over the byte bound is E117 already; one problem, one finding.
        if w.name.len() <= NAME_LEN_MAX
            && let Some(problem) = implausible_name(&w.name, &name)
        {
            out.add(
                Code::WriteInNameImplausible,
                format!("{field}.name"),
                format!(
                    "{:?} in contest {} is not a plausible name: {problem}; write the name as on the ballots, in letters (a middle dot · between the parts of a transliterated name; hyphens, apostrophes and single spaces inside a name)",
                    w.name, sheet.contest
                ),
            );
        }
        if let Some(contest) = contest
            && let Some(c) = contest
                .candidates
                .iter()
                .find(|c| counting_name(&c.name) == name && listed.contains(&c.id))
        {
            out.add(
                    Code::WriteInIsCandidate,
                    format!("{field}.name"),
                    format!(
                        "{name:?} is candidate {} on this ballot; those {} votes belong to the candidate, add them to candidates[{}].approvals",
                        c.id, w.votes, c.id
                    ),
                );
        }
        // Two entries with one counting name are one person listed twice, however each was
        // typed: they would be added up under one name anyway.
        if !write_in_names.insert(name.clone()) {
            out.add(
                Code::WriteInDuplicate,
                format!("{field}.name"),
                format!("{name:?} is listed twice; add up the votes in one entry"),
            );
        }
        if w.votes > valid {
            out.add(
                Code::VotesOverValid,
                format!("{field}.votes"),
                format!(
                    "{name:?} has {} votes, but only {valid} valid ballots; correct the sheet",
                    w.votes
                ),
            );
        }
    }
    if let Some(contest) = contest {
        let limit = u128::from(valid) * u128::from(contest.seats);
        if marks > limit {
            out.add(
                Code::MarksOverSeats,
                "candidates",
                format!(
                    "{marks} approvals and written-in votes in total, but {valid} valid ballots × {} seats = {limit}; a ballot marking more people than seats is void, recount",
                    contest.seats
                ),
            );
        }
    }

    // Signers.
    let named = |names: &[String]| names.iter().filter(|n| !n.trim().is_empty()).count();
    let scrutineers = named(&sheet.scrutineers);
    if scrutineers == 0 || named(&sheet.counters) == 0 {
        out.add(
            Code::SignersMissing,
            if scrutineers == 0 {
                "scrutineers"
            } else {
                "counters"
            },
            "names nobody; the scrutineers (监票人) and counters (计票人) who signed must be named (Art 43)",
        );
    }
    if let Some(unit) = unit {
        let min = rules.mobile_box_scrutineers_min as usize;
        if unit.kind == UnitKind::MobileBox && scrutineers < min {
            out.add(
                Code::MobileBoxScrutineersTooFew,
                "scrutineers",
                format!(
                    "a mobile ballot box (流动票箱) names {scrutineers} scrutineers; this election asks for at least {min}"
                ),
            );
        }
    }

    out.list
}

#[cfg(test)]
mod tests {
    // Goal: docs/findings.md is the table the code gives (every code, its meaning and what it
    // does), so the document cannot drift from validate.rs. Method: compare the two whole;
    // when they differ, `cargo run -p tally -- codes > docs/findings.md` writes it again.
    #[test]
    fn docs_findings_md_is_the_table_of_the_code() {
        let doc = include_str!("../../../docs/findings.md");
        assert!(
            doc == super::findings_table(),
            "docs/findings.md differs from the code's table: run `cargo run -p tally -- codes > docs/findings.md`"
        );
    }

    use super::*;
    use crate::results::testkit::{ContestSpec, UnitSpec, clean_sheet, definition};
    use crate::sheet::{CandidateCount, Round, WriteIn};

    fn fixture() -> Definition {
        definition(
            &[
                ContestSpec::new("C1", 2, 3, 1000),
                ContestSpec::new("C2", 1, 2, 500),
            ],
            &[
                UnitSpec::new("U1", "station", &["C1"]),
                UnitSpec::new("U2", "mobile-box", &["C1"]),
                UnitSpec::new("U3", "station", &["C2"]),
            ],
            "",
        )
    }

    fn codes(definition: &Definition, sheet: &TallySheet) -> Vec<Code> {
        check_sheet(definition, sheet)
            .into_iter()
            .map(|f| f.code)
            .collect()
    }

    fn assert_only(definition: &Definition, sheet: &TallySheet, expected: &[Code]) {
        let mut got = codes(definition, sheet);
        got.dedup();
        assert_eq!(got, expected, "{:#?}", check_sheet(definition, sheet));
    }

    // Goal: a clean sheet has no findings, and the code table is complete and stable.
    // Method: check the fixture's clean sheet; check every code's string is unique and in
    // range for its severity.
    #[test]
    fn clean_sheet_and_code_table() {
        let d = fixture();
        let sheet = clean_sheet(&d, "U1", "C1");
        assert_eq!(check_sheet(&d, &sheet), vec![]);
        let strings: BTreeSet<_> = Code::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(strings.len(), Code::ALL.len());
        for code in Code::ALL {
            let expected_prefix = match code.severity() {
                Severity::Error => 'E',
                Severity::Warning => 'W',
            };
            assert!(code.as_str().starts_with(expected_prefix));
            assert!(!code.summary().is_empty());
            assert_eq!(
                serde_json::to_string(&code).unwrap(),
                format!("\"{}\"", code.as_str())
            );
        }
    }

    // Goal: the display form names code, sheet, field and numbers.
    // Method: unbalance a clean sheet and format the finding.
    #[test]
    fn e101_void_plus_valid() {
        let d = fixture();
        let mut s = clean_sheet(&d, "U1", "C1");
        s.registered_voters = 1000;
        s.ballots_collected = 615;
        s.ballots_issued = 615;
        s.ballots_void = 12;
        s.ballots_valid = 600;
        let f = check_sheet(&d, &s);
        assert_eq!(f.len(), 1, "{f:#?}");
        assert_eq!(
            f[0].to_string(),
            "E101 unit U1, contest C1, round 1, version 1: ballots_valid: void 12 + valid 600 = 612, but 615 ballots were collected; recount and correct the sheet"
        );
        assert!(f[0].is_error());
    }

    // Goal: each numeric check fires on the number it guards, and only it.
    // Method: change one field of a clean sheet per case.
    #[test]
    fn numeric_errors() {
        let d = fixture();
        let clean = || clean_sheet(&d, "U1", "C1");

        let mut s = clean();
        s.ballots_blank = s.ballots_valid + 1;
        assert_only(&d, &s, &[Code::BlankOverValid]);

        let mut s = clean();
        s.candidates[0].approvals = s.ballots_valid + 1;
        assert_only(&d, &s, &[Code::VotesOverValid]);

        let mut s = clean();
        for c in &mut s.candidates {
            c.approvals = 0;
        }
        s.write_ins = vec![WriteIn {
            name: "王五".into(),
            votes: s.ballots_valid + 1,
        }];
        assert_only(&d, &s, &[Code::VotesOverValid]);

        let mut s = clean();
        for c in &mut s.candidates {
            c.approvals = s.ballots_valid * 2 / 3 + 1;
        }
        assert_only(&d, &s, &[Code::MarksOverSeats]);

        let mut s = clean();
        s.registered_voters = s.ballots_issued - 1;
        assert_only(&d, &s, &[Code::IssuedOverRegistered]);

        let mut s = clean();
        s.proxies = s.ballots_issued + 1;
        assert_only(&d, &s, &[Code::ProxiesOverIssued]);
    }

    // Goal: disapprovals and abstentions follow the definition's `record_disapprovals`, and
    // their sum with approvals is bounded by valid ballots.
    // Method: a definition that records them, and one that does not.
    #[test]
    fn disapprovals() {
        let d = fixture();
        let mut s = clean_sheet(&d, "U1", "C1");
        s.candidates[0].disapprovals = Some(1);
        assert_only(&d, &s, &[Code::DisapprovalsMismatch]);

        let recording = definition(
            &[ContestSpec::new("C1", 2, 3, 1000)],
            &[UnitSpec::new("U1", "station", &["C1"])],
            "record_disapprovals = true",
        );
        let mut s = clean_sheet(&recording, "U1", "C1");
        assert_eq!(check_sheet(&recording, &s), vec![]);
        s.candidates[1].abstentions = None;
        assert_only(&recording, &s, &[Code::DisapprovalsMismatch]);
        let mut s = clean_sheet(&recording, "U1", "C1");
        s.candidates[1].disapprovals = Some(s.ballots_valid);
        assert_only(&recording, &s, &[Code::CandidateMarksOverValid]);
    }

    // Goal: the candidate list must be exactly the contest's in round 1; in later rounds a
    // subset is fine but unknown and duplicate entries are not.
    // Method: drop, duplicate and invent entries.
    #[test]
    fn e108_candidate_list() {
        let d = fixture();
        let mut s = clean_sheet(&d, "U1", "C1");
        s.candidates.pop();
        assert_only(&d, &s, &[Code::CandidateListMismatch]);

        let mut s = clean_sheet(&d, "U1", "C1");
        let first = s.candidates[0].clone();
        s.candidates[1] = first;
        assert_eq!(
            codes(&d, &s),
            vec![Code::CandidateListMismatch, Code::CandidateListMismatch]
        );

        let mut s = clean_sheet(&d, "U1", "C1");
        s.candidates.push(CandidateCount {
            candidate: "C9-9".into(),
            approvals: 0,
            disapprovals: None,
            abstentions: None,
        });
        assert_only(&d, &s, &[Code::CandidateListMismatch]);

        let mut s = clean_sheet(&d, "U1", "C1");
        s.round = Round(2);
        s.candidates.pop();
        assert_eq!(check_sheet(&d, &s), vec![]);
    }

    // Goal: mobile boxes name enough scrutineers; every sheet names a scrutineer and a counter.
    // Method: the fixture's mobile box U2 with one scrutineer; a station with no counter.
    #[test]
    fn signers() {
        let d = fixture();
        let mut s = clean_sheet(&d, "U2", "C1");
        assert_eq!(check_sheet(&d, &s), vec![]);
        s.scrutineers.truncate(1);
        assert_only(&d, &s, &[Code::MobileBoxScrutineersTooFew]);

        let mut s = clean_sheet(&d, "U1", "C1");
        s.counters = vec!["  ".into()];
        assert_only(&d, &s, &[Code::SignersMissing]);
        let mut s = clean_sheet(&d, "U1", "C1");
        s.scrutineers.clear();
        assert_only(&d, &s, &[Code::SignersMissing]);
    }

    // Goal: version 0, a first version replacing something, a correction naming nothing or a
    // later version, and round 0 are all rejected.
    // Method: one case each.
    #[test]
    fn versions_and_rounds() {
        let d = fixture();
        let with = |version, replaces| {
            let mut s = clean_sheet(&d, "U1", "C1");
            s.version = version;
            s.replaces_version = replaces;
            s
        };
        assert_eq!(check_sheet(&d, &with(3, Some(2))), vec![]);
        assert_eq!(check_sheet(&d, &with(3, Some(1))), vec![]);
        for s in [
            with(0, None),
            with(1, Some(1)),
            with(2, None),
            with(2, Some(2)),
            with(2, Some(0)),
        ] {
            assert_only(&d, &s, &[Code::VersionInconsistent]);
        }
        let mut s = clean_sheet(&d, "U1", "C1");
        s.round = Round(0);
        assert_only(&d, &s, &[Code::RoundZero]);
    }

    // Goal: write-ins need a name, may not repeat, and may not name a candidate on the ballot
    // (the message says the votes belong to the candidate); a contest candidate not on a
    // later round's ballot may be written in.
    // Method: one case each.
    #[test]
    fn write_ins() {
        let d = fixture();
        let mut s = clean_sheet(&d, "U1", "C1");
        s.write_ins = vec![WriteIn {
            name: " ".into(),
            votes: 3,
        }];
        assert_only(&d, &s, &[Code::WriteInNameEmpty]);

        let mut s = clean_sheet(&d, "U1", "C1");
        let candidate_name = d.contests[0].candidates[1].name.clone();
        s.write_ins = vec![WriteIn {
            name: format!(" {candidate_name}"),
            votes: 3,
        }];
        let f = check_sheet(&d, &s);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].code, Code::WriteInIsCandidate);
        assert!(f[0].message.contains("belong to the candidate"));

        s.round = Round(2);
        s.candidates.remove(1);
        assert_eq!(check_sheet(&d, &s), vec![]);

        let mut s = clean_sheet(&d, "U1", "C1");
        s.write_ins = vec![
            WriteIn {
                name: "王五".into(),
                votes: 1,
            },
            WriteIn {
                name: "王五 ".into(),
                votes: 2,
            },
        ];
        assert_only(&d, &s, &[Code::WriteInDuplicate]);
    }

    // Goal: real names of every shape a county sees pass E119, and what is not a name is
    // refused with E119, a message naming the sheet, the contest and the name.
    // Method: one write-in per sheet, checked alone.
    #[test]
    fn e119_write_in_names() {
        let d = fixture();
        let check = |name: &str| {
            let mut s = clean_sheet(&d, "U1", "C1");
            s.write_ins = vec![WriteIn {
                name: name.into(),
                votes: 1,
            }];
            check_sheet(&d, &s)
        };
        for name in [
            "刘华",
            "欧阳娜娜",
            "阿卜杜拉·艾力",
            "阿卜杜拉・艾力",
            "María José",
            "Zoë",
            "Zoe\u{308}",
            "O'Brien",
            "O’Brien",
            "Jean-Luc",
            "佐々木",
            "  刘华\u{3000}",
            "Ли Вэй",
            "ཚེ་རིང",
            "w".repeat(WRITE_IN_NAME_CHARS_MAX).as_str(),
        ] {
            assert_eq!(check(name), vec![], "{name:?}");
        }
        for (name, problem) in [
            ("刘\r华", "control character U+000D"),
            ("刘华\n", "control character U+000A"),
            ("Li\tWei", "control character U+0009"),
            ("=HYPERLINK(\"x\")", "'=' (U+003D)"),
            ("-Zoë", "does not begin with a letter"),
            ("@刘华", "'@' (U+0040)"),
            ("王5", "'5' (U+0035)"),
            ("刘\u{200B}华", "U+200B"),
            ("刘\u{202E}华", "U+202E"),
            ("刘华😀", "U+1F600"),
            ("·刘华", "does not begin with a letter"),
        ] {
            let f = check(name);
            assert_eq!(f.len(), 1, "{name:?}: {f:#?}");
            assert_eq!(f[0].code, Code::WriteInNameImplausible, "{name:?}");
            assert_eq!(f[0].field, "write_ins[0].name");
            assert!(f[0].sheet.contains("unit U1") && f[0].sheet.contains("contest C1"));
            assert!(
                f[0].message.contains(&format!("{name:?} in contest C1")),
                "{}",
                f[0].message
            );
            assert!(f[0].message.contains(problem), "{name:?}: {}", f[0].message);
        }
        let long = "w".repeat(WRITE_IN_NAME_CHARS_MAX + 1);
        let f = check(&long);
        assert_eq!(f[0].code, Code::WriteInNameImplausible);
        assert!(
            f[0].message.contains("51 characters long, more than 50"),
            "{}",
            f[0].message
        );
        // Over the byte bound is E117 alone.
        assert_eq!(
            check(&"w".repeat(NAME_LEN_MAX + 1))
                .iter()
                .map(|f| f.code)
                .collect::<Vec<_>>(),
            [Code::OverBounds]
        );
        assert_eq!(Code::WriteInNameImplausible.as_str(), "E119");
        assert!(Code::WriteInNameImplausible.severity() == Severity::Error);
    }

    // Goal: two entries that differ only in encoding, spacing or the kind of middle dot are
    // one name listed twice (E115), and a candidate's name in another encoding is E114.
    // Method: pairs of spellings on one sheet.
    #[test]
    fn write_ins_compared_by_counting_name() {
        let d = fixture();
        for (a, b) in [
            ("Zoë", "Zoe\u{308}"),
            ("María José", " Mari\u{301}a   José"),
            ("阿卜杜拉·艾力", "阿卜杜拉・艾力"),
            ("刘华", "刘华\u{3000}"),
        ] {
            let mut s = clean_sheet(&d, "U1", "C1");
            s.write_ins = vec![
                WriteIn {
                    name: a.into(),
                    votes: 1,
                },
                WriteIn {
                    name: b.into(),
                    votes: 1,
                },
            ];
            assert_only(&d, &s, &[Code::WriteInDuplicate]);
        }
        let mut s = clean_sheet(&d, "U1", "C1");
        let candidate_name = d.contests[0].candidates[1].name.clone();
        s.write_ins = vec![WriteIn {
            name: format!("\u{3000}{candidate_name}\u{3000}"),
            votes: 1,
        }];
        assert_only(&d, &s, &[Code::WriteInIsCandidate]);
    }

    // Goal: bounds of sheet.rs are enforced.
    // Method: too many write-ins, a long signer name, a high round and version.
    #[test]
    fn e117_bounds() {
        let d = fixture();
        let mut s = clean_sheet(&d, "U1", "C1");
        s.write_ins = (0..=WRITE_INS_MAX)
            .map(|i| WriteIn {
                // Distinct names of letters only (a digit would be E119 as well).
                name: format!(
                    "人{}{}",
                    char::from(b'a' + (i / 26) as u8),
                    char::from(b'a' + (i % 26) as u8)
                ),
                votes: 0,
            })
            .collect();
        assert_only(&d, &s, &[Code::OverBounds]);
        let mut s = clean_sheet(&d, "U1", "C1");
        s.counters[0] = "x".repeat(NAME_LEN_MAX + 1);
        assert_only(&d, &s, &[Code::OverBounds]);
        let mut s = clean_sheet(&d, "U1", "C1");
        s.round = Round(ROUND_MAX + 1);
        s.version = VERSION_MAX + 1;
        s.replaces_version = Some(1);
        assert_only(&d, &s, &[Code::OverBounds]);
    }

    // Goal: identity errors: unknown unit, unknown contest, a unit reporting for a contest it
    // does not serve.
    // Method: rewrite the ids of a clean sheet.
    #[test]
    fn identity() {
        let d = fixture();
        let mut s = clean_sheet(&d, "U1", "C1");
        s.unit = "U9".into();
        assert_only(&d, &s, &[Code::UnknownUnit]);
        let mut s = clean_sheet(&d, "U1", "C1");
        s.contest = "C9".into();
        let got = codes(&d, &s);
        assert_eq!(got[0], Code::UnknownContest);
        let mut s = clean_sheet(&d, "U1", "C1");
        s.unit = "U3".into();
        assert_only(&d, &s, &[Code::UnitNotServingContest]);
    }

    // Goal: the warnings fire at their thresholds and not below, and do not block the sheet.
    // Method: the default rules (void 5%, gap 2%); 620 voted, 623 collected (Art 44).
    #[test]
    fn warnings() {
        let d = fixture();
        let mut s = clean_sheet(&d, "U1", "C1");
        s.registered_voters = 1000;
        s.ballots_issued = 620;
        s.ballots_collected = 623;
        s.ballots_valid = 623;
        let f = check_sheet(&d, &s);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].code, Code::CollectedOverIssued);
        assert!(!f[0].is_error());
        assert!(
            f[0].message
                .contains("Art 44 is applied to contest C1's totals")
        );

        // 5% of 600 is 30: 30 void is fine, 31 warns.
        let mut s = clean_sheet(&d, "U1", "C1");
        s.registered_voters = 1000;
        s.ballots_issued = 600;
        s.ballots_collected = 600;
        s.ballots_void = 30;
        s.ballots_valid = 570;
        assert_eq!(check_sheet(&d, &s), vec![]);
        s.ballots_void = 31;
        s.ballots_valid = 569;
        assert_only(&d, &s, &[Code::ManyVoidBallots]);

        // 2% of 600 is 12: 12 missing is fine, 13 warns.
        let mut s = clean_sheet(&d, "U1", "C1");
        s.registered_voters = 1000;
        s.ballots_issued = 600;
        s.ballots_collected = 588;
        s.ballots_valid = 588;
        assert_eq!(check_sheet(&d, &s), vec![]);
        s.ballots_collected = 587;
        s.ballots_valid = 587;
        assert_only(&d, &s, &[Code::IssuedCollectedGap]);

        let mut s = clean_sheet(&d, "U1", "C1");
        s.registered_voters = 1001;
        assert_only(&d, &s, &[Code::RegisteredOverContest]);
    }
}
