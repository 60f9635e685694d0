//! Softmax over the last axis, as torch's `softmax(dim=-1)`: on the CPU in f32 one pass per
//! row with a vectorised `exp` (`diffsr_kernels::softmax`; candle's CPU kernel calls libm's
//! `expf` per element, a quarter of the VAE attention's time), rows spread over the threads;
//! elsewhere candle's `softmax_last_dim`.

use candle_core::Tensor;

use super::cpu_dispatch::{cpu_threads, on_cpu_f32};

/// softmax(x) along the last axis.
pub(crate) fn softmax_last_dim(x: &Tensor) -> candle_core::Result<Tensor> {
    if let Some(&row) = x.dims().last() {
        let threads = cpu_threads();
        let out = on_cpu_f32([x], [], x.shape(), |[x], []| {
            diffsr_kernels::softmax::softmax_last_dim(x, row, threads)
        })?;
        if let Some(out) = out {
            return Ok(out);
        }
    }
    candle_nn::ops::softmax_last_dim(x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn matches_candles_softmax() -> candle_core::Result<()> {
        for shape in [(3usize, 5usize, 77usize), (2, 64, 4096)] {
            let x = (Tensor::randn(0f32, 3.0, shape, &Device::Cpu)? - 1.0)?;
            let want = candle_nn::ops::softmax_last_dim(&x)?;
            let got = softmax_last_dim(&x)?;
            let d = (got - want)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(d < 1e-6, "{shape:?}: {d}");
        }
        // A transposed (non-contiguous) view is made contiguous by candle first.
        let x = Tensor::randn(0f32, 1.0, (6, 9), &Device::Cpu)?
            .t()?
            .contiguous()?;
        let got = softmax_last_dim(&x)?.sum(1)?.to_vec1::<f32>()?;
        assert!(got.iter().all(|s| (s - 1.0).abs() < 1e-6));
        Ok(())
    }
}
