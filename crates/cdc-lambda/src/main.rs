//! The deployed function: built once per cold start from the configuration, then run under the
//! Lambda runtime. The command-line tools (`invoke`, `poll`, ...) are `cdc-tools`.

// The handler's future nests the pipeline's concurrent writes and lookups, each with its retries:
// its layout is deeper than the compiler's default query depth.
#![recursion_limit = "256"]

use std::process::ExitCode;

use cdc_lambda::config::{self, Config};
use cdc_lambda::{lambda, telemetry};

#[tokio::main]
async fn main() -> ExitCode {
    telemetry::init_logging(config::log_filter());
    // An unusable configuration does not stop the process: exiting would make Lambda retry the
    // init on every invocation and return the messages to the queue with a growing receive
    // count, toward the DLQ. The handler instead fails them as environmental (docs/error-policy.md).
    let result = match Config::from_env() {
        Ok(config) => lambda::run(lambda::handler_from_config(config.pipeline_builder(), &config).await).await,
        Err(error) => lambda::run(lambda::misconfigured_handler(error).await).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "Lambda runtime stopped");
            ExitCode::FAILURE
        }
    }
}
