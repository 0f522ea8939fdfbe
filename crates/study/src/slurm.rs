//! `study --slurm`: the study's runs as Slurm jobs, joined by `--dependency=afterok`.
//!
//! Each run that is not finished becomes one job (`study --stage KEY`: train unless done,
//! evaluate, answer the held-out prompts), after the jobs of the runs it is built on
//! (`start_from`, `teacher`); a last job writes the table from finished stages only
//! (`study --table-only`). Every job runs this same binary on the same results folder, so
//! the folder must be on a filesystem every node sees: the submitter writes a token into
//! `<study>/slurm/marker` and each job refuses to start without it. A failed job's
//! dependents are cancelled (`--kill-on-invalid-dep=yes`); submitting again submits exactly
//! the runs that are still missing, reusing jobs of this folder that are still queued.
//! `docs/cluster.md` is the user's guide.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use crate::run::{self, PlannedRun, StudyOptions};

/// The folder under a study's folder with the job scripts, their logs and the marker.
pub const SLURM_DIR: &str = "slurm";
const MARKER_FILE: &str = "marker";

/// What one job asks the scheduler for; unset fields fall back (preset's technique entry,
/// then the preset's `all`, then the built-in default for the kind of job).
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    pub cpus_per_task: Option<u32>,
    /// `--mem`, e.g. "16G".
    pub mem: Option<String>,
    /// `--time`, e.g. "12:00:00".
    pub time: Option<String>,
    /// `--gres`, e.g. "gpu:1".
    pub gres: Option<String>,
}

impl Resources {
    /// Each field from `self`, else from `fallback`.
    fn or(&self, fallback: &Resources) -> Resources {
        Resources {
            cpus_per_task: self.cpus_per_task.or(fallback.cpus_per_task),
            mem: self.mem.clone().or_else(|| fallback.mem.clone()),
            time: self.time.clone().or_else(|| fallback.time.clone()),
            gres: self.gres.clone().or_else(|| fallback.gres.clone()),
        }
    }

    /// The sbatch options; an empty value (`gres = ""`) asks for none.
    fn sbatch_args(&self) -> Vec<String> {
        let mut args: Vec<String> = self.cpus_per_task.map(|n| format!("--cpus-per-task={n}")).into_iter().collect();
        for (option, value) in [("mem", &self.mem), ("time", &self.time), ("gres", &self.gres)] {
            if let Some(v) = value.as_deref().filter(|v| !v.is_empty()) {
                args.push(format!("--{option}={v}"));
            }
        }
        args
    }
}

/// `[slurm]` in a preset: `[slurm.all]` for every job, `[slurm.jobs.<kind>]` per kind of
/// job (its fields win; `""` unsets one), where the kind is a technique as configs name it (`full-finetune`, `lora`,
/// `prompt-tuning`, `pruning`, `distill`), `eval` (a row that only evaluates) or `table`
/// (the last job).
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SlurmSection {
    #[serde(default)]
    pub all: Resources,
    #[serde(default)]
    pub jobs: BTreeMap<String, Resources>,
}

/// Built-in resources: two CPUs (the study's kernels use both of a 2-core machine); 16 GiB
/// and 12 h for a run that trains all weights (the bf16 KD-Pruned run peaks near 9.3 GiB on
/// a CPU), 8 GiB for the others; the table job only reads files.
fn builtin(kind: &str) -> Resources {
    let (cpus, mem, time) = match kind {
        "table" => (1, "2G", "00:30:00"),
        "eval" => (2, "8G", "04:00:00"),
        "lora" | "prompt-tuning" => (2, "8G", "12:00:00"),
        _ => (2, "16G", "12:00:00"),
    };
    Resources { cpus_per_task: Some(cpus), mem: Some(mem.into()), time: Some(time.into()), gres: None }
}

impl SlurmSection {
    /// What a job of `kind` asks for.
    pub fn resources(&self, kind: &str) -> Resources {
        let own = self.jobs.get(kind).cloned().unwrap_or_default();
        own.or(&self.all).or(&builtin(kind))
    }
}

/// A queued or running job: its id, name and comment (the submitter's study folder).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActiveJob {
    pub id: String,
    pub name: String,
    pub comment: String,
}

/// The scheduler as the submitter uses it: the real one runs `squeue`, `sbatch` and
/// `scancel`; tests record.
pub trait Scheduler {
    /// This user's queued and running jobs.
    fn active(&mut self) -> Result<Vec<ActiveJob>>;
    /// Submits `script` with `args` before it; returns the job id.
    fn submit(&mut self, args: &[String], script: &Path) -> Result<String>;
    fn cancel(&mut self, id: &str) -> Result<()>;
}

/// The scheduler of the machine: Slurm's command-line tools.
pub struct SlurmCli;

fn run_tool(cmd: &mut Command, what: &str) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {what} (is Slurm installed and SLURM_CONF set?)"))?;
    if !out.status.success() {
        bail!("{what} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl Scheduler for SlurmCli {
    fn active(&mut self) -> Result<Vec<ActiveJob>> {
        let user = std::env::var("USER").or_else(|_| std::env::var("LOGNAME")).unwrap_or_else(|_| "root".into());
        let out = run_tool(Command::new("squeue").args(["--noheader", "--user", &user, "--format=%i|%j|%k"]), "squeue")?;
        Ok(out
            .lines()
            .filter_map(|l| {
                let mut parts = l.splitn(3, '|');
                Some(ActiveJob { id: parts.next()?.trim().into(), name: parts.next()?.trim().into(), comment: parts.next()?.trim().into() })
            })
            .collect())
    }

    fn submit(&mut self, args: &[String], script: &Path) -> Result<String> {
        let out = run_tool(Command::new("sbatch").arg("--parsable").args(args).arg(script), "sbatch")?;
        // `--parsable` prints `id` or `id;cluster`.
        let id = out.trim().split(';').next().unwrap_or_default().to_string();
        if id.is_empty() {
            bail!("sbatch printed no job id for {}", script.display());
        }
        Ok(id)
    }

    fn cancel(&mut self, id: &str) -> Result<()> {
        run_tool(Command::new("scancel").arg(id), "scancel").map(drop)
    }
}

/// What the submitter forwards to every job: the binary and the options that decide what
/// the study is.
#[derive(Clone, Debug)]
pub struct JobCommand {
    /// This binary, by absolute path (it must be where every node sees it too).
    pub exe: PathBuf,
    pub backend: String,
    pub preset: PathBuf,
    pub results: PathBuf,
    /// Extra `sbatch` options for every job (`--sbatch-args`, split on whitespace).
    pub sbatch_args: Vec<String>,
}

/// Quotes `s` for `sh` (single quotes).
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The `study` arguments every job repeats: preset, results, backend, the settled dtype,
/// and the options that change what the study is.
fn study_args(cmd: &JobCommand, opts: &StudyOptions, dtype: sweelol_gemma::Precision) -> Vec<String> {
    let mut args = vec![
        "--backend".to_string(),
        cmd.backend.clone(),
        "--dtype".into(),
        dtype.as_str().into(),
        "study".into(),
        "--preset".into(),
        cmd.preset.display().to_string(),
        "--out".into(),
        cmd.results.display().to_string(),
    ];
    if let Some(seeds) = &opts.seeds {
        args.push(format!("--seeds={}", seeds.iter().map(u64::to_string).collect::<Vec<_>>().join(",")));
    }
    if let Some(limit) = opts.limit {
        args.push(format!("--limit={limit}"));
    }
    if let Some(only) = &opts.only {
        args.push(format!("--only={only}"));
    }
    for set in &opts.sets {
        args.push(format!("--set={set}"));
    }
    args
}

/// A job's name: the preset and the run's folder (`sweelol-default-lora`,
/// `sweelol-default-lora-seed-1`, `sweelol-default-table`).
fn job_name(preset: &str, what: &Path) -> String {
    let tail: Vec<String> = what.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
    format!("sweelol-{preset}-{}", tail.join("-"))
}

/// Writes a job's script: `exec` of this binary with `args`.
fn write_script(path: &Path, exe: &Path, args: &[String]) -> Result<()> {
    let mut text = String::from("#!/bin/sh\n# Written by `cargo xtask study --slurm`; submitted with sbatch.\nexec");
    for a in std::iter::once(exe.display().to_string()).chain(args.iter().cloned()) {
        write!(text, " {}", sh_quote(&a))?;
    }
    text.push('\n');
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// A token unique to one submission.
fn new_token() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!("{nanos:x}-{:x}", std::process::id())
}

/// Refuses to run a job whose node does not see the submitter's study folder.
pub fn check_marker(run_dir: &Path, token: &str) -> Result<()> {
    let path = run_dir.join(SLURM_DIR).join(MARKER_FILE);
    match std::fs::read_to_string(&path) {
        Ok(t) if t.trim() == token => Ok(()),
        Ok(_) => bail!(
            "{} belongs to another submission than this job's ({token}): the study was submitted again; this job is stale",
            path.display()
        ),
        Err(_) => bail!(
            "{} is missing: this node does not see the results folder the submitter wrote. Put --out on a filesystem \
             every node mounts (a shared home or scratch), not a node's local disk",
            path.display()
        ),
    }
}

/// What a submission did: one line per job (for the log) and whether anything was left.
#[derive(Debug, Default)]
pub struct Submission {
    pub lines: Vec<String>,
    /// Runs submitted now, by key.
    pub submitted: Vec<String>,
    /// Runs left to jobs already queued from an earlier submission, by key.
    pub queued_earlier: Vec<String>,
    /// The last job's id, when one was submitted.
    pub table_job: Option<String>,
}

/// Submits the runs of the study that are not finished, each after the jobs of the runs it
/// is built on, and a last job for the table. With every run finished, submits nothing
/// (the caller writes the table).
pub fn submit(
    preset_path: &Path,
    opts: &StudyOptions,
    cmd: &JobCommand,
    device: &Device,
    scheduler: &mut dyn Scheduler,
) -> Result<Submission> {
    let (preset, dtype, why) = run::settle(preset_path, opts, device)?;
    let run_dir = run::study_dir(&cmd.results, &preset, None)?;
    run::prepare_dir(&preset, &run_dir, &cmd.backend, dtype, opts.fresh)?;
    let runs = run::stage_plan(&preset, opts, &run_dir)?;
    let slurm_dir = run_dir.join(SLURM_DIR);
    std::fs::create_dir_all(&slurm_dir)?;
    let mut out = Submission::default();
    out.lines.push(format!("study {} on Slurm: {} (jobs train in {dtype}: {why})", preset.name, run_dir.display()));
    if runs.iter().all(|r| r.done) {
        out.lines.push("every run is finished; nothing to submit".into());
        return Ok(out);
    }
    // Jobs of this folder still queued or running from an earlier submission: their runs
    // are not submitted again (they are dependencies as they are), and an earlier table job
    // is replaced by one that waits for everything.
    let folder = run_dir.display().to_string();
    let active: Vec<ActiveJob> = scheduler.active()?.into_iter().filter(|j| j.comment == folder).collect();
    let table_name = job_name(&preset.name, Path::new("table"));
    for old in active.iter().filter(|j| j.name == table_name) {
        scheduler.cancel(&old.id)?;
        out.lines.push(format!("scancel {} {} (replaced by a new table job)", old.id, old.name));
    }
    // A token per submission: jobs of an earlier one that are still queued keep running
    // with the marker they knew, so the marker is written once per folder and kept.
    let marker = slurm_dir.join(MARKER_FILE);
    let token = match std::fs::read_to_string(&marker) {
        Ok(t) if !t.trim().is_empty() => t.trim().to_string(),
        _ => {
            let t = new_token();
            std::fs::write(&marker, &t).with_context(|| format!("writing {}", marker.display()))?;
            t
        }
    };
    let base_args = study_args(cmd, opts, dtype);
    let common = |name: &str, kind: &str| -> Vec<String> {
        let mut a = vec![
            format!("--job-name={name}"),
            format!("--output={}", slurm_dir.join(format!("{name}-%j.log")).display()),
            format!("--comment={folder}"),
            "--kill-on-invalid-dep=yes".into(),
        ];
        a.extend(preset.slurm.resources(kind).sbatch_args());
        a
    };
    // (run key, job id) in submission order.
    let mut ids: Vec<(String, String)> = Vec::new();
    let id_of = |ids: &[(String, String)], key: &str| ids.iter().find(|(k, _)| k == key).map(|(_, id)| id.clone());
    for run in runs.iter().filter(|r| !r.done) {
        let name = job_name(&preset.name, &run.dir);
        if let Some(job) = active.iter().find(|j| j.name == name) {
            out.lines.push(format!("queued earlier: {} {name} ({})", job.id, run.key));
            out.queued_earlier.push(run.key.clone());
            ids.push((run.key.clone(), job.id.clone()));
            continue;
        }
        let after: Vec<String> = run.depends_on.iter().filter_map(|d| id_of(&ids, d)).collect();
        let mut args = common(&name, &job_kind(run));
        if !after.is_empty() {
            args.push(format!("--dependency=afterok:{}", after.join(":")));
        }
        // The user's options last: sbatch takes the last value of an option.
        args.extend(cmd.sbatch_args.iter().cloned());
        let script = slurm_dir.join(format!("{name}.sh"));
        let mut job_args = base_args.clone();
        job_args.extend(["--stage".into(), run.key.clone(), "--marker".into(), token.clone()]);
        write_script(&script, &cmd.exe, &job_args)?;
        let id = scheduler.submit(&args, &script)?;
        out.lines.push(format!("sbatch {} -> job {id} ({})", args.join(" "), run.key));
        out.submitted.push(run.key.clone());
        ids.push((run.key.clone(), id));
    }
    let mut args = common(&table_name, "table");
    args.push(format!("--dependency=afterok:{}", ids.iter().map(|(_, id)| id.as_str()).collect::<Vec<_>>().join(":")));
    args.extend(cmd.sbatch_args.iter().cloned());
    let script = slurm_dir.join(format!("{table_name}.sh"));
    let mut job_args = base_args;
    job_args.extend(["--table-only".into(), "--marker".into(), token]);
    write_script(&script, &cmd.exe, &job_args)?;
    let id = scheduler.submit(&args, &script)?;
    out.lines.push(format!("sbatch {} -> job {id} (the table)", args.join(" ")));
    out.table_job = Some(id);
    Ok(out)
}

/// The kind of job a run is, for its resources: its technique, or `eval`.
fn job_kind(run: &PlannedRun) -> String {
    run.technique.clone().unwrap_or_else(|| "eval".into())
}

#[cfg(test)]
mod tests;
