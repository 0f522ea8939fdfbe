//! Makes sure the datasets a command reads are there before it runs: the data root when it has
//! them, else the Hugging Face hub copies that data/manifest.json names, read from or fetched
//! into the standard hub cache (`sweelol_sources::datasets`). `HF_HUB_OFFLINE`, `HF_HUB_CACHE`,
//! `HF_HOME`, `HF_ENDPOINT` and `HF_TOKEN` apply as for Python.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use sweelol_sources::{DataManifest, DataNeeds, Options};

/// The repository's manifest, built in so a binary run away from the checkout still knows
/// what to fetch and how to check it.
const MANIFEST: &str = include_str!("../../../data/manifest.json");

fn manifest() -> Result<DataManifest> {
    DataManifest::parse(MANIFEST, "data/manifest.json (built into sweelol-study)").map_err(Into::into)
}

/// What evaluating `tasks` reads: `hellaswag`, and for each `mmlu_<subject>` its test split,
/// plus dev when `num_fewshot > 0`. Other names are left to the eval's own task check.
pub(crate) fn eval_needs(tasks: &[String], num_fewshot: usize) -> DataNeeds {
    let mut needs = DataNeeds {
        hellaswag: tasks.iter().any(|t| t == "hellaswag"),
        mmlu_splits: vec!["test".into()],
        ..DataNeeds::default()
    };
    if num_fewshot > 0 {
        needs.mmlu_splits.push("dev".into());
    }
    for subject in tasks.iter().filter_map(|t| t.strip_prefix("mmlu_")) {
        if !needs.mmlu_subjects.iter().any(|s| s == subject) {
            needs.mmlu_subjects.push(subject.to_owned());
        }
    }
    needs
}

/// The data root to give the eval loaders for `tasks`: `data_root` itself when it has their
/// data, else a folder of links to it and to the fetched files. Prints where each dataset
/// came from.
pub fn eval_data_root(data_root: &Path, tasks: &[String], num_fewshot: usize) -> Result<PathBuf> {
    let needs = eval_needs(tasks, num_fewshot);
    let prepared = sweelol_sources::prepare_data(data_root, &needs, &manifest()?, &Options::from_env())
        .with_context(|| format!("finding the eval data (data root {})", data_root.display()))?;
    Ok(prepared.root)
}

/// The Dolly file to train on. A config's `[data] path` is either a file, used as it is and
/// an error naming it when it does not exist (never replaced by anything else), or the
/// dataset's name, `hf:databricks/databricks-dolly-15k`: found in the data root
/// (`$SWEELOL_DATA`, else `../shared/data`), else in the hub cache, else fetched there.
pub fn dolly_path(configured: &Path) -> Result<PathBuf> {
    dolly_path_in(configured, &crate::paths::default_data_root())
}

fn dolly_path_in(configured: &Path, data_root: &Path) -> Result<PathBuf> {
    let Some(name) = sweelol_train::config::dataset_name(configured) else {
        if configured.is_file() {
            eprintln!("data: training data from {}", configured.display());
            return Ok(configured.to_path_buf());
        }
        bail!(
            "{} (the config's [data] path) does not exist; nothing was trained. Give an existing file, or `path = \"hf:{DOLLY}\"` for Dolly from the data root or the hub",
            configured.display()
        );
    };
    if name != DOLLY {
        bail!("[data] path: the dataset `hf:{name}` is not one this project can fetch (only `hf:{DOLLY}`); give a file path for other data");
    }
    let needs = DataNeeds { dolly: true, ..DataNeeds::default() };
    let prepared = sweelol_sources::prepare_data(data_root, &needs, &manifest()?, &Options::from_env())
        .with_context(|| format!("finding hf:{DOLLY} (data root {})", data_root.display()))?;
    prepared.dolly.with_context(|| format!("hf:{DOLLY}: the data sources returned no file"))
}

/// The training dataset a config can name instead of a file.
const DOLLY: &str = "databricks/databricks-dolly-15k";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn needs_follow_the_task_names() {
        let tasks: Vec<String> = ["mmlu_formal_logic", "hellaswag", "mmlu_formal_logic", "mmlu_anatomy", "arc_easy"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let zero = eval_needs(&tasks, 0);
        assert!(zero.hellaswag && !zero.dolly);
        assert_eq!(zero.mmlu_subjects, ["formal_logic", "anatomy"]);
        assert_eq!(zero.mmlu_splits, ["test"]);
        assert_eq!(eval_needs(&tasks, 5).mmlu_splits, ["test", "dev"]);
        assert!(!eval_needs(&["mmlu_anatomy".to_string()], 0).hellaswag);
    }

    #[test]
    #[cfg_attr(not(fixtures), ignore = "needs ../shared (SWEELOL_SHARED)")]
    fn a_missing_data_file_is_an_error_naming_it_and_only_dolly_resolves_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("my-data.jsonl");
        let msg = format!("{:#}", dolly_path_in(&missing, dir.path()).unwrap_err());
        assert!(msg.contains(&missing.display().to_string()) && msg.contains("does not exist"), "{msg}");
        let msg = format!("{:#}", dolly_path_in(Path::new("hf:someone/else"), dir.path()).unwrap_err());
        assert!(msg.contains("hf:someone/else") && msg.contains(DOLLY), "{msg}");
        let present = dir.path().join("mine.jsonl");
        std::fs::write(&present, "{}").unwrap();
        assert_eq!(dolly_path_in(&present, dir.path()).unwrap(), present);
    }

    #[test]
    fn built_in_manifest_parses() {
        let m = manifest().unwrap();
        for name in ["dolly", "mmlu", "hellaswag"] {
            assert!(m.hub_copy(name).is_some(), "{name}");
        }
    }
}
