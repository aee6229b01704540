//! cdc-lambda's integration tests, one binary: the pipeline against the real ClickHouse server
//! (and chDB), the sample events of `events/`, and the function under the Lambda runtime API.

mod chdb;
mod clickhouse;
mod cluster;
mod convergence;
mod events;
mod generic;
mod history;
mod hostile;
mod lambda_runtime;
mod privacy;
mod realworld;
mod support;
