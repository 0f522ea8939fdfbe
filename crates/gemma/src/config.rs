//! Gemma-3 text configuration, read from either config.json style.
//!
//! The hub's config.json (transformers 4.x) names the two RoPE bases `rope_theta` and
//! `rope_local_base_freq` and may give the layer pattern only as `sliding_window_pattern`;
//! transformers 5 writes `rope_parameters` keyed by layer type plus `layer_types`.
//! Both are normalised into [`GemmaConfig`].

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::Path;

use crate::error::{GemmaError, Result};

/// Which attention a decoder layer uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LayerType {
    /// Local attention: query i sees keys i-W+1 ..= i, RoPE with the local base.
    SlidingAttention,
    /// Global causal attention, RoPE with the global base.
    FullAttention,
}

/// Everything the model needs to know about its shape.
#[derive(Clone, Debug, PartialEq)]
pub struct GemmaConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    /// RoPE base of full-attention layers.
    pub rope_theta: f64,
    /// RoPE base of sliding-window layers.
    pub rope_local_base_freq: f64,
    pub sliding_window: usize,
    pub query_pre_attn_scalar: f64,
    pub layer_types: Vec<LayerType>,
    pub max_position_embeddings: usize,
    pub bos_token_id: u32,
    pub eos_token_id: u32,
    pub pad_token_id: u32,
    pub final_logit_softcapping: Option<f64>,
    pub attn_logit_softcapping: Option<f64>,
}

impl GemmaConfig {
    /// Reads and validates a config.json; errors name the file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| GemmaError::io(path, e))?;
        Self::from_json_str(&text).map_err(|e| e.in_file(path))
    }

    /// Parses config.json text in either style.
    pub fn from_json_str(text: &str) -> Result<Self> {
        let v: Value = serde_json::from_str(text)
            .map_err(|e| GemmaError::config(format!("not valid JSON: {e}")))?;
        let obj = v
            .as_object()
            .ok_or_else(|| GemmaError::config("top level is not an object"))?;
        // Multimodal Gemma-3 checkpoints nest the text model under `text_config`.
        let obj = match obj.get("text_config").and_then(Value::as_object) {
            Some(text) => text,
            None => obj,
        };
        if let Some(mt) = obj.get("model_type").and_then(Value::as_str) {
            if !mt.starts_with("gemma3") {
                return Err(GemmaError::config(format!(
                    "model_type is `{mt}`, expected gemma3_text"
                )));
            }
        }
        let uint = |key: &str| -> Result<usize> {
            obj.get(key)
                .ok_or_else(|| GemmaError::config(format!("missing key `{key}`")))?
                .as_u64()
                .map(|x| x as usize)
                .ok_or_else(|| GemmaError::config(format!("`{key}` is not a non-negative integer")))
        };
        let uint_or = |key: &str, default: usize| -> Result<usize> {
            if obj.get(key).is_none_or(Value::is_null) {
                Ok(default)
            } else {
                uint(key)
            }
        };
        let float_opt = |key: &str| -> Result<Option<f64>> {
            match obj.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(x) => x
                    .as_f64()
                    .map(Some)
                    .ok_or_else(|| GemmaError::config(format!("`{key}` is not a number"))),
            }
        };

        let hidden_size = uint("hidden_size")?;
        let num_hidden_layers = uint("num_hidden_layers")?;
        let num_attention_heads = uint("num_attention_heads")?;
        let num_key_value_heads = uint_or("num_key_value_heads", num_attention_heads)?;
        let head_dim = uint_or("head_dim", 256)?;
        let layer_types = read_layer_types(obj, num_hidden_layers)?;
        let (rope_theta, rope_local_base_freq) = read_rope_bases(obj)?;

        let cfg = GemmaConfig {
            vocab_size: uint("vocab_size")?,
            hidden_size,
            intermediate_size: uint("intermediate_size")?,
            num_hidden_layers,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            rms_norm_eps: float_opt("rms_norm_eps")?.unwrap_or(1e-6),
            rope_theta,
            rope_local_base_freq,
            sliding_window: uint_or("sliding_window", 4096)?,
            query_pre_attn_scalar: float_opt("query_pre_attn_scalar")?.unwrap_or(head_dim as f64),
            layer_types,
            max_position_embeddings: uint_or("max_position_embeddings", 32768)?,
            bos_token_id: uint_or("bos_token_id", 2)? as u32,
            eos_token_id: first_id(obj.get("eos_token_id")).unwrap_or(1),
            pad_token_id: uint_or("pad_token_id", 0)? as u32,
            final_logit_softcapping: float_opt("final_logit_softcapping")?,
            attn_logit_softcapping: float_opt("attn_logit_softcapping")?,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<()> {
        let check = |ok: bool, what: &str| {
            if ok {
                Ok(())
            } else {
                Err(GemmaError::config(what.to_string()))
            }
        };
        check(self.hidden_size > 0 && self.vocab_size > 0, "hidden_size and vocab_size must be positive")?;
        check(self.num_attention_heads > 0 && self.num_key_value_heads > 0, "head counts must be positive")?;
        check(
            self.num_attention_heads.is_multiple_of(self.num_key_value_heads),
            "num_attention_heads must be a multiple of num_key_value_heads",
        )?;
        check(self.head_dim.is_multiple_of(2), "head_dim must be even for rotary embeddings")?;
        check(self.sliding_window > 0, "sliding_window must be positive")?;
        Ok(())
    }

    /// The config.json transformers writes for this model (transformers-5 style, which
    /// 4.5x also reads thanks to the duplicated hub-style keys).
    pub fn to_hf_json(&self) -> Value {
        let layer_types: Vec<&str> = self
            .layer_types
            .iter()
            .map(|t| match t {
                LayerType::SlidingAttention => "sliding_attention",
                LayerType::FullAttention => "full_attention",
            })
            .collect();
        serde_json::json!({
            "architectures": ["Gemma3ForCausalLM"],
            "model_type": "gemma3_text",
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "rope_local_base_freq": self.rope_local_base_freq,
            "rope_parameters": {
                "full_attention": {"rope_type": "default", "rope_theta": self.rope_theta},
                "sliding_attention": {"rope_type": "default", "rope_theta": self.rope_local_base_freq},
            },
            "sliding_window": self.sliding_window,
            // transformers' strict config wants an int here when it is one.
            "query_pre_attn_scalar": if self.query_pre_attn_scalar.fract() == 0.0 {
                serde_json::json!(self.query_pre_attn_scalar as i64)
            } else {
                serde_json::json!(self.query_pre_attn_scalar)
            },
            "layer_types": layer_types,
            "max_position_embeddings": self.max_position_embeddings,
            "hidden_activation": "gelu_pytorch_tanh",
            "attention_bias": false,
            "attention_dropout": 0.0,
            "final_logit_softcapping": self.final_logit_softcapping,
            "attn_logit_softcapping": self.attn_logit_softcapping,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_id,
            "pad_token_id": self.pad_token_id,
            "tie_word_embeddings": true,
            "torch_dtype": "float32",
            "dtype": "float32",
            "use_cache": true,
        })
    }

    pub fn num_query_groups(&self) -> usize {
        self.num_attention_heads / self.num_key_value_heads
    }
}

fn first_id(v: Option<&Value>) -> Option<u32> {
    match v? {
        Value::Number(n) => n.as_u64().map(|x| x as u32),
        Value::Array(a) => a.first().and_then(Value::as_u64).map(|x| x as u32),
        _ => None,
    }
}

fn read_layer_types(obj: &serde_json::Map<String, Value>, n: usize) -> Result<Vec<LayerType>> {
    if let Some(types) = obj.get("layer_types").filter(|v| !v.is_null()) {
        let types: Vec<LayerType> = serde_json::from_value(types.clone())
            .map_err(|e| GemmaError::config(format!("`layer_types`: {e}")))?;
        if types.len() != n {
            return Err(GemmaError::config(format!(
                "`layer_types` has {} entries but num_hidden_layers is {n}",
                types.len()
            )));
        }
        return Ok(types);
    }
    // Older configs: every `pattern`-th layer (1-based) is global.
    let pattern = ["sliding_window_pattern", "_sliding_window_pattern"]
        .iter()
        .find_map(|k| obj.get(*k).and_then(Value::as_u64))
        .unwrap_or(6) as usize;
    if pattern == 0 {
        return Err(GemmaError::config("`sliding_window_pattern` must be positive"));
    }
    Ok((0..n)
        .map(|i| {
            if (i + 1) % pattern == 0 {
                LayerType::FullAttention
            } else {
                LayerType::SlidingAttention
            }
        })
        .collect())
}

fn read_rope_bases(obj: &serde_json::Map<String, Value>) -> Result<(f64, f64)> {
    if let Some(params) = obj.get("rope_parameters").and_then(Value::as_object) {
        let base = |kind: &str| -> Result<f64> {
            let p = params
                .get(kind)
                .and_then(Value::as_object)
                .ok_or_else(|| GemmaError::config(format!("`rope_parameters.{kind}` missing")))?;
            if let Some(t) = p.get("rope_type").and_then(Value::as_str) {
                if t != "default" {
                    return Err(GemmaError::config(format!(
                        "`rope_parameters.{kind}.rope_type` = `{t}` is not supported (only `default`)"
                    )));
                }
            }
            p.get("rope_theta")
                .and_then(Value::as_f64)
                .ok_or_else(|| GemmaError::config(format!("`rope_parameters.{kind}.rope_theta` missing")))
        };
        return Ok((base("full_attention")?, base("sliding_attention")?));
    }
    if let Some(scaling) = obj.get("rope_scaling").filter(|v| !v.is_null()) {
        return Err(GemmaError::config(format!(
            "`rope_scaling` = {scaling} is not supported (only unscaled RoPE)"
        )));
    }
    let global = obj.get("rope_theta").and_then(Value::as_f64).unwrap_or(1_000_000.0);
    let local = obj
        .get("rope_local_base_freq")
        .and_then(Value::as_f64)
        .unwrap_or(10_000.0);
    Ok((global, local))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HUB: &str = r#"{"model_type":"gemma3_text","vocab_size":10,"hidden_size":8,"intermediate_size":16,
        "num_hidden_layers":6,"num_attention_heads":2,"num_key_value_heads":1,"head_dim":4,
        "rope_theta":1000000.0,"rope_local_base_freq":10000.0,"sliding_window":3,"sliding_window_pattern":3}"#;

    #[test]
    fn hub_style_pattern_and_bases() {
        let c = GemmaConfig::from_json_str(HUB).unwrap();
        use LayerType::*;
        assert_eq!(
            c.layer_types,
            vec![SlidingAttention, SlidingAttention, FullAttention, SlidingAttention, SlidingAttention, FullAttention]
        );
        assert_eq!((c.rope_theta, c.rope_local_base_freq), (1e6, 1e4));
    }

    #[test]
    fn transformers5_round_trip() {
        let c = GemmaConfig::from_json_str(HUB).unwrap();
        let mut v = c.to_hf_json();
        // Drop the hub-style keys so only the transformers-5 ones are read.
        v.as_object_mut().unwrap().remove("rope_theta");
        v.as_object_mut().unwrap().remove("rope_local_base_freq");
        let back = GemmaConfig::from_json_str(&v.to_string()).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn corrupt_config_is_an_error() {
        assert!(GemmaConfig::from_json_str("{\"hidden_size\": 8").is_err());
        let err = GemmaConfig::from_json_str(r#"{"model_type":"llama"}"#).unwrap_err();
        assert!(err.to_string().contains("llama"), "{err}");
        let err = GemmaConfig::from_json_str(&HUB.replace("\"head_dim\":4", "\"head_dim\":\"x\"")).unwrap_err();
        assert!(err.to_string().contains("head_dim"), "{err}");
    }
}
