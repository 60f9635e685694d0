//! A DAT residual group (spandrel 0.4.2 `architectures/DAT/__arch/DAT.py`, `ResidualGroup`):
//! its blocks, then a convolution (`1conv` or `3conv`) on the map, with a residual connection
//! around both; and that convolution, which also closes the whole body (`conv_after_body`).

use candle_core::Tensor;
use candle_nn::Module;

use super::block::Block;
use super::modules::conv;
use super::{DatParams, ResiConnection};
use crate::error::Result;
use crate::gan::arch::Weights;
use crate::models::layers::activation::ChannelSlopes;
use crate::models::layers::conv::Conv2d;

/// The convolution closing a group or the body.
pub(super) enum ResiConv {
    One(Conv2d),
    /// 3×3 to C/4, leaky ReLU 0.2, 1×1, leaky ReLU 0.2, 3×3 back to C.
    Three([Conv2d; 3], ChannelSlopes),
}

/// `nn.LeakyReLU(negative_slope=0.2)` of the 3conv connection.
const RESI_SLOPE: f32 = 0.2;

impl ResiConv {
    pub(super) fn new(w: &Weights, prefix: &str, c: usize, kind: ResiConnection) -> Result<Self> {
        Ok(match kind {
            ResiConnection::OneConv => Self::One(conv(w, prefix, c, c, 3)?),
            ResiConnection::ThreeConv => {
                let q = c / 4;
                Self::Three(
                    [
                        conv(w, &format!("{prefix}.0"), c, q, 3)?,
                        conv(w, &format!("{prefix}.2"), q, q, 1)?,
                        conv(w, &format!("{prefix}.4"), q, c, 3)?,
                    ],
                    ChannelSlopes::uniform(RESI_SLOPE, q, w.dtype, w.device)?,
                )
            }
        })
    }

    /// conv(x) for x (B, C, H, W).
    pub(super) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Self::One(c) => Ok(c.forward(x)?),
            Self::Three([a, b, c], lrelu) => {
                let h = a.forward_rectified(x, lrelu)?;
                let h = b.forward_rectified(&h, lrelu)?;
                Ok(c.forward(&h)?)
            }
        }
    }
}

pub(super) struct ResidualGroup {
    blocks: Vec<Block>,
    conv: ResiConv,
}

impl ResidualGroup {
    /// Group `rg_idx` (`layers.{rg_idx}`).
    pub(super) fn new(w: &Weights, p: &DatParams, rg_idx: usize) -> Result<Self> {
        let depth = p.depth.get(rg_idx).copied().unwrap_or(0);
        let blocks = (0..depth)
            .map(|b| Block::new(w, p, rg_idx, b))
            .collect::<Result<Vec<_>>>()?;
        let conv = ResiConv::new(
            w,
            &format!("layers.{rg_idx}.conv"),
            p.embed_dim,
            p.resi_connection,
        )?;
        Ok(Self { blocks, conv })
    }

    /// x (B, L, C) of an h × w map → (B, L, C).
    pub(super) fn forward(&self, x: &Tensor, (h, w): (usize, usize)) -> Result<Tensor> {
        let mut y = x.clone();
        for block in &self.blocks {
            y = block.forward(&y, (h, w))?;
        }
        let (b, l, c) = y.dims3()?;
        let map = y.transpose(1, 2)?.reshape((b, c, h, w))?;
        let conv = self
            .conv
            .forward(&map)?
            .reshape((b, c, l))?
            .transpose(1, 2)?;
        Ok((conv + x)?)
    }
}
