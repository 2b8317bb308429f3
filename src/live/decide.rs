//! The decision with hysteresis: an episode starts after `enter_after`
//! consecutive frames above the threshold and ends after `leave_after`
//! consecutive frames below it, so one noisy frame raises no alarm.

/// What one frame changed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Transition {
    /// Nothing to report.
    None,
    /// An episode started at this frame.
    Start,
    /// An episode goes on.
    Continue,
    /// The episode that was running ended at this frame.
    End(Episode),
}

/// A finished or running anomaly episode.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Episode {
    /// Frame index at which the episode was declared.
    pub start_frame: u64,
    /// Last frame above the threshold.
    pub last_above_frame: u64,
    /// Highest score / threshold ratio seen.
    pub peak_ratio: f64,
    /// Frame of the peak.
    pub peak_frame: u64,
    /// Frames processed during the episode.
    pub frames: u64,
}

/// Hysteresis state machine.
#[derive(Debug, Clone)]
pub struct Hysteresis {
    enter_after: u32,
    leave_after: u32,
    above_run: u32,
    below_run: u32,
    episode: Option<Episode>,
    pending_peak: (f64, u64),
}

impl Hysteresis {
    /// Enter after `enter_after` frames above, leave after `leave_after`
    /// below (both at least 1).
    pub fn new(enter_after: u32, leave_after: u32) -> Hysteresis {
        Hysteresis {
            enter_after: enter_after.max(1),
            leave_after: leave_after.max(1),
            above_run: 0,
            below_run: 0,
            episode: None,
            pending_peak: (0.0, 0),
        }
    }

    /// The running episode, if any.
    pub fn episode(&self) -> Option<&Episode> {
        self.episode.as_ref()
    }

    /// Feeds one frame's ratio of score to threshold (`> 1` is above).
    pub fn update(&mut self, frame: u64, ratio: f64) -> Transition {
        let above = ratio > 1.0;
        if above {
            self.above_run += 1;
            self.below_run = 0;
        } else {
            self.below_run += 1;
            self.above_run = 0;
        }
        match &mut self.episode {
            None => {
                if above {
                    if self.above_run == 1 || ratio > self.pending_peak.0 {
                        self.pending_peak = (ratio, frame);
                    }
                    if self.above_run >= self.enter_after {
                        let (peak_ratio, peak_frame) = self.pending_peak;
                        self.episode = Some(Episode {
                            start_frame: frame,
                            last_above_frame: frame,
                            peak_ratio,
                            peak_frame,
                            frames: 1,
                        });
                        return Transition::Start;
                    }
                }
                Transition::None
            }
            Some(ep) => {
                ep.frames += 1;
                if above {
                    ep.last_above_frame = frame;
                    if ratio > ep.peak_ratio {
                        ep.peak_ratio = ratio;
                        ep.peak_frame = frame;
                    }
                }
                if self.below_run >= self.leave_after {
                    let done = *ep;
                    self.episode = None;
                    return Transition::End(done);
                }
                Transition::Continue
            }
        }
    }

    /// Ends a running episode (at shutdown).
    pub fn finish(&mut self) -> Option<Episode> {
        self.episode.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_noisy_frame_raises_no_alarm() {
        let mut h = Hysteresis::new(3, 5);
        let ratios = [0.5, 2.0, 0.5, 0.5, 2.0, 2.0, 0.9];
        for (i, r) in ratios.iter().enumerate() {
            assert_eq!(h.update(i as u64, *r), Transition::None, "frame {i}");
        }
    }

    #[test]
    fn enters_after_k_and_leaves_after_m() {
        let mut h = Hysteresis::new(2, 3);
        assert_eq!(h.update(0, 1.5), Transition::None);
        assert_eq!(h.update(1, 3.0), Transition::Start);
        assert_eq!(h.update(2, 0.5), Transition::Continue);
        assert_eq!(h.update(3, 1.2), Transition::Continue);
        assert_eq!(h.update(4, 0.5), Transition::Continue);
        assert_eq!(h.update(5, 0.5), Transition::Continue);
        match h.update(6, 0.5) {
            Transition::End(ep) => {
                assert_eq!(ep.start_frame, 1);
                assert_eq!(ep.last_above_frame, 3);
                assert_eq!((ep.peak_ratio, ep.peak_frame), (3.0, 1));
                assert_eq!(ep.frames, 6);
            }
            other => panic!("expected the end, got {other:?}"),
        }
        assert!(h.episode().is_none());
    }
}
