//! SQS: the batch a Lambda invocation receives and what it answers.
//!
//! `message` turns records into [`message::Message`]s; the other files turn outcomes into the
//! partial batch response, visibility backoff, re-sent copies (outages) and dead-letter sends.

pub mod backoff;
pub mod batch;
pub mod dead_letter;
pub mod message;
pub mod poll;
pub mod queue;
pub mod redrive;
pub mod requeue;
