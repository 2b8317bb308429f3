//! `bvae score MODEL IMAGES... [--calibration P]`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Result, bail};
use serde::Serialize;

use crate::explain::deviations;
use crate::imageio::expand_inputs;
use crate::live::events::NoiseReport;
use crate::model::PlanKind;
use crate::pipeline::Pipeline;
use crate::preprocess::Fit;
use crate::score::{Method, Scores};

/// Arguments of `bvae score`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The encoder model (NAME.onnx).
    pub model: PathBuf,
    /// Image files or folders of images (PNG/JPEG, searched recursively).
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
    /// Calibration profile (from `bvae calibrate`): adds the latent score,
    /// the decision and z-scores of the latents.
    #[arg(long, short)]
    pub calibration: Option<PathBuf>,
    /// Decide with this score instead of the profile's default.
    #[arg(long, value_enum)]
    pub method: Option<Method>,
    /// Latents to report per image, most deviant first.
    #[arg(long, default_value_t = 3)]
    pub top: usize,
    /// How frames with another aspect ratio are fitted to the model
    /// (default: the profile's, else crop).
    #[arg(long, value_enum)]
    pub fit: Option<Fit>,
    /// JSON Lines output: {"file", "scores": {recon, kl, elbo, latent, knn,
    /// pixel, combined},
    /// "decision": {method, score, threshold, ratio, anomalous, tile?,
    /// noise?: {sigma, threshold}} | null,
    /// "latents": [{latent, value, z | kl}]}.
    #[arg(long)]
    pub json: bool,
}

/// The decision for one image.
#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    /// Score method decided on.
    pub method: Method,
    /// Its value.
    pub score: f64,
    /// Calibrated threshold.
    pub threshold: f64,
    /// score / threshold.
    pub ratio: f64,
    /// score > threshold, or the camera frame's sensor noise above the
    /// profile's limit.
    pub anomalous: bool,
    /// With the profile's noise check: the frame's noise σ and its limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub noise: Option<NoiseReport>,
    /// With a tiled profile: the tile with the highest ratio (numbered
    /// row by row); `score` is then that ratio and `threshold` 1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tile: Option<usize>,
}

/// Runs `bvae score`.
pub fn run(args: Args) -> Result<()> {
    let model = super::load_model(&args.model)?;
    let profile = match &args.calibration {
        Some(p) => Some(super::load_profile(p, &model)?),
        None => None,
    };
    if args.method.is_some() && profile.is_none() {
        bail!("--method needs --calibration: thresholds come from a calibration profile");
    }
    let fit = args
        .fit
        .or(profile.as_ref().map(|p| p.fit))
        .unwrap_or_else(|| model.meta().fit_or_default());
    let mut pipe = match &profile {
        // a tiled profile scores each tile with its own calibration, at
        // the fit it was calibrated with
        Some(p) if p.tiles.is_some() => {
            Pipeline::for_profile(&model, PlanKind::Full, p, args.method.unwrap_or(p.method))?
        }
        _ => {
            let reference = profile.as_ref().map(|p| p.reference()).transpose()?;
            let mut pipe = Pipeline::new(&model, PlanKind::Full, fit, reference)?;
            pipe.set_mask(profile.as_ref().and_then(|p| p.mask.clone()));
            pipe.measure_noise(profile.as_ref().is_some_and(|p| p.noise.is_some()));
            pipe
        }
    };
    let files = expand_inputs(&args.images)?;
    let active = model.spec().active_latents();
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut flagged = 0;
    let failed = super::for_each_image(&files, "scoring", |f, frame| {
        let s: Scores = pipe.process(frame.as_ref())?;
        let decision = match &profile {
            Some(p) => {
                let m = args.method.unwrap_or(p.method);
                let threshold = p.decision_threshold(m).unwrap_or(p.threshold);
                let noise = p.noise.as_ref().zip(s.noise).map(|(n, sigma)| NoiseReport {
                    sigma: sigma as f64,
                    threshold: n.threshold,
                });
                let noisy = noise.is_some_and(|n| n.sigma > n.threshold);
                s.get(m).map(|v| Decision {
                    method: m,
                    tile: pipe.worst_tile(),
                    score: v as f64,
                    threshold,
                    ratio: v as f64 / threshold,
                    anomalous: v as f64 > threshold || noisy,
                    noise,
                })
            }
            None => None,
        };
        if decision.as_ref().is_some_and(|d| d.anomalous) {
            flagged += 1;
        }
        let devs = deviations(
            pipe.mu()?,
            pipe.kl_latents(),
            profile.as_ref().map(|p| p.tile_profile(pipe.worst_tile())),
            active.as_deref(),
            model.spec().latent_names.as_deref(),
            args.top,
        );
        if args.json {
            let line =
                serde_json::json!({"file": f, "scores": s, "decision": decision, "latents": devs});
            writeln!(out, "{line}")?;
        } else {
            let opt = |v: Option<f32>| v.map_or("-".to_string(), |v| format!("{v:.4}"));
            let verdict = match &decision {
                Some(d) if d.anomalous && d.ratio <= 1.0 => match d.noise {
                    Some(n) => format!(
                        "  ANOMALY (sensor noise σ {:.4} > {:.4}; {} {:.2}× threshold)",
                        n.sigma, n.threshold, d.method, d.ratio
                    ),
                    None => format!("  ANOMALY ({} {:.2}× threshold)", d.method, d.ratio),
                },
                Some(d) if d.anomalous => match d.tile {
                    Some(t) => format!(
                        "  ANOMALY ({} {:.2}× threshold, tile {t})",
                        d.method, d.ratio
                    ),
                    None => format!("  ANOMALY ({} {:.2}× threshold)", d.method, d.ratio),
                },
                Some(d) => format!("  normal ({} {:.2}× threshold)", d.method, d.ratio),
                None => String::new(),
            };
            let lat: Vec<String> = devs
                .iter()
                .map(|d| match d.z {
                    Some(z) => format!("{} {:+.1}σ", d.label(), z),
                    None => format!("{} {:.2} nats", d.label(), d.kl),
                })
                .collect();
            writeln!(
                out,
                "{}  recon={} kl={:.4} elbo={} latent={} knn={} pixel={} combined={}{verdict}  [{}]",
                f.display(),
                opt(s.recon),
                s.kl,
                opt(s.elbo),
                opt(s.latent),
                opt(s.knn),
                opt(s.pixel),
                opt(s.combined),
                lat.join(", ")
            )?;
        }
        Ok(())
    })?;
    out.flush()?;
    if profile.is_some() && !args.json {
        eprintln!(
            "{flagged} of {} images flagged as anomalous",
            files.len() - failed
        );
    }
    super::unreadable(failed, files.len())
}
