//! A replica's Prometheus metrics, written in the text exposition format (version 0.0.4) by
//! hand: a few counters and two histograms do not need a metrics library, and the names and
//! labels stay visible here in one place.
//!
//! Counters and histograms are updated where things happen (the driver for proposals and
//! leader changes, the storage for fsyncs, the County service for sheet outcomes); gauges are
//! read from the replica's published [`NodeStatus`] when scraped, so a scrape never waits for
//! the driver.
//!
//! | name | type | labels |
//! |---|---|---|
//! | `tally_raft_term` | gauge | |
//! | `tally_raft_role` | gauge, 1 for the current role | `role` |
//! | `tally_raft_is_leader` | gauge | |
//! | `tally_raft_leader_changes_total` | counter | |
//! | `tally_raft_reads_pending` | gauge | |
//! | `tally_results_computed_total` | counter | |
//! | `tally_raft_commit_index`, `tally_raft_applied_index` | gauge | |
//! | `tally_raft_peer_lag_entries` | gauge (leader only: it alone knows its peers' progress) | `peer` |
//! | `tally_raft_peer_reachable` | gauge | `peer` |
//! | `tally_raft_proposal_duration_seconds` | histogram | |
//! | `tally_storage_fsync_duration_seconds` | histogram | |
//! | `tally_sheets_total` | counter | `outcome`, `code` (refused only) |
//! | `tally_signature_failures_total` | counter | `kind` (`sheet`: E204, `countersignature`: E209) |
//! | `tally_chain_length` | gauge | |
//! | `tally_sheets_counted`, `tally_conflicts` | gauge | |
//! | `tally_replica_up` | gauge (0 once the driver stopped) | |

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tally_rpc::pb;

/// Upper bounds of the latency buckets, in seconds: from a fast SSD's fsync (0.5 ms) to a
/// proposal that waits out a slow majority (10 s, the write deadline).
pub const LATENCY_BUCKETS_SECONDS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The most distinct refusal codes counted separately: codes are stable strings from the
/// validation tables (a few dozen); anything past this bound is counted under `other`.
pub const REFUSAL_CODES_MAX: usize = 128;

/// A latency histogram with the fixed [`LATENCY_BUCKETS_SECONDS`]. Lock-free: observed from
/// the driver and the storage while a scrape reads it.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Observations at or below each bound (not cumulative; summed when written).
    buckets: [AtomicU64; LATENCY_BUCKETS_SECONDS.len()],
    count: AtomicU64,
    /// The sum in nanoseconds, so it is an integer that adds without a lock.
    sum_nanos: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        if let Some(i) = LATENCY_BUCKETS_SECONDS.iter().position(|b| seconds <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(
            u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    fn write(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} histogram");
        let mut cumulative = 0;
        for (bound, bucket) in LATENCY_BUCKETS_SECONDS.iter().zip(&self.buckets) {
            cumulative += bucket.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let count = self.count();
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum {sum}");
        let _ = writeln!(out, "{name}_count {count}");
    }
}

/// What the driver counts.
#[derive(Debug, Default)]
pub struct NodeMetrics {
    pub leader_changes: AtomicU64,
    /// From a proposal reaching the driver to its entry being applied here.
    pub proposal_seconds: Histogram,
    /// Linearizable reads waiting in the driver for raft to confirm them.
    pub reads_pending: AtomicU64,
    /// Results computed (each at a new applied index, however many callers asked).
    pub results_computed: AtomicU64,
}

/// What the County service counts: every sheet this replica answered as leader, by outcome.
#[derive(Debug, Default)]
pub struct SheetMetrics {
    /// (outcome, code) → count; code is empty except for refusals.
    outcomes: Mutex<BTreeMap<(&'static str, String), u64>>,
    signature_failures_sheet: AtomicU64,
    signature_failures_countersignature: AtomicU64,
}

/// The code of an invalid signature on a sheet.
pub const BAD_SIGNATURE_CODE: &str = "E204";

impl SheetMetrics {
    /// Counts the outcomes of one answered batch.
    pub fn count(&self, outcomes: &[pb::SheetOutcome]) {
        use pb::sheet_outcome::Kind;
        // A poisoned lock only means another thread panicked mid-count; the map is still a map.
        let mut map = self.outcomes.lock().unwrap_or_else(|e| e.into_inner());
        for o in outcomes {
            let outcome = match Kind::try_from(o.kind) {
                Ok(Kind::Accepted) => "accepted",
                Ok(Kind::Duplicate) => "duplicate",
                Ok(Kind::Conflict) => "conflict",
                Ok(Kind::Superseded) => "superseded",
                Ok(Kind::Refused) => "refused",
                _ => "unknown",
            };
            let code = if outcome == "refused" {
                let distinct = map.keys().filter(|(o, _)| *o == "refused").count();
                if map.contains_key(&(outcome, o.code.clone())) || distinct < REFUSAL_CODES_MAX {
                    o.code.clone()
                } else {
                    "other".to_owned()
                }
            } else {
                String::new()
            };
            if o.code == BAD_SIGNATURE_CODE {
                self.signature_failures_sheet
                    .fetch_add(1, Ordering::Relaxed);
            }
            *map.entry((outcome, code)).or_default() += 1;
        }
    }

    /// Counts a batch refused whole because its countersignature did not verify (E209).
    pub fn countersignature_failed(&self) {
        self.signature_failures_countersignature
            .fetch_add(1, Ordering::Relaxed);
    }

    /// The count of `outcome` (all codes), for tests and the dashboard.
    pub fn total(&self, outcome: &str) -> u64 {
        let map = self.outcomes.lock().unwrap_or_else(|e| e.into_inner());
        map.iter()
            .filter(|((o, _), _)| *o == outcome)
            .map(|(_, n)| n)
            .sum()
    }

    pub fn signature_failures(&self) -> u64 {
        self.signature_failures_sheet.load(Ordering::Relaxed)
            + self
                .signature_failures_countersignature
                .load(Ordering::Relaxed)
    }
}

/// The roles a replica may report, so the role gauge always lists every series (a series
/// that disappears looks like a scrape problem, one at 0 does not).
const ROLES: [&str; 8] = [
    "leader",
    "follower",
    "candidate",
    "pre-candidate",
    "learner",
    "joining",
    "removed",
    "stopped",
];

/// Writes every metric of one replica. `status` is the Status answer (with reachability),
/// `fsync` the storage's histogram.
pub fn render(
    status: &pb::StatusResponse,
    node: &NodeMetrics,
    sheets: &SheetMetrics,
    fsync: &Histogram,
) -> String {
    let mut out = String::with_capacity(8 * 1024);
    let mut gauge = |name: &str, help: &str, kind: &str, samples: &[(String, String)]| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (labels, value) in samples {
            if labels.is_empty() {
                let _ = writeln!(out, "{name} {value}");
            } else {
                let _ = writeln!(out, "{name}{{{labels}}} {value}");
            }
        }
    };
    let one = |v: u64| vec![(String::new(), v.to_string())];
    gauge(
        "tally_replica_up",
        "1 while the replica's driver runs, 0 once it stopped (see tally cluster status).",
        "gauge",
        &one(u64::from(status.running)),
    );
    gauge(
        "tally_raft_term",
        "The raft term this replica is in.",
        "gauge",
        &one(status.term),
    );
    let roles: Vec<_> = ROLES
        .iter()
        .map(|r| {
            (
                format!("role=\"{r}\""),
                u64::from(status.role == *r).to_string(),
            )
        })
        .collect();
    gauge(
        "tally_raft_role",
        "1 for the role this replica has now, 0 for the others.",
        "gauge",
        &roles,
    );
    gauge(
        "tally_raft_is_leader",
        "1 when this replica is the leader.",
        "gauge",
        &one(u64::from(status.role == "leader")),
    );
    gauge(
        "tally_raft_leader_id",
        "The leader this replica knows, 0 for none.",
        "gauge",
        &one(status.leader_id),
    );
    gauge(
        "tally_raft_leader_changes_total",
        "How often this replica saw a new leader since it started.",
        "counter",
        &one(node.leader_changes.load(Ordering::Relaxed)),
    );
    gauge(
        "tally_raft_reads_pending",
        "Linearizable reads waiting for the leader to confirm them (each is answered or given up within 3 s).",
        "gauge",
        &one(node.reads_pending.load(Ordering::Relaxed)),
    );
    gauge(
        "tally_results_computed_total",
        "Results computed by this replica, at most once per applied index however many callers asked.",
        "counter",
        &one(node.results_computed.load(Ordering::Relaxed)),
    );
    gauge(
        "tally_raft_commit_index",
        "The highest log index known committed (on a majority).",
        "gauge",
        &one(status.commit_index),
    );
    gauge(
        "tally_raft_applied_index",
        "The highest log index applied to this replica's state.",
        "gauge",
        &one(status.applied_index),
    );
    gauge(
        "tally_raft_last_index",
        "The last index in this replica's log.",
        "gauge",
        &one(status.last_index),
    );
    let peers = |f: &dyn Fn(&pb::PeerProgress) -> u64| -> Vec<(String, String)> {
        status
            .peers
            .iter()
            .map(|p| (format!("peer=\"{}\"", p.replica_id), f(p).to_string()))
            .collect()
    };
    gauge(
        "tally_raft_peer_lag_entries",
        "Log entries a peer is behind this replica's last index (reported by the leader).",
        "gauge",
        &peers(&|p| p.lag),
    );
    gauge(
        "tally_raft_peer_reachable",
        "1 when a raft message came from the peer within two election timeouts.",
        "gauge",
        &peers(&|p| u64::from(p.reachable)),
    );
    gauge(
        "tally_chain_length",
        "Sheets in the hash chain (every recorded sheet, counted or not).",
        "gauge",
        &one(status.chain_length),
    );
    gauge(
        "tally_sheets_counted",
        "Sheets in the ledger: the version of each slot that counts.",
        "gauge",
        &one(status.sheets_counted),
    );
    gauge(
        "tally_conflicts",
        "Conflicting sheets recorded (same slot and version, different bytes); never counted.",
        "gauge",
        &one(status.conflicts),
    );
    let outcomes: Vec<_> = {
        let map = sheets.outcomes.lock().unwrap_or_else(|e| e.into_inner());
        map.iter()
            .map(|((outcome, code), n)| {
                let labels = if code.is_empty() {
                    format!("outcome=\"{outcome}\"")
                } else {
                    format!("outcome=\"{outcome}\",code=\"{}\"", escape_label(code))
                };
                (labels, n.to_string())
            })
            .collect()
    };
    gauge(
        "tally_sheets_total",
        "Sheets this replica answered as leader, by outcome (refusals by code).",
        "counter",
        &outcomes,
    );
    gauge(
        "tally_signature_failures_total",
        "Signatures that did not verify: a unit's on a sheet (E204), a township's on a batch (E209).",
        "counter",
        &[
            (
                "kind=\"sheet\"".to_owned(),
                sheets
                    .signature_failures_sheet
                    .load(Ordering::Relaxed)
                    .to_string(),
            ),
            (
                "kind=\"countersignature\"".to_owned(),
                sheets
                    .signature_failures_countersignature
                    .load(Ordering::Relaxed)
                    .to_string(),
            ),
        ],
    );
    node.proposal_seconds.write(
        &mut out,
        "tally_raft_proposal_duration_seconds",
        "From a proposal reaching the driver to its entry applied here (leader only).",
    );
    fsync.write(
        &mut out,
        "tally_storage_fsync_duration_seconds",
        "One raft Ready persisted: a redb transaction with an fsync.",
    );
    out
}

/// A label value as the exposition format wants it: backslash, quote and newline escaped.
fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        // Goal: the exposition's buckets are cumulative, +Inf equals the count.
        // Method: observe 0.3 ms, 7 ms and 20 s; read the written lines.
        let h = Histogram::default();
        h.observe(Duration::from_micros(300));
        h.observe(Duration::from_millis(7));
        h.observe(Duration::from_secs(20));
        let mut out = String::new();
        h.write(&mut out, "x_seconds", "help");
        assert!(out.contains("x_seconds_bucket{le=\"0.0005\"} 1\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"0.005\"} 1\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"0.01\"} 2\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"10\"} 2\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"+Inf\"} 3\n"), "{out}");
        assert!(out.contains("x_seconds_count 3\n"), "{out}");
    }

    #[test]
    fn outcomes_are_counted_with_codes() {
        // Goal: refusals carry their code, E204 also counts as a signature failure.
        // Method: count a batch of each kind and render.
        use pb::sheet_outcome::Kind;
        let sheets = SheetMetrics::default();
        let o = |kind: Kind, code: &str| pb::SheetOutcome {
            kind: kind as i32,
            code: code.to_owned(),
            ..Default::default()
        };
        sheets.count(&[
            o(Kind::Accepted, ""),
            o(Kind::Accepted, ""),
            o(Kind::Duplicate, ""),
            o(Kind::Conflict, "conflict"),
            o(Kind::Refused, "E204"),
        ]);
        let text = render(
            &pb::StatusResponse {
                role: "leader".into(),
                ..Default::default()
            },
            &NodeMetrics::default(),
            &sheets,
            &Histogram::default(),
        );
        for line in [
            "tally_sheets_total{outcome=\"accepted\"} 2",
            "tally_sheets_total{outcome=\"duplicate\"} 1",
            "tally_sheets_total{outcome=\"conflict\"} 1",
            "tally_sheets_total{outcome=\"refused\",code=\"E204\"} 1",
            "tally_signature_failures_total{kind=\"sheet\"} 1",
            "tally_raft_role{role=\"leader\"} 1",
            "tally_raft_role{role=\"follower\"} 0",
            "tally_raft_is_leader 1",
        ] {
            assert!(
                text.contains(&format!("{line}\n")),
                "{line} missing:\n{text}"
            );
        }
    }
}
