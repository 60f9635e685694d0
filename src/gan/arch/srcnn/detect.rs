//! SRCNN's hyper-parameters read from a state dict in the common PyTorch ports' names
//! (`conv1`, `conv2`, `conv3`): channels, filter counts and kernel sizes from the shapes, the
//! biases from their presence, the scale from the `diffsr.scale` entry (else 2).

use candle_core::DType;

use super::config::{DEFAULT_SCALE, MAX_SCALE, SRCNN_SCALE_KEY};
use super::SrcnnParams;
use crate::gan::arch::shapes::{dims, expect_shape, Reason, MAX_CHANNELS};
use crate::gan::StateDict;

/// Whether the dict holds the first and last convolutions and nothing of a deeper network
/// (conv2 is then required by [`srcnn_params`], which names it when it is missing).
pub(super) fn is_srcnn(dict: &StateDict) -> bool {
    dict.contains_key("conv1.weight")
        && dict.contains_key("conv3.weight")
        && !dict.contains_key("conv4.weight")
}

/// Largest kernel: the published ones are 9, 5, 1.
const MAX_KERNEL: usize = 15;

/// `(out, in, k)` of the square conv weight `name` with an odd kernel.
fn conv_dims(dict: &StateDict, name: &str) -> Result<(usize, usize, usize), Reason> {
    let d = dims(dict, name)?;
    match d[..] {
        [o, i, k, k2]
            if k == k2
                && k % 2 == 1
                && k <= MAX_KERNEL
                && (1..=MAX_CHANNELS).contains(&o)
                && (1..=MAX_CHANNELS).contains(&i) =>
        {
            Ok((o, i, k))
        }
        _ => Err(format!(
            "tensor `{name}` has shape {d:?}; expected a square conv weight with an odd kernel \
             up to {MAX_KERNEL} and 1 to {MAX_CHANNELS} channels"
        )),
    }
}

/// The scale the `diffsr.scale` entry holds, else the default.
pub(super) fn read_scale(dict: &StateDict) -> Result<usize, Reason> {
    let Some(t) = dict.get(SRCNN_SCALE_KEY) else {
        return Ok(DEFAULT_SCALE);
    };
    let bad = || format!("`{SRCNN_SCALE_KEY}` must hold one whole scale from 1 to {MAX_SCALE}");
    if t.elem_count() != 1 {
        return Err(format!("{} (it has shape {:?})", bad(), t.dims()));
    }
    let v = t
        .flatten_all()
        .and_then(|t| t.to_dtype(DType::F64))
        .and_then(|t| t.to_vec1::<f64>())
        .map_err(|e| format!("{}: {e}", bad()))?;
    let s = v.first().copied().unwrap_or(0.0);
    if s.fract() != 0.0 || !(1.0..=MAX_SCALE as f64).contains(&s) {
        return Err(format!("{} (it holds {s})", bad()));
    }
    Ok(s as usize)
}

/// The hyper-parameters of a dict that [`is_srcnn`], every tensor's shape checked.
pub(super) fn srcnn_params(dict: &StateDict) -> Result<SrcnnParams, Reason> {
    let (n1, c, f1) = conv_dims(dict, "conv1.weight")?;
    if c != 1 && c != 3 {
        return Err(format!(
            "SRCNN whose conv1 takes {c} channels: only 1 (Y) or 3 (RGB) are supported"
        ));
    }
    let (n2, _, f2) = conv_dims(dict, "conv2.weight")?;
    let (_, _, f3) = conv_dims(dict, "conv3.weight")?;
    let bias = dict.contains_key("conv1.bias");
    let layers = [
        ("conv1", n1, c, f1),
        ("conv2", n2, n1, f2),
        ("conv3", c, n2, f3),
    ];
    for (name, o, i, k) in layers {
        expect_shape(dict, &format!("{name}.weight"), &[o, i, k, k])?;
        if bias {
            expect_shape(dict, &format!("{name}.bias"), &[o])?;
        }
    }
    Ok(SrcnnParams {
        net_channels: c,
        filters: [n1, n2],
        kernels: [f1, f2, f3],
        bias,
        scale: read_scale(dict)?,
    })
}

/// An SRCNN state dict of zeros: `c` channels, 64 / 32 filters, kernels `k`, biases.
#[cfg(test)]
pub(crate) fn synthetic_srcnn(c: usize, k: [usize; 3]) -> StateDict {
    use candle_core::{Device, Tensor};
    let zeros = |shape: &[usize]| Tensor::zeros(shape, DType::F32, &Device::Cpu).unwrap();
    let mut dict = StateDict::new();
    for (name, o, i, k) in [
        ("conv1", 64, c, k[0]),
        ("conv2", 32, 64, k[1]),
        ("conv3", c, 32, k[2]),
    ] {
        dict.insert(format!("{name}.weight"), zeros(&[o, i, k, k]));
        dict.insert(format!("{name}.bias"), zeros(&[o]));
    }
    dict
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    use super::*;

    #[test]
    fn reads_kernels_channels_and_scale() {
        let mut dict = synthetic_srcnn(1, [9, 1, 5]);
        assert!(is_srcnn(&dict));
        let p = srcnn_params(&dict).unwrap();
        assert_eq!(
            p,
            SrcnnParams {
                net_channels: 1,
                filters: [64, 32],
                kernels: [9, 1, 5],
                bias: true,
                scale: DEFAULT_SCALE,
            }
        );
        dict.insert(
            SRCNN_SCALE_KEY.into(),
            Tensor::new(&[3f32], &Device::Cpu).unwrap(),
        );
        assert_eq!(srcnn_params(&dict).unwrap().scale, 3);
        dict.insert(
            SRCNN_SCALE_KEY.into(),
            Tensor::new(&[2.5f32], &Device::Cpu).unwrap(),
        );
        let err = srcnn_params(&dict).unwrap_err();
        assert!(
            err.contains(SRCNN_SCALE_KEY) && err.contains("2.5"),
            "{err}"
        );
        let rgb = synthetic_srcnn(3, [9, 5, 5]);
        assert_eq!(srcnn_params(&rgb).unwrap().net_channels, 3);
    }

    #[test]
    fn even_kernels_and_deeper_nets_are_not_srcnn() {
        let dict = synthetic_srcnn(1, [9, 4, 5]);
        let err = srcnn_params(&dict).unwrap_err();
        assert!(err.contains("conv2.weight"), "{err}");
        let mut deeper = synthetic_srcnn(1, [9, 5, 5]);
        deeper.insert("conv4.weight".into(), deeper["conv3.weight"].clone());
        assert!(!is_srcnn(&deeper));
    }
}
