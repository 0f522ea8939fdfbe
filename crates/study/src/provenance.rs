//! What produced an output: the build's version and commit, and the identity of a model
//! (source, weights, tokenizer, adapter) that eval directories record and check.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use sweelol_eval::Identity;
use sweelol_gemma::Precision;
use sweelol_outdir::{sha256_file, sha256_files};
use sweelol_sources::ModelFiles;

/// The commit this binary was built from (`build.rs`), or `unknown` outside a git checkout.
pub const COMMIT: &str = env!("SWEELOL_COMMIT");

/// `--version`: the crate version and the commit.
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("SWEELOL_COMMIT"), ")");

/// The identity of scores produced by `source` (+ `adapter`) on `backend`: the source as
/// named, SHA-256 of its weight and tokenizer files and of the adapter's files, the backend,
/// the dtype of its products, and the code version (recorded, not compared:
/// `sweelol_outdir::RECORDED_ONLY`). Resolves the source (downloading it if needed) but does
/// not load it.
pub fn model_identity(source: &str, adapter: Option<&Path>, backend: &str, dtype: Precision) -> Result<Identity> {
    let files = sweelol_sources::resolve(source).with_context(|| format!("resolving model `{source}`"))?;
    let (weights, tokenizer) = match &files {
        ModelFiles::Safetensors { dir } => {
            let mut weight_files = vec![dir.join("config.json")];
            weight_files.extend(files_in(dir, |n| n.ends_with(".safetensors") || n.ends_with(".safetensors.index.json"))?);
            let refs: Vec<&Path> = weight_files.iter().map(PathBuf::as_path).collect();
            (sha256_files(&refs)?, sha256_file(&dir.join("tokenizer.json"))?)
        }
        ModelFiles::Gguf { path, tokenizer_json } => {
            let tok = match tokenizer_json {
                Some(json) => sha256_file(json)?,
                None => "in the GGUF file".to_string(),
            };
            (sha256_file(path)?, tok)
        }
    };
    let adapter_sha = match adapter {
        Some(dir) => {
            // The model card is written after scoring; it says what the scores are.
            let files = files_in(dir, |n| n != crate::model_card::MODEL_CARD)?;
            let refs: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
            sha256_files(&refs)?
        }
        None => "none".to_string(),
    };
    Ok(Identity::new()
        .with("model", source)
        .with("weights_sha256", weights)
        .with("tokenizer_sha256", tokenizer)
        .with("adapter", adapter.map_or("none".to_string(), |a| a.display().to_string()))
        .with("adapter_sha256", adapter_sha)
        .with("backend", backend)
        .with("dtype", dtype.as_str())
        .with("code_version", VERSION))
}

/// Regular files directly in `dir` whose names pass `keep`, sorted by name.
fn files_in(dir: &Path, keep: impl Fn(&str) -> bool) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.file_name().and_then(|n| n.to_str()).is_some_and(&keep))
        .collect();
    files.sort();
    Ok(files)
}
