use std::io::Read;
use std::path::Path;

use tokenizers::Tokenizer;

use crate::error::DollyError;
use crate::load::DollyRecord;
use crate::schema::Role;
use sweelol_records::py_strip;

pub const START_OF_TURN: &str = "<start_of_turn>";
pub const END_OF_TURN: &str = "<end_of_turn>";
/// Gemma 3 special-token ids (checked against the tokenizer in the tests).
pub const BOS_ID: u32 = 2;
pub const START_OF_TURN_ID: u32 = 105;
pub const END_OF_TURN_ID: u32 = 106;

const USER_HEAD: &str = "<start_of_turn>user\n";

/// The user message: the instruction, plus a blank line and the context when there is one,
/// trimmed as Gemma's chat template trims every message (`message['content'] | trim`).
pub fn user_text(r: &DollyRecord) -> String {
    if r.context.is_empty() {
        py_strip(&r.instruction).to_owned()
    } else {
        py_strip(&format!("{}\n\n{}", r.instruction, r.context)).to_owned()
    }
}

/// The last user message as the template writes it: a conversation's system text (followed by
/// a blank line) goes before the first user message, as Gemma 3's chat template puts it.
fn last_user_message(r: &DollyRecord) -> String {
    let system = r.earlier.first().filter(|t| t.role == Role::System);
    let first_user = !r.earlier.iter().any(|t| t.role == Role::User);
    match system {
        Some(sys) if first_user => format!("{}\n\n{}", sys.content, user_text(r)),
        _ => user_text(r),
    }
}

/// The text and loss flag of each part of a record, in order: prompt parts (`false`) and
/// target parts (`true`, every assistant turn: its trimmed text and `<end_of_turn>\n`). A
/// Dolly or Alpaca record is one prompt and one target.
fn segments(r: &DollyRecord) -> Vec<(String, bool)> {
    let mut out = Vec::new();
    let mut prompt = String::new();
    let mut system = r.earlier.first().filter(|t| t.role == Role::System).map(|t| format!("{}\n\n", t.content));
    for t in &r.earlier {
        match t.role {
            Role::System => {}
            Role::User => {
                let prefix = system.take().unwrap_or_default();
                prompt.push_str(&format!("{USER_HEAD}{prefix}{}{END_OF_TURN}\n{START_OF_TURN}model\n", py_strip(&t.content)));
            }
            Role::Assistant => {
                out.push((std::mem::take(&mut prompt), false));
                out.push((format!("{}{END_OF_TURN}\n", py_strip(&t.content)), true));
            }
        }
    }
    prompt.push_str(&format!("{USER_HEAD}{}{END_OF_TURN}\n{START_OF_TURN}model\n", last_user_message(r)));
    out.push((prompt, false));
    out.push((target_text(r), true));
    out
}

/// The prompt, i.e. the chat template applied to every turn before the response with
/// `add_generation_prompt`: `<start_of_turn>user\n{user}<end_of_turn>\n<start_of_turn>model\n`
/// for a single exchange. `<bos>` is not part of the text; the tokenizer's post-processor
/// adds it.
pub fn prompt_text(r: &DollyRecord) -> String {
    let mut parts = segments(r);
    parts.pop();
    parts.into_iter().map(|(text, _)| text).collect()
}

/// The training target: the trimmed response closed the way the template closes a model turn,
/// `{response}<end_of_turn>\n`. Training on `<end_of_turn>` teaches the model to stop.
pub fn target_text(r: &DollyRecord) -> String {
    format!("{}{END_OF_TURN}\n", py_strip(&r.response))
}

/// Loads a `tokenizer.json`, or a gzipped `tokenizer.json.gz` as shipped in shared/fixtures.
pub fn load_tokenizer(path: &Path) -> Result<Tokenizer, DollyError> {
    let io = |source| DollyError::Io {
        path: path.to_path_buf(),
        source,
    };
    let raw = std::fs::read(path).map_err(io)?;
    let bytes = if path.extension().is_some_and(|e| e == "gz") {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(io)?;
        out
    } else {
        raw
    };
    Tokenizer::from_bytes(&bytes).map_err(|e| DollyError::file(path, format!("tokenizer: {e}")))
}

/// Tokenization settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenizeConfig {
    /// Hard upper bound on `input_ids.len()`.
    pub max_len: usize,
    /// Response tokens guaranteed to survive truncation (fewer only if the response is shorter).
    pub min_response_tokens: usize,
    /// Also train on the prompt tokens (everything after `<bos>`).
    pub train_on_prompt: bool,
}

impl Default for TokenizeConfig {
    fn default() -> Self {
        TokenizeConfig {
            max_len: 512,
            min_response_tokens: 32,
            train_on_prompt: false,
        }
    }
}

/// One training sequence.
///
/// `loss_mask[i]` says whether `input_ids[i]` is a target token, i.e. whether the logits at
/// position `i - 1` are scored against `input_ids[i]`. `loss_mask[0]` (the `<bos>`) is always false
/// since nothing predicts it. With `train_on_prompt == false` exactly the target tokens
/// (`{response}<end_of_turn>\n`, and in a conversation every assistant turn's) are true;
/// with it, every token after `<bos>` is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenizedExample {
    pub input_ids: Vec<u32>,
    pub loss_mask: Vec<bool>,
    /// Number of prompt tokens (including `<bos>`); the target starts here.
    pub prompt_len: usize,
}

impl TokenizedExample {
    pub fn len(&self) -> usize {
        self.input_ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.input_ids.is_empty()
    }
}

/// Tokenizes one record: prompt with special tokens (so `<bos>` comes first), target without.
///
/// The two parts are encoded separately so the mask boundary is exact; Gemma's vocabulary has
/// no token that starts with a newline followed by text, so this matches encoding the joined
/// string.
///
/// Truncation policy when `prompt + target > max_len`:
/// 1. keep the whole prompt and cut the target from its end (the trailing `<end_of_turn>` is
///    lost first), as long as at least `min(min_response_tokens, target length)` target tokens fit;
/// 2. otherwise also cut the user message from its end — the context goes first, since it
///    follows the instruction — keeping the chat-template tokens around it intact, until the
///    prompt plus that many target tokens fits.
///
/// Errors if the template tokens alone leave no room, or if the tokenizer does not start with `<bos>`.
pub fn tokenize(
    r: &DollyRecord,
    tokenizer: &Tokenizer,
    cfg: &TokenizeConfig,
) -> Result<TokenizedExample, DollyError> {
    if r.earlier.iter().any(|t| t.role != Role::System) {
        return tokenize_conversation(r, tokenizer, cfg);
    }
    let tok_err = |e: tokenizers::Error| DollyError::Tokenizer(e.to_string());
    let prompt = prompt_text(r);
    let p_enc = tokenizer.encode(prompt.as_str(), true).map_err(tok_err)?;
    let mut prompt_ids = p_enc.get_ids().to_vec();
    if prompt_ids.first() != Some(&BOS_ID) {
        return Err(DollyError::Tokenizer(format!(
            "expected the prompt encoding to start with <bos> (id {BOS_ID}), got {:?}",
            prompt_ids.first()
        )));
    }
    let t_enc = tokenizer
        .encode(target_text(r).as_str(), false)
        .map_err(tok_err)?;
    let mut target_ids = t_enc.get_ids().to_vec();

    let max_len = cfg.max_len;
    if prompt_ids.len() + target_ids.len() > max_len {
        let keep_target = cfg.min_response_tokens.min(target_ids.len());
        let prompt_budget = max_len.checked_sub(keep_target).ok_or_else(|| {
            DollyError::Config(format!(
                "max_len {max_len} is smaller than min_response_tokens {keep_target}"
            ))
        })?;
        if prompt_ids.len() > prompt_budget {
            // Tokens lying inside the user message's byte span; the rest is template.
            let start = USER_HEAD.len();
            let end = start + last_user_message(r).len();
            let offsets = p_enc.get_offsets();
            let inside: Vec<usize> = (0..prompt_ids.len())
                .filter(|&i| offsets[i].0 >= start && offsets[i].1 <= end && i > 0)
                .collect();
            let excess = prompt_ids.len() - prompt_budget;
            let (Some(&first), Some(&last)) = (inside.first(), inside.last()) else {
                return Err(DollyError::Config(format!(
                    "max_len {max_len} cannot hold the prompt template"
                )));
            };
            if last + 1 - first != inside.len() || inside.len() < excess {
                return Err(DollyError::Config(format!(
                    "max_len {max_len}: prompt has {} tokens, only {} of them user text; cannot fit \
                     {keep_target} response tokens",
                    prompt_ids.len(),
                    inside.len()
                )));
            }
            prompt_ids.drain(last + 1 - excess..=last);
        }
        target_ids.truncate(max_len - prompt_ids.len());
    }

    let prompt_len = prompt_ids.len();
    let mut loss_mask = vec![cfg.train_on_prompt; prompt_len];
    loss_mask[0] = false;
    loss_mask.resize(prompt_len + target_ids.len(), true);
    let mut input_ids = prompt_ids;
    input_ids.extend_from_slice(&target_ids);
    Ok(TokenizedExample {
        input_ids,
        loss_mask,
        prompt_len,
    })
}

/// A conversation with earlier exchanges: every assistant turn is a target. When it does not
/// fit `max_len`, its oldest exchange (user turn and answer) is dropped, again until it fits
/// or only the last exchange is left, which is then cut as a single exchange is.
fn tokenize_conversation(r: &DollyRecord, tokenizer: &Tokenizer, cfg: &TokenizeConfig) -> Result<TokenizedExample, DollyError> {
    let tok_err = |e: tokenizers::Error| DollyError::Tokenizer(e.to_string());
    let mut input_ids = Vec::new();
    let mut loss_mask = Vec::new();
    let mut prompt_len = None;
    for (i, (text, target)) in segments(r).iter().enumerate() {
        let ids = tokenizer.encode(text.as_str(), i == 0).map_err(tok_err)?.get_ids().to_vec();
        if i == 0 && ids.first() != Some(&BOS_ID) {
            return Err(DollyError::Tokenizer(format!("expected the prompt encoding to start with <bos> (id {BOS_ID}), got {:?}", ids.first())));
        }
        if *target && prompt_len.is_none() {
            prompt_len = Some(input_ids.len());
        }
        loss_mask.extend(std::iter::repeat_n(*target || cfg.train_on_prompt, ids.len()));
        input_ids.extend(ids);
    }
    if input_ids.len() > cfg.max_len {
        let mut shorter = r.clone();
        let first_user = shorter.earlier.iter().position(|t| t.role == Role::User).expect("a conversation has a user turn");
        // The user turn and its answer (every earlier user turn has one).
        shorter.earlier.drain(first_user..first_user + 2);
        return tokenize(&shorter, tokenizer, cfg);
    }
    loss_mask[0] = false;
    // The first assistant turn starts the targets.
    let prompt_len = prompt_len.expect("a conversation has a target");
    Ok(TokenizedExample { input_ids, loss_mask, prompt_len })
}

/// [`tokenize`] for many records; an error names the record's index in `records`.
pub fn tokenize_all(
    records: &[DollyRecord],
    tokenizer: &Tokenizer,
    cfg: &TokenizeConfig,
) -> Result<Vec<TokenizedExample>, DollyError> {
    records
        .iter()
        .enumerate()
        .map(|(i, r)| {
            tokenize(r, tokenizer, cfg).map_err(|e| match e {
                DollyError::Config(m) => DollyError::Config(format!("record {i}: {m}")),
                DollyError::Tokenizer(m) => DollyError::Tokenizer(format!("record {i}: {m}")),
                other => other,
            })
        })
        .collect()
}
