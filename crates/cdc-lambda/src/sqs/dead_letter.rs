//! Dead-lettering poison messages at once, with diagnostics.
//!
//! Enters: a poison [`Message`] (its error code and table) and its original message attributes.
//! Leaves: the [`OutgoingMessage`] for the dead-letter queue: the body unchanged, the original
//! attributes kept, and diagnostic attributes added: `error_code`, `error_class`, `table`,
//! `original_message_id`, `receive_count`.
//!
//! Why not just let the queue's redrive policy do it: redrive moves a message only after
//! `maxReceiveCount` receives (minutes of retries for a message that can never succeed) and
//! carries no reason. When `DEAD_LETTER_QUEUE_URL` is set the handler sends the message here and
//! acknowledges it; if the send fails it falls back to reporting the message failed, so the
//! redrive policy still catches it. Only poison goes here: a systemic fault never does.

use std::collections::BTreeMap;

use crate::sqs::message::Message;
use crate::sqs::queue::{Attribute, OutgoingMessage};
use cdc_core::error::ErrorClass;

const ERROR_CODE: &str = "error_code";
const ERROR_CLASS: &str = "error_class";
const TABLE: &str = "table";
pub const ORIGINAL_MESSAGE_ID: &str = "original_message_id";
const RECEIVE_COUNT: &str = "receive_count";

/// The attributes this module adds; `redrive` removes them again so a redriven message looks as
/// it did originally.
pub const DIAGNOSTIC_ATTRIBUTES: [&str; 5] = [ERROR_CODE, ERROR_CLASS, TABLE, ORIGINAL_MESSAGE_ID, RECEIVE_COUNT];

/// SQS accepts at most 10 message attributes per message.
const MAX_ATTRIBUTES: usize = 10;

/// Why a message is dead-lettered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DeadLetter {
    pub(crate) code: &'static str,
    pub(crate) class: ErrorClass,
    pub(crate) table: Option<String>,
}

impl DeadLetter {
    pub(crate) fn poison(code: &'static str, table: Option<String>) -> Self {
        Self { code, class: ErrorClass::Poison, table }
    }

    /// Builds the message to send to `dead_letter_queue_url`. `original` are the message's own
    /// attributes (from the Lambda record or the receive); they are kept as long as SQS's limit of
    /// 10 attributes allows after the five diagnostics, in name order.
    pub(crate) fn to_outgoing(
        &self,
        message: &Message,
        original: &BTreeMap<String, Attribute>,
        dead_letter_queue_url: &str,
    ) -> OutgoingMessage {
        let mut attributes = BTreeMap::new();
        attributes.insert(ERROR_CODE.to_string(), Attribute::string(self.code));
        attributes.insert(ERROR_CLASS.to_string(), Attribute::string(self.class.as_str()));
        // Attribute values may not be empty: an undecodable body has no table.
        attributes.insert(TABLE.to_string(), Attribute::string(self.table.as_deref().unwrap_or("unknown")));
        attributes.insert(ORIGINAL_MESSAGE_ID.to_string(), Attribute::string(message.id.as_str()));
        attributes.insert(RECEIVE_COUNT.to_string(), Attribute::number(message.receive_count));
        for (name, value) in original {
            if attributes.len() >= MAX_ATTRIBUTES {
                break;
            }
            attributes.entry(name.clone()).or_insert_with(|| value.clone());
        }
        // A FIFO queue's DLQ must be FIFO too, and a FIFO send needs a group and (without
        // content-based deduplication) a deduplication id; the original id makes a retried send
        // idempotent within SQS's 5-minute deduplication window.
        let fifo = dead_letter_queue_url.ends_with(".fifo");
        OutgoingMessage {
            body: message.body.clone(),
            attributes,
            group_id: fifo.then(|| message.group_id.clone().unwrap_or_else(|| "dead-letter".to_string())),
            deduplication_id: fifo.then(|| message.id.as_str().to_string()),
            delay_seconds: None,
        }
    }
}

/// Converts a Lambda record's message attributes to the queue port's form.
pub(crate) fn lambda_attributes(record: &aws_lambda_events::sqs::SqsMessage) -> BTreeMap<String, Attribute> {
    record
        .message_attributes
        .iter()
        .filter_map(|(name, a)| {
            let data_type = a.data_type.clone()?;
            Some((
                name.clone(),
                Attribute {
                    data_type,
                    string_value: a.string_value.clone(),
                    binary_value: a.binary_value.as_ref().map(|b| b.0.clone()),
                },
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sqs::batch::tests::message;

    fn poison_message() -> Message {
        Message { body: "{not json".into(), receive_count: 3, ..message("m-1", None) }
    }

    #[test]
    fn diagnostics_are_attached_and_body_kept() {
        let out = DeadLetter::poison("body.not_json", Some("orders".into())).to_outgoing(
            &poison_message(),
            &BTreeMap::new(),
            "https://sqs.us-east-1.amazonaws.com/123456789012/cdc-dlq",
        );
        assert_eq!(out.body, "{not json");
        assert_eq!(out.attributes[ERROR_CODE], Attribute::string("body.not_json"));
        assert_eq!(out.attributes[ERROR_CLASS], Attribute::string("poison"));
        assert_eq!(out.attributes[TABLE], Attribute::string("orders"));
        assert_eq!(out.attributes[ORIGINAL_MESSAGE_ID], Attribute::string("m-1"));
        assert_eq!(out.attributes[RECEIVE_COUNT], Attribute::number(3));
        assert_eq!(out.attributes[RECEIVE_COUNT].data_type, "Number");
        assert_eq!(out.group_id, None);
        assert_eq!(out.deduplication_id, None);
    }

    #[test]
    fn unknown_table_is_never_an_empty_value() {
        let out = DeadLetter::poison("body.not_json", None).to_outgoing(&poison_message(), &BTreeMap::new(), "q");
        assert_eq!(out.attributes[TABLE], Attribute::string("unknown"));
    }

    #[test]
    fn original_attributes_are_kept_within_the_limit() {
        let mut original = BTreeMap::new();
        for i in 0..8 {
            original.insert(format!("attr{i}"), Attribute::string(format!("v{i}")));
        }
        original.insert(ERROR_CODE.to_string(), Attribute::string("should not overwrite"));
        let out = DeadLetter::poison("x.y", None).to_outgoing(&poison_message(), &original, "q");
        assert_eq!(out.attributes.len(), 10);
        assert_eq!(out.attributes[ERROR_CODE], Attribute::string("x.y"));
        assert!(out.attributes.contains_key("attr0"));
    }

    #[test]
    fn fifo_dead_letter_queue_gets_group_and_deduplication_id() {
        let mut m = poison_message();
        m.group_id = Some("orders".into());
        let out = DeadLetter::poison("x.y", None).to_outgoing(&m, &BTreeMap::new(), "https://q/cdc-dlq.fifo");
        assert_eq!(out.group_id.as_deref(), Some("orders"));
        assert_eq!(out.deduplication_id.as_deref(), Some("m-1"));
    }
}
