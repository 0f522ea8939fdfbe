//! Autodiff gradients of the whole tiny model (through the chunked loss) against central
//! finite differences.

mod common;

use std::collections::BTreeMap;

use burn::module::Module;
use burn::tensor::Device;
use common::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sweelol_gemma::{Gemma3, HostTensor};
use sweelol_train::{params, TokenBatch, TrainableModel};

/// The loss in f64 from the model's f32 logits (less rounding noise in the differences).
fn loss_f64(model: &Gemma3, tb: &TokenBatch, device: &Device) -> f64 {
    let v = model.config.vocab_size;
    let logits = model.forward(tb.input_tensor(device)).into_data().convert::<f32>().try_into_vec::<f32>().unwrap();
    let mut total = 0.0f64;
    for (&p, &id) in tb.targets.positions.iter().zip(&tb.targets.ids) {
        let row = &logits[p * v..(p + 1) * v];
        let max = row.iter().fold(f32::MIN, |m, &x| m.max(x)) as f64;
        let lse = row.iter().map(|&x| (x as f64 - max).exp()).sum::<f64>().ln() + max;
        total += lse - row[id as usize] as f64;
    }
    total / tb.targets.len() as f64
}

#[test]
#[cfg_attr(not(fixtures), ignore = "needs ../shared (SWEELOL_SHARED)")]
fn whole_model_gradients_match_central_differences() {
    let ad = Device::flex().autodiff();
    let plain = Device::flex();
    let model = load_tiny(&ad);
    let tb = one_batch(&random_examples(2, 8, 12, 3, 512, 11));

    // Autodiff gradients through the trainer's loss (chunked head, 5 rows a chunk).
    let out = model.loss(&tb, 5, tb.targets.len() as f64);
    let grads: BTreeMap<String, Vec<f32>> = out
        .gradients(&model)
        .into_iter()
        .map(|(k, t)| (k, t.into_data().convert::<f32>().try_into_vec::<f32>().unwrap()))
        .collect();

    let base: BTreeMap<String, HostTensor> = params::to_host(&model, |_| true);
    let eval_model = load_tiny(&plain);
    let mut rng = StdRng::seed_from_u64(5);
    let kinds = [
        "self_attn.q_proj.weight",
        "self_attn.k_proj.weight",
        "self_attn.v_proj.weight",
        "self_attn.o_proj.weight",
        "self_attn.q_norm.weight",
        "self_attn.k_norm.weight",
        "mlp.gate_proj.weight",
        "mlp.up_proj.weight",
        "mlp.down_proj.weight",
        "input_layernorm.weight",
        "post_attention_layernorm.weight",
        "pre_feedforward_layernorm.weight",
        "post_feedforward_layernorm.weight",
    ];
    let mut picks: Vec<(String, usize)> = Vec::new();
    // Embedding rows of tokens in the batch (lookup + head) and of others (head only).
    let used: Vec<u32> = tb.input_ids.iter().copied().filter(|&t| t != 0).collect();
    let h = model.config.hidden_size;
    for _ in 0..4 {
        let tok = used[rng.random_range(0..used.len())] as usize;
        picks.push(("embed_tokens".into(), tok * h + rng.random_range(0..h)));
    }
    for _ in 0..2 {
        picks.push(("embed_tokens".into(), rng.random_range(0..base["embed_tokens"].data.len())));
    }
    for kind in kinds {
        for _ in 0..2 {
            let path = format!("layers.{}.{kind}", rng.random_range(0..model.config.num_hidden_layers));
            let n = base[&path].data.len();
            picks.push((path, rng.random_range(0..n)));
        }
    }
    for _ in 0..2 {
        picks.push(("norm.weight".into(), rng.random_range(0..h)));
    }

    // Central differences at h and h/2 combined by Richardson extrapolation: the O(h²)
    // truncation error cancels while h stays large enough that f32 rounding in the forward
    // pass does not dominate. The embedding enters multiplied by sqrt(hidden), so its step is
    // divided by that factor to perturb the model's input by the same amount.
    let eps = 1e-2f32;
    let embed_scale = (h as f32).sqrt();
    let mut worst = 0.0f64;
    let mut rows = Vec::new();
    for (path, i) in &picks {
        let mut at = |delta: f32| {
            let mut t = base[path].clone();
            t.data[*i] += delta;
            let state = BTreeMap::from([(path.clone(), t)]);
            let m = params::load_host(eval_model.clone(), &state).unwrap();
            loss_f64(&m.valid(), &tb, &plain)
        };
        let central = |h: f32, at: &mut dyn FnMut(f32) -> f64| (at(h) - at(-h)) / (2.0 * h as f64);
        let step = if path == "embed_tokens" { eps / embed_scale } else { eps };
        let fd = (4.0 * central(step / 2.0, &mut at) - central(step, &mut at)) / 3.0;
        let ad = grads[path][*i] as f64;
        // Relative error, with a floor so entries whose gradient is ~0 are judged absolutely.
        let rel = (fd - ad).abs() / fd.abs().max(ad.abs()).max(1e-3);
        worst = worst.max(rel);
        rows.push(format!("{path}[{i}]: autodiff {ad:+.5e}  fd {fd:+.5e}  rel {rel:.2e}"));
    }
    for r in &rows {
        println!("{r}");
    }
    println!("{} entries, h {eps} (embedding h/sqrt(H)), Richardson with h/2, max relative error {worst:.2e}", picks.len());
    assert!(worst < 1e-2, "max relative error {worst}");
}
