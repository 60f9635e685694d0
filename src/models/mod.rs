//! The networks of the x4 upscaler, each mirroring its diffusers / transformers module tree so
//! that `VarBuilder` prefixes load hub safetensors unchanged.

pub mod clip_text;
pub mod config_ranges;
pub mod layers;
pub mod unet;
pub mod vae;
