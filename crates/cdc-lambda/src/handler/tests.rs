use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use aws_lambda_events::sqs::SqsMessage;

use super::*;
use crate::secrets::tests::FakeStore;
use crate::secrets::{SecretCache, StaticCredentials};
use crate::sqs::queue::fake::{Call, FakeQueue};

const ARN: &str = "arn:aws:sqs:us-east-1:123456789012:cdc";
const FIFO_ARN: &str = "arn:aws:sqs:us-east-1:123456789012:cdc.fifo";
const QUEUE_URL: &str = "https://sqs.us-east-1.amazonaws.com/123456789012/cdc";
const DLQ: &str = "https://sqs.us-east-1.amazonaws.com/123456789012/cdc-dlq";

/// Reads each body as a directive: `ok`, `skip`, `poison`, `transient` (environmental),
/// `toast` (transient, the message's own), `hang` (never answers), `systemic`, `auth` (fails
/// with an auth error unless the password is `good`).
struct FakePipeline {
    password: String,
    calls: Arc<AtomicUsize>,
    processed: Arc<std::sync::Mutex<Vec<String>>>,
}

impl Process for FakePipeline {
    async fn process(&self, messages: &[Message], _deadline: Instant) -> Result<Vec<MessageReport>, SystemicError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let mut out = Vec::new();
        for m in messages {
            self.processed.lock().unwrap().push(m.id.to_string());
            out.push(match m.body.as_str() {
                "hang" => std::future::pending().await,
                "toast" => MessageOutcome::Failed {
                    class: ErrorClass::Waiting,
                    code: "toast.base_missing",
                    table: Some("orders".into()),
                },
                "skip" => MessageOutcome::Skipped("tombstone"),
                "poison" => MessageOutcome::Failed { class: ErrorClass::Poison, code: "body.not_json", table: None },
                "transient" => MessageOutcome::Failed {
                    class: ErrorClass::Transient,
                    code: "clickhouse.timeout",
                    table: Some("orders".into()),
                },
                "systemic" => {
                    return Err(SystemicError {
                        code: "clickhouse.unknown_database",
                        detail: "no db".into(),
                        is_auth: false,
                    });
                }
                "auth" if self.password != "good" => {
                    return Err(SystemicError { code: "clickhouse.auth", detail: "auth".into(), is_auth: true });
                }
                _ => MessageOutcome::Delivered,
            });
        }
        let mut reports: Vec<MessageReport> = out.into_iter().map(MessageReport::from).collect();
        for (m, report) in messages.iter().zip(&mut reports) {
            if m.body == "follow-up" {
                report.follow_ups = vec!["continue-1".into(), "continue-2".into()];
            }
        }
        Ok(reports)
    }
}

static PROCESSED: std::sync::LazyLock<Arc<std::sync::Mutex<Vec<String>>>> = std::sync::LazyLock::new(Default::default);

fn factory(calls: Arc<AtomicUsize>) -> impl PipelineFactory<Pipeline = FakePipeline> {
    factory_recording(calls, PROCESSED.clone())
}

fn factory_recording(
    calls: Arc<AtomicUsize>,
    processed: Arc<std::sync::Mutex<Vec<String>>>,
) -> impl PipelineFactory<Pipeline = FakePipeline> {
    move |settings: ClickHouseSettings| {
        let (calls, processed) = (calls.clone(), processed.clone());
        async move { Ok::<_, SystemicError>(FakePipeline { password: settings.password, calls, processed }) }
    }
}

fn settings(password: &str) -> ClickHouseSettings {
    ClickHouseSettings::new("http://127.0.0.1:8123", "cdc", password, "analytics")
}

fn sends(calls: &[Call]) -> Vec<(&str, &OutgoingMessage)> {
    calls
        .iter()
        .filter_map(|c| match c {
            Call::Send(url, m) => Some((url.as_str(), m)),
            _ => None,
        })
        .collect()
}

fn no_requeue() -> HandlerConfig {
    HandlerConfig { requeue: false, ..Default::default() }
}

fn record(id: Option<&str>, body: &str, arn: &str, group: Option<&str>, receive_count: u32) -> SqsMessage {
    let mut r = SqsMessage::default();
    r.message_id = id.map(str::to_string);
    r.receipt_handle = id.map(|id| format!("rh-{id}"));
    r.body = Some(body.to_string());
    r.event_source_arn = Some(arn.to_string());
    r.event_source = Some("aws:sqs".into());
    let mut attrs = HashMap::new();
    attrs.insert("ApproximateReceiveCount".to_string(), receive_count.to_string());
    if let Some(g) = group {
        attrs.insert("MessageGroupId".to_string(), g.to_string());
    }
    r.attributes = attrs;
    r
}

fn event(records: Vec<SqsMessage>) -> SqsEvent {
    let mut e = SqsEvent::default();
    e.records = records;
    e
}

fn invocation() -> Invocation {
    Invocation { request_id: "req-1".into(), deadline: None }
}

fn handler(
    dlq: Option<&str>,
    queue: FakeQueue,
) -> (Handler<impl PipelineFactory<Pipeline = FakePipeline>, StaticCredentials, FakeQueue>, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let config = HandlerConfig { dead_letter_queue_url: dlq.map(str::to_string), ..Default::default() };
    (Handler::new(factory(calls.clone()), StaticCredentials(settings("good")), queue, config), calls)
}

fn failed(resp: &SqsBatchResponse) -> Vec<&str> {
    resp.batch_item_failures.iter().map(|f| f.item_identifier.as_str()).collect()
}

#[tokio::test]
async fn poison_in_a_batch_fails_only_itself_without_dlq() {
    let (h, _) = handler(None, FakeQueue::default());
    let e = event(vec![
        record(Some("a"), "ok", ARN, None, 1),
        record(Some("b"), "poison", ARN, None, 1),
        record(Some("c"), "skip", ARN, None, 1),
    ]);
    let (resp, metrics) = h.handle_with_metrics(e, &invocation()).await;
    assert_eq!(failed(&resp.unwrap()), vec!["b"]);
    // Poison comes back at once to reach maxReceiveCount quickly.
    assert_eq!(h.queue.calls(), vec![Call::Visibility(QUEUE_URL.into(), "rh-b".into(), 0)]);
    assert_eq!(metrics.failed, 1);
    assert_eq!(metrics.dead_lettered, 0);
}

#[tokio::test]
async fn poison_goes_to_the_dlq_and_is_acknowledged() {
    let (h, _) = handler(Some(DLQ), FakeQueue::default());
    let e = event(vec![record(Some("a"), "ok", ARN, None, 1), record(Some("b"), "poison", ARN, None, 2)]);
    let (resp, metrics) = h.handle_with_metrics(e, &invocation()).await;
    assert!(failed(&resp.unwrap()).is_empty());
    let calls = h.queue.calls();
    assert_eq!(calls.len(), 1);
    let Call::Send(url, msg) = &calls[0] else { panic!("{calls:?}") };
    assert_eq!(url, DLQ);
    assert_eq!(msg.body, "poison");
    assert_eq!(msg.attributes["original_message_id"].string_value.as_deref(), Some("b"));
    assert_eq!(msg.attributes["receive_count"].string_value.as_deref(), Some("2"));
    assert_eq!(metrics.dead_lettered, 1);
}

#[tokio::test]
async fn failed_dlq_send_falls_back_to_reporting_failure() {
    let queue = FakeQueue { failing_url: Some(DLQ.into()), ..Default::default() };
    let (h, _) = handler(Some(DLQ), queue);
    let e = event(vec![record(Some("a"), "poison", ARN, None, 1)]);
    let resp = h.handle(e, &invocation()).await.unwrap();
    assert_eq!(failed(&resp), vec!["a"]);
}

#[tokio::test]
async fn follow_ups_are_sent_to_the_source_queue_before_the_message_is_acknowledged() {
    let (h, _) = handler(Some(DLQ), FakeQueue::default());
    let e = event(vec![record(Some("a"), "follow-up", ARN, None, 1), record(Some("b"), "ok", ARN, None, 1)]);
    let resp = h.handle(e, &invocation()).await.unwrap();
    assert!(failed(&resp).is_empty());
    let sent: Vec<(String, String)> = h
        .queue
        .calls()
        .into_iter()
        .filter_map(|c| if let Call::Send(url, m) = c { Some((url, m.body)) } else { None })
        .collect();
    assert_eq!(sent, vec![(QUEUE_URL.into(), "continue-1".into()), (QUEUE_URL.into(), "continue-2".into())]);
}

#[tokio::test]
async fn a_message_whose_follow_ups_cannot_be_sent_fails_as_transient() {
    let queue = FakeQueue { failing_url: Some(QUEUE_URL.into()), ..Default::default() };
    let (h, _) = handler(Some(DLQ), queue);
    let e = event(vec![record(Some("a"), "follow-up", ARN, None, 1), record(Some("b"), "ok", ARN, None, 1)]);
    let resp = h.handle(e, &invocation()).await.unwrap();
    // Retried (its work is redone), never dead-lettered, and its batch-mate is unaffected.
    assert_eq!(failed(&resp), vec!["a"]);
    assert!(!h.queue.calls().iter().any(|c| matches!(c, Call::Send(url, _) if url == DLQ)));
}

#[tokio::test]
async fn unsent_follow_ups_are_the_environments_failure_and_the_message_is_copied() {
    let queue = FakeQueue { failing_body: Some("continue-".into()), ..Default::default() };
    let (h, _) = handler(Some(DLQ), queue);
    let e = event(vec![record(Some("a"), "follow-up", ARN, None, 5), record(Some("b"), "ok", ARN, None, 1)]);
    let (resp, metrics) = h.handle_with_metrics(e, &invocation()).await;
    // SQS refused the follow-ups, not the message: a delayed copy redoes its work, even on
    // its fifth receive, and nothing reaches the DLQ.
    assert!(failed(&resp.unwrap()).is_empty());
    let calls = h.queue.calls();
    let sent = sends(&calls);
    assert_eq!(sent.len(), 1, "{calls:?}");
    assert_eq!((sent[0].0, sent[0].1.body.as_str()), (QUEUE_URL, "follow-up"));
    assert_eq!(requeue::attempt(&sent[0].1.attributes), 1);
    assert_eq!((metrics.requeued, metrics.environment_failures, metrics.dead_lettered), (1, 1, 0));
}

#[tokio::test]
async fn fifo_follow_ups_are_deduplicated_by_content_across_retries() {
    let dedup_ids = || async {
        let (h, _) = handler(Some(DLQ), FakeQueue::default());
        let e = event(vec![record(Some("a"), "follow-up", FIFO_ARN, Some("G"), 1)]);
        assert!(failed(&h.handle(e, &invocation()).await.unwrap()).is_empty());
        let calls = h.queue.calls();
        sends(&calls)
            .iter()
            .map(|(_, m)| {
                assert_eq!(m.group_id.as_deref(), Some("G"));
                m.deduplication_id.clone().expect("a FIFO send needs a deduplication id")
            })
            .collect::<Vec<_>>()
    };
    let (first, retry) = (dedup_ids().await, dedup_ids().await);
    assert_eq!(first.len(), 2);
    assert_ne!(first[0], first[1], "two tasks are two messages");
    assert_eq!(first, retry, "a retry's same task is the same message");
    assert_ne!(follow_up_deduplication_id("G", "continue-1"), follow_up_deduplication_id("H", "continue-1"));
}

#[tokio::test]
async fn a_message_failing_for_the_environment_past_the_retry_age_is_dead_lettered_as_expired() {
    let calls = Arc::new(AtomicUsize::new(0));
    let config = HandlerConfig {
        dead_letter_queue_url: Some(DLQ.into()),
        retry_max_age: Duration::from_secs(3600),
        ..Default::default()
    };
    let h = Handler::new(factory(calls), StaticCredentials(settings("good")), FakeQueue::default(), config);
    let now_ms = SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let sent_at = |age_ms: u64| {
        let mut r = record(Some("x"), "transient", ARN, None, 1);
        r.attributes.insert("SentTimestamp".into(), (now_ms - age_ms).to_string());
        r
    };
    let mut young = sent_at(30 * 60_000);
    young.message_id = Some("young".into());
    // A first-seen time in the future does not stretch the age of a message sent 2 h ago.
    let mut old = sent_at(2 * 3_600_000);
    old.message_id = Some("old".into());
    let mut future = aws_lambda_events::sqs::SqsMessageAttribute::default();
    future.data_type = Some("Number".into());
    future.string_value = Some((now_ms + 86_400_000).to_string());
    old.message_attributes.insert(requeue::FIRST_SEEN.into(), future);
    let (resp, metrics) = h.handle_with_metrics(event(vec![young, old]), &invocation()).await;
    assert!(failed(&resp.unwrap()).is_empty());
    let calls = h.queue.calls();
    let sent = sends(&calls);
    assert_eq!(sent.len(), 2, "{calls:?}");
    let to = |url: &str| sent.iter().find(|(u, _)| *u == url).map(|(_, m)| *m).expect(url);
    assert_eq!(
        to(QUEUE_URL).attributes.get(requeue::FIRST_MESSAGE_ID).and_then(|a| a.string_value.as_deref()),
        Some("young")
    );
    let parked = to(DLQ);
    assert_eq!(parked.attributes["error_code"].string_value.as_deref(), Some(requeue::EXPIRED_CODE));
    assert_eq!(parked.attributes["original_message_id"].string_value.as_deref(), Some("old"));
    assert_eq!((metrics.requeued, metrics.retry_expired, metrics.dead_lettered), (1, 1, 1));
}

#[tokio::test]
async fn waiting_for_a_base_resends_a_copy_instead_of_spending_receives() {
    let (h, _) = handler(Some(DLQ), FakeQueue::default());
    let e = event(vec![record(Some("a"), "toast", ARN, None, 3), record(Some("b"), "ok", ARN, None, 1)]);
    let (resp, metrics) = h.handle_with_metrics(e, &invocation()).await;
    assert!(failed(&resp.unwrap()).is_empty(), "the original is acknowledged");
    let calls = h.queue.calls();
    let sent = sends(&calls);
    let [(url, copy)] = sent.as_slice() else { panic!("{calls:?}") };
    assert_eq!((*url, copy.body.as_str()), (QUEUE_URL, "toast"), "back to the source queue, not the DLQ");
    assert_eq!(requeue::attempt(&copy.attributes), 1);
    // First copy: ceiling 60 s, jittered into [30, 60], whatever the receive count.
    assert!((30..=60).contains(&copy.delay_seconds.unwrap()), "{copy:?}");
    assert!(!calls.iter().any(|c| matches!(c, Call::Visibility(..))), "no receive-count-bound retry: {calls:?}");
    // The wait is the message's own, not the environment's.
    assert_eq!((metrics.requeued, metrics.environment_failures, metrics.failed), (1, 0, 0));
}

#[tokio::test]
async fn waiting_for_a_base_without_requeue_backs_off_from_receive_count() {
    let h = Handler::new(
        factory(Default::default()),
        StaticCredentials(settings("good")),
        FakeQueue::default(),
        no_requeue(),
    );
    let e = event(vec![record(Some("a"), "toast", ARN, None, 3), record(Some("b"), "ok", ARN, None, 1)]);
    let resp = h.handle(e, &invocation()).await.unwrap();
    assert_eq!(failed(&resp), vec!["a"]);
    let calls = h.queue.calls();
    let [Call::Visibility(url, handle, seconds)] = calls.as_slice() else { panic!("{calls:?}") };
    assert_eq!((url.as_str(), handle.as_str()), (QUEUE_URL, "rh-a"));
    // Third receive: ceiling 240 s with the default backoff, jittered into [120, 240].
    assert!((120..=240).contains(seconds), "{seconds}");
}

#[tokio::test]
async fn environmental_failure_resends_a_delayed_copy_and_acknowledges() {
    let (h, _) = handler(Some(DLQ), FakeQueue::default());
    let mut first = record(Some("a"), "transient", ARN, None, 1);
    let mut attempt = aws_lambda_events::sqs::SqsMessageAttribute::default();
    attempt.data_type = Some("Number".into());
    attempt.string_value = Some("3".into());
    first.message_attributes.insert(requeue::ATTEMPT.into(), attempt);
    let e = event(vec![first, record(Some("b"), "ok", ARN, None, 1)]);
    let (resp, metrics) = h.handle_with_metrics(e, &invocation()).await;
    assert!(failed(&resp.unwrap()).is_empty(), "the original is acknowledged");
    let calls = h.queue.calls();
    let sent = sends(&calls);
    assert_eq!(sent.len(), 1, "{calls:?}");
    let (url, copy) = sent[0];
    assert_eq!(url, QUEUE_URL, "back to the source queue, not the DLQ");
    assert_eq!(copy.body, "transient");
    assert_eq!(requeue::attempt(&copy.attributes), 4);
    // Fourth environmental failure: ceiling 480 s, clamped to SQS's 900 s delay limit.
    assert!((240..=480).contains(&copy.delay_seconds.unwrap()), "{copy:?}");
    assert!(!calls.iter().any(|c| matches!(c, Call::Visibility(..))), "no receive-count-bound retry: {calls:?}");
    assert_eq!((metrics.requeued, metrics.environment_failures, metrics.failed), (1, 1, 0));
}

#[tokio::test]
async fn environmental_failure_without_requeue_backs_off() {
    let h = Handler::new(
        factory(Default::default()),
        StaticCredentials(settings("good")),
        FakeQueue::default(),
        no_requeue(),
    );
    let e = event(vec![record(Some("a"), "transient", ARN, None, 3)]);
    let resp = h.handle(e, &invocation()).await.unwrap();
    assert_eq!(failed(&resp), vec!["a"]);
    let calls = h.queue.calls();
    let [Call::Visibility(_, _, seconds)] = calls.as_slice() else { panic!("{calls:?}") };
    assert!((120..=240).contains(seconds), "{seconds}");
}

#[tokio::test]
async fn failed_resend_falls_back_to_reporting_failure_with_backoff() {
    let queue = FakeQueue { failing_url: Some(QUEUE_URL.into()), ..Default::default() };
    let (h, _) = handler(Some(DLQ), queue);
    let resp = h.handle(event(vec![record(Some("a"), "transient", ARN, None, 1)]), &invocation()).await.unwrap();
    assert_eq!(failed(&resp), vec!["a"]);
    let calls = h.queue.calls();
    let [Call::Visibility(_, _, seconds)] = calls.as_slice() else { panic!("{calls:?}") };
    assert!((30..=60).contains(seconds), "{seconds}");
}

#[tokio::test]
async fn systemic_fault_requeues_every_message_and_dead_letters_nothing() {
    let (h, _) = handler(Some(DLQ), FakeQueue::default());
    let e = event(vec![
        record(Some("a"), "ok", ARN, None, 1),
        record(Some("b"), "poison", ARN, None, 1),
        record(Some("c"), "systemic", ARN, None, 1),
    ]);
    let (resp, metrics) = h.handle_with_metrics(e, &invocation()).await;
    assert!(failed(&resp.unwrap()).is_empty());
    let calls = h.queue.calls();
    let sent = sends(&calls);
    assert_eq!(sent.len(), 3, "every message re-sent: {calls:?}");
    assert!(sent.iter().all(|(url, m)| *url == QUEUE_URL && requeue::attempt(&m.attributes) == 1));
    assert_eq!(metrics.environment_failures, 3);
    assert_eq!(metrics.dead_lettered, 0);
}

#[tokio::test]
async fn plaintext_remote_clickhouse_is_refused_before_any_call() {
    let calls = Arc::new(AtomicUsize::new(0));
    let remote = ClickHouseSettings::new("http://clickhouse.example.internal:8123", "cdc", "good", "analytics");
    let h = Handler::new(factory(calls.clone()), StaticCredentials(remote), FakeQueue::default(), no_requeue());
    let (resp, metrics) =
        h.handle_with_metrics(event(vec![record(Some("a"), "ok", ARN, None, 1)]), &invocation()).await;
    assert_eq!(failed(&resp.unwrap()), vec!["a"]);
    assert_eq!(calls.load(Ordering::SeqCst), 0, "no pipeline built, no credential sent");
    assert_eq!(metrics.events.keys().next().map(|k| k.2.as_str()), Some("systemic"));
}

#[tokio::test]
async fn a_hanging_pipeline_is_answered_before_the_deadline() {
    let (h, _) = handler(Some(DLQ), FakeQueue::default());
    let deadline = SystemTime::now() + Duration::from_secs(2);
    let invocation = Invocation { request_id: "r".into(), deadline: Some(deadline) };
    let e = event(vec![record(Some("a"), "hang", ARN, None, 1), record(Some("b"), "ok", ARN, None, 1)]);
    let started = Instant::now();
    let resp = h.handle(e, &invocation).await.unwrap();
    assert!(SystemTime::now() < deadline, "answered after {:?}", started.elapsed());
    assert!(failed(&resp).is_empty());
    let calls = h.queue.calls();
    let sent = sends(&calls);
    assert_eq!(sent.len(), 2, "both re-sent with a delay: {calls:?}");
    assert!(sent.iter().all(|(_, m)| m.delay_seconds.is_some_and(|d| d > 0)));
}

#[tokio::test]
async fn a_hanging_sqs_still_leaves_time_to_answer() {
    let queue = FakeQueue { delay: Some(Duration::from_secs(30)), ..Default::default() };
    let (h, _) = handler(Some(DLQ), queue);
    let deadline = SystemTime::now() + Duration::from_secs(2);
    let invocation = Invocation { request_id: "r".into(), deadline: Some(deadline) };
    let e = event(vec![
        record(Some("a"), "hang", ARN, None, 1),
        record(Some("b"), "poison", ARN, None, 1),
        record(Some("c"), "toast", ARN, None, 1),
    ]);
    let resp = h.handle(e, &invocation).await.unwrap();
    assert!(SystemTime::now() < deadline);
    // Nothing could be sent: every message is reported failed, to come back.
    assert_eq!(failed(&resp), vec!["a", "b", "c"]);
}

#[test]
fn message_supplied_ids_are_bounded_in_logs() {
    let long = "x".repeat(300_000);
    assert_eq!(loggable_id(&long).chars().count(), MAX_LOGGED_ID + 1);
    assert_eq!(loggable_id("tx-1"), "tx-1");
    assert_eq!(loggable_id("a\nb\u{7}"), "a?b?");
}

#[tokio::test]
async fn record_without_id_fails_the_invocation() {
    let (h, calls) = handler(None, FakeQueue::default());
    let e = event(vec![record(Some("a"), "ok", ARN, None, 1), record(None, "ok", ARN, None, 1)]);
    let err = h.handle(e, &invocation()).await.unwrap_err();
    assert!(matches!(err, HandlerError::MissingMessageId { index: 1 }));
    assert_eq!(calls.load(Ordering::SeqCst), 0, "nothing processed");
    let e = event(vec![record(Some("  "), "ok", ARN, None, 1)]);
    assert!(h.handle(e, &invocation()).await.is_err());
}

#[tokio::test]
async fn empty_batch_succeeds() {
    let (h, calls) = handler(None, FakeQueue::default());
    assert!(failed(&h.handle(event(vec![]), &invocation()).await.unwrap()).is_empty());
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn fifo_group_rules_apply() {
    let processed = Arc::new(std::sync::Mutex::new(Vec::new()));
    let h = Handler::new(
        factory_recording(Default::default(), processed.clone()),
        StaticCredentials(settings("good")),
        FakeQueue::default(),
        HandlerConfig::default(),
    );
    let e = event(vec![
        record(Some("a1"), "ok", FIFO_ARN, Some("A"), 1),
        record(Some("a2"), "transient", FIFO_ARN, Some("A"), 1),
        record(Some("b1"), "ok", FIFO_ARN, Some("B"), 1),
        record(Some("a3"), "ok", FIFO_ARN, Some("A"), 1),
        record(Some("b2"), "ok", FIFO_ARN, Some("B"), 1),
    ]);
    let resp = h.handle(e, &invocation()).await.unwrap();
    assert_eq!(failed(&resp), vec!["a2", "a3"]);
    // The blocked message comes back with the one that blocked it.
    let calls = h.queue.calls();
    let vis: HashMap<String, u32> = calls
        .iter()
        .filter_map(|c| match c {
            Call::Visibility(_, h, s) => Some((h.clone(), *s)),
            _ => None,
        })
        .collect();
    assert_eq!(vis["rh-a2"], vis["rh-a3"]);
    assert!(vis.keys().all(|k| k.starts_with("rh-a")));
    // FIFO never re-sends (a copy would join the back of its group) and never writes a3
    // before a2 has succeeded.
    assert!(sends(&calls).is_empty());
    assert!(!processed.lock().unwrap().contains(&"a3".to_string()), "{processed:?}");
}

#[tokio::test]
async fn fifo_counts_the_environments_failure_once_on_the_message_that_met_it() {
    let (h, _) = handler(Some(DLQ), FakeQueue::default());
    let e = event(vec![
        record(Some("a1"), "transient", FIFO_ARN, Some("A"), 1),
        record(Some("a2"), "ok", FIFO_ARN, Some("A"), 1),
    ]);
    let (resp, metrics) = h.handle_with_metrics(e, &invocation()).await;
    assert_eq!(failed(&resp.unwrap()), vec!["a1", "a2"]);
    assert_eq!((metrics.environment_failures, metrics.failed, metrics.requeued), (1, 2, 0));
}

#[tokio::test]
async fn a_copy_without_room_for_its_counter_falls_back_to_reporting_failure() {
    let (h, _) = handler(Some(DLQ), FakeQueue::default());
    let mut full = record(Some("a"), "transient", ARN, None, 2);
    for i in 0..9 {
        let mut a = aws_lambda_events::sqs::SqsMessageAttribute::default();
        a.data_type = Some("String".into());
        a.string_value = Some("v".into());
        full.message_attributes.insert(format!("a{i}"), a);
    }
    let (resp, metrics) = h.handle_with_metrics(event(vec![full]), &invocation()).await;
    assert_eq!(failed(&resp.unwrap()), vec!["a"]);
    let calls = h.queue.calls();
    // Second receive: ceiling 120 s, jittered into [60, 120]; nothing sent anywhere.
    let [Call::Visibility(_, _, seconds)] = calls.as_slice() else { panic!("{calls:?}") };
    assert!((60..=120).contains(seconds), "{seconds}");
    assert_eq!((metrics.environment_failures, metrics.requeued, metrics.failed), (1, 0, 1));
}

#[tokio::test]
async fn fifo_poison_dead_lettered_still_holds_back_its_group() {
    let (h, _) = handler(Some("https://sqs.us-east-1.amazonaws.com/123456789012/cdc-dlq.fifo"), FakeQueue::default());
    let e = event(vec![
        record(Some("a1"), "poison", FIFO_ARN, Some("A"), 1),
        record(Some("a2"), "ok", FIFO_ARN, Some("A"), 1),
    ]);
    let resp = h.handle(e, &invocation()).await.unwrap();
    assert_eq!(failed(&resp), vec!["a2"]);
    let calls = h.queue.calls();
    let Some(Call::Send(_, msg)) = calls.first() else { panic!("{calls:?}") };
    assert_eq!(msg.group_id.as_deref(), Some("A"));
    assert!(calls.contains(&Call::Visibility(format!("{QUEUE_URL}.fifo"), "rh-a2".into(), 0)));
}

#[tokio::test]
async fn auth_failure_refreshes_the_secret_and_retries_once() {
    let store = Arc::new(FakeStore::new("stale"));
    let calls = Arc::new(AtomicUsize::new(0));
    let credentials = SecretCache::new(store.clone(), "arn", Duration::from_secs(300));
    let h = Handler::new(factory(calls.clone()), credentials, FakeQueue::default(), HandlerConfig::default());
    let e = || event(vec![record(Some("a"), "auth", ARN, None, 1)]);
    // Rotated to "good" after the cache was filled with "stale".
    h.warm_up().await.unwrap();
    store.rotate("good");
    let resp = h.handle(e(), &invocation()).await.unwrap();
    assert!(failed(&resp).is_empty());
    assert_eq!(calls.load(Ordering::SeqCst), 2, "one failed attempt, one retry");
    assert_eq!(store.fetches.load(Ordering::SeqCst), 2);
    // Still wrong after the refresh: the invocation fails, without a third attempt.
    store.rotate("wrong");
    let h = Handler::new(
        factory(calls.clone()),
        SecretCache::new(store.clone(), "arn", Duration::from_secs(300)),
        FakeQueue::default(),
        HandlerConfig::default(),
    );
    calls.store(0, Ordering::SeqCst);
    let (resp, metrics) = h.handle_with_metrics(e(), &invocation()).await;
    assert!(failed(&resp.unwrap()).is_empty(), "re-sent for later, not failed toward the DLQ");
    assert_eq!(metrics.requeued, 1);
    assert_eq!(metrics.events.keys().next().map(|k| k.2.as_str()), Some("systemic"));
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn miscounted_outcomes_are_retried_not_trusted() {
    struct Short;
    impl Process for Short {
        async fn process(&self, _m: &[Message], _d: Instant) -> Result<Vec<MessageReport>, SystemicError> {
            Ok(vec![])
        }
    }
    let h = Handler::new(
        |_s: ClickHouseSettings| async { Ok::<_, SystemicError>(Short) },
        StaticCredentials(settings("good")),
        FakeQueue::default(),
        HandlerConfig::default(),
    );
    let (resp, metrics) =
        h.handle_with_metrics(event(vec![record(Some("a"), "ok", ARN, None, 1)]), &invocation()).await;
    assert!(failed(&resp.unwrap()).is_empty());
    let calls = h.queue.calls();
    assert_eq!(sends(&calls).len(), 1, "re-sent: {calls:?}");
    assert_eq!(metrics.requeued, 1);
}
