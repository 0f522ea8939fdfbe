//! Choosing the weights to prune and zeroing them.

use std::path::Path;

use sweelol_gemma::{Gemma3, HostTensor};
use sweelol_train::masks::{linear_name, MaskSpec, Masks, EMBED_NAME};
use sweelol_train::sparsity::{write_report, SparsityReport};

use crate::config::{PruningConfig, Scope};
use crate::error::{file_err, PruningError, Result};
use crate::select::{num_to_prune, prune_n_m, prune_smallest};

/// A tensor that the config selects, with its host copy in HF layout.
struct Target {
    name: String,
    transposed: bool,
    hf: HostTensor,
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

/// Pruned positions (HF layout) of every target, as the config's scope decides.
fn select(targets: &[Target], cfg: &PruningConfig) -> Result<Vec<Vec<bool>>> {
    Ok(match cfg.scope {
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
    })
}

/// Prunes `model` by magnitude as `cfg` says and returns it with its masks. The pruned
/// weights are zero in the returned model; parameters keep their ids.
pub fn prune(model: Gemma3, cfg: &PruningConfig) -> Result<(Gemma3, Masks)> {
    cfg.validate()?;
    let targets = targets(&model, cfg);
    let pruned = select(&targets, cfg)?;
    let specs = targets
        .into_iter()
        .zip(pruned)
        .map(|(t, pruned_hf)| MaskSpec { name: t.name, hf_shape: [t.hf.shape[0], t.hf.shape[1]], transposed: t.transposed, pruned_hf })
        .collect();
    let config = serde_json::to_value(cfg).expect("config serialises");
    let masks = Masks::new(config, cfg.sparsity(), specs, &model.device().inner());
    let model = masks.apply(model);
    Ok((model, masks))
}

/// Exports a pruned model's weights (a transformers directory without a tokenizer) and its
/// sparsity report; see `sweelol_train::export_sparse` for the full export with the
/// tokenizer and the masks file.
pub fn export(model: &Gemma3, masks: &Masks, dir: &Path) -> Result<SparsityReport> {
    model.save_hf(dir)?;
    write_report(model, masks, dir).map_err(|e| file_err(dir, e))
}
