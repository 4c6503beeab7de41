//! Double entry of a paper tally sheet at terminal prompts.
//!
//! Two clerks type every field of the same paper sheet independently, one after the other.
//! Every field where they differ is shown with both values, and both type those fields again
//! until they agree; only then is the sheet written. This is how the Dutch Kiesraad's Abacus
//! takes in every paper report: a typing slip is caught before anything is signed.
//!
//! The form comes in phases, each agreed before the next is asked, because the later fields
//! depend on earlier answers: for a later round, which candidates are on its ballot; then
//! the counts, the candidates' votes, how many people were written in, the signers and the
//! time; then each written-in name and its votes.
//!
//! Input is read a line at a time, so the prompts work from a terminal and from a pipe alike
//! (tests drive them with piped standard input).

use crate::error::{Error, Result};
use std::io::{BufRead, Write};
use tally_core::definition::{Contest, Definition, PollingUnit};
use tally_core::ids::{CandidateId, ContestId, UnitId};
use tally_core::sheet::{CandidateCount, CountClosedAt, Round, TallySheet, WriteIn, unix_seconds};

/// The most times one field is asked before giving up on unreadable answers.
pub const ASKS_PER_FIELD_MAX: usize = 20;
/// The most times the two clerks are asked again to settle their differences.
pub const RECONCILE_ROUNDS_MAX: usize = 20;
/// The most written-in names one sheet takes at the prompts (the sheet's own bound).
pub const WRITE_INS_MAX: u64 = tally_core::sheet::WRITE_INS_MAX as u64;
/// The UTC offset assumed when a clerk types a time without one: China Standard Time.
pub const DEFAULT_UTC_OFFSET_MINUTES: i32 = 8 * 60;

/// The kind of answer a field takes.
#[derive(Debug, Clone)]
enum Kind {
    /// A whole number.
    Count,
    /// One or more names, separated by commas or 、.
    Names,
    /// One name.
    Name,
    /// A date and time.
    Time,
    /// Some of a list, by number (`1,3`): the candidates on a later round's ballot.
    Picks { choices: usize },
}

/// One field of the form: the key as the sheet file writes it, and what the clerk sees.
#[derive(Debug, Clone)]
struct Field {
    key: String,
    label: String,
    kind: Kind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Value {
    Count(u64),
    Names(Vec<String>),
    Name(String),
    Time(CountClosedAt),
    Picks(Vec<usize>),
}

impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::Count(n) => write!(f, "{n}"),
            Value::Names(names) => write!(f, "{}", names.join("、")),
            Value::Name(name) => write!(f, "{name}"),
            Value::Time(at) => write!(f, "{at}"),
            Value::Picks(picks) => {
                let numbers: Vec<String> = picks.iter().map(|p| (p + 1).to_string()).collect();
                write!(f, "{}", numbers.join(","))
            }
        }
    }
}

impl Value {
    fn count(&self) -> u64 {
        match self {
            Value::Count(n) => *n,
            // The form asks a Count for every field read with this.
            other => unreachable!("a count field holds {other:?}"),
        }
    }
}

/// Where the prompts read and write, and whether a person is at a terminal (then the screen
/// is cleared between the clerks, so the second does not see the first's answers).
pub struct Prompter<R, W> {
    pub input: R,
    pub output: W,
    pub terminal: bool,
    /// Write each answer after its prompt: when the input is not typed at a terminal, the
    /// transcript then reads as a person's session would.
    pub echo: bool,
}

impl<R: BufRead, W: Write> Prompter<R, W> {
    fn line(&mut self) -> Result<String> {
        let mut line = String::new();
        if self.input.read_line(&mut line).map_err(Error::Prompt)? == 0 {
            return Err(Error::Fill(
                "the input ended before the sheet was complete; nothing was written".into(),
            ));
        }
        Ok(line.trim().to_owned())
    }

    fn say(&mut self, text: &str) -> Result<()> {
        writeln!(self.output, "{text}").map_err(Error::Prompt)?;
        Ok(())
    }

    fn ask(&mut self, field: &Field) -> Result<Value> {
        for _ in 0..ASKS_PER_FIELD_MAX {
            write!(self.output, "  {}: ", field.label).map_err(Error::Prompt)?;
            self.output.flush().map_err(Error::Prompt)?;
            let answer = self.line()?;
            if self.echo {
                writeln!(self.output, "{answer}").map_err(Error::Prompt)?;
            }
            match parse_answer(&field.kind, &answer) {
                Ok(value) => return Ok(value),
                Err(why) => {
                    writeln!(self.output, "    {why}; type it again").map_err(Error::Prompt)?;
                }
            }
        }
        Err(Error::Fill(format!(
            "{}: no readable answer after {ASKS_PER_FIELD_MAX} tries; nothing was written",
            field.key
        )))
    }

    /// Between the clerks at a terminal: wait for the next one and clear the screen.
    fn hand_over(&mut self, to: &str) -> Result<()> {
        if self.terminal {
            write!(
                self.output,
                "Hand the keyboard to the {to}, who presses Enter to begin. "
            )
            .map_err(Error::Prompt)?;
            self.output.flush().map_err(Error::Prompt)?;
            self.line()?;
            write!(self.output, "\x1b[2J\x1b[H").map_err(Error::Prompt)?;
        }
        Ok(())
    }

    /// Both clerks type `fields`; every difference is shown and typed again by both until
    /// they agree. Returns the agreed values, one per field.
    fn double_entry(&mut self, title: &str, fields: &[Field]) -> Result<Vec<Value>> {
        if fields.is_empty() {
            return Ok(Vec::new());
        }
        self.say(&format!(
            "\n== {title}: first clerk (第一录入员), type from the paper sheet =="
        ))?;
        let mut first = Vec::new();
        for field in fields {
            first.push(self.ask(field)?);
        }
        self.hand_over("second clerk (第二录入员)")?;
        self.say(&format!(
            "\n== {title}: second clerk (第二录入员), type from the paper sheet =="
        ))?;
        let mut second = Vec::new();
        for field in fields {
            second.push(self.ask(field)?);
        }
        for _ in 0..RECONCILE_ROUNDS_MAX {
            let differing: Vec<usize> = (0..fields.len())
                .filter(|&i| first[i] != second[i])
                .collect();
            if differing.is_empty() {
                self.say(&format!("{title}: both clerks agree on every field."))?;
                return Ok(first);
            }
            let mut table = tally_table::Table::new(&[
                ("field", tally_table::Align::Left),
                ("first clerk", tally_table::Align::Right),
                ("second clerk", tally_table::Align::Right),
            ]);
            for &i in &differing {
                table.row(vec![
                    fields[i].label.clone(),
                    first[i].to_string(),
                    second[i].to_string(),
                ]);
            }
            self.say(&format!(
                "\nThe clerks differ on {} field{} (两次录入不一致):\n{}Both clerks look at the paper sheet again and type these fields again.",
                differing.len(),
                if differing.len() == 1 { "" } else { "s" },
                table.render()
            ))?;
            self.say("\n-- first clerk (第一录入员) --")?;
            for &i in &differing {
                first[i] = self.ask(&fields[i])?;
            }
            self.hand_over("second clerk (第二录入员)")?;
            self.say("\n-- second clerk (第二录入员) --")?;
            for &i in &differing {
                second[i] = self.ask(&fields[i])?;
            }
        }
        Err(Error::Fill(format!(
            "the clerks still differ after {RECONCILE_ROUNDS_MAX} rounds; nothing was written: have the committee check the paper sheet, then fill it in again"
        )))
    }
}

/// Reads a clerk's answer; says what is wrong otherwise.
fn parse_answer(kind: &Kind, answer: &str) -> Result<Value, String> {
    let answer = to_halfwidth(answer);
    let answer = answer.trim();
    match kind {
        Kind::Count => {
            if answer.is_empty() {
                return Err("type a whole number (0 if none)".into());
            }
            if !answer.chars().all(|c| c.is_ascii_digit()) {
                return Err(format!(
                    "{answer:?} is not a whole number; type digits only, e.g. 1200"
                ));
            }
            answer
                .parse::<u64>()
                .map(Value::Count)
                .map_err(|_| format!("{answer} is too large"))
        }
        Kind::Names => {
            let names: Vec<String> = answer
                .split([',', '、', ';'])
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .map(str::to_owned)
                .collect();
            if names.is_empty() {
                return Err("type at least one name; separate names with commas or 、".into());
            }
            Ok(Value::Names(names))
        }
        Kind::Name => {
            if answer.is_empty() {
                return Err("type the name as written on the ballots".into());
            }
            Ok(Value::Name(answer.to_owned()))
        }
        Kind::Time => parse_time(answer).map(Value::Time),
        Kind::Picks { choices } => {
            let mut picks = Vec::new();
            for part in answer
                .split([',', '、', ' '])
                .filter(|p| !p.trim().is_empty())
            {
                let n: usize = part.trim().parse().map_err(|_| {
                    format!("{part:?} is not a number from the list; type numbers such as 1,3")
                })?;
                if n == 0 || n > *choices {
                    return Err(format!("{n} is not on the list (1 to {choices})"));
                }
                if !picks.contains(&(n - 1)) {
                    picks.push(n - 1);
                }
            }
            if picks.is_empty() {
                return Err(
                    "type the numbers of the candidates on this round's ballot, e.g. 1,3".into(),
                );
            }
            picks.sort_unstable();
            Ok(Value::Picks(picks))
        }
    }
}

/// Full-width digits and punctuation, as a Chinese input method types them, read as ASCII.
fn to_halfwidth(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '\u{FF10}'..='\u{FF19}' | '\u{FF0B}' | '\u{FF0D}' | '\u{FF1A}' => {
                char::from_u32(c as u32 - 0xFEE0).unwrap_or(c)
            }
            '，' => ',',
            '；' => ';',
            '\u{3000}' => ' ',
            c => c,
        })
        .collect()
}

/// Reads `2026-11-28 18:30`, `2026-11-28T18:30:00`, `2026/11/28 18:30`, each optionally
/// with an offset (`+08:00`, `Z`); without one, China Standard Time (+08:00).
fn parse_time(text: &str) -> Result<CountClosedAt, String> {
    const EXAMPLE: &str = "type the date and time the count closed, e.g. 2026-11-28 18:30";
    let text = text.trim().replace('T', " ").replace('/', "-");
    let (date, rest) = text
        .split_once(' ')
        .ok_or_else(|| format!("{text:?}: {EXAMPLE}"))?;
    let rest = rest.trim();
    let (time, offset_minutes) = if let Some(time) = rest.strip_suffix('Z') {
        (time.trim(), 0)
    } else if let Some(at) = rest.rfind(['+', '-']) {
        let (time, offset) = rest.split_at(at);
        let sign = if offset.starts_with('-') { -1 } else { 1 };
        let (h, m) = offset[1..]
            .split_once(':')
            .ok_or_else(|| format!("offset {offset:?}: write it as +08:00"))?;
        let h: i32 = h
            .parse()
            .map_err(|_| format!("offset {offset:?}: write it as +08:00"))?;
        let m: i32 = m
            .parse()
            .map_err(|_| format!("offset {offset:?}: write it as +08:00"))?;
        if h > 14 || m > 59 {
            return Err(format!("offset {offset:?} is not a UTC offset"));
        }
        (time.trim(), sign * (h * 60 + m))
    } else {
        (rest, DEFAULT_UTC_OFFSET_MINUTES)
    };
    let numbers = |s: &str, sep: char| -> Option<Vec<u32>> {
        s.split(sep).map(|p| p.trim().parse::<u32>().ok()).collect()
    };
    let date = numbers(date, '-').filter(|d| d.len() == 3);
    let time = numbers(time, ':').filter(|t| t.len() == 2 || t.len() == 3);
    let (Some(d), Some(t)) = (date, time) else {
        return Err(format!("{text:?}: {EXAMPLE}"));
    };
    let (year, month, day) = (d[0], d[1], d[2]);
    let (hour, minute, second) = (t[0], t[1], t.get(2).copied().unwrap_or(0));
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let days_in_month = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => 0,
    };
    if !(2000..=2999).contains(&year) || day == 0 || day > days_in_month {
        return Err(format!(
            "{year:04}-{month:02}-{day:02} is not a date; {EXAMPLE}"
        ));
    }
    if hour > 23 || minute > 59 || second > 59 {
        return Err(format!(
            "{hour:02}:{minute:02}:{second:02} is not a time of day"
        ));
    }
    Ok(CountClosedAt {
        unix_seconds: unix_seconds(
            i64::from(year),
            month,
            day,
            hour,
            minute,
            second,
            offset_minutes,
        ),
        utc_offset_minutes: offset_minutes,
    })
}

fn count(key: &str, label: &str) -> Field {
    Field {
        key: key.into(),
        label: format!("{label} ({key})"),
        kind: Kind::Count,
    }
}

/// What `fill` asks about: the unit, the contest and the round.
pub struct Form<'a> {
    pub definition: &'a Definition,
    pub unit: &'a PollingUnit,
    pub contest: &'a Contest,
    pub round: Round,
}

impl Form<'_> {
    /// Runs the double entry and returns the agreed sheet (version 1; `correct` makes later
    /// versions).
    pub fn fill<R: BufRead, W: Write>(&self, io: &mut Prompter<R, W>) -> Result<TallySheet> {
        let contest = self.contest;
        io.say(&format!(
            "Tally sheet of unit {} {}, contest {} {} ({} seat{}), round {}.",
            self.unit.id,
            self.unit.name,
            contest.id,
            contest.name,
            contest.seats,
            if contest.seats == 1 { "" } else { "s" },
            self.round.0
        ))?;
        io.say("Two clerks type every field of the paper sheet, one after the other; where they differ, both type it again.")?;

        // A later round's ballot may carry only some of the candidates (a further election
        // or a runoff between those tied): which ones is agreed first.
        let on_ballot: Vec<usize> = if self.round == Round::FIRST {
            (0..contest.candidates.len()).collect()
        } else {
            let list: Vec<String> = contest
                .candidates
                .iter()
                .enumerate()
                .map(|(i, c)| format!("{} {}", i + 1, c.name))
                .collect();
            let field = Field {
                key: "candidates".into(),
                label: format!(
                    "candidates on this round's ballot, by number ({}) (本轮候选人)",
                    list.join(", ")
                ),
                kind: Kind::Picks {
                    choices: contest.candidates.len(),
                },
            };
            match io.double_entry("The ballot", &[field])?.remove(0) {
                Value::Picks(picks) => picks,
                other => unreachable!("a picks field holds {other:?}"),
            }
        };

        let mut fields = vec![
            count("registered_voters", "registered voters 登记选民数"),
            count("ballots_issued", "ballots issued 发出选票"),
            count("ballots_collected", "ballots collected 收回选票"),
            count("ballots_void", "void ballots 无效票"),
            count("ballots_valid", "valid ballots 有效票"),
            count("ballots_blank", "blank ballots 空白票"),
            count("proxies", "proxy votes 委托投票"),
        ];
        let record_disapprovals = self.definition.rules.record_disapprovals;
        for &i in &on_ballot {
            let c = &contest.candidates[i];
            let key = format!("candidates[{}]", c.id);
            fields.push(count(
                &format!("{key}.approvals"),
                &format!("{} approvals 赞成票", c.name),
            ));
            if record_disapprovals {
                fields.push(count(
                    &format!("{key}.disapprovals"),
                    &format!("{} disapprovals 反对票", c.name),
                ));
                fields.push(count(
                    &format!("{key}.abstentions"),
                    &format!("{} abstentions 弃权票", c.name),
                ));
            }
        }
        fields.push(count(
            "write_ins",
            "people written in, how many names 另选他人人数",
        ));
        fields.push(Field {
            key: "scrutineers".into(),
            label: "scrutineers 监票人 (names, separated by 、)".into(),
            kind: Kind::Names,
        });
        fields.push(Field {
            key: "counters".into(),
            label: "counters 计票人 (names, separated by 、)".into(),
            kind: Kind::Names,
        });
        fields.push(Field {
            key: "count_closed_at".into(),
            label: "count closed at 计票结束时间 (e.g. 2026-11-28 18:30)".into(),
            kind: Kind::Time,
        });
        let main = io.double_entry("The counts", &fields)?;
        let value = |key: &str| -> &Value {
            let i = fields
                .iter()
                .position(|f| f.key == key)
                // Every key looked up here is one pushed above.
                .expect("the field is on the form");
            &main[i]
        };

        let write_in_count = value("write_ins").count();
        if write_in_count > WRITE_INS_MAX {
            return Err(Error::Fill(format!(
                "{write_in_count} people written in, more than a sheet holds ({WRITE_INS_MAX}); check the paper sheet"
            )));
        }
        let mut write_in_fields = Vec::new();
        for i in 0..write_in_count {
            write_in_fields.push(Field {
                key: format!("write_ins[{i}].name"),
                label: format!(
                    "written-in person {} name 姓名 (write_ins[{i}].name)",
                    i + 1
                ),
                kind: Kind::Name,
            });
            write_in_fields.push(count(
                &format!("write_ins[{i}].votes"),
                &format!("written-in person {} votes 得票", i + 1),
            ));
        }
        let write_in_values = io.double_entry("The people written in", &write_in_fields)?;

        let names = |key: &str| match value(key) {
            Value::Names(names) => names.clone(),
            other => unreachable!("a names field holds {other:?}"),
        };
        let count_closed_at = match value("count_closed_at") {
            Value::Time(at) => *at,
            other => unreachable!("a time field holds {other:?}"),
        };
        let candidates = on_ballot
            .iter()
            .map(|&i| {
                let id = &contest.candidates[i].id;
                let key = format!("candidates[{id}]");
                CandidateCount {
                    candidate: CandidateId::new(id.as_str()),
                    approvals: value(&format!("{key}.approvals")).count(),
                    disapprovals: record_disapprovals
                        .then(|| value(&format!("{key}.disapprovals")).count()),
                    abstentions: record_disapprovals
                        .then(|| value(&format!("{key}.abstentions")).count()),
                }
            })
            .collect();
        let write_ins = write_in_values
            .chunks(2)
            .map(|pair| WriteIn {
                name: pair[0].to_string(),
                votes: pair[1].count(),
            })
            .collect();
        Ok(TallySheet {
            unit: UnitId::new(self.unit.id.as_str()),
            contest: ContestId::new(contest.id.as_str()),
            round: self.round,
            version: 1,
            replaces_version: None,
            registered_voters: value("registered_voters").count(),
            ballots_issued: value("ballots_issued").count(),
            ballots_collected: value("ballots_collected").count(),
            ballots_void: value("ballots_void").count(),
            ballots_valid: value("ballots_valid").count(),
            ballots_blank: value("ballots_blank").count(),
            proxies: value("proxies").count(),
            candidates,
            write_ins,
            scrutineers: names("scrutineers"),
            counters: names("counters"),
            count_closed_at,
        })
    }
}

/// The sheet file a clerk can read: the sheet in the `sheet_file` format, with a heading
/// that says what it is and each candidate's name beside its id.
pub fn sheet_file_text(form: &Form<'_>, sheet: &TallySheet) -> String {
    let mut text = format!(
        "# Tally sheet of unit {} {}, contest {} {}, round {}.\n# Filled in by double entry at the prompts of `tally village fill`: two clerks agreed on every field.\n",
        form.unit.id, form.unit.name, form.contest.id, form.contest.name, sheet.round.0
    );
    for line in tally_core::sheet_file::to_toml(sheet).lines() {
        text.push_str(line);
        if let Some(id) = line
            .strip_prefix("id = \"")
            .and_then(|rest| rest.strip_suffix('"'))
            && let Some(c) = form.contest.candidates.iter().find(|c| c.id.as_str() == id)
        {
            text.push_str(&format!(" # {}", c.name.replace('\n', " ")));
        }
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    // Goal: the answers a clerk types are read as meant, and a bad one says what to type.
    #[test]
    fn answers() {
        assert_eq!(parse_answer(&Kind::Count, " 1200 "), Ok(Value::Count(1200)));
        assert_eq!(parse_answer(&Kind::Count, "１２０"), Ok(Value::Count(120)));
        assert!(
            parse_answer(&Kind::Count, "1,200")
                .unwrap_err()
                .contains("digits only")
        );
        assert!(parse_answer(&Kind::Count, "-3").is_err());
        assert_eq!(
            parse_answer(&Kind::Names, "王五、赵六，钱七"),
            Ok(Value::Names(vec![
                "王五".into(),
                "赵六".into(),
                "钱七".into()
            ]))
        );
        assert!(parse_answer(&Kind::Names, " ").is_err());
        let Ok(Value::Time(at)) = parse_answer(&Kind::Time, "2026-11-28 18:30") else {
            panic!("a time")
        };
        assert_eq!(at.to_string(), "2026-11-28T18:30:00+08:00");
        let Ok(Value::Time(at)) = parse_answer(&Kind::Time, "2026/11/28T10:30:05Z") else {
            panic!("a time")
        };
        assert_eq!(at.to_string(), "2026-11-28T10:30:05+00:00");
        assert!(parse_answer(&Kind::Time, "2026-02-30 10:00").is_err());
        assert!(parse_answer(&Kind::Time, "18:30").is_err());
        assert_eq!(
            parse_answer(&Kind::Picks { choices: 3 }, "3, 1"),
            Ok(Value::Picks(vec![0, 2]))
        );
        assert!(parse_answer(&Kind::Picks { choices: 3 }, "4").is_err());
    }
}
