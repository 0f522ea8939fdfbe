//! Log-likelihood scoring of multiple-choice documents, computing what
//! lm-evaluation-harness 0.4 computes for a Hugging Face causal LM:
//!
//! - trailing whitespace of the context moves to the continuation; context and
//!   context+continuation are tokenized with `<bos>` (lm-eval forces BOS for Gemma), and
//!   the continuation's ids are the joint encoding past the context's length;
//! - the model sees `context_ids + continuation_ids[..-1]`; log-softmax in f32; the
//!   continuation's token log-probs are summed;
//! - acc = argmax of the sums (first max wins), acc_norm = argmax of sum / len(choice in chars).
//!
//! Faster than lm-eval, with the same numbers: the context runs once and its KV cache is
//! shared by all choices, and the LM head runs only at scored positions.

use burn::tensor::{Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};
use sweelol_gemma::{Gemma3, GemmaTokenizer, Result, ShapeBuckets, ShapeLog};

use sweelol_gemma::kernels::log_probs::token_log_probs;
use crate::tasks::McDoc;

/// One document's outcome, as written to `<task>.jsonl`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct DocResult {
    pub doc_id: usize,
    pub gold: usize,
    pub loglikelihoods: Vec<f64>,
    pub acc: f64,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub acc_norm: Option<f64>,
}

/// Padded tokens (documents × longest context) one batched forward may hold.
const BATCH_TOKEN_BUDGET: usize = 1024;

/// Hidden rows waiting for the tied head, and what each is scored for.
///
/// Forwards only queue the final-normed rows whose next-token log-probabilities a document
/// needs; [`sums`](Self::sums) then runs the head over all of a group's rows at once
/// ([`token_log_probs`]). Each head product reads the whole `[262144, 640]` table (and
/// the CPU's GEMM repacks it), so scoring a group's MMLU answers in one product instead of
/// one per forward of four documents saves most of the head's time (`docs/perf.md`).
#[derive(Default)]
struct HeadQueue {
    rows: Vec<Tensor<2>>,
    queued: usize,
    /// `(row, target id, (document, choice))` per scored token, in scoring order.
    wanted: Vec<(usize, u32, (usize, usize))>,
}

impl HeadQueue {
    /// Queues `hidden`'s rows at `flat_positions` (over `[B·T]`); returns the first's index.
    fn push_rows(&mut self, hidden: Tensor<3>, flat_positions: &[usize]) -> usize {
        let [b, t, h] = hidden.dims();
        let n = flat_positions.len();
        let idx: Vec<i64> = flat_positions.iter().map(|&p| p as i64).collect();
        let idx = Tensor::<1, Int>::from_data(TensorData::new(idx, [n]), &hidden.device());
        self.rows.push(hidden.reshape([b * t, h]).select(0, idx));
        self.queued += n;
        self.queued - n
    }

    /// `log p(target | row)` adds to the log-likelihood of `owner` = (document, choice).
    fn score(&mut self, row: usize, target: u32, owner: (usize, usize)) {
        self.wanted.push((row, target, owner));
    }

    /// The summed log-likelihoods, `[document][choice]` for `choices[document]` choices
    /// (zeros for documents nothing was queued for). Sums run in scoring order, in f64.
    fn sums(self, model: &Gemma3, choices: &[usize]) -> Vec<Vec<f64>> {
        let mut sums: Vec<Vec<f64>> = choices.iter().map(|&n| vec![0.0; n]).collect();
        if self.queued == 0 {
            return sums;
        }
        let rows = Tensor::cat(self.rows, 0);
        let picks: Vec<(usize, u32)> = self.wanted.iter().map(|&(row, target, _)| (row, target)).collect();
        let logps = token_log_probs(model, rows, &picks);
        for ((_, _, (doc, choice)), lp) in self.wanted.iter().zip(logps) {
            sums[*doc][*choice] += lp;
        }
        sums
    }
}

/// lm-eval's `_encode_pair`: `(context_ids, continuation_ids)`.
pub fn encode_pair(tok: &GemmaTokenizer, context: &str, continuation: &str) -> Result<(Vec<u32>, Vec<u32>)> {
    // Python's rstrip(): Rust's whitespace set lacks U+001C..U+001F.
    let trimmed = sweelol_records::py_rstrip(context);
    let (context, continuation) = if trimmed.len() < context.len() {
        (trimmed, format!("{}{}", &context[trimmed.len()..], continuation))
    } else {
        (context, continuation.to_string())
    };
    let whole = tok.encode(&format!("{context}{continuation}"), true)?;
    let ctx = tok.encode(context, true)?;
    let cont = whole.get(ctx.len()..).unwrap_or_default().to_vec();
    Ok((ctx, cont))
}

/// A request cut to fit `max_length` as lm-eval cuts it: of `context + continuation`, the
/// last `max_length + 1` tokens are kept (the context loses its start, `<bos>` first), and
/// the input is all of them but the last. A continuation that alone does not fit is refused.
pub fn truncate_left(ctx: Vec<u32>, cont: Vec<u32>, max_length: usize) -> Result<(Vec<u32>, Vec<u32>)> {
    let total = ctx.len() + cont.len();
    if total <= max_length + 1 {
        return Ok((ctx, cont));
    }
    if cont.len() > max_length {
        return Err(sweelol_gemma::GemmaError::Other(format!(
            "a continuation of {} tokens does not fit the model's context of {max_length} tokens",
            cont.len()
        )));
    }
    let cut = total - (max_length + 1);
    Ok((ctx[cut..].to_vec(), cont))
}

/// Whether every pair has the first pair's context (so it runs once, through the cache).
fn shared_context(pairs: &[(Vec<u32>, Vec<u32>)]) -> bool {
    pairs.iter().all(|(ctx, _)| *ctx == pairs[0].0)
}

/// Index of the first maximum, as numpy's argmax.
pub fn argmax(xs: &[f64]) -> usize {
    let mut best = 0;
    for (i, &x) in xs.iter().enumerate() {
        if x > xs[best] {
            best = i;
        }
    }
    best
}

/// Scores documents with one model (and optionally trained virtual-token embeddings
/// placed before `<bos>`, for prompt tuning).
pub struct Scorer<'a> {
    pub model: &'a Gemma3,
    pub tokenizer: &'a GemmaTokenizer,
    /// `[n_virtual, hidden]` in the scaled embedding space.
    pub prefix: Option<Tensor<2>>,
    /// Forward shapes. [`ShapeBuckets::EXACT`] (the default) scores shared contexts once
    /// through the KV cache; any other bucketing scores every document as whole padded
    /// sequences (lm-eval's own way), so a JIT backend sees only a few shapes.
    pub shapes: ShapeBuckets,
    /// The `[rows, seq_len]` shapes of every forward so far.
    pub shape_log: ShapeLog,
    /// The longest input a request may have (lm-eval's `max_length`: the model's
    /// `max_position_embeddings`). Longer requests lose the start of their context, as
    /// lm-eval cuts them: the last `max_length + 1` tokens of context and continuation are
    /// kept, and the last of those is only predicted.
    pub max_length: usize,
}

impl<'a> Scorer<'a> {
    pub fn new(model: &'a Gemma3, tokenizer: &'a GemmaTokenizer) -> Self {
        Scorer {
            model,
            tokenizer,
            prefix: None,
            shapes: ShapeBuckets::EXACT,
            shape_log: ShapeLog::default(),
            max_length: model.config.max_position_embeddings,
        }
    }

    fn fixed_shapes(&self) -> bool {
        self.shapes != ShapeBuckets::EXACT
    }

    fn embed(&self, ids: &[u32], with_prefix: bool) -> Tensor<3> {
        let device = self.model.device();
        let data: Vec<i64> = ids.iter().map(|&x| x as i64).collect();
        let tokens = Tensor::<2, Int>::from_data(TensorData::new(data, [1, ids.len()]), &device);
        self.model.embed_with_prefix(self.prefix.as_ref().filter(|_| with_prefix), tokens)
    }

    /// Summed log-probabilities of each continuation after `context`.
    pub fn loglikelihoods(&self, context: &str, continuations: &[String]) -> Result<Vec<f64>> {
        let pairs: Vec<(Vec<u32>, Vec<u32>)> = continuations.iter().map(|c| self.encode_pair(context, c)).collect::<Result<_>>()?;
        if !shared_context(&pairs) {
            return Ok(self.full_sequences(&pairs));
        }
        let mut queue = HeadQueue::default();
        self.queue_continuations(&mut queue, 0, &pairs);
        Ok(queue.sums(self.model, &[continuations.len()]).remove(0))
    }

    /// Runs the decoder for encoded `(context, continuation)` pairs that share the first
    /// pair's context and queues the rows that score them, as document `doc` (see
    /// [`HeadQueue`]).
    fn queue_continuations(&self, queue: &mut HeadQueue, doc: usize, pairs: &[(Vec<u32>, Vec<u32>)]) {
        let model = self.model;
        let device = model.device();
        let ctx_ids: &[u32] = pairs.first().map_or(&[], |(ctx, _)| ctx);
        let conts: Vec<&Vec<u32>> = pairs.iter().map(|(_, cont)| cont).collect();

        // 1. The shared context, once: its last position predicts every first token.
        let mut cache = model.new_cache();
        self.shape_log.record(1, ctx_ids.len());
        let hidden = model.hidden_states(self.embed(ctx_ids, true), Some(&mut cache));
        let last = hidden.dims()[1] - 1;
        let row = queue.push_rows(hidden, &[last]);
        for (c, cont) in conts.iter().enumerate() {
            queue.score(row, cont[0], (doc, c));
        }

        // 2. Longer continuations, batched on the repeated cache, right-padded.
        let longer: Vec<usize> = (0..conts.len()).filter(|&i| conts[i].len() > 1).collect();
        if !longer.is_empty() {
            let width = longer.iter().map(|&i| conts[i].len() - 1).max().unwrap();
            let mut ids = Vec::with_capacity(longer.len() * width);
            let mut positions = Vec::new();
            let mut wanted = Vec::new();
            for (b, &i) in longer.iter().enumerate() {
                let input = &conts[i][..conts[i].len() - 1];
                ids.extend(input.iter().map(|&x| x as i64));
                ids.extend(std::iter::repeat_n(self.tokenizer.pad_id as i64, width - input.len()));
                for t in 0..input.len() {
                    positions.push(b * width + t);
                    wanted.push((conts[i][t + 1], (doc, i)));
                }
            }
            let tokens = Tensor::<2, Int>::from_data(TensorData::new(ids, [longer.len(), width]), &device);
            self.shape_log.record(longer.len(), width);
            let mut batch_cache = cache.repeat_batch(longer.len());
            let hidden = model.hidden_states(model.embed(tokens), Some(&mut batch_cache));
            let first = queue.push_rows(hidden, &positions);
            for (k, (target, owner)) in wanted.into_iter().enumerate() {
                queue.score(first + k, target, owner);
            }
        }
    }

    /// Scores one document; `with_norm` adds acc_norm (HellaSwag).
    pub fn score_doc(&self, doc: &McDoc, with_norm: bool) -> Result<DocResult> {
        let continuations: Vec<String> = (0..doc.choices.len()).map(|i| doc.continuation(i)).collect();
        let ll = self.loglikelihoods(&doc.context, &continuations)?;
        Ok(doc_result(doc, ll, with_norm))
    }

    /// [`encode_pair`] with ids checked against the model's vocabulary, a continuation
    /// that adds no token refused (it would have no log-likelihood to score), and a request
    /// longer than [`max_length`](Self::max_length) cut from the left ([`truncate_left`]).
    fn encode_pair(&self, context: &str, continuation: &str) -> Result<(Vec<u32>, Vec<u32>)> {
        let (ctx, cont) = encode_pair(self.tokenizer, context, continuation)?;
        if cont.is_empty() {
            return Err(sweelol_gemma::GemmaError::Other(format!(
                "continuation {continuation:?} encodes to no tokens after context"
            )));
        }
        let (ctx, cont) = truncate_left(ctx, cont, self.max_length)?;
        self.model.check_ids(&ctx)?;
        self.model.check_ids(&cont)?;
        Ok((ctx, cont))
    }

    /// Scores several documents, in order. Those whose answers are all one token after a
    /// shared context (MMLU's letters) run in right-padded forwards of their contexts —
    /// more work per operation keeps every core busy, and causal attention means the
    /// padding never reaches a real position; the others run one by one through the KV
    /// cache. The head then scores every queued row of the group at once ([`HeadQueue`]).
    pub fn score_docs(&self, docs: &[McDoc], with_norm: bool) -> Result<Vec<DocResult>> {
        let mut results: Vec<Option<DocResult>> = vec![None; docs.len()];
        let mut queue = HeadQueue::default();
        let mut batch: Vec<(usize, Vec<u32>, Vec<u32>)> = Vec::new();
        for (i, doc) in docs.iter().enumerate() {
            let pairs: Vec<(Vec<u32>, Vec<u32>)> = (0..doc.choices.len())
                .map(|c| self.encode_pair(&doc.context, &doc.continuation(c)))
                .collect::<Result<_>>()?;
            let one_token = pairs.iter().all(|(_, cont)| cont.len() == 1) && shared_context(&pairs);
            if one_token && !pairs[0].0.is_empty() {
                let ids = pairs.iter().map(|(_, cont)| cont[0]).collect();
                batch.push((i, pairs[0].0.clone(), ids));
            } else if self.fixed_shapes() || !shared_context(&pairs) {
                results[i] = Some(doc_result(doc, self.full_sequences(&pairs), with_norm));
            } else {
                self.queue_continuations(&mut queue, i, &pairs);
            }
        }
        // Shortest first, and only as many per forward as keep the padded size within
        // the budget: padding a 200-token context to 900 would cost more than it saves.
        batch.sort_by_key(|(_, ctx, _)| ctx.len());
        let mut rest = &batch[..];
        while !rest.is_empty() {
            let most = if self.shapes.rows > 0 { self.shapes.rows } else { rest.len() };
            let take = (1..=rest.len().min(most))
                .take_while(|&k| k == 1 || k * rest[k - 1].1.len() <= BATCH_TOKEN_BUDGET)
                .last()
                .unwrap_or(1);
            self.queue_one_token(&mut queue, &rest[..take]);
            rest = &rest[take..];
        }
        let choices: Vec<usize> = docs.iter().map(|d| d.choices.len()).collect();
        for (i, ll) in queue.sums(self.model, &choices).into_iter().enumerate() {
            if results[i].is_none() {
                results[i] = Some(doc_result(&docs[i], ll, with_norm));
            }
        }
        Ok(results.into_iter().map(|r| r.expect("every document scored")).collect())
    }

    /// One forward of the contexts of `(document, context ids, one answer id per choice)`;
    /// queues each context's last row, scored for every answer.
    fn queue_one_token(&self, queue: &mut HeadQueue, batch: &[(usize, Vec<u32>, Vec<u32>)]) {
        let model = self.model;
        let contexts: Vec<&[u32]> = batch.iter().map(|(_, ctx, _)| ctx.as_slice()).collect();
        let (tokens, width) = self.padded_tokens(&contexts);
        let hidden = model.hidden_states(model.embed_with_prefix(self.prefix.as_ref(), tokens), None);
        let total = hidden.dims()[1];
        let offset = total - width; // virtual tokens, if any, come first
        let last: Vec<usize> = batch.iter().enumerate().map(|(b, (_, ctx, _))| b * total + offset + ctx.len() - 1).collect();
        let first = queue.push_rows(hidden, &last);
        for (b, (doc, _, answers)) in batch.iter().enumerate() {
            for (c, &answer) in answers.iter().enumerate() {
                queue.score(first + b, answer, (*doc, c));
            }
        }
    }
}

impl Scorer<'_> {
    /// `[rows, width]` token ids: each sequence right-padded to the bucketed width of the
    /// longest, then whole pad rows up to the fixed row count; the shape is logged.
    fn padded_tokens(&self, sequences: &[&[u32]]) -> (Tensor<2, Int>, usize) {
        let width = self.shapes.seq_len(sequences.iter().map(|s| s.len()).max().unwrap_or(0));
        let rows = self.shapes.batch_rows(sequences.len());
        let pad = self.tokenizer.pad_id as i64;
        let mut ids = Vec::with_capacity(rows * width);
        for seq in sequences {
            ids.extend(seq.iter().map(|&x| x as i64));
            ids.extend(std::iter::repeat_n(pad, width - seq.len()));
        }
        ids.resize(rows * width, pad);
        self.shape_log.record(rows, width);
        (Tensor::from_data(TensorData::new(ids, [rows, width]), &self.model.device()), width)
    }

    /// Summed log-likelihood of each `(context, continuation)` pair, each scored as one
    /// right-padded sequence `context + continuation[..n-1]` (no KV cache): the forward
    /// shapes are the buckets'. Pairs go `shapes.rows` to a forward (all at once if 0).
    fn full_sequences(&self, pairs: &[(Vec<u32>, Vec<u32>)]) -> Vec<f64> {
        let per_forward = if self.shapes.rows > 0 { self.shapes.rows } else { pairs.len().max(1) };
        pairs.chunks(per_forward).flat_map(|chunk| self.full_sequence_forward(chunk)).collect()
    }

    fn full_sequence_forward(&self, pairs: &[(Vec<u32>, Vec<u32>)]) -> Vec<f64> {
        let model = self.model;
        let inputs: Vec<Vec<u32>> =
            pairs.iter().map(|(ctx, cont)| ctx.iter().chain(&cont[..cont.len() - 1]).copied().collect()).collect();
        let (tokens, width) = self.padded_tokens(&inputs.iter().map(Vec::as_slice).collect::<Vec<_>>());
        let hidden = model.hidden_states(model.embed_with_prefix(self.prefix.as_ref(), tokens), None);
        let total = hidden.dims()[1];
        let offset = total - width; // virtual tokens, if any, come first
        // One head pass for all pairs: pair `b` is choice `b` of one document.
        let mut queue = HeadQueue::default();
        let mut wanted = Vec::new();
        let mut positions = Vec::new();
        for (b, (ctx, cont)) in pairs.iter().enumerate() {
            for (k, &id) in cont.iter().enumerate() {
                positions.push(b * total + offset + ctx.len() - 1 + k);
                wanted.push((id, (0, b)));
            }
        }
        let first = queue.push_rows(hidden, &positions);
        for (k, (target, owner)) in wanted.into_iter().enumerate() {
            queue.score(first + k, target, owner);
        }
        queue.sums(model, &[pairs.len()]).remove(0)
    }
}

/// acc (and acc_norm when asked: log-likelihood per character of the choice) of a document.
fn doc_result(doc: &McDoc, ll: Vec<f64>, with_norm: bool) -> DocResult {
    let acc = (argmax(&ll) == doc.gold) as u8 as f64;
    let acc_norm = with_norm.then(|| {
        let normed: Vec<f64> = ll.iter().zip(&doc.choices).map(|(l, c)| l / c.chars().count() as f64).collect();
        (argmax(&normed) == doc.gold) as u8 as f64
    });
    DocResult { doc_id: doc.doc_id, gold: doc.gold, loglikelihoods: ll, acc, acc_norm }
}
