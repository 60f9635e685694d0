//! SRVGGNetCompact's hyper-parameters (Real-ESRGAN's `SRVGGNetCompact(num_in_ch, num_out_ch,
//! num_feat, num_conv, upscale, act_type)`) and what tiling and memory planning need of them.

use candle_core::DType;

use super::Srvgg;
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
    pub upscale: usize,
    pub act: SrvggAct,
}

impl ArchConfig for SrvggParams {
    fn scale(&self) -> usize {
        self.upscale
    }

    fn in_channels(&self) -> usize {
        self.in_channels
    }

    fn out_channels(&self) -> usize {
        self.out_channels
    }

    /// The exact receptive radius, one pixel per 3×3 conv, so tiled output equals untiled
    /// output.
    fn context_radius(&self) -> usize {
        self.num_conv + 2
    }

    fn describe(&self) -> String {
        format!(
            "SRVGGNetCompact x{} (nf {}, {} convs, {}, {}→{} channels)",
            self.upscale,
            self.num_feat,
            self.num_conv,
            self.act.name(),
            self.in_channels,
            self.out_channels
        )
    }

    fn bytes_per_input_pixel(&self, dtype: DType) -> usize {
        let floats = 11 * self.num_feat + 2 * self.out_channels * self.upscale * self.upscale;
        floats * dtype.size_in_bytes()
    }

    fn build(&self, weights: &Weights<'_>) -> Result<Box<dyn SrNet>> {
        Ok(Box::new(Srvgg::new(self, weights)?))
    }
}
