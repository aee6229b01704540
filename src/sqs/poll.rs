//! `cdc-processor poll`: the Lambda event source mapping, emulated against any SQS endpoint.
//!
//! Enters: a queue URL and the mapping's knobs (batch size, batching window, long-poll wait,
//! visibility timeout). Leaves: nothing but effects: messages received, handed to the same
//! [`Handler`] Lambda runs as the same `SqsEvent` JSON Lambda would build, the succeeded ones
//! deleted, the failed ones left to come back (the handler already set their visibility by the
//! backoff), poison dead-lettered by the handler or, after `maxReceiveCount`, by the queue's
//! redrive policy.
//!
//! What the real mapping does that this mirrors (AWS "Using Lambda with Amazon SQS"): it gathers
//! up to `BatchSize` records (receiving 10 per call) within `MaximumBatchingWindowInSeconds`,
//! reports `ApproximateReceiveCount` and the other system attributes, deletes exactly the
//! messages not listed in `batchItemFailures`, and deletes nothing when the invocation fails.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use aws_lambda_events::encodings::Base64Data;
use aws_lambda_events::sqs::{SqsEvent, SqsMessage, SqsMessageAttribute};
use tracing::{info, warn};

use crate::handler::{Handler, HandlerConfig, Invocation, PipelineFactory};
use crate::secrets::CredentialSource;
use crate::sqs::queue::{Queue, QueueError, ReceiveRequest, ReceivedMessage};

#[derive(Debug, Clone, clap::Args)]
pub struct PollArgs {
    /// The queue to poll (also where failed messages' visibility is changed).
    #[arg(long, env = "SOURCE_QUEUE_URL")]
    pub queue_url: String,
    /// Records per invocation (1..=10000), received 10 per ReceiveMessage call.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub batch_size: u32,
    /// How long to keep gathering records for one batch (MaximumBatchingWindowInSeconds).
    #[arg(long, default_value_t = 0)]
    pub batching_window_seconds: u32,
    /// Long-poll wait of each ReceiveMessage call (0..=20).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(0..=20))]
    pub wait_time_seconds: u32,
    /// Visibility timeout of received messages; also the invocation's deadline.
    #[arg(long, default_value_t = 60)]
    pub visibility_timeout: u32,
    /// Stop after this many invocations.
    #[arg(long)]
    pub max_batches: Option<u64>,
    /// Stop when the queue holds no message at all: none visible, in flight or delayed.
    #[arg(long)]
    pub until_empty: bool,
    /// Stop after this many seconds.
    #[arg(long, value_name = "SECONDS")]
    pub duration: Option<u64>,
    /// The `awsRegion` of the built records.
    #[arg(long, env = "AWS_REGION", default_value = "us-east-1")]
    pub region: String,
}

impl PollArgs {
    /// Defaults for `queue_url` (as clap would give them).
    pub fn new(queue_url: impl Into<String>) -> Self {
        Self {
            queue_url: queue_url.into(),
            batch_size: 10,
            batching_window_seconds: 0,
            wait_time_seconds: 2,
            visibility_timeout: 60,
            max_batches: None,
            until_empty: false,
            duration: None,
            region: "us-east-1".into(),
        }
    }
}

/// What a poll run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PollSummary {
    pub batches: u64,
    pub received: u64,
    pub deleted: u64,
    pub failed: u64,
    pub failed_invocations: u64,
}

/// Runs `cdc-processor poll` with handler configuration from the environment and the real AWS
/// clients (endpoint from `AWS_ENDPOINT_URL`).
pub async fn run<F: PipelineFactory>(args: PollArgs, factory: F) -> Result<PollSummary, lambda_runtime::Error> {
    let config = HandlerConfig { source_queue_url: Some(args.queue_url.clone()), ..HandlerConfig::from_env() };
    let handler = crate::lambda::handler_from_env(factory, config).await;
    let summary = poll(&args, &handler).await?;
    info!(?summary, "poll finished");
    Ok(summary)
}

/// The poll loop over a ready handler; its queue port does the receives and deletes.
pub async fn poll<F, C, Q>(args: &PollArgs, handler: &Handler<F, C, Q>) -> Result<PollSummary, QueueError>
where
    F: PipelineFactory,
    C: CredentialSource,
    Q: Queue,
{
    let queue = handler.queue();
    let arn = queue.info(&args.queue_url).await?.arn;
    let started = Instant::now();
    let stop_at = args.duration.map(|s| started + Duration::from_secs(s));
    let mut summary = PollSummary::default();
    loop {
        if args.max_batches.is_some_and(|max| summary.batches >= max) || stop_at.is_some_and(|t| Instant::now() >= t) {
            break;
        }
        let received = receive_batch(queue, args, stop_at).await?;
        if received.is_empty() {
            if args.until_empty {
                let info = queue.info(&args.queue_url).await?;
                if info.visible + info.in_flight + info.delayed == 0 {
                    break;
                }
            }
            if args.wait_time_seconds == 0 {
                // No long poll to pace the loop: do not spin on an empty queue.
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            continue;
        }
        summary.batches += 1;
        summary.received += received.len() as u64;
        let event = to_sqs_event(&received, &arn, &args.region);
        let invocation = Invocation {
            request_id: format!("poll-{}-{}", started.elapsed().as_millis(), summary.batches),
            deadline: Some(std::time::SystemTime::now() + Duration::from_secs(args.visibility_timeout.into())),
        };
        let failed: HashSet<String> = match handler.handle(event, &invocation).await {
            Ok(response) => response.batch_item_failures.into_iter().map(|f| f.item_identifier).collect(),
            Err(_) => {
                // As Lambda does: nothing is deleted; every message comes back (the handler has
                // logged why and backed their visibility off).
                summary.failed_invocations += 1;
                summary.failed += received.len() as u64;
                continue;
            }
        };
        for m in &received {
            if failed.contains(&m.message_id) {
                summary.failed += 1;
                continue;
            }
            match queue.delete(&args.queue_url, &m.receipt_handle).await {
                Ok(()) => summary.deleted += 1,
                // The message comes back and is processed again: harmless, rows carry versions.
                Err(e) => warn!(message_id = %m.message_id, error = %e, "delete failed"),
            }
        }
    }
    Ok(summary)
}

/// Receives up to `batch_size` messages, 10 per call, within the batching window.
async fn receive_batch<Q: Queue>(
    queue: &Q,
    args: &PollArgs,
    stop_at: Option<Instant>,
) -> Result<Vec<ReceivedMessage>, QueueError> {
    let window_end = Instant::now() + Duration::from_secs(args.batching_window_seconds.into());
    let mut batch: Vec<ReceivedMessage> = Vec::new();
    let mut seen = HashSet::new();
    loop {
        let remaining = args.batch_size as usize - batch.len();
        // The first call long-polls; later ones only top the batch up while the window is open.
        let wait = if batch.is_empty() { args.wait_time_seconds } else { 0 };
        let request = ReceiveRequest {
            max_messages: remaining.min(10) as u32,
            wait_time_seconds: wait,
            visibility_timeout_seconds: Some(args.visibility_timeout),
        };
        let got = queue.receive(&args.queue_url, request).await?;
        let empty = got.is_empty();
        batch.extend(got.into_iter().filter(|m| seen.insert(m.message_id.clone())));
        if batch.len() >= args.batch_size as usize {
            return Ok(batch);
        }
        let window_open = Instant::now() < window_end && stop_at.is_none_or(|t| Instant::now() < t);
        if !window_open {
            return Ok(batch);
        }
        if empty {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The event Lambda's SQS mapping would build from these messages.
pub fn to_sqs_event(messages: &[ReceivedMessage], queue_arn: &str, region: &str) -> SqsEvent {
    let mut event = SqsEvent::default();
    event.records = messages
        .iter()
        .map(|m| {
            let mut record = SqsMessage::default();
            record.message_id = Some(m.message_id.clone());
            record.receipt_handle = Some(m.receipt_handle.clone());
            record.body = Some(m.body.clone());
            record.md5_of_body = m.md5_of_body.clone();
            record.attributes = m.system_attributes.clone().into_iter().collect::<HashMap<_, _>>();
            record.message_attributes = m
                .attributes
                .iter()
                .map(|(name, a)| {
                    let mut attribute = SqsMessageAttribute::default();
                    attribute.data_type = Some(a.data_type.clone());
                    attribute.string_value = a.string_value.clone();
                    attribute.binary_value = a.binary_value.clone().map(|bytes| {
                        // `Base64Data` is #[non_exhaustive]: Default, then fill.
                        let mut data = Base64Data::default();
                        *data = bytes;
                        data
                    });
                    (name.clone(), attribute)
                })
                .collect();
            record.event_source = Some("aws:sqs".into());
            record.event_source_arn = Some(queue_arn.to_string());
            record.aws_region = Some(region.to_string());
            record
        })
        .collect();
    event
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::sqs::queue::Attribute;

    #[test]
    fn built_event_matches_lambda_shape() {
        let mut system = HashMap::new();
        system.insert("ApproximateReceiveCount".to_string(), "2".to_string());
        system.insert("MessageGroupId".to_string(), "g".to_string());
        let mut attributes = BTreeMap::new();
        attributes.insert("trace".to_string(), Attribute::string("t-1"));
        let m = ReceivedMessage {
            message_id: "id-1".into(),
            receipt_handle: "rh-1".into(),
            body: "{}".into(),
            md5_of_body: Some("99914b932bd37a50b983c5e7c90ae93b".into()),
            system_attributes: system,
            attributes,
        };
        let event = to_sqs_event(&[m], "arn:aws:sqs:us-east-1:123456789012:q.fifo", "us-east-1");
        let json = serde_json::to_value(&event).unwrap();
        let r = &json["Records"][0];
        assert_eq!(r["messageId"], "id-1");
        assert_eq!(r["receiptHandle"], "rh-1");
        assert_eq!(r["eventSource"], "aws:sqs");
        assert_eq!(r["eventSourceARN"], "arn:aws:sqs:us-east-1:123456789012:q.fifo");
        assert_eq!(r["awsRegion"], "us-east-1");
        assert_eq!(r["attributes"]["ApproximateReceiveCount"], "2");
        assert_eq!(r["messageAttributes"]["trace"]["stringValue"], "t-1");
        assert_eq!(r["messageAttributes"]["trace"]["dataType"], "String");
        // And it reads back into the handler's Message with the same facts.
        let mut back: SqsEvent = serde_json::from_value(json).unwrap();
        let msg = crate::sqs::message::Message::from_lambda(&mut back.records[0]).unwrap();
        assert_eq!(msg.receive_count, 2);
        assert_eq!(msg.group_id.as_deref(), Some("g"));
    }
}
