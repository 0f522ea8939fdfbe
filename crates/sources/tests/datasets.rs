//! Finding datasets: a complete data root is used as is; missing pieces come from the hub copies
//! a (test) manifest names, through the shared hub cache, checked against the manifest; offline
//! or unreachable, the error lists the files to place. A local test hub serves small copies.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use parquet::arrow::ArrowWriter;

use common::{
    options, python_layout, sha256_hex, Scratch, Served, TestHub, TestRepo, DEAD_ENDPOINT,
};
use sweelol_sources::{
    prepare_data, DataManifest, DataNeeds, Options, PreparedData, SourceError,
};

const MMLU_COMMIT: &str = "1111111111111111111111111111111111111111";
const HELLASWAG_COMMIT: &str = "2222222222222222222222222222222222222222";
const DOLLY_COMMIT: &str = "3333333333333333333333333333333333333333";

/// A parquet file of `rows` MMLU-like rows.
fn parquet(rows: usize) -> Vec<u8> {
    let question: StringArray = (0..rows).map(|i| Some(format!("question {i}"))).collect();
    let answer = Int64Array::from((0..rows as i64).map(|i| i % 4).collect::<Vec<_>>());
    let batch = RecordBatch::try_from_iter([
        ("question", Arc::new(question) as ArrayRef),
        ("answer", Arc::new(answer) as ArrayRef),
    ])
    .unwrap();
    let mut out = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut out, batch.schema(), None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
    out
}

/// Dolly-like JSON Lines with `rows` rows and, like upstream, no newline after the last.
fn dolly_jsonl(rows: usize) -> Vec<u8> {
    (0..rows)
        .map(|i| format!(r#"{{"instruction": "q{i}", "context": "", "response": "a{i}", "category": "open_qa"}}"#))
        .collect::<Vec<_>>()
        .join("\n")
        .into_bytes()
}

/// The small copies the test hub serves: (repository file, content).
struct Copies {
    dolly: Vec<u8>,
    algebra_test: Vec<u8>,
    algebra_dev: Vec<u8>,
    logic_test: Vec<u8>,
    hellaswag: Vec<u8>,
}

fn copies() -> Copies {
    Copies {
        dolly: dolly_jsonl(3),
        algebra_test: parquet(4),
        algebra_dev: parquet(2),
        logic_test: parquet(3),
        hellaswag: parquet(5),
    }
}

fn hub_for(c: &Copies) -> TestHub {
    TestHub::start(vec![
        TestRepo {
            prefix: "/datasets/databricks/databricks-dolly-15k".into(),
            revision: "main".into(),
            commit: DOLLY_COMMIT.into(),
            files: vec![Served::lfs("databricks-dolly-15k.jsonl", &c.dolly)],
        },
        TestRepo {
            prefix: "/datasets/cais/mmlu".into(),
            revision: "main".into(),
            commit: MMLU_COMMIT.into(),
            files: vec![
                Served::lfs(
                    "abstract_algebra/test-00000-of-00001.parquet",
                    &c.algebra_test,
                ),
                Served::lfs(
                    "abstract_algebra/dev-00000-of-00001.parquet",
                    &c.algebra_dev,
                ),
                Served::lfs("formal_logic/test-00000-of-00001.parquet", &c.logic_test),
            ],
        },
        TestRepo {
            prefix: "/datasets/Rowan/hellaswag".into(),
            revision: "refs%2Fconvert%2Fparquet".into(),
            commit: HELLASWAG_COMMIT.into(),
            files: vec![Served::lfs("default/validation/0000.parquet", &c.hellaswag)],
        },
    ])
}

/// A manifest for the small copies; `algebra_test_rows` and `dolly_sha` are parameters so tests
/// can make the manifest disagree with the files.
fn manifest_text(algebra_test_rows: u64, dolly_sha: &str) -> String {
    format!(
        r#"{{"description": "test", "datasets": [
  {{"name": "dolly", "rows": 15011, "hub": {{"repo": "databricks/databricks-dolly-15k", "files": [
    {{"file": "databricks-dolly-15k.jsonl", "path": "dolly/databricks-dolly-15k.jsonl", "rows": 3, "sha256": "{dolly_sha}"}}]}}}},
  {{"name": "mmlu", "sha256": [{{"file": "ignored"}}], "hub": {{"repo": "cais/mmlu", "revision": "main", "files": [
    {{"file": "abstract_algebra/test-00000-of-00001.parquet", "path": "mmlu/abstract_algebra/test-00000-of-00001.parquet", "rows": {algebra_test_rows}}},
    {{"file": "abstract_algebra/dev-00000-of-00001.parquet", "path": "mmlu/abstract_algebra/dev-00000-of-00001.parquet", "rows": 2}},
    {{"file": "formal_logic/test-00000-of-00001.parquet", "path": "mmlu/formal_logic/test-00000-of-00001.parquet", "rows": 3}}]}}}},
  {{"name": "hellaswag", "hub": {{"repo": "Rowan/hellaswag", "revision": "refs/convert/parquet", "files": [
    {{"file": "default/validation/0000.parquet", "path": "hellaswag/data/validation-00000-of-00001.parquet", "rows": 5}}]}}}}
]}}"#
    )
}

fn manifest(c: &Copies) -> DataManifest {
    DataManifest::parse(&manifest_text(4, &sha256_hex(&c.dolly)), "test manifest").unwrap()
}

fn all_needs() -> DataNeeds {
    DataNeeds {
        dolly: true,
        hellaswag: true,
        mmlu_subjects: vec!["abstract_algebra".into()],
        mmlu_splits: vec!["test".into(), "dev".into()],
    }
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

fn err_text(r: Result<PreparedData, SourceError>) -> String {
    match r {
        Ok(p) => panic!("expected an error, got {p:?}"),
        Err(e) => e.to_string(),
    }
}

fn offline(o: &Options) -> Options {
    let mut o = o.clone();
    o.hf_offline = true;
    o
}

#[test]
fn complete_data_root_is_used_as_is() {
    let s = Scratch::new("ds-complete");
    let c = copies();
    let root = s.path().join("data");
    // The manifest's layout for Dolly and HellaSwag, an accepted alternative for MMLU
    // (cais/mmlu parquet for one split, CSV for the other).
    write(
        &root.join("dolly/databricks-dolly-15k.jsonl.gz"),
        b"not read here",
    );
    write(
        &root.join("hellaswag/hellaswag_val.jsonl.gz"),
        b"not read here",
    );
    write(
        &root.join("mmlu/data/test/abstract_algebra_test.csv"),
        b"q,a,b,c,d,A\n",
    );
    write(
        &root.join("mmlu/abstract_algebra/dev-00000-of-00001.parquet"),
        &c.algebra_dev,
    );
    let o = options(s.path(), DEAD_ENDPOINT);
    let got = prepare_data(&root, &all_needs(), &manifest(&c), &o).unwrap();
    assert_eq!(got.root, root);
    assert_eq!(
        got.dolly,
        Some(root.join("dolly/databricks-dolly-15k.jsonl.gz"))
    );
    let expected_origin = format!("mmlu: 2 files from the data root {}", root.display());
    assert!(got.origins.contains(&expected_origin), "{:?}", got.origins);
    assert!(
        !s.path().join("hub").exists(),
        "nothing fetched, nothing cached"
    );
}

#[test]
fn missing_data_is_fetched_into_the_hub_cache_and_exposed() {
    let s = Scratch::new("ds-fetch");
    let c = copies();
    let hub = hub_for(&c);
    let root = s.path().join("empty-data");
    let o = options(s.path(), &hub.endpoint);
    let got = prepare_data(&root, &all_needs(), &manifest(&c), &o).unwrap();

    // The loaders' root is a view under sweelol's cache, in the data-root layout.
    assert!(
        got.root.starts_with(s.path().join("sweelol/data")),
        "{}",
        got.root.display()
    );
    for (rel, content) in [
        (
            "mmlu/abstract_algebra/test-00000-of-00001.parquet",
            &c.algebra_test,
        ),
        (
            "mmlu/abstract_algebra/dev-00000-of-00001.parquet",
            &c.algebra_dev,
        ),
        (
            "hellaswag/data/validation-00000-of-00001.parquet",
            &c.hellaswag,
        ),
        ("dolly/databricks-dolly-15k.jsonl", &c.dolly),
    ] {
        assert_eq!(
            &std::fs::read(got.root.join(rel)).unwrap(),
            content,
            "{rel}"
        );
    }
    assert!(
        !got.root.join("mmlu/formal_logic").exists(),
        "only what was asked for"
    );

    // The files themselves live in the hub cache, in huggingface_hub's layout.
    let hub_dir = s.path().join("hub");
    let dolly = hub_dir
        .join("datasets--databricks--databricks-dolly-15k/snapshots")
        .join(DOLLY_COMMIT)
        .join("databricks-dolly-15k.jsonl");
    assert_eq!(got.dolly, Some(dolly));
    let mmlu = hub_dir.join("datasets--cais--mmlu");
    assert_eq!(
        std::fs::read_to_string(mmlu.join("refs/main")).unwrap(),
        MMLU_COMMIT
    );
    assert_eq!(
        std::fs::read_link(
            mmlu.join("snapshots")
                .join(MMLU_COMMIT)
                .join("abstract_algebra/test-00000-of-00001.parquet")
        )
        .unwrap(),
        PathBuf::from(format!("../../../blobs/{}", sha256_hex(&c.algebra_test)))
    );
    let hellaswag = hub_dir.join("datasets--Rowan--hellaswag");
    assert_eq!(
        std::fs::read_to_string(hellaswag.join("refs/refs/convert/parquet")).unwrap(),
        HELLASWAG_COMMIT
    );
    assert_eq!(
        std::fs::read_link(
            hellaswag
                .join("snapshots")
                .join(HELLASWAG_COMMIT)
                .join("default/validation/0000.parquet")
        )
        .unwrap(),
        PathBuf::from(format!("../../../../blobs/{}", sha256_hex(&c.hellaswag)))
    );
    assert!(hub
        .log()
        .iter()
        .any(|r| r.method == "HEAD" && r.path == "/datasets/Rowan/hellaswag/resolve/refs%2Fconvert%2Fparquet/default/validation/0000.parquet"));
    let from_hub = format!(
        "hellaswag: 1 file from the hub cache {} (Rowan/hellaswag@refs/convert/parquet)",
        hellaswag.display()
    );
    assert!(got.origins.contains(&from_hub), "{:?}", got.origins);

    // Again: the same view, and not one request.
    let before = hub.requests();
    let again = prepare_data(&root, &all_needs(), &manifest(&c), &o).unwrap();
    assert_eq!(again, got);
    assert_eq!(hub.requests(), before);
    // And offline too, from the cache alone.
    assert_eq!(
        prepare_data(&root, &all_needs(), &manifest(&c), &offline(&o))
            .unwrap()
            .root,
        got.root
    );
}

#[test]
fn a_partial_data_root_is_completed_from_the_hub() {
    let s = Scratch::new("ds-mixed");
    let c = copies();
    let hub = hub_for(&c);
    let root = s.path().join("data");
    let csv = root.join("mmlu/data/test/abstract_algebra_test.csv");
    write(&csv, b"q,a,b,c,d,A\n");
    let needs = DataNeeds {
        mmlu_subjects: vec!["abstract_algebra".into(), "formal_logic".into()],
        ..Default::default()
    };
    let o = options(s.path(), &hub.endpoint);
    let got = prepare_data(&root, &needs, &manifest(&c), &o).unwrap();
    assert_ne!(got.root, root);
    let local = got.root.join("mmlu/data/test/abstract_algebra_test.csv");
    assert_eq!(
        std::fs::read_link(&local).unwrap(),
        csv,
        "linked to the data root's own file"
    );
    assert!(
        !got.root.join("mmlu/abstract_algebra").exists(),
        "one form per piece"
    );
    assert_eq!(
        std::fs::read(
            got.root
                .join("mmlu/formal_logic/test-00000-of-00001.parquet")
        )
        .unwrap(),
        c.logic_test
    );
    assert!(
        hub.log()
            .iter()
            .all(|r| !r.path.contains("abstract_algebra")),
        "{:?}",
        hub.log()
    );
    assert_eq!(got.origins.len(), 1);
    assert!(
        got.origins[0].starts_with("mmlu: 1 file from the data root")
            && got.origins[0].contains("; 1 file from the hub cache"),
        "{:?}",
        got.origins
    );
}

#[test]
fn fetched_files_must_match_the_manifest() {
    let c = copies();
    let hub = hub_for(&c);
    let algebra = DataNeeds {
        mmlu_subjects: vec!["abstract_algebra".into()],
        ..Default::default()
    };

    let s = Scratch::new("ds-rows");
    let wrong_rows = DataManifest::parse(&manifest_text(7, &sha256_hex(&c.dolly)), "m").unwrap();
    let msg = err_text(prepare_data(
        &s.path().join("data"),
        &algebra,
        &wrong_rows,
        &options(s.path(), &hub.endpoint),
    ));
    assert!(
        msg.contains("dataset 'cais/mmlu'") && msg.contains("has 4 rows, the manifest expects 7"),
        "{msg}"
    );

    let s = Scratch::new("ds-sha");
    let other_sha = sha256_hex(b"a different dolly");
    let wrong_sha = DataManifest::parse(&manifest_text(4, &other_sha), "m").unwrap();
    let dolly = DataNeeds {
        dolly: true,
        ..Default::default()
    };
    let msg = err_text(prepare_data(
        &s.path().join("data"),
        &dolly,
        &wrong_sha,
        &options(s.path(), &hub.endpoint),
    ));
    assert!(
        msg.contains(&format!(
            "has sha256 {}, the manifest expects {other_sha}",
            sha256_hex(&c.dolly)
        )),
        "{msg}"
    );
}

#[test]
fn offline_lists_the_files_to_place() {
    let s = Scratch::new("ds-offline");
    let c = copies();
    let hub = hub_for(&c);
    let root = s.path().join("data");
    let o = offline(&options(s.path(), &hub.endpoint));
    let msg = err_text(prepare_data(&root, &all_needs(), &manifest(&c), &o));
    let hub_dir = s.path().join("hub");
    for expected in [
        "(HF_HUB_OFFLINE is set)".to_owned(),
        format!("mmlu abstract_algebra dev: put mmlu/data/dev/abstract_algebra_dev.csv or mmlu/abstract_algebra/dev-*.parquet under the data root {}", root.display()),
        hub_dir
            .join("datasets--cais--mmlu/snapshots/<commit>/abstract_algebra/dev-00000-of-00001.parquet")
            .display()
            .to_string(),
        hub_dir.join("datasets--cais--mmlu/refs/main").display().to_string(),
        "hellaswag/hellaswag_val.jsonl.gz or hellaswag/hellaswag_val.jsonl or hellaswag/validation-*.parquet or hellaswag/data/validation-*.parquet".to_owned(),
        hub_dir.join("datasets--Rowan--hellaswag/refs/refs/convert/parquet").display().to_string(),
        "--revision refs/convert/parquet default/validation/0000.parquet".to_owned(),
        "dolly/databricks-dolly-15k.jsonl.gz".to_owned(),
    ] {
        assert!(msg.contains(&expected), "missing {expected:?} in:\n{msg}");
    }
    assert_eq!(
        msg.matches("\n  - ").count(),
        4,
        "dolly, hellaswag, two mmlu pieces:\n{msg}"
    );
    assert_eq!(hub.requests(), 0, "offline means no request");
}

#[test]
fn unreachable_hub_lists_the_files_to_place() {
    let s = Scratch::new("ds-dead");
    let c = copies();
    let o = options(s.path(), DEAD_ENDPOINT);
    let msg = err_text(prepare_data(
        &s.path().join("data"),
        &all_needs(),
        &manifest(&c),
        &o,
    ));
    assert!(
        msg.contains("reachable") && msg.contains("HF_HUB_OFFLINE=1"),
        "{msg}"
    );
    assert_eq!(msg.matches("\n  - ").count(), 4, "{msg}");
    assert!(
        msg.contains("mmlu/data/test/abstract_algebra_test.csv"),
        "{msg}"
    );
}

#[test]
fn python_populated_dataset_cache_is_used_offline() {
    let s = Scratch::new("ds-python");
    let c = copies();
    python_layout(
        &s.path().join("hub/datasets--cais--mmlu"),
        "main",
        MMLU_COMMIT,
        &[("formal_logic/test-00000-of-00001.parquet", &c.logic_test)],
    );
    let needs = DataNeeds {
        mmlu_subjects: vec!["formal_logic".into()],
        ..Default::default()
    };
    let o = offline(&options(s.path(), DEAD_ENDPOINT));
    let got = prepare_data(&s.path().join("data"), &needs, &manifest(&c), &o).unwrap();
    assert_eq!(
        std::fs::read(
            got.root
                .join("mmlu/formal_logic/test-00000-of-00001.parquet")
        )
        .unwrap(),
        c.logic_test
    );
}

#[test]
fn bad_manifests_are_refused_with_their_origin() {
    for (text, expected) in [
        ("{", "invalid"),
        (
            r#"{"datasets": [{"name": "x", "hub": {"repo": "no-slash", "files": []}}]}"#,
            "not ORG/NAME",
        ),
        (
            r#"{"datasets": [{"name": "x", "hub": {"repo": "a/b", "files": [{"file": "../up", "path": "x/y", "rows": 1}]}}]}"#,
            "unsafe file '../up'",
        ),
        (
            r#"{"datasets": [{"name": "x", "hub": {"repo": "a/b", "files": [{"file": "f", "path": "x/y", "rows": 1, "sha256": "abc"}]}}]}"#,
            "not 64 hex digits",
        ),
    ] {
        let msg = DataManifest::parse(text, "the-origin.json")
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("the-origin.json") && msg.contains(expected),
            "{msg}"
        );
    }
}

/// The repository's own manifest names hub copies for everything the study reads, with the
/// row counts data/README.md gives.
#[test]
fn repository_manifest_covers_the_study() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/manifest.json");
    let m = DataManifest::load(&path).unwrap();
    let file = |dataset: &str, name: &str| {
        let copy = m
            .hub_copy(dataset)
            .unwrap_or_else(|| panic!("no hub copy of {dataset}"));
        copy.files
            .iter()
            .find(|f| f.file == name)
            .unwrap_or_else(|| panic!("{dataset}: no {name}"))
            .clone()
    };
    let dolly = file("dolly", "databricks-dolly-15k.jsonl");
    assert_eq!(dolly.rows, 15011);
    assert_eq!(
        dolly.sha256.as_deref(),
        Some("2df9083338b4abd6bceb5635764dab5d833b393b55759dffb0959b6fcbf794ec")
    );
    assert_eq!(
        m.hub_copy("dolly").unwrap().repo,
        "databricks/databricks-dolly-15k"
    );
    for (subject, rows) in [
        ("formal_logic", 126),
        ("high_school_computer_science", 100),
        ("professional_law", 1534),
        ("abstract_algebra", 100),
        ("high_school_mathematics", 270),
    ] {
        let test = file("mmlu", &format!("{subject}/test-00000-of-00001.parquet"));
        assert_eq!(
            (test.rows, test.path.as_str()),
            (
                rows,
                format!("mmlu/{subject}/test-00000-of-00001.parquet").as_str()
            )
        );
        assert_eq!(
            file("mmlu", &format!("{subject}/dev-00000-of-00001.parquet")).rows,
            5
        );
    }
    let mmlu = m.hub_copy("mmlu").unwrap();
    assert_eq!(mmlu.repo, "cais/mmlu");
    assert_eq!(mmlu.files.len(), 171, "57 subjects x test, dev, validation");
    let total = |split: &str| {
        mmlu.files
            .iter()
            .filter(|f| f.file.contains(&format!("/{split}-")))
            .map(|f| f.rows)
            .sum::<u64>()
    };
    assert_eq!(
        (total("test"), total("dev"), total("validation")),
        (14042, 285, 1531)
    );
    let hellaswag = m.hub_copy("hellaswag").unwrap();
    assert_eq!(
        (hellaswag.repo.as_str(), hellaswag.files.len()),
        ("Rowan/hellaswag", 1)
    );
    assert_eq!(hellaswag.files[0].rows, 10042);
}
