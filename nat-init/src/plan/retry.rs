//! When to try again: the back-off of a failed stage (and of the `no lease` report), and the
//! throttle that keeps a repeating error line from flooding the console.

use std::time::Duration;

/// First retry delay of a failed stage.
pub const RETRY_MIN: Duration = Duration::from_millis(500);
/// Retry delay cap: a broken stage is retried (and reported) at least this often.
pub const RETRY_MAX: Duration = Duration::from_secs(30);

/// Exponential back-off: `min`, doubling to `max`, back to `min` after a success.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    last: Option<Duration>,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max: max.max(min),
            last: None,
        }
    }

    /// The delay before the next attempt after a failure.
    pub fn failure(&mut self) -> Duration {
        let next = match self.last {
            None => self.min,
            Some(d) => d.saturating_mul(2).min(self.max),
        };
        self.last = Some(next);
        next
    }

    pub fn success(&mut self) {
        self.last = None;
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new(RETRY_MIN, RETRY_MAX)
    }
}

/// Keeps a repeating error from flooding the console: a line is printed when it differs from
/// the previous one or when `gap_ms` has passed since that was printed.
#[derive(Debug, Clone, Default)]
pub struct Throttle {
    last: Option<(String, u64)>,
}

impl Throttle {
    pub fn should_print(&mut self, line: &str, now_ms: u64, gap_ms: u64) -> bool {
        match &self.last {
            Some((l, at)) if l == line && now_ms.saturating_sub(*at) < gap_ms => false,
            _ => {
                self.last = Some((line.to_string(), now_ms));
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_cap_and_resets() {
        let mut b = Backoff::default();
        let got: Vec<u64> = (0..9).map(|_| b.failure().as_millis() as u64).collect();
        assert_eq!(
            got,
            [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]
        );
        b.success();
        assert_eq!(b.failure(), Duration::from_millis(500));
        let mut odd = Backoff::new(Duration::from_secs(5), Duration::from_secs(1));
        assert_eq!(odd.failure(), Duration::from_secs(5));
        assert_eq!(odd.failure(), Duration::from_secs(5));
    }

    #[test]
    fn throttle_suppresses_repeats_only() {
        let mut t = Throttle::default();
        assert!(t.should_print("a", 0, 1000));
        assert!(!t.should_print("a", 999, 1000));
        assert!(t.should_print("b", 999, 1000));
        assert!(t.should_print("a", 1000, 1000));
        assert!(!t.should_print("a", 1500, 1000));
        assert!(t.should_print("a", 2000, 1000));
    }
}
