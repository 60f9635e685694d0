//! Real-CUGAN's networks (spandrel 0.4.2 `architectures/RealCUGAN/__arch/upcunet_v3.py`:
//! `UpCunet2x`, `UpCunet3x`, `UpCunet4x`, `UpCunet2x_fast`), with everything their `forward`
//! does around the U-Nets, since it is part of the model's output: the pro models' input and
//! output mapping (`x·0.7 + 0.15`, then back), the reflect padding each variant adds (18, 14,
//! 19 or 38 pixels, plus the bottom and right up to the multiple its levels need), the crops,
//! and the residuals (UNet1's output added to UNet2's; the nearest-upsampled input for the ×4
//! and fast models). Also spandrel's `ModelDescriptor.__call__` size requirement: inputs
//! narrower than 32 pixels (40 for the fast model, whose sides must also be multiples of 4) are
//! padded at the bottom and right, by reflection as far as it reaches and by repetition beyond,
//! and the output cropped back.

use candle_core::Tensor;
use candle_nn::{Conv2dConfig, Module};

use super::unet::{crop, Bottom, UNet1, UNet2};
use super::{RealCuganParams, Variant};
use crate::error::Result;
use crate::gan::arch::{SrNet, Weights};
use crate::models::layers::conv::Conv2d;
use crate::tiling::reflect_pad;

/// The pro models' input mapping `x·0.7 + 0.15` (and its inverse on the output).
const PRO_GAIN: f64 = 0.7;
const PRO_OFFSET: f64 = 0.15;

pub struct RealCugan {
    variant: Variant,
    pro: bool,
    unet1: UNet1,
    unet2: UNet2,
    /// The ×4 and fast models' last conv (64 → 4·out channels) before their pixel shuffle.
    conv_final: Option<Conv2d>,
}

impl RealCugan {
    pub(crate) fn new(p: &RealCuganParams, w: &Weights) -> Result<Self> {
        let (cin, cout) = (p.in_channels, p.out_channels);
        let (unet1, unet2, conv_final) = match p.variant {
            Variant::Up2x | Variant::Up3x => {
                let bottom = if p.variant == Variant::Up3x {
                    Bottom::X3
                } else {
                    Bottom::X2
                };
                (
                    UNet1::new(w, (cin, cout), bottom, p.se)?,
                    UNet2::new(w, (cin, cout), p.se)?,
                    None,
                )
            }
            Variant::Up4x | Variant::Up2xFast => {
                let c1 = if p.variant == Variant::Up2xFast {
                    4 * cin
                } else {
                    cin
                };
                let weight = w.get("conv_final.weight", &[4 * cout, 64, 3, 3])?;
                let bias = w.get("conv_final.bias", &[4 * cout])?;
                (
                    UNet1::new(w, (c1, 64), Bottom::X2, p.se)?,
                    UNet2::new(w, (64, 64), p.se)?,
                    Some(Conv2d::new(weight, Some(bias), Conv2dConfig::default())),
                )
            }
        };
        Ok(Self {
            variant: p.variant,
            pro: p.pro,
            unet1,
            unet2,
            conv_final,
        })
    }

    /// The module's `forward` on an input that meets the size requirement.
    fn module_forward(&self, x: &Tensor) -> Result<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        // Contiguous: a tile arrives as a view, and the padding gathers rows by index.
        let x = if self.pro {
            x.affine(PRO_GAIN, PRO_OFFSET)?
        } else {
            x.contiguous()?
        };
        let (pad, multiple) = self.variant.padding();
        let (ph, pw) = (h.next_multiple_of(multiple), w.next_multiple_of(multiple));
        let padded = reflect_pad(&x, pad, pad + ph - h, pad, pad + pw - w)?;
        let s = self.variant.scale();
        let out = match &self.conv_final {
            None => {
                let u1 = self.unet1.forward(&padded)?;
                drop(padded);
                let u2 = self.unet2.forward(&u1)?;
                (u2 + crop(&u1, 20)?)?
            }
            Some(conv_final) => {
                let input = if self.variant == Variant::Up2xFast {
                    candle_nn::ops::pixel_unshuffle(&padded, 2)?
                } else {
                    padded
                };
                let u1 = self.unet1.forward(&input)?;
                drop(input);
                let u2 = self.unet2.forward(&u1)?;
                let y = conv_final.forward(&(u2 + crop(&u1, 20)?)?)?;
                drop(u1);
                let y = candle_nn::ops::pixel_shuffle(&crop(&y, 1)?, 2)?;
                let y = y.narrow(2, 0, h * s)?.narrow(3, 0, w * s)?;
                (y + x.upsample_nearest2d(h * s, w * s)?)?
            }
        };
        let out = out.narrow(2, 0, h * s)?.narrow(3, 0, w * s)?;
        Ok(if self.pro {
            out.affine(1.0 / PRO_GAIN, -PRO_OFFSET / PRO_GAIN)?
        } else {
            out
        })
    }
}

impl SrNet for RealCugan {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        if h == 0 || w == 0 {
            return Err(crate::Error::option(
                "image",
                format!("Real-CUGAN cannot upscale an empty {w}x{h} input"),
            ));
        }
        // spandrel's `SizeRequirements`: at least `minimum`, then up to `multiple_of`.
        let (min, multiple) = self.variant.size_requirements();
        let (th, tw) = (
            h.max(min).next_multiple_of(multiple),
            w.max(min).next_multiple_of(multiple),
        );
        if (th, tw) == (h, w) {
            return self.module_forward(x);
        }
        let (pad_h, pad_w) = (th - h, tw - w);
        // spandrel's `pad_tensor`: reflect by at most side − 1, repeat the edge for the rest.
        let (reflect_h, reflect_w) = (pad_h.min(h - 1), pad_w.min(w - 1));
        let padded = reflect_pad(&x.contiguous()?, 0, reflect_h, 0, reflect_w)?
            .pad_with_same(2, 0, pad_h - reflect_h)?
            .pad_with_same(3, 0, pad_w - reflect_w)?;
        let s = self.variant.scale();
        let out = self.module_forward(&padded)?;
        Ok(out.narrow(2, 0, h * s)?.narrow(3, 0, w * s)?)
    }
}
