//! The model side of the loop: each taken frame through the pipeline once,
//! into the results the decision and the observers read
//! ([`FrameResult`]).
//!
//! A frame identical to the last one scored is not run again: the
//! pipeline still holds its results. The pixel map and its heat are
//! computed once per scored frame, only when an observer needs them. All
//! buffers are sized before the loop runs; analysing a frame allocates
//! nothing.

use anyhow::Result;

use super::observe::FrameResult;
use crate::calibrate::Profile;
use crate::frame::{Frame, FrameRef};
use crate::heat::HeatField;
use crate::model::{Model, PlanKind};
use crate::pipeline::Pipeline;
use crate::score::{Method, Scores};

/// What became of one frame.
#[derive(Debug)]
pub enum Analysis {
    /// It was scored (or was identical to the last one scored).
    Scored(Scores),
    /// The pipeline refused it (e.g. its buffer does not match its size).
    Refused(anyhow::Error),
}

/// The pipeline, the last frame scored, and the pixel map's heat.
#[derive(Debug)]
pub struct Analyser {
    pipe: Pipeline,
    /// The last frame scored (the pipeline holds its results).
    previous: Frame,
    /// Its scores, while the pipeline's buffers still belong to it.
    last_scores: Option<Scores>,
    /// Frames in a row identical to the one before.
    identical_run: u32,
    /// The heat of the pixel map, when an observer needs it.
    heat: Option<HeatField>,
    /// Whether `heat` belongs to `previous`.
    heat_current: bool,
    reference: Option<f32>,
}

impl Analyser {
    /// The profile's pipeline for `model` ([`Pipeline::for_profile`]);
    /// `kind` says whether the decoder runs, `method` decides, `needs_map`
    /// whether the pixel map and its heat are computed per frame.
    pub fn new(
        model: &Model,
        profile: &Profile,
        kind: PlanKind,
        method: Method,
        needs_map: bool,
    ) -> Result<Analyser> {
        let pipe = Pipeline::for_profile(model, kind, profile, method)?;
        let spec = pipe.image_spec();
        let heat = needs_map.then(|| HeatField::new(spec.width, spec.height));
        Ok(Analyser {
            pipe,
            previous: Frame::empty(),
            last_scores: None,
            identical_run: 0,
            heat,
            heat_current: false,
            reference: crate::heat::reference(profile),
        })
    }

    /// Scores `frame`. A scored frame is kept as the last one (by swapping
    /// buffers: `frame` gets an old buffer back to refill, nothing is
    /// copied); a refused one is left in `frame`. Errors are those that
    /// make the loop stop (the session lost its buffers), not a refused
    /// frame.
    pub fn analyse(&mut self, frame: &mut Frame) -> Result<Analysis> {
        let p = &self.previous;
        let same = frame.width == p.width
            && frame.height == p.height
            && frame.format == p.format
            && frame.data == p.data;
        let scores = match self.last_scores {
            Some(s) if same => s,
            _ => match self.pipe.process(frame.as_ref()) {
                Ok(s) => {
                    self.update_heat()?;
                    s
                }
                Err(e) => {
                    // the pipeline's buffers no longer match `previous`
                    self.last_scores = None;
                    self.heat_current = false;
                    return Ok(Analysis::Refused(e));
                }
            },
        };
        self.last_scores = Some(scores);
        self.identical_run = if same { self.identical_run + 1 } else { 0 };
        std::mem::swap(frame, &mut self.previous);
        Ok(Analysis::Scored(scores))
    }

    fn update_heat(&mut self) -> Result<()> {
        self.heat_current = false;
        let Some(field) = self.heat.as_mut() else {
            return Ok(());
        };
        if self.pipe.update_pixel_map()?
            && let Some(map) = self.pipe.pixel_map()
        {
            let spec = self.pipe.image_spec();
            field.compute(map, spec.width, spec.height, self.reference);
            self.heat_current = true;
        }
        Ok(())
    }

    /// Frames in a row identical to the one before, up to the last scored.
    pub fn identical_run(&self) -> u32 {
        self.identical_run
    }

    /// The last frame scored.
    pub fn frame(&self) -> FrameRef<'_> {
        self.previous.as_ref()
    }

    /// The pipeline (with tiles: which tile is worst, each tile's ratio).
    pub fn pipeline(&self) -> &Pipeline {
        &self.pipe
    }

    /// With tiles: compares tile `t`'s score `m` with `threshold` from the
    /// next frame on ([`Pipeline::set_tile_threshold`]).
    pub fn set_tile_threshold(&mut self, t: usize, m: Method, threshold: f64) {
        self.pipe.set_tile_threshold(t, m, threshold);
    }

    /// The results of the last frame scored.
    pub fn result(&self) -> Result<FrameResult<'_>> {
        let p = &self.pipe;
        let spec = p.image_spec();
        let heat = match &self.heat {
            Some(h) if self.heat_current => Some(h.heat()),
            _ => None,
        };
        Ok(FrameResult {
            width: spec.width,
            height: spec.height,
            channels: spec.channels,
            scores: self.last_scores.unwrap_or_default(),
            input: p.input()?,
            mu: p.mu()?,
            kl: p.kl_latents(),
            recon: p.recon()?,
            map: heat.and(p.pixel_map()),
            heat,
        })
    }
}
