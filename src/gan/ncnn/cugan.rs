//! Recognition of Real-CUGAN (spandrel 0.4.2 `architectures/RealCUGAN`: `UpCunet2x`,
//! `UpCunet3x`, `UpCunet4x`) in an ncnn graph, as realcugan-ncnn-vulkan ships it
//! (`models-se`, `models-pro`, `models-nose`), naming its tensors as the PyTorch state dict
//! does so that the network of `gan::arch::realcugan` runs it.
//!
//! The export is the module's U-Nets only; realcugan-ncnn-vulkan does the rest around it, and
//! it is exactly what the PyTorch module's `forward` does: it reflect-pads the input by 18, 14
//! or 19 pixels plus the bottom and right up to a multiple of 2 (4 for ×3), crops the output,
//! and for ×4 adds the nearest-upsampled input. The pro models' input and output mapping is
//! folded into their weights (realcugan-ncnn-vulkan runs them exactly as the se models), so
//! they load as plain networks, with no `pro` entry. `models-nose` has no
//! squeeze-and-excitation (no `Pooling` / `InnerProduct`).
//!
//! ncnn files carry no module names: the weighted layers (`Convolution`, `Deconvolution`,
//! `InnerProduct`) come in the module order of [`layers`], and each is checked against it
//! (shape, stride, padding, activation) before it is named.

use super::bin::LayerWeights;
use super::convert::{Graph, Reason};
use crate::gan::arch::realcugan::{layers, LayerKind, RealCuganParams, Variant};
use crate::gan::StateDict;

/// Layer types a Real-CUGAN export contains.
const CUGAN_KINDS: &[&str] = &[
    "Input",
    "Split",
    "Convolution",
    "Deconvolution",
    "Pooling",
    "InnerProduct",
    "BinaryOp",
    "Crop",
    "PixelShuffle",
];

/// ncnn's `activation_type` values (param 9).
const ACT_NONE: i32 = 0;
const ACT_RELU: i32 = 1;
const ACT_LEAKY: i32 = 2;
const ACT_SIGMOID: i32 = 4;

impl Graph<'_> {
    /// Real-CUGAN: UNet1 (with its ×2 or ×3 transposed `conv_bottom`), UNet2, and for ×4
    /// `conv_final` and a ×2 `PixelShuffle`; squeeze-and-excitation as global average
    /// `Pooling`, two `InnerProduct`s and a multiply, or none.
    pub(super) fn cugan(&self) -> std::result::Result<StateDict, Reason> {
        if let Some(odd) = self
            .layers
            .iter()
            .find(|l| !CUGAN_KINDS.contains(&l.kind.as_str()))
        {
            return Err(format!("it has a {} layer ({})", odd.kind, odd.name));
        }
        let weighted: Vec<usize> = (0..self.layers.len())
            .filter(|&i| {
                matches!(
                    self.layers[i].kind.as_str(),
                    "Convolution" | "Deconvolution" | "InnerProduct"
                )
            })
            .collect();
        let p = self.cugan_params(&weighted)?;
        let expected = layers(&p);
        if expected.len() != weighted.len() {
            return Err(format!(
                "it has {} weighted layers; {} {}SE has {}",
                weighted.len(),
                p.variant.class_name(),
                if p.se { "with " } else { "without " },
                expected.len()
            ));
        }
        self.cugan_structure(&p)?;
        let mut dict = StateDict::new();
        for (&i, spec) in weighted.iter().zip(&expected) {
            self.cugan_layer(i, spec)?;
            let LayerWeights::Conv {
                weight,
                bias: Some(bias),
            } = &self.weights[i]
            else {
                return Err(format!(
                    "layer {} ({}) has no bias",
                    self.layers[i].describe(),
                    spec.prefix
                ));
            };
            // ncnn keeps a transposed conv's kernel as (out, in, k, k); PyTorch as (in, out).
            let weight = match spec.kind {
                LayerKind::Transposed => weight
                    .transpose(0, 1)
                    .and_then(|w| w.contiguous())
                    .map_err(|e| e.to_string())?,
                LayerKind::Conv | LayerKind::Squeeze => weight.clone(),
            };
            dict.insert(format!("{}.weight", spec.prefix), weight);
            dict.insert(format!("{}.bias", spec.prefix), bias.clone());
        }
        Ok(dict)
    }

    /// The hyper-parameters the graph's ends tell: the image channels from the first and
    /// last convolutions, ×4 from the final `PixelShuffle`, ×3 from UNet1's 5×5
    /// `conv_bottom` (its second `Deconvolution`), SE from the `InnerProduct`s.
    fn cugan_params(&self, weighted: &[usize]) -> std::result::Result<RealCuganParams, Reason> {
        let (Some(&first), Some(&last)) = (weighted.first(), weighted.last()) else {
            return Err("it has no weighted layers".into());
        };
        let in_channels = self
            .conv_dims(first)
            .map(|d| d.1)
            .ok_or("the first layer holds no convolution weights")?;
        let last_out = self
            .conv_dims(last)
            .map(|d| d.0)
            .ok_or("the last weighted layer holds no convolution weights")?;
        let se = weighted
            .iter()
            .any(|&i| self.layers[i].kind == "InnerProduct");
        let seq = self.significant();
        let ends_in_shuffle = seq
            .last()
            .is_some_and(|&i| self.layers[i].kind == "PixelShuffle");
        let (variant, out_channels) = if ends_in_shuffle {
            if last_out % 4 != 0 {
                return Err(format!(
                    "the last Convolution has {last_out} outputs, not 4 x the image channels"
                ));
            }
            (Variant::Up4x, last_out / 4)
        } else {
            let bottom = weighted
                .iter()
                .filter(|&&i| self.layers[i].kind == "Deconvolution")
                .nth(1)
                .ok_or("it has fewer than 2 Deconvolution layers")?;
            let kernel = self.int(*bottom, 1, 0)?;
            let variant = if kernel == 5 {
                Variant::Up3x
            } else {
                Variant::Up2x
            };
            (variant, last_out)
        };
        Ok(RealCuganParams {
            variant,
            in_channels,
            out_channels,
            pro: false,
            se,
        })
    }

    /// The weightless layers that make the network what it is: one global average `Pooling`
    /// per SE block, the end (UNet1's output added back, or the ×2 `PixelShuffle`).
    fn cugan_structure(&self, p: &RealCuganParams) -> std::result::Result<(), Reason> {
        let pools: Vec<usize> = (0..self.layers.len())
            .filter(|&i| self.layers[i].kind == "Pooling")
            .collect();
        let se_blocks = if p.se { 4 } else { 0 };
        if pools.len() != se_blocks {
            return Err(format!(
                "it has {} Pooling layers, expected {se_blocks} (one per SE block)",
                pools.len()
            ));
        }
        for &i in &pools {
            // pooling_type 1 (average), global_pooling 1.
            if self.int(i, 0, 0)? != 1 || self.int(i, 4, 0)? != 1 {
                return Err(format!(
                    "Pooling {} is not a global average (params 0=1 4=1)",
                    self.layers[i].name
                ));
            }
        }
        let seq = self.significant();
        let last = *seq.last().ok_or("the graph is empty")?;
        match p.variant {
            Variant::Up4x => {
                if self.int(last, 0, 0)? != 2 {
                    return Err("the final PixelShuffle is not x2".into());
                }
            }
            _ => {
                if self.layers[last].kind != "BinaryOp" || self.int(last, 0, 0)? != 0 {
                    return Err(format!(
                        "the graph ends in {}, expected the BinaryOp add of UNet1's output",
                        self.layers[last].describe()
                    ));
                }
            }
        }
        Ok(())
    }

    /// Checks that layer `i` is `spec`: its type, kernel shape, stride, padding, activation.
    fn cugan_layer(
        &self,
        i: usize,
        spec: &crate::gan::arch::realcugan::Layer,
    ) -> std::result::Result<(), Reason> {
        let layer = &self.layers[i];
        let name = format!("layer {} ({})", layer.describe(), spec.prefix);
        let kind = match spec.kind {
            LayerKind::Conv => "Convolution",
            LayerKind::Transposed => "Deconvolution",
            LayerKind::Squeeze => "InnerProduct",
        };
        if layer.kind != kind {
            return Err(format!("{name} should be a {kind}"));
        }
        let dims = match &self.weights[i] {
            LayerWeights::Conv { weight, .. } => weight.dims().to_vec(),
            _ => return Err(format!("{name} holds no weights")),
        };
        let [a, b, k, _] = spec.shape;
        // ncnn's order: (out, in) for all three.
        let want = match spec.kind {
            LayerKind::Transposed => [b, a, k, k],
            LayerKind::Conv | LayerKind::Squeeze => spec.shape,
        };
        if dims != want {
            return Err(format!(
                "{name} has a kernel of {dims:?}, expected {want:?}"
            ));
        }
        let prefix = spec.prefix.as_str();
        let activation = match spec.kind {
            LayerKind::Squeeze if prefix.ends_with("conv1") => ACT_RELU,
            LayerKind::Squeeze => ACT_SIGMOID,
            _ if matches!(
                prefix,
                "unet1.conv_bottom" | "unet2.conv_bottom" | "conv_final"
            ) =>
            {
                ACT_NONE
            }
            _ => ACT_LEAKY,
        };
        if self.int(i, 9, 0)? != activation {
            return Err(format!(
                "{name} has activation_type {}, expected {activation}",
                self.int(i, 9, 0)?
            ));
        }
        if activation == ACT_LEAKY {
            let slope = match layer.params.get(&10) {
                Some(super::value::ParamValue::FloatArray(v)) => v.first().copied(),
                _ => None,
            };
            if slope.is_none_or(|s| (s - 0.1).abs() > 1e-6) {
                return Err(format!(
                    "{name} has leaky ReLU slope {slope:?}, expected 0.1"
                ));
            }
        }
        if spec.kind == LayerKind::Squeeze {
            return Ok(());
        }
        // Kernel, stride and padding as the module has them (param 11 / 13 / 14-16: the
        // vertical and other-side values default to these).
        let (stride, padding) = match (spec.kind, k) {
            (LayerKind::Conv, 2) | (LayerKind::Transposed, 2) => (2, 0),
            (LayerKind::Conv, _) => (1, 0),
            (LayerKind::Transposed, 4) => (2, 3),
            (LayerKind::Transposed, _) => (3, 2),
            (LayerKind::Squeeze, _) => (1, 0),
        };
        let check = |id: u32, default: i32, want: i32, what: &str| {
            let got = self.int(i, id, default)?;
            if got != want {
                return Err(format!(
                    "{name} has {what} (param {id}) {got}, expected {want}"
                ));
            }
            Ok(())
        };
        let k = k as i32;
        check(1, 0, k, "kernel_w")?;
        check(11, k, k, "kernel_h")?;
        check(2, 1, 1, "dilation_w")?;
        check(12, 1, 1, "dilation_h")?;
        check(3, 1, stride, "stride_w")?;
        check(13, stride, stride, "stride_h")?;
        let pad = self.int(i, 4, 0)?;
        check(4, 0, padding, "pad_left")?;
        for id in [14, 15, 16] {
            check(id, pad, padding, "padding")?;
        }
        if layer.kind == "Deconvolution" {
            for id in [18, 19, 20, 21] {
                check(id, 0, 0, "output padding or size")?;
            }
        }
        Ok(())
    }
}
