//! Peak memory and time of big x4 upscales with the full-size model under a memory budget
//! (docs/big-pictures.md; the results table is in docs/benchmarks.md):
//!
//! ```bash
//! cargo bench --bench x4_large                                  # 256, 512, 1024 (hours on a small CPU)
//! DIFFSR_BENCH_SIZES=256 cargo bench --bench x4_large           # one size
//! DIFFSR_BENCH_DRY=1 cargo bench --bench x4_large               # only the memory plans
//! ```
//!
//! Writes once, and then reuses, a complete full-size x4-upscaler model directory in the hub's
//! diffusers layout with random weights (UNet, VAE and the OpenCLIP ViT-H text encoder at their
//! real sizes, ~3.5 GB of f32 safetensors; `benches/common/random_model.rs`), so the real
//! loading and upscaling code runs: `UpscalePipeline::load` with
//! `LoadOptions { max_memory: Some(budget), .. }` (the tiles are chosen by the memory plan),
//! then `upscale_with` of a deterministic S×S RGB picture to 4S×4S with DDIM, guidance 9,
//! noise level 20, the empty prompt. Each size runs in a child process of its own, so its
//! peak resident memory (VmHWM) is its own, and reports:
//!
//! - the memory plan (tiles, UNet batch, estimated peak) the pipeline chose for the budget;
//! - seconds per denoising step (from the progress callback's timestamps; the prompt encoding,
//!   timed afterwards on its own, is taken off the first step), also per output megapixel and
//!   per latent megapixel (the latents are S×S);
//! - the rest: prompt encoding and the VAE decode (last step to the end), in seconds;
//! - peak resident memory after loading and at the end, against the budget;
//! - how many cores other processes kept busy meanwhile (times from a busy machine are not
//!   comparable).
//!
//! Environment:
//! - `DIFFSR_BENCH_SIZES`: input sides S, comma separated (default `256,512,1024`).
//! - `DIFFSR_BENCH_BUDGET`: the memory budget (`--max-memory`), e.g. `12G`, `8GiB`, `6000M`;
//!   one for every size or one per size, comma separated (default `12G`).
//! - `DIFFSR_BENCH_STEPS`: denoising steps (default 1).
//! - `DIFFSR_BENCH_DRY=1`: only print the memory plans of every size, run nothing.
//! - `DIFFSR_BENCH_THREADS`: threads (default: the available cores).
//! - `DIFFSR_BENCH_MODEL_DIR`: where the random model is cached (default
//!   `target/bench-models/x4-random`).

mod common;

use std::ops::ControlFlow;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use common::picture::input_rgb8;
use common::proc_stats::{cpu_ticks, foreign_load, gib, loadavg, proc_status_kib};
use common::random_model::{default_model_dir, write_random_model};
use diffsr::image_io::Rgb8;
use diffsr::model_dir::{with_weights, ModelDir};
use diffsr::models::clip_text::{ClipTextConfig, ClipTextModel};
use diffsr::pipeline::{DiffusionSettings, LoadOptions, MemoryPlan, UpscalePipeline};
use diffsr::schedulers::SchedulerKind;
use diffsr::tokenizer::ClipTokenizer;
use serde_json::{json, Value};

/// Set in a child: `size:budget_bytes:steps`.
const CHILD: &str = "DIFFSR_X4_LARGE_BENCH_CHILD";
const GUIDANCE: f64 = 9.0;

fn env_list(name: &str, default: &str) -> Vec<String> {
    std::env::var(name)
        .unwrap_or_else(|_| default.to_string())
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// `12G`, `512M`, `1.5GiB`, `1000000`, as `--max-memory` reads it.
fn parse_bytes(s: &str) -> Result<u64> {
    Ok(diffsr::memory::parse_bytes(s)?)
}

fn options(steps: usize) -> DiffusionSettings {
    DiffusionSettings {
        steps,
        guidance_scale: GUIDANCE,
        scheduler: Some(SchedulerKind::Ddim),
        seed: 0,
        ..DiffusionSettings::default()
    }
}

fn load(dir: &Path, budget: u64) -> Result<UpscalePipeline> {
    Ok(UpscalePipeline::load(
        dir,
        &LoadOptions {
            max_memory: Some(budget),
            ..LoadOptions::default()
        },
    )?)
}

/// The plan in words plus its numbers, for the child's report and the dry run.
fn plan_json(plan: &MemoryPlan, budget: u64) -> Value {
    let t = &plan.tiling;
    json!({
        "describe": plan.describe(budget),
        "unet_tile": t.latent_tile,
        "unet_overlap": t.latent_overlap,
        "unet_batch": t.unet_batch,
        "unet_tiles": plan.unet_tiles,
        "vae_tile": t.vae.tile,
        "vae_tiles": plan.vae_tiles,
        "estimated_peak_bytes": plan.estimate.peak(),
        "estimated_weights_bytes": plan.estimate.weights,
    })
}

fn kib_to_bytes(key: &str) -> u64 {
    proc_status_kib(key).map_or(0, |k| k * 1024)
}

/// Seconds the pipeline spends encoding the prompt under guidance (the empty prompt and the
/// empty negative prompt), with the text encoder loaded on its own from the same files.
fn time_prompt_encoding(dir: &Path) -> Result<f64> {
    let model = ModelDir::open(dir)?;
    let tokenizer = ClipTokenizer::from_dir(&model.component("tokenizer")?)?;
    let config = ClipTextConfig::from_file(&model.file("text_encoder", "config.json")?)?;
    let (vb, files) = model.var_builder("text_encoder", "model", DType::F32, &Device::Cpu)?;
    let encoder = with_weights(&files, || ClipTextModel::new(&config, vb))?;
    let encode = || -> Result<Tensor> {
        let ids = tokenizer.encode("")?;
        let ids = Tensor::new(ids.as_slice(), &Device::Cpu)?.unsqueeze(0)?;
        Ok(encoder.forward(&ids)?)
    };
    // Warm once (first-touch allocations), then time the two encodes a guided run does.
    encode()?;
    let start = Instant::now();
    encode()?;
    encode()?;
    Ok(start.elapsed().as_secs_f64())
}

/// The child: loads, plans, upscales one size and prints one JSON line on stdout.
fn child(spec: &str) -> Result<()> {
    let parts: Vec<&str> = spec.split(':').collect();
    let [size, budget, steps] = parts[..] else {
        bail!("bad {CHILD} value {spec:?}");
    };
    let (size, budget, steps): (usize, u64, usize) =
        (size.parse()?, budget.parse()?, steps.parse()?);
    let dir = default_model_dir();
    let options = options(steps);

    let start = Instant::now();
    let pipeline = load(&dir, budget)?;
    let load_s = start.elapsed().as_secs_f64();
    let rss_loaded = kib_to_bytes("VmRSS:");
    let hwm_loaded = kib_to_bytes("VmHWM:");
    let plan = pipeline
        .memory_plan(size, size, &options)?
        .context("no memory plan although a budget was given")?;
    let out = 4 * size;
    eprintln!(
        "[bench] {size}x{size} -> {out}x{out}: loaded in {load_s:.1} s (resident {}, peak so far \
         {}); plan: {}",
        gib(rss_loaded as f64),
        gib(hwm_loaded as f64),
        plan.describe(budget)
    );

    let rgb = Rgb8::new(input_rgb8(size), size, size)?;
    let mut stamps: Vec<f64> = Vec::with_capacity(steps);
    let ticks = cpu_ticks();
    let start = Instant::now();
    let out = pipeline.upscale_with(&rgb, &options, &mut |p| {
        let t = start.elapsed().as_secs_f64();
        eprintln!(
            "[bench]   step {}/{} (t={}) done at {t:.1} s",
            p.step, p.total, p.timestep
        );
        stamps.push(t);
        ControlFlow::Continue(())
    })?;
    let total_s = start.elapsed().as_secs_f64();
    let load = foreign_load(ticks, cpu_ticks(), total_s);
    let peak = kib_to_bytes("VmHWM:");
    if out.size() != (4 * size, 4 * size) {
        bail!("output is {:?}, expected {1}x{1}", out.size(), 4 * size);
    }
    let mean = out.data.iter().sum::<f32>() / out.data.len() as f32;
    if !mean.is_finite() {
        bail!("output is not finite (mean {mean})");
    }
    let last = *stamps.last().context("no step was reported")?;
    let decode_s = total_s - last;
    eprintln!(
        "[bench]   done in {total_s:.1} s (decode {decode_s:.1} s), peak {}, other load {load:.2}",
        gib(peak as f64)
    );
    drop(out);
    drop(pipeline);

    let encode_s = time_prompt_encoding(&dir)?;
    let mut step_s: Vec<f64> = stamps
        .iter()
        .scan(0.0, |prev, &t| {
            let d = t - *prev;
            *prev = t;
            Some(d)
        })
        .collect();
    // Prompt encoding (and the noise draws, negligible) happen before the first step.
    step_s[0] = (step_s[0] - encode_s).max(0.0);

    let report = json!({
        "size": size,
        "budget": budget,
        "steps": steps,
        "plan": plan_json(&plan, budget),
        "load_s": load_s,
        "rss_loaded": rss_loaded,
        "peak_loaded": hwm_loaded,
        "peak": peak,
        "step_s": step_s,
        "encode_s": encode_s,
        "decode_s": decode_s,
        "total_s": total_s,
        "foreign_load": load,
    });
    println!("{report}");
    Ok(())
}

fn run_child(size: usize, budget: u64, steps: usize, threads: usize) -> Result<Value> {
    let out = Command::new(std::env::current_exe()?)
        .env(CHILD, format!("{size}:{budget}:{steps}"))
        .env("RAYON_NUM_THREADS", threads.to_string())
        .env("CANDLE_NUM_THREADS", threads.to_string())
        .stderr(Stdio::inherit())
        .output()?;
    if !out.status.success() {
        bail!("the child for {size}x{size} failed ({})", out.status);
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .context("no JSON from the child")?;
    Ok(serde_json::from_str(line)?)
}

fn f(v: &Value, key: &str) -> f64 {
    v[key].as_f64().unwrap_or(f64::NAN)
}

fn main() -> Result<()> {
    // As the `diffsr` binary does, so the figures are what its users get.
    diffsr::memory::tune_allocator(common::env::malloc());
    if let Ok(spec) = std::env::var(CHILD) {
        return child(&spec);
    }
    let threads = std::env::var("DIFFSR_BENCH_THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
        .filter(|&n: &usize| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let sizes: Vec<usize> = env_list("DIFFSR_BENCH_SIZES", "256,512,1024")
        .iter()
        .map(|s| {
            s.parse()
                .with_context(|| format!("DIFFSR_BENCH_SIZES: {s:?}"))
        })
        .collect::<Result<_>>()?;
    if sizes.is_empty() {
        bail!("DIFFSR_BENCH_SIZES is empty");
    }
    let mut budgets: Vec<u64> = env_list("DIFFSR_BENCH_BUDGET", "12G")
        .iter()
        .map(|s| parse_bytes(s).context("DIFFSR_BENCH_BUDGET"))
        .collect::<Result<_>>()?;
    let last = *budgets.last().context("DIFFSR_BENCH_BUDGET is empty")?;
    if budgets.len() > sizes.len() {
        bail!(
            "DIFFSR_BENCH_BUDGET has {} entries for {} sizes",
            budgets.len(),
            sizes.len()
        );
    }
    budgets.resize(sizes.len(), last);
    let steps: usize = match std::env::var("DIFFSR_BENCH_STEPS") {
        Ok(s) => s
            .parse()
            .ok()
            .filter(|&n| n > 0)
            .with_context(|| format!("DIFFSR_BENCH_STEPS={s:?} is not a positive number"))?,
        Err(_) => 1,
    };
    let dry = std::env::var("DIFFSR_BENCH_DRY").is_ok_and(|v| !v.is_empty() && v != "0");

    let dir = default_model_dir();
    write_random_model(&dir)?;

    println!(
        "x4 upscaler, big pictures: full-size model with random weights ({}), CPU f32, \
         {threads} threads, DDIM, {steps} step(s), guidance {GUIDANCE}; sizes {sizes:?}; \
         load average {}",
        dir.display(),
        loadavg()
    );

    if dry {
        println!();
        println!("| input | output | latent | budget | memory plan |");
        println!("|---|---|---|---|---|");
        let mut loaded: Option<(u64, UpscalePipeline)> = None;
        for (&size, &budget) in sizes.iter().zip(&budgets) {
            if loaded.as_ref().is_none_or(|(b, _)| *b != budget) {
                // Free the previous pipeline before loading the next.
                drop(loaded.take());
                loaded = Some((budget, load(&dir, budget)?));
            }
            let (_, pipeline) = loaded.as_ref().context("pipeline")?;
            let plan = match pipeline.memory_plan(size, size, &options(steps)) {
                Ok(Some(plan)) => plan.describe(budget),
                Ok(None) => "no plan".into(),
                Err(e) => format!("refused: {e}"),
            };
            println!(
                "| {size}² | {}² | {size}² | {} | {plan} |",
                4 * size,
                gib(budget as f64)
            );
        }
        return Ok(());
    }

    let mut rows = Vec::new();
    for (&size, &budget) in sizes.iter().zip(&budgets) {
        eprintln!("[bench] {size}x{size}, budget {}:", gib(budget as f64));
        match run_child(size, budget, steps, threads) {
            Ok(v) => rows.push(v),
            Err(e) => {
                eprintln!("[bench] {size}x{size}: {e:#}");
                rows.push(json!({ "size": size, "budget": budget, "error": format!("{e:#}") }));
            }
        }
    }

    println!();
    println!(
        "| input → output | budget | memory plan | s / step | s / step / output MP | \
         s / step / latent MP | prompt encoding | VAE decode | whole upscale | \
         peak RSS (after load) | peak ≤ budget | other load |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for v in &rows {
        let size = v["size"].as_u64().unwrap_or(0) as usize;
        let budget = v["budget"].as_u64().unwrap_or(0);
        let io = format!("{size}² → {}²", 4 * size);
        if let Some(e) = v["error"].as_str() {
            println!(
                "| {io} | {} | failed: {e} | | | | | | | | | |",
                gib(budget as f64)
            );
            continue;
        }
        let steps: Vec<f64> = v["step_s"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_f64).collect())
            .unwrap_or_default();
        let per_step = steps.iter().sum::<f64>() / steps.len().max(1) as f64;
        let out_mp = (4 * size * 4 * size) as f64 / 1e6;
        let latent_mp = (size * size) as f64 / 1e6;
        let peak = v["peak"].as_u64().unwrap_or(0);
        let plan = v["plan"]["describe"].as_str().unwrap_or("?");
        println!(
            "| {io} | {} | {plan} | {per_step:.1} s | {:.1} s | {:.0} s | {:.2} s | {:.1} s | \
             {:.1} s | {} ({}) | {} | {:.2} |",
            gib(budget as f64),
            per_step / out_mp,
            per_step / latent_mp,
            f(v, "encode_s"),
            f(v, "decode_s"),
            f(v, "total_s"),
            gib(peak as f64),
            gib(f(v, "peak_loaded")),
            if peak <= budget { "yes" } else { "**no**" },
            f(v, "foreign_load"),
        );
    }
    println!();
    println!(
        "s / step: the mean denoising step (all UNet tiles, guided: batch 2 per tile), prompt \
         encoding taken off the first; per MP: divided by the output's (16 S²) or the \
         latent's (S²) megapixels. peak RSS: VmHWM of the size's own process (weights \
         included). other load: cores other processes kept busy during the upscale."
    );
    println!("load average at the end: {}", loadavg());
    Ok(())
}
