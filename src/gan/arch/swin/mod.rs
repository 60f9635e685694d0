//! The pieces the Swin-Transformer super-resolution networks share (SwinIR and Swin2SR here;
//! HAT, DRCT and ATD build on them), after spandrel 0.4.2
//! `architectures/SwinIR/__arch/SwinIR.py`:
//! - [`WindowAttention`]: (shifted) window multi-head attention from a qkv projection in
//!   image order, the relative-position bias and shift mask added in place (a CPU kernel; the
//!   reference's tensor ops elsewhere), scaled or cosine logits;
//! - [`geometry`]: relative-position index, shift rule, shift mask;
//! - [`SwinBlock`]: the pre-norm block (norm, W-MSA, residual, norm, MLP, residual);
//! - [`layers`]: LayerNorm, MLP, 1×1 conv, tokens ↔ image;
//! - [`ResiConv`]: the `1conv` / `3conv` residual convolution;
//! - [`Tail`]: the `pixelshuffle` / `pixelshuffledirect` / `nearest+conv` / none tails;
//! - [`detect`]: sequence lengths, window and training size from buffers, tensor checks.
//!
//! Tokens are (B, H·W, C) in image (row-major) order throughout: the window partition and the
//! cyclic shift exist only inside the attention.

mod attention;
mod block;
pub mod detect;
pub mod geometry;
pub mod layers;
mod residual;
mod tensor_path;
mod upsample;

pub use attention::{LogitScale, WindowAttention};
pub use block::{block_tensors, table_bias, BlockDims, SwinBlock};
pub use residual::{ResiConnection, ResiConv};
pub use upsample::{shuffle_stages, tail_tensors, Tail, TailDims, Upsampler};
