//! PyTorch `.pth` checkpoints as GAN state dicts, read by [`crate::pth_reader`] (no pickle
//! code runs; every declared size is checked against the archive first). Real-ESRGAN /
//! basicsr wrap the weights as `{"params_ema": ...}` or `{"params": ...}`; the reader unwraps
//! those in that order (the EMA weights are the released ones), then tries a bare state dict.

use std::path::Path;

use candle_core::DType;

use super::StateDict;
use crate::error::{Error, Result};
use crate::pth_reader::PthReader;

/// Reads the state dict of a zip-format `.pth` file onto the CPU, in its stored dtypes.
pub fn read_pth(path: &Path) -> Result<StateDict> {
    let reader = PthReader::open(path)?;
    let mut names: Vec<&str> = reader.names().collect();
    names.sort_unstable();
    let mut dict = StateDict::new();
    for name in names {
        match reader.dtype(name) {
            Some(DType::F16 | DType::BF16 | DType::F32 | DType::F64) => {}
            // Integer buffers saved with the weights (the Swin networks'
            // `relative_position_index`): kept, in their dtype; detection reads their shapes.
            Some(DType::I64 | DType::I32 | DType::I16 | DType::U8) => {}
            other => {
                return Err(Error::Weights {
                    path: path.to_path_buf(),
                    message: format!(
                        "tensor `{name}` is {other:?}; expected floating-point weights"
                    ),
                })
            }
        }
        if let Some(t) = reader.load(name)? {
            dict.insert(name.to_string(), t);
        }
    }
    Ok(dict)
}
