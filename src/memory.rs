//! How much memory a run may use: the machine's available RAM on the CPU (Linux
//! `/proc/meminfo`), what the driver reports free on a CUDA GPU, a fixed share on Metal, whose
//! free memory candle does not report.

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
/// tiles stop paying off; on a CUDA GPU what the driver reports free now, less a reserve
/// ([`gpu_budget`]); 4 GiB on Metal, or where the driver cannot tell.
pub fn default_budget(device: &Device) -> u64 {
    match device {
        Device::Cpu => available_ram().map_or(2 * GIB, |a| (a / 2).clamp(GIB / 4, 8 * GIB)),
        _ => crate::device::device_memory(device).map_or(4 * GIB, gpu_budget),
    }
}

/// The default budget of a GPU with `memory` free: the free bytes less a reserve for what a
/// run allocates outside the plan's estimate (the kernel modules loaded on first use, cuBLAS's
/// workspace, the allocator's rounding and fragmentation): a twentieth of the card, at least
/// 768 MiB. Never below 256 MiB, so that a nearly full card gives a plan that says it cannot
/// fit rather than a zero budget. The whole card, not a share: on a GPU bigger tiles keep
/// paying off, and the memory is this run's unless something else holds it (then it is not
/// free).
pub fn gpu_budget(memory: crate::device::DeviceMemory) -> u64 {
    let reserve = (memory.total / 20).max(768 << 20);
    memory.free.saturating_sub(reserve).max(GIB / 4)
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

/// What a process asks of malloc (the `diffsr` binary reads it from `DIFFSR_MALLOC`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MallocMode {
    /// Keep freed tensor buffers for reuse (see [`tune_allocator`]).
    #[default]
    KeepFreedBlocks,
    /// Leave the system allocator's settings alone.
    System,
}

impl std::str::FromStr for MallocMode {
    type Err = Error;

    /// `keep` or `system`.
    fn from_str(s: &str) -> Result<Self> {
        match s.trim() {
            "keep" => Ok(Self::KeepFreedBlocks),
            "system" => Ok(Self::System),
            other => Err(Error::option(
                "malloc",
                format!("`{other}`: expected keep or system"),
            )),
        }
    }
}

/// What [`tune_allocator`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AllocatorTuning {
    /// glibc's malloc now keeps freed blocks of every size for reuse.
    KeepFreedBlocks,
    /// Left alone: [`MallocMode::System`] asked for it.
    LeftAlone,
    /// Left alone: not glibc, or glibc refused the settings.
    Unsupported,
}

/// Top-of-heap free memory above this is still given back to the system.
const TRIM_THRESHOLD_BYTES: i32 = 512 << 20;

/// Makes glibc's malloc keep freed tensor buffers for reuse instead of unmapping them.
///
/// Every model op allocates its output afresh. glibc serves blocks over 32 MiB (the UNet's
/// 64×64 feed-forward output is 168 MB) with `mmap` and unmaps them on free, so the next op's
/// output page-faults its way back in, the kernel zeroing every 4 KiB page: measured 4–7 % of a
/// UNet step or VAE decode (`cargo bench --bench x4_cpu`). With mmap off, big blocks come from
/// the heap and freed ones are reused; free memory at the top of the heap beyond 512 MiB is
/// still trimmed. The peak (what memory budgets bound) is unchanged; between runs resident
/// memory stays nearer the peak. Call it once, before the first model loads; the `diffsr`
/// binary does (with [`MallocMode::System`] under `DIFFSR_MALLOC=system`, which leaves malloc
/// alone).
pub fn tune_allocator(mode: MallocMode) -> AllocatorTuning {
    match mode {
        MallocMode::System => AllocatorTuning::LeftAlone,
        MallocMode::KeepFreedBlocks => tune_glibc(),
    }
}

fn tune_glibc() -> AllocatorTuning {
    if diffsr_kernels::malloc::keep_freed_blocks(TRIM_THRESHOLD_BYTES) {
        AllocatorTuning::KeepFreedBlocks
    } else {
        AllocatorTuning::Unsupported
    }
}

#[cfg(test)]
mod tune_tests {
    use super::*;

    #[test]
    fn allocator_tuning_applies_on_glibc() {
        assert_eq!(
            tune_allocator(MallocMode::System),
            AllocatorTuning::LeftAlone
        );
        assert_eq!("system".parse::<MallocMode>().unwrap(), MallocMode::System);
        assert!("jemalloc".parse::<MallocMode>().is_err());
        let got = tune_allocator(MallocMode::KeepFreedBlocks);
        if cfg!(all(target_os = "linux", target_env = "gnu")) {
            assert_eq!(got, AllocatorTuning::KeepFreedBlocks);
        } else {
            assert_eq!(got, AllocatorTuning::Unsupported);
        }
        // Allocation still works, large blocks included.
        let v = vec![1u8; 64 << 20];
        assert_eq!(v[v.len() - 1], 1);
    }
}

#[cfg(test)]
mod gpu_budget_tests {
    use super::{gpu_budget, GIB};
    use crate::device::DeviceMemory;

    #[test]
    fn a_gpu_budget_is_its_free_memory_less_a_reserve() {
        // An H200 with 140 GB free: a twentieth of the card is kept back.
        let h200 = DeviceMemory {
            free: 140 * GIB,
            total: 141 * GIB,
        };
        assert_eq!(gpu_budget(h200), 140 * GIB - 141 * GIB / 20);
        // An 8 GB card: at least 768 MiB kept back.
        let small = DeviceMemory {
            free: 7 * GIB,
            total: 8 * GIB,
        };
        assert_eq!(gpu_budget(small), 7 * GIB - (768 << 20));
        // A card that something else has filled: the floor, so the plan says it cannot fit.
        let full = DeviceMemory {
            free: 100 << 20,
            total: 24 * GIB,
        };
        assert_eq!(gpu_budget(full), GIB / 4);
    }
}
