//! DAT's network (spandrel 0.4.2 `architectures/DAT/__arch/DAT.py`, `DAT.forward`): the
//! input less the RGB mean, a 3×3 conv to the embedding, the residual groups on the tokens
//! (channels-last, (B, H·W, C)) between two layer norms, a closing convolution with a long
//! skip, and the reconstruction (pixel-shuffle or pixel-shuffle-direct), the mean added back.

use candle_core::{Device, Tensor};
use candle_nn::Module;

use super::config::RGB_MEAN;
use super::group::{ResiConv, ResidualGroup};
use super::layout::upsample_steps;
use super::modules::{conv, Norm};
use super::{DatParams, DatUpsampler};
use crate::error::Result;
use crate::gan::arch::{SrNet, Weights};
use crate::models::layers::activation::ChannelSlopes;
use crate::models::layers::conv::Conv2d;

/// `nn.LeakyReLU()`'s default slope, after `conv_before_upsample`.
const UPSAMPLE_SLOPE: f32 = 0.01;

enum Reconstruction {
    /// conv_before_upsample (+ leaky ReLU), (conv, shuffle factor) steps, conv_last.
    PixelShuffle {
        before: Conv2d,
        lrelu: ChannelSlopes,
        steps: Vec<(Conv2d, usize)>,
        last: Conv2d,
    },
    /// One conv to scale² · channels, then the shuffle.
    Direct { conv: Conv2d, scale: usize },
}

pub struct Dat {
    /// (1, C_in, 1, 1) RGB mean for 3-channel models; `None` (zero) otherwise.
    mean: Option<Tensor>,
    img_range: f64,
    conv_first: Conv2d,
    before_rg: Norm,
    layers: Vec<ResidualGroup>,
    norm: Norm,
    conv_after_body: ResiConv,
    reconstruction: Reconstruction,
}

impl Dat {
    pub(crate) fn new(p: &DatParams, w: &Weights) -> Result<Self> {
        let c = p.embed_dim;
        let mean = (p.in_channels == 3)
            .then(|| {
                Tensor::from_slice(&RGB_MEAN, (1, 3, 1, 1), &Device::Cpu)?
                    .to_dtype(w.dtype)?
                    .to_device(w.device)
            })
            .transpose()?;
        let layers = (0..p.num_layers())
            .map(|i| ResidualGroup::new(w, p, i))
            .collect::<Result<Vec<_>>>()?;
        let reconstruction = match p.upsampler {
            DatUpsampler::PixelShuffle => {
                let nf = p.num_feat;
                let steps = upsample_steps(p.upscale)
                    .into_iter()
                    .enumerate()
                    .map(|(k, r)| {
                        Ok((
                            conv(w, &format!("upsample.{}", 2 * k), nf, r * r * nf, 3)?,
                            r,
                        ))
                    })
                    .collect::<Result<Vec<_>>>()?;
                Reconstruction::PixelShuffle {
                    before: conv(w, "conv_before_upsample.0", c, nf, 3)?,
                    lrelu: ChannelSlopes::uniform(UPSAMPLE_SLOPE, nf, w.dtype, w.device)?,
                    steps,
                    last: conv(w, "conv_last", nf, p.in_channels, 3)?,
                }
            }
            DatUpsampler::PixelShuffleDirect => {
                let s = p.upscale;
                Reconstruction::Direct {
                    conv: conv(w, "upsample.0", c, s * s * p.in_channels, 3)?,
                    scale: s,
                }
            }
        };
        Ok(Self {
            mean,
            img_range: p.img_range,
            conv_first: conv(w, "conv_first", p.in_channels, c, 3)?,
            before_rg: Norm::new(w, "before_RG.1", c)?,
            layers,
            norm: Norm::new(w, "norm", c)?,
            conv_after_body: ResiConv::new(w, "conv_after_body", c, p.resi_connection)?,
            reconstruction,
        })
    }

    /// `forward_features`: feat (B, C, H, W) → (B, C, H, W) through the residual groups.
    fn features(&self, feat: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = feat.dims4()?;
        let tokens = feat.flatten_from(2)?.transpose(1, 2)?;
        let mut x = self.before_rg.forward(&tokens)?;
        for layer in &self.layers {
            x = layer.forward(&x, (h, w))?;
        }
        let x = self.norm.forward(&x)?;
        Ok(x.transpose(1, 2)?.reshape((b, c, h, w))?)
    }
}

impl SrNet for Dat {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let unit_range = self.img_range == 1.0;
        let x = match &self.mean {
            Some(mean) => x.broadcast_sub(mean)?,
            None => x.clone(),
        };
        let x = if unit_range {
            x
        } else {
            x.affine(self.img_range, 0.0)?
        };
        let feat = self.conv_first.forward(&x)?;
        let body = self.features(&feat)?;
        let body = (self.conv_after_body.forward(&body)? + &feat)?;
        drop(feat);
        let y = match &self.reconstruction {
            Reconstruction::PixelShuffle {
                before,
                lrelu,
                steps,
                last,
            } => {
                let mut y = before.forward_rectified(&body, lrelu)?;
                for (conv, r) in steps {
                    y = candle_nn::ops::pixel_shuffle(&conv.forward(&y)?, *r)?;
                }
                last.forward(&y)?
            }
            Reconstruction::Direct { conv, scale } => {
                candle_nn::ops::pixel_shuffle(&conv.forward(&body)?, *scale)?
            }
        };
        let y = if unit_range {
            y
        } else {
            y.affine(1.0 / self.img_range, 0.0)?
        };
        Ok(match &self.mean {
            Some(mean) => y.broadcast_add(mean)?,
            None => y,
        })
    }
}
