//! `cargo xtask train --config configs/<technique>.toml`: read a run config and hand it to
//! the crate of its technique. The study calls [`run_config`] for its training rows.

use std::path::{Path, PathBuf};

use anyhow::Context;
use sweelol_backend::BackendKind;
use sweelol_train::{RunConfig, RunReport, Technique};

/// What a training stage leaves for evaluation: a model source (transformers dir or the
/// base model) and, for adapter techniques, the adapter directory.
pub struct TrainOutput {
    pub details: serde_json::Value,
    pub model_source: String,
    pub adapter: Option<PathBuf>,
}

/// Runs one config with its technique crate.
pub fn run_config(cfg: &RunConfig, backend: &BackendKind) -> anyhow::Result<TrainOutput> {
    let ctx = || format!("{} from {}", cfg.technique, cfg.file.display());
    let (report, is_adapter): (RunReport, bool) = match cfg.technique {
        Technique::FullFinetune => (sweelol_full_finetune::run(cfg, backend).with_context(ctx)?, false),
        Technique::Lora => (sweelol_lora::run(cfg, backend).with_context(ctx)?, true),
        Technique::PromptTuning => (sweelol_prompt_tuning::run(cfg, backend).with_context(ctx)?, true),
        Technique::Pruning => (sweelol_pruning::run(cfg, backend).with_context(ctx)?, false),
        Technique::Distill => (sweelol_distill::run(cfg, backend).with_context(ctx)?, false),
    };
    let mut details = serde_json::to_value(&report)?;
    // Pruned models carry their sparsity report; put it in the record too.
    let sparsity = report.artifact_dir.join(sweelol_pruning::REPORT_FILE);
    if let Ok(text) = std::fs::read_to_string(&sparsity) {
        details["sparsity"] = serde_json::from_str::<serde_json::Value>(&text)?["overall_sparsity"].clone();
    }
    Ok(if is_adapter {
        TrainOutput { details, model_source: cfg.model.source.clone(), adapter: Some(report.artifact_dir) }
    } else {
        TrainOutput { details, model_source: report.artifact_dir.to_string_lossy().into_owned(), adapter: None }
    })
}

/// Reads the TOML at `config_path`, runs its technique on `backend`, and prints where the
/// outputs went.
pub fn run_train(config_path: &Path, backend: &BackendKind) -> anyhow::Result<()> {
    let cfg = RunConfig::load(config_path)?;
    let out = run_config(&cfg, backend)?;
    println!("{}", serde_json::to_string_pretty(&out.details)?);
    match &out.adapter {
        Some(a) => println!("adapter: {} (base {})", a.display(), out.model_source),
        None => println!("model: {}", out.model_source),
    }
    Ok(())
}

/// Points every output of `cfg` into `row_dir` (so study rows never collide with each
/// other or with hand-run configs) and sets the distillation teacher.
pub fn redirect_outputs(cfg: &mut RunConfig, row_dir: &Path, teacher: Option<&Path>) -> anyhow::Result<()> {
    let set = |table: &mut Option<toml::Table>, key: &str, value: &Path| {
        table
            .get_or_insert_with(toml::Table::new)
            .insert(key.to_string(), toml::Value::String(value.to_string_lossy().into_owned()));
    };
    cfg.output.dir = row_dir.join("train");
    match cfg.technique {
        Technique::FullFinetune => set(&mut cfg.full_finetune, "export_dir", &row_dir.join("model")),
        Technique::Lora => set(&mut cfg.lora, "adapter_dir", &row_dir.join("adapter")),
        Technique::PromptTuning => set(&mut cfg.prompt_tuning, "adapter_dir", &row_dir.join("adapter")),
        Technique::Pruning => set(&mut cfg.pruning, "export_dir", &row_dir.join("model")),
        Technique::Distill => {
            set(&mut cfg.pruning, "export_dir", &row_dir.join("model"));
            let teacher = teacher.context("KD-Pruned needs the Full-Finetune model as teacher; run that row first")?;
            set(&mut cfg.distill, "teacher", teacher);
        }
    }
    Ok(())
}
