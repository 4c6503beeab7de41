//! Reading and writing the files the command line and a polling unit's device work with:
//! definitions, signed-sheet bundles, keys, and synthetic counties written out. Every error
//! names the file and says what to do.
//!
//! This crate owns file handling only: the rules live in `tally-core`, the wire format and the
//! bundle encoding in `tally-proto`, the synthetic county in `tally-synth`. It depends on no
//! network crate and prints nothing (except the note that a folder's non-bundle file was
//! skipped, on standard error).
//!
//! # Layout
//!
//! ```text
//! lib.rs   load_definition, read_secret_key, write_secret, sheet_bundle_paths, read_bundles,
//!          write_generated / write_generated_full
//! ```

use anyhow::{Context, Result, anyhow, bail};
use ed25519_dalek::SigningKey;
use std::path::{Path, PathBuf};
use tally_core::definition::{self, Definition};
use tally_synth::{self as synth, GenParams};

/// Loads a definition and the CSV files it names, relative to its own folder.
pub fn load_definition(path: &Path) -> Result<Definition> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the election definition {}", path.display()))?;
    let folder = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut read_sibling = |relative: &str| -> Result<String, String> {
        let sibling = folder.join(relative);
        std::fs::read_to_string(&sibling).map_err(|e| format!("{} ({e})", sibling.display()))
    };
    definition::load(&path.display().to_string(), &text, &mut read_sibling)
        .map_err(|errors| anyhow!("{errors}"))
}

/// Reads a secret key file: 64 hex digits (the 32-byte Ed25519 seed), as `tally keygen` writes.
pub fn read_secret_key(path: &Path) -> Result<SigningKey> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the key file {}", path.display()))?;
    let hex_text = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .unwrap_or("");
    let bytes = hex::decode(hex_text).map_err(|_| {
        anyhow!(
            "{}: expected the secret key as 64 hex digits on one line (as `tally keygen` writes it)",
            path.display()
        )
    })?;
    let seed: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
        anyhow!(
            "{}: the secret key is {} bytes, expected 32",
            path.display(),
            bytes.len()
        )
    })?;
    Ok(SigningKey::from_bytes(&seed))
}

/// Writes a file that holds a secret, readable by its owner only.
pub fn write_secret(path: &Path, contents: &str) -> Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            anyhow!(
                "{} already exists; a key file is never overwritten, so move the old one away first",
                path.display()
            )
        } else {
            anyhow!("cannot create {}: {e}", path.display())
        }
    })?;
    file.write_all(contents.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Expands the `--sheets` arguments: files as given, folders to every `*.sheets` file in them
/// (sorted, so the order is the same on every machine).
pub fn sheet_bundle_paths(args: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for arg in args {
        if arg.is_dir() {
            let (mut found, skipped): (Vec<PathBuf>, Vec<PathBuf>) = std::fs::read_dir(arg)
                .with_context(|| format!("cannot list {}", arg.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file())
                .partition(|p| p.extension().is_some_and(|e| e == "sheets"));
            found.sort();
            // A clerk who saved a bundle under another name must hear that it was not read.
            for path in &skipped {
                eprintln!(
                    "note: skipped {} (only files named *.sheets in a folder are read; name it on the command line to read it anyway)",
                    path.display()
                );
            }
            if found.is_empty() {
                bail!("{} holds no .sheets files", arg.display());
            }
            out.extend(found);
        } else {
            out.push(arg.clone());
        }
    }
    Ok(out)
}

/// Reads every bundle named, with errors that name the file.
pub fn read_bundles(paths: &[PathBuf]) -> Result<Vec<(PathBuf, Vec<tally_proto::SignedSheet>)>> {
    sheet_bundle_paths(paths)?
        .into_iter()
        .map(|path| {
            let bytes =
                std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
            let sheets = tally_proto::read_bundle(&bytes).with_context(|| {
                // An unsigned clerk's file given where a signed bundle belongs is the likely
                // mistake; say so.
                let looks_like_sheet_file = std::str::from_utf8(&bytes)
                    .is_ok_and(|t| t.contains("unit =") || t.contains("unit="));
                if looks_like_sheet_file {
                    format!(
                        "{} is a sheet file a clerk fills in, not a signed bundle; sign it first with `tally sheet sign`",
                        path.display()
                    )
                } else {
                    format!("{} is not a readable sheet bundle", path.display())
                }
            })?;
            Ok((path, sheets))
        })
        .collect()
}

/// Generates a county into `out` and returns a one-paragraph summary.
/// What [`write_generated_full`] wrote: the summary line, the generated county (with its
/// keys) and every sheet signed.
pub struct Written {
    pub summary: String,
    pub generated: synth::Generated,
    pub signed: Vec<tally_proto::SignedSheet>,
}

pub fn write_generated(params: &GenParams, out: &Path) -> Result<String> {
    Ok(write_generated_full(params, out)?.summary)
}

pub fn write_generated_full(params: &GenParams, out: &Path) -> Result<Written> {
    if out.exists()
        && std::fs::read_dir(out)
            .with_context(|| format!("cannot list {}", out.display()))?
            .next()
            .is_some()
    {
        bail!(
            "{} is not empty; give a new folder to generate into",
            out.display()
        );
    }
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let generated = synth::generate(params)?;
    let files = synth::files(&generated);
    let write = |name: &str, contents: &[u8]| -> Result<()> {
        let path = out.join(name);
        std::fs::write(&path, contents).with_context(|| format!("cannot write {}", path.display()))
    };
    write("election.toml", files.definition_toml.as_bytes())?;
    write("townships.csv", files.townships_csv.as_bytes())?;
    write("contests.csv", files.contests_csv.as_bytes())?;
    write("candidates.csv", files.candidates_csv.as_bytes())?;
    write("units.csv", files.units_csv.as_bytes())?;
    write("unit-keys.csv", files.unit_keys_csv.as_bytes())?;
    write("township-keys.csv", files.township_keys_csv.as_bytes())?;
    let signed = synth::sign_all(&generated);
    write("sheets.sheets", &tally_proto::write_bundle(&signed))?;
    let mut notes = String::new();
    for s in &generated.scenarios {
        notes.push_str("- ");
        notes.push_str(s);
        notes.push('\n');
    }
    write(
        "SCENARIOS.md",
        format!("# Planted cases\n\n{notes}").as_bytes(),
    )?;
    let seats: u64 = generated.contests.iter().map(|c| u64::from(c.seats)).sum();
    let voters: u64 = generated.units.iter().map(|u| u.registered_voters).sum();
    let summary = format!(
        "generated {} in {}: {} townships, {} contests, {} seats, {} units, {} registered voters, {} signed sheets",
        params.county_name,
        out.display(),
        generated.townships.len(),
        generated.contests.len(),
        seats,
        generated.units.len(),
        voters,
        signed.len()
    );
    Ok(Written {
        summary,
        generated,
        signed,
    })
}
