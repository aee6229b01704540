//! The modern dialect, checked against a current ClickHouse engine (chDB, embedded): every DDL
//! statement, RowBinary rows as the processor encodes them, and every lookup query, with their
//! results. Debian's 18.16 server (used by the other tests) cannot check the modern forms.

use std::io::Write;
use std::process::{Command, Stdio};

use cdc_clickhouse::dialect::Dialect;
use cdc_clickhouse::queries;
use cdc_clickhouse::rowbinary;
use cdc_clickhouse::schema;
use cdc_core::change::Version;
use cdc_core::fact::{FactRow, FactVersion};
use cdc_core::mirror::{Cell, MirrorRow};
use cdc_core::rederive::Scope;
use cdc_core::tables::SourceTable;
use serde_json::json;

fn row(table: SourceTable, key: i64, cells: Vec<Cell>, version: u64) -> MirrorRow {
    MirrorRow { table, key, cells, extras: Default::default(), version: Version(version), is_deleted: false }
}

#[test]
fn modern_sql_runs_on_a_current_clickhouse_engine() {
    let db = "analytics";
    let d = Dialect::Modern;
    let dir = tempfile::tempdir().unwrap();
    let mut statements: Vec<serde_json::Value> =
        schema::schema_statements(d, db, None).into_iter().map(|sql| json!({"sql": sql, "expect": null})).collect();
    // Run the DDL twice: migrations are idempotent.
    statements
        .extend(schema::schema_statements(d, db, None).into_iter().map(|sql| json!({"sql": sql, "expect": null})));

    let ts = 1_704_067_200_123_456i64; // 2024-01-01 00:00:00.123456 UTC
    let rows = [
        row(
            SourceTable::Customers,
            7,
            vec![
                Cell::Int(7),
                Cell::Text("a@b.c".into()),
                Cell::Text("Ada".into()),
                Cell::Text("UK".into()),
                Cell::Text("London".into()),
                Cell::Timestamp(ts),
            ],
            10,
        ),
        row(
            SourceTable::Products,
            100,
            vec![
                Cell::Int(100),
                Cell::Text("Lamp".into()),
                Cell::Text("Home".into()),
                Cell::Decimal(4_820_000),
                Cell::Timestamp(ts),
            ],
            11,
        ),
        row(
            SourceTable::Orders,
            10,
            vec![
                Cell::Int(10),
                Cell::Int(7),
                Cell::Timestamp(ts),
                Cell::Text("paid".into()),
                Cell::Decimal(-1_500_000),
            ],
            12,
        ),
        row(
            SourceTable::OrderItems,
            1,
            vec![Cell::Int(1), Cell::Int(10), Cell::Int(100), Cell::Int(3), Cell::Decimal(4_820_000)],
            13,
        ),
        MirrorRow::tombstone(SourceTable::OrderItems, 2, Version(14)),
    ];
    for table in SourceTable::ALL {
        let mut bytes = Vec::new();
        for r in rows.iter().filter(|r| r.table == table) {
            rowbinary::encode_mirror_row(&mut bytes, d, r);
        }
        let path = dir.path().join(format!("{}.bin", table.name()));
        std::fs::write(&path, bytes).unwrap();
        let structure = schema::mirror_column_defs(d, table).join(", ").replace('\'', "\\'");
        let columns = schema::mirror_columns(table.spec()).join(", ");
        statements.push(json!({"sql": format!(
            "INSERT INTO {db}.{} ({columns}) SELECT * FROM file('{}', 'RowBinary', '{structure}')",
            table.name(), path.display()), "expect": null}));
    }
    let truncation = dir.path().join("truncations.bin");
    let mut bytes = Vec::new();
    rowbinary::put_string(&mut bytes, "products");
    rowbinary::put_u64(&mut bytes, 5);
    std::fs::write(&truncation, bytes).unwrap();
    statements.push(json!({"sql": format!(
        "INSERT INTO {db}.{} (table_name, _version) SELECT * FROM file('{}', 'RowBinary', 'table_name String, _version UInt64')",
        schema::TRUNCATIONS_TABLE, truncation.display()), "expect": null}));

    // Every lookup the pipeline issues, with the rows it must see (tombstones included).
    let check = |sql: String, expect: &str| json!({"sql": sql, "expect": expect});
    statements.push(check(
        queries::latest_rows_query(d, db, SourceTable::OrderItems, &[1, 2, 3]) + " ORDER BY id",
        "1\t10\t100\t3\t4.82\t13\t0\n2\t0\t0\t0\t0\t14\t1\n",
    ));
    statements.push(check(
        queries::latest_rows_query(d, db, SourceTable::Orders, &[10]),
        "10\t7\t1704067200123456\tpaid\t-1.5\t12\t0\n",
    ));
    statements.push(check(
        queries::latest_rows_query(d, db, SourceTable::Customers, &[7]),
        "7\ta@b.c\tAda\tUK\tLondon\t1704067200123456\t10\t0\n",
    ));
    statements.push(check(
        queries::latest_rows_query(d, db, SourceTable::Products, &[100]),
        "100\tLamp\tHome\t4.82\t1704067200123456\t11\t0\n",
    ));
    statements.push(check(queries::latest_rows_query(d, db, SourceTable::Products, &[]), ""));
    // The foreign-key indexes, as the pipeline writes them with the mirror rows.
    for sql in [
        format!("INSERT INTO {db}._items_by_order VALUES (10, 1), (10, 1), (11, 3)"),
        format!("INSERT INTO {db}._items_by_product VALUES (100, 1), (100, 3)"),
        format!("INSERT INTO {db}._orders_by_customer VALUES (7, 10), (8, 11)"),
    ] {
        statements.push(json!({"sql": sql, "expect": null}));
    }
    statements.push(check(
        queries::children_query(db, schema::ITEMS_BY_ORDER, &[10, 11, 12], 1000, 50_000),
        "10\t1\n11\t3\n",
    ));
    statements.push(check(queries::children_query(db, schema::ITEMS_BY_PRODUCT, &[100], 1, 50_000), "100\t1\n"));
    let page = |scope, after| queries::page_queries(db, scope, after, 10);
    statements.push(check(page(Scope::Order(10), None).remove(0), "1\n"));
    statements.push(check(page(Scope::Product(100), Some(1)).remove(0), "3\n"));
    statements.push(check(page(Scope::Customer(7), None).remove(0), "1\n"));
    // The whole-table scope: order_items (1 and the deleted 2), then sales_fact (no facts yet).
    let [items, facts] = <[String; 2]>::try_from(page(Scope::All, None)).unwrap();
    statements.push(check(items, "1\n2\n"));
    statements.push(check(facts, ""));
    statements.push(check(page(Scope::All, Some(1)).remove(0), "2\n"));
    statements.push(check(queries::truncations_query(db), "products\t5\n"));

    let fact = FactRow {
        order_item_id: 1,
        order_id: 10,
        customer_id: 7,
        product_id: 100,
        quantity: 3,
        unit_price: 4_820_000,
        revenue: 14_460_000,
        order_status: "paid".into(),
        order_date_us: ts,
        customer_name: "Ada".into(),
        customer_country: "UK".into(),
        customer_city: "London".into(),
        product_name: "Lamp".into(),
        product_category: "Home".into(),
        version: FactVersion { item: 13, order: 12, dimensions: 10 + 11 },
        is_deleted: false,
    };
    let deleted = FactRow {
        order_item_id: 2,
        version: FactVersion { item: 50, order: 0, dimensions: 0 },
        is_deleted: true,
        ..FactRow::default()
    };
    let mut bytes = Vec::new();
    rowbinary::encode_fact_row(&mut bytes, d, &fact);
    rowbinary::encode_fact_row(&mut bytes, d, &deleted);
    let facts = dir.path().join("facts.bin");
    std::fs::write(&facts, bytes).unwrap();
    statements.push(json!({"sql": format!(
        "INSERT INTO {db}.{} ({}) SELECT * FROM file('{}', 'RowBinary', '{}')",
        schema::FACT_TABLE, schema::fact_column_names().join(", "), facts.display(),
        schema::fact_column_defs(d).join(", ").replace('\'', "\\'")), "expect": null}));
    statements.push(check(
        format!("SELECT order_item_id, quantity, unit_price, revenue, order_date, customer_country, product_category FROM {db}.sales_fact FINAL WHERE _is_deleted = 0"),
        "1\t3\t4.82\t14.46\t2024-01-01 00:00:00.123456\tUK\tHome\n",
    ));
    statements.push(check(format!("SELECT count() FROM {db}.sales_fact_current"), "1\n"));
    // The products row (version 11) is older than the truncation at 5? No: newer, so it stays.
    statements.push(check(format!("SELECT count() FROM {db}.products_current"), "1\n"));
    statements.push(check(format!("SELECT count() FROM {db}.order_items_current"), "1\n"));

    let mut child = Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/chdb_check.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 must be installed");
    child.stdin.take().unwrap().write_all(serde_json::to_string(&statements).unwrap().as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "chDB rejected the modern SQL (install chdb with `pip install chdb`):\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
