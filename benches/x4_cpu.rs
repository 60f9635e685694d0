//! CPU speed of the full-size x4 upscaler against diffusers on PyTorch, on the same machine
//! with the same thread count:
//!
//! ```bash
//! cargo bench --bench x4_cpu
//! ```
//!
//! Builds the UNet (~473M parameters) and the VAE (~55M) from the hub configs in
//! `assets/x4-upscaler/` with random weights (no files needed), then times, at each low-res
//! size S (the latents are S×S): one guided UNet step (batch 2 for classifier-free guidance,
//! 7 input channels, encoder_hidden_states (2, 77, 1024), class labels [20, 20]) and one VAE
//! decode of (1, 4, S, S) latents. One warm-up run, then N timed runs; median and min are
//! reported. `scripts/bench/x4_reference.py` does the same in diffusers; the ratio is
//! diffsr's median over torch's (> 1: diffsr is slower).
//!
//! Environment:
//! - `DIFFSR_BENCH_THREADS`: threads for both sides (default: the available cores).
//! - `DIFFSR_BENCH_SIZES`: low-res sizes, comma separated (default `32,64`).
//! - `DIFFSR_BENCH_REPS`: timed runs, one number or one per size (default `3,2`).
//! - `DIFFSR_BENCH_ONLY`: `unet` or `vae` to time only that model.
//! - `DIFFSR_BENCH_PYTHON`: a Python with torch + diffusers for the reference (default
//!   `~/.cache/diffsr-fixture-venv/bin/python`, made by `scripts/make-fixtures.sh`, if it
//!   exists); `none` skips the reference.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use common::proc_stats::{cpu_ticks, foreign_load, gib, loadavg, proc_status_kib};
use common::random_model::RandomWeights;
use diffsr::models::unet::{UNet2DConditionConfig, UNet2DConditionModel};
use diffsr::models::vae::{AutoencoderKL, AutoencoderKLConfig};

/// The pipeline divides latents by this before decoding.
const VAE_SCALING_FACTOR: f64 = 0.08333;
const TIMESTEP: f64 = 500.0;
const NOISE_LEVEL: u32 = 20;

fn parse_list(var: &str, default: &str) -> Result<Vec<usize>> {
    let raw = std::env::var(var).unwrap_or_else(|_| default.to_string());
    raw.split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| {
            s.trim()
                .parse::<usize>()
                .with_context(|| format!("{var}={raw:?}: {s:?} is not a number"))
        })
        .collect()
}

#[derive(Debug, Clone)]
struct Timing {
    times: Vec<f64>,
    /// Cores busy with other processes during the timed runs, on average (other agents'
    /// compiles on a shared machine); NaN when unknown.
    foreign_load: f64,
}

impl Timing {
    fn median(&self) -> f64 {
        let mut t = self.times.clone();
        t.sort_by(f64::total_cmp);
        let n = t.len();
        if n % 2 == 1 {
            t[n / 2]
        } else {
            (t[n / 2 - 1] + t[n / 2]) / 2.0
        }
    }

    fn min(&self) -> f64 {
        self.times.iter().copied().fold(f64::INFINITY, f64::min)
    }
}

/// One warm-up call, then `n` timed ones. The warm-up's output is checked to be finite.
fn time_it(label: &str, n: usize, mut f: impl FnMut() -> Result<Tensor>) -> Result<Timing> {
    let t = Instant::now();
    let out = f()?;
    let warm = t.elapsed().as_secs_f64();
    let mean_abs = out
        .abs()?
        .mean_all()?
        .to_dtype(DType::F64)?
        .to_scalar::<f64>()?;
    if !mean_abs.is_finite() {
        bail!("{label}: output is not finite (mean |x| = {mean_abs})");
    }
    eprintln!(
        "[diffsr] {label}: warm-up {warm:.3} s, output {:?}, mean |x| {mean_abs:.3}",
        out.dims()
    );
    drop(out);
    let mut times = Vec::with_capacity(n);
    let before = cpu_ticks();
    let start = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        let out = f()?;
        times.push(t.elapsed().as_secs_f64());
        drop(out);
    }
    let wall = start.elapsed().as_secs_f64();
    let foreign_load = foreign_load(before, cpu_ticks(), wall);
    eprintln!("[diffsr] {label}: {times:.3?} s, other processes' load {foreign_load:.2}");
    Ok(Timing {
        times,
        foreign_load,
    })
}

/// The Python to run the reference with, or why there is none.
fn reference_python() -> std::result::Result<PathBuf, String> {
    let how = "set DIFFSR_BENCH_PYTHON to a Python with torch and diffusers \
               (scripts/make-fixtures.sh creates ~/.cache/diffsr-fixture-venv)";
    match std::env::var("DIFFSR_BENCH_PYTHON") {
        Ok(v) if v.is_empty() || v == "none" => Err("DIFFSR_BENCH_PYTHON=none".into()),
        Ok(v) => Ok(PathBuf::from(v)),
        Err(_) => {
            let home = std::env::var("HOME").unwrap_or_default();
            let venv = Path::new(&home).join(".cache/diffsr-fixture-venv/bin/python");
            if venv.exists() {
                Ok(venv)
            } else {
                Err(format!("no {} ({how})", venv.display()))
            }
        }
    }
}

struct Reference {
    versions: String,
    threads: u64,
    maxrss_bytes: f64,
    cases: HashMap<String, Timing>,
}

fn run_reference(
    python: &Path,
    root: &Path,
    threads: usize,
    sizes: &[usize],
    reps: &[usize],
    only: Option<&str>,
) -> Result<Reference> {
    let join = |v: &[usize]| {
        v.iter()
            .map(|x| x.to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    let mut cmd = Command::new(python);
    cmd.arg(root.join("scripts/bench/x4_reference.py"))
        .args(["--threads", &threads.to_string()])
        .args(["--sizes", &join(sizes)])
        .args(["--reps", &join(reps)])
        .arg("--unet-config")
        .arg(root.join("assets/x4-upscaler/unet_config.json"))
        .arg("--vae-config")
        .arg(root.join("assets/x4-upscaler/vae_config.json"))
        .env("OMP_NUM_THREADS", threads.to_string())
        .env("MKL_NUM_THREADS", threads.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    match only {
        Some("unet") => {
            cmd.arg("--skip-vae");
        }
        Some("vae") => {
            cmd.arg("--skip-unet");
        }
        _ => {}
    }
    let out = cmd
        .output()
        .with_context(|| format!("running {}", python.display()))?;
    if !out.status.success() {
        bail!("{} exited with {}", python.display(), out.status);
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .context("the reference printed no JSON")?;
    let v: serde_json::Value = serde_json::from_str(line).context("parsing the reference JSON")?;
    let mut cases = HashMap::new();
    for c in v["cases"].as_array().context("no cases")? {
        let name = c["case"].as_str().context("case without a name")?;
        let times = c["times_s"]
            .as_array()
            .context("case without times")?
            .iter()
            .filter_map(|t| t.as_f64())
            .collect();
        let foreign_load = c["foreign_load"].as_f64().unwrap_or(f64::NAN);
        cases.insert(
            name.to_string(),
            Timing {
                times,
                foreign_load,
            },
        );
    }
    Ok(Reference {
        versions: format!(
            "torch {}, diffusers {}",
            v["torch"].as_str().unwrap_or("?"),
            v["diffusers"].as_str().unwrap_or("?")
        ),
        threads: v["threads"].as_u64().unwrap_or(0),
        maxrss_bytes: v["maxrss_bytes"].as_f64().unwrap_or(f64::NAN),
        cases,
    })
}

fn main() -> Result<()> {
    let threads = match std::env::var("DIFFSR_BENCH_THREADS") {
        Ok(v) => v
            .parse::<usize>()
            .ok()
            .filter(|&n| n > 0)
            .with_context(|| format!("DIFFSR_BENCH_THREADS={v:?} is not a positive number"))?,
        Err(_) => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    // Before any thread pool exists: candle sizes its rayon pools (and gemm's parallelism)
    // from RAYON_NUM_THREADS through `get_num_threads`, its barrier pool from
    // CANDLE_NUM_THREADS.
    std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
    std::env::set_var("CANDLE_NUM_THREADS", threads.to_string());
    let candle_threads = candle_core::utils::get_num_threads();
    if candle_threads != threads {
        bail!("candle reports {candle_threads} threads, asked for {threads}");
    }

    let sizes = parse_list("DIFFSR_BENCH_SIZES", "32,64")?;
    let mut reps = parse_list("DIFFSR_BENCH_REPS", "3,2")?;
    // One number for every size; a list shorter than the sizes repeats its last entry.
    let last = *reps.last().context("DIFFSR_BENCH_REPS is empty")?;
    reps.resize(sizes.len(), last);
    let only = std::env::var("DIFFSR_BENCH_ONLY").ok();
    let only = only.as_deref().filter(|s| !s.is_empty());
    if let Some(o) = only {
        if o != "unet" && o != "vae" {
            bail!("DIFFSR_BENCH_ONLY={o:?}: expected unet or vae");
        }
    }
    let run_unet = only != Some("vae");
    let run_vae = only != Some("unet");

    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let assets = root.join("assets/x4-upscaler");
    let load_start = loadavg();
    println!(
        "x4 upscaler CPU bench: {threads} threads (candle get_num_threads = {candle_threads}), \
         sizes {sizes:?}, timed runs {reps:?}, load average {load_start}"
    );

    let dev = Device::Cpu;
    let mut unet_params = 0;
    let mut vae_params = 0;
    let mut ours: Vec<(String, String, Timing)> = Vec::new();
    {
        let t = Instant::now();
        let unet = if run_unet {
            let config = UNet2DConditionConfig::from_file(&assets.join("unet_config.json"))?;
            let weights = RandomWeights::new();
            let unet = UNet2DConditionModel::new(&config, weights.var_builder(DType::F32, &dev))?;
            unet_params = weights.param_count();
            Some(unet)
        } else {
            None
        };
        let vae = if run_vae {
            let config = AutoencoderKLConfig::from_file(&assets.join("vae_config.json"))?;
            let weights = RandomWeights::new();
            let vae = AutoencoderKL::new(&config, weights.var_builder(DType::F32, &dev))?;
            vae_params = weights.param_count();
            Some((vae, config.latent_channels))
        } else {
            None
        };
        println!(
            "random weights built in {:.1} s: UNet {:.1}M parameters, VAE {:.1}M parameters",
            t.elapsed().as_secs_f64(),
            unet_params as f64 / 1e6,
            vae_params as f64 / 1e6
        );

        let ehs = Tensor::randn(0f32, 1.0, (2, 77, 1024), &dev)?;
        let labels = Tensor::new(&[NOISE_LEVEL, NOISE_LEVEL], &dev)?;
        for (&size, &n) in sizes.iter().zip(&reps) {
            if let Some(unet) = &unet {
                let in_ch = unet.config().in_channels;
                let sample = Tensor::randn(0f32, 1.0, (2, in_ch, size, size), &dev)?;
                let label = format!("UNet step, guided (2×{in_ch}×{size}×{size})");
                let timing = time_it(&label, n, || {
                    Ok(unet.forward(&sample, TIMESTEP, &ehs, &labels)?)
                })?;
                ours.push((format!("unet_{size}"), label, timing));
            }
            if let Some((vae, latent_ch)) = &vae {
                let latents = (Tensor::randn(0f32, 1.0, (1, *latent_ch, size, size), &dev)?
                    / VAE_SCALING_FACTOR)?;
                let label = format!(
                    "VAE decode (1×{latent_ch}×{size}×{size} → {}×{})",
                    4 * size,
                    4 * size
                );
                let timing = time_it(&label, n, || Ok(vae.decode(&latents)?))?;
                ours.push((format!("vae_{size}"), label, timing));
            }
        }
    }
    let peak = proc_status_kib("VmHWM:").map(|k| k as f64 * 1024.0);
    let load_end = loadavg();

    let reference = match reference_python() {
        Ok(python) => {
            println!("running the reference: {}", python.display());
            match run_reference(&python, &root, threads, &sizes, &reps, only) {
                Ok(r) => Some(r),
                Err(e) => {
                    println!("reference failed ({e:#}); torch columns left empty");
                    None
                }
            }
        }
        Err(why) => {
            println!("reference skipped: {why}");
            None
        }
    };

    println!();
    match &reference {
        Some(r) => println!(
            "diffsr (candle 0.11.1) vs {} on the CPU, f32, {threads} threads (torch: {}); \
             median (min) of the timed runs; ratio = diffsr / torch medians",
            r.versions, r.threads
        ),
        None => println!("diffsr (candle 0.11.1) on the CPU, f32, {threads} threads; median (min)"),
    }
    println!();
    println!("| case | diffsr | torch | ratio | other load (diffsr / torch) |");
    println!("|---|---|---|---|---|");
    for (key, label, t) in &ours {
        let theirs = reference.as_ref().and_then(|r| r.cases.get(key));
        let (torch, ratio, their_load) = match theirs {
            Some(r) => (
                format!("{:.3} s ({:.3})", r.median(), r.min()),
                format!(
                    "{:.2}× ({:.2}×)",
                    t.median() / r.median(),
                    t.min() / r.min()
                ),
                format!("{:.2}", r.foreign_load),
            ),
            None => ("—".to_string(), "—".to_string(), "—".to_string()),
        };
        println!(
            "| {label} | {:.3} s ({:.3}) | {torch} | {ratio} | {:.2} / {their_load} |",
            t.median(),
            t.min(),
            t.foreign_load
        );
    }
    println!();
    println!(
        "ratio: diffsr / torch medians (mins); > 1 means diffsr is slower. other load: cores \
         busy with other processes during the timed runs (0 = a quiet machine)."
    );
    println!();
    println!(
        "parameters: UNet {unet_params} ({:.1}M), VAE {vae_params} ({:.1}M)",
        unet_params as f64 / 1e6,
        vae_params as f64 / 1e6
    );
    println!(
        "peak resident memory: diffsr {} (VmHWM), torch {}",
        peak.map_or("unknown".into(), gib),
        reference.as_ref().map_or("—".into(), |r| format!(
            "{} (ru_maxrss)",
            gib(r.maxrss_bytes)
        ))
    );
    println!("load average: {load_start} at the start, {load_end} after diffsr's runs");
    Ok(())
}
