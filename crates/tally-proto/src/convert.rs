//! Conversion between the domain [`TallySheet`] and its protobuf encoding.
//!
//! Encoding is total: any domain sheet encodes. Decoding is where untrusted bytes meet the
//! domain, so it enforces every limit the contract states (sizes, list lengths, id syntax,
//! name lengths, ranges) and names the offending field in its error. Arithmetic consistency
//! is not checked here; that is validation's job, with its own finding codes.

use crate::error::Error;
use crate::pb;
use prost::Message;
use tally_core::ids::{CandidateId, ContestId, UnitId, check_id};
use tally_core::sheet::{
    CANDIDATES_MAX, CandidateCount, CountClosedAt, ROUND_MAX, Round, SIGNERS_MAX, TallySheet,
    VERSION_MAX, WRITE_INS_MAX, WriteIn,
};

/// The most bytes an encoded `SignedSheet` (and so the `TallySheet` inside it) may have.
/// A sheet at every list and name limit encodes to about 64,600 bytes (a test checks that it
/// fits with its envelope); ordinary sheets are a few hundred bytes.
pub const SIGNED_SHEET_BYTES_MAX: usize = 64 * 1024;

/// The longest name (write-in, scrutineer, counter) a sheet may carry, in bytes of UTF-8; the
/// same bound the election definition puts on names.
pub const NAME_LEN_MAX: usize = tally_core::definition::NAME_LEN_MAX;

/// UTC offsets in use run from -12:00 to +14:00; the bound is the wider -18:00..=+18:00 that
/// ISO 8601 libraries accept, in minutes.
pub const UTC_OFFSET_MINUTES_MAX: i32 = 18 * 60;

/// The latest count-closed instant a sheet may carry: 9999-12-31T23:59:59Z. With the offset
/// bound it keeps local-time arithmetic (`unix_seconds + offset * 60`) far from overflow.
/// Instants before 1970 are rejected too: no count closed then.
pub const UNIX_SECONDS_MAX: i64 = 253_402_300_799;

fn field_error(field: impl Into<String>, problem: impl Into<String>) -> Error {
    Error::Field {
        what: "sheet",
        field: field.into(),
        problem: problem.into(),
    }
}

/// Encodes a domain sheet. `replaces_version: None` is written as 0; a domain sheet with
/// `Some(0)` (which validation rejects) therefore decodes back as `None`.
///
/// Encoding does not check the limits: a sheet outside them encodes and signs, and is then
/// rejected by every reader (E206).
pub fn encode_sheet(sheet: &TallySheet) -> Vec<u8> {
    to_pb(sheet).encode_to_vec()
}

/// The protobuf form of a domain sheet.
pub fn to_pb(sheet: &TallySheet) -> pb::TallySheet {
    pb::TallySheet {
        unit_id: sheet.unit.0.clone(),
        contest_id: sheet.contest.0.clone(),
        round: sheet.round.0,
        version: sheet.version,
        replaces_version: sheet.replaces_version.unwrap_or(0),
        registered_voters: sheet.registered_voters,
        ballots_issued: sheet.ballots_issued,
        ballots_collected: sheet.ballots_collected,
        ballots_void: sheet.ballots_void,
        ballots_valid: sheet.ballots_valid,
        ballots_blank: sheet.ballots_blank,
        proxies: sheet.proxies,
        candidates: sheet
            .candidates
            .iter()
            .map(|c| pb::CandidateCount {
                candidate_id: c.candidate.0.clone(),
                approvals: c.approvals,
                disapprovals: c.disapprovals,
                abstentions: c.abstentions,
            })
            .collect(),
        write_ins: sheet
            .write_ins
            .iter()
            .map(|w| pb::WriteIn {
                name: w.name.clone(),
                votes: w.votes,
            })
            .collect(),
        scrutineers: sheet.scrutineers.clone(),
        counters: sheet.counters.clone(),
        count_closed_unix_seconds: sheet.count_closed_at.unix_seconds,
        count_closed_utc_offset_minutes: sheet.count_closed_at.utc_offset_minutes,
    }
}

/// Decodes an encoded `TallySheet` and checks every limit of the contract.
pub fn decode_sheet(bytes: &[u8]) -> Result<TallySheet, Error> {
    if bytes.len() > SIGNED_SHEET_BYTES_MAX {
        return Err(Error::TooLarge {
            what: "sheet",
            len: bytes.len(),
            max: SIGNED_SHEET_BYTES_MAX,
        });
    }
    // prost checks that every string field is UTF-8 and that lengths stay inside the buffer.
    let sheet = pb::TallySheet::decode(bytes).map_err(|cause| Error::Protobuf {
        what: "sheet",
        cause,
    })?;
    from_pb(sheet)
}

/// Converts a decoded protobuf sheet to the domain type, checking every limit of the contract.
pub fn from_pb(sheet: pb::TallySheet) -> Result<TallySheet, Error> {
    check_id_field("unit_id", &sheet.unit_id)?;
    check_id_field("contest_id", &sheet.contest_id)?;
    if !(1..=ROUND_MAX).contains(&sheet.round) {
        return Err(field_error(
            "round",
            format!(
                "is {}; rounds are numbered 1 to {ROUND_MAX}, 1 being election day",
                sheet.round
            ),
        ));
    }
    if !(1..=VERSION_MAX).contains(&sheet.version) {
        return Err(field_error(
            "version",
            format!(
                "is {}; versions are numbered 1 to {VERSION_MAX}, 1 being the first report",
                sheet.version
            ),
        ));
    }
    if sheet.replaces_version > VERSION_MAX {
        return Err(field_error(
            "replaces_version",
            format!(
                "is {}, more than {VERSION_MAX}; 0 means the sheet replaces none",
                sheet.replaces_version
            ),
        ));
    }
    check_len("candidates", sheet.candidates.len(), CANDIDATES_MAX)?;
    check_len("write_ins", sheet.write_ins.len(), WRITE_INS_MAX)?;
    check_len("scrutineers", sheet.scrutineers.len(), SIGNERS_MAX)?;
    check_len("counters", sheet.counters.len(), SIGNERS_MAX)?;
    for (i, c) in sheet.candidates.iter().enumerate() {
        check_id_field(&format!("candidates[{i}].candidate_id"), &c.candidate_id)?;
    }
    for (i, w) in sheet.write_ins.iter().enumerate() {
        check_name(&format!("write_ins[{i}].name"), &w.name)?;
    }
    for (i, name) in sheet.scrutineers.iter().enumerate() {
        check_name(&format!("scrutineers[{i}]"), name)?;
    }
    for (i, name) in sheet.counters.iter().enumerate() {
        check_name(&format!("counters[{i}]"), name)?;
    }
    if !(0..=UNIX_SECONDS_MAX).contains(&sheet.count_closed_unix_seconds) {
        return Err(field_error(
            "count_closed_unix_seconds",
            format!(
                "is {}, outside 0 to {UNIX_SECONDS_MAX} (1970 to the end of 9999)",
                sheet.count_closed_unix_seconds
            ),
        ));
    }
    let offset = sheet.count_closed_utc_offset_minutes;
    if !(-UTC_OFFSET_MINUTES_MAX..=UTC_OFFSET_MINUTES_MAX).contains(&offset) {
        return Err(field_error(
            "count_closed_utc_offset_minutes",
            format!(
                "is {offset}, outside -{UTC_OFFSET_MINUTES_MAX} to {UTC_OFFSET_MINUTES_MAX} (-18:00 to +18:00); give the offset in minutes, e.g. 480 for +08:00"
            ),
        ));
    }

    Ok(TallySheet {
        unit: UnitId(sheet.unit_id),
        contest: ContestId(sheet.contest_id),
        round: Round(sheet.round),
        version: sheet.version,
        replaces_version: (sheet.replaces_version != 0).then_some(sheet.replaces_version),
        registered_voters: sheet.registered_voters,
        ballots_issued: sheet.ballots_issued,
        ballots_collected: sheet.ballots_collected,
        ballots_void: sheet.ballots_void,
        ballots_valid: sheet.ballots_valid,
        ballots_blank: sheet.ballots_blank,
        proxies: sheet.proxies,
        candidates: sheet
            .candidates
            .into_iter()
            .map(|c| CandidateCount {
                candidate: CandidateId(c.candidate_id),
                approvals: c.approvals,
                disapprovals: c.disapprovals,
                abstentions: c.abstentions,
            })
            .collect(),
        write_ins: sheet
            .write_ins
            .into_iter()
            .map(|w| WriteIn {
                name: w.name,
                votes: w.votes,
            })
            .collect(),
        scrutineers: sheet.scrutineers,
        counters: sheet.counters,
        count_closed_at: CountClosedAt {
            unix_seconds: sheet.count_closed_unix_seconds,
            utc_offset_minutes: offset,
        },
    })
}

fn check_id_field(field: &str, id: &str) -> Result<(), Error> {
    check_id(id).map_err(|problem| field_error(field, problem))
}

fn check_len(field: &str, len: usize, max: usize) -> Result<(), Error> {
    if len > max {
        return Err(field_error(
            field,
            format!("has {len} entries, more than the {max} a sheet may carry"),
        ));
    }
    Ok(())
}

/// Names are free text (Chinese, as written on the sheet); only their length is bounded here.
/// Whether a name is blank is for validation to judge.
fn check_name(field: &str, name: &str) -> Result<(), Error> {
    if name.len() > NAME_LEN_MAX {
        return Err(field_error(
            field,
            format!("is {} bytes long, more than {NAME_LEN_MAX}", name.len()),
        ));
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A small, plausible sheet for unit `T01-U001` of contest `T01-C01`.
    pub(crate) fn sample_sheet(unit: &str) -> TallySheet {
        TallySheet {
            unit: UnitId::new(unit),
            contest: ContestId::new("T01-C01"),
            round: Round::FIRST,
            version: 1,
            replaces_version: None,
            registered_voters: 1_000,
            ballots_issued: 800,
            ballots_collected: 798,
            ballots_void: 8,
            ballots_valid: 790,
            ballots_blank: 5,
            proxies: 3,
            candidates: vec![
                CandidateCount {
                    candidate: CandidateId::new("T01-C01-K1"),
                    approvals: 500,
                    disapprovals: None,
                    abstentions: None,
                },
                CandidateCount {
                    candidate: CandidateId::new("T01-C01-K2"),
                    approvals: 270,
                    disapprovals: Some(10),
                    abstentions: Some(0),
                },
            ],
            write_ins: vec![WriteIn {
                name: "张三".into(),
                votes: 10,
            }],
            scrutineers: vec!["李四".into(), "王五".into()],
            counters: vec!["赵六".into()],
            count_closed_at: CountClosedAt {
                unix_seconds: 1_795_861_800,
                utc_offset_minutes: 480,
            },
        }
    }

    /// A sheet at every list and name limit: the largest a reader accepts.
    pub(crate) fn largest_sheet() -> TallySheet {
        let id = "X".repeat(tally_core::ids::ID_LEN_MAX);
        let name = "名".repeat(NAME_LEN_MAX / 3) + &"n".repeat(NAME_LEN_MAX % 3);
        assert_eq!(name.len(), NAME_LEN_MAX);
        TallySheet {
            unit: UnitId::new(id.clone()),
            contest: ContestId::new(id.clone()),
            round: Round(ROUND_MAX),
            version: VERSION_MAX,
            replaces_version: Some(VERSION_MAX - 1),
            registered_voters: u64::MAX,
            ballots_issued: u64::MAX,
            ballots_collected: u64::MAX,
            ballots_void: u64::MAX,
            ballots_valid: u64::MAX,
            ballots_blank: u64::MAX,
            proxies: u64::MAX,
            candidates: vec![
                CandidateCount {
                    candidate: CandidateId::new(id.clone()),
                    approvals: u64::MAX,
                    disapprovals: Some(u64::MAX),
                    abstentions: Some(u64::MAX),
                };
                CANDIDATES_MAX
            ],
            write_ins: vec![
                WriteIn {
                    name: name.clone(),
                    votes: u64::MAX,
                };
                WRITE_INS_MAX
            ],
            scrutineers: vec![name.clone(); SIGNERS_MAX],
            counters: vec![name; SIGNERS_MAX],
            count_closed_at: CountClosedAt {
                unix_seconds: UNIX_SECONDS_MAX,
                utc_offset_minutes: -UTC_OFFSET_MINUTES_MAX,
            },
        }
    }

    // Goal: a domain sheet survives encoding and decoding unchanged.
    // Method: round trip the sample sheet and the largest legal sheet.
    #[test]
    fn round_trip() {
        for sheet in [sample_sheet("T01-U001"), largest_sheet()] {
            let bytes = encode_sheet(&sheet);
            assert_eq!(decode_sheet(&bytes).unwrap(), sheet);
        }
    }

    // Goal: the size bound leaves room for every sheet the other limits allow.
    // Method: encode the largest legal sheet and compare with the bound.
    #[test]
    fn largest_sheet_fits_the_size_bound() {
        let len = encode_sheet(&largest_sheet()).len();
        // 64 bytes signature, 16 bytes key id, and at most 8 bytes of tags and lengths.
        assert!(
            len + 64 + 16 + 8 <= SIGNED_SHEET_BYTES_MAX,
            "largest sheet is {len} bytes"
        );
    }

    fn decode_err(sheet: &TallySheet) -> String {
        decode_sheet(&encode_sheet(sheet)).unwrap_err().to_string()
    }

    // Goal: every limit is enforced and its error names the field.
    // Method: break one limit at a time, just past the bound, and read the message.
    #[test]
    fn limits_name_the_field() {
        let base = sample_sheet("T01-U001");
        type Breaks = Box<dyn Fn(&mut TallySheet)>;
        let cases: Vec<(Breaks, &str)> = vec![
            (
                Box::new(|s| s.unit = UnitId::new("")),
                "sheet field unit_id is empty",
            ),
            (
                Box::new(|s| s.contest = ContestId::new("T01 C01")),
                "sheet field contest_id contains ' '",
            ),
            (Box::new(|s| s.round = Round(0)), "sheet field round is 0"),
            (
                Box::new(|s| s.round = Round(ROUND_MAX + 1)),
                "sheet field round is 11",
            ),
            (Box::new(|s| s.version = 0), "sheet field version is 0"),
            (
                Box::new(|s| s.version = VERSION_MAX + 1),
                "sheet field version is 1001",
            ),
            (
                Box::new(|s| s.replaces_version = Some(VERSION_MAX + 1)),
                "sheet field replaces_version is 1001",
            ),
            (
                Box::new(|s| s.candidates = vec![s.candidates[0].clone(); CANDIDATES_MAX + 1]),
                "sheet field candidates has 7 entries",
            ),
            (
                Box::new(|s| s.candidates[1].candidate = CandidateId::new("é")),
                "sheet field candidates[1].candidate_id contains 'é'",
            ),
            (
                Box::new(|s| s.write_ins = vec![s.write_ins[0].clone(); WRITE_INS_MAX + 1]),
                "sheet field write_ins has 201 entries",
            ),
            (
                Box::new(|s| s.write_ins[0].name = "n".repeat(NAME_LEN_MAX + 1)),
                "sheet field write_ins[0].name is 201 bytes long",
            ),
            (
                Box::new(|s| s.scrutineers = vec![String::new(); SIGNERS_MAX + 1]),
                "sheet field scrutineers has 51 entries",
            ),
            (
                Box::new(|s| s.counters = vec![String::new(); SIGNERS_MAX + 1]),
                "sheet field counters has 51 entries",
            ),
            (
                Box::new(|s| s.counters[0] = "n".repeat(NAME_LEN_MAX + 1)),
                "sheet field counters[0] is 201 bytes long",
            ),
            (
                Box::new(|s| s.count_closed_at.unix_seconds = -1),
                "sheet field count_closed_unix_seconds is -1",
            ),
            (
                Box::new(|s| s.count_closed_at.unix_seconds = UNIX_SECONDS_MAX + 1),
                "sheet field count_closed_unix_seconds is 253402300800",
            ),
            (
                Box::new(|s| s.count_closed_at.utc_offset_minutes = UTC_OFFSET_MINUTES_MAX + 1),
                "sheet field count_closed_utc_offset_minutes is 1081",
            ),
            (
                Box::new(|s| s.count_closed_at.utc_offset_minutes = -UTC_OFFSET_MINUTES_MAX - 1),
                "sheet field count_closed_utc_offset_minutes is -1081",
            ),
        ];
        for (breaks, expected) in cases {
            let mut sheet = base.clone();
            breaks(&mut sheet);
            let message = decode_err(&sheet);
            assert!(
                message.starts_with(expected),
                "expected {expected:?}, got {message:?}"
            );
        }
    }

    // Goal: bytes that are not protobuf, or strings that are not UTF-8, are errors, not panics.
    // Method: a truncated sheet, a bad wire type and a non-UTF-8 unit id.
    #[test]
    fn malformed_bytes_are_errors() {
        let bytes = encode_sheet(&sample_sheet("T01-U001"));
        for cut in 1..bytes.len() {
            // Some prefixes are themselves well-formed shorter sheets; none may panic.
            let _ = decode_sheet(&bytes[..cut]);
        }
        assert!(matches!(
            decode_sheet(&bytes[..bytes.len() - 1]),
            Err(Error::Protobuf { what: "sheet", .. })
        ));
        // Field 1 (unit_id) with length 2 and bytes that are not UTF-8.
        let message = decode_sheet(&[0x0a, 0x02, 0xff, 0xfe])
            .unwrap_err()
            .to_string();
        assert!(message.contains("unit_id"), "{message}");
        let oversized = vec![0u8; SIGNED_SHEET_BYTES_MAX + 1];
        assert!(matches!(
            decode_sheet(&oversized),
            Err(Error::TooLarge { .. })
        ));
    }
}
