//! Runs tasks, writes `<task>.jsonl` line by line (so a killed run resumes where it
//! stopped), `summary.json`, and the printed table.
//!
//! An output directory is locked while a run writes into it, and records what produced its
//! lines (`identity.json`: model, adapter and tokenizer hashes, few-shot count, backend,
//! code version …). Earlier lines are reused only under the same identity (the code version
//! is recorded, not compared), and only when each is the document the task has at that
//! position.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};

use sweelol_outdir::{write_atomic, DirLock, Identity, OutDirError, IDENTITY_FILE};

use crate::scoring::{DocResult, Scorer};
use crate::tasks::{load_task, parse_task_name, Task, TaskSpec, STUDY_TASKS};

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error(transparent)]
    Task(#[from] crate::tasks::TaskError),
    #[error(transparent)]
    Model(#[from] sweelol_gemma::GemmaError),
    #[error("{path}: {msg}")]
    File { path: PathBuf, msg: String },
    #[error(transparent)]
    OutDir(#[from] OutDirError),
    /// An option that cannot work (e.g. `limit = 0`), found before any model work.
    #[error("{0}")]
    Invalid(String),
    /// Ctrl-C or SIGTERM: the group being scored was finished and written first.
    #[error("interrupted: {written} of {total} documents of {task} are in {}; run the same command again to resume", .path.display())]
    Interrupted { task: String, written: usize, total: usize, path: PathBuf },
}

fn file_err(path: &Path, msg: impl ToString) -> EvalError {
    EvalError::File { path: path.to_path_buf(), msg: msg.to_string() }
}

/// Documents scored together ([`Scorer::score_docs`]), and written to `<task>.jsonl` as
/// one: their forwards are batched within a token budget, and the head scores all their
/// rows in one product (each product reads the whole 262144-row table). Ctrl-C waits for
/// the group in progress; a killed run rescores at most this many documents.
const DOCS_PER_GROUP: usize = 32;

/// What to evaluate and where the data lives.
#[derive(Clone, Debug)]
pub struct EvalOptions {
    pub tasks: Vec<String>,
    pub limit: Option<usize>,
    pub num_fewshot: usize,
    pub data_root: PathBuf,
    pub out_dir: PathBuf,
    pub show_progress: bool,
    /// What produces the scores (model, adapter, tokenizer, backend, …); `evaluate` adds
    /// the few-shot count. Earlier results in `out_dir` are reused only under an equal one.
    pub identity: Identity,
    /// Discard earlier results in `out_dir` (whatever produced them) instead of refusing.
    pub fresh: bool,
}

impl EvalOptions {
    pub fn study(data_root: PathBuf, out_dir: PathBuf) -> Self {
        EvalOptions {
            tasks: STUDY_TASKS.iter().map(|s| s.to_string()).collect(),
            limit: Some(200),
            num_fewshot: 0,
            data_root,
            out_dir,
            show_progress: true,
            identity: Identity::new(),
            fresh: false,
        }
    }
}

/// A metric's mean with lm-eval's standard error (sample std / sqrt(n)).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Metric {
    pub value: f64,
    pub stderr: f64,
    pub ci95: [f64; 2],
}

impl Metric {
    pub fn of(xs: &[f64]) -> Metric {
        let n = xs.len() as f64;
        let mean = xs.iter().sum::<f64>() / n;
        let var = if xs.len() > 1 { xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0) } else { 0.0 };
        let stderr = (var / n).sqrt();
        Metric { value: mean, stderr, ci95: [mean - 1.96 * stderr, mean + 1.96 * stderr] }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TaskSummary {
    pub task: String,
    pub n: usize,
    pub acc: Metric,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub acc_norm: Option<Metric>,
    pub seconds: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct EvalSummary {
    pub tasks: Vec<TaskSummary>,
    /// Plain mean of the MMLU subjects' acc, as the study reports it.
    pub mmlu_average: Option<f64>,
    pub limit: Option<usize>,
    pub num_fewshot: usize,
    pub seconds: f64,
    pub docs_per_second: f64,
}

/// Finished lines of an earlier run (parsed, and as written), and whether a torn last line
/// (killed mid-write) was dropped.
fn read_done(path: &Path) -> Result<(Vec<DocResult>, Vec<String>, bool), EvalError> {
    let Ok(file) = std::fs::File::open(path) else { return Ok((vec![], vec![], false)) };
    let (mut done, mut raw) = (Vec::new(), Vec::new());
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| file_err(path, e))?;
        match serde_json::from_str::<DocResult>(&line) {
            Ok(r) => {
                done.push(r);
                raw.push(line);
            }
            Err(_) => {
                eprintln!("{}: line {} is incomplete; re-scoring from there", path.display(), i + 1);
                return Ok((done, raw, true));
            }
        }
    }
    Ok((done, raw, false))
}

/// Checks the request itself, reading nothing: limit at least 1, at least one task, every
/// task name known.
pub fn check_request(opts: &EvalOptions) -> Result<(), EvalError> {
    task_specs(opts).map(drop)
}

/// The request's tasks, parsed, after the checks of [`check_request`].
fn task_specs(opts: &EvalOptions) -> Result<Vec<TaskSpec>, EvalError> {
    if opts.limit == Some(0) {
        return Err(EvalError::Invalid("limit must be at least 1 document per task".into()));
    }
    if opts.tasks.is_empty() {
        return Err(EvalError::Invalid("no tasks given".into()));
    }
    // A task named twice would be scored twice and weigh double in Average MMLU.
    for (i, name) in opts.tasks.iter().enumerate() {
        if opts.tasks[..i].contains(name) {
            return Err(EvalError::Invalid(format!("task {name} is named twice; name each task once")));
        }
    }
    Ok(opts.tasks.iter().map(|n| parse_task_name(n)).collect::<Result<Vec<_>, _>>()?)
}

/// Checks what `opts` asks for before any model work: [`check_request`], then every
/// task's data readable. Returns the loaded tasks, in order.
pub fn load_tasks(opts: &EvalOptions) -> Result<Vec<Task>, EvalError> {
    let specs = task_specs(opts)?;
    Ok(specs
        .iter()
        .map(|spec| load_task(spec, &opts.data_root, opts.limit, opts.num_fewshot))
        .collect::<Result<Vec<_>, _>>()?)
}

/// The files a run writes into its output directory (what `fresh` removes).
fn is_result_file(name: &str) -> bool {
    name.ends_with(".jsonl") || name == "summary.json" || name == LM_EVAL_RESULTS || name == IDENTITY_FILE
}

fn result_files(dir: &Path) -> Result<Vec<PathBuf>, EvalError> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Ok(vec![]) };
    let mut files = Vec::new();
    for e in entries {
        let e = e.map_err(|e| file_err(dir, e))?;
        if e.file_name().to_str().is_some_and(is_result_file) {
            files.push(e.path());
        }
    }
    Ok(files)
}

/// Earlier results for `task` that this run may reuse: each line must be the document the
/// task has at its position (same id and gold answer), else the data changed under them.
fn reusable(path: &Path, task: &Task) -> Result<Vec<DocResult>, EvalError> {
    let (done, raw, torn) = read_done(path)?;
    for (i, (r, doc)) in done.iter().zip(&task.docs).enumerate() {
        if r.doc_id != doc.doc_id || r.gold != doc.gold {
            return Err(file_err(
                path,
                format!(
                    "line {} holds document {} (gold {}), but the task's document {} is {} (gold {}): the data changed since; rerun with --fresh",
                    i + 1, r.doc_id, r.gold, i, doc.doc_id, doc.gold
                ),
            ));
        }
    }
    if torn {
        // Rewrite what is kept (all finished lines, also those past this run's limit) as
        // written: re-serialising parsed floats need not give the same digits back.
        let mut out = std::fs::File::create(path).map_err(|e| file_err(path, e))?;
        for line in &raw {
            writeln!(out, "{line}").map_err(|e| file_err(path, e))?;
        }
    }
    Ok(done)
}

/// What a refused reuse suggests.
const FRESH_HINT: &str = "rerun with --fresh to replace them, or choose another output directory";

/// The identity a run of `opts` records: the caller's fields plus the few-shot count.
fn run_identity(opts: &EvalOptions) -> Identity {
    opts.identity.clone().with("num_fewshot", opts.num_fewshot)
}

/// Everything [`evaluate`] checks before it scores, without writing anything: limit, task
/// names and data, that no other run holds `out_dir`, and that its earlier results (if any)
/// have this run's identity (unless `fresh`). Call it before loading a model, so bad input
/// fails in seconds. Returns the loaded tasks.
pub fn preflight(opts: &EvalOptions) -> Result<Vec<Task>, EvalError> {
    let tasks = load_tasks(opts)?;
    if opts.out_dir.is_dir() {
        drop(DirLock::acquire(&opts.out_dir)?);
        if !opts.fresh {
            let has_results = !result_files(&opts.out_dir)?.is_empty();
            run_identity(opts).check(&opts.out_dir, has_results, FRESH_HINT)?;
        }
    }
    Ok(tasks)
}

/// Evaluates every task, resuming finished documents, and writes the outputs.
///
/// Fails before scoring anything when a task is unknown, the limit is 0, another run holds
/// `out_dir`, or `out_dir` holds results of another identity (unless `fresh`). A smaller
/// limit than before reuses the first documents and leaves the rest of the file alone.
/// In bf16, the model's weights packed for scoring are dropped at the end: the next job
/// (a study's next row) has other weights.
pub fn evaluate(scorer: &Scorer, opts: &EvalOptions) -> Result<EvalSummary, EvalError> {
    let _packed = sweelol_gemma::kernels::gemm_bf16::packed_while_frozen();
    let tasks = load_tasks(opts)?;
    let _lock = DirLock::acquire(&opts.out_dir)?;
    if opts.fresh {
        for f in result_files(&opts.out_dir)? {
            std::fs::remove_file(&f).map_err(|e| file_err(&f, e))?;
        }
    }
    let has_results = !result_files(&opts.out_dir)?.is_empty();
    run_identity(opts).claim(&opts.out_dir, has_results, FRESH_HINT)?;
    let start = Instant::now();
    let mut summaries = Vec::new();
    let mut total_docs = 0;
    // A signal stops the run after the group being scored is written, not in the middle.
    let stoppable = sweelol_outdir::interrupt::Stoppable::start();
    for (name, task) in opts.tasks.iter().zip(&tasks) {
        let path = opts.out_dir.join(format!("{name}.jsonl"));
        let mut results = reusable(&path, task)?;
        results.truncate(task.docs.len());
        if !results.is_empty() && opts.show_progress {
            eprintln!("{name}: resumed: {} of {} documents already scored", results.len(), task.docs.len());
        }
        let reused = results.len();
        let mut out = std::fs::OpenOptions::new().create(true).append(true).open(&path).map_err(|e| file_err(&path, e))?;
        let bar = progress_bar(opts.show_progress, task.docs.len() as u64, name);
        bar.set_position(results.len() as u64);
        let task_start = Instant::now();
        // A write that fails (a full disk) leaves no empty file behind; a torn last line is
        // rescored by the next run (`reusable`).
        let write_failed = |e: std::io::Error| {
            if std::fs::metadata(&path).is_ok_and(|m| m.len() == 0) {
                std::fs::remove_file(&path).ok();
            }
            file_err(&path, e)
        };
        for group in task.docs[results.len()..].chunks(DOCS_PER_GROUP) {
            for r in scorer.score_docs(group, task.reports_acc_norm)? {
                writeln!(out, "{}", serde_json::to_string(&r).unwrap()).map_err(write_failed)?;
                results.push(r);
                bar.inc(1);
            }
            out.flush().map_err(write_failed)?;
            if stoppable.stop_requested() {
                bar.finish_and_clear();
                return Err(EvalError::Interrupted { task: name.clone(), written: results.len(), total: task.docs.len(), path: path.clone() });
            }
        }
        bar.finish_and_clear();
        total_docs += task.docs.len() - reused;
        let accs: Vec<f64> = results.iter().map(|r| r.acc).collect();
        let norms: Option<Vec<f64>> = results.iter().map(|r| r.acc_norm).collect();
        summaries.push(TaskSummary {
            task: name.clone(),
            n: results.len(),
            acc: Metric::of(&accs),
            acc_norm: norms.filter(|_| task.reports_acc_norm).map(|n| Metric::of(&n)),
            seconds: task_start.elapsed().as_secs_f64(),
        });
    }
    let mmlu: Vec<f64> = summaries.iter().filter(|s| s.task.starts_with("mmlu_")).map(|s| s.acc.value).collect();
    let seconds = start.elapsed().as_secs_f64();
    let summary = EvalSummary {
        mmlu_average: (!mmlu.is_empty()).then(|| mmlu.iter().sum::<f64>() / mmlu.len() as f64),
        tasks: summaries,
        limit: opts.limit,
        num_fewshot: opts.num_fewshot,
        seconds,
        // Documents scored by this run only: reused lines cost no model time.
        docs_per_second: total_docs as f64 / seconds.max(1e-9),
    };
    let path = opts.out_dir.join("summary.json");
    write_atomic(&path, serde_json::to_string_pretty(&summary).unwrap().as_bytes()).map_err(|e| file_err(&path, e))?;
    let path = opts.out_dir.join(LM_EVAL_RESULTS);
    let results = lm_eval_results(&summary, &opts.identity);
    write_atomic(&path, (serde_json::to_string_pretty(&results).unwrap() + "\n").as_bytes()).map_err(|e| file_err(&path, e))?;
    Ok(summary)
}

/// The same numbers in lm-evaluation-harness 0.4's `results.json` layout, for tools that
/// read its output: `results.<task>."acc,none"` (a fraction), `"acc_stderr,none"`,
/// `"acc_norm,none"`, `"acc_norm_stderr,none"`, with `n-shot`, `n-samples` (documents scored) and `config`.
pub const LM_EVAL_RESULTS: &str = "results.json";

/// [`LM_EVAL_RESULTS`]'s content.
pub fn lm_eval_results(summary: &EvalSummary, identity: &Identity) -> serde_json::Value {
    use serde_json::{json, Map, Value};
    let (mut results, mut shots, mut samples, mut better) = (Map::new(), Map::new(), Map::new(), Map::new());
    for t in &summary.tasks {
        let mut r = json!({"alias": t.task, "acc,none": t.acc.value, "acc_stderr,none": t.acc.stderr});
        let mut higher = json!({"acc": true});
        if let Some(norm) = &t.acc_norm {
            r["acc_norm,none"] = json!(norm.value);
            r["acc_norm_stderr,none"] = json!(norm.stderr);
            higher["acc_norm"] = json!(true);
        }
        results.insert(t.task.clone(), r);
        shots.insert(t.task.clone(), json!(summary.num_fewshot));
        samples.insert(t.task.clone(), json!({"effective": t.n}));
        better.insert(t.task.clone(), higher);
    }
    let field = |key: &str| identity.get(key).map_or(Value::Null, |v| json!(v));
    json!({
        "results": results,
        "n-shot": shots,
        "n-samples": samples,
        "higher_is_better": better,
        "config": {
            "model": "sweelol",
            "model_args": field("model"),
            "adapter": field("adapter"),
            "num_fewshot": summary.num_fewshot,
            "limit": summary.limit,
            "backend": field("backend"),
            "dtype": field("dtype"),
        },
        "total_evaluation_time_seconds": format!("{:.2}", summary.seconds),
    })
}

fn progress_bar(show: bool, len: u64, name: &str) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{prefix:>36} [{bar:30}] {pos}/{len} docs {per_sec} eta {eta}")
            .unwrap()
            .progress_chars("=> "),
    );
    bar.set_prefix(name.to_string());
    bar
}

/// The summary as a Markdown table: acc (± 95% CI half-width) per task, then Average MMLU.
pub fn format_table(summary: &EvalSummary) -> String {
    let mut s = String::from("| task | n | acc (%) | ±95% CI | acc_norm (%) |\n|---|---:|---:|---:|---:|\n");
    for t in &summary.tasks {
        let norm = t.acc_norm.as_ref().map(|m| format!("{:.2}", 100.0 * m.value)).unwrap_or_else(|| "–".into());
        s += &format!(
            "| {} | {} | {:.2} | {:.2} | {} |\n",
            t.task,
            t.n,
            100.0 * t.acc.value,
            100.0 * 1.96 * t.acc.stderr,
            norm
        );
    }
    if let Some(avg) = summary.mmlu_average {
        s += &format!("| Average MMLU | | {:.2} | | |\n", 100.0 * avg);
    }
    s
}
