//! A technique's run from a config, in three calls shared by every technique crate:
//! [`prepare`] (model, tokenizer, data), [`artifact_dir`] (where the result goes) and
//! [`run_technique`] (evaluate, train, save the result, report).

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::tensor::Device;
use serde::Serialize;
use sweelol_gemma::{load_pretrained, Gemma3, GemmaTokenizer};

use std::collections::BTreeMap;

use crate::config::{run_hash, run_keys, RunConfig};
use crate::data::{load_dolly, Dataset};
use crate::error::Result;
use crate::model::TrainableModel;
use crate::params;
use crate::trainer::{evaluate, train, TrainOptions};

/// The inputs of a run: the base model on the autodiff device, the tokenizer the data was
/// tokenized with (ship it with the result), and the data.
pub struct Prepared {
    pub model: Gemma3,
    pub tokenizer: GemmaTokenizer,
    pub data: Dataset,
}

/// `device` with automatic differentiation (unchanged if it already has it).
pub fn autodiff_device(device: &Device) -> Device {
    if device.is_autodiff() {
        device.clone()
    } else {
        device.clone().autodiff()
    }
}

/// Loads what `cfg` names: the model (on `device`'s autodiff form, computing in
/// `[train] dtype`), its tokenizer or the configured one, and the Dolly data tokenized with it.
pub fn prepare(cfg: &RunConfig, device: &Device) -> Result<Prepared> {
    cfg.train.dtype.check_supported(device)?;
    let pre = load_pretrained(&cfg.model.source, &autodiff_device(device))?;
    let tokenizer = match &cfg.model.tokenizer {
        Some(path) => GemmaTokenizer::from_file(path)?,
        None => pre.tokenizer,
    };
    let data = load_dolly(&cfg.data, tokenizer.inner())?;
    Ok(Prepared { model: pre.model.with_precision(cfg.train.dtype), tokenizer, data })
}

/// What a PEFT adapter trained under `cfg` names as its base model, so that PEFT's
/// `AutoPeftModelForCausalLM` can load it (`google/gemma-3-270m` for that model in any
/// format; a local path otherwise).
pub fn peft_base_model(cfg: &RunConfig) -> String {
    sweelol_sources::base_model_name(&cfg.model.source)
}

/// Where a technique writes its result: `[output] artifact_dir`, or
/// `<output.dir>/<default_name>`.
pub fn artifact_dir(cfg: &RunConfig, default_name: &str) -> PathBuf {
    cfg.output.artifact_dir.clone().unwrap_or_else(|| cfg.output.dir.join(default_name))
}

/// Which technique a run is and the identity of its result (see [`run_hash`]).
#[derive(Clone, Debug)]
pub struct RunIdentity {
    pub technique: &'static str,
    pub hash: String,
    /// What the hash covers, key by key (see [`run_keys`]).
    pub keys: BTreeMap<String, String>,
}

impl RunIdentity {
    /// The identity of `cfg` trained by `technique` with `settings`.
    pub fn new(cfg: &RunConfig, technique: &'static str, settings: &impl Serialize) -> Self {
        RunIdentity { technique, hash: run_hash(cfg, technique, settings), keys: run_keys(cfg, technique, settings) }
    }
}

/// What a run did and where its outputs are; serialisable for the study's records.
#[derive(Clone, Debug, Serialize)]
pub struct RunReport {
    pub technique: String,
    /// The technique's result (model or adapter directory).
    pub artifact_dir: PathBuf,
    /// Optimizer steps completed (including any before a resume).
    pub steps: usize,
    pub trainable_params: usize,
    pub total_params: usize,
    /// Held-out loss of the model as it entered training, and at the end.
    pub eval_loss_before: Option<f64>,
    pub eval_loss: Option<f64>,
    /// Training loss of the last step.
    pub last_loss: Option<f64>,
    pub metrics_path: PathBuf,
    pub last_checkpoint: Option<PathBuf>,
    pub resumed_from: Option<PathBuf>,
    pub train_examples: usize,
    pub eval_examples: usize,
    /// Wall-clock seconds of this call (evaluation, training, saving).
    pub seconds: f64,
    /// Distinct micro-batch shapes trained on, and the seconds before the first step that
    /// used none new (see `[train] pad_to_multiple`).
    pub distinct_shapes: usize,
    pub warmup_s: Option<f64>,
}

impl RunReport {
    /// The report of a run that wrote `artifact_dir` without training (e.g. pruning only).
    pub fn untrained(technique: &str, artifact_dir: PathBuf, total_params: usize, seconds: f64) -> Self {
        RunReport {
            technique: technique.to_string(),
            artifact_dir,
            steps: 0,
            trainable_params: 0,
            total_params,
            eval_loss_before: None,
            eval_loss: None,
            last_loss: None,
            metrics_path: PathBuf::new(),
            last_checkpoint: None,
            resumed_from: None,
            train_examples: 0,
            eval_examples: 0,
            seconds,
            distinct_shapes: 0,
            warmup_s: None,
        }
    }
}

/// Evaluates `model` on the held-out data, trains it as `cfg` says (resuming if a checkpoint
/// of the same identity exists), then calls `save(&trained, dir)` to write the result.
pub fn run_technique<M, F>(
    cfg: &RunConfig,
    id: &RunIdentity,
    model: M,
    data: &Dataset,
    dir: &Path,
    save: F,
) -> Result<RunReport>
where
    M: TrainableModel,
    F: FnOnce(&M, &Path) -> Result<()>,
{
    let start = Instant::now();
    let infos = params::param_infos(&model);
    let total_params = infos.iter().map(|p| p.numel()).sum();
    let trainable_params = infos.iter().filter(|p| model.is_trainable(&p.path)).map(|p| p.numel()).sum();
    let eval_loss_before = if data.eval.is_empty() {
        None
    } else {
        Some(evaluate(&model, &data.eval, cfg.train.batch_size, cfg.train.loss_chunk_rows)?.0)
    };
    let outcome = train(model, data, &TrainOptions::from_config(cfg, &id.hash).with_keys(id.keys.clone()));
    // The run's frozen table and weights, packed for bf16, go with the run.
    sweelol_gemma::gemm_bf16::forget_packed();
    let outcome = outcome?;
    save(&outcome.model, dir)?;
    Ok(RunReport {
        technique: id.technique.to_string(),
        artifact_dir: dir.to_path_buf(),
        steps: outcome.steps_done,
        trainable_params,
        total_params,
        eval_loss_before,
        eval_loss: outcome.eval_loss,
        last_loss: outcome.last_loss,
        metrics_path: outcome.metrics_path,
        last_checkpoint: outcome.last_checkpoint,
        resumed_from: outcome.resumed_from,
        train_examples: data.train.len(),
        eval_examples: data.eval.len(),
        seconds: start.elapsed().as_secs_f64(),
        distinct_shapes: outcome.distinct_shapes,
        warmup_s: outcome.warmup_s,
    })
}
