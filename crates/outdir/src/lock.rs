//! One run per output directory: an advisory exclusive lock on `<dir>/.lock`.
//!
//! The operating system releases the lock when its process exits, however it exits, so a
//! killed run never leaves the directory blocked; the pid written into the file only names
//! the holder in the error a second run gets (and tells a stale file from a live holder).

use std::fs::{File, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use crate::{OutDirError, Result};

/// The lock file inside a locked directory.
pub const LOCK_FILE: &str = ".lock";

/// Held while a run writes into a directory; released on drop (or process exit).
#[derive(Debug)]
pub struct DirLock {
    file: File,
    dir: PathBuf,
}

impl DirLock {
    /// Creates `dir` if needed and locks it, or fails at once naming the holder's pid.
    pub fn acquire(dir: &Path) -> Result<DirLock> {
        std::fs::create_dir_all(dir).map_err(|e| OutDirError::io(dir, e))?;
        let path = dir.join(LOCK_FILE);
        let mut file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| OutDirError::io(&path, e))?;
        let previous = read_pid(&mut file);
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(OutDirError::Locked { dir: dir.to_path_buf(), pid: previous.unwrap_or_else(|| "unknown".into()) })
            }
            Err(TryLockError::Error(e)) => return Err(OutDirError::io(&path, e)),
        }
        if let Some(pid) = previous.filter(|p| !process_alive(p)) {
            eprintln!("{}: stale lock of pid {pid} (no longer running) taken over", dir.display());
        }
        let write = |file: &mut File| -> std::io::Result<()> {
            file.set_len(0)?;
            file.rewind()?;
            writeln!(file, "{}", std::process::id())?;
            file.flush()
        };
        write(&mut file).map_err(|e| OutDirError::io(&path, e))?;
        Ok(DirLock { file, dir: dir.to_path_buf() })
    }

    /// The locked directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for DirLock {
    fn drop(&mut self) {
        // Clear the pid so the file no longer names a holder; the lock goes with the file.
        self.file.set_len(0).ok();
    }
}

fn read_pid(file: &mut File) -> Option<String> {
    let mut text = String::new();
    file.read_to_string(&mut text).ok()?;
    let pid = text.trim();
    (!pid.is_empty()).then(|| pid.to_string())
}

/// Whether a process with this pid exists (Linux: `/proc/<pid>`; elsewhere assumed alive).
fn process_alive(pid: &str) -> bool {
    if cfg!(target_os = "linux") {
        Path::new("/proc").join(pid).exists()
    } else {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_fails_with_the_first_ones_pid_and_release_frees_it() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let first = DirLock::acquire(&out).unwrap();
        let err = DirLock::acquire(&out).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, OutDirError::Locked { .. }), "{msg}");
        assert!(msg.contains(&format!("pid {}", std::process::id())), "{msg}");
        assert!(msg.contains("out"), "{msg}");
        drop(first);
        let again = DirLock::acquire(&out).unwrap();
        assert_eq!(again.dir(), out);
    }

    #[test]
    fn a_leftover_lock_file_of_a_dead_process_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        // pid 0 is never a user process; the file is what a killed run leaves behind.
        std::fs::write(dir.path().join(LOCK_FILE), "0\n").unwrap();
        let lock = DirLock::acquire(dir.path()).unwrap();
        let text = std::fs::read_to_string(dir.path().join(LOCK_FILE)).unwrap();
        assert_eq!(text.trim(), std::process::id().to_string());
        drop(lock);
    }
}
