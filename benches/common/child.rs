//! Reading what a bench's child process (or the Python reference) reports: one JSON object,
//! on the last line of stdout that holds one.

use anyhow::{Context, Result};
use serde_json::Value;

/// The last line of `stdout` that is a JSON object.
pub fn last_json(stdout: &[u8]) -> Result<Value> {
    let text = String::from_utf8_lossy(stdout);
    let line = text
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .context("no JSON line on stdout")?;
    serde_json::from_str(line).context("parsing the JSON line")
}
