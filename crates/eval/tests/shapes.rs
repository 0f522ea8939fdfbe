//! Fixed-shape scoring (for JIT backends): padding contexts to buckets and forwards to a
//! fixed row count never changes a log-likelihood, and bounds the shapes used.

use burn::tensor::Device;
use sweelol_eval::tasks::{load_task, parse_task_name, McDoc};
use sweelol_eval::Scorer;
use sweelol_gemma::{load_pretrained, ShapeBuckets};
use sweelol_train::testing;

fn docs(task: &str, n: usize) -> Vec<McDoc> {
    load_task(&parse_task_name(task).unwrap(), &testing::shared_dir().join("data"), Some(n), 0).unwrap().docs
}

#[test]
#[cfg_attr(not(fixtures), ignore = "needs ../shared (SWEELOL_SHARED)")]
fn padded_forwards_give_the_same_log_likelihoods_and_few_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let path = testing::tiny_real_vocab_model(&dir.path().join("m")).unwrap();
    let pre = load_pretrained(path.to_str().unwrap(), &Device::flex()).unwrap();
    let scorer = |shapes: ShapeBuckets| {
        let mut s = Scorer::new(&pre.model, &pre.tokenizer);
        s.shapes = shapes;
        s
    };
    for (task, norm) in [("hellaswag", true), ("mmlu_high_school_mathematics", false), ("mmlu_professional_law", false)] {
        let docs = docs(task, 6);
        let cached = scorer(ShapeBuckets::EXACT);
        let unpadded = scorer(ShapeBuckets { multiple: 1, rows: 1 });
        let padded = scorer(ShapeBuckets { multiple: 64, rows: 4 });
        let a = cached.score_docs(&docs, norm).unwrap();
        let b = unpadded.score_docs(&docs, norm).unwrap();
        let c = padded.score_docs(&docs, norm).unwrap();
        let mut worst_pad: f64 = 0.0;
        let mut worst_path: f64 = 0.0;
        for ((a, b), c) in a.iter().zip(&b).zip(&c) {
            for ((x, y), z) in a.loglikelihoods.iter().zip(&b.loglikelihoods).zip(&c.loglikelihoods) {
                worst_pad = worst_pad.max((y - z).abs() / y.abs().max(1.0));
                worst_path = worst_path.max((x - z).abs() / x.abs().max(1.0));
            }
            assert_eq!((a.acc, a.acc_norm), (c.acc, c.acc_norm), "{task} doc {}: same decisions", a.doc_id);
        }
        println!(
            "{task}: padded vs unpadded {worst_pad:e}, vs KV-cache path {worst_path:e}; shapes {} / {} / {}",
            cached.shape_log.count(),
            unpadded.shape_log.count(),
            padded.shape_log.count()
        );
        assert!(worst_pad <= 1e-5, "{task}: padding changed a log-likelihood by {worst_pad:e} (relative)");
        assert!(worst_path <= 1e-4, "{task}: whole sequences vs shared-context cache {worst_path:e}");
        assert!(padded.shape_log.count() <= 2, "{task}: {} shapes", padded.shape_log.count());
    }
}
