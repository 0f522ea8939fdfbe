//! Language-model losses that never hold `[tokens × vocab]` logits at once.
//!
//! The hidden states of the scored positions are gathered, then the tied head and the loss
//! run on `chunk_rows` rows at a time. Autodiff would keep every chunk's logits alive until
//! backward, so each chunk is differentiated on its own, right away, against fresh leaves
//! (its hidden rows and the embedding matrix); only the resulting gradients are kept. They
//! are put back into the model's graph with the surrogate
//! `s = Σ hidden·dH`, returned as `s − detach(s) + value`: its value is the loss and its
//! gradient is exactly the chunked gradient. The embedding's own `[vocab, hidden]` gradient
//! skips the graph: [`LossOutput::gradients`] adds it to what backward gives (a surrogate
//! `Σ E·dE` would cost three more `[vocab, hidden]` buffers). Peak memory is one chunk of
//! logits plus one `[vocab, hidden]` gradient, whatever the number of tokens. On the host
//! that product runs after backward, straight into the gradient of the step's earlier parts
//! ([`LossOutput::add_gradients_to`]): a step trained in parts holds one such gradient.

use std::ops::Range;

use std::collections::BTreeMap;

use burn::module::{Module, ParamId};
use burn::tensor::activation::log_softmax;
use burn::tensor::{Int, Tensor, TensorData};
use sweelol_gemma::kernels::host::host_head_kernels;
use sweelol_gemma::{tied_head_logits, Gemma3};

use rayon::prelude::*;

use crate::batch::Targets;
use sweelol_gemma::kernels::host::{host_f32, with_host_f32};
use sweelol_gemma::kernels::head::{self as host_head, EmbedGrad, HeadInputs};
use crate::lookup::Lookup;
use crate::profile::{self, Phase};

/// A loss ready for backward, with its value already on the host.
#[derive(Debug)]
pub struct LossOutput {
    /// Scalar `[1]`; differentiable when the inputs were.
    pub loss: Tensor<1>,
    /// `loss` as a number (no extra device read needed).
    pub value: f64,
    /// Number of scored tokens.
    pub tokens: usize,
    /// The tied embedding's gradient from the head, computed outside the graph (see the
    /// module docs); [`gradients`](Self::gradients) adds it in.
    pub embed_grad: Option<(ParamId, TableGrad)>,
    /// The input lookup whose gradient reaches the table outside the graph
    /// ([`crate::lookup`]); [`gradients`](Self::gradients) adds it in.
    pub lookup: Option<Lookup>,
}

impl LossOutput {
    /// A loss with nothing computed outside the graph.
    pub fn new(loss: Tensor<1>, value: f64, tokens: usize) -> Self {
        LossOutput { loss, value, tokens, embed_grad: None, lookup: None }
    }

    /// This loss with the input `lookup` its hidden states came from.
    pub fn with_lookup(self, lookup: Option<Lookup>) -> Self {
        LossOutput { lookup, ..self }
    }

    /// Runs backward and returns the gradients of `module`'s parameters by path (flattened),
    /// the head's embedding gradient and the lookup's included.
    pub fn gradients<M: Module>(self, module: &M) -> BTreeMap<String, Tensor<1>> {
        let mut sums = BTreeMap::new();
        self.add_gradients_to(module, &mut sums);
        sums
    }

    /// Runs backward and adds the gradients of `module`'s parameters into `sums` by path
    /// (flattened), as [`gradients`](Self::gradients) gives them. The host head's table
    /// gradient and the lookup's rows go into the table's entry in place, so the parts of
    /// one step hold one `[vocab, hidden]` gradient between them, not one each.
    pub fn add_gradients_to<M: Module>(self, module: &M, sums: &mut BTreeMap<String, Tensor<1>>) {
        let mut g = self.loss.backward();
        let table = match (self.embed_grad, self.lookup) {
            (Some((id, TableGrad::Host(head))), lookup) => {
                debug_assert!(lookup.as_ref().is_none_or(|l| l.table == id), "one tied table");
                let path = crate::params::path_of(module, id);
                let earlier = path.as_ref().and_then(|p| sums.remove(p));
                Some((id, head.add_to(earlier, lookup, &mut g)))
            }
            (Some((id, TableGrad::Dense(d))), Some(lookup)) => {
                debug_assert!(lookup.table == id, "one tied table");
                lookup.add_grad(&mut g, Some(d)).map(|d| (id, flat(d)))
            }
            (Some((id, TableGrad::Dense(d))), None) => Some((id, flat(d))),
            (None, Some(lookup)) => {
                let id = lookup.table;
                lookup.add_grad(&mut g, None).map(|d| (id, flat(d)))
            }
            (None, None) => None,
        };
        for (path, grad) in crate::params::grads_by_path_plus(module, &mut g, table) {
            let sum = match sums.remove(&path) {
                Some(earlier) => earlier + grad,
                None => grad,
            };
            sums.insert(path, sum);
        }
    }
}

fn flat(t: Tensor<2>) -> Tensor<1> {
    let n = t.shape().num_elements();
    t.reshape([n])
}

/// The tied table's gradient from the head, kept outside the graph.
#[derive(Debug)]
pub enum TableGrad {
    /// `[vocab, hidden]`, already summed (the generic chunked head).
    Dense(Tensor<2>),
    /// The host kernel's, still to be finished: see [`HostTableGrad`].
    Host(HostTableGrad),
}

/// The host head's table gradient with its product `gᵀ·rows` still to run (when it is
/// pending): it runs once backward is done, into the gradient of the step's earlier parts
/// when there is one, so that no second `[vocab, hidden]` buffer is ever made.
pub struct HostTableGrad {
    grad: EmbedGrad,
    /// The head's input rows `[n, hidden]`.
    rows: TensorData,
    vocab: usize,
    hidden: usize,
    device: burn::tensor::Device,
}

impl std::fmt::Debug for HostTableGrad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HostTableGrad([{}, {}])", self.vocab, self.hidden)
    }
}

impl HostTableGrad {
    /// The `[vocab, hidden]` gradient as a plain tensor (for the graph's surrogate).
    fn dense(self) -> Tensor<2> {
        let rows = self.rows.as_slice::<f32>().expect("f32 rows");
        let d = self.grad.finish(rows, self.vocab, self.hidden);
        Tensor::from_data(TensorData::new(d, [self.vocab, self.hidden]), &self.device)
    }

    /// `earlier` (flattened, the step's earlier parts) plus this gradient plus the lookup's
    /// rows, summed in one host buffer (`earlier`'s own when nothing else holds it).
    fn add_to(self, earlier: Option<Tensor<1>>, lookup: Option<Lookup>, grads: &mut burn::tensor::Gradients) -> Tensor<1> {
        let rows = self.rows.as_slice::<f32>().expect("f32 rows");
        let (vocab, hidden) = (self.vocab, self.hidden);
        let mut d = profile::timed(Phase::HeadLoss, || match earlier {
            Some(e) => {
                let mut d = e.into_data().try_into_vec::<f32>().expect("an f32 gradient");
                self.grad.add_to(rows, &mut d, vocab, hidden);
                d
            }
            None => self.grad.finish(rows, vocab, hidden),
        });
        if let Some(lookup) = lookup {
            lookup.add_to(grads, &mut d);
        }
        Tensor::from_data(TensorData::new(d, [vocab * hidden]), &self.device)
    }
}

/// Summed cross-entropy of `logits [n, V]` against `targets` (n ids).
pub fn cross_entropy_sum(logits: Tensor<2>, targets: &[u32]) -> Tensor<1> {
    let n = targets.len();
    let ids: Vec<i64> = targets.iter().map(|&t| t as i64).collect();
    let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [n, 1]), &logits.device());
    log_softmax(logits, 1).gather(1, ids).sum().neg()
}

/// Mean next-token cross-entropy over `targets` of `hidden [B, T, H]` (final-normed).
pub fn chunked_lm_loss(lm: &Gemma3, hidden: Tensor<3>, targets: &Targets, chunk_rows: usize) -> LossOutput {
    chunked_lm_loss_scaled(lm, hidden, targets, chunk_rows, targets.len() as f64)
}

/// Like [`chunked_lm_loss`] but divided by `denom` instead of the batch's own token count,
/// so micro-batches of one accumulated step add up to the step's mean.
///
/// On a CPU backend it goes through the fused host kernel ([`host_head_loss`] with
/// [`host_head::cross_entropy_row`]), in training and for a held-out loss alike: burn's
/// `log_softmax` of a `[chunk, 262144]` block runs on the calling thread alone. Elsewhere
/// it goes through [`chunked_head_loss`].
pub fn chunked_lm_loss_scaled(lm: &Gemma3, hidden: Tensor<3>, targets: &Targets, chunk_rows: usize, denom: f64) -> LossOutput {
    if !targets.is_empty() && host_head_kernels(&hidden.device()) {
        return host_lm_loss(lm, hidden, targets, chunk_rows, denom);
    }
    chunked_head_loss(lm, hidden, &targets.positions, chunk_rows, denom, |logits, rows| {
        cross_entropy_sum(logits, &targets.ids[rows])
    })
}

/// The generic chunked loss: `per_chunk(logits, rows)` gets the logits `[rows.len(), V]` of
/// the gathered positions `positions[rows]` and returns their **summed** loss (any
/// differentiable function of the logits — distillation compares them to a teacher's). The
/// total is divided by `denom`.
pub fn chunked_head_loss<F>(lm: &Gemma3, hidden: Tensor<3>, positions: &[usize], chunk_rows: usize, denom: f64, per_chunk: F) -> LossOutput
where
    F: FnMut(Tensor<2>, Range<usize>) -> Tensor<1>,
{
    profile::timed(Phase::HeadLoss, || head_loss(lm, hidden, positions, chunk_rows, denom, per_chunk))
}

fn head_loss<F>(lm: &Gemma3, hidden: Tensor<3>, positions: &[usize], chunk_rows: usize, denom: f64, mut per_chunk: F) -> LossOutput
where
    F: FnMut(Tensor<2>, Range<usize>) -> Tensor<1>,
{
    assert!(chunk_rows > 0, "chunk_rows must be positive");
    let device = hidden.device();
    let n = positions.len();
    if n == 0 {
        let zero = Tensor::<1>::zeros([1], &device);
        // Keep the graph connected so backward on an empty batch is harmless.
        let loss = if hidden.is_tracked() { zero + hidden.sum() * 0.0 } else { zero };
        return LossOutput::new(loss, 0.0, 0);
    }
    let [b, t, h] = hidden.dims();
    let idx: Vec<i64> = positions.iter().map(|&p| p as i64).collect();
    let idx = Tensor::<1, Int>::from_data(TensorData::new(idx, [n]), &device);
    let rows = hidden.reshape([b * t, h]).select(0, idx);
    let embed = lm.embed_tokens.val();
    let softcap = lm.config.final_logit_softcapping;
    let precision = lm.precision();
    let chunks = (0..n).step_by(chunk_rows).map(|s| s..(s + chunk_rows).min(n));

    let rows_need_grad = rows.is_tracked();
    let embed_needs_grad = embed.is_require_grad();
    if !rows_need_grad && !embed_needs_grad {
        // Evaluation: values only.
        let mut total = 0.0f64;
        for r in chunks {
            let logits = tied_head_logits(rows.clone().narrow(0, r.start, r.len()), embed.clone(), softcap, precision);
            total += per_chunk(logits, r).into_scalar::<f32>() as f64;
        }
        let value = total / denom;
        return LossOutput::new(Tensor::from_data(TensorData::new(vec![value as f32], [1]), &device), value, n);
    }

    let rows_plain = rows.clone().inner();
    let embed_leaf = if embed_needs_grad { embed.clone().inner().autodiff().require_grad() } else { embed.clone().inner() };
    let mut total = 0.0f64;
    let mut d_rows: Vec<Tensor<2>> = Vec::new();
    let mut d_embed: Option<Tensor<2>> = None;
    for r in chunks {
        let len = r.len();
        let h_leaf = rows_plain.clone().narrow(0, r.start, len).autodiff();
        let h_leaf = if rows_need_grad { h_leaf.require_grad() } else { h_leaf };
        let chunk_loss = per_chunk(tied_head_logits(h_leaf.clone(), embed_leaf.clone(), softcap, precision), r);
        total += chunk_loss.clone().inner().into_scalar::<f32>() as f64;
        let mut grads = chunk_loss.backward();
        if rows_need_grad {
            d_rows.push(h_leaf.grad_remove(&mut grads).expect("chunk rows were used"));
        }
        if embed_needs_grad {
            let g = embed_leaf.grad_remove(&mut grads).expect("embedding was used");
            d_embed = Some(match d_embed {
                Some(acc) => acc + g,
                None => g,
            });
        }
    }
    let scale = 1.0 / denom;
    let d_rows = rows_need_grad.then(|| Tensor::cat(d_rows, 0) * scale);
    let d_embed = d_embed.map(|de| TableGrad::Dense(de * scale));
    let value = total / denom;
    attach_gradients(lm, rows, d_rows, d_embed, value, n)
}

/// `value` as a differentiable scalar whose gradient is `d_rows` for `rows` (the surrogate
/// `s = Σ rows·d_rows`, returned as `s − detach(s) + value`), with `d_embed` (plain
/// tensors, already scaled) handed over for the embedding directly. Should the rows need
/// no gradient, the embedding's goes through the surrogate `Σ embed·d_embed` instead.
fn attach_gradients(lm: &Gemma3, rows: Tensor<2>, d_rows: Option<Tensor<2>>, d_embed: Option<TableGrad>, value: f64, tokens: usize) -> LossOutput {
    let differentiable = |s: Tensor<1>| s.clone() - s.detach() + value as f32;
    match (d_rows, d_embed) {
        (Some(d), d_embed) => LossOutput {
            loss: differentiable((rows * d).sum()),
            value,
            tokens,
            embed_grad: d_embed.map(|d| (lm.embed_tokens.id, d)),
            lookup: None,
        },
        (None, Some(d)) => {
            let d = match d {
                TableGrad::Dense(d) => d,
                TableGrad::Host(h) => h.dense(),
            };
            LossOutput::new(differentiable((lm.embed_tokens.val() * d).sum()), value, tokens)
        }
        (None, None) => unreachable!("attach_gradients is called when something needs a gradient"),
    }
}

/// [`chunked_lm_loss_scaled`] through the fused host kernel.
fn host_lm_loss(lm: &Gemma3, hidden: Tensor<3>, targets: &Targets, chunk_rows: usize, denom: f64) -> LossOutput {
    let softcap = lm.config.final_logit_softcapping.map(|c| c as f32);
    let vocab = lm.embed_tokens.val().dims()[0];
    host_head_loss(lm, hidden, &targets.positions, chunk_rows, denom, |rows, z, scale| {
        z.par_chunks_mut(vocab)
            .zip(&targets.ids[rows])
            .map(|(row, &t)| host_head::cross_entropy_row(row, t as usize, softcap, scale))
            .sum()
    })
}

/// The generic chunked loss on a CPU backend, through the fused host kernel
/// ([`host_head::fused`]): `row_grad(rows, z, scale)` gets the raw logits `z`
/// (`[rows.len(), V]`, before soft-capping) of the gathered positions `positions[rows]`,
/// turns them in place into `scale ×` the gradient of their summed loss, and returns that
/// summed loss (unscaled). `scale` is `1 / denom`. Call it only on a host device
/// model ([`sweelol_gemma::kernels::host::host_head_kernels`]); when nothing needs a gradient (a
/// held-out loss) it returns the value alone, holding one chunk of logits at a time.
pub fn host_head_loss<F>(lm: &Gemma3, hidden: Tensor<3>, positions: &[usize], chunk_rows: usize, denom: f64, row_grad: F) -> LossOutput
where
    F: FnMut(Range<usize>, &mut [f32], f32) -> f64,
{
    profile::timed(Phase::HeadLoss, || fused_head_loss(lm, hidden, positions, chunk_rows, denom, row_grad))
}

fn fused_head_loss<F>(lm: &Gemma3, hidden: Tensor<3>, positions: &[usize], chunk_rows: usize, denom: f64, mut row_grad: F) -> LossOutput
where
    F: FnMut(Range<usize>, &mut [f32], f32) -> f64,
{
    let device = hidden.device();
    let n = positions.len();
    let [b, t, h] = hidden.dims();
    let idx: Vec<i64> = positions.iter().map(|&p| p as i64).collect();
    let idx = Tensor::<1, Int>::from_data(TensorData::new(idx, [n]), &device);
    let rows = hidden.reshape([b * t, h]).select(0, idx);
    let embed = lm.embed_tokens.val();
    let vocab = embed.dims()[0];
    let (need_rows, need_embed) = (rows.is_tracked(), embed.is_require_grad());
    let rows_host = host_f32(rows.clone().inner());
    let rows_slice = rows_host.as_slice::<f32>().expect("f32 rows");
    let scale = (1.0 / denom) as f32;
    // The table is read where it lies (no 671 MB copy per step).
    let g = with_host_f32(embed.clone(), |embed| {
        let inputs = HeadInputs {
            embed,
            vocab,
            hidden: h,
            rows: rows_slice,
            softcap: lm.config.final_logit_softcapping.map(|c| c as f32),
            precision: lm.precision(),
        };
        host_head::fused(&inputs, chunk_rows, need_rows, need_embed, |r, z| row_grad(r, z, scale))
    });
    let value = g.loss_sum / denom;
    if !need_rows && !need_embed {
        return LossOutput::new(Tensor::from_data(TensorData::new(vec![value as f32], [1]), &device), value, n);
    }
    let plain = device.clone().inner();
    let d_rows = g.d_rows.map(|d| Tensor::<2>::from_data(TensorData::new(d, [n, h]), &plain));
    let d_embed = g.d_embed.map(|grad| TableGrad::Host(HostTableGrad { grad, rows: rows_host, vocab, hidden: h, device: plain.clone() }));
    attach_gradients(lm, rows, d_rows, d_embed, value, n)
}
