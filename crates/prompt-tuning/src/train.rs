//! Training the virtual tokens on Dolly: only `prompt` trains.

use burn::tensor::{Device, Int, Tensor};
use sweelol_gemma::Gemma3;
use sweelol_train::lookup::Lookup;
use sweelol_train::{artifact_dir, prepare, run_technique, Artifact, RunConfig, RunIdentity, RunReport, Technique, TrainError, TrainableModel};

use crate::{PromptTuned, PromptTuningConfig};

/// The technique's name in configs and reports.
pub const TECHNIQUE: &str = "prompt-tuning";

/// Prompt tuning in the technique registry.
pub struct PromptTuning;

impl Technique for PromptTuning {
    const NAME: &'static str = TECHNIQUE;
    const TABLE: &'static str = "prompt_tuning";
    const ARTIFACT: Artifact = Artifact::Adapter;
    type Settings = PromptTuningConfig;

    fn run(cfg: &RunConfig, settings: &PromptTuningConfig, device: &Device) -> Result<RunReport, TrainError> {
        run(cfg, settings, device)
    }

    fn set_seed(settings: &mut PromptTuningConfig, seed: u64) {
        settings.seed = seed;
    }
}

impl TrainableModel for PromptTuned {
    fn lm(&self) -> &Gemma3 {
        &self.base
    }

    /// The base's table is frozen: its lookup stays in the graph (no gradient anyway).
    fn hidden_states(&self, input_ids: Tensor<2, Int>) -> (Tensor<3>, Option<Lookup>) {
        (PromptTuned::hidden_states(self, input_ids), None)
    }

    fn is_trainable(&self, path: &str) -> bool {
        path.starts_with("prompt")
    }
}

/// Trains virtual tokens before the model `cfg` names on its Dolly rows, on `device`
/// (training uses its autodiff form), and saves them in PEFT's format to
/// `[output] artifact_dir` (default `<output.dir>/adapter`).
pub fn run(cfg: &RunConfig, pt: &PromptTuningConfig, device: &Device) -> Result<RunReport, TrainError> {
    sweelol_train::validated::<PromptTuning>(pt)?;
    let prepared = prepare(cfg, device)?;
    let model = PromptTuned::init(prepared.model, pt, &prepared.tokenizer)
        .map_err(sweelol_train::settings_error::<PromptTuning>)?;
    let dir = artifact_dir(cfg, "adapter");
    let base = sweelol_train::run::peft_base_model(cfg);
    let id = RunIdentity::new(cfg, TECHNIQUE, pt);
    run_technique(cfg, &id, model, &prepared.data, &prepared.lock, &dir, |m, dir| {
        m.save_peft(pt, dir, &base).map_err(|e| TrainError::format(dir, e.to_string()))
    })
}
