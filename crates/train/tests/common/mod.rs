//! Shared helpers: the tiny fixture model and synthetic token data.
#![allow(dead_code)]

use std::path::Path;

use burn::tensor::Device;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sweelol_dolly::{bucketed_batches, TokenizedExample};
use sweelol_gemma::Gemma3;
use sweelol_train::config::train_section_hash;
use sweelol_train::{TokenBatch, TrainOptions, TrainSection};

/// The tiny random Gemma-3 (vocab 512, hidden 64, 4 layers) on `device`.
pub fn load_tiny(device: &Device) -> Gemma3 {
    sweelol_train::testing::tiny_fixture_model(device).unwrap()
}

/// Random sequences: `<bos>` then ids in `lo..hi`, lengths in `min_len..=max_len`, the
/// first `prompt` tokens unscored.
pub fn random_examples(n: usize, min_len: usize, max_len: usize, lo: u32, hi: u32, seed: u64) -> Vec<TokenizedExample> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            let len = rng.random_range(min_len..=max_len);
            let mut ids = vec![2u32];
            ids.extend((1..len).map(|_| rng.random_range(lo..hi)));
            example(ids, 3)
        })
        .collect()
}

/// Learnable sequences: `<bos>, a, a+1, a+2, …` (wrapping inside `lo..hi`).
pub fn counting_examples(n: usize, len: usize, lo: u32, hi: u32, seed: u64) -> Vec<TokenizedExample> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            let start = rng.random_range(lo..hi);
            let mut ids = vec![2u32];
            ids.extend((0..len - 1).map(|k| lo + (start - lo + k as u32) % (hi - lo)));
            example(ids, 2)
        })
        .collect()
}

pub fn example(input_ids: Vec<u32>, prompt_len: usize) -> TokenizedExample {
    let loss_mask = (0..input_ids.len()).map(|i| i >= prompt_len).collect();
    TokenizedExample { input_ids, loss_mask, prompt_len }
}

/// All examples as one padded batch.
pub fn one_batch(examples: &[TokenizedExample]) -> TokenBatch {
    let batches = bucketed_batches(examples, examples.len(), 0).unwrap();
    TokenBatch::from_dolly(&batches[0])
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// Field `key` of every training step's record in the metrics file at `path`, in order.
pub fn step_values(path: &Path, key: &str) -> Vec<f64> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["kind"] == "train")
        .map(|v| v[key].as_f64().unwrap())
        .collect()
}

/// Options for a quiet run of `train` in `dir`, resuming from its checkpoints if any.
pub fn options(train: TrainSection, dir: &Path) -> TrainOptions {
    let config_hash = train_section_hash(&train, "tiny");
    TrainOptions {
        train,
        output_dir: dir.to_path_buf(),
        resume: true,
        progress: false,
        config_hash,
        config_keys: Default::default(),
        stop_after: None,
        batch_log: None,
        lock_held: false,
    }
}
