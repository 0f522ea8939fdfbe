//! Training data: tokenized examples, and the order in which the trainer visits them.

use sweelol_dolly::{bucketed_batches, Batch, DollyRecord, EvalSize, SubsetSpec, TokenizeConfig, TokenizedExample};
use tokenizers::Tokenizer;

use crate::config::DataSection;
use crate::error::{Result, TrainError};

/// Tokenized training and held-out examples.
#[derive(Clone, Debug, Default)]
pub struct Dataset {
    pub train: Vec<TokenizedExample>,
    pub eval: Vec<TokenizedExample>,
}

/// Draws `n_train + n_eval` Dolly records (seeded, optionally stratified), splits off the
/// held-out part, and tokenizes both with Gemma's chat template.
pub fn load_dolly(cfg: &DataSection, tokenizer: &Tokenizer) -> Result<Dataset> {
    tokenize_split(&select_dolly(cfg)?, cfg, tokenizer)
}

/// The training and held-out records a config asks for, drawn without a tokenizer, so that
/// asking for more than the file has fails before a model loads, naming the keys.
pub fn select_dolly(cfg: &DataSection) -> Result<Split> {
    let loaded = sweelol_dolly::load_records(&cfg.path, cfg.format)?;
    let records = loaded.records;
    if loaded.format != sweelol_dolly::DataFormat::Dolly || loaded.detected {
        let how = if loaded.detected { "told by its fields" } else { "as configured" };
        eprintln!("data: {}: {} records, format {} ({how})", cfg.path.display(), records.len(), loaded.format);
    }
    // Stratifying needs every record's category; outside Dolly a category is optional.
    let stratify = cfg.stratify && records.iter().all(|r| !r.category.is_empty());
    if cfg.stratify && !stratify {
        eprintln!("data: {}: some records have no category, so stratification is off", cfg.path.display());
    }
    let wanted = cfg.n_train + cfg.n_eval;
    let matching = records
        .iter()
        .filter(|r| cfg.categories.as_ref().is_none_or(|c| c.contains(&r.category)))
        .count();
    if wanted > matching {
        let filter = cfg.categories.as_ref().map_or(String::new(), |c| format!(" in the categories {}", c.join(", ")));
        return Err(TrainError::Settings(format!(
            "[data] n_train = {} plus n_eval = {} asks for {wanted} records, but {} has {matching}{filter}; lower n_train or n_eval",
            cfg.n_train,
            cfg.n_eval,
            cfg.path.display()
        )));
    }
    let spec = SubsetSpec {
        seed: cfg.seed,
        n: Some(wanted),
        stratify,
        categories: cfg.categories.clone(),
    };
    let chosen = sweelol_dolly::subset(&records, &spec)?;
    let (train, eval) = sweelol_dolly::train_eval_split(&chosen, EvalSize::Count(cfg.n_eval), cfg.seed)?;
    Ok(Split { train, eval })
}

/// Training and held-out records, not yet tokenized.
#[derive(Clone, Debug)]
pub struct Split {
    pub train: Vec<DollyRecord>,
    pub eval: Vec<DollyRecord>,
}

/// `split` tokenized with Gemma's chat template.
pub fn tokenize_split(split: &Split, cfg: &DataSection, tokenizer: &Tokenizer) -> Result<Dataset> {
    let tok = TokenizeConfig {
        max_len: cfg.max_len,
        min_response_tokens: cfg.min_response_tokens,
        train_on_prompt: cfg.train_on_prompt,
    };
    Ok(Dataset {
        train: sweelol_dolly::tokenize_all(&split.train, tokenizer, &tok)?,
        eval: sweelol_dolly::tokenize_all(&split.eval, tokenizer, &tok)?,
    })
}

/// The stream of micro-batches: epoch `e` is `bucketed_batches(train, batch_size, seed + e)`
/// (with its largest micro-batch moved to the front when asked: [`BatchStream::largest_first`]),
/// epochs follow one another, and optimizer step `s` takes micro-batches
/// `s·accum .. (s+1)·accum` of the stream. The position in the data is thus a function of
/// the step, which is what makes a resumed run see the same batches.
pub struct BatchStream<'a> {
    examples: &'a [TokenizedExample],
    batch_size: usize,
    seed: u64,
    per_epoch: usize,
    largest_first: bool,
    cached: Option<(usize, Vec<Batch>)>,
}

impl<'a> BatchStream<'a> {
    pub fn new(examples: &'a [TokenizedExample], batch_size: usize, seed: u64) -> Result<Self> {
        if examples.is_empty() {
            return Err(TrainError::Data("no training examples".into()));
        }
        let per_epoch = examples.len().div_ceil(batch_size);
        Ok(BatchStream { examples, batch_size, seed, per_epoch, largest_first: false, cached: None })
    }

    /// Each epoch starts with its largest micro-batch (most padded tokens, then most target
    /// tokens; the earliest of equals); the others keep their order
    /// (`[train] largest_batch_first`).
    pub fn largest_first(mut self, yes: bool) -> Self {
        self.largest_first = yes;
        self
    }

    pub fn batches_per_epoch(&self) -> usize {
        self.per_epoch
    }

    /// `(epoch, index within epoch)` of micro-batch `i` of the stream.
    pub fn position(&self, i: usize) -> (usize, usize) {
        (i / self.per_epoch, i % self.per_epoch)
    }

    /// Micro-batch `i` of the stream.
    pub fn get(&mut self, i: usize) -> Result<Batch> {
        let (epoch, k) = self.position(i);
        if self.cached.as_ref().map(|c| c.0) != Some(epoch) {
            let seed = self.seed.wrapping_add(epoch as u64);
            let mut batches = bucketed_batches(self.examples, self.batch_size, seed)?;
            if self.largest_first {
                move_largest_to_front(&mut batches);
            }
            self.cached = Some((epoch, batches));
        }
        Ok(self.cached.as_ref().expect("cached").1[k].clone())
    }
}

fn move_largest_to_front(batches: &mut [Batch]) {
    let size = |b: &Batch| (b.batch_size * b.seq_len, b.num_target_tokens());
    // `max_by_key` keeps the last of equals; the reversed scan makes it the first.
    if let Some(i) = (0..batches.len()).rev().max_by_key(|&i| size(&batches[i])) {
        batches[..=i].rotate_right(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 23 examples of lengths 3..=25 in a scrambled order, the response their last two tokens.
    fn examples() -> Vec<TokenizedExample> {
        (0..23u32)
            .map(|i| {
                let len = 3 + (i * 7 % 23) as usize;
                TokenizedExample { input_ids: vec![5; len], loss_mask: (0..len).map(|t| t + 2 >= len).collect(), prompt_len: len - 2 }
            })
            .collect()
    }

    #[test]
    fn largest_batch_first_starts_each_epoch_with_its_largest_and_keeps_the_rest_in_order() {
        let data = examples();
        let (batch, seed) = (4, 11);
        let mut plain = BatchStream::new(&data, batch, seed).unwrap();
        let mut largest = BatchStream::new(&data, batch, seed).unwrap().largest_first(true);
        let per_epoch = plain.batches_per_epoch();
        assert_eq!(per_epoch, 6);
        for epoch in 0..2 {
            let get = |s: &mut BatchStream, k: usize| s.get(epoch * per_epoch + k).unwrap();
            let plain: Vec<Batch> = (0..per_epoch).map(|k| get(&mut plain, k)).collect();
            let largest: Vec<Batch> = (0..per_epoch).map(|k| get(&mut largest, k)).collect();
            // Lengths 3..=25 sorted into 4s: the largest is 4 x 22 = 88 padded tokens, not
            // the short batch that holds the longest example (3 x 25 = 75).
            assert_eq!((largest[0].batch_size, largest[0].seq_len), (4, 22), "epoch {epoch}");
            let at = plain.iter().position(|b| *b == largest[0]).expect("the same batches");
            let mut rest = plain.clone();
            rest.remove(at);
            assert_eq!(&largest[1..], &rest[..], "epoch {epoch}: the others keep their order");
        }
        // Off by default: the stream is the bucketed order itself.
        assert_eq!(BatchStream::new(&data, batch, seed).unwrap().get(0).unwrap(), bucketed_batches(&data, batch, seed).unwrap()[0]);
    }
}
