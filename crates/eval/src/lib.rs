//! Multiple-choice evaluation identical to lm-evaluation-harness 0.4 (HF backend):
//! task definitions in [`tasks`], log-likelihood scoring in [`scoring`] (the LM head's
//! log-probabilities come from `sweelol_gemma::kernels::log_probs`), and the resumable
//! runner with summaries in [`run`].

pub mod run;
pub mod scoring;
pub mod tasks;

pub use run::{evaluate, format_table, check_request, load_tasks, preflight, EvalError, EvalOptions, EvalSummary, Metric, TaskSummary};
pub use sweelol_outdir::Identity;
pub use scoring::{DocResult, Scorer};
