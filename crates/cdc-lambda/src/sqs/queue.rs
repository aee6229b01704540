//! The queue port: the few SQS operations the processor uses, as a small trait.
//!
//! Enters: queue URLs, receipt handles, outgoing messages. Leaves: received messages, queue
//! facts. [`SqsQueue`] is the real adapter (aws-sdk-sqs, any endpoint: AWS or moto); the batch
//! logic and the handler are tested against the in-memory fake in `#[cfg(test)] fake`.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;

use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::primitives::Blob;
use aws_sdk_sqs::types::{
    DeleteMessageBatchRequestEntry, MessageAttributeValue, MessageSystemAttributeName, QueueAttributeName,
    SendMessageBatchRequestEntry,
};

use cdc_core::error::{Classify, ErrorClass};

/// A message attribute (`DataType` `String`, `Number` or `Binary`, optionally with a custom
/// suffix such as `String.json`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribute {
    pub data_type: String,
    pub string_value: Option<String>,
    pub binary_value: Option<Vec<u8>>,
}

impl Attribute {
    pub fn string(value: impl Into<String>) -> Self {
        Self { data_type: "String".into(), string_value: Some(value.into()), binary_value: None }
    }

    pub fn number(value: impl std::fmt::Display) -> Self {
        Self { data_type: "Number".into(), string_value: Some(value.to_string()), binary_value: None }
    }
}

/// A message to send.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OutgoingMessage {
    pub body: String,
    pub attributes: BTreeMap<String, Attribute>,
    /// Required by FIFO queues.
    pub group_id: Option<String>,
    /// FIFO queues without content-based deduplication need one.
    pub deduplication_id: Option<String>,
    /// `DelaySeconds` (0..=900; standard queues only).
    pub delay_seconds: Option<u32>,
}

/// A message as `ReceiveMessage` returned it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReceivedMessage {
    pub message_id: String,
    pub receipt_handle: String,
    pub body: String,
    pub md5_of_body: Option<String>,
    /// System attributes by their wire names (`ApproximateReceiveCount`, `SentTimestamp`,
    /// `MessageGroupId`...).
    pub system_attributes: HashMap<String, String>,
    pub attributes: BTreeMap<String, Attribute>,
}

/// How to receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceiveRequest {
    /// 1..=10 (an SQS limit per call).
    pub max_messages: u32,
    pub wait_time_seconds: u32,
    pub visibility_timeout_seconds: Option<u32>,
}

/// Facts about a queue.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct QueueInfo {
    pub arn: String,
    pub visible: u64,
    pub in_flight: u64,
    pub delayed: u64,
}

#[derive(Debug, thiserror::Error)]
#[error("sqs {operation} failed: {detail}")]
pub struct QueueError {
    operation: &'static str,
    /// The SDK's error text: service error code and message, never a message body.
    pub(crate) detail: String,
}

impl Classify for QueueError {
    // Every SQS failure we meet (throttling, network, a deleted queue) is worth retrying later;
    // none of them says anything about the message itself.
    fn class(&self) -> ErrorClass {
        ErrorClass::Transient
    }
    fn code(&self) -> &'static str {
        "sqs.request_failed"
    }
}

/// The queue operations the processor needs.
pub trait Queue: Send + Sync {
    fn receive(
        &self,
        queue_url: &str,
        request: ReceiveRequest,
    ) -> impl Future<Output = Result<Vec<ReceivedMessage>, QueueError>> + Send;

    /// Returns the new message's id.
    fn send(
        &self,
        queue_url: &str,
        message: OutgoingMessage,
    ) -> impl Future<Output = Result<String, QueueError>> + Send;

    fn delete(&self, queue_url: &str, receipt_handle: &str) -> impl Future<Output = Result<(), QueueError>> + Send;

    /// Deletes up to 10 messages in one call (`DeleteMessageBatch`); returns the receipt handles
    /// the queue did NOT delete (they come back and are processed again, harmlessly). The default
    /// deletes one by one.
    fn delete_batch(
        &self,
        queue_url: &str,
        receipt_handles: &[String],
    ) -> impl Future<Output = Result<Vec<String>, QueueError>> + Send {
        async move {
            let mut not_deleted = Vec::new();
            for handle in receipt_handles {
                if self.delete(queue_url, handle).await.is_err() {
                    not_deleted.push(handle.clone());
                }
            }
            Ok(not_deleted)
        }
    }

    /// Sends up to 10 messages in one call (`SendMessageBatch`); returns the indices (into
    /// `messages`) the queue did NOT accept. The default sends one by one.
    fn send_batch(
        &self,
        queue_url: &str,
        messages: Vec<OutgoingMessage>,
    ) -> impl Future<Output = Result<Vec<usize>, QueueError>> + Send {
        async move {
            let mut refused = Vec::new();
            for (i, message) in messages.into_iter().enumerate() {
                if self.send(queue_url, message).await.is_err() {
                    refused.push(i);
                }
            }
            Ok(refused)
        }
    }

    fn change_visibility(
        &self,
        queue_url: &str,
        receipt_handle: &str,
        seconds: u32,
    ) -> impl Future<Output = Result<(), QueueError>> + Send;

    fn info(&self, queue_url: &str) -> impl Future<Output = Result<QueueInfo, QueueError>> + Send;
}

/// The real adapter over aws-sdk-sqs. The endpoint comes from the SDK configuration
/// (`AWS_ENDPOINT_URL` / `AWS_ENDPOINT_URL_SQS` point it at moto).
#[derive(Debug, Clone)]
pub struct SqsQueue {
    client: aws_sdk_sqs::Client,
}

impl SqsQueue {
    pub fn new(client: aws_sdk_sqs::Client) -> Self {
        Self { client }
    }
}

fn err<E: std::error::Error>(operation: &'static str, e: E) -> QueueError {
    QueueError { operation, detail: DisplayErrorContext(e).to_string() }
}

fn to_sdk_attribute(a: &Attribute) -> Result<MessageAttributeValue, QueueError> {
    MessageAttributeValue::builder()
        .data_type(&a.data_type)
        .set_string_value(a.string_value.clone())
        .set_binary_value(a.binary_value.clone().map(Blob::new))
        .build()
        .map_err(|e| err("SendMessage", e))
}

fn from_sdk_attribute(a: &MessageAttributeValue) -> Attribute {
    Attribute {
        data_type: a.data_type().to_string(),
        string_value: a.string_value().map(str::to_string),
        binary_value: a.binary_value().map(|b| b.as_ref().to_vec()),
    }
}

impl Queue for SqsQueue {
    async fn receive(&self, queue_url: &str, request: ReceiveRequest) -> Result<Vec<ReceivedMessage>, QueueError> {
        let out = self
            .client
            .receive_message()
            .queue_url(queue_url)
            .max_number_of_messages(request.max_messages.clamp(1, 10) as i32)
            .wait_time_seconds(request.wait_time_seconds.min(20) as i32)
            .set_visibility_timeout(request.visibility_timeout_seconds.map(|v| v as i32))
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .message_attribute_names("All")
            .send()
            .await
            .map_err(|e| err("ReceiveMessage", e))?;
        let mut received = Vec::new();
        for m in out.messages() {
            // A message without id or receipt handle cannot be acknowledged: leave it to come
            // back rather than invent an identifier (docs/platform-facts.md §2).
            let (Some(id), Some(handle)) = (m.message_id(), m.receipt_handle()) else { continue };
            received.push(ReceivedMessage {
                message_id: id.to_string(),
                receipt_handle: handle.to_string(),
                body: m.body().unwrap_or_default().to_string(),
                md5_of_body: m.md5_of_body().map(str::to_string),
                system_attributes: m
                    .attributes()
                    .map(|a| a.iter().map(|(k, v)| (k.as_str().to_string(), v.clone())).collect())
                    .unwrap_or_default(),
                attributes: m
                    .message_attributes()
                    .map(|a| a.iter().map(|(k, v)| (k.clone(), from_sdk_attribute(v))).collect())
                    .unwrap_or_default(),
            });
        }
        Ok(received)
    }

    async fn send(&self, queue_url: &str, message: OutgoingMessage) -> Result<String, QueueError> {
        let mut attributes = HashMap::new();
        for (name, value) in &message.attributes {
            attributes.insert(name.clone(), to_sdk_attribute(value)?);
        }
        let out = self
            .client
            .send_message()
            .queue_url(queue_url)
            .message_body(message.body)
            .set_message_attributes((!attributes.is_empty()).then_some(attributes))
            .set_message_group_id(message.group_id)
            .set_message_deduplication_id(message.deduplication_id)
            .set_delay_seconds(message.delay_seconds.map(|d| d.min(900) as i32))
            .send()
            .await
            .map_err(|e| err("SendMessage", e))?;
        Ok(out.message_id().unwrap_or_default().to_string())
    }

    async fn send_batch(&self, queue_url: &str, messages: Vec<OutgoingMessage>) -> Result<Vec<usize>, QueueError> {
        if messages.is_empty() {
            return Ok(Vec::new());
        }
        let count = messages.len();
        let mut entries = Vec::with_capacity(count);
        for (i, message) in messages.into_iter().enumerate() {
            let mut attributes = HashMap::new();
            for (name, value) in &message.attributes {
                attributes.insert(name.clone(), to_sdk_attribute(value)?);
            }
            let entry = SendMessageBatchRequestEntry::builder()
                .id(i.to_string())
                .message_body(message.body)
                .set_message_attributes((!attributes.is_empty()).then_some(attributes))
                .set_message_group_id(message.group_id)
                .set_message_deduplication_id(message.deduplication_id)
                .set_delay_seconds(message.delay_seconds.map(|d| d.min(900) as i32))
                .build()
                .map_err(|e| err("SendMessageBatch", e))?;
            entries.push(entry);
        }
        let out = self
            .client
            .send_message_batch()
            .queue_url(queue_url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| err("SendMessageBatch", e))?;
        // Whatever the queue did not report as sent counts as refused.
        let sent: std::collections::HashSet<usize> =
            out.successful().iter().filter_map(|entry| entry.id().parse().ok()).collect();
        Ok((0..count).filter(|i| !sent.contains(i)).collect())
    }

    async fn delete(&self, queue_url: &str, receipt_handle: &str) -> Result<(), QueueError> {
        self.client
            .delete_message()
            .queue_url(queue_url)
            .receipt_handle(receipt_handle)
            .send()
            .await
            .map_err(|e| err("DeleteMessage", e))?;
        Ok(())
    }

    async fn delete_batch(&self, queue_url: &str, receipt_handles: &[String]) -> Result<Vec<String>, QueueError> {
        if receipt_handles.is_empty() {
            return Ok(Vec::new());
        }
        let entries = receipt_handles
            .iter()
            .enumerate()
            .map(|(i, handle)| {
                DeleteMessageBatchRequestEntry::builder().id(i.to_string()).receipt_handle(handle).build()
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| err("DeleteMessageBatch", e))?;
        let out = self
            .client
            .delete_message_batch()
            .queue_url(queue_url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| err("DeleteMessageBatch", e))?;
        Ok(out
            .failed()
            .iter()
            .filter_map(|f| f.id().parse::<usize>().ok())
            .filter_map(|i| receipt_handles.get(i).cloned())
            .collect())
    }

    async fn change_visibility(&self, queue_url: &str, receipt_handle: &str, seconds: u32) -> Result<(), QueueError> {
        self.client
            .change_message_visibility()
            .queue_url(queue_url)
            .receipt_handle(receipt_handle)
            .visibility_timeout(seconds.min(super::backoff::MAX_VISIBILITY_SECONDS) as i32)
            .send()
            .await
            .map_err(|e| err("ChangeMessageVisibility", e))?;
        Ok(())
    }

    async fn info(&self, queue_url: &str) -> Result<QueueInfo, QueueError> {
        let out = self
            .client
            .get_queue_attributes()
            .queue_url(queue_url)
            .attribute_names(QueueAttributeName::QueueArn)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesDelayed)
            .send()
            .await
            .map_err(|e| err("GetQueueAttributes", e))?;
        let attrs = out.attributes();
        let get = |name: QueueAttributeName| attrs.and_then(|a| a.get(&name)).cloned().unwrap_or_default();
        let count = |name: QueueAttributeName| get(name).parse().unwrap_or(0);
        Ok(QueueInfo {
            arn: get(QueueAttributeName::QueueArn),
            visible: count(QueueAttributeName::ApproximateNumberOfMessages),
            in_flight: count(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
            delayed: count(QueueAttributeName::ApproximateNumberOfMessagesDelayed),
        })
    }
}

/// Derives a queue URL from its ARN (`arn:aws:sqs:REGION:ACCOUNT:NAME`) for the public SQS
/// endpoint. With a custom endpoint (moto) the SDK sends the request there anyway and the
/// service reads the queue name from the URL's path, so the derived URL works too.
pub(crate) fn url_from_arn(arn: &str) -> Option<String> {
    let mut parts = arn.split(':');
    let (Some("arn"), Some(partition), Some("sqs"), Some(region), Some(account), Some(name), None) =
        (parts.next(), parts.next(), parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    if region.is_empty() || account.is_empty() || name.is_empty() {
        return None;
    }
    let domain = if partition == "aws-cn" { "amazonaws.com.cn" } else { "amazonaws.com" };
    Some(format!("https://sqs.{region}.{domain}/{account}/{name}"))
}

/// An in-memory queue that records every call, for unit tests of the SQS logic (here and in
/// `cdc-tools`, through the `fakes` feature).
#[cfg(any(test, feature = "fakes"))]
pub mod fake {
    use std::sync::Mutex;

    use super::*;

    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum Call {
        Send(String, OutgoingMessage),
        Delete(String, String),
        Visibility(String, String, u32),
    }

    #[derive(Default)]
    pub struct FakeQueue {
        pub calls: Mutex<Vec<Call>>,
        /// Sends to this URL fail.
        pub failing_url: Option<String>,
        /// Sends of a body starting with this fail (one kind of message refused, others taken).
        pub failing_body: Option<String>,
        /// Every call first waits this long (a slow or hanging SQS).
        pub delay: Option<std::time::Duration>,
        pub to_receive: Mutex<Vec<ReceivedMessage>>,
    }

    impl FakeQueue {
        pub fn calls(&self) -> Vec<Call> {
            self.calls.lock().unwrap().clone()
        }
        fn record(&self, call: Call) {
            self.calls.lock().unwrap().push(call);
        }
        async fn wait(&self) {
            if let Some(d) = self.delay {
                tokio::time::sleep(d).await;
            }
        }
    }

    impl Queue for FakeQueue {
        async fn receive(&self, _url: &str, request: ReceiveRequest) -> Result<Vec<ReceivedMessage>, QueueError> {
            let mut pending = self.to_receive.lock().unwrap();
            let n = (request.max_messages as usize).min(pending.len());
            Ok(pending.drain(..n).collect())
        }
        async fn send(&self, url: &str, message: OutgoingMessage) -> Result<String, QueueError> {
            self.wait().await;
            let refused_body = self.failing_body.as_deref().is_some_and(|prefix| message.body.starts_with(prefix));
            if self.failing_url.as_deref() == Some(url) || refused_body {
                return Err(QueueError { operation: "SendMessage", detail: "fake failure".into() });
            }
            self.record(Call::Send(url.into(), message));
            Ok("fake-id".into())
        }
        async fn delete(&self, url: &str, handle: &str) -> Result<(), QueueError> {
            self.record(Call::Delete(url.into(), handle.into()));
            Ok(())
        }
        async fn change_visibility(&self, url: &str, handle: &str, seconds: u32) -> Result<(), QueueError> {
            self.wait().await;
            self.record(Call::Visibility(url.into(), handle.into(), seconds));
            Ok(())
        }
        async fn info(&self, _url: &str) -> Result<QueueInfo, QueueError> {
            Ok(QueueInfo { arn: "arn:aws:sqs:us-east-1:123456789012:fake".into(), ..Default::default() })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_from_arn_builds_public_endpoint() {
        assert_eq!(
            url_from_arn("arn:aws:sqs:eu-west-1:123456789012:cdc-events.fifo").as_deref(),
            Some("https://sqs.eu-west-1.amazonaws.com/123456789012/cdc-events.fifo")
        );
        assert_eq!(url_from_arn("arn:aws:sns:eu-west-1:1:x"), None);
        assert_eq!(url_from_arn("arn:aws:sqs:eu-west-1:1"), None);
        assert_eq!(url_from_arn(""), None);
    }
}
