//! Prompt tuning (Lester et al., 2021) as PEFT implements it for causal LMs.
//!
//! `n` trainable vectors live in the model's *scaled* embedding space (PEFT takes them
//! from `get_input_embeddings()`, which for Gemma-3 already multiplies by
//! sqrt(hidden)) and are placed before the `<bos>` of every sequence. Only they train;
//! the base model is frozen. Saved as PEFT's `adapter_config.json` +
//! `adapter_model.safetensors` with the single tensor `prompt_embeddings` `[n, hidden]`.
//!
//! Used on its own: train 8 virtual tokens on a few Dolly rows and save them in PEFT's
//! format (here on a tiny test model; point `source` at `google/gemma-3-270m` or a GGUF
//! for real):
//!
// The example reads the shared fixtures; without them it is listed as ignored.
#![cfg_attr(fixtures, doc = "```")]
#![cfg_attr(not(fixtures), doc = "```ignore")]
//! use burn::tensor::Device;
//! use sweelol_prompt_tuning::{run, PromptTuningConfig};
//! use sweelol_train::{testing, DataSection, ModelSection, OutputSection, RunConfig, TrainSection};
//!
//! let work = std::env::temp_dir().join(format!("sweelol-pt-doc-{}", std::process::id()));
//! let model_dir = testing::tiny_real_vocab_model(&work.join("base"))?;
//! let cfg = RunConfig {
//!     model: ModelSection { source: model_dir.display().to_string(), tokenizer: None },
//!     data: DataSection::new(testing::dolly_path(), 8, 64),
//!     train: TrainSection { max_steps: Some(2), ..TrainSection::new(3e-3, 4) },
//!     output: OutputSection::new(work.join("run")),
//!     file: Default::default(),
//! };
//! let pt = PromptTuningConfig { num_virtual_tokens: 8, ..PromptTuningConfig::default() };
//! let report = run(&cfg, &pt, &Device::flex())?;
//! assert_eq!(report.trainable_params, 8 * 64);
//! assert!(report.artifact_dir.join("adapter_model.safetensors").is_file());
//! # std::fs::remove_dir_all(&work).ok();
//! # Ok::<(), sweelol_train::TrainError>(())
//! ```

use std::path::Path;

mod train;
pub use train::{run, PromptTuning, TECHNIQUE};

use burn::module::{Module, Param};
use burn::tensor::{Distribution, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};
use sweelol_gemma::{Gemma3, GemmaTokenizer, HostTensor, WeightMap};

#[derive(Debug, thiserror::Error)]
pub enum PromptTuningError {
    #[error("{path}: {msg}")]
    File { path: String, msg: String },
    #[error("invalid prompt-tuning config: {0}")]
    Config(String),
}

type Result<T> = std::result::Result<T, PromptTuningError>;

fn file_err(path: &Path, msg: impl ToString) -> PromptTuningError {
    PromptTuningError::File { path: path.display().to_string(), msg: msg.to_string() }
}

/// How the virtual tokens start.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum PromptInit {
    /// N(0, 1), as PEFT's `nn.Embedding` default.
    Random,
    /// The (scaled) embeddings of `init_text`'s tokens, repeated or cut to `n`.
    Text,
}

/// The `[prompt_tuning]` table of a config file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PromptTuningConfig {
    /// Number of virtual tokens placed before `<bos>`.
    pub num_virtual_tokens: usize,
    /// RANDOM or TEXT initialisation.
    pub prompt_tuning_init: PromptInit,
    /// Text whose token embeddings initialise the prompt (TEXT init).
    pub prompt_tuning_init_text: String,
    /// Seed for RANDOM init.
    pub seed: u64,
}

impl Default for PromptTuningConfig {
    fn default() -> Self {
        PromptTuningConfig {
            num_virtual_tokens: 20,
            prompt_tuning_init: PromptInit::Text,
            prompt_tuning_init_text: "Answer the instruction helpfully and accurately:".into(),
            seed: 0,
        }
    }
}

/// A frozen Gemma-3 with trainable virtual tokens.
#[derive(Module, Debug)]
pub struct PromptTuned {
    /// `[n, hidden]`, in the scaled embedding space.
    pub prompt: Param<Tensor<2>>,
    pub base: Gemma3,
}

impl PromptTuned {
    /// Wraps a model with given prompt embeddings; the base is frozen.
    pub fn new(base: Gemma3, prompt: Tensor<2>) -> Self {
        PromptTuned { prompt: Param::from_tensor(prompt), base: base.no_grad() }
    }

    /// Builds the initial prompt as PEFT does.
    pub fn init(base: Gemma3, cfg: &PromptTuningConfig, tok: &GemmaTokenizer) -> Result<Self> {
        let n = cfg.num_virtual_tokens;
        if n == 0 {
            return Err(PromptTuningError::Config("num_virtual_tokens must be positive".into()));
        }
        let device = base.device();
        let h = base.config.hidden_size;
        let prompt = match cfg.prompt_tuning_init {
            PromptInit::Random => {
                device.seed(cfg.seed);
                Tensor::random([n, h], Distribution::Normal(0.0, 1.0), &device)
            }
            PromptInit::Text => {
                // PEFT tokenizes with the tokenizer's defaults, so Gemma's <bos> is included.
                let ids = tok
                    .encode(&cfg.prompt_tuning_init_text, true)
                    .map_err(|e| PromptTuningError::Config(e.to_string()))?;
                let ids: Vec<i64> = ids.iter().cycle().take(n).map(|&x| x as i64).collect();
                let tokens = Tensor::<2, Int>::from_data(TensorData::new(ids, [1, n]), &device);
                base.embed(tokens).reshape([n, h])
            }
        };
        Ok(PromptTuned::new(base, prompt.detach()))
    }

    pub fn num_virtual_tokens(&self) -> usize {
        self.prompt.val().dims()[0]
    }

    /// `[prompt; scaled token embeddings]` for a batch of ids `[B, T]` -> `[B, n + T, H]`.
    pub fn embeds(&self, tokens: Tensor<2, Int>) -> Tensor<3> {
        self.base.embed_with_prefix(Some(&self.prompt.val()), tokens)
    }

    /// Hidden states of the token positions only (virtual positions dropped): `[B, T, H]`.
    pub fn hidden_states(&self, tokens: Tensor<2, Int>) -> Tensor<3> {
        let t = tokens.dims()[1];
        let n = self.num_virtual_tokens();
        self.base.hidden_states(self.embeds(tokens), None).narrow(1, n, t)
    }

    /// Logits of the token positions, `[B, T, vocab]`.
    pub fn forward(&self, tokens: Tensor<2, Int>) -> Tensor<3> {
        let hidden = self.hidden_states(tokens);
        let [b, t, h] = hidden.dims();
        self.base.lm_head(hidden.reshape([b * t, h])).reshape([b, t, self.base.config.vocab_size])
    }

    pub fn trainable_params(&self) -> usize {
        self.prompt.val().shape().num_elements()
    }

    /// PEFT's adapter files.
    pub fn save_peft(&self, cfg: &PromptTuningConfig, dir: &Path, base_model: &str) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| file_err(dir, e))?;
        let mut w = WeightMap::new(dir);
        w.insert("prompt_embeddings", HostTensor::from_tensor(self.prompt.val()));
        w.write_safetensors(&dir.join("adapter_model.safetensors")).map_err(|e| file_err(dir, e))?;
        let c = &self.base.config;
        let init = match cfg.prompt_tuning_init {
            PromptInit::Random => "RANDOM",
            PromptInit::Text => "TEXT",
        };
        let config = serde_json::json!({
            "peft_type": "PROMPT_TUNING",
            "task_type": "CAUSAL_LM",
            "base_model_name_or_path": base_model,
            "tokenizer_name_or_path": base_model,
            "num_virtual_tokens": self.num_virtual_tokens(),
            "token_dim": c.hidden_size,
            "num_transformer_submodules": 1,
            "num_attention_heads": c.num_attention_heads,
            "num_layers": c.num_hidden_layers,
            "prompt_tuning_init": init,
            "prompt_tuning_init_text": (cfg.prompt_tuning_init == PromptInit::Text).then_some(&cfg.prompt_tuning_init_text),
            "tokenizer_kwargs": null,
            "inference_mode": true,
            "revision": null,
        });
        let path = dir.join("adapter_config.json");
        std::fs::write(&path, serde_json::to_string_pretty(&config).unwrap()).map_err(|e| file_err(&path, e))
    }

    /// Loads PEFT prompt-tuning files onto a base model.
    pub fn load_peft(base: Gemma3, dir: &Path) -> Result<Self> {
        let cfg_path = dir.join("adapter_config.json");
        let text = std::fs::read_to_string(&cfg_path).map_err(|e| file_err(&cfg_path, e))?;
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| file_err(&cfg_path, format!("not valid JSON: {e}")))?;
        if v["peft_type"] != "PROMPT_TUNING" {
            return Err(file_err(&cfg_path, format!("peft_type is {}, expected \"PROMPT_TUNING\"", v["peft_type"])));
        }
        let n = v["num_virtual_tokens"]
            .as_u64()
            .ok_or_else(|| file_err(&cfg_path, "missing `num_virtual_tokens`"))? as usize;
        let path = dir.join("adapter_model.safetensors");
        let mut w = WeightMap::new(&path);
        w.read_safetensors_file(&path).map_err(|e| file_err(&path, e))?;
        let h = base.config.hidden_size;
        let t = w.take("prompt_embeddings", &[n, h]).map_err(|e| file_err(&path, e))?;
        let device = base.device();
        Ok(PromptTuned::new(base, t.to_tensor(&device)))
    }
}

/// Whether `dir` holds a PEFT prompt-tuning adapter.
pub fn is_prompt_tuning_dir(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("adapter_config.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .is_some_and(|v| v["peft_type"] == "PROMPT_TUNING")
}
