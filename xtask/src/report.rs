//! The study's outputs: the table (Markdown, CSV, JSON) with the published numbers beside
//! ours, 95% confidence intervals, a paired test of each row against Baseline per task, an
//! SVG plot and a manifest of everything that produced them.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;
use serde_json::json;
use sweelol_eval::DocResult;

use crate::preset::{Preset, Row, RowResult};

/// The published study's numbers (bf16 hub weights, limit 200), in percent, for the rows
/// the issue tracker gives; rows it does not give are left blank.
pub fn published(row: Row) -> Option<BTreeMap<&'static str, f64>> {
    match row {
        Row::Baseline => Some(BTreeMap::from([
            ("hellaswag", 43.50),
            ("mmlu_formal_logic", 25.40),
            ("mmlu_high_school_computer_science", 24.00),
            ("mmlu_professional_law", 27.00),
            ("mmlu_abstract_algebra", 22.00),
            ("mmlu_high_school_mathematics", 26.00),
            ("average_mmlu", 24.88),
        ])),
        _ => None,
    }
}

/// Short column names for the table.
fn column(task: &str) -> String {
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

/// Exact two-sided McNemar test on paired per-document correctness: `b` docs right only in
/// A, `c` right only in B; p = P(|X - n/2| >= |b - n/2|) for X ~ Binomial(n = b + c, 1/2).
pub fn mcnemar_exact(b: usize, c: usize) -> f64 {
    let n = b + c;
    if n == 0 {
        return 1.0;
    }
    let k = b.min(c);
    // P(X <= k) with log-space binomial terms, doubled and capped at 1.
    let ln_fact = |m: usize| (1..=m).map(|i| (i as f64).ln()).sum::<f64>();
    let ln_n = ln_fact(n);
    let tail: f64 = (0..=k).map(|i| (ln_n - ln_fact(i) - ln_fact(n - i) - n as f64 * 2f64.ln()).exp()).sum();
    (2.0 * tail).min(1.0)
}

fn read_docs(path: &Path) -> Vec<DocResult> {
    std::fs::read_to_string(path)
        .map(|t| t.lines().filter_map(|l| serde_json::from_str(l).ok()).collect())
        .unwrap_or_default()
}

/// One row and task of the table: everything the four renderings show.
struct Cell {
    task: String,
    /// Accuracy in %, its 95% CI bounds, acc_norm in % (HellaSwag).
    acc: f64,
    ci95: [f64; 2],
    half_width: f64,
    acc_norm: Option<f64>,
    n: usize,
    published: Option<f64>,
    /// Exact McNemar p against Baseline (None for Baseline itself).
    p_vs_baseline: Option<f64>,
}

/// One row of the table.
struct TableRow<'a> {
    result: &'a RowResult,
    /// One per preset task; `None` where the row has no result for it.
    cells: Vec<Option<Cell>>,
    average_mmlu: Option<f64>,
    published_average_mmlu: Option<f64>,
}

/// McNemar's p of `ours` against `base` on one task's per-document files.
fn p_vs_baseline(ours: &RowResult, base: &RowResult, task: &str) -> f64 {
    let ours = read_docs(&ours.eval_dir.join(format!("{task}.jsonl")));
    let base = read_docs(&base.eval_dir.join(format!("{task}.jsonl")));
    let (mut only_base, mut only_ours) = (0, 0);
    for (o, b) in ours.iter().zip(&base) {
        match (b.acc > 0.5, o.acc > 0.5) {
            (true, false) => only_base += 1,
            (false, true) => only_ours += 1,
            _ => {}
        }
    }
    mcnemar_exact(only_base, only_ours)
}

/// The statistics of every evaluated row (first step of the report; rendering follows).
fn table_rows<'a>(tasks: &[String], results: &'a BTreeMap<Row, RowResult>) -> Vec<TableRow<'a>> {
    let baseline = results.get(&Row::Baseline);
    let evaluated = results.iter().filter(|(_, r)| !r.eval.tasks.is_empty());
    evaluated
        .map(|(row, r)| {
            let pubs = published(*row);
            let cells = tasks
                .iter()
                .map(|task| {
                    let t = r.eval.tasks.iter().find(|t| &t.task == task)?;
                    Some(Cell {
                        task: task.clone(),
                        acc: 100.0 * t.acc.value,
                        ci95: [100.0 * t.acc.ci95[0], 100.0 * t.acc.ci95[1]],
                        half_width: 196.0 * t.acc.stderr,
                        acc_norm: t.acc_norm.as_ref().map(|m| 100.0 * m.value),
                        n: t.n,
                        published: pubs.as_ref().and_then(|p| p.get(task.as_str()).copied()),
                        p_vs_baseline: baseline.filter(|_| *row != Row::Baseline).map(|b| p_vs_baseline(r, b, task)),
                    })
                })
                .collect();
            TableRow {
                result: r,
                cells,
                average_mmlu: r.eval.mmlu_average.map(|a| 100.0 * a),
                published_average_mmlu: pubs.as_ref().and_then(|p| p.get("average_mmlu").copied()),
            }
        })
        .collect()
}

fn render_markdown(rows: &[TableRow], preset: &Preset) -> Result<String> {
    let tasks = &preset.eval.tasks;
    let mut md = String::new();
    let header: Vec<String> = tasks.iter().map(|t| column(t)).collect();
    writeln!(md, "| Model | {} | Average MMLU |", header.join(" | "))?;
    writeln!(md, "|---|{}---:|", "---:|".repeat(tasks.len()))?;
    for r in rows {
        let mut cells = Vec::new();
        for c in &r.cells {
            let Some(c) = c else {
                cells.push("–".to_string());
                continue;
            };
            let mut cell = format!("{:.2} ±{:.1}", c.acc, c.half_width);
            if let Some(p) = c.published {
                write!(cell, " (pub. {p:.2}, {:+.2})", c.acc - p)?;
            }
            if let Some(p) = c.p_vs_baseline {
                write!(cell, " p={p:.2}")?;
            }
            cells.push(cell);
        }
        let avg_cell = match (r.average_mmlu, r.published_average_mmlu) {
            (Some(a), Some(p)) => format!("{a:.2} (pub. {p:.2}, {:+.2})", a - p),
            (Some(a), None) => format!("{a:.2}"),
            _ => "–".into(),
        };
        writeln!(md, "| {} | {} | {avg_cell} |", r.result.row.label(), cells.join(" | "))?;
    }
    writeln!(
        md,
        "\nacc in %, ± = 95% CI half-width (1.96 × lm-eval's stderr); pub. = the published study (bf16 hub \
         weights); p = exact McNemar test of per-document correctness against Baseline. limit {}, {}-shot.",
        preset.eval.limit, preset.eval.num_fewshot
    )?;
    Ok(md)
}

fn render_csv(rows: &[TableRow]) -> Result<String> {
    let mut csv = String::from("row,source,task,acc,ci95_low,ci95_high,acc_norm,published,diff_vs_published,p_vs_baseline\n");
    let opt = |v: Option<f64>, digits: usize| v.map_or(String::new(), |x| format!("{x:.digits$}"));
    for r in rows {
        let source = r.result.train.as_ref().map_or("base".to_string(), |t| t.model_source.clone());
        for c in r.cells.iter().flatten() {
            writeln!(
                csv,
                "{},{source},{},{:.4},{:.4},{:.4},{},{},{},{}",
                r.result.row.label(),
                c.task,
                c.acc,
                c.ci95[0],
                c.ci95[1],
                opt(c.acc_norm, 4),
                opt(c.published, 2),
                opt(c.published.map(|p| c.acc - p), 4),
                opt(c.p_vs_baseline, 4),
            )?;
        }
    }
    Ok(csv)
}

fn render_json(rows: &[TableRow]) -> serde_json::Value {
    let rows: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| {
            let tasks: serde_json::Map<String, serde_json::Value> = r
                .cells
                .iter()
                .flatten()
                .map(|c| {
                    let v = json!({"acc": c.acc, "ci95": c.ci95, "acc_norm": c.acc_norm, "n": c.n,
                                   "published": c.published, "p_vs_baseline": c.p_vs_baseline});
                    (c.task.clone(), v)
                })
                .collect();
            json!({
                "row": r.result.row.label(), "tasks": tasks, "average_mmlu": r.average_mmlu,
                "published_average_mmlu": r.published_average_mmlu, "train": r.result.train,
                "eval_seconds": r.result.eval_seconds, "docs_per_second": r.result.eval.docs_per_second,
            })
        })
        .collect();
    serde_json::Value::Array(rows)
}

/// The commit the binary runs from, if `git` can tell.
fn git_commit() -> Option<String> {
    let out = std::process::Command::new("git").args(["rev-parse", "HEAD"]).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Everything that produced the table: configs (verbatim), commit, backend, stage times.
fn manifest(preset: &Preset, backend: &str, results: &BTreeMap<Row, RowResult>, wall_seconds: f64) -> serde_json::Value {
    let mut files = vec![("preset".to_string(), preset.file.clone())];
    for row in Row::ALL {
        if let Some(p) = preset.row_config(row) {
            files.push((row.dir_name().to_string(), p.to_path_buf()));
        }
    }
    let configs: BTreeMap<String, String> = files
        .into_iter()
        .map(|(k, p)| (k, std::fs::read_to_string(&p).unwrap_or_else(|e| format!("<{}: {e}>", p.display()))))
        .collect();
    json!({
        "preset": preset.name,
        "commit": git_commit(),
        "backend": backend,
        "wall_seconds_this_invocation": wall_seconds,
        "peak_rss_mib": peak_rss_mib(),
        "stages": results.iter().map(|(row, r)| (row.label().to_string(), json!({
            "train_seconds": r.train.as_ref().map(|t| t.seconds),
            "train": r.train.as_ref().map(|t| &t.details),
            "eval_seconds": r.eval_seconds,
            "eval_docs_per_second": r.eval.docs_per_second,
        }))).collect::<BTreeMap<_, _>>(),
        "configs": configs,
    })
}

/// Writes table.md/.csv/.json, plot.svg and manifest.json into `run_dir`.
pub fn write_report(
    run_dir: &Path,
    preset: &Preset,
    backend: &str,
    results: &BTreeMap<Row, RowResult>,
    wall_seconds: f64,
) -> Result<()> {
    let rows = table_rows(&preset.eval.tasks, results);
    std::fs::write(run_dir.join("table.md"), render_markdown(&rows, preset)?)?;
    std::fs::write(run_dir.join("table.csv"), render_csv(&rows)?)?;
    std::fs::write(run_dir.join("table.json"), serde_json::to_string_pretty(&render_json(&rows))?)?;
    std::fs::write(run_dir.join("plot.svg"), svg_plot(&preset.eval.tasks, results))?;
    let manifest = manifest(preset, backend, results, wall_seconds);
    std::fs::write(run_dir.join("manifest.json"), serde_json::to_string_pretty(&manifest)?)?;
    Ok(())
}

/// Peak resident memory of this process (Linux `VmHWM`), in MiB.
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Grouped bars: one group per task, one bar per row, acc in %.
fn svg_plot(tasks: &[String], results: &BTreeMap<Row, RowResult>) -> String {
    let rows: Vec<&RowResult> = results.values().filter(|r| !r.eval.tasks.is_empty()).collect();
    let colors = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1"];
    let (gw, bw, h, top, left) = (150.0, 18.0, 260.0, 30.0, 50.0);
    let width = left + gw * tasks.len() as f64 + 170.0;
    let mut s = format!(
        "<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{}' font-family='sans-serif' font-size='11'>\n",
        h + top + 60.0
    );
    for pct in [0, 25, 50] {
        let y = top + h - h * pct as f64 / 60.0;
        let _ = writeln!(s, "<line x1='{left}' x2='{}' y1='{y}' y2='{y}' stroke='#ddd'/><text x='{}' y='{}' text-anchor='end'>{pct}%</text>", width - 170.0, left - 4.0, y + 4.0);
    }
    for (ti, task) in tasks.iter().enumerate() {
        let x0 = left + gw * ti as f64 + 10.0;
        for (ri, r) in rows.iter().enumerate() {
            if let Some(t) = r.eval.tasks.iter().find(|t| &t.task == task) {
                let v = 100.0 * t.acc.value;
                let bh = h * v / 60.0;
                let _ = writeln!(
                    s,
                    "<rect x='{}' y='{}' width='{}' height='{bh}' fill='{}'><title>{}: {v:.2}%</title></rect>",
                    x0 + bw * ri as f64,
                    top + h - bh,
                    bw - 2.0,
                    colors[ri % colors.len()],
                    r.row.label()
                );
            }
        }
        let _ = writeln!(s, "<text x='{}' y='{}' text-anchor='middle'>{}</text>", x0 + bw * rows.len() as f64 / 2.0, top + h + 16.0, column(task));
    }
    for (ri, r) in rows.iter().enumerate() {
        let y = top + 14.0 * ri as f64;
        let x = width - 160.0;
        let _ = writeln!(s, "<rect x='{x}' y='{y}' width='10' height='10' fill='{}'/><text x='{}' y='{}'>{}</text>", colors[ri % colors.len()], x + 14.0, y + 9.0, r.row.label());
    }
    let _ = writeln!(s, "<text x='{left}' y='18' font-size='13'>Accuracy per task (zero-shot)</text></svg>");
    s
}

#[cfg(test)]
mod tests {
    use super::mcnemar_exact;

    #[test]
    fn mcnemar_matches_binomial_tables() {
        // b=0, c=5: p = 2 * 0.5^5 = 0.0625.
        assert!((mcnemar_exact(0, 5) - 0.0625).abs() < 1e-12);
        // b=2, c=8: p = 2 * (1 + 10 + 45) / 1024 = 0.109375.
        assert!((mcnemar_exact(2, 8) - 0.109375).abs() < 1e-12);
        assert_eq!(mcnemar_exact(3, 3), 1.0);
        assert_eq!(mcnemar_exact(0, 0), 1.0);
    }
}
