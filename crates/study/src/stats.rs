//! The statistics of the report, on per-document results: documents paired by `doc_id`,
//! the exact McNemar test, Holm's correction for many tests, and a paired bootstrap for
//! means over documents and tasks.

use std::collections::BTreeMap;

use anyhow::{bail, Result};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sweelol_eval::DocResult;

/// Bootstrap resamples; the seed is fixed so a report is reproducible.
pub const BOOTSTRAP_REPS: usize = 4000;
const BOOTSTRAP_SEED: u64 = 0x5EE1_01F1;

/// Correctness (1 or 0) of two rows on the same documents of one task, paired by `doc_id`.
/// Every document of either side must be on the other: a missing one is an error that
/// names it (`what` says which rows and task).
pub fn paired(a: &[DocResult], b: &[DocResult], what: &str) -> Result<(Vec<f64>, Vec<f64>)> {
    let b_by_id: BTreeMap<usize, f64> = b.iter().map(|d| (d.doc_id, d.acc)).collect();
    if b_by_id.len() != b.len() {
        bail!("{what}: duplicate doc_id in the second row's results");
    }
    let mut xs = Vec::with_capacity(a.len());
    let mut ys = Vec::with_capacity(a.len());
    for d in a {
        let Some(&y) = b_by_id.get(&d.doc_id) else {
            bail!("{what}: doc_id {} is in the first row's results but not the second's", d.doc_id)
        };
        xs.push(d.acc);
        ys.push(y);
    }
    if a.len() != b.len() {
        let a_ids: std::collections::BTreeSet<usize> = a.iter().map(|d| d.doc_id).collect();
        let missing = b.iter().map(|d| d.doc_id).find(|id| !a_ids.contains(id)).expect("a longer side");
        bail!("{what}: doc_id {missing} is in the second row's results but not the first's");
    }
    Ok((xs, ys))
}

/// Exact two-sided McNemar test on paired correctness: `b` docs right only in A, `c` right
/// only in B; p = P(|X - n/2| >= |b - n/2|) for X ~ Binomial(n = b + c, 1/2).
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

/// McNemar's p for paired correctness vectors.
pub fn mcnemar_paired(a: &[f64], b: &[f64]) -> f64 {
    let only_a = a.iter().zip(b).filter(|(x, y)| **x > 0.5 && **y <= 0.5).count();
    let only_b = a.iter().zip(b).filter(|(x, y)| **x <= 0.5 && **y > 0.5).count();
    mcnemar_exact(only_a, only_b)
}

/// Holm's step-down adjustment of `p` (same order out as in): the i-th smallest p is
/// multiplied by (m − i + 1), made monotone, capped at 1.
pub fn holm(p: &[f64]) -> Vec<f64> {
    let m = p.len();
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|&i, &j| p[i].total_cmp(&p[j]));
    let mut out = vec![0.0; m];
    let mut running: f64 = 0.0;
    for (rank, &i) in order.iter().enumerate() {
        running = running.max(((m - rank) as f64 * p[i]).min(1.0));
        out[i] = running;
    }
    out
}

/// A mean with its 95% interval, in the units of the data (the report uses percent).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct Estimate {
    pub value: f64,
    pub ci95: [f64; 2],
}

impl Estimate {
    /// The same estimate in other units (fractions to percent: `k = 100`).
    pub fn scaled(self, k: f64) -> Estimate {
        Estimate { value: k * self.value, ci95: [k * self.ci95[0], k * self.ci95[1]] }
    }
}

/// The mean over tasks of each task's mean over documents, with a 95% percentile
/// bootstrap interval: documents are resampled within each task.
pub fn bootstrap_mean_of_means(tasks: &[Vec<f64>]) -> Estimate {
    let zeros: Vec<Vec<f64>> = tasks.iter().map(|t| vec![0.0; t.len()]).collect();
    paired_bootstrap_diff(tasks, &zeros)
}

/// The difference `a − b` of the mean over tasks of per-task means, for two rows scored on
/// the same documents (paired: one resample of document indices serves both rows), with
/// a 95% percentile bootstrap interval.
pub fn paired_bootstrap_diff(a: &[Vec<f64>], b: &[Vec<f64>]) -> Estimate {
    assert_eq!(a.len(), b.len(), "same tasks");
    let diffs: Vec<Vec<f64>> = a
        .iter()
        .zip(b)
        .map(|(x, y)| {
            assert_eq!(x.len(), y.len(), "paired documents");
            x.iter().zip(y).map(|(p, q)| p - q).collect()
        })
        .collect();
    let mean = |d: &[f64]| if d.is_empty() { 0.0 } else { d.iter().sum::<f64>() / d.len() as f64 };
    let value = diffs.iter().map(|d| mean(d)).sum::<f64>() / diffs.len() as f64;
    let mut rng = StdRng::seed_from_u64(BOOTSTRAP_SEED);
    let mut stats = Vec::with_capacity(BOOTSTRAP_REPS);
    let mut sample = Vec::new();
    for _ in 0..BOOTSTRAP_REPS {
        let mut total = 0.0;
        for d in &diffs {
            sample.clear();
            sample.extend((0..d.len()).map(|_| d[rng.random_range(0..d.len())]));
            total += mean(&sample);
        }
        stats.push(total / diffs.len() as f64);
    }
    stats.sort_by(f64::total_cmp);
    let at = |q: f64| stats[((q * (BOOTSTRAP_REPS - 1) as f64).round() as usize).min(BOOTSTRAP_REPS - 1)];
    Estimate { value, ci95: [at(0.025), at(0.975)] }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(doc_id: usize, acc: f64) -> DocResult {
        DocResult { doc_id, gold: 0, loglikelihoods: vec![], acc, acc_norm: None }
    }

    #[test]
    fn mcnemar_matches_binomial_tables() {
        // b=0, c=5: p = 2 * 0.5^5 = 0.0625.
        assert!((mcnemar_exact(0, 5) - 0.0625).abs() < 1e-12);
        // b=2, c=8: p = 2 * (1 + 10 + 45) / 1024 = 0.109375.
        assert!((mcnemar_exact(2, 8) - 0.109375).abs() < 1e-12);
        assert_eq!(mcnemar_exact(3, 3), 1.0);
        assert_eq!(mcnemar_exact(0, 0), 1.0);
    }

    #[test]
    fn documents_pair_by_id_and_missing_ones_are_errors() {
        let a = [doc(0, 1.0), doc(1, 0.0), doc(2, 1.0)];
        let b = [doc(2, 0.0), doc(0, 1.0), doc(1, 1.0)];
        let (x, y) = paired(&a, &b, "A vs B").unwrap();
        assert_eq!((x, y), (vec![1.0, 0.0, 1.0], vec![1.0, 1.0, 0.0]));
        let err = paired(&a, &b[..2], "A vs B on hellaswag").unwrap_err().to_string();
        assert!(err.contains("hellaswag") && err.contains("doc_id 1"), "{err}");
        let err = paired(&a[..2], &b, "A vs B").unwrap_err().to_string();
        assert!(err.contains("doc_id 2"), "{err}");
    }

    #[test]
    fn holm_matches_a_worked_example() {
        // p = 0.01, 0.04, 0.03, 0.005 (m = 4): sorted 0.005·4 = 0.02, 0.01·3 = 0.03,
        // 0.03·2 = 0.06, 0.04·1 = 0.04 -> monotone 0.06.
        let adj = holm(&[0.01, 0.04, 0.03, 0.005]);
        let want = [0.03, 0.06, 0.06, 0.02];
        for (a, w) in adj.iter().zip(want) {
            assert!((a - w).abs() < 1e-12, "{adj:?}");
        }
        assert_eq!(holm(&[0.9, 0.8]), vec![1.0, 1.0]);
    }

    #[test]
    fn bootstrap_interval_covers_the_mean_and_shrinks_with_n() {
        // A task where 30% are right: the mean is exact, the interval about ±1.96·sqrt(.21/n).
        let task = |n: usize| (0..n).map(|i| if i % 10 < 3 { 1.0 } else { 0.0 }).collect::<Vec<f64>>();
        let small = bootstrap_mean_of_means(&[task(100)]);
        let big = bootstrap_mean_of_means(&[task(1000)]);
        assert!((small.value - 0.3).abs() < 1e-12);
        let half = (small.ci95[1] - small.ci95[0]) / 2.0;
        assert!((half - 1.96 * (0.21f64 / 100.0).sqrt()).abs() < 0.02, "{small:?}");
        assert!(big.ci95[1] - big.ci95[0] < small.ci95[1] - small.ci95[0]);
        // Identical rows: the paired difference is exactly zero.
        let d = paired_bootstrap_diff(&[task(50)], &[task(50)]);
        assert_eq!((d.value, d.ci95), (0.0, [0.0, 0.0]));
    }
}
