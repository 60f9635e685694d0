//! A fixed-factor resize of the network's output, as ncnn's `Interp` layer computes it
//! (`src/layer/interp.cpp`: `resize_type` 1 nearest, 2 bilinear, 3 bicubic, `align_corner`
//! 0, output size `(int)(w * scale)`). realesr-animevideov3's ncnn x2 and x3 models are the x4
//! network followed by a 0.5x or 0.75x bicubic `Interp`; diffsr runs them the same way.
//!
//! Every output pixel reads a few neighbouring input pixels at `(x + 0.5) · in/out − 0.5`
//! (bicubic: 4 taps with ncnn's A = −0.75 and its edge folding, which equals repeating the edge
//! pixels; bilinear: 2 taps; nearest: `(int)(x / scale)`), rows first, then columns. Because
//! the position depends only on the output coordinate and the ratio, a tile whose input origin
//! is a whole input pixel is resized exactly as the whole image is, given one more input pixel
//! of context.

use candle_core::{DType, Device, Tensor};

use crate::error::Result;

/// The state-dict entry that carries an [`OutputResize`] (a `[3]` tensor: `resize_type`,
/// `height_scale`, `width_scale`, ncnn's `Interp` params 0, 1 and 2), so that a converted
/// model keeps it.
pub const OUTPUT_RESIZE_KEY: &str = "diffsr.output_resize";

/// The interpolation of ncnn's `Interp` (`resize_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResizeMode {
    Nearest,
    Bilinear,
    Bicubic,
}

impl ResizeMode {
    /// From ncnn's `resize_type` (param 0).
    pub fn from_ncnn(resize_type: i64) -> Option<Self> {
        match resize_type {
            1 => Some(Self::Nearest),
            2 => Some(Self::Bilinear),
            3 => Some(Self::Bicubic),
            _ => None,
        }
    }

    /// ncnn's `resize_type`.
    pub fn ncnn_type(self) -> u8 {
        match self {
            Self::Nearest => 1,
            Self::Bilinear => 2,
            Self::Bicubic => 3,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Nearest => "nearest",
            Self::Bilinear => "bilinear",
            Self::Bicubic => "bicubic",
        }
    }
}

/// A resize of both sides by `factor`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OutputResize {
    pub mode: ResizeMode,
    pub factor: f32,
}

/// For one axis: `taps[k][x]` is the input index and `weights[k][x]` the weight of tap `k`
/// of output `x`.
struct AxisTaps {
    taps: Vec<Vec<u32>>,
    weights: Vec<Vec<f32>>,
}

impl OutputResize {
    /// The output length of an axis of `len`, as ncnn computes it.
    pub fn out_len(&self, len: usize) -> usize {
        (len as f32 * self.factor) as usize
    }

    /// ncnn's taps for an axis of `len` resized to `out`. Indices are clamped into the axis,
    /// which is what ncnn's edge folding amounts to (and keeps axes shorter than 4 in range).
    fn axis(&self, len: usize, out: usize) -> AxisTaps {
        let last = len.saturating_sub(1) as i64;
        let clamp = |i: i64| i.clamp(0, last) as u32;
        let scale = len as f64 / out as f64;
        let mut taps: Vec<Vec<u32>> = Vec::new();
        let mut weights: Vec<Vec<f32>> = Vec::new();
        let k = match self.mode {
            ResizeMode::Nearest => 1,
            ResizeMode::Bilinear => 2,
            ResizeMode::Bicubic => 4,
        };
        taps.resize(k, Vec::with_capacity(out));
        weights.resize(k, Vec::with_capacity(out));
        for dx in 0..out {
            let (sx, w): (i64, [f32; 4]) = match self.mode {
                ResizeMode::Nearest => {
                    let ws = 1.0f32 / self.factor;
                    (((dx as f32 * ws) as i64).min(last), [1.0, 0.0, 0.0, 0.0])
                }
                ResizeMode::Bilinear => {
                    let mut fx = ((dx as f64 + 0.5) * scale - 0.5) as f32;
                    let mut sx = fx.floor() as i64;
                    fx -= sx as f32;
                    if sx < 0 {
                        sx = 0;
                        fx = 0.0;
                    }
                    if sx >= last {
                        sx = last - 1;
                        fx = 1.0;
                    }
                    (sx, [1.0 - fx, fx, 0.0, 0.0])
                }
                ResizeMode::Bicubic => {
                    let fx = ((dx as f64 + 0.5) * scale - 0.5) as f32;
                    let sx = fx.floor() as i64;
                    // Taps sx-1 .. sx+2; the first tap's index is returned.
                    (sx - 1, cubic(fx - sx as f32))
                }
            };
            for j in 0..k {
                taps[j].push(clamp(sx + j as i64));
                weights[j].push(w[j]);
            }
        }
        AxisTaps { taps, weights }
    }

    /// Resizes (B, C, H, W) `x` to (B, C, out_len(H), out_len(W)): rows first, as ncnn does,
    /// each output the taps' weighted sum in tap order.
    pub fn apply(&self, x: &Tensor) -> Result<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        let (oh, ow) = (self.out_len(h), self.out_len(w));
        let rows = self.resample(x, 3, &self.axis(w, ow))?;
        self.resample(&rows, 2, &self.axis(h, oh))
    }

    fn resample(&self, x: &Tensor, dim: usize, axis: &AxisTaps) -> Result<Tensor> {
        let device: &Device = x.device();
        let out = axis.taps[0].len();
        let shape: &[usize] = if dim == 3 {
            &[1, 1, 1, out]
        } else {
            &[1, 1, out, 1]
        };
        let mut acc: Option<Tensor> = None;
        for (taps, weights) in axis.taps.iter().zip(&axis.weights) {
            let index = Tensor::from_slice(taps, out, device)?;
            let weight = Tensor::from_slice(weights, shape, device)?.to_dtype(x.dtype())?;
            let term = x.index_select(&index, dim)?.broadcast_mul(&weight)?;
            acc = Some(match acc {
                None => term,
                Some(a) => (a + term)?,
            });
        }
        Ok(acc.expect("at least one tap"))
    }
}

/// ncnn's `interpolate_cubic` (A = −0.75) for the fraction `fx` in [0, 1).
fn cubic(fx: f32) -> [f32; 4] {
    const A: f32 = -0.75;
    let fx0 = fx + 1.0;
    let fx1 = fx;
    let fx2 = 1.0 - fx;
    let c0 = A * fx0 * fx0 * fx0 - 5.0 * A * fx0 * fx0 + 8.0 * A * fx0 - 4.0 * A;
    let c1 = (A + 2.0) * fx1 * fx1 * fx1 - (A + 3.0) * fx1 * fx1 + 1.0;
    let c2 = (A + 2.0) * fx2 * fx2 * fx2 - (A + 3.0) * fx2 * fx2 + 1.0;
    [c0, c1, c2, 1.0 - c0 - c1 - c2]
}

/// The resize as a state-dict entry (see [`OUTPUT_RESIZE_KEY`]).
pub fn output_resize_tensor(resize: &OutputResize) -> Result<Tensor> {
    let values = [resize.mode.ncnn_type() as f32, resize.factor, resize.factor];
    Ok(Tensor::new(&values, &Device::Cpu)?)
}

/// Reads the entry back: `None` when the dict has none; the reason when it is malformed.
pub(crate) fn read_output_resize(
    tensor: Option<&Tensor>,
) -> std::result::Result<Option<OutputResize>, String> {
    let Some(t) = tensor else {
        return Ok(None);
    };
    let bad = |why: String| format!("`{OUTPUT_RESIZE_KEY}` {why}");
    if t.dims() != [3] {
        return Err(bad(format!(
            "has shape {:?}, expected [3] (resize_type, height_scale, width_scale)",
            t.dims()
        )));
    }
    let v = t
        .to_dtype(DType::F32)
        .and_then(|t| t.to_vec1::<f32>())
        .map_err(|e| bad(e.to_string()))?;
    let mode = ResizeMode::from_ncnn(v[0] as i64)
        .filter(|_| v[0].fract() == 0.0)
        .ok_or_else(|| bad(format!("has resize type {}, expected 1, 2 or 3", v[0])))?;
    if v[1] != v[2] || !v[1].is_finite() || v[1] <= 0.0 {
        return Err(bad(format!(
            "has scales {} x {}, expected one positive factor for both sides",
            v[1], v[2]
        )));
    }
    Ok(Some(OutputResize { mode, factor: v[1] }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(values: &[f32]) -> Tensor {
        Tensor::from_slice(values, (1, 1, 1, values.len()), &Device::Cpu).unwrap()
    }

    fn resized(mode: ResizeMode, factor: f32, values: &[f32]) -> Vec<f32> {
        let r = OutputResize { mode, factor };
        let x = row(values);
        // Rows only: a 1-pixel-high image keeps its one row.
        let axis = r.axis(values.len(), r.out_len(values.len()));
        r.resample(&x, 3, &axis)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    }

    #[test]
    fn half_size_bicubic_is_ncnns_four_tap_filter_with_repeated_edges() {
        let x: Vec<f32> = (0..8).map(|i| (i * i) as f32).collect();
        let got = resized(ResizeMode::Bicubic, 0.5, &x);
        // At 0.5 every output sits halfway between two inputs: taps -3/32, 19/32, 19/32, -3/32.
        let (a, b) = (-3.0 / 32.0, 19.0 / 32.0);
        let at = |i: i64| x[i.clamp(0, 7) as usize];
        let want: Vec<f32> = (0..4)
            .map(|d| {
                let s = 2 * d as i64;
                a * at(s - 1) + b * at(s) + b * at(s + 1) + a * at(s + 2)
            })
            .collect();
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() < 1e-5, "{got:?} vs {want:?}");
        }
    }

    #[test]
    fn bilinear_and_nearest_follow_ncnn() {
        let x = [0.0f32, 1.0, 2.0, 3.0];
        // Bilinear at 0.5 averages pairs.
        assert_eq!(resized(ResizeMode::Bilinear, 0.5, &x), [0.5, 2.5]);
        // Nearest at 0.5 takes every other pixel from the first.
        assert_eq!(resized(ResizeMode::Nearest, 0.5, &x), [0.0, 2.0]);
        // A constant stays constant whatever the filter.
        for mode in [
            ResizeMode::Nearest,
            ResizeMode::Bilinear,
            ResizeMode::Bicubic,
        ] {
            for v in resized(mode, 0.75, &[0.25; 8]) {
                assert!((v - 0.25).abs() < 1e-6);
            }
        }
    }

    #[test]
    fn the_entry_round_trips_and_bad_ones_are_named() {
        let r = OutputResize {
            mode: ResizeMode::Bicubic,
            factor: 0.5,
        };
        let t = output_resize_tensor(&r).unwrap();
        assert_eq!(read_output_resize(Some(&t)).unwrap(), Some(r));
        assert_eq!(read_output_resize(None).unwrap(), None);
        for bad in [
            [4.0f32, 0.5, 0.5],
            [3.0, 0.5, 0.25],
            [3.0, -1.0, -1.0],
            [3.0, f32::NAN, f32::NAN],
        ] {
            let t = Tensor::new(&bad, &Device::Cpu).unwrap();
            let err = read_output_resize(Some(&t)).unwrap_err();
            assert!(err.contains(OUTPUT_RESIZE_KEY), "{err}");
        }
    }
}
