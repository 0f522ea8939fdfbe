//! The training loop shared by every technique.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use burn::tensor::Tensor;
use indicatif::{ProgressBar, ProgressStyle};
use sweelol_dolly::{bucketed_batches, TokenizedExample};

use crate::batch::TokenBatch;
use crate::checkpoint::{self, TrainState};
use crate::config::{RunConfig, TrainSection};
use crate::data::{BatchStream, Dataset};
use crate::error::{Result, TrainError};
use crate::metrics::{EvalRecord, MetricsWriter, StepRecord};
use crate::model::TrainableModel;
use crate::optim::{clip_scale, global_grad_norm, AdamW, AdamWConfig};
use crate::params;
use crate::schedule::LrSchedule;

/// How to run: what a [`RunConfig`] says, in a form tests can also build directly.
#[derive(Clone, Debug)]
pub struct TrainOptions {
    pub train: TrainSection,
    /// Run directory: `metrics.jsonl` and `checkpoints/`.
    pub output_dir: PathBuf,
    /// Continue from the newest checkpoint in `output_dir` if there is one.
    pub resume: bool,
    pub progress: bool,
    /// Identifies the config; a checkpoint only resumes under the same hash.
    pub config_hash: String,
    /// Return after this many completed steps without a final checkpoint or evaluation, as if
    /// the process had been killed (for resume tests).
    pub stop_after: Option<usize>,
}

impl TrainOptions {
    pub fn from_config(cfg: &RunConfig) -> Self {
        TrainOptions {
            train: cfg.train.clone(),
            output_dir: cfg.output.dir.clone(),
            resume: cfg.output.resume,
            progress: cfg.output.progress,
            config_hash: cfg.hash(),
            stop_after: None,
        }
    }
}

/// What a run produced.
#[derive(Debug)]
pub struct TrainOutcome<M> {
    pub model: M,
    /// Optimizer steps completed, including those before a resume.
    pub steps_done: usize,
    pub total_steps: usize,
    pub resumed_from: Option<PathBuf>,
    /// Training loss of the last step run by this call.
    pub last_loss: Option<f64>,
    /// Held-out loss at the end (None without eval data or when interrupted).
    pub eval_loss: Option<f64>,
    pub last_checkpoint: Option<PathBuf>,
    pub metrics_path: PathBuf,
    /// True when `stop_after` ended the run early.
    pub interrupted: bool,
}

/// Optimizer steps of a run: `max_steps`, or enough for `epochs` passes.
pub fn total_steps(t: &TrainSection, num_examples: usize) -> usize {
    match t.max_steps {
        Some(s) => s,
        None => (t.epochs * num_examples.div_ceil(t.batch_size)).div_ceil(t.grad_accum),
    }
}

/// Device RNG seed of a step: a function of (seed, step) only, so resumed runs draw the same
/// dropout masks as uninterrupted ones.
fn step_seed(seed: u64, step: usize) -> u64 {
    seed ^ (step as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// Mean loss of `model` over `examples` (no gradients), and the number of scored tokens.
pub fn evaluate<M: TrainableModel>(model: &M, examples: &[TokenizedExample], batch_size: usize, chunk_rows: usize) -> Result<(f64, usize)> {
    let valid = model.valid();
    let mut total = 0.0;
    let mut tokens = 0;
    for b in bucketed_batches(examples, batch_size, 0)? {
        let tb = TokenBatch::from_dolly(&b);
        if tb.targets.is_empty() {
            continue;
        }
        let out = valid.loss(&tb, chunk_rows, 1.0);
        total += out.value;
        tokens += out.tokens;
    }
    Ok((if tokens > 0 { total / tokens as f64 } else { f64::NAN }, tokens))
}

fn check_vocab(data: &Dataset, vocab: usize) -> Result<()> {
    for (name, set) in [("train", &data.train), ("eval", &data.eval)] {
        for (i, ex) in set.iter().enumerate() {
            if let Some(&bad) = ex.input_ids.iter().find(|&&id| id as usize >= vocab) {
                return Err(TrainError::Data(format!(
                    "{name} example {i} has token id {bad}, but the model's vocabulary has {vocab} entries"
                )));
            }
        }
    }
    Ok(())
}

/// Trains `model` on `data` as `opts` says, resuming from the newest checkpoint if asked.
///
/// Per optimizer step: `grad_accum` micro-batches, each loss divided by the step's total
/// number of target tokens so the accumulated gradient is that of the step's mean loss;
/// the global gradient norm is computed and the gradients scaled to `clip_norm`; AdamW
/// updates the trainable parameters; `after_step` runs. A NaN/inf loss or gradient norm
/// stops the run with an error naming the step, before anything is written for it.
pub fn train<M: TrainableModel>(model: M, data: &Dataset, opts: &TrainOptions) -> Result<TrainOutcome<M>> {
    let t = &opts.train;
    t.validate().map_err(TrainError::Data)?;
    let device = model.lm().device();
    if !device.is_autodiff() {
        return Err(TrainError::Data(
            "the model must be loaded on an autodiff device (`device.autodiff()`) to be trained".into(),
        ));
    }
    check_vocab(data, model.lm().config.vocab_size)?;

    // Trainability and weight decay are decided once, by path.
    let infos = params::param_infos(&model);
    let trainable: std::collections::HashSet<String> =
        infos.iter().filter(|p| model.is_trainable(&p.path)).map(|p| p.path.clone()).collect();
    if trainable.is_empty() {
        return Err(TrainError::Data("the model has no trainable parameters".into()));
    }
    let decayed = infos
        .iter()
        .filter(|p| trainable.contains(&p.path) && model.decays(&p.path, p.shape.len()))
        .map(|p| p.path.clone())
        .collect();
    let mut model = params::set_trainable(model, |p| trainable.contains(p));
    let adam = AdamWConfig { beta1: t.betas[0], beta2: t.betas[1], eps: t.eps, weight_decay: t.weight_decay };
    let mut opt = AdamW::new(adam, decayed);

    let mut stream = BatchStream::new(&data.train, t.batch_size, t.seed)?;
    let total = total_steps(t, data.train.len());
    let schedule = LrSchedule {
        peak: t.lr,
        warmup_steps: t.warmup_steps,
        total_steps: total,
        kind: t.schedule,
        min_lr_ratio: t.min_lr_ratio,
    };

    std::fs::create_dir_all(&opts.output_dir).map_err(|e| TrainError::io(&opts.output_dir, e))?;
    let ckpt_root = opts.output_dir.join("checkpoints");
    let mut start = 0;
    let mut resumed_from = None;
    let mut last_checkpoint = None;
    match checkpoint::latest(&ckpt_root)? {
        Some(dir) if opts.resume => {
            let ck = checkpoint::load(&dir)?;
            if ck.state.config_hash != opts.config_hash {
                return Err(TrainError::checkpoint(
                    &dir,
                    format!(
                        "was written by a different config (hash {} vs {}); use another output dir or remove it",
                        ck.state.config_hash, opts.config_hash
                    ),
                ));
            }
            model = model.load_trainable_state(&ck.trainable).map_err(|m| TrainError::checkpoint(&dir, m))?;
            opt.import_state(ck.optimizer, &ck.state.adam_steps, &device)
                .map_err(|m| TrainError::checkpoint(&dir, m))?;
            start = ck.state.step;
            resumed_from = Some(dir.clone());
            last_checkpoint = Some(dir);
        }
        Some(dir) => {
            return Err(TrainError::checkpoint(
                &dir,
                "output dir already holds checkpoints; set resume = true or pick another dir",
            ))
        }
        None => {}
    }

    let metrics_path = opts.output_dir.join("metrics.jsonl");
    let mut metrics = MetricsWriter::open(&metrics_path, resumed_from.as_ref().map(|_| start))?;
    let bar = if opts.progress { ProgressBar::new(total as u64) } else { ProgressBar::hidden() };
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} steps [{elapsed_precise}<{eta_precise}] {msg}")
            .expect("valid template"),
    );
    bar.set_position(start as u64);

    let clock = Instant::now();
    let mut last_loss = None;
    let mut eval_loss = None;
    let mut last_eval_step = None;
    let mut step = start;
    let mut interrupted = false;
    let run_eval = |model: &M, step: usize, metrics: &mut MetricsWriter| -> Result<Option<f64>> {
        if data.eval.is_empty() {
            return Ok(None);
        }
        let t0 = Instant::now();
        let (loss, tokens) = evaluate(model, &data.eval, t.batch_size, t.loss_chunk_rows)?;
        metrics.write(&EvalRecord {
            kind: "eval",
            step,
            eval_loss: loss,
            eval_tokens: tokens,
            eval_s: t0.elapsed().as_secs_f64(),
            elapsed_s: clock.elapsed().as_secs_f64(),
        })?;
        Ok(Some(loss))
    };
    let save = |model: &M, opt: &AdamW, step: usize, loss: f64, stream: &BatchStream| -> Result<PathBuf> {
        let next = step * t.grad_accum;
        let (epoch, batch_in_epoch) = stream.position(next);
        let (moments, adam_steps) = opt.export_state();
        let state = TrainState {
            step,
            epoch,
            batch_in_epoch,
            next_micro_batch: next,
            seed: t.seed,
            config_hash: opts.config_hash.clone(),
            adam_steps,
            last_loss: loss,
        };
        checkpoint::save(&ckpt_root, model.trainable_state(), &moments, &state, t.keep_checkpoints)
    };

    while step < total {
        if opts.stop_after.is_some_and(|s| step >= s) {
            interrupted = true;
            break;
        }
        let t0 = Instant::now();
        device.seed(step_seed(t.seed, step));
        let micro: Vec<TokenBatch> = (0..t.grad_accum)
            .map(|k| stream.get(step * t.grad_accum + k).map(|b| TokenBatch::from_dolly(&b)))
            .collect::<Result<_>>()?;
        let denom: usize = micro.iter().map(|b| b.targets.len()).sum();
        if denom == 0 {
            return Err(TrainError::Data(format!("step {} has no target tokens", step + 1)));
        }
        let mut grads: BTreeMap<String, Tensor<1>> = BTreeMap::new();
        let mut loss = 0.0;
        for b in &micro {
            if b.targets.is_empty() {
                continue;
            }
            let out = model.loss(b, t.loss_chunk_rows, denom as f64);
            if !out.value.is_finite() {
                return Err(TrainError::NonFinite { step: step + 1, what: "loss", value: out.value, last_checkpoint });
            }
            loss += out.value;
            let mut g = out.loss.backward();
            for (path, grad) in params::grads_by_path(&model, &mut g) {
                let acc = match grads.remove(&path) {
                    Some(prev) => prev + grad,
                    None => grad,
                };
                grads.insert(path, acc);
            }
        }
        let norm = global_grad_norm(&grads);
        if !norm.is_finite() {
            return Err(TrainError::NonFinite { step: step + 1, what: "gradient norm", value: norm, last_checkpoint });
        }
        let scale = clip_scale(norm, t.clip_norm);
        let lr = schedule.lr(step);
        model = opt.step(model, grads, lr, scale);
        model.after_step();
        step += 1;
        last_loss = Some(loss);

        let secs = t0.elapsed().as_secs_f64();
        let tokens: usize = micro.iter().map(|b| b.num_tokens).sum();
        metrics.write(&StepRecord {
            kind: "train",
            step,
            epoch: stream.position((step - 1) * t.grad_accum).0,
            loss,
            lr,
            grad_norm: norm,
            clipped: scale < 1.0,
            tokens,
            target_tokens: denom,
            tokens_per_s: tokens as f64 / secs,
            step_s: secs,
            elapsed_s: clock.elapsed().as_secs_f64(),
        })?;
        bar.set_position(step as u64);
        bar.set_message(format!("loss {loss:.4} lr {lr:.2e} |g| {norm:.3}"));

        if t.eval_every > 0 && step % t.eval_every == 0 && step < total {
            eval_loss = run_eval(&model, step, &mut metrics)?;
            last_eval_step = Some(step);
            if let Some(l) = eval_loss {
                bar.println(format!("step {step}: eval loss {l:.4}"));
            }
        }
        if t.checkpoint_every > 0 && step % t.checkpoint_every == 0 && step < total {
            last_checkpoint = Some(save(&model, &opt, step, loss, &stream)?);
        }
    }

    if !interrupted {
        if last_eval_step != Some(step) {
            eval_loss = run_eval(&model, step, &mut metrics)?;
        }
        let already = last_checkpoint
            .as_ref()
            .and_then(|d: &PathBuf| d.file_name().map(|n| n.to_string_lossy().into_owned()))
            == Some(format!("step-{step:08}"));
        if !already {
            last_checkpoint = Some(save(&model, &opt, step, last_loss.unwrap_or(f64::NAN), &stream)?);
        }
    }
    bar.finish_and_clear();
    Ok(TrainOutcome {
        model,
        steps_done: step,
        total_steps: total,
        resumed_from,
        last_loss,
        eval_loss: if interrupted { None } else { eval_loss },
        last_checkpoint,
        metrics_path: metrics.path().to_path_buf(),
        interrupted,
    })
}
