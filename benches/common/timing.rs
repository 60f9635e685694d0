//! What the CPU benches measure of one side (diffsr or the reference) for one case, and the
//! median they report.

use anyhow::{Context, Result};
use serde_json::Value;

/// The median of `t` (the mean of the middle two for an even count); NaN when empty.
pub fn median(mut t: Vec<f64>) -> f64 {
    t.sort_by(f64::total_cmp);
    let n = t.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => t[n / 2],
        _ => (t[n / 2 - 1] + t[n / 2]) / 2.0,
    }
}

/// One side's figures for one case, as its child process reports them in JSON.
pub struct Side {
    pub seconds: f64,
    pub peak_rss: u64,
    /// Cores other processes kept busy during the timed runs; NaN when unknown.
    pub foreign_load: f64,
}

impl Side {
    pub fn from_json(v: &Value) -> Result<Self> {
        Ok(Self {
            seconds: v["seconds"].as_f64().context("seconds")?,
            peak_rss: v["peak_rss_bytes"].as_u64().context("peak_rss_bytes")?,
            foreign_load: v["foreign_load"].as_f64().unwrap_or(f64::NAN),
        })
    }
}

/// `123 MiB`.
pub fn mib(bytes: u64) -> String {
    format!("{:.0} MiB", bytes as f64 / (1u64 << 20) as f64)
}

/// The busiest other processes kept the machine during any of `loads` (NaN: unknown), as a
/// table cell; `—` when none is known.
pub fn worst_load(loads: impl IntoIterator<Item = f64>) -> String {
    loads
        .into_iter()
        .filter(|l| l.is_finite())
        .fold(None, |m: Option<f64>, l| Some(m.map_or(l, |m| m.max(l))))
        .map_or_else(|| "—".to_string(), |l| format!("{l:.2}"))
}
