//! The `bvae` command line: one file per subcommand. Each command's
//! arguments are one `clap` struct whose `///` lines are its `--help`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use crate::calibrate::Profile;
use crate::model::Model;

pub mod bench;
pub mod calibrate;
pub mod cameras;
pub mod demo;
pub mod encode;
pub mod info;
pub mod live_loop;
pub mod live_options;
pub mod record;
pub mod score;
pub mod traverse;
pub mod watch;
pub mod window;

/// β-VAE anomaly detection for cameras on small boards.
#[derive(Debug, Parser)]
#[command(name = "bvae", version, about, propagate_version = true)]
pub struct Cli {
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Describe a model: inputs, outputs, latents (with per-latent KL and
    /// which are active), likelihood, β, load time, the kernel variant.
    Info(info::Args),
    /// Encode images to latent codes (JSON Lines, or CSV with --csv).
    Encode(encode::Args),
    /// Score images: every score, the decision when calibrated, and the
    /// latents that deviate most.
    Score(score::Args),
    /// Fit a calibration profile on a folder of normal images.
    Calibrate(calibrate::Args),
    /// Render a latent traversal grid (rows = latents, ±3σ) to a PNG.
    Traverse(traverse::Args),
    /// Time each stage (preprocess, encode, decode, score) and end to end.
    Bench(bench::Args),
    /// Save frames from a source (camera, video, images, synthetic scene)
    /// as PNG files for training.
    Record(record::Args),
    /// Watch a source live: scores, anomaly events with hysteresis, camera
    /// watchdog, stats (JSON Lines on stdout or --events FILE).
    Watch(watch::Args),
    /// The live loop on the synthetic scene with injected anomalies and the
    /// shipped default model, with a ground-truth summary at the end.
    Demo(demo::Args),
    /// List the cameras `--source camera:INDEX` can open (needs the
    /// `camera` feature).
    Cameras(cameras::Args),
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    // Every command's plans read BVAE_KERNELS: a value this CPU cannot run
    // (or no variant's name) is refused here, whatever the command, rather
    // than ignored by the commands that plan with the default runtime.
    crate::kernels::Kernels::from_env()?;
    match cli.command {
        Command::Info(a) => info::run(a),
        Command::Encode(a) => encode::run(a),
        Command::Score(a) => score::run(a),
        Command::Calibrate(a) => calibrate::run(a),
        Command::Traverse(a) => traverse::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Record(a) => record::run(a),
        Command::Watch(a) => watch::run(a),
        Command::Demo(a) => demo::run(a),
        Command::Cameras(a) => cameras::run(a),
    }
}

/// Loads a model, with the file name in the error.
pub fn load_model(path: &Path) -> Result<Model> {
    Model::load(path).with_context(|| format!("loading model {}", path.display()))
}

/// The inference runtime of `threads` threads, with the kernels
/// `BVAE_KERNELS` names (by default the fastest variant of bvae's this CPU
/// runs). It starts the threads: call it in a command's run step, not while
/// resolving options.
pub fn runtime(threads: usize) -> Result<crate::model::Runtime> {
    Ok(crate::model::Runtime::new(crate::model::RuntimeOptions {
        threads,
        kernels: crate::kernels::Kernels::from_env()?,
    })?)
}

/// Loads a calibration profile made for `model`.
pub fn load_profile(path: &Path, model: &Model) -> Result<Profile> {
    Ok(Profile::load(path, model)?)
}

/// The calibration profile that sits next to a model by the naming
/// convention (`NAME.onnx` → `NAME.calibration.json`), where `bvae
/// calibrate` writes it and `bvae watch` looks for it.
pub fn default_profile_path(model: &Path) -> PathBuf {
    let name = model
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("model.onnx");
    let stem = name.strip_suffix(".onnx").unwrap_or(name);
    model.with_file_name(format!("{stem}.calibration.json"))
}

/// The decoder that sits next to a model by the naming convention
/// (`NAME.onnx` → `NAME.decoder.onnx`), if it exists.
pub fn sibling_decoder(model: &Path) -> Option<PathBuf> {
    let stem = model.file_name()?.to_str()?.strip_suffix(".onnx")?;
    let p = model.with_file_name(format!("{stem}.decoder.onnx"));
    p.exists().then_some(p)
}

/// A progress bar on stderr for `n` items (hidden when stderr is not a terminal).
pub fn progress_bar(n: usize, what: &str) -> indicatif::ProgressBar {
    let pb = indicatif::ProgressBar::new(n as u64);
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} {per_sec} eta {eta}")
    {
        pb.set_style(style.progress_chars("=> "));
    }
    pb.set_message(what.to_string());
    pb
}

/// Runs `f` on every readable image of `files` behind a progress bar.
/// Files that cannot be read are reported on stderr and skipped; returns
/// how many were skipped. Errors from `f` stop the run.
pub fn for_each_image(
    files: &[PathBuf],
    what: &str,
    mut f: impl FnMut(&Path, crate::frame::Frame) -> Result<()>,
) -> Result<usize> {
    let pb = progress_bar(files.len(), what);
    let mut failed = 0;
    for path in files {
        pb.inc(1);
        match crate::imageio::load_image(path) {
            Ok(frame) => f(path, frame)?,
            Err(e) => {
                pb.suspend(|| eprintln!("error: {e:#}"));
                failed += 1;
            }
        }
    }
    pb.finish_and_clear();
    Ok(failed)
}

/// The error for `failed` unreadable images out of `total`.
pub fn unreadable(failed: usize, total: usize) -> Result<()> {
    if failed > 0 {
        anyhow::bail!("{failed} of {total} images could not be read (see the errors above)");
    }
    Ok(())
}

/// Checks the value of a `--threads` flag: 1 to
/// [`crate::model::MAX_THREADS`] inference threads.
pub fn threads_flag(n: u64) -> Result<usize> {
    let max = crate::model::MAX_THREADS;
    match usize::try_from(n) {
        Ok(0) => anyhow::bail!("--threads must be at least 1"),
        Ok(n) if n <= max => Ok(n),
        _ => {
            anyhow::bail!("{n} inference threads: expected 1 to {max} (at most one per core helps)")
        }
    }
}

/// Formats floats compactly for JSON-free human output.
pub fn fmt_vec(v: &[f32]) -> String {
    v.iter()
        .map(|x| format!("{x:.3}"))
        .collect::<Vec<_>>()
        .join(" ")
}
