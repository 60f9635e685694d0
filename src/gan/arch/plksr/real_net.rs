//! RealPLKSR's network (spandrel 0.4.2 `architectures/PLKSR/__arch/RealPLKSR.py`, eval mode):
//! `feats` = a 3×3 head conv, `n_blocks` blocks (layer norm or GroupNorm; a Mish mixer of two
//! 3×3 convs; the partial large kernel; EA; 1×1 refine), an eval-mode `Dropout2d` (identity,
//! no tensors, one index) and a 3×3 tail conv to 3·s² channels; the input, each channel
//! repeated s² times, is added, then a pixel shuffle or DySample brings it to the image.

use std::collections::HashMap;

use candle_core::Tensor;
use candle_nn::Module;

use super::dysample::DySample;
use super::large_kernel::LargeKernel;
use super::layers::{conv, repeat_channels, Ea};
use super::ops::{channel_layer_norm, mish};
use super::real_config::{RealPlksrParams, NORM_GROUPS};
use crate::error::Result;
use crate::gan::arch::srvgg::pixel_shuffle_add_nearest;
use crate::gan::arch::{SrNet, Weights};
use crate::models::layers::conv::Conv2d;
use crate::models::layers::GroupNorm;

/// RealPLKSR's `LayerNorm` eps, and `nn.GroupNorm`'s default.
const LAYER_NORM_EPS: f64 = 1e-6;
const GROUP_NORM_EPS: f64 = 1e-5;

/// Where a block normalises.
enum Norm {
    /// `layer_norm`: over each pixel's channels, before the mixer.
    Layer { weight: Tensor, bias: Tensor },
    /// `norm`: GroupNorm(4, dim) after the refinement.
    Group(GroupNorm),
}

struct RealBlock {
    norm: Norm,
    mixer: [Conv2d; 2],
    lk: LargeKernel,
    attn: Option<Ea>,
    refine: Conv2d,
    pdim: usize,
}

impl RealBlock {
    fn new(w: &Weights, prefix: &str, p: &RealPlksrParams) -> Result<Self> {
        let dim = p.dim;
        let norm = if p.layer_norm {
            Norm::Layer {
                weight: w.get(&format!("{prefix}.layer_norm.weight"), &[dim])?,
                bias: w.get(&format!("{prefix}.layer_norm.bias"), &[dim])?,
            }
        } else {
            let tensors: HashMap<String, Tensor> = [
                (
                    "weight".to_string(),
                    w.get(&format!("{prefix}.norm.weight"), &[dim])?,
                ),
                (
                    "bias".to_string(),
                    w.get(&format!("{prefix}.norm.bias"), &[dim])?,
                ),
            ]
            .into();
            let vb = candle_nn::VarBuilder::from_tensors(tensors, w.dtype, w.device);
            Norm::Group(GroupNorm::new(NORM_GROUPS, dim, GROUP_NORM_EPS, vb)?)
        };
        let m = |i, c_in, c_out| conv(w, &format!("{prefix}.channel_mixer.{i}"), c_in, c_out, 3, 1);
        Ok(Self {
            norm,
            mixer: [m(0, dim, 2 * dim)?, m(2, 2 * dim, dim)?],
            lk: LargeKernel::plk(w, prefix, p.pdim, p.kernel_size)?,
            attn: p
                .use_ea
                .then(|| Ea::new(w, &format!("{prefix}.attn"), dim))
                .transpose()?,
            refine: conv(w, &format!("{prefix}.refine"), dim, dim, 1, 1)?,
            pdim: p.pdim,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let [c0, c2] = &self.mixer;
        let first = match &self.norm {
            Norm::Layer { weight, bias } => {
                c0.forward(&channel_layer_norm(x, weight, bias, LAYER_NORM_EPS)?)?
            }
            Norm::Group(_) => c0.forward(x)?,
        };
        let mixed = c2.forward(&mish(&first)?)?;
        drop(first);
        let mut h = self.lk.forward(&mixed, self.pdim)?;
        drop(mixed);
        if let Some(attn) = &self.attn {
            h = attn.forward(&h)?;
        }
        match &self.norm {
            Norm::Layer { .. } => Ok(self.refine.forward_add(&h, x)?),
            Norm::Group(gn) => Ok((gn.forward(&self.refine.forward(&h)?)? + x)?),
        }
    }
}

pub struct RealPlksr {
    head: Conv2d,
    blocks: Vec<RealBlock>,
    tail: Conv2d,
    /// The output stage: DySample, or (`None`) a pixel shuffle.
    dysample: Option<DySample>,
    scale: usize,
}

impl RealPlksr {
    pub(crate) fn new(p: &RealPlksrParams, w: &Weights) -> Result<Self> {
        let blocks = (1..=p.n_blocks)
            .map(|i| RealBlock::new(w, &format!("feats.{i}"), p))
            .collect::<Result<_>>()?;
        let s2 = p.scale * p.scale;
        let dysample = p
            .dysample
            .then(|| {
                let groups = p.dysample_groups();
                DySample::new(w, "to_img", 3 * s2, 3, p.scale, groups, p.scale != 1)
            })
            .transpose()?;
        Ok(Self {
            head: conv(w, "feats.0", 3, p.dim, 3, 1)?,
            blocks,
            // feats.{n+1} is the Dropout2d.
            tail: conv(w, &format!("feats.{}", p.n_blocks + 2), p.dim, 3 * s2, 3, 1)?,
            dysample,
            scale: p.scale,
        })
    }
}

impl SrNet for RealPlksr {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = self.head.forward(x)?;
        for block in &self.blocks {
            h = block.forward(&h)?;
        }
        let s2 = self.scale * self.scale;
        match &self.dysample {
            None => {
                let out = self.tail.forward(&h)?;
                drop(h);
                pixel_shuffle_add_nearest(&out, x, self.scale)
            }
            Some(dysample) => {
                let out = self.tail.forward_add(&h, &repeat_channels(x, s2)?)?;
                drop(h);
                dysample.forward(&out)
            }
        }
    }
}
