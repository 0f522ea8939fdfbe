//! Sparsity masks: a set of weights held at exactly zero while a model trains.
//!
//! Any technique that trains a pruned model (Finetuned-Pruned, KD-Pruned) re-applies its
//! [`Masks`] after every optimizer step ([`Masks::apply_mut`]), so the masks live here,
//! below the techniques; *which* weights to prune is the pruning crate's business.
//!
//! A mask is held on the model's device in the model's layout (`[in, out]` for the
//! projections), as a Bool tensor of *pruned* positions, so re-applying it is one
//! `mask_fill` per tensor and no host traffic. The file format is torch's convention
//! instead: u8, 1 = kept (`weight_mask`), HF `[out, in]` layout, keyed by HF name, with the
//! settings that chose the weights (JSON) and the target sparsity in the metadata.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use burn::module::Param;
use burn::tensor::{Bool, Device, Tensor, TensorData};
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use sweelol_gemma::Gemma3;

use crate::error::{Result, TrainError};

/// HF name of the token embedding (also the tied LM head).
pub const EMBED_NAME: &str = "model.embed_tokens.weight";

/// File name of the masks written beside an exported sparse model. Not `model.safetensors`,
/// so loaders of the model directory (ours and transformers') never read it as weights.
pub const MASKS_FILE: &str = "pruning_masks.safetensors";

/// Metadata keys of a masks file.
const META_CONFIG: &str = "sweelol_pruning_config";
const META_TARGET: &str = "sweelol_target_sparsity";

/// HF name of a decoder projection's weight.
pub fn linear_name(layer: usize, linear: &str) -> String {
    format!("model.layers.{layer}.{linear}.weight")
}

/// Transposes a row-major `[rows, cols]` buffer.
pub fn transpose<T: Copy + Default>(data: &[T], rows: usize, cols: usize) -> Vec<T> {
    assert_eq!(data.len(), rows * cols);
    let mut out = vec![T::default(); data.len()];
    for i in 0..rows {
        for j in 0..cols {
            out[j * rows + i] = data[i * cols + j];
        }
    }
    out
}

/// One tensor's pruned positions as a pruning method computed them on the host.
#[derive(Clone, Debug)]
pub struct MaskSpec {
    /// HF name, e.g. `model.layers.3.mlp.down_proj.weight`.
    pub name: String,
    /// HF shape `[out, in]` (`[vocab, hidden]` for the embedding).
    pub hf_shape: [usize; 2],
    /// Whether the model stores the tensor transposed (the projections do).
    pub transposed: bool,
    /// `true` = pruned, HF layout, row-major.
    pub pruned_hf: Vec<bool>,
}

/// One pruned tensor's mask, on the device.
#[derive(Clone, Debug)]
struct MaskEntry {
    name: String,
    hf_shape: [usize; 2],
    transposed: bool,
    /// `true` = pruned, in the model's layout, on the model's (non-autodiff) device.
    pruned: Tensor<2, Bool>,
    num_pruned: usize,
}

/// The masks of one pruned model, in model order (embedding first, then layer by layer).
#[derive(Clone, Debug)]
pub struct Masks {
    /// The settings that chose the pruned weights, as JSON (kept for reports and files).
    config: serde_json::Value,
    target_sparsity: f64,
    entries: Vec<MaskEntry>,
    index: HashMap<String, usize>,
}

impl MaskEntry {
    fn new(spec: MaskSpec, device: &Device) -> Self {
        let MaskSpec { name, hf_shape, transposed, pruned_hf } = spec;
        let [r, c] = hf_shape;
        let num_pruned = pruned_hf.iter().filter(|&&p| p).count();
        let (data, shape) = if transposed { (transpose(&pruned_hf, r, c), [c, r]) } else { (pruned_hf, [r, c]) };
        let pruned = Tensor::<2, Bool>::from_data(TensorData::new(data, shape), device);
        MaskEntry { name, hf_shape, transposed, pruned, num_pruned }
    }

    /// Pruned positions in HF layout, read back from the device.
    fn pruned_hf(&self) -> Vec<bool> {
        let data: Vec<bool> = self.pruned.clone().into_data().iter::<bool>().collect();
        let [r, c] = self.hf_shape;
        if self.transposed {
            transpose(&data, c, r)
        } else {
            data
        }
    }
}

/// Zeroes the pruned positions of `w`, returning a fresh leaf with `w`'s autodiff setting.
/// Masking the autodiff tensor itself would make the parameter a graph node instead of a
/// leaf, and it would stop receiving gradients under its own id.
fn masked(w: Tensor<2>, pruned: &Tensor<2, Bool>) -> Tensor<2> {
    let (autodiff, require_grad) = (w.is_autodiff(), w.is_require_grad());
    let out = w.inner().mask_fill(pruned.clone(), 0.0);
    if autodiff {
        Tensor::from_inner(out).set_require_grad(require_grad)
    } else {
        out
    }
}

fn mask_param(p: &mut Param<Tensor<2>>, pruned: &Tensor<2, Bool>) {
    // Param::map keeps the ParamId, so optimizer state keyed by it carries over.
    *p = p.clone().map(|w| masked(w, pruned));
}

fn format_err(path: &Path, msg: impl ToString) -> TrainError {
    TrainError::format(path, msg.to_string())
}

impl Masks {
    /// Masks from host specs, placed on `device` (the model's, without autodiff).
    /// `config` records what chose them; `target_sparsity` is what they aimed at.
    pub fn new(config: serde_json::Value, target_sparsity: f64, specs: Vec<MaskSpec>, device: &Device) -> Self {
        let entries: Vec<MaskEntry> = specs.into_iter().map(|s| MaskEntry::new(s, device)).collect();
        let index = entries.iter().enumerate().map(|(i, e)| (e.name.clone(), i)).collect();
        Masks { config, target_sparsity, entries, index }
    }

    /// The settings the masks were computed with (JSON).
    pub fn config(&self) -> &serde_json::Value {
        &self.config
    }

    /// The sparsity the pruning method aimed at.
    pub fn target_sparsity(&self) -> f64 {
        self.target_sparsity
    }

    /// HF names of the pruned tensors, in model order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|e| e.name.as_str())
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Number of pruned positions of tensor `name`.
    pub fn num_pruned(&self, name: &str) -> Option<usize> {
        self.index.get(name).map(|&i| self.entries[i].num_pruned)
    }

    /// Kept positions (`true` = kept, like torch's `weight_mask`) of `name`, HF layout.
    pub fn keep_mask(&self, name: &str) -> Option<Vec<bool>> {
        self.index.get(name).map(|&i| self.entries[i].pruned_hf().into_iter().map(|p| !p).collect())
    }

    /// Sets every pruned weight back to exactly zero. Training calls this after each
    /// optimizer step; parameters keep their ids and gradient settings.
    pub fn apply(&self, mut model: Gemma3) -> Gemma3 {
        self.apply_mut(&mut model);
        model
    }

    /// [`apply`](Self::apply) in place.
    pub fn apply_mut(&self, model: &mut Gemma3) {
        if let Some(&i) = self.index.get(EMBED_NAME) {
            mask_param(&mut model.embed_tokens, &self.entries[i].pruned);
        }
        for (l, layer) in model.layers.iter_mut().enumerate() {
            for (name, lin) in layer.linears_mut() {
                if let Some(&i) = self.index.get(&linear_name(l, name)) {
                    mask_param(&mut lin.weight, &self.entries[i].pruned);
                }
            }
        }
    }

    /// Writes the masks as safetensors: u8, 1 = kept, HF layout, HF names; the config and
    /// target sparsity go into the metadata. Written to a temporary file, then renamed.
    pub fn save(&self, path: &Path) -> Result<()> {
        let bytes: Vec<(String, Vec<u8>, Vec<usize>)> = self
            .entries
            .iter()
            .map(|e| {
                let keep = e.pruned_hf().into_iter().map(|p| u8::from(!p)).collect();
                (e.name.clone(), keep, e.hf_shape.to_vec())
            })
            .collect();
        let views = bytes
            .iter()
            .map(|(name, data, shape)| {
                TensorView::new(Dtype::U8, shape.clone(), data)
                    .map(|v| (name.as_str(), v))
                    .map_err(|e| format_err(path, e))
            })
            .collect::<Result<Vec<_>>>()?;
        let meta: HashMap<String, String> = [
            ("format".to_string(), "pt".to_string()),
            (META_CONFIG.to_string(), self.config.to_string()),
            (META_TARGET.to_string(), self.target_sparsity.to_string()),
        ]
        .into();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| TrainError::io(dir, e))?;
        }
        let tmp = path.with_extension("safetensors.tmp");
        safetensors::serialize_to_file(views, Some(meta), &tmp).map_err(|e| format_err(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| TrainError::io(path, e))
    }

    /// Reads masks written by [`save`](Self::save) for `model`: every mask must name a
    /// tensor of `model` with the same shape. They land on `model`'s device.
    pub fn load(path: &Path, model: &Gemma3) -> Result<Masks> {
        let bytes = std::fs::read(path).map_err(|e| TrainError::io(path, e))?;
        let (_, header) =
            SafeTensors::read_metadata(&bytes).map_err(|e| format_err(path, format!("not a safetensors file: {e}")))?;
        let meta = header.metadata().clone().unwrap_or_default();
        let config: serde_json::Value = meta
            .get(META_CONFIG)
            .ok_or_else(|| format_err(path, format!("no `{META_CONFIG}` metadata: not a sweelol masks file")))
            .and_then(|s| serde_json::from_str(s).map_err(|e| format_err(path, format!("bad pruning config: {e}"))))?;
        // Files from before the target was recorded: count it from the masks below.
        let target: Option<f64> = meta.get(META_TARGET).and_then(|s| s.parse().ok());
        let st = SafeTensors::deserialize(&bytes).map_err(|e| format_err(path, e))?;

        // Shapes of every prunable tensor of the model, HF layout, in model order.
        let mut expected: Vec<(String, [usize; 2], bool)> = Vec::new();
        let [v, h] = model.embed_tokens.val().dims();
        expected.push((EMBED_NAME.into(), [v, h], false));
        for (l, layer) in model.layers.iter().enumerate() {
            for (name, lin) in layer.linears() {
                expected.push((linear_name(l, name), [lin.d_out(), lin.d_in()], true));
            }
        }
        let known: BTreeMap<&str, ([usize; 2], bool)> = expected.iter().map(|(n, s, t)| (n.as_str(), (*s, *t))).collect();
        // Sorted, so the error names the same tensor on every run.
        let mut names = st.names();
        names.sort_unstable();
        for name in names {
            if !known.contains_key(name) {
                return Err(format_err(path, format!("mask `{name}` matches no prunable tensor of the model")));
            }
        }
        let mut specs = Vec::new();
        for (name, shape, transposed) in &expected {
            let Ok(view) = st.tensor(name) else { continue };
            if view.dtype() != Dtype::U8 || view.shape() != shape {
                return Err(format_err(
                    path,
                    format!("mask `{name}` is {:?} {:?}; expected U8 {:?}", view.dtype(), view.shape(), shape),
                ));
            }
            let pruned_hf = view
                .data()
                .iter()
                .map(|&b| match b {
                    0 => Ok(true),
                    1 => Ok(false),
                    other => Err(format_err(path, format!("mask `{name}` holds {other}; only 0 and 1 are allowed"))),
                })
                .collect::<Result<Vec<bool>>>()?;
            specs.push(MaskSpec { name: name.clone(), hf_shape: *shape, transposed: *transposed, pruned_hf });
        }
        let target = target.unwrap_or_else(|| {
            let (pruned, total) = specs.iter().fold((0usize, 0usize), |(p, t), s| {
                (p + s.pruned_hf.iter().filter(|&&x| x).count(), t + s.pruned_hf.len())
            });
            if total == 0 {
                0.0
            } else {
                pruned as f64 / total as f64
            }
        });
        Ok(Masks::new(config, target, specs, &model.device().inner()))
    }
}
