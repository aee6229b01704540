//! One classification of every error the processor can meet.
//!
//! Each stage has its own `thiserror` enum (decode, sink, AWS); each implements [`Classify`],
//! which is the only place that decides what a failure means for the SQS message:
//!
//! - [`ErrorClass::Transient`]: the environment failed in a way that may pass (ClickHouse
//!   unreachable or overloaded, SQS, the deadline): retry later, never toward the DLQ;
//! - [`ErrorClass::Waiting`]: the message's own transient failure: it waits for an earlier change
//!   of its own (a TOAST base image, its FIFO group's predecessor) that may arrive or may never;
//!   on a standard queue it is retried by copies bounded by the retry age (the earlier change
//!   may sit in a delayed copy itself), on FIFO by its receive count;
//! - [`ErrorClass::Poison`]: this message can never succeed: dead-letter it, fail nothing else;
//! - [`ErrorClass::Systemic`]: the environment is broken (wrong password, missing database,
//!   untrusted certificate): every message of the batch fails, none is ever dead-lettered for
//!   it (docs/error-policy.md).
//!
//! Whether a failure is the environment's or the message's own is the class itself
//! ([`ErrorClass::is_environmental`]), never read from the code's text.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    Transient,
    /// Transient, but the message's own: logged, counted and dead-lettered as `transient` (the
    /// docs' class); the variant records whose failure it is.
    Waiting,
    Poison,
    Systemic,
}

impl ErrorClass {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Transient | ErrorClass::Waiting => "transient",
            ErrorClass::Poison => "poison",
            ErrorClass::Systemic => "systemic",
        }
    }

    /// True when the failure says nothing about the message: the environment failed (a
    /// dependency, the configuration, SQS, the clock). Such a failure must never move a message
    /// toward the DLQ (docs/error-policy.md, "Environmental versus the message's own").
    pub fn is_environmental(self) -> bool {
        match self {
            ErrorClass::Transient | ErrorClass::Systemic => true,
            ErrorClass::Waiting | ErrorClass::Poison => false,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environmental_is_the_class_and_the_labels_stay_three() {
        let all = [ErrorClass::Transient, ErrorClass::Waiting, ErrorClass::Poison, ErrorClass::Systemic];
        let environmental: Vec<_> = all.iter().map(|c| c.is_environmental()).collect();
        assert_eq!(environmental, [true, false, false, true]);
        let labels: Vec<_> = all.iter().map(|c| c.as_str()).collect();
        assert_eq!(labels, ["transient", "transient", "poison", "systemic"]);
    }
}
