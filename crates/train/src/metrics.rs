//! Metrics as JSON Lines (`metrics.jsonl`), one object per step or evaluation.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{Result, TrainError};

/// One optimizer step.
#[derive(Clone, Debug, Serialize)]
pub struct StepRecord {
    pub kind: &'static str,
    /// Optimizer steps completed (1-based).
    pub step: usize,
    pub epoch: usize,
    /// Mean cross-entropy over the step's target tokens.
    pub loss: f64,
    pub lr: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Whether clipping scaled the gradients down.
    pub clipped: bool,
    /// Real (non-pad) input tokens and scored tokens in this step.
    pub tokens: usize,
    pub target_tokens: usize,
    pub tokens_per_s: f64,
    pub step_s: f64,
    /// Seconds since this process started training.
    pub elapsed_s: f64,
    /// Where this step's time went.
    pub phases: crate::profile::PhaseTimes,
    /// Micro-batch shapes `[rows, seq_len]` this step used for the first time in this
    /// process (each costs a JIT backend a compilation).
    pub new_shapes: usize,
}

/// One held-out evaluation.
#[derive(Clone, Debug, Serialize)]
pub struct EvalRecord {
    pub kind: &'static str,
    pub step: usize,
    pub eval_loss: f64,
    pub eval_tokens: usize,
    pub eval_s: f64,
    pub elapsed_s: f64,
}

pub struct MetricsWriter {
    path: PathBuf,
    file: File,
}

impl MetricsWriter {
    /// Opens `path` for appending. When resuming at `keep_through_step`, lines of later steps
    /// (written by the interrupted run after its last checkpoint) are dropped first, so the
    /// file reads like one uninterrupted run; a fresh run (`None`) starts an empty file.
    pub fn open(path: &Path, keep_through_step: Option<usize>) -> Result<Self> {
        let io = |e| TrainError::io(path, e);
        let kept: Vec<String> = match keep_through_step {
            Some(step) if path.exists() => BufReader::new(File::open(path).map_err(io)?)
                .lines()
                .map_while(|l| l.ok())
                .filter(|l| {
                    serde_json::from_str::<serde_json::Value>(l)
                        .ok()
                        .and_then(|v| v.get("step").and_then(|s| s.as_u64()))
                        .is_some_and(|s| s as usize <= step)
                })
                .collect(),
            _ => Vec::new(),
        };
        let mut file = OpenOptions::new().create(true).write(true).truncate(true).open(path).map_err(io)?;
        for line in kept {
            writeln!(file, "{line}").map_err(io)?;
        }
        Ok(MetricsWriter { path: path.to_path_buf(), file })
    }

    pub fn write<T: Serialize>(&mut self, record: &T) -> Result<()> {
        let line = serde_json::to_string(record).expect("record serialises");
        writeln!(self.file, "{line}").map_err(|e| TrainError::io(&self.path, e))?;
        self.file.flush().map_err(|e| TrainError::io(&self.path, e))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}
