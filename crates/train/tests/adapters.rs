//! A LoRA-style model (low-rank deltas with dropout on a frozen base) through the trainer:
//! the base and the embedding stay frozen, only adapters get optimizer state, and a resumed
//! run reproduces the dropout masks (the device RNG is re-seeded from (seed, step)).
//! Its own test binary, since burn's CPU RNG is process-global.

mod common;

use std::collections::BTreeMap;

use burn::module::{Module, Param};
use burn::tensor::{Device, Tensor, TensorData};
use common::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sweelol_gemma::{Gemma3, HostTensor, Linear, LowRankDelta};
use sweelol_train::{checkpoint, params, train, Dataset, TrainSection, TrainableModel};

#[derive(Module, Debug)]
struct Adapted {
    lm: Gemma3,
}

impl TrainableModel for Adapted {
    fn lm(&self) -> &Gemma3 {
        &self.lm
    }
    fn is_trainable(&self, path: &str) -> bool {
        path.contains(".delta.")
    }
}

fn with_delta(lin: &mut Linear, rank: usize, rng: &mut StdRng, device: &Device) {
    let (d_in, d_out) = (lin.d_in(), lin.d_out());
    let a: Vec<f32> = (0..d_in * rank).map(|_| rng.random_range(-0.05..0.05)).collect();
    lin.delta = Some(LowRankDelta {
        a: Param::from_tensor(Tensor::from_data(TensorData::new(a, [d_in, rank]), device)),
        b: Param::from_tensor(Tensor::zeros([rank, d_out], device)),
        scale: 2.0,
        dropout: 0.2,
    });
}

fn adapted(device: &Device) -> Adapted {
    let mut lm = load_tiny(device);
    let mut rng = StdRng::seed_from_u64(3);
    for layer in &mut lm.layers {
        with_delta(&mut layer.self_attn.q_proj, 4, &mut rng, device);
        with_delta(&mut layer.self_attn.v_proj, 4, &mut rng, device);
    }
    Adapted { lm }
}

fn weights<M: Module>(m: &M) -> BTreeMap<String, HostTensor> {
    params::to_host(m, |_| true)
}

#[test]
#[cfg_attr(not(fixtures), ignore = "needs ../shared (SWEELOL_SHARED)")]
fn adapters_train_alone_and_resume_reproduces_dropout() {
    let device = Device::flex().autodiff();
    let data = Dataset { train: random_examples(10, 6, 12, 3, 512, 8), eval: random_examples(3, 6, 9, 3, 512, 9) };
    let mut t = TrainSection::new(1e-2, 2);
    t.max_steps = Some(6);
    t.weight_decay = 0.05;
    t.seed = 4;

    let start = weights(&adapted(&device));
    let dir_a = tempfile::tempdir().unwrap();
    let a = train(adapted(&device), &data, &options(t.clone(), dir_a.path())).unwrap();
    let end = weights(&a.model);
    for (k, v) in &start {
        let d = max_abs_diff(&v.data, &end[k].data);
        if k.contains(".delta.") {
            assert!(d > 0.0, "{k} did not train");
        } else {
            assert_eq!(d, 0.0, "frozen {k} changed");
        }
    }
    let ck = checkpoint::load(&a.last_checkpoint.unwrap()).unwrap();
    assert_eq!(ck.state.adam_steps.len(), 16, "a and b of 2 adapters in 4 layers");
    assert!(ck.state.adam_steps.keys().all(|k| k.contains(".delta.")));
    assert_eq!(ck.trainable.len(), 16, "the checkpoint holds the adapters only");

    // Interrupted after 4 steps (checkpoint at 3), resumed: the same weights, so the same
    // dropout masks were drawn.
    t.checkpoint_every = 3;
    let dir_b = tempfile::tempdir().unwrap();
    let mut opts = options(t, dir_b.path());
    opts.stop_after = Some(4);
    drop(train(adapted(&device), &data, &opts).unwrap());
    opts.stop_after = None;
    let b = train(adapted(&device), &data, &opts).unwrap();
    assert!(b.resumed_from.unwrap().ends_with("step-00000003"));
    let diff = weights(&b.model)
        .iter()
        .map(|(k, v)| max_abs_diff(&v.data, &end[k].data))
        .fold(0.0, f32::max);
    println!("adapters with dropout: resumed vs uninterrupted max |diff| = {diff:e}");
    assert!(diff <= 1e-7, "{diff}");
}
