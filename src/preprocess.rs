//! Frame → model input: center crop (or letterbox), SIMD resize, channel
//! conversion and scaling to [0, 1], into a caller-owned buffer.
//!
//! Matches the training tool's `ImageOps.fit(..., BILINEAR)`: the largest
//! centred region with the model's aspect ratio is resampled with a bilinear
//! convolution filter (antialiased when shrinking). To keep the per-frame
//! cost low an RGB frame is resized first and turned to gray afterwards, at
//! model size, with the ITU-R 601-2 luma weights Pillow uses.

use anyhow::{Context, Result, bail};
use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use serde::{Deserialize, Serialize};

use crate::frame::{FrameRef, PixelFormat};
use crate::meta::ModelSpec;

/// How a frame whose aspect ratio differs from the model's is fitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Fit {
    /// Keep the centred region with the model's aspect ratio (as training does).
    #[default]
    Crop,
    /// Shrink the whole frame to fit and pad the borders with black.
    Letterbox,
}

/// Where a frame lands in the model input under a [`Fit`]: the region of
/// the frame that is resampled and the rectangle of the model input it
/// fills (the rest is black padding). [`Preprocessor`] uses it, and so do
/// overlays that map the model's pixel anomaly map back onto the frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Geometry {
    /// Resampled region of the frame: x, y, width, height in frame pixels
    /// (fractional; pixel edges at integers).
    pub src: (f64, f64, f64, f64),
    /// Filled rectangle of the model input: x, y, width, height in model pixels.
    pub dst: (usize, usize, usize, usize),
}

impl Geometry {
    /// The geometry of a `frame_w`×`frame_h` frame fitted to a
    /// `model_w`×`model_h` input. Crop keeps the largest centred region with
    /// the model's aspect ratio; letterbox shrinks the whole frame into a
    /// centred rectangle of rounded size.
    pub fn new(
        fit: Fit,
        frame_w: usize,
        frame_h: usize,
        model_w: usize,
        model_h: usize,
    ) -> Geometry {
        let (fw, fh) = (frame_w.max(1) as f64, frame_h.max(1) as f64);
        let (w, h) = (model_w.max(1), model_h.max(1));
        match fit {
            Fit::Crop => {
                let target = w as f64 / h as f64;
                let (cw, ch) = if fw / fh > target {
                    (fh * target, fh)
                } else {
                    (fw, fw / target)
                };
                Geometry {
                    src: ((fw - cw) / 2.0, (fh - ch) / 2.0, cw, ch),
                    dst: (0, 0, w, h),
                }
            }
            Fit::Letterbox => {
                let scale = (w as f64 / fw).min(h as f64 / fh);
                let dw = ((fw * scale).round() as usize).clamp(1, w);
                let dh = ((fh * scale).round() as usize).clamp(1, h);
                Geometry {
                    src: (0.0, 0.0, fw, fh),
                    dst: ((w - dw) / 2, (h - dh) / 2, dw, dh),
                }
            }
        }
    }

    /// Model-input coordinates of the frame point (`x`, `y`); both in
    /// continuous pixel units (the centre of pixel *i* is at *i* + 0.5).
    pub fn frame_to_model(&self, x: f64, y: f64) -> (f64, f64) {
        let (sx, sy, sw, sh) = self.src;
        let (dx, dy, dw, dh) = self.dst;
        (
            dx as f64 + (x - sx) * dw as f64 / sw,
            dy as f64 + (y - sy) * dh as f64 / sh,
        )
    }

    /// Whether the frame point (`x`, `y`) is inside the resampled region
    /// (what the model sees).
    pub fn sees(&self, x: f64, y: f64) -> bool {
        let (sx, sy, sw, sh) = self.src;
        x >= sx && x <= sx + sw && y >= sy && y <= sy + sh
    }
}

/// Converts frames of any size to one model's input layout, reusing its
/// buffers from frame to frame.
pub struct Preprocessor {
    channels: usize,
    height: usize,
    width: usize,
    fit: Fit,
    illumination: Option<f32>,
    resizer: Resizer,
    /// Resized pixels, in the frame's own pixel format.
    resized: Option<Image<'static>>,
}

impl std::fmt::Debug for Preprocessor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Preprocessor")
            .field("channels", &self.channels)
            .field("height", &self.height)
            .field("width", &self.width)
            .field("fit", &self.fit)
            .finish()
    }
}

/// Pillow's fixed-point luma: L = (19595 R + 38470 G + 7471 B + 2^15) >> 16.
#[inline]
fn luma(r: u8, g: u8, b: u8) -> u8 {
    ((19595 * r as u32 + 38470 * g as u32 + 7471 * b as u32 + 0x8000) >> 16) as u8
}

impl Preprocessor {
    /// A preprocessor for `spec`'s input shape.
    pub fn new(spec: &ModelSpec, fit: Fit) -> Preprocessor {
        Preprocessor {
            channels: spec.channels,
            height: spec.height,
            width: spec.width,
            fit,
            illumination: spec.illumination,
            resizer: Resizer::new(),
            resized: None,
        }
    }

    /// Values per processed image (C·H·W).
    pub fn output_len(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// The fit mode.
    pub fn fit(&self) -> Fit {
        self.fit
    }

    /// Writes `frame` as a `[C, H, W]` image with values in [0, 1] to `out`.
    pub fn process(&mut self, frame: FrameRef<'_>, out: &mut [f32]) -> Result<()> {
        let (c, h, w) = (self.channels, self.height, self.width);
        if out.len() != c * h * w {
            bail!(
                "output buffer holds {} values, the model needs {}",
                out.len(),
                c * h * w
            );
        }
        let pixel_type = match frame.format {
            PixelFormat::Gray8 => PixelType::U8,
            PixelFormat::Rgb8 => PixelType::U8x3,
        };
        let g = Geometry::new(self.fit, frame.width, frame.height, w, h);
        let (ox, oy, dw, dh) = g.dst;
        let crop = g.src;
        let src = ImageRef::new(
            frame.width as u32,
            frame.height as u32,
            frame.data,
            pixel_type,
        )
        .context("frame buffer does not match its size")?;
        let needs_new = match &self.resized {
            Some(img) => {
                img.width() as usize != dw
                    || img.height() as usize != dh
                    || img.pixel_type() != pixel_type
            }
            None => true,
        };
        if needs_new {
            self.resized = Some(Image::new(dw as u32, dh as u32, pixel_type));
        }
        let Some(dst) = self.resized.as_mut() else {
            bail!("resize buffer missing");
        };
        let options = ResizeOptions::new()
            .resize_alg(ResizeAlg::Convolution(FilterType::Bilinear))
            .crop(crop.0, crop.1, crop.2, crop.3);
        self.resizer
            .resize(&src, dst, &options)
            .context("resizing the frame")?;

        if dw != w || dh != h {
            out.fill(0.0);
        }
        let px = dst.buffer();
        let plane = h * w;
        const SCALE: f32 = 1.0 / 255.0;
        for y in 0..dh {
            let row = &px[y * dw * pixel_type.size()..(y + 1) * dw * pixel_type.size()];
            let base = (y + oy) * w + ox;
            match (frame.format, c) {
                (PixelFormat::Gray8, 1) => {
                    for (o, &v) in out[base..base + dw].iter_mut().zip(row) {
                        *o = v as f32 * SCALE;
                    }
                }
                (PixelFormat::Gray8, _) => {
                    for (x, &v) in row.iter().enumerate() {
                        let v = v as f32 * SCALE;
                        for ch in 0..c {
                            out[ch * plane + base + x] = v;
                        }
                    }
                }
                (PixelFormat::Rgb8, 1) => {
                    for (o, p) in out[base..base + dw].iter_mut().zip(row.chunks_exact(3)) {
                        *o = luma(p[0], p[1], p[2]) as f32 * SCALE;
                    }
                }
                (PixelFormat::Rgb8, _) => {
                    for (x, p) in row.chunks_exact(3).enumerate() {
                        for ch in 0..c.min(3) {
                            out[ch * plane + base + x] = p[ch] as f32 * SCALE;
                        }
                    }
                }
            }
        }
        if let Some(target) = self.illumination {
            normalise_gain(out, target);
        }
        Ok(())
    }
}

/// Smallest image mean that gain normalisation divides by: a black frame
/// is not brightened without bound.
pub const MIN_GAIN_MEAN: f32 = 1e-3;
/// Largest factor gain normalisation scales an image by, up or down.
pub const MAX_GAIN: f32 = 8.0;

/// Scales `values` (one image, in [0, 1]) so that their mean becomes
/// `target`, by a factor in [1/[`MAX_GAIN`], [`MAX_GAIN`]], clipping at 1.
/// This is the illumination normalisation of models trained with
/// `--illumination gain` (the training tool applies the same formula): a
/// global change of brightness (lights dimmed, clouds) leaves the input
/// nearly as it was, so it is not scored as an anomaly. Returns the factor.
pub fn normalise_gain(values: &mut [f32], target: f32) -> f32 {
    if values.is_empty() {
        return 1.0;
    }
    let mean = values.iter().map(|&v| v as f64).sum::<f64>() / values.len() as f64;
    let gain = (target / (mean as f32).max(MIN_GAIN_MEAN)).clamp(1.0 / MAX_GAIN, MAX_GAIN);
    for v in values.iter_mut() {
        *v = (*v * gain).min(1.0);
    }
    gain
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::{Likelihood, Objective};

    fn spec(c: usize, h: usize, w: usize) -> ModelSpec {
        ModelSpec {
            channels: c,
            height: h,
            width: w,
            latent_dim: 2,
            likelihood: Likelihood::Bernoulli,
            objective: Objective::Beta,
            beta: 1.0,
            latent_kl: None,
            latent_names: None,
            max_batch: None,
            illumination: None,
        }
    }

    #[test]
    fn same_size_gray_is_a_plain_scale() {
        let data: Vec<u8> = (0..16).map(|i| (i * 17) as u8).collect();
        let frame = FrameRef::new(4, 4, PixelFormat::Gray8, &data).unwrap();
        let mut p = Preprocessor::new(&spec(1, 4, 4), Fit::Crop);
        let mut out = vec![0.0; 16];
        p.process(frame, &mut out).unwrap();
        for (o, d) in out.iter().zip(&data) {
            assert!((o - *d as f32 / 255.0).abs() < 1e-6);
        }
    }

    #[test]
    fn crop_keeps_the_centre_and_rgb_becomes_luma() {
        // 6×2 RGB frame: two red columns, two white columns (centre), two blue.
        let mut data = vec![];
        for _ in 0..2 {
            for x in 0..6 {
                let px = match x {
                    0 | 1 => [255, 0, 0],
                    2 | 3 => [255, 255, 255],
                    _ => [0, 0, 255],
                };
                data.extend_from_slice(&px);
            }
        }
        let frame = FrameRef::new(6, 2, PixelFormat::Rgb8, &data).unwrap();
        let mut p = Preprocessor::new(&spec(1, 2, 2), Fit::Crop);
        let mut out = vec![0.0; 4];
        p.process(frame, &mut out).unwrap();
        assert!(out.iter().all(|&v| (v - 1.0).abs() < 1e-6), "{out:?}");

        let mut p = Preprocessor::new(&spec(3, 2, 2), Fit::Crop);
        let mut out = vec![0.0; 12];
        p.process(frame, &mut out).unwrap();
        assert!(out.iter().all(|&v| (v - 1.0).abs() < 1e-6), "{out:?}");
    }

    #[test]
    fn letterbox_pads_with_black() {
        let data = vec![255u8; 8 * 4];
        let frame = FrameRef::new(8, 4, PixelFormat::Gray8, &data).unwrap();
        let mut p = Preprocessor::new(&spec(1, 4, 4), Fit::Letterbox);
        let mut out = vec![0.5; 16];
        p.process(frame, &mut out).unwrap();
        // 8×4 → 4×2 centred in 4×4: rows 1 and 2 white, rows 0 and 3 black.
        let rows: Vec<f32> = out.chunks(4).map(|r| r.iter().sum::<f32>() / 4.0).collect();
        assert_eq!(rows, vec![0.0, 1.0, 1.0, 0.0]);
    }

    #[test]
    fn geometry_maps_frame_points_to_model_points() {
        // 320×240 into 64×64, cropped: the centred 240×240 square.
        let g = Geometry::new(Fit::Crop, 320, 240, 64, 64);
        assert_eq!(g.src, (40.0, 0.0, 240.0, 240.0));
        assert_eq!(g.frame_to_model(40.0, 0.0), (0.0, 0.0));
        assert_eq!(g.frame_to_model(280.0, 240.0), (64.0, 64.0));
        assert!(g.sees(160.0, 120.0) && !g.sees(20.0, 120.0));
        // Letterboxed: 64×48 rows 8..56.
        let g = Geometry::new(Fit::Letterbox, 320, 240, 64, 64);
        assert_eq!(g.dst, (0, 8, 64, 48));
        assert_eq!(g.frame_to_model(160.0, 120.0), (32.0, 32.0));
        assert_eq!(g.frame_to_model(0.0, 0.0), (0.0, 8.0));
        assert!(g.sees(0.0, 0.0) && g.sees(320.0, 240.0));
    }

    #[test]
    fn gray_frame_fills_every_rgb_channel() {
        let data = vec![51u8; 4];
        let frame = FrameRef::new(2, 2, PixelFormat::Gray8, &data).unwrap();
        let mut p = Preprocessor::new(&spec(3, 2, 2), Fit::Crop);
        let mut out = vec![0.0; 12];
        p.process(frame, &mut out).unwrap();
        assert!(out.iter().all(|&v| (v - 0.2).abs() < 1e-6));
    }

    #[test]
    fn wrong_buffer_size_is_an_error() {
        let data = vec![0u8; 5];
        assert!(FrameRef::new(2, 2, PixelFormat::Gray8, &data).is_err());
        let data = vec![0u8; 4];
        let frame = FrameRef::new(2, 2, PixelFormat::Gray8, &data).unwrap();
        let mut p = Preprocessor::new(&spec(1, 2, 2), Fit::Crop);
        assert!(p.process(frame, &mut [0.0; 3]).is_err());
    }

    #[test]
    fn gain_normalisation_removes_a_global_brightness_change() {
        // a textured RGB frame, and the same scene with the light at 60%
        let (w, h) = (64, 48);
        let bright: Vec<u8> = (0..w * h * 3).map(|i| (40 + (i * 7) % 150) as u8).collect();
        let dim: Vec<u8> = bright
            .iter()
            .map(|&v| (v as f32 * 0.6).round() as u8)
            .collect();
        let mut spec = spec(3, 16, 16);
        let mut outs = vec![];
        for illumination in [None, Some(0.45)] {
            spec.illumination = illumination;
            let mut p = Preprocessor::new(&spec, Fit::Crop);
            let mut a = vec![0.0; 3 * 16 * 16];
            let mut b = a.clone();
            p.process(
                FrameRef::new(w, h, PixelFormat::Rgb8, &bright).unwrap(),
                &mut a,
            )
            .unwrap();
            p.process(
                FrameRef::new(w, h, PixelFormat::Rgb8, &dim).unwrap(),
                &mut b,
            )
            .unwrap();
            let diff = a
                .iter()
                .zip(&b)
                .map(|(x, y)| (x - y).abs())
                .fold(0.0, f32::max);
            outs.push(diff);
            if illumination.is_some() {
                let mean = a.iter().sum::<f32>() / a.len() as f32;
                assert!((mean - 0.45).abs() < 1e-3, "mean {mean}");
            }
        }
        assert!(
            outs[0] > 0.1,
            "without it the dim frame differs: {}",
            outs[0]
        );
        assert!(
            outs[1] < 0.01,
            "with it the two are nearly equal: {}",
            outs[1]
        );
        // the factor is bounded, and a black image stays black
        let mut black = vec![0.0f32; 10];
        assert_eq!(normalise_gain(&mut black, 0.5), MAX_GAIN);
        assert!(black.iter().all(|&v| v == 0.0));
        let mut v = vec![0.9f32, 0.1];
        let g = normalise_gain(&mut v, 0.25);
        assert!((g - 0.5).abs() < 1e-6 && (v[0] - 0.45).abs() < 1e-6);
        let mut v = vec![0.1f32, 0.9];
        normalise_gain(&mut v, 1.0);
        assert_eq!(v[1], 1.0, "clipped at 1");
    }
}
