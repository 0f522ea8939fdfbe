//! `cargo xtask train --config configs/<technique>.toml`: one technique from its config file.

use std::path::Path;

use burn::tensor::Device;
use sweelol_gemma::Precision;
use sweelol_study::{data_fetch, technique, train};

/// Reads the TOML at `config_path` with the `--set` changes `sets`, runs its technique on
/// `device` (in `dtype` when given, else the config's `[train] dtype`), and prints where the
/// outputs went.
pub fn run(config_path: &Path, sets: &[String], device: &Device, dtype: Option<Precision>) -> anyhow::Result<()> {
    let mut cfg = technique::load_with(config_path, sets)?;
    if let Some(d) = dtype {
        cfg.run.train.dtype = d;
    }
    cfg.run.data.path = data_fetch::dolly_path(&cfg.run.data.path)?;
    let out = train::run_technique(&cfg, device)?;
    println!("{}", serde_json::to_string_pretty(&out.details)?);
    match &out.adapter {
        Some(a) => println!("adapter: {} (base {})", a.display(), out.model_source),
        None => println!("model: {}", out.model_source),
    }
    Ok(())
}
