//! The tied LM head and cross-entropy as one host kernel, for CPU backends.
//!
//! The idea of Liger's fused linear cross-entropy and of Cut Cross-Entropy: the gradient
//! of the summed cross-entropy with respect to the logits is `softmax − onehot`, known as
//! soon as a chunk's logits are, so no autodiff graph is needed. Per chunk of `c` scored
//! rows, one `[c, V]` buffer holds the logits, then in place their gradient, and two
//! matrix products turn it into the rows' gradient and an in-place accumulation into the
//! embedding's: three GEMMs and two passes over the buffer, instead of an autodiff graph
//! that allocates a fresh `[V, H]` gradient per chunk and adds them up.
//!
//! Matrices are row-major `f32` slices; GEMMs are [`sweelol_gemma::gemm::gemm_f32`].

use std::ops::Range;

use rayon::prelude::*;
use sweelol_gemma::gemm::gemm_f32;
use sweelol_gemma::host;

/// The summed loss and gradients, already multiplied by `scale`.
pub struct HeadGrads {
    /// Σ over rows of `−log softmax(logits)[target]` (not scaled).
    pub loss_sum: f64,
    /// `[n, H]`, when asked for.
    pub d_rows: Option<Vec<f32>>,
    /// The embedding's gradient, when asked for: see [`EmbedGrad`].
    pub d_embed: Option<EmbedGrad>,
}

/// The embedding's `[V, H]` gradient `Σ_chunks gᵀ·rows`, either accumulated chunk by chunk
/// or, when the logit gradients of all `n` rows take no more memory than the embedding
/// (`n ≤ H`), kept as `G [n, V]` for one product at the end. The second way writes that
/// buffer once instead of once per chunk, and only after the head's logit chunks are gone.
pub enum EmbedGrad {
    Done(Vec<f32>),
    Pending { g: Vec<f32> },
}

impl EmbedGrad {
    /// The `[V, H]` gradient; `rows` are the head's input rows `[n, H]`.
    pub fn finish(self, rows: &[f32], vocab: usize, hidden: usize) -> Vec<f32> {
        match self {
            EmbedGrad::Done(d) => d,
            EmbedGrad::Pending { g } => {
                let n = rows.len() / hidden;
                let mut d = vec![0.0f32; vocab * hidden];
                // d = Gᵀ · rows: Gᵀ[j, r] = G[r, j] (column stride V, row stride 1).
                gemm_f32((vocab, hidden, n), &mut d, (1, hidden as isize), false, &g, (vocab as isize, 1), rows, (1, hidden as isize));
                d
            }
        }
    }
}

/// What the kernel reads: the embedding `[V, H]` and the scored hidden rows `[n, H]`.
pub struct HeadInputs<'a> {
    pub embed: &'a [f32],
    pub vocab: usize,
    pub hidden: usize,
    pub rows: &'a [f32],
    /// Gemma's final logit soft-capping (`cap · tanh(z / cap)`), if any.
    pub softcap: Option<f32>,
}

impl HeadInputs<'_> {
    pub fn num_rows(&self) -> usize {
        self.rows.len() / self.hidden
    }
}

/// Soft-caps a row of raw logits in place (`cap · tanh(z / cap)`); returns the capped
/// values when there is a cap, which [`softcap_backward`] needs.
pub fn softcap_forward(z: &mut [f32], softcap: Option<f32>) -> Option<Vec<f32>> {
    let cap = softcap?;
    for x in z.iter_mut() {
        *x = cap * (*x / cap).tanh();
    }
    Some(z.to_vec())
}

/// Turns a gradient with respect to capped logits into one with respect to the raw ones:
/// `d cap·tanh(x/cap) / dx = 1 − (y/cap)²`.
pub fn softcap_backward(g: &mut [f32], capped: Option<Vec<f32>>, softcap: Option<f32>) {
    if let (Some(cap), Some(y)) = (softcap, capped) {
        for (g, y) in g.iter_mut().zip(y) {
            let t = y / cap;
            *g *= 1.0 - t * t;
        }
    }
}

/// `(max, log Σ exp(row/temperature − max))` of a row, the sum in f64.
pub fn log_sum_exp(row: &[f32], temperature: f32) -> (f32, f64) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) / temperature;
    let sum: f64 = row.iter().map(|&x| ((x / temperature - max).exp()) as f64).sum();
    (max, sum.ln())
}

/// Turns one row of raw logits into `scale · d CE / d logits` in place; returns the row's
/// cross-entropy.
pub fn cross_entropy_row(z: &mut [f32], target: usize, softcap: Option<f32>, scale: f32) -> f64 {
    let capped = softcap_forward(z, softcap);
    let max = host::max(z);
    let picked = z[target];
    // exp once, kept in place; the sum in f64.
    let sum = host::exp_in_place(z, max);
    let loss = max as f64 + sum.ln() - picked as f64;
    let inv = (1.0 / sum) as f32;
    for x in z.iter_mut() {
        *x *= inv * scale;
    }
    z[target] -= scale;
    softcap_backward(z, capped, softcap);
    loss
}

/// `rows · embedᵀ` (`[n, V]`, raw: not soft-capped), e.g. a teacher's logits.
pub fn logits(x: &HeadInputs) -> Vec<f32> {
    let mut z = vec![0.0f32; x.num_rows() * x.vocab];
    logits_into(x, &mut z);
    z
}

/// [`logits`] written into `z` (`[n, V]`), so a caller can reuse one buffer.
pub fn logits_into(x: &HeadInputs, z: &mut [f32]) {
    let (v, h, n) = (x.vocab, x.hidden, x.num_rows());
    assert_eq!(z.len(), n * v, "logits are [rows, vocab]");
    gemm_f32((n, v, h), z, (1, v as isize), false, x.rows, (1, h as isize), x.embed, (h as isize, 1));
}

/// Cross-entropy of `rows · embedᵀ` against `targets`, `chunk_rows` rows at a time, with
/// the gradients of `scale ×` the summed loss.
pub fn cross_entropy(x: &HeadInputs, targets: &[u32], chunk_rows: usize, scale: f32, need_rows: bool, need_embed: bool) -> HeadGrads {
    assert_eq!(targets.len(), x.num_rows(), "one target per row");
    fused(x, chunk_rows, need_rows, need_embed, |rows, z| {
        z.par_chunks_mut(x.vocab)
            .zip(&targets[rows])
            .map(|(row, &t)| cross_entropy_row(row, t as usize, x.softcap, scale))
            .sum()
    })
}

/// Any loss of the head's logits, `chunk_rows` rows at a time: `row_grad(rows, z)` gets
/// the raw logits `z` (`[rows.len(), V]`) of rows `rows`, turns them in place into the
/// gradient of the (scaled) loss with respect to them, and returns the chunk's loss.
pub fn fused<F>(x: &HeadInputs, chunk_rows: usize, need_rows: bool, need_embed: bool, mut row_grad: F) -> HeadGrads
where
    F: FnMut(Range<usize>, &mut [f32]) -> f64,
{
    let (v, h) = (x.vocab, x.hidden);
    let n = x.num_rows();
    assert_eq!(x.embed.len(), v * h, "embedding is [vocab, hidden]");
    assert_eq!(x.rows.len(), n * h, "rows are [n, hidden]");
    assert!(chunk_rows > 0, "chunk_rows must be positive");
    // With the embedding's gradient deferred, every row's logit gradient stays in `logits`.
    let defer = need_embed && n <= h;
    let mut logits = vec![0.0f32; if defer { n } else { chunk_rows.min(n) } * v];
    let mut d_rows = need_rows.then(|| vec![0.0f32; n * h]);
    let mut d_embed = (need_embed && !defer).then(|| vec![0.0f32; v * h]);
    let mut loss_sum = 0.0f64;
    for (c, start) in (0..n).step_by(chunk_rows).enumerate() {
        let len = chunk_rows.min(n - start);
        let rows = &x.rows[start * h..(start + len) * h];
        let at = if defer { start * v } else { 0 };
        let z = &mut logits[at..at + len * v];
        // z = rows · embedᵀ: embedᵀ[k, j] = embed[j, k] (column stride h, row stride 1).
        gemm_f32((len, v, h), z, (1, v as isize), false, rows, (1, h as isize), x.embed, (h as isize, 1));
        loss_sum += row_grad(start..start + len, z);
        if let Some(d) = d_rows.as_mut() {
            // d_rows = g · embed.
            let dst = &mut d[start * h..(start + len) * h];
            gemm_f32((len, h, v), dst, (1, h as isize), false, z, (1, v as isize), x.embed, (1, h as isize));
        }
        if let Some(d) = d_embed.as_mut() {
            // d_embed += gᵀ · rows: gᵀ[j, r] = g[r, j] (column stride v, row stride 1).
            gemm_f32((v, h, len), d, (1, h as isize), c > 0, z, (v as isize, 1), rows, (1, h as isize));
        }
    }
    let d_embed = match (defer, d_embed) {
        (true, _) => Some(EmbedGrad::Pending { g: logits }),
        (false, d) => d.map(EmbedGrad::Done),
    };
    HeadGrads { loss_sum, d_rows, d_embed }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n).map(|i| (((i as u32).wrapping_mul(2654435761) ^ seed.wrapping_mul(97)) % 1999) as f32 / 999.0 - 1.0).collect()
    }

    /// The same quantities in f64, written out directly from the definition.
    fn reference(x: &HeadInputs, targets: &[u32], scale: f64) -> (f64, Vec<f64>, Vec<f64>) {
        let (v, h) = (x.vocab, x.hidden);
        let n = targets.len();
        let mut loss = 0.0;
        let mut d_rows = vec![0.0; n * h];
        let mut d_embed = vec![0.0; v * h];
        for r in 0..n {
            let z: Vec<f64> = (0..v)
                .map(|j| (0..h).map(|k| x.rows[r * h + k] as f64 * x.embed[j * h + k] as f64).sum::<f64>())
                .collect();
            let y: Vec<f64> = match x.softcap {
                Some(c) => z.iter().map(|z| c as f64 * (z / c as f64).tanh()).collect(),
                None => z.clone(),
            };
            let max = y.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let sum: f64 = y.iter().map(|y| (y - max).exp()).sum();
            let t = targets[r] as usize;
            loss += max + sum.ln() - y[t];
            for j in 0..v {
                let mut g = (y[j] - max).exp() / sum - (j == t) as u8 as f64;
                if let Some(c) = x.softcap {
                    g *= 1.0 - (y[j] / c as f64).powi(2);
                }
                g *= scale;
                for k in 0..h {
                    d_rows[r * h + k] += g * x.embed[j * h + k] as f64;
                    d_embed[j * h + k] += g * x.rows[r * h + k] as f64;
                }
            }
        }
        (loss, d_rows, d_embed)
    }

    fn worst(a: &[f32], b: &[f64]) -> f64 {
        a.iter().zip(b).map(|(a, b)| (*a as f64 - b).abs()).fold(0.0, f64::max)
    }

    #[test]
    fn matches_the_definition_across_chunks_with_and_without_softcap() {
        let (v, h) = (301, 16);
        let embed = values(v * h, 1);
        // 7 rows ≤ hidden: the embedding's gradient is deferred; 23 > hidden: accumulated.
        for n in [7, 23] {
        let rows = values(n * h, 2);
        let targets: Vec<u32> = (0..n as u32).map(|i| (i * 53 + 5) % v as u32).collect();
        for softcap in [None, Some(3.0f32)] {
            let x = HeadInputs { embed: &embed, vocab: v, hidden: h, rows: &rows, softcap };
            let (loss, d_rows, d_embed) = reference(&x, &targets, 0.25);
            for chunk in [1, 3, 7, 64] {
                let got = cross_entropy(&x, &targets, chunk, 0.25, true, true);
                assert!((got.loss_sum - loss).abs() < 1e-4, "loss {} vs {loss} (chunk {chunk}, {softcap:?})", got.loss_sum);
                let deferred = matches!(got.d_embed, Some(EmbedGrad::Pending { .. }));
                assert_eq!(deferred, n <= h, "{n} rows");
                let got_embed = got.d_embed.unwrap().finish(&rows, v, h);
                let (dr, de) = (worst(got.d_rows.as_ref().unwrap(), &d_rows), worst(&got_embed, &d_embed));
                assert!(dr < 1e-5 && de < 1e-5, "{n} rows, chunk {chunk}, {softcap:?}: d_rows {dr}, d_embed {de}");
            }
        }
        }
        // Only what is asked for is computed.
        let rows = values(7 * h, 2);
        let targets: Vec<u32> = (0..7).map(|i| (i * 53 + 5) % v as u32).collect();
        let x = HeadInputs { embed: &embed, vocab: v, hidden: h, rows: &rows, softcap: None };
        let got = cross_entropy(&x, &targets, 4, 1.0, false, true);
        assert!(got.d_rows.is_none() && got.d_embed.is_some());
    }
}
