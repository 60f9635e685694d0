//! The convolution that closes each residual stage and the body of the Swin super-resolution
//! networks (spandrel 0.4.2 `architectures/SwinIR/__arch/SwinIR.py`, `resi_connection`):
//! `1conv`, one 3×3 convolution; or `3conv`, 3×3 to a quarter of the channels, leaky ReLU 0.2,
//! 1×1, leaky ReLU 0.2, 3×3 back (keys `.0`, `.2`, `.4`).

use candle_core::Tensor;
use candle_nn::Module;

use super::layers::conv1x1;
use crate::error::Result;
use crate::gan::arch::Weights;
use crate::models::layers::activation::ChannelSlopes;
use crate::models::layers::conv::Conv2d;

/// Which residual convolution a network has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResiConnection {
    OneConv,
    ThreeConv,
}

impl ResiConnection {
    /// The reference's name, `1conv` or `3conv`.
    pub fn name(self) -> &'static str {
        match self {
            Self::OneConv => "1conv",
            Self::ThreeConv => "3conv",
        }
    }

    /// The tensors the convolution reads under `prefix` for `dim` channels, `(name, shape)`.
    pub fn tensors(self, prefix: &str, dim: usize) -> Vec<(String, Vec<usize>)> {
        let q = dim / 4;
        let convs: Vec<(String, [usize; 4])> = match self {
            Self::OneConv => vec![(prefix.to_string(), [dim, dim, 3, 3])],
            Self::ThreeConv => vec![
                (format!("{prefix}.0"), [q, dim, 3, 3]),
                (format!("{prefix}.2"), [q, q, 1, 1]),
                (format!("{prefix}.4"), [dim, q, 3, 3]),
            ],
        };
        convs
            .into_iter()
            .flat_map(|(p, s)| {
                [
                    (format!("{p}.weight"), s.to_vec()),
                    (format!("{p}.bias"), vec![s[0]]),
                ]
            })
            .collect()
    }
}

/// The residual convolution, built.
#[derive(Debug, Clone)]
pub enum ResiConv {
    One(Conv2d),
    Three {
        convs: [Conv2d; 3],
        /// Leaky ReLU 0.2 on the quarter-width channels, fused into the convolutions.
        lrelu: ChannelSlopes,
    },
}

impl ResiConv {
    pub fn new(w: &Weights, prefix: &str, kind: ResiConnection, dim: usize) -> Result<Self> {
        Ok(match kind {
            ResiConnection::OneConv => Self::One(w.conv3x3(prefix, dim, dim)?),
            ResiConnection::ThreeConv => {
                let q = dim / 4;
                Self::Three {
                    convs: [
                        w.conv3x3(&format!("{prefix}.0"), dim, q)?,
                        conv1x1(w, &format!("{prefix}.2"), q, q)?,
                        w.conv3x3(&format!("{prefix}.4"), q, dim)?,
                    ],
                    lrelu: ChannelSlopes::uniform(0.2, q, w.dtype, w.device)?,
                }
            }
        })
    }

    /// conv(x), x (B, C, H, W).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Self::One(conv) => conv.forward(x)?,
            Self::Three { convs, lrelu } => {
                let y = convs[0].forward_rectified(x, lrelu)?;
                let y = convs[1].forward_rectified(&y, lrelu)?;
                convs[2].forward(&y)?
            }
        })
    }

    /// conv(x) + residual, x and residual (B, C, H, W).
    pub fn forward_add(&self, x: &Tensor, residual: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Self::One(conv) => conv.forward_add(x, residual)?,
            Self::Three { convs, lrelu } => {
                let y = convs[0].forward_rectified(x, lrelu)?;
                let y = convs[1].forward_rectified(&y, lrelu)?;
                convs[2].forward_add(&y, residual)?
            }
        })
    }
}
