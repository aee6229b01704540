//! What the integration tests share: the local services (moto, the local SQS engine) and their
//! queues, the `cdc-tools` binary run with the test's environment, PostgreSQL clients, the
//! test's ClickHouse, and a small modelled sales history with the facts it must end in.

use std::collections::BTreeMap;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};
use base64::Engine;
use cdc_clickhouse::RawSql;
use cdc_clickhouse::Warehouse;
use cdc_clickhouse::config::ClickHouseSettings;
use cdc_clickhouse::dialect::Dialect;
use serde_json::json;

pub(crate) const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

pub(crate) fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

pub(crate) fn pg_url(database: &str) -> String {
    format!("host=127.0.0.1 port={} user=postgres dbname={database}", env_or("CDC_PG_PORT", "5432"))
}

pub(crate) async fn pg(database: &str) -> tokio_postgres::Client {
    cdc_tools::postgres::connect(&pg_url(database)).await.unwrap_or_else(|e| panic!("{e:#}"))
}

/// A name no other test (or earlier run) uses, usable as a database, slot and queue name.
pub(crate) fn test_name(prefix: &str) -> String {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() % 1_000_000_000;
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    format!("{prefix}_{}_{stamp}_{n}", std::process::id())
}

/// A queue or secret name no other test uses.
pub(crate) fn unique(prefix: &str) -> String {
    format!("{prefix}-{}-{}", std::process::id(), rand::random_range(0..u32::MAX))
}

/// The test's ClickHouse (as [`Service::processor_env`] gives it to the processor).
pub(crate) fn clickhouse_url() -> String {
    env_or("CLICKHOUSE_URL", "http://127.0.0.1:8123")
}

pub(crate) fn clickhouse_settings(database: &str) -> ClickHouseSettings {
    ClickHouseSettings::new(
        clickhouse_url(),
        env_or("CLICKHOUSE_USER", "default"),
        env_or("CLICKHOUSE_PASSWORD", ""),
        database,
    )
}

// ---------------------------------------------------------------------------------------------
// local services

/// Children killed and reaped however the test ends.
pub(crate) struct Stop(pub Vec<Child>);

impl Drop for Stop {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Per service script: how many tests of this binary hold it, and whether this binary started it.
static HOLDERS: Mutex<BTreeMap<&'static str, (usize, bool)>> = Mutex::new(BTreeMap::new());

/// A local service (`scripts/<script> start` unless it already answers), held by a test. The
/// tests of this binary run concurrently, so a service this binary started is stopped again when
/// the last test holding it ends, never under another test.
pub(crate) struct Service {
    script: &'static str,
    port_var: &'static str,
    port: String,
}

impl Service {
    pub(crate) fn start(script: &'static str, port_var: &'static str, default_port: &str) -> Service {
        let port = env_or(port_var, default_port);
        let mut holders = HOLDERS.lock().unwrap_or_else(|e| e.into_inner());
        let (count, started_here) = holders.entry(script).or_insert((0, false));
        if *count == 0 {
            let out = Command::new(format!("{ROOT}/scripts/{script}"))
                .arg("start")
                .env(port_var, &port)
                .output()
                .unwrap_or_else(|e| panic!("run scripts/{script}: {e}"));
            assert!(out.status.success(), "scripts/{script} start failed: {}", String::from_utf8_lossy(&out.stderr));
            *started_here = String::from_utf8_lossy(&out.stdout).trim() == "started";
        }
        *count += 1;
        Service { script, port_var, port }
    }

    /// moto's server (SQS with redrive policies, Secrets Manager).
    pub(crate) fn moto() -> Service {
        Service::start("moto.sh", "MOTO_PORT", "5000")
    }

    /// The local SQS engine.
    pub(crate) fn local_sqs() -> Service {
        Service::start("sqs.sh", "LOCAL_SQS_PORT", "9324")
    }

    pub(crate) fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// An SQS client of this service.
    pub(crate) async fn sqs(&self) -> aws_sdk_sqs::Client {
        aws_sdk_sqs::Client::new(&sdk_config(&self.endpoint()).await)
    }

    /// The processor's environment for a test named `name` with this service as its SQS (its
    /// source database, ClickHouse database and queue all take that name).
    pub(crate) fn processor_env(&self, name: &str) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL_SQS", self.endpoint()),
            ("AWS_REGION", env_or("AWS_REGION", "us-east-1")),
            ("AWS_ACCESS_KEY_ID", env_or("AWS_ACCESS_KEY_ID", "test")),
            ("AWS_SECRET_ACCESS_KEY", env_or("AWS_SECRET_ACCESS_KEY", "test")),
            ("CLICKHOUSE_URL", clickhouse_url()),
            ("CLICKHOUSE_DATABASE", name.to_owned()),
            ("CDC_PG_URL", pg_url(name)),
            ("RUST_LOG", "warn".to_string()),
        ]
    }

    /// A queue `name` whose messages move to `name-dlq` after 5 receives, as the capture
    /// publishes to it and `poll` consumes it.
    pub(crate) async fn queues(&self, name: &str) -> Queues {
        let sqs = self.sqs().await;
        let (queue_url, dlq_url) = queue_with_dlq(&sqs, name, &format!("{name}-dlq"), 5, 60).await;
        Queues { sqs, queue_url, dlq_url }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let mut holders = HOLDERS.lock().unwrap_or_else(|e| e.into_inner());
        let Some((count, started_here)) = holders.get_mut(self.script) else { return };
        *count -= 1;
        if *count == 0 && *started_here {
            let _ = Command::new(format!("{ROOT}/scripts/{}", self.script))
                .arg("stop")
                .env(self.port_var, &self.port)
                .status();
            *started_here = false;
        }
    }
}

pub(crate) async fn sdk_config(endpoint: &str) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .test_credentials()
        .load()
        .await
}

// ---------------------------------------------------------------------------------------------
// queues

pub(crate) async fn create_queue(
    sqs: &aws_sdk_sqs::Client,
    name: &str,
    attributes: &[(QueueAttributeName, String)],
) -> String {
    let mut req = sqs.create_queue().queue_name(name);
    for (k, v) in attributes {
        req = req.attributes(k.clone(), v);
    }
    let out = req.send().await.unwrap_or_else(|e| panic!("create queue {name} (is the SQS service up?): {e:?}"));
    out.queue_url().expect("queue url").to_string()
}

pub(crate) async fn queue_arn(sqs: &aws_sdk_sqs::Client, url: &str) -> String {
    let out = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .expect("queue attributes");
    out.attributes().and_then(|a| a.get(&QueueAttributeName::QueueArn)).expect("arn").clone()
}

/// Queue `name` with a redrive policy to a new queue `dlq_name`; returns (source url, dlq url).
/// `maxReceiveCount` goes as a JSON number (the local engine rejects the string form).
pub(crate) async fn queue_with_dlq(
    sqs: &aws_sdk_sqs::Client,
    name: &str,
    dlq_name: &str,
    max_receive_count: u32,
    visibility_timeout: u32,
) -> (String, String) {
    let dlq = create_queue(sqs, dlq_name, &[]).await;
    let dlq_arn = queue_arn(sqs, &dlq).await;
    let policy = json!({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": max_receive_count}).to_string();
    let attributes = [
        (QueueAttributeName::RedrivePolicy, policy),
        (QueueAttributeName::VisibilityTimeout, visibility_timeout.to_string()),
    ];
    (create_queue(sqs, name, &attributes).await, dlq)
}

/// A fresh `<prefix>-events` queue with a redrive policy to a fresh `<prefix>-dlq` (visibility
/// 30 s); returns (source url, dlq url).
pub(crate) async fn queue_pair(sqs: &aws_sdk_sqs::Client, prefix: &str, max_receive_count: u32) -> (String, String) {
    queue_with_dlq(sqs, &unique(&format!("{prefix}-events")), &unique(&format!("{prefix}-dlq")), max_receive_count, 30)
        .await
}

/// Sends `body`; returns the message id.
pub(crate) async fn send(sqs: &aws_sdk_sqs::Client, url: &str, body: &str) -> String {
    sqs.send_message().queue_url(url).message_body(body).send().await.expect("send").message_id().unwrap().to_string()
}

/// Every message currently visible in the queue (received with visibility 30 s, not deleted).
pub(crate) async fn peek_all(sqs: &aws_sdk_sqs::Client, url: &str) -> Vec<aws_sdk_sqs::types::Message> {
    let mut all = Vec::new();
    for _ in 0..50 {
        let out = sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .visibility_timeout(30)
            .message_attribute_names("All")
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .send()
            .await
            .expect("receive");
        if out.messages().is_empty() {
            break;
        }
        all.extend(out.messages().iter().cloned());
    }
    all
}

pub(crate) struct Queues {
    pub sqs: aws_sdk_sqs::Client,
    pub queue_url: String,
    pub dlq_url: String,
}

impl Queues {
    /// Messages in the dead-letter queue (up to 10; `usize::MAX` when it cannot be read).
    pub(crate) async fn dead_letters(&self) -> usize {
        self.sqs
            .receive_message()
            .queue_url(&self.dlq_url)
            .max_number_of_messages(10)
            .visibility_timeout(0)
            .send()
            .await
            .map(|o| o.messages().len())
            .unwrap_or(usize::MAX)
    }
}

// ---------------------------------------------------------------------------------------------
// the cdc-tools binary

/// Where a command's log goes: one file per process and command.
pub(crate) fn log_path(command: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("cdc-{}-{}-{command}.log", env!("CARGO_CRATE_NAME"), std::process::id()))
}

/// Runs `cdc-tools` with the test's environment. Long-running children write their logs to
/// a file (an unread pipe would fill and block them); stdout (EMF metrics) is discarded.
pub(crate) fn processor(args: &[&str], env: &[(&str, String)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_cdc-tools"));
    let stderr = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path(args[0]))
        .map(Stdio::from)
        .unwrap_or_else(|_| Stdio::null());
    command.args(args).stdout(Stdio::null()).stderr(stderr);
    for (k, v) in env {
        command.env(k, v);
    }
    command
}

/// `poll` as Lambda's event source mapping: batches of up to `batch_size` within 200 ms,
/// `max_concurrency` invocations at once.
pub(crate) fn spawn_poll(queue_url: &str, batch_size: u32, max_concurrency: u32, env: &[(&str, String)]) -> Child {
    let (batch_size, max_concurrency) = (batch_size.to_string(), max_concurrency.to_string());
    let args = ["poll", "--queue-url", queue_url, "--batch-size", &batch_size, "--batching-window-ms", "200"];
    processor(&args, env)
        .args(["--max-concurrency", &max_concurrency, "--wait-time-seconds", "1"])
        .spawn()
        .expect("poll")
}

/// The traffic generator: `rate` transactions/s for `seconds` s over (customers, products,
/// orders) rows, its summary on a piped stdout (see [`wait_for_generator`]).
pub(crate) fn spawn_generator(
    rate: u32,
    seconds: u32,
    seed: u32,
    (customers, products, orders): (u32, u32, u32),
    env: &[(&str, String)],
) -> Child {
    let numbers = [rate, seconds, seed, customers, products, orders].map(|n| n.to_string());
    let names = ["--rate", "--duration", "--seed", "--customers", "--products", "--orders"];
    let mut command = processor(&["generate"], env);
    for (name, value) in names.iter().zip(&numbers) {
        command.arg(name).arg(value);
    }
    command.stdout(Stdio::piped()).spawn().expect("generator")
}

/// `verify --wait <seconds>`, stdout and stderr captured.
pub(crate) fn verify(wait_seconds: u32, env: &[(&str, String)]) -> Output {
    let wait = wait_seconds.to_string();
    processor(&["verify", "--wait", &wait], env).stdout(Stdio::piped()).stderr(Stdio::piped()).output().expect("verify")
}

/// The last lines of each command's log, for a failure report; the logs are removed.
pub(crate) fn log_tails(commands: &[&str], lines: usize) -> String {
    let mut out = String::new();
    for command in commands {
        let text = std::fs::read_to_string(log_path(command)).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(lines).collect();
        if !tail.is_empty() {
            out.push_str(&format!(
                "--- {command}: last log lines\n{}\n",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            ));
        }
        let _ = std::fs::remove_file(log_path(command));
    }
    out
}

/// Waits (at most `limit`) for the `generate` child to end; returns its exit status and the
/// summary it printed on stdout (the child must have been spawned with a piped stdout).
pub(crate) async fn wait_for_generator(generator: &mut Child, limit: Duration) -> (ExitStatus, String) {
    let deadline = std::time::Instant::now() + limit;
    let status = loop {
        if let Some(status) = generator.try_wait().expect("generator") {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "generator did not finish");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let mut summary = String::new();
    std::io::Read::read_to_string(&mut generator.stdout.take().expect("generator stdout"), &mut summary)
        .expect("generator summary");
    (status, summary)
}

// ---------------------------------------------------------------------------------------------
// a modelled sales history and the facts it must end in

/// A current `sales_fact` row, compared at second resolution for `order_date` (the old server's
/// `DateTime` holds seconds).
#[derive(Debug, Clone, PartialEq, Eq, clickhouse::Row, serde::Deserialize)]
pub(crate) struct Fact {
    pub order_item_id: i64,
    pub order_id: i64,
    pub customer_id: i64,
    pub product_id: i64,
    pub quantity: i32,
    pub unit_price: i128,
    pub revenue: i128,
    pub order_status: String,
    pub order_date_s: i64,
    pub customer_name: String,
    pub customer_country: String,
    pub customer_city: String,
    pub product_name: String,
    pub product_category: String,
}

/// Debezium bodies (no schema envelope) and the facts they must end in.
#[derive(Debug, Default)]
pub(crate) struct History {
    pub events: Vec<String>,
    pub facts: BTreeMap<i64, Fact>,
}

/// Debezium's precise decimal for the history's prices (128 to 32,767 cents: two bytes).
fn decimal(cents: i64) -> String {
    let cents = i16::try_from(cents).ok().filter(|c| *c >= 128).expect("a two-byte price");
    base64::engine::general_purpose::STANDARD.encode(cents.to_be_bytes())
}

/// For each id from `first_id` on, `count` times: a customer, a product, an order, one item of
/// it, and the order updated from `paid` to `shipped` (so versions matter).
pub(crate) fn history(first_id: i64, count: i64) -> History {
    const CREATED: &str = "2023-11-14T22:13:20.000000Z";
    let mut history = History::default();
    let mut lsn = 33_000_000u64;
    let mut emit = |table: &str, op: &str, after: serde_json::Value| {
        lsn += 16;
        let ts_ms = 1_704_067_200_000 + lsn;
        let source = json!({"version": "2.5.0.Final", "connector": "postgresql", "name": "oltp", "ts_ms": ts_ms,
                            "snapshot": "false", "db": "oltp", "schema": "public", "table": table,
                            "txId": lsn, "lsn": lsn});
        let before = (op == "u").then(|| json!({"id": after["id"]}));
        json!({"before": before, "after": after, "source": source, "op": op, "ts_ms": ts_ms + 5}).to_string()
    };
    for id in first_id..first_id + count {
        let price = 1_000 + id;
        // 2024-01-01T00:00:00Z plus `id` µs.
        let order_date = format!("2024-01-01T00:00:00.{id:06}Z");
        let (name, product) = (format!("Customer {id}"), format!("Product {id}"));
        let customer = json!({"id": id, "email": format!("c{id}@example.com"), "name": name, "country": "FR",
                              "city": "Paris", "created_at": CREATED});
        let product_row = json!({"id": id, "name": product, "category": "Toys", "price": decimal(price),
                                 "created_at": CREATED});
        let item = json!({"id": id, "order_id": id, "product_id": id, "quantity": 2, "price": decimal(price)});
        let order = |status: &str| {
            json!({"id": id, "customer_id": id, "order_date": order_date, "status": status,
                   "total": decimal(2 * price)})
        };
        history.events.extend([
            emit("customers", "c", customer),
            emit("products", "c", product_row),
            emit("orders", "c", order("paid")),
            emit("order_items", "c", item),
            emit("orders", "u", order("shipped")),
        ]);
        let fact = Fact {
            order_item_id: id,
            order_id: id,
            customer_id: id,
            product_id: id,
            quantity: 2,
            unit_price: i128::from(price) * 10_000,
            revenue: 2 * i128::from(price) * 10_000,
            order_status: "shipped".into(),
            order_date_s: 1_704_067_200,
            customer_name: name,
            customer_country: "FR".into(),
            customer_city: "Paris".into(),
            product_name: product,
            product_category: "Toys".into(),
        };
        history.facts.insert(id, fact);
    }
    history
}

/// `SELECT … FROM sales_fact FINAL WHERE _is_deleted = 0`, the contract's current state.
pub(crate) async fn current_facts(warehouse: &Warehouse) -> BTreeMap<i64, Fact> {
    let seconds = match warehouse.dialect().await.expect("dialect") {
        Dialect::Modern => "toInt64(toUnixTimestamp(order_date))",
        Dialect::Legacy => "toInt64(toUInt32(order_date))",
    };
    let sql = format!(
        "SELECT order_item_id, order_id, customer_id, product_id, quantity, unit_price, revenue, \
         toString(order_status), {seconds}, customer_name, toString(customer_country), toString(customer_city), \
         product_name, toString(product_category) FROM {}.sales_fact FINAL WHERE _is_deleted = 0 ORDER BY order_item_id",
        warehouse.database()
    );
    let rows: Vec<Fact> = warehouse.fetch(&sql).await.expect("read sales_fact");
    rows.into_iter().map(|f| (f.order_item_id, f)).collect()
}

/// Differences between the current facts and the expected ones: (missing, extra, wrong).
pub(crate) fn diff(expected: &BTreeMap<i64, Fact>, actual: &BTreeMap<i64, Fact>) -> (usize, usize, usize) {
    let missing = expected.keys().filter(|k| !actual.contains_key(k)).count();
    let extra = actual.keys().filter(|k| !expected.contains_key(k)).count();
    let wrong = expected.iter().filter(|(k, v)| actual.get(k).is_some_and(|a| a != *v)).count();
    (missing, extra, wrong)
}
