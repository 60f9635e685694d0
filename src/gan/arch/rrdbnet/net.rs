//! RRDBNet's network (ESRGAN, basicsr's `rrdbnet_arch.py`): residual-in-residual dense
//! blocks at the input resolution (pixel-unshuffled first for the x2 / x1 models), then ×2
//! nearest upsampling steps each followed by a convolution.

use candle_core::Tensor;
use candle_nn::Module;

use super::RrdbNetParams;
use crate::error::Result;
use crate::gan::arch::{SrNet, Weights};
use crate::models::layers::activation::ChannelSlopes;
use crate::models::layers::conv::Conv2d;

/// basicsr's leaky-ReLU slope and residual scaling.
const SLOPE: f32 = 0.2;
const RESIDUAL_SCALE: f64 = 0.2;

/// Five densely connected convolutions (each sees the input and all earlier outputs).
struct DenseBlock {
    convs: [Conv2d; 5],
    /// The leaky ReLU after convs 1–4 (gc channels), fused into their output pass.
    lrelu: ChannelSlopes,
}

impl DenseBlock {
    fn new(w: &Weights, prefix: &str, nf: usize, gc: usize) -> Result<Self> {
        let conv = |i: usize| {
            let c_out = if i == 5 { nf } else { gc };
            w.conv3x3(&format!("{prefix}.conv{i}"), nf + (i - 1) * gc, c_out)
        };
        Ok(Self {
            convs: [conv(1)?, conv(2)?, conv(3)?, conv(4)?, conv(5)?],
            lrelu: ChannelSlopes::uniform(SLOPE, gc, w.dtype, w.device)?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut features = vec![x.clone()];
        for conv in &self.convs[..4] {
            let input = Tensor::cat(&features, 1)?;
            features.push(conv.forward_rectified(&input, &self.lrelu)?);
        }
        let x5 = self.convs[4].forward(&Tensor::cat(&features, 1)?)?;
        Ok((x5.affine(RESIDUAL_SCALE, 0.0)? + x)?)
    }
}

/// Three dense blocks with a scaled residual around them.
struct Rrdb {
    blocks: [DenseBlock; 3],
}

impl Rrdb {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = x.clone();
        for block in &self.blocks {
            h = block.forward(&h)?;
        }
        Ok((h.affine(RESIDUAL_SCALE, 0.0)? + x)?)
    }
}

pub struct RrdbNet {
    conv_first: Conv2d,
    body: Vec<Rrdb>,
    conv_body: Conv2d,
    conv_up: Vec<Conv2d>,
    conv_hr: Conv2d,
    conv_last: Conv2d,
    /// The leaky ReLU after the upsampling convs and conv_hr (nf channels).
    lrelu: ChannelSlopes,
    unshuffle: usize,
}

impl RrdbNet {
    pub(crate) fn new(p: &RrdbNetParams, w: &Weights) -> Result<Self> {
        let (nf, gc) = (p.num_feat, p.num_grow_ch);
        let c_first = p.in_channels * p.unshuffle * p.unshuffle;
        let body = (0..p.num_block)
            .map(|b| {
                let block = |r: usize| DenseBlock::new(w, &format!("body.{b}.rdb{r}"), nf, gc);
                Ok(Rrdb {
                    blocks: [block(1)?, block(2)?, block(3)?],
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let conv_up = (1..=p.num_upsample)
            .map(|i| w.conv3x3(&format!("conv_up{i}"), nf, nf))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            conv_first: w.conv3x3("conv_first", c_first, nf)?,
            body,
            conv_body: w.conv3x3("conv_body", nf, nf)?,
            conv_up,
            conv_hr: w.conv3x3("conv_hr", nf, nf)?,
            conv_last: w.conv3x3("conv_last", nf, p.out_channels)?,
            lrelu: ChannelSlopes::uniform(SLOPE, nf, w.dtype, w.device)?,
            unshuffle: p.unshuffle,
        })
    }
}

impl SrNet for RrdbNet {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = if self.unshuffle > 1 {
            candle_nn::ops::pixel_unshuffle(x, self.unshuffle)?
        } else {
            x.clone()
        };
        let feat = self.conv_first.forward(&x)?;
        let mut body = feat.clone();
        for block in &self.body {
            body = block.forward(&body)?;
        }
        let mut feat = self.conv_body.forward_add(&body, &feat)?;
        for conv in &self.conv_up {
            let (_, _, h, w) = feat.dims4()?;
            let up = feat.upsample_nearest2d(2 * h, 2 * w)?;
            feat = conv.forward_rectified(&up, &self.lrelu)?;
        }
        let hr = self.conv_hr.forward_rectified(&feat, &self.lrelu)?;
        Ok(self.conv_last.forward(&hr)?)
    }
}
