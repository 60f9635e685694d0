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

/// `diffsr upscale IN -o OUT` on the tiny model with one step, plus `extra` flags.
fn upscale_tiny(
    input: &std::path::Path,
    output: &std::path::Path,
    extra: &[&str],
) -> Result<Output> {
    let model = fixtures().join("tiny-x4-upscaler");
    let mut args = vec![
        "upscale",
        input.to_str().unwrap(),
        "-o",
        output.to_str().unwrap(),
        "--model",
        model.to_str().unwrap(),
        "--steps",
        "1",
        "--seed",
        "7",
    ];
    args.extend_from_slice(extra);
    diffsr(&args)
}

#[test]
fn alpha_is_upscaled_and_reattached() -> Result<()> {
    let dir = scratch("alpha")?;
    let input = dir.join("logo.png");
    // Opaque left half, transparent right half.
    image::RgbaImage::from_fn(8, 8, |x, y| {
        image::Rgba([x as u8 * 30, y as u8 * 30, 90, if x < 4 { 255 } else { 0 }])
    })
    .save(&input)?;
    for name in ["logo-4x.png", "logo-4x.webp", "logo-4x.tiff"] {
        let output = dir.join(name);
        let out = upscale_tiny(&input, &output, &[])?;
        assert!(out.status.success(), "{}", stderr(&out));
        let written = image::open(&output)?.to_rgba8();
        assert_eq!(written.dimensions(), (32, 32), "{name}");
        assert_eq!(written.get_pixel(2, 16)[3], 255, "{name}");
        assert_eq!(written.get_pixel(29, 16)[3], 0, "{name}");
    }
    // JPEG has no alpha: dropped with a note.
    let output = dir.join("logo-4x.jpg");
    let out = upscale_tiny(&input, &output, &["--quality", "80"])?;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("alpha"), "{}", stderr(&out));
    assert_eq!(image::open(&output)?.color(), image::ColorType::Rgb8);
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[test]
fn sixteen_bit_and_icc_profile_are_kept() -> Result<()> {
    let dir = scratch("deep")?;
    let input = dir.join("deep.png");
    let mut icc = vec![0u8; 132];
    icc[..4].copy_from_slice(&132u32.to_be_bytes());
    icc[36..40].copy_from_slice(b"acsp");
    {
        let mut info = png::Info::with_size(8, 8);
        info.color_type = png::ColorType::Rgb;
        info.bit_depth = png::BitDepth::Sixteen;
        info.icc_profile = Some(icc.clone().into());
        let data: Vec<u8> = (0..8 * 8 * 3u16)
            .flat_map(|v| (v * 300).to_be_bytes())
            .collect();
        let file = std::fs::File::create(&input)?;
        let mut writer = png::Encoder::with_info(file, info)?.write_header()?;
        writer.write_image_data(&data)?;
        writer.finish()?;
    }
    for name in ["deep-4x.png", "deep-4x.tif"] {
        let output = dir.join(name);
        let out = upscale_tiny(&input, &output, &[])?;
        assert!(out.status.success(), "{}", stderr(&out));
        let loaded = diffsr::image_io::load_image(&output)?;
        assert_eq!(loaded.bit_depth, 16, "{name}");
        assert_eq!(loaded.icc_profile.as_ref(), Some(&icc), "{name}");
        assert_eq!(
            image::open(&output)?.color(),
            image::ColorType::Rgb16,
            "{name}"
        );
    }
    // --format wins over the extension.
    let output = dir.join("deep-4x.out");
    let out = upscale_tiny(&input, &output, &["--format", "webp"])?;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        diffsr::image_io::load_image(&output)?.format,
        image::ImageFormat::WebP
    );
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[test]
fn info_prints_the_parameters_of_an_output() -> Result<()> {
    let dir = scratch("info")?;
    let input = fixtures().join("images/chelsea-16x12.png");
    let output = dir.join("cat-4x.png");
    let out = upscale_tiny(
        &input,
        &output,
        &[
            "--prompt",
            "a cat",
            "--negative-prompt",
            "blurry",
            "--noise-level",
            "30",
        ],
    )?;
    assert!(out.status.success(), "{}", stderr(&out));
    let out = diffsr(&["info", output.to_str().unwrap()])?;
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout)?;
    for expected in [
        "a cat",
        "blurry",
        "tiny-x4-upscaler",
        "seed",
        "7",
        "noise level",
    ] {
        assert!(text.contains(expected), "{expected} missing from:\n{text}");
    }
    let out = diffsr(&["info", "--json", output.to_str().unwrap()])?;
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(json["seed"], 7);
    assert_eq!(json["steps"], 1);
    assert_eq!(json["prompt"], "a cat");
    assert_eq!(json["negative_prompt"], "blurry");
    assert_eq!(json["noise_level"], 30);
    assert_eq!(json["scheduler"], "default");
    assert_eq!(json["diffsr_version"], env!("CARGO_PKG_VERSION"));
    // A PNG without parameters, and a file that is not a PNG.
    let out = diffsr(&["info", input.to_str().unwrap()])?;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no diffsr parameters"),
        "{}",
        stderr(&out)
    );
    let notes = dir.join("notes.txt");
    std::fs::write(&notes, "hello")?;
    let out = diffsr(&["info", notes.to_str().unwrap()])?;
    assert!(!out.status.success());
    assert!(stderr(&out).contains("notes.txt"), "{}", stderr(&out));
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[test]
fn bad_images_get_a_clear_message() -> Result<()> {
    let dir = scratch("bad-images")?;
    let output = dir.join("out.png");
    // Truncated PNG.
    let bytes = std::fs::read(fixtures().join("images/astronaut-20x16.png"))?;
    let truncated = dir.join("truncated.png");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2])?;
    // 1 × 1.
    let tiny = dir.join("one-pixel.png");
    image::RgbImage::new(1, 1).save(&tiny)?;
    // A folder where the input should be.
    let folder = dir.join("folder.png");
    std::fs::create_dir(&folder)?;
    // A decompression bomb: a real 1 × 1 PNG whose header is rewritten to 60000 × 60000.
    let mut bomb_bytes = std::fs::read(&tiny)?;
    bomb_bytes[16..24].copy_from_slice(&[0, 0, 0xea, 0x60, 0, 0, 0xea, 0x60]);
    let crc = crc32(&bomb_bytes[12..29]);
    bomb_bytes[29..33].copy_from_slice(&crc.to_be_bytes());
    let bomb = dir.join("bomb.png");
    std::fs::write(&bomb, &bomb_bytes)?;
    let cases: [(&std::path::Path, &[&str]); 4] = [
        (&truncated, &["truncated.png", "cannot decode"]),
        (&tiny, &["one-pixel.png", "at least 4x4"]),
        (&folder, &["folder.png"]),
        (&bomb, &["bomb.png", "60000x60000", "decompression bomb"]),
    ];
    for (input, expected) in cases {
        let out = upscale_tiny(input, &output, &[])?;
        assert!(!out.status.success(), "{} succeeded", input.display());
        for e in expected {
            assert!(stderr(&out).contains(e), "{e}: {}", stderr(&out));
        }
    }
    // The same file under another spelling is still the input.
    let input = fixtures().join("images/chelsea-16x12.png");
    let same = fixtures().join("images/../images/chelsea-16x12.png");
    let out = upscale_tiny(&input, &same, &[])?;
    assert!(
        stderr(&out).contains("overwrite the input"),
        "{}",
        stderr(&out)
    );
    // Unknown output extension, bad --format and --quality.
    let out = upscale_tiny(&input, &dir.join("out.xyz"), &[])?;
    assert!(stderr(&out).contains("out.xyz"), "{}", stderr(&out));
    let out = upscale_tiny(&input, &output, &["--format", "gif"])?;
    assert!(
        stderr(&out).contains("unknown format `gif`"),
        "{}",
        stderr(&out)
    );
    let out = upscale_tiny(&input, &output, &["--quality", "0"])?;
    assert!(stderr(&out).contains("--quality"), "{}", stderr(&out));
    assert!(!output.exists());
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}
