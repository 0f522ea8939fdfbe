//! `cargo xtask export`: any model, with a LoRA adapter merged in, as a transformers
//! directory.

use std::path::Path;

use anyhow::{bail, Context, Result};
use burn::tensor::Device;
use sweelol_gemma::Precision;
use sweelol_study::model_loading::load_model;

/// Writes `model` (+ `adapter`, merged) to `out` in f32.
pub fn run(model: &str, adapter: Option<&Path>, out: &Path, device: &Device) -> Result<()> {
    let pre = load_model(model, adapter, true, device, Precision::F32)?;
    if pre.prefix.is_some() {
        bail!("a prompt-tuning adapter cannot be merged into weights; use it with --adapter instead");
    }
    sweelol_gemma::save_hf_dir(&pre.model, &pre.tokenizer, out).with_context(|| format!("exporting to {}", out.display()))?;
    println!("wrote {}", out.display());
    Ok(())
}
