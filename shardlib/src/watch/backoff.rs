//! Exponential backoff with jitter between reconnection attempts.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Delays that double from `min` to `max`, each drawn uniformly from the
/// upper half of the current step ("equal jitter"), so that many watchers
/// that lost the same server do not come back in lockstep.
#[derive(Debug)]
pub(crate) struct Backoff {
    min: Duration,
    max: Duration,
    step: Duration,
    rng: XorShift,
}

impl Backoff {
    /// A backoff from `min` to `max` (`min <= max`).
    pub(crate) fn new(min: Duration, max: Duration) -> Self {
        debug_assert!(min <= max, "backoff min {min:?} > max {max:?}");
        Backoff { min, max, step: min, rng: XorShift::seeded() }
    }

    /// The next delay: in `[step/2, step]`, after which the step doubles up
    /// to `max`.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let step = self.step;
        self.step = step.saturating_mul(2).min(self.max);
        let half = step / 2;
        let spread = u64::try_from((step - half).as_nanos()).unwrap_or(u64::MAX);
        let jitter = if spread == 0 { 0 } else { self.rng.next() % (spread + 1) };
        half + Duration::from_nanos(jitter)
    }

    /// Starts again from `min`.
    pub(crate) fn reset(&mut self) {
        self.step = self.min;
    }
}

/// Marsaglia's xorshift64: not for secrets, only to spread retries.
#[derive(Debug)]
struct XorShift(u64);

impl XorShift {
    /// Seeded from the clock and a process-wide counter, so that watchers
    /// created in the same instant still draw different delays.
    fn seeded() -> Self {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
        let count = COUNTER.fetch_add(1, Ordering::Relaxed);
        // splitmix64 finaliser: decorrelates nearby seeds.
        let mut z = nanos ^ count.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ u64::from(std::process::id());
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        XorShift(z | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_within_jitter_bounds_up_to_the_cap() {
        let (min, max) = (Duration::from_millis(50), Duration::from_secs(5));
        let mut backoff = Backoff::new(min, max);
        let mut step = min;
        for _ in 0..20 {
            let delay = backoff.next_delay();
            assert!(delay >= step / 2 && delay <= step, "{delay:?} outside [{:?}, {step:?}]", step / 2);
            step = (step * 2).min(max);
        }
        assert_eq!(backoff.step, max);
        backoff.reset();
        assert!(backoff.next_delay() <= min);
    }

    #[test]
    fn watchers_made_together_draw_different_delays() {
        let delays: Vec<Duration> = (0..8)
            .map(|_| {
                let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(1));
                backoff.next_delay()
            })
            .collect();
        let distinct: std::collections::HashSet<_> = delays.iter().collect();
        assert!(distinct.len() > 1, "{delays:?}");
    }
}
