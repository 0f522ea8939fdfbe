//! What the trainer needs from a technique's model.
//!
//! Full fine-tuning uses [`Gemma3`] as is. Other techniques wrap it in their own module
//! (adapters, a soft prompt, masks, a teacher) and override what differs: which parameters
//! train, how hidden states are produced, the loss, or what happens after each step.

use std::collections::BTreeMap;

use burn::module::Module;
use burn::tensor::{Int, Tensor};
use sweelol_gemma::{Gemma3, HostTensor, LazyTensor};

use crate::batch::TokenBatch;
use crate::lookup::{self, Lookup};
use crate::loss::{chunked_lm_loss_scaled, LossOutput};
use crate::params;

pub trait TrainableModel: Module + Sized {
    /// The language model whose tied head scores hidden states.
    fn lm(&self) -> &Gemma3;

    /// Final-normed hidden states `[B, T, H]`, one per input position (a technique that
    /// prepends virtual tokens drops their positions), and the input lookup when its
    /// gradient goes around the graph ([`lookup::embed`]).
    fn hidden_states(&self, input_ids: Tensor<2, Int>) -> (Tensor<3>, Option<Lookup>) {
        let lm = self.lm();
        let (embeds, lookup) = lookup::embed(lm, input_ids);
        (lm.hidden_states(embeds, None), lookup)
    }

    /// The batch's loss: summed over its target tokens and divided by `denom` (the target
    /// count of the whole accumulated step). Default: next-token cross-entropy through the
    /// chunked head.
    fn loss(&self, batch: &TokenBatch, chunk_rows: usize, denom: f64) -> LossOutput {
        let ids = batch.input_tensor(&self.lm().device());
        let (hidden, lookup) = self.hidden_states(ids);
        chunked_lm_loss_scaled(self.lm(), hidden, &batch.targets, chunk_rows, denom).with_lookup(lookup)
    }

    /// Whether the parameter at `path` trains. Frozen parameters get no gradient and no
    /// optimizer state.
    fn is_trainable(&self, _path: &str) -> bool {
        true
    }

    /// Whether the parameter at `path` (of rank `rank`) gets weight decay. Default: matrices
    /// (rank ≥ 2: embeddings, projections, adapters) do; RMSNorm weights and other vectors
    /// don't.
    fn decays(&self, _path: &str, rank: usize) -> bool {
        rank >= 2
    }

    /// Called after every optimizer step (pruning re-applies its masks here).
    fn after_step(&mut self) {}

    /// What a checkpoint stores: the trainable parameters by path (still on the device;
    /// the checkpoint copies them to the host one at a time).
    fn trainable_state(&self) -> BTreeMap<String, LazyTensor> {
        params::to_lazy(self, |p| self.is_trainable(p))
    }

    /// Restores [`trainable_state`](Self::trainable_state) into a freshly built model.
    fn load_trainable_state(self, state: &BTreeMap<String, HostTensor>) -> Result<Self, String> {
        params::load_host(self, state)
    }
}

/// Full fine-tuning: every weight trains.
impl TrainableModel for Gemma3 {
    fn lm(&self) -> &Gemma3 {
        self
    }
}
