//! The tokenizer rebuilt from the real GGUF's vocabulary against Gemma 3's published
//! tokenizer.json: same structure, and the same ids on every text of the project's datasets.

mod common;

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Instant;

use serde_json::Value;
use sweelol_gguf::GgufFile;
use tokenizers::Tokenizer;

fn reference_json() -> String {
    common::gunzip(&common::shared().join("fixtures/gemma-3-270m/tokenizer.json.gz"))
}

fn gguf() -> GgufFile {
    GgufFile::open(&common::real_gguf()).unwrap()
}

#[test]
#[cfg_attr(not(fixtures), ignore = "needs ../shared (SWEELOL_SHARED)")]
fn tokenizer_json_reproduces_reference_structure() {
    let g = gguf();
    let t = Instant::now();
    let mine: Value = serde_json::from_str(&g.tokenizer_json().unwrap()).unwrap();
    eprintln!(
        "tokenizer.json generated in {:.2}s",
        t.elapsed().as_secs_f64()
    );
    let reference: Value = serde_json::from_str(&reference_json()).unwrap();

    for key in ["normalizer", "pre_tokenizer", "post_processor", "decoder"] {
        assert_eq!(mine[key], reference[key], "{key}");
    }
    let (m, r) = (&mine["model"], &reference["model"]);
    for key in [
        "type",
        "unk_token",
        "fuse_unk",
        "byte_fallback",
        "ignore_merges",
        "dropout",
    ] {
        assert_eq!(m[key], r[key], "model.{key}");
    }
    assert_eq!(m["vocab"], r["vocab"], "vocabularies differ");
    let merges = m["merges"].as_array().unwrap();
    assert_eq!(merges.len(), r["merges"].as_array().unwrap().len());
    assert!(
        m["merges"] == r["merges"],
        "merges differ (same count, different content or order)"
    );
    eprintln!(
        "vocab {} pieces, {} merges: identical",
        m["vocab"].as_object().unwrap().len(),
        merges.len()
    );

    // Added tokens: the same ids and texts, except the reference's <image_soft_token>, which
    // lies outside the model's vocabulary (and is not in the GGUF at all).
    let n_vocab = m["vocab"].as_object().unwrap().len() as u64;
    let table = |v: &Value| -> BTreeMap<u64, (String, bool)> {
        v["added_tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                (
                    a["id"].as_u64().unwrap(),
                    (
                        a["content"].as_str().unwrap().to_owned(),
                        a["special"].as_bool().unwrap(),
                    ),
                )
            })
            .collect()
    };
    let (mine_added, mut ref_added) = (table(&mine), table(&reference));
    let outside: Vec<_> = ref_added
        .keys()
        .copied()
        .filter(|&id| id >= n_vocab)
        .collect();
    assert_eq!(outside, vec![262_144]);
    ref_added.remove(&262_144);
    assert_eq!(mine_added.len(), 6414);
    let texts = |t: &BTreeMap<u64, (String, bool)>| {
        t.iter()
            .map(|(id, (c, _))| (*id, c.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(texts(&mine_added), texts(&ref_added));
    // The special flag only affects decoding with skip_special_tokens; the tokens a generation
    // loop must see as special are special in both.
    for id in [0, 1, 2, 3, 105, 106] {
        assert!(
            mine_added[&id].1 && ref_added[&id].1,
            "token {id} must be special"
        );
    }
    let flag_diffs = mine_added
        .iter()
        .filter(|(id, (_, s))| ref_added[id].1 != *s)
        .count();
    eprintln!("added tokens: {} identical in id and text; special flag differs on {flag_diffs} (unused/mask/image markers)", mine_added.len());
}

#[test]
#[cfg_attr(not(fixtures), ignore = "needs ../shared (SWEELOL_SHARED)")]
fn chat_markers_and_whitespace_encode_like_reference() {
    let mine = gguf().tokenizer().unwrap();
    let reference = Tokenizer::from_str(&reference_json()).unwrap();
    let samples = [
        "<start_of_turn>user\nWhy is the sky blue?<end_of_turn>\n<start_of_turn>model\n",
        "  leading and trailing spaces  ",
        "tabs\t\tand\n\n\nnewlines    and <table><tr><td>html</td></tr></table>",
        "bytes: \u{0}\u{7f} emoji 🦀🤖 CJK 漢字 Devanagari हरित ▁ marker",
        "",
    ];
    for text in samples {
        let a = mine.encode(text, true).unwrap();
        let b = reference.encode(text, true).unwrap();
        assert_eq!(a.get_ids(), b.get_ids(), "{text:?}");
        assert_eq!(a.get_ids().first(), Some(&2), "BOS first");
    }
    let ids = mine.encode(samples[0], true).unwrap().get_ids().to_vec();
    assert_eq!(ids[..3], [2, 105, 2364], "<bos> <start_of_turn> user");
    assert_eq!(
        mine.decode(&ids, false).unwrap(),
        format!("<bos>{}", samples[0])
    );
}

/// Every text the project feeds the model.
fn dataset_texts() -> Vec<(&'static str, String)> {
    let data = common::shared().join("data");
    let mut texts = Vec::new();
    for line in common::gunzip(&data.join("dolly/databricks-dolly-15k.jsonl.gz")).lines() {
        let row: Value = serde_json::from_str(line).unwrap();
        for field in ["instruction", "context", "response"] {
            texts.push(("dolly", row[field].as_str().unwrap().to_owned()));
        }
    }
    let mut csvs: Vec<_> = std::fs::read_dir(data.join("mmlu/data/test"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "csv"))
        .collect();
    csvs.sort();
    for path in csvs {
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .from_path(&path)
            .unwrap();
        for record in reader.records() {
            texts.push(("mmlu", record.unwrap()[0].to_owned()));
        }
    }
    for line in common::gunzip(&data.join("hellaswag/hellaswag_val.jsonl.gz")).lines() {
        let row: Value = serde_json::from_str(line).unwrap();
        texts.push(("hellaswag", row["ctx"].as_str().unwrap().to_owned()));
    }
    texts
}

#[test]
#[cfg_attr(not(fixtures), ignore = "needs ../shared (SWEELOL_SHARED)")]
fn gguf_tokenizer_matches_reference_on_every_dataset_text() {
    let t = Instant::now();
    let mine = gguf().tokenizer().unwrap();
    eprintln!("GGUF tokenizer built in {:.2}s", t.elapsed().as_secs_f64());
    let reference = Tokenizer::from_str(&reference_json()).unwrap();
    let texts = dataset_texts();
    let count = |name: &str| texts.iter().filter(|(s, _)| *s == name).count();
    assert_eq!(
        (count("dolly"), count("mmlu"), count("hellaswag")),
        (3 * 15011, 14042, 10042)
    );

    let inputs: Vec<&str> = texts.iter().map(|(_, t)| t.as_str()).collect();
    let t = Instant::now();
    let a = mine.encode_batch(inputs.clone(), true).unwrap();
    let b = reference.encode_batch(inputs.clone(), true).unwrap();
    eprintln!(
        "encoded {} texts twice in {:.1}s",
        inputs.len(),
        t.elapsed().as_secs_f64()
    );

    let mut tokens = 0usize;
    let mut mismatches = Vec::new();
    for ((ea, eb), (set, text)) in a.iter().zip(&b).zip(&texts) {
        tokens += ea.get_ids().len();
        if ea.get_ids() != eb.get_ids() {
            mismatches.push(format!("{set}: {text:?}"));
        }
    }
    eprintln!(
        "compared {} texts, {tokens} tokens: {} mismatches",
        texts.len(),
        mismatches.len()
    );
    assert!(
        mismatches.is_empty(),
        "{} texts tokenize differently, e.g. {:?}",
        mismatches.len(),
        &mismatches[..mismatches.len().min(3)]
    );

    // Decoding: identical to the reference, and lossless apart from a literal '▁' (the
    // normalizer maps spaces onto it, so it cannot come back).
    let ids: Vec<Vec<u32>> = a.iter().map(|e| e.get_ids().to_vec()).collect();
    let id_refs: Vec<&[u32]> = ids.iter().map(|v| v.as_slice()).collect();
    let t = Instant::now();
    let da = mine.decode_batch(&id_refs, true).unwrap();
    let db = reference.decode_batch(&id_refs, true).unwrap();
    eprintln!("decoded twice in {:.1}s", t.elapsed().as_secs_f64());
    let mut lossy = 0;
    for ((x, y), text) in da.iter().zip(&db).zip(&inputs) {
        assert_eq!(x, y, "decode differs from the reference for {text:?}");
        if x != text {
            assert!(
                text.contains('\u{2581}'),
                "decode does not round-trip {text:?}: {x:?}"
            );
            lossy += 1;
        }
    }
    eprintln!(
        "round trip exact for {} of {} texts (the rest contain a literal '▁')",
        inputs.len() - lossy,
        inputs.len()
    );
}
