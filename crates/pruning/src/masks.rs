//! Pruning masks: computing them ([`prune`]), keeping pruned weights at exactly zero during
//! training ([`Masks::apply`]), and saving them so a resumed run prunes the same weights.
//!
//! A mask is held on the model's device in the model's layout (`[in, out]` for the
//! projections), as a Bool tensor of *pruned* positions, so re-applying it is one
//! `mask_fill` per tensor and no host traffic. The file format is torch's convention
//! instead: u8, 1 = kept (`weight_mask`), HF `[out, in]` layout, keyed by HF name.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use burn::module::Param;
use burn::tensor::{Bool, Device, Tensor, TensorData};
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use sweelol_gemma::{Gemma3, HostTensor};

use crate::config::{PruningConfig, Scope};
use crate::error::{file_err, PruningError, Result};
use crate::select::{num_to_prune, prune_n_m, prune_smallest, transpose};

/// HF name of the token embedding (also the tied LM head).
pub const EMBED_NAME: &str = "model.embed_tokens.weight";

/// Metadata key holding the [`PruningConfig`] (JSON) in a masks file.
const META_CONFIG: &str = "sweelol_pruning_config";

/// One pruned tensor's mask.
#[derive(Clone, Debug)]
struct MaskEntry {
    /// HF name, e.g. `model.layers.3.mlp.down_proj.weight`.
    name: String,
    /// HF shape `[out, in]` (`[vocab, hidden]` for the embedding).
    hf_shape: [usize; 2],
    /// Whether the model stores it transposed (the projections do).
    transposed: bool,
    /// `true` = pruned, in the model's layout, on the model's (non-autodiff) device.
    pruned: Tensor<2, Bool>,
    num_pruned: usize,
}

/// The masks of one pruned model, in model order (embedding first, then layer by layer).
#[derive(Clone, Debug)]
pub struct Masks {
    config: PruningConfig,
    entries: Vec<MaskEntry>,
    index: HashMap<String, usize>,
}

/// A tensor that the config selects, with its host copy in HF layout.
struct Target {
    name: String,
    transposed: bool,
    hf: HostTensor,
}

fn linear_name(layer: usize, linear: &str) -> String {
    format!("model.layers.{layer}.{linear}.weight")
}

/// The tensors `cfg` selects, in model order, copied to the host in HF layout.
fn targets(model: &Gemma3, cfg: &PruningConfig) -> Vec<Target> {
    let mut out = Vec::new();
    if cfg.prune_embeddings {
        out.push(Target { name: EMBED_NAME.into(), transposed: false, hf: HostTensor::from_tensor(model.embed_tokens.val()) });
    }
    for (i, layer) in model.layers.iter().enumerate() {
        for (name, lin) in layer.linears() {
            if cfg.targets(name) {
                let hf = HostTensor::from_tensor(lin.weight.val()).transposed();
                out.push(Target { name: linear_name(i, name), transposed: true, hf });
            }
        }
    }
    out
}

/// Prunes `model` by magnitude as `cfg` says and returns it with its masks. The pruned
/// weights are zero in the returned model; parameters keep their ids.
pub fn prune(model: Gemma3, cfg: &PruningConfig) -> Result<(Gemma3, Masks)> {
    cfg.validate()?;
    let targets = targets(&model, cfg);
    let pruned: Vec<Vec<bool>> = match cfg.scope {
        Scope::PerTensor => targets
            .iter()
            .map(|t| {
                let k = num_to_prune(cfg.sparsity(), t.hf.data.len());
                prune_smallest(&[&t.hf.data], k).pop().expect("one mask")
            })
            .collect(),
        Scope::Global => {
            let slices: Vec<&[f32]> = targets.iter().map(|t| t.hf.data.as_slice()).collect();
            let total = slices.iter().map(|s| s.len()).sum();
            prune_smallest(&slices, num_to_prune(cfg.sparsity(), total))
        }
        Scope::NM => {
            let (n, m) = cfg.n_m().expect("n_m scope");
            targets
                .iter()
                .map(|t| {
                    let (rows, cols) = (t.hf.shape[0], t.hf.shape[1]);
                    if cols % m != 0 {
                        return Err(PruningError::Tensor {
                            tensor: t.name.clone(),
                            msg: format!("input dimension {cols} is not divisible by M = {m} (N:M = {n}:{m})"),
                        });
                    }
                    Ok(prune_n_m(&t.hf.data, rows, cols, n, m))
                })
                .collect::<Result<_>>()?
        }
    };
    let device = model.device().inner();
    let entries = targets
        .into_iter()
        .zip(pruned)
        .map(|(t, p)| MaskEntry::new(t.name, [t.hf.shape[0], t.hf.shape[1]], t.transposed, &p, &device))
        .collect();
    let masks = Masks::from_entries(cfg.clone(), entries);
    let model = masks.apply(model);
    Ok((model, masks))
}

impl MaskEntry {
    /// `pruned_hf`: pruned positions in HF layout.
    fn new(name: String, hf_shape: [usize; 2], transposed: bool, pruned_hf: &[bool], device: &Device) -> Self {
        let [r, c] = hf_shape;
        let num_pruned = pruned_hf.iter().filter(|&&p| p).count();
        let (data, shape) = if transposed { (transpose(pruned_hf, r, c), [c, r]) } else { (pruned_hf.to_vec(), [r, c]) };
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

impl Masks {
    fn from_entries(config: PruningConfig, entries: Vec<MaskEntry>) -> Self {
        let index = entries.iter().enumerate().map(|(i, e)| (e.name.clone(), i)).collect();
        Masks { config, entries, index }
    }

    /// The config the masks were computed with.
    pub fn config(&self) -> &PruningConfig {
        &self.config
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

    /// Writes the masks as safetensors: u8, 1 = kept, HF layout, HF names; the config goes
    /// into the metadata.
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
                TensorView::new(Dtype::U8, shape.clone(), data).map(|v| (name.as_str(), v)).map_err(|e| file_err(path, e))
            })
            .collect::<Result<Vec<_>>>()?;
        let config = serde_json::to_string(&self.config).expect("config serialises");
        let meta: HashMap<String, String> =
            [("format".to_string(), "pt".to_string()), (META_CONFIG.to_string(), config)].into();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| file_err(dir, e))?;
        }
        let tmp = path.with_extension("safetensors.tmp");
        safetensors::serialize_to_file(views, Some(meta), &tmp).map_err(|e| file_err(path, e))?;
        std::fs::rename(&tmp, path).map_err(|e| file_err(path, e))
    }

    /// Reads masks written by [`save`](Self::save) for `model`: every mask must name a
    /// tensor of `model` with the same shape. They land on `model`'s device.
    pub fn load(path: &Path, model: &Gemma3) -> Result<Masks> {
        let bytes = std::fs::read(path).map_err(|e| file_err(path, e))?;
        let (_, header) = SafeTensors::read_metadata(&bytes).map_err(|e| file_err(path, format!("not a safetensors file: {e}")))?;
        let config: PruningConfig = header
            .metadata()
            .as_ref()
            .and_then(|m| m.get(META_CONFIG))
            .ok_or_else(|| file_err(path, format!("no `{META_CONFIG}` metadata: not a sweelol masks file")))
            .and_then(|s| serde_json::from_str(s).map_err(|e| file_err(path, format!("bad pruning config: {e}"))))?;
        let st = SafeTensors::deserialize(&bytes).map_err(|e| file_err(path, e))?;

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
                return Err(file_err(path, format!("mask `{name}` matches no prunable tensor of the model")));
            }
        }
        let device = model.device().inner();
        let mut entries = Vec::new();
        for (name, shape, transposed) in &expected {
            let Ok(view) = st.tensor(name) else { continue };
            if view.dtype() != Dtype::U8 || view.shape() != shape {
                return Err(file_err(
                    path,
                    format!("mask `{name}` is {:?} {:?}; expected U8 {:?}", view.dtype(), view.shape(), shape),
                ));
            }
            let pruned = view
                .data()
                .iter()
                .map(|&b| match b {
                    0 => Ok(true),
                    1 => Ok(false),
                    other => Err(file_err(path, format!("mask `{name}` holds {other}; only 0 and 1 are allowed"))),
                })
                .collect::<Result<Vec<bool>>>()?;
            entries.push(MaskEntry::new(name.clone(), *shape, *transposed, &pruned, &device));
        }
        Ok(Masks::from_entries(config, entries))
    }
}
