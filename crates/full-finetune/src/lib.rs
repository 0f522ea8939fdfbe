//! sweelol-full-finetune: every weight of Gemma-3 trains on Dolly.
//!
//! The trainable model is [`Gemma3`] itself (its `TrainableModel` impl in sweelol-train marks
//! every parameter trainable). What this crate adds is the run: load the model and the data
//! named by the config, train, and write the result as a transformers directory
//! (`config.json`, `model.safetensors`, `tokenizer.json`) that sweelol and transformers load.
//!
//! Used on its own: two steps on a few Dolly rows, then a transformers directory (here on a
//! tiny test model; point `source` at `google/gemma-3-270m` or a GGUF for real):
//!
// The example reads the shared fixtures; without them it is listed as ignored.
#![cfg_attr(fixtures, doc = "```")]
#![cfg_attr(not(fixtures), doc = "```ignore")]
//! use burn::tensor::Device;
//! use sweelol_full_finetune::{run, FullFinetuneConfig};
//! use sweelol_train::{testing, DataSection, ModelSection, OutputSection, RunConfig, TrainSection};
//!
//! let work = std::env::temp_dir().join(format!("sweelol-ft-doc-{}", std::process::id()));
//! let model_dir = testing::tiny_real_vocab_model(&work.join("base"))?;
//! let cfg = RunConfig {
//!     model: ModelSection { source: model_dir.display().to_string(), tokenizer: None },
//!     data: DataSection::new(testing::dolly_path(), 8, 64),
//!     train: TrainSection { max_steps: Some(2), ..TrainSection::new(5e-5, 4) },
//!     output: OutputSection::new(work.join("run")),
//!     file: Default::default(),
//! };
//! let report = run(&cfg, &FullFinetuneConfig::default(), &Device::flex())?;
//! assert_eq!((report.steps, report.trainable_params), (2, report.total_params));
//! for file in ["config.json", "model.safetensors", "tokenizer.json"] {
//!     assert!(report.artifact_dir.join(file).is_file());
//! }
//! # std::fs::remove_dir_all(&work).ok();
//! # Ok::<(), sweelol_train::TrainError>(())
//! ```

use std::path::Path;

use burn::module::Module;
use burn::tensor::Device;
use serde::{Deserialize, Serialize};
use sweelol_gemma::{save_hf_dir, Gemma3, GemmaTokenizer};
use sweelol_train::{artifact_dir, prepare, run_technique, Artifact, RunConfig, RunIdentity, RunReport, Technique, TrainError};

/// The technique's name in configs and reports.
pub const TECHNIQUE: &str = "full-finetune";

/// Full fine-tuning in the technique registry.
pub struct FullFinetune;

impl Technique for FullFinetune {
    const NAME: &'static str = TECHNIQUE;
    const TABLE: &'static str = "full_finetune";
    const ARTIFACT: Artifact = Artifact::Model;
    type Settings = FullFinetuneConfig;

    fn run(cfg: &RunConfig, settings: &FullFinetuneConfig, device: &Device) -> Result<RunReport, TrainError> {
        run(cfg, settings, device)
    }
}

/// `[full_finetune]`: full fine-tuning has no settings beyond the shared sections; the
/// table may be present (empty) and unknown keys in it are errors.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FullFinetuneConfig {}

/// Trains every weight of the model `cfg` names on its Dolly rows, on `device` (training
/// uses its autodiff form), and writes a transformers directory to `[output] artifact_dir`
/// (default `<output.dir>/model`).
pub fn run(cfg: &RunConfig, settings: &FullFinetuneConfig, device: &Device) -> Result<RunReport, TrainError> {
    sweelol_train::validated::<FullFinetune>(settings)?;
    let prepared = prepare(cfg, device)?;
    let dir = artifact_dir(cfg, "model");
    let tokenizer = prepared.tokenizer;
    let id = RunIdentity::new(cfg, TECHNIQUE, settings);
    run_technique(cfg, &id, prepared.model, &prepared.data, &prepared.lock, &dir, |m, dir| export(m, &tokenizer, dir))
}

/// Writes `model` and `tokenizer` as a transformers directory.
pub fn export(model: &Gemma3, tokenizer: &GemmaTokenizer, dir: &Path) -> Result<(), TrainError> {
    Ok(save_hf_dir(&model.valid(), tokenizer, dir)?)
}
