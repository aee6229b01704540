//! Integration tests against the real ClickHouse server (started by the README's test command).

mod chdb;
mod clickhouse;
mod convergence;
mod generic;
mod hostile;
mod realworld;
mod support;
