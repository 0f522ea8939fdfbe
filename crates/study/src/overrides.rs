//! `--set KEY=VALUE`: command-line changes to a config file, torchtune-style
//! (`--set train.lr=1e-4 --set data.n_train=500`). They are applied to the file's TOML before
//! its typed parsing, so a misspelled key is refused exactly as it would be in the file, and
//! the changed values are part of the run's identity like any other setting.

use anyhow::{bail, Context, Result};
use sweelol_train::config::KEY_ALIASES;
use toml::{Table, Value};

/// `text` (a config file's TOML) with each `KEY=VALUE` of `sets` applied in order. `KEY` is a
/// dotted path of tables (`train.lr`); `VALUE` is read as TOML (`1e-4`, `true`, `[0.9, 0.99]`,
/// `"text"`), and as a plain string when it is not valid TOML (`lora.target_modules` aside,
/// so `model.source=google/gemma-3-270m` needs no quotes).
pub fn apply(text: &str, sets: &[String]) -> Result<String> {
    if sets.is_empty() {
        return Ok(text.to_string());
    }
    let mut table: Table = text.parse().context("reading the config before --set")?;
    for set in sets {
        let (key, value) = set.split_once('=').with_context(|| format!("--set {set}: expected KEY=VALUE"))?;
        let path: Vec<&str> = key.trim().split('.').collect();
        if path.iter().any(|p| p.is_empty()) {
            bail!("--set {set}: `{key}` is not a dotted key such as train.lr");
        }
        let (last, tables) = path.split_last().expect("split yields at least one part");
        // Another name of a setting (`train.learning_rate`) sets ours (`train.lr`), and
        // replaces whichever of the two the file used.
        let section = tables.last().copied().unwrap_or_default();
        let names: Vec<&str> = KEY_ALIASES
            .iter()
            .filter(|(sec, alias, ours)| *sec == section && (alias == last || ours == last))
            .flat_map(|(_, alias, ours)| [*alias, *ours])
            .collect();
        let last = names.last().copied().unwrap_or(last);
        let mut at = &mut table;
        for (i, part) in tables.iter().enumerate() {
            let entry = at.entry(part.to_string()).or_insert_with(|| Value::Table(Table::new()));
            at = match entry {
                Value::Table(t) => t,
                _ => bail!("--set {set}: `{}` is a value, not a table", path[..=i].join(".")),
            };
        }
        for name in &names {
            at.remove(*name);
        }
        at.insert(last.to_string(), parse_value(value.trim()));
    }
    Ok(toml::to_string(&table)?)
}

/// `VALUE` as TOML, else as a string.
fn parse_value(value: &str) -> Value {
    format!("v = {value}")
        .parse::<Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| Value::String(value.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_toml_keys_are_dotted_and_new_tables_appear() {
        let text = "technique = \"lora\"\n[train]\nlr = 2e-4\n";
        let sets = ["train.lr=1e-4", "train.betas=[0.9, 0.99]", "model.source=google/gemma-3-270m", "data.stratify=false"];
        let out: Table = apply(text, &sets.map(String::from)).unwrap().parse().unwrap();
        assert_eq!(out["train"]["lr"].as_float(), Some(1e-4));
        assert_eq!(out["train"]["betas"].as_array().unwrap().len(), 2);
        assert_eq!(out["model"]["source"].as_str(), Some("google/gemma-3-270m"));
        assert_eq!(out["data"]["stratify"].as_bool(), Some(false));
        assert_eq!(out["technique"].as_str(), Some("lora"));
    }

    #[test]
    fn another_name_of_a_setting_sets_ours_and_replaces_the_files() {
        let text = "[train]\nlearning_rate = 2e-4\n[data]\nmax_len = 256\n";
        let sets = ["train.lr=1e-4", "data.max_seq_len=128", "train.gradient_accumulation_steps=4"];
        let out: Table = apply(text, &sets.map(String::from)).unwrap().parse().unwrap();
        assert_eq!(out["train"]["lr"].as_float(), Some(1e-4));
        assert!(out["train"].get("learning_rate").is_none());
        assert_eq!(out["data"]["max_len"].as_integer(), Some(128));
        assert!(out["data"].get("max_seq_len").is_none());
        assert_eq!(out["train"]["grad_accum"].as_integer(), Some(4));
    }

    #[test]
    fn malformed_sets_are_refused_naming_them() {
        let text = "technique = \"lora\"\n[train]\nlr = 2e-4\n";
        for (set, expected) in [("train.lr", "expected KEY=VALUE"), ("train..lr=1", "not a dotted key"), ("technique.x=1", "`technique` is a value")] {
            let msg = format!("{:#}", apply(text, &[set.to_string()]).unwrap_err());
            assert!(msg.contains(set) && msg.contains(expected), "{set}: {msg}");
        }
    }
}
