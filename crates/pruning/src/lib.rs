//! Magnitude pruning of Gemma-3 (the study's "50% magnitude pruning" technique).
//!
//! - [`config`]: the `[pruning]` table: sparsity, scope (per tensor, global, N:M), targets.
//! - [`select`]: which weights to prune, on the host, deterministic on ties.
//! - [`prune`]: the pruned model and its [`Masks`] (which live in sweelol-train, since any
//!   technique that trains a sparse model re-applies them after every step).
//! - [`run`]: Pruned-Baseline (prune, export) or Finetuned-Pruned (prune, then fine-tune
//!   with the masks kept), from a config.
//!
//! Used on its own: prune half of every projection of a (tiny test) model and export it as
//! a transformers directory with its masks and sparsity report:
//!
// The example reads the shared fixtures; without them it is listed as ignored.
#![cfg_attr(fixtures, doc = "```")]
#![cfg_attr(not(fixtures), doc = "```ignore")]
//! use burn::tensor::Device;
//! use sweelol_pruning::{run, PruningConfig};
//! use sweelol_train::{testing, DataSection, ModelSection, OutputSection, RunConfig, TrainSection};
//!
//! let work = std::env::temp_dir().join(format!("sweelol-pruning-doc-{}", std::process::id()));
//! let model_dir = testing::tiny_real_vocab_model(&work.join("base"))?;
//! let cfg = RunConfig {
//!     model: ModelSection { source: model_dir.display().to_string(), tokenizer: None },
//!     data: DataSection::new(testing::dolly_path(), 8, 64),
//!     train: TrainSection { max_steps: Some(2), ..TrainSection::new(5e-5, 4) },
//!     output: OutputSection::new(work.join("run")),
//!     file: Default::default(),
//! };
//! // Finetuned-Pruned: prune, then train with the zeros kept.
//! let pruning = PruningConfig { sparsity: Some(0.5), finetune: true, ..PruningConfig::default() };
//! let report = run(&cfg, &pruning, &Device::flex())?;
//! assert_eq!(report.steps, 2);
//! let sparsity = std::fs::read_to_string(report.artifact_dir.join(sweelol_pruning::REPORT_FILE))?;
//! assert!(sparsity.contains("\"pruned_tensors\": 0.5"));
//! # std::fs::remove_dir_all(&work).ok();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod config;
pub mod error;
mod prune;
pub mod select;
mod train;

pub use config::{PruningConfig, Scope};
pub use error::{PruningError, Result};
pub use prune::{export, prune};
pub use sweelol_train::masks::{Masks, EMBED_NAME, MASKS_FILE};
pub use sweelol_train::sparsity::{sparsity_report, OverallSparsity, SparsityReport, TensorSparsity, REPORT_FILE};
pub use train::{run, PrunedModel, Pruning, TECHNIQUE};
