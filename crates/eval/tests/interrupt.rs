//! Ctrl-C during evaluation: the group of documents being scored is finished and written,
//! the run stops with an error saying how to resume, and the same run again keeps those
//! lines ("resumed"), scores only the rest and ends with the same results as a run that was
//! never interrupted. (Alone in its test binary: the signal goes to the whole process.)

use std::path::Path;
use std::time::Duration;

use burn::tensor::Device;
use sweelol_eval::{evaluate, EvalError, EvalOptions, Identity, Scorer};
use sweelol_gemma::load_pretrained;
use sweelol_train::testing;

const TASK: &str = "mmlu_professional_law";
const LIMIT: usize = 200;

fn options(out: &Path) -> EvalOptions {
    let mut o = EvalOptions::study(testing::shared_dir().join("data"), out.to_path_buf());
    o.tasks = vec![TASK.to_string()];
    o.limit = Some(LIMIT);
    o.show_progress = false;
    o.identity = Identity::new().with("weights_sha256", "tiny");
    o
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path).map_or_else(|_| Vec::new(), |t| t.lines().map(String::from).collect())
}

#[test]
#[cfg_attr(not(fixtures), ignore = "needs ../shared (SWEELOL_SHARED)")]
fn sigint_during_scoring_keeps_the_finished_group_and_the_rerun_resumes_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let model_dir = testing::tiny_real_vocab_model(&dir.path().join("m")).unwrap();
    let pre = load_pretrained(model_dir.to_str().unwrap(), &Device::flex()).unwrap();
    let scorer = Scorer::new(&pre.model, &pre.tokenizer);
    let out = dir.path().join("out");
    let file = out.join(format!("{TASK}.jsonl"));

    // Signal as soon as the first group's lines are in the file.
    let watched = file.clone();
    let signaller = std::thread::spawn(move || {
        for _ in 0..60_000 {
            if !lines(&watched).is_empty() {
                signal_hook::low_level::raise(signal_hook::consts::SIGINT).unwrap();
                return true;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        false
    });
    let Err(err) = evaluate(&scorer, &options(&out)) else { panic!("the signal did not stop the run") };
    assert!(signaller.join().unwrap(), "no document was ever written");
    let EvalError::Interrupted { written, total, .. } = &err else { panic!("not an interruption: {err}") };
    assert_eq!(*total, LIMIT);
    assert!(*written > 0 && *written < LIMIT, "{err}");
    assert!(err.to_string().contains("run the same command again to resume"), "{err}");
    let kept = lines(&file);
    assert_eq!(kept.len(), *written, "every scored document is written, whole");
    for line in &kept {
        serde_json::from_str::<serde_json::Value>(line).expect("a whole JSON line");
    }

    // The same run again keeps those lines and scores the rest.
    let summary = evaluate(&scorer, &options(&out)).unwrap();
    let all = lines(&file);
    assert_eq!(all.len(), LIMIT);
    assert_eq!(all[..kept.len()], kept[..], "the interrupted run's lines are kept as they were");
    let scored_now = (LIMIT - kept.len()) as f64;
    assert!(
        (summary.docs_per_second * summary.seconds - scored_now).abs() < 1e-6,
        "docs/s counts only the documents scored now"
    );

    // Its results are those of a run that was never interrupted.
    let whole = dir.path().join("whole");
    let reference = evaluate(&scorer, &options(&whole)).unwrap();
    assert_eq!(lines(&whole.join(format!("{TASK}.jsonl"))), all);
    assert_eq!(reference.tasks[0].acc.value, summary.tasks[0].acc.value);
}
