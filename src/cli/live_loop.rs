//! The run step of `watch` and `demo`: the live loop with its sinks, set up
//! from resolved [`LiveSettings`], and what it prints at the end.

use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result};

use super::live_options::{EventsTo, LiveSettings};
use crate::calibrate::Profile;
use crate::live::Summary;
use crate::live::events::{EventSink, JsonLines};
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
    let mut sink = open_sink(&settings.events)?;
    install_stop_handler();
    let mut window = super::window::open(settings.headless, model, profile, title);
    let mut observers: Vec<&mut dyn crate::live::observe::Observer> =
        window.iter_mut().map(|w| &mut **w as _).collect();
    if let Some(s) = snapshots.as_mut() {
        observers.push(s);
    }
    let mut truth = crate::live::truth::Truth::for_config(&settings.live);
    observers.push(&mut truth);
    let mut summary = crate::live::run_with(
        model,
        profile,
        src,
        &settings.live,
        sink.as_mut(),
        stop_flag(),
        &mut observers,
    )?;
    summary.truth = truth.summary();
    sink.emit(&crate::live::events::Event::Summary(summary.clone()))?;
    sink.flush()?;
    print_summary(&summary);
    if let Some(s) = &snapshots {
        print_snapshots(s);
    }
    Ok(())
}
