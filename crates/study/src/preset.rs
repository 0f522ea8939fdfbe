//! What a study is, as data: its rows (each a name, a technique config and what it starts
//! from), the evaluation settings, and what each finished stage records. Shared by the
//! orchestrator (`study.rs`) and the report. Adding a row is a `[[rows]]` entry in a
//! preset file; no Rust changes.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use sweelol_eval::EvalSummary;

/// One row of a study, as the preset file writes it.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RowSpec {
    /// The row's label in the table ("Full-Finetune"); also names its folder.
    pub name: String,
    /// Its technique config (relative to the preset file). None: the base model as
    /// published, evaluated without training.
    #[serde(default)]
    pub config: Option<PathBuf>,
    /// Start from an earlier row's model instead of the config's `[model] source`; a
    /// distillation run also keeps that model's pruning masks.
    #[serde(default)]
    pub start_from: Option<String>,
    /// Distil from an earlier row's model (technique `distill` only).
    #[serde(default)]
    pub teacher: Option<String>,
}

impl RowSpec {
    /// The row's folder under the study's run directory: its name in lower case, runs of
    /// other characters turned into one `-` ("KD-Pruned" -> "kd-pruned").
    pub fn dir_name(&self) -> String {
        let mut out = String::new();
        for c in self.name.chars() {
            if c.is_ascii_alphanumeric() {
                out.push(c.to_ascii_lowercase());
            } else if !out.ends_with('-') && !out.is_empty() {
                out.push('-');
            }
        }
        out.trim_end_matches('-').to_string()
    }

    /// The rows this row's training starts from, in the order start, teacher.
    pub fn depends_on(&self) -> impl Iterator<Item = &str> {
        self.start_from.iter().chain(self.teacher.iter()).map(String::as_str)
    }
}

/// How many documents per task: a number, or every document (`"none"`, as lm-eval's
/// `--limit` left out).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    Docs(usize),
    All,
}

impl Serialize for Limit {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Limit::Docs(n) => s.serialize_u64(*n as u64),
            Limit::All => s.serialize_str("none"),
        }
    }
}

impl<'de> Deserialize<'de> for Limit {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(i64),
            Word(String),
        }
        let text = match Raw::deserialize(d)? {
            Raw::Number(n) => n.to_string(),
            Raw::Word(w) => w,
        };
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl Limit {
    /// Documents per task as the eval runner takes them (`None`: all).
    pub fn docs(self) -> Option<usize> {
        match self {
            Limit::Docs(n) => Some(n),
            Limit::All => None,
        }
    }
}

impl std::str::FromStr for Limit {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" => Ok(Limit::All),
            n => match n.parse::<usize>() {
                Ok(n) if n > 0 => Ok(Limit::Docs(n)),
                _ => Err(format!("`{s}`: expected a positive number of documents or `none`")),
            },
        }
    }
}

impl std::fmt::Display for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Limit::Docs(n) => write!(f, "{n}"),
            Limit::All => f.write_str("none"),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EvalSection {
    pub tasks: Vec<String>,
    pub limit: Limit,
    #[serde(default)]
    pub num_fewshot: usize,
    /// What the evaluation's products compute in, whatever the rows trained in: f32 (the
    /// default) keeps Baseline's numbers identical to lm-eval's.
    #[serde(default)]
    pub dtype: sweelol_gemma::Precision,
}

/// A preset's training dtype: one of the two, or `auto`: bf16 where the device has native
/// bf16 products ([`sweelol_gemma::Precision::native_bf16`]), else f32.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DtypeChoice {
    F32,
    Bf16,
    Auto,
}

impl DtypeChoice {
    pub fn as_str(self) -> &'static str {
        match self {
            DtypeChoice::F32 => "f32",
            DtypeChoice::Bf16 => "bf16",
            DtypeChoice::Auto => "auto",
        }
    }

    /// The precision on `device`, and why, for the run's first lines.
    pub fn resolve(self, device: &burn::tensor::Device) -> (sweelol_gemma::Precision, &'static str) {
        use sweelol_gemma::Precision;
        match self {
            DtypeChoice::F32 => (Precision::F32, "as the preset says"),
            DtypeChoice::Bf16 => (Precision::Bf16, "as the preset says"),
            DtypeChoice::Auto if Precision::native_bf16(device) => (Precision::Bf16, "auto: this device has native bf16 products"),
            DtypeChoice::Auto => (Precision::F32, "auto: this device has no native bf16 products, so bf16 would be slower"),
        }
    }
}

impl From<sweelol_gemma::Precision> for DtypeChoice {
    fn from(p: sweelol_gemma::Precision) -> Self {
        match p {
            sweelol_gemma::Precision::F32 => DtypeChoice::F32,
            sweelol_gemma::Precision::Bf16 => DtypeChoice::Bf16,
        }
    }
}

/// Knobs applied on top of every row's technique config.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Overrides {
    pub n_train: Option<usize>,
    pub max_len: Option<usize>,
    pub epochs: Option<usize>,
    pub max_steps: Option<usize>,
    pub batch_size: Option<usize>,
    /// How often every row logs its held-out loss and checkpoints (`[train] eval_every`,
    /// `checkpoint_every`): cadence only, so a row's identity and results do not change.
    pub eval_every: Option<usize>,
    pub checkpoint_every: Option<usize>,
    /// `[train] max_batch_tokens` of every row: padded tokens a micro-batch trains at once
    /// (larger ones in parts, with the same gradient), which bounds its saved activations.
    pub max_batch_tokens: Option<usize>,
    /// `[train] dtype` of every row (`--dtype` overrides); `run_study` settles `auto` before
    /// any row runs.
    pub dtype: Option<DtypeChoice>,
}

impl Overrides {
    /// Sets the overridden knobs of a row's run config.
    pub fn apply(&self, cfg: &mut sweelol_train::RunConfig) {
        if let Some(n) = self.n_train {
            cfg.data.n_train = n;
        }
        if let Some(n) = self.max_len {
            cfg.data.max_len = n;
        }
        if let Some(n) = self.epochs {
            cfg.train.epochs = n;
        }
        if self.max_steps.is_some() {
            cfg.train.max_steps = self.max_steps;
        }
        if let Some(n) = self.batch_size {
            cfg.train.batch_size = n;
        }
        if let Some(n) = self.eval_every {
            cfg.train.eval_every = n;
        }
        if let Some(n) = self.checkpoint_every {
            cfg.train.checkpoint_every = n;
        }
        if let Some(n) = self.max_batch_tokens {
            cfg.train.max_batch_tokens = n;
        }
        match self.dtype {
            Some(DtypeChoice::F32) => cfg.train.dtype = sweelol_gemma::Precision::F32,
            Some(DtypeChoice::Bf16) => cfg.train.dtype = sweelol_gemma::Precision::Bf16,
            // `run_study` settles `auto` on its device before any row runs.
            Some(DtypeChoice::Auto) | None => {}
        }
    }
}

fn default_base_model() -> String {
    sweelol_sources::GEMMA3_270M_GGUF.to_string()
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Preset {
    pub name: String,
    /// What a row without a config evaluates (Baseline).
    #[serde(default = "default_base_model")]
    pub base_model: String,
    /// The published study's table and findings (JSON, relative to this file); without it
    /// the table has no published column and the findings are not judged.
    #[serde(default)]
    pub published: Option<PathBuf>,
    pub eval: EvalSection,
    #[serde(default)]
    pub overrides: Overrides,
    /// The held-out prompts every row answers in the report.
    #[serde(default)]
    pub answers: crate::answers::AnswersSection,
    /// What each job asks for under `study --slurm`.
    #[serde(default)]
    pub slurm: crate::slurm::SlurmSection,
    pub rows: Vec<RowSpec>,
    #[serde(skip)]
    pub file: PathBuf,
}

impl Preset {
    /// Reads and checks a preset: paths relative to the file, unique row names and
    /// folders, dependencies on earlier rows only. `sets` are `--set KEY=VALUE` changes applied to the file's TOML first
    /// ([`crate::overrides`]): `overrides.n_train=200`, `eval.limit=5`; unknown keys are
    /// refused as they would be in the file.
    pub fn load_with(path: &Path, sets: &[String]) -> Result<Preset> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let text = crate::overrides::apply(&text, sets).with_context(|| path.display().to_string())?;
        let with = if sets.is_empty() { String::new() } else { format!(" (with --set {})", sets.join(" --set ")) };
        let mut p: Preset = toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}{with}: {e}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        for row in &mut p.rows {
            if let Some(c) = &mut row.config {
                *c = base.join(&*c);
            }
        }
        if let Some(f) = &mut p.published {
            *f = base.join(&*f);
        }
        p.file = path.to_path_buf();
        p.check().map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        Ok(p)
    }

    fn check(&self) -> Result<()> {
        if self.rows.is_empty() {
            bail!("no [[rows]]");
        }
        for (i, row) in self.rows.iter().enumerate() {
            let earlier = &self.rows[..i];
            if row.dir_name().is_empty() {
                bail!("row name {:?} has no letters or digits", row.name);
            }
            if let Some(dup) = earlier.iter().find(|r| r.name == row.name || r.dir_name() == row.dir_name()) {
                bail!("rows {:?} and {:?} would share the folder {:?}", dup.name, row.name, row.dir_name());
            }
            for dep in row.depends_on() {
                if !earlier.iter().any(|r| r.name == dep) {
                    bail!("row {:?} starts from {dep:?}, which is not an earlier row", row.name);
                }
                if earlier.iter().any(|r| r.name == dep && r.config.is_none()) {
                    bail!("row {:?} starts from {dep:?}, the base model: name no row, or leave it out", row.name);
                }
            }
            if row.config.is_none() && (row.start_from.is_some() || row.teacher.is_some()) {
                bail!("row {:?} has no config, so it cannot start from another row", row.name);
            }
        }
        Ok(())
    }

    /// The row called `name`.
    pub fn row(&self, name: &str) -> Result<&RowSpec> {
        self.rows.iter().find(|r| r.name == name).with_context(|| {
            let names: Vec<&str> = self.rows.iter().map(|r| r.name.as_str()).collect();
            format!("no row {name:?} in preset `{}` (rows: {})", self.name, names.join(", "))
        })
    }

    /// The row of the base model as published (the one without a config), if any.
    pub fn baseline(&self) -> Option<&RowSpec> {
        self.rows.iter().find(|r| r.config.is_none())
    }
}

/// What a finished training stage recorded.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StageRecord {
    /// The stage's identity: its config and the identities of the stages it starts from.
    pub hash: String,
    pub seconds: f64,
    /// Technique report (trainable params, losses, sparsity …) as JSON.
    pub details: serde_json::Value,
    /// The model to evaluate: a source and an optional adapter directory.
    pub model_source: String,
    pub adapter: Option<PathBuf>,
}

/// One row's outcome for the report (one seed of it).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RowResult {
    pub row: String,
    /// The training seed, when the study ran several.
    pub seed: Option<u64>,
    pub train: Option<StageRecord>,
    pub eval: EvalSummary,
    pub eval_dir: PathBuf,
    pub eval_seconds: f64,
    /// Greedy answers to the study's held-out prompts (first seed only), when made.
    #[serde(default)]
    pub answers: Option<Vec<String>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn preset(rows: &str) -> Result<Preset> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.toml");
        let text = format!("name = \"t\"\n[eval]\ntasks = [\"hellaswag\"]\nlimit = 4\n{rows}");
        std::fs::write(&path, text).unwrap();
        Preset::load_with(&path, &[])
    }

    #[test]
    fn set_changes_a_preset_and_an_unknown_key_is_refused_naming_it() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/study/default.toml");
        let p = Preset::load_with(&path, &["overrides.n_train=200".into(), "eval.limit=5".into()]).unwrap();
        assert_eq!((p.overrides.n_train, p.eval.limit), (Some(200), Limit::Docs(5)));
        assert_eq!(Preset::load_with(&path, &[]).unwrap().overrides.n_train, Some(1000), "the file itself says 1000");
        let msg = format!("{:#}", Preset::load_with(&path, &["overrides.n_trian=2".into()]).unwrap_err());
        assert!(msg.contains("n_trian") && msg.contains("--set overrides.n_trian=2"), "{msg}");
    }

    /// Full-Finetune's run config as the default preset, changed by `sets`, gives it.
    fn full_finetune_row(sets: &[&str]) -> sweelol_train::RunConfig {
        let configs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        let p = Preset::load_with(&configs.join("study/default.toml"), &sets).unwrap();
        let mut cfg = crate::technique::load(&configs.join("full-finetune.toml")).unwrap().run;
        p.overrides.apply(&mut cfg);
        cfg
    }

    #[test]
    fn cadence_overrides_reach_every_row_and_leave_its_identity_alone() {
        let plain = full_finetune_row(&["overrides.eval_every=16", "overrides.checkpoint_every=16"]);
        let sparse = full_finetune_row(&["overrides.eval_every=7", "overrides.checkpoint_every=9"]);
        assert_eq!((plain.train.eval_every, plain.train.checkpoint_every), (16, 16));
        assert_eq!((sparse.train.eval_every, sparse.train.checkpoint_every), (7, 9));
        assert_eq!(plain.hash(), sparse.hash(), "cadence is not part of a row's identity");
        assert_ne!(plain.hash(), full_finetune_row(&["overrides.n_train=999"]).hash(), "the data is");
    }

    #[test]
    fn max_batch_tokens_reaches_every_row_and_is_part_of_its_identity() {
        let (preset, split) = (full_finetune_row(&[]), full_finetune_row(&["overrides.max_batch_tokens=768"]));
        assert_eq!(preset.train.max_batch_tokens, 1024, "the default preset splits above 1,024 tokens");
        assert_eq!(split.train.max_batch_tokens, 768, "max_batch_tokens reaches the row");
        assert_ne!(split.hash(), preset.hash(), "how a batch is split moves bf16 sums, so it is part of the identity");
    }

    #[test]
    fn rows_are_data_and_checked() {
        let p = preset(
            "[[rows]]\nname = \"Baseline\"\n[[rows]]\nname = \"Pruned\"\nconfig = \"a.toml\"\n\
             [[rows]]\nname = \"LoRA on Pruned\"\nconfig = \"b.toml\"\nstart_from = \"Pruned\"\n",
        )
        .unwrap();
        assert_eq!(p.rows.len(), 3);
        assert_eq!(p.rows[2].dir_name(), "lora-on-pruned");
        assert_eq!(p.rows[2].depends_on().collect::<Vec<_>>(), vec!["Pruned"]);
        assert_eq!(p.baseline().unwrap().name, "Baseline");
        assert_eq!(p.eval.limit, Limit::Docs(4));
        let err = p.row("Nope").unwrap_err().to_string();
        assert!(err.contains("Baseline, Pruned, LoRA on Pruned"), "{err}");

        let err = preset("[[rows]]\nname = \"A\"\nconfig = \"a.toml\"\nteacher = \"B\"\n[[rows]]\nname = \"B\"\nconfig = \"b.toml\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("not an earlier row"), "{err}");
        let err = preset("[[rows]]\nname = \"A b\"\n[[rows]]\nname = \"a-B\"\n").unwrap_err().to_string();
        assert!(err.contains("share the folder"), "{err}");
        let err = preset("[[rows]]\nname = \"A\"\nconfig = \"a.toml\"\nlr = 3\n").unwrap_err().to_string();
        assert!(err.contains("lr"), "{err}");
    }

    #[test]
    fn limit_is_a_number_or_none() {
        assert_eq!("none".parse::<Limit>().unwrap(), Limit::All);
        assert_eq!("200".parse::<Limit>().unwrap(), Limit::Docs(200));
        assert!("0".parse::<Limit>().is_err() && "all".parse::<Limit>().is_err());
        let all: EvalSection = toml::from_str("tasks = []\nlimit = \"none\"").unwrap();
        assert_eq!(all.limit.docs(), None);
        assert!(toml::from_str::<EvalSection>("tasks = []\nlimit = \"all\"").is_err());
    }
}
