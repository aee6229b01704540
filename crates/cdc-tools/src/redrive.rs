//! `cdc-tools redrive`: moves dead-lettered messages back to the source queue.
//!
//! Enters: the DLQ and source queue URLs. Leaves: each DLQ message sent to the source queue with
//! its body and its original message attributes (the diagnostics `dead_letter` added are
//! dropped unless `--keep-diagnostics`), then deleted from the DLQ. A message is deleted only
//! after its send succeeded, so a failure leaves it in the DLQ (at-least-once, never lost).
//!
//! Receive/send/delete rather than `StartMessageMoveTask`: it works against any SQS endpoint
//! (moto included), can strip the diagnostics, and is bounded by `--max-messages`.

use std::time::Duration;

use tracing::info;

use cdc_lambda::sqs::dead_letter::{DIAGNOSTIC_ATTRIBUTES, ORIGINAL_MESSAGE_ID};
use cdc_lambda::sqs::queue::{OutgoingMessage, Queue, QueueError, ReceiveRequest, ReceivedMessage};

#[derive(Debug, Clone, clap::Args)]
pub struct RedriveArgs {
    /// The dead-letter queue to drain.
    #[arg(long, env = "DEAD_LETTER_QUEUE_URL")]
    dlq_url: String,
    /// The queue to move the messages back to.
    #[arg(long, env = "SOURCE_QUEUE_URL")]
    pub(crate) queue_url: String,
    /// Move at most this many messages.
    #[arg(long)]
    pub(crate) max_messages: Option<u64>,
    /// Keep the diagnostic attributes (error_code, error_class, table, ...) on the moved messages.
    #[arg(long)]
    keep_diagnostics: bool,
    /// Visibility timeout while a message is being moved.
    #[arg(long, default_value_t = 30)]
    pub(crate) visibility_timeout: u32,
}

impl RedriveArgs {
    pub fn new(dlq_url: impl Into<String>, queue_url: impl Into<String>) -> Self {
        Self {
            dlq_url: dlq_url.into(),
            queue_url: queue_url.into(),
            max_messages: None,
            keep_diagnostics: false,
            visibility_timeout: 30,
        }
    }
}

/// Runs `cdc-tools redrive` with the real SQS client (endpoint from `AWS_ENDPOINT_URL`).
pub async fn run(args: RedriveArgs) -> Result<u64, lambda_runtime::Error> {
    let clients = cdc_lambda::lambda::AwsClients::from_env().await;
    let moved = redrive(&cdc_lambda::sqs::queue::SqsQueue::new(clients.sqs), &args).await?;
    info!(moved, "redrive finished");
    Ok(moved)
}

/// Moves messages until the DLQ answers empty or `max_messages` moved; returns how many moved.
pub async fn redrive<Q: Queue>(queue: &Q, args: &RedriveArgs) -> Result<u64, QueueError> {
    let limit = args.max_messages.unwrap_or(u64::MAX);
    let mut moved = 0u64;
    while moved < limit {
        let request = ReceiveRequest {
            max_messages: (limit - moved).min(10) as u32,
            wait_time_seconds: 1,
            visibility_timeout_seconds: Some(args.visibility_timeout),
        };
        let batch = queue.receive(&args.dlq_url, request).await?;
        if batch.is_empty() {
            break;
        }
        for m in batch {
            queue.send(&args.queue_url, outgoing(&m, &args.queue_url, args.keep_diagnostics)).await?;
            queue.delete(&args.dlq_url, &m.receipt_handle).await?;
            info!(message_id = %m.message_id, "moved back to the source queue");
            moved += 1;
        }
        // A tiny pause keeps a long drain from hammering the endpoint.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(moved)
}

/// The message to send back.
fn outgoing(m: &ReceivedMessage, target_url: &str, keep_diagnostics: bool) -> OutgoingMessage {
    let attributes = m
        .attributes
        .iter()
        .filter(|(name, _)| keep_diagnostics || !DIAGNOSTIC_ATTRIBUTES.contains(&name.as_str()))
        // A redriven message starts its environmental backoff afresh.
        .filter(|(name, _)| name.as_str() != cdc_lambda::sqs::requeue::ATTEMPT)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let fifo = target_url.ends_with(".fifo");
    let original_id = m
        .attributes
        .get(ORIGINAL_MESSAGE_ID)
        .and_then(|a| a.string_value.clone())
        .unwrap_or_else(|| m.message_id.clone());
    OutgoingMessage {
        body: m.body.clone(),
        attributes,
        group_id: fifo.then(|| m.system_attributes.get("MessageGroupId").cloned().unwrap_or_else(|| "redrive".into())),
        // A new id per redrive: the original id may still sit in the target's 5-minute
        // deduplication window, which would silently drop the message.
        deduplication_id: fifo.then(|| format!("redrive-{original_id}-{}", m.message_id)),
        delay_seconds: None,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use cdc_lambda::sqs::queue::Attribute;
    use cdc_lambda::sqs::queue::fake::{Call, FakeQueue};

    fn dead(id: &str) -> ReceivedMessage {
        let mut attributes = BTreeMap::new();
        attributes.insert("error_code".to_string(), Attribute::string("body.not_json"));
        attributes.insert("original_message_id".to_string(), Attribute::string("orig"));
        attributes.insert("source".to_string(), Attribute::string("debezium"));
        ReceivedMessage {
            message_id: id.into(),
            receipt_handle: format!("rh-{id}"),
            body: "b".into(),
            ..Default::default()
        }
        .with_attributes(attributes)
    }

    trait With {
        fn with_attributes(self, a: BTreeMap<String, Attribute>) -> Self;
    }
    impl With for ReceivedMessage {
        fn with_attributes(mut self, a: BTreeMap<String, Attribute>) -> Self {
            self.attributes = a;
            self
        }
    }

    #[test]
    fn diagnostics_are_stripped_and_the_rest_kept() {
        let out = outgoing(&dead("x"), "https://q/src", false);
        assert_eq!(out.body, "b");
        assert_eq!(out.attributes.keys().collect::<Vec<_>>(), vec!["source"]);
        assert_eq!(out.group_id, None);
        let out = outgoing(&dead("x"), "https://q/src.fifo", true);
        assert_eq!(out.attributes.len(), 3);
        assert_eq!(out.group_id.as_deref(), Some("redrive"));
        assert_eq!(out.deduplication_id.as_deref(), Some("redrive-orig-x"));
    }

    #[test]
    fn a_redriven_copy_starts_its_outage_backoff_afresh() {
        let mut m = dead("x");
        m.attributes.insert(cdc_lambda::sqs::requeue::ATTEMPT.to_string(), Attribute::number(7));
        m.attributes.insert(cdc_lambda::sqs::requeue::FIRST_MESSAGE_ID.to_string(), Attribute::string("first"));
        let out = outgoing(&m, "https://q/src", false);
        assert!(!out.attributes.contains_key(cdc_lambda::sqs::requeue::ATTEMPT));
        assert!(out.attributes.contains_key(cdc_lambda::sqs::requeue::FIRST_MESSAGE_ID), "kept for tracing");
        assert_eq!(out.delay_seconds, None);
    }

    #[tokio::test]
    async fn moves_then_deletes_up_to_the_limit() {
        let queue = FakeQueue::default();
        queue.to_receive.lock().unwrap().extend([dead("a"), dead("b"), dead("c")]);
        let mut args = RedriveArgs::new("dlq", "src");
        args.max_messages = Some(2);
        assert_eq!(redrive(&queue, &args).await.unwrap(), 2);
        let calls = queue.calls();
        assert!(matches!(&calls[0], Call::Send(url, m) if url == "src" && m.body == "b"));
        assert_eq!(calls[1], Call::Delete("dlq".into(), "rh-a".into()));
        assert_eq!(calls.len(), 4);
    }

    #[tokio::test]
    async fn failed_send_deletes_nothing() {
        let queue = FakeQueue { failing_url: Some("src".into()), ..Default::default() };
        queue.to_receive.lock().unwrap().push(dead("a"));
        assert!(redrive(&queue, &RedriveArgs::new("dlq", "src")).await.is_err());
        assert!(queue.calls().is_empty());
    }
}
