//! A replica's Prometheus metrics: one prometheus-client [`Registry`] per replica, written as
//! OpenMetrics text on `GET /metrics` ([`crate::http`]). The names and labels are listed here
//! in one place and are those the dashboard, the docs and the alert examples use.
//!
//! Counters and histograms are updated where things happen (the driver for proposals and
//! leader changes, the storage for fsyncs, the County service for sheet outcomes); gauges are
//! read from the replica's published [`NodeStatus`](crate::node::NodeStatus) when scraped, so
//! a scrape never waits for the driver.
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
//!
//! Counters are registered without the `_total` suffix: OpenMetrics names the family
//! `tally_sheets` (its `# TYPE` line) and the encoder adds `_total` to every sample, so the
//! series keep the names above.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{EncodeMetric, MetricEncoder};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tally_rpc::pb;

/// The content type of `GET /metrics`: the OpenMetrics text format, which Prometheus asks for
/// first and parses (the body ends with `# EOF`, and counter families are named without
/// `_total`, which the 0.0.4 text format would not understand).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Upper bounds of the latency buckets, in seconds: from a fast SSD's fsync (0.5 ms) to a
/// proposal that waits out a slow majority (10 s, the write deadline).
pub const LATENCY_BUCKETS_SECONDS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The most distinct refusal codes counted separately: codes are stable strings from the
/// validation tables (a few dozen); anything past this bound is counted under `other`.
pub const REFUSAL_CODES_MAX: usize = 128;

/// A gauge of a count (prometheus-client's default gauge is signed).
type CountGauge = Gauge<u64, std::sync::atomic::AtomicU64>;

/// A label set whose labels are all known when the series is counted (`code` left out when
/// empty, as it is for every outcome but a refusal).
type Labels = Vec<(&'static str, String)>;

/// A family written with its `# HELP` and `# TYPE` lines even while it has no series
/// (prometheus-client leaves an empty family out): a follower has no peer lag to report and
/// a fresh server no outcomes yet, and a family that comes and goes looks like a scrape
/// problem.
#[derive(Debug, Clone, Default)]
struct Listed<F>(F);

impl<F: EncodeMetric> EncodeMetric for Listed<F> {
    fn encode(&self, encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        self.0.encode(encoder)
    }

    fn metric_type(&self) -> MetricType {
        self.0.metric_type()
    }
}

/// A latency histogram with the fixed [`LATENCY_BUCKETS_SECONDS`]. Lock-free: observed from
/// the driver and the storage while a scrape reads it.
#[derive(Debug, Clone)]
pub struct Histogram(prometheus_client::metrics::histogram::Histogram);

impl Default for Histogram {
    fn default() -> Self {
        Histogram(prometheus_client::metrics::histogram::Histogram::new(
            LATENCY_BUCKETS_SECONDS,
        ))
    }
}

impl Histogram {
    pub fn observe(&self, elapsed: Duration) {
        self.0.observe(elapsed.as_secs_f64());
    }
}

/// What the driver counts.
#[derive(Debug, Default)]
pub struct NodeMetrics {
    pub leader_changes: Counter,
    /// From a proposal reaching the driver to its entry being applied here.
    pub proposal_seconds: Histogram,
    /// Linearizable reads waiting in the driver for raft to confirm them.
    pub reads_pending: CountGauge,
    /// Results computed (each at a new applied index, however many callers asked).
    pub results_computed: Counter,
}

/// What the County service counts: every sheet this replica answered as leader, by outcome.
#[derive(Debug)]
pub struct SheetMetrics {
    /// By outcome and, for refusals, code.
    outcomes: Family<Labels, Counter>,
    /// Every (outcome, code) counted so far: bounds the refusal codes and sums an outcome.
    seen: Mutex<BTreeSet<(&'static str, String)>>,
    /// By `kind`: `sheet` (E204) or `countersignature` (E209).
    signature_failures: Family<[(&'static str, &'static str); 1], Counter>,
}

/// The code of an invalid signature on a sheet.
pub const BAD_SIGNATURE_CODE: &str = "E204";

const SIGNATURE_SHEET: [(&str, &str); 1] = [("kind", "sheet")];
const SIGNATURE_COUNTERSIGNATURE: [(&str, &str); 1] = [("kind", "countersignature")];

impl Default for SheetMetrics {
    fn default() -> Self {
        let signature_failures: Family<_, Counter> = Family::default();
        // Both kinds are exposed from the start, at 0: a series that appears later looks like
        // a scrape problem.
        signature_failures.get_or_create(&SIGNATURE_SHEET).inc_by(0);
        signature_failures
            .get_or_create(&SIGNATURE_COUNTERSIGNATURE)
            .inc_by(0);
        SheetMetrics {
            outcomes: Family::default(),
            seen: Mutex::new(BTreeSet::new()),
            signature_failures,
        }
    }
}

fn labels(outcome: &'static str, code: &str) -> Labels {
    let mut labels = vec![("outcome", outcome.to_owned())];
    if !code.is_empty() {
        labels.push(("code", code.to_owned()));
    }
    labels
}

impl SheetMetrics {
    /// Counts the outcomes of one answered batch.
    pub fn count(&self, outcomes: &[pb::SheetOutcome]) {
        use pb::sheet_outcome::Kind;
        // A poisoned lock only means another thread panicked mid-count; the set is still a set.
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
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
                let distinct = seen.iter().filter(|(o, _)| *o == "refused").count();
                if seen.contains(&(outcome, o.code.clone())) || distinct < REFUSAL_CODES_MAX {
                    o.code.clone()
                } else {
                    "other".to_owned()
                }
            } else {
                String::new()
            };
            if o.code == BAD_SIGNATURE_CODE {
                self.signature_failures
                    .get_or_create(&SIGNATURE_SHEET)
                    .inc();
            }
            self.outcomes.get_or_create(&labels(outcome, &code)).inc();
            seen.insert((outcome, code));
        }
    }

    /// Counts a batch refused whole because its countersignature did not verify (E209).
    pub fn countersignature_failed(&self) {
        self.signature_failures
            .get_or_create(&SIGNATURE_COUNTERSIGNATURE)
            .inc();
    }

    /// The count of `outcome` (all codes), for tests and the dashboard.
    pub fn total(&self, outcome: &str) -> u64 {
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.iter()
            .filter(|(o, _)| *o == outcome)
            .filter_map(|(o, code)| self.outcomes.get(&labels(o, code)).map(|c| c.get()))
            .sum()
    }

    pub fn signature_failures(&self) -> u64 {
        [SIGNATURE_SHEET, SIGNATURE_COUNTERSIGNATURE]
            .iter()
            .filter_map(|kind| self.signature_failures.get(kind).map(|c| c.get()))
            .sum()
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

/// The gauges read from the Status answer at each scrape.
#[derive(Debug, Default)]
struct StatusGauges {
    up: CountGauge,
    term: CountGauge,
    role: Family<[(&'static str, &'static str); 1], CountGauge>,
    is_leader: CountGauge,
    leader_id: CountGauge,
    commit_index: CountGauge,
    applied_index: CountGauge,
    last_index: CountGauge,
    peer_lag: Family<[(&'static str, u64); 1], CountGauge>,
    peer_reachable: Family<[(&'static str, u64); 1], CountGauge>,
    chain_length: CountGauge,
    sheets_counted: CountGauge,
    conflicts: CountGauge,
}

impl StatusGauges {
    fn set(&self, status: &pb::StatusResponse) {
        self.up.set(u64::from(status.running));
        self.term.set(status.term);
        for role in ROLES {
            self.role
                .get_or_create(&[("role", role)])
                .set(u64::from(status.role == role));
        }
        self.is_leader.set(u64::from(status.role == "leader"));
        self.leader_id.set(status.leader_id);
        self.commit_index.set(status.commit_index);
        self.applied_index.set(status.applied_index);
        self.last_index.set(status.last_index);
        // Only the peers this answer names: a removed peer's series goes.
        self.peer_lag.clear();
        self.peer_reachable.clear();
        for p in &status.peers {
            let peer = [("peer", p.replica_id)];
            self.peer_lag.get_or_create(&peer).set(p.lag);
            self.peer_reachable
                .get_or_create(&peer)
                .set(u64::from(p.reachable));
        }
        self.chain_length.set(status.chain_length);
        self.sheets_counted.set(status.sheets_counted);
        self.conflicts.set(status.conflicts);
    }
}

/// One replica's registry: the driver's, the storage's and the service's metrics, and the
/// gauges set from the Status answer when scraped.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    status: StatusGauges,
    /// One scrape at a time sets the status gauges and writes them, so no scrape writes a
    /// mix of two Status answers.
    scrape: Mutex<()>,
}

impl Metrics {
    /// Registers every metric of one replica, in the order they are written. Help texts end
    /// without a period: the registry adds one.
    pub fn new(node: &NodeMetrics, sheets: &SheetMetrics, fsync: &Histogram) -> Metrics {
        let status = StatusGauges::default();
        let mut r = Registry::default();
        r.register(
            "tally_replica_up",
            "1 while the replica's driver runs, 0 once it stopped (see tally cluster status)",
            status.up.clone(),
        );
        r.register(
            "tally_raft_term",
            "The raft term this replica is in",
            status.term.clone(),
        );
        r.register(
            "tally_raft_role",
            "1 for the role this replica has now, 0 for the others",
            status.role.clone(),
        );
        r.register(
            "tally_raft_is_leader",
            "1 when this replica is the leader",
            status.is_leader.clone(),
        );
        r.register(
            "tally_raft_leader_id",
            "The leader this replica knows, 0 for none",
            status.leader_id.clone(),
        );
        r.register(
            "tally_raft_leader_changes",
            "How often this replica saw a new leader since it started",
            node.leader_changes.clone(),
        );
        r.register(
            "tally_raft_reads_pending",
            "Linearizable reads waiting for the leader to confirm them (each is answered or given up within 3 s)",
            node.reads_pending.clone(),
        );
        r.register(
            "tally_results_computed",
            "Results computed by this replica, at most once per applied index however many callers asked",
            node.results_computed.clone(),
        );
        r.register(
            "tally_raft_commit_index",
            "The highest log index known committed (on a majority)",
            status.commit_index.clone(),
        );
        r.register(
            "tally_raft_applied_index",
            "The highest log index applied to this replica's state",
            status.applied_index.clone(),
        );
        r.register(
            "tally_raft_last_index",
            "The last index in this replica's log",
            status.last_index.clone(),
        );
        r.register(
            "tally_raft_peer_lag_entries",
            "Log entries a peer is behind this replica's last index (reported by the leader)",
            Listed(status.peer_lag.clone()),
        );
        r.register(
            "tally_raft_peer_reachable",
            "1 when a raft message came from the peer within two election timeouts",
            Listed(status.peer_reachable.clone()),
        );
        r.register(
            "tally_chain_length",
            "Sheets in the hash chain (every recorded sheet, counted or not)",
            status.chain_length.clone(),
        );
        r.register(
            "tally_sheets_counted",
            "Sheets in the ledger: the version of each slot that counts",
            status.sheets_counted.clone(),
        );
        r.register(
            "tally_conflicts",
            "Conflicting sheets recorded (same slot and version, different bytes); never counted",
            status.conflicts.clone(),
        );
        r.register(
            "tally_sheets",
            "Sheets this replica answered as leader, by outcome (refusals by code)",
            Listed(sheets.outcomes.clone()),
        );
        r.register(
            "tally_signature_failures",
            "Signatures that did not verify: a unit's on a sheet (E204), a township's on a batch (E209)",
            sheets.signature_failures.clone(),
        );
        r.register(
            "tally_raft_proposal_duration_seconds",
            "From a proposal reaching the driver to its entry applied here (leader only)",
            node.proposal_seconds.0.clone(),
        );
        r.register(
            "tally_storage_fsync_duration_seconds",
            "One raft Ready persisted: a redb transaction with an fsync",
            fsync.0.clone(),
        );
        Metrics {
            registry: r,
            status,
            scrape: Mutex::new(()),
        }
    }

    /// The OpenMetrics text of every metric, the gauges set from `status` (the Status answer,
    /// with reachability).
    pub fn render(&self, status: &pb::StatusResponse) -> String {
        let _one_scrape = self.scrape.lock().unwrap_or_else(|e| e.into_inner());
        self.status.set(status);
        let mut out = String::with_capacity(8 * 1024);
        // Writing to a String cannot fail; the encoder's fmt::Result is only ever Ok here.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        // Goal: the exposition's buckets are cumulative, +Inf equals the count.
        // Method: observe 0.3 ms, 7 ms and 20 s in the fsync histogram; read the written lines.
        let fsync = Histogram::default();
        fsync.observe(Duration::from_micros(300));
        fsync.observe(Duration::from_millis(7));
        fsync.observe(Duration::from_secs(20));
        let out = Metrics::new(&NodeMetrics::default(), &SheetMetrics::default(), &fsync)
            .render(&pb::StatusResponse::default());
        let x = "tally_storage_fsync_duration_seconds";
        assert!(
            out.contains(&format!("{x}_bucket{{le=\"0.0005\"}} 1\n")),
            "{out}"
        );
        assert!(
            out.contains(&format!("{x}_bucket{{le=\"0.005\"}} 1\n")),
            "{out}"
        );
        assert!(
            out.contains(&format!("{x}_bucket{{le=\"0.01\"}} 2\n")),
            "{out}"
        );
        assert!(
            out.contains(&format!("{x}_bucket{{le=\"10.0\"}} 2\n")),
            "{out}"
        );
        assert!(
            out.contains(&format!("{x}_bucket{{le=\"+Inf\"}} 3\n")),
            "{out}"
        );
        assert!(out.contains(&format!("{x}_count 3\n")), "{out}");
        assert!(out.ends_with("# EOF\n"), "{out}");
        // No peers known (a follower): the family is still listed.
        assert!(
            out.contains("# TYPE tally_raft_peer_lag_entries gauge\n"),
            "{out}"
        );
        assert!(out.contains("# TYPE tally_sheets counter\n"), "{out}");
    }

    #[test]
    fn outcomes_are_counted_with_codes() {
        // Goal: refusals carry their code, E204 also counts as a signature failure; counters
        // keep their `_total` names.
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
        let text = Metrics::new(&NodeMetrics::default(), &sheets, &Histogram::default()).render(
            &pb::StatusResponse {
                role: "leader".into(),
                ..Default::default()
            },
        );
        for line in [
            "# TYPE tally_sheets counter",
            "tally_sheets_total{outcome=\"accepted\"} 2",
            "tally_sheets_total{outcome=\"duplicate\"} 1",
            "tally_sheets_total{outcome=\"conflict\"} 1",
            "tally_sheets_total{outcome=\"refused\",code=\"E204\"} 1",
            "tally_signature_failures_total{kind=\"sheet\"} 1",
            "tally_signature_failures_total{kind=\"countersignature\"} 0",
            "tally_raft_leader_changes_total 0",
            "tally_raft_role{role=\"leader\"} 1",
            "tally_raft_role{role=\"follower\"} 0",
            "tally_raft_is_leader 1",
        ] {
            assert!(
                text.contains(&format!("{line}\n")),
                "{line} missing:\n{text}"
            );
        }
        assert_eq!(sheets.total("accepted"), 2);
        assert_eq!(sheets.total("refused"), 1);
        assert_eq!(sheets.signature_failures(), 1);
    }
}
