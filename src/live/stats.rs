//! The loop's counters and the period of its `stats` events: per-frame
//! latencies in a fixed ring, frames processed, failed and anomalies
//! raised, and when the next `stats` event is due.
//!
//! Every call takes the time as an argument, so it is tested with
//! made-up instants. Nothing allocates after [`Stats::new`].

use std::time::{Duration, Instant};

/// Latencies kept for the p50/p99 of a stats period.
pub const LATENCY_WINDOW: usize = 4096;

/// Latencies of recent frames in a fixed ring, with percentiles computed
/// in a preallocated scratch buffer.
#[derive(Debug, Clone)]
pub struct Latencies {
    ring: Vec<f64>,
    next: usize,
    len: usize,
    scratch: Vec<f64>,
}

impl Default for Latencies {
    fn default() -> Self {
        Self::new()
    }
}

impl Latencies {
    /// An empty ring of [`LATENCY_WINDOW`] latencies.
    pub fn new() -> Self {
        Latencies {
            ring: vec![0.0; LATENCY_WINDOW],
            next: 0,
            len: 0,
            scratch: Vec::with_capacity(LATENCY_WINDOW),
        }
    }

    /// Records one latency in ms (the oldest falls out of a full ring).
    pub fn push(&mut self, ms: f64) {
        self.ring[self.next] = ms;
        self.next = (self.next + 1) % LATENCY_WINDOW;
        self.len = (self.len + 1).min(LATENCY_WINDOW);
    }

    /// The median and 99th percentile of the latencies kept (0 when none).
    pub fn percentiles(&mut self) -> (f64, f64) {
        if self.len == 0 {
            return (0.0, 0.0);
        }
        self.scratch.clear();
        self.scratch.extend_from_slice(&self.ring[..self.len]);
        self.scratch.sort_unstable_by(f64::total_cmp);
        (
            crate::stats::quantile_sorted(&self.scratch, 0.5),
            crate::stats::quantile_sorted(&self.scratch, 0.99),
        )
    }
}

/// The figures of one stats period, for a `stats` event.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Period {
    /// Frames delivered by the source per second, this period.
    pub capture_fps: f64,
    /// Frames scored per second, this period.
    pub processed_fps: f64,
    /// Frames processed so far.
    pub processed: u64,
    /// Median latency of the recent frames, ms.
    pub latency_ms_p50: f64,
    /// Their 99th percentile, ms.
    pub latency_ms_p99: f64,
}

/// The loop's counters and stats period.
#[derive(Debug, Clone)]
pub struct Stats {
    interval: Duration,
    latencies: Latencies,
    processed: u64,
    failed: u64,
    anomalies: u64,
    /// Start of the running period, and the published and processed
    /// counts then.
    period_start: Instant,
    published_then: u64,
    processed_then: u64,
}

impl Stats {
    /// Counters at zero and a first period starting at `now`, `interval` long.
    pub fn new(interval: Duration, now: Instant) -> Stats {
        Stats {
            interval,
            latencies: Latencies::new(),
            processed: 0,
            failed: 0,
            anomalies: 0,
            period_start: now,
            published_then: 0,
            processed_then: 0,
        }
    }

    /// Counts a scored frame and its latency.
    pub fn processed(&mut self, latency: Duration) {
        self.processed += 1;
        self.latencies.push(latency.as_secs_f64() * 1e3);
    }

    /// Counts a frame that could not be scored.
    pub fn failed(&mut self) {
        self.failed += 1;
    }

    /// Counts an `anomaly_start`.
    pub fn anomaly(&mut self) {
        self.anomalies += 1;
    }

    /// Frames scored so far.
    pub fn processed_count(&self) -> u64 {
        self.processed
    }

    /// Frames that could not be scored so far.
    pub fn failed_count(&self) -> u64 {
        self.failed
    }

    /// `anomaly_start` events so far.
    pub fn anomaly_count(&self) -> u64 {
        self.anomalies
    }

    /// The median latency of the recent frames, ms.
    pub fn latency_p50(&mut self) -> f64 {
        self.latencies.percentiles().0
    }

    /// When the period is over at `now`: its figures (given the source's
    /// running count of `published` frames), and a new period starts.
    pub fn poll(&mut self, now: Instant, published: u64) -> Option<Period> {
        let elapsed = now.saturating_duration_since(self.period_start);
        if elapsed < self.interval {
            return None;
        }
        let secs = elapsed.as_secs_f64();
        let (p50, p99) = self.latencies.percentiles();
        let period = Period {
            capture_fps: published.saturating_sub(self.published_then) as f64 / secs,
            processed_fps: (self.processed - self.processed_then) as f64 / secs,
            processed: self.processed,
            latency_ms_p50: p50,
            latency_ms_p99: p99,
        };
        self.period_start = now;
        self.published_then = published;
        self.processed_then = self.processed;
        Some(period)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn percentiles_of_the_recent_frames() {
        let mut l = Latencies::new();
        assert_eq!(l.percentiles(), (0.0, 0.0));
        for v in 1..=100 {
            l.push(v as f64);
        }
        let (p50, p99) = l.percentiles();
        assert!((p50 - 50.5).abs() < 1e-9, "{p50}");
        assert!(p99 > 98.0 && p99 <= 100.0, "{p99}");
        // a full ring keeps only the newest
        for _ in 0..LATENCY_WINDOW {
            l.push(7.0);
        }
        assert_eq!(l.percentiles(), (7.0, 7.0));
    }

    #[test]
    fn a_period_reports_its_rates_once_it_is_over() {
        let t0 = Instant::now();
        let mut s = Stats::new(ms(500), t0);
        for _ in 0..10 {
            s.processed(ms(4));
        }
        s.failed();
        s.anomaly();
        assert_eq!(s.poll(t0 + ms(499), 12), None);
        let p = s.poll(t0 + ms(500), 12).unwrap();
        assert_eq!(p.processed, 10);
        assert!((p.processed_fps - 20.0).abs() < 1e-9, "{p:?}");
        assert!((p.capture_fps - 24.0).abs() < 1e-9, "{p:?}");
        assert!((p.latency_ms_p50 - 4.0).abs() < 1e-9, "{p:?}");
        // the next period counts from here
        assert_eq!(s.poll(t0 + ms(900), 20), None);
        s.processed(ms(2));
        let p = s.poll(t0 + ms(1500), 22).unwrap();
        assert!((p.processed_fps - 1.0).abs() < 1e-9, "{p:?}");
        assert!((p.capture_fps - 10.0).abs() < 1e-9, "{p:?}");
        assert_eq!(p.processed, 11);
        assert_eq!(
            (s.processed_count(), s.failed_count(), s.anomaly_count()),
            (11, 1, 1)
        );
    }
}
