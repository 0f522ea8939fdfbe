//! Rotate-half rotary embedding, `x · cos + rotate_half(x) · sin`, with
//! `rotate_half([x₁, x₂]) = [−x₂, x₁]` over the halves of each head.
//!
//! On the CPU backend it is one parallel pass forward and one backward, a single autodiff
//! node ([`super::node`]) that saves nothing but the tables: the map is linear, so
//! `dx₁ = dy₁·cos₁ + dy₂·sin₂` and `dx₂ = dy₂·cos₂ − dy₁·sin₁`. As burn's six operations
//! (two slices, a negation, a concatenation, two multiplies and an add) it ran on the
//! calling thread alone (`docs/perf.md`). Elsewhere it is burn's operations.

use std::sync::Arc;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::Flex;
use burn::tensor::{Tensor, TensorData};
use rayon::prelude::*;

use super::host::{dispatch, runs_on_host, with_host_f32};
use super::node::{ad_tensor, contiguous, f32s, flex, from_ad, shape, AdTensor};

/// The rotary embedding of `x` `[B, T, heads, head_dim]` at the positions of the tables
/// `cos`, `sin` `[1, 1, T, head_dim]`.
pub fn rope(x: Tensor<4>, cos: &Tensor<4>, sin: &Tensor<4>) -> Tensor<4> {
    let [_, t, _, hd] = x.dims();
    if !runs_on_host(&x.device()) || cos.dims() != [1, 1, t, hd] {
        return composite(x, cos, sin);
    }
    let tables = Tables {
        cos: with_host_f32(cos.clone().inner(), |c| c.into()),
        sin: with_host_f32(sin.clone().inner(), |s| s.into()),
        head_dim: hd,
    };
    if !x.is_tracked() {
        let (dims, device) = (x.dims(), x.device());
        let heads = dims[2];
        let y = with_host_f32(x, |x| tables.apply(x, heads, false));
        return Tensor::from_data(TensorData::new(y, dims), &device);
    }
    match ad_tensor(x.clone()) {
        Some(x) => from_ad(tracked(x, tables)),
        None => composite(x, cos, sin),
    }
}

/// burn's operations: the definition, and the path off the host.
pub fn composite(x: Tensor<4>, cos: &Tensor<4>, sin: &Tensor<4>) -> Tensor<4> {
    let [_, t, _, hd] = x.dims();
    let (cos, sin) = (cos.clone().reshape([1, t, 1, hd]), sin.clone().reshape([1, t, 1, hd]));
    let half = hd / 2;
    let x1 = x.clone().narrow(3, 0, half);
    let x2 = x.clone().narrow(3, half, half);
    let rotated = Tensor::cat(vec![x2.neg(), x1], 3);
    x * cos + rotated * sin
}

fn tracked(x: AdTensor, tables: Tables) -> AdTensor {
    let x_host = contiguous(x.primitive());
    let dims = shape(&x_host);
    let y = flex(tables.apply(f32s(&x_host), dims[2], false), dims);
    match RopeBackward.prepare::<NoCheckpointing>([x.node()]).compute_bound().stateful() {
        OpsKind::Tracked(prep) => prep.finish(tables, y),
        OpsKind::UnTracked(prep) => prep.finish(y),
    }
}

/// The tables `[T, head_dim]`, shared by every head of a position.
#[derive(Clone, Debug)]
struct Tables {
    cos: Arc<[f32]>,
    sin: Arc<[f32]>,
    head_dim: usize,
}

impl Tables {
    /// The rotation of `x` `[B, T, heads, head_dim]` (`transpose`: its transpose, which is
    /// backward's map of `dy`).
    fn apply(&self, x: &[f32], heads: usize, transpose: bool) -> Vec<f32> {
        let hd = self.head_dim;
        let half = hd / 2;
        let positions = self.cos.len() / hd;
        let per_position = heads * hd;
        let mut y = vec![0.0f32; x.len()];
        // One task per (batch row, position): all its heads share one row of the tables.
        y.par_chunks_mut(per_position).zip(x.par_chunks(per_position)).enumerate().for_each(|(i, (y, x))| {
            let at = (i % positions) * hd;
            let (c, s) = (&self.cos[at..at + hd], &self.sin[at..at + hd]);
            let (c1, c2, s1, s2) = (&c[..half], &c[half..], &s[..half], &s[half..]);
            dispatch(|| {
                for (y, x) in y.chunks_exact_mut(hd).zip(x.chunks_exact(hd)) {
                    let (x1, x2) = x.split_at(half);
                    let (y1, y2) = y.split_at_mut(half);
                    for j in 0..half {
                        if transpose {
                            y1[j] = x1[j] * c1[j] + x2[j] * s2[j];
                            y2[j] = x2[j] * c2[j] - x1[j] * s1[j];
                        } else {
                            y1[j] = x1[j] * c1[j] + -x2[j] * s1[j];
                            y2[j] = x2[j] * c2[j] + x1[j] * s2[j];
                        }
                    }
                }
            })
        });
        y
    }
}

#[derive(Debug)]
struct RopeBackward;

impl Backward<Flex, 1> for RopeBackward {
    type State = Tables;

    fn backward(self, ops: Ops<Tables, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [parent] = ops.parents;
        let dy = contiguous(&grads.consume::<Flex>(&ops.node));
        let Some(node) = parent else { return };
        let dims = shape(&dy);
        let dx = ops.state.apply(f32s(&dy), dims[2], true);
        grads.register::<Flex>(node.id, flex(dx, dims));
    }
}

#[cfg(test)]
mod tests {
    use burn::tensor::{Device, Distribution, Tensor};

    use super::*;

    fn values(t: Tensor<4>) -> Vec<f32> {
        t.into_data().try_to_vec::<f32>().unwrap()
    }

    /// Values equal burn's composite exactly (the same f32 operations), and so does the
    /// gradient under a non-trivial upstream gradient; the untracked path agrees.
    #[test]
    fn fused_rope_equals_burns_operations() {
        let device = Device::flex().autodiff();
        let (b, t, heads, hd) = (2, 5, 3, 8);
        let cos = Tensor::<4>::random([1, 1, t, hd], Distribution::Uniform(-1.0, 1.0), &device);
        let sin = Tensor::<4>::random([1, 1, t, hd], Distribution::Uniform(-1.0, 1.0), &device);
        let x0 = Tensor::<4>::random([b, t, heads, hd], Distribution::Normal(0.0, 1.0), &device);
        let up = Tensor::<4>::random([b, t, heads, hd], Distribution::Normal(0.0, 1.0), &device);
        let run = |fused: bool| {
            let x = x0.clone().require_grad();
            let y = if fused { rope(x.clone(), &cos, &sin) } else { composite(x.clone(), &cos, &sin) };
            let dx = x.grad(&(y.clone() * up.clone()).sum().backward()).expect("dx");
            (values(y.inner()), values(dx))
        };
        let (y, dx) = run(true);
        let (y_ref, dx_ref) = run(false);
        assert_eq!(y, y_ref, "values");
        for (i, (a, r)) in dx.iter().zip(&dx_ref).enumerate() {
            assert!((a - r).abs() <= 1e-6 * (1.0 + r.abs()), "dx[{i}]: {a} vs {r}");
        }
        assert_eq!(values(rope(x0.inner(), &cos.inner(), &sin.inner())), y, "untracked");
    }
}
