//! The training loop shared by every technique.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use burn::tensor::Tensor;
use indicatif::{ProgressBar, ProgressStyle};
use sweelol_dolly::{bucketed_batches, Batch, TokenizedExample};

use sweelol_gemma::kernels::gemm_bf16::{packed_for_one_step, packed_while_frozen};
use sweelol_gemma::kernels::{head, host};
use sweelol_gemma::{ShapeBuckets, ShapeLog};

use crate::batch::TokenBatch;
use crate::checkpoint::{self, TrainState};
use crate::config::{RunConfig, TrainSection};
use crate::data::{BatchStream, Dataset};
use crate::error::{Result, TrainError};
use crate::metrics::{EvalRecord, MetricsWriter, StepRecord};
use crate::model::TrainableModel;
use crate::optim::{clip_scale, global_grad_norm, AdamW, AdamWConfig};
use crate::params;
use crate::profile::{self, Phase};
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
    /// What `config_hash` covers, key by key, so a refused resume names the keys that
    /// differ (empty: only the hashes are compared and shown).
    pub config_keys: BTreeMap<String, String>,
    /// Return after this many completed steps without a final checkpoint or evaluation, as if
    /// the process had been killed (for resume tests).
    pub stop_after: Option<usize>,
    /// Append every micro-batch trained on to this JSON Lines file (see [`BatchLog`]).
    pub batch_log: Option<PathBuf>,
    /// The caller holds `output_dir`'s lock (taken by [`crate::run::prepare`] before the
    /// model loads); otherwise the run takes it.
    pub lock_held: bool,
}

impl TrainOptions {
    /// These options with the keys behind `config_hash` (see [`crate::config::run_keys`]).
    pub fn with_keys(mut self, keys: BTreeMap<String, String>) -> Self {
        self.config_keys = keys;
        self
    }

    /// The options `cfg` gives a run whose identity is `config_hash` (see
    /// [`crate::config::run_hash`]).
    pub fn from_config(cfg: &RunConfig, config_hash: &str) -> Self {
        TrainOptions {
            train: cfg.train.clone(),
            output_dir: cfg.output.dir.clone(),
            resume: cfg.output.resume,
            progress: cfg.output.progress,
            config_hash: config_hash.to_string(),
            config_keys: BTreeMap::new(),
            stop_after: None,
            batch_log: cfg.output.batch_log.clone(),
            lock_held: false,
        }
    }
}

/// What a run produced.
#[derive(Debug)]
pub struct TrainOutcome<M> {
    pub model: M,
    /// Optimizer steps completed, including those before a resume.
    pub steps_done: usize,
    /// Seconds earlier invocations trained before the checkpoint this call resumed from
    /// (0 for a fresh run); work after their last checkpoint was lost and is not counted.
    pub earlier_s: f64,
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
    /// Distinct micro-batch shapes `[rows, seq_len]` this call trained on.
    pub distinct_shapes: usize,
    /// Seconds from the start of training to the first step that used no new shape (the
    /// warm-up a JIT backend spends compiling); None if every step brought a new shape.
    pub warmup_s: Option<f64>,
}

/// Optimizer steps of a run: `max_steps`, or enough for `epochs` passes.
pub fn total_steps(t: &TrainSection, num_examples: usize) -> usize {
    match t.max_steps {
        Some(s) => s,
        None => (t.epochs * num_examples.div_ceil(t.batch_size)).div_ceil(t.grad_accum),
    }
}

/// A second handle on the tied table's gradient in host memory, which the optimizer only
/// reads: once the step is done it owns the buffer alone, for the head to write the next
/// gradient into ([`head::recycle_table_grad`]). None off the host.
fn table_grad_to_recycle<M: TrainableModel>(model: &M, grads: &BTreeMap<String, Tensor<1>>) -> Option<Tensor<1>> {
    let path = params::path_of(model, model.lm().embed_tokens.id)?;
    grads.get(&path).filter(|g| host::runs_on_host(&g.device())).cloned()
}

/// Device RNG seed of a step: a function of (seed, step) only, so resumed runs draw the same
/// dropout masks as uninterrupted ones.
fn step_seed(seed: u64, step: usize) -> u64 {
    seed ^ (step as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// Mean loss of `model` over `examples` (no gradients), and the number of scored tokens.
pub fn evaluate<M: TrainableModel>(model: &M, examples: &[TokenizedExample], batch_size: usize, chunk_rows: usize) -> Result<(f64, usize)> {
    evaluate_padded(model, examples, batch_size, chunk_rows, &ShapeBuckets::EXACT)
}

/// [`evaluate`] with every batch padded to `shapes`.
///
/// In bf16 the weights that train are packed here as frozen ones; those packings go when
/// it returns, since the next optimizer step changes the weights ([`packed_while_frozen`]).
pub fn evaluate_padded<M: TrainableModel>(
    model: &M,
    examples: &[TokenizedExample],
    batch_size: usize,
    chunk_rows: usize,
    shapes: &ShapeBuckets,
) -> Result<(f64, usize)> {
    let _packed = packed_while_frozen();
    let valid = model.valid();
    let mut total = 0.0;
    let mut tokens = 0;
    for b in bucketed_batches(examples, batch_size, 0)? {
        let tb = TokenBatch::from_dolly(&b).padded(shapes);
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
    if !model.lm().device().is_autodiff() {
        return Err(TrainError::Data(
            "the model must be loaded on an autodiff device (`device.autodiff()`) to be trained".into(),
        ));
    }
    check_vocab(data, model.lm().config.vocab_size)?;
    let (model, opt) = setup_optimizer(model, t)?;
    let mut run = Run::new(opt, data, opts)?;
    let mut model = run.resume(model)?;
    run.open_outputs()?;
    let training = sweelol_outdir::interrupt::Stoppable::start();
    // Each step's table gradient goes where the last one was, for this run only.
    let _recycling = head::recycling_table_grads();
    while run.step < run.total {
        if opts.stop_after.is_some_and(|s| run.step >= s) {
            run.interrupted = true;
            break;
        }
        model = run.train_step(model)?;
        let (step, total) = (run.step, run.total);
        if training.stop_requested() {
            run.checkpoint(&model)?;
            run.bar.finish_and_clear();
            let checkpoint = run.last_checkpoint.clone().expect("just written");
            return Err(TrainError::Interrupted { step, total, checkpoint });
        }
        if t.eval_every > 0 && step % t.eval_every == 0 && step < total {
            run.evaluate(&model)?;
        }
        if t.checkpoint_every > 0 && step % t.checkpoint_every == 0 && step < total {
            run.checkpoint(&model)?;
        }
    }
    run.finish(model)
}

/// Decides trainability and weight decay once, by path, and builds the optimizer.
fn setup_optimizer<M: TrainableModel>(model: M, t: &TrainSection) -> Result<(M, AdamW)> {
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
    let model = params::set_trainable(model, |p| trainable.contains(p));
    let adam = AdamWConfig { beta1: t.betas[0], beta2: t.betas[1], eps: t.eps, weight_decay: t.weight_decay };
    Ok((model, AdamW::new(adam, decayed)))
}

/// The state of a run between steps (the model itself is passed through, so the optimizer
/// can update its tensors in place).
struct Run<'a> {
    opt: AdamW,
    data: &'a Dataset,
    opts: &'a TrainOptions,
    stream: BatchStream<'a>,
    schedule: LrSchedule,
    total: usize,
    step: usize,
    ckpt_root: PathBuf,
    resumed_from: Option<PathBuf>,
    /// Seconds trained by earlier invocations, from the resumed checkpoint.
    earlier_s: f64,
    last_checkpoint: Option<PathBuf>,
    metrics: Option<MetricsWriter>,
    bar: ProgressBar,
    clock: Instant,
    last_loss: Option<f64>,
    eval_loss: Option<f64>,
    last_eval_step: Option<usize>,
    interrupted: bool,
    /// One run per output directory (released when the run ends).
    _lock: Option<sweelol_outdir::DirLock>,
    /// Micro-batch shapes seen, and the seconds before the first step that saw none new.
    shape_log: ShapeLog,
    warmup_s: Option<f64>,
}

impl<'a> Run<'a> {
    fn new(opt: AdamW, data: &'a Dataset, opts: &'a TrainOptions) -> Result<Self> {
        let t = &opts.train;
        let stream = BatchStream::new(&data.train, t.batch_size, t.seed)?.largest_first(t.largest_batch_first);
        let total = total_steps(t, data.train.len());
        let schedule = LrSchedule {
            peak: t.lr,
            warmup_steps: t.warmup_steps,
            total_steps: total,
            kind: t.schedule,
            min_lr_ratio: t.min_lr_ratio,
        };
        std::fs::create_dir_all(&opts.output_dir).map_err(|e| TrainError::io(&opts.output_dir, e))?;
        let lock = if opts.lock_held { None } else { Some(sweelol_outdir::DirLock::acquire(&opts.output_dir)?) };
        Ok(Run {
            opt,
            data,
            opts,
            stream,
            schedule,
            total,
            step: 0,
            ckpt_root: checkpoint::root(&opts.output_dir),
            resumed_from: None,
            earlier_s: 0.0,
            last_checkpoint: None,
            metrics: None,
            bar: ProgressBar::hidden(),
            clock: Instant::now(),
            last_loss: None,
            eval_loss: None,
            last_eval_step: None,
            interrupted: false,
            _lock: lock,
            shape_log: ShapeLog::default(),
            warmup_s: None,
        })
    }

    /// Loads the newest good checkpoint when there is one and resuming is allowed. A newest
    /// checkpoint that fails its checksums (or cannot be read) is moved aside with a warning
    /// and the previous one is used; when none is usable the error says how to start over.
    fn resume<M: TrainableModel>(&mut self, model: M) -> Result<M> {
        let candidates = checkpoint::candidates(&self.ckpt_root)?;
        let Some(newest) = candidates.first() else { return Ok(model) };
        if !self.opts.resume {
            return Err(TrainError::checkpoint(
                newest,
                "output dir already holds checkpoints; set resume = true or pick another dir",
            ));
        }
        let mut bad: Vec<(PathBuf, String)> = Vec::new();
        for dir in &candidates {
            match checkpoint::load(dir) {
                Ok(ck) => {
                    self.check_same_config(&ck)?;
                    for (old, why) in &bad {
                        let aside = checkpoint::move_aside(old)?;
                        eprintln!(
                            "warning: checkpoint {} is bad ({why}); moved to {} and resuming from {}",
                            old.display(),
                            aside.display(),
                            dir.display()
                        );
                    }
                    let device = model.lm().device();
                    let model = model.load_trainable_state(&ck.trainable).map_err(|m| TrainError::checkpoint(dir, m))?;
                    self.opt
                        .import_state(ck.optimizer, &ck.state.adam_steps, &device)
                        .map_err(|m| TrainError::checkpoint(dir, m))?;
                    self.step = ck.state.step;
                    self.earlier_s = ck.state.elapsed_s;
                    self.resumed_from = Some(dir.clone());
                    self.last_checkpoint = Some(dir.clone());
                    return Ok(model);
                }
                Err(e) => bad.push((dir.clone(), e.to_string())),
            }
        }
        let reasons: Vec<String> = bad.iter().map(|(_, why)| why.clone()).collect();
        Err(TrainError::checkpoint(
            &self.ckpt_root,
            format!(
                "no usable checkpoint ({}); to start this run from step 0, remove them: rm -r '{}'",
                reasons.join("; "),
                self.ckpt_root.display()
            ),
        ))
    }

    /// Refuses a checkpoint written under another config, naming the keys that differ.
    fn check_same_config(&self, ck: &checkpoint::Checkpoint) -> Result<()> {
        if ck.state.config_hash == self.opts.config_hash {
            return Ok(());
        }
        let differences = crate::config::key_differences(&ck.state.config_keys, &self.opts.config_keys);
        let what = if ck.state.config_keys.is_empty() || self.opts.config_keys.is_empty() || differences.is_empty() {
            format!("hash {} vs {}", ck.state.config_hash, self.opts.config_hash)
        } else {
            differences.join("; ")
        };
        Err(TrainError::checkpoint(
            &ck.dir,
            format!("was written by a different config ({what}); use another output dir or remove it"),
        ))
    }

    /// Opens metrics.jsonl (cut back to the resumed step) and the progress bar.
    fn open_outputs(&mut self) -> Result<()> {
        let path = self.opts.output_dir.join("metrics.jsonl");
        self.metrics = Some(MetricsWriter::open(&path, self.resumed_from.as_ref().map(|_| self.step))?);
        self.bar = if self.opts.progress { ProgressBar::new(self.total as u64) } else { ProgressBar::hidden() };
        self.bar.set_style(
            ProgressStyle::with_template("{bar:30} {pos}/{len} steps [{elapsed_precise}<{eta_precise}] {msg}")
                .expect("valid template"),
        );
        self.bar.set_position(self.step as u64);
        self.clock = Instant::now();
        Ok(())
    }

    fn metrics(&mut self) -> &mut MetricsWriter {
        self.metrics.as_mut().expect("outputs are open")
    }

    /// One optimizer step over `grad_accum` micro-batches, logged.
    fn train_step<M: TrainableModel>(&mut self, model: M) -> Result<M> {
        let t = &self.opts.train;
        let step = self.step;
        let t0 = Instant::now();
        profile::take();
        let micro = profile::timed(Phase::Data, || self.micro_batches(step))?;
        let shapes = t.shapes();
        let micro: Vec<TokenBatch> = micro
            .iter()
            .flat_map(|b| b.split(&self.data.train, t.max_batch_tokens))
            .map(|b| TokenBatch::from_dolly(&b).padded(&shapes))
            .collect();
        let new_shapes = micro.iter().filter(|b| self.shape_log.record(b.batch_size, b.seq_len)).count();
        if new_shapes == 0 && self.warmup_s.is_none() {
            // The first step that compiles nothing new: what came before was warm-up.
            self.warmup_s = Some(self.clock.elapsed().as_secs_f64());
        }
        let denom: usize = micro.iter().map(|b| b.targets.len()).sum();
        if denom == 0 {
            return Err(TrainError::Data(format!("step {} has no target tokens", step + 1)));
        }
        model.lm().device().seed(step_seed(t.seed, step));
        let (grads, loss) = self.accumulate_grads(&model, &micro, denom)?;
        let opt_start = Instant::now();
        let norm = global_grad_norm(&grads);
        if !norm.is_finite() {
            let last_checkpoint = self.last_checkpoint.clone();
            return Err(TrainError::NonFinite { step: step + 1, what: "gradient norm", value: norm, last_checkpoint });
        }
        let scale = clip_scale(norm, t.clip_norm);
        let lr = self.schedule.lr(step);
        let table = table_grad_to_recycle(&model, &grads);
        let mut model = self.opt.step(model, grads, lr, scale);
        // The table's next gradient is written where this one was (no fresh 671 MB).
        if let Some(buffer) = table.and_then(host::into_owned_f32) {
            head::recycle_table_grad(buffer);
        }
        model.after_step();
        profile::add(Phase::Optimizer, opt_start.elapsed().as_secs_f64());
        self.step += 1;
        self.last_loss = Some(loss);

        let secs = t0.elapsed().as_secs_f64();
        let tokens: usize = micro.iter().map(|b| b.num_tokens).sum();
        let record = StepRecord {
            kind: "train",
            step: self.step,
            epoch: self.stream.position(step * t.grad_accum).0,
            loss,
            lr,
            grad_norm: norm,
            clipped: scale < 1.0,
            tokens,
            target_tokens: denom,
            tokens_per_s: tokens as f64 / secs,
            step_s: secs,
            elapsed_s: self.clock.elapsed().as_secs_f64(),
            phases: profile::take(),
            new_shapes,
        };
        self.metrics().write(&record)?;
        self.bar.set_position(self.step as u64);
        self.bar.set_message(format!("loss {loss:.4} lr {lr:.2e} |g| {norm:.3}"));
        Ok(model)
    }

    /// The micro-batches of optimizer step `step` (written to the batch log if asked).
    fn micro_batches(&mut self, step: usize) -> Result<Vec<Batch>> {
        let accum = self.opts.train.grad_accum;
        let micro: Vec<Batch> = (0..accum).map(|k| self.stream.get(step * accum + k)).collect::<Result<_>>()?;
        if let Some(path) = &self.opts.batch_log {
            BatchLog::append(path, step + 1, &micro)?;
        }
        Ok(micro)
    }

    /// Forward and backward over the micro-batches; gradients summed by parameter path.
    fn accumulate_grads<M: TrainableModel>(
        &self,
        model: &M,
        micro: &[TokenBatch],
        denom: usize,
    ) -> Result<(BTreeMap<String, Tensor<1>>, f64)> {
        let t = &self.opts.train;
        let mut grads: BTreeMap<String, Tensor<1>> = BTreeMap::new();
        let mut loss = 0.0;
        // The weights change only after these micro-batches: a trained table is packed once.
        let _packed = packed_for_one_step();
        for b in micro.iter().filter(|b| !b.targets.is_empty()) {
            let out = profile::timed_besides_head(Phase::Forward, || model.loss(b, t.loss_chunk_rows, denom as f64));
            if !out.value.is_finite() {
                let last_checkpoint = self.last_checkpoint.clone();
                return Err(TrainError::NonFinite { step: self.step + 1, what: "loss", value: out.value, last_checkpoint });
            }
            loss += out.value;
            // The table's product, run after backward, is the head's time, not backward's.
            profile::timed_besides_head(Phase::Backward, || out.add_gradients_to(model, &mut grads));
        }
        Ok((grads, loss))
    }

    /// The held-out loss now, logged (nothing without eval data).
    fn evaluate<M: TrainableModel>(&mut self, model: &M) -> Result<()> {
        self.last_eval_step = Some(self.step);
        if self.data.eval.is_empty() {
            self.eval_loss = None;
            return Ok(());
        }
        let t = &self.opts.train;
        let t0 = Instant::now();
        let (loss, tokens) = evaluate_padded(model, &self.data.eval, t.batch_size, t.loss_chunk_rows, &t.shapes())?;
        let record = EvalRecord {
            kind: "eval",
            step: self.step,
            eval_loss: loss,
            eval_tokens: tokens,
            eval_s: t0.elapsed().as_secs_f64(),
            elapsed_s: self.clock.elapsed().as_secs_f64(),
        };
        self.metrics().write(&record)?;
        self.eval_loss = Some(loss);
        if self.step < self.total {
            self.bar.println(format!("step {}: eval loss {loss:.4}", self.step));
        }
        Ok(())
    }

    /// Writes a checkpoint of the current step (model, optimizer, data position).
    fn checkpoint<M: TrainableModel>(&mut self, model: &M) -> Result<()> {
        let t = &self.opts.train;
        let next = self.step * t.grad_accum;
        let (epoch, batch_in_epoch) = self.stream.position(next);
        let (moments, adam_steps) = self.opt.export_state();
        let state = TrainState {
            step: self.step,
            epoch,
            batch_in_epoch,
            next_micro_batch: next,
            seed: t.seed,
            config_hash: self.opts.config_hash.clone(),
            config_keys: self.opts.config_keys.clone(),
            adam_steps,
            last_loss: self.last_loss.unwrap_or(f64::NAN),
            elapsed_s: self.earlier_s + self.clock.elapsed().as_secs_f64(),
        };
        let dir = checkpoint::save(&self.ckpt_root, &model.trainable_state(), &moments, &state, t.keep_checkpoints)?;
        self.last_checkpoint = Some(dir);
        Ok(())
    }

    /// The final evaluation and checkpoint (unless interrupted or already done).
    fn finish<M: TrainableModel>(mut self, model: M) -> Result<TrainOutcome<M>> {
        if !self.interrupted {
            if self.last_eval_step != Some(self.step) {
                self.evaluate(&model)?;
            }
            let this_step = format!("step-{:08}", self.step);
            let already = self.last_checkpoint.as_ref().and_then(|d| d.file_name()).is_some_and(|n| *n == *this_step);
            if !already {
                self.checkpoint(&model)?;
            }
        }
        self.bar.finish_and_clear();
        let metrics_path = self.metrics().path().to_path_buf();
        let distinct_shapes = self.shape_log.count();
        if self.opts.progress && distinct_shapes > 0 {
            let warm = self.warmup_s.map_or("no step without a new shape".to_string(), |s| format!("{s:.1} s before the first steady step"));
            eprintln!("{distinct_shapes} distinct micro-batch shapes; {warm}");
        }
        Ok(TrainOutcome {
            distinct_shapes,
            warmup_s: self.warmup_s,
            steps_done: self.step,
            earlier_s: self.earlier_s,
            total_steps: self.total,
            resumed_from: self.resumed_from,
            last_loss: self.last_loss,
            eval_loss: if self.interrupted { None } else { self.eval_loss },
            last_checkpoint: self.last_checkpoint,
            metrics_path,
            interrupted: self.interrupted,
            model,
        })
    }
}

/// The micro-batches a run trained on, as JSON Lines a Python reference can replay:
/// one object per micro-batch with `step` (1-based optimizer step), `micro` (index within
/// the step) and `input_ids`, `attention_mask` (1 = real token) and `labels` (the token id
/// where the loss is taken, -100 elsewhere: transformers' convention, shifted inside the
/// model) as `[batch][seq_len]` arrays.
pub struct BatchLog;

impl BatchLog {
    fn append(path: &std::path::Path, step: usize, micro: &[Batch]) -> Result<()> {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| TrainError::io(path, e))?;
        for (k, b) in micro.iter().enumerate() {
            let rows = |f: &dyn Fn(usize) -> i64| -> Vec<Vec<i64>> {
                (0..b.batch_size).map(|r| (0..b.seq_len).map(|t| f(r * b.seq_len + t)).collect()).collect()
            };
            let line = serde_json::json!({
                "step": step,
                "micro": k,
                "input_ids": rows(&|i| b.input_ids[i] as i64),
                "attention_mask": rows(&|i| b.attention_mask[i] as i64),
                "labels": rows(&|i| if b.loss_mask[i] { b.input_ids[i] as i64 } else { -100 }),
            });
            writeln!(file, "{line}").map_err(|e| TrainError::io(path, e))?;
        }
        Ok(())
    }
}
