//! Gemma-3 text model for sweelol, on burn.
//!
//! - [`config`]: config.json in the hub's and transformers 5's styles.
//! - [`model`]: the decoder (RMSNorm, rotate-half RoPE, sliding-window GQA, GeGLU,
//!   tied head), logits at chosen positions, KV cache.
//! - [`weights`]: HF safetensors in/out and GGUF in.
//! - [`tokenizer`]: tokenizer.json or GGUF vocabulary, chat template.
//! - [`generate`]: greedy / temperature / top-p decoding.
//! - [`pretrained`]: load a model + tokenizer from any source name.
//! - [`kernels`]: every fast path (products, GeGLU, the LM head with its loss, evaluation
//!   log-probabilities, AdamW, host memory), each choosing host loops or tensor ops itself.
//! - [`shapes`]: fixed forward shapes for backends that compile kernels per shape.
//! - [`precision`]: f32 or bf16 matrix products (mixed precision, as PyTorch's autocast).

pub mod config;
pub mod error;
pub mod generate;
pub mod gguf;
pub mod kernels;
pub mod model;
pub mod precision;
pub mod pretrained;
pub mod shapes;
pub mod tokenizer;
pub mod weights;

pub use config::{GemmaConfig, LayerType};
pub use error::{GemmaError, Result};
pub use precision::Precision;
pub use pretrained::{load_pretrained, save_hf_dir, Pretrained};
pub use shapes::{ShapeBuckets, ShapeLog};
pub use model::{tied_head_logits, Gemma3, KvCache, Linear, LowRankDelta, RmsNorm};
pub use tokenizer::{ChatMessage, GemmaTokenizer};
pub use weights::{write_lazy_safetensors, HostTensor, LazyTensor, WeightMap};
