//! Finds the datasets a command reads. Each piece (Dolly; HellaSwag validation; one MMLU subject
//! and split) is taken from the data root when it is there in the manifest's layout or one the
//! loaders also accept. Otherwise it comes from the Hugging Face hub copy the manifest names
//! (`databricks/databricks-dolly-15k`, `cais/mmlu`, `Rowan/hellaswag`), read from or fetched
//! into the standard hub cache (`datasets--ORG--NAME`, shared with Python's `datasets`), and
//! checked against the manifest's rows and sha256.
//!
//! The loaders read one data root, so when anything came from the hub, [`prepare_data`]
//! returns a view: a folder under sweelol's cache holding symlinks, in the data-root layout, to
//! every piece wherever it was found. Its name is a hash of its contents, so it is built once
//! (atomically) and never changes under a running reader.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::DATASET_PREFIX;
use crate::hub_cache::{parse_repo, FetchError, Fetcher, HubRepo, RepoKind};
use crate::manifest::{DataManifest, HubCopy, HubFile};
use crate::{unique_suffix, Options, SourceError};

/// What a command reads. MMLU needs every split in `mmlu_splits` (`test`, `dev`, `val`; `test`
/// alone when empty) of every subject in `mmlu_subjects`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DataNeeds {
    pub dolly: bool,
    pub hellaswag: bool,
    pub mmlu_subjects: Vec<String>,
    pub mmlu_splits: Vec<String>,
}

/// Where the loaders find what [`DataNeeds`] asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedData {
    /// The root for the eval loaders: the data root itself when it had everything, else a view.
    pub root: PathBuf,
    /// The Dolly file, when asked for.
    pub dolly: Option<PathBuf>,
    /// One line per dataset saying where its files came from (also printed on stderr).
    pub origins: Vec<String>,
}

/// One accepted form of a piece in a data root.
enum Form {
    /// Exactly this file.
    File(String),
    /// `<dir>/<prefix>*.parquet`, all such shards together.
    Shards { dir: String, prefix: String },
}

impl Form {
    /// The relative paths of this form present under `root` (empty when absent).
    fn find(&self, root: &Path) -> Vec<String> {
        match self {
            Form::File(rel) => {
                if root.join(rel).is_file() {
                    vec![rel.clone()]
                } else {
                    Vec::new()
                }
            }
            Form::Shards { dir, prefix } => {
                let mut found: Vec<String> = std::fs::read_dir(root.join(dir))
                    .into_iter()
                    .flatten()
                    .flatten()
                    .filter(|e| e.path().is_file())
                    .filter_map(|e| e.file_name().to_str().map(String::from))
                    .filter(|n| shard_name(n, prefix))
                    .map(|n| format!("{dir}/{n}"))
                    .collect();
                found.sort();
                found
            }
        }
    }

    /// Whether a manifest `path` is (one file of) this form.
    fn matches(&self, rel: &str) -> bool {
        match self {
            Form::File(path) => path == rel,
            Form::Shards { dir, prefix } => rel
                .strip_prefix(dir.as_str())
                .and_then(|r| r.strip_prefix('/'))
                .is_some_and(|name| !name.contains('/') && shard_name(name, prefix)),
        }
    }

    fn describe(&self) -> String {
        match self {
            Form::File(rel) => rel.clone(),
            Form::Shards { dir, prefix } => format!("{dir}/{prefix}*.parquet"),
        }
    }
}

fn shard_name(name: &str, prefix: &str) -> bool {
    name.starts_with(prefix) && name.ends_with(".parquet")
}

/// One unit the loaders read, with its accepted forms in the loaders' order of preference.
struct Piece {
    /// The manifest's dataset name.
    dataset: &'static str,
    /// For messages: `mmlu abstract_algebra test`.
    label: String,
    forms: Vec<Form>,
}

const MMLU_SPLITS: [&str; 3] = ["test", "dev", "val"];

fn pieces(needs: &DataNeeds) -> Result<Vec<Piece>, SourceError> {
    let mut pieces = Vec::new();
    if needs.dolly {
        pieces.push(Piece {
            dataset: "dolly",
            label: "dolly".into(),
            forms: ["jsonl.gz", "jsonl", "parquet"]
                .iter()
                .map(|ext| Form::File(format!("dolly/databricks-dolly-15k.{ext}")))
                .collect(),
        });
    }
    if needs.hellaswag {
        pieces.push(Piece {
            dataset: "hellaswag",
            label: "hellaswag validation".into(),
            forms: vec![
                Form::File("hellaswag/hellaswag_val.jsonl.gz".into()),
                Form::File("hellaswag/hellaswag_val.jsonl".into()),
                Form::Shards {
                    dir: "hellaswag".into(),
                    prefix: "validation-".into(),
                },
                Form::Shards {
                    dir: "hellaswag/data".into(),
                    prefix: "validation-".into(),
                },
            ],
        });
    }
    let default_splits = ["test".to_owned()];
    let splits = if needs.mmlu_splits.is_empty() {
        &default_splits[..]
    } else {
        &needs.mmlu_splits[..]
    };
    for split in splits {
        if !MMLU_SPLITS.contains(&split.as_str()) {
            return Err(SourceError::MissingData {
                reason: format!("unknown MMLU split '{split}' (expected one of {MMLU_SPLITS:?})"),
            });
        }
    }
    for subject in &needs.mmlu_subjects {
        let plain = !subject.is_empty()
            && subject
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !plain {
            return Err(SourceError::MissingData {
                reason: format!("MMLU subject '{subject}' is not a plain name (a-z, 0-9, _)"),
            });
        }
        for split in splits {
            pieces.push(Piece {
                dataset: "mmlu",
                label: format!("mmlu {subject} {split}"),
                forms: vec![
                    Form::File(format!("mmlu/data/{split}/{subject}_{split}.csv")),
                    Form::Shards {
                        dir: format!("mmlu/{subject}"),
                        prefix: format!("{split}-"),
                    },
                ],
            });
        }
    }
    Ok(pieces)
}

/// Makes everything `needs` lists readable: from `data_root` where it is there, else from the
/// hub copies in `manifest` (cache first, then the network unless [`Options::hf_offline`]).
/// Fails listing, for each missing piece, the files to place in the data root or the hub cache.
pub fn prepare_data(
    data_root: &Path,
    needs: &DataNeeds,
    manifest: &DataManifest,
    opts: &Options,
) -> Result<PreparedData, SourceError> {
    let mut hub = HubClient::new(opts);
    let mut links: Vec<(String, PathBuf)> = Vec::new();
    let mut origins: BTreeMap<&str, BTreeMap<String, usize>> = BTreeMap::new();
    let mut missing: Vec<(String, String)> = Vec::new();
    let mut any_from_hub = false;
    let mut dolly = None;
    for piece in pieces(needs)? {
        let here = piece
            .forms
            .iter()
            .map(|f| f.find(data_root))
            .find(|v| !v.is_empty());
        if let Some(found) = here {
            for rel in &found {
                links.push((rel.clone(), absolute(&data_root.join(rel))));
            }
            *origins
                .entry(piece.dataset)
                .or_default()
                .entry(format!("the data root {}", data_root.display()))
                .or_default() += found.len();
            if piece.dataset == "dolly" {
                dolly = Some(data_root.join(&found[0]));
            }
            continue;
        }
        let in_root = || {
            let forms: Vec<String> = piece.forms.iter().map(Form::describe).collect();
            format!(
                "{} under the data root {}",
                forms.join(" or "),
                data_root.display()
            )
        };
        let Some(copy) = manifest.hub_copy(piece.dataset) else {
            missing.push((
                format!(
                    "{}: put {} (the manifest names no hub copy)",
                    piece.label,
                    in_root()
                ),
                String::new(),
            ));
            continue;
        };
        let files: Vec<&HubFile> = copy
            .files
            .iter()
            .filter(|f| piece.forms.iter().any(|form| form.matches(&f.path)))
            .collect();
        if files.is_empty() {
            missing.push((
                format!(
                    "{}: put {} (the manifest's hub copy {} lists no file for it)",
                    piece.label,
                    in_root(),
                    copy.repo
                ),
                String::new(),
            ));
            continue;
        }
        for file in files {
            match hub.get(copy, file)? {
                Got::Path(path) => {
                    check_file(&copy.repo, &path, file)?;
                    links.push((file.path.clone(), absolute(&path)));
                    let repo = hub_repo(copy)?;
                    *origins
                        .entry(piece.dataset)
                        .or_default()
                        .entry(format!(
                            "the hub cache {} ({}@{})",
                            repo.dir(&opts.hf_hub_cache).display(),
                            copy.repo,
                            copy.revision
                        ))
                        .or_default() += 1;
                    any_from_hub = true;
                    if piece.dataset == "dolly" {
                        dolly = Some(path);
                    }
                }
                Got::Unavailable(why) => missing.push((
                    format!(
                        "{}: put {}, or {}",
                        piece.label,
                        in_root(),
                        hub_place(copy, file, opts)?
                    ),
                    why,
                )),
            }
        }
    }
    if !missing.is_empty() {
        return Err(SourceError::MissingData {
            reason: missing_report(&missing),
        });
    }
    let origins: Vec<String> = origins
        .into_iter()
        .map(|(dataset, from)| {
            let parts: Vec<String> = from
                .into_iter()
                .map(|(place, n)| format!("{n} file{} from {place}", if n == 1 { "" } else { "s" }))
                .collect();
            format!("{dataset}: {}", parts.join("; "))
        })
        .collect();
    for line in &origins {
        eprintln!("data: {line}");
    }
    let root = if any_from_hub {
        build_view(&opts.cache_dir.join("data"), links)?
    } else {
        data_root.to_path_buf()
    };
    Ok(PreparedData {
        root,
        dolly,
        origins,
    })
}

/// What the manifest's hub copy says, as a repository.
fn hub_repo(copy: &HubCopy) -> Result<HubRepo, SourceError> {
    let (org, name) = parse_repo(&copy.repo).ok_or_else(|| SourceError::MissingData {
        reason: format!("manifest hub repo '{}' is not ORG/NAME", copy.repo),
    })?;
    Ok(HubRepo {
        kind: RepoKind::Dataset,
        org: org.to_owned(),
        name: name.to_owned(),
        revision: copy.revision.clone(),
    })
}

/// "ORG/NAME's FILE in the hub cache at PATH (…)": the hub-cache way to provide a file.
fn hub_place(copy: &HubCopy, file: &HubFile, opts: &Options) -> Result<String, SourceError> {
    let repo = hub_repo(copy)?;
    let revision = if copy.revision == "main" {
        String::new()
    } else {
        format!(" --revision {}", copy.revision)
    };
    Ok(format!(
        "{}'s {} in the hub cache as {} (what `huggingface-cli download --repo-type dataset {}{revision} {}` makes)",
        copy.repo,
        file.file,
        repo.describe_cache_place(&opts.hf_hub_cache, &file.file),
        copy.repo,
        file.file
    ))
}

/// The error text for missing pieces; a reason shared by all is said once.
fn missing_report(missing: &[(String, String)]) -> String {
    let first = &missing[0].1;
    let shared = missing.iter().all(|(_, why)| why == first);
    let mut text =
        String::from("these datasets are neither in the data root nor available from the hub");
    if shared && !first.is_empty() {
        text.push_str(&format!(" ({first})"));
    }
    text.push(':');
    for (line, why) in missing {
        text.push_str("\n  - ");
        text.push_str(line);
        if !shared && !why.is_empty() {
            text.push_str(&format!(" [{why}]"));
        }
    }
    text
}

/// The outcome of asking for a hub file.
enum Got {
    Path(PathBuf),
    /// Not in the cache and not fetched; says why.
    Unavailable(String),
}

/// Hub access for one command: a fetcher per repository (so its files share a snapshot), and
/// once the network has failed, no more attempts (each could wait for a timeout).
struct HubClient<'a> {
    opts: &'a Options,
    fetchers: Vec<Fetcher<'a>>,
    network_down: Option<String>,
}

impl<'a> HubClient<'a> {
    fn new(opts: &'a Options) -> HubClient<'a> {
        HubClient {
            opts,
            fetchers: Vec::new(),
            network_down: None,
        }
    }

    fn get(&mut self, copy: &HubCopy, file: &HubFile) -> Result<Got, SourceError> {
        let repo = hub_repo(copy)?;
        if let Some(path) = repo.cached_file(&self.opts.hf_hub_cache, &file.file) {
            return Ok(Got::Path(path));
        }
        if self.opts.hf_offline {
            return Ok(Got::Unavailable("HF_HUB_OFFLINE is set".into()));
        }
        if let Some(why) = &self.network_down {
            return Ok(Got::Unavailable(why.clone()));
        }
        let at = match self.fetchers.iter().position(|f| *f.repo() == repo) {
            Some(i) => i,
            None => {
                let label = format!("{DATASET_PREFIX}{}", copy.repo);
                self.fetchers.push(Fetcher::new(&label, repo, self.opts));
                self.fetchers.len() - 1
            }
        };
        match self.fetchers[at].fetch(&file.file, true) {
            Ok(Some(path)) => Ok(Got::Path(path)),
            Ok(None) => Ok(Got::Unavailable(format!("the hub has no {}", file.file))),
            Err(FetchError::Network(e)) => {
                let why = e.to_string();
                self.network_down = Some(why.clone());
                Ok(Got::Unavailable(why))
            }
            Err(FetchError::Other(e)) => Ok(Got::Unavailable(e.to_string())),
        }
    }
}

/// Checks a hub file against the manifest: its rows, and its sha256 where the manifest has one.
fn check_file(repo: &str, path: &Path, expected: &HubFile) -> Result<(), SourceError> {
    let label = format!("{DATASET_PREFIX}{repo}");
    let refuse = |reason: String| SourceError::Verify {
        name: label.clone(),
        path: path.to_path_buf(),
        reason,
    };
    let rows = count_rows(&label, path, &expected.file)?;
    if rows != expected.rows {
        return Err(refuse(format!(
            "{} has {rows} rows, the manifest expects {} (has the upstream file changed?)",
            expected.file, expected.rows
        )));
    }
    if let Some(want) = &expected.sha256 {
        let got = crate::sha256_file(&label, path)?;
        if !got.eq_ignore_ascii_case(want) {
            return Err(refuse(format!(
                "{} has sha256 {got}, the manifest expects {want} (has the upstream file changed?)",
                expected.file
            )));
        }
    }
    Ok(())
}

/// Data rows of a JSON Lines (non-empty lines) or parquet (footer row count) file.
fn count_rows(label: &str, path: &Path, name: &str) -> Result<u64, SourceError> {
    let open = || File::open(path).map_err(|e| SourceError::io(label, "open", path, e));
    if name.ends_with(".jsonl") {
        let mut rows = 0u64;
        let mut reader = BufReader::new(open()?);
        let mut line = Vec::new();
        loop {
            line.clear();
            let n = reader
                .read_until(b'\n', &mut line)
                .map_err(|e| SourceError::io(label, "read", path, e))?;
            if n == 0 {
                break;
            }
            if line.iter().any(|b| !b.is_ascii_whitespace()) {
                rows += 1;
            }
        }
        Ok(rows)
    } else if name.ends_with(".parquet") {
        use parquet::file::reader::{FileReader, SerializedFileReader};
        let reader = SerializedFileReader::new(open()?).map_err(|e| SourceError::Verify {
            name: label.to_owned(),
            path: path.to_path_buf(),
            reason: format!("not a readable parquet file: {e}"),
        })?;
        Ok(reader.metadata().file_metadata().num_rows().max(0) as u64)
    } else {
        Err(SourceError::Verify {
            name: label.to_owned(),
            path: path.to_path_buf(),
            reason: format!("cannot count the rows of '{name}' (expected .jsonl or .parquet)"),
        })
    }
}

/// `path` made absolute against the current directory (symlinks in the view must not depend
/// on where the reader runs).
fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

fn view_io(action: &str, path: &Path, e: std::io::Error) -> SourceError {
    SourceError::MissingData {
        reason: format!(
            "cannot {action} {} (assembling the data root view): {e}",
            path.display()
        ),
    }
}

/// The view `base/root-<hash>`: a symlink per `(relative path, absolute target)`. It is built
/// in a temporary folder and renamed into place, and its name depends on its contents, so an
/// existing one is complete and current.
fn build_view(base: &Path, mut links: Vec<(String, PathBuf)>) -> Result<PathBuf, SourceError> {
    links.sort();
    links.dedup();
    let mut hasher = Sha256::new();
    for (rel, target) in &links {
        hasher.update(rel.as_bytes());
        hasher.update([0]);
        hasher.update(target.as_os_str().as_encoded_bytes());
        hasher.update([b'\n']);
    }
    let name = format!("root-{}", &format!("{:x}", hasher.finalize())[..16]);
    let dir = base.join(&name);
    if dir.is_dir() {
        return Ok(dir);
    }
    std::fs::create_dir_all(base).map_err(|e| view_io("create directory", base, e))?;
    let tmp = base.join(format!(".{name}.{}.tmp", unique_suffix()));
    let result = (|| {
        for (rel, target) in &links {
            let at = tmp.join(rel);
            if let Some(parent) = at.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| view_io("create directory", parent, e))?;
            }
            #[cfg(unix)]
            std::os::unix::fs::symlink(target, &at).map_err(|e| view_io("link", &at, e))?;
            #[cfg(not(unix))]
            std::fs::copy(target, &at).map_err(|e| view_io("copy", &at, e))?;
        }
        match std::fs::rename(&tmp, &dir) {
            Ok(()) => Ok(()),
            // Another process built the same view meanwhile.
            Err(_) if dir.is_dir() => {
                let _ = std::fs::remove_dir_all(&tmp);
                Ok(())
            }
            Err(e) => Err(view_io("rename into place", &dir, e)),
        }
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result.map(|()| dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_match_manifest_paths() {
        let shards = Form::Shards {
            dir: "mmlu/abstract_algebra".into(),
            prefix: "test-".into(),
        };
        assert!(shards.matches("mmlu/abstract_algebra/test-00000-of-00001.parquet"));
        assert!(!shards.matches("mmlu/abstract_algebra/dev-00000-of-00001.parquet"));
        assert!(!shards.matches("mmlu/abstract_algebra_x/test-0.parquet"));
        assert!(!shards.matches("mmlu/abstract_algebra/sub/test-0.parquet"));
        assert!(!shards.matches("mmlu/abstract_algebra/test-0.csv"));
        assert!(Form::File("dolly/x.jsonl".into()).matches("dolly/x.jsonl"));
        assert!(!Form::File("dolly/x.jsonl".into()).matches("dolly/x.jsonl.gz"));
    }

    #[test]
    fn bad_needs_are_refused() {
        let bad_split = DataNeeds {
            mmlu_subjects: vec!["anatomy".into()],
            mmlu_splits: vec!["train".into()],
            ..Default::default()
        };
        assert!(pieces(&bad_split).is_err());
        let bad_subject = DataNeeds {
            mmlu_subjects: vec!["../etc".into()],
            ..Default::default()
        };
        assert!(pieces(&bad_subject).is_err());
        let ok = DataNeeds {
            mmlu_subjects: vec!["anatomy".into()],
            ..Default::default()
        };
        let p = pieces(&ok).unwrap();
        assert_eq!(p.len(), 1, "test split only by default");
        assert_eq!(p[0].forms[0].describe(), "mmlu/data/test/anatomy_test.csv");
    }
}
