//! Where the repository's configs are and where data is read from, for a binary run from
//! its checkout, from another folder, or copied to another machine.

use std::path::PathBuf;

use anyhow::{bail, Result};

/// The repository root, for `configs/`: `$SWEELOL_ROOT`, else the checkout this crate was
/// built from (it sits in `crates/study`), else the current directory (a binary copied to
/// another machine and run from a checkout there).
pub fn repo_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("SWEELOL_ROOT").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let manifest_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    match manifest_dir.ancestors().nth(2) {
        Some(built) if built.join("configs").is_dir() => built.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// A preset file: a path ending in `.toml`, or a name in `configs/study/` (an unknown name
/// is an error listing the presets there).
pub fn preset_path(preset: &str) -> Result<PathBuf> {
    if preset.ends_with(".toml") {
        return Ok(PathBuf::from(preset));
    }
    let dir = repo_root().join("configs/study");
    let path = dir.join(format!("{preset}.toml"));
    if path.is_file() {
        return Ok(path);
    }
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.file_name().to_str()?.strip_suffix(".toml").map(String::from))
        .collect();
    names.sort();
    bail!("no preset `{preset}` in {} (presets: {})", dir.display(), names.join(", "))
}

/// The data root: `$SWEELOL_DATA`, else `shared/data` beside the repository.
pub fn default_data_root() -> PathBuf {
    std::env::var_os("SWEELOL_DATA").filter(|d| !d.is_empty()).map(PathBuf::from).unwrap_or_else(|| {
        let root = std::path::absolute(repo_root()).unwrap_or_else(|_| repo_root());
        root.parent().map_or_else(|| root.join("../shared/data"), |up| up.join("shared/data"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_preset_lists_the_presets() {
        let msg = preset_path("nosuch").unwrap_err().to_string();
        assert!(msg.contains("no preset `nosuch`") && msg.contains("default") && msg.contains("sweelol"), "{msg}");
        assert!(preset_path("quick").unwrap().ends_with("configs/study/quick.toml"));
    }
}
