//! Exponential backoff with full jitter, as in the AWS architecture blog's
//! "Exponential Backoff And Jitter": the delay before retry `n` is drawn uniformly
//! from `[0, min(max, initial × 2^(n-1))]`, so many sidecars that fail together do not
//! retry together.

use rand::Rng;
use std::time::Duration;

/// Retry policy: exponential backoff with full jitter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total tries, the first included; 0 counts as 1.
    pub attempts: u32,
    /// The ceiling of the first retry's delay.
    pub initial: Duration,
    /// The largest ceiling of any delay.
    pub max: Duration,
}

impl Default for RetryPolicy {
    /// 5 attempts, 200 ms initial ceiling, 10 s largest ceiling.
    fn default() -> Self {
        RetryPolicy { attempts: 5, initial: Duration::from_millis(200), max: Duration::from_secs(10) }
    }
}

impl RetryPolicy {
    /// The number of tries, at least 1.
    pub fn attempts(&self) -> u32 {
        self.attempts.max(1)
    }

    /// The ceiling of the delay before retry `retry` (1 is the first retry, after the
    /// first attempt failed): `initial × 2^(retry-1)`, capped at `max`.
    pub fn ceiling(&self, retry: u32) -> Duration {
        let factor = 1u32.checked_shl(retry.saturating_sub(1)).unwrap_or(u32::MAX);
        self.initial.checked_mul(factor).unwrap_or(self.max).min(self.max)
    }

    /// A random delay in `[0, ceiling(retry)]`.
    pub fn delay(&self, retry: u32) -> Duration {
        self.delay_with(retry, &mut rand::thread_rng())
    }

    /// [`delay`](Self::delay) with a given random number generator.
    pub fn delay_with(&self, retry: u32, rng: &mut impl Rng) -> Duration {
        let ceiling = u64::try_from(self.ceiling(retry).as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(rng.gen_range(0..=ceiling))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn policy() -> RetryPolicy {
        RetryPolicy { attempts: 5, initial: Duration::from_millis(100), max: Duration::from_secs(1) }
    }

    #[test]
    fn ceiling_doubles_then_caps() {
        let p = policy();
        let ms: Vec<u128> = (1..=6).map(|n| p.ceiling(n).as_millis()).collect();
        assert_eq!(ms, [100, 200, 400, 800, 1000, 1000]);
    }

    #[test]
    fn ceiling_does_not_overflow() {
        let p = RetryPolicy { attempts: 1, initial: Duration::from_secs(u64::MAX / 2), max: Duration::MAX };
        assert_eq!(p.ceiling(40), Duration::MAX);
        assert_eq!(policy().ceiling(u32::MAX), Duration::from_secs(1));
        assert_eq!(policy().ceiling(0), Duration::from_millis(100));
    }

    #[test]
    fn delays_stay_within_bounds_and_spread() {
        let p = policy();
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for retry in 1..=8 {
            let ceiling = p.ceiling(retry);
            let delays: Vec<Duration> = (0..200).map(|_| p.delay_with(retry, &mut rng)).collect();
            assert!(delays.iter().all(|d| *d <= ceiling), "retry {retry}: a delay above {ceiling:?}");
            // Full jitter: both halves of the range are used.
            assert!(delays.iter().any(|d| *d < ceiling / 2), "retry {retry}: no delay in the lower half");
            assert!(delays.iter().any(|d| *d > ceiling / 2), "retry {retry}: no delay in the upper half");
        }
    }

    #[test]
    fn zero_attempts_means_one() {
        assert_eq!(RetryPolicy { attempts: 0, ..policy() }.attempts(), 1);
        assert_eq!(RetryPolicy::default().attempts(), 5);
    }
}
