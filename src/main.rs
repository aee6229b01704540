//! The one binary: the Lambda function when Lambda starts it, a command-line tool otherwise.
//!
//! Only wiring lives here: configuration and clients are built once (per cold start), then
//! handed to the library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use aws_lambda_events::sqs::SqsEvent;
use clap::{Parser, Subcommand};

use cdc_processor::config::ClickHouseSettings;
use cdc_processor::decode::DecodeOptions;
use cdc_processor::handler::{HandlerConfig, Invocation};
use cdc_processor::error::Classify;
use cdc_processor::pipeline::{Pipeline, SystemicError};
use cdc_processor::rederive::TaskKey;
use cdc_processor::secrets::{self, AwsSecretStore};
use cdc_processor::sink::Warehouse;
use cdc_processor::tables::TableMapping;
use cdc_processor::{capture, freshness, generator, lambda, sqs, telemetry, verify};

#[derive(Parser)]
#[command(name = "cdc-processor", version, about = "PostgreSQL change events from SQS into ClickHouse")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the Lambda handler on SQS event files, one invocation per file; prints each
    /// invocation's SqsBatchResponse as one JSON line on stdout.
    Invoke {
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
        /// Each invocation's deadline, as Lambda's function timeout: the batch response is
        /// printed before it, whatever ClickHouse does (default: LOCAL_TIMEOUT_SECONDS or 60).
        #[arg(long, value_name = "SECONDS")]
        timeout_seconds: Option<u64>,
    },
    /// Create the ClickHouse database, tables and views (idempotent).
    Migrate,
    /// Emulate the SQS event source mapping against any SQS endpoint.
    Poll(sqs::poll::PollArgs),
    /// Move messages from a dead-letter queue back to its source queue.
    Redrive(sqs::redrive::RedriveArgs),
    /// Capture PostgreSQL changes (wal2json) as Debezium events onto an SQS queue.
    Capture(capture::Args),
    /// Generate sales traffic on the source PostgreSQL database.
    Generate(generator::Args),
    /// Compare PostgreSQL's current join with ClickHouse's sales_fact and mirrors.
    Verify(verify::Args),
    /// Rewrite a key (or a table) from PostgreSQL and re-derive the facts it touches.
    Repair(cdc_processor::repair::Args),
    /// Measure commit-to-queryable latency under load.
    Freshness(freshness::Args),
}

/// Builds the pipeline for given ClickHouse settings: at cold start and after a credential
/// rotation.
async fn build_pipeline(settings: ClickHouseSettings) -> Result<Pipeline, SystemicError> {
    Ok(Pipeline::new(decode_options()?, Warehouse::new(&settings)).with_task_key(task_key().await?))
}

/// The key that signs follow-up tasks, once per process: the secret `TASK_KEY_SECRET_ARN` names
/// (every instance of the function shares it), else a random key of this process (local runs:
/// `poll` and `invoke` run one process). Not fetched yet is systemic: messages wait.
async fn task_key() -> Result<TaskKey, SystemicError> {
    static KEY: tokio::sync::OnceCell<TaskKey> = tokio::sync::OnceCell::const_new();
    let key = KEY.get_or_try_init(|| async {
        let Some(arn) = std::env::var("TASK_KEY_SECRET_ARN").ok().filter(|v| !v.trim().is_empty()) else {
            tracing::warn!("TASK_KEY_SECRET_ARN is not set: follow-up tasks are signed with a key of this process only");
            return Ok(TaskKey::random());
        };
        let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        let store = AwsSecretStore::new(aws_sdk_secretsmanager::Client::new(&config));
        secrets::task_key(&store, &arn).await.map_err(|e| SystemicError {
            code: e.code(),
            detail: e.to_string(),
            is_auth: false,
        })
    });
    key.await.cloned()
}

/// `REJECT_UNKNOWN_TABLES` and `CAPTURED_TABLES` (the table mapping, `TableMapping::parse`). A
/// mapping that cannot be used is a configuration error: systemic, so messages wait for the
/// fix instead of being skipped or dead-lettered.
fn decode_options() -> Result<DecodeOptions, SystemicError> {
    let flag = |name: &str| {
        std::env::var(name).is_ok_and(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "1" | "true" | "yes"))
    };
    let tables = TableMapping::parse(&std::env::var("CAPTURED_TABLES").unwrap_or_default())
        .map_err(|e| SystemicError { code: "config.captured_tables", detail: e.to_string(), is_auth: false })?;
    Ok(DecodeOptions {
        reject_unknown_tables: flag("REJECT_UNKNOWN_TABLES"),
        platform_feeds_sales: flag("PLATFORM_FEEDS_SALES"),
        tables,
    })
}

#[tokio::main]
async fn main() -> ExitCode {
    telemetry::init_logging();
    if lambda::is_lambda() {
        let handler = lambda::handler_from_env(build_pipeline, HandlerConfig::from_env()).await;
        return match lambda::run(handler).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(error = %e, "Lambda runtime stopped");
                ExitCode::FAILURE
            }
        };
    }
    let cli = Cli::parse();
    let result: anyhow::Result<()> = match cli.command {
        Command::Invoke { files, timeout_seconds } => invoke(files, timeout_seconds).await,
        Command::Migrate => migrate().await,
        Command::Poll(args) => sqs::poll::run(args, build_pipeline).await.map(|_| ()).map_err(|e| anyhow::anyhow!(e)),
        Command::Redrive(args) => sqs::redrive::run(args)
            .await
            .map(|moved| eprintln!("redrive: moved {moved} messages"))
            .map_err(|e| anyhow::anyhow!(e)),
        Command::Capture(args) => capture::run(args).await,
        Command::Generate(args) => generator::run(args).await,
        Command::Verify(args) => verify::run(args).await,
        Command::Repair(args) => cdc_processor::repair::run(args).await,
        Command::Freshness(args) => freshness::run(args).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cdc-processor: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `invoke`: the Lambda handler, in one process, on each file. stdout carries only the batch
/// responses; the EMF metrics line goes to stderr here (in Lambda it goes to stdout).
async fn invoke(files: Vec<PathBuf>, timeout_seconds: Option<u64>) -> anyhow::Result<()> {
    let mut config = HandlerConfig::from_env();
    if let Some(seconds) = timeout_seconds {
        config.default_timeout = Duration::from_secs(seconds);
    }
    let function_name = config.function_name.clone();
    let handler = lambda::handler_from_env(build_pipeline, config).await;
    for (n, file) in files.iter().enumerate() {
        let event: SqsEvent = {
            let text = std::fs::read_to_string(file).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{}: not an SQS event: {e}", file.display()))?
        };
        let invocation = Invocation { request_id: format!("local-{}-{n}", telemetry::now_ms()), deadline: None };
        let (result, metrics) = handler.handle_with_metrics(event, &invocation).await;
        eprintln!("{}", metrics.to_emf(&function_name, telemetry::now_ms()));
        let response = result.map_err(|e| anyhow::anyhow!("{}: invocation failed as a whole: {e}", file.display()))?;
        println!("{}", serde_json::to_string(&response)?);
    }
    Ok(())
}

async fn migrate() -> anyhow::Result<()> {
    let settings = ClickHouseSettings::from_env();
    let pipeline = Pipeline::new(decode_options().map_err(|e| anyhow::anyhow!(e.detail))?, Warehouse::new(&settings));
    pipeline.migrate(Instant::now() + Duration::from_secs(60)).await?;
    let version = pipeline.warehouse().server_version().await?;
    let dialect = pipeline.warehouse().dialect().await?;
    eprintln!("migrate: database {} ready on ClickHouse {version} ({dialect:?} dialect)", settings.database);
    Ok(())
}
