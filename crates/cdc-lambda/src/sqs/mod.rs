//! SQS: the batch a Lambda invocation receives and what it answers.
//!
//! `message` turns records into [`message::Message`]s; `fate` decides what becomes of each (the
//! error policy, one function); the other files carry it out: the partial batch response,
//! visibility backoff, re-sent copies (outages) and dead-letter sends.

pub mod backoff;
pub mod batch;
pub mod dead_letter;
pub(crate) mod fate;
pub mod message;
pub mod queue;
pub mod requeue;
