//! Randomized convergence: generated histories on all four tables, delivered in shuffled,
//! duplicated, redelivered batches by two concurrent invocations, must leave `sales_fact` equal to
//! the oracle join. A failure prints its seed; replay one with `CONVERGENCE_SEED=<seed>`.

use std::sync::Arc;

use cdc_clickhouse::Warehouse;
use cdc_clickhouse::dialect::Dialect;
use cdc_core::decode::DecodeOptions;
use cdc_lambda::pipeline::{Pipeline, Process};
use cdc_lambda::sqs::message::{Message, MessageOutcome};
use futures::StreamExt;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};

use crate::support::*;

const SCHEDULES: u64 = 120;
const HISTORIES: u64 = 40;
const PARALLEL_SCHEDULES: usize = 4;

const COUNTRIES: [&str; 4] = ["UK", "FR", "DE", "US"];
const CITIES: [&str; 4] = ["London", "Paris", "Berlin", "Austin"];
const CATEGORIES: [&str; 3] = ["Home", "Garden", "Toys"];
const STATUSES: [&str; 4] = ["pending", "paid", "shipped", "cancelled"];

/// A history of changes: inserts, updates, deletes (with re-inserts of deleted keys), primary
/// key changes and truncations on all four tables; with `moves`, also foreign keys that move at
/// every level (an item to another order or product, an order to another customer) in about
/// 15% of the steps.
pub(crate) fn generate_history(seed: u64, moves: bool) -> SourceDb {
    generate(seed, moves, false)
}

/// [`generate_history`]; with `toast`, half the renames of customers and products keep the
/// name, which the update then carries as a TOAST placeholder.
pub(crate) fn generate(seed: u64, moves: bool, toast: bool) -> SourceDb {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut db = SourceDb { toast, ..SourceDb::default() };
    let mut next_id = 1i64;
    let mut id = || {
        next_id += 1;
        next_id
    };
    let customer = |rng: &mut StdRng, id: i64| Customer {
        id,
        email: format!("c{id}@example.com"),
        name: format!("Customer {}", rng.random_range(0..1000)),
        country: COUNTRIES[rng.random_range(0..4)].to_string(),
        city: CITIES[rng.random_range(0..4)].to_string(),
        created_at_us: 1_700_000_000_000_000 + rng.random_range(0..1_000_000_000),
    };
    let product = |rng: &mut StdRng, id: i64| Product {
        id,
        name: format!("Product {}", rng.random_range(0..1000)),
        category: CATEGORIES[rng.random_range(0..3)].to_string(),
        price_cents: rng.random_range(1..100_000),
        created_at_us: 1_700_000_000_000_000,
    };
    for _ in 0..3 {
        let c = customer(&mut rng, id());
        db.upsert_customer(c);
        let p = product(&mut rng, id());
        db.upsert_product(p);
    }
    if rng.random_bool(0.5) {
        // Snapshot meets stream: the rows so far existed before the replication slot, so the
        // stream does not carry them; the initial snapshot reads them at one position. A
        // transaction open at the snapshot's consistent point commits after it: the snapshot does
        // not see its changes, which are streamed with positions *below* the snapshot's.
        let order = Order {
            id: id(),
            customer_id: 2,
            order_date_us: 1_704_067_200_000_000,
            status: "pending".into(),
            total_cents: 500,
        };
        let (order_id, first_item, second_item) = (order.id, id(), id());
        db.upsert_order(order);
        db.upsert_item(Item { id: first_item, order_id, product_id: 3, quantity: 1, price_cents: 250 });
        db.upsert_item(Item { id: second_item, order_id, product_id: 5, quantity: 2, price_cents: 125 });
        db.forget_events();
        let before_open_transaction = db.clone();
        let mut c = db.customers[&2].clone();
        c.name = "Renamed in an open transaction".into();
        db.upsert_customer(c);
        let mut o = db.orders[&order_id].clone();
        o.status = "paid".into();
        db.upsert_order(o);
        db.delete("order_items", second_item);
        db.snapshot_of(&before_open_transaction);
    }
    let steps = rng.random_range(30..60);
    for _ in 0..steps {
        let pick = |rng: &mut StdRng, keys: Vec<i64>| keys.get(rng.random_range(0..keys.len().max(1))).copied();
        if moves && rng.random_bool(0.15) {
            let item = pick(&mut rng, db.items.keys().copied().collect());
            let order = pick(&mut rng, db.orders.keys().copied().collect());
            match rng.random_range(0..3) {
                0 => {
                    // A line moved to another order (which may not exist yet).
                    if let Some(k) = item {
                        let mut i = db.items[&k].clone();
                        i.order_id = order.filter(|o| *o != i.order_id).unwrap_or_else(&mut id);
                        db.upsert_item(i);
                    }
                }
                1 => {
                    // The product swapped on a line.
                    if let (Some(k), Some(p)) = (item, pick(&mut rng, db.products.keys().copied().collect())) {
                        let mut i = db.items[&k].clone();
                        i.product_id = p;
                        db.upsert_item(i);
                    }
                }
                _ => {
                    // An order reassigned to another customer.
                    if let (Some(k), Some(c)) = (order, pick(&mut rng, db.customers.keys().copied().collect())) {
                        let mut o = db.orders[&k].clone();
                        o.customer_id = c;
                        db.upsert_order(o);
                    }
                }
            }
            continue;
        }
        match rng.random_range(0..100) {
            0..=7 => {
                let c = customer(&mut rng, id());
                db.upsert_customer(c);
            }
            8..=13 => {
                let p = product(&mut rng, id());
                db.upsert_product(p);
            }
            14..=33 => {
                // A new order with its items; its customer or products may be missing for now.
                let customer_id = pick(&mut rng, db.customers.keys().copied().collect()).unwrap_or(1);
                let order = Order {
                    id: id(),
                    customer_id,
                    order_date_us: 1_704_067_200_000_000 + rng.random_range(0..86_400_000_000),
                    status: "pending".into(),
                    total_cents: rng.random_range(0..1_000_000),
                };
                let order_id = order.id;
                db.upsert_order(order);
                for _ in 0..rng.random_range(1..4) {
                    let product_id = pick(&mut rng, db.products.keys().copied().collect()).unwrap_or(2);
                    let item = Item {
                        id: id(),
                        order_id,
                        product_id,
                        quantity: rng.random_range(1..10),
                        price_cents: rng.random_range(1..100_000),
                    };
                    db.upsert_item(item);
                }
            }
            34..=43 => {
                if let Some(k) = pick(&mut rng, db.customers.keys().copied().collect()) {
                    let mut c = db.customers[&k].clone();
                    if !(db.toast && rng.random_bool(0.5)) {
                        c.name = format!("Renamed {}", rng.random_range(0..1000));
                    }
                    c.city = CITIES[rng.random_range(0..4)].to_string();
                    c.country = COUNTRIES[rng.random_range(0..4)].to_string();
                    db.upsert_customer(c);
                }
            }
            44..=53 => {
                if let Some(k) = pick(&mut rng, db.products.keys().copied().collect()) {
                    let mut p = db.products[&k].clone();
                    if !(db.toast && rng.random_bool(0.5)) {
                        p.name = format!("Renamed {}", rng.random_range(0..1000));
                    }
                    p.category = CATEGORIES[rng.random_range(0..3)].to_string();
                    db.upsert_product(p);
                }
            }
            54..=65 => {
                if let Some(k) = pick(&mut rng, db.orders.keys().copied().collect()) {
                    let mut o = db.orders[&k].clone();
                    o.status = STATUSES[rng.random_range(0..4)].to_string();
                    db.upsert_order(o);
                }
            }
            66..=73 => {
                if let Some(k) = pick(&mut rng, db.items.keys().copied().collect()) {
                    let mut i = db.items[&k].clone();
                    i.quantity = rng.random_range(1..20);
                    i.price_cents = rng.random_range(1..100_000);
                    db.upsert_item(i);
                }
            }
            74..=78 => {
                if let Some(k) = pick(&mut rng, db.items.keys().copied().collect()) {
                    db.delete("order_items", k);
                }
            }
            79..=81 => {
                if let Some(k) = pick(&mut rng, db.orders.keys().copied().collect()) {
                    db.delete("orders", k);
                }
            }
            82..=84 => {
                // Delete, and sometimes bring the same key back later (a re-insert must win
                // over a redelivered delete).
                if let Some(k) = pick(&mut rng, db.customers.keys().copied().collect()) {
                    let old = db.customers[&k].clone();
                    db.delete("customers", k);
                    if rng.random_bool(0.5) {
                        db.upsert_customer(Customer { name: "Returned".into(), ..old });
                    }
                }
            }
            85..=87 => {
                if let Some(k) = pick(&mut rng, db.products.keys().copied().collect()) {
                    db.delete("products", k);
                }
            }
            88..=93 => {
                // Primary-key change: Debezium sends delete (old key) + tombstone + create.
                if let Some(k) = pick(&mut rng, db.customers.keys().copied().collect()) {
                    let mut c = db.customers[&k].clone();
                    db.delete("customers", k);
                    c.id = id();
                    db.upsert_customer(c);
                }
            }
            94..=95 => {
                let table = ["customers", "products", "orders", "order_items"][rng.random_range(0..4)];
                db.truncate(table);
            }
            _ => {
                // An item arriving for an order that does not exist yet (or never will).
                let item = Item { id: id(), order_id: id(), product_id: 2, quantity: 1, price_cents: 100 };
                db.upsert_item(item);
            }
        }
    }
    db
}

/// One delivery schedule: duplicates (≥ 10%), a shuffle, random batch sizes, redelivered
/// batches, split over two workers that run concurrently.
pub(crate) fn schedule(seed: u64, events: &[String]) -> [Vec<Vec<Message>>; 2] {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed);
    let mut messages: Vec<Message> =
        events.iter().enumerate().map(|(i, b)| message(format!("m{i}"), b.clone())).collect();
    let duplicates = (events.len() / 10).max(1) + rng.random_range(0..=events.len() / 5);
    for d in 0..duplicates {
        let i = rng.random_range(0..events.len());
        messages.push(message(format!("m{i}-dup{d}"), events[i].clone()));
    }
    messages.shuffle(&mut rng);
    let mut batches = Vec::new();
    while !messages.is_empty() {
        let n = rng.random_range(1..=12).min(messages.len());
        batches.push(messages.drain(..n).collect::<Vec<_>>());
    }
    // Redeliver some whole batches at a later point (a failed invocation, a visibility timeout).
    for _ in 0..(batches.len() / 4).max(1) {
        let b = rng.random_range(0..batches.len());
        let copy = batches[b].clone();
        let at = rng.random_range(b..=batches.len());
        batches.insert(at, copy);
    }
    let mut workers = [Vec::new(), Vec::new()];
    for (i, batch) in batches.into_iter().enumerate() {
        workers[(i + rng.random_range(0..2)) % 2].push(batch);
    }
    workers
}

/// Delivers a [`schedule`]'s two workers' batches concurrently, one pipeline each. A TOAST
/// placeholder whose base has not arrived yet (`toast.base_missing`) is delivered again once
/// both workers are done, as SQS would after its visibility timeout, a few rounds at most; any
/// other failure is an error.
pub(crate) async fn deliver(pipelines: [Arc<Pipeline>; 2], workers: [Vec<Vec<Message>>; 2]) -> Result<(), String> {
    let run = |pipeline: Arc<Pipeline>, batches: Vec<Vec<Message>>| async move {
        let mut waiting = Vec::new();
        for batch in batches {
            let reports = pipeline.process(&batch, deadline()).await.map_err(|e| format!("systemic: {e}"))?;
            for (message, report) in batch.iter().zip(&reports) {
                match &report.outcome {
                    MessageOutcome::Failed { code: "toast.base_missing", .. } => waiting.push(message.clone()),
                    MessageOutcome::Failed { code, .. } => {
                        return Err(format!("message {} failed: {code}", message.id));
                    }
                    _ => {}
                }
            }
        }
        Ok::<Vec<Message>, String>(waiting)
    };
    let [a, b] = pipelines;
    let [w0, w1] = workers;
    let (r0, r1) = tokio::join!(run(a.clone(), w0), run(b, w1));
    let mut waiting: Vec<Message> = r0?.into_iter().chain(r1?).collect();
    for _round in 0..5 {
        if waiting.is_empty() {
            return Ok(());
        }
        waiting = run(a.clone(), vec![waiting]).await?;
    }
    Err(format!("{} placeholders still wait for their base after 5 redeliveries", waiting.len()))
}

async fn run_schedule(seed: u64) -> Result<(), String> {
    let database = fresh_database("conv");
    let make = || Arc::new(Pipeline::new(DecodeOptions::default(), Warehouse::new(&settings(&database))));
    let (a, b) = (make(), make());
    a.migrate(deadline()).await.map_err(|e| format!("migrate: {e}"))?;
    // Foreign keys that move need the UInt256 version: servers before 23.2 keep the weaker
    // guarantee the README states (pinned by `legacy_servers_keep_the_weaker_version`).
    let moves = a.warehouse().dialect().await.map_err(|e| format!("dialect: {e}"))? == Dialect::Modern;
    let history = generate_history(seed % HISTORIES, moves);
    deliver([a.clone(), b], schedule(seed, &history.events)).await?;
    let expected = history.expected_facts();
    let actual = current_facts(a.warehouse()).await;
    let (missing, extra, wrong) = diff(&expected, &actual);
    if std::env::var("CONVERGENCE_KEEP").is_err() {
        drop_database(&database).await;
    } else {
        eprintln!("kept database {database}");
    }
    if (missing, extra, wrong) != (0, 0, 0) {
        let extra_ids: Vec<i64> = actual.keys().filter(|k| !expected.contains_key(k)).copied().collect();
        let missing_ids: Vec<i64> = expected.keys().filter(|k| !actual.contains_key(k)).copied().collect();
        return Err(format!(
            "{missing} missing {missing_ids:?}, {extra} extra {extra_ids:?}, {wrong} wrong of {} expected facts",
            expected.len()
        ));
    }
    Ok(())
}

/// Runs `schedule` for each seed, `parallel` at a time, each within `limit`, and
/// fails with every diverging seed: the seeds are `0..n` (`n` from the variable `count`, else
/// `default_count`), or the one in the variable `replay` (printed with each failure).
pub(crate) async fn run_schedules<F, Fut>(
    what: &str,
    (replay, count, default_count): (&str, &str, u64),
    parallel: usize,
    limit: std::time::Duration,
    schedule: F,
) where
    F: Fn(u64) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let seeds: Vec<u64> = match std::env::var(replay) {
        Ok(seed) => vec![seed.parse().unwrap_or_else(|_| panic!("{replay} is a number"))],
        Err(_) => (0..std::env::var(count).ok().and_then(|n| n.parse().ok()).unwrap_or(default_count)).collect(),
    };
    let schedule = &schedule;
    let results: Vec<(u64, Result<(), String>)> = futures::stream::iter(seeds)
        .map(|seed| async move {
            let started = std::time::Instant::now();
            let result = tokio::time::timeout(limit, schedule(seed))
                .await
                .unwrap_or_else(|_| Err(format!("did not finish within {limit:?}")));
            eprintln!("{what} {seed}: {:?} in {:?}", result.as_ref().map(|_| "ok"), started.elapsed());
            (seed, result)
        })
        .buffer_unordered(parallel)
        .collect()
        .await;
    let failures: Vec<String> = results
        .iter()
        .filter_map(|(seed, r)| r.as_ref().err().map(|e| format!("seed {seed}: {e} (replay: {replay}={seed})")))
        .collect();
    assert!(failures.is_empty(), "{} of {} {what}s diverged:\n{}", failures.len(), results.len(), failures.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sales_fact_converges_under_any_delivery_schedule() {
    let seeds = ("CONVERGENCE_SEED", "CONVERGENCE_SCHEDULES", SCHEDULES);
    run_schedules("schedule", seeds, PARALLEL_SCHEDULES, std::time::Duration::from_secs(120), run_schedule).await;
}

#[test]
fn histories_cover_every_table_and_operation() {
    let mut seen = std::collections::BTreeSet::new();
    for seed in 0..HISTORIES {
        for body in generate_history(seed, true).events {
            if body.is_empty() {
                seen.insert("tombstone".to_string());
                continue;
            }
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            seen.insert(format!("{}:{}", v["source"]["table"].as_str().unwrap(), v["op"].as_str().unwrap()));
        }
    }
    // Foreign keys move at every level.
    let mut last: std::collections::BTreeMap<(String, i64), (i64, i64)> = Default::default();
    for seed in 0..HISTORIES {
        for body in generate_history(seed, true).events.iter().filter(|b| !b.is_empty()) {
            let v: serde_json::Value = serde_json::from_str(body).unwrap();
            let (table, after) = (v["source"]["table"].as_str().unwrap().to_string(), &v["after"]);
            let fks = match table.as_str() {
                "order_items" => (after["order_id"].as_i64().unwrap_or(0), after["product_id"].as_i64().unwrap_or(0)),
                "orders" => (after["customer_id"].as_i64().unwrap_or(0), 0),
                _ => continue,
            };
            let Some(id) = after["id"].as_i64() else { continue };
            if let Some(before) = last.insert((format!("{seed}:{table}"), id), fks)
                && before != fks
            {
                let level = match (table.as_str(), before.0 != fks.0) {
                    ("order_items", true) => "item→order",
                    ("order_items", false) => "item→product",
                    _ => "order→customer",
                };
                seen.insert(format!("move {level}"));
            }
        }
    }
    for level in ["item→order", "item→product", "order→customer"] {
        assert!(seen.contains(&format!("move {level}")), "no {level} move in any history");
    }
    for table in ["customers", "products", "orders", "order_items"] {
        for op in ["c", "u", "d", "t"] {
            assert!(seen.contains(&format!("{table}:{op}")), "no {table}:{op} in any history");
        }
    }
    assert!(seen.contains("tombstone"));
    // Some histories open with a snapshot that races an open transaction.
    assert!(seen.contains("order_items:r"), "no snapshot read in any history");
    // Most histories must end with facts, or the comparison would prove little.
    let with_facts = (0..HISTORIES).filter(|s| !generate_history(*s, true).expected_facts().is_empty()).count();
    assert!(with_facts * 4 >= HISTORIES as usize * 3, "only {with_facts} of {HISTORIES} histories end with facts");
}
