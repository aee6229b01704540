//! End-to-end throughput and memory of the processor through the local ClickHouse.
//!
//! Corpus: 100,000 Debezium events WITH schema blocks, made by the project's own capture encoder
//! (`capture::debezium::Converter`) from wal2json records: customers, products, orders with their
//! items, and status/price updates. Batches are cut at the 6 MB Lambda payload limit (bodies
//! JSON-escaped inside the SQS event, plus each record's envelope).
//!
//! Prints, measured in the same run:
//! - end to end: decode → mirrors → fact derivation → inserts, events/s;
//! - ceiling: the same mirror and fact rows, pre-encoded, inserted raw (one INSERT per table per
//!   batch, as the pipeline does), events/s, and the ratio between the two;
//! - peak RSS of `cdc-tools invoke` on one 6 MB batch (a fresh process, as a Lambda).
//!
//! Run: `scripts/clickhouse.sh start && cargo bench --bench pipeline` (BENCH_EVENTS to change the
//! corpus size).

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use cdc_clickhouse::RawSql;
use cdc_clickhouse::config::ClickHouseSettings;
use cdc_clickhouse::schema;
use cdc_clickhouse::{Warehouse, rowbinary};
use cdc_core::decode::DecodeOptions;
use cdc_lambda::pipeline::Pipeline;
use cdc_lambda::sqs::message::Message;
use common::{
    Bodies, batches, customer_columns, encoded_mirror_rows, identity, insert_mirror_rows, item_columns, order_columns,
    process_all, product_columns, sqs_event_json, wal2json_record,
};

/// Realistic Debezium bodies: ~10% dimensions, orders with 1-4 items, ~15% updates.
fn corpus(events: usize) -> Vec<String> {
    let mut out = Bodies::new(events);
    let mut lsn = 0x1_6000_0000u64;
    let (customers, products) = (2_000i64, 500i64);
    let mut n = 0u64;
    while out.bodies.len() < events {
        n += 1;
        lsn += 0x1a8;
        let xid = 10_000 + n;
        let record = if (n as i64) <= customers {
            wal2json_record(lsn, xid, "customers", customer_columns(n as i64, 0), None)
        } else if (n as i64) <= customers + products {
            let id = n as i64 - customers;
            wal2json_record(lsn, xid, "products", product_columns(id, (id * 37) % 20_000 + 100), None)
        } else if n.is_multiple_of(7) {
            // An order status update.
            let order_id = (n as i64 % 5_000) + 1;
            let columns = order_columns(order_id, order_id % customers + 1, "shipped");
            wal2json_record(lsn, xid, "orders", columns, Some(identity(order_id)))
        } else if n.is_multiple_of(3) {
            let order_id = n as i64;
            wal2json_record(lsn, xid, "orders", order_columns(order_id, order_id % customers + 1, "pending"), None)
        } else {
            let item_id = n as i64;
            let order_id = n as i64 - (n as i64 % 3);
            let columns = item_columns(item_id, order_id, item_id % products + 1, item_id % 5 + 1, 1_999);
            wal2json_record(lsn, xid, "order_items", columns, None)
        };
        out.push(&record);
    }
    let mut bodies = out.bodies;
    bodies.truncate(events);
    bodies
}

fn settings(database: &str) -> ClickHouseSettings {
    common::clickhouse_settings(database)
}

fn peak_rss_of_invoke(batch: &[Message], database: &str) -> Option<(u64, usize)> {
    let payload = sqs_event_json(batch);
    let path = std::env::temp_dir().join("cdc-bench-6mb-batch.json");
    std::fs::write(&path, &payload).ok()?;
    // The child's own high-water mark (VmHWM), read from /proc while it runs: getrusage's
    // children figure would include this (large) process's pages, inherited at spawn.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_cdc-tools"))
        .arg("invoke")
        .arg(&path)
        .env("CLICKHOUSE_DATABASE", database)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    let status_path = format!("/proc/{}/status", child.id());
    let mut peak_kib = 0u64;
    let status = loop {
        if let Ok(text) = std::fs::read_to_string(&status_path)
            && let Some(kib) = text
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        {
            peak_kib = peak_kib.max(kib);
        }
        if let Some(status) = child.try_wait().ok()? {
            break status;
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    if !status.success() {
        return None;
    }
    Some((peak_kib * 1024, payload.len()))
}

#[tokio::main]
async fn main() {
    if std::env::var_os("RUST_LOG").is_some() {
        cdc_lambda::telemetry::init_logging(cdc_lambda::config::log_filter());
    }
    let events: usize = std::env::var("BENCH_EVENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000);
    let started = Instant::now();
    let bodies = corpus(events);
    let bytes: usize = bodies.iter().map(String::len).sum();
    let batches = batches(&bodies);
    println!(
        "corpus: {} Debezium events with schema blocks, {:.1} MB, {:.0} bytes/event avg, {} batches of <= 6 MB (avg {} events), built in {:.1?}",
        bodies.len(),
        bytes as f64 / 1e6,
        bytes as f64 / bodies.len() as f64,
        batches.len(),
        bodies.len() / batches.len(),
        started.elapsed()
    );

    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let e2e_db = format!("bench_e2e_{stamp}");
    let raw_db = format!("bench_raw_{stamp}");
    let pipeline = Pipeline::new(DecodeOptions::default(), Warehouse::new(&settings(&e2e_db)));
    let deadline = || Instant::now() + Duration::from_secs(300);
    pipeline.migrate(deadline()).await.expect("ClickHouse must be running: scripts/clickhouse.sh start");
    let dialect = pipeline.warehouse().dialect().await.expect("dialect");

    // End to end.
    let e2e = process_all(&pipeline, &batches).await;
    let statements = pipeline.warehouse().statements_sent();

    // Ceiling: the same rows, pre-encoded, inserted raw.
    let raw = Pipeline::new(DecodeOptions::default(), Warehouse::new(&settings(&raw_db)));
    raw.migrate(deadline()).await.expect("migrate raw");
    let facts_tsv =
        pipeline.warehouse().fetch_tsv(&format!("SELECT count() FROM {e2e_db}.sales_fact")).await.expect("count facts");
    let fact_rows: usize = facts_tsv.trim().parse().unwrap_or(0);
    let mut prepared = Vec::new();
    for batch in &batches {
        prepared.push(encoded_mirror_rows(batch.iter().map(|m| m.body.as_str()), dialect));
    }
    // Facts: as many rows as the pipeline wrote, spread over the batches like the pipeline did.
    let fact = cdc_core::fact::FactRow {
        order_item_id: 1,
        customer_name: "Customer Number 1".into(),
        product_name: "Product 1 Deluxe".into(),
        ..Default::default()
    };
    let facts_per_batch = fact_rows.div_ceil(batches.len().max(1));
    let mut fact_bytes = Vec::new();
    for i in 0..facts_per_batch {
        rowbinary::encode_fact_row(
            &mut fact_bytes,
            dialect,
            &cdc_core::fact::FactRow { order_item_id: i as i64, ..fact.clone() },
        );
    }
    let fact_bytes = Bytes::from(fact_bytes);
    let started = Instant::now();
    for tables in &prepared {
        insert_mirror_rows(raw.warehouse(), tables).await;
        raw.warehouse()
            .insert_rowbinary(schema::FACT_TABLE, &schema::fact_column_names(), fact_bytes.clone())
            .await
            .expect("raw facts");
    }
    let ceiling = started.elapsed();

    let rate = |d: Duration| bodies.len() as f64 / d.as_secs_f64();
    println!(
        "end to end: {:.0} events/s ({:.2} s, {:.1} MB/s of bodies, {} statements, {} facts written)",
        rate(e2e),
        e2e.as_secs_f64(),
        bytes as f64 / 1e6 / e2e.as_secs_f64(),
        statements,
        fact_rows
    );
    println!(
        "raw insert ceiling (same rows, pre-encoded): {:.0} events/s ({:.2} s)",
        rate(ceiling),
        ceiling.as_secs_f64()
    );
    println!("ratio end-to-end / ceiling: {:.2}", ceiling.as_secs_f64() / e2e.as_secs_f64());

    match batches.first().and_then(|b| peak_rss_of_invoke(b, &e2e_db)) {
        Some((rss, payload)) => println!(
            "peak RSS of `cdc-tools invoke` on one {:.2} MB batch ({} events): {:.1} MiB",
            payload as f64 / 1e6,
            batches[0].len(),
            rss as f64 / 1024.0 / 1024.0
        ),
        None => println!("peak RSS: the invoke run failed"),
    }
    for db in [e2e_db, raw_db] {
        let _ = pipeline.warehouse().execute(&format!("DROP DATABASE IF EXISTS {db}")).await;
    }
}
