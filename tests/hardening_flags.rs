//! Hostile flags and config values (issue 14, classes 12, 14, 16, 17): every flag that does
//! not depend on the image is refused once, before any image is read, with exit code 2 and a
//! message naming the flag; every `config.json` value a model or solver is sized by is checked
//! against a sane range at load, naming the file, the field and the range.
//!
//! Binary tests run `diffsr upscale` on three images and check: exit 2, the message exactly
//! once on stderr, nothing written. Config tests write hostile JSON into a scratch copy of the
//! tiny x4 model.

#[path = "support/cli.rs"]
mod cli;

use std::path::{Path, PathBuf};
use std::process::Output;

use anyhow::{ensure, Context, Result};
use cli::{copy_dir, fixtures, offline, s, stderr};
use diffsr::models::clip_text::ClipTextConfig;
use diffsr::models::unet::UNet2DConditionConfig;
use diffsr::models::vae::AutoencoderKLConfig;
use diffsr::pipeline::{LoadOptions, UpscalePipeline};
use diffsr::schedulers::{NoiseSchedule, SchedulerConfig, SchedulerError};
use diffsr::upscaler::{DiffusionSettings, OutputSize, TargetSize};
use diffsr::Error;
use serde_json::{json, Value};

const IMAGES: [&str; 3] = [
    "astronaut-20x16.png",
    "chelsea-16x12.png",
    "coffee-18x14.png",
];

fn tiny_model() -> PathBuf {
    fixtures().join("tiny-x4-upscaler")
}

fn gan_model() -> PathBuf {
    fixtures().join("gan/srvgg_x4_prelu.pth")
}

/// A fresh scratch folder holding the three test images.
fn scratch(name: &str) -> Result<PathBuf> {
    let dir = cli::scratch(name)?;
    for image in IMAGES {
        std::fs::copy(fixtures().join("images").join(image), dir.join(image))?;
    }
    Ok(dir)
}

/// A copy of the tiny model under `dir`, with `edit` applied to the JSON of `file`.
fn hostile_model(dir: &Path, file: &str, edit: impl FnOnce(&mut Value)) -> Result<PathBuf> {
    let model = dir.join("model");
    let _ = std::fs::remove_dir_all(&model);
    copy_dir(&tiny_model(), &model)?;
    edit_json(&model.join(file), edit)?;
    Ok(model)
}

fn edit_json(path: &Path, edit: impl FnOnce(&mut Value)) -> Result<()> {
    let mut value: Value = serde_json::from_str(&std::fs::read_to_string(path)?)?;
    edit(&mut value);
    std::fs::write(path, serde_json::to_string_pretty(&value)?)?;
    Ok(())
}

/// `diffsr upscale` on the three images of `dir` into `dir/out`, with `args`.
fn upscale_three(dir: &Path, args: &[&str]) -> Result<Output> {
    let inputs: Vec<PathBuf> = IMAGES.iter().map(|i| dir.join(i)).collect();
    // Two steps keep the runs short, unless the case is about --steps.
    let steps: &[&str] = if args.iter().any(|a| a.starts_with("--steps")) {
        &[]
    } else {
        &["--steps", "2"]
    };
    Ok(offline(dir, &["upscale"])
        .args(&inputs)
        .arg("--out-dir")
        .arg(dir.join("out"))
        .args(["--device", "cpu"])
        .args(steps)
        .args(args)
        .output()?)
}

/// Exit code 2, one error, `needle` exactly once on stderr, no output folder (nothing ran).
fn refused_once(dir: &Path, out: &Output, needle: &str) -> Result<()> {
    let err = stderr(out);
    ensure!(out.status.code() == Some(2), "exit {:?}: {err}", out.status);
    ensure!(
        err.matches("error:").count() == 1,
        "not exactly one error:\n{err}"
    );
    ensure!(
        err.matches(needle).count() == 1,
        "{needle:?} is not printed exactly once:\n{err}"
    );
    ensure!(
        !dir.join("out").exists(),
        "an output was written or its folder made:\n{err}"
    );
    Ok(())
}

// --- class 16: flags refused once, before any image, exit 2 -----------------------------

#[test]
fn too_many_steps_are_refused_once_before_loading() -> Result<()> {
    let dir = scratch("steps")?;
    let model = tiny_model();
    let out = upscale_three(&dir, &["--model", s(&model), "--steps", "100000"])?;
    refused_once(&dir, &out, "--steps")?;
    ensure!(stderr(&out).contains("1..=1000"), "{}", stderr(&out));
    // Within the cap but beyond what the model's solver accepts (x4: leading spacing with
    // steps_offset 1): refused once after loading, still before any image.
    let out = upscale_three(&dir, &["--model", s(&model), "--steps", "1000"])?;
    refused_once(&dir, &out, "training timesteps")?;
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[test]
fn a_noise_level_above_the_models_is_refused_once() -> Result<()> {
    let dir = scratch("noise")?;
    let out = upscale_three(&dir, &["--model", s(&tiny_model()), "--noise-level", "351"])?;
    refused_once(&dir, &out, "--noise-level")?;
    ensure!(stderr(&out).contains("0..=350"), "{}", stderr(&out));
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[test]
fn a_gan_tile_below_the_overlap_is_refused_once() -> Result<()> {
    let dir = scratch("tile")?;
    let out = upscale_three(&dir, &["--model", s(&gan_model()), "--tile", "1"])?;
    refused_once(&dir, &out, "--tile")?;
    ensure!(stderr(&out).contains("at least"), "{}", stderr(&out));
    // The diffusion engine's second-pass GAN takes --tile too.
    let out = upscale_three(&dir, &["--model", s(&tiny_model()), "--tile", "1"])?;
    refused_once(&dir, &out, "--tile")?;
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[test]
fn bf16_diffusion_on_the_cpu_is_refused_before_loading() -> Result<()> {
    let dir = scratch("bf16")?;
    let out = upscale_three(
        &dir,
        &[
            "--model",
            s(&tiny_model()),
            "--engine",
            "diffusion",
            "--dtype",
            "bf16",
        ],
    )?;
    refused_once(&dir, &out, "--dtype")?;
    ensure!(
        !stderr(&out).contains("seed "),
        "the model was loaded first: {}",
        stderr(&out)
    );
    // The GAN engine runs bf16 on the CPU (its convolutions widen to f32).
    let out = upscale_three(&dir, &["--model", s(&gan_model()), "--dtype", "bf16", "-q"])?;
    ensure!(out.status.success(), "{}", stderr(&out));
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[test]
fn a_bad_beta_start_in_the_models_scheduler_is_refused_once() -> Result<()> {
    let dir = scratch("beta")?;
    let model = hostile_model(&dir, "scheduler/scheduler_config.json", |c| {
        c["beta_start"] = json!(-0.5)
    })?;
    let out = upscale_three(&dir, &["--model", s(&model), "--engine", "diffusion"])?;
    refused_once(&dir, &out, "beta_start")?;
    let err = stderr(&out);
    ensure!(
        err.contains("scheduler_config.json") && err.contains("above 0 and below 1"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

// --- class 14: eta, on the command line and in a manifest -------------------------------

#[test]
fn eta_is_refused_outside_0_to_1_as_a_flag_and_in_a_manifest() -> Result<()> {
    let dir = scratch("eta")?;
    let model = tiny_model();
    for eta in ["1e9", "1.5", "-0.1", "nan", "inf"] {
        let out = upscale_three(&dir, &["--model", s(&model), &format!("--eta={eta}")])?;
        refused_once(&dir, &out, "--eta")?;
        ensure!(stderr(&out).contains("0 to 1"), "{eta}: {}", stderr(&out));
    }
    let manifest = dir.join("jobs.jsonl");
    std::fs::write(
        &manifest,
        format!(
            "{{\"input\": \"{}\"}}\n\n{{\"input\": \"{}\", \"eta\": 1e9}}\n",
            IMAGES[0], IMAGES[1]
        ),
    )?;
    let out = offline(&dir, &["upscale", "--manifest", s(&manifest), "--out-dir"])
        .arg(dir.join("out"))
        .args(["--model", s(&model), "--device", "cpu", "--steps", "2"])
        .output()?;
    refused_once(&dir, &out, "line 3")?;
    ensure!(stderr(&out).contains("eta"), "{}", stderr(&out));
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

/// A manifest names its keys as the manifest does (`guidance`, not the library's
/// `guidance_scale`), and an endless manifest (`/dev/zero`) is refused at its size bound
/// instead of being read without end.
#[test]
fn manifest_errors_use_its_keys_and_an_endless_manifest_is_bounded() -> Result<()> {
    let dir = scratch("manifest-keys")?;
    let manifest = dir.join("jobs.jsonl");
    std::fs::write(
        &manifest,
        format!("{{\"input\": \"{}\", \"guidance\": 1e9}}\n", IMAGES[0]),
    )?;
    let run = |manifest: &Path| {
        offline(&dir, &["upscale", "--manifest", s(manifest), "--out-dir"])
            .arg(dir.join("out"))
            .args(["--model", s(&tiny_model()), "--device", "cpu"])
            .output()
    };
    let out = run(&manifest)?;
    refused_once(&dir, &out, "line 1")?;
    ensure!(
        stderr(&out).contains("`guidance`") && !stderr(&out).contains("guidance_scale"),
        "{}",
        stderr(&out)
    );
    #[cfg(unix)]
    {
        let out = run(Path::new("/dev/zero"))?;
        ensure!(out.status.code() == Some(2), "{out:?}");
        ensure!(
            stderr(&out).contains("longer than 64 MiB"),
            "{}",
            stderr(&out)
        );
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[test]
fn a_manifest_lines_noise_level_is_checked_against_the_model_with_its_line() -> Result<()> {
    let dir = scratch("manifest-noise")?;
    let manifest = dir.join("jobs.jsonl");
    std::fs::write(
        &manifest,
        format!(
            "{{\"input\": \"{}\"}}\n{{\"input\": \"{}\", \"noise_level\": 351}}\n",
            IMAGES[0], IMAGES[1]
        ),
    )?;
    let out = offline(&dir, &["upscale", "--manifest", s(&manifest), "--out-dir"])
        .arg(dir.join("out"))
        .args([
            "--model",
            s(&tiny_model()),
            "--device",
            "cpu",
            "--steps",
            "2",
        ])
        .output()?;
    refused_once(&dir, &out, "line 2")?;
    ensure!(stderr(&out).contains("max_noise_level"), "{}", stderr(&out));
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

// --- class 17: --target names itself ----------------------------------------------------

#[test]
fn an_absurd_target_names_target_not_scale() -> Result<()> {
    let dir = scratch("target")?;
    for (flag, value) in [
        ("--target", "99999999x1"),
        ("--target", "2000x1"),
        ("--long-side", "99999999"),
        ("--long-side", "1000"),
    ] {
        let out = upscale_three(&dir, &["--model", s(&gan_model()), flag, value])?;
        let err = stderr(&out);
        refused_once(&dir, &out, &format!("`{flag}`"))?;
        ensure!(!err.contains("`scale`"), "{flag} {value}: {err}");
        // What is allowed: a side range, or the largest size for this input.
        ensure!(
            err.contains("1..=262144") || err.contains("at most 320x256"),
            "{flag} {value}: {err}"
        );
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

// --- every other numeric flag: one early, named error ------------------------------------

#[test]
fn every_numeric_flag_out_of_range_is_one_early_named_error() -> Result<()> {
    let dir = scratch("numeric")?;
    let tiny = tiny_model();
    let gan = gan_model();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--guidance=nan"], "`--guidance`"),
        (vec!["--guidance=inf"], "`--guidance`"),
        (vec!["--guidance=1e300"], "`--guidance`"),
        (vec!["--scale=0"], "`--scale`"),
        (vec!["--scale=-1"], "`--scale`"),
        (vec!["--scale=nan"], "`--scale`"),
        (vec!["--scale=1e300"], "`--scale`"),
        (vec!["--long-side=0"], "`--long-side`"),
        (vec!["--target=0x10"], "--target"),
        (vec!["--quality=0"], "'--quality"),
        (vec!["--shard=5/4"], "`--shard`"),
        (vec!["--seed=-1"], "'--seed"),
        (vec!["--steps=0"], "`--steps`"),
        (vec!["--max-memory=0"], "'--max-memory"),
    ];
    for (args, flag) in cases {
        let mut all = vec!["--model", s(&tiny)];
        all.extend(&args);
        let out = upscale_three(&dir, &all)?;
        refused_once(&dir, &out, flag).with_context(|| format!("{args:?}"))?;
    }
    let gan_cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--denoise=2"], "`--denoise`"),
        (vec!["--denoise=nan"], "`--denoise`"),
        (vec!["--plan=diffusion+gan"], "`--plan`"),
    ];
    for (args, flag) in gan_cases {
        let mut all = vec!["--model", s(&gan)];
        all.extend(&args);
        let out = upscale_three(&dir, &all)?;
        refused_once(&dir, &out, flag).with_context(|| format!("{args:?}"))?;
    }
    // 1e300 reads as 1e300, not as 301 digits.
    let out = upscale_three(&dir, &["--model", s(&tiny), "--scale=1e300"])?;
    ensure!(stderr(&out).contains("1e300"), "{}", stderr(&out));
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

// --- class 12: config values against sane ranges ----------------------------------------

/// `result` is an [`Error::Config`] on `path` whose message names `field` (and `range` when
/// given).
fn config_refused<T>(
    result: diffsr::Result<T>,
    path: &Path,
    field: &str,
    range: &str,
) -> Result<()> {
    match result {
        Err(Error::Config { path: p, message }) => {
            ensure!(
                p == path,
                "{field}: names {} not {}",
                p.display(),
                path.display()
            );
            ensure!(message.contains(field), "{field}: {message}");
            ensure!(
                message.contains(range),
                "{field}: no range {range:?} in {message}"
            );
            Ok(())
        }
        Err(other) => anyhow::bail!("{field}: wrong error: {other}"),
        Ok(_) => anyhow::bail!("{field}: accepted"),
    }
}

#[test]
fn unet_config_values_are_range_checked() -> Result<()> {
    let dir = scratch("unet")?;
    let path = dir.join("config.json");
    let base = tiny_model().join("unet/config.json");
    let cases: Vec<(&str, Value, &str)> = vec![
        ("norm_eps", json!(-1.0), "above 0"),
        ("norm_eps", json!(0.0), "above 0"),
        ("norm_num_groups", json!(3), "does not divide"),
        ("norm_num_groups", json!(0), "1..="),
        ("in_channels", json!(0), "1..="),
        ("out_channels", json!(1_000_000_000u64), "1..="),
        ("layers_per_block", json!(0), "1..="),
        ("layers_per_block", json!(1_000_000_000u64), "1..="),
        (
            "transformer_layers_per_block",
            json!(1_000_000_000u64),
            "0..=",
        ),
        ("cross_attention_dim", json!(0), "1..="),
        ("attention_head_dim", json!(1_000_000_000u64), "1..="),
        ("downsample_padding", json!(1_000_000_000u64), "0 or 1"),
        ("conv_in_kernel", json!(1_000_000_001u64), "1..="),
        ("num_class_embeds", json!(1_000_000_000_000u64), "1..="),
        ("time_embedding_dim", json!(1_000_000_000_000u64), "1..="),
        ("dropout", json!(2.0), "0..=1"),
        (
            "block_out_channels",
            json!([16, 16, 32, 1_000_000_000u64]),
            "1..=",
        ),
    ];
    for (field, value, range) in cases {
        std::fs::copy(&base, &path)?;
        edit_json(&path, |c| c[field] = value)?;
        config_refused(UNet2DConditionConfig::from_file(&path), &path, field, range)?;
    }
    // 100 levels (with 100 block types to match): refused for the count, not looped over.
    std::fs::copy(&base, &path)?;
    edit_json(&path, |c| {
        c["block_out_channels"] = json!(vec![32; 100]);
        c["down_block_types"] = json!(vec!["DownBlock2D"; 100]);
        c["up_block_types"] = json!(vec!["UpBlock2D"; 100]);
    })?;
    config_refused(
        UNet2DConditionConfig::from_file(&path),
        &path,
        "block_out_channels",
        "levels",
    )?;
    // Unknown keys are still ignored and absent ones take diffusers' defaults.
    std::fs::copy(&base, &path)?;
    edit_json(&path, |c| {
        c["some_future_key"] = json!({"nested": true});
        c.as_object_mut().unwrap().remove("norm_eps");
    })?;
    let config = UNet2DConditionConfig::from_file(&path)?;
    ensure!(config.norm_eps == 1e-5);
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[test]
fn vae_config_values_are_range_checked() -> Result<()> {
    let dir = scratch("vae")?;
    let path = dir.join("config.json");
    let base = tiny_model().join("vae/config.json");
    let cases: Vec<(&str, Value, &str)> = vec![
        ("norm_num_groups", json!(0), "1..="),
        ("norm_num_groups", json!(7), "does not divide"),
        ("latent_channels", json!(1_000_000_000u64), "1..="),
        ("in_channels", json!(0), "1..="),
        ("layers_per_block", json!(0), "1..="),
        ("scaling_factor", json!(-1.0), "above 0"),
    ];
    for (field, value, range) in cases {
        std::fs::copy(&base, &path)?;
        edit_json(&path, |c| c[field] = value)?;
        config_refused(AutoencoderKLConfig::from_file(&path), &path, field, range)?;
    }
    // 65 levels would shift 1 << 64 for the VAE's scale.
    std::fs::copy(&base, &path)?;
    edit_json(&path, |c| {
        c["block_out_channels"] = json!(vec![32; 65]);
        c["down_block_types"] = json!(vec!["DownEncoderBlock2D"; 65]);
        c["up_block_types"] = json!(vec!["UpDecoderBlock2D"; 65]);
    })?;
    config_refused(
        AutoencoderKLConfig::from_file(&path),
        &path,
        "block_out_channels",
        "levels",
    )?;
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[test]
fn text_encoder_config_values_are_range_checked() -> Result<()> {
    let dir = scratch("clip")?;
    let path = dir.join("config.json");
    let base = tiny_model().join("text_encoder/config.json");
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "max_position_embeddings",
            json!(1_000_000_000_000u64),
            "1..=",
        ),
        ("vocab_size", json!(1_000_000_000_000u64), "1..="),
        ("num_hidden_layers", json!(1_000_000_000u64), "1..="),
        ("hidden_size", json!(1_000_000_000u64), "1..="),
        ("layer_norm_eps", json!(-1.0), "above 0"),
    ];
    for (field, value, range) in cases {
        std::fs::copy(&base, &path)?;
        edit_json(&path, |c| c[field] = value)?;
        config_refused(ClipTextConfig::from_file(&path), &path, field, range)?;
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

/// `result` is a scheduler config error naming `field` and `expected`.
fn scheduler_refused<T>(
    result: Result<T, SchedulerError>,
    field: &str,
    expected: &str,
) -> Result<()> {
    match result {
        Err(e @ SchedulerError::InvalidConfig { .. }) => {
            let msg = e.to_string();
            ensure!(
                msg.contains(field) && msg.contains(expected),
                "{field}: {msg}"
            );
            Ok(())
        }
        Err(other) => anyhow::bail!("{field}: wrong error: {other}"),
        Ok(_) => anyhow::bail!("{field}: accepted"),
    }
}

#[test]
fn scheduler_config_values_are_range_checked_without_allocating() -> Result<()> {
    let dir = scratch("scheduler")?;
    let path = dir.join("scheduler_config.json");
    let base = tiny_model().join("scheduler/scheduler_config.json");
    let cases: Vec<(&str, Value, &str)> = vec![
        // 1e9 used 7.9 GB and 4e9 aborted: refused before any allocation.
        ("num_train_timesteps", json!(1_000_000_000u64), "2..=100000"),
        ("num_train_timesteps", json!(4_000_000_000u64), "2..=100000"),
        ("num_train_timesteps", json!(1), "2..=100000"),
        ("beta_start", json!(-0.5), "above 0 and below 1"),
        ("beta_start", json!(0.0), "above 0 and below 1"),
        ("beta_end", json!(1.0), "above 0 and below 1"),
        ("beta_start", json!(0.5), "beta_start <= beta_end"),
        ("steps_offset", json!(u64::MAX), "less than the 1000"),
        ("clip_sample_range", json!(0.0), "above 0"),
        ("sigma_min", json!(-1.0), "above 0"),
        ("trained_betas", json!([0.5, 1.5]), "[0, 1)"),
    ];
    for (field, value, expected) in cases {
        std::fs::copy(&base, &path)?;
        edit_json(&path, |c| c[field] = value)?;
        let result = SchedulerConfig::from_file(&path);
        if let Err(e) = &result {
            ensure!(
                e.to_string().contains("scheduler_config.json"),
                "{field}: the file is not named: {e}"
            );
        }
        scheduler_refused(result, field, expected)?;
    }
    // Python's NaN token parses, and is refused.
    std::fs::write(
        &path,
        r#"{"_class_name": "DDIMScheduler", "beta_end": NaN}"#,
    )?;
    scheduler_refused(SchedulerConfig::from_file(&path), "beta_end", "NaN")?;
    // A config built in code is checked when a schedule is made from it.
    let config = SchedulerConfig {
        num_train_timesteps: Some(4_000_000_000),
        ..SchedulerConfig::default()
    };
    scheduler_refused(
        NoiseSchedule::from_config(&config),
        "num_train_timesteps",
        "2..=",
    )?;
    // Unknown keys are still ignored.
    std::fs::write(
        &path,
        r#"{"_class_name": "DDIMScheduler", "some_future_key": [1, 2], "beta_start": 0.001}"#,
    )?;
    SchedulerConfig::from_file(&path)?;
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[test]
fn diffsr_schedule_refuses_a_hostile_config_quickly() -> Result<()> {
    let dir = scratch("schedule-cli")?;
    let path = dir.join("scheduler_config.json");
    std::fs::write(&path, r#"{"num_train_timesteps": 4000000000}"#)?;
    let started = std::time::Instant::now();
    let out = cli::diffsr(&dir, &["schedule", "--config", s(&path), "--steps", "10"])?;
    // An argument error, exit code 2, as `upscale`'s.
    ensure!(out.status.code() == Some(2), "{out:?}");
    ensure!(
        started.elapsed().as_secs() < 10,
        "took {:?}",
        started.elapsed()
    );
    let err = stderr(&out);
    ensure!(
        err.contains("num_train_timesteps") && err.contains("scheduler_config.json"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

fn load(model: &Path) -> diffsr::Result<UpscalePipeline> {
    UpscalePipeline::load(model, &LoadOptions::default())
}

/// The innermost cause of a model-load error.
fn cause(e: Error) -> Error {
    match e {
        Error::ModelLoad { cause, .. } => *cause,
        other => other,
    }
}

#[test]
fn cross_file_limits_are_checked_at_load() -> Result<()> {
    let dir = scratch("cross")?;
    // max_noise_level indexes the low-res schedule (1000 timesteps) and the UNet's classes.
    let model = hostile_model(&dir, "model_index.json", |c| {
        c["max_noise_level"] = json!(5000)
    })?;
    let err = load(&model).map(drop).map_err(cause);
    config_refused(
        err,
        &model.join("model_index.json"),
        "max_noise_level",
        "0..=999",
    )?;
    // The tokenizer's length must fit the text encoder's positions (77).
    let model = hostile_model(&dir, "tokenizer/tokenizer_config.json", |c| {
        c["model_max_length"] = json!(100000)
    })?;
    let err = load(&model).map(drop).map_err(cause);
    config_refused(
        err,
        &model.join("tokenizer/tokenizer_config.json"),
        "model_max_length",
        "at most 77",
    )?;
    // A hostile UNet norm_eps is refused when the model loads, naming the file.
    let model = hostile_model(&dir, "unet/config.json", |c| c["norm_eps"] = json!(-1))?;
    let err = load(&model).map(drop).map_err(cause);
    config_refused(err, &model.join("unet/config.json"), "norm_eps", "above 0")?;
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

// --- library: the same ranges for library users ------------------------------------------

#[test]
fn library_settings_and_sizes_name_their_option() -> Result<()> {
    let bad_eta = DiffusionSettings {
        eta: 1e9,
        ..DiffusionSettings::default()
    };
    ensure!(
        matches!(bad_eta.validate(), Err(Error::InvalidOption { option, .. }) if option == "eta")
    );
    let target = OutputSize::target(TargetSize::Exact {
        width: 200,
        height: 1,
    });
    target.validate()?;
    match target.resolve(10, 10, 4) {
        Err(Error::InvalidOption { option, .. }) => ensure!(option == "target", "{option}"),
        other => anyhow::bail!("{other:?}"),
    }
    Ok(())
}

#[test]
fn a_shard_index_cannot_name_files_outside_its_folder() -> Result<()> {
    let dir = scratch("shards")?;
    let model = hostile_model(&dir, "model_index.json", |_| {})?;
    let unet = model.join("unet");
    std::fs::remove_file(unet.join("diffusion_pytorch_model.safetensors"))?;
    let index = unet.join("diffusion_pytorch_model.safetensors.index.json");
    let opened = diffsr::model_dir::ModelDir::open(&model)?;
    for name in ["../../../../../../etc/passwd", "/dev/zero", "sub/../../x"] {
        std::fs::write(
            &index,
            json!({"weight_map": {"conv_in.weight": name}}).to_string(),
        )?;
        match opened.weights("unet", "diffusion_pytorch_model", false) {
            Err(Error::Config { path, message }) => {
                ensure!(path == index, "{}", path.display());
                ensure!(message.contains(name), "{message}");
            }
            other => anyhow::bail!("{name}: {other:?}"),
        }
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
