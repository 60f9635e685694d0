//! `diffsr bench` and `--device` through the binary: each case runs and reports its times (and,
//! for the engines, the memory plan) as one JSON object; bad combinations and unusable
//! devices are one clear line with exit code 2. A CPU-only build names why `auto` chose the
//! CPU and why `cuda` cannot be used.

#[path = "support/cli.rs"]
mod cli;

use anyhow::{ensure, Context, Result};
use cli::{diffsr, fixtures, s, scratch, stderr};
use serde_json::Value;

/// Runs `diffsr bench ARGS --json` and returns its JSON object.
fn bench_json(dir: &std::path::Path, args: &[&str]) -> Result<Value> {
    let out = diffsr(
        dir,
        &[&["bench"], args, &["--json", "--device", "cpu"]].concat(),
    )?;
    ensure!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout)?;
    ensure!(
        text.lines().count() == 1,
        "one line of JSON expected: {text}"
    );
    serde_json::from_str(&text).with_context(|| text.clone())
}

fn times_are_sane(v: &Value, runs: usize) -> Result<()> {
    let times: Vec<f64> = serde_json::from_value(v["times_s"].clone())?;
    ensure!(times.len() == runs, "{v}");
    ensure!(times.iter().all(|t| *t > 0.0), "{v}");
    let min = v["min_s"].as_f64().context("min_s")?;
    let median = v["median_s"].as_f64().context("median_s")?;
    ensure!(
        times.iter().copied().fold(f64::INFINITY, f64::min) == min,
        "{v}"
    );
    ensure!(min <= median, "{v}");
    Ok(())
}

#[test]
fn each_case_reports_its_runs_as_json() -> Result<()> {
    let dir = scratch("cases")?;
    let tiny = fixtures().join("tiny-x4-upscaler");
    let unet_config = tiny.join("unet/config.json");
    let v = bench_json(
        &dir,
        &[
            "unet",
            "--config",
            s(&unet_config),
            "--size",
            "8",
            "--runs",
            "3",
        ],
    )?;
    times_are_sane(&v, 3)?;
    assert_eq!(v["case"], "unet");
    assert_eq!(v["device"], "cpu");
    assert_eq!(v["dtype"], "f32");
    assert_eq!(v["warmup"], 1);
    assert!(v["estimated_peak_bytes"].is_null(), "{v}");

    let vae_config = tiny.join("vae/config.json");
    let v = bench_json(
        &dir,
        &[
            "vae",
            "--config",
            s(&vae_config),
            "--size",
            "4",
            "--runs",
            "2",
            "--warmup",
            "0",
        ],
    )?;
    times_are_sane(&v, 2)?;
    assert_eq!(v["warmup"], 0);

    // The engines report the plan they run under, within the budget given.
    let gan = fixtures().join("gan/rrdb_x4.safetensors");
    let v = bench_json(
        &dir,
        &[
            "gan",
            "--model",
            s(&gan),
            "--size",
            "24",
            "--runs",
            "1",
            "--max-memory",
            "64M",
        ],
    )?;
    times_are_sane(&v, 1)?;
    assert_eq!(v["budget_bytes"], 64 << 20);
    let peak = v["estimated_peak_bytes"]
        .as_u64()
        .context("estimated_peak_bytes")?;
    assert!(peak > 0 && peak <= 64 << 20, "{v}");
    assert!(
        v["plan"].as_str().unwrap_or("").contains("estimated peak"),
        "{v}"
    );

    let v = bench_json(
        &dir,
        &[
            "upscale",
            "--model",
            s(&tiny),
            "--size",
            "16",
            "--steps",
            "2",
            "--runs",
            "1",
        ],
    )?;
    times_are_sane(&v, 1)?;
    assert!(v["estimated_peak_bytes"].as_u64().is_some(), "{v}");
    assert!(
        v["description"].as_str().unwrap_or("").contains("2 steps"),
        "{v}"
    );
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[test]
fn bad_bench_flags_and_devices_are_one_clear_line() -> Result<()> {
    let dir = scratch("bad")?;
    let tiny = fixtures().join("tiny-x4-upscaler");
    let gan = fixtures().join("gan/rrdb_x4.safetensors");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["bench", "upscale", "--device", "cpu"], "needs --model"),
        (
            vec!["bench", "unet", "--model", s(&gan), "--device", "cpu"],
            "--model applies to the gan and upscale cases",
        ),
        (
            vec!["bench", "gan", "--config", s(&tiny), "--device", "cpu"],
            "--config applies to the unet and vae cases",
        ),
        (
            vec!["bench", "unet", "--device", "tpu"],
            "--device tpu: expected auto, cpu, cuda",
        ),
        (
            vec!["bench", "vae", "--pre-pad", "0", "--device", "cpu"],
            "--pre-pad applies to the gan case",
        ),
        (vec!["bench", "unet", "--runs", "0"], "--runs"),
        (
            vec!["upscale", "x.png", "-o", "y.png", "--device", "cuda:x"],
            "--device cuda:x: expected auto, cpu, cuda, cuda:N or metal",
        ),
    ];
    for (args, expected) in cases {
        let out = diffsr(&dir, &args)?;
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(expected), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

/// Only a build without GPU backends knows what it must say: a CUDA build's answer depends on
/// the machine.
#[cfg(not(any(feature = "cuda", feature = "metal")))]
#[test]
fn a_cpu_build_says_why_it_runs_on_the_cpu_and_that_cuda_is_not_built_in() -> Result<()> {
    let dir = scratch("cpu-build")?;
    let unet_config = fixtures().join("tiny-x4-upscaler/unet/config.json");
    let out = diffsr(
        &dir,
        &[
            "bench",
            "unet",
            "--config",
            s(&unet_config),
            "--size",
            "4",
            "--runs",
            "1",
        ],
    )?;
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("device: cpu (this build has no GPU backend"),
        "{err}"
    );

    for device in ["cuda", "cuda:1", "metal"] {
        let out = diffsr(&dir, &["bench", "unet", "--device", device])?;
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(
            err.contains(&format!("--device {device}: this diffsr was built without")),
            "{err}"
        );
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
