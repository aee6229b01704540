//! `repair` against the real PostgreSQL and ClickHouse: a key frozen by an implausible version
//! (as releases before the plausibility check could write) is rewritten from the source, its
//! facts follow, and a whole-table repair turns rows the source no longer has into deletions.

use std::time::{Duration, Instant};

use cdc_clickhouse::RawSql;
use cdc_clickhouse::Warehouse;
use cdc_core::decode::DecodeOptions;
use cdc_core::error::ErrorClass;
use cdc_core::rederive::Scope;
use cdc_lambda::pipeline::{Pipeline, Process};
use cdc_lambda::sqs::message::{Message, MessageId, MessageOutcome};
use cdc_tools::repair::{self, Args, Repaired};

use cdc_tools::generator::SOURCE_SCHEMA_SQL;

use crate::support::{clickhouse_settings, pg, pg_url, test_name};

fn args(database: &str, table: &str, key: Option<i64>) -> Args {
    Args { pg_url: pg_url(database), schema: "public".into(), table: table.into(), key, facts_only: false }
}

async fn facts(pipeline: &Pipeline) -> String {
    let sql = format!(
        "SELECT order_item_id, customer_name, product_name FROM {}.sales_fact_current ORDER BY order_item_id",
        pipeline.warehouse().database()
    );
    pipeline.warehouse().fetch_tsv(&sql).await.unwrap()
}

#[tokio::test]
async fn repair_rewrites_a_frozen_key_from_the_source_and_deletes_what_the_source_lost() {
    let name = test_name("repair");
    pg("postgres").await.batch_execute(&format!("CREATE DATABASE {name}")).await.unwrap();
    let source = pg(&name).await;
    source.batch_execute(SOURCE_SCHEMA_SQL).await.unwrap();
    source
        .batch_execute(
            "INSERT INTO customers VALUES (1, 'a@x.io', 'Ada', 'UK', 'London', '2024-01-01T00:00:00Z');
             INSERT INTO products VALUES (2, 'Lamp', 'Home', 48.20, '2024-01-01T00:00:00Z');
             INSERT INTO orders VALUES (3, 1, '2024-01-02T10:00:00Z', 'paid', 96.40);
             INSERT INTO order_items VALUES (4, 3, 2, 2, 48.20);",
        )
        .await
        .unwrap();
    let settings = clickhouse_settings(&name);
    let pipeline = Pipeline::new(DecodeOptions::default(), Warehouse::new(&settings));

    // Bootstrap every mirror from the source: whole-table repairs.
    for table in ["customers", "products", "orders", "order_items"] {
        repair::repair(&pipeline, &args(&name, table, None)).await.unwrap();
    }
    assert_eq!(facts(&pipeline).await, "4\tAda\tLamp\n");

    // A change at an impossible position is poison now, and never written...
    let frozen = r#"{"before":null,"after":{"id":2,"name":"Frozen","category":"Home","price":"AQ==","created_at":"2024-01-01T00:00:00Z"},
        "source":{"version":"2.5.0.Final","connector":"postgresql","name":"oltp","ts_ms":1704067200000,"snapshot":"false",
        "db":"oltp","schema":"public","table":"products","lsn":18446744073709551615},"op":"u","ts_ms":1704067200000}"#;
    let message = Message {
        id: MessageId::new("m1").unwrap(),
        body: frozen.into(),
        receive_count: 1,
        group_id: None,
        receipt_handle: None,
        source_arn: None,
        sent_at_ms: None,
    };
    let reports = pipeline.process(&[message], Instant::now() + Duration::from_secs(60)).await.unwrap();
    let MessageOutcome::Failed { class, code, .. } = &reports[0].outcome else { panic!("{:?}", reports[0].outcome) };
    assert_eq!((*class, *code), (ErrorClass::Poison, "version.implausible"));
    // ...but an older release could have written it: freeze the key by hand.
    let database = pipeline.warehouse().database().to_string();
    pipeline
        .warehouse()
        .execute(&format!(
            "INSERT INTO {database}.products (id, name, category, price, created_at, _version, _is_deleted) \
             SELECT toInt64(2), 'Frozen', 'Home', toDecimal128(1, 6), toDateTime('2024-01-01 00:00:00'), \
             toUInt64(18446744073709551615), toUInt8(0)"
        ))
        .await
        .unwrap();
    pipeline.rederive(Scope::Product(2), Instant::now() + Duration::from_secs(60)).await.unwrap();
    assert_eq!(facts(&pipeline).await, "4\tAda\tFrozen\n");

    // The source moves on; the frozen key would ignore it forever. Repair the key.
    source.batch_execute("UPDATE products SET name = 'Lamp v2' WHERE id = 2").await.unwrap();
    let done = repair::repair(&pipeline, &args(&name, "products", Some(2))).await.unwrap();
    assert_eq!(done.rows_rewritten, 1);
    assert_eq!(facts(&pipeline).await, "4\tAda\tLamp v2\n");

    // A row deleted at the source while nothing captured it: a whole-table repair deletes it.
    source.batch_execute("DELETE FROM customers WHERE id = 1").await.unwrap();
    let done = repair::repair(&pipeline, &args(&name, "customers", None)).await.unwrap();
    assert_eq!(done, Repaired { rows_rewritten: 0, rows_deleted: 1, facts: done.facts });
    assert_eq!(facts(&pipeline).await, "");
    let current =
        pipeline.warehouse().fetch_tsv(&format!("SELECT count() FROM {database}.customers_current")).await.unwrap();
    assert_eq!(current, "0\n");

    pipeline.warehouse().execute(&format!("DROP DATABASE IF EXISTS {database}")).await.unwrap();
    drop(source);
    pg("postgres").await.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await.unwrap();
}
