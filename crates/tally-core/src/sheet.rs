//! The tally sheet: what one polling unit reports for one contest in one round of voting.
//!
//! A sheet is never changed in place. A correction is a new version, signed again, that names
//! the version it replaces; both stay in the record and the highest version counts.

use crate::ids::{CandidateId, ContestId, UnitId};
use serde::{Deserialize, Serialize};

/// Bounds on a sheet's lists, so a forged sheet cannot carry unbounded data.
pub const WRITE_INS_MAX: usize = 200;
pub const SIGNERS_MAX: usize = 50;
pub const CANDIDATES_MAX: usize = 6;
pub const VERSION_MAX: u32 = 1_000;
pub const ROUND_MAX: u32 = 10;
/// The most characters (after [`counting_name`]) a written-in name may have. Chinese names
/// are two to four characters; transliterated names of minority nationalities and foreign
/// names run longer (`阿卜杜拉·艾力` is 7, `María José García-López de la Fuente` 36): 50
/// leaves room for every real name and refuses a paragraph (E119). 50 characters are at most
/// 200 bytes of UTF-8, the byte bound every name has (`definition::NAME_LEN_MAX`, E117).
pub const WRITE_IN_NAME_CHARS_MAX: usize = 50;

/// The voting round a sheet reports. Round 1 is the election day vote; a later round is the
/// vote the outcome of the one before it called for: a repeat of a void vote, another vote
/// between people tied for the last seat (再次投票), or a further election (另行选举).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Round(pub u32);

impl Round {
    pub const FIRST: Round = Round(1);
}

/// The moment the count closed, as the clerk wrote it: seconds since the Unix epoch (UTC) and
/// the local offset, kept so a report can print the clerk's own clock time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct CountClosedAt {
    pub unix_seconds: i64,
    pub utc_offset_minutes: i32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CandidateCount {
    pub candidate: CandidateId,
    pub approvals: u64,
    /// Reported only where the definition's `record_disapprovals` asks for it.
    pub disapprovals: Option<u64>,
    pub abstentions: Option<u64>,
}

/// A person written in by voters (另选他人), by name as written on the sheet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteIn {
    /// The name exactly as the unit signed it; never changed (see [`counting_name`]).
    pub name: String,
    pub votes: u64,
}

impl WriteIn {
    /// The name this write-in is counted under: [`counting_name`] of [`WriteIn::name`].
    pub fn counting_name(&self) -> String {
        counting_name(&self.name)
    }
}

/// The key a written-in name is counted, compared and shown under, so that spellings that
/// differ only in how they are encoded or spaced are one person:
///
/// 1. Unicode NFC (canonical composition): `Zoe` + U+0308 and `Zoë` (U+00EB) are one name.
///    Not NFKC, which would also merge characters Unicode calls only "compatible"
///    (fullwidth `Ｚ` and `Z`, `㈱` and `(株)`): that is a judgement about what the voter
///    meant, which the committee makes, not the count.
/// 2. Whitespace (any Unicode space: U+3000 of Chinese input methods, no-break space, ...)
///    trimmed at both ends and each inner run made one ASCII space: `María  José` is
///    `María José`. Spaces are not removed between Chinese characters: `刘 华` stays apart
///    from `刘华`, since whether a space is part of a name is again the committee's call.
/// 3. The separators input methods type for the same mark folded to one: the middle dots of
///    transliterated names `・` (U+30FB), `･` (U+FF65) and `‧` (U+2027) to `·` (U+00B7, the
///    间隔号 of GB/T 15834); the right single quotation mark `’` to the apostrophe `'`; the
///    hyphens U+2010 and U+2011 to `-`.
///
/// The signed sheet is never changed: this is the key the count uses, computed from the
/// stored name wherever sheets are added up (`results::compute`, which the county, the
/// township and `tally results` all run) or checked (`validate::check_sheet`), so all of them
/// agree by construction.
pub fn counting_name(name: &str) -> String {
    use unicode_normalization::UnicodeNormalization;
    let composed: String = name.nfc().collect();
    let mut out = String::with_capacity(composed.len());
    for word in composed.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.extend(word.chars().map(|c| match c {
            '\u{30FB}' | '\u{FF65}' | '\u{2027}' => '\u{00B7}',
            '\u{2019}' => '\'',
            '\u{2010}' | '\u{2011}' => '-',
            c => c,
        }));
    }
    out
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TallySheet {
    pub unit: UnitId,
    pub contest: ContestId,
    pub round: Round,
    /// 1 for the first report; each correction is one more.
    pub version: u32,
    /// The version this one corrects; `None` exactly when `version` is 1.
    pub replaces_version: Option<u32>,
    /// Registered voters on the roll this unit served for this contest.
    pub registered_voters: u64,
    /// Ballots issued: the number of people who voted here.
    pub ballots_issued: u64,
    /// Ballots found in the box(es).
    pub ballots_collected: u64,
    /// Collected ballots that are void (e.g. marking more people than there are seats, Art 44).
    pub ballots_void: u64,
    /// Collected ballots that are valid; `ballots_void + ballots_valid == ballots_collected`.
    pub ballots_valid: u64,
    /// Valid ballots with no mark at all.
    pub ballots_blank: u64,
    /// Votes cast as proxy for another voter (Art 42).
    pub proxies: u64,
    /// One entry per candidate on the ballot, in the definition's order.
    pub candidates: Vec<CandidateCount>,
    pub write_ins: Vec<WriteIn>,
    /// 监票人
    pub scrutineers: Vec<String>,
    /// 计票人
    pub counters: Vec<String>,
    pub count_closed_at: CountClosedAt,
}

/// Identifies the slot a sheet fills: the same unit, contest and round. Versions of one slot
/// replace each other.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct SheetSlot {
    pub unit: UnitId,
    pub contest: ContestId,
    pub round: Round,
}

impl TallySheet {
    pub fn slot(&self) -> SheetSlot {
        SheetSlot {
            unit: self.unit.clone(),
            contest: self.contest.clone(),
            round: self.round,
        }
    }

    /// A short name for messages: `unit T01-U003, contest T01-C01, round 1, version 2`.
    pub fn label(&self) -> String {
        format!(
            "unit {}, contest {}, round {}, version {}",
            self.unit, self.contest, self.round.0, self.version
        )
    }

    /// Approvals for one candidate (0 if the sheet does not list them).
    pub fn approvals(&self, candidate: &CandidateId) -> u64 {
        self.candidates
            .iter()
            .find(|c| &c.candidate == candidate)
            .map_or(0, |c| c.approvals)
    }
}

/// Converts a civil date and time with a UTC offset to Unix seconds, without a time library
/// (Howard Hinnant's days-from-civil). Used to read the TOML datetime a clerk writes.
pub fn unix_seconds(
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
    utc_offset_minutes: i32,
) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    days * 86_400 + i64::from(hour) * 3_600 + i64::from(minute) * 60 + i64::from(second)
        - i64::from(utc_offset_minutes) * 60
}

/// The inverse of [`unix_seconds`], giving local civil time for the stored offset.
pub fn civil_time(at: CountClosedAt) -> (i64, u32, u32, u32, u32, u32) {
    let local = at.unix_seconds + i64::from(at.utc_offset_minutes) * 60;
    let days = local.div_euclid(86_400);
    let secs = local.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (
        year,
        month,
        day,
        (secs / 3_600) as u32,
        (secs % 3_600 / 60) as u32,
        (secs % 60) as u32,
    )
}

impl std::fmt::Display for CountClosedAt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (y, mo, d, h, mi, s) = civil_time(*self);
        let off = self.utc_offset_minutes;
        let sign = if off < 0 { '-' } else { '+' };
        write!(
            f,
            "{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}{sign}{:02}:{:02}",
            off.abs() / 60,
            off.abs() % 60
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Goal: the clerk's local time survives the trip to Unix seconds and back.
    // Method: a known instant (2026-11-28 18:30 in Beijing = 10:30 UTC) and a round trip.
    #[test]
    fn count_closed_at_round_trip() {
        let s = unix_seconds(2026, 11, 28, 18, 30, 0, 480);
        assert_eq!(s, 1_795_861_800);
        let at = CountClosedAt {
            unix_seconds: s,
            utc_offset_minutes: 480,
        };
        assert_eq!(at.to_string(), "2026-11-28T18:30:00+08:00");
        assert_eq!(civil_time(at), (2026, 11, 28, 18, 30, 0));
    }
}
