//! `/metrics` in the Prometheus text exposition format (version 0.0.4,
//! <https://prometheus.io/docs/instrumenting/exposition_formats/>):
//! counters, gauges and the per-frame latency histogram, all atomics the
//! loop updates without locking or allocating.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the latency histogram's buckets, seconds.
pub const LATENCY_BUCKETS: [f64; 10] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0,
];

/// The figures `/metrics` shows.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Frames scored.
    pub processed: AtomicU64,
    /// Frames dropped because a newer one came first (from `stats`).
    pub dropped: AtomicU64,
    /// `anomaly_start` events.
    pub anomalies: AtomicU64,
    /// Whether an anomaly episode runs.
    pub anomaly: AtomicBool,
    /// Whether the camera delivers frames (false after `camera_lost`).
    pub camera_down: AtomicBool,
    /// Processed frames per second (f64 bits).
    pub fps_bits: AtomicU64,
    /// Latency observations per bucket (not cumulative; `+Inf` last).
    pub buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    /// Sum of the latencies, microseconds.
    pub latency_sum_us: AtomicU64,
}

impl Metrics {
    /// One processed frame of latency `d`.
    pub fn frame(&self, d: Duration) {
        self.processed.fetch_add(1, Ordering::Relaxed);
        let s = d.as_secs_f64();
        let i = LATENCY_BUCKETS
            .iter()
            .position(|&b| s <= b)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.latency_sum_us
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    /// Sets the frame rate.
    pub fn set_fps(&self, fps: f64) {
        self.fps_bits.store(fps.to_bits(), Ordering::Relaxed);
    }

    /// The text of `/metrics`; `viewers` is the number of open streams.
    pub fn render(&self, viewers: usize) -> String {
        let mut s = String::with_capacity(2048);
        let ld = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut one = |name: &str, kind: &str, help: &str, value: String| {
            let _ = write!(
                s,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
            );
        };
        one(
            "bvae_fps",
            "gauge",
            "Frames scored per second.",
            fmt(f64::from_bits(ld(&self.fps_bits))),
        );
        one(
            "bvae_frames_processed_total",
            "counter",
            "Frames scored.",
            ld(&self.processed).to_string(),
        );
        one(
            "bvae_frames_dropped_total",
            "counter",
            "Frames dropped because a newer frame arrived first.",
            ld(&self.dropped).to_string(),
        );
        one(
            "bvae_anomalies_total",
            "counter",
            "Anomaly episodes started.",
            ld(&self.anomalies).to_string(),
        );
        one(
            "bvae_anomaly",
            "gauge",
            "1 while an anomaly episode runs.",
            u8::from(self.anomaly.load(Ordering::Relaxed)).to_string(),
        );
        one(
            "bvae_camera_up",
            "gauge",
            "1 while the camera delivers frames.",
            u8::from(!self.camera_down.load(Ordering::Relaxed)).to_string(),
        );
        one(
            "bvae_web_viewers",
            "gauge",
            "MJPEG streams open.",
            viewers.to_string(),
        );
        let name = "bvae_frame_latency_seconds";
        let _ = write!(
            s,
            "# HELP {name} Per-frame latency: preprocessing, inference and scores.\n# TYPE {name} histogram\n"
        );
        let mut cum = 0u64;
        for (i, b) in self.buckets.iter().enumerate() {
            cum += ld(b);
            let le = LATENCY_BUCKETS
                .get(i)
                .map_or("+Inf".to_string(), |v| fmt(*v));
            let _ = writeln!(s, "{name}_bucket{{le=\"{le}\"}} {cum}");
        }
        let _ = writeln!(
            s,
            "{name}_sum {}",
            fmt(ld(&self.latency_sum_us) as f64 / 1e6)
        );
        let _ = writeln!(s, "{name}_count {cum}");
        s
    }
}

/// A float as Prometheus writes it.
fn fmt(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_histogram_is_cumulative_and_counts_every_frame() {
        let m = Metrics::default();
        for ms in [0.3, 0.8, 1.5, 1.5, 30.0, 5000.0] {
            m.frame(Duration::from_secs_f64(ms / 1e3));
        }
        m.set_fps(29.5);
        let t = m.render(2);
        assert!(
            t.contains("bvae_frame_latency_seconds_bucket{le=\"0.0005\"} 1\n"),
            "{t}"
        );
        assert!(
            t.contains("bvae_frame_latency_seconds_bucket{le=\"0.002\"} 4\n"),
            "{t}"
        );
        assert!(
            t.contains("bvae_frame_latency_seconds_bucket{le=\"1\"} 5\n"),
            "{t}"
        );
        assert!(
            t.contains("bvae_frame_latency_seconds_bucket{le=\"+Inf\"} 6\n"),
            "{t}"
        );
        assert!(t.contains("bvae_frame_latency_seconds_count 6\n"));
        assert!(t.contains("bvae_frames_processed_total 6\n"));
        assert!(t.contains("bvae_fps 29.5\n"));
        assert!(t.contains("bvae_web_viewers 2\n"));
        assert!(t.contains("bvae_camera_up 1\n"));
    }
}
