//! The MQTT client's thread: it owns the connection (rumqttc), the
//! [`Outbox`] of events and the latest state of each state topic, and
//! never makes the live loop wait.
//!
//! The loop hands it requests over a bounded channel ([`Request`]). While
//! connected, events go out in order with QoS 1, at most [`WINDOW`]
//! unacknowledged at a time; an event leaves the outbox when the broker
//! acknowledged it. When the connection drops, everything unacknowledged
//! is sent again after the reconnect (rumqttc's own resend queue is
//! emptied, so nothing goes out twice from two queues or out of order).
//! On every connect the retained state is published again: `online`, the
//! discovery messages, the anomaly state and the last snapshot, so that a
//! broker that lost its retained messages in a restart gets them back.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rumqttc::{
    Client, Connection, ConnectionError, Event, LastWill, MqttOptions, Outgoing, Packet, QoS,
    TlsConfiguration, Transport,
};

use super::config::MqttConfig;
use super::discovery;
use super::outbox::Outbox;

/// Events sent and not yet acknowledged, at most.
pub const WINDOW: usize = 32;
/// Events kept in memory before the spool takes them.
pub const MEMORY_EVENTS: usize = 2048;
/// Largest MQTT packet sent or received (a snapshot JPEG fits).
pub const MAX_PACKET: usize = 8 << 20;
/// First wait before a reconnect; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// Longest wait between two connection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How long the client waits for the network when connected, before it
/// looks at the loop's requests again.
const POLL: Duration = Duration::from_millis(20);

/// What the live loop hands to the client thread.
#[derive(Debug)]
pub enum Request {
    /// An event, as the JSON the event stream writes.
    Event {
        /// The JSON.
        payload: Vec<u8>,
        /// What it changes on the state topics.
        kind: EventKind,
    },
    /// The frame of an anomaly report with its heatmap, RGB rows.
    Snapshot {
        /// Width in pixels.
        width: usize,
        /// Height in pixels.
        height: usize,
        /// `width * height * 3` bytes.
        rgb: Vec<u8>,
    },
    /// The run is over: deliver what is queued within `wait`, say
    /// `offline`, disconnect, spool the rest.
    Close {
        /// Longest time to wait for the broker to take the queued events.
        wait: Duration,
    },
}

/// What an event means for the state topics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// `anomaly_start`: `<prefix>/anomaly` is `ON`.
    AnomalyOn,
    /// `anomaly_end`: `OFF`.
    AnomalyOff,
    /// `stats`: also published to `<prefix>/stats`.
    Stats,
    /// Any other event.
    Other,
}

/// The client's figures, shared with the loop (for the `stats` event).
#[derive(Debug, Default)]
pub struct Status {
    /// Whether the broker is connected.
    pub connected: AtomicBool,
    /// Events waiting (memory and spool).
    pub queued: AtomicU64,
    /// Events dropped: the spool's cap was reached, or the channel from
    /// the loop was full.
    pub dropped: AtomicU64,
    /// Events the broker acknowledged.
    pub delivered: AtomicU64,
}

/// A state topic's latest value and whether the broker has it.
#[derive(Debug, Default)]
struct State {
    payload: Option<Vec<u8>>,
    dirty: bool,
}

impl State {
    fn set(&mut self, payload: Vec<u8>) {
        self.payload = Some(payload);
        self.dirty = true;
    }
}

/// What a message handed to rumqttc was, in the order handed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tag {
    /// The next event of the outbox.
    Event,
    /// A state, discovery or availability message (not tracked).
    State,
}

/// rumqttc's options for `cfg`.
pub fn options(cfg: &MqttConfig) -> Result<MqttOptions> {
    let mut o = MqttOptions::new(
        cfg.client_id.clone(),
        cfg.broker.host.clone(),
        cfg.broker.port,
    );
    o.set_keep_alive(Duration::from_secs(cfg.keep_alive_s.max(5)));
    // The outbox resends what was not acknowledged; the broker keeps no
    // session for the publisher.
    o.set_clean_session(true);
    o.set_max_packet_size(MAX_PACKET, MAX_PACKET);
    o.set_inflight(WINDOW as u16 + 16);
    o.set_request_channel_capacity(WINDOW * 2 + 16);
    o.set_last_will(LastWill::new(
        cfg.topic("available"),
        "offline",
        QoS::AtLeastOnce,
        true,
    ));
    if let Some(user) = &cfg.user {
        o.set_credentials(user.clone(), cfg.password.clone().unwrap_or_default());
    }
    if cfg.broker.tls {
        o.set_transport(Transport::Tls(TlsConfiguration::Rustls(Arc::new(
            tls_config(cfg)?,
        ))));
    }
    Ok(o)
}

/// rustls's client configuration: the CA file's certificates, or the
/// system's roots; the `ring` provider.
fn tls_config(cfg: &MqttConfig) -> Result<rustls::ClientConfig> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    match &cfg.ca {
        Some(path) => {
            let meta = std::fs::metadata(path)
                .with_context(|| format!("cannot read the CA file {}", path.display()))?;
            anyhow::ensure!(
                meta.len() <= 4 << 20,
                "the CA file {} is larger than 4 MB",
                path.display()
            );
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .with_context(|| format!("cannot read the CA file {}", path.display()))?
                .collect::<Result<_, _>>()
                .with_context(|| format!("the CA file {} is not PEM", path.display()))?;
            anyhow::ensure!(
                !certs.is_empty(),
                "the CA file {} holds no certificate",
                path.display()
            );
            for c in certs {
                roots
                    .add(c)
                    .with_context(|| format!("a certificate in {} is invalid", path.display()))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for c in found.certs {
                let _ = roots.add(c);
            }
            anyhow::ensure!(
                !roots.is_empty(),
                "no CA certificates found on this system for mqtts://: give one with --mqtt-ca FILE"
            );
        }
    }
    // rustls 0.23.48 deprecates `ring`'s provider for lacking
    // post-quantum key exchange; the other provider, aws-lc-rs, needs
    // cmake and a C toolchain for every board target. A broker on the
    // local network is what this connects to.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("setting up TLS")?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// The client thread's state.
pub struct Worker {
    cfg: MqttConfig,
    client: Client,
    conn: Connection,
    rx: Receiver<Request>,
    status: Arc<Status>,
    outbox: Outbox,
    /// Handed to rumqttc, not yet reported sent by it.
    tags: VecDeque<Tag>,
    /// Packet ids of events sent, oldest first, and whether each was
    /// acknowledged.
    pkids: VecDeque<(u16, bool)>,
    connected: bool,
    anomaly: State,
    stats: State,
    snapshot: State,
    /// Whether `online` and the discovery messages are due.
    announce: bool,
    closing: Option<Instant>,
    /// The last connection error printed (printed again only when it
    /// changes).
    last_error: Option<String>,
}

impl Worker {
    /// A worker for `cfg`, reading `rx`; the spool (if any) is opened now.
    pub fn new(cfg: MqttConfig, rx: Receiver<Request>, status: Arc<Status>) -> Result<Worker> {
        let outbox = match &cfg.spool {
            Some(dir) => Outbox::with_spool(MEMORY_EVENTS, dir, cfg.spool_bytes)?,
            None => Outbox::memory(MEMORY_EVENTS),
        };
        let (client, conn) = Client::new(options(&cfg)?, WINDOW * 2 + 16);
        let mut w = Worker {
            cfg,
            client,
            conn,
            rx,
            status,
            outbox,
            tags: VecDeque::new(),
            pkids: VecDeque::new(),
            connected: false,
            anomaly: State::default(),
            stats: State::default(),
            snapshot: State::default(),
            announce: true,
            closing: None,
            last_error: None,
        };
        w.anomaly.set(b"OFF".to_vec());
        w.publish_counts();
        Ok(w)
    }

    fn publish_counts(&self) {
        let c = self.outbox.counts();
        self.status
            .queued
            .store(c.memory + c.disk, Ordering::Relaxed);
        self.status.dropped.fetch_max(c.dropped, Ordering::Relaxed);
    }

    /// Takes one request from the loop.
    fn take(&mut self, r: Request) {
        match r {
            Request::Event { payload, kind } => {
                match kind {
                    EventKind::AnomalyOn => self.anomaly.set(b"ON".to_vec()),
                    EventKind::AnomalyOff => self.anomaly.set(b"OFF".to_vec()),
                    EventKind::Stats => self.stats.set(payload.clone()),
                    EventKind::Other => {}
                }
                self.outbox.push(payload);
            }
            Request::Snapshot { width, height, rgb } => {
                match crate::imageio::encode_jpeg(width, height, &rgb) {
                    Ok(jpeg) => self.snapshot.set(jpeg),
                    Err(e) => eprintln!("mqtt: snapshot not published: {e:#}"),
                }
            }
            Request::Close { wait } => self.closing = Some(Instant::now() + wait),
        }
        if let Some(e) = self.outbox.take_error() {
            eprintln!("mqtt: spool: {e}");
        }
    }

    /// Takes every request waiting; false once the loop's side is gone.
    fn drain(&mut self) -> bool {
        loop {
            match self.rx.try_recv() {
                Ok(r) => self.take(r),
                Err(TryRecvError::Empty) => return true,
                Err(TryRecvError::Disconnected) => {
                    if self.closing.is_none() {
                        self.closing = Some(Instant::now());
                    }
                    return false;
                }
            }
        }
    }

    fn send(&mut self, topic: String, payload: Vec<u8>, retain: bool, tag: Tag) -> bool {
        match self
            .client
            .try_publish(topic, QoS::AtLeastOnce, retain, payload)
        {
            Ok(()) => {
                self.tags.push_back(tag);
                true
            }
            Err(_) => false,
        }
    }

    /// While connected: the state that changed, then events up to the window.
    fn publish(&mut self) {
        if self.announce {
            let avail = self.cfg.topic("available");
            if !self.send(avail, b"online".to_vec(), true, Tag::State) {
                return;
            }
            for d in discovery::messages(&self.cfg) {
                let body = d.payload.to_string().into_bytes();
                self.send(d.topic, body, true, Tag::State);
            }
            self.announce = false;
        }
        for (leaf, retain) in [("anomaly", true), ("stats", false), ("snapshot", true)] {
            let st = match leaf {
                "anomaly" => &mut self.anomaly,
                "stats" => &mut self.stats,
                _ => &mut self.snapshot,
            };
            if !st.dirty {
                continue;
            }
            let Some(p) = st.payload.clone() else {
                st.dirty = false;
                continue;
            };
            let topic = self.cfg.topic(leaf);
            if self.send(topic, p, retain, Tag::State) {
                match leaf {
                    "anomaly" => self.anomaly.dirty = false,
                    "stats" => self.stats.dirty = false,
                    _ => self.snapshot.dirty = false,
                }
            }
        }
        let events = self.cfg.topic("events");
        while self.outbox.in_flight() < WINDOW {
            let Some(p) = self.outbox.next_unsent() else {
                break;
            };
            let p = p.to_vec();
            if !self.send(events.clone(), p, false, Tag::Event) {
                break;
            }
            self.outbox.mark_sent();
        }
    }

    /// The connection ended: what was in flight goes again, rumqttc's own
    /// resend queue is emptied.
    fn disconnected(&mut self, why: &ConnectionError) {
        let was = self.connected;
        self.connected = false;
        self.status.connected.store(false, Ordering::Relaxed);
        self.conn.eventloop.pending.clear();
        self.tags.clear();
        self.pkids.clear();
        self.outbox.rewind();
        self.announce = true;
        for s in [&mut self.anomaly, &mut self.snapshot] {
            s.dirty = s.payload.is_some();
        }
        let msg = why.to_string();
        if was || self.last_error.as_deref() != Some(msg.as_str()) {
            eprintln!(
                "mqtt: {} {}: {msg}; events are kept until it is back",
                if was {
                    "lost the broker"
                } else {
                    "cannot reach the broker"
                },
                self.cfg.broker.redacted()
            );
            self.last_error = Some(msg);
        }
    }

    fn event(&mut self, ev: Event) {
        match ev {
            Event::Incoming(Packet::ConnAck(_)) => {
                self.connected = true;
                if let Some(t) = discovery::birth_topic(&self.cfg) {
                    let _ = self.client.try_subscribe(t, QoS::AtMostOnce);
                }
                self.status.connected.store(true, Ordering::Relaxed);
                if self.last_error.take().is_some() {
                    eprintln!("mqtt: connected to {}", self.cfg.broker.redacted());
                }
                self.announce = true;
            }
            Event::Outgoing(Outgoing::Publish(pkid)) => {
                let tag = self.tags.pop_front();
                if tag == Some(Tag::Event) {
                    self.pkids.push_back((pkid, false));
                }
            }
            // Home Assistant (re)started: discovery and state again
            Event::Incoming(Packet::Publish(p))
                if discovery::birth_topic(&self.cfg).as_deref() == Some(p.topic.as_str())
                    && p.payload.as_ref() == b"online" =>
            {
                self.announce = true;
                for s in [&mut self.anomaly, &mut self.snapshot] {
                    s.dirty = s.payload.is_some();
                }
            }
            Event::Incoming(Packet::PubAck(ack)) => {
                if let Some(p) = self.pkids.iter_mut().find(|p| p.0 == ack.pkid && !p.1) {
                    p.1 = true;
                }
                while self.pkids.front().is_some_and(|p| p.1) {
                    self.pkids.pop_front();
                    self.outbox.ack();
                    self.status.delivered.fetch_add(1, Ordering::Relaxed);
                }
            }
            _ => {}
        }
    }

    /// Whether a closing worker is done: everything delivered, or the
    /// wait is over.
    fn done(&self) -> bool {
        self.closing.is_some_and(|at| {
            (self.outbox.is_empty()
                && self.connected
                && self.tags.is_empty()
                && !self.anomaly.dirty
                && !self.snapshot.dirty)
                || Instant::now() >= at
        })
    }

    /// Runs until the loop closes the client; then says `offline`,
    /// disconnects and spools what the broker did not take.
    pub fn run(mut self) {
        let mut backoff = FIRST_BACKOFF;
        loop {
            self.drain();
            self.publish_counts();
            if self.done() {
                break;
            }
            if self.connected {
                self.publish();
                match self.conn.recv_timeout(POLL) {
                    Ok(Ok(ev)) => self.event(ev),
                    Ok(Err(e)) => self.disconnected(&e),
                    Err(rumqttc::RecvTimeoutError::Timeout) => {}
                    Err(rumqttc::RecvTimeoutError::Disconnected) => break,
                }
                continue;
            }
            // Connecting blocks for at most rumqttc's connection timeout;
            // the loop's requests wait in the channel meanwhile.
            match self.conn.recv() {
                Ok(Ok(ev)) => {
                    self.event(ev);
                    if self.connected {
                        backoff = FIRST_BACKOFF;
                    }
                }
                Ok(Err(e)) => {
                    self.disconnected(&e);
                    let until = Instant::now() + backoff;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    while Instant::now() < until && !self.done() {
                        match self.rx.recv_timeout(POLL) {
                            Ok(r) => self.take(r),
                            Err(RecvTimeoutError::Timeout) => {}
                            Err(RecvTimeoutError::Disconnected) => {
                                if self.closing.is_none() {
                                    self.closing = Some(Instant::now());
                                }
                                break;
                            }
                        }
                    }
                }
                Err(_) => break,
            }
        }
        self.goodbye();
    }

    /// `offline`, a clean disconnect, and the spool.
    fn goodbye(&mut self) {
        if self.connected {
            let avail = self.cfg.topic("available");
            self.send(avail, b"offline".to_vec(), true, Tag::State);
            let _ = self.client.try_disconnect();
            let until = Instant::now() + Duration::from_secs(1);
            while Instant::now() < until {
                match self.conn.recv_timeout(POLL) {
                    Ok(Ok(Event::Outgoing(Outgoing::Disconnect))) => break,
                    Ok(Ok(ev)) => self.event(ev),
                    Ok(Err(_)) | Err(rumqttc::RecvTimeoutError::Disconnected) => break,
                    Err(rumqttc::RecvTimeoutError::Timeout) => {}
                }
            }
        }
        self.drain();
        let left = self.outbox.counts();
        match self.outbox.close() {
            Ok(lost) => {
                if left.memory + left.disk > 0 {
                    if self.cfg.spool.is_some() {
                        eprintln!(
                            "mqtt: {} events not delivered, kept in the spool for the next run",
                            left.memory + left.disk
                        );
                    } else {
                        eprintln!("mqtt: {lost} events not delivered (no spool)");
                    }
                }
            }
            Err(e) => eprintln!("mqtt: spool: {e:#}"),
        }
        self.publish_counts();
    }
}
