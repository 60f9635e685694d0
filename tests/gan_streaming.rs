//! Issue 14, class 9, the preferred fix: a GAN output too large to hold is streamed to its
//! PNG in rows (tiles run band by band into a rolling accumulator) instead of being refused.
//! The streamed rows equal the held result bit for bit (same tiles, same weights, same order
//! of additions); the streamed PNG holds the held one's pixels and text chunks; the plan
//! bounds what is held; what cannot stream (other formats, other sizes, a colour fix, a
//! translucent alpha) is refused with the reason.

#[path = "support/cli.rs"]
mod cli;

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};
use cli::{diffsr, scratch, stderr};
use diffsr::gan::{GanModel, GanOptions, GanUpscaler};
use diffsr::image_io::{load_image, read_png_text, stream_result, GenerationInfo, Rgb8, RgbF32};
use diffsr::upscaler::{Streaming, UpscaleParams, UpscaleRequest, Upscaler};
use image::{DynamicImage, ImageBuffer, Rgb, Rgba};

fn fixture(name: &str) -> PathBuf {
    cli::fixtures().join("gan").join(name)
}

/// A deterministic textured value (edges and smooth parts, so tile seams would show).
fn texture(x: usize, y: usize, c: usize) -> u8 {
    let noise = (x * 7919 + y * 104_729 + c * 31).wrapping_mul(2_654_435_761) >> 7;
    if (x / 9 + y / 7) % 3 == 0 {
        ((x * 3 + y * 2 + c * 40) % 256) as u8
    } else {
        (noise % 256) as u8
    }
}

fn textured(width: usize, height: usize) -> Rgb8 {
    let mut data = Vec::with_capacity(width * height * 3);
    for y in 0..height {
        for x in 0..width {
            for c in 0..3 {
                data.push(texture(x, y, c));
            }
        }
    }
    Rgb8::new(data, width, height).unwrap()
}

fn upscaler(model: &str, tile: usize) -> Result<GanUpscaler> {
    let model = GanModel::load(&fixture(model))?;
    Ok(GanUpscaler::new(
        &model,
        &GanOptions {
            tile: Some(tile),
            max_memory: Some(1 << 30),
            ..GanOptions::default()
        },
    )?)
}

fn streamed_rows(upscaler: &GanUpscaler, image: &Rgb8) -> Result<RgbF32> {
    let params = UpscaleParams {
        stream: Streaming::Always,
        ..UpscaleParams::default()
    };
    let mut data = Vec::new();
    let mut rows = 0;
    let (width, height) = upscaler.upscale_rows(
        UpscaleRequest::new(image, &params, &mut |_| ControlFlow::Continue(())),
        &mut |row| {
            data.extend_from_slice(row);
            rows += 1;
            Ok(())
        },
    )?;
    ensure!(rows == height, "{rows} rows for {height}");
    Ok(RgbF32 {
        data,
        width,
        height,
    })
}

#[test]
fn streamed_rows_equal_the_held_result_bit_for_bit() -> Result<()> {
    // An x4 compact net, an x2 RRDB (pixel-unshuffled: tiles aligned to 2) and a grey x4
    // RRDB, each over several bands and columns of overlapping tiles.
    for (model, tile, (width, height)) in [
        ("srvgg_x4_leakyrelu.safetensors", 48, (150, 110)),
        ("rrdb_x2.pth", 176, (380, 330)),
        ("rrdb_x4_grey.pth", 96, (130, 180)),
    ] {
        let upscaler = upscaler(model, tile)?;
        let image = textured(width, height);
        let plan = upscaler.memory_plan_streaming(width, height, Streaming::Always)?;
        ensure!(plan.streamed.is_some(), "{model}: {plan:?}");
        let (columns, rows) = (
            upscaler.tile_count(width, 1)?,
            upscaler.tile_count(1, height)?,
        );
        ensure!(rows >= 2 && columns >= 2, "{model}: {columns}x{rows} tiles");
        let held = upscaler.upscale(UpscaleRequest::new(
            &image,
            &UpscaleParams::default(),
            &mut |_| ControlFlow::Continue(()),
        ))?;
        let streamed = streamed_rows(&upscaler, &image)?;
        ensure!(streamed.size() == held.size(), "{model}: size");
        let same = held
            .data
            .iter()
            .zip(&streamed.data)
            .all(|(a, b)| a.to_bits() == b.to_bits());
        ensure!(same, "{model}: streamed values differ from the held ones");
    }
    Ok(())
}

/// Writes `image` (any colour type) as a PNG.
fn write_png(path: &Path, image: DynamicImage) -> Result<()> {
    image.save(path)?;
    Ok(())
}

fn rgb_png(path: &Path, width: u32, height: u32) -> Result<()> {
    let buffer = ImageBuffer::<Rgb<u8>, _>::from_fn(width, height, |x, y| {
        Rgb([0, 1, 2].map(|c| texture(x as usize, y as usize, c)))
    });
    write_png(path, DynamicImage::ImageRgb8(buffer))
}

/// A 16-bit RGBA PNG whose alpha is `alpha` everywhere.
fn rgba16_png(path: &Path, width: u32, height: u32, alpha: u16) -> Result<()> {
    let buffer = ImageBuffer::<Rgba<u16>, _>::from_fn(width, height, |x, y| {
        let [r, g, b] = [0, 1, 2].map(|c| u16::from(texture(x as usize, y as usize, c)) * 257);
        Rgba([r, g, b, alpha])
    });
    write_png(path, DynamicImage::ImageRgba16(buffer))
}

fn gan_args<'a>(input: &'a str, output: &'a str, model: &'a str, budget: &'a str) -> Vec<&'a str> {
    vec![
        "upscale",
        input,
        "-o",
        output,
        "--engine",
        "gan",
        "--model",
        model,
        "--device",
        "cpu",
        "--max-memory",
        budget,
        "--tile",
        "64",
    ]
}

#[test]
fn a_streamed_png_equals_the_held_png() -> Result<()> {
    let dir = scratch("png")?;
    let model = fixture("srvgg_x4_leakyrelu.safetensors");
    let model = model.to_str().unwrap();
    for (name, make) in [
        (
            "rgb8",
            &(|p: &Path| rgb_png(p, 200, 150)) as &dyn Fn(&Path) -> Result<()>,
        ),
        // An opaque alpha streams as a constant opaque channel: an RGBA output, 16-bit kept.
        ("rgba16", &|p: &Path| rgba16_png(p, 200, 150, u16::MAX)),
    ] {
        let input = dir.join(format!("{name}.png"));
        make(&input)?;
        let held = dir.join(format!("{name}-held.png"));
        let streamed = dir.join(format!("{name}-streamed.png"));
        let input_arg = input.to_str().unwrap();
        // 1G holds the 800x600 output; 16M does not (it needs about 40 MiB held), but the
        // streamed run fits.
        let out = diffsr(
            &dir,
            &gan_args(input_arg, held.to_str().unwrap(), model, "1G"),
        )?;
        ensure!(out.status.success(), "{name} held: {}", stderr(&out));
        ensure!(!stderr(&out).contains("streamed"), "{}", stderr(&out));
        let out = diffsr(
            &dir,
            &gan_args(input_arg, streamed.to_str().unwrap(), model, "16M"),
        )?;
        let err = stderr(&out);
        ensure!(out.status.success(), "{name} streamed: {err}");
        ensure!(err.contains("output streamed to disk in rows"), "{err}");
        let (a, b) = (image::open(&held)?, image::open(&streamed)?);
        ensure!(
            a.color() == b.color(),
            "{name}: {:?} {:?}",
            a.color(),
            b.color()
        );
        ensure!(a.width() == 800 && a.height() == 600 && b.width() == 800);
        ensure!(a.as_bytes() == b.as_bytes(), "{name}: pixels differ");
        ensure!(
            read_png_text(&held)? == read_png_text(&streamed)?,
            "{name}: text chunks differ"
        );
        // No temporary file left beside the output.
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?.file_name();
            ensure!(
                !entry.to_string_lossy().contains("partial"),
                "left {entry:?}"
            );
        }
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[test]
fn the_streamed_plan_holds_a_band_not_the_output() -> Result<()> {
    let model = GanModel::load(&fixture("srvgg_x4_leakyrelu.safetensors"))?;
    let budget = 256u64 << 20;
    let upscaler = GanUpscaler::new(
        &model,
        &GanOptions {
            max_memory: Some(budget),
            ..GanOptions::default()
        },
    )?;
    // 2048² makes 8192²: 768 MiB of f32 output, over the 256 MiB budget.
    let err = upscaler.memory_plan(2048, 2048).unwrap_err().to_string();
    ensure!(err.contains("stream to disk in rows"), "{err}");
    let plan = upscaler.memory_plan_streaming(2048, 2048, Streaming::WhenNeeded)?;
    let rows = plan.streamed.context("the plan streams")?;
    let estimate = plan.estimate;
    ensure!(estimate.peak() <= budget, "{plan:?}");
    // One band: the padded output width times one tile's output height, f32 RGB.
    let padded_width = (2048 + 2 * 10) * 4;
    ensure!(rows == plan.tile * 4, "{rows} rows for tile {}", plan.tile);
    ensure!(
        estimate.output == (padded_width * rows * 12) as u64,
        "{plan:?}"
    );
    ensure!(estimate.output < 8192 * 8192 * 12 / 8, "{plan:?}");
    ensure!(
        plan.describe(budget)
            .contains("output streamed to disk in rows"),
        "{}",
        plan.describe(budget)
    );
    // Held when it fits, even when streaming is allowed.
    let small = upscaler.memory_plan_streaming(256, 256, Streaming::WhenNeeded)?;
    ensure!(small.streamed.is_none(), "{small:?}");
    Ok(())
}

#[test]
fn what_cannot_stream_is_refused_saying_what_would() -> Result<()> {
    let dir = scratch("refused")?;
    let model = fixture("srvgg_x4_leakyrelu.safetensors");
    let model = model.to_str().unwrap();
    let input = dir.join("in.png");
    rgb_png(&input, 200, 150)?;
    let input_arg = input.to_str().unwrap();
    let jpeg = dir.join("out.jpg");
    let png = dir.join("out.png");
    let cases: [(&str, &Path, &[&str]); 4] = [
        ("jpeg", &jpeg, &[]),
        ("scale 3", &png, &["--scale", "3"]),
        ("colour fix", &png, &["--color-fix", "wavelet"]),
        ("two passes", &png, &["--scale", "8"]),
    ];
    for (name, output, extra) in cases {
        let mut args = gan_args(input_arg, output.to_str().unwrap(), model, "16M");
        args.extend_from_slice(extra);
        let out = diffsr(&dir, &args)?;
        let err = stderr(&out);
        ensure!(
            out.status.code() == Some(2),
            "{name}: exit {:?}: {err}",
            out.status
        );
        ensure!(
            err.contains("--max-memory is 16 MiB")
                && err.contains("at the model's own factor (x4) without --color-fix would stream"),
            "{name}: {err}"
        );
        ensure!(!output.exists(), "{name}: wrote {}", output.display());
    }
    // A translucent alpha channel cannot be resampled row by row.
    let alpha = dir.join("alpha.png");
    rgba16_png(&alpha, 200, 150, 30_000)?;
    let out = diffsr(
        &dir,
        &gan_args(alpha.to_str().unwrap(), png.to_str().unwrap(), model, "16M"),
    )?;
    let err = stderr(&out);
    ensure!(!out.status.success(), "{err}");
    ensure!(
        err.contains("alpha.png") && err.contains("alpha channel") && err.contains("streamed"),
        "{err}"
    );
    ensure!(!err.contains("panicked"), "{err}");
    ensure!(!png.exists());
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[test]
fn a_failed_stream_leaves_no_file() -> Result<()> {
    let dir = scratch("failed")?;
    let input = dir.join("in.png");
    rgb_png(&input, 20, 10)?;
    let loaded = load_image(&input)?;
    let output = dir.join("out.png");
    let result = stream_result(
        &output,
        &loaded,
        (80, 40),
        None,
        GenerationInfo::default(),
        &mut |write_row| {
            for _ in 0..5 {
                write_row(&[0.5; 240])?;
            }
            Err(diffsr::Error::Cancelled)
        },
    );
    ensure!(
        matches!(result, Err(diffsr::Error::Cancelled)),
        "{result:?}"
    );
    ensure!(!output.exists());
    ensure!(
        std::fs::read_dir(&dir)?.count() == 1,
        "a temporary file was left"
    );
    // A producer that stops short is an error too, not a truncated file.
    let result = stream_result(
        &output,
        &loaded,
        (80, 40),
        None,
        GenerationInfo::default(),
        &mut |write_row| {
            write_row(&[0.5; 240])?;
            Ok((80, 40))
        },
    );
    ensure!(result.is_err() && !output.exists(), "{result:?}");
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
