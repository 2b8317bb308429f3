//! `bvae traverse MODEL --decoder D -o grid.png`.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};

use crate::imageio::{encode_png, load_image, write_atomic};
use crate::model::{Decoder, PlanKind};
use crate::pipeline::Pipeline;
use crate::traverse::{TraversalSpec, traversal_grid};

/// Arguments of `bvae traverse`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The encoder model (NAME.onnx).
    pub model: PathBuf,
    /// The decoder model [default: NAME.decoder.onnx next to the model].
    #[arg(long, short)]
    pub decoder: Option<PathBuf>,
    /// Output PNG.
    #[arg(long, short, default_value = "traversal.png")]
    pub output: PathBuf,
    /// Columns per latent, from −3σ to +3σ.
    #[arg(long, default_value_t = 9)]
    pub steps: usize,
    /// Traverse around this image's latent code instead of the origin.
    #[arg(long)]
    pub image: Option<PathBuf>,
    /// Calibration profile: traverse around the normal data's mean, ±3 of
    /// its standard deviations (instead of the prior's ±3).
    #[arg(long, short)]
    pub calibration: Option<PathBuf>,
    /// Upscale each cell by this factor [default: so that cells are ≥ 64 px].
    #[arg(long)]
    pub scale: Option<usize>,
    /// Print a JSON summary instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Half-width of the sweep in standard deviations.
const SIGMAS: f32 = 3.0;

/// Runs `bvae traverse`.
pub fn run(args: Args) -> Result<()> {
    let model = super::load_model(&args.model)?;
    let spec = model.spec().clone();
    let Some(dec_path) = args
        .decoder
        .clone()
        .or_else(|| super::sibling_decoder(&args.model))
    else {
        bail!(
            "no decoder: pass --decoder NAME.decoder.onnx (none found next to {})",
            args.model.display()
        );
    };
    if args.steps < 2 {
        bail!("--steps must be at least 2, found {}", args.steps);
    }
    let mut decoder = Decoder::load(&dec_path, &model, args.steps)
        .with_context(|| format!("loading decoder {}", dec_path.display()))?;
    let z = spec.latent_dim;
    let (mut base, mut span) = (vec![0.0f32; z], vec![SIGMAS; z]);
    if let Some(p) = &args.calibration {
        let prof = super::load_profile(p, &model)?;
        base = prof
            .latent
            .gaussian
            .mean
            .iter()
            .map(|&v| v as f32)
            .collect();
        span = prof.latent.std.iter().map(|&s| SIGMAS * s as f32).collect();
    }
    if let Some(img) = &args.image {
        let frame = load_image(img)?;
        let mut pipe = Pipeline::new(
            &model,
            PlanKind::EncoderOnly,
            model.meta().fit_or_default(),
            None,
        )?;
        pipe.process(frame.as_ref())?;
        base = pipe.mu()?.to_vec();
    }
    let scale = args
        .scale
        .unwrap_or_else(|| 64usize.div_ceil(spec.height.min(spec.width)).max(1));
    let tspec = TraversalSpec {
        base,
        span,
        steps: args.steps,
        kl: spec.latent_kl.clone(),
        scale,
    };
    let pic = traversal_grid(&mut decoder, spec.channels, spec.height, spec.width, &tspec)?;
    let png = encode_png(pic.width as u32, pic.height as u32, pic.format, &pic.data)?;
    write_atomic(&args.output, &png)
        .with_context(|| format!("writing {}", args.output.display()))?;
    if args.json {
        let out = serde_json::json!({
            "output": args.output, "width": pic.width, "height": pic.height,
            "rows": z, "steps": args.steps, "latent_kl": spec.latent_kl,
        });
        println!("{out}");
    } else {
        println!(
            "wrote {} ({}×{}): row i sweeps latent i over ±{SIGMAS}σ; the bar left of a row is its KL",
            args.output.display(),
            pic.width,
            pic.height
        );
        if let Some(kl) = &spec.latent_kl {
            for (i, k) in kl.iter().enumerate() {
                println!(
                    "  row {i}: z{i} {k:.3} nats{}",
                    if *k < crate::meta::ACTIVE_KL_NATS {
                        " (inactive)"
                    } else {
                        ""
                    }
                );
            }
        }
    }
    Ok(())
}
