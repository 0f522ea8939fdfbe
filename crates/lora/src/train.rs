//! Training a LoRA adapter on Dolly: the base is frozen, only `A` and `B` train.

use burn::module::Module;
use sweelol_backend::BackendKind;
use sweelol_gemma::Gemma3;
use sweelol_train::{artifact_dir, prepare, run_technique, RunConfig, RunReport, Technique, TrainError, TrainableModel};

use crate::{attach, save_peft, LoraConfig};

/// A Gemma-3 whose trainable parameters are its LoRA deltas.
#[derive(Module, Debug)]
pub struct LoraModel {
    pub model: Gemma3,
}

impl TrainableModel for LoraModel {
    fn lm(&self) -> &Gemma3 {
        &self.model
    }

    fn is_trainable(&self, path: &str) -> bool {
        path.contains(".delta.")
    }
}

/// Runs a `technique = "lora"` config end to end: train, then save a PEFT adapter.
pub fn run(cfg: &RunConfig, backend: &BackendKind) -> Result<RunReport, TrainError> {
    let lora: LoraConfig = cfg.section("lora")?.unwrap_or_default();
    let prepared = prepare(cfg, backend, Technique::Lora)?;
    let model = attach(prepared.model, &lora).map_err(|e| TrainError::config(&cfg.file, e.to_string()))?;
    let dir = artifact_dir(cfg, lora.adapter_dir.clone(), "adapter");
    let base = cfg.model.source.clone();
    run_technique(cfg, LoraModel { model }, &prepared.data, &dir, |m, dir| {
        save_peft(&m.model, &lora, dir, &base).map_err(|e| TrainError::config(dir, e.to_string()))
    })
}
