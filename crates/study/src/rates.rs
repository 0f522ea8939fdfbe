//! How fast this machine trains and scores, as measured by the stages it finished, so a
//! study's plan can say how long each stage will take here before it starts.
//!
//! Kept beside the studies of a results folder (`<--out>/rates.json`, shared by its
//! presets): seconds per training example by machine, backend, dtype, technique and
//! `max_len`, and seconds per scored document by machine, backend, dtype and task list. The
//! newest measurement wins.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Rates {
    /// Seconds per training example (one epoch), by [`train_key`].
    #[serde(default)]
    pub train: BTreeMap<String, f64>,
    /// Seconds per scored document, by [`eval_key`].
    #[serde(default)]
    pub eval: BTreeMap<String, f64>,
}

/// The machine as far as speed goes: CPU model and the threads it gives us.
fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| t.lines().find(|l| l.starts_with("model name")).and_then(|l| l.split(':').nth(1)).map(|m| m.trim().to_string()))
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    format!("{cpu} x{threads}")
}

pub fn train_key(backend: &str, dtype: &str, technique: &str, max_len: usize) -> String {
    format!("{} | {backend} {dtype} | {technique} max_len {max_len}", machine())
}

pub fn eval_key(backend: &str, dtype: &str, tasks: &[String]) -> String {
    format!("{} | {backend} {dtype} | {}", machine(), tasks.join(","))
}

fn path(results_root: &Path) -> PathBuf {
    results_root.join("rates.json")
}

impl Rates {
    /// The rates on disk; none when the file is missing or unreadable (an estimate is a
    /// convenience, never a reason to stop).
    pub fn load(results_root: &Path) -> Rates {
        std::fs::read_to_string(path(results_root)).ok().and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_default()
    }

    /// Records `seconds` for `count` items under `key` in `table` (`train` or `eval`) and
    /// saves; a failure to save is reported and ignored.
    fn record(mut self, results_root: &Path, eval: bool, key: String, seconds: f64, count: usize) {
        if count == 0 || seconds <= 0.0 {
            return;
        }
        let table = if eval { &mut self.eval } else { &mut self.train };
        table.insert(key, seconds / count as f64);
        let p = path(results_root);
        let saved = p.parent().map_or(Ok(()), std::fs::create_dir_all).and_then(|()| {
            sweelol_outdir::write_atomic(&p, serde_json::to_string_pretty(&self).expect("rates serialise").as_bytes())
        });
        if let Err(e) = saved {
            eprintln!("note: could not save the measured rates to {}: {e}", p.display());
        }
    }

    pub fn record_train(results_root: &Path, key: String, seconds: f64, examples: usize) {
        Rates::load(results_root).record(results_root, false, key, seconds, examples);
    }

    pub fn record_eval(results_root: &Path, key: String, seconds: f64, docs: usize) {
        Rates::load(results_root).record(results_root, true, key, seconds, docs);
    }

    /// Seconds to train `examples` examples, if this machine has trained under `key`.
    pub fn train_seconds(&self, key: &str, examples: usize) -> Option<f64> {
        self.train.get(key).map(|s| s * examples as f64)
    }

    /// Seconds to score `docs` documents, if this machine has scored under `key`.
    pub fn eval_seconds(&self, key: &str, docs: usize) -> Option<f64> {
        self.eval.get(key).map(|s| s * docs as f64)
    }
}

/// `seconds` as `42 s`, `17 min` or `2 h 05 min`.
pub fn human(seconds: f64) -> String {
    let s = seconds.round() as u64;
    match s {
        0..=89 => format!("{s} s"),
        90..=5399 => format!("{} min", (s + 30) / 60),
        _ => format!("{} h {:02} min", s / 3600, (s % 3600 + 30) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_per_item_and_estimates_scale_with_the_work() {
        let mut r = Rates::default();
        r.train.insert("k".into(), 2.0);
        assert_eq!(r.train_seconds("k", 1000), Some(2000.0));
        assert_eq!(r.train_seconds("other", 1000), None);
        r.eval.insert("e".into(), 0.25);
        assert_eq!(r.eval_seconds("e", 926), Some(231.5));
    }

    #[test]
    fn a_measurement_is_saved_and_read_back_per_item() {
        let dir = tempfile::tempdir().unwrap();
        Rates::record_train(dir.path(), "t".into(), 300.0, 100);
        Rates::record_eval(dir.path(), "e".into(), 10.0, 40);
        let r = Rates::load(dir.path());
        assert_eq!((r.train["t"], r.eval["e"]), (3.0, 0.25));
        Rates::record_train(dir.path(), "t".into(), 100.0, 100);
        assert_eq!(Rates::load(dir.path()).train["t"], 1.0, "the newest measurement wins");
    }

    #[test]
    fn durations_read_as_a_person_would_say_them() {
        assert_eq!(human(42.0), "42 s");
        assert_eq!(human(17.0 * 60.0 + 10.0), "17 min");
        assert_eq!(human(2.0 * 3600.0 + 5.0 * 60.0), "2 h 05 min");
    }

    #[test]
    fn keys_name_the_machine_and_every_setting_that_changes_the_rate() {
        let k = train_key("flex", "bf16", "lora", 512);
        assert!(k.ends_with("| flex bf16 | lora max_len 512"), "{k}");
        assert_ne!(k, train_key("flex", "f32", "lora", 512));
        let tasks = ["hellaswag".to_string()];
        assert!(eval_key("flex", "f32", &tasks).ends_with("| flex f32 | hellaswag"));
    }
}
