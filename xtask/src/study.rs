//! `cargo xtask study`: train what needs training, evaluate all seven rows, write the table.
//!
//! Every stage records `stage.json` with the hash of what decides its result; a stage whose
//! record matches is never redone, and an interrupted one resumes (training from its last
//! checkpoint, evaluation from its last finished document).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use sweelol_backend::BackendKind;
use sweelol_eval::{evaluate, format_table, EvalOptions, EvalSummary, Scorer};
use sweelol_train::RunConfig;

use crate::model_loading::load_model;
use crate::report;

/// The seven rows of the study, in the order they run (KD needs the Full-Finetune teacher).
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

    fn dir_name(self) -> &'static str {
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

    fn row_config(&self, row: Row) -> Option<&Path> {
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

/// Which model a row's per-document eval outputs belong to, and the seconds spent on them
/// over every invocation (so a resumed row still reports its real eval time).
#[derive(Clone, Debug, Serialize, Deserialize)]
struct EvalStage {
    /// The training stage's config hash, or the base model's source for Baseline.
    model: String,
    seconds: f64,
}

/// Files in a row's directory recording its finished stages.
const TRAIN_STAGE: &str = "stage-train.json";
const EVAL_STAGE: &str = "stage-eval.json";

/// The identity of the model a row evaluates: its training config hash, or for Baseline
/// the base model's source.
fn eval_model_id(train: Option<&StageRecord>, base_source: &str) -> String {
    train.map_or_else(|| base_source.to_string(), |t| t.hash.clone())
}

fn read_stage<T: serde::de::DeserializeOwned>(path: &Path) -> Option<T> {
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

fn write_stage<T: Serialize>(path: &Path, rec: &T) -> Result<()> {
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_string_pretty(rec)?)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
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

/// Prepares a row's run config: the file's, with the study's output dir, overrides and teacher.
fn row_run_config(preset: &Preset, row: Row, row_dir: &Path, teacher: Option<&Path>) -> Result<RunConfig> {
    let path = preset.row_config(row).expect("training row");
    let mut cfg = RunConfig::load(path).with_context(|| format!("{} config", row.label()))?;
    let o = &preset.overrides;
    if let Some(n) = o.n_train {
        cfg.data.n_train = n;
    }
    if let Some(n) = o.max_len {
        cfg.data.max_len = n;
    }
    if let Some(n) = o.epochs {
        cfg.train.epochs = n;
    }
    if o.max_steps.is_some() {
        cfg.train.max_steps = o.max_steps;
    }
    if let Some(n) = o.batch_size {
        cfg.train.batch_size = n;
    }
    crate::train::redirect_outputs(&mut cfg, row_dir, teacher)?;
    Ok(cfg)
}

/// Runs the study described by `preset_path` into `results/<name>/`.
pub fn run_study(preset_path: &Path, only: Option<Row>, backend: &BackendKind, results_root: &Path) -> Result<()> {
    let preset = Preset::load(preset_path)?;
    // Absolute, so technique tables (resolved against their config file) land here too.
    let run_dir = std::path::absolute(results_root)?.join(&preset.name);
    std::fs::create_dir_all(&run_dir)?;
    let started = Instant::now();
    let mut results: BTreeMap<Row, RowResult> = BTreeMap::new();
    let base_source = RunConfig::load(&preset.rows.full_finetune)?.model.source.clone();
    let device = backend.device();

    for row in Row::ALL {
        let row_dir = run_dir.join(row.dir_name());
        std::fs::create_dir_all(&row_dir)?;
        let selected = only.map_or(true, |o| o == row);
        // KD needs the teacher even when only KD was asked for.
        let needed_as_teacher = only == Some(Row::KdPruned) && row == Row::FullFinetune;
        let teacher = results
            .get(&Row::FullFinetune)
            .and_then(|r| r.train.as_ref())
            .map(|t| PathBuf::from(&t.model_source));
        if !selected && !needed_as_teacher {
            // Not run now; its earlier results still go into the table if they are current.
            if let Some(done) = finished_row(&preset, row, &row_dir, teacher.as_deref(), &base_source) {
                results.insert(row, done);
            }
            continue;
        }
        eprintln!("== {} ==", row.label());

        // Stage 1: train (or prune).
        let mut trained_now = false;
        let train = match row {
            Row::Baseline => None,
            _ => {
                let cfg = row_run_config(&preset, row, &row_dir, teacher.as_deref())?;
                let hash = cfg.hash();
                let stage_path = row_dir.join(TRAIN_STAGE);
                match read_stage::<StageRecord>(&stage_path) {
                    Some(rec) if rec.hash == hash => {
                        eprintln!("{}: trained earlier (same config hash), skipping", row.label());
                        Some(rec)
                    }
                    previous => {
                        if previous.is_some() {
                            // Finished under another config: its checkpoints cannot be resumed
                            // under this one, and its model is about to be replaced.
                            eprintln!("{}: config changed since it was trained; training again", row.label());
                            std::fs::remove_file(&stage_path).ok();
                            let old = &cfg.output.dir;
                            if old.exists() {
                                std::fs::remove_dir_all(old).with_context(|| format!("removing {}", old.display()))?;
                            }
                        }
                        let t0 = Instant::now();
                        let out = crate::train::run_config(&cfg, backend)?;
                        trained_now = true;
                        let rec = StageRecord {
                            hash,
                            seconds: t0.elapsed().as_secs_f64(),
                            details: out.details,
                            model_source: out.model_source,
                            adapter: out.adapter,
                        };
                        write_stage(&stage_path, &rec)?;
                        Some(rec)
                    }
                }
            }
        };
        if needed_as_teacher {
            results.insert(row, RowResult { row, train, eval: empty_summary(), eval_dir: PathBuf::new(), eval_seconds: 0.0 });
            continue;
        }

        // Stage 2: evaluate (resumes per document).
        let (source, adapter) = match &train {
            None => (base_source.clone(), None),
            Some(t) => (t.model_source.clone(), t.adapter.clone()),
        };
        let eval_dir = row_dir.join("eval");
        // Per-document results resume only onto the model that produced them: a row trained
        // again (its config changed) is evaluated from scratch.
        let model_id = eval_model_id(train.as_ref(), &base_source);
        let eval_stage_path = row_dir.join(EVAL_STAGE);
        let previous = read_stage::<EvalStage>(&eval_stage_path);
        let stale = trained_now || previous.as_ref().is_some_and(|p| p.model != model_id);
        if stale && eval_dir.exists() {
            eprintln!("{}: the model changed since its last evaluation; evaluating again", row.label());
            std::fs::remove_dir_all(&eval_dir).with_context(|| format!("removing {}", eval_dir.display()))?;
        }
        let earlier_seconds = previous.filter(|_| !stale).map_or(0.0, |p| p.seconds);
        let t0 = Instant::now();
        let loaded = load_model(&source, adapter.as_deref(), false, &device)?;
        let mut scorer = Scorer::new(&loaded.model, &loaded.tokenizer);
        scorer.prefix = loaded.prefix.clone();
        let opts = EvalOptions {
            tasks: preset.eval.tasks.clone(),
            limit: Some(preset.eval.limit),
            num_fewshot: preset.eval.num_fewshot,
            data_root: crate::default_data_root(),
            out_dir: eval_dir.clone(),
            show_progress: true,
        };
        let mut summary = evaluate(&scorer, &opts).with_context(|| format!("evaluating {}", row.label()))?;
        let eval_seconds = earlier_seconds + t0.elapsed().as_secs_f64();
        write_stage(&eval_stage_path, &EvalStage { model: model_id, seconds: eval_seconds })?;
        set_eval_rate(&mut summary, eval_seconds);
        eprintln!("{}", format_table(&summary));
        results.insert(row, RowResult { row, train, eval: summary, eval_dir, eval_seconds });
    }
    if results.values().all(|r| r.eval.tasks.is_empty()) {
        bail!("no row was evaluated");
    }
    report::write_report(&run_dir, &preset, backend, &results, started.elapsed().as_secs_f64())?;
    println!("study `{}` written to {}", preset.name, run_dir.display());
    println!("{}", std::fs::read_to_string(run_dir.join("table.md"))?);
    Ok(())
}

/// A row that an earlier invocation finished, read back from `row_dir`, or `None` if it is
/// missing or stale (its training config or the eval settings changed since).
fn finished_row(preset: &Preset, row: Row, row_dir: &Path, teacher: Option<&Path>, base_source: &str) -> Option<RowResult> {
    let train = match row {
        Row::Baseline => None,
        _ => {
            let hash = row_run_config(preset, row, row_dir, teacher).ok()?.hash();
            Some(read_stage::<StageRecord>(&row_dir.join(TRAIN_STAGE)).filter(|r| r.hash == hash)?)
        }
    };
    let model_id = eval_model_id(train.as_ref(), base_source);
    let eval_dir = row_dir.join("eval");
    let mut eval: EvalSummary = read_stage(&eval_dir.join("summary.json"))?;
    // Results from before stage-eval.json existed are taken as they are.
    let seconds = match read_stage::<EvalStage>(&row_dir.join(EVAL_STAGE)) {
        Some(stage) if stage.model != model_id => return None,
        Some(stage) => stage.seconds,
        None => eval.seconds,
    };
    set_eval_rate(&mut eval, seconds);
    let tasks: Vec<&String> = eval.tasks.iter().map(|t| &t.task).collect();
    let same_settings = eval.limit == Some(preset.eval.limit)
        && eval.num_fewshot == preset.eval.num_fewshot
        && tasks == preset.eval.tasks.iter().collect::<Vec<_>>();
    same_settings.then_some(RowResult { row, train, eval, eval_dir, eval_seconds: seconds })
}

/// Docs/s over all the time a row's eval took, not only this invocation's share.
fn set_eval_rate(summary: &mut EvalSummary, seconds: f64) {
    let docs: usize = summary.tasks.iter().map(|t| t.n).sum();
    summary.docs_per_second = docs as f64 / seconds.max(1e-9);
}

fn empty_summary() -> EvalSummary {
    EvalSummary { tasks: vec![], mmlu_average: None, limit: None, num_fewshot: 0, seconds: 0.0, docs_per_second: 0.0 }
}
