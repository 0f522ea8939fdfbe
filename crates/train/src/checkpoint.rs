//! Checkpoints that resume mid-epoch.
//!
//! `checkpoints/step-00000012/` holds `trainable.safetensors` (the trainable parameters by
//! path), `optimizer.safetensors` (AdamW moments), `state.json` (step, data position, RNG,
//! config hash and keys, Adam step counts) and `checksums.json` (SHA-256 of the other three,
//! verified before a resume reads them: a file damaged in place is caught, not trained on).
//! A checkpoint is written into a hidden temporary directory and renamed into place, then `checkpoints/latest` is replaced the same way, so a run killed
//! at any moment leaves the previous checkpoint intact and never a half-written one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sweelol_gemma::{write_lazy_safetensors, HostTensor, LazyTensor, WeightMap};

use crate::error::{Result, TrainError};

const TRAINABLE: &str = "trainable.safetensors";
const OPTIMIZER: &str = "optimizer.safetensors";
const STATE: &str = "state.json";
const LATEST: &str = "latest";
const CHECKSUMS: &str = "checksums.json";
/// The files `checksums.json` covers.
const CHECKED: [&str; 3] = [TRAINABLE, OPTIMIZER, STATE];

/// Everything besides tensors that a resumed run needs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Optimizer steps completed.
    pub step: usize,
    /// Data position of the next micro-batch: epoch and batch index within it.
    pub epoch: usize,
    pub batch_in_epoch: usize,
    /// Index of the next micro-batch in the whole stream.
    pub next_micro_batch: usize,
    /// The run's seed; the device RNG is re-seeded from (seed, step) before every step, so
    /// (seed, step) is the complete RNG state.
    pub seed: u64,
    pub config_hash: String,
    /// What `config_hash` covers, key by key (empty in checkpoints of older versions).
    #[serde(default)]
    pub config_keys: BTreeMap<String, String>,
    /// Adam's per-parameter step counts.
    pub adam_steps: BTreeMap<String, u64>,
    /// Last training loss, for the record.
    pub last_loss: f64,
    /// Seconds of training up to this checkpoint, over every invocation of the run (0 in
    /// checkpoints of older versions): a resumed run's time is the sum of its parts.
    #[serde(default)]
    pub elapsed_s: f64,
}

/// Where a run writing to `output_dir` keeps its checkpoints.
pub fn root(output_dir: &Path) -> PathBuf {
    output_dir.join("checkpoints")
}

/// The files of one checkpoint, loaded.
pub struct Checkpoint {
    pub dir: PathBuf,
    pub trainable: BTreeMap<String, HostTensor>,
    pub optimizer: WeightMap,
    pub state: TrainState,
}

/// Writes a checkpoint under `root` and keeps only the newest `keep`. Returns its directory.
pub fn save(
    root: &Path,
    trainable: &BTreeMap<String, LazyTensor>,
    optimizer: &BTreeMap<String, LazyTensor>,
    state: &TrainState,
    keep: usize,
) -> Result<PathBuf> {
    let io = |p: &Path, e| TrainError::io(p, e);
    std::fs::create_dir_all(root).map_err(|e| io(root, e))?;
    let name = format!("step-{:08}", state.step);
    let tmp = root.join(format!(".{name}.tmp"));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| io(&tmp, e))?;
    }
    std::fs::create_dir_all(&tmp).map_err(|e| io(&tmp, e))?;
    write_lazy_safetensors(trainable, &tmp.join(TRAINABLE))?;
    write_lazy_safetensors(optimizer, &tmp.join(OPTIMIZER))?;
    let json = serde_json::to_string_pretty(state).expect("state serialises");
    std::fs::write(tmp.join(STATE), json).map_err(|e| io(&tmp.join(STATE), e))?;
    let mut sums = BTreeMap::new();
    for name in CHECKED {
        sums.insert(name.to_string(), checksum(&tmp.join(name))?);
    }
    let sums_json = serde_json::to_string_pretty(&sums).expect("checksums serialise");
    std::fs::write(tmp.join(CHECKSUMS), sums_json).map_err(|e| io(&tmp.join(CHECKSUMS), e))?;

    let dir = root.join(&name);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|e| io(&dir, e))?;
    }
    std::fs::rename(&tmp, &dir).map_err(|e| io(&dir, e))?;
    let latest_tmp = root.join(".latest.tmp");
    std::fs::write(&latest_tmp, &name).map_err(|e| io(&latest_tmp, e))?;
    std::fs::rename(&latest_tmp, root.join(LATEST)).map_err(|e| io(&root.join(LATEST), e))?;

    for old in list(root)?.into_iter().rev().skip(keep) {
        std::fs::remove_dir_all(&old).map_err(|e| io(&old, e))?;
    }
    Ok(dir)
}

/// Finished checkpoint directories under `root`, oldest first.
pub fn list(root: &Path) -> Result<Vec<PathBuf>> {
    if !root.is_dir() {
        return Ok(Vec::new());
    }
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root)
        .map_err(|e| TrainError::io(root, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir() && p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("step-")))
        .collect();
    dirs.sort();
    Ok(dirs)
}

/// The checkpoint `latest` points to, if any.
pub fn latest(root: &Path) -> Result<Option<PathBuf>> {
    let pointer = root.join(LATEST);
    if !pointer.exists() {
        return Ok(None);
    }
    let name = std::fs::read_to_string(&pointer).map_err(|e| TrainError::io(&pointer, e))?;
    let dir = root.join(name.trim());
    if !dir.is_dir() {
        return Err(TrainError::checkpoint(&dir, "named by `latest` but missing"));
    }
    Ok(Some(dir))
}

/// Checkpoints to try on resume, best first: the one `latest` names, then the others
/// newest first (so a damaged newest one can fall back to its predecessor).
pub fn candidates(root: &Path) -> Result<Vec<PathBuf>> {
    let mut dirs = list(root)?;
    dirs.reverse();
    let pointer = root.join(LATEST);
    if let Ok(name) = std::fs::read_to_string(&pointer) {
        let named = root.join(name.trim());
        if let Some(i) = dirs.iter().position(|d| *d == named) {
            let d = dirs.remove(i);
            dirs.insert(0, d);
        }
    }
    Ok(dirs)
}

/// Renames a bad checkpoint to `bad-step-…` beside it (kept for inspection, no longer
/// listed). Returns the new path.
pub fn move_aside(dir: &Path) -> Result<PathBuf> {
    let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let aside = dir.with_file_name(format!("bad-{name}"));
    if aside.exists() {
        std::fs::remove_dir_all(&aside).map_err(|e| TrainError::io(&aside, e))?;
    }
    std::fs::rename(dir, &aside).map_err(|e| TrainError::io(dir, e))?;
    Ok(aside)
}

fn checksum(path: &Path) -> Result<String> {
    sweelol_outdir::sha256_file(path).map_err(|e| TrainError::checkpoint(path, e.to_string()))
}

/// Compares every file with `checksums.json`; names the first file that differs. A
/// checkpoint of an older version (no `checksums.json`) passes with a warning.
pub fn verify(dir: &Path) -> Result<()> {
    let path = dir.join(CHECKSUMS);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("warning: {} has no {CHECKSUMS} (older version); its files are not verified", dir.display());
            return Ok(());
        }
        Err(e) => return Err(TrainError::io(&path, e)),
    };
    let sums: BTreeMap<String, String> =
        serde_json::from_str(&text).map_err(|e| TrainError::checkpoint(&path, format!("not a checksum list: {e}")))?;
    for name in CHECKED {
        let file = dir.join(name);
        let Some(expected) = sums.get(name) else {
            return Err(TrainError::checkpoint(&path, format!("no checksum for {name}")));
        };
        if !file.is_file() {
            return Err(TrainError::checkpoint(&file, "missing"));
        }
        let actual = checksum(&file)?;
        if &actual != expected {
            return Err(TrainError::checkpoint(&file, format!("checksum mismatch (sha256 {actual}, recorded {expected})")));
        }
    }
    Ok(())
}

/// Reads a checkpoint directory after verifying its checksums.
pub fn load(dir: &Path) -> Result<Checkpoint> {
    verify(dir)?;
    let state_path = dir.join(STATE);
    let text = std::fs::read_to_string(&state_path).map_err(|e| TrainError::io(&state_path, e))?;
    let state: TrainState =
        serde_json::from_str(&text).map_err(|e| TrainError::checkpoint(dir, format!("{STATE}: {e}")))?;
    let mut trainable = WeightMap::new(dir.join(TRAINABLE));
    trainable.read_safetensors_file(&dir.join(TRAINABLE))?;
    let mut optimizer = WeightMap::new(dir.join(OPTIMIZER));
    optimizer.read_safetensors_file(&dir.join(OPTIMIZER))?;
    Ok(Checkpoint { dir: dir.to_path_buf(), trainable: trainable.tensors, optimizer, state })
}
