//! What training did to each row's behaviour, beside its scores: the greedy answers of every
//! row to the same held-out Dolly prompts (`[answers]` in a preset), kept in the row's folder
//! as `answers.json` and shown side by side in `table.md` and `table.json`.

use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use sweelol_dolly::DollyRecord;
use sweelol_gemma::generate::{generate_with_prefix, SamplingConfig};

use crate::model_loading::LoadedModel;

/// The row folder's record of its answers.
pub const ANSWERS_FILE: &str = "answers.json";

/// `[answers]` in a preset.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AnswersSection {
    /// How many held-out prompts: the first of the split that every training row holds out
    /// (the first training row's `[data]`, with the preset's overrides); 0 = none.
    #[serde(default = "default_prompts")]
    pub prompts: usize,
    /// Greedy decoding stops at `<end_of_turn>`, `<eos>` or after this many tokens.
    #[serde(default = "default_max_new_tokens")]
    pub max_new_tokens: usize,
}

fn default_prompts() -> usize {
    3
}

fn default_max_new_tokens() -> usize {
    96
}

impl Default for AnswersSection {
    fn default() -> Self {
        AnswersSection { prompts: default_prompts(), max_new_tokens: default_max_new_tokens() }
    }
}

/// One row's answers and what they were made from; reused only when all of it matches.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
pub struct Answers {
    /// The identity of the model (its training stage's, or the base model's source).
    pub model: String,
    pub prompts: Vec<DollyRecord>,
    pub max_new_tokens: usize,
    /// What the products computed in.
    pub dtype: String,
    /// One answer per prompt, special tokens removed, trimmed.
    pub texts: Vec<String>,
}

impl Answers {
    /// The answers in `row_dir` if they were made by `model` for `prompts` under `settings`.
    pub fn read_current(row_dir: &Path, model: &str, prompts: &[DollyRecord], settings: &AnswersSection, dtype: &str) -> Option<Answers> {
        let text = std::fs::read_to_string(row_dir.join(ANSWERS_FILE)).ok()?;
        let a: Answers = serde_json::from_str(&text).ok()?;
        (a.model == model && a.prompts == prompts && a.max_new_tokens == settings.max_new_tokens && a.dtype == dtype)
            .then_some(a)
    }

    pub fn write(&self, row_dir: &Path) -> Result<()> {
        let path = row_dir.join(ANSWERS_FILE);
        let json = serde_json::to_string_pretty(self)?;
        sweelol_outdir::write_atomic(&path, json.as_bytes()).with_context(|| format!("writing {}", path.display()))
    }
}

/// The first `n` held-out records of the split described by `data` (a training row's
/// `[data]` with its path resolved): the same records whose loss the rows report.
pub fn held_out_prompts(data: &sweelol_train::config::DataSection, n: usize) -> Result<Vec<DollyRecord>> {
    if n == 0 {
        return Ok(Vec::new());
    }
    let split = sweelol_train::data::select_dolly(data).context("choosing the held-out prompts for the answers")?;
    Ok(split.eval.into_iter().take(n).collect())
}

/// Greedy answers of `loaded` to `prompts`, each in Gemma's chat format as the rows were
/// trained (`sweelol_dolly::prompt_text`).
pub fn generate(loaded: &LoadedModel, prompts: &[DollyRecord], max_new_tokens: usize) -> Result<Vec<String>> {
    let tok = &loaded.tokenizer;
    let cfg = SamplingConfig { max_new_tokens, stop_ids: vec![tok.eos_id, tok.end_of_turn_id], ..SamplingConfig::default() };
    prompts
        .iter()
        .map(|r| {
            let ids = tok.encode(&sweelol_dolly::prompt_text(r), true)?;
            let out = generate_with_prefix(&loaded.model, loaded.prefix.as_ref(), &ids, &cfg, |_| {});
            Ok(tok.decode(&out)?.trim().to_string())
        })
        .collect()
}

/// `text` on one Markdown table line: newlines shown as `⏎`, pipes escaped, at most
/// `max_chars` characters.
pub fn one_line(text: &str, max_chars: usize) -> String {
    let flat = text.replace("\r\n", "\n").replace('\n', " ⏎ ").replace('|', "\\|");
    match flat.char_indices().nth(max_chars) {
        Some((cut, _)) => format!("{}…", &flat[..cut]),
        None => flat,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_flattens_escapes_and_cuts_on_characters() {
        assert_eq!(one_line("a|b\nc", 80), "a\\|b ⏎ c");
        assert_eq!(one_line("ééééé", 3), "ééé…");
        assert_eq!(one_line("abc", 3), "abc");
    }

    #[test]
    fn answers_are_reused_only_for_the_same_model_prompts_and_settings() {
        let dir = tempfile::tempdir().unwrap();
        let prompt = DollyRecord {
            instruction: "Name a colour.".into(),
            context: String::new(),
            response: "Blue.".into(),
            category: "open_qa".into(),
            earlier: Vec::new(),
        };
        let settings = AnswersSection::default();
        let a = Answers {
            model: "m1".into(),
            prompts: vec![prompt.clone()],
            max_new_tokens: settings.max_new_tokens,
            dtype: "f32".into(),
            texts: vec!["Red.".into()],
        };
        a.write(dir.path()).unwrap();
        let p = [prompt.clone()];
        assert_eq!(Answers::read_current(dir.path(), "m1", &p, &settings, "f32"), Some(a));
        assert!(Answers::read_current(dir.path(), "m2", &p, &settings, "f32").is_none());
        assert!(Answers::read_current(dir.path(), "m1", &p, &settings, "bf16").is_none());
        let longer = AnswersSection { max_new_tokens: 8, ..settings.clone() };
        assert!(Answers::read_current(dir.path(), "m1", &p, &longer, "f32").is_none());
        let other = DollyRecord { instruction: "Name a fruit.".into(), ..prompt };
        assert!(Answers::read_current(dir.path(), "m1", &[other], &settings, "f32").is_none());
    }
}
