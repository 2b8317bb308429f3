//! Tiles: a camera frame scored as a grid of `cols`×`rows` model inputs.
//!
//! A 640×480 frame squeezed into one 64×64 input loses small objects (a
//! 40-pixel object becomes 5 pixels). With tiles, the frame is fitted to
//! a grid of `cols`×`rows` model inputs (the same crop or letterbox as
//! without tiles, at `cols`·W × `rows`·H) and each cell is one input of a
//! model trained on tiles (`tools train --tiles CxR`, which cuts its
//! training frames the same way). A fixed camera sees the same content in
//! each tile, so each tile has its own calibration.
//!
//! The whole grid image is laid out as one `[C, rows·H, cols·W]` image, so
//! the pixel map, heatmap, snapshots and window work on it as on one
//! frame; [`TileCutter`] moves tiles between it and model inputs.

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

use crate::frame::FrameRef;
use crate::meta::ModelSpec;
use crate::preprocess::{Fit, Geometry, Preprocessor, normalise_gain};

/// Largest number of columns or rows of a grid.
pub const MAX_GRID_SIDE: u32 = 8;

/// A grid of tiles, `cols` across and `rows` down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Grid {
    cols: u32,
    rows: u32,
}

impl Grid {
    /// A grid of `cols`×`rows` tiles, each side in 1..=[`MAX_GRID_SIDE`].
    pub fn new(cols: u32, rows: u32) -> Result<Grid> {
        for (name, v) in [("columns", cols), ("rows", rows)] {
            if !(1..=MAX_GRID_SIDE).contains(&v) {
                bail!("a tile grid has 1 to {MAX_GRID_SIDE} {name}, found {v}");
            }
        }
        Ok(Grid { cols, rows })
    }

    /// Columns.
    pub fn cols(self) -> usize {
        self.cols as usize
    }

    /// Rows.
    pub fn rows(self) -> usize {
        self.rows as usize
    }

    /// Number of tiles.
    pub fn count(self) -> usize {
        self.cols() * self.rows()
    }

    /// Column and row of tile `t` (tiles are numbered row by row).
    pub fn cell(self, t: usize) -> (usize, usize) {
        (t % self.cols(), t / self.cols())
    }

    /// The spec of the whole grid image: `spec`'s input `cols`·W wide and
    /// `rows`·H high, without illumination normalisation (that is applied
    /// per tile, as in training).
    pub fn grid_spec(self, spec: &ModelSpec) -> ModelSpec {
        let mut g = spec.clone();
        g.width = spec.width * self.cols();
        g.height = spec.height * self.rows();
        g.illumination = None;
        g
    }

    /// The region of a `frame_w`×`frame_h` frame that tile `t` covers
    /// under `fit`, in whole frame pixels (x, y, width, height; at least
    /// one pixel each way). Probes and reports use it.
    pub fn frame_rect(
        self,
        fit: Fit,
        frame_w: usize,
        frame_h: usize,
        spec: &ModelSpec,
        t: usize,
    ) -> (usize, usize, usize, usize) {
        self.frame_rect_of(fit, frame_w, frame_h, spec.width, spec.height, t)
    }

    /// [`Grid::frame_rect`] for tiles of `tile_w`×`tile_h` model pixels.
    pub fn frame_rect_of(
        self,
        fit: Fit,
        frame_w: usize,
        frame_h: usize,
        tile_w: usize,
        tile_h: usize,
        t: usize,
    ) -> (usize, usize, usize, usize) {
        let (gw, gh) = (tile_w * self.cols(), tile_h * self.rows());
        let geo = Geometry::new(fit, frame_w, frame_h, gw, gh);
        let (c, r) = self.cell(t);
        let (x0, y0) = (c * tile_w, r * tile_h);
        let (x1, y1) = (x0 + tile_w, y0 + tile_h);
        // model-input corners back to the frame, clipped to what it sees
        let (dx, dy, dw, dh) = geo.dst;
        let (sx, sy, sw, sh) = geo.src;
        let to_frame = |m: usize, d: usize, dl: usize, s: f64, sl: f64| -> usize {
            let m = m.clamp(d, d + dl);
            (s + (m - d) as f64 * sl / dl.max(1) as f64)
                .round()
                .max(0.0) as usize
        };
        let fx0 = to_frame(x0, dx, dw, sx, sw).min(frame_w.saturating_sub(1));
        let fy0 = to_frame(y0, dy, dh, sy, sh).min(frame_h.saturating_sub(1));
        let fx1 = to_frame(x1, dx, dw, sx, sw);
        let fy1 = to_frame(y1, dy, dh, sy, sh);
        (
            fx0,
            fy0,
            fx1.saturating_sub(fx0).max(1).min(frame_w - fx0),
            fy1.saturating_sub(fy0).max(1).min(frame_h - fy0),
        )
    }
}

impl std::str::FromStr for Grid {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Grid> {
        let Some((c, r)) = s.trim().split_once(['x', 'X', '×']) else {
            bail!("a tile grid is written COLSxROWS, e.g. 4x3; found {s:?}");
        };
        let parse = |v: &str, what: &str| -> Result<u32> {
            v.trim().parse::<u32>().map_err(|_| {
                anyhow::anyhow!(
                    "a tile grid is written COLSxROWS, e.g. 4x3; {what} {v:?} is not a number"
                )
            })
        };
        Grid::new(parse(c, "columns")?, parse(r, "rows")?)
    }
}

/// Parses a grid for the command line (`4x3`).
pub fn parse_grid(s: &str) -> Result<Grid, String> {
    s.parse().map_err(|e: anyhow::Error| e.to_string())
}

impl std::fmt::Display for Grid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}x{}", self.cols, self.rows)
    }
}

impl TryFrom<String> for Grid {
    type Error = anyhow::Error;

    fn try_from(s: String) -> Result<Grid> {
        s.parse()
    }
}

impl From<Grid> for String {
    fn from(g: Grid) -> String {
        g.to_string()
    }
}

/// Fits frames to a grid image and moves tiles between it and model
/// inputs, with every buffer allocated once.
#[derive(Debug)]
pub struct TileCutter {
    grid: Grid,
    spec: ModelSpec,
    pre: Preprocessor,
    /// The grid image `[C, rows·H, cols·W]` of the last frame.
    image: Vec<f32>,
}

impl TileCutter {
    /// A cutter for `spec`'s model input under `grid` and `fit`.
    pub fn new(spec: &ModelSpec, grid: Grid, fit: Fit) -> TileCutter {
        let g = grid.grid_spec(spec);
        TileCutter {
            grid,
            spec: spec.clone(),
            image: vec![0.0; g.image_len()],
            pre: Preprocessor::new(&g, fit),
        }
    }

    /// The grid.
    pub fn grid(&self) -> Grid {
        self.grid
    }

    /// Fits `frame` to the grid image.
    pub fn cut(&mut self, frame: FrameRef<'_>) -> Result<()> {
        self.pre.process(frame, &mut self.image)
    }

    /// The grid image of the last frame, with each tile as the model saw
    /// it once [`TileCutter::tile_into`] took it (gain-normalised, when
    /// the model normalises illumination).
    pub fn image(&self) -> &[f32] {
        &self.image
    }

    /// The grid image of the last frame, to change before the tiles are
    /// taken (the mask fills it).
    pub fn image_mut(&mut self) -> &mut [f32] {
        &mut self.image
    }

    /// Copies tile `t` of the grid image into `out` (`[C, H, W]`) and
    /// applies the model's illumination normalisation to it; the grid
    /// image keeps the normalised tile.
    pub fn tile_into(&mut self, t: usize, out: &mut [f32]) {
        take_tile(&self.spec, self.grid, t, &self.image, out);
        if let Some(target) = self.spec.illumination {
            normalise_gain(out, target);
            paste_tile(&self.spec, self.grid, t, out, &mut self.image);
        }
    }
}

/// Pastes the `[C, H, W]` image `tile` as tile `t` of the grid image
/// `grid_image` (`[C, rows·H, cols·W]`).
pub fn paste_tile(spec: &ModelSpec, grid: Grid, t: usize, tile: &[f32], grid_image: &mut [f32]) {
    let (w, h) = (spec.width, spec.height);
    let gw = w * grid.cols();
    let (c, r) = grid.cell(t);
    for ch in 0..spec.channels {
        for y in 0..h {
            let src = ch * h * w + y * w;
            let dst = ch * h * grid.rows() * gw + (r * h + y) * gw + c * w;
            grid_image[dst..dst + w].copy_from_slice(&tile[src..src + w]);
        }
    }
}

/// Copies tile `t` of the grid image `grid_image` into the `[C, H, W]`
/// image `tile`.
pub fn take_tile(spec: &ModelSpec, grid: Grid, t: usize, grid_image: &[f32], tile: &mut [f32]) {
    let (w, h) = (spec.width, spec.height);
    let gw = w * grid.cols();
    let (c, r) = grid.cell(t);
    for ch in 0..spec.channels {
        for y in 0..h {
            let dst = ch * h * w + y * w;
            let src = ch * h * grid.rows() * gw + (r * h + y) * gw + c * w;
            tile[dst..dst + w].copy_from_slice(&grid_image[src..src + w]);
        }
    }
}
