//! One message's fate: the error policy of docs/error-policy.md as one function.
//!
//! Enters: what the pipeline made of the message ([`MessageOutcome`]: its class and code) and
//! what the handler knows around it ([`Situation`]: FIFO or standard, receive count, attempt
//! counter, retry age, the fate of the earlier failure that blocks it, which sends are
//! possible) under the function's settings ([`Policy`]). Leaves: one [`Fate`].
//!
//! Every decision about a message goes through [`fate`]: the first one, and the fallback when a
//! send it asked for did not happen (the handler asks again with that send marked impossible),
//! and a blocked FIFO message's, once its blocker's fate is settled. Nothing here reads a code's
//! text: whether a failure is the environment's is its class ([`ErrorClass::is_environmental`]).

use std::time::Duration;

use crate::sqs::backoff::Backoff;
use crate::sqs::message::MessageOutcome;
use crate::sqs::requeue;
use cdc_core::error::ErrorClass;

/// What becomes of one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fate {
    /// Delivered or skipped: acknowledged (left out of the batch response).
    Ack,
    /// Sent to the dead-letter queue with its diagnostics, then acknowledged.
    DeadLetter(DeadLetterReason),
    /// Standard queue, environmental failure: a fresh copy is sent to the source queue with
    /// this delay (the original is acknowledged), so its receive count never grows for the
    /// environment's sake.
    Copy { delay_seconds: u32 },
    /// Reported failed (listed in `batchItemFailures`); its visibility is set to this many
    /// seconds so it comes back after its backoff (0: at once).
    Fail { visibility_seconds: u32 },
}

/// Why a message goes to the dead-letter queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DeadLetterReason {
    /// It can never succeed: the failure's own code goes into `error_code`.
    Poison,
    /// Retried for longer than the retry age (its environment failed, or it waited for an
    /// earlier change of its own that never came): `retry.expired`.
    Expired,
}

impl Fate {
    /// Listed in the batch response, so SQS hands the message out again.
    pub(crate) fn is_reported_failed(self) -> bool {
        matches!(self, Fate::Fail { .. })
    }
}

/// The function's settings the policy reads.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Policy {
    /// `DEAD_LETTER_QUEUE_URL` is set.
    pub(crate) dead_letter_queue: bool,
    /// `REQUEUE_ON_OUTAGE`: environmental failures on a standard queue are re-sent as copies.
    pub(crate) requeue: bool,
    /// `RETRY_MAX_AGE_SECONDS`: no copy past this age; the DLQ as `retry.expired` instead.
    pub(crate) retry_max_age: Duration,
    pub(crate) backoff: Backoff,
}

/// What is known about one message when its fate is decided.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Situation {
    /// The batch came from a FIFO queue.
    pub(crate) fifo: bool,
    /// `ApproximateReceiveCount` (1 on first delivery).
    pub(crate) receive_count: u32,
    /// `cdc_attempt`: environmental failures met by earlier copies (0 for an original).
    pub(crate) attempt: u32,
    /// Time since the message was first seen (`sqs::requeue::first_seen_ms`).
    pub(crate) retry_age: Duration,
    /// FIFO: an earlier message of its group failed in this batch; the fate it settled on.
    pub(crate) blocked_by: Option<Fate>,
    /// A dead-letter send can be made: a DLQ is configured and no send to it failed yet.
    pub(crate) can_dead_letter: bool,
    /// A copy can be made: the source queue is known, the attributes leave room for the
    /// counter, and no re-send failed yet.
    pub(crate) can_copy: bool,
    /// Where in `[ceiling/2, ceiling]` the backoff lands (`Backoff::jittered`), drawn once per
    /// message so that messages failing together do not come back together.
    pub(crate) jitter: f64,
}

/// The message's fate (docs/error-policy.md: "The three classes", "Bounded retries", "How
/// outages avoid the DLQ", "FIFO queues").
pub(crate) fn fate(outcome: &MessageOutcome, situation: &Situation, policy: &Policy) -> Fate {
    // The receive count plus the copies before it: the backoff keeps growing across copies.
    let backoff = |count: u32| policy.backoff.jittered(count, situation.jitter);
    let report_failed =
        Fate::Fail { visibility_seconds: backoff(situation.receive_count.saturating_add(situation.attempt)) };
    // FIFO: whatever its own outcome, a message after a failure in its group comes back with the
    // message that blocked it, or at once when that one was dead-lettered.
    if let Some(blocker) = situation.blocked_by {
        let visibility_seconds = match blocker {
            Fate::Fail { visibility_seconds } => visibility_seconds,
            _ => 0,
        };
        return Fate::Fail { visibility_seconds };
    }
    let class = match outcome {
        MessageOutcome::Delivered | MessageOutcome::Skipped(_) => return Fate::Ack,
        MessageOutcome::Failed { class, .. } => *class,
    };
    if class == ErrorClass::Poison {
        // Without a DLQ (or when the send failed) it comes back at once, so the queue's
        // redrive policy moves it after maxReceiveCount receives, not maxReceiveCount timeouts.
        return if policy.dead_letter_queue && situation.can_dead_letter {
            Fate::DeadLetter(DeadLetterReason::Poison)
        } else {
            Fate::Fail { visibility_seconds: 0 }
        };
    }
    // A systemic outcome on one message (a table's schema) is treated like a transient one of
    // the environment: retried, never dead-lettered for it. A message waiting for an earlier
    // change of its own (a TOAST base) is copied too: that change may itself sit in a delayed
    // copy (up to 900 s per hop) during an outage, so waiting must not spend receives while it
    // can still arrive; the retry age bounds the wait as it bounds an outage.
    let copied = class.is_environmental() || class == ErrorClass::Waiting;
    if !copied || !policy.requeue || situation.fifo {
        return report_failed;
    }
    // Copies are bounded by age: past it, the DLQ with the reason (a parking lot an operator
    // redrives once the environment is fixed).
    if situation.retry_age > policy.retry_max_age {
        return if policy.dead_letter_queue && situation.can_dead_letter {
            Fate::DeadLetter(DeadLetterReason::Expired)
        } else {
            report_failed
        };
    }
    if situation.can_copy {
        Fate::Copy { delay_seconds: backoff(situation.attempt.saturating_add(1)).min(requeue::MAX_DELAY_SECONDS) }
    } else {
        report_failed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    fn failed(class: ErrorClass, code: &'static str) -> MessageOutcome {
        MessageOutcome::Failed { class, code, table: None }
    }

    fn policy() -> Policy {
        Policy {
            dead_letter_queue: true,
            requeue: true,
            retry_max_age: Duration::from_secs(86_400),
            backoff: Backoff { base: Duration::from_secs(60), cap: HOUR },
        }
    }

    /// A first delivery on a standard queue, every send possible, the full backoff (jitter 1).
    fn standard() -> Situation {
        Situation {
            fifo: false,
            receive_count: 1,
            attempt: 0,
            retry_age: Duration::ZERO,
            blocked_by: None,
            can_dead_letter: true,
            can_copy: true,
            jitter: 1.0,
        }
    }

    const DELIVERED: MessageOutcome = MessageOutcome::Delivered;
    const fn fail(visibility_seconds: u32) -> Fate {
        Fate::Fail { visibility_seconds }
    }
    const fn copy(delay_seconds: u32) -> Fate {
        Fate::Copy { delay_seconds }
    }
    const POISON_DLQ: Fate = Fate::DeadLetter(DeadLetterReason::Poison);
    const EXPIRED: Fate = Fate::DeadLetter(DeadLetterReason::Expired);

    #[test]
    fn the_error_policy_table() {
        let network = failed(ErrorClass::Transient, "clickhouse.network");
        let tls = failed(ErrorClass::Systemic, "clickhouse.tls");
        let deadline = failed(ErrorClass::Transient, "deadline.exceeded");
        let follow_up = failed(ErrorClass::Transient, "sqs.follow_up_not_sent");
        let schema = failed(ErrorClass::Systemic, "schema.unsupported_type");
        let toast = failed(ErrorClass::Waiting, "toast.base_missing");
        let poison = failed(ErrorClass::Poison, "body.not_json");
        let bad_data = failed(ErrorClass::Poison, "clickhouse.bad_data");
        let no_dlq = Policy { dead_letter_queue: false, ..policy() };
        let no_requeue = Policy { requeue: false, ..policy() };
        let fifo = Situation { fifo: true, ..standard() };
        let third = Situation { receive_count: 3, ..standard() };
        let copied = Situation { attempt: 3, ..standard() };
        let old = Situation { retry_age: 25 * HOUR, attempt: 90, ..standard() };
        let dlq_send_failed = Situation { can_dead_letter: false, ..standard() };
        let copy_impossible = Situation { can_copy: false, ..standard() };
        let blocked_by_failure = Situation { blocked_by: Some(fail(240)), ..fifo };
        let blocked_by_dead_letter = Situation { blocked_by: Some(POISON_DLQ), ..fifo };
        let default = policy();

        #[rustfmt::skip]
        let table: &[(&str, &MessageOutcome, Situation, &Policy, Fate)] = &[
            // Delivered or skipped: acknowledged.
            ("delivered", &DELIVERED, standard(), &default, Fate::Ack),
            ("skipped", &MessageOutcome::Skipped("tombstone"), fifo, &default, Fate::Ack),
            // Poison: the DLQ at once with diagnostics, else failed with visibility 0.
            ("poison, DLQ", &poison, third, &default, POISON_DLQ),
            ("a rejected row is poison", &bad_data, standard(), &default, POISON_DLQ),
            ("poison, no DLQ", &poison, standard(), &no_dlq, fail(0)),
            ("poison, DLQ send failed", &poison, dlq_send_failed, &default, fail(0)),
            ("poison on FIFO, DLQ", &poison, fifo, &default, POISON_DLQ),
            // Waiting for its own earlier change: copied like an outage (the base may sit in a
            // delayed copy), so no receive counts; past the retry age, parked as retry.expired.
            ("toast, first receive", &toast, standard(), &default, copy(60)),
            ("toast, third receive", &toast, third, &default, copy(60)),
            ("toast, after copies", &toast, copied, &default, copy(480)),
            ("toast, past the retry age", &toast, old, &default, EXPIRED),
            ("toast, requeue off", &toast, third, &no_requeue, fail(240)),
            ("toast on fifo", &toast, Situation { receive_count: 2, ..fifo }, &default, fail(120)),
            // Environmental on a standard queue: a copy, delayed by the attempt's backoff.
            ("network", &network, standard(), &default, copy(60)),
            ("tls (systemic)", &tls, third, &default, copy(60)),
            ("deadline", &deadline, standard(), &default, copy(60)),
            ("follow-ups not sent, fifth receive", &follow_up, Situation { receive_count: 5, ..standard() }, &default, copy(60)),
            ("one table's schema", &schema, standard(), &default, copy(60)),
            ("fourth environmental failure", &network, copied, &default, copy(480)),
            ("the delay is clamped to SQS's 900 s", &network, Situation { attempt: 40, ..standard() }, &default, copy(900)),
            // Past the retry age: parked in the DLQ as retry.expired, or failed without one.
            ("expired, DLQ", &network, old, &default, EXPIRED),
            ("expired, no DLQ", &tls, old, &no_dlq, fail(3600)),
            ("expired, DLQ send failed", &network, Situation { can_dead_letter: false, ..old }, &default, fail(3600)),
            ("exactly the retry age is not past it", &network, Situation { retry_age: Duration::from_secs(86_400), ..standard() }, &default, copy(60)),
            // No copy possible (no room for the counter, no source queue, the send failed).
            ("copy impossible", &network, copy_impossible, &default, fail(60)),
            ("copy impossible after copies", &network, Situation { can_copy: false, ..copied }, &default, fail(480)),
            // REQUEUE_ON_OUTAGE=false: the old path, backoff on receive count plus attempts.
            ("requeue off", &network, third, &no_requeue, fail(240)),
            // FIFO: no copies; reported failed with the backoff.
            ("fifo environmental", &network, fifo, &default, fail(60)),
            ("fifo systemic", &tls, Situation { receive_count: 2, ..fifo }, &default, fail(120)),
            // FIFO blocked: with its blocker's visibility, or at once after a dead-letter send.
            ("blocked by a failure", &DELIVERED, blocked_by_failure, &default, fail(240)),
            ("blocked by a dead-lettered message", &network, blocked_by_dead_letter, &default, fail(0)),
        ];
        for (case, outcome, situation, policy, expected) in table {
            assert_eq!(fate(outcome, situation, policy), *expected, "{case}");
        }
    }

    #[test]
    fn jitter_lands_between_half_and_the_full_backoff() {
        let network = failed(ErrorClass::Transient, "clickhouse.network");
        let toast = failed(ErrorClass::Waiting, "toast.base_missing");
        let low = Situation { jitter: 0.0, receive_count: 3, ..standard() };
        assert_eq!(fate(&network, &low, &policy()), copy(30));
        assert_eq!(fate(&toast, &low, &policy()), copy(30));
        let no_requeue = Policy { requeue: false, ..policy() };
        assert_eq!(fate(&toast, &low, &no_requeue), fail(120));
    }

    #[test]
    fn only_failures_are_reported_failed() {
        assert!(fail(0).is_reported_failed());
        assert!(![Fate::Ack, POISON_DLQ, EXPIRED, copy(1)].iter().any(|f| f.is_reported_failed()));
    }
}
