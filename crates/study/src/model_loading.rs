//! Loading a model source plus an optional PEFT adapter (LoRA or prompt tuning),
//! shared by `eval`, `generate`, `export` and the study.

use std::path::Path;

use anyhow::{bail, Context, Result};
use burn::tensor::{Device, Tensor};
use sweelol_gemma::{load_pretrained, Gemma3, GemmaTokenizer, Precision};
use sweelol_prompt_tuning::{is_prompt_tuning_dir, PromptTuned};

/// A model ready to score or generate: base (with LoRA deltas if any), tokenizer, and
/// prompt-tuning virtual tokens if any.
pub struct LoadedModel {
    pub model: Gemma3,
    pub tokenizer: GemmaTokenizer,
    pub prefix: Option<Tensor<2>>,
}

/// The kinds of PEFT adapter sweelol loads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdapterKind {
    Lora,
    PromptTuning,
}

/// Checks an adapter directory before any model is loaded, with one message per way it can
/// be wrong: missing, empty (or without `adapter_config.json`), a config that is not JSON,
/// or a PEFT type sweelol does not load.
pub fn check_adapter(dir: &Path) -> Result<AdapterKind> {
    if !dir.exists() {
        bail!("adapter directory {} does not exist", dir.display());
    }
    if !dir.is_dir() {
        bail!("{} is a file; --adapter takes a PEFT adapter directory", dir.display());
    }
    let names: Vec<String> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| Some(e.ok()?.file_name().to_string_lossy().into_owned()))
        .collect();
    if names.is_empty() {
        bail!("adapter directory {} is empty (a PEFT adapter holds adapter_config.json and adapter_model.safetensors)", dir.display());
    }
    let config = dir.join("adapter_config.json");
    if !config.is_file() {
        bail!("{} has no adapter_config.json (it holds: {}); not a PEFT adapter", dir.display(), names.join(", "));
    }
    let text = std::fs::read_to_string(&config).with_context(|| format!("reading {}", config.display()))?;
    let json: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| anyhow::anyhow!("{}: not valid JSON: line {}, column {}: {e}", config.display(), e.line(), e.column()))?;
    match json.get("peft_type").and_then(|t| t.as_str()) {
        Some("LORA") => Ok(AdapterKind::Lora),
        Some("PROMPT_TUNING") => Ok(AdapterKind::PromptTuning),
        Some(other) => bail!("{}: peft_type `{other}` is not supported (sweelol loads LORA and PROMPT_TUNING)", config.display()),
        None => bail!("{}: no peft_type (expected LORA or PROMPT_TUNING)", config.display()),
    }
}

#[cfg(test)]
thread_local! {
    /// Models this thread loaded (tests check that a study with nothing to do loads none).
    pub static LOADS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Loads `source` with its adapter (if any) on `device`, its matrix products computing in
/// `precision`.
pub fn load_model(source: &str, adapter: Option<&Path>, merge_lora: bool, device: &Device, precision: Precision) -> Result<LoadedModel> {
    #[cfg(test)]
    LOADS.with(|n| n.set(n.get() + 1));
    if let Some(dir) = adapter {
        check_adapter(dir)?;
    }
    precision.check_supported(device)?;
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
    model.set_precision(precision);
    Ok(LoadedModel { model, tokenizer, prefix })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_bad_adapter_directory_gets_its_own_message() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let msg = |p: &Path| check_adapter(p).unwrap_err().to_string();

        let missing = msg(&d.join("nosuch"));
        assert!(missing.contains("does not exist"), "{missing}");
        std::fs::create_dir(d.join("empty")).unwrap();
        let empty = msg(&d.join("empty"));
        assert!(empty.contains("is empty"), "{empty}");
        std::fs::create_dir(d.join("other")).unwrap();
        std::fs::write(d.join("other/model.bin"), b"x").unwrap();
        let other = msg(&d.join("other"));
        assert!(other.contains("no adapter_config.json (it holds: model.bin)"), "{other}");
        std::fs::create_dir(d.join("corrupt")).unwrap();
        std::fs::write(d.join("corrupt/adapter_config.json"), "{\"peft_type\": \"LORA\",\n oops").unwrap();
        let corrupt = msg(&d.join("corrupt"));
        assert!(corrupt.contains("adapter_config.json: not valid JSON: line 2"), "{corrupt}");
        std::fs::create_dir(d.join("ia3")).unwrap();
        std::fs::write(d.join("ia3/adapter_config.json"), r#"{"peft_type": "IA3"}"#).unwrap();
        let ia3 = msg(&d.join("ia3"));
        assert!(ia3.contains("peft_type `IA3` is not supported"), "{ia3}");
        let all = [&missing, &empty, &other, &corrupt, &ia3];
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                assert_ne!(a, b);
            }
        }
        std::fs::create_dir(d.join("lora")).unwrap();
        std::fs::write(d.join("lora/adapter_config.json"), r#"{"peft_type": "LORA"}"#).unwrap();
        assert_eq!(check_adapter(&d.join("lora")).unwrap(), AdapterKind::Lora);
    }
}
