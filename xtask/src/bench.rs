//! `cargo xtask bench`: train-step throughput of every technique on the real model and
//! real Dolly batches (batch 4 × up to 256 tokens), eval docs/s per task, and peak RSS, as
//! JSON. With `--compare-torch PYTHON` the same work runs in PyTorch in the same command
//! (`tests/python/bench_torch.py`): the batches each technique trained on, the same
//! settings, the same evaluation requests; the report gives `vs_torch` (ours / PyTorch,
//! real tokens or documents per second) and compares the eval decisions.
//! Benchmarks, not tests: nothing here asserts a speed.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use burn::tensor::Device;
use serde_json::{json, Map, Value};
use sweelol_eval::scoring::{argmax, encode_pair, DocResult};
use sweelol_eval::tasks::{load_task, parse_task_name, STUDY_TASKS};
use sweelol_eval::{evaluate, EvalOptions, Scorer};
use sweelol_gemma::Precision;

use sweelol_study::technique::{self as config, TechniqueName, TechniqueRun};
use sweelol_study::model_loading::{load_model, LoadedModel};
use sweelol_study::report::{peak_rss_mib, reset_peak_rss};

/// The five training techniques, by their config file in configs/.
pub const TECHNIQUES: [&str; 5] = ["full-finetune", "lora", "prompt-tuning", "finetuned-pruned", "kd-pruned"];

/// What to bench.
pub struct BenchOptions {
    pub out: PathBuf,
    /// Optimizer steps timed per technique (after one warm-up step).
    pub steps: usize,
    /// Documents scored per task.
    pub docs: usize,
    /// Techniques to train (default all five; KD-Pruned also needs Full-Finetune and
    /// Finetuned-Pruned, which then run too).
    pub only: Option<Vec<String>>,
    /// A Python with torch, transformers and PEFT: run the same work there.
    pub compare_torch: Option<PathBuf>,
    /// Device string for the PyTorch side (`cpu`, `cuda`).
    pub torch_device: String,
    pub backend: String,
    /// The base model every technique starts from and the eval scores.
    pub model: String,
    pub batch_size: usize,
    pub max_len: usize,
    /// `[train] pad_to_multiple`; above 1 also fills short micro-batches and buckets eval.
    pub pad_to_multiple: usize,
    /// What our matrix products compute in; with bf16 the PyTorch side runs under bf16
    /// autocast (f32 weights, as ours).
    pub dtype: Precision,
}

/// Timed steps of a metrics.jsonl: real tokens / seconds over the steps after the first
/// (warm-up), and the mean phase split of those steps.
/// Also every step's loss and learning rate, warm-up included (the PyTorch side follows the
/// same schedule).
struct Steps {
    tokens_per_s: f64,
    /// The untimed first step (on a JIT backend: mostly kernel compilation and tuning).
    warmup_step_s: f64,
    /// Distinct micro-batch shapes over all steps.
    distinct_shapes: f64,
    losses: Vec<f64>,
    lrs: Vec<f64>,
    phases: Value,
}

fn steady_steps(metrics: &Path) -> Result<Steps> {
    let text = std::fs::read_to_string(metrics).with_context(|| format!("reading {}", metrics.display()))?;
    let all: Vec<Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.get("kind").and_then(Value::as_str) == Some("train"))
        .collect();
    let num = |v: &Value, k: &str| v.get(k).and_then(Value::as_f64).unwrap_or(0.0);
    let losses = all.iter().map(|s| num(s, "loss")).collect();
    let lrs = all.iter().map(|s| num(s, "lr")).collect();
    let steps = &all[1.min(all.len())..];
    if steps.is_empty() {
        bail!("{}: no timed step after the warm-up", metrics.display());
    }
    let tokens: f64 = steps.iter().map(|s| num(s, "tokens")).sum();
    let secs: f64 = steps.iter().map(|s| num(s, "step_s")).sum();
    let mut phases = Map::new();
    for key in ["data_s", "forward_s", "head_loss_s", "backward_s", "optimizer_s"] {
        let mean = steps.iter().map(|s| s.get("phases").map_or(0.0, |p| num(p, key))).sum::<f64>() / steps.len() as f64;
        phases.insert(key.to_string(), json!(mean));
    }
    Ok(Steps {
        tokens_per_s: tokens / secs,
        warmup_step_s: all.first().map_or(0.0, |s| num(s, "step_s")),
        distinct_shapes: all.iter().map(|s| num(s, "new_shapes")).sum(),
        losses,
        lrs,
        phases: Value::Object(phases),
    })
}

/// Batch 4 × up to 256 (real Dolly rows, response-only loss), no eval or checkpoints in
/// the timing; the batches go to `batches.jsonl` beside the metrics.
fn bench_sized(cfg: &mut TechniqueRun, opts: &BenchOptions, dir: &Path) {
    sweelol_study::train::redirect_outputs(cfg, dir);
    let steps = opts.steps;
    let run = &mut cfg.run;
    if opts.model != sweelol_sources::GEMMA3_270M_GGUF {
        run.model.source = opts.model.clone();
    }
    run.data.n_train = opts.batch_size * (steps + 1);
    run.data.n_eval = 0;
    run.data.max_len = opts.max_len;
    run.train.batch_size = opts.batch_size;
    run.train.pad_to_multiple = opts.pad_to_multiple;
    run.train.fixed_batch = opts.pad_to_multiple > 1;
    // The untimed warm-up step is the largest, so the timed ones run in warm memory, as
    // the steps of a long run do (`docs/perf.md`).
    run.train.largest_batch_first = true;
    run.train.dtype = opts.dtype;
    run.train.grad_accum = 1;
    run.train.max_steps = Some(steps + 1);
    run.train.eval_every = 0;
    run.train.checkpoint_every = 0;
    run.output.resume = false;
    run.output.progress = false;
    run.output.batch_log = Some(dir.join("batches.jsonl"));
}

/// The techniques to run, in dependency order (KD needs the other two's results).
fn plan(only: &Option<Vec<String>>) -> Result<Vec<&'static str>> {
    let Some(only) = only else { return Ok(TECHNIQUES.to_vec()) };
    for name in only {
        if !TECHNIQUES.contains(&name.as_str()) {
            bail!("--only: unknown technique `{name}`; expected some of {}", TECHNIQUES.join(", "));
        }
    }
    let wanted = |t: &str| only.iter().any(|o| o == t) || (only.iter().any(|o| o == "kd-pruned") && matches!(t, "full-finetune" | "finetuned-pruned"));
    Ok(TECHNIQUES.into_iter().filter(|t| wanted(t)).collect())
}

/// What the PyTorch side needs to rebuild a technique: its kind and settings.
fn torch_settings(cfg: &TechniqueRun, batches: &Path) -> Value {
    let t = &cfg.run.train;
    let mut s = json!({
        "batches": batches, "lr": t.lr, "weight_decay": t.weight_decay, "betas": t.betas, "eps": t.eps,
        "clip_norm": t.clip_norm,
    });
    let obj = s.as_object_mut().expect("object");
    let name = cfg.technique.name();
    obj.insert("kind".into(), json!(name.as_str()));
    obj.insert(name.table().into(), cfg.technique.settings_json());
    s
}

/// Trains each technique for `steps + 1` steps; returns our numbers and the spec entries.
fn bench_training(opts: &BenchOptions, scratch: &Path, device: &Device) -> Result<(Map<String, Value>, Map<String, Value>)> {
    let root = sweelol_study::paths::repo_root();
    let (teacher, pruned) = (scratch.join("teacher"), scratch.join("pruned"));
    let mut ours = Map::new();
    let mut spec = Map::new();
    for name in plan(&opts.only)? {
        let mut cfg = config::load(&root.join("configs").join(format!("{name}.toml")))
            .with_context(|| format!("configs/{name}.toml"))?;
        cfg.run.data.path = sweelol_study::data_fetch::dolly_path(&cfg.run.data.path)?;
        let dir = scratch.join(name);
        bench_sized(&mut cfg, opts, &dir);
        let mut torch = torch_settings(&cfg, &dir.join("batches.jsonl"));
        if cfg.technique.name() == TechniqueName::Distill {
            // The KD bench distils the (barely trained) full fine-tune into the pruned
            // model, as the study does; PyTorch prunes its student the same way.
            let student = pruned.join("model");
            cfg.start_from(student.display().to_string(), Some(student.join(sweelol_train::masks::MASKS_FILE)));
            cfg.set_teacher(teacher.join("model").display().to_string())?;
            let pruning = config::load(&root.join("configs/finetuned-pruned.toml"))?;
            torch["pruning"] = pruning.technique.settings_json();
        }
        eprintln!("bench: {name}");
        reset_peak_rss();
        let t0 = Instant::now();
        let result = sweelol_study::train::run_technique(&cfg, device)?;
        let keep_as = match name {
            "full-finetune" => Some(&teacher),
            "finetuned-pruned" => Some(&pruned),
            _ => None,
        };
        if let Some(keep) = keep_as {
            std::fs::create_dir_all(keep)?;
            std::fs::rename(&result.model_source, keep.join("model")).ok();
        }
        let steps = steady_steps(&cfg.run.output.dir.join("metrics.jsonl"))?;
        torch["lrs"] = json!(steps.lrs);
        ours.insert(
            name.to_string(),
            json!({"tokens_per_s": steps.tokens_per_s, "steps_timed": opts.steps, "losses": steps.losses,
                   "batch": [opts.batch_size, opts.max_len], "phases": steps.phases,
                   "warmup_step_s": steps.warmup_step_s, "distinct_shapes": steps.distinct_shapes,
                   "trainable_params": result.details.get("trainable_params"),
                   "run_seconds_incl_load": t0.elapsed().as_secs_f64(), "peak_rss_mib": peak_rss_mib()}),
        );
        spec.insert(name.to_string(), torch);
    }
    Ok((ours, spec))
}

/// Our eval of the first `docs` docs per task; returns docs/s per task and the results.
fn bench_eval(loaded: &LoadedModel, docs: usize, shapes: &sweelol_gemma::ShapeBuckets, scratch: &Path) -> Result<(Map<String, Value>, Value)> {
    let mut scorer = Scorer::new(&loaded.model, &loaded.tokenizer);
    scorer.shapes = shapes.clone();
    let tasks: Vec<String> = STUDY_TASKS.iter().map(|t| t.to_string()).collect();
    let data_root = sweelol_study::data_fetch::eval_data_root(&sweelol_study::paths::default_data_root(), &tasks, 0)?;
    let mut ours = Map::new();
    let mut requests = Map::new();
    let mut shapes_before = 0;
    for task in STUDY_TASKS {
        let out_dir = scratch.join("eval");
        std::fs::remove_file(out_dir.join(format!("{task}.jsonl"))).ok();
        let opts = EvalOptions {
            tasks: vec![task.to_string()],
            limit: Some(docs),
            num_fewshot: 0,
            data_root: data_root.clone(),
            out_dir: out_dir.clone(),
            show_progress: false,
            identity: sweelol_eval::Identity::new(),
            // Each task's timing must score every document, never reuse an earlier run's.
            fresh: true,
        };
        let s = evaluate(&scorer, &opts)?;
        let t = &s.tasks[0];
        let results: Vec<DocResult> = std::fs::read_to_string(out_dir.join(format!("{task}.jsonl")))?
            .lines()
            .map(serde_json::from_str)
            .collect::<std::result::Result<_, _>>()?;
        let shapes_now = scorer.shape_log.count();
        ours.insert(
            task.to_string(),
            json!({"docs": t.n, "docs_per_s": t.n as f64 / t.seconds, "new_shapes": shapes_now - shapes_before, "results": results}),
        );
        shapes_before = shapes_now;
        let spec = parse_task_name(task)?;
        let loaded_task = load_task(&spec, &data_root, Some(docs), 0)?;
        let mut doc_requests = Vec::new();
        for doc in &loaded_task.docs {
            let pairs: Vec<(Vec<u32>, Vec<u32>)> = (0..doc.choices.len())
                .map(|i| encode_pair(&loaded.tokenizer, &doc.context, &doc.continuation(i)))
                .collect::<std::result::Result<_, _>>()?;
            let lens: Vec<usize> = doc.choices.iter().map(|c| c.chars().count()).collect();
            doc_requests.push(json!({"doc_id": doc.doc_id, "requests": pairs, "choice_chars": lens}));
        }
        requests.insert(task.to_string(), Value::Array(doc_requests));
    }
    Ok((ours, Value::Object(requests)))
}

/// Exports the base model as a transformers directory for the PyTorch side.
fn export_base(loaded: &LoadedModel, dir: &Path) -> Result<()> {
    sweelol_gemma::save_hf_dir(&loaded.model, &loaded.tokenizer, dir).with_context(|| format!("exporting to {}", dir.display()))?;
    Ok(())
}

fn run_python(python: &Path, spec: &Path, out: &Path) -> Result<Value> {
    let script = sweelol_study::paths::repo_root().join("tests/python/bench_torch.py");
    eprintln!("bench: PyTorch ({} {})", python.display(), script.display());
    let status = std::process::Command::new(python)
        .arg(&script)
        .arg("--spec")
        .arg(spec)
        .arg("--out")
        .arg(out)
        .status()
        .with_context(|| format!("starting {}", python.display()))?;
    if !status.success() {
        bail!("{} {} failed ({status})", python.display(), script.display());
    }
    let text = std::fs::read_to_string(out).with_context(|| format!("reading {}", out.display()))?;
    Ok(serde_json::from_str(&text)?)
}

/// Decisions (acc and, where the task has it, acc_norm) equal between our results and
/// PyTorch's log-likelihoods, and the worst log-likelihood difference.
fn compare_decisions(ours: &[DocResult], torch_lls: &[Value], requests: &[Value]) -> Value {
    let mut same = 0;
    let mut worst = 0.0f64;
    for ((r, t), req) in ours.iter().zip(torch_lls).zip(requests) {
        let t: Vec<f64> = t.as_array().map(|a| a.iter().filter_map(Value::as_f64).collect()).unwrap_or_default();
        let lens: Vec<f64> = req["choice_chars"].as_array().map(|a| a.iter().filter_map(Value::as_f64).collect()).unwrap_or_default();
        for (a, b) in r.loglikelihoods.iter().zip(&t) {
            worst = worst.max((a - b).abs());
        }
        let norm = |ll: &[f64]| argmax(&ll.iter().zip(&lens).map(|(l, n)| l / n).collect::<Vec<_>>());
        let acc_same = argmax(&r.loglikelihoods) == argmax(&t);
        let norm_same = r.acc_norm.is_none() || norm(&r.loglikelihoods) == norm(&t);
        same += (acc_same && norm_same) as usize;
    }
    json!({"decisions_equal": same, "docs": ours.len(), "max_abs_loglikelihood_diff": worst})
}

/// Puts PyTorch's side of the bench (`torch`, as `tests/python/bench_torch.py` writes it)
/// beside ours: per technique its tokens/s, phases, losses and `vs_torch` (ours / theirs);
/// per task its documents/s, `vs_torch` and whether the decisions agree. Returns the
/// report's `torch` summary.
fn merge_torch(train: &mut Map<String, Value>, eval: &mut Map<String, Value>, torch: &Value, requests: &Value) -> Result<Value> {
    for (name, ours) in train.iter_mut() {
        let theirs = &torch["train_step"][name];
        ours["torch_tokens_per_s"] = theirs["tokens_per_s"].clone();
        ours["vs_torch"] = ratio(ours["tokens_per_s"].as_f64(), theirs["tokens_per_s"].as_f64());
        ours["torch_phases"] = theirs.get("phases").cloned().unwrap_or(Value::Null);
        ours["torch_losses"] = theirs["losses"].clone();
    }
    for (task, ours) in eval.iter_mut() {
        let theirs = &torch["eval"][task];
        ours["torch_docs_per_s"] = theirs["docs_per_s"].clone();
        ours["vs_torch"] = ratio(ours["docs_per_s"].as_f64(), theirs["docs_per_s"].as_f64());
        let results: Vec<DocResult> = serde_json::from_value(ours["results"].clone())?;
        let lls = theirs["loglikelihoods"].as_array().cloned().unwrap_or_default();
        let reqs = requests[task].as_array().cloned().unwrap_or_default();
        ours["vs_lm_eval_scoring"] = compare_decisions(&results, &lls, &reqs);
    }
    Ok(json!({
        "versions": torch["versions"], "threads": torch["threads"], "device": torch["device"],
        "peak_rss_mib": torch["peak_rss_mib"],
    }))
}

fn ratio(ours: Option<f64>, torch: Option<f64>) -> Value {
    match (ours, torch) {
        (Some(a), Some(b)) if b > 0.0 => json!(a / b),
        _ => Value::Null,
    }
}

pub fn run_bench(opts: &BenchOptions, device: &Device) -> Result<()> {
    let scratch = std::env::temp_dir().join(format!("sweelol-bench-{}", std::process::id()));
    let (mut train, spec_train) = bench_training(opts, &scratch, device)?;
    reset_peak_rss();
    // One load of the base model serves our eval and the PyTorch side's export.
    let base = load_model(&opts.model, None, false, device, opts.dtype)?;
    let shapes = if opts.pad_to_multiple > 1 {
        sweelol_gemma::ShapeBuckets { multiple: opts.pad_to_multiple, rows: 4 }
    } else {
        sweelol_gemma::ShapeBuckets::EXACT
    };
    let (mut eval, requests) = bench_eval(&base, opts.docs, &shapes, &scratch)?;
    // The process's peak: the largest of each technique's and the eval's own peaks.
    let eval_rss = peak_rss_mib();
    let our_rss = train.values().filter_map(|t| t["peak_rss_mib"].as_f64()).chain(eval_rss).reduce(f64::max);
    let mut report = json!({
        "backend": opts.backend,
        "threads": std::thread::available_parallelism().map(|n| n.get()).ok(),
        "versions": {"sweelol": env!("CARGO_PKG_VERSION"), "commit": sweelol_study::report::git_commit(), "burn": "0.22.1"},
        "peak_rss_mib": our_rss,
        "eval_peak_rss_mib": eval_rss,
        "model": opts.model,
        "batch": [opts.batch_size, opts.max_len],
        "pad_to_multiple": opts.pad_to_multiple,
        "dtype": opts.dtype.as_str(),
    });

    if let Some(python) = &opts.compare_torch {
        let model_dir = scratch.join("base-hf");
        export_base(&base, &model_dir)?;
        let requests_path = scratch.join("eval-requests.json");
        std::fs::write(&requests_path, serde_json::to_string(&requests)?)?;
        let spec = json!({
            "model_dir": model_dir, "device": opts.torch_device, "dtype": "f32", "autocast": opts.dtype.as_str(), "steps": opts.steps,
            "train": spec_train, "eval": {"requests": requests_path},
        });
        let spec_path = scratch.join("torch-spec.json");
        std::fs::write(&spec_path, serde_json::to_string_pretty(&spec)?)?;
        let torch = run_python(python, &spec_path, &scratch.join("torch.json"))?;
        report["torch"] = merge_torch(&mut train, &mut eval, &torch, &requests)?;
    }
    for ours in eval.values_mut() {
        ours.as_object_mut().expect("object").remove("results");
    }
    report["train_step"] = Value::Object(train);
    report["eval"] = Value::Object(eval);
    if let Some(parent) = opts.out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&opts.out, serde_json::to_string_pretty(&report)?)?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    std::fs::remove_dir_all(&scratch).ok();
    Ok(())
}

/// The products a training step is made of, `[m, k] x [k, n]`: 1024 rows (4 x 256 tokens)
/// through the attention projections and the MLP.
const GEMM_SHAPES: [(usize, usize, usize); 3] = [(1024, 640, 2048), (1024, 2048, 640), (1024, 640, 1024)];

/// GFLOP/s of our f32 GEMM and our bf16 kernel (and of PyTorch's `a @ b` in f32 and bf16,
/// with `python`), each the best of five runs after a warm-up, same shapes, same process
/// threads.
pub fn run_gemm_bench(out: &Path, python: Option<&Path>) -> Result<()> {
    use sweelol_gemma::kernels::gemm::gemm_f32;
    use sweelol_gemma::kernels::gemm_bf16::{self, Dst, MatRef};
    let best = |f: &mut dyn FnMut()| {
        f();
        (0..5).map(|_| { let t = Instant::now(); f(); t.elapsed().as_secs_f64() }).fold(f64::INFINITY, f64::min)
    };
    let mut rows = Vec::new();
    for (m, k, n) in GEMM_SHAPES {
        let a: Vec<f32> = (0..m * k).map(|i| ((i % 97) as f32 - 48.0) / 50.0).collect();
        let b: Vec<f32> = (0..k * n).map(|i| ((i % 89) as f32 - 44.0) / 50.0).collect();
        let mut c = vec![0.0f32; m * n];
        let flops = 2.0 * (m * n * k) as f64;
        let f32_s = best(&mut || gemm_f32((m, n, k), &mut c, (1, n as isize), false, &a, (1, k as isize), &b, (1, n as isize)));
        let bf16_s = best(&mut || gemm_bf16::gemm_bf16(Dst::row_major(&mut c, n), MatRef::row_major(&a, m, k), MatRef::row_major(&b, k, n)));
        let packed = gemm_bf16::pack_b(MatRef::row_major(&b, k, n));
        let packed_s = best(&mut || gemm_bf16::gemm_bf16_packed(Dst::row_major(&mut c, n), MatRef::row_major(&a, m, k), &packed));
        rows.push(json!({
            "shape": [m, k, n],
            "ours_f32_gflops": flops / f32_s / 1e9,
            "ours_bf16_gflops": flops / bf16_s / 1e9,
            "ours_bf16_prepacked_gflops": flops / packed_s / 1e9,
        }));
    }
    rows.push(head_bench(&best));
    if let Some(python) = python {
        let script = r#"
import json, sys, time, torch
out = []
for m, k, n in json.loads(sys.argv[1]):
    row = {}
    for name, dt in (("torch_f32_gflops", torch.float32), ("torch_bf16_gflops", torch.bfloat16)):
        a, b = torch.randn(m, k, dtype=dt), torch.randn(k, n, dtype=dt)
        a @ b
        best = min((lambda t: (a @ b, time.perf_counter() - t)[1])(time.perf_counter()) for _ in range(5))
        row[name] = 2 * m * n * k / best / 1e9
    out.append(row)
print(json.dumps({"rows": out, "torch": torch.__version__, "threads": torch.get_num_threads()}))
"#;
        let shapes = serde_json::to_string(&GEMM_SHAPES.iter().map(|&(m, k, n)| [m, k, n]).collect::<Vec<_>>())?;
        let output = std::process::Command::new(python).arg("-c").arg(script).arg(shapes).output().with_context(|| format!("running {}", python.display()))?;
        if !output.status.success() {
            bail!("{} failed: {}", python.display(), String::from_utf8_lossy(&output.stderr));
        }
        let torch: Value = serde_json::from_slice(&output.stdout).context("PyTorch's GEMM report")?;
        for (ours, theirs) in rows.iter_mut().zip(torch["rows"].as_array().into_iter().flatten()) {
            for (key, v) in theirs.as_object().into_iter().flatten() {
                ours[key] = v.clone();
            }
        }
        rows.push(json!({"torch": torch["torch"], "torch_threads": torch["threads"]}));
    }
    let report = json!({
        "bf16_kernel": gemm_bf16::kernel().name(),
        "threads": std::thread::available_parallelism().map(|n| n.get()).ok(),
        "commit": sweelol_study::report::git_commit(),
        "products": rows,
    });
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(out, serde_json::to_string_pretty(&report)?)?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

/// The fused head + cross-entropy with both gradients (`kernels::head::cross_entropy`) on a
/// step's worth of rows: 1024 x 640 hidden rows against the 262144 x 640 table, in f32 and
/// in bf16, seconds per call.
fn head_bench(best: &dyn Fn(&mut dyn FnMut()) -> f64) -> Value {
    let n: usize = std::env::var("SWEELOL_HEAD_ROWS").ok().and_then(|v| v.parse().ok()).unwrap_or(1024);
    head_bench_rows(best, n)
}

fn head_bench_rows(best: &dyn Fn(&mut dyn FnMut()) -> f64, n: usize) -> Value {
    use sweelol_gemma::kernels::head::{cross_entropy, HeadInputs};
    let (vocab, hidden) = (262_144, 640);
    let embed: Vec<f32> = (0..vocab * hidden).map(|i| ((i % 101) as f32 - 50.0) / 2000.0).collect();
    let rows: Vec<f32> = (0..n * hidden).map(|i| ((i % 83) as f32 - 41.0) / 40.0).collect();
    let targets: Vec<u32> = (0..n as u32).map(|i| i * 257 % vocab as u32).collect();
    let mut out = json!({"head_shape": [n, hidden, vocab]});
    for precision in [Precision::F32, Precision::Bf16] {
        let x = HeadInputs { embed: &embed, vocab, hidden, rows: &rows, softcap: None, precision };
        let mut call = || {
            let g = cross_entropy(&x, &targets, 512, 1.0 / n as f32, true, true);
            // A deferred table gradient (n <= hidden) is computed here, as training does.
            let d_embed = g.d_embed.map(|d| d.finish(&rows, vocab, hidden));
            std::hint::black_box((g.loss_sum, d_embed));
        };
        // The first call in the process (fresh memory, as a training step's head sees it
        // when the step before freed its buffers to other uses), then the best warm one.
        let t = Instant::now();
        call();
        out[format!("head_{}_first_s", precision.as_str())] = json!(t.elapsed().as_secs_f64());
        out[format!("head_{}_s", precision.as_str())] = json!(best(&mut call));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(doc_id: usize, gold: usize, lls: &[f64]) -> Value {
        let best = argmax(lls);
        json!(DocResult { doc_id, gold, loglikelihoods: lls.to_vec(), acc: (best == gold) as u8 as f64, acc_norm: Some(0.0) })
    }

    #[test]
    fn pytorch_numbers_go_beside_ours_with_ratios_and_decisions() {
        let mut train = Map::new();
        train.insert("lora".into(), json!({"tokens_per_s": 240.0}));
        train.insert("kd-pruned".into(), json!({"tokens_per_s": 90.0}));
        let mut eval = Map::new();
        let results = [doc(0, 1, &[-5.0, -4.0]), doc(1, 0, &[-3.0, -2.0]), doc(2, 0, &[-10.0, -12.0])];
        eval.insert("hellaswag".into(), json!({"docs_per_s": 8.0, "results": results}));
        // Doc 0 agrees; doc 1's acc decision differs (-1.9 beats -2.0); doc 2's acc agrees but
        // its acc_norm does not (per character: ours -1.0 vs -0.4, theirs -1.0 vs -1.0333).
        let torch = json!({
            "train_step": {"lora": {"tokens_per_s": 80.0, "losses": [3.0, 2.5], "phases": {"forward_s": 0.5}}},
            "eval": {"hellaswag": {"docs_per_s": 2.0, "loglikelihoods": [[-5.0001, -4.0], [-1.9, -2.0], [-10.0, -31.0]]}},
            "versions": {"torch": "2.9.0"}, "threads": 2, "device": "cpu", "peak_rss_mib": 14800.0,
        });
        let requests = json!({"hellaswag": [{"choice_chars": [10, 10]}, {"choice_chars": [10, 10]}, {"choice_chars": [10, 30]}]});
        let summary = merge_torch(&mut train, &mut eval, &torch, &requests).unwrap();

        assert_eq!(summary, json!({"versions": {"torch": "2.9.0"}, "threads": 2, "device": "cpu", "peak_rss_mib": 14800.0}));
        assert_eq!(train["lora"]["vs_torch"], json!(3.0));
        assert_eq!(train["lora"]["torch_tokens_per_s"], json!(80.0));
        assert_eq!(train["lora"]["torch_losses"], json!([3.0, 2.5]));
        assert_eq!(train["lora"]["torch_phases"], json!({"forward_s": 0.5}));
        // A technique PyTorch did not run has no ratio rather than a made-up one.
        assert_eq!(train["kd-pruned"]["vs_torch"], Value::Null);
        assert_eq!(train["kd-pruned"]["torch_phases"], Value::Null);

        let hs = &eval["hellaswag"];
        assert_eq!(hs["vs_torch"], json!(4.0));
        assert_eq!(hs["torch_docs_per_s"], json!(2.0));
        let scoring = &hs["vs_lm_eval_scoring"];
        assert_eq!((scoring["decisions_equal"].as_u64(), scoring["docs"].as_u64()), (Some(1), Some(3)));
        let worst = scoring["max_abs_loglikelihood_diff"].as_f64().unwrap();
        assert!((worst - 19.0).abs() < 1e-9, "{worst}");
    }

    #[test]
    fn steady_steps_leave_out_the_warm_up_step() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.jsonl");
        let lines = [
            r#"{"kind": "eval", "loss": 9.0}"#,
            r#"{"kind": "train", "loss": 4.0, "lr": 1e-5, "tokens": 1000, "step_s": 10.0, "new_shapes": 1, "phases": {"forward_s": 5.0}}"#,
            r#"{"kind": "train", "loss": 3.0, "lr": 2e-5, "tokens": 800, "step_s": 2.0, "new_shapes": 0, "phases": {"forward_s": 1.0, "optimizer_s": 0.2}}"#,
            r#"{"kind": "train", "loss": 2.5, "lr": 3e-5, "tokens": 1000, "step_s": 3.0, "new_shapes": 1, "phases": {"forward_s": 2.0}}"#,
        ];
        std::fs::write(&path, lines.join("\n")).unwrap();
        let s = steady_steps(&path).unwrap();
        assert_eq!(s.tokens_per_s, 360.0, "1,800 tokens in 5 s after the warm-up");
        assert_eq!((s.warmup_step_s, s.distinct_shapes), (10.0, 2.0));
        assert_eq!((s.losses, s.lrs), (vec![4.0, 3.0, 2.5], vec![1e-5, 2e-5, 3e-5]));
        assert_eq!(s.phases["forward_s"], json!(1.5));
        assert_eq!(s.phases["optimizer_s"], json!(0.1));
        assert_eq!(s.phases["data_s"], json!(0.0));

        std::fs::write(&path, lines[..2].join("\n")).unwrap();
        let msg = steady_steps(&path).err().unwrap().to_string();
        assert!(msg.contains("metrics.jsonl: no timed step after the warm-up"), "{msg}");
    }

    #[test]
    fn only_adds_what_kd_pruned_is_built_on_and_refuses_unknown_names() {
        assert_eq!(plan(&None).unwrap(), TECHNIQUES);
        assert_eq!(plan(&Some(vec!["lora".into()])).unwrap(), ["lora"]);
        assert_eq!(plan(&Some(vec!["kd-pruned".into()])).unwrap(), ["full-finetune", "finetuned-pruned", "kd-pruned"]);
        let msg = plan(&Some(vec!["qlora".into()])).unwrap_err().to_string();
        assert!(msg.contains("unknown technique `qlora`"), "{msg}");
    }
}
