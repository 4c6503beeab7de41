//! `tally demo`, step 8: the committee closes the count, with the commands its clerk types
//! (`tally committee ...`), each act signed by three of the sample committee's officials.
//! It lists what waits; decides the further election's tie at the cut-off (the first tied in
//! definition order stands, as the sample's round 2 was voted), merges the two spellings of
//! the planted written-in person, reviews each blocking warning; confirms the county level
//! and each township's contests; exports the evidence and prints the official papers from it
//! (`tally committee papers`); and publishes the results.

use crate::say;
use anyhow::{Context, Result, anyhow, bail};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use tally_localnet::LocalCounty;

/// The officials who sign each act in the demo: the sample committee's threshold.
const SIGNERS: usize = 3;

struct Clerk {
    program: PathBuf,
    dir: PathBuf,
    definition: PathBuf,
    servers: String,
    pki: PathBuf,
    officials: Vec<(String, PathBuf)>,
}

impl Clerk {
    /// `tally ARGS` in the committee's folder: its standard output, or an error with all it said.
    fn tally(&self, args: &[&str]) -> Result<String> {
        let output = Command::new(&self.program)
            .args(args)
            .current_dir(&self.dir)
            .output()
            .with_context(|| format!("cannot run tally {}", args.join(" ")))?;
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        // `pending` exits 3 while anything waits: an answer, not a failure.
        if !output.status.success() && output.status.code() != Some(3) {
            bail!(
                "tally {} failed ({}):\n{text}{}",
                args.join(" "),
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(text)
    }

    fn cluster(&self, args: &[&str]) -> Result<String> {
        let pki = self.pki.display().to_string();
        let mut all: Vec<&str> = args.to_vec();
        all.extend([
            "--servers",
            &self.servers,
            "--pki",
            &pki,
            "--operator",
            tally_localnet::OPERATOR,
        ]);
        self.tally(&all)
    }

    /// Prepares an act (`prepare`, which writes `file`), has three officials sign it and
    /// submits it; prints what it decided and where it was recorded.
    fn act(&self, prepare: &[&str], file: &str, needs_cluster: bool) -> Result<()> {
        let definition = self.definition.display().to_string();
        let mut args: Vec<&str> = vec!["committee"];
        args.extend(prepare);
        args.extend(["-d", &definition, "--out", file]);
        if needs_cluster {
            self.cluster(&args)?;
        } else {
            self.tally(&args)?;
        }
        for (official, key) in self.officials.iter().take(SIGNERS) {
            let key = key.display().to_string();
            self.tally(&[
                "committee",
                "sign",
                file,
                "-d",
                &definition,
                "--official",
                official,
                "--key",
                &key,
            ])?;
        }
        let recorded = self.cluster(&["committee", "submit", file, "-d", &definition])?;
        let shown = self.tally(&["committee", "show", file, "-d", &definition])?;
        let lines: Vec<&str> = shown
            .lines()
            .take_while(|l| !l.starts_with("signed by"))
            .collect();
        // A confirmation lists every contest with its result digest: the first few here.
        const SHOWN_MAX: usize = 4;
        for line in lines.iter().take(SHOWN_MAX) {
            say!("   {line}");
        }
        if lines.len() > SHOWN_MAX {
            say!("     … {} more contest(s)", lines.len() - SHOWN_MAX);
        }
        say!(
            "     {} (signed by {})",
            recorded.lines().next().unwrap_or_default(),
            self.officials
                .iter()
                .take(SIGNERS)
                .map(|(id, _)| id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
        Ok(())
    }

    fn pending(&self) -> Result<Vec<Value>> {
        let text = self.cluster(&["committee", "pending", "--format", "json"])?;
        let v: Value = serde_json::from_str(&text).context("tally committee pending's JSON")?;
        Ok(v["matters"].as_array().cloned().unwrap_or_default())
    }
}

/// The officials' key files, written from the sample's official-keys.csv (SAMPLE ONLY).
fn official_keys(county: &Path, dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let csv = county.join("official-keys.csv");
    let text =
        std::fs::read_to_string(&csv).with_context(|| format!("cannot read {}", csv.display()))?;
    let mut keys = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with("official,"))
    {
        let (id, secret) = line
            .split_once(',')
            .ok_or_else(|| anyhow!("{}: a row is not official,secret_key", csv.display()))?;
        let path = dir.join(format!("{id}.key"));
        std::fs::write(&path, format!("{secret}\n"))
            .with_context(|| format!("cannot write {}", path.display()))?;
        keys.push((id.to_owned(), path));
    }
    Ok(keys)
}

pub async fn run(county: &LocalCounty) -> Result<()> {
    let dir = county.layout.root.join("committee");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let (servers, pki, _) = county.operator_client()?;
    let clerk = Clerk {
        program: tally_localnet::this_program()?,
        definition: county.layout.county.join("election.toml"),
        servers: servers.join(","),
        pki,
        officials: official_keys(&county.layout.county, &dir)?,
        dir,
    };

    let matters = clerk.pending()?;
    let blocking = matters.iter().filter(|m| m["blocking"] == true).count();
    say!(
        "{} matter(s) wait for the committee, {blocking} of them keeping a contest from being confirmed (`tally committee pending`):",
        matters.len()
    );
    for m in matters
        .iter()
        .filter(|m| m["kind"] != "ready" && m["kind"] != "write-ins" || m["blocking"] == true)
    {
        say!(
            "   {} {}: {}",
            m["contest"].as_str().unwrap_or_default(),
            m["kind"].as_str().unwrap_or_default(),
            m["what"].as_str().unwrap_or_default()
        );
    }

    let result: Value = serde_json::from_str(&county.county_results().await?.result_json)
        .context("the county's result_json")?;
    let contests = result["contests"].as_array().cloned().unwrap_or_default();
    let mut n = 0;
    let mut next_id = |prefix: &str| {
        n += 1;
        format!("{prefix}-{n}")
    };

    // The further election's tie at the cut-off: the first of the tied stand (definition order).
    for c in &contests {
        for r in c["rounds"].as_array().into_iter().flatten() {
            let tie = &r["follow_up"]["FurtherCandidatesTie"];
            if tie.is_null() {
                continue;
            }
            let places = tie["places"].as_u64().unwrap_or(0) as usize;
            let chosen: Vec<&str> = tie["tied"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| p["Candidate"].as_str())
                .take(places)
                .collect();
            let (contest, round) = (
                c["contest"].as_str().unwrap_or_default(),
                r["round"].to_string(),
            );
            let (id, chosen) = (next_id("D"), chosen.join(","));
            let file = format!("{id}.json");
            say!(
                "\n   the cut-off tie in {contest}: the committee names who stands in the further election"
            );
            clerk.act(
                &[
                    "cutoff-tie",
                    "--id",
                    &id,
                    "--contest",
                    contest,
                    "--round",
                    &round,
                    "--chosen",
                    &chosen,
                    "--reason",
                    "得票相等，经选举委员会会议协商确定另行选举候选人",
                ],
                &file,
                false,
            )?;
        }
    }

    // Two spellings of one written-in person, merged.
    for c in &contests {
        let names: Vec<&str> = c["rounds"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|r| r["votes"].as_array().into_iter().flatten())
            .filter_map(|v| v["person"]["WriteIn"].as_str())
            .collect();
        if names.contains(&"刘华") && names.contains(&"刘桦") {
            let contest = c["contest"].as_str().unwrap_or_default();
            let id = next_id("D");
            let file = format!("{id}.json");
            say!("\n   the written-in names of {contest}: 刘华 and 刘桦 are one person");
            clerk.act(
                &[
                    "write-ins",
                    "--id",
                    &id,
                    "--contest",
                    contest,
                    "--merge",
                    "刘桦=刘华",
                    "--reason",
                    "经核实，选民所写“刘桦”系“刘华”的误写，为同一人",
                ],
                &file,
                false,
            )?;
        }
    }

    // Each blocking warning reviewed, with the note the report prints.
    for m in clerk
        .pending()?
        .iter()
        .filter(|m| m["kind"] == "warning" && m["blocking"] == true)
    {
        let (contest, code, at) = (
            m["contest"].as_str().unwrap_or_default(),
            m["code"].as_str().unwrap_or_default(),
            m["at"].as_str().unwrap_or_default(),
        );
        let id = next_id("D");
        let file = format!("{id}.json");
        say!("\n   warning {code} in {contest} ({at}) reviewed");
        clerk.act(
            &[
                "review", "--id", &id, "--contest", contest, "--code", code, "--at", at,
                "--note", "已核查：该单元票箱内选票多于发出选票，全选区投票已依法（第四十四条）宣布无效并重新投票",
                "--reason", "选举委员会审查计票报告",
            ],
            &file,
            false,
        )?;
    }

    // Confirmation: the county level at once, then each township's contests.
    let open: Vec<Value> = clerk
        .pending()?
        .into_iter()
        .filter(|m| m["blocking"] == true)
        .collect();
    if !open.is_empty() {
        bail!("matters still keep contests from being confirmed: {open:?}");
    }
    say!("\n   确认选举结果有效: the county level, then each township's contests");
    clerk.act(
        &["confirm", "--id", "K-county", "--county-level"],
        "K-county.json",
        true,
    )?;
    for t in county.definition.townships.iter() {
        let id = format!("K-{}", t.id);
        let file = format!("{id}.json");
        clerk.act(
            &["confirm", "--id", &id, "--township", t.id.as_str()],
            &file,
            true,
        )?;
    }
    let after = clerk.cluster(&["committee", "pending"])?;
    for line in after.lines().filter(|l| l.contains("contests confirmed")) {
        say!("   {line}");
    }

    // The official papers, from the evidence the county exports, verified first.
    let evidence = county.layout.root.join("evidence");
    let papers = county.layout.root.join("papers");
    let definition = clerk.definition.display().to_string();
    clerk.cluster(&[
        "export",
        "-d",
        &definition,
        "--out",
        &evidence.display().to_string(),
    ])?;
    let written = clerk.tally(&[
        "committee",
        "papers",
        &evidence.display().to_string(),
        "--out",
        &papers.display().to_string(),
    ])?;
    say!("   {}", written.lines().next().unwrap_or_default());
    let published = county.layout.root.join("published");
    let out = published.display().to_string();
    clerk.cluster(&["publish", "--out", &out])?;
    say!(
        "   published: {} (CSV and JSON of every result, and the lists as HTML)",
        published.display()
    );
    Ok(())
}
