//! Gemma-3 from a GGUF file as llama.cpp writes it: config from the metadata,
//! tensors renamed to transformers names, and llama.cpp's `1 + w` norm weights undone.

use std::path::Path;

use sweelol_gguf::GgufFile;

use crate::config::{GemmaConfig, LayerType};
use crate::error::{GemmaError, Result};
use crate::weights::{HostTensor, WeightMap};

/// llama.cpp tensor name suffix -> transformers name suffix, per decoder block.
const BLOCK_NAMES: [(&str, &str); 13] = [
    ("attn_q", "self_attn.q_proj"),
    ("attn_k", "self_attn.k_proj"),
    ("attn_v", "self_attn.v_proj"),
    ("attn_output", "self_attn.o_proj"),
    ("attn_q_norm", "self_attn.q_norm"),
    ("attn_k_norm", "self_attn.k_norm"),
    ("attn_norm", "input_layernorm"),
    ("post_attention_norm", "post_attention_layernorm"),
    ("ffn_norm", "pre_feedforward_layernorm"),
    ("post_ffw_norm", "post_feedforward_layernorm"),
    ("ffn_gate", "mlp.gate_proj"),
    ("ffn_up", "mlp.up_proj"),
    ("ffn_down", "mlp.down_proj"),
];

/// The transformers name of a llama.cpp tensor, if it belongs to the text model.
pub fn hf_name(gguf_name: &str) -> Option<String> {
    match gguf_name {
        "token_embd.weight" => return Some("model.embed_tokens.weight".into()),
        "output_norm.weight" => return Some("model.norm.weight".into()),
        "output.weight" => return Some("lm_head.weight".into()),
        _ => {}
    }
    let rest = gguf_name.strip_prefix("blk.")?;
    let (index, rest) = rest.split_once('.')?;
    let index: usize = index.parse().ok()?;
    let stem = rest.strip_suffix(".weight")?;
    let (_, hf) = BLOCK_NAMES.iter().find(|(g, _)| *g == stem)?;
    Some(format!("model.layers.{index}.{hf}.weight"))
}

/// Reads the text-model config from GGUF metadata. Values llama.cpp does not store
/// for Gemma 3 (local RoPE base, layer pattern, query scale) take its built-in values.
pub fn config_from_gguf(g: &GgufFile) -> Result<GemmaConfig> {
    let arch = g.architecture()?.to_string();
    if arch != "gemma3" {
        return Err(GemmaError::weights(g.path(), format!("architecture is `{arch}`, expected gemma3")));
    }
    let key = |k: &str| format!("{arch}.{k}");
    let hidden_size = g.get_usize(&key("embedding_length"))?;
    let num_hidden_layers = g.get_usize(&key("block_count"))?;
    let num_attention_heads = g.get_usize(&key("attention.head_count"))?;
    let num_key_value_heads = g.get_usize(&key("attention.head_count_kv")).unwrap_or(num_attention_heads);
    let head_dim = g.get_usize(&key("attention.key_length")).unwrap_or(hidden_size / num_attention_heads);
    let vocab_size = g.tensor_info("token_embd.weight")?.shape[0];
    let layer_types = (0..num_hidden_layers)
        .map(|i| if (i + 1) % 6 == 0 { LayerType::FullAttention } else { LayerType::SlidingAttention })
        .collect();
    let id = |k: &str, default: u32| g.get_u32(&format!("tokenizer.ggml.{k}")).unwrap_or(default);
    Ok(GemmaConfig {
        vocab_size,
        hidden_size,
        intermediate_size: g.get_usize(&key("feed_forward_length"))?,
        num_hidden_layers,
        num_attention_heads,
        num_key_value_heads,
        head_dim,
        rms_norm_eps: g.get_f32(&key("attention.layer_norm_rms_epsilon")).map(f64::from).unwrap_or(1e-6),
        rope_theta: g.get_f32(&key("rope.freq_base")).map(f64::from).unwrap_or(1_000_000.0),
        rope_local_base_freq: 10_000.0,
        sliding_window: g.get_usize(&key("attention.sliding_window")).unwrap_or(512),
        query_pre_attn_scalar: head_dim as f64,
        layer_types,
        max_position_embeddings: g.get_usize(&key("context_length")).unwrap_or(32768),
        bos_token_id: id("bos_token_id", 2),
        eos_token_id: id("eos_token_id", 1),
        pad_token_id: id("padding_token_id", 0),
        final_logit_softcapping: None,
        attn_logit_softcapping: None,
    })
}

/// Dequantizes every text-model tensor into a [`WeightMap`] under transformers names.
pub fn read_gguf_weights(g: &GgufFile) -> Result<WeightMap> {
    let mut map = WeightMap::new(g.path());
    for info in g.tensors() {
        let Some(name) = hf_name(&info.name) else {
            return Err(GemmaError::weights(g.path(), format!("unexpected tensor `{}` for Gemma 3", info.name)));
        };
        let (shape, mut data) = g.tensor_f32(&info.name)?;
        if name.ends_with("norm.weight") {
            // llama.cpp folds Gemma's `(1 + w)` into the stored weight.
            data.iter_mut().for_each(|x| *x -= 1.0);
        }
        map.insert(name, HostTensor::new(shape, data));
    }
    Ok(map)
}

/// Opens a GGUF file and returns its config and weights.
pub fn load_gguf(path: &Path) -> Result<(GemmaConfig, WeightMap, GgufFile)> {
    let g = GgufFile::open(path)?;
    let cfg = config_from_gguf(&g)?;
    let weights = read_gguf_weights(&g)?;
    Ok((cfg, weights, g))
}

#[cfg(test)]
mod tests {
    use super::hf_name;

    #[test]
    fn names_map_to_transformers() {
        assert_eq!(hf_name("blk.17.ffn_down.weight").unwrap(), "model.layers.17.mlp.down_proj.weight");
        assert_eq!(hf_name("blk.0.attn_q_norm.weight").unwrap(), "model.layers.0.self_attn.q_norm.weight");
        assert_eq!(hf_name("blk.3.ffn_norm.weight").unwrap(), "model.layers.3.pre_feedforward_layernorm.weight");
        assert_eq!(hf_name("token_embd.weight").unwrap(), "model.embed_tokens.weight");
        assert!(hf_name("blk.x.attn_q.weight").is_none());
        assert!(hf_name("rope_freqs.weight").is_none());
    }
}
