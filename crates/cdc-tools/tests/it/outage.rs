//! Outages, deadlines and TLS, with real parts: moto (SQS with a redrive policy), a private
//! ClickHouse server that this test starts, stops and restarts (never the shared one), a TCP
//! listener that accepts and never answers, and a TLS proxy with a private CA in front of the
//! shared ClickHouse. Nothing is skipped: a part that cannot start fails the test.
//!
//! docs/error-policy.md argues the behaviour checked here.

use std::collections::HashMap;
use std::net::TcpListener as StdListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use aws_sdk_sqs::types::MessageSystemAttributeName;
use cdc_clickhouse::RawSql;
use cdc_clickhouse::Warehouse;
use cdc_clickhouse::config::ClickHouseSettings;
use cdc_core::decode::DecodeOptions;
use cdc_core::error::{Classify, ErrorClass};
use cdc_lambda::handler::{Handler, HandlerConfig, Invocation};
use cdc_lambda::pipeline::{Pipeline, Process, SystemicError};
use cdc_lambda::secrets::StaticCredentials;
use cdc_lambda::sqs::backoff::Backoff;
use cdc_lambda::sqs::message::{Message, MessageReport};
use cdc_lambda::sqs::queue::{Queue, ReceiveRequest, SqsQueue};
use cdc_lambda::sqs::requeue;
use cdc_tools::poll::{PollArgs, poll, to_sqs_event};

use crate::support::{
    ROOT, Service, clickhouse_url, current_facts, diff, history, peek_all, queue_pair, send, test_name,
};

/// The tests of this module run one at a time: each stops, starts or starves a ClickHouse and
/// times what the handler does meanwhile.
static SERIAL: std::sync::LazyLock<tokio::sync::Mutex<()>> = std::sync::LazyLock::new(Default::default);

/// The bodies in the queue, left visible again afterwards.
async fn bodies_released(sqs: &aws_sdk_sqs::Client, url: &str) -> Vec<String> {
    let messages = peek_all(sqs, url).await;
    for m in &messages {
        if let Some(handle) = m.receipt_handle() {
            sqs.change_message_visibility()
                .queue_url(url)
                .receipt_handle(handle)
                .visibility_timeout(0)
                .send()
                .await
                .expect("release");
        }
    }
    messages.iter().filter_map(|m| m.body().map(str::to_string)).collect()
}

// ---------------------------------------------------------------------------------------------
// a private ClickHouse (scripts/clickhouse.sh on free ports and a temporary state directory)

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

struct PrivateClickHouse {
    dir: tempfile::TempDir,
    http_port: u16,
    tcp_port: u16,
    running: bool,
}

impl PrivateClickHouse {
    fn start() -> Self {
        let mut ch = PrivateClickHouse {
            dir: tempfile::tempdir().expect("tempdir"),
            http_port: free_port(),
            tcp_port: free_port(),
            running: false,
        };
        ch.script("start");
        ch
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    fn script(&mut self, action: &str) {
        let out = Command::new(format!("{ROOT}/scripts/clickhouse.sh"))
            .arg(action)
            .env("CDC_SERVICES_DIR", self.dir.path())
            .env("CLICKHOUSE_HTTP_PORT", self.http_port.to_string())
            .env("CLICKHOUSE_TCP_PORT", self.tcp_port.to_string())
            .output()
            .expect("run scripts/clickhouse.sh");
        assert!(
            out.status.success(),
            "scripts/clickhouse.sh {action} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.running = action == "start";
    }

    fn stop(&mut self) {
        self.script("stop");
        // Bounded: the port must refuse connections before the outage counts as begun.
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.http_port)).is_ok() {
            assert!(Instant::now() < deadline, "ClickHouse still listening 30 s after stop");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for PrivateClickHouse {
    fn drop(&mut self) {
        if self.running {
            self.script("stop");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// the real pipeline, counting how often each body was processed

#[derive(Clone, Default)]
struct Attempts(Arc<Mutex<HashMap<String, u32>>>);

struct Counting {
    inner: Pipeline,
    attempts: Attempts,
}

impl Process for Counting {
    async fn process(&self, messages: &[Message], deadline: Instant) -> Result<Vec<MessageReport>, SystemicError> {
        {
            let mut attempts = self.attempts.0.lock().unwrap();
            for m in messages {
                *attempts.entry(m.body.clone()).or_default() += 1;
            }
        }
        self.inner.process(messages, deadline).await
    }
}

fn counting_factory(
    attempts: Attempts,
) -> impl Fn(ClickHouseSettings) -> std::future::Ready<Result<Counting, SystemicError>> + Send + Sync {
    move |settings: ClickHouseSettings| {
        let inner = Pipeline::new(DecodeOptions::default(), Warehouse::new(&settings));
        std::future::ready(Ok(Counting { inner, attempts: attempts.clone() }))
    }
}

fn real_factory(settings: ClickHouseSettings) -> std::future::Ready<Result<Pipeline, SystemicError>> {
    std::future::ready(Ok(Pipeline::new(DecodeOptions::default(), Warehouse::new(&settings))))
}

/// Runs the emulated event source mapping for `seconds`.
async fn pump<F, C, Q>(handler: &Handler<F, C, Q>, source: &str, seconds: u64, until_empty: bool)
where
    F: cdc_lambda::handler::PipelineFactory,
    C: cdc_lambda::secrets::CredentialSource,
    Q: Queue,
{
    let args = PollArgs {
        batch_size: 10,
        wait_time_seconds: 1,
        visibility_timeout: 20,
        until_empty,
        duration: Some(seconds),
        ..PollArgs::new(source)
    };
    poll(&args, handler).await.expect("poll");
}

/// ClickHouse stopped for longer than maxReceiveCount × the backoff cap while changes keep
/// arriving, then restarted: nothing healthy reaches the DLQ, ClickHouse matches the source, and
/// the one poison message (no DLQ URL configured: it takes the redrive policy's path after its
/// own maxReceiveCount receives) is the DLQ's only message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_longer_than_the_redrive_policy_costs_only_latency() {
    let _serial = SERIAL.lock().await;
    const MAX_RECEIVE_COUNT: u32 = 3;
    let moto = Service::moto();
    let sqs = moto.sqs().await;
    let mut clickhouse = PrivateClickHouse::start();
    let (source, dlq) = queue_pair(&sqs, "outage", MAX_RECEIVE_COUNT).await;
    let backoff = Backoff { base: Duration::from_secs(1), cap: Duration::from_secs(2) };
    let config = HandlerConfig {
        source_queue_url: Some(source.clone()),
        dead_letter_queue_url: None,
        backoff,
        deadline_margin: Duration::from_secs(3),
        ..HandlerConfig::default()
    };
    let database = test_name("outage");
    let settings = ClickHouseSettings::new(clickhouse.url(), "default", "", &database);
    let attempts = Attempts::default();
    let handler = Handler::new(
        counting_factory(attempts.clone()),
        StaticCredentials(settings.clone()),
        SqsQueue::new(sqs.clone()),
        config,
    );

    // Before the outage: half the changes land.
    let db = history(1, 4);
    for body in &db.events {
        send(&sqs, &source, body).await;
    }
    pump(&handler, &source, 60, true).await;
    let warehouse = Warehouse::new(&settings);
    assert_eq!(diff(&db.facts, &current_facts(&warehouse).await), (0, 0, 0), "before the outage");

    // The outage: ClickHouse stopped, changes (and one poison message) keep arriving.
    clickhouse.stop();
    let outage_started = Instant::now();
    let before = db.events.len();
    let more = history(101, 4);
    let poison = "{\"poison\": not json at all".to_string();
    for (n, body) in more.events.iter().enumerate() {
        send(&sqs, &source, body).await;
        if n == 3 {
            send(&sqs, &source, &poison).await;
        }
        if n % 5 == 4 {
            pump(&handler, &source, 2, false).await;
        }
    }
    // Outlast the redrive policy several times over: maxReceiveCount × the backoff cap.
    let policy_span = backoff.cap * MAX_RECEIVE_COUNT;
    while outage_started.elapsed() < policy_span * 4 {
        pump(&handler, &source, 2, false).await;
    }
    let outage = outage_started.elapsed();
    let dead_during = bodies_released(&sqs, &dlq).await;
    assert!(dead_during.iter().all(|b| *b == poison), "no healthy message in the DLQ during the outage");
    clickhouse.script("start");

    // After: everything drains.
    pump(&handler, &source, 120, true).await;
    let mut expected = db.facts.clone();
    expected.extend(more.facts.clone());
    let actual = current_facts(&warehouse).await;
    assert_eq!(diff(&expected, &actual), (0, 0, 0), "ClickHouse matches the source after the outage");
    assert_eq!(actual.len(), 8);

    let dead = peek_all(&sqs, &dlq).await;
    let dead_bodies: Vec<&str> = dead.iter().filter_map(|m| m.body()).collect();
    assert_eq!(dead_bodies, vec![poison.as_str()], "exactly the poison message is dead-lettered");
    assert!(peek_all(&sqs, &source).await.is_empty(), "source queue drained");

    let attempts = attempts.0.lock().unwrap().clone();
    assert_eq!(attempts[&poison], MAX_RECEIVE_COUNT, "poison retried maxReceiveCount times, then dead-lettered");
    let most = more.events.iter().map(|b| attempts.get(b).copied().unwrap_or(0)).max().unwrap_or(0);
    assert!(
        most > MAX_RECEIVE_COUNT,
        "a healthy message was processed {most} times (more than maxReceiveCount) during the {outage:?} outage and still \
         reached ClickHouse"
    );
    assert!(before > 0 && outage > policy_span, "outage {outage:?} longer than the redrive policy's {policy_span:?}");
    warehouse.execute(&format!("DROP DATABASE IF EXISTS {database}")).await.expect("drop database");
}

/// Copies are bounded by age: with a retry age of a few seconds, an outage longer than it moves
/// every message in flight to the DLQ as `retry.expired` (with its reason), none of them lost;
/// the test above is the shorter outage (default age), which moves none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_longer_than_the_retry_age_moves_messages_to_the_dlq_as_expired() {
    let _serial = SERIAL.lock().await;
    let moto = Service::moto();
    let sqs = moto.sqs().await;
    let mut clickhouse = PrivateClickHouse::start();
    let (source, dlq) = queue_pair(&sqs, "outage", 10).await;
    let config = HandlerConfig {
        source_queue_url: Some(source.clone()),
        dead_letter_queue_url: Some(dlq.clone()),
        backoff: Backoff { base: Duration::from_secs(1), cap: Duration::from_secs(1) },
        deadline_margin: Duration::from_secs(3),
        retry_max_age: Duration::from_secs(4),
        ..HandlerConfig::default()
    };
    let database = test_name("outage_expired");
    let settings = ClickHouseSettings::new(clickhouse.url(), "default", "", &database);
    let handler = Handler::new(real_factory, StaticCredentials(settings), SqsQueue::new(sqs.clone()), config);

    clickhouse.stop();
    let db = history(1, 3);
    for body in &db.events {
        send(&sqs, &source, body).await;
    }
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(12) {
        pump(&handler, &source, 2, false).await;
    }
    pump(&handler, &source, 10, true).await;

    let dead = peek_all(&sqs, &dlq).await;
    let mut dead_bodies: Vec<&str> = dead.iter().filter_map(|m| m.body()).collect();
    dead_bodies.sort_unstable();
    let mut sent: Vec<&str> = db.events.iter().map(String::as_str).collect();
    sent.sort_unstable();
    assert_eq!(dead_bodies, sent, "every message, once, in the DLQ: none lost, none doubled");
    for m in &dead {
        let code = m.message_attributes().and_then(|a| a.get("error_code")).and_then(|a| a.string_value());
        assert_eq!(code, Some(requeue::EXPIRED_CODE), "the reason is attached");
    }
    assert!(peek_all(&sqs, &source).await.is_empty(), "no copy left going round");
    drop(clickhouse);
}

// ---------------------------------------------------------------------------------------------
// a ClickHouse that accepts connections and never answers

/// Accepts connections and holds them open without ever writing a byte.
async fn silent_listener() -> (u16, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    (port, task)
}

/// Receives up to `n` messages (with 30 s visibility) as Lambda's mapping would hand them over.
async fn receive_event(queue: &SqsQueue, url: &str, n: usize) -> aws_lambda_events::sqs::SqsEvent {
    let arn = queue.info(url).await.expect("queue info").arn;
    let mut received = Vec::new();
    for _ in 0..20 {
        let request = ReceiveRequest { max_messages: 10, wait_time_seconds: 1, visibility_timeout_seconds: Some(30) };
        received.extend(queue.receive(url, request).await.expect("receive"));
        if received.len() >= n {
            break;
        }
    }
    assert_eq!(received.len(), n, "received the test's messages");
    to_sqs_event(&received, &arn, "us-east-1")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clickhouse_that_never_answers_gets_a_batch_response_before_the_deadline() {
    let _serial = SERIAL.lock().await;
    let moto = Service::moto();
    let sqs = moto.sqs().await;
    let (port, listener) = silent_listener().await;
    let settings = ClickHouseSettings::new(format!("http://127.0.0.1:{port}"), "default", "", "analytics");
    let db = history(1, 2);

    for requeue in [false, true] {
        let (source, _dlq) = queue_pair(&sqs, "outage", 5).await;
        for body in db.events.iter().take(3) {
            send(&sqs, &source, body).await;
        }
        let queue = SqsQueue::new(sqs.clone());
        let event = receive_event(&queue, &source, 3).await;
        let handles: Vec<(String, String)> = event
            .records
            .iter()
            .map(|r| (r.message_id.clone().unwrap_or_default(), r.receipt_handle.clone().unwrap_or_default()))
            .collect();
        // Short copy delays keep the test quick; the reported-failed path keeps the default
        // backoff (30-60 s on a first receive), long enough to check the messages stay away.
        let backoff = if requeue {
            Backoff { base: Duration::from_secs(2), cap: Duration::from_secs(4) }
        } else {
            Backoff::default()
        };
        let config =
            HandlerConfig { source_queue_url: Some(source.clone()), requeue, backoff, ..HandlerConfig::default() };
        let handler = Handler::new(real_factory, StaticCredentials(settings.clone()), queue, config);
        let deadline = SystemTime::now() + Duration::from_secs(10);
        let invocation = Invocation { request_id: format!("hang-{requeue}"), deadline: Some(deadline) };
        let started = Instant::now();
        let response = handler.handle(event, &invocation).await.expect("a batch response");
        let took = started.elapsed();
        assert!(SystemTime::now() < deadline, "answered after {took:?}, past the 10 s deadline");
        assert!(took >= Duration::from_secs(3), "the work ran until its deadline, not less: {took:?}");

        // As the event source mapping does: delete what the response does not list.
        for (id, handle) in &handles {
            if !response.batch_item_failures.iter().any(|f| &f.item_identifier == id) {
                sqs.delete_message().queue_url(&source).receipt_handle(handle).send().await.expect("delete");
            }
        }
        if requeue {
            assert!(response.batch_item_failures.is_empty(), "originals acknowledged once re-sent");
            // The copies are delayed (1-2 s here): wait for them, bounded.
            let give_up = Instant::now() + Duration::from_secs(30);
            let mut copies = Vec::new();
            while copies.len() < 3 && Instant::now() < give_up {
                copies.extend(peek_all(&sqs, &source).await);
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            assert_eq!(copies.len(), 3, "every message re-sent as a copy");
            for copy in &copies {
                let attempt =
                    copy.message_attributes().and_then(|a| a.get(requeue::ATTEMPT)).and_then(|a| a.string_value());
                assert_eq!(attempt, Some("1"));
                let count = copy.attributes().and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount));
                assert_eq!(count.map(String::as_str), Some("1"), "the copy's receive count starts afresh");
            }
        } else {
            assert_eq!(response.batch_item_failures.len(), 3, "every message reported failed");
            // Their visibility was backed off (30-60 s on a first receive): none is visible now.
            assert!(peek_all(&sqs, &source).await.is_empty(), "failed messages come back only after their backoff");
        }
    }
    listener.abort();
}

/// The binary, as an operator runs it: `invoke` against a ClickHouse that never answers prints
/// its batch response before `--timeout-seconds`, every message failed (the event's queue does
/// not exist, so neither a copy nor a visibility change can be made: failed is all that is left).
#[test]
fn invoke_against_a_silent_clickhouse_answers_before_its_timeout() {
    let _serial = SERIAL.blocking_lock();
    let moto = Service::moto();
    let listener = StdListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let hold = std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().take(64) {
            match stream {
                Ok(s) => held.push(s),
                Err(_) => break,
            }
        }
    });
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_cdc-tools"))
        .args(["invoke", "--timeout-seconds", "10", &format!("{ROOT}/events/mixed-batch.json")])
        .env("CLICKHOUSE_URL", format!("http://127.0.0.1:{port}"))
        .env("AWS_ENDPOINT_URL", moto.endpoint())
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env_remove("CLICKHOUSE_SECRET_ARN")
        .env_remove("DEAD_LETTER_QUEUE_URL")
        .env("RUST_LOG", "warn")
        .output()
        .expect("run cdc-tools invoke");
    let took = started.elapsed();
    drop(hold);
    assert!(out.status.success(), "invoke failed: {}", String::from_utf8_lossy(&out.stderr));
    assert!(took < Duration::from_secs(12), "invoke took {took:?} (deadline 10 s, plus process start)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let response: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one batch response line");
    let event: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{ROOT}/events/mixed-batch.json")).unwrap()).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Cut by the invocation's deadline, or by the retry policy's own bound on the attempt at the
    // same instant: either way the log names it.
    assert!(
        stderr.contains("deadline.exceeded") || stderr.contains("clickhouse.timeout"),
        "the timeout is named in the log: {stderr}"
    );
    // Messages the decoder already settles (poison, tombstones) need no ClickHouse; every other
    // one is reported failed.
    let failures = response["batchItemFailures"].as_array().expect("batchItemFailures");
    assert!(!failures.is_empty(), "{response}");
    assert!(failures.len() <= event["Records"].as_array().unwrap().len());
}

// ---------------------------------------------------------------------------------------------
// TLS: a private CA, a proxy in front of the shared ClickHouse

/// A CA and a server certificate for 127.0.0.1 / localhost, made with the openssl CLI.
pub(crate) fn private_ca(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("the openssl command (Debian: openssl)");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=cdc-processor test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "server.ext",
    ]);
    (dir.join("ca.pem"), dir.join("server.pem"), dir.join("server.key"))
}

/// Terminates TLS on a free port and forwards the bytes to `upstream` (host:port).
async fn tls_proxy(cert: &Path, key: &Path, upstream: String) -> (u16, tokio::task::JoinHandle<()>) {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(cert).expect("cert file").map(|c| c.expect("cert")).collect();
    let key = PrivateKeyDer::from_pem_file(key).expect("key");
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (acceptor, upstream) = (acceptor.clone(), upstream.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(stream).await else { return };
                let Ok(mut plain) = tokio::net::TcpStream::connect(&upstream).await else { return };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    (port, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_ca_is_trusted_only_when_configured() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = private_ca(dir.path());
    let upstream = clickhouse_url().trim_start_matches("http://").trim_end_matches('/').to_string();
    let (port, proxy) = tls_proxy(&cert, &key, upstream).await;
    let url = format!("https://127.0.0.1:{port}");
    let user = std::env::var("CLICKHOUSE_USER").unwrap_or_else(|_| "default".into());
    let password = std::env::var("CLICKHOUSE_PASSWORD").unwrap_or_default();

    // Without the bundle: a certificate failure, systemic, naming its cause.
    let untrusted = ClickHouseSettings::new(&url, &user, &password, "default");
    assert_eq!(untrusted.validate(), Ok(()));
    let error = Warehouse::new(&untrusted).server_version().await.expect_err("an unknown CA must be refused");
    assert_eq!((error.class(), error.code()), (ErrorClass::Systemic, "clickhouse.tls"), "{error}");
    let text = error.to_string();
    assert!(text.contains("certificate") || text.contains("UnknownIssuer"), "the cause is named: {text}");

    // Through the handler: never retried as a network blink, never toward the DLQ: every message
    // fails as systemic, with its code.
    let moto = Service::moto();
    let sqs = moto.sqs().await;
    let (source, _) = queue_pair(&sqs, "outage", 5).await;
    send(&sqs, &source, &history(1, 1).events[0]).await;
    let queue = SqsQueue::new(sqs.clone());
    let event = receive_event(&queue, &source, 1).await;
    let config = HandlerConfig { source_queue_url: Some(source.clone()), requeue: false, ..HandlerConfig::default() };
    let handler = Handler::new(real_factory, StaticCredentials(untrusted.clone()), queue, config);
    let invocation =
        Invocation { request_id: "tls".into(), deadline: Some(SystemTime::now() + Duration::from_secs(20)) };
    let started = Instant::now();
    let (response, metrics) = handler.handle_with_metrics(event, &invocation).await;
    assert_eq!(response.expect("a batch response").batch_item_failures.len(), 1);
    assert!(started.elapsed() < Duration::from_secs(5), "no retry loop: {:?}", started.elapsed());
    assert!(metrics.events.keys().any(|(_, _, outcome)| outcome == "systemic"), "{:?}", metrics.events);
    assert_eq!(metrics.environment_failures, 1);

    // With the bundle: the same server is trusted, and the pipeline works through it.
    let trusted = ClickHouseSettings { ca_bundle: Some(std::fs::read_to_string(&ca).unwrap()), ..untrusted.clone() };
    assert_eq!(trusted.validate(), Ok(()));
    let warehouse = Warehouse::new(&trusted);
    let version = warehouse.server_version().await.expect("trusted through the configured CA bundle");
    assert!(!version.is_empty());
    let database = test_name("tls");
    let pipeline = Pipeline::new(
        DecodeOptions::default(),
        Warehouse::new(&ClickHouseSettings { database: database.clone(), ..trusted }),
    );
    pipeline.migrate(Instant::now() + Duration::from_secs(60)).await.expect("schema over TLS");
    warehouse.execute(&format!("DROP DATABASE IF EXISTS {database}")).await.expect("drop database");
    proxy.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_to_a_remote_host_is_refused_without_opt_in() {
    let _serial = SERIAL.lock().await;
    let moto = Service::moto();
    let sqs = moto.sqs().await;
    // A listener that records whether anything connected: nothing may, the password never leaves.
    let listener = StdListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).unwrap();
    // 192.0.2.0/24 is TEST-NET-1: a remote, non-loopback address.
    let remote = ClickHouseSettings::new("http://192.0.2.10:8123", "cdc", "hunter2", "analytics");
    assert_eq!(remote.validate().unwrap_err().code(), "config.plaintext_url");
    let allowed = ClickHouseSettings { allow_plaintext: true, ..remote.clone() };
    assert_eq!(allowed.validate(), Ok(()), "explicit opt-in");

    let (source, dlq) = queue_pair(&sqs, "outage", 5).await;
    send(&sqs, &source, &history(1, 1).events[0]).await;
    let queue = SqsQueue::new(sqs.clone());
    let event = receive_event(&queue, &source, 1).await;
    let built = Arc::new(Mutex::new(0));
    let counter = built.clone();
    let factory = move |settings: ClickHouseSettings| {
        *counter.lock().unwrap() += 1;
        real_factory(settings)
    };
    let config = HandlerConfig { source_queue_url: Some(source.clone()), ..HandlerConfig::default() };
    let handler = Handler::new(factory, StaticCredentials(remote), queue, config);
    let invocation =
        Invocation { request_id: "plain".into(), deadline: Some(SystemTime::now() + Duration::from_secs(20)) };
    let (response, metrics) = handler.handle_with_metrics(event, &invocation).await;
    assert!(response.expect("a batch response").batch_item_failures.is_empty(), "re-sent for later");
    assert_eq!(*built.lock().unwrap(), 0, "no pipeline was built, no credential sent");
    assert_eq!(metrics.requeued, 1, "a configuration fault never moves a message toward the DLQ");
    assert!(peek_all(&sqs, &dlq).await.is_empty());
    assert!(listener.accept().is_err(), "nothing connected anywhere");
}
