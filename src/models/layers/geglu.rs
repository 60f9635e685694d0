//! The GEGLU gate of diffusers' `GEGLU` (models/activations.py): the projection's output is
//! split in two halves along the last axis, and the result is value · GELU(gate) with torch's
//! exact (erf) GELU; and that GELU alone ([`gelu_erf`], CLIP's MLP activation).
//!
//! On the CPU in f32 this is one pass over the projection, rows spread over the threads, with
//! the vectorised erf of [`super::fast_math`]; candle's `chunk` + `gelu_erf` + `mul` take three
//! passes with a scalar libm `erff` per element. Other devices and dtypes use those tensor ops.

use candle_core::{DType, Device, Tensor, D};

use super::cpu_slice::f32_slice;
use super::fast_math::{geglu_row, gelu_erf_slice};

/// Below this many output elements the work stays on the calling thread.
const PARALLEL_MIN_ELEMS: usize = 1 << 16;

/// value · GELU(gate) for `projected` (…, 2·inner) = [value | gate] → (…, inner).
pub fn geglu(projected: &Tensor) -> candle_core::Result<Tensor> {
    let dims = projected.dims();
    let last = *dims.last().unwrap_or(&0);
    if !projected.device().is_cpu() || projected.dtype() != DType::F32 || last % 2 != 0 {
        let halves = projected.chunk(2, D::Minus1)?;
        return halves[0].mul(&halves[1].gelu_erf()?);
    }
    let inner = last / 2;
    let x = projected.contiguous()?;
    let rows = x.elem_count() / last.max(1);
    let mut out = vec![0f32; rows * inner];
    {
        let (storage, layout) = x.storage_and_layout();
        let src = f32_slice(&storage, layout)?;
        let run = |src: &[f32], out: &mut [f32]| {
            for (row, o) in src.chunks_exact(last).zip(out.chunks_exact_mut(inner)) {
                let (value, gate) = row.split_at(inner);
                geglu_row(value, gate, o);
            }
        };
        let threads = candle_core::utils::get_num_threads()
            .min(rows)
            .min((rows * inner).div_ceil(PARALLEL_MIN_ELEMS))
            .max(1);
        if threads <= 1 || inner == 0 {
            run(src, &mut out);
        } else {
            let per = rows.div_ceil(threads);
            rayon::scope(|scope| {
                for (s, o) in src.chunks(per * last).zip(out.chunks_mut(per * inner)) {
                    let run = &run;
                    scope.spawn(move |_| run(s, o));
                }
            });
        }
    }
    let mut shape = dims.to_vec();
    if let Some(l) = shape.last_mut() {
        *l = inner;
    }
    Tensor::from_vec(out, shape, &Device::Cpu)
}

/// GELU(x) with torch's exact (erf) form, elementwise.
pub fn gelu_erf(x: &Tensor) -> candle_core::Result<Tensor> {
    if !x.device().is_cpu() || x.dtype() != DType::F32 {
        return x.gelu_erf();
    }
    let x = x.contiguous()?;
    let mut out = vec![0f32; x.elem_count()];
    {
        let (storage, layout) = x.storage_and_layout();
        let src = f32_slice(&storage, layout)?;
        let threads = candle_core::utils::get_num_threads()
            .min(src.len().div_ceil(PARALLEL_MIN_ELEMS))
            .max(1);
        let per = src.len().div_ceil(threads).max(1);
        let mut parts = src.chunks(per).zip(out.chunks_mut(per));
        let first = parts.next();
        rayon::scope(|scope| {
            for (s, o) in parts {
                scope.spawn(move |_| gelu_erf_slice(s, o));
            }
            if let Some((s, o)) = first {
                gelu_erf_slice(s, o);
            }
        });
    }
    Tensor::from_vec(out, x.shape(), &Device::Cpu)
}

#[cfg(test)]
mod tests {
    use super::*;

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
