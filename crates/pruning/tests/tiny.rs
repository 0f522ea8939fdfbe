//! Pruning on the tiny Gemma-3 fixture: counts, N:M groups, the global threshold, ties,
//! re-applying masks (also through real AdamW steps), save/load, export, config errors.

use std::collections::BTreeMap;
use std::path::PathBuf;

use burn::optim::{AdamWConfig, GradientsParams};
use burn::tensor::{Device, Distribution, Int, Tensor, TensorData};
use sweelol_gemma::{Gemma3, HostTensor, WeightMap};
use sweelol_pruning::{export, prune, sparsity_report, Masks, PruningConfig, PruningError, Scope, EMBED_NAME, REPORT_FILE};

fn load_tiny(device: &Device) -> Gemma3 {
    sweelol_train::testing::tiny_fixture_model(device).unwrap()
}

fn tmp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("sweelol-pruning-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// HF-named, HF-layout host copies of all weights.
fn host(model: &Gemma3) -> BTreeMap<String, HostTensor> {
    model.to_weights().tensors
}

fn zeros(t: &HostTensor) -> usize {
    t.data.iter().filter(|&&x| x == 0.0).count()
}

/// Python's round(x) for x = 0.5 * n.
fn half(n: usize) -> usize {
    let x = 0.5 * n as f64;
    x.round_ties_even() as usize
}

fn cfg(text: &str) -> PruningConfig {
    PruningConfig::from_toml(text).unwrap()
}

#[test]
#[cfg_attr(not(fixtures), ignore = "needs ../shared (SWEELOL_SHARED)")]
fn per_tensor_prunes_round_half_of_every_projection_and_leaves_the_rest_dense() {
    let device = Device::flex();
    let model = load_tiny(&device);
    let before = host(&model);
    let (model, masks) = prune(model, &PruningConfig::default()).unwrap();
    let after = host(&model);

    assert_eq!(masks.len(), 4 * 7, "every projection of every layer");
    for name in masks.names() {
        let (b, a) = (&before[name], &after[name]);
        let n = a.data.len();
        assert_eq!(zeros(a), half(n), "{name}: zeros");
        assert_eq!(masks.num_pruned(name), Some(half(n)));
        // l1_unstructured: the pruned weights are the smallest |w| of the tensor.
        let keep = masks.keep_mask(name).unwrap();
        let max_pruned = (0..n).filter(|&i| !keep[i]).map(|i| b.data[i].abs()).fold(0.0, f32::max);
        let min_kept = (0..n).filter(|&i| keep[i]).map(|i| b.data[i].abs()).fold(f32::INFINITY, f32::min);
        assert!(max_pruned <= min_kept, "{name}: pruned {max_pruned} > kept {min_kept}");
        // Kept weights are untouched.
        assert!((0..n).filter(|&i| keep[i]).all(|i| a.data[i] == b.data[i]), "{name}: kept weights changed");
    }
    // Embeddings (= LM head) and norms stay dense and unchanged.
    for (name, t) in &before {
        if masks.num_pruned(name).is_none() {
            assert_eq!(&after[name], t, "{name} must be untouched");
        }
    }
    let report = sparsity_report(&model, &masks);
    assert!(!report.embeddings_pruned);
    assert_eq!(report.total_zeros, masks.names().map(|n| half(after[n].data.len()) as u64).sum::<u64>());
    assert!((report.overall_sparsity.pruned_tensors - 0.5).abs() < 1e-6);
    assert!(report.overall_sparsity.all_params < 0.5);
    println!(
        "tiny per-tensor: {} tensors, {} / {} zeros, all-params sparsity {:.4}",
        report.tensors.len(),
        report.total_zeros,
        report.total_pruned_numel,
        report.overall_sparsity.all_params
    );
}

#[test]
#[cfg_attr(not(fixtures), ignore = "needs ../shared (SWEELOL_SHARED)")]
fn n_m_2_4_keeps_the_two_largest_of_every_group_of_four_along_the_input() {
    let device = Device::flex();
    let model = load_tiny(&device);
    let before = host(&model);
    let c = cfg("scope = \"n_m\"");
    assert_eq!(c.n_m(), Some((2, 4)));
    assert_eq!(c.sparsity(), 0.5);
    let (model, masks) = prune(model, &c).unwrap();
    let after = host(&model);
    let mut groups = 0;
    for name in masks.names() {
        let (b, a) = (&before[name], &after[name]);
        let cols = a.shape[1]; // HF [out, in]: groups run along a row
        for (g, (ga, gb)) in a.data.chunks_exact(4).zip(b.data.chunks_exact(4)).enumerate() {
            assert_eq!(ga.iter().filter(|&&x| x == 0.0).count(), 2, "{name} group {g} (row {})", g * 4 / cols);
            let mut mags: Vec<f32> = gb.iter().map(|x| x.abs()).collect();
            mags.sort_by(f32::total_cmp);
            for (x, y) in ga.iter().zip(gb) {
                if *x != 0.0 {
                    assert!(y.abs() >= mags[1], "{name} group {g}: kept a weight below the 2 largest");
                }
            }
            groups += 1;
        }
    }
    println!("2:4: {groups} groups, each with exactly 2 zeros");
}

#[test]
#[cfg_attr(not(fixtures), ignore = "needs ../shared (SWEELOL_SHARED)")]
fn global_scope_uses_one_threshold_over_all_tensors() {
    let device = Device::flex();
    let model = load_tiny(&device);
    let before = host(&model);
    let (model, masks) = prune(model, &cfg("scope = \"global\"\nsparsity = 0.5")).unwrap();
    let after = host(&model);
    let (mut max_pruned, mut min_kept, mut total, mut pruned) = (0f32, f32::INFINITY, 0, 0);
    let mut per_tensor = Vec::new();
    for name in masks.names() {
        let keep = masks.keep_mask(name).unwrap();
        let b = &before[name];
        for (i, &k) in keep.iter().enumerate() {
            if k {
                min_kept = min_kept.min(b.data[i].abs());
            } else {
                max_pruned = max_pruned.max(b.data[i].abs());
                assert_eq!(after[name].data[i], 0.0);
            }
        }
        let z = keep.iter().filter(|&&k| !k).count();
        per_tensor.push(z as f64 / keep.len() as f64);
        total += keep.len();
        pruned += z;
    }
    assert!(max_pruned <= min_kept, "largest pruned |w| {max_pruned} > smallest kept {min_kept}");
    assert_eq!(pruned, half(total));
    // Really global: tensors end up with different sparsities.
    let (lo, hi) = per_tensor.iter().fold((1.0f64, 0.0f64), |(l, h), &s| (l.min(s), h.max(s)));
    println!("global: threshold between {max_pruned} and {min_kept}; per-tensor sparsity {lo:.3} .. {hi:.3}");
    assert!(hi - lo > 0.01, "per-tensor sparsities all equal ({lo}..{hi}): not a global threshold?");
}

#[test]
#[cfg_attr(not(fixtures), ignore = "needs ../shared (SWEELOL_SHARED)")]
fn ties_are_broken_by_position_deterministically() {
    let device = Device::flex();
    let mut model = load_tiny(&device);
    // Layer 0's q_proj becomes one repeated magnitude (mixed signs): every weight ties.
    let q = &mut model.layers[0].self_attn.q_proj;
    q.weight = q.weight.clone().map(|w| w.sign() * 0.25);
    let name = "model.layers.0.self_attn.q_proj.weight";
    let (a, masks_a) = prune(model, &PruningConfig::default()).unwrap();
    let keep = masks_a.keep_mask(name).unwrap();
    let k = half(keep.len());
    // Earliest HF positions ([out, in] row-major) are pruned first.
    assert!(keep[..k].iter().all(|&x| !x) && keep[k..].iter().all(|&x| x), "tie order");
    // Same input, same masks, for every tensor.
    let (_, masks_b) = prune(a, &PruningConfig::default()).unwrap();
    for n in masks_a.names() {
        assert_eq!(masks_a.keep_mask(n), masks_b.keep_mask(n), "{n}");
    }
}

#[test]
#[cfg_attr(not(fixtures), ignore = "needs ../shared (SWEELOL_SHARED)")]
fn reapplying_masks_after_a_perturbation_restores_exact_zeros_and_keeps_param_ids() {
    let device = Device::flex();
    let (model, masks) = prune(load_tiny(&device), &PruningConfig::default()).unwrap();
    let ids_before: Vec<_> = model.layers.iter().flat_map(|l| l.linears().map(|(_, lin)| lin.weight.id)).collect();
    // A fake optimizer step: noise on every projection.
    let mut perturbed = model;
    for layer in perturbed.layers.iter_mut() {
        for (_, lin) in layer.linears_mut() {
            lin.weight = lin.weight.clone().map(|w| {
                let noise = w.random_like(Distribution::Normal(0.0, 0.01));
                w + noise
            });
        }
    }
    let noisy = host(&perturbed);
    for n in masks.names() {
        assert_eq!(zeros(&noisy[n]), 0, "{n}: the perturbation must reach the pruned weights");
    }
    let fixed = masks.apply(perturbed);
    let ids_after: Vec<_> = fixed.layers.iter().flat_map(|l| l.linears().map(|(_, lin)| lin.weight.id)).collect();
    assert_eq!(ids_before, ids_after, "ParamIds must survive Masks::apply");
    let after = host(&fixed);
    for n in masks.names() {
        let keep = masks.keep_mask(n).unwrap();
        for (i, &k) in keep.iter().enumerate() {
            let want = if k { noisy[n].data[i] } else { 0.0 };
            assert_eq!(after[n].data[i], want, "{n}[{i}]");
        }
    }
}

/// Mean of squared logits: any loss that pushes every weight.
fn toy_loss(model: &Gemma3, device: &Device) -> Tensor<1> {
    let ids: Vec<i64> = (0..12).map(|i| (i * 37 % 512) as i64).collect();
    let tokens = Tensor::<2, Int>::from_data(TensorData::new(ids, [1, 12]), device);
    let logits = model.forward(tokens);
    (logits.clone() * logits).mean()
}

#[test]
#[cfg_attr(not(fixtures), ignore = "needs ../shared (SWEELOL_SHARED)")]
fn zeros_survive_adamw_steps_when_masks_are_reapplied() {
    let device = Device::flex().autodiff();
    let (mut model, masks) = prune(load_tiny(&device), &PruningConfig::default()).unwrap();
    assert!(model.layers[0].self_attn.q_proj.weight.val().is_require_grad(), "pruned params still train");
    let mut optim = AdamWConfig::new().with_weight_decay(0.01).init();
    let mut prev = host(&model);
    let mut losses = Vec::new();
    for step in 0..3 {
        let loss = toy_loss(&model, &device);
        losses.push(loss.clone().into_scalar::<f32>());
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(1e-3, model, grads);
        let stepped = host(&model);
        // Without the masks, Adam moves the pruned weights off zero ...
        let revived: usize = masks
            .names()
            .map(|n| {
                let keep = masks.keep_mask(n).unwrap();
                keep.iter().zip(&stepped[n].data).filter(|(k, x)| !**k && **x != 0.0).count()
            })
            .sum();
        assert!(revived > 0, "step {step}: the optimizer should have touched pruned weights");
        model = masks.apply(model);
        let now = host(&model);
        for n in masks.names() {
            let keep = masks.keep_mask(n).unwrap();
            let (mut changed, nz) = (0, zeros(&now[n]));
            for (i, &k) in keep.iter().enumerate() {
                if k {
                    changed += usize::from(now[n].data[i] != prev[n].data[i]);
                } else {
                    assert_eq!(now[n].data[i], 0.0, "step {step}: {n}[{i}] not zero");
                }
            }
            assert_eq!(nz, masks.num_pruned(n).unwrap(), "step {step}: {n} zero count");
            // ... and the kept weights still train (the re-masked leaf still gets gradients).
            assert!(changed > 0, "step {step}: no kept weight of {n} moved");
        }
        prev = now;
    }
    println!("AdamW on the pruned tiny model, toy loss per step: {losses:?}");
    let report = sparsity_report(&model, &masks);
    assert!(report.tensors.iter().all(|t| t.zeros == half(t.numel as usize) as u64));
}

#[test]
#[cfg_attr(not(fixtures), ignore = "needs ../shared (SWEELOL_SHARED)")]
fn masks_save_and_load_round_trip() {
    let device = Device::flex();
    let dense = load_tiny(&device);
    let c = cfg("scope = \"n_m\"\nprune_embeddings = true\ntarget_modules = [\"up_proj\", \"down_proj\"]");
    let (pruned, masks) = prune(load_tiny(&device), &c).unwrap();
    assert_eq!(masks.len(), 1 + 4 * 2);
    let dir = tmp_dir("masks");
    let path = dir.join("masks.safetensors");
    masks.save(&path).unwrap();
    let loaded = Masks::load(&path, &dense).unwrap();
    assert_eq!(loaded.config(), &serde_json::to_value(&c).unwrap());
    assert_eq!(loaded.target_sparsity(), c.sparsity());
    assert_eq!(loaded.names().collect::<Vec<_>>(), masks.names().collect::<Vec<_>>());
    for n in masks.names() {
        assert_eq!(loaded.keep_mask(n), masks.keep_mask(n), "{n}");
    }
    // Re-applying loaded masks to the dense model gives the pruned model.
    assert_eq!(host(&loaded.apply(dense)), host(&pruned));

    // A model of another shape is refused with the tensor named.
    let mut other = load_tiny(&device);
    other.layers.truncate(2);
    let err = Masks::load(&path, &other).unwrap_err().to_string();
    assert!(err.contains("model.layers.2"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
#[cfg_attr(not(fixtures), ignore = "needs ../shared (SWEELOL_SHARED)")]
fn prune_embeddings_prunes_the_tied_head_and_export_writes_the_report() {
    let device = Device::flex();
    let c = cfg("prune_embeddings = true");
    let (model, masks) = prune(load_tiny(&device), &c).unwrap();
    let dir = tmp_dir("export");
    let report = export(&model, &masks, &dir).unwrap();
    assert!(report.embeddings_pruned);
    let emb = report.tensors.iter().find(|t| t.name == EMBED_NAME).expect("embedding in report");
    assert_eq!(emb.zeros, half(emb.numel as usize) as u64);

    // The files: a transformers dir whose weights keep the exact zeros, and the JSON report.
    let text = std::fs::read_to_string(dir.join(REPORT_FILE)).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(json["embeddings_pruned"], true);
    assert_eq!(json["tensors"].as_array().unwrap().len(), 1 + 28);
    let w = WeightMap::read_safetensors_dir(&dir).unwrap();
    for t in &report.tensors {
        assert_eq!(zeros(&w.tensors[&t.name]) as u64, t.zeros, "{} in the export", t.name);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
#[cfg_attr(not(fixtures), ignore = "needs ../shared (SWEELOL_SHARED)")]
fn bad_configs_are_rejected_with_clear_errors() {
    let err = |text: &str| PruningConfig::from_toml(text).unwrap_err().to_string();
    let e = err("sparsity = 1.5");
    assert!(e.contains("sparsity must be in [0, 1], got 1.5"), "{e}");
    let e = err("sparsity = 0.5\nsparsty = 0.5");
    assert!(e.contains("unknown field `sparsty`"), "{e}");
    let e = err("scope = \"blockwise\"");
    assert!(e.contains("blockwise") && e.contains("per_tensor"), "{e}");
    let e = err("scope = \"n_m\"\nn = 3\nm = 2");
    assert!(e.contains("1 <= n <= m"), "{e}");
    let e = err("scope = \"n_m\"\nsparsity = 0.3");
    assert!(e.contains("contradicts 2:4"), "{e}");
    let e = err("n = 2\nm = 4");
    assert!(e.contains("only apply to scope = \"n_m\""), "{e}");
    let e = err("target_modules = [\"lm_head\"]");
    assert!(e.contains("unknown target module `lm_head`"), "{e}");

    // M must divide the input dimension (hidden 64, intermediate 160 on the tiny model).
    let model = load_tiny(&Device::flex());
    let c = cfg("scope = \"n_m\"\nn = 1\nm = 3");
    match prune(model, &c) {
        Err(PruningError::Tensor { tensor, msg }) => {
            assert_eq!(tensor, "model.layers.0.self_attn.q_proj.weight");
            assert!(msg.contains("not divisible by M = 3"), "{msg}");
        }
        other => panic!("expected a tensor error, got {:?}", other.map(|_| ())),
    }
    // Defaults.
    let d = cfg("");
    assert_eq!((d.scope, d.sparsity(), d.prune_embeddings, d.target_modules.len()), (Scope::PerTensor, 0.5, false, 7));
}

#[test]
#[cfg_attr(not(fixtures), ignore = "needs ../shared (SWEELOL_SHARED)")]
fn params_untouched_by_apply_when_nothing_is_masked() {
    // Sanity for `apply`: a model that already satisfies the masks is returned bit-identical.
    let device = Device::flex();
    let (model, masks) = prune(load_tiny(&device), &PruningConfig::default()).unwrap();
    let before = host(&model);
    let again = masks.apply(model);
    assert_eq!(host(&again), before);
}
