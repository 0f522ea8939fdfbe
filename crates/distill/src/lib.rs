//! Knowledge distillation for sweelol: the student learns from a teacher's softened
//! next-token distribution as well as from the data.
//!
//! - [`config`]: the `[distill]` table (alpha, temperature, divergence, teacher logits).
//! - [`divergence`]: forward KL (Hinton), reverse KL, generalized JSD (GKD), per row.
//! - [`loss`]: [`kd_loss`] on full teacher logits, [`kd_loss_topk`] on cached top-k.
//! - [`topk`]: computing and caching a teacher's top-k logits.

pub mod config;
pub mod divergence;
pub mod error;
pub mod loss;
pub mod topk;
mod train;
pub use train::{run, KdModel};

pub use config::{DistillConfig, Divergence, TeacherLogits};
pub use divergence::divergence_rows;
pub use error::{DistillError, Result};
pub use loss::{cross_entropy_rows, kd_loss, kd_loss_rows, kd_loss_topk, kd_loss_topk_rows};
pub use topk::{TeacherTopK, TopKCache};
