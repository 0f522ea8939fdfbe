//! Fixed shapes for backends that compile kernels per shape.
//!
//! wgpu (CubeCL) and libtorch-CUDA's autotuner build and tune kernels for every new tensor
//! shape; length-bucketed training batches and evaluation documents bring new sequence
//! lengths all the time. Rounding every forward up to a few shapes bounds that work. The
//! padding goes to the right (and into whole pad rows), and attention is causal, so a real
//! position never sees it: losses and log-likelihoods do not change.

use std::collections::BTreeSet;
use std::sync::Mutex;

/// How forwards are padded: sequence length up to a multiple, and rows up to a fixed count.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShapeBuckets {
    /// Sequence lengths are rounded up to a multiple of this (1 = exact lengths).
    pub multiple: usize,
    /// Rows per forward (0 = as many as the batch has).
    pub rows: usize,
}

impl ShapeBuckets {
    /// Exact shapes: what a CPU wants (padding only costs there).
    pub const EXACT: ShapeBuckets = ShapeBuckets { multiple: 1, rows: 0 };

    /// The padded length of a sequence of `len` tokens.
    pub fn seq_len(&self, len: usize) -> usize {
        let m = self.multiple.max(1);
        len.div_ceil(m) * m
    }

    /// The padded row count of a batch of `rows` rows.
    pub fn batch_rows(&self, rows: usize) -> usize {
        rows.max(self.rows)
    }
}

/// The distinct `[rows, seq_len]` shapes a run used, for its report.
#[derive(Debug, Default)]
pub struct ShapeLog(Mutex<BTreeSet<(usize, usize)>>);

impl ShapeLog {
    /// Records a shape; true if it is new.
    pub fn record(&self, rows: usize, seq_len: usize) -> bool {
        self.0.lock().map(|mut s| s.insert((rows, seq_len))).unwrap_or(false)
    }

    /// Distinct shapes so far.
    pub fn count(&self) -> usize {
        self.0.lock().map(|s| s.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_round_up_and_rows_fill_up() {
        let b = ShapeBuckets { multiple: 64, rows: 4 };
        assert_eq!([1, 63, 64, 65, 129].map(|n| b.seq_len(n)), [64, 64, 64, 128, 192]);
        assert_eq!([1, 4, 6].map(|n| b.batch_rows(n)), [4, 4, 6]);
        assert_eq!(ShapeBuckets::EXACT.seq_len(37), 37);
        assert_eq!(ShapeBuckets::EXACT.batch_rows(3), 3);
        let log = ShapeLog::default();
        assert!(log.record(4, 64) && !log.record(4, 64) && log.record(4, 128));
        assert_eq!(log.count(), 2);
    }
}
