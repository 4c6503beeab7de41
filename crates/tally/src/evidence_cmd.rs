//! `tally export` and `tally verify`: evidence bundles (see docs/evidence.md). The format,
//! the writer and the verifier are `tally-evidence`'s; this module reaches the cluster as an
//! operator, and prints.

use crate::client::{ClientArgs, channel, client_config, operator_files, runtime};
use crate::outcome::Outcome;
use crate::report::Format;
use crate::{say, say_part};
use anyhow::{Context, Result, anyhow};
use std::path::{Path, PathBuf};
use tally_evidence::{VerifyReport, read_export, verify_bundle, write_bundle};
use tally_rpc::pb::county_client::CountyClient;
use tally_table::{Align, Table};

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
    let (header, records) = runtime()?.block_on(async {
        let tls = client_config(&files)?;
        let mut errors = Vec::new();
        for address in &args.client.servers {
            let mut county =
                CountyClient::new(channel(&tls, address)?).max_decoding_message_size(64 << 20);
            match read_export(&mut county, args.stale).await {
                Ok(got) => return Ok(got),
                Err(e) => errors.push(format!("{address}: {e}")),
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
        "founding definition {} (the digest the committee announces with the head)",
        report.definition_digest
    );
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

/// `tally verify BUNDLE`.
/// What the committee announced, to check a bundle against (docs/evidence.md, "Anchors").
#[derive(clap::Args)]
pub struct AnchorArgs {
    /// The founding definition's digest as the committee announced it (64 hex digits).
    #[arg(long, value_name = "HEX")]
    definition_digest: Option<String>,
    /// A chain head the committee announced (64 hex digits): it must be the head after one
    /// of the bundle's records.
    #[arg(long, value_name = "HEX")]
    head: Option<String>,
    /// The committee's announcement as a file: JSON with definition_digest and chain_head
    /// (the flags above take precedence).
    #[arg(long, value_name = "FILE")]
    published: Option<std::path::PathBuf>,
}

impl AnchorArgs {
    pub fn anchors(self) -> Result<tally_evidence::Anchors> {
        let mut anchors = match &self.published {
            Some(path) => tally_evidence::Anchors::read_published(path)?,
            None => tally_evidence::Anchors::default(),
        };
        if self.definition_digest.is_some() {
            anchors.definition_digest = self.definition_digest;
        }
        if self.head.is_some() {
            anchors.chain_head = self.head;
        }
        Ok(anchors)
    }
}

pub fn verify(bundle: &Path, anchors: &tally_evidence::Anchors, format: Format) -> Result<Outcome> {
    let report = tally_evidence::verify_anchored(bundle, anchors)?;
    print_report(&report, format)?;
    Ok(if report.ok {
        Outcome::Clean
    } else {
        Outcome::Findings
    })
}

/// The first and last line of an unanchored check.
const UNANCHORED: &str = "UNANCHORED: checked against the bundle's own contents only (a bundle made up whole checks too); give --definition-digest and --head, or --published FILE, as the committee announced them";

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
            if !report.anchored {
                say!("{UNANCHORED}");
            }
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
            say!("founding definition {}", report.definition_digest);
            for a in &report.amendments {
                say!(
                    "amendment {} (log index {}): {}; {}",
                    a.id,
                    a.log_index,
                    a.reason,
                    a.changes.join("; ")
                );
            }
            if report.mode == "rehearsal" {
                say!(
                    "【{}】 the evidence of a rehearsal, not of the election",
                    tally_core::definition::Mode::Rehearsal.banner()
                );
            }
            for matched in &report.anchors {
                say!("anchored: {matched}");
            }
            if report.ok {
                say!(
                    "OK: every file, signature and chain link checks, and the results recomputed from the sheets are the county's."
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
            if !report.anchored {
                say!("{UNANCHORED}");
            }
        }
    }
    Ok(())
}
