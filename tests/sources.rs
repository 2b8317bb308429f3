//! Frame sources: the synthetic scene, folders of images, y4m video, the
//! `--source` strings, and `bvae record` run as a user runs it.

mod common;

use std::collections::HashMap;
use std::path::Path;

use bvae::frame::{Frame, PixelFormat};
use bvae::imageio::{encode_png, load_image};
use bvae::source::{
    AnomalyKind, AnomalySchedule, FrameSource, SHAPE_SEGMENT, Scene, Shape, SourceError,
    SourceSpec, SyntheticConfig, SyntheticSource, open_source, render_frame,
};
use common::{bvae, s};

/// An unpaced scene of the given size.
fn config(seed: u64, width: u32, height: u32) -> SyntheticConfig {
    SyntheticConfig {
        seed,
        width,
        height,
        frame_period: None,
        ..SyntheticConfig::default()
    }
}

fn frames(source: &mut dyn FrameSource, n: usize) -> Vec<Frame> {
    (0..n)
        .map(|_| {
            let mut f = Frame::empty();
            source.next_frame(&mut f).unwrap();
            f
        })
        .collect()
}

/// Mean absolute difference per byte.
fn mad(a: &Frame, b: &Frame) -> f64 {
    assert_eq!(a.data.len(), b.data.len());
    let sum: u64 = a
        .data
        .iter()
        .zip(&b.data)
        .map(|(x, y)| x.abs_diff(*y) as u64)
        .sum();
    sum as f64 / a.data.len() as f64
}

#[test]
fn synthetic_scene_is_deterministic_per_seed() {
    let mut a = SyntheticSource::new(config(7, 160, 120)).unwrap();
    let mut b = SyntheticSource::new(config(7, 160, 120)).unwrap();
    let mut c = SyntheticSource::new(config(8, 160, 120)).unwrap();
    let (fa, fb, fc) = (frames(&mut a, 40), frames(&mut b, 40), frames(&mut c, 40));
    assert_eq!(fa, fb, "same seed, same bytes");
    let differ = fa.iter().zip(&fc).filter(|(x, y)| x != y).count();
    assert_eq!(differ, 40, "another seed gives another scene");
    // The pure renderer gives the source's bytes.
    let scene = Scene::new(config(7, 160, 120)).unwrap();
    let mut f = Frame::empty();
    render_frame(&scene.state(39), &mut f);
    assert_eq!(f, fa[39]);
    assert_eq!(
        (f.width, f.height, f.format),
        (160, 120, PixelFormat::Gray8)
    );
}

#[test]
fn synthetic_motion_is_smooth_and_covers_the_frame() {
    let scene = Scene::new(SyntheticConfig {
        anomalies: None,
        ..config(3, 160, 120)
    })
    .unwrap();
    let n = 600;
    let (mut prev, mut cur) = (Frame::empty(), Frame::empty());
    render_frame(&scene.state(0), &mut prev);
    let first = prev.clone();
    let mut worst: f64 = 0.0;
    let mut far: f64 = 0.0;
    let (mut xs, mut ys) = (vec![], vec![]);
    for i in 1..n {
        let (a, b) = (scene.sprite_at(i - 1), scene.sprite_at(i));
        assert!((a.x - b.x).abs() < 0.02 && (a.y - b.y).abs() < 0.02, "{i}");
        let turn = (a.angle - b.angle).rem_euclid(std::f32::consts::TAU);
        let turn = turn.min(std::f32::consts::TAU - turn);
        assert!(
            (a.size - b.size).abs() < 0.002 && turn < 0.1,
            "{i}: {a:?} {b:?}"
        );
        xs.push(b.x);
        ys.push(b.y);
        render_frame(&scene.state(i), &mut cur);
        // The shape changes every SHAPE_SEGMENT frames, a cut like a change
        // of the shape factor in dSprites; motion is smooth in between.
        if i % SHAPE_SEGMENT != 0 {
            worst = worst.max(mad(&prev, &cur));
        }
        far = far.max(mad(&first, &cur));
        std::mem::swap(&mut prev, &mut cur);
    }
    let span = |v: &[f32]| {
        let (lo, hi) = v
            .iter()
            .fold((f32::MAX, f32::MIN), |(l, h), &x| (l.min(x), h.max(x)));
        hi - lo
    };
    // Consecutive frames differ by little next to frames far apart.
    eprintln!("consecutive frames differ by at most {worst}, far ones by {far}");
    // (measured at 160×120: at most 1.80 between neighbours, 21.6 far apart)
    assert!(worst < 2.5, "consecutive frames differ by {worst}");
    assert!(far > 5.0 * worst, "the scene moves: {far} vs {worst}");
    // The sprite wanders over a good part of the frame and stays inside.
    assert!(
        span(&xs) > 0.3 && span(&ys) > 0.3,
        "{} {}",
        span(&xs),
        span(&ys)
    );
    assert!(xs.iter().chain(&ys).all(|&v| (0.1..0.9).contains(&v)));
    // Every normal shape appears.
    let shapes: Vec<Shape> = (0..n).map(|i| scene.sprite_at(i).shape).collect();
    for shape in Shape::NORMAL {
        assert!(shapes.contains(&shape), "{shape:?} never appears");
    }
}

#[test]
fn anomaly_schedule_has_every_kind_with_ground_truth() {
    let schedule = AnomalySchedule {
        first: 30,
        every: 40,
        length: 12,
    };
    let cfg = SyntheticConfig {
        anomalies: Some(schedule),
        ..config(5, 128, 96)
    };
    let scene = Scene::new(cfg.clone()).unwrap();
    let mut source = SyntheticSource::new(cfg).unwrap();
    let mut counts: HashMap<Option<AnomalyKind>, usize> = HashMap::new();
    let mut f = Frame::empty();
    let mut normal = Frame::empty();
    let mut last_normal = Frame::empty();
    for i in 0..30 + 40 * 5 {
        let info = source.next_frame(&mut f).unwrap();
        assert_eq!(info.index, i);
        let truth = info.truth.expect("the synthetic scene knows the truth");
        assert_eq!(truth, scene.truth(i));
        *counts.entry(truth).or_default() += 1;
        // The normal frame at this index, to compare anomalies against.
        let mut st = scene.state(i);
        st.sprites = [Some(scene.sprite_at(i)), None];
        (st.occluder, st.noise, st.truth) = (None, None, None);
        render_frame(&st, &mut normal);
        match truth {
            None => {
                assert_eq!(f, normal, "frame {i}");
                last_normal = f.clone();
            }
            Some(AnomalyKind::FrozenFrame) => {
                assert_eq!(f, last_normal, "a frozen frame repeats the last normal one");
                assert!(mad(&f, &normal) > 0.0);
            }
            Some(kind) => {
                let d = mad(&f, &normal);
                assert!(d > 0.5, "{kind} frame {i} differs by only {d}");
            }
        }
    }
    for kind in AnomalyKind::ALL {
        assert_eq!(counts.get(&Some(kind)), Some(&12), "{kind}: {counts:?}");
    }
    assert_eq!(counts[&None], 30 + 40 * 5 - 60);
    // Without a schedule every frame is normal, and the truth says so.
    let mut calm = SyntheticSource::new(SyntheticConfig {
        anomalies: None,
        ..config(5, 64, 48)
    })
    .unwrap();
    for _ in 0..300 {
        assert_eq!(calm.next_frame(&mut f).unwrap().truth, Some(None));
    }
}

#[test]
fn novel_shapes_differ_from_every_normal_shape() {
    // Overlap (intersection over union) of two shapes at the same pose,
    // at their best relative rotation.
    let iou = |a: Shape, b: Shape| {
        let n = 120;
        let mut best: f64 = 0.0;
        for r in 0..24 {
            let (sin, cos) = (r as f32 * std::f32::consts::TAU / 24.0).sin_cos();
            let (mut both, mut either) = (0, 0);
            for i in 0..n {
                for j in 0..n {
                    let u = -1.2 + 2.4 * (i as f32 + 0.5) / n as f32;
                    let v = -1.2 + 2.4 * (j as f32 + 0.5) / n as f32;
                    let (ia, ib) = (
                        a.contains(u, v),
                        b.contains(u * cos + v * sin, v * cos - u * sin),
                    );
                    both += (ia && ib) as u32;
                    either += (ia || ib) as u32;
                }
            }
            best = best.max(both as f64 / either as f64);
        }
        best
    };
    for novel in Shape::NOVEL {
        for normal in Shape::NORMAL {
            let o = iou(novel, normal);
            assert!(o < 0.8, "{novel:?} overlaps {normal:?} by {o}");
        }
    }
    // The novel-shape episodes cycle through all novel shapes.
    let scene = Scene::new(SyntheticConfig {
        anomalies: Some(AnomalySchedule {
            first: 10,
            every: 20,
            length: 5,
        }),
        ..config(1, 64, 48)
    })
    .unwrap();
    let seen: Vec<Shape> = [10, 110, 210]
        .iter()
        .map(|&i| {
            let st = scene.state(i);
            assert_eq!(st.truth, Some(AnomalyKind::NovelShape));
            st.sprites[0].unwrap().shape
        })
        .collect();
    assert_eq!(seen, Shape::NOVEL);
}

#[test]
fn rgb_scene_has_colour_frames() {
    let mut src = SyntheticSource::new(SyntheticConfig {
        format: PixelFormat::Rgb8,
        ..config(1, 64, 48)
    })
    .unwrap();
    let f = &frames(&mut src, 1)[0];
    assert_eq!((f.format, f.data.len()), (PixelFormat::Rgb8, 64 * 48 * 3));
}

fn write_png(path: &Path, w: u32, h: u32, value: u8) {
    let data = vec![value; (w * h) as usize];
    std::fs::write(path, encode_png(w, h, PixelFormat::Gray8, &data).unwrap()).unwrap();
}

#[test]
fn images_come_in_order_loop_and_skip_bad_files() {
    let dir = tempfile::tempdir().unwrap();
    write_png(&dir.path().join("b.png"), 4, 3, 20);
    write_png(&dir.path().join("a.png"), 4, 3, 10);
    std::fs::write(dir.path().join("c.png"), b"not a png").unwrap();
    std::fs::create_dir(dir.path().join("d")).unwrap();
    write_png(&dir.path().join("d").join("e.png"), 5, 2, 40);
    std::fs::write(dir.path().join("notes.txt"), b"ignored").unwrap();

    let spec: SourceSpec = format!("images:{}", s(dir.path())).parse().unwrap();
    let mut src = open_source(&spec).unwrap();
    assert!(src.describe().contains("(4 files)"), "{}", src.describe());
    let mut f = Frame::empty();
    let mut got = vec![];
    for _ in 0..4 {
        match src.next_frame(&mut f) {
            Ok(info) => got.push((info.index, info.truth, f.width, f.height, f.data[0])),
            Err(SourceError::BadFrame(e)) => {
                assert!(e.contains("c.png"), "{e}");
                got.push((99, None, 0, 0, 0));
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(
        got,
        [
            (0, None, 4, 3, 10),
            (1, None, 4, 3, 20),
            (99, None, 0, 0, 0),
            (3, None, 5, 2, 40)
        ]
    );
    assert_eq!(src.next_frame(&mut f), Err(SourceError::Ended));
    assert_eq!(src.next_frame(&mut f), Err(SourceError::Ended));

    // Looping starts again; the buffer is reused for same-size frames.
    let spec: SourceSpec = format!("images:{},loop", s(dir.path())).parse().unwrap();
    let mut src = open_source(&spec).unwrap();
    let mut values = vec![];
    let mut f = Frame::empty();
    for _ in 0..9 {
        if src.next_frame(&mut f).is_ok() {
            values.push(f.data[0]);
        }
    }
    assert_eq!(values, [10, 20, 40, 10, 20, 40, 10]);

    // A folder that does not exist, or has no images, fails to open.
    let missing: SourceSpec = format!("images:{}", s(&dir.path().join("nope")))
        .parse()
        .unwrap();
    let e = format!("{:#}", open_source(&missing).err().unwrap());
    assert!(e.contains("is not a folder"), "{e}");
}

/// A y4m file: header, then one FRAME line and planes per frame.
fn y4m(header: &str, frames: &[Vec<u8>]) -> Vec<u8> {
    let mut out = format!("{header}\n").into_bytes();
    for f in frames {
        out.extend_from_slice(b"FRAME\n");
        out.extend_from_slice(f);
    }
    out
}

fn video(dir: &Path, name: &str, bytes: &[u8], looping: bool) -> Box<dyn FrameSource> {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    let spec: SourceSpec = format!("video:{}{}", s(&p), if looping { ",loop" } else { "" })
        .parse()
        .unwrap();
    open_source(&spec).unwrap()
}

#[test]
fn y4m_mono_frames_loop_and_truncation() {
    let dir = tempfile::tempdir().unwrap();
    let frame0: Vec<u8> = (0..12).collect();
    let frame1: Vec<u8> = (100..112).collect();
    let bytes = y4m(
        "YUV4MPEG2 W4 H3 F25:1 Ip A1:1 Cmono",
        &[frame0.clone(), frame1.clone()],
    );
    let mut src = video(dir.path(), "gray.y4m", &bytes, false);
    assert!(src.describe().contains("4x3"), "{}", src.describe());
    let mut f = Frame::empty();
    assert_eq!(src.next_frame(&mut f).unwrap().index, 0);
    assert_eq!((f.width, f.height, f.format), (4, 3, PixelFormat::Gray8));
    assert_eq!(f.data, frame0);
    let ptr = f.data.as_ptr();
    src.next_frame(&mut f).unwrap();
    assert_eq!(f.data, frame1);
    assert_eq!(f.data.as_ptr(), ptr, "the buffer is reused");
    assert_eq!(src.next_frame(&mut f), Err(SourceError::Ended));

    let mut looped = video(dir.path(), "gray.y4m", &bytes, true);
    let firsts: Vec<u8> = (0..5)
        .map(|_| {
            looped.next_frame(&mut f).unwrap();
            f.data[0]
        })
        .collect();
    assert_eq!(firsts, [0, 100, 0, 100, 0]);

    // A truncated last frame is a bad frame, then the video has ended.
    let mut cut = bytes.clone();
    cut.truncate(bytes.len() - 5);
    let mut src = video(dir.path(), "cut.y4m", &cut, false);
    src.next_frame(&mut f).unwrap();
    match src.next_frame(&mut f) {
        Err(SourceError::BadFrame(e)) => assert!(e.contains("truncated"), "{e}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(src.next_frame(&mut f), Err(SourceError::Ended));
    // Looping over a truncated file goes round the good frames.
    let mut src = video(dir.path(), "cut.y4m", &cut, true);
    let results: Vec<bool> = (0..4).map(|_| src.next_frame(&mut f).is_ok()).collect();
    assert_eq!(results, [true, false, true, false]);

    // Garbage where a FRAME line should be.
    let mut bad = y4m("YUV4MPEG2 W4 H3 Cmono", &[frame0]);
    bad.extend_from_slice(b"GARBAGE\n");
    let mut src = video(dir.path(), "bad.y4m", &bad, false);
    src.next_frame(&mut f).unwrap();
    assert!(matches!(
        src.next_frame(&mut f),
        Err(SourceError::BadFrame(_))
    ));
    assert_eq!(src.next_frame(&mut f), Err(SourceError::Ended));

    // A file with a header and no frames ends at once, even when looping.
    let mut empty = video(dir.path(), "empty.y4m", b"YUV4MPEG2 W4 H3 Cmono\n", true);
    assert_eq!(empty.next_frame(&mut f), Err(SourceError::Ended));
}

#[test]
fn y4m_420_colours_become_rgb() {
    // 4×2 pixels, chroma 2×1: left half red, right half blue (BT.601,
    // limited range as ffmpeg writes yuv420p). Red: Y 81 U 90 V 240;
    // blue: Y 41 U 240 V 110.
    let dir = tempfile::tempdir().unwrap();
    let planes: Vec<u8> = [81, 81, 41, 41, 81, 81, 41, 41, 90, 240, 240, 110].to_vec();
    let bytes = y4m(
        "YUV4MPEG2 W4 H2 F30000:1001 C420jpeg XYSCSS=420JPEG",
        &[planes],
    );
    let mut src = video(dir.path(), "colour.y4m", &bytes, false);
    let mut f = Frame::empty();
    src.next_frame(&mut f).unwrap();
    assert_eq!((f.width, f.height, f.format), (4, 2, PixelFormat::Rgb8));
    let want = |x: usize| if x < 2 { [255, 0, 0] } else { [0, 0, 255] };
    for (i, px) in f.data.chunks(3).enumerate() {
        let w = want(i % 4);
        for c in 0..3 {
            assert!(px[c].abs_diff(w[c]) <= 2, "pixel {i}: {px:?} vs {w:?}");
        }
    }
    // Full range: Y 128 U V 128 is mid gray.
    let bytes = y4m(
        "YUV4MPEG2 W2 H2 C420 XCOLORRANGE=FULL",
        &[vec![128, 128, 128, 128, 128, 128]],
    );
    let mut src = video(dir.path(), "full.y4m", &bytes, false);
    src.next_frame(&mut f).unwrap();
    assert!(f.data.iter().all(|&v| v == 128), "{:?}", f.data);

    // Unsupported colour spaces and non-y4m files fail to open, clearly.
    for (name, bytes, needle) in [
        (
            "deep.y4m",
            &b"YUV4MPEG2 W2 H2 C420p10\n"[..],
            "unsupported colour space",
        ),
        ("text.y4m", &b"hello\n"[..], "not a YUV4MPEG2 file"),
        ("empty.y4m", &b""[..], "is empty"),
        ("endless.y4m", &b"YUV4MPEG2 W2 H2 C420"[..], "no end"),
    ] {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        let spec: SourceSpec = format!("video:{}", s(&p)).parse().unwrap();
        let e = format!("{:#}", open_source(&spec).err().unwrap());
        assert!(e.contains(needle), "{name}: {e}");
    }
}

#[test]
fn record_writes_pngs_and_refuses_a_full_folder() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("frames");
    let run = bvae(
        dir.path(),
        &[
            "record",
            "--source",
            "synthetic:seed=2,width=64,height=48,first=5,every=10,length=3",
            "--frames",
            "12",
            "-o",
            s(&out),
        ],
    );
    let summary = run.ok();
    assert!(
        summary.contains("wrote 12 frames (64x48 gray)"),
        "{summary}"
    );
    assert!(summary.contains("anomaly frames skipped"), "{summary}");
    let mut names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".png"))
        .collect();
    names.sort();
    assert_eq!(names.len(), 12);
    assert_eq!(names[0], "frame_000000.png");
    assert_eq!(names[11], "frame_000011.png");
    let f = load_image(&out.join("frame_000011.png")).unwrap();
    assert_eq!((f.width, f.height, f.format), (64, 48, PixelFormat::Gray8));
    // Normal frames only, by default for the synthetic scene.
    let labels = std::fs::read_to_string(out.join("labels.csv")).unwrap();
    assert_eq!(labels.lines().count(), 13);
    assert!(
        labels.lines().skip(1).all(|l| l.ends_with(",normal")),
        "{labels}"
    );

    // A folder that is not empty is refused, unless --force.
    let args = [
        "record",
        "--source",
        "synthetic:width=32,height=32,anomalies=off",
        "-n",
        "3",
        "-o",
        s(&out),
    ];
    bvae(dir.path(), &args).fails_with(&["is not empty", "--force"]);
    let mut forced = args.to_vec();
    forced.push("--force");
    bvae(dir.path(), &forced).ok();
    assert_eq!(load_image(&out.join("frame_000000.png")).unwrap().width, 32);

    // Every 2nd frame of a folder of images; --normal-only needs truth.
    let imgs = dir.path().join("imgs");
    std::fs::create_dir(&imgs).unwrap();
    for i in 0..5 {
        write_png(&imgs.join(format!("{i}.png")), 8, 8, i * 10);
    }
    let src = format!("images:{}", s(&imgs));
    let out2 = dir.path().join("every");
    let run = bvae(
        dir.path(),
        &[
            "record",
            "--source",
            &src,
            "-n",
            "10",
            "--every",
            "2",
            "-o",
            s(&out2),
        ],
    );
    let summary = run.ok();
    assert!(summary.contains("wrote 3 frames"), "{summary}");
    assert!(summary.contains("ended before 10"), "{summary}");
    assert_eq!(
        load_image(&out2.join("frame_000002.png")).unwrap().data[0],
        40
    );
    bvae(
        dir.path(),
        &[
            "record",
            "--source",
            &src,
            "-n",
            "1",
            "--normal-only",
            "-o",
            "x",
        ],
    )
    .fails_with(&["--normal-only", "synthetic"]);
}

#[test]
fn record_reports_bad_sources_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let run = bvae(
        dir.path(),
        &["record", "--source", "webcam:0", "-n", "1", "-o", "x"],
    );
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("unknown source kind"), "{}", run.stderr);
    assert!(
        run.stderr.contains("expected camera:INDEX"),
        "{}",
        run.stderr
    );
    let no_camera = if cfg!(feature = "camera") {
        // no /dev/video57 on any test machine
        &["cannot open camera 57", "/dev/video57 does not exist"][..]
    } else {
        &["--features camera"][..]
    };
    bvae(
        dir.path(),
        &["record", "--source", "camera:57", "-n", "1", "-o", "x"],
    )
    .fails_with(no_camera);
    bvae(
        dir.path(),
        &[
            "record",
            "--source",
            "video:missing.y4m",
            "-n",
            "1",
            "-o",
            "y",
        ],
    )
    .fails_with(&["cannot open", "missing.y4m"]);
    let help = bvae(dir.path(), &["record", "--help"]);
    for flag in [
        "--source",
        "--frames",
        "--output",
        "--every",
        "--normal-only",
        "--keep-anomalies",
        "--force",
    ] {
        assert!(
            help.stdout.contains(flag),
            "{flag} missing from\n{}",
            help.stdout
        );
    }
}

/// Render time of the default 320×240 scene; run with
/// `cargo test --release --test sources -- --ignored --nocapture`.
#[test]
#[ignore]
fn render_speed() {
    for format in [PixelFormat::Gray8, PixelFormat::Rgb8] {
        let scene = Scene::new(SyntheticConfig {
            format,
            ..config(1, 320, 240)
        })
        .unwrap();
        let mut f = Frame::empty();
        let n = 3000;
        let t = std::time::Instant::now();
        for i in 0..n {
            let st = scene.state(i);
            render_frame(&st, &mut f);
        }
        let per = t.elapsed() / n as u32;
        println!("{format:?} 320x240: {per:?} per frame (state + render, anomalies on)");
    }
}

/// Writes `n` small RGB photos (gradients crossed by stripes) into `dir`.
fn write_photos(dir: &Path, n: u32) {
    std::fs::create_dir_all(dir).unwrap();
    let (w, h) = (40u32, 30u32);
    for k in 0..n {
        let mut data = Vec::with_capacity((w * h * 3) as usize);
        for y in 0..h {
            for x in 0..w {
                let stripe = if (x + y * k) / 5 % 2 == 0 { 90 } else { 0 };
                data.extend_from_slice(&[(x * 6) as u8, (y * 8) as u8, (40 * k + stripe) as u8]);
            }
        }
        let png = encode_png(w, h, PixelFormat::Rgb8, &data).unwrap();
        std::fs::write(dir.join(format!("photo{k}.png")), png).unwrap();
    }
}

#[test]
fn the_photos_source_records_and_is_scored_against_its_truth() {
    let dir = tempfile::tempdir().unwrap();
    let photos = dir.path().join("my photos");
    write_photos(&photos, 3);
    let spec = format!(
        "photos:{},width=96,height=72,first=5,every=10,length=3",
        s(&photos)
    );
    // Normal frames only by default, like the synthetic scene.
    let out = dir.path().join("frames");
    let args = ["record", "--source", &spec, "--frames", "12", "-o", s(&out)];
    let run = bvae(dir.path(), &args);
    let summary = run.ok();
    assert!(summary.contains("wrote 12 frames (96x72 rgb)"), "{summary}");
    assert!(summary.contains("anomaly frames skipped"), "{summary}");
    assert!(summary.contains("3 photos; background photo"), "{summary}");
    let labels = std::fs::read_to_string(out.join("labels.csv")).unwrap();
    assert!(
        labels.lines().skip(1).all(|l| l.ends_with(",normal")),
        "{labels}"
    );
    let f = load_image(&out.join("frame_000011.png")).unwrap();
    assert_eq!((f.width, f.height, f.format), (96, 72, PixelFormat::Rgb8));
    // With --keep-anomalies the labels name the photos scene's kinds.
    let all = dir.path().join("all");
    let mut keep = args.to_vec();
    (keep[4], keep[6]) = ("40", s(&all));
    keep.push("--keep-anomalies");
    bvae(dir.path(), &keep).ok();
    let labels = std::fs::read_to_string(all.join("labels.csv")).unwrap();
    for kind in ["pasted_object", "person", "lights_out", "lens_occlusion"] {
        assert!(labels.contains(&format!(",{kind}\n")), "{kind}: {labels}");
    }

    // `bvae watch` ends with the ground-truth summary.
    let events = dir.path().join("events.jsonl");
    let watch_spec = format!(
        "photos:{},width=96,height=72,fps=0,first=20,every=25,length=8",
        s(&photos)
    );
    let run = bvae(
        dir.path(),
        &[
            "watch",
            s(&common::model("synthetic.onnx")),
            "-c",
            s(&common::model("synthetic.calibration.json")),
            "--source",
            &watch_spec,
            "--headless",
            "--max-frames",
            "200",
            "--events",
            s(&events),
        ],
    );
    run.ok();
    assert!(
        run.stderr.contains("ground truth: detected"),
        "{}",
        run.stderr
    );
    let text = std::fs::read_to_string(&events).unwrap();
    let last: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    let t = &last["truth"];
    assert!(t["injected"].as_u64().unwrap() >= 5, "{t}");
    assert!(
        t["per_kind"]["pasted_object"][0].as_u64().unwrap() >= 1,
        "{t}"
    );
    assert!(t["normal_frames"].as_u64().unwrap() > 0, "{t}");

    // A folder without photos is refused before anything runs.
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let bad = format!("photos:{}", s(&empty));
    bvae(
        dir.path(),
        &["record", "--source", &bad, "-n", "1", "-o", "x"],
    )
    .fails_with(&[
        "cannot open source photos:",
        "holds no images",
        "bvae_tools photos",
    ]);
}
