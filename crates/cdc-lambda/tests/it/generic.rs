//! Generic mirrors against a real ClickHouse: tables created on first sight with composite keys
//! and every logical type, columns added when a source column first carries a value, TOAST,
//! deletions, truncation, a same-named table of another schema, an incompatible type change
//! (systemic for that table only), and two invocations adding the same column at once.

use cdc_clickhouse::RawSql;
use cdc_clickhouse::Warehouse;
use cdc_clickhouse::dialect::Dialect;
use cdc_core::decode::DecodeOptions;
use cdc_core::error::ErrorClass;
use cdc_core::tables::TableMapping;
use cdc_lambda::pipeline::Pipeline;
use cdc_lambda::sqs::message::MessageOutcome;
use serde_json::{Value as Json, json};

use crate::support::*;

const MAPPING: &str = "public.customers, public.products, public.orders, public.order_items, \
                       public.order_notes(order_id line_no), public.catalog_extras, public.gauges, \
                       archive.customers=archive_customers";

fn pipeline(database: &str) -> Pipeline {
    let options = DecodeOptions { tables: TableMapping::parse(MAPPING).expect("mapping"), ..DecodeOptions::default() };
    Pipeline::new(options, Warehouse::new(&settings(database)))
}

/// A Debezium event of `schema.table`, schemaless (the natural JSON mapping types the values).
fn body(schema: &str, table: &str, op: &str, before: Option<Json>, after: Option<Json>, lsn: u64) -> String {
    let ts_ms = 1_704_067_200_000u64 + lsn;
    json!({
        "before": before, "after": after, "op": op, "ts_ms": ts_ms,
        "source": {"version": "2.5.0.Final", "connector": "postgresql", "name": "oltp", "ts_ms": ts_ms,
                   "snapshot": "false", "db": "oltp", "schema": schema, "table": table, "lsn": lsn},
    })
    .to_string()
}

/// `public.catalog_extras` with its schema block: every logical type Debezium gives these
/// PostgreSQL columns.
fn extras(op: &str, after: Json, lsn: u64) -> String {
    let fields = json!([
        {"type": "int64", "optional": false, "field": "id"},
        {"type": "bytes", "optional": true, "name": "org.apache.kafka.connect.data.Decimal",
         "parameters": {"scale": "4", "connect.decimal.precision": "12"}, "field": "price"},
        {"type": "string", "optional": true, "name": "io.debezium.time.ZonedTimestamp", "field": "seen_at"},
        {"type": "string", "optional": true, "name": "io.debezium.data.Json", "field": "attrs"},
        {"type": "string", "optional": true, "name": "io.debezium.data.Uuid", "field": "ref"},
        {"type": "array", "optional": true, "items": {"type": "string", "optional": true}, "field": "tags"},
        {"type": "bytes", "optional": true, "field": "blob"},
        {"type": "boolean", "optional": true, "field": "flag"},
        {"type": "double", "optional": true, "field": "ratio"},
        {"type": "int32", "optional": true, "name": "io.debezium.time.Date", "field": "day"},
        {"type": "string", "optional": true, "field": "note"},
    ]);
    let value =
        json!({"type": "struct", "fields": fields, "optional": true, "name": "oltp.public.catalog_extras.Value"});
    let mut before = value.clone();
    before["field"] = json!("before");
    let mut after_schema = value;
    after_schema["field"] = json!("after");
    let schema = json!({"type": "struct", "name": "oltp.public.catalog_extras.Envelope",
                        "fields": [before, after_schema, {"type": "string", "optional": false, "field": "op"}]});
    let payload: Json = serde_json::from_str(&body("public", "catalog_extras", op, None, Some(after), lsn)).unwrap();
    json!({"schema": schema, "payload": payload}).to_string()
}

fn extras_row(id: i64, note: Json) -> Json {
    json!({
        "id": id, "price": debezium_decimal(123_400), "seen_at": "2024-01-01T10:00:00.123456Z",
        "attrs": "{\"size\": 2}", "ref": "8c2d6b1e-3f4a-4b5c-9d6e-7f8091a2b3c4", "tags": ["a", null, "b,c"],
        "blob": "AAH/", "flag": true, "ratio": 0.25, "day": 19723, "note": note,
    })
}

#[tokio::test]
async fn generic_tables_are_created_typed_extended_and_kept_apart_by_schema() {
    let database = fresh_database("generic");
    let pipeline = migrated(pipeline(&database)).await;
    let modern = pipeline.warehouse().dialect().await.expect("dialect") == Dialect::Modern;

    let note = |order, line, text: &str| json!({"order_id": order, "line_no": line, "body": text});
    let first = [
        extras("c", extras_row(1, Json::Null), 10),
        body("public", "order_notes", "c", None, Some(note(1, 1, "first")), 11),
        body("public", "order_notes", "c", None, Some(note(1, 2, "second")), 12),
        body("archive", "customers", "c", None, Some(json!({"id": 1, "name": "Archived"})), 13),
        body(
            "public",
            "customers",
            "c",
            None,
            Some(json!({"id": 1, "email": "a@x.io", "name": "Ada", "country": "UK", "city": "London",
                         "created_at": "2024-01-01T00:00:00Z"})),
            14,
        ),
    ];
    assert_all_ok(&run(&pipeline, &first).await);

    // Every logical type in its column; `note` (NULL so far) has no column yet.
    let seen_at = if modern { "toUnixTimestamp64Micro(seen_at)" } else { "seen_at" };
    let day = if modern { "toInt32(day)" } else { "day" };
    let row = tsv(
        &pipeline,
        &format!(
            "SELECT id, toInt64(price * 10000), {seen_at}, attrs, ref, tags, hex(blob), toUInt8(flag), ratio, {day} \
             FROM DB.catalog_extras_current"
        ),
    )
    .await;
    assert_eq!(
        row,
        "1\t123400\t1704103200123456\t{\"size\": 2}\t8c2d6b1e-3f4a-4b5c-9d6e-7f8091a2b3c4\t[\"a\",null,\"b,c\"]\t\
         0001FF\t1\t0.25\t19723\n"
    );
    let columns = tsv(
        &pipeline,
        &format!("SELECT name, type FROM system.columns WHERE database = '{database}' AND table = 'catalog_extras'"),
    )
    .await;
    for column in ["id\tInt64\n", "price\tNullable(Decimal(38, 6))\n", "tags\tNullable(String)\n"] {
        assert!(columns.contains(column), "{column} in {columns}");
    }
    assert!(!columns.contains("note"), "a column that was only ever NULL waits for a value: {columns}");

    // The composite key orders the notes; the same-named table of schema `archive` has its own
    // mirror and never touches the sales `customers`.
    assert_eq!(
        tsv(&pipeline, "SELECT order_id, line_no, body FROM DB.order_notes_current ORDER BY line_no").await,
        "1\t1\tfirst\n1\t2\tsecond\n"
    );
    assert_eq!(tsv(&pipeline, "SELECT id, name FROM DB.archive_customers_current").await, "1\tArchived\n");
    assert_eq!(tsv(&pipeline, "SELECT id, name FROM DB.customers_current").await, "1\tAda\n");

    // A new value in `note` adds the column (and the view shows it); a TOAST placeholder keeps
    // the stored `attrs`; a key-only deletion removes one note; a truncation empties the archive.
    let mut toasted = extras_row(1, json!("now with a note"));
    toasted["attrs"] = json!("__debezium_unavailable_value");
    toasted["ratio"] = json!(0.5);
    let second = [
        extras("u", toasted, 20),
        body("public", "order_notes", "d", Some(json!({"order_id": 1, "line_no": 1})), None, 21),
        body("archive", "customers", "t", None, None, 22),
    ];
    assert_all_ok(&run(&pipeline, &second).await);
    assert_eq!(
        tsv(&pipeline, "SELECT attrs, ratio, note FROM DB.catalog_extras_current").await,
        "{\"size\": 2}\t0.5\tnow with a note\n"
    );
    assert_eq!(tsv(&pipeline, "SELECT line_no FROM DB.order_notes_current").await, "2\n");
    assert_eq!(tsv(&pipeline, "SELECT count() FROM DB.archive_customers_current").await, "0\n");
    assert_eq!(tsv(&pipeline, "SELECT count() FROM DB.customers_current").await, "1\n");

    // A later row without `note` (the source dropped the column): NULL, nothing fails.
    let mut dropped = extras_row(2, Json::Null);
    dropped.as_object_mut().unwrap().remove("note");
    assert_all_ok(&run(&pipeline, &[extras("c", dropped, 30)]).await);
    assert_eq!(
        tsv(&pipeline, "SELECT id, isNull(note) FROM DB.catalog_extras_current ORDER BY id").await,
        "1\t0\n2\t1\n"
    );
    drop_database(&database).await;
}

#[tokio::test]
async fn a_value_its_column_cannot_hold_is_poison_and_its_batch_mates_land() {
    let database = fresh_database("generic_incompatible");
    let pipeline = migrated(pipeline(&database)).await;
    let gauge =
        |id, level: Json, lsn| body("public", "gauges", "c", None, Some(json!({"id": id, "level": level})), lsn);
    assert_all_ok(&run(&pipeline, &[gauge(1, json!(5), 1)]).await);

    // `level` arrives fractional (schemaless: `5` made it Int64): 5.5 cannot be held exactly.
    let reports = run(
        &pipeline,
        &[
            gauge(2, json!(5.5), 2),
            body("public", "order_notes", "c", None, Some(json!({"order_id": 1, "line_no": 1, "body": "x"})), 3),
            gauge(3, json!(6), 4),
        ],
    )
    .await;
    let poison =
        MessageOutcome::Failed { class: ErrorClass::Poison, code: "value.incompatible", table: Some("gauges".into()) };
    assert_eq!(reports[0].outcome, poison, "the message's own fault: to the DLQ, never a stall");
    assert!(!reports[2].outcome.is_failure(), "the table's other messages land: {:?}", reports[2].outcome);
    assert!(!reports[1].outcome.is_failure(), "another table is unaffected: {:?}", reports[1].outcome);
    assert_eq!(tsv(&pipeline, "SELECT id FROM DB.gauges_current ORDER BY id").await, "1\n3\n");

    // An operator widens the column; the same messages then land.
    pipeline
        .warehouse()
        .execute(&format!("ALTER TABLE {database}.gauges MODIFY COLUMN level Nullable(Float64)"))
        .await
        .expect("widen");
    assert_all_ok(&run(&pipeline, &[gauge(2, json!(5.5), 2), gauge(3, json!(6), 4)]).await);
    assert_eq!(tsv(&pipeline, "SELECT id, level FROM DB.gauges_current ORDER BY id").await, "1\t5\n2\t5.5\n3\t6\n");
    drop_database(&database).await;
}

#[tokio::test]
async fn two_invocations_adding_the_same_column_at_once_both_land() {
    let database = fresh_database("generic_race");
    let first = migrated(pipeline(&database)).await;
    let note = |line: i64, column: &str, lsn| {
        let mut row = json!({"order_id": 7, "line_no": line, "body": "b"});
        row[column] = json!(line);
        body("public", "order_notes", "c", None, Some(row), lsn)
    };
    // The table exists; then, in each round, two fresh invocations need the same new column at
    // the same moment.
    assert_all_ok(&run(&first, &[note(100, "line_no", 1)]).await);
    for round in 0..3i64 {
        let (a, b) = (pipeline(&database), pipeline(&database));
        let column = format!("extra_{round}");
        let (left, right) =
            ([note(round * 2, &column, 10 + round as u64)], [note(round * 2 + 1, &column, 20 + round as u64)]);
        let (ra, rb) = tokio::join!(run(&a, &left), run(&b, &right));
        assert_all_ok(&ra);
        assert_all_ok(&rb);
    }
    assert_eq!(
        tsv(&first, "SELECT count(), sum(extra_0), sum(extra_1), sum(extra_2) FROM DB.order_notes_current").await,
        "7\t1\t5\t9\n"
    );
    drop_database(&database).await;
}

#[tokio::test]
async fn a_sales_table_keeps_columns_it_does_not_declare_and_its_facts_stay_exact() {
    let database = fresh_database("generic_sales_extras");
    let pipeline = migrated(pipeline(&database)).await;
    let product = |id: i64, name: &str, brand: Json, lsn| {
        let after = json!({"id": id, "name": name, "category": "Home", "price": 4.5,
                           "created_at": "2024-01-01T00:00:00Z", "brand": brand, "weight_g": 1200});
        body("public", "products", "c", None, Some(after), lsn)
    };
    let customer = json!({"id": 1, "email": "a@x.io", "name": "Ada", "country": "UK", "city": "London",
                          "created_at": "2024-01-01T00:00:00Z"});
    let order =
        json!({"id": 3, "customer_id": 1, "order_date": "2024-01-01T00:00:00Z", "status": "paid", "total": 4.5});
    let item = json!({"id": 4, "order_id": 3, "product_id": 2, "quantity": 1, "price": 4.5});
    let first = [
        product(2, "Lamp", json!("Lumo"), 1),
        body("public", "customers", "c", None, Some(customer), 2),
        body("public", "orders", "c", None, Some(order), 3),
        body("public", "order_items", "c", None, Some(item), 4),
    ];
    assert_all_ok(&run(&pipeline, &first).await);
    assert_eq!(
        tsv(&pipeline, "SELECT id, name, brand, weight_g FROM DB.products_current").await,
        "2\tLamp\tLumo\t1200\n"
    );
    assert_eq!(tsv(&pipeline, "SELECT product_name FROM DB.sales_fact_current").await, "Lamp\n");

    // A TOAST placeholder in an extra column keeps the stored value; the declared ones change.
    assert_all_ok(&run(&pipeline, &[product(2, "Lamp XL", json!("__debezium_unavailable_value"), 5)]).await);
    assert_eq!(tsv(&pipeline, "SELECT name, brand FROM DB.products_current").await, "Lamp XL\tLumo\n");
    assert_eq!(tsv(&pipeline, "SELECT product_name FROM DB.sales_fact_current").await, "Lamp XL\n");

    // `weight_g` turned fractional: that message is poison, the rest lands.
    let mut heavier: Json = serde_json::from_str(&product(2, "Lamp XL", json!("Lumo"), 6)).unwrap();
    heavier["after"]["weight_g"] = json!(1200.5);
    let reports = run(
        &pipeline,
        &[heavier.to_string(), body("public", "order_notes", "c", None, Some(json!({"order_id": 1, "line_no": 1})), 7)],
    )
    .await;
    assert_eq!(
        reports[0].outcome,
        MessageOutcome::Failed {
            class: ErrorClass::Poison,
            code: "value.incompatible",
            table: Some("products".into())
        }
    );
    assert!(!reports[1].outcome.is_failure(), "{:?}", reports[1].outcome);
    assert_eq!(tsv(&pipeline, "SELECT weight_g FROM DB.products_current").await, "1200\n");
    drop_database(&database).await;
}

#[tokio::test]
async fn a_toast_placeholder_under_a_composite_key_takes_the_stored_value() {
    let database = fresh_database("generic_toast_composite");
    let pipeline = migrated(pipeline(&database)).await;
    let note = |line: i64, text: &str, tag: &str, lsn| {
        let after = json!({"order_id": 9, "line_no": line, "body": text, "tag": tag});
        body("public", "order_notes", "c", None, Some(after), lsn)
    };
    assert_all_ok(&run(&pipeline, &[note(1, "long text one", "a", 1), note(2, "long text two", "b", 2)]).await);
    // Only line 2 changes its tag; its body arrives as a placeholder.
    assert_all_ok(&run(&pipeline, &[note(2, "__debezium_unavailable_value", "c", 3)]).await);
    assert_eq!(
        tsv(&pipeline, "SELECT line_no, body, tag FROM DB.order_notes_current ORDER BY line_no").await,
        "1\tlong text one\ta\n2\tlong text two\tc\n"
    );
    // More placeholders in one batch than one lookup takes (1,000 keys): every one is filled.
    let lines: Vec<String> =
        (10..1_510).map(|line| note(line, &format!("body {line}"), "a", 10 + line as u64)).collect();
    assert_all_ok(&run(&pipeline, &lines).await);
    let toasted: Vec<String> =
        (10..1_510).map(|line| note(line, "__debezium_unavailable_value", "b", 5_000 + line as u64)).collect();
    assert_all_ok(&run(&pipeline, &toasted).await);
    assert_eq!(
        tsv(
            &pipeline,
            "SELECT count(), countIf(body = concat('body ', toString(line_no)) AND tag = 'b') \
             FROM DB.order_notes_current WHERE line_no >= 10"
        )
        .await,
        "1500\t1500\n"
    );
    drop_database(&database).await;
}

#[tokio::test]
async fn declared_types_give_schemaless_dms_columns_their_real_types() {
    let database = fresh_database("generic_declared");
    let options = DecodeOptions {
        tables: TableMapping::parse("public.payments{amount:numeric(2) paid_at:timestamp}").expect("mapping"),
        ..DecodeOptions::default()
    };
    let pipeline = migrated(Pipeline::new(options, Warehouse::new(&settings(&database)))).await;
    let modern = pipeline.warehouse().dialect().await.expect("dialect") == Dialect::Modern;
    let dms = |id: i64, amount: Json, at: &str| {
        json!({"data": {"id": id, "amount": amount, "paid_at": at, "memo": "x"},
               "metadata": {"timestamp": "2024-07-29T00:58:17.983670Z", "record-type": "data", "operation": "insert",
                            "partition-key-type": "schema-table", "schema-name": "public", "table-name": "payments",
                            "stream-position": format!("00000002/7C00{id:04X}.1.00000002/7C00{id:04X}")}})
        .to_string()
    };
    assert_all_ok(
        &run(
            &pipeline,
            &[dms(1, json!("12.50"), "2024-07-29T00:58:17.5Z"), dms(2, json!(0.1), "2024-07-29T01:00:00Z")],
        )
        .await,
    );
    // (TabSeparated escapes the quotes of `'UTC'`: compare inside ClickHouse.)
    let timestamp = if modern { "Nullable(DateTime64(6, \\'UTC\\'))" } else { "Nullable(Int64)" };
    for (column, ty) in [("amount", "Nullable(Decimal(38, 6))"), ("paid_at", timestamp)] {
        let sql = format!(
            "SELECT count() FROM system.columns WHERE database = '{database}' AND table = 'payments' \
             AND name = '{column}' AND type = '{ty}'"
        );
        assert_eq!(tsv(&pipeline, &sql).await, "1\n", "{column} is {ty}");
    }
    let paid_at = if modern { "toUnixTimestamp64Micro(paid_at)" } else { "paid_at" };
    assert_eq!(
        tsv(&pipeline, &format!("SELECT id, toInt64(amount * 100), {paid_at} FROM DB.payments_current ORDER BY id"))
            .await,
        "1\t1250\t1722214697500000\n2\t10\t1722214800000000\n"
    );
    drop_database(&database).await;
}
