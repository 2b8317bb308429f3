//! Frames that fail, as rate-limited `frame_error` events: a frame the
//! source could not decode (stage `decode`) or one the pipeline refused
//! (stage `score`, e.g. a frame whose buffer does not match its size).
//!
//! The first failure of a stage is reported at once with its reason;
//! further failures of that stage within [`LiveConfig::frame_error_interval`]
//! (5 s by default) are only counted, and the next report says how many
//! were `suppressed` since the previous one. When the loop ends, failures
//! still unreported get one last event. The counts are also in the `stats`
//! events (`bad_frames`) and the summary (`bad_frames`, `failed_frames`).
//!
//! Recording a failure allocates nothing once the reason buffer has grown
//! to fit (it is reused); an event allocates its reason when emitted.
//!
//! [`LiveConfig::frame_error_interval`]: super::LiveConfig::frame_error_interval

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use super::events::FrameStage;

/// Room kept for a failure's reason, so recording one does not allocate.
const REASON_CAPACITY: usize = 512;

/// At most one report per interval; what falls between is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    interval: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLimit {
    /// A limit of one report per `interval`.
    pub fn new(interval: Duration) -> RateLimit {
        RateLimit {
            interval,
            last: None,
            suppressed: 0,
        }
    }

    /// `n` (at least 1) things happened at `now`. When one of them is to
    /// be reported, returns how many others were not reported since the
    /// last report (including the other `n - 1`).
    pub fn hit(&mut self, now: Instant, n: u64) -> Option<u64> {
        let n = n.max(1);
        let due = self
            .last
            .is_none_or(|t| now.saturating_duration_since(t) >= self.interval);
        if !due {
            self.suppressed += n;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed) + n - 1)
    }

    /// Things not reported since the last report; they count as reported.
    pub fn take_suppressed(&mut self) -> u64 {
        std::mem::take(&mut self.suppressed)
    }
}

/// One `frame_error` to emit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameError<'a> {
    /// Where the frame failed.
    pub stage: FrameStage,
    /// The failed frame's index, when it had one.
    pub frame: Option<u64>,
    /// Why it failed (the last failure's reason).
    pub reason: &'a str,
    /// Failures of this stage not reported since the previous event.
    pub suppressed: u64,
    /// Failures of this stage so far.
    pub total: u64,
}

/// The failures of one stage.
#[derive(Debug, Clone)]
struct Stage {
    stage: FrameStage,
    limit: RateLimit,
    total: u64,
    frame: Option<u64>,
    reason: String,
}

impl Stage {
    fn new(stage: FrameStage, interval: Duration) -> Stage {
        Stage {
            stage,
            limit: RateLimit::new(interval),
            total: 0,
            frame: None,
            reason: String::with_capacity(REASON_CAPACITY),
        }
    }

    /// Records `n` failures, the last of `frame`; `reason` writes why.
    fn failed(
        &mut self,
        now: Instant,
        n: u64,
        frame: Option<u64>,
        reason: impl FnOnce(&mut String),
    ) -> Option<FrameError<'_>> {
        self.total += n;
        self.frame = frame;
        self.reason.clear();
        reason(&mut self.reason);
        let suppressed = self.limit.hit(now, n)?;
        Some(self.report(suppressed))
    }

    fn report(&self, suppressed: u64) -> FrameError<'_> {
        FrameError {
            stage: self.stage,
            frame: self.frame,
            reason: &self.reason,
            suppressed,
            total: self.total,
        }
    }

    /// The last event for failures still unreported, if any.
    fn flush(&mut self) -> Option<FrameError<'_>> {
        let n = self.limit.take_suppressed();
        (n > 0).then(|| self.report(n - 1))
    }
}

/// The frame failures of a run, per stage.
#[derive(Debug, Clone)]
pub struct FrameFailures {
    decode: Stage,
    score: Stage,
    /// The source's running count of bad frames, as last seen.
    seen_bad: u64,
}

impl FrameFailures {
    /// At most one `frame_error` per stage per `interval`.
    pub fn new(interval: Duration) -> FrameFailures {
        FrameFailures {
            decode: Stage::new(FrameStage::Decode, interval),
            score: Stage::new(FrameStage::Score, interval),
            seen_bad: 0,
        }
    }

    /// The source's running count of frames it could not decode is
    /// `bad_frames` at `now`; `reason` writes the last one's reason into
    /// the buffer it is given (called only when the count grew).
    pub fn decode_count(
        &mut self,
        now: Instant,
        bad_frames: u64,
        reason: impl FnOnce(&mut String),
    ) -> Option<FrameError<'_>> {
        let n = bad_frames.saturating_sub(self.seen_bad);
        self.seen_bad = bad_frames;
        if n == 0 {
            return None;
        }
        self.decode.failed(now, n, None, reason)
    }

    /// Frame `frame` could not be scored, for `reason`.
    pub fn score_failed(
        &mut self,
        now: Instant,
        frame: u64,
        reason: impl std::fmt::Display,
    ) -> Option<FrameError<'_>> {
        self.score.failed(now, 1, Some(frame), |s| {
            let _ = write!(s, "{reason}");
        })
    }

    /// The last events, for failures not reported yet (at the end of a run).
    pub fn flush(&mut self) -> impl Iterator<Item = FrameError<'_>> {
        let Self { decode, score, .. } = self;
        decode.flush().into_iter().chain(score.flush())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn one_report_per_interval_with_the_count_in_between() {
        let t0 = Instant::now();
        let mut l = RateLimit::new(ms(1000));
        assert_eq!(l.hit(t0, 1), Some(0));
        assert_eq!(l.hit(t0 + ms(10), 1), None);
        assert_eq!(l.hit(t0 + ms(999), 3), None);
        assert_eq!(l.hit(t0 + ms(1000), 1), Some(4));
        assert_eq!(l.hit(t0 + ms(1500), 1), None);
        assert_eq!(l.take_suppressed(), 1);
        assert_eq!(l.take_suppressed(), 0);
        // several at once when due: one reported, the others counted
        assert_eq!(l.hit(t0 + ms(2000), 5), Some(4));
    }

    #[test]
    fn stages_are_limited_apart_and_flushed_at_the_end() {
        let t0 = Instant::now();
        let mut f = FrameFailures::new(ms(1000));
        let says = |why: &'static str| move |s: &mut String| s.push_str(why);
        assert_eq!(f.decode_count(t0, 0, |_| unreachable!()), None);
        let e = f.decode_count(t0, 2, says("corrupt MJPEG")).unwrap();
        assert_eq!(
            (e.stage, e.frame, e.reason, e.suppressed, e.total),
            (FrameStage::Decode, None, "corrupt MJPEG", 1, 2)
        );
        // the score stage has its own limit
        let e = f.score_failed(t0 + ms(1), 7, "wrong size").unwrap();
        assert_eq!(
            (e.stage, e.frame, e.suppressed),
            (FrameStage::Score, Some(7), 0)
        );
        assert!(f.score_failed(t0 + ms(2), 8, "wrong size again").is_none());
        assert!(f.score_failed(t0 + ms(3), 9, "wrong size again").is_none());
        assert_eq!(f.decode_count(t0 + ms(4), 2, says("unchanged")), None);
        let last: Vec<(FrameStage, Option<u64>, String, u64, u64)> = f
            .flush()
            .map(|e| {
                (
                    e.stage,
                    e.frame,
                    e.reason.to_string(),
                    e.suppressed,
                    e.total,
                )
            })
            .collect();
        assert_eq!(
            last,
            [(
                FrameStage::Score,
                Some(9),
                "wrong size again".to_string(),
                1,
                3
            )]
        );
        assert_eq!(f.flush().count(), 0);
    }
}
