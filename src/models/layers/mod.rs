//! Layers that the UNet and the VAE share, each mirroring the diffusers module it ports
//! (models/resnet.py, upsampling.py, downsampling.py, attention_processor.py and torch's
//! GroupNorm / scaled_dot_product_attention), so that both models load hub safetensors through
//! the same `VarBuilder` prefixes diffusers uses.

pub mod activation;
pub mod attention;
pub mod attention_cpu;
pub mod conv;
mod cpu_parallel;
pub(crate) mod cpu_slice;
pub mod downsampling;
pub mod epilogue;
pub mod fast_math;
pub mod geglu;
pub mod group_norm;
pub mod group_norm_stats;
pub mod layer_norm;
pub mod linear;
mod linear_few_rows;
mod matmul;
pub mod resnet;
pub mod sdpa;
pub mod softmax;
pub mod transpose;
pub mod upsampling;
pub mod winograd;
pub mod winograd_kernels;

pub use activation::check_silu;
pub use attention::{Attention, AttentionConfig};
pub use downsampling::Downsample2D;
pub use group_norm::GroupNorm;
pub use group_norm_stats::{record_group_norm_stats, with_group_norm_stats, GroupNormStats};
pub use linear::{linear, linear_no_bias, Linear};
pub use resnet::{ResnetBlock2D, ResnetConfig};
pub use sdpa::{plan_chunks, scaled_dot_product_attention, ChunkPlan, DEFAULT_MAX_SCORE_BYTES};
pub use upsampling::Upsample2D;
