//! The study's outputs. First the statistics ([`Report::compute`]): per row and task the
//! accuracy with its 95% interval, the published number, an exact McNemar test against
//! Baseline paired by `doc_id` with Holm's correction over all of them, Average MMLU with
//! a paired bootstrap interval, the spread across seeds, and the published findings
//! judged (`findings.rs`), and each row's greedy answers to the same held-out prompts
//! (`answers.rs`). Then the renderings: `table.md`, `table.csv`, `table.json`,
//! `plot.svg` and `manifest.json`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;
use serde_json::json;
use sweelol_dolly::DollyRecord;
use sweelol_eval::DocResult;

use crate::answers;
use crate::findings::{judge_findings, Finding, Metric, Scores};
use crate::preset::{Limit, Preset, RowResult};
use crate::stats::{holm, mcnemar_paired, paired, Estimate};

/// The limit the published study used; a table at another limit says so.
const PUBLISHED_LIMIT: Limit = Limit::Docs(200);

/// The published study's table and findings (`published` in a preset).
#[derive(Default)]
pub struct Published {
    /// Row -> task (or `average_mmlu`) -> acc in %.
    pub rows: BTreeMap<String, BTreeMap<String, f64>>,
    pub findings: Vec<(u64, String)>,
}

impl Published {
    pub fn load(path: &Path) -> Result<Published> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let v: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))?;
        let rows = v["rows"]
            .as_object()
            .with_context(|| format!("{}: no `rows` object", path.display()))?
            .iter()
            .map(|(row, cells)| {
                let cells = cells.as_object().into_iter().flatten().filter_map(|(k, x)| Some((k.clone(), x.as_f64()?)));
                (row.clone(), cells.collect())
            })
            .collect();
        let findings = v["findings"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| Some((f["id"].as_u64()?, f["claim"].as_str()?.to_string())))
            .collect();
        Ok(Published { rows, findings })
    }
}

/// Short column names for the table.
pub(crate) fn column(task: &str) -> String {
    match task {
        "hellaswag" => "HellaSwag".into(),
        "mmlu_formal_logic" => "Formal Logic".into(),
        "mmlu_high_school_computer_science" => "HS CS".into(),
        "mmlu_professional_law" => "Prof. Law".into(),
        "mmlu_abstract_algebra" => "Abstract Algebra".into(),
        "mmlu_high_school_mathematics" => "HS Math".into(),
        other => other.trim_start_matches("mmlu_").to_string(),
    }
}

/// Reads a task's per-document results.
fn read_docs(path: &Path) -> Result<Vec<DocResult>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .enumerate()
        .map(|(i, l)| serde_json::from_str(l).with_context(|| format!("{}:{}: not a document result", path.display(), i + 1)))
        .collect()
}

/// One row and task of the table.
#[derive(Clone, Debug, Serialize)]
pub struct Cell {
    /// Accuracy in % (the mean over seeds when there are several).
    pub acc: f64,
    /// 95% interval of the accuracy over documents (first seed), in %.
    pub ci95: [f64; 2],
    pub acc_norm: Option<f64>,
    pub n: usize,
    pub published: Option<f64>,
    /// Exact McNemar p against Baseline (first seed), paired by doc_id, and Holm-adjusted
    /// over every row and task.
    pub p_vs_baseline: Option<f64>,
    pub p_holm: Option<f64>,
    /// Standard deviation of acc across seeds, in points (several seeds only).
    pub seed_sd: Option<f64>,
}

/// One row of the table.
#[derive(Clone, Debug, Serialize)]
pub struct TableRow {
    pub row: String,
    pub seeds: Vec<u64>,
    pub tasks: BTreeMap<String, Cell>,
    /// Average MMLU in % with its paired bootstrap 95% interval over documents.
    pub average_mmlu: Option<Estimate>,
    /// Average MMLU minus Baseline's, paired bootstrap 95% interval (points).
    pub average_mmlu_vs_baseline: Option<Estimate>,
    pub published_average_mmlu: Option<f64>,
    /// Held-out Dolly loss before and after training (first seed), for rows that train.
    pub held_out_loss: Option<[f64; 2]>,
    /// Training record(s) and eval time, one per seed.
    pub train: Vec<serde_json::Value>,
    pub eval_seconds: f64,
}

/// Everything the renderings show.
#[derive(Serialize)]
pub struct Report {
    pub preset: String,
    pub tasks: Vec<String>,
    pub limit: Limit,
    pub num_fewshot: usize,
    /// What the rows trained in and what the evaluation computed in.
    pub train_dtype: String,
    pub eval_dtype: String,
    /// Whether the limit is the published study's (200); otherwise its numbers are on
    /// other documents and only indicative.
    pub same_limit_as_published: bool,
    pub rows: Vec<TableRow>,
    pub findings: Vec<Finding>,
    /// Where the rule that turns comparisons into verdicts is written down.
    pub decision_rule: &'static str,
    /// The held-out Dolly prompts and every row's greedy answer to each.
    pub answers: Vec<PromptAnswers>,
}

/// One held-out prompt, its Dolly reference response and each row's greedy answer.
#[derive(Clone, Debug, Serialize)]
pub struct PromptAnswers {
    pub category: String,
    /// The user turn: the instruction, and the context when there is one.
    pub prompt: String,
    pub reference: String,
    /// `(row, answer)` in the preset's row order, for rows with answers.
    pub answers: Vec<RowAnswer>,
}

#[derive(Clone, Debug, Serialize)]
pub struct RowAnswer {
    pub row: String,
    pub answer: String,
}

/// Prompt by prompt, each row's answer (first seed), in row order.
fn answers_by_prompt(prompts: &[DollyRecord], results: &[RowResult]) -> Vec<PromptAnswers> {
    prompts
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let mut seen = std::collections::BTreeSet::new();
            let answers = results
                .iter()
                .filter(|r| seen.insert(r.row.clone()))
                .filter_map(|r| Some(RowAnswer { row: r.row.clone(), answer: r.answers.as_ref()?.get(i)?.clone() }))
                .collect();
            PromptAnswers {
                category: p.category.clone(),
                prompt: sweelol_dolly::user_text(p),
                reference: sweelol_dolly::py_strip(&p.response).to_string(),
                answers,
            }
        })
        .collect()
}

/// The per-document results of each row's first seed: row -> task -> docs.
fn first_seed_scores(results: &[RowResult], tasks: &[String]) -> Result<Scores> {
    let mut scores = Scores { tasks: tasks.to_vec(), ..Scores::default() };
    for r in results {
        if scores.rows.contains_key(&r.row) {
            continue;
        }
        let mut by_task = BTreeMap::new();
        for t in r.eval.tasks.iter().filter(|t| tasks.contains(&t.task)) {
            by_task.insert(t.task.clone(), read_docs(&r.eval_dir.join(format!("{}.jsonl", t.task)))?);
        }
        scores.rows.insert(r.row.clone(), by_task);
    }
    Ok(scores)
}

fn sd(xs: &[f64]) -> f64 {
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    (xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0)).sqrt()
}

impl Report {
    /// The statistics of `results` (one entry per row and seed, in preset order).
    pub fn compute(preset: &Preset, published: &Published, results: &[RowResult], prompts: &[DollyRecord]) -> Result<Report> {
        let tasks = &preset.eval.tasks;
        let scores = first_seed_scores(results, tasks)?;
        let baseline = preset.baseline().map(|b| b.name.clone()).filter(|b| scores.rows.contains_key(b));
        let mut rows = Vec::new();
        // (row index, task) of every test against Baseline, for Holm.
        let mut tests: Vec<(usize, String, f64)> = Vec::new();
        for spec in &preset.rows {
            let runs: Vec<&RowResult> = results.iter().filter(|r| r.row == spec.name).collect();
            let Some(first) = runs.first() else { continue };
            let docs = &scores.rows[&spec.name];
            let pubs = published.rows.get(&spec.name);
            let mut cells = BTreeMap::new();
            for task in tasks {
                let Some(summary) = first.eval.tasks.iter().find(|t| &t.task == task) else { continue };
                let accs: Vec<f64> = runs
                    .iter()
                    .filter_map(|r| r.eval.tasks.iter().find(|t| &t.task == task).map(|t| 100.0 * t.acc.value))
                    .collect();
                let p = match &baseline {
                    Some(b) if *b != spec.name => {
                        let (ours, base) = paired(&docs[task], &scores.rows[b][task], &format!("{} vs {b} on {task}", spec.name))?;
                        let p = mcnemar_paired(&ours, &base);
                        tests.push((rows.len(), task.clone(), p));
                        Some(p)
                    }
                    _ => None,
                };
                cells.insert(
                    task.clone(),
                    Cell {
                        acc: accs.iter().sum::<f64>() / accs.len() as f64,
                        ci95: [100.0 * summary.acc.ci95[0], 100.0 * summary.acc.ci95[1]],
                        acc_norm: summary.acc_norm.as_ref().map(|m| 100.0 * m.value),
                        n: summary.n,
                        published: pubs.and_then(|p| p.get(task).copied()),
                        p_vs_baseline: p,
                        p_holm: None,
                        seed_sd: (accs.len() > 1).then(|| sd(&accs)),
                    },
                );
            }
            let average_mmlu = scores.mean(&spec.name, &Metric::AverageMmlu);
            let average_mmlu_vs_baseline = match &baseline {
                Some(b) if *b != spec.name => scores.diff(&spec.name, b, &Metric::AverageMmlu)?,
                _ => None,
            };
            rows.push(TableRow {
                row: spec.name.clone(),
                seeds: runs.iter().filter_map(|r| r.seed).collect(),
                tasks: cells,
                average_mmlu,
                average_mmlu_vs_baseline,
                published_average_mmlu: pubs.and_then(|p| p.get("average_mmlu").copied()),
                held_out_loss: first.train.as_ref().and_then(|t| {
                    Some([t.details["eval_loss_before"].as_f64()?, t.details["eval_loss"].as_f64()?])
                }),
                train: runs.iter().filter_map(|r| r.train.as_ref().map(|t| json!(t))).collect(),
                eval_seconds: runs.iter().map(|r| r.eval_seconds).sum(),
            });
        }
        let adjusted = holm(&tests.iter().map(|t| t.2).collect::<Vec<_>>());
        for ((row, task, _), p) in tests.iter().zip(adjusted) {
            if let Some(cell) = rows[*row].tasks.get_mut(task) {
                cell.p_holm = Some(p);
            }
        }
        let findings = judge_findings(&published.findings, &scores)?;
        Ok(Report {
            preset: preset.name.clone(),
            tasks: tasks.clone(),
            limit: preset.eval.limit,
            num_fewshot: preset.eval.num_fewshot,
            train_dtype: preset.overrides.dtype.map_or("f32", crate::preset::DtypeChoice::as_str).to_string(),
            eval_dtype: preset.eval.dtype.to_string(),
            same_limit_as_published: preset.eval.limit == PUBLISHED_LIMIT,
            rows,
            findings,
            decision_rule: "docs/findings.md",
            answers: answers_by_prompt(prompts, results),
        })
    }

    fn markdown(&self) -> Result<String> {
        let mut md = String::new();
        if !self.same_limit_as_published {
            writeln!(
                md,
                "**Limit {} documents per task, not the published 200**: the published numbers beside ours are on \
                 other documents and only indicative.\n",
                self.limit
            )?;
        }
        let header: Vec<String> = self.tasks.iter().map(|t| column(t)).collect();
        writeln!(md, "| Model | {} | Average MMLU |", header.join(" | "))?;
        writeln!(md, "|---|{}---:|", "---:|".repeat(self.tasks.len()))?;
        for r in &self.rows {
            let mut cells = Vec::new();
            for task in &self.tasks {
                let Some(c) = r.tasks.get(task) else {
                    cells.push("–".to_string());
                    continue;
                };
                let mut cell = format!("{:.2} ±{:.1}", c.acc, (c.ci95[1] - c.ci95[0]) / 2.0);
                if let Some(sd) = c.seed_sd {
                    write!(cell, " (sd {sd:.1} over {} seeds)", r.seeds.len())?;
                }
                if let Some(p) = c.published {
                    write!(cell, " (pub. {p:.2})")?;
                }
                if let (Some(p), Some(h)) = (c.p_vs_baseline, c.p_holm) {
                    write!(cell, " p={p:.2} (Holm {h:.2})")?;
                }
                cells.push(cell);
            }
            let mut avg = match &r.average_mmlu {
                Some(a) => format!("{:.2} [{:.1}, {:.1}]", a.value, a.ci95[0], a.ci95[1]),
                None => "–".into(),
            };
            if let Some(p) = r.published_average_mmlu {
                write!(avg, " (pub. {p:.2})")?;
            }
            if let Some(d) = &r.average_mmlu_vs_baseline {
                write!(avg, " Δ {:+.2} [{:+.1}, {:+.1}]", d.value, d.ci95[0], d.ci95[1])?;
            }
            writeln!(md, "| {} | {} | {avg} |", r.row, cells.join(" | "))?;
        }
        writeln!(
            md,
            "\nacc in %, ± = 95% CI half-width over documents; pub. = the published study (bf16 hub weights, limit \
             200); p = exact McNemar test of per-document correctness against Baseline (paired by doc_id), Holm = \
             its Holm-adjusted value over all {} tests; Average MMLU [95% paired bootstrap interval], Δ = minus \
             Baseline's. limit {}, {}-shot; trained in {}, evaluated in {}.",
            self.rows.iter().flat_map(|r| r.tasks.values()).filter(|c| c.p_vs_baseline.is_some()).count(),
            self.limit,
            self.num_fewshot,
            self.train_dtype,
            self.eval_dtype
        )?;
        let losses: Vec<String> = self
            .rows
            .iter()
            .filter_map(|r| r.held_out_loss.map(|[a, b]| format!("{} {a:.3} → {b:.3}", r.row)))
            .collect();
        if !losses.is_empty() {
            writeln!(md, "\nHeld-out Dolly loss before → after training: {}.", losses.join(", "))?;
        }
        if !self.findings.is_empty() {
            writeln!(md, "\n**The published findings** (rule: `{}`):\n", self.decision_rule)?;
            for f in &self.findings {
                let verdict = serde_json::to_value(f.verdict)?.as_str().unwrap_or_default().replace('_', " ");
                writeln!(md, "{}. {} — **{verdict}**", f.id, f.claim)?;
            }
        }
        if self.answers.iter().any(|p| !p.answers.is_empty()) {
            writeln!(md, "\n**Greedy answers to held-out Dolly prompts** (the chat format the rows trained on):")?;
            for (i, p) in self.answers.iter().enumerate() {
                writeln!(md, "\n{}. ({}) {}\n", i + 1, p.category, answers::one_line(&p.prompt, 400))?;
                writeln!(md, "| Model | Answer |\n|---|---|")?;
                writeln!(md, "| Dolly's reference | {} |", answers::one_line(&p.reference, 400))?;
                for a in &p.answers {
                    writeln!(md, "| {} | {} |", a.row, answers::one_line(&a.answer, 400))?;
                }
            }
        }
        Ok(md)
    }

    fn csv(&self) -> Result<String> {
        let mut csv = String::from("row,task,acc,ci95_low,ci95_high,acc_norm,n,published,p_vs_baseline,p_holm,seed_sd\n");
        let opt = |v: Option<f64>| v.map_or(String::new(), |x| format!("{x:.4}"));
        for r in &self.rows {
            for (task, c) in &r.tasks {
                writeln!(
                    csv,
                    "{},{task},{:.4},{:.4},{:.4},{},{},{},{},{},{}",
                    r.row,
                    c.acc,
                    c.ci95[0],
                    c.ci95[1],
                    opt(c.acc_norm),
                    c.n,
                    opt(c.published),
                    opt(c.p_vs_baseline),
                    opt(c.p_holm),
                    opt(c.seed_sd),
                )?;
            }
            if let Some(a) = &r.average_mmlu {
                writeln!(csv, "{},average_mmlu,{:.4},{:.4},{:.4},,,{},,,", r.row, a.value, a.ci95[0], a.ci95[1], opt(r.published_average_mmlu))?;
            }
        }
        Ok(csv)
    }

    /// Accuracy per task: one point per row with its 95% interval, the published number as
    /// a hollow diamond, and the 25% chance line (four choices in every task).
    fn svg(&self) -> String {
        let colors = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#9c755f"];
        let (gw, step, h, top, left, max) = (150.0, 16.0, 260.0, 30.0, 50.0, 70.0);
        let width = left + gw * self.tasks.len() as f64 + 190.0;
        let y = |pct: f64| top + h - h * pct / max;
        let mut s = format!(
            "<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{}' font-family='sans-serif' font-size='11'>\n",
            h + top + 60.0
        );
        for pct in [0.0, 20.0, 40.0, 60.0] {
            let _ = writeln!(s, "<line x1='{left}' x2='{}' y1='{}' y2='{}' stroke='#eee'/><text x='{}' y='{}' text-anchor='end'>{pct}%</text>", width - 190.0, y(pct), y(pct), left - 4.0, y(pct) + 4.0);
        }
        let _ = writeln!(s, "<line x1='{left}' x2='{}' y1='{}' y2='{}' stroke='#999' stroke-dasharray='4 3'/><text x='{}' y='{}' fill='#777'>chance 25%</text>", width - 190.0, y(25.0), y(25.0), width - 186.0, y(25.0) + 4.0);
        for (ti, task) in self.tasks.iter().enumerate() {
            let x0 = left + gw * ti as f64 + 16.0;
            for (ri, r) in self.rows.iter().enumerate() {
                let Some(c) = r.tasks.get(task) else { continue };
                let x = x0 + step * ri as f64;
                let color = colors[ri % colors.len()];
                let _ = writeln!(s, "<line x1='{x}' x2='{x}' y1='{}' y2='{}' stroke='{color}'/>", y(c.ci95[0]), y(c.ci95[1]));
                let _ = writeln!(s, "<circle cx='{x}' cy='{}' r='3.5' fill='{color}'><title>{}: {:.2}% [{:.1}, {:.1}]</title></circle>", y(c.acc), r.row, c.acc, c.ci95[0], c.ci95[1]);
                if let Some(p) = c.published {
                    let (px, py) = (x, y(p));
                    let _ = writeln!(s, "<path d='M{px} {} L{} {py} L{px} {} L{} {py} Z' fill='none' stroke='{color}'><title>{} published: {p:.2}%</title></path>", py - 4.0, px + 4.0, py + 4.0, px - 4.0, r.row);
                }
            }
            let _ = writeln!(s, "<text x='{}' y='{}' text-anchor='middle'>{}</text>", x0 + step * self.rows.len() as f64 / 2.0, top + h + 16.0, column(task));
        }
        for (ri, r) in self.rows.iter().enumerate() {
            let (x, yy) = (width - 170.0, top + 14.0 * ri as f64);
            let _ = writeln!(s, "<circle cx='{}' cy='{}' r='4' fill='{}'/><text x='{}' y='{}'>{}</text>", x + 5.0, yy + 5.0, colors[ri % colors.len()], x + 14.0, yy + 9.0, r.row);
        }
        let yy = top + 14.0 * self.rows.len() as f64 + 6.0;
        let _ = writeln!(s, "<path d='M{} {} l4 4 l-4 4 l-4 -4 Z' fill='none' stroke='#333'/><text x='{}' y='{}'>published</text>", width - 165.0, yy, width - 156.0, yy + 8.0);
        let _ = writeln!(s, "<text x='{left}' y='18' font-size='13'>Accuracy per task, 95% intervals (zero-shot, limit {})</text></svg>", self.limit);
        s
    }
}

/// The commit the binary was built from (`build.rs`), if `git` could tell.
pub fn git_commit() -> Option<String> {
    Some(crate::provenance::COMMIT.to_string()).filter(|c| c != "unknown")
}

/// Everything that produced the table: configs (verbatim), commit, backend, stage times.
fn manifest(preset: &Preset, backend: &str, results: &[RowResult], wall_seconds: f64) -> serde_json::Value {
    let mut files: Vec<(String, PathBuf)> = vec![("preset".to_string(), preset.file.clone())];
    for row in &preset.rows {
        if let Some(p) = &row.config {
            files.push((row.name.clone(), p.clone()));
        }
    }
    let configs: BTreeMap<String, String> = files
        .into_iter()
        .map(|(k, p)| (k, std::fs::read_to_string(&p).unwrap_or_else(|e| format!("<{}: {e}>", p.display()))))
        .collect();
    let stages: Vec<serde_json::Value> = results
        .iter()
        .map(|r| {
            json!({
                "row": r.row, "seed": r.seed,
                "train_seconds": r.train.as_ref().map(|t| t.seconds),
                "train": r.train.as_ref().map(|t| &t.details),
                "eval_seconds": r.eval_seconds,
                "eval_docs_per_second": r.eval.docs_per_second,
            })
        })
        .collect();
    json!({
        "preset": preset.name,
        "commit": git_commit(),
        "backend": backend,
        "wall_seconds_this_invocation": wall_seconds,
        "peak_rss_mib": peak_rss_mib(),
        "stages": stages,
        "configs": configs,
    })
}

/// Writes table.md/.csv/.json, plot.svg and manifest.json into `run_dir`.
pub fn write_report(
    run_dir: &Path,
    preset: &Preset,
    backend: &str,
    results: &[RowResult],
    prompts: &[DollyRecord],
    wall_seconds: f64,
) -> Result<()> {
    let published = match &preset.published {
        Some(path) if path.is_file() => Published::load(path)?,
        Some(path) => {
            eprintln!("note: {} not found; the table has no published numbers", path.display());
            Published::default()
        }
        None => Published::default(),
    };
    let report = Report::compute(preset, &published, results, prompts)?;
    crate::model_card::write_cards(&report, results)?;
    std::fs::write(run_dir.join("table.md"), report.markdown()?)?;
    std::fs::write(run_dir.join("table.csv"), report.csv()?)?;
    let mut table = serde_json::to_value(&report)?;
    relative_paths(&mut table, run_dir);
    std::fs::write(run_dir.join("table.json"), serde_json::to_string_pretty(&table)?)?;
    std::fs::write(run_dir.join("plot.svg"), report.svg())?;
    let mut manifest = manifest(preset, backend, results, wall_seconds);
    relative_paths(&mut manifest, run_dir);
    std::fs::write(run_dir.join("manifest.json"), serde_json::to_string_pretty(&manifest)?)?;
    Ok(())
}

/// Rewrites every string in `value` that names a path inside `root` relative to `root`, so a
/// results folder copied elsewhere (or committed) carries no path of the machine that made
/// it. Other strings are left as they are.
fn relative_paths(value: &mut serde_json::Value, root: &Path) {
    let absolute_root = std::path::absolute(root).unwrap_or_else(|_| root.to_path_buf());
    rewrite_paths(value, &[root, &absolute_root]);
}

/// [`relative_paths`] below `value`, for each of `roots` (the folder as given and absolute).
fn rewrite_paths(value: &mut serde_json::Value, roots: &[&Path]) {
    match value {
        serde_json::Value::String(s) => {
            if let Some(rel) = roots.iter().find_map(|root| Path::new(s.as_str()).strip_prefix(root).ok()) {
                *s = rel.display().to_string();
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(|v| rewrite_paths(v, roots)),
        serde_json::Value::Object(map) => map.values_mut().for_each(|v| rewrite_paths(v, roots)),
        _ => {}
    }
}

/// Starts a new peak: after this, [`peak_rss_mib`] reports the peak since now (Linux
/// `clear_refs` 5), so a bench can say which technique sets the process's peak.
pub fn reset_peak_rss() {
    std::fs::write("/proc/self/clear_refs", "5").ok();
}

/// Peak resident memory of this process (Linux `VmHWM`), in MiB, since it started or since
/// the last [`reset_peak_rss`].
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

#[cfg(test)]
mod tests;
