//! The scale benchmark's Rust half; `scripts/bench_scale.sh` drives it (seeding, runs, figures).
//!
//! `corpus DIR`: writes the corpus as SQS event files `DIR/batch-NNN.json` (the shape Lambda hands
//! the function, as `events/*.json`), cut at the 6 MB payload limit. Debezium events WITH schema
//! blocks, made by the project's own capture encoder from wal2json records, shaped like production
//! traffic against an existing warehouse of `BENCH_CUSTOMERS` customers, `BENCH_PRODUCTS` products,
//! `BENCH_ORDERS` orders and `BENCH_ITEMS` order items (ids 1..=N, as the script seeds them):
//! - new orders (customers drawn from the existing ones) with 1-5 items each (existing products),
//!   order and item ids above the seeded ranges;
//! - `BENCH_PCT_STATUS_UPDATES` (10) % of the events: order status updates, half of them of seeded
//!   orders, half of orders created earlier in the corpus;
//! - `BENCH_PCT_CUSTOMER_UPDATES` (1) %: updates of existing customers (city and country);
//! - `BENCH_PCT_PRODUCT_UPDATES` (0.1) %: updates of existing products (price).
//!
//! `BENCH_EVENTS` (80,000) events in all, deterministic (fixed seed). A seeded order `o` belongs to
//! customer `(o - 1) % BENCH_CUSTOMERS + 1`, so status updates never move an order.
//!
//! `ceiling DIR DATABASE FACTS`: the raw-insert ceiling of the same rows. Decodes the files' bodies
//! into mirror rows and pre-encodes them (RowBinary), with FACTS fact rows spread evenly over the
//! batches, then inserts them raw into DATABASE (created here), one INSERT per table per batch,
//! timed. Prints `key=value` lines.
//!
//! Without arguments (e.g. a plain `cargo bench`) it only says how to run the benchmark.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cdc_clickhouse::RawSql;
use cdc_clickhouse::schema;
use cdc_clickhouse::{Warehouse, rowbinary};
use cdc_core::decode::DecodeOptions;
use cdc_core::fact::FactRow;
use cdc_lambda::pipeline::Pipeline;
use common::{
    Bodies, batches, customer_columns, encoded_mirror_rows, identity, insert_mirror_rows, item_columns, order_columns,
    product_columns, sqs_event_json, wal2json_record,
};

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.trim().replace('_', "").parse().ok()).unwrap_or(default)
}

/// splitmix64: a fixed-seed generator, so every run writes the same corpus.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in 1..=n.
    fn id(&mut self, n: i64) -> i64 {
        (self.next() % n.max(1) as u64) as i64 + 1
    }
}

/// A product's list price in cents, as the script seeds it.
fn list_price(product_id: i64) -> i64 {
    (product_id * 37) % 20_000 + 100
}

#[derive(Default)]
struct Mix {
    new_orders: usize,
    new_items: usize,
    status_seeded: usize,
    status_recent: usize,
    customer_updates: usize,
    product_updates: usize,
}

fn corpus(events: usize) -> (Vec<String>, Mix) {
    let customers: i64 = env_or("BENCH_CUSTOMERS", 500_000);
    let products: i64 = env_or("BENCH_PRODUCTS", 50_000);
    let orders: i64 = env_or("BENCH_ORDERS", 3_000_000);
    let items: i64 = env_or("BENCH_ITEMS", 10_000_000);
    let pct_status: f64 = env_or("BENCH_PCT_STATUS_UPDATES", 10.0);
    let pct_customer: f64 = env_or("BENCH_PCT_CUSTOMER_UPDATES", 1.0);
    let pct_product: f64 = env_or("BENCH_PCT_PRODUCT_UPDATES", 0.1);

    let mut out = Bodies::new(events + 8);
    let mut mix = Mix::default();
    let mut rng = Rng(0x5ca1_ab1e);
    let (mut next_order, mut next_item) = (orders + 1, items + 1);
    // Orders created in this corpus, (id, customer), for status updates of recent orders.
    let mut recent: Vec<(i64, i64)> = Vec::new();
    let mut lsn = 0x1_6000_0000u64;
    let mut xid = 10_000u64;
    let statuses = ["paid", "shipped", "delivered"];
    while out.bodies.len() < events {
        xid += 1;
        let done = out.bodies.len() as f64;
        let behind = |count: usize, pct: f64| (count as f64) < done * pct / 100.0;
        let mut emit = |out: &mut Bodies, table: &str, columns, identity| {
            lsn += 0x1a8;
            out.push(&wal2json_record(lsn, xid, table, columns, identity));
        };
        if behind(mix.product_updates, pct_product) {
            let id = rng.id(products);
            let price = list_price(id) + 10 * (1 + (rng.next() % 9) as i64);
            emit(&mut out, "products", product_columns(id, price), Some(identity(id)));
            mix.product_updates += 1;
        } else if behind(mix.customer_updates, pct_customer) {
            let id = rng.id(customers);
            let moved = 1 + (rng.next() % 3) as usize;
            emit(&mut out, "customers", customer_columns(id, moved), Some(identity(id)));
            mix.customer_updates += 1;
        } else if behind(mix.status_seeded + mix.status_recent, pct_status) {
            let status = statuses[(rng.next() % 3) as usize];
            let (id, customer) = if recent.is_empty() || mix.status_seeded <= mix.status_recent {
                mix.status_seeded += 1;
                let id = rng.id(orders);
                (id, (id - 1) % customers.max(1) + 1)
            } else {
                mix.status_recent += 1;
                // Among the last 2,000 orders: recent orders are the ones that move.
                let window = recent.len().min(2_000);
                recent[recent.len() - 1 - (rng.next() as usize % window)]
            };
            emit(&mut out, "orders", order_columns(id, customer, status), Some(identity(id)));
        } else {
            // A new order and its items, in one transaction.
            let (order_id, customer) = (next_order, rng.id(customers));
            next_order += 1;
            emit(&mut out, "orders", order_columns(order_id, customer, "pending"), None);
            recent.push((order_id, customer));
            mix.new_orders += 1;
            for _ in 0..1 + rng.next() % 5 {
                let product = rng.id(products);
                let quantity = 1 + (rng.next() % 5) as i64;
                emit(
                    &mut out,
                    "order_items",
                    item_columns(next_item, order_id, product, quantity, list_price(product)),
                    None,
                );
                next_item += 1;
                mix.new_items += 1;
            }
        }
    }
    (out.bodies, mix)
}

fn write_corpus(dir: &Path) {
    let events: usize = env_or("BENCH_EVENTS", 80_000);
    let started = Instant::now();
    let (bodies, mix) = corpus(events);
    let bytes: usize = bodies.iter().map(String::len).sum();
    let batches = batches(&bodies);
    std::fs::create_dir_all(dir).expect("corpus directory");
    for (n, batch) in batches.iter().enumerate() {
        let path = dir.join(format!("batch-{n:03}.json"));
        std::fs::write(&path, sqs_event_json(batch)).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
    println!("events={}", bodies.len());
    println!("batches={}", batches.len());
    println!("body_bytes={bytes}");
    println!("new_orders={}", mix.new_orders);
    println!("new_items={}", mix.new_items);
    println!("status_updates_seeded={}", mix.status_seeded);
    println!("status_updates_recent={}", mix.status_recent);
    println!("customer_updates={}", mix.customer_updates);
    println!("product_updates={}", mix.product_updates);
    println!("built_seconds={:.2}", started.elapsed().as_secs_f64());
}

/// The bodies of every `batch-*.json` in `dir`, batch by batch, in name order.
fn read_batches(dir: &Path) -> Vec<Vec<String>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("corpus directory")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("batch-") && n.ends_with(".json"))
        })
        .collect();
    files.sort();
    files
        .iter()
        .map(|path| {
            let text = std::fs::read_to_string(path).expect("batch file");
            let event: serde_json::Value = serde_json::from_str(&text).expect("SQS event JSON");
            event["Records"]
                .as_array()
                .expect("Records")
                .iter()
                .map(|r| r["body"].as_str().expect("body").to_string())
                .collect()
        })
        .collect()
}

async fn ceiling(dir: &Path, database: &str, facts: usize) {
    let settings = common::clickhouse_settings(database);
    let raw = Pipeline::new(DecodeOptions::default(), Warehouse::new(&settings));
    raw.migrate(Instant::now() + Duration::from_secs(120)).await.expect("ClickHouse: migrate the ceiling database");
    let dialect = raw.warehouse().dialect().await.expect("dialect");
    let batches = read_batches(dir);
    let prepared: Vec<_> =
        batches.iter().map(|bodies| encoded_mirror_rows(bodies.iter().map(String::as_str), dialect)).collect();
    let mirror_rows: usize = prepared.iter().flat_map(|tables| tables.iter().map(|(_, _, n)| n)).sum();
    // Facts: as many rows as the processor wrote, spread over the batches.
    let per_batch = facts.div_ceil(batches.len().max(1));
    let template = FactRow {
        customer_name: "Customer Number 1".into(),
        product_name: "Product 1 Deluxe".into(),
        order_status: "pending".into(),
        customer_country: "PT".into(),
        customer_city: "Porto".into(),
        product_category: "toys".into(),
        ..Default::default()
    };
    let mut fact_bytes = Vec::new();
    for i in 0..per_batch {
        let row = FactRow { order_item_id: i as i64 + 1, order_id: i as i64 / 3 + 1, ..template.clone() };
        rowbinary::encode_fact_row(&mut fact_bytes, dialect, &row);
    }
    let fact_bytes = Bytes::from(fact_bytes);
    let mut statements = 0usize;
    let started = Instant::now();
    let mut facts_left = facts;
    for tables in &prepared {
        statements += insert_mirror_rows(raw.warehouse(), tables).await;
        let n = per_batch.min(facts_left);
        if n > 0 {
            // A prefix of the pre-encoded rows: every fact row of the template has the same size.
            let bytes = fact_bytes.slice(..fact_bytes.len() / per_batch * n);
            raw.warehouse()
                .insert_rowbinary(schema::FACT_TABLE, &schema::fact_column_names(), bytes)
                .await
                .expect("raw facts");
            statements += 1;
            facts_left -= n;
        }
    }
    let elapsed = started.elapsed();
    println!("ceiling_seconds={:.3}", elapsed.as_secs_f64());
    println!("mirror_rows={mirror_rows}");
    println!("fact_rows={facts}");
    println!("statements={statements}");
}

#[tokio::main]
async fn main() {
    // `cargo bench` passes `--bench`; anything starting with `--` is the harness's, not ours.
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["corpus", dir] => write_corpus(Path::new(dir)),
        ["ceiling", dir, database, facts] => {
            ceiling(Path::new(dir), database, facts.parse().expect("FACTS: a row count")).await
        }
        _ => println!("scale: run `scripts/bench_scale.sh` (seeds ClickHouse, runs the processor and the Python peer)"),
    }
}
