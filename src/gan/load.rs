//! Reading a GAN model file of any supported format into a [`StateDict`]: safetensors,
//! PyTorch `.pth`, or an ncnn `.param` + `.bin` pair (either file named).

use std::path::Path;

use candle_core::Device;

use super::{ncnn, pth, StateDict};
use crate::error::{Error, Result};

/// The formats a GAN model file can have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelFormat {
    Safetensors,
    Pth,
    Ncnn,
}

impl ModelFormat {
    /// From the file extension.
    pub fn from_path(path: &Path) -> Option<Self> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "safetensors" => Some(Self::Safetensors),
            "pth" | "pt" | "ckpt" => Some(Self::Pth),
            "param" | "bin" => Some(Self::Ncnn),
            _ => None,
        }
    }
}

/// Reads every tensor of a model file onto the CPU, under the file's own names.
pub fn read_model_file(path: &Path) -> Result<StateDict> {
    if !path.is_file() {
        return Err(Error::Io {
            path: path.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such model file"),
        });
    }
    match ModelFormat::from_path(path) {
        Some(ModelFormat::Safetensors) => read_safetensors(path),
        Some(ModelFormat::Pth) => pth::read_pth(path),
        Some(ModelFormat::Ncnn) => {
            let (param, bin) = ncnn::ncnn_pair(path).ok_or_else(|| Error::Weights {
                path: path.to_path_buf(),
                message: "an ncnn model needs both NAME.param and NAME.bin side by side".into(),
            })?;
            ncnn::load_ncnn(&param, &bin)
        }
        None => Err(Error::Weights {
            path: path.to_path_buf(),
            message: "unknown model file type; expected .safetensors, .pth (.pt, .ckpt) or an \
                      ncnn .param/.bin pair"
                .into(),
        }),
    }
}

fn read_safetensors(path: &Path) -> Result<StateDict> {
    let tensors =
        candle_core::safetensors::load(path, &Device::Cpu).map_err(|e| Error::Weights {
            path: path.to_path_buf(),
            message: format!("not a readable safetensors file: {e}"),
        })?;
    Ok(tensors.into_iter().collect())
}

/// Reads safetensors bytes held in memory (the embedded default model).
pub fn read_safetensors_bytes(bytes: &[u8], name: &Path) -> Result<StateDict> {
    let tensors =
        candle_core::safetensors::load_buffer(bytes, &Device::Cpu).map_err(|e| Error::Weights {
            path: name.to_path_buf(),
            message: format!("not a readable safetensors buffer: {e}"),
        })?;
    Ok(tensors.into_iter().collect())
}
