//! Real-CUGAN's hyper-parameters read from a state dict, as spandrel 0.4.2's
//! `architectures/RealCUGAN/__init__.py` reads them: `conv_final` marks the ×4 model, or the
//! fast ×2 one when its outputs are a quarter of UNet1's input channels (the pixel-unshuffled
//! image); otherwise UNet1's `conv_bottom` kernel (5 for ×3, 4 for ×2) tells the scale; a
//! `pro` entry marks a pro model. spandrel also requires the squeeze-and-excitation weights;
//! here their absence means a model without them (realcugan-ncnn-vulkan's `models-nose`),
//! and a dict holding some of them must hold all.

use super::{RealCuganParams, Variant};
use crate::gan::arch::shapes::{conv3x3_dims, dims, expect_shape, Reason, MAX_CHANNELS};
use crate::gan::StateDict;

/// The tensors Real-CUGAN is recognised by (the first conv of each U-Net).
pub(super) const IDENTIFYING: [&str; 2] =
    ["unet1.conv1.conv.0.weight", "unet2.conv1.conv.0.weight"];

/// The entry spandrel uses to mark a pro model (a 1-element buffer; its value is unused).
pub const PRO_KEY: &str = "pro";

/// Whether the dict holds Real-CUGAN's identifying tensors.
pub(super) fn is_realcugan(dict: &StateDict) -> bool {
    IDENTIFYING.iter().all(|k| dict.contains_key(*k))
}

/// What a weighted layer is, for its bias's length and for ncnn's layer types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerKind {
    /// `nn.Conv2d`: weight (out, in, k, k).
    Conv,
    /// `nn.ConvTranspose2d`: weight (in, out, k, k).
    Transposed,
    /// A squeeze-and-excitation 1×1 conv (ncnn stores it as an `InnerProduct`).
    Squeeze,
}

/// One weighted layer: `prefix.weight` of `shape` and `prefix.bias`.
#[derive(Debug, Clone, PartialEq)]
pub struct Layer {
    pub prefix: String,
    pub kind: LayerKind,
    pub shape: [usize; 4],
}

impl Layer {
    /// The bias length: the layer's outputs.
    pub fn bias_len(&self) -> usize {
        match self.kind {
            LayerKind::Transposed => self.shape[1],
            LayerKind::Conv | LayerKind::Squeeze => self.shape[0],
        }
    }
}

/// Every weighted layer of the network `p` describes, in the module order of spandrel's
/// classes (the order of a PyTorch state dict, and of the layers of an ncnn export).
pub fn layers(p: &RealCuganParams) -> Vec<Layer> {
    let mut out = Vec::new();
    let mut add = |prefix: String, kind, shape| {
        out.push(Layer {
            prefix,
            kind,
            shape,
        })
    };
    let conv = |co, ci, k| [co, ci, k, k];
    let (c1_in, c1_out, bottom_k) = match p.variant {
        Variant::Up2x => (p.in_channels, p.out_channels, 4),
        Variant::Up3x => (p.in_channels, p.out_channels, 5),
        Variant::Up4x => (p.in_channels, 64, 4),
        Variant::Up2xFast => (4 * p.in_channels, 64, 4),
    };
    // spandrel builds UNet2(in_channels, out_channels) for ×2 / ×3 (which run only when the
    // two agree) and UNet2(64, 64) for ×4 / fast.
    let (c2_in, c2_out) = match p.variant {
        Variant::Up2x | Variant::Up3x => (p.in_channels, p.out_channels),
        Variant::Up4x | Variant::Up2xFast => (64, 64),
    };
    let unet_conv = |add: &mut dyn FnMut(String, LayerKind, [usize; 4]),
                     name: &str,
                     (ci, mid, co),
                     se: bool| {
        add(format!("{name}.conv.0"), LayerKind::Conv, conv(mid, ci, 3));
        add(format!("{name}.conv.2"), LayerKind::Conv, conv(co, mid, 3));
        if se {
            add(
                format!("{name}.seblock.conv1"),
                LayerKind::Squeeze,
                conv(co / 8, co, 1),
            );
            add(
                format!("{name}.seblock.conv2"),
                LayerKind::Squeeze,
                conv(co, co / 8, 1),
            );
        }
    };
    unet_conv(&mut add, "unet1.conv1", (c1_in, 32, 64), false);
    add("unet1.conv1_down".into(), LayerKind::Conv, conv(64, 64, 2));
    unet_conv(&mut add, "unet1.conv2", (64, 128, 64), p.se);
    add(
        "unet1.conv2_up".into(),
        LayerKind::Transposed,
        conv(64, 64, 2),
    );
    add("unet1.conv3".into(), LayerKind::Conv, conv(64, 64, 3));
    add(
        "unet1.conv_bottom".into(),
        LayerKind::Transposed,
        [64, c1_out, bottom_k, bottom_k],
    );
    unet_conv(&mut add, "unet2.conv1", (c2_in, 32, 64), false);
    add("unet2.conv1_down".into(), LayerKind::Conv, conv(64, 64, 2));
    unet_conv(&mut add, "unet2.conv2", (64, 64, 128), p.se);
    add(
        "unet2.conv2_down".into(),
        LayerKind::Conv,
        conv(128, 128, 2),
    );
    unet_conv(&mut add, "unet2.conv3", (128, 256, 128), p.se);
    add(
        "unet2.conv3_up".into(),
        LayerKind::Transposed,
        conv(128, 128, 2),
    );
    unet_conv(&mut add, "unet2.conv4", (128, 64, 64), p.se);
    add(
        "unet2.conv4_up".into(),
        LayerKind::Transposed,
        conv(64, 64, 2),
    );
    add("unet2.conv5".into(), LayerKind::Conv, conv(64, 64, 3));
    add(
        "unet2.conv_bottom".into(),
        LayerKind::Conv,
        conv(c2_out, 64, 3),
    );
    if matches!(p.variant, Variant::Up4x | Variant::Up2xFast) {
        add(
            "conv_final".into(),
            LayerKind::Conv,
            conv(4 * p.out_channels, 64, 3),
        );
    }
    out
}

/// The hyper-parameters of a dict that [`is_realcugan`], after every tensor's shape has been
/// checked against them.
pub(super) fn realcugan_params(dict: &StateDict) -> Result<RealCuganParams, Reason> {
    let (_, c1_in) = conv3x3_dims(dict, "unet1.conv1.conv.0.weight")?;
    let pro = dict.contains_key(PRO_KEY);
    let se = dict.keys().any(|k| k.contains(".seblock."));
    let (variant, in_channels, out_channels) = if dict.contains_key("conv_final.weight") {
        let (c_final, _) = conv3x3_dims(dict, "conv_final.weight")?;
        if c_final % 4 != 0 {
            return Err(format!(
                "tensor `conv_final.weight` has {c_final} outputs; expected 4 × the output \
                 channels (it feeds a ×2 pixel shuffle)"
            ));
        }
        let out = c_final / 4;
        // spandrel's rule: UpCunet4x(in = 4k, out = k) and UpCunet2x_fast(in = k, out = k)
        // have the same shapes; the fast model is assumed.
        if out * 4 == c1_in {
            (Variant::Up2xFast, c1_in / 4, out)
        } else {
            (Variant::Up4x, c1_in, out)
        }
    } else {
        let bottom = dims(dict, "unet1.conv_bottom.weight")?;
        let variant = if bottom.get(2) == Some(&5) {
            Variant::Up3x
        } else {
            Variant::Up2x
        };
        let out = match dims(dict, "unet2.conv_bottom.weight")?.as_slice() {
            [out, 64, 3, 3] if (1..=MAX_CHANNELS).contains(out) => *out,
            d => {
                return Err(format!(
                    "tensor `unet2.conv_bottom.weight` has shape {d:?}; expected [out, 64, 3, 3] \
                     with 1 to {MAX_CHANNELS} output channels"
                ))
            }
        };
        (variant, c1_in, out)
    };
    if variant == Variant::Up2xFast && pro {
        return Err(format!(
            "a fast (UpCunet2x_fast) model has a `{PRO_KEY}` entry, but the fast network has no \
             pro mode"
        ));
    }
    let p = RealCuganParams {
        variant,
        in_channels,
        out_channels,
        pro,
        se,
    };
    if matches!(variant, Variant::Up2x | Variant::Up3x) && in_channels != out_channels {
        return Err(format!(
            "{} takes {in_channels} channels but makes {out_channels}: UNet2 runs on UNet1's \
             output and adds it back, so the two must agree",
            variant.class_name()
        ));
    }
    for layer in layers(&p) {
        expect_shape(dict, &format!("{}.weight", layer.prefix), &layer.shape)?;
        expect_shape(dict, &format!("{}.bias", layer.prefix), &[layer.bias_len()])?;
    }
    Ok(p)
}

/// A Real-CUGAN state dict of `p`'s shapes (zeros), with the `pro` entry when `p.pro`, for
/// tests that need shapes only.
#[cfg(test)]
pub(crate) fn synthetic_realcugan(p: &RealCuganParams) -> StateDict {
    use candle_core::{DType, Device, Tensor};
    let zeros = |shape: &[usize]| Tensor::zeros(shape, DType::F32, &Device::Cpu).unwrap();
    let mut dict = StateDict::new();
    for layer in layers(p) {
        dict.insert(format!("{}.weight", layer.prefix), zeros(&layer.shape));
        dict.insert(format!("{}.bias", layer.prefix), zeros(&[layer.bias_len()]));
    }
    if p.pro {
        dict.insert(PRO_KEY.into(), zeros(&[1]));
    }
    dict
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(variant: Variant, channels: usize, pro: bool, se: bool) -> RealCuganParams {
        RealCuganParams {
            variant,
            in_channels: channels,
            out_channels: channels,
            pro,
            se,
        }
    }

    #[test]
    fn reads_every_variant_back() {
        for p in [
            params(Variant::Up2x, 3, false, true),
            params(Variant::Up2x, 3, true, true),
            params(Variant::Up2x, 3, false, false),
            params(Variant::Up3x, 3, true, true),
            params(Variant::Up4x, 3, false, true),
            params(Variant::Up4x, 1, true, true),
            params(Variant::Up2xFast, 3, false, true),
            params(Variant::Up2x, 1, false, true),
        ] {
            let dict = synthetic_realcugan(&p);
            assert!(is_realcugan(&dict));
            assert_eq!(realcugan_params(&dict), Ok(p));
        }
    }

    #[test]
    fn a_missing_or_misshapen_tensor_is_named() {
        let p = params(Variant::Up3x, 3, false, true);
        let mut dict = synthetic_realcugan(&p);
        dict.remove("unet2.conv3.seblock.conv2.bias");
        let err = realcugan_params(&dict).unwrap_err();
        assert!(err.contains("unet2.conv3.seblock.conv2.bias"), "{err}");
        let mut dict = synthetic_realcugan(&p);
        let odd = candle_core::Tensor::zeros(
            (64, 64, 2, 3),
            candle_core::DType::F32,
            &candle_core::Device::Cpu,
        )
        .unwrap();
        dict.insert("unet1.conv1_down.weight".into(), odd);
        let err = realcugan_params(&dict).unwrap_err();
        assert!(
            err.contains("unet1.conv1_down.weight")
                && err.contains("[64, 64, 2, 3]")
                && err.contains("[64, 64, 2, 2]"),
            "{err}"
        );
    }

    #[test]
    fn impossible_combinations_are_refused() {
        let mut dict = synthetic_realcugan(&params(Variant::Up2xFast, 3, false, true));
        dict.insert(PRO_KEY.into(), dict["unet1.conv1.conv.0.bias"].clone());
        assert!(realcugan_params(&dict).unwrap_err().contains("pro"));
        let mut p = params(Variant::Up2x, 3, false, true);
        p.out_channels = 1;
        let err = realcugan_params(&synthetic_realcugan(&p)).unwrap_err();
        assert!(err.contains("must agree"), "{err}");
    }
}
