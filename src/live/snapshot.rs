//! Snapshots: anomalous frames saved as PNG with the anomaly heatmap
//! overlaid (`--snapshots DIR`).
//!
//! A [`Snapshotter`] is an [`Observer`] of the live loop. It writes one
//! snapshot for every `anomaly_start` and `anomaly_update` event, so at most
//! one per update interval. Each snapshot is the captured frame at camera
//! resolution with the model's per-pixel anomaly map mapped back onto it
//! through the profile's fit (crop or letterbox; in crop mode the parts of
//! the frame the model does not see are dimmed).
//!
//! The heat is coloured on the one heatmap scale of [`crate::heat`]
//! (the live window's too): ratios to the `recon` threshold from 1
//! (transparent) through blue, cyan, green and yellow to red at 16 and
//! above, with the opacity rising to 75 %.
//!
//! # Files and the disk budget
//!
//! Files are named `snapshot-<UTC time>-f<frame>-<start|update>.png`, e.g.
//! `snapshot-20261125T173601.123Z-f0000001234-start.png`, so that sorting
//! by name sorts by time, also across runs. The disk budget covers the
//! files of this pattern in the folder (those of earlier runs included;
//! other files are neither counted nor touched): when a new snapshot would
//! exceed it, the oldest snapshots are deleted first, so the folder keeps
//! the most recent anomalies. Files are written atomically (temporary
//! file, then rename).
//!
//! A snapshot that cannot be written (full disk, unwritable folder, or one
//! larger than the whole budget) emits a `snapshot_error` event and the
//! loop goes on; snapshots are not tried again before a backoff (10 s at
//! first, doubling up to 10 min, reset by a success), so a full disk costs
//! one failed write per backoff period, not one per frame.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::backoff::{Backoff, Waits};
use super::decide::Transition;
use super::events::{Event, EventSink, now_rfc3339};
use super::observe::{Control, FrameView, Observer};
use crate::frame::{FrameRef, PixelFormat};
use crate::heat::Palette;
use crate::imageio::{encode_png, write_atomic};
use crate::preprocess::{Fit, Geometry};
use crate::tiles::Grid;

/// Default disk budget: 100 MB.
pub const DEFAULT_BUDGET_BYTES: u64 = 100_000_000;
/// Brightness kept outside the region the model sees (crop mode).
const DIM: u16 = 102; // of 256, 40 %
/// File name prefix and suffix of snapshots.
const PREFIX: &str = "snapshot-";
const SUFFIX: &str = ".png";

/// Writes one file; the default is [`write_atomic`].
pub type Writer = Box<dyn FnMut(&Path, &[u8]) -> Result<()> + Send>;

/// Settings of a [`Snapshotter`].
#[derive(Debug, Clone)]
pub struct SnapshotConfig {
    /// Folder the snapshots go to (created if missing).
    pub dir: PathBuf,
    /// Most bytes of snapshots kept in the folder.
    pub budget_bytes: u64,
    /// Wait after the first failure before trying again.
    pub retry_initial: Duration,
    /// Longest wait after repeated failures.
    pub retry_max: Duration,
}

impl SnapshotConfig {
    /// Snapshots in `dir` with the default budget (100 MB) and backoff
    /// (10 s, doubling up to 10 min).
    pub fn new(dir: impl Into<PathBuf>) -> SnapshotConfig {
        SnapshotConfig {
            dir: dir.into(),
            budget_bytes: DEFAULT_BUDGET_BYTES,
            retry_initial: Duration::from_secs(10),
            retry_max: Duration::from_secs(600),
        }
    }
}

/// What a [`Snapshotter`] has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SnapshotCounts {
    /// Snapshots written.
    pub written: u64,
    /// Attempts that failed (each emitted a `snapshot_error`).
    pub failed: u64,
    /// Anomaly events without a snapshot because of the backoff after a failure.
    pub skipped: u64,
    /// Old snapshots deleted to stay within the budget.
    pub deleted: u64,
}

/// Whether `name` is a file name this module writes.
pub fn is_snapshot_name(name: &str) -> bool {
    let Some(core) = name
        .strip_prefix(PREFIX)
        .and_then(|n| n.strip_suffix(SUFFIX))
    else {
        return false;
    };
    let mut parts = core.split('-');
    let (Some(time), Some(frame), Some(kind), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let time_ok = time.len() == 20
        && time.bytes().enumerate().all(|(i, b)| match i {
            8 => b == b'T',
            15 => b == b'.',
            19 => b == b'Z',
            _ => b.is_ascii_digit(),
        });
    let frame_ok = frame
        .strip_prefix('f')
        .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()));
    time_ok && frame_ok && (kind == "start" || kind == "update")
}

/// The file name of a snapshot of `frame` taken at `rfc3339` (as
/// [`now_rfc3339`] writes it) for an anomaly `kind` (`start` or `update`).
pub fn snapshot_name(rfc3339: &str, frame: u64, kind: &str) -> String {
    let time: String = rfc3339.chars().filter(|c| *c != '-' && *c != ':').collect();
    format!("{PREFIX}{time}-f{frame:010}-{kind}{SUFFIX}")
}

/// Whether an error chain contains a full disk or quota (ENOSPC, EDQUOT).
fn is_disk_full(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>().is_some_and(|io| {
            matches!(
                io.kind(),
                std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
            ) || matches!(io.raw_os_error(), Some(28) | Some(122))
        })
    })
}

/// Sampling table of one axis: for each frame pixel, the two model pixels
/// to interpolate, the weight of the second, and whether the model sees it.
#[derive(Debug, Default)]
struct Axis {
    i0: Vec<u32>,
    i1: Vec<u32>,
    w: Vec<f32>,
    seen: Vec<bool>,
}

impl Axis {
    /// Fills the table for `n` frame pixels; `to_model` maps a frame
    /// coordinate to a model coordinate and whether the model sees it,
    /// `lo..lo+len` is the filled model range.
    fn fill(&mut self, n: usize, lo: usize, len: usize, to_model: impl Fn(f64) -> (f64, bool)) {
        self.i0.clear();
        self.i1.clear();
        self.w.clear();
        self.seen.clear();
        let hi = (lo + len.max(1) - 1) as f64;
        for i in 0..n {
            let (m, seen) = to_model(i as f64 + 0.5);
            let m = (m - 0.5).clamp(lo as f64, hi);
            let m0 = m.floor();
            self.i0.push(m0 as u32);
            self.i1.push((m0 + 1.0).min(hi) as u32);
            self.w.push((m - m0) as f32);
            self.seen.push(seen);
        }
    }
}

/// The overlay renderer's buffers, sized for one frame size and model size.
#[derive(Debug, Default)]
struct Overlay {
    /// Frame width, height, model width, height, fit the tables are for.
    key: Option<(usize, usize, usize, usize, Fit)>,
    xs: Axis,
    ys: Axis,
    /// RGB output at frame size.
    rgb: Vec<u8>,
    palette: Palette,
}

impl Overlay {
    /// Makes sure every buffer fits a `fw`×`fh` frame and a `mw`×`mh` model;
    /// allocates only when a size changes.
    fn prepare(&mut self, fw: usize, fh: usize, mw: usize, mh: usize, fit: Fit) {
        let key = (fw, fh, mw, mh, fit);
        if self.key == Some(key) {
            return;
        }
        let g = Geometry::new(fit, fw, fh, mw, mh);
        let (dx, dy, dw, dh) = g.dst;
        let (sx, sy, _, _) = g.src;
        self.xs
            .fill(fw, dx, dw, |x| (g.frame_to_model(x, sy).0, g.sees(x, sy)));
        self.ys
            .fill(fh, dy, dh, |y| (g.frame_to_model(sx, y).1, g.sees(sx, y)));
        self.rgb = vec![0; fw * fh * 3];
        self.key = Some(key);
    }

    /// Draws the frame with `heat` (model pixels, [0, 1]) overlaid into
    /// `self.rgb`. Without heat only the unseen region is dimmed.
    fn render(&mut self, frame: FrameRef<'_>, mw: usize, heat: Option<&[f32]>) {
        let (fw, fh) = (frame.width, frame.height);
        let bpp = frame.format.bytes_per_pixel();
        for y in 0..fh {
            let (y0, y1, wy) = (self.ys.i0[y] as usize, self.ys.i1[y] as usize, self.ys.w[y]);
            let row_seen = self.ys.seen[y];
            let src = &frame.data[y * fw * bpp..(y + 1) * fw * bpp];
            let dst = &mut self.rgb[y * fw * 3..(y + 1) * fw * 3];
            for x in 0..fw {
                let p = &src[x * bpp..(x + 1) * bpp];
                let mut px = match frame.format {
                    PixelFormat::Gray8 => [p[0]; 3],
                    PixelFormat::Rgb8 => [p[0], p[1], p[2]],
                };
                if !(row_seen && self.xs.seen[x]) {
                    for v in &mut px {
                        *v = ((*v as u16 * DIM) >> 8) as u8;
                    }
                } else if let Some(h) = heat {
                    let (x0, x1, wx) =
                        (self.xs.i0[x] as usize, self.xs.i1[x] as usize, self.xs.w[x]);
                    let top = h[y0 * mw + x0] + (h[y0 * mw + x1] - h[y0 * mw + x0]) * wx;
                    let bottom = h[y1 * mw + x0] + (h[y1 * mw + x1] - h[y1 * mw + x0]) * wx;
                    px = self.palette.paint(px, top + (bottom - top) * wy);
                }
                dst[x * 3..x * 3 + 3].copy_from_slice(&px);
            }
        }
    }
}

/// Colour of tile borders on a snapshot, and of tiles above their threshold.
const TILE_EDGE: [u8; 3] = [150, 150, 150];
const TILE_HOT: [u8; 3] = [255, 64, 64];

/// Outlines every tile of `grid` on the `fw`×`fh` RGB image `rgb` (`rect`
/// gives each tile's region of the frame): thin and gray, or thick and red
/// for the tiles whose bit is set in `hot`.
pub fn draw_tiles(
    rgb: &mut [u8],
    fw: usize,
    fh: usize,
    grid: Grid,
    rect: impl Fn(usize) -> (usize, usize, usize, usize),
    hot: u64,
) {
    if rgb.len() < fw * fh * 3 {
        return;
    }
    let mut put = |x: usize, y: usize, c: [u8; 3]| {
        if x < fw && y < fh {
            let i = (y * fw + x) * 3;
            rgb[i..i + 3].copy_from_slice(&c);
        }
    };
    // gray edges first, so that a hot tile's red border is drawn over its
    // neighbours'
    for pass in [false, true] {
        for t in 0..grid.count() {
            let is_hot = t < 64 && hot >> t & 1 == 1;
            if is_hot != pass {
                continue;
            }
            let (x, y, w, h) = rect(t);
            let (c, thick) = if is_hot {
                (TILE_HOT, 2)
            } else {
                (TILE_EDGE, 1)
            };
            for k in 0..thick {
                for xx in x..x + w {
                    put(xx, y + k, c);
                    put(xx, (y + h).saturating_sub(1 + k), c);
                }
                for yy in y..y + h {
                    put(x + k, yy, c);
                    put((x + w).saturating_sub(1 + k), yy, c);
                }
            }
        }
    }
}

/// The picture of a snapshot: a frame at camera resolution with the
/// anomaly heatmap mapped back onto it through the profile's fit, and the
/// tile grid of a tiled profile. Used for the PNG files and for the JPEG
/// that MQTT publishes; buffers are allocated when a size changes only.
#[derive(Debug, Default)]
pub struct SnapshotImage {
    overlay: Overlay,
}

impl SnapshotImage {
    /// Sizes the buffers for the frame and model of `view` (allocates only
    /// when a size changes).
    pub fn prepare(&mut self, view: &FrameView<'_>) {
        let (f, r) = (view.frame, &view.result);
        self.overlay
            .prepare(f.width, f.height, r.width, r.height, view.profile.fit);
    }

    /// Draws the frame of `view` with its heatmap (and tile grid) and
    /// returns it as RGB rows, `view.frame.width` × `view.frame.height`.
    pub fn render(&mut self, view: &FrameView<'_>) -> Result<&[u8]> {
        self.prepare(view);
        let (f, r) = (view.frame, &view.result);
        anyhow::ensure!(
            f.data.len() == f.width * f.height * f.format.bytes_per_pixel(),
            "the frame's buffer does not match its size"
        );
        let heat = r.heat.filter(|h| h.len() == r.width * r.height);
        self.overlay.render(f, r.width, heat);
        if let Some(g) = view.tiles {
            let (tw, th) = (r.width / g.cols(), r.height / g.rows());
            draw_tiles(
                &mut self.overlay.rgb,
                f.width,
                f.height,
                g,
                |t| g.frame_rect_of(view.profile.fit, f.width, f.height, tw, th, t),
                view.hot_tiles,
            );
        }
        Ok(&self.overlay.rgb)
    }
}

/// Saves anomalous frames with their heatmap (see the module docs).
pub struct Snapshotter {
    cfg: SnapshotConfig,
    writer: Writer,
    image: SnapshotImage,
    /// Snapshots in the folder, oldest first: file name and size.
    files: VecDeque<(String, u64)>,
    used: u64,
    retry_at: Option<Instant>,
    retry: Waits,
    counts: SnapshotCounts,
}

impl std::fmt::Debug for Snapshotter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshotter")
            .field("cfg", &self.cfg)
            .field("files", &self.files.len())
            .field("used", &self.used)
            .field("counts", &self.counts)
            .finish()
    }
}

impl Snapshotter {
    /// Creates the folder if needed and takes stock of the snapshots
    /// already in it (they count against the budget).
    pub fn new(cfg: SnapshotConfig) -> Result<Snapshotter> {
        if cfg.budget_bytes == 0 {
            anyhow::bail!("the snapshot budget must be more than 0 bytes");
        }
        std::fs::create_dir_all(&cfg.dir)
            .with_context(|| format!("cannot create the snapshot folder {}", cfg.dir.display()))?;
        let mut files = vec![];
        let entries = std::fs::read_dir(&cfg.dir)
            .with_context(|| format!("cannot list the snapshot folder {}", cfg.dir.display()))?;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !is_snapshot_name(&name) {
                continue;
            }
            if let Ok(meta) = entry.metadata()
                && meta.is_file()
            {
                files.push((name, meta.len()));
            }
        }
        files.sort();
        let used = files.iter().map(|f| f.1).sum();
        let retry = Backoff::new(cfg.retry_initial, cfg.retry_max.max(cfg.retry_initial)).waits();
        Ok(Snapshotter {
            cfg,
            writer: Box::new(|p: &Path, b: &[u8]| write_atomic(p, b)),
            image: SnapshotImage::default(),
            files: files.into(),
            used,
            retry_at: None,
            retry,
            counts: SnapshotCounts::default(),
        })
    }

    /// Replaces the function that writes files (tests, other storage).
    pub fn with_writer(mut self, writer: Writer) -> Snapshotter {
        self.writer = writer;
        self
    }

    /// What has been done so far.
    pub fn counts(&self) -> SnapshotCounts {
        self.counts
    }

    /// Bytes of snapshots in the folder, as far as this snapshotter knows.
    pub fn used_bytes(&self) -> u64 {
        self.used
    }

    /// The snapshot folder.
    pub fn dir(&self) -> &Path {
        &self.cfg.dir
    }

    /// Renders the frame of `view` with its heatmap and returns the PNG.
    fn encode(&mut self, view: &FrameView<'_>) -> Result<Vec<u8>> {
        let (w, h) = (view.frame.width as u32, view.frame.height as u32);
        encode_png(w, h, PixelFormat::Rgb8, self.image.render(view)?)
    }

    /// Deletes the oldest snapshots until `incoming` more bytes fit.
    fn make_room(&mut self, incoming: u64) -> Result<u32> {
        let mut deleted = 0;
        while self.used + incoming > self.cfg.budget_bytes {
            let Some((name, size)) = self.files.front().cloned() else {
                break;
            };
            let path = self.cfg.dir.join(&name);
            match std::fs::remove_file(&path) {
                Ok(()) => deleted += 1,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(anyhow::Error::new(e)
                        .context(format!("cannot delete the old snapshot {}", path.display())));
                }
            }
            self.files.pop_front();
            self.used = self.used.saturating_sub(size);
        }
        self.counts.deleted += deleted as u64;
        Ok(deleted)
    }

    /// Encodes, makes room and writes one snapshot; returns bytes and deletions.
    fn save(&mut self, view: &FrameView<'_>, path: &Path) -> Result<(u64, u32)> {
        let png = self.encode(view).context("rendering the snapshot")?;
        let n = png.len() as u64;
        if n > self.cfg.budget_bytes {
            anyhow::bail!(
                "a snapshot of {n} bytes does not fit in the budget of {} bytes",
                self.cfg.budget_bytes
            );
        }
        let deleted = self.make_room(n)?;
        (self.writer)(path, &png)?;
        Ok((n, deleted))
    }
}

impl Observer for Snapshotter {
    fn needs_map(&self) -> bool {
        true
    }

    fn frame(&mut self, view: &FrameView<'_>, sink: &mut dyn EventSink) -> Result<Control> {
        // Buffers are sized on the first frame, so the first snapshot does
        // not have to allocate them.
        self.image.prepare(view);
        let Some(report) = view.report else {
            return Ok(Control::Continue);
        };
        let now = Instant::now();
        if self.retry_at.is_some_and(|at| now < at) {
            self.counts.skipped += 1;
            return Ok(Control::Continue);
        }
        let kind = if view.transition == Transition::Start {
            "start"
        } else {
            "update"
        };
        let (frame, t) = (report.frame, report.t);
        let name = snapshot_name(&report.time, frame, kind);
        let path = self.cfg.dir.join(&name);
        match self.save(view, &path) {
            Ok((bytes, deleted)) => {
                if let Some(i) = self.files.iter().position(|f| f.0 == name) {
                    // the same name again (same millisecond): replaced
                    if let Some((_, old)) = self.files.remove(i) {
                        self.used = self.used.saturating_sub(old);
                    }
                }
                self.files.push_back((name, bytes));
                self.used += bytes;
                self.counts.written += 1;
                self.retry_at = None;
                self.retry.reset();
                sink.emit(&Event::Snapshot {
                    time: now_rfc3339(),
                    t,
                    frame,
                    anomaly: kind.to_string(),
                    path: path.display().to_string(),
                    bytes,
                    deleted,
                })?;
            }
            Err(e) => {
                self.counts.failed += 1;
                let wait = self.retry.next_wait();
                self.retry_at = Some(now + wait);
                sink.emit(&Event::SnapshotError {
                    time: now_rfc3339(),
                    t,
                    frame,
                    path: path.display().to_string(),
                    reason: format!("{e:#}"),
                    disk_full: is_disk_full(&e),
                    retry_in_s: wait.as_secs_f64(),
                })?;
            }
        }
        Ok(Control::Continue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::heat::HeatField;

    #[test]
    fn names_round_trip_and_foreign_names_are_refused() {
        let n = snapshot_name("2026-11-25T17:36:01.123Z", 1234, "start");
        assert_eq!(n, "snapshot-20261125T173601.123Z-f0000001234-start.png");
        assert!(is_snapshot_name(&n));
        assert!(is_snapshot_name(&snapshot_name(
            "2026-01-02T03:04:05.006Z",
            7,
            "update"
        )));
        for bad in [
            "snapshot-20261125T173601.123Z-f0000001234-start.png.tmp",
            ".snapshot-20261125T173601.123Z-f0000001234-start.png.tmp-12",
            "snapshot-20261125T173601.123Z-f0000001234-end.png",
            "snapshot-2026112XT173601.123Z-f0000001234-start.png",
            "snapshot-20261125T173601.123Z-0000001234-start.png",
            "snapshot-20261125T173601.123Z-f-start.png",
            "holiday.png",
            "snapshot-.png",
        ] {
            assert!(!is_snapshot_name(bad), "{bad}");
        }
    }

    #[test]
    fn overlay_maps_model_pixels_onto_the_frame() {
        // A 8×4 model, hot in its 3 right columns, on a 32×32 frame.
        for fit in [Fit::Crop, Fit::Letterbox] {
            let (mw, mh) = (8, 4);
            let mut o = Overlay::default();
            o.prepare(32, 32, mw, mh, fit);
            let map: Vec<f32> = (0..mw * mh)
                .map(|i| if i % mw >= 5 { 100.0 } else { 0.0 })
                .collect();
            let mut field = HeatField::new(mw, mh);
            let heat = field.compute(&map, mw, mh, Some(1.0));
            let data = vec![128u8; 32 * 32];
            let f = FrameRef::new(32, 32, PixelFormat::Gray8, &data).unwrap();
            o.render(f, mw, Some(heat));
            let px = |x: usize, y: usize| {
                let i = (y * 32 + x) * 3;
                [o.rgb[i], o.rgb[i + 1], o.rgb[i + 2]]
            };
            // the right edge is hot (red), the left edge untouched
            let right = px(30, 16);
            assert!(right[0] > 200 && right[2] < 80, "{fit:?} {right:?}");
            assert_eq!(px(1, 16), [128; 3], "{fit:?}");
            match fit {
                // crop: 32×16 band in the middle; rows outside are dimmed
                Fit::Crop => assert_eq!(px(1, 2), [51; 3]),
                // letterbox: everything is seen
                Fit::Letterbox => assert_eq!(px(1, 2), [128; 3]),
            }
        }
    }

    /// One heatmap scale: the live window's heatmap panel and a snapshot
    /// colour every pixel of the same map alike (over the same, black,
    /// picture).
    #[test]
    fn the_window_and_a_snapshot_colour_the_same_map_the_same_way() {
        use crate::display::render::{LatentRanges, RenderConfig, Renderer, Scene};
        let (mw, mh) = (8, 8);
        // a floor of 0.5 nats, 8 nats in the lower right, 3 in a corner
        let map: Vec<f32> = (0..mw * mh)
            .map(|i| match (i % mw, i / mw) {
                (x, y) if x >= 4 && y >= 4 => 8.0,
                (0, 0) => 3.0,
                _ => 0.5,
            })
            .collect();
        let mut field = HeatField::new(mw, mh);
        let heat = field.compute(&map, mw, mh, Some(0.5)).to_vec();
        let levels: std::collections::BTreeSet<u32> = heat.iter().map(|h| h.to_bits()).collect();
        assert!(levels.len() >= 4, "{heat:?}");

        // the snapshot of a black frame the model sees one to one
        let mut o = Overlay::default();
        o.prepare(mw, mh, mw, mh, Fit::Letterbox);
        let black = vec![0u8; mw * mh];
        let f = FrameRef::new(mw, mh, PixelFormat::Gray8, &black).unwrap();
        o.render(f, mw, Some(&heat));

        // the window over a black model input
        let z = 2;
        let mut rd = Renderer::new(RenderConfig {
            hint: "",
            channels: 1,
            height: mh,
            width: mw,
            latents: LatentRanges {
                mean: vec![0.0; z],
                std: vec![1.0; z],
                low: vec![-1.0; z],
                high: vec![1.0; z],
                active: vec![true; z],
                names: vec![],
            },
            method: crate::score::Method::Recon,
            tiles: None,
        });
        let input = vec![0.0f32; mw * mh];
        let (mu, kl) = (vec![0.0f32; z], vec![0.0f32; z]);
        rd.draw(&Scene {
            index: 0,
            frame: f,
            input: &input,
            recon: Some(&input),
            heat: Some(&heat),
            mu: &mu,
            kl: &kl,
            score: 1.0,
            threshold: 1.0,
            ratio: 1.0,
            in_episode: false,
            fps: 0.0,
            hot_tiles: 0,
        });
        let panel = rd.layout().heatmap.fit(mw, mh);
        let (cw, ch) = (panel.w / mw, panel.h / mh);
        for y in 0..mh {
            for x in 0..mw {
                let (r, g, b) = crate::display::canvas::channels(
                    rd.canvas()
                        .get(panel.x + x * cw + cw / 2, panel.y + y * ch + ch / 2),
                );
                let i = (y * mw + x) * 3;
                assert_eq!(
                    [r, g, b],
                    [o.rgb[i], o.rgb[i + 1], o.rgb[i + 2]],
                    "model pixel {x},{y}, heat {}",
                    heat[y * mw + x]
                );
            }
        }
    }

    #[test]
    fn disk_full_is_recognised() {
        let e = anyhow::Error::new(std::io::Error::from_raw_os_error(28)).context("cannot write");
        assert!(is_disk_full(&e));
        let e = anyhow::Error::new(std::io::Error::from(std::io::ErrorKind::PermissionDenied));
        assert!(!is_disk_full(&e));
    }
}
