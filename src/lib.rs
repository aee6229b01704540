//! cdc-processor: PostgreSQL change events from SQS into ClickHouse, mirrored and denormalized.
//!
//! # Layout
//!
//! ```text
//! SqsEvent ──► sqs::message::Message ──► decode ──► change::ChangeEvent
//!                                                        │
//!                        mirror (one row per source row, version = source position)
//!                                                        │
//!                 sink (ClickHouse: one RowBinary INSERT per table, FINAL lookups)
//!                                                        │
//!                 fact (re-derive every sales_fact row the changes touch)
//!                                                        │
//!  pipeline ──► MessageOutcome per message ──► handler / sqs (batch response, backoff, DLQ)
//! ```
//!
//! `tables` names the four source tables; `error` holds the one classification
//! (transient / poison / systemic) every stage's error maps to. `lambda` and `main.rs` run the
//! handler under the Lambda runtime or from the command line; `secrets` and `telemetry` sit beside
//! it.
//!
//! Around the processor, for local runs and tests: `capture` (PostgreSQL logical decoding →
//! Debezium events → SQS), `generator` (sales traffic), `verify` (PostgreSQL's join against
//! ClickHouse) and `freshness` (commit-to-queryable latency).

pub mod capture;
pub mod change;
pub mod config;
pub mod decode;
pub mod error;
pub mod fact;
pub mod freshness;
pub mod generator;
pub mod generic;
pub mod handler;
pub mod identifier;
pub mod lambda;
pub mod mirror;
pub mod pipeline;
pub mod rederive;
pub mod repair;
pub mod secrets;
pub mod sink;
pub mod sqs;
pub mod tables;
pub mod telemetry;
pub mod verify;
