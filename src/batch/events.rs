//! What a batch run reports as it goes: one [`Event`] per job start, denoising step, result,
//! failure or skip, and a closing [`Summary`]. They serialise as one JSON object each, tagged
//! by `"event"`, which is what `diffsr upscale --json` prints a line at a time. Paths are
//! JSON strings, a name that is not UTF-8 with U+FFFD in place of its bad bytes (as
//! `Path::display` shows it).

use std::path::{Path, PathBuf};

use serde::{Serialize, Serializer};

/// A step of a batch run.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// The job's output exists and `--skip-existing` was given.
    Skipped {
        index: usize,
        #[serde(serialize_with = "lossy")]
        input: PathBuf,
        #[serde(serialize_with = "lossy")]
        output: PathBuf,
    },
    /// A job begins; `position` counts the jobs of this run from 1 up to `count`.
    Started {
        index: usize,
        position: usize,
        count: usize,
        #[serde(serialize_with = "lossy")]
        input: PathBuf,
        #[serde(serialize_with = "lossy")]
        output: PathBuf,
        seed: u64,
        steps: usize,
    },
    /// A denoising step of the current job finished.
    Step {
        index: usize,
        step: usize,
        total: usize,
    },
    /// Something the user should know about a job that still succeeds.
    Note { index: usize, message: String },
    /// A job's output was written.
    Done {
        index: usize,
        #[serde(serialize_with = "lossy")]
        input: PathBuf,
        #[serde(serialize_with = "lossy")]
        output: PathBuf,
        width: usize,
        height: usize,
        seconds: f64,
    },
    /// A job failed; the run goes on with the next.
    Failed {
        index: usize,
        #[serde(serialize_with = "lossy")]
        input: PathBuf,
        #[serde(serialize_with = "lossy")]
        output: PathBuf,
        error: String,
    },
    /// The run stopped before its jobs could run (a bad option, an unreadable input, the
    /// model not loading): what went wrong. A summary follows.
    Error { error: String },
    /// The run ended (all jobs tried, or cancelled, or stopped by an [`Event::Error`]).
    Summary(Summary),
}

/// `path` as a JSON string, lossily: serde's own `Path` serialisation fails on a name that is
/// not UTF-8, and the event would be lost.
fn lossy<S: Serializer>(path: &Path, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&path.to_string_lossy())
}

/// A failed job, for the summary.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Failure {
    #[serde(serialize_with = "lossy")]
    pub input: PathBuf,
    pub error: String,
}

/// How a run went.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Summary {
    /// Jobs of this run (this shard), skipped ones included.
    pub total: usize,
    pub done: usize,
    pub failed: usize,
    pub skipped: usize,
    /// Jobs never started because the run was cancelled (the interrupted one included).
    pub not_started: usize,
    pub cancelled: bool,
    pub seconds: f64,
    pub failures: Vec<Failure>,
}
