//! A technique's run from a config, in three calls shared by every technique crate:
//! [`prepare`] (model, tokenizer, data), [`artifact_dir`] (where the result goes) and
//! [`run_technique`] (evaluate, train, save the result, report).

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::tensor::Device;
use serde::Serialize;
use sweelol_gemma::{load_pretrained, Gemma3, GemmaTokenizer};

use std::collections::BTreeMap;

use crate::config::{run_hash, run_keys, RunConfig, TrainSection};
use crate::data::{select_dolly, tokenize_split, Dataset};
use crate::error::{Result, TrainError};
use crate::model::TrainableModel;
use crate::params;
use crate::trainer::{evaluate, train, TrainOptions};

/// The inputs of a run: the base model on the autodiff device, the tokenizer the data was
/// tokenized with (ship it with the result), the data, and the run directory's lock.
pub struct Prepared {
    pub model: Gemma3,
    pub tokenizer: GemmaTokenizer,
    pub data: Dataset,
    /// `[output] dir`, locked before anything loads: a second run into it stops at once.
    pub lock: sweelol_outdir::DirLock,
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
    check_warmup(&cfg.train, cfg.data.n_train)?;
    let lock = sweelol_outdir::DirLock::acquire(&cfg.output.dir)?;
    // Records first: a request the file cannot meet fails before the model loads.
    let split = select_dolly(&cfg.data)?;
    let pre = load_pretrained(&cfg.model.source, &autodiff_device(device))?;
    let tokenizer = match &cfg.model.tokenizer {
        Some(path) => GemmaTokenizer::from_file(path)?,
        None => pre.tokenizer,
    };
    let data = tokenize_split(&split, &cfg.data, tokenizer.inner())?;
    Ok(Prepared { model: pre.model.with_precision(cfg.train.dtype), tokenizer, data, lock })
}

/// Refuses a warm-up longer than the run (`n_train` examples, before any are dropped): the
/// learning rate would never reach `lr`, and the run would train at a fraction of what the
/// config says without a word.
pub fn check_warmup(t: &TrainSection, n_train: usize) -> Result<()> {
    let steps = crate::trainer::total_steps(t, n_train);
    if t.warmup_steps <= steps {
        return Ok(());
    }
    let how = match t.max_steps {
        Some(s) => format!("max_steps = {s}"),
        None => format!("{} epoch(s) of {n_train} examples, batch_size {} x grad_accum {}", t.epochs, t.batch_size, t.grad_accum),
    };
    Err(TrainError::Settings(format!(
        "[train] warmup_steps = {} is more than the run's {steps} optimizer steps ({how}): the learning rate would never reach lr; set warmup_steps to at most {steps}",
        t.warmup_steps
    )))
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
    /// Seconds earlier calls trained before the checkpoint this one resumed from (0 when
    /// it started fresh): `seconds + earlier_seconds` is the run's time over every call.
    #[serde(default)]
    pub earlier_seconds: f64,
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
            earlier_seconds: 0.0,
            distinct_shapes: 0,
            warmup_s: None,
        }
    }
}

/// Evaluates `model` on the held-out data, trains it as `cfg` says (resuming if a checkpoint
/// of the same identity exists), then calls `save(&trained, dir)` to write the result.
/// `lock` is the run directory's, taken by [`prepare`] before anything loaded.
pub fn run_technique<M, F>(
    cfg: &RunConfig,
    id: &RunIdentity,
    model: M,
    data: &Dataset,
    lock: &sweelol_outdir::DirLock,
    dir: &Path,
    save: F,
) -> Result<RunReport>
where
    M: TrainableModel,
    F: FnOnce(&M, &Path) -> Result<()>,
{
    if lock.dir() != cfg.output.dir {
        return Err(TrainError::Settings(format!(
            "the lock held is {}'s, not the run directory {}",
            lock.dir().display(),
            cfg.output.dir.display()
        )));
    }
    let start = Instant::now();
    let infos = params::param_infos(&model);
    let total_params = infos.iter().map(|p| p.numel()).sum();
    let trainable_params = infos.iter().filter(|p| model.is_trainable(&p.path)).map(|p| p.numel()).sum();
    let eval_loss_before = if data.eval.is_empty() {
        None
    } else {
        Some(evaluate(&model, &data.eval, cfg.train.batch_size, cfg.train.loss_chunk_rows)?.0)
    };
    let mut opts = TrainOptions::from_config(cfg, &id.hash).with_keys(id.keys.clone());
    opts.lock_held = true;
    let outcome = train(model, data, &opts);
    // The run's frozen table and weights, packed for bf16, go with the run.
    sweelol_gemma::kernels::gemm_bf16::forget_packed();
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
        earlier_seconds: outcome.earlier_s,
        distinct_shapes: outcome.distinct_shapes,
        warmup_s: outcome.warmup_s,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_into_a_locked_directory_stops_before_anything_loads() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("run");
        let held = sweelol_outdir::DirLock::acquire(&out).unwrap();
        // Neither the model nor the data exists: had anything loaded first, its error
        // would come instead of the lock's.
        let cfg = crate::RunConfig {
            model: crate::ModelSection { source: dir.path().join("no-model").display().to_string(), tokenizer: None },
            data: crate::DataSection::new(dir.path().join("no-data.jsonl"), 8, 64),
            train: TrainSection { max_steps: Some(2), ..TrainSection::new(1e-3, 4) },
            output: crate::OutputSection::new(&out),
            file: Default::default(),
        };
        let msg = prepare(&cfg, &burn::tensor::Device::flex()).err().expect("refused").to_string();
        assert!(msg.contains("locked") || msg.contains("pid"), "{msg}");
        assert!(!msg.contains("no-model") && !msg.contains("no-data"), "{msg}");
        drop(held);
        let msg = prepare(&cfg, &burn::tensor::Device::flex()).err().expect("no data").to_string();
        assert!(msg.contains("no-data.jsonl"), "with the lock free, the missing data is what stops it: {msg}");
    }

    #[test]
    fn a_warmup_longer_than_the_run_is_refused_naming_both() {
        let mut t = TrainSection { warmup_steps: 1000, max_steps: Some(2), ..TrainSection::new(1e-4, 4) };
        let msg = check_warmup(&t, 128).unwrap_err().to_string();
        assert!(msg.contains("warmup_steps = 1000") && msg.contains("2 optimizer steps") && msg.contains("max_steps = 2"), "{msg}");
        t.warmup_steps = 2;
        assert!(check_warmup(&t, 128).is_ok(), "a warm-up as long as the run is allowed");
        // 128 examples in batches of 4, one epoch: 32 steps.
        let t = TrainSection { warmup_steps: 33, ..TrainSection::new(1e-4, 4) };
        let msg = check_warmup(&t, 128).unwrap_err().to_string();
        assert!(msg.contains("32 optimizer steps"), "{msg}");
    }

    #[test]
    fn more_records_than_the_file_has_is_refused_naming_the_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("three.jsonl");
        let row = |i: usize| format!(r#"{{"instruction": "q{i}", "context": "", "response": "a{i}", "category": "open_qa"}}"#);
        std::fs::write(&path, (0..3).map(row).collect::<Vec<_>>().join("\n")).unwrap();
        let mut cfg = crate::config::DataSection::new(&path, 3, 64);
        cfg.n_eval = 1;
        let msg = select_dolly(&cfg).unwrap_err().to_string();
        assert!(msg.contains("n_train = 3 plus n_eval = 1 asks for 4 records") && msg.contains("three.jsonl has 3"), "{msg}");
        cfg.n_eval = 0;
        assert_eq!(select_dolly(&cfg).unwrap().train.len(), 3);
    }
}
