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
//! lib.rs    load_definition, read_secret_key, write_secret, sheet_bundle_paths, read_bundles,
//!           write_generated / write_generated_full
//! error.rs  Error, the crate's one error type
//! ```

pub mod error;

use ed25519_dalek::SigningKey;
pub use error::{Error, Result};
use std::path::{Path, PathBuf};
use tally_core::definition::{self, Definition};
use tally_synth::{self as synth, GenParams};

/// Loads a definition and the CSV files it names, relative to its own folder.
pub fn load_definition(path: &Path) -> Result<Definition> {
    let text = std::fs::read_to_string(path).map_err(Error::io(format!(
        "cannot read the election definition {}",
        path.display()
    )))?;
    let folder = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut read_sibling = |relative: &str| -> Result<String, String> {
        let sibling = folder.join(relative);
        std::fs::read_to_string(&sibling).map_err(|e| format!("{} ({e})", sibling.display()))
    };
    definition::load(&path.display().to_string(), &text, &mut read_sibling)
        .map_err(Error::Definition)
}

/// Reads a secret key file: 64 hex digits (the 32-byte Ed25519 seed), as `tally keygen` writes.
pub fn read_secret_key(path: &Path) -> Result<SigningKey> {
    let text = std::fs::read_to_string(path).map_err(Error::io(format!(
        "cannot read the key file {}",
        path.display()
    )))?;
    let hex_text = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .unwrap_or("");
    let bytes = hex::decode(hex_text).map_err(|_| Error::KeyNotHex {
        path: path.to_path_buf(),
    })?;
    let seed: [u8; 32] = bytes.as_slice().try_into().map_err(|_| Error::KeyLength {
        path: path.to_path_buf(),
        bytes: bytes.len(),
    })?;
    Ok(SigningKey::from_bytes(&seed))
}

/// The definition with amendment files applied in order (`tally amend` writes them), for the
/// tools that work offline beside the county (a device given a new key, `tally sheet sign`,
/// `tally submit`): each must carry k valid signatures of the committee and apply to the
/// definition as amended so far. The county's record stays the authority; these files only
/// let a tool know what the county was told.
pub fn load_amended(path: &Path, amendments: &[PathBuf]) -> Result<Definition> {
    apply_amendments(load_definition(path)?, amendments)
}

/// [`load_amended`] of a definition already loaded.
pub fn apply_amendments(mut definition: Definition, amendments: &[PathBuf]) -> Result<Definition> {
    for file in amendments {
        let problem = |message: String| Error::Amendment {
            path: file.clone(),
            message,
        };
        let text = std::fs::read_to_string(file).map_err(Error::io(format!(
            "cannot read the amendment file {}",
            file.display()
        )))?;
        let act = tally_core::act::ActFile::parse(&file.display().to_string(), &text)
            .and_then(|f| f.signed())
            .map_err(problem)?;
        let (body, _) =
            tally_core::act::check(&definition, &act).map_err(|e| problem(e.to_string()))?;
        let tally_core::act::ActBody::Amendment(amendment) = body else {
            return Err(problem(format!(
                "is {}, not an amendment of the definition",
                body.label()
            )));
        };
        definition = tally_core::act::amend(&definition, &amendment, 0, &|_| false)
            .map_err(|e| problem(e.to_string()))?;
    }
    Ok(definition)
}

/// Replaces a file's contents whole: written beside it, flushed to disk, then renamed over
/// it, so a reader (or a crash) sees the old contents or the new, never a mix.
pub fn write_atomic(path: &Path, contents: &[u8]) -> Result<()> {
    use std::io::Write;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temporary = path.with_file_name(format!(".{name}.new"));
    let what = || format!("cannot write {}", path.display());
    let mut file = std::fs::File::create(&temporary).map_err(Error::io(what()))?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(Error::io(what()))?;
    std::fs::rename(&temporary, path).map_err(Error::io(what()))
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
            Error::SecretExists {
                path: path.to_path_buf(),
            }
        } else {
            Error::io(format!("cannot create {}", path.display()))(e)
        }
    })?;
    file.write_all(contents.as_bytes())
        .map_err(Error::io(format!("cannot write {}", path.display())))
}

/// Expands the `--sheets` arguments: files as given, folders to every `*.sheets` file in them
/// (sorted, so the order is the same on every machine).
pub fn sheet_bundle_paths(args: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for arg in args {
        if arg.is_dir() {
            let (mut found, skipped): (Vec<PathBuf>, Vec<PathBuf>) = std::fs::read_dir(arg)
                .map_err(Error::io(format!("cannot list {}", arg.display())))?
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
                return Err(Error::NoBundles { path: arg.clone() });
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
            let bytes = std::fs::read(&path)
                .map_err(Error::io(format!("cannot read {}", path.display())))?;
            let sheets = tally_proto::read_bundle(&bytes).map_err(|cause| {
                // An unsigned clerk's file given where a signed bundle belongs is the likely
                // mistake; say so.
                let looks_like_sheet_file = std::str::from_utf8(&bytes)
                    .is_ok_and(|t| t.contains("unit =") || t.contains("unit="));
                let path = path.clone();
                let cause = Box::new(cause);
                if looks_like_sheet_file {
                    Error::UnsignedSheetFile { path, cause }
                } else {
                    Error::NotABundle { path, cause }
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
            .map_err(Error::io(format!("cannot list {}", out.display())))?
            .next()
            .is_some()
    {
        return Err(Error::NotEmpty {
            path: out.to_path_buf(),
        });
    }
    std::fs::create_dir_all(out).map_err(Error::io(format!("cannot create {}", out.display())))?;
    // The generator's error is anyhow's; its whole chain is the message.
    let generated = synth::generate(params).map_err(|e| Error::Generate(format!("{e:#}")))?;
    let files = synth::files(&generated);
    let write = |name: &str, contents: &[u8]| -> Result<()> {
        let path = out.join(name);
        std::fs::write(&path, contents)
            .map_err(Error::io(format!("cannot write {}", path.display())))
    };
    write("election.toml", files.definition_toml.as_bytes())?;
    write("townships.csv", files.townships_csv.as_bytes())?;
    write("contests.csv", files.contests_csv.as_bytes())?;
    write("candidates.csv", files.candidates_csv.as_bytes())?;
    write("units.csv", files.units_csv.as_bytes())?;
    write("unit-keys.csv", files.unit_keys_csv.as_bytes())?;
    write("township-keys.csv", files.township_keys_csv.as_bytes())?;
    write("official-keys.csv", files.official_keys_csv.as_bytes())?;
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
