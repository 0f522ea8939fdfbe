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
use sweelol_gemma::gemm::gemm_f32;
use sweelol_gemma::host::{self, runs_on_host, with_host_f32};
use sweelol_gemma::Gemma3;

/// Rows one head product takes on a backend that builds the logits: `[rows, 262144]` f32
/// logits (512 MiB) and their log-softmax.
const HEAD_ROWS: usize = 512;

/// Vocabulary entries per block on the host: a `[512, 4096]` f32 block (8 MiB) and the
/// table's `[4096, 640]` slice stay in a 32 MiB L3 cache while they are used.
const VOCAB_BLOCK: usize = 4096;

/// `log_softmax(head(rows))[row, id]` for every `(row, id)` of `picks`; `rows` is `[n, H]`
/// final-normed hidden states.
pub fn token_log_probs(model: &Gemma3, rows: Tensor<2>, picks: &[(usize, u32)]) -> Vec<f64> {
    if picks.is_empty() {
        return Vec::new();
    }
    if !runs_on_host(&rows.device()) {
        return burn_log_probs(model, rows, picks);
    }
    let [n, hidden] = rows.dims();
    let vocab = model.config.vocab_size;
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

    /// Takes in one block of the row's logits.
    fn add(&mut self, z: &[f32]) {
        let block_max = host::max(z);
        if block_max > self.max {
            self.sum *= ((self.max - block_max) as f64).exp();
            self.max = block_max;
        }
        self.sum += host::sum_exp(z, self.max);
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
            z.par_chunks(width).zip(lse.par_iter_mut()).for_each(|(row, lse)| lse.add(row));
            for (&(r, id), p) in picks.iter().zip(picked.iter_mut()) {
                if (start..start + width).contains(&(id as usize)) {
                    *p = z[r * width + id as usize - start];
                }
            }
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
