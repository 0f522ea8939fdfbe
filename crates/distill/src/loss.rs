//! The distillation loss per token:
//! `alpha·T²·D(teacher_T ‖ student_T) + (1 − alpha)·CE(student, target)`.
//!
//! Functions return the loss **summed** over the `N` rows (the caller divides by the token
//! count of the whole step, as the trainer's chunked head loss expects), or per row.

use burn::tensor::activation::log_softmax;
use burn::tensor::{Int, Tensor};

use crate::config::DistillConfig;
use crate::divergence::divergence_rows;

/// `−log softmax(logits)[target]` per row (`[N]`), at temperature 1.
pub fn cross_entropy_rows(logits: Tensor<2>, targets: Tensor<1, Int>) -> Tensor<1> {
    let n = logits.dims()[0];
    assert_eq!(targets.dims()[0], n, "one target per row");
    log_softmax(logits, 1).gather(1, targets.reshape([n, 1])).reshape([n]).neg()
}

/// Mixes the KD term (computed only when `alpha > 0`) with the data CE (only when
/// `alpha < 1`), so alpha = 0 is exactly cross-entropy and alpha = 1 exactly KD.
fn mix(cfg: &DistillConfig, student: Tensor<2>, targets: Tensor<1, Int>, kd: impl FnOnce(Tensor<2>) -> Tensor<1>) -> Tensor<1> {
    let alpha = cfg.alpha;
    let t2 = cfg.temperature * cfg.temperature;
    match (alpha > 0.0, alpha < 1.0) {
        (true, true) => kd(student.clone()) * (alpha * t2) + cross_entropy_rows(student, targets) * (1.0 - alpha),
        (true, false) => kd(student) * t2,
        (false, _) => cross_entropy_rows(student, targets),
    }
}

/// Per-row KD loss (`[N]`) against full teacher logits `[N, V]` (teacher detached).
pub fn kd_loss_rows(student_logits: Tensor<2>, teacher_logits: Tensor<2>, targets: Tensor<1, Int>, cfg: &DistillConfig) -> Tensor<1> {
    mix(cfg, student_logits, targets, |s| divergence_rows(s, teacher_logits, cfg))
}

/// KD loss summed over rows (`[1]`): student and teacher logits `[N, V]`, targets `[N]`.
pub fn kd_loss(student_logits: Tensor<2>, teacher_logits: Tensor<2>, targets: Tensor<1, Int>, cfg: &DistillConfig) -> Tensor<1> {
    kd_loss_rows(student_logits, teacher_logits, targets, cfg).sum()
}

/// Per-row KD loss against a cached teacher top-k: `topk_ids` `[N, k]` (vocabulary ids)
/// and `topk_logits` `[N, k]`. The divergence compares the two distributions renormalised
/// over those k ids (the student's logits are gathered there); the CE term uses the
/// student's full logits.
pub fn kd_loss_topk_rows(
    student_logits: Tensor<2>,
    topk_ids: Tensor<2, Int>,
    topk_logits: Tensor<2>,
    targets: Tensor<1, Int>,
    cfg: &DistillConfig,
) -> Tensor<1> {
    assert_eq!(topk_ids.dims(), topk_logits.dims(), "top-k ids and logits differ in shape");
    mix(cfg, student_logits, targets, |s| divergence_rows(s.gather(1, topk_ids), topk_logits, cfg))
}

/// [`kd_loss_topk_rows`] summed over rows (`[1]`).
pub fn kd_loss_topk(
    student_logits: Tensor<2>,
    topk_ids: Tensor<2, Int>,
    topk_logits: Tensor<2>,
    targets: Tensor<1, Int>,
    cfg: &DistillConfig,
) -> Tensor<1> {
    kd_loss_topk_rows(student_logits, topk_ids, topk_logits, targets, cfg).sum()
}
