//! `cargo xtask bench`: train-step throughput of every technique at batch 4 x 256 on the
//! real model and real Dolly data, eval docs/s per task, and peak RSS, as JSON.
//! Benchmarks, not tests: nothing here asserts a speed.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use serde_json::json;
use burn::tensor::Device;
use sweelol_eval::{evaluate, EvalOptions, Scorer};

use crate::config::{self, TechniqueConfig};
use crate::model_loading::load_model;
use crate::report::peak_rss_mib;

const TECHNIQUE_CONFIGS: [&str; 5] = ["full-finetune", "lora", "prompt-tuning", "finetuned-pruned", "kd-pruned"];

/// Mean tokens/s of the steps after the first (warm-up) in a metrics.jsonl.
fn steady_tokens_per_s(metrics: &Path) -> Option<f64> {
    let text = std::fs::read_to_string(metrics).ok()?;
    let rates: Vec<f64> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v.get("tokens_per_s").and_then(|x| x.as_f64()))
        .collect();
    let steady = if rates.len() > 1 { &rates[1..] } else { &rates[..] };
    (!steady.is_empty()).then(|| steady.iter().sum::<f64>() / steady.len() as f64)
}

/// Batch 4 x 256, long examples only, no eval or checkpoints in the timing.
fn bench_sized(cfg: &mut sweelol_train::RunConfig, steps: usize) {
    cfg.data.n_train = 4 * (steps + 1);
    cfg.data.n_eval = 0;
    cfg.data.max_len = 256;
    cfg.train.batch_size = 4;
    cfg.train.grad_accum = 1;
    cfg.train.max_steps = Some(steps + 1);
    cfg.train.eval_every = 0;
    cfg.train.checkpoint_every = 0;
    cfg.output.resume = false;
    cfg.output.progress = false;
}

pub fn run_bench(out: &Path, steps: usize, docs: usize, device: &Device, backend: &str) -> Result<()> {
    let root = crate::repo_root();
    let scratch = std::env::temp_dir().join(format!("sweelol-bench-{}", std::process::id()));
    let mut train = serde_json::Map::new();
    let teacher = scratch.join("teacher");
    let pruned = scratch.join("pruned");
    for name in TECHNIQUE_CONFIGS {
        let mut cfg = config::load(&root.join("configs").join(format!("{name}.toml")))
            .with_context(|| format!("configs/{name}.toml"))?;
        bench_sized(&mut cfg.run, steps);
        crate::train::redirect_outputs(&mut cfg, &scratch.join(name));
        if let TechniqueConfig::Distill(_) = cfg.technique {
            // The KD bench distils the (barely trained) full fine-tune into the pruned
            // model, as the study does.
            let student = pruned.join("model");
            cfg.start_from(student.display().to_string(), Some(student.join(sweelol_pruning::MASKS_FILE)));
            cfg.set_teacher(teacher.join("model").display().to_string())?;
        }
        eprintln!("bench: {name}");
        let t0 = Instant::now();
        let result = crate::train::run_technique(&cfg, device)?;
        let keep_as = match name {
            "full-finetune" => Some(&teacher),
            "finetuned-pruned" => Some(&pruned),
            _ => None,
        };
        if let Some(dir) = keep_as {
            std::fs::create_dir_all(dir)?;
            std::fs::rename(&result.model_source, dir.join("model")).ok();
        }
        let tps = steady_tokens_per_s(&cfg.run.output.dir.join("metrics.jsonl"));
        train.insert(
            name.to_string(),
            json!({"tokens_per_s": tps, "steps_timed": steps, "batch": [4, 256],
                   "trainable_params": result.details.get("trainable_params"),
                   "run_seconds_incl_load": t0.elapsed().as_secs_f64()}),
        );
    }

    let loaded = load_model(sweelol_sources::GEMMA3_270M_GGUF, None, false, device)?;
    let scorer = Scorer::new(&loaded.model, &loaded.tokenizer);
    let mut eval = serde_json::Map::new();
    for task in sweelol_eval::tasks::STUDY_TASKS {
        let opts = EvalOptions {
            tasks: vec![task.to_string()],
            limit: Some(docs),
            num_fewshot: 0,
            data_root: crate::default_data_root(),
            out_dir: scratch.join("eval").join(task),
            show_progress: false,
        };
        let s = evaluate(&scorer, &opts)?;
        eval.insert(task.to_string(), json!({"docs": docs, "docs_per_s": s.docs_per_second}));
    }
    let report = json!({
        "backend": backend,
        "threads": std::thread::available_parallelism().map(|n| n.get()).ok(),
        "train_step": train,
        "eval": eval,
        "peak_rss_mib": peak_rss_mib(),
    });
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(out, serde_json::to_string_pretty(&report)?)?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    std::fs::remove_dir_all(&scratch).ok();
    Ok(())
}
