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
//! # The heatmap scale
//!
//! The map is the per-pixel NLL of the model input, box-blurred over a
//! few pixels (radius = shorter side / 32, 2 px for a 64×64 model) so that
//! anomalous *areas* stand out from the thin sprite edges a blurry decoder
//! always misses a little. From each blurred value the frame's median
//! pixel NLL is subtracted (the floor every pixel pays: under a Bernoulli
//! likelihood a gray background costs its entropy even when perfectly
//! reconstructed), and the excess is divided by the `recon` threshold of
//! the profile, the *mean* per-pixel NLL at which a whole frame counts as
//! anomalous. So a ratio of 1 means "this neighbourhood costs one whole
//! anomalous frame's worth per pixel more than the frame's typical pixel".
//! Ratios ≤ 1 are transparent; above, the colour runs on a log scale from
//! cool (blue, ratio just above 1) through cyan, green and yellow to hot
//! (red, ratio ≥ 16), and the opacity rises with it (up to 75 %). When the
//! profile has no `recon` threshold the frame's own mean pixel NLL is the
//! reference instead. An anomaly that covers the whole frame (a noise
//! burst, a frozen camera) raises the median with it and shows little
//! heat: there is nothing to localise.
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

use super::decide::Transition;
use super::events::{Event, EventSink, now_rfc3339};
use super::observe::{Control, FrameView, Observer};
use crate::frame::{FrameRef, PixelFormat};
use crate::imageio::{encode_png, write_atomic};
use crate::preprocess::{Fit, Geometry};
use crate::score::Method;

/// Default disk budget: 100 MB.
pub const DEFAULT_BUDGET_BYTES: u64 = 100_000_000;
/// Ratio to the threshold at which the colour map is fully hot.
pub const HOT_RATIO: f32 = 16.0;
/// Most opacity of the overlay (at the hot end).
const MAX_ALPHA: f32 = 0.75;
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

/// Colour and opacity of the overlay for a heat value `t` in [0, 1].
fn colour(t: f32) -> ([u8; 3], f32) {
    const STOPS: [[f32; 3]; 5] = [
        [40.0, 70.0, 255.0], // blue
        [0.0, 190.0, 255.0], // cyan
        [60.0, 230.0, 60.0], // green
        [255.0, 210.0, 0.0], // yellow
        [255.0, 30.0, 0.0],  // red
    ];
    let t = t.clamp(0.0, 1.0);
    let x = t * (STOPS.len() - 1) as f32;
    let i = (x.floor() as usize).min(STOPS.len() - 2);
    let f = x - i as f32;
    let mut c = [0u8; 3];
    for (k, v) in c.iter_mut().enumerate() {
        *v = (STOPS[i][k] + (STOPS[i + 1][k] - STOPS[i][k]) * f).round() as u8;
    }
    (c, if t > 0.0 { MAX_ALPHA * t.sqrt() } else { 0.0 })
}

/// Heat in [0, 1] of a ratio to the threshold: 0 at ≤ 1, 1 at ≥ [`HOT_RATIO`].
pub fn heat(ratio: f32) -> f32 {
    if ratio.is_nan() || ratio <= 1.0 {
        0.0
    } else {
        (ratio.ln() / HOT_RATIO.ln()).min(1.0)
    }
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
    /// coordinate to a model coordinate, `lo..lo+len` is the filled model
    /// range, `sees` says whether the frame coordinate is seen.
    fn fill(
        &mut self,
        n: usize,
        lo: usize,
        len: usize,
        to_model: impl Fn(f64) -> f64,
        sees: impl Fn(f64) -> bool,
    ) {
        self.i0.clear();
        self.i1.clear();
        self.w.clear();
        self.seen.clear();
        let hi = (lo + len.max(1) - 1) as f64;
        for i in 0..n {
            let c = i as f64 + 0.5;
            let m = (to_model(c) - 0.5).clamp(lo as f64, hi);
            let m0 = m.floor();
            self.i0.push(m0 as u32);
            self.i1.push((m0 + 1.0).min(hi) as u32);
            self.w.push((m - m0) as f32);
            self.seen.push(sees(c));
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
    /// Horizontally blurred map.
    tmp: Vec<f32>,
    /// Heat per model pixel.
    heat: Vec<f32>,
    /// Scratch copy of the map for its median.
    sorted: Vec<f32>,
    /// RGB output at frame size.
    rgb: Vec<u8>,
    /// Colour and alpha (of 256) per quantised heat value.
    lut: Vec<([u8; 3], u16)>,
}

impl Overlay {
    /// Makes sure every buffer fits a `fw`×`fh` frame and a `mw`×`mh` model;
    /// allocates only when a size changes.
    fn prepare(&mut self, fw: usize, fh: usize, mw: usize, mh: usize, fit: Fit) {
        if self.lut.is_empty() {
            self.lut = (0..256)
                .map(|q| {
                    let (c, a) = colour(q as f32 / 255.0);
                    (c, (a * 256.0).round() as u16)
                })
                .collect();
        }
        let key = (fw, fh, mw, mh, fit);
        if self.key == Some(key) {
            return;
        }
        let g = Geometry::new(fit, fw, fh, mw, mh);
        let (dx, dy, dw, dh) = g.dst;
        let (sx, sy, sw, sh) = g.src;
        self.xs.fill(
            fw,
            dx,
            dw,
            |x| g.frame_to_model(x, sy).0,
            |x| x >= sx && x <= sx + sw,
        );
        self.ys.fill(
            fh,
            dy,
            dh,
            |y| g.frame_to_model(sx, y).1,
            |y| y >= sy && y <= sy + sh,
        );
        self.tmp = vec![0.0; mw * mh];
        self.heat = vec![0.0; mw * mh];
        self.sorted = Vec::with_capacity(mw * mh);
        self.rgb = vec![0; fw * fh * 3];
        self.key = Some(key);
    }

    /// Computes the heat of every model pixel from the pixel map.
    fn heat_from_map(&mut self, map: &[f32], mw: usize, mh: usize, reference: f32) {
        let r = ((mw.min(mh) as f32 / 32.0).round() as usize).max(1);
        // Horizontal then vertical box blur, normalised at the borders.
        for y in 0..mh {
            let row = &map[y * mw..(y + 1) * mw];
            for x in 0..mw {
                let (a, b) = (x.saturating_sub(r), (x + r).min(mw - 1));
                let s: f32 = row[a..=b].iter().sum();
                self.tmp[y * mw + x] = s / (b - a + 1) as f32;
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
        let floor = if self.sorted.is_empty() {
            0.0
        } else {
            *self.sorted.select_nth_unstable_by(mid, f32::total_cmp).1
        };
        for y in 0..mh {
            let (a, b) = (y.saturating_sub(r), (y + r).min(mh - 1));
            for x in 0..mw {
                let mut s = 0.0;
                for yy in a..=b {
                    s += self.tmp[yy * mw + x];
                }
                self.heat[y * mw + x] = heat((s / (b - a + 1) as f32 - floor) * inv);
            }
        }
    }

    /// Draws the frame with the heat overlaid into `self.rgb`. Without a
    /// map (`with_heat` false) only the unseen region is dimmed.
    fn render(&mut self, frame: FrameRef<'_>, mw: usize, with_heat: bool) {
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
                } else if with_heat {
                    let (x0, x1, wx) =
                        (self.xs.i0[x] as usize, self.xs.i1[x] as usize, self.xs.w[x]);
                    let h = &self.heat;
                    let top = h[y0 * mw + x0] + (h[y0 * mw + x1] - h[y0 * mw + x0]) * wx;
                    let bottom = h[y1 * mw + x0] + (h[y1 * mw + x1] - h[y1 * mw + x0]) * wx;
                    let t = top + (bottom - top) * wy;
                    let (c, a) = self.lut[(t * 255.0).round().clamp(0.0, 255.0) as usize];
                    if a > 0 {
                        for k in 0..3 {
                            let v = px[k] as u16 * (256 - a) + c[k] as u16 * a;
                            px[k] = (v >> 8) as u8;
                        }
                    }
                }
                dst[x * 3..x * 3 + 3].copy_from_slice(&px);
            }
        }
    }
}

/// Saves anomalous frames with their heatmap (see the module docs).
pub struct Snapshotter {
    cfg: SnapshotConfig,
    writer: Writer,
    overlay: Overlay,
    /// Snapshots in the folder, oldest first: file name and size.
    files: VecDeque<(String, u64)>,
    used: u64,
    retry_at: Option<Instant>,
    retry_wait: Duration,
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
        let retry_wait = cfg.retry_initial;
        Ok(Snapshotter {
            cfg,
            writer: Box::new(|p: &Path, b: &[u8]| write_atomic(p, b)),
            overlay: Overlay::default(),
            files: files.into(),
            used,
            retry_at: None,
            retry_wait,
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

    /// Sizes the overlay buffers for the frame and model of `view`
    /// (allocates only when a size changes); returns the model's width and height.
    fn prepare(&mut self, view: &mut FrameView<'_>) -> (usize, usize) {
        let spec = view.pipeline.session_mut().plan().spec();
        let (mw, mh) = (spec.width, spec.height);
        let f = view.frame;
        self.overlay
            .prepare(f.width, f.height, mw, mh, view.profile.fit);
        (mw, mh)
    }

    /// Renders the frame of `view` with its heatmap and returns the PNG.
    fn encode(&mut self, view: &mut FrameView<'_>) -> Result<Vec<u8>> {
        let (mw, mh) = self.prepare(view);
        let f = view.frame;
        anyhow::ensure!(
            f.data.len() == f.width * f.height * f.format.bytes_per_pixel(),
            "the frame's buffer does not match its size"
        );
        let reference = view
            .profile
            .threshold_for(Method::Recon)
            .map(|t| t as f32)
            .filter(|t| *t > 0.0 && t.is_finite());
        let with_heat = match view.pipeline.pixel_map()? {
            Some(map) if map.len() == mw * mh => {
                let reference =
                    reference.unwrap_or_else(|| map.iter().sum::<f32>() / map.len().max(1) as f32);
                self.overlay.heat_from_map(map, mw, mh, reference);
                true
            }
            _ => false,
        };
        self.overlay.render(f, mw, with_heat);
        encode_png(
            f.width as u32,
            f.height as u32,
            PixelFormat::Rgb8,
            &self.overlay.rgb,
        )
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
    fn save(&mut self, view: &mut FrameView<'_>, path: &Path) -> Result<(u64, u32)> {
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
    fn needs_recon(&self) -> bool {
        true
    }

    fn frame(&mut self, view: &mut FrameView<'_>, sink: &mut dyn EventSink) -> Result<Control> {
        // Buffers are sized on the first frame, so the first snapshot does
        // not have to allocate them.
        self.prepare(view);
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
                self.retry_wait = self.cfg.retry_initial;
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
                let wait = self.retry_wait;
                self.retry_at = Some(now + wait);
                self.retry_wait = (wait * 2).min(self.cfg.retry_max.max(self.cfg.retry_initial));
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
    fn overlay_maps_model_pixels_onto_the_frame() {
        // A 8×4 model, hot in its 3 right columns, on a 32×32 frame.
        for fit in [Fit::Crop, Fit::Letterbox] {
            let (mw, mh) = (8, 4);
            let mut o = Overlay::default();
            o.prepare(32, 32, mw, mh, fit);
            let map: Vec<f32> = (0..mw * mh)
                .map(|i| if i % mw >= 5 { 100.0 } else { 0.0 })
                .collect();
            o.heat_from_map(&map, mw, mh, 1.0);
            let data = vec![128u8; 32 * 32];
            let f = FrameRef::new(32, 32, PixelFormat::Gray8, &data).unwrap();
            o.render(f, mw, true);
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

    #[test]
    fn disk_full_is_recognised() {
        let e = anyhow::Error::new(std::io::Error::from_raw_os_error(28)).context("cannot write");
        assert!(is_disk_full(&e));
        let e = anyhow::Error::new(std::io::Error::from(std::io::ErrorKind::PermissionDenied));
        assert!(!is_disk_full(&e));
    }
}
