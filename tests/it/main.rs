//! Integration tests against the real ClickHouse server (started by the README's test command).

mod chdb;
mod convergence;
mod support;
