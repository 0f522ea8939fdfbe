//! `cargo xtask train --config configs/<technique>.toml`: read a config and hand it to the
//! crate of its technique. The study calls [`run_technique`] for its training rows.

use std::path::{Path, PathBuf};

use anyhow::Context;
use burn::tensor::Device;
use sweelol_gemma::Precision;
use sweelol_train::RunReport;

use crate::config::{self, TechniqueConfig, TechniqueRun};

/// What a training stage leaves for evaluation: a model source (transformers dir or the
/// base model) and, for adapter techniques, the adapter directory.
pub struct TrainOutput {
    pub details: serde_json::Value,
    /// Seconds earlier invocations trained before the checkpoint this run resumed from.
    pub earlier_seconds: f64,
    pub model_source: String,
    pub adapter: Option<PathBuf>,
}

/// Runs one config with its technique crate on `device`.
pub fn run_technique(cfg: &TechniqueRun, device: &Device) -> anyhow::Result<TrainOutput> {
    let run = &cfg.run;
    let ctx = || format!("{} from {}", cfg.technique.name(), run.file.display());
    let report: anyhow::Result<RunReport> = match &cfg.technique {
        TechniqueConfig::FullFinetune(s) => sweelol_full_finetune::run(run, s, device),
        TechniqueConfig::Lora(s) => sweelol_lora::run(run, s, device),
        TechniqueConfig::PromptTuning(s) => sweelol_prompt_tuning::run(run, s, device),
        TechniqueConfig::Pruning(s) => sweelol_pruning::run(run, s, device),
        TechniqueConfig::Distill(s) => sweelol_distill::run(run, s, device),
    }
    .with_context(ctx);
    // The run's model, optimizer and activations are gone: hand their pages back before
    // the next job (a study's next row, a bench's evaluation).
    sweelol_backend::release_freed_memory();
    let report = report?;
    let mut details = serde_json::to_value(&report)?;
    // Sparse models carry their sparsity report; put it in the record too.
    let sparsity = report.artifact_dir.join(sweelol_pruning::REPORT_FILE);
    if let Ok(text) = std::fs::read_to_string(&sparsity) {
        details["sparsity"] = serde_json::from_str::<serde_json::Value>(&text)?["overall_sparsity"].clone();
    }
    let earlier_seconds = report.earlier_seconds;
    Ok(if cfg.technique.is_adapter() {
        TrainOutput { details, earlier_seconds, model_source: run.model.source.clone(), adapter: Some(report.artifact_dir) }
    } else {
        TrainOutput { details, earlier_seconds, model_source: report.artifact_dir.to_string_lossy().into_owned(), adapter: None }
    })
}

/// Reads the TOML at `config_path` with the `--set` changes `sets`, runs its technique on
/// `device` (in `dtype` when given, else the config's `[train] dtype`), and prints where the
/// outputs went.
pub fn run_train(config_path: &Path, sets: &[String], device: &Device, dtype: Option<Precision>) -> anyhow::Result<()> {
    let mut cfg = config::load_with(config_path, sets)?;
    if let Some(d) = dtype {
        cfg.run.train.dtype = d;
    }
    cfg.run.data.path = crate::data_fetch::dolly_path(&cfg.run.data.path)?;
    let out = run_technique(&cfg, device)?;
    println!("{}", serde_json::to_string_pretty(&out.details)?);
    match &out.adapter {
        Some(a) => println!("adapter: {} (base {})", a.display(), out.model_source),
        None => println!("model: {}", out.model_source),
    }
    Ok(())
}

/// Points every output of `cfg` into `row_dir` (so study rows never collide with each
/// other or with hand-run configs): the run directory and the technique's result.
pub fn redirect_outputs(cfg: &mut TechniqueRun, row_dir: &Path) {
    cfg.run.output.dir = row_dir.join("train");
    let result = if cfg.technique.is_adapter() { "adapter" } else { "model" };
    cfg.run.output.artifact_dir = Some(row_dir.join(result));
}
