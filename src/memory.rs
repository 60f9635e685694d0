//! How much memory a run may use: the machine's available RAM on the CPU (Linux
//! `/proc/meminfo`), a fixed share on GPUs, whose free memory candle does not report.

use candle_core::Device;

use crate::error::{Error, Result};

const GIB: u64 = 1 << 30;

/// Bytes the OS could give this process now without swapping, where known.
pub fn available_ram() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The working-memory budget when the user gives none: half the available RAM on the CPU
/// (the rest is for the weights, the OS and whatever else runs), at most 8 GiB since larger
/// tiles stop paying off; 4 GiB on a GPU.
pub fn default_budget(device: &Device) -> u64 {
    match device {
        Device::Cpu => available_ram().map_or(2 * GIB, |a| (a / 2).clamp(GIB / 4, 8 * GIB)),
        _ => 4 * GIB,
    }
}

/// Parses `4G`, `512M`, `1.5GiB`, `1000000`: a byte count with an optional binary unit (what
/// `--max-memory` takes).
pub fn parse_bytes(s: &str) -> Result<u64> {
    let bad = |why: &str| Error::option("max-memory", format!("`{s}`: {why}"));
    let t = s.trim();
    let digits = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(digits);
    let unit = unit.trim().to_ascii_lowercase();
    let factor: u64 = match unit.trim_end_matches("ib").trim_end_matches('b') {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => GIB,
        "t" => 1 << 40,
        _ => return Err(bad("expected a size such as 4G, 512M or 1073741824")),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| bad("expected a size such as 4G, 512M or 1073741824"))?;
    let bytes = value * factor as f64;
    if !(bytes >= 1.0 && bytes < u64::MAX as f64) {
        return Err(bad("must be at least one byte"));
    }
    Ok(bytes as u64)
}
