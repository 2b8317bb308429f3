//! y4m video as a camera would deliver it: paced by the header's frame
//! rate, `pace=off` for lossless evaluation, and streams (FIFOs, standard
//! input) as `ffmpeg … -f yuv4mpegpipe -` writes them.
//!
//! Timing is asserted loosely (a lower bound, and an upper bound far from
//! the expected time): the test machines are shared and noisy.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use bvae::calibrate::Profile;
use bvae::frame::Frame;
use bvae::live::events::Event;
use bvae::live::{LiveConfig, run};
use bvae::source::{FrameSource, SourceError, SourceSpec, SyntheticConfig, SyntheticSource};
use bvae::source::{open_source, y4m::Pace};
use common::{bvae_command, model, s};

/// A mono y4m whose frame `i` is filled with the value `i`.
fn numbered(header: &str, w: usize, h: usize, n: usize) -> Vec<u8> {
    let mut out = format!("{header}\n").into_bytes();
    for i in 0..n {
        out.extend_from_slice(b"FRAME\n");
        out.extend(std::iter::repeat_n(i as u8, w * h));
    }
    out
}

/// A mono y4m of `n` frames of the synthetic scene (what the shipped
/// `synthetic` model was trained on), at `width`×`height`.
fn scene(n: usize, width: u32, height: u32) -> Vec<u8> {
    let mut src = SyntheticSource::new(SyntheticConfig {
        seed: 11,
        width,
        height,
        frame_period: None,
        anomalies: None,
        ..SyntheticConfig::default()
    })
    .unwrap();
    let mut f = Frame::empty();
    src.next_frame(&mut f).unwrap();
    assert_eq!(f.format, bvae::frame::PixelFormat::Gray8);
    let mut out = format!("YUV4MPEG2 W{width} H{height} F30:1 Ip A1:1 Cmono\n").into_bytes();
    for _ in 0..n {
        out.extend_from_slice(b"FRAME\n");
        out.extend_from_slice(&f.data);
        src.next_frame(&mut f).unwrap();
    }
    out
}

fn open(spec: &str) -> Box<dyn FrameSource> {
    let spec: SourceSpec = spec.parse().unwrap();
    open_source(&spec).unwrap()
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// Reads until the source ends (or `max` frames): the first byte of each
/// frame, and any error other than Timeout and Ended.
fn drain(src: &mut dyn FrameSource, max: usize) -> (Vec<u8>, Vec<SourceError>) {
    let (mut values, mut errors) = (vec![], vec![]);
    let mut f = Frame::empty();
    let give_up = Instant::now() + Duration::from_secs(60);
    while values.len() < max {
        assert!(Instant::now() < give_up, "the source never ended");
        match src.next_frame(&mut f) {
            Ok(_) => values.push(f.data[0]),
            Err(SourceError::Timeout) => {}
            Err(SourceError::Ended) => break,
            Err(e) => errors.push(e),
        }
    }
    (values, errors)
}

#[test]
fn a_file_plays_at_its_header_rate_and_loops_on_schedule() {
    let dir = tempfile::tempdir().unwrap();
    // 10 frames at 20 fps: the last is due 0.45 s after the first.
    let p = write(
        dir.path(),
        "f20.y4m",
        &numbered("YUV4MPEG2 W4 H2 F20:1 Cmono", 4, 2, 10),
    );
    let mut src = open(&format!("video:{}", s(&p)));
    assert!(!src.lossless());
    assert!(
        src.describe().contains("played at 20.00 fps"),
        "{}",
        src.describe()
    );
    let t = Instant::now();
    let (values, errors) = drain(&mut *src, usize::MAX);
    let took = t.elapsed();
    assert_eq!(values, (0..10).collect::<Vec<u8>>());
    assert!(errors.is_empty(), "{errors:?}");
    assert!(took >= Duration::from_millis(400), "{took:?}");
    assert!(took < Duration::from_secs(10), "{took:?}");

    // Looping keeps the schedule across the wrap: 3 frames, 9 reads,
    // the 9th due 0.4 s after the first.
    let p = write(
        dir.path(),
        "three.y4m",
        &numbered("YUV4MPEG2 W4 H2 F20:1 Cmono", 4, 2, 3),
    );
    let mut src = open(&format!("video:{},loop", s(&p)));
    let t = Instant::now();
    let (values, _) = drain(&mut *src, 9);
    let took = t.elapsed();
    assert_eq!(values, [0, 1, 2, 0, 1, 2, 0, 1, 2]);
    assert!(took >= Duration::from_millis(350), "{took:?}");

    // fps=N overrides the header's rate: 8 frames at 40 fps, not 1 fps.
    let p = write(
        dir.path(),
        "slow.y4m",
        &numbered("YUV4MPEG2 W4 H2 F1:1 Cmono", 4, 2, 8),
    );
    let mut src = open(&format!("video:{},fps=40", s(&p)));
    let t = Instant::now();
    assert_eq!(drain(&mut *src, usize::MAX).0.len(), 8);
    let took = t.elapsed();
    assert!(took >= Duration::from_millis(150), "{took:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");

    // Without a rate in the header, a file is read as fast as it decodes;
    // pace=on then asks for one.
    let p = write(
        dir.path(),
        "norate.y4m",
        &numbered("YUV4MPEG2 W4 H2 Cmono", 4, 2, 5),
    );
    let mut src = open(&format!("video:{}", s(&p)));
    assert!(
        src.describe().contains("as fast as it decodes"),
        "{}",
        src.describe()
    );
    assert_eq!(drain(&mut *src, usize::MAX).0.len(), 5);
    let spec: SourceSpec = format!("video:{},pace=on", s(&p)).parse().unwrap();
    let e = format!("{:#}", open_source(&spec).err().unwrap());
    assert!(
        e.contains("pace=on needs a frame rate") && e.contains("fps=N"),
        "{e}"
    );
}

#[test]
fn pace_off_delivers_every_frame_at_once() {
    let dir = tempfile::tempdir().unwrap();
    // 20 frames at 1 fps would take 19 s paced.
    let p = write(
        dir.path(),
        "f1.y4m",
        &numbered("YUV4MPEG2 W4 H2 F1:1 Cmono", 4, 2, 20),
    );
    let spec: SourceSpec = format!("video:{},pace=off", s(&p)).parse().unwrap();
    assert!(matches!(
        spec,
        SourceSpec::Video {
            pace: Pace::Off,
            ..
        }
    ));
    assert_eq!(spec.to_string(), format!("video:{},pace=off", s(&p)));
    let mut src = open_source(&spec).unwrap();
    assert!(src.lossless());
    let t = Instant::now();
    let mut f = Frame::empty();
    for i in 0..20 {
        assert_eq!(src.next_frame(&mut f).unwrap().index, i);
        assert_eq!(f.data[0], i as u8);
    }
    assert_eq!(src.next_frame(&mut f), Err(SourceError::Ended));
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
}

/// A FIFO in `dir`, or `None` (with a message) where mkfifo is missing.
fn fifo(dir: &Path) -> Option<PathBuf> {
    let p = dir.join("camera.y4m");
    match std::process::Command::new("mkfifo").arg(&p).status() {
        Ok(st) if st.success() => Some(p),
        other => {
            eprintln!("skipped: mkfifo failed ({other:?})");
            None
        }
    }
}

/// Writes `bytes` into the FIFO `p` from a thread, in pieces with pauses
/// like a live producer.
fn feed(p: PathBuf, bytes: Vec<u8>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut w = std::fs::OpenOptions::new().write(true).open(p).unwrap();
        for piece in bytes.chunks(1000) {
            if w.write_all(piece).is_err() {
                return; // the reader went away
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    })
}

#[test]
fn a_fifo_is_read_as_a_stream_to_its_end() {
    let dir = tempfile::tempdir().unwrap();
    let Some(p) = fifo(dir.path()) else { return };
    let (w, h, n) = (32, 24, 30);
    let writer = feed(
        p.clone(),
        numbered("YUV4MPEG2 W32 H24 F30:1 Cmono", w, h, n),
    );
    let mut src = open(&format!("video:{}", s(&p)));
    let d = src.describe();
    assert!(
        d.contains("stream") && d.contains("as frames arrive"),
        "{d}"
    );
    assert!(!src.lossless());
    let (values, errors) = drain(&mut *src, usize::MAX);
    assert_eq!(values, (0..n as u8).collect::<Vec<u8>>());
    assert!(errors.is_empty(), "{errors:?}");
    // A stream is never reopened: it stays ended.
    src.open().unwrap();
    assert_eq!(src.next_frame(&mut Frame::empty()), Err(SourceError::Ended));
    writer.join().unwrap();

    // A producer stopped mid-frame: the frames before, then Ended (a
    // stream has no bad last frame, it has ended).
    let mut cut = numbered("YUV4MPEG2 W32 H24 F30:1 Cmono", w, h, 3);
    cut.truncate(cut.len() - w * h / 2);
    let writer = feed(p.clone(), cut);
    let mut src = open(&format!("video:{},pace=off", s(&p)));
    assert!(src.lossless());
    let (values, errors) = drain(&mut *src, usize::MAX);
    assert_eq!(values, [0, 1]);
    assert!(errors.is_empty(), "{errors:?}");
    writer.join().unwrap();

    // pace=on paces a stream by its header: 6 frames at 20 fps.
    let writer = feed(
        p.clone(),
        numbered("YUV4MPEG2 W32 H24 F20:1 Cmono", w, h, 6),
    );
    let mut src = open(&format!("video:{},pace=on", s(&p)));
    let t = Instant::now();
    assert_eq!(drain(&mut *src, usize::MAX).0.len(), 6);
    assert!(
        t.elapsed() >= Duration::from_millis(200),
        "{:?}",
        t.elapsed()
    );
    writer.join().unwrap();

    // `loop` needs a regular file.
    let spec: SourceSpec = format!("video:{},loop", s(&p)).parse().unwrap();
    let e = format!("{:#}", open_source(&spec).err().unwrap());
    assert!(
        e.contains("is a stream") && e.contains("remove `,loop`"),
        "{e}"
    );
}

#[test]
fn watch_reads_a_y4m_stream_from_standard_input() {
    // What the README's line does:
    // ffmpeg -i rtsp://CAMERA/stream -f yuv4mpegpipe -pix_fmt yuv420p - | bvae watch … --source video:-
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.jsonl");
    let mut child = bvae_command()
        .args([
            "watch",
            s(&model("synthetic.onnx")),
            "-c",
            s(&model("synthetic.calibration.json")),
            "--source",
            "video:-",
            "--headless",
            "--events",
            s(&events),
        ])
        .current_dir(dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the bvae binary runs");
    let mut stdin = child.stdin.take().unwrap();
    let bytes = scene(60, 160, 120);
    let writer = std::thread::spawn(move || {
        for piece in bytes.chunks(19_200) {
            stdin.write_all(piece).unwrap();
            std::thread::sleep(Duration::from_millis(5));
        }
        // dropping stdin closes the pipe: the stream ends
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let text = std::fs::read_to_string(&events).unwrap();
    let summary: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(summary["type"], "summary", "{text}");
    let processed = summary["processed"].as_u64().unwrap();
    let captured = summary["captured"].as_u64().unwrap();
    eprintln!("stdin: {processed} processed of {captured} captured");
    assert!(processed > 0, "{text}");
    assert!(captured <= 60, "{text}");
}

#[test]
fn pace_off_through_the_live_loop_drops_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let n = 60;
    let p = write(dir.path(), "scene.y4m", &scene(n, 160, 120));
    let m = bvae::Model::load(model("synthetic.onnx")).unwrap();
    let profile = Profile::load(&model("synthetic.calibration.json"), &m).unwrap();
    let mut cfg = LiveConfig::for_profile(&profile);
    cfg.max_duration = Some(Duration::from_secs(120));
    let spec: SourceSpec = format!("video:{},pace=off", s(&p)).parse().unwrap();
    let mut events: Vec<Event> = vec![];
    let summary = run(
        &m,
        &profile,
        open_source(&spec).unwrap(),
        &cfg,
        &mut events,
        &AtomicBool::new(false),
    )
    .unwrap();
    assert_eq!(
        (summary.captured, summary.processed, summary.dropped),
        (n as u64, n as u64, 0),
        "{summary:?}"
    );
}
