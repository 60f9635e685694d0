//! SPAN's network (spandrel 0.4.2 `architectures/SPAN/__arch/span.py`, Wan et al., "Swift
//! Parameter-free Attention Network for Efficient Super-Resolution"): a folded 3×3 conv,
//! six SPAB blocks (three folded convs with SiLU between them and a parameter-free
//! attention), a folded conv after the last block, a 1×1 conv over four of the feature maps,
//! and a 3×3 conv + pixel shuffle. Module names follow the reference so its keys load as is.

use candle_core::{Device, Tensor};
use candle_nn::Module;

use super::config::{BLOCKS, IMG_RANGE, RGB_MEAN};
use super::conv3xc::fused_conv3xc;
use super::pointwise::{attend, silu};
use super::SpanParams;
use crate::error::{Error, Result};
use crate::gan::arch::{SrNet, Weights};
use crate::models::layers::conv::Conv2d;

/// Swift parameter-free attention block: `c1_r`, `c2_r`, `c3_r`.
struct Spab {
    convs: [Conv2d; 3],
}

impl Spab {
    fn new(w: &Weights, prefix: &str, fc: usize) -> Result<Self> {
        let conv = |i: usize| fused_conv3xc(w, &format!("{prefix}.c{i}_r"), fc, fc);
        Ok(Self {
            convs: [conv(1)?, conv(2)?, conv(3)?],
        })
    }

    /// The block's output and its first conv's output after the SiLU, which SPAN's conv_cat
    /// reads from the last block: the reference returns `out1`, but its `SiLU(inplace=True)`
    /// has overwritten that tensor with its activation by then.
    fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let act1 = silu(&self.convs[0].forward(x)?)?;
        let act2 = silu(&self.convs[1].forward(&act1)?)?;
        let out3 = self.convs[2].forward(&act2)?;
        drop(act2);
        Ok((attend(&out3, x)?, act1))
    }
}

pub struct Span {
    /// `(1, 3, 1, 1)` RGB mean, in the compute dtype, when the input is normalised.
    mean: Option<Tensor>,
    conv_1: Conv2d,
    blocks: Vec<Spab>,
    conv_2: Conv2d,
    conv_cat: Conv2d,
    upsampler: Conv2d,
    upscale: usize,
}

impl Span {
    pub(crate) fn new(p: &SpanParams, w: &Weights) -> Result<Self> {
        let fc = p.feature_channels;
        let mean = if p.norm {
            // The reference subtracts a (1, 3, 1, 1) mean: any other input fails to broadcast
            // there (spandrel loads such a model, then its forward raises).
            if p.in_channels != 3 {
                return Err(Error::unsupported(
                    "SPAN input normalisation",
                    format!(
                        "subtracts an RGB mean, so it needs 3 input channels, not {} (only \
                         models with the `no_norm` buffer take other inputs)",
                        p.in_channels
                    ),
                ));
            }
            let mean = Tensor::from_slice(&RGB_MEAN, (1, 3, 1, 1), &Device::Cpu)?;
            Some(mean.to_dtype(w.dtype)?.to_device(w.device)?)
        } else {
            None
        };
        let blocks = (1..=BLOCKS)
            .map(|b| Spab::new(w, &format!("block_{b}"), fc))
            .collect::<Result<Vec<_>>>()?;
        let conv_cat = Conv2d::new(
            w.get("conv_cat.weight", &[fc, 4 * fc, 1, 1])?,
            Some(w.get("conv_cat.bias", &[fc])?),
            Default::default(),
        );
        let shuffled = p.out_channels * p.upscale * p.upscale;
        Ok(Self {
            mean,
            conv_1: fused_conv3xc(w, "conv_1", p.in_channels, fc)?,
            blocks,
            conv_2: fused_conv3xc(w, "conv_2", fc, fc)?,
            conv_cat,
            upsampler: w.conv3x3("upsampler.0", fc, shuffled)?,
            upscale: p.upscale,
        })
    }
}

impl SrNet for Span {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let feature = match &self.mean {
            Some(mean) => {
                let x = x.broadcast_sub(mean)?.affine(IMG_RANGE, 0.0)?;
                self.conv_1.forward(&x)?
            }
            None => self.conv_1.forward(x)?,
        };
        // conv_cat reads block 1's output and block 6's first activation.
        let mut h = feature.clone();
        let mut b1 = None;
        let mut b5_2 = None;
        for block in &self.blocks {
            let (out, act1) = block.forward(&h)?;
            b1.get_or_insert_with(|| out.clone());
            h = out;
            b5_2 = Some(act1);
        }
        let (Some(b1), Some(b5_2)) = (b1, b5_2) else {
            return Err(Error::unsupported("SPAN", "has no blocks"));
        };
        let b6 = self.conv_2.forward(&h)?;
        drop(h);
        let cat = Tensor::cat(&[&feature, &b6, &b1, &b5_2], 1)?;
        drop((feature, b6, b1, b5_2));
        let out = self.conv_cat.forward(&cat)?;
        drop(cat);
        let up = self.upsampler.forward(&out)?;
        Ok(candle_nn::ops::pixel_shuffle(&up, self.upscale)?)
    }
}
