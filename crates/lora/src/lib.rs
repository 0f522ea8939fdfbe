//! LoRA (Hu et al., 2021) as PEFT implements it, on sweelol's Gemma-3.
//!
//! Each targeted projection gets `W·x + (B·A·dropout(x))·scale` with `A` Kaiming-uniform
//! (PEFT's `a = sqrt(5)`, i.e. bound `1/sqrt(in)`), `B` zero, and `scale = alpha / r`
//! (`alpha / sqrt(r)` with rsLoRA). The base model is frozen, so the optimizer only ever
//! sees `A` and `B`. Adapters save and load as PEFT's `adapter_config.json` +
//! `adapter_model.safetensors`, which `PeftModel.from_pretrained` reads.
//!
//! Used on its own: train an adapter on a few Dolly rows and save it in PEFT's format
//! (here on a tiny test model; point `source` at `google/gemma-3-270m` or a GGUF for real):
//!
// The example reads the shared fixtures; without them it is listed as ignored.
#![cfg_attr(fixtures, doc = "```")]
#![cfg_attr(not(fixtures), doc = "```ignore")]
//! use burn::tensor::Device;
//! use sweelol_lora::{run, LoraConfig};
//! use sweelol_train::{testing, DataSection, ModelSection, OutputSection, RunConfig, TrainSection};
//!
//! let work = std::env::temp_dir().join(format!("sweelol-lora-doc-{}", std::process::id()));
//! let model_dir = testing::tiny_real_vocab_model(&work.join("base"))?;
//! let cfg = RunConfig {
//!     model: ModelSection { source: model_dir.display().to_string(), tokenizer: None },
//!     data: DataSection::new(testing::dolly_path(), 8, 64),
//!     train: TrainSection { max_steps: Some(2), ..TrainSection::new(1e-3, 4) },
//!     output: OutputSection::new(work.join("run")),
//!     file: Default::default(),
//! };
//! let lora = LoraConfig { r: 4, lora_alpha: 8.0, ..LoraConfig::default() };
//! let report = run(&cfg, &lora, &Device::flex())?;
//! assert_eq!(report.steps, 2);
//! assert!(report.artifact_dir.join("adapter_config.json").is_file());
//! assert!(report.artifact_dir.join("adapter_model.safetensors").is_file());
//! # std::fs::remove_dir_all(&work).ok();
//! # Ok::<(), sweelol_train::TrainError>(())
//! ```

use std::path::Path;

mod train;
pub use train::{run, Lora, LoraModel, TECHNIQUE};

use burn::module::{Module, Param};
use burn::tensor::{Distribution, Tensor};
use serde::{Deserialize, Serialize};
use sweelol_gemma::model::DecoderLayer;
use sweelol_gemma::{Gemma3, HostTensor, LowRankDelta, WeightMap};

#[derive(Debug, thiserror::Error)]
pub enum LoraError {
    #[error("{path}: {msg}")]
    File { path: String, msg: String },
    #[error("invalid LoRA config: {0}")]
    Config(String),
}

type Result<T> = std::result::Result<T, LoraError>;

fn file_err(path: &Path, msg: impl ToString) -> LoraError {
    LoraError::File { path: path.display().to_string(), msg: msg.to_string() }
}

/// LoRA hyper-parameters (the `[lora]` table of a config file).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoraConfig {
    /// Rank of the update.
    pub r: usize,
    /// Scale numerator: the update is multiplied by `alpha / r`.
    pub lora_alpha: f64,
    /// Dropout on the adapter's input while training.
    pub lora_dropout: f64,
    /// Projections to adapt: any of q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj.
    pub target_modules: Vec<String>,
    /// rsLoRA: scale by `alpha / sqrt(r)` instead.
    pub use_rslora: bool,
    /// Seed for A's initialisation.
    pub seed: u64,
}

impl Default for LoraConfig {
    /// PEFT's defaults for Gemma: r 8, alpha 8, no dropout, q_proj and v_proj.
    fn default() -> Self {
        LoraConfig {
            r: 8,
            lora_alpha: 8.0,
            lora_dropout: 0.0,
            target_modules: vec!["q_proj".into(), "v_proj".into()],
            use_rslora: false,
            seed: 0,
        }
    }
}

impl LoraConfig {
    pub fn scale(&self) -> f64 {
        if self.use_rslora {
            self.lora_alpha / (self.r as f64).sqrt()
        } else {
            self.lora_alpha / self.r as f64
        }
    }

    pub fn validate(&self) -> Result<()> {
        if self.r == 0 {
            return Err(LoraError::Config("r must be positive".into()));
        }
        if !(0.0..1.0).contains(&self.lora_dropout) {
            return Err(LoraError::Config("lora_dropout must be in [0, 1)".into()));
        }
        for t in &self.target_modules {
            if !DecoderLayer::LINEAR_NAMES.iter().any(|n| short_name(n) == t) {
                return Err(LoraError::Config(format!(
                    "unknown target module `{t}`; expected q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj or down_proj"
                )));
            }
        }
        Ok(())
    }

    fn targets(&self, full_name: &str) -> bool {
        self.target_modules.iter().any(|t| t == short_name(full_name))
    }
}

/// `self_attn.q_proj` -> `q_proj`.
fn short_name(full: &str) -> &str {
    full.rsplit('.').next().unwrap_or(full)
}

/// Freezes the base model and gives every targeted projection a fresh adapter.
pub fn attach(model: Gemma3, cfg: &LoraConfig) -> Result<Gemma3> {
    cfg.validate()?;
    let device = model.device();
    device.seed(cfg.seed);
    let mut model = model.no_grad();
    for layer in model.layers.iter_mut() {
        for (name, lin) in layer.linears_mut() {
            if !cfg.targets(name) {
                continue;
            }
            let (d_in, d_out) = (lin.d_in(), lin.d_out());
            let bound = 1.0 / (d_in as f64).sqrt();
            let a = Tensor::<2>::random([d_in, cfg.r], Distribution::Uniform(-bound, bound), &device);
            let b = Tensor::<2>::zeros([cfg.r, d_out], &device);
            lin.delta = Some(LowRankDelta {
                a: Param::from_tensor(a),
                b: Param::from_tensor(b),
                scale: cfg.scale(),
                dropout: cfg.lora_dropout,
            });
        }
    }
    Ok(model)
}

/// Number of trainable adapter parameters (PEFT's `print_trainable_parameters`).
pub fn trainable_params(model: &Gemma3) -> usize {
    model
        .layers
        .iter()
        .flat_map(|l| l.linears().into_iter().filter_map(|(_, lin)| lin.delta.as_ref()))
        .map(|d| d.a.val().shape().num_elements() + d.b.val().shape().num_elements())
        .sum()
}

/// Folds every adapter into its base weight (`W += A·B·scale`) and removes it.
pub fn merge(mut model: Gemma3) -> Gemma3 {
    for layer in model.layers.iter_mut() {
        for (_, lin) in layer.linears_mut() {
            if let Some(d) = lin.delta.take() {
                let update = d.a.val().matmul(d.b.val()) * d.scale;
                lin.weight = Param::from_tensor(lin.weight.val() + update);
            }
        }
    }
    model
}

/// PEFT's key for a projection's adapter matrix (`lora_A` or `lora_B`).
pub fn peft_key(layer: usize, linear: &str, which: &str) -> String {
    format!("base_model.model.model.layers.{layer}.{linear}.{which}.weight")
}

/// Writes `adapter_config.json` + `adapter_model.safetensors` in PEFT's layout
/// (`lora_A.weight` `[r, in]`, `lora_B.weight` `[out, r]`).
pub fn save_peft(model: &Gemma3, cfg: &LoraConfig, dir: &Path, base_model: &str) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| file_err(dir, e))?;
    let mut w = WeightMap::new(dir);
    for (i, layer) in model.layers.iter().enumerate() {
        for (name, lin) in layer.linears() {
            if let Some(d) = &lin.delta {
                w.insert(peft_key(i, name, "lora_A"), HostTensor::from_tensor(d.a.val()).transposed());
                w.insert(peft_key(i, name, "lora_B"), HostTensor::from_tensor(d.b.val()).transposed());
            }
        }
    }
    if w.tensors.is_empty() {
        return Err(file_err(dir, "the model has no LoRA adapters to save"));
    }
    w.write_safetensors(&dir.join("adapter_model.safetensors")).map_err(|e| file_err(dir, e))?;
    let config = serde_json::json!({
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model,
        "r": cfg.r,
        "lora_alpha": cfg.lora_alpha,
        "lora_dropout": cfg.lora_dropout,
        "target_modules": cfg.target_modules,
        "use_rslora": cfg.use_rslora,
        "bias": "none",
        "fan_in_fan_out": false,
        "inference_mode": true,
        "init_lora_weights": true,
        "modules_to_save": null,
        "layers_to_transform": null,
        "layers_pattern": null,
        "rank_pattern": {},
        "alpha_pattern": {},
        "use_dora": false,
        "revision": null,
    });
    let path = dir.join("adapter_config.json");
    std::fs::write(&path, serde_json::to_string_pretty(&config).unwrap()).map_err(|e| file_err(&path, e))
}

/// Reads a PEFT LoRA adapter's config (only the fields sweelol uses).
pub fn read_peft_config(dir: &Path) -> Result<LoraConfig> {
    let path = dir.join("adapter_config.json");
    let text = std::fs::read_to_string(&path).map_err(|e| file_err(&path, e))?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| file_err(&path, format!("not valid JSON: {e}")))?;
    if v["peft_type"] != "LORA" {
        return Err(file_err(&path, format!("peft_type is {}, expected \"LORA\"", v["peft_type"])));
    }
    let field = |k: &str| v.get(k).ok_or_else(|| file_err(&path, format!("missing `{k}`")));
    let targets = match field("target_modules")? {
        serde_json::Value::Array(a) => a.iter().filter_map(|x| x.as_str().map(String::from)).collect(),
        serde_json::Value::String(s) => vec![s.clone()],
        other => return Err(file_err(&path, format!("`target_modules` = {other} is not supported"))),
    };
    Ok(LoraConfig {
        r: field("r")?.as_u64().ok_or_else(|| file_err(&path, "`r` is not an integer"))? as usize,
        lora_alpha: field("lora_alpha")?.as_f64().ok_or_else(|| file_err(&path, "`lora_alpha` is not a number"))?,
        lora_dropout: v.get("lora_dropout").and_then(|x| x.as_f64()).unwrap_or(0.0),
        target_modules: targets,
        use_rslora: v.get("use_rslora").and_then(|x| x.as_bool()).unwrap_or(false),
        seed: 0,
    })
}

/// Loads a PEFT LoRA adapter onto `model` (freezing the base).
pub fn load_peft(model: Gemma3, dir: &Path) -> Result<(Gemma3, LoraConfig)> {
    let cfg = read_peft_config(dir)?;
    cfg.validate().map_err(|e| file_err(&dir.join("adapter_config.json"), e))?;
    let path = dir.join("adapter_model.safetensors");
    let mut w = WeightMap::new(&path);
    w.read_safetensors_file(&path).map_err(|e| file_err(&path, e))?;
    let device = model.device();
    let mut model = model.no_grad();
    for (i, layer) in model.layers.iter_mut().enumerate() {
        for (name, lin) in layer.linears_mut() {
            if !cfg.targets(name) {
                continue;
            }
            let (d_in, d_out) = (lin.d_in(), lin.d_out());
            let a = w.take(&peft_key(i, name, "lora_A"), &[cfg.r, d_in]).map_err(|e| file_err(&path, e))?;
            let b = w.take(&peft_key(i, name, "lora_B"), &[d_out, cfg.r]).map_err(|e| file_err(&path, e))?;
            lin.delta = Some(LowRankDelta {
                a: Param::from_tensor(a.transposed().to_tensor(&device)),
                b: Param::from_tensor(b.transposed().to_tensor(&device)),
                scale: cfg.scale(),
                dropout: cfg.lora_dropout,
            });
        }
    }
    if let Some(extra) = w.tensors.keys().next() {
        return Err(file_err(&path, format!("unexpected tensor `{extra}` for this model and config")));
    }
    Ok((model, cfg))
}

/// Whether `dir` holds a LoRA adapter (as opposed to another PEFT type).
pub fn is_lora_dir(dir: &Path) -> bool {
    read_peft_config(dir).is_ok()
}
