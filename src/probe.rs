//! Synthetic anomalies ("probes") made on the camera frame, before it is
//! fitted and shrunk to the model's input, as a real anomaly would be.
//!
//! A probe made after preprocessing is not what a camera sends: a noise
//! burst of σ = 0.15 over a 640×480 frame is smoothed to about σ = 0.04
//! by the shrink to 64×64, so a probe added at 64×64 overstates what the
//! detector catches. Calibration applies these to normal frames and
//! reports, per kind and per score, the fraction flagged at the calibrated
//! threshold. Sizes are fractions of the frame's sides, so the same probe
//! covers the same part of the scene at any camera resolution.

use crate::frame::{Frame, FrameRef};
use crate::rng::SplitMix64;

/// The kinds of probe, applied in turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ProbeKind {
    /// A patch of one flat colour, a quarter of each side (something in
    /// front of the lens, a sticker).
    Occlusion,
    /// Sensor noise of σ = 0.15 of full scale over the whole frame.
    Noise,
    /// A region of half of each side with its values inverted.
    Inversion,
    /// A patch of another normal frame pasted at another place (CutPaste,
    /// Li et al., CVPR 2021): normal texture where it does not belong.
    CutPaste,
    /// A region a quarter of each side blurred (defocus, a smear).
    Blur,
    /// A region a quarter of each side whose colour (RGB: channels
    /// rotated) or brightness (gray: halved or lifted) changed.
    Colour,
}

impl ProbeKind {
    /// Every kind, in the order calibration cycles through them.
    pub const ALL: [ProbeKind; 6] = [
        ProbeKind::Occlusion,
        ProbeKind::Noise,
        ProbeKind::Inversion,
        ProbeKind::CutPaste,
        ProbeKind::Blur,
        ProbeKind::Colour,
    ];

    /// The snake_case name used in profiles and reports.
    pub fn name(self) -> &'static str {
        match self {
            ProbeKind::Occlusion => "occlusion",
            ProbeKind::Noise => "noise",
            ProbeKind::Inversion => "inversion",
            ProbeKind::CutPaste => "cut_paste",
            ProbeKind::Blur => "blur",
            ProbeKind::Colour => "colour",
        }
    }
}

impl std::fmt::Display for ProbeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Standard deviation of the [`ProbeKind::Noise`] probe, in 8-bit levels
/// (0.15 of full scale).
pub const NOISE_SIGMA: f32 = 0.15 * 255.0;

/// A rectangle of a frame: x, y, width, height in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Rect {
    x: usize,
    y: usize,
    w: usize,
    h: usize,
}

/// A rectangle of `1/den` of each side of a `w`×`h` frame at a random place.
fn region(w: usize, h: usize, den: usize, rng: &mut SplitMix64) -> Rect {
    let (rw, rh) = ((w / den).max(1), (h / den).max(1));
    Rect {
        x: rng.below(w - rw + 1),
        y: rng.below(h - rh + 1),
        w: rw,
        h: rh,
    }
}

/// A sample of a standard normal (Irwin–Hall: the sum of four uniforms,
/// centred and scaled to unit variance).
fn normal(rng: &mut SplitMix64) -> f32 {
    let s: f32 = (0..4).map(|_| rng.unit_f32()).sum();
    (s - 2.0) * 3.0f32.sqrt()
}

/// Applies a probe of `kind` inside the region (`x`, `y`, `w`, `h`) of
/// `frame` only (a tile's part of the frame), as [`apply`] does to a whole
/// frame; `donor`'s same region is the source of a CutPaste patch.
pub fn apply_in(
    frame: &mut Frame,
    donor: &Frame,
    kind: ProbeKind,
    rng: &mut SplitMix64,
    (x, y, w, h): (usize, usize, usize, usize),
) {
    let mut part = frame.crop(x, y, w, h);
    let donor = donor.crop(x, y, w, h);
    apply(&mut part, donor.as_ref(), kind, rng);
    frame.paste(&part, x, y);
}

/// Applies a probe of `kind` to `frame` in place. `donor` is another normal
/// frame, the source of [`ProbeKind::CutPaste`]'s patch; when it has
/// another size or pixel format the patch comes from `frame` itself, from
/// another place.
pub fn apply(frame: &mut Frame, donor: FrameRef<'_>, kind: ProbeKind, rng: &mut SplitMix64) {
    let (w, h) = (frame.width, frame.height);
    let bpp = frame.format.bytes_per_pixel();
    if w == 0 || h == 0 || frame.data.len() != w * h * bpp {
        return;
    }
    let row = w * bpp;
    match kind {
        ProbeKind::Occlusion => {
            let r = region(w, h, 4, rng);
            let colour: Vec<u8> = (0..bpp).map(|_| 128 + rng.below(128) as u8).collect();
            for y in r.y..r.y + r.h {
                for px in frame.data[y * row + r.x * bpp..y * row + (r.x + r.w) * bpp]
                    .chunks_exact_mut(bpp)
                {
                    px.copy_from_slice(&colour);
                }
            }
        }
        ProbeKind::Noise => {
            for v in frame.data.iter_mut() {
                *v = (*v as f32 + NOISE_SIGMA * normal(rng))
                    .round()
                    .clamp(0.0, 255.0) as u8;
            }
        }
        ProbeKind::Inversion => {
            let r = region(w, h, 2, rng);
            for y in r.y..r.y + r.h {
                for v in &mut frame.data[y * row + r.x * bpp..y * row + (r.x + r.w) * bpp] {
                    *v = 255 - *v;
                }
            }
        }
        ProbeKind::CutPaste => {
            let to = region(w, h, 4, rng);
            let mut from = region(w, h, 4, rng);
            let same_shape = donor.width == w && donor.height == h && donor.format == frame.format;
            if !same_shape {
                // A patch of the frame itself, moved by at least half its size.
                for _ in 0..8 {
                    if from.x.abs_diff(to.x) >= to.w / 2 || from.y.abs_diff(to.y) >= to.h / 2 {
                        break;
                    }
                    from = region(w, h, 4, rng);
                }
            }
            let src: Vec<u8> = (from.y..from.y + from.h)
                .flat_map(|y| {
                    let data = if same_shape {
                        donor.data
                    } else {
                        &frame.data[..]
                    };
                    data[y * row + from.x * bpp..y * row + (from.x + from.w) * bpp].to_vec()
                })
                .collect();
            let prow = to.w * bpp;
            for (i, y) in (to.y..to.y + to.h).enumerate() {
                frame.data[y * row + to.x * bpp..y * row + (to.x + to.w) * bpp]
                    .copy_from_slice(&src[i * prow..(i + 1) * prow]);
            }
        }
        ProbeKind::Blur => {
            let r = region(w, h, 4, rng);
            let radius = (w.min(h) / 60).max(2);
            blur_region(frame, r, radius);
        }
        ProbeKind::Colour => {
            let r = region(w, h, 4, rng);
            let lift = rng.below(2) == 0;
            for y in r.y..r.y + r.h {
                for px in frame.data[y * row + r.x * bpp..y * row + (r.x + r.w) * bpp]
                    .chunks_exact_mut(bpp)
                {
                    if bpp == 3 {
                        px.rotate_left(1);
                    } else {
                        px[0] = if lift { 128 + px[0] / 2 } else { px[0] / 2 };
                    }
                }
            }
        }
    }
}

/// Box-blurs `r` of `frame` with a window of `2·radius + 1` pixels, rows
/// then columns; pixels outside `r` are read but not changed.
fn blur_region(frame: &mut Frame, r: Rect, radius: usize) {
    let w = frame.width;
    let bpp = frame.format.bytes_per_pixel();
    let row = w * bpp;
    // Rows: a band of r.h rows, blurred horizontally over the region's
    // columns (reading up to `radius` pixels beyond it).
    let mut band = vec![0f32; r.w * r.h * bpp];
    for (j, y) in (r.y..r.y + r.h).enumerate() {
        for i in 0..r.w {
            let x = r.x + i;
            let (lo, hi) = (x.saturating_sub(radius), (x + radius).min(w - 1));
            for c in 0..bpp {
                let sum: u32 = (lo..=hi)
                    .map(|xx| frame.data[y * row + xx * bpp + c] as u32)
                    .sum();
                band[(j * r.w + i) * bpp + c] = sum as f32 / (hi - lo + 1) as f32;
            }
        }
    }
    // Columns, within the band (the band's edges are not blurred further
    // beyond the region, which keeps the work bounded).
    for j in 0..r.h {
        let (lo, hi) = (j.saturating_sub(radius), (j + radius).min(r.h - 1));
        for i in 0..r.w {
            for c in 0..bpp {
                let sum: f32 = (lo..=hi).map(|jj| band[(jj * r.w + i) * bpp + c]).sum();
                let v = sum / (hi - lo + 1) as f32;
                frame.data[(r.y + j) * row + (r.x + i) * bpp + c] =
                    v.round().clamp(0.0, 255.0) as u8;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::PixelFormat;

    /// A textured frame: a diagonal gradient with a checker pattern.
    fn textured(w: usize, h: usize, format: PixelFormat) -> Frame {
        let bpp = format.bytes_per_pixel();
        let mut data = vec![0u8; w * h * bpp];
        for y in 0..h {
            for x in 0..w {
                for c in 0..bpp {
                    let checker = if (x / 8 + y / 8) % 2 == 0 { 60 } else { 0 };
                    data[(y * w + x) * bpp + c] = ((x + 2 * y + 40 * c) % 190 + checker) as u8;
                }
            }
        }
        Frame {
            width: w,
            height: h,
            format,
            data,
        }
    }

    #[test]
    fn every_probe_changes_the_frame_in_its_region_only() {
        for format in [PixelFormat::Gray8, PixelFormat::Rgb8] {
            for (size, seed) in [((64, 48), 1), ((640, 480), 2), ((7, 5), 3)] {
                let normal = textured(size.0, size.1, format);
                let donor = textured(size.1, size.0, format);
                for kind in ProbeKind::ALL {
                    let mut f = normal.clone();
                    let mut rng = SplitMix64::new(seed);
                    apply(&mut f, donor.as_ref(), kind, &mut rng);
                    assert_eq!(f.data.len(), normal.data.len());
                    let changed = f
                        .data
                        .iter()
                        .zip(&normal.data)
                        .filter(|(a, b)| a != b)
                        .count();
                    // A blur of a one-pixel region of a gradient may leave it as it was.
                    let tiny = size.0 < 64;
                    assert!(
                        changed > 0 || (tiny && kind == ProbeKind::Blur),
                        "{kind} left a {size:?} {format:?} frame unchanged"
                    );
                    let frac = changed as f64 / f.data.len() as f64;
                    let most = match kind {
                        ProbeKind::Noise => 1.0,
                        ProbeKind::Inversion => 0.55,
                        _ => 0.2,
                    };
                    // Tiny frames round regions up to whole pixels.
                    if !tiny {
                        assert!(frac <= most, "{kind} changed {frac} of the frame");
                    }
                }
            }
        }
    }

    #[test]
    fn the_noise_probe_has_the_camera_sigma() {
        let mut f = Frame {
            width: 200,
            height: 100,
            format: PixelFormat::Gray8,
            data: vec![128; 20_000],
        };
        let donor = f.clone();
        apply(
            &mut f,
            donor.as_ref(),
            ProbeKind::Noise,
            &mut SplitMix64::new(9),
        );
        let n = f.data.len() as f64;
        let mean = f.data.iter().map(|&v| v as f64).sum::<f64>() / n;
        let var = f
            .data
            .iter()
            .map(|&v| (v as f64 - mean).powi(2))
            .sum::<f64>()
            / n;
        assert!((mean - 128.0).abs() < 1.0, "mean {mean}");
        let sigma = var.sqrt();
        assert!((sigma - NOISE_SIGMA as f64).abs() < 1.5, "sigma {sigma}");
    }

    #[test]
    fn cut_paste_copies_the_donors_pixels() {
        let normal = textured(64, 64, PixelFormat::Gray8);
        let donor = Frame {
            data: vec![7; 64 * 64],
            ..normal.clone()
        };
        let mut f = normal.clone();
        apply(
            &mut f,
            donor.as_ref(),
            ProbeKind::CutPaste,
            &mut SplitMix64::new(4),
        );
        let pasted = f.data.iter().filter(|&&v| v == 7).count();
        assert_eq!(
            pasted,
            16 * 16,
            "a quarter of each side comes from the donor"
        );
    }

    #[test]
    fn blur_smooths_the_region() {
        let normal = textured(120, 120, PixelFormat::Gray8);
        let mut f = normal.clone();
        let r = Rect {
            x: 30,
            y: 30,
            w: 30,
            h: 30,
        };
        blur_region(&mut f, r, 4);
        let tv = |fr: &Frame| -> u64 {
            (r.y..r.y + r.h)
                .flat_map(|y| (r.x..r.x + r.w - 1).map(move |x| (y, x)))
                .map(|(y, x)| fr.data[y * 120 + x].abs_diff(fr.data[y * 120 + x + 1]) as u64)
                .sum()
        };
        assert!(tv(&f) * 2 < tv(&normal), "{} vs {}", tv(&f), tv(&normal));
        assert_eq!(
            f.data[0..120],
            normal.data[0..120],
            "outside rows untouched"
        );
    }
}
