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
mod tests;
