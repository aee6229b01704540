//! One invocation: an SQS batch in, a partial batch response out.
//!
//! Enters: an `SqsEvent` (from Lambda or from `cdc-processor poll`) and the invocation's request
//! id and deadline. Leaves: an `SqsBatchResponse` listing the failed messages, or an error that
//! fails the whole invocation (so SQS redelivers every message of the batch).
//!
//! ```text
//! SqsEvent ─► Message (id checked) ─► Process::process ─► MessageReport per message
//!          ─► sqs::batch::plan (standard / FIFO rules)
//!          ─► poison: send to the DLQ (ack) or report failed; transient: ChangeMessageVisibility
//!             with backoff ─► SqsBatchResponse, one EMF metrics line, one summary log line
//! ```
//!
//! The whole invocation fails (NOTES §2) only when no per-message answer is trustworthy: a
//! record without an id, a systemic fault (wrong password, missing database, no secret), or a
//! pipeline that miscounted its outcomes. Before failing, every message's visibility is backed
//! off, so an outage does not burn through `maxReceiveCount` and push healthy messages into the
//! DLQ.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};
use futures::StreamExt;
use tokio::sync::Mutex;
use tracing::{Instrument, info, warn};

use crate::config::ClickHouseSettings;
use crate::error::{Classify, ErrorClass};
use crate::pipeline::{Process, SystemicError};
use crate::secrets::{CredentialSource, SecretError};
use crate::sqs::backoff::Backoff;
use crate::sqs::batch::{self, BatchError, Disposition};
use crate::sqs::dead_letter::{self, DeadLetter};
use crate::sqs::message::{Message, MessageOutcome, MessageReport};
use crate::sqs::queue::{Attribute, OutgoingMessage, Queue, url_from_arn};
use crate::telemetry::{self, InvocationMetrics};

/// Builds a pipeline for given ClickHouse settings: at cold start, when the cached secret
/// changed, and after an authentication failure. Any `Fn(ClickHouseSettings) -> Future` works.
pub trait PipelineFactory: Send + Sync {
    type Pipeline: Process + 'static;
    fn build(&self, settings: ClickHouseSettings)
    -> impl Future<Output = Result<Self::Pipeline, SystemicError>> + Send;
}

impl<F, Fut, P> PipelineFactory for F
where
    F: Fn(ClickHouseSettings) -> Fut + Send + Sync,
    Fut: Future<Output = Result<P, SystemicError>> + Send,
    P: Process + 'static,
{
    type Pipeline = P;
    fn build(&self, settings: ClickHouseSettings) -> impl Future<Output = Result<P, SystemicError>> + Send {
        self(settings)
    }
}

/// What the handler reads from the environment once per cold start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlerConfig {
    /// `DEAD_LETTER_QUEUE_URL`: poison goes there at once when set.
    pub dead_letter_queue_url: Option<String>,
    /// `SOURCE_QUEUE_URL`: the queue for `ChangeMessageVisibility`; derived from each record's
    /// `eventSourceARN` when unset.
    pub source_queue_url: Option<String>,
    pub backoff: Backoff,
    /// Time kept back from Lambda's deadline for the response, visibility changes and DLQ sends
    /// (`DEADLINE_MARGIN_MS`, default 5000).
    pub deadline_margin: Duration,
    /// The metrics' `FunctionName` dimension.
    pub function_name: String,
}

impl Default for HandlerConfig {
    fn default() -> Self {
        Self {
            dead_letter_queue_url: None,
            source_queue_url: None,
            backoff: Backoff::default(),
            deadline_margin: Duration::from_secs(5),
            function_name: "local".into(),
        }
    }
}

impl HandlerConfig {
    pub fn from_env() -> Self {
        let non_empty = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        Self {
            dead_letter_queue_url: non_empty("DEAD_LETTER_QUEUE_URL"),
            source_queue_url: non_empty("SOURCE_QUEUE_URL"),
            backoff: Backoff::from_env(),
            deadline_margin: non_empty("DEADLINE_MARGIN_MS")
                .and_then(|v| v.parse().ok())
                .map(Duration::from_millis)
                .unwrap_or(Duration::from_secs(5)),
            function_name: telemetry::function_name(),
        }
    }
}

/// The invocation's context.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub request_id: String,
    /// When Lambda kills the invocation; `None` outside Lambda (then 5 minutes from now).
    pub deadline: Option<SystemTime>,
}

/// Why an invocation failed as a whole. Lambda then makes every message of the batch visible
/// again after its visibility timeout (already backed off by the handler).
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    #[error("record {index} of the batch has no usable messageId")]
    MissingMessageId { index: usize },
    #[error(transparent)]
    Systemic(#[from] SystemicError),
    #[error(transparent)]
    Batch(#[from] BatchError),
    #[error(transparent)]
    Credentials(#[from] SecretError),
}

impl Classify for HandlerError {
    fn class(&self) -> ErrorClass {
        ErrorClass::Systemic
    }
    fn code(&self) -> &'static str {
        match self {
            HandlerError::MissingMessageId { .. } => "sqs.missing_message_id",
            HandlerError::Systemic(e) => e.code(),
            HandlerError::Batch(e) => e.code(),
            HandlerError::Credentials(e) => e.code(),
        }
    }
}

impl From<HandlerError> for lambda_runtime::Diagnostic {
    fn from(e: HandlerError) -> Self {
        lambda_runtime::Diagnostic { error_type: e.code().to_string(), error_message: e.to_string() }
    }
}

struct Built<P> {
    settings: ClickHouseSettings,
    pipeline: Arc<P>,
}

/// The SQS handler, built once per cold start and shared by every invocation.
pub struct Handler<F: PipelineFactory, C, Q> {
    factory: F,
    credentials: C,
    queue: Q,
    config: HandlerConfig,
    built: Mutex<Option<Built<F::Pipeline>>>,
}

/// One message's fate after settling: for the response, the metrics and the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Settled {
    Acked,
    DeadLettered,
    Failed { visibility: Option<u32> },
}

impl<F, C, Q> Handler<F, C, Q>
where
    F: PipelineFactory,
    C: CredentialSource,
    Q: Queue,
{
    pub fn new(factory: F, credentials: C, queue: Q, config: HandlerConfig) -> Self {
        Self { factory, credentials, queue, config, built: Mutex::new(None) }
    }

    pub fn config(&self) -> &HandlerConfig {
        &self.config
    }

    pub fn queue(&self) -> &Q {
        &self.queue
    }

    /// Builds the pipeline now (cold start), so the first invocation does not pay for it.
    /// Failing here is not fatal: the first invocation tries again.
    pub async fn warm_up(&self) -> Result<(), HandlerError> {
        self.pipeline().await.map(|_| ())
    }

    /// Handles one batch, prints its EMF metrics line, and returns Lambda's answer.
    pub async fn handle(&self, event: SqsEvent, invocation: &Invocation) -> Result<SqsBatchResponse, HandlerError> {
        let span = tracing::info_span!("invocation", request_id = %invocation.request_id);
        let (result, metrics) = self.handle_with_metrics(event, invocation).instrument(span).await;
        metrics.emit(&self.config.function_name);
        result
    }

    /// [`Self::handle`] without printing: the metrics are returned (tests read them).
    pub async fn handle_with_metrics(
        &self,
        event: SqsEvent,
        invocation: &Invocation,
    ) -> (Result<SqsBatchResponse, HandlerError>, InvocationMetrics) {
        let started = Instant::now();
        let mut metrics = InvocationMetrics { messages: event.records.len() as u64, ..Default::default() };
        let result = self.run(event, invocation, &mut metrics).await;
        metrics.batch_duration_ms = started.elapsed().as_millis() as u64;
        match &result {
            Ok(response) => info!(
                messages = metrics.messages,
                failed = response.batch_item_failures.len(),
                dead_lettered = metrics.dead_lettered,
                rows_inserted = metrics.rows_inserted,
                duration_ms = metrics.batch_duration_ms,
                "batch done"
            ),
            Err(e) => {
                metrics.failed = metrics.messages;
                warn!(
                    messages = metrics.messages,
                    class = ErrorClass::Systemic.as_str(),
                    code = e.code(),
                    error = %e,
                    duration_ms = metrics.batch_duration_ms,
                    "batch failed as a whole"
                )
            }
        }
        (result, metrics)
    }

    async fn run(
        &self,
        event: SqsEvent,
        invocation: &Invocation,
        metrics: &mut InvocationMetrics,
    ) -> Result<SqsBatchResponse, HandlerError> {
        // Every record must have an id we can report: otherwise Lambda could only read an
        // empty/unknown identifier, which fails the batch anyway (NOTES §2). Failing now is
        // explicit and leaves nothing half-acknowledged.
        let mut messages = Vec::with_capacity(event.records.len());
        let mut attributes = Vec::with_capacity(event.records.len());
        for (index, mut record) in event.records.into_iter().enumerate() {
            let message = Message::from_lambda(&mut record).ok_or(HandlerError::MissingMessageId { index })?;
            attributes.push(dead_letter::lambda_attributes(&record));
            messages.push(message);
        }
        if messages.is_empty() {
            return Ok(SqsBatchResponse::default());
        }
        let deadline = self.deadline(invocation);

        let reports = match self.process(&messages, deadline).await {
            Ok(reports) => self.send_follow_ups(&messages, reports).await,
            Err(e) => {
                for _ in &messages {
                    metrics.record_event(None, None, ErrorClass::Systemic.as_str());
                }
                self.back_off_all(&messages).await;
                return Err(e);
            }
        };
        let plan = match batch::plan(&messages, reports.iter().map(|r| &r.outcome)) {
            Ok(plan) => plan,
            Err(e) => {
                self.back_off_all(&messages).await;
                return Err(e.into());
            }
        };

        let settled = self.settle(&messages, &attributes, &plan).await;

        let now_ms = telemetry::now_ms();
        let mut failed = Vec::new();
        for (((message, report), disposition), settled) in messages.iter().zip(&reports).zip(&plan).zip(&settled) {
            metrics.record_report(report, now_ms);
            let op = report.op.map(|op| op.as_str());
            let (class, code) = match &report.outcome {
                MessageOutcome::Failed { class, code, .. } => (Some(class.as_str()), Some(*code)),
                _ => (None, None),
            };
            match settled {
                Settled::Acked => {}
                Settled::DeadLettered => {
                    metrics.dead_lettered += 1;
                    warn!(
                        message_id = %message.id,
                        receive_count = message.receive_count,
                        correlation_id = report.correlation_id.as_deref(),
                        table = report.table(),
                        op,
                        class,
                        code,
                        "poison message sent to the dead-letter queue"
                    );
                }
                Settled::Failed { visibility } => {
                    metrics.failed += 1;
                    failed.push(&message.id);
                    let blocked_by = match disposition {
                        Disposition::Blocked { by } => messages.get(*by).map(|m| m.id.as_str()),
                        _ => None,
                    };
                    warn!(
                        message_id = %message.id,
                        receive_count = message.receive_count,
                        correlation_id = report.correlation_id.as_deref(),
                        table = report.table(),
                        op,
                        class,
                        code,
                        blocked_by,
                        visibility_seconds = visibility,
                        "message failed, it will come back"
                    );
                }
            }
        }
        Ok(batch::response(&messages, failed))
    }

    fn deadline(&self, invocation: &Invocation) -> Instant {
        let remaining = invocation
            .deadline
            .and_then(|d| d.duration_since(SystemTime::now()).ok())
            .unwrap_or(Duration::from_secs(300));
        Instant::now() + remaining.saturating_sub(self.config.deadline_margin)
    }

    /// The pipeline for the current settings, (re)built when the settings changed (a rotated
    /// secret seen after its TTL) or never built.
    async fn pipeline(&self) -> Result<Arc<F::Pipeline>, HandlerError> {
        let settings = self.credentials.current().await?;
        self.pipeline_for(settings).await
    }

    async fn pipeline_for(&self, settings: ClickHouseSettings) -> Result<Arc<F::Pipeline>, HandlerError> {
        let mut built = self.built.lock().await;
        if let Some(b) = built.as_ref().filter(|b| b.settings == settings) {
            return Ok(b.pipeline.clone());
        }
        let pipeline = Arc::new(self.factory.build(settings.clone()).await?);
        *built = Some(Built { settings, pipeline: pipeline.clone() });
        Ok(pipeline)
    }

    /// Runs the pipeline; on an authentication failure fetches the credentials again, rebuilds
    /// the pipeline and retries the batch once (secret rotation must not cost a DLQ entry).
    async fn process(&self, messages: &[Message], deadline: Instant) -> Result<Vec<MessageReport>, HandlerError> {
        let pipeline = self.pipeline().await?;
        match pipeline.process(messages, deadline).await {
            Ok(reports) => Ok(reports),
            Err(e) if e.is_auth => {
                warn!(
                    code = e.code,
                    "ClickHouse rejected the credentials: fetching the secret again and retrying once"
                );
                let settings = self.credentials.refresh().await?;
                let pipeline = self.pipeline_for(settings).await?;
                Ok(pipeline.process(messages, deadline).await?)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Carries out the plan: dead-letter sends and visibility changes. Returns each message's
    /// final fate.
    async fn settle(
        &self,
        messages: &[Message],
        attributes: &[BTreeMap<String, Attribute>],
        plan: &[Disposition],
    ) -> Vec<Settled> {
        let backoff = self.config.backoff;
        let mut settled = vec![Settled::Acked; messages.len()];
        // Pass 1, in batch order so a Blocked message can read its blocker's fate.
        for (i, (message, disposition)) in messages.iter().zip(plan).enumerate() {
            settled[i] = match disposition {
                Disposition::Ack => Settled::Acked,
                Disposition::Retry => {
                    Settled::Failed { visibility: Some(backoff.visibility_seconds(message.receive_count)) }
                }
                Disposition::Poison { code, table } => {
                    match self.dead_letter(message, attributes.get(i), code, table.clone()).await {
                        true => Settled::DeadLettered,
                        // No DLQ configured or the send failed: report it failed and let it come
                        // back at once, so the queue's redrive policy moves it after
                        // maxReceiveCount receives instead of after maxReceiveCount timeouts.
                        false => Settled::Failed { visibility: Some(0) },
                    }
                }
                Disposition::Blocked { by } => {
                    // FIFO: come back together with the message that blocked this one.
                    let visibility = match settled.get(*by) {
                        Some(Settled::Failed { visibility }) => *visibility,
                        _ => Some(0),
                    };
                    Settled::Failed { visibility }
                }
            };
        }
        // Pass 2: visibility changes, a few at a time.
        let changes: Vec<_> = messages
            .iter()
            .zip(&settled)
            .filter_map(|(m, s)| match s {
                Settled::Failed { visibility: Some(v) } => Some((m, *v)),
                _ => None,
            })
            .collect();
        futures::stream::iter(changes).for_each_concurrent(16, |(m, seconds)| self.change_visibility(m, seconds)).await;
        settled
    }

    /// Sends a poison message to the DLQ; true when it is there (then it is acknowledged).
    async fn dead_letter(
        &self,
        message: &Message,
        attributes: Option<&BTreeMap<String, Attribute>>,
        code: &'static str,
        table: Option<String>,
    ) -> bool {
        let Some(url) = &self.config.dead_letter_queue_url else { return false };
        let empty = BTreeMap::new();
        let outgoing = DeadLetter::poison(code, table).to_outgoing(message, attributes.unwrap_or(&empty), url);
        match self.queue.send(url, outgoing).await {
            Ok(_) => true,
            Err(e) => {
                warn!(message_id = %message.id, code = e.code(), error = %e, "dead-letter send failed, reporting the message failed instead");
                false
            }
        }
    }

    async fn change_visibility(&self, message: &Message, seconds: u32) {
        let url = self.config.source_queue_url.clone().or_else(|| message.source_arn.as_deref().and_then(url_from_arn));
        let (Some(url), Some(handle)) = (url, message.receipt_handle.as_deref()) else {
            warn!(message_id = %message.id, "no queue URL or receipt handle: the queue's own visibility timeout applies");
            return;
        };
        if let Err(e) = self.queue.change_visibility(&url, handle, seconds).await {
            // The message still comes back, only after the queue's visibility timeout.
            warn!(message_id = %message.id, code = e.code(), error = %e, "ChangeMessageVisibility failed");
        }
    }

    /// Sends each message's follow-ups (unfinished re-derivations) to its source queue before
    /// the message can be acknowledged; a message whose follow-ups could not all be sent fails
    /// as transient, so its work is redone rather than lost (docs/sales-fact.md, "Fan-out").
    async fn send_follow_ups(&self, messages: &[Message], mut reports: Vec<MessageReport>) -> Vec<MessageReport> {
        for (index, (message, report)) in messages.iter().zip(reports.iter_mut()).enumerate() {
            if report.follow_ups.is_empty() || report.outcome.is_failure() {
                continue;
            }
            let url =
                self.config.source_queue_url.clone().or_else(|| message.source_arn.as_deref().and_then(url_from_arn));
            let mut sent = url.is_some();
            for (n, body) in std::mem::take(&mut report.follow_ups).into_iter().enumerate() {
                let Some(url) = url.as_deref().filter(|_| sent) else { break };
                let outgoing = OutgoingMessage {
                    body,
                    // FIFO: the follow-up joins its message's group, after it.
                    group_id: message.group_id.clone(),
                    deduplication_id: message.group_id.as_ref().map(|_| format!("{}-follow-up-{n}", message.id)),
                    ..OutgoingMessage::default()
                };
                if let Err(e) = self.queue.send(url, outgoing).await {
                    warn!(message_id = %message.id, code = e.code(), error = %e, "follow-up not sent");
                    sent = false;
                }
            }
            if sent {
                info!(message_id = %message.id, index, "re-derivation continues in a follow-up message");
            } else {
                report.outcome = MessageOutcome::Failed {
                    class: ErrorClass::Transient,
                    code: "follow_up.not_sent",
                    table: report.table.clone(),
                };
            }
        }
        reports
    }

    async fn back_off_all(&self, messages: &[Message]) {
        let backoff = self.config.backoff;
        futures::stream::iter(messages)
            .for_each_concurrent(16, |m| self.change_visibility(m, backoff.visibility_seconds(m.receive_count)))
            .await;
    }
}

#[cfg(test)]
mod tests {
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

    /// Reads each body as a directive: `ok`, `skip`, `poison`, `transient`, `systemic`, `auth`
    /// (fails with an auth error unless the password is `good`).
    struct FakePipeline {
        password: String,
        calls: Arc<AtomicUsize>,
    }

    impl Process for FakePipeline {
        async fn process(&self, messages: &[Message], _deadline: Instant) -> Result<Vec<MessageReport>, SystemicError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let mut out = Vec::new();
            for m in messages {
                out.push(match m.body.as_str() {
                    "skip" => MessageOutcome::Skipped("tombstone"),
                    "poison" => {
                        MessageOutcome::Failed { class: ErrorClass::Poison, code: "body.not_json", table: None }
                    }
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

    fn factory(calls: Arc<AtomicUsize>) -> impl PipelineFactory<Pipeline = FakePipeline> {
        move |settings: ClickHouseSettings| {
            let calls = calls.clone();
            async move { Ok::<_, SystemicError>(FakePipeline { password: settings.password, calls }) }
        }
    }

    fn settings(password: &str) -> ClickHouseSettings {
        ClickHouseSettings {
            url: "http://127.0.0.1:8123".into(),
            user: "cdc".into(),
            password: password.into(),
            database: "analytics".into(),
        }
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
    async fn transient_failure_backs_off_from_receive_count() {
        let (h, _) = handler(Some(DLQ), FakeQueue::default());
        let e = event(vec![record(Some("a"), "transient", ARN, None, 3), record(Some("b"), "ok", ARN, None, 1)]);
        let resp = h.handle(e, &invocation()).await.unwrap();
        assert_eq!(failed(&resp), vec!["a"]);
        let calls = h.queue.calls();
        let [Call::Visibility(url, handle, seconds)] = calls.as_slice() else { panic!("{calls:?}") };
        assert_eq!((url.as_str(), handle.as_str()), (QUEUE_URL, "rh-a"));
        // Third receive: ceiling 240 s with the default backoff, jittered into [120, 240].
        assert!((120..=240).contains(seconds), "{seconds}");
    }

    #[tokio::test]
    async fn systemic_fault_fails_the_invocation_and_dead_letters_nothing() {
        let (h, _) = handler(Some(DLQ), FakeQueue::default());
        let e = event(vec![
            record(Some("a"), "ok", ARN, None, 1),
            record(Some("b"), "poison", ARN, None, 1),
            record(Some("c"), "systemic", ARN, None, 1),
        ]);
        let err = h.handle(e, &invocation()).await.unwrap_err();
        assert_eq!(err.code(), "clickhouse.unknown_database");
        let calls = h.queue.calls();
        assert!(calls.iter().all(|c| matches!(c, Call::Visibility(..))), "{calls:?}");
        assert_eq!(calls.len(), 3, "every message backed off");
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
        let (h, _) = handler(None, FakeQueue::default());
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
    }

    #[tokio::test]
    async fn fifo_poison_dead_lettered_still_holds_back_its_group() {
        let (h, _) =
            handler(Some("https://sqs.us-east-1.amazonaws.com/123456789012/cdc-dlq.fifo"), FakeQueue::default());
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
        let err = h.handle(e(), &invocation()).await.unwrap_err();
        assert_eq!(err.code(), "clickhouse.auth");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn miscounted_outcomes_fail_the_invocation() {
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
        let err = h.handle(event(vec![record(Some("a"), "ok", ARN, None, 1)]), &invocation()).await.unwrap_err();
        assert_eq!(err.code(), "pipeline.outcome_count");
    }
}
