//! The prefill's bandwidth cap: a GCRA byte-rate limiter (governor) in
//! 1 KiB cells, with a burst of 5% of one second's bytes and a rate of the
//! rest, so that no 1 s window carries more than the cap.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

const CELL: u64 = 1024;

/// The quota for a cap of `bytes_per_second`: a burst of 5% of one
/// second (at least one cell) and a rate of the rest, so that rate × 1 s +
/// burst ≤ the cap.
pub fn quota(bytes_per_second: u64) -> Quota {
    let burst = ((bytes_per_second as f64 * 0.05 / CELL as f64) as u32).max(1);
    let rate = bytes_per_second
        .saturating_sub(u64::from(burst) * CELL)
        .max(CELL);
    let period = Duration::from_secs_f64(CELL as f64 / rate as f64);
    let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
    match Quota::with_period(period) {
        Some(q) => q.allow_burst(burst),
        None => Quota::per_second(NonZeroU32::MAX),
    }
}

/// Paces bytes read to a cap; without a cap it never waits.
pub struct Pacer<C: Clock = DefaultClock> {
    limiter: Option<RateLimiter<NotKeyed, InMemoryState, C, NoOpMiddleware<C::Instant>>>,
    burst: u32,
    /// Bytes read and not yet paid for (less than a cell).
    owed: u64,
}

impl Pacer {
    pub fn new(bytes_per_second: Option<u64>) -> Self {
        Self::with_clock(bytes_per_second, DefaultClock::default())
    }

    /// Counts `n` bytes read, then waits until the cap allows more.
    pub async fn take(&mut self, n: u64) {
        self.owed += n;
        let Some(limiter) = &self.limiter else {
            self.owed = 0;
            return;
        };
        while self.owed >= CELL {
            let cells = ((self.owed / CELL).min(u64::from(self.burst))) as u32;
            let Some(cells) = NonZeroU32::new(cells) else {
                break;
            };
            if limiter.until_n_ready(cells).await.is_err() {
                break;
            }
            self.owed -= u64::from(cells.get()) * CELL;
        }
    }
}

impl<C: Clock> Pacer<C> {
    pub fn with_clock(bytes_per_second: Option<u64>, clock: C) -> Self {
        let q = bytes_per_second.map(quota);
        Self {
            burst: q.map_or(1, |q| q.burst_size().get()),
            limiter: q.map(|q| RateLimiter::direct_with_clock(q, clock)),
            owed: 0,
        }
    }

    /// Whether `cells` may pass now (for tests with a fake clock).
    #[cfg(test)]
    fn try_cells(&self, cells: u32) -> bool {
        match (&self.limiter, NonZeroU32::new(cells)) {
            (Some(l), Some(n)) => matches!(l.check_n(n), Ok(Ok(()))),
            _ => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;

    /// Greedy reads against a fake clock, 1 ms at a time for 10 s: every
    /// 1 s window (at any 1 ms offset) carries at most the cap, and the
    /// whole run gets at least 90% of it.
    #[test]
    fn no_one_second_window_carries_more_than_the_cap() {
        for cap in [6_250_000u64, 1_000_000, 125_000, 20_000, 12_500] {
            let clock = FakeRelativeClock::default();
            let p = Pacer::with_clock(Some(cap), clock.clone());
            let mut per_ms = vec![0u64; 10_000];
            for slot in per_ms.iter_mut() {
                while p.try_cells(1) {
                    *slot += CELL;
                }
                clock.advance(Duration::from_millis(1));
            }
            for start in 0..per_ms.len() - 1000 {
                let window: u64 = per_ms[start..start + 1000].iter().sum();
                assert!(
                    window <= cap,
                    "cap {cap}: {window} bytes in the second from {start} ms"
                );
            }
            let total: u64 = per_ms.iter().sum();
            assert!(
                total as f64 >= 0.9 * 10.0 * cap as f64,
                "cap {cap}: {total}"
            );
        }
    }

    #[tokio::test]
    async fn no_cap_never_waits() {
        let mut p = Pacer::new(None);
        p.take(1 << 40).await;
        assert_eq!(p.owed, 0);
    }
}
