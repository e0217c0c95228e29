//! Capped exponential backoff with full jitter (the AWS Architecture Blog's
//! "Exponential Backoff And Jitter"): sleep a random time in
//! `[0, min(cap, base * 2^attempt))`.

use std::time::Duration;

/// When and how long to retry.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// The first backoff ceiling.
    pub base: Duration,
    /// The largest backoff ceiling.
    pub cap: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 3,
            base: Duration::from_millis(50),
            cap: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    /// The ceiling of the backoff before retry number `attempt` (0-based).
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(20)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// A jittered backoff before retry number `attempt`.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let ceiling = self.ceiling(attempt).as_micros() as u64;
        Duration::from_micros(rand::random_range(0..=ceiling))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_then_caps_and_stays_below_the_ceiling() {
        let p = RetryPolicy::default();
        assert_eq!(p.ceiling(0), Duration::from_millis(50));
        assert_eq!(p.ceiling(3), Duration::from_millis(400));
        assert_eq!(p.ceiling(30), Duration::from_secs(5));
        for attempt in 0..10 {
            assert!(p.backoff(attempt) <= p.ceiling(attempt));
        }
    }
}
