//! The Hugging Face hub cache, laid out the way Python's `huggingface_hub` lays it out, so both
//! read and fill one copy of each file:
//!
//! ```text
//! <hub cache>/models--ORG--NAME/            (datasets: datasets--ORG--NAME)
//!     blobs/<etag>                          file contents, named by the hub's etag
//!     snapshots/<commit>/<file>             -> ../../blobs/<etag> (relative symlink)
//!     refs/<revision>                       the commit hash the revision (e.g. `main`) pointed to
//! ```
//!
//! The etag is the LFS sha256 for LFS files (`X-Linked-Etag`), else the `ETag` (a git blob
//! hash). A file is fetched as `huggingface_hub` does it: a HEAD on the resolve URL without
//! following the LFS redirect gives the commit, etag and size; a GET (following redirects)
//! streams into a temporary blob, checked against its sha256 etag before it is renamed into
//! place, under a lock in `.locks/` shared with Python's.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::{lock_file, progress_bar, unique_suffix, Options, SourceError};

/// Model and dataset repositories differ only in URL prefix and cache folder name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RepoKind {
    Model,
    Dataset,
}

/// A hub repository at a revision (a branch such as `main`, a ref such as
/// `refs/convert/parquet`, or a commit hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HubRepo {
    pub kind: RepoKind,
    pub org: String,
    pub name: String,
    pub revision: String,
}

impl HubRepo {
    /// The folder under the hub cache: `models--ORG--NAME` or `datasets--ORG--NAME`.
    pub fn folder(&self) -> String {
        let kind = match self.kind {
            RepoKind::Model => "models",
            RepoKind::Dataset => "datasets",
        };
        format!("{kind}--{}--{}", self.org, self.name)
    }

    /// `ORG/NAME`.
    pub fn id(&self) -> String {
        format!("{}/{}", self.org, self.name)
    }

    /// The repository's folder in `cache`.
    pub fn dir(&self, cache: &Path) -> PathBuf {
        cache.join(self.folder())
    }

    /// The commit the cache has for this revision: the revision itself when it is a commit
    /// hash, else what `refs/<revision>` holds. `None` when nothing was cached.
    pub fn cached_commit(&self, cache: &Path) -> Option<String> {
        if is_commit_hash(&self.revision) {
            return Some(self.revision.clone());
        }
        let text =
            std::fs::read_to_string(self.dir(cache).join("refs").join(&self.revision)).ok()?;
        let commit = text.trim();
        safe_name(commit).then(|| commit.to_owned())
    }

    /// Where `file` of `commit` lives in the cache (it may not exist).
    pub fn snapshot_file(&self, cache: &Path, commit: &str, file: &str) -> PathBuf {
        self.dir(cache).join("snapshots").join(commit).join(file)
    }

    /// The cached copy of `file` at this revision, if the cache has it (no network).
    pub fn cached_file(&self, cache: &Path, file: &str) -> Option<PathBuf> {
        let commit = self.cached_commit(cache)?;
        let path = self.snapshot_file(cache, &commit, file);
        path.is_file().then_some(path)
    }

    /// How to name this file's place in the cache for a person: the snapshot path with
    /// `<commit>` standing for the commit, and the ref file that must name it.
    pub fn describe_cache_place(&self, cache: &Path, file: &str) -> String {
        let dir = self.dir(cache);
        format!(
            "{} (with {} holding the commit hash)",
            dir.join("snapshots").join("<commit>").join(file).display(),
            dir.join("refs").join(&self.revision).display()
        )
    }
}

/// Splits `ORG/NAME` if it looks like a hub repository id: two non-empty parts of ASCII
/// letters, digits, `.`, `_`, `-`, neither starting with `.` (so it can never be `..`).
pub(crate) fn parse_repo(repo: &str) -> Option<(&str, &str)> {
    let (org, name) = repo.split_once('/')?;
    (safe_name(org) && safe_name(name)).then_some((org, name))
}

/// A single path component we are willing to create from hub answers or manifests: ASCII
/// letters, digits, `.`, `_`, `-`, not starting with `.`.
pub(crate) fn safe_name(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('.')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// A relative file path inside a repository: `/`-separated [`safe_name`] components.
pub(crate) fn safe_repo_path(path: &str) -> bool {
    path.split('/').all(safe_name)
}

/// A revision: `/`-separated [`safe_name`] components (`main`, `refs/convert/parquet`, a hash).
pub(crate) fn safe_revision(rev: &str) -> bool {
    safe_repo_path(rev)
}

fn is_commit_hash(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Percent-encodes `s` for a URL path; `/` is kept only when `keep_slash` (file paths keep
/// their folders, a revision such as `refs/convert/parquet` must be one segment).
fn url_encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'.' | b'_' | b'~')
            || (keep_slash && b == b'/')
        {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The public hub; `$HF_ENDPOINT` (or [`Options::hf_endpoint`]) points elsewhere, e.g. a mirror.
pub(crate) const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// What the HEAD on a resolve URL says about a file.
struct FileMeta {
    commit: String,
    etag: String,
    size: Option<u64>,
}

/// Why a file could not be obtained, so callers can tell "no network" from other failures.
#[derive(Debug)]
pub(crate) enum FetchError {
    /// The request never got an HTTP answer (no route, refused, timeout).
    Network(SourceError),
    /// Anything else: an HTTP error status, a bad answer, a failed check, a local file error.
    Other(SourceError),
}

impl From<FetchError> for SourceError {
    fn from(e: FetchError) -> SourceError {
        match e {
            FetchError::Network(e) | FetchError::Other(e) => e,
        }
    }
}

impl From<SourceError> for FetchError {
    fn from(e: SourceError) -> FetchError {
        FetchError::Other(e)
    }
}

/// Downloads files of one repository into the hub cache. The first answer pins the commit,
/// so all files of one fetcher come from the same snapshot.
pub(crate) struct Fetcher<'a> {
    /// The error subject: the model source, or `dataset:ORG/NAME`.
    label: String,
    repo: HubRepo,
    opts: &'a Options,
    head_agent: ureq::Agent,
    get_agent: ureq::Agent,
    commit: Option<String>,
}

impl<'a> Fetcher<'a> {
    pub fn new(label: &str, repo: HubRepo, opts: &'a Options) -> Fetcher<'a> {
        let agent = |redirects: u32| -> ureq::Agent {
            ureq::Agent::config_builder()
                .timeout_connect(Some(Duration::from_secs(30)))
                .timeout_recv_response(Some(Duration::from_secs(120)))
                // Statuses are handled below so that 401/404 get specific messages.
                .http_status_as_error(false)
                .max_redirects(redirects)
                // The token may go to the hub itself, never to the storage host it redirects to.
                .redirect_auth_headers(ureq::config::RedirectAuthHeaders::SameHost)
                .build()
                .into()
        };
        Fetcher {
            label: label.to_owned(),
            repo,
            opts,
            // The HEAD must see the hub's own answer (with the X-Linked-* headers), not the
            // storage host's.
            head_agent: agent(0),
            get_agent: agent(10),
            commit: None,
        }
    }

    /// The repository (and revision) this fetcher serves.
    pub fn repo(&self) -> &HubRepo {
        &self.repo
    }

    /// The resolve URL of `file` at `revision`.
    fn url(&self, revision: &str, file: &str) -> String {
        let prefix = match self.repo.kind {
            RepoKind::Model => "",
            RepoKind::Dataset => "datasets/",
        };
        format!(
            "{}/{prefix}{}/{}/resolve/{}/{}",
            self.opts.hf_endpoint.trim_end_matches('/'),
            self.repo.org,
            self.repo.name,
            url_encode(revision, false),
            url_encode(file, true)
        )
    }

    /// Makes sure `file` is in the cache's snapshot of the pinned commit and returns its
    /// snapshot path. `Ok(None)` when the hub has no such file and it is not `required`.
    pub fn fetch(&mut self, file: &str, required: bool) -> Result<Option<PathBuf>, FetchError> {
        if !safe_repo_path(file) {
            return Err(FetchError::Other(SourceError::invalid(
                &self.label,
                format!("refusing the unsafe repository file path '{file}'"),
            )));
        }
        let revision = self
            .commit
            .clone()
            .unwrap_or_else(|| self.repo.revision.clone());
        let url = self.url(&revision, file);
        let Some(meta) = self.head(&url, required)? else {
            return Ok(None);
        };
        if let Some(pinned) = &self.commit {
            if *pinned != meta.commit {
                return Err(self
                    .fail(
                        &url,
                        format!(
                            "asked for commit {pinned}, the hub answered for {}",
                            meta.commit
                        ),
                    )
                    .into());
            }
        }
        self.commit = Some(meta.commit.clone());

        let cache = &self.opts.hf_hub_cache;
        let dir = self.repo.dir(cache);
        let pointer = self.repo.snapshot_file(cache, &meta.commit, file);
        if !pointer.is_file() {
            let blobs = dir.join("blobs");
            let blob = blobs.join(&meta.etag);
            if !blob.is_file() {
                let locks = cache.join(".locks").join(self.repo.folder());
                for d in [&blobs, &locks] {
                    std::fs::create_dir_all(d)
                        .map_err(|e| SourceError::io(&self.label, "create directory", d, e))?;
                }
                let _lock = lock_file(&self.label, &locks.join(format!("{}.lock", meta.etag)))?;
                // Another process may have completed the download while we waited.
                if !blob.is_file() {
                    self.download(&url, file, &blob, &meta)?;
                }
            }
            link(&self.label, &pointer, &blob, &meta.etag, file)?;
        }
        write_ref(&self.label, &dir, &self.repo.revision, &meta.commit)?;
        Ok(Some(pointer))
    }

    fn fail(&self, url: &str, reason: String) -> SourceError {
        SourceError::Download {
            name: self.label.clone(),
            url: url.to_owned(),
            reason,
        }
    }

    fn with_token(
        &self,
        request: ureq::RequestBuilder<ureq::typestate::WithoutBody>,
    ) -> ureq::RequestBuilder<ureq::typestate::WithoutBody> {
        match self.opts.hf_token.as_deref() {
            Some(token) => request.header("Authorization", &format!("Bearer {token}")),
            None => request,
        }
    }

    /// Sends `request`; an answer with an error status becomes a specific message.
    fn call(
        &self,
        url: &str,
        request: ureq::RequestBuilder<ureq::typestate::WithoutBody>,
        required: bool,
    ) -> Result<Option<ureq::http::Response<ureq::Body>>, FetchError> {
        let response = self.with_token(request).call().map_err(|e| {
            FetchError::Network(self.fail(
                url,
                format!("{e} (is the hub reachable? set HF_ENDPOINT for a mirror, or HF_HUB_OFFLINE=1 to use only the cache)"),
            ))
        })?;
        let status = response.status();
        match status.as_u16() {
            200..=399 => Ok(Some(response)),
            404 if !required => Ok(None),
            401 | 403 => Err(self
                .fail(
                    url,
                    format!(
                        "HTTP {status}: the repository is gated or private; accept its license on the hub and set HF_TOKEN{}",
                        if self.opts.hf_token.is_some() { " (the HF_TOKEN given was refused)" } else { "" }
                    ),
                )
                .into()),
            _ => Err(self.fail(url, format!("HTTP {status}")).into()),
        }
    }

    /// The HEAD: commit, etag and size of the file, from the hub's own answer (a redirect for
    /// LFS files carries them in X-Linked-* headers).
    fn head(&self, url: &str, required: bool) -> Result<Option<FileMeta>, FetchError> {
        let Some(response) = self.call(url, self.head_agent.head(url), required)? else {
            return Ok(None);
        };
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let commit = header("x-repo-commit").ok_or_else(|| {
            self.fail(
                url,
                "the answer has no X-Repo-Commit header (is HF_ENDPOINT a Hugging Face hub?)"
                    .into(),
            )
        })?;
        let etag = header("x-linked-etag")
            .or_else(|| header("etag"))
            .map(|e| normalize_etag(&e))
            .ok_or_else(|| self.fail(url, "the answer has no ETag header".into()))?;
        if !safe_name(&commit) || !safe_name(&etag) {
            return Err(self
                .fail(
                    url,
                    format!("unusable commit '{commit}' or etag '{etag}' in the answer"),
                )
                .into());
        }
        let size = header("x-linked-size")
            .or_else(|| header("content-length"))
            .and_then(|v| v.parse::<u64>().ok());
        Ok(Some(FileMeta { commit, etag, size }))
    }

    /// Streams the file into a temporary sibling of `blob`, checks its size and (for a sha256
    /// etag) its hash, then renames it into place. Nothing is left behind on failure.
    fn download(
        &self,
        url: &str,
        file: &str,
        blob: &Path,
        meta: &FileMeta,
    ) -> Result<(), FetchError> {
        let response = self
            .call(url, self.get_agent.get(url), true)?
            .ok_or_else(|| self.fail(url, "HTTP 404".into()))?;
        let announced = response
            .headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let expected_size = meta.size.or(announced);
        let tmp = blob.with_file_name(format!(".{}.{}.incomplete", meta.etag, unique_suffix()));
        let result = (|| -> Result<(u64, String), FetchError> {
            let mut out =
                File::create(&tmp).map_err(|e| SourceError::io(&self.label, "create", &tmp, e))?;
            let bar = progress_bar(self.opts, expected_size, file.to_owned());
            let mut reader = response.into_body().into_reader();
            let mut hasher = Sha256::new();
            let mut buf = vec![0u8; 1 << 20];
            let mut written = 0u64;
            loop {
                let n = reader.read(&mut buf).map_err(|e| {
                    FetchError::Network(self.fail(url, format!("reading the body: {e}")))
                })?;
                if n == 0 {
                    break;
                }
                out.write_all(&buf[..n])
                    .map_err(|e| SourceError::io(&self.label, "write", &tmp, e))?;
                hasher.update(&buf[..n]);
                written += n as u64;
                bar.inc(n as u64);
            }
            bar.finish_and_clear();
            out.sync_all()
                .map_err(|e| SourceError::io(&self.label, "sync", &tmp, e))?;
            Ok((written, format!("{:x}", hasher.finalize())))
        })();
        let refuse = |reason: String| {
            let _ = std::fs::remove_file(&tmp);
            FetchError::Other(SourceError::Verify {
                name: self.label.clone(),
                path: blob.to_path_buf(),
                reason,
            })
        };
        let (written, sha256) = match result {
            Ok(r) => r,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
        };
        if let Some(size) = expected_size.filter(|&s| s != written) {
            return Err(refuse(format!(
                "got {written} bytes of {url}, the hub announced {size}"
            )));
        }
        if is_sha256(&meta.etag) && !sha256.eq_ignore_ascii_case(&meta.etag) {
            return Err(refuse(format!(
                "the content of {url} has sha256 {sha256}, but the hub's etag says {}; not kept",
                meta.etag
            )));
        }
        std::fs::rename(&tmp, blob).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            SourceError::io(&self.label, "rename into place", blob, e)
        })?;
        Ok(())
    }
}

/// `W/"abc"` → `abc`, as `huggingface_hub` normalises etags.
fn normalize_etag(etag: &str) -> String {
    etag.trim()
        .trim_start_matches("W/")
        .trim_matches('"')
        .to_owned()
}

/// Points `pointer` (snapshots/<commit>/<file>) at `blob` with a relative symlink, replacing
/// whatever was there (e.g. a link to a blob since deleted) atomically.
fn link(
    label: &str,
    pointer: &Path,
    blob: &Path,
    etag: &str,
    file: &str,
) -> Result<(), SourceError> {
    let parent = pointer.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent)
        .map_err(|e| SourceError::io(label, "create directory", parent, e))?;
    let name = pointer
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = parent.join(format!(".{name}.{}.tmp", unique_suffix()));
    // snapshots/<commit>/ plus one level per folder in `file`.
    let depth = 2 + file.matches('/').count();
    let target = PathBuf::from(format!("{}blobs/{etag}", "../".repeat(depth)));
    #[cfg(unix)]
    let made = {
        let _ = blob;
        std::os::unix::fs::symlink(&target, &tmp)
    };
    // Without symlinks (as huggingface_hub on Windows without developer mode): a copy.
    #[cfg(not(unix))]
    let made = {
        let _ = &target;
        std::fs::copy(blob, &tmp).map(|_| ())
    };
    made.map_err(|e| SourceError::io(label, "link", &tmp, e))?;
    std::fs::rename(&tmp, pointer).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        SourceError::io(label, "rename into place", pointer, e)
    })
}

/// Records that `revision` is at `commit` (`refs/<revision>`), unless the revision is the commit.
fn write_ref(
    label: &str,
    repo_dir: &Path,
    revision: &str,
    commit: &str,
) -> Result<(), SourceError> {
    if revision == commit {
        return Ok(());
    }
    let path = repo_dir.join("refs").join(revision);
    if std::fs::read_to_string(&path).is_ok_and(|t| t.trim() == commit) {
        return Ok(());
    }
    let parent = path.parent().unwrap_or(repo_dir);
    std::fs::create_dir_all(parent)
        .map_err(|e| SourceError::io(label, "create directory", parent, e))?;
    let tmp = parent.join(format!(".ref.{}.tmp", unique_suffix()));
    std::fs::write(&tmp, commit).map_err(|e| SourceError::io(label, "write", &tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        SourceError::io(label, "rename into place", &path, e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_ids() {
        assert_eq!(
            parse_repo("google/gemma-3-270m"),
            Some(("google", "gemma-3-270m"))
        );
        assert_eq!(parse_repo("a_b/c.d"), Some(("a_b", "c.d")));
        for bad in ["gemma", "/abs", "a/", "../x", "a/..", "a/b/c", "a b/c", ""] {
            assert_eq!(parse_repo(bad), None, "{bad}");
        }
    }

    #[test]
    fn layout_names_match_huggingface_hub() {
        let repo = HubRepo {
            kind: RepoKind::Dataset,
            org: "cais".into(),
            name: "mmlu".into(),
            revision: "refs/convert/parquet".into(),
        };
        assert_eq!(repo.folder(), "datasets--cais--mmlu");
        assert_eq!(
            url_encode("refs/convert/parquet", false),
            "refs%2Fconvert%2Fparquet"
        );
        assert_eq!(url_encode("a b/c.parquet", true), "a%20b/c.parquet");
        assert_eq!(normalize_etag("W/\"abc\""), "abc");
        assert_eq!(normalize_etag("\"0123\""), "0123");
        for bad in ["../x", "a//b", "/a", "a/.hidden", "a\\b", ""] {
            assert!(!safe_repo_path(bad), "{bad}");
        }
        assert!(safe_repo_path(
            "abstract_algebra/test-00000-of-00001.parquet"
        ));
    }
}
