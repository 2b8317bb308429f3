//! `bvae watch MODEL --calibration P --source S`: the live loop.
//!
//! Its options come from the command line and from a `--config` TOML
//! file, both read into [`Args`]; the flags are merged over the file, then
//! the loop options are resolved ([`super::live_options`]) and run
//! ([`super::live_loop`]).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Deserialize;

use super::live_options::{LiveOptions, Origin};
use crate::source::{SourceSpec, open_source};

/// Arguments of `bvae watch`, and the schema of its `--config` file: the
/// same keys as the flags (with `_`), all but `config`. Unknown keys are
/// refused. Read a file with [`Args::load`] or [`Args::parse`].
#[derive(Debug, Clone, Default, clap::Args, Deserialize)]
#[serde(deny_unknown_fields)]
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
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Loop options.
    #[command(flatten)]
    #[serde(flatten)]
    pub lp: LiveOptions,
}

/// The `--config` file of `bvae watch`: the same struct as its flags.
pub type FileConfig = Args;

/// Largest `--config` file accepted, in bytes.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

impl Args {
    /// Reads and checks a `--config` file (see [`Args::parse`]).
    pub fn load(path: &Path) -> Result<Args> {
        use std::io::Read;
        let mut bytes = vec![];
        std::fs::File::open(path)
            .and_then(|f| f.take(MAX_CONFIG_BYTES + 1).read_to_end(&mut bytes))
            .with_context(|| format!("cannot read {}", path.display()))?;
        Args::parse(&bytes, path)
    }

    /// Parses the bytes of a `--config` file (`origin` names it in
    /// errors) and checks each value as the flag of the same name would
    /// be ([`LiveOptions::check`]), and that the source is one `--source`
    /// accepts.
    pub fn parse(bytes: &[u8], origin: &Path) -> Result<Args> {
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
        let c: Args = toml::from_str(text).with_context(invalid)?;
        (|| -> Result<()> {
            c.lp.check(Origin::File)?;
            if let Some(s) = &c.source {
                s.parse::<SourceSpec>()
                    .with_context(|| format!("`source` is {s:?}"))?;
            }
            Ok(())
        })()
        .with_context(invalid)?;
        Ok(c)
    }

    /// These arguments, with each one not given taken from `file`.
    pub fn or(self, file: Args) -> Args {
        Args {
            model: self.model.or(file.model),
            calibration: self.calibration.or(file.calibration),
            source: self.source.or(file.source),
            config: self.config,
            lp: self.lp.or(file.lp),
        }
    }
}

/// Runs `bvae watch`.
pub fn run(args: Args) -> Result<()> {
    let args = match &args.config {
        Some(p) => {
            let file = Args::load(p)?;
            args.or(file)
        }
        None => args,
    };
    let Some(model_path) = args.model else {
        bail!("no model: pass MODEL or set `model` in --config");
    };
    let Some(source) = args.source else {
        bail!(
            "no source: pass --source (camera:0, images:DIR, video:FILE.y4m, video:-, synthetic) or set `source` in --config"
        );
    };
    let calibration = match args.calibration {
        Some(c) => c,
        None => {
            let p = super::default_profile_path(&model_path);
            if !p.exists() {
                bail!(
                    "no calibration profile: pass --calibration (run `bvae calibrate` first); {} does not exist",
                    p.display()
                );
            }
            p
        }
    };
    let model = super::load_model(&model_path)?;
    let profile = super::load_profile(&calibration, &model)?;
    let settings = args.lp.resolve(&profile)?;
    let model = model.with_runtime(super::runtime(settings.threads)?);
    let spec: SourceSpec = source.parse()?;
    let src = open_source(&spec)?;
    eprintln!(
        "watching {} with {} ({} score, threshold {:.4}); Ctrl-C stops",
        src.describe(),
        model_path.display(),
        settings.live.method,
        settings.live.threshold
    );
    super::live_loop::run_live(&model, &profile, src, &settings, "bvae watch")
}
