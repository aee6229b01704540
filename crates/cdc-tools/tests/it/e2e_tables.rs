//! End to end for every captured table, not only the sales tables: a real PostgreSQL with the four
//! sales tables (generated traffic) plus
//!
//! - `public.order_notes`: a composite primary key `(order_id, line_no)`, key changes included;
//! - `public.catalog_extras`: numeric(12,4), timestamptz, jsonb, uuid, text[], int[], bytea,
//!   boolean, float8, date, time and interval columns, with NULLs, empty arrays, quotes, commas, braces,
//!   backslashes and non-ASCII text, and an `ALTER TABLE ... ADD COLUMN note text` in the middle
//!   of the run followed by rows using it (and a second added column that stays NULL);
//! - `archive.customers`: the same name as `public.customers` in another schema, with other
//!   columns, mapped to `archive_customers`;
//!
//! → capture (wal2json → Debezium events, an initial snapshot included) → the local SQS engine →
//! `poll` (the Lambda handler) → ClickHouse's generic mirrors. `verify`, given the same
//! `CAPTURED_TABLES`, must then find 0 differences in every mapped table, and the dead-letter
//! queue must be empty.
//!
//! Needs PostgreSQL with wal2json and ClickHouse (`CLICKHOUSE_URL`) on 127.0.0.1; the local SQS is
//! started here (`scripts/sqs.sh`) when it is not running. A missing service fails the test;
//! nothing is skipped. The workload is SQL written here, deterministic; its values are never
//! printed, only verify's counts and keys.

use cdc_clickhouse::RawSql;
use std::process::Stdio;
use std::time::Duration;

use cdc_tools::generator::SOURCE_SCHEMA_SQL;

use crate::support::{
    Service, Stop, clickhouse_settings, log_path, log_tails, pg, pg_url, processor, spawn_generator, spawn_poll,
    test_name, verify, wait_for_generator,
};

/// Drops what the test created (replication slot, source database, ClickHouse database) however
/// the test ends; declared before the children so it runs after they are stopped.
struct Cleanup {
    name: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop cannot await; a thread with its own runtime can, also while the test's runtime unwinds.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
            rt.block_on(async {
                if let Ok(admin) = cdc_tools::postgres::connect(&pg_url("postgres")).await {
                    let _ = admin
                        .batch_execute(&format!(
                            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = '{name}'"
                        ))
                        .await;
                    let _ = admin.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await;
                }
                let ch = cdc_clickhouse::Warehouse::new(&clickhouse_settings(&name));
                let _ = ch.execute(&format!("DROP DATABASE IF EXISTS {name}")).await;
            });
        })
        .join();
    }
}

/// The tables besides the sales schema. `archive.customers` deliberately differs from
/// `public.customers` (an extra column): a mix-up of the two would show.
const EXTRA_SCHEMA_SQL: &str = "
CREATE TABLE public.order_notes (
    order_id BIGINT NOT NULL,
    line_no  INTEGER NOT NULL,
    body     TEXT,
    PRIMARY KEY (order_id, line_no)
);
CREATE TABLE public.catalog_extras (
    id      BIGINT PRIMARY KEY,
    price   NUMERIC(12, 4),
    seen_at TIMESTAMPTZ,
    attrs   JSONB,
    ref     UUID,
    tags    TEXT[],
    counts  INT[],
    blob    BYTEA,
    flag    BOOLEAN,
    ratio   FLOAT8,
    day     DATE,
    at_time TIME,
    span    INTERVAL
);
CREATE SCHEMA archive;
CREATE TABLE archive.customers (
    id          BIGINT PRIMARY KEY,
    email       TEXT,
    name        TEXT,
    archived_at TIMESTAMPTZ
);
";

/// The four sales tables as today, plus the new entry forms: a composite key, a default-key
/// table, and a same-named table of another schema mapped to another target.
const CAPTURED_TABLES: &str = "public.customers,public.products,public.orders,public.order_items,\
    public.order_notes(order_id line_no),public.catalog_extras,archive.customers=archive_customers";
const CAPTURE_TABLES: &str = "public.customers,public.products,public.orders,public.order_items,\
    public.order_notes,public.catalog_extras,archive.customers";

/// An SQL string literal (standard_conforming_strings: only quotes are doubled).
fn lit(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Note text: quotes, separators, braces, backslashes, tabs, newlines and non-ASCII, or NULL.
fn note_body(i: u64) -> String {
    match i % 6 {
        0 => "NULL".to_string(),
        1 => lit(&format!("plain note {i}")),
        2 => lit(&format!("it's \"quoted\", {{braced}} and back\\slashed {i}")),
        3 => format!("{} || chr(9) || 'tab' || chr(10) || 'newline'", lit(&format!("ctl {i}"))),
        4 => lit(&format!("Ünïcødé 日本語 {i}")),
        _ => "''".to_string(),
    }
}

/// The column list of `catalog_extras` before the ALTER.
const EXTRAS_COLUMNS: &str = "id, price, seen_at, attrs, ref, tags, counts, blob, flag, ratio, day, at_time, span";

/// One `catalog_extras` row's values (in `EXTRAS_COLUMNS` order), varied by `i` and `salt`.
/// NaN and ±Infinity are left out of float8 and numeric: wal2json 2.5 writes them as JSON null,
/// so a streamed change cannot carry them (see the capture's module documentation).
fn extras_values(i: u64, salt: u64) -> String {
    let k = i + salt;
    let price = match k % 5 {
        0 => "NULL".to_string(),
        1 => "12345678.1234".to_string(),
        2 => "-0.0001".to_string(),
        3 => "0".to_string(),
        _ => format!("{}.{:04}", k * 37, (k * 13) % 10_000),
    };
    let seen_at = match k % 4 {
        0 => "NULL".to_string(),
        1 => "'1969-07-20 20:17:40.5+00'".to_string(),
        _ => format!("TIMESTAMPTZ '2026-11-22 02:14:32.019849+00' + INTERVAL '{k} hours {} microseconds'", k * 7),
    };
    let attrs = match k % 6 {
        0 => "NULL".to_string(),
        1 => lit(r#"{"a": 1, "b": [1.50, null, "x\"y"], "c": {"d": true}}"#),
        2 => "'[]'".to_string(),
        3 => lit(r#""just a string""#),
        4 => lit(r#"{"big": 12345678901234567890.123456789, "neg": -1e-7, "z": 0.10}"#),
        _ => lit(&format!(r#"{{"k{k}": "v,{{}}", "ü": [{k}, "{k}"]}}"#)),
    };
    let uuid = if k.is_multiple_of(3) { "NULL".to_string() } else { format!("md5('{k}')::uuid") };
    let tags = match k % 5 {
        0 => "NULL".to_string(),
        1 => format!(
            "ARRAY[{}, {}, NULL, {}, {}, {}, '']",
            lit("a b"),
            lit("c\"d"),
            lit("x,y"),
            lit("{z}"),
            lit("back\\slash")
        ),
        2 => "'{}'::text[]".to_string(),
        // The text NULL (quoted by PostgreSQL) is not an SQL NULL.
        3 => "ARRAY['NULL', 'null', ' padded ']".to_string(),
        _ => format!("ARRAY['é', '日本', 'line' || chr(10) || 'break', {}]", lit(&format!("n{k}"))),
    };
    let counts = match k % 4 {
        0 => "NULL".to_string(),
        1 => "ARRAY[1, NULL, -3]".to_string(),
        2 => "'{}'::int[]".to_string(),
        _ => format!("ARRAY[2147483647, -2147483648, {k}]"),
    };
    let blob = match k % 4 {
        0 => "NULL".to_string(),
        1 => "'\\x00ff0a5c22'::bytea".to_string(),
        2 => "''::bytea".to_string(),
        _ => format!("convert_to({}, 'UTF8')", lit(&format!("bytes {k} ü"))),
    };
    let flag = match k % 3 {
        0 => "NULL",
        1 => "true",
        _ => "false",
    };
    let ratio = match k % 6 {
        0 => "NULL".to_string(),
        1 => "0.1".to_string(),
        2 => "-1.5e300".to_string(),
        3 => "'-0'::float8".to_string(),
        4 => format!("{k}::float8 / 3"),
        _ => "1.7976931348623157e308".to_string(),
    };
    let day = match k % 4 {
        0 => "NULL".to_string(),
        1 => "'1900-02-28'".to_string(),
        _ => format!("DATE '2026-01-01' + {k}"),
    };
    let at_time = match k % 4 {
        0 => "NULL".to_string(),
        1 => "'24:00:00'".to_string(),
        _ => format!("TIME '00:00:00' + INTERVAL '{k} seconds {} microseconds'", k * 11),
    };
    let span = match k % 5 {
        0 => "NULL".to_string(),
        1 => "INTERVAL '1 year 2 months 3 days 04:05:06.789'".to_string(),
        2 => "INTERVAL '-1 day +02:00:00'".to_string(),
        3 => "INTERVAL '100 hours'".to_string(),
        _ => format!("INTERVAL '{k} minutes {} microseconds'", k * 3),
    };
    format!(
        "{i}, {price}, {seen_at}, {attrs}, {uuid}, {tags}, {counts}, {blob}, {flag}, {ratio}, {day}, {at_time}, {span}"
    )
}

fn insert_extras(ids: impl Iterator<Item = u64>, salt: u64) -> String {
    let rows: Vec<String> = ids.map(|i| format!("({})", extras_values(i, salt))).collect();
    format!("INSERT INTO catalog_extras ({EXTRAS_COLUMNS}) VALUES {};", rows.join(", "))
}

fn insert_notes(orders: std::ops::RangeInclusive<u64>, lines: u64) -> String {
    let mut rows = Vec::new();
    for order in orders {
        for line in 1..=lines {
            rows.push(format!("({order}, {line}, {})", note_body(order * 10 + line)));
        }
    }
    format!("INSERT INTO order_notes (order_id, line_no, body) VALUES {};", rows.join(", "))
}

fn insert_archive(ids: std::ops::RangeInclusive<u64>) -> String {
    let rows: Vec<String> = ids
        .map(|i| {
            let archived = if i % 4 == 0 { "NULL".to_string() } else { format!("now() - INTERVAL '{i} days'") };
            format!("({i}, {}, {}, {archived})", lit(&format!("old{i}@example.org")), lit(&format!("O'Old {i}")))
        })
        .collect();
    format!("INSERT INTO archive.customers (id, email, name, archived_at) VALUES {};", rows.join(", "))
}

/// Rows present before the capture starts: they reach ClickHouse through the initial snapshot
/// (PostgreSQL's text forms), the rest through the WAL stream (wal2json's).
fn before_capture() -> Vec<String> {
    vec![insert_extras(1..=10, 0), insert_notes(1..=3, 3), insert_archive(1..=5)]
}

/// Streamed changes before the ALTER: inserts, updates (values to NULL and back, arrays and
/// documents replaced), deletes and primary-key changes, several tables per transaction.
fn phase_one() -> Vec<String> {
    vec![
        insert_extras(11..=35, 0),
        format!("{} {}", insert_notes(4..=20, 3), insert_archive(6..=18)),
        insert_extras(36..=60, 0),
        insert_notes(21..=40, 3),
        insert_archive(19..=30),
        // Updates: every column replaced by another row's values, then some set to NULL.
        "UPDATE catalog_extras SET (price, seen_at, attrs, ref, tags, counts, blob, flag, ratio, day) = \
         (SELECT price, seen_at, attrs, ref, tags, counts, blob, flag, ratio, day FROM catalog_extras s \
          WHERE s.id = catalog_extras.id % 10 + 1) WHERE id % 3 = 0 AND id > 10;"
            .to_string(),
        "UPDATE catalog_extras SET ratio = NULL, tags = NULL, attrs = '{\"updated\": [1, 2.50]}' WHERE id % 5 = 0;"
            .to_string(),
        "UPDATE catalog_extras SET counts = ARRAY[NULL, NULL]::int[], blob = '\\x'::bytea WHERE id % 8 = 1;"
            .to_string(),
        format!(
            "UPDATE order_notes SET body = {} WHERE order_id % 3 = 0; \
             UPDATE archive.customers SET name = name || ' (updated)', archived_at = NULL WHERE id % 3 = 1;",
            lit("rewritten, \"again\"")
        ),
        "DELETE FROM catalog_extras WHERE id % 7 = 0; \
         DELETE FROM order_notes WHERE line_no = 3 AND order_id % 4 = 0; \
         DELETE FROM archive.customers WHERE id % 6 = 0;"
            .to_string(),
        // A primary-key change: the old composite key must disappear, the new one appear.
        "UPDATE order_notes SET line_no = line_no + 10 WHERE order_id % 5 = 0 AND line_no = 1;".to_string(),
        "UPDATE catalog_extras SET id = id + 1000 WHERE id IN (2, 13);".to_string(),
        // A row deleted and inserted again with other values.
        format!("DELETE FROM catalog_extras WHERE id = 20; {}", insert_extras(20..=20, 3)),
    ]
}

/// After `ALTER TABLE catalog_extras ADD COLUMN note text`: a delete first (the capture still has
/// the old columns), then rows using the new column, updates of old rows, and a second added
/// column that never carries a value (its mirror column may not exist).
fn phase_two() -> Vec<String> {
    let with_note = |ids: std::ops::RangeInclusive<u64>| {
        let rows: Vec<String> = ids
            .map(|i| {
                let note = if i % 4 == 0 { "NULL".to_string() } else { lit(&format!("note, \"{i}\" ü")) };
                format!("({}, {note})", extras_values(i, 1))
            })
            .collect();
        format!("INSERT INTO catalog_extras ({EXTRAS_COLUMNS}, note) VALUES {};", rows.join(", "))
    };
    vec![
        "DELETE FROM catalog_extras WHERE id = 12;".to_string(),
        with_note(61..=80),
        "UPDATE catalog_extras SET note = 'set later' WHERE id BETWEEN 14 AND 30 AND id % 2 = 0;".to_string(),
        "UPDATE catalog_extras SET price = price + 1 WHERE id BETWEEN 31 AND 40;".to_string(),
        "ALTER TABLE catalog_extras ADD COLUMN spare INTEGER;".to_string(),
        with_note(81..=90),
        format!("{} UPDATE catalog_extras SET note = NULL WHERE id = 61;", insert_notes(41..=45, 2)),
        "DELETE FROM catalog_extras WHERE id IN (62, 63); DELETE FROM order_notes WHERE order_id = 41;".to_string(),
        "UPDATE archive.customers SET email = NULL WHERE id = 7;".to_string(),
    ]
}

async fn run_sql(client: &tokio_postgres::Client, statements: &[String], pause: Duration) {
    for (i, sql) in statements.iter().enumerate() {
        // One transaction per entry; the statement text holds test data only, never secrets,
        // but a failure names the step, not the values.
        client
            .batch_execute(&format!("BEGIN; {sql} COMMIT;"))
            .await
            .unwrap_or_else(|e| panic!("workload step {i} failed: {}", e.as_db_error().map_or("", |d| d.message())));
        tokio::time::sleep(pause).await;
    }
}

/// `verify: NAME postgres=N clickhouse=M missing=.. extra=.. wrong=..` → (N, M).
fn verify_counts(report: &str, table: &str) -> Option<(u64, u64)> {
    let line = report.lines().find(|l| l.split_whitespace().nth(1) == Some(table))?;
    let field = |name: &str| {
        line.split_whitespace().find_map(|w| w.strip_prefix(name).and_then(|v| v.strip_prefix('='))?.parse().ok())
    };
    Some((field("postgres")?, field("clickhouse")?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_captured_table_reaches_its_mirror_with_no_difference() {
    let name = test_name("e2et");
    let local_sqs = Service::local_sqs();
    let mut env = local_sqs.processor_env(&name);
    env.push(("CAPTURED_TABLES", CAPTURED_TABLES.to_string()));

    // Source database, schemas, and the rows the snapshot will carry.
    pg("postgres").await.batch_execute(&format!("CREATE DATABASE {name}")).await.expect("create database");
    let cleanup = Cleanup { name: name.clone() };
    let source = pg(&name).await;
    source.batch_execute(SOURCE_SCHEMA_SQL).await.expect("source schema");
    source.batch_execute(EXTRA_SCHEMA_SQL).await.expect("extra tables");
    run_sql(&source, &before_capture(), Duration::ZERO).await;

    // The queue, as the capture publishes and `poll` consumes it.
    let queues = local_sqs.queues(&name).await;
    let (queue_url, dlq_url) = (queues.queue_url.clone(), queues.dlq_url.clone());
    env.push(("DEAD_LETTER_QUEUE_URL", dlq_url.clone()));

    let status = processor(&["migrate"], &env).status().expect("migrate");
    assert!(status.success(), "migrate failed (log: {})", log_path("migrate").display());
    let capture_args =
        ["capture", "--queue-url", &queue_url, "--slot", &name, "--poll-ms", "50", "--tables", CAPTURE_TABLES];
    let running =
        Stop(vec![processor(&capture_args, &env).spawn().expect("capture"), spawn_poll(&queue_url, 200, 2, &env)]);
    // Let the capture create its slot and publish its snapshot before any streamed change.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut generator = spawn_generator(20, 20, 23, (60, 30, 60), &env);

    run_sql(&source, &phase_one(), Duration::from_millis(300)).await;
    // Give the capture time to stream the old-column rows before the table changes shape.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    source.batch_execute("ALTER TABLE catalog_extras ADD COLUMN note TEXT").await.expect("add column");
    run_sql(&source, &phase_two(), Duration::from_millis(300)).await;

    let (generated, summary) = wait_for_generator(&mut generator, Duration::from_secs(120)).await;
    let generated_ok = generated.success() && generator_ok(&summary);

    // Everything committed must arrive: verify retries until clean or its wait runs out.
    let verify = verify(120, &env);
    let verify_out = String::from_utf8_lossy(&verify.stdout).to_string();
    let mut report = verify_out.clone() + &String::from_utf8_lossy(&verify.stderr);
    let dead = queues.dead_letters().await;
    report.push_str(&format!("dead-letter queue: {dead} message(s)\n"));
    drop(running);

    // With the pipeline stopped, change the source behind its back: verify must name exactly
    // these rows and columns (it compares the new tables for real, arrays and bytes included).
    let tamper = "UPDATE catalog_extras SET tags = array_append(tags, 'tampered') WHERE id = 1; \
                  UPDATE catalog_extras SET blob = '\\x01'::bytea WHERE id = 3; \
                  UPDATE order_notes SET body = 'tampered' WHERE order_id = 1 AND line_no = 2; \
                  DELETE FROM archive.customers WHERE id = 1;";
    let tampered = source.batch_execute(tamper).await.map_err(|e| e.to_string());
    let second = processor(&["verify"], &env).stdout(Stdio::piped()).stderr(Stdio::null()).output().expect("verify");
    let second_out = String::from_utf8_lossy(&second.stdout).to_string();
    report.push_str(&log_tails(&["migrate", "capture", "poll", "generate", "verify"], 8));

    // Clean up before asserting: the slot, the source database and the ClickHouse database.
    drop(source);
    drop(cleanup);
    drop(local_sqs);

    assert!(generated_ok, "the generator failed: {summary}\n{report}");
    assert!(verify.status.success(), "verify found differences (or failed):\n{report}");
    // verify must really have compared the new tables, each with rows on both sides.
    for table in ["customers", "order_items", "sales_fact", "order_notes", "catalog_extras", "archive_customers"] {
        let (postgres, clickhouse) =
            verify_counts(&verify_out, table).unwrap_or_else(|| panic!("verify did not compare {table}:\n{report}"));
        assert!(
            postgres > 0 && postgres == clickhouse,
            "{table}: postgres={postgres} clickhouse={clickhouse}\n{report}"
        );
    }
    assert_eq!(dead, 0, "the dead-letter queue is not empty:\n{report}");
    tampered.expect("tampering with the source");
    assert!(!second.status.success(), "verify missed the tampered rows:\n{second_out}");
    for expected in [
        "wrong key 1: columns [\"tags\"]",
        "wrong key 3: columns [\"blob\"]",
        "wrong key (1, 2): columns [\"body\"]",
        "extra keys: [1]",
        "verify: FAILED, 4 differences",
    ] {
        assert!(second_out.contains(expected), "verify did not report `{expected}`:\n{second_out}");
    }
    println!("{report}\n{summary}");
}

/// "generate: N transactions in ..." with N > 0.
fn generator_ok(summary: &str) -> bool {
    summary.split_whitespace().nth(1).and_then(|n| n.parse::<u64>().ok()).is_some_and(|n| n > 0)
}

#[test]
fn verify_counts_reads_the_report_line() {
    let report = "verify: order_notes        postgres=117     clickhouse=116     missing=1 extra=0 wrong=0\n";
    assert_eq!(verify_counts(report, "order_notes"), Some((117, 116)));
    assert_eq!(verify_counts(report, "orders"), None);
}
