//! Parsing `--model` values.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The model `diffsr upscale` uses when `--model` is not given.
pub const DEFAULT_REPO: &str = "stabilityai/stable-diffusion-x4-upscaler";

/// What `--model` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSpec {
    /// A hub repo at a revision (a branch, tag or commit; `main` when not given).
    Hub { repo: String, revision: String },
    /// A local model directory in the diffusers layout.
    Dir(PathBuf),
    /// A single local weights file.
    File(PathBuf),
}

impl Default for ModelSpec {
    fn default() -> Self {
        Self::Hub {
            repo: DEFAULT_REPO.to_string(),
            revision: "main".to_string(),
        }
    }
}

impl std::fmt::Display for ModelSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Hub { repo, revision } => f.write_str(&display_repo(repo, revision)),
            Self::Dir(p) | Self::File(p) => write!(f, "{}", p.display()),
        }
    }
}

/// `owner/repo`, with `@revision` unless it is `main`.
pub(crate) fn display_repo(repo: &str, revision: &str) -> String {
    if revision == "main" {
        repo.to_string()
    } else {
        format!("{repo}@{revision}")
    }
}

impl ModelSpec {
    /// Parses a `--model` value. An existing path always wins; a value that looks like a path
    /// (`./x`, `../x`, `/x`, `~/x`, a weights file extension) but does not exist is an error
    /// naming it; anything else must be a hub repo id `owner/name[@revision]`.
    pub fn parse(s: &str) -> Result<Self> {
        let bad = |reason: String| Error::ModelSpec {
            spec: s.to_string(),
            reason,
        };
        if s.trim().is_empty() {
            return Err(bad(
                "empty; give a hub repo id (owner/name) or a local path".into(),
            ));
        }
        let path = Path::new(s);
        if let Ok(meta) = std::fs::metadata(path) {
            return Ok(if meta.is_dir() {
                Self::Dir(path.to_path_buf())
            } else {
                Self::File(path.to_path_buf())
            });
        }
        if looks_like_path(s) {
            return Err(bad("no such file or directory".into()));
        }
        let (repo, revision) = match s.split_once('@') {
            Some((repo, rev)) => (repo, rev),
            None => (s, "main"),
        };
        check_repo_id(repo).map_err(|why| {
            bad(format!(
                "not an existing local path, and not a hub repo id: {why} \
                 (expected owner/name or owner/name@revision)"
            ))
        })?;
        check_revision(revision).map_err(|why| bad(format!("bad revision: {why}")))?;
        Ok(Self::Hub {
            repo: repo.to_string(),
            revision: revision.to_string(),
        })
    }
}

fn looks_like_path(s: &str) -> bool {
    const WEIGHT_EXTENSIONS: [&str; 6] = [".safetensors", ".bin", ".ckpt", ".pth", ".pt", ".onnx"];
    s.starts_with("./")
        || s.starts_with("../")
        || s.starts_with('~')
        || s == "."
        || s == ".."
        || s.contains('\\')
        || Path::new(s).is_absolute()
        || WEIGHT_EXTENSIONS.iter().any(|e| s.ends_with(e))
}

/// The hub's rules for `owner/name`: one slash, each part 1..=96 of `[A-Za-z0-9._-]`, not
/// starting or ending with `-` or `.`, no `--` or `..`.
pub(crate) fn check_repo_id(repo: &str) -> std::result::Result<(), String> {
    let parts: Vec<&str> = repo.split('/').collect();
    if parts.len() != 2 {
        return Err(format!("`{repo}` should have exactly one `/`"));
    }
    for part in parts {
        if part.is_empty() || part.len() > 96 {
            return Err(format!("`{part}` should be 1 to 96 characters"));
        }
        if let Some(c) = part
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
        {
            return Err(format!("`{part}` contains `{c}`"));
        }
        if part.starts_with(['-', '.'])
            || part.ends_with(['-', '.'])
            || part.contains("--")
            || part.contains("..")
        {
            return Err(format!(
                "`{part}` may not start or end with `-` or `.`, nor hold `--` or `..`"
            ));
        }
    }
    Ok(())
}

fn check_revision(rev: &str) -> std::result::Result<(), String> {
    if rev.is_empty() {
        return Err("empty after `@`".into());
    }
    if rev.contains("..")
        || rev.starts_with('/')
        || rev
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '\\' || c == '@')
    {
        return Err(format!("`{rev}` is not a branch, tag or commit name"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_ids_and_revisions() {
        assert_eq!(
            ModelSpec::parse("a/b").unwrap(),
            ModelSpec::Hub {
                repo: "a/b".into(),
                revision: "main".into()
            }
        );
        assert_eq!(
            ModelSpec::parse("stabilityai/x4@refs/pr/3").unwrap(),
            ModelSpec::Hub {
                repo: "stabilityai/x4".into(),
                revision: "refs/pr/3".into()
            }
        );
        for bad in ["a", "a/b/c", "a/-b", "a/b@", "", "a/b@x y", "a/b c"] {
            assert!(ModelSpec::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn paths() {
        let dir = std::env::temp_dir();
        assert_eq!(
            ModelSpec::parse(dir.to_str().unwrap()).unwrap(),
            ModelSpec::Dir(dir.clone())
        );
        let err = ModelSpec::parse("./no-such-model-dir")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("./no-such-model-dir") && err.contains("no such"),
            "{err}"
        );
        assert!(ModelSpec::parse("weights.safetensors").is_err());
        assert!(ModelSpec::parse("/no/such/dir").is_err());
    }
}
