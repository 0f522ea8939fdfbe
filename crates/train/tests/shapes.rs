//! Fixed shapes for JIT backends: padding a batch (longer rows, whole pad rows) never
//! changes its loss, and a padded run trains on a bounded number of shapes, to the same
//! weights.

mod common;

use burn::tensor::Device;
use common::*;
use sweelol_gemma::ShapeBuckets;
use sweelol_train::config::train_section_hash;
use sweelol_train::{params, train, Dataset, TrainSection, TrainableModel};

#[test]
#[cfg_attr(not(fixtures), ignore = "needs ../shared (SWEELOL_SHARED)")]
fn padding_to_buckets_and_whole_rows_never_changes_the_loss() {
    let device = Device::flex().autodiff();
    let model = load_tiny(&device);
    let valid = &model;
    // Three rows of different lengths (7..40 tokens), so rows carry their own padding too.
    let batch = one_batch(&random_examples(3, 7, 40, 3, 512, 5));
    let exact = valid.loss(&batch, 64, 1.0).value;
    for shapes in [ShapeBuckets { multiple: 64, rows: 0 }, ShapeBuckets { multiple: 16, rows: 8 }, ShapeBuckets { multiple: 1, rows: 4 }] {
        let padded = batch.clone().padded(&shapes);
        assert_eq!(padded.seq_len, shapes.seq_len(batch.seq_len));
        assert_eq!(padded.batch_size, shapes.batch_rows(3));
        assert_eq!(padded.targets.ids, batch.targets.ids, "same targets");
        let loss = valid.loss(&padded, 64, 1.0).value;
        println!("{shapes:?}: [{}, {}] loss {loss} vs exact {exact}", padded.batch_size, padded.seq_len);
        assert!((loss - exact).abs() <= 1e-5 * exact.abs().max(1.0), "{shapes:?}: {loss} vs {exact}");
    }
}

#[test]
#[cfg_attr(not(fixtures), ignore = "needs ../shared (SWEELOL_SHARED)")]
fn a_padded_run_uses_one_shape_and_reaches_the_same_weights() {
    let device = Device::flex().autodiff();
    // 10 examples of 5..60 tokens, batch 4: batches of varied lengths and a short last one.
    let data = Dataset { train: random_examples(10, 5, 60, 3, 512, 8), eval: random_examples(3, 5, 30, 3, 512, 9) };
    let mut t = TrainSection::new(2e-3, 4);
    t.max_steps = Some(6);
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let exact = train(load_tiny(&device), &data, &options(t.clone(), a_dir.path())).unwrap();
    t.pad_to_multiple = 64;
    t.fixed_batch = true;
    let padded = train(load_tiny(&device), &data, &options(t, b_dir.path())).unwrap();

    println!(
        "exact: {} shapes, warm-up {:?} s; padded: {} shapes, warm-up {:?} s",
        exact.distinct_shapes, exact.warmup_s, padded.distinct_shapes, padded.warmup_s
    );
    assert!(exact.distinct_shapes >= 3, "length-bucketed batches vary: {}", exact.distinct_shapes);
    assert_eq!(padded.distinct_shapes, 1, "every micro-batch is [4, 64]");
    assert!(padded.warmup_s.is_some(), "the second step is steady");
    // The same losses step by step: the first on identical weights (padding alone), the
    // later ones after updates that differ only by rounding in differently shaped GEMMs.
    let (la, lb) = (step_values(&exact.metrics_path, "loss"), step_values(&padded.metrics_path, "loss"));
    println!("losses exact {la:?}\n       padded {lb:?}");
    assert!((la[0] - lb[0]).abs() <= 1e-5 * la[0], "step 1: {} vs {}", la[0], lb[0]);
    for (a, b) in la.iter().zip(&lb) {
        assert!((a - b).abs() <= 1e-4 * a, "{a} vs {b}");
    }
    let (ea, eb) = (exact.eval_loss.unwrap(), padded.eval_loss.unwrap());
    assert!((ea - eb).abs() <= 1e-4 * ea, "held-out loss {ea} vs {eb}");
    // Weights agree to rounding amplified by Adam: its first steps move every weight by
    // about lr (2e-3) times the sign of its gradient, however small, so a gradient within
    // rounding of zero can step either way. All but a handful of weights agree far below
    // one step (5e-4); one that stepped the other way once is two steps (4e-3) apart at
    // most, which bounds the rest.
    let (a, b) = (params::to_host(&exact.model, |_| true), params::to_host(&padded.model, |_| true));
    let diff = a.iter().map(|(k, x)| max_abs_diff(&x.data, &b[k].data)).fold(0.0f32, f32::max);
    let far: usize = a.iter().map(|(k, x)| x.data.iter().zip(&b[k].data).filter(|(p, q)| (*p - *q).abs() > 5e-4).count()).sum();
    let total: usize = a.values().map(|x| x.data.len()).sum();
    println!("max |weight difference| after 6 steps = {diff:e}; {far} of {total} weights differ by more than 5e-4");
    assert!(diff < 4e-3, "padding changed a trained weight by {diff}, more than two opposite steps");
    assert!(far <= 4, "padding changed {far} trained weights by more than 5e-4");
    // Each step's record says how many new shapes it brought.
    assert_eq!(step_values(&padded.metrics_path, "new_shapes"), [1.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
}

#[test]
fn the_shape_keys_leave_existing_config_hashes_alone() {
    // At their defaults the new keys are not serialised, so runs and study stages recorded
    // before they existed keep their identity (and are not retrained).
    let t = TrainSection::new(1e-3, 4);
    let json = serde_json::to_value(&t).unwrap();
    assert!(json.get("pad_to_multiple").is_none() && json.get("fixed_batch").is_none(), "{json}");
    let mut padded = t.clone();
    padded.pad_to_multiple = 64;
    padded.fixed_batch = true;
    let json = serde_json::to_value(&padded).unwrap();
    assert_eq!((json["pad_to_multiple"].as_u64(), json["fixed_batch"].as_bool()), (Some(64), Some(true)));
    assert_ne!(train_section_hash(&t, ""), train_section_hash(&padded, ""));
    let parsed: TrainSection = toml::from_str("lr = 0.001\nbatch_size = 4\n").unwrap();
    assert_eq!(parsed, t, "a config without the keys reads as the defaults");
}
