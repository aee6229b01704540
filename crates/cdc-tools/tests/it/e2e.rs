//! End to end from a real PostgreSQL at a steady rate: generated traffic (50 transactions/s for
//! 60 s: inserts, updates and deletes on all four tables) → capture (wal2json → Debezium events)
//! → the local SQS engine (a queue with a redrive policy to a dead-letter queue) → `poll` (the
//! Lambda handler, concurrent invocations) → ClickHouse, with the capture killed (SIGKILL) and
//! restarted once mid-run; `verify` must then find 0 differences between PostgreSQL's join and
//! ClickHouse, and the dead-letter queue must be empty.
//!
//! Needs PostgreSQL with wal2json and ClickHouse on 127.0.0.1, which the README's test command
//! starts; the local SQS is started here (`scripts/sqs.sh`) when it is not running. A missing
//! service fails the test; nothing is skipped.

use cdc_clickhouse::RawSql;
use std::time::Duration;

use cdc_tools::generator::SOURCE_SCHEMA_SQL;

use crate::support::{
    Service, Stop, clickhouse_settings, log_tails, pg, processor, spawn_generator, spawn_poll, test_name, verify,
    wait_for_generator,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steady_50_tx_per_second_for_60_s_with_a_capture_restart_has_no_difference() {
    let name = test_name("e2e");
    let local_sqs = Service::local_sqs();
    let env = local_sqs.processor_env(&name);

    // Source database and schema.
    pg("postgres").await.batch_execute(&format!("CREATE DATABASE {name}")).await.expect("create database");
    pg(&name).await.batch_execute(SOURCE_SCHEMA_SQL).await.expect("source schema");

    // The queue, as the capture publishes and `poll` consumes it.
    let queues = local_sqs.queues(&name).await;
    let (sqs, queue_url, dlq_url) = (&queues.sqs, queues.queue_url.clone(), queues.dlq_url.clone());
    let mut env = env;
    env.push(("DEAD_LETTER_QUEUE_URL", dlq_url.clone()));

    let capture_args = ["capture", "--queue-url", &queue_url, "--slot", &name, "--poll-ms", "50"];
    let status = processor(&["migrate"], &env).status().expect("migrate");
    assert!(status.success(), "migrate failed");
    let mut running =
        Stop(vec![processor(&capture_args, &env).spawn().expect("capture"), spawn_poll(&queue_url, 500, 4, &env)]);
    // Let the capture create its slot before any traffic.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut generator = spawn_generator(50, 60, 11, (100, 40, 100), &env);

    // Kill the capture mid-run, without a chance to clean up, and start it again.
    tokio::time::sleep(Duration::from_secs(20)).await;
    let mut capture = running.0.remove(0);
    capture.kill().expect("kill capture");
    capture.wait().expect("reap capture");
    tokio::time::sleep(Duration::from_millis(500)).await;
    running.0.push(processor(&capture_args, &env).spawn().expect("capture restart"));

    let (generated, summary) = wait_for_generator(&mut generator, Duration::from_secs(180)).await;
    assert!(generated.success(), "generator failed");
    // "generate: N transactions in S s (R/s, ...": the steady rate held for the whole minute.
    let transactions: u64 = summary.split_whitespace().nth(1).and_then(|n| n.parse().ok()).unwrap_or(0);
    assert!(transactions >= 2_850, "the generator fell short of 50 tx/s for 60 s: {summary}");

    // Everything committed must arrive: verify retries until clean or its wait runs out.
    let verify = verify(150, &env);
    let mut report = String::from_utf8_lossy(&verify.stdout).to_string() + &String::from_utf8_lossy(&verify.stderr);
    let queue = sqs
        .get_queue_attributes()
        .queue_url(&queue_url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::All)
        .send()
        .await
        .ok()
        .and_then(|a| a.attributes)
        .unwrap_or_default();
    report.push_str(&format!("queue after verify: {queue:?}\n"));
    let dead = queues.dead_letters().await;
    report.push_str(&format!("dead-letter queue: {dead} message(s)\n"));
    drop(running);
    report.push_str(&log_tails(&["capture", "poll"], 6));

    let admin = pg(&name).await;
    let _ = admin.batch_execute(&format!("SELECT pg_drop_replication_slot('{name}')")).await;
    drop(admin);
    let _ = pg("postgres").await.batch_execute(&format!("DROP DATABASE {name}")).await;
    let ch = cdc_clickhouse::Warehouse::new(&clickhouse_settings(&name));
    let facts = ch.fetch_tsv(&format!("SELECT count() FROM {name}.sales_fact_current")).await.unwrap_or_default();
    let _ = ch.execute(&format!("DROP DATABASE IF EXISTS {name}")).await;

    assert!(verify.status.success(), "verify found differences:\n{report}");
    assert_eq!(dead, 0, "the dead-letter queue is not empty:\n{report}");
    let facts: u64 = facts.trim().parse().unwrap_or(0);
    assert!(facts > 0, "no facts reached ClickHouse:\n{report}");
    println!("{report}\nfacts: {facts}\n{summary}");
}
