//! Softmax over the last axis, as torch's `softmax(dim=-1)`: on the CPU in f32 one pass per
//! row with the vectorised `exp` of [`super::fast_math`], rows spread over the threads;
//! elsewhere candle's `softmax_last_dim`.
//!
//! candle's CPU kernel calls libm's `expf` per element. In the VAE's mid-block attention at a
//! 128×128 latent that is 4 × 4096 × 16384 exponentials a decode, a quarter of the attention's
//! time.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, DType, Layout, Shape, Tensor};

use super::fast_math::softmax_row;

/// Below this many elements the work stays on the calling thread.
const PARALLEL_MIN_ELEMS: usize = 1 << 16;

/// softmax(x) along the last axis.
pub fn softmax_last_dim(x: &Tensor) -> candle_core::Result<Tensor> {
    if x.device().is_cpu() && x.dtype() == DType::F32 && x.rank() > 0 {
        x.apply_op1_no_bwd(&SoftmaxOp)
    } else {
        candle_nn::ops::softmax_last_dim(x)
    }
}

struct SoftmaxOp;

impl CustomOp1 for SoftmaxOp {
    fn name(&self) -> &'static str {
        "diffsr-softmax-last-dim"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(v) = storage else {
            candle_core::bail!("softmax: expected f32, got {:?}", storage.dtype());
        };
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("softmax: input must be contiguous");
        };
        let shape = layout.shape().clone();
        let row = *shape.dims().last().unwrap_or(&1);
        let mut out = v[start..end].to_vec();
        if let Some(rows) = out.len().checked_div(row) {
            let threads = candle_core::utils::get_num_threads()
                .min(rows)
                .min(out.len().div_ceil(PARALLEL_MIN_ELEMS))
                .max(1);
            if threads <= 1 {
                out.chunks_exact_mut(row).for_each(softmax_row);
            } else {
                let per = rows.div_ceil(threads) * row;
                rayon::scope(|scope| {
                    for part in out.chunks_mut(per) {
                        scope.spawn(move |_| part.chunks_exact_mut(row).for_each(softmax_row));
                    }
                });
            }
        }
        Ok((CpuStorage::F32(out), shape))
    }
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
