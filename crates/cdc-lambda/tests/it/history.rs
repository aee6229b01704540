//! History (`HISTORY_TABLES` on all four sales tables): generated histories (updates, deletes,
//! key changes, foreign keys that move, truncations, a snapshot racing an open transaction,
//! TOAST placeholders for unchanged names)
//! delivered shuffled, duplicated and redelivered by two concurrent invocations. Each table's
//! SCD2 view must equal the versions computed from the source's ordered changes, and the table
//! and `sales_fact` as of ten times must equal the source's state at those times. A failure
//! prints its seed; replay one with `HISTORY_SEED=<seed>`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use cdc_clickhouse::dialect::Dialect;
use cdc_clickhouse::schema::VALID_FOREVER_US;
use cdc_clickhouse::{Warehouse, WarehouseOptions};
use cdc_core::decode::DecodeOptions;
use cdc_core::fact::FactRow;
use cdc_core::tables::SourceTable;
use cdc_lambda::pipeline::Pipeline;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde_json::{Value as Json, json};

use crate::convergence::{deliver, generate, run_schedules, schedule};
use crate::support::*;

const SCHEDULES: u64 = 16;
const TIMES: usize = 10;
/// More keys than any generated history has: one page.
const ALL: usize = 100_000;

/// The columns a table's versions are compared by (each table's values that feed a fact), as
/// SQL expressions and as read from the source's row.
fn compared(table: SourceTable) -> (&'static str, fn(&Json) -> String) {
    match table {
        SourceTable::Customers => ("name, toString(country), toString(city)", |r| {
            format!(
                "{}|{}|{}",
                r["name"].as_str().unwrap(),
                r["country"].as_str().unwrap(),
                r["city"].as_str().unwrap()
            )
        }),
        SourceTable::Products => ("name, toString(category)", |r| {
            format!("{}|{}", r["name"].as_str().unwrap(), r["category"].as_str().unwrap())
        }),
        SourceTable::Orders => {
            ("customer_id, toString(status)", |r| format!("{}|{}", r["customer_id"], r["status"].as_str().unwrap()))
        }
        SourceTable::OrderItems => {
            ("order_id, product_id, quantity", |r| format!("{}|{}|{}", r["order_id"], r["product_id"], r["quantity"]))
        }
    }
}

/// The SCD2 rows the source's ordered changes give `table`: `key version from to current values`.
fn expected_versions(db: &SourceDb, table: SourceTable) -> Vec<String> {
    let (_, values) = compared(table);
    let changes = db.log.iter().filter(|c| c.table == table.name());
    let truncations: Vec<(u64, i64)> =
        changes.clone().filter(|c| c.key.is_none()).map(|c| (c.version, c.commit_us)).collect();
    let mut by_key: BTreeMap<i64, Vec<&Logged>> = BTreeMap::new();
    for change in changes {
        if let Some(key) = change.key {
            by_key.entry(key).or_default().push(change);
        }
    }
    let mut rows = Vec::new();
    for (key, mut versions) in by_key {
        versions.sort_by_key(|c| (c.version, c.commit_us));
        for (i, change) in versions.iter().enumerate().filter(|(_, c)| !c.deleted) {
            let next = versions.get(i + 1).map_or(VALID_FOREVER_US, |n| n.commit_us);
            let truncated = truncations
                .iter()
                .filter(|(v, _)| *v > change.version)
                .map(|(_, at)| *at)
                .min()
                .unwrap_or(VALID_FOREVER_US);
            let to = next.min(truncated);
            let after = change.after.as_ref().expect("a live change has its row");
            rows.push(format!(
                "{key}\t{}\t{}\t{to}\t{}\t{}",
                change.version,
                change.commit_us,
                u8::from(to == VALID_FOREVER_US),
                values(after)
            ));
        }
    }
    rows.sort();
    rows
}

/// The rows of `table`'s SCD2 view, in the form of [`expected_versions`].
async fn stored_versions(pipeline: &Pipeline, table: SourceTable) -> Vec<String> {
    let (columns, _) = compared(table);
    let width = columns.split(", ").count();
    let sql = format!(
        "SELECT {key}, _version, valid_from_us, valid_to_us, is_current, {columns} FROM DB.{view}",
        key = table.spec().key,
        view = cdc_clickhouse::schema::scd2_view(table)
    );
    let mut rows: Vec<String> = tsv(pipeline, &sql)
        .await
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.split('\t').collect();
            let (head, values) = fields.split_at(fields.len() - width);
            format!("{}\t{}", head.join("\t"), values.join("|"))
        })
        .collect();
    rows.sort();
    rows
}

/// The source's rows of `table` in `db`, key → compared values.
fn source_rows(db: &SourceDb, table: SourceTable) -> BTreeMap<i64, String> {
    let (_, values) = compared(table);
    let rows: Vec<(i64, Json)> = match table {
        SourceTable::Customers => db.customers.values().map(|r| (r.id, r.json())).collect(),
        SourceTable::Products => db.products.values().map(|r| (r.id, r.json())).collect(),
        SourceTable::Orders => db.orders.values().map(|r| (r.id, r.json())).collect(),
        SourceTable::OrderItems => db.items.values().map(|r| (r.id, r.json())).collect(),
    };
    rows.into_iter().map(|(id, row)| (id, values(&row))).collect()
}

/// The live rows of `table`'s mirror (its `_current` view), key → compared values.
async fn mirror_rows(pipeline: &Pipeline, table: SourceTable) -> BTreeMap<i64, String> {
    let (columns, _) = compared(table);
    let sql = format!("SELECT {}, {columns} FROM DB.{}_current", table.spec().key, table.name());
    tsv(pipeline, &sql)
        .await
        .lines()
        .map(|line| {
            let (key, values) = line.split_once('\t').expect("key and values");
            (key.parse().expect("key"), values.replace('\t', "|"))
        })
        .collect()
}

/// `table` as the warehouse says it was at `at_us`, key → compared values.
async fn stored_rows_as_of(
    warehouse: &Warehouse,
    table: SourceTable,
    at_us: i64,
) -> Result<BTreeMap<i64, String>, String> {
    let keys = warehouse.history_keys(table, at_us, None, ALL, deadline()).await.map_err(|e| e.to_string())?;
    if keys.is_empty() {
        return Ok(BTreeMap::new());
    }
    let text = warehouse.table_as_of(table, at_us, &keys, deadline()).await.map_err(|e| e.to_string())?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split('\t').collect();
    let (columns, _) = compared(table);
    // The compared columns by name (`toString(x)` reads column x).
    let wanted: Vec<usize> = columns
        .split(", ")
        .map(|c| c.trim_start_matches("toString(").trim_end_matches(')'))
        .map(|c| header.iter().position(|h| *h == c).unwrap_or_else(|| panic!("column {c} in {header:?}")))
        .collect();
    Ok(lines
        .map(|line| {
            let fields: Vec<&str> = line.split('\t').collect();
            let values: Vec<&str> = wanted.iter().map(|i| fields[*i]).collect();
            (fields[0].parse().expect("key"), values.join("|"))
        })
        .collect())
}

fn comparable(f: FactRow) -> (i64, Fact) {
    let fact = Fact {
        order_item_id: f.order_item_id,
        order_id: f.order_id,
        customer_id: f.customer_id,
        product_id: f.product_id,
        quantity: f.quantity,
        unit_price: f.unit_price,
        revenue: f.revenue,
        order_status: f.order_status,
        order_date_s: f.order_date_us.div_euclid(1_000_000),
        customer_name: f.customer_name,
        customer_country: f.customer_country,
        customer_city: f.customer_city,
        product_name: f.product_name,
        product_category: f.product_category,
    };
    (fact.order_item_id, fact)
}

/// Times to read as of: commit times of changes (the boundary is inclusive) and times between,
/// from the history's start (a snapshot's rows are only known from the snapshot on).
fn times(db: &SourceDb, rng: &mut StdRng) -> Vec<i64> {
    let start = db.log.iter().find(|c| c.version == 1).or(db.log.first()).map_or(0, |c| c.commit_us);
    let end = db.log.last().map_or(0, |c| c.commit_us) + 1_000;
    let commits: Vec<i64> = db.log.iter().map(|c| c.commit_us).filter(|t| *t >= start).collect();
    (0..TIMES)
        .map(|i| if i % 2 == 0 { commits[rng.random_range(0..commits.len())] } else { rng.random_range(start..=end) })
        .collect()
}

async fn run_schedule(seed: u64) -> Result<(), String> {
    let database = fresh_database("hist");
    let options = WarehouseOptions { history: SourceTable::ALL.into_iter().collect(), ..WarehouseOptions::default() };
    let make =
        || Arc::new(Pipeline::new(DecodeOptions::default(), Warehouse::with_options(&settings(&database), &options)));
    let (a, b) = (make(), make());
    a.migrate(deadline()).await.map_err(|e| format!("migrate: {e}"))?;
    // Foreign keys move on every server: a fact as of a time is derived from the histories
    // directly, without the stored facts' version rule.
    let db = generate(seed, true, true);
    deliver([a.clone(), b], schedule(seed, &db.events)).await?;

    let mut problems = Vec::new();
    for table in SourceTable::ALL {
        let (expected, stored) = (expected_versions(&db, table), stored_versions(&a, table).await);
        if expected != stored {
            let missing: Vec<&String> = expected.iter().filter(|r| !stored.contains(r)).take(3).collect();
            let extra: Vec<&String> = stored.iter().filter(|r| !expected.contains(r)).take(3).collect();
            problems.push(format!("{} SCD2: missing {missing:?}, extra {extra:?}", table.name()));
        }
    }
    let warehouse = a.warehouse();
    let modern = warehouse.dialect().await.map_err(|e| e.to_string())? == Dialect::Modern;
    // The mirrors end as the source ends, TOAST placeholders completed from their true
    // predecessors whatever order the changes came in (docs/history.md, "Mirrors").
    for table in SourceTable::ALL {
        if mirror_rows(&a, table).await != source_rows(&db, table) {
            problems.push(format!("{} mirror differs from the source", table.name()));
        }
    }
    if modern {
        let (missing, extra, wrong) = diff(&db.expected_facts(), &current_facts(warehouse).await);
        if (missing, extra, wrong) != (0, 0, 0) {
            problems.push(format!("sales_fact: {missing} missing, {extra} extra, {wrong} wrong"));
        }
    }
    let mut rng = StdRng::seed_from_u64(seed ^ 0x7157);
    for at in times(&db, &mut rng) {
        let source = db.as_of(at);
        for table in SourceTable::ALL {
            let stored = stored_rows_as_of(warehouse, table, at).await?;
            if stored != source_rows(&source, table) {
                problems.push(format!("{} as of {at} differs from the source", table.name()));
            }
        }
        if modern {
            // The parameterized views of current servers say the same.
            for table in SourceTable::ALL {
                let (columns, _) = compared(table);
                let view = cdc_clickhouse::schema::as_of_view(table);
                let sql = format!("SELECT id, {columns} FROM DB.{view}(at_us = {at})");
                let rows: BTreeMap<i64, String> = tsv(&a, &sql)
                    .await
                    .lines()
                    .map(|line| {
                        let (key, values) = line.split_once('\t').expect("key and values");
                        (key.parse().expect("key"), values.replace('\t', "|"))
                    })
                    .collect();
                if rows != source_rows(&source, table) {
                    problems.push(format!("{view}(at_us = {at}) differs from the source"));
                }
            }
            let from = format!("{}.sales_fact_as_of(at_us = {at})", warehouse.database());
            let (missing, extra, wrong) = diff(&source.expected_facts(), &facts_from(warehouse, &from).await);
            if (missing, extra, wrong) != (0, 0, 0) {
                problems.push(format!("sales_fact_as_of({at}): {missing} missing, {extra} extra, {wrong} wrong"));
            }
        }
        let items = warehouse.history_keys(SourceTable::OrderItems, at, None, ALL, deadline()).await;
        let items = items.map_err(|e| e.to_string())?;
        let facts = warehouse.facts_as_of(&items, at, deadline()).await.map_err(|e| e.to_string())?;
        let facts: BTreeMap<i64, Fact> = facts.into_iter().map(comparable).collect();
        let expected = source.expected_facts();
        let (missing, extra, wrong) = diff(&expected, &facts);
        if (missing, extra, wrong) != (0, 0, 0) {
            problems.push(format!("sales_fact as of {at}: {missing} missing, {extra} extra, {wrong} wrong"));
        }
    }
    drop_database(&database).await;
    if problems.is_empty() { Ok(()) } else { Err(problems.join("; ")) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn history_and_as_of_reads_equal_the_source_under_any_delivery_schedule() {
    let seeds = ("HISTORY_SEED", "HISTORY_SCHEDULES", SCHEDULES);
    run_schedules("history schedule", seeds, 4, std::time::Duration::from_secs(180), run_schedule).await;
}

#[test]
fn the_oracle_ends_a_version_at_the_next_change_or_a_truncation() {
    let mut db = SourceDb::default();
    let customer = |name: &str| Customer {
        id: 1,
        email: "a@example.com".into(),
        name: name.into(),
        country: "UK".into(),
        city: "London".into(),
        created_at_us: 0,
    };
    db.upsert_customer(customer("A"));
    db.upsert_customer(customer("B"));
    db.truncate("customers");
    db.upsert_customer(customer("C"));
    let versions = expected_versions(&db, SourceTable::Customers);
    let commits: Vec<i64> = db.log.iter().map(|c| c.commit_us).collect();
    let current: BTreeSet<&str> =
        versions.iter().filter(|r| r.split('\t').nth(4) == Some("1")).map(String::as_str).collect();
    assert_eq!(versions.len(), 3);
    assert!(versions[1].contains(&format!("\t{}\t{}\t0\tB|UK|London", commits[1], commits[2])), "{versions:?}");
    assert_eq!(current.len(), 1, "only C is current: {versions:?}");
    assert_eq!(
        source_rows(&db.as_of(commits[1]), SourceTable::Customers).get(&1).map(String::as_str),
        Some("B|UK|London")
    );
    assert!(db.as_of(commits[2]).customers.is_empty(), "truncated");
}

#[test]
fn the_histories_send_unchanged_names_as_toast_placeholders() {
    let placeholders: usize = (0..SCHEDULES)
        .map(|seed| {
            generate(seed, true, true).events.iter().filter(|e| e.contains("__debezium_unavailable_value")).count()
        })
        .sum();
    assert!(placeholders >= SCHEDULES as usize, "only {placeholders} placeholders in {SCHEDULES} histories");
}

/// The schedule: customer 1 named N1 @1000; @3000 moves them to C3 and carries the
/// name as a TOAST placeholder; @2000 (N2, C2) arrives last. The mirror first fills @3000 from
/// @1000; once @2000 is in the history, the row is filled again: N2, C3, and the fact follows.
#[tokio::test]
async fn a_placeholder_filled_before_its_predecessor_arrived_is_filled_again_from_the_history() {
    let database = fresh_database("refill");
    let options = WarehouseOptions { history: [SourceTable::Customers].into_iter().collect(), ..Default::default() };
    let warehouse = Warehouse::with_options(&settings(&database), &options);
    let pipeline = migrated(Pipeline::new(DecodeOptions::default(), warehouse)).await;
    let customer = |name: &str, city: &str| {
        let (name, city) = (name.to_owned(), city.to_owned());
        Customer { id: 1, email: "a@x.io".into(), name, country: "UK".into(), city, created_at_us: 0 }.json()
    };
    let product = Product { id: 2, name: "Lamp".into(), category: "Home".into(), price_cents: 100, created_at_us: 0 };
    let order = Order { id: 3, customer_id: 1, order_date_us: 0, status: "paid".into(), total_cents: 100 };
    let item = Item { id: 4, order_id: 3, product_id: 2, quantity: 1, price_cents: 100 };
    let created = [
        debezium_body("customers", "c", None, Some(customer("N1", "C1")), 1_000),
        debezium_body("products", "c", None, Some(product.json()), 1_010),
        debezium_body("orders", "c", None, Some(order.json()), 1_020),
        debezium_body("order_items", "c", None, Some(item.json()), 1_030),
    ];
    let mut moved = customer("", "C3");
    moved["name"] = json!("__debezium_unavailable_value");
    let moved = debezium_body("customers", "u", None, Some(moved), 3_000);
    let renamed = debezium_body("customers", "u", None, Some(customer("N2", "C2")), 2_000);
    let current = "SELECT name, toString(city) FROM DB.customers_current";
    let fact = "SELECT customer_name, toString(customer_city) FROM DB.sales_fact_current";

    assert_all_ok(&run(&pipeline, &created).await);
    assert_all_ok(&run(&pipeline, std::slice::from_ref(&moved)).await);
    assert_eq!(tsv(&pipeline, current).await, "N1\tC3\n", "filled from the newest change known");
    assert_all_ok(&run(&pipeline, std::slice::from_ref(&renamed)).await);
    assert_eq!(tsv(&pipeline, current).await, "N2\tC3\n", "filled again from its predecessor");
    assert_eq!(tsv(&pipeline, fact).await, "N2\tC3\n");
    assert_eq!(tsv(&pipeline, "SELECT _refill FROM DB.customers FINAL").await, "3\n", "three changes in the history");

    // Delivered again, in either order and together: nothing moves.
    assert_all_ok(&run(&pipeline, &[moved.clone(), renamed.clone()]).await);
    assert_all_ok(&run(&pipeline, &[renamed, moved]).await);
    assert_eq!(tsv(&pipeline, current).await, "N2\tC3\n");
    assert_eq!(tsv(&pipeline, fact).await, "N2\tC3\n");
    drop_database(&database).await;
}
