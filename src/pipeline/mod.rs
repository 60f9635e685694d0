//! The latent-diffusion ×4 upscaler, step for step diffusers' `StableDiffusionUpscalePipeline`
//! (`pipelines/stable_diffusion/pipeline_stable_diffusion_upscale.py`).

mod memory_plan;
mod options;
mod preprocess;
mod prompt_cache;
mod upscale;

pub use crate::upscaler::DiffusionSettings;
pub use memory_plan::{
    plan_memory, Im2colBytes, MemoryEstimate, MemoryPlan, ModelFootprint, ModelWidths,
};
pub use options::{LoadOptions, TilingOptions};
pub use upscale::UpscalePipeline;
