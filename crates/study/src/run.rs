//! A study run: train what needs training, evaluate every row, write the report.
//!
//! A study is its preset's rows (`preset.rs`), each run once, or once per seed when it
//! trains. Every stage records its identity (`stage-train.json`, `stage-eval.json`):
//! a training stage's is the hash of its own typed config and of the identities of the
//! stages it starts from; an evaluation's adds the eval settings. A stage whose record
//! matches is never redone; a changed row is redone together with every row built on it;
//! an interrupted one resumes (training from its last checkpoint, evaluation from its last
//! finished document).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use burn::tensor::Device;
use serde::{Deserialize, Serialize};
use sweelol_eval::{evaluate, format_table, EvalError, EvalOptions, EvalSummary, Identity, Scorer};
use sweelol_dolly::DollyRecord;
use sweelol_gemma::Precision;
use sweelol_outdir::{DirLock, OutDirError, IDENTITY_FILE, LOCK_FILE};

use crate::answers::{self, Answers};
use crate::technique::{self, TechniqueRun};
use crate::model_loading::{load_model, LoadedModel};
use crate::preset::{DtypeChoice, Limit, Preset, RowResult, RowSpec, StageRecord};
use crate::rates::{self, Rates};
use crate::report;

/// What the command line asks of a study.
#[derive(Clone, Debug, Default)]
pub struct StudyOptions {
    /// Run only this row (and the rows it starts from); the report keeps the other rows'
    /// current results from disk.
    pub only: Option<String>,
    /// Train every training row once per seed (`train.seed`, and the technique's own
    /// initialisation seed); `None`: the seeds the configs give, once.
    pub seeds: Option<Vec<u64>>,
    /// Overrides the preset's eval limit.
    pub limit: Option<Limit>,
    /// Discard the run directory's earlier results when they were made under another
    /// identity (backend, dtype) instead of refusing.
    pub fresh: bool,
    /// For tests: return after this many stages ran (as if killed at a stage boundary).
    pub stop_after_stages: Option<usize>,
    /// What matrix products compute in, training and evaluation (overrides the preset's
    /// `[overrides] dtype`; default f32).
    pub dtype: Option<Precision>,
    /// `--set KEY=VALUE` changes to the preset file (`overrides.n_train=200`, `eval.limit=5`).
    pub sets: Vec<String>,
    /// Write the table from finished stages only, refusing when one is missing (the last
    /// job of a Slurm submission: it must never train).
    pub table_only: bool,
    /// A Slurm job's check that it sees the submitter's results folder: the token the
    /// submitter wrote in `<run dir>/slurm/marker`.
    pub marker: Option<String>,
}

/// What a stage of one row did in this invocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Action {
    Trained,
    TrainSkipped,
    Evaluated,
    EvalSkipped,
}

/// The result of one invocation: where it wrote, and what each stage did.
#[derive(Debug)]
pub struct StudyOutcome {
    pub run_dir: PathBuf,
    /// `(row key, action)` in the order they happened; the key is the row name, with
    /// `" seed N"` for seeded runs.
    pub actions: Vec<(String, Action)>,
    /// False when `stop_after_stages` ended the invocation early.
    pub finished: bool,
}

impl StudyOutcome {
    /// The runs (row keys) whose stage did `action`, in order.
    pub fn rows_that(&self, action: Action) -> Vec<&str> {
        self.actions.iter().filter(|(_, a)| *a == action).map(|(r, _)| r.as_str()).collect()
    }

    /// One line: which stages ran now and which were reused.
    pub fn summary(&self) -> String {
        let list = |want: Action| {
            let rows = self.rows_that(want);
            if rows.is_empty() { "none".to_string() } else { rows.join(", ") }
        };
        format!(
            "{} ({}): trained now: {}; evaluated now: {}; reused: {} trained, {} evaluated",
            self.run_dir.display(),
            if self.finished { "finished" } else { "stopped early" },
            list(Action::Trained),
            list(Action::Evaluated),
            self.actions.iter().filter(|(_, a)| *a == Action::TrainSkipped).count(),
            self.actions.iter().filter(|(_, a)| *a == Action::EvalSkipped).count(),
        )
    }
}

/// Which model a row's per-document eval outputs belong to and under which settings, and
/// the seconds spent on them over every invocation.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct EvalStage {
    /// The training stage's identity, or the base model's source for a row without one.
    model: String,
    /// Tasks, limit and few-shot count, as JSON.
    settings: serde_json::Value,
    seconds: f64,
}

/// Files in a row's directory recording its finished stages.
const TRAIN_STAGE: &str = "stage-train.json";
const EVAL_STAGE: &str = "stage-eval.json";

/// One run of a row: the row, its seed (for seeded runs) and its folder.
#[derive(Clone, Debug)]
struct RowRun<'a> {
    spec: &'a RowSpec,
    seed: Option<u64>,
    dir: PathBuf,
}

impl RowRun<'_> {
    fn key(&self) -> String {
        run_key(&self.spec.name, self.seed)
    }
}

fn run_key(name: &str, seed: Option<u64>) -> String {
    match seed {
        Some(s) => format!("{name} seed {s}"),
        None => name.to_string(),
    }
}

/// Finished training stages by run key, for the rows built on them.
type Trained = BTreeMap<String, StageRecord>;

fn read_stage<T: serde::de::DeserializeOwned>(path: &Path) -> Option<T> {
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

fn write_stage<T: Serialize>(path: &Path, rec: &T) -> Result<()> {
    sweelol_outdir::write_atomic(path, serde_json::to_string_pretty(rec)?.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

/// Whether a row's training depends on its seed: it trains, or it starts from a row that
/// does.
fn seeded_rows(preset: &Preset) -> Result<BTreeSet<String>> {
    let mut seeded = BTreeSet::new();
    for row in &preset.rows {
        let Some(path) = &row.config else { continue };
        let trains = technique::load(path)?.technique.trains();
        if trains || row.depends_on().any(|d| seeded.contains(d)) {
            seeded.insert(row.name.clone());
        }
    }
    Ok(seeded)
}

/// A row's technique config as the preset runs it: the file, with the preset's overrides.
fn configured(preset: &Preset, path: &Path) -> Result<TechniqueRun> {
    let mut cfg = technique::load(path)?;
    preset.overrides.apply(&mut cfg.run);
    Ok(cfg)
}

/// Whether training `spec` with seed `seed` is its config as written (with the preset's
/// overrides).
fn is_configured_seed(preset: &Preset, spec: &RowSpec, seed: u64) -> Result<bool> {
    let Some(path) = &spec.config else { return Ok(false) };
    let mut cfg = configured(preset, path)?;
    let as_written = cfg.hash();
    cfg.set_seed(seed);
    Ok(cfg.hash() == as_written)
}

/// The runs of the study, in row order.
fn plan<'a>(preset: &'a Preset, run_dir: &Path, seeds: Option<&[u64]>) -> Result<Vec<RowRun<'a>>> {
    let seeded = seeded_rows(preset)?;
    let mut runs = Vec::new();
    for spec in &preset.rows {
        let dir = run_dir.join(spec.dir_name());
        match seeds.filter(|_| seeded.contains(&spec.name)) {
            Some(seeds) => {
                for &s in seeds {
                    // The row's own seed is the run made without --seeds: same config, same
                    // folder, so it is reused rather than trained again.
                    let dir = if is_configured_seed(preset, spec, s)? { dir.clone() } else { dir.join(format!("seed-{s}")) };
                    runs.push(RowRun { spec, seed: Some(s), dir });
                }
            }
            None => runs.push(RowRun { spec, seed: None, dir }),
        }
    }
    Ok(runs)
}

/// The examples a training run goes through (steps x batch x accumulation) and the key of
/// its rate on this machine, for a row that trains.
fn training_work(preset: &Preset, run: &RowRun, backend: &str) -> Result<Option<(usize, String)>> {
    let Some(path) = &run.spec.config else { return Ok(None) };
    let cfg = configured(preset, path)?;
    if !cfg.technique.trains() {
        return Ok(None);
    }
    let (d, t) = (&cfg.run.data, &cfg.run.train);
    let examples = sweelol_train::trainer::total_steps(t, d.n_train) * t.batch_size * t.grad_accum.max(1);
    let key = rates::train_key(backend, t.dtype.as_str(), &cfg.technique.name().to_string(), d.max_len);
    Ok(Some((examples, key)))
}

/// Seconds the stages of `run` that are not finished will take here, from the rates this
/// results folder measured; `None` when one of them has no measurement yet.
fn estimate(preset: &Preset, run: &RowRun, trained: &Trained, rates: &Rates, backend: &str, docs_per_row: usize) -> Result<Option<f64>> {
    let mut seconds = 0.0;
    if finished_training(preset, run, trained).is_none() {
        if let Some((examples, key)) = training_work(preset, run, backend)? {
            let Some(s) = rates.train_seconds(&key, examples) else { return Ok(None) };
            seconds += s;
        }
    }
    // A run's scores count as finished only with its training (`finished_run`).
    if finished_run(preset, run, trained, &[]).is_none() {
        let key = rates::eval_key(backend, preset.eval.dtype.as_str(), &preset.eval.tasks);
        let Some(s) = rates.eval_seconds(&key, docs_per_row) else { return Ok(None) };
        seconds += s;
    }
    Ok(Some(seconds))
}

/// What the study is about to do, row by row: training examples, epochs and steps (from
/// each row's config with the preset's overrides), documents to score, and how long the
/// stages still to run will take at this machine's measured rates. Finished stages are
/// reused when the study reaches them.
fn plan_text(
    preset: &Preset,
    runs: &[RowRun],
    to_run: &BTreeSet<String>,
    docs_per_row: usize,
    rates: &Rates,
    backend: &str,
) -> Result<String> {
    use std::fmt::Write;
    let mut out = format!("plan ({} runs; finished stages are reused):\n", runs.len());
    let trained = trained_on_disk(preset, runs);
    let (mut total, mut unknown, mut estimated) = (0.0, Vec::new(), 0);
    for run in runs.iter().filter(|r| to_run.contains(&r.spec.name)) {
        let est = estimate(preset, run, &trained, rates, backend, docs_per_row)?;
        let training = match &run.spec.config {
            None => String::new(),
            Some(path) => {
                let cfg = configured(preset, path)?;
                let (d, t) = (&cfg.run.data, &cfg.run.train);
                if !cfg.technique.trains() {
                    "prune; ".to_string()
                } else {
                    let steps = sweelol_train::trainer::total_steps(t, d.n_train);
                    format!(
                        "train {} examples x {} epoch(s) of <= {} tokens ({steps} steps of {} x {}, {}); ",
                        d.n_train, t.epochs, d.max_len, t.batch_size, t.grad_accum.max(1), t.dtype
                    )
                }
            }
        };
        let when = match est {
            Some(0.0) => " — finished".to_string(),
            Some(s) => format!(" — est. {}", rates::human(s)),
            None => String::new(),
        };
        writeln!(out, "  {:<24} {training}score {docs_per_row} documents ({}){when}", run.key(), preset.eval.dtype)?;
        match est {
            Some(s) => (total, estimated) = (total + s, estimated + 1),
            None => unknown.push(run.key()),
        }
    }
    match (unknown.is_empty(), estimated > 0) {
        (true, _) => writeln!(out, "estimated time here: {} (rates measured by earlier stages on this machine)", rates::human(total))?,
        (false, false) => writeln!(
            out,
            "estimated time here: not known yet (no stage of this plan has run on this machine with these settings; each finished stage records its rate in rates.json beside the study)"
        )?,
        (false, true) => writeln!(
            out,
            "estimated time here: {} for the stages with a measured rate, plus {} (not run on this machine with these settings yet; a finished stage records its rate)",
            rates::human(total),
            unknown.join(", ")
        )?,
    }
    Ok(out)
}

/// Records what the stages of `run` that ran now measured: seconds per training example (a
/// training run that resumed took only part of the time, so it is left out) and seconds
/// per scored document.
fn record_rates(preset: &Preset, run: &RowRun, result: &RowResult, trained_now: bool, evaluated: bool, backend: &str, root: &Path) -> Result<()> {
    if let (true, Some(rec), Some((examples, key))) = (trained_now, &result.train, training_work(preset, run, backend)?) {
        if rec.details["resumed_from"].is_null() {
            Rates::record_train(root, key, rec.seconds, examples);
        }
    }
    if evaluated {
        let docs: usize = result.eval.tasks.iter().map(|t| t.n).sum();
        Rates::record_eval(root, rates::eval_key(backend, preset.eval.dtype.as_str(), &preset.eval.tasks), result.eval_seconds, docs);
    }
    Ok(())
}

/// The rows this invocation runs: all, or the one asked for and what it is built on.
fn rows_to_run(preset: &Preset, only: Option<&str>) -> Result<BTreeSet<String>> {
    let Some(name) = only else { return Ok(preset.rows.iter().map(|r| r.name.clone()).collect()) };
    let mut rows = BTreeSet::from([preset.row(name)?.name.clone()]);
    let mut todo = vec![name.to_string()];
    while let Some(r) = todo.pop() {
        for dep in preset.row(&r)?.depends_on() {
            if rows.insert(dep.to_string()) {
                todo.push(dep.to_string());
            }
        }
    }
    Ok(rows)
}

/// The stage record a run starts from, for a dependency `dep` of `run`.
fn dependency<'t>(trained: &'t Trained, run: &RowRun, dep: &str) -> Result<&'t StageRecord> {
    trained
        .get(&run_key(dep, run.seed))
        .or_else(|| trained.get(dep))
        .with_context(|| format!("{} is built on {dep}, which has not been trained", run.key()))
}

/// A training run's config as the study runs it (the file's, with the preset's overrides,
/// the run's seed, outputs under its folder and its inputs taken from the rows it starts
/// from), and the stage's identity: the hash of that config with those inputs replaced by
/// the names of the rows that produced them, plus those rows' identities. So moving the
/// results folder changes nothing, and retraining a row retrains the rows built on it.
fn row_run_config(preset: &Preset, run: &RowRun, trained: &Trained) -> Result<(TechniqueRun, String)> {
    let path = run.spec.config.as_ref().expect("training row");
    let mut cfg = configured(preset, path).with_context(|| format!("{} config", run.spec.name))?;
    if let Some(seed) = run.seed {
        cfg.set_seed(seed);
    }
    crate::train::redirect_outputs(&mut cfg, &run.dir);
    let mut identity = cfg.clone();
    let mut dep_ids = Vec::new();
    if let Some(start) = &run.spec.start_from {
        let rec = dependency(trained, run, start)?;
        if rec.adapter.is_some() {
            bail!("{} starts from {start}, whose result is an adapter, not a model", run.spec.name);
        }
        let masks = Path::new(&rec.model_source).join(sweelol_pruning::MASKS_FILE);
        let sparse = masks.is_file();
        cfg.start_from(rec.model_source.clone(), sparse.then_some(masks));
        identity.start_from(format!("row:{start}"), sparse.then(|| format!("row:{start}/masks").into()));
        dep_ids.push(rec.hash.clone());
    }
    if let Some(teacher) = &run.spec.teacher {
        let rec = dependency(trained, run, teacher)?;
        cfg.set_teacher(rec.model_source.clone()).with_context(|| format!("row {}", run.spec.name))?;
        identity.set_teacher(format!("row:{teacher}"))?;
        dep_ids.push(rec.hash.clone());
    }
    if dep_ids.is_empty() {
        let id = cfg.hash();
        return Ok((cfg, id));
    }
    let id = sweelol_train::config::hex_sha256(format!("{}|{}", identity.hash(), dep_ids.join("|")).as_bytes());
    Ok((cfg, id))
}

/// What a study directory's results depend on beyond each row's own records (which cover
/// configs, inputs and eval settings): the backend and the dtype.
fn study_identity(backend: &str, dtype: Precision) -> Identity {
    Identity::new().with("backend", backend).with("dtype", dtype.as_str())
}

/// Checks (or records) the run directory's identity; with `fresh`, a directory of another
/// identity is emptied first (its lock file stays).
fn claim_run_dir(run_dir: &Path, backend: &str, dtype: Precision, fresh: bool) -> Result<()> {
    let others = |dir: &Path| -> Result<Vec<PathBuf>> {
        Ok(std::fs::read_dir(dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.file_name().is_some_and(|n| n != LOCK_FILE && n != IDENTITY_FILE))
            .collect())
    };
    let identity = study_identity(backend, dtype);
    let hint = "rerun with --fresh to discard them, or use another --results directory";
    adopt_legacy_identity(run_dir)?;
    if fresh && identity.check(run_dir, !others(run_dir)?.is_empty(), hint).is_err() {
        eprintln!("{}: discarding results of another backend or dtype (--fresh)", run_dir.display());
        for p in others(run_dir)? {
            if p.is_dir() { std::fs::remove_dir_all(&p) } else { std::fs::remove_file(&p) }
                .with_context(|| format!("removing {}", p.display()))?;
        }
        std::fs::remove_file(run_dir.join(IDENTITY_FILE)).ok();
    }
    identity.claim(run_dir, !others(run_dir)?.is_empty(), hint)?;
    Ok(())
}

/// A study directory written before identities were recorded has its backend in
/// `manifest.json` (and every earlier version computed in f32): record that identity, so an
/// upgrade keeps its finished rows instead of refusing them.
fn adopt_legacy_identity(run_dir: &Path) -> Result<()> {
    if Identity::read(run_dir)?.is_some() {
        return Ok(());
    }
    let manifest: Option<serde_json::Value> = read_stage(&run_dir.join("manifest.json"));
    if let Some(backend) = manifest.as_ref().and_then(|m| m["backend"].as_str()) {
        eprintln!("{}: recording the identity of its earlier results (backend {backend}, f32)", run_dir.display());
        study_identity(backend, Precision::F32).write(run_dir)?;
    }
    Ok(())
}

/// The eval options of a preset, writing into `out_dir` (the identity is added per row).
fn eval_options(preset: &Preset, data_root: &Path, out_dir: PathBuf) -> EvalOptions {
    EvalOptions {
        tasks: preset.eval.tasks.clone(),
        limit: preset.eval.limit.docs(),
        num_fewshot: preset.eval.num_fewshot,
        data_root: data_root.to_path_buf(),
        out_dir,
        show_progress: true,
        identity: Identity::new(),
        fresh: false,
    }
}

/// The preset as this invocation runs it: the file with `--set`, `--limit` and `--dtype`
/// applied and `auto` settled on `device`. Also returns why that dtype.
pub(crate) fn settle(preset_path: &Path, opts: &StudyOptions, device: &Device) -> Result<(Preset, Precision, &'static str)> {
    let mut preset = Preset::load_with(preset_path, &opts.sets)?;
    if let Some(limit) = opts.limit {
        preset.eval.limit = limit;
    }
    if let Some(d) = opts.dtype {
        preset.overrides.dtype = Some(d.into());
    }
    let (dtype, why) = preset.overrides.dtype.unwrap_or(DtypeChoice::F32).resolve(device);
    preset.overrides.dtype = Some(dtype.into());
    Ok((preset, dtype, why))
}

/// The study's folder for `preset` under `results_root`, absolute so every output path
/// recorded in a stage is usable from anywhere; with a Slurm marker, checked to be the
/// folder the submitter wrote.
pub(crate) fn study_dir(results_root: &Path, preset: &Preset, marker: Option<&str>) -> Result<PathBuf> {
    let run_dir = std::path::absolute(results_root)?.join(&preset.name);
    if let Some(token) = marker {
        crate::slurm::check_marker(&run_dir, token)?;
    }
    Ok(run_dir)
}

/// Before a Slurm submission, what a local run does before any work: the tasks and their
/// data are checked and the study folder is claimed for this backend and dtype.
pub(crate) fn prepare_dir(preset: &Preset, run_dir: &Path, backend: &str, dtype: Precision, fresh: bool) -> Result<()> {
    sweelol_eval::check_request(&eval_options(preset, Path::new(""), PathBuf::new()))?;
    crate::data_fetch::eval_data_root(&crate::paths::default_data_root(), &preset.eval.tasks, preset.eval.num_fewshot)?;
    std::fs::create_dir_all(run_dir)?;
    let _lock = DirLock::acquire(run_dir)?;
    claim_run_dir(run_dir, backend, dtype, fresh)
}

/// Runs the study described by `preset_path` into `<results_root>/<name>/` on `device`.
pub fn run_study(
    preset_path: &Path,
    opts: &StudyOptions,
    device: &Device,
    backend: &str,
    results_root: &Path,
) -> Result<StudyOutcome> {
    let (preset, dtype, why) = settle(preset_path, opts, device)?;
    let run_dir = study_dir(results_root, &preset, opts.marker.as_deref())?;
    if opts.table_only {
        return write_table_only(&preset, opts, backend, dtype, &run_dir);
    }
    eprintln!("study {}: training in {dtype} ({why}); evaluating in {}", preset.name, preset.eval.dtype);
    let to_run = rows_to_run(&preset, opts.only.as_deref())?;
    // Tasks and data are found and checked before any training: a typo or a missing file
    // fails in seconds, not hours.
    sweelol_eval::check_request(&eval_options(&preset, Path::new(""), PathBuf::new()))?;
    let data_root =
        crate::data_fetch::eval_data_root(&crate::paths::default_data_root(), &preset.eval.tasks, preset.eval.num_fewshot)?;
    let docs_per_row: usize = sweelol_eval::load_tasks(&eval_options(&preset, &data_root, PathBuf::new()))?.iter().map(|t| t.docs.len()).sum();
    let prompts = study_prompts(&preset)?;
    let _lock = DirLock::acquire(&run_dir)?;
    claim_run_dir(&run_dir, backend, dtype, opts.fresh)?;
    let runs = plan(&preset, &run_dir, opts.seeds.as_deref())?;
    let root = std::path::absolute(results_root)?;
    eprint!("{}", plan_text(&preset, &runs, &to_run, docs_per_row, &Rates::load(&root), backend)?);
    let started = Instant::now();
    let mut trained = Trained::new();
    let mut results: Vec<RowResult> = Vec::new();
    let mut actions = Vec::new();
    let budget_left = |actions: &Vec<(String, Action)>| {
        let ran = actions.iter().filter(|(_, a)| matches!(a, Action::Trained | Action::Evaluated)).count();
        opts.stop_after_stages.is_none_or(|n| ran < n)
    };

    for run in &runs {
        std::fs::create_dir_all(&run.dir)?;
        if !to_run.contains(&run.spec.name) {
            // Not run now; its earlier results still go into the table if they are current.
            if let Some(done) = finished_run(&preset, run, &trained, &prompts) {
                if let Some(t) = &done.train {
                    trained.insert(run.key(), t.clone());
                }
                results.push(done);
            }
            continue;
        }
        if !budget_left(&actions) {
            return Ok(StudyOutcome { run_dir, actions, finished: false });
        }
        // One line per run, with how long its unfinished stages take at the rates measured
        // so far (this invocation's earlier stages included).
        match estimate(&preset, run, &trained, &Rates::load(&root), backend, docs_per_row)? {
            Some(s) if s > 0.0 => eprintln!("== {} == (est. {})", run.key(), rates::human(s)),
            _ => eprintln!("== {} ==", run.key()),
        }
        let (train, trained_now) = match run.spec.config {
            None => (None, false),
            Some(_) => {
                let (rec, now) = train_stage(&preset, run, &trained, device)?;
                actions.push((run.key(), if now { Action::Trained } else { Action::TrainSkipped }));
                trained.insert(run.key(), rec.clone());
                (Some(rec), now)
            }
        };
        if opts.only.as_deref().is_some_and(|o| o != run.spec.name) {
            // Trained as a dependency of the row asked for, not evaluated now; its earlier
            // results still go into the table if they are current.
            results.extend(finished_run(&preset, run, &trained, &prompts));
            continue;
        }
        if !budget_left(&actions) {
            return Ok(StudyOutcome { run_dir, actions, finished: false });
        }
        let mut model = LazyModel::of_run(&preset, train.as_ref(), device);
        let (mut result, evaluated) = eval_stage(&preset, run, train, trained_now, &mut model, backend, &data_root)?;
        actions.push((run.key(), if evaluated { Action::Evaluated } else { Action::EvalSkipped }));
        record_rates(&preset, run, &result, trained_now, evaluated, backend, &root)?;
        // Answers from each row's first run only: the report shows one set per row.
        if !results.iter().any(|r| r.row == run.spec.name) {
            result.answers = Some(answers_stage(&preset, run, result.train.as_ref(), &prompts, &mut model)?);
        }
        results.push(result);
    }
    if results.iter().all(|r| r.eval.tasks.is_empty()) {
        bail!("no row was evaluated");
    }
    report::write_report(&run_dir, &preset, backend, &results, &prompts, started.elapsed().as_secs_f64())?;
    println!("study `{}` written to {}", preset.name, run_dir.display());
    println!("{}", std::fs::read_to_string(run_dir.join("table.md"))?);
    println!("{}", stage_times(&results));
    Ok(StudyOutcome { run_dir, actions, finished: true })
}

/// What a Slurm submission needs to know of one run of the study.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedRun {
    /// The run's key: its row's name, with `" seed N"` for seeded runs.
    pub key: String,
    /// Its folder's name under the study folder (with `/seed-N` for extra seeds).
    pub dir: PathBuf,
    /// Its technique as configs name it, or `None` for a row that only evaluates.
    pub technique: Option<String>,
    /// Every stage (training, evaluation, answers) finished under the current identity.
    pub done: bool,
    /// The keys of the runs it is built on (`start_from`, `teacher`).
    pub depends_on: Vec<String>,
}

/// The runs of the study that `opts` asks for (all rows, or `--only` and what it is built
/// on; each seed), in row order, each with whether it is finished and what it needs first.
pub fn stage_plan(preset: &Preset, opts: &StudyOptions, run_dir: &Path) -> Result<Vec<PlannedRun>> {
    let to_run = rows_to_run(preset, opts.only.as_deref())?;
    let prompts = study_prompts(preset)?;
    let runs = plan(preset, run_dir, opts.seeds.as_deref())?;
    let trained = trained_on_disk(preset, &runs);
    let mut planned = Vec::new();
    for (i, run) in runs.iter().enumerate() {
        let first_of_row = !runs[..i].iter().any(|r| r.spec.name == run.spec.name);
        let done = finished_run(preset, run, &trained, &prompts);
        if !to_run.contains(&run.spec.name) {
            continue;
        }
        let answered = |d: &RowResult| !first_of_row || prompts.is_empty() || d.answers.is_some();
        let depends_on = run
            .spec
            .depends_on()
            .map(|dep| {
                let seeded = run_key(dep, run.seed);
                if runs.iter().any(|r| r.key() == seeded) { seeded } else { dep.to_string() }
            })
            .collect();
        let technique = match &run.spec.config {
            Some(path) => Some(configured(preset, path)?.technique.name().to_string()),
            None => None,
        };
        planned.push(PlannedRun {
            key: run.key(),
            dir: run.dir.strip_prefix(run_dir).unwrap_or(&run.dir).to_path_buf(),
            technique,
            done: done.as_ref().is_some_and(answered),
            depends_on,
        });
    }
    Ok(planned)
}

/// One run of the study, every stage of it (a Slurm job's work): trains it unless its
/// training is finished, evaluates it, answers the held-out prompts. The runs it is built
/// on must have finished. Only the run's own folder is locked, so other rows' jobs run
/// beside it; the table is left to the submission's last job.
pub fn run_stage(preset_path: &Path, opts: &StudyOptions, key: &str, device: &Device, backend: &str, results_root: &Path) -> Result<()> {
    let (preset, dtype, why) = settle(preset_path, opts, device)?;
    let run_dir = study_dir(results_root, &preset, opts.marker.as_deref())?;
    // The submitter claimed the folder; a job only checks that it is the same study.
    study_identity(backend, dtype).check(&run_dir, true, "submit again with the same --backend and --dtype")?;
    eprintln!("study {} stage {key}: training in {dtype} ({why}); evaluating in {}", preset.name, preset.eval.dtype);
    let data_root =
        crate::data_fetch::eval_data_root(&crate::paths::default_data_root(), &preset.eval.tasks, preset.eval.num_fewshot)?;
    let prompts = study_prompts(&preset)?;
    let runs = plan(&preset, &run_dir, opts.seeds.as_deref())?;
    let Some(pos) = runs.iter().position(|r| r.key() == key) else {
        let keys: Vec<String> = runs.iter().map(RowRun::key).collect();
        bail!("no run {key:?} in preset `{}` (runs: {})", preset.name, keys.join(", "));
    };
    let run = &runs[pos];
    std::fs::create_dir_all(&run.dir)?;
    let _lock = DirLock::acquire(&run.dir)?;
    // The records of the runs before it, for the ones it is built on.
    let trained = trained_on_disk(&preset, &runs[..pos]);
    let (train, trained_now) = match run.spec.config {
        None => (None, false),
        Some(_) => {
            let (rec, now) = train_stage(&preset, run, &trained, device)?;
            (Some(rec), now)
        }
    };
    let mut model = LazyModel::of_run(&preset, train.as_ref(), device);
    let (result, evaluated) = eval_stage(&preset, run, train.clone(), trained_now, &mut model, backend, &data_root)?;
    record_rates(&preset, run, &result, trained_now, evaluated, backend, &std::path::absolute(results_root)?)?;
    if !runs[..pos].iter().any(|r| r.spec.name == run.spec.name) {
        answers_stage(&preset, run, train.as_ref(), &prompts, &mut model)?;
    }
    eprintln!("study {} stage {key}: done", preset.name);
    Ok(())
}

/// The current training records on disk of `runs`, in plan order: a run's record is current
/// only when the records of the runs it is built on are.
fn trained_on_disk(preset: &Preset, runs: &[RowRun]) -> Trained {
    let mut trained = Trained::new();
    for run in runs {
        if let Some(t) = finished_training(preset, run, &trained) {
            trained.insert(run.key(), t);
        }
    }
    trained
}

/// A run's training record on disk, if it is current (same config and inputs).
fn finished_training(preset: &Preset, run: &RowRun, trained: &Trained) -> Option<StageRecord> {
    run.spec.config.as_ref()?;
    let (_, hash) = row_run_config(preset, run, trained).ok()?;
    read_stage::<StageRecord>(&run.dir.join(TRAIN_STAGE)).filter(|r| r.hash == hash)
}

/// The table from finished stages alone: every run the table shows must be finished, else
/// nothing is written and the error names the missing ones.
fn write_table_only(preset: &Preset, opts: &StudyOptions, backend: &str, dtype: Precision, run_dir: &Path) -> Result<StudyOutcome> {
    let _lock = DirLock::acquire(run_dir)?;
    study_identity(backend, dtype).check(run_dir, true, "use the --backend and --dtype the study was run with")?;
    let prompts = study_prompts(preset)?;
    let to_run = rows_to_run(preset, opts.only.as_deref())?;
    let runs = plan(preset, run_dir, opts.seeds.as_deref())?;
    let trained = trained_on_disk(preset, &runs);
    let (mut results, mut missing) = (Vec::new(), Vec::new());
    for run in &runs {
        match finished_run(preset, run, &trained, &prompts) {
            Some(done) => results.push(done),
            // With --only, the other rows are in the table when they are finished.
            None if to_run.contains(&run.spec.name) => missing.push(run.key()),
            None => {}
        }
    }
    if !missing.is_empty() {
        bail!("{}: not finished: {}; the table is written once every run is (run the study again to finish them)", run_dir.display(), missing.join(", "));
    }
    report::write_report(run_dir, preset, backend, &results, &prompts, 0.0)?;
    println!("study `{}` written to {}", preset.name, run_dir.display());
    println!("{}", std::fs::read_to_string(run_dir.join("table.md"))?);
    println!("{}", stage_times(&results));
    Ok(StudyOutcome { run_dir: run_dir.to_path_buf(), actions: Vec::new(), finished: true })
}

/// Stage 1 of a training run: train (or prune) unless a record of the same identity
/// exists. Returns the record and whether it was trained now.
fn train_stage(preset: &Preset, run: &RowRun, trained: &Trained, device: &Device) -> Result<(StageRecord, bool)> {
    let (cfg, hash) = row_run_config(preset, run, trained)?;
    let stage_path = run.dir.join(TRAIN_STAGE);
    let previous = read_stage::<StageRecord>(&stage_path);
    if let Some(rec) = previous.as_ref().filter(|r| r.hash == hash) {
        eprintln!("{}: trained earlier (same config and inputs), skipping", run.key());
        drop_checkpoints(&cfg.run.output.dir)?;
        return Ok((rec.clone(), false));
    }
    if previous.is_some() {
        // Finished under another config or from other inputs: its checkpoints cannot be
        // resumed, and its model is about to be replaced.
        eprintln!("{}: its config or inputs changed since it was trained; training again", run.key());
        std::fs::remove_file(&stage_path).ok();
        let old = &cfg.run.output.dir;
        if old.exists() {
            std::fs::remove_dir_all(old).with_context(|| format!("removing {}", old.display()))?;
        }
    }
    let t0 = Instant::now();
    // After the row's hash is taken: where Dolly was found is not part of its identity.
    let mut cfg = cfg;
    cfg.run.data.path = crate::data_fetch::dolly_path(&cfg.run.data.path)?;
    let out = crate::train::run_technique(&cfg, device)?;
    let mut details = out.details;
    if let Some(d) = details.as_object_mut() {
        d.remove("last_checkpoint"); // removed just below
    }
    let rec = StageRecord {
        hash,
        // A resumed training adds what its earlier invocations trained up to its checkpoint.
        seconds: t0.elapsed().as_secs_f64() + out.earlier_seconds,
        details,
        model_source: out.model_source,
        adapter: out.adapter,
    };
    write_stage(&stage_path, &rec)?;
    drop_checkpoints(&cfg.run.output.dir)?;
    Ok((rec, true))
}

/// Removes a finished training's checkpoints. They only serve to resume it; once its stage
/// record is written the study reuses the record and the model, and retrains from scratch
/// when the config changes. A full-weight row's last checkpoint is 3 GiB (weights and both
/// AdamW moments in f32): without them the default study's folder takes 4.4 GiB, not 14.
fn drop_checkpoints(train_dir: &Path) -> Result<()> {
    let root = sweelol_train::checkpoint::root(train_dir);
    match std::fs::remove_dir_all(&root) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("removing the finished training's checkpoints {}", root.display()))
        }
        _ => Ok(()),
    }
}

/// The eval settings a stage's identity includes.
fn eval_settings(preset: &Preset) -> serde_json::Value {
    serde_json::to_value(&preset.eval).expect("eval settings serialise")
}

/// The identity of the model a run evaluates: its training stage's, or the base model's
/// source.
fn eval_model_id(train: Option<&StageRecord>, base_source: &str) -> String {
    train.map_or_else(|| base_source.to_string(), |t| t.hash.clone())
}

/// Stage 2 of a run: evaluate its model, resuming per document when the results on disk
/// belong to the same model and settings. Returns the result and whether any document was
/// scored now.
fn eval_stage(
    preset: &Preset,
    run: &RowRun,
    train: Option<StageRecord>,
    trained_now: bool,
    model: &mut LazyModel,
    backend: &str,
    data_root: &Path,
) -> Result<(RowResult, bool)> {
    let dtype = preset.eval.dtype;
    let eval_dir = run.dir.join("eval");
    let model_id = eval_model_id(train.as_ref(), &preset.base_model);
    let settings = eval_settings(preset);
    let eval_stage_path = run.dir.join(EVAL_STAGE);
    let previous = read_stage::<EvalStage>(&eval_stage_path);
    let stale = trained_now || previous.as_ref().is_some_and(|p| p.model != model_id || p.settings != settings);
    if stale && eval_dir.exists() {
        eprintln!("{}: the model or the eval settings changed; evaluating again", run.key());
        std::fs::remove_dir_all(&eval_dir).with_context(|| format!("removing {}", eval_dir.display()))?;
    }
    let earlier_seconds = previous.as_ref().filter(|_| !stale).map_or(0.0, |p| p.seconds);
    let complete = !stale && previous.is_some() && read_stage::<EvalSummary>(&eval_dir.join("summary.json")).is_some();
    let t0 = Instant::now();
    let mut opts = eval_options(preset, data_root, eval_dir.clone());
    opts.identity = crate::provenance::model_identity(&model.source, model.adapter.as_deref(), backend, dtype)?;
    // The study owns this folder: results of another model are redone, as a changed row
    // is, rather than refused (another code version's are kept: `RECORDED_ONLY`).
    match sweelol_eval::preflight(&opts) {
        Err(e @ EvalError::OutDir(OutDirError::Mismatch { .. })) => {
            eprintln!("{}: {e}; evaluating again", run.key());
            opts.fresh = true;
        }
        // Finished under this identity: read back, no model loaded.
        Ok(_) if complete => {
            let mut summary: EvalSummary = read_stage(&eval_dir.join("summary.json")).context("summary.json")?;
            set_eval_rate(&mut summary, earlier_seconds);
            eprintln!("{}: evaluated earlier (same model, settings and identity), skipping", run.key());
            let result = RowResult { row: run.spec.name.clone(), seed: run.seed, train, eval: summary, eval_dir, eval_seconds: earlier_seconds, answers: None };
            return Ok((result, false));
        }
        _ => {}
    }
    let loaded = model.get()?;
    let mut scorer = Scorer::new(&loaded.model, &loaded.tokenizer);
    scorer.prefix = loaded.prefix.clone();
    let mut summary = evaluate(&scorer, &opts).with_context(|| format!("evaluating {}", run.key()))?;
    let eval_seconds = earlier_seconds + t0.elapsed().as_secs_f64();
    write_stage(&eval_stage_path, &EvalStage { model: model_id, settings, seconds: eval_seconds })?;
    set_eval_rate(&mut summary, eval_seconds);
    eprintln!("{}", format_table(&summary));
    let result = RowResult { row: run.spec.name.clone(), seed: run.seed, train, eval: summary, eval_dir, eval_seconds, answers: None };
    // Scored now unless every document was already there (a fresh start rescored them all).
    Ok((result, !complete || opts.fresh))
}

/// A run that an earlier invocation finished, read back from its folder, or `None` if it
/// is missing or stale (its config, its inputs or the eval settings changed since).
fn finished_run(preset: &Preset, run: &RowRun, trained: &Trained, prompts: &[DollyRecord]) -> Option<RowResult> {
    let train = match run.spec.config {
        None => None,
        Some(_) => Some(finished_training(preset, run, trained)?),
    };
    let stage = read_stage::<EvalStage>(&run.dir.join(EVAL_STAGE))?;
    if stage.model != eval_model_id(train.as_ref(), &preset.base_model) || stage.settings != eval_settings(preset) {
        return None;
    }
    let eval_dir = run.dir.join("eval");
    let mut eval: EvalSummary = read_stage(&eval_dir.join("summary.json"))?;
    set_eval_rate(&mut eval, stage.seconds);
    let answers = Answers::read_current(&run.dir, &stage.model, prompts, &preset.answers, preset.eval.dtype.as_str()).map(|a| a.texts);
    Some(RowResult { row: run.spec.name.clone(), seed: run.seed, train, eval, eval_dir, eval_seconds: stage.seconds, answers })
}

/// The held-out prompts every row answers: the first `[answers] prompts` records held out by
/// the first training row's `[data]` as the preset runs it (none without a training row).
/// Chosen before any work, so a missing Dolly fails in seconds.
fn study_prompts(preset: &Preset) -> Result<Vec<DollyRecord>> {
    if preset.answers.prompts == 0 {
        return Ok(Vec::new());
    }
    for path in preset.rows.iter().filter_map(|r| r.config.as_ref()) {
        let mut cfg = configured(preset, path)?;
        if cfg.technique.trains() {
            cfg.run.data.path = crate::data_fetch::dolly_path(&cfg.run.data.path)?;
            return answers::held_out_prompts(&cfg.run.data, preset.answers.prompts);
        }
    }
    Ok(Vec::new())
}

/// A run's model, loaded when a stage first needs it: once for scoring and answering, and
/// not at all when both are reused.
struct LazyModel<'d> {
    source: String,
    adapter: Option<PathBuf>,
    dtype: Precision,
    device: &'d Device,
    loaded: Option<LoadedModel>,
}

impl<'d> LazyModel<'d> {
    /// The model a run evaluates: its training stage's, or the preset's base model.
    fn of_run(preset: &Preset, train: Option<&StageRecord>, device: &'d Device) -> Self {
        let (source, adapter) = match train {
            None => (preset.base_model.clone(), None),
            Some(t) => (t.model_source.clone(), t.adapter.clone()),
        };
        LazyModel { source, adapter, dtype: preset.eval.dtype, device, loaded: None }
    }

    fn get(&mut self) -> Result<&LoadedModel> {
        if self.loaded.is_none() {
            self.loaded = Some(load_model(&self.source, self.adapter.as_deref(), false, self.device, self.dtype)?);
        }
        Ok(self.loaded.as_ref().expect("loaded above"))
    }
}

/// Stage 3 of a row (its first run): greedy answers to the study's held-out prompts,
/// unless the row's folder has them from the same model, prompts and settings.
fn answers_stage(preset: &Preset, run: &RowRun, train: Option<&StageRecord>, prompts: &[DollyRecord], model: &mut LazyModel) -> Result<Vec<String>> {
    let model_id = eval_model_id(train, &preset.base_model);
    let dtype = preset.eval.dtype.as_str();
    if let Some(done) = Answers::read_current(&run.dir, &model_id, prompts, &preset.answers, dtype) {
        return Ok(done.texts);
    }
    if prompts.is_empty() {
        return Ok(Vec::new());
    }
    let t0 = Instant::now();
    let texts = answers::generate(model.get()?, prompts, preset.answers.max_new_tokens)
        .with_context(|| format!("answering the held-out prompts with {}", run.key()))?;
    let record = Answers {
        model: model_id,
        prompts: prompts.to_vec(),
        max_new_tokens: preset.answers.max_new_tokens,
        dtype: dtype.to_string(),
        texts,
    };
    record.write(&run.dir)?;
    eprintln!("{}: answered {} held-out prompts in {:.0} s", run.key(), prompts.len(), t0.elapsed().as_secs_f64());
    Ok(record.texts)
}

/// Seconds each stage of the table's runs took, over every invocation that worked on it.
fn stage_times(results: &[RowResult]) -> String {
    use std::fmt::Write;
    let mut out = String::from("time per stage (over every invocation):\n");
    let mut total = 0.0;
    for r in results {
        let train = r.train.as_ref().map_or(0.0, |t| t.seconds);
        total += train + r.eval_seconds;
        let key = run_key(&r.row, r.seed);
        let train = if r.train.is_some() { format!("train {:>6.0} s", train) } else { format!("{:14}", "") };
        let _ = writeln!(out, "  {key:<24} {train}  eval {:>5.0} s", r.eval_seconds);
    }
    let _ = write!(out, "  {:<24} {:.0} s ({:.1} min)", "total", total, total / 60.0);
    out
}

/// Docs/s over all the time a row's eval took, not only this invocation's share.
fn set_eval_rate(summary: &mut EvalSummary, seconds: f64) {
    let docs: usize = summary.tasks.iter().map(|t| t.n).sum();
    summary.docs_per_second = docs as f64 / seconds.max(1e-9);
}

#[cfg(test)]
pub(crate) mod tests;
