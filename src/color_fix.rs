//! Colour-fidelity correction for large upscales: `--color-fix wavelet|adain|none`.
//!
//! Diffusion upscalers drift in colour (a cast, a shifted white balance) while adding detail; the
//! fix keeps the generated detail and takes the colours back from the low-resolution input. This
//! is a port of the maths of StableSR's `colorfix.py` (`scripts/wavelet_color_fix.py` in
//! IceClear/StableSR: `wavelet_reconstruction` and `adaptive_instance_normalization`), which
//! SUPIR (Fanghua-Yu/SUPIR) reuses unchanged:
//!
//! - [`ColorFix::Adain`]: per channel, the result's mean and standard deviation are replaced by
//!   the source's, `(x - mu_r) / sigma_r * sigma_s + mu_s`, with `sigma = sqrt(var + 1e-5)` and
//!   the unbiased variance (Bessel's correction, torch's `.var()` default).
//! - [`ColorFix::Wavelet`]: a 5-level à-trous wavelet decomposition (the 3×3 binomial kernel
//!   `[1,2,1]ᵀ[1,2,1] / 16` at dilation `2^i`, replicate padding); the output is the result's
//!   high frequencies plus the source's final low-pass residual.
//!
//! The source is first resized to the result's size with torch's bicubic
//! (`F.interpolate(mode='bicubic', align_corners=False)`, a = -0.75, edge-clamped taps, no
//! antialiasing), implemented here as two separable 4-tap passes of candle ops, so every step
//! runs on the tensors' device (CPU, CUDA or Metal) with no host round trip.

use std::fmt;
use std::str::FromStr;

use candle_core::{DType, Tensor};

use crate::error::{Error, Result};

/// The option's name, used in every error so the user knows which flag to fix.
const OPTION: &str = "color-fix";
/// Decomposition depth of StableSR's `wavelet_decomposition` (dilations 1, 2, 4, 8, 16).
const WAVELET_LEVELS: usize = 5;
/// Added to the variance before the square root, as StableSR's `calc_mean_std`.
const ADAIN_EPS: f64 = 1e-5;
/// torch's bicubic coefficient (`upsample_bicubic2d`), not Pillow's -0.5.
const BICUBIC_A: f64 = -0.75;

/// Which colour correction to apply to an upscaled image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ColorFix {
    /// Leave the result as the model made it.
    #[default]
    None,
    /// Keep the result's high frequencies, take the low frequencies from the source.
    Wavelet,
    /// Match the per-channel mean and standard deviation of the source.
    Adain,
}

impl ColorFix {
    /// Every choice, in the order the help text lists them.
    pub const ALL: [ColorFix; 3] = [ColorFix::None, ColorFix::Wavelet, ColorFix::Adain];

    /// The name the CLI and manifests use.
    pub fn name(self) -> &'static str {
        match self {
            ColorFix::None => "none",
            ColorFix::Wavelet => "wavelet",
            ColorFix::Adain => "adain",
        }
    }
}

impl fmt::Display for ColorFix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ColorFix {
    type Err = Error;

    /// Case-insensitive; the error lists the choices, so clap's `value_parser` can show it as is.
    fn from_str(s: &str) -> Result<Self> {
        let wanted = s.trim();
        ColorFix::ALL
            .into_iter()
            .find(|fix| fix.name().eq_ignore_ascii_case(wanted))
            .ok_or_else(|| {
                let choices: Vec<&str> = ColorFix::ALL.iter().map(|f| f.name()).collect();
                Error::option(
                    OPTION,
                    format!(
                        "unknown value `{s}` (expected one of: {})",
                        choices.join(", ")
                    ),
                )
            })
    }
}

/// Corrects `result` (1, 3, H, W) in [0, 1] towards the colours of `source` (1, 3, h, w) in
/// [0, 1], the low-resolution input.
///
/// The source is moved to the result's device and resized to H×W with torch's bicubic (see the
/// module header; skipped when the sizes already match), then corrected as [`ColorFix`]
/// describes. The output is f32 on the result's device, clamped to [0, 1]. With
/// [`ColorFix::None`] the result is returned unchanged (as f32, not clamped), but both shapes are
/// still checked so a bad call fails the same way whatever the option.
///
/// Memory: at most about six image-sized f32 buffers are alive at once (the result, the resized
/// source or the difference, the blur's shifted copies and the output): ~1.2 GB peak for a
/// 4096×4096 result on the CPU. Time there: ~4 s (adain) and ~10-16 s (wavelet) for 1024² →
/// 4096² (measured while other builds ran), mostly the memory traffic of the 10 blur passes.
pub fn apply_color_fix(result: &Tensor, source: &Tensor, fix: ColorFix) -> Result<Tensor> {
    let (height, width) = check_rgb("result", result)?;
    check_rgb("source", source)?;
    let result = result.to_dtype(DType::F32)?;
    // Made only when a fix needs it, so `none` costs nothing beyond the shape checks.
    let resized_source = || -> Result<Tensor> {
        let source = source.to_device(result.device())?.to_dtype(DType::F32)?;
        bicubic_resize(&source, height, width)
    };
    let fixed = match fix {
        ColorFix::None => return Ok(result),
        ColorFix::Adain => adain(&result, &resized_source()?)?,
        ColorFix::Wavelet => wavelet(&result, resized_source()?)?,
    };
    Ok(fixed.clamp(0f32, 1f32)?)
}

/// Checks that `image` is one non-empty RGB image and returns its (height, width).
fn check_rgb(which: &str, image: &Tensor) -> Result<(usize, usize)> {
    let bad = || {
        Error::option(
            OPTION,
            format!(
                "the {which} must be one RGB image of shape (1, 3, H, W), got {:?}",
                image.dims()
            ),
        )
    };
    match *image.dims() {
        [1, 3, h, w] if h > 0 && w > 0 => Ok((h, w)),
        _ => Err(bad()),
    }
}

// ---------------------------------------------------------------------------------------------
// AdaIN

/// Per-channel mean and standard deviation (`sqrt(unbiased var + eps)`), each (1, 3, 1, 1).
///
/// Two passes (mean, then squared deviations) rather than `E[x²] - E[x]²`, which cancels
/// catastrophically in f32. Each sum runs over rows first, then over the row sums, so a 4096²
/// channel is added up as 4096 sums of 4096 values: far less rounding than one running sum.
fn mean_std(image: &Tensor) -> Result<(Tensor, Tensor)> {
    let (_, _, h, w) = image.dims4()?;
    let n = (h * w) as f64;
    let mean = (image.sum_keepdim(3)?.sum_keepdim(2)? / n)?;
    let sq_dev = image.broadcast_sub(&mean)?.sqr()?;
    // torch's `.var()` divides by n - 1; a single pixel has no spread, so call it zero rather
    // than divide by zero (torch would give NaN there).
    let var = (sq_dev.sum_keepdim(3)?.sum_keepdim(2)? / (n - 1.0).max(1.0))?;
    let std = (var + ADAIN_EPS)?.sqrt()?;
    Ok((mean, std))
}

/// `(x - mu_r) / sigma_r * sigma_s + mu_s`, folded into one per-channel `x * a + b` so only one
/// image-sized buffer is made.
fn adain(result: &Tensor, source: &Tensor) -> Result<Tensor> {
    let (mu_r, sigma_r) = mean_std(result)?;
    let (mu_s, sigma_s) = mean_std(source)?;
    let scale = (sigma_s / sigma_r)?;
    let shift = (mu_s - mu_r.mul(&scale)?)?;
    Ok(result.broadcast_mul(&scale)?.broadcast_add(&shift)?)
}

// ---------------------------------------------------------------------------------------------
// Wavelet

/// `high(result) + low(source)`, where `low` is the 5-level cascade of blurs and
/// `high(x) = sum_i (x_i - x_{i+1}) = x - low(x)` (the per-level details telescope).
///
/// The blur is linear (replicate padding included: it only repeats edge pixels), so
/// `result - low(result) + low(source) = result + low(source - result)`: one cascade on the
/// difference instead of one on each image, half the work and half the buffers.
fn wavelet(result: &Tensor, source: Tensor) -> Result<Tensor> {
    let mut low = (source - result)?;
    for level in 0..WAVELET_LEVELS {
        low = wavelet_blur(&low, 1 << level)?;
    }
    Ok((result + low)?)
}

/// StableSR's `wavelet_blur`: a depthwise 3×3 convolution with
/// `[[1,2,1],[2,4,2],[1,2,1]] / 16` at `dilation`, on the image padded by `dilation` pixels with
/// replicate padding.
///
/// Done as two 1-D passes of `[1/4, 1/2, 1/4]`, which is exact, not an approximation: the 2-D
/// kernel is the outer product `k[i][j] = v[i] * v[j]` with `v = [1/4, 1/2, 1/4]` (1/16 = 1/4 ·
/// 1/4, 1/8 = 1/4 · 1/2, 1/4 = 1/2 · 1/2), and replicate padding reads pixel
/// `(clamp(y + i·d), clamp(x + j·d))`, whose row and column clamps are independent. So
/// `out(y, x) = Σ_i v[i] Σ_j v[j] p(clamp(y + i·d), clamp(x + j·d))`: the inner sum is the
/// horizontal pass, the outer sum the vertical pass. 2 × 3 taps instead of 9.
fn wavelet_blur(image: &Tensor, dilation: usize) -> Result<Tensor> {
    let horizontal = blur_1d(image, 3, dilation)?;
    blur_1d(&horizontal, 2, dilation)
}

/// `x/2 + (x[i - d] + x[i + d])/4` along `dim`, indices clamped to the edge.
fn blur_1d(x: &Tensor, dim: usize, dilation: usize) -> Result<Tensor> {
    // A block so both shifted copies are freed before the combination allocates.
    let neighbours = {
        let before = shift_replicate(x, dim, dilation, true)?;
        let after = shift_replicate(x, dim, dilation, false)?;
        (before + after)?
    };
    // 0.5 · (0.5 · (before + after) + x) = x/2 + (before + after)/4.
    Ok((neighbours.affine(0.5, 0.0)? + x)?.affine(0.5, 0.0)?)
}

/// `y[i] = x[clamp(i - d)]` (`backward`) or `x[clamp(i + d)]` along `dim`: the pixels a dilated
/// tap reads from a replicate-padded image. Built from a narrow of `x` and a block of repeated
/// edge pixels, so `cat` copies whole rows.
fn shift_replicate(x: &Tensor, dim: usize, d: usize, backward: bool) -> Result<Tensor> {
    let n = x.dim(dim)?;
    // Shifting by n or more leaves only edge pixels (replicate padding has no size limit).
    let k = d.min(n);
    let edge_index = if backward { 0 } else { n - 1 };
    let mut pad_dims = x.dims().to_vec();
    pad_dims[dim] = k;
    let pad = x
        .narrow(dim, edge_index, 1)?
        .broadcast_as(pad_dims)?
        .contiguous()?;
    if k == n {
        return Ok(pad);
    }
    let parts = if backward {
        [pad, x.narrow(dim, 0, n - k)?]
    } else {
        [x.narrow(dim, k, n - k)?, pad]
    };
    Ok(Tensor::cat(&parts, dim)?)
}

// ---------------------------------------------------------------------------------------------
// Bicubic resize

/// torch's cubic convolution for |t| <= 1.
fn cubic_near(t: f64) -> f64 {
    ((BICUBIC_A + 2.0) * t - (BICUBIC_A + 3.0)) * t * t + 1.0
}

/// torch's cubic convolution for 1 < |t| < 2.
fn cubic_far(t: f64) -> f64 {
    ((BICUBIC_A * t - 5.0 * BICUBIC_A) * t + 8.0 * BICUBIC_A) * t - 4.0 * BICUBIC_A
}

/// Resizes an (n, c, h, w) tensor to (n, c, height, width) as `F.interpolate(size=(height,
/// width), mode='bicubic', align_corners=False)` (no antialiasing, not clamped): horizontal pass
/// first (on the smaller image when upscaling), then vertical, the order torch's kernel combines
/// its 4×4 taps in. Exposed so the colour fix's resize can be checked on its own.
pub fn bicubic_resize(image: &Tensor, height: usize, width: usize) -> Result<Tensor> {
    image.dims4()?;
    let horizontal = bicubic_1d(image, 3, width)?;
    bicubic_1d(&horizontal, 2, height)
}

/// One separable bicubic pass along `dim` to `out_len` samples: four gathers of edge-clamped
/// taps (`index_select`, which every backend has), each weighted per output position.
fn bicubic_1d(x: &Tensor, dim: usize, out_len: usize) -> Result<Tensor> {
    let in_len = x.dim(dim)?;
    if in_len == 0 || out_len == 0 {
        return Err(Error::option(
            OPTION,
            format!(
                "cannot resize {:?} to a size of {out_len} along dim {dim}",
                x.dims()
            ),
        ));
    }
    if in_len == out_len {
        // Exact identity, and it keeps `result == source` an identity for both fixes.
        return Ok(x.clone());
    }
    // With only a size given, torch's scale is in/out and the source coordinate of output `o`
    // is `(o + 0.5) * scale - 0.5`, not clamped at 0 for the cubic mode.
    let scale = in_len as f64 / out_len as f64;
    let last = in_len as i64 - 1;
    let mut taps = vec![vec![0u32; out_len]; 4];
    let mut weights = vec![vec![0f32; out_len]; 4];
    for o in 0..out_len {
        let real = (o as f64 + 0.5) * scale - 0.5;
        let floor = real.floor();
        let t = real - floor;
        let w = [
            cubic_far(t + 1.0),
            cubic_near(t),
            cubic_near(1.0 - t),
            cubic_far(2.0 - t),
        ];
        for k in 0..4 {
            taps[k][o] = (floor as i64 - 1 + k as i64).clamp(0, last) as u32;
            weights[k][o] = w[k] as f32;
        }
    }
    let mut weight_shape = vec![1; x.rank()];
    weight_shape[dim] = out_len;
    let term = |k: usize| -> Result<Tensor> {
        let tap = Tensor::from_slice(&taps[k], out_len, x.device())?;
        let weight = Tensor::from_slice(&weights[k], weight_shape.as_slice(), x.device())?;
        Ok(x.index_select(&tap, dim)?.broadcast_mul(&weight)?)
    };
    // Accumulated tap by tap, so at most the sum and one weighted gather are alive.
    let mut out = term(0)?;
    for k in 1..4 {
        out = (out + term(k)?)?;
    }
    Ok(out)
}
