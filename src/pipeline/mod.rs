//! The latent-diffusion ×4 upscaler, step for step diffusers' `StableDiffusionUpscalePipeline`
//! (`pipelines/stable_diffusion/pipeline_stable_diffusion_upscale.py`).

mod memory_plan;
mod options;
mod preprocess;
mod prompt_cache;
mod upscale;

pub use memory_plan::{plan_memory, MemoryEstimate, MemoryPlan, ModelFootprint, ModelWidths};
pub use options::{LoadOptions, StepProgress, TilingOptions, UpscaleOptions, MAX_SCALE};
pub use preprocess::{pil_bicubic_resize_rgb8, rgb8_to_tensor, tensor_to_rgb8};
pub use upscale::UpscalePipeline;
