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
    /// images:DIR[,loop], video:FILE.y4m|-[,loop][,pace=on|off][,fps=N],
    /// synthetic[:seed=N,...] or photos:DIR[,seed=N,...] [or `source` in --config].
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
        let c: Args = toml::from_str(text)
            .map_err(|e| pin_to_key(text, e))
            .with_context(invalid)?;
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

/// The error of a `--config` file that is TOML but not a configuration,
/// with the key it is about: the loop options are read through a buffer
/// (`serde(flatten)`), so toml's own error points at the start of the
/// file instead. A syntax error keeps toml's message, which points at it.
fn pin_to_key(text: &str, e: toml::de::Error) -> anyhow::Error {
    let Ok(table) = text.parse::<toml::Table>() else {
        return e.into();
    };
    for (key, value) in table {
        let one = toml::Table::from_iter([(key.clone(), value)]);
        if let Err(ke) = toml::Value::Table(one).try_into::<Args>() {
            let msg = ke.message().trim_end();
            return if msg.contains(&format!("`{key}`")) {
                anyhow::anyhow!("{msg}")
            } else {
                anyhow::anyhow!("`{key}`: {msg}")
            };
        }
    }
    e.into()
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
            "no source: pass --source (camera:0, images:DIR, video:FILE.y4m, video:-, synthetic, photos:DIR) or set `source` in --config"
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Args> {
        Args::parse(text.as_bytes(), Path::new("watch.toml"))
    }

    #[test]
    fn a_config_file_reads_every_key_into_the_flags_struct() {
        let c = parse(
            "model = \"m.onnx\"\nsource = \"synthetic\"\nheadless = false\n\
             stall_timeout = 5\nthreads = 2\nmethod = \"kl\"\n",
        )
        .unwrap();
        assert_eq!(c.model, Some(PathBuf::from("m.onnx")));
        assert_eq!(c.lp.headless, Some(false));
        assert_eq!(c.lp.stall_timeout, Some(5.0));
        assert_eq!(c.lp.threads, Some(2));
        assert!(c.lp.method.is_some());
        assert_eq!(c.config, None);
    }

    #[test]
    fn config_errors_name_the_key() {
        for (text, needle) in [
            (
                "enter_after = 3\nheadless = \"yes\"\n",
                "`headless`: invalid type",
            ),
            ("threads = -1", "`threads`: invalid value"),
            ("stall_timeout = 1\nsorce = \"x\"", "unknown field `sorce`"),
            ("config = \"other.toml\"", "unknown field `config`"),
            ("[loop]\nthreads = 2", "unknown field `loop`"),
            ("threads = ", "TOML parse error at line 1"),
        ] {
            let e = format!("{:#}", parse(text).unwrap_err());
            assert!(e.starts_with("invalid configuration watch.toml: "), "{e}");
            assert!(e.contains(needle), "{text:?}: {e}");
        }
    }
}
