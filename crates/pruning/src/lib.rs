//! Magnitude pruning of Gemma-3 (the study's "50% magnitude pruning" technique).
//!
//! - [`config`]: the `[pruning]` table: sparsity, scope (per tensor, global, N:M), targets.
//! - [`select`]: which weights to prune, on the host, deterministic on ties.
//! - [`masks`]: [`prune`], the [`Masks`] that training re-applies after every optimizer step
//!   so pruned weights stay exactly zero, and their safetensors file for resuming.
//! - [`report`]: per-tensor zero counts of a model, and the export (HF dir + report JSON).

pub mod config;
pub mod error;
pub mod masks;
pub mod report;
pub mod select;
mod train;

pub use config::{PruningConfig, Scope};
pub use error::{PruningError, Result};
pub use masks::{prune, Masks, EMBED_NAME};
pub use train::{export_pruned, run, PrunedModel};
pub use report::{export, sparsity_report, OverallSparsity, SparsityReport, TensorSparsity, REPORT_FILE};
