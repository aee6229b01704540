//! The Lambda side: cold start, the runtime loop, and a one-shot local invoke.
//!
//! Enters: the [`Config`] (read once per cold start) and, per invocation, `LambdaEvent<SqsEvent>`
//! from the Lambda runtime API. Leaves: `SqsBatchResponse` (or an error that fails the batch).
//!
//! Cold start builds everything that outlives an invocation: the AWS SDK clients, the
//! credentials source (secret cache), the handler configuration and the pipeline (through the
//! caller's [`PipelineFactory`]). Invocations then only look the pipeline up.

use std::sync::Arc;

use aws_lambda_events::sqs::SqsEvent;
use lambda_runtime::{LambdaEvent, service_fn};

use crate::config::{Config, ConfigError, PipelineBuilder};
use crate::handler::{Handler, HandlerConfig, Invocation, PipelineFactory};
use crate::secrets::{CredentialSource, Credentials};
use crate::sqs::queue::{Queue, SqsQueue};

/// The AWS clients, from the default provider chain. `AWS_ENDPOINT_URL` (or
/// `AWS_ENDPOINT_URL_SQS` / `AWS_ENDPOINT_URL_SECRETS_MANAGER`) points them at moto locally.
#[derive(Debug, Clone)]
pub struct AwsClients {
    pub sqs: aws_sdk_sqs::Client,
    pub(crate) secrets: aws_sdk_secretsmanager::Client,
}

impl AwsClients {
    pub async fn from_env() -> Self {
        let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        Self { sqs: aws_sdk_sqs::Client::new(&config), secrets: aws_sdk_secretsmanager::Client::new(&config) }
    }
}

/// The handler as deployed: credentials from `CLICKHOUSE_SECRET_ARN` (or `CLICKHOUSE_*`), the
/// real SQS adapter.
type AwsHandler<F> = Handler<F, Credentials, SqsQueue>;

/// Builds the handler from the configuration and warms the pipeline up. A warm-up failure
/// (ClickHouse or Secrets Manager unreachable) is logged, not fatal: the first invocation tries
/// again and fails as a whole if it must.
pub async fn handler_from_config<F: PipelineFactory>(factory: F, config: &Config) -> AwsHandler<F> {
    let clients = AwsClients::from_env().await;
    let handler =
        Handler::new(factory, config.credentials(clients.secrets), SqsQueue::new(clients.sqs), config.handler.clone());
    // Bounded: Lambda gives the init phase 10 s, and a hanging Secrets Manager must not eat them.
    match tokio::time::timeout(std::time::Duration::from_secs(5), handler.warm_up()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::error!(code = cdc_core::error::Classify::code(&e), error = %e, "pipeline warm-up failed at cold start")
        }
        Err(_) => tracing::warn!("pipeline warm-up did not finish within 5 s; the first invocation tries again"),
    }
    handler
}

/// The handler of a function whose configuration cannot be read: every invocation fails every
/// message with the configuration's systemic error, which the handler treats as any failure of
/// the environment (re-sent as delayed copies on a standard queue, never dead-lettered for it), so
/// the messages wait for the fix (docs/error-policy.md, "Configuration"). The error is logged
/// once here, at error level, naming the variable (its message echoes no secret).
pub async fn misconfigured_handler(error: ConfigError) -> AwsHandler<PipelineBuilder> {
    tracing::error!(
        code = cdc_core::error::Classify::code(&error),
        variable = error.variable(),
        error = %error,
        "the configuration is unusable: every invocation fails with this error until it is fixed"
    );
    let clients = AwsClients::from_env().await;
    let config = HandlerConfig { function_name: crate::config::function_name_or_local(), ..HandlerConfig::default() };
    Handler::new(PipelineBuilder::default(), Credentials::Misconfigured(error), SqsQueue::new(clients.sqs), config)
}

/// Runs the Lambda runtime loop with a ready handler until the runtime stops the process.
pub async fn run<F, C, Q>(handler: Handler<F, C, Q>) -> Result<(), lambda_runtime::Error>
where
    F: PipelineFactory + 'static,
    C: CredentialSource + 'static,
    Q: Queue + 'static,
{
    let handler = Arc::new(handler);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| {
        let handler = handler.clone();
        async move {
            let invocation = Invocation {
                request_id: event.context.request_id.clone(),
                deadline: Some(deadline_from_header(event.context.deadline, std::time::SystemTime::now())),
            };
            handler.handle(event.payload, &invocation).await
        }
    }))
    .await
}

/// The invocation's deadline from `Lambda-Runtime-Deadline-Ms`: Unix time in milliseconds on
/// Lambda (and under `sam local`). Some emulators send the time budget instead (cargo-lambda's
/// runtime API sends `600000`, which read as a date is in 1970 and would make every invocation
/// fail at once on "deadline exceeded"): a value before 2001-09-09 (10^12 ms) is read as a budget
/// from `now`.
fn deadline_from_header(deadline_ms: u64, now: std::time::SystemTime) -> std::time::SystemTime {
    const EPOCH_2001_MS: u64 = 1_000_000_000_000;
    if deadline_ms < EPOCH_2001_MS {
        now + std::time::Duration::from_millis(deadline_ms)
    } else {
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(deadline_ms)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use aws_lambda_events::sqs::{SqsEvent, SqsMessage};

    use super::deadline_from_header;
    use crate::config::{ConfigError, PipelineBuilder};
    use crate::handler::{Handler, HandlerConfig, Invocation};
    use crate::secrets::Credentials;
    use crate::secrets::tests::FakeStore;
    use crate::sqs::queue::fake::{Call, FakeQueue};

    /// A function started with an unusable configuration fails every message as environmental:
    /// re-sent as delayed copies, none dead-lettered, none reported failed toward the redrive.
    #[tokio::test]
    async fn a_misconfigured_function_makes_messages_wait_not_dead_letter() {
        const ARN: &str = "arn:aws:sqs:us-east-1:123456789012:changes";
        let error =
            ConfigError::BadValue { name: "SCHEMA_EVOLUTION", expected: "add or off", value: Some("maybe".into()) };
        let config =
            HandlerConfig { dead_letter_queue_url: Some("https://sqs/dlq".into()), ..HandlerConfig::default() };
        let credentials: Credentials<FakeStore> = Credentials::Misconfigured(error);
        let handler = Handler::new(PipelineBuilder::default(), credentials, FakeQueue::default(), config);
        let mut event = SqsEvent::default();
        for id in ["a", "b"] {
            let mut r = SqsMessage::default();
            r.message_id = Some(id.into());
            r.receipt_handle = Some(format!("rh-{id}"));
            r.body = Some("{}".into());
            r.event_source_arn = Some(ARN.into());
            r.attributes = HashMap::from([("ApproximateReceiveCount".to_string(), "1".to_string())]);
            event.records.push(r);
        }
        let invocation = Invocation { request_id: "r".into(), deadline: None };
        let (response, metrics) = handler.handle_with_metrics(event, &invocation).await;
        let response = response.expect("answered per message");
        assert!(response.batch_item_failures.is_empty(), "{response:?}");
        assert_eq!((metrics.requeued, metrics.dead_lettered, metrics.environment_failures), (2, 0, 2));
        let sends: Vec<String> = handler
            .queue()
            .calls()
            .into_iter()
            .filter_map(|c| match c {
                Call::Send(url, _) => Some(url),
                _ => None,
            })
            .collect();
        assert_eq!(sends.len(), 2);
        assert!(sends.iter().all(|url| !url.contains("dlq")), "{sends:?}");
    }

    #[test]
    fn deadline_is_epoch_millis_or_an_emulator_budget() {
        let now = UNIX_EPOCH + Duration::from_millis(1_796_000_000_000);
        assert_eq!(deadline_from_header(1_796_000_030_000, now), now + Duration::from_secs(30));
        assert_eq!(deadline_from_header(600_000, now), now + Duration::from_secs(600));
        assert!(deadline_from_header(0, SystemTime::now()) <= SystemTime::now());
    }
}
