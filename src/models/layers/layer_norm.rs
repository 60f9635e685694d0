//! `nn.LayerNorm` over the last dimension, for the text encoder: on the CPU in f32 one pass
//! per row with vectorised sums (`diffsr_kernels::layer_norm`), rows split over the thread
//! pool; elsewhere candle's `layer_norm` op. Statistics as torch computes them: biased
//! variance, eps inside the square root.

use candle_core::{DType, Tensor};

use super::cpu_dispatch::on_cpu_f32;

/// y = (x - mean) / sqrt(var + eps) · weight + bias over the last dimension of `x`.
pub(crate) fn layer_norm(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    eps: f32,
) -> candle_core::Result<Tensor> {
    let d = x.dims().last().copied().unwrap_or(0);
    if d > 0 && weight.elem_count() == d && bias.elem_count() == d {
        let out = on_cpu_f32([x, weight, bias], [], x.shape(), |[x, w, b], []| {
            diffsr_kernels::layer_norm::layer_norm(x, w, b, eps)
        })?;
        if let Some(out) = out {
            return Ok(out);
        }
    }
    if matches!(x.dtype(), DType::F32 | DType::F16 | DType::BF16) {
        candle_nn::ops::layer_norm(&x.contiguous()?, weight, bias, eps)
    } else {
        layer_norm_ops(x, weight, bias, eps)
    }
}

/// The same in tensor ops, for the dtypes candle's op lacks (f64).
fn layer_norm_ops(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    eps: f32,
) -> candle_core::Result<Tensor> {
    let last = candle_core::D::Minus1;
    let centred = x.broadcast_sub(&x.mean_keepdim(last)?)?;
    let var = centred.sqr()?.mean_keepdim(last)?;
    centred
        .broadcast_div(&(var + eps as f64)?.sqrt()?)?
        .broadcast_mul(weight)?
        .broadcast_add(bias)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn equals_candles_layer_norm() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        for shape in [vec![2usize, 77, 1024], vec![3, 5], vec![1, 1, 37]] {
            let d = *shape.last().unwrap();
            // An offset mean, as residual streams have.
            let x = (Tensor::randn(0f32, 1.0, shape.clone(), &dev)? + 3.0)?;
            let w = Tensor::randn(1f32, 0.1, d, &dev)?;
            let b = Tensor::randn(0f32, 0.1, d, &dev)?;
            // The reference in f64 (candle's f32 op takes E[x²] - mean², which loses digits
            // when the mean is large: 5e-5 off here).
            let f64_ = |t: &Tensor| t.to_dtype(DType::F64);
            let want = layer_norm_ops(&f64_(&x)?, &f64_(&w)?, &f64_(&b)?, 1e-5)?;
            let got = layer_norm(&x, &w, &b, 1e-5)?;
            let diff = (f64_(&got)? - want)?.abs()?.max_all()?.to_scalar::<f64>()?;
            assert!(diff < 3e-6, "{shape:?}: {diff}");
        }
        // f64 takes the tensor ops.
        let x = Tensor::randn(0f64, 1.0, (2, 8), &dev)?;
        let ones = Tensor::ones(8, DType::F64, &dev)?;
        let zeros = Tensor::zeros(8, DType::F64, &dev)?;
        assert_eq!(layer_norm(&x, &ones, &zeros, 1e-5)?.dims(), [2, 8]);
        Ok(())
    }
}
