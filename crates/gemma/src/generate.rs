//! Text generation with a KV cache: greedy, temperature and nucleus (top-p) sampling.

use burn::tensor::{Int, Tensor, TensorData};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::model::Gemma3;

#[derive(Clone, Debug)]
pub struct SamplingConfig {
    pub max_new_tokens: usize,
    /// 0 means greedy decoding.
    pub temperature: f64,
    /// Nucleus sampling mass; 1.0 keeps the whole distribution.
    pub top_p: f64,
    pub seed: u64,
    /// Generation stops after any of these ids (it is included in the output).
    pub stop_ids: Vec<u32>,
}

impl Default for SamplingConfig {
    fn default() -> Self {
        SamplingConfig { max_new_tokens: 64, temperature: 0.0, top_p: 1.0, seed: 0, stop_ids: vec![] }
    }
}

/// Picks the next token from a logits row.
pub fn sample_token(logits: &[f32], cfg: &SamplingConfig, rng: &mut StdRng) -> u32 {
    if cfg.temperature <= 0.0 {
        // First maximum wins, as torch.argmax does.
        let mut best = 0;
        for (i, &x) in logits.iter().enumerate() {
            if x > logits[best] {
                best = i;
            }
        }
        return best as u32;
    }
    let t = cfg.temperature as f32;
    let max = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let mut probs: Vec<(usize, f32)> =
        logits.iter().enumerate().map(|(i, &x)| (i, ((x - max) / t).exp())).collect();
    let total: f32 = probs.iter().map(|p| p.1).sum();
    probs.iter_mut().for_each(|p| p.1 /= total);
    probs.sort_by(|a, b| b.1.total_cmp(&a.1));
    // Keep the smallest prefix whose mass reaches top_p (always at least one token).
    let mut kept = 0;
    let mut mass = 0f32;
    for p in &probs {
        kept += 1;
        mass += p.1;
        if mass as f64 >= cfg.top_p {
            break;
        }
    }
    let mut r = rng.random::<f32>() * mass;
    for p in &probs[..kept] {
        r -= p.1;
        if r <= 0.0 {
            return p.0 as u32;
        }
    }
    probs[kept - 1].0 as u32
}

/// Generates up to `max_new_tokens` after `prompt`, calling `on_token` with each new id
/// as soon as it is chosen (for streaming). Returns the new ids.
pub fn generate(model: &Gemma3, prompt: &[u32], cfg: &SamplingConfig, on_token: impl FnMut(u32)) -> Vec<u32> {
    generate_with_prefix(model, None, prompt, cfg, on_token)
}

/// Refuses a request that does not fit the model's context before any work: `virtual_tokens`
/// (a prompt-tuning prefix) + `prompt_len` + `max_new_tokens` must not exceed
/// `max_position_embeddings` (Gemma-3-270m: 32,768), since positions past it have no
/// rotary embedding the model was trained with. The message names every number.
pub fn check_context(model: &Gemma3, virtual_tokens: usize, prompt_len: usize, max_new_tokens: usize) -> crate::Result<()> {
    let context = model.config.max_position_embeddings;
    let total = virtual_tokens + prompt_len + max_new_tokens;
    if total <= context {
        return Ok(());
    }
    let prefix = if virtual_tokens > 0 { format!(" after {virtual_tokens} virtual tokens") } else { String::new() };
    let room = context.saturating_sub(virtual_tokens + prompt_len);
    // A prompt that fills the context alone can only be shortened.
    let fix = if room == 0 {
        format!("shorten the prompt to at most {} tokens", context.saturating_sub(virtual_tokens + max_new_tokens.max(1)))
    } else {
        format!("shorten the prompt or ask for at most {room} new tokens")
    };
    Err(crate::GemmaError::Other(format!(
        "the prompt is {prompt_len} tokens{prefix} and --max-new-tokens is {max_new_tokens}: {total} positions, more than the model's context of {context} tokens; {fix}"
    )))
}

/// [`generate`] with trained virtual-token embeddings `[n, hidden]` before the prompt
/// (prompt tuning).
pub fn generate_with_prefix(
    model: &Gemma3,
    prefix: Option<&Tensor<2>>,
    prompt: &[u32],
    cfg: &SamplingConfig,
    mut on_token: impl FnMut(u32),
) -> Vec<u32> {
    let device = model.device();
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let mut cache = model.new_cache();
    let mut out = Vec::new();
    let mut input: Vec<u32> = prompt.to_vec();
    for _ in 0..cfg.max_new_tokens {
        let n = input.len();
        let ids: Vec<i64> = input.iter().map(|&x| x as i64).collect();
        let tokens = Tensor::<2, Int>::from_data(TensorData::new(ids, [1, n]), &device);
        // The virtual tokens go before the prompt only; later steps continue from the cache.
        let embeds = model.embed_with_prefix(prefix.filter(|_| cache.is_empty()), tokens);
        let last = embeds.dims()[1] - 1;
        let hidden = model.hidden_states(embeds, Some(&mut cache));
        let logits = model.logits_at(hidden, &[last]);
        let row = logits.into_data().convert::<f32>().try_into_vec::<f32>().expect("f32 logits");
        let next = sample_token(&row, cfg, &mut rng);
        out.push(next);
        on_token(next);
        if cfg.stop_ids.contains(&next) {
            break;
        }
        input = vec![next];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_takes_first_max_and_top_p_restricts() {
        let mut rng = StdRng::seed_from_u64(1);
        let cfg = SamplingConfig::default();
        assert_eq!(sample_token(&[0.0, 3.0, 3.0, 1.0], &cfg, &mut rng), 1);
        // With a tiny top_p only the most likely token can be drawn.
        let cfg = SamplingConfig { temperature: 1.0, top_p: 0.01, ..Default::default() };
        for _ in 0..50 {
            assert_eq!(sample_token(&[0.0, 2.0, 1.0], &cfg, &mut rng), 1);
        }
        // With temperature every token is eventually drawn.
        let cfg = SamplingConfig { temperature: 1.0, top_p: 1.0, ..Default::default() };
        let mut seen = [false; 3];
        for _ in 0..500 {
            seen[sample_token(&[0.0, 0.5, 1.0], &cfg, &mut rng) as usize] = true;
        }
        assert_eq!(seen, [true; 3]);
    }
}
