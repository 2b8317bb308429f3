//! The run step of `watch` and `demo`: the live loop with its sinks, set up
//! from resolved [`LiveSettings`], and what it prints at the end.

use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result};

use super::live_options::{EventsTo, LiveSettings};
use crate::calibrate::Profile;
use crate::live::Summary;
use crate::live::events::{EventSink, JsonLines, Tee};
use crate::live::snapshot::Snapshotter;
use crate::model::Model;

/// Set by Ctrl-C (SIGINT) or SIGTERM.
static STOP: AtomicBool = AtomicBool::new(false);

/// Installs the SIGINT/SIGTERM handler once.
pub fn install_stop_handler() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if let Err(e) = ctrlc::set_handler(|| STOP.store(true, Ordering::SeqCst)) {
            eprintln!("warning: Ctrl-C will not stop cleanly: {e}");
        }
    });
}

/// The stop flag the handler sets.
pub fn stop_flag() -> &'static AtomicBool {
    &STOP
}

/// Prints what the snapshotter did to stderr.
pub fn print_snapshots(s: &Snapshotter) {
    let c = s.counts();
    eprintln!(
        "snapshots: {} written to {} ({:.1} MB kept), {} failed, {} skipped after a failure, {} old ones deleted for the budget",
        c.written,
        s.dir().display(),
        s.used_bytes() as f64 / 1e6,
        c.failed,
        c.skipped,
        c.deleted
    );
}

/// Opens the events sink: a file (created, appended) or stdout.
pub fn open_sink(to: &EventsTo) -> Result<Box<dyn EventSink>> {
    Ok(match to {
        EventsTo::File(p) => {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .with_context(|| format!("cannot open events file {}", p.display()))?;
            Box::new(JsonLines::new(std::io::BufWriter::new(f)))
        }
        EventsTo::Stdout => Box::new(JsonLines::new(std::io::stdout())),
    })
}

/// Prints the end-of-run summary to stderr.
pub fn print_summary(s: &Summary) {
    eprintln!(
        "processed {} frames in {:.1} s ({:.1} fps), {} dropped, {} bad, {} anomalies, camera lost {} times, median latency {:.2} ms",
        s.processed,
        s.seconds,
        s.processed_fps,
        s.dropped,
        s.bad_frames,
        s.anomalies,
        s.camera_lost,
        s.latency_ms_p50
    );
    if let Some(t) = &s.truth {
        eprintln!(
            "ground truth: detected {} of {} injected anomalies, {} false alarms ({:.2} per 1000 normal frames), {:.2}% of normal frames above threshold, mean detection delay {}",
            t.detected,
            t.injected,
            t.false_alarms,
            t.false_alarms_per_1000,
            100.0 * t.normal_fpr,
            t.mean_delay_frames
                .map_or("-".to_string(), |d| format!("{d:.1} frames"))
        );
        for (k, (inj, det)) in &t.per_kind {
            eprintln!("  {k:<14} {det}/{inj}");
        }
    }
}

/// The live loop as `watch` and `demo` run it (on `model`'s runtime, made
/// from [`LiveSettings::threads`]): snapshots, the event sink, the stop handler and the window (titled
/// `title`) set up from `settings`, then the loop, its summary event and
/// the summary on stderr.
pub fn run_live(
    model: &Model,
    profile: &Profile,
    src: Box<dyn crate::source::FrameSource>,
    settings: &LiveSettings,
    title: &str,
) -> Result<()> {
    let mut snapshots = settings
        .snapshots
        .clone()
        .map(Snapshotter::new)
        .transpose()?;
    let mut json = open_sink(&settings.events)?;
    // the web view first: a port in use fails the run before the MQTT
    // client has announced anything
    #[cfg(feature = "http")]
    let mut web = start_web(settings, model, profile, title)?;
    let mut mqtt = start_mqtt(settings)?;
    #[cfg(feature = "http")]
    let (mut web_frames, mut web_events) = match &web {
        Some(w) => (Some(w.frames()), Some(w.events())),
        None => (None, None),
    };
    #[cfg(not(feature = "http"))]
    if settings.http.is_some() {
        anyhow::bail!("--http: this bvae was built without the `http` feature");
    }
    install_stop_handler();
    let mut window = super::window::open(settings.headless, model, profile, title);
    let mut observers: Vec<&mut dyn crate::live::observe::Observer> =
        window.iter_mut().map(|w| &mut **w as _).collect();
    if let Some(s) = snapshots.as_mut() {
        observers.push(s);
    }
    #[cfg(feature = "mqtt")]
    let mut mqtt_snapshots = mqtt.as_ref().and_then(|m| m.snapshots());
    #[cfg(feature = "mqtt")]
    if let Some(s) = mqtt_snapshots.as_mut() {
        observers.push(s);
    }
    #[cfg(feature = "http")]
    if let Some(w) = web_frames.as_mut() {
        observers.push(w);
    }
    let mut sinks: Vec<&mut dyn EventSink> = vec![json.as_mut()];
    if let Some(m) = mqtt.as_mut() {
        sinks.push(m);
    }
    #[cfg(feature = "http")]
    if let Some(w) = web_events.as_mut() {
        sinks.push(w);
    }
    let mut sink = Tee::new(sinks);
    let mut truth = crate::live::truth::Truth::for_config(&settings.live);
    observers.push(&mut truth);
    let mut summary = crate::live::run_with(
        model,
        profile,
        src,
        &settings.live,
        &mut sink,
        stop_flag(),
        &mut observers,
    )?;
    summary.truth = truth.summary();
    sink.emit(&crate::live::events::Event::Summary(summary.clone()))?;
    sink.flush()?;
    drop(sink);
    print_summary(&summary);
    if let Some(m) = mqtt.as_mut() {
        close_mqtt(m);
    }
    #[cfg(feature = "http")]
    if let Some(w) = web.as_mut() {
        w.close();
    }
    if let Some(s) = &snapshots {
        print_snapshots(s);
    }
    Ok(())
}

/// The MQTT client of `--mqtt` (secrets read now), connecting in the
/// background.
#[cfg(feature = "mqtt")]
fn start_mqtt(settings: &LiveSettings) -> Result<Option<crate::mqtt::Mqtt>> {
    let Some(cfg) = &settings.mqtt else {
        return Ok(None);
    };
    let mut cfg = cfg.clone();
    cfg.load_secrets().context("--mqtt")?;
    eprintln!(
        "mqtt: publishing to {} under {}/ ({})",
        cfg.broker.redacted(),
        cfg.prefix,
        cfg.spool
            .as_ref()
            .map_or("no spool".to_string(), |d| format!("spool {}", d.display()))
    );
    crate::mqtt::Mqtt::start(cfg).map(Some).context("--mqtt")
}

/// Without the `mqtt` feature `--mqtt` is refused.
#[cfg(not(feature = "mqtt"))]
fn start_mqtt(settings: &LiveSettings) -> Result<Option<NoMqtt>> {
    if settings.mqtt.is_some() {
        anyhow::bail!("--mqtt: this bvae was built without the `mqtt` feature");
    }
    Ok(None)
}

/// Stands in for the client in builds without the `mqtt` feature.
#[cfg(not(feature = "mqtt"))]
struct NoMqtt;

#[cfg(not(feature = "mqtt"))]
impl EventSink for NoMqtt {
    fn emit(&mut self, _event: &crate::live::events::Event) -> Result<()> {
        Ok(())
    }
}

/// Ends the MQTT client and says what it delivered.
#[cfg(feature = "mqtt")]
fn close_mqtt(m: &mut crate::mqtt::Mqtt) {
    m.close(crate::mqtt::CLOSE_WAIT);
    if let Some(d) = m.delivery() {
        eprintln!(
            "mqtt: {} events delivered, {} waiting in the spool, {} dropped",
            d.delivered, d.queued, d.dropped
        );
    }
}

#[cfg(not(feature = "mqtt"))]
fn close_mqtt(_m: &mut NoMqtt) {}

/// The web view of `--http`, listening before the loop starts.
#[cfg(feature = "http")]
fn start_web(
    settings: &LiveSettings,
    model: &Model,
    profile: &Profile,
    title: &str,
) -> Result<Option<crate::web::Web>> {
    let Some((addr, token_file)) = &settings.http else {
        return Ok(None);
    };
    let cfg = crate::web::WebConfig {
        addr: addr.clone(),
        token_file: token_file.clone(),
    };
    let name = settings
        .mqtt
        .as_ref()
        .map_or_else(crate::mqtt::config::default_name, |m| m.name.clone());
    let spec = model.spec();
    let config = serde_json::json!({
        "name": name,
        "command": title,
        "version": env!("CARGO_PKG_VERSION"),
        "model": model.path().display().to_string(),
        "model_sha256": model.sha256(),
        "input": format!("{}x{}x{}", spec.channels, spec.height, spec.width),
        "latent_dim": spec.latent_dim,
        "method": settings.live.method,
        "threshold": settings.live.threshold,
        "tiles": profile.tiles.as_ref().map(|t| format!("{}x{}", t.grid.cols(), t.grid.rows())),
        "threads": settings.threads,
        "mqtt": settings.mqtt.as_ref().map(|m| m.broker.redacted()),
        "mqtt_prefix": settings.mqtt.as_ref().map(|m| m.prefix.clone()),
        "snapshots": settings.snapshots.as_ref().map(|s| s.dir.display().to_string()),
    });
    let web = crate::web::Web::start(&cfg, config, crate::display::render_config(model, profile))?;
    eprintln!("web view: http://{}/", web.addr());
    Ok(Some(web))
}
