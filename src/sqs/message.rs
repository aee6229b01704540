//! One SQS record as the processor sees it, and what became of it.
//!
//! Enters: `aws_lambda_events::sqs::SqsMessage` (Lambda) or a received message (`poll`).
//! Leaves: [`Message`] (validated id, body, receive count, FIFO group) and, after processing,
//! one [`MessageOutcome`] per message.

use aws_lambda_events::sqs::SqsMessage;

use crate::error::ErrorClass;

/// A non-empty SQS message id. An empty or unknown `itemIdentifier` in a batch response makes
/// Lambda fail the whole batch (NOTES §2), so an id is checked once, here.
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
}

impl Message {
    /// Builds a message from a Lambda SQS record; `None` when the record has no usable id (such a
    /// record cannot be reported, so the caller must fail the invocation instead).
    pub fn from_lambda(record: &SqsMessage) -> Option<Message> {
        let id = MessageId::new(record.message_id.clone()?)?;
        let receive_count = record
            .attributes
            .get("ApproximateReceiveCount")
            .and_then(|c| c.parse().ok())
            .unwrap_or(1);
        Some(Message {
            id,
            body: record.body.clone().unwrap_or_default(),
            receive_count,
            group_id: record.attributes.get("MessageGroupId").cloned(),
            receipt_handle: record.receipt_handle.clone(),
            source_arn: record.event_source_arn.clone(),
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
}
