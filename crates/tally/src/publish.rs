//! `tally publish`: the committee's publication of the list of elected deputies (当选代表名单)
//! as printable HTML, one report per congress (the county's, and each township's), with CSV
//! and JSON exports of every contest's result.
//!
//! The result comes from the county cluster (County.Results, as an operator), from a results
//! JSON (`tally cluster results --format json` or `tally results --format json`), or is
//! computed here from signed sheets; in every case it is read through the same JSON form of
//! `tally_core::results::ElectionResult`, so the three give the same files. Nothing here
//! decides an outcome: who is elected, what is vacant and what round is pending are the
//! result's.

use crate::client::{ClientArgs, client_config, operator_files, runtime};
use crate::outcome::Outcome;
use crate::say;
use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use serde::Deserialize;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use tally_rpc::pb;
use tally_rpc::pb::county_client::CountyClient;

#[derive(Args)]
pub struct PublishArgs {
    /// County replicas (host:port, comma-separated): publish the county's results.
    #[arg(long, value_delimiter = ',', env = "TALLY_SERVERS", requires = "pki",
          conflicts_with_all = ["result", "definition"])]
    pub servers: Vec<String>,
    /// The folder with ca.pem and the operator's certificate (with --servers).
    #[arg(long, env = "TALLY_PKI")]
    pub pki: Option<PathBuf>,
    /// The operator certificate to use (operator-NAME.pem in --pki).
    #[arg(long, default_value = "operator")]
    pub operator: String,
    /// A results JSON file (`tally cluster results --format json`, or `tally results
    /// --format json`).
    #[arg(long, conflicts_with = "definition")]
    pub result: Option<PathBuf>,
    /// Compute the result here from signed sheets: the election definition (with --sheets).
    #[arg(long, short, requires = "sheets")]
    pub definition: Option<PathBuf>,
    /// Signed-sheet bundles (.sheets), or folders of them (with --definition).
    #[arg(long, short, num_args = 1..)]
    pub sheets: Vec<PathBuf>,
    /// The folder to write (new or empty).
    #[arg(long, short)]
    pub out: PathBuf,
}

// ---- The result as its JSON gives it: only what the publication prints. ----

#[derive(Deserialize)]
pub struct Published {
    pub election: String,
    /// `rehearsal` or `official`; absent in results from before the mode existed.
    #[serde(default)]
    pub mode: String,
    pub contests: Vec<Contest>,
    #[serde(default)]
    pub townships: Vec<Area>,
    pub county: Option<County>,
}

#[derive(Deserialize)]
pub struct Area {
    pub township: String,
    pub name: String,
}

#[derive(Deserialize)]
pub struct County {
    pub county: String,
    pub name: String,
}

#[derive(Deserialize)]
pub struct Contest {
    pub contest: String,
    pub name: String,
    /// `county` or `township`.
    pub level: String,
    pub township: String,
    pub seats: u32,
    pub status: String,
    #[serde(default)]
    pub rounds: Vec<Round>,
    pub elected: Vec<Elected>,
    pub seats_filled: u32,
    pub vacancies: u32,
    pub next_round: Option<NextRound>,
}

#[derive(Deserialize)]
pub struct Round {
    pub round: u32,
    pub kind: String,
    /// `"Pending"`, `"Decided"`, or `{"VoidArt44": ...}`, `{"TurnoutFailed": ...}`.
    pub status: serde_json::Value,
    pub units_reported: u64,
    pub units_expected: u64,
    pub totals: Totals,
    pub votes: Vec<Votes>,
    pub elected: Vec<Elected>,
}

#[derive(Deserialize)]
pub struct Totals {
    pub registered_voters: u64,
    pub ballots_issued: u64,
    pub ballots_collected: u64,
    pub ballots_void: u64,
}

#[derive(Deserialize)]
pub struct Votes {
    /// `{"Candidate": "C01"}` or `{"WriteIn": "name"}`.
    pub person: serde_json::Value,
    pub name: String,
    pub votes: u64,
}

#[derive(Deserialize)]
pub struct Elected {
    pub person: serde_json::Value,
    pub name: String,
    pub votes: u64,
    pub round: u32,
}

#[derive(Deserialize)]
pub struct NextRound {
    pub round: u32,
    pub kind: String,
    pub seats: u32,
}

/// The result JSON as the county serves it, or wrapped as `tally results --format json`
/// prints it (`{"intake": ..., "result": ...}`).
pub fn parse_result(json: &serde_json::Value) -> Result<Published> {
    let inner = json.get("result").unwrap_or(json);
    serde_json::from_value(inner.clone()).context(
        "this is not an election result (the JSON `tally cluster results --format json` prints)",
    )
}

/// What was written, for the summary line and for tests.
pub struct Written {
    pub files: Vec<PathBuf>,
    pub contests: usize,
    pub elected: usize,
    pub vacancies: u32,
    pub pending: usize,
}

/// `tally publish`.
pub fn run(args: PublishArgs) -> Result<Outcome> {
    let json = if !args.servers.is_empty() {
        let pki = args
            .pki
            .clone()
            .ok_or_else(|| anyhow!("--servers needs --pki"))?;
        let client = ClientArgs {
            servers: args.servers.clone(),
            pki,
        };
        runtime()?.block_on(fetch(&client, &args.operator))?
    } else if let Some(path) = &args.result {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?
    } else if let Some(definition) = &args.definition {
        let definition = tally_files::load_definition(definition)?;
        let bundles = tally_files::read_bundles(&args.sheets)?;
        let intake = tally_evidence::intake::intake(&definition, &bundles);
        let result = tally_core::results::compute(&definition, &intake.ledger);
        serde_json::to_value(&result)?
    } else {
        bail!("give --servers and --pki, --result FILE, or --definition and --sheets");
    };
    let published = parse_result(&json)?;
    let written = write_all(&published, &json, &args.out)?;
    say!(
        "published {} contests: {} deputies elected, {} seat(s) vacant, {} contest(s) pending a further round",
        written.contests,
        written.elected,
        written.vacancies,
        written.pending
    );
    for f in &written.files {
        say!("  {}", f.display());
    }
    Ok(if written.pending > 0 {
        Outcome::Findings
    } else {
        Outcome::Clean
    })
}

/// The county's whole result, linearizable, from the first replica that answers.
async fn fetch(client: &ClientArgs, operator: &str) -> Result<serde_json::Value> {
    let files = operator_files(&client.pki, operator)?;
    let tls = client_config(&files)?;
    let mut errors = Vec::new();
    for address in &client.servers {
        let mut county = CountyClient::new(crate::client::channel(&tls, address)?)
            .max_decoding_message_size(1 << 30);
        match county.results(pb::ResultsRequest::default()).await {
            Ok(r) => {
                let r = r.into_inner();
                return serde_json::from_str(&r.result_json)
                    .with_context(|| format!("{address}: the result is not JSON"));
            }
            Err(status) => errors.push(format!("{address}: {}", status.message())),
        }
    }
    bail!("no replica could answer:\n  {}", errors.join("\n  "))
}

/// Writes the reports and exports into `out` (new or empty).
pub fn write_all(published: &Published, json: &serde_json::Value, out: &Path) -> Result<Written> {
    if out.exists()
        && std::fs::read_dir(out)
            .with_context(|| format!("cannot list {}", out.display()))?
            .next()
            .is_some()
    {
        bail!(
            "{} is not empty; give a new folder to publish into",
            out.display()
        );
    }
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let mut files = Vec::new();
    let mut write = |name: &str, contents: &str| -> Result<()> {
        let path = out.join(name);
        std::fs::write(&path, contents)
            .with_context(|| format!("cannot write {}", path.display()))?;
        files.push(path);
        Ok(())
    };
    let rehearsal = published.mode == "rehearsal";
    let county_name = published
        .county
        .as_ref()
        .map_or_else(String::new, |c| c.name.clone());
    let county_contests: Vec<&Contest> = published
        .contests
        .iter()
        .filter(|c| c.level == "county")
        .collect();
    let mut index = Vec::new();
    if !county_contests.is_empty() {
        let name = "elected-county.html";
        write(
            name,
            &congress_html(
                &published.election,
                rehearsal,
                &county_name,
                &county_contests,
            ),
        )?;
        index.push((name.to_owned(), format!("{county_name}人民代表大会")));
    }
    let mut townships: Vec<(&str, String)> = Vec::new();
    for c in published.contests.iter().filter(|c| c.level == "township") {
        if !townships.iter().any(|(t, _)| *t == c.township) {
            let name = published
                .townships
                .iter()
                .find(|a| a.township == c.township)
                .map_or_else(|| c.township.clone(), |a| a.name.clone());
            townships.push((&c.township, name));
        }
    }
    for (township, name) in &townships {
        let contests: Vec<&Contest> = published
            .contests
            .iter()
            .filter(|c| c.level == "township" && c.township == *township)
            .collect();
        let file = format!("elected-{}.html", file_safe(township));
        write(
            &file,
            &congress_html(&published.election, rehearsal, name, &contests),
        )?;
        index.push((file, format!("{name}人民代表大会")));
    }
    write(
        "index.html",
        &index_html(&published.election, rehearsal, &index),
    )?;
    write("results.csv", &results_csv(published)?)?;
    write("contests.csv", &contests_csv(published)?)?;
    write("results.json", &serde_json::to_string_pretty(json)?)?;
    Ok(Written {
        files,
        contests: published.contests.len(),
        elected: published.contests.iter().map(|c| c.elected.len()).sum(),
        vacancies: published
            .contests
            .iter()
            .filter(|c| c.status == "Decided")
            .map(|c| c.vacancies)
            .sum(),
        pending: published
            .contests
            .iter()
            .filter(|c| c.status != "Decided")
            .count(),
    })
}

pub(crate) fn file_safe(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Text for HTML (element content and attribute values).
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A4 pages, a CJK serif for print and a CJK sans on screen, black on white.
const STYLE: &str = r#"
  @page { size: A4; margin: 20mm 18mm; }
  body { font-family: "Noto Serif CJK SC", "Source Han Serif SC", "Songti SC", "SimSun", "STSong", "Noto Sans CJK SC", "Microsoft YaHei", serif; color: #000; background: #fff; max-width: 180mm; margin: 0 auto; line-height: 1.6; font-size: 12pt; }
  h1 { text-align: center; font-size: 20pt; margin: 0.5em 0 0.2em; letter-spacing: 0.1em; }
  .election { text-align: center; margin: 0 0 1.5em; }
  h2 { font-size: 14pt; border-bottom: 1px solid #000; margin: 1.2em 0 0.4em; }
  table { width: 100%; border-collapse: collapse; margin: 0.3em 0 0.6em; }
  th, td { border: 1px solid #000; padding: 2pt 6pt; text-align: left; }
  td.votes, th.votes { text-align: right; font-variant-numeric: tabular-nums; }
  .note { margin: 0.2em 0; }
  .pending { border: 1px solid #000; padding: 4pt 8pt; margin: 1em 0; }
  .signatures { margin-top: 3em; page-break-inside: avoid; break-inside: avoid; }
  .signatures p { margin: 1.4em 0; }
  section.contest { page-break-inside: avoid; break-inside: avoid; }
  @media print { a { color: #000; text-decoration: none; } }
  .rehearsal-banner { border: 3px solid #000; text-align: center; font-size: 16pt; font-weight: bold; padding: 4pt; margin: 0 0 1em; letter-spacing: 0.1em; }
  .rehearsal-mark { position: fixed; top: 45%; left: 0; right: 0; text-align: center; font-size: 72pt; font-weight: bold; color: rgba(0, 0, 0, 0.12); transform: rotate(-30deg); pointer-events: none; z-index: 1; }
"#;

/// What a rehearsal's page carries, where nobody can miss it: a banner at the top and a
/// watermark fixed on the page (printed on every sheet of paper).
const REHEARSAL_MARKS: &str = "<div class=\"rehearsal-mark\">演练 REHEARSAL</div>\n\
     <div class=\"rehearsal-banner\">演练 / REHEARSAL：本文件出自演练，不是选举结果 — a rehearsal, not the election's result</div>\n";

fn page(title: &str, body: &str, rehearsal: bool) -> String {
    let (prefix, marks) = if rehearsal {
        ("【演练 REHEARSAL】", REHEARSAL_MARKS)
    } else {
        ("", "")
    };
    format!(
        "<!DOCTYPE html>\n<html lang=\"zh-CN\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{prefix}{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n{marks}{body}</body>\n</html>\n",
        escape(title)
    )
}

fn round_kind(kind: &str) -> &'static str {
    match kind {
        "First" => "选举",
        "Repeat" => "重新选举",
        "Revote" => "再次投票",
        "Further" => "另行选举",
        _ => "投票",
    }
}

/// The report of one congress: every contest's elected deputies with their votes, vacancies,
/// contests pending a further round, and the committee's signature block.
fn congress_html(election: &str, rehearsal: bool, area: &str, contests: &[&Contest]) -> String {
    let title = format!("{area}人民代表大会代表当选名单");
    let mut body = String::new();
    let _ = writeln!(body, "<h1>{}</h1>", escape(&title));
    let _ = writeln!(body, "<p class=\"election\">{}</p>", escape(election));
    let seats: u32 = contests.iter().map(|c| c.seats).sum();
    let elected: usize = contests.iter().map(|c| c.elected.len()).sum();
    let vacancies: u32 = contests
        .iter()
        .filter(|c| c.status == "Decided")
        .map(|c| c.vacancies)
        .sum();
    let pending: Vec<&&Contest> = contests.iter().filter(|c| c.status != "Decided").collect();
    let _ = writeln!(
        body,
        "<p class=\"note\">共 {} 个选区，应选代表 {seats} 名，当选 {elected} 名{}。</p>",
        contests.len(),
        if vacancies > 0 {
            format!("，缺额 {vacancies} 名")
        } else {
            String::new()
        }
    );
    if !pending.is_empty() {
        let _ = writeln!(
            body,
            "<div class=\"pending\"><strong>尚未最终确定：</strong>以下 {} 个选区仍在计票或须另行选举、再次投票，本名单不是最终名单。<ul>",
            pending.len()
        );
        for c in &pending {
            let _ = writeln!(
                body,
                "<li>{} {}：{}</li>",
                escape(&c.contest),
                escape(&c.name),
                escape(&pending_text(c))
            );
        }
        let _ = writeln!(body, "</ul></div>");
    }
    for c in contests {
        let _ = writeln!(body, "<section class=\"contest\">");
        let _ = writeln!(
            body,
            "<h2>{} {}（应选 {} 名）</h2>",
            escape(&c.contest),
            escape(&c.name),
            c.seats
        );
        if c.elected.is_empty() {
            let _ = writeln!(body, "<p class=\"note\">尚无当选代表。</p>");
        } else {
            let _ = writeln!(
                body,
                "<table><thead><tr><th>当选代表</th><th class=\"votes\">得票数</th><th>当选轮次</th></tr></thead><tbody>"
            );
            for e in &c.elected {
                let kind = c
                    .rounds
                    .iter()
                    .find(|r| r.round == e.round)
                    .map_or("投票", |r| round_kind(&r.kind));
                let _ = writeln!(
                    body,
                    "<tr><td>{}</td><td class=\"votes\">{}</td><td>第 {} 轮（{kind}）</td></tr>",
                    escape(&e.name),
                    e.votes,
                    e.round
                );
            }
            let _ = writeln!(body, "</tbody></table>");
        }
        if c.status == "Decided" && c.vacancies > 0 {
            let _ = writeln!(body, "<p class=\"note\">缺额 {} 名。</p>", c.vacancies);
        }
        if c.status != "Decided" {
            let _ = writeln!(body, "<p class=\"note\">{}</p>", escape(&pending_text(c)));
        }
        let _ = writeln!(body, "</section>");
    }
    let _ = writeln!(
        body,
        "<div class=\"signatures\">\n<p>{}选举委员会（盖章）</p>\n<p>主任（签名）：______________________</p>\n<p>委员（签名）：______________________________________________</p>\n<p>日期：________ 年 ____ 月 ____ 日</p>\n</div>",
        escape(area)
    );
    page(&title, &body, rehearsal)
}

/// Why a contest is not decided, in the committee's words.
fn pending_text(c: &Contest) -> String {
    match (c.status.as_str(), &c.next_round) {
        ("Counting", Some(n)) if n.round > 1 => format!(
            "第 {} 轮{}正在计票（{} 个名额）",
            n.round,
            round_kind(&n.kind),
            n.seats
        ),
        ("Counting", _) => "正在计票，尚有投票站未报".to_owned(),
        ("AwaitingRound", Some(n)) => format!(
            "须举行第 {} 轮{}（{} 个名额）",
            n.round,
            round_kind(&n.kind),
            n.seats
        ),
        ("CommitteeDecision", _) => "另行选举候选人名单票数相同，须由选举委员会决定".to_owned(),
        ("RoundLimit", _) => "投票轮次已达上限，须由选举委员会处理".to_owned(),
        _ => format!("状态：{}", c.status),
    }
}

fn index_html(election: &str, rehearsal: bool, reports: &[(String, String)]) -> String {
    let mut body = String::new();
    let _ = writeln!(body, "<h1>代表当选名单</h1>");
    let _ = writeln!(body, "<p class=\"election\">{}</p><ul>", escape(election));
    for (file, name) in reports {
        let _ = writeln!(
            body,
            "<li><a href=\"{}\">{}</a></li>",
            escape(file),
            escape(name)
        );
    }
    let _ = writeln!(
        body,
        "</ul><p>全部结果：<a href=\"results.csv\">results.csv</a>（每一候选人每一轮得票）、<a href=\"contests.csv\">contests.csv</a>（每一选区）、<a href=\"results.json\">results.json</a>。</p>"
    );
    page("代表当选名单", &body, rehearsal)
}

/// The CSV files go through the one CSV writer of the `tally` command: quoting, and text
/// cells guarded against spreadsheet formulas (a written-in name is whatever a unit sent).
fn csv_text(records: Vec<Vec<String>>) -> Result<String> {
    Ok(tally_table::csv_text(records))
}

/// The status of a round in one word.
fn round_status(status: &serde_json::Value) -> String {
    match status {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Object(o) => o.keys().next().cloned().unwrap_or_default(),
        _ => String::new(),
    }
}

/// Header of results.csv.
pub const RESULTS_CSV_COLUMNS: [&str; 16] = [
    "contest",
    "contest_name",
    "level",
    "township",
    "seats",
    "contest_status",
    "round",
    "round_kind",
    "round_status",
    "units_reported",
    "units_expected",
    "ballots_issued",
    "ballots_collected",
    "name",
    "votes",
    "elected",
];

/// One row per person per round per contest.
fn results_csv(p: &Published) -> Result<String> {
    let mut rows = vec![
        RESULTS_CSV_COLUMNS
            .iter()
            .map(|s| (*s).to_owned())
            .collect(),
    ];
    for c in &p.contests {
        for r in &c.rounds {
            for v in &r.votes {
                let elected = r.elected.iter().any(|e| e.person == v.person);
                let name = match v.person.get("WriteIn") {
                    Some(_) => format!("{}（另选他人）", v.name),
                    None => v.name.clone(),
                };
                rows.push(vec![
                    c.contest.clone(),
                    c.name.clone(),
                    c.level.clone(),
                    c.township.clone(),
                    c.seats.to_string(),
                    c.status.clone(),
                    r.round.to_string(),
                    r.kind.clone(),
                    round_status(&r.status),
                    r.units_reported.to_string(),
                    r.units_expected.to_string(),
                    r.totals.ballots_issued.to_string(),
                    r.totals.ballots_collected.to_string(),
                    name,
                    v.votes.to_string(),
                    if elected { "yes" } else { "no" }.to_owned(),
                ]);
            }
        }
    }
    csv_text(rows)
}

/// Header of contests.csv.
pub const CONTESTS_CSV_COLUMNS: [&str; 10] = [
    "contest",
    "contest_name",
    "level",
    "township",
    "seats",
    "seats_filled",
    "vacancies",
    "status",
    "elected",
    "pending",
];

/// One row per contest.
fn contests_csv(p: &Published) -> Result<String> {
    let mut rows = vec![
        CONTESTS_CSV_COLUMNS
            .iter()
            .map(|s| (*s).to_owned())
            .collect(),
    ];
    for c in &p.contests {
        rows.push(vec![
            c.contest.clone(),
            c.name.clone(),
            c.level.clone(),
            c.township.clone(),
            c.seats.to_string(),
            c.seats_filled.to_string(),
            if c.status == "Decided" {
                c.vacancies.to_string()
            } else {
                String::new()
            },
            c.status.clone(),
            c.elected
                .iter()
                .map(|e| format!("{} ({})", e.name, e.votes))
                .collect::<Vec<_>>()
                .join("; "),
            if c.status == "Decided" {
                String::new()
            } else {
                pending_text(c)
            },
        ]);
    }
    csv_text(rows)
}
