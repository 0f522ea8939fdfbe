//! The input embedding lookup with its gradient kept sparse (host backend).
//!
//! burn's `embedding` backward builds a dense `[vocab, hidden]` gradient every step (671 MB
//! for Gemma-3-270m): a zero-filled buffer, copied once more to align it, the batch's rows
//! scattered in, and then added to the head's own `[vocab, hidden]` gradient of the tied
//! table. In a full fine-tune profile that is half of the decoder's backward
//! (`docs/perf.md`, "The embedding's lookup"). On the host the lookup is instead a gather
//! from the table into a fresh leaf; after backward the leaf's `[B, T, H]` gradient, times the embedding
//! scale, is added in place to the rows of the head's gradient buffer that the batch used
//! ([`LossOutput::gradients`](crate::loss::LossOutput::gradients)). Same sums, no dense
//! buffer of the lookup's own.

use burn::module::ParamId;
use burn::tensor::{Gradients, IndexingUpdateOp, Int, Tensor};
use sweelol_gemma::Gemma3;

use sweelol_gemma::kernels::host::{runs_on_host, with_host_f32};

/// A lookup whose gradient reaches the table outside the graph.
#[derive(Debug)]
pub struct Lookup {
    /// The gathered, scaled rows `[B, T, H]`: the graph's leaf.
    leaf: Tensor<3>,
    /// The ids, flattened `[B·T]`.
    ids: Tensor<1, Int>,
    scale: f32,
    vocab: usize,
    /// The table's parameter.
    pub table: ParamId,
}

/// [`Gemma3::embed`] of `ids`; on the host with a table that trains, the gather is a leaf
/// and the returned [`Lookup`] carries its gradient to the table (see the module docs).
pub fn embed(lm: &Gemma3, ids: Tensor<2, Int>) -> (Tensor<3>, Option<Lookup>) {
    let table = lm.embed_tokens.val();
    if !table.is_require_grad() || !runs_on_host(&table.device()) {
        return (lm.embed(ids), None);
    }
    let [b, t] = ids.dims();
    let [vocab, h] = table.dims();
    let scale = lm.embed_scale();
    let ids = ids.reshape([b * t]);
    let rows = table.inner().select(0, ids.clone()) * scale;
    let leaf = rows.reshape([b, t, h]).autodiff().require_grad();
    (leaf.clone(), Some(Lookup { leaf, ids, scale, vocab, table: lm.embed_tokens.id }))
}

impl Lookup {
    /// Adds this lookup's gradient from `grads` to the table's gradient `d` (`[V, H]`,
    /// host memory) in place: `scale ×` each leaf row added at its id.
    pub fn add_to(self, grads: &mut Gradients, d: &mut [f32]) {
        let Some(dx) = self.leaf.grad_remove(grads) else { return };
        let h = dx.dims()[2];
        assert_eq!(d.len(), self.vocab * h, "Lookup::add_to: the table's gradient is not [{}, {h}]", self.vocab);
        let ids = self.ids.into_data().convert::<i64>();
        let ids = ids.as_slice::<i64>().expect("i64 ids");
        with_host_f32(dx, |dx| {
            for (row, &id) in dx.chunks_exact(h).zip(ids) {
                let id = usize::try_from(id).expect("token ids are non-negative");
                d[id * h..(id + 1) * h].iter_mut().zip(row).for_each(|(d, &x)| *d += x * self.scale);
            }
        });
    }

    /// `d_embed` (the table's gradient so far, `[V, H]`, or none) plus this lookup's
    /// gradient from `grads`: `scale ×` the leaf's rows added at their ids, in place.
    pub fn add_grad(self, grads: &mut Gradients, d_embed: Option<Tensor<2>>) -> Option<Tensor<2>> {
        let Some(dx) = self.leaf.grad_remove(grads) else { return d_embed };
        let [b, t, h] = dx.dims();
        let dx = dx.reshape([b * t, h]) * self.scale;
        let base = d_embed.unwrap_or_else(|| Tensor::zeros([self.vocab, h], &dx.device()));
        Some(base.select_assign(0, self.ids, dx, IndexingUpdateOp::Add))
    }
}
