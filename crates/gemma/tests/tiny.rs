//! The tiny fixture model against transformers' logits.

use std::path::PathBuf;

use burn::tensor::{Device, Int, Tensor, TensorData};
use sweelol_gemma::{Gemma3, GemmaConfig, WeightMap};

fn fixture(rel: &str) -> PathBuf {
    sweelol_fixtures::shared("fixtures").join(rel)
}

fn load_tiny(device: &Device) -> Gemma3 {
    let dir = fixture("tiny-gemma3");
    let cfg = GemmaConfig::from_file(&dir.join("config.json")).unwrap();
    let weights = WeightMap::read_safetensors_dir(&dir).unwrap();
    Gemma3::from_weights(&cfg, weights, device).unwrap()
}

fn expected() -> (Vec<i64>, Vec<f32>) {
    let bytes = std::fs::read(fixture("tiny-gemma3/expected.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let ids = st.tensor("input_ids").unwrap();
    let ids = ids.data().chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap())).collect();
    let logits = st.tensor("logits").unwrap();
    let logits = logits.data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
    (ids, logits)
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
#[cfg_attr(not(fixtures), ignore = "needs ../shared (SWEELOL_SHARED)")]
fn tiny_logits_match_transformers() {
    let device = Device::flex();
    let model = load_tiny(&device);
    let (ids, want) = expected();
    let n = ids.len();
    assert!(n > model.config.sliding_window, "fixture must reach past the window");
    let tokens = Tensor::<2, Int>::from_data(TensorData::new(ids, [1, n]), &device);
    let got = model.forward(tokens).into_data().try_into_vec::<f32>().unwrap();
    let err = max_abs_diff(&got, &want);
    println!("tiny fixture: max |logit - transformers| = {err:e} over {n} positions");
    assert!(err < 1e-4, "max abs error {err}");
}

fn ids_tensor(ids: &[i64], device: &Device) -> Tensor<2, Int> {
    Tensor::from_data(TensorData::new(ids.to_vec(), [1, ids.len()]), device)
}

#[test]
#[cfg_attr(not(fixtures), ignore = "needs ../shared (SWEELOL_SHARED)")]
fn kv_cache_decoding_matches_full_forward() {
    let device = Device::flex();
    let model = load_tiny(&device);
    let (ids, want) = expected();
    let vocab = model.config.vocab_size;
    // Prefill 5 tokens, then feed the rest one at a time (crossing the window of 6).
    let mut cache = model.new_cache();
    let mut got = Vec::new();
    let mut start = 0;
    for end in std::iter::once(5).chain(6..=ids.len()) {
        let hidden = model.hidden_states(model.embed(ids_tensor(&ids[start..end], &device)), Some(&mut cache));
        let positions: Vec<usize> = (0..end - start).collect();
        got.extend(model.logits_at(hidden, &positions).into_data().try_into_vec::<f32>().unwrap());
        start = end;
    }
    assert_eq!(cache.len(), ids.len());
    assert_eq!(got.len(), ids.len() * vocab);
    let err = max_abs_diff(&got, &want);
    assert!(err < 1e-4, "incremental decoding differs by {err}");
}

/// Long inputs compute attention a block of query rows at a time; with blocks of 2 and 3
/// rows (crossing the sliding window of 6, and in a prefill after cached tokens) the
/// logits are still transformers'.
#[test]
#[cfg_attr(not(fixtures), ignore = "needs ../shared (SWEELOL_SHARED)")]
fn attention_in_blocks_of_query_rows_matches_transformers() {
    let device = Device::flex();
    let mut model = load_tiny(&device);
    let (ids, want) = expected();
    let whole = model.forward(ids_tensor(&ids, &device)).into_data().try_into_vec::<f32>().unwrap();
    let vocab = model.config.vocab_size;
    for rows in [2, 3] {
        model.set_attention_block(rows);
        let got = model.forward(ids_tensor(&ids, &device)).into_data().try_into_vec::<f32>().unwrap();
        assert!(max_abs_diff(&got, &want) < 1e-4, "blocks of {rows}: {}", max_abs_diff(&got, &want));
        assert!(max_abs_diff(&got, &whole) < 1e-5, "blocks of {rows} against one block: {}", max_abs_diff(&got, &whole));
        // 4 tokens into the cache, then the rest in blocks.
        let mut cache = model.new_cache();
        let first = model.hidden_states(model.embed(ids_tensor(&ids[..4], &device)), Some(&mut cache));
        let rest = model.hidden_states(model.embed(ids_tensor(&ids[4..], &device)), Some(&mut cache));
        let mut got = model.logits_at(first, &[0, 1, 2, 3]).into_data().try_into_vec::<f32>().unwrap();
        let positions: Vec<usize> = (0..ids.len() - 4).collect();
        got.extend(model.logits_at(rest, &positions).into_data().try_into_vec::<f32>().unwrap());
        assert_eq!(got.len(), ids.len() * vocab);
        assert!(max_abs_diff(&got, &want) < 1e-4, "cached prefill in blocks of {rows}: {}", max_abs_diff(&got, &want));
    }
}

#[test]
#[cfg_attr(not(fixtures), ignore = "needs ../shared (SWEELOL_SHARED)")]
fn export_and_reload_gives_identical_logits() {
    let device = Device::flex();
    let model = load_tiny(&device);
    let (ids, _) = expected();
    let before = model.forward(ids_tensor(&ids, &device)).into_data().try_into_vec::<f32>().unwrap();
    let dir = std::env::temp_dir().join(format!("sweelol-tiny-export-{}", std::process::id()));
    model.save_hf(&dir).unwrap();
    let cfg = GemmaConfig::from_file(&dir.join("config.json")).unwrap();
    assert_eq!(cfg, model.config);
    let reloaded = Gemma3::from_weights(&cfg, WeightMap::read_safetensors_dir(&dir).unwrap(), &device).unwrap();
    let after = reloaded.forward(ids_tensor(&ids, &device)).into_data().try_into_vec::<f32>().unwrap();
    assert_eq!(before, after, "export/reload must be bit-identical");
    std::fs::remove_dir_all(&dir).ok();
}

/// What transformers reads beside the weights: the chat template, Gemma's special tokens,
/// and generation that stops at `<eos>` (id 1) or `<end_of_turn>` (id 106).
#[test]
#[cfg_attr(not(fixtures), ignore = "needs ../shared (SWEELOL_SHARED)")]
fn an_exported_directory_carries_the_tokenizer_and_generation_files() {
    let device = Device::flex();
    let model = load_tiny(&device);
    let tokenizer = sweelol_gemma::GemmaTokenizer::from_file(&fixture("gemma-3-270m/tokenizer.json.gz")).unwrap();
    let dir = std::env::temp_dir().join(format!("sweelol-tiny-export-files-{}", std::process::id()));
    sweelol_gemma::save_hf_dir(&model, &tokenizer, &dir).unwrap();
    let json = |name: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(dir.join(name)).unwrap()).unwrap()
    };
    let generation = json("generation_config.json");
    assert_eq!(generation["eos_token_id"], serde_json::json!([1, 106]));
    assert_eq!(generation["bos_token_id"], 2);
    assert_eq!(generation["pad_token_id"], 0);
    let config = json("tokenizer_config.json");
    let template = config["chat_template"].as_str().unwrap();
    for piece in ["<start_of_turn>", "<end_of_turn>", "add_generation_prompt", "bos_token"] {
        assert!(template.contains(piece), "chat template lacks {piece}");
    }
    assert_eq!(config["bos_token"], "<bos>");
    assert_eq!(json("special_tokens_map.json")["pad_token"], "<pad>");
    assert!(dir.join("tokenizer.json").is_file() && dir.join("model.safetensors").is_file());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
#[cfg_attr(not(fixtures), ignore = "needs ../shared (SWEELOL_SHARED)")]
fn bad_weight_files_give_errors_naming_the_file() {
    let device = Device::flex();
    let src = fixture("tiny-gemma3");
    let cfg = GemmaConfig::from_file(&src.join("config.json")).unwrap();
    let dir = std::env::temp_dir().join(format!("sweelol-tiny-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();

    // Truncated file.
    let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
    let truncated = dir.join("model.safetensors");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let err = WeightMap::read_safetensors_dir(&dir).unwrap_err().to_string();
    assert!(err.contains("model.safetensors"), "{err}");

    // A tensor of the wrong shape.
    let mut w = WeightMap::read_safetensors_dir(&src).unwrap();
    let t = w.tensors.get_mut("model.layers.1.mlp.up_proj.weight").unwrap();
    t.shape = vec![t.shape[1], t.shape[0]];
    let err = Gemma3::from_weights(&cfg, w, &device).unwrap_err().to_string();
    assert!(err.contains("model.layers.1.mlp.up_proj.weight") && err.contains("shape"), "{err}");

    // A missing tensor.
    let mut w = WeightMap::read_safetensors_dir(&src).unwrap();
    w.tensors.remove("model.norm.weight");
    let err = Gemma3::from_weights(&cfg, w, &device).unwrap_err().to_string();
    assert!(err.contains("missing tensor `model.norm.weight`"), "{err}");

    // A corrupt config.json.
    let bad_cfg = dir.join("config.json");
    std::fs::write(&bad_cfg, "{\"hidden_size\": 64,").unwrap();
    let err = GemmaConfig::from_file(&bad_cfg).unwrap_err().to_string();
    assert!(err.contains("config.json"), "{err}");

    // A missing tokenizer.
    let err = sweelol_gemma::GemmaTokenizer::from_file(&dir.join("tokenizer.json")).unwrap_err().to_string();
    assert!(err.contains("tokenizer.json"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

/// A request that does not fit the context is refused before any work, naming the numbers.
#[test]
#[cfg_attr(not(fixtures), ignore = "needs ../shared (SWEELOL_SHARED)")]
fn a_request_past_the_context_is_refused_naming_the_numbers() {
    use sweelol_gemma::generate::check_context;
    let model = load_tiny(&Device::flex());
    let context = model.config.max_position_embeddings;
    assert!(check_context(&model, 0, context - 10, 10).is_ok(), "exactly the context fits");
    let msg = check_context(&model, 0, context - 10, 11).unwrap_err().to_string();
    assert!(msg.contains(&format!("context of {context} tokens")) && msg.contains(&(context + 1).to_string()), "{msg}");
    assert!(msg.contains("at most 10 new tokens"), "{msg}");
    let msg = check_context(&model, 20, context, 1).unwrap_err().to_string();
    assert!(msg.contains("after 20 virtual tokens"), "{msg}");
    // A prompt longer than the context alone: no number of new tokens fits, so the message
    // says how long the prompt may be instead.
    let msg = check_context(&model, 0, context + 5, 1).unwrap_err().to_string();
    assert!(msg.contains(&format!("shorten the prompt to at most {} tokens", context - 1)) && !msg.contains("new tokens"), "{msg}");
}
