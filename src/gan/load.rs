//! Reading a GAN model file of any supported format into a [`StateDict`]: safetensors,
//! PyTorch `.pth`, or an ncnn `.param` + `.bin` pair (either file named).

use std::path::Path;

use candle_core::Device;

use super::{ncnn, pth, StateDict};
use crate::error::{Error, Result};
use crate::model_file::regular_file_len;
use crate::safetensors_reader::{tensors_from_bytes, SafetensorsReader};

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
/// The file must be a regular file (a FIFO, device or directory is refused before it is
/// opened); every size it declares is checked against its length before anything is
/// allocated, and tensors holding a NaN or an infinity are refused, by name.
pub fn read_model_file(path: &Path) -> Result<StateDict> {
    regular_file_len(path)?;
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
    let reader = SafetensorsReader::open(&[path.to_path_buf()])?;
    // In name order, so that a file with several bad tensors always names the same one.
    let mut names: Vec<&str> = reader.names().collect();
    names.sort_unstable();
    names
        .into_iter()
        .map(|name| {
            let tensor = reader
                .load(name, &Device::Cpu)
                .map_err(|e| Error::Weights {
                    path: path.to_path_buf(),
                    message: strip_path(&e.to_string(), path),
                })?;
            Ok((name.to_string(), tensor))
        })
        .collect()
}

/// A reader message without the `path: ` prefix the error adds again.
fn strip_path(message: &str, path: &Path) -> String {
    let prefix = format!("{}: ", path.display());
    message.strip_prefix(&prefix).unwrap_or(message).to_string()
}

/// Reads safetensors bytes held in memory (the embedded default model), with the checks files
/// get; `name` stands for the file in errors.
pub fn read_safetensors_bytes(bytes: &[u8], name: &Path) -> Result<StateDict> {
    Ok(tensors_from_bytes(bytes, name)?.into_iter().collect())
}
