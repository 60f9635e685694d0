//! Weight rearrangement at load time: (batch, rows, cols) → (batch, cols, rows) for contiguous
//! f32 CPU tensors in cache-sized blocks. candle's strided copy computes every element's
//! source index on its own, which made the transposed linear weights and the conv taps
//! about a third of loading the x4 upscaler (5 of 15 s); other dtypes and devices use it.

use candle_core::{DType, Device, Tensor};

use super::cpu_slice::f32_slice;

/// Side of the square blocks copied at a time: 16 × 16 f32 = 1 KiB read and written.
const BLOCK: usize = 16;

/// `t` (…, rows, cols) with its last two dimensions swapped, contiguous.
pub fn transpose_last_two(t: &Tensor) -> candle_core::Result<Tensor> {
    let dims = t.dims().to_vec();
    let rank = dims.len();
    if rank < 2 || !t.device().is_cpu() || t.dtype() != DType::F32 || !t.is_contiguous() {
        return t
            .transpose(rank.saturating_sub(2), rank.saturating_sub(1).max(1))?
            .contiguous();
    }
    let (rows, cols) = (dims[rank - 2], dims[rank - 1]);
    let mut out = vec![0f32; t.elem_count()];
    {
        let (storage, layout) = t.storage_and_layout();
        let src = f32_slice(&storage, layout)?;
        let plane = rows * cols;
        if plane > 0 {
            for (s, d) in src.chunks_exact(plane).zip(out.chunks_exact_mut(plane)) {
                transpose_plane(s, d, rows, cols);
            }
        }
    }
    let mut shape = dims;
    shape.swap(rank - 2, rank - 1);
    Tensor::from_vec(out, shape, &Device::Cpu)
}

/// dst (cols × rows) = srcᵀ for src (rows × cols), both row-major.
fn transpose_plane(src: &[f32], dst: &mut [f32], rows: usize, cols: usize) {
    for r0 in (0..rows).step_by(BLOCK) {
        let r1 = (r0 + BLOCK).min(rows);
        let band = &src[r0 * cols..r1 * cols];
        for c0 in (0..cols).step_by(BLOCK) {
            for c in c0..(c0 + BLOCK).min(cols) {
                // One contiguous run of dst from a column of the band (in L1 for the block).
                let out = &mut dst[c * rows + r0..c * rows + r1];
                for (d, row) in out.iter_mut().zip(band.chunks_exact(cols)) {
                    *d = row[c];
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equals_candles_transpose() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        for shape in [vec![37usize, 21], vec![3, 9, 5], vec![2, 1, 17], vec![0, 4]] {
            let t = Tensor::randn(0f32, 1.0, shape.clone(), &dev)?;
            let r = shape.len();
            let want = t.transpose(r - 2, r - 1)?.contiguous()?;
            let got = transpose_last_two(&t)?;
            assert_eq!(got.dims(), want.dims());
            let d = (got - &want)?.abs()?.flatten_all()?.max(0);
            if let Ok(d) = d {
                assert_eq!(d.to_scalar::<f32>()?, 0.0, "{shape:?}");
            }
        }
        // f64 goes through candle.
        let t = Tensor::randn(0f64, 1.0, (4, 6), &dev)?;
        assert_eq!(
            transpose_last_two(&t)?.to_vec2::<f64>()?,
            t.t()?.to_vec2::<f64>()?
        );
        Ok(())
    }
}
