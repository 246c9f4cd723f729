//! # `--model`: a directory, or a Hugging Face model id in the local cache
//!
//! An id such as `microsoft/bitnet-b1.58-2B-4T` is looked up in the hub's cache
//! layout under `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`:
//! `models--org--name/refs/main` names the snapshot, `snapshots/<rev>/` holds
//! the files. A model that is not cached is fetched into that cache with the
//! `hf-hub` crate (config, tokenizer files, and the safetensors, single or
//! sharded) unless `HF_HUB_OFFLINE=1`; `HF_ENDPOINT` names another hub and
//! `HF_TOKEN` (or the cached token) authenticates.

use std::path::{Path, PathBuf};

use crate::error::{ModelError, ModelResult};

/// The hub cache directory from the environment.
pub fn cache_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("HF_HUB_CACHE") {
        return Some(PathBuf::from(d));
    }
    if let Some(d) = std::env::var_os("HF_HOME") {
        return Some(PathBuf::from(d).join("hub"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/huggingface/hub"))
}

/// Resolves `--model`: an existing directory as it is, else an `org/name` id
/// in the cache, else fetched from the hub into the cache (unless offline).
pub fn resolve(model: &str) -> ModelResult<PathBuf> {
    let p = Path::new(model);
    if p.is_dir() {
        return Ok(p.to_owned());
    }
    let Some(cache) = cache_dir() else {
        return Err(ModelError::NotFound(format!("{model}: not a directory, and no Hugging Face cache is set")));
    };
    match resolve_in(model, &cache) {
        Ok(dir) => Ok(dir),
        Err(cached) => {
            let offline = std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
            if offline || hub_id(model).is_none() {
                return Err(cached);
            }
            let endpoint = std::env::var("HF_ENDPOINT").ok();
            fetch(model, &cache, endpoint.as_deref()).map_err(|e| ModelError::NotFound(format!("{cached}; {e}")))
        }
    }
}

/// Downloads model `org/name` from the hub (`endpoint`, default huggingface.co)
/// into hub cache `cache`: `config.json`, the tokenizer files it has, and every
/// `*.safetensors` (with the shard index). Returns the snapshot directory.
pub fn fetch(model: &str, cache: &Path, endpoint: Option<&str>) -> Result<PathBuf, String> {
    let mut builder = hf_hub::api::sync::ApiBuilder::from_env().with_cache_dir(cache.to_owned()).with_progress(false);
    if let Some(e) = endpoint {
        builder = builder.with_endpoint(e.to_owned());
    }
    let api = builder.build().map_err(|e| format!("cannot start the hub client: {e}"))?;
    let repo = api.model(model.to_owned());
    let info = repo.info().map_err(|e| format!("fetching it from the hub failed: {e}"))?;
    let wanted = |f: &str| {
        f.ends_with(".safetensors")
            || matches!(f, "config.json" | "model.safetensors.index.json" | "tokenizer.json" | "tokenizer_config.json")
    };
    let files: Vec<&str> = info.siblings.iter().map(|s| s.rfilename.as_str()).filter(|f| wanted(f)).collect();
    if !files.contains(&"config.json") || !files.iter().any(|f| f.ends_with(".safetensors")) {
        return Err(format!("the hub's {model} has no config.json or no safetensors weights"));
    }
    let mut dir = None;
    for f in files {
        eprintln!("fetching {model}/{f}");
        let path = repo.get(f).map_err(|e| format!("fetching {f} from the hub failed: {e}"))?;
        if f == "config.json" {
            dir = path.parent().map(Path::to_owned);
        }
    }
    dir.ok_or_else(|| format!("the hub client put {model}/config.json nowhere"))
}

/// `(org, name)` when `model` has the form of a hub id: one slash, and
/// neither part empty or starting with a dot. A path that is not there
/// (`/models/x`, `./x`, `../x/y`) is not one, and is not asked of the hub.
fn hub_id(model: &str) -> Option<(&str, &str)> {
    let (org, name) = model.split_once('/')?;
    let part = |p: &str| !p.is_empty() && !p.starts_with('.') && !p.contains(['/', '\\']);
    (part(org) && part(name)).then_some((org, name))
}

/// Resolves model id `org/name` in hub cache `cache`.
pub fn resolve_in(model: &str, cache: &Path) -> ModelResult<PathBuf> {
    let not_found = |why: String| ModelError::NotFound(format!("{model}: not a directory, {why}"));
    let Some((org, name)) = hub_id(model) else {
        return Err(not_found("nor a Hugging Face model id (org/name)".into()));
    };
    let repo = cache.join(format!("models--{org}--{name}"));
    let refs = repo.join("refs/main");
    let snapshot = match std::fs::read_to_string(&refs) {
        Ok(rev) => repo.join("snapshots").join(rev.trim()),
        Err(_) => {
            // No ref: take the only snapshot, if there is exactly one.
            let snaps: Vec<PathBuf> = std::fs::read_dir(repo.join("snapshots"))
                .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_dir()).collect())
                .unwrap_or_default();
            match snaps.as_slice() {
                [one] => one.clone(),
                [] => return Err(not_found(format!("and not in the Hugging Face cache at {}", cache.display()))),
                _ => return Err(not_found(format!("and {} has several snapshots but no refs/main", repo.display()))),
            }
        }
    };
    if !snapshot.join("config.json").exists() {
        return Err(not_found(format!("and the cached snapshot {} has no config.json", snapshot.display())));
    }
    Ok(snapshot)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_snapshot_refs_main_names() {
        let cache = std::env::temp_dir().join(format!("trinity-hub-{}", std::process::id()));
        let repo = cache.join("models--microsoft--bitnet-b1.58-2B-4T");
        std::fs::create_dir_all(repo.join("snapshots/abc123")).unwrap();
        std::fs::create_dir_all(repo.join("snapshots/old999")).unwrap();
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        std::fs::write(repo.join("refs/main"), "abc123\n").unwrap();
        std::fs::write(repo.join("snapshots/abc123/config.json"), "{}").unwrap();
        let got = resolve_in("microsoft/bitnet-b1.58-2B-4T", &cache).unwrap();
        assert_eq!(got, repo.join("snapshots/abc123"));
        let err = resolve_in("microsoft/other", &cache).unwrap_err().to_string();
        assert!(err.contains("not in the Hugging Face cache"), "{err}");
        for path in ["nonsense", "/models/bitnet", "./bitnet/x", "../x", "models/bitnet/", "a/b/c", "/"] {
            let err = resolve_in(path, &cache).unwrap_err().to_string();
            assert!(err.contains("nor a Hugging Face model id (org/name)"), "{path}: {err}");
        }
        // A path that is not there is not asked of the hub (it was, as the id "/models/bitnet").
        let err = resolve("/nonexistent/bitnet").unwrap_err().to_string();
        assert!(err.contains("nor a Hugging Face model id") && !err.contains("hub failed"), "{err}");
        std::fs::remove_dir_all(&cache).unwrap();
    }

    #[test]
    fn a_hub_that_cannot_be_reached_is_a_clear_error() {
        let cache = std::env::temp_dir().join(format!("trinity-hub-fetch-{}", std::process::id()));
        // Nothing listens on port 9 of this machine: the fetch fails at once, and says so.
        let err = fetch("microsoft/bitnet-b1.58-2B-4T", &cache, Some("http://127.0.0.1:9")).unwrap_err();
        assert!(err.contains("fetching it from the hub failed"), "{err}");
        let _ = std::fs::remove_dir_all(&cache);
    }
}
