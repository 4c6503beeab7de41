//! The definition as loaded, in one canonical encoding: what every replica of a county, every
//! township and `tally verify` compare, so they agree on the election they count.
//!
//! The encoding is of what was parsed, not of the files: formatting, comments, whether a part
//! is written in TOML or a CSV file, and rule options written out at their default value all
//! give the same bytes. It is JSON (RFC 8259) with
//!
//! - object keys sorted by their UTF-8 bytes, no whitespace, strings with only `"` and `\`
//!   and the control characters escaped (serde_json's compact form), integers in decimal;
//! - every field of the loaded definition, defaults filled in: `election` (id, name, mode),
//!   `rules`, `county`, `townships`, `contests` (with their candidates) and `units`, each list
//!   in definition order (the order reports print); keys as 64 hex digits with their key ids
//!   as 32; an absent optional value is left out.
//!
//! The digest is `SHA-256("tally.v2.definition\0" || encoding)`, shown as 64 hex digits.

use crate::Error;
use crate::definition::{Definition, DefinitionProblem, load};
use serde::Serialize;
use serde_json::Value;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fmt;

/// The domain of the definition digest: 20 ASCII bytes and a zero byte.
pub const DEFINITION_DOMAIN: &[u8] = b"tally.v2.definition\0";

/// The digest of a definition's canonical encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DefinitionDigest(pub [u8; 32]);

impl DefinitionDigest {
    /// From 64 hex digits, as printed.
    pub fn from_hex(text: &str) -> Result<Self, String> {
        let bytes = hex::decode(text.trim())
            .map_err(|e| format!("{text:?} is not hex ({e}); give the 64 hex digits printed"))?;
        let bytes: [u8; 32] = bytes.try_into().map_err(|b: Vec<u8>| {
            format!(
                "{text:?} is {} bytes; a digest is 32 (64 hex digits)",
                b.len()
            )
        })?;
        Ok(DefinitionDigest(bytes))
    }

    /// The first 12 hex digits, for narrow displays; the full digest is what anyone compares.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..6])
    }
}

impl fmt::Display for DefinitionDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl Serialize for DefinitionDigest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// The canonical encoding (module docs).
pub fn encode(definition: &Definition) -> Vec<u8> {
    // serde_json's compact form in declaration order, then each object's keys sorted one
    // object at a time: the bytes of a `Value` (whose objects are ordered maps) written out,
    // without a tree of the whole definition, which for a county of 12,000 polling units is
    // some 16 MB of small allocations that the allocator keeps from the process after.
    let text = serde_json::to_string(definition).expect("a definition always encodes");
    let mut encoding = Vec::with_capacity(text.len());
    write_sorted(&mut encoding, &text);
    encoding
}

/// Writes `json` (serde_json's compact form) to `out` with the keys of every object sorted.
fn write_sorted(out: &mut Vec<u8>, json: &str) {
    const PARSES: &str = "serde_json's own output parses";
    match json.as_bytes().first() {
        Some(b'{') => {
            let object: BTreeMap<String, &RawValue> = serde_json::from_str(json).expect(PARSES);
            out.push(b'{');
            for (i, (key, value)) in object.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                serde_json::to_writer(&mut *out, &key).expect("a string always encodes");
                out.push(b':');
                write_sorted(out, value.get());
            }
            out.push(b'}');
        }
        Some(b'[') => {
            let items: Vec<&RawValue> = serde_json::from_str(json).expect(PARSES);
            out.push(b'[');
            for (i, item) in items.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_sorted(out, item.get());
            }
            out.push(b']');
        }
        _ => out.extend_from_slice(json.as_bytes()),
    }
}

/// The digest of the canonical encoding.
pub fn digest(definition: &Definition) -> DefinitionDigest {
    digest_of(&encode(definition))
}

/// The digest of bytes said to be a canonical encoding (as a founding record carries them).
pub fn digest_of(encoding: &[u8]) -> DefinitionDigest {
    let mut hasher = Sha256::new();
    hasher.update(DEFINITION_DOMAIN);
    hasher.update(encoding);
    DefinitionDigest(hasher.finalize().into())
}

/// The definition a canonical encoding describes, loaded and checked as a file would be
/// (every check of [`crate::definition::load`]), and re-encoded to the very same bytes: what
/// does not round-trip is not a canonical encoding. `what` names the bytes in messages (e.g.
/// `the founding definition`).
pub fn decode(what: &str, encoding: &[u8]) -> Result<Definition, Error> {
    let value: Value = serde_json::from_slice(encoding)
        .map_err(|e| one_problem(what, format!("is not JSON: {e}")))?;
    let definition = load_value(what, value)?;
    if encode(&definition) != encoding {
        return Err(one_problem(
            what,
            "is not in the canonical encoding (keys sorted, every field written, no whitespace); \
             encode the definition with tally_core::canonical::encode"
                .into(),
        ));
    }
    Ok(definition)
}

/// A definition changed in place (an amendment, `crate::act`), loaded again and checked as a
/// file would be, so its lookups are rebuilt and every rule of the loader holds. `what`
/// names it in messages.
pub fn reload(what: &str, definition: &Definition) -> Result<Definition, Error> {
    load_value(what, value(definition))
}

fn one_problem(what: &str, message: String) -> Error {
    Error::Definition(vec![DefinitionProblem {
        file: what.to_owned(),
        location: String::new(),
        field: String::new(),
        message,
    }])
}

/// The definition a JSON value of the canonical form describes, through the loader.
fn load_value(what: &str, mut value: Value) -> Result<Definition, Error> {
    // Derived fields are not part of the file format; absent values are written as nothing.
    strip(&mut value);
    let text = toml::to_string(&value)
        .map_err(|e| one_problem(what, format!("does not describe a definition: {e}")))?;
    load(what, &text, &mut |path| {
        Err(format!(
            "a canonical definition names no other file ({path})"
        ))
    })
}

/// Removes what the file format does not take: `key_id` (derived from `public_key`) and
/// nulls (absent optional values).
fn strip(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.remove("key_id");
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(strip);
        }
        Value::Array(items) => items.iter_mut().for_each(strip),
        _ => {}
    }
}

fn value(definition: &Definition) -> Value {
    serde_json::to_value(definition).expect("a definition always converts to JSON")
}

/// What differs between two definitions, for a person who has both in front of them: the
/// first differing part in the order election, rules, county, committee, townships,
/// contests, units,
/// named by id (`township T03`, `unit T01-U004`) with the field that differs and both values.
/// `None` when the two have the same encoding (and so the same digest).
///
/// `ours` is the one read here; `theirs` the one it is compared with (the founding one).
pub fn first_difference(ours: &Definition, theirs: &Definition) -> Option<String> {
    let (a, b) = (value(ours), value(theirs));
    if a == b {
        return None;
    }
    for part in [
        "election",
        "rules",
        "county",
        "committee",
        "township_committees",
    ] {
        if let Some(d) = differs(&a[part], &b[part]) {
            return Some(format!("{part}: {d}"));
        }
    }
    for (part, what) in [
        ("townships", "township"),
        ("contests", "contest"),
        ("units", "unit"),
    ] {
        if let Some(d) = list_difference(what, &a[part], &b[part]) {
            return Some(d);
        }
    }
    Some("the definitions differ".into())
}

/// The first item of a list (by position) whose id or content differs.
fn list_difference(what: &str, ours: &Value, theirs: &Value) -> Option<String> {
    let empty = Vec::new();
    let ours = ours.as_array().unwrap_or(&empty);
    let theirs = theirs.as_array().unwrap_or(&empty);
    let id = |v: &Value| v["id"].as_str().unwrap_or("?").to_owned();
    for (a, b) in ours.iter().zip(theirs) {
        if a["id"] != b["id"] {
            let (a, b) = (id(a), id(b));
            return Some(if theirs.iter().any(|t| id(t) == a) {
                format!("{what} {b} is missing here, or listed in another order")
            } else {
                format!("{what} {a} is here but not in the other definition")
            });
        }
        if let Some(d) = differs(a, b) {
            return Some(format!("{what} {}: {d}", id(a)));
        }
    }
    match ours.len().cmp(&theirs.len()) {
        std::cmp::Ordering::Greater => Some(format!(
            "{what} {} is here but not in the other definition",
            id(&ours[theirs.len()])
        )),
        std::cmp::Ordering::Less => Some(format!(
            "{what} {} is missing here",
            id(&theirs[ours.len()])
        )),
        std::cmp::Ordering::Equal => None,
    }
}

/// The first field (in key order) of two objects that differs, with both values.
fn differs(ours: &Value, theirs: &Value) -> Option<String> {
    if ours == theirs {
        return None;
    }
    if let (Value::Object(a), Value::Object(b)) = (ours, theirs) {
        let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
        keys.sort();
        keys.dedup();
        for key in keys {
            let (x, y) = (
                a.get(key).unwrap_or(&Value::Null),
                b.get(key).unwrap_or(&Value::Null),
            );
            if x != y {
                return Some(format!("{key} is {} here, {} there", show(x), show(y)));
            }
        }
    }
    Some(format!("{} here, {} there", show(ours), show(theirs)))
}

/// A value short enough for one line.
fn show(value: &Value) -> String {
    let text = match value {
        Value::Null => "absent".to_owned(),
        other => other.to_string(),
    };
    if text.chars().count() > 80 {
        let cut: String = text.chars().take(77).collect();
        format!("{cut}...")
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::definition::load;

    const TOML: &str = r#"
[election]
id = "E1"
name = "测试"

[county]
id = "C"
name = "县"
population = 1000
seats = 30

[[townships]]
id = "T01"
name = "一乡"
population = 1000
seats = 20

[[contests]]
id = "T01-C01"
name = "第一选区"
level = "township"
township = "T01"
seats = 1
registered_voters = 1000
candidates = [{ id = "K1", name = "甲" }, { id = "K2", name = "乙" }]

[[units]]
id = "T01-U001"
name = "站"
kind = "station"
township = "T01"
contests = ["T01-C01"]
public_key = "8a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c"
"#;

    fn definition(text: &str) -> Definition {
        load("election.toml", text, &mut |p| match p {
            "contests.csv" => Ok("id,level,township,name,seats,registered_voters\nT01-C01,township,T01,第一选区,1,1000\n".into()),
            "candidates.csv" => Ok("contest,id,name\nT01-C01,K1,甲\nT01-C01,K2,乙\n".into()),
            _ => Err(format!("no file {p}")),
        })
        .unwrap()
    }

    // Goal: the digest is of what was parsed: comments, layout, a default written out and a
    // part moved to a CSV file change nothing; any change of content changes it.
    // Method: four spellings of one definition give one digest; a changed voter count, mode
    // and key each give another, and first_difference names the part and field.
    #[test]
    fn digest_is_of_content_not_of_text() {
        let base = definition(TOML);
        let d = digest(&base);
        let commented = TOML.replace("[county]", "# the county\n[county]\n");
        let default_written = TOML
            .replace("name = \"测试\"", "name = \"测试\"\nmode = \"rehearsal\"")
            .replace(
                "[county]",
                "[rules]\nmobile_box_scrutineers_min = 2\n\n[county]",
            );
        let start = TOML.find("[[contests]]").unwrap();
        let end = TOML.find("[[units]]").unwrap();
        let in_csv = format!(
            "contests_csv = \"contests.csv\"\ncandidates_csv = \"candidates.csv\"\n{}{}",
            &TOML[..start],
            &TOML[end..]
        );
        for text in [commented, default_written, in_csv] {
            assert_eq!(digest(&definition(&text)), d, "{text}");
        }

        let voters =
            definition(&TOML.replace("registered_voters = 1000", "registered_voters = 999"));
        assert_ne!(digest(&voters), d);
        assert_eq!(
            first_difference(&voters, &base).unwrap(),
            "contest T01-C01: registered_voters is 999 here, 1000 there"
        );
        // An official election names its committee; the mode differs first.
        let committee = format!(
            "name = \"测试\"\nmode = \"official\"\n\n[committee]\nthreshold = 1\nofficials = [{{ id = \"O1\", name = \"主任\", public_key = \"{}\" }}]\n",
            "d7".repeat(32)
        );
        let official = definition(&TOML.replace("name = \"测试\"", &committee));
        assert_ne!(digest(&official), d);
        assert_eq!(
            first_difference(&official, &base).unwrap(),
            "election: mode is \"official\" here, \"rehearsal\" there"
        );
        assert_eq!(first_difference(&base, &base), None);
    }

    // Goal: a canonical encoding decodes to the definition it came from; bytes that are not
    // one (other JSON, a reordered key, an invalid definition) are refused with a message.
    // Method: round-trip the test definition and the sample-like CSV spelling; then feed
    // JSON with a key out of order, a unit with no contest, and garbage.
    #[test]
    fn decode_round_trips_and_refuses_what_is_not_canonical() {
        let base = definition(TOML);
        let bytes = encode(&base);
        let back = decode("the founding definition", &bytes).unwrap();
        assert_eq!(encode(&back), bytes);
        assert_eq!(digest(&back), digest(&base));
        assert_eq!(
            back.unit_by_key(&base.units[0].key_id).unwrap().id,
            base.units[0].id
        );

        let text = String::from_utf8(bytes.clone()).unwrap();
        let spaced = text.replacen(r#""contests":"#, r#""contests": "#, 1);
        let err = decode("the founding definition", spaced.as_bytes()).unwrap_err();
        assert!(
            err.to_string().contains("not in the canonical encoding"),
            "{err}"
        );
        let no_contest = text.replace(r#""contests":["T01-C01"]"#, r#""contests":[]"#);
        let err = decode("the founding definition", no_contest.as_bytes()).unwrap_err();
        assert!(
            err.to_string().contains("the founding definition, line"),
            "{err}"
        );
        assert!(err.to_string().contains("lists no contests"), "{err}");
        let err = decode("the founding definition", b"\x00garbage").unwrap_err();
        assert!(err.to_string().contains("is not JSON"), "{err}");
    }

    // Goal: the encoding is the documented one: sorted keys, no whitespace, the domain-
    // separated SHA-256.
    // Method: check the encoding's first bytes and recompute the digest by hand.
    #[test]
    fn encoding_is_sorted_compact_json() {
        let base = definition(TOML);
        let bytes = encode(&base);
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(
            text.starts_with(r#"{"contests":[{"candidates":[{"id":"K1","name":"甲"}"#),
            "{text}"
        );
        assert!(!text.contains(": ") && !text.contains('\n'));
        // The keys are sorted as a `Value`'s ordered maps sort them, written as it writes.
        assert_eq!(bytes, serde_json::to_vec(&value(&base)).unwrap());
        let mut hasher = Sha256::new();
        hasher.update(b"tally.v2.definition\x00");
        hasher.update(&bytes);
        assert_eq!(digest(&base).0, <[u8; 32]>::from(hasher.finalize()));
        assert_eq!(
            DefinitionDigest::from_hex(&digest(&base).to_string()).unwrap(),
            digest(&base)
        );
    }
}
