//! `unet/config.json`: the arguments of diffusers' `UNet2DConditionModel.__init__`
//! (models/unets/unet_2d_condition.py), with diffusers' defaults, plus the checks that refuse
//! what this port does not implement and the per-block values diffusers derives from them.
//!
//! Unknown keys (`_class_name`, `sample_size`, ...) are ignored. Keys that only matter for
//! block types this port refuses (`resnet_skip_time_act`, `resnet_out_scale_factor`,
//! `cross_attention_norm`, `mid_block_only_cross_attention`, ...) are ignored as diffusers
//! ignores them for `CrossAttnDownBlock2D` / `UNetMidBlock2DCrossAttn` / `CrossAttnUpBlock2D`.

use std::path::Path;

use serde::Deserialize;

use crate::models::config_ranges::{
    epsilon, finite, groups_divide, in_file, levels, size, MAX_CHANNELS, MAX_CLASS_EMBEDS,
    MAX_KERNEL, MAX_LAYERS,
};
use crate::{Error, Result};

/// A value given once for every block, or once per block.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum PerBlock<T> {
    One(T),
    Each(Vec<T>),
}

impl<T: Clone> PerBlock<T> {
    /// The value of each of `n` blocks; a list of the wrong length is refused naming `field`.
    pub fn expand(&self, n: usize, field: &str) -> Result<Vec<T>> {
        match self {
            PerBlock::One(v) => Ok(vec![v.clone(); n]),
            PerBlock::Each(list) if list.len() == n => Ok(list.clone()),
            PerBlock::Each(list) => Err(Error::unsupported(
                field,
                format!("has {} entries but there are {n} down blocks", list.len()),
            )),
        }
    }
}

/// `transformer_layers_per_block`: an int, a list, or (asymmetric UNets) a list of lists.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum TransformerLayers {
    One(usize),
    Each(Vec<usize>),
    Nested(Vec<Vec<usize>>),
}

/// The UNet's config.json. Field names and defaults are diffusers'.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct UNet2DConditionConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    pub center_input_sample: bool,
    pub flip_sin_to_cos: bool,
    pub freq_shift: f64,
    pub down_block_types: Vec<String>,
    pub mid_block_type: Option<String>,
    pub up_block_types: Vec<String>,
    pub only_cross_attention: PerBlock<bool>,
    pub block_out_channels: Vec<usize>,
    pub layers_per_block: PerBlock<usize>,
    pub downsample_padding: usize,
    pub mid_block_scale_factor: f64,
    pub dropout: f64,
    pub act_fn: String,
    pub norm_num_groups: Option<usize>,
    pub norm_eps: f64,
    pub cross_attention_dim: PerBlock<usize>,
    pub transformer_layers_per_block: TransformerLayers,
    pub reverse_transformer_layers_per_block: Option<serde_json::Value>,
    pub encoder_hid_dim: Option<usize>,
    pub encoder_hid_dim_type: Option<String>,
    /// The number of attention heads (diffusers' historical naming), unless
    /// `num_attention_heads` is set.
    pub attention_head_dim: PerBlock<usize>,
    pub num_attention_heads: Option<PerBlock<usize>>,
    pub dual_cross_attention: bool,
    pub use_linear_projection: bool,
    pub class_embed_type: Option<String>,
    pub addition_embed_type: Option<String>,
    pub num_class_embeds: Option<usize>,
    pub upcast_attention: bool,
    pub resnet_time_scale_shift: String,
    pub time_embedding_type: String,
    pub time_embedding_dim: Option<usize>,
    pub time_embedding_act_fn: Option<String>,
    pub timestep_post_act: Option<String>,
    pub time_cond_proj_dim: Option<usize>,
    pub conv_in_kernel: usize,
    pub conv_out_kernel: usize,
    pub attention_type: String,
    pub class_embeddings_concat: bool,
}

impl Default for UNet2DConditionConfig {
    fn default() -> Self {
        let s = |v: &str| v.to_string();
        Self {
            in_channels: 4,
            out_channels: 4,
            center_input_sample: false,
            flip_sin_to_cos: true,
            freq_shift: 0.0,
            down_block_types: vec![
                s("CrossAttnDownBlock2D"),
                s("CrossAttnDownBlock2D"),
                s("CrossAttnDownBlock2D"),
                s("DownBlock2D"),
            ],
            mid_block_type: Some(s("UNetMidBlock2DCrossAttn")),
            up_block_types: vec![
                s("UpBlock2D"),
                s("CrossAttnUpBlock2D"),
                s("CrossAttnUpBlock2D"),
                s("CrossAttnUpBlock2D"),
            ],
            only_cross_attention: PerBlock::One(false),
            block_out_channels: vec![320, 640, 1280, 1280],
            layers_per_block: PerBlock::One(2),
            downsample_padding: 1,
            mid_block_scale_factor: 1.0,
            dropout: 0.0,
            act_fn: s("silu"),
            norm_num_groups: Some(32),
            norm_eps: 1e-5,
            cross_attention_dim: PerBlock::One(1280),
            transformer_layers_per_block: TransformerLayers::One(1),
            reverse_transformer_layers_per_block: None,
            encoder_hid_dim: None,
            encoder_hid_dim_type: None,
            attention_head_dim: PerBlock::One(8),
            num_attention_heads: None,
            dual_cross_attention: false,
            use_linear_projection: false,
            class_embed_type: None,
            addition_embed_type: None,
            num_class_embeds: None,
            upcast_attention: false,
            resnet_time_scale_shift: s("default"),
            time_embedding_type: s("positional"),
            time_embedding_dim: None,
            time_embedding_act_fn: None,
            timestep_post_act: None,
            time_cond_proj_dim: None,
            conv_in_kernel: 3,
            conv_out_kernel: 3,
            attention_type: s("default"),
            class_embeddings_concat: false,
        }
    }
}

/// Everything one level of the UNet needs, derived from the config as diffusers derives it.
#[derive(Debug, Clone, PartialEq)]
pub struct LevelSpec {
    pub cross_attention: bool,
    pub channels: usize,
    pub layers: usize,
    pub heads: usize,
    pub cross_attention_dim: usize,
    pub only_cross_attention: bool,
    pub transformer_layers: usize,
}

fn refuse_some<T: std::fmt::Debug>(field: &str, value: &Option<T>) -> Result<()> {
    match value {
        None => Ok(()),
        Some(v) => Err(Error::unsupported(
            field,
            format!("is {v:?}; only null is implemented"),
        )),
    }
}

fn require(field: &str, value: &str, expected: &str) -> Result<()> {
    if value == expected {
        Ok(())
    } else {
        Err(Error::unsupported(
            field,
            format!("is {value:?}; only {expected:?} is implemented"),
        ))
    }
}

impl UNet2DConditionConfig {
    /// Reads and checks a config.json; a refused value is an [`Error::Config`] naming the file
    /// and the field.
    pub fn from_file(path: &Path) -> Result<Self> {
        let config: Self = crate::model_dir::read_json(path)?;
        config.validate().map_err(|e| in_file(path, e))?;
        Ok(config)
    }

    /// Refuses, naming the field, every setting this port does not implement and every value
    /// out of its sane range (sizes positive and bounded, epsilons finite and positive, group
    /// counts dividing the channels).
    pub fn validate(&self) -> Result<()> {
        let n = levels(&self.block_out_channels)?;
        size("in_channels", self.in_channels, MAX_CHANNELS)?;
        size("out_channels", self.out_channels, MAX_CHANNELS)?;
        epsilon("norm_eps", self.norm_eps)?;
        finite("freq_shift", self.freq_shift)?;
        finite("mid_block_scale_factor", self.mid_block_scale_factor)?;
        if !(0.0..=1.0).contains(&self.dropout) {
            return Err(Error::unsupported(
                "dropout",
                format!("is {}; expected 0..=1", self.dropout),
            ));
        }
        if self.downsample_padding > 1 {
            return Err(Error::unsupported(
                "downsample_padding",
                format!("is {}; expected 0 or 1", self.downsample_padding),
            ));
        }
        if let Some(classes) = self.num_class_embeds {
            size("num_class_embeds", classes, MAX_CLASS_EMBEDS)?;
        }
        if let Some(dim) = self.time_embedding_dim {
            size("time_embedding_dim", dim, 4 * MAX_CHANNELS)?;
        }
        for (field, len) in [
            ("down_block_types", self.down_block_types.len()),
            ("up_block_types", self.up_block_types.len()),
        ] {
            if len != n {
                return Err(Error::unsupported(
                    field,
                    format!("has {len} entries but block_out_channels has {n}"),
                ));
            }
        }
        for t in &self.down_block_types {
            if !matches!(t.as_str(), "DownBlock2D" | "CrossAttnDownBlock2D") {
                return Err(Error::unsupported(
                    "down_block_types",
                    format!(
                        "contains {t:?}; only DownBlock2D and CrossAttnDownBlock2D are implemented"
                    ),
                ));
            }
        }
        for t in &self.up_block_types {
            if !matches!(t.as_str(), "UpBlock2D" | "CrossAttnUpBlock2D") {
                return Err(Error::unsupported(
                    "up_block_types",
                    format!(
                        "contains {t:?}; only UpBlock2D and CrossAttnUpBlock2D are implemented"
                    ),
                ));
            }
        }
        if let Some(t) = &self.mid_block_type {
            if !matches!(t.as_str(), "UNetMidBlock2DCrossAttn" | "UNetMidBlock2D") {
                return Err(Error::unsupported(
                    "mid_block_type",
                    format!("is {t:?}; only UNetMidBlock2DCrossAttn, UNetMidBlock2D and null are implemented"),
                ));
            }
        }
        if self.num_attention_heads.is_some() {
            return Err(Error::unsupported(
                "num_attention_heads",
                "is set; diffusers refuses it too (the head count is read from attention_head_dim)",
            ));
        }
        require(
            "resnet_time_scale_shift",
            &self.resnet_time_scale_shift,
            "default",
        )?;
        require(
            "time_embedding_type",
            &self.time_embedding_type,
            "positional",
        )?;
        require("attention_type", &self.attention_type, "default")?;
        crate::models::layers::check_silu("act_fn", &self.act_fn)?;
        if let Some(act) = &self.time_embedding_act_fn {
            crate::models::layers::check_silu("time_embedding_act_fn", act)?;
        }
        if let Some(act) = &self.timestep_post_act {
            crate::models::layers::check_silu("timestep_post_act", act)?;
        }
        refuse_some("class_embed_type", &self.class_embed_type)?;
        refuse_some("addition_embed_type", &self.addition_embed_type)?;
        refuse_some("time_cond_proj_dim", &self.time_cond_proj_dim)?;
        refuse_some("encoder_hid_dim", &self.encoder_hid_dim)?;
        refuse_some("encoder_hid_dim_type", &self.encoder_hid_dim_type)?;
        refuse_some(
            "reverse_transformer_layers_per_block",
            &self.reverse_transformer_layers_per_block,
        )?;
        if self.dual_cross_attention {
            return Err(Error::unsupported(
                "dual_cross_attention",
                "is true; only false is implemented",
            ));
        }
        let Some(groups) = self.norm_num_groups else {
            return Err(Error::unsupported(
                "norm_num_groups",
                "is null; group-normalised blocks need a group count",
            ));
        };
        groups_divide(groups, &self.block_out_channels)?;
        for (field, k) in [
            ("conv_in_kernel", self.conv_in_kernel),
            ("conv_out_kernel", self.conv_out_kernel),
        ] {
            size(field, k, MAX_KERNEL)?;
            if k % 2 == 0 {
                return Err(Error::unsupported(
                    field,
                    format!("is {k}; only odd kernels keep the spatial size"),
                ));
            }
        }
        let levels = self.levels()?;
        let last = n - 1;
        for (i, level) in levels.iter().enumerate() {
            size("layers_per_block", level.layers, MAX_LAYERS)?;
            if level.transformer_layers > MAX_LAYERS {
                return Err(Error::unsupported(
                    "transformer_layers_per_block",
                    format!("is {}; expected 0..={MAX_LAYERS}", level.transformer_layers),
                ));
            }
            size(
                "cross_attention_dim",
                level.cross_attention_dim,
                MAX_CHANNELS,
            )?;
            let up_has_attention = self.up_block_types[last - i] == "CrossAttnUpBlock2D";
            let mid_has_attention =
                i == last && self.mid_block_type.as_deref() == Some("UNetMidBlock2DCrossAttn");
            let uses_heads = level.cross_attention || up_has_attention || mid_has_attention;
            if level.heads > MAX_CHANNELS {
                return Err(Error::unsupported(
                    "attention_head_dim",
                    format!("is {}; expected 1..={MAX_CHANNELS}", level.heads),
                ));
            }
            if uses_heads && (level.heads == 0 || level.channels % level.heads != 0) {
                return Err(Error::unsupported(
                    "attention_head_dim",
                    format!(
                        "gives {} heads at level {i}, which do not divide its {} channels",
                        level.heads, level.channels
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Width of the time embedding (`time_embedding_dim`, else 4 x block_out_channels[0]).
    pub fn time_embed_dim(&self) -> usize {
        self.time_embedding_dim
            .unwrap_or(4 * self.block_out_channels.first().copied().unwrap_or(0))
    }

    /// Width of the embedding the resnets receive (doubled by `class_embeddings_concat`).
    pub fn blocks_time_embed_dim(&self) -> usize {
        // diffusers doubles it whether or not a class embedding exists.
        if self.class_embeddings_concat {
            2 * self.time_embed_dim()
        } else {
            self.time_embed_dim()
        }
    }

    /// Per-level settings of the down path (the up path uses them reversed).
    pub fn levels(&self) -> Result<Vec<LevelSpec>> {
        let n = self.block_out_channels.len();
        let heads = self.attention_head_dim.expand(n, "attention_head_dim")?;
        let cross = self.cross_attention_dim.expand(n, "cross_attention_dim")?;
        let layers = self.layers_per_block.expand(n, "layers_per_block")?;
        let only_cross = self
            .only_cross_attention
            .expand(n, "only_cross_attention")?;
        let transformer_layers = match &self.transformer_layers_per_block {
            TransformerLayers::One(v) => vec![*v; n],
            TransformerLayers::Each(list) if list.len() == n => list.clone(),
            TransformerLayers::Each(list) => {
                return Err(Error::unsupported(
                    "transformer_layers_per_block",
                    format!("has {} entries but there are {n} down blocks", list.len()),
                ))
            }
            TransformerLayers::Nested(_) => return Err(Error::unsupported(
                "transformer_layers_per_block",
                "is a list of lists (asymmetric UNet); only an int or a flat list is implemented",
            )),
        };
        Ok((0..n)
            .map(|i| LevelSpec {
                cross_attention: self
                    .down_block_types
                    .get(i)
                    .is_some_and(|t| t == "CrossAttnDownBlock2D"),
                channels: self.block_out_channels[i],
                layers: layers[i],
                heads: heads[i],
                cross_attention_dim: cross[i],
                only_cross_attention: only_cross[i],
                transformer_layers: transformer_layers[i],
            })
            .collect())
    }
}
