//! raft-rs's own log, sent to `tracing`: raft-rs logs through `slog` (elections, term
//! changes, configuration changes, snapshots, refused messages), and the replica logs through
//! `tracing`, so [`TracingDrain`] forwards each slog record as a tracing event with target
//! `raft` at the same level. Operators filter it like any other target
//! (`TALLY_LOG=info,raft=warn`).
//!
//! A small drain of our own rather than a bridge crate: it is a level match and a key=value
//! writer, and slog is already in the build through raft-rs (no new crate, no version to keep
//! in step with raft-rs's slog).

use std::fmt::Write as _;

/// A slog drain that turns each record into a tracing event with target `raft`: the message,
/// then the record's key=value pairs and the logger's (raft-rs adds `raft_id`).
pub struct TracingDrain;

/// Writes slog key=value pairs as `key=value`, separated by spaces.
struct Pairs(String);

impl slog::Serializer for Pairs {
    fn emit_arguments(&mut self, key: slog::Key, value: &std::fmt::Arguments<'_>) -> slog::Result {
        if !self.0.is_empty() {
            self.0.push(' ');
        }
        let _ = write!(self.0, "{key}={value}");
        Ok(())
    }
}

fn pairs(record: &slog::Record<'_>, values: &slog::OwnedKVList) -> String {
    use slog::KV as _;
    let mut pairs = Pairs(String::new());
    // Writing into a String cannot fail; a pair that cannot be written is left out.
    let _ = record.kv().serialize(record, &mut pairs);
    let _ = values.serialize(record, &mut pairs);
    pairs.0
}

/// One tracing event at a level known when compiled (tracing's macros need a constant level),
/// formatted only when that level is enabled for target `raft`.
macro_rules! forward {
    ($level:expr, $record:expr, $values:expr) => {
        if tracing::enabled!(target: "raft", $level) {
            let pairs = pairs($record, $values);
            tracing::event!(target: "raft", $level, "{}; {pairs}", $record.msg());
        }
    };
}

impl slog::Drain for TracingDrain {
    type Ok = ();
    type Err = slog::Never;

    fn log(
        &self,
        record: &slog::Record<'_>,
        values: &slog::OwnedKVList,
    ) -> Result<Self::Ok, Self::Err> {
        use tracing::Level;
        match record.level() {
            slog::Level::Critical | slog::Level::Error => forward!(Level::ERROR, record, values),
            slog::Level::Warning => forward!(Level::WARN, record, values),
            slog::Level::Info => forward!(Level::INFO, record, values),
            slog::Level::Debug => forward!(Level::DEBUG, record, values),
            slog::Level::Trace => forward!(Level::TRACE, record, values),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tracing::field::{Field, Visit};

    /// Collects the events it sees: level, target and message.
    #[derive(Clone, Default)]
    struct Seen(Arc<Mutex<Vec<(tracing::Level, String, String)>>>);

    struct Message(String);

    impl Visit for Message {
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            if field.name() == "message" {
                self.0 = format!("{value:?}");
            }
        }
    }

    impl tracing::Subscriber for Seen {
        fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
            tracing::span::Id::from_u64(1)
        }
        fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
        fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
        fn event(&self, event: &tracing::Event<'_>) {
            let mut message = Message(String::new());
            event.record(&mut message);
            self.0.lock().unwrap().push((
                *event.metadata().level(),
                event.metadata().target().to_owned(),
                message.0,
            ));
        }
        fn enter(&self, _: &tracing::span::Id) {}
        fn exit(&self, _: &tracing::span::Id) {}
    }

    // Goal: what raft-rs logs reaches tracing, at its level, under target `raft`, with its
    // key=value pairs (an operator sees elections in the replica's log).
    // Method: a slog logger over the drain with raft-rs's `raft_id` pair logs a warning and
    // an info record with a pair of its own, under a subscriber that collects events.
    #[test]
    fn slog_records_reach_tracing() {
        let seen = Seen::default();
        tracing::subscriber::with_default(seen.clone(), || {
            let logger = slog::Logger::root(TracingDrain, slog::o!("raft_id" => 3));
            slog::warn!(logger, "became leader"; "term" => 7);
            slog::info!(logger, "starting a new election");
        });
        let seen = seen.0.lock().unwrap();
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert_eq!(seen[0].0, tracing::Level::WARN);
        assert_eq!(seen[0].1, "raft");
        assert_eq!(seen[0].2, "became leader; term=7 raft_id=3");
        assert_eq!(seen[1].0, tracing::Level::INFO);
        assert_eq!(seen[1].2, "starting a new election; raft_id=3");
    }

    // Goal: the real raft-rs logs through the drain: a single voter that campaigns says so.
    // Method: a RawNode over raft-rs's MemStorage with one voter, given the drain's logger;
    // campaign; an INFO event from target `raft` names the new term.
    #[test]
    fn raft_rs_logs_reach_tracing() {
        let seen = Seen::default();
        tracing::subscriber::with_default(seen.clone(), || {
            let logger = slog::Logger::root(TracingDrain, slog::o!());
            let storage = raft::storage::MemStorage::new_with_conf_state((vec![1], vec![]));
            let config = raft::Config {
                id: 1,
                ..Default::default()
            };
            let mut node = raft::RawNode::new(&config, storage, &logger).expect("a valid config");
            node.campaign().expect("a single voter campaigns");
        });
        let seen = seen.0.lock().unwrap();
        assert!(
            seen.iter()
                .any(|(level, target, message)| *level == tracing::Level::INFO
                    && target == "raft"
                    && message.contains("became leader")
                    && message.contains("raft_id=1")),
            "{seen:?}"
        );
    }
}
