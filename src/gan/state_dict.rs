//! A model file's tensors by PyTorch state-dict name, whatever format they were read from
//! (safetensors, a `.pth` pickle, an ncnn `.param` + `.bin` pair).

use std::collections::BTreeMap;

use candle_core::Tensor;

/// Tensors by their PyTorch (basicsr) state-dict name, on the CPU, in the file's own dtype.
pub type StateDict = BTreeMap<String, Tensor>;
