//! Prompt tuning on the tiny fixture.


use burn::tensor::{Device, Distribution, Int, Tensor, TensorData};
use sweelol_gemma::Gemma3;
use sweelol_prompt_tuning::{PromptTuned, PromptTuningConfig};

fn tiny(device: &Device) -> Gemma3 {
    sweelol_train::testing::tiny_fixture_model(device).unwrap()
}

fn vec(t: Tensor<3>) -> Vec<f32> {
    t.into_data().try_into_vec::<f32>().unwrap()
}

#[test]
#[cfg_attr(not(fixtures), ignore = "needs ../shared (SWEELOL_SHARED)")]
fn prompt_tuned_logits_equal_base_on_concatenated_embeddings_and_survive_peft_round_trip() {
    let device = Device::flex();
    let (n, t) = (5, 12);
    let prompt = Tensor::<2>::random([n, 64], Distribution::Normal(0.0, 1.0), &device);
    let model = PromptTuned::new(tiny(&device), prompt.clone());
    let ids: Vec<i64> = std::iter::once(2).chain((1..t as i64).map(|i| (i * 29 + 7) % 512)).collect();
    let tokens = Tensor::<2, Int>::from_data(TensorData::new(ids, [1, t]), &device);
    let got = vec(model.forward(tokens.clone()));

    // Reference: the plain base model on [prompt; scaled token embeddings], virtual positions dropped.
    let base = tiny(&device);
    let embeds = Tensor::cat(vec![prompt.unsqueeze::<3>(), base.embed(tokens.clone())], 1);
    let hidden = base.hidden_states(embeds, None).narrow(1, n, t);
    let want = vec(base.lm_head(hidden.reshape([t, 64])).reshape([1, t, 512]));
    let err = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
    assert!(err < 1e-5, "{err}");
    // The virtual tokens really change the output.
    let plain = vec(tiny(&device).forward(tokens.clone()));
    assert!(plain.iter().zip(&got).any(|(a, b)| (a - b).abs() > 1e-3));

    let dir = std::env::temp_dir().join(format!("sweelol-pt-{}", std::process::id()));
    model.save_peft(&PromptTuningConfig { num_virtual_tokens: n, ..Default::default() }, &dir, "tiny").unwrap();
    let reloaded = PromptTuned::load_peft(tiny(&device), &dir).unwrap();
    assert_eq!(reloaded.trainable_params(), n * 64);
    let again = vec(reloaded.forward(tokens));
    let err = again.iter().zip(&got).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
    assert!(err < 1e-5, "round trip {err}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
#[cfg_attr(not(fixtures), ignore = "needs ../shared (SWEELOL_SHARED)")]
fn wrong_prompt_shape_is_an_error_naming_the_file() {
    let device = Device::flex();
    let model = PromptTuned::new(tiny(&device), Tensor::zeros([3, 64], &device));
    let dir = std::env::temp_dir().join(format!("sweelol-pt-bad-{}", std::process::id()));
    model.save_peft(&PromptTuningConfig { num_virtual_tokens: 3, ..Default::default() }, &dir, "tiny").unwrap();
    let cfg = dir.join("adapter_config.json");
    let text = std::fs::read_to_string(&cfg).unwrap().replace("\"num_virtual_tokens\": 3", "\"num_virtual_tokens\": 4");
    std::fs::write(&cfg, text).unwrap();
    let err = PromptTuned::load_peft(tiny(&device), &dir).unwrap_err().to_string();
    assert!(err.contains("adapter_model.safetensors") && err.contains("prompt_embeddings"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}
