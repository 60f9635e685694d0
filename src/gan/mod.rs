//! The GAN path: feed-forward SR networks in Candle (the architectures of
//! [`arch::registry`]: Real-ESRGAN's RRDBNet and SRVGGNetCompact), detected from the weights
//! alone, loaded from safetensors, PyTorch `.pth` or ncnn files, and run in blended tiles. The
//! fast path, and the fallback when diffusion cannot run.

pub mod arch;
pub mod detect;
pub mod embedded;
pub mod keys;
pub mod load;
pub mod memory_plan;
pub mod model;
pub mod ncnn;
pub mod pth;
pub mod state_dict;
pub mod upscaler;

pub use arch::{GanArch, GanNetwork};
pub use memory_plan::{GanMemoryEstimate, GanMemoryPlan};
pub use model::GanModel;
pub use state_dict::StateDict;
pub use upscaler::{GanOptions, GanUpscaler};
