//! Re-derivation tasks: a set of facts to re-derive, walked page by page in order-item-id order.
//!
//! Enters: a dimension change whose fan-out is larger than one invocation should derive inline,
//! a truncation, or a follow-up message of our own. Leaves: pages of order item ids (read by the
//! sink), and, when the invocation's time runs out, a follow-up message body that continues the
//! task after the last item done. Why this is bounded and durable: docs/sales-fact.md,
//! "Fan-out".

use serde::{Deserialize, Serialize};

/// Which facts a task re-derives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "scope", content = "key", rename_all = "snake_case")]
pub enum Scope {
    /// The items that ever belonged to this order.
    Order(i64),
    /// The items that ever referenced this product.
    Product(i64),
    /// The items of the orders that ever belonged to this customer.
    Customer(i64),
    /// Every item ever mirrored or derived (after a truncation).
    All,
}

/// A scope and how far it got: every item id `<= after` is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    #[serde(flatten)]
    pub scope: Scope,
    pub after: i64,
}

/// The top-level field that marks a follow-up message of this processor.
const MARKER: &str = "cdcProcessorRederive";

#[derive(Serialize, Deserialize)]
struct Envelope {
    #[serde(rename = "cdcProcessorRederive")]
    task: Task,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("malformed re-derivation task")]
pub struct MalformedTask;

impl Task {
    pub fn new(scope: Scope) -> Self {
        Task { scope, after: i64::MIN }
    }

    /// The follow-up message that continues this task.
    pub fn to_body(self) -> String {
        serde_json::to_string(&Envelope { task: self }).expect("a task always serializes")
    }

    /// `None` when the body is not a task message at all (it is then decoded as a change);
    /// `Some(Err)` when it claims to be one but is malformed (poison).
    pub fn parse(body: &str) -> Option<Result<Task, MalformedTask>> {
        let trimmed = body.trim_start();
        // Cheap test first: change events never start with our marker.
        let rest = trimmed.strip_prefix('{')?.trim_start().strip_prefix('"')?;
        if !rest.starts_with(MARKER) {
            return None;
        }
        Some(serde_json::from_str::<Envelope>(trimmed).map(|e| e.task).map_err(|_| MalformedTask))
    }
}

impl crate::error::Classify for MalformedTask {
    fn class(&self) -> crate::error::ErrorClass {
        crate::error::ErrorClass::Poison
    }
    fn code(&self) -> &'static str {
        "task.malformed"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_round_trips_through_its_message_body() {
        for scope in [Scope::Order(-3), Scope::Product(42), Scope::Customer(7), Scope::All] {
            let task = Task { scope, after: 123_456 };
            assert_eq!(Task::parse(&task.to_body()), Some(Ok(task)));
        }
        assert_eq!(
            Task::new(Scope::Product(9)).to_body(),
            r#"{"cdcProcessorRederive":{"scope":"product","key":9,"after":-9223372036854775808}}"#
        );
    }

    #[test]
    fn change_events_are_not_tasks_and_broken_tasks_are_poison() {
        assert_eq!(Task::parse(r#"{"schema":{},"payload":{}}"#), None);
        assert_eq!(Task::parse(""), None);
        assert_eq!(
            Task::parse(r#"{"cdcProcessorRederive":{"scope":"planet","key":1,"after":0}}"#),
            Some(Err(MalformedTask))
        );
        assert_eq!(Task::parse(r#" { "cdcProcessorRederive": 5}"#), Some(Err(MalformedTask)));
    }
}
