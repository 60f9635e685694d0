//! `torch.nn.GroupNorm` (affine), as diffusers uses it before every convolution and attention,
//! optionally fused with the SiLU that nearly always follows it (models/resnet.py,
//! models/unets/unet_2d_condition.py `conv_norm_out` + `conv_act`).
//!
//! Statistics are always computed in at least f32 (f64 accumulators on the CPU), so half
//! precision weights and activations neither overflow nor lose the mean. On the CPU a single
//! fused kernel (`diffsr_kernels::group_norm`) replaces the half-dozen full-size temporaries a
//! tensor-op formulation needs; other devices, and recorded or replayed statistics
//! ([`super::group_norm_stats`]), take the tensor-op path, computed in f32.

use candle_core::{DType, Tensor};
use candle_nn::VarBuilder;
use diffsr_kernels::group_norm::{group_norm, group_norm_f32, GroupNormParams};

use super::cpu_dispatch::{cpu_threads, on_cpu, on_cpu_f32};
use super::group_norm_stats::{GroupNormMode, StatsStep};
use crate::profile::{self, Stage};
use crate::{Error, Result};

/// Affine group normalisation over (B, C, ...) with `weight` and `bias` of length C.
#[derive(Debug, Clone)]
pub struct GroupNorm {
    weight: Tensor,
    bias: Tensor,
    num_groups: usize,
    eps: f64,
}

impl GroupNorm {
    /// Loads `weight` and `bias` (C,) from `vb`. `num_groups` must divide `channels`.
    pub fn new(num_groups: usize, channels: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        if num_groups == 0 || channels % num_groups != 0 {
            return Err(Error::unsupported(
                "norm_num_groups",
                format!("{num_groups} groups do not divide {channels} channels"),
            ));
        }
        Ok(Self {
            weight: vb.get(channels, "weight")?,
            bias: vb.get(channels, "bias")?,
            num_groups,
            eps,
        })
    }

    /// GroupNorm(x).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.run(x, false, &mut GroupNormMode::Own)
    }

    /// SiLU(GroupNorm(x)), in one pass on the CPU.
    pub fn forward_silu(&self, x: &Tensor) -> Result<Tensor> {
        self.run(x, true, &mut GroupNormMode::Own)
    }

    /// GroupNorm(x), then SiLU when `silu`, with the statistics `mode` says: its own, recorded
    /// or replayed.
    pub fn forward_with_stats(
        &self,
        x: &Tensor,
        silu: bool,
        mode: &mut GroupNormMode,
    ) -> Result<Tensor> {
        self.run(x, silu, mode)
    }

    fn run(&self, x: &Tensor, silu: bool, mode: &mut GroupNormMode) -> Result<Tensor> {
        let _scope = profile::scope(Stage::GroupNorm);
        let dims = x.dims();
        if dims.len() < 3 || dims[1] != self.weight.dim(0)? {
            return Err(Error::Tensor(candle_core::Error::Msg(format!(
                "GroupNorm over {} channels got input of shape {:?}",
                self.weight.dim(0)?,
                dims
            ))));
        }
        if mode.is_own() {
            if let Some(y) = self.run_cpu(x, silu)? {
                return Ok(y);
            }
        }
        self.run_tensor_ops(x, silu, mode)
    }

    /// The fused CPU kernel, or `None` off the CPU. f32 runs the vectorised kernel; f64 the
    /// one with f64 lanes; f16 and bf16 the f64-lane kernel on their exact f32 values, rounded
    /// back once (the same bits as computing in the half type itself).
    fn run_cpu(&self, x: &Tensor, silu: bool) -> Result<Option<Tensor>> {
        if !x.device().is_cpu() {
            return Ok(None);
        }
        let dims = x.dims();
        let weight = self.weight.to_dtype(DType::F32)?.to_vec1::<f32>()?;
        let bias = self.bias.to_dtype(DType::F32)?.to_vec1::<f32>()?;
        let p = GroupNormParams {
            channels: dims[1],
            spatial: dims[2..].iter().product(),
            groups: self.num_groups,
            eps: self.eps,
            weight: &weight,
            bias: &bias,
            silu,
        };
        let threads = cpu_threads();
        let lanes_f32 = |x: &Tensor| {
            on_cpu_f32([x], [], x.shape(), |[x], []| {
                group_norm(x, &p, threads, |v| v as f64, |v| v as f32)
            })
        };
        let y = match x.dtype() {
            DType::F32 => on_cpu_f32([x], [], x.shape(), |[x], []| group_norm_f32(x, &p, threads))?,
            DType::F64 => on_cpu::<f64, 1, 0>([x], [], x.shape(), |[x], []| {
                group_norm(x, &p, threads, |v| v, |v| v)
            })?,
            DType::F16 | DType::BF16 => lanes_f32(&x.to_dtype(DType::F32)?)?
                .map(|y| y.to_dtype(x.dtype()))
                .transpose()?,
            _ => None,
        };
        Ok(y)
    }

    /// Device-agnostic formulation (two-pass mean / variance in f32). A replayed (mean, var),
    /// each (groups,), replaces the input's own statistics; while recording (see
    /// [`super::group_norm_stats`]) the batch-averaged statistics are stored.
    fn run_tensor_ops(&self, x: &Tensor, silu: bool, mode: &mut GroupNormMode) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let (b, c) = (dims[0], dims[1]);
        let per_group = x.elem_count() / (b * self.num_groups);
        let work = match x.dtype() {
            DType::F64 => DType::F64,
            _ => DType::F32,
        };
        let xg = x.reshape((b, self.num_groups, per_group))?.to_dtype(work)?;
        let (mean, var) = match mode.step()? {
            StatsStep::Replay(mean, var) => {
                let shape = (1, self.num_groups, 1);
                (
                    mean.to_dtype(work)?.reshape(shape)?,
                    var.to_dtype(work)?.reshape(shape)?,
                )
            }
            StatsStep::Compute { record } => {
                let mean = (xg.sum_keepdim(2)? / per_group as f64)?;
                let var = (xg.broadcast_sub(&mean)?.sqr()?.sum_keepdim(2)? / per_group as f64)?;
                if record {
                    mode.push(mean.mean(0)?.flatten_all()?, var.mean(0)?.flatten_all()?);
                }
                (mean, var)
            }
        };
        let centred = xg.broadcast_sub(&mean)?;
        let normed = centred.broadcast_div(&(var + self.eps)?.sqrt()?)?;
        let mut affine_shape = vec![1usize; dims.len()];
        affine_shape[1] = c;
        let weight = self.weight.to_dtype(work)?.reshape(affine_shape.clone())?;
        let bias = self.bias.to_dtype(work)?.reshape(affine_shape)?;
        let mut y = normed
            .reshape(dims)?
            .broadcast_mul(&weight)?
            .broadcast_add(&bias)?;
        if silu {
            y = y.silu()?;
        }
        Ok(y.to_dtype(x.dtype())?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn norm(channels: usize, groups: usize, dtype: DType) -> candle_core::Result<GroupNorm> {
        let dev = Device::Cpu;
        let ramp = |scale: f64, shift: f64| {
            Tensor::arange(0u32, channels as u32, &dev)?
                .to_dtype(DType::F32)?
                .affine(scale, shift)?
                .to_dtype(dtype)
        };
        Ok(GroupNorm {
            weight: ramp(0.03, 0.7)?,
            bias: ramp(-0.02, 0.1)?,
            num_groups: groups,
            eps: 1e-6,
        })
    }

    /// The fused CPU kernel agrees with the tensor-op path other devices take, on one thread
    /// and (above PARALLEL_MIN_ELEMS) on several.
    #[test]
    fn kernel_matches_tensor_ops() -> Result<()> {
        for (shape, groups) in [((2, 8, 5, 7), 4), ((2, 32, 48, 48), 8)] {
            let x = Tensor::randn(0.5f32, 2.0, shape, &Device::Cpu)?;
            for dtype in [DType::F32, DType::F16] {
                let gn = norm(shape.1, groups, dtype)?;
                let x = x.to_dtype(dtype)?;
                for silu in [false, true] {
                    let fast = gn
                        .run(&x, silu, &mut GroupNormMode::Own)?
                        .to_dtype(DType::F32)?;
                    let slow = gn
                        .run_tensor_ops(&x, silu, &mut GroupNormMode::Own)?
                        .to_dtype(DType::F32)?;
                    let diff = (fast - slow)?
                        .abs()?
                        .flatten_all()?
                        .max(0)?
                        .to_scalar::<f32>()?;
                    let tol = if dtype == DType::F32 { 1e-5 } else { 4e-3 };
                    assert!(diff <= tol, "{shape:?} {dtype:?} silu={silu}: {diff}");
                }
            }
        }
        Ok(())
    }

    #[test]
    fn groups_must_divide_channels() {
        let vb = VarBuilder::zeros(DType::F32, &Device::Cpu);
        let err = GroupNorm::new(3, 8, 1e-5, vb).unwrap_err();
        assert!(matches!(err, Error::Unsupported { ref field, .. } if field == "norm_num_groups"));
    }
}
