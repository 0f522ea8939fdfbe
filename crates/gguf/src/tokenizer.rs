//! A Hugging Face tokenizer rebuilt from the SentencePiece vocabulary in GGUF metadata.
//!
//! GGUF files converted from SentencePiece models (`tokenizer.ggml.model = "llama"`) store the
//! pieces, their scores and token types, but no BPE merges. Hugging Face's converter turns such a
//! model into a BPE tokenizer whose merges are "every split of a piece into two pieces that are
//! both in the vocabulary", ranked by the merged piece's score. We rebuild exactly that
//! tokenizer.json in memory and load it, so encoding matches the reference tokenizer.json
//! token for token (verified on Gemma 3 against its published tokenizer.json).

use std::collections::HashMap;
use std::str::FromStr;

use serde_json::{json, Map, Value};
use tokenizers::Tokenizer;

use crate::{GgufError, GgufFile};

/// llama.cpp token types (`tokenizer.ggml.token_type`).
const TYPE_NORMAL: i64 = 1;
const TYPE_UNKNOWN: i64 = 2;
const TYPE_CONTROL: i64 = 3;
const TYPE_USER_DEFINED: i64 = 4;
const TYPE_BYTE: i64 = 6;

/// SentencePiece's word-boundary marker, which stands for a space inside pieces.
const SPACE_MARK: &str = "\u{2581}";

impl GgufFile {
    /// A `tokenizers::Tokenizer` equivalent to the model's original tokenizer.json.
    ///
    /// Control and user-defined tokens become added tokens (so `<start_of_turn>` in text encodes
    /// as one id); control and unknown tokens are flagged special (skipped by
    /// `decode(.., skip_special_tokens = true)`).
    pub fn tokenizer(&self) -> Result<Tokenizer, GgufError> {
        let json = self.tokenizer_json()?;
        Tokenizer::from_str(&json).map_err(|e| {
            self.tokenizer_error(
                "tokenizer.ggml.tokens",
                format!("the generated tokenizer.json was rejected: {e}"),
            )
        })
    }

    /// The tokenizer as Hugging Face tokenizer.json text (what [`GgufFile::tokenizer`] loads);
    /// handy for saving next to exported weights.
    pub fn tokenizer_json(&self) -> Result<String, GgufError> {
        let model = self.get_str("tokenizer.ggml.model")?;
        if model != "llama" {
            return Err(self.tokenizer_error(
                "tokenizer.ggml.model",
                format!("tokenizer model '{model}' is not supported (only SentencePiece 'llama' vocabularies are)"),
            ));
        }
        let tokens = self.get_str_array("tokenizer.ggml.tokens")?;
        let n = tokens.len();
        let types = match self.metadata().get("tokenizer.ggml.token_type") {
            Some(_) => self.get_i64_array("tokenizer.ggml.token_type")?,
            None => vec![TYPE_NORMAL; n],
        };
        self.check_len("tokenizer.ggml.token_type", types.len(), n)?;

        // llama.cpp's converter writes user-defined pieces with real spaces ("pre-normalized");
        // the SentencePiece model, and hence the reference tokenizer, has the space marker.
        let pieces: Vec<String> = tokens
            .iter()
            .zip(&types)
            .map(|(t, &ty)| {
                if ty == TYPE_USER_DEFINED {
                    t.replace(' ', SPACE_MARK)
                } else {
                    (*t).to_owned()
                }
            })
            .collect();
        // Like a Python dict built in id order, a duplicated piece maps to its last id.
        let vocab: HashMap<&str, u32> = pieces
            .iter()
            .enumerate()
            .map(|(id, p)| (p.as_str(), id as u32))
            .collect();

        let merges: Vec<(String, String)> = match self.metadata().get("tokenizer.ggml.merges") {
            Some(_) => self
                .get_str_array("tokenizer.ggml.merges")?
                .iter()
                .map(|m| {
                    m.split_once(' ')
                        .map(|(a, b)| (a.to_owned(), b.to_owned()))
                        .ok_or_else(|| {
                            self.tokenizer_error(
                                "tokenizer.ggml.merges",
                                format!("merge '{m}' is not two space-separated pieces"),
                            )
                        })
                })
                .collect::<Result<_, _>>()?,
            None => {
                let scores = match self.metadata().get("tokenizer.ggml.scores") {
                    Some(_) => self.get_f32_array("tokenizer.ggml.scores")?,
                    // Without scores, SentencePiece ids are in descending score order.
                    None => (0..n).map(|i| -(i as f32)).collect(),
                };
                self.check_len("tokenizer.ggml.scores", scores.len(), n)?;
                // llama.cpp stores -1000 for control and user-defined pieces; in the
                // SentencePiece model (which the reference merges were derived from) they score 0.
                let scores: Vec<f32> = scores
                    .iter()
                    .zip(&types)
                    .map(|(&s, &ty)| {
                        if ty == TYPE_CONTROL || ty == TYPE_USER_DEFINED {
                            0.0
                        } else {
                            s
                        }
                    })
                    .collect();
                derive_merges(&pieces, &scores, &vocab)
                    .into_iter()
                    .map(|(l, r)| (pieces[l as usize].clone(), pieces[r as usize].clone()))
                    .collect()
            }
        };

        let optional_id = |key: &str| -> Result<Option<u32>, GgufError> {
            match self.metadata().get(key) {
                None => Ok(None),
                Some(_) => {
                    let id = self.get_u32(key)?;
                    if id as usize >= n {
                        return Err(self.tokenizer_error(
                            key,
                            format!("token id {id} is outside the vocabulary of {n}"),
                        ));
                    }
                    Ok(Some(id))
                }
            }
        };
        let unk_id = match optional_id("tokenizer.ggml.unknown_token_id")? {
            Some(id) => Some(id),
            None => types
                .iter()
                .position(|&t| t == TYPE_UNKNOWN)
                .map(|i| i as u32),
        };
        let bos_id = optional_id("tokenizer.ggml.bos_token_id")?;
        let eos_id = optional_id("tokenizer.ggml.eos_token_id")?;
        let flag = |key: &str, default: bool| match self.metadata().get(key) {
            None => Ok(default),
            Some(_) => self.get_bool(key),
        };
        // llama.cpp's defaults for SentencePiece vocabularies.
        let add_bos = flag("tokenizer.ggml.add_bos_token", true)?;
        let add_eos = flag("tokenizer.ggml.add_eos_token", false)?;
        let add_space_prefix = flag("tokenizer.ggml.add_space_prefix", true)?;

        let added_tokens: Vec<Value> = types
            .iter()
            .enumerate()
            .filter(|(_, &ty)| ty == TYPE_CONTROL || ty == TYPE_USER_DEFINED || ty == TYPE_UNKNOWN)
            .map(|(id, &ty)| {
                json!({
                    "id": id,
                    "content": pieces[id],
                    "single_word": false,
                    "lstrip": false,
                    "rstrip": false,
                    "normalized": false,
                    "special": ty != TYPE_USER_DEFINED,
                })
            })
            .collect();

        let piece = |id: u32| pieces[id as usize].clone();
        let post_processor = self.template(add_bos, bos_id, add_eos, eos_id, &pieces)?;

        // Gemma-style vocabularies (no space prefix) keep spaces as marked pieces and split
        // nothing before BPE; Llama-style ones prepend a marker and strip it on decode.
        let replace_space =
            json!({"type": "Replace", "pattern": {"String": " "}, "content": SPACE_MARK});
        let (normalizer, pre_tokenizer) = if add_space_prefix {
            (
                json!({"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": SPACE_MARK}, replace_space]}),
                Value::Null,
            )
        } else {
            (
                replace_space,
                json!({"type": "Split", "pattern": {"String": " "}, "behavior": "MergedWithPrevious", "invert": false}),
            )
        };
        let mut decoders = vec![
            json!({"type": "Replace", "pattern": {"String": SPACE_MARK}, "content": " "}),
            json!({"type": "ByteFallback"}),
            json!({"type": "Fuse"}),
        ];
        if add_space_prefix {
            decoders.push(json!({"type": "Strip", "content": " ", "start": 1, "stop": 0}));
        }

        let vocab_json: Map<String, Value> = vocab
            .iter()
            .map(|(p, &id)| ((*p).to_owned(), id.into()))
            .collect();
        let merges_json: Vec<Value> = merges.into_iter().map(|(l, r)| json!([l, r])).collect();
        let doc = json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": added_tokens,
            "normalizer": normalizer,
            "pre_tokenizer": pre_tokenizer,
            "post_processor": post_processor,
            "decoder": {"type": "Sequence", "decoders": decoders},
            "model": {
                "type": "BPE",
                "dropout": null,
                "unk_token": unk_id.map(piece),
                "continuing_subword_prefix": null,
                "end_of_word_suffix": null,
                "fuse_unk": true,
                "byte_fallback": types.contains(&TYPE_BYTE),
                "ignore_merges": false,
                "vocab": vocab_json,
                "merges": merges_json,
            },
        });
        Ok(doc.to_string())
    }

    /// The TemplateProcessing post-processor that adds BOS/EOS as the metadata asks.
    fn template(
        &self,
        add_bos: bool,
        bos_id: Option<u32>,
        add_eos: bool,
        eos_id: Option<u32>,
        pieces: &[String],
    ) -> Result<Value, GgufError> {
        let mut specials = Map::new();
        let mut wrap =
            |add: bool, id: Option<u32>, key: &str| -> Result<Option<String>, GgufError> {
                if !add {
                    return Ok(None);
                }
                let id = id.ok_or_else(|| {
                    self.tokenizer_error(
                        key,
                        "the metadata asks to add this token but gives no id".into(),
                    )
                })?;
                let p = pieces[id as usize].clone();
                specials.insert(p.clone(), json!({"id": p, "ids": [id], "tokens": [p]}));
                Ok(Some(p))
            };
        let bos = wrap(add_bos, bos_id, "tokenizer.ggml.bos_token_id")?;
        let eos = wrap(add_eos, eos_id, "tokenizer.ggml.eos_token_id")?;
        if bos.is_none() && eos.is_none() {
            return Ok(Value::Null);
        }
        let seq = |name: &str, type_id: u32| -> Vec<Value> {
            let mut v = Vec::new();
            if let Some(b) = &bos {
                v.push(json!({"SpecialToken": {"id": b, "type_id": type_id}}));
            }
            v.push(json!({"Sequence": {"id": name, "type_id": type_id}}));
            if let Some(e) = &eos {
                v.push(json!({"SpecialToken": {"id": e, "type_id": type_id}}));
            }
            v
        };
        let single = seq("A", 0);
        let mut pair = seq("A", 0);
        pair.extend(seq("B", 1));
        Ok(
            json!({"type": "TemplateProcessing", "single": single, "pair": pair, "special_tokens": specials}),
        )
    }

    fn check_len(&self, key: &str, len: usize, n: usize) -> Result<(), GgufError> {
        if len == n {
            Ok(())
        } else {
            Err(self.tokenizer_error(
                key,
                format!("has {len} entries but tokenizer.ggml.tokens has {n}"),
            ))
        }
    }

    fn tokenizer_error(&self, key: &str, detail: String) -> GgufError {
        GgufError::Tokenizer {
            path: self.path().to_path_buf(),
            key: key.to_owned(),
            detail,
        }
    }
}

/// BPE merges implied by a SentencePiece vocabulary: every split of a piece into two in-vocab
/// pieces, best first. The order is Hugging Face's (`generate_merges` in transformers'
/// converter): merged piece's score descending, then longer left part, then longer right part
/// (lengths in characters), then piece id, left id, right id ascending.
fn derive_merges(pieces: &[String], scores: &[f32], vocab: &HashMap<&str, u32>) -> Vec<(u32, u32)> {
    struct Cand {
        score: f32,
        len_l: u32,
        len_r: u32,
        merged: u32,
        l: u32,
        r: u32,
    }
    let mut cands = Vec::new();
    for (merged, piece) in pieces.iter().enumerate() {
        let n_chars = piece.chars().count() as u32;
        for (len_l, (at, _)) in piece.char_indices().enumerate().skip(1) {
            let (l, r) = piece.split_at(at);
            if let (Some(&l), Some(&r)) = (vocab.get(l), vocab.get(r)) {
                cands.push(Cand {
                    // `+ 0.0` turns -0.0 into 0.0: they must tie, as in the reference (Gemma's
                    // top-scoring normal piece has score -0.0).
                    score: scores[merged] + 0.0,
                    len_l: len_l as u32,
                    len_r: n_chars - len_l as u32,
                    merged: merged as u32,
                    l,
                    r,
                });
            }
        }
    }
    cands.sort_unstable_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then(b.len_l.cmp(&a.len_l))
            .then(b.len_r.cmp(&a.len_r))
            .then(a.merged.cmp(&b.merged))
            .then(a.l.cmp(&b.l))
            .then(a.r.cmp(&b.r))
    });
    cands.into_iter().map(|c| (c.l, c.r)).collect()
}
