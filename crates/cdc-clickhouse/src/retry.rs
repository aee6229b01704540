//! Retries of transient ClickHouse failures: exponential backoff with full jitter, bounded by
//! the invocation's deadline (Lambda kills a function that overruns its timeout, failing the
//! whole batch, docs/platform-facts.md §2).
//!
//! Every attempt is bounded too: by the deadline, and by `attempt_timeout`, so a call that never
//! answers (a half-open connection after a failover, a server that accepts and stalls) becomes a
//! `clickhouse.timeout` that is retried on a fresh attempt while time remains, instead of holding
//! the invocation until its end (docs/error-policy.md, "Deadlines").

use std::future::Future;
use std::time::{Duration, Instant};

use rand::RngExt;

use crate::SinkError;
use cdc_core::error::{Classify, ErrorClass};

#[derive(Debug, Clone, Copy)]
pub(crate) struct RetryPolicy {
    pub(crate) base: Duration,
    cap: Duration,
    max_attempts: u32,
    /// The longest one attempt may take (it is also cut at the deadline).
    pub(crate) attempt_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            base: Duration::from_millis(50),
            cap: Duration::from_secs(2),
            max_attempts: 6,
            attempt_timeout: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// The longest sleep before attempt `attempt + 1` (the jitter picks below it).
    fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(20)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// Runs `operation` until it succeeds, fails with a non-transient error, runs out of
    /// attempts, or the next sleep would pass `deadline`.
    pub(crate) async fn run<T, F, Fut>(&self, deadline: Instant, mut operation: F) -> Result<T, SinkError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, SinkError>>,
    {
        let mut attempt = 0;
        loop {
            let attempt_deadline = deadline.min(Instant::now() + self.attempt_timeout);
            let result = match tokio::time::timeout_at(attempt_deadline.into(), operation()).await {
                Ok(result) => result,
                Err(_) => Err(SinkError::TimedOut),
            };
            match result {
                Ok(value) => return Ok(value),
                Err(error) if error.class() != ErrorClass::Transient => return Err(error),
                Err(error) => {
                    attempt += 1;
                    let ceiling = self.ceiling(attempt - 1);
                    let sleep = ceiling.mul_f64(rand::rng().random::<f64>());
                    if attempt >= self.max_attempts || Instant::now() + sleep >= deadline {
                        return Err(error);
                    }
                    tracing::warn!(
                        code = error.code(),
                        attempt,
                        sleep_ms = sleep.as_millis() as u64,
                        "transient ClickHouse error, retrying"
                    );
                    tokio::time::sleep(sleep).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn ceilings_double_up_to_the_cap() {
        let policy = RetryPolicy {
            base: Duration::from_millis(100),
            cap: Duration::from_secs(1),
            max_attempts: 10,
            ..RetryPolicy::default()
        };
        let ceilings: Vec<u128> = (0..6).map(|a| policy.ceiling(a).as_millis()).collect();
        assert_eq!(ceilings, vec![100, 200, 400, 800, 1000, 1000]);
    }

    #[tokio::test]
    async fn transient_errors_are_retried_and_poison_is_not() {
        let policy = RetryPolicy {
            base: Duration::from_millis(1),
            cap: Duration::from_millis(2),
            max_attempts: 5,
            ..RetryPolicy::default()
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        let calls = AtomicU32::new(0);
        let result = policy
            .run(deadline, || async {
                if calls.fetch_add(1, Ordering::SeqCst) < 2 { Err(SinkError::TimedOut) } else { Ok(7) }
            })
            .await;
        assert_eq!(result.unwrap(), 7);
        assert_eq!(calls.load(Ordering::SeqCst), 3);

        let calls = AtomicU32::new(0);
        let result: Result<(), _> = policy
            .run(deadline, || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(SinkError::Server { code: 27, message: String::new() })
            })
            .await;
        assert!(result.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn retries_stop_at_the_attempt_limit() {
        let policy = RetryPolicy {
            base: Duration::from_millis(1),
            cap: Duration::from_millis(1),
            max_attempts: 3,
            ..RetryPolicy::default()
        };
        let calls = AtomicU32::new(0);
        let result: Result<(), _> = policy
            .run(Instant::now() + Duration::from_secs(5), || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(SinkError::Network("refused".into()))
            })
            .await;
        assert!(result.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_hung_attempt_is_cut_and_retried() {
        let policy = RetryPolicy {
            base: Duration::from_millis(1),
            cap: Duration::from_millis(1),
            max_attempts: 5,
            attempt_timeout: Duration::from_millis(50),
        };
        let calls = AtomicU32::new(0);
        let result = policy
            .run(Instant::now() + Duration::from_secs(5), || async {
                if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                    std::future::pending::<()>().await;
                }
                Ok(1)
            })
            .await;
        assert_eq!(result.unwrap(), 1);
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_call_that_never_answers_ends_at_the_deadline() {
        let started = Instant::now();
        let result: Result<(), _> = RetryPolicy::default()
            .run(started + Duration::from_millis(200), std::future::pending::<Result<(), SinkError>>)
            .await;
        assert!(matches!(result, Err(SinkError::TimedOut)));
        assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    }
}
