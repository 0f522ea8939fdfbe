//! Training the virtual tokens on Dolly: only `prompt` trains.

use burn::tensor::{Int, Tensor};
use sweelol_backend::BackendKind;
use sweelol_gemma::Gemma3;
use sweelol_train::{artifact_dir, prepare, run_technique, RunConfig, RunReport, Technique, TrainError, TrainableModel};

use crate::{PromptTuned, PromptTuningConfig};

impl TrainableModel for PromptTuned {
    fn lm(&self) -> &Gemma3 {
        &self.base
    }

    fn hidden_states(&self, input_ids: Tensor<2, Int>) -> Tensor<3> {
        PromptTuned::hidden_states(self, input_ids)
    }

    fn is_trainable(&self, path: &str) -> bool {
        path.starts_with("prompt")
    }
}

/// Runs a `technique = "prompt-tuning"` config end to end: train, then save a PEFT adapter.
pub fn run(cfg: &RunConfig, backend: &BackendKind) -> Result<RunReport, TrainError> {
    let pt: PromptTuningConfig = cfg.section("prompt_tuning")?.unwrap_or_default();
    let prepared = prepare(cfg, backend, Technique::PromptTuning)?;
    let model = PromptTuned::init(prepared.model, &pt, &prepared.tokenizer)
        .map_err(|e| TrainError::config(&cfg.file, e.to_string()))?;
    let dir = artifact_dir(cfg, pt.adapter_dir.clone(), "adapter");
    let base = cfg.model.source.clone();
    run_technique(cfg, model, &prepared.data, &dir, |m, dir| {
        m.save_peft(&pt, dir, &base).map_err(|e| TrainError::config(dir, e.to_string()))
    })
}
