//! Capped exponential backoff with full jitter, as a pure function of the attempt number.
//!
//! Full jitter (a uniform delay between zero and the exponential ceiling) spreads the retries
//! of many pipelines hitting the same overloaded server, which a fixed schedule would
//! synchronise (AWS Architecture Blog, "Exponential Backoff And Jitter").

use std::time::Duration;

use rand::Rng;

/// Default first ceiling.
pub const DEFAULT_INITIAL: Duration = Duration::from_millis(100);
/// Default growth factor per attempt.
pub const DEFAULT_FACTOR: u32 = 2;
/// Default cap: no wait is longer than this.
pub const DEFAULT_CAP: Duration = Duration::from_secs(10);

/// Retry delays: attempt `k` (1-based) waits a uniform random time in
/// `[0, min(cap, initial × factor^(k-1))]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Ceiling of the first retry.
    pub initial: Duration,
    /// Growth of the ceiling per attempt (1 keeps it constant).
    pub factor: u32,
    /// Largest ceiling.
    pub cap: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: DEFAULT_INITIAL,
            factor: DEFAULT_FACTOR,
            cap: DEFAULT_CAP,
        }
    }
}

impl Backoff {
    /// The largest delay attempt `attempt` may wait (attempts 0 and 1 both give `initial`,
    /// capped). Never decreases as `attempt` grows.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let cap = self.cap.as_nanos();
        let exp = attempt.saturating_sub(1);
        let grown = u128::from(self.factor)
            .checked_pow(exp)
            .and_then(|m| self.initial.as_nanos().checked_mul(m))
            .unwrap_or(u128::MAX);
        duration_from_nanos(grown.min(cap))
    }

    /// A random delay in `[0, ceiling(attempt)]`.
    pub fn next_delay<G: Rng + ?Sized>(&self, attempt: u32, rng: &mut G) -> Duration {
        let ceiling = self.ceiling(attempt).as_nanos();
        duration_from_nanos(rng.random_range(0..=ceiling))
    }
}

fn duration_from_nanos(n: u128) -> Duration {
    // A `Duration` holds u64 seconds; anything beyond is clamped (no real cap gets near it).
    let secs = u64::try_from(n / 1_000_000_000).unwrap_or(u64::MAX);
    let nanos = u32::try_from(n % 1_000_000_000).unwrap_or(0);
    Duration::new(secs, nanos)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn default_schedule() {
        let b = Backoff::default();
        let ceilings: Vec<u64> = (1..=9).map(|k| b.ceiling(k).as_millis() as u64).collect();
        assert_eq!(
            ceilings,
            [100, 200, 400, 800, 1600, 3200, 6400, 10_000, 10_000]
        );
        assert_eq!(b.ceiling(0), b.ceiling(1));
        assert_eq!(b.ceiling(u32::MAX), DEFAULT_CAP);
    }

    proptest! {
        #[test]
        fn delay_never_exceeds_ceiling_or_cap(
            initial_ms in 0u64..100_000,
            factor in 0u32..16,
            cap_ms in 0u64..1_000_000,
            attempt in 0u32..10_000,
            seed in any::<u64>(),
        ) {
            let b = Backoff {
                initial: Duration::from_millis(initial_ms),
                factor,
                cap: Duration::from_millis(cap_ms),
            };
            let mut rng = StdRng::seed_from_u64(seed);
            let d = b.next_delay(attempt, &mut rng);
            prop_assert!(d <= b.ceiling(attempt));
            prop_assert!(d <= b.cap);
        }

        #[test]
        fn ceiling_grows_until_the_cap(
            initial_ms in 1u64..10_000,
            factor in 2u32..16,
            cap_ms in 1u64..1_000_000,
            attempt in 1u32..10_000,
        ) {
            let b = Backoff {
                initial: Duration::from_millis(initial_ms),
                factor,
                cap: Duration::from_millis(cap_ms),
            };
            let (now, next) = (b.ceiling(attempt), b.ceiling(attempt + 1));
            prop_assert!(next >= now);
            // Strictly larger until the cap is reached, then pinned at the cap.
            prop_assert!(next > now || now == b.cap);
            prop_assert_eq!(b.ceiling(attempt + 64), b.cap);
        }
    }
}
