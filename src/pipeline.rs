//! One frame in, scores out: preprocessing, inference and scoring wired
//! together with every buffer allocated once.

use anyhow::{Context, Result};

use crate::frame::FrameRef;
use crate::mask::{MASK_FILL, Mask};
use crate::meta::ModelSpec;
use crate::model::{Model, PlanKind, Session};
use crate::noise::NoiseMeter;
use crate::preprocess::{Fit, Preprocessor};
use crate::reference::Reference;
use crate::score::{Method, Scorer, Scores, pixel_map};
use crate::tiles::{Grid, TileCutter, paste_tile};

/// Preprocessor, inference session and scorer for one stream of frames.
///
/// With tiles ([`Pipeline::tiled`]) every frame is cut into a grid of
/// model inputs, each scored by its own tile's calibration; the frame's
/// [`Scores`] are then each score's largest ratio to its tile's threshold
/// (1 = at the threshold), the input and reconstruction are the whole grid
/// image, and the latents are the worst tile's.
#[derive(Debug)]
pub struct Pipeline {
    pre: Preprocessor,
    session: Session,
    scorer: Scorer,
    map: Vec<f32>,
    /// Whether `map` belongs to the last frame.
    map_current: bool,
    tiles: Option<Tiles>,
    mask: Option<Masking>,
    /// Measures each frame's sensor noise into [`Scores::noise`], when on.
    noise: Option<NoiseMeter>,
}

/// The mask side of a pipeline: the mask, its pixels in the preprocessed
/// image (whole, or the grid) for the last frame size, and the
/// reconstruction with the masked pixels set to the input.
#[derive(Debug)]
struct Masking {
    mask: Mask,
    /// Frame width and height `masked` was drawn for.
    key: Option<(usize, usize)>,
    /// Per pixel of the preprocessed image (`[H, W]`): masked.
    masked: Vec<bool>,
    /// The last image's reconstruction, masked pixels set to the input.
    patched: Vec<f32>,
    /// Whether `patched` belongs to the last image.
    current: bool,
}

/// The tile side of a pipeline.
#[derive(Debug)]
struct Tiles {
    cutter: TileCutter,
    /// The model's spec.
    spec: ModelSpec,
    /// The whole grid image's spec.
    grid_spec: ModelSpec,
    /// `Some(t)`: a view of tile `t` alone (scored by the pipeline's own
    /// scorer, as calibration needs); `None`: every tile.
    only: Option<usize>,
    /// Every tile's scorer and thresholds (`None` mode only).
    scorers: Vec<Scorer>,
    thresholds: Vec<[Option<f64>; Method::ALL.len()]>,
    /// The deciding score: the worst tile is the one whose ratio to its
    /// threshold is highest.
    method: Method,
    /// Per tile of the last frame: scores, latent means, log-variances, KL.
    scores: Vec<Scores>,
    mu: Vec<f32>,
    logvar: Vec<f32>,
    kl: Vec<f32>,
    /// The grid's reconstruction, when the plan computes it.
    recon: Option<Vec<f32>>,
    worst: usize,
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
            tiles: None,
            mask: None,
            noise: None,
        })
    }

    /// Builds a batch-1 pipeline that sees one tile of `grid` at a time
    /// (tile 0 until [`Pipeline::set_tile`] says otherwise): each frame is
    /// fitted to the whole grid and the tile's cell is the model input.
    /// Calibration fits each tile with it.
    pub fn tile_view(
        model: &Model,
        kind: PlanKind,
        fit: Fit,
        reference: Option<Reference>,
        grid: Grid,
    ) -> Result<Pipeline> {
        let mut p = Pipeline::new(model, kind, fit, reference)?;
        p.tiles = Some(Tiles::new(
            p.spec(),
            grid,
            fit,
            Some(0),
            vec![],
            vec![],
            kind,
            Method::Kl,
        ));
        Ok(p)
    }

    /// Builds a pipeline that scores every tile of `grid`, tile *t* with
    /// `references[t]` and `thresholds[t]` (per [`Method::ALL`], `None`
    /// where the tile has no threshold for a score); `method` is the
    /// deciding score.
    pub fn tiled(
        model: &Model,
        kind: PlanKind,
        fit: Fit,
        grid: Grid,
        tiles: Vec<(Reference, [Option<f64>; Method::ALL.len()])>,
        method: Method,
    ) -> Result<Pipeline> {
        anyhow::ensure!(
            tiles.len() == grid.count(),
            "a {grid} grid has {} tiles, the calibration has {}",
            grid.count(),
            tiles.len()
        );
        let mut p = Pipeline::new(model, kind, fit, None)?;
        let spec = p.spec().clone();
        let (scorers, thresholds) = tiles
            .into_iter()
            .map(|(r, t)| (Scorer::new(&spec, Some(r)), t))
            .unzip();
        let t = Tiles::new(&spec, grid, fit, None, scorers, thresholds, kind, method);
        p.map = vec![0.0; t.grid_spec.height * t.grid_spec.width];
        p.tiles = Some(t);
        Ok(p)
    }

    /// Builds the pipeline `profile` scores with: [`Pipeline::tiled`] with
    /// each tile's calibration when the profile has tiles, else a
    /// batch-1 pipeline with its reference; with the profile's mask.
    /// `method` is the deciding score.
    pub fn for_profile(
        model: &Model,
        kind: PlanKind,
        profile: &crate::calibrate::Profile,
        method: Method,
    ) -> Result<Pipeline> {
        let mut pipe = match &profile.tiles {
            None => Pipeline::new(model, kind, profile.fit, Some(profile.reference()?))?,
            Some(t) => {
                let mut tiles = Vec::with_capacity(t.tiles.len());
                for p in &t.tiles {
                    let thresholds = Method::ALL.map(|m| p.threshold_for(m));
                    tiles.push((p.reference()?, thresholds));
                }
                Pipeline::tiled(model, kind, profile.fit, t.grid, tiles, method)?
            }
        };
        pipe.set_mask(profile.mask.clone());
        pipe.measure_noise(profile.noise.is_some());
        Ok(pipe)
    }

    /// Whether [`Pipeline::process`] measures each frame's sensor noise
    /// into [`Scores::noise`] ([`crate::noise`]; the profile's noise check
    /// turns it on).
    pub fn measure_noise(&mut self, on: bool) {
        self.noise = on.then(|| {
            let mut meter = NoiseMeter::new();
            meter.set_mask(self.mask.as_ref().map(|m| m.mask.clone()));
            meter
        });
    }

    /// Chooses the tile a [`Pipeline::tile_view`] sees (ignored by other
    /// pipelines).
    pub fn set_tile(&mut self, t: usize) {
        if let Some(tiles) = &mut self.tiles
            && tiles.only.is_some()
        {
            tiles.only = Some(t.min(tiles.cutter.grid().count() - 1));
        }
    }

    /// The tile grid, when the pipeline cuts frames into tiles.
    pub fn grid(&self) -> Option<Grid> {
        self.tiles.as_ref().map(|t| t.cutter.grid())
    }

    /// Preprocesses, encodes and scores one frame (and measures its sensor
    /// noise, when [`Pipeline::measure_noise`] is on).
    pub fn process(&mut self, frame: FrameRef<'_>) -> Result<Scores> {
        let mut s = self.encode_and_score(frame)?;
        s.noise = self.noise.as_mut().map(|m| m.measure(frame));
        Ok(s)
    }

    /// [`Pipeline::process`] but for the noise.
    fn encode_and_score(&mut self, frame: FrameRef<'_>) -> Result<Scores> {
        self.map_current = false;
        let image = {
            let s = self.image_spec();
            (s.width, s.height)
        };
        if let Some(m) = &mut self.mask {
            m.prepare(self.pre.fit(), frame.width, frame.height, image);
        }
        let Some(tiles) = &mut self.tiles else {
            let input = self.session.input_mut()?;
            self.pre
                .process(frame, input)
                .context("preprocessing the frame")?;
            if let Some(m) = &self.mask {
                m.fill(input);
            }
            return self.run_and_score(None);
        };
        tiles.cutter.cut(frame).context("preprocessing the frame")?;
        if let Some(m) = &self.mask {
            m.fill(tiles.cutter.image_mut());
        }
        if let Some(t) = tiles.only {
            tiles.cutter.tile_into(t, self.session.input_mut()?);
            return self.run_and_score(Some(t));
        }
        let z = tiles.spec.latent_dim;
        for t in 0..tiles.scorers.len() {
            tiles.cutter.tile_into(t, self.session.input_mut()?);
            self.session.run()?;
            let s = &self.session;
            let mut recon = s.recon()?;
            if let (Some(m), Some(r)) = (&mut self.mask, recon) {
                m.patch(s.input()?, r, image, Some((tiles.cutter.grid(), t)));
                recon = Some(&m.patched);
            }
            tiles.scores[t] = tiles.scorers[t].score(s.input()?, s.mu()?, s.logvar()?, recon);
            tiles.mu[t * z..(t + 1) * z].copy_from_slice(s.mu()?);
            tiles.logvar[t * z..(t + 1) * z].copy_from_slice(s.logvar()?);
            tiles.kl[t * z..(t + 1) * z].copy_from_slice(tiles.scorers[t].kl_latents());
            if let (Some(r), Some(grid_recon)) = (recon, tiles.recon.as_mut()) {
                paste_tile(&tiles.spec, tiles.cutter.grid(), t, r, grid_recon);
            }
        }
        Ok(tiles.frame_scores())
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
        if let Some(m) = &mut self.mask {
            m.current = false;
        }
        self.run_and_score(None)
    }

    /// Runs the session on its input and scores it; `tile` is the tile of
    /// the grid image the input is (for the mask).
    fn run_and_score(&mut self, tile: Option<usize>) -> Result<Scores> {
        self.map_current = false;
        self.session.run()?;
        let s = &self.session;
        let mut recon = s.recon()?;
        if let (Some(m), Some(r)) = (&mut self.mask, recon)
            && m.key.is_some()
        {
            let grid = self.tiles.as_ref().map(|t| t.cutter.grid());
            let image = match &self.tiles {
                Some(t) => (t.grid_spec.width, t.grid_spec.height),
                None => (s.plan().spec().width, s.plan().spec().height),
            };
            m.patch(s.input()?, r, image, grid.zip(tile));
            recon = Some(&m.patched);
        }
        Ok(self.scorer.score(s.input()?, s.mu()?, s.logvar()?, recon))
    }

    /// Leaves the pixels of `mask` out of every score and heatmap from the
    /// next frame on (see [`crate::mask`]); `None` removes it.
    pub fn set_mask(&mut self, mask: Option<Mask>) {
        if let Some(meter) = &mut self.noise {
            meter.set_mask(mask.clone());
        }
        self.mask = mask.map(|mask| Masking {
            mask,
            key: None,
            masked: vec![],
            patched: vec![0.0; self.session.plan().spec().image_len()],
            current: false,
        });
    }

    /// The every-tile side, when the pipeline scores every tile.
    fn all_tiles(&self) -> Option<&Tiles> {
        self.tiles.as_ref().filter(|t| t.only.is_none())
    }

    /// The preprocessed input of the last frame, `[C, H, W]` (with tiles:
    /// the whole grid image, [`Pipeline::image_spec`]'s shape).
    pub fn input(&self) -> Result<&[f32]> {
        match self.all_tiles() {
            Some(t) => Ok(t.cutter.image()),
            None => Ok(self.session.input()?),
        }
    }

    /// Latent means of the last frame (with tiles: the worst tile's).
    pub fn mu(&self) -> Result<&[f32]> {
        match self.all_tiles() {
            Some(t) => Ok(t.of_worst(&t.mu)),
            None => Ok(self.session.mu()?),
        }
    }

    /// Latent log-variances of the last frame (with tiles: the worst
    /// tile's).
    pub fn logvar(&self) -> Result<&[f32]> {
        match self.all_tiles() {
            Some(t) => Ok(t.of_worst(&t.logvar)),
            None => Ok(self.session.logvar()?),
        }
    }

    /// Reconstruction of the last frame, when the plan computes it (with
    /// tiles: of the whole grid).
    pub fn recon(&self) -> Result<Option<&[f32]>> {
        match self.all_tiles() {
            Some(t) => Ok(t.recon.as_deref()),
            None => match &self.mask {
                Some(m) if m.current => Ok(Some(&m.patched)),
                _ => Ok(self.session.recon()?),
            },
        }
    }

    /// KL per latent of the last frame (with tiles: the worst tile's).
    pub fn kl_latents(&self) -> &[f32] {
        match self.all_tiles() {
            Some(t) => t.of_worst(&t.kl),
            None => self.scorer.kl_latents(),
        }
    }

    /// With tiles: compares tile `t`'s score `m` with `threshold` from the
    /// next frame on (ignored without tiles, for a tile out of range or a
    /// threshold that is not a positive number).
    pub fn set_tile_threshold(&mut self, t: usize, m: Method, threshold: f64) {
        let Some(tiles) = &mut self.tiles else {
            return;
        };
        let i = Method::ALL.iter().position(|&x| x == m);
        if let (Some(thr), Some(i)) = (tiles.thresholds.get_mut(t), i)
            && threshold.is_finite()
            && threshold > 0.0
        {
            thr[i] = Some(threshold);
        }
    }

    /// With tiles: the tile whose ratio to its threshold of the deciding
    /// score was highest in the last frame.
    pub fn worst_tile(&self) -> Option<usize> {
        self.all_tiles().map(|t| t.worst)
    }

    /// With tiles: tile `t`'s ratio of score `m` to its threshold in the
    /// last frame.
    pub fn tile_ratio(&self, t: usize, m: Method) -> Option<f64> {
        let tiles = self.all_tiles()?;
        let i = Method::ALL.iter().position(|&x| x == m)?;
        let v = tiles.scores.get(t)?.get(m)?;
        Some(v as f64 / tiles.thresholds.get(t)?[i]?)
    }

    /// With tiles: each tile's scores of the last frame.
    pub fn tile_scores(&self) -> Option<&[Scores]> {
        self.all_tiles().map(|t| &t.scores[..])
    }

    /// The shape of [`Pipeline::input`]: the model's input, or with tiles
    /// the whole grid image.
    pub fn image_spec(&self) -> &ModelSpec {
        match self.all_tiles() {
            Some(t) => &t.grid_spec,
            None => self.spec(),
        }
    }

    /// Computes the per-pixel anomaly map `[H, W]` of the last frame into
    /// the pipeline's buffer, when the plan computes the reconstruction;
    /// returns whether it did. [`Pipeline::pixel_map`] then lends it.
    pub fn update_pixel_map(&mut self) -> Result<bool> {
        let spec = self.session.plan().spec();
        let (likelihood, channels) = (spec.likelihood, spec.channels);
        let tiles = self.tiles.as_ref().filter(|t| t.only.is_none());
        let (x, r) = match tiles {
            Some(t) => (t.cutter.image(), t.recon.as_deref()),
            None => match &self.mask {
                Some(m) if m.current => (self.session.input()?, Some(&m.patched[..])),
                _ => (self.session.input()?, self.session.recon()?),
            },
        };
        let Some(r) = r else {
            self.map_current = false;
            return Ok(false);
        };
        pixel_map(x, r, likelihood, channels, &mut self.map);
        if let Some(m) = &self.mask
            && m.masked.len() == self.map.len()
        {
            for (v, &masked) in self.map.iter_mut().zip(&m.masked) {
                if masked {
                    *v = 0.0;
                }
            }
        }
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

impl Tiles {
    #[allow(clippy::too_many_arguments)]
    fn new(
        spec: &ModelSpec,
        grid: Grid,
        fit: Fit,
        only: Option<usize>,
        scorers: Vec<Scorer>,
        thresholds: Vec<[Option<f64>; Method::ALL.len()]>,
        kind: PlanKind,
        method: Method,
    ) -> Tiles {
        let n = scorers.len();
        let z = spec.latent_dim;
        let grid_spec = grid.grid_spec(spec);
        let recon =
            (only.is_none() && kind == PlanKind::Full).then(|| vec![0.0; grid_spec.image_len()]);
        Tiles {
            cutter: TileCutter::new(spec, grid, fit),
            spec: spec.clone(),
            grid_spec,
            only,
            scorers,
            thresholds,
            method,
            scores: vec![Scores::default(); n],
            mu: vec![0.0; n * z],
            logvar: vec![0.0; n * z],
            kl: vec![0.0; n * z],
            recon,
            worst: 0,
        }
    }

    /// The worst tile's slice of a per-tile buffer.
    fn of_worst<'a>(&self, v: &'a [f32]) -> &'a [f32] {
        let z = v.len() / self.scores.len().max(1);
        &v[self.worst * z..(self.worst + 1) * z]
    }

    /// The frame's scores: each score's largest ratio to its tile's
    /// threshold, and the worst tile by the deciding score.
    fn frame_scores(&mut self) -> Scores {
        let mut out = Scores::default();
        let mut worst = (0, f64::NEG_INFINITY);
        for (i, m) in Method::ALL.into_iter().enumerate() {
            let mut best: Option<f64> = None;
            for (t, (s, thr)) in self.scores.iter().zip(&self.thresholds).enumerate() {
                let (Some(v), Some(th)) = (s.get(m), thr[i]) else {
                    continue;
                };
                let r = v as f64 / th;
                if best.is_none_or(|b| r > b) {
                    best = Some(r);
                }
                if m == self.method && r > worst.1 {
                    worst = (t, r);
                }
            }
            out.set(m, best.map(|b| b as f32));
        }
        self.worst = worst.0;
        out
    }
}

impl Masking {
    /// Draws the mask for a `frame_w`×`frame_h` frame fitted to `image`
    /// (allocates only when the frame size changes).
    fn prepare(&mut self, fit: Fit, frame_w: usize, frame_h: usize, (w, h): (usize, usize)) {
        self.current = false;
        if self.key == Some((frame_w, frame_h)) {
            return;
        }
        self.mask
            .rasterise(fit, frame_w, frame_h, w, h, &mut self.masked);
        self.key = Some((frame_w, frame_h));
    }

    /// Sets the masked pixels of a preprocessed image (`[C, H, W]`, all
    /// channels) to [`MASK_FILL`].
    fn fill(&self, image: &mut [f32]) {
        let plane = self.masked.len();
        if plane == 0 {
            return;
        }
        for channel in image.chunks_exact_mut(plane) {
            for (v, &m) in channel.iter_mut().zip(&self.masked) {
                if m {
                    *v = MASK_FILL;
                }
            }
        }
    }

    /// Copies the reconstruction `r` of input `x` into `patched`, with the
    /// masked pixels set to the input. `x` is the whole preprocessed image
    /// (`gw`×`gh`), or with `tile` = (grid, t) tile `t` of it.
    fn patch(
        &mut self,
        x: &[f32],
        r: &[f32],
        (gw, gh): (usize, usize),
        tile: Option<(Grid, usize)>,
    ) {
        let n = self.patched.len().min(r.len()).min(x.len());
        self.patched[..n].copy_from_slice(&r[..n]);
        let plane = gw * gh;
        let (tw, th, ox, oy) = match tile {
            Some((g, t)) => {
                let (c, row) = g.cell(t);
                let (tw, th) = (gw / g.cols(), gh / g.rows());
                (tw, th, c * tw, row * th)
            }
            None => (gw, gh, 0, 0),
        };
        let tile_plane = tw * th;
        if tile_plane == 0 || self.masked.len() != plane {
            return;
        }
        for (i, v) in self.patched[..n].iter_mut().enumerate() {
            let p = i % tile_plane;
            let (y, xx) = (p / tw, p % tw);
            if self.masked[(oy + y) * gw + ox + xx] {
                *v = x[i];
            }
        }
        self.current = true;
    }
}
