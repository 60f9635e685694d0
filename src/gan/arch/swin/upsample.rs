//! The reconstruction tails of the Swin super-resolution networks (spandrel 0.4.2
//! `architectures/SwinIR/__arch/SwinIR.py`, `upsampler`; Swin2SR and HAT have the same):
//! - `pixelshuffle` (classical SR): `conv_before_upsample.0` + leaky ReLU 0.01, then
//!   `Upsample` (a 3×3 conv to 4× the channels and a ×2 pixel shuffle per factor 2, or one to
//!   9× and a ×3 shuffle), then `conv_last`;
//! - `pixelshuffledirect` (lightweight SR): one 3×3 conv to scale² · out channels and a pixel
//!   shuffle (`upsample.0`);
//! - `nearest+conv` (real-world SR): `conv_before_upsample.0` + leaky ReLU 0.01, per factor 2
//!   a nearest ×2 and `conv_upN` + leaky ReLU 0.2, then `conv_hr` + leaky ReLU 0.2 and
//!   `conv_last`;
//! - none (denoising, JPEG): the input plus `conv_last` of the features.

use candle_core::Tensor;
use candle_nn::Module;

use crate::error::Result;
use crate::gan::arch::Weights;
use crate::models::layers::activation::ChannelSlopes;
use crate::models::layers::conv::Conv2d;

/// The reconstruction kind, spandrel's `upsampler`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upsampler {
    PixelShuffle,
    PixelShuffleDirect,
    NearestConv,
    None,
}

impl Upsampler {
    /// The reference's name (`""` for none).
    pub fn name(self) -> &'static str {
        match self {
            Self::PixelShuffle => "pixelshuffle",
            Self::PixelShuffleDirect => "pixelshuffledirect",
            Self::NearestConv => "nearest+conv",
            Self::None => "",
        }
    }
}

/// A tail's sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TailDims {
    /// The body's channels (embed_dim).
    pub embed: usize,
    /// The channels between `conv_before_upsample` and `conv_last` (64 in every released
    /// model).
    pub num_feat: usize,
    pub out_channels: usize,
    /// The tail's factor.
    pub scale: usize,
}

/// The pixel-shuffle factors of `Upsample(scale)`: 2 per factor 2 of a power of two, or one 3.
/// `None` for other scales, which the reference refuses.
pub fn shuffle_stages(scale: usize) -> Option<Vec<usize>> {
    if scale.is_power_of_two() {
        Some(vec![2; scale.trailing_zeros() as usize])
    } else if scale == 3 {
        Some(vec![3])
    } else {
        None
    }
}

/// `(name, shape)` of a 3×3 conv's weight and bias.
fn conv3(prefix: &str, c_out: usize, c_in: usize) -> [(String, Vec<usize>); 2] {
    [
        (format!("{prefix}.weight"), vec![c_out, c_in, 3, 3]),
        (format!("{prefix}.bias"), vec![c_out]),
    ]
}

/// The tensors a tail reads, `(name, shape)`. A pixel-shuffle scale without stages (not 2^n
/// or 3) lists none; detection refuses it first.
pub fn tail_tensors(kind: Upsampler, d: &TailDims) -> Vec<(String, Vec<usize>)> {
    let mut out = Vec::new();
    let nf = d.num_feat;
    match kind {
        Upsampler::PixelShuffle => {
            out.extend(conv3("conv_before_upsample.0", nf, d.embed));
            for (i, r) in shuffle_stages(d.scale)
                .unwrap_or_default()
                .iter()
                .enumerate()
            {
                out.extend(conv3(&format!("upsample.{}", 2 * i), r * r * nf, nf));
            }
            out.extend(conv3("conv_last", d.out_channels, nf));
        }
        Upsampler::PixelShuffleDirect => {
            out.extend(conv3(
                "upsample.0",
                d.scale * d.scale * d.out_channels,
                d.embed,
            ));
        }
        Upsampler::NearestConv => {
            out.extend(conv3("conv_before_upsample.0", nf, d.embed));
            for i in 1..=d.scale.trailing_zeros() as usize {
                out.extend(conv3(&format!("conv_up{i}"), nf, nf));
            }
            out.extend(conv3("conv_hr", nf, nf));
            out.extend(conv3("conv_last", d.out_channels, nf));
        }
        Upsampler::None => out.extend(conv3("conv_last", d.out_channels, d.embed)),
    }
    out
}

/// A built tail.
#[derive(Debug, Clone)]
pub struct Tail {
    kind: Upsampler,
    /// `conv_before_upsample.0` (pixelshuffle, nearest+conv).
    before: Option<Conv2d>,
    /// pixelshuffle: `upsample.{2i}` and its factor; pixelshuffledirect: `upsample.0`;
    /// nearest+conv: `conv_upN` (factor 2 each).
    ups: Vec<(Conv2d, usize)>,
    /// `conv_hr` (nearest+conv).
    hr: Option<Conv2d>,
    /// `conv_last` (all but pixelshuffledirect).
    last: Option<Conv2d>,
    /// Leaky ReLU 0.01 after `conv_before_upsample` (`nn.LeakyReLU()`'s default).
    lrelu_before: ChannelSlopes,
    /// Leaky ReLU 0.2 of nearest+conv.
    lrelu: ChannelSlopes,
}

impl Tail {
    pub fn new(w: &Weights, kind: Upsampler, d: &TailDims) -> Result<Self> {
        let nf = d.num_feat;
        let (mut before, mut ups, mut hr, mut last) = (None, Vec::new(), None, None);
        match kind {
            Upsampler::PixelShuffle => {
                before = Some(w.conv3x3("conv_before_upsample.0", d.embed, nf)?);
                let stages = shuffle_stages(d.scale).unwrap_or_default();
                for (i, r) in stages.into_iter().enumerate() {
                    ups.push((
                        w.conv3x3(&format!("upsample.{}", 2 * i), nf, r * r * nf)?,
                        r,
                    ));
                }
                last = Some(w.conv3x3("conv_last", nf, d.out_channels)?);
            }
            Upsampler::PixelShuffleDirect => {
                let c_out = d.scale * d.scale * d.out_channels;
                ups.push((w.conv3x3("upsample.0", d.embed, c_out)?, d.scale));
            }
            Upsampler::NearestConv => {
                before = Some(w.conv3x3("conv_before_upsample.0", d.embed, nf)?);
                for i in 1..=d.scale.trailing_zeros() as usize {
                    ups.push((w.conv3x3(&format!("conv_up{i}"), nf, nf)?, 2));
                }
                hr = Some(w.conv3x3("conv_hr", nf, nf)?);
                last = Some(w.conv3x3("conv_last", nf, d.out_channels)?);
            }
            Upsampler::None => last = Some(w.conv3x3("conv_last", d.embed, d.out_channels)?),
        }
        Ok(Self {
            kind,
            before,
            ups,
            hr,
            last,
            lrelu_before: ChannelSlopes::uniform(0.01, nf, w.dtype, w.device)?,
            lrelu: ChannelSlopes::uniform(0.2, nf, w.dtype, w.device)?,
        })
    }

    /// The image from the body's output `features` (B, embed, H, W); `input` is the
    /// normalised network input, which the tail without upsampling adds back.
    pub fn forward(&self, features: &Tensor, input: &Tensor) -> Result<Tensor> {
        let mut x = match &self.before {
            Some(conv) => conv.forward_rectified(features, &self.lrelu_before)?,
            None => features.clone(),
        };
        for (conv, r) in &self.ups {
            x = match self.kind {
                Upsampler::NearestConv => {
                    let (_, _, h, w) = x.dims4()?;
                    let up = x.upsample_nearest2d(2 * h, 2 * w)?;
                    conv.forward_rectified(&up, &self.lrelu)?
                }
                _ => candle_nn::ops::pixel_shuffle(&conv.forward(&x)?, *r)?,
            };
        }
        if let Some(hr) = &self.hr {
            x = hr.forward_rectified(&x, &self.lrelu)?;
        }
        Ok(match (&self.last, self.kind) {
            (Some(last), Upsampler::None) => last.forward_add(&x, input)?,
            (Some(last), _) => last.forward(&x)?,
            (None, _) => x,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shuffle_stages_follow_upsample() {
        assert_eq!(shuffle_stages(1), Some(vec![]));
        assert_eq!(shuffle_stages(4), Some(vec![2, 2]));
        assert_eq!(shuffle_stages(3), Some(vec![3]));
        assert_eq!(shuffle_stages(6), None);
        let d = TailDims {
            embed: 8,
            num_feat: 4,
            out_channels: 3,
            scale: 4,
        };
        let names: Vec<String> = tail_tensors(Upsampler::NearestConv, &d)
            .into_iter()
            .map(|(n, _)| n)
            .filter(|n| n.ends_with("weight"))
            .collect();
        assert_eq!(
            names,
            [
                "conv_before_upsample.0.weight",
                "conv_up1.weight",
                "conv_up2.weight",
                "conv_hr.weight",
                "conv_last.weight"
            ]
        );
    }
}
