//! Hinton's loss on a CPU backend without an autodiff graph over the logits: the gradient
//! of `alpha·T²·KL(teacher_T ‖ student_T) + (1 − alpha)·CE` with respect to the student's
//! logits is `alpha·T·(softmax(s/T) − softmax(t/T)) + (1 − alpha)·(softmax(s) − onehot)`,
//! computed row by row in place inside the fused head ([`sweelol_gemma::kernels::head`]).
//! Forward KL only; the other divergences take the autodiff path.

use sweelol_gemma::kernels::head::{log_sum_exp, softcap_backward, softcap_forward};

use crate::DistillConfig;

/// Turns one row of raw student logits `z` into `scale ×` the gradient of the row's loss
/// in place, given the teacher's raw logits for the same position (soft-capped here, like
/// the student's); returns the row's loss. Mixes the two terms as [`crate::kd_loss`] does:
/// `alpha = 1` is exactly `T²·KL`, `alpha = 0` exactly CE.
pub fn forward_kl_row(z: &mut [f32], teacher: &mut [f32], target: usize, cfg: &DistillConfig, softcap: Option<f32>, scale: f32) -> f64 {
    let temp = cfg.temperature as f32;
    let (kd, ce) = (cfg.alpha > 0.0, cfg.alpha < 1.0);
    let t2 = cfg.temperature * cfg.temperature;
    let w_kd = match (kd, ce) {
        (true, true) => cfg.alpha * t2,
        (true, false) => t2,
        (false, _) => 0.0,
    };
    let w_ce = match (kd, ce) {
        (true, true) => 1.0 - cfg.alpha,
        (false, _) => 1.0,
        (true, false) => 0.0,
    };
    let capped = softcap_forward(z, softcap);
    softcap_forward(teacher, softcap);
    let picked = z[target];
    let (ms, ls) = log_sum_exp(z, temp);
    let (mt, lt) = log_sum_exp(teacher, temp);
    let (m1, l1) = log_sum_exp(z, 1.0);
    let (norm_s, norm_t, norm_1) = (ms + ls as f32, mt + lt as f32, m1 + l1 as f32);
    let (g_kd, g_ce) = ((w_kd / cfg.temperature) as f32 * scale, w_ce as f32 * scale);
    let mut kl = 0.0f64;
    for (s, &t) in z.iter_mut().zip(teacher.iter()) {
        let log_pt = t / temp - norm_t;
        let log_ps = *s / temp - norm_s;
        let pt = log_pt.exp();
        if kd {
            kl += (pt * (log_pt - log_ps)) as f64;
        }
        let p1 = if ce { (*s - norm_1).exp() } else { 0.0 };
        *s = g_kd * (log_ps.exp() - pt) + g_ce * p1;
    }
    z[target] -= g_ce;
    softcap_backward(z, capped, softcap);
    let ce_loss = norm_1 as f64 - picked as f64;
    w_kd * kl + w_ce * ce_loss
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
