//! Writes a LoRA and a prompt-tuning adapter for the tiny fixture model, plus our logits
//! for a fixed input, so `tests/python/check_peft.py` can load them with PEFT and compare.
//!
//! `cargo run --release -p xtask --example peft_adapters -- OUT_DIR`

use std::path::PathBuf;

use burn::module::Param;
use burn::tensor::{Device, Distribution, Int, Tensor, TensorData};
use sweelol_gemma::{Gemma3, GemmaConfig, HostTensor, WeightMap};
use sweelol_lora::LoraConfig;
use sweelol_prompt_tuning::{PromptTuned, PromptTuningConfig};

fn main() -> anyhow::Result<()> {
    let out = PathBuf::from(std::env::args().nth(1).expect("usage: peft_adapters OUT_DIR"));
    let tiny = sweelol_train::testing::shared_dir().join("fixtures/tiny-gemma3");
    let device = Device::flex();
    let load = || -> anyhow::Result<Gemma3> {
        let cfg = GemmaConfig::from_file(&tiny.join("config.json"))?;
        Ok(Gemma3::from_weights(&cfg, WeightMap::read_safetensors_dir(&tiny)?, &device)?)
    };
    let ids: Vec<i64> = std::iter::once(2).chain((1..16).map(|i| (i * 37 + 11) % 512)).collect();
    let tokens = Tensor::<2, Int>::from_data(TensorData::new(ids.clone(), [1, 16]), &device);
    let mut logits = WeightMap::new(&out);
    logits.insert("input_ids", HostTensor::new(vec![16], ids.iter().map(|&x| x as f32).collect()));

    // LoRA on q, v and down with non-zero B.
    let cfg = LoraConfig {
        r: 4,
        lora_alpha: 8.0,
        target_modules: vec!["q_proj".into(), "v_proj".into(), "down_proj".into()],
        ..Default::default()
    };
    let mut model = sweelol_lora::attach(load()?, &cfg)?;
    device.seed(7);
    for layer in model.layers.iter_mut() {
        for (_, lin) in layer.linears_mut() {
            if let Some(d) = lin.delta.as_mut() {
                let shape = d.b.val().dims();
                d.b = Param::from_tensor(Tensor::random(shape, Distribution::Normal(0.0, 0.05), &device));
            }
        }
    }
    sweelol_lora::save_peft(&model, &cfg, &out.join("lora"), &tiny.display().to_string())?;
    logits.insert("lora_logits", HostTensor::from_tensor(model.forward(tokens.clone())));

    // Prompt tuning with 5 random virtual tokens.
    let pt_cfg = PromptTuningConfig { num_virtual_tokens: 5, ..Default::default() };
    let prompt = Tensor::<2>::random([5, 64], Distribution::Normal(0.0, 1.0), &device);
    let tuned = PromptTuned::new(load()?, prompt);
    tuned.save_peft(&pt_cfg, &out.join("prompt"), &tiny.display().to_string())?;
    logits.insert("prompt_logits", HostTensor::from_tensor(tuned.forward(tokens)));
    logits.write_safetensors(&out.join("sweelol_logits.safetensors"))?;
    println!("wrote adapters and logits to {}", out.display());
    Ok(())
}
