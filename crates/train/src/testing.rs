//! Fixtures for examples, doc-tests and tests: where the shared data and fixtures are, and
//! a tiny Gemma-3 that reads real Dolly rows.
//!
//! The tiny fixture model (`fixtures/tiny-gemma3`, hidden size 64, 4 layers) has a
//! 512-token vocabulary, too small for text tokenized by Gemma's tokenizer. For end-to-end
//! examples on real data, [`tiny_real_vocab_model`] widens its embedding (also the tied
//! head) to the tokenizer's 262,144 tokens with seeded random rows: the model is
//! nonsense, but every code path (tokenizer, data, loss over the full vocabulary, export)
//! is the real one and a training step takes well under a second.

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sweelol_gemma::{save_hf_dir, Gemma3, GemmaConfig, GemmaTokenizer, HostTensor, WeightMap};

use crate::error::{Result, TrainError};
use crate::masks::EMBED_NAME;

pub use sweelol_fixtures::shared_dir;

/// Dolly-15k as shipped in the shared data folder.
pub fn dolly_path() -> PathBuf {
    shared_dir().join("data/dolly/databricks-dolly-15k.jsonl.gz")
}

/// Gemma-3's tokenizer (the real one, 262,144 tokens).
pub fn tokenizer_path() -> PathBuf {
    shared_dir().join("fixtures/gemma-3-270m/tokenizer.json.gz")
}

/// The tiny fixture model's directory.
pub fn tiny_fixture_dir() -> PathBuf {
    shared_dir().join("fixtures/tiny-gemma3")
}

/// The tiny fixture model (vocabulary 512, hidden size 64, 4 layers) on `device`.
pub fn tiny_fixture_model(device: &Device) -> Result<Gemma3> {
    let dir = tiny_fixture_dir();
    let config = GemmaConfig::from_file(&dir.join("config.json"))?;
    Ok(Gemma3::from_weights(&config, WeightMap::read_safetensors_dir(&dir)?, device)?)
}

/// Writes the tiny fixture model, its vocabulary widened to the real tokenizer's (seeded
/// random embedding rows, N(0, 0.02)-like), as a transformers directory `dir` with the real
/// tokenizer, and returns `dir`. Loads with `sweelol_gemma::load_pretrained(dir)`.
pub fn tiny_real_vocab_model(dir: &Path) -> Result<PathBuf> {
    let fixture = tiny_fixture_dir();
    let tokenizer = GemmaTokenizer::from_file(&tokenizer_path())?;
    let vocab = tokenizer.inner().get_vocab_size(true);
    let config_path = fixture.join("config.json");
    let text = std::fs::read_to_string(&config_path).map_err(|e| TrainError::io(&config_path, e))?;
    let mut json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| TrainError::format(&config_path, e.to_string()))?;
    json["vocab_size"] = vocab.into();
    let config = GemmaConfig::from_json_str(&json.to_string())?;

    let mut weights = WeightMap::read_safetensors_dir(&fixture)?;
    let hidden = config.hidden_size;
    let mut rng = StdRng::seed_from_u64(0);
    let rows: Vec<f32> = (0..vocab * hidden).map(|_| (rng.random::<f32>() - 0.5) * 0.07).collect();
    weights.insert(EMBED_NAME, HostTensor::new(vec![vocab, hidden], rows));
    let model = Gemma3::from_weights(&config, weights, &Device::flex())?;
    save_hf_dir(&model, &tokenizer, dir)?;
    Ok(dir.to_path_buf())
}
