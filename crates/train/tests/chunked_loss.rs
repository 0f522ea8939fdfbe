//! The chunked loss against plain full-logits cross-entropy on the tiny model.

mod common;

use std::collections::BTreeMap;

use burn::tensor::{Device, Int, Tensor, TensorData};
use common::*;
use sweelol_train::{chunked_lm_loss, params, LossOutput, TableGrad, TokenBatch, TrainableModel};

/// Mean cross-entropy from the whole `[B*T, V]` logits, written out with logsumexp so it
/// shares no code with the chunked path.
fn full_logits_loss(model: &sweelol_gemma::Gemma3, tb: &TokenBatch, device: &Device) -> Tensor<1> {
    let v = model.config.vocab_size;
    let logits = model.forward(tb.input_tensor(device)).reshape([tb.batch_size * tb.seq_len, v]);
    let n = tb.targets.len();
    let pos: Vec<i64> = tb.targets.positions.iter().map(|&p| p as i64).collect();
    let rows = logits.select(0, Tensor::<1, Int>::from_data(TensorData::new(pos, [n]), device));
    let max = rows.clone().detach().max_dim(1);
    let lse = (rows.clone() - max.clone()).exp().sum_dim(1).log() + max;
    let ids: Vec<i64> = tb.targets.ids.iter().map(|&t| t as i64).collect();
    let picked = rows.gather(1, Tensor::<2, Int>::from_data(TensorData::new(ids, [n, 1]), device));
    (lse - picked).sum() / n as f32
}

fn grads_of(model: &sweelol_gemma::Gemma3, loss: LossOutput) -> BTreeMap<String, Vec<f32>> {
    loss.gradients(model)
        .into_iter()
        .map(|(k, t)| (k, t.into_data().convert::<f32>().try_into_vec::<f32>().unwrap()))
        .collect()
}

#[test]
#[cfg_attr(not(fixtures), ignore = "needs ../shared (SWEELOL_SHARED)")]
fn chunked_loss_and_gradients_match_full_logits() {
    let device = Device::flex().autodiff();
    let model = load_tiny(&device);
    let tb = one_batch(&random_examples(3, 9, 21, 3, 512, 7));
    assert!(tb.targets.len() > 20, "several chunks needed");

    let full = full_logits_loss(&model, &tb, &device);
    let full_value = full.clone().inner().into_scalar::<f32>() as f64;
    let full_grads = grads_of(&model, LossOutput::new(full, full_value, tb.targets.len()));
    let n_params = params::param_infos(&model).len();
    assert_eq!(full_grads.len(), n_params, "every parameter gets a gradient");

    for chunk_rows in [1, 7, 10_000] {
        let hidden = model.hidden_states(model.embed(tb.input_tensor(&device)), None);
        let out = chunked_lm_loss(&model, hidden, &tb.targets, chunk_rows);
        let tensor_value = out.loss.clone().inner().into_scalar::<f32>() as f64;
        let diff = (out.value - full_value).abs();
        println!("chunk_rows {chunk_rows}: loss {:.7} vs full {:.7}, |diff| = {diff:.2e}", out.value, full_value);
        assert!(diff < 1e-5, "value differs by {diff}");
        assert!((tensor_value - out.value).abs() < 1e-6, "returned tensor holds the value");

        let grads = grads_of(&model, out);
        assert_eq!(grads.len(), n_params);
        let mut worst = (0.0f32, String::new());
        for (path, g) in &grads {
            let d = max_abs_diff(g, &full_grads[path]);
            if d > worst.0 {
                worst = (d, path.clone());
            }
        }
        let gmax = full_grads.values().flatten().fold(0.0f32, |m, x| m.max(x.abs()));
        println!("chunk_rows {chunk_rows}: max |grad diff| = {:.2e} (at {}), max |grad| = {gmax:.2e}", worst.0, worst.1);
        assert!(worst.0 < 1e-5, "gradient of {} differs by {}", worst.1, worst.0);
    }
}

/// The trainer's loss (`TrainableModel::loss`) looks the inputs up outside the graph on the
/// host and adds their gradient to the table's by hand (`sweelol_train::lookup`); the
/// reference differentiates burn's `embedding` with full logits.
#[test]
#[cfg_attr(not(fixtures), ignore = "needs ../shared (SWEELOL_SHARED)")]
fn the_lookup_outside_the_graph_gives_the_same_gradients() {
    let device = Device::flex().autodiff();
    let model = load_tiny(&device);
    // Repeated ids: a row used twice must get both contributions.
    let tb = one_batch(&random_examples(3, 9, 21, 3, 40, 5));
    let full = full_logits_loss(&model, &tb, &device);
    let full_value = full.clone().inner().into_scalar::<f32>() as f64;
    let full_grads = grads_of(&model, LossOutput::new(full, full_value, tb.targets.len()));

    let out = model.loss(&tb, 7, tb.targets.len() as f64);
    assert!(out.lookup.is_some(), "the host path with a training table takes the lookup outside the graph");
    assert!((out.value - full_value).abs() < 1e-5, "{} vs {full_value}", out.value);
    let grads = grads_of(&model, out);
    assert_eq!(grads.len(), full_grads.len());
    for (path, g) in &grads {
        let d = max_abs_diff(g, &full_grads[path]);
        assert!(d < 1e-5, "gradient of {path} differs by {d}");
    }
    let table = &grads["embed_tokens"];
    assert!(table.iter().any(|&x| x != 0.0));
}

/// A step in parts: each part's gradients are added into the step's sums, the tied table's
/// in the buffer the first part made (no second `[vocab, hidden]` gradient). The sums equal
/// the two parts' full-logits gradients added up.
#[test]
#[cfg_attr(not(fixtures), ignore = "needs ../shared (SWEELOL_SHARED)")]
fn parts_of_a_step_add_into_one_table_gradient() {
    let device = Device::flex().autodiff();
    let model = load_tiny(&device);
    let parts = [one_batch(&random_examples(2, 9, 21, 3, 40, 11)), one_batch(&random_examples(3, 5, 17, 2, 40, 12))];
    let denom = parts.iter().map(|p| p.targets.len()).sum::<usize>() as f64;
    let mut expected: BTreeMap<String, Vec<f32>> = BTreeMap::new();
    for tb in &parts {
        let full = full_logits_loss(&model, tb, &device) * (tb.targets.len() as f64 / denom) as f32;
        let value = full.clone().inner().into_scalar::<f32>() as f64;
        for (path, g) in grads_of(&model, LossOutput::new(full, value, tb.targets.len())) {
            let e = expected.entry(path).or_insert_with(|| vec![0.0; g.len()]);
            e.iter_mut().zip(&g).for_each(|(e, g)| *e += g);
        }
    }

    let table_ptr = |sums: &BTreeMap<String, Tensor<1>>| {
        sweelol_gemma::kernels::host::with_host_f32(sums["embed_tokens"].clone(), |s| s.as_ptr() as usize)
    };
    let mut sums = BTreeMap::new();
    model.loss(&parts[0], 7, denom).add_gradients_to(&model, &mut sums);
    let first = table_ptr(&sums);
    let second = model.loss(&parts[1], 7, denom);
    assert!(matches!(second.embed_grad, Some((_, TableGrad::Host(_)))), "the head's table product waits for the sums");
    second.add_gradients_to(&model, &mut sums);
    assert_eq!(table_ptr(&sums), first, "the second part adds into the first part's table gradient");

    assert_eq!(sums.len(), expected.len());
    for (path, t) in sums {
        let got = t.into_data().convert::<f32>().try_into_vec::<f32>().unwrap();
        let d = max_abs_diff(&got, &expected[&path]);
        assert!(d < 1e-5, "gradient of {path} differs by {d}");
    }
}

#[test]
#[cfg_attr(not(fixtures), ignore = "needs ../shared (SWEELOL_SHARED)")]
fn eval_mode_loss_needs_no_autodiff() {
    let device = Device::flex();
    let model = load_tiny(&device);
    let tb = one_batch(&random_examples(2, 6, 12, 3, 512, 3));
    let hidden = model.hidden_states(model.embed(tb.input_tensor(&device)), None);
    let out = chunked_lm_loss(&model, hidden, &tb.targets, 4);
    let full = full_logits_loss(&model, &tb, &device).into_scalar::<f32>() as f64;
    assert!((out.value - full).abs() < 1e-5, "{} vs {full}", out.value);
}

#[test]
#[cfg_attr(not(fixtures), ignore = "needs ../shared (SWEELOL_SHARED)")]
fn accumulated_micro_batches_equal_one_big_batch() {
    use sweelol_train::TrainableModel;
    let device = Device::flex().autodiff();
    let model = load_tiny(&device);
    let examples = random_examples(4, 5, 15, 3, 512, 17);
    let big = one_batch(&examples);
    let (b1, b2) = (one_batch(&examples[..2]), one_batch(&examples[2..]));
    let denom = (b1.targets.len() + b2.targets.len()) as f64;
    assert_eq!(denom as usize, big.targets.len());

    let whole = model.loss(&big, 8, denom);
    let whole_value = whole.value;
    let whole_grads = grads_of(&model, whole);
    let (o1, o2) = (model.loss(&b1, 8, denom), model.loss(&b2, 8, denom));
    let value = o1.value + o2.value;
    let (g1, g2) = (grads_of(&model, o1), grads_of(&model, o2));
    assert!((value - whole_value).abs() < 1e-5, "{value} vs {whole_value}");
    let worst = whole_grads
        .iter()
        .map(|(k, g)| {
            let sum: Vec<f32> = g1[k].iter().zip(&g2[k]).map(|(a, b)| a + b).collect();
            max_abs_diff(&sum, g)
        })
        .fold(0.0f32, f32::max);
    println!("accumulation: |value diff| {:.1e}, max |grad diff| {worst:.1e}", (value - whole_value).abs());
    assert!(worst < 1e-5, "{worst}");
}
