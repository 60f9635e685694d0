//! `--manifest jobs.jsonl`: one job a line, as a JSON object with its own input, output and
//! options; what a line leaves out comes from the command-line flags. Blank lines and lines
//! starting with `#` are skipped. The whole file is read and checked before anything runs, and
//! a bad line is reported with its number, so a scripted run never fails half-way on a typo.
//! Relative paths are relative to the manifest's folder, so a manifest moves with its images.

use std::io::Read;
use std::path::{Path, PathBuf};

use diffsr_schedulers::SchedulerKind;
use serde::Deserialize;

use crate::error::{Error, Result};

/// The longest manifest read: 64 MiB is several hundred thousand jobs.
pub const MAX_MANIFEST_BYTES: u64 = 64 << 20;

/// An option error of a manifest line in the line's own words: the library names its fields
/// (`guidance_scale`), the manifest has keys (`guidance`).
pub(crate) fn job_message(e: &Error) -> String {
    match e {
        Error::InvalidOption { option, reason } => {
            let key = match option.as_str() {
                "guidance_scale" => "guidance",
                other => other,
            };
            format!("`{key}`: {reason}")
        }
        other => other.to_string(),
    }
}

/// One manifest line. Unknown keys are errors: a misspelt `"seeed"` must not silently fall
/// back to the default.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestJob {
    pub input: PathBuf,
    /// The output; without it the job is named by `--out-dir` and `--name`.
    #[serde(default)]
    pub output: Option<PathBuf>,
    #[serde(default)]
    pub prompt: Option<String>,
    #[serde(default)]
    pub negative_prompt: Option<String>,
    #[serde(default)]
    pub seed: Option<u64>,
    #[serde(default)]
    pub steps: Option<usize>,
    #[serde(default)]
    pub guidance: Option<f64>,
    #[serde(default)]
    pub noise_level: Option<u32>,
    #[serde(default, deserialize_with = "scheduler")]
    pub scheduler: Option<SchedulerKind>,
    #[serde(default)]
    pub eta: Option<f64>,
    /// Output factor (`--scale`).
    #[serde(default)]
    pub scale: Option<f64>,
    /// Exact output size `WxH` (`--target`).
    #[serde(default)]
    pub target: Option<String>,
    /// Output long side (`--long-side`).
    #[serde(default)]
    pub long_side: Option<usize>,
    /// `none`, `wavelet` or `adain` (`--color-fix`).
    #[serde(default)]
    pub color_fix: Option<String>,
}

fn scheduler<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<SchedulerKind>, D::Error> {
    let name: Option<String> = Option::deserialize(d)?;
    name.map(|n| n.parse().map_err(serde::de::Error::custom))
        .transpose()
}

/// A parsed manifest: its jobs with their line numbers.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    pub path: PathBuf,
    /// (line number from 1, job), paths already resolved against the manifest's folder.
    pub jobs: Vec<(usize, ManifestJob)>,
}

impl Manifest {
    /// Reads and checks `path`: a file, or a pipe (`--manifest <(generate-jobs)`), of at most
    /// [`MAX_MANIFEST_BYTES`] of UTF-8 text. The bound comes first, so `/dev/zero` or an
    /// endless pipe is refused once the limit is read instead of growing without end.
    pub fn read(path: &Path) -> Result<Self> {
        let io_error = |source| Error::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::File::open(path).map_err(io_error)?;
        let mut bytes = Vec::new();
        file.take(MAX_MANIFEST_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(io_error)?;
        if bytes.len() as u64 > MAX_MANIFEST_BYTES {
            return Err(Error::option(
                "--manifest",
                format!(
                    "{}: longer than {} MiB; split the jobs over several manifests",
                    path.display(),
                    MAX_MANIFEST_BYTES >> 20
                ),
            ));
        }
        let text = String::from_utf8(bytes).map_err(|e| {
            Error::option(
                "--manifest",
                format!(
                    "{}: not UTF-8 text (invalid byte at offset {})",
                    path.display(),
                    e.utf8_error().valid_up_to()
                ),
            )
        })?;
        let base = path.parent().unwrap_or(Path::new(""));
        Self::parse(path, &text, base)
    }

    /// Parses manifest `text` (named `path` in messages), resolving relative paths in `base`.
    pub fn parse(path: &Path, text: &str, base: &Path) -> Result<Self> {
        let mut jobs = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let number = i + 1;
            let trimmed = line.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let bad = |message: String| Error::Manifest {
                path: path.to_path_buf(),
                line: number,
                message,
            };
            let mut job: ManifestJob =
                serde_json::from_str(trimmed).map_err(|e| bad(json_message(&e)))?;
            if job.input.as_os_str().is_empty() {
                return Err(bad("`input` is empty".into()));
            }
            job.input = base.join(&job.input);
            job.output = job.output.map(|o| base.join(o));
            jobs.push((number, job));
        }
        if jobs.is_empty() {
            return Err(Error::option(
                "--manifest",
                format!("{}: holds no job", path.display()),
            ));
        }
        Ok(Self {
            path: path.to_path_buf(),
            jobs,
        })
    }
}

/// serde_json's message without its "at line 1 column N" (each manifest line is its own
/// document, so the file's line number is the one that matters).
fn json_message(e: &serde_json::Error) -> String {
    let message = e.to_string();
    match message.rfind(" at line ") {
        Some(at) => format!("{} (column {})", &message[..at], e.column()),
        None => message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_jobs_and_names_the_bad_line() {
        let base = Path::new("/data");
        let text = "# jobs\n\n{\"input\": \"a.png\", \"seed\": 3, \"scheduler\": \"ddim\"}\n";
        let m = Manifest::parse(Path::new("jobs.jsonl"), text, base).unwrap();
        assert_eq!(m.jobs.len(), 1);
        assert_eq!(m.jobs[0].0, 3);
        assert_eq!(m.jobs[0].1.input, PathBuf::from("/data/a.png"));
        assert_eq!(m.jobs[0].1.seed, Some(3));
        for bad in [
            "{\"input\": \"a.png\", \"seeed\": 3}",
            "{\"input\": \"a.png\"",
            "{\"seed\": 3}",
            "{\"input\": \"a.png\", \"scheduler\": \"lms\"}",
            "{\"input\": \"a.png\", \"seed\": -1}",
        ] {
            let text = format!("{{\"input\": \"b.png\"}}\n\n{bad}\n");
            let e = Manifest::parse(Path::new("jobs.jsonl"), &text, base)
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("jobs.jsonl") && e.contains("line 3"),
                "{bad}: {e}"
            );
        }
    }
}
