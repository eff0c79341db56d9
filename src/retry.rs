//! The one retry policy: every loop that waits for NATS or ClickHouse to come back uses it.
//!
//! [`Policy`] is the schedule (`retry.initial_backoff`, `retry.multiplier`, `retry.max_backoff`):
//! attempt `k` (1-based) waits a uniform random time in `[0, min(cap, initial × multiplier^(k-1))]`.
//! Full jitter (a uniform delay between zero and the exponential ceiling) spreads the retries of
//! many pipelines hitting the same overloaded server, which a fixed schedule would synchronise
//! (AWS Architecture Blog, "Exponential Backoff And Jitter").
//!
//! [`Backoff`] walks one policy (`next()`, `reset()` after a success), and [`retry_until`] is the
//! loop itself: run, classify the error, wait, stop when asked. There is no attempt limit anywhere:
//! a retriable failure is retried until it succeeds or the caller stops, so nothing is dropped.

use std::future::Future;
use std::time::Duration;

use rand::Rng;
use tokio_util::sync::CancellationToken;

/// Default first ceiling.
pub const DEFAULT_INITIAL: Duration = Duration::from_millis(100);
/// Default growth factor per attempt.
pub const DEFAULT_MULTIPLIER: f64 = 2.0;
/// Default cap: no wait is longer than this.
pub const DEFAULT_CAP: Duration = Duration::from_secs(10);

/// A capped exponential schedule with full jitter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    /// Ceiling of the first retry.
    pub initial: Duration,
    /// Growth of the ceiling per attempt (values below 1, and NaN, count as 1).
    pub multiplier: f64,
    /// Largest ceiling.
    pub cap: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            initial: DEFAULT_INITIAL,
            multiplier: DEFAULT_MULTIPLIER,
            cap: DEFAULT_CAP,
        }
    }
}

impl Policy {
    /// The same schedule with a different cap (e.g. a short cap for a local probe).
    pub fn with_cap(self, cap: Duration) -> Self {
        Policy { cap, ..self }
    }

    /// The largest delay attempt `attempt` may wait (attempts 0 and 1 both give `initial`,
    /// capped). Never decreases as `attempt` grows.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let cap = self.cap.as_secs_f64();
        let m = if self.multiplier >= 1.0 {
            self.multiplier
        } else {
            1.0
        };
        // Exponents beyond 1024 overflow any multiplier ≥ 2 to infinity; clamping keeps powi exact
        // where it matters and saturates to the cap otherwise.
        let exp = i32::try_from(attempt.saturating_sub(1).min(1024)).unwrap_or(1024);
        let grown = self.initial.as_secs_f64() * m.powi(exp);
        if !grown.is_finite() || grown >= cap {
            self.cap
        } else {
            Duration::from_secs_f64(grown.max(0.0))
        }
    }

    /// A random delay in `[0, ceiling(attempt)]`.
    pub fn delay<G: Rng + ?Sized>(&self, attempt: u32, rng: &mut G) -> Duration {
        let ceiling = u64::try_from(self.ceiling(attempt).as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(rng.random_range(0..=ceiling))
    }

    /// A fresh walk of this schedule.
    pub fn backoff(&self) -> Backoff {
        Backoff {
            policy: *self,
            attempt: 0,
        }
    }
}

/// One walk of a [`Policy`]: each `next()` is the next attempt's delay; `reset()` starts over.
/// An endless iterator: there is no attempt limit.
#[derive(Debug, Clone)]
pub struct Backoff {
    policy: Policy,
    attempt: u32,
}

impl Backoff {
    /// Failures since the last reset.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// After a success: the next failure waits the first delay again.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// The schedule walked.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }
}

impl Iterator for Backoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        self.attempt = self.attempt.saturating_add(1);
        Some(self.policy.delay(self.attempt, &mut rand::rng()))
    }
}

/// What the caller says of a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Wait the next backoff delay and run the operation again.
    Retry,
    /// Return the error now.
    GiveUp,
}

/// Why [`retry_until`] returned without a success.
#[derive(Debug)]
pub enum Failure<E> {
    /// The caller gave up on this error ([`Verdict::GiveUp`]).
    GaveUp(E),
    /// `stop` fired before a retry; `last` is the last error, after `attempts` failures.
    Stopped {
        /// Failures so far.
        attempts: u32,
        /// The last error.
        last: E,
    },
}

/// Runs `op` until it succeeds, `on_err` gives up, or `stop` fires while waiting.
///
/// After each failure `on_err(&error, attempt, delay)` (attempt counts from 1 since the last
/// reset; `delay` is the wait that follows a `Retry`) decides; log and count there. An attempt
/// already running is never interrupted by `stop`: its own timeouts bound it. The backoff is
/// reset on success, so a caller that keeps one `Backoff` across operations restarts the
/// schedule after every success.
pub async fn retry_until<T, E, Fut>(
    stop: &CancellationToken,
    backoff: &mut Backoff,
    mut op: impl FnMut() -> Fut,
    mut on_err: impl FnMut(&E, u32, Duration) -> Verdict,
) -> Result<T, Failure<E>>
where
    Fut: Future<Output = Result<T, E>>,
{
    loop {
        let err = match op().await {
            Ok(v) => {
                backoff.reset();
                return Ok(v);
            }
            Err(e) => e,
        };
        let delay = backoff.next().unwrap_or(backoff.policy.cap);
        let attempts = backoff.attempt();
        if on_err(&err, attempts, delay) == Verdict::GiveUp {
            return Err(Failure::GaveUp(err));
        }
        if stop.is_cancelled() {
            return Err(Failure::Stopped {
                attempts,
                last: err,
            });
        }
        tokio::select! {
            () = stop.cancelled() => return Err(Failure::Stopped { attempts, last: err }),
            () = tokio::time::sleep(delay) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;
    use std::cell::Cell;

    #[test]
    fn default_schedule() {
        let p = Policy::default();
        let ceilings: Vec<u64> = (1..=9).map(|k| p.ceiling(k).as_millis() as u64).collect();
        assert_eq!(
            ceilings,
            [100, 200, 400, 800, 1600, 3200, 6400, 10_000, 10_000]
        );
        assert_eq!(p.ceiling(0), p.ceiling(1));
        assert_eq!(p.ceiling(u32::MAX), DEFAULT_CAP);
    }

    #[test]
    fn fractional_multiplier_is_honoured() {
        let p = Policy {
            initial: Duration::from_millis(1000),
            multiplier: 1.5,
            cap: Duration::from_secs(60),
        };
        let ms: Vec<u128> = (1..=4).map(|k| p.ceiling(k).as_millis()).collect();
        assert_eq!(ms, [1000, 1500, 2250, 3375]);
    }

    #[test]
    fn backoff_walks_and_resets() {
        let mut b = Policy::default().backoff();
        for _ in 0..5 {
            let d = b.next().unwrap_or_default();
            assert!(d <= b.policy().ceiling(b.attempt()));
        }
        assert_eq!(b.attempt(), 5);
        b.reset();
        assert_eq!(b.attempt(), 0);
    }

    #[tokio::test]
    async fn retry_until_retries_then_succeeds_and_resets() {
        let stop = CancellationToken::new();
        let mut b = Policy {
            initial: Duration::from_millis(1),
            multiplier: 2.0,
            cap: Duration::from_millis(2),
        }
        .backoff();
        let calls = Cell::new(0u32);
        let mut seen = Vec::new();
        let out: Result<u32, Failure<&str>> = retry_until(
            &stop,
            &mut b,
            || {
                calls.set(calls.get() + 1);
                let n = calls.get();
                async move { if n < 4 { Err("down") } else { Ok(n) } }
            },
            |e, attempt, _| {
                seen.push((e.to_string(), attempt));
                Verdict::Retry
            },
        )
        .await;
        assert_eq!(out.ok(), Some(4));
        assert_eq!(seen.iter().map(|s| s.1).collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(b.attempt(), 0);
    }

    #[tokio::test]
    async fn retry_until_gives_up_and_stops() {
        let stop = CancellationToken::new();
        let mut b = Policy::default().backoff();
        let out: Result<(), Failure<&str>> = retry_until(
            &stop,
            &mut b,
            || async { Err("auth") },
            |_, _, _| Verdict::GiveUp,
        )
        .await;
        assert!(matches!(out, Err(Failure::GaveUp("auth"))));

        // A stop during the wait ends the loop with the last error.
        let mut b = Policy::default()
            .with_cap(Duration::from_secs(3600))
            .backoff();
        let stopper = stop.clone();
        let out: Result<(), Failure<&str>> = retry_until(
            &stop,
            &mut b,
            || async { Err("down") },
            |_, attempt, _| {
                if attempt == 2 {
                    stopper.cancel();
                }
                Verdict::Retry
            },
        )
        .await;
        assert!(matches!(
            out,
            Err(Failure::Stopped {
                attempts: 2,
                last: "down"
            })
        ));
    }

    proptest! {
        #[test]
        fn delay_never_exceeds_ceiling_or_cap(
            initial_ms in 0u64..100_000,
            multiplier in 0.0f64..16.0,
            cap_ms in 0u64..1_000_000,
            attempt in 0u32..10_000,
            seed in any::<u64>(),
        ) {
            let p = Policy {
                initial: Duration::from_millis(initial_ms),
                multiplier,
                cap: Duration::from_millis(cap_ms),
            };
            let mut rng = StdRng::seed_from_u64(seed);
            let d = p.delay(attempt, &mut rng);
            prop_assert!(d <= p.ceiling(attempt));
            prop_assert!(d <= p.cap);
        }

        #[test]
        fn ceiling_grows_until_the_cap(
            initial_ms in 1u64..10_000,
            multiplier in 2.0f64..16.0,
            cap_ms in 1u64..1_000_000,
            attempt in 1u32..10_000,
        ) {
            let p = Policy {
                initial: Duration::from_millis(initial_ms),
                multiplier,
                cap: Duration::from_millis(cap_ms),
            };
            let (now, next) = (p.ceiling(attempt), p.ceiling(attempt + 1));
            prop_assert!(next >= now);
            prop_assert!(next > now || now == p.cap);
            prop_assert_eq!(p.ceiling(attempt + 64), p.cap);
        }
    }
}
