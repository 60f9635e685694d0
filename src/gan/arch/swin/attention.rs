//! The core of Swin's `WindowAttention` (spandrel 0.4.2 `architectures/SwinIR/__arch/SwinIR.py`
//! and `architectures/Swin2SR/__arch/Swin2SR.py`): from the qkv projection of a whole feature
//! map to the per-window, per-head softmax(logits + bias + mask) v, back in image order and
//! before the output projection. The networks hold the projections; this holds the bias and
//! the logit scale.
//!
//! On the CPU in f32 one kernel call does it all
//! ([`diffsr_kernels::window_attention`]: roll and window partition by indexing, bias and mask
//! added in place, windows spread over the threads). Elsewhere (CUDA, Metal, f16 / bf16, f64)
//! the reference's tensor ops run: roll, partition, batched matmuls over windows × heads, the
//! bias and mask broadcast, reverse, roll back ([`super::tensor_path`]).

use candle_core::{DType, Tensor};
use diffsr_kernels::window_attention::{window_attention, Logits, WindowShape};

use super::tensor_path;
use crate::error::{Error, Result};
use crate::models::layers::cpu_dispatch::{cpu_threads, on_cpu_f32};

/// A window-attention call the network should never make (its shapes are checked at load).
fn invalid(message: String) -> Error {
    candle_core::Error::Msg(message).into()
}

/// How a window's scores are made from q and k.
#[derive(Debug, Clone)]
pub enum LogitScale {
    /// scale · q kᵀ: SwinIR, HAT and DRCT use head_dim^-0.5.
    Scaled(f64),
    /// Swin V2's cosine attention (Swin2SR): cos(q, k) times one scale per head,
    /// exp(min(logit_scale, ln 100)).
    Cosine(Vec<f32>),
}

/// Window attention over `heads` heads in windows of `window` × `window` tokens.
#[derive(Debug, Clone)]
pub struct WindowAttention {
    heads: usize,
    window: usize,
    /// (heads, n, n): the relative-position bias of every token pair, in the compute dtype and
    /// on the compute device.
    bias: Tensor,
    logits: LogitScale,
    /// The cosine scales as a (1, heads, 1, 1) tensor, for the tensor-op path.
    cosine_scales: Option<Tensor>,
}

impl WindowAttention {
    /// `bias` must be (heads, window², window²); cosine scales, one per head.
    pub fn new(heads: usize, window: usize, bias: Tensor, logits: LogitScale) -> Result<Self> {
        let n = window * window;
        if bias.dims() != [heads, n, n] {
            return Err(invalid(format!(
                "window attention bias {:?}, expected [{heads}, {n}, {n}]",
                bias.dims()
            )));
        }
        let cosine_scales = match &logits {
            LogitScale::Scaled(_) => None,
            LogitScale::Cosine(scales) => {
                if scales.len() != heads {
                    return Err(invalid(format!(
                        "{} cosine scales for {heads} heads",
                        scales.len()
                    )));
                }
                let t = Tensor::from_slice(scales, (1, heads, 1, 1), bias.device())?;
                Some(t.to_dtype(bias.dtype())?)
            }
        };
        Ok(Self {
            heads,
            window,
            bias: bias.contiguous()?,
            logits,
            cosine_scales,
        })
    }

    pub fn heads(&self) -> usize {
        self.heads
    }

    pub fn window(&self) -> usize {
        self.window
    }

    /// `qkv` (B, height · width, 3C) in image order, its columns [q | k | v] of `heads` heads
    /// each → (B, height · width, C) in image order: per window (after a cyclic shift of
    /// `shift` up and left) and head, softmax(logits + bias + mask) v, the mask applied when
    /// shifted. `height` and `width` must be multiples of the window.
    pub fn attend(
        &self,
        qkv: &Tensor,
        height: usize,
        width: usize,
        shift: usize,
    ) -> Result<Tensor> {
        let (b, l, c3) = qkv.dims3()?;
        let c = c3 / 3;
        let ws = self.window;
        if l != height * width
            || c3 != 3 * c
            || c % self.heads != 0
            || ws == 0
            || height % ws != 0
            || width % ws != 0
            || shift >= ws
        {
            return Err(invalid(format!(
                "window attention on {:?} as {height}x{width} with {} heads, window {ws}, \
                 shift {shift}",
                qkv.dims(),
                self.heads
            )));
        }
        let shape = WindowShape {
            batch: b,
            height,
            width,
            heads: self.heads,
            head_dim: c / self.heads,
            window: ws,
            shift,
        };
        if qkv.dtype() == DType::F32 && self.bias.dtype() == DType::F32 {
            let threads = cpu_threads();
            let logits = &self.logits;
            let out = on_cpu_f32([qkv, &self.bias], [], (b, l, c), |[qkv, bias], []| {
                let logits = match logits {
                    LogitScale::Scaled(s) => Logits::Scaled(*s as f32),
                    LogitScale::Cosine(scales) => Logits::Cosine(scales),
                };
                window_attention(qkv, &shape, logits, bias, threads)
            })?;
            if let Some(out) = out {
                return Ok(out);
            }
        }
        tensor_path::attend(qkv, &shape, self.scale(), &self.bias)
    }

    /// The logit scale for the tensor-op path (a cosine scale always has its tensor, made in
    /// [`Self::new`]).
    fn scale(&self) -> tensor_path::Scale<'_> {
        match (&self.cosine_scales, &self.logits) {
            (Some(t), _) => tensor_path::Scale::Cosine(t),
            (None, LogitScale::Scaled(s)) => tensor_path::Scale::Scaled(*s),
            (None, LogitScale::Cosine(_)) => tensor_path::Scale::Scaled(1.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;

    fn max_diff(a: &Tensor, b: &Tensor) -> Result<f64> {
        let d = (a.to_dtype(DType::F64)? - b.to_dtype(DType::F64)?)?;
        Ok(d.abs()?.flatten_all()?.max(0)?.to_scalar::<f64>()?)
    }

    /// The kernel (CPU f32) and the tensor ops (f64) agree, shifted or not, scaled or cosine.
    #[test]
    fn kernel_and_tensor_ops_agree() -> Result<()> {
        let dev = Device::Cpu;
        let (b, h, w, heads, d, ws) = (2, 8, 12, 3, 4, 4);
        let c = heads * d;
        let qkv = Tensor::randn(0f32, 1.0, (b, h * w, 3 * c), &dev)?;
        let bias = Tensor::randn(0f32, 1.0, (heads, ws * ws, ws * ws), &dev)?;
        for logits in [
            LogitScale::Scaled(0.5),
            LogitScale::Cosine(vec![4.0, 10.0, 1.5]),
        ] {
            for shift in [0, 2] {
                let f32_ = WindowAttention::new(heads, ws, bias.clone(), logits.clone())?;
                let f64_ =
                    WindowAttention::new(heads, ws, bias.to_dtype(DType::F64)?, logits.clone())?;
                let got = f32_.attend(&qkv, h, w, shift)?;
                let want = f64_.attend(&qkv.to_dtype(DType::F64)?, h, w, shift)?;
                assert_eq!(got.dims(), [b, h * w, c]);
                let diff = max_diff(&got, &want)?;
                assert!(diff < 1e-5, "{logits:?} shift {shift}: {diff}");
            }
        }
        Ok(())
    }
}
