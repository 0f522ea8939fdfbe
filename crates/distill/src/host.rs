//! Hinton's loss on a CPU backend without an autodiff graph over the logits: the gradient
//! of `alpha·T²·KL(teacher_T ‖ student_T) + (1 − alpha)·CE` with respect to the student's
//! logits is `alpha·T·(softmax(s/T) − softmax(t/T)) + (1 − alpha)·(softmax(s) − onehot)`,
//! computed row by row in place inside the fused head ([`sweelol_gemma::kernels::head`]).
//! Forward KL only; the other divergences take the autodiff path.

use sweelol_gemma::kernels::head::{softcap_backward, softcap_forward};
use sweelol_gemma::kernels::host::{exp_neg, max};

use crate::DistillConfig;

/// Turns one row of raw student logits `z` into `scale ×` the gradient of the row's loss
/// in place, given the teacher's raw logits for the same position (soft-capped here, like
/// the student's); returns the row's loss. Mixes the two terms as [`crate::kd_loss`] does:
/// `alpha = 1` is exactly `T²·KL`, `alpha = 0` exactly CE.
///
/// Three passes over the row's 262144 logits: the two maxima, the three normalisers
/// (student and teacher at `T`, student at 1), then the gradient. The exponentials are
/// [`exp_neg`]'s, eight lanes at a time with f64 sums ([`simd`]): with libm's scalar `expf`,
/// six calls per logit, a KD step's head and loss took a fifth longer (`docs/perf.md`).
pub fn forward_kl_row(z: &mut [f32], teacher: &mut [f32], target: usize, cfg: &DistillConfig, softcap: Option<f32>, scale: f32) -> f64 {
    assert_eq!(z.len(), teacher.len(), "student and teacher rows differ in length");
    let (w_kd, w_ce) = weights(cfg);
    let capped = softcap_forward(z, softcap);
    softcap_forward(teacher, softcap);
    let picked = z[target];
    let inv_t = 1.0 / cfg.temperature as f32;
    let (z_max, t_max) = (max(z), max(teacher));
    let (ms, mt) = (z_max * inv_t, t_max * inv_t);
    let [sum_s, sum_t, sum_1] = simd::normalisers(z, teacher, inv_t, (ms, mt, z_max));
    let (norm_s, norm_t, norm_1) = (ms + sum_s.ln() as f32, mt + sum_t.ln() as f32, z_max + sum_1.ln() as f32);
    let (g_kd, g_ce) = ((w_kd / cfg.temperature) as f32 * scale, w_ce as f32 * scale);
    let kl = simd::gradient_in_place(z, teacher, inv_t, (norm_s, norm_t, norm_1), (g_kd, g_ce));
    z[target] -= g_ce;
    softcap_backward(z, capped, softcap);
    let ce_loss = norm_1 as f64 - picked as f64;
    w_kd * kl + w_ce * ce_loss
}

/// The weights of the KD term (`alpha·T²`) and of the CE term (`1 − alpha`); a term that
/// `alpha` switches off weighs exactly 0.
fn weights(cfg: &DistillConfig) -> (f64, f64) {
    let t2 = cfg.temperature * cfg.temperature;
    match (cfg.alpha > 0.0, cfg.alpha < 1.0) {
        (true, true) => (cfg.alpha * t2, 1.0 - cfg.alpha),
        (true, false) => (t2, 0.0),
        (false, _) => (0.0, 1.0),
    }
}

/// The row's two vector passes, compiled for AVX2 + FMA where the CPU has them: in functions
/// that enable the features themselves, [`exp_neg`] and the loops inline and vectorise. (A
/// closure handed to a dispatcher in another crate stayed outlined, and ran as SSE code one
/// lane at a time.)
mod simd {
    pub fn normalisers(z: &[f32], teacher: &[f32], inv_t: f32, shifts: (f32, f32, f32)) -> [f64; 3] {
        #[cfg(target_arch = "x86_64")]
        if has_avx2() {
            // SAFETY: the CPU has AVX2 and FMA.
            return unsafe { avx2_normalisers(z, teacher, inv_t, shifts) };
        }
        super::normalisers(z, teacher, inv_t, shifts)
    }

    pub fn gradient_in_place(z: &mut [f32], teacher: &[f32], inv_t: f32, norms: (f32, f32, f32), weights: (f32, f32)) -> f64 {
        #[cfg(target_arch = "x86_64")]
        if has_avx2() {
            // SAFETY: the CPU has AVX2 and FMA.
            return unsafe { avx2_gradient_in_place(z, teacher, inv_t, norms, weights) };
        }
        super::gradient_in_place(z, teacher, inv_t, norms, weights)
    }

    #[cfg(target_arch = "x86_64")]
    fn has_avx2() -> bool {
        std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn avx2_normalisers(z: &[f32], teacher: &[f32], inv_t: f32, shifts: (f32, f32, f32)) -> [f64; 3] {
        super::normalisers(z, teacher, inv_t, shifts)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn avx2_gradient_in_place(z: &mut [f32], teacher: &[f32], inv_t: f32, norms: (f32, f32, f32), weights: (f32, f32)) -> f64 {
        super::gradient_in_place(z, teacher, inv_t, norms, weights)
    }
}

/// `[Σ exp(z/T − ms), Σ exp(t/T − mt), Σ exp(z − z_max)]` in one pass over both rows,
/// each summed in f64 eight lanes at a time ([`simd`] compiles it for AVX2).
#[inline(always)]
fn normalisers(z: &[f32], teacher: &[f32], inv_t: f32, shifts: (f32, f32, f32)) -> [f64; 3] {
    let mut lanes = [[0.0f64; 3]; 8];
    let (zs, ts) = (z.chunks_exact(8), teacher.chunks_exact(8));
    let (z_rest, t_rest) = (zs.remainder(), ts.remainder());
    for (cz, ct) in zs.zip(ts) {
        // Fixed-size chunks: no bounds checks, so the lanes vectorise.
        let (cz, ct): (&[f32; 8], &[f32; 8]) = (cz.try_into().expect("8"), ct.try_into().expect("8"));
        for i in 0..8 {
            add_terms(&mut lanes[i], cz[i], ct[i], inv_t, shifts);
        }
    }
    for (&s, &t) in z_rest.iter().zip(t_rest) {
        add_terms(&mut lanes[0], s, t, inv_t, shifts);
    }
    [0, 1, 2].map(|k| lanes.iter().map(|l| l[k]).sum())
}

/// One logit's three terms of [`normalisers`], added to its lane.
#[inline(always)]
fn add_terms(lane: &mut [f64; 3], s: f32, t: f32, inv_t: f32, (ms, mt, z_max): (f32, f32, f32)) {
    lane[0] += exp_neg(s * inv_t - ms) as f64;
    lane[1] += exp_neg(t * inv_t - mt) as f64;
    lane[2] += exp_neg(s - z_max) as f64;
}

/// Replaces each student logit by `g_kd·(p_s − p_t) + g_ce·p_1` (the softmaxes at `T`
/// and at 1, from their log-normalisers) and returns `KL(p_t ‖ p_s)`, summed in f64.
#[inline(always)]
fn gradient_in_place(z: &mut [f32], teacher: &[f32], inv_t: f32, norms: (f32, f32, f32), weights: (f32, f32)) -> f64 {
    let mut kl = [0.0f64; 8];
    let mut zs = z.chunks_exact_mut(8);
    let ts = teacher.chunks_exact(8);
    let t_rest = ts.remainder();
    for (cz, ct) in zs.by_ref().zip(ts) {
        let (cz, ct): (&mut [f32; 8], &[f32; 8]) = (cz.try_into().expect("8"), ct.try_into().expect("8"));
        for i in 0..8 {
            kl[i] += gradient_at(&mut cz[i], ct[i], inv_t, norms, weights);
        }
    }
    for (s, &t) in zs.into_remainder().iter_mut().zip(t_rest) {
        kl[0] += gradient_at(s, t, inv_t, norms, weights);
    }
    kl.iter().sum()
}

/// One logit of [`gradient_in_place`]: replaces `s` by its gradient and returns its KL term.
#[inline(always)]
fn gradient_at(s: &mut f32, t: f32, inv_t: f32, (norm_s, norm_t, norm_1): (f32, f32, f32), (g_kd, g_ce): (f32, f32)) -> f64 {
    let log_pt = t * inv_t - norm_t;
    let log_ps = *s * inv_t - norm_s;
    let pt = exp_neg(log_pt);
    *s = g_kd * (exp_neg(log_ps) - pt) + g_ce * exp_neg(*s - norm_1);
    (pt * (log_pt - log_ps)) as f64
}

#[cfg(test)]
mod tests {
    use burn::tensor::{Device, Int, Tensor, TensorData};

    use super::*;
    use crate::kd_loss;

    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n).map(|i| (((i as u32).wrapping_mul(2654435761) ^ seed.wrapping_mul(97)) % 1999) as f32 / 250.0 - 4.0).collect()
    }

    /// The host row function against burn's autodiff through `kd_loss`, for several mixes
    /// and with and without soft-capping.
    #[test]
    fn matches_autodiff_of_kd_loss() {
        let (n, v) = (3, 97);
        let device = Device::flex().autodiff();
        let (zs, zt) = (values(n * v, 1), values(n * v, 2));
        let targets = [5usize, 40, 96];
        for (alpha, temperature) in [(0.5, 2.0), (1.0, 3.0), (0.0, 1.0), (0.3, 1.0)] {
            for softcap in [None, Some(5.0f32)] {
                let cfg: DistillConfig = toml::from_str(&format!("alpha = {alpha}\ntemperature = {temperature}")).unwrap();
                let leaf = Tensor::<2>::from_data(TensorData::new(zs.clone(), [n, v]), &device).require_grad();
                let teacher = Tensor::<2>::from_data(TensorData::new(zt.clone(), [n, v]), &device);
                let cap = |x: Tensor<2>| match softcap {
                    Some(c) => (x / c as f64).tanh() * c as f64,
                    None => x,
                };
                let ids = Tensor::<1, Int>::from_data(TensorData::new(targets.iter().map(|&t| t as i64).collect::<Vec<_>>(), [n]), &device);
                let loss = kd_loss(cap(leaf.clone()), cap(teacher), ids, &cfg);
                let want_loss: f32 = loss.clone().into_scalar();
                let grads = loss.backward();
                let want: Vec<f32> = leaf.grad(&grads).unwrap().into_data().try_to_vec().unwrap();

                let mut got = zs.clone();
                let mut teacher_rows = zt.clone();
                let mut total = 0.0;
                for r in 0..n {
                    let (z, t) = (&mut got[r * v..(r + 1) * v], &mut teacher_rows[r * v..(r + 1) * v]);
                    total += forward_kl_row(z, t, targets[r], &cfg, softcap, 1.0);
                }
                let worst = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
                assert!((total - want_loss as f64).abs() < 1e-4 * (1.0 + want_loss.abs() as f64), "alpha {alpha} T {temperature} cap {softcap:?}: loss {total} vs {want_loss}");
                assert!(worst < 1e-5, "alpha {alpha} T {temperature} cap {softcap:?}: gradient off by {worst}");
            }
        }
    }
}
