//! Evidence bundles: `tally export` writes what the county cluster holds as of one log index
//! (every recorded sheet as its unit signed it, the hash chain over them, the results the
//! county claims at that index) beside the election definition; `tally verify` checks such a
//! bundle from its files alone, with no access to the cluster. See docs/evidence.md.
//!
//! This crate owns the bundle format ([`Manifest`], [`RecordLine`]), reading the export
//! stream ([`read_export`]), writing a bundle ([`write_bundle`]), the verifier
//! ([`verify_bundle`], returning a [`VerifyReport`]) and the offline intake ([`mod@intake`]: verify,
//! validate and record signed sheets, the same steps the county runs) the verifier rebuilds the
//! county's ledger with. It prints nothing and returns one error type, [`Error`]. It must not
//! depend on the county's or the township's server crates, nor on the `tally` binary: an
//! observer builds a verifier from this crate, `tally-core` and `tally-proto` alone.
//!
//! # An independent verifier
//!
//! An observer (a candidate, a journalist, an election committee) can check a bundle with a
//! program of their own that depends on this crate only:
//!
//! ```no_run
//! // Cargo.toml: tally-evidence = { git = "...", package = "tally-evidence" }
//! let report = tally_evidence::verify_bundle(std::path::Path::new("evidence-2026"))?;
//! for finding in &report.findings {
//!     println!("{} {}: {}", finding.kind, finding.sheet, finding.message);
//! }
//! println!(
//!     "{}: head {} at log index {}",
//!     if report.ok { "OK" } else { "NOT OK" },
//!     report.chain_head,
//!     report.log_index
//! );
//! # Ok::<(), tally_evidence::Error>(())
//! ```
//!
//! Compare the head with the one the committee published: a bundle that checks proves that
//! its results follow from its signed sheets under its definition.
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

//!
//! # Layout
//!
//! ```text
//! lib.rs     the format (Manifest, RecordLine, limits), Error, export (read_export,
//!            write_bundle) and verify (verify_bundle as named steps, read_chain, compare_results)
//! intake.rs  the offline intake: verify signatures, validate, record in a ledger exactly once
//! ```

pub mod intake;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use std::collections::BTreeMap;
use std::path::{Component, Path};
use tally_core::committee::Decisions;
use tally_core::definition::Definition;
use tally_core::results::ElectionResult;
use tally_proto::SignedSheet;
use tally_proto::county::{Act, CHAIN_HEAD_EMPTY, ForwardedBatch, chain_link, link_digest};
use tally_rpc::pb;
use tally_rpc::pb::county_client::CountyClient;

/// Why a bundle cannot be exported, written or checked at all. Everything a check finds wrong
/// inside a bundle is a [`Finding`], never an error. The messages are whole sentences with the
/// cause included (no error here is the source of another), as the command line prints them.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or folder could not be read, written, listed or created.
    #[error("{what}: {cause}")]
    Io { what: String, cause: std::io::Error },
    /// A file is not the JSON it should be, or a value could not be encoded.
    #[error("{what}: {cause}")]
    Json {
        what: String,
        cause: serde_json::Error,
    },
    /// The election definition does not load (every problem, one per line).
    #[error("{0}")]
    Definition(String),
    /// The bundle's own definition does not load.
    #[error("the bundle's definition does not load: {0}")]
    BundleDefinition(Box<Error>),
    /// The manifest names a format this version does not read.
    #[error("{manifest}: format {found:?}; this tally reads {BUNDLE_FORMAT:?}")]
    Format { manifest: String, found: String },
    /// A replica refused the export call or broke off its stream.
    #[error("{0}")]
    Refused(String),
    /// The export stream or the bundle breaks the format (the message says how).
    #[error("{0}")]
    Malformed(String),
}

impl Error {
    fn io(what: String) -> impl FnOnce(std::io::Error) -> Error {
        move |cause| Error::Io { what, cause }
    }

    fn json(what: String) -> impl FnOnce(serde_json::Error) -> Error {
        move |cause| Error::Json { what, cause }
    }
}

/// What this crate's functions return.
pub type Result<T, E = Error> = std::result::Result<T, E>;

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
    /// Empty for the founding record.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub key_id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub signature: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sheet: String,
    /// The founding record's definition, in its canonical encoding (JSON, as text): the
    /// chain links its digest, `SHA-256("tally.v2.definition\0" || founding)`. Only the
    /// first record has it (docs/design/record.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub founding: Option<String>,
    /// The election the sheet was signed for, and its mode (`official`, `rehearsal`); empty
    /// for a sheet signed by the tally.v1 scheme, which named none (docs/signing.md), and for
    /// the founding record.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub election_id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mode: String,
    /// On the first sheet a command recorded: the batch that brought it, as its township
    /// countersigned it; the link covers it (docs/evidence.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<BatchLine>,
    /// A committee act (an amendment): its canonical body and its officials' signatures;
    /// `tally verify` checks the signatures and applies it in record order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub act: Option<ActLine>,
    /// Hex: the chain's head after this record, as the county stored it.
    pub head: String,
}

/// A committee act in `chain.jsonl`: the body as the officials signed it (canonical JSON, as
/// text) and each signature (hex).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ActLine {
    pub body: String,
    pub signatures: Vec<tally_core::act::FileSignature>,
}

impl ActLine {
    fn from_pb(act: &pb::CommitteeAct) -> std::result::Result<ActLine, String> {
        Ok(ActLine {
            body: String::from_utf8(act.body.clone())
                .map_err(|_| "the act's body is not UTF-8 JSON".to_owned())?,
            signatures: act
                .signatures
                .iter()
                .map(|s| tally_core::act::FileSignature {
                    official: s.official_id.clone(),
                    signature: hex::encode(&s.signature),
                })
                .collect(),
        })
    }

    /// The act as the county recorded it, or why it does not decode.
    pub fn decode(&self) -> std::result::Result<tally_core::act::SignedAct, String> {
        let signatures = self
            .signatures
            .iter()
            .map(|s| {
                Ok(pb::OfficialSignature {
                    official_id: s.official.clone(),
                    signature: hex::decode(&s.signature)
                        .map_err(|_| format!("official {}'s signature is not hex", s.official))?,
                })
            })
            .collect::<std::result::Result<Vec<_>, String>>()?;
        tally_proto::county::act_from_pb(pb::CommitteeAct {
            body: self.body.as_bytes().to_vec(),
            signatures,
        })
        .map_err(|e| e.to_string())
    }
}

/// A countersigned batch in `chain.jsonl`: hex throughout.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BatchLine {
    pub township_id: String,
    /// SHA-256 of every sheet of the batch, in batch order, recorded or not.
    pub sheet_digests: Vec<String>,
    pub key_id: String,
    pub signature: String,
}

impl BatchLine {
    fn from_pb(batch: &pb::ForwardedBatch) -> BatchLine {
        let cs = batch.countersignature.clone().unwrap_or_default();
        BatchLine {
            township_id: batch.township_id.clone(),
            sheet_digests: batch.sheet_digests.iter().map(hex::encode).collect(),
            key_id: hex::encode(cs.key_id),
            signature: hex::encode(cs.signature),
        }
    }

    /// The batch as the county kept it, or why it does not decode.
    pub fn decode(&self) -> std::result::Result<ForwardedBatch, String> {
        let hex_field = |name: &str, text: &str| {
            hex::decode(text).map_err(|_| format!("batch {name} is not hex"))
        };
        let batch = pb::ForwardedBatch {
            township_id: self.township_id.clone(),
            sheet_digests: self
                .sheet_digests
                .iter()
                .map(|d| hex_field("sheet digest", d))
                .collect::<std::result::Result<_, _>>()?,
            countersignature: Some(pb::Countersignature {
                key_id: hex_field("key_id", &self.key_id)?,
                signature: hex_field("signature", &self.signature)?,
            }),
        };
        tally_proto::county::batch_from_pb(batch).map_err(|e| e.to_string())
    }
}

/// The mode as `chain.jsonl` writes it.
fn mode_text(mode: i32) -> &'static str {
    match pb::Mode::try_from(mode) {
        Ok(pb::Mode::Official) => "official",
        Ok(pb::Mode::Rehearsal) => "rehearsal",
        _ => "",
    }
}

/// The mode `chain.jsonl` names, as the envelope carries it.
fn mode_number(text: &str) -> Result<i32, String> {
    Ok(match text {
        "official" => pb::Mode::Official,
        "rehearsal" => pb::Mode::Rehearsal,
        "" => pb::Mode::Unspecified,
        other => {
            return Err(format!(
                "mode {other:?} is neither \"official\" nor \"rehearsal\""
            ));
        }
    } as i32)
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

// ------------------------------------------------------------------------------- export

/// Reads one replica's export stream: its header, then every chain record it announced.
/// (`tally export` tries each replica in turn, then [`write_bundle`]s what the first gave.)
pub async fn read_export(
    county: &mut CountyClient<tonic::transport::Channel>,
    stale: bool,
) -> Result<(pb::ExportHeader, Vec<pb::ChainRecord>)> {
    let mut stream = county
        .export(pb::ExportRequest { stale })
        .await
        .map_err(|s| Error::Refused(s.message().to_owned()))?
        .into_inner();
    let mut header = None;
    let mut records = Vec::new();
    while let Some(chunk) = stream
        .message()
        .await
        .map_err(|s| Error::Refused(s.message().to_owned()))?
    {
        match (chunk.header, &header) {
            (Some(h), None) => header = Some(h),
            (Some(_), Some(_)) => {
                return Err(malformed("the export stream carries a second header"));
            }
            (None, None) => {
                return Err(malformed(
                    "the export stream does not begin with its header",
                ));
            }
            (None, Some(_)) => {}
        }
        records.extend(chunk.records);
        if records.len() > BUNDLE_RECORDS_MAX {
            return Err(malformed(format!(
                "the export carries more than {BUNDLE_RECORDS_MAX} records"
            )));
        }
    }
    let header = header.ok_or_else(|| malformed("the export stream ended without a header"))?;
    if records.len() as u64 != header.chain_length {
        return Err(malformed(format!(
            "the export ended after {} of the {} chain records its header announced; export again",
            records.len(),
            header.chain_length
        )));
    }
    Ok((header, records))
}

fn malformed(message: impl Into<String>) -> Error {
    Error::Malformed(message.into())
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
            .map_err(Error::io(format!("cannot list {}", out.display())))?
            .next()
            .is_some()
    {
        return Err(malformed(format!(
            "{} exists and is not empty; an evidence bundle is written to a new folder",
            out.display()
        )));
    }
    let mut files = BTreeMap::new();
    let mut write = |relative: &str, bytes: &[u8]| -> Result<()> {
        let path = out.join(relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(Error::io(format!("cannot create {}", parent.display())))?;
        }
        std::fs::write(&path, bytes)
            .map_err(Error::io(format!("cannot write {}", path.display())))?;
        files.insert(relative.to_owned(), sha256_hex(bytes));
        Ok(())
    };

    // The definition as the loader reads it: its main file and every file it names.
    let main_name = definition
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| malformed(format!("{} is not a file name", definition.display())))?
        .to_owned();
    let folder = definition
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let text = std::fs::read(definition).map_err(Error::io(format!(
        "cannot read the election definition {}",
        definition.display()
    )))?;
    let (_, mut named) = load_definition(definition)?;
    check_below(definition, &named)?;
    named.sort();
    named.dedup();
    write(&format!("{DEFINITION_DIR}/{main_name}"), &text)?;
    for relative in &named {
        let bytes = std::fs::read(folder.join(relative)).map_err(Error::io(format!(
            "cannot read {}",
            folder.join(relative).display()
        )))?;
        write(&format!("{DEFINITION_DIR}/{relative}"), &bytes)?;
    }

    let mut chain = String::new();
    for (position, record) in records.iter().enumerate() {
        let bare = RecordLine {
            position: position as u64,
            log_index: record.log_index,
            key_id: String::new(),
            signature: String::new(),
            sheet: String::new(),
            founding: None,
            batch: None,
            act: None,
            election_id: String::new(),
            mode: String::new(),
            head: hex::encode(&record.head),
        };
        let line = if let Some(founding) = &record.founding {
            let text = String::from_utf8(founding.definition.clone()).map_err(|_| {
                malformed(format!(
                    "chain record {position}: the founding definition is not UTF-8 JSON"
                ))
            })?;
            RecordLine {
                founding: Some(text),
                ..bare
            }
        } else if let Some(act) = &record.act {
            RecordLine {
                act: Some(
                    ActLine::from_pb(act)
                        .map_err(|e| malformed(format!("chain record {position}: {e}")))?,
                ),
                ..bare
            }
        } else {
            let signed = record
                .sheet
                .as_ref()
                .ok_or_else(|| malformed(format!("chain record {position} carries no sheet")))?;
            RecordLine {
                key_id: hex::encode(&signed.key_id),
                signature: hex::encode(&signed.signature),
                sheet: hex::encode(&signed.sheet),
                batch: record.batch.as_ref().map(BatchLine::from_pb),
                election_id: signed.election_id.clone(),
                mode: mode_text(signed.mode).to_owned(),
                ..bare
            }
        };
        chain.push_str(
            &serde_json::to_string(&line).map_err(Error::json("encoding a chain record".into()))?,
        );
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
    let text = serde_json::to_string_pretty(&manifest)
        .map_err(Error::json("encoding the manifest".into()))?;
    std::fs::write(&path, format!("{text}\n"))
        .map_err(Error::io(format!("cannot write {}", path.display())))
}

/// Loads a definition, and names the files it read (relative to its folder) in the order its
/// loader asked for them.
pub fn load_definition(definition: &Path) -> Result<(Definition, Vec<String>)> {
    let text = std::fs::read_to_string(definition).map_err(Error::io(format!(
        "cannot read the election definition {}",
        definition.display()
    )))?;
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
    let loaded =
        tally_core::definition::load(&definition.display().to_string(), &text, &mut read_sibling)
            .map_err(|errors| Error::Definition(errors.to_string()))?;
    Ok((loaded, named))
}

/// Only plain relative paths below the definition's folder are copied into a bundle.
fn check_below(definition: &Path, named: &[String]) -> Result<()> {
    for relative in named {
        if !Path::new(relative)
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
        {
            return Err(malformed(format!(
                "{}: the definition names {relative}, outside its own folder; an evidence bundle holds the definition's files below one folder, so move it beside the definition",
                definition.display()
            )));
        }
    }
    Ok(())
}

// ------------------------------------------------------------------------------- verify

/// One thing that does not check. `record` is the chain position (0-based) when the finding
/// concerns one record; `contest` when it concerns one contest's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// `file`, `chain`, `founding` (the chain's founding record, or the definition files
    /// against it), `signature` (a sheet refused by the offline intake: bad signature,
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
    /// The digest of the definition the sheets were recounted under: the founding one.
    pub definition_digest: String,
    /// That definition's mode: `official`, or `rehearsal` (the evidence of a rehearsal).
    pub mode: String,
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
    /// Whether the bundle was checked against what the committee announced ([`Anchors`]);
    /// unanchored, a bundle made up whole (a chain of its own over a definition of its own)
    /// checks by itself.
    pub anchored: bool,
    /// What each anchor matched, one sentence each.
    pub anchors: Vec<String>,
    /// The amendments replayed, in record order (each checked: k signatures of the
    /// committee, and applied to the definition in force at its log index).
    pub amendments: Vec<tally_core::definition::AmendmentNote>,
}

/// What the committee announced, to tie a bundle to the county's own record: the founding
/// definition's digest and a chain head (docs/evidence.md, "Anchors"). A published file is
/// JSON with these two keys (others are ignored), each 64 hex digits.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anchors {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub definition_digest: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain_head: Option<String>,
}

impl Anchors {
    pub fn is_empty(&self) -> bool {
        self.definition_digest.is_none() && self.chain_head.is_none()
    }

    /// The anchors a published file announces.
    pub fn read_published(path: &Path) -> Result<Anchors> {
        let text = std::fs::read_to_string(path)
            .map_err(Error::io(format!("cannot read {}", path.display())))?;
        let anchors: Anchors = serde_json::from_str(&text).map_err(Error::json(format!(
            "{} is not a published announcement (JSON with definition_digest and chain_head)",
            path.display()
        )))?;
        if anchors.is_empty() {
            return Err(malformed(format!(
                "{} announces neither definition_digest nor chain_head",
                path.display()
            )));
        }
        Ok(anchors)
    }

    /// Each anchor as 32 bytes, or what is wrong with it (named by `flag`s: the option or key).
    fn parse(text: &Option<String>, flag: &str) -> Result<Option<[u8; 32]>> {
        let Some(text) = text else { return Ok(None) };
        let bytes = hex::decode(text.trim())
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b).ok());
        bytes.map(Some).ok_or_else(|| {
            malformed(format!(
                "{flag} {text:?} is not 64 hex digits; give the digest as the committee announced it"
            ))
        })
    }
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
/// (no manifest, a definition that does not load); everything else is a finding. The steps,
/// in order: the manifest, every file against its digest, the definition, the records and the
/// chain, every signature and sheet (rebuilding the county's ledger), the results.
pub fn verify_bundle(bundle: &Path) -> Result<VerifyReport> {
    verify_anchored(bundle, &Anchors::default())
}

/// [`verify_bundle`], and the bundle against what the committee announced: its founding
/// definition must have the announced digest, and the announced chain head must be the head
/// after one of its records (the bundle is the announced chain, or extends it). A mismatch is
/// an `anchor` finding; an anchor that is not 64 hex digits is an error.
pub fn verify_anchored(bundle: &Path, anchors: &Anchors) -> Result<VerifyReport> {
    verify_replayed(bundle, anchors).map(|(report, _)| report)
}

/// The record as `tally verify` replayed it: what printed papers are made from, so that they
/// say only what the evidence proves.
pub struct Replayed {
    /// The definition in force at the end (the founding one and every amendment).
    pub definition: Definition,
    /// The sheets as recorded, each once.
    pub ledger: tally_core::ledger::Ledger,
    /// The committee's decisions, confirmations and reopenings.
    pub decisions: Decisions,
    /// The result recomputed from the three.
    pub result: ElectionResult,
}

/// [`verify_anchored`], and the record it replayed.
pub fn verify_replayed(bundle: &Path, anchors: &Anchors) -> Result<(VerifyReport, Replayed)> {
    let digest_anchor = Anchors::parse(&anchors.definition_digest, "--definition-digest")?;
    let head_anchor = Anchors::parse(&anchors.chain_head, "--head")?;
    let manifest = read_manifest(bundle)?;
    let mut findings = Findings::default();
    check_files(bundle, &manifest, &mut findings);
    let (files_definition, _) = load_definition(&bundle.join(&manifest.definition))
        .map_err(|e| Error::BundleDefinition(Box::new(e)))?;
    let records = check_chain(bundle, &manifest, &mut findings)?;
    let founding = founding_definition(&records, files_definition, &mut findings);
    let definition_digest = tally_core::canonical::digest(&founding);
    let (recomputed, definition, decisions) = replay(founding, &records, &mut findings);
    check_countersignatures(&definition, &records, &mut findings);
    let result = check_results(bundle, &definition, &recomputed, &decisions, &mut findings)?;
    let mut matched = Vec::new();
    if let Some(announced) = digest_anchor {
        if announced == definition_digest.0 {
            matched.push(format!(
                "the founding definition is the announced one ({definition_digest})"
            ));
        } else {
            findings.push(Finding::new(
                "anchor",
                format!(
                    "the bundle's founding definition has digest {definition_digest}, not the announced {}: its sheets were counted under another definition than the county's",
                    hex::encode(announced)
                ),
            ));
        }
    }
    if let Some(announced) = head_anchor {
        match records.iter().find(|(_, _, head)| *head == Some(announced)) {
            Some((line, _, _)) => matched.push(format!(
                "the announced chain head {} is the head after record {} (log index {}) of this chain",
                hex::encode(announced),
                line.position,
                line.log_index
            )),
            None => findings.push(Finding::new(
                "anchor",
                format!(
                    "the announced chain head {} is not a head of this chain: the bundle is not the county's chain (or was exported before the announcement; export again)",
                    hex::encode(announced)
                ),
            )),
        }
    }
    let findings_total = findings.total();
    let report = VerifyReport {
        bundle: bundle.display().to_string(),
        election: manifest.election,
        definition_digest: definition_digest.to_string(),
        mode: definition.election.mode.as_str().to_owned(),
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
        anchored: digest_anchor.is_some() || head_anchor.is_some(),
        anchors: matched,
        amendments: definition.amended.amendments.clone(),
    };
    Ok((
        report,
        Replayed {
            definition,
            ledger: recomputed.ledger,
            decisions,
            result,
        },
    ))
}

/// The manifest, in a format this version reads.
pub fn read_manifest(bundle: &Path) -> Result<Manifest> {
    let manifest_path = bundle.join(MANIFEST);
    let manifest_text = std::fs::read_to_string(&manifest_path).map_err(Error::io(format!(
        "cannot read {}",
        manifest_path.display()
    )))?;
    let manifest: Manifest = serde_json::from_str(&manifest_text).map_err(Error::json(format!(
        "{} is not an evidence manifest",
        manifest_path.display()
    )))?;
    if manifest.format != BUNDLE_FORMAT {
        return Err(Error::Format {
            manifest: manifest_path.display().to_string(),
            found: manifest.format,
        });
    }
    Ok(manifest)
}

/// Step 1: every file is the one the manifest names, and the manifest names the ones a
/// bundle must have.
fn check_files(bundle: &Path, manifest: &Manifest, findings: &mut Findings) {
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
}

/// One record of `chain.jsonl` as read: the line, its envelope if it decodes, its stored head
/// if it is 32 bytes of hex.
pub type ChainRecordRead = (RecordLine, Option<SignedSheet>, Option<[u8; 32]>);

/// Steps 2 and 3: the records and the chain ([`read_chain`]), then the chain against the
/// manifest: its length, its head, its last log index.
fn check_chain(
    bundle: &Path,
    manifest: &Manifest,
    findings: &mut Findings,
) -> Result<Vec<ChainRecordRead>> {
    let chain_path = bundle.join(CHAIN_FILE);
    let chain_text = std::fs::read_to_string(&chain_path)
        .map_err(Error::io(format!("cannot read {}", chain_path.display())))?;
    let ChainRead { records, head } = read_chain(&chain_text, findings)?;
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
    if hex::encode(head) != manifest.chain_head {
        findings.push(Finding::new(
            "chain",
            format!(
                "the last record's head is {}, but the manifest's chain head is {}",
                hex::encode(head),
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
    Ok(records)
}

/// Step 3b: the definition the chain was founded with, which every sheet is recounted under.
/// The bundle's definition files must be the same definition (a finding names the first
/// difference); a chain without a founding record (or one that does not decode) is a finding,
/// and the files' definition is used.
fn founding_definition(
    records: &[ChainRecordRead],
    files: Definition,
    findings: &mut Findings,
) -> Definition {
    let first = records.first().map(|(line, _, _)| line);
    let Some((line, founding)) = first.and_then(|l| l.founding.as_ref().map(|f| (l, f))) else {
        findings.push(Finding::new(
            "founding",
            format!("{CHAIN_FILE} does not begin with a founding record: the chain does not say which definition it counts under; the bundle's definition files were used"),
        ));
        return files;
    };
    match tally_core::canonical::decode("the founding definition", founding.as_bytes()) {
        Ok(founded) => {
            if let Some(difference) = tally_core::canonical::first_difference(&files, &founded) {
                findings.push(Finding {
                    record: Some(line.position),
                    log_index: Some(line.log_index),
                    ..Finding::new(
                        "founding",
                        format!(
                            "the bundle's definition files (digest {}) are not the definition the chain was founded with (digest {}): {difference}; the sheets were recounted under the founding one",
                            tally_core::canonical::digest(&files),
                            tally_core::canonical::digest(&founded)
                        ),
                    )
                });
            }
            founded
        }
        Err(e) => {
            findings.push(Finding {
                record: Some(line.position),
                log_index: Some(line.log_index),
                ..Finding::new("founding", format!("{e}"))
            });
            files
        }
    }
}

/// Step 3c: who forwarded what. Every batch a record keeps has its township's countersignature
/// over its sheets' digests (E208, E209); every sheet record is in the batch kept at its log
/// index, from a unit of that township (E210). A sheet record with no batch at its log index
/// is a finding: the evidence does not say which township forwarded it.
fn check_countersignatures(
    definition: &Definition,
    records: &[ChainRecordRead],
    findings: &mut Findings,
) {
    let mut current: Option<(u64, ForwardedBatch)> = None;
    for (line, signed, _) in records {
        let Some(signed) = signed else { continue };
        let at = |code: &str, message: String| Finding {
            record: Some(line.position),
            log_index: Some(line.log_index),
            sheet: sheet_label(signed),
            code: code.to_owned(),
            ..Finding::new("countersignature", message)
        };
        if let Some(batch) = &line.batch {
            let Ok(batch) = batch.decode() else {
                current = None;
                continue; // a finding of the chain step already
            };
            if let Err(e) = tally_proto::verify_countersignature_of_digests(
                definition,
                &batch.township,
                &batch.digests,
                &batch.countersignature,
            ) {
                findings.push(at(e.code(), e.to_string()));
            }
            current = Some((line.log_index, batch));
        }
        match &current {
            Some((index, batch)) if *index == line.log_index => {
                if !batch.digests.contains(&signed.digest()) {
                    findings.push(at(
                        "",
                        format!(
                            "the sheet is not in the batch township {} countersigned at log index {}",
                            batch.township, index
                        ),
                    ));
                }
                // A key an amendment replaced was its unit's when the sheet was recorded.
                let unit = definition.unit_by_key(&signed.key_id).or_else(|| {
                    definition
                        .retired_key(&signed.key_id)
                        .and_then(|r| definition.unit(&r.unit))
                });
                if let Some(unit) = unit
                    && unit.township != batch.township
                {
                    findings.push(at(
                        "E210",
                        format!(
                            "unit {} belongs to township {}, not to {}, whose batch brought it",
                            unit.id, unit.township, batch.township
                        ),
                    ));
                }
            }
            _ => findings.push(at(
                "",
                "no countersigned batch is kept for this sheet's log index: the evidence does not say which township forwarded it".to_owned(),
            )),
        }
    }
}

/// Step 4: the record replayed in chain order. Every sheet through the same offline intake as
/// `tally results` (signature, unit, numbers) under the definition in force at its log
/// index; every committee act checked (k valid signatures of the committee) and applied to
/// that definition, as the county did. Returns the rebuilt ledger and the definition in
/// force at the end.
fn replay(
    founding: Definition,
    records: &[ChainRecordRead],
    findings: &mut Findings,
) -> (intake::Intake, Definition, Decisions) {
    let positions: Vec<&RecordLine> = records
        .iter()
        .filter(|(_, s, _)| s.is_some())
        .map(|(l, _, _)| l)
        .collect();
    let labels: Vec<String> = records
        .iter()
        .filter_map(|(_, s, _)| s.as_ref().map(sheet_label))
        .collect();
    let mut definition = founding;
    let mut recomputed = intake::Intake::default();
    let mut stretch: Vec<SignedSheet> = Vec::new();
    let mut numbered = 0;
    let mut zero_report: Option<u64> = None;
    let mut decisions = Decisions::default();
    // The chain head at a log index, as the records carry it (their links were checked).
    let head_at = |index: u64| {
        records
            .iter()
            .take_while(|(line, _, _)| line.log_index <= index)
            .filter_map(|(_, _, head)| *head)
            .last()
    };
    for (line, signed, _) in records {
        if let Some(signed) = signed {
            if definition.election.mode == tally_core::definition::Mode::Official
                && zero_report.is_none()
            {
                findings.push(Finding {
                    record: Some(line.position),
                    log_index: Some(line.log_index),
                    sheet: sheet_label(signed),
                    ..Finding::new(
                        "record",
                        "a sheet of the official election recorded before its zero report, which the county never does".to_owned(),
                    )
                });
            }
            stretch.push(signed.clone());
            continue;
        }
        let Some(act) = &line.act else { continue };
        intake::intake_into(&mut recomputed, &definition, "record", numbered, &stretch);
        numbered += stretch.len();
        stretch.clear();
        // The same function as every replica of the county applies it with.
        let applied = act.decode().and_then(|act| {
            tally_core::record::apply(
                tally_core::record::Parts {
                    definition: &definition,
                    ledger: &recomputed.ledger,
                    zero_report: &mut zero_report,
                    decisions: &mut decisions,
                },
                line.log_index,
                &act,
                &head_at,
            )
        });
        match applied {
            Ok(Some(amended)) => definition = amended,
            Ok(None) => {}
            Err(e) => findings.push(Finding {
                record: Some(line.position),
                log_index: Some(line.log_index),
                ..Finding::new(
                    "act",
                    format!("the record holds an act that does not apply, which the county never records: {e}"),
                )
            }),
        }
    }
    intake::intake_into(&mut recomputed, &definition, "record", numbered, &stretch);
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
    (recomputed, definition, decisions)
}

/// Step 5: the results, recomputed from the definition and the rebuilt ledger, against the
/// county's claim. Returns the recomputed result.
fn check_results(
    bundle: &Path,
    definition: &Definition,
    recomputed: &intake::Intake,
    decisions: &Decisions,
    findings: &mut Findings,
) -> Result<ElectionResult> {
    let result = tally_core::results::compute_with(definition, &recomputed.ledger, decisions);
    let ours = serde_json::to_value(&result)
        .map_err(Error::json("encoding the recomputed result".into()))?;
    let results_path = bundle.join(RESULTS_FILE);
    let text = std::fs::read_to_string(&results_path)
        .map_err(Error::io(format!("cannot read {}", results_path.display())))?;
    let claimed: Value = serde_json::from_str(&text).map_err(Error::json(format!(
        "{} is not JSON",
        results_path.display()
    )))?;
    compare_results(&claimed, &ours, findings);
    Ok(result)
}

/// `chain.jsonl` as read: each record with its envelope (if it decodes) and its stored head
/// (if it is 32 bytes of hex), and the head after the last record.
pub struct ChainRead {
    pub records: Vec<ChainRecordRead>,
    pub head: [u8; 32],
}

/// Reads an evidence bundle's `chain.jsonl` and checks its links: each line on its own (a line
/// that is not a record, or whose envelope does not decode, is a finding), then positions in
/// order, log indexes never going back, and every link recomputed from the sheet bytes with
/// the county's own link function. An error only when it holds more than
/// [`BUNDLE_RECORDS_MAX`] records. Public for the fuzz target (`fuzz/`).
pub fn read_chain(chain_text: &str, findings: &mut Findings) -> Result<ChainRead> {
    // The records, each line on its own.
    let mut records: Vec<ChainRecordRead> = Vec::new();
    for (n, line) in chain_text.lines().enumerate() {
        if records.len() >= BUNDLE_RECORDS_MAX {
            return Err(malformed(format!(
                "{CHAIN_FILE} holds more than {BUNDLE_RECORDS_MAX} records"
            )));
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
        let head = hex::decode(&parsed.head)
            .ok()
            .and_then(|h| <[u8; 32]>::try_from(h).ok());
        if parsed.founding.is_some() || parsed.act.is_some() {
            records.push((parsed, None, head));
            continue;
        }
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
        if let Some(founding) = &line.founding {
            let digest = tally_core::canonical::digest_of(founding.as_bytes());
            if i != 0 {
                findings.push(at(
                    "a founding record after the first: the founding is always the first act"
                        .to_owned(),
                ));
            }
            let link = chain_link(&previous_head, line.log_index, &digest.0);
            if link != *head {
                findings.push(at(format!(
                    "the link does not check: SHA-256 over the previous head {}, log index {} and the founding definition's digest {} is {}, but the stored head is {}; the founding definition was changed",
                    short(&previous_head),
                    line.log_index,
                    digest.short(),
                    short(&link),
                    short(head)
                )));
            }
        } else if let Some(act) = &line.act {
            match act.decode() {
                Ok(act) => {
                    let link = chain_link(&previous_head, line.log_index, &act.link_digest());
                    if link != *head {
                        findings.push(at(format!(
                            "the link does not check: SHA-256 over the previous head {}, log index {} and this act's digest is {}, but the stored head is {}; the act (its body or a signature) or the record before it was changed, dropped or added",
                            short(&previous_head),
                            line.log_index,
                            short(&link),
                            short(head)
                        )));
                    }
                }
                Err(e) => findings.push(at(format!("the act does not decode: {e}"))),
            }
        } else if let Some(signed) = signed {
            let batch = match line.batch.as_ref().map(BatchLine::decode).transpose() {
                Ok(batch) => batch,
                Err(e) => {
                    findings.push(at(format!("the record's batch does not decode: {e}")));
                    None
                }
            };
            let link = chain_link(
                &previous_head,
                line.log_index,
                &link_digest(&Act::Sheet(signed.clone()), batch.as_ref()),
            );
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

/// The head a `chain.jsonl` record links to from `previous_head`: the county's link function
/// over the record's act (its sheet, with the batch it keeps, or the founding definition).
/// An observer's own verifier recomputes a chain with it; the error says what does not decode.
pub fn record_link(
    line: &RecordLine,
    previous_head: &[u8; 32],
) -> std::result::Result<[u8; 32], String> {
    let digest = match (&line.founding, &line.act) {
        (Some(founding), _) => tally_core::canonical::digest_of(founding.as_bytes()).0,
        (None, Some(act)) => act.decode()?.link_digest(),
        (None, None) => {
            let signed = decode_envelope(line)?;
            let batch = line.batch.as_ref().map(BatchLine::decode).transpose()?;
            link_digest(&Act::Sheet(signed), batch.as_ref())
        }
    };
    Ok(chain_link(previous_head, line.log_index, &digest))
}

/// The envelope of a record, or why it does not decode (the message of a finding).
fn decode_envelope(line: &RecordLine) -> Result<SignedSheet, String> {
    let field =
        |name: &str, text: &str| hex::decode(text).map_err(|_| format!("{name} is not hex"));
    let envelope = pb::SignedSheet {
        sheet: field("sheet", &line.sheet)?,
        signature: field("signature", &line.signature)?,
        key_id: field("key_id", &line.key_id)?,
        election_id: line.election_id.clone(),
        mode: mode_number(&line.mode)?,
    };
    SignedSheet::from_pb(envelope).map_err(|e| e.to_string())
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
    // A map keeps one entry per id: a second, altered copy of a contest would hide behind the
    // other, so every repeated id is a finding of its own.
    let mut seen = std::collections::BTreeSet::new();
    for contest in claimed
        .get("contests")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let id = contest
            .get("contest")
            .and_then(Value::as_str)
            .unwrap_or("?");
        if !seen.insert(id) {
            findings.push(Finding {
                contest: id.to_owned(),
                ..Finding::new(
                    "result",
                    "the county's results list this contest more than once; a result names each contest once, so the copies cannot all be the county's".to_owned(),
                )
            });
        }
    }
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
