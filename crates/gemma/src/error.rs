//! One error type for the model crate; every variant says which file and where.

use std::path::{Path, PathBuf};

pub type Result<T, E = GemmaError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum GemmaError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}invalid config: {msg}", file_prefix(.path))]
    Config { path: Option<PathBuf>, msg: String },
    #[error("{path}: {msg}")]
    Weights { path: PathBuf, msg: String },
    #[error("{path}: tokenizer: {msg}")]
    Tokenizer { path: PathBuf, msg: String },
    #[error(transparent)]
    Gguf(#[from] sweelol_gguf::GgufError),
    #[error(transparent)]
    Source(#[from] sweelol_sources::SourceError),
    #[error("{0}")]
    Other(String),
}

fn file_prefix(p: &Option<PathBuf>) -> String {
    p.as_ref().map(|p| format!("{}: ", p.display())).unwrap_or_default()
}

impl GemmaError {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        GemmaError::Io { path: path.to_path_buf(), source }
    }
    pub fn config(msg: impl Into<String>) -> Self {
        GemmaError::Config { path: None, msg: msg.into() }
    }
    pub fn weights(path: &Path, msg: impl Into<String>) -> Self {
        GemmaError::Weights { path: path.to_path_buf(), msg: msg.into() }
    }
    /// Attaches a file to a config error that was raised while parsing text.
    pub fn in_file(self, file: &Path) -> Self {
        match self {
            GemmaError::Config { path: None, msg } => GemmaError::Config { path: Some(file.to_path_buf()), msg },
            other => other,
        }
    }
}
