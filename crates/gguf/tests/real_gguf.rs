//! The real Gemma 3 270M Q4_K_M GGUF: header contents and dequantization against the values the
//! reference `gguf` library computes (shared/fixtures/gemma-3-270m/gguf_dequant_head.*).

mod common;

use std::time::Instant;

use sweelol_gguf::{GgmlType, GgufFile};

#[test]
#[cfg_attr(not(fixtures), ignore = "needs ../shared (SWEELOL_SHARED)")]
fn dequantized_heads_match_reference() {
    let fixtures = common::shared().join("fixtures/gemma-3-270m");
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures.join("gguf_dequant_head.json")).unwrap(),
    )
    .unwrap();
    let expected_bytes = std::fs::read(fixtures.join("gguf_dequant_head.safetensors")).unwrap();
    let expected = safetensors::SafeTensors::deserialize(&expected_bytes).unwrap();

    let g = GgufFile::open(&common::real_gguf()).unwrap();
    let types = manifest["tensor_types"].as_object().unwrap();
    assert_eq!(types.len(), 5);
    for (type_name, tensor) in types {
        let name = tensor.as_str().unwrap();
        let info = g.tensor_info(name).unwrap();
        assert_eq!(info.ggml_type.to_string(), *type_name, "{name}");
        let reference = expected.tensor(name).unwrap();
        let reference: Vec<f32> = reference
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        assert_eq!(reference.len(), 256);
        let t = Instant::now();
        let (_, values) = g.tensor_f32(name).unwrap();
        let worst = values[..256]
            .iter()
            .zip(&reference)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        eprintln!(
            "{type_name:5} {name:28} {:?} decoded in {:.3}s, max |diff| {worst:e}",
            info.shape,
            t.elapsed().as_secs_f64()
        );
        assert!(
            worst <= 1e-6,
            "{name} ({type_name}): max abs difference {worst}"
        );
        assert!(
            values.iter().all(|v| v.is_finite()),
            "{name}: non-finite values"
        );
    }
}

#[test]
#[cfg_attr(not(fixtures), ignore = "needs ../shared (SWEELOL_SHARED)")]
fn header_describes_gemma3_270m() {
    let t = Instant::now();
    let g = GgufFile::open(&common::real_gguf()).unwrap();
    eprintln!("opened in {:.3}s", t.elapsed().as_secs_f64());
    assert_eq!(g.architecture().unwrap(), "gemma3");
    assert_eq!(g.get_usize("gemma3.block_count").unwrap(), 18);
    assert_eq!(g.get_usize("gemma3.embedding_length").unwrap(), 640);
    assert_eq!(g.get_usize("gemma3.attention.head_count_kv").unwrap(), 1);
    assert_eq!(g.get_f32("gemma3.rope.freq_base").unwrap(), 1_000_000.0);
    assert_eq!(
        g.get_str_array("tokenizer.ggml.tokens").unwrap().len(),
        262_144
    );
    assert_eq!(g.tensors().len(), 236);

    let emb = g.tensor_info("token_embd.weight").unwrap();
    assert_eq!(
        (emb.shape.clone(), emb.ggml_type),
        (vec![262_144, 640], GgmlType::Q8_0)
    );
    assert_eq!(
        g.tensor_info("blk.0.ffn_down.weight").unwrap().shape,
        vec![640, 2048]
    );
    assert_eq!(
        g.tensor_info("blk.0.attn_q.weight").unwrap().shape,
        vec![1024, 640]
    );
    // Every tensor in the file can be decoded.
    assert!(g.tensors().iter().all(|t| t.ggml_type.can_dequantize()));
    let t = Instant::now();
    for info in g.tensors() {
        let (shape, values) = g.tensor_f32(&info.name).unwrap();
        assert_eq!(values.len(), shape.iter().product::<usize>());
        assert!(values.iter().all(|v| v.is_finite()), "{}", info.name);
    }
    eprintln!(
        "all 236 tensors decoded in {:.2}s",
        t.elapsed().as_secs_f64()
    );
}
