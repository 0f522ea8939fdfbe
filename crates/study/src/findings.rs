//! The published study's four findings, judged on our per-document results.
//!
//! Each claim is a list of comparisons "row A is higher / lower / not lower than row B on
//! a metric" (a task's accuracy, or Average MMLU). Each comparison is the paired
//! bootstrap 95% interval of A − B over the same documents, in points, and has an
//! outcome; the claim's verdict follows from its comparisons' outcomes. The rule, in
//! words, is in `docs/findings.md`; [`judge`] and [`verdict`] are it in code.

use std::collections::BTreeMap;

use anyhow::Result;
use serde::Serialize;
use sweelol_eval::DocResult;

use crate::stats::{bootstrap_mean_of_means, paired, paired_bootstrap_diff, Estimate};

/// How far below B row A may be, in accuracy points, and still "keep" a metric.
pub const NON_INFERIORITY_MARGIN: f64 = 5.0;

/// What a metric is averaged over.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub enum Metric {
    /// One task's accuracy.
    Task(String),
    /// The plain mean of the MMLU tasks' accuracies.
    AverageMmlu,
}

impl Metric {
    fn label(&self) -> String {
        match self {
            Metric::Task(t) => t.clone(),
            Metric::AverageMmlu => "Average MMLU".into(),
        }
    }
}

/// The direction a claim gives a comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Claimed {
    Higher,
    Lower,
    /// Not lower by more than [`NON_INFERIORITY_MARGIN`].
    NotLower,
}

/// What the data say of one comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The whole interval is on the claimed side.
    Holds,
    /// The whole interval is on the other side.
    Against,
    /// The interval straddles; the point estimate is on the claimed side.
    Agrees,
    /// The interval straddles; the point estimate is on the other side.
    Disagrees,
    /// A row or task the comparison needs was not evaluated.
    Missing,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Supported,
    NotSupported,
    Contradicted,
    Inconclusive,
}

/// One comparison's outcome from the interval of A − B (points).
pub fn judge(diff: &Estimate, claimed: Claimed) -> Outcome {
    let [lo, hi] = diff.ci95;
    match claimed {
        Claimed::Higher if lo > 0.0 => Outcome::Holds,
        Claimed::Higher if hi < 0.0 => Outcome::Against,
        Claimed::Higher if diff.value > 0.0 => Outcome::Agrees,
        Claimed::Higher => Outcome::Disagrees,
        Claimed::Lower if hi < 0.0 => Outcome::Holds,
        Claimed::Lower if lo > 0.0 => Outcome::Against,
        Claimed::Lower if diff.value < 0.0 => Outcome::Agrees,
        Claimed::Lower => Outcome::Disagrees,
        Claimed::NotLower if lo > -NON_INFERIORITY_MARGIN => Outcome::Holds,
        Claimed::NotLower if hi < -NON_INFERIORITY_MARGIN => Outcome::Against,
        Claimed::NotLower if diff.value >= -NON_INFERIORITY_MARGIN => Outcome::Agrees,
        Claimed::NotLower => Outcome::Disagrees,
    }
}

/// A claim's verdict from its comparisons: contradicted if any comparison is against it;
/// else supported if every one holds; else inconclusive if one is missing or they all at
/// least agree; else (some point estimate goes the other way) not supported.
pub fn verdict(outcomes: &[Outcome]) -> Verdict {
    if outcomes.contains(&Outcome::Against) {
        Verdict::Contradicted
    } else if !outcomes.is_empty() && outcomes.iter().all(|o| *o == Outcome::Holds) {
        Verdict::Supported
    } else if outcomes.contains(&Outcome::Missing) || !outcomes.contains(&Outcome::Disagrees) {
        Verdict::Inconclusive
    } else {
        Verdict::NotSupported
    }
}

/// One comparison of a claim, with its numbers.
#[derive(Clone, Debug, Serialize)]
pub struct Evidence {
    pub comparison: String,
    pub claimed: Claimed,
    /// A − B in accuracy points and its 95% interval; None when missing.
    pub diff: Option<Estimate>,
    pub outcome: Outcome,
}

/// A judged finding.
#[derive(Clone, Debug, Serialize)]
pub struct Finding {
    pub id: u64,
    pub claim: String,
    pub verdict: Verdict,
    pub evidence: Vec<Evidence>,
}

/// Per-document results: row -> task -> documents, and the tasks in the study's order
/// (the order Average MMLU's bootstrap resamples them in).
#[derive(Default)]
pub struct Scores {
    pub rows: BTreeMap<String, BTreeMap<String, Vec<DocResult>>>,
    pub tasks: Vec<String>,
}

impl Scores {
    /// The tasks `metric` averages over.
    fn tasks_of(&self, metric: &Metric) -> Vec<String> {
        match metric {
            Metric::Task(t) => vec![t.clone()],
            Metric::AverageMmlu => self.tasks.iter().filter(|t| t.starts_with("mmlu_")).cloned().collect(),
        }
    }

    /// Row `a` on `metric` in points with its bootstrap interval over documents; None when
    /// the row or a task is missing.
    pub fn mean(&self, a: &str, metric: &Metric) -> Option<Estimate> {
        let ra = self.rows.get(a)?;
        let xs: Vec<Vec<f64>> = self
            .tasks_of(metric)
            .iter()
            .map(|t| ra.get(t).map(|docs| docs.iter().map(|d| d.acc).collect()))
            .collect::<Option<_>>()?;
        (!xs.is_empty()).then(|| bootstrap_mean_of_means(&xs).scaled(100.0))
    }

    /// A − B on `metric` in points with its paired bootstrap interval; None when a row or
    /// task is missing.
    pub fn diff(&self, a: &str, b: &str, metric: &Metric) -> Result<Option<Estimate>> {
        let (Some(ra), Some(rb)) = (self.rows.get(a), self.rows.get(b)) else { return Ok(None) };
        let tasks = self.tasks_of(metric);
        let (mut xs, mut ys) = (Vec::new(), Vec::new());
        for task in &tasks {
            let (Some(da), Some(db)) = (ra.get(task), rb.get(task)) else { return Ok(None) };
            let (x, y) = paired(da, db, &format!("{a} vs {b} on {task}"))?;
            xs.push(x);
            ys.push(y);
        }
        if xs.is_empty() {
            return Ok(None);
        }
        Ok(Some(paired_bootstrap_diff(&xs, &ys).scaled(100.0)))
    }

    fn other_rows(&self, than: &[&str]) -> Vec<String> {
        self.rows.keys().filter(|r| !than.contains(&r.as_str())).cloned().collect()
    }
}

/// The comparisons each published finding makes (by the shared file's ids).
fn comparisons(id: u64, scores: &Scores) -> Vec<(String, String, Metric, Claimed)> {
    let c = |a: &str, b: &str, m: Metric, d: Claimed| (a.to_string(), b.to_string(), m, d);
    let task = |t: &str| Metric::Task(t.to_string());
    let mut out = Vec::new();
    match id {
        // Pruned-Baseline is the champion on Average MMLU and highest on Formal Logic and CS.
        1 => {
            for other in scores.other_rows(&["Pruned-Baseline"]) {
                for m in [Metric::AverageMmlu, task("mmlu_formal_logic"), task("mmlu_high_school_computer_science")] {
                    out.push(c("Pruned-Baseline", &other, m, Claimed::Higher));
                }
            }
            if scores.rows.len() < 2 {
                out.push(c("Pruned-Baseline", "Baseline", Metric::AverageMmlu, Claimed::Higher));
            }
        }
        // Prompt-Tune is second on MMLU (above all but Pruned-Baseline) and keeps HellaSwag.
        2 => {
            for other in scores.other_rows(&["Prompt-Tune", "Pruned-Baseline"]) {
                out.push(c("Prompt-Tune", &other, Metric::AverageMmlu, Claimed::Higher));
            }
            out.push(c("Prompt-Tune", "Baseline", task("hellaswag"), Claimed::NotLower));
        }
        // Full-Finetune and KD-Pruned drop on MMLU versus Baseline.
        3 => {
            out.push(c("Full-Finetune", "Baseline", Metric::AverageMmlu, Claimed::Lower));
            out.push(c("KD-Pruned", "Baseline", Metric::AverageMmlu, Claimed::Lower));
        }
        // Pruning and LoRA drop HellaSwag; Baseline stays the HellaSwag champion.
        4 => {
            for row in ["Pruned-Baseline", "Finetuned-Pruned", "KD-Pruned", "LoRA"] {
                out.push(c(row, "Baseline", task("hellaswag"), Claimed::Lower));
            }
            for other in scores.other_rows(&["Baseline", "Pruned-Baseline", "Finetuned-Pruned", "KD-Pruned", "LoRA"]) {
                out.push(c("Baseline", &other, task("hellaswag"), Claimed::Higher));
            }
        }
        _ => {}
    }
    out
}

/// Judges the published claims (id, text) on `scores`. Claims whose id this code does
/// not know are returned as inconclusive with no evidence.
pub fn judge_findings(claims: &[(u64, String)], scores: &Scores) -> Result<Vec<Finding>> {
    claims
        .iter()
        .map(|(id, claim)| {
            let evidence = comparisons(*id, scores)
                .into_iter()
                .map(|(a, b, metric, claimed)| {
                    let diff = scores.diff(&a, &b, &metric)?;
                    let outcome = diff.as_ref().map_or(Outcome::Missing, |d| judge(d, claimed));
                    Ok(Evidence { comparison: format!("{}: {a} − {b}", metric.label()), claimed, diff, outcome })
                })
                .collect::<Result<Vec<_>>>()?;
            let outcomes: Vec<Outcome> = evidence.iter().map(|e| e.outcome).collect();
            let verdict = if outcomes.is_empty() { Verdict::Inconclusive } else { verdict(&outcomes) };
            Ok(Finding { id: *id, claim: claim.clone(), verdict, evidence })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn docs(correct: &[bool]) -> Vec<DocResult> {
        correct
            .iter()
            .enumerate()
            .map(|(i, &c)| DocResult { doc_id: i, gold: 0, loglikelihoods: vec![], acc: f64::from(u8::from(c)), acc_norm: None })
            .collect()
    }

    /// n = 200 documents: `base_right` right for the base row; `other` differs from it on
    /// the first `down` of those (right -> wrong) and the first `up` of the others.
    fn pair(base_right: usize, down: usize, up: usize) -> (Vec<DocResult>, Vec<DocResult>) {
        let base: Vec<bool> = (0..200).map(|i| i < base_right).collect();
        let other: Vec<bool> =
            (0..200).map(|i| if i < down { false } else if i >= base_right && i < base_right + up { true } else { base[i] }).collect();
        (docs(&base), docs(&other))
    }

    fn scores(rows: &[(&str, &str, Vec<DocResult>)]) -> Scores {
        let mut s = Scores::default();
        for (row, task, d) in rows {
            s.rows.entry(row.to_string()).or_default().insert(task.to_string(), d.clone());
            if !s.tasks.iter().any(|t| t == task) {
                s.tasks.push(task.to_string());
            }
        }
        s
    }

    #[test]
    fn a_14_point_hellaswag_drop_without_reverse_discordance_is_supported() {
        // Baseline 87/200 right; LoRA loses 28 of them and gains none: -14 points.
        let (base, lora) = pair(87, 28, 0);
        let s = scores(&[("Baseline", "hellaswag", base), ("LoRA", "hellaswag", lora)]);
        let d = s.diff("LoRA", "Baseline", &Metric::Task("hellaswag".into())).unwrap().unwrap();
        assert!((d.value + 14.0).abs() < 1e-9, "{d:?}");
        assert!(d.ci95[1] < 0.0, "{d:?}");
        assert_eq!(judge(&d, Claimed::Lower), Outcome::Holds);
        assert_eq!(verdict(&[judge(&d, Claimed::Lower)]), Verdict::Supported);
    }

    #[test]
    fn a_1_point_3_average_mmlu_gain_is_inconclusive() {
        // Five MMLU tasks of 200 docs; per task the row loses `down` of Baseline's right
        // answers and gains 10: net +4, +4, +3, +2, 0 docs = (2 + 2 + 1.5 + 1 + 0) / 5 = +1.3.
        let downs = [6, 6, 7, 8, 10];
        let mut rows = Vec::new();
        for (k, down) in downs.iter().enumerate() {
            let task = Box::leak(format!("mmlu_t{k}").into_boxed_str());
            let (base, row) = pair(50, *down, 10);
            rows.push(("Baseline", &*task, base));
            rows.push(("Pruned-Baseline", &*task, row));
        }
        let s = scores(&rows);
        let d = s.diff("Pruned-Baseline", "Baseline", &Metric::AverageMmlu).unwrap().unwrap();
        assert!((d.value - 1.3).abs() < 1e-9, "{d:?}");
        assert!(d.ci95[0] <= 0.0 && d.ci95[1] > 0.0, "{d:?}");
        assert_eq!(judge(&d, Claimed::Higher), Outcome::Agrees);
        assert_eq!(verdict(&[judge(&d, Claimed::Higher)]), Verdict::Inconclusive);
    }

    #[test]
    fn verdict_rule() {
        use Outcome::*;
        assert_eq!(verdict(&[Holds, Holds]), Verdict::Supported);
        assert_eq!(verdict(&[Holds, Against]), Verdict::Contradicted);
        assert_eq!(verdict(&[Holds, Agrees]), Verdict::Inconclusive);
        assert_eq!(verdict(&[Holds, Disagrees]), Verdict::NotSupported);
        assert_eq!(verdict(&[Disagrees, Missing]), Verdict::Inconclusive);
        let e = |v: f64, lo: f64, hi: f64| Estimate { value: v, ci95: [lo, hi] };
        assert_eq!(judge(&e(-2.0, -4.0, 0.5), Claimed::NotLower), Holds);
        assert_eq!(judge(&e(-8.0, -12.0, -6.0), Claimed::NotLower), Against);
        assert_eq!(judge(&e(3.0, 1.0, 5.0), Claimed::Lower), Against);
        assert_eq!(judge(&e(1.0, -2.0, 4.0), Claimed::Lower), Disagrees);
    }

    #[test]
    fn a_claim_about_a_row_that_was_not_run_is_inconclusive() {
        let (base, ft) = pair(60, 20, 0);
        let s = scores(&[("Baseline", "mmlu_a", base), ("Full-Finetune", "mmlu_a", ft)]);
        let f = judge_findings(&[(3, "drop".into())], &s).unwrap();
        assert_eq!(f[0].evidence[0].outcome, Outcome::Holds);
        assert_eq!(f[0].evidence[1].outcome, Outcome::Missing, "no KD-Pruned row");
        assert_eq!(f[0].verdict, Verdict::Inconclusive);
    }
}
