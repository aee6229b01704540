//! The partial batch response rules, standard and FIFO.
//!
//! Enters: the batch's [`Message`]s and one [`MessageOutcome`] per message, in the same order.
//! Leaves: one [`Disposition`] per message (what to do with it) and, once dead-letter sends are
//! settled, the `SqsBatchResponse` Lambda reads.
//!
//! The rules (docs/platform-facts.md §2, AWS "Handling errors for an SQS event source in Lambda"):
//! - the response lists failed messages by `itemIdentifier`; an empty list means all succeeded;
//!   an empty, null or unknown identifier fails the WHOLE batch, so only ids of the batch's own
//!   (validated, non-empty) [`MessageId`]s ever go in;
//! - on a FIFO queue, once a message of a group fails, it and every later message of that group
//!   are reported failed, or the group's order would break.

use std::collections::{HashMap, HashSet};

use aws_lambda_events::sqs::SqsBatchResponse;

use crate::error::{Classify, ErrorClass};
use crate::sqs::message::{Message, MessageId, MessageOutcome};

/// What to do with one message after processing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    /// Delivered or skipped: acknowledge (leave it out of the failures).
    Ack,
    /// Failed transiently: report failed and back off its visibility.
    Retry,
    /// Can never succeed: dead-letter it at once when a DLQ is configured (then acknowledge),
    /// otherwise report it failed so the queue's redrive policy moves it.
    Poison { code: &'static str, table: Option<String> },
    /// FIFO only: an earlier message of the same group (index `by` in the batch) failed, so this
    /// one is reported failed whatever its own outcome, to come back after it in order.
    Blocked { by: usize },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BatchError {
    #[error("the pipeline returned {got} outcomes for {expected} messages")]
    OutcomeCount { expected: usize, got: usize },
}

impl Classify for BatchError {
    // A miscounted batch is a bug, not a message's fault: every message fails as systemic (and
    // comes back), rather than guess which outcome belongs to which message.
    fn class(&self) -> ErrorClass {
        ErrorClass::Systemic
    }
    fn code(&self) -> &'static str {
        "pipeline.outcome_count"
    }
}

/// True when the batch comes from a FIFO queue: the event source ARN ends in `.fifo` (FIFO
/// queue names must) or a record carries a `MessageGroupId`.
pub fn is_fifo(messages: &[Message]) -> bool {
    messages.iter().any(|m| m.group_id.is_some() || m.source_arn.as_deref().is_some_and(|arn| arn.ends_with(".fifo")))
}

/// Decides every message's disposition. The i-th outcome belongs to `messages[i]`.
///
/// On FIFO queues messages are taken in batch order (Lambda delivers each group's messages in
/// order within a batch); a message without a group id on a FIFO batch forms a group of its own
/// key `""`, which keeps the rule conservative if SQS ever omitted the attribute.
pub fn plan<'a>(
    messages: &[Message],
    outcomes: impl ExactSizeIterator<Item = &'a MessageOutcome>,
) -> Result<Vec<Disposition>, BatchError> {
    if messages.len() != outcomes.len() {
        return Err(BatchError::OutcomeCount { expected: messages.len(), got: outcomes.len() });
    }
    let fifo = is_fifo(messages);
    // Group → index of its first failed message.
    let mut blocked: HashMap<&str, usize> = HashMap::new();
    let mut plan = Vec::with_capacity(messages.len());
    for (i, (message, outcome)) in messages.iter().zip(outcomes).enumerate() {
        let group = message.group_id.as_deref().unwrap_or("");
        if fifo && let Some(&by) = blocked.get(group) {
            plan.push(Disposition::Blocked { by });
            continue;
        }
        let disposition = match outcome {
            MessageOutcome::Delivered | MessageOutcome::Skipped(_) => Disposition::Ack,
            MessageOutcome::Failed { class: ErrorClass::Poison, code, table } => {
                Disposition::Poison { code, table: table.clone() }
            }
            // A systemic outcome on one message should have been a `SystemicError` for the
            // whole batch; retrying it (never dead-lettering it) is the safe reading.
            MessageOutcome::Failed { class: ErrorClass::Transient | ErrorClass::Systemic, .. } => Disposition::Retry,
        };
        // Even a poison message dead-lettered at once blocks the rest of its group in this
        // invocation: they were processed concurrently with it, and reporting them failed is
        // always order-safe (rows carry versions, so processing them again is harmless).
        if fifo && disposition != Disposition::Ack {
            blocked.insert(group, i);
        }
        plan.push(disposition);
    }
    Ok(plan)
}

/// The response Lambda reads: each failed id once, in batch order. Only ids of `messages` can
/// appear, and [`MessageId`] is never empty, so no identifier can fail the whole batch.
pub fn response<'a>(messages: &'a [Message], failed: impl IntoIterator<Item = &'a MessageId>) -> SqsBatchResponse {
    let failed: HashSet<&MessageId> = failed.into_iter().collect();
    let mut seen = HashSet::new();
    let mut response = SqsBatchResponse::default();
    for message in messages {
        if failed.contains(&message.id) && seen.insert(&message.id) {
            response.add_failure(message.id.as_str());
        }
    }
    response
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn message(id: &str, group: Option<&str>) -> Message {
        Message {
            id: MessageId::new(id).unwrap(),
            body: String::new(),
            receive_count: 1,
            group_id: group.map(str::to_string),
            receipt_handle: Some(format!("rh-{id}")),
            source_arn: Some(if group.is_some() {
                "arn:aws:sqs:us-east-1:123456789012:cdc.fifo".into()
            } else {
                "arn:aws:sqs:us-east-1:123456789012:cdc".into()
            }),
            sent_at_ms: None,
        }
    }

    const OK: MessageOutcome = MessageOutcome::Delivered;

    fn transient() -> MessageOutcome {
        MessageOutcome::Failed { class: ErrorClass::Transient, code: "clickhouse.timeout", table: None }
    }

    fn poison() -> MessageOutcome {
        MessageOutcome::Failed { class: ErrorClass::Poison, code: "body.not_json", table: Some("orders".into()) }
    }

    fn failed_ids(messages: &[Message], plan: &[Disposition]) -> Vec<String> {
        let failed = messages.iter().zip(plan).filter(|(_, d)| **d != Disposition::Ack).map(|(m, _)| &m.id);
        response(messages, failed).batch_item_failures.into_iter().map(|f| f.item_identifier).collect()
    }

    #[test]
    fn standard_queue_fails_only_the_failed_messages() {
        let messages: Vec<_> = ["a", "b", "c", "d"].iter().map(|id| message(id, None)).collect();
        let outcomes = [OK, transient(), MessageOutcome::Skipped("tombstone"), poison()];
        let plan = plan(&messages, outcomes.iter()).unwrap();
        assert_eq!(plan[0], Disposition::Ack);
        assert_eq!(plan[1], Disposition::Retry);
        assert_eq!(plan[2], Disposition::Ack);
        assert_eq!(plan[3], Disposition::Poison { code: "body.not_json", table: Some("orders".into()) });
        assert_eq!(failed_ids(&messages, &plan), vec!["b", "d"]);
    }

    #[test]
    fn all_succeeded_is_an_empty_list() {
        let messages = vec![message("a", None), message("b", None)];
        let plan = plan(&messages, [OK, OK].iter()).unwrap();
        let json = serde_json::to_value(response(&messages, std::iter::empty())).unwrap();
        assert_eq!(json, serde_json::json!({"batchItemFailures": []}));
        assert_eq!(failed_ids(&messages, &plan), Vec::<String>::new());
    }

    #[test]
    fn fifo_failure_fails_the_rest_of_its_group_only() {
        let messages = vec![
            message("a1", Some("A")),
            message("b1", Some("B")),
            message("a2", Some("A")),
            message("b2", Some("B")),
            message("a3", Some("A")),
            message("b3", Some("B")),
        ];
        let outcomes = [OK, OK, transient(), OK, OK, OK];
        let plan = plan(&messages, outcomes.iter()).unwrap();
        assert_eq!(plan[4], Disposition::Blocked { by: 2 });
        assert_eq!(failed_ids(&messages, &plan), vec!["a2", "a3"]);
    }

    #[test]
    fn fifo_poison_blocks_its_group_too() {
        let messages = vec![message("a1", Some("A")), message("a2", Some("A")), message("b1", Some("B"))];
        let plan = plan(&messages, [poison(), OK, OK].iter()).unwrap();
        assert!(matches!(plan[0], Disposition::Poison { .. }));
        assert_eq!(plan[1], Disposition::Blocked { by: 0 });
        assert_eq!(plan[2], Disposition::Ack);
    }

    #[test]
    fn fifo_is_recognised_from_the_arn_alone() {
        // Same group (none), FIFO by ARN: the later message is blocked.
        let mut messages = vec![message("a", None), message("b", None)];
        for m in &mut messages {
            m.source_arn = Some("arn:aws:sqs:us-east-1:123456789012:cdc.fifo".into());
        }
        assert!(is_fifo(&messages));
        let plan = plan(&messages, [transient(), OK].iter()).unwrap();
        assert_eq!(plan[1], Disposition::Blocked { by: 0 });
    }

    #[test]
    fn fifo_is_recognised_from_the_group_attribute_alone() {
        let mut messages = vec![message("a", Some("G")), message("b", Some("G"))];
        for m in &mut messages {
            m.source_arn = None;
        }
        assert!(is_fifo(&messages));
        assert!(!is_fifo(&[message("x", None)]));
    }

    #[test]
    fn standard_queue_never_blocks() {
        let messages = vec![message("a", None), message("b", None)];
        assert_eq!(plan(&messages, [transient(), OK].iter()).unwrap()[1], Disposition::Ack);
    }

    #[test]
    fn outcome_count_mismatch_is_an_error() {
        let messages = vec![message("a", None)];
        assert_eq!(plan(&messages, [].iter()), Err(BatchError::OutcomeCount { expected: 1, got: 0 }));
    }

    #[test]
    fn duplicate_ids_are_reported_once() {
        let messages = vec![message("a", None), message("a", None)];
        let resp = response(&messages, messages.iter().map(|m| &m.id));
        assert_eq!(resp.batch_item_failures.len(), 1);
    }

    #[test]
    fn unknown_ids_never_reach_the_response() {
        let messages = vec![message("a", None)];
        let stranger = MessageId::new("zzz").unwrap();
        assert!(response(&messages, [&stranger]).batch_item_failures.is_empty());
    }
}
