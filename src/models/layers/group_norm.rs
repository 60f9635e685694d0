//! `torch.nn.GroupNorm` (affine), as diffusers uses it before every convolution and attention,
//! optionally fused with the SiLU that nearly always follows it (models/resnet.py,
//! models/unets/unet_2d_condition.py `conv_norm_out` + `conv_act`).
//!
//! Statistics are always computed in at least f32 (f64 accumulators on the CPU), so half
//! precision weights and activations neither overflow nor lose the mean. On the CPU a single
//! fused kernel replaces the half-dozen full-size temporaries a tensor-op formulation needs;
//! other devices take the tensor-op path, computed in f32.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp3, DType, Layout, Shape, Tensor, WithDType};
use candle_nn::VarBuilder;

use std::any::TypeId;

use super::fast_math::{affine_silu, mean_inv_std};
use super::group_norm_stats::{next_mode, push_recorded, StatsMode};
use crate::profile::{self, Stage};
use crate::{Error, Result};

/// Below this many elements the CPU kernel stays on the calling thread: spawning costs more.
const PARALLEL_MIN_ELEMS: usize = 1 << 16;

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
        self.run(x, false)
    }

    /// SiLU(GroupNorm(x)), in one pass on the CPU.
    pub fn forward_silu(&self, x: &Tensor) -> Result<Tensor> {
        self.run(x, true)
    }

    fn run(&self, x: &Tensor, silu: bool) -> Result<Tensor> {
        let _scope = profile::scope(Stage::GroupNorm);
        let dims = x.dims();
        if dims.len() < 3 || dims[1] != self.weight.dim(0)? {
            return Err(Error::Tensor(candle_core::Error::Msg(format!(
                "GroupNorm over {} channels got input of shape {:?}",
                self.weight.dim(0)?,
                dims
            ))));
        }
        let mode = next_mode()?;
        if !matches!(mode, StatsMode::Own) {
            return self.run_tensor_ops(x, silu, mode);
        }
        if x.device().is_cpu() {
            let op = GroupNormOp {
                num_groups: self.num_groups,
                eps: self.eps,
                silu,
            };
            // The kernel reads contiguous memory; this is a no-op for the conv / add / cat
            // outputs that normally arrive here.
            let x = x.contiguous()?;
            return Ok(x.apply_op3_no_bwd(&self.weight, &self.bias, &op)?);
        }
        self.run_tensor_ops(x, silu, StatsMode::Own)
    }

    /// Device-agnostic formulation (two-pass mean / variance in f32). A replayed (mean, var),
    /// each (groups,), replaces the input's own statistics; while recording (see
    /// [`super::group_norm_stats`]) the batch-averaged statistics are stored.
    fn run_tensor_ops(&self, x: &Tensor, silu: bool, mode: StatsMode) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let (b, c) = (dims[0], dims[1]);
        let per_group = x.elem_count() / (b * self.num_groups);
        let work = match x.dtype() {
            DType::F64 => DType::F64,
            _ => DType::F32,
        };
        let xg = x.reshape((b, self.num_groups, per_group))?.to_dtype(work)?;
        let (mean, var) = match mode {
            StatsMode::Replay(mean, var) => {
                let shape = (1, self.num_groups, 1);
                (
                    mean.to_dtype(work)?.reshape(shape)?,
                    var.to_dtype(work)?.reshape(shape)?,
                )
            }
            own_or_record => {
                let mean = (xg.sum_keepdim(2)? / per_group as f64)?;
                let var = (xg.broadcast_sub(&mean)?.sqr()?.sum_keepdim(2)? / per_group as f64)?;
                if matches!(own_or_record, StatsMode::Record) {
                    push_recorded(mean.mean(0)?.flatten_all()?, var.mean(0)?.flatten_all()?);
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

/// The fused CPU kernel: x, weight, bias -> (SiLU of) the normalised, affine-mapped x.
struct GroupNormOp {
    num_groups: usize,
    eps: f64,
    silu: bool,
}

impl CustomOp3 for GroupNormOp {
    fn name(&self) -> &'static str {
        "diffsr-group-norm"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let weight = channel_values(ws, wl)?;
        let bias = channel_values(bs, bl)?;
        let shape = xl.shape().clone();
        let storage = match xs {
            CpuStorage::F32(v) => {
                storage_of(self.kernel(contiguous(v, xl)?, &shape, &weight, &bias))
            }
            CpuStorage::F16(v) => {
                storage_of(self.kernel(contiguous(v, xl)?, &shape, &weight, &bias))
            }
            CpuStorage::BF16(v) => {
                storage_of(self.kernel(contiguous(v, xl)?, &shape, &weight, &bias))
            }
            CpuStorage::F64(v) => {
                storage_of(self.kernel(contiguous(v, xl)?, &shape, &weight, &bias))
            }
            other => candle_core::bail!("group norm: unsupported dtype {:?}", other.dtype()),
        };
        Ok((storage, shape))
    }
}

/// Turns a typed output vector back into CPU storage (keeps the match arms short).
fn storage_of<E: WithDType>(v: Vec<E>) -> CpuStorage {
    E::to_cpu_storage_owned(v)
}

fn contiguous<'a, E>(v: &'a [E], layout: &Layout) -> candle_core::Result<&'a [E]> {
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&v[start..end]),
        None => candle_core::bail!("group norm: input must be contiguous"),
    }
}

/// The per-channel weight or bias as f32, whatever its storage dtype.
fn channel_values(s: &CpuStorage, l: &Layout) -> candle_core::Result<Vec<f32>> {
    fn conv<E: WithDType>(v: &[E], l: &Layout) -> candle_core::Result<Vec<f32>> {
        Ok(contiguous(v, l)?
            .iter()
            .map(|e| e.to_f64() as f32)
            .collect())
    }
    match s {
        CpuStorage::F32(v) => conv(v, l),
        CpuStorage::F16(v) => conv(v, l),
        CpuStorage::BF16(v) => conv(v, l),
        CpuStorage::F64(v) => conv(v, l),
        other => candle_core::bail!("group norm: unsupported affine dtype {:?}", other.dtype()),
    }
}

impl GroupNormOp {
    fn kernel<E: WithDType>(&self, x: &[E], shape: &Shape, w: &[f32], b: &[f32]) -> Vec<E> {
        let dims = shape.dims();
        let channels = dims[1];
        let spatial: usize = dims[2..].iter().product();
        let per_group_channels = channels / self.num_groups;
        let group_len = per_group_channels * spatial;
        let total_groups = x.len() / group_len.max(1);
        let mut out = vec![E::zero(); x.len()];
        if group_len == 0 {
            return out;
        }

        let run_groups = |first: usize, xs: &[E], os: &mut [E]| {
            for (i, (xg, og)) in xs
                .chunks(group_len)
                .zip(os.chunks_mut(group_len))
                .enumerate()
            {
                let g = (first + i) % self.num_groups;
                let c0 = g * per_group_channels;
                self.normalise_group(
                    xg,
                    og,
                    &w[c0..c0 + per_group_channels],
                    &b[c0..c0 + per_group_channels],
                    spatial,
                );
            }
        };

        let threads = candle_core::utils::get_num_threads()
            .min(total_groups)
            .min(x.len().div_ceil(PARALLEL_MIN_ELEMS))
            .max(1);
        if threads == 1 {
            run_groups(0, x, &mut out);
        } else {
            let groups_per_thread = total_groups.div_ceil(threads);
            let span = groups_per_thread * group_len;
            rayon::scope(|scope| {
                for (t, (xs, os)) in x.chunks(span).zip(out.chunks_mut(span)).enumerate() {
                    let run_groups = &run_groups;
                    scope.spawn(move |_| run_groups(t * groups_per_thread, xs, os));
                }
            });
        }
        out
    }

    /// Normalises one group (its channels are contiguous, `spatial` values each).
    fn normalise_group<E: WithDType>(
        &self,
        x: &[E],
        out: &mut [E],
        w: &[f32],
        b: &[f32],
        spatial: usize,
    ) {
        if let (Some(x), Some(out)) = (as_f32(x), as_f32_mut(out)) {
            return self.normalise_group_f32(x, out, w, b, spatial);
        }
        let n = x.len() as f64;
        // Two passes (mean, then centred squares) with f64 lanes: exact enough in any dtype,
        // and the lane layout lets the compiler vectorise the sums.
        let mean = lane_sum(x, |v| v) / n;
        let var = lane_sum(x, |v| (v - mean) * (v - mean)) / n;
        let inv_std = 1.0 / (var + self.eps).sqrt();
        for (ch, (xc, oc)) in x.chunks(spatial).zip(out.chunks_mut(spatial)).enumerate() {
            let scale = (inv_std * w[ch] as f64) as f32;
            let shift = (b[ch] as f64 - mean * inv_std * w[ch] as f64) as f32;
            if self.silu {
                for (o, &v) in oc.iter_mut().zip(xc) {
                    let y = v.to_f64() as f32 * scale + shift;
                    *o = E::from_f64((y / (1.0 + (-y).exp())) as f64);
                }
            } else {
                for (o, &v) in oc.iter_mut().zip(xc) {
                    *o = E::from_f64((v.to_f64() as f32 * scale + shift) as f64);
                }
            }
        }
    }
}

impl GroupNormOp {
    /// [`Self::normalise_group`] for f32, with the vectorised kernels of `fast_math`: the
    /// same two passes (mean, then centred squares), partial sums in f32 lanes folded into
    /// f64 every 1024 values.
    fn normalise_group_f32(
        &self,
        x: &[f32],
        out: &mut [f32],
        w: &[f32],
        b: &[f32],
        spatial: usize,
    ) {
        let (mean, inv_std) = mean_inv_std(x, self.eps);
        for (ch, (xc, oc)) in x.chunks(spatial).zip(out.chunks_mut(spatial)).enumerate() {
            let scale = (inv_std * w[ch] as f64) as f32;
            let shift = (b[ch] as f64 - mean * inv_std * w[ch] as f64) as f32;
            affine_silu(xc, oc, scale, shift, self.silu);
        }
    }
}

/// `x` as f32 values when `E` is f32.
fn as_f32<E: 'static>(x: &[E]) -> Option<&[f32]> {
    (TypeId::of::<E>() == TypeId::of::<f32>())
        // SAFETY: E is f32, so the slice's memory is f32 values.
        .then(|| unsafe { std::slice::from_raw_parts(x.as_ptr().cast::<f32>(), x.len()) })
}

/// `x` as mutable f32 values when `E` is f32.
fn as_f32_mut<E: 'static>(x: &mut [E]) -> Option<&mut [f32]> {
    (TypeId::of::<E>() == TypeId::of::<f32>())
        // SAFETY: E is f32, so the slice's memory is f32 values.
        .then(|| unsafe { std::slice::from_raw_parts_mut(x.as_mut_ptr().cast::<f32>(), x.len()) })
}

/// Sum of `f(x)` over a slice, in eight f64 lanes.
fn lane_sum<E: WithDType>(x: &[E], f: impl Fn(f64) -> f64) -> f64 {
    let mut lanes = [0f64; 8];
    let mut chunks = x.chunks_exact(8);
    for chunk in &mut chunks {
        for (lane, &v) in lanes.iter_mut().zip(chunk) {
            *lane += f(v.to_f64());
        }
    }
    let tail: f64 = chunks.remainder().iter().map(|&v| f(v.to_f64())).sum();
    lanes.iter().sum::<f64>() + tail
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
                    let fast = gn.run(&x, silu)?.to_dtype(DType::F32)?;
                    let slow = gn
                        .run_tensor_ops(&x, silu, StatsMode::Own)?
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
