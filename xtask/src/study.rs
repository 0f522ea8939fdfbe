//! `cargo xtask study`: train what needs training, evaluate all seven rows, write the table.
//!
//! Every stage records its identity (`stage-train.json`, `stage-eval.json`): a training
//! stage's is the hash of its own typed config and of the stages it starts from, so a stage
//! whose record matches is never redone, a changed row is redone together with the rows
//! built on it, and an interrupted one resumes (training from its last checkpoint,
//! evaluation from its last finished document).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use burn::tensor::Device;
use serde::{Deserialize, Serialize};
use sweelol_eval::{evaluate, format_table, EvalOptions, EvalSummary, Scorer};

use crate::config::{self, TechniqueConfig, TechniqueRun};
use crate::model_loading::load_model;
use crate::preset::{Preset, Row, RowResult, StageRecord};
use crate::report;

/// Which model a row's per-document eval outputs belong to, and the seconds spent on them
/// over every invocation (so a resumed row still reports its real eval time).
#[derive(Clone, Debug, Serialize, Deserialize)]
struct EvalStage {
    /// The training stage's identity, or the base model's source for Baseline.
    model: String,
    seconds: f64,
}

/// Files in a row's directory recording its finished stages.
const TRAIN_STAGE: &str = "stage-train.json";
const EVAL_STAGE: &str = "stage-eval.json";

/// Finished training stages by row, for the rows built on them.
type Trained = BTreeMap<Row, StageRecord>;

/// The identity of the model a row evaluates: its training stage's, or for Baseline the
/// base model's source.
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

/// The rows this invocation runs: all, or the one asked for and what it is built on.
fn rows_to_run(only: Option<Row>) -> BTreeSet<Row> {
    match only {
        None => Row::ALL.into_iter().collect(),
        Some(row) => {
            let mut rows = BTreeSet::from([row]);
            let mut todo = vec![row];
            while let Some(r) = todo.pop() {
                for &dep in r.depends_on() {
                    if rows.insert(dep) {
                        todo.push(dep);
                    }
                }
            }
            rows
        }
    }
}

/// A training row's run config as the study runs it (the file's, with the preset's
/// overrides, outputs under `row_dir`, and its inputs taken from the rows it depends on),
/// and the stage's identity: the hash of that config with those inputs replaced by the
/// identities of the stages that produced them, so moving the results folder changes
/// nothing and retraining a dependency retrains this row.
fn row_run_config(preset: &Preset, row: Row, row_dir: &Path, trained: &Trained) -> Result<(TechniqueRun, String)> {
    let path = preset.row_config(row).expect("training row");
    let mut cfg = config::load(path).with_context(|| format!("{} config", row.label()))?;
    preset.overrides.apply(&mut cfg.run);
    crate::train::redirect_outputs(&mut cfg, row_dir);
    let deps: Vec<&StageRecord> = row
        .depends_on()
        .iter()
        .map(|d| {
            trained.get(d).with_context(|| format!("{} is built on {}, which has not been trained", row.label(), d.label()))
        })
        .collect::<Result<_>>()?;
    if row != Row::KdPruned {
        let id = cfg.hash();
        return Ok((cfg, id));
    }
    // KD-Pruned: the Pruned-Baseline model (and its masks) learns from Full-Finetune.
    let (student, teacher) = (deps[0], deps[1]);
    let set_inputs = |cfg: &mut TechniqueRun, source: String, masks: PathBuf, teacher: String| -> Result<()> {
        let TechniqueConfig::Distill(distill) = &mut cfg.technique else {
            bail!("{}: KD-Pruned needs technique = \"distill\"", path.display());
        };
        cfg.run.model.source = source;
        distill.masks = Some(masks);
        distill.teacher = Some(teacher);
        Ok(())
    };
    let mut identity = cfg.clone();
    let student_dir = Path::new(&student.model_source);
    set_inputs(&mut cfg, student.model_source.clone(), student_dir.join(sweelol_pruning::MASKS_FILE), teacher.model_source.clone())?;
    let stage = |row: Row| format!("stage:{}", row.dir_name());
    set_inputs(&mut identity, stage(Row::PrunedBaseline), stage(Row::PrunedBaseline).into(), stage(Row::FullFinetune))?;
    let id = sweelol_train::config::hex_sha256(format!("{}|{}|{}", identity.hash(), student.hash, teacher.hash).as_bytes());
    Ok((cfg, id))
}

/// Runs the study described by `preset_path` into `results/<name>/` on `device`.
pub fn run_study(preset_path: &Path, only: Option<Row>, device: &Device, backend: &str, results_root: &Path) -> Result<()> {
    let preset = Preset::load(preset_path)?;
    // Absolute, so every output path recorded in a stage is usable from anywhere.
    let run_dir = std::path::absolute(results_root)?.join(&preset.name);
    std::fs::create_dir_all(&run_dir)?;
    let started = Instant::now();
    let base_source = config::load(&preset.rows.full_finetune)?.run.model.source;
    let to_run = rows_to_run(only);
    let mut trained = Trained::new();
    let mut results: BTreeMap<Row, RowResult> = BTreeMap::new();

    for row in Row::ALL {
        let row_dir = run_dir.join(row.dir_name());
        std::fs::create_dir_all(&row_dir)?;
        if !to_run.contains(&row) {
            // Not run now; its earlier results still go into the table if they are current.
            if let Some(done) = finished_row(&preset, row, &row_dir, &trained, &base_source) {
                if let Some(t) = &done.train {
                    trained.insert(row, t.clone());
                }
                results.insert(row, done);
            }
            continue;
        }
        eprintln!("== {} ==", row.label());
        let (train, trained_now) = match row {
            Row::Baseline => (None, false),
            _ => {
                let (rec, now) = train_stage(&preset, row, &row_dir, &trained, device)?;
                trained.insert(row, rec.clone());
                (Some(rec), now)
            }
        };
        if only.is_some_and(|o| o != row) {
            continue; // trained as a dependency of the row asked for, not evaluated
        }
        let result = eval_stage(&preset, row, &row_dir, train, trained_now, &base_source, device)?;
        results.insert(row, result);
    }
    if results.values().all(|r| r.eval.tasks.is_empty()) {
        bail!("no row was evaluated");
    }
    report::write_report(&run_dir, &preset, backend, &results, started.elapsed().as_secs_f64())?;
    println!("study `{}` written to {}", preset.name, run_dir.display());
    println!("{}", std::fs::read_to_string(run_dir.join("table.md"))?);
    Ok(())
}

/// Stage 1 of a training row: train (or prune) unless a record of the same identity
/// exists. Returns the record and whether it was trained now.
fn train_stage(preset: &Preset, row: Row, row_dir: &Path, trained: &Trained, device: &Device) -> Result<(StageRecord, bool)> {
    let (cfg, hash) = row_run_config(preset, row, row_dir, trained)?;
    let stage_path = row_dir.join(TRAIN_STAGE);
    let previous = read_stage::<StageRecord>(&stage_path);
    if let Some(rec) = previous.as_ref().filter(|r| r.hash == hash) {
        eprintln!("{}: trained earlier (same config and inputs), skipping", row.label());
        return Ok((rec.clone(), false));
    }
    if previous.is_some() {
        // Finished under another config or from other inputs: its checkpoints cannot be
        // resumed, and its model is about to be replaced.
        eprintln!("{}: its config or inputs changed since it was trained; training again", row.label());
        std::fs::remove_file(&stage_path).ok();
        let old = &cfg.run.output.dir;
        if old.exists() {
            std::fs::remove_dir_all(old).with_context(|| format!("removing {}", old.display()))?;
        }
    }
    let t0 = Instant::now();
    let out = crate::train::run_technique(&cfg, device)?;
    let rec = StageRecord {
        hash,
        seconds: t0.elapsed().as_secs_f64(),
        details: out.details,
        model_source: out.model_source,
        adapter: out.adapter,
    };
    write_stage(&stage_path, &rec)?;
    Ok((rec, true))
}

/// Stage 2 of a row: evaluate its model (resuming per document when the per-document
/// results on disk belong to the same model).
fn eval_stage(
    preset: &Preset,
    row: Row,
    row_dir: &Path,
    train: Option<StageRecord>,
    trained_now: bool,
    base_source: &str,
    device: &Device,
) -> Result<RowResult> {
    let (source, adapter) = match &train {
        None => (base_source.to_string(), None),
        Some(t) => (t.model_source.clone(), t.adapter.clone()),
    };
    let eval_dir = row_dir.join("eval");
    let model_id = eval_model_id(train.as_ref(), base_source);
    let eval_stage_path = row_dir.join(EVAL_STAGE);
    let previous = read_stage::<EvalStage>(&eval_stage_path);
    let stale = trained_now || previous.as_ref().is_some_and(|p| p.model != model_id);
    if stale && eval_dir.exists() {
        eprintln!("{}: the model changed since its last evaluation; evaluating again", row.label());
        std::fs::remove_dir_all(&eval_dir).with_context(|| format!("removing {}", eval_dir.display()))?;
    }
    let earlier_seconds = previous.filter(|_| !stale).map_or(0.0, |p| p.seconds);
    let t0 = Instant::now();
    let loaded = load_model(&source, adapter.as_deref(), false, device)?;
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
    Ok(RowResult { row, train, eval: summary, eval_dir, eval_seconds })
}

/// A row that an earlier invocation finished, read back from `row_dir`, or `None` if it is
/// missing or stale (its config, its inputs or the eval settings changed since).
fn finished_row(preset: &Preset, row: Row, row_dir: &Path, trained: &Trained, base_source: &str) -> Option<RowResult> {
    let train = match row {
        Row::Baseline => None,
        _ => {
            let (_, hash) = row_run_config(preset, row, row_dir, trained).ok()?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_row_runs_it_with_what_it_is_built_on() {
        assert_eq!(rows_to_run(Some(Row::Lora)), BTreeSet::from([Row::Lora]));
        assert_eq!(
            rows_to_run(Some(Row::KdPruned)),
            BTreeSet::from([Row::PrunedBaseline, Row::FullFinetune, Row::KdPruned])
        );
        assert_eq!(rows_to_run(None).len(), 7);
        // Dependencies always run earlier in the study's order.
        for row in Row::ALL {
            assert!(row.depends_on().iter().all(|d| *d < row), "{row:?}");
        }
    }

    fn record(hash: &str, source: &str) -> StageRecord {
        StageRecord {
            hash: hash.into(),
            seconds: 0.0,
            details: serde_json::Value::Null,
            model_source: source.into(),
            adapter: None,
        }
    }

    #[test]
    fn kd_identity_follows_its_inputs_not_their_paths() {
        let preset = Preset::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/study/default.toml")).unwrap();
        let kd = |pruned: &str, teacher: &str, dir: &str| {
            let trained = Trained::from([
                (Row::PrunedBaseline, record(pruned, &format!("{dir}/pruned-baseline/model"))),
                (Row::FullFinetune, record(teacher, &format!("{dir}/full-finetune/model"))),
            ]);
            row_run_config(&preset, Row::KdPruned, Path::new(&format!("{dir}/kd-pruned")), &trained).unwrap()
        };
        let (cfg, id) = kd("p1", "t1", "/a");
        let TechniqueConfig::Distill(d) = &cfg.technique else { panic!() };
        assert_eq!(cfg.run.model.source, "/a/pruned-baseline/model", "the student is the pruned model");
        assert_eq!(d.teacher.as_deref(), Some("/a/full-finetune/model"));
        assert_eq!(d.masks.as_deref(), Some(Path::new("/a/pruned-baseline/model/pruning_masks.safetensors")));
        assert_eq!(kd("p1", "t1", "/elsewhere").1, id, "moving the results folder changes nothing");
        assert_ne!(kd("p1", "t2", "/a").1, id, "a retrained teacher retrains KD");
        assert_ne!(kd("p2", "t1", "/a").1, id, "a re-pruned student retrains KD");
        // Without its inputs, KD cannot be configured.
        let err = row_run_config(&preset, Row::KdPruned, Path::new("/a/kd"), &Trained::new()).unwrap_err();
        assert!(err.to_string().contains("Pruned-Baseline"), "{err}");
    }
}
