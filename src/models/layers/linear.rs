//! `torch.nn.Linear` (y = x Wᵀ + b) with the parameter names and layout of `candle_nn::Linear`,
//! and a CPU path that runs the whole layer as one GEMM.
//!
//! candle's `Linear` broadcasts the weight over the batch, runs one matmul per batch entry and
//! then adds the bias in a second pass over the output. Here, on the CPU in f32, the input is
//! viewed as one (rows, in) matrix and `diffsr_kernels::linear` runs the layer as one GEMM
//! accumulating onto bias + residual, the threads splitting all rows at once. The weight is
//! held transposed, (in, out), arranged once at load, except in layers that only ever see few
//! rows (the text encoder, cross-attention keys and values: [`linear_few_rows`]), which keep
//! it as stored, (out, in), for the kernel's banded few-rows route. Other devices and dtypes
//! take candle's own path, unchanged.

use candle_core::{DType, Module, Tensor};
use candle_nn::VarBuilder;
use diffsr_kernels::linear::{LinearShape, WeightLayout};
use diffsr_kernels::{Activation, Epilogue};

use super::cpu_dispatch::{cpu_threads, on_cpu_f32};
use super::transpose::transpose_last_two;
use crate::profile::{self, Stage};

/// A linear layer: `weight` (out, in), optional `bias` (out).
#[derive(Debug, Clone)]
pub struct Linear {
    /// candle's layer, for other devices and dtypes. On the CPU in f32 its weight is a
    /// transposed view of `weight_t`, so the weights are held once.
    inner: candle_nn::Linear,
    /// Wᵀ, (in, out) contiguous, on the CPU in f32: the GEMM's right operand in the layout its
    /// packing reads fastest (up to 2× on the UNet's smaller projections).
    weight_t: Option<Tensor>,
    /// W kept (out, in) contiguous in `inner`, for inputs of few rows (CPU, f32).
    few_rows: bool,
}

/// A biased linear layer read from `vb` (`weight`, `bias`), as `candle_nn::linear`.
pub fn linear(input: usize, output: usize, vb: VarBuilder) -> candle_core::Result<Linear> {
    let l = candle_nn::linear(input, output, vb)?;
    Linear::from_parts(l.weight().clone(), l.bias().cloned())
}

/// A linear layer for inputs of at most a few hundred rows (text tokens), read from `vb`
/// (`weight`, and `bias` when `bias`): its weight stays as stored, (out, in), which the
/// banded few-rows kernel reads fastest. Larger inputs still work, more slowly.
pub fn linear_few_rows(
    input: usize,
    output: usize,
    bias: bool,
    vb: VarBuilder,
) -> candle_core::Result<Linear> {
    let l = if bias {
        candle_nn::linear(input, output, vb)?
    } else {
        candle_nn::linear_no_bias(input, output, vb)?
    };
    let weight = l.weight();
    let few_rows = weight.device().is_cpu() && weight.dtype() == DType::F32 && weight.rank() == 2;
    let weight = if few_rows {
        weight.contiguous()?
    } else {
        weight.clone()
    };
    Ok(Linear {
        inner: candle_nn::Linear::new(weight, l.bias().cloned()),
        weight_t: None,
        few_rows,
    })
}

/// A linear layer without bias read from `vb` (`weight`), as `candle_nn::linear_no_bias`.
pub fn linear_no_bias(input: usize, output: usize, vb: VarBuilder) -> candle_core::Result<Linear> {
    let l = candle_nn::linear_no_bias(input, output, vb)?;
    Linear::from_parts(l.weight().clone(), None)
}

impl Linear {
    pub fn new(weight: Tensor, bias: Option<Tensor>) -> Self {
        match Self::from_parts(weight.clone(), bias.clone()) {
            Ok(l) => l,
            // Only a weight that is not a matrix gets here; candle's layer reports that
            // when it runs.
            Err(_) => Self {
                inner: candle_nn::Linear::new(weight, bias),
                weight_t: None,
                few_rows: false,
            },
        }
    }

    fn from_parts(weight: Tensor, bias: Option<Tensor>) -> candle_core::Result<Self> {
        if weight.device().is_cpu() && weight.dtype() == DType::F32 && weight.rank() == 2 {
            let weight_t = transpose_last_two(&weight)?;
            Ok(Self {
                inner: candle_nn::Linear::new(weight_t.t()?, bias),
                weight_t: Some(weight_t),
                few_rows: false,
            })
        } else {
            Ok(Self {
                inner: candle_nn::Linear::new(weight, bias),
                weight_t: None,
                few_rows: false,
            })
        }
    }

    pub fn weight(&self) -> &Tensor {
        self.inner.weight()
    }

    pub fn bias(&self) -> Option<&Tensor> {
        self.inner.bias()
    }

    /// x Wᵀ + b + residual, the add fused into the GEMM on the CPU in f32 (the output starts
    /// as the residual plus the bias); elsewhere a separate add.
    pub fn forward_add(&self, x: &Tensor, residual: &Tensor) -> candle_core::Result<Tensor> {
        let _scope = profile::scope(Stage::Linear);
        match self.forward_cpu_f32(x, Some(residual), Activation::Identity)? {
            Some(y) => Ok(y),
            None => self.inner.forward(x)? + residual,
        }
    }

    /// GELU(x Wᵀ + b) (the erf form), the activation applied by each thread to its band of
    /// the output as soon as the GEMM has made it (still in cache) on the CPU in f32; elsewhere
    /// a separate op.
    pub fn forward_gelu_erf(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let _scope = profile::scope(Stage::Linear);
        match self.forward_cpu_f32(x, None, Activation::GeluErf)? {
            Some(y) => Ok(y),
            None => super::geglu::gelu_erf(&self.inner.forward(x)?),
        }
    }

    /// The one-GEMM CPU path, or `None` when this input takes candle's. A `residual` must
    /// have the output's shape and be f32 (else `None`).
    fn forward_cpu_f32(
        &self,
        x: &Tensor,
        residual: Option<&Tensor>,
        activation: Activation,
    ) -> candle_core::Result<Option<Tensor>> {
        // The weight as held, Wᵀ (in, out) or W (out, in) for few rows, and (in_f, out_f).
        let (w, layout, (in_f, out_f)) = match (&self.weight_t, self.few_rows) {
            (Some(wt), _) => (wt, WeightLayout::InOut, wt.dims2()?),
            (None, true) => {
                let w = self.inner.weight();
                let (o, i) = w.dims2()?;
                (w, WeightLayout::OutIn, (i, o))
            }
            (None, false) => return Ok(None),
        };
        let dims = x.dims();
        let Some((&last, leading)) = dims.split_last() else {
            return Ok(None);
        };
        if last != in_f {
            return Ok(None);
        }
        let rows: usize = leading.iter().product();
        let bias = match self.inner.bias() {
            Some(b) if b.dims() == [out_f] => Some(b),
            Some(_) => return Ok(None),
            None => None,
        };
        if let Some(r) = residual {
            if r.elem_count() != rows * out_f || r.dims().last() != Some(&out_f) {
                return Ok(None);
            }
        }
        let mut shape = dims.to_vec();
        shape[leading.len()] = out_f;
        let s = LinearShape {
            rows,
            input: in_f,
            output: out_f,
        };
        let threads = cpu_threads();
        on_cpu_f32(
            [x, w],
            [bias, residual],
            shape,
            |[x, w], [bias, residual]| {
                let epilogue = Epilogue {
                    bias,
                    residual,
                    activation,
                };
                diffsr_kernels::linear::linear(x, w, layout, s, &epilogue, threads)
            },
        )
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let _scope = profile::scope(Stage::Linear);
        match self.forward_cpu_f32(x, None, Activation::Identity)? {
            Some(y) => Ok(y),
            None => self.inner.forward(x),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn max_rel(a: &Tensor, b: &Tensor) -> f32 {
        let d = (a - b).unwrap().abs().unwrap().max_all().unwrap();
        let s = b.abs().unwrap().max_all().unwrap();
        d.to_scalar::<f32>().unwrap() / s.to_scalar::<f32>().unwrap().max(1e-30)
    }

    #[test]
    fn one_gemm_path_equals_candles_linear() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        for (shape, bias) in [
            (vec![2usize, 77, 48], true),
            (vec![3, 48], false),
            (vec![2, 5, 7, 48], true),
            (vec![1, 48], true),
        ] {
            let w = Tensor::randn(0f32, 1.0, (33, 48), &dev)?;
            let b = bias
                .then(|| Tensor::randn(0f32, 1.0, 33, &dev))
                .transpose()?;
            let x = Tensor::randn(0f32, 1.0, shape.clone(), &dev)?;
            let ours = Linear::new(w.clone(), b.clone());
            assert!(
                ours.forward_cpu_f32(&x, None, Activation::Identity)?
                    .is_some(),
                "fast path not taken"
            );
            let y = ours.forward(&x)?;
            let r = candle_nn::Linear::new(w, b).forward(&x)?;
            assert_eq!(y.dims(), r.dims());
            let e = max_rel(&y, &r);
            assert!(e < 1e-5, "{shape:?} bias {bias}: relative error {e}");
        }
        // The fused residual, with and without bias, and on candle's path (f64).
        for bias in [true, false] {
            let w = Tensor::randn(0f32, 1.0, (20, 12), &dev)?;
            let b = bias
                .then(|| Tensor::randn(0f32, 1.0, 20, &dev))
                .transpose()?;
            let x = Tensor::randn(0f32, 1.0, (2, 9, 12), &dev)?;
            let r = Tensor::randn(0f32, 1.0, (2, 9, 20), &dev)?;
            let ours = Linear::new(w.clone(), b.clone());
            let want = (candle_nn::Linear::new(w, b).forward(&x)? + &r)?;
            let e = max_rel(&ours.forward_add(&x, &r)?, &want);
            assert!(e < 1e-5, "residual, bias {bias}: relative error {e}");
            let l64 = Linear::new(ours.weight().to_dtype(DType::F64)?, None);
            let got = l64.forward_add(&x.to_dtype(DType::F64)?, &r.to_dtype(DType::F64)?)?;
            assert_eq!(got.dims(), [2, 9, 20]);
        }
        // A non-contiguous input (a transposed view) and an f64 one (candle's path).
        let w = Tensor::randn(0f32, 1.0, (16, 24), &dev)?;
        let x = Tensor::randn(0f32, 1.0, (24, 10), &dev)?.t()?;
        let y = Linear::new(w.clone(), None).forward(&x)?;
        let r = candle_nn::Linear::new(w.clone(), None).forward(&x)?;
        assert!(max_rel(&y, &r) < 1e-5);
        let l64 = Linear::new(w.to_dtype(DType::F64)?, None);
        assert!(l64
            .forward_cpu_f32(&x.to_dtype(DType::F64)?, None, Activation::Identity)?
            .is_none());
        Ok(())
    }
}
