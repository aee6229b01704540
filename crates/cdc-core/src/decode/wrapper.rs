//! Envelopes that only carry another body: SNS (non-raw delivery) and EventBridge.
//!
//! Enters: a parsed top-level object. Leaves: the inner body's text (and what the wrapper knows
//! that the inner body may lack), or `None` when the object is not a wrapper. The caller decodes
//! the inner body again, a bounded number of times.

use std::borrow::Cow;

use super::raw::{self, RawObject};
use super::{DecodeError, string};

pub(crate) struct Inner<'a> {
    pub(crate) body: Cow<'a, str>,
    /// EventBridge `time` (ISO-8601), the event's own timestamp.
    pub(crate) time: Option<Cow<'a, str>>,
}

pub(crate) fn unwrap<'a>(top: &RawObject<'a>) -> Result<Option<Inner<'a>>, DecodeError> {
    // SNS → SQS without raw message delivery:
    // {"Type": "Notification", "MessageId": .., "Message": "<the body as a string>", ..}
    if let Some(kind) = string(top, "Type")?
        && (top.has("Message") || top.has("TopicArn"))
    {
        if kind != "Notification" {
            // SubscriptionConfirmation and friends carry no change.
            return Err(DecodeError::UnknownEnvelope);
        }
        let body = string(top, "Message")?.ok_or(DecodeError::MissingField("Message"))?;
        return Ok(Some(Inner { body, time: None }));
    }
    // EventBridge → SQS: {"version": "0", "id": .., "detail-type": .., "source": .., "time": ..,
    // "detail": {...}}.
    if top.has("detail-type") {
        let detail = top.get_some("detail").ok_or(DecodeError::MissingField("detail"))?;
        let body = match raw::as_str(detail) {
            // A detail that is itself a JSON document in a string.
            Some(text) => text,
            None if raw::is_object(detail) => Cow::Borrowed(detail.get()),
            None => return Err(DecodeError::BadField("detail")),
        };
        let time = string(top, "time")?;
        return Ok(Some(Inner { body, time }));
    }
    Ok(None)
}
