//! The held-out KD loss on the CPU backend goes through the fused host head (the teacher's
//! logits a block of rows at a time from its host table, no device copy of the table): its
//! value equals the tensor path's, which builds every chunk's teacher and student logits.

use burn::module::Param;
use burn::tensor::Device;
use sweelol_distill::{DistillConfig, KdModel};
use sweelol_dolly::TokenizedExample;
use sweelol_gemma::Gemma3;
use sweelol_train::{evaluate, testing};

fn load_tiny() -> Gemma3 {
    testing::tiny_fixture_model(&Device::flex()).unwrap()
}

/// Sequences of `<bos>` then ids 3.., lengths 9 to 23, the first 3 tokens unscored.
fn examples() -> Vec<TokenizedExample> {
    (0..6u32)
        .map(|i| {
            let len = 9 + (i as usize * 5) % 15;
            let mut input_ids = vec![2u32];
            input_ids.extend((1..len as u32).map(|k| 3 + (k * 37 + i * 11) % 500));
            let loss_mask = (0..input_ids.len()).map(|p| p >= 3).collect();
            TokenizedExample { input_ids, loss_mask, prompt_len: 3 }
        })
        .collect()
}

#[test]
#[cfg_attr(not(fixtures), ignore = "needs ../shared (SWEELOL_SHARED)")]
fn the_fused_held_out_loss_equals_the_tensor_paths() {
    let student = load_tiny();
    // A teacher that disagrees with the student: its embedding (and tied head) scaled.
    let mut teacher = load_tiny();
    teacher.embed_tokens = Param::from_tensor(teacher.embed_tokens.val() * 1.7);
    let cfg = DistillConfig { alpha: 0.5, temperature: 2.0, ..DistillConfig::default() };
    let data = examples();

    let tensor_path = KdModel { student: student.clone(), masks: None, teacher: teacher.clone(), teacher_table: None, cfg: cfg.clone() };
    let (expected, tokens) = evaluate(&tensor_path, &data, 4, 7).unwrap();

    let (teacher, table) = sweelol_distill::TeacherTable::take(teacher);
    let fused = KdModel { student, masks: None, teacher, teacher_table: Some(table), cfg };
    let (got, fused_tokens) = evaluate(&fused, &data, 4, 7).unwrap();

    assert_eq!(tokens, fused_tokens);
    assert!(tokens > 50, "{tokens} scored tokens");
    assert!(expected > 0.1, "the KD term and the cross-entropy are not zero: {expected}");
    let rel = (got - expected).abs() / expected;
    assert!(rel < 1e-5, "fused {got} vs tensor path {expected} (relative {rel:e})");
}
