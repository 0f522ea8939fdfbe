//! What a study is, as data: its rows, the preset that configures them, and what each
//! finished stage records. Shared by the orchestrator (`study.rs`) and the report.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use sweelol_eval::EvalSummary;

/// The seven rows of the study, in the order they run: a row's dependencies come first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, clap::ValueEnum)]
pub enum Row {
    Baseline,
    PrunedBaseline,
    PromptTune,
    FullFinetune,
    Lora,
    FinetunedPruned,
    KdPruned,
}

impl Row {
    pub const ALL: [Row; 7] = [
        Row::Baseline,
        Row::PrunedBaseline,
        Row::PromptTune,
        Row::FullFinetune,
        Row::Lora,
        Row::FinetunedPruned,
        Row::KdPruned,
    ];

    /// The study's row label.
    pub fn label(self) -> &'static str {
        match self {
            Row::Baseline => "Baseline",
            Row::PrunedBaseline => "Pruned-Baseline",
            Row::PromptTune => "Prompt-Tune",
            Row::FullFinetune => "Full-Finetune",
            Row::Lora => "LoRA",
            Row::FinetunedPruned => "Finetuned-Pruned",
            Row::KdPruned => "KD-Pruned",
        }
    }

    /// The rows whose results this row starts from: KD-Pruned distils the Full-Finetune
    /// model into the Pruned-Baseline model (keeping its masks).
    pub fn depends_on(self) -> &'static [Row] {
        match self {
            Row::KdPruned => &[Row::PrunedBaseline, Row::FullFinetune],
            _ => &[],
        }
    }

    /// The row's folder under the study's run directory.
    pub fn dir_name(self) -> &'static str {
        match self {
            Row::Baseline => "baseline",
            Row::PrunedBaseline => "pruned-baseline",
            Row::PromptTune => "prompt-tune",
            Row::FullFinetune => "full-finetune",
            Row::Lora => "lora",
            Row::FinetunedPruned => "finetuned-pruned",
            Row::KdPruned => "kd-pruned",
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EvalSection {
    pub tasks: Vec<String>,
    pub limit: usize,
    #[serde(default)]
    pub num_fewshot: usize,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RowConfigs {
    pub pruning: PathBuf,
    pub prompt_tune: PathBuf,
    pub full_finetune: PathBuf,
    pub lora: PathBuf,
    pub finetuned_pruned: PathBuf,
    pub kd_pruned: PathBuf,
}

/// Knobs applied on top of every row's technique config.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Overrides {
    pub n_train: Option<usize>,
    pub max_len: Option<usize>,
    pub epochs: Option<usize>,
    pub max_steps: Option<usize>,
    pub batch_size: Option<usize>,
}

impl Overrides {
    /// Sets the overridden knobs of a row's run config.
    pub fn apply(&self, cfg: &mut sweelol_train::RunConfig) {
        if let Some(n) = self.n_train {
            cfg.data.n_train = n;
        }
        if let Some(n) = self.max_len {
            cfg.data.max_len = n;
        }
        if let Some(n) = self.epochs {
            cfg.train.epochs = n;
        }
        if self.max_steps.is_some() {
            cfg.train.max_steps = self.max_steps;
        }
        if let Some(n) = self.batch_size {
            cfg.train.batch_size = n;
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Preset {
    pub name: String,
    pub eval: EvalSection,
    pub rows: RowConfigs,
    #[serde(default)]
    pub overrides: Overrides,
    #[serde(skip)]
    pub file: PathBuf,
}

impl Preset {
    pub fn load(path: &Path) -> Result<Preset> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let mut p: Preset = toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        for p in [
            &mut p.rows.pruning,
            &mut p.rows.prompt_tune,
            &mut p.rows.full_finetune,
            &mut p.rows.lora,
            &mut p.rows.finetuned_pruned,
            &mut p.rows.kd_pruned,
        ] {
            *p = base.join(&*p);
        }
        p.file = path.to_path_buf();
        Ok(p)
    }

    /// The technique config file of a training row (`None` for Baseline).
    pub fn row_config(&self, row: Row) -> Option<&Path> {
        Some(match row {
            Row::Baseline => return None,
            Row::PrunedBaseline => &self.rows.pruning,
            Row::PromptTune => &self.rows.prompt_tune,
            Row::FullFinetune => &self.rows.full_finetune,
            Row::Lora => &self.rows.lora,
            Row::FinetunedPruned => &self.rows.finetuned_pruned,
            Row::KdPruned => &self.rows.kd_pruned,
        })
    }
}

/// What a finished stage recorded.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StageRecord {
    pub hash: String,
    pub seconds: f64,
    /// Technique report (trainable params, losses, sparsity …) as JSON.
    pub details: serde_json::Value,
    /// The model to evaluate: a source and an optional adapter directory.
    pub model_source: String,
    pub adapter: Option<PathBuf>,
}

/// One row's outcome for the report.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RowResult {
    pub row: Row,
    pub train: Option<StageRecord>,
    pub eval: EvalSummary,
    pub eval_dir: PathBuf,
    pub eval_seconds: f64,
}

