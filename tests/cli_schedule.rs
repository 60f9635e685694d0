//! `diffsr schedulers` and `diffsr schedule` driven through the real binary.

use std::process::{Command, Output};

use anyhow::Result;

fn diffsr(args: &[&str]) -> Result<Output> {
    Ok(Command::new(env!("CARGO_BIN_EXE_diffsr"))
        .args(args)
        .output()?)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn lists_every_solver() -> Result<()> {
    let out = diffsr(&["schedulers"])?;
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout)?;
    for name in [
        "ddim",
        "ddpm",
        "euler",
        "euler-a",
        "dpmpp-2m",
        "dpmpp-2m-karras",
        "dpmpp-2m-sde",
        "unipc",
    ] {
        assert!(
            text.lines()
                .any(|l| l.split_whitespace().next() == Some(name)),
            "{name} missing from:\n{text}"
        );
    }
    Ok(())
}

#[test]
fn schedule_json_is_the_x4_upscaler_schedule() -> Result<()> {
    let out = diffsr(&["schedule", "--scheduler", "ddim", "--steps", "4", "--json"])?;
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(
        v["timesteps"],
        serde_json::json!([751.0, 501.0, 251.0, 1.0])
    );
    assert_eq!(v["diffusers_class"], "DDIMScheduler");
    assert_eq!(v["init_noise_sigma"], 1.0);
    Ok(())
}

#[test]
fn schedule_reads_a_config_file() -> Result<()> {
    let dir = std::env::temp_dir().join(format!("diffsr-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("scheduler_config.json");
    std::fs::write(
        &path,
        r#"{"_class_name": "PNDMScheduler", "beta_start": 0.00085, "beta_end": 0.012,
            "beta_schedule": "scaled_linear", "steps_offset": 1, "timestep_spacing": "trailing",
            "lambda_min_clipped": -Infinity}"#,
    )?;
    let out = diffsr(&[
        "schedule",
        "--scheduler",
        "euler",
        "--steps",
        "4",
        "--json",
        "--config",
        path.to_str().unwrap(),
    ])?;
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(
        v["timesteps"],
        serde_json::json!([999.0, 749.0, 499.0, 249.0])
    );
    // Trailing spacing starts at the last training step, so σ₀ is SD's σ_max.
    let sigma0 = v["sigmas"][0].as_f64().unwrap();
    assert!((sigma0 - 14.614647).abs() < 1e-5, "{sigma0}");
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[test]
fn bad_input_is_named() -> Result<()> {
    let out = diffsr(&["schedule", "--scheduler", "heun"])?;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("unknown scheduler `heun`"),
        "{}",
        stderr(&out)
    );

    let out = diffsr(&["schedule", "--steps", "0"])?;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("num_inference_steps"),
        "{}",
        stderr(&out)
    );

    let out = diffsr(&["schedule", "--steps", "1001"])?;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("1000 training timesteps"),
        "{}",
        stderr(&out)
    );

    let out = diffsr(&["schedule", "--config", "/nonexistent/scheduler_config.json"])?;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("/nonexistent/scheduler_config.json"),
        "{}",
        stderr(&out)
    );
    Ok(())
}
