//! CPU speed and peak memory of the full-size x4 upscaler against diffusers on PyTorch, on the
//! same machine with the same thread count, in the same run:
//!
//! ```bash
//! cargo bench --bench x4_cpu                                         # every case
//! DIFFSR_BENCH_CASES=unet,vae DIFFSR_BENCH_SIZES=32 cargo bench --bench x4_cpu
//! DIFFSR_BENCH_WRITE_DOCS=1 cargo bench --bench x4_cpu               # and docs/benchmarks.md
//! ```
//!
//! Cases (f32, random weights, nothing downloaded):
//! - `unet_S`: one guided UNet step at low-res size S (batch 2 for classifier-free guidance,
//!   7 input channels, S×S, encoder_hidden_states (2, 77, 1024), class labels [20, 20]);
//! - `vae_S`: one VAE decode of (1, 4, S, S) latents to a 4S × 4S image;
//! - `text`: the CLIP text encoder (OpenCLIP ViT-H, 23 layers) on 2 × 77 token ids (the prompt
//!   and the negative prompt, as guidance encodes them);
//! - `whole_64`: a whole 64×64 → 256×256 upscale (`UpscalePipeline::load` + `upscale_with`,
//!   untiled) of the full-size model directory with random weights that
//!   `benches/common/random_model.rs` writes once (~3.5 GB), with the directory's own
//!   scheduler (DDIM), guidance 9, noise level 20, seed 0; its warm-up is a 1-step upscale.
//!
//! The UNet, VAE and text encoder are built from the hub configs (`assets/x4-upscaler/`, and
//! the text encoder's from `random_model.rs`). Every case runs in a process of its own on each
//! side, so each has its own peak resident memory (VmHWM here, ru_maxrss in Python): this
//! bench re-runs itself for diffsr, `scripts/bench/x4_reference.py` runs the same case in
//! diffusers / transformers (same configs, random initialisation, same thread count). The two
//! sides alternate case by case, so a change in the machine's load hits both alike. One
//! warm-up run, then N timed runs; the table gives median (min), the ratio of the medians
//! (diffsr / torch, > 1: diffsr is slower), both peak memories and how many cores other
//! processes kept busy during the timed runs. It goes to stdout and
//! `target/bench-results/x4_cpu.md`, with a header naming the date, machine, threads and
//! versions; with `DIFFSR_BENCH_WRITE_DOCS=1` also into docs/benchmarks.md between the
//! `<!-- bench:x4_cpu:begin -->` and `<!-- bench:x4_cpu:end -->` lines.
//! `DIFFSR_PROFILE=1` prints diffsr's per-stage profile of each case's timed runs to stderr
//! (the bench installs `diffsr::profile::StageTimes` as the tracing subscriber).
//!
//! Environment:
//! - `DIFFSR_BENCH_CASES`: the cases to run, comma separated: names (`unet_32`) or kinds
//!   (`unet`, `vae`, `text`, `whole`); default all.
//! - `DIFFSR_BENCH_SIZES`: low-res sizes of the UNet and VAE cases (default `32,64,128`).
//! - `DIFFSR_BENCH_REPS`: their timed runs, one number or one per size (default `3,2,1`).
//! - `DIFFSR_BENCH_TEXT_REPS` (default 5), `DIFFSR_BENCH_WHOLE_REPS` (default 1): timed runs
//!   of `text` and `whole_64`.
//! - `DIFFSR_BENCH_STEPS`: denoising steps of `whole_64` (default 20).
//! - `DIFFSR_BENCH_THREADS`: threads for both sides (default: the available cores).
//! - `DIFFSR_BENCH_PYTHON`: a Python with torch, diffusers and transformers for the reference
//!   (default `~/.cache/diffsr-fixture-venv/bin/python`, made by `scripts/make-fixtures.sh`,
//!   if it exists); `none` skips the reference (its columns read "—").
//! - `DIFFSR_BENCH_MODEL_DIR`: where the random model directory is cached (default
//!   `target/bench-models/x4-random`).
//! - `DIFFSR_BENCH_WRITE_DOCS=1`: also write the results into docs/benchmarks.md.

mod common;

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use common::child::last_json;
use common::picture::input_rgb8;
use common::proc_stats::{cpu_ticks, foreign_load, gib, loadavg, proc_status_kib};
use common::random_model::{
    crate_root, default_model_dir, write_random_model, RandomWeights, X4_TEXT_ENCODER_CONFIG,
};
use common::{env, machine, readme};
use diffsr::image_io::Rgb8;
use diffsr::models::clip_text::{ClipTextConfig, ClipTextModel};
use diffsr::models::unet::{UNet2DConditionConfig, UNet2DConditionModel};
use diffsr::models::vae::{AutoencoderKL, AutoencoderKLConfig};
use diffsr::pipeline::{DiffusionSettings, LoadOptions, UpscalePipeline};
use diffsr::profile::StageTimes;
use serde_json::{json, Value};
use tracing_subscriber::layer::SubscriberExt;

/// The per-stage profile of the timed runs, when `DIFFSR_PROFILE=1` (set in the child).
static PROFILE: OnceLock<Option<StageTimes>> = OnceLock::new();

/// Set in a child: `case:reps:steps:threads`.
const CHILD: &str = "DIFFSR_X4_CPU_BENCH_CHILD";
/// The pipeline divides latents by this before decoding.
const VAE_SCALING_FACTOR: f64 = 0.08333;
const TIMESTEP: f64 = 500.0;
const NOISE_LEVEL: u32 = 20;
const GUIDANCE: f64 = 9.0;
const SEED: u64 = 0;
/// The low-res side of the whole upscale.
const WHOLE_SIZE: usize = 64;
/// Prompt and negative prompt, 77 tokens each.
const TEXT_IDS: (usize, usize) = (2, 77);
/// Width of the text embeddings the UNet cross-attends to.
const TEXT_HIDDEN: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Case {
    Text,
    Unet(usize),
    Vae(usize),
    Whole(usize),
}

impl Case {
    fn name(self) -> String {
        match self {
            Case::Text => "text".into(),
            Case::Unet(s) => format!("unet_{s}"),
            Case::Vae(s) => format!("vae_{s}"),
            Case::Whole(s) => format!("whole_{s}"),
        }
    }

    fn kind(self) -> &'static str {
        match self {
            Case::Text => "text",
            Case::Unet(_) => "unet",
            Case::Vae(_) => "vae",
            Case::Whole(_) => "whole",
        }
    }

    fn parse(name: &str) -> Result<Self> {
        if name == "text" {
            return Ok(Case::Text);
        }
        let parsed = name.split_once('_').and_then(|(kind, size)| {
            let size = size.parse::<usize>().ok().filter(|&s| s > 0)?;
            match kind {
                "unet" => Some(Case::Unet(size)),
                "vae" => Some(Case::Vae(size)),
                "whole" => Some(Case::Whole(size)),
                _ => None,
            }
        });
        parsed.with_context(|| format!("{name:?} is not a case (text, unet_S, vae_S, whole_S)"))
    }

    /// The table's description of the work.
    fn label(self, steps: usize) -> String {
        let (b, t) = TEXT_IDS;
        match self {
            Case::Text => format!("CLIP text encoder, {b}×{t} tokens"),
            Case::Unet(s) => format!("UNet step, guided, 2×7×{s}×{s}"),
            Case::Vae(s) => format!("VAE decode, 1×4×{s}×{s} → {0}×{0}", 4 * s),
            Case::Whole(s) => format!("whole upscale, {s}×{s} → {0}×{0}, {steps} steps", 4 * s),
        }
    }
}

/// Token ids spread over the vocabulary, the same on both sides: id = (1 + 7919 i) mod V.
fn text_ids(vocab: usize) -> Vec<u32> {
    let (b, t) = TEXT_IDS;
    (0..b * t)
        .map(|i| ((1 + 7919 * i) % vocab) as u32)
        .collect()
}

/// Files both sides read: the text encoder config, and the whole upscale's input (raw RGB).
struct Inputs {
    text_config: PathBuf,
    image: PathBuf,
}

impl Inputs {
    fn at(dir: &Path) -> Self {
        Self {
            text_config: dir.join("x4_text_encoder_config.json"),
            image: dir.join(format!("x4_cpu_input_{WHOLE_SIZE}x{WHOLE_SIZE}.rgb")),
        }
    }

    fn write(&self) -> Result<()> {
        std::fs::write(&self.text_config, X4_TEXT_ENCODER_CONFIG)
            .with_context(|| format!("writing {}", self.text_config.display()))?;
        std::fs::write(&self.image, input_rgb8(WHOLE_SIZE))
            .with_context(|| format!("writing {}", self.image.display()))
    }
}

fn median(times: &[f64]) -> f64 {
    let mut t = times.to_vec();
    t.sort_by(f64::total_cmp);
    let n = t.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        t[n / 2]
    } else {
        (t[n / 2 - 1] + t[n / 2]) / 2.0
    }
}

fn min(times: &[f64]) -> f64 {
    times.iter().copied().fold(f64::INFINITY, f64::min)
}

/// One warm-up call (`f(true)`), then `n` timed ones (`f(false)`); every output is checked
/// to be finite (outside the timed part). Returns the times, the warm-up's seconds and the
/// cores other processes kept busy during the timed runs.
fn time_it(label: &str, n: usize, mut f: impl FnMut(bool) -> Result<Tensor>) -> Result<Timed> {
    let check = |out: &Tensor| -> Result<f64> {
        let mean_abs = out
            .abs()?
            .mean_all()?
            .to_dtype(DType::F64)?
            .to_scalar::<f64>()?;
        if !mean_abs.is_finite() {
            bail!("{label}: output is not finite (mean |x| = {mean_abs})");
        }
        Ok(mean_abs)
    };
    let t = Instant::now();
    let out = f(true)?;
    let warm = t.elapsed().as_secs_f64();
    let mean_abs = check(&out)?;
    eprintln!(
        "[diffsr] {label}: warm-up {warm:.3} s, output {:?}, mean |x| {mean_abs:.3}",
        out.dims()
    );
    drop(out);
    let mut times = Vec::with_capacity(n);
    let profile = PROFILE.get().and_then(Option::as_ref);
    if let Some(p) = profile {
        p.reset();
    }
    let mut busy = 0.0;
    let mut wall = 0.0;
    for _ in 0..n {
        let before = cpu_ticks();
        let t = Instant::now();
        let out = f(false)?;
        let secs = t.elapsed().as_secs_f64();
        let load = foreign_load(before, cpu_ticks(), secs);
        times.push(secs);
        busy += load * secs;
        wall += secs;
        check(&out)?;
    }
    let load = busy / wall;
    eprintln!("[diffsr] {label}: {times:.3?} s, other processes' load {load:.2}");
    if let Some(p) = profile {
        let total = std::time::Duration::from_secs_f64(times.iter().sum());
        eprintln!(
            "[diffsr] {label}: profile of the {n} timed runs\n{}",
            diffsr::profile::table(&p.totals(), total)
        );
    }
    Ok((times, warm, load))
}

/// What [`time_it`] returns: the timed runs' seconds, the warm-up's, the other load.
type Timed = (Vec<f64>, f64, f64);

fn assets() -> PathBuf {
    crate_root().join("assets/x4-upscaler")
}

fn unet_step(s: usize, reps: usize, label: &str) -> Result<Timed> {
    let (dev, build) = (Device::Cpu, Instant::now());
    let config = UNet2DConditionConfig::from_file(&assets().join("unet_config.json"))?;
    let weights = RandomWeights::new();
    let unet = UNet2DConditionModel::new(&config, weights.var_builder(DType::F32, &dev))?;
    let ehs = Tensor::randn(0f32, 1.0, (2, TEXT_IDS.1, TEXT_HIDDEN), &dev)?;
    let labels = Tensor::new(&[NOISE_LEVEL, NOISE_LEVEL], &dev)?;
    let sample = Tensor::randn(0f32, 1.0, (2, config.in_channels, s, s), &dev)?;
    built(label, &weights, build);
    time_it(label, reps, |_| {
        Ok(unet.forward(&sample, TIMESTEP, &ehs, &labels)?)
    })
}

fn vae_decode(s: usize, reps: usize, label: &str) -> Result<Timed> {
    let (dev, build) = (Device::Cpu, Instant::now());
    let config = AutoencoderKLConfig::from_file(&assets().join("vae_config.json"))?;
    let weights = RandomWeights::new();
    let vae = AutoencoderKL::new(&config, weights.var_builder(DType::F32, &dev))?;
    let latents =
        (Tensor::randn(0f32, 1.0, (1, config.latent_channels, s, s), &dev)? / VAE_SCALING_FACTOR)?;
    built(label, &weights, build);
    time_it(label, reps, |_| Ok(vae.decode(&latents)?))
}

fn text_encoder(reps: usize, label: &str, inputs: &Inputs) -> Result<Timed> {
    let (dev, build) = (Device::Cpu, Instant::now());
    let config = ClipTextConfig::from_file(&inputs.text_config)?;
    let weights = RandomWeights::new();
    let encoder = ClipTextModel::new(&config, weights.var_builder(DType::F32, &dev))?;
    let ids = Tensor::from_vec(text_ids(config.vocab_size), TEXT_IDS, &dev)?;
    built(label, &weights, build);
    time_it(label, reps, |_| Ok(encoder.forward(&ids)?))
}

fn built(label: &str, weights: &RandomWeights, since: Instant) {
    eprintln!(
        "[diffsr] {label}: {:.1}M random parameters built in {:.1} s",
        weights.param_count() as f64 / 1e6,
        since.elapsed().as_secs_f64()
    );
}

fn whole_upscale(
    s: usize,
    reps: usize,
    steps: usize,
    label: &str,
    inputs: &Inputs,
) -> Result<Timed> {
    let (dir, build) = (default_model_dir(), Instant::now());
    let pipeline = UpscalePipeline::load(&dir, &LoadOptions::default())
        .with_context(|| format!("loading {}", dir.display()))?;
    // diffusers runs both models untiled; so must this case.
    let vae_tile = pipeline.tiling().vae.tile;
    if pipeline.unet_batches_per_step(s, s)? != 1 || (vae_tile != 0 && s > vae_tile) {
        bail!("{label}: the default tiling would cut the {s}×{s} latent into tiles");
    }
    let rgb = std::fs::read(&inputs.image)
        .with_context(|| format!("reading {}", inputs.image.display()))?;
    if rgb.len() != 3 * s * s {
        bail!("{} is not a {s}×{s} RGB image", inputs.image.display());
    }
    let rgb = Rgb8::new(rgb, s, s)?;
    let options = |steps| DiffusionSettings {
        steps,
        guidance_scale: GUIDANCE,
        noise_level: NOISE_LEVEL,
        seed: SEED,
        ..DiffusionSettings::default()
    };
    let (warm_options, timed_options) = (options(1), options(steps));
    eprintln!(
        "[diffsr] {label}: loaded {} in {:.1} s",
        dir.display(),
        build.elapsed().as_secs_f64()
    );
    time_it(label, reps, |warm_up| {
        let options = if warm_up {
            &warm_options
        } else {
            &timed_options
        };
        let out = pipeline.upscale_with(&rgb, options, &mut |_| ControlFlow::Continue(()))?;
        Ok(out.to_tensor(&Device::Cpu)?)
    })
}

/// The child: builds what `case` needs, times it and prints one JSON line on stdout.
fn child(spec: &str) -> Result<()> {
    if env::flag("DIFFSR_PROFILE")? {
        let times = StageTimes::new();
        tracing::subscriber::set_global_default(tracing_subscriber::registry().with(times.layer()))
            .context("installing the profile's tracing subscriber")?;
        let _ = PROFILE.set(Some(times));
    }
    let parts: Vec<&str> = spec.split(':').collect();
    let [case, reps, steps, threads] = parts[..] else {
        bail!("bad {CHILD} value {spec:?}");
    };
    let case = Case::parse(case)?;
    let (reps, steps, threads): (usize, usize, usize) =
        (reps.parse()?, steps.parse()?, threads.parse()?);
    let candle_threads = candle_core::utils::get_num_threads();
    if candle_threads != threads {
        bail!("candle reports {candle_threads} threads, asked for {threads}");
    }
    let label = case.label(steps);
    let inputs = Inputs::at(&readme::results_dir()?);
    let (times, warm, load) = match case {
        Case::Unet(s) => unet_step(s, reps, &label)?,
        Case::Vae(s) => vae_decode(s, reps, &label)?,
        Case::Text => text_encoder(reps, &label, &inputs)?,
        Case::Whole(s) => whole_upscale(s, reps, steps, &label, &inputs)?,
    };
    let peak = proc_status_kib("VmHWM:").map_or(f64::NAN, |k| k as f64 * 1024.0);
    println!(
        "{}",
        json!({
            "case": case.name(),
            "times_s": times,
            "warmup_s": warm,
            "foreign_load": load,
            "peak_rss_bytes": peak,
        })
    );
    Ok(())
}

/// One side's figures for one case.
struct Side {
    times: Vec<f64>,
    foreign_load: f64,
    peak_rss: f64,
}

impl Side {
    fn from_json(v: &Value, rss_key: &str) -> Result<Self> {
        let times: Vec<f64> = v["times_s"]
            .as_array()
            .context("no times_s")?
            .iter()
            .filter_map(Value::as_f64)
            .collect();
        if times.is_empty() {
            bail!("no timed runs");
        }
        Ok(Self {
            times,
            foreign_load: v["foreign_load"].as_f64().unwrap_or(f64::NAN),
            peak_rss: v[rss_key].as_f64().unwrap_or(f64::NAN),
        })
    }
}

fn run_ours(case: Case, reps: usize, steps: usize, threads: usize) -> Result<Side> {
    let out = Command::new(std::env::current_exe()?)
        .env(CHILD, format!("{}:{reps}:{steps}:{threads}", case.name()))
        // Read by candle when it sizes its thread pools (gemm's parallelism included).
        .env("RAYON_NUM_THREADS", threads.to_string())
        .env("CANDLE_NUM_THREADS", threads.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .output()
        .context("starting the diffsr child")?;
    if !out.status.success() {
        bail!("the diffsr child exited with {}", out.status);
    }
    Side::from_json(&last_json(&out.stdout)?, "peak_rss_bytes")
}

/// Versions the reference reported: `torch 2.x / diffusers 0.x / transformers 5.x`.
fn versions(v: &Value) -> String {
    ["torch", "diffusers", "transformers"]
        .iter()
        .map(|k| format!("{k} {}", v[*k].as_str().unwrap_or("?")))
        .collect::<Vec<_>>()
        .join(" / ")
}

fn run_theirs(
    python: &Path,
    case: Case,
    reps: usize,
    steps: usize,
    threads: usize,
    inputs: &Inputs,
) -> Result<(Side, String)> {
    let root = crate_root();
    let assets = root.join("assets/x4-upscaler");
    let out = Command::new(python)
        .arg(root.join("scripts/bench/x4_reference.py"))
        .args(["--case", &case.name()])
        .args(["--reps", &reps.to_string()])
        .args(["--steps", &steps.to_string()])
        .args(["--threads", &threads.to_string()])
        .arg("--unet-config")
        .arg(assets.join("unet_config.json"))
        .arg("--vae-config")
        .arg(assets.join("vae_config.json"))
        .arg("--text-config")
        .arg(&inputs.text_config)
        .arg("--model-dir")
        .arg(default_model_dir())
        .arg("--image")
        .arg(&inputs.image)
        .env("OMP_NUM_THREADS", threads.to_string())
        .env("MKL_NUM_THREADS", threads.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {}", python.display()))?;
    if !out.status.success() {
        bail!("{} exited with {}", python.display(), out.status);
    }
    let v = last_json(&out.stdout)?;
    if v["threads"].as_u64() != Some(threads as u64) {
        bail!("torch ran with {} threads, not {threads}", v["threads"]);
    }
    Ok((Side::from_json(&v, "maxrss_bytes")?, versions(&v)))
}

struct Row {
    case: Case,
    reps: usize,
    ours: Result<Side>,
    /// `None`: no reference was run.
    theirs: Option<Result<Side>>,
}

/// The selected cases in the order they run, each with its timed runs.
struct Plan {
    threads: usize,
    steps: usize,
    cases: Vec<(Case, usize)>,
}

fn plan_from_env() -> Result<Plan> {
    if env::var("DIFFSR_BENCH_ONLY")?.is_some() {
        bail!(
            "DIFFSR_BENCH_ONLY was replaced by DIFFSR_BENCH_CASES (comma separated: unet, vae, \
             text, whole, or names such as unet_32)"
        );
    }
    let threads = env::threads()?;
    let sizes = env::positive_list("DIFFSR_BENCH_SIZES", "32,64,128")?;
    let reps = match env::var("DIFFSR_BENCH_REPS")? {
        Some(_) => env::per_item(
            "DIFFSR_BENCH_REPS",
            env::positive_list("DIFFSR_BENCH_REPS", "")?,
            sizes.len(),
        )?,
        None => {
            let mut r = vec![3, 2, 1];
            r.resize(sizes.len(), 1);
            r
        }
    };
    let text_reps = env::positive("DIFFSR_BENCH_TEXT_REPS", 5)?;
    let whole_reps = env::positive("DIFFSR_BENCH_WHOLE_REPS", 1)?;
    let steps = env::positive("DIFFSR_BENCH_STEPS", 20)?;

    let mut all = vec![(Case::Text, text_reps)];
    for (&s, &n) in sizes.iter().zip(&reps) {
        all.push((Case::Unet(s), n));
        all.push((Case::Vae(s), n));
    }
    all.push((Case::Whole(WHOLE_SIZE), whole_reps));

    let wanted = env::words("DIFFSR_BENCH_CASES", "")?;
    if wanted.is_empty() {
        return Ok(Plan {
            threads,
            steps,
            cases: all,
        });
    }
    let names: Vec<String> = all.iter().map(|(c, _)| c.name()).collect();
    for w in &wanted {
        if !all.iter().any(|(c, _)| c.kind() == w || c.name() == *w) {
            bail!(
                "DIFFSR_BENCH_CASES: {w:?} matches none of the cases {} (a UNet or VAE size \
                 must also be in DIFFSR_BENCH_SIZES)",
                names.join(", ")
            );
        }
    }
    all.retain(|(c, _)| wanted.iter().any(|w| c.kind() == w || c.name() == *w));
    Ok(Plan {
        threads,
        steps,
        cases: all,
    })
}

fn seconds(side: &Side) -> String {
    format!("{:.3} s ({:.3})", median(&side.times), min(&side.times))
}

fn main() -> Result<()> {
    // As the `diffsr` binary does, so the figures are what its users get.
    diffsr::memory::tune_allocator(env::malloc());
    if let Ok(spec) = std::env::var(CHILD) {
        return child(&spec);
    }
    let plan = plan_from_env()?;
    let python = env::reference_python()?;
    // Read now so that a bad value fails before an hour of timing, not after.
    readme::write_docs()?;
    let threads = plan.threads;
    let steps = plan.steps;

    let inputs = Inputs::at(&readme::results_dir()?);
    inputs.write()?;
    if plan.cases.iter().any(|(c, _)| matches!(c, Case::Whole(_))) {
        write_random_model(&default_model_dir())?;
    }
    let names: Vec<String> = plan
        .cases
        .iter()
        .map(|(c, n)| format!("{} ×{n}", c.name()))
        .collect();
    let load_start = loadavg();
    println!(
        "x4 upscaler CPU bench: {threads} threads; cases (timed runs): {}; load average \
         {load_start}",
        names.join(", ")
    );
    match &python {
        Ok(p) => println!("reference: {}", p.display()),
        Err(why) => println!("reference skipped: {why}"),
    }

    let mut rows = Vec::new();
    let mut reference_versions = None;
    for &(case, reps) in &plan.cases {
        eprintln!("[bench] {}: diffsr", case.name());
        let ours = run_ours(case, reps, steps, threads);
        if let Err(e) = &ours {
            eprintln!("[bench] {}: diffsr failed: {e:#}", case.name());
        }
        let theirs = python.as_ref().ok().map(|py| {
            eprintln!("[bench] {}: torch", case.name());
            match run_theirs(py, case, reps, steps, threads, &inputs) {
                Ok((side, v)) => {
                    reference_versions.get_or_insert(v);
                    Ok(side)
                }
                Err(e) => {
                    eprintln!("[bench] {}: the reference failed: {e:#}", case.name());
                    Err(e)
                }
            }
        });
        rows.push(Row {
            case,
            reps,
            ours,
            theirs,
        });
    }
    let load_end = loadavg();

    let against = match (&python, &reference_versions) {
        (Err(why), _) => format!("alone (no reference: {why}), each case in a process of its own"),
        (Ok(_), None) => "against diffusers on PyTorch (which failed)".into(),
        (Ok(_), Some(v)) => format!(
            "against {v}, the two sides alternating case by case in one run, each case in a \
             process of its own"
        ),
    };
    let mut md = readme::paragraph(&format!(
        "Measured {} (UTC) on {}, {threads} threads, CPU, f32: diffsr on candle {} {against}; \
         median (min) of the timed runs after one warm-up.",
        machine::utc_date(),
        machine::machine(),
        machine::locked_version("candle-core"),
    ));
    md.push('\n');
    md.push_str(
        "| case | runs | diffsr | torch | ratio | peak RSS diffsr / torch | other load \
         diffsr / torch |\n|---|---|---|---|---|---|---|\n",
    );
    let failed = |e: &anyhow::Error| format!("failed: {}", e.root_cause());
    for row in &rows {
        let (ours, ours_rss, ours_load) = match &row.ours {
            Ok(s) => (
                seconds(s),
                gib(s.peak_rss),
                format!("{:.2}", s.foreign_load),
            ),
            Err(e) => (failed(e), "—".into(), "—".into()),
        };
        let (theirs, ratio, theirs_rss, theirs_load) = match (&row.theirs, &row.ours) {
            (None, _) => ("—".into(), "—".into(), "—".into(), "—".into()),
            (Some(Err(e)), _) => (failed(e), "—".into(), "—".into(), "—".into()),
            (Some(Ok(t)), ours) => (
                seconds(t),
                ours.as_ref().map_or("—".into(), |o| {
                    format!("{:.2}×", median(&o.times) / median(&t.times))
                }),
                gib(t.peak_rss),
                format!("{:.2}", t.foreign_load),
            ),
        };
        md.push_str(&format!(
            "| {} (`{}`) | {} | {ours} | {theirs} | {ratio} | {ours_rss} / {theirs_rss} | \
             {ours_load} / {theirs_load} |\n",
            row.case.label(steps),
            row.case.name(),
            row.reps,
        ));
    }
    let mut notes = String::from(
        "ratio: diffsr / torch medians, above 1 means diffsr is slower. peak RSS: the case's \
         own process (VmHWM / ru_maxrss), weights included. other load: cores other processes \
         kept busy during the timed runs (0: a quiet machine).",
    );
    if rows.iter().any(|r| matches!(r.case, Case::Whole(_))) {
        notes.push_str(&format!(
            " `whole_{WHOLE_SIZE}`: `UpscalePipeline` against diffusers' \
             `StableDiffusionUpscalePipeline`, both loaded from the same random model directory \
             (loading not timed), its DDIM scheduler, guidance {GUIDANCE}, noise level \
             {NOISE_LEVEL}, seed {SEED}, the empty prompt; the warm-up is a 1-step upscale."
        ));
    }
    md.push('\n');
    md.push_str(&readme::paragraph(&notes));

    println!();
    print!("{md}");
    println!();
    println!("load average: {load_start} at the start, {load_end} at the end");
    let ours_failed = rows.iter().filter(|r| r.ours.is_err()).count();
    let theirs_failed = rows
        .iter()
        .filter(|r| matches!(r.theirs, Some(Err(_))))
        .count();
    readme::finish("x4_cpu", &md, ours_failed, theirs_failed)
}
