//! A drop-in for `candle_nn::Conv2d` with a faster CPU path for the convolutions this project
//! runs most: stride 1, dilation 1, one group (every 3×3 "same" conv and every 1×1 conv of the
//! UNet, the VAE and the GAN networks), computed by `diffsr_kernels::conv` (GEMM routes) or
//! `diffsr_kernels::winograd` (3×3, padding 1, large enough inputs).
//!
//! Weights are kept in the layout both kernel routes want, (C_out, kh·kw, C_in) contiguous,
//! arranged once at construction; [`Conv2d::weight`] is a (C_out, C_in, kh, kw) view of that
//! same storage, so no second copy is held. Everything else — other devices, strides,
//! dilations, groups, integer dtypes — goes through candle's own `conv2d`, so results and
//! feature gates are unchanged there. f16/bf16 inputs run the fast path in f32 and round once
//! at the end.

use candle_core::{DType, Module, Tensor};
use candle_nn::Conv2dConfig;
use diffsr_kernels::conv::{ConvShape, Plan};
use diffsr_kernels::winograd::{self, Tile, WinogradShape};
use diffsr_kernels::{Activation, Epilogue};

use super::activation::ChannelSlopes;
use super::cpu_dispatch::{cpu_threads, on_cpu_f32};
use super::transpose::transpose_last_two;
use crate::profile::{self, Stage};

/// A 2-D convolution layer; the same constructor and `forward` as `candle_nn::Conv2d`.
#[derive(Debug, Clone)]
pub struct Conv2d {
    /// (C_out, C_in / groups, kh, kw); on the fast path a permuted view of `taps`.
    weight: Tensor,
    bias: Option<Tensor>,
    config: Conv2dConfig,
    /// (C_out, kh·kw, C_in), contiguous: set when the CPU fast path applies to this layer.
    taps: Option<Tensor>,
    /// Whether inputs of at least [`WINOGRAD_MIN_PIXELS`] positions take the Winograd route.
    winograd: bool,
}

/// Fewest output positions (batch × height × width) the Winograd route takes. Its kernels
/// are transformed at each call, at a cost proportional to the weights; the saving grows with
/// the positions. Measured (`cargo bench -p diffsr-kernels --bench conv_cpu`, 512 channels,
/// batch 2): at 16² (512 positions) the transform eats the saving, at 32² the route is
/// 1.4–1.9× faster.
const WINOGRAD_MIN_PIXELS: usize = 1024;

impl Conv2d {
    pub fn new(weight: Tensor, bias: Option<Tensor>, config: Conv2dConfig) -> Self {
        let fast = weight.device().is_cpu()
            && config.stride == 1
            && config.dilation == 1
            && config.groups == 1
            && matches!(weight.dtype(), DType::F32 | DType::F16 | DType::BF16)
            && weight.rank() == 4;
        if fast {
            if let Ok((weight, taps)) = arrange_taps(&weight) {
                return Self {
                    weight,
                    bias,
                    config,
                    taps: Some(taps),
                    winograd: false,
                };
            }
        }
        Self {
            weight,
            bias,
            config,
            taps: None,
            winograd: false,
        }
    }

    /// Runs this layer, on the CPU and for inputs of at least 1024 positions, by Winograd's
    /// minimal filtering (`diffsr_kernels::winograd`: F(4×4, 3×3), 4× fewer multiplies, or
    /// F(2×2, 3×3) for narrow images), the same result up to rounding. Applies to 3×3,
    /// stride-1, padding-1 layers (others are returned unchanged). The transformed
    /// kernels are made at each call (a few % of the call) and dropped after it, so the layer
    /// holds no second copy of its weights.
    pub fn with_winograd(mut self) -> Self {
        let square3 = self.taps.as_ref().and_then(|t| t.dims3().ok()).map(|d| d.1) == Some(9);
        self.winograd = square3 && self.config.padding == 1;
        self
    }

    pub fn config(&self) -> &Conv2dConfig {
        &self.config
    }

    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    /// candle's own convolution (what `candle_nn::Conv2d::forward` does).
    fn forward_candle(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let c = &self.config;
        let y = x.conv2d_with_algo(
            &self.weight,
            c.padding,
            c.stride,
            c.dilation,
            c.groups,
            c.cudnn_fwd_algo,
        )?;
        match &self.bias {
            None => Ok(y),
            Some(bias) => {
                let b = bias.dims1()?;
                y.broadcast_add(&bias.reshape((1, b, 1, 1))?)
            }
        }
    }

    /// conv(x) + residual, with the add fused into the convolution's output pass on the CPU
    /// fast path in f32 (elsewhere a separate add, as torch does it).
    pub fn forward_add(&self, x: &Tensor, residual: &Tensor) -> candle_core::Result<Tensor> {
        let _scope = profile::scope(Stage::Conv);
        if let Some(taps) = &self.taps {
            if x.dtype() == DType::F32 && residual.dtype() == DType::F32 {
                if let Some(y) = self.forward_fast(x, taps, Some(residual), None)? {
                    return Ok(y);
                }
            }
        }
        self.forward_plain(x)? + residual
    }

    /// slopes(conv(x)): the rectifier fused into the convolution's output pass on the CPU
    /// fast path in f32 (elsewhere applied after, as torch does).
    pub fn forward_rectified(&self, x: &Tensor, slopes: &ChannelSlopes) -> crate::Result<Tensor> {
        let _scope = profile::scope(Stage::Conv);
        if let Some(taps) = &self.taps {
            if x.dtype() == DType::F32 && slopes.host().len() == taps.dim(0)? {
                if let Some(y) = self.forward_fast(x, taps, None, Some(slopes.host()))? {
                    return Ok(y);
                }
            }
        }
        slopes.apply(&self.forward_plain(x)?)
    }

    fn forward_plain(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        if let Some(taps) = &self.taps {
            if let Some(y) = self.forward_fast(x, taps, None, None)? {
                return Ok(y);
            }
        }
        self.forward_candle(x)
    }

    /// The fast path, or `None` when this input needs candle's. A `residual` must have the
    /// output's shape (else `None`); `slopes`, one per output channel, rectify the result.
    fn forward_fast(
        &self,
        x: &Tensor,
        taps: &Tensor,
        residual: Option<&Tensor>,
        slopes: Option<&[f32]>,
    ) -> candle_core::Result<Option<Tensor>> {
        if !x.device().is_cpu() || x.dtype() != taps.dtype() || x.rank() != 4 {
            return Ok(None);
        }
        let (b, ci, h, w) = x.dims4()?;
        let (co, ntaps, tci) = taps.dims3()?;
        let (_, _, kh, kw) = self.weight.dims4()?;
        let p = self.config.padding;
        if ci != tci || ntaps != kh * kw || h + 2 * p < kh || w + 2 * p < kw {
            return Ok(None);
        }
        if let Some(bias) = &self.bias {
            if bias.dims() != [co] || bias.dtype() != x.dtype() || !bias.device().is_cpu() {
                return Ok(None);
            }
        }
        let shape = ConvShape {
            b,
            ci,
            h,
            w,
            co,
            kh,
            kw,
            pad: p,
        };
        let out_dims = (b, co, shape.ho(), shape.wo());
        let residual = match residual {
            Some(r) if r.dims() == [b, co, shape.ho(), shape.wo()] && r.device().is_cpu() => {
                Some(r.to_dtype(DType::F32)?)
            }
            Some(_) => return Ok(None),
            None => None,
        };
        let dtype = x.dtype();
        let x32 = x.to_dtype(DType::F32)?;
        let t32 = taps.to_dtype(DType::F32)?;
        let b32 = self
            .bias
            .as_ref()
            .map(|bias| bias.to_dtype(DType::F32))
            .transpose()?;
        let threads = cpu_threads();
        let winograd = self.winograd && b * h * w >= WINOGRAD_MIN_PIXELS && h.min(w) >= 4;
        let y = on_cpu_f32(
            [&x32, &t32],
            [b32.as_ref(), residual.as_ref()],
            out_dims,
            |[x, taps], [bias, residual]| {
                let epilogue = Epilogue {
                    bias,
                    residual,
                    activation: slopes.map_or(Activation::Identity, Activation::Rectify),
                };
                if winograd {
                    let tile = winograd_tile(h, w);
                    let u = winograd::transform_weights(taps, co, ci, tile, threads);
                    let s = WinogradShape { b, ci, co, h, w };
                    winograd::conv3x3(x, &u, tile, &epilogue, &s, threads)
                } else {
                    diffsr_kernels::conv::conv2d(x, taps, &epilogue, &shape, Plan::auto(threads))
                }
            },
        )?;
        match y {
            Some(y) if dtype != DType::F32 => Ok(Some(y.to_dtype(dtype)?)),
            y => Ok(y),
        }
    }
}

impl Module for Conv2d {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let _scope = profile::scope(Stage::Conv);
        self.forward_plain(x)
    }
}

/// The Winograd variant for an h × w input: F(4×4, 3×3) (faster on every shape of
/// `cargo bench -p diffsr-kernels --bench conv_cpu`: 1.05–1.3×) unless the image is so narrow
/// that its 4-wide tiles would mostly compute padding.
fn winograd_tile(h: usize, w: usize) -> Tile {
    if h.min(w) < 8 {
        Tile::F2
    } else {
        Tile::F4
    }
}

/// (C_out, C_in, kh, kw) → (a (C_out, C_in, kh, kw) view of `taps`, taps (C_out, kh·kw, C_in)).
fn arrange_taps(weight: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
    let (co, ci, kh, kw) = weight.dims4()?;
    // (co, ci, kh·kw) → (co, kh·kw, ci)
    let taps = transpose_last_two(&weight.reshape((co, ci, kh * kw))?)?;
    // (co, ci, kh, kw), sharing the storage
    let view = taps.reshape((co, kh, kw, ci))?.permute((0, 3, 1, 2))?;
    Ok((view, taps))
}

/// `candle_nn::conv2d` for this layer: `weight` (C_out, C_in / groups, k, k) and `bias`
/// (C_out) read through `vb` with the same names and init hints; 3×3 "same" layers take the
/// Winograd route (see [`Conv2d::with_winograd`]).
pub fn conv2d(
    in_channels: usize,
    out_channels: usize,
    kernel_size: usize,
    cfg: Conv2dConfig,
    vb: candle_nn::VarBuilder,
) -> candle_core::Result<Conv2d> {
    let c = candle_nn::conv2d(in_channels, out_channels, kernel_size, cfg, vb)?;
    Ok(Conv2d::new(c.weight().clone(), c.bias().cloned(), cfg).with_winograd())
}
