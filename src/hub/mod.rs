//! Model weights from the Hugging Face hub.
//!
//! `--model` names a [`ModelSpec`]: a hub repo id (`owner/repo`, optionally `@revision`), a local
//! model directory in the diffusers layout, or a single weights file. [`resolve`] turns it into a
//! local path; for a repo it downloads, through the `hf-hub` crate and into the standard hub
//! cache (`$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`), only the files
//! the x4 upscaling pipeline needs for the chosen dtype, and returns the snapshot directory, which
//! [`crate::pipeline::UpscalePipeline::load`] opens like any local model folder.
//!
//! Single-file models (the GAN upscalers) name one file of a repo,
//! `owner/name[@revision]:path/in/repo` ([`ModelSpec::HubFile`]); [`resolve_file`] fetches that
//! file (and an ncnn `.param`/`.bin` file's sibling) into the same cache and returns its path.
//!
//! Downloads go to `blobs/<etag>.part`, are checked against the size the hub lists, and only
//! then renamed and linked into `snapshots/<commit>/`, so an interrupted download is never
//! taken for a complete file: the next run resumes the `.part` file with a range request.

mod cache;
mod select;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::DType;
use hf_hub::api::sync::{Api, ApiBuilder, ApiError};
use hf_hub::{Repo, RepoType};
use serde::Deserialize;

use crate::error::{Error, Result};

pub use crate::model_spec::{ModelSpec, DEFAULT_REPO};
use cache::cache_dir_from_env;
pub use cache::{snapshot_files, CachedRepo, HubCache};
use select::select_files;

/// The hub the `hf-hub` crate talks to when `HF_ENDPOINT` is unset.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// Progress of one file's download, reported to [`HubOptions::progress`].
#[derive(Debug, Clone)]
pub struct DownloadProgress<'a> {
    /// Path of the file inside the repo.
    pub file: &'a str,
    /// Bytes on disk so far (including a resumed `.part` file).
    pub downloaded: u64,
    /// Size of the file.
    pub total: u64,
    /// The file is complete.
    pub finished: bool,
}

/// A download progress callback.
pub type ProgressFn = Arc<dyn Fn(&DownloadProgress<'_>) + Send + Sync>;

/// How [`resolve`] reaches the hub and its cache.
#[derive(Clone)]
pub struct HubOptions {
    /// The dtype the pipeline will run in: f16 and bf16 fetch the `*.fp16.*` weight variants
    /// where the repo has them.
    pub dtype: DType,
    /// Hub cache directory (the folder holding `models--owner--name/`).
    pub cache_dir: PathBuf,
    /// Hub base URL.
    pub endpoint: String,
    /// Access token for gated or private repos.
    pub token: Option<String>,
    /// Never touch the network; use only what is cached.
    pub offline: bool,
    /// Ask the hub for the repo's current file list even when the cache already holds a
    /// complete snapshot of the revision (`diffsr models pull`).
    pub refresh: bool,
    /// How many times a failed download is resumed before giving up.
    pub retries: usize,
    /// Called as bytes arrive; `None` is quiet.
    pub progress: Option<ProgressFn>,
}

impl std::fmt::Debug for HubOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubOptions")
            .field("dtype", &self.dtype)
            .field("cache_dir", &self.cache_dir)
            .field("endpoint", &self.endpoint)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("offline", &self.offline)
            .field("refresh", &self.refresh)
            .field("retries", &self.retries)
            .field("progress", &self.progress.is_some())
            .finish()
    }
}

impl HubOptions {
    /// Options from the environment, as `huggingface_hub` reads it: `HF_HUB_CACHE`, `HF_HOME`
    /// (and `XDG_CACHE_HOME`), `HF_ENDPOINT`, `HF_TOKEN` (else the token file `HF_TOKEN_PATH`
    /// or `$HF_HOME/token`) and `HF_HUB_OFFLINE`. Quiet, no refresh, 3 retries.
    pub fn from_env(dtype: DType) -> Result<Self> {
        let cache_dir = cache_dir_from_env()?;
        let endpoint = env_nonempty("HF_ENDPOINT")
            .map(|e| e.trim_end_matches('/').to_string())
            .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string());
        let token = env_nonempty("HF_TOKEN")
            .or_else(|| env_nonempty("HUGGING_FACE_HUB_TOKEN"))
            .or_else(|| {
                let path = env_nonempty("HF_TOKEN_PATH")
                    .map(PathBuf::from)
                    .or_else(|| cache::hf_home().ok().map(|h| h.join("token")))?;
                let text = std::fs::read_to_string(path).ok()?;
                let text = text.trim();
                (!text.is_empty()).then(|| text.to_string())
            });
        let offline = env_nonempty("HF_HUB_OFFLINE").is_some_and(|v| is_truthy(&v));
        Ok(Self {
            dtype,
            cache_dir,
            endpoint,
            token,
            offline,
            refresh: false,
            retries: 3,
            progress: None,
        })
    }
}

pub(crate) fn env_nonempty(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn is_truthy(v: &str) -> bool {
    matches!(
        v.trim().to_ascii_lowercase().as_str(),
        "1" | "on" | "yes" | "true"
    )
}

/// A resolved snapshot of a hub repo.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub repo: String,
    pub revision: String,
    /// The commit the revision pointed to.
    pub commit: String,
    /// `snapshots/<commit>/` in the cache: a model folder in the diffusers layout.
    pub dir: PathBuf,
    /// The repo files this dtype needs, all present under `dir`.
    pub files: Vec<String>,
    /// How many of them this call downloaded.
    pub downloaded: usize,
}

/// Turns a model spec into a local path: a directory or file as given, or for a hub repo the
/// cached snapshot directory, downloading what is missing. A single hub file
/// ([`ModelSpec::HubFile`]) is an error here: it is no diffusion model; see [`resolve_file`].
pub fn resolve(spec: &ModelSpec, options: &HubOptions) -> Result<PathBuf> {
    match spec {
        ModelSpec::Dir(path) | ModelSpec::File(path) => Ok(path.clone()),
        ModelSpec::Hub { repo, revision } => Ok(pull(repo, revision, options)?.dir),
        ModelSpec::HubFile { repo, .. } => Err(hub_error(
            repo,
            format!(
                "`{spec}` names a single file, not a diffusion model directory; give the repo \
                 id ({repo}) of a model in the diffusers layout"
            ),
        )),
    }
}

/// The local path of a single-file model spec: a local file as given (checked readable), or
/// for a hub file ([`ModelSpec::HubFile`]) its path in the cached snapshot, downloaded unless
/// the cache already has it (see [`pull_file`]). For an ncnn `.param` or `.bin` file its
/// sibling (same stem, the other extension) is fetched too, so the two lie side by side.
pub fn resolve_file(spec: &ModelSpec, options: &HubOptions) -> Result<PathBuf> {
    match spec {
        ModelSpec::File(path) => crate::model_spec::readable_file(path),
        ModelSpec::HubFile {
            repo,
            revision,
            file,
        } => Ok(pull_file(repo, revision, file, options)?.dir.join(file)),
        ModelSpec::Dir(path) => Err(Error::ModelSpec {
            spec: spec.to_string(),
            reason: format!(
                "{} is a directory; give a single weights file, or a hub file \
                 owner/name[@revision]:path/in/repo",
                path.display()
            ),
        }),
        ModelSpec::Hub { repo, .. } => Err(Error::ModelSpec {
            spec: spec.to_string(),
            reason: format!(
                "a hub repo, not a single weights file; name the file in the repo as \
                 {repo}:path/in/repo"
            ),
        }),
    }
}

/// The ncnn sibling of `file`: `x.bin` for `x.param`, `x.param` for `x.bin`.
fn ncnn_sibling(file: &str) -> Option<String> {
    if let Some(stem) = file.strip_suffix(".param") {
        Some(format!("{stem}.bin"))
    } else {
        file.strip_suffix(".bin")
            .map(|stem| format!("{stem}.param"))
    }
}

/// Makes sure the cache holds `file` of `repo` at `revision` (and, for an ncnn `.param` or
/// `.bin` file, its sibling: required for a `.param`, fetched for a `.bin` when the repo has
/// one). [`Snapshot::files`] lists the file first.
///
/// Without [`HubOptions::refresh`], a cached file is used without any request; offline, only
/// the cache is used.
pub fn pull_file(repo: &str, revision: &str, file: &str, options: &HubOptions) -> Result<Snapshot> {
    crate::model_spec::check_repo_id(repo)
        .map_err(|why| hub_error(repo, format!("bad repo id: {why}")))?;
    crate::model_spec::check_repo_file(file)
        .map_err(|why| hub_error(repo, format!("bad file: {why}")))?;
    let cache = HubCache::new(options.cache_dir.clone());
    let sibling = ncnn_sibling(file);
    let cached = cache.snapshot(repo, revision);
    if !options.refresh || options.offline {
        if let Some((commit, dir)) = &cached {
            // A `.param` needs its `.bin`; a `.bin` may be a PyTorch pickle with no `.param`,
            // and was fetched with its `.param` if the repo had one.
            let sibling_ok = match &sibling {
                Some(s) if file.ends_with(".param") => dir.join(s).is_file(),
                _ => true,
            };
            if dir.join(file).is_file() && sibling_ok {
                let mut files = vec![file.to_string()];
                files.extend(sibling.filter(|s| dir.join(s).is_file()));
                return Ok(Snapshot {
                    repo: repo.to_string(),
                    revision: revision.to_string(),
                    commit: commit.clone(),
                    dir: dir.clone(),
                    files,
                    downloaded: 0,
                });
            }
        }
    }
    if options.offline {
        let what = match &cached {
            Some((_, dir)) if dir.join(file).is_file() => {
                format!("{file} is cached but its ncnn sibling is not")
            }
            _ => format!("{file} is not in the cache"),
        };
        return Err(hub_error(
            repo,
            format!(
                "offline mode (HF_HUB_OFFLINE) is on and revision `{revision}` cannot be used: \
                 {what} ({}); run once with network access to download it, or unset \
                 HF_HUB_OFFLINE",
                options.cache_dir.display(),
            ),
        ));
    }

    let api = build_api(options, cache.root())?;
    let info = repo_info(&api, repo, revision, options)?;
    let commit = info.sha.clone();
    let listed = |f: &str| info.siblings.iter().any(|s| s.rfilename == f);
    if !listed(file) {
        return Err(hub_error(
            repo,
            format!(
                "revision `{revision}` has no file `{file}`{}",
                weight_files_hint(&info)
            ),
        ));
    }
    let mut wanted = vec![file.to_string()];
    match sibling {
        Some(s) if listed(&s) => wanted.push(s),
        Some(s) if file.ends_with(".param") => {
            return Err(hub_error(
                repo,
                format!(
                    "revision `{revision}` has the ncnn graph `{file}` but not its weights `{s}`"
                ),
            ))
        }
        _ => {}
    }
    let pinned = api.repo(Repo::with_revision(
        repo.to_string(),
        RepoType::Model,
        commit.clone(),
    ));
    let dir = cache.snapshot_dir(repo, &commit);
    let mut downloaded = 0;
    for f in &wanted {
        if fetch_file(&pinned, repo, f, info.size_of(f), &dir, options)? {
            downloaded += 1;
        }
    }
    cache.write_ref(repo, revision, &commit)?;
    if revision != commit {
        cache.remove_ref(repo, &commit);
    }
    Ok(Snapshot {
        repo: repo.to_string(),
        revision: revision.to_string(),
        commit,
        dir,
        files: wanted,
        downloaded,
    })
}

/// `; its weight files: a, b (and N more)`, or `` when the repo lists none.
fn weight_files_hint(info: &RepoInfo) -> String {
    const EXTENSIONS: [&str; 9] = [
        ".safetensors",
        ".pth",
        ".pt",
        ".ckpt",
        ".bin",
        ".param",
        ".onnx",
        ".gguf",
        ".npz",
    ];
    const SHOWN: usize = 8;
    let weights: Vec<&str> = info
        .siblings
        .iter()
        .map(|s| s.rfilename.as_str())
        .filter(|f| EXTENSIONS.iter().any(|e| f.ends_with(e)))
        .collect();
    if weights.is_empty() {
        return "; it lists no weight files".to_string();
    }
    let mut out = format!(
        "; its weight files: {}",
        weights[..weights.len().min(SHOWN)].join(", ")
    );
    if weights.len() > SHOWN {
        out.push_str(&format!(" (and {} more)", weights.len() - SHOWN));
    }
    out
}

/// Makes sure the cache holds what the pipeline needs from `repo` at `revision`.
///
/// Without [`HubOptions::refresh`], a complete cached snapshot is used without any request.
pub fn pull(repo: &str, revision: &str, options: &HubOptions) -> Result<Snapshot> {
    let cache = HubCache::new(options.cache_dir.clone());
    let cached = cache.snapshot(repo, revision);
    if !options.refresh || options.offline {
        if let Some((commit, dir)) = &cached {
            let listing = cache::list_snapshot_files(dir);
            if let Ok(selection) = select_files(&listing, options.dtype) {
                // f32 from cached fp16 weights would lose precision: unless offline, ask the
                // hub whether full-precision weights exist. (f16 from cached f32 weights is
                // exact, so it is used as is.)
                let downcast_only = options.dtype == DType::F32 && selection.has_fp16_weights();
                if selection.shards_present(dir) && (options.offline || !downcast_only) {
                    return Ok(Snapshot {
                        repo: repo.to_string(),
                        revision: revision.to_string(),
                        commit: commit.clone(),
                        dir: dir.clone(),
                        files: selection.files_with_shards(dir),
                        downloaded: 0,
                    });
                }
            }
        }
    }
    if options.offline {
        let what = match &cached {
            Some(_) => "only part of it is cached",
            None => "it is not in the cache",
        };
        return Err(hub_error(
            repo,
            format!(
                "offline mode (HF_HUB_OFFLINE) is on and revision `{revision}` cannot be used: \
                 {what} ({}); run `diffsr models pull {}` with network access, or unset \
                 HF_HUB_OFFLINE",
                options.cache_dir.display(),
                crate::model_spec::display_repo(repo, revision),
            ),
        ));
    }
    download(repo, revision, options, &cache)
}

/// One sibling of the hub's repo info, with `?blobs=true` sizes.
#[derive(Debug, Deserialize)]
struct Sibling {
    rfilename: String,
    #[serde(default)]
    size: Option<u64>,
    #[serde(default)]
    lfs: Option<Lfs>,
}

#[derive(Debug, Deserialize)]
struct Lfs {
    size: u64,
}

#[derive(Debug, Deserialize)]
struct RepoInfo {
    sha: String,
    siblings: Vec<Sibling>,
}

impl Sibling {
    fn size(&self) -> Option<u64> {
        self.lfs.as_ref().map(|l| l.size).or(self.size)
    }
}

impl RepoInfo {
    /// The size the hub lists for `file`.
    fn size_of(&self, file: &str) -> Option<u64> {
        self.siblings
            .iter()
            .find(|s| s.rfilename == file)
            .and_then(Sibling::size)
    }
}

fn hub_error(repo: &str, message: impl Into<String>) -> Error {
    Error::Hub {
        repo: repo.to_string(),
        message: message.into(),
    }
}

fn build_api(options: &HubOptions, revision_cache: &Path) -> Result<Api> {
    ApiBuilder::from_cache(hf_hub::Cache::new(revision_cache.to_path_buf()))
        .with_endpoint(options.endpoint.clone())
        .with_token(options.token.clone())
        .with_progress(false)
        .with_retries(options.retries)
        .with_user_agent("diffsr", env!("CARGO_PKG_VERSION"))
        .build()
        .map_err(|e| Error::Hub {
            repo: String::new(),
            message: format!("cannot set up the HTTP client: {e}"),
        })
}

/// A readable sentence for a failed request.
fn describe(err: &ApiError) -> String {
    match err {
        ApiError::TooManyRetries(inner) => format!("gave up after retrying: {}", describe(inner)),
        other => other.to_string(),
    }
}

/// The status code of a failed request, if the server answered.
fn status_of(err: &ApiError) -> Option<u16> {
    match err {
        ApiError::RequestError(e) => match e.as_ref() {
            ureq::Error::Status(code, _) => Some(*code),
            ureq::Error::Transport(_) => None,
        },
        ApiError::TooManyRetries(inner) => status_of(inner),
        _ => None,
    }
}

/// The repo's info at `revision` with file sizes, its commit checked.
fn repo_info(api: &Api, repo: &str, revision: &str, options: &HubOptions) -> Result<RepoInfo> {
    let info_repo = api.repo(Repo::with_revision(
        repo.to_string(),
        RepoType::Model,
        revision.to_string(),
    ));
    let info: RepoInfo = info_repo
        .info_request()
        .query("blobs", "true")
        .call()
        .map_err(|e| {
            let e = ApiError::RequestError(Box::new(e));
            match status_of(&e) {
                Some(401) | Some(403) | Some(404) => hub_error(
                    repo,
                    format!(
                        "no such repo or revision `{revision}` on {} (or it is private or gated: \
                         set HF_TOKEN)",
                        options.endpoint
                    ),
                ),
                _ => hub_error(
                    repo,
                    format!(
                        "cannot reach the hub at {}: {}; set HF_HUB_OFFLINE=1 to use the cache only",
                        options.endpoint,
                        describe(&e)
                    ),
                ),
            }
        })?
        .into_json()
        .map_err(|e| hub_error(repo, format!("unreadable repo info from the hub: {e}")))?;
    let commit = info.sha.trim().to_string();
    if commit.is_empty() || !commit.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(hub_error(
            repo,
            format!("the hub sent a bad commit id `{commit}`"),
        ));
    }
    Ok(RepoInfo {
        sha: commit,
        siblings: info.siblings,
    })
}

fn download(
    repo: &str,
    revision: &str,
    options: &HubOptions,
    cache: &HubCache,
) -> Result<Snapshot> {
    let api = build_api(options, cache.root())?;
    let info = repo_info(&api, repo, revision, options)?;
    let commit = info.sha.clone();
    let listing: Vec<String> = info.siblings.iter().map(|s| s.rfilename.clone()).collect();
    let selection = select_files(&listing, options.dtype).map_err(|missing| {
        hub_error(
            repo,
            format!(
                "revision `{revision}` is not a Stable Diffusion x4 upscaler in the diffusers \
                 layout: it lacks {}",
                missing.join(", ")
            ),
        )
    })?;
    let sizes: std::collections::HashMap<&str, u64> = info
        .siblings
        .iter()
        .filter_map(|s| Some((s.rfilename.as_str(), s.size()?)))
        .collect();

    // Download by commit, so every file comes from the same revision even if a branch moves.
    let pinned = api.repo(Repo::with_revision(
        repo.to_string(),
        RepoType::Model,
        commit.clone(),
    ));
    let dir = cache.snapshot_dir(repo, &commit);
    let mut downloaded = 0;
    let mut files = Vec::new();
    let mut queue: Vec<String> = selection.files().to_vec();
    let mut i = 0;
    while i < queue.len() {
        let file = queue[i].clone();
        i += 1;
        if fetch_file(
            &pinned,
            repo,
            &file,
            sizes.get(file.as_str()).copied(),
            &dir,
            options,
        )? {
            downloaded += 1;
        }
        if file.ends_with(".safetensors.index.json") {
            for shard in select::shards_of(&dir.join(&file))? {
                if !queue.contains(&shard) {
                    queue.push(shard);
                }
            }
        }
        files.push(file);
    }
    cache.write_ref(repo, revision, &commit)?;
    if revision != commit {
        // hf-hub records the pinned commit as a ref of its own; the Python cache has no such ref.
        cache.remove_ref(repo, &commit);
    }
    Ok(Snapshot {
        repo: repo.to_string(),
        revision: revision.to_string(),
        commit,
        dir,
        files,
        downloaded,
    })
}

/// Fetches one file into the snapshot unless it is already there with the right size. Returns
/// whether it downloaded.
fn fetch_file(
    api: &hf_hub::api::sync::ApiRepo,
    repo: &str,
    file: &str,
    expected: Option<u64>,
    snapshot: &Path,
    options: &HubOptions,
) -> Result<bool> {
    let target = snapshot.join(file);
    if let Ok(meta) = std::fs::metadata(&target) {
        if expected.is_none_or(|n| n == meta.len()) {
            return Ok(false);
        }
        // A wrong size is a bad blob (an older diffsr or a broken copy): fetch it again.
        remove_bad(&target);
    }
    let progress = Reporter {
        file,
        total: 0,
        done: 0,
        callback: options.progress.clone(),
    };
    let path = api.download_with_progress(file, progress).map_err(|e| {
        let reason = match status_of(&e) {
            Some(404) => "the hub has no such file (404)".to_string(),
            _ => describe(&e),
        };
        hub_error(
            repo,
            format!(
                "downloading {file} failed: {reason}; run the command again to resume the \
                 download"
            ),
        )
    })?;
    let got = std::fs::metadata(&path)
        .map(|m| m.len())
        .map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
    if let Some(n) = expected {
        if got != n {
            remove_bad(&path);
            return Err(hub_error(
                repo,
                format!(
                    "downloading {file} gave {got} bytes where the hub lists {n}; the bad copy \
                     was removed, run the command again"
                ),
            ));
        }
    }
    if let Some(cb) = &options.progress {
        cb(&DownloadProgress {
            file,
            downloaded: got,
            total: got,
            finished: true,
        });
    }
    Ok(true)
}

/// Removes a snapshot link and the blob it points to.
fn remove_bad(link: &Path) {
    if let Ok(blob) = std::fs::canonicalize(link) {
        let _ = std::fs::remove_file(blob);
    }
    let _ = std::fs::remove_file(link);
}

struct Reporter<'a> {
    file: &'a str,
    total: u64,
    done: u64,
    callback: Option<ProgressFn>,
}

impl Reporter<'_> {
    fn report(&self) {
        if let Some(cb) = &self.callback {
            cb(&DownloadProgress {
                file: self.file,
                downloaded: self.done,
                total: self.total,
                finished: false,
            });
        }
    }
}

impl hf_hub::api::Progress for Reporter<'_> {
    fn init(&mut self, size: usize, _filename: &str) {
        // hf-hub calls init at the start of every attempt, then reports the resumed length.
        self.total = size as u64;
        self.done = 0;
    }

    fn update(&mut self, size: usize) {
        self.done += size as u64;
        self.report();
    }

    fn finish(&mut self) {}
}
