//! Typed errors for the parts of the library whose callers branch on the
//! kind of failure (a broken model file versus a profile made for another
//! model, for instance). Everything else uses `anyhow` with context.

use std::path::PathBuf;

/// Why a model could not be loaded or run.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The file could not be read at all.
    #[error("cannot read model file {path}")]
    Io {
        /// The file that was asked for.
        path: PathBuf,
        /// The operating system's reason.
        #[source]
        source: std::io::Error,
    },
    /// The model keeps its weights in a separate file that cannot be read.
    #[error(
        "{model} keeps its weights in {data}, which cannot be read; copy it next to the model \
         (torch's exporter writes it with external data)"
    )]
    MissingWeights {
        /// The model file.
        model: PathBuf,
        /// The external data file it names.
        data: PathBuf,
        /// The operating system's reason.
        #[source]
        source: std::io::Error,
    },
    /// The bytes are not a parseable ONNX model (truncated, random bytes,
    /// another format).
    #[error(
        "{path} is not a readable ONNX model ({detail}); expected a file written by \
         torch.onnx.export or onnx.save"
    )]
    NotOnnx {
        /// The file.
        path: PathBuf,
        /// What the parser reported.
        detail: String,
    },
    /// A valid ONNX model that does not follow the bvae model contract.
    #[error("{path} breaks the bvae model contract:\n  - {}\nsee DESIGN.md, 'Model contract (ONNX)'", problems.join("\n  - "))]
    Contract {
        /// The file.
        path: PathBuf,
        /// Every violation found, each saying what was expected and what was found.
        problems: Vec<String>,
    },
    /// tract could not analyse, optimise or run the graph.
    #[error("{what}: {cause:#}")]
    Runtime {
        /// What was being done.
        what: String,
        /// tract's error chain (printed in the message).
        cause: anyhow::Error,
    },
    /// A caller asked for something the model cannot do.
    #[error("{0}")]
    Usage(String),
}

/// Why a calibration profile was refused.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// The profile was fitted on another model file.
    #[error(
        "calibration profile {path} was made for another model: it expects SHA-256 {expected}, \
         but {model} has {found}; run `bvae calibrate` again for this model"
    )]
    ModelMismatch {
        /// The profile file.
        path: PathBuf,
        /// The model the profile names.
        expected: String,
        /// The model file that was loaded.
        model: PathBuf,
        /// Its hash.
        found: String,
    },
    /// The profile could not be read or parsed.
    #[error("cannot read calibration profile {path}: {detail}")]
    Unreadable {
        /// The profile file.
        path: PathBuf,
        /// What went wrong.
        detail: String,
    },
    /// The profile parses but its contents are inconsistent.
    #[error("calibration profile {path} is inconsistent: {detail}")]
    Invalid {
        /// The profile file.
        path: PathBuf,
        /// What is inconsistent.
        detail: String,
    },
}
