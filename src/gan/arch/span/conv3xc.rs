//! SPAN's `Conv3XC` (spandrel 0.4.2 `architectures/SPAN/__arch/span.py`): a training-time
//! block of a 1×1 shortcut (`sk`) beside a 1×1 → 3×3 → 1×1 chain (`conv.0/1/2`, twice the
//! channels inside), which is linear and so equals one 3×3 convolution. The reference folds
//! the branches into that convolution (`update_params`) at every eval forward and ignores
//! the stored `eval_conv` tensors; this port folds them once, at load, in f64, and rounds the
//! result once to the compute dtype.
//!
//! With w1 (2·Ci, Ci), w2 (2·Co, 2·Ci, 3, 3), w3 (Co, 2·Co) and the shortcut s (Co, Ci):
//! W[o, i, y, x] = Σ_m Σ_n w3[o, m] · w2[m, n, y, x] · w1[n, i] (+ s[o, i] at the centre tap),
//! b[o] = Σ_m w3[o, m] · (Σ_{n,y,x} w2[m, n, y, x] · b1[n] + b2[m]) + b3[o] + sb[o].
//! The chain's zero padding sits before its first 1×1 conv, where the padded pixels become b1:
//! exactly what the folded bias adds at the border, so the fold is exact there too.

use candle_core::{DType, Tensor};

use crate::error::Result;
use crate::gan::arch::Weights;
use crate::models::layers::conv::Conv2d;

/// The chain's channel multiplier (`gain1=2` at every use in SPAN).
const GAIN: usize = 2;

/// Every tensor of a `Conv3XC(c_in, c_out)` under `prefix`, with its shape.
pub(super) fn conv3xc_shapes(prefix: &str, c_in: usize, c_out: usize) -> Vec<(String, Vec<usize>)> {
    let (gi, go) = (GAIN * c_in, GAIN * c_out);
    [
        ("sk", vec![c_out, c_in, 1, 1]),
        ("conv.0", vec![gi, c_in, 1, 1]),
        ("conv.1", vec![go, gi, 3, 3]),
        ("conv.2", vec![c_out, go, 1, 1]),
        ("eval_conv", vec![c_out, c_in, 3, 3]),
    ]
    .into_iter()
    .flat_map(|(layer, shape)| {
        let bias = vec![shape[0]];
        [
            (format!("{prefix}.{layer}.weight"), shape),
            (format!("{prefix}.{layer}.bias"), bias),
        ]
    })
    .collect()
}

/// The folded 3×3 convolution of the `Conv3XC(c_in, c_out)` under `prefix` ("same" padding),
/// in `w`'s dtype on its device.
pub(super) fn fused_conv3xc(
    w: &Weights<'_>,
    prefix: &str,
    c_in: usize,
    c_out: usize,
) -> Result<Conv2d> {
    let host = w.on_host(DType::F64);
    let (gi, go) = (GAIN * c_in, GAIN * c_out);
    let get = |layer: &str, shape: &[usize]| -> Result<(Tensor, Tensor)> {
        Ok((
            host.get(&format!("{prefix}.{layer}.weight"), shape)?,
            host.get(&format!("{prefix}.{layer}.bias"), &shape[..1])?,
        ))
    };
    let (w1, b1) = get("conv.0", &[gi, c_in, 1, 1])?;
    let (w2, b2) = get("conv.1", &[go, gi, 3, 3])?;
    let (w3, b3) = get("conv.2", &[c_out, go, 1, 1])?;
    let (sk, sb) = get("sk", &[c_out, c_in, 1, 1])?;
    // Checked for a complete file, though the reference overwrites it before use.
    get("eval_conv", &[c_out, c_in, 3, 3])?;
    let (weight, bias) = fold(&w1, &b1, &w2, &b2, &w3, &b3, &sk, &sb)?;
    let weight = weight.to_dtype(w.dtype)?.to_device(w.device)?;
    let bias = bias.to_dtype(w.dtype)?.to_device(w.device)?;
    let config = candle_nn::Conv2dConfig {
        padding: 1,
        ..Default::default()
    };
    Ok(Conv2d::new(weight, Some(bias), config).with_winograd())
}

/// The fold of the module comment, on (checked) tensors in any float dtype.
#[allow(clippy::too_many_arguments)]
fn fold(
    w1: &Tensor,
    b1: &Tensor,
    w2: &Tensor,
    b2: &Tensor,
    w3: &Tensor,
    b3: &Tensor,
    sk: &Tensor,
    sb: &Tensor,
) -> Result<(Tensor, Tensor)> {
    let (go, gi, kh, kw) = w2.dims4()?;
    let c_in = w1.dim(1)?;
    let c_out = w3.dim(0)?;
    let w1 = w1.reshape((gi, c_in))?;
    let w3 = w3.reshape((c_out, go))?;
    // (go, gi, 3, 3) → (go·9, gi) · (gi, Ci) → (go, 9·Ci).
    let taps = w2.permute((0, 2, 3, 1))?.reshape((go * kh * kw, gi))?;
    let inner = taps.matmul(&w1)?.reshape((go, kh * kw * c_in))?;
    // (Co, go) · (go, 9·Ci) → (Co, 3, 3, Ci) → (Co, Ci, 3, 3).
    let weight = w3
        .matmul(&inner)?
        .reshape((c_out, kh, kw, c_in))?
        .permute((0, 3, 1, 2))?;
    let shortcut = sk.pad_with_zeros(2, 1, 1)?.pad_with_zeros(3, 1, 1)?;
    let weight = (weight + shortcut)?.contiguous()?;
    // Σ_{n,y,x} w2[m, n, y, x] · b1[n] + b2[m], then through w3.
    let mid = w2
        .sum((2, 3))?
        .matmul(&b1.reshape((gi, 1))?)?
        .squeeze(1)?
        .add(b2)?;
    let bias = w3
        .matmul(&mid.reshape((go, 1))?)?
        .squeeze(1)?
        .add(b3)?
        .add(sb)?;
    Ok((weight, bias))
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Module};

    use super::*;

    /// The folded conv equals the training-time branches: the chain on the zero-padded
    /// input plus the shortcut, as the reference's `training` forward computes them.
    #[test]
    fn the_fold_equals_the_branches() -> Result<()> {
        let dev = Device::Cpu;
        let (ci, co, h, w) = (3, 5, 6, 7);
        let r = |shape: &[usize]| Tensor::randn(0f64, 0.5, shape, &dev);
        let (w1, b1) = (r(&[2 * ci, ci, 1, 1])?, r(&[2 * ci])?);
        let (w2, b2) = (r(&[2 * co, 2 * ci, 3, 3])?, r(&[2 * co])?);
        let (w3, b3) = (r(&[co, 2 * co, 1, 1])?, r(&[co])?);
        let (sk, sb) = (r(&[co, ci, 1, 1])?, r(&[co])?);
        let x = r(&[1, ci, h, w])?;
        let conv = |x: &Tensor, w: &Tensor, b: &Tensor, pad: usize| -> Result<Tensor> {
            let n = b.dim(0)?;
            Ok(x.conv2d(w, pad, 1, 1, 1)?
                .broadcast_add(&b.reshape((1, n, 1, 1))?)?)
        };
        let padded = x.pad_with_zeros(2, 1, 1)?.pad_with_zeros(3, 1, 1)?;
        let chain = conv(
            &conv(&conv(&padded, &w1, &b1, 0)?, &w2, &b2, 0)?,
            &w3,
            &b3,
            0,
        )?;
        let want = (chain + conv(&x, &sk, &sb, 0)?)?;
        let (weight, bias) = fold(&w1, &b1, &w2, &b2, &w3, &b3, &sk, &sb)?;
        let folded = Conv2d::new(
            weight,
            Some(bias),
            candle_nn::Conv2dConfig {
                padding: 1,
                ..Default::default()
            },
        );
        let got = folded.forward(&x)?;
        let d = (got - want)?.abs()?.max_all()?.to_scalar::<f64>()?;
        assert!(d < 1e-12, "{d}");
        Ok(())
    }
}
