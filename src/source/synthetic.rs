//! The synthetic scene: dSprites-like sprites moving smoothly on a dark
//! background, rendered in Rust at camera resolution, with anomalies
//! injected on a schedule and the ground truth of every frame known.
//!
//! Everything is a pure function of the configuration and the frame index:
//! [`Scene::state`] says what is in frame `i`, [`render_frame`] draws it.
//! The same seed therefore gives the same bytes on every machine and run,
//! and `bvae record`, the tests and the live loop all see the same scene.
//!
//! Normal frames hold one sprite, a square, an ellipse or a heart (the
//! shape changes every [`SHAPE_SEGMENT`] frames), whose position, size and
//! rotation follow sums of slow sinusoids with seeded frequencies and
//! phases. Edges are antialiased by 4×4 supersampling, so downscaling to
//! the model's input is a real resize, not a pixel copy.
//!
//! Anomaly episodes ([`AnomalySchedule`]) cycle through the
//! [`AnomalyKind`]s: a shape never seen in normal frames (a ring, an
//! open square frame, two squares touching at a corner), two sprites, a large bright occluding blob, a noise burst, and a
//! frozen frame (the last normal frame repeated, byte for byte).

use std::fmt;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use super::{AnomalyKind, FrameInfo, FrameSource, SourceError, reshape};
use crate::frame::{Frame, PixelFormat};
use crate::rng::{SplitMix64, hash2};

/// Frames between changes of the normal sprite's shape.
pub const SHAPE_SEGMENT: u64 = 120;
/// Smallest accepted width or height.
pub const MIN_SIDE: u32 = 16;
/// Largest accepted width or height.
pub const MAX_SIDE: u32 = 4096;
/// Supersampling factor per axis for antialiased edges.
const SUPERSAMPLE: usize = 4;
/// Gray level of the sprites.
const SPRITE_LEVEL: [u8; 3] = [240, 240, 240];
/// Colour of the occluding blob.
const BLOB_LEVEL: [u8; 3] = [250, 236, 200];
/// Peak amplitude of the noise burst, in gray levels.
const NOISE_AMPLITUDE: u8 = 80;

/// When anomaly episodes happen: episode `k` covers frames
/// `first + k·every .. first + k·every + length`, and its kind is
/// `kinds[k % kinds.len()]` for the kinds the scene cycles through
/// ([`AnomalySchedule::episode_in`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnomalySchedule {
    /// Index of the first frame of the first episode.
    pub first: u64,
    /// Frames from the start of one episode to the start of the next.
    pub every: u64,
    /// Frames in one episode (less than `every`).
    pub length: u64,
}

impl Default for AnomalySchedule {
    /// An episode of 20 frames every 200 frames, the first at frame 150.
    fn default() -> Self {
        AnomalySchedule {
            first: 150,
            every: 200,
            length: 20,
        }
    }
}

/// One anomaly episode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Episode {
    /// 0 for the first episode.
    pub number: u64,
    /// What is injected.
    pub kind: AnomalyKind,
    /// Its first frame.
    pub start: u64,
    /// How many times the schedule went through all its kinds before this
    /// episode: the scenes vary an episode's details by it.
    pub round: u64,
}

impl AnomalySchedule {
    /// The episode frame `index` belongs to, if any, when episode `k` is
    /// of kind `kinds[k % kinds.len()]` (`None` when `kinds` is empty).
    pub fn episode_in(&self, index: u64, kinds: &[AnomalyKind]) -> Option<Episode> {
        let since = index.checked_sub(self.first)?;
        let number = since / self.every;
        let start = self.first + number * self.every;
        let cycle = kinds.len().max(1) as u64;
        let kind = *kinds.get((number % cycle) as usize)?;
        (index - start < self.length).then_some(Episode {
            number,
            kind,
            start,
            round: number / cycle,
        })
    }

    /// Checks that episodes do not overlap and leave a normal frame between
    /// them (a frozen frame repeats the frame before its episode).
    pub fn validate(&self) -> Result<()> {
        if self.length == 0 {
            bail!("anomaly length=0: an episode needs at least one frame");
        }
        if self.length >= self.every {
            bail!(
                "anomaly length={} must be less than every={} (episodes would touch)",
                self.length,
                self.every
            );
        }
        if self.first == 0 {
            bail!("anomaly first=0: the first episode needs a normal frame before it");
        }
        Ok(())
    }
}

/// Options of the synthetic scene.
#[derive(Debug, Clone, PartialEq)]
pub struct SyntheticConfig {
    /// Seeds the motion, the shape sequence, and the anomalies' details.
    pub seed: u64,
    /// Frame width in pixels.
    pub width: u32,
    /// Frame height in pixels.
    pub height: u32,
    /// Gray or RGB frames.
    pub format: PixelFormat,
    /// Anomaly episodes, or `None` for normal frames only.
    pub anomalies: Option<AnomalySchedule>,
    /// Time between frames (the source sleeps to keep this pace, like a
    /// camera), or `None` to deliver frames as fast as they are asked for.
    pub frame_period: Option<Duration>,
    /// Index of the first frame the source delivers (`start=N`), so that a
    /// run can continue the scene where a recording ended: a model trained
    /// on frames 0 to N−1 is then watched on later frames of the same
    /// scene.
    pub start: u64,
    /// The kinds of anomaly the schedule cycles through, in this order
    /// (`kinds=small_object+noise_burst`); empty for every kind of the
    /// scene, in the scene's order.
    pub kinds: Vec<AnomalyKind>,
}

impl Default for SyntheticConfig {
    /// Seed 1, 320×240 gray, anomalies on the default schedule, 30 fps.
    fn default() -> Self {
        SyntheticConfig {
            seed: 1,
            width: 320,
            height: 240,
            format: PixelFormat::Gray8,
            anomalies: Some(AnomalySchedule::default()),
            frame_period: Some(Duration::from_nanos(1_000_000_000 / 30)),
            start: 0,
            kinds: vec![],
        }
    }
}

/// The frame period for `fps` frames per second; 0 means unpaced.
pub fn period_from_fps(fps: f64) -> Result<Option<Duration>> {
    if fps == 0.0 {
        Ok(None)
    } else if fps.is_finite() && fps > 0.0 && fps <= 10_000.0 {
        Ok(Some(Duration::from_secs_f64(1.0 / fps)))
    } else {
        bail!("fps={fps}: expected a rate between 0 (unpaced) and 10000")
    }
}

impl SyntheticConfig {
    /// The kinds the schedule cycles through: [`SyntheticConfig::kinds`],
    /// or `all` (the scene's own kinds) when none are named.
    pub fn kinds_or<'a>(&'a self, all: &'a [AnomalyKind]) -> &'a [AnomalyKind] {
        if self.kinds.is_empty() {
            all
        } else {
            &self.kinds
        }
    }

    /// Checks the sizes and the schedule.
    pub fn validate(&self) -> Result<()> {
        for (name, v) in [("width", self.width), ("height", self.height)] {
            if !(MIN_SIDE..=MAX_SIDE).contains(&v) {
                bail!("{name}={v}: expected {MIN_SIDE} to {MAX_SIDE} pixels");
            }
        }
        if let Some(s) = &self.anomalies {
            s.validate()?;
        }
        Ok(())
    }
}

impl fmt::Display for SyntheticConfig {
    /// The `--source` string that gives this configuration back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "synthetic:")?;
        self.fmt_options(f)
    }
}

impl SyntheticConfig {
    /// Writes the options as a `--source` spec takes them
    /// (`seed=1,width=320,...`), for every scene that shares them.
    pub(crate) fn fmt_options(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fps = match self.frame_period {
            None => "0".to_string(),
            Some(p) => {
                let s = format!("{:.3}", 1.0 / p.as_secs_f64());
                s.trim_end_matches('0').trim_end_matches('.').to_string()
            }
        };
        write!(
            f,
            "seed={},width={},height={},rgb={},fps={fps}",
            self.seed,
            self.width,
            self.height,
            if self.format == PixelFormat::Rgb8 {
                "on"
            } else {
                "off"
            },
        )?;
        match &self.anomalies {
            None => write!(f, ",anomalies=off"),
            Some(s) => write!(
                f,
                ",anomalies=on,every={},length={},first={}",
                s.every, s.length, s.first
            ),
        }?;
        if self.start > 0 {
            write!(f, ",start={}", self.start)?;
        }
        if !self.kinds.is_empty() {
            let names: Vec<&str> = self.kinds.iter().map(|k| k.name()).collect();
            write!(f, ",kinds={}", names.join("+"))?;
        }
        Ok(())
    }
}

/// Sprite shapes. The first three appear in normal frames; the others only
/// in [`AnomalyKind::NovelShape`] episodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// A square (normal).
    Square,
    /// An ellipse, 1 : 0.55 (normal).
    Ellipse,
    /// A heart (normal).
    Heart,
    /// Two squares touching at a corner, like a 2×2 checkerboard's dark
    /// cells (novel).
    Checker,
    /// A ring: a disc with a hole (novel).
    Ring,
    /// A hollow square, an open frame (novel).
    Frame,
}

impl Shape {
    /// Shapes of normal frames.
    pub const NORMAL: [Shape; 3] = [Shape::Square, Shape::Ellipse, Shape::Heart];
    /// Shapes that never appear in normal frames.
    pub const NOVEL: [Shape; 3] = [Shape::Ring, Shape::Frame, Shape::Checker];

    /// Whether the point (`u`, `v`) of the sprite's own frame (unit size,
    /// `v` pointing down as in images) is inside the shape.
    pub fn contains(self, u: f32, v: f32) -> bool {
        let y = -v;
        match self {
            Shape::Square => u.abs() <= 0.8 && y.abs() <= 0.8,
            Shape::Ellipse => u * u + (y / 0.55) * (y / 0.55) <= 1.0,
            Shape::Heart => {
                let (x, y) = (u / 0.8, y / 0.8 + 0.1);
                let a = x * x + y * y - 1.0;
                a * a * a - x * x * y * y * y <= 0.0
            }
            Shape::Checker => u * y >= 0.0 && u.abs() <= 0.85 && y.abs() <= 0.85,
            Shape::Ring => {
                let r2 = u * u + y * y;
                (0.5 * 0.5..=1.0).contains(&r2)
            }
            Shape::Frame => {
                let m = u.abs().max(y.abs());
                (0.45..=0.85).contains(&m)
            }
        }
    }
}

/// One sprite.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sprite {
    /// Its shape.
    pub shape: Shape,
    /// Centre, as a fraction of the frame width.
    pub x: f32,
    /// Centre, as a fraction of the frame height.
    pub y: f32,
    /// Half-size, as a fraction of the frame's shorter side.
    pub size: f32,
    /// Rotation in radians, clockwise.
    pub angle: f32,
}

/// A bright disc in front of everything (an occluding object).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Blob {
    /// Centre, as a fraction of the frame width.
    pub x: f32,
    /// Centre, as a fraction of the frame height.
    pub y: f32,
    /// Radius, as a fraction of the frame's shorter side.
    pub radius: f32,
}

/// Everything [`render_frame`] needs to draw one frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SceneState {
    /// Frame width in pixels.
    pub width: u32,
    /// Frame height in pixels.
    pub height: u32,
    /// Gray or RGB.
    pub format: PixelFormat,
    /// Sprites drawn, in order (normal frames have one).
    pub sprites: [Option<Sprite>; 2],
    /// An occluding blob drawn over the sprites.
    pub occluder: Option<Blob>,
    /// Seed of a noise burst added last.
    pub noise: Option<u64>,
    /// Ground truth: `None` for a normal frame.
    pub truth: Option<AnomalyKind>,
}

/// One slow sinusoid.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Wave {
    amp: f32,
    freq: f64,
    phase: f64,
}

impl Wave {
    /// Its value at frame `t`.
    pub(crate) fn at(&self, t: u64) -> f32 {
        self.amp * (self.freq * t as f64 + self.phase).sin() as f32
    }
}

/// A wave whose period is between `lo` and `hi` frames.
pub(crate) fn wave(rng: &mut SplitMix64, amp: f32, lo: f64, hi: f64) -> Wave {
    Wave {
        amp,
        freq: std::f64::consts::TAU / rng.range_f64(lo, hi),
        phase: rng.range_f64(0.0, std::f64::consts::TAU),
    }
}

/// The seeded motion of the normal sprite.
#[derive(Debug, Clone)]
struct Motion {
    x: [Wave; 2],
    y: [Wave; 2],
    size: Wave,
    spin: f64,
    wobble: Wave,
}

/// The synthetic scene: what is in every frame, as a pure function of the
/// configuration and the frame index.
#[derive(Debug, Clone)]
pub struct Scene {
    config: SyntheticConfig,
    motion: Motion,
}

impl Scene {
    /// The scene for `config` (checked first).
    pub fn new(config: SyntheticConfig) -> Result<Scene> {
        config.validate()?;
        let mut rng = SplitMix64::new(config.seed);
        let motion = Motion {
            x: [
                wave(&mut rng, 0.2, 200.0, 420.0),
                wave(&mut rng, 0.08, 70.0, 150.0),
            ],
            y: [
                wave(&mut rng, 0.2, 200.0, 420.0),
                wave(&mut rng, 0.08, 70.0, 150.0),
            ],
            size: wave(&mut rng, 0.035, 150.0, 300.0),
            spin: rng.range_f64(0.01, 0.03) * if rng.next_u64() & 1 == 0 { 1.0 } else { -1.0 },
            wobble: wave(&mut rng, 0.6, 100.0, 250.0),
        };
        Ok(Scene { config, motion })
    }

    /// The configuration.
    pub fn config(&self) -> &SyntheticConfig {
        &self.config
    }

    /// The anomaly episode frame `index` belongs to, if any.
    pub fn episode_at(&self, index: u64) -> Option<Episode> {
        self.config
            .anomalies
            .as_ref()?
            .episode_in(index, self.config.kinds_or(&AnomalyKind::ALL))
    }

    /// Ground truth of frame `index`: `None` for a normal frame.
    pub fn truth(&self, index: u64) -> Option<AnomalyKind> {
        self.episode_at(index).map(|e| e.kind)
    }

    /// The normal sprite at frame `index`.
    pub fn sprite_at(&self, index: u64) -> Sprite {
        let m = &self.motion;
        let segment = index / SHAPE_SEGMENT;
        let shape = Shape::NORMAL[(hash2(self.config.seed, segment) % 3) as usize];
        Sprite {
            shape,
            x: 0.5 + m.x[0].at(index) + m.x[1].at(index),
            y: 0.5 + m.y[0].at(index) + m.y[1].at(index),
            size: 0.15 + m.size.at(index),
            angle: ((m.spin * index as f64) % std::f64::consts::TAU) as f32 + m.wobble.at(index),
        }
    }

    /// Everything in frame `index`.
    pub fn state(&self, index: u64) -> SceneState {
        let c = &self.config;
        let mut s = SceneState {
            width: c.width,
            height: c.height,
            format: c.format,
            sprites: [Some(self.sprite_at(index)), None],
            occluder: None,
            noise: None,
            truth: None,
        };
        let Some(ep) = self.episode_at(index) else {
            return s;
        };
        s.truth = Some(ep.kind);
        let mut rng = SplitMix64::new(hash2(c.seed ^ 0xa5a5_a5a5, ep.number));
        match ep.kind {
            AnomalyKind::NovelShape => {
                if let Some(sp) = &mut s.sprites[0] {
                    sp.shape = Shape::NOVEL[(ep.round % 3) as usize];
                }
            }
            AnomalyKind::TwoObjects => {
                if let Some(first) = s.sprites[0] {
                    let shift = |v: f32| if v < 0.5 { v + 0.32 } else { v - 0.32 };
                    let k = Shape::NORMAL.iter().position(|&x| x == first.shape);
                    s.sprites[1] = Some(Sprite {
                        shape: Shape::NORMAL[(k.unwrap_or(0) + 1) % 3],
                        x: shift(first.x),
                        y: 1.0 - first.y,
                        size: first.size,
                        angle: -first.angle,
                    });
                }
            }
            AnomalyKind::Occlusion => {
                s.occluder = Some(Blob {
                    x: rng.range_f64(0.3, 0.7) as f32,
                    y: rng.range_f64(0.3, 0.7) as f32,
                    radius: rng.range_f64(0.25, 0.35) as f32,
                });
            }
            AnomalyKind::NoiseBurst => s.noise = Some(hash2(c.seed ^ 0x5eed, index)),
            AnomalyKind::FrozenFrame => {
                let mut frozen = self.state(ep.start.saturating_sub(1));
                frozen.truth = Some(AnomalyKind::FrozenFrame);
                return frozen;
            }
            // Kinds of the photos scene, not in the synthetic cycle.
            AnomalyKind::PastedObject
            | AnomalyKind::SmallObject
            | AnomalyKind::Person
            | AnomalyKind::LightsOut
            | AnomalyKind::LensOcclusion => {}
        }
        s
    }
}

/// Blends `colour` over the pixel at byte offset `at` with coverage `cov`.
#[inline]
fn blend(data: &mut [u8], at: usize, bpp: usize, colour: [u8; 3], cov: f32) {
    for (ch, &c) in colour.iter().enumerate().take(bpp) {
        let p = data[at + ch] as f32;
        data[at + ch] = (p + (c as f32 - p) * cov + 0.5) as u8;
    }
}

/// Background colour of row `y` of `h` rows: a dark vertical gradient.
fn background(y: usize, h: usize, format: PixelFormat) -> [u8; 3] {
    let t = y as f32 / h.max(1) as f32;
    let g = (12.0 + 14.0 * t) as u8;
    match format {
        PixelFormat::Gray8 => [g, g, g],
        PixelFormat::Rgb8 => [g.saturating_sub(4), g, g.saturating_add(8)],
    }
}

fn draw_sprite(frame: &mut Frame, sp: &Sprite) {
    let (w, h) = (frame.width, frame.height);
    let bpp = frame.format.bytes_per_pixel();
    let r = sp.size * w.min(h) as f32;
    if r <= 0.0 || !r.is_finite() {
        return;
    }
    let (cx, cy) = (sp.x * w as f32, sp.y * h as f32);
    let reach = r * 1.5;
    let x0 = ((cx - reach).floor().max(0.0)) as usize;
    let x1 = ((cx + reach).ceil().min(w as f32)) as usize;
    let y0 = ((cy - reach).floor().max(0.0)) as usize;
    let y1 = ((cy + reach).ceil().min(h as f32)) as usize;
    let (sin, cos) = sp.angle.sin_cos();
    let inv = 1.0 / r;
    let step = 1.0 / SUPERSAMPLE as f32;
    let total = (SUPERSAMPLE * SUPERSAMPLE) as f32;
    for py in y0..y1 {
        for px in x0..x1 {
            let mut inside = 0u32;
            for sy in 0..SUPERSAMPLE {
                let dy = py as f32 + (sy as f32 + 0.5) * step - cy;
                for sx in 0..SUPERSAMPLE {
                    let dx = px as f32 + (sx as f32 + 0.5) * step - cx;
                    let u = (dx * cos + dy * sin) * inv;
                    let v = (-dx * sin + dy * cos) * inv;
                    inside += sp.shape.contains(u, v) as u32;
                }
            }
            if inside > 0 {
                blend(
                    &mut frame.data,
                    (py * w + px) * bpp,
                    bpp,
                    SPRITE_LEVEL,
                    inside as f32 / total,
                );
            }
        }
    }
}

fn draw_blob(frame: &mut Frame, b: &Blob) {
    let (w, h) = (frame.width, frame.height);
    let bpp = frame.format.bytes_per_pixel();
    let r = b.radius * w.min(h) as f32;
    let (cx, cy) = (b.x * w as f32, b.y * h as f32);
    let x0 = ((cx - r - 1.0).floor().max(0.0)) as usize;
    let x1 = ((cx + r + 1.0).ceil().min(w as f32)) as usize;
    let y0 = ((cy - r - 1.0).floor().max(0.0)) as usize;
    let y1 = ((cy + r + 1.0).ceil().min(h as f32)) as usize;
    for py in y0..y1 {
        let dy = py as f32 + 0.5 - cy;
        for px in x0..x1 {
            let dx = px as f32 + 0.5 - cx;
            let cov = (r - (dx * dx + dy * dy).sqrt() + 0.5).clamp(0.0, 1.0);
            if cov > 0.0 {
                blend(&mut frame.data, (py * w + px) * bpp, bpp, BLOB_LEVEL, cov);
            }
        }
    }
}

fn add_noise(data: &mut [u8], seed: u64) {
    let mut rng = SplitMix64::new(seed);
    let amp = NOISE_AMPLITUDE as i32;
    let span = (2 * amp + 1) as u64;
    for chunk in data.chunks_mut(4) {
        let bits = rng.next_u64();
        for (k, p) in chunk.iter_mut().enumerate() {
            let r = (((bits >> (16 * k)) & 0xffff) * span) >> 16;
            *p = (*p as i32 + r as i32 - amp).clamp(0, 255) as u8;
        }
    }
}

/// Draws `state` into `frame`, reusing its buffer (resized only when the
/// size or format changes). A pure function: the same state gives the
/// same bytes.
pub fn render_frame(state: &SceneState, frame: &mut Frame) {
    let (w, h) = (state.width as usize, state.height as usize);
    reshape(frame, w, h, state.format);
    let bpp = state.format.bytes_per_pixel();
    for (y, row) in frame.data.chunks_exact_mut(w * bpp).enumerate() {
        let bg = background(y, h, state.format);
        for px in row.chunks_exact_mut(bpp) {
            px.copy_from_slice(&bg[..bpp]);
        }
    }
    for sp in state.sprites.iter().flatten() {
        draw_sprite(frame, sp);
    }
    if let Some(b) = &state.occluder {
        draw_blob(frame, b);
    }
    if let Some(seed) = state.noise {
        add_noise(&mut frame.data, seed);
    }
}

/// Keeps a rendered scene to its frame period, like a camera.
#[derive(Debug, Clone)]
pub(crate) struct Pacer {
    period: Option<Duration>,
    next_due: Option<Instant>,
}

impl Pacer {
    /// A pacer for `period` (`None`: no pacing).
    pub(crate) fn new(period: Option<Duration>) -> Pacer {
        Pacer {
            period,
            next_due: None,
        }
    }

    /// Forgets the schedule (the source was reopened).
    pub(crate) fn reset(&mut self) {
        self.next_due = None;
    }

    /// Sleeps until the next frame is due. A late caller is not given a
    /// burst of frames to catch up: the schedule restarts from now.
    pub(crate) fn wait(&mut self) {
        let Some(period) = self.period else {
            return;
        };
        let now = Instant::now();
        match self.next_due {
            Some(due) if due > now => {
                std::thread::sleep(due - now);
                self.next_due = Some(due + period);
            }
            _ => self.next_due = Some(now + period),
        }
    }
}

/// A scene configuration's size, seed, pace and schedule, for
/// [`FrameSource::describe`]: `320x240 gray seed 1, 30 fps, anomalies
/// every 200 frames (...)`.
pub(crate) fn describe_scene(c: &SyntheticConfig) -> String {
    format!(
        "{}x{} {} seed {}, {}",
        c.width,
        c.height,
        c.format.name(),
        c.seed,
        describe_timing(c)
    )
}

/// How a scene configuration is paced and scheduled.
fn describe_timing(c: &SyntheticConfig) -> String {
    let fps = match c.frame_period {
        Some(p) => format!("{:.0} fps", 1.0 / p.as_secs_f64()),
        None => "unpaced".to_string(),
    };
    let anomalies = match &c.anomalies {
        Some(s) => format!(
            "anomalies every {} frames ({} long, first at {})",
            s.every, s.length, s.first
        ),
        None => "no anomalies".to_string(),
    };
    format!("{fps}, {anomalies}")
}

/// The synthetic scene as a [`FrameSource`]: frame `i` of the scene for
/// the `i`-th call, paced to the configured frame period.
#[derive(Debug)]
pub struct SyntheticSource {
    scene: Scene,
    next_index: u64,
    pacer: Pacer,
}

impl SyntheticSource {
    /// A source starting at frame `config.start`.
    pub fn new(config: SyntheticConfig) -> Result<SyntheticSource> {
        let pacer = Pacer::new(config.frame_period);
        let next_index = config.start;
        Ok(SyntheticSource {
            scene: Scene::new(config)?,
            next_index,
            pacer,
        })
    }

    /// The scene it renders.
    pub fn scene(&self) -> &Scene {
        &self.scene
    }
}

impl FrameSource for SyntheticSource {
    fn describe(&self) -> String {
        let c = &self.scene.config;
        format!("synthetic {}", describe_scene(c))
    }

    fn open(&mut self) -> Result<(), SourceError> {
        self.pacer.reset();
        Ok(())
    }

    fn next_frame(&mut self, frame: &mut Frame) -> Result<FrameInfo, SourceError> {
        self.pacer.wait();
        let index = self.next_index;
        let state = self.scene.state(index);
        render_frame(&state, frame);
        self.next_index += 1;
        Ok(FrameInfo {
            index,
            truth: Some(state.truth),
        })
    }

    /// Unpaced (`fps=0`), every frame reaches the loop: an evaluation run
    /// then scores the same frames on any machine.
    fn lossless(&self) -> bool {
        self.scene.config.frame_period.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_cycles_through_every_kind() {
        let s = AnomalySchedule {
            first: 10,
            every: 20,
            length: 5,
        };
        assert_eq!(s.episode_in(9, &AnomalyKind::ALL), None);
        assert_eq!(
            s.episode_in(10, &AnomalyKind::ALL).map(|e| e.kind),
            Some(AnomalyKind::NovelShape)
        );
        assert_eq!(
            s.episode_in(14, &AnomalyKind::ALL).map(|e| e.start),
            Some(10)
        );
        assert_eq!(s.episode_in(15, &AnomalyKind::ALL), None);
        assert_eq!(
            s.episode_in(30, &AnomalyKind::ALL).map(|e| e.kind),
            Some(AnomalyKind::TwoObjects)
        );
        assert_eq!(
            s.episode_in(90, &AnomalyKind::ALL).map(|e| e.kind),
            Some(AnomalyKind::FrozenFrame)
        );
        assert_eq!(
            s.episode_in(110, &AnomalyKind::ALL).map(|e| e.kind),
            Some(AnomalyKind::NovelShape)
        );
    }

    #[test]
    fn shapes_have_similar_areas_and_fit_the_unit_box() {
        let n = 200;
        for shape in Shape::NORMAL.into_iter().chain(Shape::NOVEL) {
            let mut inside = 0;
            for i in 0..n {
                for j in 0..n {
                    let u = -1.5 + 3.0 * (i as f32 + 0.5) / n as f32;
                    let v = -1.5 + 3.0 * (j as f32 + 0.5) / n as f32;
                    if shape.contains(u, v) {
                        inside += 1;
                        assert!(u * u + v * v <= 1.5 * 1.5, "{shape:?} reaches {u},{v}");
                    }
                }
            }
            let area = inside as f32 * 9.0 / (n * n) as f32;
            assert!((0.8..3.0).contains(&area), "{shape:?}: area {area}");
        }
    }

    #[test]
    fn render_reuses_the_buffer() {
        let scene = Scene::new(SyntheticConfig::default()).unwrap();
        let mut f = Frame::empty();
        render_frame(&scene.state(0), &mut f);
        let ptr = f.data.as_ptr();
        for i in 1..20 {
            render_frame(&scene.state(i), &mut f);
        }
        assert_eq!(f.data.as_ptr(), ptr);
        assert_eq!(f.data.len(), 320 * 240);
    }

    #[test]
    fn unpaced_scenes_are_lossless_and_kinds_are_kept() {
        let paced = SyntheticSource::new(SyntheticConfig::default()).unwrap();
        assert!(
            !paced.lossless(),
            "a paced scene drops stale frames like a camera"
        );
        let cfg = SyntheticConfig {
            frame_period: None,
            kinds: vec![AnomalyKind::NoiseBurst],
            ..SyntheticConfig::default()
        };
        let src = SyntheticSource::new(cfg.clone()).unwrap();
        assert!(src.lossless());
        let s = cfg.anomalies.unwrap();
        assert_eq!(src.scene.truth(s.first), Some(AnomalyKind::NoiseBurst));
        assert_eq!(
            src.scene.truth(s.first + s.every),
            Some(AnomalyKind::NoiseBurst)
        );
        assert!(cfg.to_string().ends_with(",kinds=noise_burst"), "{cfg}");
    }

    #[test]
    fn pacing_keeps_the_frame_rate() {
        let mut src = SyntheticSource::new(SyntheticConfig {
            width: 32,
            height: 32,
            frame_period: period_from_fps(200.0).unwrap(),
            ..SyntheticConfig::default()
        })
        .unwrap();
        let mut f = Frame::empty();
        let t = Instant::now();
        for _ in 0..11 {
            src.next_frame(&mut f).unwrap();
        }
        let took = t.elapsed();
        assert!(took >= Duration::from_millis(49), "{took:?}");
    }
}
