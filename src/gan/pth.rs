//! PyTorch `.pth` checkpoints read without executing pickle code: candle's pickle reader
//! interprets only the opcodes a tensor state dict needs. Real-ESRGAN / basicsr wrap the
//! weights as `{"params_ema": ...}` or `{"params": ...}`; those are unwrapped in that order
//! (the EMA weights are the released ones), then a bare state dict is tried.

use std::path::Path;

use candle_core::pickle::PthTensors;
use candle_core::{DType, Device};

use super::StateDict;
use crate::error::{Error, Result};

/// Wrapper keys tried in order before the top-level object itself.
const WRAPPERS: [&str; 3] = ["params_ema", "params", "state_dict"];

/// Reads the state dict of a zip-format `.pth` file onto the CPU.
pub fn read_pth(path: &Path) -> Result<StateDict> {
    let bad = |message: String| Error::Weights {
        path: path.to_path_buf(),
        message,
    };
    if !is_zip(path)? {
        return Err(bad(
            "not a zip-format PyTorch file: legacy (torch < 1.6) or plain-pickle .pth files \
             are not read (they could run code); re-save it with a current torch.save, or as \
             safetensors"
                .into(),
        ));
    }
    // candle's pickle reader is not hardened against every malformed file: a panic in it is
    // a bad file, not a crash of the run.
    let opened = std::panic::catch_unwind(|| open_state_dict(path))
        .map_err(|_| bad("malformed pickle data".into()))?;
    let tensors =
        opened.map_err(|e| bad(format!("cannot read it as a PyTorch checkpoint: {e}")))?;
    let Some(tensors) = tensors else {
        return Err(bad(
            "holds no state dict: expected a dict of tensors, or one under `params_ema`, \
             `params` or `state_dict` (a whole pickled model or other object is not read)"
                .into(),
        ));
    };
    let mut dict = StateDict::new();
    for name in tensors.tensor_infos().keys() {
        let tensor = std::panic::catch_unwind(|| tensors.get(name))
            .map_err(|_| bad(format!("malformed tensor `{name}`")))?
            .map_err(|e| bad(format!("tensor `{name}`: {e}")))?;
        if let Some(t) = tensor {
            let t = match t.dtype() {
                DType::F16 | DType::BF16 | DType::F32 | DType::F64 => t,
                other => {
                    return Err(bad(format!(
                        "tensor `{name}` is {other:?}; expected floating-point weights"
                    )))
                }
            };
            dict.insert(name.clone(), t.to_device(&Device::Cpu)?);
        }
    }
    Ok(dict)
}

/// The first wrapper key that yields tensors, else the top-level dict; `None` when nothing
/// in the file is a dict of tensors.
fn open_state_dict(path: &Path) -> candle_core::Result<Option<PthTensors>> {
    for key in WRAPPERS {
        // A missing key is an error from candle; that just means "try the next".
        if let Ok(t) = PthTensors::new(path, Some(key)) {
            if !t.tensor_infos().is_empty() {
                return Ok(Some(t));
            }
        }
    }
    let t = PthTensors::new(path, None)?;
    Ok((!t.tensor_infos().is_empty()).then_some(t))
}

fn is_zip(path: &Path) -> Result<bool> {
    use std::io::Read;
    let mut magic = [0u8; 4];
    let mut file = std::fs::File::open(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let n = file.read(&mut magic).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(n == 4 && magic == *b"PK\x03\x04")
}
