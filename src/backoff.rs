//! The one exponential backoff of the retry loops that are not a single HTTP request (the poll
//! loop's fetch and send, the OTLP export, the Agent's streams): a delay that starts at `min`,
//! doubles after each failure up to `max`, and can be reset after a success. With jitter, each
//! delay handed out is drawn from its upper half (`[d/2, d]`), so that many streams failing
//! together do not retry in lock step. Sleeping is the caller's, on `tokio::time`, so tests can
//! pause the clock.

use std::time::Duration;

/// Why a backoff cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackoffError {
    /// `min` is zero (a tight retry loop).
    #[error("backoff: the first delay must be above zero")]
    ZeroMin,
    /// `min` is above `max`.
    #[error("backoff: the first delay {min:?} is above the cap {max:?}")]
    MinAboveMax {
        /// The first delay.
        min: Duration,
        /// The cap.
        max: Duration,
    },
}

/// Exponential backoff from `min` doubling to `max`.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    current: Duration,
    jitter: bool,
}

impl Backoff {
    /// A backoff from `min` doubling to `max`; `jitter` draws each delay from `[d/2, d]`.
    pub fn try_new(min: Duration, max: Duration, jitter: bool) -> Result<Self, BackoffError> {
        if min.is_zero() {
            return Err(BackoffError::ZeroMin);
        }
        if min > max {
            return Err(BackoffError::MinAboveMax { min, max });
        }
        Ok(Self {
            min,
            max,
            current: min,
            jitter,
        })
    }

    /// [`try_new`](Self::try_new) for settings that are already validated: a `max` below `min`
    /// is raised to `min`, a zero `min` becomes 1 ms.
    pub(crate) fn clamped(min: Duration, max: Duration, jitter: bool) -> Self {
        let min = min.max(Duration::from_millis(1));
        Self {
            min,
            max: max.max(min),
            current: min,
            jitter,
        }
    }

    /// The delay to wait now (jittered if asked), doubling the next one up to the cap.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let delay = self.current;
        self.current = self.current.saturating_mul(2).min(self.max);
        if self.jitter {
            delay.mul_f64(rand::random_range(0.5..=1.0))
        } else {
            delay
        }
    }

    /// The delay the next [`next_delay`](Self::next_delay) starts from (before jitter).
    pub(crate) fn peek(&self) -> Duration {
        self.current
    }

    /// Back to `min` (after a success).
    pub(crate) fn reset(&mut self) {
        self.current = self.min;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn doubles_to_the_cap_and_resets() {
        let mut b = Backoff::try_new(MS(100), MS(500), false).unwrap();
        let delays: Vec<Duration> = (0..5).map(|_| b.next_delay()).collect();
        assert_eq!(delays, [MS(100), MS(200), MS(400), MS(500), MS(500)]);
        b.reset();
        assert_eq!(b.next_delay(), MS(100));
        assert_eq!(b.peek(), MS(200));
    }

    #[test]
    fn jitter_stays_in_the_upper_half() {
        let mut b = Backoff::try_new(MS(1000), MS(1000), true).unwrap();
        for _ in 0..200 {
            let d = b.next_delay();
            assert!(d >= MS(500) && d <= MS(1000), "{d:?}");
        }
    }

    #[test]
    fn refuses_zero_and_inverted_bounds() {
        assert_eq!(
            Backoff::try_new(Duration::ZERO, MS(1), false).unwrap_err(),
            BackoffError::ZeroMin
        );
        assert!(matches!(
            Backoff::try_new(MS(2), MS(1), false),
            Err(BackoffError::MinAboveMax { .. })
        ));
        let clamped = Backoff::clamped(Duration::ZERO, Duration::ZERO, false);
        assert_eq!(clamped.peek(), MS(1));
    }
}
