//! Evidence bundles: `tally export` writes what the county cluster holds as of one log index
//! (every recorded sheet as its unit signed it, the hash chain over them, the results the
//! county claims at that index) beside the election definition; `tally verify` checks such a
//! bundle from its files alone, with no access to the cluster. See docs/evidence.md.
//!
//! A bundle is a folder:
//!
//! ```text
//! manifest.json            format, election, log index, chain head and length, export time,
//!                          the replica that served it, SHA-256 of every other file
//! definition/election.toml the election definition, and every file it names (CSV), as read
//! chain.jsonl              one chain record per line, in chain order: position, log index,
//!                          the envelope (key id, signature, sheet bytes in hex), the head after it
//! results.json             the county's result at the log index, exactly as the county served it
//! ```
//!
//! Verification never trusts a derived field: it recomputes every digest, link, signature
//! and result from the sheet bytes and the definition, and compares.

use crate::cli::Outcome;
use crate::county_cmd::{ClientArgs, channel, client_config, operator_files};
use crate::files::load_definition;
use crate::intake::intake;
use crate::report::Format;
use crate::table::{Align, Table};
use crate::{say, say_part};
use anyhow::{Context, Result, anyhow, bail};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use tally_proto::SignedSheet;
use tally_proto::county::{CHAIN_HEAD_EMPTY, chain_link};
use tally_rpc::pb;
use tally_rpc::pb::county_client::CountyClient;

/// The bundle format this version writes and reads.
pub const BUNDLE_FORMAT: &str = "tally-evidence/1";
pub const MANIFEST: &str = "manifest.json";
pub const CHAIN_FILE: &str = "chain.jsonl";
pub const RESULTS_FILE: &str = "results.json";
pub const DEFINITION_DIR: &str = "definition";
/// The most findings of one kind listed; the rest are counted. A bundle with every sheet
/// changed must still print a readable report.
pub const FINDINGS_PER_KIND_MAX: usize = 200;
/// The most differing values named per contest.
const DIFFERENCES_PER_CONTEST_MAX: usize = 5;
/// The most chain records a bundle may hold (a county has a few thousand), so a forged
/// bundle cannot exhaust memory.
pub const BUNDLE_RECORDS_MAX: usize = 1 << 20;

/// `manifest.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub election: String,
    /// The applied index the evidence and the results reflect.
    pub log_index: u64,
    /// Hex; all zero for an empty chain.
    pub chain_head: String,
    pub chain_length: u64,
    pub exported_at_unix_seconds: u64,
    pub replica_id: u64,
    /// The definition's main file, relative to the bundle.
    pub definition: String,
    /// Why no township countersignatures are in the bundle (the county does not keep them).
    pub countersignatures: String,
    /// Every other file of the bundle, relative path → hex SHA-256.
    pub files: BTreeMap<String, String>,
}

/// One line of `chain.jsonl`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecordLine {
    /// 0 for the first sheet the county ever recorded.
    pub position: u64,
    pub log_index: u64,
    /// Hex: the key id (16 bytes), the Ed25519 signature (64), the sheet bytes as signed.
    pub key_id: String,
    pub signature: String,
    pub sheet: String,
    /// Hex: the chain's head after this record, as the county stored it.
    pub head: String,
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

// ------------------------------------------------------------------------------- export

/// `tally export`.
pub struct ExportArgs {
    pub client: ClientArgs,
    pub operator: String,
    pub definition: PathBuf,
    pub out: PathBuf,
    pub stale: bool,
}

/// Reads the evidence from the first replica that answers, writes the bundle, then verifies
/// it: a definition that is not the county's shows at once as signature or result findings.
pub fn export(args: ExportArgs) -> Result<Outcome> {
    let files = operator_files(&args.client.pki, &args.operator)?;
    let (header, records) = crate::county_cmd::runtime()?.block_on(async {
        let tls = client_config(&files)?;
        let mut errors = Vec::new();
        for address in &args.client.servers {
            let mut county =
                CountyClient::new(channel(&tls, address)?).max_decoding_message_size(64 << 20);
            match read_export(&mut county, args.stale).await {
                Ok(got) => return Ok(got),
                Err(e) => errors.push(format!("{address}: {e:#}")),
            }
        }
        Err(anyhow!(
            "no replica could serve the export:\n  {}",
            errors.join("\n  ")
        ))
    })?;
    write_bundle(&args.out, &args.definition, &header, &records)?;
    say!(
        "wrote {}: {} chain records of {} at log index {}, head {}",
        args.out.display(),
        records.len(),
        header.election,
        header.log_index,
        hex::encode(&header.chain_head)
    );
    let report = verify_bundle(&args.out)?;
    say!(
        "checked the bundle: {}",
        if report.ok {
            "every file, signature, link and result agrees".to_owned()
        } else {
            format!(
                "{} finding(s); `tally verify {}` lists them",
                report.findings_total,
                args.out.display()
            )
        }
    );
    Ok(if report.ok {
        Outcome::Clean
    } else {
        Outcome::Findings
    })
}

async fn read_export(
    county: &mut CountyClient<tonic::transport::Channel>,
    stale: bool,
) -> Result<(pb::ExportHeader, Vec<pb::ChainRecord>)> {
    let mut stream = county
        .export(pb::ExportRequest { stale })
        .await
        .map_err(|s| anyhow!("{}", s.message()))?
        .into_inner();
    let mut header = None;
    let mut records = Vec::new();
    while let Some(chunk) = stream
        .message()
        .await
        .map_err(|s| anyhow!("{}", s.message()))?
    {
        match (chunk.header, &header) {
            (Some(h), None) => header = Some(h),
            (Some(_), Some(_)) => bail!("the export stream carries a second header"),
            (None, None) => bail!("the export stream does not begin with its header"),
            (None, Some(_)) => {}
        }
        records.extend(chunk.records);
        if records.len() > BUNDLE_RECORDS_MAX {
            bail!("the export carries more than {BUNDLE_RECORDS_MAX} records");
        }
    }
    let header = header.ok_or_else(|| anyhow!("the export stream ended without a header"))?;
    if records.len() as u64 != header.chain_length {
        bail!(
            "the export ended after {} of the {} chain records its header announced; export again",
            records.len(),
            header.chain_length
        );
    }
    Ok((header, records))
}

/// Writes the bundle folder (which must be new or empty).
pub fn write_bundle(
    out: &Path,
    definition: &Path,
    header: &pb::ExportHeader,
    records: &[pb::ChainRecord],
) -> Result<()> {
    if out.exists()
        && std::fs::read_dir(out)
            .with_context(|| format!("cannot list {}", out.display()))?
            .next()
            .is_some()
    {
        bail!(
            "{} exists and is not empty; an evidence bundle is written to a new folder",
            out.display()
        );
    }
    let mut files = BTreeMap::new();
    let mut write = |relative: &str, bytes: &[u8]| -> Result<()> {
        let path = out.join(relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&path, bytes).with_context(|| format!("cannot write {}", path.display()))?;
        files.insert(relative.to_owned(), sha256_hex(bytes));
        Ok(())
    };

    // The definition as the loader reads it: its main file and every file it names.
    let main_name = definition
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| anyhow!("{} is not a file name", definition.display()))?
        .to_owned();
    let folder = definition
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let text = std::fs::read(definition).with_context(|| {
        format!(
            "cannot read the election definition {}",
            definition.display()
        )
    })?;
    let named = definition_files(definition)?;
    write(&format!("{DEFINITION_DIR}/{main_name}"), &text)?;
    for relative in &named {
        let bytes = std::fs::read(folder.join(relative))
            .with_context(|| format!("cannot read {}", folder.join(relative).display()))?;
        write(&format!("{DEFINITION_DIR}/{relative}"), &bytes)?;
    }

    let mut chain = String::new();
    for (position, record) in records.iter().enumerate() {
        let signed = record
            .sheet
            .as_ref()
            .ok_or_else(|| anyhow!("chain record {position} carries no sheet"))?;
        let line = RecordLine {
            position: position as u64,
            log_index: record.log_index,
            key_id: hex::encode(&signed.key_id),
            signature: hex::encode(&signed.signature),
            sheet: hex::encode(&signed.sheet),
            head: hex::encode(&record.head),
        };
        chain.push_str(&serde_json::to_string(&line).context("encoding a chain record")?);
        chain.push('\n');
    }
    write(CHAIN_FILE, chain.as_bytes())?;
    write(RESULTS_FILE, header.result_json.as_bytes())?;

    let manifest = Manifest {
        format: BUNDLE_FORMAT.to_owned(),
        election: header.election.clone(),
        log_index: header.log_index,
        chain_head: hex::encode(&header.chain_head),
        chain_length: header.chain_length,
        exported_at_unix_seconds: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        replica_id: header.replica_id,
        definition: format!("{DEFINITION_DIR}/{main_name}"),
        countersignatures: header.countersignatures.clone(),
        files,
    };
    let path = out.join(MANIFEST);
    let text = serde_json::to_string_pretty(&manifest).context("encoding the manifest")?;
    std::fs::write(&path, format!("{text}\n"))
        .with_context(|| format!("cannot write {}", path.display()))
}

/// The files a definition names (relative to its folder), as its loader asks for them. Only
/// plain relative paths below the definition's folder are copied into a bundle.
fn definition_files(definition: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(definition).with_context(|| {
        format!(
            "cannot read the election definition {}",
            definition.display()
        )
    })?;
    let folder = definition
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let mut named = Vec::new();
    let mut read_sibling = |relative: &str| -> Result<String, String> {
        named.push(relative.to_owned());
        let sibling = folder.join(relative);
        std::fs::read_to_string(&sibling).map_err(|e| format!("{} ({e})", sibling.display()))
    };
    tally_core::definition::load(&definition.display().to_string(), &text, &mut read_sibling)
        .map_err(|errors| anyhow!("{errors}"))?;
    for relative in &named {
        if !Path::new(relative)
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
        {
            bail!(
                "{}: the definition names {relative}, outside its own folder; an evidence bundle holds the definition's files below one folder, so move it beside the definition",
                definition.display()
            );
        }
    }
    named.sort();
    named.dedup();
    Ok(named)
}

// ------------------------------------------------------------------------------- verify

/// One thing that does not check. `record` is the chain position (0-based) when the finding
/// concerns one record; `contest` when it concerns one contest's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// `file`, `chain`, `signature` (a sheet refused by the offline intake: bad signature,
    /// unknown key, failed validation), `record` (a malformed line, a duplicate) or `result`.
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_index: Option<u64>,
    /// The sheet's label (unit, contest, round, version) when its bytes decode.
    pub sheet: String,
    pub contest: String,
    /// The stable code (E204 ...) for a refused sheet, empty otherwise.
    pub code: String,
    pub message: String,
}

impl Finding {
    fn new(kind: &'static str, message: String) -> Finding {
        Finding {
            kind,
            record: None,
            log_index: None,
            sheet: String::new(),
            contest: String::new(),
            code: String::new(),
            message,
        }
    }
}

/// What `tally verify` found.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub bundle: String,
    pub election: String,
    pub log_index: u64,
    pub chain_head: String,
    pub chain_length: u64,
    pub files_checked: usize,
    pub records: usize,
    /// Sheets that count, superseded versions and conflicting sheets, as recomputed.
    pub counted: usize,
    pub superseded: usize,
    pub conflicts: usize,
    pub contests: usize,
    /// Every finding, in order: files, chain, signatures, results.
    pub findings: Vec<Finding>,
    /// Findings beyond [`FINDINGS_PER_KIND_MAX`] of a kind, counted but not listed.
    pub findings_not_listed: usize,
    pub findings_total: usize,
    pub ok: bool,
}

/// `tally verify BUNDLE`.
pub fn verify(bundle: &Path, format: Format) -> Result<Outcome> {
    let report = verify_bundle(bundle)?;
    print_report(&report, format)?;
    Ok(if report.ok {
        Outcome::Clean
    } else {
        Outcome::Findings
    })
}

/// Collects findings with a bound per kind.
#[derive(Default)]
pub struct Findings {
    listed: Vec<Finding>,
    per_kind: BTreeMap<&'static str, usize>,
    not_listed: usize,
}

impl Findings {
    /// Every finding pushed, listed or not.
    pub fn total(&self) -> usize {
        self.listed.len() + self.not_listed
    }

    pub fn push(&mut self, finding: Finding) {
        let n = self.per_kind.entry(finding.kind).or_default();
        *n += 1;
        if *n <= FINDINGS_PER_KIND_MAX {
            self.listed.push(finding);
        } else {
            self.not_listed += 1;
        }
    }
}

/// Checks a bundle from its files alone. An error means the bundle cannot be checked at all
/// (no manifest, a definition that does not load); everything else is a finding.
pub fn verify_bundle(bundle: &Path) -> Result<VerifyReport> {
    let manifest_path = bundle.join(MANIFEST);
    let manifest_text = std::fs::read_to_string(&manifest_path)
        .with_context(|| format!("cannot read {}", manifest_path.display()))?;
    let manifest: Manifest = serde_json::from_str(&manifest_text)
        .with_context(|| format!("{} is not an evidence manifest", manifest_path.display()))?;
    if manifest.format != BUNDLE_FORMAT {
        bail!(
            "{}: format {:?}; this tally reads {BUNDLE_FORMAT:?}",
            manifest_path.display(),
            manifest.format
        );
    }
    let mut findings = Findings::default();

    // 1. Every file is the one the manifest names.
    for (relative, expected) in &manifest.files {
        if !Path::new(relative)
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
        {
            findings.push(Finding::new(
                "file",
                format!("the manifest names {relative}, outside the bundle"),
            ));
            continue;
        }
        match std::fs::read(bundle.join(relative)) {
            Ok(bytes) if sha256_hex(&bytes) == *expected => {}
            Ok(bytes) => findings.push(Finding::new(
                "file",
                format!(
                    "{relative}: SHA-256 {} where the manifest says {expected}",
                    sha256_hex(&bytes)
                ),
            )),
            Err(e) => findings.push(Finding::new("file", format!("{relative}: {e}"))),
        }
    }
    for required in [CHAIN_FILE, RESULTS_FILE, manifest.definition.as_str()] {
        if !manifest.files.contains_key(required) {
            findings.push(Finding::new(
                "file",
                format!("the manifest gives no SHA-256 for {required}"),
            ));
        }
    }

    let definition = load_definition(&bundle.join(&manifest.definition))
        .context("the bundle's definition does not load")?;

    // 2. and 3. The records and the chain.
    let chain_path = bundle.join(CHAIN_FILE);
    let chain_text = std::fs::read_to_string(&chain_path)
        .with_context(|| format!("cannot read {}", chain_path.display()))?;
    let ChainRead {
        records,
        head: previous_head,
    } = read_chain(&chain_text, &mut findings)?;
    if records.len() as u64 != manifest.chain_length {
        findings.push(Finding::new(
            "chain",
            format!(
                "{CHAIN_FILE} holds {} records; the manifest says the chain has {}",
                records.len(),
                manifest.chain_length
            ),
        ));
    }
    if hex::encode(previous_head) != manifest.chain_head {
        findings.push(Finding::new(
            "chain",
            format!(
                "the last record's head is {}, but the manifest's chain head is {}",
                hex::encode(previous_head),
                manifest.chain_head
            ),
        ));
    }
    if let Some((last, _, _)) = records.last()
        && last.log_index > manifest.log_index
    {
        findings.push(Finding::new(
            "chain",
            format!(
                "the last record has log index {}, after the manifest's {}",
                last.log_index, manifest.log_index
            ),
        ));
    }

    // 4. Every signature and every sheet, through the same offline intake as `tally results`,
    // in chain order: it rebuilds the county's ledger.
    let positions: Vec<&RecordLine> = records
        .iter()
        .filter(|(_, s, _)| s.is_some())
        .map(|(l, _, _)| l)
        .collect();
    let envelopes: Vec<SignedSheet> = records.iter().filter_map(|(_, s, _)| s.clone()).collect();
    let labels: Vec<String> = envelopes.iter().map(sheet_label).collect();
    let recomputed = intake(&definition, &[(PathBuf::from("record"), envelopes)]);
    for refusal in &recomputed.refused {
        // The county records a conflicting sheet (never counting it); the intake reports
        // it as a refusal, which here is expected.
        if refusal.code == "conflict" {
            continue;
        }
        let n = refusal
            .source
            .rsplit('#')
            .next()
            .and_then(|n| n.parse::<usize>().ok())
            .and_then(|n| n.checked_sub(1));
        let line = n.and_then(|n| positions.get(n));
        findings.push(Finding {
            record: line.map(|l| l.position),
            log_index: line.map(|l| l.log_index),
            sheet: if refusal.sheet.is_empty() {
                n.and_then(|n| labels.get(n)).cloned().unwrap_or_default()
            } else {
                refusal.sheet.clone()
            },
            code: refusal.code.clone(),
            ..Finding::new("signature", refusal.message.clone())
        });
    }
    if recomputed.duplicates > 0 {
        findings.push(Finding::new(
            "record",
            format!(
                "{} record(s) repeat the bytes of an earlier one; the county records a sheet once",
                recomputed.duplicates
            ),
        ));
    }

    // 5. The results, recomputed from the definition and the rebuilt ledger, against the
    // county's claim.
    let result = tally_core::results::compute(&definition, &recomputed.ledger);
    let ours = serde_json::to_value(&result).context("encoding the recomputed result")?;
    let results_path = bundle.join(RESULTS_FILE);
    let claimed: Value = std::fs::read_to_string(&results_path)
        .with_context(|| format!("cannot read {}", results_path.display()))
        .and_then(|t| {
            serde_json::from_str(&t)
                .with_context(|| format!("{} is not JSON", results_path.display()))
        })?;
    compare_results(&claimed, &ours, &mut findings);

    let findings_total = findings.listed.len() + findings.not_listed;
    Ok(VerifyReport {
        bundle: bundle.display().to_string(),
        election: manifest.election,
        log_index: manifest.log_index,
        chain_head: manifest.chain_head,
        chain_length: manifest.chain_length,
        files_checked: manifest.files.len(),
        records: records.len(),
        counted: recomputed.accepted,
        superseded: recomputed.superseded,
        conflicts: recomputed.conflicts,
        contests: result.contests.len(),
        findings: findings.listed,
        findings_not_listed: findings.not_listed,
        findings_total,
        ok: findings_total == 0,
    })
}

/// `chain.jsonl` as read: each record with its envelope (if it decodes) and its stored head
/// (if it is 32 bytes of hex), and the head after the last record.
pub struct ChainRead {
    pub records: Vec<(RecordLine, Option<SignedSheet>, Option<[u8; 32]>)>,
    pub head: [u8; 32],
}

/// Reads an evidence bundle's `chain.jsonl` and checks its links: each line on its own (a line
/// that is not a record, or whose envelope does not decode, is a finding), then positions in
/// order, log indexes never going back, and every link recomputed from the sheet bytes with
/// the county's own link function. An error only when it holds more than
/// [`BUNDLE_RECORDS_MAX`] records. Public for the fuzz target (`fuzz/`).
pub fn read_chain(chain_text: &str, findings: &mut Findings) -> Result<ChainRead> {
    // The records, each line on its own.
    let mut records: Vec<(RecordLine, Option<SignedSheet>, Option<[u8; 32]>)> = Vec::new();
    for (n, line) in chain_text.lines().enumerate() {
        if records.len() >= BUNDLE_RECORDS_MAX {
            bail!("{CHAIN_FILE} holds more than {BUNDLE_RECORDS_MAX} records");
        }
        let parsed: RecordLine = match serde_json::from_str(line) {
            Ok(l) => l,
            Err(e) => {
                findings.push(Finding {
                    record: Some(n as u64),
                    ..Finding::new("record", format!("{CHAIN_FILE} line {}: {e}", n + 1))
                });
                continue;
            }
        };
        let signed = decode_envelope(&parsed);
        let head = hex::decode(&parsed.head)
            .ok()
            .and_then(|h| <[u8; 32]>::try_from(h).ok());
        if let Err(e) = &signed {
            findings.push(Finding {
                record: Some(parsed.position),
                log_index: Some(parsed.log_index),
                ..Finding::new("record", format!("the envelope does not decode: {e}"))
            });
        }
        records.push((parsed, signed.ok(), head));
    }

    // The chain: positions in order, log indexes never going back, every link recomputed
    // from the sheet bytes with the county's own link function, the last head the manifest's.
    let mut previous_head = CHAIN_HEAD_EMPTY;
    let mut previous_index = 0;
    for (i, (line, signed, head)) in records.iter().enumerate() {
        let at = |message: String| Finding {
            record: Some(line.position),
            log_index: Some(line.log_index),
            sheet: signed.as_ref().map(sheet_label).unwrap_or_default(),
            ..Finding::new("chain", message)
        };
        if line.position != i as u64 {
            findings.push(at(format!(
                "line {} holds position {} where {i} was due: a record is missing or out of place",
                i + 1,
                line.position
            )));
        }
        if line.log_index == 0 || line.log_index < previous_index {
            findings.push(at(format!(
                "log index {} comes after {previous_index}: records are in log order",
                line.log_index
            )));
        }
        previous_index = line.log_index;
        let Some(head) = head else {
            findings.push(at("the stored head is not 32 bytes of hex".to_owned()));
            continue;
        };
        if let Some(signed) = signed {
            let link = chain_link(&previous_head, line.log_index, &signed.digest());
            if link != *head {
                findings.push(at(format!(
                    "the link does not check: SHA-256 over the previous head {}, log index {} and this sheet's digest {} is {}, but the stored head is {}; this sheet or the record before it was changed, dropped or added",
                    short(&previous_head),
                    line.log_index,
                    short(&signed.digest()),
                    short(&link),
                    short(head)
                )));
            }
        }
        previous_head = *head;
    }
    Ok(ChainRead {
        records,
        head: previous_head,
    })
}

fn decode_envelope(line: &RecordLine) -> Result<SignedSheet> {
    let field =
        |name: &str, text: &str| hex::decode(text).map_err(|_| anyhow!("{name} is not hex"));
    let envelope = pb::SignedSheet {
        sheet: field("sheet", &line.sheet)?,
        signature: field("signature", &line.signature)?,
        key_id: field("key_id", &line.key_id)?,
    };
    SignedSheet::from_pb(envelope).map_err(|e| anyhow!("{e}"))
}

/// The label a sheet claims, read without checking its signature (for naming it only).
fn sheet_label(signed: &SignedSheet) -> String {
    tally_proto::decode_sheet(&signed.sheet)
        .map(|s| s.label())
        .unwrap_or_default()
}

fn short(bytes: &[u8; 32]) -> String {
    hex::encode(&bytes[..8])
}

/// Compares the claimed result with the recomputed one, contest by contest, then the rest.
fn compare_results(claimed: &Value, ours: &Value, findings: &mut Findings) {
    let by_contest = |v: &Value| -> BTreeMap<String, Value> {
        v.get("contests")
            .and_then(Value::as_array)
            .map(|list| {
                list.iter()
                    .map(|c| {
                        let id = c.get("contest").and_then(Value::as_str).unwrap_or("?");
                        (id.to_owned(), c.clone())
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let claimed_contests = by_contest(claimed);
    let our_contests = by_contest(ours);
    let ids: std::collections::BTreeSet<&String> =
        claimed_contests.keys().chain(our_contests.keys()).collect();
    for id in ids {
        let message = match (claimed_contests.get(id), our_contests.get(id)) {
            (Some(c), Some(o)) if c == o => continue,
            (Some(c), Some(o)) => {
                let mut differences = Vec::new();
                differences_of("", c, o, &mut differences);
                let more = differences
                    .len()
                    .saturating_sub(DIFFERENCES_PER_CONTEST_MAX);
                differences.truncate(DIFFERENCES_PER_CONTEST_MAX);
                let mut text = format!(
                    "the county's result differs from the one recomputed from the sheets: {}",
                    differences.join("; ")
                );
                if more > 0 {
                    text.push_str(&format!(" (and {more} more)"));
                }
                text
            }
            (Some(_), None) => {
                "the county claims a result for a contest the definition does not have".to_owned()
            }
            (None, _) => "the county claims no result for this contest".to_owned(),
        };
        findings.push(Finding {
            contest: id.clone(),
            ..Finding::new("result", message)
        });
    }
    let (Some(claimed_rest), Some(our_rest)) = (claimed.as_object(), ours.as_object()) else {
        findings.push(Finding::new(
            "result",
            format!("{RESULTS_FILE} is not a result object"),
        ));
        return;
    };
    let keys: std::collections::BTreeSet<&String> =
        claimed_rest.keys().chain(our_rest.keys()).collect();
    for key in keys.into_iter().filter(|k| *k != "contests") {
        let (c, o) = (
            claimed_rest.get(key).unwrap_or(&Value::Null),
            our_rest.get(key).unwrap_or(&Value::Null),
        );
        if c != o {
            let mut differences = Vec::new();
            differences_of(key, c, o, &mut differences);
            differences.truncate(DIFFERENCES_PER_CONTEST_MAX);
            findings.push(Finding::new(
                "result",
                format!(
                    "{key} differs from the one recomputed: {}",
                    differences.join("; ")
                ),
            ));
        }
    }
}

/// The JSON paths where `claimed` and `ours` differ, as `path: claimed X, recomputed Y`.
fn differences_of(path: &str, claimed: &Value, ours: &Value, out: &mut Vec<String>) {
    if claimed == ours || out.len() > DIFFERENCES_PER_CONTEST_MAX {
        return;
    }
    match (claimed, ours) {
        (Value::Object(c), Value::Object(o)) => {
            let keys: std::collections::BTreeSet<&String> = c.keys().chain(o.keys()).collect();
            for key in keys {
                differences_of(
                    &format!("{path}.{key}"),
                    c.get(key).unwrap_or(&Value::Null),
                    o.get(key).unwrap_or(&Value::Null),
                    out,
                );
            }
        }
        (Value::Array(c), Value::Array(o)) if c.len() == o.len() => {
            for (i, (c, o)) in c.iter().zip(o).enumerate() {
                differences_of(&format!("{path}[{i}]"), c, o, out);
            }
        }
        _ => out.push(format!(
            "{}: claimed {}, recomputed {}",
            path.trim_start_matches('.'),
            brief(claimed),
            brief(ours)
        )),
    }
}

fn brief(value: &Value) -> String {
    let text = value.to_string();
    match text.char_indices().nth(80) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

fn print_report(report: &VerifyReport, format: Format) -> Result<()> {
    let mut table = Table::new(&[
        ("kind", Align::Left),
        ("record", Align::Right),
        ("log index", Align::Right),
        ("sheet", Align::Left),
        ("contest", Align::Left),
        ("code", Align::Left),
        ("finding", Align::Left),
    ]);
    for f in &report.findings {
        table.row(vec![
            f.kind.to_owned(),
            f.record.map(|r| r.to_string()).unwrap_or_default(),
            f.log_index.map(|i| i.to_string()).unwrap_or_default(),
            f.sheet.clone(),
            f.contest.clone(),
            f.code.clone(),
            f.message.clone(),
        ]);
    }
    match format {
        Format::Json => say!(
            "{}",
            serde_json::to_string_pretty(report).context("encoding JSON")?
        ),
        Format::Csv => say_part!("{}", table.to_csv()),
        Format::Table => {
            say!(
                "{} — evidence at log index {}, {} chain records, head {}",
                report.election,
                report.log_index,
                report.chain_length,
                report.chain_head
            );
            say!(
                "checked {} files, {} records ({} counted, {} superseded, {} conflicting), {} contests recomputed",
                report.files_checked,
                report.records,
                report.counted,
                report.superseded,
                report.conflicts,
                report.contests
            );
            if report.ok {
                say!(
                    "OK: every file, signature and chain link checks, and the results recomputed from the sheets are the county's. Compare the head above with the one the committee published."
                );
            } else {
                say_part!("{}", table.render());
                if report.findings_not_listed > 0 {
                    say!("… and {} more not listed", report.findings_not_listed);
                }
                say!(
                    "NOT OK: {} finding(s); the bundle does not prove the county's results",
                    report.findings_total
                );
            }
        }
    }
    Ok(())
}
