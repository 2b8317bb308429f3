//! The watchdog: notices that a source is lost (it said so, or it
//! delivered no frame for longer than the stall timeout), asks for a
//! reopen with backoff while it stays lost, and notices when frames come
//! back.
//!
//! It only decides; the loop emits the events and talks to the capture
//! thread. Every call takes the time as an argument, so it is tested with
//! made-up instants.

use std::time::{Duration, Instant};

use super::backoff::{Backoff, Waits};

/// What [`Watchdog::check`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// Nothing to do.
    Fine,
    /// The source has just been found lost: emit `camera_lost`. When it
    /// was not `reported` by the source itself (a stall), ask the capture
    /// thread to reopen it; a source that reported itself lost is
    /// reopened by the capture thread on its own.
    Lost {
        /// Whether the source reported the loss (rather than stalling).
        reported: bool,
        /// When the source last delivered a frame (the loop's start
        /// before the first frame).
        last_frame_at: Instant,
    },
    /// Still lost and the backoff has run out: ask for another reopen.
    Reopen,
}

/// An outage: when it began (the last frame, or the moment the source
/// reported itself lost) and when it was noticed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Outage {
    since: Instant,
    noticed: Instant,
}

/// The watchdog's state.
#[derive(Debug, Clone)]
pub struct Watchdog {
    stall_timeout: Duration,
    started: Instant,
    outage: Option<Outage>,
    reopen: Waits,
    next_reopen: Instant,
    seen_disconnects: u64,
    lost_count: u64,
}

impl Watchdog {
    /// A watchdog for a loop started at `started`: a source is stalled
    /// after `stall_timeout` without a frame; reopen requests wait the
    /// stall timeout at first, doubling up to `backoff.max` (at least the
    /// stall timeout).
    pub fn new(stall_timeout: Duration, backoff: Backoff, started: Instant) -> Watchdog {
        Watchdog {
            stall_timeout,
            started,
            outage: None,
            reopen: Backoff::new(stall_timeout, backoff.max.max(stall_timeout)).waits(),
            next_reopen: started,
            seen_disconnects: 0,
            lost_count: 0,
        }
    }

    /// The stall timeout in use.
    pub fn stall_timeout(&self) -> Duration {
        self.stall_timeout
    }

    /// Times the source was found lost so far.
    pub fn lost_count(&self) -> u64 {
        self.lost_count
    }

    /// Whether the source is lost now.
    pub fn is_lost(&self) -> bool {
        self.outage.is_some()
    }

    /// A frame the source delivered at `delivered` was taken. If it ends
    /// an outage (it was delivered after the loss was noticed), returns
    /// how long no frame came: emit `camera_recovered`.
    pub fn frame(&mut self, delivered: Instant) -> Option<Duration> {
        let o = self.outage?;
        if delivered <= o.noticed {
            return None;
        }
        self.outage = None;
        self.reopen.reset();
        Some(delivered.saturating_duration_since(o.since))
    }

    /// Checks the source at `now`, given how many times it has reported
    /// itself lost so far (`disconnects`, a running count) and when it
    /// last delivered a frame (timed from the capture side, so a slow
    /// loop is not mistaken for a stalled camera).
    pub fn check(
        &mut self,
        now: Instant,
        disconnects: u64,
        last_delivery: Option<Instant>,
    ) -> Check {
        let reported = disconnects > self.seen_disconnects;
        self.seen_disconnects = disconnects;
        let last_frame_at = last_delivery.unwrap_or(self.started);
        let stalled = now.saturating_duration_since(last_frame_at) > self.stall_timeout;
        if !(reported || stalled) {
            return Check::Fine;
        }
        if self.outage.is_none() {
            self.outage = Some(Outage {
                since: if reported { now } else { last_frame_at },
                noticed: now,
            });
            self.lost_count += 1;
            self.next_reopen = now + self.reopen.next_wait();
            return Check::Lost {
                reported,
                last_frame_at,
            };
        }
        if now >= self.next_reopen && stalled {
            self.next_reopen = now + self.reopen.next_wait();
            return Check::Reopen;
        }
        Check::Fine
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    fn dog(t0: Instant) -> Watchdog {
        Watchdog::new(ms(100), Backoff::new(ms(10), ms(350)), t0)
    }

    #[test]
    fn frames_on_time_are_fine() {
        let t0 = Instant::now();
        let mut w = dog(t0);
        for i in 1..20 {
            let t = t0 + ms(50 * i);
            assert_eq!(w.frame(t), None);
            assert_eq!(w.check(t + ms(5), 0, Some(t)), Check::Fine);
        }
        assert_eq!(w.lost_count(), 0);
    }

    #[test]
    fn a_stall_is_lost_then_reopened_with_backoff_then_recovered() {
        let t0 = Instant::now();
        let mut w = dog(t0);
        let last = t0 + ms(20);
        assert_eq!(w.check(t0 + ms(100), 0, Some(last)), Check::Fine);
        let lost_at = t0 + ms(121);
        assert_eq!(
            w.check(lost_at, 0, Some(last)),
            Check::Lost {
                reported: false,
                last_frame_at: last
            }
        );
        assert!(w.is_lost());
        // reopen requests after 100, then 200, then 350 (the cap), 350 ms
        let mut reopens = vec![];
        for step in 1..=120 {
            let now = lost_at + ms(10 * step);
            if w.check(now, 0, Some(last)) == Check::Reopen {
                reopens.push((now - lost_at).as_millis());
            }
        }
        assert_eq!(reopens, [100, 300, 650, 1000]);
        assert_eq!(w.lost_count(), 1);
        // a frame delivered before the loss was noticed does not end it
        assert_eq!(w.frame(lost_at - ms(1)), None);
        let back = lost_at + ms(1300);
        assert_eq!(w.frame(back), Some(back - last));
        assert!(!w.is_lost());
        assert_eq!(w.check(back + ms(1), 0, Some(back)), Check::Fine);
        // the backoff starts again from the stall timeout
        let lost2 = back + ms(101);
        assert!(matches!(w.check(lost2, 0, Some(back)), Check::Lost { .. }));
        assert_eq!(w.check(lost2 + ms(99), 0, Some(back)), Check::Fine);
        assert_eq!(w.check(lost2 + ms(100), 0, Some(back)), Check::Reopen);
        assert_eq!(w.lost_count(), 2);
    }

    #[test]
    fn a_reported_loss_counts_from_the_report_and_is_not_reopened_while_frames_come() {
        let t0 = Instant::now();
        let mut w = dog(t0);
        let last = t0 + ms(40);
        let now = t0 + ms(50);
        assert_eq!(
            w.check(now, 1, Some(last)),
            Check::Lost {
                reported: true,
                last_frame_at: last
            }
        );
        // the same count again is no new report; not stalled: no reopen
        assert_eq!(w.check(now + ms(200), 1, Some(now + ms(150))), Check::Fine);
        let back = now + ms(300);
        assert_eq!(w.frame(back), Some(ms(300)));
        // a second report is a second loss
        assert!(matches!(
            w.check(back + ms(1), 2, Some(back)),
            Check::Lost { reported: true, .. }
        ));
        assert_eq!(w.lost_count(), 2);
    }

    #[test]
    fn no_frame_at_all_is_timed_from_the_start() {
        let t0 = Instant::now();
        let mut w = dog(t0);
        assert_eq!(w.check(t0 + ms(100), 0, None), Check::Fine);
        assert_eq!(
            w.check(t0 + ms(101), 0, None),
            Check::Lost {
                reported: false,
                last_frame_at: t0
            }
        );
    }
}
