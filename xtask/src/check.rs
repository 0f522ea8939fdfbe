//! `cargo xtask check`: is this backend right on this machine? What a new machine (a GPU
//! one above all) runs first, against the reference fixtures: the tiny model's logits
//! against transformers', and a model's first documents of each study task against
//! lm-evaluation-harness 0.4.13's log-likelihoods and decisions.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use burn::tensor::{Device, Int, Tensor, TensorData};
use serde_json::{json, Map, Value};
use sweelol_eval::tasks::{load_task, parse_task_name};
use sweelol_eval::Scorer;
use sweelol_gemma::{Gemma3, GemmaConfig, WeightMap};

use sweelol_study::model_loading::load_model;

/// Largest |logit − transformers| accepted for the tiny model (f32 on every backend).
const TINY_TOLERANCE: f32 = 1e-4;
/// Largest |log-likelihood − lm-eval| accepted (the CPU's worst is 6.2e-4).
const LL_TOLERANCE: f64 = 2e-3;

pub struct CheckOptions {
    /// `shared/fixtures`: `tiny-gemma3/` and `lm-eval/baseline_first20.json`.
    pub fixtures: PathBuf,
    /// The model scored against lm-eval; only the reference model (the packaged GGUF)
    /// must match it, any other is scored and reported (a dry run of the pipeline).
    pub model: String,
    pub docs: usize,
    pub data_root: PathBuf,
    pub out: PathBuf,
}

/// Runs both checks, writes the JSON report, and fails if a reference comparison fails.
pub fn run_check(opts: &CheckOptions, device: &Device, backend: &str) -> Result<()> {
    let t0 = Instant::now();
    let tiny = tiny_logits(&opts.fixtures.join("tiny-gemma3"), device)?;
    eprintln!("check: tiny logits max |diff| {} ({:.1} s)", tiny["max_abs_logit_diff"], t0.elapsed().as_secs_f64());
    let t1 = Instant::now();
    let reference = opts.model == sweelol_sources::GEMMA3_270M_GGUF;
    let eval = first_docs(opts, device)?;
    let eval_s = t1.elapsed().as_secs_f64();
    let eval_pass = !reference || eval.values().all(|t| t["decisions_equal"] == t["docs"] && t["max_abs_ll_diff"].as_f64().is_some_and(|d| d <= LL_TOLERANCE));
    let pass = tiny["pass"] == true && eval_pass;
    let report = json!({
        "backend": backend,
        "commit": sweelol_study::provenance::COMMIT,
        "tiny": tiny,
        "eval": {"model": opts.model, "reference_model": reference, "seconds": eval_s, "tasks": eval, "pass": eval_pass},
        "pass": pass,
    });
    if let Some(dir) = opts.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&opts.out, serde_json::to_string_pretty(&report)?)?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    if !pass {
        bail!("check failed on backend {backend}: see {}", opts.out.display());
    }
    Ok(())
}

/// The tiny fixture's logits at every position against transformers'.
fn tiny_logits(dir: &Path, device: &Device) -> Result<Value> {
    let cfg = GemmaConfig::from_file(&dir.join("config.json"))?;
    let model = Gemma3::from_weights(&cfg, WeightMap::read_safetensors_dir(dir)?, device)?;
    let path = dir.join("expected.safetensors");
    let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let st = safetensors::SafeTensors::deserialize(&bytes).with_context(|| format!("{}: not safetensors", path.display()))?;
    let ids: Vec<i64> = st.tensor("input_ids")?.data().chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes"))).collect();
    let want: Vec<f32> = st.tensor("logits")?.data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes"))).collect();
    let n = ids.len();
    let tokens = Tensor::<2, Int>::from_data(TensorData::new(ids, [1, n]), device);
    let got = model.forward(tokens).into_data().convert::<f32>().try_into_vec::<f32>().map_err(|e| anyhow::anyhow!("{e:?}"))?;
    if got.len() != want.len() {
        bail!("{}: {} logits expected, the model gave {}", path.display(), want.len(), got.len());
    }
    let err = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    Ok(json!({"positions": n, "max_abs_logit_diff": err, "tolerance": TINY_TOLERANCE, "pass": err.is_finite() && err <= TINY_TOLERANCE}))
}

/// The first `docs` documents of each task in the lm-eval fixture, scored as `eval` does.
fn first_docs(opts: &CheckOptions, device: &Device) -> Result<Map<String, Value>> {
    let path = opts.fixtures.join("lm-eval/baseline_first20.json");
    let reference: Value = serde_json::from_str(&std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?)?;
    let tasks = reference["tasks"].as_object().with_context(|| format!("{}: no `tasks`", path.display()))?;
    let loaded = load_model(&opts.model, None, false, device, sweelol_gemma::Precision::F32)?;
    let mut scorer = Scorer::new(&loaded.model, &loaded.tokenizer);
    scorer.prefix = loaded.prefix.clone();
    let mut out = Map::new();
    for (name, want) in tasks {
        let task = load_task(&parse_task_name(name)?, &opts.data_root, Some(opts.docs), 0)?;
        let got: Vec<_> = task.docs.chunks(4).map(|g| scorer.score_docs(g, task.reports_acc_norm)).collect::<Result<Vec<_>, _>>()?.concat();
        let (mut same, mut worst) = (0, 0.0f64);
        for (g, w) in got.iter().zip(want.as_array().into_iter().flatten()) {
            let lls: Vec<f64> = w["loglikelihoods"].as_array().into_iter().flatten().filter_map(Value::as_f64).collect();
            worst = g.loglikelihoods.iter().zip(&lls).map(|(a, b)| (a - b).abs()).fold(worst, f64::max);
            let norm_same = !task.reports_acc_norm || w.get("acc_norm").and_then(Value::as_f64) == g.acc_norm;
            same += (Some(g.acc) == w["acc"].as_f64() && norm_same) as usize;
        }
        out.insert(name.clone(), json!({"docs": got.len(), "decisions_equal": same, "max_abs_ll_diff": worst}));
    }
    Ok(out)
}
