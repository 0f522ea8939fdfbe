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

/// The stream of micro-batches: epoch `e` is `bucketed_batches(train, batch_size, seed + e)`,
/// epochs follow one another, and optimizer step `s` takes micro-batches
/// `s·accum .. (s+1)·accum` of the stream. The position in the data is thus a function of
/// the step, which is what makes a resumed run see the same batches.
pub struct BatchStream<'a> {
    examples: &'a [TokenizedExample],
    batch_size: usize,
    seed: u64,
    per_epoch: usize,
    cached: Option<(usize, Vec<Batch>)>,
}

impl<'a> BatchStream<'a> {
    pub fn new(examples: &'a [TokenizedExample], batch_size: usize, seed: u64) -> Result<Self> {
        if examples.is_empty() {
            return Err(TrainError::Data("no training examples".into()));
        }
        let per_epoch = examples.len().div_ceil(batch_size);
        Ok(BatchStream { examples, batch_size, seed, per_epoch, cached: None })
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
            self.cached = Some((epoch, bucketed_batches(self.examples, self.batch_size, seed)?));
        }
        Ok(self.cached.as_ref().expect("cached").1[k].clone())
    }
}
