//! A state dict as the network builders read it: tensors fetched by name, checked for shape,
//! moved to the compute device and dtype, with errors that name the file and the tensor.

use std::path::Path;

use candle_core::{DType, Device, Tensor};

use crate::error::{Error, Result};
use crate::gan::StateDict;
use crate::models::layers::conv::Conv2d;

/// Tensors fetched by name, checked for shape, moved to the compute device and dtype.
pub struct Weights<'a> {
    dict: &'a StateDict,
    pub(crate) dtype: DType,
    pub(crate) device: &'a Device,
    path: &'a Path,
}

impl<'a> Weights<'a> {
    /// Reads `dict` into `dtype` on `device`; `path` names the file in errors.
    pub fn new(dict: &'a StateDict, dtype: DType, device: &'a Device, path: &'a Path) -> Self {
        Self {
            dict,
            dtype,
            device,
            path,
        }
    }

    /// The same tensors read on the CPU in `dtype`: for weights computed from others before
    /// use (SPAN's re-parameterised convolutions fold their branches in f64 and round once to
    /// the compute dtype).
    pub fn on_host(&self, dtype: DType) -> Weights<'a> {
        static CPU: Device = Device::Cpu;
        Weights {
            dict: self.dict,
            dtype,
            device: &CPU,
            path: self.path,
        }
    }

    /// Whether the dict holds tensor `name` (buffers a checkpoint may or may not carry).
    pub fn has(&self, name: &str) -> bool {
        self.dict.contains_key(name)
    }

    /// The tensor `name`, which must have shape `shape`.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let t = self.dict.get(name).ok_or_else(|| Error::Weights {
            path: self.path.to_path_buf(),
            message: format!("missing tensor `{name}` (expected shape {shape:?})"),
        })?;
        if t.dims() != shape {
            return Err(Error::Weights {
                path: self.path.to_path_buf(),
                message: format!(
                    "tensor `{name}` has shape {:?}, expected {shape:?}",
                    t.dims()
                ),
            });
        }
        // Contiguous: a Fortran-ordered `.pth` tensor arrives as a permuted view, and candle
        // 0.11's Metal conv2d multiplies by the kernel's storage as if it were contiguous.
        Ok(t.to_device(self.device)?
            .to_dtype(self.dtype)?
            .contiguous()?)
    }

    /// A 3×3 convolution with bias and "same" padding, `prefix.weight` / `prefix.bias`.
    pub fn conv3x3(&self, prefix: &str, c_in: usize, c_out: usize) -> Result<Conv2d> {
        let weight = self.get(&format!("{prefix}.weight"), &[c_out, c_in, 3, 3])?;
        let bias = self.get(&format!("{prefix}.bias"), &[c_out])?;
        let config = candle_nn::Conv2dConfig {
            padding: 1,
            ..Default::default()
        };
        Ok(Conv2d::new(weight, Some(bias), config).with_winograd())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_come_out_contiguous() -> Result<()> {
        let dev = Device::Cpu;
        // As a Fortran-ordered `.pth` arrives: a permuted view of its storage.
        let stored = Tensor::arange(0f32, 24.0, &dev)?.reshape((3, 2, 4))?;
        let view = stored.permute((2, 1, 0))?;
        assert!(!view.is_contiguous());
        let dict: StateDict = [("w".to_string(), view.clone())].into();
        let w = Weights::new(&dict, DType::F32, &dev, Path::new("model.pth"));
        let got = w.get("w", &[4, 2, 3])?;
        assert!(got.is_contiguous());
        assert_eq!(got.to_vec3::<f32>()?, view.to_vec3::<f32>()?);
        let err = w.get("w", &[4, 3, 2]).unwrap_err().to_string();
        assert!(
            err.contains("model.pth") && err.contains("[4, 3, 2]"),
            "{err}"
        );
        Ok(())
    }
}
