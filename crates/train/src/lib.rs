//! sweelol-train: the training core every technique crate builds on.
//!
//! - [`config`]: the sections every run shares (`[model]`, `[data]`, `[train]`, `[output]`);
//!   a technique's own settings are a typed struct in its crate.
//! - [`model`]: [`TrainableModel`], what a technique implements (Gemma3 itself = full fine-tune).
//! - [`lookup`]: the input embedding lookup, whose gradient skips the graph on the host.
//! - [`loss`]: next-token cross-entropy through the tied head in row chunks, with a hook for
//!   other per-chunk losses (distillation).
//! - [`optim`]: AdamW (decay on matrices only), global-norm clipping; [`schedule`]: warmup +
//!   constant/linear/cosine.
//! - [`trainer`]: the loop (accumulation, NaN guard, eval, metrics, progress bar);
//!   [`checkpoint`]: atomic checkpoints that resume mid-epoch; [`metrics`]: JSONL.
//! - [`data`], [`batch`]: Dolly examples to batches and scored positions; [`params`]: parameters
//!   by path.
//! - [`masks`]: weights held at zero while training (pruned models), and [`sparsity`]: the
//!   zero count and export of a sparse model.

pub mod batch;
pub mod checkpoint;
pub mod config;
pub mod data;
pub mod error;
pub mod lookup;
pub mod loss;
pub mod masks;
pub mod metrics;
pub mod model;
pub mod optim;
pub mod params;
pub mod profile;
pub mod schedule;
pub mod sparsity;
pub mod technique;
pub mod testing;
pub mod trainer;

pub use batch::{Targets, TokenBatch};
pub use config::{key_differences, run_hash, run_keys, DataSection, ModelSection, OutputSection, RunConfig, TrainSection};
pub use data::{load_dolly, select_dolly, tokenize_split, Dataset, Split};
pub use error::{Result, TrainError};
pub use loss::{chunked_head_loss, chunked_lm_loss, chunked_lm_loss_scaled, cross_entropy_sum, host_head_loss, LossOutput, TableGrad};
pub use model::TrainableModel;
pub use schedule::{LrSchedule, ScheduleKind};
pub use trainer::{evaluate, train, BatchLog, TrainOptions, TrainOutcome};

/// Shared run scaffolding for technique crates (load, train, export, report).
pub mod run;
pub use masks::{MaskSpec, Masks};
pub use run::{artifact_dir, autodiff_device, prepare, run_technique, Prepared, RunIdentity, RunReport};
pub use sparsity::{export_sparse, sparsity_report, SparsityReport};
pub use technique::{settings_error, validated, Artifact, Technique};
