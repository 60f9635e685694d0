//! Reading hyper-parameters from a state dict's tensor shapes, for the architectures'
//! detectors. Failures are plain reasons; the registry's caller adds the file name.

use crate::gan::StateDict;

/// Why a state dict does not fit an architecture it was recognised as.
pub(crate) type Reason = String;

/// The shape of tensor `name`.
pub(crate) fn dims(dict: &StateDict, name: &str) -> Result<Vec<usize>, Reason> {
    dict.get(name)
        .map(|t| t.dims().to_vec())
        .ok_or_else(|| format!("missing tensor `{name}`"))
}

/// `(out, in)` channels of the 3×3 convolution weight `name`.
pub(crate) fn conv3x3_dims(dict: &StateDict, name: &str) -> Result<(usize, usize), Reason> {
    let d = dims(dict, name)?;
    match d.as_slice() {
        [out, inp, 3, 3] => Ok((*out, *inp)),
        _ => Err(format!(
            "tensor `{name}` has shape {d:?}; expected a 3x3 conv weight"
        )),
    }
}

/// How many of `name(start)`, `name(start + 1)`, ... the dict holds before the first gap.
pub(crate) fn count_from(dict: &StateDict, start: usize, name: impl Fn(usize) -> String) -> usize {
    (start..)
        .take_while(|&i| dict.contains_key(&name(i)))
        .count()
}

/// A state dict of zero 3×3 convolutions `(name, out, in)`, `name.weight` and `name.bias`,
/// for detection tests that need shapes only.
#[cfg(test)]
pub(crate) fn synthetic_convs(convs: &[(String, usize, usize)]) -> StateDict {
    use candle_core::{DType, Device, Tensor};
    let zeros = |shape: &[usize]| Tensor::zeros(shape, DType::F32, &Device::Cpu).unwrap();
    let mut dict = StateDict::new();
    for (name, c_out, c_in) in convs {
        dict.insert(format!("{name}.weight"), zeros(&[*c_out, *c_in, 3, 3]));
        dict.insert(format!("{name}.bias"), zeros(&[*c_out]));
    }
    dict
}
