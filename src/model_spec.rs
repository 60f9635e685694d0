//! What names a model (`--model`): a hub repo id, one file of a hub repo, a local model
//! directory or a local weights file. Parsing needs no network, so it is here whether or not the
//! hub client ([`crate::hub`], the `hub` feature) is built.

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
    /// One file of a hub repo at a revision (`owner/name[@revision]:path/in/repo`), for models
    /// that are a single weights file (GAN upscalers, ncnn `.param`/`.bin` pairs).
    HubFile {
        repo: String,
        revision: String,
        /// Path of the file inside the repo, `/`-separated.
        file: String,
    },
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
            Self::HubFile {
                repo,
                revision,
                file,
            } => write!(f, "{}:{file}", display_repo(repo, revision)),
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

/// A local model file, checked to be a regular file and readable (opened once) so a typo
/// fails before any loading, with the file named in the error. The type is checked before
/// opening: a FIFO with no writer would block `open` forever.
pub(crate) fn readable_file(path: &Path) -> Result<PathBuf> {
    crate::model_file::open_regular(path)?;
    Ok(path.to_path_buf())
}

impl ModelSpec {
    /// Whether the spec names a single weights file (local or on the hub) rather than a model
    /// directory or repo.
    pub fn is_single_file(&self) -> bool {
        matches!(self, Self::File(_) | Self::HubFile { .. })
    }

    /// Parses a `--model` value. An existing path always wins; a value with a `:` that does not
    /// start like a path is a hub file `owner/name[@revision]:path/in/repo`; a value that looks
    /// like a path (`./x`, `../x`, `/x`, `~/x`, a weights file extension) but does not exist is
    /// an error naming it; anything else must be a hub repo id `owner/name[@revision]`.
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
        if let Some((repo_rev, file)) = s.split_once(':') {
            if !starts_like_path(s) {
                return parse_hub_file(repo_rev, file).map_err(bad);
            }
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

const HUB_FILE_FORM: &str = "owner/name:path/in/repo or owner/name@revision:path/in/repo";

/// `owner/name[@revision]` and the file after the `:`.
fn parse_hub_file(repo_rev: &str, file: &str) -> std::result::Result<ModelSpec, String> {
    let (repo, revision) = match repo_rev.split_once('@') {
        Some((repo, rev)) => (repo, rev),
        None => (repo_rev, "main"),
    };
    check_repo_id(repo).map_err(|why| {
        format!("not an existing local path, and not a hub file: {why} (expected {HUB_FILE_FORM})")
    })?;
    check_revision(revision).map_err(|why| format!("bad revision: {why}"))?;
    check_repo_file(file)
        .map_err(|why| format!("bad file after `:`: {why} (expected {HUB_FILE_FORM})"))?;
    Ok(ModelSpec::HubFile {
        repo: repo.to_string(),
        revision: revision.to_string(),
        file: file.to_string(),
    })
}

/// A file path inside a repo: relative, `/`-separated, no empty, `.` or `..` parts.
pub(crate) fn check_repo_file(file: &str) -> std::result::Result<(), String> {
    if file.is_empty() {
        return Err("the path of the file in the repo is empty".into());
    }
    if file.starts_with('/') {
        return Err(format!(
            "`{file}` should be relative to the repo, not start with `/`"
        ));
    }
    if let Some(c) = file.chars().find(|c| c.is_control() || *c == '\\') {
        return Err(format!(
            "`{file}` contains {c:?}; separate folders with `/`"
        ));
    }
    if file.ends_with('/') {
        return Err(format!("`{file}` names a folder, not a file"));
    }
    if file
        .split('/')
        .any(|part| part.is_empty() || part == "." || part == "..")
    {
        return Err(format!(
            "`{file}` may not hold empty, `.` or `..` path parts"
        ));
    }
    Ok(())
}

/// Starts the way only a local path does.
fn starts_like_path(s: &str) -> bool {
    s.starts_with("./")
        || s.starts_with("../")
        || s.starts_with('~')
        || s == "."
        || s == ".."
        || s.contains('\\')
        || Path::new(s).is_absolute()
}

fn looks_like_path(s: &str) -> bool {
    const WEIGHT_EXTENSIONS: [&str; 6] = [".safetensors", ".bin", ".ckpt", ".pth", ".pt", ".onnx"];
    starts_like_path(s) || WEIGHT_EXTENSIONS.iter().any(|e| s.ends_with(e))
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

    fn hub_file(repo: &str, revision: &str, file: &str) -> ModelSpec {
        ModelSpec::HubFile {
            repo: repo.into(),
            revision: revision.into(),
            file: file.into(),
        }
    }

    #[test]
    fn hub_files() {
        for (s, want) in [
            ("a/b:x.pth", hub_file("a/b", "main", "x.pth")),
            (
                "owner/esrgan@v1.0:weights/RealESRGAN_x4plus.safetensors",
                hub_file(
                    "owner/esrgan",
                    "v1.0",
                    "weights/RealESRGAN_x4plus.safetensors",
                ),
            ),
            (
                "o/n@refs/pr/3:models/x4.param",
                hub_file("o/n", "refs/pr/3", "models/x4.param"),
            ),
            ("o/n:my model.bin", hub_file("o/n", "main", "my model.bin")),
        ] {
            let got = ModelSpec::parse(s).unwrap();
            assert_eq!(got, want, "{s}");
            assert!(got.is_single_file());
            // Display round-trips.
            assert_eq!(got.to_string(), s);
            assert_eq!(ModelSpec::parse(&got.to_string()).unwrap(), got);
        }
        assert!(!ModelSpec::parse("a/b").unwrap().is_single_file());
        assert!(!ModelSpec::default().is_single_file());
        assert!(ModelSpec::File("w.pth".into()).is_single_file());
        assert_eq!(
            hub_file("a/b", "main", "x.pth").to_string(),
            "a/b:x.pth",
            "main is left out"
        );
    }

    #[test]
    fn bad_hub_files_name_the_value_and_the_form() {
        for (s, why) in [
            ("a/b:", "empty"),
            ("a/b:/x.pth", "relative"),
            ("a/b:../x.pth", ".."),
            ("a/b:w/../../x.pth", ".."),
            ("a/b:w//x.pth", "empty"),
            ("a/b:./x.pth", "`.`"),
            ("a/b:w/", "folder"),
            ("a:x.pth", "exactly one `/`"),
            ("a/b/c:x.pth", "exactly one `/`"),
            ("a/-b:x.pth", "may not start"),
            ("a/b@:x.pth", "empty after `@`"),
            ("a/b@x y:x.pth", "not a branch"),
        ] {
            let err = ModelSpec::parse(s).unwrap_err().to_string();
            assert!(err.contains(&format!("`{s}`")), "{s}: {err}");
            assert!(err.contains(why), "{s}: {err}");
            assert!(
                err.contains("owner/name:path/in/repo") || err.contains("bad revision"),
                "{s}: {err}"
            );
        }
        // Something that starts like a path is a path, `:` or not.
        let err = ModelSpec::parse("./a:b").unwrap_err().to_string();
        assert!(err.contains("no such file"), "{err}");
        for s in ["/no/such:x.pth", "a/b:w\\x.pth", "~/a/b:x.pth"] {
            let err = ModelSpec::parse(s).unwrap_err().to_string();
            assert!(err.contains("no such file"), "{s}: {err}");
        }
    }

    #[test]
    fn an_existing_path_with_a_colon_stays_local() {
        // Relative to the crate root (the unit tests' working directory), and a valid hub file
        // spec as text: `target/<name>` reads as a repo id.
        let name = format!("diffsr-spec-{}", std::process::id());
        let rel = format!("target/{name}:w.pth");
        let dotted = format!("./{rel}");
        assert_eq!(
            ModelSpec::parse(&rel).unwrap(),
            hub_file(&format!("target/{name}"), "main", "w.pth")
        );
        std::fs::create_dir_all("target").unwrap();
        std::fs::write(&rel, b"w").unwrap();
        let as_is = ModelSpec::parse(&rel);
        let dotted_spec = ModelSpec::parse(&dotted);
        std::fs::remove_file(&rel).unwrap();
        assert_eq!(as_is.unwrap(), ModelSpec::File(rel.clone().into()));
        assert_eq!(dotted_spec.unwrap(), ModelSpec::File(dotted.into()));
    }
}
