//! The submission against a recording scheduler, on the tiny study of `study::tests`: the
//! jobs and their dependencies, a resubmission after a failed job, jobs still queued, and
//! the table of the stage jobs against a local run's.

use burn::tensor::Device;

use super::*;
use crate::run::tests::{numbers, table};
use crate::testing::{tiny_study, SEVEN_ROWS};

/// Records submissions; job ids count up from 101.
#[derive(Default)]
struct Recorder {
    active: Vec<ActiveJob>,
    /// (sbatch options, script) per submission.
    submitted: Vec<(Vec<String>, PathBuf)>,
    cancelled: Vec<String>,
}

impl Scheduler for Recorder {
    fn active(&mut self) -> Result<Vec<ActiveJob>> {
        Ok(self.active.clone())
    }
    fn submit(&mut self, args: &[String], script: &Path) -> Result<String> {
        self.submitted.push((args.to_vec(), script.to_path_buf()));
        Ok((100 + self.submitted.len()).to_string())
    }
    fn cancel(&mut self, id: &str) -> Result<()> {
        self.cancelled.push(id.to_string());
        Ok(())
    }
}

/// The value of `--name=` among sbatch options.
fn option<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter().find_map(|a| a.strip_prefix(&format!("--{name}=")))
}

const ROWS: [&str; 7] = ["Baseline", "Pruned-Baseline", "Prompt-Tune", "Full-Finetune", "LoRA", "Finetuned-Pruned", "KD-Pruned"];

#[test]
#[cfg_attr(not(fixtures), ignore = "needs ../shared (SWEELOL_SHARED)")]
fn jobs_follow_the_rows_dependencies_and_a_resubmission_sends_only_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let preset = tiny_study(dir.path(), SEVEN_ROWS).unwrap();
    let results = dir.path().join("slurm-results");
    let cmd = JobCommand {
        exe: PathBuf::from("/opt/sweelol/xtask"),
        backend: "flex".into(),
        preset: preset.clone(),
        results: results.clone(),
        sbatch_args: vec!["--partition=test".into()],
    };
    let opts = StudyOptions::default();
    let device = Device::flex();

    let mut rec = Recorder::default();
    let first = submit(&preset, &opts, &cmd, &device, &mut rec).unwrap();
    assert_eq!(first.submitted, ROWS);
    assert_eq!(rec.submitted.len(), 8, "seven runs and the table");
    let run_dir = results.join("tiny");
    for (args, _) in &rec.submitted {
        assert_eq!(option(args, "comment"), Some(run_dir.to_str().unwrap()));
        assert!(args.contains(&"--kill-on-invalid-dep=yes".to_string()), "{args:?}");
        assert_eq!(args.last().map(String::as_str), Some("--partition=test"), "the user's options come last: {args:?}");
    }
    // KD-Pruned (107) waits for its student's pruning (102) and its teacher (104); the
    // table (108) for every run; the others for nothing.
    let deps: Vec<Option<&str>> = rec.submitted.iter().map(|(a, _)| option(a, "dependency")).collect();
    assert_eq!(deps, [None, None, None, None, None, None, Some("afterok:102:104"), Some("afterok:101:102:103:104:105:106:107")]);
    assert_eq!(option(&rec.submitted[3].0, "mem"), Some("16G"), "built-in resources of a full fine-tune");
    assert_eq!(option(&rec.submitted[4].0, "mem"), Some("8G"), "built-in resources of LoRA");
    // Each job runs this binary on the same folder with the submission's token.
    let token = std::fs::read_to_string(run_dir.join("slurm/marker")).unwrap();
    let kd = std::fs::read_to_string(&rec.submitted[6].1).unwrap();
    assert!(kd.contains("exec '/opt/sweelol/xtask' '--backend' 'flex'") && kd.contains("'--stage' 'KD-Pruned'"), "{kd}");
    assert!(kd.contains(&format!("'--marker' '{token}'")), "{kd}");
    let table_script = std::fs::read_to_string(&rec.submitted[7].1).unwrap();
    assert!(table_script.contains("'--table-only'"), "{table_script}");

    // The jobs run, except Full-Finetune's, which fails: KD-Pruned and the table never run.
    let job_opts = StudyOptions { marker: Some(token.clone()), ..StudyOptions::default() };
    for key in ["Baseline", "Pruned-Baseline", "Prompt-Tune", "LoRA", "Finetuned-Pruned"] {
        crate::run::run_stage(&preset, &job_opts, key, &device, "flex", &results).unwrap();
    }
    let table_opts = StudyOptions { table_only: true, ..job_opts.clone() };
    let msg = format!("{:#}", crate::run::run_study(&preset, &table_opts, &device, "flex", &results).unwrap_err());
    assert!(msg.contains("not finished: Full-Finetune, KD-Pruned"), "{msg}");

    // Submitting again sends Full-Finetune and KD-Pruned (after the new Full-Finetune job
    // only: the pruning is done), and a new table job.
    let mut rec = Recorder::default();
    let again = submit(&preset, &opts, &cmd, &device, &mut rec).unwrap();
    assert_eq!(again.submitted, ["Full-Finetune", "KD-Pruned"]);
    let deps: Vec<Option<&str>> = rec.submitted.iter().map(|(a, _)| option(a, "dependency")).collect();
    assert_eq!(deps, [None, Some("afterok:101"), Some("afterok:101:102")]);
    assert_eq!(std::fs::read_to_string(run_dir.join("slurm/marker")).unwrap(), token, "one marker per folder");

    // They run; the table job writes the same table as a local run of the study.
    for key in ["Full-Finetune", "KD-Pruned"] {
        crate::run::run_stage(&preset, &job_opts, key, &device, "flex", &results).unwrap();
    }
    crate::run::run_study(&preset, &table_opts, &device, "flex", &results).unwrap();
    let local = crate::run::run_study(&preset, &StudyOptions::default(), &device, "flex", &dir.path().join("local")).unwrap();
    let read = |d: &Path| std::fs::read_to_string(d.join("table.md")).unwrap();
    assert_eq!(read(&run_dir), read(&local.run_dir), "the Slurm table is the local table");
    assert_eq!(numbers(&table(&run_dir)), numbers(&table(&local.run_dir)));

    // Nothing is left: nothing is submitted.
    let mut rec = Recorder::default();
    let done = submit(&preset, &opts, &cmd, &device, &mut rec).unwrap();
    assert!(done.submitted.is_empty() && done.table_job.is_none() && rec.submitted.is_empty());
}

#[test]
#[cfg_attr(not(fixtures), ignore = "needs ../shared (SWEELOL_SHARED)")]
fn jobs_still_queued_are_kept_and_an_earlier_table_job_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let preset = tiny_study(dir.path(), SEVEN_ROWS).unwrap();
    let results = dir.path().join("r");
    let run_dir = std::path::absolute(&results).unwrap().join("tiny");
    let cmd = JobCommand { exe: "/x".into(), backend: "flex".into(), preset: preset.clone(), results, sbatch_args: vec![] };
    let folder = run_dir.display().to_string();
    let job = |id: &str, name: &str, comment: &str| ActiveJob { id: id.into(), name: name.into(), comment: comment.into() };
    let mut rec = Recorder {
        active: vec![
            job("55", "sweelol-tiny-full-finetune", &folder),
            job("56", "sweelol-tiny-table", &folder),
            // Same name, another folder: not this study's.
            job("57", "sweelol-tiny-lora", "/elsewhere/tiny"),
        ],
        ..Recorder::default()
    };
    let sub = submit(&preset, &StudyOptions::default(), &cmd, &Device::flex(), &mut rec).unwrap();
    assert_eq!(sub.queued_earlier, ["Full-Finetune"]);
    assert_eq!(sub.submitted, ["Baseline", "Pruned-Baseline", "Prompt-Tune", "LoRA", "Finetuned-Pruned", "KD-Pruned"]);
    assert_eq!(rec.cancelled, ["56"]);
    let kd = &rec.submitted[5].0;
    assert_eq!(option(kd, "dependency"), Some("afterok:102:55"), "KD-Pruned waits for the queued teacher");
    let table = &rec.submitted[6].0;
    assert_eq!(option(table, "dependency"), Some("afterok:101:102:103:55:104:105:106"));
}

#[test]
fn a_job_that_does_not_see_the_folder_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let msg = check_marker(dir.path(), "abc").unwrap_err().to_string();
    assert!(msg.contains("slurm/marker is missing") && msg.contains("filesystem every node mounts"), "{msg}");
    std::fs::create_dir_all(dir.path().join(SLURM_DIR)).unwrap();
    std::fs::write(dir.path().join(SLURM_DIR).join(MARKER_FILE), "xyz").unwrap();
    assert!(check_marker(dir.path(), "abc").unwrap_err().to_string().contains("another submission"));
    check_marker(dir.path(), "xyz").unwrap();
}

#[test]
fn resources_come_from_the_job_kind_then_all_then_the_built_in_defaults() {
    let s: SlurmSection = toml::from_str("[all]\ntime = \"1:00:00\"\n[jobs.lora]\nmem = \"3G\"\ngres = \"gpu:1\"\n").unwrap();
    assert_eq!(
        s.resources("lora").sbatch_args(),
        ["--cpus-per-task=2", "--mem=3G", "--time=1:00:00", "--gres=gpu:1"]
    );
    assert_eq!(s.resources("full-finetune").sbatch_args(), ["--cpus-per-task=2", "--mem=16G", "--time=1:00:00"]);
    assert!(toml::from_str::<SlurmSection>("[jobs.lora]\nmemory = \"3G\"\n").is_err(), "unknown keys are refused");
    let gpu: SlurmSection = toml::from_str("[all]\ngres = \"gpu:1\"\n[jobs.table]\ngres = \"\"\n").unwrap();
    assert_eq!(gpu.resources("table").sbatch_args(), ["--cpus-per-task=1", "--mem=2G", "--time=00:30:00"], "\"\" asks for none");
}
