//! The study on a tiny synthetic model with Gemma-3's real vocabulary (so real Dolly rows,
//! the real tokenizer and the real MMLU / HellaSwag documents go through every stage):
//! end to end, re-staging after a config edit, kills at stage boundaries, seeds.

use std::path::Path;

use burn::tensor::Device;
use crate::testing::{tiny_study, SEVEN_ROWS};

use super::*;

fn run(preset: &Path, results: &Path, opts: &StudyOptions) -> StudyOutcome {
    run_study(preset, opts, &Device::flex(), "flex", results).unwrap()
}


pub(crate) fn table(run_dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(run_dir.join("table.json")).unwrap()).unwrap()
}

/// The numbers of a table.json: per row, each task's acc and p, and Average MMLU.
pub(crate) fn numbers(table: &serde_json::Value) -> Vec<(String, String)> {
    table["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["row"].as_str().unwrap().to_string(), format!("{} {}", r["tasks"], r["average_mmlu"])))
        .collect()
}

#[test]
#[cfg_attr(not(fixtures), ignore = "needs ../shared (SWEELOL_SHARED)")]
fn tiny_study_runs_end_to_end_and_redoes_exactly_the_changed_stages() {
    let dir = tempfile::tempdir().unwrap();
    let preset = tiny_study(dir.path(), SEVEN_ROWS).unwrap();
    let results = dir.path().join("results");
    let opts = StudyOptions::default();

    let first = run(&preset, &results, &opts);
    assert!(first.finished);
    let trained = first.rows_that(Action::Trained);
    assert_eq!(trained, ["Pruned-Baseline", "Prompt-Tune", "Full-Finetune", "LoRA", "Finetuned-Pruned", "KD-Pruned"]);
    assert_eq!(first.rows_that(Action::Evaluated).len(), 7);
    let t = table(&first.run_dir);
    assert_eq!(t["rows"].as_array().unwrap().len(), 7);
    assert_eq!(t["rows"][0]["tasks"]["hellaswag"]["n"], 3);
    assert!(t["rows"][1]["tasks"]["hellaswag"]["p_holm"].is_number());
    assert!(t["rows"][0]["average_mmlu"]["ci95"].is_array());
    assert_eq!(t["findings"].as_array().unwrap().len(), 4, "the four published findings are judged");
    assert_eq!(t["same_limit_as_published"], false);
    let md = std::fs::read_to_string(first.run_dir.join("table.md")).unwrap();
    assert!(md.contains("not the published 200"), "{md}");
    // Every row answers the same held-out prompts (the tiny configs hold out 2 records).
    let prompts = t["answers"].as_array().unwrap();
    assert_eq!(prompts.len(), 2, "{prompts:?}");
    for p in prompts {
        let rows: Vec<&str> = p["answers"].as_array().unwrap().iter().map(|a| a["row"].as_str().unwrap()).collect();
        assert_eq!(rows, ["Baseline", "Pruned-Baseline", "Prompt-Tune", "Full-Finetune", "LoRA", "Finetuned-Pruned", "KD-Pruned"]);
        assert!(!p["prompt"].as_str().unwrap().is_empty() && !p["reference"].as_str().unwrap().is_empty(), "{p}");
    }
    assert!(md.contains("Greedy answers to held-out Dolly prompts") && md.contains("| Dolly's reference |"), "{md}");
    // Each trained row's folder carries a model card with the hub's front matter.
    let card = |p: &str| std::fs::read_to_string(first.run_dir.join(p).join("README.md")).unwrap();
    let lora = card("lora/adapter");
    assert!(lora.starts_with("---\nlicense: gemma\nbase_model: google/gemma-3-270m\n") && lora.contains("library_name: peft"), "{lora}");
    assert!(lora.contains("AutoPeftModelForCausalLM") && lora.contains("| Average MMLU |"), "{lora}");
    let ft = card("full-finetune/model");
    assert!(ft.contains("library_name: transformers") && ft.contains("pipeline(\"text-generation\""), "{ft}");
    assert!(ft.contains("held-out Dolly loss: "), "{ft}");
    // KD-Pruned's student is the pruned model: its result keeps exactly its zeros.
    let kd = &t["rows"][6]["train"][0]["details"]["sparsity"]["pruned_tensors"];
    assert_eq!(kd.as_f64(), Some(0.5), "{kd}");
    // A finished row keeps its model and drops the checkpoints it no longer resumes from.
    for row in ["prompt-tune", "full-finetune", "lora", "finetuned-pruned", "kd-pruned"] {
        let train = first.run_dir.join(row).join("train");
        assert!(train.join("metrics.jsonl").is_file(), "{row} trained");
        assert!(!train.join("checkpoints").exists(), "{row} keeps its checkpoints");
    }
    assert!(first.run_dir.join("full-finetune/model/model.safetensors").is_file());

    // Every stage measured its rate here, so the next plan says how long each stage takes.
    let rates = crate::rates::Rates::load(&results);
    assert_eq!((rates.train.len(), rates.eval.len()), (5, 1), "five trained techniques, one task list: {rates:?}");
    let p = Preset::load_with(&preset, &[]).unwrap();
    let (runs, all_rows) = (plan(&p, &first.run_dir, None).unwrap(), rows_to_run(&p, None).unwrap());
    let text = plan_text(&p, &runs, &all_rows, 9, &rates, "flex").unwrap();
    assert_eq!(text.matches("— finished").count(), 7, "{text}");
    assert!(text.contains("estimated time here: 0 s (rates measured"), "{text}");
    let new_folder = plan(&p, &dir.path().join("new"), None).unwrap();
    let elsewhere = plan_text(&p, &new_folder, &all_rows, 9, &rates, "flex").unwrap();
    assert_eq!(elsewhere.matches("— est. ").count(), 7, "a new folder: every stage to run, each estimated: {elsewhere}");
    let unmeasured = plan_text(&p, &new_folder, &all_rows, 9, &Default::default(), "flex").unwrap();
    assert!(unmeasured.contains("estimated time here: not known yet"), "no rate measured: {unmeasured}");

    // Nothing changed: nothing is redone, and no model is loaded.
    let loads = crate::model_loading::LOADS.with(|n| n.get());
    let again = run(&preset, &results, &opts);
    assert_eq!(crate::model_loading::LOADS.with(|n| n.get()), loads, "a study with nothing to do loads no model");
    assert!(again.rows_that(Action::Trained).is_empty() && again.rows_that(Action::Evaluated).is_empty());
    assert_eq!(numbers(&table(&again.run_dir)), numbers(&t));

    // `--only` one row with nothing to redo: the table still has every row, the rows it
    // starts from included (they were once left out).
    let only = run(&preset, &results, &StudyOptions { only: Some("KD-Pruned".into()), ..StudyOptions::default() });
    assert!(only.rows_that(Action::Trained).is_empty() && only.rows_that(Action::Evaluated).is_empty());
    assert_eq!(numbers(&table(&only.run_dir)), numbers(&t));

    // A new learning rate for Full-Finetune redoes it and KD-Pruned (its student), nothing else.
    let ft = dir.path().join("full-finetune.toml");
    let text = std::fs::read_to_string(&ft).unwrap().replace("lr = 0.001", "lr = 0.002");
    std::fs::write(&ft, text).unwrap();
    let edited = run(&preset, &results, &opts);
    assert_eq!(edited.rows_that(Action::Trained), ["Full-Finetune", "KD-Pruned"]);
    assert_eq!(edited.rows_that(Action::Evaluated), ["Full-Finetune", "KD-Pruned"]);
    // Its answers are the retrained model's.
    let row_file = |name: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(edited.run_dir.join("full-finetune").join(name)).unwrap()).unwrap()
    };
    assert_eq!(row_file("answers.json")["model"], row_file("stage-train.json")["hash"]);

    // Another eval limit re-evaluates every row and retrains none.
    let fewer = run(&preset, &results, &StudyOptions { limit: Some(Limit::Docs(2)), ..StudyOptions::default() });
    assert!(fewer.rows_that(Action::Trained).is_empty());
    assert_eq!(fewer.rows_that(Action::Evaluated).len(), 7);
    assert_eq!(table(&fewer.run_dir)["rows"][0]["tasks"]["hellaswag"]["n"], 2);
}

#[test]
#[cfg_attr(not(fixtures), ignore = "needs ../shared (SWEELOL_SHARED)")]
fn killed_at_every_stage_boundary_the_study_gives_the_same_table() {
    let dir = tempfile::tempdir().unwrap();
    let preset = tiny_study(dir.path(), SEVEN_ROWS).unwrap();
    let whole = run(&preset, &dir.path().join("whole"), &StudyOptions::default());

    let step = StudyOptions { stop_after_stages: Some(1), ..StudyOptions::default() };
    let pieces = dir.path().join("pieces");
    let mut invocations = 0;
    let last = loop {
        invocations += 1;
        assert!(invocations <= 20, "the study makes progress on every invocation");
        let out = run(&preset, &pieces, &step);
        if out.finished {
            break out;
        }
    };
    assert_eq!(invocations, 13, "6 trainings + 7 evaluations, one per invocation (the last also reports)");
    assert_eq!(numbers(&table(&last.run_dir)), numbers(&table(&whole.run_dir)));
}

/// Seeds asked for one row after a plain run: the row's own seed is that run (not trained
/// again), every other row keeps its results in the table, and no verdict changes.
#[test]
#[cfg_attr(not(fixtures), ignore = "needs ../shared (SWEELOL_SHARED)")]
fn seeds_for_one_row_keep_the_whole_table_and_reuse_the_configured_seed() {
    let dir = tempfile::tempdir().unwrap();
    let preset = tiny_study(dir.path(), SEVEN_ROWS).unwrap();
    let results = dir.path().join("results");
    let plain = run(&preset, &results, &StudyOptions::default());
    let before = table(&plain.run_dir);
    let opts = StudyOptions { seeds: Some(vec![0, 1]), only: Some("LoRA".into()), ..StudyOptions::default() };
    let seeded = run(&preset, &results, &opts);
    assert_eq!(seeded.rows_that(Action::Trained), ["LoRA seed 1"], "seed 0 is the plain run's LoRA");
    let after = table(&seeded.run_dir);
    let names = |t: &serde_json::Value| t["rows"].as_array().unwrap().iter().map(|r| r["row"].as_str().unwrap().to_string()).collect::<Vec<_>>();
    assert_eq!(names(&after), names(&before), "every row stays in the table");
    assert_eq!(after["rows"][4]["seeds"], serde_json::json!([0, 1]));
    // A finding none of whose comparisons involves LoRA keeps its verdict and evidence.
    let without_lora = |t: &serde_json::Value| {
        t["findings"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| !f["evidence"].as_array().unwrap().iter().any(|e| e["comparison"].as_str().unwrap().contains("LoRA")))
            .map(|f| (f["id"].clone(), f["verdict"].clone(), f["evidence"].clone()))
            .collect::<Vec<_>>()
    };
    assert!(!without_lora(&before).is_empty());
    assert_eq!(without_lora(&after), without_lora(&before));
    // No comparison lost its row (the tiny study leaves some tasks out: those stay missing).
    let missing = |t: &serde_json::Value| {
        let evidence = t["findings"].as_array().unwrap().iter().flat_map(|f| f["evidence"].as_array().unwrap().clone());
        evidence.filter(|e| e["outcome"] == "missing").map(|e| e["comparison"].as_str().unwrap().to_string()).collect::<Vec<_>>()
    };
    assert_eq!(missing(&after), missing(&before));
}

#[test]
#[cfg_attr(not(fixtures), ignore = "needs ../shared (SWEELOL_SHARED)")]
fn seeds_train_each_training_row_once_per_seed() {
    let dir = tempfile::tempdir().unwrap();
    let rows = "[[rows]]\nname = \"Baseline\"\n[[rows]]\nname = \"Pruned-Baseline\"\nconfig = \"pruning.toml\"\n\
                [[rows]]\nname = \"LoRA\"\nconfig = \"lora.toml\"\n";
    let preset = tiny_study(dir.path(), rows).unwrap();
    let opts = StudyOptions { seeds: Some(vec![0, 1]), ..StudyOptions::default() };
    let out = run(&preset, &dir.path().join("results"), &opts);
    // Pruning does not train: one run; LoRA: one per seed.
    assert_eq!(out.rows_that(Action::Trained), ["Pruned-Baseline", "LoRA seed 0", "LoRA seed 1"]);
    assert!(out.run_dir.join("lora/seed-1/eval/summary.json").is_file());
    let t = table(&out.run_dir);
    assert_eq!(t["rows"][2]["seeds"], serde_json::json!([0, 1]));
    assert!(t["rows"][2]["tasks"]["hellaswag"]["seed_sd"].is_number());
    assert!(t["rows"][1]["tasks"]["hellaswag"]["seed_sd"].is_null());
}

#[test]
#[cfg_attr(not(fixtures), ignore = "needs ../shared (SWEELOL_SHARED)")]
fn results_of_another_backend_are_refused_a_new_fewshot_is_rescored_and_fresh_starts_over() {
    let dir = tempfile::tempdir().unwrap();
    let preset = tiny_study(dir.path(), "[[rows]]\nname = \"Baseline\"\n").unwrap();
    let text = std::fs::read_to_string(&preset).unwrap().replace(
        "tasks = [\"mmlu_abstract_algebra\", \"mmlu_formal_logic\", \"hellaswag\"]",
        "tasks = [\"mmlu_abstract_algebra\"]",
    );
    std::fs::write(&preset, &text).unwrap();
    let results = dir.path().join("results");
    let first = run(&preset, &results, &StudyOptions::default());
    let eval_dir = first.run_dir.join("baseline/eval");
    assert_eq!(Identity::read(&eval_dir).unwrap().unwrap().get("num_fewshot"), Some("0"));

    // A directory from before identities (none recorded) is adopted from its manifest.
    std::fs::remove_file(first.run_dir.join(sweelol_outdir::IDENTITY_FILE)).unwrap();
    let adopted = run(&preset, &results, &StudyOptions::default());
    assert!(adopted.rows_that(Action::Evaluated).is_empty(), "finished rows kept");
    assert_eq!(Identity::read(&adopted.run_dir).unwrap().unwrap().get("backend"), Some("flex"));

    // Another backend's results are not mixed with this one's.
    let err = run_study(&preset, &StudyOptions::default(), &Device::flex(), "tch", &results).unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("backend: was `flex`, now `tch`") && msg.contains("--fresh"), "{msg}");
    // Nor another dtype's (`--dtype bf16`).
    let bf16 = StudyOptions { dtype: Some(sweelol_gemma::Precision::Bf16), ..StudyOptions::default() };
    let msg = format!("{:#}", run_study(&preset, &bf16, &Device::flex(), "flex", &results).unwrap_err());
    assert!(msg.contains("dtype: was `f32`, now `bf16`") && msg.contains("--fresh"), "{msg}");

    // A preset that now asks for 1-shot re-scores: the table never shows 0-shot numbers as 1-shot.
    std::fs::write(&preset, text.replace("limit = 3", "limit = 3\nnum_fewshot = 1")).unwrap();
    let one_shot = run(&preset, &results, &StudyOptions::default());
    assert_eq!(one_shot.rows_that(Action::Evaluated), ["Baseline"]);
    assert_eq!(Identity::read(&eval_dir).unwrap().unwrap().get("num_fewshot"), Some("1"));

    let fresh = StudyOptions { fresh: true, ..StudyOptions::default() };
    let redone = run_study(&preset, &fresh, &Device::flex(), "tch", &results).unwrap();
    assert_eq!(redone.rows_that(Action::Evaluated), ["Baseline"]);
    assert_eq!(Identity::read(&redone.run_dir).unwrap().unwrap().get("backend"), Some("tch"));

    // A preset naming an unknown task fails before any work, naming it.
    std::fs::write(&preset, text.replace("mmlu_abstract_algebra", "mmlu_nosuch")).unwrap();
    let msg = format!("{:#}", run_study(&preset, &StudyOptions::default(), &Device::flex(), "flex", &dir.path().join("r2")).unwrap_err());
    assert!(msg.contains("mmlu_nosuch"), "{msg}");
    assert!(!dir.path().join("r2").exists(), "nothing was created");
}
