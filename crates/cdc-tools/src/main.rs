//! `cdc-tools`: the command-line tools around the function, one subcommand each.
//!
//! Only wiring lives here; `invoke`, `poll` and `migrate` build the pipeline exactly as the
//! function does at cold start (`cdc_lambda::config`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use aws_lambda_events::sqs::SqsEvent;
use clap::{Parser, Subcommand};

use cdc_lambda::config::Config;
use cdc_lambda::handler::Invocation;
use cdc_lambda::pipeline::Pipeline;
use cdc_lambda::{lambda, telemetry};
use cdc_tools::{capture, freshness, generator, history, poll, redrive, repair, verify};

#[derive(Parser)]
#[command(
    name = "cdc-tools",
    version,
    about = "The tools around cdc-processor: capture, generate, invoke, poll, verify, repair..."
)]
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
    Poll(poll::PollArgs),
    /// Move messages from a dead-letter queue back to its source queue.
    Redrive(redrive::RedriveArgs),
    /// Capture PostgreSQL changes (wal2json) as Debezium events onto an SQS queue.
    Capture(capture::Args),
    /// Generate sales traffic on the source PostgreSQL database.
    Generate(generator::Args),
    /// Compare PostgreSQL's current join with ClickHouse's sales_fact and mirrors.
    Verify(verify::Args),
    /// Rewrite a key (or a table) from PostgreSQL and re-derive the facts it touches.
    Repair(repair::Args),
    /// Measure commit-to-queryable latency under load.
    Freshness(freshness::Args),
    /// Print one key's versions with their validity (a table in HISTORY_TABLES).
    History(history::HistoryArgs),
    /// Print a table, or sales_fact, as it was at a time (from the HISTORY_TABLES histories).
    AsOf(history::AsOfArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    telemetry::init_logging(cdc_lambda::config::log_filter());
    let cli = Cli::parse();
    let result: anyhow::Result<()> = match cli.command {
        Command::Invoke { files, timeout_seconds } => invoke(files, timeout_seconds).await,
        Command::Migrate => migrate().await,
        Command::Poll(args) => match Config::from_env() {
            Ok(config) => {
                poll::run(args, &config, config.pipeline_builder()).await.map(|_| ()).map_err(|e| anyhow::anyhow!(e))
            }
            Err(e) => Err(e.into()),
        },
        Command::Redrive(args) => redrive::run(args)
            .await
            .map(|moved| eprintln!("redrive: moved {moved} messages"))
            .map_err(|e| anyhow::anyhow!(e)),
        Command::Capture(args) => capture::run(args).await,
        Command::Generate(args) => generator::run(args).await,
        Command::Verify(args) => verify::run(args).await,
        Command::Repair(args) => repair::run(args).await,
        Command::Freshness(args) => freshness::run(args).await,
        Command::History(args) => history::history(args).await,
        Command::AsOf(args) => history::as_of(args).await,
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
    let mut config = Config::from_env()?;
    if let Some(seconds) = timeout_seconds {
        config.handler.default_timeout = Duration::from_secs(seconds);
    }
    let function_name = config.handler.function_name.clone();
    let handler = lambda::handler_from_config(config.pipeline_builder(), &config).await;
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
    let config = Config::from_env()?;
    let settings = config.clickhouse_settings().await.map_err(|e| anyhow::anyhow!(e.detail))?;
    let pipeline = Pipeline::new(config.decode.clone(), config.warehouse(&settings));
    pipeline.migrate(Instant::now() + Duration::from_secs(60)).await?;
    let version = pipeline.warehouse().server_version().await?;
    let dialect = pipeline.warehouse().dialect().await?;
    eprintln!("migrate: database {} ready on ClickHouse {version} ({dialect:?} dialect)", settings.database);
    Ok(())
}
