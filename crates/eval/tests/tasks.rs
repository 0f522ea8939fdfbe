//! Task datasets against the real shared files (../shared, read-only) and lm-eval's own output.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, ListBuilder, RecordBatch, StringArray, StringBuilder};
use parquet::arrow::ArrowWriter;
use sweelol_eval::tasks::hellaswag::{capitalize, preprocess};
use sweelol_eval::tasks::mmlu::{self, SUBJECTS};
use sweelol_eval::tasks::*;

fn shared() -> PathBuf {
    sweelol_fixtures::shared_dir()
}

fn data_root() -> PathBuf {
    shared().join("data")
}

fn task(name: &str, limit: Option<usize>, shots: usize) -> Task {
    load_task(&parse_task_name(name).unwrap(), &data_root(), limit, shots).unwrap()
}

fn temp_root(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sweelol-eval-test-{tag}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write(path: &Path, contents: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, contents).unwrap();
}

// ------------------------------------------------------------------ names

#[test]
fn task_names_parse() {
    assert_eq!(SUBJECTS.len(), 57);
    for name in STUDY_TASKS {
        assert_eq!(parse_task_name(name).unwrap().name, name);
    }
    for s in SUBJECTS {
        let spec = parse_task_name(&format!("mmlu_{s}")).unwrap();
        assert_eq!(
            spec.kind,
            TaskKind::Mmlu {
                subject: s.to_string()
            }
        );
    }
    assert_eq!(
        parse_task_name("hellaswag").unwrap().kind,
        TaskKind::Hellaswag
    );
    for bad in [
        "mmlu",
        "mmlu_",
        "mmlu_astrology",
        "mmlu_stem",
        "arc_easy",
        "Hellaswag",
        "",
    ] {
        assert!(
            matches!(parse_task_name(bad), Err(TaskError::UnknownTask { .. })),
            "{bad:?} should be rejected"
        );
    }
}

// ------------------------------------------------------------------ real data

#[test]
#[cfg_attr(not(fixtures), ignore = "needs ../shared (SWEELOL_SHARED)")]
fn real_doc_counts() {
    for (name, n) in [
        ("mmlu_formal_logic", 126),
        ("mmlu_high_school_computer_science", 100),
        ("mmlu_professional_law", 1534),
        ("mmlu_abstract_algebra", 100),
        ("mmlu_high_school_mathematics", 270),
        ("hellaswag", 10042),
    ] {
        let t = task(name, None, 0);
        assert_eq!(t.docs.len(), n, "{name}");
        assert_eq!(t.reports_acc_norm, name == "hellaswag");
        assert!(t
            .docs
            .iter()
            .enumerate()
            .all(|(i, d)| d.doc_id == i && d.choices.len() == 4 && d.gold < 4));
        assert_eq!(task(name, Some(20), 0).docs, t.docs[..20]);
    }
}

#[test]
#[cfg_attr(not(fixtures), ignore = "needs ../shared (SWEELOL_SHARED)")]
fn golds_and_choice_counts_match_lm_eval_baseline() {
    let raw =
        std::fs::read_to_string(shared().join("fixtures/lm-eval/baseline_first20.json")).unwrap();
    let baseline: serde_json::Value = serde_json::from_str(&raw).unwrap();
    let tasks = baseline["tasks"].as_object().unwrap();
    let mut names: Vec<&str> = tasks.keys().map(String::as_str).collect();
    names.sort();
    let mut study = STUDY_TASKS.to_vec();
    study.sort();
    assert_eq!(names, study);
    for (name, docs) in tasks {
        let t = task(name, Some(20), 0);
        let docs = docs.as_array().unwrap();
        assert_eq!(docs.len(), t.docs.len());
        for (ours, theirs) in t.docs.iter().zip(docs) {
            assert_eq!(ours.doc_id as u64, theirs["doc_id"].as_u64().unwrap());
            assert_eq!(
                ours.gold as u64,
                theirs["gold"].as_u64().unwrap(),
                "{name} doc {}",
                ours.doc_id
            );
            assert_eq!(
                ours.choices.len(),
                theirs["loglikelihoods"].as_array().unwrap().len()
            );
        }
    }
}

#[test]
#[cfg_attr(not(fixtures), ignore = "needs ../shared (SWEELOL_SHARED)")]
fn mmlu_abstract_algebra_doc0_zero_shot_text() {
    // data/mmlu/data/test/abstract_algebra_test.csv line 1:
    // "Find the degree for the given field extension Q(sqrt(2), sqrt(3), sqrt(18)) over Q.",0,4,2,6,B
    let t = task("mmlu_abstract_algebra", Some(1), 0);
    let d = &t.docs[0];
    assert_eq!(
        d.context,
        "The following are multiple choice questions (with answers) about abstract algebra.\n\n\
         Find the degree for the given field extension Q(sqrt(2), sqrt(3), sqrt(18)) over Q.\n\
         A. 0\nB. 4\nC. 2\nD. 6\nAnswer:"
    );
    assert_eq!(d.choices, ["A", "B", "C", "D"]);
    assert_eq!(d.gold, 1);
    assert_eq!(d.continuation(1), " B");
    assert_eq!(d.continuation(3), " D");
}

#[test]
#[cfg_attr(not(fixtures), ignore = "needs ../shared (SWEELOL_SHARED)")]
fn mmlu_two_shot_text_uses_first_dev_rows() {
    // dev rows 1-2 of abstract_algebra_dev.csv (answers B, B), then the test question.
    let t = task("mmlu_abstract_algebra", Some(1), 2);
    assert_eq!(
        t.docs[0].context,
        "The following are multiple choice questions (with answers) about abstract algebra.\n\n\
         Find all c in Z_3 such that Z_3[x]/(x^2 + c) is a field.\nA. 0\nB. 1\nC. 2\nD. 3\nAnswer: B\n\n\
         Statement 1 | If aH is an element of a factor group, then |aH| divides |a|. Statement 2 | If H and K \
         are subgroups of G then HK is a subgroup of G.\nA. True, True\nB. False, False\nC. True, False\n\
         D. False, True\nAnswer: B\n\n\
         Find the degree for the given field extension Q(sqrt(2), sqrt(3), sqrt(18)) over Q.\n\
         A. 0\nB. 4\nC. 2\nD. 6\nAnswer:"
    );
}

#[test]
#[cfg_attr(not(fixtures), ignore = "needs ../shared (SWEELOL_SHARED)")]
fn mmlu_five_shot_and_too_many_shots() {
    let t = task("mmlu_high_school_computer_science", Some(3), 5);
    for d in &t.docs {
        assert!(d.context.starts_with(
            "The following are multiple choice questions (with answers) about high school computer science.\n\n"
        ));
        assert_eq!(d.context.matches("\nAnswer:").count(), 6);
        assert_eq!(d.context.matches("\n\n").count(), 6); // description + 5 examples
        assert!(d.context.ends_with("\nAnswer:"));
    }
    let spec = parse_task_name("mmlu_abstract_algebra").unwrap();
    let err = load_task(&spec, &data_root(), None, 6).unwrap_err();
    assert!(matches!(err, TaskError::Unsupported(_)), "{err}");
    let hs = load_task(
        &parse_task_name("hellaswag").unwrap(),
        &data_root(),
        None,
        1,
    )
    .unwrap_err();
    assert!(matches!(hs, TaskError::Unsupported(_)), "{hs}");
}

#[test]
fn mmlu_question_is_stripped_but_choices_are_not() {
    let root = temp_root("strip");
    write(
        &root.join("mmlu/data/test/virology_test.csv"),
        "\"  What?\n\", x ,b,c,d,C\n",
    );
    let t = load_task(&parse_task_name("mmlu_virology").unwrap(), &root, None, 0).unwrap();
    assert_eq!(
        t.docs[0].context,
        "The following are multiple choice questions (with answers) about virology.\n\nWhat?\nA.  x \nB. b\nC. c\nD. d\nAnswer:"
    );
    assert_eq!(t.docs[0].gold, 2);
}

#[test]
#[cfg_attr(not(fixtures), ignore = "needs ../shared (SWEELOL_SHARED)")]
fn hellaswag_doc0_text() {
    // Line 1: activity_label "Roof shingle removal", ctx_a "A man is sitting on a roof.", ctx_b "he",
    // label 3.
    let t = task("hellaswag", Some(1), 0);
    let d = &t.docs[0];
    assert_eq!(
        d.context,
        "Roof shingle removal: A man is sitting on a roof. He"
    );
    assert_eq!(
        d.choices,
        [
            "is using wrap to wrap a pair of skis.",
            "is ripping level tiles off.",
            "is holding a rubik's cube.",
            "starts pulling up roofing on a roof.",
        ]
    );
    assert_eq!(d.gold, 3);
    assert_eq!(d.continuation(3), " starts pulling up roofing on a roof.");
}

#[test]
#[cfg_attr(not(fixtures), ignore = "needs ../shared (SWEELOL_SHARED)")]
fn hellaswag_first_wikihow_doc_text() {
    // Line 3244 (doc 3243), the first WikiHow row: ctx_b is empty, brackets everywhere.
    let t = task("hellaswag", None, 0);
    let d = &t.docs[3243];
    assert_eq!(
        d.context,
        "Personal Care and Style: How to become a fashion consultant. Obtain your high school diploma or ged. \
         This job requires a high school diploma or equivalent, so make sure to apply yourself and finish \
         school. If your high school offers these classes, take art, design, and sewing to familiarize \
         yourself with foundational concepts in fashion."
    );
    assert_eq!(
        d.choices[0],
        " Many high schools have classes offered for their students who do not have a high school diploma, \
         so be sure to register to take these classes and find a job in your field.. Search for entry-level \
         positions in fashion industries."
    );
    assert_eq!(
        d.choices[3],
        " Earn a bachelor's degree in a fashion-related field. Degrees for the fashion industry include art, \
         fashion merchandising, and marketing."
    );
    assert_eq!(d.continuation(3).chars().take(3).collect::<String>(), "  E");
    assert_eq!(d.gold, 3);
}

// ------------------------------------------------------------------ string rules

#[test]
fn capitalize_matches_python() {
    // Expected values from CPython 3.11 `str.capitalize`.
    for (input, want) in [
        ("he", "He"),
        ("hELLO wORLD", "Hello world"),
        ("", ""),
        ("123ABC", "123abc"),
        ("  he IS", "  he is"),
        ("éCOLE", "École"),
        ("ßtraße", "Sstraße"),
        ("ǆemal", "ǅemal"),
        ("ﬁNAL", "Final"),
        ("ΑΣ", "Ας"),
        ("ΑΣ Β", "Ας β"),
        ("ᾳΣ", "ᾼς"),
        ("xİ", "Xi\u{307}"),
        ("ა", "ა"),
    ] {
        assert_eq!(capitalize(input), want, "capitalize({input:?})");
    }
}

#[test]
fn preprocess_matches_lm_eval_rules() {
    // Expected values from lm-eval's `preprocess` run in CPython.
    for (input, want) in [
        ("  Hello [title] World  ", "Hello. World"),
        ("a [step] b", "a b"),
        ("x [a\nb] y", "x [a\nb] y"),
        ("[header] How to x", " How to x"),
        ("a   b", "a  b"),
        ("a [[b]] c", "a ] c"),
        ("a [x] [y] b", "a  b"),
        ("[unclosed text", "[unclosed text"),
        ("\u{1f}done\u{1f}", "done"),
        (" [title]only", "only"),
        ("end [title]", "end. "),
    ] {
        assert_eq!(preprocess(input), want, "preprocess({input:?})");
    }
}

// ------------------------------------------------------------------ bad rows

fn mmlu_err(tag: &str, csv: &str) -> (PathBuf, String) {
    let root = temp_root(tag);
    let path = root.join("mmlu/data/test/formal_logic_test.csv");
    write(&path, csv);
    let err = load_task(
        &parse_task_name("mmlu_formal_logic").unwrap(),
        &root,
        None,
        0,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains(&path.display().to_string()), "{err}");
    (path, err)
}

#[test]
fn mmlu_bad_rows_name_file_and_line() {
    // Row 1 spans lines 1-2 (quoted newline), so row 2 starts on line 3.
    let good = "\"Two\nlines\",a,b,c,d,A\n";
    let (_, e) = mmlu_err("letter", &format!("{good}q,a,b,c,d,E\n"));
    assert!(
        e.contains("line 3: answer \"E\" is not one of A, B, C, D"),
        "{e}"
    );
    let (_, e) = mmlu_err("lower", &format!("{good}q,a,b,c,d,b\n"));
    assert!(e.contains("line 3: answer \"b\""), "{e}");
    let (_, e) = mmlu_err("empty", &format!("{good}q,a,b,c,d,\n"));
    assert!(e.contains("line 3: answer \"\""), "{e}");
    let (_, e) = mmlu_err("five", &format!("{good}q,a,b,c,d\n"));
    assert!(
        e.contains("line 3: expected 6 columns (question, A, B, C, D, answer), found 5"),
        "{e}"
    );
    let (_, e) = mmlu_err("seven", &format!("{good}{good}q,a,b,c,d,e,A\n"));
    assert!(e.contains("line 5: expected 6 columns"), "{e}");
}

#[test]
fn missing_files_are_reported_with_paths() {
    let root = temp_root("missing");
    let err = load_task(&parse_task_name("mmlu_anatomy").unwrap(), &root, None, 0).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, TaskError::NotFound { .. }));
    assert!(
        msg.contains("anatomy_test.csv") && msg.contains("test-*.parquet"),
        "{msg}"
    );
    let err = load_task(&parse_task_name("hellaswag").unwrap(), &root, None, 0).unwrap_err();
    assert!(err.to_string().contains("hellaswag_val.jsonl.gz"), "{err}");
}

const HS_GOOD: &str = r#"{"ind": 1, "activity_label": "Act", "ctx_a": "A b.", "ctx_b": "then", "ctx": "A b. then", "split": "val", "split_type": "indomain", "label": 2, "endings": ["e0", "e1", "e2", "e3"], "source_id": "x"}"#;

fn hellaswag_err(tag: &str, second_line: &str) -> String {
    let root = temp_root(tag);
    let path = root.join("hellaswag/hellaswag_val.jsonl");
    write(&path, &format!("{HS_GOOD}\n{second_line}\n{HS_GOOD}\n"));
    let err = load_task(&parse_task_name("hellaswag").unwrap(), &root, None, 0)
        .unwrap_err()
        .to_string();
    assert!(err.contains(&path.display().to_string()), "{err}");
    err
}

#[test]
fn hellaswag_bad_rows_name_file_and_line() {
    let three = HS_GOOD.replace(r#", "e3"]"#, "]");
    assert!(hellaswag_err("three", &three).contains("line 2: `endings` has 3 items, expected 4"));
    let e = hellaswag_err("json", r#"{"ind": 2, "activity_label": "#);
    assert!(e.contains("line 2: invalid JSON"), "{e}");
    let e = hellaswag_err("nolabel", &HS_GOOD.replace(r#""label": 2, "#, ""));
    assert!(e.contains("line 2: missing field `label`"), "{e}");
    let e = hellaswag_err("label4", &HS_GOOD.replace(r#""label": 2"#, r#""label": 4"#));
    assert!(
        e.contains("line 2: `label` 4 is not an ending index 0..=3"),
        "{e}"
    );
    let e = hellaswag_err(
        "labelempty",
        &HS_GOOD.replace(r#""label": 2"#, r#""label": """#),
    );
    assert!(
        e.contains("line 2: `label` \"\" is not an ending index"),
        "{e}"
    );
    let e = hellaswag_err("noctx", &HS_GOOD.replace(r#""ctx_b": "then", "#, ""));
    assert!(e.contains("line 2: missing field `ctx_b`"), "{e}");
    let e = hellaswag_err("blank", "");
    assert!(e.contains("line 2: empty line"), "{e}");
}

#[test]
fn hellaswag_string_label_is_accepted() {
    let root = temp_root("strlabel");
    let row = HS_GOOD.replace(r#""label": 2"#, r#""label": "1""#);
    write(
        &root.join("hellaswag/hellaswag_val.jsonl"),
        &format!("{row}\n"),
    );
    let t = load_task(&parse_task_name("hellaswag").unwrap(), &root, None, 0).unwrap();
    assert_eq!(t.docs[0].gold, 1);
    assert_eq!(t.docs[0].context, "Act: A b. Then");
}

// ------------------------------------------------------------------ parquet layouts

fn write_parquet(path: &Path, columns: Vec<(&str, ArrayRef)>) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let batch = RecordBatch::try_from_iter(columns).unwrap();
    let mut w =
        ArrowWriter::try_new(std::fs::File::create(path).unwrap(), batch.schema(), None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

fn string_lists(rows: &[Vec<String>]) -> ArrayRef {
    let mut b = ListBuilder::new(StringBuilder::new());
    for row in rows {
        for s in row {
            b.values().append_value(s);
        }
        b.append(true);
    }
    Arc::new(b.finish())
}

/// Writes a subject's CSV rows in the cais/mmlu parquet layout.
fn write_cais(root: &Path, subject: &str, split: &str) {
    let csv = data_root().join(format!("mmlu/data/{split}/{subject}_{split}.csv"));
    let rows = mmlu::read_csv(&csv).unwrap();
    let questions: Vec<&str> = rows.iter().map(|r| r.question.as_str()).collect();
    let choices: Vec<Vec<String>> = rows.iter().map(|r| r.choices.to_vec()).collect();
    write_parquet(
        &root.join(format!("mmlu/{subject}/{split}-00000-of-00001.parquet")),
        vec![
            (
                "question",
                Arc::new(StringArray::from(questions)) as ArrayRef,
            ),
            (
                "subject",
                Arc::new(StringArray::from(vec![subject; rows.len()])),
            ),
            ("choices", string_lists(&choices)),
            (
                "answer",
                Arc::new(Int64Array::from_iter_values(
                    rows.iter().map(|r| r.answer as i64),
                )),
            ),
        ],
    );
}

#[test]
#[cfg_attr(not(fixtures), ignore = "needs ../shared (SWEELOL_SHARED)")]
fn mmlu_cais_parquet_layout_gives_the_same_docs_as_csv() {
    let root = temp_root("cais");
    write_cais(&root, "formal_logic", "test");
    write_cais(&root, "formal_logic", "dev");
    let spec = parse_task_name("mmlu_formal_logic").unwrap();
    for shots in [0, 5] {
        let from_pq = load_task(&spec, &root, None, shots).unwrap();
        assert_eq!(
            from_pq,
            task("mmlu_formal_logic", None, shots),
            "{shots}-shot"
        );
    }
}

#[test]
fn mmlu_parquet_bad_rows_name_file_and_row() {
    let root = temp_root("caisbad");
    let path = root.join("mmlu/virology/test-00000-of-00001.parquet");
    let four = |s: &str| vec![s.to_string(); 4];
    write_parquet(
        &path,
        vec![
            (
                "question",
                Arc::new(StringArray::from(vec!["q0", "q1", "q2"])) as ArrayRef,
            ),
            (
                "choices",
                string_lists(&[four("a"), four("b"), vec!["c".into(); 3]]),
            ),
            ("answer", Arc::new(Int64Array::from(vec![0, 1, 2]))),
        ],
    );
    let spec = parse_task_name("mmlu_virology").unwrap();
    let e = load_task(&spec, &root, None, 0).unwrap_err().to_string();
    assert!(
        e.contains(
            "test-00000-of-00001.parquet: row 2 (0-based): `choices` has 3 items, expected 4"
        ),
        "{e}"
    );
    write_parquet(
        &path,
        vec![
            (
                "question",
                Arc::new(StringArray::from(vec!["q0", "q1"])) as ArrayRef,
            ),
            ("choices", string_lists(&[four("a"), four("b")])),
            ("answer", Arc::new(Int64Array::from(vec![0, 7]))),
        ],
    );
    let e = load_task(&spec, &root, None, 0).unwrap_err().to_string();
    assert!(
        e.contains("row 1 (0-based): `answer` 7 is not in 0..=3"),
        "{e}"
    );
}

#[test]
#[cfg_attr(not(fixtures), ignore = "needs ../shared (SWEELOL_SHARED)")]
fn hellaswag_parquet_with_string_labels_gives_the_same_docs() {
    use std::io::BufRead;
    let gz = std::fs::File::open(data_root().join("hellaswag/hellaswag_val.jsonl.gz")).unwrap();
    // Rows 3230..3260 straddle the ActivityNet/WikiHow boundary.
    let rows: Vec<serde_json::Value> = std::io::BufReader::new(flate2::read::GzDecoder::new(gz))
        .lines()
        .take(3260)
        .map(|l| serde_json::from_str(&l.unwrap()).unwrap())
        .collect();
    let field = |name: &str| -> ArrayRef {
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r[name].as_str().unwrap().to_owned()),
        ))
    };
    let endings: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            r["endings"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e.as_str().unwrap().to_owned())
                .collect()
        })
        .collect();
    let labels = StringArray::from_iter_values(
        rows.iter()
            .map(|r| r["label"].as_i64().unwrap().to_string()),
    );
    let root = temp_root("hspq");
    write_parquet(
        &root.join("hellaswag/data/validation-00000-of-00001.parquet"),
        vec![
            (
                "ind",
                Arc::new(Int64Array::from_iter_values(
                    rows.iter().map(|r| r["ind"].as_i64().unwrap()),
                )) as ArrayRef,
            ),
            ("activity_label", field("activity_label")),
            ("ctx_a", field("ctx_a")),
            ("ctx_b", field("ctx_b")),
            ("ctx", field("ctx")),
            ("endings", string_lists(&endings)),
            ("source_id", field("source_id")),
            ("split", field("split")),
            ("split_type", field("split_type")),
            ("label", Arc::new(labels)),
        ],
    );
    let from_pq = load_task(&parse_task_name("hellaswag").unwrap(), &root, None, 0).unwrap();
    assert_eq!(from_pq.docs, task("hellaswag", Some(3260), 0).docs);
}
