//! The AWS side against real AWS APIs on 127.0.0.1: the local SQS engine (`scripts/sqs.sh`,
//! rustack's SQS behind `tools/local-sqs`: redrive policies, visibility, receive counts,
//! attributes, FIFO groups) and moto's server (Secrets Manager, `scripts/moto.sh`, which
//! pip-installs it when missing), each stopped again if this test started it. Nothing is skipped:
//! if a service cannot start, the test fails.
//!
//! The pipeline here is a fake driven by message bodies (`ok:…`, `poison:…`, `flaky:…`,
//! `auth:…`): these tests are about SQS and Secrets Manager behaviour; the real pipeline against
//! ClickHouse is tested by cdc-lambda's `tests/it`.
//!
//! One test function runs the scenarios in sequence so the services are started and stopped once, and
//! so the log capture (marker values must never appear in a log line) sees all of them.

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_sqs::types::{MessageAttributeValue, MessageSystemAttributeName, QueueAttributeName};
use cdc_clickhouse::config::ClickHouseSettings;
use cdc_core::error::ErrorClass;
use cdc_lambda::handler::{Handler, HandlerConfig};
use cdc_lambda::pipeline::{Process, SystemicError};
use cdc_lambda::secrets::{AwsSecretStore, CredentialSource, SecretCache, StaticCredentials};
use cdc_lambda::sqs::backoff::Backoff;
use cdc_lambda::sqs::message::{Message, MessageOutcome, MessageReport};
use cdc_lambda::sqs::queue::SqsQueue;
use cdc_tools::poll::{PollArgs, poll};
use cdc_tools::redrive::{RedriveArgs, redrive};

use crate::support::{Service, create_queue, peek_all, queue_pair, sdk_config, send, unique};

/// Planted in bodies and in the secret: must never reach a log line.
const ROW_MARKER: &str = "ROWVALUE-MARKER-5b1e9c";
const SECRET_MARKER: &str = "SECRET-MARKER-a77f04";

fn attr(m: &aws_sdk_sqs::types::Message, name: &str) -> Option<String> {
    m.message_attributes().and_then(|a| a.get(name)).and_then(|v| v.string_value()).map(str::to_string)
}

// ---------------------------------------------------------------------------------------------
// a fake pipeline

/// Bodies: `ok:<k>` delivered; `poison:<k>` poison; `flaky:<k>` an environmental failure on the
/// first attempt, delivered after; `waiting:<k>` waits for its TOAST base for four attempts (more
/// than `maxReceiveCount`), delivered after; `auth:<k>` an authentication failure unless the
/// password is `rotated`.
struct FakePipeline {
    password: String,
    delivered: Arc<Mutex<Vec<String>>>,
    attempts: Arc<Mutex<HashMap<String, u32>>>,
}

impl Process for FakePipeline {
    async fn process(&self, messages: &[Message], _deadline: Instant) -> Result<Vec<MessageReport>, SystemicError> {
        let mut reports = Vec::new();
        for m in messages {
            let attempt = {
                let mut attempts = self.attempts.lock().unwrap();
                let n = attempts.entry(m.body.clone()).or_default();
                *n += 1;
                *n
            };
            let (kind, _) = m.body.split_once(':').unwrap_or((m.body.as_str(), ""));
            let outcome = match kind {
                "poison" => MessageOutcome::Failed {
                    class: ErrorClass::Poison,
                    code: "body.not_json",
                    table: Some("orders".into()),
                },
                // An outage met once: the message comes back as a re-sent copy (receive count 1
                // again), so the attempt is counted here rather than read from the receive count.
                "flaky" if attempt < 2 => MessageOutcome::Failed {
                    class: ErrorClass::Transient,
                    code: "clickhouse.network",
                    table: Some("orders".into()),
                },
                // Its base is held back (an outage's delayed copy): the message's own wait.
                "waiting" if attempt < 5 => MessageOutcome::Failed {
                    class: ErrorClass::Waiting,
                    code: "toast.base_missing",
                    table: Some("customers".into()),
                },
                "auth" if self.password != "rotated" => {
                    return Err(SystemicError {
                        code: "clickhouse.auth",
                        detail: "authentication failed".into(),
                        is_auth: true,
                    });
                }
                _ => MessageOutcome::Delivered,
            };
            if outcome == MessageOutcome::Delivered {
                self.delivered.lock().unwrap().push(m.body.clone());
            }
            reports.push(MessageReport::new(outcome));
        }
        Ok(reports)
    }
}

#[derive(Clone, Default)]
struct Record {
    delivered: Arc<Mutex<Vec<String>>>,
    attempts: Arc<Mutex<HashMap<String, u32>>>,
}

impl Record {
    fn factory(
        &self,
    ) -> impl Fn(ClickHouseSettings) -> std::future::Ready<Result<FakePipeline, SystemicError>> + Send + Sync + use<>
    {
        let record = self.clone();
        move |settings: ClickHouseSettings| {
            std::future::ready(Ok(FakePipeline {
                password: settings.password,
                delivered: record.delivered.clone(),
                attempts: record.attempts.clone(),
            }))
        }
    }
    fn delivered(&self) -> Vec<String> {
        let mut d = self.delivered.lock().unwrap().clone();
        d.sort();
        d
    }
}

fn fast_config(source: &str, dlq: Option<&str>) -> HandlerConfig {
    HandlerConfig {
        source_queue_url: Some(source.to_string()),
        dead_letter_queue_url: dlq.map(str::to_string),
        // Seconds, not minutes, so the test drains quickly; the schedule itself is unit-tested.
        backoff: Backoff { base: Duration::from_secs(1), cap: Duration::from_secs(2) },
        ..HandlerConfig::default()
    }
}

fn drain_args(source: &str) -> PollArgs {
    PollArgs {
        batch_size: 10,
        wait_time_seconds: 1,
        visibility_timeout: 30,
        until_empty: true,
        duration: Some(90),
        ..PollArgs::new(source)
    }
}

fn local_settings() -> ClickHouseSettings {
    ClickHouseSettings::new("http://127.0.0.1:8123", "cdc", "x", "analytics")
}

// ---------------------------------------------------------------------------------------------
// log capture

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "current_thread")]
async fn aws_side_against_local_services() {
    let logs = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_max_level(tracing::Level::DEBUG)
        .with_current_span(true)
        .with_writer(logs.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let moto = Service::moto();
    let local_sqs = Service::local_sqs();
    let sqs = local_sqs.sqs().await;
    let secrets = aws_sdk_secretsmanager::Client::new(&sdk_config(&moto.endpoint()).await);

    queue_behaviours_the_processor_relies_on(&sqs).await;
    poll_drains_with_redrive_policy(&sqs).await;
    poison_goes_to_dlq_with_diagnostics_and_redrive_brings_it_back(&sqs).await;
    secret_cache_and_rotation(&secrets).await;
    rotation_mid_run_causes_no_dead_letter(&sqs, &secrets).await;

    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(text.lines().count() > 10, "the handler logged: {text}");
    for line in text.lines() {
        serde_json::from_str::<serde_json::Value>(line).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        assert!(!line.contains(ROW_MARKER), "a row value reached the log: {line}");
        assert!(!line.contains(SECRET_MARKER), "a secret reached the log: {line}");
    }
    assert!(text.contains("request_id"), "invocation span carries the request id");
    assert!(text.contains("message_id"), "failures carry the message id");
}

async fn receive(sqs: &aws_sdk_sqs::Client, url: &str, max: i32, visibility: i32) -> Vec<aws_sdk_sqs::types::Message> {
    sqs.receive_message()
        .queue_url(url)
        .max_number_of_messages(max)
        .visibility_timeout(visibility)
        .wait_time_seconds(0)
        .message_attribute_names("All")
        .message_system_attribute_names(MessageSystemAttributeName::All)
        .send()
        .await
        .expect("receive")
        .messages()
        .to_vec()
}

/// Sends `body` with the message attribute `source` = `debezium`; returns the message id.
async fn send_from_debezium(sqs: &aws_sdk_sqs::Client, url: &str, body: &str) -> String {
    let source = MessageAttributeValue::builder().data_type("String").string_value("debezium").build().unwrap();
    let sent = sqs.send_message().queue_url(url).message_body(body).message_attributes("source", source).send().await;
    sent.unwrap().message_id().unwrap().to_string()
}

/// Five receives, each message deleted once received; the bodies in the order received.
async fn receive_and_delete(sqs: &aws_sdk_sqs::Client, url: &str) -> Vec<String> {
    let mut order = Vec::new();
    for _ in 0..5 {
        for m in receive(sqs, url, 10, 30).await {
            order.push(m.body().unwrap_or_default().to_string());
            sqs.delete_message().queue_url(url).receipt_handle(m.receipt_handle().unwrap()).send().await.unwrap();
        }
    }
    order
}

fn system(m: &aws_sdk_sqs::types::Message, name: MessageSystemAttributeName) -> Option<String> {
    m.attributes().and_then(|a| a.get(&name)).cloned()
}

/// What the processor relies on from SQS, checked against the local engine: message and system
/// attributes, the visibility timeout and `ChangeMessageVisibility`, receive counts, the redrive
/// policy (`maxReceiveCount` sent as a JSON number: the engine rejects the string form AWS also
/// accepts), `DeleteMessageBatch`, and FIFO message groups (in order, one batch per group in
/// flight).
async fn queue_behaviours_the_processor_relies_on(sqs: &aws_sdk_sqs::Client) {
    let (source, dlq) = queue_pair(sqs, "cdc", 2).await;
    let id = send_from_debezium(sqs, &source, "b1").await;
    // First receive: attributes and a receive count of 1; invisible while in flight.
    let got = receive(sqs, &source, 10, 1).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].message_id(), Some(id.as_str()));
    assert_eq!(attr(&got[0], "source").as_deref(), Some("debezium"));
    assert_eq!(system(&got[0], MessageSystemAttributeName::ApproximateReceiveCount).as_deref(), Some("1"));
    assert!(system(&got[0], MessageSystemAttributeName::SentTimestamp).is_some());
    assert!(receive(sqs, &source, 10, 1).await.is_empty(), "in flight: not visible");
    // Visibility set to 0 brings it back at once, counted again.
    sqs.change_message_visibility()
        .queue_url(&source)
        .receipt_handle(got[0].receipt_handle().unwrap())
        .visibility_timeout(0)
        .send()
        .await
        .unwrap();
    let again = receive(sqs, &source, 10, 1).await;
    assert_eq!(system(&again[0], MessageSystemAttributeName::ApproximateReceiveCount).as_deref(), Some("2"));
    // After maxReceiveCount (2) receives, the next receive moves it to the DLQ instead.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(receive(sqs, &source, 10, 1).await.is_empty(), "moved to the DLQ, not delivered a third time");
    let dead = peek_all(sqs, &dlq).await;
    assert_eq!(dead.len(), 1, "redrive policy moved it");
    assert_eq!(dead[0].body(), Some("b1"));

    // DeleteMessageBatch deletes what it is given and reports each entry.
    let plain = create_queue(sqs, &unique("cdc-batch"), &[]).await;
    for i in 0..10 {
        send(sqs, &plain, &format!("m{i}")).await;
    }
    let got = receive(sqs, &plain, 10, 30).await;
    assert_eq!(got.len(), 10);
    let queue = SqsQueue::new(sqs.clone());
    let handles: Vec<String> = got.iter().map(|m| m.receipt_handle().unwrap().to_string()).collect();
    use cdc_lambda::sqs::queue::Queue;
    assert!(queue.delete_batch(&plain, &handles).await.unwrap().is_empty(), "all ten deleted");
    let info = queue.info(&plain).await.unwrap();
    assert_eq!((info.visible, info.in_flight), (0, 0), "{info:?}");

    // FIFO: in order within a group; a group with a message in flight hands out nothing more.
    let fifo = create_queue(
        sqs,
        &format!("{}.fifo", unique("cdc-fifo")),
        &[
            (QueueAttributeName::FifoQueue, "true".into()),
            (QueueAttributeName::ContentBasedDeduplication, "true".into()),
        ],
    )
    .await;
    for (group, body) in [("a", "a1"), ("b", "b1"), ("a", "a2"), ("b", "b2"), ("a", "a3")] {
        sqs.send_message().queue_url(&fifo).message_body(body).message_group_id(group).send().await.unwrap();
    }
    let first = receive(sqs, &fifo, 1, 30).await;
    assert_eq!(first[0].body(), Some("a1"));
    assert_eq!(system(&first[0], MessageSystemAttributeName::MessageGroupId).as_deref(), Some("a"));
    // Group b, in order; group a stays blocked. (The engine hands out one message per group per
    // receive until it is deleted, where AWS may return several of a group in one call: both keep
    // the order the handler's FIFO rules rely on.)
    let order = receive_and_delete(sqs, &fifo).await;
    assert_eq!(order, ["b1", "b2"], "group b in order, group a blocked while a1 is in flight");
    sqs.delete_message().queue_url(&fifo).receipt_handle(first[0].receipt_handle().unwrap()).send().await.unwrap();
    let order = receive_and_delete(sqs, &fifo).await;
    assert_eq!(order, ["a2", "a3"], "group a resumes in order once a1 is deleted");
}

/// Good, poison, flaky and duplicate messages; no DLQ URL configured, so poison reaches the DLQ
/// only through the queue's redrive policy after `maxReceiveCount` receives.
async fn poll_drains_with_redrive_policy(sqs: &aws_sdk_sqs::Client) {
    let (source, dlq) = queue_pair(sqs, "cdc", 3).await;
    let mut good = Vec::new();
    for i in 0..5 {
        let body = format!("ok:{i}:{ROW_MARKER}");
        send(sqs, &source, &body).await;
        good.push(body);
    }
    // A duplicate (Debezium Server retried a send): both copies are processed, harmlessly.
    send(sqs, &source, &good[0]).await;
    let flaky = format!("flaky:1:{ROW_MARKER}");
    send(sqs, &source, &flaky).await;
    let poison = format!("poison:1:{ROW_MARKER}");
    send(sqs, &source, &poison).await;
    let waiting = format!("waiting:1:{ROW_MARKER}");
    send(sqs, &source, &waiting).await;

    let record = Record::default();
    let handler = Handler::new(
        record.factory(),
        StaticCredentials(local_settings()),
        SqsQueue::new(sqs.clone()),
        fast_config(&source, None),
    );
    let summary = poll(&drain_args(&source), &handler).await.expect("poll");

    let mut expected = good.clone();
    expected.push(good[0].clone());
    expected.push(flaky.clone());
    expected.push(waiting.clone());
    expected.sort();
    assert_eq!(record.delivered(), expected, "every good change delivered (the duplicate twice), nothing lost");
    // Waiting for a base spent no receives: four copies, never the redrive policy's DLQ.
    assert_eq!(record.attempts.lock().unwrap()[&waiting], 5, "waited through copies");
    assert_eq!(record.attempts.lock().unwrap()[&poison], 3, "poison received maxReceiveCount times");
    assert!(peek_all(sqs, &source).await.is_empty(), "source queue drained: {summary:?}");
    let dead = peek_all(sqs, &dlq).await;
    assert_eq!(dead.len(), 1, "only the poison message is dead-lettered");
    assert_eq!(dead[0].body(), Some(poison.as_str()));
    // 5 good, the duplicate, the flaky original (acknowledged once its delayed copy was sent)
    // and that copy, the waiting original and its four copies.
    assert_eq!(summary.deleted, 13);
}

/// With `DEAD_LETTER_QUEUE_URL` the poison goes to the DLQ on its first receive, with its
/// diagnostics and original attributes; `redrive` then moves it back without the diagnostics.
async fn poison_goes_to_dlq_with_diagnostics_and_redrive_brings_it_back(sqs: &aws_sdk_sqs::Client) {
    let (source, dlq) = queue_pair(sqs, "cdc", 5).await;
    let poison = format!("poison:2:{ROW_MARKER}");
    let poison_id = send_from_debezium(sqs, &source, &poison).await;
    send(sqs, &source, &format!("ok:2:{ROW_MARKER}")).await;

    let record = Record::default();
    let handler = Handler::new(
        record.factory(),
        StaticCredentials(local_settings()),
        SqsQueue::new(sqs.clone()),
        fast_config(&source, Some(&dlq)),
    );
    let summary = poll(&drain_args(&source), &handler).await.expect("poll");
    assert_eq!(summary.deleted, 2, "poison acknowledged once dead-lettered: {summary:?}");
    assert_eq!(record.attempts.lock().unwrap()[&poison], 1, "dead-lettered at once");

    let dead = peek_all(sqs, &dlq).await;
    assert_eq!(dead.len(), 1);
    let m = &dead[0];
    assert_eq!(m.body(), Some(poison.as_str()));
    assert_eq!(attr(m, "error_code").as_deref(), Some("body.not_json"));
    assert_eq!(attr(m, "error_class").as_deref(), Some("poison"));
    assert_eq!(attr(m, "table").as_deref(), Some("orders"));
    assert_eq!(attr(m, "original_message_id"), Some(poison_id));
    assert_eq!(attr(m, "receive_count").as_deref(), Some("1"));
    assert_eq!(attr(m, "source").as_deref(), Some("debezium"), "original attributes kept");
    // Make it visible again for the redrive.
    sqs.change_message_visibility()
        .queue_url(&dlq)
        .receipt_handle(m.receipt_handle().unwrap())
        .visibility_timeout(0)
        .send()
        .await
        .unwrap();

    let moved = redrive(&SqsQueue::new(sqs.clone()), &RedriveArgs::new(&dlq, &source)).await.expect("redrive");
    assert_eq!(moved, 1);
    assert!(peek_all(sqs, &dlq).await.is_empty(), "DLQ emptied");
    let back = peek_all(sqs, &source).await;
    assert_eq!(back.len(), 1);
    assert_eq!(back[0].body(), Some(poison.as_str()));
    assert_eq!(attr(&back[0], "source").as_deref(), Some("debezium"));
    assert_eq!(attr(&back[0], "error_code"), None, "diagnostics dropped on redrive");
}

async fn create_secret(secrets: &aws_sdk_secretsmanager::Client, password: &str) -> String {
    secrets
        .create_secret()
        .name(unique("cdc/clickhouse"))
        .secret_string(secret_json(password))
        .send()
        .await
        .expect("create secret")
        .arn()
        .unwrap()
        .to_string()
}

fn secret_json(password: &str) -> String {
    serde_json::json!({"host": "127.0.0.1", "port": 8123, "secure": false, "username": "cdc", "password": password, "database": "analytics"}).to_string()
}

async fn rotate(secrets: &aws_sdk_secretsmanager::Client, arn: &str, password: &str) {
    secrets.put_secret_value().secret_id(arn).secret_string(secret_json(password)).send().await.expect("rotate");
}

async fn secret_cache_and_rotation(secrets: &aws_sdk_secretsmanager::Client) {
    let arn = create_secret(secrets, &format!("first-{SECRET_MARKER}")).await;
    let cache = SecretCache::new(AwsSecretStore::new(secrets.clone()), &arn, Duration::from_secs(300));
    let first = cache.current().await.expect("fetch");
    assert_eq!(first.url, "http://127.0.0.1:8123");
    assert_eq!(first.password, format!("first-{SECRET_MARKER}"));
    rotate(secrets, &arn, &format!("second-{SECRET_MARKER}")).await;
    assert_eq!(cache.current().await.unwrap().password, first.password, "served from cache within the TTL");
    assert_eq!(cache.refresh().await.unwrap().password, format!("second-{SECRET_MARKER}"));

    let missing = SecretCache::new(
        AwsSecretStore::new(secrets.clone()),
        "arn:aws:secretsmanager:us-east-1:123456789012:secret:nope",
        Duration::ZERO,
    );
    let err = missing.current().await.unwrap_err();
    tracing::warn!(error = %err, "expected failure");
}

/// The secret is rotated while the function holds the old password: ClickHouse (the fake) says
/// "authentication failed", the handler fetches the secret again and retries; nothing reaches
/// the DLQ even though the DLQ URL is configured.
async fn rotation_mid_run_causes_no_dead_letter(sqs: &aws_sdk_sqs::Client, secrets: &aws_sdk_secretsmanager::Client) {
    let arn = create_secret(secrets, &format!("old-{SECRET_MARKER}")).await;
    let (source, dlq) = queue_pair(sqs, "cdc", 2).await;
    let record = Record::default();
    let cache = SecretCache::new(AwsSecretStore::new(secrets.clone()), &arn, Duration::from_secs(300));
    let handler = Handler::new(record.factory(), cache, SqsQueue::new(sqs.clone()), fast_config(&source, Some(&dlq)));
    handler.warm_up().await.expect("warm up with the old secret");
    rotate(secrets, &arn, "rotated").await;
    let bodies: Vec<String> = (0..4).map(|i| format!("auth:{i}:{ROW_MARKER}")).collect();
    for b in &bodies {
        send(sqs, &source, b).await;
    }
    let summary = poll(&drain_args(&source), &handler).await.expect("poll");
    assert_eq!(summary.failed_invocations, 0, "{summary:?}");
    let mut expected = bodies.clone();
    expected.sort();
    assert_eq!(record.delivered(), expected);
    assert!(peek_all(sqs, &dlq).await.is_empty(), "rotation dead-lettered nothing");
    assert!(peek_all(sqs, &source).await.is_empty());
}
