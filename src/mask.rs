//! Masks: regions of the camera's view left out of every score and
//! heatmap (a clock, a window to the street, a busy road), as Frigate's
//! motion masks are.
//!
//! A mask is given as a PNG (any size, stretched over the frame; dark
//! pixels, below half of full scale, are masked) or as polygons in a TOML
//! file (`polygons = [[[x, y], ...], ...]`, corners as fractions of the
//! frame's width and height, so that a mask works at any resolution). It
//! is fixed at calibration and kept in the profile.
//!
//! Inside the mask, the model input is set to mid-gray before encoding, so
//! what happens there cannot move the latents, and the reconstruction is
//! taken to equal the input there, so those pixels add nothing that varies
//! to the pixel scores or the heatmap.

use std::path::Path;

use anyhow::{Context, Result, bail, ensure};
use serde::{Deserialize, Serialize};

use crate::preprocess::{Fit, Geometry};

/// Largest side of a mask bitmap.
pub const MAX_MASK_SIDE: u32 = 4096;
/// Side of the bitmap polygons are drawn into.
const POLYGON_RASTER: u32 = 1024;
/// Largest number of polygons, and of corners per polygon.
pub const MAX_POLYGONS: usize = 64;
/// Largest number of corners of one polygon.
pub const MAX_CORNERS: usize = 256;
/// The value masked input pixels are set to.
pub const MASK_FILL: f32 = 0.5;

/// A bitmap over the frame (stretched to its size): `true` = masked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "MaskFile", into = "MaskFile")]
pub struct Mask {
    width: u32,
    height: u32,
    bits: Vec<bool>,
}

/// A mask as the profile stores it: run lengths over the bitmap, row by
/// row, alternately unmasked and masked, starting with unmasked.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct MaskFile {
    width: u32,
    height: u32,
    runs: Vec<u32>,
}

impl TryFrom<MaskFile> for Mask {
    type Error = String;

    fn try_from(f: MaskFile) -> Result<Mask, String> {
        if f.width == 0 || f.height == 0 || f.width > MAX_MASK_SIDE || f.height > MAX_MASK_SIDE {
            return Err(format!(
                "a mask is 1 to {MAX_MASK_SIDE} pixels each way, found {}×{}",
                f.width, f.height
            ));
        }
        let n = f.width as usize * f.height as usize;
        let total: u64 = f.runs.iter().map(|&r| r as u64).sum();
        if total != n as u64 {
            return Err(format!(
                "the mask's runs cover {total} pixels, its {}×{} bitmap has {n}",
                f.width, f.height
            ));
        }
        let mut bits = Vec::with_capacity(n);
        for (i, &r) in f.runs.iter().enumerate() {
            bits.extend(std::iter::repeat_n(i % 2 == 1, r as usize));
        }
        Ok(Mask {
            width: f.width,
            height: f.height,
            bits,
        })
    }
}

impl From<Mask> for MaskFile {
    fn from(m: Mask) -> MaskFile {
        let mut runs = vec![];
        let (mut current, mut len) = (false, 0u32);
        for &b in &m.bits {
            if b == current {
                len += 1;
            } else {
                runs.push(len);
                current = b;
                len = 1;
            }
        }
        runs.push(len);
        MaskFile {
            width: m.width,
            height: m.height,
            runs,
        }
    }
}

/// The polygons of a TOML mask file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolygonFile {
    polygons: Vec<Vec<[f64; 2]>>,
}

impl Mask {
    /// Reads a mask from a PNG/JPEG (dark = masked) or a TOML file of
    /// polygons (by its `.toml` extension).
    pub fn load(path: &Path) -> Result<Mask> {
        let is_toml = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("toml"));
        if is_toml {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading the mask {}", path.display()))?;
            anyhow::ensure!(
                text.len() < 1 << 20,
                "{}: too large for a mask",
                path.display()
            );
            let f: PolygonFile = toml::from_str(&text).with_context(|| {
                format!(
                    "{}: expected `polygons = [[[x, y], ...], ...]` with corners as fractions \
                     of the frame's width and height",
                    path.display()
                )
            })?;
            return Mask::from_polygons(&f.polygons)
                .with_context(|| format!("the mask {}", path.display()));
        }
        let img = crate::imageio::load_image(path)
            .with_context(|| format!("reading the mask {}", path.display()))?;
        Mask::from_image(&img).with_context(|| format!("the mask {}", path.display()))
    }

    /// The mask of an image: pixels darker than half of full scale (by
    /// their luma, for colour) are masked.
    pub fn from_image(img: &crate::frame::Frame) -> Result<Mask> {
        let (w, h) = (img.width, img.height);
        ensure!(
            w > 0 && h > 0 && w <= MAX_MASK_SIDE as usize && h <= MAX_MASK_SIDE as usize,
            "a mask image is 1 to {MAX_MASK_SIDE} pixels each way, found {w}×{h}"
        );
        let bpp = img.format.bytes_per_pixel();
        ensure!(
            img.data.len() == w * h * bpp,
            "the image's buffer does not match its size"
        );
        let bits = img
            .data
            .chunks_exact(bpp)
            .map(|p| {
                let v = if bpp == 3 {
                    (299 * p[0] as u32 + 587 * p[1] as u32 + 114 * p[2] as u32) / 1000
                } else {
                    p[0] as u32
                };
                v < 128
            })
            .collect();
        Ok(Mask {
            width: w as u32,
            height: h as u32,
            bits,
        })
    }

    /// The mask of `polygons` (corners as fractions of the frame's width
    /// and height; the inside by the even-odd rule).
    pub fn from_polygons(polygons: &[Vec<[f64; 2]>]) -> Result<Mask> {
        ensure!(!polygons.is_empty(), "a mask needs at least one polygon");
        ensure!(
            polygons.len() <= MAX_POLYGONS,
            "a mask has at most {MAX_POLYGONS} polygons, found {}",
            polygons.len()
        );
        for (i, p) in polygons.iter().enumerate() {
            if p.len() < 3 || p.len() > MAX_CORNERS {
                bail!(
                    "polygon {i} has {} corners: expected 3 to {MAX_CORNERS}",
                    p.len()
                );
            }
            if let Some(c) = p
                .iter()
                .find(|c| !c.iter().all(|v| v.is_finite() && (-0.5..=1.5).contains(v)))
            {
                bail!(
                    "polygon {i} has the corner {c:?}: corners are fractions of the frame's \
                     width and height (0 to 1)"
                );
            }
        }
        let side = POLYGON_RASTER;
        let mut bits = vec![false; (side * side) as usize];
        for y in 0..side as usize {
            let v = (y as f64 + 0.5) / side as f64;
            for x in 0..side as usize {
                let u = (x as f64 + 0.5) / side as f64;
                bits[y * side as usize + x] = polygons.iter().any(|p| inside(p, u, v));
            }
        }
        Ok(Mask {
            width: side,
            height: side,
            bits,
        })
    }

    /// Whether the frame point at fractions (`u`, `v`) of its width and
    /// height is masked.
    pub fn masked_at(&self, u: f64, v: f64) -> bool {
        if !(0.0..1.0).contains(&u) || !(0.0..1.0).contains(&v) {
            return false;
        }
        let x = ((u * self.width as f64) as usize).min(self.width as usize - 1);
        let y = ((v * self.height as f64) as usize).min(self.height as usize - 1);
        self.bits[y * self.width as usize + x]
    }

    /// The fraction of the frame masked.
    pub fn coverage(&self) -> f64 {
        self.bits.iter().filter(|&&b| b).count() as f64 / self.bits.len().max(1) as f64
    }

    /// Marks in `out` (`w`×`h`, row-major; resized only when its length
    /// changes) the pixels of a `w`×`h` model image, fitted from a
    /// `frame_w`×`frame_h` frame by `fit`, whose centre falls in the mask.
    /// Padding (letterbox) is never masked.
    #[allow(clippy::too_many_arguments)]
    pub fn rasterise(
        &self,
        fit: Fit,
        frame_w: usize,
        frame_h: usize,
        w: usize,
        h: usize,
        out: &mut Vec<bool>,
    ) {
        out.resize(w * h, false);
        let g = Geometry::new(fit, frame_w, frame_h, w, h);
        let (sx, sy, sw, sh) = g.src;
        let (dx, dy, dw, dh) = g.dst;
        let (fw, fh) = (frame_w.max(1) as f64, frame_h.max(1) as f64);
        for y in 0..h {
            for x in 0..w {
                let inside = x >= dx && x < dx + dw && y >= dy && y < dy + dh;
                out[y * w + x] = inside && {
                    let fx = sx + ((x - dx) as f64 + 0.5) * sw / dw.max(1) as f64;
                    let fy = sy + ((y - dy) as f64 + 0.5) * sh / dh.max(1) as f64;
                    self.masked_at(fx / fw, fy / fh)
                };
            }
        }
    }
}

/// Whether (`u`, `v`) is inside polygon `p` (even-odd rule).
fn inside(p: &[[f64; 2]], u: f64, v: f64) -> bool {
    let mut c = false;
    let mut j = p.len() - 1;
    for i in 0..p.len() {
        let ([xi, yi], [xj, yj]) = (p[i], p[j]);
        if (yi > v) != (yj > v) && u < (xj - xi) * (v - yi) / (yj - yi) + xi {
            c = !c;
        }
        j = i;
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{Frame, PixelFormat};

    #[test]
    fn polygons_cover_their_inside_and_round_trip_through_runs() {
        let m =
            Mask::from_polygons(&[vec![[0.0, 0.0], [0.5, 0.0], [0.5, 0.5], [0.0, 0.5]]]).unwrap();
        assert!(m.masked_at(0.25, 0.25));
        assert!(!m.masked_at(0.75, 0.25) && !m.masked_at(0.25, 0.75));
        assert!((m.coverage() - 0.25).abs() < 0.01);
        let json = serde_json::to_string(&m).unwrap();
        assert!(json.len() < 20_000, "{}", json.len());
        let back: Mask = serde_json::from_str(&json).unwrap();
        assert_eq!(back, m);
        // runs that do not cover the bitmap are refused
        let bad = r#"{"width": 4, "height": 4, "runs": [3, 2]}"#;
        assert!(
            serde_json::from_str::<Mask>(bad)
                .unwrap_err()
                .to_string()
                .contains("cover 5")
        );
        assert!(Mask::from_polygons(&[vec![[0.0, 0.0], [1.0, 1.0]]]).is_err());
        assert!(Mask::from_polygons(&[vec![[0.0, 0.0], [9.0, 1.0], [0.0, 1.0]]]).is_err());
        assert!(Mask::from_polygons(&[]).is_err());
    }

    #[test]
    fn an_image_masks_its_dark_pixels_and_rasterises_through_the_fit() {
        // a 4×2 image whose left half is black
        let img = Frame {
            width: 4,
            height: 2,
            format: PixelFormat::Gray8,
            data: vec![0, 0, 255, 255, 0, 0, 255, 255],
        };
        let m = Mask::from_image(&img).unwrap();
        let mut out = vec![];
        // a 200×100 frame cropped to a square model input of 10×10: the
        // centre 100×100, whose left half is masked (x < 100 in the frame)
        m.rasterise(Fit::Crop, 200, 100, 10, 10, &mut out);
        for y in 0..10 {
            for x in 0..10 {
                assert_eq!(out[y * 10 + x], x < 5, "({x}, {y})");
            }
        }
        // letterboxed, the padding is never masked
        m.rasterise(Fit::Letterbox, 200, 100, 10, 10, &mut out);
        assert!(!out[0] && out[3 * 10] && !out[3 * 10 + 9]);
    }
}
