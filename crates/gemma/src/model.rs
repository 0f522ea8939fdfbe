//! The Gemma-3 text decoder, written to compute exactly what transformers'
//! `Gemma3ForCausalLM` computes (f32).
//!
//! Per layer: `x += post_attn_norm(attn(input_norm(x)))`, then
//! `x += post_ffw_norm(mlp(pre_ffw_norm(x)))`. Attention normalises q and k per head
//! (RMSNorm) before rotate-half RoPE, uses grouped-query heads and, on sliding layers,
//! a causal window in which query i sees keys i-W+1 ..= i. The LM head is the
//! embedding matrix (tied), and embeddings are scaled by sqrt(hidden_size).

use burn::module::{Module, Param};
use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::config::{GemmaConfig, LayerType};
use crate::kernels::rope::rope;
use crate::precision::Precision;

/// Gemma's RMSNorm: `x / sqrt(mean(x²) + eps) * (1 + w)`. The stored weight is the
/// offset from one, as in transformers (llama.cpp stores `1 + w`).
#[derive(Module, Debug)]
pub struct RmsNorm {
    pub weight: Param<Tensor<1>>,
    #[module(skip)]
    pub eps: f64,
}

impl RmsNorm {
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        crate::kernels::norm::rms_norm(x, self.weight.val(), self.eps)
    }
}

/// A low-rank update `x·A·B·scale` carried by a [`Linear`]; LoRA fills it in.
#[derive(Module, Debug)]
pub struct LowRankDelta {
    /// `[in, r]`, PEFT's `lora_A.weight` transposed.
    pub a: Param<Tensor<2>>,
    /// `[r, out]`, PEFT's `lora_B.weight` transposed.
    pub b: Param<Tensor<2>>,
    #[module(skip)]
    pub scale: f64,
    /// Dropout probability on the adapter's input while training.
    #[module(skip)]
    pub dropout: f64,
}

/// A bias-free linear layer stored as `[in, out]` (HF stores `[out, in]`), with an
/// optional low-rank delta so adapters plug in without another model type.
#[derive(Module, Debug)]
pub struct Linear {
    pub weight: Param<Tensor<2>>,
    pub delta: Option<LowRankDelta>,
    /// What its products (and the delta's) compute in; see [`Gemma3::set_precision`].
    #[module(skip)]
    pub precision: Precision,
}

impl Linear {
    pub fn new(weight: Tensor<2>) -> Self {
        Linear { weight: Param::from_tensor(weight), delta: None, precision: Precision::F32 }
    }

    /// `x`: `[B, T, in]`. The batch and time axes are merged into one matrix product
    /// (burn keeps `[B, T, in]` batched when `T` fills its row tiles, a GPU heuristic: on
    /// the CPU that packs the weight once per sequence and, in backward, makes one weight
    /// gradient per sequence and then sums them).
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let [b, t, d_in] = x.dims();
        let x = x.reshape([b * t, d_in]);
        let base = self.precision.linear(x.clone(), self.weight.val());
        let y = match &self.delta {
            None => base,
            Some(d) => {
                // Dropout only while a backward pass can follow (training).
                let x = if d.dropout > 0.0 && x.is_autodiff() { crate::kernels::host::dropout(x, d.dropout) } else { x };
                // The scale goes on `B` (`[r, out]`), not on the `[tokens, out]` product.
                let low = self.precision.matmul(x, d.a.val());
                base + self.precision.matmul(low, d.b.val() * d.scale)
            }
        };
        let d_out = y.dims()[1];
        y.reshape([b, t, d_out])
    }

    pub fn d_in(&self) -> usize {
        self.weight.val().dims()[0]
    }

    pub fn d_out(&self) -> usize {
        self.weight.val().dims()[1]
    }
}

/// The tables of the rotate-half rotary embedding (not burn's interleaved variant), which
/// [`rope`] applies.
#[derive(Clone, Debug)]
pub struct Rope {
    /// `inv_freq[i] = base^(-2i/d)`, computed in f32 as transformers does.
    inv_freq: Vec<f32>,
}

impl Rope {
    pub fn new(base: f64, head_dim: usize) -> Self {
        let inv_freq = (0..head_dim / 2)
            .map(|i| {
                let exponent = (2 * i) as f32 / head_dim as f32;
                1.0 / (base as f32).powf(exponent)
            })
            .collect();
        Rope { inv_freq }
    }

    /// `(cos, sin)` of shape `[1, 1, len, head_dim]` for positions `start..start+len`.
    fn tables(&self, start: usize, len: usize, device: &Device) -> (Tensor<4>, Tensor<4>) {
        let half = self.inv_freq.len();
        let dim = half * 2;
        let mut cos = Vec::with_capacity(len * dim);
        let mut sin = Vec::with_capacity(len * dim);
        for p in start..start + len {
            // The angle is an f32 product, then cos/sin, matching torch's f32 path.
            let angles: Vec<f32> = self.inv_freq.iter().map(|f| f * p as f32).collect();
            for _ in 0..2 {
                cos.extend(angles.iter().map(|a| (*a as f64).cos() as f32));
                sin.extend(angles.iter().map(|a| (*a as f64).sin() as f32));
            }
        }
        let shape = [1, 1, len, dim];
        (
            Tensor::from_data(TensorData::new(cos, shape), device),
            Tensor::from_data(TensorData::new(sin, shape), device),
        )
    }
}

/// Keys and values of earlier positions, per layer, for incremental decoding.
#[derive(Clone, Debug, Default)]
pub struct KvCache {
    layers: Vec<Option<(Tensor<4>, Tensor<4>)>>,
    len: usize,
}

impl KvCache {
    pub fn new(num_layers: usize) -> Self {
        KvCache { layers: vec![None; num_layers], len: 0 }
    }

    /// Number of positions already cached.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The cache of a batch-1 prefix, repeated so `n` sequences can continue from it.
    pub fn repeat_batch(&self, n: usize) -> KvCache {
        let layers = self
            .layers
            .iter()
            .map(|slot| slot.as_ref().map(|(k, v)| (k.clone().repeat_dim(0, n), v.clone().repeat_dim(0, n))))
            .collect();
        KvCache { layers, len: self.len }
    }
}

#[derive(Module, Debug)]
pub struct Attention {
    pub q_proj: Linear,
    pub k_proj: Linear,
    pub v_proj: Linear,
    pub o_proj: Linear,
    pub q_norm: RmsNorm,
    pub k_norm: RmsNorm,
    #[module(skip)]
    pub num_heads: usize,
    #[module(skip)]
    pub num_kv_heads: usize,
    #[module(skip)]
    pub head_dim: usize,
    #[module(skip)]
    pub scaling: f64,
    /// What `q·kᵀ` and `probs·v` compute in (the softmax between them stays f32).
    #[module(skip)]
    pub precision: Precision,
}

/// Longer inputs than this many positions compute attention this many query rows at a
/// time (prefill of a long prompt): scores take `rows × keys`, not `T × T` (a 32,768-token
/// prompt would need 16 GiB of f32 scores per head group at once). Shorter ones, every
/// training batch and scoring request among them, run as one block.
pub const ATTENTION_BLOCK_ROWS: usize = 2048;

/// What a layer needs to know about the positions it runs on: RoPE tables
/// `[1, 1, T, head_dim]`, and the additive mask `[1, 1, T, T_past + T]` (or, for inputs
/// attended in blocks, what each block's mask is made from).
struct Positions {
    cos: Tensor<4>,
    sin: Tensor<4>,
    /// The whole mask, for inputs attended in one block.
    mask: Option<Tensor<4>>,
    past: usize,
    window: Option<usize>,
    block: usize,
}

impl Attention {
    /// `x`: `[B, T, H]`.
    fn forward(
        &self,
        x: Tensor<3>,
        pos: &Positions,
        cache: Option<&mut Option<(Tensor<4>, Tensor<4>)>>,
    ) -> Tensor<3> {
        let [b, t, _] = x.dims();
        let (nh, nkv, hd) = (self.num_heads, self.num_kv_heads, self.head_dim);
        let heads = |proj: &Linear, n: usize| proj.forward(x.clone()).reshape([b, t, n, hd]);

        // RoPE runs on `[B, T, heads, head_dim]`, where each position's heads lie together.
        let q = rope(self.q_norm.forward(heads(&self.q_proj, nh)), &pos.cos, &pos.sin).swap_dims(1, 2);
        let mut k = rope(self.k_norm.forward(heads(&self.k_proj, nkv)), &pos.cos, &pos.sin).swap_dims(1, 2);
        let mut v = heads(&self.v_proj, nkv).swap_dims(1, 2);
        if let Some(slot) = cache {
            if let Some((k_past, v_past)) = slot.take() {
                k = Tensor::cat(vec![k_past, k], 2);
                v = Tensor::cat(vec![v_past, v], 2);
            }
            *slot = Some((k.clone(), v.clone()));
        }
        let out = match &pos.mask {
            Some(mask) => self.attend(q, k, v, mask.clone()),
            None => {
                // A block of query rows sees the keys up to its last row and, on sliding
                // layers, none before its first row's window: only those are multiplied.
                let device = x.device();
                let nkv_keys = |t: Tensor<4>, keys: std::ops::Range<usize>| t.slice([0..b, 0..nkv, keys, 0..hd]);
                let blocks: Vec<Tensor<4>> = (0..t)
                    .step_by(pos.block)
                    .map(|s| {
                        let e = (s + pos.block).min(t);
                        let keys = pos.window.map_or(0, |w| (pos.past + s + 1).saturating_sub(w))..pos.past + e;
                        let mask = attention_mask(pos.past, s..e, keys.clone(), pos.window, &device);
                        let q = q.clone().slice([0..b, 0..nh, s..e, 0..hd]);
                        self.attend(q, nkv_keys(k.clone(), keys.clone()), nkv_keys(v.clone(), keys), mask)
                    })
                    .collect();
                Tensor::cat(blocks, 2)
            }
        };
        let out = out.swap_dims(1, 2).reshape([b, t, nh * hd]);
        self.o_proj.forward(out)
    }

    /// Softmax attention of queries `[B, heads, rows, head_dim]` over keys and values
    /// `[B, kv_heads, keys, head_dim]` under the additive `mask` `[1, 1, rows, keys]`.
    fn attend(&self, q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, mask: Tensor<4>) -> Tensor<4> {
        let [b, nh, rows, hd] = q.dims();
        let [_, nkv, keys, _] = k.dims();
        // Grouped-query attention without copying K/V: fold each group's query heads
        // into the row axis so one kv head serves `groups` query heads.
        let groups = nh / nkv;
        let q = q.reshape([b, nkv, groups * rows, hd]);
        let scores = self.precision.matmul(q, k.swap_dims(2, 3)).reshape([b, nh, rows, keys]);
        let probs = crate::kernels::softmax::scaled_masked_softmax(scores, self.scaling, mask).reshape([b, nkv, groups * rows, keys]);
        self.precision.matmul(probs, v).reshape([b, nh, rows, hd])
    }
}

/// GeGLU feed-forward with tanh-approximated GELU.
#[derive(Module, Debug)]
pub struct Mlp {
    pub gate_proj: Linear,
    pub up_proj: Linear,
    pub down_proj: Linear,
}

impl Mlp {
    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let h = crate::kernels::host::geglu(self.gate_proj.forward(x.clone()), self.up_proj.forward(x));
        self.down_proj.forward(h)
    }
}

#[derive(Module, Debug)]
pub struct DecoderLayer {
    pub self_attn: Attention,
    pub mlp: Mlp,
    pub input_layernorm: RmsNorm,
    pub post_attention_layernorm: RmsNorm,
    pub pre_feedforward_layernorm: RmsNorm,
    pub post_feedforward_layernorm: RmsNorm,
    #[module(skip)]
    pub layer_type: LayerType,
}

impl DecoderLayer {
    /// transformers names (within the layer) of the seven projections, in a fixed order.
    pub const LINEAR_NAMES: [&'static str; 7] = [
        "self_attn.q_proj",
        "self_attn.k_proj",
        "self_attn.v_proj",
        "self_attn.o_proj",
        "mlp.gate_proj",
        "mlp.up_proj",
        "mlp.down_proj",
    ];

    /// The projections with their names, so adapters and pruning can walk them.
    pub fn linears(&self) -> [(&'static str, &Linear); 7] {
        let (a, m) = (&self.self_attn, &self.mlp);
        let refs = [&a.q_proj, &a.k_proj, &a.v_proj, &a.o_proj, &m.gate_proj, &m.up_proj, &m.down_proj];
        let mut i = 0;
        refs.map(|l| {
            i += 1;
            (Self::LINEAR_NAMES[i - 1], l)
        })
    }

    pub fn linears_mut(&mut self) -> [(&'static str, &mut Linear); 7] {
        let (a, m) = (&mut self.self_attn, &mut self.mlp);
        let refs = [
            &mut a.q_proj,
            &mut a.k_proj,
            &mut a.v_proj,
            &mut a.o_proj,
            &mut m.gate_proj,
            &mut m.up_proj,
            &mut m.down_proj,
        ];
        let mut i = 0;
        refs.map(|l| {
            i += 1;
            (Self::LINEAR_NAMES[i - 1], l)
        })
    }

    fn forward(
        &self,
        x: Tensor<3>,
        pos: &Positions,
        cache: Option<&mut Option<(Tensor<4>, Tensor<4>)>>,
    ) -> Tensor<3> {
        let attn = self.self_attn.forward(self.input_layernorm.forward(x.clone()), pos, cache);
        let x = x + self.post_attention_layernorm.forward(attn);
        let ffw = self.mlp.forward(self.pre_feedforward_layernorm.forward(x.clone()));
        x + self.post_feedforward_layernorm.forward(ffw)
    }
}

/// Gemma-3 causal LM with a tied head.
#[derive(Module, Debug)]
pub struct Gemma3 {
    /// `[vocab, hidden]`, unscaled, shared with the LM head.
    pub embed_tokens: Param<Tensor<2>>,
    pub layers: Vec<DecoderLayer>,
    pub norm: RmsNorm,
    #[module(skip)]
    pub config: GemmaConfig,
    #[module(skip)]
    rope_local: Rope,
    #[module(skip)]
    rope_global: Rope,
    /// What the matrix products compute in, head included ([`Self::set_precision`]).
    #[module(skip)]
    precision: Precision,
    /// Query rows per attention block for long inputs ([`ATTENTION_BLOCK_ROWS`]).
    #[module(skip)]
    attention_block: usize,
}

impl Gemma3 {
    /// Refuses token ids past the embedding table (a tokenizer's added tokens can lie
    /// beyond it), naming the first one, instead of letting the lookup panic.
    pub fn check_ids(&self, ids: &[u32]) -> crate::error::Result<()> {
        match ids.iter().find(|&&id| id as usize >= self.config.vocab_size) {
            Some(id) => Err(crate::error::GemmaError::Other(format!(
                "token id {id} is past the model's vocabulary ({} entries); the input holds a special token this model has no embedding for",
                self.config.vocab_size
            ))),
            None => Ok(()),
        }
    }

    /// Assembles a model from its parts; see `weights.rs` for loading.
    pub fn from_parts(
        config: GemmaConfig,
        embed_tokens: Tensor<2>,
        layers: Vec<DecoderLayer>,
        norm: RmsNorm,
    ) -> Self {
        Gemma3 {
            rope_local: Rope::new(config.rope_local_base_freq, config.head_dim),
            rope_global: Rope::new(config.rope_theta, config.head_dim),
            embed_tokens: Param::from_tensor(embed_tokens),
            layers,
            norm,
            config,
            precision: Precision::F32,
            attention_block: ATTENTION_BLOCK_ROWS,
        }
    }

    /// Inputs longer than `rows` positions compute attention `rows` query rows at a time
    /// (default [`ATTENTION_BLOCK_ROWS`]); the result is the same up to float rounding.
    pub fn set_attention_block(&mut self, rows: usize) {
        self.attention_block = rows.max(1);
    }

    /// What the matrix products compute in.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Makes every matrix product (projections, adapters, attention, head) compute in
    /// `precision`; the weights stay as they are (f32).
    pub fn set_precision(&mut self, precision: Precision) {
        self.precision = precision;
        for layer in &mut self.layers {
            layer.self_attn.precision = precision;
            for (_, linear) in layer.linears_mut() {
                linear.precision = precision;
            }
        }
    }

    /// This model with [`set_precision`](Self::set_precision) applied.
    pub fn with_precision(mut self, precision: Precision) -> Self {
        self.set_precision(precision);
        self
    }

    pub fn device(&self) -> Device {
        self.embed_tokens.val().device()
    }

    /// What input embeddings are multiplied by: sqrt(hidden), in f32 as transformers does.
    pub fn embed_scale(&self) -> f32 {
        (self.config.hidden_size as f32).sqrt()
    }

    /// Token embeddings times [`embed_scale`](Self::embed_scale): `[B, T]` ids to `[B, T, H]`.
    pub fn embed(&self, tokens: Tensor<2, Int>) -> Tensor<3> {
        burn::tensor::module::embedding(self.embed_tokens.val(), tokens) * self.embed_scale()
    }

    /// [`embed`](Self::embed) after trained virtual-token embeddings `prefix` `[n, H]` (prompt
    /// tuning), the same for every sequence: `[B, n + T, H]`. The one place a soft prompt
    /// meets the model, for training, scoring and generation alike.
    pub fn embed_with_prefix(&self, prefix: Option<&Tensor<2>>, tokens: Tensor<2, Int>) -> Tensor<3> {
        let embeds = self.embed(tokens);
        match prefix {
            None => embeds,
            Some(p) => {
                let [b, _, h] = embeds.dims();
                let n = p.dims()[0];
                Tensor::cat(vec![p.clone().unsqueeze::<3>().expand([b, n, h]), embeds], 1)
            }
        }
    }

    /// Runs the decoder on (already scaled) input embeddings `[B, T, H]` at positions
    /// `cache.len() ..`, returning final-normed hidden states `[B, T, H]`.
    ///
    /// Sequences in a batch are right-padded: causal attention means padding after a
    /// sequence never changes its real positions.
    pub fn hidden_states(&self, embeds: Tensor<3>, mut cache: Option<&mut KvCache>) -> Tensor<3> {
        let [_, t, _] = embeds.dims();
        let device = embeds.device();
        let past = cache.as_ref().map_or(0, |c| c.len);
        let block = if t > self.attention_block { self.attention_block } else { t };
        let positions = |rope: &Rope, window: Option<usize>| {
            let (cos, sin) = rope.tables(past, t, &device);
            let mask = (block == t).then(|| attention_mask(past, 0..t, 0..past + t, window, &device));
            Positions { cos, sin, mask, past, window, block }
        };
        let sliding = positions(&self.rope_local, Some(self.config.sliding_window));
        let full = positions(&self.rope_global, None);

        let mut x = embeds;
        for (i, layer) in self.layers.iter().enumerate() {
            let pos = match layer.layer_type {
                LayerType::SlidingAttention => &sliding,
                LayerType::FullAttention => &full,
            };
            let slot = cache.as_deref_mut().map(|c| &mut c.layers[i]);
            x = layer.forward(x, pos, slot);
        }
        if let Some(c) = cache {
            c.len += t;
        }
        self.norm.forward(x)
    }

    /// The tied LM head on hidden states `[N, H]` -> logits `[N, vocab]`.
    pub fn lm_head(&self, hidden: Tensor<2>) -> Tensor<2> {
        tied_head_logits(hidden, self.embed_tokens.val(), self.config.final_logit_softcapping, self.precision)
    }

    /// Full logits `[B, T, vocab]` for token ids `[B, T]`.
    pub fn forward(&self, tokens: Tensor<2, Int>) -> Tensor<3> {
        let hidden = self.hidden_states(self.embed(tokens), None);
        let [b, t, h] = hidden.dims();
        self.lm_head(hidden.reshape([b * t, h])).reshape([b, t, self.config.vocab_size])
    }

    /// Logits only at the given flat positions (`batch_index * T + t`) of `hidden`
    /// `[B, T, H]`: the 262144-row head is most of the cost, so run it where needed.
    pub fn logits_at(&self, hidden: Tensor<3>, flat_positions: &[usize]) -> Tensor<2> {
        let [b, t, h] = hidden.dims();
        let device = hidden.device();
        let idx: Vec<i64> = flat_positions.iter().map(|&p| p as i64).collect();
        let n = idx.len();
        let idx = Tensor::<1, Int>::from_data(TensorData::new(idx, [n]), &device);
        self.lm_head(hidden.reshape([b * t, h]).select(0, idx))
    }

    pub fn new_cache(&self) -> KvCache {
        KvCache::new(self.layers.len())
    }

}

/// The tied head's logits `hidden [N, H] · embedᵀ` in `precision`, with Gemma's optional
/// final soft-capping (`cap · tanh(z / cap)`). [`Gemma3::lm_head`] on the model's own table;
/// the chunked training losses call it on detached copies of a table.
pub fn tied_head_logits(hidden: Tensor<2>, embed: Tensor<2>, softcap: Option<f64>, precision: Precision) -> Tensor<2> {
    let logits = precision.matmul(hidden, embed.transpose());
    match softcap {
        Some(cap) => (logits / cap).tanh() * cap,
        None => logits,
    }
}

/// Additive mask `[1, 1, rows, keys]` for the input's query rows `rows` (positions
/// `past + i`) and keys `keys`: 0 where query `past+i` may see key `j` (`j <= past+i`, and
/// within the window on sliding layers), a huge negative otherwise.
fn attention_mask(
    past: usize,
    rows: std::ops::Range<usize>,
    keys: std::ops::Range<usize>,
    window: Option<usize>,
    device: &Device,
) -> Tensor<4> {
    let (n, tk) = (rows.len(), keys.len());
    let mut data = vec![0f32; n * tk];
    for (r, i) in rows.enumerate() {
        let q = past + i;
        for (c, j) in keys.clone().enumerate() {
            let visible = j <= q && window.is_none_or(|w| q - j < w);
            if !visible {
                data[r * tk + c] = f32::MIN;
            }
        }
    }
    Tensor::from_data(TensorData::new(data, [1, 1, n, tk]), device)
}
