//! How much memory a run may use: the machine's available RAM on the CPU (Linux
//! `/proc/meminfo`), a fixed share on GPUs, whose free memory candle does not report.

use candle_core::Device;

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
