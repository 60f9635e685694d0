//! Weight rearrangement at load time: (…, rows, cols) → (…, cols, rows), contiguous. On the
//! CPU in f32 by the blocked copy of `diffsr_kernels::transpose` (candle's strided copy made
//! the transposed linear weights and the conv taps a third of loading the x4 upscaler); other
//! dtypes and devices use candle's.

use candle_core::Tensor;

use super::cpu_dispatch::on_cpu_f32;

/// `t` (…, rows, cols) with its last two dimensions swapped, contiguous.
pub(crate) fn transpose_last_two(t: &Tensor) -> candle_core::Result<Tensor> {
    let dims = t.dims().to_vec();
    let rank = dims.len();
    if rank >= 2 {
        let (rows, cols) = (dims[rank - 2], dims[rank - 1]);
        let mut shape = dims;
        shape.swap(rank - 2, rank - 1);
        // Only a contiguous input is worth it: a strided one is copied by candle anyway.
        if t.is_contiguous() {
            let out = on_cpu_f32([t], [], shape, |[src], []| {
                diffsr_kernels::transpose::transpose_last_two(src, rows, cols)
            })?;
            if let Some(out) = out {
                return Ok(out);
            }
        }
    }
    t.transpose(rank.saturating_sub(2), rank.saturating_sub(1).max(1))?
        .contiguous()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

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
