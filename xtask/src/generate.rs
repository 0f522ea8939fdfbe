//! `cargo xtask generate`: text from a prompt or a chat message, streamed token by token.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Result};
use burn::tensor::Device;
use sweelol_gemma::generate::{generate_with_prefix, SamplingConfig};
use sweelol_gemma::{ChatMessage, GemmaTokenizer, Precision};
use sweelol_study::model_loading::load_model;

/// What to generate from, and how.
pub struct Request {
    pub model: String,
    pub adapter: Option<PathBuf>,
    /// Raw prompt text (BOS is added).
    pub prompt: Option<String>,
    /// A user message, wrapped in Gemma's chat template.
    pub chat: Option<String>,
    pub max_new_tokens: usize,
    pub temperature: f64,
    pub top_p: f64,
    pub seed: u64,
}

/// Loads the model (with its adapter), generates, and prints the text as it comes.
pub fn run(req: &Request, device: &Device, precision: Precision, backend: &str) -> Result<()> {
    if req.prompt.is_none() && req.chat.is_none() {
        bail!("give --prompt TEXT or --chat MESSAGE");
    }
    let pre = load_model(&req.model, req.adapter.as_deref(), false, device, precision)?;
    let tok = &pre.tokenizer;
    let (text, stop_ids) = match (&req.prompt, &req.chat) {
        (Some(p), _) => (p.clone(), vec![tok.eos_id]),
        (None, Some(msg)) => {
            (GemmaTokenizer::chat_prompt(&[ChatMessage::user(msg.clone())], true), vec![tok.eos_id, tok.end_of_turn_id])
        }
        (None, None) => bail!("give --prompt TEXT or --chat MESSAGE"),
    };
    let ids = tok.encode(&text, true)?;
    pre.model.check_ids(&ids)?;
    let virtual_tokens = pre.prefix.as_ref().map_or(0, |p| p.dims()[0]);
    sweelol_gemma::generate::check_context(&pre.model, virtual_tokens, ids.len(), req.max_new_tokens)?;
    let cfg = SamplingConfig {
        max_new_tokens: req.max_new_tokens,
        temperature: req.temperature,
        top_p: req.top_p,
        seed: req.seed,
        stop_ids,
    };
    let start = Instant::now();
    let mut produced: Vec<u32> = Vec::new();
    let mut shown = String::new();
    let out = generate_with_prefix(&pre.model, pre.prefix.as_ref(), &ids, &cfg, |id| {
        // Stream by decoding the whole output so far and printing the new suffix, so
        // multi-token characters appear whole.
        produced.push(id);
        if let Ok(text) = tok.decode(&produced) {
            if let Some(new) = text.strip_prefix(shown.as_str()) {
                print!("{new}");
                std::io::stdout().flush().ok();
            }
            shown = text;
        }
    });
    println!();
    let secs = start.elapsed().as_secs_f64();
    eprintln!("[{} tokens in {secs:.1}s, {:.1} tok/s, backend {backend}]", out.len(), out.len() as f64 / secs);
    Ok(())
}
