//! bf16 matrix products of tensors in host memory (burn's CPU backend), with their
//! gradients.
//!
//! burn-flex multiplies bf16 tensors by widening them to f32 and back, so a bf16 step
//! costs more than an f32 one. Here the product is [`crate::kernels::gemm_bf16`]'s (AMX or
//! `vdpbf16ps` where the CPU has them), and under autodiff it is one graph node whose backward computes both
//! gradients the same way, as autocast's bf16 linear does: `dx = round(g · wᵀ)`,
//! `dw = round(xᵀ · g)`, operands rounded to bf16, sums in f32.

use std::fmt;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{binary, Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::Flex;
use burn::tensor::{DType, Shape, Tensor, TensorData};

use crate::kernels::gemm_bf16::{gemm_bf16, gemm_bf16_packed, pack_b_reused, Dst, MatRef};
use crate::kernels::node::AdFlex;

/// `lhs · rhs` in bf16 (batched over equal leading axes) when both live in host memory;
/// `None` elsewhere, or for shapes it does not take (broadcast batch axes), so the caller
/// uses burn's own product.
pub fn matmul<const D: usize>(lhs: Tensor<D>, rhs: Tensor<D>) -> Option<Tensor<D>> {
    matmul_with(lhs, rhs, Rhs::Operand)
}

/// A linear layer's `x [n, in] · w [in, out]` as [`matmul`]; a weight that does not train
/// here is packed once and reused ([`crate::kernels::gemm_bf16::pack_b_reused`]), as `w` forward
/// and as `wᵀ` for the input's gradient.
pub fn linear(x: Tensor<2>, w: Tensor<2>) -> Option<Tensor<2>> {
    let fixed = !w.is_tracked();
    matmul_with(x, w, if fixed { Rhs::FixedWeight } else { Rhs::Operand })
}

/// What the right-hand side is: any operand, or a weight that stays as it is while used.
#[derive(Clone, Copy, Debug)]
enum Rhs {
    Operand,
    FixedWeight,
}

fn matmul_with<const D: usize>(lhs: Tensor<D>, rhs: Tensor<D>, kind: Rhs) -> Option<Tensor<D>> {
    let (ld, rd) = (lhs.dims(), rhs.dims());
    if ld[..D - 2] != rd[..D - 2] || ld[D - 1] != rd[D - 2] {
        return None;
    }
    if !crate::kernels::host::runs_on_host(&lhs.device()) || lhs.dtype() != DType::F32 || rhs.dtype() != DType::F32 {
        return None;
    }
    if lhs.is_autodiff() || rhs.is_autodiff() {
        let lift = |t: Tensor<D>| if t.is_autodiff() { t } else { t.autodiff() };
        let l = lift(lhs).try_into_primitive::<AdFlex>().ok()?;
        let r = lift(rhs).try_into_primitive::<AdFlex>().ok()?;
        Some(Tensor::from_primitive::<AdFlex>(tracked(l, r, kind)))
    } else {
        let l = lhs.try_into_primitive::<Flex>().ok()?;
        let r = rhs.try_into_primitive::<Flex>().ok()?;
        Some(Tensor::from_primitive::<Flex>(product(&l, &r, kind)))
    }
}

/// The product as one autodiff node (see the module docs).
fn tracked(lhs: FloatTensor<AdFlex>, rhs: FloatTensor<AdFlex>, kind: Rhs) -> FloatTensor<AdFlex> {
    let (lhs_tracked, rhs_tracked) = (lhs.is_tracked(), rhs.is_tracked());
    match MatmulBf16(kind).prepare::<NoCheckpointing>([lhs.node(), rhs.node()]).compute_bound().stateful() {
        OpsKind::Tracked(prep) => {
            let out = product(lhs.primitive(), rhs.primitive(), kind);
            // Each gradient needs the other operand only.
            let state = (
                rhs_tracked.then(|| Saved(lhs.primitive().clone())),
                lhs_tracked.then(|| Saved(rhs.primitive().clone())),
            );
            prep.finish(state, out)
        }
        OpsKind::UnTracked(prep) => prep.finish(product(lhs.primitive(), rhs.primitive(), kind)),
    }
}

/// An operand kept for the backward pass.
#[derive(Clone)]
struct Saved(FlexTensor);

impl fmt::Debug for Saved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Saved({:?})", self.0.layout().shape())
    }
}

#[derive(Debug)]
struct MatmulBf16(Rhs);

impl Backward<Flex, 2> for MatmulBf16 {
    type State = (Option<Saved>, Option<Saved>);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (lhs, rhs) = ops.state;
        // A fixed weight's transpose is fixed too; the activations' gradient is not.
        binary::<Flex, _, _>(
            ops.parents,
            ops.node,
            grads,
            |g| product(&g, &transposed(&rhs.expect("rhs kept for dlhs").0), self.0),
            |g| product(&transposed(&lhs.expect("lhs kept for drhs").0), &g, Rhs::Operand),
        );
    }
}

/// The last two axes swapped, as a view.
fn transposed(t: &FlexTensor) -> FlexTensor {
    let d = t.layout().num_dims();
    t.transpose(d - 2, d - 1)
}

/// `lhs [.., m, k] · rhs [.., k, n]` with [`gemm_bf16`], one product per batch index,
/// read through the operands' strides (views and transposes cost no copy).
fn product(lhs: &FlexTensor, rhs: &FlexTensor, kind: Rhs) -> FlexTensor {
    let (lhs, rhs) = (readable(lhs), readable(rhs));
    let (ls, rs) = (lhs.layout().shape().to_vec(), rhs.layout().shape().to_vec());
    let d = ls.len();
    let (m, k, n) = (ls[d - 2], ls[d - 1], rs[d - 1]);
    let batch: usize = ls[..d - 2].iter().product();
    let mut out = vec![0.0f32; batch * m * n];
    let (la, ra) = (lhs.storage::<f32>(), rhs.storage::<f32>());
    let (lst, rst) = (lhs.layout().strides(), rhs.layout().strides());
    for (bi, dst) in out.chunks_mut((m * n).max(1)).enumerate().take(batch) {
        let lo = lhs.layout().start_offset() + batch_offset(bi, &ls[..d - 2], lst);
        let ro = rhs.layout().start_offset() + batch_offset(bi, &rs[..d - 2], rst);
        let a = MatRef { data: &la[lo..], rows: m, cols: k, cs: lst[d - 1], rs: lst[d - 2] };
        let b = MatRef { data: &ra[ro..], rows: k, cols: n, cs: rst[d - 1], rs: rst[d - 2] };
        match kind {
            Rhs::FixedWeight if batch == 1 => gemm_bf16_packed(Dst::row_major(dst, n), a, &pack_b_reused(b)),
            _ => gemm_bf16(Dst::row_major(dst, n), a, b),
        }
    }
    let mut shape = ls;
    shape[d - 1] = n;
    FlexTensor::from_data(TensorData::new(out, Shape::from(shape)))
}

/// The tensor with all strides non-negative (a flipped view is copied). Operands are f32:
/// [`matmul`] takes no other dtype, and gradients are f32.
fn readable(t: &FlexTensor) -> FlexTensor {
    if t.layout().has_positive_strides() {
        t.clone()
    } else {
        t.to_contiguous()
    }
}

/// The storage offset of batch index `bi` (row-major over `dims`).
fn batch_offset(mut bi: usize, dims: &[usize], strides: &[isize]) -> usize {
    let mut off = 0isize;
    for (axis, &size) in dims.iter().enumerate().rev() {
        off += (bi % size) as isize * strides[axis];
        bi /= size;
    }
    off as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::gemm_bf16::round_bf16;
    use burn::tensor::Device;

    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n).map(|i| (((i as u32).wrapping_mul(2654435761) ^ seed.wrapping_mul(131)) % 4093) as f32 / 1000.3 - 2.0).collect()
    }

    fn tensor<const D: usize>(v: Vec<f32>, shape: [usize; D], device: &Device) -> Tensor<D> {
        Tensor::from_data(TensorData::new(v, shape), device)
    }

    /// burn's own bf16 product (widened to f32 and rounded back): the reference semantics.
    fn burn_bf16<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> Tensor<D> {
        let bf = |t: Tensor<D>| t.cast(burn::tensor::FloatDType::BF16);
        bf(a).matmul(bf(b)).cast(burn::tensor::FloatDType::F32)
    }

    fn close(got: &[f32], want: &[f32], what: &str) {
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            // Both are bf16 values: one rounding step apart at most (sums in another order).
            let ulp = w.abs().max(1e-3) * 2f32.powi(-7);
            assert!((g - w).abs() <= ulp * 1.01, "{what} [{i}]: {g} vs {w}");
            assert_eq!(round_bf16(*g), *g, "{what} [{i}]: {g} is not a bf16 value");
        }
    }

    fn vec<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().try_to_vec::<f32>().unwrap()
    }

    #[test]
    fn values_and_gradients_match_burns_bf16_product() {
        let device = Device::flex().autodiff();
        let (m, k, n) = (37, 70, 45);
        let (a, b, g) = (values(m * k, 1), values(k * n, 2), values(m * n, 3));
        // Ours.
        let (x, w) = (tensor(a.clone(), [m, k], &device).require_grad(), tensor(b.clone(), [k, n], &device).require_grad());
        let y = matmul(x.clone(), w.clone()).expect("host tensors");
        let loss = (y.clone() * tensor(g.clone(), [m, n], &device)).sum();
        let grads = loss.backward();
        let (dx, dw) = (x.grad(&grads).unwrap(), w.grad(&grads).unwrap());
        // burn's bf16 graph.
        let (x2, w2) = (tensor(a, [m, k], &device).require_grad(), tensor(b, [k, n], &device).require_grad());
        let y2 = burn_bf16(x2.clone(), w2.clone());
        let loss2 = (y2.clone() * tensor(g, [m, n], &device)).sum();
        let grads2 = loss2.backward();
        close(&vec(y), &vec(y2), "y");
        close(&vec(dx), &vec(x2.grad(&grads2).unwrap()), "dx");
        close(&vec(dw), &vec(w2.grad(&grads2).unwrap()), "dw");
    }

    #[test]
    fn batched_views_and_untracked_operands() {
        let device = Device::flex();
        let (b, h, m, k, n) = (2, 3, 9, 17, 11);
        let a = tensor(values(b * h * m * k, 4), [b, h, m, k], &device);
        // A transposed view, as attention's `kᵀ`.
        let bt = tensor(values(b * h * n * k, 5), [b, h, n, k], &device).swap_dims(2, 3);
        let got = matmul(a.clone(), bt.clone()).expect("host tensors");
        assert_eq!(got.dims(), [b, h, m, n]);
        close(&vec(got), &vec(burn_bf16(a, bt)), "batched");
    }

    #[test]
    fn other_shapes_are_left_to_burn() {
        let device = Device::flex();
        let a = tensor(values(2 * 3 * 4, 6), [2, 3, 4], &device);
        let b = tensor(values(4 * 5, 7), [1, 4, 5], &device);
        assert!(matmul(a, b).is_none(), "a broadcast batch axis goes to burn");
    }
}
