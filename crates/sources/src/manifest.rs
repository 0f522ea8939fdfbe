//! The data manifest (`data/manifest.json`), as far as fetching needs it: for each dataset, the
//! hub repository that has a copy, and for each of its files where it belongs in the data-root
//! layout and what it must hold (rows, sha256). The manifest is an input (not built in here), so
//! tests can describe small copies of their own.

use std::path::Path;

use serde::Deserialize;

use crate::hub_cache::{parse_repo, safe_repo_path, safe_revision};
use crate::SourceError;

/// The parts of the manifest that fetching reads; other fields are ignored.
#[derive(Debug, Clone, Deserialize)]
pub struct DataManifest {
    pub datasets: Vec<ManifestDataset>,
}

/// One dataset (`dolly`, `mmlu`, `hellaswag`).
#[derive(Debug, Clone, Deserialize)]
pub struct ManifestDataset {
    pub name: String,
    /// Where the dataset can be fetched from; `None` when only the data root can provide it.
    #[serde(default)]
    pub hub: Option<HubCopy>,
}

/// A dataset repository on the hub and the files of it sweelol reads.
#[derive(Debug, Clone, Deserialize)]
pub struct HubCopy {
    /// `ORG/NAME` of the dataset repository.
    pub repo: String,
    /// Branch, ref or commit (`main` when absent).
    #[serde(default = "main")]
    pub revision: String,
    pub files: Vec<HubFile>,
}

fn main() -> String {
    "main".to_owned()
}

/// One file of a [`HubCopy`].
#[derive(Debug, Clone, Deserialize)]
pub struct HubFile {
    /// Path inside the repository.
    pub file: String,
    /// Where it belongs relative to a data root, in a layout the loaders accept.
    pub path: String,
    /// Data rows (JSON Lines: lines; parquet: rows in the footer).
    pub rows: u64,
    /// sha256 of the file, when known for this exact file.
    #[serde(default)]
    pub sha256: Option<String>,
}

impl DataManifest {
    /// Parses and checks manifest text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<DataManifest, SourceError> {
        let bad = |reason: String| SourceError::MissingData {
            reason: format!("manifest {origin}: {reason}"),
        };
        let manifest: DataManifest =
            serde_json::from_str(text).map_err(|e| bad(format!("invalid: {e}")))?;
        for d in &manifest.datasets {
            let Some(hub) = &d.hub else { continue };
            if parse_repo(&hub.repo).is_none() || !safe_revision(&hub.revision) {
                return Err(bad(format!(
                    "dataset '{}': hub repo '{}' at '{}' is not ORG/NAME at a plain revision",
                    d.name, hub.repo, hub.revision
                )));
            }
            for f in &hub.files {
                if !safe_repo_path(&f.file) || !safe_repo_path(&f.path) {
                    return Err(bad(format!(
                        "dataset '{}': unsafe file '{}' or path '{}' (relative, '/'-separated, no '..')",
                        d.name, f.file, f.path
                    )));
                }
                if let Some(sha) = &f.sha256 {
                    if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
                        return Err(bad(format!(
                            "dataset '{}': file '{}': sha256 '{sha}' is not 64 hex digits",
                            d.name, f.file
                        )));
                    }
                }
            }
        }
        Ok(manifest)
    }

    /// Reads and parses the manifest at `path`.
    pub fn load(path: &Path) -> Result<DataManifest, SourceError> {
        let text = std::fs::read_to_string(path).map_err(|e| SourceError::MissingData {
            reason: format!("cannot read manifest {}: {e}", path.display()),
        })?;
        DataManifest::parse(&text, &path.display().to_string())
    }

    /// The hub copy of dataset `name`, if the manifest names one.
    pub fn hub_copy(&self, name: &str) -> Option<&HubCopy> {
        self.datasets.iter().find(|d| d.name == name)?.hub.as_ref()
    }
}
