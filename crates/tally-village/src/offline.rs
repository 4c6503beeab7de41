//! Signed sheets that travel without the network: a `.sheets` bundle on a USB stick, a text
//! file of QR payloads, or a picture of a QR code carried from the polling place.
//!
//! A QR payload is `TALLY1:` followed by the base64url (no padding) of the encoded envelope
//! ([`tally_proto::encode_signed`]): the sheet's exact signed bytes, its key id and signature,
//! so a township verifies a QR exactly as it verifies a sheet that came over the network.
//! `tally village qr` prints it; `tally township import` reads it back with [`read_offline`].

use crate::error::{Error, Result};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use std::path::Path;
use tally_proto::SignedSheet;

/// What every payload starts with; the 1 is the payload format's version.
pub const PAYLOAD_PREFIX: &str = "TALLY1:";

/// The largest file [`read_offline`] reads: far above a township's bundle, so a wrong path
/// (a disk image, a video) is refused instead of read into memory.
pub const OFFLINE_FILE_BYTES_MAX: u64 = 256 * 1024 * 1024;

/// The most payload lines one text file may hold.
pub const PAYLOAD_LINES_MAX: usize = 100_000;

/// The largest picture decoded, in pixels (a 12-megapixel phone photo is well inside).
pub const PNG_PIXELS_MAX: u64 = 64 * 1024 * 1024;

/// Pixels per QR module in the PNG: large enough for a phone or a scanner at arm's length.
pub const PNG_MODULE_PX: u32 = 8;

/// The blank margin around a QR code, in modules: the 4 the QR standard asks for.
pub const QUIET_ZONE_MODULES: usize = 4;

/// The error correction of the codes made here. M (15% of the code may be lost) keeps a
/// smudged print or a phone photo readable while the code of a sheet with a few write-ins
/// stays small enough for a terminal.
const EC_LEVEL: qrcode::EcLevel = qrcode::EcLevel::M;

/// The QR payload of a signed sheet: `TALLY1:` + base64url(encode_signed(sheet)).
pub fn qr_payload(signed: &SignedSheet) -> String {
    let mut payload = String::from(PAYLOAD_PREFIX);
    URL_SAFE_NO_PAD.encode_string(tally_proto::encode_signed(signed), &mut payload);
    payload
}

/// Reads a QR payload back into the signed sheet. Spaces and line breaks around it, and the
/// padding some tools add, are ignored; the signature is not checked here.
pub fn parse_payload(text: &str) -> Result<SignedSheet> {
    let text = text.trim();
    let Some(encoded) = text.strip_prefix(PAYLOAD_PREFIX) else {
        let start: String = text.chars().take(12).collect();
        return Err(Error::Offline(format!(
            "not a tally QR payload: it starts with {start:?}, a payload starts with {PAYLOAD_PREFIX}"
        )));
    };
    let bytes = URL_SAFE_NO_PAD
        .decode(encoded.trim_end_matches('='))
        .map_err(|e| {
            Error::Offline(format!(
                "the payload after {PAYLOAD_PREFIX} is not base64url: {e}"
            ))
        })?;
    tally_proto::decode_signed(&bytes)
        .map_err(|e| Error::Offline(format!("the payload does not hold a signed sheet: {e}")))
}

/// The QR code of a payload.
fn qr_code(payload: &str) -> Result<qrcode::QrCode> {
    qrcode::QrCode::with_error_correction_level(payload.as_bytes(), EC_LEVEL).map_err(|e| {
        Error::Offline(format!(
            "the signed sheet does not fit in a QR code ({e}): it is {} characters as a payload; send it as a .sheets file instead",
            payload.len()
        ))
    })
}

/// The modules of a code with its quiet zone, row by row: true is dark.
fn modules_with_quiet_zone(code: &qrcode::QrCode) -> (usize, Vec<bool>) {
    let width = code.width();
    let side = width + 2 * QUIET_ZONE_MODULES;
    let colors = code.to_colors();
    let mut modules = vec![false; side * side];
    for y in 0..width {
        for x in 0..width {
            modules[(y + QUIET_ZONE_MODULES) * side + x + QUIET_ZONE_MODULES] =
                colors[y * width + x] == qrcode::Color::Dark;
        }
    }
    (side, modules)
}

/// The QR code drawn with Unicode half blocks, two modules per character cell, so it is
/// square and small enough for a terminal. With `force_colours` each line is drawn black on
/// white with ANSI colours, so it scans on a terminal whatever its theme; without, dark
/// modules are the block characters (right for a white page or a light terminal).
pub fn terminal_qr(payload: &str, force_colours: bool) -> Result<String> {
    let (side, modules) = modules_with_quiet_zone(&qr_code(payload)?);
    let dark = |x: usize, y: usize| y < side && modules[y * side + x];
    let mut out = String::new();
    for y in (0..side).step_by(2) {
        if force_colours {
            out.push_str("\x1b[30;107m");
        }
        for x in 0..side {
            out.push(match (dark(x, y), dark(x, y + 1)) {
                (false, false) => ' ',
                (true, false) => '\u{2580}',
                (false, true) => '\u{2584}',
                (true, true) => '\u{2588}',
            });
        }
        if force_colours {
            out.push_str("\x1b[0m");
        }
        out.push('\n');
    }
    Ok(out)
}

/// The QR code as a greyscale PNG, [`PNG_MODULE_PX`] pixels per module.
pub fn qr_png(payload: &str) -> Result<Vec<u8>> {
    let (side, modules) = modules_with_quiet_zone(&qr_code(payload)?);
    let module_px = PNG_MODULE_PX as usize;
    let side_px = u32::try_from(side * module_px).map_err(Error::QrTooLarge)?;
    let image = image::GrayImage::from_fn(side_px, side_px, |x, y| {
        let (x, y) = (x as usize / module_px, y as usize / module_px);
        image::Luma([if modules[y * side + x] { 0 } else { 255 }])
    });
    let mut png = Vec::new();
    image
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .map_err(|cause| Error::Image {
            what: "cannot encode the PNG".into(),
            cause,
        })?;
    Ok(png)
}

/// Reads signed sheets carried offline from `path`: a `.sheets` bundle, a text file of
/// `TALLY1:` payloads (one per line; blank lines and lines starting with `#` are skipped), or
/// a PNG picture of one or more QR codes. The kind is told from the contents, not the name.
/// Errors name the file (and the line of a payload). The sheets are not verified here.
pub fn read_offline(path: &Path) -> Result<Vec<SignedSheet>> {
    let len = std::fs::metadata(path)
        .map_err(Error::io(format!("cannot read {}", path.display())))?
        .len();
    if len > OFFLINE_FILE_BYTES_MAX {
        return Err(Error::Offline(format!(
            "{} is {len} bytes, more than {OFFLINE_FILE_BYTES_MAX}; is this the right file?",
            path.display()
        )));
    }
    let bytes =
        std::fs::read(path).map_err(Error::io(format!("cannot read {}", path.display())))?;
    read_offline_bytes(path, &bytes)
}

/// [`read_offline`] on the bytes of the file at `path` (named in errors), already read. Public
/// for the fuzz target (`fuzz/`).
pub fn read_offline_bytes(path: &Path, bytes: &[u8]) -> Result<Vec<SignedSheet>> {
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        return read_png(path, bytes);
    }
    // A payload file's first line that is not blank or a comment is a payload.
    if let Ok(text) = std::str::from_utf8(bytes)
        && text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#'))
            .is_some_and(|l| l.starts_with(PAYLOAD_PREFIX))
    {
        return read_payload_lines(path, text);
    }
    tally_proto::read_bundle(bytes).map_err(|e| {
        Error::Offline(format!(
            "{} is neither a .sheets bundle ({e}), nor a text file of {PAYLOAD_PREFIX} payloads, nor a PNG of a QR code",
            path.display()
        ))
    })
}

fn read_payload_lines(path: &Path, text: &str) -> Result<Vec<SignedSheet>> {
    let mut sheets = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if sheets.len() == PAYLOAD_LINES_MAX {
            return Err(Error::Offline(format!(
                "{} holds more than {PAYLOAD_LINES_MAX} payloads; split it",
                path.display()
            )));
        }
        sheets.push(
            parse_payload(line)
                .map_err(|e| e.context(format!("{}, line {}", path.display(), i + 1)))?,
        );
    }
    Ok(sheets)
}

fn read_png(path: &Path, bytes: &[u8]) -> Result<Vec<SignedSheet>> {
    let mut reader =
        image::ImageReader::with_format(std::io::Cursor::new(bytes), image::ImageFormat::Png);
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(PNG_PIXELS_MAX * 4);
    reader.limits(limits);
    let picture = reader
        .decode()
        .map_err(|cause| Error::Image {
            what: format!("{} is not a readable PNG picture", path.display()),
            cause,
        })?
        .into_luma8();
    let (width, height) = (picture.width() as usize, picture.height() as usize);
    let mut prepared = rqrr::PreparedImage::prepare_from_greyscale(width, height, |x, y| {
        picture.get_pixel(x as u32, y as u32).0[0]
    });
    let grids = prepared.detect_grids();
    if grids.is_empty() {
        return Err(Error::Offline(format!(
            "{}: no QR code found in the picture; take it again straight on, in focus, with the whole code and its white margin in view",
            path.display()
        )));
    }
    let mut sheets = Vec::new();
    for (i, grid) in grids.iter().enumerate() {
        let which = if grids.len() == 1 {
            String::from("the QR code")
        } else {
            format!("QR code {} of {}", i + 1, grids.len())
        };
        let (_, content) = grid.decode().map_err(|e| {
            Error::Offline(format!(
                "{}: {which} cannot be read ({e}); take the picture again, or type in the payload printed under it",
                path.display()
            ))
        })?;
        sheets.push(
            parse_payload(&content)
                .map_err(|e| e.context(format!("{}: {which}", path.display())))?,
        );
    }
    Ok(sheets)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small_town_sheets() -> Vec<SignedSheet> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/small-town");
        let key = tally_files::read_secret_key(&root.join("keys/T01-U01.key")).unwrap();
        let election = tally_core::definition::Election {
            id: "XH-2026".into(),
            name: "小河县".into(),
            mode: tally_core::definition::Mode::Rehearsal,
        };
        ["T01-U01-XH-C01.toml", "T01-U01-T01-X01.toml"]
            .iter()
            .map(|name| {
                let path = root.join("sheets").join(name);
                let text = std::fs::read_to_string(&path).unwrap();
                let sheet = tally_core::sheet_file::parse(name, &text).unwrap();
                tally_proto::sign(&sheet, &key, &election)
            })
            .collect()
    }

    // Goal: a payload reads back to the very same envelope, with or without padding and
    // spaces, and something else is refused with a message that says what a payload is.
    // Method: encode the sample's sheets, parse them back, then spoil the prefix and the body.
    #[test]
    fn payload_round_trip() {
        for signed in small_town_sheets() {
            let payload = qr_payload(&signed);
            assert!(payload.starts_with("TALLY1:"));
            assert!(!payload.contains('='));
            assert_eq!(parse_payload(&payload).unwrap(), signed);
            assert_eq!(parse_payload(&format!("  {payload}==\n")).unwrap(), signed);
        }
        let err = parse_payload("TALLY2:abc").unwrap_err().to_string();
        assert!(err.contains("starts with \"TALLY2:abc\""), "{err}");
        let err = parse_payload("TALLY1:@@@").unwrap_err().to_string();
        assert!(err.contains("not base64url"), "{err}");
        let err = parse_payload("TALLY1:AAAA").unwrap_err().to_string();
        assert!(err.contains("does not hold a signed sheet"), "{err}");
    }

    // Goal: a sheet printed as a QR PNG reads back, by read_offline, to the same bytes; and a
    // text file of payloads and a bundle read back too.
    // Method: write each form into a temporary folder and read it with read_offline.
    #[test]
    fn png_text_and_bundle_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let sheets = small_town_sheets();
        for (i, signed) in sheets.iter().enumerate() {
            let png = dir.path().join(format!("sheet-{i}.png"));
            std::fs::write(&png, qr_png(&qr_payload(signed)).unwrap()).unwrap();
            let read = read_offline(&png).unwrap();
            assert_eq!(read.len(), 1);
            assert_eq!(
                tally_proto::encode_signed(&read[0]),
                tally_proto::encode_signed(signed)
            );
        }
        let text = dir.path().join("payloads.txt");
        let lines: Vec<String> = sheets.iter().map(qr_payload).collect();
        std::fs::write(
            &text,
            format!("# carried from T01-U01\n\n{}\n", lines.join("\n")),
        )
        .unwrap();
        assert_eq!(read_offline(&text).unwrap(), sheets);
        let bundle = dir.path().join("b.sheets");
        std::fs::write(&bundle, tally_proto::write_bundle(&sheets)).unwrap();
        assert_eq!(read_offline(&bundle).unwrap(), sheets);

        std::fs::write(&text, format!("{}\nTALLY1:xyz\n", lines[0])).unwrap();
        let err = format!("{:#}", read_offline(&text).unwrap_err());
        assert!(err.contains("payloads.txt, line 2"), "{err}");
        let blank = dir.path().join("blank.png");
        std::fs::write(&blank, {
            let mut png = Vec::new();
            image::GrayImage::from_pixel(64, 64, image::Luma([255]))
                .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
                .unwrap();
            png
        })
        .unwrap();
        let err = read_offline(&blank).unwrap_err().to_string();
        assert!(err.contains("no QR code found"), "{err}");
    }

    // Goal: the terminal drawing is square (two modules per line) and holds only the four
    // half-block characters, the spaces and line breaks.
    // Method: draw the sample's county sheet; count lines and columns.
    #[test]
    fn terminal_drawing_is_half_blocks() {
        let payload = qr_payload(&small_town_sheets()[0]);
        let code = qr_code(&payload).unwrap();
        let drawing = terminal_qr(&payload, false).unwrap();
        let side = code.width() + 2 * QUIET_ZONE_MODULES;
        let lines: Vec<&str> = drawing.lines().collect();
        assert_eq!(lines.len(), side.div_ceil(2));
        assert!(lines.iter().all(|l| l.chars().count() == side));
        assert!(
            drawing
                .chars()
                .all(|c| matches!(c, ' ' | '\n' | '\u{2580}' | '\u{2584}' | '\u{2588}'))
        );
        eprintln!(
            "payload {} characters, QR version {:?}, {side} modules with the quiet zone",
            payload.len(),
            code.version()
        );
    }
}
