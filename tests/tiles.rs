//! Tiles: a frame scored as a grid of model inputs, each tile with its own
//! calibration. The frames here are two dSprites images side by side, so
//! each tile of a 2×1 grid is one image exactly (no resampling) and the
//! tiled pipeline can be checked against the whole-image one.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use bvae::Model;
use bvae::calibrate::{CalibrateOptions, Profile, calibrate};
use bvae::frame::{Frame, PixelFormat};
use bvae::imageio::{encode_png, load_image};
use bvae::live::events::Event;
use bvae::live::{LiveConfig, capture::Backoff};
use bvae::model::PlanKind;
use bvae::pipeline::Pipeline;
use bvae::preprocess::Fit;
use bvae::score::Method;
use bvae::source::{FrameInfo, FrameSource, SourceError};
use bvae::tiles::Grid;
use common::{bvae, data, model, s};

/// Normal dSprites image `i`.
fn sprite(dir: &str, i: usize) -> Frame {
    assert_eq!(dir, "dsprites_normal");
    image(&format!("dsprites_normal/{i:04}.png"))
}

/// Anomalous dSprites image `i` (an occluding block).
fn anomalous(i: usize) -> Frame {
    image(&format!("dsprites_anomalous/block_{i:02}.png"))
}

fn image(name: &str) -> Frame {
    let f = load_image(&data(name)).unwrap();
    assert_eq!((f.width, f.height, f.format), (64, 64, PixelFormat::Gray8));
    f
}

/// `a` and `b` side by side: a 128×64 frame.
fn pair(a: &Frame, b: &Frame) -> Frame {
    let mut data = Vec::with_capacity(128 * 64);
    for y in 0..64 {
        data.extend_from_slice(&a.data[y * 64..(y + 1) * 64]);
        data.extend_from_slice(&b.data[y * 64..(y + 1) * 64]);
    }
    Frame {
        width: 128,
        height: 64,
        format: PixelFormat::Gray8,
        data,
    }
}

/// Writes `n` normal pairs (images 2i and 2i+1) to `dir`.
fn normal_pairs(dir: &Path, n: usize) -> Vec<PathBuf> {
    std::fs::create_dir_all(dir).unwrap();
    (0..n)
        .map(|i| {
            let f = pair(
                &sprite("dsprites_normal", 2 * i),
                &sprite("dsprites_normal", 2 * i + 1),
            );
            let path = dir.join(format!("{i:04}.png"));
            let png = encode_png(128, 64, PixelFormat::Gray8, &f.data).unwrap();
            std::fs::write(&path, png).unwrap();
            path
        })
        .collect()
}

fn tiled_profile(m: &Model, files: &[PathBuf]) -> Profile {
    let opts = CalibrateOptions {
        fpr: 0.05,
        fit: Fit::Crop,
        method: None,
        seed: 0,
        tiles: Some("2x1".parse().unwrap()),
        mask: None,
        noise_factor: bvae::calibrate::DEFAULT_NOISE_FACTOR,
    };
    calibrate(m, files, &opts, |_, _| {}).unwrap()
}

#[test]
fn each_tile_is_scored_by_its_own_calibration_and_the_frame_by_the_worst() {
    let m = Model::load(model("dsprites.onnx")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let files = normal_pairs(&dir.path().join("normal"), 60);
    let p = tiled_profile(&m, &files);
    let t = p.tiles.as_ref().expect("a tiled profile");
    assert_eq!(t.grid.to_string(), "2x1");
    assert_eq!(t.tiles.len(), 2);
    // the frame's sensor noise is checked once, by the shared profile
    assert!(p.noise.is_some());
    for tile in &t.tiles {
        assert_eq!(tile.frames, 60);
        assert_eq!(tile.method, p.method);
        assert!(tile.tiles.is_none());
        assert!(tile.noise.is_none());
    }
    for (m, f) in &t.frame_factor {
        assert!(*f >= 1.0 && f.is_finite(), "{m}: {f}");
    }
    assert!(t.frame_factor.contains_key(&p.method));
    // the tiles saw different images, so their statistics differ
    assert_ne!(
        t.tiles[0].latent.gaussian.mean,
        t.tiles[1].latent.gaussian.mean
    );

    // A frame with an anomalous image on the right.
    let (a, b) = (sprite("dsprites_normal", 500), anomalous(3));
    let frame = pair(&a, &b);
    let mut tiled = Pipeline::for_profile(&m, PlanKind::Full, &p, p.method).unwrap();
    let frame_scores = tiled.process(frame.as_ref()).unwrap();
    assert_eq!(tiled.image_spec().width, 128);
    assert_eq!(tiled.input().unwrap().len(), 128 * 64);
    let per_tile = tiled.tile_scores().unwrap().to_vec();

    // Each tile alone, through an ordinary pipeline with that tile's
    // calibration, gives the same scores.
    for (i, img) in [&a, &b].into_iter().enumerate() {
        let reference = t.tiles[i].reference().unwrap();
        let mut whole = Pipeline::new(&m, PlanKind::Full, Fit::Crop, Some(reference)).unwrap();
        let s = whole.process(img.as_ref()).unwrap();
        for method in Method::ALL {
            let (x, y) = (s.get(method).unwrap(), per_tile[i].get(method).unwrap());
            assert!(
                (x - y).abs() <= 1e-4 * x.abs().max(1.0),
                "tile {i} {method}: {x} alone, {y} in the grid"
            );
        }
    }
    // The frame's score is the largest ratio to the tile's own threshold.
    for method in Method::ALL {
        let ratios: Vec<f64> = (0..2)
            .map(|i| {
                per_tile[i].get(method).unwrap() as f64 / t.tiles[i].threshold_for(method).unwrap()
            })
            .collect();
        let max = ratios.iter().copied().fold(f64::MIN, f64::max);
        let got = frame_scores.get(method).unwrap() as f64;
        assert!(
            (got - max).abs() <= 1e-4 * max.abs().max(1.0),
            "{method}: {got} vs {max}"
        );
        assert_eq!(
            tiled.tile_ratio(1, method).map(|r| r as f32),
            Some(ratios[1] as f32)
        );
    }
    assert_eq!(p.decision_threshold(p.method), Some(1.0));
    let worst = tiled.worst_tile().unwrap();
    assert_eq!(
        worst, 1,
        "the anomalous image is on the right: {per_tile:?}"
    );
    assert!(tiled.tile_ratio(1, p.method).unwrap() > 1.0);
    // the latents shown are the worst tile's
    let mut right = Pipeline::new(&m, PlanKind::Full, Fit::Crop, None).unwrap();
    right.process(b.as_ref()).unwrap();
    let (mu_grid, mu_alone) = (tiled.mu().unwrap().to_vec(), right.mu().unwrap().to_vec());
    for (x, y) in mu_grid.iter().zip(&mu_alone) {
        assert!((x - y).abs() < 1e-4, "{mu_grid:?} vs {mu_alone:?}");
    }
}

#[test]
fn a_tiled_profile_round_trips_and_a_broken_one_is_refused() {
    let m = Model::load(model("dsprites.onnx")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let files = normal_pairs(&dir.path().join("normal"), 24);
    let p = tiled_profile(&m, &files);
    let path = dir.path().join("p.json");
    p.save(&path).unwrap();
    let back = Profile::load(&path, &m).unwrap();
    let (a, b) = (back.tiles.as_ref().unwrap(), p.tiles.as_ref().unwrap());
    assert_eq!(
        (a.grid, a.tiles.len(), back.method),
        (b.grid, b.tiles.len(), p.method)
    );
    for (x, y) in a.tiles.iter().zip(&b.tiles) {
        assert!((x.threshold - y.threshold).abs() <= 1e-12 * y.threshold.abs());
    }

    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    v["tiles"]["tiles"].as_array_mut().unwrap().pop();
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, v.to_string()).unwrap();
    let e = Profile::load(&bad, &m).unwrap_err().to_string();
    assert!(
        e.contains("2x1 grid has 2 tiles") && e.contains("calibrates 1"),
        "{e}"
    );

    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    v["tiles"]["grid"] = "9x1".into();
    std::fs::write(&bad, v.to_string()).unwrap();
    let e = Profile::load(&bad, &m).unwrap_err().to_string();
    assert!(e.contains("1 to 8 columns"), "{e}");

    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    v["tiles"]["tiles"][1]["latent"]["std"] = serde_json::json!([1.0]);
    std::fs::write(&bad, v.to_string()).unwrap();
    let e = Profile::load(&bad, &m).unwrap_err().to_string();
    assert!(e.contains("tile 1") && e.contains("latent.std"), "{e}");
}

/// Normal pairs, then pairs with an anomalous right image, then normal.
struct Script {
    frames: Vec<Frame>,
    at: usize,
}

impl FrameSource for Script {
    fn describe(&self) -> String {
        "scripted tiles test source".into()
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
        std::thread::sleep(Duration::from_millis(5));
        Ok(FrameInfo::unlabelled(self.at as u64 - 1))
    }
}

#[test]
fn events_name_the_anomalous_tile_and_cli_score_reports_it() {
    let m = Model::load(model("dsprites.onnx")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let files = normal_pairs(&dir.path().join("normal"), 60);
    let p = tiled_profile(&m, &files);
    let mut frames = vec![];
    for i in 0..30 {
        let right = if (10..20).contains(&i) {
            anomalous(i)
        } else {
            sprite("dsprites_normal", 400 + i)
        };
        frames.push(pair(&sprite("dsprites_normal", 300 + i), &right));
    }
    let mut cfg = LiveConfig::for_profile(&p);
    assert_eq!(cfg.threshold, 1.0);
    cfg.stall_timeout = Duration::from_secs(5);
    cfg.stats_interval = Duration::from_secs(60);
    cfg.backoff = Backoff {
        initial: Duration::from_millis(10),
        max: Duration::from_millis(50),
    };
    cfg.max_duration = Some(Duration::from_secs(60));
    let mut events: Vec<Event> = vec![];
    bvae::live::run(
        &m,
        &p,
        Box::new(Script { frames, at: 0 }),
        &cfg,
        &mut events,
        &AtomicBool::new(false),
    )
    .unwrap();
    let starts: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::AnomalyStart(r) => Some(r),
            _ => None,
        })
        .collect();
    assert!(!starts.is_empty(), "no anomaly raised: {events:?}");
    let r = starts[0];
    assert!((10..22).contains(&r.frame), "{r:?}");
    assert_eq!(r.threshold, 1.0);
    let first = r.tiles.first().expect("the anomalous tile is named");
    assert_eq!((first.tile, first.col, first.row), (1, 1, 0), "{r:?}");
    assert!(
        first.ratio > 1.0 && (first.ratio - r.ratio).abs() < 1e-5 * r.ratio,
        "{r:?}"
    );
    let json = serde_json::to_value(Event::AnomalyStart(r.clone())).unwrap();
    assert_eq!(json["tiles"][0]["tile"], 1);

    // `bvae score` with the tiled profile names the worst tile too.
    let profile = dir.path().join("p.json");
    p.save(&profile).unwrap();
    let frame = pair(&sprite("dsprites_normal", 550), &anomalous(5));
    let img = dir.path().join("anomalous.png");
    std::fs::write(
        &img,
        encode_png(128, 64, PixelFormat::Gray8, &frame.data).unwrap(),
    )
    .unwrap();
    let run = bvae(
        dir.path(),
        &[
            "score",
            s(&model("dsprites.onnx")),
            s(&img),
            "-c",
            s(&profile),
            "--json",
        ],
    );
    let v: serde_json::Value = serde_json::from_str(run.ok().trim()).unwrap();
    assert_eq!(v["decision"]["tile"], 1, "{v}");
    assert_eq!(v["decision"]["threshold"], 1.0, "{v}");
    assert_eq!(v["decision"]["anomalous"], true, "{v}");
}

#[test]
fn grids_parse_and_bound_their_sides() {
    let g: Grid = "4x3".parse().unwrap();
    assert_eq!((g.cols(), g.rows(), g.count()), (4, 3, 12));
    assert_eq!(g.cell(5), (1, 1));
    assert_eq!(g.to_string(), "4x3");
    for bad in ["4", "0x3", "9x1", "ax2", "4x3x2", ""] {
        assert!(bad.parse::<Grid>().is_err(), "{bad}");
    }
    // a 640×480 frame in a 4×3 grid of 64×64 tiles: 160-pixel squares
    let spec = Model::load(model("dsprites.onnx")).unwrap().spec().clone();
    assert_eq!(
        g.frame_rect(Fit::Crop, 640, 480, &spec, 5),
        (160, 160, 160, 160)
    );
    assert_eq!(
        g.frame_rect(Fit::Crop, 640, 480, &spec, 11),
        (480, 320, 160, 160)
    );
    // a wider frame is cropped to the grid's aspect first
    assert_eq!(
        g.frame_rect(Fit::Crop, 800, 480, &spec, 0),
        (80, 0, 160, 160)
    );
}

/// Paints a white square of side `side` at (`x`, `y`) of a gray frame.
fn paint(f: &Frame, x: usize, y: usize, side: usize) -> Frame {
    let mut g = f.clone();
    for yy in y..y + side {
        for xx in x..x + side {
            g.data[yy * f.width + xx] = 255;
        }
    }
    g
}

#[test]
fn what_happens_under_the_mask_changes_no_score_and_no_heat() {
    let m = Model::load(model("dsprites.onnx")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // the right half of the frame is masked
    let mask_file = dir.path().join("mask.toml");
    std::fs::write(
        &mask_file,
        "polygons = [[[0.5, 0.0], [1.0, 0.0], [1.0, 1.0], [0.5, 1.0]]]\n",
    )
    .unwrap();
    let mask = bvae::mask::Mask::load(&mask_file).unwrap();
    let files = normal_pairs(&dir.path().join("normal"), 40);
    for tiles in [None, Some("2x1".parse::<Grid>().unwrap())] {
        let opts = CalibrateOptions {
            fpr: 0.05,
            fit: Fit::Crop,
            method: None,
            seed: 0,
            tiles,
            mask: Some(mask.clone()),
            noise_factor: bvae::calibrate::DEFAULT_NOISE_FACTOR,
        };
        let p = calibrate(&m, &files, &opts, |_, _| {}).unwrap();
        assert_eq!(p.mask.as_ref(), Some(&mask));
        let mut pipe = Pipeline::for_profile(&m, PlanKind::Full, &p, p.method).unwrap();
        let base = pair(
            &sprite("dsprites_normal", 100),
            &sprite("dsprites_normal", 101),
        );
        let clean = pipe.process(base.as_ref()).unwrap();
        // a white block in the masked half changes nothing
        let hidden = pipe.process(paint(&base, 80, 10, 30).as_ref()).unwrap();
        assert_eq!(clean, hidden, "tiles {tiles:?}");
        assert!(pipe.update_pixel_map().unwrap());
        let w = pipe.image_spec().width;
        let map = pipe.pixel_map().unwrap();
        for (i, v) in map.iter().enumerate() {
            if i % w > w / 2 {
                assert_eq!(*v, 0.0, "tiles {tiles:?}: heat under the mask at {i}");
            }
        }
        let input = pipe.input().unwrap();
        assert!(
            input
                .iter()
                .enumerate()
                .filter(|(i, _)| i % w > w / 2)
                .all(|(_, &v)| v == 0.5)
        );
        // the same block in the open half is seen
        let seen = pipe.process(paint(&base, 16, 10, 30).as_ref()).unwrap();
        assert_ne!(clean, seen, "tiles {tiles:?}");
        let m = p.method;
        assert!(
            seen.get(m).unwrap() > clean.get(m).unwrap(),
            "tiles {tiles:?}: {m} {clean:?} → {seen:?}"
        );
    }
    // the CLI takes the mask as a PNG too, and says how much it covers
    let png = dir.path().join("mask.png");
    let mut px = vec![255u8; 8 * 4];
    for y in 0..4 {
        for x in 4..8 {
            px[y * 8 + x] = 0;
        }
    }
    std::fs::write(&png, encode_png(8, 4, PixelFormat::Gray8, &px).unwrap()).unwrap();
    let out = dir.path().join("p.json");
    let run = bvae(
        dir.path(),
        &[
            "calibrate",
            s(&model("dsprites.onnx")),
            s(&dir.path().join("normal")),
            "--mask",
            s(&png),
            "--fpr",
            "0.05",
            "-o",
            s(&out),
        ],
    );
    assert!(
        run.ok().contains("mask: 50.0% of the frame"),
        "{}",
        run.ok()
    );
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "polygons = [[[0.0, 0.0], [1.0, 1.0]]]\n").unwrap();
    bvae(
        dir.path(),
        &[
            "calibrate",
            s(&model("dsprites.onnx")),
            s(&dir.path().join("normal")),
            "--mask",
            s(&bad),
        ],
    )
    .fails_with(&["polygon 0 has 2 corners"]);
}
