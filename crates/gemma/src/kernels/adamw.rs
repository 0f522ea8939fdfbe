//! AdamW's update of one parameter, PyTorch's `torch.optim.AdamW` formula:
//! `p ← p·(1 − lr·wd)`, `m ← β1·m + (1−β1)·g`, `v ← β2·v + (1−β2)·g²`,
//! `p ← p − lr/(1−β1ᵗ) · m / (sqrt(v)/sqrt(1−β2ᵗ) + eps)`.
//!
//! On a CPU backend [`update`] is one fused pass over the parameter, in place
//! ([`adamw_kernel`], parallel over chunks): as tensor operations it would be a dozen passes
//! over 268M parameters, each allocating. Other backends run it as tensor operations, where
//! the device fuses or at least keeps the data on the device. The optimizer's state and
//! clipping live with the trainer (`sweelol_train::optim`).

use burn::tensor::{Tensor, TensorData};
use rayon::prelude::*;

use super::host::{host_f32, runs_on_host, with_host_f32};

/// One AdamW update of `p` from its gradient `g` and its moments `(m, v)` (none before the
/// first step); returns the new parameter and moments.
pub fn update(p: Tensor<1>, g: Tensor<1>, previous: Option<(Tensor<1>, Tensor<1>)>, k: &StepConstants) -> (Tensor<1>, Tensor<1>, Tensor<1>) {
    if runs_on_host(&p.device()) {
        host_update(p, g, previous, k)
    } else {
        tensor_update(p, g, previous, k)
    }
}

/// The scalars of one parameter's update, as f32 like PyTorch's kernels use them.
#[derive(Clone, Copy, Debug)]
pub struct StepConstants {
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    /// Multiplies the gradient (clipping).
    pub grad_scale: f32,
    /// `1 − lr·weight_decay`, or 1 without decay.
    pub decay_factor: f32,
    /// `lr / (1 − β1ᵗ)`.
    pub step_size: f32,
    /// `1 / sqrt(1 − β2ᵗ)`.
    pub inv_bc2_sqrt: f32,
}

/// One AdamW update of `p` in place, with its moments `m`, `v` (all the same length).
pub fn adamw_kernel(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], k: &StepConstants) {
    for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
        let g = g * k.grad_scale;
        *m = *m * k.beta1 + g * (1.0 - k.beta1);
        *v = *v * k.beta2 + g * g * (1.0 - k.beta2);
        let denom = v.sqrt() * k.inv_bc2_sqrt + k.eps;
        *p = *p * k.decay_factor - *m * k.step_size / denom;
    }
}

/// Elements per parallel task: large enough to amortise scheduling, small enough to
/// balance two to a few dozen cores.
pub const CHUNK: usize = 1 << 16;

fn host_update(p: Tensor<1>, g: Tensor<1>, previous: Option<(Tensor<1>, Tensor<1>)>, k: &StepConstants) -> (Tensor<1>, Tensor<1>, Tensor<1>) {
    let device = p.device();
    let n = p.dims()[0];
    let mut pd = host_f32(p);
    let (mut md, mut vd) = match previous {
        Some((m, v)) => (host_f32(m), host_f32(v)),
        // `vec![0.0; n]` asks the allocator for zeroed memory, so the 671 MB moments of the
        // table arrive as untouched pages and the parallel update below faults them in;
        // `TensorData::zeros` wrote them on this thread alone first.
        None => (TensorData::new(vec![0.0f32; n], [n]), TensorData::new(vec![0.0f32; n], [n])),
    };
    // The gradient is only read, where it lies: a caller may keep it (to reuse its buffer).
    with_host_f32(g, |gs| {
        let ps = pd.as_mut_slice::<f32>().expect("f32 parameter");
        let ms = md.as_mut_slice::<f32>().expect("f32 moment");
        let vs = vd.as_mut_slice::<f32>().expect("f32 moment");
        ps.par_chunks_mut(CHUNK)
            .zip(gs.par_chunks(CHUNK))
            .zip(ms.par_chunks_mut(CHUNK))
            .zip(vs.par_chunks_mut(CHUNK))
            .for_each(|(((p, g), m), v)| adamw_kernel(p, g, m, v, k));
    });
    (Tensor::from_data(pd, &device), Tensor::from_data(md, &device), Tensor::from_data(vd, &device))
}

fn tensor_update(p: Tensor<1>, g: Tensor<1>, previous: Option<(Tensor<1>, Tensor<1>)>, k: &StepConstants) -> (Tensor<1>, Tensor<1>, Tensor<1>) {
    let g = if k.grad_scale != 1.0 { g * k.grad_scale } else { g };
    let p = if k.decay_factor != 1.0 { p * k.decay_factor } else { p };
    let (m, v) = match previous {
        Some((m, v)) => (m * k.beta1 + g.clone() * (1.0 - k.beta1), v * k.beta2 + g.clone() * g * (1.0 - k.beta2)),
        None => (g.clone() * (1.0 - k.beta1), g.clone() * g * (1.0 - k.beta2)),
    };
    let denom = v.clone().sqrt() * k.inv_bc2_sqrt + k.eps;
    let p = p - m.clone() * k.step_size / denom;
    (p, m, v)
}

#[cfg(test)]
mod tests {
    use burn::tensor::Device;

    use super::*;

    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n).map(|i| (((i as u32).wrapping_mul(2654435761) ^ seed) % 2001) as f32 / 1000.0 - 1.0).collect()
    }

    /// β1 0.9, β2 0.999, eps 1e-8, decay `lr·wd`, no clipping.
    fn constants(step: u64, lr: f64, wd: f64) -> StepConstants {
        let (bc1, bc2) = (1.0 - 0.9f64.powi(step as i32), 1.0 - 0.999f64.powi(step as i32));
        StepConstants {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            grad_scale: 1.0,
            decay_factor: (1.0 - lr * wd) as f32,
            step_size: (lr / bc1) as f32,
            inv_bc2_sqrt: (1.0 / bc2.sqrt()) as f32,
        }
    }

    fn host(t: Tensor<1>) -> Vec<f32> {
        t.into_data().try_to_vec::<f32>().unwrap()
    }

    /// PyTorch's AdamW step for one element, in f64 (the reference the kernels follow).
    fn reference(p: f64, g: f64, m: f64, v: f64, step: i32, lr: f64, wd: f64) -> (f64, f64, f64) {
        let (b1, b2, eps) = (0.9, 0.999, 1e-8);
        let p = p * (1.0 - lr * wd);
        let m = b1 * m + (1.0 - b1) * g;
        let v = b2 * v + (1.0 - b2) * g * g;
        let denom = v.sqrt() / (1.0 - b2.powi(step)).sqrt() + eps;
        (p - lr / (1.0 - b1.powi(step)) * m / denom, m, v)
    }

    #[test]
    fn fused_host_update_equals_tensor_update_and_pytorch() {
        let device = Device::flex();
        let n = 3 * CHUNK + 17; // several parallel chunks and a ragged end
        let (lr, wd) = (1e-2, 0.1);
        let p0 = values(n, 1);
        let tensor = |x: &[f32]| Tensor::<1>::from_data(TensorData::new(x.to_vec(), [n]), &device);
        let (mut fused, mut plain) = (None, None);
        let (mut pf, mut pt) = (tensor(&p0), tensor(&p0));
        let mut want: Vec<(f64, f64, f64)> = p0.iter().map(|&p| (p as f64, 0.0, 0.0)).collect();
        for step in 1..=3u64 {
            let g = values(n, 7 + step as u32);
            let k = constants(step, lr, wd);
            let (p, m, v) = host_update(pf, tensor(&g), fused.take(), &k);
            pf = p;
            fused = Some((m, v));
            let (p, m, v) = tensor_update(pt, tensor(&g), plain.take(), &k);
            pt = p;
            plain = Some((m, v));
            for (w, &g) in want.iter_mut().zip(&g) {
                *w = reference(w.0, g as f64, w.1, w.2, step as i32, lr, wd);
            }
        }
        let (pf, pt) = (host(pf), host(pt));
        let worst_pair = pf.iter().zip(&pt).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        let worst_ref = pf.iter().zip(&want).map(|(a, w)| (*a as f64 - w.0).abs()).fold(0.0f64, f64::max);
        assert!(worst_pair < 1e-6, "fused vs tensor path: {worst_pair}");
        assert!(worst_ref < 1e-6, "fused vs f64 PyTorch formula: {worst_ref}");
        // The parameters moved (a no-op kernel would fail the reference check too).
        assert!(pf.iter().zip(&p0).any(|(a, b)| (a - b).abs() > 1e-3));
    }
}
