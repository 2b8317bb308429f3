//! One frame in, scores out: preprocessing, inference and scoring wired
//! together with every buffer allocated once.

use anyhow::{Context, Result};

use crate::frame::FrameRef;
use crate::meta::ModelSpec;
use crate::model::{Model, PlanKind, Session};
use crate::preprocess::{Fit, Preprocessor};
use crate::reference::Reference;
use crate::score::{Scorer, Scores, pixel_map};

/// Preprocessor, inference session and scorer for one stream of frames.
#[derive(Debug)]
pub struct Pipeline {
    pre: Preprocessor,
    session: Session,
    scorer: Scorer,
    map: Vec<f32>,
    /// Whether `map` belongs to the last frame.
    map_current: bool,
}

impl Pipeline {
    /// Builds a batch-1 pipeline. `kind` decides whether the decoder runs
    /// (needed by the `recon` and `elbo` scores and the pixel map).
    pub fn new(
        model: &Model,
        kind: PlanKind,
        fit: Fit,
        reference: Option<Reference>,
    ) -> Result<Pipeline> {
        let plan = model.plan(kind, 1)?;
        let session = plan.session()?;
        let spec = model.spec();
        Ok(Pipeline {
            pre: Preprocessor::new(spec, fit),
            session,
            scorer: Scorer::new(spec, reference),
            map: vec![0.0; spec.height * spec.width],
            map_current: false,
        })
    }

    /// Preprocesses, encodes and scores one frame.
    pub fn process(&mut self, frame: FrameRef<'_>) -> Result<Scores> {
        self.map_current = false;
        let input = self.session.input_mut()?;
        self.pre
            .process(frame, input)
            .context("preprocessing the frame")?;
        self.run_and_score()
    }

    /// Encodes and scores an image already in model layout (`[C, H, W]`, [0, 1]).
    pub fn process_tensor(&mut self, image: &[f32]) -> Result<Scores> {
        self.map_current = false;
        let input = self.session.input_mut()?;
        anyhow::ensure!(
            input.len() == image.len(),
            "expected an image of {} values, found {}",
            input.len(),
            image.len()
        );
        input.copy_from_slice(image);
        self.run_and_score()
    }

    fn run_and_score(&mut self) -> Result<Scores> {
        self.map_current = false;
        self.session.run()?;
        let s = &self.session;
        Ok(self
            .scorer
            .score(s.input()?, s.mu()?, s.logvar()?, s.recon()?))
    }

    /// The preprocessed input of the last frame, `[C, H, W]`.
    pub fn input(&self) -> Result<&[f32]> {
        Ok(self.session.input()?)
    }

    /// Latent means of the last frame.
    pub fn mu(&self) -> Result<&[f32]> {
        Ok(self.session.mu()?)
    }

    /// Latent log-variances of the last frame.
    pub fn logvar(&self) -> Result<&[f32]> {
        Ok(self.session.logvar()?)
    }

    /// Reconstruction of the last frame, when the plan computes it.
    pub fn recon(&self) -> Result<Option<&[f32]>> {
        Ok(self.session.recon()?)
    }

    /// KL per latent of the last frame.
    pub fn kl_latents(&self) -> &[f32] {
        self.scorer.kl_latents()
    }

    /// Computes the per-pixel anomaly map `[H, W]` of the last frame into
    /// the pipeline's buffer, when the plan computes the reconstruction;
    /// returns whether it did. [`Pipeline::pixel_map`] then lends it.
    pub fn update_pixel_map(&mut self) -> Result<bool> {
        let spec = self.session.plan().spec();
        let (likelihood, channels) = (spec.likelihood, spec.channels);
        let Some(r) = self.session.recon()? else {
            self.map_current = false;
            return Ok(false);
        };
        pixel_map(
            self.session.input()?,
            r,
            likelihood,
            channels,
            &mut self.map,
        );
        self.map_current = true;
        Ok(true)
    }

    /// The pixel map of the last frame, if [`Pipeline::update_pixel_map`]
    /// computed it since the frame was processed.
    pub fn pixel_map(&self) -> Option<&[f32]> {
        self.map_current.then_some(&self.map[..])
    }

    /// The model's contract: input size, channels, latents.
    pub fn spec(&self) -> &ModelSpec {
        self.session.plan().spec()
    }

    /// The preprocessor (for benchmarks that time it alone).
    pub fn preprocessor_mut(&mut self) -> &mut Preprocessor {
        &mut self.pre
    }

    /// The inference session.
    pub fn session_mut(&mut self) -> &mut Session {
        &mut self.session
    }

    /// The scorer.
    pub fn scorer_mut(&mut self) -> &mut Scorer {
        &mut self.scorer
    }
}
