//! sweelol-outdir: the promise that a number sweelol prints was computed by the model, data
//! and settings it names.
//!
//! Every output directory (an eval `--out`, a training run, a study) gets:
//! * an [`Identity`] (`identity.json`): what produced its contents. Results are reused only
//!   under the same identity; otherwise the run refuses and names the fields that differ.
//! * a [`DirLock`] (`.lock`): one run at a time; a second one fails at once with the
//!   holder's pid.
//! * [`sha256_file`] / [`sha256_files`]: the checksums identities and checkpoints use.
//! * [`write_atomic`]: records that are whole or absent, never truncated.
//! * [`interrupt`]: Ctrl-C or SIGTERM stops a run after the unit it is writing.

mod atomic;
mod checksum;
pub mod interrupt;
mod identity;
mod lock;

pub use atomic::write_atomic;
pub use checksum::{sha256_file, sha256_files};
pub use identity::{differing_keys, Identity, IDENTITY_FILE, RECORDED_ONLY};
pub use lock::{DirLock, LOCK_FILE};

use std::path::PathBuf;

/// What can go wrong with an output directory; every variant names the path.
#[derive(Debug, thiserror::Error)]
pub enum OutDirError {
    #[error("{}: {source}", .path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{} is in use by another sweelol run (pid {pid}); wait for it to finish or choose another directory", .dir.display())]
    Locked { dir: PathBuf, pid: String },
    #[error("{}: {msg}", .path.display())]
    Corrupt { path: PathBuf, msg: String },
    #[error("{} holds results of a different run ({}); {hint}", .dir.display(), .differences.join("; "))]
    Mismatch { dir: PathBuf, differences: Vec<String>, hint: String },
}

impl OutDirError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        OutDirError::Io { path: path.into(), source }
    }
}

pub type Result<T, E = OutDirError> = std::result::Result<T, E>;
