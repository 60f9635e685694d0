//! `diffsr upscale` driven through the real binary on the tiny x4 model.

use std::path::PathBuf;
use std::process::{Command, Output};

use anyhow::Result;
use candle_core::{DType, Device};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn scratch(name: &str) -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("diffsr-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn diffsr(args: &[&str]) -> Result<Output> {
    Ok(Command::new(env!("CARGO_BIN_EXE_diffsr"))
        .args(args)
        .output()?)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn upscale_matches_diffusers_from_the_command_line() -> Result<()> {
    let dir = scratch("parity")?;
    let output = dir.join("astronaut-4x.png");
    let model = fixtures().join("tiny-x4-upscaler");
    let input = fixtures().join("images/astronaut-20x16.png");
    let out = diffsr(&[
        "upscale",
        input.to_str().unwrap(),
        "-o",
        output.to_str().unwrap(),
        "--model",
        model.to_str().unwrap(),
        "--prompt",
        "a photo of an astronaut",
        "--steps",
        "5",
        "--guidance",
        "9",
        "--noise-level",
        "20",
        "--seed",
        "0",
    ])?;
    assert!(out.status.success(), "{}", stderr(&out));
    let written = diffsr::image_io::load_rgb8(&output)?;
    assert_eq!((written.width, written.height), (80, 64));
    // The fixture's "default-ddim" case is this exact run in diffusers.
    let references =
        candle_core::safetensors::load(fixtures().join("x4_pipeline.safetensors"), &Device::Cpu)?;
    let reference = references["default-ddim"]
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let worst = written
        .data
        .iter()
        .zip(&reference)
        .map(|(&ours, &theirs)| (ours as f32 - (theirs * 255.0).round()).abs())
        .fold(0f32, f32::max);
    assert!(
        worst <= 1.0,
        "a pixel differs by {worst} levels from diffusers"
    );
    let leftovers: Vec<_> = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".partial"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left behind");
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[test]
fn bad_input_gets_a_clear_message() -> Result<()> {
    let dir = scratch("errors")?;
    let model = fixtures().join("tiny-x4-upscaler");
    let input = fixtures().join("images/chelsea-16x12.png");
    let out_png = dir.join("out.png");
    let (model, input, out_png) = (
        model.to_str().unwrap(),
        input.to_str().unwrap(),
        out_png.to_str().unwrap(),
    );
    let not_image = dir.join("notes.png");
    std::fs::write(&not_image, "not an image")?;
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![
                "upscale",
                "/nonexistent/in.png",
                "-o",
                out_png,
                "--model",
                model,
            ],
            "/nonexistent/in.png",
        ),
        (
            vec![
                "upscale",
                not_image.to_str().unwrap(),
                "-o",
                out_png,
                "--model",
                model,
            ],
            "notes.png",
        ),
        (
            vec![
                "upscale",
                input,
                "-o",
                out_png,
                "--model",
                "/nonexistent/model",
            ],
            "/nonexistent/model",
        ),
        (
            vec!["upscale", input, "-o", input, "--model", model],
            "overwrite the input",
        ),
        (
            vec![
                "upscale",
                input,
                "-o",
                out_png,
                "--model",
                model,
                "--noise-level",
                "400",
            ],
            "noise_level",
        ),
        (
            vec![
                "upscale",
                input,
                "-o",
                "/nonexistent/dir/out.png",
                "--model",
                model,
                "--steps",
                "1",
            ],
            "does not exist",
        ),
        (
            vec![
                "upscale", input, "-o", out_png, "--model", model, "--device", "tpu",
            ],
            "--device tpu",
        ),
        (
            vec![
                "upscale",
                input,
                "-o",
                out_png,
                "--model",
                model,
                "--scheduler",
                "lms",
            ],
            "unknown scheduler `lms`",
        ),
    ];
    for (args, expected) in cases {
        let out = diffsr(&args)?;
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(
            stderr(&out).contains(expected),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    assert!(!dir.join("out.png").exists());
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
