//! The `diffsr` command line: one module per subcommand.

pub mod batch_progress;
pub mod bench;
pub mod convert;
pub mod engine;
pub mod error_text;
pub mod flag_errors;
pub mod info;
pub mod inspect;
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

/// An error that ends the program with a chosen exit code (2: bad arguments, as clap; 1: some
/// images failed; 130: interrupted by Ctrl-C). Other errors exit with 1.
#[derive(Debug)]
pub struct Exit {
    pub code: u8,
    pub message: String,
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Exit {}
