//! Redaction and history end to end, through the function's own configuration: a source with
//! marker values in redacted columns → capture (snapshot and stream) → the local SQS → `poll`
//! with `REDACT_COLUMNS`, the hash key in Secrets Manager (moto) and `HISTORY_TABLES=all` →
//! ClickHouse. The markers must appear in no table or view of the database (histories and SCD2
//! views included) and in no log line of `poll`; `verify`, hashing the source with the same
//! rules and key, must find 0 differences; the DLQ stays empty; `history` prints a customer's
//! two versions and `as-of` the fact as it is now and as it was before the update.

use std::time::Duration;

use cdc_clickhouse::RawSql;
use cdc_tools::generator::SOURCE_SCHEMA_SQL;

use crate::support::{
    Service, Stop, clickhouse_settings, log_path, log_tails, pg, processor, sdk_config, spawn_poll, test_name, verify,
};

const MARKER: &str = "pii-marker-e2e-41d";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redacted_columns_stay_out_of_clickhouse_and_logs_and_verify_is_clean() {
    let name = test_name("pii");
    let local_sqs = Service::local_sqs();
    let moto = Service::moto();
    let secrets = aws_sdk_secretsmanager::Client::new(&sdk_config(&moto.endpoint()).await);
    let key_arn = secrets
        .create_secret()
        .name(format!("cdc/{name}/redaction-key"))
        .secret_string("k".repeat(40) + &name)
        .send()
        .await
        .expect("create the redaction key")
        .arn()
        .expect("arn")
        .to_string();
    let mut env = local_sqs.processor_env(&name);
    env.push(("AWS_ENDPOINT_URL", moto.endpoint()));
    env.push(("REDACT_COLUMNS", "customers.email:hash, customers.city:null".to_string()));
    env.push(("REDACTION_KEY_SECRET_ARN", key_arn));
    env.push(("HISTORY_TABLES", "all".to_string()));

    pg("postgres").await.batch_execute(&format!("CREATE DATABASE {name}")).await.expect("create database");
    let source = pg(&name).await;
    source.batch_execute(SOURCE_SCHEMA_SQL).await.expect("source schema");
    // Before the capture: read by its snapshot.
    source
        .batch_execute(&format!(
            "INSERT INTO customers VALUES (1, 'ada-{MARKER}@x.io', 'Ada', 'UK', 'city-{MARKER}', now());
             INSERT INTO products VALUES (2, 'Lamp', 'Home', 48.20, now());
             INSERT INTO orders VALUES (3, 1, now(), 'paid', 48.20);
             INSERT INTO order_items VALUES (4, 3, 2, 1, 48.20);"
        ))
        .await
        .expect("rows before the capture");

    let queues = local_sqs.queues(&name).await;
    env.push(("DEAD_LETTER_QUEUE_URL", queues.dlq_url.clone()));
    assert!(processor(&["migrate"], &env).status().expect("migrate").success(), "migrate failed");
    let capture_args = ["capture", "--queue-url", &queues.queue_url, "--slot", &name, "--poll-ms", "50"];
    let running = Stop(vec![
        processor(&capture_args, &env).spawn().expect("capture"),
        spawn_poll(&queues.queue_url, 50, 2, &env),
    ]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Streamed: a second customer sharing the address, and an update of the first.
    source
        .batch_execute(&format!(
            "INSERT INTO customers VALUES (5, 'ada-{MARKER}@x.io', 'Bea', 'FR', 'other-{MARKER}', now());
             UPDATE customers SET email = 'new-{MARKER}@x.io', name = 'Ada L.' WHERE id = 1;"
        ))
        .await
        .expect("streamed changes");

    let verified = verify(90, &env);
    let run = |args: &[&str]| {
        let out = processor(args, &env).stdout(std::process::Stdio::piped()).output().expect("cdc-tools");
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).expect("UTF-8")
    };
    let versions = run(&["history", "--table", "customers", "--key", "1"]);
    let now = chrono::Utc::now().to_rfc3339();
    let facts_now = run(&["as-of", "--table", "sales_fact", "--at", &now]);
    // Just after the snapshot's row of customer 1: before the update.
    let snapshot_us = column(&versions, "valid_from_us").first().map_or(0, |t| t.parse::<i64>().unwrap_or(0));
    let facts_then = run(&["as-of", "--table", "sales_fact", "--at", &snapshot_us.to_string()]);
    let report = String::from_utf8_lossy(&verified.stdout).to_string() + &String::from_utf8_lossy(&verified.stderr);
    let dead = queues.dead_letters().await;
    drop(running);
    let logs = std::fs::read_to_string(log_path("poll")).unwrap_or_default();
    let tails = log_tails(&["capture", "poll"], 6);

    let ch = cdc_clickhouse::Warehouse::new(&clickhouse_settings(&name));
    let tables = ch
        .fetch_tsv(&format!("SELECT name FROM system.tables WHERE database = '{name}' ORDER BY name"))
        .await
        .expect("tables");
    let mut leaked = Vec::new();
    for table in tables.lines() {
        let text = ch.fetch_tsv(&format!("SELECT * FROM `{name}`.`{table}`")).await.expect("read table");
        if text.contains(MARKER) {
            leaked.push(table.to_string());
        }
    }
    let distinct = ch
        .fetch_tsv(&format!("SELECT count(), count(DISTINCT email) FROM `{name}`.customers_current"))
        .await
        .unwrap_or_default();

    let admin = pg(&name).await;
    let _ = admin.batch_execute(&format!("SELECT pg_drop_replication_slot('{name}')")).await;
    drop(admin);
    drop(source);
    let _ = pg("postgres").await.batch_execute(&format!("DROP DATABASE {name}")).await;
    let _ = ch.execute(&format!("DROP DATABASE IF EXISTS {name}")).await;

    assert!(verified.status.success(), "verify found differences:\n{report}\n{tails}");
    assert!(leaked.is_empty(), "a redacted value reached {leaked:?} in plain");
    assert!(!logs.contains(MARKER), "a redacted value reached the poll log");
    assert_eq!(dead, 0, "the dead-letter queue is not empty:\n{tails}");
    assert_eq!(distinct, "2\t2\n", "two customers, two hashed addresses after the update");
    assert_eq!(column(&versions, "name"), ["Ada", "Ada L."], "{versions}");
    assert_eq!(column(&versions, "is_current"), ["0", "1"], "{versions}");
    assert_eq!(column(&versions, "_op"), ["read", "update"], "{versions}");
    assert!(!versions.contains(MARKER) && !facts_now.contains(MARKER));
    assert_eq!(column(&facts_now, "customer_name"), ["Ada L."], "{facts_now}");
    assert_eq!(column(&facts_then, "customer_name"), ["Ada"], "{facts_then}");
}

/// One column of TabSeparated text with a header line.
fn column(text: &str, name: &str) -> Vec<String> {
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split('\t').collect();
    let Some(index) = header.iter().position(|h| *h == name) else { return Vec::new() };
    lines.map(|line| line.split('\t').nth(index).unwrap_or_default().to_string()).collect()
}
