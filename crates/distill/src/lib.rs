//! Knowledge distillation for sweelol: the student learns from a teacher's softened
//! next-token distribution as well as from the data.
//!
//! - [`config`]: the `[distill]` table (alpha, temperature, divergence, teacher, masks).
//! - [`divergence`]: forward KL (Hinton), reverse KL, generalized JSD (GKD), per row.
//! - [`loss`]: [`kd_loss`] on full teacher logits, [`kd_loss_topk`] on cached top-k.
//! - [`topk`]: a teacher's top-k logits and their cache, for losses against a stored teacher
//!   (training runs the teacher beside the student and uses every logit).
//! - [`run`]: a student (`[model] source`, optionally with a masks file whose zeros it keeps)
//!   learns from a teacher, from a config. KD-Pruned is the pruned model learning from the
//!   full fine-tune; the study wires the two in.
//!
//! Used on its own (here a tiny test model distilled into itself):
//!
// The example reads the shared fixtures; without them it is listed as ignored.
#![cfg_attr(fixtures, doc = "```")]
#![cfg_attr(not(fixtures), doc = "```ignore")]
//! use burn::tensor::Device;
//! use sweelol_distill::{run, DistillConfig};
//! use sweelol_train::{testing, DataSection, ModelSection, OutputSection, RunConfig, TrainSection};
//!
//! let work = std::env::temp_dir().join(format!("sweelol-kd-doc-{}", std::process::id()));
//! let model_dir = testing::tiny_real_vocab_model(&work.join("base"))?;
//! let source = model_dir.display().to_string();
//! let cfg = RunConfig {
//!     model: ModelSection { source: source.clone(), tokenizer: None },
//!     data: DataSection::new(testing::dolly_path(), 8, 64),
//!     train: TrainSection { max_steps: Some(2), ..TrainSection::new(5e-5, 4) },
//!     output: OutputSection::new(work.join("run")),
//!     file: Default::default(),
//! };
//! let kd = DistillConfig { teacher: Some(source), alpha: 0.5, temperature: 2.0, ..DistillConfig::default() };
//! let report = run(&cfg, &kd, &Device::flex())?;
//! assert_eq!(report.steps, 2);
//! assert!(report.artifact_dir.join("model.safetensors").is_file());
//! # std::fs::remove_dir_all(&work).ok();
//! # Ok::<(), sweelol_train::TrainError>(())
//! ```

pub mod config;
pub mod divergence;
pub mod error;
pub mod host;
pub mod loss;
pub mod topk;
mod train;
pub use train::{run, Distill, KdModel, TeacherTable, TECHNIQUE};

pub use config::{DistillConfig, Divergence};
pub use divergence::divergence_rows;
pub use error::{DistillError, Result};
pub use loss::{cross_entropy_rows, kd_loss, kd_loss_rows, kd_loss_topk, kd_loss_topk_rows};
pub use topk::{TeacherTopK, TopKCache};
