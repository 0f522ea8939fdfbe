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
//! Matrices are row-major `f32` slices. In f32 the GEMMs are [`gemm_f32`] on the table where
//! it lies; in bf16 they are [`super::gemm_bf16`]'s, with the table packed (as `embedᵀ` for
//! the logits and as `embed` for the rows' gradient) once per call or step, not per chunk.

use std::cell::{Cell, RefCell};
use std::ops::Range;
use std::sync::Arc;

use rayon::prelude::*;
use super::adamw::CHUNK;
use super::gemm::gemm_f32;
use super::gemm_bf16::{gemm_bf16, gemm_bf16_packed, pack_b_reused, pack_b_trained, Dst, MatRef, PackedB};
use super::host;
use crate::Precision;

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
    Pending { g: Vec<f32>, precision: Precision },
}

impl EmbedGrad {
    /// The `[V, H]` gradient; `rows` are the head's input rows `[n, H]`.
    pub fn finish(self, rows: &[f32], vocab: usize, hidden: usize) -> Vec<f32> {
        match self {
            EmbedGrad::Done(d) => d,
            EmbedGrad::Pending { g, precision } => {
                let mut d = table_grad_buffer(vocab * hidden);
                embed_grad(precision, &g, rows, (rows.len() / hidden, vocab, hidden), &mut d, false);
                d
            }
        }
    }

    /// Adds the `[V, H]` gradient to `d` (the gradient of a step's earlier parts) in place:
    /// a pending product accumulates straight into `d`, so no second `[V, H]` buffer exists.
    pub fn add_to(self, rows: &[f32], d: &mut [f32], vocab: usize, hidden: usize) {
        assert_eq!(d.len(), vocab * hidden, "EmbedGrad::add_to: d is not [{vocab}, {hidden}]");
        match self {
            EmbedGrad::Done(done) => {
                assert_eq!(done.len(), d.len(), "EmbedGrad::add_to: gradient sizes differ");
                d.par_chunks_mut(CHUNK).zip(done.par_chunks(CHUNK)).for_each(|(d, e)| {
                    d.iter_mut().zip(e).for_each(|(d, e)| *d += e);
                });
            }
            EmbedGrad::Pending { g, precision } => {
                embed_grad(precision, &g, rows, (rows.len() / hidden, vocab, hidden), d, true);
            }
        }
    }
}

thread_local! {
    /// A `[V, H]` table gradient the optimizer has applied, for the next one on this thread.
    static SPARE_TABLE_GRAD: RefCell<Option<Vec<f32>>> = const { RefCell::new(None) };
    /// Open [`RecyclingTableGrads`] scopes on this thread.
    static RECYCLING: Cell<usize> = const { Cell::new(0) };
    /// Table gradients written into a recycled buffer on this thread, ever.
    static REUSED: Cell<usize> = const { Cell::new(0) };
}

/// While one is alive, [`recycle_table_grad`] keeps what it is given on this thread; when
/// the last one goes, so does the kept buffer (a training run's, not the evaluation's after).
pub struct RecyclingTableGrads(());

/// Opens a [`RecyclingTableGrads`] scope (a training run's steps).
pub fn recycling_table_grads() -> RecyclingTableGrads {
    RECYCLING.with(|r| r.set(r.get() + 1));
    RecyclingTableGrads(())
}

impl Drop for RecyclingTableGrads {
    fn drop(&mut self) {
        if RECYCLING.with(|r| {
            r.set(r.get() - 1);
            r.get() == 0
        }) {
            drop(take_spare());
        }
    }
}

/// Hands a table gradient that has been applied back to the head, which writes the next
/// gradient of that size into it (within a [`recycling_table_grads`] scope; elsewhere the
/// buffer is freed). A fresh `[V, H]` buffer is a fresh mapping whose pages the kernel
/// clears as the product first writes them (671 MB a step for Gemma-3-270m). The buffer
/// counts against the large-block allocator's cache of freed memory
/// ([`super::memory::kept_elsewhere`]): kept beside a full cache, it would add its 671 MB to
/// the peak of every step that does not need it yet.
pub fn recycle_table_grad(buffer: Vec<f32>) {
    if RECYCLING.with(Cell::get) == 0 {
        return;
    }
    drop(take_spare());
    super::memory::kept_elsewhere(bytes(&buffer) as isize);
    SPARE_TABLE_GRAD.with(|s| *s.borrow_mut() = Some(buffer));
}

/// How many table gradients this thread has written into a recycled buffer.
pub fn table_grads_reused() -> usize {
    REUSED.with(Cell::get)
}

fn bytes(buffer: &[f32]) -> usize {
    std::mem::size_of_val(buffer)
}

/// The kept buffer, no longer counted as kept.
fn take_spare() -> Option<Vec<f32>> {
    let spare = SPARE_TABLE_GRAD.with(|s| s.borrow_mut().take());
    if let Some(spare) = &spare {
        super::memory::kept_elsewhere(-(bytes(spare) as isize));
    }
    spare
}

/// A buffer of `len` values for a table gradient whose first product overwrites all of
/// them: the recycled one when it has that size.
fn table_grad_buffer(len: usize) -> Vec<f32> {
    match take_spare() {
        Some(spare) if spare.len() == len => {
            REUSED.with(|r| r.set(r.get() + 1));
            spare
        }
        _ => vec![0.0f32; len],
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
    /// What the head's products compute in.
    pub precision: Precision,
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
    match x.precision {
        Precision::F32 => gemm_f32((n, v, h), z, (1, v as isize), false, x.rows, (1, h as isize), x.embed, (h as isize, 1)),
        Precision::Bf16 => gemm_bf16(Dst::row_major(z, v), MatRef::row_major(x.rows, n, h), MatRef::row_major(x.embed, v, h).t()),
    }
}

/// `d (+)= gᵀ · rows` (`[V, H]`) from the logit gradients `g` (`[n, V]`) of `n` rows.
fn embed_grad(precision: Precision, g: &[f32], rows: &[f32], (n, v, h): (usize, usize, usize), d: &mut [f32], accumulate: bool) {
    match precision {
        // gᵀ[j, r] = g[r, j] (column stride v, row stride 1).
        Precision::F32 => gemm_f32((v, h, n), d, (1, h as isize), accumulate, g, (v as isize, 1), rows, (1, h as isize)),
        Precision::Bf16 => gemm_bf16(
            Dst { data: d, cs: 1, rs: h as isize, accumulate },
            MatRef::row_major(g, n, v).t(),
            MatRef::row_major(rows, n, h),
        ),
    }
}

/// The table as the head's bf16 products read it, packed once per call: `embedᵀ` for the
/// logits, `embed` for the rows' gradient.
struct PackedTable {
    transposed: Arc<PackedB>,
    plain: Option<Arc<PackedB>>,
}

impl PackedTable {
    /// The packed table for bf16 heads (none in f32). A table that does not train (LoRA,
    /// prompt tuning) is packed once and reused from call to call
    /// ([`super::gemm_bf16::pack_b_reused`]): converting its 262144 x 640 values
    /// twice was a quarter of a LoRA step. One that trains is packed once per optimizer
    /// step ([`super::gemm_bf16::pack_b_trained`]), however many parts the step has.
    fn for_inputs(x: &HeadInputs, need_rows: bool, need_embed: bool) -> Option<Self> {
        if x.precision != Precision::Bf16 {
            return None;
        }
        let embed = MatRef::row_major(x.embed, x.vocab, x.hidden);
        let pack = |m: MatRef| if need_embed { pack_b_trained(m) } else { pack_b_reused(m) };
        Some(PackedTable { transposed: pack(embed.t()), plain: need_rows.then(|| pack(embed)) })
    }
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
    // The first chunk's product overwrites it (`c > 0` below).
    let mut d_embed = (need_embed && !defer).then(|| table_grad_buffer(v * h));
    let mut loss_sum = 0.0f64;
    let table = PackedTable::for_inputs(x, need_rows, need_embed);
    for (c, start) in (0..n).step_by(chunk_rows).enumerate() {
        let len = chunk_rows.min(n - start);
        let rows = &x.rows[start * h..(start + len) * h];
        let at = if defer { start * v } else { 0 };
        let z = &mut logits[at..at + len * v];
        // z = rows · embedᵀ: embedᵀ[k, j] = embed[j, k] (column stride h, row stride 1).
        match &table {
            None => gemm_f32((len, v, h), z, (1, v as isize), false, rows, (1, h as isize), x.embed, (h as isize, 1)),
            Some(t) => gemm_bf16_packed(Dst::row_major(z, v), MatRef::row_major(rows, len, h), &t.transposed),
        }
        loss_sum += row_grad(start..start + len, z);
        if let Some(d) = d_rows.as_mut() {
            // d_rows = g · embed.
            let dst = &mut d[start * h..(start + len) * h];
            match table.as_ref().and_then(|t| t.plain.as_ref()) {
                None => gemm_f32((len, h, v), dst, (1, h as isize), false, z, (1, v as isize), x.embed, (1, h as isize)),
                Some(p) => gemm_bf16_packed(Dst::row_major(dst, h), MatRef::row_major(z, len, v), p),
            }
        }
        if let Some(d) = d_embed.as_mut() {
            embed_grad(x.precision, z, rows, (len, v, h), d, c > 0);
        }
    }
    let d_embed = match (defer, d_embed) {
        (true, _) => Some(EmbedGrad::Pending { g: logits, precision: x.precision }),
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
            let x = HeadInputs { embed: &embed, vocab: v, hidden: h, rows: &rows, softcap, precision: Precision::F32 };
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
        let x = HeadInputs { embed: &embed, vocab: v, hidden: h, rows: &rows, softcap: None, precision: Precision::F32 };
        let got = cross_entropy(&x, &targets, 4, 1.0, false, true);
        assert!(got.d_rows.is_none() && got.d_embed.is_some());
    }

    /// A recycled table gradient is written over, never added to: its old values (NaN
    /// here) leave no trace, in both the per-chunk and the deferred product, and the
    /// gradient lands in the recycled buffer itself. Only a scope keeps one.
    #[test]
    fn a_recycled_table_gradient_is_overwritten_in_place() {
        recycle_table_grad(vec![1.0; 8]);
        assert!(SPARE_TABLE_GRAD.with(|s| s.borrow().is_none()), "outside a scope nothing is kept");
        let (v, h) = (53, 12);
        let embed = values(v * h, 1);
        for (n, precision) in [5, 20].into_iter().flat_map(|n| [(n, Precision::F32), (n, Precision::Bf16)]) {
            let rows = values(n * h, 3);
            let targets: Vec<u32> = (0..n as u32).map(|i| (i * 7 + 2) % v as u32).collect();
            let x = HeadInputs { embed: &embed, vocab: v, hidden: h, rows: &rows, softcap: None, precision };
            let (_, _, expected) = reference(&x, &targets, 0.5);
            let _scope = recycling_table_grads();
            let spare = vec![f32::NAN; v * h];
            let at = spare.as_ptr();
            recycle_table_grad(spare);
            let got = cross_entropy(&x, &targets, 3, 0.5, false, true).d_embed.unwrap().finish(&rows, v, h);
            assert_eq!(got.as_ptr(), at, "{n} rows, {precision:?}: the recycled buffer holds the gradient");
            assert!(got.iter().all(|x| x.is_finite()), "{n} rows, {precision:?}: the old values leaked");
            match precision {
                Precision::F32 => assert!(worst(&got, &expected) < 1e-5, "{n} rows: {}", worst(&got, &expected)),
                // bf16 operands: the direction of the gradient, as the bf16 test below.
                Precision::Bf16 => assert!(cosine(&got, &expected) > 0.999, "{n} rows: cosine {}", cosine(&got, &expected)),
            }
            recycle_table_grad(got);
        }
        assert!(SPARE_TABLE_GRAD.with(|s| s.borrow().is_none()), "the scope's end frees the kept buffer");
    }

    fn cosine(a: &[f32], b: &[f64]) -> f64 {
        let dot: f64 = a.iter().zip(b).map(|(a, b)| *a as f64 * b).sum();
        let na: f64 = a.iter().map(|a| (*a as f64).powi(2)).sum::<f64>().sqrt();
        let nb: f64 = b.iter().map(|b| b * b).sum::<f64>().sqrt();
        dot / (na * nb)
    }

    /// bf16 products move the loss and gradients by bf16's rounding only; a frozen table
    /// kept packed between calls is repacked when its values change in place.
    #[test]
    fn bf16_head_follows_the_definition_and_repacks_a_changed_table() {
        let (v, h, n) = (301, 48, 37);
        let mut embed = values(v * h, 1);
        let rows = values(n * h, 2);
        let targets: Vec<u32> = (0..n as u32).map(|i| (i * 53 + 5) % v as u32).collect();
        for round in 0..2 {
            let x = HeadInputs { embed: &embed, vocab: v, hidden: h, rows: &rows, softcap: Some(3.0), precision: Precision::F32 };
            let (loss, d_rows, d_embed) = reference(&x, &targets, 1.0);
            let x = HeadInputs { precision: Precision::Bf16, ..x };
            for need_embed in [false, true] {
                let got = cross_entropy(&x, &targets, 16, 1.0, true, need_embed);
                let rel = (got.loss_sum - loss).abs() / loss;
                assert!(rel < 5e-3, "round {round}: loss {} vs {loss}", got.loss_sum);
                let c = cosine(got.d_rows.as_ref().unwrap(), &d_rows);
                assert!(c > 0.999, "round {round}: d_rows cosine {c}");
                if need_embed {
                    let c = cosine(&got.d_embed.unwrap().finish(&rows, v, h), &d_embed);
                    assert!(c > 0.999, "round {round}: d_embed cosine {c}");
                }
            }
            // The same buffer with other values: the kept packing must not be reused.
            embed.iter_mut().for_each(|e| *e *= -2.0);
        }
        crate::kernels::gemm_bf16::forget_packed();
    }
}
