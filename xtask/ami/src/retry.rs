//! Retry policy for AWS calls: which failures are worth another attempt, how long to wait
//! (capped exponential backoff with jitter), and the loop that applies both.
//! The EBS direct API docs ask clients to retry 5xx answers, ThrottlingException and
//! RequestThrottledException; the SDK's own retries are turned off for EBS so this is the one layer.

use std::future::Future;
use std::time::Duration;

/// How a failed call should be treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Throttling, 5xx, timeouts, dropped connections: try again.
    Transient,
    /// Anything else (denied, invalid, quota): retrying cannot help.
    Permanent,
}

const THROTTLING: &[&str] = &[
    "ThrottlingException",
    "RequestThrottledException",
    "Throttling",
    "RequestLimitExceeded",
    "TooManyRequestsException",
    "SlowDown",
    "ConcurrentLimitExceededException",
    "InternalServerException",
    "InternalError",
    "InternalFailure",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "RequestTimeout",
    "RequestTimeoutException",
];

/// Classifies a failure from what the service said: its HTTP status and error code, if any.
/// `None` for both means no answer arrived (I/O error, timeout): transient.
pub fn classify(status: Option<u16>, code: Option<&str>) -> Class {
    if let Some(code) = code
        && THROTTLING.contains(&code)
    {
        return Class::Transient;
    }
    match status {
        None => Class::Transient,
        Some(s) if s >= 500 || s == 429 || s == 408 => Class::Transient,
        Some(_) => Class::Permanent,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Total attempts, the first included.
    pub max_attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
}

impl Policy {
    pub const DEFAULT: Policy = Policy {
        max_attempts: 8,
        base_delay: Duration::from_millis(250),
        max_delay: Duration::from_secs(20),
    };

    /// Wait before attempt `attempt + 1`, after `attempt` (1-based) failed: `base * 2^(attempt-1)`,
    /// capped, then scaled by `jitter` in [0, 1] into [cap/2, cap] so parallel uploads spread out.
    pub fn backoff(&self, attempt: u32, jitter: f64) -> Duration {
        let exp = attempt.saturating_sub(1).min(30);
        let cap = self
            .base_delay
            .saturating_mul(1u32 << exp)
            .min(self.max_delay);
        let j = jitter.clamp(0.0, 1.0);
        cap.mul_f64(0.5 + 0.5 * j)
    }

    /// What to do after attempt `attempt` (1-based) failed with `class`.
    pub fn decide(&self, attempt: u32, class: Class, jitter: f64) -> Decision {
        match class {
            Class::Permanent => Decision::GiveUp,
            Class::Transient if attempt >= self.max_attempts => Decision::GiveUp,
            Class::Transient => Decision::RetryAfter(self.backoff(attempt, jitter)),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    RetryAfter(Duration),
    GiveUp,
}

/// A fresh jitter value in [0, 1]. std's `RandomState` is randomly keyed per instance, which is
/// all the randomness backoff needs; a rand dependency is not worth it.
pub fn jitter() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u8(0);
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// Runs `op` until it succeeds, fails permanently, or runs out of attempts. `classify_err` says
/// how each error should be treated; `on_retry` hears about each retry (attempt, error, wait).
pub async fn run<T, E, F, Fut>(
    policy: &Policy,
    mut op: F,
    classify_err: impl Fn(&E) -> Class,
    mut on_retry: impl FnMut(u32, &E, Duration),
) -> Result<T, E>
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut attempt = 1;
    loop {
        match op(attempt).await {
            Ok(v) => return Ok(v),
            Err(e) => match policy.decide(attempt, classify_err(&e), jitter()) {
                Decision::GiveUp => return Err(e),
                Decision::RetryAfter(d) => {
                    on_retry(attempt, &e, d);
                    tokio::time::sleep(d).await;
                    attempt += 1;
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn classification() {
        assert_eq!(
            classify(Some(400), Some("ThrottlingException")),
            Class::Transient
        );
        assert_eq!(
            classify(Some(400), Some("RequestThrottledException")),
            Class::Transient
        );
        assert_eq!(classify(Some(503), None), Class::Transient);
        assert_eq!(classify(Some(500), Some("Whatever")), Class::Transient);
        assert_eq!(classify(Some(429), None), Class::Transient);
        assert_eq!(classify(None, None), Class::Transient);
        assert_eq!(
            classify(Some(403), Some("AccessDeniedException")),
            Class::Permanent
        );
        assert_eq!(
            classify(Some(400), Some("ValidationException")),
            Class::Permanent
        );
        assert_eq!(
            classify(Some(402), Some("ServiceQuotaExceededException")),
            Class::Permanent
        );
        assert_eq!(classify(Some(404), None), Class::Permanent);
    }

    #[test]
    fn backoff_doubles_then_caps() {
        let p = Policy {
            max_attempts: 10,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
        };
        assert_eq!(p.backoff(1, 1.0), Duration::from_millis(100));
        assert_eq!(p.backoff(2, 1.0), Duration::from_millis(200));
        assert_eq!(p.backoff(3, 1.0), Duration::from_millis(400));
        assert_eq!(p.backoff(5, 1.0), Duration::from_secs(1));
        assert_eq!(p.backoff(60, 1.0), Duration::from_secs(1));
        // Jitter keeps the wait within [cap/2, cap].
        assert_eq!(p.backoff(3, 0.0), Duration::from_millis(200));
        assert_eq!(p.backoff(3, 7.0), Duration::from_millis(400));
    }

    #[test]
    fn decide_gives_up_on_permanent_and_after_max_attempts() {
        let p = Policy::DEFAULT;
        assert_eq!(p.decide(1, Class::Permanent, 0.5), Decision::GiveUp);
        assert!(matches!(
            p.decide(1, Class::Transient, 0.5),
            Decision::RetryAfter(_)
        ));
        assert!(matches!(
            p.decide(7, Class::Transient, 0.5),
            Decision::RetryAfter(_)
        ));
        assert_eq!(p.decide(8, Class::Transient, 0.5), Decision::GiveUp);
    }

    #[test]
    fn jitter_is_in_unit_interval() {
        for _ in 0..100 {
            let j = jitter();
            assert!((0.0..=1.0).contains(&j), "{j}");
        }
    }

    fn quick(max_attempts: u32) -> Policy {
        Policy {
            max_attempts,
            base_delay: Duration::ZERO,
            max_delay: Duration::ZERO,
        }
    }

    fn block_on<F: Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn run_retries_transient_until_success() {
        let calls = Cell::new(0);
        let mut retries = Vec::new();
        let r: Result<&str, Class> = block_on(run(
            &quick(5),
            |attempt| {
                calls.set(calls.get() + 1);
                async move {
                    if attempt < 3 {
                        Err(Class::Transient)
                    } else {
                        Ok("done")
                    }
                }
            },
            |e| *e,
            |attempt, _, _| retries.push(attempt),
        ));
        assert_eq!(r, Ok("done"));
        assert_eq!(calls.get(), 3);
        assert_eq!(retries, vec![1, 2]);
    }

    #[test]
    fn run_stops_at_permanent_error() {
        let calls = Cell::new(0);
        let r: Result<(), Class> = block_on(run(
            &quick(5),
            |_| {
                calls.set(calls.get() + 1);
                async { Err(Class::Permanent) }
            },
            |e| *e,
            |_, _, _| {},
        ));
        assert_eq!(r, Err(Class::Permanent));
        assert_eq!(calls.get(), 1);
    }

    #[test]
    fn run_gives_up_after_max_attempts() {
        let calls = Cell::new(0);
        let r: Result<(), Class> = block_on(run(
            &quick(4),
            |_| {
                calls.set(calls.get() + 1);
                async { Err(Class::Transient) }
            },
            |e| *e,
            |_, _, _| {},
        ));
        assert_eq!(r, Err(Class::Transient));
        assert_eq!(calls.get(), 4);
    }
}
