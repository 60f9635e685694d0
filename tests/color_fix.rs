//! The colour fix (`--color-fix wavelet|adain|none`) against a PyTorch transcription of
//! StableSR's `adaptive_instance_normalization` / `wavelet_reconstruction`
//! (`scripts/fixtures/color_fix.py`, float64 references of float32 inputs), and its properties:
//! identity, AdaIN's statistics, the wavelet fix keeping the result's detail, a colour cast
//! pulled back, `none`, and the errors.
//!
//! Tolerances (max absolute difference, images in [0, 1]): 1e-5 where the source already has the
//! result's size (f32 rounding of a few sums and blurs; measured <= 2e-7 on the CPU), 1e-4 where the source
//! goes through the bicubic resize too (the weights are rounded to f32 and the 4 × 4 taps
//! summed in another order than torch; measured <= 2e-7 as well, the bound leaves room for other
//! backends' kernels).

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{ensure, Context, Result};
use candle_core::{DType, Device, Tensor};
use diffsr::color_fix::{apply_color_fix, bicubic_resize, ColorFix};

const SAME_SIZE_TOL: f32 = 1e-5;
const RESIZE_TOL: f32 = 1e-4;

fn fixtures() -> Result<HashMap<String, Tensor>> {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/color_fix.safetensors");
    Ok(candle_core::safetensors::load(path, &Device::Cpu)?)
}

fn get<'a>(t: &'a HashMap<String, Tensor>, key: &str) -> Result<&'a Tensor> {
    t.get(key).with_context(|| format!("fixture tensor {key}"))
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> Result<f32> {
    ensure!(
        a.dims() == b.dims(),
        "shapes {:?} vs {:?}",
        a.dims(),
        b.dims()
    );
    Ok((a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?)
}

/// (1, 3, h, w) as three channels of f64 values, row-major.
fn channels(image: &Tensor) -> Result<Vec<Vec<f64>>> {
    let image = image.to_dtype(DType::F64)?.squeeze(0)?;
    (0..3)
        .map(|c| Ok(image.get(c)?.flatten_all()?.to_vec1::<f64>()?))
        .collect()
}

fn mean_std(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, var.sqrt())
}

/// A deterministic smooth colourful image in about [0.2, 0.8].
fn smooth(h: usize, w: usize, seed: f64) -> Result<Tensor> {
    let mut data = Vec::with_capacity(3 * h * w);
    for c in 0..3 {
        for y in 0..h {
            for x in 0..w {
                let (fy, fx) = (y as f64 / h as f64, x as f64 / w as f64);
                let v = 0.5
                    + 0.15 * (3.0 * fx + 2.0 * fy + seed + c as f64).sin()
                    + 0.1 * (2.0 * fy - fx + 0.7 * c as f64).cos();
                data.push(v as f32);
            }
        }
    }
    Ok(Tensor::from_vec(data, (1, 3, h, w), &Device::Cpu)?)
}

/// Deterministic pseudo-random detail in [-amp, amp] (an LCG, so no RNG crate is needed).
fn detail(h: usize, w: usize, amp: f32) -> Result<Tensor> {
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let data: Vec<f32> = (0..3 * h * w)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * amp
        })
        .collect();
    Ok(Tensor::from_vec(data, (1, 3, h, w), &Device::Cpu)?)
}

/// StableSR's 5-level low pass written out naively: the full 3×3 kernel (9 taps, not the
/// library's two separable passes) at dilation 2^i on replicate-padded channels, in f64. Also
/// checks, through the tests using it, that the separable form is the same filter.
fn low_pass(image: &Tensor) -> Result<Vec<Vec<f64>>> {
    let (_, _, h, w) = image.dims4()?;
    let k = [[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]];
    let mut out = Vec::new();
    for mut plane in channels(image)? {
        for level in 0..5 {
            let d = 1i64 << level;
            let at = |p: &[f64], y: i64, x: i64| {
                p[y.clamp(0, h as i64 - 1) as usize * w + x.clamp(0, w as i64 - 1) as usize]
            };
            let mut next = vec![0.0; h * w];
            for y in 0..h as i64 {
                for x in 0..w as i64 {
                    let mut acc = 0.0;
                    for (i, row) in k.iter().enumerate() {
                        for (j, kv) in row.iter().enumerate() {
                            acc += kv / 16.0
                                * at(&plane, y + (i as i64 - 1) * d, x + (j as i64 - 1) * d);
                        }
                    }
                    next[y as usize * w + x as usize] = acc;
                }
            }
            plane = next;
        }
        out.push(plane);
    }
    Ok(out)
}

#[test]
fn matches_the_pytorch_reference() -> Result<()> {
    let t = fixtures()?;
    for (case, resized) in [
        ("same", false),
        ("tiny", false),
        ("up4", true),
        ("up_odd", true),
        ("down", true),
    ] {
        let result = get(&t, &format!("{case}.result"))?;
        let source = get(&t, &format!("{case}.source"))?;
        let tol = if resized { RESIZE_TOL } else { SAME_SIZE_TOL };
        if resized {
            let (_, _, h, w) = result.dims4()?;
            let ours = bicubic_resize(source, h, w)?;
            let diff = max_abs_diff(&ours, get(&t, &format!("{case}.source_resized"))?)?;
            ensure!(
                diff <= SAME_SIZE_TOL,
                "{case}: bicubic resize off by {diff}"
            );
        }
        for (fix, key) in [(ColorFix::Adain, "adain"), (ColorFix::Wavelet, "wavelet")] {
            let ours = apply_color_fix(result, source, fix)?;
            ensure!(ours.dtype() == DType::F32);
            let diff = max_abs_diff(&ours, get(&t, &format!("{case}.{key}"))?)?;
            ensure!(diff <= tol, "{case} {key}: off by {diff} (tolerance {tol})");
        }
    }
    Ok(())
}

#[test]
fn identity_when_result_is_the_resized_source() -> Result<()> {
    let source = smooth(10, 12, 0.3)?;
    let same_size = smooth(40, 48, 1.1)?;
    for (result, source) in [
        (bicubic_resize(&source, 40, 48)?.clamp(0f32, 1f32)?, source),
        (same_size.clone(), same_size),
    ] {
        for fix in [ColorFix::Adain, ColorFix::Wavelet] {
            let out = apply_color_fix(&result, &source, fix)?;
            let diff = max_abs_diff(&out, &result)?;
            ensure!(diff <= 1e-5, "{fix}: identity off by {diff}");
        }
    }
    Ok(())
}

#[test]
fn adain_takes_the_sources_channel_statistics() -> Result<()> {
    let source = smooth(32, 40, 0.0)?;
    // Another image with other statistics, still well inside [0, 1] after the fix (no clamping).
    let result = ((smooth(32, 40, 2.0)? * 0.6)? + 0.25)?;
    let out = apply_color_fix(&result, &source, ColorFix::Adain)?;
    let resized = bicubic_resize(&source, 32, 40)?;
    for (c, ((o, s), r)) in channels(&out)?
        .iter()
        .zip(channels(&resized)?)
        .zip(channels(&result)?)
        .enumerate()
    {
        let ((mo, so), (ms, ss), (_, sr)) = (mean_std(o), mean_std(&s), mean_std(&r));
        ensure!((mo - ms).abs() < 1e-5, "channel {c}: mean {mo} vs {ms}");
        // The output's std is sigma_s exactly up to the eps StableSR adds inside both square
        // roots: std_r * sqrt(var_s + eps) / sqrt(var_r + eps), ~1e-3 relative from sigma_s here.
        let eps = 1e-5;
        let expected = sr * (ss * ss + eps).sqrt() / (sr * sr + eps).sqrt();
        ensure!(
            (so - expected).abs() < 1e-6,
            "channel {c}: std {so} vs {expected}"
        );
        ensure!(
            (so - ss).abs() < 2e-3 * ss,
            "channel {c}: std {so} vs source {ss}"
        );
    }
    Ok(())
}

#[test]
fn wavelet_keeps_the_results_detail() -> Result<()> {
    let (h, w) = (36, 44);
    let source = smooth(9, 11, 0.5)?;
    let result = ((smooth(h, w, 2.5)? * 0.7)? + (detail(h, w, 0.05)? + 0.15)?)?;
    let out = apply_color_fix(&result, &source, ColorFix::Wavelet)?;
    let raw_max = out.flatten_all()?.max(0)?.to_scalar::<f32>()?;
    let raw_min = out.flatten_all()?.min(0)?.to_scalar::<f32>()?;
    ensure!(
        raw_min > 0.0 && raw_max < 1.0,
        "the check needs an unclamped output"
    );
    // The output is high(result) + low(source), high(x) = x - low(x): the result's detail
    // layer is carried over unchanged, only the low-frequency base is swapped.
    let lo_res = low_pass(&result)?;
    let lo_src = low_pass(&bicubic_resize(&source, h, w)?)?;
    let (out_c, res_c) = (channels(&out)?, channels(&result)?);
    for c in 0..3 {
        let (mut correction_step, mut detail_step) = (0.0, 0.0);
        for i in 0..h * w {
            let detail = res_c[c][i] - lo_res[c][i];
            let carried = out_c[c][i] - lo_src[c][i];
            ensure!(
                (carried - detail).abs() < 1e-5,
                "channel {c} pixel {i}: detail {carried} vs {detail}"
            );
            // So the change made to the result, low(source) - low(result), is smooth: its
            // pixel-to-pixel steps are several times smaller than those of the detail it leaves
            // alone (the correction only follows the two images' gradients: ~0.14 of them here).
            if i % w != 0 {
                let change = |k: usize| out_c[c][k] - res_c[c][k];
                correction_step += (change(i) - change(i - 1)).abs();
                let detail_at = |k: usize| res_c[c][k] - lo_res[c][k];
                detail_step += (detail_at(i) - detail_at(i - 1)).abs();
            }
        }
        ensure!(
            correction_step < 0.25 * detail_step,
            "channel {c}: correction steps {correction_step} vs detail {detail_step}"
        );
    }
    Ok(())
}

#[test]
fn a_colour_cast_is_pulled_back() -> Result<()> {
    let (h, w) = (40, 48);
    let source = smooth(10, 12, 0.9)?;
    let upscaled = bicubic_resize(&source, h, w)?;
    // +0.1 on red, plus detail the model "added".
    let cast = Tensor::from_vec(vec![0.1f32, 0.0, 0.0], (1, 3, 1, 1), &Device::Cpu)?;
    let result = upscaled
        .broadcast_add(&cast)?
        .add(&detail(h, w, 0.03)?)?
        .clamp(0f32, 1f32)?;
    let red_mean = |t: &Tensor| -> Result<f64> { Ok(mean_std(&channels(t)?[0]).0) };
    let target = red_mean(&source)?;
    ensure!((red_mean(&result)? - target).abs() > 0.09);
    for fix in [ColorFix::Adain, ColorFix::Wavelet] {
        let out = apply_color_fix(&result, &source, fix)?;
        let off = (red_mean(&out)? - target).abs();
        ensure!(off < 0.01, "{fix}: red mean still off by {off}");
    }
    Ok(())
}

#[test]
fn none_returns_the_input_unchanged() -> Result<()> {
    // Out of [0, 1] on purpose: `none` does not even clamp.
    let result = ((smooth(8, 9, 0.1)? * 2.0)? - 0.5)?;
    let out = apply_color_fix(&result, &smooth(2, 3, 0.0)?, ColorFix::None)?;
    ensure!(max_abs_diff(&out, &result)? == 0.0);
    // Other float types come back as f32.
    let half = result.to_dtype(DType::F16)?;
    let out = apply_color_fix(&half, &smooth(2, 3, 0.0)?, ColorFix::None)?;
    ensure!(out.dtype() == DType::F32);
    Ok(())
}

#[test]
fn other_dtypes_and_clamping() -> Result<()> {
    let source = smooth(6, 7, 0.2)?.to_dtype(DType::BF16)?;
    let result = ((smooth(24, 28, 1.7)? * 3.0)? - 1.0)?.to_dtype(DType::F16)?;
    for fix in [ColorFix::Adain, ColorFix::Wavelet] {
        let out = apply_color_fix(&result, &source, fix)?;
        ensure!(out.dtype() == DType::F32 && out.dims() == [1, 3, 24, 28]);
        let flat = out.flatten_all()?;
        ensure!(flat.min(0)?.to_scalar::<f32>()? >= 0.0);
        ensure!(flat.max(0)?.to_scalar::<f32>()? <= 1.0);
    }
    Ok(())
}

#[test]
fn tiny_images_do_not_fail() -> Result<()> {
    // Dilations up to 16 on 1-pixel images, and a one-pixel AdaIN (no spread: variance 0).
    for (h, w) in [(1, 1), (1, 5), (3, 1)] {
        let result = smooth(h, w, 0.4)?;
        let source = smooth(1, 1, 0.8)?;
        for fix in ColorFix::ALL {
            let out = apply_color_fix(&result, &source, fix)?;
            ensure!(out.dims() == [1, 3, h, w]);
            let values = out.flatten_all()?.to_vec1::<f32>()?;
            ensure!(
                values.iter().all(|v| v.is_finite()),
                "{fix} {h}x{w}: {values:?}"
            );
        }
    }
    Ok(())
}

#[test]
fn bad_shapes_name_the_option() -> Result<()> {
    let good = smooth(8, 8, 0.0)?;
    let bad = [
        Tensor::zeros((1, 4, 8, 8), DType::F32, &Device::Cpu)?,
        Tensor::zeros((1, 1, 8, 8), DType::F32, &Device::Cpu)?,
        Tensor::zeros((2, 3, 8, 8), DType::F32, &Device::Cpu)?,
        Tensor::zeros((3, 8, 8), DType::F32, &Device::Cpu)?,
        Tensor::zeros((1, 3, 0, 8), DType::F32, &Device::Cpu)?,
    ];
    for fix in ColorFix::ALL {
        for image in &bad {
            for (result, source, which) in [(image, &good, "result"), (&good, image, "source")] {
                let err = apply_color_fix(result, source, fix)
                    .err()
                    .with_context(|| format!("{fix}: {:?} accepted", image.dims()))?
                    .to_string();
                ensure!(err.contains("color-fix"), "{err}");
                ensure!(err.contains(which), "{err}");
            }
        }
    }
    Ok(())
}

#[test]
fn names_parse_and_unknown_values_list_the_choices() -> Result<()> {
    for fix in ColorFix::ALL {
        ensure!(fix.name().parse::<ColorFix>()? == fix);
        ensure!(fix.to_string() == fix.name());
    }
    ensure!("Wavelet".parse::<ColorFix>()? == ColorFix::Wavelet);
    ensure!("ADAIN".parse::<ColorFix>()? == ColorFix::Adain);
    ensure!(ColorFix::default() == ColorFix::None);
    let err = "histogram".parse::<ColorFix>().unwrap_err().to_string();
    for word in ["color-fix", "histogram", "none", "wavelet", "adain"] {
        ensure!(err.contains(word), "{err}");
    }
    // Usable as a clap value parser as is.
    let cmd = clap::Command::new("t").arg(
        clap::Arg::new("color-fix")
            .long("color-fix")
            .value_parser(clap::value_parser!(ColorFix)),
    );
    let m = cmd
        .clone()
        .try_get_matches_from(["t", "--color-fix", "adain"])?;
    ensure!(m.get_one::<ColorFix>("color-fix") == Some(&ColorFix::Adain));
    let err = cmd
        .try_get_matches_from(["t", "--color-fix", "sepia"])
        .unwrap_err()
        .to_string();
    ensure!(err.contains("wavelet"), "{err}");
    Ok(())
}
