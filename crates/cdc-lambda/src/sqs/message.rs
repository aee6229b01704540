//! One SQS record as the processor sees it, and what became of it.
//!
//! Enters: `aws_lambda_events::sqs::SqsMessage` (Lambda) or a received message (`poll`).
//! Leaves: [`Message`] (validated id, body, receive count, FIFO group) and, after processing,
//! one [`MessageOutcome`] per message.

use aws_lambda_events::sqs::SqsMessage;

use cdc_core::change::Op;
use cdc_core::error::ErrorClass;

/// A non-empty SQS message id. An empty or unknown `itemIdentifier` in a batch response makes
/// Lambda fail the whole batch (docs/platform-facts.md §2), so an id is checked once, here.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId(String);

impl MessageId {
    pub fn new(id: impl Into<String>) -> Option<Self> {
        let id = id.into();
        if id.trim().is_empty() { None } else { Some(Self(id)) }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for MessageId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// One message of a batch.
#[derive(Debug, Clone)]
pub struct Message {
    pub id: MessageId,
    /// The body exactly as SQS delivered it (never logged).
    pub body: String,
    /// `ApproximateReceiveCount` (1 on first delivery).
    pub receive_count: u32,
    /// `MessageGroupId` on FIFO queues.
    pub group_id: Option<String>,
    /// The receipt handle, needed to change the message's visibility.
    pub receipt_handle: Option<String>,
    /// The ARN of the queue the message came from.
    pub source_arn: Option<String>,
    /// `SentTimestamp`: when SQS accepted this copy (ms since the epoch). Set by SQS, so a
    /// producer cannot forge it; the retry age of an original starts here (`sqs::requeue`).
    pub sent_at_ms: Option<u64>,
}

impl Message {
    /// Builds a message from a Lambda SQS record, taking its body (a 6 MB batch is not copied);
    /// `None` when the record has no usable id (such a record cannot be reported, so the caller
    /// must fail the invocation instead).
    pub fn from_lambda(record: &mut SqsMessage) -> Option<Message> {
        // A FIFO record carries MessageGroupId among its system attributes (Lambda event
        // format); the `.fifo` ARN suffix is checked by `sqs::batch::is_fifo`.
        let id = MessageId::new(record.message_id.clone()?)?;
        let receive_count = record.attributes.get("ApproximateReceiveCount").and_then(|c| c.parse().ok()).unwrap_or(1);
        Some(Message {
            id,
            body: record.body.take().unwrap_or_default(),
            receive_count,
            group_id: record.attributes.get("MessageGroupId").cloned(),
            receipt_handle: record.receipt_handle.clone(),
            source_arn: record.event_source_arn.clone(),
            sent_at_ms: record.attributes.get("SentTimestamp").and_then(|t| t.parse().ok()),
        })
    }
}

/// What became of one message in one invocation.
#[derive(Debug, Clone, PartialEq)]
pub enum MessageOutcome {
    /// Its change is in ClickHouse (mirror and facts).
    Delivered,
    /// Valid, but no row change (tombstone, heartbeat, transaction marker, unknown table...).
    Skipped(&'static str),
    /// Failed; `class` says whether to retry (transient) or dead-letter (poison).
    Failed { class: ErrorClass, code: &'static str, table: Option<String> },
}

impl MessageOutcome {
    pub fn is_failure(&self) -> bool {
        matches!(self, MessageOutcome::Failed { .. })
    }

    /// `delivered`, `skipped`, `transient`, `poison` or `systemic`: the `outcome` dimension of
    /// the metrics and logs.
    pub(crate) fn label(&self) -> &'static str {
        match self {
            MessageOutcome::Delivered => "delivered",
            MessageOutcome::Skipped(_) => "skipped",
            MessageOutcome::Failed { class, .. } => class.as_str(),
        }
    }
}

/// An outcome plus what the pipeline knows about the message, for metrics and logs only (the
/// SQS rules look at `outcome` alone). Never holds row values or bodies.
///
/// `Process::process` returns one per message; a bare outcome converts with `From`.
#[derive(Debug, Clone, PartialEq)]
pub struct MessageReport {
    pub outcome: MessageOutcome,
    /// The source table (`orders`), when the body was decoded far enough to know it.
    pub(crate) table: Option<String>,
    /// The change's operation, when known.
    pub(crate) op: Option<Op>,
    /// Commit time of the change in the source database, µs since the epoch (Debezium
    /// `source.ts_us`/`ts_ms`, DMS `commit-timestamp`, platform `eventTimestamp`): the freshness
    /// metric is `now − commit_time`.
    pub(crate) commit_time_us: Option<i64>,
    /// Rows this message put into ClickHouse (mirror rows; facts are counted by the pipeline's
    /// own log line).
    pub(crate) rows_inserted: u64,
    /// The platform envelope's `correlationId` (or Debezium `txId`), for log correlation.
    pub(crate) correlation_id: Option<String>,
    /// Messages the handler must send to the source queue before it acknowledges this one:
    /// re-derivations that did not finish within the invocation (`rederive::Task` bodies).
    pub follow_ups: Vec<String>,
}

impl MessageReport {
    /// Rows this message put into ClickHouse (mirror rows).
    pub fn rows_inserted(&self) -> u64 {
        self.rows_inserted
    }

    pub fn new(outcome: MessageOutcome) -> Self {
        Self {
            outcome,
            table: None,
            op: None,
            commit_time_us: None,
            rows_inserted: 0,
            correlation_id: None,
            follow_ups: Vec::new(),
        }
    }

    /// The table, from the report or else from the failure.
    pub(crate) fn table(&self) -> Option<&str> {
        match (&self.table, &self.outcome) {
            (Some(t), _) => Some(t),
            (None, MessageOutcome::Failed { table: Some(t), .. }) => Some(t),
            _ => None,
        }
    }
}

impl From<MessageOutcome> for MessageReport {
    fn from(outcome: MessageOutcome) -> Self {
        MessageReport::new(outcome)
    }
}
