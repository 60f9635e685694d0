//! Batch runs: many inputs through one loaded pipeline.
//!
//! A run is planned first, before any model loads, so that every argument error surfaces at
//! once: [`expand_inputs`] turns files, folders and glob patterns into a sorted list of
//! inputs, [`OutputTemplate`] names their outputs under `--out-dir`, a [`Manifest`] gives
//! jobs one JSONL line each, [`plan`] checks for collisions and keeps this machine's
//! [`Shard`]. Once the model is loaded, [`check_jobs`] refuses settings it cannot run (once,
//! not once per image). Then [`run_jobs`] upscales the jobs in order with a pipeline loaded once,
//! reporting [`Event`]s, going on past a failed input, and stopping at the next step boundary
//! when cancelled (outputs are only ever written whole, by temporary file and rename).

mod check;
mod events;
mod expand;
mod manifest;
mod plan;
mod runner;
mod shard;
mod template;

pub use check::check_jobs;
pub use events::{Event, Failure, Summary};
pub use expand::{expand_inputs, is_image_path, Input, IMAGE_EXTENSIONS};
pub use manifest::{Manifest, ManifestJob};
pub use plan::{plan, Job, JobOptions, Plan, PlanOptions, Source};
pub use runner::{run_jobs, RunSettings};
pub use shard::Shard;
pub use template::{OutputTemplate, TemplateVars, DEFAULT_TEMPLATE};
