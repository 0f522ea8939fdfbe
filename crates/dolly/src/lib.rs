//! sweelol-dolly: databricks-dolly-15k for supervised fine-tuning of Gemma 3.
//!
//! * [`load`] reads `.jsonl`, `.jsonl.gz` or Hugging Face `.parquet` and validates every row.
//! * [`subset`] / [`train_eval_split`] draw deterministic, seeded subsets.
//! * [`prompt_text`] / [`target_text`] apply Gemma's chat template and [`tokenize`] turns a record
//!   into ids plus a loss mask.
//! * [`bucketed_batches`] groups examples of similar length into padded batches.

mod batch;
mod error;
mod format;
mod load;
mod schema;
mod subset;

pub use batch::{bucketed_batches, Batch, BUCKET_CHUNK_BATCHES, PAD_ID};
pub use error::DollyError;
pub use format::{
    load_tokenizer, prompt_text, target_text, tokenize, tokenize_all, user_text, TokenizeConfig,
    TokenizedExample, BOS_ID, END_OF_TURN, END_OF_TURN_ID, START_OF_TURN, START_OF_TURN_ID,
};
pub use load::{category_counts, load, load_records, DollyRecord, Loaded, CATEGORIES};
pub use schema::{DataFormat, Role, Turn};
pub use subset::{subset, train_eval_split, EvalSize, SubsetSpec};
pub use sweelol_records::{py_strip, Place};
