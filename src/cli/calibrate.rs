//! `bvae calibrate MODEL NORMAL_DIR --fpr 0.01 -o P`.

use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::calibrate::{CalibrateOptions, calibrate};
use crate::imageio::list_images;
use crate::mask::Mask;
use crate::preprocess::Fit;
use crate::score::Method;
use crate::tiles::Grid;

/// Arguments of `bvae calibrate`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The encoder model (NAME.onnx).
    pub model: PathBuf,
    /// Folder of normal images (PNG/JPEG, searched recursively).
    pub normal_dir: PathBuf,
    /// Target false-positive rate: the fraction of normal frames allowed
    /// above the threshold.
    #[arg(long, default_value_t = 0.01)]
    pub fpr: f64,
    /// Where to write the profile [default: NAME.calibration.json next to the model].
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    /// Use this score as the default instead of choosing it (`combined`, unless
    /// its threshold fails on frames of another stretch of time: each
    /// quarter of the frames, in file-name order, against thresholds fitted
    /// on the other three).
    #[arg(long, value_enum)]
    pub method: Option<Method>,
    /// How frames with another aspect ratio are fitted to the model
    /// [default: the model's `bvae.fit` metadata (as it was trained), else crop].
    #[arg(long, value_enum)]
    pub fit: Option<Fit>,
    /// Score each frame as a grid of COLSxROWS tiles, each with its own
    /// calibration, e.g. 4x3 [default: the model's `bvae.tiles` metadata,
    /// set when it was trained on tiles; else the whole frame].
    #[arg(long, value_parser = crate::tiles::parse_grid)]
    pub tiles: Option<Grid>,
    /// Leave regions of the frame out of every score and heatmap: a PNG
    /// (stretched over the frame; dark = masked) or a TOML file of
    /// `polygons = [[[x, y], ...]]` with corners as fractions of the frame's
    /// width and height. The profile keeps it.
    #[arg(long)]
    pub mask: Option<PathBuf>,
    /// The sensor-noise check: a frame whose noise (measured on the camera
    /// frame, before it is shrunk for the model) exceeds this many times
    /// that of the noisiest normal frame (and at least σ 0.02 of full
    /// scale) is anomalous, whatever its score; 0 leaves the check out.
    #[arg(long, default_value_t = crate::calibrate::DEFAULT_NOISE_FACTOR)]
    pub noise_factor: f64,
    /// Seed of the synthetic anomalies whose detection the profile reports.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Print the profile as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Runs `bvae calibrate`.
pub fn run(args: Args) -> Result<()> {
    let model = super::load_model(&args.model)?;
    let files = list_images(&args.normal_dir)?;
    let output = args
        .output
        .unwrap_or_else(|| super::default_profile_path(&args.model));
    let pb = super::progress_bar(files.len(), "calibrating");
    let opts = CalibrateOptions {
        fpr: args.fpr,
        fit: args.fit.unwrap_or_else(|| model.meta().fit_or_default()),
        method: args.method,
        seed: args.seed,
        tiles: args.tiles.or(model.meta().tiles),
        mask: args.mask.as_deref().map(Mask::load).transpose()?,
        noise_factor: args.noise_factor,
    };
    let profile = calibrate(&model, &files, &opts, |done, total| {
        pb.set_length(total as u64);
        pb.set_position(done as u64);
    })?;
    pb.finish_and_clear();
    profile
        .save(&output)
        .with_context(|| format!("saving {}", output.display()))?;
    if args.json {
        println!("{}", serde_json::to_string(&profile)?);
        return Ok(());
    }
    for w in &profile.warnings {
        eprintln!("warning: {w}");
    }
    println!(
        "calibrated on {} normal images, target false-positive rate {}",
        profile.frames, profile.fpr
    );
    println!(
        "{:<8} {:>12} {:>12} {:>12} {:>10} {:>10}",
        "score", "median", "p99", "threshold", "synthetic", "held-out"
    );
    for (m, c) in &profile.scores {
        let q = |q: f64| {
            c.normal
                .quantiles
                .iter()
                .find(|(k, _)| (*k - q).abs() < 1e-9)
                .map_or(f64::NAN, |p| p.1)
        };
        println!(
            "{:<8} {:>12.5} {:>12.5} {:>12.5} {:>9.1}% {:>9.2}%",
            m.name(),
            q(0.5),
            q(0.99),
            c.threshold,
            100.0 * c.synthetic_detection,
            100.0 * c.held_out_fpr.unwrap_or(f64::NAN)
        );
    }
    if let Some(n) = &profile.noise {
        println!(
            "sensor noise: σ {:.4} to {:.4} of full scale on the normal frames; a frame above \
             {:.4} is anomalous (×{} the noisiest, at least {})",
            n.normal.min,
            n.normal.max,
            n.threshold,
            n.factor,
            crate::calibrate::MIN_NOISE_THRESHOLD
        );
    }
    if let Some(probes) = profile.probes.as_ref().filter(|p| !p.is_empty()) {
        let methods: Vec<_> = profile.scores.keys().copied().collect();
        println!("synthetic anomalies made on the camera frame, flagged per kind:");
        let mut head: Vec<String> = methods.iter().map(|m| format!("{:>9}", m.name())).collect();
        if profile.noise.is_some() {
            head.push(format!("{:>9}", "noise σ"));
        }
        println!("{:<10} {:>6} {}", "kind", "probes", head.join(""));
        let cell = |v: Option<f64>| match v {
            Some(v) => format!("{:>8.0}%", 100.0 * v),
            None => format!("{:>9}", "-"),
        };
        for p in probes {
            let mut cells: Vec<String> = methods
                .iter()
                .map(|m| cell(p.detected.get(m).copied()))
                .collect();
            if profile.noise.is_some() {
                cells.push(cell(p.noise_check));
            }
            println!("{:<10} {:>6} {}", p.kind, p.count, cells.join(""));
        }
    }
    if let Some(mask) = &profile.mask {
        println!(
            "mask: {:.1}% of the frame left out of every score",
            100.0 * mask.coverage()
        );
    }
    if let Some(t) = &profile.tiles {
        let m = profile.method;
        println!(
            "tiles {}: {m} threshold per tile (raised ×{:.3} so that any tile above it keeps \
             the frame's rate), held-out fpr per tile:",
            t.grid,
            t.frame_factor.get(&m).copied().unwrap_or(1.0)
        );
        for row in t.tiles.chunks(t.grid.cols()) {
            let cells: Vec<String> = row
                .iter()
                .map(|p| {
                    let later = p.scores.get(&m).and_then(|c| c.held_out_fpr);
                    format!(
                        "{:>10.4} ({:>4.1}%)",
                        p.threshold,
                        100.0 * later.unwrap_or(f64::NAN)
                    )
                })
                .collect();
            println!("  {}", cells.join(" "));
        }
    }
    println!(
        "default score: {} ({})",
        profile.method, profile.method_reason
    );
    println!("wrote {}", output.display());
    Ok(())
}
