//! Errors of the distillation crate.

use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum DistillError {
    #[error("invalid [distill] config: {0}")]
    Config(String),
    #[error("{path}: {msg}")]
    File { path: String, msg: String },
}

pub type Result<T> = std::result::Result<T, DistillError>;

pub(crate) fn file_err(path: &Path, msg: impl ToString) -> DistillError {
    DistillError::File { path: path.display().to_string(), msg: msg.to_string() }
}
