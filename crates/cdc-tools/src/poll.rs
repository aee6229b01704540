//! `cdc-tools poll`: the Lambda event source mapping, emulated against any SQS endpoint.
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
//! messages not listed in `batchItemFailures` (in `DeleteMessageBatch` calls), deletes nothing when
//! the invocation fails, and scales the number of concurrent invocations with the backlog up to
//! `MaximumConcurrency` (see [`poll`]).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use aws_lambda_events::encodings::Base64Data;
use aws_lambda_events::sqs::{SqsEvent, SqsMessage, SqsMessageAttribute};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tracing::{info, warn};

use cdc_lambda::handler::{Handler, Invocation, PipelineFactory};
use cdc_lambda::secrets::CredentialSource;
use cdc_lambda::sqs::queue::{Queue, QueueError, ReceiveRequest, ReceivedMessage};

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
    /// The batching window in milliseconds, finer than the mapping allows (0 = use
    /// --batching-window-seconds): trades freshness for fewer, larger inserts.
    #[arg(long, default_value_t = 0)]
    pub batching_window_ms: u64,
    /// Most concurrent invocations, each with its own batch (the mapping's
    /// `ScalingConfig.MaximumConcurrency`); concurrency starts at 1, grows by one while the queue
    /// has a backlog and shrinks when a long poll finds nothing.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub max_concurrency: u32,
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
    /// Set to stop: no new invocation starts, those in flight finish (SIGINT / SIGTERM set it).
    #[arg(skip)]
    pub stop: Option<Arc<AtomicBool>>,
}

impl PollArgs {
    /// Defaults for `queue_url` (as clap would give them).
    pub fn new(queue_url: impl Into<String>) -> Self {
        Self {
            queue_url: queue_url.into(),
            batch_size: 10,
            batching_window_seconds: 0,
            batching_window_ms: 0,
            max_concurrency: 5,
            wait_time_seconds: 2,
            visibility_timeout: 60,
            max_batches: None,
            until_empty: false,
            duration: None,
            region: "us-east-1".into(),
            stop: None,
        }
    }
}

impl PollArgs {
    /// The batching window in seconds (the millisecond form wins when set).
    fn batching_window(&self) -> f64 {
        if self.batching_window_ms > 0 {
            self.batching_window_ms as f64 / 1000.0
        } else {
            f64::from(self.batching_window_seconds)
        }
    }
}

/// What a poll run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PollSummary {
    batches: u64,
    received: u64,
    pub deleted: u64,
    pub(crate) failed: u64,
    pub failed_invocations: u64,
    /// Most invocations that ran at once.
    peak_concurrency: u64,
}

/// Runs `cdc-tools poll` with the handler configuration of `config` (the queue polled is the
/// source queue) and the real AWS clients (endpoint from `AWS_ENDPOINT_URL_SQS` or
/// `AWS_ENDPOINT_URL`).
///
/// SIGINT / SIGTERM end the run gracefully: invocations in flight finish and delete what they
/// processed, then the summary is printed on stderr.
pub async fn run<F: PipelineFactory>(
    mut args: PollArgs,
    config: &cdc_lambda::config::Config,
    factory: F,
) -> Result<PollSummary, lambda_runtime::Error> {
    let mut config = config.clone();
    config.handler.source_queue_url = Some(args.queue_url.clone());
    let handler = cdc_lambda::lambda::handler_from_config(factory, &config).await;
    let stop = args.stop.get_or_insert_with(Default::default).clone();
    tokio::spawn(async move {
        crate::capture::shutdown_signal().await;
        stop.store(true, Ordering::SeqCst);
    });
    let summary = poll(&args, &handler).await?;
    info!(?summary, "poll finished");
    eprintln!(
        "poll: {} invocations, {} messages received, {} deleted, {} failed, {} failed invocations, peak concurrency {}",
        summary.batches,
        summary.received,
        summary.deleted,
        summary.failed,
        summary.failed_invocations,
        summary.peak_concurrency
    );
    Ok(summary)
}

/// The poll loop over a ready handler; its queue port does the receives and deletes.
///
/// Concurrency follows the mapping's scaling: one invocation at first; each invocation whose
/// receives found a backlog (its batch filled up, or the last `ReceiveMessage` came back full)
/// starts one more next to itself, up to `--max-concurrency` (`ScalingConfig.MaximumConcurrency`);
/// an invocation whose long poll found nothing retires unless it is the last. Each concurrent
/// invocation receives, is handled and deletes its own batch. They run as concurrent futures in
/// the caller's task (the work they wait on, ClickHouse and SQS, is out of process).
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
    let max_concurrency = args.max_concurrency.max(1) as usize;
    let mut summary = PollSummary::default();
    let mut rounds = FuturesUnordered::new();
    let mut next_round = 0u64;
    let mut draining = false;
    let mut first_error: Option<QueueError> = None;
    let round = |n: u64| run_round(handler, args, &arn, stop_at, format!("poll-{}-{n}", started.elapsed().as_millis()));
    rounds.push(round(next_round));
    next_round += 1;
    while let Some(result) = rounds.next().await {
        let outcome = match result {
            Ok(outcome) => outcome,
            Err(e) => {
                // Let the invocations in flight finish (their messages were received), start no
                // more, then report the error.
                draining = true;
                first_error.get_or_insert(e);
                continue;
            }
        };
        if outcome.received > 0 {
            summary.batches += 1;
            summary.received += outcome.received as u64;
            summary.deleted += outcome.deleted as u64;
            summary.failed += outcome.failed as u64;
            summary.failed_invocations += u64::from(outcome.failed_invocation);
            summary.peak_concurrency = summary.peak_concurrency.max(rounds.len() as u64 + 1);
        }
        let time_up = stop_at.is_some_and(|t| Instant::now() >= t)
            || args.stop.as_ref().is_some_and(|stop| stop.load(Ordering::SeqCst));
        let batches_left = args.max_batches.map(|max| max.saturating_sub(summary.batches + rounds.len() as u64));
        if time_up || batches_left == Some(0) {
            draining = true;
        }
        if outcome.received == 0 && args.until_empty && !draining {
            match queue.info(&args.queue_url).await {
                Ok(info) if info.visible + info.in_flight + info.delayed == 0 => draining = true,
                Ok(_) => {}
                Err(e) => {
                    draining = true;
                    first_error.get_or_insert(e);
                }
            }
        }
        if draining {
            continue;
        }
        // Scale: up by one on a backlog, down by one when idle (never below one invocation).
        let mut start = if outcome.received == 0 && !rounds.is_empty() { 0 } else { 1 };
        if outcome.backlog && rounds.len() + 1 < max_concurrency {
            start += 1;
        }
        if let Some(left) = batches_left {
            start = start.min(usize::try_from(left).unwrap_or(usize::MAX));
        }
        for _ in 0..start {
            rounds.push(round(next_round));
            next_round += 1;
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(summary),
    }
}

/// What one invocation (receive → handle → delete) did.
#[derive(Debug, Default)]
struct RoundOutcome {
    received: usize,
    deleted: usize,
    failed: usize,
    failed_invocation: bool,
    /// The receives suggested more messages were waiting.
    backlog: bool,
}

/// One invocation: gathers a batch, hands it to the handler, deletes the succeeded messages in
/// `DeleteMessageBatch` calls of 10 (concurrently).
async fn run_round<F, C, Q>(
    handler: &Handler<F, C, Q>,
    args: &PollArgs,
    arn: &str,
    stop_at: Option<Instant>,
    request_id: String,
) -> Result<RoundOutcome, QueueError>
where
    F: PipelineFactory,
    C: CredentialSource,
    Q: Queue,
{
    let queue = handler.queue();
    let (received, backlog) = receive_batch(queue, args, stop_at).await?;
    if received.is_empty() {
        if args.wait_time_seconds == 0 {
            // No long poll to pace the loop: do not spin on an empty queue.
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        return Ok(RoundOutcome::default());
    }
    let mut outcome = RoundOutcome { received: received.len(), backlog, ..RoundOutcome::default() };
    let event = to_sqs_event(&received, arn, &args.region);
    let invocation = Invocation {
        request_id,
        deadline: Some(std::time::SystemTime::now() + Duration::from_secs(args.visibility_timeout.into())),
    };
    let failed: HashSet<String> = match handler.handle(event, &invocation).await {
        Ok(response) => response.batch_item_failures.into_iter().map(|f| f.item_identifier).collect(),
        Err(_) => {
            // As Lambda does: nothing is deleted; every message comes back (the handler has
            // logged why and backed their visibility off).
            outcome.failed_invocation = true;
            outcome.failed = received.len();
            return Ok(outcome);
        }
    };
    let to_delete: Vec<String> =
        received.iter().filter(|m| !failed.contains(&m.message_id)).map(|m| m.receipt_handle.clone()).collect();
    outcome.failed = received.len() - to_delete.len();
    let results = futures::future::join_all(to_delete.chunks(10).map(|c| queue.delete_batch(&args.queue_url, c))).await;
    let mut not_deleted = 0usize;
    for (chunk, result) in to_delete.chunks(10).zip(results) {
        match result {
            Ok(left) => not_deleted += left.len(),
            Err(e) => {
                not_deleted += chunk.len();
                warn!(error = %e, "delete batch failed");
            }
        }
    }
    if not_deleted > 0 {
        // They come back and are processed again: harmless, rows carry versions.
        warn!(not_deleted, "some processed messages were not deleted");
    }
    outcome.deleted = to_delete.len() - not_deleted;
    Ok(outcome)
}

/// Receives up to `batch_size` messages, 10 per call, within the batching window. Also says
/// whether a backlog is likely (the batch filled up, or the last call came back full).
async fn receive_batch<Q: Queue>(
    queue: &Q,
    args: &PollArgs,
    stop_at: Option<Instant>,
) -> Result<(Vec<ReceivedMessage>, bool), QueueError> {
    let window_end = Instant::now() + Duration::from_secs_f64(args.batching_window());
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
        let full_call = got.len() >= request.max_messages as usize;
        let empty = got.is_empty();
        batch.extend(got.into_iter().filter(|m| seen.insert(m.message_id.clone())));
        if batch.len() >= args.batch_size as usize {
            return Ok((batch, true));
        }
        let window_open = Instant::now() < window_end && stop_at.is_none_or(|t| Instant::now() < t);
        if !window_open {
            return Ok((batch, full_call && !empty));
        }
        if empty {
            tokio::time::sleep(Duration::from_millis(20)).await;
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

    use std::sync::atomic::AtomicUsize;

    use super::*;
    use cdc_clickhouse::config::ClickHouseSettings;
    use cdc_lambda::handler::HandlerConfig;
    use cdc_lambda::pipeline::{Process, SystemicError};
    use cdc_lambda::secrets::StaticCredentials;
    use cdc_lambda::sqs::message::{Message, MessageOutcome, MessageReport};
    use cdc_lambda::sqs::queue::Attribute;
    use cdc_lambda::sqs::queue::fake::{Call, FakeQueue};

    /// Delivers everything after a pause, recording how many invocations ran at once.
    struct Slow {
        running: Arc<AtomicUsize>,
        peak: Arc<AtomicUsize>,
    }

    impl Process for Slow {
        async fn process(&self, messages: &[Message], _deadline: Instant) -> Result<Vec<MessageReport>, SystemicError> {
            let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
            self.peak.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(30)).await;
            self.running.fetch_sub(1, Ordering::SeqCst);
            Ok(messages.iter().map(|_| MessageReport::new(MessageOutcome::Delivered)).collect())
        }
    }

    /// Polls 100 queued messages with the given maximum concurrency; returns (summary, peak
    /// concurrent invocations seen by the pipeline, delete calls).
    async fn drain(max_concurrency: u32) -> (PollSummary, usize, Vec<Call>) {
        let queue = FakeQueue::default();
        *queue.to_receive.lock().unwrap() = (0..100)
            .map(|i| ReceivedMessage {
                message_id: format!("m{i}"),
                receipt_handle: format!("rh{i}"),
                body: "{}".into(),
                system_attributes: [("ApproximateReceiveCount".to_string(), "1".to_string())].into(),
                ..ReceivedMessage::default()
            })
            .collect();
        let peak = Arc::new(AtomicUsize::new(0));
        let factory = {
            let peak = peak.clone();
            move |_: ClickHouseSettings| {
                let pipeline = Slow { running: Arc::new(AtomicUsize::new(0)), peak: peak.clone() };
                async move { Ok::<_, SystemicError>(pipeline) }
            }
        };
        let settings = ClickHouseSettings::new("http://127.0.0.1:1", "u", "p", "d");
        let handler = Handler::new(factory, StaticCredentials(settings), queue, HandlerConfig::default());
        let args = PollArgs {
            batch_size: 10,
            wait_time_seconds: 0,
            until_empty: true,
            duration: Some(20),
            max_concurrency,
            ..PollArgs::new("https://sqs.us-east-1.amazonaws.com/123456789012/q")
        };
        let summary = poll(&args, &handler).await.unwrap();
        let calls = handler.queue().calls();
        (summary, peak.load(Ordering::SeqCst), calls)
    }

    #[tokio::test]
    async fn concurrency_grows_with_the_backlog_up_to_the_maximum() {
        let (summary, peak, calls) = drain(4).await;
        assert_eq!((summary.received, summary.deleted, summary.failed), (100, 100, 0), "{summary:?}");
        assert_eq!(calls.iter().filter(|c| matches!(c, Call::Delete(..))).count(), 100);
        // A pipeline shared by concurrent invocations sees them overlap, never beyond the maximum.
        assert!((2..=4).contains(&peak), "peak concurrency {peak}");
        assert!(summary.peak_concurrency <= 4 && summary.peak_concurrency >= 2, "{summary:?}");
    }

    #[tokio::test]
    async fn maximum_concurrency_one_is_sequential() {
        let (summary, peak, _) = drain(1).await;
        assert_eq!(summary.deleted, 100);
        assert_eq!(peak, 1);
        assert_eq!(summary.batches, 10, "full batches of 10");
    }

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
        let msg = cdc_lambda::sqs::message::Message::from_lambda(&mut back.records[0]).unwrap();
        assert_eq!(msg.receive_count, 2);
        assert_eq!(msg.group_id.as_deref(), Some("g"));
    }
}
