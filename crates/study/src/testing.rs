//! A study on a tiny synthetic model with Gemma-3's real vocabulary, for tests and examples:
//! real Dolly rows, the real tokenizer and real MMLU / HellaSwag documents go through every
//! stage in seconds. Reads the data and tokenizer from the shared fixtures folder.

use std::path::{Path, PathBuf};

use sweelol_train::testing;

/// Shared sections of every tiny technique config: 4 Dolly rows of <= 48 tokens, 2 steps.
fn shared_sections(model: &Path, out: &str, lr: f64) -> String {
    format!(
        r#"[model]
source = "{model}"
[data]
path = "{data}"
n_train = 4
n_eval = 2
max_len = 48
min_response_tokens = 8
[train]
lr = {lr}
batch_size = 2
max_steps = 2
loss_chunk_rows = 64
[output]
dir = "{out}"
progress = false
"#,
        model = model.display(),
        data = testing::dolly_path().display(),
    )
}

/// Writes a tiny technique config per study technique (`pruning.toml`, `prompt-tuning.toml`,
/// `full-finetune.toml`, `lora.toml`, `finetuned-pruned.toml`, `kd-pruned.toml`) and a preset
/// with the given `[[rows]]` over three tasks at limit 3 into `dir`; returns the preset's path.
pub fn tiny_study(dir: &Path, rows: &str) -> anyhow::Result<PathBuf> {
    let model = testing::tiny_real_vocab_model(&dir.join("base"))?;
    let configs = [
        ("pruning", "technique = \"pruning\"", "[pruning]\nsparsity = 0.5\n", 1e-3),
        ("prompt-tuning", "technique = \"prompt-tuning\"", "[prompt_tuning]\nnum_virtual_tokens = 4\n", 1e-2),
        ("full-finetune", "technique = \"full-finetune\"", "", 1e-3),
        ("lora", "technique = \"lora\"", "[lora]\nr = 2\nlora_alpha = 4.0\n", 1e-2),
        ("finetuned-pruned", "technique = \"pruning\"", "[pruning]\nsparsity = 0.5\nfinetune = true\n", 1e-3),
        ("kd-pruned", "technique = \"distill\"", "[distill]\nalpha = 0.5\n", 1e-3),
    ];
    for (name, technique, table, lr) in configs {
        let text = format!("{technique}\n{}{table}", shared_sections(&model, &format!("out/{name}"), lr));
        std::fs::write(dir.join(format!("{name}.toml")), text)?;
    }
    let preset = format!(
        r#"name = "tiny"
base_model = "{model}"
published = "{published}"
[eval]
tasks = ["mmlu_abstract_algebra", "mmlu_formal_logic", "hellaswag"]
limit = 3
{rows}"#,
        model = model.display(),
        published = crate::paths::repo_root().join("data/published/sweelol-study.json").display(),
    );
    let path = dir.join("tiny.toml");
    std::fs::write(&path, preset)?;
    Ok(path)
}

/// The `[[rows]]` of the study's seven rows, for [`tiny_study`].
pub const SEVEN_ROWS: &str = r#"
[[rows]]
name = "Baseline"
[[rows]]
name = "Pruned-Baseline"
config = "pruning.toml"
[[rows]]
name = "Prompt-Tune"
config = "prompt-tuning.toml"
[[rows]]
name = "Full-Finetune"
config = "full-finetune.toml"
[[rows]]
name = "LoRA"
config = "lora.toml"
[[rows]]
name = "Finetuned-Pruned"
config = "finetuned-pruned.toml"
[[rows]]
name = "KD-Pruned"
config = "kd-pruned.toml"
start_from = "Pruned-Baseline"
teacher = "Full-Finetune"
"#;
