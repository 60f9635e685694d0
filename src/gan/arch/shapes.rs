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

/// Most channels any layer may have: released models use 64, a few community ones 128 or
/// 256. More is no model diffsr runs, and would make the memory estimates meaningless.
pub(crate) const MAX_CHANNELS: usize = 1024;

/// `(out, in)` channels of the 3×3 convolution weight `name`, both at least 1 and at most
/// [`MAX_CHANNELS`].
pub(crate) fn conv3x3_dims(dict: &StateDict, name: &str) -> Result<(usize, usize), Reason> {
    let d = dims(dict, name)?;
    match d.as_slice() {
        [out, inp, 3, 3]
            if (1..=MAX_CHANNELS).contains(out) && (1..=MAX_CHANNELS).contains(inp) =>
        {
            Ok((*out, *inp))
        }
        [_, _, 3, 3] => Err(format!(
            "tensor `{name}` has shape {d:?}; expected a 3x3 conv weight with 1 to {MAX_CHANNELS} \
             output and input channels"
        )),
        _ => Err(format!(
            "tensor `{name}` has shape {d:?}; expected a 3x3 conv weight"
        )),
    }
}

/// Checks that tensor `name` exists with exactly `shape`.
pub(crate) fn expect_shape(dict: &StateDict, name: &str, shape: &[usize]) -> Result<(), Reason> {
    let d = dims(dict, name).map_err(|e| format!("{e} (expected shape {shape:?})"))?;
    if d != shape {
        return Err(format!(
            "tensor `{name}` has shape {d:?}, expected {shape:?} (the layers before and after it \
             must agree on channel counts)"
        ));
    }
    Ok(())
}

/// Checks every 3×3 convolution `(prefix, out, in)`: `prefix.weight` `[out, in, 3, 3]` and
/// `prefix.bias` `[out]`, so that consecutive layers agree before anything is built.
pub(crate) fn expect_convs(
    dict: &StateDict,
    convs: &[(String, usize, usize)],
) -> Result<(), Reason> {
    for (prefix, c_out, c_in) in convs {
        expect_shape(dict, &format!("{prefix}.weight"), &[*c_out, *c_in, 3, 3])?;
        expect_shape(dict, &format!("{prefix}.bias"), &[*c_out])?;
    }
    Ok(())
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
