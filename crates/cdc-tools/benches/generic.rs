//! Throughput of a generic mirror through the local ClickHouse (docs/generic-mirrors.md).
//!
//! Corpus: Debezium events WITH schema blocks of one non-sales table with ten columns of the
//! usual logical types (numeric(12,4), timestamptz, jsonb, uuid, text[], boolean, float8, date,
//! text), made by the project's capture encoder from wal2json records: 80% inserts, 20% updates.
//! Batches cut at the 6 MB Lambda payload limit.
//!
//! Prints, measured in the same run:
//! - end to end: decode → generic rows → table created / columns checked → one INSERT per batch;
//! - ceiling: the same rows, pre-encoded, inserted raw into a copy of the table, one INSERT per
//!   batch; and the ratio between the two;
//! - decode alone (the same bodies through the decoder and `generic_change`, no ClickHouse): how
//!   much of the end-to-end time is spent before any row leaves the process.
//!
//! Run: `scripts/clickhouse.sh start && cargo bench --bench generic` (BENCH_EVENTS to change the
//! corpus size; CLICKHOUSE_URL for another server).

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use cdc_clickhouse::RawSql;
use cdc_clickhouse::Warehouse;
use cdc_clickhouse::generic_values::encode_row;
use cdc_core::change::Decoded;
use cdc_core::decode::{DecodeOptions, Decoder};
use cdc_core::generic::{GenericChange, generic_change};
use cdc_core::tables::{MirrorTarget, TableMapping};
use cdc_lambda::pipeline::Pipeline;
use common::{Bodies, batches, col, process_all, wal2json_record};
use serde_json::json;

const MAPPING: &str = "public.catalog_extras";

fn columns(id: i64, version: i64) -> serde_json::Value {
    json!([
        col("id", "bigint", json!(id)),
        col("price", "numeric(12,4)", json!(format!("{}.{:04}", id % 1000, (id * 7 + version) % 10_000))),
        col("seen_at", "timestamp with time zone", json!("2026-11-22 02:14:32.019849+00")),
        col("attrs", "jsonb", json!(format!("{{\"size\": {}, \"colour\": \"blue\"}}", id % 9))),
        col("ref", "uuid", json!(format!("8c2d6b1e-3f4a-4b5c-9d6e-{:012x}", id))),
        col("tags", "text[]", json!(format!("{{alpha,\"b c\",v{version}}}"))),
        col("flag", "boolean", json!(id % 2 == 0)),
        col("ratio", "double precision", json!(id as f64 / 7.0)),
        col("day", "date", json!("2026-11-22")),
        col("note", "text", json!(format!("note {id} revision {version}"))),
    ])
}

fn corpus(events: usize) -> Vec<String> {
    let mut out = Bodies::new(events);
    let mut lsn = 0x2_0000_0000u64;
    let mut next_id = 0i64;
    let mut n = 0u64;
    while out.bodies.len() < events {
        n += 1;
        lsn += 0x1a8;
        let record = if n.is_multiple_of(5) && next_id > 0 {
            let id = (n as i64 * 7919) % next_id + 1;
            let identity = json!([{"name": "id", "type": "bigint", "value": id}]);
            wal2json_record(lsn, 10_000 + n, "catalog_extras", columns(id, n as i64), Some(identity))
        } else {
            next_id += 1;
            wal2json_record(lsn, 10_000 + n, "catalog_extras", columns(next_id, 0), None)
        };
        out.push(&record);
    }
    let mut bodies = out.bodies;
    bodies.truncate(events);
    bodies
}

#[tokio::main]
async fn main() {
    let events: usize = std::env::var("BENCH_EVENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000);
    let bodies = corpus(events);
    let bytes: usize = bodies.iter().map(String::len).sum();
    let batches = batches(&bodies);
    println!(
        "corpus: {} Debezium events of one generic table, {:.1} MB, {} batches of <= 6 MB",
        bodies.len(),
        bytes as f64 / 1e6,
        batches.len()
    );
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let (e2e_db, raw_db) = (format!("bench_generic_{stamp}"), format!("bench_generic_raw_{stamp}"));
    let settings = common::clickhouse_settings;
    let options = DecodeOptions { tables: TableMapping::parse(MAPPING).expect("mapping"), ..DecodeOptions::default() };
    let pipeline = Pipeline::new(options.clone(), Warehouse::new(&settings(&e2e_db)));
    let deadline = || Instant::now() + Duration::from_secs(300);
    pipeline.migrate(deadline()).await.expect("ClickHouse must be running: scripts/clickhouse.sh start");
    let dialect = pipeline.warehouse().dialect().await.expect("dialect");

    let e2e = process_all(&pipeline, &batches).await;
    let statements = pipeline.warehouse().statements_sent();

    // The ceiling: the same rows, encoded beforehand against the table's columns, into a copy.
    let warehouse = pipeline.warehouse();
    let Some(MirrorTarget::Generic(table)) = options.tables.table(None, "public", "catalog_extras").cloned() else {
        panic!("the mapping captures catalog_extras as a generic mirror")
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let columns = warehouse.generic_table(&table, &[], &[], deadline).await.expect("columns");
    warehouse.execute(&format!("CREATE DATABASE IF NOT EXISTS {raw_db}")).await.expect("raw db");
    warehouse
        .execute(&format!("CREATE TABLE {raw_db}.catalog_extras AS {e2e_db}.catalog_extras"))
        .await
        .expect("raw table");
    let raw = Warehouse::new(&settings(&raw_db));
    let decoder = Decoder::new(options.clone());
    let mut prepared = Vec::with_capacity(batches.len());
    for batch in &batches {
        let mut out = Vec::new();
        for message in batch {
            let Ok(Decoded::Change(event)) = decoder.decode(&message.body) else { panic!("a change") };
            let Ok(GenericChange::Rows(rows)) = generic_change(&table, &event) else { panic!("rows") };
            for row in &rows {
                encode_row(&mut out, dialect, &columns, row).expect("encodable");
            }
        }
        prepared.push(Bytes::from(out));
    }
    let names: Vec<&str> = columns.iter().map(|c| c.name.as_str()).chain(["_version", "_is_deleted"]).collect();
    let started = Instant::now();
    for rows in &prepared {
        raw.insert_rowbinary("catalog_extras", &names, rows.clone()).await.expect("raw insert");
    }
    let ceiling = started.elapsed();

    let decoder = Decoder::new(options.clone());
    let started = Instant::now();
    let mut rows = 0usize;
    for body in &bodies {
        if let Ok(Decoded::Change(event)) = decoder.decode(body)
            && let Ok(GenericChange::Rows(changed)) = generic_change(&table, &event)
        {
            rows += changed.len();
        }
    }
    let decode = started.elapsed();
    assert_eq!(rows, bodies.len(), "one row per event");

    let rate = |d: Duration| bodies.len() as f64 / d.as_secs_f64();
    println!("decode alone: {:.0} events/s ({:.2} s)", rate(decode), decode.as_secs_f64());
    println!("end to end: {:.0} events/s ({:.2} s, {statements} statements)", rate(e2e), e2e.as_secs_f64());
    println!(
        "raw insert ceiling (same rows, pre-encoded): {:.0} events/s ({:.2} s)",
        rate(ceiling),
        ceiling.as_secs_f64()
    );
    println!("ratio end-to-end / ceiling: {:.2}", ceiling.as_secs_f64() / e2e.as_secs_f64());
    for db in [e2e_db, raw_db] {
        let _ = warehouse.execute(&format!("DROP DATABASE IF EXISTS {db}")).await;
    }
}
