//! `--http`: the web view against real clients. The HTTP client is a
//! plain socket (what the tests check is the bytes on the wire); the page
//! is loaded by Debian's headless Chromium, started by the test (`.ci/run`
//! installs it; without it that test says "skipped: …" and passes).

#![cfg(feature = "http")]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{bvae_command, model, s};
use serde_json::Value;

/// A running `bvae demo --http 127.0.0.1:0`, its address, and its stderr
/// lines as they come.
struct Demo {
    child: Child,
    addr: SocketAddr,
    lines: mpsc::Receiver<String>,
    stderr: Vec<String>,
}

impl Demo {
    /// Starts the demo on the synthetic scene with `extra` flags and
    /// waits until the web view listens.
    fn start(dir: &Path, extra: &[&str]) -> Demo {
        Demo::start_env(dir, extra, &[])
    }

    fn start_env(dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Demo {
        let models = model("synthetic.onnx").parent().unwrap().to_path_buf();
        let events = dir.join("events.jsonl");
        let mut args: Vec<String> = [
            "demo",
            "--models",
            s(&models),
            "--headless",
            "--events",
            s(&events),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if !extra.contains(&"--http") {
            args.extend(["--http".to_string(), "127.0.0.1:0".to_string()]);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut child = bvae_command()
            .args(&args)
            .envs(env.iter().copied())
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("bvae starts");
        let (tx, rx) = mpsc::channel();
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut stderr = vec![];
        let until = Instant::now() + Duration::from_secs(60);
        let addr = loop {
            let line = rx
                .recv_timeout(until.saturating_duration_since(Instant::now()))
                .unwrap_or_else(|_| panic!("no web view address; stderr: {stderr:?}"));
            stderr.push(line.clone());
            if let Some(a) = line
                .strip_prefix("web view: http://")
                .and_then(|a| a.strip_suffix('/'))
            {
                break a.parse().unwrap();
            }
        };
        Demo {
            child,
            addr,
            lines: rx,
            stderr,
        }
    }

    /// Waits for the run to end (it must succeed) and returns all stderr.
    fn finish(mut self) -> String {
        let status = self.child.wait().unwrap();
        self.stderr.extend(self.lines.try_iter());
        // the reader thread may still hold the last lines
        while let Ok(l) = self.lines.recv_timeout(Duration::from_millis(500)) {
            self.stderr.push(l);
        }
        let err = self.stderr.join("\n");
        assert!(status.success(), "bvae failed:\n{err}");
        err
    }

    fn get(&self, path: &str) -> Response {
        get(self.addr, path, None)
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A response: status code, head (lower-cased header lines) and body.
#[derive(Debug)]
struct Response {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Response {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// `GET path` with an optional Authorization header; reads to the end.
fn get(addr: SocketAddr, path: &str, auth: Option<&str>) -> Response {
    request(addr, &format!("GET {path}"), auth)
}

fn request(addr: SocketAddr, line: &str, auth: Option<&str>) -> Response {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let auth = auth.map_or(String::new(), |a| format!("Authorization: {a}\r\n"));
    write!(s, "{line} HTTP/1.1\r\nHost: test\r\n{auth}\r\n").unwrap();
    let mut raw = vec![];
    s.read_to_end(&mut raw).unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8_lossy(&raw[..split]).to_lowercase();
    let status = head[9..12].parse().unwrap();
    Response {
        status,
        head,
        body: raw[split + 4..].to_vec(),
    }
}

/// Polls `path` until `ok` holds for its response, at most `secs`.
fn poll(demo: &Demo, path: &str, secs: u64, ok: impl Fn(&Response) -> bool) -> Response {
    let until = Instant::now() + Duration::from_secs(secs);
    loop {
        let r = demo.get(path);
        if ok(&r) || Instant::now() > until {
            return r;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Checks `text` against the Prometheus text format: comments are
/// `# HELP name text` or `# TYPE name counter|gauge|histogram|summary|untyped`,
/// samples are `name{labels} value` with a valid metric name and a float
/// value, every sample's family was typed first. Returns the samples.
fn parse_prometheus(text: &str) -> Vec<(String, f64)> {
    let valid_name = |n: &str| {
        !n.is_empty()
            && n.chars().enumerate().all(|(i, c)| {
                c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit())
            })
    };
    let mut typed: Vec<(String, String)> = vec![];
    let mut samples = vec![];
    assert!(text.ends_with('\n'), "the text ends with a line feed");
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# ") {
            let mut w = rest.splitn(3, ' ');
            let (kw, name, tail) = (w.next().unwrap(), w.next().unwrap(), w.next());
            assert!(valid_name(name), "{line}");
            match kw {
                "HELP" => assert!(tail.is_some_and(|t| !t.is_empty()), "{line}"),
                "TYPE" => {
                    let t = tail.unwrap();
                    assert!(
                        ["counter", "gauge", "histogram", "summary", "untyped"].contains(&t),
                        "{line}"
                    );
                    typed.push((name.to_string(), t.to_string()));
                }
                _ => panic!("unknown comment {line}"),
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("name and value");
        let name = series.split('{').next().unwrap();
        assert!(valid_name(name), "{line}");
        let labels = &series[name.len()..];
        if !labels.is_empty() {
            assert!(labels.starts_with('{') && labels.ends_with('}'), "{line}");
            for l in labels[1..labels.len() - 1].split(',') {
                let (k, v) = l.split_once('=').expect("label=value");
                assert!(
                    valid_name(k) && v.starts_with('"') && v.ends_with('"'),
                    "{line}"
                );
            }
        }
        let v: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value in {line}")),
        };
        let family = typed
            .iter()
            .find(|(n, t)| {
                name == n
                    || (t == "histogram"
                        && ["_bucket", "_sum", "_count"]
                            .iter()
                            .any(|s| name.strip_suffix(s) == Some(n.as_str())))
            })
            .unwrap_or_else(|| panic!("{name} has no TYPE line before it"));
        if family.1 == "counter" {
            assert!(v >= 0.0, "{line}");
        }
        samples.push((series.to_string(), v));
    }
    samples
}

/// Reads `n` parts of an MJPEG stream and checks each is a whole JPEG of
/// its Content-Length.
fn read_mjpeg_parts(addr: SocketAddr, n: usize) -> Vec<Vec<u8>> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET /stream.mjpeg HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let mut r = BufReader::new(s);
    let mut line = String::new();
    let mut boundary = None;
    loop {
        line.clear();
        r.read_line(&mut line).unwrap();
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some(b) = l.to_lowercase().split("boundary=").nth(1) {
            boundary = Some(b.to_string());
        }
    }
    let boundary = format!("--{}", boundary.expect("a multipart boundary"));
    let mut parts = vec![];
    while parts.len() < n {
        line.clear();
        r.read_line(&mut line).unwrap();
        assert_eq!(line.trim_end(), boundary);
        let mut len = None;
        loop {
            line.clear();
            r.read_line(&mut line).unwrap();
            let l = line.trim_end().to_lowercase();
            if l.is_empty() {
                break;
            }
            if let Some(v) = l.strip_prefix("content-length: ") {
                len = Some(v.parse::<usize>().unwrap());
            }
            if let Some(v) = l.strip_prefix("content-type: ") {
                assert_eq!(v, "image/jpeg");
            }
        }
        let mut jpeg = vec![0; len.expect("a Content-Length")];
        r.read_exact(&mut jpeg).unwrap();
        assert_eq!(&jpeg[..2], &[0xff, 0xd8], "SOI");
        assert_eq!(&jpeg[jpeg.len() - 2..], &[0xff, 0xd9], "EOI");
        let mut crlf = [0u8; 2];
        r.read_exact(&mut crlf).unwrap();
        assert_eq!(&crlf, b"\r\n");
        parts.push(jpeg);
    }
    parts
}

#[test]
fn the_api_metrics_and_mjpeg_stream_serve_what_they_say() {
    let dir = tempfile::tempdir().unwrap();
    let demo = Demo::start(
        dir.path(),
        &[
            "--source",
            "synthetic:seed=2026,fps=60",
            "--duration",
            "20",
            "--stats-interval",
            "0.5",
            "--mqtt",
            "mqtt://cam:hunter2@127.0.0.1:9",
            "--mqtt-spool-mb",
            "0",
        ],
    );
    // the page
    let page = demo.get("/");
    assert_eq!(page.status, 200);
    assert!(page.head.contains("content-type: text/html"));
    assert!(page.text().contains("api/frame.jpg"));
    // MJPEG: whole JPEG parts, one after the other, and different
    let parts = read_mjpeg_parts(demo.addr, 3);
    assert_ne!(parts[0], parts[2], "the stream's pictures change");
    // events numbered from 0, `since` returns the rest
    let ev = poll(&demo, "/api/events", 15, |r| {
        r.json()["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["event"]["type"] == "anomaly_start")
    })
    .json();
    let list = ev["events"].as_array().unwrap();
    assert!(!list.is_empty());
    assert_eq!(list[0]["seq"], 0);
    let next = ev["next"].as_u64().unwrap();
    assert_eq!(list.last().unwrap()["seq"].as_u64().unwrap() + 1, next);
    let later = demo.get(&format!("/api/events?since={}", next - 1)).json();
    assert_eq!(later["events"][0]["seq"].as_u64().unwrap(), next - 1);
    // stats and snapshots
    let st = poll(&demo, "/api/stats", 5, |r| !r.json()["stats"].is_null()).json();
    assert_eq!(st["stats"]["type"], "stats");
    assert!(st["processed"].as_u64().unwrap() > 0);
    let snaps = poll(&demo, "/api/snapshots", 10, |r| {
        !r.json().as_array().unwrap().is_empty()
    })
    .json();
    let url = snaps[0]["url"].as_str().unwrap().to_string();
    for path in [url.as_str(), "/api/snapshot/latest.jpg"] {
        let j = demo.get(path);
        assert_eq!(j.status, 200, "{path}");
        assert!(j.head.contains("content-type: image/jpeg"));
        assert_eq!(&j.body[..2], &[0xff, 0xd8]);
    }
    // the configuration, without the broker password
    let cfg = demo.get("/api/config");
    assert_eq!(cfg.status, 200);
    let c = cfg.json();
    assert_eq!(c["mqtt"], "mqtt://cam:***@127.0.0.1:9");
    assert!(!cfg.text().contains("hunter2"), "{}", cfg.text());
    assert_eq!(c["http_token"], false);
    // metrics in the Prometheus text format
    let m = demo.get("/metrics");
    assert_eq!(m.status, 200);
    assert!(m.head.contains("content-type: text/plain; version=0.0.4"));
    let samples = parse_prometheus(&m.text());
    let value = |k: &str| samples.iter().find(|(n, _)| n == k).map(|s| s.1);
    assert!(value("bvae_frames_processed_total").unwrap() > 0.0);
    assert!(value("bvae_fps").unwrap() > 10.0);
    assert_eq!(value("bvae_camera_up"), Some(1.0));
    assert!(value("bvae_anomalies_total").unwrap() >= 1.0);
    let count = value("bvae_frame_latency_seconds_count").unwrap();
    assert_eq!(
        value("bvae_frame_latency_seconds_bucket{le=\"+Inf\"}"),
        Some(count)
    );
    // the rest of HTTP
    assert_eq!(demo.get("/nothing").status, 404);
    assert_eq!(demo.get("/api/snapshot/999.jpg").status, 404);
    assert_eq!(request(demo.addr, "POST /", None).status, 405);
    let head = request(demo.addr, "HEAD /api/config", None);
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    let mut raw = TcpStream::connect(demo.addr).unwrap();
    raw.write_all(&vec![b'a'; 9000]).unwrap();
    let mut got = String::new();
    let _ = raw.read_to_string(&mut got);
    assert!(got.starts_with("HTTP/1.1 431"), "{got}");
    demo.finish();
}

#[test]
fn a_viewer_that_stops_reading_does_not_slow_the_loop() {
    let dir = tempfile::tempdir().unwrap();
    let demo = Demo::start(
        dir.path(),
        &["--source", "synthetic:seed=9,fps=30", "--duration", "12"],
    );
    // a viewer that opens the stream and never reads: its socket buffers
    // fill within a second or two
    let mut stuck = TcpStream::connect(demo.addr).unwrap();
    write!(stuck, "GET /stream.mjpeg HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let m = demo.get("/metrics").text();
    assert!(m.contains("bvae_web_viewers 1\n"), "{m}");
    // a second viewer still gets pictures meanwhile
    let parts = read_mjpeg_parts(demo.addr, 2);
    assert_eq!(parts.len(), 2);
    let err = demo.finish();
    drop(stuck);
    let line = err
        .lines()
        .find(|l| l.starts_with("processed "))
        .expect("the summary line");
    // "processed N frames in T s (F fps), D dropped, ..."
    let words: Vec<&str> = line.split_whitespace().collect();
    let frames: f64 = words[1].parse().unwrap();
    let fps: f64 = words[6].trim_start_matches('(').parse().unwrap();
    let dropped: f64 = words[8].parse().unwrap();
    eprintln!("with a stuck viewer: {line}");
    assert!(fps >= 28.0, "the loop slowed to {fps} fps: {line}");
    assert!(
        dropped <= 0.02 * frames,
        "{dropped} of {frames} dropped: {line}"
    );
}

#[test]
fn a_token_guards_every_path_and_only_loopback_listens_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "open sesame\n").unwrap();
    let demo = Demo::start(
        dir.path(),
        &[
            "--source",
            "synthetic:seed=3,fps=30",
            "--duration",
            "8",
            "--http",
            "0",
            "--http-token-file",
            s(&token_file),
        ],
    );
    assert!(demo.addr.ip().is_loopback(), "{}", demo.addr);
    for path in [
        "/",
        "/stream.mjpeg",
        "/api/config",
        "/metrics",
        "/api/frame.jpg",
    ] {
        let r = get(demo.addr, path, None);
        assert_eq!(r.status, 401, "{path}");
        assert!(r.head.contains("www-authenticate: basic"), "{path}");
        assert_eq!(get(demo.addr, path, Some("Bearer wrong")).status, 401);
    }
    assert_eq!(get(demo.addr, "/?token=wrong", None).status, 401);
    assert_eq!(get(demo.addr, "/?token=open%20sesame", None).status, 200);
    assert_eq!(
        get(demo.addr, "/metrics", Some("Bearer open sesame")).status,
        200
    );
    // Basic auth, any user name: "viewer:open sesame"
    let r = get(
        demo.addr,
        "/api/config",
        Some("Basic dmlld2VyOm9wZW4gc2VzYW1l"),
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["http_token"], true);
    assert!(!r.text().contains("sesame"));
    // 127.0.0.1 only: the same port on another loopback address (and so on
    // any other interface) has nobody listening
    let other = SocketAddr::from(([127, 0, 0, 2], demo.addr.port()));
    assert!(
        TcpStream::connect_timeout(&other, Duration::from_secs(2)).is_err(),
        "something listens on {other}"
    );
    demo.finish();
}

/// Debian's Chromium, if installed.
fn chromium() -> Option<PathBuf> {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

/// Runs headless Chromium on `url` with `args` (a fresh profile each
/// time); returns stdout.
fn run_chromium(bin: &Path, url: &str, args: &[&str]) -> String {
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", s(profile.path())))
        .args(args)
        .arg(url)
        .output()
        .expect("chromium runs");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The RGB pixels of a PNG.
fn decode_png(path: &Path) -> (usize, usize, Vec<u8>) {
    let dec = png::Decoder::new(BufReader::new(std::fs::File::open(path).unwrap()));
    let mut r = dec.read_info().unwrap();
    let mut buf = vec![0; r.output_buffer_size().unwrap()];
    let info = r.next_frame(&mut buf).unwrap();
    let ch = info.color_type.samples();
    let (w, h) = (info.width as usize, info.height as usize);
    let rgb = buf[..w * h * ch]
        .chunks_exact(ch)
        .flat_map(|p| [p[0], p[1], p[2]])
        .collect();
    (w, h, rgb)
}

#[test]
fn chromium_shows_a_live_picture_that_changes_and_the_events() {
    let Some(bin) = chromium() else {
        eprintln!("skipped: chromium is not installed (Debian package `chromium`)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let demo = Demo::start(
        dir.path(),
        &[
            "--source",
            "synthetic:seed=2026,fps=30",
            "--duration",
            "25",
            "--stats-interval",
            "1",
        ],
    );
    // until the first anomaly has ended and its snapshot is kept
    poll(&demo, "/api/events", 20, |r| {
        r.json()["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["event"]["type"] == "anomaly_end")
    });
    let url = format!("http://{}/", demo.addr);
    let shot = |name: &str| {
        let p = dir.path().join(name);
        run_chromium(
            &bin,
            &url,
            &["--window-size=1400,900", &format!("--screenshot={}", s(&p))],
        );
        p
    };
    let a = shot("a.png");
    std::thread::sleep(Duration::from_secs(2));
    let b = shot("b.png");
    // the live picture sits at the top left of the page (16 px margins,
    // under a header of about 46 px): 960 x 568 CSS pixels
    let (w, h, pa) = decode_png(&a);
    let (_, _, pb) = decode_png(&b);
    assert!(w >= 1000 && h >= 600, "{w}x{h}");
    let region = |p: &[u8]| -> Vec<u8> {
        let mut v = vec![];
        for y in 70..600 {
            v.extend_from_slice(&p[(y * w + 20) * 3..(y * w + 970) * 3]);
        }
        v
    };
    let (ra, rb) = (region(&pa), region(&pb));
    let spread = |v: &[u8]| {
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64;
        (v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / v.len() as f64).sqrt()
    };
    assert!(spread(&ra) > 10.0, "the live picture is blank");
    let changed = ra
        .chunks_exact(3)
        .zip(rb.chunks_exact(3))
        .filter(|(x, y)| x.iter().zip(*y).any(|(a, b)| a.abs_diff(*b) > 24))
        .count();
    assert!(
        changed > 500,
        "the live picture did not change between two screenshots ({changed} pixels)"
    );
    // the events list and the snapshots, as the page's script filled them in
    let dom = run_chromium(&bin, &url, &["--dump-dom"]);
    let items = dom.matches("<li class=").count();
    assert!(items >= 2, "the events list has {items} items:\n{dom}");
    assert!(dom.contains("anomaly_start"), "{dom}");
    assert!(dom.contains("<figure>"), "no snapshot on the page:\n{dom}");
    // keep the screenshot for the README (docs/web.png is one of these)
    if let Ok(out) = std::env::var("BVAE_WEB_SCREENSHOT") {
        std::fs::copy(&b, out).unwrap();
    }
    demo.finish();
}

#[test]
fn bad_http_options_and_a_busy_port_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port().to_string();
    let missing = dir.path().join("missing");
    for (args, needle) in [
        (vec!["--http", "nonsense"], "expected PORT or ADDRESS:PORT"),
        (vec!["--http", "70000"], "expected PORT or ADDRESS:PORT"),
        (vec!["--http", port.as_str()], "cannot listen on 127.0.0.1:"),
        (
            vec!["--http-token-file", "t"],
            "--http-token-file needs --http",
        ),
        (
            vec!["--http", "0", "--http-token-file", s(&missing)],
            "cannot open the token file",
        ),
    ] {
        let mut a = vec![
            "demo",
            "--headless",
            "--source",
            "synthetic:fps=0",
            "--max-frames",
            "1",
        ];
        a.extend(args);
        common::bvae(dir.path(), &a).fails_with(&[needle]);
    }
}
