//! The `diffsr` command line: one module per subcommand.

pub mod info;
pub mod models;
pub mod output;
pub mod schedule;
pub mod upscale;

use diffsr::schedulers::SchedulerKind;

/// clap value parser for solver names, with the crate's message listing the valid ones.
pub fn parse_kind(s: &str) -> Result<SchedulerKind, String> {
    s.parse()
        .map_err(|e: diffsr::schedulers::SchedulerError| e.to_string())
}
