//! The core of one invocation: messages in, one outcome per message out.
//!
//! decode → mirror rows → one INSERT per mirror table → re-derive touched facts → one INSERT
//! into `sales_fact`. Everything SQS-specific (batch response, FIFO rules, backoff, DLQ) lives in
//! `handler` and `sqs`, which see this stage only through [`Process`].

use std::future::Future;
use std::time::Instant;

use crate::error::{Classify, ErrorClass};
use crate::sqs::message::{Message, MessageOutcome};

/// A fault of the environment, not of any message: the invocation fails as a whole so that SQS
/// redelivers the batch later and no healthy message is dead-lettered.
#[derive(Debug, thiserror::Error)]
#[error("{code}: {detail}")]
pub struct SystemicError {
    pub code: &'static str,
    /// Safe to log: never contains row values, bodies or secrets.
    pub detail: String,
    /// True when the fault is an authentication failure (credentials may have been rotated).
    pub is_auth: bool,
}

impl Classify for SystemicError {
    fn class(&self) -> ErrorClass {
        ErrorClass::Systemic
    }
    fn code(&self) -> &'static str {
        self.code
    }
}

/// What the handler needs from the pipeline. Tests of SQS logic pass a fake.
pub trait Process: Send + Sync {
    /// Processes one batch. `deadline` is when the invocation must have answered (Lambda's
    /// remaining time minus a margin): transient retries stop before it.
    fn process(
        &self,
        messages: &[Message],
        deadline: Instant,
    ) -> impl Future<Output = Result<Vec<MessageOutcome>, SystemicError>> + Send;
}
