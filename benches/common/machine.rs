//! What a results header says about the run: the date, the machine, candle's version.

use std::time::{SystemTime, UNIX_EPOCH};

use super::random_model::crate_root;

/// Today in UTC, `YYYY-MM-DD`.
pub fn utc_date() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    // Days since 1970-01-01 to a civil date (Howard Hinnant's `civil_from_days`).
    let z = (secs / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

fn cpuinfo() -> String {
    std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default()
}

/// The CPU's model name from /proc/cpuinfo.
pub fn cpu_model() -> String {
    cpuinfo()
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or_else(|| "unknown CPU".into(), |(_, v)| v.trim().to_string())
}

/// Logical CPUs the machine has (not only those this process may use).
pub fn logical_cpus() -> usize {
    let n = cpuinfo()
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    if n > 0 {
        n
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }
}

/// Whether the CPU has AVX-512 (the foundation instructions).
pub fn has_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `Intel(R) Xeon(R) Processor, 2 logical CPUs, AVX-512`.
pub fn machine() -> String {
    format!(
        "{}, {} logical CPUs, {}",
        cpu_model(),
        logical_cpus(),
        if has_avx512() {
            "AVX-512"
        } else {
            "no AVX-512"
        }
    )
}

/// The version of `package` in the workspace's Cargo.lock (`?` when unreadable).
pub fn locked_version(package: &str) -> String {
    let lock = std::fs::read_to_string(crate_root().join("Cargo.lock")).unwrap_or_default();
    let needle = format!("name = \"{package}\"");
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line.trim() == needle {
            if let Some(v) = lines
                .next()
                .and_then(|l| l.trim().strip_prefix("version = "))
            {
                return v.trim_matches('"').to_string();
            }
        }
    }
    "?".into()
}
