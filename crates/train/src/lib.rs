//! sweelol-train: the training core every technique crate builds on.
//!
//! - [`config`]: the run's TOML (`[model]`, `[data]`, `[train]`, `[output]` + technique tables).
//! - [`model`]: [`TrainableModel`], what a technique implements (Gemma3 itself = full fine-tune).
//! - [`loss`]: next-token cross-entropy through the tied head in row chunks, with a hook for
//!   other per-chunk losses (distillation).
//! - [`optim`]: AdamW (decay on matrices only), global-norm clipping; [`schedule`]: warmup +
//!   constant/linear/cosine.
//! - [`trainer`]: the loop (accumulation, NaN guard, eval, metrics, progress bar);
//!   [`checkpoint`]: atomic checkpoints that resume mid-epoch; [`metrics`]: JSONL.
//! - [`data`], [`batch`]: Dolly examples to batches and scored positions; [`params`]: parameters
//!   by path.

pub mod batch;
pub mod checkpoint;
pub mod config;
pub mod data;
pub mod error;
pub mod loss;
pub mod metrics;
pub mod model;
pub mod optim;
pub mod params;
pub mod schedule;
pub mod trainer;

pub use batch::{Targets, TokenBatch};
pub use config::{DataSection, ModelSection, OutputSection, RunConfig, Technique, TrainSection};
pub use data::{load_dolly, Dataset};
pub use error::{Result, TrainError};
pub use loss::{chunked_head_loss, chunked_lm_loss, chunked_lm_loss_scaled, cross_entropy_sum, LossOutput};
pub use model::TrainableModel;
pub use schedule::{LrSchedule, ScheduleKind};
pub use trainer::{evaluate, train, TrainOptions, TrainOutcome};

/// Shared run scaffolding for technique crates (load, train, export, report).
pub mod run;
pub use run::{artifact_dir, prepare, run_technique, Prepared, RunReport};
