//! The township aggregator's Prometheus metrics, written in the text exposition format
//! (version 0.0.4) by hand, as the county replicas write theirs: a few counters and one
//! histogram need no metrics library, and the names stay visible here in one place.
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

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the batch latency buckets, in seconds: from a county on the same network
/// (5 ms) to the forwarder's 10 s deadline.
pub const LATENCY_BUCKETS_SECONDS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// The most distinct (outcome, code) pairs counted separately: codes are stable strings from
/// the validation tables (a few dozen); anything past this bound is counted under `other`.
pub const LABELS_MAX: usize = 128;

/// A latency histogram with the fixed [`LATENCY_BUCKETS_SECONDS`], lock-free.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Observations at or below each bound (not cumulative; summed when written).
    buckets: [AtomicU64; LATENCY_BUCKETS_SECONDS.len()],
    count: AtomicU64,
    /// The sum in nanoseconds, an integer that adds without a lock.
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

    fn write(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} histogram");
        let mut cumulative = 0;
        for (bound, bucket) in LATENCY_BUCKETS_SECONDS.iter().zip(&self.buckets) {
            cumulative += bucket.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum {sum}");
        let _ = writeln!(out, "{name}_count {count}");
    }
}

/// Counters keyed by label values, bounded by [`LABELS_MAX`].
#[derive(Debug, Default)]
struct LabelledCounter {
    counts: Mutex<BTreeMap<Vec<String>, u64>>,
}

impl LabelledCounter {
    fn add(&self, labels: Vec<String>, n: u64) {
        let mut counts = self
            .counts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let key = if counts.contains_key(&labels) || counts.len() < LABELS_MAX {
            labels
        } else {
            labels.iter().map(|_| "other".to_owned()).collect()
        };
        *counts.entry(key).or_default() += n;
    }

    fn write(&self, out: &mut String, name: &str, help: &str, label_names: &[&str]) {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} counter");
        let counts = self
            .counts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for (labels, n) in counts.iter() {
            let labels: Vec<String> = label_names
                .iter()
                .zip(labels)
                .filter(|(_, v)| !v.is_empty())
                .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
                .collect();
            if labels.is_empty() {
                let _ = writeln!(out, "{name} {n}");
            } else {
                let _ = writeln!(out, "{name}{{{}}} {n}", labels.join(","));
            }
        }
    }
}

/// A label value escaped as the exposition format asks (backslash, quote, newline).
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The counters and histogram of one aggregator.
#[derive(Debug, Default)]
pub struct Metrics {
    sheets: LabelledCounter,
    signature_failures: AtomicU64,
    county_outcomes: LabelledCounter,
    forward_failures: LabelledCounter,
    forward_batch: Histogram,
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
            self.signature_failures.fetch_add(1, Ordering::Relaxed);
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
        self.forward_batch.observe(elapsed);
    }

    /// The text exposition of every metric.
    pub fn render(&self, gauges: &Gauges) -> String {
        let mut out = String::new();
        let mut gauge = |name: &str, help: &str, value: String| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} gauge");
            let _ = writeln!(out, "{name} {value}");
        };
        gauge(
            "tally_township_outbox_sheets",
            "Sheets stored here and not yet answered by the county.",
            gauges.outbox_sheets.to_string(),
        );
        gauge(
            "tally_township_outbox_oldest_age_seconds",
            "How long the oldest sheet in the outbox has waited (0 when empty).",
            (gauges.outbox_oldest_age_ms as f64 / 1000.0).to_string(),
        );
        gauge(
            "tally_township_outbox_capacity_sheets",
            "The outbox depth at which Submit answers RESOURCE_EXHAUSTED.",
            gauges.outbox_capacity_sheets.to_string(),
        );
        gauge(
            "tally_township_county_reachable",
            "1 when the last attempt to reach the county succeeded.",
            u8::from(gauges.county_reachable).to_string(),
        );
        gauge(
            "tally_township_units_reported",
            "Polling units with at least one sheet stored here.",
            gauges.units_reported.to_string(),
        );
        gauge(
            "tally_township_units_expected",
            "Polling units of this township in the election definition.",
            gauges.units_expected.to_string(),
        );
        gauge(
            "tally_township_sheets_stored",
            "Sheets stored here (every version).",
            gauges.sheets_stored.to_string(),
        );
        gauge(
            "tally_township_storage_failed",
            "1 from a storage failure (a full disk, an I/O error) until a write succeeds again: nothing is stored meanwhile.",
            u8::from(gauges.storage_failed).to_string(),
        );
        let _ = writeln!(
            out,
            "# HELP tally_township_forwarded_sheets_total Sheets the county has answered.\n\
             # TYPE tally_township_forwarded_sheets_total counter\n\
             tally_township_forwarded_sheets_total {}",
            gauges.forwarded_sheets
        );
        self.sheets.write(
            &mut out,
            "tally_township_sheets_total",
            "Sheets decided at intake, by outcome (and code for refused and conflict).",
            &["outcome", "code"],
        );
        let _ = writeln!(
            out,
            "# HELP tally_township_signature_failures_total Sheets refused for a bad signature (E204).\n\
             # TYPE tally_township_signature_failures_total counter\n\
             tally_township_signature_failures_total {}",
            self.signature_failures.load(Ordering::Relaxed)
        );
        self.county_outcomes.write(
            &mut out,
            "tally_township_county_outcomes_total",
            "The county's answers to forwarded sheets, by outcome.",
            &["outcome"],
        );
        self.forward_failures.write(
            &mut out,
            "tally_township_forward_failures_total",
            "Attempts to forward a batch that failed, by kind (transient or refused).",
            &["kind"],
        );
        self.forward_batch.write(
            &mut out,
            "tally_township_forward_batch_duration_seconds",
            "Time from sending a batch to the county's answer.",
        );
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
            "tally_township_county_reachable 1",
            "tally_township_sheets_total{outcome=\"accepted\"} 2",
            "tally_township_sheets_total{outcome=\"refused\",code=\"E204\"} 1",
            "tally_township_sheets_total{outcome=\"refused\",code=\"E101\"} 1",
            "tally_township_signature_failures_total 1",
            "tally_township_county_outcomes_total{outcome=\"accepted\"} 2",
            "tally_township_forward_batch_duration_seconds_bucket{le=\"0.025\"} 0",
            "tally_township_forward_batch_duration_seconds_bucket{le=\"0.05\"} 1",
            "tally_township_forward_batch_duration_seconds_count 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
    }
}
