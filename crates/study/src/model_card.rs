//! A study row's model folder as a folder a user could push to the hub as it is: a model
//! card (`README.md`) with the hub's front matter, the row's results against Baseline, how
//! it was trained and how to load it.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::preset::RowResult;
use crate::report::{column, Report, TableRow};

/// The model card's file name (what the hub shows).
pub const MODEL_CARD: &str = "README.md";

/// The folder a row's result lives in: its adapter, else its model directory; `None` for
/// a row without training (the base model is not ours to describe).
pub fn result_dir(result: &RowResult) -> Option<PathBuf> {
    let train = result.train.as_ref()?;
    match &train.adapter {
        Some(dir) => Some(dir.clone()),
        None => Some(PathBuf::from(&train.model_source)).filter(|p| p.is_dir()),
    }
}

/// The tag the hub lists a technique under.
fn technique_tag(technique: &str) -> &str {
    match technique {
        t if t.starts_with("pruning") => "pruning",
        "distill" => "knowledge-distillation",
        other => other,
    }
}

/// The card of `row` (first seed) whose result is in `dir`.
pub fn card(report: &Report, row: &TableRow, result: &RowResult, dir: &Path) -> Result<String> {
    let train = result.train.as_ref().context("a trained row")?;
    let technique = train.details["technique"].as_str().unwrap_or("unknown").to_string();
    let adapter = train.adapter.is_some();
    let mut md = String::new();
    writeln!(md, "---")?;
    writeln!(md, "license: gemma")?;
    writeln!(md, "base_model: google/gemma-3-270m")?;
    writeln!(md, "datasets:\n- databricks/databricks-dolly-15k")?;
    writeln!(md, "tags:\n- sweelol\n- {}\n- gemma3", technique_tag(&technique))?;
    writeln!(md, "library_name: {}", if adapter { "peft" } else { "transformers" })?;
    writeln!(md, "pipeline_tag: text-generation")?;
    writeln!(md, "---\n")?;
    writeln!(md, "# {}: Gemma-3-270m, {technique}, Dolly-15k\n", row.row)?;
    writeln!(
        md,
        "Row `{}` of the sweelol study `{}`: trained in {}, scored zero-shot as lm-evaluation-harness \
         does (first {} documents per task), in {}.\n",
        row.row, report.preset, report.train_dtype, report.limit, report.eval_dtype
    )?;
    let baseline = report.rows.iter().find(|r| r.train.is_empty());
    writeln!(md, "## Results\n")?;
    writeln!(md, "Accuracy in %, 95% interval over documents; Δ: minus Baseline (the base model), paired.\n")?;
    let base_name = baseline.map_or("Baseline", |b| b.row.as_str());
    writeln!(md, "| Task | {} | {base_name} |\n|---|---:|---:|", row.row)?;
    for task in &report.tasks {
        let Some(c) = row.tasks.get(task) else { continue };
        let base = baseline.and_then(|b| b.tasks.get(task)).map_or("–".to_string(), |b| format!("{:.2}", b.acc));
        writeln!(md, "| {} | {:.2} [{:.1}, {:.1}] | {base} |", column(task), c.acc, c.ci95[0], c.ci95[1])?;
    }
    if let Some(avg) = &row.average_mmlu {
        let base = baseline.and_then(|b| b.average_mmlu.as_ref()).map_or("–".to_string(), |b| format!("{:.2}", b.value));
        let delta = row
            .average_mmlu_vs_baseline
            .as_ref()
            .map_or(String::new(), |d| format!(" (Δ {:+.2} [{:+.1}, {:+.1}])", d.value, d.ci95[0], d.ci95[1]));
        writeln!(md, "| Average MMLU | {:.2} [{:.1}, {:.1}]{delta} | {base} |", avg.value, avg.ci95[0], avg.ci95[1])?;
    }
    writeln!(md, "\n## Training\n")?;
    let d = &train.details;
    let mut facts = vec![format!("technique: {technique}")];
    for (key, what) in [("train_examples", "Dolly examples"), ("steps", "optimizer steps"), ("trainable_params", "trainable parameters")] {
        if let Some(n) = d[key].as_u64() {
            facts.push(format!("{what}: {n}"));
        }
    }
    if let [Some(before), Some(after)] = [d["eval_loss_before"].as_f64(), d["eval_loss"].as_f64()] {
        facts.push(format!("held-out Dolly loss: {before:.3} → {after:.3}"));
    }
    if let Some(s) = d["sparsity"]["pruned_tensors"].as_f64() {
        facts.push(format!("sparsity of the pruned matrices: {:.0}%", 100.0 * s));
    }
    for f in facts {
        writeln!(md, "- {f}")?;
    }
    writeln!(md, "\nEvery setting is in the study's `manifest.json` (the configs, verbatim).\n")?;
    writeln!(md, "## Use\n")?;
    let here = dir.display();
    if adapter {
        writeln!(
            md,
            "```python\nfrom peft import AutoPeftModelForCausalLM\nfrom transformers import AutoTokenizer\n\n\
             model = AutoPeftModelForCausalLM.from_pretrained(\"{here}\")  # loads google/gemma-3-270m too\n\
             tok = AutoTokenizer.from_pretrained(\"google/gemma-3-270m\")\n\
             ids = tok.apply_chat_template([{{\"role\": \"user\", \"content\": \"Who are you?\"}}], add_generation_prompt=True, return_tensors=\"pt\", return_dict=True)\n\
             print(tok.decode(model.generate(**ids, max_new_tokens=64)[0]))\n```"
        )?;
    } else {
        writeln!(
            md,
            "```python\nfrom transformers import pipeline\n\n\
             chat = pipeline(\"text-generation\", model=\"{here}\")\n\
             print(chat([{{\"role\": \"user\", \"content\": \"Who are you?\"}}], max_new_tokens=64))\n```"
        )?;
    }
    writeln!(md, "\nOr with sweelol: `cargo xtask generate --{} {here} --chat \"Who are you?\"`.", if adapter { "adapter" } else { "model" })?;
    Ok(md)
}

/// Writes the card of every trained row (first seed) into its result folder.
pub fn write_cards(report: &Report, results: &[RowResult]) -> Result<()> {
    for row in &report.rows {
        let Some(result) = results.iter().find(|r| r.row == row.row) else { continue };
        let Some(dir) = result_dir(result) else { continue };
        let path = dir.join(MODEL_CARD);
        let text = card(report, row, result, &dir)?;
        sweelol_outdir::write_atomic(&path, text.as_bytes()).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
