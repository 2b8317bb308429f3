//! The live window's picture, drawn into a [`Canvas`] without a display:
//! a status bar, the live frame, the model input, its reconstruction, the
//! anomaly heatmap, one bar per latent against its normal range, and the
//! score history with the threshold line.
//!
//! [`Renderer::draw`] takes plain slices ([`Scene`]), so tests draw it
//! with made-up data and no model. All buffers are sized in
//! [`Renderer::new`]; drawing a frame allocates nothing.

use std::fmt::Write as _;

use super::canvas::{Canvas, GLYPH, Rect, Rgb, channels, mix, rgb};
use crate::calibrate::Profile;
use crate::frame::{FrameRef, PixelFormat};
use crate::heat::{HOT_RATIO, Palette};
use crate::score::Method;
use crate::tiles::Grid;

/// Characters of a latent's name shown beside its bar.
pub const NAME_CHARS: usize = 10;

/// The window's hint under the status figures.
pub const WINDOW_HINT: &str = "Esc or close the window: stop";

/// Width of the window in pixels.
pub const WIDTH: usize = 960;
/// Height of the window in pixels.
pub const HEIGHT: usize = 568;

const BG: Rgb = rgb(0x12, 0x14, 0x19);
const PANEL: Rgb = rgb(0x1b, 0x1f, 0x27);
const TRACK: Rgb = rgb(0x2a, 0x30, 0x3b);
const GRID: Rgb = rgb(0x33, 0x39, 0x45);
const TEXT: Rgb = rgb(0xdd, 0xe3, 0xea);
const DIM: Rgb = rgb(0x82, 0x8c, 0x99);
const FAINT: Rgb = rgb(0x55, 0x5d, 0x69);
const BAND: Rgb = rgb(0x2c, 0x5a, 0x3c);
const MEAN: Rgb = rgb(0x6f, 0xcf, 0x8a);
const VALUE: Rgb = rgb(0x4f, 0xc3, 0xf7);
const ALERT: Rgb = rgb(0xff, 0x52, 0x52);
const THRESHOLD: Rgb = rgb(0xff, 0xd5, 0x4f);
const OK: Rgb = rgb(0x2e, 0x9d, 0x5a);
const EPISODE: Rgb = rgb(0x4a, 0x1e, 0x24);
/// Brightness of the model input under the heatmap.
const HEAT_BASE: f32 = 0.35;

/// Where each panel is, in window pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Status bar across the top.
    pub status: Rect,
    /// The captured frame.
    pub live: Rect,
    /// The model input.
    pub input: Rect,
    /// The reconstruction.
    pub recon: Rect,
    /// The per-pixel anomaly heatmap.
    pub heatmap: Rect,
    /// Colour scale under the heatmap.
    pub heat_legend: Rect,
    /// One bar per latent.
    pub latents: Rect,
    /// Score history.
    pub history: Rect,
    /// The plotting area inside `history` (one column per frame).
    pub plot: Rect,
}

impl Layout {
    /// The fixed layout of a [`WIDTH`] × [`HEIGHT`] window.
    pub const fn standard() -> Layout {
        let top = 56;
        let bottom = 336;
        let history = Rect::new(488, bottom, 464, 224);
        Layout {
            status: Rect::new(0, 0, WIDTH, 40),
            live: Rect::new(8, top, 320, 240),
            input: Rect::new(344, top, 192, 192),
            recon: Rect::new(552, top, 192, 192),
            heatmap: Rect::new(760, top, 192, 192),
            heat_legend: Rect::new(760, top + 200, 192, 8),
            latents: Rect::new(8, bottom, 464, 224),
            history,
            plot: Rect::new(
                history.x + 60,
                history.y + 8,
                history.w - 68,
                history.h - 24,
            ),
        }
    }
}

/// The normal range of each latent, from a calibration profile.
#[derive(Debug, Clone, PartialEq)]
pub struct LatentRanges {
    /// Mean of mu over normal frames.
    pub mean: Vec<f64>,
    /// Standard deviation of mu over normal frames.
    pub std: Vec<f64>,
    /// Lower end of the normal range (1st percentile).
    pub low: Vec<f64>,
    /// Upper end of the normal range (99th percentile).
    pub high: Vec<f64>,
    /// Whether each latent carries information (KL on training data);
    /// inactive ones are drawn dimmed.
    pub active: Vec<bool>,
    /// Each latent's name (`bvae.latent_names`; `""` where none, empty
    /// when the model names none).
    pub names: Vec<String>,
}

impl LatentRanges {
    /// The profile's per-latent statistics; `active` from the model's
    /// metadata when it has per-latent KL (all active otherwise).
    pub fn from_profile(profile: &Profile, active: Option<Vec<bool>>) -> LatentRanges {
        let l = &profile.latent;
        let n = l.std.len();
        LatentRanges {
            mean: l.gaussian.mean.clone(),
            std: l.std.clone(),
            low: l.p01.clone(),
            high: l.p99.clone(),
            active: active
                .filter(|a| a.len() == n)
                .unwrap_or_else(|| vec![true; n]),
            names: vec![],
        }
    }

    /// These ranges with the latents' names (`names.len()` must be the
    /// number of latents; other lengths are ignored).
    pub fn with_names(mut self, names: Option<&[String]>) -> LatentRanges {
        if let Some(n) = names.filter(|n| n.len() == self.mean.len()) {
            self.names = n.to_vec();
        }
        self
    }

    /// Number of latents.
    pub fn len(&self) -> usize {
        self.mean.len()
    }

    /// Whether there are no latents.
    pub fn is_empty(&self) -> bool {
        self.mean.is_empty()
    }

    fn get(&self, i: usize) -> (f64, f64, f64, f64, bool) {
        let at = |v: &Vec<f64>, d: f64| v.get(i).copied().unwrap_or(d);
        (
            at(&self.mean, 0.0),
            at(&self.std, 1.0),
            at(&self.low, -1.0),
            at(&self.high, 1.0),
            self.active.get(i).copied().unwrap_or(true),
        )
    }
}

/// What the renderer needs to know once: model image size and the
/// calibration's figures.
#[derive(Debug, Clone, PartialEq)]
pub struct RenderConfig {
    /// Model input channels (1 or 3).
    pub channels: usize,
    /// Model input height.
    pub height: usize,
    /// Model input width.
    pub width: usize,
    /// Normal range of each latent.
    pub latents: LatentRanges,
    /// Name of the deciding score.
    pub method: Method,
    /// With a tiled profile: its grid (the model images are the whole
    /// grid image, `width`×`height`).
    pub tiles: Option<Grid>,
    /// The line under the status figures: how to stop, in the window;
    /// empty in the web view.
    pub hint: &'static str,
}

impl RenderConfig {
    /// From a calibration profile and the model's image size.
    pub fn new(
        profile: &Profile,
        channels: usize,
        height: usize,
        width: usize,
        active: Option<Vec<bool>>,
    ) -> RenderConfig {
        RenderConfig {
            channels,
            height,
            width,
            latents: LatentRanges::from_profile(profile, active),
            method: profile.method,
            tiles: profile.tiles.as_ref().map(|t| t.grid),
            hint: WINDOW_HINT,
        }
    }
}

/// One frame's data to draw. Slices borrow from the pipeline.
#[derive(Debug, Clone, Copy)]
pub struct Scene<'a> {
    /// Source frame index.
    pub index: u64,
    /// The captured frame.
    pub frame: FrameRef<'a>,
    /// Model input `[C, H, W]` in [0, 1].
    pub input: &'a [f32],
    /// Reconstruction `[C, H, W]`, when computed.
    pub recon: Option<&'a [f32]>,
    /// Heat of the per-pixel anomaly map `[H, W]` in [0, 1], on the one
    /// heatmap scale ([`crate::heat`]), when computed.
    pub heat: Option<&'a [f32]>,
    /// Latent means.
    pub mu: &'a [f32],
    /// KL per latent (nats).
    pub kl: &'a [f32],
    /// The deciding score (NaN if missing).
    pub score: f64,
    /// Its threshold.
    pub threshold: f64,
    /// score / threshold; for a frame anomalous only by the camera checks,
    /// its noise / the noise threshold or the frozen-frame ratio.
    pub ratio: f64,
    /// Whether an anomaly episode is running.
    pub in_episode: bool,
    /// Processed frames per second.
    pub fps: f64,
    /// With tiles: bit *t* is set when tile *t* is above its threshold.
    pub hot_tiles: u64,
}

impl<'a> Scene<'a> {
    /// The scene of one frame of the live loop, shown at `fps`.
    pub fn from_view(view: &crate::live::observe::FrameView<'a>, fps: f64) -> Scene<'a> {
        let r = &view.result;
        Scene {
            index: view.index,
            frame: view.frame,
            input: r.input,
            recon: r.recon,
            heat: r.heat,
            mu: r.mu,
            kl: r.kl,
            score: view.score,
            threshold: view.threshold,
            ratio: view.ratio,
            in_episode: view.in_episode,
            fps,
            hot_tiles: view.hot_tiles,
        }
    }
}

/// Frames per second of the frames shown, smoothed (an exponential
/// moving average of the instantaneous rate).
#[derive(Debug, Clone, Default)]
pub struct FpsMeter {
    last: Option<std::time::Instant>,
    fps: f64,
}

impl FpsMeter {
    /// Counts a frame at `now`; returns the smoothed rate (0 until the
    /// second frame).
    pub fn tick(&mut self, now: std::time::Instant) -> f64 {
        if let Some(prev) = self.last {
            let dt = now.duration_since(prev).as_secs_f64();
            if dt > 0.0 {
                let inst = 1.0 / dt;
                self.fps = if self.fps == 0.0 {
                    inst
                } else {
                    0.9 * self.fps + 0.1 * inst
                };
            }
        }
        self.last = Some(now);
        self.fps
    }

    /// The rate as of the last frame.
    pub fn fps(&self) -> f64 {
        self.fps
    }
}

/// Scores of recent frames, one per plot column.
#[derive(Debug, Clone)]
struct History {
    score: Vec<f64>,
    episode: Vec<bool>,
    next: usize,
    len: usize,
}

impl History {
    fn new(cap: usize) -> History {
        History {
            score: vec![f64::NAN; cap.max(1)],
            episode: vec![false; cap.max(1)],
            next: 0,
            len: 0,
        }
    }

    fn push(&mut self, score: f64, episode: bool) {
        let cap = self.score.len();
        self.score[self.next] = score;
        self.episode[self.next] = episode;
        self.next = (self.next + 1) % cap;
        self.len = (self.len + 1).min(cap);
    }

    /// The i-th oldest sample kept.
    fn get(&self, i: usize) -> (f64, bool) {
        let cap = self.score.len();
        let j = (self.next + cap - self.len + i) % cap;
        (self.score[j], self.episode[j])
    }
}

/// Draws the live window's picture.
#[derive(Debug, Clone)]
pub struct Renderer {
    cfg: RenderConfig,
    layout: Layout,
    canvas: Canvas,
    history: History,
    palette: Palette,
    /// Half-width of the latent bars' value axis.
    axis: f64,
    text: String,
    /// One model-sized image, coloured (input, reconstruction, heatmap).
    img: Vec<Rgb>,
}

impl Renderer {
    /// A renderer with every buffer allocated.
    pub fn new(cfg: RenderConfig) -> Renderer {
        let layout = Layout::standard();
        let l = &cfg.latents;
        let mut axis = 1.0f64;
        for i in 0..l.len() {
            let (mean, std, low, high, _) = l.get(i);
            for v in [low, high, mean - 3.0 * std, mean + 3.0 * std] {
                if v.is_finite() {
                    axis = axis.max(v.abs());
                }
            }
        }
        Renderer {
            history: History::new(layout.plot.w),
            palette: Palette::new(),
            axis: (axis * 1.15).min(50.0),
            layout,
            canvas: Canvas::new(WIDTH, HEIGHT),
            text: String::with_capacity(256),
            img: vec![0; cfg.height * cfg.width],
            cfg,
        }
    }

    /// The layout in use.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The picture drawn last.
    pub fn canvas(&self) -> &Canvas {
        &self.canvas
    }

    /// Records one frame's score for the history plot. Call it for every
    /// processed frame, drawn or not.
    pub fn push_score(&mut self, score: f64, in_episode: bool) {
        self.history.push(score, in_episode);
    }

    /// Frames kept in the history plot.
    pub fn history_len(&self) -> usize {
        self.history.len
    }

    /// The x of a latent value on the bars' axis, inside `track`.
    fn value_x(&self, track: Rect, v: f64) -> usize {
        let t = ((v / self.axis + 1.0) / 2.0).clamp(0.0, 1.0);
        track.x + (t * (track.w - 1) as f64).round() as usize
    }

    /// The y of a score in the history plot and whether it was clipped
    /// at the top.
    fn score_y(plot: Rect, v: f64, (lo, hi): (f64, f64)) -> (usize, bool) {
        let t = ((v - lo) / (hi - lo)).clamp(0.0, 1.0);
        let y = plot.y + plot.h - 1 - (t * (plot.h - 1) as f64).round() as usize;
        (y, v > hi)
    }

    /// The score axis of the history plot: the scores shown and the
    /// threshold with a margin, spanning at least 20% of the threshold
    /// (so steady scores are not magnified into noise) and reaching at
    /// most 8× the threshold (higher scores are clipped).
    pub fn score_range(&self, threshold: f64) -> (f64, f64) {
        let thr = if threshold.is_finite() && threshold > 0.0 {
            threshold
        } else {
            1.0
        };
        let (mut lo, mut hi) = (thr, thr);
        for i in 0..self.history.len {
            let (s, _) = self.history.get(i);
            if s.is_finite() {
                lo = lo.min(s);
                hi = hi.max(s);
            }
        }
        hi = hi.min(8.0 * thr);
        let span = (hi - lo).max(0.2 * thr);
        let mid = (lo + hi) / 2.0;
        let (lo, hi) = (mid - 0.6 * span, mid + 0.6 * span);
        // Scores below zero do not exist for a non-negative sample.
        let lo = if lo < 0.0 && self.history_min() >= 0.0 {
            0.0
        } else {
            lo
        };
        (lo, hi.max(lo + 1e-12))
    }

    fn history_min(&self) -> f64 {
        (0..self.history.len)
            .map(|i| self.history.get(i).0)
            .filter(|v| v.is_finite())
            .fold(0.0, f64::min)
    }

    /// The y of the threshold line in the history plot.
    pub fn threshold_y(&self, threshold: f64) -> usize {
        Self::score_y(self.layout.plot, threshold, self.score_range(threshold)).0
    }

    /// Draws the whole picture for one frame.
    pub fn draw(&mut self, s: &Scene<'_>) {
        self.canvas.clear(BG);
        self.draw_status(s);
        self.draw_images(s);
        self.draw_latents(s);
        self.draw_history(s);
    }

    fn label(&mut self, r: Rect, title: &str) {
        self.canvas.text(r.x, r.y - 12, title, 1, DIM);
    }

    /// "WxH" right-aligned above panel `r`.
    fn size_tag(&mut self, r: Rect, w: usize, h: usize) {
        self.text.clear();
        let _ = write!(self.text, "{w}x{h}");
        let tw = Canvas::text_width(&self.text, 1);
        self.canvas
            .text(r.x + r.w - tw, r.y - 12, &self.text, 1, FAINT);
    }

    fn draw_status(&mut self, s: &Scene<'_>) {
        let r = self.layout.status;
        self.canvas.fill(r, PANEL);
        let anomalous = s.in_episode;
        let (badge, colour) = if anomalous {
            ("ANOMALY", ALERT)
        } else {
            ("NORMAL", OK)
        };
        let bw = Canvas::text_width("ANOMALY", 2) + 24;
        let b = Rect::new(r.x + r.w - bw - 8, r.y + 6, bw, r.h - 12);
        self.canvas.fill(b, colour);
        let tw = Canvas::text_width(badge, 2);
        self.canvas
            .text(b.x + (b.w - tw) / 2, b.y + (b.h - 16) / 2, badge, 2, TEXT);

        self.text.clear();
        let _ = if s.score.is_finite() {
            write!(self.text, "score {:.4}", s.score)
        } else {
            write!(self.text, "score -")
        };
        let x = self.canvas.text(r.x + 12, r.y + 12, &self.text, 2, TEXT);
        self.text.clear();
        let _ = write!(self.text, " / {:.4}", s.threshold);
        let x = self.canvas.text(x, r.y + 12, &self.text, 2, DIM);
        self.text.clear();
        let _ = write!(self.text, "  {:.2}x", s.ratio);
        let ratio_colour = if s.ratio > 1.0 { ALERT } else { TEXT };
        let x = self.canvas.text(x, r.y + 12, &self.text, 2, ratio_colour);
        self.text.clear();
        let _ = write!(
            self.text,
            "{} score   frame {}   {:.1} fps",
            self.cfg.method, s.index, s.fps
        );
        self.canvas.text(x + 24, r.y + 8, &self.text, 1, DIM);
        let hint = self.cfg.hint;
        self.canvas.text(x + 24, r.y + 22, hint, 1, FAINT);
    }

    fn draw_images(&mut self, s: &Scene<'_>) {
        let l = self.layout;
        // Live frame, letterboxed, red border during an episode.
        self.label(l.live, "live frame");
        self.size_tag(l.live, s.frame.width, s.frame.height);
        self.canvas.fill(l.live, PANEL);
        let f = s.frame;
        let bpp = f.format.bytes_per_pixel();
        if f.width > 0 && f.height > 0 && f.data.len() >= f.width * f.height * bpp {
            let dst = l.live.fit(f.width, f.height);
            self.canvas.blit(dst, f.width, f.height, |x, y| {
                let i = (y * f.width + x) * bpp;
                match f.format {
                    PixelFormat::Gray8 => {
                        let v = f.data[i];
                        rgb(v, v, v)
                    }
                    PixelFormat::Rgb8 => rgb(f.data[i], f.data[i + 1], f.data[i + 2]),
                }
            });
        }
        if s.in_episode {
            self.canvas.frame(l.live, 3, ALERT);
        }

        let (c, h, w) = (self.cfg.channels, self.cfg.height, self.cfg.width);
        let plane = h * w;
        let ok = |v: &[f32]| plane > 0 && (c == 1 || c == 3) && v.len() >= c * plane;
        let tensor = |v: &[f32], x: usize, y: usize| -> Rgb {
            let q = |k: usize| (v[k * plane + y * w + x].clamp(0.0, 1.0) * 255.0).round() as u8;
            if c == 3 {
                rgb(q(0), q(1), q(2))
            } else {
                let g = q(0);
                rgb(g, g, g)
            }
        };

        self.label(l.input, "model input");
        self.size_tag(l.input, w, h);
        // Each model-sized image is coloured once at model resolution into
        // `img`, then scaled up.
        self.canvas.fill(l.input, PANEL);
        if ok(s.input) {
            show_model_image(&mut self.canvas, &mut self.img, l.input, w, h, |x, y| {
                tensor(s.input, x, y)
            });
        }

        self.label(l.recon, "reconstruction");
        self.canvas.fill(l.recon, PANEL);
        match s.recon {
            Some(r) if ok(r) => {
                show_model_image(&mut self.canvas, &mut self.img, l.recon, w, h, |x, y| {
                    tensor(r, x, y)
                })
            }
            _ => self.no_decoder(l.recon),
        }

        self.label(l.heatmap, "anomaly heatmap");
        self.canvas.fill(l.heatmap, PANEL);
        match s.heat {
            Some(heat) if heat.len() >= plane && plane > 0 => {
                let palette = &self.palette;
                let input = ok(s.input).then_some(s.input);
                show_model_image(&mut self.canvas, &mut self.img, l.heatmap, w, h, |x, y| {
                    // The input shows faintly under the heat.
                    let base = input.map_or(BG, |v| mix(0, tensor(v, x, y), HEAT_BASE));
                    let (r, g, b) = channels(base);
                    let [r, g, b] = palette.paint([r, g, b], heat[y * w + x]);
                    rgb(r, g, b)
                });
            }
            _ => self.no_decoder(l.heatmap),
        }
        if let Some(g) = self.cfg.tiles {
            for panel in [l.input, l.heatmap] {
                self.tile_grid(panel.fit(w, h), g, s.hot_tiles);
            }
        }
        // Colour scale, opaque: from a ratio of 1 to the threshold (left)
        // to HOT_RATIO (right).
        let lg = l.heat_legend;
        for dx in 0..lg.w {
            let ([r, g, b], _) = self.palette.get(dx as f32 / (lg.w - 1).max(1) as f32);
            self.canvas
                .vline(lg.x + dx, lg.y, lg.y + lg.h - 1, rgb(r, g, b));
        }
        self.canvas.text(lg.x, lg.y + lg.h + 4, "1x", 1, FAINT);
        self.text.clear();
        let _ = write!(self.text, "{HOT_RATIO}x recon threshold");
        let tw = Canvas::text_width(&self.text, 1);
        self.canvas
            .text(lg.x + lg.w - tw, lg.y + lg.h + 4, &self.text, 1, FAINT);
    }

    /// Outlines the tiles of `g` over the model image shown in `r`; tiles
    /// above their threshold in red.
    fn tile_grid(&mut self, r: Rect, g: Grid, hot: u64) {
        let (cols, rows) = (g.cols(), g.rows());
        let cell = |t: usize| {
            let (c, rw) = g.cell(t);
            let (x0, x1) = (r.x + c * r.w / cols, r.x + (c + 1) * r.w / cols);
            let (y0, y1) = (r.y + rw * r.h / rows, r.y + (rw + 1) * r.h / rows);
            Rect::new(x0, y0, x1 - x0, y1 - y0)
        };
        for t in 0..g.count() {
            self.canvas.frame(cell(t), 1, GRID);
        }
        for t in (0..g.count()).filter(|&t| t < 64 && hot >> t & 1 == 1) {
            self.canvas.frame(cell(t), 2, ALERT);
        }
    }

    fn no_decoder(&mut self, r: Rect) {
        self.canvas.text(r.x + 8, r.y + 8, "(no decoder)", 1, FAINT);
    }

    /// The track (value axis) of latent row `i` of `n`.
    pub fn latent_track(&self, i: usize, n: usize) -> Rect {
        let r = self.layout.latents;
        let row = ((r.h - 24) / n.max(1)).clamp(3, 22);
        let y = r.y + 20 + i * row;
        let left = self.label_width();
        Rect::new(
            r.x + left,
            y + 1,
            r.w - left - 136,
            row.saturating_sub(3).max(2),
        )
    }

    /// Width of the latents' label column: the index, and the names (at
    /// most [`NAME_CHARS`] characters shown) when the model has them.
    fn label_width(&self) -> usize {
        if self.cfg.latents.names.iter().all(String::is_empty) {
            40
        } else {
            40 + (NAME_CHARS + 1) * GLYPH
        }
    }

    /// Where the bar of latent `i` ends (the x of `value`).
    pub fn latent_value_x(&self, i: usize, n: usize, value: f64) -> usize {
        self.value_x(self.latent_track(i, n), value)
    }

    fn draw_latents(&mut self, s: &Scene<'_>) {
        let r = self.layout.latents;
        self.label(r, "latents: mu vs normal range (1-99%, tick = mean)");
        self.canvas.fill(r, PANEL);
        let n = s.mu.len();
        if n == 0 {
            return;
        }
        let head = r.y + 6;
        self.canvas.text(r.x + 8, head, "z", 1, FAINT);
        let t0 = self.latent_track(0, n);
        self.text.clear();
        let _ = write!(self.text, "-{:.1}", self.axis);
        self.canvas.text(t0.x, head, &self.text, 1, FAINT);
        self.canvas
            .text(t0.x + t0.w / 2 - GLYPH / 2, head, "0", 1, FAINT);
        self.text.clear();
        let _ = write!(self.text, "+{:.1}", self.axis);
        let tw = Canvas::text_width(&self.text, 1);
        self.canvas
            .text(t0.x + t0.w - tw, head, &self.text, 1, FAINT);
        self.canvas
            .text(t0.x + t0.w + 8, head, "  mu     kl", 1, FAINT);

        for i in 0..n {
            let track = self.latent_track(i, n);
            let v = s.mu[i] as f64;
            let (mean, _std, low, high, active) = self.cfg.latents.get(i);
            // Inactive latents carry no information: their tiny normal
            // range is noise, so leaving it is not flagged.
            let out = active && (v < low || v > high);
            self.canvas.fill(track, TRACK);
            // Normal range band and mean tick.
            let (bx0, bx1) = (self.value_x(track, low), self.value_x(track, high));
            self.canvas.fill(
                Rect::new(bx0, track.y, (bx1 + 1).saturating_sub(bx0), track.h),
                BAND,
            );
            let zx = self.value_x(track, 0.0);
            self.canvas.vline(zx, track.y, track.y + track.h - 1, GRID);
            let mx = self.value_x(track, mean);
            self.canvas.vline(mx, track.y, track.y + track.h - 1, MEAN);
            // The value: a bar from 0, a bright marker at the value.
            let colour = if out { ALERT } else { VALUE };
            let colour = if active {
                colour
            } else {
                mix(colour, PANEL, 0.55)
            };
            let vx = self.value_x(track, v);
            let inner = Rect::new(
                zx.min(vx),
                track.y + track.h / 4,
                zx.max(vx) - zx.min(vx) + 1,
                (track.h / 2).max(1),
            );
            self.canvas.fill(inner, colour);
            let marker = Rect::new(vx.saturating_sub(1), track.y, 3, track.h);
            self.canvas.fill(marker, if out { ALERT } else { TEXT });

            if track.h + 3 >= GLYPH {
                let ty = track.y + track.h.saturating_sub(GLYPH) / 2;
                let label_colour = match (out, active) {
                    (true, _) => ALERT,
                    (false, true) => TEXT,
                    (false, false) => FAINT,
                };
                self.text.clear();
                let _ = write!(self.text, "{i}");
                if let Some(name) = self.cfg.latents.names.get(i).filter(|n| !n.is_empty()) {
                    self.text.push_str("  ");
                    self.text.extend(name.chars().take(NAME_CHARS));
                }
                self.canvas.text(r.x + 8, ty, &self.text, 1, label_colour);
                self.text.clear();
                let _ = write!(self.text, "{v:+6.2}");
                let x = self
                    .canvas
                    .text(track.x + track.w + 8, ty, &self.text, 1, label_colour);
                self.text.clear();
                match s.kl.get(i) {
                    Some(k) => {
                        let _ = write!(self.text, " {k:5.2}");
                    }
                    None => {
                        let _ = write!(self.text, "     -");
                    }
                }
                let kl_colour = if active { DIM } else { FAINT };
                let x = self.canvas.text(x, ty, &self.text, 1, kl_colour);
                if out {
                    self.canvas.text(x + 4, ty, "!", 1, ALERT);
                }
            }
        }
    }

    fn draw_history(&mut self, s: &Scene<'_>) {
        let r = self.layout.history;
        let p = self.layout.plot;
        self.text.clear();
        let _ = write!(
            self.text,
            "{} score, last {} frames",
            self.cfg.method, self.history.len
        );
        self.canvas.text(r.x, r.y - 12, &self.text, 1, DIM);
        self.canvas.fill(r, PANEL);
        self.canvas.fill(p, BG);
        let range = self.score_range(s.threshold);
        let n = self.history.len;
        let x0 = p.x + p.w - n;
        // Episodes shaded.
        for i in 0..n {
            if self.history.get(i).1 {
                self.canvas.vline(x0 + i, p.y, p.y + p.h - 1, EPISODE);
            }
        }
        // Axis labels: top and bottom of the range.
        self.text.clear();
        let _ = write!(self.text, "{:.4}", range.1);
        self.canvas.text(r.x + 4, p.y, &self.text, 1, FAINT);
        self.text.clear();
        let _ = write!(self.text, "{:.4}", range.0);
        self.canvas
            .text(r.x + 4, p.y + p.h - GLYPH, &self.text, 1, FAINT);
        // The score line.
        let mut prev: Option<usize> = None;
        for i in 0..n {
            let (v, _) = self.history.get(i);
            if !v.is_finite() {
                prev = None;
                continue;
            }
            let (y, clipped) = Self::score_y(p, v, range);
            let colour = if clipped || v > s.threshold {
                ALERT
            } else {
                VALUE
            };
            let x = x0 + i;
            match prev {
                Some(py) => self.canvas.vline(x, py, y, colour),
                None => self.canvas.set(x, y, colour),
            }
            prev = Some(y);
        }
        // Threshold line, dashed, with its value.
        if s.threshold.is_finite() && s.threshold > 0.0 {
            let (ty, _) = Self::score_y(p, s.threshold, range);
            self.canvas.hline(p.x, p.x + p.w - 1, ty, 6, THRESHOLD);
            self.text.clear();
            let _ = write!(self.text, "{:.4}", s.threshold);
            self.canvas.text(
                r.x + 4,
                ty.saturating_sub(GLYPH / 2),
                &self.text,
                1,
                THRESHOLD,
            );
            let tw = Canvas::text_width("threshold", 1);
            self.canvas.text(
                p.x + p.w - tw - 4,
                ty.saturating_sub(GLYPH + 3),
                "threshold",
                1,
                THRESHOLD,
            );
        }
        self.canvas
            .frame(Rect::new(p.x - 1, p.y - 1, p.w + 2, p.h + 2), 1, GRID);
    }
}

/// Colours a `w`×`h` model-sized image pixel by pixel into `img`, then
/// shows it scaled into `r`.
fn show_model_image(
    canvas: &mut Canvas,
    img: &mut [Rgb],
    r: Rect,
    w: usize,
    h: usize,
    colour: impl Fn(usize, usize) -> Rgb,
) {
    for (i, p) in img.iter_mut().enumerate() {
        *p = colour(i % w, i / w);
    }
    canvas.blit(r.fit(w, h), w, h, |x, y| img[y * w + x]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(z: usize) -> RenderConfig {
        RenderConfig {
            hint: WINDOW_HINT,
            channels: 1,
            height: 8,
            width: 8,
            latents: LatentRanges {
                mean: vec![0.0; z],
                std: vec![0.5; z],
                low: vec![-1.0; z],
                high: vec![1.0; z],
                active: vec![true; z],
                names: vec![],
            },
            method: Method::Recon,
            tiles: None,
        }
    }

    struct Data {
        frame: Vec<u8>,
        input: Vec<f32>,
        recon: Vec<f32>,
        heat: Vec<f32>,
        mu: Vec<f32>,
        kl: Vec<f32>,
    }

    fn data(mu: Vec<f32>) -> Data {
        Data {
            frame: vec![200; 32 * 24],
            input: vec![1.0; 64],
            recon: vec![0.5; 64],
            heat: (0..64).map(|i| if i < 32 { 0.0 } else { 1.0 }).collect(),
            kl: vec![0.1; mu.len()],
            mu,
        }
    }

    fn scene<'a>(d: &'a Data, score: f64, episode: bool) -> Scene<'a> {
        Scene {
            index: 7,
            frame: FrameRef::new(32, 24, PixelFormat::Gray8, &d.frame).unwrap(),
            input: &d.input,
            recon: Some(&d.recon),
            heat: Some(&d.heat),
            mu: &d.mu,
            kl: &d.kl,
            score,
            threshold: 1.0,
            ratio: score,
            in_episode: episode,
            fps: 30.0,
            hot_tiles: 0,
        }
    }

    fn centre(r: Rect) -> (usize, usize) {
        (r.x + r.w / 2, r.y + r.h / 2)
    }

    #[test]
    fn panels_show_their_images() {
        let mut rd = Renderer::new(cfg(4));
        let d = data(vec![0.0, 0.5, -0.5, 3.0]);
        rd.draw(&scene(&d, 0.5, false));
        let l = *rd.layout();
        let c = rd.canvas();
        assert_eq!((c.width(), c.height()), (WIDTH, HEIGHT));
        let (x, y) = centre(l.live);
        assert_eq!(c.get(x, y), rgb(200, 200, 200), "live frame");
        let (x, y) = centre(l.input);
        assert_eq!(c.get(x, y), rgb(255, 255, 255), "model input");
        let (x, y) = centre(l.recon);
        assert_eq!(c.get(x, y), rgb(128, 128, 128), "reconstruction");
        // Heatmap: top half (heat 0) dark, bottom half (heat 1) the
        // hottest colour over the faint input.
        let hm = l.heatmap;
        let hot = c.get(hm.x + hm.w / 2, hm.y + hm.h - 2);
        let [r, g, b] = rd.palette.paint([89; 3], 1.0);
        assert_eq!(hot, rgb(r, g, b));
        assert!(r > 200 && b < 80, "{hot:06x}");
        let cold = c.get(hm.x + hm.w / 2, hm.y + 2);
        let (r, g, b) = super::super::canvas::channels(cold);
        assert!((r as u32 + g as u32 + b as u32) < 3 * 120, "{cold:06x}");
        // Normal: no red border, a green badge.
        assert_ne!(c.get(l.live.x, l.live.y), ALERT);
        assert!((l.status.x..l.status.x + l.status.w).any(|x| c.get(x, l.status.y + 10) == OK));
    }

    #[test]
    fn named_latents_show_their_names_beside_the_bars() {
        let plain = Renderer::new(cfg(3));
        let mut c = cfg(3);
        let names = ["x".to_string(), String::new(), "orientation".into()];
        c.latents = c.latents.with_names(Some(&names));
        let mut rd = Renderer::new(c);
        // the bars move right to make room for the names
        let (t0, p0) = (rd.latent_track(0, 3), plain.latent_track(0, 3));
        assert_eq!(t0.x, p0.x + (NAME_CHARS + 1) * GLYPH);
        let d = data(vec![0.0, 0.0, 0.0]);
        rd.draw(&scene(&d, 0.5, false));
        let c = rd.canvas();
        let r = rd.layout().latents;
        // text in the name column on the rows of named latents only
        let inked = |i: usize| {
            let t = rd.latent_track(i, 3);
            let x0 = r.x + 8 + 3 * GLYPH;
            (x0..t.x - GLYPH).any(|x| (t.y..t.y + t.h).any(|y| c.get(x, y) == TEXT))
        };
        assert!(inked(0) && !inked(1) && inked(2));
        // a list of the wrong length is ignored
        let mut c = cfg(3);
        c.latents = c.latents.with_names(Some(&names[..2]));
        assert!(c.latents.names.is_empty());
    }

    #[test]
    fn anomaly_state_shows_red_border_and_badge() {
        let mut rd = Renderer::new(cfg(2));
        let d = data(vec![0.0, 0.0]);
        rd.draw(&scene(&d, 3.0, true));
        let l = *rd.layout();
        let c = rd.canvas();
        assert_eq!(c.get(l.live.x, l.live.y), ALERT);
        assert!((l.status.x..l.status.x + l.status.w).any(|x| c.get(x, l.status.y + 10) == ALERT));
    }

    #[test]
    fn bars_reflect_values_and_flag_out_of_range() {
        let mut rd = Renderer::new(cfg(4));
        let mu = vec![0.0, 0.8, -0.8, 2.5];
        let d = data(mu.clone());
        rd.draw(&scene(&d, 0.5, false));
        let c = rd.canvas();
        let n = mu.len();
        for (i, &v) in mu.iter().enumerate() {
            let t = rd.latent_track(i, n);
            let mid = t.y + t.h / 2;
            let vx = rd.latent_value_x(i, n, v as f64);
            let zx = rd.latent_value_x(i, n, 0.0);
            let expect = if v.abs() > 1.0 { ALERT } else { VALUE };
            if vx != zx {
                // the bar runs from 0 towards the value, in its colour
                let between = (zx + vx) / 2;
                assert_eq!(c.get(between, mid), expect, "latent {i}");
            }
            // and not beyond the value
            let beyond = if v >= 0.0 { vx + 4 } else { vx - 4 };
            assert_ne!(c.get(beyond, mid), expect, "latent {i}");
        }
        // An inactive latent outside its range is not flagged.
        let mut c2 = cfg(4);
        c2.latents.active[3] = false;
        let mut rd2 = Renderer::new(c2);
        rd2.draw(&scene(&d, 0.5, false));
        let t = rd2.latent_track(3, n);
        let between = (rd2.latent_value_x(3, n, 0.0) + rd2.latent_value_x(3, n, 2.5)) / 2;
        assert_ne!(rd2.canvas().get(between, t.y + t.h / 2), ALERT);
        // Bars are ordered like the values.
        assert!(rd.latent_value_x(1, n, 0.8) > rd.latent_value_x(0, n, 0.0));
        assert!(rd.latent_value_x(2, n, -0.8) < rd.latent_value_x(0, n, 0.0));
        // The normal band covers [-1, 1] and not far outside it.
        let t = rd.latent_track(0, n);
        let inside = rd.latent_value_x(0, n, 0.9);
        let outside = rd.latent_value_x(0, n, 1.3);
        assert_eq!(c.get(inside, t.y), BAND);
        assert_eq!(c.get(outside, t.y), TRACK);
    }

    #[test]
    fn history_plots_scores_under_and_over_the_threshold_line() {
        let mut rd = Renderer::new(cfg(2));
        let d = data(vec![0.0, 0.0]);
        for i in 0..100 {
            let s = if (60..70).contains(&i) { 3.0 } else { 0.5 };
            rd.push_score(s, (62..75).contains(&i));
        }
        rd.draw(&scene(&d, 0.5, false));
        let p = rd.layout().plot;
        let c = rd.canvas();
        assert_eq!(rd.history_len(), 100);
        // Threshold line: dashed, in its colour, across the plot.
        let ty = rd.threshold_y(1.0);
        assert!(ty > p.y && ty < p.y + p.h);
        let dashes = (p.x..p.x + p.w)
            .filter(|&x| c.get(x, ty) == THRESHOLD)
            .count();
        assert!(dashes > p.w / 3, "{dashes} threshold pixels");
        // The newest sample (0.5) is drawn below the line in the normal
        // colour; a high one (3.0, 10 columns of the episode) above it in red.
        let x_new = p.x + p.w - 1;
        let below = (ty..p.y + p.h).any(|y| c.get(x_new, y) == VALUE);
        assert!(below);
        let x_high = p.x + p.w - 100 + 65;
        assert!((p.y..ty).any(|y| c.get(x_high, y) == ALERT));
        // Episode columns are shaded, others not.
        assert_eq!(c.get(x_high, p.y + 2), EPISODE);
        assert_ne!(c.get(p.x + p.w - 100 + 20, p.y + 2), EPISODE);
        // Nothing drawn left of the oldest sample.
        assert!((p.y + 1..p.y + p.h - 1).all(|y| c.get(p.x + 5, y) != VALUE));
    }

    #[test]
    fn missing_reconstruction_and_bad_sizes_do_not_panic() {
        let mut rd = Renderer::new(cfg(3));
        let d = data(vec![0.0, 0.0, 0.0]);
        let mut s = scene(&d, f64::NAN, false);
        s.recon = None;
        s.heat = None;
        s.input = &[];
        s.mu = &d.mu[..1];
        s.kl = &[];
        rd.push_score(f64::NAN, false);
        rd.draw(&s);
        let l = *rd.layout();
        let (x, y) = centre(l.recon);
        assert_eq!(rd.canvas().get(x, y), PANEL);
    }

    #[test]
    fn heat_legend_runs_cool_to_hot() {
        let mut rd = Renderer::new(cfg(2));
        let d = data(vec![0.0, 0.0]);
        rd.draw(&scene(&d, 0.5, false));
        let lg = rd.layout().heat_legend;
        let c = rd.canvas();
        let (r0, _, b0) = super::super::canvas::channels(c.get(lg.x + 1, lg.y + 1));
        let (r1, _, b1) = super::super::canvas::channels(c.get(lg.x + lg.w - 1, lg.y + 1));
        assert!(b0 > r0, "cool end is blue");
        assert!(r1 > 200 && b1 < 80, "hot end is red");
    }
}
