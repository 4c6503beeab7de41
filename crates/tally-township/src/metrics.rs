//! The township aggregator's Prometheus metrics: one prometheus-client [`Registry`] per
//! aggregator, written as OpenMetrics text on `GET /metrics` ([`crate::http`]), as the county
//! replicas write theirs. The names are listed here in one place.
//!
//! Counters and the histogram are updated where things happen (the writer once a decision is
//! durable, the forwarder once the county answered); gauges are read from the book when
//! scraped. Names carry the `tally_township_` prefix so that a collector scraping both the
//! county and the townships never adds a township's intake to the county's.
//!
//! | name | type | labels |
//! |---|---|---|
//! | `tally_township_outbox_sheets` | gauge: sheets stored, not yet answered by the county | |
//! | `tally_township_outbox_oldest_age_seconds` | gauge (0 when empty) | |
//! | `tally_township_outbox_capacity_sheets` | gauge | |
//! | `tally_township_sheets_total` | counter: intake decisions | `outcome`, `code` (refused, conflict) |
//! | `tally_township_signature_failures_total` | counter: sheets refused E204 | |
//! | `tally_township_county_reachable` | gauge, 1 when the last attempt succeeded | |
//! | `tally_township_forwarded_sheets_total` | counter: sheets the county answered | |
//! | `tally_township_county_outcomes_total` | counter: the county's answers | `outcome` |
//! | `tally_township_forward_failures_total` | counter: attempts that failed | `kind` (`transient`, `refused`) |
//! | `tally_township_forward_batch_duration_seconds` | histogram: send to answer | |
//! | `tally_township_units_reported`, `tally_township_units_expected` | gauge | |
//! | `tally_township_sheets_stored` | gauge | |
//! | `tally_township_storage_failed` | gauge: 1 from a storage failure (a full disk) until a write succeeds again | |
//!
//! Counters are registered without the `_total` suffix: OpenMetrics names the family
//! `tally_township_sheets` (its `# TYPE` line) and the encoder adds `_total` to every sample,
//! so the series keep the names above.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{EncodeMetric, MetricEncoder};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// The content type of `GET /metrics`: the OpenMetrics text format, which Prometheus asks for
/// first and parses (the body ends with `# EOF`, and counter families are named without
/// `_total`, which the 0.0.4 text format would not understand).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Upper bounds of the batch latency buckets, in seconds: from a county on the same network
/// (5 ms) to the forwarder's 10 s deadline.
pub const LATENCY_BUCKETS_SECONDS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// The most distinct (outcome, code) pairs counted separately: codes are stable strings from
/// the validation tables (a few dozen); anything past this bound is counted under `other`.
pub const LABELS_MAX: usize = 128;

/// A gauge of a count (prometheus-client's default gauge is signed).
type CountGauge = Gauge<u64, AtomicU64>;

/// Label pairs, an empty value left out (`code` on an accepted sheet).
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

/// Counters keyed by label values, bounded by [`LABELS_MAX`].
#[derive(Debug, Clone)]
struct LabelledCounter {
    names: &'static [&'static str],
    family: Family<Labels, Counter>,
    /// The label values counted so far, for the bound.
    seen: std::sync::Arc<Mutex<BTreeSet<Vec<String>>>>,
}

impl LabelledCounter {
    fn new(names: &'static [&'static str]) -> Self {
        LabelledCounter {
            names,
            family: Family::default(),
            seen: Default::default(),
        }
    }

    fn add(&self, values: Vec<String>, n: u64) {
        let mut seen = self
            .seen
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let values = if seen.contains(&values) || seen.len() < LABELS_MAX {
            values
        } else {
            values.iter().map(|_| "other".to_owned()).collect()
        };
        let labels: Labels = self
            .names
            .iter()
            .zip(&values)
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| (*k, v.clone()))
            .collect();
        self.family.get_or_create(&labels).inc_by(n);
        seen.insert(values);
    }
}

/// The counters and histogram of one aggregator, the gauges set from the book when scraped,
/// and the registry that writes them.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    sheets: LabelledCounter,
    signature_failures: Counter,
    county_outcomes: LabelledCounter,
    forward_failures: LabelledCounter,
    forward_batch: Histogram,
    gauges: GaugeMetrics,
    /// One scrape at a time sets the gauges and writes them, so no scrape mixes two readings.
    scrape: Mutex<()>,
}

/// The gauges, read from the book at scrape time.
#[derive(Debug, Default, Clone, Copy)]
pub struct Gauges {
    pub outbox_sheets: u64,
    pub outbox_oldest_age_ms: u64,
    pub outbox_capacity_sheets: u64,
    pub county_reachable: bool,
    pub forwarded_sheets: u64,
    pub units_reported: u64,
    pub units_expected: u64,
    pub sheets_stored: u64,
    /// A storage failure (a full disk) keeps the database closed (`crate::disk`).
    pub storage_failed: bool,
}

/// Where [`Gauges`] go in the registry.
#[derive(Debug, Default)]
struct GaugeMetrics {
    outbox_sheets: CountGauge,
    outbox_oldest_age_seconds: Gauge<f64, AtomicU64>,
    outbox_capacity_sheets: CountGauge,
    county_reachable: CountGauge,
    units_reported: CountGauge,
    units_expected: CountGauge,
    sheets_stored: CountGauge,
    storage_failed: CountGauge,
    /// A counter whose value the book keeps: set, never added to, at each scrape.
    forwarded_sheets: Counter,
}

impl Default for Metrics {
    /// Registers every metric, in the order they are written. Help texts end without a
    /// period: the registry adds one.
    fn default() -> Self {
        let gauges = GaugeMetrics::default();
        let sheets = LabelledCounter::new(&["outcome", "code"]);
        let signature_failures = Counter::default();
        let county_outcomes = LabelledCounter::new(&["outcome"]);
        let forward_failures = LabelledCounter::new(&["kind"]);
        let forward_batch = Histogram::new(LATENCY_BUCKETS_SECONDS);
        let mut r = Registry::default();
        r.register(
            "tally_township_outbox_sheets",
            "Sheets stored here and not yet answered by the county",
            gauges.outbox_sheets.clone(),
        );
        r.register(
            "tally_township_outbox_oldest_age_seconds",
            "How long the oldest sheet in the outbox has waited (0 when empty)",
            gauges.outbox_oldest_age_seconds.clone(),
        );
        r.register(
            "tally_township_outbox_capacity_sheets",
            "The outbox depth at which Submit answers RESOURCE_EXHAUSTED",
            gauges.outbox_capacity_sheets.clone(),
        );
        r.register(
            "tally_township_county_reachable",
            "1 when the last attempt to reach the county succeeded",
            gauges.county_reachable.clone(),
        );
        r.register(
            "tally_township_units_reported",
            "Polling units with at least one sheet stored here",
            gauges.units_reported.clone(),
        );
        r.register(
            "tally_township_units_expected",
            "Polling units of this township in the election definition",
            gauges.units_expected.clone(),
        );
        r.register(
            "tally_township_sheets_stored",
            "Sheets stored here (every version)",
            gauges.sheets_stored.clone(),
        );
        r.register(
            "tally_township_storage_failed",
            "1 from a storage failure (a full disk, an I/O error) until a write succeeds again: nothing is stored meanwhile",
            gauges.storage_failed.clone(),
        );
        r.register(
            "tally_township_forwarded_sheets",
            "Sheets the county has answered",
            gauges.forwarded_sheets.clone(),
        );
        r.register(
            "tally_township_sheets",
            "Sheets decided at intake, by outcome (and code for refused and conflict)",
            Listed(sheets.family.clone()),
        );
        r.register(
            "tally_township_signature_failures",
            "Sheets refused for a bad signature (E204)",
            signature_failures.clone(),
        );
        r.register(
            "tally_township_county_outcomes",
            "The county's answers to forwarded sheets, by outcome",
            Listed(county_outcomes.family.clone()),
        );
        r.register(
            "tally_township_forward_failures",
            "Attempts to forward a batch that failed, by kind (transient or refused)",
            Listed(forward_failures.family.clone()),
        );
        r.register(
            "tally_township_forward_batch_duration_seconds",
            "Time from sending a batch to the county's answer",
            forward_batch.clone(),
        );
        Metrics {
            registry: r,
            sheets,
            signature_failures,
            county_outcomes,
            forward_failures,
            forward_batch,
            gauges,
            scrape: Mutex::new(()),
        }
    }
}

impl Metrics {
    /// One intake decision, once durable: `outcome` is accepted, duplicate, superseded,
    /// conflict or refused; `code` is the refusal's (E204, E1xx, ...), empty otherwise.
    pub fn sheet(&self, outcome: &str, code: &str) {
        let code = if outcome == "refused" || outcome == "conflict" {
            code
        } else {
            ""
        };
        self.sheets
            .add(vec![outcome.to_owned(), code.to_owned()], 1);
        if code == "E204" {
            self.signature_failures.inc();
        }
    }

    /// The county's answers to one batch, by outcome.
    pub fn county_outcome(&self, outcome: &str, n: u64) {
        self.county_outcomes.add(vec![outcome.to_owned()], n);
    }

    /// A forward attempt that failed: `transient` (unreachable, no leader) or `refused`.
    pub fn forward_failure(&self, kind: &str) {
        self.forward_failures.add(vec![kind.to_owned()], 1);
    }

    /// The time from sending a batch to the county's answer.
    pub fn forward_batch(&self, elapsed: Duration) {
        self.forward_batch.observe(elapsed.as_secs_f64());
    }

    /// The OpenMetrics text of every metric, the gauges set from `gauges`.
    pub fn render(&self, gauges: &Gauges) -> String {
        let _one_scrape = self.scrape.lock().unwrap_or_else(|e| e.into_inner());
        let g = &self.gauges;
        g.outbox_sheets.set(gauges.outbox_sheets);
        g.outbox_oldest_age_seconds
            .set(gauges.outbox_oldest_age_ms as f64 / 1000.0);
        g.outbox_capacity_sheets.set(gauges.outbox_capacity_sheets);
        g.county_reachable.set(u64::from(gauges.county_reachable));
        g.units_reported.set(gauges.units_reported);
        g.units_expected.set(gauges.units_expected);
        g.sheets_stored.set(gauges.sheets_stored);
        g.storage_failed.set(u64::from(gauges.storage_failed));
        // The book counts forwarded sheets (it survives a restart of the forwarder); the
        // counter only carries that count to the scrape.
        g.forwarded_sheets.inner().store(
            gauges.forwarded_sheets,
            std::sync::atomic::Ordering::Relaxed,
        );
        let mut out = String::new();
        // Writing to a String cannot fail; the encoder's fmt::Result is only ever Ok here.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Goal: the exposition is well-formed and counts what it was told.
    // Method: a few events, then the text checked line by line.
    #[test]
    fn renders_counters_gauges_and_histogram() {
        let m = Metrics::default();
        m.sheet("accepted", "");
        m.sheet("accepted", "");
        m.sheet("refused", "E204");
        m.sheet("refused", "E101");
        m.county_outcome("accepted", 2);
        m.forward_batch(Duration::from_millis(30));
        let text = m.render(&Gauges {
            outbox_sheets: 3,
            outbox_oldest_age_ms: 1500,
            outbox_capacity_sheets: 100,
            county_reachable: true,
            forwarded_sheets: 2,
            units_reported: 1,
            units_expected: 4,
            sheets_stored: 5,
            storage_failed: false,
        });
        for line in [
            "tally_township_outbox_sheets 3",
            "tally_township_outbox_oldest_age_seconds 1.5",
            "tally_township_forwarded_sheets_total 2",
            "tally_township_county_reachable 1",
            "tally_township_sheets_total{outcome=\"accepted\"} 2",
            "tally_township_sheets_total{outcome=\"refused\",code=\"E204\"} 1",
            "tally_township_sheets_total{outcome=\"refused\",code=\"E101\"} 1",
            "tally_township_signature_failures_total 1",
            "tally_township_county_outcomes_total{outcome=\"accepted\"} 2",
            "tally_township_forward_batch_duration_seconds_bucket{le=\"0.025\"} 0",
            "tally_township_forward_batch_duration_seconds_bucket{le=\"0.05\"} 1",
            "tally_township_forward_batch_duration_seconds_count 1",
            "# TYPE tally_township_sheets counter",
            "# EOF",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
    }
}
