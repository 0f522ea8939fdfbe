//! `log p(token | hidden row)` through the tied LM head, for chosen `(row, token)` pairs.
//!
//! Scoring needs a handful of log-probabilities per row, not the `[rows, 262144]` logits.
//! On the CPU backend the head runs over the vocabulary in blocks of [`VOCAB_BLOCK`]
//! entries into one reused buffer, keeping a running maximum and `Σ exp` per row (the
//! log-sum-exp of Cut Cross-Entropy and of flash attention's softmax): no logits tensor
//! at all, where burn's product allocated 512 MiB per 512 rows, zero-filled, then copied
//! once more to align it — most of a HellaSwag evaluation's time (`docs/perf.md`).
//! Elsewhere the head is burn's, `HEAD_ROWS` rows at a time, then `log_softmax`.

use std::ops::Range;

use burn::tensor::activation::log_softmax;
use burn::tensor::{Int, Tensor, TensorData};
use rayon::prelude::*;
use super::gemm::gemm_f32;
use super::host::{self, host_head_kernels, with_host_f32};
use crate::Gemma3;

/// Rows one head product takes on a backend that builds the logits: `[rows, 262144]` f32
/// logits (512 MiB) and their log-softmax.
const HEAD_ROWS: usize = 512;

/// Vocabulary entries per block on the host: a `[512, 4096]` f32 block (8 MiB) and the
/// table's `[4096, 640]` slice stay in a 32 MiB L3 cache while they are used.
const VOCAB_BLOCK: usize = 4096;

/// `log_softmax(head(rows))[row, id]` for every `(row, id)` of `picks`; `rows` is `[n, H]`
/// final-normed hidden states.
pub fn token_log_probs(model: &Gemma3, rows: Tensor<2>, picks: &[(usize, u32)]) -> Vec<f64> {
    if !host_head_kernels(&rows.device()) {
        return burn_log_probs(model, rows, picks);
    }
    let [n, hidden] = rows.dims();
    let vocab = model.embed_tokens.val().dims()[0];
    let softcap = model.config.final_logit_softcapping.map(|c| c as f32);
    with_host_f32(model.embed_tokens.val(), |embed| {
        with_host_f32(rows, |rows| {
            let head = Head { embed, vocab, hidden, softcap };
            by_row_chunks(n, picks, |at, here| head.log_probs(&rows[at.start * hidden..at.end * hidden], here))
        })
    })
}

/// Runs `f(rows, picks within them)` on [`HEAD_ROWS`] rows at a time (the picks' rows
/// counted from the chunk's first) and puts its answers back in `picks`' order.
fn by_row_chunks(n: usize, picks: &[(usize, u32)], mut f: impl FnMut(Range<usize>, &[(usize, u32)]) -> Vec<f64>) -> Vec<f64> {
    let mut out = vec![0.0; picks.len()];
    for start in (0..n).step_by(HEAD_ROWS) {
        let rows = start..(start + HEAD_ROWS).min(n);
        let at: Vec<usize> = (0..picks.len()).filter(|&k| rows.contains(&picks[k].0)).collect();
        if at.is_empty() {
            continue;
        }
        let here: Vec<(usize, u32)> = at.iter().map(|&k| (picks[k].0 - start, picks[k].1)).collect();
        for (k, lp) in at.into_iter().zip(f(rows, &here)) {
            out[k] = lp;
        }
    }
    out
}

/// The tied head's table on the host.
struct Head<'a> {
    /// `[vocab, hidden]`.
    embed: &'a [f32],
    vocab: usize,
    hidden: usize,
    softcap: Option<f32>,
}

/// A row's log-sum-exp so far: `max + ln(sum)` with `sum = Σ exp(z − max)` (f64).
#[derive(Clone, Copy)]
struct RunningLse {
    max: f32,
    sum: f64,
}

impl RunningLse {
    const EMPTY: RunningLse = RunningLse { max: f32::NEG_INFINITY, sum: 0.0 };

    /// Takes in one block of the row's logits, leaving `exp(z − max)` in their place.
    fn add(&mut self, z: &mut [f32]) {
        let block_max = host::max(z);
        if block_max > self.max {
            self.sum *= ((self.max - block_max) as f64).exp();
            self.max = block_max;
        }
        self.sum += host::exp_in_place(z, self.max);
    }

    fn value(self) -> f64 {
        self.max as f64 + self.sum.ln()
    }
}

impl Head<'_> {
    /// `log_softmax(rows · embedᵀ)[r, id]` for `(r, id)` in `picks`, rows `[n, H]`.
    fn log_probs(&self, rows: &[f32], picks: &[(usize, u32)]) -> Vec<f64> {
        let (v, h) = (self.vocab, self.hidden);
        let n = rows.len() / h;
        let mut lse = vec![RunningLse::EMPTY; n];
        let mut picked = vec![0.0f32; picks.len()];
        let mut z = vec![0.0f32; n * VOCAB_BLOCK.min(v)];
        for start in (0..v).step_by(VOCAB_BLOCK) {
            let width = VOCAB_BLOCK.min(v - start);
            let z = &mut z[..n * width];
            let table = &self.embed[start * h..(start + width) * h];
            // z = rows · tableᵀ: tableᵀ[k, j] = table[j, k] (column stride h, row stride 1).
            gemm_f32((n, width, h), z, (1, width as isize), false, rows, (1, h as isize), table, (h as isize, 1));
            if let Some(cap) = self.softcap {
                z.par_iter_mut().for_each(|x| *x = cap * (*x / cap).tanh());
            }
            // The picked logits before the log-sum-exp pass overwrites the block.
            for (&(r, id), p) in picks.iter().zip(picked.iter_mut()) {
                if (start..start + width).contains(&(id as usize)) {
                    *p = z[r * width + id as usize - start];
                }
            }
            z.par_chunks_mut(width).zip(lse.par_iter_mut()).for_each(|(row, lse)| lse.add(row));
        }
        picks.iter().zip(picked).map(|(&(r, _), z)| z as f64 - lse[r].value()).collect()
    }
}

/// The same through burn's operations, for backends whose memory the host cannot read.
fn burn_log_probs(model: &Gemma3, rows: Tensor<2>, picks: &[(usize, u32)]) -> Vec<f64> {
    by_row_chunks(rows.dims()[0], picks, |at, here| {
        let logits = model.lm_head(rows.clone().narrow(0, at.start, at.len()));
        gather_rows(log_softmax(logits, 1), here)
    })
}

/// `logp[row, id]` for every `(row, id)` of `picks`, read back as f64.
fn gather_rows(logp: Tensor<2>, picks: &[(usize, u32)]) -> Vec<f64> {
    let n = picks.len();
    let device = logp.device();
    let r = Tensor::<1, Int>::from_data(TensorData::new(picks.iter().map(|&(r, _)| r as i64).collect::<Vec<_>>(), [n]), &device);
    let c = Tensor::<2, Int>::from_data(TensorData::new(picks.iter().map(|&(_, id)| id as i64).collect::<Vec<_>>(), [n, 1]), &device);
    let picked = logp.select(0, r).gather(1, c);
    picked.into_data().convert::<f32>().try_into_vec::<f32>().expect("f32").into_iter().map(f64::from).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n).map(|i| (((i as u32).wrapping_mul(2654435761) ^ seed.wrapping_mul(97)) % 1999) as f32 / 999.0 - 1.0).collect()
    }

    /// `log_softmax` of one row's logits, written out from the definition in f64.
    fn reference(head: &Head, row: &[f32], id: usize) -> f64 {
        let z: Vec<f64> = (0..head.vocab)
            .map(|j| {
                let dot: f64 = (0..head.hidden).map(|k| row[k] as f64 * head.embed[j * head.hidden + k] as f64).sum();
                head.softcap.map_or(dot, |c| c as f64 * (dot / c as f64).tanh())
            })
            .collect();
        let max = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        z[id] - max - z.iter().map(|x| (x - max).exp()).sum::<f64>().ln()
    }

    #[test]
    fn blocked_log_probs_match_the_definition_across_blocks() {
        // Three vocabulary blocks, the last one partial; one row's largest logit sits in the
        // last block (so its running sum is rescaled), picks in every block.
        let (vocab, hidden, n) = (2 * VOCAB_BLOCK + 517, 8, 5);
        let mut embed = values(vocab * hidden, 1);
        let rows = values(n * hidden, 2);
        for k in 0..hidden {
            embed[(vocab - 3) * hidden + k] = 4.0 * rows[2 * hidden + k];
        }
        let picks: Vec<(usize, u32)> = vec![(0, 7), (2, (vocab - 3) as u32), (2, 4100), (4, (vocab - 1) as u32), (1, 8200), (0, 9)];
        for softcap in [None, Some(2.5f32)] {
            let head = Head { embed: &embed, vocab, hidden, softcap };
            let got = head.log_probs(&rows, &picks);
            for (&(r, id), g) in picks.iter().zip(&got) {
                let want = reference(&head, &rows[r * hidden..(r + 1) * hidden], id as usize);
                assert!((g - want).abs() < 1e-5, "row {r}, token {id}, {softcap:?}: {g} vs {want}");
            }
        }
        assert!(Head { embed: &embed, vocab, hidden, softcap: None }.log_probs(&rows, &[(2, (vocab - 3) as u32)])[0] > -0.5);
    }

    #[test]
    fn row_chunks_put_answers_back_in_pick_order() {
        let n = 2 * HEAD_ROWS + 3;
        let picks: Vec<(usize, u32)> = vec![(n - 1, 1), (0, 2), (HEAD_ROWS, 3), (5, 4)];
        let mut seen = Vec::new();
        let got = by_row_chunks(n, &picks, |rows, here| {
            seen.push(rows.clone());
            here.iter().map(|&(r, id)| (rows.start + r) as f64 * 10.0 + id as f64).collect()
        });
        assert_eq!(got, [(n - 1) as f64 * 10.0 + 1.0, 2.0, HEAD_ROWS as f64 * 10.0 + 3.0, 54.0]);
        assert_eq!(seen, [0..HEAD_ROWS, HEAD_ROWS..2 * HEAD_ROWS, 2 * HEAD_ROWS..n]);
    }
}
