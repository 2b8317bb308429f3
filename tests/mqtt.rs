//! `--mqtt` against a real broker: Debian's Mosquitto, started by the tests
//! on a loopback port (`.ci/run` installs it; without it these tests say
//! "skipped: …" and pass). The subscriber is rumqttc, the client bvae
//! itself uses, in a thread of the test.

#![cfg(feature = "mqtt")]

mod common;

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{bvae_command, model, s};
use rumqttc::{Client, Event, MqttOptions, Packet, QoS};
use serde_json::Value;

/// The `mosquitto` binary, if installed.
fn mosquitto() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.push("/usr/sbin".into());
    dirs.into_iter()
        .map(|d| d.join("mosquitto"))
        .find(|p| p.is_file())
}

/// A port nobody listens on now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A Mosquitto on 127.0.0.1 with its state kept in `dir` (persistence on,
/// so that sessions and queued messages survive a restart). Started as
/// root, Mosquitto would switch to its own user, which cannot write to the
/// test's folder: `user root` keeps it (and means nothing to a non-root
/// run).
struct Broker {
    bin: PathBuf,
    conf: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl Broker {
    fn start(dir: &Path) -> Option<Broker> {
        Broker::start_with(dir, "allow_anonymous true\n")
    }

    /// A broker whose configuration also holds `extra` (listeners,
    /// authentication); the plain listener on `port` comes first.
    fn start_with(dir: &Path, extra: &str) -> Option<Broker> {
        let Some(bin) = mosquitto() else {
            eprintln!("skipped: mosquitto is not installed (Debian package `mosquitto`)");
            return None;
        };
        let port = free_port();
        let conf = dir.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\n{extra}persistence true\n\
                 user root\n\
                 persistence_location {}/\nautosave_interval 1\n\
                 log_dest file {}/broker.log\nlog_type all\n",
                s(dir),
                s(dir)
            ),
        )
        .unwrap();
        let mut b = Broker {
            bin,
            conf,
            port,
            child: None,
        };
        b.run();
        Some(b)
    }

    fn run(&mut self) {
        let child = Command::new(&self.bin)
            .arg("-c")
            .arg(&self.conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto starts");
        self.child = Some(child);
        let until = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < until, "mosquitto did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the broker with SIGTERM (it saves its state) and waits.
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let _ = c.wait();
        }
    }

    fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A message as a subscriber got it.
#[derive(Debug, Clone)]
struct Msg {
    topic: String,
    payload: Vec<u8>,
    retain: bool,
}

/// A subscriber in a thread of its own, reconnecting after errors.
struct Sub {
    client: Client,
    got: Arc<Mutex<Vec<Msg>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sub {
    /// Subscribes `filters` with QoS 1; `persistent` keeps the session on
    /// the broker (clean session off) under client id `id`.
    fn new(port: u16, id: &str, persistent: bool, filters: &[&str]) -> Sub {
        Sub::with_login(port, id, persistent, filters, None)
    }

    /// [`Sub::new`] with a user and password.
    fn with_login(
        port: u16,
        id: &str,
        persistent: bool,
        filters: &[&str],
        login: Option<(&str, &str)>,
    ) -> Sub {
        let mut o = MqttOptions::new(id, "127.0.0.1", port);
        if let Some((u, p)) = login {
            o.set_credentials(u, p);
        }
        o.set_clean_session(!persistent);
        o.set_max_packet_size(16 << 20, 16 << 20);
        o.set_keep_alive(Duration::from_secs(5));
        let (client, mut conn) = Client::new(o, 64);
        for f in filters {
            client.subscribe(*f, QoS::AtLeastOnce).unwrap();
        }
        let got = Arc::new(Mutex::new(vec![]));
        let g = got.clone();
        let thread = std::thread::spawn(move || {
            for n in conn.iter() {
                match n {
                    Ok(Event::Incoming(Packet::Publish(p))) => g.lock().unwrap().push(Msg {
                        topic: p.topic.clone(),
                        payload: p.payload.to_vec(),
                        retain: p.retain,
                    }),
                    Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => break,
                    Ok(_) => {}
                    Err(_) => std::thread::sleep(Duration::from_millis(100)),
                }
            }
        });
        let sub = Sub {
            client,
            got,
            thread: Some(thread),
        };
        // the subscription is in place once the broker acknowledged it;
        // a retained message or a short wait tells
        std::thread::sleep(Duration::from_millis(300));
        sub
    }

    fn messages(&self) -> Vec<Msg> {
        self.got.lock().unwrap().clone()
    }

    fn on(&self, topic: &str) -> Vec<Msg> {
        self.messages()
            .into_iter()
            .filter(|m| m.topic == topic)
            .collect()
    }

    /// Waits until `done` holds for the messages, at most `secs`.
    fn wait_for(&self, secs: u64, done: impl Fn(&[Msg]) -> bool) -> bool {
        let until = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < until {
            if done(&self.messages()) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        done(&self.messages())
    }
}

impl Drop for Sub {
    fn drop(&mut self) {
        let _ = self.client.disconnect();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `bvae demo` on the synthetic scene, publishing to `url` as camera
/// `cam`, events also written to `events`; returns the running child.
fn demo(url: &str, dir: &Path, events: &Path, extra: &[&str]) -> Child {
    demo_env(url, dir, events, extra, &[])
}

/// [`demo`] with environment variables set.
fn demo_env(url: &str, dir: &Path, events: &Path, extra: &[&str], env: &[(&str, &str)]) -> Child {
    let spool = dir.join("spool");
    let models = model("synthetic.onnx").parent().unwrap().to_path_buf();
    let mut args = vec![
        "demo",
        "--models",
        s(&models),
        "--headless",
        "--events",
        s(events),
        "--mqtt",
        url,
        "--name",
        "cam",
        "--mqtt-spool",
        s(&spool),
    ]
    .into_iter()
    .map(String::from)
    .collect::<Vec<_>>();
    args.extend(extra.iter().map(|s| s.to_string()));
    bvae_command()
        .args(&args)
        .envs(env.iter().copied())
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("bvae starts")
}

/// Waits for `child` and returns its stderr; fails on a non-zero exit.
fn finish(mut child: Child) -> String {
    let mut err = String::new();
    if let Some(e) = child.stderr.take() {
        for line in BufReader::new(e).lines() {
            err.push_str(&line.unwrap_or_default());
            err.push('\n');
        }
    }
    let status = child.wait().unwrap();
    assert!(status.success(), "bvae failed:\n{err}");
    err
}

/// The events a run wrote, one JSON text per line.
fn written(events: &Path) -> Vec<String> {
    std::fs::read_to_string(events)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

/// The events the subscriber got, each resend of a message (QoS 1 is "at
/// least once") counted once: a repeat of any earlier payload is left out
/// (every event has its own time stamp and `t`).
fn received(sub: &Sub) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    sub.on("bvae/cam/events")
        .into_iter()
        .map(|m| String::from_utf8(m.payload).unwrap())
        .filter(|p| seen.insert(p.clone()))
        .collect()
}

fn kind(json: &str) -> String {
    serde_json::from_str::<Value>(json).unwrap()["type"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn a_subscriber_gets_every_event_in_order_with_retained_state_and_discovery() {
    let dir = tempfile::tempdir().unwrap();
    let Some(broker) = Broker::start(dir.path()) else {
        return;
    };
    let sub = Sub::new(broker.port, "test-live", false, &["bvae/cam/#"]);
    let events = dir.path().join("events.jsonl");
    let child = demo(
        &broker.url(),
        dir.path(),
        &events,
        &[
            "--source",
            "synthetic:seed=7,fps=0",
            "--max-frames",
            "420",
            "--stats-interval",
            "0.2",
        ],
    );
    let err = finish(child);
    let want = written(&events);
    assert!(
        sub.wait_for(10, |m| m
            .iter()
            .filter(|m| m.topic == "bvae/cam/events")
            .count()
            >= want.len()),
        "the subscriber got {} of {} events\n{err}",
        sub.on("bvae/cam/events").len(),
        want.len()
    );
    let got = received(&sub);
    assert_eq!(got, want, "events over MQTT differ from the event stream");
    let kinds: Vec<String> = got.iter().map(|e| kind(e)).collect();
    for k in ["anomaly_start", "anomaly_end", "stats", "summary"] {
        assert!(kinds.iter().any(|x| x == k), "no {k} event in {kinds:?}");
    }
    // state topics while running: ON and OFF in the order of the episodes,
    // stats as the stats events, online first and offline last
    let anomaly: Vec<String> = sub
        .on("bvae/cam/anomaly")
        .iter()
        .map(|m| String::from_utf8_lossy(&m.payload).into_owned())
        .collect();
    assert!(anomaly.contains(&"ON".to_string()), "{anomaly:?}");
    assert_eq!(anomaly.last().map(String::as_str), Some("OFF"));
    let avail: Vec<String> = sub
        .on("bvae/cam/available")
        .iter()
        .map(|m| String::from_utf8_lossy(&m.payload).into_owned())
        .collect();
    assert_eq!(avail.first().map(String::as_str), Some("online"));
    assert_eq!(avail.last().map(String::as_str), Some("offline"));
    let stats = sub.on("bvae/cam/stats");
    assert!(!stats.is_empty());
    for m in &stats {
        let v: Value = serde_json::from_slice(&m.payload).unwrap();
        assert_eq!(v["type"], "stats");
        assert_eq!(v["mqtt_connected"], true);
        assert_eq!(v["mqtt_dropped"], 0);
        assert!(v["ratio"].is_number(), "{v}");
    }
    assert!(
        err.contains("events delivered, 0 waiting in the spool, 0 dropped"),
        "{err}"
    );

    // a subscriber that comes later gets the retained state only
    let late = Sub::new(
        broker.port,
        "test-late",
        false,
        &["bvae/cam/#", "homeassistant/#"],
    );
    assert!(late.wait_for(5, |m| m.len() >= 8));
    let msgs = late.messages();
    assert!(msgs.iter().all(|m| m.retain), "only retained messages");
    let one = |t: &str| {
        let v: Vec<&Msg> = msgs.iter().filter(|m| m.topic == t).collect();
        assert_eq!(v.len(), 1, "{t}: {v:?}");
        v[0].payload.clone()
    };
    assert_eq!(one("bvae/cam/available"), b"offline");
    assert_eq!(one("bvae/cam/anomaly"), b"OFF");
    let jpeg = one("bvae/cam/snapshot");
    assert_eq!(&jpeg[..2], &[0xff, 0xd8], "a JPEG starts with SOI");
    assert_eq!(&jpeg[jpeg.len() - 2..], &[0xff, 0xd9], "and ends with EOI");
    assert!(
        msgs.iter().all(|m| m.topic != "bvae/cam/events"),
        "events are not retained"
    );
    let configs: Vec<&Msg> = msgs
        .iter()
        .filter(|m| m.topic.starts_with("homeassistant/"))
        .collect();
    assert_eq!(configs.len(), 5, "five discovery messages");
    for c in configs {
        let v: Value = serde_json::from_slice(&c.payload).unwrap();
        assert_eq!(v["device"]["identifiers"][0], "bvae_cam", "{}", c.topic);
        assert_eq!(v["availability_topic"], "bvae/cam/available");
    }
}

#[test]
fn the_last_will_says_offline_when_bvae_dies() {
    let dir = tempfile::tempdir().unwrap();
    let Some(broker) = Broker::start(dir.path()) else {
        return;
    };
    let sub = Sub::new(broker.port, "test-will", false, &["bvae/cam/available"]);
    let events = dir.path().join("events.jsonl");
    let mut child = demo(
        &broker.url(),
        dir.path(),
        &events,
        &["--source", "synthetic:seed=7,fps=30", "--duration", "60"],
    );
    assert!(
        sub.wait_for(20, |m| m.iter().any(|m| m.payload == b"online")),
        "never online"
    );
    child.kill().unwrap();
    let _ = child.wait();
    assert!(
        sub.wait_for(10, |m| m.last().is_some_and(|m| m.payload == b"offline")),
        "the broker did not publish the last will: {:?}",
        sub.messages()
    );
}

#[test]
fn a_broker_restart_loses_no_event() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mut broker) = Broker::start(dir.path()) else {
        return;
    };
    // a persistent session: the broker queues events for the subscriber
    // while it is away, and keeps them across its own restart
    let sub = Sub::new(broker.port, "test-restart", true, &["bvae/cam/events"]);
    let events = dir.path().join("events.jsonl");
    let child = demo(
        &broker.url(),
        dir.path(),
        &events,
        &[
            "--source",
            "synthetic:seed=11,fps=50",
            "--duration",
            "22",
            "--stats-interval",
            "0.25",
        ],
    );
    std::thread::sleep(Duration::from_secs(5));
    broker.stop();
    let stopped = Instant::now();
    let before = sub.on("bvae/cam/events").len();
    std::thread::sleep(Duration::from_secs(10));
    broker.run();
    let down = stopped.elapsed();
    let err = finish(child);
    let want = written(&events);
    sub.wait_for(15, |_| received(&sub).len() >= want.len());
    let got = received(&sub);
    let lost = want.iter().filter(|e| !got.contains(e)).count();
    eprintln!(
        "broker down {:.1} s; events written {}, received {} ({} before the stop), lost {lost}",
        down.as_secs_f64(),
        want.len(),
        got.len(),
        before
    );
    assert_eq!(
        lost,
        0,
        "events lost across the restart\n{err}\nbroker log:\n{}",
        std::fs::read_to_string(dir.path().join("broker.log")).unwrap_or_default()
    );
    assert_eq!(got, want, "events out of order");
    // the outage shows in the stats events: events queued while the
    // broker was away, none dropped
    let queued = want
        .iter()
        .filter(|e| kind(e) == "stats")
        .map(|e| serde_json::from_str::<Value>(e).unwrap())
        .filter(|v| v["mqtt_connected"] == false)
        .map(|v| v["mqtt_queued"].as_u64().unwrap())
        .max()
        .unwrap_or(0);
    assert!(queued >= 10, "stats never showed events queued: {queued}");
    assert!(
        want.iter()
            .all(|e| !e.contains("\"mqtt_dropped\":") || e.contains("\"mqtt_dropped\":0")),
        "events dropped"
    );
    assert!(err.contains("lost the broker"), "{err}");
}

#[test]
fn events_wait_in_the_spool_for_the_next_run_when_the_broker_never_comes() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mut broker) = Broker::start(dir.path()) else {
        return;
    };
    let url = broker.url();
    broker.stop();
    let events = dir.path().join("events.jsonl");
    let child = demo(
        &url,
        dir.path(),
        &events,
        &[
            "--source",
            "synthetic:seed=3,fps=0",
            "--max-frames",
            "200",
            "--stats-interval",
            "0.1",
        ],
    );
    let err = finish(child);
    let first = written(&events);
    assert!(err.contains("kept in the spool for the next run"), "{err}");
    // the broker is back; the next run delivers the first run's events
    // first, then its own
    broker.run();
    let sub = Sub::new(broker.port, "test-spool", false, &["bvae/cam/events"]);
    std::fs::remove_file(&events).unwrap();
    let child = demo(
        &url,
        dir.path(),
        &events,
        &["--source", "synthetic:seed=4,fps=0", "--max-frames", "50"],
    );
    let err = finish(child);
    let second = written(&events);
    let want: Vec<String> = first.iter().chain(&second).cloned().collect();
    sub.wait_for(10, |_| received(&sub).len() >= want.len());
    assert_eq!(received(&sub), want, "{err}");
}

#[test]
fn bad_mqtt_options_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    for (args, needle) in [
        (vec!["--mqtt", "http://x"], "must start with mqtt://"),
        (vec!["--mqtt", "mqtt://x:99999"], "port must be 1 to 65535"),
        (
            vec!["--mqtt", "mqtt://x", "--name", "a b"],
            "may only hold letters",
        ),
        (vec!["--mqtt-prefix", "x"], "--mqtt-prefix needs --mqtt URL"),
        (
            vec!["--mqtt", "mqtt://x", "--mqtt-ca", "ca.pem"],
            "--mqtt-ca is for mqtts://",
        ),
        (
            vec!["--mqtt", "mqtt://x", "--mqtt-spool-mb=-1"],
            "spool cap must be",
        ),
        (
            vec!["--mqtt", "mqtt://u@x", "--mqtt-password-file", "missing"],
            "cannot open the password file",
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

/// Runs `program args` in `dir`; false if it is missing or fails.
fn sh(dir: &Path, program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A CA and a server certificate for `localhost` signed by it, made with
/// the openssl command: `ca.pem`, `server.pem`, `server.key` in `dir`.
fn make_certificates(dir: &Path) -> bool {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=bvae test CA",
    ]);
    let mut csr = vec!["req"];
    csr.extend(ec);
    csr.extend([
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ]);
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .unwrap();
    sh(dir, "openssl", &ca)
        && sh(dir, "openssl", &csr)
        && sh(
            dir,
            "openssl",
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "server.pem",
                "-days",
                "2",
                "-extfile",
                "ext.cnf",
            ],
        )
}

#[test]
fn mqtts_with_a_ca_file_delivers_and_a_wrong_ca_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    if !make_certificates(dir.path()) {
        eprintln!("skipped: the openssl command cannot make test certificates");
        return;
    }
    let tls_port = free_port();
    let d = s(dir.path());
    let extra = format!(
        "allow_anonymous true\nlistener {tls_port} 127.0.0.1\ncafile {d}/ca.pem\n\
         certfile {d}/server.pem\nkeyfile {d}/server.key\n"
    );
    let Some(broker) = Broker::start_with(dir.path(), &extra) else {
        return;
    };
    let sub = Sub::new(broker.port, "test-tls", false, &["bvae/cam/events"]);
    let url = format!("mqtts://localhost:{tls_port}");
    let events = dir.path().join("events.jsonl");
    let ca = dir.path().join("ca.pem");
    let child = demo(
        &url,
        dir.path(),
        &events,
        &[
            "--source",
            "synthetic:seed=5,fps=0",
            "--max-frames",
            "200",
            "--mqtt-ca",
            s(&ca),
        ],
    );
    let err = finish(child);
    let want = written(&events);
    sub.wait_for(10, |_| received(&sub).len() >= want.len());
    assert_eq!(received(&sub), want, "{err}");

    // a CA that did not sign the broker's certificate: no connection, the
    // run goes on and keeps its events
    let other = dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    assert!(make_certificates(&other));
    let child = demo(
        &url,
        dir.path(),
        &events,
        &[
            "--source",
            "synthetic:seed=5,fps=0",
            "--max-frames",
            "20",
            "--mqtt-ca",
            s(&other.join("ca.pem")),
        ],
    );
    let err = finish(child);
    assert!(err.contains("cannot reach the broker"), "{err}");
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    assert!(err.contains("kept in the spool"), "{err}");
}

#[test]
fn a_password_from_the_environment_or_a_file_logs_in_and_a_wrong_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("passwd");
    std::fs::write(&pw, "").unwrap();
    if !sh(
        dir.path(),
        "mosquitto_passwd",
        &["-b", s(&pw), "cam", "s3cret"],
    ) || !sh(
        dir.path(),
        "mosquitto_passwd",
        &["-b", s(&pw), "tester", "t"],
    ) {
        eprintln!("skipped: mosquitto_passwd is not installed");
        return;
    }
    let extra = format!("allow_anonymous false\npassword_file {}\n", s(&pw));
    let Some(broker) = Broker::start_with(dir.path(), &extra) else {
        return;
    };
    let sub = Sub::with_login(
        broker.port,
        "test-login",
        false,
        &["bvae/cam/events"],
        Some(("tester", "t")),
    );
    let url = format!("mqtt://cam@127.0.0.1:{}", broker.port);
    let events = dir.path().join("events.jsonl");
    let args = ["--source", "synthetic:seed=5,fps=0", "--max-frames", "30"];
    // the password from the environment
    let child = demo_env(
        &url,
        dir.path(),
        &events,
        &args,
        &[("BVAE_MQTT_PASSWORD", "s3cret")],
    );
    let err = finish(child);
    let first = written(&events);
    sub.wait_for(10, |_| received(&sub).len() >= first.len());
    assert_eq!(received(&sub), first, "{err}");
    // from a file, which wins over the environment
    let file = dir.path().join("mqtt-password");
    std::fs::write(&file, "s3cret\n").unwrap();
    let mut with_file = args.to_vec();
    with_file.extend(["--mqtt-password-file", s(&file)]);
    let child = demo_env(
        &url,
        dir.path(),
        &events,
        &with_file,
        &[("BVAE_MQTT_PASSWORD", "wrong")],
    );
    let err = finish(child);
    let both = written(&events);
    sub.wait_for(10, |_| received(&sub).len() >= both.len());
    assert_eq!(received(&sub), both, "{err}");
    // a wrong password: refused by the broker, named, events kept
    let child = demo_env(
        &url,
        dir.path(),
        &events,
        &args,
        &[("BVAE_MQTT_PASSWORD", "wrong")],
    );
    let err = finish(child);
    assert!(err.contains("cannot reach the broker"), "{err}");
    assert!(
        err.contains("NotAuthorized") || err.contains("BadUserNamePassword"),
        "{err}"
    );
    assert!(
        !err.contains("s3cret") && !err.contains("wrong"),
        "a secret in the log: {err}"
    );
}
