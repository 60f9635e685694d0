//! The shifted-window mask of spandrel 0.4.2 `architectures/DAT/__arch/DAT.py`
//! (`Adaptive_Spatial_Attention.calculate_mask`), held as region labels rather than as the
//! reference's (windows, N, N) matrix: after the cyclic roll, the last window row and column
//! gather pixels from opposite edges of the map; each pixel is labelled with its region (3 × 3
//! bands: the reference's Python slices `[0, −win)`, `[−win, −shift)`, `[−shift, end)`) and a
//! score between tokens of different regions receives −100. Only the windows of the last row
//! or column mix regions, so the labels (windows × N bytes) replace a matrix N times larger.

use candle_core::{DType, Device, Tensor};

use crate::error::Result;

/// Region labels of every token of every window, and which windows mix regions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ShiftLabels {
    /// (windows, N), window-major in the reference's window order (rows of windows, then
    /// columns), tokens row-major within a window.
    pub labels: Vec<u8>,
    /// Per window: whether its tokens span more than one region (else its mask is all 0).
    pub mixed: Vec<bool>,
    pub windows: usize,
    pub tokens: usize,
}

/// The value the reference puts in the mask between tokens of different regions.
pub(super) const MASKED: f32 = -100.0;

/// Python's `range(len)[start:stop]` for a slice of a `len`-long axis.
fn py_slice(len: usize, start: isize, stop: Option<isize>) -> std::ops::Range<usize> {
    let resolve = |i: isize| {
        if i < 0 {
            len.saturating_sub(i.unsigned_abs())
        } else {
            i.unsigned_abs().min(len)
        }
    };
    let a = resolve(start);
    let b = stop.map_or(len, resolve);
    a..b.max(a)
}

/// The three bands of an axis, as the reference slices it: `[0, −win)`, `[−win, −shift)`,
/// `[−shift, end)` (with Python's `-0 == 0`: a zero shift makes the last band the whole axis).
fn bands(len: usize, win: usize, shift: usize) -> [std::ops::Range<usize>; 3] {
    let (win, shift) = (win as isize, shift as isize);
    [
        py_slice(len, 0, Some(-win)),
        py_slice(len, -win, Some(-shift)),
        py_slice(len, -shift, None),
    ]
}

impl ShiftLabels {
    /// The labels of an `hp` × `wp` map (multiples of the window) cut into `win_h` × `win_w`
    /// windows after a roll by (−`shift_h`, −`shift_w`).
    pub(super) fn new(
        (hp, wp): (usize, usize),
        (win_h, win_w): (usize, usize),
        (shift_h, shift_w): (usize, usize),
    ) -> Self {
        let mut img = vec![0u8; hp * wp];
        let mut count = 0u8;
        for rows in bands(hp, win_h, shift_h) {
            for cols in bands(wp, win_w, shift_w) {
                for y in rows.clone() {
                    img[y * wp + cols.start..y * wp + cols.end].fill(count);
                }
                count += 1;
            }
        }
        let (nh, nw) = (hp / win_h, wp / win_w);
        let tokens = win_h * win_w;
        let mut labels = Vec::with_capacity(nh * nw * tokens);
        let mut mixed = Vec::with_capacity(nh * nw);
        for a in 0..nh {
            for b in 0..nw {
                let start = labels.len();
                for i in 0..win_h {
                    let row = (a * win_h + i) * wp + b * win_w;
                    labels.extend_from_slice(&img[row..row + win_w]);
                }
                let window = &labels[start..];
                mixed.push(window.iter().any(|&l| l != window[0]));
            }
        }
        Self {
            labels,
            mixed,
            windows: nh * nw,
            tokens,
        }
    }

    /// The reference's mask, (windows, N, N): 0 within a region, −100 across, in `dtype` on
    /// `device` (for the paths that add it as a tensor).
    pub(super) fn matrix(&self, dtype: DType, device: &Device) -> Result<Tensor> {
        let l = Tensor::from_slice(&self.labels, (self.windows, self.tokens), &Device::Cpu)?
            .to_device(device)?;
        let differ = l.unsqueeze(2)?.broadcast_ne(&l.unsqueeze(1)?)?;
        Ok((differ.to_dtype(dtype)? * MASKED as f64)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bands_follow_python_slices() {
        assert_eq!(bands(8, 4, 2), [0..4, 4..6, 6..8]);
        // A zero shift: `[-4:-0]` is empty and `[-0:]` the whole axis.
        assert_eq!(bands(8, 1, 0), [0..7, 7..7, 0..8]);
        assert_eq!(py_slice(3, -5, None), 0..3);
    }

    #[test]
    fn only_the_last_window_row_and_column_mix_regions() -> Result<()> {
        // A 4×8 map, 2×4 windows shifted by (1, 2): 2 × 2 windows.
        let l = ShiftLabels::new((4, 8), (2, 4), (1, 2));
        assert_eq!((l.windows, l.tokens), (4, 8));
        assert_eq!(l.mixed, [false, true, true, true]);
        // Window 3 (bottom right): rows 2..4 × cols 4..8: regions 4 5 / 7 8.
        assert_eq!(&l.labels[24..32], &[4, 4, 5, 5, 7, 7, 8, 8]);
        Ok(())
    }

    /// The masks the reference stored in the tiny fixture (img_size 16, 2×4 windows shifted
    /// by (1, 2); the second orientation 4×2 shifted by (2, 1)).
    #[test]
    fn matrices_equal_the_references_stored_masks() -> Result<()> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/zoo/dat/dat_tiny_x2.pth");
        let dict = crate::gan::load::read_model_file(&path)?;
        for (m, win, shift) in [(0, (2, 4), (1, 2)), (1, (4, 2), (2, 1))] {
            let name = format!("layers.0.blocks.2.attn.attn_mask_{m}");
            let want = dict[&name].to_dtype(DType::F32)?;
            let got = ShiftLabels::new((16, 16), win, shift).matrix(DType::F32, &Device::Cpu)?;
            assert_eq!(got.dims(), want.dims(), "{name}");
            let diff = (got - want)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert_eq!(diff, 0.0, "{name}");
        }
        Ok(())
    }
}
