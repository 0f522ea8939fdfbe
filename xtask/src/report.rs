//! The study's outputs: the table (Markdown, CSV, JSON) with the published numbers beside
//! ours, 95% confidence intervals, a paired test of each row against Baseline per task, an
//! SVG plot and a manifest of everything that produced them.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;
use serde_json::json;
use sweelol_backend::BackendKind;
use sweelol_eval::DocResult;

use crate::study::{Preset, Row, RowResult};

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

pub fn write_report(
    run_dir: &Path,
    preset: &Preset,
    backend: &BackendKind,
    results: &BTreeMap<Row, RowResult>,
    wall_seconds: f64,
) -> Result<()> {
    let tasks = &preset.eval.tasks;
    let baseline = results.get(&Row::Baseline);
    let mut md = String::new();
    let mut csv = String::from("row,source,task,acc,ci95_low,ci95_high,acc_norm,published,diff_vs_published,p_vs_baseline\n");
    let mut rows_json = Vec::new();

    let header: Vec<String> = tasks.iter().map(|t| column(t)).collect();
    writeln!(md, "| Model | {} | Average MMLU |", header.join(" | "))?;
    writeln!(md, "|---|{}---:|", "---:|".repeat(tasks.len()))?;
    for (row, r) in results.iter().filter(|(_, r)| !r.eval.tasks.is_empty()) {
        let pubs = published(*row);
        let mut cells = Vec::new();
        let mut task_json = serde_json::Map::new();
        for task in tasks {
            let Some(t) = r.eval.tasks.iter().find(|t| &t.task == task) else {
                cells.push("–".into());
                continue;
            };
            let acc = 100.0 * t.acc.value;
            let p_base = baseline.filter(|_| *row != Row::Baseline).map(|b| {
                let ours = read_docs(&r.eval_dir.join(format!("{task}.jsonl")));
                let base = read_docs(&b.eval_dir.join(format!("{task}.jsonl")));
                let (mut only_base, mut only_ours) = (0, 0);
                for (o, b) in ours.iter().zip(&base) {
                    match (b.acc > 0.5, o.acc > 0.5) {
                        (true, false) => only_base += 1,
                        (false, true) => only_ours += 1,
                        _ => {}
                    }
                }
                mcnemar_exact(only_base, only_ours)
            });
            let published = pubs.as_ref().and_then(|p| p.get(task.as_str()).copied());
            let mut cell = format!("{acc:.2} ±{:.1}", 196.0 * t.acc.stderr);
            if let Some(p) = published {
                write!(cell, " (pub. {p:.2}, {:+.2})", acc - p)?;
            }
            if let Some(p) = p_base {
                write!(cell, " p={p:.2}")?;
            }
            cells.push(cell);
            let norm = t.acc_norm.as_ref().map(|m| 100.0 * m.value);
            writeln!(
                csv,
                "{},{},{task},{acc:.4},{:.4},{:.4},{},{},{},{}",
                row.label(),
                r.train.as_ref().map_or("base".to_string(), |t| t.model_source.clone()),
                100.0 * t.acc.ci95[0],
                100.0 * t.acc.ci95[1],
                norm.map_or(String::new(), |n| format!("{n:.4}")),
                published.map_or(String::new(), |p| format!("{p:.2}")),
                published.map_or(String::new(), |p| format!("{:.4}", acc - p)),
                p_base.map_or(String::new(), |p| format!("{p:.4}")),
            )?;
            task_json.insert(
                task.clone(),
                json!({"acc": acc, "ci95": [100.0 * t.acc.ci95[0], 100.0 * t.acc.ci95[1]], "acc_norm": norm,
                       "n": t.n, "published": published, "p_vs_baseline": p_base}),
            );
        }
        let avg = r.eval.mmlu_average.map(|a| 100.0 * a);
        let pub_avg = pubs.as_ref().and_then(|p| p.get("average_mmlu").copied());
        let avg_cell = match (avg, pub_avg) {
            (Some(a), Some(p)) => format!("{a:.2} (pub. {p:.2}, {:+.2})", a - p),
            (Some(a), None) => format!("{a:.2}"),
            _ => "–".into(),
        };
        writeln!(md, "| {} | {} | {avg_cell} |", row.label(), cells.join(" | "))?;
        rows_json.push(json!({
            "row": row.label(), "tasks": task_json, "average_mmlu": avg, "published_average_mmlu": pub_avg,
            "train": r.train, "eval_seconds": r.eval_seconds, "docs_per_second": r.eval.docs_per_second,
        }));
    }
    writeln!(
        md,
        "\nacc in %, ± = 95% CI half-width (1.96 × lm-eval's stderr); pub. = the published study (bf16 hub \
         weights); p = exact McNemar test of per-document correctness against Baseline. limit {}, {}-shot.",
        preset.eval.limit, preset.eval.num_fewshot
    )?;
    std::fs::write(run_dir.join("table.md"), &md)?;
    std::fs::write(run_dir.join("table.csv"), &csv)?;
    std::fs::write(run_dir.join("table.json"), serde_json::to_string_pretty(&rows_json)?)?;
    std::fs::write(run_dir.join("plot.svg"), svg_plot(tasks, results))?;

    let configs: BTreeMap<String, String> = [
        ("preset", preset.file.clone()),
        ("pruning", preset.rows.pruning.clone()),
        ("prompt_tune", preset.rows.prompt_tune.clone()),
        ("full_finetune", preset.rows.full_finetune.clone()),
        ("lora", preset.rows.lora.clone()),
        ("finetuned_pruned", preset.rows.finetuned_pruned.clone()),
        ("kd_pruned", preset.rows.kd_pruned.clone()),
    ]
    .into_iter()
    .map(|(k, p)| (k.to_string(), std::fs::read_to_string(&p).unwrap_or_else(|e| format!("<{}: {e}>", p.display()))))
    .collect();
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    let manifest = json!({
        "preset": preset.name,
        "commit": commit,
        "backend": backend.to_string(),
        "wall_seconds_this_invocation": wall_seconds,
        "peak_rss_mib": peak_rss_mib(),
        "stages": results.iter().map(|(row, r)| (row.label().to_string(), json!({
            "train_seconds": r.train.as_ref().map(|t| t.seconds),
            "train": r.train.as_ref().map(|t| &t.details),
            "eval_seconds": r.eval_seconds,
            "eval_docs_per_second": r.eval.docs_per_second,
        }))).collect::<BTreeMap<_, _>>(),
        "configs": configs,
    });
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
