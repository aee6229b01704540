//! Outages cost latency, never a DLQ trip: environmental failures re-send a fresh copy.
//!
//! Enters: a message that failed for a reason outside itself (ClickHouse unreachable, timing out,
//! refusing credentials, TLS, a configuration not set yet, the invocation's deadline) and its
//! original message attributes. Leaves: the [`OutgoingMessage`] to send to the SOURCE queue: the
//! body unchanged, the attributes kept, an attempt counter (`cdc_attempt`) and the first copy's
//! message id (`cdc_first_message_id`) added, and a delay from the backoff (at most 15 minutes,
//! SQS's limit for `DelaySeconds`). Once it is sent, the original is acknowledged.
//!
//! Why: SQS counts every receive toward `maxReceiveCount`; a failed message reported back comes
//! back with a higher count, so an outage longer than the sum of the backoff delays would push
//! every healthy message into the DLQ. A fresh copy starts at receive count 1 (and with a fresh
//! retention period), so an outage of any length costs only latency, while the attempt counter
//! keeps the backoff growing. Poison never comes here: it is dead-lettered after its own
//! retries. FIFO queues never come here either: a copy would join the back of its group, behind
//! later changes, and FIFO queues refuse per-message delays (docs/error-policy.md, "FIFO").

use std::collections::BTreeMap;

use crate::sqs::message::Message;
use crate::sqs::queue::{Attribute, OutgoingMessage};

/// Environmental failures this message has already met (0 for an original).
pub const ATTEMPT: &str = "cdc_attempt";
/// When the message was first seen (ms since the epoch): the original's `SentTimestamp`. Its
/// copies stop at the retry age (`RETRY_MAX_AGE_SECONDS`) and go to the DLQ as `retry.expired`.
pub(crate) const FIRST_SEEN: &str = "cdc_first_seen_ms";
/// The message id of the first copy, so logs of every copy can be tied together.
pub const FIRST_MESSAGE_ID: &str = "cdc_first_message_id";

/// SQS's limit for `DelaySeconds`.
pub(crate) const MAX_DELAY_SECONDS: u32 = 900;
/// SQS accepts at most 10 message attributes per message.
const MAX_ATTRIBUTES: usize = 10;
/// The default retry age: well above the one-hour outage the design rides out, well inside the
/// queues' 14-day retention (docs/error-policy.md, "Bounded").
pub(crate) const DEFAULT_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(24 * 3600);
/// The code of a message whose environment failed for longer than the retry age.
pub const EXPIRED_CODE: &str = "retry.expired";

/// The attempt counter a message carries (0 when absent or unreadable).
pub(crate) fn attempt(attributes: &BTreeMap<String, Attribute>) -> u32 {
    attributes.get(ATTEMPT).and_then(|a| a.string_value.as_deref()).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
}

/// When the message was first seen: the earliest of the copy's attribute, this message's
/// `SentTimestamp` and now. A producer may set the attribute on an original; a time in the past
/// only expires its own message sooner, and one later than the message was sent is ignored, so
/// no attribute value stretches a message's retries past the age.
fn first_seen_ms(message: &Message, attributes: &BTreeMap<String, Attribute>, now_ms: u64) -> u64 {
    let attribute =
        attributes.get(FIRST_SEEN).and_then(|a| a.string_value.as_deref()).and_then(|v| v.trim().parse::<u64>().ok());
    [attribute, message.sent_at_ms].into_iter().flatten().fold(now_ms, u64::min)
}

/// How long the message has been retried for: since it was first seen.
pub(crate) fn age(message: &Message, attributes: &BTreeMap<String, Attribute>, now_ms: u64) -> std::time::Duration {
    std::time::Duration::from_millis(now_ms - first_seen_ms(message, attributes, now_ms))
}

/// True when the message has been retried for the environment longer than `max_age`.
#[cfg(test)]
pub(crate) fn expired(
    message: &Message,
    attributes: &BTreeMap<String, Attribute>,
    now_ms: u64,
    max_age: std::time::Duration,
) -> bool {
    age(message, attributes, now_ms) > max_age
}

/// The copy to send to the source queue, delayed by `delay_seconds` (clamped to SQS's 900 s);
/// `None` when the attributes leave no room for the counter and the first-seen time (SQS allows
/// 10), in which case the caller reports the message failed instead.
pub(crate) fn copy(
    message: &Message,
    original: &BTreeMap<String, Attribute>,
    delay_seconds: u32,
    now_ms: u64,
) -> Option<OutgoingMessage> {
    let mut attributes = original.clone();
    attributes.insert(ATTEMPT.to_string(), Attribute::number(attempt(original).saturating_add(1)));
    attributes.insert(FIRST_SEEN.to_string(), Attribute::number(first_seen_ms(message, original, now_ms)));
    if !attributes.contains_key(FIRST_MESSAGE_ID) && attributes.len() < MAX_ATTRIBUTES {
        attributes.insert(FIRST_MESSAGE_ID.to_string(), Attribute::string(message.id.as_str()));
    }
    if attributes.len() > MAX_ATTRIBUTES {
        return None;
    }
    Some(OutgoingMessage {
        body: message.body.clone(),
        attributes,
        group_id: None,
        deduplication_id: None,
        delay_seconds: Some(delay_seconds.min(MAX_DELAY_SECONDS)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sqs::batch;
    use crate::sqs::message::MessageId;

    const NOW: u64 = 1_800_000_000_000;

    fn message() -> Message {
        Message { body: "{\"op\":\"c\"}".into(), source_arn: None, ..batch::tests::message("m-1", None) }
    }

    #[test]
    fn copy_counts_attempts_keeps_attributes_and_first_id() {
        let mut original = BTreeMap::new();
        original.insert("source".to_string(), Attribute::string("debezium"));
        let first = copy(&message(), &original, 60, NOW).unwrap();
        assert_eq!(first.body, message().body);
        assert_eq!(first.attributes[ATTEMPT], Attribute::number(1));
        assert_eq!(first.attributes[FIRST_MESSAGE_ID], Attribute::string("m-1"));
        assert_eq!(first.attributes["source"], Attribute::string("debezium"));
        assert_eq!(first.delay_seconds, Some(60));
        // The copy of the copy: counter 2, first id unchanged, delay clamped to SQS's limit.
        let mut second_message = message();
        second_message.id = MessageId::new("m-2").unwrap();
        let second = copy(&second_message, &first.attributes, 5000, NOW + 1_000).unwrap();
        assert_eq!(attempt(&second.attributes), 2);
        assert_eq!(second.attributes[FIRST_MESSAGE_ID], Attribute::string("m-1"));
        assert_eq!(second.attributes[FIRST_SEEN], Attribute::number(NOW), "the first copy's time is kept");
        assert_eq!(second.delay_seconds, Some(MAX_DELAY_SECONDS));
    }

    #[test]
    fn no_room_for_the_counter_means_no_copy() {
        let mut original = BTreeMap::new();
        for i in 0..9 {
            original.insert(format!("a{i}"), Attribute::string("v"));
        }
        assert!(copy(&message(), &original, 10, NOW).is_none());
        original.remove("a0");
        let c = copy(&message(), &original, 10, NOW).unwrap();
        assert_eq!(c.attributes.len(), 10);
        assert!(!c.attributes.contains_key(FIRST_MESSAGE_ID), "the counter wins over the first id");
    }

    #[test]
    fn the_age_starts_at_sqs_own_sent_time_and_no_attribute_stretches_it() {
        let mut m = message();
        m.sent_at_ms = Some(NOW - 10_000);
        let day = std::time::Duration::from_secs(86_400);
        assert_eq!(first_seen_ms(&m, &BTreeMap::new(), NOW), NOW - 10_000);
        assert!(!expired(&m, &BTreeMap::new(), NOW, day));
        assert!(expired(&m, &BTreeMap::new(), NOW + 86_400_000, day));
        // A producer's time later than the message was sent is ignored; its copy ages normally.
        let mut forged = BTreeMap::new();
        forged.insert(FIRST_SEEN.to_string(), Attribute::number(u64::MAX));
        forged.insert(ATTEMPT.to_string(), Attribute::number(u32::MAX));
        assert_eq!(first_seen_ms(&m, &forged, NOW), NOW - 10_000);
        let c = copy(&m, &forged, u32::MAX, NOW).unwrap();
        assert_eq!(c.delay_seconds, Some(MAX_DELAY_SECONDS), "no counter stretches a delay past SQS's cap");
        assert_eq!(c.attributes[FIRST_SEEN], Attribute::number(NOW - 10_000));
        assert!(expired(&m, &c.attributes, NOW + 86_400_000, day));
        m.sent_at_ms = None;
        assert_eq!(first_seen_ms(&m, &forged, NOW), NOW, "without a sent time, never later than now");
        // A producer's time in the past only expires its own message sooner.
        forged.insert(FIRST_SEEN.to_string(), Attribute::number(0));
        assert!(expired(&m, &forged, NOW, day));
    }

    #[test]
    fn unreadable_counters_count_as_zero() {
        let mut a = BTreeMap::new();
        a.insert(ATTEMPT.to_string(), Attribute::string("many"));
        assert_eq!(attempt(&a), 0);
    }
}
