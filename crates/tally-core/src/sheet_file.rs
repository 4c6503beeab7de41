//! The tally sheet as a clerk fills it in: a small TOML file, one sheet per file.
//!
//! ```toml
//! unit = "T01-U001"
//! contest = "T01-X01"
//! round = 1                 # optional, 1 unless the committee called another vote
//! version = 1               # 2, 3, ... for corrections, with replaces_version
//! registered_voters = 1200
//! ballots_issued = 1000
//! ballots_collected = 1000
//! ballots_void = 10
//! ballots_valid = 990
//! ballots_blank = 5
//! proxies = 3
//! count_closed_at = 2026-11-28T18:30:00+08:00
//! scrutineers = ["王五", "赵六"]
//! counters = ["钱七"]
//!
//! [[candidates]]
//! id = "T01-X01-1"
//! approvals = 600
//!
//! [[write_ins]]
//! name = "李四"
//! votes = 12
//! ```

use crate::Error;
use crate::ids::{CandidateId, ContestId, UnitId};
use crate::sheet::{CandidateCount, CountClosedAt, Round, TallySheet, WriteIn, unix_seconds};
use serde::Deserialize;
use std::fmt::Write as _;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSheet {
    unit: String,
    contest: String,
    #[serde(default = "one")]
    round: u32,
    #[serde(default = "one")]
    version: u32,
    replaces_version: Option<u32>,
    registered_voters: u64,
    ballots_issued: u64,
    ballots_collected: u64,
    ballots_void: u64,
    ballots_valid: u64,
    ballots_blank: u64,
    #[serde(default)]
    proxies: u64,
    count_closed_at: toml::value::Datetime,
    #[serde(default)]
    scrutineers: Vec<String>,
    #[serde(default)]
    counters: Vec<String>,
    #[serde(default)]
    candidates: Vec<RawCandidate>,
    #[serde(default)]
    write_ins: Vec<RawWriteIn>,
}

fn one() -> u32 {
    1
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCandidate {
    id: String,
    approvals: u64,
    disapprovals: Option<u64>,
    abstentions: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWriteIn {
    name: String,
    votes: u64,
}

/// Parses a clerk's sheet file. Only the form is checked here; the numbers are checked by
/// [`crate::validate`] against the definition.
pub fn parse(file: &str, text: &str) -> Result<TallySheet, Error> {
    let raw: RawSheet = toml::from_str(text).map_err(|e| Error::SheetFile {
        file: file.to_owned(),
        location: e
            .span()
            .map(|s| format!("line {}", crate::toml_text::line_of(text, s.start)))
            .unwrap_or_default(),
        message: e.message().trim_end().to_owned(),
    })?;
    let error = |message: String| Error::SheetFile {
        file: file.to_owned(),
        location: String::new(),
        message,
    };
    let at = raw.count_closed_at;
    let (Some(date), Some(time), Some(offset)) = (at.date, at.time, at.offset) else {
        return Err(error(format!(
            "count_closed_at is {at}; write the date, the time and the UTC offset, e.g. 2026-11-28T18:30:00+08:00"
        )));
    };
    let utc_offset_minutes = match offset {
        toml::value::Offset::Z => 0,
        toml::value::Offset::Custom { minutes } => i32::from(minutes),
    };
    let count_closed_at = CountClosedAt {
        unix_seconds: unix_seconds(
            i64::from(date.year),
            u32::from(date.month),
            u32::from(date.day),
            u32::from(time.hour),
            u32::from(time.minute),
            u32::from(time.second),
            utc_offset_minutes,
        ),
        utc_offset_minutes,
    };
    Ok(TallySheet {
        unit: UnitId::new(raw.unit),
        contest: ContestId::new(raw.contest),
        round: Round(raw.round),
        version: raw.version,
        replaces_version: raw.replaces_version,
        registered_voters: raw.registered_voters,
        ballots_issued: raw.ballots_issued,
        ballots_collected: raw.ballots_collected,
        ballots_void: raw.ballots_void,
        ballots_valid: raw.ballots_valid,
        ballots_blank: raw.ballots_blank,
        proxies: raw.proxies,
        candidates: raw
            .candidates
            .into_iter()
            .map(|c| CandidateCount {
                candidate: CandidateId::new(c.id),
                approvals: c.approvals,
                disapprovals: c.disapprovals,
                abstentions: c.abstentions,
            })
            .collect(),
        write_ins: raw
            .write_ins
            .into_iter()
            .map(|w| WriteIn {
                name: w.name,
                votes: w.votes,
            })
            .collect(),
        scrutineers: raw.scrutineers,
        counters: raw.counters,
        count_closed_at,
    })
}

fn quote(s: &str) -> String {
    // TOML basic strings share JSON's escapes for everything a name can hold.
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Writes a sheet in the clerk's format, so `tally gen` and the examples produce files a clerk
/// would recognise. `parse(to_toml(s)) == s` for every sheet.
pub fn to_toml(sheet: &TallySheet) -> String {
    let mut out = String::new();
    let list = |items: &[String]| {
        items
            .iter()
            .map(|s| quote(s))
            .collect::<Vec<_>>()
            .join(", ")
    };
    // Writing to a String cannot fail.
    let _ = writeln!(out, "unit = {}", quote(sheet.unit.as_str()));
    let _ = writeln!(out, "contest = {}", quote(sheet.contest.as_str()));
    let _ = writeln!(out, "round = {}", sheet.round.0);
    let _ = writeln!(out, "version = {}", sheet.version);
    if let Some(r) = sheet.replaces_version {
        let _ = writeln!(out, "replaces_version = {r}");
    }
    let _ = writeln!(out, "registered_voters = {}", sheet.registered_voters);
    let _ = writeln!(out, "ballots_issued = {}", sheet.ballots_issued);
    let _ = writeln!(out, "ballots_collected = {}", sheet.ballots_collected);
    let _ = writeln!(out, "ballots_void = {}", sheet.ballots_void);
    let _ = writeln!(out, "ballots_valid = {}", sheet.ballots_valid);
    let _ = writeln!(out, "ballots_blank = {}", sheet.ballots_blank);
    let _ = writeln!(out, "proxies = {}", sheet.proxies);
    let _ = writeln!(out, "count_closed_at = {}", sheet.count_closed_at);
    let _ = writeln!(out, "scrutineers = [{}]", list(&sheet.scrutineers));
    let _ = writeln!(out, "counters = [{}]", list(&sheet.counters));
    for c in &sheet.candidates {
        let _ = writeln!(
            out,
            "\n[[candidates]]\nid = {}",
            quote(c.candidate.as_str())
        );
        let _ = writeln!(out, "approvals = {}", c.approvals);
        if let Some(d) = c.disapprovals {
            let _ = writeln!(out, "disapprovals = {d}");
        }
        if let Some(a) = c.abstentions {
            let _ = writeln!(out, "abstentions = {a}");
        }
    }
    for w in &sheet.write_ins {
        let _ = writeln!(
            out,
            "\n[[write_ins]]\nname = {}\nvotes = {}",
            quote(&w.name),
            w.votes
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"
unit = "T01-U001"
contest = "T01-X01"
registered_voters = 1200
ballots_issued = 1000
ballots_collected = 1000
ballots_void = 10
ballots_valid = 990
ballots_blank = 5
proxies = 3
count_closed_at = 2026-11-28T18:30:00+08:00
scrutineers = ["王五", "赵六"]
counters = ["钱七"]

[[candidates]]
id = "T01-X01-1"
approvals = 600

[[write_ins]]
name = "李\"四"
votes = 12
"#;

    // Goal: a clerk's file reads as written and writes back to the same sheet.
    // Method: parse the sample, check fields and defaults, then round-trip through to_toml.
    #[test]
    fn parse_and_round_trip() {
        let sheet = parse("s.toml", SAMPLE).unwrap();
        assert_eq!(sheet.round, Round(1));
        assert_eq!(sheet.version, 1);
        assert_eq!(sheet.scrutineers, vec!["王五", "赵六"]);
        assert_eq!(sheet.count_closed_at.utc_offset_minutes, 480);
        assert_eq!(sheet.write_ins[0].name, "李\"四");
        let again = parse("s.toml", &to_toml(&sheet)).unwrap();
        assert_eq!(again, sheet);
    }

    // Goal: a mistyped field name and a missing offset are named with file and line.
    #[test]
    fn errors_name_file_line_and_field() {
        let bad = SAMPLE.replace("ballots_blank", "ballots_blnk");
        let e = parse("s.toml", &bad).unwrap_err();
        assert!(e.to_string().starts_with("s.toml, line 9:"), "{e}");
        assert!(e.to_string().contains("ballots_blnk"), "{e}");
        let no_offset = SAMPLE.replace("+08:00", "");
        let e = parse("s.toml", &no_offset).unwrap_err();
        assert!(e.to_string().contains("UTC offset"), "{e}");
    }
}
