//! `Transformer2DModel` for continuous (image) input (diffusers
//! models/transformers/transformer_2d.py): group norm, `proj_in` (linear or 1x1 conv), the
//! transformer blocks over H·W tokens, `proj_out`, plus the input as residual.

use candle_core::Tensor;
use candle_nn::{Conv2dConfig, Module, VarBuilder};

use super::transformer_block::{BasicTransformerBlock, TransformerBlockConfig};
use crate::models::layers::conv::Conv2d;
use crate::models::layers::linear::{self, Linear};
use crate::models::layers::GroupNorm;
use crate::Result;

/// GroupNorm eps of `Transformer2DModel.norm` (fixed in diffusers).
const NORM_EPS: f64 = 1e-6;

/// Construction options, as the UNet blocks pass them.
#[derive(Debug, Clone)]
pub struct Transformer2DConfig {
    pub channels: usize,
    pub heads: usize,
    pub layers: usize,
    pub cross_attention_dim: usize,
    pub norm_num_groups: usize,
    pub use_linear_projection: bool,
    pub only_cross_attention: bool,
    pub upcast_attention: bool,
}

#[derive(Debug, Clone)]
enum Projection {
    Linear(Linear),
    Conv(Conv2d),
}

impl Projection {
    fn new(linear: bool, input: usize, output: usize, vb: VarBuilder) -> Result<Self> {
        Ok(if linear {
            Projection::Linear(linear::linear(input, output, vb)?)
        } else {
            Projection::Conv(crate::models::layers::conv::conv2d(
                input,
                output,
                1,
                Conv2dConfig::default(),
                vb,
            )?)
        })
    }
}

#[derive(Debug, Clone)]
pub struct Transformer2DModel {
    norm: GroupNorm,
    proj_in: Projection,
    blocks: Vec<BasicTransformerBlock>,
    proj_out: Projection,
}

impl Transformer2DModel {
    pub fn new(cfg: &Transformer2DConfig, vb: VarBuilder) -> Result<Self> {
        let c = cfg.channels;
        let block = TransformerBlockConfig {
            dim: c,
            heads: cfg.heads,
            cross_attention_dim: cfg.cross_attention_dim,
            only_cross_attention: cfg.only_cross_attention,
            upcast_attention: cfg.upcast_attention,
        };
        let blocks = (0..cfg.layers)
            .map(|i| BasicTransformerBlock::new(&block, vb.pp("transformer_blocks").pp(i)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            norm: GroupNorm::new(cfg.norm_num_groups, c, NORM_EPS, vb.pp("norm"))?,
            proj_in: Projection::new(cfg.use_linear_projection, c, c, vb.pp("proj_in"))?,
            blocks,
            proj_out: Projection::new(cfg.use_linear_projection, c, c, vb.pp("proj_out"))?,
        })
    }

    pub fn set_max_score_bytes(&mut self, bytes: usize) {
        for block in &mut self.blocks {
            block.set_max_score_bytes(bytes);
        }
    }

    /// x (B, C, H, W), context (B, 77, cross_dim) -> (B, C, H, W).
    pub fn forward(&self, x: &Tensor, context: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let normed = self.norm.forward(x)?;
        // Channels-last tokens (B, H·W, C); the reshape makes them contiguous.
        let to_tokens = |t: &Tensor| t.permute((0, 2, 3, 1))?.reshape((b, h * w, c));
        let mut tokens = match &self.proj_in {
            Projection::Linear(l) => l.forward(&to_tokens(&normed)?)?,
            Projection::Conv(conv) => to_tokens(&conv.forward(&normed)?)?,
        };
        drop(normed);
        for block in &self.blocks {
            tokens = block.forward(&tokens, context)?;
        }
        let out = match &self.proj_out {
            Projection::Linear(l) => l
                .forward(&tokens)?
                .reshape((b, h, w, c))?
                .permute((0, 3, 1, 2))?,
            Projection::Conv(conv) => {
                let spatial = tokens
                    .reshape((b, h, w, c))?
                    .permute((0, 3, 1, 2))?
                    .contiguous()?;
                conv.forward(&spatial)?
            }
        };
        // The residual add also lays the channel-first result out contiguously.
        Ok((out + x)?)
    }
}
