//! The `[distill]` table of a run config.
//!
//! ```toml
//! [distill]
//! alpha = 0.5                   # weight of the distillation term; 1 − alpha weighs the data CE
//! temperature = 2.0             # both distributions are softened by T; the KD term is scaled by T²
//! divergence = "forward_kl"     # "forward_kl" | "reverse_kl" | "jsd"
//! # beta = 0.5                  # only with divergence = "jsd"
//! teacher = "path/to/teacher"   # teacher model source (required for training)
//! # masks = "path/to/pruning_masks.safetensors"   # keep a pruned student's zeros
//! ```
//!
//! The student is the run's `[model] source`: for KD-Pruned, the pruned model directory,
//! with its masks file so the zeros survive training.

use serde::{Deserialize, Serialize};

use crate::error::{DistillError, Result};

/// The divergence `D(teacher_T ‖ student_T)` of the KD term. `P` is always the teacher's
/// softened distribution and `Q` the student's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Divergence {
    /// `KL(P ‖ Q) = Σ P (log P − log Q)`: Hinton et al. (2015). Mass-covering: the student
    /// is penalised wherever the teacher has mass it lacks.
    #[default]
    ForwardKl,
    /// `KL(Q ‖ P)`: mode-seeking (as in MiniLLM).
    ReverseKl,
    /// GKD's generalized Jensen-Shannon divergence (Agarwal et al., 2024), exactly TRL's
    /// `generalized_jsd_loss`: with `M = β·P + (1 − β)·Q`,
    /// `JSD_β = β·KL(P ‖ M) + (1 − β)·KL(Q ‖ M)`; β = 0 is taken as forward KL and β = 1 as
    /// reverse KL (TRL's special cases, the limits' behaviour up to scale).
    Jsd,
}

/// Distillation hyper-parameters. Every field has a default, so `[distill]` may be empty.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DistillConfig {
    /// Weight of the KD term, in [0, 1] (default 0.5): per token the loss is
    /// `alpha·T²·D(teacher_T ‖ student_T) + (1 − alpha)·CE(student, target)`.
    pub alpha: f64,
    /// Softmax temperature T > 0 (default 2.0). The T² factor keeps the KD gradients'
    /// scale independent of T (Hinton et al.). The CE term uses T = 1.
    pub temperature: f64,
    /// `forward_kl` (default), `reverse_kl` or `jsd`.
    pub divergence: Divergence,
    /// β of the generalized JSD, in [0, 1] (default 0.5, symmetric JSD). Only with
    /// `divergence = "jsd"`.
    pub beta: Option<f64>,
    /// The teacher model, as any source `sweelol_gemma::load_pretrained` accepts (a path is
    /// relative to the config file). Required to train.
    pub teacher: Option<String>,
    /// A masks file (`pruning_masks.safetensors`, written beside every pruned model): its
    /// zeros are re-applied to the student after every step. `None`: the student trains
    /// densely.
    pub masks: Option<std::path::PathBuf>,
}

pub const DEFAULT_BETA: f64 = 0.5;

impl Default for DistillConfig {
    fn default() -> Self {
        DistillConfig {
            alpha: 0.5,
            temperature: 2.0,
            divergence: Divergence::ForwardKl,
            beta: None,
            teacher: None,
            masks: None,
        }
    }
}

impl DistillConfig {
    /// Parses the body of a `[distill]` table and validates it. Unknown keys are an error
    /// that names the key.
    pub fn from_toml(text: &str) -> Result<Self> {
        let cfg: DistillConfig = toml::from_str(text).map_err(|e| DistillError::Config(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// β of the JSD (its default when not given).
    pub fn jsd_beta(&self) -> f64 {
        self.beta.unwrap_or(DEFAULT_BETA)
    }

    pub fn validate(&self) -> Result<()> {
        let err = |m: String| Err(DistillError::Config(m));
        if !(0.0..=1.0).contains(&self.alpha) {
            return err(format!("alpha must be in [0, 1], got {}", self.alpha));
        }
        if !(self.temperature > 0.0 && self.temperature.is_finite()) {
            return err(format!("temperature must be positive and finite, got {}", self.temperature));
        }
        match (self.divergence, self.beta) {
            (Divergence::Jsd, Some(b)) if !(0.0..=1.0).contains(&b) => {
                return err(format!("beta must be in [0, 1], got {b}"))
            }
            (Divergence::ForwardKl | Divergence::ReverseKl, Some(_)) => {
                return err("`beta` only applies to divergence = \"jsd\"".into())
            }
            _ => {}
        }
        Ok(())
    }
}
