//! `[train] dtype = "bf16"`: products in bf16 from f32 master weights. The run differs from
//! an f32 one by bf16 rounding only, its weights and optimizer stay f32, and the key leaves
//! f32 configs' identities alone.

mod common;

use burn::module::Module;
use burn::tensor::{DType, Device};
use common::*;
use sweelol_gemma::Precision;
use sweelol_train::config::train_section_hash;
use sweelol_train::{params, train, Dataset, TrainSection, TrainableModel};

#[test]
#[cfg_attr(not(fixtures), ignore = "needs ../shared (SWEELOL_SHARED)")]
fn bf16_products_train_f32_weights_to_nearly_the_f32_result() {
    let device = Device::flex().autodiff();
    let data = Dataset { train: counting_examples(12, 24, 3, 512, 1), eval: counting_examples(4, 24, 3, 512, 2) };
    let mut t = TrainSection::new(2e-3, 4);
    t.max_steps = Some(4);
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let f32_run = train(load_tiny(&device), &data, &options(t.clone(), a_dir.path())).unwrap();
    t.dtype = Precision::Bf16;
    let bf16_run = train(load_tiny(&device).with_precision(Precision::Bf16), &data, &options(t, b_dir.path())).unwrap();

    // The precision survives training (and the detached copy an export makes).
    assert_eq!(bf16_run.model.precision(), Precision::Bf16);
    assert_eq!(bf16_run.model.clone().valid().precision(), Precision::Bf16);
    // Master weights stay f32.
    assert_eq!(bf16_run.model.embed_tokens.val().dtype(), DType::F32);
    assert_eq!(bf16_run.model.layers[0].mlp.up_proj.weight.val().dtype(), DType::F32);

    let (ea, eb) = (f32_run.eval_loss.unwrap(), bf16_run.eval_loss.unwrap());
    let (la, lb) = (f32_run.last_loss.unwrap(), bf16_run.last_loss.unwrap());
    println!("held-out loss f32 {ea} bf16 {eb}; last step loss f32 {la} bf16 {lb}");
    // bf16 really ran (the losses differ) ...
    assert_ne!(la, lb, "bf16 products should change the loss at least by rounding");
    // ... and only by rounding: well within 1% (the tiny model's loss is about 6.3).
    assert!((ea - eb).abs() <= 1e-2 * ea, "held-out loss {ea} (f32) vs {eb} (bf16)");
    assert!((la - lb).abs() <= 1e-2 * la, "training loss {la} (f32) vs {lb} (bf16)");
    // The weights moved the same way: the bf16 run's updates point along the f32 run's.
    // (Not weight by weight: Adam moves a weight by about lr a step whatever its gradient's
    // size, so where rounding flips the sign of a near-zero gradient the runs part by whole
    // steps; 1.5% of the tiny model's weights end more than one step apart.)
    let start = params::to_host(&load_tiny(&device), |_| true);
    let (a, b) = (params::to_host(&f32_run.model, |_| true), params::to_host(&bf16_run.model, |_| true));
    let (mut dot, mut na, mut nb) = (0.0f64, 0.0f64, 0.0f64);
    for (k, w0) in &start {
        for ((w0, wa), wb) in w0.data.iter().zip(&a[k].data).zip(&b[k].data) {
            let (ua, ub) = ((wa - w0) as f64, (wb - w0) as f64);
            (dot, na, nb) = (dot + ua * ub, na + ua * ua, nb + ub * ub);
        }
    }
    let cosine = dot / (na.sqrt() * nb.sqrt());
    println!("after 4 steps: cosine of the f32 and bf16 updates {cosine:.4}, norms {:.4} and {:.4}", na.sqrt(), nb.sqrt());
    assert!(cosine >= 0.9, "bf16 updates point elsewhere: cosine {cosine}");
    assert!((na.sqrt() - nb.sqrt()).abs() <= 0.1 * na.sqrt(), "update sizes differ");
}

#[test]
#[cfg_attr(not(fixtures), ignore = "needs ../shared (SWEELOL_SHARED)")]
fn the_model_reports_its_precision_to_the_loss() {
    // The held-out loss of one batch, in f32 and in bf16: close but not equal.
    let device = Device::flex().autodiff();
    let batch = one_batch(&random_examples(3, 8, 30, 3, 512, 4));
    let f32_loss = load_tiny(&device).valid().loss(&batch, 64, 1.0).value;
    let bf16_loss = load_tiny(&device).with_precision(Precision::Bf16).valid().loss(&batch, 64, 1.0).value;
    println!("loss f32 {f32_loss} bf16 {bf16_loss}");
    assert_ne!(f32_loss, bf16_loss);
    assert!((f32_loss - bf16_loss).abs() <= 1e-2 * f32_loss);
}

#[test]
fn the_dtype_key_reads_and_leaves_f32_configs_alone() {
    let t = TrainSection::new(1e-3, 4);
    assert!(serde_json::to_value(&t).unwrap().get("dtype").is_none(), "f32 is not serialised");
    let parsed: TrainSection = toml::from_str("lr = 0.001\nbatch_size = 4\ndtype = \"bf16\"\n").unwrap();
    assert_eq!(parsed.dtype, Precision::Bf16);
    assert_ne!(train_section_hash(&t, ""), train_section_hash(&parsed, ""), "bf16 runs are other runs");
    let err = toml::from_str::<TrainSection>("lr = 0.001\nbatch_size = 4\ndtype = \"fp8\"\n").unwrap_err().to_string();
    assert!(err.contains("dtype") && err.contains("fp8"), "{err}");
}
