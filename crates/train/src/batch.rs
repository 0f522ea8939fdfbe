//! What the loss needs from a padded batch: the input ids and, for every target token, the
//! flat position of the hidden state that predicts it.

use burn::tensor::{Device, Int, Tensor, TensorData};
use sweelol_dolly::{Batch, PAD_ID};
use sweelol_gemma::ShapeBuckets;

/// The tokens a batch is scored on.
///
/// `positions[i] = b * T + t` is the hidden state (row of the flattened `[B*T, H]`) whose
/// logits predict `ids[i] = input_ids[b, t + 1]`; only positions whose next token has its
/// loss-mask bit set appear, so padding and (by default) the prompt are never scored.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Targets {
    pub positions: Vec<usize>,
    pub ids: Vec<u32>,
}

impl Targets {
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// A right-padded batch ready for the model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenBatch {
    pub batch_size: usize,
    pub seq_len: usize,
    /// Row-major `[batch_size * seq_len]`.
    pub input_ids: Vec<u32>,
    pub targets: Targets,
    /// Real (non-pad) tokens, for throughput.
    pub num_tokens: usize,
}

impl TokenBatch {
    /// Shifts Dolly's loss mask (which marks target tokens) onto predicting positions.
    pub fn from_dolly(b: &Batch) -> TokenBatch {
        let t = b.seq_len;
        let mut targets = Targets::default();
        for row in 0..b.batch_size {
            for pos in 1..t {
                let i = row * t + pos;
                if b.loss_mask[i] {
                    targets.positions.push(i - 1);
                    targets.ids.push(b.input_ids[i]);
                }
            }
        }
        TokenBatch {
            batch_size: b.batch_size,
            seq_len: t,
            input_ids: b.input_ids.clone(),
            targets,
            num_tokens: b.attention_mask.iter().filter(|&&m| m).count(),
        }
    }

    /// `[B, T]` token ids on `device`.
    pub fn input_tensor(&self, device: &Device) -> Tensor<2, Int> {
        let ids: Vec<i64> = self.input_ids.iter().map(|&x| x as i64).collect();
        Tensor::from_data(TensorData::new(ids, [self.batch_size, self.seq_len]), device)
    }

    /// This batch right-padded to `shapes`: sequence length rounded up, whole pad rows
    /// added; target positions move with their rows, so the loss is unchanged.
    pub fn padded(self, shapes: &ShapeBuckets) -> TokenBatch {
        let (t, rows) = (shapes.seq_len(self.seq_len), shapes.batch_rows(self.batch_size));
        if (t, rows) == (self.seq_len, self.batch_size) {
            return self;
        }
        let mut ids = vec![PAD_ID; rows * t];
        for (b, row) in self.input_ids.chunks(self.seq_len.max(1)).enumerate().take(self.batch_size) {
            ids[b * t..b * t + row.len()].copy_from_slice(row);
        }
        let positions = self.targets.positions.iter().map(|&p| (p / self.seq_len) * t + p % self.seq_len).collect();
        TokenBatch {
            batch_size: rows,
            seq_len: t,
            input_ids: ids,
            targets: Targets { positions, ids: self.targets.ids },
            num_tokens: self.num_tokens,
        }
    }

    pub fn max_token_id(&self) -> u32 {
        self.input_ids.iter().copied().max().unwrap_or(0)
    }
}
