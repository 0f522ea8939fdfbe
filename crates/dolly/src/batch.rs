use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

use crate::error::DollyError;
use crate::format::TokenizedExample;

/// Gemma's `<pad>` id, used for right padding.
pub const PAD_ID: u32 = 0;

/// Examples are sorted by length within shuffled chunks of this many batches: enough to make
/// batches nearly uniform in length (little padding) while keeping the epoch order random.
pub const BUCKET_CHUNK_BATCHES: usize = 50;

/// A right-padded batch stored row-major as flat `[batch_size * seq_len]` vectors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub batch_size: usize,
    /// Length of the longest example in the batch.
    pub seq_len: usize,
    pub input_ids: Vec<u32>,
    /// True on real tokens, false on padding.
    pub attention_mask: Vec<bool>,
    /// The examples' loss masks; always false on padding.
    pub loss_mask: Vec<bool>,
    /// Index into the input slice of the example in each row.
    pub example_indices: Vec<usize>,
}

impl Batch {
    /// Row `i` as `(input_ids, attention_mask, loss_mask)`, each `seq_len` long.
    pub fn row(&self, i: usize) -> (&[u32], &[bool], &[bool]) {
        let r = i * self.seq_len..(i + 1) * self.seq_len;
        (
            &self.input_ids[r.clone()],
            &self.attention_mask[r.clone()],
            &self.loss_mask[r],
        )
    }

    /// Number of tokens the loss is computed on.
    pub fn num_target_tokens(&self) -> usize {
        self.loss_mask.iter().filter(|&&m| m).count()
    }

    /// This batch as consecutive parts of at most `max_tokens` padded tokens each (at least
    /// one row a part), every part padded to its own longest row; the batch itself when it
    /// fits or `max_tokens` is 0. `examples` is the slice the batch was made from. Training
    /// the parts as micro-batches of one step, each loss divided by the step's target
    /// tokens, gives the batch's gradient while holding only a part's activations at a time.
    pub fn split(&self, examples: &[TokenizedExample], max_tokens: usize) -> Vec<Batch> {
        if max_tokens == 0 || self.batch_size * self.seq_len <= max_tokens {
            return vec![self.clone()];
        }
        let rows = (max_tokens / self.seq_len.max(1)).max(1);
        self.example_indices.chunks(rows).map(|part| Batch::pad(examples, part.to_vec())).collect()
    }

    fn pad(examples: &[TokenizedExample], indices: Vec<usize>) -> Batch {
        let seq_len = indices
            .iter()
            .map(|&i| examples[i].len())
            .max()
            .unwrap_or(0);
        let total = indices.len() * seq_len;
        let mut batch = Batch {
            batch_size: indices.len(),
            seq_len,
            input_ids: Vec::with_capacity(total),
            attention_mask: Vec::with_capacity(total),
            loss_mask: Vec::with_capacity(total),
            example_indices: indices,
        };
        for &i in &batch.example_indices {
            let ex = &examples[i];
            let pad = seq_len - ex.len();
            batch.input_ids.extend_from_slice(&ex.input_ids);
            batch.input_ids.extend(std::iter::repeat_n(PAD_ID, pad));
            batch
                .attention_mask
                .extend(std::iter::repeat_n(true, ex.len()));
            batch.attention_mask.extend(std::iter::repeat_n(false, pad));
            batch.loss_mask.extend_from_slice(&ex.loss_mask);
            batch.loss_mask.extend(std::iter::repeat_n(false, pad));
        }
        batch
    }
}

/// Length-bucketed batches covering every example exactly once, deterministic for a seed.
///
/// The example order is shuffled with `StdRng::seed_from_u64(seed)`, cut into chunks of
/// `batch_size * BUCKET_CHUNK_BATCHES`, each chunk is sorted by length (stable) and cut into
/// batches, and finally the order of all batches is shuffled with the same generator. Only the
/// last batch may hold fewer than `batch_size` examples.
pub fn bucketed_batches(
    examples: &[TokenizedExample],
    batch_size: usize,
    seed: u64,
) -> Result<Vec<Batch>, DollyError> {
    if batch_size == 0 {
        return Err(DollyError::Config(
            "bucketed_batches: batch_size is 0".into(),
        ));
    }
    if let Some(i) = examples
        .iter()
        .position(|e| e.input_ids.len() != e.loss_mask.len())
    {
        return Err(DollyError::Config(format!(
            "bucketed_batches: example {i} has {} ids but {} mask entries",
            examples[i].input_ids.len(),
            examples[i].loss_mask.len()
        )));
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let mut order: Vec<usize> = (0..examples.len()).collect();
    order.shuffle(&mut rng);
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for chunk in order.chunks_mut(batch_size * BUCKET_CHUNK_BATCHES) {
        chunk.sort_by_key(|&i| examples[i].len());
        groups.extend(chunk.chunks(batch_size).map(<[usize]>::to_vec));
    }
    // Move the one short batch (from the last chunk) to the end before shuffling, then keep it
    // there, so every other batch is full.
    let short = groups.iter().position(|g| g.len() < batch_size);
    let tail = short.map(|i| groups.remove(i));
    groups.shuffle(&mut rng);
    groups.extend(tail);
    Ok(groups
        .into_iter()
        .map(|g| Batch::pad(examples, g))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An example of `len` tokens `base, base + 1, …`, its second half the response.
    fn example(base: u32, len: usize) -> TokenizedExample {
        TokenizedExample {
            input_ids: (0..len as u32).map(|t| base + t).collect(),
            loss_mask: (0..len).map(|t| t >= len / 2).collect(),
            prompt_len: len / 2,
        }
    }

    #[test]
    fn split_parts_hold_the_same_rows_each_cut_to_its_longest() {
        let exs = [example(100, 9), example(200, 3), example(300, 5), example(400, 2)];
        let batch = Batch::pad(&exs, vec![0, 1, 2, 3]);
        assert_eq!((batch.batch_size, batch.seq_len), (4, 9));
        assert_eq!(batch.split(&exs, 0), std::slice::from_ref(&batch), "0: no limit");
        assert_eq!(batch.split(&exs, 36), std::slice::from_ref(&batch), "it fits");

        // 20 tokens at 9 a row: two rows a part.
        let parts = batch.split(&exs, 20);
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0], Batch::pad(&exs, vec![0, 1]));
        assert_eq!((parts[1].batch_size, parts[1].seq_len), (2, 5), "cut to its longest row");
        assert_eq!(parts[1], Batch::pad(&exs, vec![2, 3]));
        let targets = |bs: &[Batch]| bs.iter().map(Batch::num_target_tokens).sum::<usize>();
        assert_eq!(targets(&parts), batch.num_target_tokens());

        // A limit below one row still trains every row, one at a time.
        let ones = batch.split(&exs, 4);
        assert_eq!(ones.len(), 4);
        assert!(ones.iter().zip(0..).all(|(b, i)| *b == Batch::pad(&exs, vec![i])));
    }
}
