//! Every real-world capture under `../shared/realworld/raw/` (sources: `../shared/realworld/
//! SOURCES.md`) through the whole pipeline into a real ClickHouse: each table that occurs among
//! them is captured into a generic mirror of its own, keyed by its real primary key. Per file:
//! the message outcome, and for every delivered change the row in `<target>_current` with the
//! values the file says (decimals exactly, timestamps at µs). The files are read where they
//! are, never copied. Decoding alone is cdc-core's
//! `tests/it/realworld.rs`.

use cdc_clickhouse::RawSql;
use cdc_clickhouse::Warehouse;
use cdc_clickhouse::dialect::Dialect;
use cdc_core::decode::DecodeOptions;
use cdc_core::error::ErrorClass::{self, Poison, Waiting};
use cdc_core::tables::TableMapping;
use cdc_lambda::pipeline::{Pipeline, Process};
use cdc_lambda::sqs::message::{Message, MessageOutcome};

use crate::support::*;

/// Every table of the change files, each into its own mirror with its real key. The two files
/// of sales-table names whose columns are not the sales columns (the documentation's
/// `customers`, the tutorial's `orders`) are taken by database into generic mirrors; what the
/// sales mirrors make of them is `sales_named_tables_with_other_columns_are_poison`.
const MAPPING: &str = "postgres.public.customers=doc_customers, \
                       inventory.customers=inventory_customers, \
                       public.film(film_id), \
                       public.flights, \
                       lineage.order=lineage_order(row_id), \
                       testdb.public.orders=testdb_orders(order_id), \
                       public.source_table, \
                       public.transactions, \
                       public.widgets, \
                       public.scalars, \
                       lab_logix_crm_replica.acy_leads, \
                       sbtest.sbtest_x, \
                       public.demo, \
                       public.foo";

/// How a file becomes message bodies.
#[derive(Debug, Clone, Copy)]
enum Body {
    /// The file as it is: one message.
    Raw,
    /// A documentation example after removing its printed placeholders (as cdc-core's `tests/it/realworld.rs`).
    Repaired,
    /// Two documentation values in one file: one message each.
    Split,
    /// An SQS event: one message per record body.
    SqsRecords,
    /// The row's image before the TOAST example's update (the file with a biography and an LSN
    /// below its own): the base that the update's placeholder keeps.
    ToastBase,
}

#[derive(Debug, Clone, Copy)]
enum Outcome {
    Delivered,
    Skipped(&'static str),
    Failed(ErrorClass, &'static str),
}

/// What `<target>_current` holds afterwards. `µs(c)` reads a timestamp column as µs since the
/// epoch on either engine.
#[derive(Debug, Clone, Copy)]
enum Check {
    /// (target, condition on the key, columns, expected TSV line)
    Row(&'static str, &'static str, &'static str, &'static str),
    /// No live row for the key.
    Gone(&'static str, &'static str),
    /// The number of live rows.
    Count(&'static str, u64),
}

use Body::*;
use Check::*;
use Outcome::*;

const BIOGRAPHY: &str = "Written before the update";

/// (file, bodies, outcome of each message, checks afterwards, why); run in this order, one
/// invocation per step.
#[rustfmt::skip]
const STEPS: &[(&str, Body, Outcome, &[Check], &str)] = &[
    ("aws-example-eventbridge-event-obj.json", Raw, Failed(Poison, "envelope.unknown"), &[], "an EC2 state change is no change event"),
    ("aws-example-sqs-event-obj.json", SqsRecords, Failed(Poison, "envelope.unknown"), &[], "the body {a, b} is no envelope"),
    ("aws-example-sqs-event.json", SqsRecords, Failed(Poison, "body.not_json"), &[], "`Message Body`"),
    ("sns-to-sqs-notification.json", Raw, Failed(Poison, "body.not_json"), &[], "`Hello world!`"),

    // TOAST: without an earlier image the placeholder has no value to keep; retried.
    ("blog-toast-update.json", Raw, Failed(Waiting, "toast.base_missing"), &[], "no earlier image of 1004 yet"),
    ("blog-toast-update.json", ToastBase, Delivered,
     &[Row("inventory_customers", "id = 1004", "first_name, biography", "Dana\tWritten before the update")], "the earlier image"),
    ("blog-toast-update.json", Raw, Delivered,
     &[Row("inventory_customers", "id = 1004", "first_name, last_name, email, biography",
           "Dana\tKretchmar\tannek@noanswer.org\tWritten before the update"),
       Count("inventory_customers", 1)],
     "the unchanged biography is kept from the stored row"),
    ("blog-toast-update.json", Raw, Delivered,
     &[Row("inventory_customers", "id = 1004", "first_name, biography, _version", "Dana\tWritten before the update\t34650016"),
       Count("inventory_customers", 1)],
     "delivered again (SQS delivers at least once): already stored, not retried into the DLQ"),

    ("dbz-cap-film-read.json", Raw, Delivered,
     &[Row("film", "film_id = 778",
           "title, release_year, toInt64(rental_rate * 100), toInt64(replacement_cost * 100), rating, µs(last_update), special_features",
           "Secrets Paradise\t2006\t499\t2499\tG\t1369579858951000\t[\"Trailers\",\"Commentaries\"]")],
     "Decimal(4,2) AfM= is 4.99, CcM= 24.99; MicroTimestamp; enum; string array as JSON"),
    ("dbz-cap-flights-read.json", Raw, Delivered,
     &[Row("flights", "id = '855ac320-1067-4d99-b4f1-6d46c64c514f'",
           "origin, destination, capacity, µs(boarding_at), µs(landing_at), µs(updated_at)",
           "Minha casa\tNossa\t2\t1752689413467000\t1752948613467000\t1753900618596117")],
     "Uuid key; ZonedTimestamp with 6 fraction digits"),
    ("dbz-cap-lineage-order-create.json", Raw, Delivered,
     &[Row("lineage_order", "row_id = '0ff624a0-66e4-4018-839f-3c758521ac8a'",
           "ticker, quantity, toInt64(price * 100), µs(order_date_utc), buyer_id, seller_id",
           "NASDAQ:AAPL\t681\t14636\t1632730102055000\t2\t1")],
     "VariableScaleDecimal {scale 2, OSw=} is 146.36"),
    ("dbz-cap-orders-read.json", Raw, Delivered,
     &[Row("testdb_orders", "order_id = 2", "customer_name, product, quantity, toInt64(price * 100), µs(order_date), status",
           "Jane Smith\tMouse\t2\t2550\t1767610078945635\tPENDING")],
     "Decimal(10,2) CfY= is 25.50"),
    ("dbz-cap-source-table-create.json", Raw, Delivered, &[Row("source_table", "id = 8", "name", "test1")], "Debezium 2.7 with schema"),
    ("dbz-cap-transactions-read.json", Raw, Delivered,
     &[Row("transactions", "id = 38352", "user_id, toInt64(amount * 100), card_type, merchant_id, µs(created_at)",
           "1715\t235873\tMASTERCARD\t40\t1767806283683652")],
     "Decimal(10,2) A5lh is 2358.73"),
    ("dbz-cap-unwrap-orders.json", Raw, Failed(Poison, "envelope.missing_field"), &[], "flattened without __table: no identity"),

    ("dbz-cap-widgets-create.json", Raw, Delivered, &[Row("widgets", "id = 'w1'", "name, toUInt8(active)", "gadget\t1")], "text key"),
    ("dbz-cap-widgets-update.json", Raw, Delivered, &[Row("widgets", "id = 'w1'", "name, toUInt8(active)", "gadget2\t0")], "update without before"),
    ("dbz-cap-widgets-delete.json", Raw, Delivered, &[Gone("widgets", "id = 'w1'")], "zero values in before are no row"),

    ("dbz-doc-create.json", Raw, Delivered,
     &[Row("doc_customers", "id = 1", "first_name, last_name, email", "Anne\tKretchmar\tannek@noanswer.org")], "documentation create"),
    ("dbz-doc-update.txt", Repaired, Delivered,
     &[Row("doc_customers", "id = 1", "first_name, last_name", "Anne Marie\tKretchmar"), Count("doc_customers", 1)],
     "the documentation reuses the create's LSN: the later delivery wins the tie"),
    ("dbz-doc-truncate.txt", Repaired, Delivered, &[Count("doc_customers", 0)], "truncation hides every earlier row"),
    ("dbz-doc-delete.txt", Repaired, Delivered, &[Gone("doc_customers", "id = 1"), Count("doc_customers", 0)], "key-only before"),
    ("dbz-doc-message-tx.txt", Repaired, Skipped("logical_message"), &[], "logical decoding message"),
    ("dbz-doc-message-nontx.txt", Repaired, Skipped("logical_message"), &[], "missing brace restored"),
    ("dbz-doc-tx-begin-end.txt", Split, Skipped("transaction_boundary"), &[], "BEGIN and END"),
    ("dbz-doc-tx-enriched.txt", Raw, Failed(Poison, "body.not_json"), &[], "`source: { ... }` cannot be reconstructed"),

    ("dbz-fixture-scalars-update.json", Raw, Delivered,
     &[Row("scalars", "id = 1", "name, value, created_at, updated_at",
           "scalar\t1.04\t2026-05-24T02:49:32.359424Z\t2026-05-31T02:27:24.242870Z")],
     "`fields: []` schema: values take their JSON types (double-mode decimal, ZonedTimestamp text)"),

    ("dms-blog-control.json", Raw, Skipped("dms_control"), &[], "create-table of awsdms_apply_exceptions"),
    ("dms-blog-load.json", Raw, Delivered,
     &[Row("acy_leads", "id = 315209", "name, lead_status, country, created_at, description",
           "dsdsd dsdsdds\tContacted\tCB\t2020-01-09T04:13:38Z\tdshl asdjsakl haa hausaa s")],
     "full load, version 1"),
    ("dms-blog-insert.json", Raw, Delivered,
     &[Row("acy_leads", "id = 315233", "name, lead_status, country, state, created_by_user_id",
           "sau tchy\tNew Lead\tChina\tGuangdong\t36"),
       Count("acy_leads", 2)],
     "insert with transaction-id only: versioned by its timestamp; new column `state` added"),
    ("dms-doc-kafka-control.json", Raw, Skipped("dms_control"), &[], "create-table"),
    ("dms-doc-kafka-insert.json", Raw, Delivered,
     &[Row("sbtest_x", "id = 100000161", "fname, lname, REGION", "val61s\tval61s\tval61s")], "MySQL binlog position"),
    ("dms-kinesis-rds-pg-control.json", Raw, Skipped("dms_control"), &[], "relay members beside"),
    ("dms-kinesis-rds-pg-load.json", Raw, Delivered, &[Row("demo", "id = 393", "name, age", "Test\t4")], "relay members ignored"),

    ("dms-rds-pg-control-drop-table.json", Raw, Skipped("dms_control"), &[], "drop-table"),
    ("dms-rds-pg-control-create-table.json", Raw, Skipped("dms_control"), &[], "create-table"),
    ("dms-rds-pg-control-apply-exceptions.json", Raw, Skipped("dms_control"), &[], "awsdms_apply_exceptions"),
    ("dms-rds-pg-load.json", Raw, Delivered, &[Row("foo", "id = 42", "name, age, attributes", "John\t30\t{\"foo\": \"bar\"}")], "full load"),
    ("dms-rds-pg-insert.json", Raw, Delivered, &[Row("foo", "id = 46", "name, age, attributes", "Jane\t31\t{\"baz\": \"qux\"}")], "insert"),
    ("dms-rds-pg-update-value.json", Raw, Delivered,
     &[Row("foo", "id = 42", "name, age, attributes", "John\t33\t{\"foo\": \"bar\"}")], "outranks the loaded row"),
    ("dms-rds-pg-update-pk.json", Raw, Delivered,
     &[Row("foo", "id = 45", "name, age", "Jane\t31"), Gone("foo", "id = 46"), Count("foo", 2)], "the key moves from 46 to 45"),
    ("dms-rds-pg-delete.json", Raw, Delivered,
     &[Gone("foo", "id = 45"), Row("foo", "id = 42", "age", "33"), Count("foo", 1)], "delete with null columns"),
];

fn pipeline(database: &str, mapping: &str) -> Pipeline {
    let options = DecodeOptions { tables: TableMapping::parse(mapping).expect("mapping"), ..DecodeOptions::default() };
    Pipeline::new(options, Warehouse::new(&settings(database)))
}

/// Only the printed placeholders are removed; every value is the documentation's own.
fn repair(text: &str) -> String {
    let text = text
        .replace("\"schema\": { ... },", "")
        .replace(",\n    }\n}", "\n    }\n}")
        .replace("\"ts_ns\": 1465581902461496187,\n    }", "\"ts_ns\": 1465581902461496187\n    }");
    if serde_json::from_str::<serde::de::IgnoredAny>(&text).is_ok() { text } else { text + "}" } // nontx lacks its brace
}

fn bodies(name: &str, how: Body) -> Vec<String> {
    let text = raw(name);
    match how {
        Raw => vec![text],
        Repaired => vec![repair(&text)],
        Split => {
            let (begin, end) = text.split_once("}\n\n{").expect("two values");
            vec![format!("{begin}}}"), format!("{{{end}")]
        }
        SqsRecords => {
            let event: aws_lambda_events::sqs::SqsEvent = serde_json::from_str(&text).expect("an SQS event");
            event.records.into_iter().map(|r| r.body.unwrap_or_default()).collect()
        }
        ToastBase => {
            let base = text
                .replace("\"__debezium_unavailable_value\"", &format!("\"{BIOGRAPHY}\""))
                .replace("\"lsn\": 34650016", "\"lsn\": 34650000")
                .replace("\"op\": \"u\"", "\"op\": \"c\"");
            assert!(base.contains(BIOGRAPHY) && base.contains("34650000") && base.contains("\"c\""), "{name}");
            vec![base]
        }
    }
}

async fn tsv(pipeline: &Pipeline, modern: bool, sql: &str) -> String {
    let sql = sql
        .replace("DB.", &format!("{}.", pipeline.warehouse().database()))
        .replace("µs(", if modern { "toUnixTimestamp64Micro(" } else { "(" });
    pipeline.warehouse().fetch_tsv(&sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"))
}

#[tokio::test]
async fn every_real_change_lands_with_the_values_its_file_says() {
    if !captures_present() {
        return;
    }
    let names = raw_names();
    let mut covered: Vec<String> = STEPS.iter().map(|s| s.0.to_string()).collect();
    covered.sort();
    covered.dedup();
    assert_eq!(names, covered, "every raw file goes through the pipeline");

    let database = fresh_database("realworld");
    let pipeline = migrated(pipeline(&database, MAPPING)).await;
    let modern = pipeline.warehouse().dialect().await.expect("dialect") == Dialect::Modern;

    for (step, (name, how, outcome, checks, why)) in STEPS.iter().enumerate() {
        let messages: Vec<Message> =
            bodies(name, *how).into_iter().enumerate().map(|(i, b)| message(format!("s{step}m{i}"), b)).collect();
        let reports = pipeline.process(&messages, deadline()).await.expect("no systemic fault of the whole batch");
        assert_eq!(reports.len(), messages.len(), "{name}");
        for report in &reports {
            assert_outcome(name, outcome, &report.outcome, &format!("step {step}: {why}"));
        }
        for check in *checks {
            match check {
                Row(target, key, columns, expected) => {
                    let got =
                        tsv(&pipeline, modern, &format!("SELECT {columns} FROM DB.{target}_current WHERE {key}")).await;
                    assert_eq!(got, format!("{expected}\n"), "{name} (step {step}): {target} {key}: {why}");
                }
                Gone(target, key) => {
                    let got =
                        tsv(&pipeline, modern, &format!("SELECT count() FROM DB.{target}_current WHERE {key}")).await;
                    assert_eq!(got, "0\n", "{name} (step {step}): {target} {key} deleted: {why}");
                }
                Count(target, n) => {
                    let got = tsv(&pipeline, modern, &format!("SELECT count() FROM DB.{target}_current")).await;
                    assert_eq!(got, format!("{n}\n"), "{name} (step {step}): rows of {target}: {why}");
                }
            }
        }
    }

    // A column that was only ever NULL has no ClickHouse column (flights.created_at).
    let columns = tsv(
        &pipeline,
        modern,
        &format!("SELECT name FROM system.columns WHERE database = '{database}' AND table = 'flights' ORDER BY name"),
    )
    .await;
    assert!(!columns.contains("created_at") && columns.contains("updated_at"), "{columns}");

    // The same bodies in one invocation, in reverse order (deletes before inserts, the TOAST
    // update before its base, the key move before the insert it moves): every message has its
    // outcome and the mirrors end exactly as above, column types and versions included.
    let sequential = snapshot(&pipeline, modern).await;
    let batch_database = fresh_database("realworld_batch");
    let batch = migrated(self::pipeline(&batch_database, MAPPING)).await;
    let mut expected = Vec::new();
    let mut messages = Vec::new();
    for (step, (name, how, outcome, _, _)) in STEPS.iter().enumerate().rev() {
        if matches!(outcome, Failed(Waiting, _)) {
            continue; // the TOAST update before its base existed: delivered in its later step
        }
        for (i, body) in bodies(name, *how).into_iter().enumerate() {
            messages.push(message(format!("s{step}m{i}"), body));
            expected.push((*name, *outcome));
        }
    }
    let reports = batch.process(&messages, deadline()).await.expect("no systemic fault of the whole batch");
    assert_eq!(reports.len(), messages.len());
    for ((name, outcome), report) in expected.iter().zip(&reports) {
        assert_outcome(name, outcome, &report.outcome, "one batch, reverse order");
    }
    assert_eq!(snapshot(&batch, modern).await, sequential);
    drop_database(&batch_database).await;
    drop_database(&database).await;
}

const TARGETS: &[&str] = &[
    "doc_customers",
    "inventory_customers",
    "film",
    "flights",
    "lineage_order",
    "testdb_orders",
    "source_table",
    "transactions",
    "widgets",
    "scalars",
    "acy_leads",
    "sbtest_x",
    "demo",
    "foo",
];

/// Every mirror's columns (name and type) and live rows (columns by name, rows sorted).
async fn snapshot(pipeline: &Pipeline, modern: bool) -> String {
    let database = pipeline.warehouse().database().to_string();
    let mut all = String::new();
    for target in TARGETS {
        let columns = tsv(
            pipeline,
            modern,
            &format!("SELECT name, type FROM system.columns WHERE database = '{database}' AND table = '{target}' ORDER BY name"),
        )
        .await;
        let names: Vec<&str> = columns.lines().map(|l| l.split('\t').next().unwrap()).collect();
        assert!(names.contains(&"_version"), "{target} exists: {columns}");
        let list = names.join(", ");
        let rows = tsv(pipeline, modern, &format!("SELECT {list} FROM DB.{target}_current ORDER BY {list}")).await;
        all += &format!("== {target}\n{columns}--\n{rows}");
    }
    all
}

fn assert_outcome(name: &str, expected: &Outcome, got: &MessageOutcome, why: &str) {
    match (expected, got) {
        (Delivered, MessageOutcome::Delivered) => {}
        (Skipped(kind), MessageOutcome::Skipped(k)) if kind == k => {}
        (Failed(class, code), MessageOutcome::Failed { class: c, code: k, .. }) if (class, code) == (c, k) => {}
        _ => panic!("{name}: expected {expected:?} ({why}), got {got:?}"),
    }
}

/// With the default mapping, the two files whose tables are named like sales tables go to the
/// sales mirrors, whose declared columns they lack: poison, never a row of empty values. The
/// documentation's customers lack `name`, `country`, ...; the tutorial's orders are keyed by
/// `order_id` and have no `id` at all.
#[tokio::test]
async fn sales_named_tables_with_other_columns_are_poison() {
    if !captures_present() {
        return;
    }
    let database = fresh_database("realworld_sales");
    let pipeline =
        migrated(pipeline(&database, "public.customers, public.products, public.orders, public.order_items")).await;
    let modern = pipeline.warehouse().dialect().await.expect("dialect") == Dialect::Modern;
    for (name, code) in [("dbz-doc-create.json", "row.missing_column"), ("dbz-cap-orders-read.json", "row.missing_key")]
    {
        let reports = pipeline.process(&[message(name, raw(name))], deadline()).await.expect("no systemic fault");
        assert!(
            matches!(&reports[0].outcome, MessageOutcome::Failed { class: Poison, code: c, .. } if *c == code),
            "{name}: {:?}",
            reports[0].outcome
        );
    }
    for table in ["customers", "orders", "sales_fact"] {
        assert_eq!(tsv(&pipeline, modern, &format!("SELECT count() FROM DB.{table}")).await, "0\n", "{table}");
    }
    drop_database(&database).await;
}
