//! Exponential backoff with jitter for messages that failed transiently.
//!
//! Enters: a message's attempt number (its `ApproximateReceiveCount`, plus the environmental
//! attempts a re-sent copy carries). Leaves: the delay (seconds) before SQS hands the message out
//! again: a visibility timeout for `ChangeMessageVisibility`, or a re-sent copy's `DelaySeconds`.
//!
//! Why: with partial batch responses Lambda does not slow its polling when invocations fail
//! (docs/platform-facts.md §2), and a failed message otherwise comes back after the queue's fixed visibility
//! timeout. The backoff alone only spreads receives: an outage would still burn through
//! `maxReceiveCount`, which is why environmental failures re-send a copy instead
//! (`sqs::requeue`, docs/error-policy.md).

use std::time::Duration;

/// SQS rejects visibility timeouts above 12 hours.
pub(crate) const MAX_VISIBILITY_SECONDS: u32 = 43_200;

/// `delay(n) = min(cap, base × 2^(n−1))`, then "equal jitter": a uniform value in
/// `[delay/2, delay]`, so messages that failed together do not all come back together, yet no
/// retry comes back almost at once.
/// `BACKOFF_BASE_SECONDS` and `BACKOFF_CAP_SECONDS` (`crate::config::Config`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub cap: Duration,
}

impl Default for Backoff {
    /// 60 s doubling up to 1 h: a blip is retried soon, a long failure ever later. A message's
    /// own transient failures reach the DLQ after the sum of the delays of `maxReceiveCount − 1`
    /// receives (15 min at 5); environmental ones never do (docs/error-policy.md).
    fn default() -> Self {
        Self { base: Duration::from_secs(60), cap: Duration::from_secs(3600) }
    }
}

impl Backoff {
    /// The delay before jitter for the `receive_count`-th receive (1 = first delivery), in
    /// whole seconds, never above the cap nor above SQS's 12-hour limit.
    fn ceiling_seconds(&self, receive_count: u32) -> u32 {
        let cap = self.cap.as_secs().min(MAX_VISIBILITY_SECONDS as u64);
        let exponent = receive_count.saturating_sub(1).min(32);
        let delay = self.base.as_secs().saturating_mul(1u64 << exponent);
        delay.min(cap) as u32
    }

    /// The visibility timeout to set, jittered.
    #[cfg(test)]
    pub(crate) fn visibility_seconds(&self, receive_count: u32) -> u32 {
        self.jittered(receive_count, rand::random_range(0.0..=1.0))
    }

    /// Deterministic core of [`Self::visibility_seconds`]: `unit` in `[0, 1]` picks the point in
    /// `[ceiling/2, ceiling]`.
    pub(crate) fn jittered(&self, receive_count: u32, unit: f64) -> u32 {
        let ceiling = self.ceiling_seconds(receive_count);
        let half = ceiling / 2;
        let spread = (ceiling - half) as f64 * unit.clamp(0.0, 1.0);
        half + spread.round() as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backoff(base: u64, cap: u64) -> Backoff {
        Backoff { base: Duration::from_secs(base), cap: Duration::from_secs(cap) }
    }

    #[test]
    fn doubles_per_receive_up_to_the_cap() {
        let b = backoff(30, 900);
        let schedule: Vec<u32> = (1..=7).map(|n| b.ceiling_seconds(n)).collect();
        assert_eq!(schedule, vec![30, 60, 120, 240, 480, 900, 900]);
    }

    #[test]
    fn receive_count_zero_is_treated_as_first() {
        assert_eq!(backoff(10, 100).ceiling_seconds(0), 10);
    }

    #[test]
    fn huge_receive_counts_do_not_overflow() {
        assert_eq!(backoff(30, 900).ceiling_seconds(u32::MAX), 900);
        assert_eq!(backoff(u64::MAX, u64::MAX).ceiling_seconds(64), MAX_VISIBILITY_SECONDS);
    }

    #[test]
    fn cap_never_exceeds_sqs_limit() {
        assert_eq!(backoff(3600, 86_400).ceiling_seconds(10), MAX_VISIBILITY_SECONDS);
    }

    #[test]
    fn jitter_stays_between_half_and_full_delay() {
        let b = backoff(30, 900);
        assert_eq!(b.jittered(3, 0.0), 60);
        assert_eq!(b.jittered(3, 1.0), 120);
        for n in 1..10 {
            for _ in 0..100 {
                let v = b.visibility_seconds(n);
                let ceiling = b.ceiling_seconds(n);
                assert!(v >= ceiling / 2 && v <= ceiling, "{v} outside [{}, {ceiling}]", ceiling / 2);
            }
        }
    }

    #[test]
    fn zero_base_means_immediate_retry() {
        assert_eq!(backoff(0, 900).visibility_seconds(4), 0);
    }
}
