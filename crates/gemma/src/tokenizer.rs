//! Gemma 3's tokenizer (the `tokenizers` crate on tokenizer.json, or derived from a
//! GGUF vocabulary) and its chat template.

use std::io::Read;
use std::path::Path;

use crate::error::{GemmaError, Result};

/// A chat turn for the Gemma template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChatMessage {
    /// `system`, `user` or `model` (`assistant` is accepted as `model`).
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn user(content: impl Into<String>) -> Self {
        ChatMessage { role: "user".into(), content: content.into() }
    }
    pub fn model(content: impl Into<String>) -> Self {
        ChatMessage { role: "model".into(), content: content.into() }
    }
}

#[derive(Clone)]
pub struct GemmaTokenizer {
    inner: tokenizers::Tokenizer,
    pub bos_id: u32,
    pub eos_id: u32,
    pub end_of_turn_id: u32,
    pub pad_id: u32,
}

impl std::fmt::Debug for GemmaTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GemmaTokenizer(vocab={})", self.inner.get_vocab_size(true))
    }
}

impl GemmaTokenizer {
    /// Loads tokenizer.json (or tokenizer.json.gz).
    pub fn from_file(path: &Path) -> Result<Self> {
        let err = |msg: String| GemmaError::Tokenizer { path: path.to_path_buf(), msg };
        let bytes = std::fs::read(path).map_err(|e| GemmaError::io(path, e))?;
        let bytes = if path.extension().is_some_and(|e| e == "gz") {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(&bytes[..])
                .read_to_end(&mut out)
                .map_err(|e| err(format!("bad gzip: {e}")))?;
            out
        } else {
            bytes
        };
        let inner = tokenizers::Tokenizer::from_bytes(&bytes).map_err(|e| err(e.to_string()))?;
        Self::new(inner).map_err(err)
    }

    /// Wraps a tokenizer that has Gemma's special tokens.
    pub fn new(inner: tokenizers::Tokenizer) -> std::result::Result<Self, String> {
        let id = |tok: &str| inner.token_to_id(tok).ok_or_else(|| format!("no `{tok}` token in vocabulary"));
        Ok(GemmaTokenizer {
            bos_id: id("<bos>")?,
            eos_id: id("<eos>")?,
            end_of_turn_id: id("<end_of_turn>")?,
            pad_id: id("<pad>")?,
            inner,
        })
    }

    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    /// Encodes text; `add_bos` prepends `<bos>` as the HF tokenizer does by default.
    pub fn encode(&self, text: &str, add_bos: bool) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode_fast(text, add_bos)
            .map_err(|e| GemmaError::Other(format!("tokenizer: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner
            .decode(ids, true)
            .map_err(|e| GemmaError::Other(format!("tokenizer: {e}")))
    }

    /// Decodes one token as raw text, special tokens included (for streaming).
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Gemma's chat template as text, without `<bos>` (encode with `add_bos = true`):
    /// `<start_of_turn>user\n…<end_of_turn>\n` per turn, a system message folded into
    /// the first user turn, and `<start_of_turn>model\n` to prompt the answer.
    pub fn chat_prompt(messages: &[ChatMessage], add_generation_prompt: bool) -> String {
        let mut out = String::new();
        let mut system: Option<&str> = None;
        for m in messages {
            let role = match m.role.as_str() {
                "system" => {
                    system = Some(&m.content);
                    continue;
                }
                "assistant" | "model" => "model",
                _ => "user",
            };
            out.push_str("<start_of_turn>");
            out.push_str(role);
            out.push('\n');
            if let Some(sys) = system.take() {
                out.push_str(sys);
                out.push_str("\n\n");
            }
            out.push_str(m.content.trim());
            out.push_str("<end_of_turn>\n");
        }
        if add_generation_prompt {
            out.push_str("<start_of_turn>model\n");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_template_text() {
        let p = GemmaTokenizer::chat_prompt(&[ChatMessage::user("Who are you?")], true);
        assert_eq!(p, "<start_of_turn>user\nWho are you?<end_of_turn>\n<start_of_turn>model\n");
        let sys = ChatMessage { role: "system".into(), content: "Be brief.".into() };
        let p = GemmaTokenizer::chat_prompt(&[sys, ChatMessage::user("Hi")], false);
        assert_eq!(p, "<start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n");
    }
}
