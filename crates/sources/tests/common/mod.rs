//! Shared test helpers: scratch folders, options pointing at them, and a small local hub.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};
use sweelol_sources::Options;

/// A scratch directory removed on drop.
pub struct Scratch(PathBuf);

impl Scratch {
    pub fn new(tag: &str) -> Scratch {
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

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Options with sweelol's cache in `scratch/sweelol` and the hub cache in `scratch/hub`.
pub fn options(scratch: &Path, endpoint: &str) -> Options {
    Options {
        cache_dir: scratch.join("sweelol"),
        hf_hub_cache: scratch.join("hub"),
        hf_offline: false,
        hf_endpoint: endpoint.to_owned(),
        hf_token: None,
        python: "python3".into(),
        progress: false,
    }
}

/// An endpoint where nothing listens: any hub access fails fast.
pub const DEAD_ENDPOINT: &str = "http://127.0.0.1:9";

pub fn sha256_hex(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

/// One file a [`TestRepo`] serves.
pub struct Served {
    pub file: String,
    pub content: Vec<u8>,
    /// Served like a Git LFS file: the resolve URL redirects to `/lfs/<sha256>` (on the host name
    /// `localhost`, standing for the storage host) and the
    /// X-Linked-Etag / X-Linked-Size headers describe it.
    pub lfs: bool,
    /// An etag to announce instead of the true one (to serve corrupt content).
    pub etag: Option<String>,
}

impl Served {
    pub fn plain(file: &str, content: &[u8]) -> Served {
        Served {
            file: file.into(),
            content: content.to_vec(),
            lfs: false,
            etag: None,
        }
    }
    pub fn lfs(file: &str, content: &[u8]) -> Served {
        Served {
            file: file.into(),
            content: content.to_vec(),
            lfs: true,
            etag: None,
        }
    }
}

/// A repository on the test hub: `prefix` is `/ORG/NAME` or `/datasets/ORG/NAME`, `revision`
/// the revision as it appears in URLs (percent-encoded), `commit` what it resolves to.
pub struct TestRepo {
    pub prefix: String,
    pub revision: String,
    pub commit: String,
    pub files: Vec<Served>,
}

/// One request the test hub saw.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub auth: Option<String>,
}

/// A minimal HTTP/1.1 hub: answers HEAD and GET on resolve URLs as the Hugging Face hub does
/// (X-Repo-Commit, ETag or a redirect with X-Linked-Etag/Size for LFS files), 401 for paths
/// under `/gated/`, 404 otherwise, and records every request.
pub struct TestHub {
    pub endpoint: String,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

struct Answer {
    commit: String,
    content: Arc<Vec<u8>>,
    lfs: bool,
    etag: String,
}

impl TestHub {
    pub fn start(repos: Vec<TestRepo>) -> TestHub {
        let mut resolve: HashMap<String, Answer> = HashMap::new();
        let mut blobs: HashMap<String, Arc<Vec<u8>>> = HashMap::new();
        for repo in repos {
            for f in repo.files {
                let sha = sha256_hex(&f.content);
                let content = Arc::new(f.content);
                let etag = f.etag.unwrap_or_else(|| {
                    if f.lfs {
                        sha.clone()
                    } else {
                        // Stands in for the git blob hash of a small file.
                        sha[..40].to_owned()
                    }
                });
                blobs.insert(sha, content.clone());
                for rev in [&repo.revision, &repo.commit] {
                    resolve.insert(
                        format!("{}/resolve/{rev}/{}", repo.prefix, f.file),
                        Answer {
                            commit: repo.commit.clone(),
                            content: content.clone(),
                            lfs: f.lfs,
                            etag: etag.clone(),
                        },
                    );
                }
            }
        }
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let endpoint = format!("http://127.0.0.1:{port}");
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
                let mut words = request_line.split_whitespace();
                let method = words.next().unwrap_or("").to_owned();
                let path = words.next().unwrap_or("").to_owned();
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
                log.lock().unwrap().push(Seen {
                    method: method.clone(),
                    path: path.clone(),
                    auth,
                });
                let mut headers: Vec<(String, String)> = Vec::new();
                let (status, body): (&str, Vec<u8>) = if let Some(a) = resolve.get(&path) {
                    headers.push(("X-Repo-Commit".into(), a.commit.clone()));
                    if a.lfs {
                        headers.push(("X-Linked-Etag".into(), format!("\"{}\"", a.etag)));
                        headers.push(("X-Linked-Size".into(), a.content.len().to_string()));
                        headers.push(("ETag".into(), "\"pointer-file-etag\"".into()));
                        // Another host name for the same server, as the hub sends LFS downloads to a
                        // storage host.
                        headers.push((
                            "Location".into(),
                            format!("http://localhost:{port}/lfs/{}", sha256_hex(&a.content)),
                        ));
                        ("302 Found", Vec::new())
                    } else {
                        headers.push(("ETag".into(), format!("\"{}\"", a.etag)));
                        ("200 OK", a.content.to_vec())
                    }
                } else if let Some(b) = path.strip_prefix("/lfs/").and_then(|sha| blobs.get(sha)) {
                    ("200 OK", b.to_vec())
                } else if path.starts_with("/gated/") {
                    ("401 Unauthorized", b"gated".to_vec())
                } else {
                    ("404 Not Found", b"not found".to_vec())
                };
                let mut head = format!(
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n",
                    body.len()
                );
                for (k, v) in headers {
                    head.push_str(&format!("{k}: {v}\r\n"));
                }
                head.push_str("\r\n");
                let _ = stream.write_all(head.as_bytes());
                if method != "HEAD" {
                    let _ = stream.write_all(&body);
                }
            }
        });
        TestHub { endpoint, seen }
    }

    /// Number of requests served so far.
    pub fn requests(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    pub fn log(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// A repository folder laid out by hand the way Python's huggingface_hub leaves it: one blob
/// per file (named by its sha256), relative snapshot symlinks and `refs/<revision>`.
pub fn python_layout(repo_dir: &Path, revision: &str, commit: &str, files: &[(&str, &[u8])]) {
    let snapshot = repo_dir.join("snapshots").join(commit);
    std::fs::create_dir_all(repo_dir.join("blobs")).unwrap();
    for (file, content) in files {
        let sha = sha256_hex(content);
        std::fs::write(repo_dir.join("blobs").join(&sha), content).unwrap();
        let pointer = snapshot.join(file);
        std::fs::create_dir_all(pointer.parent().unwrap()).unwrap();
        let up = "../".repeat(2 + file.matches('/').count());
        std::os::unix::fs::symlink(format!("{up}blobs/{sha}"), &pointer).unwrap();
    }
    let refs = repo_dir.join("refs").join(revision);
    std::fs::create_dir_all(refs.parent().unwrap()).unwrap();
    std::fs::write(refs, commit).unwrap();
}
