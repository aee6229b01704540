//! One classification of every error the processor can meet.
//!
//! Each stage has its own `thiserror` enum (decode, sink, AWS); each implements [`Classify`],
//! which is the only place that decides what a failure means for the SQS message:
//!
//! - [`ErrorClass::Transient`]: retry later (SQS redelivers after a backoff);
//! - [`ErrorClass::Poison`]: this message can never succeed: dead-letter it, fail nothing else;
//! - [`ErrorClass::Systemic`]: the environment is broken (wrong password, missing database,
//!   untrusted certificate): every message of the batch fails, none is ever dead-lettered for
//!   it (docs/error-policy.md).

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    Transient,
    Poison,
    Systemic,
}

impl ErrorClass {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Transient => "transient",
            ErrorClass::Poison => "poison",
            ErrorClass::Systemic => "systemic",
        }
    }
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Implemented by every stage's error type.
pub trait Classify {
    fn class(&self) -> ErrorClass;
    /// A stable, dotted code (`body.not_json`, `value.bad_decimal`, `clickhouse.auth`) that goes
    /// into logs, metrics and dead-letter attributes. Never contains row values.
    fn code(&self) -> &'static str;
}
