//! Downloads of Hugging Face hub repositories (config, tokenizer, safetensors weights).

use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use crate::{
    check_safetensors_dir, lock_file, progress_bar, shards_of_index, unique_suffix, ModelFiles,
    Options, SourceError,
};

/// The public hub; `$HF_ENDPOINT` (or [`Options::hf_endpoint`]) points elsewhere, e.g. a mirror.
pub(crate) const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// Splits `ORG/NAME` if it looks like a hub repository id: two non-empty parts of ASCII
/// letters, digits, `.`, `_`, `-`, neither starting with `.` (so it can never be `..`).
pub(crate) fn parse_repo(repo: &str) -> Option<(&str, &str)> {
    let (org, name) = repo.split_once('/')?;
    let ok = |s: &str| {
        !s.is_empty()
            && !s.starts_with('.')
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    };
    (ok(org) && ok(name)).then_some((org, name))
}

/// Resolves hub repository `org/name`: served from `cache/hub/ORG--NAME` when complete,
/// otherwise downloaded there first.
pub(crate) fn resolve(
    source: &str,
    org: &str,
    name: &str,
    opts: &Options,
) -> Result<ModelFiles, SourceError> {
    let hub_dir = opts.cache_dir.join("hub");
    let dir = hub_dir.join(format!("{org}--{name}"));
    if check_safetensors_dir(source, &dir).is_ok() {
        return Ok(ModelFiles::Safetensors { dir });
    }
    std::fs::create_dir_all(&dir)
        .map_err(|e| SourceError::io(source, "create directory", &dir, e))?;
    let _lock = lock_file(source, &hub_dir.join(format!("{org}--{name}.lock")))?;
    // Another process may have completed the download while we waited for the lock.
    if check_safetensors_dir(source, &dir).is_ok() {
        return Ok(ModelFiles::Safetensors { dir });
    }

    let client = Client::new(source, org, name, opts);
    client.get("config.json", &dir, true)?;
    // Some repositories ship only the slow (sentencepiece) tokenizer; that is not our problem here.
    client.get("tokenizer.json", &dir, false)?;
    if client.get("model.safetensors.index.json", &dir, false)? {
        for shard in shards_of_index(source, &dir.join("model.safetensors.index.json"))? {
            client.get(&shard, &dir, true)?;
        }
    } else {
        client.get("model.safetensors", &dir, true)?;
    }
    check_safetensors_dir(source, &dir)?;
    Ok(ModelFiles::Safetensors { dir })
}

struct Client<'a> {
    source: &'a str,
    base: String,
    token: Option<&'a str>,
    agent: ureq::Agent,
    opts: &'a Options,
}

impl<'a> Client<'a> {
    fn new(source: &'a str, org: &str, name: &str, opts: &'a Options) -> Client<'a> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_connect(Some(Duration::from_secs(30)))
            .timeout_recv_response(Some(Duration::from_secs(120)))
            // Statuses are handled below so that 401/404 get specific messages.
            .http_status_as_error(false)
            .build()
            .into();
        Client {
            source,
            base: format!(
                "{}/{org}/{name}/resolve/main",
                opts.hf_endpoint.trim_end_matches('/')
            ),
            token: opts.hf_token.as_deref(),
            agent,
            opts,
        }
    }

    /// Downloads `file` into `dir` unless already there. Returns whether the file now exists;
    /// a 404 is an error only if `required`.
    fn get(&self, file: &str, dir: &Path, required: bool) -> Result<bool, SourceError> {
        let dest = dir.join(file);
        if dest.is_file() {
            return Ok(true);
        }
        let url = format!("{}/{file}", self.base);
        let fail = |reason: String| SourceError::Download {
            name: self.source.to_owned(),
            url: url.clone(),
            reason,
        };
        let mut request = self.agent.get(&url);
        if let Some(token) = self.token {
            request = request.header("Authorization", &format!("Bearer {token}"));
        }
        let response = request.call().map_err(|e| {
            fail(format!(
                "{e} (is the hub reachable? set HF_ENDPOINT for a mirror)"
            ))
        })?;
        match response.status().as_u16() {
            200 => {}
            404 if !required => return Ok(false),
            401 | 403 => {
                return Err(fail(format!(
                    "HTTP {}: the repository is gated or private; accept its license on the hub and set HF_TOKEN{}",
                    response.status(),
                    if self.token.is_some() { " (the HF_TOKEN given was refused)" } else { "" }
                )))
            }
            _ => return Err(fail(format!("HTTP {}", response.status()))),
        }
        let total = response
            .headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());

        // Stream into a temporary sibling and rename, so an interrupted download is never
        // mistaken for a complete file.
        let tmp = dir.join(format!(".{file}.part-{}", unique_suffix()));
        let result = (|| -> Result<u64, SourceError> {
            let mut out =
                File::create(&tmp).map_err(|e| SourceError::io(self.source, "create", &tmp, e))?;
            let bar = progress_bar(self.opts, total, file.to_owned());
            let mut reader = response.into_body().into_reader();
            let mut buf = vec![0u8; 1 << 20];
            let mut written = 0u64;
            loop {
                let n = reader
                    .read(&mut buf)
                    .map_err(|e| fail(format!("reading the body: {e}")))?;
                if n == 0 {
                    break;
                }
                out.write_all(&buf[..n])
                    .map_err(|e| SourceError::io(self.source, "write", &tmp, e))?;
                written += n as u64;
                bar.inc(n as u64);
            }
            bar.finish_and_clear();
            out.sync_all()
                .map_err(|e| SourceError::io(self.source, "sync", &tmp, e))?;
            Ok(written)
        })();
        let written = match result {
            Ok(w) => w,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
        };
        if let Some(total) = total.filter(|&t| t != written) {
            let _ = std::fs::remove_file(&tmp);
            return Err(fail(format!(
                "got {written} bytes, the server announced {total}"
            )));
        }
        std::fs::rename(&tmp, &dest)
            .map_err(|e| SourceError::io(self.source, "rename into place", &dest, e))?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::parse_repo;

    #[test]
    fn repo_ids() {
        assert_eq!(
            parse_repo("google/gemma-3-270m"),
            Some(("google", "gemma-3-270m"))
        );
        assert_eq!(parse_repo("a_b/c.d"), Some(("a_b", "c.d")));
        for bad in ["gemma", "/abs", "a/", "../x", "a/..", "a/b/c", "a b/c", ""] {
            assert_eq!(parse_repo(bad), None, "{bad}");
        }
    }
}
