//! Pruning runs: Pruned-Baseline (prune, export) and Finetuned-Pruned (prune, then
//! fine-tune with the masks re-applied after every optimizer step).

use std::time::Instant;

use burn::module::Module;
use burn::tensor::Device;
use sweelol_gemma::Gemma3;
use sweelol_train::{
    artifact_dir, export_sparse, prepare, run_technique, Artifact, Masks, RunConfig, RunIdentity, RunReport, Technique,
    TrainError, TrainableModel,
};

use crate::{prune, PruningConfig, PruningError};

/// The technique's name in configs and reports.
pub const TECHNIQUE: &str = "pruning";

/// Magnitude pruning (and fine-tuning with the masks kept) in the technique registry.
pub struct Pruning;

impl Technique for Pruning {
    const NAME: &'static str = TECHNIQUE;
    const TABLE: &'static str = "pruning";
    const ARTIFACT: Artifact = Artifact::Model;
    type Settings = PruningConfig;

    fn validate(settings: &PruningConfig) -> Result<(), String> {
        settings.validate().map_err(|e| match e {
            PruningError::Config(msg) => msg,
            other => other.to_string(),
        })
    }

    fn run(cfg: &RunConfig, settings: &PruningConfig, device: &Device) -> Result<RunReport, TrainError> {
        run(cfg, settings, device)
    }

    fn trains(settings: &PruningConfig) -> bool {
        settings.finetune
    }
}

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

/// Prunes the model `cfg` names, on `device`; with `finetune`, trains it on the Dolly rows
/// with the masks kept. Writes a transformers directory with its masks and sparsity report
/// to `[output] artifact_dir` (default `<output.dir>/model`).
pub fn run(cfg: &RunConfig, pruning: &PruningConfig, device: &Device) -> Result<RunReport, TrainError> {
    let start = Instant::now();
    sweelol_train::validated::<Pruning>(pruning)?;
    let prepared = prepare(cfg, device)?;
    let (model, masks) = prune(prepared.model, pruning).map_err(|e| TrainError::Settings(e.to_string()))?;
    let dir = artifact_dir(cfg, "model");
    let tokenizer = prepared.tokenizer;
    if !pruning.finetune {
        export_sparse(&model, &masks, &tokenizer, &dir)?;
        let report = RunReport::untrained("pruning (no fine-tuning)", dir, model.num_params(), 0.0);
        return Ok(RunReport { seconds: start.elapsed().as_secs_f64(), ..report });
    }
    let id = RunIdentity::new(cfg, TECHNIQUE, pruning);
    run_technique(cfg, &id, PrunedModel { model, masks }, &prepared.data, &prepared.lock, &dir, |m, dir| {
        export_sparse(&m.model, &m.masks, &tokenizer, dir).map(|_| ())
    })
}
