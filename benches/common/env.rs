//! Bench settings from the environment. A variable that is set but cannot be read is an
//! error naming it, never silently the default.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// The variable's value; unset or empty is `None`.
pub fn var(name: &str) -> Result<Option<String>> {
    match std::env::var(name) {
        Ok(v) if v.trim().is_empty() => Ok(None),
        Ok(v) => Ok(Some(v.trim().to_string())),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(e) => bail!("{name}: {e}"),
    }
}

/// A number of at least 1, or `default` when unset.
pub fn positive(name: &str, default: usize) -> Result<usize> {
    match var(name)? {
        None => Ok(default),
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|&n| n > 0)
            .with_context(|| format!("{name}={v:?} is not a positive whole number")),
    }
}

/// Comma-separated numbers of at least 1 (`default` when unset); never empty.
pub fn positive_list(name: &str, default: &str) -> Result<Vec<usize>> {
    let raw = var(name)?.unwrap_or_else(|| default.to_string());
    let list =
        raw.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse::<usize>().ok().filter(|&n| n > 0).with_context(|| {
                    format!("{name}={raw:?}: {s:?} is not a positive whole number")
                })
            })
            .collect::<Result<Vec<_>>>()?;
    if list.is_empty() {
        bail!("{name}={raw:?} names nothing");
    }
    Ok(list)
}

/// Comma-separated words (`default` when unset), trimmed, empty entries dropped.
pub fn words(name: &str, default: &str) -> Result<Vec<String>> {
    Ok(var(name)?
        .unwrap_or_else(|| default.to_string())
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect())
}

/// `1` / `0` (also `true`/`false`, `yes`/`no`); unset is `false`.
pub fn flag(name: &str) -> Result<bool> {
    match var(name)?.as_deref() {
        None | Some("0" | "false" | "no") => Ok(false),
        Some("1" | "true" | "yes") => Ok(true),
        Some(v) => bail!("{name}={v:?}: expected 1 or 0"),
    }
}

/// What malloc is asked for, as the `diffsr` binary reads it: `DIFFSR_MALLOC=system` leaves
/// it alone.
pub fn malloc() -> diffsr::memory::MallocMode {
    match std::env::var("DIFFSR_MALLOC") {
        Ok(v) if v == "system" => diffsr::memory::MallocMode::System,
        _ => diffsr::memory::MallocMode::KeepFreedBlocks,
    }
}

/// Threads for both sides: `DIFFSR_BENCH_THREADS`, default the available cores.
pub fn threads() -> Result<usize> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    positive("DIFFSR_BENCH_THREADS", cores)
}

/// `list` stretched to `n` entries by repeating its last one; more entries than `n` is an
/// error naming `name`.
pub fn per_item(name: &str, mut list: Vec<usize>, n: usize) -> Result<Vec<usize>> {
    if list.len() > n {
        bail!("{name} has {} entries for {n} sizes", list.len());
    }
    let last = *list.last().with_context(|| format!("{name} is empty"))?;
    list.resize(n, last);
    Ok(list)
}

/// The Python that runs a reference script: `DIFFSR_BENCH_PYTHON` (`none` skips the
/// reference; a path that does not exist is an error), else the fixture venv's
/// `~/.cache/diffsr-fixture-venv/bin/python` when it exists. `Ok(Err(why))`: no reference.
pub fn reference_python() -> Result<std::result::Result<PathBuf, String>> {
    match var("DIFFSR_BENCH_PYTHON")? {
        Some(v) if v == "none" => Ok(Err("DIFFSR_BENCH_PYTHON=none".into())),
        Some(v) => {
            let p = PathBuf::from(&v);
            if !p.is_file() {
                bail!("DIFFSR_BENCH_PYTHON={v:?}: no such file (`none` skips the reference)");
            }
            Ok(Ok(p))
        }
        None => {
            let home = std::env::var_os("HOME").unwrap_or_default();
            let venv = Path::new(&home).join(".cache/diffsr-fixture-venv/bin/python");
            Ok(if venv.is_file() {
                Ok(venv)
            } else {
                Err(format!(
                    "no {} (set DIFFSR_BENCH_PYTHON, or run scripts/make-fixtures.sh)",
                    venv.display()
                ))
            })
        }
    }
}
