//! A GAN model as read from a file: its detected architecture and its weights (on the CPU,
//! in the file's dtype), ready to be blended (`--denoise`), written as safetensors
//! (`diffsr convert`) or built into a network.

use std::path::{Path, PathBuf};

use candle_core::{DType, Tensor};

use super::arch::GanArch;
use super::detect::detect_arch;
use super::keys::normalise_keys;
use super::load::{read_model_file, read_safetensors_bytes};
use super::StateDict;
use crate::error::{Error, Result};

#[derive(Clone)]
pub struct GanModel {
    arch: GanArch,
    weights: StateDict,
    source: PathBuf,
}

impl std::fmt::Debug for GanModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GanModel")
            .field("arch", &self.arch)
            .field("tensors", &self.weights.len())
            .field("source", &self.source)
            .finish()
    }
}

impl GanModel {
    /// Reads and identifies a model file (.safetensors, .pth, ncnn .param/.bin).
    pub fn load(path: &Path) -> Result<Self> {
        Self::from_state_dict(read_model_file(path)?, path)
    }

    /// Identifies safetensors bytes held in memory; `name` stands for the file in messages.
    pub fn from_safetensors_bytes(bytes: &[u8], name: &Path) -> Result<Self> {
        Self::from_state_dict(read_safetensors_bytes(bytes, name)?, name)
    }

    /// Identifies a state dict in any of the known key layouts.
    pub fn from_state_dict(dict: StateDict, source: &Path) -> Result<Self> {
        let weights = normalise_keys(dict);
        let arch = detect_arch(&weights, source)?;
        Ok(Self {
            arch,
            weights,
            source: source.to_path_buf(),
        })
    }

    /// Overrides the SRVGGNetCompact activation, which the weights cannot tell when it has
    /// no parameters (ReLU is assumed; Real-ESRGAN also offers LeakyReLU 0.1).
    pub fn with_srvgg_act(mut self, act: super::arch::SrvggAct) -> Result<Self> {
        match &mut self.arch {
            GanArch::Srvgg(p) if p.act != super::arch::SrvggAct::PRelu => {
                p.act = act;
                Ok(self)
            }
            other => Err(Error::option(
                "activation",
                format!("{} has a fixed activation", other.describe()),
            )),
        }
    }

    /// Sets the scale of a model whose weights do not hold it: an SRCNN runs at 2 unless its
    /// file has a `diffsr.scale` entry ([`super::arch::SRCNN_SCALE_KEY`]); this sets it, and
    /// writes the entry so that `diffsr convert` keeps it. Other models accept only their own
    /// scale.
    pub fn with_scale(mut self, scale: usize) -> Result<Self> {
        match &mut self.arch {
            GanArch::Srcnn(p) => {
                let max = super::arch::srcnn::MAX_SCALE;
                if !(1..=max).contains(&scale) {
                    return Err(Error::option(
                        "model_scale",
                        format!("{scale} is outside 1..={max} for SRCNN"),
                    ));
                }
                p.scale = scale;
                let entry = Tensor::new(&[scale as f32], &candle_core::Device::Cpu)?;
                self.weights
                    .insert(super::arch::SRCNN_SCALE_KEY.to_string(), entry);
                Ok(self)
            }
            other if other.scale() == scale => Ok(self),
            other => Err(Error::option(
                "model_scale",
                format!(
                    "{} upscales by {} as its weights say; {scale} cannot be chosen",
                    other.describe(),
                    other.scale()
                ),
            )),
        }
    }

    pub fn arch(&self) -> &GanArch {
        &self.arch
    }

    pub fn weights(&self) -> &StateDict {
        &self.weights
    }

    /// The file the weights came from.
    pub fn source(&self) -> &Path {
        &self.source
    }

    /// Network interpolation (Real-ESRGAN's `dni`): every parameter becomes
    /// `weight · self + (1 − weight) · other`. realesr-general-x4v3's `--denoise D` blends the
    /// general model (weight D) with its `-wdn` twin.
    pub fn interpolate(&self, other: &GanModel, weight: f64) -> Result<GanModel> {
        if !(0.0..=1.0).contains(&weight) {
            return Err(Error::option(
                "denoise",
                format!("{weight} is outside 0..=1"),
            ));
        }
        let mismatch = |message: String| Error::Weights {
            path: other.source.clone(),
            message: format!(
                "cannot be blended with {}: {message}",
                self.source.display()
            ),
        };
        if other.arch != self.arch {
            return Err(mismatch(format!(
                "it is {}, the other is {}",
                other.arch.describe(),
                self.arch.describe()
            )));
        }
        let mut weights = StateDict::new();
        for (name, a) in &self.weights {
            let b = other
                .weights
                .get(name)
                .ok_or_else(|| mismatch(format!("it has no tensor `{name}`")))?;
            if a.dims() != b.dims() {
                return Err(mismatch(format!(
                    "tensor `{name}` is {:?} here and {:?} there",
                    b.dims(),
                    a.dims()
                )));
            }
            // In f32 whatever the files hold, so that a blend of f16 files loses nothing more.
            let a = a.to_dtype(DType::F32)?;
            let b = b.to_dtype(DType::F32)?;
            let blended = (a.affine(weight, 0.0)? + b.affine(1.0 - weight, 0.0)?)?;
            weights.insert(name.clone(), blended);
        }
        Ok(GanModel {
            arch: self.arch.clone(),
            weights,
            source: self.source.clone(),
        })
    }

    /// Writes the weights as safetensors under basicsr's names (`diffsr convert`); `dtype`
    /// `None` keeps each tensor's own, `Some` converts the floating-point weights (integer
    /// buffers and diffsr's own entries are kept as they are). The bytes go through [`crate::output_file::write_output`]
    /// (written whole, then renamed into place, with a new file's usual permissions; a device,
    /// FIFO or `-` written in place).
    pub fn save_safetensors(&self, path: &Path, dtype: Option<DType>) -> Result<()> {
        let tensors: Vec<(String, Tensor)> = self
            .weights
            .iter()
            .map(|(k, t)| {
                // Only weights change dtype: integer buffers (a transformer's
                // `relative_position_index`) and diffsr's own entries stay as they are.
                let cast = dtype.filter(|_| t.dtype().is_float() && !k.starts_with("diffsr."));
                Ok((k.clone(), cast.map_or(Ok(t.clone()), |d| t.to_dtype(d))?))
            })
            .collect::<Result<_>>()?;
        let bytes =
            safetensors::tensor::serialize(tensors.iter().map(|(k, t)| (k.as_str(), t)), None)
                .map_err(|e| Error::Weights {
                    path: path.to_path_buf(),
                    message: format!("cannot write safetensors: {e}"),
                })?;
        crate::output_file::write_output(path, &bytes)
    }

    /// Parameters in all (diffsr's own entries, `diffsr.output_resize` of an ncnn x2 / x3
    /// model or `diffsr.scale` of an SRCNN, are no parameters).
    pub fn parameter_count(&self) -> usize {
        self.weights
            .iter()
            .filter(|(k, _)| !k.starts_with("diffsr."))
            .map(|(_, t)| t.elem_count())
            .sum()
    }
}
