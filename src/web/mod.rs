//! The web view (`--http ADDR:PORT`, feature `http`; off by default, on
//! 127.0.0.1 unless another address is named).
//!
//! | path | what |
//! | --- | --- |
//! | `/` | the page: the live picture (the window's panels: frame, model input, reconstruction, heatmap, latent bars, score history), the recent events and the anomaly snapshots |
//! | `/stream.mjpeg` | the live picture as MJPEG (browsers, VLC, Home Assistant's MJPEG camera) |
//! | `/api/frame.jpg` | the next live picture, one JPEG |
//! | `/api/stats` | the last `stats` event and the live figures |
//! | `/api/events?since=N` | the recent events numbered from N on, and the next number |
//! | `/api/snapshots`, `/api/snapshot/latest.jpg`, `/api/snapshot/ID.jpg` | the last anomaly snapshots (frame with its heatmap) |
//! | `/api/config` | the settings, without secrets |
//! | `/metrics` | Prometheus text: fps, frames, dropped, latency histogram, anomalies, camera up |
//!
//! The picture is the live window's, drawn by the same renderer
//! ([`crate::display::render`]), and only while someone watches: an MJPEG
//! stream is open or a picture was asked for in the last seconds. It is
//! encoded on a thread of its own; a slow viewer gets fewer pictures and
//! never slows the loop. Viewers and connections are bounded. An optional
//! token (`--http-token-file`, or `BVAE_HTTP_TOKEN`) protects every path.

pub mod http;
pub mod metrics;
pub mod server;
pub mod state;
pub mod view;

use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::{Context, Result, bail};

use crate::display::RenderConfig;
use crate::display::render::{HEIGHT, WIDTH};
pub use state::Shared;
pub use view::{WebEvents, WebFrames};

/// Environment variable with the web view's token (when no token file is
/// given).
pub const TOKEN_ENV: &str = "BVAE_HTTP_TOKEN";

/// `--http`: where to listen and how to check visitors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebConfig {
    /// The address as given (`8080`, `0.0.0.0:8080`, `[::]:8080`,
    /// `localhost:8080`).
    pub addr: String,
    /// `--http-token-file`.
    pub token_file: Option<PathBuf>,
}

impl WebConfig {
    /// The socket address: a bare port means 127.0.0.1.
    pub fn socket_addr(&self) -> Result<SocketAddr> {
        let a = self.addr.trim();
        let with_host = if !a.is_empty() && a.bytes().all(|b| b.is_ascii_digit()) {
            format!("127.0.0.1:{a}")
        } else {
            a.to_string()
        };
        with_host
            .to_socket_addrs()
            .with_context(|| {
                format!("--http {a:?}: expected PORT or ADDRESS:PORT (e.g. 8080, 0.0.0.0:8080)")
            })?
            .next()
            .with_context(|| format!("--http {a:?}: the name has no address"))
    }

    /// The token: the file's first line, else [`TOKEN_ENV`], else none.
    pub fn token(&self) -> Result<Option<String>> {
        let t = match &self.token_file {
            Some(p) => Some(crate::mqtt::config::read_secret(p, "token file")?),
            None => std::env::var(TOKEN_ENV).ok(),
        };
        match t {
            Some(t) if t.is_empty() => bail!("the web view's token is empty"),
            t => Ok(t),
        }
    }
}

/// The running web view.
pub struct Web {
    shared: Arc<Shared>,
    addr: SocketAddr,
    threads: Vec<JoinHandle<()>>,
    render: RenderConfig,
}

impl std::fmt::Debug for Web {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Web").field("addr", &self.addr).finish()
    }
}

impl Web {
    /// Listens on `cfg`'s address and starts the server and encoder
    /// threads; `config` is the JSON `/api/config` serves.
    pub fn start(cfg: &WebConfig, config: serde_json::Value, render: RenderConfig) -> Result<Web> {
        let addr = cfg.socket_addr()?;
        let token = cfg.token()?.map(Arc::<str>::from);
        let listener =
            TcpListener::bind(addr).with_context(|| format!("--http: cannot listen on {addr}"))?;
        let addr = listener.local_addr().context("--http")?;
        let mut config = config;
        if let Some(o) = config.as_object_mut() {
            o.insert("http".into(), addr.to_string().into());
            o.insert("http_token".into(), token.is_some().into());
        }
        let shared = Arc::new(Shared::new(config.to_string(), WIDTH * HEIGHT));
        let mut threads = vec![];
        let s = shared.clone();
        threads.push(
            std::thread::Builder::new()
                .name("bvae-http-accept".into())
                .spawn(move || server::accept_loop(listener, s, token))
                .context("starting the web server")?,
        );
        let s = shared.clone();
        threads.push(
            std::thread::Builder::new()
                .name("bvae-jpeg".into())
                .spawn(move || view::encode_loop(s))
                .context("starting the web view's encoder")?,
        );
        Ok(Web {
            shared,
            addr,
            threads,
            render,
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The observer that draws the live picture.
    pub fn frames(&self) -> WebFrames {
        let mut cfg = self.render.clone();
        cfg.hint = "";
        WebFrames::new(self.shared.clone(), cfg)
    }

    /// The sink that keeps the events.
    pub fn events(&self) -> WebEvents {
        WebEvents::new(self.shared.clone())
    }

    /// Stops the threads (open streams end).
    pub fn close(&mut self) {
        self.shared.shut_down();
        // wake the accepting thread with a connection of our own
        let wake = match self.addr {
            SocketAddr::V4(a) if a.ip().is_unspecified() => {
                SocketAddr::from(([127, 0, 0, 1], a.port()))
            }
            SocketAddr::V6(a) if a.ip().is_unspecified() => {
                SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, a.port()))
            }
            a => a,
        };
        let _ = TcpStream::connect_timeout(&wake, std::time::Duration::from_millis(500));
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Web {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_port_listens_on_loopback_only() {
        let c = |a: &str| WebConfig {
            addr: a.into(),
            token_file: None,
        };
        assert_eq!(
            c("8080").socket_addr().unwrap(),
            "127.0.0.1:8080".parse().unwrap()
        );
        assert_eq!(
            c("0.0.0.0:81").socket_addr().unwrap(),
            "0.0.0.0:81".parse().unwrap()
        );
        assert_eq!(
            c("[::1]:81").socket_addr().unwrap(),
            "[::1]:81".parse().unwrap()
        );
        for bad in ["", "x", "99999", "1.2.3.4"] {
            assert!(c(bad).socket_addr().is_err(), "{bad}");
        }
    }
}
