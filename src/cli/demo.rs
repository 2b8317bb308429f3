//! `bvae demo`: the live loop on the synthetic scene with injected
//! anomalies and the shipped default model, scored against ground truth.

use std::path::PathBuf;

use anyhow::{Result, bail};

use crate::source::{SourceSpec, open_source};

/// File name of the default model in models/.
pub const DEFAULT_MODEL: &str = "synthetic.onnx";
/// File name of its calibration profile.
pub const DEFAULT_PROFILE: &str = "synthetic.calibration.json";
/// Frames the demo stops after unless told otherwise (80 s at 30 fps).
pub const DEFAULT_MAX_FRAMES: u64 = 2400;

/// Arguments of `bvae demo`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Folder with the default model and profile [default: ./models, else
    /// the models/ folder of the source tree this binary was built from].
    #[arg(long)]
    pub models: Option<PathBuf>,
    /// The synthetic scene: seed, size and anomaly schedule
    /// (see `bvae watch --help` for the syntax).
    #[arg(long, default_value = "synthetic:seed=2026")]
    pub source: String,
    /// Loop options (by default the demo stops after 2400 frames, 80 s at 30 fps).
    #[command(flatten)]
    pub lp: super::live_options::LiveOptions,
}

/// Where the shipped models are.
fn models_dir(explicit: Option<PathBuf>) -> Result<PathBuf> {
    if let Some(d) = explicit {
        return Ok(d);
    }
    let candidates = [
        PathBuf::from("models"),
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models"),
    ];
    for c in &candidates {
        if c.join(DEFAULT_MODEL).exists() {
            return Ok(c.clone());
        }
    }
    bail!(
        "the default model {DEFAULT_MODEL} was not found in ./models or {}; pass --models DIR",
        candidates[1].display()
    )
}

/// Runs `bvae demo`.
pub fn run(mut args: Args) -> Result<()> {
    let dir = models_dir(args.models.clone())?;
    let model = super::load_model(&dir.join(DEFAULT_MODEL))?;
    let profile = super::load_profile(&dir.join(DEFAULT_PROFILE), &model)?;
    if args.lp.max_frames.is_none() && args.lp.duration.is_none() {
        args.lp.max_frames = Some(DEFAULT_MAX_FRAMES);
    }
    let settings = args.lp.resolve(&profile)?;
    let model = model.with_runtime(super::runtime(settings.threads)?);
    let spec: SourceSpec = args.source.parse()?;
    let src = open_source(&spec)?;
    eprintln!(
        "bvae demo: {} → {} ({} score, threshold {:.4}); events below, summary at the end; Ctrl-C stops",
        src.describe(),
        dir.join(DEFAULT_MODEL).display(),
        settings.live.method,
        settings.live.threshold
    );
    super::live_loop::run_live(&model, &profile, src, &settings, "bvae demo")
}
