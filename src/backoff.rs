//! One backoff for every loop that waits before trying again (the etcd
//! store's requests and feeds, the node's watch, accepting connections):
//! waits double from a minimum up to a maximum, with optional jitter so many
//! clients that failed together do not retry together, and start over after
//! a success.

use std::time::Duration;

use rand::Rng;

/// An exponential backoff: `min`, `2·min`, … up to `max`.
#[derive(Clone, Debug)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    /// Each wait is scaled by a random factor in `1 ± jitter` (0 = none).
    jitter: f64,
    next: Duration,
}

impl Backoff {
    /// A backoff without jitter.
    pub fn new(min: Duration, max: Duration) -> Self {
        let max = max.max(min);
        Backoff {
            min,
            max,
            jitter: 0.0,
            next: min,
        }
    }

    /// Scales every wait by a random factor in `1 ± jitter` (clamped to 0..=1).
    pub fn with_jitter(mut self, jitter: f64) -> Self {
        self.jitter = jitter.clamp(0.0, 1.0);
        self
    }

    /// The wait before the next attempt; the one after it is twice as long.
    pub fn next_wait(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(self.max);
        if self.jitter == 0.0 {
            return wait;
        }
        let factor = rand::rng().random_range(1.0 - self.jitter..=1.0 + self.jitter);
        wait.mul_f64(factor)
    }

    /// What the next wait will be, before jitter.
    pub fn peek(&self) -> Duration {
        self.next
    }

    /// After a success: the next wait is the minimum again.
    pub fn reset(&mut self) {
        self.next = self.min;
    }

    /// Sleeps for the next wait.
    pub async fn wait(&mut self) {
        tokio::time::sleep(self.next_wait()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn doubles_up_to_the_maximum_and_resets() {
        let mut b = Backoff::new(100 * MS, 350 * MS);
        let waits: Vec<_> = (0..5).map(|_| b.next_wait()).collect();
        assert_eq!(waits, [100 * MS, 200 * MS, 350 * MS, 350 * MS, 350 * MS]);
        b.reset();
        assert_eq!(b.next_wait(), 100 * MS);
    }

    #[test]
    fn jitter_stays_within_its_band() {
        let mut b = Backoff::new(100 * MS, 100 * MS).with_jitter(0.5);
        for _ in 0..200 {
            let w = b.next_wait();
            assert!((50 * MS..=150 * MS).contains(&w), "{w:?}");
        }
    }

    #[test]
    fn a_maximum_below_the_minimum_is_the_minimum() {
        let mut b = Backoff::new(100 * MS, 10 * MS);
        assert_eq!(b.next_wait(), 100 * MS);
        assert_eq!(b.next_wait(), 100 * MS);
    }
}
