//! `diffsr upscale` on the GAN engine and `diffsr convert`, through the real binary: the
//! built-in model with no network, `--engine auto`'s fallback and `--engine diffusion`'s
//! refusal, model files of every container, `--scale`, `--denoise`, alpha, and the errors.

#[path = "support/cli.rs"]
mod cli;

use std::path::{Path, PathBuf};
use std::process::Output;

use anyhow::{ensure, Result};
use cli::{diffsr, fixtures, scratch, stderr};

fn photo() -> PathBuf {
    fixtures().join("gan/photos/coffee.png")
}

/// `diffsr upscale PHOTO -o output EXTRA...`.
fn upscale_photo(dir: &Path, output: &Path, extra: &[&str]) -> Result<Output> {
    let input = photo();
    let mut args = vec![
        "upscale",
        input.to_str().unwrap(),
        "-o",
        output.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    diffsr(dir, &args)
}

fn size(path: &Path) -> Result<(u32, u32)> {
    Ok(image::image_dimensions(path)?)
}

#[test]
fn the_built_in_model_runs_with_no_network() -> Result<()> {
    let dir = scratch("builtin")?;
    let out_path = dir.join("coffee-4x.png");
    let out = upscale_photo(&dir, &out_path, &["--engine", "gan"])?;
    ensure!(out.status.success(), "{}", stderr(&out));
    ensure!(size(&out_path)? == (192, 160));
    let info = diffsr(&dir, &["info", out_path.to_str().unwrap(), "--json"])?;
    let info = String::from_utf8_lossy(&info.stdout);
    ensure!(
        info.contains("\"engine\": \"gan\"") && info.contains("realesr-animevideov3"),
        "{info}"
    );
    ensure!(!stderr(&out).contains("warning"), "{}", stderr(&out));
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[test]
fn auto_falls_back_to_gan_with_the_reason_and_diffusion_never_does() -> Result<()> {
    let dir = scratch("fallback")?;
    let out_path = dir.join("out.png");
    let input = photo();
    let args = [
        "upscale",
        input.to_str().unwrap(),
        "-o",
        out_path.to_str().unwrap(),
    ];
    let out = diffsr(&dir, &args)?;
    ensure!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    let warnings: Vec<&str> = err.lines().filter(|l| l.starts_with("warning:")).collect();
    ensure!(warnings.len() == 1, "one warning line: {err}");
    ensure!(
        warnings[0].contains("diffusion cannot run") && warnings[0].contains("127.0.0.1:9"),
        "says why: {err}"
    );
    ensure!(size(&out_path)? == (192, 160));

    let refused = dir.join("refused.png");
    let out = upscale_photo(&dir, &refused, &["--engine", "diffusion"])?;
    ensure!(
        !out.status.success(),
        "--engine diffusion must not fall back"
    );
    ensure!(!refused.exists());
    ensure!(!stderr(&out).contains("falling back"), "{}", stderr(&out));
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[test]
fn a_model_file_picks_the_gan_engine_and_any_scale_is_exact() -> Result<()> {
    let dir = scratch("file")?;
    let model = fixtures().join("gan/srvgg_x2_relu.safetensors");
    let out_path = dir.join("x2.png");
    let out = upscale_photo(&dir, &out_path, &["--model", model.to_str().unwrap()])?;
    ensure!(out.status.success(), "{}", stderr(&out));
    ensure!(size(&out_path)? == (96, 80), "the model's own x2");

    for (scale, want) in [("3", (144, 120)), ("1.5", (72, 60)), ("0.5", (24, 20))] {
        let p = dir.join(format!("s{scale}.png"));
        let out = upscale_photo(&dir, &p, &["--engine", "gan", "--scale", scale])?;
        ensure!(out.status.success(), "{}", stderr(&out));
        ensure!(size(&p)? == want, "--scale {scale}: {:?}", size(&p)?);
    }
    let out = upscale_photo(&dir, &dir.join("bad.png"), &["--scale", "0"])?;
    ensure!(
        !out.status.success() && stderr(&out).contains("scale"),
        "{}",
        stderr(&out)
    );
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[test]
fn denoise_blends_a_general_model_with_its_wdn_twin() -> Result<()> {
    let dir = scratch("denoise")?;
    let general = fixtures().join("gan/srvgg_general.pth");
    let wdn = fixtures().join("gan/srvgg_general_wdn.pth");
    let run = |denoise: &str, name: &str| -> Result<Output> {
        upscale_photo(
            &dir,
            &dir.join(name),
            &[
                "--model",
                general.to_str().unwrap(),
                "--denoise",
                denoise,
                "--denoise-model",
                wdn.to_str().unwrap(),
            ],
        )
    };
    let out = run("0.3", "d03.png")?;
    ensure!(out.status.success(), "{}", stderr(&out));
    let out = run("1", "d1.png")?;
    ensure!(out.status.success(), "{}", stderr(&out));
    let a = image::open(dir.join("d03.png"))?.to_rgb8();
    let b = image::open(dir.join("d1.png"))?.to_rgb8();
    ensure!(a.as_raw() != b.as_raw(), "the strength changes the output");
    let out = run("1.5", "bad.png")?;
    ensure!(
        !out.status.success() && stderr(&out).contains("--denoise"),
        "{}",
        stderr(&out)
    );
    // The built-in model has no -wdn twin.
    let out = upscale_photo(
        &dir,
        &dir.join("x.png"),
        &["--engine", "gan", "--denoise", "0.5"],
    )?;
    ensure!(
        !out.status.success() && stderr(&out).contains("--denoise"),
        "{}",
        stderr(&out)
    );
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[test]
fn alpha_is_kept() -> Result<()> {
    let dir = scratch("alpha")?;
    let input = dir.join("rgba.png");
    let mut rgba = image::RgbaImage::new(20, 14);
    for (x, y, p) in rgba.enumerate_pixels_mut() {
        *p = image::Rgba([
            (x * 12) as u8,
            (y * 18) as u8,
            128,
            if x < 10 { 255 } else { 40 },
        ]);
    }
    rgba.save(&input)?;
    let out_path = dir.join("out.png");
    let out = diffsr(
        &dir,
        &[
            "upscale",
            input.to_str().unwrap(),
            "-o",
            out_path.to_str().unwrap(),
            "--engine",
            "gan",
        ],
    )?;
    ensure!(out.status.success(), "{}", stderr(&out));
    let result = image::open(&out_path)?;
    ensure!(result.color().has_alpha(), "alpha kept");
    let result = result.to_rgba8();
    ensure!(result.dimensions() == (80, 56));
    ensure!(result.get_pixel(2, 2)[3] == 255 && result.get_pixel(77, 50)[3] == 40);
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[test]
fn convert_writes_safetensors_that_upscale_the_same() -> Result<()> {
    let dir = scratch("convert")?;
    let pth = fixtures().join("gan/rrdb_x4_esrgan_old.pth");
    let converted = dir.join("rrdb.safetensors");
    let out = diffsr(
        &dir,
        &[
            "convert",
            pth.to_str().unwrap(),
            converted.to_str().unwrap(),
        ],
    )?;
    ensure!(out.status.success(), "{}", stderr(&out));
    ensure!(stderr(&out).contains("RRDBNet x4"), "{}", stderr(&out));
    let mut images = Vec::new();
    for (model, name) in [(&pth, "from-pth.png"), (&converted, "from-st.png")] {
        let p = dir.join(name);
        let out = upscale_photo(&dir, &p, &["--model", model.to_str().unwrap()])?;
        ensure!(out.status.success(), "{}", stderr(&out));
        images.push(image::open(&p)?.to_rgb8().into_raw());
    }
    ensure!(images[0] == images[1], "same weights, same image");
    let out = diffsr(
        &dir,
        &[
            "convert",
            pth.to_str().unwrap(),
            dir.join("x.pth").to_str().unwrap(),
        ],
    )?;
    ensure!(!out.status.success() && stderr(&out).contains(".safetensors"));
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[test]
fn bad_model_files_are_named() -> Result<()> {
    let dir = scratch("bad")?;
    for (file, says) in [
        ("gan/unknown_arch.safetensors", "not a known architecture"),
        ("gan/not_a_state_dict.pth", "no state dict"),
    ] {
        let model = fixtures().join(file);
        let out = upscale_photo(
            &dir,
            &dir.join("o.png"),
            &["--model", model.to_str().unwrap()],
        )?;
        let err = stderr(&out);
        ensure!(!out.status.success(), "{file} must fail");
        ensure!(
            err.contains(file.rsplit('/').next().unwrap()) && err.contains(says),
            "{err}"
        );
    }
    ensure!(!dir.join("o.png").exists());
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

/// `--pre-pad 0 --tile 0` runs the network on the image as it is: the file holds the network's
/// own output (the library's `GanNetwork::forward`, quantised), which the default pre-pad
/// changes only within the network's receptive radius of the borders. Out-of-range values and
/// the diffusion engine are refused with exit 2.
#[test]
fn pre_pad_zero_gives_the_networks_own_output() -> Result<()> {
    use candle_core::{DType, Device, Tensor};
    use diffsr::gan::{GanModel, GanNetwork};

    let dir = scratch("prepad")?;
    let model_path = fixtures().join("gan/srvgg_x4_prelu.pth");
    let model = model_path.to_str().unwrap();
    let (bare, padded) = (dir.join("bare.png"), dir.join("padded.png"));
    for (out_path, extra) in [(&bare, &["--pre-pad", "0"][..]), (&padded, &[][..])] {
        let args = [&["--model", model, "--tile", "0"][..], extra].concat();
        let out = upscale_photo(&dir, out_path, &args)?;
        ensure!(out.status.success(), "{}", stderr(&out));
    }
    let read = |p: &Path| -> Result<image::RgbImage> { Ok(image::open(p)?.to_rgb8()) };
    let (bare, padded, photo) = (read(&bare)?, read(&padded)?, read(&photo())?);

    let loaded = GanModel::load(&model_path)?;
    let net = GanNetwork::new(
        loaded.arch(),
        loaded.weights(),
        DType::F32,
        &Device::Cpu,
        &model_path,
    )?;
    let (w, h) = (photo.width() as usize, photo.height() as usize);
    let pixels: Vec<f32> = photo
        .as_raw()
        .iter()
        .map(|&v| f32::from(v) / 255.0)
        .collect();
    let x = Tensor::from_vec(pixels, (h, w, 3), &Device::Cpu)?
        .permute((2, 0, 1))?
        .unsqueeze(0)?;
    let y = net
        .forward(&x)?
        .squeeze(0)?
        .permute((1, 2, 0))?
        .clamp(0f32, 1f32)?;
    let want: Vec<f32> = y.flatten_all()?.to_vec1()?;
    let worst = bare
        .as_raw()
        .iter()
        .zip(&want)
        .map(|(&got, &v)| (f32::from(got) - (v * 255.0).round()).abs())
        .fold(0f32, f32::max);
    ensure!(
        worst <= 1.0,
        "--pre-pad 0 --tile 0 is {worst}/255 from the network's output"
    );

    // The default pre-pad only changes what sees the border.
    let s = loaded.arch().scale();
    let margin = (loaded.arch().context_radius() + 1) * s;
    let (ow, oh) = bare.dimensions();
    let (mut inner_worst, mut border_worst) = (0u8, 0u8);
    for (x, y, p) in bare.enumerate_pixels() {
        let inner = x as usize >= margin
            && y as usize >= margin
            && (x as usize) < ow as usize - margin
            && (y as usize) < oh as usize - margin;
        let q = padded.get_pixel(x, y);
        let diff =
            p.0.iter()
                .zip(q.0)
                .map(|(a, b)| a.abs_diff(b))
                .max()
                .unwrap_or(0);
        let worst = if inner {
            &mut inner_worst
        } else {
            &mut border_worst
        };
        *worst = (*worst).max(diff);
    }
    // Away from the border only the float rounding of a differently sized input remains.
    ensure!(
        inner_worst <= 1,
        "differs by {inner_worst}/255 away from the border"
    );
    ensure!(
        border_worst > 1,
        "the default pre-pad changed the border by only {border_worst}/255"
    );
    for (extra, says) in [
        (&["--model", model, "--pre-pad", "513"][..], "--pre-pad"),
        (
            &["--engine", "diffusion", "--pre-pad", "0"][..],
            "--pre-pad",
        ),
    ] {
        let out = upscale_photo(&dir, &dir.join("x.png"), extra)?;
        ensure!(out.status.code() == Some(2), "{extra:?}: {}", stderr(&out));
        ensure!(stderr(&out).contains(says), "{extra:?}: {}", stderr(&out));
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

/// `diffsr models inspect` reads a model file's architecture and sizes from its weights alone;
/// a file that is no model is one line naming it.
#[test]
fn models_inspect_reports_what_the_weights_say() -> Result<()> {
    let dir = scratch("inspect")?;
    let file = fixtures().join("gan/rrdb_x4.safetensors");
    let out = diffsr(
        &dir,
        &["models", "inspect", file.to_str().unwrap(), "--json"],
    )?;
    ensure!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let model = diffsr::gan::GanModel::load(&file)?;
    let parameters: usize = model.weights().values().map(|t| t.elem_count()).sum();
    ensure!(v["architecture"] == "RRDBNet" && v["scale"] == 4, "{v}");
    ensure!(v["parameters"] == parameters && v["tensors"] == 72, "{v}");
    ensure!(v["stored_dtypes"] == serde_json::json!(["f32"]), "{v}");
    ensure!(v["tile_overlap"].as_u64() > Some(0), "{v}");
    ensure!(
        v["hyperparameters"]
            .as_str()
            .unwrap_or("")
            .contains("num_block: 2"),
        "{v}"
    );

    let text = diffsr(&dir, &["models", "inspect", file.to_str().unwrap()])?;
    ensure!(String::from_utf8_lossy(&text.stdout).contains("RRDBNet x4"));

    let not_a_model = fixtures().join("gan/not_a_state_dict.pth");
    let out = diffsr(&dir, &["models", "inspect", not_a_model.to_str().unwrap()])?;
    ensure!(!out.status.success() && stderr(&out).contains("not_a_state_dict.pth"));
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

/// `--model-scale` sets the factor of a model whose weights hold none (SRCNN) and is refused
/// for a model whose weights fix it.
#[test]
fn model_scale_sets_srcnn_and_is_refused_where_the_weights_decide() -> Result<()> {
    let dir = scratch("model-scale")?;
    let srcnn = fixtures().join("zoo/srcnn/srcnn_955.pth");
    let (w, h) = size(&photo())?;
    for (scale, want) in [(None, 2), (Some("3"), 3)] {
        let out_path = dir.join(format!("srcnn-{want}.png"));
        let mut args = vec!["--model", srcnn.to_str().unwrap()];
        if let Some(s) = scale {
            args.extend(["--model-scale", s]);
        }
        let out = upscale_photo(&dir, &out_path, &args)?;
        ensure!(out.status.success(), "{}", stderr(&out));
        ensure!(
            size(&out_path)? == (w * want, h * want),
            "{:?}",
            size(&out_path)?
        );
    }
    let rrdb = fixtures().join("gan/rrdb_x4.safetensors");
    let out = upscale_photo(
        &dir,
        &dir.join("x.png"),
        &["--model", rrdb.to_str().unwrap(), "--model-scale", "2"],
    )?;
    ensure!(out.status.code() == Some(2), "{}", stderr(&out));
    ensure!(stderr(&out).contains("--model-scale"), "{}", stderr(&out));
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

/// `diffsr models architectures` lists every registry entry with the tensors it is recognised by.
#[test]
fn models_architectures_lists_the_registry() -> Result<()> {
    let dir = scratch("architectures")?;
    let out = diffsr(&dir, &["models", "architectures"])?;
    ensure!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    for spec in diffsr::gan::arch::REGISTRY {
        ensure!(
            text.contains(spec.name()) && text.contains(spec.expected_keys()),
            "{text}"
        );
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
