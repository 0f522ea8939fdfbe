//! `cargo xtask eval`: score a model (with its adapter) on multiple-choice tasks as
//! lm-evaluation-harness does.

use std::path::PathBuf;

use anyhow::Result;
use burn::tensor::Device;
use sweelol_eval::{evaluate, format_table, EvalOptions, Scorer};
use sweelol_gemma::Precision;
use sweelol_study::model_loading::{check_adapter, load_model};
use sweelol_study::paths::default_data_root;
use sweelol_study::{data_fetch, preset, provenance};

/// What to score, on what, and where the results go.
pub struct Request {
    pub model: String,
    pub adapter: Option<PathBuf>,
    /// The tasks; `None`: the study's six.
    pub tasks: Option<Vec<String>>,
    pub limit: preset::Limit,
    pub num_fewshot: usize,
    pub out: PathBuf,
    pub fresh: bool,
    /// The data root; `None`: `$SWEELOL_DATA`, else `shared/data` beside the repository.
    pub data: Option<PathBuf>,
}

/// Checks everything the request can get wrong before the model loads, then scores and
/// prints the table.
pub fn run(req: &Request, device: &Device, precision: Precision, backend: &str) -> Result<()> {
    let mut opts = EvalOptions::study(req.data.clone().unwrap_or_else(default_data_root), req.out.clone());
    if let Some(t) = &req.tasks {
        opts.tasks = t.clone();
    }
    opts.limit = req.limit.docs();
    opts.num_fewshot = req.num_fewshot;
    opts.fresh = req.fresh;
    sweelol_eval::check_request(&opts)?;
    opts.data_root = data_fetch::eval_data_root(&opts.data_root, &opts.tasks, opts.num_fewshot)?;
    if let Some(dir) = &req.adapter {
        check_adapter(dir)?;
    }
    sweelol_eval::load_tasks(&opts)?;
    opts.identity = provenance::model_identity(&req.model, req.adapter.as_deref(), backend, precision)?;
    sweelol_eval::preflight(&opts)?;
    let pre = load_model(&req.model, req.adapter.as_deref(), false, device, precision)?;
    let mut scorer = Scorer::new(&pre.model, &pre.tokenizer);
    scorer.prefix = pre.prefix.clone();
    let summary = evaluate(&scorer, &opts)?;
    println!("{}", format_table(&summary));
    println!("{:.2} docs/s over {:.0}s; outputs in {}", summary.docs_per_second, summary.seconds, req.out.display());
    Ok(())
}
