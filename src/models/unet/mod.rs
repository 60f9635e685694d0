//! `UNet2DConditionModel` (diffusers models/unets/unet_2d_condition.py) as the x4 upscaler uses
//! it: a positional timestep embedding plus a noise-level class embedding, down / mid / up
//! blocks with per-level `only_cross_attention`, and upsample sizes forwarded when the latent is
//! not a multiple of the downsampling factor.
//!
//! Module names mirror diffusers' so hub safetensors load through `VarBuilder` prefixes as they
//! are (`down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.weight`, ...). The model
//! computes in the `VarBuilder`'s dtype.

mod config;
mod down_blocks;
mod embeddings;
mod mid_block;
mod transformer_2d;
mod transformer_block;
mod up_blocks;

use candle_core::{DType, Tensor};
use candle_nn::{Conv2dConfig, Embedding, Module, VarBuilder};

pub use config::{LevelSpec, PerBlock, TransformerLayers, UNet2DConditionConfig};
use down_blocks::{DownBlock, DownBlockConfig};
use embeddings::{timestep_embedding, TimestepEmbedding};
use mid_block::{MidBlock, MidBlockConfig};
use transformer_2d::Transformer2DConfig;
use up_blocks::{UpBlock, UpBlockConfig};

use crate::models::layers::conv::{conv2d, Conv2d};
use crate::models::layers::GroupNorm;
use crate::{Error, Result};

/// The conditional UNet.
#[derive(Debug, Clone)]
pub struct UNet2DConditionModel {
    config: UNet2DConditionConfig,
    conv_in: Conv2d,
    time_embedding: TimestepEmbedding,
    class_embedding: Option<Embedding>,
    down_blocks: Vec<DownBlock>,
    mid_block: Option<MidBlock>,
    up_blocks: Vec<UpBlock>,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
    dtype: DType,
}

fn conv(input: usize, output: usize, kernel: usize, vb: VarBuilder) -> Result<Conv2d> {
    let cfg = Conv2dConfig {
        padding: (kernel - 1) / 2,
        ..Default::default()
    };
    Ok(conv2d(input, output, kernel, cfg, vb)?)
}

impl UNet2DConditionModel {
    /// Builds the model from `config`, loading every weight from `vb` (diffusers' names).
    pub fn new(config: &UNet2DConditionConfig, vb: VarBuilder) -> Result<Self> {
        config.validate()?;
        let c = config;
        let levels = c.levels()?;
        let n = levels.len();
        let groups = c.norm_num_groups.unwrap_or(32);
        let eps = c.norm_eps;
        let boc0 = c.block_out_channels[0];
        let ted = c.time_embed_dim();
        let temb = c.blocks_time_embed_dim();
        let transformer = |level: &LevelSpec, enabled: bool| {
            enabled.then_some(Transformer2DConfig {
                channels: level.channels,
                heads: level.heads,
                layers: level.transformer_layers,
                cross_attention_dim: level.cross_attention_dim,
                norm_num_groups: groups,
                use_linear_projection: c.use_linear_projection,
                only_cross_attention: level.only_cross_attention,
                upcast_attention: c.upcast_attention,
            })
        };

        let mut down_blocks = Vec::with_capacity(n);
        for (i, level) in levels.iter().enumerate() {
            let cfg = DownBlockConfig {
                in_channels: if i == 0 { boc0 } else { levels[i - 1].channels },
                out_channels: level.channels,
                temb_channels: temb,
                layers: level.layers,
                groups,
                eps,
                add_downsample: i + 1 < n,
                downsample_padding: c.downsample_padding,
                attention: transformer(level, level.cross_attention),
            };
            down_blocks.push(DownBlock::new(&cfg, vb.pp("down_blocks").pp(i))?);
        }

        let deepest = &levels[n - 1];
        let mid_block = match c.mid_block_type.as_deref() {
            None => None,
            Some(kind) => {
                let cfg = MidBlockConfig {
                    channels: deepest.channels,
                    temb_channels: temb,
                    groups,
                    eps,
                    output_scale_factor: c.mid_block_scale_factor,
                    attention: transformer(deepest, kind == "UNetMidBlock2DCrossAttn"),
                };
                Some(MidBlock::new(&cfg, vb.pp("mid_block"))?)
            }
        };

        let mut up_blocks = Vec::with_capacity(n);
        for i in 0..n {
            // Up block i mirrors level n-1-i; its deepest skip comes from the level below.
            let level = &levels[n - 1 - i];
            let below = &levels[(n - 1 - i).saturating_sub(1)];
            let prev = if i == 0 {
                deepest.channels
            } else {
                levels[n - i].channels
            };
            let cross = c.up_block_types[i] == "CrossAttnUpBlock2D";
            let cfg = UpBlockConfig {
                in_channels: below.channels,
                prev_output_channels: prev,
                out_channels: level.channels,
                temb_channels: temb,
                layers: level.layers + 1,
                groups,
                eps,
                add_upsample: i + 1 < n,
                attention: transformer(level, cross),
            };
            up_blocks.push(UpBlock::new(&cfg, vb.pp("up_blocks").pp(i))?);
        }

        let class_embedding = match c.num_class_embeds {
            Some(classes) => Some(candle_nn::embedding(
                classes,
                ted,
                vb.pp("class_embedding"),
            )?),
            None => None,
        };

        Ok(Self {
            config: c.clone(),
            conv_in: conv(c.in_channels, boc0, c.conv_in_kernel, vb.pp("conv_in"))?,
            time_embedding: TimestepEmbedding::new(
                boc0,
                ted,
                c.timestep_post_act.is_some(),
                vb.pp("time_embedding"),
            )?,
            class_embedding,
            down_blocks,
            mid_block,
            up_blocks,
            conv_norm_out: GroupNorm::new(groups, boc0, eps, vb.pp("conv_norm_out"))?,
            conv_out: conv(boc0, c.out_channels, c.conv_out_kernel, vb.pp("conv_out"))?,
            dtype: vb.dtype(),
        })
    }

    pub fn config(&self) -> &UNet2DConditionConfig {
        &self.config
    }

    /// Largest attention score matrix, in bytes, that one forward may materialise
    /// (default [`crate::models::layers::DEFAULT_MAX_SCORE_BYTES`]).
    pub fn set_attention_budget(&mut self, max_score_bytes: usize) {
        for block in &mut self.down_blocks {
            block.set_max_score_bytes(max_score_bytes);
        }
        if let Some(mid) = &mut self.mid_block {
            mid.set_max_score_bytes(max_score_bytes);
        }
        for block in &mut self.up_blocks {
            block.set_max_score_bytes(max_score_bytes);
        }
    }

    /// Predicts the noise (or v) for `sample` (B, in_channels, h, w) at `timestep`, given the
    /// text embedding `encoder_hidden_states` (B, 77, cross_dim) and the noise levels
    /// `class_labels` (B,) (integer dtype; ignored without `num_class_embeds`).
    pub fn forward(
        &self,
        sample: &Tensor,
        timestep: f64,
        encoder_hidden_states: &Tensor,
        class_labels: &Tensor,
    ) -> Result<Tensor> {
        let (b, h, w) = self.check_inputs(sample, encoder_hidden_states)?;
        let c = &self.config;

        // Latents that the down path cannot halve exactly make the up path resize to the skip
        // sizes instead of doubling (diffusers' forward_upsample_size).
        let factor = 1usize << (self.up_blocks.len().saturating_sub(1));
        let forward_upsample_size = h % factor != 0 || w % factor != 0;

        let sample = if c.center_input_sample {
            sample.affine(2.0, -1.0)?
        } else {
            sample.clone()
        };

        let t_emb = timestep_embedding(
            timestep,
            b,
            c.block_out_channels[0],
            c.flip_sin_to_cos,
            c.freq_shift,
            sample.device(),
            self.dtype,
        )?;
        let mut emb = self.time_embedding.forward(&t_emb)?;
        if let Some(table) = &self.class_embedding {
            let class_emb = table.forward(&self.check_labels(class_labels, b)?)?;
            emb = if c.class_embeddings_concat {
                let class_emb = class_emb.broadcast_as(emb.shape())?;
                Tensor::cat(&[&emb, &class_emb], 1)?
            } else {
                emb.broadcast_add(&class_emb)?
            };
        }
        if c.time_embedding_act_fn.is_some() {
            emb = emb.silu()?;
        }

        let mut x = self.conv_in.forward(&sample)?;
        let mut skips = vec![x.clone()];
        for block in &self.down_blocks {
            let (out, states) = block.forward(&x, &emb, encoder_hidden_states)?;
            x = out;
            skips.extend(states);
        }
        if let Some(mid) = &self.mid_block {
            x = mid.forward(&x, &emb, encoder_hidden_states)?;
        }
        let last = self.up_blocks.len() - 1;
        for (i, block) in self.up_blocks.iter().enumerate() {
            let take = block.num_skips();
            if take > skips.len() {
                return Err(Error::Tensor(candle_core::Error::Msg(format!(
                    "up block {i} needs {take} skip states, {} left",
                    skips.len()
                ))));
            }
            let block_skips = skips.split_off(skips.len() - take);
            let upsample_size = match skips.last() {
                Some(next) if i < last && forward_upsample_size => {
                    let (_, _, sh, sw) = next.dims4()?;
                    Some((sh, sw))
                }
                _ => None,
            };
            x = block.forward(&x, &block_skips, &emb, encoder_hidden_states, upsample_size)?;
        }

        let x = self.conv_norm_out.forward_silu(&x)?;
        Ok(self.conv_out.forward(&x)?)
    }

    /// Checks the sample and text embedding against the config; returns (B, h, w).
    fn check_inputs(&self, sample: &Tensor, ehs: &Tensor) -> Result<(usize, usize, usize)> {
        let c = &self.config;
        let bad = |what: &str, reason: String| Error::option(what, reason);
        let (b, ch, h, w) = sample.dims4().map_err(|_| {
            bad(
                "sample",
                format!("must be (B, C, h, w), got {:?}", sample.dims()),
            )
        })?;
        if ch != c.in_channels {
            return Err(bad(
                "sample",
                format!("has {ch} channels, the UNet takes {}", c.in_channels),
            ));
        }
        let (eb, _, _) = ehs.dims3().map_err(|_| {
            bad(
                "encoder_hidden_states",
                format!("must be (B, tokens, dim), got {:?}", ehs.dims()),
            )
        })?;
        if eb != b {
            return Err(bad(
                "encoder_hidden_states",
                format!("has batch {eb}, the sample has {b}"),
            ));
        }
        for (what, t) in [("sample", sample), ("encoder_hidden_states", ehs)] {
            if t.dtype() != self.dtype {
                return Err(bad(
                    what,
                    format!("is {:?}, the UNet computes in {:?}", t.dtype(), self.dtype),
                ));
            }
        }
        Ok((b, h, w))
    }

    /// Noise levels as u32 indices, (B,) or (1,), each below `num_class_embeds`.
    fn check_labels(&self, labels: &Tensor, batch: usize) -> Result<Tensor> {
        let classes = self.config.num_class_embeds.unwrap_or(0);
        let bad = |reason: String| Error::option("class_labels", reason);
        let n = labels
            .dims1()
            .map_err(|_| bad(format!("must be (B,), got {:?}", labels.dims())))?;
        if n != batch && n != 1 {
            return Err(bad(format!("has {n} labels for a batch of {batch}")));
        }
        let values: Vec<i64> = labels.to_dtype(DType::I64)?.to_vec1()?;
        if let Some(v) = values.iter().find(|&&v| v < 0 || v as usize >= classes) {
            return Err(bad(format!(
                "noise level {v} is outside the class embedding's 0..{classes}"
            )));
        }
        Ok(labels.to_dtype(DType::U32)?)
    }
}
