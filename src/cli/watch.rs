//! `bvae watch MODEL --calibration P --source S`: the live loop.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Deserialize;

use crate::calibrate::Profile;
use crate::live::events::{EventSink, JsonLines};
use crate::live::snapshot::{SnapshotConfig, Snapshotter};
use crate::live::{LiveConfig, Summary};
use crate::model::Model;
use crate::score::Method;
use crate::source::{SourceSpec, open_source};

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

/// Options shared by `watch` and `demo`; each may also come from a TOML file.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct LoopArgs {
    /// Decide with this score instead of the profile's default.
    #[arg(long, value_enum)]
    pub method: Option<Method>,
    /// Frames above threshold before an anomaly starts [default: 3].
    #[arg(long)]
    pub enter_after: Option<u32>,
    /// Frames below threshold before it ends [default: 5].
    #[arg(long)]
    pub leave_after: Option<u32>,
    /// Identical consecutive frames that mean a frozen camera, 0 = off [default: 15].
    #[arg(long)]
    pub freeze_frames: Option<u32>,
    /// Seconds without a frame before the camera counts as lost [default: 2].
    #[arg(long)]
    pub stall_timeout: Option<f64>,
    /// Seconds between `stats` events [default: 5].
    #[arg(long)]
    pub stats_interval: Option<f64>,
    /// Least seconds between `anomaly_update` events of one episode [default: 1].
    #[arg(long)]
    pub update_interval: Option<f64>,
    /// Stop after this many processed frames.
    #[arg(long)]
    pub max_frames: Option<u64>,
    /// Stop after this many seconds.
    #[arg(long)]
    pub duration: Option<f64>,
    /// Write events to this file (JSON Lines) instead of stdout.
    #[arg(long)]
    pub events: Option<PathBuf>,
    /// No live window (by default one opens when a display exists).
    #[arg(long)]
    pub headless: bool,
    /// Save each anomalous frame reported by `anomaly_start` / `anomaly_update`
    /// as a PNG with the anomaly heatmap in this folder (off by default).
    #[arg(long, value_name = "DIR")]
    pub snapshots: Option<PathBuf>,
    /// Disk budget of --snapshots in MB: the oldest snapshots are deleted
    /// to stay within it [default: 100].
    #[arg(long, value_name = "N")]
    pub snapshot_budget_mb: Option<f64>,
    /// Cores for inference: the convolutions of each frame are shared by
    /// this many threads [default: 1].
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
}

/// The TOML configuration file of `--config`: the same keys as the flags
/// (with `_`), plus `model`, `calibration` and `source`. Unknown keys are
/// refused. Read it with [`FileConfig::load`] or [`FileConfig::parse`].
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// The encoder model.
    pub model: Option<PathBuf>,
    /// The calibration profile.
    pub calibration: Option<PathBuf>,
    /// The source, as `--source` takes it.
    pub source: Option<String>,
    /// `--method`.
    pub method: Option<Method>,
    /// `--enter-after`.
    pub enter_after: Option<u32>,
    /// `--leave-after`.
    pub leave_after: Option<u32>,
    /// `--freeze-frames`.
    pub freeze_frames: Option<u32>,
    /// `--stall-timeout`, seconds.
    pub stall_timeout: Option<f64>,
    /// `--stats-interval`, seconds.
    pub stats_interval: Option<f64>,
    /// `--update-interval`, seconds.
    pub update_interval: Option<f64>,
    /// `--max-frames`.
    pub max_frames: Option<u64>,
    /// `--duration`, seconds.
    pub duration: Option<f64>,
    /// `--events`.
    pub events: Option<PathBuf>,
    /// `--headless`.
    pub headless: Option<bool>,
    /// `--snapshots`.
    pub snapshots: Option<PathBuf>,
    /// `--snapshot-budget-mb`.
    pub snapshot_budget_mb: Option<f64>,
    /// `--threads` (read as 64 bits, so that a huge value is refused with
    /// the range below on 32-bit boards too, not as a TOML type error).
    pub threads: Option<u64>,
}

/// Largest `--config` file accepted, in bytes.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

impl FileConfig {
    /// Reads and checks a `--config` file (see [`FileConfig::parse`]).
    pub fn load(path: &Path) -> Result<FileConfig> {
        use std::io::Read;
        let mut bytes = vec![];
        std::fs::File::open(path)
            .and_then(|f| f.take(MAX_CONFIG_BYTES + 1).read_to_end(&mut bytes))
            .with_context(|| format!("cannot read {}", path.display()))?;
        FileConfig::parse(&bytes, path)
    }

    /// Parses the bytes of a `--config` file (`origin` names it in
    /// errors) and checks each value as the flag of the same name would
    /// be: seconds finite, ≥ 0 and at most [`MAX_SECONDS`], threads 1 to
    /// [`crate::model::MAX_THREADS`], a snapshot budget > 0, a source
    /// `--source` accepts.
    pub fn parse(bytes: &[u8], origin: &Path) -> Result<FileConfig> {
        let invalid = || format!("invalid configuration {}", origin.display());
        if bytes.len() as u64 > MAX_CONFIG_BYTES {
            bail!(
                "{}: more than {} KiB; expected a small TOML file of options",
                invalid(),
                MAX_CONFIG_BYTES >> 10
            );
        }
        let text = std::str::from_utf8(bytes)
            .map_err(|e| anyhow::anyhow!("{}: not UTF-8 text ({e})", invalid()))?;
        let c: FileConfig = toml::from_str(text).with_context(invalid)?;
        (|| -> Result<()> {
            for (key, v) in [
                ("stall_timeout", c.stall_timeout),
                ("stats_interval", c.stats_interval),
                ("update_interval", c.update_interval),
                ("duration", c.duration),
            ] {
                if let Some(v) = v {
                    secs(&format!("`{key}`"), v)?;
                }
            }
            if let Some(n) = c.threads
                && !(1..=crate::model::MAX_THREADS as u64).contains(&n)
            {
                bail!(
                    "`threads` is {n}: expected 1 to {}",
                    crate::model::MAX_THREADS
                );
            }
            if let Some(mb) = c.snapshot_budget_mb
                && !(mb.is_finite() && mb > 0.0)
            {
                bail!("`snapshot_budget_mb` must be a number of MB > 0, found {mb}");
            }
            if let Some(s) = &c.source {
                s.parse::<SourceSpec>()
                    .with_context(|| format!("`source` is {s:?}"))?;
            }
            Ok(())
        })()
        .with_context(invalid)?;
        Ok(c)
    }
}

/// Arguments of `bvae watch`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The encoder model (NAME.onnx) [or `model` in --config].
    pub model: Option<PathBuf>,
    /// Calibration profile [default: NAME.calibration.json next to the model].
    #[arg(long, short)]
    pub calibration: Option<PathBuf>,
    /// Where frames come from: camera:INDEX[,format=F,width=W,height=H,fps=R],
    /// images:DIR[,loop], video:FILE.y4m|-[,loop][,pace=on|off][,fps=N] or
    /// synthetic[:seed=N,...] [or `source` in --config].
    #[arg(long, short)]
    pub source: Option<String>,
    /// TOML file with any of these options (flags override it).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Loop options.
    #[command(flatten)]
    pub lp: LoopArgs,
}

/// Longest time any option in seconds takes (about 31 years): longer ones
/// would overflow the loop's clock arithmetic.
pub const MAX_SECONDS: f64 = 1e9;

fn secs(what: &str, v: f64) -> Result<Duration> {
    if !(v.is_finite() && (0.0..=MAX_SECONDS).contains(&v)) {
        let found = if v.abs() >= 1e6 {
            format!("{v:e}")
        } else {
            v.to_string()
        };
        bail!("{what} must be a number of seconds from 0 to {MAX_SECONDS:e}, found {found}");
    }
    Ok(Duration::from_secs_f64(v))
}

/// Resolves loop options over a profile's defaults.
pub fn resolve_loop(lp: &LoopArgs, profile: &crate::calibrate::Profile) -> Result<LiveConfig> {
    if let Some(n) = lp.threads {
        anyhow::ensure!(n >= 1, "--threads must be at least 1");
    }
    let mut c = LiveConfig::for_profile(profile);
    if let Some(m) = lp.method {
        c.method = m;
        c.threshold = profile
            .threshold_for(m)
            .with_context(|| format!("the profile has no threshold for {m}"))?;
    }
    if let Some(v) = lp.enter_after {
        c.enter_after = v.max(1);
    }
    if let Some(v) = lp.leave_after {
        c.leave_after = v.max(1);
    }
    if let Some(v) = lp.freeze_frames {
        c.freeze_frames = v;
    }
    if let Some(v) = lp.stall_timeout {
        c.stall_timeout = secs("--stall-timeout", v)?;
    }
    if let Some(v) = lp.stats_interval {
        c.stats_interval = secs("--stats-interval", v)?;
    }
    if let Some(v) = lp.update_interval {
        c.update_interval = secs("--update-interval", v)?;
    }
    c.max_frames = lp.max_frames;
    c.max_duration = lp.duration.map(|d| secs("--duration", d)).transpose()?;
    Ok(c)
}

/// Opens the snapshot folder of `--snapshots`, if one is given.
pub fn open_snapshots(lp: &LoopArgs) -> Result<Option<Snapshotter>> {
    let Some(dir) = &lp.snapshots else {
        if lp.snapshot_budget_mb.is_some() {
            bail!("--snapshot-budget-mb needs --snapshots DIR");
        }
        return Ok(None);
    };
    let mut cfg = SnapshotConfig::new(dir);
    if let Some(mb) = lp.snapshot_budget_mb {
        if !(mb.is_finite() && mb > 0.0) {
            bail!("--snapshot-budget-mb must be a number of MB > 0, found {mb}");
        }
        cfg.budget_bytes = ((mb * 1e6) as u64).max(1);
    }
    Ok(Some(Snapshotter::new(cfg)?))
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
pub fn open_sink(path: Option<&Path>) -> Result<Box<dyn EventSink>> {
    Ok(match path {
        Some(p) => {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .with_context(|| format!("cannot open events file {}", p.display()))?;
            Box::new(JsonLines::new(std::io::BufWriter::new(f)))
        }
        None => Box::new(JsonLines::new(std::io::stdout())),
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
            "ground truth: detected {} of {} injected anomalies, {} false alarms ({:.2} per 1000 normal frames), mean detection delay {}",
            t.detected,
            t.injected,
            t.false_alarms,
            t.false_alarms_per_1000,
            t.mean_delay_frames
                .map_or("-".to_string(), |d| format!("{d:.1} frames"))
        );
        for (k, (inj, det)) in &t.per_kind {
            eprintln!("  {k:<14} {det}/{inj}");
        }
    }
}

/// Runs `bvae watch`.
pub fn run(args: Args) -> Result<()> {
    let file = match &args.config {
        Some(p) => FileConfig::load(p)?,
        None => FileConfig::default(),
    };
    let Some(model_path) = args.model.clone().or(file.model) else {
        bail!("no model: pass MODEL or set `model` in --config");
    };
    let Some(source) = args.source.clone().or(file.source) else {
        bail!(
            "no source: pass --source (camera:0, images:DIR, video:FILE.y4m, video:-, synthetic) or set `source` in --config"
        );
    };
    let calibration = match args.calibration.clone().or(file.calibration) {
        Some(c) => c,
        None => {
            let name = model_path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("model.onnx");
            let p = model_path.with_file_name(format!(
                "{}.calibration.json",
                name.strip_suffix(".onnx").unwrap_or(name)
            ));
            if !p.exists() {
                bail!(
                    "no calibration profile: pass --calibration (run `bvae calibrate` first); {} does not exist",
                    p.display()
                );
            }
            p
        }
    };
    let lp = LoopArgs {
        method: args.lp.method.or(file.method),
        enter_after: args.lp.enter_after.or(file.enter_after),
        leave_after: args.lp.leave_after.or(file.leave_after),
        freeze_frames: args.lp.freeze_frames.or(file.freeze_frames),
        stall_timeout: args.lp.stall_timeout.or(file.stall_timeout),
        stats_interval: args.lp.stats_interval.or(file.stats_interval),
        update_interval: args.lp.update_interval.or(file.update_interval),
        max_frames: args.lp.max_frames.or(file.max_frames),
        duration: args.lp.duration.or(file.duration),
        events: args.lp.events.clone().or(file.events),
        headless: args.lp.headless || file.headless.unwrap_or(false),
        snapshots: args.lp.snapshots.clone().or(file.snapshots),
        snapshot_budget_mb: args.lp.snapshot_budget_mb.or(file.snapshot_budget_mb),
        // checked above: 1 to MAX_THREADS fits any usize
        threads: args.lp.threads.or(file.threads.map(|n| n as usize)),
    };
    let model = super::load_model(&model_path)?.with_runtime(super::runtime(lp.threads)?);
    let profile = super::load_profile(&calibration, &model)?;
    let cfg = resolve_loop(&lp, &profile)?;
    let spec: SourceSpec = source.parse()?;
    let src = open_source(&spec)?;
    eprintln!(
        "watching {} with {} ({} score, threshold {:.4}); Ctrl-C stops",
        src.describe(),
        model_path.display(),
        cfg.method,
        cfg.threshold
    );
    run_live(&model, &profile, src, &cfg, &lp, "bvae watch")
}

/// The live loop as `watch` and `demo` run it: snapshots, the event sink,
/// the stop handler and the window (titled `title`) set up from `lp`, then
/// the loop, its summary event and the summary on stderr.
pub(crate) fn run_live(
    model: &Model,
    profile: &Profile,
    src: Box<dyn crate::source::FrameSource>,
    cfg: &LiveConfig,
    lp: &LoopArgs,
    title: &str,
) -> Result<()> {
    let mut snapshots = open_snapshots(lp)?;
    let mut sink = open_sink(lp.events.as_deref())?;
    install_stop_handler();
    let mut window = super::window::open(lp.headless, model, profile, title);
    let mut observers: Vec<&mut dyn crate::live::observe::Observer> =
        window.iter_mut().map(|w| &mut **w as _).collect();
    if let Some(s) = snapshots.as_mut() {
        observers.push(s);
    }
    let mut truth = crate::live::truth::Truth::for_config(cfg);
    observers.push(&mut truth);
    let mut summary = crate::live::run_with(
        model,
        profile,
        src,
        cfg,
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
