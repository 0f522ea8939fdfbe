//! Hugging Face hub models (config, tokenizer, safetensors weights), kept in the standard hub
//! cache ([`crate::hub_cache`]), so a model Python already downloaded is used as is.

use std::path::PathBuf;

use crate::hub_cache::{HubRepo, RepoKind};
use crate::{check_safetensors_dir, shards_of_index, ModelFiles, Options, SourceError};

pub(crate) use crate::hub_cache::{parse_repo, Fetcher, DEFAULT_ENDPOINT};

/// Resolves hub model `org/name` at `main`: the cached snapshot `refs/main` names when it is
/// complete (no network), else downloaded into the cache first; with [`Options::hf_offline`]
/// a missing file is an error naming it and the cache.
pub(crate) fn resolve(
    source: &str,
    org: &str,
    name: &str,
    opts: &Options,
) -> Result<ModelFiles, SourceError> {
    let repo = HubRepo {
        kind: RepoKind::Model,
        org: org.to_owned(),
        name: name.to_owned(),
        revision: "main".to_owned(),
    };
    let cached = repo
        .cached_commit(&opts.hf_hub_cache)
        .map(|commit| repo.dir(&opts.hf_hub_cache).join("snapshots").join(commit));
    if let Some(dir) = &cached {
        if check_safetensors_dir(source, dir).is_ok() {
            return Ok(ModelFiles::Safetensors { dir: dir.clone() });
        }
    }
    if opts.hf_offline {
        return Err(offline_error(source, &repo, cached, opts));
    }

    let mut client = Fetcher::new(source, repo.clone(), opts);
    let config = client
        .fetch("config.json", true)?
        .ok_or_else(|| SourceError::invalid(source, "the hub has no config.json"))?;
    // Some repositories ship only the slow (sentencepiece) tokenizer; that is not our problem here.
    client.fetch("tokenizer.json", false)?;
    if let Some(index) = client.fetch("model.safetensors.index.json", false)? {
        for shard in shards_of_index(source, &index)? {
            client.fetch(&shard, true)?;
        }
    } else {
        client.fetch("model.safetensors", true)?;
    }
    let dir = config
        .parent()
        .map(PathBuf::from)
        .ok_or_else(|| SourceError::invalid(source, "snapshot path has no parent"))?;
    check_safetensors_dir(source, &dir)?;
    Ok(ModelFiles::Safetensors { dir })
}

/// The offline failure: which files the cache lacks and where it looked.
fn offline_error(
    source: &str,
    repo: &HubRepo,
    snapshot: Option<PathBuf>,
    opts: &Options,
) -> SourceError {
    let repo_dir = repo.dir(&opts.hf_hub_cache);
    let (missing, place) = match &snapshot {
        None => (
            vec!["config.json".to_owned(), "model.safetensors".to_owned()],
            format!(
                "{} (no snapshot: {} does not exist)",
                repo_dir.display(),
                repo_dir.join("refs").join(&repo.revision).display()
            ),
        ),
        Some(dir) => {
            let mut missing: Vec<String> = Vec::new();
            if !dir.join("config.json").is_file() {
                missing.push("config.json".into());
            }
            let index = dir.join("model.safetensors.index.json");
            match index.is_file().then(|| shards_of_index(source, &index)) {
                Some(Ok(shards)) => {
                    missing.extend(shards.into_iter().filter(|s| !dir.join(s).is_file()))
                }
                Some(Err(e)) => missing.push(format!("model.safetensors.index.json ({e})")),
                None if !dir.join("model.safetensors").is_file() => {
                    missing.push("model.safetensors".into())
                }
                None => {}
            }
            (missing, dir.display().to_string())
        }
    };
    SourceError::Unavailable {
        name: source.to_owned(),
        reason: format!(
            "HF_HUB_OFFLINE is set and the hub cache lacks {} of {} in {place}; download it once with network access (or unset HF_HUB_OFFLINE)",
            missing.join(", "),
            repo.id()
        ),
    }
}
