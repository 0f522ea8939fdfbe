//! Gemma's RMSNorm, `x / sqrt(mean(x²) + eps) · (1 + w)` over the last axis.
//!
//! On the CPU backend it is one parallel pass forward and one backward, a single autodiff
//! node ([`super::node`]) that saves the input it already shares with the graph and one
//! `1 / rms` per row. As burn's nine operations it ran on one thread, saved the normalised
//! input as well, and six norms a layer made it the largest part of what the calling thread
//! did alone in a training step (`docs/perf.md`). Elsewhere it is burn's operations.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::Flex;
use burn::tensor::{Tensor, TensorData};
use rayon::prelude::*;

use super::host::{runs_on_host, with_host_f32};
use super::node::{ad_tensor, contiguous, f32s, flex, from_ad, shape};

/// RMSNorm of `x` (`[…, H]`) with the offset-from-one weight `w` (`[H]`).
pub fn rms_norm<const D: usize>(x: Tensor<D>, w: Tensor<1>, eps: f64) -> Tensor<D> {
    if !runs_on_host(&x.device()) {
        return composite(x, w, eps);
    }
    if !x.is_tracked() && !w.is_tracked() {
        return untracked(x, w, eps);
    }
    match (ad_tensor(x.clone()), ad_tensor(w.clone())) {
        (Some(x), Some(w)) => from_ad(tracked(x, w, eps as f32)),
        _ => composite(x, w, eps),
    }
}

/// burn's operations: the definition, and the path off the host.
pub fn composite<const D: usize>(x: Tensor<D>, w: Tensor<1>, eps: f64) -> Tensor<D> {
    let mean_sq = (x.clone() * x.clone()).mean_dim(D - 1);
    let normed = x * (mean_sq + eps).sqrt().recip();
    normed * (w + 1.0).unsqueeze::<D>()
}

/// Rows per parallel task.
const ROWS: usize = 64;

/// Values only, read where they lie.
fn untracked<const D: usize>(x: Tensor<D>, w: Tensor<1>, eps: f64) -> Tensor<D> {
    let (dims, device) = (x.dims(), x.device());
    let y = with_host_f32(w, |w| with_host_f32(x, |x| forward(x, w, eps as f32).0));
    Tensor::from_data(TensorData::new(y, dims), &device)
}

fn tracked(x: super::node::AdTensor, w: super::node::AdTensor, eps: f32) -> super::node::AdTensor {
    let x_host = contiguous(x.primitive());
    let w_host = contiguous(w.primitive());
    let (y, inv_rms) = forward(f32s(&x_host), f32s(&w_host), eps);
    let y = flex(y, shape(&x_host));
    match RmsNormBackward.prepare::<NoCheckpointing>([x.node(), w.node()]).compute_bound().stateful() {
        OpsKind::Tracked(prep) => prep.finish(Saved { x: x_host, w: w_host, inv_rms }, y),
        OpsKind::UnTracked(prep) => prep.finish(y),
    }
}

/// `(y, 1 / rms per row)` of row-major `x` with rows of `w.len()`.
fn forward(x: &[f32], w: &[f32], eps: f32) -> (Vec<f32>, Vec<f32>) {
    let h = w.len();
    let gain: Vec<f32> = w.iter().map(|w| w + 1.0).collect();
    let mut y = vec![0.0f32; x.len()];
    let mut inv_rms = vec![0.0f32; x.len() / h];
    y.par_chunks_mut(ROWS * h).zip(inv_rms.par_chunks_mut(ROWS)).zip(x.par_chunks(ROWS * h)).for_each(|((y, r), x)| {
        super::host::dispatch(|| {
            for ((y, r), x) in y.chunks_exact_mut(h).zip(r.iter_mut()).zip(x.chunks_exact(h)) {
                *r = 1.0 / (sum_sq(x) / h as f32 + eps).sqrt();
                for ((y, &x), &g) in y.iter_mut().zip(x).zip(&gain) {
                    *y = x * *r * g;
                }
            }
        })
    });
    (y, inv_rms)
}

/// `Σ x²`, sixteen lanes at a time.
#[inline(always)]
fn sum_sq(x: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 16];
    let chunks = x.chunks_exact(16);
    let tail: f32 = chunks.remainder().iter().map(|v| v * v).sum();
    for c in chunks {
        for (l, &v) in lanes.iter_mut().zip(c) {
            *l += v * v;
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// What backward reads: the input (shared with the graph), the weight, `1 / rms` per row.
#[derive(Clone, Debug)]
struct Saved {
    x: FlexTensor,
    w: FlexTensor,
    inv_rms: Vec<f32>,
}

#[derive(Debug)]
struct RmsNormBackward;

impl Backward<Flex, 2> for RmsNormBackward {
    type State = Saved;

    /// With `n = x / rms`, `g = 1 + w`: `dw = Σ_rows dy·n` and
    /// `dx = (dy·g − n · mean(dy·g·n)) / rms`.
    fn backward(self, ops: Ops<Saved, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [x_node, w_node] = ops.parents;
        let dy = contiguous(&grads.consume::<Flex>(&ops.node));
        let Saved { x, w, inv_rms } = ops.state;
        let (dx, dw) = backward(f32s(&x), f32s(&w), &inv_rms, f32s(&dy), x_node.is_some(), w_node.is_some());
        if let (Some(node), Some(dx)) = (x_node, dx) {
            grads.register::<Flex>(node.id, flex(dx, shape(&x)));
        }
        if let (Some(node), Some(dw)) = (w_node, dw) {
            grads.register::<Flex>(node.id, flex(dw, shape(&w)));
        }
    }
}

/// `(dx, dw)`, each when asked for. `dw` sums per-task partials in task order, so it does
/// not depend on how many threads ran.
fn backward(x: &[f32], w: &[f32], inv_rms: &[f32], dy: &[f32], want_dx: bool, want_dw: bool) -> (Option<Vec<f32>>, Option<Vec<f32>>) {
    let h = w.len();
    let gain: Vec<f32> = w.iter().map(|w| w + 1.0).collect();
    let mut dx = vec![0.0f32; if want_dx { x.len() } else { 0 }];
    let tasks = x.len().div_ceil(ROWS * h);
    let mut partial_dw = vec![0.0f32; if want_dw { tasks * h } else { 0 }];
    let dx_chunks: Vec<&mut [f32]> = if want_dx { dx.chunks_mut(ROWS * h).collect() } else { (0..tasks).map(|_| &mut [][..]).collect() };
    let dw_chunks: Vec<&mut [f32]> = if want_dw { partial_dw.chunks_mut(h).collect() } else { (0..tasks).map(|_| &mut [][..]).collect() };
    dx_chunks.into_par_iter().zip(dw_chunks).enumerate().for_each(|(t, (dx, dw))| {
        let at = t * ROWS * h..((t + 1) * ROWS * h).min(x.len());
        let (x, dy, r) = (&x[at.clone()], &dy[at], &inv_rms[t * ROWS..]);
        super::host::dispatch(|| {
            for (i, (x, dy)) in x.chunks_exact(h).zip(dy.chunks_exact(h)).enumerate() {
                let r = r[i];
                if !dw.is_empty() {
                    for ((dw, &x), &dy) in dw.iter_mut().zip(x).zip(dy) {
                        *dw += dy * x * r;
                    }
                }
                if !dx.is_empty() {
                    let mut lanes = [0.0f32; 16];
                    for ((c, x), g) in dy.chunks(16).zip(x.chunks(16)).zip(gain.chunks(16)) {
                        for (((l, &dy), &x), &g) in lanes.iter_mut().zip(c).zip(x).zip(g) {
                            *l += dy * g * x * r;
                        }
                    }
                    let mean = lanes.iter().sum::<f32>() / h as f32;
                    let dx = &mut dx[i * h..(i + 1) * h];
                    for (((dx, &x), &dy), &g) in dx.iter_mut().zip(x).zip(dy).zip(&gain) {
                        *dx = (dy * g - x * r * mean) * r;
                    }
                }
            }
        })
    });
    let dw = want_dw.then(|| {
        let mut dw = vec![0.0f32; h];
        for p in partial_dw.chunks_exact(h) {
            for (a, b) in dw.iter_mut().zip(p) {
                *a += b;
            }
        }
        dw
    });
    (want_dx.then_some(dx), dw)
}

#[cfg(test)]
mod tests {
    use burn::tensor::{Device, Distribution, Tensor};

    use super::*;

    fn close(a: Tensor<1>, b: Tensor<1>, tol: f32, what: &str) {
        let (a, b) = (a.into_data().try_to_vec::<f32>().unwrap(), b.into_data().try_to_vec::<f32>().unwrap());
        assert_eq!(a.len(), b.len(), "{what}: lengths");
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            assert!((x - y).abs() <= tol * (1.0 + y.abs()), "{what}[{i}]: {x} vs {y}");
        }
    }

    /// Values and both gradients equal burn's composite on rows that cross the task edge
    /// (70 rows of 40: one full task of 64 rows and a partial one), with a non-trivial
    /// upstream gradient; and the untracked path gives the tracked path's values exactly.
    #[test]
    fn fused_norm_equals_burns_operations() {
        let device = Device::flex().autodiff();
        let x0 = Tensor::<3>::random([2, 35, 40], Distribution::Normal(0.3, 2.0), &device);
        let w0 = Tensor::<1>::random([40], Distribution::Normal(0.0, 0.5), &device);
        let up = Tensor::<3>::random([2, 35, 40], Distribution::Normal(0.0, 1.0), &device);
        let run = |fused: bool| {
            let x = x0.clone().require_grad();
            let w = w0.clone().require_grad();
            let y = if fused { rms_norm(x.clone(), w.clone(), 1e-6) } else { composite(x.clone(), w.clone(), 1e-6) };
            let grads = (y.clone() * up.clone()).sum().backward();
            let dx = x.grad(&grads).expect("dx");
            let dw = w.grad(&grads).expect("dw");
            (y.inner().reshape([2 * 35 * 40]), dx.reshape([2 * 35 * 40]), dw)
        };
        let (y, dx, dw) = run(true);
        let (y_ref, dx_ref, dw_ref) = run(false);
        close(y.clone(), y_ref, 1e-6, "y");
        close(dx, dx_ref, 1e-5, "dx");
        close(dw, dw_ref, 1e-5, "dw");
        let plain = rms_norm(x0.inner(), w0.inner(), 1e-6).reshape([2 * 35 * 40]);
        close(plain, y, 0.0, "untracked y");
    }

    /// A frozen weight (LoRA, prompt tuning) gets no gradient, the input still does.
    #[test]
    fn frozen_weight_takes_no_gradient() {
        let device = Device::flex().autodiff();
        let x = Tensor::<2>::random([5, 16], Distribution::Normal(0.0, 1.0), &device).require_grad();
        let w = Tensor::<1>::random([16], Distribution::Normal(0.0, 0.5), &device);
        let grads = rms_norm(x.clone(), w.clone(), 1e-6).sum().backward();
        assert!(w.grad(&grads).is_none(), "frozen weight");
        let dx = x.grad(&grads).expect("dx").reshape([80]);
        let x2 = x.clone().inner().autodiff().require_grad();
        let dx_ref = x2.grad(&composite(x2.clone(), w.clone(), 1e-6).sum().backward()).expect("dx").reshape([80]);
        close(dx, dx_ref, 1e-5, "dx");
    }
}
