//! diffsr's CPU compute kernels: plain f32 slices in, plain f32 buffers out, no tensor types.
//!
//! The network layers in `diffsr::models::layers` borrow the contiguous storage of their
//! tensors and call these; everything here is a loop nest or a call into the `gemm` crate,
//! run on the rayon pool that candle and gemm already use (`parallel.rs` is the one place that
//! splits work over it).
//!
//! - [`conv`]: stride-1 convolutions as GEMMs (padded "wide grid", im2col, 1×1);
//! - [`winograd`]: 3×3 convolutions by Winograd's F(2×2, 3×3) and F(4×4, 3×3);
//! - [`linear`]: `x Wᵀ + b` in one GEMM, or in column bands for few rows;
//! - [`attention`]: softmax(q kᵀ) v over many small (batch × head) slices;
//! - [`window_attention`]: Swin's shifted-window attention, roll and partition by indexing;
//! - [`group_norm`], [`layer_norm`], [`softmax`], [`elementwise`] (GEGLU, GELU, PReLU);
//! - [`pixel_shuffle`]: the compact GAN's pixel shuffle + nearest upsampled input, in one pass;
//! - [`transpose`]: blocked (rows, cols) → (cols, rows) for weight layouts;
//! - [`malloc`]: glibc's malloc told to keep freed blocks (the one call outside the maths);
//! - [`gated_alloc`]: the system allocator behind a gate, for the fuzz tests' allocation cap;
//! - [`shared_library`]: whether a shared library loads (`dlopen`), for the CUDA build's checks;
//! - [`epilogue`]: what an output pass adds besides the sum (bias, residual, activation),
//!   shared by the convolution, Winograd and linear routes.
//!
//! Every `unsafe` block says what makes it sound in a `SAFETY:` comment; the lints below hold
//! the crate to that.

#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

mod fast_math;
mod few_rows;
mod matmul;
mod parallel;
#[cfg(test)]
mod reference;
mod winograd_kernels;

pub mod attention;
pub mod conv;
pub mod elementwise;
pub mod epilogue;
pub mod gated_alloc;
pub mod group_norm;
pub mod layer_norm;
pub mod linear;
pub mod malloc;
pub mod pixel_shuffle;
pub mod shared_library;
pub mod softmax;
pub mod transpose;
pub mod window_attention;
pub mod winograd;

pub use epilogue::{Activation, Epilogue};
