//! What Linux's /proc says about this process and the machine: peak and current resident
//! memory, CPU time (to tell how busy other processes kept the cores), load average.

/// Clock ticks per second of the /proc CPU counters (USER_HZ, 100 on Linux).
pub const CLOCK_TICKS_PER_S: f64 = 100.0;

/// Busy CPU time of the whole machine and of this process, in clock ticks, from /proc.
pub fn cpu_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let cpu: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal: busy is all but idle and iowait.
    let busy = cpu.iter().take(8).sum::<u64>() - cpu.get(3)? - cpu.get(4)?;
    let own = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest: Vec<&str> = own.rsplit_once(')')?.1.split_whitespace().collect();
    let mine = rest.get(11)?.parse::<u64>().ok()? + rest.get(12)?.parse::<u64>().ok()?;
    Some((busy, mine))
}

/// Cores kept busy by other processes between two [`cpu_ticks`] readings `wall_s` seconds
/// apart; NaN when either is unknown.
pub fn foreign_load(before: Option<(u64, u64)>, after: Option<(u64, u64)>, wall_s: f64) -> f64 {
    match (before, after) {
        (Some((b0, m0)), Some((b1, m1))) => {
            (b1 - b0).saturating_sub(m1 - m0) as f64 / CLOCK_TICKS_PER_S / wall_s
        }
        _ => f64::NAN,
    }
}

/// A `kB` field of /proc/self/status (`VmHWM:`, `VmRSS:`, …), in KiB.
pub fn proc_status_kib(key: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    line[key.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// The 1, 5 and 15 minute load averages.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// Bytes as GiB with two decimals.
pub fn gib(bytes: f64) -> String {
    format!("{:.2} GiB", bytes / (1u64 << 30) as f64)
}
