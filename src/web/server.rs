//! The web view's server: one thread accepts, one thread per connection
//! (at most [`MAX_CONNECTIONS`], at most [`MAX_VIEWERS`] of them MJPEG
//! streams), one request per connection.

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::json;

use super::http::{ReadError, Request, authorized, query_value, read_request, respond};
use super::state::{Shared, lock};

/// Connections served at once; more get 503.
pub const MAX_CONNECTIONS: usize = 32;
/// MJPEG streams at once; more get 503.
pub const MAX_VIEWERS: usize = 4;
/// How long a request may take to arrive.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a write may block: a viewer that reads nothing for this long
/// is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `/api/frame.jpg` waits for a fresh picture.
const FRAME_WAIT: Duration = Duration::from_secs(2);
/// Multipart boundary of the MJPEG stream.
const BOUNDARY: &str = "bvaeframe";
/// The page.
const PAGE: &str = include_str!("page.html");

/// Accepts connections until `shared` stops.
pub fn accept_loop(listener: TcpListener, shared: Arc<Shared>, token: Option<Arc<str>>) {
    for conn in listener.incoming() {
        if shared.stop.load(Ordering::Relaxed) {
            return;
        }
        let Ok(stream) = conn else {
            continue;
        };
        let n = shared.connections.fetch_add(1, Ordering::Relaxed);
        let s = shared.clone();
        let t = token.clone();
        if n >= MAX_CONNECTIONS {
            let mut stream = stream;
            let _ = stream.set_write_timeout(Some(READ_TIMEOUT));
            let _ = respond(
                &mut stream,
                "503 Service Unavailable",
                "text/plain",
                "",
                b"too many connections\n",
                false,
            );
            s.connections.fetch_sub(1, Ordering::Relaxed);
            continue;
        }
        let spawned = std::thread::Builder::new()
            .name("bvae-http".into())
            .spawn(move || {
                serve(stream, &s, t.as_deref());
                s.connections.fetch_sub(1, Ordering::Relaxed);
            });
        if spawned.is_err() {
            shared.connections.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Serves one connection.
fn serve(mut stream: TcpStream, shared: &Shared, token: Option<&str>) {
    let _ = stream.set_read_timeout(Some(READ_TIMEOUT));
    let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
    let req = match read_request(&mut stream) {
        Ok(r) => r,
        Err(ReadError::Incomplete) => return,
        Err(ReadError::TooLarge) => {
            let _ = respond(
                &mut stream,
                "431 Request Header Fields Too Large",
                "text/plain",
                "",
                b"request too large\n",
                false,
            );
            return;
        }
        Err(ReadError::Malformed) => {
            let _ = respond(
                &mut stream,
                "400 Bad Request",
                "text/plain",
                "",
                b"bad request\n",
                false,
            );
            return;
        }
    };
    let head = req.method == "HEAD";
    if req.method != "GET" && !head {
        let _ = respond(
            &mut stream,
            "405 Method Not Allowed",
            "text/plain",
            "Allow: GET, HEAD\r\n",
            b"GET or HEAD only\n",
            false,
        );
        return;
    }
    if let Some(t) = token
        && !authorized(&req, t)
    {
        let _ = respond(
            &mut stream,
            "401 Unauthorized",
            "text/plain",
            "WWW-Authenticate: Basic realm=\"bvae\", charset=\"UTF-8\"\r\n",
            b"a token is needed: Authorization: Bearer TOKEN, Basic auth with TOKEN as the password, or ?token=TOKEN\n",
            head,
        );
        return;
    }
    let _ = route(&mut stream, shared, &req, head);
}

fn json_response(w: &mut TcpStream, body: &serde_json::Value, head: bool) -> std::io::Result<()> {
    respond(
        w,
        "200 OK",
        "application/json",
        "",
        body.to_string().as_bytes(),
        head,
    )
}

fn not_found(w: &mut TcpStream, head: bool) -> std::io::Result<()> {
    respond(w, "404 Not Found", "text/plain", "", b"not found\n", head)
}

fn route(w: &mut TcpStream, shared: &Shared, req: &Request, head: bool) -> std::io::Result<()> {
    match req.path.as_str() {
        "/" | "/index.html" => respond(
            w,
            "200 OK",
            "text/html; charset=utf-8",
            "",
            PAGE.as_bytes(),
            head,
        ),
        "/stream.mjpeg" => stream_mjpeg(w, shared, head),
        "/api/frame.jpg" => {
            shared.want(FRAME_WAIT * 2);
            let current = lock(&shared.picture).generation;
            let (jpeg, generation) = shared.next_picture(current, FRAME_WAIT);
            if generation == 0 {
                respond(
                    w,
                    "503 Service Unavailable",
                    "text/plain",
                    "Retry-After: 1\r\n",
                    b"no picture yet\n",
                    head,
                )
            } else {
                respond(w, "200 OK", "image/jpeg", "", &jpeg, head)
            }
        }
        "/api/stats" => {
            let stats = lock(&shared.stats).clone();
            let stats: serde_json::Value = stats
                .and_then(|s| serde_json::from_str(&s).ok())
                .unwrap_or(serde_json::Value::Null);
            let m = &shared.metrics;
            let body = json!({
                "stats": stats,
                "processed": m.processed.load(Ordering::Relaxed),
                "fps": f64::from_bits(m.fps_bits.load(Ordering::Relaxed)),
                "anomaly": m.anomaly.load(Ordering::Relaxed),
                "anomalies": m.anomalies.load(Ordering::Relaxed),
                "camera_up": !m.camera_down.load(Ordering::Relaxed),
                "viewers": shared.viewers.load(Ordering::Relaxed),
                "uptime_s": shared.start.elapsed().as_secs_f64(),
            });
            json_response(w, &body, head)
        }
        "/api/events" => {
            let since: u64 = query_value(&req.query, "since")
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            let log = lock(&shared.events);
            let mut body = String::from("{\"next\":");
            body.push_str(&log.next.to_string());
            body.push_str(",\"events\":[");
            let mut first = true;
            for (seq, e) in log.kept.iter().filter(|(seq, _)| *seq >= since) {
                if !first {
                    body.push(',');
                }
                first = false;
                body.push_str("{\"seq\":");
                body.push_str(&seq.to_string());
                body.push_str(",\"event\":");
                body.push_str(e);
                body.push('}');
            }
            drop(log);
            body.push_str("]}");
            respond(w, "200 OK", "application/json", "", body.as_bytes(), head)
        }
        "/api/snapshots" => {
            let list: Vec<serde_json::Value> = lock(&shared.snapshots)
                .iter()
                .rev()
                .map(|s| {
                    json!({
                        "id": s.id,
                        "frame": s.frame,
                        "time": s.time,
                        "bytes": s.jpeg.len(),
                        "url": format!("/api/snapshot/{}.jpg", s.id),
                    })
                })
                .collect();
            json_response(w, &serde_json::Value::Array(list), head)
        }
        "/api/config" => respond(
            w,
            "200 OK",
            "application/json",
            "",
            shared.config.as_bytes(),
            head,
        ),
        "/metrics" => {
            let text = shared
                .metrics
                .render(shared.viewers.load(Ordering::Relaxed));
            respond(
                w,
                "200 OK",
                "text/plain; version=0.0.4; charset=utf-8",
                "",
                text.as_bytes(),
                head,
            )
        }
        p => match p
            .strip_prefix("/api/snapshot/")
            .and_then(|n| n.strip_suffix(".jpg"))
        {
            Some(which) => {
                let snaps = lock(&shared.snapshots);
                let s = if which == "latest" {
                    snaps.back()
                } else {
                    which
                        .parse::<u64>()
                        .ok()
                        .and_then(|id| snaps.iter().find(|s| s.id == id))
                };
                let jpeg = s.map(|s| s.jpeg.clone());
                drop(snaps);
                match jpeg {
                    Some(j) => respond(w, "200 OK", "image/jpeg", "", &j, head),
                    None => not_found(w, head),
                }
            }
            None => not_found(w, head),
        },
    }
}

/// Decrements the viewer count when a stream ends, however it ends.
struct Viewer<'a>(&'a Shared);

impl Drop for Viewer<'_> {
    fn drop(&mut self) {
        self.0.viewers.fetch_sub(1, Ordering::Relaxed);
    }
}

/// `multipart/x-mixed-replace`, one JPEG part per new picture. A slow
/// viewer gets fewer pictures: each part is the latest picture when the
/// previous part was written; the loop does not wait for it.
fn stream_mjpeg(w: &mut TcpStream, shared: &Shared, head: bool) -> std::io::Result<()> {
    if shared.viewers.fetch_add(1, Ordering::Relaxed) >= MAX_VIEWERS {
        shared.viewers.fetch_sub(1, Ordering::Relaxed);
        return respond(
            w,
            "503 Service Unavailable",
            "text/plain",
            "Retry-After: 5\r\n",
            b"too many viewers\n",
            head,
        );
    }
    let _viewer = Viewer(shared);
    write!(
        w,
        "HTTP/1.1 200 OK\r\nContent-Type: multipart/x-mixed-replace; boundary={BOUNDARY}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n\r\n"
    )?;
    if head {
        return w.flush();
    }
    let mut seen = 0;
    while !shared.stop.load(Ordering::Relaxed) {
        let (jpeg, generation) = shared.next_picture(seen, Duration::from_secs(1));
        if generation == seen {
            continue;
        }
        seen = generation;
        write!(
            w,
            "--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\n\r\n",
            jpeg.len()
        )?;
        w.write_all(&jpeg)?;
        w.write_all(b"\r\n")?;
        w.flush()?;
    }
    Ok(())
}
