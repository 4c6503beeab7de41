//! `LogIndex`, `Term` and `ReplicaId`: the raft numbers that cross module boundaries, each a
//! type of its own so that an index cannot be passed where a term or a replica id is meant.
//!
//! raft-rs takes and gives bare `u64`: the conversion happens at that edge (`storage`,
//! `replica`, `node`) and at the wire (`service`, `transport`: the proto fields stay `u64`),
//! and nowhere else. Each displays and serializes as the bare number, so messages, logs and
//! JSON read as they did before the types existed (`replica 3`, `log index 42`).

use std::fmt;

use serde::{Deserialize, Serialize};

macro_rules! raft_number {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        // Debug is written out below rather than derived: see there.
        #[derive(
            Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
        )]
        #[serde(transparent)]
        pub struct $name(u64);

        impl $name {
            /// The number as raft-rs and the wire carry it.
            pub const fn new(value: u64) -> Self {
                Self(value)
            }

            /// The bare number, for raft-rs, the wire and the disk.
            pub const fn get(self) -> u64 {
                self.0
            }
        }

        impl From<u64> for $name {
            fn from(value: u64) -> Self {
                Self(value)
            }
        }

        impl From<$name> for u64 {
            fn from(value: $name) -> u64 {
                value.0
            }
        }

        // Debug as the bare number too, not `LogIndex(42)`: messages that print an
        // `Option` or a list of these with `{:?}` (`leader: Some(3)`, `voters [1, 2, 3]`)
        // read as they did when the values were bare `u64`.
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }
    };
}

raft_number!(
    /// A position in the raft log (raft-rs's `index`). Index 0 is before the first entry.
    LogIndex
);

raft_number!(
    /// A raft term (raft-rs's `term`): a leader's era.
    Term
);

raft_number!(
    /// A replica's raft id (raft-rs's node id), as `replica_id` in `county.toml`; never 0.
    ReplicaId
);

#[cfg(test)]
mod tests {
    use super::*;

    // Goal: the types read and serialize as the bare number, so messages and JSON did not change.
    // Method: format (Display and Debug) and serialize them and compare with the number's text.
    #[test]
    fn display_and_json_are_the_bare_number() {
        assert_eq!(format!("replica {}", ReplicaId::new(3)), "replica 3");
        assert_eq!(format!("log index {}", LogIndex::new(42)), "log index 42");
        assert_eq!(format!("{:>4}", Term::new(7)), "   7");
        assert_eq!(serde_json::to_string(&LogIndex::new(42)).unwrap(), "42");
        assert_eq!(
            serde_json::from_str::<ReplicaId>("3").unwrap(),
            ReplicaId::new(3)
        );
        assert_eq!(Term::from(9).get(), 9);
        assert_eq!(format!("{:?}", Some(ReplicaId::new(3))), "Some(3)");
        assert_eq!(
            format!("{:?}", [LogIndex::new(1), LogIndex::new(2)]),
            "[1, 2]"
        );
    }
}
