//! SQS: the batch a Lambda invocation receives and what it answers.
//!
//! `message` turns records into [`message::Message`]s; the other files turn outcomes into the
//! partial batch response, visibility backoff and dead-letter sends.

pub mod message;
