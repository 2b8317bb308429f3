//! Exponential backoff, written once: the capture thread's reopen
//! attempts, the watchdog's reopen requests and the snapshotter's retries
//! after a failed write all wait `initial`, then twice as long each time,
//! up to `max`, and start again from `initial` after a success.

use std::time::Duration;

/// Backoff settings: the first wait and the longest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Wait before the first retry.
    pub initial: Duration,
    /// Longest wait between retries.
    pub max: Duration,
}

impl Default for Backoff {
    /// 100 ms, doubling up to 5 s (the capture thread's reopen backoff).
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(5),
        }
    }
}

impl Backoff {
    /// `initial`, doubling up to `max`.
    pub const fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff { initial, max }
    }

    /// The sequence of waits, starting at `initial`.
    pub fn waits(self) -> Waits {
        Waits {
            backoff: self,
            next: self.initial,
        }
    }
}

/// The running state of a [`Backoff`]: which wait comes next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Waits {
    backoff: Backoff,
    next: Duration,
}

impl Waits {
    /// The wait to use now; the one after it is twice as long, at most
    /// `max` (the first is `initial` even when `max` is shorter).
    pub fn next_wait(&mut self) -> Duration {
        let wait = self.next;
        self.next = wait.saturating_mul(2).min(self.backoff.max);
        wait
    }

    /// The wait [`Waits::next_wait`] will return.
    pub fn peek(&self) -> Duration {
        self.next
    }

    /// Starts again from `initial` (after a success).
    pub fn reset(&mut self) {
        self.next = self.backoff.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn doubles_up_to_the_limit_and_resets() {
        let mut w = Backoff::new(ms(10), ms(50)).waits();
        let got: Vec<Duration> = (0..5).map(|_| w.next_wait()).collect();
        assert_eq!(got, [ms(10), ms(20), ms(40), ms(50), ms(50)]);
        w.reset();
        assert_eq!(w.peek(), ms(10));
        assert_eq!(w.next_wait(), ms(10));
        assert_eq!(w.next_wait(), ms(20));
    }

    #[test]
    fn a_huge_wait_saturates_instead_of_overflowing() {
        let mut w = Backoff::new(Duration::MAX / 2 + ms(1), Duration::MAX).waits();
        w.next_wait();
        assert_eq!(w.next_wait(), Duration::MAX);
        assert_eq!(w.next_wait(), Duration::MAX);
    }

    #[test]
    fn the_first_wait_is_initial_even_above_the_limit() {
        let mut w = Backoff::new(ms(100), ms(30)).waits();
        assert_eq!(w.next_wait(), ms(100));
        assert_eq!(w.next_wait(), ms(30));
    }
}
