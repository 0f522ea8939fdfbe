use std::path::PathBuf;

pub use sweelol_records::Place;

/// Everything that can go wrong; file errors always carry the path and, for a bad record, its place.
#[derive(Debug, thiserror::Error)]
pub enum DollyError {
    #[error("{}: {source}", .path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// One record (line or row) is malformed.
    #[error("{}: {place}: {message}", .path.display())]
    Record {
        path: PathBuf,
        place: Place,
        message: String,
    },
    /// The file as a whole is unusable (extension, parquet schema, missing column).
    #[error("{}: {message}", .path.display())]
    File { path: PathBuf, message: String },
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// A parameter (subset size, max_len, batch size, ...) cannot be honoured.
    #[error("invalid configuration: {0}")]
    Config(String),
}

impl DollyError {
    pub(crate) fn record(path: &std::path::Path, place: Place, message: impl Into<String>) -> Self {
        DollyError::Record {
            path: path.to_path_buf(),
            place,
            message: message.into(),
        }
    }

    pub(crate) fn file(path: &std::path::Path, message: impl Into<String>) -> Self {
        DollyError::File {
            path: path.to_path_buf(),
            message: message.into(),
        }
    }
}
