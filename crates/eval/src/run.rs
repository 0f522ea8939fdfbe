//! Runs tasks, writes `<task>.jsonl` line by line (so a killed run resumes where it
//! stopped), `summary.json`, and the printed table.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};

use crate::scoring::{DocResult, Scorer};
use crate::tasks::{load_task, parse_task_name, STUDY_TASKS};

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error(transparent)]
    Task(#[from] crate::tasks::TaskError),
    #[error(transparent)]
    Model(#[from] sweelol_gemma::GemmaError),
    #[error("{path}: {msg}")]
    File { path: PathBuf, msg: String },
}

fn file_err(path: &Path, msg: impl ToString) -> EvalError {
    EvalError::File { path: path.to_path_buf(), msg: msg.to_string() }
}

/// Documents scored together ([`Scorer::score_docs`]): enough rows to keep two to a few
/// cores busy on short contexts, few enough that padding to the longest costs little.
const DOCS_PER_FORWARD: usize = 4;

/// What to evaluate and where the data lives.
#[derive(Clone, Debug)]
pub struct EvalOptions {
    pub tasks: Vec<String>,
    pub limit: Option<usize>,
    pub num_fewshot: usize,
    pub data_root: PathBuf,
    pub out_dir: PathBuf,
    pub show_progress: bool,
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

/// Reads finished lines of an earlier run; a torn last line (killed mid-write) is dropped.
fn read_done(path: &Path) -> Result<Vec<DocResult>, EvalError> {
    let Ok(file) = std::fs::File::open(path) else { return Ok(vec![]) };
    let mut done = Vec::new();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| file_err(path, e))?;
        match serde_json::from_str::<DocResult>(&line) {
            Ok(r) => done.push(r),
            Err(_) => {
                eprintln!("{}: line {} is incomplete; re-scoring from there", path.display(), i + 1);
                break;
            }
        }
    }
    Ok(done)
}

/// Evaluates every task, resuming finished documents, and writes the outputs.
pub fn evaluate(scorer: &Scorer, opts: &EvalOptions) -> Result<EvalSummary, EvalError> {
    std::fs::create_dir_all(&opts.out_dir).map_err(|e| file_err(&opts.out_dir, e))?;
    let start = Instant::now();
    let mut summaries = Vec::new();
    let mut total_docs = 0;
    for name in &opts.tasks {
        let spec = parse_task_name(name)?;
        let task = load_task(&spec, &opts.data_root, opts.limit, opts.num_fewshot)?;
        let path = opts.out_dir.join(format!("{name}.jsonl"));
        let mut results = read_done(&path)?;
        results.truncate(task.docs.len());
        // Rewrite what is kept (drops a torn line), then append new results.
        let mut out = std::fs::File::create(&path).map_err(|e| file_err(&path, e))?;
        for r in &results {
            writeln!(out, "{}", serde_json::to_string(r).unwrap()).map_err(|e| file_err(&path, e))?;
        }
        let bar = progress_bar(opts.show_progress, task.docs.len() as u64, name);
        bar.set_position(results.len() as u64);
        let task_start = Instant::now();
        for group in task.docs[results.len()..].chunks(DOCS_PER_FORWARD) {
            for r in scorer.score_docs(group, task.reports_acc_norm)? {
                writeln!(out, "{}", serde_json::to_string(&r).unwrap()).map_err(|e| file_err(&path, e))?;
                results.push(r);
                bar.inc(1);
            }
            out.flush().map_err(|e| file_err(&path, e))?;
        }
        bar.finish_and_clear();
        total_docs += task.docs.len();
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
        docs_per_second: total_docs as f64 / seconds.max(1e-9),
    };
    let path = opts.out_dir.join("summary.json");
    std::fs::write(&path, serde_json::to_string_pretty(&summary).unwrap()).map_err(|e| file_err(&path, e))?;
    Ok(summary)
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
