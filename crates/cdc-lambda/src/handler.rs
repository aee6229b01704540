//! One invocation: an SQS batch in, a partial batch response out, always before the deadline.
//!
//! Enters: an `SqsEvent` (from Lambda or from `cdc-tools poll`) and the invocation's request
//! id and deadline. Leaves: an `SqsBatchResponse` listing the failed messages (an error fails
//! the whole invocation only for a record without a usable id, which cannot be reported).
//!
//! ```text
//! SqsEvent ─► Message (id checked) ─► Process::process, bounded by the work deadline
//!          ─► MessageReport per message (a systemic fault or the deadline fails every message)
//!          ─► one Entry per message: record, attributes, report, attempt, age, FIFO blocker, fate
//!          ─► sqs::fate::fate, the one place a fate is decided (docs/error-policy.md):
//!             poison: send to the DLQ (ack) or report failed;
//!             environmental failure (standard queue): re-send a delayed copy (ack);
//!             the message's own transient failure, FIFO: report failed, visibility backoff
//!          ─► SqsBatchResponse, one EMF metrics line, one summary log line
//! ```
//!
//! The policy (what is poison, transient, systemic; why outages never reach the DLQ; FIFO; the
//! deadline) is argued in docs/error-policy.md. In short: a failure of the environment (ClickHouse
//! unreachable or slow, credentials refused, TLS, configuration, the deadline) re-sends the
//! message as a fresh copy with a delay and an attempt counter (`sqs::requeue`) and acknowledges
//! the original, so its receive count never grows for environmental reasons; every ClickHouse and
//! AWS call is bounded by the time left, and what is unfinished at the deadline is reported
//! failed with its backoff.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};
use futures::StreamExt;
use tokio::sync::Mutex;
use tracing::{Instrument, debug, error, info, warn};

use crate::pipeline::{Process, SystemicError};
use crate::secrets::{CredentialSource, SecretError};
use crate::sqs::backoff::Backoff;
use crate::sqs::batch::{self, BatchError};
use crate::sqs::dead_letter::{self, DeadLetter};
use crate::sqs::fate::{DeadLetterReason, Fate, Policy, Situation, fate};
use crate::sqs::message::{Message, MessageOutcome, MessageReport};
use crate::sqs::queue::{Attribute, OutgoingMessage, Queue, url_from_arn};
use crate::sqs::requeue;
use crate::telemetry::{self, InvocationMetrics};
use cdc_clickhouse::config::{ClickHouseSettings, ConfigError};
use cdc_core::error::{Classify, ErrorClass};

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

/// The handler's settings, read once per cold start (`crate::config::Config`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlerConfig {
    /// `DEAD_LETTER_QUEUE_URL`: poison goes there at once when set.
    pub dead_letter_queue_url: Option<String>,
    /// `SOURCE_QUEUE_URL`: the queue for `ChangeMessageVisibility` and re-sent copies; derived
    /// from each record's `eventSourceARN` when unset.
    pub source_queue_url: Option<String>,
    pub backoff: Backoff,
    /// Time kept back from the deadline for settling: dead-letter sends, re-sent copies and
    /// visibility changes (`DEADLINE_MARGIN_MS`, default 5000; at most half the time left).
    pub deadline_margin: Duration,
    /// `REQUEUE_ON_OUTAGE` (default true): environmental failures on a standard queue are re-sent
    /// as delayed copies instead of being reported failed (docs/error-policy.md).
    pub requeue: bool,
    /// `RETRY_MAX_AGE_SECONDS` (default 24 h): a message whose environment has failed for longer
    /// than this since it was first seen goes to the DLQ as `retry.expired` instead of another copy.
    pub retry_max_age: Duration,
    /// The deadline of an invocation that has none (outside Lambda: `invoke`),
    /// `LOCAL_TIMEOUT_SECONDS` (default 60).
    pub default_timeout: Duration,
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
            requeue: true,
            retry_max_age: requeue::DEFAULT_MAX_AGE,
            default_timeout: Duration::from_secs(60),
            function_name: "local".into(),
        }
    }
}

/// The invocation's context.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub request_id: String,
    /// When Lambda kills the invocation; `None` outside Lambda (then
    /// [`HandlerConfig::default_timeout`] from now).
    pub deadline: Option<SystemTime>,
}

/// Why an invocation failed, as a whole or (systemic faults) for every message of the batch.
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
    #[error(transparent)]
    Config(#[from] ConfigError),
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
            HandlerError::Config(e) => e.code(),
        }
    }
}

impl From<HandlerError> for lambda_runtime::Diagnostic {
    fn from(e: HandlerError) -> Self {
        lambda_runtime::Diagnostic { error_type: e.code().to_string(), error_message: e.to_string() }
    }
}

/// The code of every message's failure when the invocation ran out of time.
const DEADLINE_CODE: &str = "deadline.exceeded";

/// Longest correlation id written to a log line: ids come from message bodies.
const MAX_LOGGED_ID: usize = 128;

/// Cuts a message-supplied id for logging: at most [`MAX_LOGGED_ID`] characters, control
/// characters replaced.
fn loggable_id(id: &str) -> String {
    let mut out: String = id.chars().take(MAX_LOGGED_ID).map(|c| if c.is_control() { '?' } else { c }).collect();
    if id.chars().nth(MAX_LOGGED_ID).is_some() {
        out.push('…');
    }
    out
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

/// Everything the handler knows about one message of the batch, from its record to its fate.
struct Entry {
    message: Message,
    /// Its original message attributes, kept on copies and dead-letter sends.
    attributes: BTreeMap<String, Attribute>,
    /// What the pipeline made of it; the outcome becomes `sqs.follow_up_not_sent` when its
    /// follow-ups could not be sent.
    report: MessageReport,
    /// `cdc_attempt`: environmental failures its earlier copies met (0 for an original).
    attempt: u32,
    /// Time since it was first seen: its retry age.
    age: Duration,
    /// FIFO: the index of the earlier message of its group that failed in this batch.
    blocked_by: Option<usize>,
    /// Cleared when a dead-letter send for it failed or was not done by the deadline.
    can_dead_letter: bool,
    /// Cleared when its copy could not be built (no source queue, no room for the counter) or
    /// its re-send failed.
    can_copy: bool,
    /// Where its backoff lands in `[ceiling/2, ceiling]`, drawn once.
    jitter: f64,
    /// What becomes of it: decided by `sqs::fate::fate`, and again when a send fails.
    fate: Fate,
}

impl Entry {
    fn new(message: Message, attributes: BTreeMap<String, Attribute>, report: MessageReport, now_ms: u64) -> Self {
        Self {
            attempt: requeue::attempt(&attributes),
            age: requeue::age(&message, &attributes, now_ms),
            message,
            attributes,
            report,
            blocked_by: None,
            can_dead_letter: true,
            can_copy: true,
            jitter: rand::random_range(0.0..=1.0),
            fate: Fate::Ack,
        }
    }

    /// Decides (or decides again) this message's fate; `blocker` is the settled fate of the
    /// message that blocks it, if any.
    fn decide(&mut self, fifo: bool, blocker: Option<Fate>, policy: &Policy) {
        let situation = Situation {
            fifo,
            receive_count: self.message.receive_count,
            attempt: self.attempt,
            retry_age: self.age,
            blocked_by: blocker,
            can_dead_letter: self.can_dead_letter,
            can_copy: self.can_copy,
            jitter: self.jitter,
        };
        self.fate = fate(&self.report.outcome, &situation, policy);
    }

    /// The send its fate asked for could not be made, failed, or was not done by the deadline:
    /// decide again without that way out.
    fn unsent(&mut self, fifo: bool, policy: &Policy) {
        match self.fate {
            Fate::DeadLetter(_) => self.can_dead_letter = false,
            Fate::Copy { .. } => self.can_copy = false,
            Fate::Ack | Fate::Fail { .. } => return,
        }
        self.decide(fifo, None, policy);
    }

    /// The failure's class and code, when it failed.
    fn failure(&self) -> Option<(ErrorClass, &'static str)> {
        match &self.report.outcome {
            MessageOutcome::Failed { class, code, .. } => Some((*class, *code)),
            _ => None,
        }
    }

    /// The dead-letter diagnostics its fate asks for.
    fn dead_letter(&self, reason: DeadLetterReason) -> DeadLetter {
        match (reason, &self.report.outcome) {
            (DeadLetterReason::Poison, MessageOutcome::Failed { code, table, .. }) => {
                DeadLetter::poison(code, table.clone())
            }
            _ => DeadLetter {
                code: requeue::EXPIRED_CODE,
                class: ErrorClass::Transient,
                table: self.report.table.clone(),
            },
        }
    }
}

/// The invocation's two deadlines: ClickHouse work stops at `work`; dead-letter sends, re-sent
/// copies and visibility changes stop at `hard`, which leaves time to return the response.
#[derive(Debug, Clone, Copy)]
struct Deadlines {
    work: Instant,
    hard: Instant,
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
                requeued = metrics.requeued,
                environment_failures = metrics.environment_failures,
                rows_inserted = metrics.rows_inserted,
                duration_ms = metrics.batch_duration_ms,
                "batch done"
            ),
            Err(e) => {
                metrics.failed = metrics.messages;
                error!(
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
        let deadlines = self.deadlines(invocation);
        // Every record must have an id we can report: otherwise Lambda could only read an
        // empty/unknown identifier, which fails the batch anyway (docs/platform-facts.md §2). Failing now is
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
        let fifo = batch::is_fifo(&messages);

        // The pipeline takes the messages as one slice; from its reports on, each message is one
        // entry holding all that is known about it.
        let reports = self.reports(&messages, deadlines.work).await;
        let now_ms = u64::try_from(telemetry::now_ms()).unwrap_or_default();
        let mut entries: Vec<Entry> = batch::pair(messages, reports)?
            .into_iter()
            .zip(attributes)
            .map(|((message, report), attributes)| Entry::new(message, attributes, report, now_ms))
            .collect();
        self.send_follow_ups(&mut entries, deadlines.hard).await;
        let blockers = batch::blockers(fifo, entries.iter().map(|e| (&e.message, &e.report.outcome)));
        for (entry, blocker) in entries.iter_mut().zip(blockers) {
            entry.blocked_by = blocker;
        }
        self.settle(&mut entries, fifo, deadlines.hard).await;

        let now_ms = telemetry::now_ms();
        for entry in &entries {
            let (message, report) = (&entry.message, &entry.report);
            metrics.record_report(report, now_ms);
            metrics.max_copy_attempt = metrics.max_copy_attempt.max(entry.attempt);
            let op = report.op.map(|op| op.as_str());
            let failure = entry.failure();
            if failure.is_some_and(|(class, _)| class.is_environmental()) {
                metrics.environment_failures += 1;
            }
            let (class, code) = (failure.map(|(class, _)| class.as_str()), failure.map(|(_, code)| code));
            let correlation_id = report.correlation_id.as_deref().map(loggable_id);
            match entry.fate {
                Fate::Ack => {}
                Fate::DeadLetter(DeadLetterReason::Expired) => {
                    metrics.dead_lettered += 1;
                    metrics.retry_expired += 1;
                    error!(
                        message_id = %message.id,
                        correlation_id,
                        table = report.table(),
                        code = requeue::EXPIRED_CODE,
                        cause = code,
                        attempt = entry.attempt,
                        "retried for longer than the retry age (the environment failed, or an earlier change never came): message sent to the dead-letter queue"
                    );
                }
                // A poison message and a failed one are logged alike, so their fields stay the
                // same; a failed one also says when it comes back and which message held it.
                // The absent fields of a poison message (None) are not recorded at all.
                Fate::DeadLetter(DeadLetterReason::Poison) | Fate::Fail { .. } => {
                    let (what, blocked_by, visibility_seconds) = match entry.fate {
                        Fate::Fail { visibility_seconds } => {
                            metrics.failed += 1;
                            let blocked_by =
                                entry.blocked_by.and_then(|b| entries.get(b)).map(|e| e.message.id.as_str());
                            ("message failed, it will come back", blocked_by, Some(visibility_seconds))
                        }
                        _ => {
                            metrics.dead_lettered += 1;
                            ("poison message sent to the dead-letter queue", None, None)
                        }
                    };
                    warn!(
                        message_id = %message.id,
                        receive_count = message.receive_count,
                        correlation_id,
                        table = report.table(),
                        op,
                        class,
                        code,
                        blocked_by,
                        visibility_seconds,
                        "{what}"
                    );
                }
                Fate::Copy { delay_seconds } => {
                    metrics.requeued += 1;
                    debug!(
                        message_id = %message.id,
                        correlation_id,
                        table = report.table(),
                        code,
                        delay_seconds,
                        "environmental failure: re-sent as a delayed copy"
                    );
                }
            }
        }
        if metrics.requeued > 0 {
            warn!(
                requeued = metrics.requeued,
                environment_failures = metrics.environment_failures,
                "the environment is failing: messages re-sent as delayed copies, none moved toward the DLQ"
            );
        }
        let failed = entries.iter().filter(|e| e.fate.is_reported_failed()).map(|e| &e.message.id);
        Ok(batch::response(entries.iter().map(|e| &e.message.id), failed))
    }

    /// One report per message, by the work deadline whatever happens: a systemic fault or the
    /// deadline itself fails every message (logged once, at error level, with its cause).
    async fn reports(&self, messages: &[Message], work: Instant) -> Vec<MessageReport> {
        let every = |class: ErrorClass, code: &'static str| -> Vec<MessageReport> {
            messages.iter().map(|_| MessageReport::new(MessageOutcome::Failed { class, code, table: None })).collect()
        };
        match tokio::time::timeout_at(work.into(), self.process_batch(messages, work)).await {
            Ok(Ok(reports)) if reports.len() == messages.len() => reports,
            Ok(Ok(reports)) => {
                let e = BatchError::OutcomeCount { expected: messages.len(), got: reports.len() };
                error!(class = e.class().as_str(), code = e.code(), error = %e, "pipeline miscounted its outcomes");
                every(e.class(), e.code())
            }
            Ok(Err(e)) => {
                error!(
                    class = e.class().as_str(),
                    code = e.code(),
                    error = %e,
                    "systemic fault: no message of the batch can be processed now"
                );
                every(e.class(), e.code())
            }
            Err(_) => {
                error!(
                    class = ErrorClass::Transient.as_str(),
                    code = DEADLINE_CODE,
                    "the invocation's deadline came before ClickHouse answered: every message reported for retry"
                );
                every(ErrorClass::Transient, DEADLINE_CODE)
            }
        }
    }

    /// The deadlines of this invocation: Lambda's (or the default timeout), minus a little for
    /// returning the response, and minus the settling margin for the work.
    fn deadlines(&self, invocation: &Invocation) -> Deadlines {
        let now = Instant::now();
        let remaining = match invocation.deadline {
            Some(deadline) => deadline.duration_since(SystemTime::now()).unwrap_or(Duration::ZERO),
            None => self.config.default_timeout,
        };
        let left = remaining.saturating_sub((remaining / 10).min(Duration::from_millis(500)));
        let settle = self.config.deadline_margin.min(left / 2);
        Deadlines { work: now + left.saturating_sub(settle), hard: now + left }
    }

    /// The pipeline for the current settings, (re)built when the settings changed (a rotated
    /// secret seen after its TTL) or never built.
    async fn pipeline(&self) -> Result<Arc<F::Pipeline>, HandlerError> {
        let settings = self.credentials.current().await?;
        self.pipeline_for(settings).await
    }

    async fn pipeline_for(&self, settings: ClickHouseSettings) -> Result<Arc<F::Pipeline>, HandlerError> {
        // Plaintext to a remote host, a malformed URL, an unusable CA bundle: refused before any
        // credential leaves the function.
        settings.validate()?;
        let mut built = self.built.lock().await;
        if let Some(b) = built.as_ref().filter(|b| b.settings == settings) {
            return Ok(b.pipeline.clone());
        }
        let pipeline = Arc::new(self.factory.build(settings.clone()).await?);
        *built = Some(Built { settings, pipeline: pipeline.clone() });
        Ok(pipeline)
    }

    /// On FIFO queues a later message of a group is never written before an earlier one of the
    /// same group has succeeded: the batch is processed in layers (the first message of every
    /// group, then the second of the groups still healthy, ...), and the messages after a
    /// failure are not processed at all (the plan reports them failed, `Blocked`). Lambda's FIFO
    /// batches hold at most 10 messages, so at most 10 layers. Standard queues: one call.
    async fn process_batch(&self, messages: &[Message], deadline: Instant) -> Result<Vec<MessageReport>, HandlerError> {
        if !batch::is_fifo(messages) {
            return self.process(messages, deadline).await;
        }
        let mut depth: HashMap<&str, usize> = HashMap::new();
        let layer_of: Vec<usize> = messages
            .iter()
            .map(|m| {
                let d = depth.entry(m.group_id.as_deref().unwrap_or("")).or_default();
                *d += 1;
                *d - 1
            })
            .collect();
        let layers = layer_of.iter().copied().max().map_or(0, |l| l + 1);
        // Not processed because an earlier message of its group failed: waiting on its own group,
        // not the environment (the failure that blocks it is counted once, on the blocker).
        let blocked = || {
            MessageReport::new(MessageOutcome::Failed { class: ErrorClass::Waiting, code: "fifo.blocked", table: None })
        };
        let mut reports: Vec<MessageReport> = messages.iter().map(|_| blocked()).collect();
        let mut failed_groups: HashSet<&str> = HashSet::new();
        for layer in 0..layers {
            let indices: Vec<usize> = (0..messages.len())
                .filter(|&i| {
                    layer_of[i] == layer && !failed_groups.contains(messages[i].group_id.as_deref().unwrap_or(""))
                })
                .collect();
            if indices.is_empty() {
                break;
            }
            let subset: Vec<Message> = indices.iter().map(|&i| messages[i].clone()).collect();
            let got = self.process(&subset, deadline).await?;
            if got.len() != subset.len() {
                return Err(BatchError::OutcomeCount { expected: subset.len(), got: got.len() }.into());
            }
            for (i, report) in indices.into_iter().zip(got) {
                if report.outcome.is_failure() {
                    failed_groups.insert(messages[i].group_id.as_deref().unwrap_or(""));
                }
                reports[i] = report;
            }
        }
        Ok(reports)
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

    fn source_queue_url(&self, message: &Message) -> Option<String> {
        self.config.source_queue_url.clone().or_else(|| message.source_arn.as_deref().and_then(url_from_arn))
    }

    fn policy(&self) -> Policy {
        Policy {
            dead_letter_queue: self.config.dead_letter_queue_url.is_some(),
            requeue: self.config.requeue,
            retry_max_age: self.config.retry_max_age,
            backoff: self.config.backoff,
        }
    }

    /// Decides every message's fate and carries it out by the hard deadline: dead-letter sends
    /// and re-sent copies (concurrently), then visibility changes. A send that cannot be made,
    /// fails or is not done by the deadline leaves the decision to [`fate`] again, without it
    /// (reported failed, as a rule). Blocked FIFO messages are decided last, from their blocker's
    /// settled fate.
    async fn settle(&self, entries: &mut [Entry], fifo: bool, hard: Instant) {
        let policy = self.policy();
        let now_ms = u64::try_from(telemetry::now_ms()).unwrap_or_default();
        // What to send, by entry index.
        let mut sends: Vec<(usize, &'static str, String, OutgoingMessage)> = Vec::new();
        for (i, entry) in entries.iter_mut().enumerate().filter(|(_, e)| e.blocked_by.is_none()) {
            entry.decide(fifo, None, &policy);
            let (what, send) = match entry.fate {
                Fate::DeadLetter(reason) => (
                    "dead-letter send",
                    self.config.dead_letter_queue_url.as_ref().map(|url| {
                        let outgoing = entry.dead_letter(reason).to_outgoing(&entry.message, &entry.attributes, url);
                        (url.clone(), outgoing)
                    }),
                ),
                Fate::Copy { delay_seconds } => (
                    "re-send",
                    self.source_queue_url(&entry.message).zip(requeue::copy(
                        &entry.message,
                        &entry.attributes,
                        delay_seconds,
                        now_ms,
                    )),
                ),
                Fate::Ack | Fate::Fail { .. } => continue,
            };
            match send {
                Some((url, outgoing)) => sends.push((i, what, url, outgoing)),
                None => entry.unsent(fifo, &policy),
            }
        }
        let entries_ref = &*entries;
        let unsent: Vec<usize> = futures::stream::iter(sends)
            .map(|(i, what, url, outgoing)| async move {
                let sent = self.send_by(&entries_ref[i].message, what, &url, outgoing, hard).await;
                (!sent).then_some(i)
            })
            .buffer_unordered(16)
            .filter_map(|unsent| async move { unsent })
            .collect()
            .await;
        for i in unsent {
            entries[i].unsent(fifo, &policy);
        }
        // A blocker is never blocked itself (it is its group's first failure), so its fate is
        // settled by now: come back together with it.
        for i in 0..entries.len() {
            if let Some(by) = entries[i].blocked_by {
                let blocker = entries.get(by).map(|b| b.fate);
                entries[i].decide(fifo, blocker.or(Some(Fate::Ack)), &policy);
            }
        }
        let changes: Vec<_> = entries
            .iter()
            .filter_map(|e| match e.fate {
                Fate::Fail { visibility_seconds } => Some((&e.message, visibility_seconds)),
                _ => None,
            })
            .collect();
        futures::stream::iter(changes)
            .for_each_concurrent(16, |(m, seconds)| self.change_visibility(m, seconds, hard))
            .await;
    }

    /// One send, bounded by `hard`: true when the message is in its queue.
    async fn send_by(
        &self,
        message: &Message,
        what: &str,
        url: &str,
        outgoing: OutgoingMessage,
        hard: Instant,
    ) -> bool {
        match tokio::time::timeout_at(hard.into(), self.queue.send(url, outgoing)).await {
            Ok(Ok(_)) => true,
            Ok(Err(e)) => {
                warn!(message_id = %message.id, code = e.code(), error = %e, what, "send failed, reporting the message failed instead");
                false
            }
            Err(_) => {
                warn!(message_id = %message.id, code = DEADLINE_CODE, what, "send not done by the deadline, reporting the message failed instead");
                false
            }
        }
    }

    async fn change_visibility(&self, message: &Message, seconds: u32, hard: Instant) {
        let (Some(url), Some(handle)) = (self.source_queue_url(message), message.receipt_handle.as_deref()) else {
            warn!(message_id = %message.id, "no queue URL or receipt handle: the queue's own visibility timeout applies");
            return;
        };
        match tokio::time::timeout_at(hard.into(), self.queue.change_visibility(&url, handle, seconds)).await {
            Ok(Ok(())) => {}
            // The message still comes back, only after the queue's visibility timeout.
            Ok(Err(e)) => {
                warn!(message_id = %message.id, code = e.code(), error = %e, "ChangeMessageVisibility failed")
            }
            Err(_) => {
                warn!(message_id = %message.id, code = DEADLINE_CODE, "ChangeMessageVisibility not done by the deadline")
            }
        }
    }

    /// Sends each message's follow-ups (unfinished re-derivations) to its source queue before
    /// the message can be acknowledged: `SendMessageBatch` calls of 10, 16 at a time, by the
    /// deadline. A message whose follow-ups could not all be sent fails as `sqs.follow_up_not_sent`,
    /// an environmental failure (SQS or the clock, not the message), so its work is redone
    /// rather than lost or dead-lettered (docs/sales-fact.md, "Fan-out"). On FIFO queues a
    /// follow-up joins its message's group, and its deduplication id is derived from its body
    /// (the signed task, deterministic): a retry's different follow-ups are never mistaken for
    /// the first attempt's.
    async fn send_follow_ups(&self, entries: &mut [Entry], deadline: Instant) {
        // (url, entry index, follow-up), in batch order.
        let mut outgoing: Vec<(String, usize, OutgoingMessage)> = Vec::new();
        let mut unsent: HashSet<usize> = HashSet::new();
        let mut counts: HashMap<usize, usize> = HashMap::new();
        for (index, Entry { message, report, .. }) in entries.iter_mut().enumerate() {
            if report.follow_ups.is_empty() || report.outcome.is_failure() {
                continue;
            }
            counts.insert(index, report.follow_ups.len());
            let Some(url) = self.source_queue_url(message) else {
                unsent.insert(index);
                continue;
            };
            for body in std::mem::take(&mut report.follow_ups) {
                let deduplication_id = message.group_id.as_ref().map(|group| follow_up_deduplication_id(group, &body));
                let follow_up = OutgoingMessage {
                    body,
                    group_id: message.group_id.clone(),
                    deduplication_id,
                    ..OutgoingMessage::default()
                };
                outgoing.push((url.clone(), index, follow_up));
            }
        }
        let mut batches: Vec<(String, Vec<usize>, Vec<OutgoingMessage>)> = Vec::new();
        for (url, index, follow_up) in outgoing {
            match batches.last_mut() {
                Some((last_url, owners, batch)) if *last_url == url && batch.len() < SEND_BATCH => {
                    owners.push(index);
                    batch.push(follow_up);
                }
                _ => batches.push((url, vec![index], vec![follow_up])),
            }
        }
        let sends = futures::stream::iter(batches)
            .map(|(url, owners, batch)| async move {
                let refused: Vec<usize> =
                    match tokio::time::timeout_at(deadline.into(), self.queue.send_batch(&url, batch)).await {
                        Ok(Ok(refused)) => refused.into_iter().filter_map(|i| owners.get(i).copied()).collect(),
                        Ok(Err(e)) => {
                            warn!(code = e.code(), error = %e, "follow-ups not sent");
                            owners
                        }
                        Err(_) => {
                            warn!(code = DEADLINE_CODE, "follow-ups not sent by the deadline");
                            owners
                        }
                    };
                refused
            })
            .buffer_unordered(16)
            .collect::<Vec<_>>()
            .await;
        unsent.extend(sends.into_iter().flatten());
        for (index, Entry { message, report, .. }) in entries.iter_mut().enumerate() {
            if unsent.contains(&index) {
                report.outcome = MessageOutcome::Failed {
                    class: ErrorClass::Transient,
                    code: FOLLOW_UP_NOT_SENT,
                    table: report.table.clone(),
                };
            } else if let Some(follow_ups) = counts.get(&index) {
                info!(message_id = %message.id, index, follow_ups, "re-derivation continues in follow-up messages");
            }
        }
    }
}

/// Messages per `SendMessageBatch` call (SQS's limit).
const SEND_BATCH: usize = 10;
/// A message whose follow-ups SQS did not take (environmental: `sqs.` is the environment's).
const FOLLOW_UP_NOT_SENT: &str = "sqs.follow_up_not_sent";

/// A FIFO follow-up's deduplication id: SHA-256 of its group and body, hex (64 of the 128
/// characters SQS allows). The same task in the same group is the same message; any other is not.
fn follow_up_deduplication_id(group: &str, body: &str) -> String {
    use sha2::Digest;
    let mut hash = sha2::Sha256::new();
    hash.update(group.as_bytes());
    hash.update([0u8]);
    hash.update(body.as_bytes());
    hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
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

    static PROCESSED: std::sync::LazyLock<Arc<std::sync::Mutex<Vec<String>>>> =
        std::sync::LazyLock::new(Default::default);

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
}
