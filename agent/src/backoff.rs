//! Exponential backoff with full jitter, shared by the hub reconnect loop, registration and the
//! reconciler's retries of failed deployments.
//!
//! Full jitter (a uniformly random delay between zero and the current ceiling) spreads a fleet
//! of agents that lost the hub at the same moment, so they do not return in one wave.

use std::time::Duration;

use rand::Rng;

use crate::config::BackoffConfig;

/// The delay sequence of one retrying activity.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    config: BackoffConfig,
    attempt: u32,
}

impl Backoff {
    pub fn new(config: BackoffConfig) -> Self {
        Self { config, attempt: 0 }
    }

    /// The ceiling of the next delay: `initial * 2^attempt`, capped at `max`.
    pub fn ceiling(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(31)).unwrap_or(u32::MAX);
        self.config
            .initial
            .saturating_mul(factor)
            .min(self.config.max)
    }

    /// The next delay, uniformly random in `[0, ceiling]`; moves the ceiling up.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(rand::rng().random_range(0..=nanos))
    }

    /// The longest delay, without jitter: used when retrying soon cannot help.
    pub fn max(&self) -> Duration {
        self.config.max
    }

    /// Starts over from the initial ceiling, after a success that lasted.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> BackoffConfig {
        BackoffConfig {
            initial: Duration::from_millis(200),
            max: Duration::from_secs(30),
        }
    }

    #[test]
    fn ceiling_doubles_up_to_max() {
        let mut b = Backoff::new(config());
        let mut ceilings = Vec::new();
        for _ in 0..10 {
            ceilings.push(b.ceiling().as_millis());
            b.next_delay();
        }
        assert_eq!(
            ceilings,
            [200, 400, 800, 1600, 3200, 6400, 12800, 25600, 30000, 30000]
        );
    }

    #[test]
    fn delays_stay_within_ceiling_even_after_many_attempts() {
        let mut b = Backoff::new(config());
        for _ in 0..200 {
            let ceiling = b.ceiling();
            let d = b.next_delay();
            assert!(d <= ceiling, "{d:?} > {ceiling:?}");
            assert!(d <= config().max);
        }
    }

    #[test]
    fn reset_starts_over() {
        let mut b = Backoff::new(config());
        for _ in 0..5 {
            b.next_delay();
        }
        b.reset();
        assert_eq!(b.ceiling(), Duration::from_millis(200));
        assert_eq!(b.max(), Duration::from_secs(30));
    }

    #[test]
    fn jitter_actually_varies() {
        let mut b = Backoff::new(BackoffConfig {
            initial: Duration::from_secs(10),
            max: Duration::from_secs(10),
        });
        let delays: std::collections::HashSet<_> = (0..20).map(|_| b.next_delay()).collect();
        assert!(delays.len() > 1);
    }

    #[tokio::test(start_paused = true)]
    async fn sleeping_a_delay_takes_no_longer_than_the_ceiling() {
        let mut b = Backoff::new(config());
        let start = tokio::time::Instant::now();
        for _ in 0..4 {
            tokio::time::sleep(b.next_delay()).await;
        }
        assert!(start.elapsed() <= Duration::from_millis(200 + 400 + 800 + 1600));
    }
}
