//! The GEGLU gate of diffusers' `GEGLU` (models/activations.py): the projection's output is
//! split in two halves along the last axis, and the result is value · GELU(gate) with torch's
//! exact (erf) GELU; and that GELU alone ([`gelu_erf`], CLIP's MLP activation).
//!
//! On the CPU in f32 this is one pass over the projection, rows spread over the threads, with
//! a vectorised erf (`diffsr_kernels::elementwise`); candle's `chunk` + `gelu_erf` + `mul` take
//! three passes with a scalar libm `erff` per element. Other devices and dtypes use those
//! tensor ops.

use candle_core::{Tensor, D};

use super::cpu_dispatch::{cpu_threads, on_cpu_f32};

/// value · GELU(gate) for `projected` (…, 2·inner) = [value | gate] → (…, inner).
pub fn geglu(projected: &Tensor) -> candle_core::Result<Tensor> {
    let dims = projected.dims();
    let last = *dims.last().unwrap_or(&0);
    if !dims.is_empty() && last % 2 == 0 {
        let mut shape = dims.to_vec();
        if let Some(l) = shape.last_mut() {
            *l = last / 2;
        }
        let threads = cpu_threads();
        let out = on_cpu_f32([projected], [], shape, |[x], []| {
            diffsr_kernels::elementwise::geglu(x, last, threads)
        })?;
        if let Some(out) = out {
            return Ok(out);
        }
    }
    let halves = projected.chunk(2, D::Minus1)?;
    halves[0].mul(&halves[1].gelu_erf()?)
}

/// GELU(x) with torch's exact (erf) form, elementwise.
pub fn gelu_erf(x: &Tensor) -> candle_core::Result<Tensor> {
    let threads = cpu_threads();
    let out = on_cpu_f32([x], [], x.shape(), |[x], []| {
        diffsr_kernels::elementwise::gelu_erf(x, threads)
    })?;
    match out {
        Some(out) => Ok(out),
        None => x.gelu_erf(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn fused_gate_matches_candles_ops() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        for shape in [(2usize, 9usize, 16usize), (2, 300, 512)] {
            let x = Tensor::randn(0f32, 2.0, shape, &dev)?;
            let fused = geglu(&x)?;
            let halves = x.chunk(2, D::Minus1)?;
            let want = halves[0].mul(&halves[1].gelu_erf()?)?;
            assert_eq!(fused.dims(), want.dims());
            let scale = want.abs()?.max_all()?.to_scalar::<f32>()?;
            let diff = (fused - want)?.abs()?.max_all()?.to_scalar::<f32>()? / scale;
            assert!(diff < 1e-6, "{shape:?}: relative {diff}");
        }
        let x = Tensor::randn(0f32, 3.0, (3, 70_000), &dev)?;
        let diff = (gelu_erf(&x)? - x.gelu_erf()?)?
            .abs()?
            .max_all()?
            .to_scalar::<f32>()?;
        assert!(diff < 1e-5, "gelu: {diff}");
        // f64 takes the tensor-op path and still gives the right shape.
        let x = Tensor::randn(0f64, 1.0, (3, 8), &dev)?;
        assert_eq!(geglu(&x)?.dims(), [3, 4]);
        Ok(())
    }
}
