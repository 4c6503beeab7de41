//! The offline intake: verify signed sheets, validate them, and record the good ones in a
//! ledger exactly once. The same steps the township and the county run on the network.

use rayon::prelude::*;
use serde::Serialize;
use std::path::PathBuf;
use tally_core::definition::Definition;
use tally_core::ledger::{Ledger, Submission};
use tally_core::validate::{self, Finding};
use tally_proto::SignedSheet;

/// A sheet that was not counted, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Refusal {
    /// `file.sheets #12` – where the sheet came from.
    pub source: String,
    /// The sheet's label when it could be read, else empty.
    pub sheet: String,
    pub code: String,
    /// What is wrong and what to do, without the code (it has its own field).
    pub message: String,
}

impl Refusal {
    fn new(source: String, sheet: String, code: &str, message: String) -> Self {
        // Errors print their code first; here the code has its own column.
        let message = match message.strip_prefix(code) {
            Some(rest) => rest.trim_start().to_owned(),
            None => message,
        };
        Refusal {
            source,
            sheet,
            code: code.to_owned(),
            message,
        }
    }
}

#[derive(Default, Serialize)]
pub struct Intake {
    #[serde(skip)]
    pub ledger: Ledger,
    pub accepted: usize,
    /// Accepted sheets that correct an earlier version (version 2 and up).
    pub corrections: usize,
    pub duplicates: usize,
    pub superseded: usize,
    pub conflicts: usize,
    pub refused: Vec<Refusal>,
    /// Warnings on accepted sheets: counted, but flagged for the committee.
    pub warnings: Vec<Finding>,
}

impl Intake {
    pub fn has_findings(&self) -> bool {
        !self.refused.is_empty() || !self.warnings.is_empty() || self.conflicts > 0
    }
}

/// Verifies (in parallel, batched) and records every sheet of every bundle, in order.
pub fn intake(definition: &Definition, bundles: &[(PathBuf, Vec<SignedSheet>)]) -> Intake {
    let mut out = Intake::default();
    for (path, signed) in bundles {
        intake_into(&mut out, definition, &path.display().to_string(), 0, signed);
    }
    out
}

/// Verifies and records `signed` on top of `out`, under `definition`: the sheets of one
/// stretch of a record between two amendments (`tally verify`), numbered in messages from
/// `first + 1` on as `SOURCE #n`.
pub fn intake_into(
    out: &mut Intake,
    definition: &Definition,
    source: &str,
    first: usize,
    signed: &[SignedSheet],
) {
    let verified = tally_proto::verify_batch(definition, signed);
    // Validation is independent per sheet, so it runs in parallel too; recording in the
    // ledger stays sequential and in bundle order.
    let checked: Vec<_> = verified
        .into_par_iter()
        .map(|v| {
            v.map(|v| {
                let findings = validate::check_sheet(definition, &v.sheet);
                (v, findings)
            })
        })
        .collect();
    for (i, item) in checked.into_iter().enumerate() {
        let source = format!("{source} #{}", first + i + 1);
        match item {
            Err(e) => {
                out.refused
                    .push(Refusal::new(source, String::new(), e.code(), e.to_string()))
            }
            Ok((verified, findings)) => {
                if let Some((code, message)) = validate::refusal(&findings) {
                    out.refused.push(Refusal::new(
                        source,
                        verified.sheet.label(),
                        code.as_str(),
                        message,
                    ));
                    continue;
                }
                let version = verified.sheet.version;
                let digest = verified.digest;
                match out.ledger.submit(verified.sheet, verified.digest) {
                    Submission::Accepted => {
                        out.accepted += 1;
                        out.corrections += usize::from(version > 1);
                        out.warnings.extend(findings);
                    }
                    Submission::Duplicate => out.duplicates += 1,
                    Submission::Superseded { .. } => out.superseded += 1,
                    Submission::Conflict { existing } => {
                        out.conflicts += 1;
                        // The ledger keeps the refused sheet; name it only in this rare case.
                        let label = out
                            .ledger
                            .conflicts()
                            .iter()
                            .find(|c| c.conflicting == digest)
                            .map(|c| c.sheet.label())
                            .unwrap_or_default();
                        out.refused.push(Refusal::new(
                            source,
                            label,
                            "conflict",
                            format!(
                                "a different sheet for the same unit, contest, round and version was accepted before (sheet digest {}); this one is recorded and not counted: the committee must establish which is genuine, and the unit corrects it with a new version",
                                hex::encode(&existing[..8])
                            ),
                        ));
                    }
                }
            }
        }
    }
}
