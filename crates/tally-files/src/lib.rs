//! Reading and writing the files the command line works with: definitions, sheet files,
//! signed-sheet bundles and keys. Every error names the file and says what to do.

use anyhow::{Context, Result, anyhow, bail};
use ed25519_dalek::SigningKey;
use std::path::{Path, PathBuf};
use tally_core::definition::{self, Definition};

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
