//! ncnn models (`.param` + `.bin`), as realesrgan-ncnn-vulkan and Upscayl ship them.
//!
//! Follows ncnn's own model format (`Net::load_param` for the text `.param`,
//! `ModelBinFromDataReader` for the `.bin`) and turns the graph into the PyTorch state dict of
//! Real-ESRGAN's basicsr architectures (and of Real-CUGAN, as realcugan-ncnn-vulkan ships it),
//! so the GAN path loads these files like any other: [`param`] (with [`value`]) parses the
//! graph, [`bin`] reads the weights, [`convert`] recognises the architecture (`srvgg`, `rrdb`,
//! `cugan`) and names the tensors.

pub mod bin;
pub mod convert;
mod cugan;
pub mod param;
mod rrdb;
mod srvgg;
pub mod value;

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::gan::StateDict;
use crate::model_file::{read_regular, regular_file_len, FileRole};

/// Largest `.param` read: Real-ESRGAN x4plus's, the largest known, is 116 KB.
pub const MAX_PARAM_BYTES: u64 = 16 << 20;

/// Loads an ncnn model pair into a state dict with basicsr names (`body.0.weight`,
/// `conv_first.weight`, ...). Kernels keep their stored dtype (F16 for fp16 files, F32
/// otherwise); biases and PReLU slopes are F32. All tensors are on the CPU.
///
/// Both must be regular files (checked before they are opened); the `.param` may hold at most
/// [`MAX_PARAM_BYTES`], the `.bin` at most what the `.param`'s layers can use.
pub fn load_ncnn(param: &Path, bin: &Path) -> Result<StateDict> {
    let bytes = read_regular(param, MAX_PARAM_BYTES, FileRole::Model)?;
    // A binary `.param.bin` or a mixed-up file is not text; say so instead of a parse error.
    let text = String::from_utf8(bytes).map_err(|e| {
        weights_error(
            param,
            format!(
                "{} is not UTF-8 text (invalid byte at {}): expected a text ncnn .param file",
                file_name(param),
                e.utf8_error().valid_up_to()
            ),
        )
    })?;
    let layers = param::parse(param, &text)?;
    let max = bin::max_len(param, &layers)?;
    let len = regular_file_len(bin)?;
    if len > max {
        return Err(weights_error(
            bin,
            format!(
                "{} has {len} bytes, more than the {max} the layers of {} can hold (mismatched \
                 pair)",
                file_name(bin),
                file_name(param)
            ),
        ));
    }
    let data = read_regular(bin, max, FileRole::Model)?;
    let weights = bin::read(param, bin, &data, &layers)?;
    convert::to_state_dict(param, &layers, weights)
}

/// Given either file of a pair (`x.param` or `x.bin`), returns `(x.param, x.bin)`: the two
/// share their stem. `None` for any other extension, and for ncnn's binary `x.param.bin`
/// (which has no text `.param`). Whether the files exist is not checked.
pub fn ncnn_pair(path: &Path) -> Option<(PathBuf, PathBuf)> {
    let ext = path.extension()?.to_str()?.to_ascii_lowercase();
    let stem = Path::new(path.file_stem()?);
    match ext.as_str() {
        "param" => Some((path.to_path_buf(), path.with_extension("bin"))),
        "bin"
            if stem
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("param")) =>
        {
            None
        }
        "bin" => Some((path.with_extension("param"), path.to_path_buf())),
        _ => None,
    }
}

/// An [`Error::Weights`] about `path`.
fn weights_error(path: &Path, message: impl Into<String>) -> Error {
    Error::Weights {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// The file's name for messages (the full path is already in the error's prefix).
fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// Quotes at most 60 characters of a bad token, so that garbage input gives short messages.
fn clip(text: &str) -> String {
    let mut clipped: String = text.chars().take(60).collect();
    if clipped.len() < text.len() {
        clipped.push_str("...");
    }
    clipped
}
