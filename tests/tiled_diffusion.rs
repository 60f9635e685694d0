//! Large pictures: tiled denoising and tiled VAE decoding on the tiny real-architecture model.
//! One tile covering the latent is exactly the untiled (reference) run; several tiles give
//! the same image whatever the tile batch, the VAE's tiles share GroupNorm statistics, and the
//! seams are measured on a real photo: the gradient energy across tile borders is no larger
//! than inside the tiles.

mod common;

use std::ops::ControlFlow;
use std::path::PathBuf;

use anyhow::{ensure, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use diffsr::image_io::load_rgb8;
use diffsr::models::layers::{GroupNormMode, GroupNormStats};
use diffsr::models::vae::{AutoencoderKL, AutoencoderKLConfig, VaeTiling};
use diffsr::pipeline::{DiffusionSettings, LoadOptions, TilingOptions, UpscalePipeline};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn photo() -> Result<Tensor> {
    let image = load_rgb8(&fixtures().join("gan/photos/chelsea.png"))?;
    Ok(image.to_tensor(&Device::Cpu)?)
}

fn pipeline(tiling: TilingOptions) -> Result<UpscalePipeline> {
    Ok(UpscalePipeline::load(
        &fixtures().join("tiny-x4-upscaler"),
        &LoadOptions {
            tiling,
            ..LoadOptions::default()
        },
    )?)
}

fn options() -> DiffusionSettings {
    DiffusionSettings {
        prompt: "a cat".into(),
        steps: 4,
        seed: 7,
        noise_level: 30,
        ..DiffusionSettings::default()
    }
}

fn run(p: &UpscalePipeline, image: &Tensor) -> Result<Tensor> {
    Ok(p.upscale_tensor(image, &options(), &mut |_| ControlFlow::Continue(()))?)
}

fn untiled() -> TilingOptions {
    TilingOptions {
        latent_tile: 0,
        vae: VaeTiling {
            tile: 0,
            ..VaeTiling::default()
        },
        ..TilingOptions::default()
    }
}

/// Mean |horizontal gradient| of the output's columns inside `seams` (output x ranges) and
/// elsewhere.
fn column_gradients(image: &Tensor, seams: &[(usize, usize)]) -> Result<(f64, f64)> {
    let (_, _, _, w) = image.dims4()?;
    let dx = (image.narrow(3, 1, w - 1)? - image.narrow(3, 0, w - 1)?)?.abs()?;
    let per_column: Vec<f32> = dx
        .mean_keepdim(2)?
        .mean_keepdim(1)?
        .flatten_all()?
        .to_vec1()?;
    let (mut border, mut nb, mut inside, mut ni) = (0.0, 0, 0.0, 0);
    for (x, g) in per_column.iter().enumerate() {
        if seams.iter().any(|&(a, b)| x >= a && x < b) {
            border += *g as f64;
            nb += 1;
        } else {
            inside += *g as f64;
            ni += 1;
        }
    }
    Ok((border / nb.max(1) as f64, inside / ni.max(1) as f64))
}

#[test]
fn one_tile_is_the_untiled_reference_run() -> Result<()> {
    let image = photo()?; // 48x40: the latent is 48x40 too
    let whole = run(&pipeline(untiled())?, &image)?;
    let covering = TilingOptions {
        latent_tile: 48,
        vae: VaeTiling {
            tile: 48,
            ..VaeTiling::default()
        },
        ..TilingOptions::default()
    };
    let same = run(&pipeline(covering)?, &image)?;
    common::compare("one covering tile", &same, &whole, 0.0)
}

#[test]
fn tiles_give_one_image_whatever_the_batch_and_no_seams() -> Result<()> {
    let image = photo()?;
    let tiled = |batch: usize| TilingOptions {
        latent_tile: 24,
        latent_overlap: 8,
        unet_batch: batch,
        vae: VaeTiling {
            tile: 0,
            ..VaeTiling::default()
        },
    };
    let p1 = pipeline(tiled(1))?;
    ensure!(
        p1.unet_batches_per_step(40, 48)? == 6,
        "3x2 tiles, one at a time"
    );
    let one = run(&p1, &image)?;
    let p3 = pipeline(tiled(3))?;
    ensure!(p3.unet_batches_per_step(40, 48)? == 2);
    let three = run(&p3, &image)?;
    common::compare("tile batch 1 vs 3", &three, &one, 1e-5)?;
    let whole = run(&pipeline(untiled())?, &image)?;
    let diff = (&one - &whole)?.abs()?.mean_all()?.to_scalar::<f32>()?;
    println!("tiled vs untiled: mean |Δ| {diff:.4}");
    ensure!(diff.is_finite() && diff > 0.0, "tiling is in effect");
    // Tiles start at 0, 12, 24 latent px (overlap >= 8); in the output (x4) the blends
    // cover [48, 96) and [96, 144) around the borders at 12+24... measure the overlap zones.
    let plan = diffsr::tiling::plan_tiles(
        48,
        40,
        &diffsr::tiling::TileOptions {
            tile: 24,
            overlap: 8,
            ..Default::default()
        },
    )?;
    let mut seams = Vec::new();
    let mut xs: Vec<usize> = plan.tiles().iter().map(|t| t.x).collect();
    xs.sort_unstable();
    xs.dedup();
    for pair in xs.windows(2) {
        // The overlap of two neighbours is [next start, previous end).
        seams.push((4 * pair[1], 4 * (pair[0] + 24)));
    }
    let (border, inside) = column_gradients(&one, &seams)?;
    let (border_ref, inside_ref) = column_gradients(&whole, &seams)?;
    println!(
        "gradient energy: tiled border {border:.4} inside {inside:.4}; untiled border \
         {border_ref:.4} inside {inside_ref:.4}"
    );
    ensure!(border <= inside * 1.05, "seams show: {border} vs {inside}");
    Ok(())
}

fn vae() -> Result<AutoencoderKL> {
    let dir = fixtures().join("tiny-x4-upscaler/vae");
    let config = AutoencoderKLConfig::from_file(&dir.join("config.json"))?;
    let weights = dir.join("diffusion_pytorch_model.safetensors");
    // SAFETY: the weights file is not modified while the test runs.
    let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[weights], DType::F32, &Device::Cpu)? };
    Ok(AutoencoderKL::new(&config, vb)?)
}

/// A smooth latent with structure, like a real one (values O(1)).
fn latent(h: usize, w: usize) -> Result<Tensor> {
    let mut v = Vec::with_capacity(4 * h * w);
    for c in 0..4 {
        for y in 0..h {
            for x in 0..w {
                v.push(((x as f32 * 0.21 + c as f32).sin() + (y as f32 * 0.17).cos()) * 0.8);
            }
        }
    }
    Ok(Tensor::from_vec(v, (1, 4, h, w), &Device::Cpu)?)
}

#[test]
fn replayed_group_norm_statistics_reproduce_the_decode() -> Result<()> {
    let vae = vae()?;
    let z = latent(20, 24)?;
    let direct = vae.decode(&z)?;
    let mut stats = GroupNormStats::default();
    let recorded = vae.decode_with_stats(&z, &mut GroupNormMode::record(&mut stats))?;
    ensure!(!stats.is_empty(), "the decoder has GroupNorms");
    common::compare("recording pass", &recorded, &direct, 1e-5)?;
    let replayed = vae.decode_with_stats(&z, &mut GroupNormMode::replay(&stats))?;
    common::compare("replayed statistics", &replayed, &direct, 1e-5)?;
    // Replaying into a different network (the encoder) is refused, not silently wrong.
    let image = Tensor::zeros((1, 3, 16, 16), DType::F32, &Device::Cpu)?;
    let into_encoder = vae.encode_with_stats(&image, &mut GroupNormMode::replay(&stats));
    ensure!(into_encoder.map(|posterior| posterior.mode()).is_err());
    Ok(())
}

/// The mean signed difference to `whole` in each of `cols` × `rows` equal regions: a tone
/// shift between tiles shows as a spread of these.
fn region_shifts(t: &Tensor, whole: &Tensor, cols: usize, rows: usize) -> Result<Vec<f32>> {
    let (_, _, h, w) = t.dims4()?;
    let d = (t - whole)?;
    let mut out = Vec::new();
    for r in 0..rows {
        for c in 0..cols {
            let region = d
                .narrow(2, r * h / rows, h / rows)?
                .narrow(3, c * w / cols, w / cols)?;
            out.push(region.mean_all()?.to_scalar::<f32>()?);
        }
    }
    Ok(out)
}

fn spread(v: &[f32]) -> f32 {
    let max = v.iter().copied().fold(f32::MIN, f32::max);
    let min = v.iter().copied().fold(f32::MAX, f32::min);
    max - min
}

#[test]
fn tiled_vae_decode_keeps_one_tone_and_no_seams() -> Result<()> {
    let vae = vae()?;
    let z = latent(40, 48)?;
    let whole = vae.decode(&z)?;
    let tiling = VaeTiling {
        tile: 24,
        overlap: 8,
        batch: 1,
    };
    let mut calls = 0;
    let tiled = vae.decode_tiled(&z, &tiling, &mut |_, total| {
        calls = total;
        ControlFlow::Continue(())
    })?;
    ensure!(calls == 6, "3x2 tiles, got {calls}");
    ensure!(tiled.dims() == whole.dims());
    // The same tiles, each normalised by its own statistics (naive tiling).
    let options = diffsr::tiling::TileOptions {
        tile: 24,
        overlap: 8,
        scale: 4,
        ..Default::default()
    };
    let naive = diffsr::tiling::run_tiled(&z, &options, &mut |t| vae.decode(t), &mut |_, _| {
        ControlFlow::Continue(())
    })?;
    let shared = spread(&region_shifts(&tiled, &whole, 3, 2)?);
    let own = spread(&region_shifts(&naive, &whole, 3, 2)?);
    println!("tone shift spread between regions: shared statistics {shared:.4}, own {own:.4}");
    ensure!(
        shared < own,
        "shared statistics must even out the tiles' tones"
    );
    // Batching tiles changes nothing.
    let batched = vae.decode_tiled(&z, &VaeTiling { batch: 4, ..tiling }, &mut |_, _| {
        ControlFlow::Continue(())
    })?;
    common::compare("VAE tile batch 4 vs 1", &batched, &tiled, 1e-5)?;
    Ok(())
}
