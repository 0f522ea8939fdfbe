//! How sparse a model actually is, counted from its weights (not from the masks, so a
//! broken re-application shows up), and the export of a sparse model: the transformers
//! directory, its masks and this report, written once for every technique that prunes.

use std::path::Path;

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};
use sweelol_gemma::Gemma3;

use sweelol_gemma::{save_hf_dir, GemmaTokenizer};

use crate::error::{Result, TrainError};
use crate::masks::{Masks, EMBED_NAME, MASKS_FILE};

/// File name of the report written beside an exported model.
pub const REPORT_FILE: &str = "sparsity_report.json";

/// Zeros of one pruned tensor.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TensorSparsity {
    /// HF name.
    pub name: String,
    pub numel: u64,
    /// Entries exactly equal to zero (either sign).
    pub zeros: u64,
    /// `zeros / numel`.
    pub sparsity: f64,
}

/// Overall fractions of zeros.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OverallSparsity {
    /// Over the pruned tensors only.
    pub pruned_tensors: f64,
    /// Over every parameter of the model (embedding counted once: the head is tied).
    pub all_params: f64,
}

/// Per-tensor and overall sparsity of a pruned model, with the config that pruned it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SparsityReport {
    /// The settings that chose the pruned weights.
    pub config: serde_json::Value,
    /// The effective target sparsity (0.5 by default, 1 − N/M for N:M).
    pub target_sparsity: f64,
    /// Whether the embedding / tied LM head was pruned (false: left dense).
    pub embeddings_pruned: bool,
    pub tensors: Vec<TensorSparsity>,
    pub total_pruned_numel: u64,
    /// Zeros in the pruned tensors.
    pub total_zeros: u64,
    /// Every parameter of the model.
    pub total_params: u64,
    /// Zeros among all parameters.
    pub total_param_zeros: u64,
    pub overall_sparsity: OverallSparsity,
}

fn count_zeros<const D: usize>(t: Tensor<D>) -> u64 {
    t.inner().equal_elem(0.0).int().sum().into_scalar::<i64>() as u64
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

/// Counts the zeros of every masked tensor of `model` and of all its parameters.
pub fn sparsity_report(model: &Gemma3, masks: &Masks) -> SparsityReport {
    let mut tensors = Vec::with_capacity(masks.len());
    for name in masks.names() {
        let w = if name == EMBED_NAME {
            model.embed_tokens.val()
        } else {
            let lin = model
                .layers
                .iter()
                .enumerate()
                .flat_map(|(l, layer)| layer.linears().map(move |(n, lin)| (format!("model.layers.{l}.{n}.weight"), lin)))
                .find(|(n, _)| n == name)
                .map(|(_, lin)| lin)
                .unwrap_or_else(|| panic!("mask `{name}` matches no tensor of the model"));
            lin.weight.val()
        };
        let numel = w.dims().iter().product::<usize>() as u64;
        let zeros = count_zeros(w);
        tensors.push(TensorSparsity { name: name.to_string(), numel, zeros, sparsity: ratio(zeros, numel) });
    }

    struct AllParams {
        numel: u64,
        zeros: u64,
    }
    impl ModuleVisitor for AllParams {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let t = param.val();
            self.numel += t.dims().iter().product::<usize>() as u64;
            self.zeros += count_zeros(t);
        }
    }
    let mut all = AllParams { numel: 0, zeros: 0 };
    model.visit(&mut all);

    let total_pruned_numel = tensors.iter().map(|t| t.numel).sum();
    let total_zeros = tensors.iter().map(|t| t.zeros).sum();
    SparsityReport {
        target_sparsity: masks.target_sparsity(),
        embeddings_pruned: masks.names().any(|n| n == EMBED_NAME),
        config: masks.config().clone(),
        tensors,
        total_pruned_numel,
        total_zeros,
        total_params: all.numel,
        total_param_zeros: all.zeros,
        overall_sparsity: OverallSparsity {
            pruned_tensors: ratio(total_zeros, total_pruned_numel),
            all_params: ratio(all.zeros, all.numel),
        },
    }
}

/// Exports a sparse model: the transformers directory (`config.json`, `model.safetensors`,
/// `tokenizer.json`), its masks ([`MASKS_FILE`], so a later run can keep the same zeros)
/// and [`REPORT_FILE`]. Returns the report.
pub fn export_sparse(model: &Gemma3, masks: &Masks, tokenizer: &GemmaTokenizer, dir: &Path) -> Result<SparsityReport> {
    let model = model.valid();
    save_hf_dir(&model, tokenizer, dir)?;
    masks.save(&dir.join(MASKS_FILE))?;
    write_report(&model, masks, dir)
}

/// Writes [`REPORT_FILE`] for `model` into `dir` and returns the report.
pub fn write_report(model: &Gemma3, masks: &Masks, dir: &Path) -> Result<SparsityReport> {
    let report = sparsity_report(model, masks);
    let path = dir.join(REPORT_FILE);
    let text = serde_json::to_string_pretty(&report).expect("report serialises");
    std::fs::write(&path, text).map_err(|e| TrainError::io(&path, e))?;
    Ok(report)
}
