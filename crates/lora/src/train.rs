//! Training a LoRA adapter on Dolly: the base is frozen, only `A` and `B` train.

use burn::module::Module;
use burn::tensor::Device;
use sweelol_gemma::Gemma3;
use sweelol_train::{artifact_dir, prepare, run_technique, Artifact, RunConfig, RunIdentity, RunReport, Technique, TrainError, TrainableModel};

use crate::{attach, save_peft, LoraConfig, LoraError};

/// The technique's name in configs and reports.
pub const TECHNIQUE: &str = "lora";

/// LoRA in the technique registry.
pub struct Lora;

impl Technique for Lora {
    const NAME: &'static str = TECHNIQUE;
    const TABLE: &'static str = "lora";
    const ARTIFACT: Artifact = Artifact::Adapter;
    type Settings = LoraConfig;

    fn validate(settings: &LoraConfig) -> Result<(), String> {
        settings.validate().map_err(|e| match e {
            LoraError::Config(msg) => msg,
            other => other.to_string(),
        })
    }

    fn run(cfg: &RunConfig, settings: &LoraConfig, device: &Device) -> Result<RunReport, TrainError> {
        run(cfg, settings, device)
    }

    fn set_seed(settings: &mut LoraConfig, seed: u64) {
        settings.seed = seed;
    }
}

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

/// Trains a LoRA adapter on the model and data `cfg` names, on `device` (training uses its
/// autodiff form), and saves it in PEFT's format to `[output] artifact_dir` (default
/// `<output.dir>/adapter`).
pub fn run(cfg: &RunConfig, lora: &LoraConfig, device: &Device) -> Result<RunReport, TrainError> {
    sweelol_train::validated::<Lora>(lora)?;
    let prepared = prepare(cfg, device)?;
    let model = attach(prepared.model, lora).map_err(sweelol_train::settings_error::<Lora>)?;
    let dir = artifact_dir(cfg, "adapter");
    let base = sweelol_train::run::peft_base_model(cfg);
    let id = RunIdentity::new(cfg, TECHNIQUE, lora);
    run_technique(cfg, &id, LoraModel { model }, &prepared.data, &prepared.lock, &dir, |m, dir| {
        save_peft(&m.model, lora, dir, &base).map_err(|e| TrainError::format(dir, e.to_string()))
    })
}
