//! One training stage: a technique config handed to its crate through the registry
//! ([`run_technique`]), and where a study row's outputs go.

use std::path::{Path, PathBuf};

use anyhow::Context;
use burn::tensor::Device;
use sweelol_train::RunReport;

use crate::technique::TechniqueRun;

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
    let report: anyhow::Result<RunReport> = cfg.technique.run(run, device).map_err(anyhow::Error::from)
    .with_context(ctx);
    // The run's model, optimizer and activations are gone: hand their pages back before
    // the next job (a study's next row, a bench's evaluation).
    sweelol_gemma::kernels::memory::release_freed_memory();
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

/// Points every output of `cfg` into `row_dir` (so study rows never collide with each
/// other or with hand-run configs): the run directory and the technique's result.
pub fn redirect_outputs(cfg: &mut TechniqueRun, row_dir: &Path) {
    cfg.run.output.dir = row_dir.join("train");
    let result = if cfg.technique.is_adapter() { "adapter" } else { "model" };
    cfg.run.output.artifact_dir = Some(row_dir.join(result));
}
