//! A technique's run from a config, in three calls shared by every technique crate:
//! [`prepare`] (model, tokenizer, data), [`artifact_dir`] (where the result goes) and
//! [`run_technique`] (evaluate, train, save the result, report).

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;
use sweelol_backend::BackendKind;
use sweelol_gemma::{load_pretrained, Gemma3, GemmaTokenizer};

use crate::config::{RunConfig, Technique};
use crate::data::{load_dolly, Dataset};
use crate::error::{Result, TrainError};
use crate::model::TrainableModel;
use crate::params;
use crate::trainer::{evaluate, train, TrainOptions};

/// The inputs of a run: the base model on the backend's autodiff device, the tokenizer the
/// data was tokenized with (ship it with the result), and the data.
pub struct Prepared {
    pub model: Gemma3,
    pub tokenizer: GemmaTokenizer,
    pub data: Dataset,
}

/// Loads what `cfg` names for a run of `technique` (which must be the config's).
pub fn prepare(cfg: &RunConfig, backend: &BackendKind, technique: Technique) -> Result<Prepared> {
    if cfg.technique != technique {
        return Err(TrainError::config(
            &cfg.file,
            format!("technique is `{}`, not `{technique}`", cfg.technique),
        ));
    }
    let pre = load_pretrained(&cfg.model.source, &backend.autodiff_device())?;
    let tokenizer = match &cfg.model.tokenizer {
        Some(path) => GemmaTokenizer::from_file(path)?,
        None => pre.tokenizer,
    };
    let data = load_dolly(&cfg.data, tokenizer.inner())?;
    Ok(Prepared { model: pre.model, tokenizer, data })
}

/// Where a technique writes its result: `configured` (relative to the config file), or
/// `<output.dir>/<default_name>`.
pub fn artifact_dir(cfg: &RunConfig, configured: Option<PathBuf>, default_name: &str) -> PathBuf {
    match configured {
        Some(p) if p.is_relative() => cfg.file.parent().unwrap_or(Path::new(".")).join(p),
        Some(p) => p,
        None => cfg.output.dir.join(default_name),
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
}

/// Evaluates `model` on the held-out data, trains it as `cfg` says (resuming if a checkpoint
/// exists), then calls `save(&trained, dir)` to write the technique's result.
pub fn run_technique<M, F>(cfg: &RunConfig, model: M, data: &Dataset, dir: &Path, save: F) -> Result<RunReport>
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
    let outcome = train(model, data, &TrainOptions::from_config(cfg))?;
    save(&outcome.model, dir)?;
    Ok(RunReport {
        technique: cfg.technique.to_string(),
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
    })
}
