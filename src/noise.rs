//! The camera's sensor noise, measured on the frame as the camera sent it.
//!
//! A model input of 64×64 cannot see sensor noise: shrinking a 640×480
//! frame averages about a hundred samples into each input value, so a
//! burst of σ = 15% of full scale reaches the model at about 1.5% (on the
//! photos scene no score caught one, README "Real photographs as a
//! camera"). A noisy frame is a camera failure (a failing sensor,
//! interference, gain run wild in the dark), like a frozen one, so it is
//! checked the same way: on the full-resolution frame, against the levels
//! seen in the normal calibration frames.
//!
//! The estimate is Immerkær's (1996, "Fast noise variance estimation",
//! Computer Vision and Image Understanding 64(2)): the 3×3 mask
//! `[1 −2 1; −2 4 −2; 1 −2 1]` cancels every plane and most smooth image
//! content, and leaves Gaussian noise of σ as noise of 6σ. Where the paper
//! averages the absolute response, [`NoiseMeter`] takes its median
//! (σ = median / (6 · 0.6745) for Gaussian noise), so that edges and
//! texture, which cover a minority of a frame, do not count. It reads the
//! green channel of an RGB frame (the largest share of luma, and its own
//! noise), at least [`SAMPLES`] responses spread evenly over the frame
//! (every 4th sample of every 4th row at 640×480), with a fixed histogram
//! and no allocation per frame.

use crate::frame::{FrameRef, PixelFormat};
use crate::mask::Mask;

/// Responses the estimate reads at least, where the frame has them: rows
/// and columns are sampled with the largest common stride that leaves this
/// many (every 4th row and column at 640×480, every pixel at 128×128).
pub const SAMPLES: usize = 16_384;

/// Largest absolute response of the mask to 8-bit samples (16 · 255).
const MAX_RESPONSE: usize = 16 * 255;

/// The median absolute deviation of a unit Gaussian (Φ⁻¹(0.75)).
const MAD_GAUSSIAN: f64 = 0.674_489_75;

/// Measures the sensor noise of frames, reusing one histogram.
#[derive(Debug, Clone)]
pub struct NoiseMeter {
    histogram: Vec<u32>,
    /// Regions left out (the profile's mask: a screen showing static or a
    /// window to the street must not fail the check).
    mask: Option<Mask>,
    /// Per sample of the last frame size, row by row: masked.
    skip: Vec<bool>,
    /// Frame width and height `skip` was drawn for.
    key: Option<(usize, usize)>,
}

impl Default for NoiseMeter {
    fn default() -> Self {
        NoiseMeter::new()
    }
}

impl NoiseMeter {
    /// A meter (allocates its histogram once).
    pub fn new() -> NoiseMeter {
        NoiseMeter {
            histogram: vec![0; MAX_RESPONSE + 1],
            mask: None,
            skip: vec![],
            key: None,
        }
    }

    /// Leaves the regions of `mask` out of the estimate from the next frame
    /// on (`None`: the whole frame counts).
    pub fn set_mask(&mut self, mask: Option<Mask>) {
        self.mask = mask;
        self.key = None;
    }

    /// Draws which samples of a `w`×`h` frame the mask leaves out
    /// (allocates only when the frame size changes).
    fn prepare(&mut self, w: usize, h: usize, stride: usize) {
        if self.key == Some((w, h)) {
            return;
        }
        self.skip.clear();
        if let Some(mask) = &self.mask {
            for y in (1..h - 1).step_by(stride) {
                for x in (1..w - 1).step_by(stride) {
                    let (u, v) = ((x as f64 + 0.5) / w as f64, (y as f64 + 0.5) / h as f64);
                    self.skip.push(mask.masked_at(u, v));
                }
            }
        }
        self.key = Some((w, h));
    }

    /// The noise standard deviation of `frame`, as a fraction of full scale
    /// (0.01 ≈ 2.5 gray levels), outside the mask. 0 for a frame smaller
    /// than 3×3, one whose buffer is too short for its size, or one the
    /// mask covers.
    pub fn measure(&mut self, frame: FrameRef<'_>) -> f32 {
        let (w, h) = (frame.width, frame.height);
        let (bpp, channel) = match frame.format {
            PixelFormat::Gray8 => (1, 0),
            PixelFormat::Rgb8 => (3, 1),
        };
        if w < 3 || h < 3 || frame.data.len() < w * h * bpp {
            return 0.0;
        }
        self.histogram.fill(0);
        let stride = stride(w - 2, h - 2);
        self.prepare(w, h, stride);
        let mut skip = self.skip.iter();
        let row = w * bpp;
        let mut count = 0u32;
        for y in (1..h - 1).step_by(stride) {
            let rows = &frame.data[(y - 1) * row..(y + 2) * row];
            let (up, rest) = rows.split_at(row);
            let (mid, down) = rest.split_at(row);
            for x in (1..w - 1).step_by(stride) {
                if skip.next() == Some(&true) {
                    continue;
                }
                let (l, c, r) = (
                    (x - 1) * bpp + channel,
                    x * bpp + channel,
                    (x + 1) * bpp + channel,
                );
                let v = |line: &[u8], i: usize| line[i] as i32;
                let corners = v(up, l) + v(up, r) + v(down, l) + v(down, r);
                let edges = v(up, c) + v(mid, l) + v(mid, r) + v(down, c);
                let response = (corners - 2 * edges + 4 * v(mid, c)).unsigned_abs() as usize;
                self.histogram[response.min(MAX_RESPONSE)] += 1;
                count += 1;
            }
        }
        let median = interpolated_median(&self.histogram, count);
        (median / (6.0 * MAD_GAUSSIAN) / 255.0) as f32
    }
}

/// The largest stride over `w`×`h` responses that leaves at least
/// [`SAMPLES`] of them (1 when there are fewer).
fn stride(w: usize, h: usize) -> usize {
    let mut s = 1;
    while w.div_ceil(s + 1) * h.div_ceil(s + 1) >= SAMPLES {
        s += 1;
    }
    s
}

/// The median of `count` integer values given by their histogram, with the
/// values of a bin taken as spread evenly over `[v − 0.5, v + 0.5)` (so that
/// the estimate moves smoothly rather than by whole gray levels). A median
/// in the bin of 0 is 0: a frame without noise measures none.
fn interpolated_median(histogram: &[u32], count: u32) -> f64 {
    if count == 0 {
        return 0.0;
    }
    let half = count as f64 / 2.0;
    let mut below = 0.0;
    for (v, &n) in histogram.iter().enumerate() {
        let n = n as f64;
        if n > 0.0 && below + n >= half {
            if v == 0 {
                return 0.0;
            }
            return v as f64 - 0.5 + (half - below) / n;
        }
        below += n;
    }
    (histogram.len() - 1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;

    /// A frame of `f(x, y)` plus Gaussian noise of `sigma` gray levels,
    /// rounded and clamped to 8 bits; RGB frames carry the same content in
    /// every channel, each with its own noise.
    fn frame(
        w: usize,
        h: usize,
        format: PixelFormat,
        sigma: f64,
        f: impl Fn(usize, usize) -> f64,
    ) -> Vec<u8> {
        let mut rng = SplitMix64::new(7);
        let bpp = format.bytes_per_pixel();
        let mut data = vec![0u8; w * h * bpp];
        for y in 0..h {
            for x in 0..w {
                for c in 0..bpp {
                    // Box–Muller: a true Gaussian, whose MAD the estimate assumes
                    let (u1, u2) = (1.0 - rng.unit_f32() as f64, rng.unit_f32() as f64);
                    let g = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
                    let v = f(x, y) + sigma * g;
                    data[(y * w + x) * bpp + c] = v.round().clamp(0.0, 255.0) as u8;
                }
            }
        }
        data
    }

    fn measure(w: usize, h: usize, format: PixelFormat, data: &[u8]) -> f32 {
        let f = FrameRef::new(w, h, format, data).unwrap();
        NoiseMeter::new().measure(f)
    }

    #[test]
    fn recovers_the_noise_of_a_flat_frame() {
        for sigma in [2.0, 5.0, 12.0, 38.0] {
            let d = frame(320, 240, PixelFormat::Gray8, sigma, |_, _| 128.0);
            let got = measure(320, 240, PixelFormat::Gray8, &d) as f64 * 255.0;
            assert!((got - sigma).abs() < 0.1 * sigma, "σ {sigma}: {got}");
        }
        let d = frame(64, 48, PixelFormat::Gray8, 0.0, |_, _| 90.0);
        assert_eq!(measure(64, 48, PixelFormat::Gray8, &d), 0.0);
    }

    #[test]
    fn smooth_content_and_sparse_edges_do_not_count() {
        // a ramp, a parabola and hard-edged stripes every 16 columns
        let scene = |x: usize, y: usize| {
            let stripe = if (x / 16).is_multiple_of(2) {
                60.0
            } else {
                0.0
            };
            40.0 + 0.3 * x as f64 + 0.002 * (y as f64 - 120.0).powi(2) + stripe
        };
        let d = frame(320, 240, PixelFormat::Rgb8, 3.0, scene);
        let got = measure(320, 240, PixelFormat::Rgb8, &d) as f64 * 255.0;
        assert!((got - 3.0).abs() < 0.45, "{got}");
        // a noise burst stands far above the normal level
        let burst = frame(320, 240, PixelFormat::Rgb8, 38.0, scene);
        let loud = measure(320, 240, PixelFormat::Rgb8, &burst) as f64 * 255.0;
        assert!(loud > 8.0 * got, "{loud} against {got}");
    }

    #[test]
    fn masked_regions_do_not_count() {
        // static on the left three quarters (a screen), sensor noise in the rest
        let (w, h) = (320, 240);
        let calm = frame(w, h, PixelFormat::Gray8, 2.0, |_, _| 100.0);
        let loud = frame(w, h, PixelFormat::Gray8, 40.0, |_, _| 100.0);
        let mut d = calm.clone();
        for y in 0..h {
            d[y * w..y * w + 3 * w / 4].copy_from_slice(&loud[y * w..y * w + 3 * w / 4]);
        }
        let f = FrameRef::new(w, h, PixelFormat::Gray8, &d).unwrap();
        let mut meter = NoiseMeter::new();
        let unmasked = meter.measure(f) as f64 * 255.0;
        assert!(unmasked > 10.0, "{unmasked}");
        let left = vec![vec![[0.0, 0.0], [0.77, 0.0], [0.77, 1.0], [0.0, 1.0]]];
        meter.set_mask(Some(Mask::from_polygons(&left).unwrap()));
        let masked = meter.measure(f) as f64 * 255.0;
        assert!((masked - 2.0).abs() < 0.4, "{masked}");
        // a mask over everything leaves nothing to measure
        let all = vec![vec![[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]];
        meter.set_mask(Some(Mask::from_polygons(&all).unwrap()));
        assert_eq!(meter.measure(f), 0.0);
    }

    #[test]
    fn tiny_or_short_frames_measure_zero() {
        assert_eq!(measure(2, 2, PixelFormat::Gray8, &[0, 255, 255, 0]), 0.0);
        let f = FrameRef {
            width: 10,
            height: 10,
            format: PixelFormat::Gray8,
            data: &[0u8; 50],
        };
        assert_eq!(NoiseMeter::new().measure(f), 0.0);
    }

    #[test]
    fn the_stride_leaves_enough_samples() {
        assert_eq!(stride(638, 478), 4);
        assert_eq!(stride(126, 126), 1);
        for (w, h) in [(638, 478), (1918, 1078), (318, 238), (3838, 2158)] {
            let s = stride(w, h);
            assert!(w.div_ceil(s) * h.div_ceil(s) >= SAMPLES, "{w}x{h}: {s}");
            assert!(
                w.div_ceil(s + 1) * h.div_ceil(s + 1) < SAMPLES,
                "{w}x{h}: {s}"
            );
        }
    }

    #[test]
    fn the_median_is_interpolated_within_its_bin() {
        // values 0, 1, 1, 1: the median is half-way into bin 1's [0.5, 1.5)
        assert!((interpolated_median(&[1, 3, 0], 4) - (0.5 + 1.0 / 3.0)).abs() < 1e-12);
        // mostly zeros: none
        assert_eq!(interpolated_median(&[3, 1], 4), 0.0);
        // all in bin 3: spread over [2.5, 3.5)
        assert!((interpolated_median(&[0, 0, 0, 4], 4) - 3.0).abs() < 1e-12);
        assert_eq!(interpolated_median(&[0, 0], 0), 0.0);
    }
}
