//! `tally committee papers`: the official papers, printable on A4, made from an evidence
//! bundle (`tally export`) after `tally verify` has replayed it, so that they say only what
//! the record proves (docs/design/committee.md, "The papers"):
//!
//! - 选举结果报告单, one per constituency: registered voters, ballots issued and collected,
//!   void and valid, every candidate's votes and the written-in names in every round, the
//!   outcome, the committee's decisions, the scrutineers and counters of each unit;
//! - 当选代表名单, one per congress, of the confirmed contests only, names in surname-stroke
//!   order (`tally_core::strokes`); the deputies of contests not yet confirmed go on a separate
//!   draft marked 未确认 / DRAFT on every page;
//! - 当选证书, one page per deputy of a confirmed contest.
//!
//! Every page carries the election, its mode, the log index and the chain head it reflects.

use crate::publish::{escape, file_safe};
use crate::say;
use anyhow::{Context, Result, bail};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use tally_core::committee::DecisionNote;
use tally_core::congress::Level;
use tally_core::definition::{Definition, Mode};
use tally_core::ids::ContestId;
use tally_core::results::{ContestResult, ElectionResult, Person, RoundKind, RoundStatus};
use tally_core::sheet::TallySheet;
use tally_core::strokes::surname_order;
use tally_evidence::{Anchors, Replayed, VerifyReport};

const STYLE: &str = r#"
  @page { size: A4; margin: 18mm 16mm 22mm; }
  body { font-family: "Noto Serif CJK SC", "Source Han Serif SC", "Songti SC", "SimSun", "Noto Sans CJK SC", serif; color: #000; background: #fff; max-width: 178mm; margin: 0 auto; line-height: 1.5; font-size: 11pt; }
  h1 { text-align: center; font-size: 19pt; letter-spacing: 0.15em; margin: 0.4em 0 0.2em; }
  .sub { text-align: center; margin: 0 0 1em; }
  h2 { font-size: 13pt; margin: 1em 0 0.3em; }
  table { width: 100%; border-collapse: collapse; margin: 0.3em 0 0.6em; }
  th, td { border: 1px solid #000; padding: 2pt 5pt; text-align: left; vertical-align: top; }
  td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }
  .paper { page-break-after: always; break-after: page; }
  .paper:last-child { page-break-after: auto; break-after: auto; }
  .record { position: fixed; bottom: 0; left: 0; right: 0; font-size: 8pt; text-align: center; border-top: 1px solid #000; padding-top: 2pt; background: #fff; }
  .mark { position: fixed; top: 40%; left: 0; right: 0; text-align: center; font-size: 64pt; font-weight: bold; color: rgba(0, 0, 0, 0.13); transform: rotate(-30deg); pointer-events: none; }
  .banner { border: 3px solid #000; text-align: center; font-weight: bold; padding: 3pt; margin: 0 0 0.8em; }
  .signatures { margin-top: 2.5em; break-inside: avoid; }
  .signatures p { margin: 1.2em 0; }
  .certificate { text-align: center; padding-top: 40mm; font-size: 16pt; line-height: 2.2; }
  .certificate h1 { font-size: 32pt; letter-spacing: 0.5em; margin-bottom: 1.5em; }
  .certificate .body { text-align: left; text-indent: 2em; margin: 0 12mm; }
  .certificate .seal { text-align: right; margin: 3em 12mm 0; }
"#;

/// What a page says of where it comes from, and how it is marked.
struct Frame<'a> {
    election: &'a str,
    mode: Mode,
    log_index: u64,
    head: &'a str,
}

impl Frame<'_> {
    fn page(&self, title: &str, body: &str, draft: bool) -> String {
        let mut marks = String::new();
        let mut prefix = String::new();
        if self.mode == Mode::Rehearsal {
            prefix.push_str("【演练 REHEARSAL】");
            marks.push_str(
                "<div class=\"banner\">演练 / REHEARSAL：本文件出自演练，不是选举结果</div>\n",
            );
        }
        if draft {
            prefix.push_str("【未确认 DRAFT】");
            marks.push_str("<div class=\"banner\">未确认 / DRAFT：选举委员会尚未确认以下选区的选举结果，本名单不是正式名单</div>\n");
        }
        let watermark = match (self.mode == Mode::Rehearsal, draft) {
            (true, true) => "演练 · 未确认",
            (true, false) => "演练 REHEARSAL",
            (false, true) => "未确认 DRAFT",
            (false, false) => "",
        };
        let watermark = if watermark.is_empty() {
            String::new()
        } else {
            format!("<div class=\"mark\">{watermark}</div>\n")
        };
        format!(
            "<!DOCTYPE html>\n<html lang=\"zh-CN\">\n<head>\n<meta charset=\"utf-8\">\n<title>{prefix}{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n{watermark}<div class=\"record\">选举 {} · {} · 日志索引 log index {} · 链头 chain head {}</div>\n{marks}{body}</body>\n</html>\n",
            escape(title),
            escape(self.election),
            self.mode.banner(),
            self.log_index,
            escape(self.head),
        )
    }
}

fn round_kind(kind: RoundKind) -> &'static str {
    match kind {
        RoundKind::First => "选举",
        RoundKind::Repeat => "重新选举",
        RoundKind::Revote => "再次投票",
        RoundKind::Further => "另行选举",
    }
}

fn round_outcome(status: &RoundStatus) -> String {
    match status {
        RoundStatus::Pending => "计票中".into(),
        RoundStatus::VoidArt44 { issued, collected } => {
            format!(
                "收回选票 {collected} 张多于发出选票 {issued} 张，选举无效（第四十四条），重新选举"
            )
        }
        RoundStatus::TurnoutFailed { voted, registered } => format!(
            "参加投票 {voted} 人，未超过选民 {registered} 人的半数，选举无效（第四十五条），重新选举"
        ),
        RoundStatus::VoidByCommittee { decision } => {
            format!("选举委员会决定 {decision}：本轮选举无效，重新选举")
        }
        RoundStatus::Decided => "有效".into(),
    }
}

/// The papers written, for the caller to print.
pub struct Papers {
    pub files: Vec<PathBuf>,
    pub reports: usize,
    pub confirmed_deputies: usize,
    pub draft_deputies: usize,
    pub corrigenda: usize,
}

/// `tally committee papers`: verify the bundle, then write the papers into `out`.
pub fn run(bundle: &Path, anchors: &Anchors, out: &Path) -> Result<Papers> {
    let (report, replayed) = tally_evidence::verify_replayed(bundle, anchors)
        .with_context(|| format!("cannot verify {}", bundle.display()))?;
    if !report.ok {
        bail!(
            "{} does not verify ({} finding(s); `tally verify {}` lists them): no paper is printed from evidence that does not hold",
            bundle.display(),
            report.findings_total,
            bundle.display()
        );
    }
    write(&report, &replayed, out)
}

fn write(report: &VerifyReport, replayed: &Replayed, out: &Path) -> Result<Papers> {
    if out.exists()
        && std::fs::read_dir(out)
            .with_context(|| format!("cannot list {}", out.display()))?
            .next()
            .is_some()
    {
        bail!(
            "{} is not empty; give a new folder for the papers",
            out.display()
        );
    }
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let d = &replayed.definition;
    let result = &replayed.result;
    let frame = Frame {
        election: &d.election.name,
        mode: d.election.mode,
        log_index: report.log_index,
        head: &report.chain_head,
    };
    let mut papers = Papers {
        files: Vec::new(),
        reports: 0,
        confirmed_deputies: 0,
        draft_deputies: 0,
        corrigenda: 0,
    };
    let mut save = |name: String, text: String| -> Result<()> {
        let path = out.join(name);
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
        papers.files.push(path);
        Ok(())
    };

    // 选举结果报告单: every constituency, one page each, in one file per congress.
    // The sheets that count, by contest, gathered once (each as the committee's decisions
    // have it: a kept sheet, a recount).
    let mut counted: BTreeMap<&ContestId, Vec<&TallySheet>> = BTreeMap::new();
    for sheet in replayed.ledger.counted() {
        let sheet = replayed.decisions.effective(&replayed.ledger, sheet);
        counted.entry(&sheet.contest).or_default().push(sheet);
    }
    for (area, level, contests) in congresses(d, result) {
        let mut body = String::new();
        for c in &contests {
            let sheets = counted.get(&c.contest).map_or(&[][..], Vec::as_slice);
            body.push_str(&contest_report(d, c, sheets));
        }
        let key = file_safe(&area_key(level, contests[0]));
        save(
            format!("reports-{key}.html"),
            frame.page(
                &format!("{area}人民代表大会代表选举结果报告单"),
                &body,
                false,
            ),
        )?;
        papers.reports += contests.len();

        // 当选代表名单: the confirmed contests; the others on a draft.
        let (confirmed, draft): (Vec<&ContestResult>, Vec<&ContestResult>) =
            contests.iter().partition(|c| c.confirmed.is_some());
        let title = format!("{area}人民代表大会代表当选名单");
        let list = elected_list(&title, &area, &confirmed, level, d);
        papers.confirmed_deputies += confirmed.iter().map(|c| c.elected.len()).sum::<usize>();
        save(
            format!("elected-{key}.html"),
            frame.page(&title, &list, false),
        )?;
        if !draft.is_empty() {
            let list = elected_list(&title, &area, &draft, level, d);
            papers.draft_deputies += draft.iter().map(|c| c.elected.len()).sum::<usize>();
            save(
                format!("elected-{key}-draft.html"),
                frame.page(&title, &list, true),
            )?;
        }

        // 更正单: every recount the committee entered, original and corrected side by side.
        let mut corrigenda = String::new();
        for c in &contests {
            let Some(decided) = replayed.decisions.contest(&c.contest) else {
                continue;
            };
            for (slot, r) in &decided.recounted {
                corrigenda.push_str(&corrigendum(d, c, slot, r));
                papers.corrigenda += 1;
            }
        }
        if !corrigenda.is_empty() {
            save(
                format!("corrigenda-{key}.html"),
                frame.page(
                    &format!("{area}人民代表大会代表选举计票更正单"),
                    &corrigenda,
                    false,
                ),
            )?;
        }

        // 当选证书: one per deputy of a confirmed contest, in surname-stroke order.
        let mut deputies: Vec<(&str, &ContestResult)> = confirmed
            .iter()
            .flat_map(|c| c.elected.iter().map(move |e| (e.name.as_str(), *c)))
            .collect();
        deputies.sort_by(|a, b| surname_order(a.0, b.0));
        if !deputies.is_empty() {
            let mut body = String::new();
            for (name, c) in deputies {
                let _ = write!(
                    body,
                    "<div class=\"paper certificate\"><h1>当选证书</h1>\n<p class=\"body\">{} 同志：</p>\n<p class=\"body\">经{}选民依法选举，当选为{}人民代表大会代表。</p>\n<p class=\"body\">特发此证。</p>\n<p class=\"seal\">{}选举委员会（盖章）<br>________ 年 ____ 月 ____ 日</p></div>\n",
                    escape(name),
                    escape(&c.name),
                    escape(&area),
                    escape(&area),
                );
            }
            save(
                format!("certificates-{key}.html"),
                frame.page(&format!("{area}人民代表大会代表当选证书"), &body, false),
            )?;
        }
    }
    Ok(papers)
}

/// The congresses, each with its name, level and contests: the county's, then each
/// township's, in definition order.
fn congresses<'a>(
    d: &Definition,
    result: &'a ElectionResult,
) -> Vec<(String, Level, Vec<&'a ContestResult>)> {
    let mut out = Vec::new();
    let county: Vec<&ContestResult> = result
        .contests
        .iter()
        .filter(|c| c.level == Level::County)
        .collect();
    if !county.is_empty() {
        out.push((d.county.name.clone(), Level::County, county));
    }
    for t in &d.townships {
        let contests: Vec<&ContestResult> = result
            .contests
            .iter()
            .filter(|c| c.level == Level::Township && c.township == t.id)
            .collect();
        if !contests.is_empty() {
            out.push((t.name.clone(), Level::Township, contests));
        }
    }
    out
}

fn area_key(level: Level, first: &ContestResult) -> String {
    match level {
        Level::County => "county".to_owned(),
        Level::Township => first.township.to_string(),
    }
}

fn elected_list(
    title: &str,
    area: &str,
    contests: &[&ContestResult],
    level: Level,
    d: &Definition,
) -> String {
    let mut deputies: Vec<(&str, &ContestResult)> = contests
        .iter()
        .flat_map(|c| c.elected.iter().map(move |e| (e.name.as_str(), *c)))
        .collect();
    deputies.sort_by(|a, b| surname_order(a.0, b.0));
    let mut body = String::new();
    let _ = writeln!(body, "<div class=\"paper\">\n<h1>{}</h1>", escape(title));
    let _ = writeln!(
        body,
        "<p class=\"sub\">（{} 名，按姓氏笔画为序）</p>",
        deputies.len()
    );
    let _ = writeln!(
        body,
        "<table><thead><tr><th class=\"n\">序号</th><th>姓名</th><th>选区</th><th>确认</th></tr></thead><tbody>"
    );
    for (i, (name, c)) in deputies.iter().enumerate() {
        let _ = writeln!(
            body,
            "<tr><td class=\"n\">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            i + 1,
            escape(name),
            escape(&c.name),
            c.confirmed
                .as_ref()
                .map_or_else(|| "未确认".to_owned(), |l| escape(&l.confirmation))
        );
    }
    let _ = writeln!(body, "</tbody></table>");
    let committee = match level {
        Level::County => format!("{}选举委员会", d.county.name),
        Level::Township => format!("{area}选举委员会"),
    };
    let _ = writeln!(
        body,
        "<div class=\"signatures\"><p>{}（盖章）</p><p>主任（签名）：______________________</p><p>日期：________ 年 ____ 月 ____ 日</p></div>\n</div>",
        escape(&committee)
    );
    body
}

/// One recount's 更正单: the sheet that counted before and the committee's recount, figure by
/// figure.
fn corrigendum(
    d: &Definition,
    c: &ContestResult,
    slot: &tally_core::sheet::SheetSlot,
    r: &tally_core::committee::Recounted,
) -> String {
    let unit = d
        .unit(&slot.unit)
        .map_or_else(|| slot.unit.to_string(), |u| format!("{} {}", u.id, u.name));
    let reason = c
        .decisions
        .iter()
        .find(|n| n.id == r.decision)
        .map_or("", |n| n.reason.as_str());
    let mut rows: Vec<(String, Option<u64>, u64)> = Vec::new();
    let o = r.original.as_ref();
    let s = &r.sheet;
    for (label, original, corrected) in [
        (
            "登记选民",
            o.map(|o| o.registered_voters),
            s.registered_voters,
        ),
        ("发出选票", o.map(|o| o.ballots_issued), s.ballots_issued),
        (
            "收回选票",
            o.map(|o| o.ballots_collected),
            s.ballots_collected,
        ),
        ("无效票", o.map(|o| o.ballots_void), s.ballots_void),
        ("有效票", o.map(|o| o.ballots_valid), s.ballots_valid),
        ("空白票", o.map(|o| o.ballots_blank), s.ballots_blank),
    ] {
        rows.push((label.to_owned(), original, corrected));
    }
    let contest = d.contest(&c.contest);
    let name_of = |id: &tally_core::ids::CandidateId| {
        contest
            .and_then(|k| k.candidates.iter().find(|x| &x.id == id))
            .map_or_else(|| id.to_string(), |x| x.name.clone())
    };
    for cand in &s.candidates {
        let before = o.and_then(|o| {
            o.candidates
                .iter()
                .find(|x| x.candidate == cand.candidate)
                .map(|x| x.approvals)
        });
        rows.push((name_of(&cand.candidate), before, cand.approvals));
    }
    let mut names: Vec<String> = s.write_ins.iter().map(|w| w.name.clone()).collect();
    for w in o.into_iter().flat_map(|o| o.write_ins.iter()) {
        if !names.contains(&w.name) {
            names.push(w.name.clone());
        }
    }
    for name in names {
        let of = |sheet: &tally_core::sheet::TallySheet| {
            sheet
                .write_ins
                .iter()
                .find(|w| w.name == name)
                .map_or(0, |w| w.votes)
        };
        rows.push((format!("{name}（另选他人）"), o.map(&of), of(s)));
    }
    let mut b = String::new();
    let _ = writeln!(b, "<div class=\"paper\">\n<h1>计票更正单</h1>");
    let _ = writeln!(
        b,
        "<p class=\"sub\">{} {} · 投票单位 {} · 第 {} 轮</p>",
        escape(c.contest.as_str()),
        escape(&c.name),
        escape(&unit),
        slot.round.0
    );
    let _ = writeln!(
        b,
        "<p>选举委员会决定 {}（日志索引 {}）：重新清点选票，以下列更正数为准。理由：{}</p>",
        escape(&r.decision),
        r.log_index,
        escape(reason)
    );
    let _ = writeln!(
        b,
        "<table><thead><tr><th>项目</th><th class=\"n\">原数</th><th class=\"n\">更正数</th><th>变化</th></tr></thead><tbody>"
    );
    for (label, before, after) in rows {
        let changed = before != Some(after);
        let _ = writeln!(
            b,
            "<tr><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{after}</td><td>{}</td></tr>",
            escape(&label),
            before.map_or_else(|| "—".to_owned(), |v| v.to_string()),
            if changed { "更正" } else { "" }
        );
    }
    let _ = writeln!(
        b,
        "</tbody></table>\n<p>原报告单与更正数均保存在选举记录中。</p>\n<div class=\"signatures\"><p>选举委员会（盖章）</p><p>主任（签名）：______________________</p></div>\n</div>"
    );
    b
}

/// One constituency's 选举结果报告单; `sheets` are the sheets that count in it.
fn contest_report(d: &Definition, c: &ContestResult, sheets: &[&TallySheet]) -> String {
    let mut b = String::new();
    let _ = writeln!(b, "<div class=\"paper\">");
    let _ = writeln!(b, "<h1>选举结果报告单</h1>");
    let _ = writeln!(
        b,
        "<p class=\"sub\">{} {}（{}，应选代表 {} 名，登记选民 {} 人）</p>",
        escape(c.contest.as_str()),
        escape(&c.name),
        match c.level {
            Level::County => "县级人大代表",
            Level::Township => "乡级人大代表",
        },
        c.seats,
        c.registered_voters
    );
    for r in &c.rounds {
        let _ = writeln!(
            b,
            "<h2>第 {} 轮（{}，{} 个名额）：{}</h2>",
            r.round,
            round_kind(r.kind),
            r.seats,
            escape(&round_outcome(&r.status))
        );
        let t = &r.totals;
        let _ = writeln!(
            b,
            "<table><tr><th>登记选民</th><th>发出选票（投票人数）</th><th>收回选票</th><th>无效票</th><th>有效票</th><th>报告单位</th></tr><tr><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{} / {}</td></tr></table>",
            t.registered_voters,
            t.ballots_issued,
            t.ballots_collected,
            t.ballots_void,
            t.ballots_valid,
            r.units_reported,
            r.units_expected
        );
        let _ = writeln!(
            b,
            "<table><thead><tr><th>姓名</th><th></th><th class=\"n\">得票数</th><th>结果</th></tr></thead><tbody>"
        );
        for v in &r.votes {
            let elected = r.elected.iter().any(|e| e.person == v.person);
            let _ = writeln!(
                b,
                "<tr><td>{}</td><td>{}</td><td class=\"n\">{}</td><td>{}</td></tr>",
                escape(&v.name),
                match v.person {
                    Person::Candidate(_) => "候选人",
                    Person::WriteIn(_) => "另选他人",
                },
                v.votes,
                if elected { "当选" } else { "" }
            );
        }
        let _ = writeln!(b, "</tbody></table>");
    }
    let elected: Vec<&str> = c.elected.iter().map(|e| e.name.as_str()).collect();
    let _ = writeln!(
        b,
        "<p><b>结果：</b>当选 {} 名{}{}。</p>",
        elected.len(),
        if elected.is_empty() {
            String::new()
        } else {
            format!("：{}", escape(&elected.join("、")))
        },
        if c.vacancies > 0 {
            format!("；缺额 {} 名", c.vacancies)
        } else {
            String::new()
        }
    );
    if !c.decisions.is_empty() {
        let _ = writeln!(b, "<h2>选举委员会的决定</h2><table><tbody>");
        for n in &c.decisions {
            let DecisionNote {
                id,
                log_index,
                reason,
                what,
                ..
            } = n;
            let _ = writeln!(
                b,
                "<tr><td>{}</td><td class=\"n\">{}</td><td>{}{}</td></tr>",
                escape(id),
                log_index,
                escape(what),
                if reason.is_empty() {
                    String::new()
                } else {
                    format!("（理由：{}）", escape(reason))
                }
            );
        }
        let _ = writeln!(b, "</tbody></table>");
    }
    let _ = writeln!(
        b,
        "<p><b>确认：</b>{}</p>",
        match &c.confirmed {
            Some(l) => format!(
                "选举委员会确认选举结果有效（{}，日志索引 {}）",
                escape(&l.confirmation),
                l.log_index
            ),
            None => "选举委员会尚未确认（未确认 / DRAFT）".to_owned(),
        }
    );
    // The scrutineers and counters each unit named on the sheets that count.
    let mut signers = String::new();
    for sheet in sheets {
        let unit = d
            .unit(&sheet.unit)
            .map_or_else(|| sheet.unit.to_string(), |u| u.name.clone());
        let _ = writeln!(
            signers,
            "<tr><td>{}</td><td class=\"n\">{}</td><td>{}</td><td>{}</td></tr>",
            escape(&unit),
            sheet.round.0,
            escape(&sheet.scrutineers.join("、")),
            escape(&sheet.counters.join("、"))
        );
    }
    if !signers.is_empty() {
        let _ = writeln!(
            b,
            "<h2>监票人、计票人</h2><table><thead><tr><th>投票单位</th><th class=\"n\">轮次</th><th>监票人</th><th>计票人</th></tr></thead><tbody>\n{signers}</tbody></table>"
        );
    }
    let _ = writeln!(b, "</div>");
    b
}

/// Prints what was written.
pub fn say_written(papers: &Papers, out: &Path) {
    say!(
        "wrote the papers in {}: {} 选举结果报告单, {} deputies on the lists of confirmed contests, {} on drafts (未确认 / DRAFT), {} 计票更正单",
        out.display(),
        papers.reports,
        papers.confirmed_deputies,
        papers.draft_deputies,
        papers.corrigenda
    );
    for f in &papers.files {
        say!("  {}", f.display());
    }
}
