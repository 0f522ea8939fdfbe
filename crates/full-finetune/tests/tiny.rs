//! Full fine-tuning on the tiny fixture model: every weight moves, and the exported
//! directory reloads to exactly the trained weights.

use std::path::PathBuf;

use burn::module::Module;
use burn::tensor::Device;
use sweelol_dolly::TokenizedExample;
use sweelol_gemma::{Gemma3, GemmaConfig, GemmaTokenizer, WeightMap};
use sweelol_full_finetune::FullFinetuneConfig;
use sweelol_train::{params, train, Dataset, TrainOptions, TrainSection};

fn shared(rel: &str) -> PathBuf {
    sweelol_fixtures::shared(rel)
}

fn load(dir: &std::path::Path, device: &Device) -> Gemma3 {
    let cfg = GemmaConfig::from_file(&dir.join("config.json")).unwrap();
    Gemma3::from_weights(&cfg, WeightMap::read_safetensors_dir(dir).unwrap(), device).unwrap()
}

fn examples() -> Vec<TokenizedExample> {
    (0..8u32)
        .map(|i| {
            let input_ids: Vec<u32> = std::iter::once(2).chain((0..9).map(|k| 20 + (i + k) % 30)).collect();
            let loss_mask = (0..input_ids.len()).map(|j| j >= 2).collect();
            TokenizedExample { input_ids, loss_mask, prompt_len: 2 }
        })
        .collect()
}

#[test]
#[cfg_attr(not(fixtures), ignore = "needs ../shared (SWEELOL_SHARED)")]
fn every_weight_trains_and_the_export_reloads_exactly() {
    let device = Device::flex().autodiff();
    let tiny = shared("fixtures/tiny-gemma3");
    let model = load(&tiny, &device);
    let before = params::to_host(&model, |_| true);
    let mut t = TrainSection::new(1e-3, 4);
    t.max_steps = Some(3);
    let dir = tempfile::tempdir().unwrap();
    let opts = TrainOptions {
        train: t,
        output_dir: dir.path().to_path_buf(),
        resume: false,
        progress: false,
        config_hash: "tiny".into(),
        config_keys: Default::default(),
        stop_after: None,
        batch_log: None,
        lock_held: false,
    };
    let out = train(model, &Dataset { train: examples(), eval: vec![] }, &opts).unwrap();
    let after = params::to_host(&out.model, |_| true);
    for (k, v) in &before {
        assert_ne!(v.data, after[k].data, "{k} did not train");
    }

    // Any tokenizer.json will do for the file layout; the real one is at hand.
    let tok = GemmaTokenizer::from_file(&shared("fixtures/gemma-3-270m/tokenizer.json.gz")).unwrap();
    let export = dir.path().join("model");
    sweelol_full_finetune::export(&out.model, &tok, &export).unwrap();
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        assert!(export.join(f).is_file(), "{f} missing");
    }
    let reloaded = params::to_host(&load(&export, &Device::flex()).valid(), |_| true);
    assert_eq!(reloaded, after, "export round-trips bit for bit");
}

#[test]
fn settings_table_is_typed_and_strict() {
    // `[full_finetune]` has no keys; a stray one is refused by name.
    let ok: FullFinetuneConfig = toml::from_str("").unwrap();
    assert_eq!(ok, FullFinetuneConfig::default());
    let err = toml::from_str::<FullFinetuneConfig>("export_dir = \"x\"").unwrap_err().to_string();
    assert!(err.contains("export_dir"), "{err}");
}

#[test]
fn shipped_config_is_cpu_sized() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../configs/full-finetune.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let table: toml::Table = toml::from_str(&text).unwrap();
    assert_eq!(table["technique"].as_str(), Some("full-finetune"));
    let train: sweelol_train::TrainSection = table["train"].clone().try_into().unwrap();
    let n_train = table["data"]["n_train"].as_integer().unwrap() as usize;
    let steps = sweelol_train::trainer::total_steps(&train, n_train);
    assert!((8..=64).contains(&steps), "CPU-sized run: {steps} steps");
}
