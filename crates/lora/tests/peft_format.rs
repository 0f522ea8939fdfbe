//! LoRA on the tiny fixture: PEFT save/load round trip equals the merged model.


use burn::module::Param;
use burn::tensor::{Device, Distribution, Int, Tensor, TensorData};
use sweelol_gemma::Gemma3;
use sweelol_lora::{attach, load_peft, merge, save_peft, trainable_params, LoraConfig};

fn tiny(device: &Device) -> Gemma3 {
    sweelol_train::testing::tiny_fixture_model(device).unwrap()
}

fn logits(model: &Gemma3, device: &Device) -> Vec<f32> {
    let ids: Vec<i64> = (0..20).map(|i| (i * 37 + 11) % 512).collect();
    let tokens = Tensor::<2, Int>::from_data(TensorData::new(ids, [1, 20]), device);
    model.forward(tokens).into_data().try_into_vec::<f32>().unwrap()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
#[cfg_attr(not(fixtures), ignore = "needs ../shared (SWEELOL_SHARED)")]
fn peft_round_trip_equals_merged_model() {
    let device = Device::flex();
    let cfg = LoraConfig {
        r: 4,
        lora_alpha: 8.0,
        target_modules: vec!["q_proj".into(), "v_proj".into(), "down_proj".into()],
        ..Default::default()
    };
    let base_logits = logits(&tiny(&device), &device);
    let mut model = attach(tiny(&device), &cfg).unwrap();
    // Fresh adapters start as the identity (B = 0).
    assert!(max_diff(&logits(&model, &device), &base_logits) < 1e-6);
    // Give every B non-zero values so the adapters matter.
    for layer in model.layers.iter_mut() {
        for (_, lin) in layer.linears_mut() {
            if let Some(d) = lin.delta.as_mut() {
                let shape = d.b.val().dims();
                d.b = Param::from_tensor(Tensor::random(shape, Distribution::Normal(0.0, 0.05), &device));
            }
        }
    }
    let with_adapters = logits(&model, &device);
    assert!(max_diff(&with_adapters, &base_logits) > 1e-3, "adapters must change the output");

    let dir = std::env::temp_dir().join(format!("sweelol-lora-{}", std::process::id()));
    save_peft(&model, &cfg, &dir, "tiny-gemma3").unwrap();
    let (reloaded, read_cfg) = load_peft(tiny(&device), &dir).unwrap();
    assert_eq!(read_cfg.r, 4);
    assert_eq!(trainable_params(&reloaded), trainable_params(&model));
    let merged = merge(reloaded);
    let err = max_diff(&logits(&merged, &device), &with_adapters);
    println!("PEFT round trip, merged vs adapter forward: max diff {err:e}");
    assert!(err < 1e-5, "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
#[cfg_attr(not(fixtures), ignore = "needs ../shared (SWEELOL_SHARED)")]
fn trainable_counts_follow_peft_formula() {
    let device = Device::flex();
    let model = attach(tiny(&device), &LoraConfig::default()).unwrap();
    // tiny: hidden 64, 4 q heads x 32, 2 kv heads x 32, 4 layers; r = 8 on q_proj and v_proj.
    let per_layer = (64 * 8 + 8 * 128) + (64 * 8 + 8 * 64);
    assert_eq!(trainable_params(&model), 4 * per_layer);
}

#[test]
#[cfg_attr(not(fixtures), ignore = "needs ../shared (SWEELOL_SHARED)")]
fn bad_configs_and_files_are_errors() {
    let device = Device::flex();
    let bad = LoraConfig { target_modules: vec!["qkv".into()], ..Default::default() };
    assert!(attach(tiny(&device), &bad).unwrap_err().to_string().contains("qkv"));
    let dir = std::env::temp_dir().join(format!("sweelol-lora-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("adapter_config.json"), r#"{"peft_type":"LORA","r":4,"target_modules":["q_proj"]}"#).unwrap();
    let err = load_peft(tiny(&device), &dir).unwrap_err().to_string();
    assert!(err.contains("adapter_config.json") && err.contains("lora_alpha"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}
