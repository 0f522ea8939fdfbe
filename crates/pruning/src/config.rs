//! The `[pruning]` table of a run config.
//!
//! ```toml
//! [pruning]
//! sparsity = 0.5          # fraction of each pruned tensor (or of all of them) set to zero
//! scope = "per_tensor"    # "per_tensor" | "global" | "n_m"
//! # n = 2, m = 4          # only with scope = "n_m"
//! target_modules = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
//! prune_embeddings = false
//! ```

use serde::{Deserialize, Serialize};
use sweelol_gemma::model::DecoderLayer;

use crate::error::{PruningError, Result};

/// How the weights to prune are chosen. In every scope the smallest |w| go first; ties are
/// broken by position (see [`crate::select`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Each tensor loses `round(sparsity · numel)` weights (Python's round, half to even),
    /// as `torch.nn.utils.prune.l1_unstructured(module, "weight", amount=sparsity)` does.
    #[default]
    PerTensor,
    /// One threshold over all pruned tensors together (`torch.nn.utils.prune.global_unstructured`
    /// with `L1Unstructured`): `round(sparsity · Σ numel)` weights, wherever they are.
    Global,
    /// Semi-structured N:M: in every group of M consecutive weights of a row of the HF
    /// `[out, in]` weight (i.e. along the input dimension, as NVIDIA's 2:4 sparse tensor
    /// cores want), the N largest |w| are kept.
    #[serde(rename = "n_m")]
    NM,
}

/// Pruning hyper-parameters. Every field has a default, so `[pruning]` may be empty.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PruningConfig {
    /// Fraction of weights set to zero, in [0, 1]. Default 0.5 (the study's 50%). With
    /// `scope = "n_m"` it is implied by N:M (1 − N/M) and, if given, must equal it.
    pub sparsity: Option<f64>,
    /// How weights are chosen: `per_tensor` (default), `global` or `n_m`.
    pub scope: Scope,
    /// N of N:M: weights kept per group (default 2). Only with `scope = "n_m"`.
    pub n: Option<usize>,
    /// M of N:M: group length along the input dimension (default 4). Only with `scope = "n_m"`.
    pub m: Option<usize>,
    /// Decoder projections to prune, by short name. Default: all seven linear layers
    /// (q, k, v, o, gate, up, down) of every decoder layer.
    pub target_modules: Vec<String>,
    /// Also prune the token embedding, which is also the (tied) LM head. Default false:
    /// the usual recipe keeps embeddings and head dense, and in Gemma-3-270m they hold
    /// 170M of the 268M parameters, so pruning them changes the model far more.
    pub prune_embeddings: bool,
    /// For a `technique = "pruning"` run: fine-tune the pruned model on Dolly with the
    /// masks re-applied after every optimizer step (Finetuned-Pruned), instead of only
    /// pruning (Pruned-Baseline). Default false.
    pub finetune: bool,
}

impl Default for PruningConfig {
    fn default() -> Self {
        PruningConfig {
            sparsity: None,
            scope: Scope::PerTensor,
            n: None,
            m: None,
            target_modules: DecoderLayer::LINEAR_NAMES.iter().map(|n| short_name(n).to_string()).collect(),
            prune_embeddings: false,
            finetune: false,
        }
    }
}

/// The study's default sparsity.
pub const DEFAULT_SPARSITY: f64 = 0.5;
/// NVIDIA's 2:4.
pub const DEFAULT_N_M: (usize, usize) = (2, 4);

impl PruningConfig {
    /// Parses the body of a `[pruning]` table and validates it. Unknown keys are an error
    /// that names the key.
    pub fn from_toml(text: &str) -> Result<Self> {
        let cfg: PruningConfig = toml::from_str(text).map_err(|e| PruningError::Config(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// `(N, M)` in `n_m` scope, `None` otherwise.
    pub fn n_m(&self) -> Option<(usize, usize)> {
        (self.scope == Scope::NM).then(|| (self.n.unwrap_or(DEFAULT_N_M.0), self.m.unwrap_or(DEFAULT_N_M.1)))
    }

    /// The effective sparsity: as given, 0.5 by default, or 1 − N/M in `n_m` scope.
    pub fn sparsity(&self) -> f64 {
        match (self.n_m(), self.sparsity) {
            (Some((n, m)), _) => 1.0 - n as f64 / m as f64,
            (None, Some(s)) => s,
            (None, None) => DEFAULT_SPARSITY,
        }
    }

    /// Whether the projection `self_attn.q_proj` (etc.) is pruned.
    pub fn targets(&self, linear_name: &str) -> bool {
        let short = short_name(linear_name);
        self.target_modules.iter().any(|t| t == short)
    }

    pub fn validate(&self) -> Result<()> {
        let err = |m: String| Err(PruningError::Config(m));
        if let Some(s) = self.sparsity {
            if !(0.0..=1.0).contains(&s) {
                return err(format!("sparsity must be in [0, 1], got {s}"));
            }
        }
        match self.n_m() {
            Some((n, m)) => {
                if m == 0 || n == 0 || n > m {
                    return err(format!("N:M needs 1 <= n <= m, got n = {n}, m = {m}"));
                }
                if let Some(s) = self.sparsity {
                    let implied = 1.0 - n as f64 / m as f64;
                    if (s - implied).abs() > 1e-9 {
                        return err(format!(
                            "sparsity = {s} contradicts {n}:{m} (which prunes {implied}); drop `sparsity` or make it {implied}"
                        ));
                    }
                }
            }
            None => {
                if self.n.is_some() || self.m.is_some() {
                    return err(format!("`n` and `m` only apply to scope = \"n_m\", not {:?}", self.scope));
                }
            }
        }
        for t in &self.target_modules {
            if !DecoderLayer::LINEAR_NAMES.iter().any(|n| short_name(n) == t) {
                return err(format!(
                    "unknown target module `{t}`; expected q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj or down_proj"
                ));
            }
        }
        if self.target_modules.is_empty() && !self.prune_embeddings {
            return err("nothing to prune: target_modules is empty and prune_embeddings is false".into());
        }
        Ok(())
    }
}

/// `self_attn.q_proj` -> `q_proj`.
pub(crate) fn short_name(full: &str) -> &str {
    full.rsplit('.').next().unwrap_or(full)
}
