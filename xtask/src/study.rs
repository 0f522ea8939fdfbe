//! `cargo xtask study`: the study here, one run's stages (a Slurm job's work), or the whole
//! study submitted to Slurm.

use std::path::PathBuf;

use anyhow::{Context, Result};
use burn::tensor::Device;
use sweelol_study::paths::preset_path;
use sweelol_study::{slurm, StudyOptions};

/// Where the study's preset and results are, and how to run it.
pub struct Request {
    /// A preset name in `configs/study/` or a path to a preset file.
    pub preset: String,
    pub results: PathBuf,
    pub slurm: bool,
    pub sbatch_args: Option<String>,
    /// One run's stages, by its key.
    pub stage: Option<String>,
}

pub fn run(req: &Request, opts: StudyOptions, device: &Device, backend: &str) -> Result<()> {
    let path = std::path::absolute(preset_path(&req.preset)?)?;
    if req.slurm {
        let cmd = slurm::JobCommand {
            exe: std::env::current_exe().context("finding this binary")?,
            backend: backend.to_string(),
            preset: path.clone(),
            results: std::path::absolute(&req.results)?,
            sbatch_args: req.sbatch_args.as_deref().unwrap_or_default().split_whitespace().map(String::from).collect(),
        };
        let submission = slurm::submit(&path, &opts, &cmd, device, &mut slurm::SlurmCli)?;
        for line in &submission.lines {
            println!("{line}");
        }
        if submission.table_job.is_none() {
            let opts = StudyOptions { table_only: true, ..opts };
            sweelol_study::run(&path, &opts, device, backend, &req.results)?;
        }
    } else if let Some(key) = &req.stage {
        sweelol_study::run_stage(&path, &opts, key, device, backend, &req.results)?;
    } else {
        let outcome = sweelol_study::run(&path, &opts, device, backend, &req.results)?;
        eprintln!("{}", outcome.summary());
    }
    Ok(())
}
