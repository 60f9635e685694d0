//! SRVGGNetCompact's hyper-parameters (Real-ESRGAN's `SRVGGNetCompact(num_in_ch, num_out_ch,
//! num_feat, num_conv, upscale, act_type)`) and what tiling and memory planning need of them.

use candle_core::DType;

use super::{OutputResize, Srvgg};
use crate::error::Result;
use crate::gan::arch::{ArchConfig, SrNet, Weights};

/// The activation between convolutions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SrvggAct {
    /// One learned slope per channel (`body.N.weight`), the released models' choice.
    PRelu,
    Relu,
    /// Slope 0.1, as Real-ESRGAN's `act_type='leakyrelu'`.
    LeakyRelu,
}

impl SrvggAct {
    pub fn name(self) -> &'static str {
        match self {
            Self::PRelu => "prelu",
            Self::Relu => "relu",
            Self::LeakyRelu => "leakyrelu",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct SrvggParams {
    pub in_channels: usize,
    pub out_channels: usize,
    pub num_feat: usize,
    pub num_conv: usize,
    /// The network's own factor (its pixel shuffle).
    pub upscale: usize,
    pub act: SrvggAct,
    /// A resize applied to the network's output (ncnn's realesr-animevideov3 x2 / x3: the x4
    /// network, then a 0.5x / 0.75x bicubic `Interp`); the model's scale is then
    /// `upscale · factor`.
    pub output_resize: Option<OutputResize>,
}

impl SrvggParams {
    /// Output pixels per input pixel, after the output resize; checked to be a whole number
    /// when the resize was read.
    pub fn final_scale(&self) -> usize {
        match &self.output_resize {
            None => self.upscale,
            Some(r) => (self.upscale as f32 * r.factor).round() as usize,
        }
    }
}

impl ArchConfig for SrvggParams {
    fn scale(&self) -> usize {
        self.final_scale()
    }

    fn in_channels(&self) -> usize {
        self.in_channels
    }

    fn out_channels(&self) -> usize {
        self.out_channels
    }

    /// The exact receptive radius, one pixel per 3×3 conv, so tiled output equals untiled
    /// output; an output resize reads up to 2 output pixels of the network further, which one
    /// more input pixel covers.
    fn context_radius(&self) -> usize {
        self.num_conv + 2 + usize::from(self.output_resize.is_some())
    }

    fn describe(&self) -> String {
        let resize = match &self.output_resize {
            None => String::new(),
            Some(r) => format!(
                "; the x{} network, then a {}x {} resize",
                self.upscale,
                r.factor,
                r.mode.name()
            ),
        };
        format!(
            "SRVGGNetCompact x{} (nf {}, {} convs, {}, {}→{} channels{resize})",
            self.final_scale(),
            self.num_feat,
            self.num_conv,
            self.act.name(),
            self.in_channels,
            self.out_channels
        )
    }

    fn bytes_per_input_pixel(&self, dtype: DType) -> usize {
        let shuffled = self.out_channels * self.upscale * self.upscale;
        // The resize holds a row-resized copy and its taps' terms beside the network's output.
        let resize = if self.output_resize.is_some() {
            2 * shuffled
        } else {
            0
        };
        let floats = 11 * self.num_feat + 2 * shuffled + resize;
        floats * dtype.size_in_bytes()
    }

    fn build(&self, weights: &Weights<'_>) -> Result<Box<dyn SrNet>> {
        Ok(Box::new(Srvgg::new(self, weights)?))
    }
}
