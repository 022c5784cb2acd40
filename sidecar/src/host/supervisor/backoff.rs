//! The delay before a crashed service is started again.

use std::time::Duration;

/// The first delay.
pub(super) const INITIAL: Duration = Duration::from_millis(500);
/// The longest delay.
pub(super) const MAX: Duration = Duration::from_secs(30);
/// A service that stayed healthy this long before it exited starts over at [`INITIAL`].
pub(super) const RESET_AFTER: Duration = Duration::from_secs(10);

/// Exponential backoff: 500ms, 1s, 2s ... 30s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { next: INITIAL }
    }
}

impl Backoff {
    /// The delay after an exit of a service that had been healthy for `healthy_for`.
    pub(super) fn after_exit(&mut self, healthy_for: Option<Duration>) -> Duration {
        if healthy_for.is_some_and(|d| d >= RESET_AFTER) {
            self.next = INITIAL;
        }
        self.next()
    }

    /// The next delay, doubling the one after.
    pub(super) fn next(&mut self) -> Duration {
        let delay = self.next;
        self.next = (delay * 2).min(MAX);
        delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_max_and_resets_after_a_healthy_while() {
        let mut b = Backoff::default();
        let delays: Vec<u64> = (0..9).map(|_| b.after_exit(None).as_millis() as u64).collect();
        assert_eq!(delays, [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]);
        assert_eq!(b.after_exit(Some(Duration::from_secs(9))), MAX);
        assert_eq!(b.after_exit(Some(RESET_AFTER)), INITIAL);
        assert_eq!(b.next(), INITIAL * 2);
    }
}
