//! Publishes Debezium events to SQS with `SendMessageBatch` (10 messages per call, several calls in
//! flight).
//!
//! Enters: [`Event`]s. Leaves: `Ok` only once SQS has accepted every one of them. Entries SQS
//! rejects inside a successful call (`Failed`) are re-sent; a call that fails as a whole is retried
//! with exponential backoff. A failure that outlives the retries is an error: the caller then does
//! NOT advance the replication slot, so nothing is lost (at-least-once: a partly sent batch is
//! sent again after a restart, and the processor's versions make the duplicates harmless).

use std::time::Duration;

use anyhow::{Context, bail};
use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use futures::{StreamExt, TryStreamExt, stream};

use super::debezium::Event;

/// SQS limits: 10 entries and 256 KiB of bodies per `SendMessageBatch` call.
const MAX_ENTRIES: usize = 10;
const MAX_BATCH_BYTES: usize = 256 * 1024 - 4 * 1024;
const MAX_ATTEMPTS: u32 = 8;

#[derive(Clone)]
pub(crate) struct Publisher {
    client: aws_sdk_sqs::Client,
    queue_url: String,
    fifo: bool,
    concurrency: usize,
}

impl Publisher {
    /// `endpoint_url` overrides AWS_ENDPOINT_URL (e.g. a local moto server).
    pub(crate) async fn connect(
        endpoint_url: Option<&str>,
        queue_url: Option<&str>,
        queue_name: &str,
        create: bool,
        concurrency: usize,
    ) -> anyhow::Result<Self> {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
        if let Some(url) = endpoint_url {
            loader = loader.endpoint_url(url);
        }
        let config = loader.load().await;
        let client = aws_sdk_sqs::Client::new(&config);
        let queue_url = match queue_url {
            Some(url) => url.to_string(),
            None if create => client
                .create_queue()
                .queue_name(queue_name)
                .send()
                .await
                .with_context(|| format!("creating SQS queue {queue_name}"))?
                .queue_url()
                .context("CreateQueue returned no queue URL")?
                .to_string(),
            None => client
                .get_queue_url()
                .queue_name(queue_name)
                .send()
                .await
                .with_context(|| format!("looking up SQS queue {queue_name} (pass --create-queue to create it)"))?
                .queue_url()
                .context("GetQueueUrl returned no queue URL")?
                .to_string(),
        };
        let fifo = queue_url.ends_with(".fifo");
        Ok(Self { client, queue_url, fifo, concurrency: concurrency.max(1) })
    }

    /// Sends every event; returns once all were accepted.
    pub(crate) async fn publish(&self, events: &[Event]) -> anyhow::Result<()> {
        let chunks = chunk(events);
        stream::iter(chunks.into_iter().map(|c| self.send_chunk(c)))
            .buffer_unordered(self.concurrency)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }

    async fn send_chunk(&self, chunk: &[Event]) -> anyhow::Result<()> {
        let mut pending: Vec<usize> = (0..chunk.len()).collect();
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let entries = pending
                .iter()
                .map(|&i| {
                    let e = &chunk[i];
                    let mut b = SendMessageBatchRequestEntry::builder().id(i.to_string()).message_body(e.body.clone());
                    if self.fifo {
                        // One static group keeps commit order, as Debezium Server's SQS sink does.
                        b = b.message_group_id("cdc").message_deduplication_id(format!("{}-{}-{}", e.lsn, e.op, i));
                    }
                    b.build().context("building an SQS batch entry")
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            match self.client.send_message_batch().queue_url(&self.queue_url).set_entries(Some(entries)).send().await {
                Ok(out) => {
                    let mut retry = Vec::new();
                    for failed in out.failed() {
                        if failed.sender_fault() {
                            bail!("SQS rejected a message ({}): not retried", failed.code());
                        }
                        if let Ok(i) = failed.id().parse::<usize>() {
                            retry.push(i);
                        }
                    }
                    if retry.is_empty() {
                        return Ok(());
                    }
                    pending = retry;
                }
                Err(err) if attempt < MAX_ATTEMPTS => {
                    tracing::warn!(attempt, error = %aws_sdk_sqs::error::DisplayErrorContext(&err), "SendMessageBatch failed; retrying");
                }
                Err(err) => {
                    return Err(anyhow::anyhow!("{}", aws_sdk_sqs::error::DisplayErrorContext(&err)))
                        .context("SendMessageBatch failed after retries");
                }
            }
            if attempt >= MAX_ATTEMPTS {
                bail!("SQS kept failing {} entries after {attempt} attempts", pending.len());
            }
            tokio::time::sleep(Duration::from_millis(20u64 << attempt.min(8))).await;
        }
    }
}

/// Splits events into SendMessageBatch calls: at most 10 entries and 252 KiB of bodies each.
fn chunk(events: &[Event]) -> Vec<&[Event]> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut bytes = 0;
    for (i, e) in events.iter().enumerate() {
        let n = i - start;
        if n > 0 && (n == MAX_ENTRIES || bytes + e.body.len() > MAX_BATCH_BYTES) {
            out.push(&events[start..i]);
            start = i;
            bytes = 0;
        }
        bytes += e.body.len();
    }
    if start < events.len() {
        out.push(&events[start..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(len: usize) -> Event {
        Event { lsn: 1, op: "c", body: "x".repeat(len) }
    }

    #[test]
    fn chunks_hold_ten_entries_and_stay_under_the_byte_limit() {
        let events: Vec<Event> = (0..25).map(|_| ev(100)).collect();
        let sizes: Vec<usize> = chunk(&events).iter().map(|c| c.len()).collect();
        assert_eq!(sizes, [10, 10, 5]);
        let big: Vec<Event> = (0..5).map(|_| ev(100 * 1024)).collect();
        let sizes: Vec<usize> = chunk(&big).iter().map(|c| c.len()).collect();
        assert_eq!(sizes, [2, 2, 1]);
        assert!(chunk(&[]).is_empty());
    }
}
