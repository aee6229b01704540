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

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cdc_processor::generator::SOURCE_SCHEMA_SQL;

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

fn pg_url(database: &str) -> String {
    format!("host=127.0.0.1 port={} user=postgres dbname={database}", env_or("CDC_PG_PORT", "5432"))
}

/// Runs `cdc-processor` with the test's environment. Long-running children write their logs to
/// a file (an unread pipe would fill and block them); stdout (EMF metrics) is discarded.
fn processor(args: &[&str], env: &[(&str, String)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_cdc-processor"));
    let log = std::env::temp_dir().join(format!("cdc-e2e-{}-{}.log", std::process::id(), args[0]));
    let stderr = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .map(Stdio::from)
        .unwrap_or_else(|_| Stdio::null());
    command.args(args).stdout(Stdio::null()).stderr(stderr);
    for (k, v) in env {
        command.env(k, v);
    }
    command
}

struct Stop(Vec<Child>);

impl Drop for Stop {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

async fn pg(database: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(&pg_url(database), tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL must be running (scripts/postgres.sh start): {e}"));
    tokio::spawn(connection);
    client
}

/// The local SQS engine, started with `scripts/sqs.sh` unless it already answers, and stopped
/// again only if started here.
struct LocalSqs {
    endpoint: String,
    port: String,
    started_here: bool,
}

impl LocalSqs {
    fn start() -> Self {
        let port = env_or("LOCAL_SQS_PORT", "9324");
        let out = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/sqs.sh"))
            .arg("start")
            .env("LOCAL_SQS_PORT", &port)
            .output()
            .expect("run scripts/sqs.sh");
        assert!(out.status.success(), "scripts/sqs.sh start failed: {}", String::from_utf8_lossy(&out.stderr));
        let started_here = String::from_utf8_lossy(&out.stdout).trim() == "started";
        Self { endpoint: format!("http://127.0.0.1:{port}"), port, started_here }
    }
}

impl Drop for LocalSqs {
    fn drop(&mut self) {
        if self.started_here {
            let _ = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/sqs.sh"))
                .arg("stop")
                .env("LOCAL_SQS_PORT", &self.port)
                .status();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steady_50_tx_per_second_for_60_s_with_a_capture_restart_has_no_difference() {
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() % 1_000_000_000;
    let name = format!("e2e_{}_{stamp}", std::process::id());
    let local_sqs = LocalSqs::start();
    let endpoint = local_sqs.endpoint.clone();
    let env = vec![
        ("AWS_ENDPOINT_URL_SQS", endpoint.clone()),
        ("AWS_REGION", env_or("AWS_REGION", "us-east-1")),
        ("AWS_ACCESS_KEY_ID", env_or("AWS_ACCESS_KEY_ID", "test")),
        ("AWS_SECRET_ACCESS_KEY", env_or("AWS_SECRET_ACCESS_KEY", "test")),
        ("CLICKHOUSE_URL", env_or("CLICKHOUSE_URL", "http://127.0.0.1:8123")),
        ("CLICKHOUSE_DATABASE", name.clone()),
        ("CDC_PG_URL", pg_url(&name)),
        ("RUST_LOG", "warn".to_string()),
    ];

    // Source database and schema.
    pg("postgres").await.batch_execute(&format!("CREATE DATABASE {name}")).await.expect("create database");
    pg(&name).await.batch_execute(SOURCE_SCHEMA_SQL).await.expect("source schema");

    // The queue, as the capture publishes and `poll` consumes it.
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(&endpoint)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_sqs::config::Credentials::new("test", "test", None, None, "e2e"))
        .load()
        .await;
    let sqs = aws_sdk_sqs::Client::new(&config);
    let dlq_url = sqs
        .create_queue()
        .queue_name(format!("{name}-dlq"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("the local SQS must answer (scripts/sqs.sh start): {e:?}"))
        .queue_url
        .expect("dlq url");
    let dlq_arn = sqs
        .get_queue_attributes()
        .queue_url(&dlq_url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .expect("dlq attributes")
        .attributes
        .and_then(|a| a.get(&aws_sdk_sqs::types::QueueAttributeName::QueueArn).cloned())
        .expect("dlq arn");
    // maxReceiveCount as a JSON number (the local engine rejects the string form).
    let policy = serde_json::json!({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 5}).to_string();
    let queue_url = sqs
        .create_queue()
        .queue_name(&name)
        .attributes(aws_sdk_sqs::types::QueueAttributeName::RedrivePolicy, policy)
        .attributes(aws_sdk_sqs::types::QueueAttributeName::VisibilityTimeout, "60")
        .send()
        .await
        .expect("create queue")
        .queue_url
        .expect("queue url");
    let mut env = env;
    env.push(("DEAD_LETTER_QUEUE_URL", dlq_url.clone()));

    let capture_args = ["capture", "--queue-url", &queue_url, "--slot", &name, "--poll-ms", "50"];
    let status = processor(&["migrate"], &env).status().expect("migrate");
    assert!(status.success(), "migrate failed");
    let mut running = Stop(vec![
        processor(&capture_args, &env).spawn().expect("capture"),
        processor(
            &[
                "poll",
                "--queue-url",
                &queue_url,
                "--batch-size",
                "500",
                "--batching-window-ms",
                "200",
                "--max-concurrency",
                "4",
                "--wait-time-seconds",
                "1",
            ],
            &env,
        )
        .spawn()
        .expect("poll"),
    ]);
    // Let the capture create its slot before any traffic.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut generator = processor(
        &[
            "generate",
            "--rate",
            "50",
            "--duration",
            "60",
            "--seed",
            "11",
            "--customers",
            "100",
            "--products",
            "40",
            "--orders",
            "100",
        ],
        &env,
    )
    .stdout(Stdio::piped())
    .spawn()
    .expect("generator");

    // Kill the capture mid-run, without a chance to clean up, and start it again.
    tokio::time::sleep(Duration::from_secs(20)).await;
    let mut capture = running.0.remove(0);
    capture.kill().expect("kill capture");
    capture.wait().expect("reap capture");
    tokio::time::sleep(Duration::from_millis(500)).await;
    running.0.push(processor(&capture_args, &env).spawn().expect("capture restart"));

    let deadline = Instant::now() + Duration::from_secs(180);
    let generated = loop {
        if let Some(status) = generator.try_wait().expect("generator") {
            break status;
        }
        assert!(Instant::now() < deadline, "generator did not finish");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(generated.success(), "generator failed");
    let mut summary = String::new();
    std::io::Read::read_to_string(&mut generator.stdout.take().expect("generator stdout"), &mut summary)
        .expect("generator summary");
    // "generate: N transactions in S s (R/s, ...": the steady rate held for the whole minute.
    let transactions: u64 = summary.split_whitespace().nth(1).and_then(|n| n.parse().ok()).unwrap_or(0);
    assert!(transactions >= 2_850, "the generator fell short of 50 tx/s for 60 s: {summary}");

    // Everything committed must arrive: verify retries until clean or its wait runs out.
    let verify = processor(&["verify", "--wait", "150"], &env)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("verify");
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
    let dead = sqs
        .receive_message()
        .queue_url(&dlq_url)
        .max_number_of_messages(10)
        .visibility_timeout(0)
        .send()
        .await
        .map(|o| o.messages().len())
        .unwrap_or(usize::MAX);
    report.push_str(&format!("dead-letter queue: {dead} message(s)\n"));
    drop(running);
    for command in ["capture", "poll"] {
        let log = std::env::temp_dir().join(format!("cdc-e2e-{}-{command}.log", std::process::id()));
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(6).collect();
        report.push_str(&format!(
            "--- {command}: last log lines\n{}\n",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        ));
        let _ = std::fs::remove_file(&log);
    }

    let admin = pg(&name).await;
    let _ = admin.batch_execute(&format!("SELECT pg_drop_replication_slot('{name}')")).await;
    drop(admin);
    let _ = pg("postgres").await.batch_execute(&format!("DROP DATABASE {name}")).await;
    let ch = cdc_processor::sink::Warehouse::new(&cdc_processor::config::ClickHouseSettings {
        database: name.clone(),
        ..cdc_processor::config::ClickHouseSettings::from_env()
    });
    let facts = ch.fetch_tsv(&format!("SELECT count() FROM {name}.sales_fact_current")).await.unwrap_or_default();
    let _ = ch.execute(&format!("DROP DATABASE IF EXISTS {name}")).await;

    assert!(verify.status.success(), "verify found differences:\n{report}");
    assert_eq!(dead, 0, "the dead-letter queue is not empty:\n{report}");
    let facts: u64 = facts.trim().parse().unwrap_or(0);
    assert!(facts > 0, "no facts reached ClickHouse:\n{report}");
    println!("{report}\nfacts: {facts}\n{summary}");
}
