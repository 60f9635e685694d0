//! SPAN's element-wise steps: the SiLU between a block's convolutions and its parameter-free
//! attention, `(out3 + x) · (sigmoid(out3) − 0.5)` (spandrel 0.4.2 `SPAB.forward`). On the CPU
//! in f32 each is one multi-threaded pass; elsewhere candle's ops, as torch computes them
//! (the attention as three passes there).

use candle_core::Tensor;
use rayon::prelude::*;

use crate::error::Result;
use crate::models::layers::cpu_dispatch::on_cpu_f32;

/// Elements per parallel work item: large enough to amortise scheduling, small enough to
/// spread a 64-channel 64² tile over many threads.
const CHUNK: usize = 1 << 14;

fn sigmoid(v: f32) -> f32 {
    1.0 / (1.0 + (-v).exp())
}

/// x · sigmoid(x).
pub(super) fn silu(x: &Tensor) -> Result<Tensor> {
    let fast = on_cpu_f32([x], [], x.shape(), |[x], []| {
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(CHUNK)
            .zip(x.par_chunks(CHUNK))
            .for_each(|(o, x)| {
                for (o, &v) in o.iter_mut().zip(x) {
                    *o = v * sigmoid(v);
                }
            });
        out
    })?;
    match fast {
        Some(y) => Ok(y),
        None => Ok(x.silu()?),
    }
}

/// The block's output `(out3 + x) · (sigmoid(out3) − 0.5)`, for `out3` and `x` of one shape.
pub(super) fn attend(out3: &Tensor, x: &Tensor) -> Result<Tensor> {
    if out3.dims() == x.dims() {
        let fast = on_cpu_f32([out3, x], [], x.shape(), |[o3, x], []| {
            let mut out = vec![0f32; x.len()];
            out.par_chunks_mut(CHUNK)
                .zip(o3.par_chunks(CHUNK).zip(x.par_chunks(CHUNK)))
                .for_each(|(o, (o3, x))| {
                    for ((o, &a), &b) in o.iter_mut().zip(o3).zip(x) {
                        *o = (a + b) * (sigmoid(a) - 0.5);
                    }
                });
            out
        })?;
        if let Some(y) = fast {
            return Ok(y);
        }
    }
    let att = (candle_nn::ops::sigmoid(out3)? - 0.5)?;
    Ok(((out3 + x)? * att)?)
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device};

    use super::*;

    #[test]
    fn the_cpu_passes_equal_the_tensor_ops() -> Result<()> {
        let dev = Device::Cpu;
        let a = Tensor::randn(0f32, 3.0, (2, 5, 67, 129), &dev)?;
        let b = Tensor::randn(0f32, 1.0, (2, 5, 67, 129), &dev)?;
        let max = |t: Tensor| -> Result<f32> { Ok(t.abs()?.max_all()?.to_scalar::<f32>()?) };
        // f64 takes the tensor ops: the reference for the f32 passes.
        let (a64, b64) = (a.to_dtype(DType::F64)?, b.to_dtype(DType::F64)?);
        let want = silu(&a64)?.to_dtype(DType::F32)?;
        assert!(max((silu(&a)? - want)?)? < 1e-5);
        let want = attend(&a64, &b64)?.to_dtype(DType::F32)?;
        assert!(max((attend(&a, &b)? - want)?)? < 1e-5);
        Ok(())
    }
}
