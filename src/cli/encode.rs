//! `bvae encode MODEL IMAGES...`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Result;
use serde_json::json;

use crate::imageio::expand_inputs;
use crate::model::PlanKind;
use crate::pipeline::Pipeline;
use crate::preprocess::Fit;

/// Arguments of `bvae encode`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The encoder model (NAME.onnx).
    pub model: PathBuf,
    /// Image files or folders of images (PNG/JPEG, searched recursively).
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
    /// Write CSV (file, mu_0.., logvar_0.., kl_0..) instead of JSON Lines
    /// ({"file", "mu", "logvar", "kl"} per image).
    #[arg(long)]
    pub csv: bool,
    /// How frames with another aspect ratio are fitted to the model
    /// [default: as the model was trained (`bvae.fit`), else crop].
    #[arg(long, value_enum)]
    pub fit: Option<Fit>,
}

/// Runs `bvae encode`.
pub fn run(args: Args) -> Result<()> {
    let model = super::load_model(&args.model)?;
    let files = expand_inputs(&args.images)?;
    let mut pipe = Pipeline::new(
        &model,
        PlanKind::EncoderOnly,
        args.fit.unwrap_or_else(|| model.meta().fit_or_default()),
        None,
    )?;
    let z = model.spec().latent_dim;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    if args.csv {
        let cols: Vec<String> = ["mu", "logvar", "kl"]
            .iter()
            .flat_map(|p| (0..z).map(move |i| format!("{p}_{i}")))
            .collect();
        writeln!(out, "file,{}", cols.join(","))?;
    }
    let failed = super::for_each_image(&files, "encoding", |f, frame| {
        pipe.process(frame.as_ref())?;
        let (mu, lv, kl) = (pipe.mu()?, pipe.logvar()?, pipe.kl_latents());
        if args.csv {
            let vals: Vec<String> = mu
                .iter()
                .chain(lv)
                .chain(kl)
                .map(|v| v.to_string())
                .collect();
            let name = f.display().to_string().replace('"', "\"\"");
            writeln!(out, "\"{name}\",{}", vals.join(","))?;
        } else {
            writeln!(
                out,
                "{}",
                json!({"file": f, "mu": mu, "logvar": lv, "kl": kl})
            )?;
        }
        Ok(())
    })?;
    out.flush()?;
    super::unreadable(failed, files.len())
}
