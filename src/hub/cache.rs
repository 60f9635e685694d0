//! The hub cache on disk, in the layout `huggingface_hub` and `hf-hub` share:
//! `<cache>/models--owner--name/{refs/<revision>, snapshots/<commit>/<file>, blobs/<etag>}`.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

use super::env_nonempty;

/// `$HF_HOME`, else `$XDG_CACHE_HOME/huggingface`, else `~/.cache/huggingface`.
pub(crate) fn hf_home() -> Result<PathBuf> {
    if let Some(home) = env_nonempty("HF_HOME") {
        return Ok(PathBuf::from(home));
    }
    if let Some(xdg) = env_nonempty("XDG_CACHE_HOME") {
        return Ok(PathBuf::from(xdg).join("huggingface"));
    }
    let home = env_nonempty("HOME")
        .or_else(|| env_nonempty("USERPROFILE"))
        .ok_or_else(|| Error::Hub {
            repo: String::new(),
            message: "cannot find the hub cache: set HF_HOME or HF_HUB_CACHE (no home directory)"
                .into(),
        })?;
    Ok(PathBuf::from(home).join(".cache").join("huggingface"))
}

/// The hub cache directory: `$HF_HUB_CACHE`, else `<hf_home>/hub`.
pub fn cache_dir_from_env() -> Result<PathBuf> {
    match env_nonempty("HF_HUB_CACHE") {
        Some(dir) => Ok(PathBuf::from(dir)),
        None => Ok(hf_home()?.join("hub")),
    }
}

/// One cached model repo.
#[derive(Debug, Clone)]
pub struct CachedRepo {
    /// `owner/name`.
    pub repo: String,
    /// `models--owner--name/`.
    pub dir: PathBuf,
    /// Bytes of complete blobs.
    pub size: u64,
    /// Bytes of interrupted downloads (`blobs/*.part`), resumed by the next pull.
    pub partial: u64,
    /// `(revision, commit)` for each ref.
    pub refs: Vec<(String, String)>,
    /// `(commit, snapshot dir)` for each snapshot.
    pub snapshots: Vec<(String, PathBuf)>,
}

/// A hub cache directory.
#[derive(Debug, Clone)]
pub struct HubCache {
    root: PathBuf,
}

impl HubCache {
    pub fn new(root: PathBuf) -> Self {
        Self { root }
    }

    /// The cache directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `models--owner--name/`.
    pub fn repo_dir(&self, repo: &str) -> PathBuf {
        self.root
            .join(format!("models--{}", repo.replace('/', "--")))
    }

    /// `snapshots/<commit>/`.
    pub fn snapshot_dir(&self, repo: &str, commit: &str) -> PathBuf {
        self.repo_dir(repo).join("snapshots").join(commit)
    }

    /// The commit and snapshot directory `revision` points to, if cached: through
    /// `refs/<revision>`, or the revision itself when it is a commit with a snapshot.
    pub fn snapshot(&self, repo: &str, revision: &str) -> Option<(String, PathBuf)> {
        let dir = self.repo_dir(repo);
        let commit = match std::fs::read_to_string(dir.join("refs").join(revision)) {
            Ok(text) => text.trim().to_string(),
            Err(_) if is_commit(revision) => revision.to_string(),
            Err(_) => return None,
        };
        if commit.is_empty() || commit.contains(['/', '\\', '.']) {
            return None;
        }
        let snapshot = dir.join("snapshots").join(&commit);
        snapshot.is_dir().then_some((commit, snapshot))
    }

    /// Points `refs/<revision>` at `commit`, through a temporary file and a rename.
    pub fn write_ref(&self, repo: &str, revision: &str, commit: &str) -> Result<()> {
        if revision == commit {
            return Ok(());
        }
        let path = self.repo_dir(repo).join("refs").join(revision);
        let io = |source| Error::Io {
            path: path.clone(),
            source,
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        let tmp = path.with_extension("diffsr-tmp");
        std::fs::write(&tmp, commit).map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)
    }

    /// Removes `refs/<name>` if present.
    pub(crate) fn remove_ref(&self, repo: &str, name: &str) {
        let _ = std::fs::remove_file(self.repo_dir(repo).join("refs").join(name));
    }

    /// Every cached model repo, sorted by name.
    pub fn list(&self) -> Result<Vec<CachedRepo>> {
        let entries = match std::fs::read_dir(&self.root) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(Error::Io {
                    path: self.root.clone(),
                    source,
                })
            }
        };
        let mut repos = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(rest) = name.strip_prefix("models--") {
                if entry.path().is_dir() {
                    let repo = rest.replacen("--", "/", 1);
                    repos.push(self.describe(&repo));
                }
            }
        }
        repos.sort_by(|a, b| a.repo.cmp(&b.repo));
        Ok(repos)
    }

    /// The cached state of one repo, if any.
    pub fn get(&self, repo: &str) -> Option<CachedRepo> {
        self.repo_dir(repo).is_dir().then(|| self.describe(repo))
    }

    fn describe(&self, repo: &str) -> CachedRepo {
        let dir = self.repo_dir(repo);
        let (mut size, mut partial) = (0, 0);
        for entry in std::fs::read_dir(dir.join("blobs"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            let len = entry.metadata().map(|m| m.len()).unwrap_or(0);
            if name.ends_with(".part") {
                partial += len;
            } else if !name.ends_with(".lock") {
                size += len;
            }
        }
        let refs_dir = dir.join("refs");
        let mut refs = Vec::new();
        for path in walk_files(&refs_dir) {
            let Ok(rel) = path.strip_prefix(&refs_dir) else {
                continue;
            };
            let name = rel_to_repo_path(rel);
            if let Ok(commit) = std::fs::read_to_string(&path) {
                refs.push((name, commit.trim().to_string()));
            }
        }
        refs.sort();
        let mut snapshots: Vec<(String, PathBuf)> = std::fs::read_dir(dir.join("snapshots"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
            .collect();
        snapshots.sort();
        CachedRepo {
            repo: repo.to_string(),
            dir,
            size,
            partial,
            refs,
            snapshots,
        }
    }

    /// Deletes a repo from the cache; `false` when it was not there.
    pub fn remove(&self, repo: &str) -> Result<bool> {
        let dir = self.repo_dir(repo);
        if !dir.is_dir() {
            return Ok(false);
        }
        std::fs::remove_dir_all(&dir).map_err(|source| Error::Io { path: dir, source })?;
        Ok(true)
    }
}

fn is_commit(s: &str) -> bool {
    s.len() == 40 && s.chars().all(|c| c.is_ascii_hexdigit())
}

fn rel_to_repo_path(rel: &Path) -> String {
    rel.components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/")
}

/// Regular files (following links; dangling links skipped) under `dir`, recursively.
fn walk_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.is_file() {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// The repo paths (`unet/config.json`, ...) present in a snapshot.
pub(crate) fn list_snapshot_files(snapshot: &Path) -> Vec<String> {
    walk_files(snapshot)
        .iter()
        .filter_map(|p| p.strip_prefix(snapshot).ok().map(rel_to_repo_path))
        .collect()
}

/// Files in a snapshot with their sizes.
pub fn snapshot_files(snapshot: &Path) -> Vec<(String, u64)> {
    list_snapshot_files(snapshot)
        .into_iter()
        .map(|f| {
            let len = std::fs::metadata(snapshot.join(&f))
                .map(|m| m.len())
                .unwrap_or(0);
            (f, len)
        })
        .collect()
}
