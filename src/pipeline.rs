//! One frame in, scores out: preprocessing, inference and scoring wired
//! together with every buffer allocated once.

use anyhow::{Context, Result};

use crate::frame::FrameRef;
use crate::model::{Model, PlanKind, Session};
use crate::preprocess::{Fit, Preprocessor};
use crate::score::{Scorer, Scores, pixel_map};
use crate::stats::Mahalanobis;

/// Preprocessor, inference session and scorer for one stream of frames.
#[derive(Debug)]
pub struct Pipeline {
    pre: Preprocessor,
    session: Session,
    scorer: Scorer,
    map: Vec<f32>,
}

impl Pipeline {
    /// Builds a batch-1 pipeline. `kind` decides whether the decoder runs
    /// (needed by the `recon` and `elbo` scores and the pixel map).
    pub fn new(
        model: &Model,
        kind: PlanKind,
        fit: Fit,
        mahalanobis: Option<Mahalanobis>,
    ) -> Result<Pipeline> {
        let plan = model.plan(kind, 1)?;
        let session = plan.session()?;
        let spec = model.spec();
        Ok(Pipeline {
            pre: Preprocessor::new(spec, fit),
            session,
            scorer: Scorer::new(spec, mahalanobis),
            map: vec![0.0; spec.height * spec.width],
        })
    }

    /// Preprocesses, encodes and scores one frame.
    pub fn process(&mut self, frame: FrameRef<'_>) -> Result<Scores> {
        let input = self.session.input_mut()?;
        self.pre
            .process(frame, input)
            .context("preprocessing the frame")?;
        self.run_and_score()
    }

    /// Encodes and scores an image already in model layout (`[C, H, W]`, [0, 1]).
    pub fn process_tensor(&mut self, image: &[f32]) -> Result<Scores> {
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

    /// Per-pixel anomaly map `[H, W]` of the last frame, when the plan
    /// computes the reconstruction.
    pub fn pixel_map(&mut self) -> Result<Option<&[f32]>> {
        let spec = self.session.plan().spec();
        let (likelihood, channels) = (spec.likelihood, spec.channels);
        let Some(r) = self.session.recon()? else {
            return Ok(None);
        };
        pixel_map(
            self.session.input()?,
            r,
            likelihood,
            channels,
            &mut self.map,
        );
        Ok(Some(&self.map))
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
