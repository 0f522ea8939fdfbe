//! Weights in and out of the model: Hugging Face safetensors (f32/bf16/f16, single
//! file or sharded), GGUF as llama.cpp writes it, and HF-layout export.
//!
//! Everything passes through a [`WeightMap`] of f32 host tensors keyed by the
//! transformers parameter names, so each format only has to map names and dtypes.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use burn::module::Param;
use burn::tensor::{Device, Tensor, TensorData};
use safetensors::tensor::{Dtype, View};
use safetensors::SafeTensors;

use crate::config::GemmaConfig;
use crate::error::{GemmaError, Result};
use crate::model::{Attention, DecoderLayer, Gemma3, Linear, Mlp, RmsNorm};

/// A dense f32 tensor on the host, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl HostTensor {
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Self {
        debug_assert_eq!(shape.iter().product::<usize>(), data.len());
        HostTensor { shape, data }
    }

    /// Transpose of a 2-D tensor.
    pub fn transposed(&self) -> HostTensor {
        let (r, c) = (self.shape[0], self.shape[1]);
        let mut out = vec![0f32; r * c];
        for i in 0..r {
            for j in 0..c {
                out[j * r + i] = self.data[i * c + j];
            }
        }
        HostTensor::new(vec![c, r], out)
    }

    pub fn from_tensor<const D: usize>(t: Tensor<D>) -> HostTensor {
        let shape = t.dims().to_vec();
        let data = t.into_data().convert::<f32>().try_into_vec::<f32>().expect("f32 data");
        HostTensor::new(shape, data)
    }

    pub fn to_tensor<const D: usize>(&self, device: &Device) -> Tensor<D> {
        Tensor::from_data(TensorData::new(self.data.clone(), self.shape.clone()), device)
    }
}

impl View for &HostTensor {
    fn dtype(&self) -> Dtype {
        Dtype::F32
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        le_bytes(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len() * 4
    }
}

/// `floats` as the little-endian bytes safetensors stores: the memory itself on a
/// little-endian host (no copy), a converted copy elsewhere.
fn le_bytes(floats: &[f32]) -> Cow<'_, [u8]> {
    if cfg!(target_endian = "little") {
        // SAFETY: an f32 is 4 initialised bytes and u8 needs no alignment, so the slice's
        // memory read as `4 * len` bytes is valid for as long as `floats` is borrowed.
        Cow::Borrowed(unsafe { std::slice::from_raw_parts(floats.as_ptr().cast::<u8>(), floats.len() * 4) })
    } else {
        Cow::Owned(floats.iter().flat_map(|x| x.to_le_bytes()).collect())
    }
}

/// A tensor still on its device, written by [`write_lazy_safetensors`]: its data comes to
/// the host only when the writer reaches it and is dropped right after, so saving every
/// weight and optimizer moment of a run holds one tensor's host copy at a time instead of
/// a second copy of them all (3.2 GB for a full fine-tune of the 270M model).
#[derive(Clone, Debug)]
pub struct LazyTensor {
    pub shape: Vec<usize>,
    /// The data, any shape with the same number of elements (usually flattened).
    pub tensor: Tensor<1>,
}

impl View for &LazyTensor {
    fn dtype(&self) -> Dtype {
        Dtype::F32
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        let data = crate::kernels::host::host_f32(self.tensor.clone());
        Cow::Owned(le_bytes(data.as_slice::<f32>().expect("f32 data")).into_owned())
    }
    fn data_len(&self) -> usize {
        self.shape.iter().product::<usize>() * 4
    }
}

/// Writes `tensors` as f32 into one safetensors file, one tensor's host copy at a time.
pub fn write_lazy_safetensors(tensors: &BTreeMap<String, LazyTensor>, path: &Path) -> Result<()> {
    write_views(tensors.iter().map(|(k, v)| (k.as_str(), v)).collect(), path)
}

/// One safetensors file, with PyTorch metadata so transformers accepts it, written to a
/// temporary name and renamed into place.
fn write_views<V: View>(items: Vec<(&str, V)>, path: &Path) -> Result<()> {
    let meta: HashMap<String, String> = [("format".to_string(), "pt".to_string())].into();
    let tmp = path.with_extension("safetensors.tmp");
    safetensors::serialize_to_file(items, Some(meta), &tmp)
        .map_err(|e| GemmaError::weights(path, format!("cannot write: {e}")))?;
    std::fs::rename(&tmp, path).map_err(|e| GemmaError::io(path, e))
}

/// Parameters by transformers name, plus the file they came from (for errors).
#[derive(Clone, Debug, Default)]
pub struct WeightMap {
    pub tensors: BTreeMap<String, HostTensor>,
    pub origin: PathBuf,
}

impl WeightMap {
    pub fn new(origin: impl Into<PathBuf>) -> Self {
        WeightMap { tensors: BTreeMap::new(), origin: origin.into() }
    }

    pub fn insert(&mut self, name: impl Into<String>, t: HostTensor) {
        self.tensors.insert(name.into(), t);
    }

    /// Removes and returns a tensor, checking its shape; errors name file and tensor.
    pub fn take(&mut self, name: &str, shape: &[usize]) -> Result<HostTensor> {
        let t = self
            .tensors
            .remove(name)
            .ok_or_else(|| GemmaError::weights(&self.origin, format!("missing tensor `{name}`")))?;
        if t.shape != shape {
            return Err(GemmaError::weights(
                &self.origin,
                format!("tensor `{name}` has shape {:?}, expected {:?}", t.shape, shape),
            ));
        }
        Ok(t)
    }

    /// Reads one safetensors file (f32, bf16 or f16 tensors).
    pub fn read_safetensors_file(&mut self, path: &Path) -> Result<()> {
        let file = std::fs::File::open(path).map_err(|e| GemmaError::io(path, e))?;
        // SAFETY: the file is opened read-only and not modified while mapped.
        let mmap = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| GemmaError::io(path, e))?;
        let st = SafeTensors::deserialize(&mmap)
            .map_err(|e| GemmaError::weights(path, format!("not a valid safetensors file: {e}")))?;
        for (name, view) in st.tensors() {
            let bytes = view.data();
            let data: Vec<f32> = match view.dtype() {
                Dtype::F32 => bytes.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect(),
                Dtype::BF16 => bytes
                    .chunks_exact(2)
                    .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                    .collect(),
                Dtype::F16 => bytes
                    .chunks_exact(2)
                    .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                    .collect(),
                other => {
                    return Err(GemmaError::weights(
                        path,
                        format!("tensor `{name}` has dtype {other:?}; only F32, BF16 and F16 are supported"),
                    ))
                }
            };
            self.insert(name, HostTensor::new(view.shape().to_vec(), data));
        }
        Ok(())
    }

    /// Reads `model.safetensors`, or every shard listed in `model.safetensors.index.json`.
    pub fn read_safetensors_dir(dir: &Path) -> Result<WeightMap> {
        let index = dir.join("model.safetensors.index.json");
        let mut map = WeightMap::new(dir);
        if index.exists() {
            let text = std::fs::read_to_string(&index).map_err(|e| GemmaError::io(&index, e))?;
            let v: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| GemmaError::weights(&index, format!("not valid JSON: {e}")))?;
            let wm = v
                .get("weight_map")
                .and_then(|w| w.as_object())
                .ok_or_else(|| GemmaError::weights(&index, "no `weight_map` object"))?;
            let mut shards: Vec<&str> = wm.values().filter_map(|s| s.as_str()).collect();
            shards.sort_unstable();
            shards.dedup();
            for shard in shards {
                map.read_safetensors_file(&dir.join(shard))?;
            }
        } else {
            let single = dir.join("model.safetensors");
            map.read_safetensors_file(&single)?;
            map.origin = single;
        }
        Ok(map)
    }

    /// Writes all tensors as f32 into one safetensors file (PyTorch metadata so
    /// transformers accepts it).
    pub fn write_safetensors(&self, path: &Path) -> Result<()> {
        write_views(self.tensors.iter().map(|(k, v)| (k.as_str(), v)).collect(), path)
    }
}

const LAYER_NORMS: [&str; 4] = [
    "input_layernorm",
    "post_attention_layernorm",
    "pre_feedforward_layernorm",
    "post_feedforward_layernorm",
];

impl Gemma3 {
    /// Builds the model from transformers-named weights, checking every name and shape.
    /// Tensors left over (other than a tied `lm_head.weight`) are an error: they mean the
    /// file is not the model the config describes.
    pub fn from_weights(config: &GemmaConfig, mut w: WeightMap, device: &Device) -> Result<Gemma3> {
        let c = config;
        let (h, hd, nh, nkv, ff) =
            (c.hidden_size, c.head_dim, c.num_attention_heads, c.num_key_value_heads, c.intermediate_size);
        let embed = w.take("model.embed_tokens.weight", &[c.vocab_size, h])?;
        let mut layers = Vec::with_capacity(c.num_hidden_layers);
        for (i, &layer_type) in c.layer_types.iter().enumerate() {
            let p = format!("model.layers.{i}");
            // HF stores linear weights [out, in]; burn's linear wants [in, out].
            let mut linear = |name: &str, out: usize, inp: usize| -> Result<Linear> {
                let t = w.take(&format!("{p}.{name}.weight"), &[out, inp])?;
                Ok(Linear::new(t.transposed().to_tensor(device)))
            };
            let q_proj = linear("self_attn.q_proj", nh * hd, h)?;
            let k_proj = linear("self_attn.k_proj", nkv * hd, h)?;
            let v_proj = linear("self_attn.v_proj", nkv * hd, h)?;
            let o_proj = linear("self_attn.o_proj", h, nh * hd)?;
            let gate_proj = linear("mlp.gate_proj", ff, h)?;
            let up_proj = linear("mlp.up_proj", ff, h)?;
            let down_proj = linear("mlp.down_proj", h, ff)?;
            let mut norm = |name: &str, n: usize| -> Result<RmsNorm> {
                let t = w.take(&format!("{p}.{name}.weight"), &[n])?;
                Ok(RmsNorm { weight: Param::from_tensor(t.to_tensor(device)), eps: c.rms_norm_eps })
            };
            let q_norm = norm("self_attn.q_norm", hd)?;
            let k_norm = norm("self_attn.k_norm", hd)?;
            let [n0, n1, n2, n3] = LAYER_NORMS.map(|n| norm(n, h));
            layers.push(DecoderLayer {
                self_attn: Attention {
                    q_proj,
                    k_proj,
                    v_proj,
                    o_proj,
                    q_norm,
                    k_norm,
                    num_heads: nh,
                    num_kv_heads: nkv,
                    head_dim: hd,
                    scaling: c.query_pre_attn_scalar.powf(-0.5),
                    precision: Default::default(),
                },
                mlp: Mlp { gate_proj, up_proj, down_proj },
                input_layernorm: n0?,
                post_attention_layernorm: n1?,
                pre_feedforward_layernorm: n2?,
                post_feedforward_layernorm: n3?,
                layer_type,
            });
        }
        let final_norm = w.take("model.norm.weight", &[h])?;
        w.tensors.remove("lm_head.weight");
        if let Some(extra) = w.tensors.keys().next() {
            return Err(GemmaError::weights(
                &w.origin,
                format!("unexpected tensor `{extra}` ({} left over) for this config", w.tensors.len()),
            ));
        }
        Ok(Gemma3::from_parts(
            config.clone(),
            embed.to_tensor(device),
            layers,
            RmsNorm { weight: Param::from_tensor(final_norm.to_tensor(device)), eps: c.rms_norm_eps },
        ))
    }

    /// The model's weights under transformers names and layouts (adapters not merged).
    pub fn to_weights(&self) -> WeightMap {
        let mut w = WeightMap::new("<in memory>");
        w.insert("model.embed_tokens.weight", HostTensor::from_tensor(self.embed_tokens.val()));
        for (i, l) in self.layers.iter().enumerate() {
            let p = format!("model.layers.{i}");
            let a = &l.self_attn;
            for (name, lin) in l.linears() {
                w.insert(format!("{p}.{name}.weight"), HostTensor::from_tensor(lin.weight.val()).transposed());
            }
            let norms = [
                ("self_attn.q_norm", &a.q_norm),
                ("self_attn.k_norm", &a.k_norm),
                (LAYER_NORMS[0], &l.input_layernorm),
                (LAYER_NORMS[1], &l.post_attention_layernorm),
                (LAYER_NORMS[2], &l.pre_feedforward_layernorm),
                (LAYER_NORMS[3], &l.post_feedforward_layernorm),
            ];
            for (name, n) in norms {
                w.insert(format!("{p}.{name}.weight"), HostTensor::from_tensor(n.weight.val()));
            }
        }
        w.insert("model.norm.weight", HostTensor::from_tensor(self.norm.weight.val()));
        w
    }

    /// Writes `config.json` + `model.safetensors` that transformers' `from_pretrained` loads.
    pub fn save_hf(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| GemmaError::io(dir, e))?;
        let cfg_path = dir.join("config.json");
        let text = serde_json::to_string_pretty(&self.config.to_hf_json()).expect("config serialises");
        std::fs::write(&cfg_path, text).map_err(|e| GemmaError::io(&cfg_path, e))?;
        self.to_weights().write_safetensors(&dir.join("model.safetensors"))
    }
}
