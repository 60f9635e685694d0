//! Layers that the UNet, the VAE, the text encoder and the GAN networks share, each mirroring
//! the module it ports (diffusers' models/resnet.py, upsampling.py, downsampling.py,
//! attention_processor.py, torch's GroupNorm / LayerNorm / scaled_dot_product_attention), so
//! that the models load hub safetensors through the same `VarBuilder` prefixes.
//!
//! The compute behind their CPU fast paths lives in the `diffsr_kernels` crate; a layer calls
//! it through the one helper of `cpu_dispatch.rs` and otherwise runs candle's own ops (CUDA, Metal,
//! the dtypes a kernel lacks).

pub(crate) mod activation;
pub mod attention;
pub(crate) mod attention_cpu;
pub mod conv;
pub(crate) mod cpu_dispatch;
mod cpu_slice;
pub mod downsampling;
pub(crate) mod geglu;
pub mod group_norm;
pub mod group_norm_stats;
pub(crate) mod layer_norm;
pub mod linear;
pub mod resnet;
pub mod sdpa;
pub(crate) mod softmax;
mod transpose;
pub mod upsampling;

pub use activation::{check_silu, ChannelSlopes};
pub use attention::{Attention, AttentionConfig};
pub use conv::{conv2d, Conv2d};
pub use downsampling::Downsample2D;
pub use group_norm::GroupNorm;
pub use group_norm_stats::{GroupNormMode, GroupNormStats};
pub use linear::{linear, linear_no_bias, Linear};
pub use resnet::{ResnetBlock2D, ResnetConfig};
pub use sdpa::{plan_chunks, scaled_dot_product_attention, ChunkPlan, DEFAULT_MAX_SCORE_BYTES};
pub use upsampling::Upsample2D;
