//! Pillow's bicubic resize (`Image.resize(size, Image.BICUBIC)`, `libImaging/Resample.c`) in
//! floating point: the image the common SRCNN ports upscale before the network. Each output
//! pixel x reads the inputs within 2 pixels of its centre c = (x + 0.5) · in / out (for an
//! upscale; the kernel is not stretched), weighted by Keys' cubic with a = −0.5 and the weights
//! renormalised to sum to 1 — which is how Pillow treats the image borders, where taps past the
//! edge are dropped. Horizontal pass first, then vertical, as Pillow.
//!
//! A tile whose origin is a whole input pixel is resized as the whole image is, except within
//! 2 input pixels of its border (the renormalised edge), which the tile context covers.

use candle_core::{Device, Tensor};

use crate::error::Result;

/// Pillow's bicubic kernel (a = −0.5).
fn cubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// For one axis of `len` resized to `out`: per tap k, `index[k][x]` and `weight[k][x]` of
/// output x (absent taps have weight 0 at a clamped index).
struct AxisTaps {
    index: Vec<Vec<u32>>,
    weight: Vec<Vec<f32>>,
}

/// Most taps an output reads when upscaling (support 2 on each side of the centre).
const MAX_TAPS: usize = 5;

fn axis_taps(len: usize, out: usize) -> AxisTaps {
    let scale = len as f64 / out as f64;
    // Pillow stretches the kernel by the downscale factor; an upscale keeps it (support 2).
    let filterscale = scale.max(1.0);
    let support = 2.0 * filterscale;
    let mut index: Vec<Vec<u32>> = (0..MAX_TAPS).map(|_| Vec::with_capacity(out)).collect();
    let mut weight: Vec<Vec<f32>> = (0..MAX_TAPS).map(|_| Vec::with_capacity(out)).collect();
    for x in 0..out {
        let centre = (x as f64 + 0.5) * scale;
        // Pillow's `(int)` truncation; negative starts clamp to 0 either way.
        let xmin = ((centre - support + 0.5) as i64).max(0) as usize;
        let xmax = ((centre + support + 0.5) as i64).min(len as i64).max(0) as usize;
        let mut w: Vec<f64> = (xmin..xmax)
            .map(|i| cubic((i as f64 - centre + 0.5) / filterscale))
            .collect();
        let total: f64 = w.iter().sum();
        if total != 0.0 {
            w.iter_mut().for_each(|v| *v /= total);
        }
        for k in 0..MAX_TAPS {
            let (i, v) = match w.get(k) {
                Some(&v) => (xmin + k, v),
                None => (xmin.min(len.saturating_sub(1)), 0.0),
            };
            index[k].push(i.min(len.saturating_sub(1)) as u32);
            weight[k].push(v as f32);
        }
    }
    AxisTaps { index, weight }
}

/// Resizes `x` (B, C, H, W) to (B, C, out_h, out_w): columns, then rows.
pub(super) fn resize_bicubic(x: &Tensor, out_h: usize, out_w: usize) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    // index_select gathers from contiguous tensors only (a tile is a view of the image).
    let cols = resample(&x.contiguous()?, 3, &axis_taps(w, out_w))?;
    resample(&cols, 2, &axis_taps(h, out_h))
}

fn resample(x: &Tensor, dim: usize, taps: &AxisTaps) -> Result<Tensor> {
    let device: &Device = x.device();
    let out = taps.index[0].len();
    let shape: &[usize] = if dim == 3 {
        &[1, 1, 1, out]
    } else {
        &[1, 1, out, 1]
    };
    let mut acc: Option<Tensor> = None;
    for (index, weight) in taps.index.iter().zip(&taps.weight) {
        if weight.iter().all(|&v| v == 0.0) {
            continue;
        }
        let index = Tensor::from_slice(index, out, device)?;
        let weight = Tensor::from_slice(weight, shape, device)?.to_dtype(x.dtype())?;
        let term = x.index_select(&index, dim)?.broadcast_mul(&weight)?;
        acc = Some(match acc {
            None => term,
            Some(a) => (a + term)?,
        });
    }
    match acc {
        Some(a) => Ok(a),
        // Only an empty axis has no taps.
        None => Ok(x.narrow(dim, 0, 0)?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_sum_to_one_and_interior_taps_are_keys_cubic() {
        let taps = axis_taps(7, 14);
        for x in 0..14 {
            let sum: f32 = (0..MAX_TAPS).map(|k| taps.weight[k][x]).sum();
            assert!((sum - 1.0).abs() < 1e-6, "output {x}: {sum}");
        }
        // Output 6 of a ×2 upscale has its centre at 3.25 (pixel coordinate 2.75): taps 1..=4,
        // 1.75, 0.75, 0.25 and 1.25 away.
        let want = [cubic(1.75), cubic(0.75), cubic(0.25), cubic(1.25)];
        for (k, w) in want.iter().enumerate() {
            assert_eq!(taps.index[k][6], 1 + k as u32);
            assert!((taps.weight[k][6] as f64 - w).abs() < 1e-7);
        }
        // A constant image stays constant.
        let x = Tensor::full(0.25f32, (1, 1, 5, 3), &Device::Cpu).unwrap();
        let y = resize_bicubic(&x, 15, 9).unwrap();
        let d = (y - 0.25).unwrap().abs().unwrap().max_all().unwrap();
        assert!(d.to_scalar::<f32>().unwrap() < 1e-6);
    }
}
