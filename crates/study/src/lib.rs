//! The seven-row study as a library: a preset's rows trained, scored and reported.
//!
//! A study is data: a preset file (`configs/study/*.toml`) lists rows, each a technique
//! config (`configs/*.toml`) plus what it starts from (`start_from`) and learns from
//! (`teacher`). [`run`] trains what needs training, scores every row as lm-evaluation-harness
//! does, and writes `table.md/.csv/.json`, `plot.svg` and `manifest.json` into
//! `<results>/<preset name>/`. A finished stage is never redone; a killed study resumes.
//!
//! Modules, from the rows down: [`preset`] (the file), [`run`] (stages and their
//! identities), [`technique`] (the registry every technique is listed in once),
//! [`report`] with [`stats`] and [`findings`] (the table, intervals, McNemar tests, the
//! published claims judged), [`slurm`] (the same stages as cluster jobs).
//!
//! A two-row study (Baseline and LoRA) on a tiny model with Gemma-3's vocabulary:
//!
// The example reads the shared fixtures; without them it is listed as ignored.
#![cfg_attr(fixtures, doc = "```")]
#![cfg_attr(not(fixtures), doc = "```ignore")]
//! use burn::tensor::Device;
//! use sweelol_study::{testing, Action, StudyOptions};
//!
//! let work = tempfile_dir("sweelol-study-doc");
//! let rows = "[[rows]]\nname = \"Baseline\"\n[[rows]]\nname = \"LoRA\"\nconfig = \"lora.toml\"\n";
//! let preset = testing::tiny_study(&work, rows)?;
//! let outcome = sweelol_study::run(&preset, &StudyOptions::default(), &Device::flex(), "flex", &work.join("results"))?;
//! assert_eq!(outcome.rows_that(Action::Trained), ["LoRA"]);
//! let table: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(outcome.run_dir.join("table.json"))?)?;
//! let rows: Vec<&str> = table["rows"].as_array().unwrap().iter().map(|r| r["row"].as_str().unwrap()).collect();
//! assert_eq!(rows, ["Baseline", "LoRA"]);
//! # std::fs::remove_dir_all(&work).ok();
//! # fn tempfile_dir(name: &str) -> std::path::PathBuf { std::env::temp_dir().join(format!("{name}-{}", std::process::id())) }
//! # Ok::<(), anyhow::Error>(())
//! ```

pub mod answers;
pub mod data_fetch;
pub mod findings;
pub mod model_card;
pub mod model_loading;
pub mod overrides;
pub mod paths;
pub mod preset;
pub mod provenance;
pub mod rates;
pub mod report;
pub mod run;
pub mod slurm;
pub mod stats;
pub mod technique;
pub mod testing;
pub mod train;

pub use preset::{Limit, Preset};
pub use run::{run_stage, Action, StudyOptions, StudyOutcome};
pub use technique::{TechniqueConfig, TechniqueName, TechniqueRun};

use std::path::Path;

use burn::tensor::Device;

/// Runs the study the preset file at `preset` describes on `device` (named `backend` in
/// every identity), writing into `<results>/<preset name>/`. See [`run::run_study`].
pub fn run(preset: &Path, options: &StudyOptions, device: &Device, backend: &str, results: &Path) -> anyhow::Result<StudyOutcome> {
    run::run_study(preset, options, device, backend, results)
}
