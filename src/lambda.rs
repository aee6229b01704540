//! The Lambda side: cold start, the runtime loop, and a one-shot local invoke.
//!
//! Enters: the environment (once per cold start) and, per invocation, `LambdaEvent<SqsEvent>`
//! from the Lambda runtime API. Leaves: `SqsBatchResponse` (or an error that fails the batch).
//!
//! Cold start builds everything that outlives an invocation: the AWS SDK clients, the
//! credentials source (secret cache), the handler configuration and the pipeline (through the
//! caller's [`PipelineFactory`]). Invocations then only look the pipeline up.

use std::path::PathBuf;
use std::sync::Arc;

use aws_lambda_events::sqs::SqsEvent;
use lambda_runtime::{LambdaEvent, service_fn};

use crate::handler::{Handler, HandlerConfig, Invocation, PipelineFactory};
use crate::secrets::{CredentialSource, Credentials};
use crate::sqs::queue::{Queue, SqsQueue};

/// True when the process was started by Lambda (or `cargo lambda watch`), which sets the
/// runtime API address.
pub fn is_lambda() -> bool {
    std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some()
}

/// The AWS clients, from the default provider chain. `AWS_ENDPOINT_URL` (or
/// `AWS_ENDPOINT_URL_SQS` / `AWS_ENDPOINT_URL_SECRETS_MANAGER`) points them at moto locally.
#[derive(Debug, Clone)]
pub struct AwsClients {
    pub sqs: aws_sdk_sqs::Client,
    pub secrets: aws_sdk_secretsmanager::Client,
}

impl AwsClients {
    pub async fn from_env() -> Self {
        let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        Self { sqs: aws_sdk_sqs::Client::new(&config), secrets: aws_sdk_secretsmanager::Client::new(&config) }
    }
}

/// The handler as deployed: credentials from `CLICKHOUSE_SECRET_ARN` (or `CLICKHOUSE_*`), the
/// real SQS adapter.
pub type AwsHandler<F> = Handler<F, Credentials, SqsQueue>;

/// Builds the handler from the environment ([`HandlerConfig::from_env`]) and warms the pipeline
/// up. A warm-up failure (ClickHouse or Secrets Manager unreachable) is logged, not fatal: the
/// first invocation tries again and fails as a whole if it must.
pub async fn handler_from_env<F: PipelineFactory>(factory: F, config: HandlerConfig) -> AwsHandler<F> {
    let clients = AwsClients::from_env().await;
    let handler = Handler::new(factory, Credentials::from_env(clients.secrets), SqsQueue::new(clients.sqs), config);
    // Bounded: Lambda gives the init phase 10 s, and a hanging Secrets Manager must not eat them.
    match tokio::time::timeout(std::time::Duration::from_secs(5), handler.warm_up()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::error!(code = crate::error::Classify::code(&e), error = %e, "pipeline warm-up failed at cold start")
        }
        Err(_) => tracing::warn!("pipeline warm-up did not finish within 5 s; the first invocation tries again"),
    }
    handler
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
pub fn deadline_from_header(deadline_ms: u64, now: std::time::SystemTime) -> std::time::SystemTime {
    const EPOCH_2001_MS: u64 = 1_000_000_000_000;
    if deadline_ms < EPOCH_2001_MS {
        now + std::time::Duration::from_millis(deadline_ms)
    } else {
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(deadline_ms)
    }
}

/// `cdc-processor invoke`: one event file through the handler, as Lambda would, without the
/// runtime API (the files in `events/`).
#[derive(Debug, Clone, clap::Args)]
pub struct InvokeArgs {
    /// An SQS event JSON file (`{"Records": [...]}`).
    #[arg(long, short = 'f', value_name = "FILE")]
    pub data_file: PathBuf,
}

/// Runs [`InvokeArgs`]: prints the batch response JSON on stdout (after the EMF line).
pub async fn invoke<F: PipelineFactory>(args: InvokeArgs, factory: F) -> Result<(), lambda_runtime::Error> {
    let text = std::fs::read_to_string(&args.data_file)?;
    let event: SqsEvent = serde_json::from_str(&text)?;
    let handler = handler_from_env(factory, HandlerConfig::from_env()).await;
    let invocation = Invocation { request_id: format!("local-{}", crate::telemetry::now_ms()), deadline: None };
    let response = handler.handle(event, &invocation).await?;
    println!("{}", serde_json::to_string(&response)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use super::deadline_from_header;

    #[test]
    fn deadline_is_epoch_millis_or_an_emulator_budget() {
        let now = UNIX_EPOCH + Duration::from_millis(1_796_000_000_000);
        assert_eq!(deadline_from_header(1_796_000_030_000, now), now + Duration::from_secs(30));
        assert_eq!(deadline_from_header(600_000, now), now + Duration::from_secs(600));
        assert!(deadline_from_header(0, SystemTime::now()) <= SystemTime::now());
    }
}
