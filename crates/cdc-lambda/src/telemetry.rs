//! Logs and metrics.
//!
//! Enters: per-message reports of one invocation (table, op, outcome, commit time, rows) and
//! its duration. Leaves: JSON log lines through `tracing` (stderr), and one CloudWatch Embedded
//! Metric Format (EMF) document per invocation on stdout, which CloudWatch Logs turns into
//! metrics in namespace `CdcProcessor` without any API call from the function.
//!
//! Logs carry ids and classifications only: request id, message id, correlation id, table, op,
//! error class and code. Never row values, message bodies or secrets: no log call anywhere in
//! the crate is given a body, a row or a `ClickHouseSettings` password (whose `Debug` redacts it).

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};
use tracing_subscriber::EnvFilter;

use crate::sqs::message::{MessageOutcome, MessageReport};

const NAMESPACE: &str = "CdcProcessor";

/// EMF accepts at most 100 metrics per directive; 10 are the batch metrics.
const MAX_EVENT_METRICS: usize = 90;

/// Installs the JSON log subscriber (`filter`: `RUST_LOG` as `config::log_filter` reads it,
/// default `info`). Logs go to stderr so that stdout carries only EMF documents (Lambda sends both
/// streams to CloudWatch Logs). Calling it twice is harmless.
pub fn init_logging(filter: Option<String>) {
    // A filter that does not parse falls back to `info` and says so: logging must start before
    // anything else can report a configuration error.
    let (filter, unusable) = match filter {
        None => (EnvFilter::new("info"), false),
        Some(text) => match EnvFilter::try_new(&text) {
            Ok(filter) => (filter, false),
            Err(_) => (EnvFilter::new("info"), true),
        },
    };
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(true)
        .with_span_list(false)
        .with_target(false)
        .with_ansi(false)
        .with_writer(std::io::stderr)
        .try_init();
    if unusable {
        tracing::warn!(variable = "RUST_LOG", "RUST_LOG is not a valid log filter; logging at info");
    }
}

/// The metrics of one invocation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InvocationMetrics {
    /// (table, op, outcome) → count; unknown table/op are `unknown`.
    pub events: BTreeMap<(String, String, String), u64>,
    pub(crate) rows_inserted: u64,
    pub(crate) batch_duration_ms: u64,
    /// now − commit time of each delivered change, in ms.
    pub(crate) freshness_lags_ms: Vec<i64>,
    pub(crate) dead_lettered: u64,
    pub(crate) failed: u64,
    pub(crate) messages: u64,
    /// Messages re-sent as delayed copies after an environmental failure (outage, deadline).
    pub requeued: u64,
    /// Dead-lettered as `retry.expired`: the environment failed for longer than the retry age.
    pub(crate) retry_expired: u64,
    /// The highest attempt counter (`cdc_attempt`) among the batch's messages: copies going round.
    pub(crate) max_copy_attempt: u32,
    /// Messages that failed for a reason outside themselves (ClickHouse, credentials, TLS,
    /// configuration, deadline): the operator's signal that the environment is failing.
    pub environment_failures: u64,
    /// Changes of tables outside the table mapping (`CAPTURED_TABLES`), acknowledged unread.
    pub(crate) unmapped_table_changes: u64,
}

impl InvocationMetrics {
    fn record_event(&mut self, table: Option<&str>, op: Option<&str>, outcome: &str) {
        let key = (table.unwrap_or("unknown").to_string(), op.unwrap_or("unknown").to_string(), outcome.to_string());
        *self.events.entry(key).or_default() += 1;
    }

    /// Records one message's report: its event, rows, and (when delivered) its freshness.
    pub(crate) fn record_report(&mut self, report: &MessageReport, now_ms: i64) {
        self.record_event(report.table(), report.op.map(|op| op.as_str()), report.outcome.label());
        if report.outcome == MessageOutcome::Skipped(cdc_core::change::Skipped::UnknownTable.as_str()) {
            self.unmapped_table_changes += 1;
        }
        // Rows of a failed message did not land (or will be written again): not counted.
        if !report.outcome.is_failure() {
            self.rows_inserted += report.rows_inserted;
        }
        if let (MessageOutcome::Delivered, Some(commit)) = (&report.outcome, report.commit_time_us) {
            self.record_commit_time(commit, now_ms);
        }
    }

    /// Records a delivered change's commit time (µs since the epoch) against `now_ms`.
    fn record_commit_time(&mut self, commit_time_us: i64, now_ms: i64) {
        // A clock skew between the database and Lambda can make the lag slightly negative: a
        // lag below zero means "fresh", not "from the future".
        self.freshness_lags_ms.push((now_ms - commit_time_us / 1000).max(0));
    }

    fn freshness_max_ms(&self) -> Option<i64> {
        self.freshness_lags_ms.iter().copied().max()
    }

    /// The median by nearest rank (the lower middle for an even count).
    fn freshness_p50_ms(&self) -> Option<i64> {
        if self.freshness_lags_ms.is_empty() {
            return None;
        }
        let mut lags = self.freshness_lags_ms.clone();
        lags.sort_unstable();
        lags.get((lags.len() - 1) / 2).copied()
    }

    /// The EMF document. One document carries one value per dimension, so the per-(table, op,
    /// outcome) counts are metrics of their own, named `Events.<table>.<op>.<outcome>`, under the
    /// same `FunctionName` dimension; the breakdown is also kept as a plain `events` property for
    /// Logs Insights queries.
    pub fn to_emf(&self, function_name: &str, timestamp_ms: i64) -> Value {
        let mut metrics = Vec::new();
        let mut root = Map::new();
        let mut put = |name: String, unit: &str, value: Value| {
            metrics.push(json!({"Name": name, "Unit": unit}));
            root.insert(name, value);
        };
        put("Messages".into(), "Count", json!(self.messages));
        put("FailedMessages".into(), "Count", json!(self.failed));
        put("DeadLettered".into(), "Count", json!(self.dead_lettered));
        put("Requeued".into(), "Count", json!(self.requeued));
        put("RetryExpired".into(), "Count", json!(self.retry_expired));
        put("MaxCopyAttempt".into(), "Count", json!(self.max_copy_attempt));
        put("EnvironmentFailures".into(), "Count", json!(self.environment_failures));
        put("RowsInserted".into(), "Count", json!(self.rows_inserted));
        put("UnmappedTableChanges".into(), "Count", json!(self.unmapped_table_changes));
        put("BatchDurationMs".into(), "Milliseconds", json!(self.batch_duration_ms));
        if let (Some(max), Some(p50)) = (self.freshness_max_ms(), self.freshness_p50_ms()) {
            put("FreshnessLagMsMax".into(), "Milliseconds", json!(max));
            put("FreshnessLagMsP50".into(), "Milliseconds", json!(p50));
        }
        let mut breakdown = Vec::new();
        for (i, ((table, op, outcome), count)) in self.events.iter().enumerate() {
            // EMF allows 100 metrics per directive; the rest stay in the `events` property.
            if i < MAX_EVENT_METRICS {
                put(format!("Events.{table}.{op}.{outcome}"), "Count", json!(count));
            }
            breakdown.push(json!({"table": table, "op": op, "outcome": outcome, "count": count}));
        }
        root.insert("FunctionName".into(), json!(function_name));
        root.insert("events".into(), Value::Array(breakdown));
        root.insert(
            "_aws".into(),
            json!({
                "Timestamp": timestamp_ms,
                "CloudWatchMetrics": [{
                    "Namespace": NAMESPACE,
                    "Dimensions": [["FunctionName"]],
                    "Metrics": metrics,
                }],
            }),
        );
        Value::Object(root)
    }

    /// Prints the EMF document as one line on stdout.
    pub(crate) fn emit(&self, function_name: &str) {
        let line = self.to_emf(function_name, now_ms()).to_string();
        println!("{line}");
    }
}

/// Milliseconds since the epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freshness_max_and_median() {
        let mut m = InvocationMetrics::default();
        assert_eq!(m.freshness_p50_ms(), None);
        for lag_ms in [500, 100, 300, 200] {
            m.record_commit_time((10_000 - lag_ms) * 1000, 10_000);
        }
        assert_eq!(m.freshness_max_ms(), Some(500));
        assert_eq!(m.freshness_p50_ms(), Some(200));
        m.record_commit_time(20_000_000, 10_000);
        assert_eq!(m.freshness_lags_ms.last(), Some(&0));
    }

    #[test]
    fn emf_document_is_well_formed() {
        let mut m = InvocationMetrics {
            messages: 3,
            rows_inserted: 2,
            batch_duration_ms: 42,
            dead_lettered: 1,
            ..Default::default()
        };
        m.record_event(Some("orders"), Some("create"), "delivered");
        m.record_event(Some("orders"), Some("create"), "delivered");
        m.record_event(None, None, "poison");
        m.record_commit_time(9_000_000, 10_000);
        let doc = m.to_emf("fn", 10_000);
        let cw = &doc["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(doc["_aws"]["Timestamp"], 10_000);
        assert_eq!(cw["Namespace"], NAMESPACE);
        assert_eq!(cw["Dimensions"], json!([["FunctionName"]]));
        // Every declared metric has a value at the root, as EMF requires.
        for metric in cw["Metrics"].as_array().unwrap() {
            let name = metric["Name"].as_str().unwrap();
            assert!(doc.get(name).is_some(), "{name} has no value");
        }
        assert_eq!(doc["Events.orders.create.delivered"], 2);
        assert_eq!(doc["Events.unknown.unknown.poison"], 1);
        assert_eq!(doc["FreshnessLagMsMax"], 1000);
        assert_eq!(doc["DeadLettered"], 1);
        assert_eq!(doc["FunctionName"], "fn");
        // One line.
        assert!(!doc.to_string().contains('\n'));
    }

    #[test]
    fn reports_feed_events_rows_and_freshness() {
        use cdc_core::change::Op;
        use cdc_core::error::ErrorClass;
        let mut m = InvocationMetrics::default();
        let delivered = MessageReport {
            table: Some("orders".into()),
            op: Some(Op::Create),
            commit_time_us: Some(8_000_000),
            rows_inserted: 1,
            ..MessageReport::new(MessageOutcome::Delivered)
        };
        m.record_report(&delivered, 10_000);
        m.record_report(&delivered, 10_000);
        m.record_report(
            &MessageOutcome::Failed { class: ErrorClass::Poison, code: "x", table: Some("customers".into()) }.into(),
            10_000,
        );
        let failed_insert = MessageReport {
            rows_inserted: 3,
            ..MessageOutcome::Failed { class: ErrorClass::Transient, code: "clickhouse.network", table: None }.into()
        };
        m.record_report(&failed_insert, 10_000);
        assert_eq!(m.rows_inserted, 2, "rows of a failed insert are not counted");
        assert_eq!(m.events[&("orders".into(), "create".into(), "delivered".into())], 2);
        assert_eq!(m.events[&("customers".into(), "unknown".into(), "poison".into())], 1);
        assert_eq!(m.freshness_max_ms(), Some(2_000));
    }

    #[test]
    fn no_freshness_metric_without_commit_times() {
        let doc = InvocationMetrics::default().to_emf("fn", 1);
        assert!(doc.get("FreshnessLagMsMax").is_none());
    }
}
