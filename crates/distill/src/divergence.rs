//! Divergences between the teacher's and the student's softened distributions, one value
//! per row, computed from log-probabilities (`log_softmax`, never `log(softmax)`) so that
//! tiny probabilities over a 262k vocabulary neither underflow to `log 0` nor lose
//! precision. Logits must be finite.

use burn::tensor::activation::log_softmax;
use burn::tensor::Tensor;

use crate::config::{DistillConfig, Divergence};

/// `log_softmax(logits / T)` over the last dimension.
pub fn log_probs(logits: Tensor<2>, temperature: f64) -> Tensor<2> {
    let scaled = if temperature == 1.0 { logits } else { logits / temperature };
    log_softmax(scaled, 1)
}

/// `KL(A ‖ B)` per row from log-probabilities: `Σ exp(a)·(a − b)`.
fn kl_rows(log_a: Tensor<2>, log_b: Tensor<2>) -> Tensor<1> {
    let n = log_a.dims()[0];
    (log_a.clone().exp() * (log_a - log_b)).sum_dim(1).reshape([n])
}

/// `log(exp(a) + exp(b))`, stably.
fn log_add_exp(a: Tensor<2>, b: Tensor<2>) -> Tensor<2> {
    let m = a.clone().max_pair(b.clone()).detach();
    ((a - m.clone()).exp() + (b - m.clone()).exp()).log() + m
}

/// `D(teacher_T ‖ student_T)` per row (`[N]`) for `[N, V]` logits, with the divergence,
/// β and temperature of `cfg`. The teacher is detached: no gradient flows into it.
pub fn divergence_rows(student_logits: Tensor<2>, teacher_logits: Tensor<2>, cfg: &DistillConfig) -> Tensor<1> {
    assert_eq!(student_logits.dims(), teacher_logits.dims(), "student and teacher logits differ in shape");
    let t = cfg.temperature;
    let log_q = log_probs(student_logits, t);
    let log_p = log_probs(teacher_logits.detach(), t);
    match cfg.divergence {
        Divergence::ForwardKl => kl_rows(log_p, log_q),
        Divergence::ReverseKl => kl_rows(log_q, log_p),
        Divergence::Jsd => {
            let beta = cfg.jsd_beta();
            if beta == 0.0 {
                kl_rows(log_p, log_q)
            } else if beta == 1.0 {
                kl_rows(log_q, log_p)
            } else {
                // log M = log(β·P + (1 − β)·Q)
                let log_m = log_add_exp(log_p.clone() + beta.ln(), log_q.clone() + (1.0 - beta).ln());
                kl_rows(log_p, log_m.clone()) * beta + kl_rows(log_q, log_m) * (1.0 - beta)
            }
        }
    }
}
