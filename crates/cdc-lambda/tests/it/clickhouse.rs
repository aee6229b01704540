//! The pipeline against the real ClickHouse server: every operation on every table, dimensions
//! arriving before and after their facts, TOAST, truncation, key changes, poison isolation,
//! systemic faults, and round trips that do not grow with the batch.

use std::time::Instant;

use cdc_clickhouse::RawSql;
use cdc_clickhouse::Warehouse;
use cdc_clickhouse::dialect::Dialect;
use cdc_core::decode::DecodeOptions;
use cdc_core::error::ErrorClass;
use cdc_core::rederive::Scope;
use cdc_lambda::pipeline::{Pipeline, Process};
use cdc_lambda::sqs::message::MessageOutcome;
use serde_json::json;

use crate::support::*;

fn customer(id: i64, name: &str) -> Customer {
    Customer {
        id,
        email: format!("c{id}@x.io"),
        name: name.into(),
        country: "UK".into(),
        city: "London".into(),
        created_at_us: 1_704_067_200_000_000,
    }
}
fn product(id: i64, name: &str, price_cents: i64) -> Product {
    Product { id, name: name.into(), category: "Home".into(), price_cents, created_at_us: 1_704_067_200_000_000 }
}
fn order(id: i64, customer_id: i64, status: &str) -> Order {
    Order { id, customer_id, order_date_us: 1_704_070_800_500_000, status: status.into(), total_cents: 1_446 }
}
fn item(id: i64, order_id: i64, product_id: i64, quantity: i32, price_cents: i64) -> Item {
    Item { id, order_id, product_id, quantity, price_cents }
}

/// Customer 1, product 2, order 3 and item 4: one complete fact.
fn one_fact() -> SourceDb {
    let mut db = SourceDb::default();
    db.upsert_customer(customer(1, "Ada"));
    db.upsert_product(product(2, "Lamp", 100));
    db.upsert_order(order(3, 1, "paid"));
    db.upsert_item(item(4, 3, 2, 1, 100));
    db
}

#[tokio::test]
async fn every_operation_on_every_table_reaches_mirrors_and_facts() {
    let (pipeline, database) = fresh_pipeline("ops").await;
    let mut db = SourceDb { snapshot: true, ..SourceDb::default() };
    // A snapshot read of one complete fact, then creates of another.
    db.upsert_customer(customer(11, "Bob"));
    db.upsert_product(product(12, "Desk", 10_000));
    db.upsert_order(order(13, 11, "paid"));
    db.upsert_item(item(14, 13, 12, 1, 9_999));
    db.snapshot = false;
    db.upsert_customer(customer(1, "Ada"));
    db.upsert_product(product(2, "Lamp", 482));
    db.upsert_order(order(3, 1, "pending"));
    db.upsert_item(item(4, 3, 2, 3, 482));
    assert!(db.events[0].contains(r#""op":"r""#));
    assert_all_ok(&run(&pipeline, &db.events).await);
    assert_eq!(
        tsv(&pipeline, "SELECT order_item_id, quantity, toFloat64(unit_price), toFloat64(revenue), order_status, customer_name, product_name FROM DB.sales_fact_current ORDER BY order_item_id").await,
        "4\t3\t4.82\t14.46\tpending\tAda\tLamp\n14\t1\t99.99\t99.99\tpaid\tBob\tDesk\n"
    );

    // Updates on every table reach the fact.
    let before = db.events.len();
    db.upsert_customer(Customer { city: "Paris".into(), country: "FR".into(), ..customer(1, "Ada L.") });
    db.upsert_product(Product { category: "Lighting".into(), ..product(2, "Lamp XL", 482) });
    db.upsert_order(order(3, 1, "shipped"));
    db.upsert_item(item(4, 3, 2, 5, 500));
    assert_all_ok(&run(&pipeline, &db.events[before..]).await);
    assert_eq!(
        tsv(&pipeline, "SELECT quantity, toFloat64(unit_price), toFloat64(revenue), order_status, customer_name, customer_country, customer_city, product_name, product_category FROM DB.sales_fact_current WHERE order_item_id = 4").await,
        "5\t5\t25\tshipped\tAda L.\tFR\tParis\tLamp XL\tLighting\n"
    );
    assert_eq!(
        tsv(&pipeline, "SELECT name, city FROM DB.customers_current ORDER BY id").await,
        "Ada L.\tParis\nBob\tLondon\n"
    );

    // Deletes on every table: each removes the facts it touches, and the mirror row.
    let deletes = [("order_items", 14), ("orders", 3)];
    for (table, id) in deletes {
        let before = db.events.len();
        db.delete(table, id);
        assert_all_ok(&run(&pipeline, &db.events[before..]).await);
    }
    assert_eq!(tsv(&pipeline, "SELECT count() FROM DB.sales_fact_current").await, "0\n");
    let before = db.events.len();
    db.delete("customers", 11);
    db.delete("products", 12);
    assert_all_ok(&run(&pipeline, &db.events[before..]).await);
    for (table, left) in [("customers", "1\n"), ("products", "1\n"), ("orders", "1\n"), ("order_items", "1\n")] {
        assert_eq!(tsv(&pipeline, &format!("SELECT count() FROM DB.{table}_current")).await, left, "{table}");
    }
    drop_database(&database).await;
}

#[tokio::test]
async fn facts_appear_whichever_side_arrives_first() {
    let (pipeline, database) = fresh_pipeline("late").await;
    let mut db = SourceDb::default();
    db.upsert_item(item(40, 30, 20, 2, 1_000));
    db.upsert_order(order(30, 10, "paid"));
    db.upsert_customer(customer(10, "Cy"));
    db.upsert_product(product(20, "Pen", 1_000));
    // Facts first, dimensions later, one invocation each.
    for (i, body) in db.events.iter().enumerate() {
        assert_all_ok(&run(&pipeline, std::slice::from_ref(body)).await);
        let expected = if i == 3 { "1\n" } else { "0\n" };
        assert_eq!(tsv(&pipeline, "SELECT count() FROM DB.sales_fact_current").await, expected, "after event {i}");
    }
    // And the reverse: dimensions first, then the item.
    let before = db.events.len();
    db.upsert_item(item(41, 30, 20, 1, 1_000));
    assert_all_ok(&run(&pipeline, &db.events[before..]).await);
    assert_eq!(
        tsv(&pipeline, "SELECT order_item_id, customer_name, product_name FROM DB.sales_fact_current ORDER BY 1").await,
        "40\tCy\tPen\n41\tCy\tPen\n"
    );
    drop_database(&database).await;
}

#[tokio::test]
async fn a_transaction_open_at_the_snapshot_wins_over_the_snapshot_rows() {
    let (pipeline, database) = fresh_pipeline("snap").await;
    let mut db = one_fact();
    db.upsert_item(item(5, 3, 2, 2, 100));
    // The rows so far predate the slot: only the snapshot reads them. A transaction open at the
    // snapshot's consistent point renames the customer and deletes item 5; it commits after the
    // snapshot, so the stream carries it, at positions below the snapshot's.
    db.events.clear();
    let before_the_transaction = db.clone();
    db.upsert_customer(customer(1, "Renamed"));
    db.delete("order_items", 5);
    let open_transaction = db.events.len();
    db.snapshot_of(&before_the_transaction);
    // The snapshot delivered last, as it would be when the transaction's changes were processed
    // first (delivery order must not matter).
    assert_all_ok(&run(&pipeline, &db.events[..open_transaction]).await);
    assert_all_ok(&run(&pipeline, &db.events[open_transaction..]).await);
    assert_eq!(
        tsv(&pipeline, "SELECT order_item_id, customer_name FROM DB.sales_fact_current ORDER BY 1").await,
        "4\tRenamed\n"
    );
    assert_eq!(tsv(&pipeline, "SELECT name FROM DB.customers_current").await, "Renamed\n");
    drop_database(&database).await;
}

#[tokio::test]
async fn no_optimize_can_drop_the_tombstones_a_late_duplicate_needs() {
    let (pipeline, database) = fresh_pipeline("tomb").await;
    let mut db = one_fact();
    let created = db.events.clone();
    db.delete("customers", 1);
    assert_all_ok(&run(&pipeline, &db.events).await);
    // What an operator may run: OPTIMIZE ... FINAL, and on current servers the CLEANUP merge
    // (on 23.2-23.12 plain FINAL did the same) that drops rows of an `is_deleted` engine.
    let modern = pipeline.warehouse().dialect().await.unwrap() == Dialect::Modern;
    for table in ["customers", "sales_fact"] {
        if modern {
            let setting = "MODIFY SETTING allow_experimental_replacing_merge_with_cleanup = 1";
            pipeline.warehouse().execute(&format!("ALTER TABLE {database}.{table} {setting}")).await.unwrap();
            pipeline.warehouse().execute(&format!("OPTIMIZE TABLE {database}.{table} FINAL CLEANUP")).await.unwrap();
        } else {
            pipeline.warehouse().execute(&format!("OPTIMIZE TABLE {database}.{table} FINAL")).await.unwrap();
        }
    }
    // A late duplicate of the customer's create (SQS delivers at least once).
    assert_all_ok(&run(&pipeline, &created[..1]).await);
    assert_eq!(tsv(&pipeline, "SELECT count() FROM DB.customers_current").await, "0\n");
    assert_eq!(tsv(&pipeline, "SELECT count() FROM DB.sales_fact_current").await, "0\n");
    drop_database(&database).await;
}

#[tokio::test]
async fn a_null_foreign_key_joins_no_parent_not_even_key_0() {
    let (pipeline, database) = fresh_pipeline("nullfk").await;
    let mut db = SourceDb::default();
    db.upsert_customer(customer(0, "Zero"));
    db.upsert_product(product(2, "Lamp", 100));
    db.upsert_item(item(4, 3, 2, 1, 100));
    let mut guest = order(3, 0, "paid").json();
    guest["customer_id"] = json!(null);
    let mut bodies = db.events.clone();
    bodies.push(debezium_body("orders", "c", None, Some(guest), db.peek_lsn() + 10));
    assert_all_ok(&run(&pipeline, &bodies).await);
    // The source's inner join drops an order without a customer; key 0 is a customer like any.
    assert_eq!(tsv(&pipeline, "SELECT count() FROM DB.sales_fact_current").await, "0\n");
    // The same order with customer 0: the fact appears.
    let later =
        debezium_body("orders", "u", Some(json!({"id": 3})), Some(order(3, 0, "paid").json()), db.peek_lsn() + 20);
    assert_all_ok(&run(&pipeline, &[later]).await);
    assert_eq!(tsv(&pipeline, "SELECT order_item_id, customer_name FROM DB.sales_fact_current").await, "4\tZero\n");
    drop_database(&database).await;
}

#[tokio::test]
async fn an_item_with_the_smallest_id_is_re_derived_by_every_scope() {
    let (pipeline, database) = fresh_pipeline("minid").await;
    let mut db = SourceDb::default();
    db.upsert_customer(customer(1, "Ada"));
    db.upsert_product(product(2, "Lamp", 100));
    db.upsert_order(order(3, 1, "paid"));
    db.upsert_item(item(i64::MIN, 3, 2, 1, 100));
    assert_all_ok(&run(&pipeline, &db.events).await);
    // A task starts before every item id, i64::MIN included (it once meant "none yet").
    for scope in [Scope::Order(3), Scope::Product(2), Scope::Customer(1), Scope::All] {
        let (facts, unfinished) = pipeline.rederive(scope, deadline()).await.unwrap();
        assert_eq!((facts, unfinished), (1, None), "{scope:?}");
    }
    drop_database(&database).await;
}

#[tokio::test]
async fn toast_placeholder_keeps_the_stored_value() {
    let (pipeline, database) = fresh_pipeline("toast").await;
    let mut db = SourceDb::default();
    db.upsert_customer(customer(1, "Ada"));
    db.upsert_product(product(2, "A very long description", 100));
    db.upsert_order(order(3, 1, "paid"));
    db.upsert_item(item(4, 3, 2, 1, 100));
    assert_all_ok(&run(&pipeline, &db.events).await);

    let mut after = product(2, "", 250).json();
    after["name"] = json!("__debezium_unavailable_value");
    let lsn = db.peek_lsn();
    let update = debezium_body("products", "u", Some(json!({"id": 2})), Some(after.clone()), lsn);
    assert_all_ok(&run(&pipeline, std::slice::from_ref(&update)).await);
    assert_eq!(
        tsv(&pipeline, "SELECT name, toFloat64(price) FROM DB.products_current").await,
        "A very long description\t2.5\n"
    );
    assert_eq!(tsv(&pipeline, "SELECT product_name FROM DB.sales_fact_current").await, "A very long description\n");

    // Delivered again (at least once), and again after the key's next change: nothing older is
    // stored any more, yet the change is done, not retried into the DLQ.
    assert_all_ok(&run(&pipeline, std::slice::from_ref(&update)).await);
    let mut renamed = product(2, "Lamp", 300).json();
    renamed["id"] = json!(2);
    assert_all_ok(
        &run(&pipeline, &[debezium_body("products", "u", Some(json!({"id": 2})), Some(renamed), lsn + 5)]).await,
    );
    assert_all_ok(&run(&pipeline, &[update]).await);
    assert_eq!(tsv(&pipeline, "SELECT name, toFloat64(price) FROM DB.products_current").await, "Lamp\t3\n");
    assert_eq!(tsv(&pipeline, "SELECT product_name FROM DB.sales_fact_current").await, "Lamp\n");

    // A placeholder whose earlier value has not arrived yet is retried, never stored.
    let orphan = debezium_body(
        "products",
        "u",
        Some(json!({"id": 77})),
        Some({
            let mut a = after;
            a["id"] = json!(77);
            a
        }),
        lsn + 10,
    );
    let reports = run(&pipeline, &[orphan]).await;
    assert_eq!(
        reports[0].outcome,
        MessageOutcome::Failed {
            class: ErrorClass::Waiting,
            code: "toast.base_missing",
            table: Some("products".into())
        }
    );
    assert_eq!(tsv(&pipeline, "SELECT count() FROM DB.products WHERE id = 77").await, "0\n");
    drop_database(&database).await;
}

#[tokio::test]
async fn truncate_removes_rows_as_of_its_position() {
    let (pipeline, database) = fresh_pipeline("trunc").await;
    let db = one_fact();
    assert_all_ok(&run(&pipeline, &db.events).await);
    assert_eq!(tsv(&pipeline, "SELECT count() FROM DB.sales_fact_current").await, "1\n");

    let at = db.peek_lsn() + 100;
    let truncate = debezium_body("order_items", "t", None, None, at);
    let late_old_item = debezium_body("order_items", "c", None, Some(item(5, 3, 2, 1, 100).json()), at - 50);
    let new_item = debezium_body("order_items", "c", None, Some(item(6, 3, 2, 2, 100).json()), at + 50);
    assert_all_ok(&run(&pipeline, &[truncate]).await);
    assert_eq!(tsv(&pipeline, "SELECT count() FROM DB.sales_fact_current").await, "0\n");
    // An insert from before the truncation, delivered after it, stays truncated.
    assert_all_ok(&run(&pipeline, &[late_old_item, new_item]).await);
    assert_eq!(tsv(&pipeline, "SELECT order_item_id, quantity FROM DB.sales_fact_current").await, "6\t2\n");
    assert_eq!(tsv(&pipeline, "SELECT id FROM DB.order_items_current").await, "6\n");
    drop_database(&database).await;
}

#[tokio::test]
async fn primary_key_change_moves_the_fact() {
    let (pipeline, database) = fresh_pipeline("key").await;
    let mut db = one_fact();
    // Debezium: delete of the old key, tombstone, create of the new key.
    db.delete("order_items", 4);
    db.upsert_item(item(5, 3, 2, 1, 100));
    // Deliver the new key before the old key's delete.
    let mut events = db.events.clone();
    events.reverse();
    assert_all_ok(&run(&pipeline, &events).await);
    assert_eq!(tsv(&pipeline, "SELECT order_item_id FROM DB.sales_fact_current").await, "5\n");

    // The same for a customer: its orders' facts disappear with the old key.
    let before = db.events.len();
    db.delete("customers", 1);
    db.upsert_customer(customer(9, "Ada"));
    assert_all_ok(&run(&pipeline, &db.events[before..]).await);
    assert_eq!(tsv(&pipeline, "SELECT count() FROM DB.sales_fact_current").await, "0\n");
    drop_database(&database).await;
}

#[tokio::test]
async fn one_poison_message_in_a_thousand_fails_alone() {
    let (pipeline, database) = fresh_pipeline("poison").await;
    let mut db = SourceDb::default();
    db.upsert_customer(customer(1, "Ada"));
    db.upsert_product(product(2, "Lamp", 100));
    db.upsert_order(order(3, 1, "paid"));
    for id in 0..996 {
        db.upsert_item(item(100 + id, 3, 2, 1, 100));
    }
    let mut bodies = db.events.clone();
    // An undecodable precise decimal: valid JSON, valid envelope, poison value.
    let mut bad = item(99, 3, 2, 1, 100).json();
    bad["price"] = json!("not base64!");
    bodies.insert(500, debezium_body("order_items", "c", None, Some(bad), 5_000_000));
    assert_eq!(bodies.len(), 1_000);

    let started = pipeline.warehouse().statements_sent();
    let reports = run(&pipeline, &bodies).await;
    let statements = pipeline.warehouse().statements_sent() - started;
    let failed: Vec<usize> =
        reports.iter().enumerate().filter(|(_, r)| r.outcome.is_failure()).map(|(i, _)| i).collect();
    assert_eq!(failed, vec![500]);
    let MessageOutcome::Failed { class, code, .. } = &reports[500].outcome else { unreachable!() };
    assert_eq!(*class, ErrorClass::Poison);
    assert!(code.starts_with("value."), "{code}");
    assert_eq!(tsv(&pipeline, "SELECT count() FROM DB.order_items_current").await, "996\n");
    assert_eq!(tsv(&pipeline, "SELECT count() FROM DB.sales_fact_current").await, "996\n");

    // Round trips do not grow with the batch: a batch of 3 costs as many statements, give or
    // take the index and mirror tables it has no rows for (3 of them here), the first batch's
    // pinning of its mirrors' version scales (read, pin, read again: once per process) and its
    // watermarks (read once per process, and written: the small batch's redelivered changes
    // move no watermark).
    let small: Vec<String> = bodies[..3].to_vec();
    let started = pipeline.warehouse().statements_sent();
    assert_all_ok(&run(&pipeline, &small).await);
    let small_statements = pipeline.warehouse().statements_sent() - started;
    assert!(
        statements <= small_statements + 3 + 3 + 2,
        "1000 messages took {statements} statements, 3 took {small_statements}"
    );
    // 3 index inserts, 4 mirror inserts, 3 index lookups, 5 snapshot lookups, 1 fact insert, and
    // on a fresh warehouse the 3 statements that pin the version scales; 1 watermark insert
    // (concurrent with the mirrors'), and once per process the watermarks' read.
    assert!(statements <= 16 + 3 + 2, "{statements} statements for one invocation");
    drop_database(&database).await;
}

#[tokio::test]
async fn wrong_password_and_missing_table_are_systemic_not_poison() {
    let (pipeline, database) = fresh_pipeline("systemic").await;
    let body = debezium_body("customers", "c", None, Some(customer(1, "Ada").json()), 10);

    let mut wrong = settings(&database);
    wrong.user = "cdc".into();
    wrong.password = "not-the-password".into();
    let locked_out = Pipeline::new(DecodeOptions::default(), Warehouse::new(&wrong));
    let err = locked_out.process(&[message("m1", body.clone())], deadline()).await.expect_err("systemic");
    assert!(err.is_auth, "{err}");
    assert_eq!(err.code, "clickhouse.auth");

    pipeline.warehouse().execute(&format!("DROP TABLE {database}.customers")).await.unwrap();
    let err = pipeline.process(&[message("m1", body)], deadline()).await.expect_err("systemic");
    assert_eq!(err.code, "clickhouse.unknown_table");
    drop_database(&database).await;
}

#[tokio::test]
async fn clickhouse_down_is_transient_for_every_message() {
    let mut unreachable = settings("nowhere");
    unreachable.url = "http://127.0.0.1:1".into();
    let pipeline = Pipeline::new(DecodeOptions::default(), Warehouse::new(&unreachable));
    let body = debezium_body("customers", "c", None, Some(customer(1, "Ada").json()), 10);
    let reports = pipeline
        .process(
            &[message("m1", body), message("m2", String::new())],
            Instant::now() + std::time::Duration::from_secs(2),
        )
        .await
        .expect("an outage is not systemic");
    assert!(
        matches!(reports[0].outcome, MessageOutcome::Failed { class: ErrorClass::Transient, .. }),
        "{:?}",
        reports[0].outcome
    );
    assert_eq!(reports[1].outcome, MessageOutcome::Skipped("tombstone"));
}

#[tokio::test]
async fn deletions_keep_the_parent_keys_they_had_even_after_merges() {
    let (pipeline, database) = fresh_pipeline("tomb").await;
    let mut db = one_fact();
    assert_all_ok(&run(&pipeline, &db.events).await);
    // Item and order deleted in one transaction: the delete events carry only the keys.
    let before = db.events.len();
    db.delete("order_items", 4);
    db.delete("orders", 3);
    assert_all_ok(&run(&pipeline, &db.events[before..]).await);
    assert_eq!(tsv(&pipeline, "SELECT count() FROM DB.sales_fact_current").await, "0\n");
    // Once merged, only the deletions remain; they still name their parents.
    for table in ["order_items", "orders", "sales_fact"] {
        pipeline.warehouse().execute(&format!("OPTIMIZE TABLE {database}.{table} FINAL")).await.unwrap();
    }
    assert_eq!(
        tsv(&pipeline, "SELECT id, order_id, product_id, _is_deleted FROM DB.order_items").await,
        "4\t3\t2\t1\n"
    );
    assert_eq!(tsv(&pipeline, "SELECT id, customer_id, _is_deleted FROM DB.orders").await, "3\t1\t1\n");
    // Redelivered deletions and later dimension changes re-derive the fact: it stays deleted.
    let mut again = db.events[before..].to_vec();
    let before = db.events.len();
    db.upsert_product(product(2, "Lamp v2", 100));
    db.upsert_customer(customer(1, "Ada v2"));
    again.extend_from_slice(&db.events[before..]);
    assert_all_ok(&run(&pipeline, &again).await);
    assert_eq!(tsv(&pipeline, "SELECT count() FROM DB.sales_fact_current").await, "0\n");
    // Merged again, not read with FINAL: on current servers FINAL hides `_is_deleted` rows.
    pipeline.warehouse().execute(&format!("OPTIMIZE TABLE {database}.order_items FINAL")).await.unwrap();
    assert_eq!(tsv(&pipeline, "SELECT order_id, product_id, _is_deleted FROM DB.order_items").await, "3\t2\t1\n");
    drop_database(&database).await;
}

/// A product sold 150,000 times is renamed: the re-derivation runs in bounded pages, continues
/// in follow-up messages when the invocation's time runs out, and ends with every fact renamed.
/// Nothing is poison, whatever the fan-out.
#[tokio::test]
async fn a_product_with_150000_items_is_renamed_through_bounded_pages_and_follow_ups() {
    const ITEMS: u64 = 150_000;
    let (_, database) = fresh_pipeline("fanout").await;
    // Two pages per invocation (on the schema the first pipeline created): the re-derivation
    // must continue in follow-up messages.
    let pipeline = Pipeline::new(DecodeOptions::default(), Warehouse::new(&settings(&database))).with_page_budget(2);
    let mut db = SourceDb::default();
    db.upsert_customer(customer(1, "Ada"));
    db.upsert_product(product(2, "Lamp", 100));
    db.upsert_order(order(3, 1, "paid"));
    assert_all_ok(&run(&pipeline, &db.events).await);
    // The items, as earlier invocations would have written them: mirror rows and index entries.
    for sql in [
        format!(
            "INSERT INTO DB.order_items (id, order_id, product_id, quantity, price, _version, _is_deleted) \
             SELECT toInt64(number + 1000), toInt64(3), toInt64(2), toInt32(1), toDecimal128(1, 6), toUInt64(1000), \
             toUInt8(0) FROM numbers({ITEMS})"
        ),
        format!("INSERT INTO DB._items_by_product SELECT toInt64(2), toInt64(number + 1000) FROM numbers({ITEMS})"),
        format!("INSERT INTO DB._items_by_order SELECT toInt64(3), toInt64(number + 1000) FROM numbers({ITEMS})"),
    ] {
        let sql = sql.replace("DB.", &format!("{database}."));
        pipeline.warehouse().execute(&sql).await.expect("seed");
    }

    db.events.clear();
    db.upsert_product(product(2, "Lamp v2", 100));
    let mut queue = db.events.clone();
    let mut invocations = 0;
    while let Some(body) = queue.pop() {
        invocations += 1;
        assert!(invocations <= 100, "no progress after {invocations} invocations");
        let reports = pipeline.process(&[message(format!("m{invocations}"), body.clone())], deadline()).await.unwrap();
        match &reports[0].outcome {
            MessageOutcome::Failed { class: ErrorClass::Poison, code, .. } => panic!("dead-lettered: {code}"),
            // Retried by SQS.
            MessageOutcome::Failed { .. } => queue.push(body),
            _ => queue.extend(reports[0].follow_ups.iter().cloned()),
        }
    }
    // 150,000 items in pages of 10,000, two pages per invocation: 8 invocations.
    assert_eq!(invocations, 8, "the re-derivation should have continued in follow-ups");
    let renamed = tsv(&pipeline, "SELECT countIf(product_name = 'Lamp v2'), count() FROM DB.sales_fact_current").await;
    assert_eq!(renamed, format!("{ITEMS}\t{ITEMS}\n"));
    drop_database(&database).await;
}

/// DMS from PostgreSQL: two updates of one row in one transaction share the commit time; their
/// stream positions order them, so delivered in reverse the later value still wins in ClickHouse.
#[tokio::test]
async fn dms_changes_of_one_transaction_delivered_in_reverse_end_with_the_later_value() {
    let (pipeline, database) = fresh_pipeline("dms_order").await;
    let body = |name: &str, position: &str, record: u32| {
        format!(
            r#"{{"data":{{"id":7,"email":"c7@x.io","name":"{name}","country":"UK","city":"London","created_at":"2024-01-01T00:00:00Z"}},"metadata":{{"commit-timestamp":"2024-07-29T00:58:44.886717Z","operation":"update","partition-key-type":"schema-table","record-type":"data","schema-name":"public","stream-position":"{position}","table-name":"customers","timestamp":"2024-07-29T00:58:44.895275Z","transaction-id":1140,"transaction-record-id":{record}}}}}"#
        )
    };
    let first = body("first", "00000002/7C007328.2.00000002/7C007328", 1);
    let second = body("second", "00000002/7C007328.3.00000002/7C0073C0", 2);
    assert_all_ok(&run(&pipeline, &[second]).await);
    assert_all_ok(&run(&pipeline, &[first]).await);
    assert_eq!(tsv(&pipeline, "SELECT name FROM DB.customers_current").await, "second\n");
    drop_database(&database).await;
}

#[tokio::test]
async fn tables_an_earlier_release_created_get_the_lookup_block_sizes_on_current_servers() {
    let database = fresh_database("blocks");
    let options = cdc_clickhouse::WarehouseOptions {
        history: cdc_core::tables::SourceTable::ALL.into_iter().collect(),
        ..Default::default()
    };
    let warehouse = Warehouse::with_options(&settings(&database), &options);
    let dialect = warehouse.dialect().await.expect("server answers");
    // `orders` as an earlier release created it: small granules, the server's block sizes.
    warehouse.execute(&format!("CREATE DATABASE {database}")).await.expect("database");
    warehouse
        .execute(&format!(
            "CREATE TABLE {database}.orders (id Int64, customer_id Int64, order_date DateTime('UTC'), status String, \
             total Decimal(38, 6), _version UInt64, _is_deleted UInt8) ENGINE = ReplacingMergeTree(_version) \
             ORDER BY id SETTINGS index_granularity = 1024"
        ))
        .await
        .expect("old table");
    warehouse.ensure_schema().await.expect("migrate");
    let engines = warehouse
        .fetch_tsv(&format!(
            "SELECT name, engine_full LIKE '%max_compress_block_size = 16384%' FROM system.tables \
             WHERE database = '{database}' AND name IN ('orders', 'order_items', 'sales_fact', 'orders_history', \
             '_watermarks') ORDER BY name"
        ))
        .await
        .expect("tables");
    match dialect {
        // The old table was moved over, the new one created with them; facts, histories
        // (written on every change, read by analysts) and bookkeeping keep the defaults.
        Dialect::Modern => {
            assert_eq!(engines, "_watermarks\t0\norder_items\t1\norders\t1\norders_history\t0\nsales_fact\t0\n")
        }
        // 18.16 has no such table settings: the server's profile decides (README).
        Dialect::Legacy => {
            assert_eq!(engines, "_watermarks\t0\norder_items\t0\norders\t0\norders_history\t0\nsales_fact\t0\n")
        }
    }
    // Every mirror has the tie-break of rows filled again from a history (docs/history.md,
    // "Mirrors"), the old one added, and migrating again changes nothing.
    Warehouse::with_options(&settings(&database), &options).ensure_schema().await.expect("migrate again");
    let refill = warehouse
        .fetch_tsv(&format!(
            "SELECT table FROM system.columns WHERE database = '{database}' AND name = '_refill' \
             AND table NOT LIKE '%_current' ORDER BY table"
        ))
        .await
        .expect("columns");
    assert_eq!(refill, "customers\norder_items\norders\nproducts\n");
    drop_database(&database).await;
}

/// A statement the client has given up on must not keep running on the server: every statement
/// carries `max_execution_time` (the retry policy's attempt timeout unless configured), so the
/// server stops it and says so with a transient error the retry policy can act on.
#[tokio::test]
async fn the_server_stops_a_statement_that_runs_past_its_bound() {
    use cdc_clickhouse::WarehouseOptions;
    use cdc_core::error::Classify;
    use std::time::Duration;
    let options = WarehouseOptions { statement_timeout: Some(Duration::from_secs(1)), ..WarehouseOptions::default() };
    let warehouse = Warehouse::with_options(&settings("default"), &options);
    let started = Instant::now();
    // Several seconds of work on either engine without the bound.
    let result = warehouse.fetch_tsv("SELECT count() FROM numbers(20000000000) WHERE sipHash64(number) = 0").await;
    let error = result.expect_err("the server stops the statement at its bound");
    assert_eq!(error.server_code(), Some(159), "TIMEOUT_EXCEEDED, got {error}");
    assert_eq!(error.class(), ErrorClass::Transient, "{error}");
    assert!(started.elapsed() < Duration::from_secs(30), "stopped after {:?}", started.elapsed());
}

/// A change of customer `id` at log position `lsn`, committed `commit_ms` after 2024-01-01.
fn customer_at(id: i64, lsn: u64, commit_ms: u64) -> String {
    let body = debezium_body("customers", "c", None, Some(customer(id, "Ada").json()), lsn);
    let mut event: serde_json::Value = serde_json::from_str(&body).unwrap();
    event["source"]["ts_ms"] = json!(1_704_067_200_000u64 + commit_ms);
    event.to_string()
}

#[tokio::test]
async fn a_source_whose_log_positions_restart_is_detected_and_a_forged_position_stalls_nothing() {
    const HOUR_MS: u64 = 3_600_000;
    let (pipeline, database) = fresh_pipeline("restart").await;
    // The watermark: position 9,000,000, committed at 10 h.
    assert_all_ok(&run(&pipeline, &[customer_at(1, 9_000_000, 10 * HOUR_MS)]).await);
    // A delayed old change committed before it, and a transaction open across it (30 min):
    // lower positions of the same log.
    assert_all_ok(&run(&pipeline, &[customer_at(2, 1_000, 9 * HOUR_MS)]).await);
    assert_all_ok(&run(&pipeline, &[customer_at(3, 8_000_000, 10 * HOUR_MS + HOUR_MS / 2)]).await);
    assert_eq!(pipeline.regressions_detected(), 0);
    // A new log (a switchover): lower positions, committed 2 h later. Detected (logged at error
    // level, counted); still written, so that a forged high position, which would look the same
    // to every later change, can never hold a whole mirror back.
    let restarted = customer_at(4, 2_000, 12 * HOUR_MS);
    assert_all_ok(&run(&pipeline, std::slice::from_ref(&restarted)).await);
    assert_eq!(pipeline.regressions_detected(), 1);
    assert_eq!(tsv(&pipeline, "SELECT id FROM DB.customers_current ORDER BY id").await, "1\n2\n3\n4\n");
    // Another process (a cold start) reads the watermark from ClickHouse.
    let cold = Pipeline::new(DecodeOptions::default(), Warehouse::new(&settings(&database)));
    assert_all_ok(&run(&cold, &[restarted, customer_at(5, 9_500_000, 12 * HOUR_MS)]).await);
    assert_eq!(cold.regressions_detected(), 1, "above the watermark: the log moves on");
    drop_database(&database).await;
}
