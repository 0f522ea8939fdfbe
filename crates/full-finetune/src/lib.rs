//! sweelol-full-finetune: every weight of Gemma-3 trains on Dolly.
//!
//! The trainable model is [`Gemma3`] itself (its `TrainableModel` impl in sweelol-train marks
//! every parameter trainable). What this crate adds is the run: load the model and the data
//! named by the config, train, and write the result as a transformers directory
//! (`config.json`, `model.safetensors`, `tokenizer.json`) that sweelol and transformers load.

use std::path::{Path, PathBuf};

use burn::module::Module;
use serde::Deserialize;
use sweelol_backend::BackendKind;
use sweelol_gemma::{save_hf_dir, Gemma3, GemmaTokenizer};
use sweelol_train::{prepare, run_technique, RunConfig, RunReport, Technique, TrainError};

/// `[full_finetune]` (optional).
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FullFinetuneSection {
    /// Where the fine-tuned model directory goes (relative to the config file); default
    /// `<output.dir>/model`.
    #[serde(default)]
    pub export_dir: Option<PathBuf>,
}

/// The export directory the config asks for.
pub fn export_dir(cfg: &RunConfig) -> Result<PathBuf, TrainError> {
    let section: FullFinetuneSection = cfg.section("full_finetune")?.unwrap_or_default();
    Ok(sweelol_train::artifact_dir(cfg, section.export_dir, "model"))
}

/// Runs a `technique = "full-finetune"` config end to end on `backend`.
pub fn run(cfg: &RunConfig, backend: &BackendKind) -> Result<RunReport, TrainError> {
    let prepared = prepare(cfg, backend, Technique::FullFinetune)?;
    let dir = export_dir(cfg)?;
    let tokenizer = prepared.tokenizer;
    run_technique(cfg, prepared.model, &prepared.data, &dir, |m, dir| export(m, &tokenizer, dir))
}

/// Writes `model` and `tokenizer` as a transformers directory.
pub fn export(model: &Gemma3, tokenizer: &GemmaTokenizer, dir: &Path) -> Result<(), TrainError> {
    Ok(save_hf_dir(&model.valid(), tokenizer, dir)?)
}
