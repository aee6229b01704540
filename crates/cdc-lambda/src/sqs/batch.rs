//! The partial batch response rules, standard and FIFO.
//!
//! Enters: the batch's [`Message`]s with their [`MessageOutcome`]s, in batch order. Leaves: for
//! each message, the earlier failure of its FIFO group that blocks it ([`blockers`], read by
//! `sqs::fate`), and, once fates are settled, the `SqsBatchResponse` Lambda reads.
//!
//! The rules (docs/platform-facts.md §2, AWS "Handling errors for an SQS event source in Lambda"):
//! - the response lists failed messages by `itemIdentifier`; an empty list means all succeeded;
//!   an empty, null or unknown identifier fails the WHOLE batch, so only ids of the batch's own
//!   (validated, non-empty) [`MessageId`]s ever go in;
//! - on a FIFO queue, once a message of a group fails, it and every later message of that group
//!   are reported failed, or the group's order would break.

use std::collections::{HashMap, HashSet};

use aws_lambda_events::sqs::SqsBatchResponse;

use crate::sqs::message::{Message, MessageId, MessageOutcome};
use cdc_core::error::{Classify, ErrorClass};

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

/// FIFO: for each message (in batch order), the index of the earlier message of its group that
/// failed in this batch, whatever its own outcome; `None` for every message of a standard queue.
///
/// Messages are taken in batch order (Lambda delivers each group's messages in order within a
/// batch); a message without a group id on a FIFO batch forms a group of its own key `""`, which
/// keeps the rule conservative if SQS ever omitted the attribute. Even a poison message
/// dead-lettered at once blocks the rest of its group in this invocation: reporting them failed
/// is always order-safe (rows carry versions, so processing them again is harmless).
pub(crate) fn blockers<'a>(
    fifo: bool,
    messages: impl IntoIterator<Item = (&'a Message, &'a MessageOutcome)>,
) -> Vec<Option<usize>> {
    // Group → index of its first failed message.
    let mut failed: HashMap<&str, usize> = HashMap::new();
    let mut blockers = Vec::new();
    for (i, (message, outcome)) in messages.into_iter().enumerate() {
        let group = message.group_id.as_deref().unwrap_or("");
        let blocker = if fifo { failed.get(group).copied() } else { None };
        if fifo && blocker.is_none() && outcome.is_failure() {
            failed.insert(group, i);
        }
        blockers.push(blocker);
    }
    blockers
}

/// Pairs each message with its report, the i-th with the i-th: the one place a batch is joined
/// by position. A count that does not match is refused rather than guessed.
pub(crate) fn pair<T>(messages: Vec<Message>, reports: Vec<T>) -> Result<Vec<(Message, T)>, BatchError> {
    if messages.len() != reports.len() {
        return Err(BatchError::OutcomeCount { expected: messages.len(), got: reports.len() });
    }
    Ok(messages.into_iter().zip(reports).collect())
}

/// The response Lambda reads: each failed id once, in batch order. Only ids of the batch can
/// appear, and [`MessageId`] is never empty, so no identifier can fail the whole batch.
pub(crate) fn response<'a>(
    batch: impl IntoIterator<Item = &'a MessageId>,
    failed: impl IntoIterator<Item = &'a MessageId>,
) -> SqsBatchResponse {
    let failed: HashSet<&MessageId> = failed.into_iter().collect();
    let mut seen = HashSet::new();
    let mut response = SqsBatchResponse::default();
    for id in batch {
        if failed.contains(id) && seen.insert(id) {
            response.add_failure(id.as_str());
        }
    }
    response
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A message as the event source mapping hands it over, for the tests of every `sqs`
    /// module: a standard queue's, or a FIFO queue's with `group`.
    pub(crate) fn message(id: &str, group: Option<&str>) -> Message {
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

    fn blockers_of(messages: &[Message], outcomes: &[MessageOutcome]) -> Vec<Option<usize>> {
        blockers(is_fifo(messages), messages.iter().zip(outcomes))
    }

    /// The ids a response lists when each message fails on its own or is blocked.
    fn failed_ids(messages: &[Message], outcomes: &[MessageOutcome]) -> Vec<String> {
        let blockers = blockers_of(messages, outcomes);
        let failed = messages.iter().zip(outcomes).zip(&blockers).filter(|((_, o), b)| o.is_failure() || b.is_some());
        response(messages.iter().map(|m| &m.id), failed.map(|((m, _), _)| &m.id))
            .batch_item_failures
            .into_iter()
            .map(|f| f.item_identifier)
            .collect()
    }

    #[test]
    fn standard_queue_fails_only_the_failed_messages() {
        let messages: Vec<_> = ["a", "b", "c", "d"].iter().map(|id| message(id, None)).collect();
        let outcomes = [OK, transient(), MessageOutcome::Skipped("tombstone"), poison()];
        assert_eq!(blockers_of(&messages, &outcomes), vec![None; 4]);
        assert_eq!(failed_ids(&messages, &outcomes), vec!["b", "d"]);
    }

    #[test]
    fn all_succeeded_is_an_empty_list() {
        let messages = vec![message("a", None), message("b", None)];
        let json = serde_json::to_value(response(messages.iter().map(|m| &m.id), std::iter::empty())).unwrap();
        assert_eq!(json, serde_json::json!({"batchItemFailures": []}));
        assert_eq!(failed_ids(&messages, &[OK, OK]), Vec::<String>::new());
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
        assert_eq!(blockers_of(&messages, &outcomes)[4], Some(2));
        assert_eq!(failed_ids(&messages, &outcomes), vec!["a2", "a3"]);
    }

    #[test]
    fn fifo_poison_blocks_its_group_too() {
        let messages = vec![message("a1", Some("A")), message("a2", Some("A")), message("b1", Some("B"))];
        assert_eq!(blockers_of(&messages, &[poison(), OK, OK]), vec![None, Some(0), None]);
    }

    #[test]
    fn a_group_is_blocked_by_its_first_failure_only() {
        let messages = vec![message("a1", Some("A")), message("a2", Some("A")), message("a3", Some("A"))];
        assert_eq!(blockers_of(&messages, &[transient(), poison(), OK]), vec![None, Some(0), Some(0)]);
    }

    #[test]
    fn fifo_is_recognised_from_the_arn_alone() {
        // Same group (none), FIFO by ARN: the later message is blocked.
        let mut messages = vec![message("a", None), message("b", None)];
        for m in &mut messages {
            m.source_arn = Some("arn:aws:sqs:us-east-1:123456789012:cdc.fifo".into());
        }
        assert!(is_fifo(&messages));
        assert_eq!(blockers_of(&messages, &[transient(), OK])[1], Some(0));
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
        assert_eq!(blockers_of(&messages, &[transient(), OK])[1], None);
    }

    #[test]
    fn duplicate_ids_are_reported_once() {
        let messages = [message("a", None), message("a", None)];
        let ids = || messages.iter().map(|m| &m.id);
        assert_eq!(response(ids(), ids()).batch_item_failures.len(), 1);
    }

    #[test]
    fn outcome_count_mismatch_is_an_error() {
        let messages = vec![message("a", None)];
        assert_eq!(
            pair(messages, Vec::<MessageOutcome>::new()).map(|_| ()),
            Err(BatchError::OutcomeCount { expected: 1, got: 0 })
        );
    }

    #[test]
    fn unknown_ids_never_reach_the_response() {
        let messages = [message("a", None)];
        let stranger = MessageId::new("zzz").unwrap();
        assert!(response(messages.iter().map(|m| &m.id), [&stranger]).batch_item_failures.is_empty());
    }
}
