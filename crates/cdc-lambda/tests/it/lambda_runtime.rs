//! The Lambda runtime path, without Docker: `cargo lambda watch --only-lambda-apis` serves the
//! Lambda runtime API (the emulator `sam local invoke` would put in a container), the function
//! binary runs against it exactly as Lambda starts it (`AWS_LAMBDA_RUNTIME_API` set, so `main`
//! enters the runtime loop), and `cargo lambda invoke` sends it the files in `events/`. Checked:
//! each invocation's `SqsBatchResponse` (exactly the poison records fail) and the rows the
//! invocations wrote to ClickHouse.
//!
//! Needs cargo-lambda (`scripts/tools.sh` installs it), ClickHouse on 127.0.0.1 and the local SQS
//! (started here with `scripts/sqs.sh` when not running; the handler changes the visibility of
//! failed messages there). Nothing is skipped: a missing piece fails the test.

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use aws_lambda_events::sqs::SqsEvent;
use cdc_clickhouse::RawSql;
use cdc_clickhouse::Warehouse;
use cdc_core::decode::Decoder;

use crate::support::services::{LocalSqs, Stop};
use crate::support::{clickhouse_url, event_file, settings};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

fn answers(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200)).is_ok()
}

/// `cargo lambda invoke` of one file in `events/`; returns the response JSON.
fn invoke(port: u16, file: &str) -> serde_json::Value {
    let out = Command::new("cargo")
        .args(["lambda", "invoke", "-A", "127.0.0.1", "-P", &port.to_string(), "--output-format", "json"])
        .arg("--data-file")
        .arg(event_file(file))
        .output()
        .expect("run cargo lambda invoke (scripts/tools.sh installs cargo-lambda)");
    assert!(out.status.success(), "cargo lambda invoke {file} failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{file}: the response is not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

fn failures(response: &serde_json::Value) -> BTreeSet<String> {
    response["batchItemFailures"]
        .as_array()
        .unwrap_or_else(|| panic!("not an SqsBatchResponse: {response}"))
        .iter()
        .filter_map(|f| f["itemIdentifier"].as_str().map(str::to_string))
        .collect()
}

/// Message ids of the records in `events/<file>` the real decoder rejects.
fn poison_ids(file: &str) -> BTreeSet<String> {
    let text = std::fs::read_to_string(event_file(file)).unwrap();
    let event: SqsEvent = serde_json::from_str(&text).unwrap();
    let decoder = Decoder::default();
    event
        .records
        .iter()
        .filter(|r| decoder.decode(r.body.as_deref().unwrap_or_default()).is_err())
        .filter_map(|r| r.message_id.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_function_under_the_lambda_runtime_api_answers_batches_and_writes_rows() {
    let sqs = LocalSqs::start();
    let database = format!("lambda_rt_{}_{}", std::process::id(), rand::random_range(0..u32::MAX));
    let clickhouse_url = clickhouse_url();
    let port = free_port();

    let emulator = Command::new("cargo")
        .args(["lambda", "watch", "--only-lambda-apis", "-A", "127.0.0.1", "-P", &port.to_string()])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run cargo lambda watch (scripts/tools.sh installs cargo-lambda)");
    let mut running = Stop(vec![emulator]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !answers(port) {
        assert!(Instant::now() < deadline, "cargo lambda watch did not listen on 127.0.0.1:{port} within 60 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The function, started as Lambda starts it: the runtime API's address in the environment.
    let log = std::env::temp_dir().join(format!("cdc-lambda-runtime-{}.log", std::process::id()));
    let function = Command::new(env!("CARGO_BIN_EXE_cdc-processor"))
        .env("AWS_LAMBDA_RUNTIME_API", format!("http://127.0.0.1:{port}/.rt"))
        .env("AWS_LAMBDA_FUNCTION_NAME", "_")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "1")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "1024")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_ENDPOINT_URL_SQS", &sqs.endpoint)
        .env("CLICKHOUSE_URL", &clickhouse_url)
        .env("CLICKHOUSE_DATABASE", &database)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).map(Stdio::from).unwrap_or_else(|_| Stdio::null()))
        .spawn()
        .expect("start the function");
    running.0.push(function);

    // A batch of changes on all four tables: every record succeeds.
    let mixed = invoke(port, "mixed-batch.json");
    assert!(failures(&mixed).is_empty(), "mixed-batch: {mixed}");
    // Poison next to good records: exactly the poison records are reported (no DLQ configured, so
    // SQS's redrive policy takes them after maxReceiveCount).
    let poison = invoke(port, "poison-batch.json");
    let expected = poison_ids("poison-batch.json");
    assert_eq!(expected.len(), 2, "the sample has two poison records");
    assert_eq!(failures(&poison), expected, "poison-batch: {poison}");
    // Heartbeats, tombstones and transaction markers: acknowledged, nothing written.
    let skips = invoke(port, "tombstone-heartbeat.json");
    assert!(failures(&skips).is_empty(), "tombstone-heartbeat: {skips}");

    let ch = Warehouse::new(&settings(&database));
    let mut counts = Vec::new();
    for table in ["customers", "products", "orders", "order_items", "sales_fact"] {
        let n = ch.fetch_tsv(&format!("SELECT count() FROM `{database}`.{table}")).await.unwrap_or_default();
        counts.push((table, n.trim().parse::<u64>().unwrap_or(0)));
    }
    drop(running);
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    let _ = ch.execute(&format!("DROP DATABASE IF EXISTS `{database}`")).await;
    drop(sqs);

    let tail: Vec<&str> = text.lines().rev().take(10).collect();
    for (table, n) in &counts {
        assert!(*n > 0, "no rows in {table} after the invocations: {counts:?}\nfunction log (last lines):\n{tail:?}");
    }
}
