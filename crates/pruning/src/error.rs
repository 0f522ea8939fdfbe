//! Errors of the pruning crate.

use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum PruningError {
    #[error("invalid [pruning] config: {0}")]
    Config(String),
    /// The model does not fit the config (e.g. a dimension not divisible by M).
    #[error("cannot prune `{tensor}`: {msg}")]
    Tensor { tensor: String, msg: String },
    #[error("{path}: {msg}")]
    File { path: String, msg: String },
    #[error(transparent)]
    Gemma(#[from] sweelol_gemma::GemmaError),
}

pub type Result<T> = std::result::Result<T, PruningError>;

pub(crate) fn file_err(path: &Path, msg: impl ToString) -> PruningError {
    PruningError::File { path: path.display().to_string(), msg: msg.to_string() }
}
