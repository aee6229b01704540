//! Corpus helpers shared by the benchmarks: wal2json records of the four source tables, turned
//! into Debezium events WITH schema blocks by the project's own capture encoder, and cut into
//! batches at the Lambda payload limit.
// Each benchmark target compiles this module on its own and uses part of it.
#![allow(dead_code)]

use cdc_clickhouse::RawSql;
use cdc_clickhouse::dialect::Dialect;
use cdc_clickhouse::rowbinary;
use cdc_core::change::Decoded;
use cdc_core::decode::{DecodeOptions, Decoder};
use cdc_core::mirror::{MirrorChange, mirror_change};
use cdc_core::tables::SourceTable;
use cdc_lambda::sqs::message::{Message, MessageId};
use cdc_tools::capture::debezium::Converter;
use cdc_tools::capture::wal2json::Record;
use serde_json::json;

/// The Lambda invocation payload limit, and what one SQS record adds around its body.
pub(crate) const PAYLOAD_LIMIT: usize = 6 * 1024 * 1024;
pub(crate) const RECORD_ENVELOPE: usize = 900;

/// The processing time every event reports (top-level `ts_ms`).
pub(crate) const NOW_US: i64 = 1_763_777_672_000_000;

/// The benchmarks' ClickHouse: `CLICKHOUSE_URL` (the loopback when unset: benchmarks run next to
/// their server), `CLICKHOUSE_USER`, `CLICKHOUSE_PASSWORD`, and the given database.
pub(crate) fn clickhouse_settings(database: &str) -> cdc_clickhouse::config::ClickHouseSettings {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    cdc_clickhouse::config::ClickHouseSettings::new(
        var("CLICKHOUSE_URL").unwrap_or_else(|| "http://127.0.0.1:8123".into()),
        var("CLICKHOUSE_USER").unwrap_or_else(|| "default".into()),
        var("CLICKHOUSE_PASSWORD").unwrap_or_default(),
        database,
    )
}

pub(crate) fn wal2json_record(
    lsn: u64,
    xid: u64,
    table: &str,
    columns: serde_json::Value,
    identity: Option<serde_json::Value>,
) -> String {
    let action = if identity.is_some() { "U" } else { "I" };
    let mut record = json!({
        "action": action, "xid": xid, "timestamp": "2026-11-22 02:14:32.020628+00",
        "lsn": format!("{:X}/{:X}", lsn >> 32, lsn & 0xffff_ffff), "schema": "public", "table": table,
        "columns": columns, "pk": [{"name": "id", "type": "bigint"}],
    });
    if let Some(identity) = identity {
        record["identity"] = identity;
    }
    record.to_string()
}

/// The old key of an update (REPLICA IDENTITY DEFAULT).
pub(crate) fn identity(id: i64) -> serde_json::Value {
    json!([{"name": "id", "type": "bigint", "value": id}])
}

/// A NUMERIC value as wal2json prints it (a JSON number with the column's scale).
pub(crate) fn money(cents: i64) -> serde_json::Value {
    serde_json::from_str(&format!("{}.{:02}", cents / 100, cents % 100)).expect("number")
}

pub(crate) fn col(name: &str, ty: &str, value: serde_json::Value) -> serde_json::Value {
    json!({"name": name, "type": ty, "value": value, "optional": name != "id"})
}

pub(crate) fn timestamp() -> serde_json::Value {
    json!("2025-03-14 09:26:53.589793+00")
}

/// The columns of a `customers` row as wal2json prints them.
pub(crate) fn customer_columns(id: i64, city_variant: usize) -> serde_json::Value {
    let n = id as usize + city_variant;
    json!([
        col("id", "bigint", json!(id)),
        col("email", "text", json!(format!("customer{id}@example.com"))),
        col("name", "text", json!(format!("Customer Number {id}"))),
        col("country", "text", json!(["PT", "DE", "US", "JP"][n % 4])),
        col("city", "text", json!(["Porto", "Berlin", "Austin", "Osaka"][n % 4])),
        col("created_at", "timestamp with time zone", timestamp())
    ])
}

/// The columns of a `products` row as wal2json prints them.
pub(crate) fn product_columns(id: i64, price_cents: i64) -> serde_json::Value {
    json!([
        col("id", "bigint", json!(id)),
        col("name", "text", json!(format!("Product {id} Deluxe"))),
        col("category", "text", json!(["kitchen", "garden", "toys", "books", "office"][id as usize % 5])),
        col("price", "numeric(12,2)", money(price_cents)),
        col("created_at", "timestamp with time zone", timestamp())
    ])
}

/// The columns of an `orders` row as wal2json prints them.
pub(crate) fn order_columns(order_id: i64, customer_id: i64, status: &str) -> serde_json::Value {
    json!([
        col("id", "bigint", json!(order_id)),
        col("customer_id", "bigint", json!(customer_id)),
        col("order_date", "timestamp with time zone", timestamp()),
        col("status", "text", json!(status)),
        col("total", "numeric(14,2)", money(12_050))
    ])
}

/// The columns of an `order_items` row as wal2json prints them.
pub(crate) fn item_columns(
    item_id: i64,
    order_id: i64,
    product_id: i64,
    quantity: i64,
    price_cents: i64,
) -> serde_json::Value {
    json!([
        col("id", "bigint", json!(item_id)),
        col("order_id", "bigint", json!(order_id)),
        col("product_id", "bigint", json!(product_id)),
        col("quantity", "integer", json!(quantity)),
        col("price", "numeric(12,2)", money(price_cents))
    ])
}

/// wal2json records in, Debezium bodies (with schema blocks) out.
pub(crate) struct Bodies {
    converter: Converter,
    pub bodies: Vec<String>,
}

impl Bodies {
    pub(crate) fn new(capacity: usize) -> Self {
        Self { converter: Converter::new("oltp", "oltp"), bodies: Vec::with_capacity(capacity) }
    }

    pub(crate) fn push(&mut self, record: &str) {
        let record: Record<'_> = serde_json::from_str(record).expect("wal2json record");
        for event in self.converter.convert(&record, NOW_US).expect("convert") {
            self.bodies.push(event.body);
        }
    }
}

/// Cuts bodies into batches no larger than one Lambda payload (bodies JSON-escaped inside the SQS
/// event, plus each record's envelope): the index ranges of the batches.
pub(crate) fn batch_ranges(bodies: &[String]) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let (mut start, mut size) = (0usize, 0usize);
    for (i, body) in bodies.iter().enumerate() {
        let cost = serde_json::to_string(body).map(|s| s.len()).unwrap_or(body.len()) + RECORD_ENVELOPE;
        if size + cost > PAYLOAD_LIMIT && i > start {
            out.push(start..i);
            start = i;
            size = 0;
        }
        size += cost;
    }
    if start < bodies.len() {
        out.push(start..bodies.len());
    }
    out
}

/// The batches as pipeline messages.
pub(crate) fn batches(bodies: &[String]) -> Vec<Vec<Message>> {
    batch_ranges(bodies)
        .into_iter()
        .map(|range| {
            range
                .map(|i| Message {
                    id: MessageId::new(format!("bench-{i}")).expect("id"),
                    body: bodies[i].clone(),
                    receive_count: 1,
                    group_id: None,
                    receipt_handle: None,
                    source_arn: None,
                    sent_at_ms: None,
                })
                .collect()
        })
        .collect()
}

/// One batch as the SQS event Lambda hands the function (`aws_lambda_events::sqs::SqsEvent`).
pub(crate) fn sqs_event_json(batch: &[Message]) -> String {
    let records: Vec<serde_json::Value> = batch
        .iter()
        .map(|m| {
            json!({"messageId": m.id.as_str(), "receiptHandle": "AQEB", "body": m.body,
            "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "1763777672000"},
            "messageAttributes": {}, "md5OfBody": "", "eventSource": "aws:sqs",
            "eventSourceARN": "arn:aws:sqs:us-east-1:000000000000:cdc-events", "awsRegion": "us-east-1"})
        })
        .collect();
    json!({ "Records": records }).to_string()
}

/// Pre-encodes one batch's mirror rows per table, as the pipeline would write them: (table,
/// RowBinary bytes, row count).
pub(crate) fn encoded_mirror_rows<'a>(
    bodies: impl IntoIterator<Item = &'a str>,
    dialect: Dialect,
) -> Vec<(SourceTable, Vec<u8>, usize)> {
    let decoder = Decoder::new(DecodeOptions::default());
    let mut per_table: Vec<(SourceTable, Vec<u8>, usize)> =
        SourceTable::ALL.iter().map(|t| (*t, Vec::new(), 0)).collect();
    for body in bodies {
        let Ok(Decoded::Change(event)) = decoder.decode(body) else { continue };
        let Some(table) = event.mirror.sales() else { continue };
        if let Ok(MirrorChange::Rows(rows)) = mirror_change(table, &event) {
            let slot = per_table.iter_mut().find(|(t, _, _)| *t == table).expect("table");
            for row in rows {
                rowbinary::encode_mirror_row(&mut slot.1, dialect, &row);
                slot.2 += 1;
            }
        }
    }
    per_table
}

/// Runs every batch through the pipeline, one invocation each, and returns the elapsed time;
/// every event must be delivered.
pub(crate) async fn process_all(
    pipeline: &cdc_lambda::pipeline::Pipeline,
    batches: &[Vec<Message>],
) -> std::time::Duration {
    use cdc_lambda::pipeline::Process;
    let deadline = || std::time::Instant::now() + std::time::Duration::from_secs(300);
    let started = std::time::Instant::now();
    let mut failures = 0usize;
    for batch in batches {
        let reports = pipeline.process(batch, deadline()).await.expect("no systemic fault");
        failures += reports.iter().filter(|r| r.outcome.is_failure()).count();
    }
    assert_eq!(failures, 0, "every benchmark event must be delivered");
    started.elapsed()
}

/// Inserts one batch's pre-encoded mirror rows (from [`encoded_mirror_rows`]) raw, one INSERT per
/// table that has rows; returns the statements sent.
pub(crate) async fn insert_mirror_rows(
    warehouse: &cdc_clickhouse::Warehouse,
    tables: &[(SourceTable, Vec<u8>, usize)],
) -> usize {
    let mut statements = 0;
    for (table, rows, count) in tables {
        if *count > 0 {
            let columns = cdc_clickhouse::schema::mirror_columns(table.spec());
            warehouse
                .insert_rowbinary(table.name(), &columns, bytes::Bytes::from(rows.clone()))
                .await
                .expect("raw insert");
            statements += 1;
        }
    }
    statements
}
