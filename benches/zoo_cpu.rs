//! CPU speed of the model zoo's architectures against PyTorch (spandrel 0.4.2's modules, what
//! chaiNNer and ComfyUI run), on the same machine and thread count, in the same run:
//!
//! ```bash
//! cargo bench --bench zoo_cpu
//! DIFFSR_BENCH_ARCHS=span,swinir-light DIFFSR_BENCH_SIZES=64 cargo bench --bench zoo_cpu
//! ```
//!
//! Each architecture runs at its published preset (`scripts/bench/zoo_reference.py`'s
//! `PRESETS`: SPAN, RealPLKSR, SwinIR-light, HAT-S, DAT-light, OmniSR, and ESRGAN and Compact as
//! baselines) with seeded random weights that the reference script writes once as
//! safetensors under `target/bench-models/zoo/`; both sides load that same file. Each
//! (architecture, size) runs whole (no tiles, no pre-pad: the same work PyTorch does) in a
//! child process of its own, f32, one warm-up run then N timed runs, median reported, with
//! each process's peak resident memory. An architecture diffsr cannot load yet is a row saying
//! so. Ratios are diffsr's median over PyTorch's (> 1: diffsr is slower); the issue's target is
//! every ratio at or below 1.
//!
//! The table goes to stdout and `target/bench-results/zoo_cpu.md`; with
//! `DIFFSR_BENCH_WRITE_DOCS=1` also into docs/benchmarks.md between the
//! `<!-- bench:zoo_cpu:begin -->` and `<!-- bench:zoo_cpu:end -->` lines.
//!
//! Environment:
//! - `DIFFSR_BENCH_THREADS`: threads for both sides (default: the available cores).
//! - `DIFFSR_BENCH_SIZES`: input sizes, comma separated (default `128`).
//! - `DIFFSR_BENCH_REPS`: timed runs (default 2).
//! - `DIFFSR_BENCH_ARCHS`: comma separated subset of the presets.
//! - `DIFFSR_BENCH_PYTHON`: a Python with torch and spandrel 0.4.2 (default
//!   `~/.cache/diffsr-fixture-venv/bin/python`); `none` skips the reference, and then only the
//!   model files already written can be timed.
//! - `DIFFSR_BENCH_WRITE_DOCS=1`: also write the results into docs/benchmarks.md.

mod common;

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use common::child::last_json;
use common::picture::input_rgb8;
use common::proc_stats::{cpu_ticks, foreign_load, proc_status_kib};
use common::timing::{median, mib, worst_load, Side};
use common::{env, machine, readme};
use diffsr::gan::{GanModel, GanOptions, GanUpscaler};
use serde_json::json;

/// The presets of `scripts/bench/zoo_reference.py`, in table order.
const ARCHS: [&str; 8] = [
    "esrgan",
    "compact",
    "span",
    "realplksr",
    "swinir-light",
    "hat-s",
    "dat-light",
    "omnisr",
];
/// Set in a child: `file:size:reps`.
const CHILD: &str = "DIFFSR_ZOO_BENCH_CHILD";

fn reference_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/bench/zoo_reference.py")
}

fn model_file(arch: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(format!("target/bench-models/zoo/{arch}.safetensors"))
}

/// Writes `arch`'s preset with random weights once (the reference script), and returns it.
fn ensure_model(python: Option<&Path>, arch: &str) -> Result<PathBuf> {
    let file = model_file(arch);
    if file.is_file() {
        return Ok(file);
    }
    let Some(python) = python else {
        bail!(
            "{} is missing and there is no Python to write it",
            file.display()
        );
    };
    std::fs::create_dir_all(file.parent().context("model folder")?)?;
    let out = Command::new(python)
        .arg(reference_script())
        .args(["make", arch])
        .arg(&file)
        .stderr(Stdio::inherit())
        .output()?;
    if !out.status.success() {
        bail!("writing the {arch} preset failed ({})", out.status);
    }
    Ok(file)
}

/// A (1, 3, S, S) tensor in [0, 1] of the benches' deterministic picture.
fn input(size: usize) -> Result<Tensor> {
    let rgb = Tensor::from_vec(input_rgb8(size), (size, size, 3), &Device::Cpu)?;
    Ok((rgb.permute((2, 0, 1))?.unsqueeze(0)?.to_dtype(DType::F32)? / 255.0)?.contiguous()?)
}

/// The child: times one (file, size) whole and prints one JSON line.
fn child(spec: &str) -> Result<()> {
    let mut parts = spec.rsplitn(3, ':');
    let (Some(reps), Some(size), Some(file)) = (parts.next(), parts.next(), parts.next()) else {
        bail!("bad {CHILD} value {spec}");
    };
    let (size, reps): (usize, usize) = (size.parse()?, reps.parse()?);
    let model = GanModel::load(Path::new(file))?;
    let upscaler = GanUpscaler::new(
        &model,
        &GanOptions {
            tile: Some(0),
            pre_pad: 0,
            ..GanOptions::default()
        },
    )?;
    let x = input(size)?;
    let run = || -> Result<f64> {
        let t = Instant::now();
        let y = upscaler.upscale_tensor(&x, &mut |_, _| ControlFlow::Continue(()))?;
        let _ = y.dims4()?;
        Ok(t.elapsed().as_secs_f64())
    };
    let warm = run()?;
    eprintln!(
        "  [diffsr] {} {size}: warm-up {warm:.3} s",
        model.arch().describe()
    );
    let before = cpu_ticks();
    let times = (0..reps).map(|_| run()).collect::<Result<Vec<_>>>()?;
    let load = foreign_load(before, cpu_ticks(), times.iter().sum());
    eprintln!("  [diffsr] {times:.3?} s, other processes' load {load:.2}");
    let peak = proc_status_kib("VmHWM:").map_or(0, |k| k * 1024);
    println!(
        "{}",
        json!({
            "seconds": median(times.clone()),
            "times_s": times,
            "foreign_load": load,
            "peak_rss_bytes": peak,
        })
    );
    Ok(())
}

/// diffsr's side of one (file, size), in a child process; the error says why it failed.
fn run_ours(file: &Path, size: usize, reps: usize, threads: usize) -> Result<Side> {
    let out = Command::new(std::env::current_exe()?)
        .env(CHILD, format!("{}:{size}:{reps}", file.display()))
        .env("RAYON_NUM_THREADS", threads.to_string())
        .env("CANDLE_NUM_THREADS", threads.to_string())
        .stderr(Stdio::piped())
        .output()?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let line = err
            .lines()
            .find(|l| l.starts_with("Error:"))
            .unwrap_or("failed");
        bail!("{}", line.trim_start_matches("Error:").trim());
    }
    Side::from_json(&last_json(&out.stdout)?)
}

/// PyTorch's side, and the torch and spandrel versions.
fn run_torch(
    python: &Path,
    file: &Path,
    size: usize,
    reps: usize,
    threads: usize,
) -> Result<(Side, String)> {
    let out = Command::new(python)
        .arg(reference_script())
        .arg("time")
        .arg(file)
        .args(["--size", &size.to_string()])
        .args(["--threads", &threads.to_string()])
        .args(["--reps", &reps.to_string()])
        .stderr(Stdio::inherit())
        .output()?;
    if !out.status.success() {
        bail!("the PyTorch reference failed ({})", out.status);
    }
    let v = last_json(&out.stdout)?;
    let versions = format!(
        "torch {}, spandrel {}",
        v["torch"].as_str().unwrap_or("?"),
        v["spandrel"].as_str().unwrap_or("?")
    );
    Ok((Side::from_json(&v)?, versions))
}

struct Row {
    arch: String,
    size: usize,
    ours: Result<Side>,
    theirs: Option<Result<Side>>,
}

fn main() -> Result<()> {
    diffsr::memory::tune_allocator(env::malloc());
    if let Ok(spec) = std::env::var(CHILD) {
        return child(&spec);
    }
    let threads = env::threads()?;
    let sizes = env::positive_list("DIFFSR_BENCH_SIZES", "128")?;
    let reps = env::positive("DIFFSR_BENCH_REPS", 2)?;
    let archs = env::words("DIFFSR_BENCH_ARCHS", &ARCHS.join(","))?;
    if let Some(a) = archs.iter().find(|a| !ARCHS.contains(&a.as_str())) {
        bail!(
            "DIFFSR_BENCH_ARCHS: {a:?} is not one of {}",
            ARCHS.join(", ")
        );
    }
    let python = env::reference_python()?;
    readme::write_docs()?;
    println!(
        "Model zoo CPU benchmark: {threads} threads, {reps} timed runs after a warm-up, f32; \
         PyTorch {}",
        match &python {
            Ok(p) => format!("with {}", p.display()),
            Err(why) => format!("skipped: {why}"),
        }
    );
    let py = python.as_ref().ok().map(PathBuf::as_path);
    let mut rows = Vec::new();
    let mut versions = None;
    for arch in &archs {
        let file = match ensure_model(py, arch) {
            Ok(f) => f,
            Err(e) => {
                println!("{arch}: skipped ({e:#})");
                continue;
            }
        };
        for &size in &sizes {
            eprintln!("{arch} {size}x{size}:");
            let ours = run_ours(&file, size, reps, threads);
            if let Err(e) = &ours {
                eprintln!("  diffsr: {e:#}");
            }
            let theirs = py.map(|p| {
                run_torch(p, &file, size, reps, threads).map(|(side, v)| {
                    versions.get_or_insert(v);
                    side
                })
            });
            rows.push(Row {
                arch: arch.clone(),
                size,
                ours,
                theirs,
            });
        }
    }

    let against = match (&python, &versions) {
        (Err(why), _) => format!("alone (no reference: {why})"),
        (Ok(_), None) => "against PyTorch (which failed)".into(),
        (Ok(_), Some(v)) => format!("against PyTorch ({v}, f32, inference mode)"),
    };
    let mut md = readme::paragraph(&format!(
        "Measured {} (UTC) on {}, {threads} threads: diffsr (candle {}, f32) {against}; each \
         preset with random weights, whole (no tiles, no pre-pad), in processes of its own; \
         median of {reps} timed run(s) after a warm-up.",
        machine::utc_date(),
        machine::machine(),
        machine::locked_version("candle-core"),
    ));
    md.push('\n');
    md.push_str(
        "| architecture (preset) | input | diffsr | PyTorch | ratio | peak RSS diffsr / PyTorch \
         | other load |\n|---|---|---|---|---|---|---|\n",
    );
    let dash = || "—".to_string();
    let (mut ours_failed, mut theirs_failed) = (0, 0);
    for row in &rows {
        let (ours, ours_rss) = match &row.ours {
            Ok(s) => (format!("{:.3} s", s.seconds), mib(s.peak_rss)),
            // Not yet in the registry: reported, not a failure.
            Err(e) if e.to_string().contains("not a known architecture") => {
                ("not run: not a known architecture yet".into(), dash())
            }
            Err(e) => {
                ours_failed += 1;
                (format!("failed: {}", e.root_cause()), dash())
            }
        };
        let (theirs, ratio, theirs_rss) = match (&row.theirs, &row.ours) {
            (Some(Ok(t)), Ok(o)) => (
                format!("{:.3} s", t.seconds),
                format!("{:.2}", o.seconds / t.seconds),
                mib(t.peak_rss),
            ),
            (Some(Ok(t)), Err(_)) => (format!("{:.3} s", t.seconds), dash(), mib(t.peak_rss)),
            (Some(Err(e)), _) => {
                theirs_failed += 1;
                (format!("failed: {}", e.root_cause()), dash(), dash())
            }
            (None, _) => (dash(), dash(), dash()),
        };
        let load = worst_load([
            row.ours.as_ref().map_or(f64::NAN, |s| s.foreign_load),
            match &row.theirs {
                Some(Ok(s)) => s.foreign_load,
                _ => f64::NAN,
            },
        ]);
        md.push_str(&format!(
            "| {} | {}x{} | {ours} | {theirs} | {ratio} | {ours_rss} / {theirs_rss} | {load} |\n",
            row.arch, row.size, row.size
        ));
    }
    md.push('\n');
    md.push_str(&readme::paragraph(
        "ratio: diffsr / PyTorch medians, above 1 means diffsr is slower. peak RSS: each \
         process's own (VmHWM / ru_maxrss). other load: the most cores other processes kept \
         busy during the row's timed runs (0: a quiet machine). \"not run\": diffsr cannot load \
         that architecture yet.",
    ));
    println!();
    print!("{md}");
    println!();
    readme::finish("zoo_cpu", &md, ours_failed, theirs_failed)
}
