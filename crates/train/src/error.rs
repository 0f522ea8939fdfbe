//! One error type for training; every variant says which file, key or step went wrong.

use std::path::{Path, PathBuf};

pub type Result<T, E = TrainError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The TOML file is unreadable, has an unknown key, or a value out of range.
    #[error("{}: {msg}", .path.display())]
    Config { path: PathBuf, msg: String },
    /// A file could not be read or written.
    #[error("{}: {source}", .path.display())]
    Io { path: PathBuf, source: std::io::Error },
    /// A file was read but is not what it should be (not safetensors, bad JSON, wrong
    /// tensors), or a result could not be encoded.
    #[error("{}: {msg}", .path.display())]
    Format { path: PathBuf, msg: String },
    /// A technique's own settings are invalid (the message names the table and key).
    #[error("{0}")]
    Settings(String),
    /// The data cannot be turned into batches (empty, token ids past the vocabulary, ...).
    #[error("data: {0}")]
    Data(String),
    /// Loss or gradient norm became NaN/inf. Nothing was written for this step, so the last
    /// checkpoint (if any) is the last good state.
    #[error(
        "non-finite {what} ({value}) at step {step}; last good checkpoint: {}",
        .last_checkpoint.as_ref().map_or("none".to_string(), |p| p.display().to_string())
    )]
    NonFinite { step: usize, what: &'static str, value: f64, last_checkpoint: Option<PathBuf> },
    /// SIGINT or SIGTERM during training: the step in progress finished and was saved.
    #[error(
        "interrupted after step {step} of {total}; checkpoint {}: run the same command again to resume from it",
        .checkpoint.display()
    )]
    Interrupted { step: usize, total: usize, checkpoint: PathBuf },
    /// A checkpoint is missing files, belongs to another config, or does not fit the model.
    #[error("checkpoint {}: {msg}", .path.display())]
    Checkpoint { path: PathBuf, msg: String },
    /// The output directory is locked by another run.
    #[error(transparent)]
    OutDir(#[from] sweelol_outdir::OutDirError),
    #[error(transparent)]
    Model(#[from] sweelol_gemma::GemmaError),
    #[error(transparent)]
    Dolly(#[from] sweelol_dolly::DollyError),
}

impl TrainError {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        TrainError::Io { path: path.to_path_buf(), source }
    }

    pub fn config(path: &Path, msg: impl Into<String>) -> Self {
        TrainError::Config { path: path.to_path_buf(), msg: msg.into() }
    }

    pub fn format(path: &Path, msg: impl Into<String>) -> Self {
        TrainError::Format { path: path.to_path_buf(), msg: msg.into() }
    }

    pub fn checkpoint(path: &Path, msg: impl Into<String>) -> Self {
        TrainError::Checkpoint { path: path.to_path_buf(), msg: msg.into() }
    }
}
