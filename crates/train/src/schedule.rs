//! Learning-rate schedule: linear warmup, then constant, linear or cosine decay.

use serde::{Deserialize, Serialize};

/// What the learning rate does after warmup.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScheduleKind {
    /// Stay at the peak.
    #[default]
    Constant,
    /// Straight line from the peak to `min_lr_ratio * peak` at the last step.
    Linear,
    /// Half cosine from the peak to `min_lr_ratio * peak` at the last step.
    Cosine,
}

#[derive(Clone, Debug, PartialEq)]
pub struct LrSchedule {
    pub peak: f64,
    pub warmup_steps: usize,
    pub total_steps: usize,
    pub kind: ScheduleKind,
    pub min_lr_ratio: f64,
}

impl LrSchedule {
    /// Learning rate of optimizer step `step` (0-based).
    ///
    /// Warmup uses `(step + 1) / warmup_steps`, so the first step already moves the weights
    /// (transformers' scheduler spends it at lr 0). Decay runs over the remaining steps and
    /// reaches the floor exactly at the last one.
    pub fn lr(&self, step: usize) -> f64 {
        if step < self.warmup_steps {
            return self.peak * (step + 1) as f64 / self.warmup_steps as f64;
        }
        let floor = self.peak * self.min_lr_ratio;
        let decay_steps = self.total_steps.saturating_sub(self.warmup_steps);
        if decay_steps <= 1 {
            return self.peak;
        }
        let progress = ((step - self.warmup_steps) as f64 / (decay_steps - 1) as f64).min(1.0);
        match self.kind {
            ScheduleKind::Constant => self.peak,
            ScheduleKind::Linear => floor + (self.peak - floor) * (1.0 - progress),
            ScheduleKind::Cosine => floor + (self.peak - floor) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sched(kind: ScheduleKind) -> LrSchedule {
        LrSchedule { peak: 1.0, warmup_steps: 2, total_steps: 7, kind, min_lr_ratio: 0.1 }
    }

    #[test]
    fn warmup_then_decay_reaches_floor_at_last_step() {
        for kind in [ScheduleKind::Linear, ScheduleKind::Cosine] {
            let s = sched(kind);
            assert_eq!(s.lr(0), 0.5);
            assert_eq!(s.lr(1), 1.0);
            assert_eq!(s.lr(2), 1.0);
            assert!((s.lr(6) - 0.1).abs() < 1e-12, "{kind:?}: {}", s.lr(6));
            assert!(s.lr(4) < 1.0 && s.lr(4) > 0.1);
        }
        assert_eq!(sched(ScheduleKind::Constant).lr(6), 1.0);
        assert!((sched(ScheduleKind::Cosine).lr(4) - 0.55).abs() < 1e-12);
    }
}
