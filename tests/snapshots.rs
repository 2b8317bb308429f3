//! Snapshots of anomalous frames: written on anomaly events (rate-limited
//! with them), at the frame's size, hot where the anomaly is, within the
//! disk budget, and a failing disk is reported while the loop goes on.

mod common;

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bvae::Model;
use bvae::calibrate::Profile;
use bvae::frame::{Frame, PixelFormat};
use bvae::imageio::load_image;
use bvae::live::events::Event;
use bvae::live::observe::Observer;
use bvae::live::snapshot::{SnapshotConfig, Snapshotter, is_snapshot_name};
use bvae::live::{LiveConfig, Summary, capture::Backoff, run_with};
use bvae::source::{FrameInfo, FrameSource, SourceError};
use common::{data, model};

/// Frame size: the 64×64 dSprites image is scaled ×1.875 into the centred
/// 120×120 square, which is what the profile's centre crop keeps.
const FW: usize = 180;
const FH: usize = 120;
/// The occluding block, in frame pixels: x, y, side.
const BLOCK: (usize, usize, usize) = (96, 24, 40);

/// Normal frames, then frames with a white block, then normal again.
struct Scripted {
    frames: Vec<Frame>,
    at: usize,
}

impl FrameSource for Scripted {
    fn describe(&self) -> String {
        "scripted snapshot test source".into()
    }
    fn open(&mut self) -> Result<(), SourceError> {
        Ok(())
    }
    fn next_frame(&mut self, frame: &mut Frame) -> Result<FrameInfo, SourceError> {
        let Some(f) = self.frames.get(self.at) else {
            return Err(SourceError::Ended);
        };
        frame.clone_from(f);
        self.at += 1;
        std::thread::sleep(Duration::from_millis(8));
        Ok(FrameInfo::unlabelled(self.at as u64 - 1))
    }
}

/// dSprites image `i` in a 180×120 frame; the side bands the crop drops
/// are black with a white square (away from the crop's edge, so the
/// resize filter does not bleed it into the model's view).
fn frame(i: usize, block: bool) -> Frame {
    let img = load_image(&data("dsprites_normal").join(format!("{i:04}.png"))).unwrap();
    assert_eq!((img.width, img.height), (64, 64));
    let mut data = vec![0u8; FW * FH];
    for y in 0..FH {
        for x in 0..FW {
            data[y * FW + x] = if (30..150).contains(&x) {
                img.data[(y * 64 / 120) * 64 + (x - 30) * 64 / 120]
            } else if (6..24).contains(&(x % 156)) && (50..70).contains(&y) {
                255
            } else {
                0
            };
        }
    }
    if block {
        let (bx, by, s) = BLOCK;
        for y in by..by + s {
            data[y * FW + bx..y * FW + bx + s].fill(255);
        }
    }
    Frame {
        width: FW,
        height: FH,
        format: PixelFormat::Gray8,
        data,
    }
}

/// 30 normal frames, `anomalous` frames with the block, 30 normal ones.
fn script(anomalous: usize) -> Box<dyn FrameSource> {
    let mut frames: Vec<Frame> = (0..30).map(|i| frame(i, false)).collect();
    frames.extend((0..anomalous).map(|i| frame(30 + i, true)));
    frames.extend((0..30).map(|i| frame(200 + i, false)));
    Box::new(Scripted { frames, at: 0 })
}

fn setup() -> (Model, Profile) {
    let m = Model::load(model("dsprites.onnx")).unwrap();
    let p = Profile::load(&model("dsprites.calibration.json"), &m).unwrap();
    (m, p)
}

fn config(p: &Profile, update_ms: u64) -> LiveConfig {
    let mut c = LiveConfig::for_profile(p);
    c.update_interval = Duration::from_millis(update_ms);
    c.stall_timeout = Duration::from_secs(5);
    c.stats_interval = Duration::from_secs(60);
    c.backoff = Backoff {
        initial: Duration::from_millis(10),
        max: Duration::from_millis(50),
    };
    c.max_duration = Some(Duration::from_secs(60));
    c
}

fn run(
    m: &Model,
    p: &Profile,
    anomalous: usize,
    update_ms: u64,
    snap: &mut Snapshotter,
) -> (Summary, Vec<Event>) {
    let mut events: Vec<Event> = vec![];
    let observers: &mut [&mut dyn Observer] = &mut [snap];
    let s = run_with(
        m,
        p,
        script(anomalous),
        &config(p, update_ms),
        &mut events,
        &AtomicBool::new(false),
        observers,
    )
    .unwrap();
    (s, events)
}

fn snapshot_files(dir: &Path) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| is_snapshot_name(&e.file_name().to_string_lossy()))
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                e.metadata().unwrap().len(),
            )
        })
        .collect();
    v.sort();
    v
}

/// (frame, t) of every anomaly_start / anomaly_update.
fn reports(events: &[Event]) -> Vec<(u64, f64)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::AnomalyStart(r) | Event::AnomalyUpdate(r) => Some((r.frame, r.t)),
            _ => None,
        })
        .collect()
}

/// (frame, t, path, bytes, deleted) of every snapshot event.
fn snapshots(events: &[Event]) -> Vec<(u64, f64, String, u64, u32)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Snapshot {
                frame,
                t,
                path,
                bytes,
                deleted,
                ..
            } => Some((*frame, *t, path.clone(), *bytes, *deleted)),
            _ => None,
        })
        .collect()
}

fn errors(events: &[Event]) -> Vec<(String, bool, f64)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::SnapshotError {
                reason,
                disk_full,
                retry_in_s,
                ..
            } => Some((reason.clone(), *disk_full, *retry_in_s)),
            _ => None,
        })
        .collect()
}

/// Whether a pixel of an RGB frame is coloured hot (red or orange).
fn hot(f: &Frame, x: usize, y: usize) -> bool {
    let i = (y * f.width + x) * 3;
    let (r, g, b) = (f.data[i] as i32, f.data[i + 1] as i32, f.data[i + 2] as i32);
    r > 150 && r > g + 60 && r > b + 60
}

/// Fractions of hot pixels inside the block and in the rest of the
/// region the model sees (the centred 120×120 square).
fn hot_fractions(f: &Frame) -> (f64, f64) {
    let (bx, by, side) = BLOCK;
    let (mut inside, mut outside, mut n_out) = (0usize, 0usize, 0usize);
    for y in 0..FH {
        for x in 30..150 {
            let in_block = (bx..bx + side).contains(&x) && (by..by + side).contains(&y);
            if in_block {
                inside += hot(f, x, y) as usize;
            } else {
                outside += hot(f, x, y) as usize;
                n_out += 1;
            }
        }
    }
    (
        inside as f64 / (side * side) as f64,
        outside as f64 / n_out as f64,
    )
}

#[test]
fn anomalies_are_snapshotted_with_a_hot_overlay_where_the_anomaly_is() {
    let (m, p) = setup();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("snaps");
    let mut snap = Snapshotter::new(SnapshotConfig::new(&out)).unwrap();
    let update_ms = 60;
    let (s, events) = run(&m, &p, 60, update_ms, &mut snap);
    let reps = reports(&events);
    let snaps = snapshots(&events);
    assert!(s.anomalies >= 1, "{s:?}");
    assert!(reps.len() >= 2, "a start and at least one update: {reps:?}");
    // One snapshot per anomaly event, no more: the rate limit of the events.
    assert_eq!(
        snaps.iter().map(|s| s.0).collect::<Vec<_>>(),
        reps.iter().map(|r| r.0).collect::<Vec<_>>()
    );
    for w in snaps.windows(2) {
        assert!(
            // `t` is taken after scoring, the interval is measured from
            // frame arrival: allow for the jitter of a frame's work on a
            // busy machine.
            w[1].1 - w[0].1 >= update_ms as f64 / 2000.0,
            "snapshots closer than the update interval: {snaps:?}"
        );
    }
    assert_eq!(snap.counts().written as usize, snaps.len());
    let files = snapshot_files(&out);
    assert_eq!(files.len(), snaps.len(), "{files:?}");
    assert!(files[0].0.ends_with("-start.png"), "{files:?}");
    assert!(files[1..].iter().all(|f| f.0.ends_with("-update.png")));
    // No temporary files are left behind.
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), files.len());

    // The PNG decodes at the frame's size.
    let img = load_image(Path::new(&snaps[0].2)).unwrap();
    assert_eq!(
        (img.width, img.height, img.format),
        (FW, FH, PixelFormat::Rgb8)
    );
    if let Ok(keep) = std::env::var("BVAE_KEEP_SNAPSHOTS") {
        for s in &snaps {
            let name = Path::new(&s.2).file_name().unwrap();
            std::fs::copy(&s.2, Path::new(&keep).join(name)).unwrap();
        }
    }
    // In every snapshot, much of the block is hot and little of the rest
    // is. (Not all of the block: the model's reconstruction of a frame
    // with a block is a white blob that covers part of it. And the sprite
    // may be hot too, since that reconstruction misses it.)
    let with_block = snaps.iter().filter(|s| (30..90).contains(&s.0));
    assert!(with_block.clone().count() >= 2, "{snaps:?}");
    for s in with_block {
        let (inside, outside) = hot_fractions(&load_image(Path::new(&s.2)).unwrap());
        eprintln!(
            "frame {}: hot pixels: {inside:.2} of the block, {outside:.2} of the rest",
            s.0
        );
        assert!(inside > 0.25, "the block is not hot: {inside}");
        assert!(
            inside > 2.5 * outside,
            "too much is hot outside the block: {outside} vs {inside}"
        );
    }
    // The side bands the crop drops are dimmed, not coloured: gray stays gray.
    let band = &img.data[(60 * FW + 10) * 3..(60 * FW + 10) * 3 + 3];
    assert_eq!(band, [101; 3], "255 dimmed to 40 %");
}

#[test]
fn the_budget_deletes_the_oldest_snapshots_and_only_ours() {
    let (m, p) = setup();
    let dir = tempfile::tempdir().unwrap();
    // How big is one snapshot?
    let probe = dir.path().join("probe");
    let mut snap = Snapshotter::new(SnapshotConfig::new(&probe)).unwrap();
    let (_, events) = run(&m, &p, 40, 40, &mut snap);
    let biggest = snapshots(&events).iter().map(|s| s.3).max().unwrap();

    let out = dir.path().join("snaps");
    std::fs::create_dir(&out).unwrap();
    // An old snapshot of an earlier run, and files that are not ours.
    let old = "snapshot-20000101T000000.000Z-f0000000001-start.png";
    std::fs::write(out.join(old), vec![0u8; biggest as usize]).unwrap();
    std::fs::write(out.join("holiday.png"), vec![1u8; 3 * biggest as usize]).unwrap();
    std::fs::write(out.join("notes.txt"), b"keep me").unwrap();
    let budget = biggest * 5 / 2; // room for two
    let mut cfg = SnapshotConfig::new(&out);
    cfg.budget_bytes = budget;
    let mut snap = Snapshotter::new(cfg).unwrap();
    assert_eq!(snap.used_bytes(), biggest, "the old snapshot counts");
    let (s, events) = run(&m, &p, 60, 40, &mut snap);
    let snaps = snapshots(&events);
    assert!(snaps.len() >= 4, "{snaps:?} {s:?}");
    assert!(errors(&events).is_empty(), "{events:?}");
    let files = snapshot_files(&out);
    let total: u64 = files.iter().map(|f| f.1).sum();
    assert!(total <= budget, "{total} > {budget}: {files:?}");
    assert!(files.len() < snaps.len(), "{files:?}");
    // The newest survive, the old one went first.
    let newest = Path::new(&snaps.last().unwrap().2).file_name().unwrap();
    assert_eq!(files.last().unwrap().0, newest.to_string_lossy());
    assert!(!out.join(old).exists());
    // Every snapshot (and the old one) is either still there or was deleted.
    let deleted: u32 = snaps.iter().map(|s| s.4).sum();
    assert_eq!(deleted as usize, snaps.len() + 1 - files.len());
    assert_eq!(snap.counts().deleted, deleted as u64);
    assert_eq!(std::fs::read(out.join("notes.txt")).unwrap(), b"keep me");
    assert!(out.join("holiday.png").exists());
}

#[test]
fn a_full_disk_is_reported_with_backoff_and_the_loop_goes_on() {
    let (m, p) = setup();
    let dir = tempfile::tempdir().unwrap();
    let calls = Arc::new(Mutex::new(0u32));
    let c = calls.clone();
    let mut cfg = SnapshotConfig::new(dir.path());
    cfg.retry_initial = Duration::from_millis(150);
    cfg.retry_max = Duration::from_secs(10);
    // The first write fails with ENOSPC, later ones succeed.
    let mut snap =
        Snapshotter::new(cfg)
            .unwrap()
            .with_writer(Box::new(move |path: &Path, bytes: &[u8]| {
                let mut n = c.lock().unwrap();
                *n += 1;
                if *n == 1 {
                    Err(anyhow::Error::new(std::io::Error::from_raw_os_error(28))
                        .context(format!("cannot write {}", path.display())))
                } else {
                    bvae::imageio::write_atomic(path, bytes)
                }
            }));
    let (s, events) = run(&m, &p, 80, 30, &mut snap);
    let errs = errors(&events);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].1, "disk_full: {errs:?}");
    assert!(errs[0].0.contains("No space left"), "{errs:?}");
    assert!((errs[0].2 - 0.15).abs() < 1e-9);
    // Updates during the backoff were skipped, not retried each time.
    let c = snap.counts();
    assert!(c.skipped >= 1, "{c:?}");
    assert!(c.written >= 1, "snapshots resume after the backoff: {c:?}");
    assert_eq!(
        c.written + c.failed + c.skipped,
        reports(&events).len() as u64
    );
    // The loop ran to the end of the source and closed the episode.
    assert!(events.iter().any(|e| matches!(e, Event::AnomalyEnd { .. })));
    assert_eq!(s.processed + s.dropped, 140, "{s:?}");
}

#[test]
fn an_unwritable_folder_is_reported_and_the_loop_goes_on() {
    let (m, p) = setup();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("snaps");
    let mut snap = Snapshotter::new(SnapshotConfig::new(&out)).unwrap();
    // The folder vanishes and a file takes its place (works as root too,
    // unlike a read-only folder).
    std::fs::remove_dir(&out).unwrap();
    std::fs::write(&out, b"not a folder").unwrap();
    let (s, events) = run(&m, &p, 60, 40, &mut snap);
    let errs = errors(&events);
    assert_eq!(
        errs.len(),
        1,
        "one failure, then the 10 s backoff: {errs:?}"
    );
    assert!(!errs[0].1, "not a full disk: {errs:?}");
    assert!(errs[0].0.contains("cannot create"), "{errs:?}");
    assert!(snapshots(&events).is_empty());
    assert!(events.iter().any(|e| matches!(e, Event::AnomalyEnd { .. })));
    assert_eq!(s.processed + s.dropped, 120, "{s:?}");
}

#[test]
fn a_folder_that_is_a_file_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("file");
    std::fs::write(&f, b"x").unwrap();
    let e = Snapshotter::new(SnapshotConfig::new(&f)).unwrap_err();
    assert!(format!("{e:#}").contains("cannot create the snapshot folder"));
}

#[test]
fn watch_takes_snapshots_from_flags_and_from_its_toml_file() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.jsonl");
    // The dSprites model finds the synthetic scene's gray background
    // anomalous: every frame is an anomaly here.
    let source = "synthetic:seed=5,fps=0".to_string();
    let m = model("dsprites.onnx");
    let c = model("dsprites.calibration.json");
    let args = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = [
            "watch",
            common::s(&m),
            "-c",
            common::s(&c),
            "--source",
            &source,
            "--update-interval",
            "0",
            "--max-frames",
            "30",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let a = args(&["--snapshots", "snaps", "--events", common::s(&events)]);
    let run = common::bvae(
        dir.path(),
        &a.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
    );
    run.ok();
    assert!(run.stderr.contains("snapshots: "), "{}", run.stderr);
    let text = std::fs::read_to_string(&events).unwrap();
    let snaps: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["type"] == "snapshot")
        .collect();
    assert!(!snaps.is_empty(), "{text}");
    for s in &snaps {
        let p = dir.path().join(s["path"].as_str().unwrap());
        let img = load_image(&p).unwrap();
        assert_eq!((img.width, img.height), (320, 240));
        assert_eq!(
            std::fs::metadata(&p).unwrap().len(),
            s["bytes"].as_u64().unwrap()
        );
    }
    assert_eq!(snapshot_files(&dir.path().join("snaps")).len(), snaps.len());

    // From the TOML file, with a budget of 30 kB.
    let cfg = dir.path().join("watch.toml");
    std::fs::write(
        &cfg,
        "snapshots = \"from_toml\"\nsnapshot_budget_mb = 0.03\n",
    )
    .unwrap();
    let a = args(&["--config", common::s(&cfg)]);
    let run = common::bvae(
        dir.path(),
        &a.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
    );
    run.ok();
    let files = snapshot_files(&dir.path().join("from_toml"));
    assert!(!files.is_empty());
    assert!(
        files.iter().map(|f| f.1).sum::<u64>() <= 30_000,
        "{files:?}"
    );
    assert!(run.stderr.contains("old ones deleted"), "{}", run.stderr);

    // A budget without a folder, a bad budget, a folder that is a file.
    let a = args(&["--snapshot-budget-mb", "5"]);
    common::bvae(
        dir.path(),
        &a.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
    )
    .fails_with(&["--snapshot-budget-mb needs --snapshots"]);
    let a = args(&["--snapshots", "snaps", "--snapshot-budget-mb", "0"]);
    common::bvae(
        dir.path(),
        &a.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
    )
    .fails_with(&["--snapshot-budget-mb must be"]);
    let a = args(&["--snapshots", "watch.toml"]);
    common::bvae(
        dir.path(),
        &a.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
    )
    .fails_with(&["cannot create the snapshot folder"]);
}
