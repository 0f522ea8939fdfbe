//! Loading a model source plus an optional PEFT adapter (LoRA or prompt tuning),
//! shared by `eval`, `generate`, `export` and the study.

use std::path::Path;

use anyhow::{bail, Context, Result};
use burn::tensor::{Device, Tensor};
use sweelol_gemma::{load_pretrained, Gemma3, GemmaTokenizer};
use sweelol_prompt_tuning::{is_prompt_tuning_dir, PromptTuned};

/// A model ready to score or generate: base (with LoRA deltas if any), tokenizer, and
/// prompt-tuning virtual tokens if any.
pub struct LoadedModel {
    pub model: Gemma3,
    pub tokenizer: GemmaTokenizer,
    pub prefix: Option<Tensor<2>>,
}

pub fn load_model(source: &str, adapter: Option<&Path>, merge_lora: bool, device: &Device) -> Result<LoadedModel> {
    let pre = load_pretrained(source, device).with_context(|| format!("loading model `{source}`"))?;
    let (mut model, tokenizer) = (pre.model, pre.tokenizer);
    let mut prefix = None;
    if let Some(dir) = adapter {
        if is_prompt_tuning_dir(dir) {
            let tuned = PromptTuned::load_peft(model, dir)?;
            prefix = Some(tuned.prompt.val());
            model = tuned.base;
        } else if sweelol_lora::is_lora_dir(dir) {
            let (with_lora, _) = sweelol_lora::load_peft(model, dir)?;
            model = if merge_lora { sweelol_lora::merge(with_lora) } else { with_lora };
        } else {
            bail!("{}: not a PEFT LoRA or prompt-tuning adapter (adapter_config.json)", dir.display());
        }
    }
    Ok(LoadedModel { model, tokenizer, prefix })
}
