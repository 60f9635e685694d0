//! diffsr: a super-resolution engine in Rust on Candle.
//!
//! The main job is latent-diffusion ×4 upscaling with Stable Diffusion's x4 upscaler, equal to
//! diffusers' `StableDiffusionUpscalePipeline`; the Real-ESRGAN family is the fast path. This
//! crate is the library behind the `diffsr` binary. Denoising solvers live in their own crate,
//! re-exported here as [`schedulers`].
//!
//! Features: `hub` (default) is the hub client ([`hub`]) that downloads models named by repo id;
//! `cli` (default) builds the `diffsr` binary (clap, indicatif, ctrlc, anyhow: none of them are
//! library dependencies) and turns on `profiling`, the [`profile::StageTimes`] collector. With
//! `default-features = false` the library loads local models only and pulls in no CLI or
//! network crate.

pub mod batch;
pub mod color_fix;
pub mod device;
pub mod engine;
pub mod error;
pub mod gan;
#[cfg(feature = "hub")]
pub mod hub;
pub mod image_io;
mod input_file;
pub mod memory;
pub mod model_dir;
mod model_file;
pub mod model_spec;
pub mod models;
pub mod output_file;
pub mod pipeline;
pub mod profile;
mod pth_reader;
mod resample;
pub mod rng;
mod safetensors_reader;
pub mod scale_plan;
pub mod schedule_report;
mod tensor_host;
pub mod text_escape;
pub mod threads;
pub mod tiling;
pub mod tokenizer;
pub mod upscaler;

pub use diffsr_schedulers as schedulers;
pub use error::{Error, Result};
