//! Checkpoints that cannot silently poison a resume: checksums verified, a damaged newest
//! checkpoint falls back to the previous one, config changes are named key by key, and a
//! run directory has one writer at a time.

mod common;

use std::collections::BTreeMap;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use burn::tensor::Device;
use common::*;
use sweelol_train::config::train_section_hash;
use sweelol_train::{checkpoint, params, train, Dataset, ScheduleKind, TrainOptions, TrainSection};

fn section() -> TrainSection {
    let mut t = TrainSection::new(2e-3, 2);
    t.grad_accum = 2;
    t.max_steps = Some(7);
    t.warmup_steps = 2;
    t.schedule = ScheduleKind::Cosine;
    t.seed = 9;
    t
}

fn data() -> Dataset {
    Dataset { train: random_examples(12, 6, 14, 3, 512, 21), eval: vec![] }
}

/// Common options plus the one config key these tests change, so refusals can name it.
fn options(train: TrainSection, dir: &Path) -> TrainOptions {
    let mut opts = common::options(train, dir);
    opts.config_keys = BTreeMap::from([("train.lr".to_string(), opts.train.lr.to_string())]);
    opts
}

/// A run killed after step 5 with checkpoints every 2 steps: step-2 and step-4 on disk.
fn killed_run(dir: &Path) -> TrainOptions {
    let mut t = section();
    t.checkpoint_every = 2;
    let mut opts = options(t, dir);
    opts.stop_after = Some(5);
    let killed = train(load_tiny(&Device::flex().autodiff()), &data(), &opts).unwrap();
    assert!(killed.interrupted);
    opts.stop_after = None;
    opts
}

/// Overwrites up to 64 KiB in the second half of a file (tensor data, past the header)
/// with pseudo-random bytes, keeping its size.
fn damage(path: &Path) {
    let len = std::fs::metadata(path).unwrap().len();
    assert!(len > 4096, "{} is too small to damage in the middle", path.display());
    let n = (len / 4).min(64 * 1024);
    let mut f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.seek(SeekFrom::Start(len / 2)).unwrap();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let noise: Vec<u8> = (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    f.write_all(&noise).unwrap();
    assert_eq!(std::fs::metadata(path).unwrap().len(), len);
}

fn step_dir(dir: &Path, step: usize) -> PathBuf {
    dir.join("checkpoints").join(format!("step-{step:08}"))
}

#[test]
#[cfg_attr(not(fixtures), ignore = "needs ../shared (SWEELOL_SHARED)")]
fn damaged_newest_checkpoint_falls_back_to_the_previous_and_still_matches_an_uninterrupted_run() {
    let device = Device::flex().autodiff();
    let whole = tempfile::tempdir().unwrap();
    let reference = train(load_tiny(&device), &data(), &options(section(), whole.path())).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let opts = killed_run(dir.path());
    damage(&step_dir(dir.path(), 4).join("trainable.safetensors"));
    let err = checkpoint::load(&step_dir(dir.path(), 4)).err().expect("a damaged checkpoint must not load");
    let msg = err.to_string();
    assert!(msg.contains("trainable.safetensors") && msg.contains("checksum mismatch"), "{msg}");

    let resumed = train(load_tiny(&device), &data(), &opts).unwrap();
    assert_eq!(resumed.resumed_from.as_deref(), Some(step_dir(dir.path(), 2).as_path()));
    assert!(dir.path().join("checkpoints/bad-step-00000004/trainable.safetensors").is_file(), "kept for inspection");
    assert_eq!(resumed.steps_done, 7);
    let (a, b) = (params::to_host(&reference.model, |_| true), params::to_host(&resumed.model, |_| true));
    let diff = a.iter().map(|(k, t)| max_abs_diff(&t.data, &b[k].data)).fold(0.0f32, f32::max);
    assert!(diff <= 1e-7, "fallback resume differs from the uninterrupted run by {diff}");
}

#[test]
#[cfg_attr(not(fixtures), ignore = "needs ../shared (SWEELOL_SHARED)")]
fn no_usable_checkpoint_fails_with_the_recovery_command_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let opts = killed_run(dir.path());
    damage(&step_dir(dir.path(), 4).join("optimizer.safetensors"));
    damage(&step_dir(dir.path(), 2).join("trainable.safetensors"));
    let err = train(load_tiny(&Device::flex().autodiff()), &data(), &opts).expect_err("must refuse");
    let msg = err.to_string();
    assert!(msg.contains("no usable checkpoint"), "{msg}");
    assert!(msg.contains("optimizer.safetensors") && msg.contains("trainable.safetensors"), "{msg}");
    assert!(msg.contains(&format!("rm -r '{}'", dir.path().join("checkpoints").display())), "{msg}");
    // Nothing was moved or overwritten: both damaged checkpoints are still where they were.
    assert!(step_dir(dir.path(), 4).is_dir() && step_dir(dir.path(), 2).is_dir());
}

#[test]
#[cfg_attr(not(fixtures), ignore = "needs ../shared (SWEELOL_SHARED)")]
fn a_changed_config_is_refused_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = killed_run(dir.path());
    opts.train.lr = 1e-3;
    opts.config_hash = train_section_hash(&opts.train, "tiny");
    opts.config_keys.insert("train.lr".to_string(), opts.train.lr.to_string());
    let msg = train(load_tiny(&Device::flex().autodiff()), &data(), &opts).expect_err("must refuse").to_string();
    assert!(msg.contains("train.lr: was 0.002, now 0.001"), "{msg}");
}

#[test]
#[cfg_attr(not(fixtures), ignore = "needs ../shared (SWEELOL_SHARED)")]
fn a_second_run_on_a_locked_directory_fails_at_once_with_the_holders_pid() {
    let dir = tempfile::tempdir().unwrap();
    let _held = sweelol_outdir::DirLock::acquire(dir.path()).unwrap();
    let msg = train(load_tiny(&Device::flex().autodiff()), &data(), &options(section(), dir.path()))
        .expect_err("must refuse")
        .to_string();
    assert!(msg.contains("in use by another sweelol run") && msg.contains(&std::process::id().to_string()), "{msg}");
    assert!(!dir.path().join("metrics.jsonl").exists(), "nothing written");
}
