//! An eval output directory never mixes runs: identity checked before reuse, one writer at
//! a time, a smaller limit reuses a prefix without deleting the rest, torn lines re-scored,
//! and bad requests refused before any scoring. Tiny model with Gemma 3's real vocabulary.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use burn::tensor::Device;
use sweelol_eval::{evaluate, preflight, EvalOptions, Identity, Scorer};
use sweelol_gemma::{load_pretrained, Pretrained};
use sweelol_train::testing;

const TASK: &str = "mmlu_abstract_algebra";

fn model() -> &'static Pretrained {
    // A static is never dropped, so the model's directory goes as soon as it is loaded.
    static MODEL: OnceLock<Pretrained> = OnceLock::new();
    MODEL.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let path = testing::tiny_real_vocab_model(&dir.path().join("m")).unwrap();
        load_pretrained(path.to_str().unwrap(), &Device::flex()).unwrap()
    })
}

fn options(out: &Path, limit: usize, identity: &str) -> EvalOptions {
    let mut o = EvalOptions::study(testing::shared_dir().join("data"), out.to_path_buf());
    o.tasks = vec![TASK.to_string()];
    o.limit = Some(limit);
    o.show_progress = false;
    o.identity = Identity::new().with("weights_sha256", "w").with("adapter_sha256", identity);
    o
}

fn run(opts: &EvalOptions) -> Result<sweelol_eval::EvalSummary, String> {
    let pre = model();
    evaluate(&Scorer::new(&pre.model, &pre.tokenizer), opts).map_err(|e| e.to_string())
}

fn lines(out: &Path) -> Vec<String> {
    std::fs::read_to_string(out.join(format!("{TASK}.jsonl"))).unwrap().lines().map(String::from).collect()
}

#[test]
#[cfg_attr(not(fixtures), ignore = "needs ../shared (SWEELOL_SHARED)")]
fn results_of_another_identity_or_fewshot_are_refused_and_fresh_replaces_them() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    run(&options(&out, 2, "none")).unwrap();
    let before = lines(&out);

    let msg = run(&options(&out, 2, "lora-1")).unwrap_err();
    assert!(msg.contains("adapter_sha256: was `none`, now `lora-1`") && msg.contains("--fresh"), "{msg}");
    let mut five = options(&out, 2, "none");
    five.num_fewshot = 5;
    let msg = run(&five).unwrap_err();
    assert!(msg.contains("num_fewshot: was `0`, now `5`"), "{msg}");
    let msg = preflight(&five).unwrap_err().to_string();
    assert!(msg.contains("num_fewshot"), "preflight refuses too: {msg}");
    assert_eq!(lines(&out), before, "refused runs leave the results alone");

    five.fresh = true;
    let s = run(&five).unwrap();
    assert_eq!(s.num_fewshot, 5);
    let recorded = Identity::read(&out).unwrap().unwrap();
    assert_eq!(recorded.get("num_fewshot"), Some("5"));
    assert_ne!(lines(&out), before, "5-shot log-likelihoods replaced the 0-shot ones");
}

#[test]
#[cfg_attr(not(fixtures), ignore = "needs ../shared (SWEELOL_SHARED)")]
fn a_smaller_limit_reuses_a_prefix_and_keeps_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    run(&options(&out, 4, "none")).unwrap();
    let four = lines(&out);
    assert_eq!(four.len(), 4);
    // Mark document 0's stored result: if it is reused (not re-scored) the summary shows it.
    let mut first: serde_json::Value = serde_json::from_str(&four[0]).unwrap();
    let flipped = 1.0 - first["acc"].as_f64().unwrap();
    first["acc"] = flipped.into();
    let mut edited = four.clone();
    edited[0] = first.to_string();
    std::fs::write(out.join(format!("{TASK}.jsonl")), edited.join("\n") + "\n").unwrap();

    let two = run(&options(&out, 2, "none")).unwrap();
    assert_eq!(two.tasks[0].n, 2);
    let second: serde_json::Value = serde_json::from_str(&four[1]).unwrap();
    let expected = (flipped + second["acc"].as_f64().unwrap()) / 2.0;
    assert_eq!(two.tasks[0].acc.value, expected, "the first two lines were reused");
    assert_eq!(lines(&out), edited, "lines past the limit are kept");
    // Nothing was scored by that run: its rate counts scored documents only.
    assert_eq!(two.docs_per_second, 0.0, "reused documents are not counted as scored");
    let again = run(&options(&out, 4, "none")).unwrap();
    assert!(again.docs_per_second == 0.0, "all four lines reused: {}", again.docs_per_second);
}

#[test]
#[cfg_attr(not(fixtures), ignore = "needs ../shared (SWEELOL_SHARED)")]
fn a_torn_last_line_is_rescored_and_finished_lines_kept() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    run(&options(&out, 3, "none")).unwrap();
    let whole = lines(&out);
    let torn = format!("{}\n{}\n{}", whole[0], whole[1], &whole[2][..whole[2].len() / 2]);
    std::fs::write(out.join(format!("{TASK}.jsonl")), torn).unwrap();
    run(&options(&out, 3, "none")).unwrap();
    let again = lines(&out);
    assert_eq!(again[..2], whole[..2], "finished lines are kept as written");
    // The torn document is scored again, now alone instead of in a batch of three: the
    // same result up to the batching's rounding (as `lm_eval_fixture` allows, 1e-4).
    let (a, b): (serde_json::Value, serde_json::Value) = (serde_json::from_str(&again[2]).unwrap(), serde_json::from_str(&whole[2]).unwrap());
    assert_eq!((&a["doc_id"], &a["gold"], &a["acc"]), (&b["doc_id"], &b["gold"], &b["acc"]));
    let lls = |v: &serde_json::Value| v["loglikelihoods"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect::<Vec<_>>();
    for (x, y) in lls(&a).iter().zip(lls(&b)) {
        assert!((x - y).abs() < 1e-4, "rescored {x} vs {y}");
    }
    assert_eq!(again.len(), 3);
}

#[test]
#[cfg_attr(not(fixtures), ignore = "needs ../shared (SWEELOL_SHARED)")]
fn lines_of_other_documents_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    run(&options(&out, 2, "none")).unwrap();
    let mut l = lines(&out);
    let mut v: serde_json::Value = serde_json::from_str(&l[1]).unwrap();
    v["doc_id"] = 57.into();
    l[1] = v.to_string();
    std::fs::write(out.join(format!("{TASK}.jsonl")), l.join("\n") + "\n").unwrap();
    let msg = run(&options(&out, 2, "none")).unwrap_err();
    assert!(msg.contains("line 2 holds document 57") && msg.contains("data changed"), "{msg}");
}

#[test]
#[cfg_attr(not(fixtures), ignore = "needs ../shared (SWEELOL_SHARED)")]
fn a_second_run_on_a_locked_directory_fails_at_once_with_the_holders_pid() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let _held = sweelol_outdir::DirLock::acquire(&out).unwrap();
    let pid = std::process::id().to_string();
    let msg = preflight(&options(&out, 2, "none")).unwrap_err().to_string();
    assert!(msg.contains("in use by another sweelol run") && msg.contains(&pid), "{msg}");
    let msg = run(&options(&out, 2, "none")).unwrap_err();
    assert!(msg.contains(&pid), "{msg}");
    assert!(!out.join(format!("{TASK}.jsonl")).exists(), "nothing written");
}

#[test]
#[cfg_attr(not(fixtures), ignore = "needs ../shared (SWEELOL_SHARED)")]
fn unknown_tasks_and_a_zero_limit_fail_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let mut o = options(&out, 2, "none");
    o.tasks = vec![TASK.to_string(), "mmlu_nosuch".to_string()];
    let msg = preflight(&o).unwrap_err().to_string();
    assert!(msg.contains("mmlu_nosuch") && msg.contains("not one of the 57 MMLU subjects"), "{msg}");
    let msg = run(&o).unwrap_err();
    assert!(msg.contains("mmlu_nosuch"), "{msg}");
    assert!(!out.exists(), "the earlier task was not scored");
    let msg = preflight(&options(&out, 0, "none")).unwrap_err().to_string();
    assert!(msg.contains("limit must be at least 1"), "{msg}");
    // A task named twice is refused, naming it, before anything is scored.
    let mut twice = options(&out, 2, "none");
    twice.tasks = vec![TASK.to_string(), "hellaswag".to_string(), TASK.to_string()];
    let msg = preflight(&twice).unwrap_err().to_string();
    assert!(msg.contains(TASK) && msg.contains("named twice"), "{msg}");
    assert!(!out.exists(), "nothing was scored");
}

#[test]
#[cfg_attr(not(fixtures), ignore = "needs ../shared (SWEELOL_SHARED)")]
fn a_tokenizer_larger_than_the_model_vocabulary_is_refused_at_load() {
    let dir = tempfile::tempdir().unwrap();
    let fixture: PathBuf = testing::tiny_fixture_dir();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(fixture.join(f), dir.path().join(f)).unwrap();
    }
    let tok = sweelol_gemma::GemmaTokenizer::from_file(&testing::tokenizer_path()).unwrap();
    tok.inner().save(dir.path().join("tokenizer.json"), false).unwrap();
    let err = load_pretrained(dir.path().to_str().unwrap(), &Device::flex()).unwrap_err().to_string();
    assert!(err.contains("tokenizer.json") && err.contains("vocab_size ="), "{err}");
    assert!(err.contains("262144 tokens"), "{err}");

    // Added tokens past the table (the real vocabulary's <image_soft_token>) are refused
    // where they are used, not by a panic.
    let m = &model().model;
    let vocab = m.config.vocab_size as u32;
    assert!(m.check_ids(&[0, vocab - 1]).is_ok());
    let msg = m.check_ids(&[2, vocab]).unwrap_err().to_string();
    assert!(msg.contains(&format!("token id {vocab}")), "{msg}");
}

/// `results.json` reads as lm-eval 0.4 writes it: `results.<task>."acc,none"` is the mean of
/// the per-document `acc` in the task's lines, `"acc_stderr,none"` the sample standard
/// deviation over √n, and `n-shot`, `n-samples` and `config` say how they were made.
#[test]
#[cfg_attr(not(fixtures), ignore = "needs ../shared (SWEELOL_SHARED)")]
fn results_json_has_lm_evals_layout_and_the_documents_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    run(&options(&out, 6, "none")).unwrap();
    let accs: Vec<f64> = lines(&out)
        .iter()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["acc"].as_f64().unwrap())
        .collect();
    let n = accs.len() as f64;
    let mean = accs.iter().sum::<f64>() / n;
    let stderr = (accs.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / (n - 1.0) / n).sqrt();
    let read = |name: &str| -> serde_json::Value { serde_json::from_str(&std::fs::read_to_string(out.join(name)).unwrap()).unwrap() };
    let results = read("results.json");
    let task = &results["results"][TASK];
    assert!((task["acc,none"].as_f64().unwrap() - mean).abs() < 1e-12, "{task}");
    assert!((task["acc_stderr,none"].as_f64().unwrap() - stderr).abs() < 1e-12, "{task}");
    assert!(task.get("acc_norm,none").is_none(), "MMLU reports acc only");
    assert_eq!(results["n-shot"][TASK], 0);
    assert_eq!(results["n-samples"][TASK]["effective"], 6);
    assert_eq!(results["config"]["limit"], 6);
    assert_eq!(read("summary.json")["tasks"][0]["acc"]["value"], task["acc,none"]);
}
