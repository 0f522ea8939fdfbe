//! What a technique crate gives the rest of the project: its name, its config table, its
//! typed settings and its run. Each technique crate implements [`Technique`] once; the
//! study's registry (`sweelol_study::technique`) lists the implementations, and config
//! parsing, dispatch, the study and the benchmark read everything else from them.

use std::fmt::Debug;
use std::path::PathBuf;

use burn::tensor::Device;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::{RunConfig, RunReport, TrainError};

/// What a technique's run leaves behind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Artifact {
    /// A whole model, as a transformers directory.
    Model,
    /// A PEFT adapter for the base model.
    Adapter,
}

/// One fine-tuning (or compression) technique.
pub trait Technique {
    /// `technique = "…"` in a config file, and the technique's name in every record.
    const NAME: &'static str;
    /// The config file's table of the settings, e.g. `lora` for `[lora]`.
    const TABLE: &'static str;
    /// What [`Technique::run`] writes to `[output] artifact_dir`.
    const ARTIFACT: Artifact;
    /// The settings in the technique's table (an absent table means the defaults).
    type Settings: Clone + Debug + Default + PartialEq + Serialize + DeserializeOwned;

    /// Checks the settings before anything loads; the message names the key.
    fn validate(_settings: &Self::Settings) -> Result<(), String> {
        Ok(())
    }

    /// Trains (or compresses) the model `cfg` names on `device` and writes the result.
    fn run(cfg: &RunConfig, settings: &Self::Settings, device: &Device) -> Result<RunReport, TrainError>;

    /// Whether these settings train at all (pruning without fine-tuning does not).
    fn trains(_settings: &Self::Settings) -> bool {
        true
    }

    /// Sets the technique's own initialisation seed, where it has one (the data order's
    /// seed is `[train] seed`, shared by all).
    fn set_seed(_settings: &mut Self::Settings, _seed: u64) {}

    /// The starting model carries these sparsity masks (a pruned model's masks file); a
    /// technique that must keep its zeros takes them here.
    fn keep_masks(_settings: &mut Self::Settings, _masks: Option<PathBuf>) {}

    /// Names the model this technique learns from, for techniques that have one; `false`
    /// when it has none.
    fn set_teacher(_settings: &mut Self::Settings, _teacher: String) -> bool {
        false
    }
}

/// A settings error of technique `T`, as every technique reports one: `[table] message`.
pub fn settings_error<T: Technique>(msg: impl std::fmt::Display) -> TrainError {
    TrainError::Settings(format!("[{}] {msg}", T::TABLE))
}

/// [`Technique::validate`], its message as [`settings_error`] words it.
pub fn validated<T: Technique>(settings: &T::Settings) -> Result<(), TrainError> {
    T::validate(settings).map_err(settings_error::<T>)
}
