//! Pruning runs: Pruned-Baseline (prune, export) and Finetuned-Pruned (prune, then
//! fine-tune with the masks re-applied after every optimizer step).

use burn::module::Module;
use sweelol_backend::BackendKind;
use sweelol_gemma::{save_hf_dir, Gemma3, GemmaTokenizer};
use sweelol_train::{artifact_dir, prepare, run_technique, RunConfig, RunReport, Technique, TrainError, TrainableModel};

use crate::{export, prune, Masks, PruningConfig};

/// A pruned Gemma-3 whose zeros survive training: every weight trains, and the masks are
/// re-applied after each optimizer step.
#[derive(Module, Debug)]
pub struct PrunedModel {
    pub model: Gemma3,
    #[module(skip)]
    pub masks: Masks,
}

impl TrainableModel for PrunedModel {
    fn lm(&self) -> &Gemma3 {
        &self.model
    }

    fn after_step(&mut self) {
        self.masks.apply_mut(&mut self.model);
    }
}

fn to_train_err(cfg: &RunConfig, e: impl ToString) -> TrainError {
    TrainError::config(&cfg.file, e.to_string())
}

/// Writes the pruned model directory: weights, tokenizer and `sparsity_report.json`.
pub fn export_pruned(model: &Gemma3, masks: &Masks, tokenizer: &GemmaTokenizer, dir: &std::path::Path) -> Result<(), TrainError> {
    let model = model.valid();
    export(&model, masks, dir).map_err(|e| TrainError::config(dir, e.to_string()))?;
    save_hf_dir(&model, tokenizer, dir)?;
    Ok(())
}

/// Runs a `technique = "pruning"` config: prune; fine-tune too when `[pruning] finetune`.
pub fn run(cfg: &RunConfig, backend: &BackendKind) -> Result<RunReport, TrainError> {
    let pcfg: PruningConfig = cfg.section("pruning")?.unwrap_or_default();
    let prepared = prepare(cfg, backend, Technique::Pruning)?;
    let (model, masks) = prune(prepared.model, &pcfg).map_err(|e| to_train_err(cfg, e))?;
    let dir = artifact_dir(cfg, pcfg.export_dir.clone(), "model");
    let tokenizer = prepared.tokenizer;
    if !pcfg.finetune {
        let start = std::time::Instant::now();
        export_pruned(&model, &masks, &tokenizer, &dir)?;
        let total_params = model.num_params();
        return Ok(RunReport {
            technique: "pruning (no fine-tuning)".into(),
            artifact_dir: dir,
            steps: 0,
            trainable_params: 0,
            total_params,
            eval_loss_before: None,
            eval_loss: None,
            last_loss: None,
            metrics_path: Default::default(),
            last_checkpoint: None,
            resumed_from: None,
            train_examples: 0,
            eval_examples: 0,
            seconds: start.elapsed().as_secs_f64(),
        });
    }
    run_technique(cfg, PrunedModel { model, masks }, &prepared.data, &dir, |m, dir| {
        export_pruned(&m.model, &m.masks, &tokenizer, dir)
    })
}
