//! Newtypes for identifiers, so a unit id is never passed where a contest id is meant.
//!
//! Ids are short ASCII strings chosen by the election office (`T01`, `T01-C03`, `T01-U017`).
//! Names, which are Chinese, live beside them and never serve as keys.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The longest id accepted anywhere, in bytes. Ids travel in every sheet; a bound keeps a
/// forged sheet from carrying megabytes in an id field.
pub const ID_LEN_MAX: usize = 64;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub String);

        impl $name {
            pub fn new(id: impl Into<String>) -> Self {
                Self(id.into())
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self(s.to_owned())
            }
        }
    };
}

id_type!(
    /// A township (乡/镇), which has its own congress and one aggregator.
    TownshipId
);
id_type!(
    /// A contest: one constituency (选区) at one level.
    ContestId
);
id_type!(
    /// A polling unit: a station, an election assembly or a mobile ballot box.
    UnitId
);
id_type!(
    /// A candidate on the ballot of one contest.
    CandidateId
);

/// Checks that an id is 1 to [`ID_LEN_MAX`] bytes of ASCII letters, digits, `-`, `_` or `.`.
/// Returns what is wrong, for the caller to put in an error that names the field.
pub fn check_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("is empty".into());
    }
    if id.len() > ID_LEN_MAX {
        return Err(format!(
            "is {} bytes long, more than {ID_LEN_MAX}",
            id.len()
        ));
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(format!(
            "contains {c:?}; ids use ASCII letters, digits, '-', '_' and '.' (names may be Chinese)"
        ));
    }
    Ok(())
}

/// The id of a signing key: the first 16 bytes of SHA-256 over the 32-byte Ed25519 public
/// key, written as 32 lowercase hex digits. Derived from the key, so it cannot disagree with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyId(pub [u8; 16]);

impl KeyId {
    pub fn of(public_key: &ed25519_dalek::VerifyingKey) -> Self {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(public_key.as_bytes());
        let mut id = [0u8; 16];
        id.copy_from_slice(&digest[..16]);
        KeyId(id)
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl Serialize for KeyId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}
