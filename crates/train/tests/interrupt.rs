//! Ctrl-C during training: the step in progress finishes, is checkpointed, and the run
//! stops with an error naming the checkpoint; the same run again resumes from it and ends
//! where an uninterrupted run ends. (Alone in its test binary: the signal goes to the
//! whole process.)

mod common;

use std::time::Duration;

use burn::tensor::Device;
use common::*;
use sweelol_train::{train, Dataset, TrainError, TrainSection};

#[test]
#[cfg_attr(not(fixtures), ignore = "needs ../shared (SWEELOL_SHARED)")]
fn sigint_during_training_checkpoints_the_step_and_the_rerun_resumes_from_it() {
    let device = Device::flex().autodiff();
    let data = Dataset { train: random_examples(16, 6, 14, 3, 512, 5), eval: vec![] };
    let mut t = TrainSection::new(1e-3, 2);
    t.max_steps = Some(400);
    t.warmup_steps = 1;
    let dir = tempfile::tempdir().unwrap();
    let opts = options(t.clone(), dir.path());

    // Signal once two steps are in the metrics.
    let metrics = dir.path().join("metrics.jsonl");
    let signaller = std::thread::spawn(move || {
        for _ in 0..6000 {
            let steps = std::fs::read_to_string(&metrics).map_or(0, |m| m.lines().filter(|l| l.contains("\"kind\":\"train\"")).count());
            if steps >= 2 {
                signal_hook::low_level::raise(signal_hook::consts::SIGINT).unwrap();
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    });
    let Err(err) = train(load_tiny(&device), &data, &opts) else { panic!("the signal did not stop the run") };
    assert!(signaller.join().unwrap(), "the run never reached two steps");
    let TrainError::Interrupted { step, total, checkpoint } = &err else { panic!("not an interruption: {err}") };
    assert!(*step >= 2 && *step < *total, "{err}");
    assert!(checkpoint.ends_with(format!("step-{step:08}")) && checkpoint.join("state.json").is_file(), "{err}");
    assert!(err.to_string().contains("run the same command again to resume"), "{err}");

    // The same run again resumes from that step and finishes.
    let done = train(load_tiny(&device), &data, &opts).unwrap();
    assert_eq!(done.resumed_from.as_deref(), Some(checkpoint.as_path()));
    assert_eq!(done.steps_done, 400);

    // It ends where a run that was never interrupted ends.
    let whole = tempfile::tempdir().unwrap();
    let reference = train(load_tiny(&device), &data, &options(t, whole.path())).unwrap();
    assert_eq!(done.last_loss, reference.last_loss);
}
