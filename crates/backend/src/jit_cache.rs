//! Persistent caches for the backend that compiles its kernels at run time (wgpu, through
//! CubeCL).
//!
//! CubeCL compiles a kernel per new shape and, at its default autotune level, times several
//! variants of each matrix product before using one; on an H200 the first training steps
//! took 32-68 s each (`docs/perf.md`). It can keep both results on disk — autotune choices
//! (on by default) and compiled kernels (`[compilation] cache`, off by default) — under
//! one "environment" directory, which by default is the `target/` of the nearest cargo
//! workspace: nowhere useful for a binary carried to a GPU machine. [`persist_jit_caches`]
//! turns both on under sweelol's cache folder, so the second run of a process starts warm.

use std::path::{Path, PathBuf};

/// Files through which a user configures CubeCL themselves (looked up from the working
/// directory upwards); when one exists, its settings are left to apply.
const USER_CONFIG_FILES: [&str; 4] = ["cubecl.toml", "CubeCL.toml", "burn.toml", "Burn.toml"];

/// A CubeCL configuration file in `start` or one of its parents, if any.
pub fn user_jit_config(start: &Path) -> Option<PathBuf> {
    start.ancestors().flat_map(|dir| USER_CONFIG_FILES.map(|f| dir.join(f))).find(|p| p.is_file())
}

/// Keeps CubeCL's autotune results and compiled kernels in `dir` across runs. Call once,
/// before the first wgpu tensor exists. Returns where they go, or `None` when this build
/// has no wgpu, when a user's CubeCL file applies ([`user_jit_config`]), or when CubeCL's
/// configuration was already read. `CUBECL_*` environment variables (say
/// `CUBECL_AUTOTUNE_LEVEL=minimal`) still apply.
pub fn persist_jit_caches(dir: &Path) -> Option<PathBuf> {
    let cwd = std::env::current_dir().ok()?;
    if user_jit_config(&cwd).is_some() {
        return None;
    }
    set_cubecl_cache(dir)
}

#[cfg(feature = "wgpu")]
fn set_cubecl_cache(dir: &Path) -> Option<PathBuf> {
    use cubecl_runtime::config::cache::CacheConfig;
    use cubecl_runtime::config::{CubeClRuntimeConfig, RuntimeConfig};

    let mut config = CubeClRuntimeConfig::default().override_from_env();
    config.environment.path = CacheConfig::Directory(dir.to_path_buf());
    config.compilation.cache = true;
    CubeClRuntimeConfig::try_set(config).then(|| dir.to_path_buf())
}

#[cfg(not(feature = "wgpu"))]
fn set_cubecl_cache(_dir: &Path) -> Option<PathBuf> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_config_file_is_found_from_a_subfolder() {
        let root = tempfile::tempdir().unwrap();
        let sub = root.path().join("a/b");
        std::fs::create_dir_all(&sub).unwrap();
        assert_eq!(user_jit_config(&sub), None);
        std::fs::write(root.path().join("a/cubecl.toml"), "[autotune]\nlevel = \"minimal\"\n").unwrap();
        assert_eq!(user_jit_config(&sub), Some(root.path().join("a/cubecl.toml")));
    }
}
