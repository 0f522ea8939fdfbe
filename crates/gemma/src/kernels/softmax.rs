//! Attention's `softmax(scores · scale + mask)` over the keys.
//!
//! On the CPU backend it is one parallel pass forward and one backward, a single autodiff
//! node ([`super::node`]) that saves only the probabilities, which `probs · v` keeps anyway.
//! As burn's operations (a multiply, an add, then softmax's max, subtract, exp, sum and
//! divide) it ran on the calling thread alone and saved the exponentials besides
//! (`docs/perf.md`). Elsewhere it is burn's operations.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::Flex;
use burn::tensor::activation::softmax;
use burn::tensor::{Tensor, TensorData};
use rayon::prelude::*;

use super::host::{dispatch, max, runs_on_host, with_host_f32};
use super::node::{ad_tensor, contiguous, f32s, flex, from_ad, shape, AdTensor};

/// `softmax(scores · scale + mask)` over the last axis; `scores` `[B, H, rows, keys]`,
/// `mask` `[1, 1, rows, keys]` (additive, no gradient).
pub fn scaled_masked_softmax(scores: Tensor<4>, scale: f64, mask: Tensor<4>) -> Tensor<4> {
    let [_, _, rows, keys] = scores.dims();
    if !runs_on_host(&scores.device()) || mask.dims() != [1, 1, rows, keys] {
        return composite(scores, scale, mask);
    }
    let mask = with_host_f32(mask.inner(), |m| m.to_vec());
    if !scores.is_tracked() {
        let (dims, device) = (scores.dims(), scores.device());
        let p = with_host_f32(scores, |s| forward(s, &mask, keys, scale as f32));
        return Tensor::from_data(TensorData::new(p, dims), &device);
    }
    let device = scores.device();
    match ad_tensor(scores.clone()) {
        Some(s) => from_ad(tracked(s, &mask, keys, scale as f32)),
        None => composite(scores, scale, Tensor::from_data(TensorData::new(mask, [1, 1, rows, keys]), &device)),
    }
}

/// burn's operations: the definition, and the path off the host.
pub fn composite(scores: Tensor<4>, scale: f64, mask: Tensor<4>) -> Tensor<4> {
    softmax(scores * scale + mask, 3)
}

fn tracked(s: AdTensor, mask: &[f32], keys: usize, scale: f32) -> AdTensor {
    let s_host = contiguous(s.primitive());
    let p = flex(forward(f32s(&s_host), mask, keys, scale), shape(&s_host));
    match SoftmaxBackward.prepare::<NoCheckpointing>([s.node()]).compute_bound().stateful() {
        OpsKind::Tracked(prep) => prep.finish(Saved { p: p.clone(), scale }, p),
        OpsKind::UnTracked(prep) => prep.finish(p),
    }
}

/// Elements per parallel task (whole rows).
const CHUNK: usize = 16 * 1024;

fn rows_per_task(keys: usize) -> usize {
    (CHUNK / keys.max(1)).max(1)
}

/// The probabilities of row-major `s` with rows of `keys`, under `mask` (`[rows, keys]`),
/// whose rows repeat every `mask.len()` elements of `s` (one batch row and head each).
fn forward(s: &[f32], mask: &[f32], keys: usize, scale: f32) -> Vec<f32> {
    let per_task = rows_per_task(keys);
    let mask_rows = mask.len() / keys;
    let mut p = vec![0.0f32; s.len()];
    p.par_chunks_mut(per_task * keys).zip(s.par_chunks(per_task * keys)).enumerate().for_each(|(t, (p, s))| {
        dispatch(|| {
            for (i, (p, s)) in p.chunks_exact_mut(keys).zip(s.chunks_exact(keys)).enumerate() {
                let m = (t * per_task + i) % mask_rows;
                let m = &mask[m * keys..(m + 1) * keys];
                for ((p, &s), &m) in p.iter_mut().zip(s).zip(m) {
                    *p = s * scale + m;
                }
                let top = max(p);
                let mut sum = 0.0f32;
                for p in p.iter_mut() {
                    *p = (*p - top).exp();
                    sum += *p;
                }
                for p in p.iter_mut() {
                    *p /= sum;
                }
            }
        })
    });
    p
}

/// What backward reads: the probabilities (shared with `probs · v`) and the scale.
#[derive(Clone, Debug)]
struct Saved {
    p: FlexTensor,
    scale: f32,
}

#[derive(Debug)]
struct SoftmaxBackward;

impl Backward<Flex, 1> for SoftmaxBackward {
    type State = Saved;

    /// `ds = scale · p · (dp − Σ_keys dp·p)`.
    fn backward(self, ops: Ops<Saved, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [parent] = ops.parents;
        let dp = contiguous(&grads.consume::<Flex>(&ops.node));
        let Some(node) = parent else { return };
        let Saved { p, scale } = ops.state;
        let dims = shape(&p);
        let keys = dims[3];
        let per_task = rows_per_task(keys);
        let (p_vals, dp_vals) = (f32s(&p), f32s(&dp));
        let mut ds = vec![0.0f32; p_vals.len()];
        ds.par_chunks_mut(per_task * keys).zip(p_vals.par_chunks(per_task * keys)).zip(dp_vals.par_chunks(per_task * keys)).for_each(
            |((ds, p), dp)| {
                dispatch(|| {
                    for ((ds, p), dp) in ds.chunks_exact_mut(keys).zip(p.chunks_exact(keys)).zip(dp.chunks_exact(keys)) {
                        let mut lanes = [0.0f32; 16];
                        for (p, dp) in p.chunks(16).zip(dp.chunks(16)) {
                            for ((l, &p), &dp) in lanes.iter_mut().zip(p).zip(dp) {
                                *l += p * dp;
                            }
                        }
                        let dot: f32 = lanes.iter().sum();
                        for ((ds, &p), &dp) in ds.iter_mut().zip(p).zip(dp) {
                            *ds = scale * p * (dp - dot);
                        }
                    }
                })
            },
        );
        grads.register::<Flex>(node.id, flex(ds, dims));
    }
}

#[cfg(test)]
mod tests {
    use burn::tensor::{Device, Distribution, Tensor, TensorData};

    use super::*;

    fn close(a: Tensor<4>, b: Tensor<4>, tol: f32, what: &str) {
        let (a, b) = (a.into_data().try_to_vec::<f32>().unwrap(), b.into_data().try_to_vec::<f32>().unwrap());
        assert_eq!(a.len(), b.len(), "{what}: lengths");
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            assert!((x - y).abs() <= tol * (1.0 + y.abs()), "{what}[{i}]: {x} vs {y}");
        }
    }

    /// A causal mask with `f32::MIN` above the diagonal, as the model builds it.
    fn causal(rows: usize, keys: usize, device: &Device) -> Tensor<4> {
        let past = keys - rows;
        let data: Vec<f32> = (0..rows * keys).map(|i| if i % keys <= past + i / keys { 0.0 } else { f32::MIN }).collect();
        Tensor::from_data(TensorData::new(data, [1, 1, rows, keys]), device)
    }

    /// Values and the gradient equal burn's composite, on 2 x 3 heads of 9 query rows over
    /// 300 keys (tasks of 54 rows: the mask's rows repeat across a task's edge), with a
    /// non-trivial upstream gradient; masked probabilities are exactly 0; the untracked path
    /// gives the tracked path's values exactly.
    #[test]
    fn fused_softmax_equals_burns_operations() {
        let device = Device::flex().autodiff();
        let s0 = Tensor::<4>::random([2, 3, 9, 300], Distribution::Normal(0.0, 3.0), &device);
        let up = Tensor::<4>::random([2, 3, 9, 300], Distribution::Normal(0.0, 1.0), &device);
        let mask = causal(9, 300, &device);
        let run = |fused: bool| {
            let s = s0.clone().require_grad();
            let p = if fused { scaled_masked_softmax(s.clone(), 0.0625, mask.clone()) } else { composite(s.clone(), 0.0625, mask.clone()) };
            let ds = s.grad(&(p.clone() * up.clone()).sum().backward()).expect("ds");
            (p.inner(), ds)
        };
        let (p, ds) = run(true);
        let (p_ref, ds_ref) = run(false);
        close(p.clone(), p_ref, 1e-6, "p");
        close(ds, ds_ref, 1e-5, "ds");
        let values = p.clone().into_data().try_to_vec::<f32>().unwrap();
        for (i, v) in values.iter().enumerate() {
            if i % 300 > 291 + (i / 300) % 9 {
                assert_eq!(*v, 0.0, "masked p[{i}]");
            }
        }
        close(scaled_masked_softmax(s0.inner(), 0.0625, mask.inner()), p, 0.0, "untracked p");
    }
}
