//! The photos scene: a camera looking at a real photograph, rendered in
//! Rust from the photographs of a folder, with anomalies injected on a
//! schedule and the ground truth of every frame known
//! (`photos:DIR[,seed=N,width=W,height=H,rgb=on|off,anomalies=on|off,fps=R,...]`,
//! the options of the synthetic scene).
//!
//! `python -m bvae_tools photos --out DIR` writes a folder of suitable
//! photographs (the ones bundled with scikit-image); any folder of PNG or
//! JPEG files works. At open the source picks, from the seed, one photo as
//! the background and another for the moving object, and cuts the crops
//! the anomalies paste from the rest; everything the frames need is
//! precomputed then, so rendering a frame allocates nothing.
//!
//! Frame `i` is a pure function of the photos, the configuration and `i`,
//! like the synthetic scene's ([`PhotoScene::render`]). A normal frame is:
//!
//! - the background photo seen by a slowly drifting camera: a sub-pixel pan
//!   of a few pixels and a zoom of under 1% over hundreds of frames
//!   (bilinear sampling);
//! - a moving normal object: an elliptical cut-out of the second photo
//!   following a smooth path of slow sinusoids;
//! - lighting drift: the scene's gain moves by up to ±12% over thousands
//!   of frames, and its colour temperature (red against blue) by ±4%;
//! - sensor noise: Gaussian-like noise of 2 gray levels on every sample,
//!   drawn per frame from [`SplitMix64`].
//!
//! Anomaly episodes ([`AnomalySchedule`]) cycle through
//! [`AnomalyKind::PHOTOS`]: a pasted real object (a crop of a third photo,
//! 60–120 pixels at 640×480), a dark person-sized silhouette, lights out
//! (gain ×0.25), a soft dark blob over the lens from one edge, a noise
//! burst (σ = 15% of full scale), a frozen frame (the last normal frame
//! repeated, byte for byte) and a small pasted object (about 20×20
//! pixels). Sizes are given at 640×480 and scale with the frame.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use super::synthetic::{Pacer, SyntheticConfig, Wave, describe_scene, wave};
use super::{AnomalyKind, Episode, FrameInfo, FrameSource, SourceError, reshape};
use crate::frame::{Frame, PixelFormat};
use crate::imageio;
use crate::preprocess::{Fit, Geometry};
use crate::rng::{SplitMix64, hash2};

/// Default frame width.
pub const DEFAULT_WIDTH: u32 = 640;
/// Default frame height.
pub const DEFAULT_HEIGHT: u32 = 480;
/// The frame size the scene's pixel sizes are given at; other sizes scale
/// them by the smaller of the two ratios.
const REFERENCE: (f32, f32) = (640.0, 480.0);
/// Amplitude of the camera's slow pan, in pixels at 640×480.
const PAN_PIXELS: f32 = 3.0;
/// Amplitude of the camera's faster pan component, in pixels at 640×480.
const PAN_JITTER_PIXELS: f32 = 0.8;
/// Half the camera's zoom range: the zoom runs from 1 to 1 + 2× this.
const ZOOM_AMPLITUDE: f32 = 0.004;
/// Largest change of the scene's gain by the lighting drift.
const GAIN_AMPLITUDE: f32 = 0.12;
/// Largest colour-temperature shift (red up and blue down, or back).
const TEMPERATURE_AMPLITUDE: f32 = 0.04;
/// Standard deviation of the sensor noise, in gray levels.
const SENSOR_SIGMA: f32 = 2.0;
/// Standard deviation of a noise burst: 15% of full scale.
const BURST_SIGMA: f32 = 0.15 * 255.0;
/// The scene's gain while the lights are out.
const LIGHTS_OUT_GAIN: f32 = 0.25;
/// Side of the normal object, as a fraction of the frame height.
const OBJECT_SIDE: f32 = 0.22;
/// Sides of pasted objects, in pixels at 640×480.
const PASTED_SIDES: (f32, f32) = (60.0, 120.0);
/// Side of a small pasted object, in pixels at 640×480.
const SMALL_SIDE: f32 = 20.0;
/// Height of the person silhouette, as a fraction of the frame height.
const PERSON_HEIGHTS: (f64, f64) = (0.3, 0.37);
/// Walking speed of the silhouette, in pixels per frame at 640×480.
const PERSON_SPEED: f32 = 0.6;
/// Colour of the silhouette.
const PERSON_LEVEL: [f32; 3] = [28.0, 26.0, 30.0];
/// Colour of the blob on the lens.
const LENS_LEVEL: [f32; 3] = [14.0, 12.0, 10.0];
/// Opacity of the blob on the lens at its centre.
const LENS_OPACITY: f32 = 0.97;
/// Crops cut for pasted objects (episodes take them in turn).
const PASTED_VARIANTS: usize = 6;
/// Crops cut for small pasted objects.
const SMALL_VARIANTS: usize = 6;
/// Width in pixels of the soft edge of cut-outs.
const FEATHER: f32 = 1.5;
/// Most subsamples per axis when a photo is shrunk (area averaging).
const MAX_SUBSAMPLES: usize = 8;
/// Seeds of the scene's independent random streams.
const SALT_PICK: u64 = 0x9407_0501;
const SALT_MOTION: u64 = 0x9407_0502;
const SALT_CROPS: u64 = 0x9407_0503;
const SALT_EPISODE: u64 = 0x9407_0504;
const SALT_NOISE: u64 = 0x9407_0505;

/// Options of the photos scene.
#[derive(Debug, Clone, PartialEq)]
pub struct PhotosConfig {
    /// The folder of photographs (PNG or JPEG, searched recursively).
    pub dir: PathBuf,
    /// The options shared with the synthetic scene: seed, size, gray or
    /// RGB, the anomaly schedule and the pace.
    pub scene: SyntheticConfig,
}

impl PhotosConfig {
    /// The photos of `dir` at 640×480 RGB, seed 1, anomalies on the
    /// default schedule, 30 fps.
    pub fn new(dir: PathBuf) -> PhotosConfig {
        PhotosConfig {
            dir,
            scene: SyntheticConfig {
                width: DEFAULT_WIDTH,
                height: DEFAULT_HEIGHT,
                format: PixelFormat::Rgb8,
                ..SyntheticConfig::default()
            },
        }
    }

    /// Checks the options (not the folder: [`PhotoScene::load`] reads it).
    pub fn validate(&self) -> Result<()> {
        if self.dir.as_os_str().is_empty() {
            bail!("photos: needs a folder of photographs");
        }
        self.scene.validate()
    }
}

impl fmt::Display for PhotosConfig {
    /// The `--source` string that gives this configuration back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "photos:{},", self.dir.display())?;
        self.scene.fmt_options(f)
    }
}

/// An RGB image of `f32` samples (0–255) with an optional coverage (0–1)
/// per pixel: the background, the normal object and the pasted crops.
#[derive(Debug, Clone)]
struct Patch {
    width: usize,
    height: usize,
    rgb: Vec<f32>,
    /// Empty for an opaque patch.
    alpha: Vec<f32>,
}

/// A rectangle of a photo, in its pixels.
#[derive(Debug, Clone, Copy)]
struct Region {
    x: f32,
    y: f32,
    w: f32,
    h: f32,
}

/// The outline of a cut-out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mask {
    /// An ellipse filling the patch.
    Ellipse,
    /// A rounded rectangle (a superellipse of degree 4).
    Rounded,
}

/// Bilinear sample of an 8-bit gray or RGB frame at (`x`, `y`) in pixel
/// coordinates (pixel centres at whole numbers), clamped at the borders.
fn sample_frame(img: &Frame, x: f32, y: f32) -> [f32; 3] {
    let bpp = img.format.bytes_per_pixel();
    let (w, h) = (img.width, img.height);
    let x = x.clamp(0.0, (w - 1) as f32);
    let y = y.clamp(0.0, (h - 1) as f32);
    let (x0, y0) = (x as usize, y as usize);
    let (x1, y1) = ((x0 + 1).min(w - 1), (y0 + 1).min(h - 1));
    let (fx, fy) = (x - x0 as f32, y - y0 as f32);
    let mut out = [0.0; 3];
    for (c, o) in out.iter_mut().enumerate() {
        let ch = c.min(bpp - 1);
        let at = |px: usize, py: usize| img.data[(py * w + px) * bpp + ch] as f32;
        let top = at(x0, y0) + (at(x1, y0) - at(x0, y0)) * fx;
        let bottom = at(x0, y1) + (at(x1, y1) - at(x0, y1)) * fx;
        *o = top + (bottom - top) * fy;
    }
    out
}

/// Resamples `region` of `img` to `w`×`h` RGB samples: bilinear when
/// enlarging, averaged over a grid of bilinear samples when shrinking.
fn resample(img: &Frame, region: Region, w: usize, h: usize) -> Vec<f32> {
    let (sx, sy) = (region.w / w as f32, region.h / h as f32);
    let k = (sx.max(sy).ceil() as usize).clamp(1, MAX_SUBSAMPLES);
    let inv = 1.0 / (k * k) as f32;
    let mut out = Vec::with_capacity(w * h * 3);
    for j in 0..h {
        for i in 0..w {
            let mut acc = [0.0f32; 3];
            for b in 0..k {
                let y = region.y + (j as f32 + (b as f32 + 0.5) / k as f32) * sy - 0.5;
                for a in 0..k {
                    let x = region.x + (i as f32 + (a as f32 + 0.5) / k as f32) * sx - 0.5;
                    let s = sample_frame(img, x, y);
                    for c in 0..3 {
                        acc[c] += s[c];
                    }
                }
            }
            out.extend(acc.iter().map(|v| v * inv));
        }
    }
    out
}

/// The largest centred region of `img` with the aspect ratio `w`:`h`
/// (what a centre crop of `img` to `w`×`h` resamples).
fn cover(img: &Frame, w: usize, h: usize) -> Region {
    let (x, y, rw, rh) = Geometry::new(Fit::Crop, img.width, img.height, w, h).src;
    Region {
        x: x as f32,
        y: y as f32,
        w: rw as f32,
        h: rh as f32,
    }
}

/// A `w`×`h` cut-out of `region` of `img`, shaped by `mask` with a soft
/// edge.
fn cut_out(img: &Frame, region: Region, w: usize, h: usize, mask: Mask) -> Patch {
    let rgb = resample(img, region, w, h);
    let half = 0.5 * w.min(h) as f32;
    let mut alpha = Vec::with_capacity(w * h);
    for j in 0..h {
        let v = (j as f32 + 0.5) / h as f32 * 2.0 - 1.0;
        for i in 0..w {
            let u = (i as f32 + 0.5) / w as f32 * 2.0 - 1.0;
            let r = match mask {
                Mask::Ellipse => (u * u + v * v).sqrt(),
                Mask::Rounded => (u.powi(4) + v.powi(4)).sqrt().sqrt(),
            };
            // distance inside the edge, in pixels
            let inside = (1.0 - r) * half;
            alpha.push((inside / FEATHER + 0.5).clamp(0.0, 1.0));
        }
    }
    Patch {
        width: w,
        height: h,
        rgb,
        alpha,
    }
}

/// A crop of `img` around a seeded point, cut out to `w`×`h`.
fn random_cut_out(img: &Frame, rng: &mut SplitMix64, w: usize, h: usize) -> Patch {
    let (pw, ph) = (img.width as f32, img.height as f32);
    let side = pw.min(ph) * rng.range_f64(0.2, 0.45) as f32;
    let (rw, rh) = if w >= h {
        (side, side * h as f32 / w as f32)
    } else {
        (side * w as f32 / h as f32, side)
    };
    let cx = pw * rng.range_f64(0.2, 0.8) as f32;
    let cy = ph * rng.range_f64(0.2, 0.8) as f32;
    let region = Region {
        x: (cx - rw / 2.0).clamp(0.0, (pw - rw).max(0.0)),
        y: (cy - rh / 2.0).clamp(0.0, (ph - rh).max(0.0)),
        w: rw,
        h: rh,
    };
    cut_out(img, region, w, h, Mask::Rounded)
}

/// Which photos of the folder the scene uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhotoChoice {
    /// Every image file of the folder, sorted.
    pub files: Vec<PathBuf>,
    /// Index in `files` of the background.
    pub background: usize,
    /// Index of the photo the normal object is cut from.
    pub object: usize,
    /// Indices of the photos the pasted objects are cut from: every other
    /// photo (the background, when the folder has only one or two).
    pub pasted: Vec<usize>,
}

impl PhotoChoice {
    /// The choice for `files` (at least one) and `seed`.
    fn new(files: Vec<PathBuf>, seed: u64) -> PhotoChoice {
        let n = files.len().max(1) as u64;
        let background = (hash2(seed ^ SALT_PICK, 0) % n) as usize;
        let object = if n > 1 {
            (background + 1 + (hash2(seed ^ SALT_PICK, 1) % (n - 1)) as usize) % n as usize
        } else {
            background
        };
        let mut pasted: Vec<usize> = (0..files.len())
            .filter(|&i| i != background && i != object)
            .collect();
        if pasted.is_empty() {
            pasted.push(background);
        }
        PhotoChoice {
            files,
            background,
            object,
            pasted,
        }
    }

    fn name(&self, i: usize) -> String {
        self.files
            .get(i)
            .and_then(|p| p.file_name())
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
    }
}

/// The seeded slow motions of the scene.
#[derive(Debug, Clone)]
struct Motion {
    pan_x: [Wave; 2],
    pan_y: [Wave; 2],
    zoom: Wave,
    gain: [Wave; 2],
    temperature: Wave,
    object_x: [Wave; 2],
    object_y: [Wave; 2],
}

impl Motion {
    fn new(seed: u64, unit: f32) -> Motion {
        let mut rng = SplitMix64::new(seed ^ SALT_MOTION);
        let r = &mut rng;
        Motion {
            pan_x: [
                wave(r, PAN_PIXELS * unit, 400.0, 900.0),
                wave(r, PAN_JITTER_PIXELS * unit, 120.0, 260.0),
            ],
            pan_y: [
                wave(r, PAN_PIXELS * unit * 0.7, 400.0, 900.0),
                wave(r, PAN_JITTER_PIXELS * unit * 0.7, 120.0, 260.0),
            ],
            zoom: wave(r, ZOOM_AMPLITUDE, 500.0, 1100.0),
            gain: [
                wave(r, GAIN_AMPLITUDE * 0.7, 2500.0, 6000.0),
                wave(r, GAIN_AMPLITUDE * 0.3, 900.0, 1800.0),
            ],
            temperature: wave(r, TEMPERATURE_AMPLITUDE, 4000.0, 9000.0),
            object_x: [wave(r, 0.28, 250.0, 500.0), wave(r, 0.06, 80.0, 160.0)],
            object_y: [wave(r, 0.18, 250.0, 500.0), wave(r, 0.05, 80.0, 160.0)],
        }
    }
}

/// The camera and light of one frame.
#[derive(Debug, Clone, Copy)]
struct View {
    pan: (f32, f32),
    zoom: f32,
    /// Gain per channel (lighting and colour temperature).
    gain: [f32; 3],
}

/// The seeded details of one anomaly episode.
#[derive(Debug, Clone, Copy)]
struct Details {
    /// A uniform number per use, in [0, 1).
    u: [f32; 5],
}

impl Details {
    fn of(seed: u64, ep: &Episode) -> Details {
        let mut rng = SplitMix64::new(hash2(seed ^ SALT_EPISODE, ep.number));
        let mut u = [0.0; 5];
        for v in &mut u {
            *v = rng.unit_f32();
        }
        Details { u }
    }
}

/// Reusable working memory of [`PhotoScene::render`]: one frame of `f32`
/// samples, allocated on first use and kept.
#[derive(Debug, Clone, Default)]
pub struct Canvas {
    rgb: Vec<f32>,
}

/// The photos scene: the precomputed photos and motions, and what is in
/// every frame as a pure function of the frame index.
#[derive(Debug, Clone)]
pub struct PhotoScene {
    config: PhotosConfig,
    choice: PhotoChoice,
    /// The background, with a margin around the frame for the camera's pan.
    background: Patch,
    margin: f32,
    object: Patch,
    pasted: Vec<Patch>,
    small: Vec<Patch>,
    motion: Motion,
    /// Pixel sizes at 640×480 times this are the frame's.
    unit: f32,
}

/// Reads one photo, naming it in errors.
fn load_photo(path: &Path) -> Result<Frame> {
    let img = imageio::load_image(path)?;
    if img.width < 2 || img.height < 2 {
        bail!(
            "{} is {}×{} pixels: a photo for the photos source needs at least 2×2",
            path.display(),
            img.width,
            img.height
        );
    }
    Ok(img)
}

impl PhotoScene {
    /// Reads the photos of `config.dir` and precomputes everything the
    /// frames need. Errors name the folder or the file and say what was
    /// expected.
    pub fn load(config: PhotosConfig) -> Result<PhotoScene> {
        config.validate()?;
        let dir = &config.dir;
        let files = imageio::list_images(dir).with_context(|| {
            format!(
                "the photos source needs a folder of PNG or JPEG photographs \
                 (python -m bvae_tools photos --out {} writes one)",
                dir.display()
            )
        })?;
        let choice = PhotoChoice::new(files, config.scene.seed);
        let (w, h) = (config.scene.width as usize, config.scene.height as usize);
        let unit = (w as f32 / REFERENCE.0).min(h as f32 / REFERENCE.1);
        // Decoded photos, each read once and dropped after the crops.
        let mut decoded: Vec<(usize, Frame)> = vec![];
        let mut photo = |i: usize| -> Result<Frame> {
            if let Some((_, f)) = decoded.iter().find(|(k, _)| *k == i) {
                return Ok(f.clone());
            }
            let f = load_photo(&choice.files[i])?;
            decoded.push((i, f.clone()));
            Ok(f)
        };

        let margin = ((PAN_PIXELS + PAN_JITTER_PIXELS) * unit).ceil() + 2.0;
        let (bw, bh) = (w + 2 * margin as usize, h + 2 * margin as usize);
        let bg = photo(choice.background)?;
        let background = Patch {
            width: bw,
            height: bh,
            rgb: resample(&bg, cover(&bg, bw, bh), bw, bh),
            alpha: vec![],
        };

        let side = ((OBJECT_SIDE * h as f32).round() as usize).max(3);
        let obj = photo(choice.object)?;
        let s = obj.width.min(obj.height) as f32 * 0.55;
        let region = Region {
            x: (obj.width as f32 - s) / 2.0,
            y: (obj.height as f32 * 0.45 - s / 2.0).max(0.0),
            w: s,
            h: s,
        };
        let object = cut_out(&obj, region, side, side, Mask::Ellipse);

        let mut rng = SplitMix64::new(config.scene.seed ^ SALT_CROPS);
        let offset = rng.below(choice.pasted.len());
        let mut pasted = Vec::with_capacity(PASTED_VARIANTS);
        let mut small = Vec::with_capacity(SMALL_VARIANTS);
        for k in 0..PASTED_VARIANTS.max(SMALL_VARIANTS) {
            let img = photo(choice.pasted[(offset + k) % choice.pasted.len()])?;
            if k < PASTED_VARIANTS {
                let long = rng.range_f64(PASTED_SIDES.0 as f64, PASTED_SIDES.1 as f64) as f32;
                let aspect = rng.range_f64(0.7, 1.0) as f32;
                let (a, b) = (
                    ((long * unit).round() as usize).max(4),
                    ((long * aspect * unit).round() as usize).max(3),
                );
                let (pw, ph) = if rng.next_u64() & 1 == 0 {
                    (a, b)
                } else {
                    (b, a)
                };
                pasted.push(random_cut_out(&img, &mut rng, pw, ph));
            }
            if k < SMALL_VARIANTS {
                let s = ((SMALL_SIDE * unit).round() as usize).max(3);
                small.push(random_cut_out(&img, &mut rng, s, s));
            }
        }
        let motion = Motion::new(config.scene.seed, unit);
        Ok(PhotoScene {
            config,
            choice,
            background,
            margin,
            object,
            pasted,
            small,
            motion,
            unit,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &PhotosConfig {
        &self.config
    }

    /// Which photos the scene uses.
    pub fn photos(&self) -> &PhotoChoice {
        &self.choice
    }

    /// The anomaly episode frame `index` belongs to, if any.
    pub fn episode_at(&self, index: u64) -> Option<Episode> {
        self.config
            .scene
            .anomalies
            .as_ref()?
            .episode_in(index, self.config.scene.kinds_or(&AnomalyKind::PHOTOS))
    }

    /// Ground truth of frame `index`: `None` for a normal frame.
    pub fn truth(&self, index: u64) -> Option<AnomalyKind> {
        self.episode_at(index).map(|e| e.kind)
    }

    /// Draws frame `index` into `frame` (resized only when its size or
    /// format changes), using `canvas` as working memory, and returns its
    /// ground truth. A pure function of the scene and `index`.
    pub fn render(
        &self,
        index: u64,
        canvas: &mut Canvas,
        frame: &mut Frame,
    ) -> Option<AnomalyKind> {
        let ep = self.episode_at(index);
        match ep {
            Some(e) if e.kind == AnomalyKind::FrozenFrame => {
                // the schedule leaves a normal frame before every episode
                self.draw(e.start.saturating_sub(1), None, canvas, frame);
            }
            _ => self.draw(index, ep, canvas, frame),
        }
        ep.map(|e| e.kind)
    }

    /// Draws the normal frame `index` (what it shows without its anomaly,
    /// if it has one).
    pub fn render_normal(&self, index: u64, canvas: &mut Canvas, frame: &mut Frame) {
        self.draw(index, None, canvas, frame);
    }

    fn view(&self, index: u64, lights_out: bool) -> View {
        let m = &self.motion;
        let pan = (
            m.pan_x[0].at(index) + m.pan_x[1].at(index),
            m.pan_y[0].at(index) + m.pan_y[1].at(index),
        );
        let zoom = 1.0 + ZOOM_AMPLITUDE + m.zoom.at(index);
        let mut g = 1.0 + m.gain[0].at(index) + m.gain[1].at(index);
        if lights_out {
            g *= LIGHTS_OUT_GAIN;
        }
        let t = m.temperature.at(index);
        View {
            pan,
            zoom,
            gain: [g * (1.0 + t), g, g * (1.0 - t)],
        }
    }

    fn draw(&self, index: u64, ep: Option<Episode>, canvas: &mut Canvas, frame: &mut Frame) {
        let c = &self.config.scene;
        let (w, h) = (c.width as usize, c.height as usize);
        canvas.rgb.resize(w * h * 3, 0.0);
        let kind = ep.map(|e| e.kind);
        let view = self.view(index, kind == Some(AnomalyKind::LightsOut));
        self.draw_background(&view, w, h, &mut canvas.rgb);

        let m = &self.motion;
        let ox = (0.5 + m.object_x[0].at(index) + m.object_x[1].at(index)) * w as f32;
        let oy = (0.55 + m.object_y[0].at(index) + m.object_y[1].at(index)) * h as f32;
        paste(&self.object, ox, oy, w, h, &mut canvas.rgb);

        let details = ep.map(|e| (e, Details::of(c.seed, &e)));
        if let Some((e, d)) = details {
            let variant = e.round as usize;
            match e.kind {
                AnomalyKind::PastedObject => {
                    let p = &self.pasted[variant % self.pasted.len()];
                    let (x, y) = place(p, d.u[0], d.u[1], w, h);
                    paste(p, x, y, w, h, &mut canvas.rgb);
                }
                AnomalyKind::SmallObject => {
                    let p = &self.small[variant % self.small.len()];
                    let (x, y) = place(p, d.u[0], d.u[1], w, h);
                    paste(p, x, y, w, h, &mut canvas.rgb);
                }
                AnomalyKind::Person => {
                    let height = h as f32
                        * (PERSON_HEIGHTS.0 + (PERSON_HEIGHTS.1 - PERSON_HEIGHTS.0) * d.u[2] as f64)
                            as f32;
                    let dir = if d.u[3] < 0.5 { -1.0 } else { 1.0 };
                    let walked = dir * PERSON_SPEED * self.unit * (index - e.start) as f32;
                    let feet = (
                        w as f32 * (0.15 + 0.7 * d.u[0]) + walked,
                        h as f32 * 0.55 + (h as f32 * 0.45 - 1.0) * d.u[1],
                    );
                    draw_person(feet, height, w, h, &mut canvas.rgb);
                }
                _ => {}
            }
        }
        for px in canvas.rgb.chunks_exact_mut(3) {
            for (v, g) in px.iter_mut().zip(view.gain) {
                *v *= g;
            }
        }
        if let Some((AnomalyKind::LensOcclusion, d)) = details.map(|(e, d)| (e.kind, d)) {
            draw_lens_blob(&d, w, h, &mut canvas.rgb);
        }
        let burst = kind == Some(AnomalyKind::NoiseBurst);
        write_frame(
            &canvas.rgb,
            c.format,
            hash2(c.seed ^ SALT_NOISE, index),
            burst,
            w,
            h,
            frame,
        );
    }

    /// The background seen through the drifting camera.
    fn draw_background(&self, view: &View, w: usize, h: usize, out: &mut [f32]) {
        let bg = &self.background;
        let (cx, cy) = (w as f32 / 2.0, h as f32 / 2.0);
        let inv = 1.0 / view.zoom;
        let (xmax, ymax) = ((bg.width - 1) as f32, (bg.height - 1) as f32);
        for (y, row) in out.chunks_exact_mut(w * 3).enumerate() {
            let sy = (self.margin + cy + (y as f32 + 0.5 - cy) * inv + view.pan.1 - 0.5)
                .clamp(0.0, ymax);
            let y0 = sy as usize;
            let y1 = (y0 + 1).min(bg.height - 1);
            let fy = sy - y0 as f32;
            let (r0, r1) = (y0 * bg.width * 3, y1 * bg.width * 3);
            for (x, px) in row.chunks_exact_mut(3).enumerate() {
                let sx = (self.margin + cx + (x as f32 + 0.5 - cx) * inv + view.pan.0 - 0.5)
                    .clamp(0.0, xmax);
                let x0 = sx as usize;
                let x1 = (x0 + 1).min(bg.width - 1);
                let fx = sx - x0 as f32;
                for (c, v) in px.iter_mut().enumerate() {
                    let p = |r: usize, x: usize| bg.rgb[r + x * 3 + c];
                    let top = p(r0, x0) + (p(r0, x1) - p(r0, x0)) * fx;
                    let bottom = p(r1, x0) + (p(r1, x1) - p(r1, x0)) * fx;
                    *v = top + (bottom - top) * fy;
                }
            }
        }
    }
}

/// Where a patch goes for the uniform numbers `u`, `v`: its centre, with
/// the whole patch inside the frame when it fits.
fn place(p: &Patch, u: f32, v: f32, w: usize, h: usize) -> (f32, f32) {
    let along = |t: f32, side: usize, size: usize| {
        let half = size as f32 / 2.0;
        let room = (side as f32 - size as f32).max(0.0);
        half + room * t
    };
    (along(u, w, p.width), along(v, h, p.height))
}

/// Blends `p` (with its coverage) over `out` centred at (`cx`, `cy`), with
/// sub-pixel placement (bilinear).
fn paste(p: &Patch, cx: f32, cy: f32, w: usize, h: usize, out: &mut [f32]) {
    let (left, top) = (cx - p.width as f32 / 2.0, cy - p.height as f32 / 2.0);
    let x0 = left.floor().max(0.0) as usize;
    let y0 = top.floor().max(0.0) as usize;
    let x1 = ((left + p.width as f32).ceil() + 1.0).clamp(0.0, w as f32) as usize;
    let y1 = ((top + p.height as f32).ceil() + 1.0).clamp(0.0, h as f32) as usize;
    let (pw, ph) = (p.width as isize, p.height as isize);
    for y in y0..y1 {
        let sy = y as f32 - top;
        let (fy, jy) = (sy - sy.floor(), sy.floor() as isize);
        for x in x0..x1 {
            let sx = x as f32 - left;
            let (fx, ix) = (sx - sx.floor(), sx.floor() as isize);
            // premultiplied colour and coverage of the four neighbours
            let mut col = [0.0f32; 3];
            let mut cov = 0.0f32;
            for (dy, wy) in [(0, 1.0 - fy), (1, fy)] {
                for (dx, wx) in [(0, 1.0 - fx), (1, fx)] {
                    let (i, j) = (ix + dx, jy + dy);
                    if i < 0 || j < 0 || i >= pw || j >= ph {
                        continue;
                    }
                    let k = j as usize * p.width + i as usize;
                    let a = p.alpha.get(k).copied().unwrap_or(1.0) * wx * wy;
                    cov += a;
                    for (c, v) in col.iter_mut().enumerate() {
                        *v += a * p.rgb[k * 3 + c];
                    }
                }
            }
            if cov > 0.0 {
                let at = (y * w + x) * 3;
                for (c, v) in col.iter().enumerate() {
                    out[at + c] = out[at + c] * (1.0 - cov) + v;
                }
            }
        }
    }
}

/// Distance from `p` to the segment `a`–`b`.
fn segment_distance(p: (f32, f32), a: (f32, f32), b: (f32, f32)) -> f32 {
    let (abx, aby) = (b.0 - a.0, b.1 - a.1);
    let (apx, apy) = (p.0 - a.0, p.1 - a.1);
    let len2 = abx * abx + aby * aby;
    let t = if len2 > 0.0 {
        ((apx * abx + apy * aby) / len2).clamp(0.0, 1.0)
    } else {
        0.0
    };
    let (dx, dy) = (apx - t * abx, apy - t * aby);
    (dx * dx + dy * dy).sqrt()
}

/// A segment thickened by a radius: one part of the silhouette, in units
/// of its height, from the point between its feet (`y` up is negative).
#[derive(Debug, Clone, Copy)]
struct Capsule {
    from: (f32, f32),
    to: (f32, f32),
    radius: f32,
}

const fn capsule(from: (f32, f32), to: (f32, f32), radius: f32) -> Capsule {
    Capsule { from, to, radius }
}

/// The parts of the silhouette: head, neck, torso, legs and arms.
const PERSON_PARTS: [Capsule; 7] = [
    capsule((0.0, -0.9), (0.0, -0.9), 0.085),
    capsule((0.0, -0.8), (0.0, -0.78), 0.04),
    capsule((0.0, -0.72), (0.0, -0.5), 0.115),
    capsule((-0.055, -0.45), (-0.075, -0.03), 0.05),
    capsule((0.055, -0.45), (0.075, -0.03), 0.05),
    capsule((-0.14, -0.72), (-0.17, -0.42), 0.038),
    capsule((0.14, -0.72), (0.17, -0.42), 0.038),
];

/// Draws a dark person-sized silhouette `height` pixels tall standing at
/// `feet`, with antialiased edges.
fn draw_person(feet: (f32, f32), height: f32, w: usize, h: usize, out: &mut [f32]) {
    let half_width = 0.25 * height;
    let x0 = (feet.0 - half_width).floor().max(0.0) as usize;
    let x1 = (feet.0 + half_width).ceil().clamp(0.0, w as f32) as usize;
    let y0 = (feet.1 - height).floor().max(0.0) as usize;
    let y1 = (feet.1 + 1.0).ceil().clamp(0.0, h as f32) as usize;
    for y in y0..y1 {
        for x in x0..x1 {
            let p = (x as f32 + 0.5, y as f32 + 0.5);
            let mut d = f32::INFINITY;
            for c in PERSON_PARTS {
                let a = (feet.0 + c.from.0 * height, feet.1 + c.from.1 * height);
                let b = (feet.0 + c.to.0 * height, feet.1 + c.to.1 * height);
                d = d.min(segment_distance(p, a, b) - c.radius * height);
            }
            let cov = (0.5 - d).clamp(0.0, 1.0);
            if cov > 0.0 {
                let at = (y * w + x) * 3;
                for (c, level) in PERSON_LEVEL.iter().enumerate() {
                    out[at + c] += (level - out[at + c]) * cov;
                }
            }
        }
    }
}

/// Draws a large soft dark blob coming in from one edge (chosen by the
/// episode's details) over the lens.
fn draw_lens_blob(d: &Details, w: usize, h: usize, out: &mut [f32]) {
    let short = w.min(h) as f32;
    let radius = short * (0.6 + 0.25 * d.u[2]);
    let soft = 0.4 * radius;
    let along = 0.25 + 0.5 * d.u[1];
    let outside = -0.15 * short;
    let (cx, cy) = match (d.u[0] * 4.0) as u32 {
        0 => (outside, along * h as f32),
        1 => (w as f32 - outside, along * h as f32),
        2 => (along * w as f32, outside),
        _ => (along * w as f32, h as f32 - outside),
    };
    let x0 = (cx - radius).floor().max(0.0) as usize;
    let x1 = (cx + radius).ceil().clamp(0.0, w as f32) as usize;
    let y0 = (cy - radius).floor().max(0.0) as usize;
    let y1 = (cy + radius).ceil().clamp(0.0, h as f32) as usize;
    for y in y0..y1 {
        let dy = y as f32 + 0.5 - cy;
        for x in x0..x1 {
            let dx = x as f32 + 0.5 - cx;
            let t = ((radius - (dx * dx + dy * dy).sqrt()) / soft).clamp(0.0, 1.0);
            let a = LENS_OPACITY * t * t * (3.0 - 2.0 * t);
            if a > 0.0 {
                let at = (y * w + x) * 3;
                for (c, level) in LENS_LEVEL.iter().enumerate() {
                    out[at + c] += (level - out[at + c]) * a;
                }
            }
        }
    }
}

/// A standard normal-like number (a scaled sum of four uniforms, within
/// ±3.5) from 64 random bits.
#[inline]
fn gauss(bits: u64) -> f32 {
    let lanes = (bits & 0xffff) + ((bits >> 16) & 0xffff) + ((bits >> 32) & 0xffff) + (bits >> 48);
    ((lanes as f32 + 2.0) / 65536.0 - 2.0) * 3.0f32.sqrt()
}

/// Converts the scene's samples to `format`, adds the sensor noise (and a
/// burst's), and writes 8-bit pixels into `frame`.
fn write_frame(
    rgb: &[f32],
    format: PixelFormat,
    seed: u64,
    burst: bool,
    w: usize,
    h: usize,
    frame: &mut Frame,
) {
    reshape(frame, w, h, format);
    let mut rng = SplitMix64::new(seed);
    let mut noisy = |v: f32| {
        let mut n = SENSOR_SIGMA * gauss(rng.next_u64());
        if burst {
            n += BURST_SIGMA * gauss(rng.next_u64());
        }
        (v + n + 0.5).clamp(0.0, 255.0) as u8
    };
    match format {
        PixelFormat::Rgb8 => {
            for (o, &v) in frame.data.iter_mut().zip(rgb) {
                *o = noisy(v);
            }
        }
        PixelFormat::Gray8 => {
            for (o, px) in frame.data.iter_mut().zip(rgb.chunks_exact(3)) {
                *o = noisy(0.299 * px[0] + 0.587 * px[1] + 0.114 * px[2]);
            }
        }
    }
}

/// The photos scene as a [`FrameSource`]: frame `i` of the scene for the
/// `i`-th call, paced to the configured frame period. The photos are read
/// when it is first opened.
#[derive(Debug)]
pub struct PhotosSource {
    config: PhotosConfig,
    scene: Option<PhotoScene>,
    canvas: Canvas,
    next_index: u64,
    pacer: Pacer,
}

impl PhotosSource {
    /// A source starting at frame `start` (options checked; the folder is read by
    /// [`FrameSource::open`]).
    pub fn new(config: PhotosConfig) -> Result<PhotosSource> {
        config.validate()?;
        let pacer = Pacer::new(config.scene.frame_period);
        let next_index = config.scene.start;
        Ok(PhotosSource {
            config,
            scene: None,
            canvas: Canvas::default(),
            next_index,
            pacer,
        })
    }

    /// The scene, once opened.
    pub fn scene(&self) -> Option<&PhotoScene> {
        self.scene.as_ref()
    }
}

impl FrameSource for PhotosSource {
    fn describe(&self) -> String {
        let c = &self.config.scene;
        let photos = match &self.scene {
            Some(s) => {
                let p = s.photos();
                format!(
                    " ({} photos; background {}, object {})",
                    p.files.len(),
                    p.name(p.background),
                    p.name(p.object)
                )
            }
            None => String::new(),
        };
        format!(
            "photos:{}{photos} {}",
            self.config.dir.display(),
            describe_scene(c)
        )
    }

    fn open(&mut self) -> Result<(), SourceError> {
        self.pacer.reset();
        if self.scene.is_none() {
            let scene = PhotoScene::load(self.config.clone())
                .map_err(|e| SourceError::Disconnected(format!("{e:#}")))?;
            self.scene = Some(scene);
        }
        Ok(())
    }

    fn next_frame(&mut self, frame: &mut Frame) -> Result<FrameInfo, SourceError> {
        let Some(scene) = &self.scene else {
            return Err(SourceError::Disconnected(
                "the photos source was not opened".into(),
            ));
        };
        self.pacer.wait();
        let index = self.next_index;
        let truth = scene.render(index, &mut self.canvas, frame);
        self.next_index += 1;
        Ok(FrameInfo {
            index,
            truth: Some(truth),
        })
    }

    /// Unpaced (`fps=0`), every frame reaches the loop, as for the
    /// synthetic scene.
    fn lossless(&self) -> bool {
        self.config.scene.frame_period.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imageio::encode_png;
    use crate::source::AnomalySchedule;

    /// Writes three small generated photos (a gradient with discs, stripes,
    /// and a checkerboard) into a new temporary folder.
    fn photo_folder() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let (w, h) = (48usize, 36usize);
        for (n, name) in ["a.png", "b.png", "c.png"].iter().enumerate() {
            let mut data = Vec::with_capacity(w * h * 3);
            for y in 0..h {
                for x in 0..w {
                    let px = match n {
                        0 => {
                            let d = ((x as f32 - 30.0).powi(2) + (y as f32 - 14.0).powi(2)).sqrt();
                            let disc = if d < 9.0 { 120 } else { 0 };
                            [(x * 4) as u8, (y * 5) as u8, (90 + disc) as u8]
                        }
                        1 => {
                            let s: u8 = if (x / 4 + y / 6) % 2 == 0 { 200 } else { 60 };
                            [s, s / 2, 40]
                        }
                        _ => {
                            let s = if (x / 6 + y / 6) % 2 == 0 { 230 } else { 20 };
                            [s, s, (255 - s as u16) as u8]
                        }
                    };
                    data.extend_from_slice(&px);
                }
            }
            let png = encode_png(w as u32, h as u32, PixelFormat::Rgb8, &data).unwrap();
            std::fs::write(dir.path().join(name), png).unwrap();
        }
        dir
    }

    fn config(dir: &Path, seed: u64) -> PhotosConfig {
        let mut c = PhotosConfig::new(dir.to_path_buf());
        c.scene.seed = seed;
        c.scene.width = 96;
        c.scene.height = 72;
        c.scene.anomalies = Some(AnomalySchedule {
            first: 5,
            every: 10,
            length: 4,
        });
        c
    }

    fn mean_abs_diff(a: &Frame, b: &Frame) -> f64 {
        let sum: u64 = a
            .data
            .iter()
            .zip(&b.data)
            .map(|(&x, &y)| (x as i32 - y as i32).unsigned_abs() as u64)
            .sum();
        sum as f64 / a.data.len() as f64
    }

    #[test]
    fn frames_are_a_pure_function_of_seed_and_index() {
        let dir = photo_folder();
        let a = PhotoScene::load(config(dir.path(), 7)).unwrap();
        let b = PhotoScene::load(config(dir.path(), 7)).unwrap();
        let (mut ca, mut cb) = (Canvas::default(), Canvas::default());
        let (mut fa, mut fb) = (Frame::empty(), Frame::empty());
        for i in [0, 1, 6, 33, 1000, 123_456] {
            let ta = a.render(i, &mut ca, &mut fa);
            // b renders in another order: no state carries between frames
            b.render(i + 1, &mut cb, &mut fb);
            let tb = b.render(i, &mut cb, &mut fb);
            assert_eq!(ta, tb);
            assert_eq!(fa, fb, "frame {i}");
        }
        assert_eq!(
            (fa.width, fa.height, fa.format),
            (96, 72, PixelFormat::Rgb8)
        );
        let other = PhotoScene::load(config(dir.path(), 8)).unwrap();
        other.render(0, &mut cb, &mut fb);
        a.render(0, &mut ca, &mut fa);
        assert_ne!(fa, fb, "another seed gives another scene");
    }

    #[test]
    fn normal_frames_drift_slowly_and_carry_noise() {
        let dir = photo_folder();
        let mut c = config(dir.path(), 3);
        c.scene.anomalies = None;
        let scene = PhotoScene::load(c).unwrap();
        let mut canvas = Canvas::default();
        let (mut f0, mut f1, mut far) = (Frame::empty(), Frame::empty(), Frame::empty());
        scene.render(100, &mut canvas, &mut f0);
        scene.render(101, &mut canvas, &mut f1);
        scene.render(2100, &mut canvas, &mut far);
        let near = mean_abs_diff(&f0, &f1);
        assert!(near > 0.3, "sensor noise changes every frame: {near}");
        assert!(near < 6.0, "neighbouring frames are alike: {near}");
        assert!(mean_abs_diff(&f0, &far) > near, "the scene drifts");
    }

    #[test]
    fn every_kind_appears_and_differs_from_the_normal_frame() {
        let dir = photo_folder();
        let scene = PhotoScene::load(config(dir.path(), 11)).unwrap();
        let mut canvas = Canvas::default();
        let (mut f, mut normal, mut before) = (Frame::empty(), Frame::empty(), Frame::empty());
        let mut seen = vec![];
        let episodes = 2 * AnomalyKind::PHOTOS.len() as u64;
        for i in 0..5 + 10 * episodes {
            let truth = scene.render(i, &mut canvas, &mut f);
            assert_eq!(truth, scene.truth(i));
            scene.render_normal(i, &mut canvas, &mut normal);
            match truth {
                None => {
                    assert_eq!(f, normal, "frame {i}");
                    before = f.clone();
                }
                Some(AnomalyKind::FrozenFrame) => {
                    assert_eq!(f, before, "a frozen frame repeats the last normal one");
                    assert_ne!(f, normal);
                }
                Some(AnomalyKind::SmallObject) => {
                    // a few pixels at this size: their difference is large
                    let most = f.data.iter().zip(&normal.data);
                    let most = most.map(|(&a, &b)| a.abs_diff(b)).max();
                    assert!(most > Some(20), "small object frame {i}: {most:?}");
                }
                Some(kind) => {
                    let d = mean_abs_diff(&f, &normal);
                    assert!(d > 0.5, "{kind} frame {i} differs by only {d}");
                }
            }
            if let Some(k) = truth
                && !seen.contains(&k)
            {
                seen.push(k);
            }
        }
        for kind in AnomalyKind::PHOTOS {
            assert!(seen.contains(&kind), "{kind} never appeared: {seen:?}");
        }
    }

    #[test]
    fn kinds_choose_the_episodes_in_order() {
        let spec: super::super::SourceSpec =
            "photos:p,kinds=small_object+noise_burst,every=50,length=10,first=20"
                .parse()
                .unwrap();
        let super::super::SourceSpec::Photos(c) = &spec else {
            panic!("not photos: {spec:?}")
        };
        assert_eq!(
            c.scene.kinds,
            [AnomalyKind::SmallObject, AnomalyKind::NoiseBurst]
        );
        assert_eq!(
            spec.to_string()
                .parse::<super::super::SourceSpec>()
                .unwrap(),
            spec
        );
        let dir = photo_folder();
        let mut cfg = config(dir.path(), 3);
        cfg.scene.kinds = c.scene.kinds.clone();
        let scene = PhotoScene::load(cfg).unwrap();
        let first = scene.config().scene.anomalies.unwrap().first;
        let every = scene.config().scene.anomalies.unwrap().every;
        let kinds: Vec<_> = (0..4).map(|k| scene.truth(first + k * every)).collect();
        let want = [AnomalyKind::SmallObject, AnomalyKind::NoiseBurst];
        assert_eq!(kinds, [0, 1, 0, 1].map(|k| Some(want[k])));
    }

    #[test]
    fn rendering_reuses_the_buffers() {
        let dir = photo_folder();
        let scene = PhotoScene::load(config(dir.path(), 1)).unwrap();
        let mut canvas = Canvas::default();
        let mut f = Frame::empty();
        scene.render(0, &mut canvas, &mut f);
        let (pf, pc) = (f.data.as_ptr(), canvas.rgb.as_ptr());
        for i in 1..80 {
            scene.render(i, &mut canvas, &mut f);
        }
        assert_eq!((f.data.as_ptr(), canvas.rgb.as_ptr()), (pf, pc));
    }

    #[test]
    fn gray_frames_and_one_photo_work() {
        let dir = photo_folder();
        std::fs::remove_file(dir.path().join("b.png")).unwrap();
        std::fs::remove_file(dir.path().join("c.png")).unwrap();
        let mut c = config(dir.path(), 2);
        c.scene.format = PixelFormat::Gray8;
        let scene = PhotoScene::load(c).unwrap();
        let p = scene.photos();
        assert_eq!((p.background, p.object, p.pasted.clone()), (0, 0, vec![0]));
        let mut f = Frame::empty();
        scene.render(5, &mut Canvas::default(), &mut f);
        assert_eq!((f.format, f.data.len()), (PixelFormat::Gray8, 96 * 72));
    }

    #[test]
    fn the_photos_are_picked_from_the_seed() {
        let files: Vec<PathBuf> = (0..5).map(|i| PathBuf::from(format!("{i}.png"))).collect();
        let mut backgrounds = vec![];
        for seed in 0..40 {
            let c = PhotoChoice::new(files.clone(), seed);
            assert_ne!(c.background, c.object);
            assert_eq!(c.pasted.len(), 3);
            assert!(!c.pasted.contains(&c.background) && !c.pasted.contains(&c.object));
            assert_eq!(c, PhotoChoice::new(files.clone(), seed));
            backgrounds.push(c.background);
        }
        backgrounds.sort();
        backgrounds.dedup();
        assert_eq!(
            backgrounds.len(),
            5,
            "every photo is some seed's background"
        );
    }

    #[test]
    fn a_bad_folder_is_a_clear_error() {
        let empty = tempfile::tempdir().unwrap();
        let missing = empty.path().join("nope");
        for (dir, needle) in [
            (empty.path().to_path_buf(), "holds no images"),
            (missing, "is not a folder"),
        ] {
            let e = format!("{:#}", PhotoScene::load(config(&dir, 1)).unwrap_err());
            assert!(e.contains(needle), "{e}");
            assert!(e.contains("bvae_tools photos"), "{e}");
            let spec = super::super::SourceSpec::Photos(config(&dir, 1));
            let e = format!("{:#}", super::super::open_source(&spec).err().unwrap());
            assert!(e.contains("cannot open source photos:"), "{e}");
            assert!(e.contains(needle), "{e}");
        }
        std::fs::write(empty.path().join("x.png"), b"not a png").unwrap();
        let e = format!(
            "{:#}",
            PhotoScene::load(config(empty.path(), 1)).unwrap_err()
        );
        assert!(
            e.contains("x.png") && e.contains("not a readable PNG"),
            "{e}"
        );
    }

    #[test]
    fn specs_parse_and_print() {
        use super::super::SourceSpec;
        let spec: SourceSpec = "photos:my photos,a/b,seed=4,width=320,height=240,rgb=off,fps=0"
            .parse()
            .unwrap();
        let SourceSpec::Photos(c) = &spec else {
            panic!("not photos: {spec:?}")
        };
        assert_eq!(c.dir, PathBuf::from("my photos,a/b"));
        assert_eq!((c.scene.seed, c.scene.width, c.scene.height), (4, 320, 240));
        assert_eq!(c.scene.format, PixelFormat::Gray8);
        assert!(c.scene.frame_period.is_none() && c.scene.anomalies.is_some());
        let again: SourceSpec = spec.to_string().parse().unwrap();
        assert_eq!(again, spec);
        let SourceSpec::Photos(d) = "photos:p".parse().unwrap() else {
            panic!("not photos")
        };
        assert_eq!(d, PhotosConfig::new(PathBuf::from("p")));
        assert_eq!((d.scene.width, d.scene.height), (640, 480));
        assert_eq!(d.scene.format, PixelFormat::Rgb8);
        for (bad, needle) in [
            ("photos:", "needs a folder"),
            ("photos:p,zoom=2", "unknown photos option \"zoom\""),
            ("photos:p,width=8", "width=8"),
            ("photos:p,every=5,length=5", "length"),
            (
                "photos:p,kinds=novel_shape",
                "not an anomaly of the photos scene",
            ),
            ("photos:p,kinds=person+person", "named twice"),
        ] {
            let e = format!("{:#}", bad.parse::<SourceSpec>().unwrap_err());
            assert!(e.contains(needle), "{bad}: {e}");
            assert!(e.contains("photos:DIR"), "{bad}: {e}");
        }
    }
}
