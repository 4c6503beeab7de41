//! Sheets that travel offline, from a polling place to its township on a file.
//!
//! A minimal version: `.sheets` bundles only. The village work replaces it with one that also
//! reads QR payload text and PNG images of QR codes.

use anyhow::{Context, Result};
use std::path::Path;

/// Reads the signed sheets in `path` (a `.sheets` bundle), unverified.
pub fn read_offline(path: &Path) -> Result<Vec<tally_proto::SignedSheet>> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    tally_proto::read_bundle(&bytes)
        .with_context(|| format!("{} is not a readable sheet bundle", path.display()))
}
