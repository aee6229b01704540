//! The Lambda function: an SQS batch in, a partial batch response out.
//!
//! ```text
//! SqsEvent ──► sqs::message::Message ──► pipeline (decode, write mirrors, derive facts)
//!                                              │
//!          MessageOutcome per message ──► handler ──► sqs (batch response, delayed copies, DLQ)
//! ```
//!
//! `lambda` runs the [`handler::Handler`] under the Lambda runtime; `secrets` reads ClickHouse
//! credentials and the task key from Secrets Manager; `telemetry` writes logs and EMF metrics.

pub mod config;
pub mod handler;
pub mod lambda;
pub mod pipeline;
pub mod secrets;
pub mod sqs;
pub mod telemetry;
