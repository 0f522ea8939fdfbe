//! Tests against the real shared Dolly file and Gemma 3 tokenizer (../shared, read-only).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use parquet::arrow::ArrowWriter;
use sweelol_dolly::*;
use tokenizers::Tokenizer;

fn shared() -> PathBuf {
    sweelol_fixtures::shared_dir()
}

fn dolly_path() -> PathBuf {
    shared().join("data/dolly/databricks-dolly-15k.jsonl.gz")
}

fn real() -> &'static [DollyRecord] {
    static RECORDS: OnceLock<Vec<DollyRecord>> = OnceLock::new();
    RECORDS.get_or_init(|| load(&dolly_path()).expect("load real Dolly file"))
}

/// The shared tokenizer, gunzipped into a temp dir and loaded with `Tokenizer::from_file`.
fn tokenizer() -> &'static Tokenizer {
    static TOK: OnceLock<Tokenizer> = OnceLock::new();
    TOK.get_or_init(|| {
        let gz = std::fs::read(shared().join("fixtures/gemma-3-270m/tokenizer.json.gz")).unwrap();
        let mut json = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gz[..]), &mut json).unwrap();
        let path = temp_dir("tokenizer").join("tokenizer.json");
        std::fs::write(&path, json).unwrap();
        let tok = Tokenizer::from_file(&path).unwrap();
        std::fs::remove_file(&path).unwrap(); // 30+ MB; do not pile up in /tmp
        tok
    })
}

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sweelol-dolly-test-{tag}"));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write_temp(tag: &str, name: &str, contents: &str) -> PathBuf {
    let path = temp_dir(tag).join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

fn rec(instruction: &str, context: &str, response: &str, category: &str) -> DollyRecord {
    DollyRecord {
        instruction: instruction.into(),
        context: context.into(),
        response: response.into(),
        category: category.into(),
        earlier: Vec::new(),
    }
}

const GOOD: &str =
    r#"{"instruction": "Say hi", "context": "", "response": "hi", "category": "open_qa"}"#;

// ---------------------------------------------------------------- loading

#[test]
#[cfg_attr(not(fixtures), ignore = "needs ../shared (SWEELOL_SHARED)")]
fn real_file_has_15011_rows_and_published_category_counts() {
    let records = real();
    assert_eq!(records.len(), 15011);
    let expected: BTreeMap<String, usize> = [
        ("open_qa", 3742),
        ("general_qa", 2191),
        ("classification", 2136),
        ("closed_qa", 1773),
        ("brainstorming", 1766),
        ("information_extraction", 1506),
        ("summarization", 1188),
        ("creative_writing", 709),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(category_counts(records), expected);
}

#[test]
#[cfg_attr(not(fixtures), ignore = "needs ../shared (SWEELOL_SHARED)")]
fn real_file_first_rows_match_provenance() {
    let r = real();
    assert_eq!(
        r[0].instruction,
        "When did Virgin Australia start operating?"
    );
    assert_eq!(r[0].category, "closed_qa");
    assert_eq!(
        r[0].response,
        "Virgin Australia commenced services on 31 August 2000 as Virgin Blue, with two aircraft on a single route."
    );
    assert_eq!(
        r[1],
        rec(
            "Which is a species of fish? Tope or Rope",
            "",
            "Tope",
            "classification"
        )
    );
}

#[test]
fn plain_jsonl_with_crlf_and_trailing_newline_loads() {
    let path = write_temp("crlf", "ok.jsonl", &format!("{GOOD}\r\n{GOOD}\n"));
    assert_eq!(load(&path).unwrap().len(), 2);
}

fn load_err(tag: &str, name: &str, contents: &str) -> (PathBuf, String) {
    let path = write_temp(tag, name, contents);
    let err = load(&path).expect_err("bad file must not load").to_string();
    (path, err)
}

#[test]
fn malformed_json_line_names_file_and_line() {
    let (path, err) = load_err(
        "broken",
        "broken.jsonl",
        &format!("{GOOD}\n{GOOD}\n{{\"instruction\": \"x\",\n"),
    );
    assert!(err.contains(&path.display().to_string()), "{err}");
    assert!(
        err.contains("line 3:") && err.contains("invalid JSON"),
        "{err}"
    );
}

#[test]
fn missing_field_names_file_line_and_field() {
    let bad = r#"{"instruction": "a", "context": "", "category": "open_qa"}"#;
    let (path, err) = load_err("missing", "missing.jsonl", &format!("{GOOD}\n{bad}\n"));
    assert!(err.contains(&path.display().to_string()), "{err}");
    assert!(err.contains("line 2: missing field `response`"), "{err}");
}

#[test]
fn wrong_type_empty_fields_unknown_category_and_blank_lines_are_rejected() {
    let cases = [
        (
            r#"{"instruction": 5, "context": "", "response": "r", "category": "open_qa"}"#,
            "line 2: field `instruction` must be a string, found a number",
        ),
        (
            r#"{"instruction": "i", "context": null, "response": "r", "category": "open_qa"}"#,
            "line 2: field `context` must be a string, found null",
        ),
        (
            r#"{"instruction": "  ", "context": "", "response": "r", "category": "open_qa"}"#,
            "line 2: field `instruction` is empty",
        ),
        (
            r#"{"instruction": "i", "context": "", "response": "", "category": "open_qa"}"#,
            "line 2: field `response` is empty",
        ),
        (
            r#"{"instruction": "i", "context": "", "response": "r", "category": "poetry"}"#,
            "line 2: field `category` has unknown value \"poetry\"",
        ),
        (
            r#"["instruction"]"#,
            "line 2: expected a JSON object, found an array",
        ),
        ("", "line 2: empty line"),
    ];
    for (i, (line, want)) in cases.iter().enumerate() {
        let (_, err) = load_err(
            "cases",
            &format!("case{i}.jsonl"),
            &format!("{GOOD}\n{line}\n{GOOD}\n"),
        );
        assert!(err.contains(want), "case {i}: {err}");
    }
}

#[test]
fn unsupported_extension_and_missing_file_are_errors() {
    let (path, err) = load_err("ext", "data.csv", GOOD);
    assert!(
        err.contains(&path.display().to_string()) && err.contains("unsupported"),
        "{err}"
    );
    let missing = temp_dir("nofile").join("nope.jsonl");
    let err = load(&missing).unwrap_err().to_string();
    assert!(err.contains("nope.jsonl"), "{err}");
}

fn write_parquet(path: &Path, columns: Vec<(&str, ArrayRef)>) {
    let batch = RecordBatch::try_from_iter(columns).unwrap();
    let file = std::fs::File::create(path).unwrap();
    let mut w = ArrowWriter::try_new(file, batch.schema(), None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

fn strings<'a>(records: &'a [DollyRecord], f: impl Fn(&'a DollyRecord) -> &'a str) -> ArrayRef {
    Arc::new(StringArray::from(records.iter().map(f).collect::<Vec<_>>()))
}

#[test]
#[cfg_attr(not(fixtures), ignore = "needs ../shared (SWEELOL_SHARED)")]
fn parquet_round_trip_of_real_rows() {
    let rows = &real()[..500];
    let path = temp_dir("pq").join("train-00000-of-00001.parquet");
    write_parquet(
        &path,
        vec![
            ("instruction", strings(rows, |r| &r.instruction)),
            ("context", strings(rows, |r| &r.context)),
            ("response", strings(rows, |r| &r.response)),
            ("category", strings(rows, |r| &r.category)),
        ],
    );
    assert_eq!(load(&path).unwrap(), rows);
}

#[test]
fn parquet_bad_rows_and_columns_name_file_and_place() {
    let dir = temp_dir("pqbad");
    let s = |v: Vec<Option<&str>>| -> ArrayRef { Arc::new(StringArray::from(v)) };
    let path = dir.join("null.parquet");
    write_parquet(
        &path,
        vec![
            ("instruction", s(vec![Some("a"), Some("b"), Some("c")])),
            ("context", s(vec![Some(""), Some(""), Some("")])),
            ("response", s(vec![Some("x"), Some("y"), None])),
            (
                "category",
                s(vec![Some("open_qa"), Some("open_qa"), Some("open_qa")]),
            ),
        ],
    );
    let err = load(&path).unwrap_err().to_string();
    assert!(
        err.contains("null.parquet: row 2 (0-based): field `response` is null"),
        "{err}"
    );

    let path = dir.join("nocat.parquet");
    write_parquet(
        &path,
        vec![
            ("instruction", s(vec![Some("a")])),
            ("context", s(vec![Some("")])),
            ("response", s(vec![Some("x")])),
        ],
    );
    let err = load(&path).unwrap_err().to_string();
    assert!(
        err.contains("nocat.parquet: missing column `category`"),
        "{err}"
    );

    let path = dir.join("int.parquet");
    write_parquet(
        &path,
        vec![
            ("instruction", s(vec![Some("a")])),
            ("context", Arc::new(Int64Array::from(vec![1]))),
            ("response", s(vec![Some("x")])),
            ("category", s(vec![Some("open_qa")])),
        ],
    );
    let err = load(&path).unwrap_err().to_string();
    assert!(
        err.contains("int.parquet: column `context` has type Int64"),
        "{err}"
    );
}

// ---------------------------------------------------------------- subsets

fn spec(seed: u64, n: Option<usize>, stratify: bool) -> SubsetSpec {
    SubsetSpec {
        seed,
        n,
        stratify,
        categories: None,
    }
}

#[test]
#[cfg_attr(not(fixtures), ignore = "needs ../shared (SWEELOL_SHARED)")]
fn subsets_are_deterministic_per_seed_and_differ_across_seeds() {
    let a = subset(real(), &spec(7, Some(200), false)).unwrap();
    let b = subset(real(), &spec(7, Some(200), false)).unwrap();
    let c = subset(real(), &spec(8, Some(200), false)).unwrap();
    assert_eq!(a.len(), 200);
    assert_eq!(a, b);
    assert_ne!(a, c);
    let overlap = a.iter().filter(|r| c.contains(r)).count();
    assert!(
        overlap < 20,
        "two random 200-of-15011 draws share {overlap} rows"
    );
}

#[test]
#[cfg_attr(not(fixtures), ignore = "needs ../shared (SWEELOL_SHARED)")]
fn subsets_do_not_depend_on_file_row_order() {
    let mut reversed = real().to_vec();
    reversed.reverse();
    for stratify in [false, true] {
        let s = spec(3, Some(300), stratify);
        assert_eq!(subset(real(), &s).unwrap(), subset(&reversed, &s).unwrap());
    }
}

#[test]
#[cfg_attr(not(fixtures), ignore = "needs ../shared (SWEELOL_SHARED)")]
fn stratified_subset_follows_largest_remainder_proportions() {
    // 1000 * count / 15011, floored, plus one for the three largest remainders
    // (general_qa .96, brainstorming .65, information_extraction .33).
    let expected: BTreeMap<String, usize> = [
        ("open_qa", 249),
        ("general_qa", 146),
        ("classification", 142),
        ("closed_qa", 118),
        ("brainstorming", 118),
        ("information_extraction", 101),
        ("summarization", 79),
        ("creative_writing", 47),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let s = subset(real(), &spec(11, Some(1000), true)).unwrap();
    assert_eq!(category_counts(&s), expected);
    let mut unique = s.clone();
    unique.sort_by(|a, b| (&a.instruction, &a.response).cmp(&(&b.instruction, &b.response)));
    unique.dedup();
    assert!(unique.len() >= 995, "stratified subset repeats rows"); // Dolly has a few exact duplicates
                                                                    // Shuffled after stratifying: the first 100 are not one category.
    assert!(category_counts(&s[..100]).len() >= 5);
}

#[test]
#[cfg_attr(not(fixtures), ignore = "needs ../shared (SWEELOL_SHARED)")]
fn category_filter_and_bad_specs() {
    let s = SubsetSpec {
        seed: 1,
        n: Some(50),
        stratify: true,
        categories: Some(vec!["summarization".into(), "creative_writing".into()]),
    };
    let out = subset(real(), &s).unwrap();
    // 50 * 1188 / 1897 = 31.31, 50 * 709 / 1897 = 18.69 -> 31 and 19.
    let counts = category_counts(&out);
    assert_eq!(counts["summarization"], 31);
    assert_eq!(counts["creative_writing"], 19);
    assert_eq!(counts.len(), 2);

    let all = subset(
        real(),
        &SubsetSpec {
            n: None,
            ..s.clone()
        },
    )
    .unwrap();
    assert_eq!(all.len(), 1188 + 709);

    let bad = SubsetSpec {
        categories: Some(vec!["summarisation".into()]),
        ..s.clone()
    };
    assert!(subset(real(), &bad)
        .unwrap_err()
        .to_string()
        .contains("summarisation"));
    let too_many = SubsetSpec { n: Some(1898), ..s };
    assert!(subset(real(), &too_many)
        .unwrap_err()
        .to_string()
        .contains("1897"));
}

#[test]
#[cfg_attr(not(fixtures), ignore = "needs ../shared (SWEELOL_SHARED)")]
fn train_eval_split_is_a_deterministic_partition() {
    let (train, eval) = train_eval_split(real(), EvalSize::Fraction(0.1), 5).unwrap();
    assert_eq!(eval.len(), 1501); // round(1501.1)
    assert_eq!(train.len(), 15011 - 1501);
    let (train2, eval2) = train_eval_split(real(), EvalSize::Fraction(0.1), 5).unwrap();
    assert_eq!((&train, &eval), (&train2, &eval2));
    let mut joined: Vec<_> = train.iter().chain(&eval).cloned().collect();
    let mut orig = real().to_vec();
    let key = |r: &DollyRecord| {
        (
            r.instruction.clone(),
            r.context.clone(),
            r.response.clone(),
            r.category.clone(),
        )
    };
    joined.sort_by_key(key);
    orig.sort_by_key(key);
    assert!(joined == orig, "train + eval is not the original multiset");
    let (_, e) = train_eval_split(real(), EvalSize::Count(100), 6).unwrap();
    assert_eq!(e.len(), 100);
    assert_ne!(&e[..], &eval[..100]);
    assert!(train_eval_split(real(), EvalSize::Fraction(1.5), 5).is_err());
    assert!(train_eval_split(real(), EvalSize::Count(15012), 5).is_err());
}

// ---------------------------------------------------------------- formatting and tokens

#[test]
#[cfg_attr(not(fixtures), ignore = "needs ../shared (SWEELOL_SHARED)")]
fn chat_template_text() {
    let r = &real()[1];
    assert_eq!(
        prompt_text(r),
        "<start_of_turn>user\nWhich is a species of fish? Tope or Rope<end_of_turn>\n<start_of_turn>model\n"
    );
    assert_eq!(target_text(r), "Tope<end_of_turn>\n");
    let with_ctx = rec("Summarise. ", "Some text.\n", " Short. ", "summarization");
    assert_eq!(user_text(&with_ctx), "Summarise. \n\nSome text.");
    assert_eq!(target_text(&with_ctx), "Short.<end_of_turn>\n");
}

fn decode(ids: &[u32]) -> String {
    tokenizer().decode(ids, false).unwrap()
}

#[test]
#[cfg_attr(not(fixtures), ignore = "needs ../shared (SWEELOL_SHARED)")]
fn special_token_ids_match_the_tokenizer() {
    let t = tokenizer();
    assert_eq!(t.token_to_id("<bos>"), Some(BOS_ID));
    assert_eq!(t.token_to_id(START_OF_TURN), Some(START_OF_TURN_ID));
    assert_eq!(t.token_to_id(END_OF_TURN), Some(END_OF_TURN_ID));
    assert_eq!(t.token_to_id("<pad>"), Some(PAD_ID));
}

#[test]
#[cfg_attr(not(fixtures), ignore = "needs ../shared (SWEELOL_SHARED)")]
fn loss_mask_covers_exactly_the_response_tokens() {
    let r = &real()[1];
    let ex = tokenize(r, tokenizer(), &TokenizeConfig::default()).unwrap();
    assert_eq!(ex.input_ids[0], 2);
    assert_eq!(ex.input_ids.len(), ex.loss_mask.len());
    // <bos> <start_of_turn> user \n ... <end_of_turn> \n <start_of_turn> model \n | Tope <end_of_turn> \n
    assert_eq!(&ex.input_ids[1..4], &[105, 2364, 107]);
    assert_eq!(
        &ex.input_ids[ex.prompt_len - 5..ex.prompt_len],
        &[106, 107, 105, 4368, 107]
    );
    let target: Vec<u32> = ex
        .input_ids
        .iter()
        .zip(&ex.loss_mask)
        .filter(|p| *p.1)
        .map(|p| *p.0)
        .collect();
    let prompt: Vec<u32> = ex
        .input_ids
        .iter()
        .zip(&ex.loss_mask)
        .filter(|p| !*p.1)
        .map(|p| *p.0)
        .collect();
    assert_eq!(&target[target.len() - 2..], &[106, 107]); // <end_of_turn> \n
    assert_eq!(decode(&target), "Tope<end_of_turn>\n");
    assert_eq!(
        decode(&prompt),
        "<bos><start_of_turn>user\nWhich is a species of fish? Tope or Rope<end_of_turn>\n<start_of_turn>model\n"
    );
    // The mask is one contiguous run at the end.
    assert!(ex.loss_mask[..ex.prompt_len].iter().all(|m| !m));
    assert!(ex.loss_mask[ex.prompt_len..].iter().all(|&m| m));

    let all = tokenize(
        r,
        tokenizer(),
        &TokenizeConfig {
            train_on_prompt: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(all.input_ids, ex.input_ids);
    assert!(!all.loss_mask[0]);
    assert!(all.loss_mask[1..].iter().all(|&m| m));
}

#[test]
#[cfg_attr(not(fixtures), ignore = "needs ../shared (SWEELOL_SHARED)")]
fn separate_encoding_matches_joint_encoding_on_real_rows() {
    let t = tokenizer();
    for r in real().iter().step_by(97) {
        let ex = tokenize(
            r,
            t,
            &TokenizeConfig {
                max_len: 100_000,
                ..Default::default()
            },
        )
        .unwrap();
        let joint = t
            .encode(format!("{}{}", prompt_text(r), target_text(r)), true)
            .unwrap();
        assert_eq!(ex.input_ids, joint.get_ids(), "{:?}", r.instruction);
    }
}

#[test]
#[cfg_attr(not(fixtures), ignore = "needs ../shared (SWEELOL_SHARED)")]
fn truncation_never_exceeds_max_len_and_keeps_the_template() {
    let t = tokenizer();
    for max_len in [48, 96, 256] {
        let cfg = TokenizeConfig {
            max_len,
            min_response_tokens: 16,
            train_on_prompt: false,
        };
        let full_cfg = TokenizeConfig {
            max_len: 100_000,
            ..cfg
        };
        for r in real().iter().step_by(41) {
            let ex = tokenize(r, t, &cfg).unwrap();
            let full = tokenize(r, t, &full_cfg).unwrap();
            assert!(ex.len() <= max_len);
            let full_target = full.len() - full.prompt_len;
            let kept_target = ex.len() - ex.prompt_len;
            assert!(
                kept_target >= full_target.min(16),
                "{} < min(16, {full_target})",
                kept_target
            );
            // Target is a prefix of the full target; prompt keeps bos+head and the template tail.
            assert_eq!(
                ex.input_ids[ex.prompt_len..],
                full.input_ids[full.prompt_len..full.prompt_len + kept_target]
            );
            assert_eq!(ex.input_ids[..4], full.input_ids[..4]);
            assert_eq!(
                ex.input_ids[ex.prompt_len - 5..ex.prompt_len],
                full.input_ids[full.prompt_len - 5..full.prompt_len]
            );
            if full.len() <= max_len {
                assert_eq!(ex, full);
            }
            assert_eq!(ex.loss_mask.iter().filter(|&&m| m).count(), kept_target);
        }
    }
}

#[test]
#[cfg_attr(not(fixtures), ignore = "needs ../shared (SWEELOL_SHARED)")]
fn long_context_is_cut_before_the_instruction() {
    let r = rec(
        "Name the colour.",
        &"The sky is blue. ".repeat(200),
        "Blue.",
        "closed_qa",
    );
    let ex = tokenize(
        &r,
        tokenizer(),
        &TokenizeConfig {
            max_len: 40,
            min_response_tokens: 8,
            train_on_prompt: false,
        },
    )
    .unwrap();
    assert_eq!(ex.len(), 40);
    assert_eq!(
        decode(&ex.input_ids[ex.prompt_len..]),
        "Blue.<end_of_turn>\n"
    );
    let prompt = decode(&ex.input_ids[..ex.prompt_len]);
    assert!(
        prompt.starts_with("<bos><start_of_turn>user\nName the colour.\n\nThe sky is blue."),
        "{prompt}"
    );
    assert!(
        prompt.ends_with("<end_of_turn>\n<start_of_turn>model\n"),
        "{prompt}"
    );
    let err = tokenize(
        &r,
        tokenizer(),
        &TokenizeConfig {
            max_len: 12,
            min_response_tokens: 8,
            train_on_prompt: false,
        },
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("max_len 12"), "{err}");
}

#[test]
#[cfg_attr(not(fixtures), ignore = "needs ../shared (SWEELOL_SHARED)")]
fn load_tokenizer_reads_the_gzipped_fixture() {
    let t = load_tokenizer(&shared().join("fixtures/gemma-3-270m/tokenizer.json.gz")).unwrap();
    assert_eq!(t.get_vocab_size(true), tokenizer().get_vocab_size(true));
}

// ---------------------------------------------------------------- batches

#[test]
#[cfg_attr(not(fixtures), ignore = "needs ../shared (SWEELOL_SHARED)")]
fn bucketed_batches_cover_all_examples_pad_right_and_are_deterministic() {
    let recs = subset(real(), &spec(2, Some(700), false)).unwrap();
    let cfg = TokenizeConfig {
        max_len: 256,
        ..Default::default()
    };
    let exs = tokenize_all(&recs, tokenizer(), &cfg).unwrap();
    let batches = bucketed_batches(&exs, 8, 9).unwrap();
    assert_eq!(batches, bucketed_batches(&exs, 8, 9).unwrap());
    assert_ne!(batches, bucketed_batches(&exs, 8, 10).unwrap());
    assert_eq!(batches.len(), 88); // ceil(700 / 8)
    assert!(batches[..87].iter().all(|b| b.batch_size == 8));
    assert_eq!(batches[87].batch_size, 700 - 87 * 8);

    let mut seen: Vec<usize> = batches
        .iter()
        .flat_map(|b| b.example_indices.clone())
        .collect();
    seen.sort();
    assert_eq!(seen, (0..700).collect::<Vec<_>>());

    let mut padding = 0;
    for b in &batches {
        assert_eq!(b.input_ids.len(), b.batch_size * b.seq_len);
        for (row, &i) in b.example_indices.iter().enumerate() {
            let (ids, attn, loss) = b.row(row);
            let n = exs[i].len();
            assert_eq!(&ids[..n], &exs[i].input_ids[..]);
            assert_eq!(&loss[..n], &exs[i].loss_mask[..]);
            assert!(attn[..n].iter().all(|&a| a) && attn[n..].iter().all(|&a| !a));
            assert!(ids[n..].iter().all(|&t| t == 0) && loss[n..].iter().all(|&m| !m));
            padding += b.seq_len - n;
        }
    }
    // Bucketing keeps padding far below what random batches would need.
    let random: usize = exs
        .chunks(8)
        .map(|c| {
            let m = c.iter().map(|e| e.len()).max().unwrap();
            c.iter().map(|e| m - e.len()).sum::<usize>()
        })
        .sum();
    assert!(
        padding * 3 < random,
        "bucketed padding {padding} vs random {random}"
    );

    assert!(bucketed_batches(&exs, 0, 1).is_err());
}

/// `name` (an I64 tensor) from a safetensors file, parsed by hand to avoid a dependency.
fn safetensors_i64(path: &Path, name: &str) -> Vec<i64> {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let entry = &header[name];
    assert_eq!(entry["dtype"], "I64");
    let start = 8 + n + entry["data_offsets"][0].as_u64().unwrap() as usize;
    let end = 8 + n + entry["data_offsets"][1].as_u64().unwrap() as usize;
    bytes[start..end]
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

#[test]
#[cfg_attr(not(fixtures), ignore = "needs ../shared (SWEELOL_SHARED)")]
fn prompt_ids_match_transformers_for_the_chat_fixture() {
    // shared/fixtures prompt 2 is "<start_of_turn>user\nWho are you?<end_of_turn>\n<start_of_turn>model\n",
    // tokenized by Hugging Face transformers.
    let path = shared().join("fixtures/gemma-3-270m/expected_logits.safetensors");
    let expected: Vec<u32> = safetensors_i64(&path, "p2.input_ids")
        .iter()
        .map(|&i| i as u32)
        .collect();
    let r = rec("Who are you?", "", "I am Gemma.", "open_qa");
    let ex = tokenize(&r, tokenizer(), &TokenizeConfig::default()).unwrap();
    assert_eq!(&ex.input_ids[..ex.prompt_len], &expected[..]);
    let plain: Vec<u32> = safetensors_i64(&path, "p1.input_ids")
        .iter()
        .map(|&i| i as u32)
        .collect();
    let enc = tokenizer()
        .encode("Question: What is 7 times 8?\nAnswer:", true)
        .unwrap();
    assert_eq!(enc.get_ids(), &plain[..]);
}

// ---------------------------------------------------------------- other formats

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/examples").join(name)
}

/// The tokens a record trains on, decoded with special tokens shown.
fn targets(ex: &TokenizedExample) -> String {
    let ids: Vec<u32> = ex.input_ids.iter().zip(&ex.loss_mask).filter(|(_, &m)| m).map(|(&id, _)| id).collect();
    decode(&ids)
}

/// The example files' rows as JSON values, in file order.
fn example_rows(name: &str) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(example(name)).unwrap();
    text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// A nullable string column of `field` from each row.
fn optional_strings(rows: &[serde_json::Value], field: &str) -> ArrayRef {
    Arc::new(StringArray::from(rows.iter().map(|r| r[field].as_str()).collect::<Vec<_>>()))
}

/// `alpaca.jsonl` and `messages.jsonl` written as parquet, as the hub's exports lay them out
/// (flat string columns; `messages` a list of `{role, content}` structs).
fn example_parquet_files() -> (PathBuf, PathBuf) {
    use arrow::array::{ListArray, StructArray};
    use arrow::buffer::OffsetBuffer;
    use arrow::datatypes::{DataType, Field, Fields};
    let dir = temp_dir("examples-pq");
    let alpaca = example_rows("alpaca.jsonl");
    let alpaca_pq = dir.join("alpaca.parquet");
    let columns = ["instruction", "input", "output"].map(|c| (c, optional_strings(&alpaca, c)));
    write_parquet(&alpaca_pq, columns.to_vec());

    let chats = example_rows("messages.jsonl");
    let turns: Vec<&serde_json::Value> = chats.iter().flat_map(|r| r["messages"].as_array().unwrap()).collect();
    let text = |key: &str| -> ArrayRef { Arc::new(StringArray::from(turns.iter().map(|t| t[key].as_str().unwrap()).collect::<Vec<_>>())) };
    let fields = Fields::from(vec![Field::new("role", DataType::Utf8, true), Field::new("content", DataType::Utf8, true)]);
    let structs = StructArray::new(fields.clone(), vec![text("role"), text("content")], None);
    let lengths = chats.iter().map(|r| r["messages"].as_array().unwrap().len());
    let item = Arc::new(Field::new("item", DataType::Struct(fields), true));
    let list: ArrayRef = Arc::new(ListArray::new(item, OffsetBuffer::from_lengths(lengths), Arc::new(structs), None));
    let messages_pq = dir.join("messages.parquet");
    write_parquet(&messages_pq, vec![("messages", list), ("category", optional_strings(&chats, "category"))]);
    (alpaca_pq, messages_pq)
}

#[test]
fn the_example_files_load_in_every_format_and_container() {
    let (alpaca_pq, messages_pq) = example_parquet_files();
    for (path, format) in [
        (example("alpaca.jsonl"), DataFormat::Alpaca),
        (alpaca_pq.clone(), DataFormat::Alpaca),
        (example("messages.jsonl"), DataFormat::Messages),
        (messages_pq.clone(), DataFormat::Messages),
    ] {
        let told = load_records(&path, None).unwrap();
        assert_eq!((told.format, told.detected, told.records.len()), (format, true, 8), "{}", path.display());
        let given = load_records(&path, Some(format)).unwrap();
        assert!(!given.detected);
        assert_eq!(given.records, told.records, "{}", path.display());
    }
    // JSON Lines and parquet hold the same records.
    let alpaca = load_records(&example("alpaca.jsonl"), None).unwrap().records;
    assert_eq!(alpaca, load_records(&alpaca_pq, None).unwrap().records);
    assert_eq!((alpaca[0].context.as_str(), alpaca[0].response.as_str()), ("mouse", "mice"));
    let messages = load_records(&example("messages.jsonl"), None).unwrap().records;
    assert_eq!(messages, load_records(&messages_pq, None).unwrap().records);
    assert_eq!(messages[3].category, "translation");
    // Dolly's loader still refuses anything but Dolly.
    let msg = load(&example("alpaca.jsonl")).unwrap_err().to_string();
    assert!(msg.contains("alpaca.jsonl: line 1: missing field `context`"), "{msg}");
}

#[test]
#[cfg_attr(not(fixtures), ignore = "needs ../shared (SWEELOL_SHARED)")]
fn alpaca_trains_on_the_output_only() {
    let r = &load_records(&example("alpaca.jsonl"), None).unwrap().records[0];
    let ex = tokenize(r, tokenizer(), &TokenizeConfig::default()).unwrap();
    // "mice" is one token in Gemma 3's vocabulary (id 120121), then <end_of_turn> and "\n".
    assert_eq!(ex.loss_mask.iter().filter(|&&m| m).count(), 3);
    assert_eq!(targets(&ex), "mice<end_of_turn>\n");
    assert_eq!(decode(&ex.input_ids[..ex.prompt_len]), "<bos><start_of_turn>user\nGive the plural of the word.\n\nmouse<end_of_turn>\n<start_of_turn>model\n");
}

#[test]
#[cfg_attr(not(fixtures), ignore = "needs ../shared (SWEELOL_SHARED)")]
fn a_conversation_trains_on_every_assistant_turn_and_matches_the_chat_template() {
    let records = load_records(&example("messages.jsonl"), None).unwrap().records;
    let cfg = TokenizeConfig::default();
    // transformers' apply_chat_template with Gemma 3's own template gives these texts, 37 and
    // 43 tokens long (bos included); each answer is one token ("2", "4", "receive",
    // "separate"), so 2 x 3 tokens train.
    let cases = [
        (&records[2], "<bos><start_of_turn>user\nPick a number between 1 and 3.<end_of_turn>\n<start_of_turn>model\n2<end_of_turn>\n<start_of_turn>user\nNow double it.<end_of_turn>\n<start_of_turn>model\n4<end_of_turn>\n", 37, "2<end_of_turn>\n4<end_of_turn>\n"),
        (&records[4], "<bos><start_of_turn>user\nYou are a careful proofreader.\n\nFix the spelling: 'recieve'.<end_of_turn>\n<start_of_turn>model\nreceive<end_of_turn>\n<start_of_turn>user\nAnd 'seperate'?<end_of_turn>\n<start_of_turn>model\nseparate<end_of_turn>\n", 43, "receive<end_of_turn>\nseparate<end_of_turn>\n"),
    ];
    for (r, text, len, trained) in cases {
        let ex = tokenize(r, tokenizer(), &cfg).unwrap();
        assert_eq!(decode(&ex.input_ids), text);
        assert_eq!(ex.input_ids.len(), len);
        assert_eq!(ex.loss_mask.iter().filter(|&&m| m).count(), 6);
        assert_eq!(targets(&ex), trained);
    }
    // A system turn before a single exchange goes before the user message, as the template puts it.
    let ex = tokenize(&records[1], tokenizer(), &cfg).unwrap();
    assert!(decode(&ex.input_ids).starts_with("<bos><start_of_turn>user\nAnswer in one short sentence.\n\nWhy is the sky blue?<end_of_turn>\n"));
    assert_eq!(targets(&ex), "Air scatters blue sunlight more than red.<end_of_turn>\n");
    // Too long: the oldest exchange goes first, the last one is kept whole.
    let short = TokenizeConfig { max_len: 30, ..cfg };
    let ex = tokenize(&records[4], tokenizer(), &short).unwrap();
    assert!(ex.len() <= 30);
    assert_eq!(targets(&ex), "separate<end_of_turn>\n");
    assert!(decode(&ex.input_ids).contains("You are a careful proofreader.\n\nAnd 'seperate'?"), "{}", decode(&ex.input_ids));
}

#[test]
fn a_bad_record_of_another_format_is_named_by_file_and_line() {
    let path = write_temp("formats", "chat.jsonl", "{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}, {\"role\": \"assistant\", \"content\": \"b\"}]}\n{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}]}\n");
    let msg = load_records(&path, None).unwrap_err().to_string();
    assert!(msg.contains("chat.jsonl: line 2: `messages` must end with an assistant turn"), "{msg}");
    let path = write_temp("formats", "odd.jsonl", "{\"prompt\": \"a\", \"completion\": \"b\"}\n");
    let msg = load_records(&path, None).unwrap_err().to_string();
    assert!(msg.contains("odd.jsonl: line 1: cannot tell the format") && msg.contains("completion, prompt"), "{msg}");
}
