//! Latent traversal grids: each row sweeps one latent over ±3σ while the
//! others stay at a base point; the picture shows what each latent learned.

use anyhow::{Result, ensure};

use crate::frame::PixelFormat;
use crate::model::Decoder;

/// Width in pixels of the per-row KL bar drawn left of each row.
const BAR_WIDTH: usize = 24;
/// Gap between cells, in pixels.
const GAP: usize = 2;
/// Background gray of the grid.
const BACKGROUND: u8 = 40;

/// What to traverse around and how far.
#[derive(Debug, Clone)]
pub struct TraversalSpec {
    /// The point every row starts from (length Z).
    pub base: Vec<f32>,
    /// Half-width of the sweep per latent, in latent units (usually 3σ).
    pub span: Vec<f32>,
    /// Columns per row (values from base − span to base + span).
    pub steps: usize,
    /// KL per latent (nats) for the bar left of each row; `None` draws none.
    pub kl: Option<Vec<f32>>,
    /// Integer upscaling of every cell.
    pub scale: usize,
}

/// An 8-bit picture ready to be written as PNG.
#[derive(Debug, Clone)]
pub struct Picture {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// Gray or RGB.
    pub format: PixelFormat,
    /// Packed pixels.
    pub data: Vec<u8>,
}

/// Renders a traversal grid with `decoder` (planned for `spec.steps`
/// latent vectors per run). Images are `channels × height × width`.
pub fn traversal_grid(
    decoder: &mut Decoder,
    channels: usize,
    height: usize,
    width: usize,
    spec: &TraversalSpec,
) -> Result<Picture> {
    let z = spec.base.len();
    ensure!(
        z > 0 && spec.span.len() == z,
        "base and span must both have one value per latent"
    );
    ensure!(
        spec.steps >= 2,
        "a traversal needs at least 2 steps, found {}",
        spec.steps
    );
    ensure!(
        decoder.batch() == spec.steps,
        "decoder must be planned for {} vectors",
        spec.steps
    );
    let scale = spec.scale.max(1);
    let (cw, ch) = (width * scale, height * scale);
    let bar = if spec.kl.is_some() {
        BAR_WIDTH + GAP
    } else {
        0
    };
    let out_w = bar + spec.steps * (cw + GAP) + GAP;
    let out_h = z * (ch + GAP) + GAP;
    let bpp = if channels == 1 { 1 } else { 3 };
    let format = if channels == 1 {
        PixelFormat::Gray8
    } else {
        PixelFormat::Rgb8
    };
    let mut data = vec![BACKGROUND; out_w * out_h * bpp];
    let image_len = channels * height * width;
    let mut zs = vec![0.0f32; spec.steps * z];
    let mut recon = vec![0.0f32; spec.steps * image_len];
    let kl_max = spec
        .kl
        .as_ref()
        .map(|k| k.iter().cloned().fold(0.0f32, f32::max))
        .unwrap_or(0.0);
    for row in 0..z {
        for col in 0..spec.steps {
            let t = -1.0 + 2.0 * col as f32 / (spec.steps - 1) as f32;
            let v = &mut zs[col * z..(col + 1) * z];
            v.copy_from_slice(&spec.base);
            v[row] = spec.base[row] + t * spec.span[row];
        }
        decoder.decode(&zs, &mut recon)?;
        let y0 = GAP + row * (ch + GAP);
        if let Some(kl) = &spec.kl {
            // A bar whose length is this latent's share of the largest KL.
            let frac = if kl_max > 0.0 {
                (kl[row] / kl_max).clamp(0.0, 1.0)
            } else {
                0.0
            };
            let len = ((BAR_WIDTH as f32) * frac).round() as usize;
            let by0 = y0 + ch / 3;
            for y in by0..(by0 + (ch / 3).max(1)).min(out_h) {
                for x in GAP..GAP + len.max(1) {
                    for b in 0..bpp {
                        data[(y * out_w + x) * bpp + b] = if len == 0 { 90 } else { 230 };
                    }
                }
            }
        }
        for col in 0..spec.steps {
            let img = &recon[col * image_len..(col + 1) * image_len];
            let x0 = bar + GAP + col * (cw + GAP);
            for y in 0..ch {
                for x in 0..cw {
                    let (sy, sx) = (y / scale, x / scale);
                    for b in 0..bpp {
                        let v = img[b * height * width + sy * width + sx];
                        data[((y0 + y) * out_w + x0 + x) * bpp + b] =
                            (v.clamp(0.0, 1.0) * 255.0).round() as u8;
                    }
                }
            }
        }
    }
    Ok(Picture {
        width: out_w,
        height: out_h,
        format,
        data,
    })
}
