//! The tools around the function, for local runs, tests and operations: `capture` (PostgreSQL
//! logical decoding → Debezium events → SQS), `generator` (sales traffic), `poll` (the SQS event
//! source mapping, emulated), `redrive` (dead-letter queue back to the source), `verify`
//! (PostgreSQL's join against ClickHouse), `freshness` (commit-to-queryable latency),
//! `repair` (one key or table rewritten from PostgreSQL), `history` (versions and as-of reads) and `postgres` (the one PostgreSQL connect).

pub mod capture;
pub mod freshness;
pub mod generator;
pub mod history;
pub mod poll;
pub mod postgres;
pub mod redrive;
pub mod repair;
pub mod verify;
