//! The heatmap scale: how a frame's per-pixel anomaly map
//! ([`crate::score::pixel_map`]) becomes colours. One scale, used by the
//! live window's heatmap panel and by the snapshots' overlay, so both
//! colour the same frame the same way.
//!
//! # From the pixel map to heat
//!
//! The map is the per-pixel NLL of the model input, box-blurred over a
//! few pixels (radius = shorter side / 32, at least 1; 2 px for a 64×64
//! model) so that anomalous *areas* stand out from the thin sprite edges a
//! blurry decoder always misses a little. From each blurred value the
//! frame's median pixel NLL is subtracted (the floor every pixel pays:
//! under a Bernoulli likelihood a gray background costs its entropy even
//! when perfectly reconstructed), and the excess is divided by the
//! reference: the `recon` threshold of the profile, the *mean* per-pixel
//! NLL at which a whole frame counts as anomalous ([`reference`]). So a
//! ratio of 1 means "this neighbourhood costs one whole anomalous frame's
//! worth per pixel more than the frame's typical pixel". When the profile
//! has no `recon` threshold the frame's own mean pixel NLL is the
//! reference instead. An anomaly that covers the whole frame (a noise
//! burst, a frozen camera) raises the median with it and shows little
//! heat: there is nothing to localise.
//!
//! The ratio becomes a heat in [0, 1] on a log scale ([`heat`]): 0 at a
//! ratio ≤ 1, 1 at a ratio ≥ [`HOT_RATIO`] (16).
//!
//! # From heat to colour
//!
//! Heat 0 is transparent. Above, the colour runs from cool (blue, ratio
//! just above 1) through cyan, green and yellow to hot (red, ratio ≥ 16),
//! and the opacity rises with it, as the square root of the heat, up to
//! [`MAX_ALPHA`] (75 %). [`Palette::paint`] lays that colour over a base
//! pixel: the captured frame in a snapshot, the faint model input in the
//! window.

use crate::calibrate::Profile;
use crate::score::Method;

/// Ratio to the reference at which the colour scale is fully hot.
pub const HOT_RATIO: f32 = 16.0;
/// Most opacity of the heat colour (at the hot end).
pub const MAX_ALPHA: f32 = 0.75;
/// Levels of the quantised scale.
pub const LEVELS: usize = 256;

/// Heat in [0, 1] of a ratio to the reference: 0 at ≤ 1 (and for NaN),
/// 1 at ≥ [`HOT_RATIO`], logarithmic between.
pub fn heat(ratio: f32) -> f32 {
    if ratio.is_nan() || ratio <= 1.0 {
        0.0
    } else {
        (ratio.ln() / HOT_RATIO.ln()).min(1.0)
    }
}

/// The reference per-pixel NLL of a profile: its `recon` threshold, when
/// it has a usable one.
pub fn reference(profile: &Profile) -> Option<f32> {
    profile
        .threshold_for(Method::Recon)
        .map(|t| t as f32)
        .filter(|t| *t > 0.0 && t.is_finite())
}

/// Colour and opacity of heat `t` in [0, 1], unquantised.
pub fn colour(t: f32) -> ([u8; 3], f32) {
    const STOPS: [[f32; 3]; 5] = [
        [40.0, 70.0, 255.0], // blue
        [0.0, 190.0, 255.0], // cyan
        [60.0, 230.0, 60.0], // green
        [255.0, 210.0, 0.0], // yellow
        [255.0, 30.0, 0.0],  // red
    ];
    let t = if t.is_nan() { 0.0 } else { t.clamp(0.0, 1.0) };
    let x = t * (STOPS.len() - 1) as f32;
    let i = (x.floor() as usize).min(STOPS.len() - 2);
    let f = x - i as f32;
    let mut c = [0u8; 3];
    for (k, v) in c.iter_mut().enumerate() {
        *v = (STOPS[i][k] + (STOPS[i + 1][k] - STOPS[i][k]) * f).round() as u8;
    }
    (c, if t > 0.0 { MAX_ALPHA * t.sqrt() } else { 0.0 })
}

/// The scale quantised to [`LEVELS`] levels: colour and opacity (of 256)
/// per level, looked up without arithmetic per pixel.
#[derive(Debug, Clone)]
pub struct Palette {
    lut: [([u8; 3], u16); LEVELS],
}

impl Default for Palette {
    fn default() -> Self {
        Self::new()
    }
}

impl Palette {
    /// The quantised scale.
    pub fn new() -> Palette {
        let mut lut = [([0u8; 3], 0u16); LEVELS];
        for (q, e) in lut.iter_mut().enumerate() {
            let (c, a) = colour(q as f32 / (LEVELS - 1) as f32);
            *e = (c, (a * 256.0).round() as u16);
        }
        Palette { lut }
    }

    /// Colour and opacity (of 256) of heat `t` (clamped to [0, 1]).
    pub fn get(&self, t: f32) -> ([u8; 3], u16) {
        let q = (t * (LEVELS - 1) as f32).round();
        // NaN casts to 0: no heat
        self.lut[(q as usize).min(LEVELS - 1)]
    }

    /// `base` with the colour of heat `t` laid over it.
    pub fn paint(&self, base: [u8; 3], t: f32) -> [u8; 3] {
        let (c, a) = self.get(t);
        if a == 0 {
            return base;
        }
        let mut px = base;
        for k in 0..3 {
            let v = px[k] as u16 * (256 - a) + c[k] as u16 * a;
            px[k] = (v >> 8) as u8;
        }
        px
    }
}

/// Turns pixel maps into heat (see the module docs), in buffers sized once
/// per model size.
#[derive(Debug, Clone, Default)]
pub struct HeatField {
    /// Horizontally blurred map.
    tmp: Vec<f32>,
    /// Scratch copy of the map for its median.
    sorted: Vec<f32>,
    /// Heat per model pixel.
    heat: Vec<f32>,
}

impl HeatField {
    /// Buffers for a `width`×`height` map.
    pub fn new(width: usize, height: usize) -> HeatField {
        let n = width * height;
        HeatField {
            tmp: vec![0.0; n],
            sorted: Vec::with_capacity(n),
            heat: vec![0.0; n],
        }
    }

    /// The heat computed last.
    pub fn heat(&self) -> &[f32] {
        &self.heat
    }

    /// Computes the heat of every pixel of a `w`×`h` `map` against
    /// `reference` (the frame's mean pixel NLL when `None`); allocates
    /// only when the size differs from the last one.
    pub fn compute(&mut self, map: &[f32], w: usize, h: usize, reference: Option<f32>) -> &[f32] {
        let n = w * h;
        if self.heat.len() != n {
            *self = HeatField::new(w, h);
        }
        if n == 0 || map.len() != n {
            self.heat.fill(0.0);
            return &self.heat;
        }
        let reference = reference.unwrap_or_else(|| map.iter().sum::<f32>() / n as f32);
        let r = ((w.min(h) as f32 / 32.0).round() as usize).max(1);
        // Horizontal then vertical box blur, normalised at the borders.
        for y in 0..h {
            let row = &map[y * w..(y + 1) * w];
            for x in 0..w {
                let (a, b) = (x.saturating_sub(r), (x + r).min(w - 1));
                let s: f32 = row[a..=b].iter().sum();
                self.tmp[y * w + x] = s / (b - a + 1) as f32;
            }
        }
        let inv = if reference > 0.0 && reference.is_finite() {
            1.0 / reference
        } else {
            0.0
        };
        // The frame's typical pixel: the floor a gray background costs
        // under a Bernoulli likelihood even when perfectly reconstructed.
        self.sorted.clear();
        self.sorted.extend_from_slice(map);
        let mid = self.sorted.len() / 2;
        let floor = *self.sorted.select_nth_unstable_by(mid, f32::total_cmp).1;
        for y in 0..h {
            let (a, b) = (y.saturating_sub(r), (y + r).min(h - 1));
            for x in 0..w {
                let mut s = 0.0;
                for yy in a..=b {
                    s += self.tmp[yy * w + x];
                }
                self.heat[y * w + x] = heat((s / (b - a + 1) as f32 - floor) * inv);
            }
        }
        &self.heat
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heat_is_zero_at_the_threshold_and_one_when_hot() {
        assert_eq!(heat(0.5), 0.0);
        assert_eq!(heat(1.0), 0.0);
        assert_eq!(heat(f32::NAN), 0.0);
        assert!((heat(HOT_RATIO.sqrt()) - 0.5).abs() < 1e-6);
        assert_eq!(heat(1000.0), 1.0);
        let (cool, a0) = colour(0.05);
        let (hot, a1) = colour(1.0);
        assert!(cool[2] > cool[0] && hot[0] > hot[2], "{cool:?} {hot:?}");
        assert!(a0 < a1 && a1 <= MAX_ALPHA);
        assert_eq!(colour(0.0).1, 0.0);
    }

    #[test]
    fn the_palette_paints_over_a_base_and_leaves_no_heat_alone() {
        let p = Palette::new();
        let base = [128, 128, 128];
        assert_eq!(p.paint(base, 0.0), base);
        assert_eq!(p.paint(base, f32::NAN), base);
        let hot = p.paint(base, 1.0);
        assert!(hot[0] > 200 && hot[2] < 80, "{hot:?}");
        assert_eq!(p.paint(base, 7.0), hot, "clamped");
        let cool = p.paint(base, 0.1);
        assert!(cool[2] > cool[0], "{cool:?}");
    }

    #[test]
    fn a_hot_area_is_hot_and_the_typical_pixel_is_not() {
        // 16×8, 1 nat everywhere (the floor), 9 nats in a 4×4 block
        let (w, h) = (16, 8);
        let map: Vec<f32> = (0..w * h)
            .map(|i| {
                if (8..12).contains(&(i % w)) && (2..6).contains(&(i / w)) {
                    9.0
                } else {
                    1.0
                }
            })
            .collect();
        let mut f = HeatField::new(w, h);
        let heat = f.compute(&map, w, h, Some(0.5)).to_vec();
        // centre of the block: blurred excess 8 × (3/3 … ) over 0.5 → hot
        assert!(heat[4 * w + 10] > 0.9, "{}", heat[4 * w + 10]);
        assert_eq!(heat[w + 1], 0.0);
        assert_eq!(heat[7 * w + 15], 0.0);
        // without a reference the frame's mean is used
        let mean = map.iter().sum::<f32>() / map.len() as f32;
        let own = f.compute(&map, w, h, None).to_vec();
        let want = f.compute(&map, w, h, Some(mean)).to_vec();
        assert_eq!(own, want);
        // a map of the wrong size gives no heat
        assert!(f.compute(&map[1..], w, h, None).iter().all(|v| *v == 0.0));
    }
}
