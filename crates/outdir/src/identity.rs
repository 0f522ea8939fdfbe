//! What produced a directory's results, as named fields in `identity.json`.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::{OutDirError, Result};

/// The identity file inside an output directory.
pub const IDENTITY_FILE: &str = "identity.json";

/// Fields that say what produced the results but never decide whether they are reused.
/// `code_version`: another build scores the same model the same way (the parity tests pin
/// the scores, as they pin training), so a new commit does not redo hours of finished work;
/// the file keeps the version that made the results.
pub const RECORDED_ONLY: [&str; 1] = ["code_version"];

/// Named fields (model hash, tokenizer hash, few-shot count, backend, code version, …);
/// two runs may share results only when every field is equal, except the
/// [`RECORDED_ONLY`] ones.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity(BTreeMap<String, String>);

impl Identity {
    pub fn new() -> Self {
        Identity::default()
    }

    /// Adds (or replaces) a field.
    pub fn with(mut self, key: &str, value: impl ToString) -> Self {
        self.0.insert(key.to_string(), value.to_string());
        self
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// The identity recorded in `dir`, if any.
    pub fn read(dir: &Path) -> Result<Option<Identity>> {
        let path = dir.join(IDENTITY_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(OutDirError::io(&path, e)),
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| OutDirError::Corrupt { path, msg: format!("not an identity record ({e}); delete it, or rerun with --fresh to replace this directory's results") })
    }

    /// Writes `identity.json` (temporary file, then rename: never half-written).
    pub fn write(&self, dir: &Path) -> Result<()> {
        let path = dir.join(IDENTITY_FILE);
        let json = serde_json::to_string_pretty(self).expect("a string map serialises");
        crate::write_atomic(&path, json.as_bytes()).map_err(|e| OutDirError::io(&path, e))
    }

    /// The fields where `recorded` (what made the results on disk) and `self` (this run)
    /// differ, each as `key: was A, now B`; empty when they are the same (the
    /// [`RECORDED_ONLY`] fields are not compared).
    pub fn differences(&self, recorded: &Identity) -> Vec<String> {
        let show = |v: Option<&str>| v.map_or("(not recorded)".to_string(), |v| format!("`{v}`"));
        differing_keys(&recorded.0, &self.0)
            .into_iter()
            .filter(|(k, _, _)| !RECORDED_ONLY.contains(k))
            .map(|(k, old, new)| format!("{k}: was {}, now {}", show(old), show(new)))
            .collect()
    }

    /// Checks `dir` before reusing what it holds, writing nothing: `Ok(())` when its
    /// recorded identity equals this one, or when nothing is recorded and `has_results` is
    /// false (a new directory). Otherwise the error names each differing field and ends
    /// with `hint` (how to start afresh).
    pub fn check(&self, dir: &Path, has_results: bool, hint: &str) -> Result<()> {
        let differences = match Identity::read(dir)? {
            Some(recorded) => self.differences(&recorded),
            None if has_results => {
                vec![format!("results without an {IDENTITY_FILE}, so what produced them is unknown")]
            }
            None => vec![],
        };
        if differences.is_empty() {
            Ok(())
        } else {
            Err(OutDirError::Mismatch { dir: dir.to_path_buf(), differences, hint: hint.to_string() })
        }
    }

    /// [`check`](Self::check), then records this identity in `dir` (for a new directory).
    pub fn claim(&self, dir: &Path, has_results: bool, hint: &str) -> Result<()> {
        self.check(dir, has_results, hint)?;
        if Identity::read(dir)?.is_none() {
            self.write(dir)?;
        }
        Ok(())
    }
}

/// The keys whose values differ between two maps (present in either), in key order, with
/// the value on each side.
pub fn differing_keys<'a>(
    recorded: &'a BTreeMap<String, String>,
    now: &'a BTreeMap<String, String>,
) -> Vec<(&'a str, Option<&'a str>, Option<&'a str>)> {
    let keys: std::collections::BTreeSet<&String> = recorded.keys().chain(now.keys()).collect();
    keys.into_iter()
        .map(|k| (k.as_str(), recorded.get(k).map(String::as_str), now.get(k).map(String::as_str)))
        .filter(|(_, old, new)| old != new)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Identity {
        Identity::new().with("model_sha256", "aa").with("num_fewshot", 0).with("backend", "flex")
    }

    #[test]
    fn claim_writes_once_then_accepts_equal_and_names_every_difference() {
        let dir = tempfile::tempdir().unwrap();
        base().claim(dir.path(), false, "use --fresh").unwrap();
        assert_eq!(Identity::read(dir.path()).unwrap(), Some(base()));
        base().claim(dir.path(), true, "use --fresh").unwrap();

        let other = base().with("num_fewshot", 5).with("adapter_sha256", "bb");
        let msg = other.claim(dir.path(), true, "use --fresh").unwrap_err().to_string();
        assert!(msg.contains("num_fewshot: was `0`, now `5`"), "{msg}");
        assert!(msg.contains("adapter_sha256: was (not recorded), now `bb`"), "{msg}");
        assert!(!msg.contains("backend"), "{msg}");
        assert!(msg.ends_with("use --fresh"), "{msg}");
        // A refused claim leaves the recorded identity alone.
        assert_eq!(Identity::read(dir.path()).unwrap(), Some(base()));
    }

    #[test]
    fn another_code_version_reuses_the_results_and_keeps_the_recorded_one() {
        let dir = tempfile::tempdir().unwrap();
        base().with("code_version", "0.1.0 (commit aaa)").claim(dir.path(), false, "hint").unwrap();
        let newer = base().with("code_version", "0.1.0 (commit bbb)");
        newer.claim(dir.path(), true, "hint").unwrap();
        let recorded = Identity::read(dir.path()).unwrap().unwrap();
        assert_eq!(recorded.get("code_version"), Some("0.1.0 (commit aaa)"));
        // Any other field still decides.
        let msg = newer.with("backend", "tch").claim(dir.path(), true, "hint").unwrap_err().to_string();
        assert!(msg.contains("backend: was `flex`, now `tch`") && !msg.contains("code_version"), "{msg}");
    }

    #[test]
    fn results_without_identity_and_a_corrupt_record_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let msg = base().claim(dir.path(), true, "hint").unwrap_err().to_string();
        assert!(msg.contains("without an identity.json"), "{msg}");
        std::fs::write(dir.path().join(IDENTITY_FILE), "{not json").unwrap();
        let msg = base().claim(dir.path(), false, "hint").unwrap_err().to_string();
        assert!(msg.contains("identity.json") && msg.contains("not an identity record"), "{msg}");
    }
}
