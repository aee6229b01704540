//! Integration tests against the real ClickHouse server (started by the README's test command).

mod chdb;
mod clickhouse;
mod convergence;
mod generic;
mod realworld;
mod support;
