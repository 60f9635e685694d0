//! SPAN's hyper-parameters read from a state dict, as spandrel 0.4.2's
//! `architectures/SPAN/__init__.py` reads them: the input and feature channels from
//! `conv_1.sk.weight`, scale and output channels from the upsampler's outputs, the input
//! normalisation from the presence of the `no_norm` buffer. Every other tensor's shape is then
//! checked against them, as PyTorch's strict `load_state_dict` would.

use super::config::BLOCKS;
use super::conv3xc::conv3xc_shapes;
use super::SpanParams;
use crate::gan::arch::shapes::{dims, expect_shape, Reason, MAX_CHANNELS};
use crate::gan::StateDict;

/// The tensors spandrel's `SPANArch` detects the architecture by.
const DETECT_KEYS: [&str; 8] = [
    "conv_1.sk.weight",
    "block_1.c1_r.sk.weight",
    "block_1.c1_r.eval_conv.weight",
    "block_1.c3_r.eval_conv.weight",
    "conv_cat.weight",
    "conv_2.sk.weight",
    "conv_2.eval_conv.weight",
    "upsampler.0.weight",
];

/// The buffer whose presence turns the input normalisation off.
pub(super) const NO_NORM_KEY: &str = "no_norm";

/// Largest pixel-shuffle factor accepted (released models are x1 to x8).
const MAX_SCALE: usize = 16;

/// Whether the dict holds all of SPAN's identifying tensors.
pub(super) fn is_span(dict: &StateDict) -> bool {
    DETECT_KEYS.iter().all(|k| dict.contains_key(*k))
}

/// spandrel's `get_scale_and_output_channels`: the (scale, channels) with
/// `scale² · channels = outputs`, trying the input's channel count first, then 3, 4 and 1
/// (the weights alone cannot tell 4 × 3 channels from 2 × 12).
pub(crate) fn scale_and_out_channels(outputs: usize, in_channels: usize) -> Option<(usize, usize)> {
    [in_channels, 3, 4, 1].into_iter().find_map(|c| {
        let square = (c > 0 && outputs % c == 0).then_some(outputs / c)?;
        let root = square.isqrt();
        (root * root == square && root > 0).then_some((root, c))
    })
}

/// The hyper-parameters of a dict that [`is_span`], after every tensor's shape has been
/// checked against them.
pub(super) fn span_params(dict: &StateDict) -> Result<SpanParams, Reason> {
    let first = dims(dict, "conv_1.sk.weight")?;
    let (feature_channels, in_channels) = match first.as_slice() {
        [fc, inp, 1, 1] if (1..=MAX_CHANNELS).contains(fc) && (1..=MAX_CHANNELS).contains(inp) => {
            (*fc, *inp)
        }
        _ => {
            return Err(format!(
                "tensor `conv_1.sk.weight` has shape {first:?}; expected a 1x1 conv weight \
                 [feature channels, input channels, 1, 1] with 1 to {MAX_CHANNELS} of each"
            ))
        }
    };
    let up = dims(dict, "upsampler.0.weight")?;
    let outputs = match up.as_slice() {
        [o, _, 3, 3] if (1..=MAX_CHANNELS * MAX_SCALE).contains(o) => *o,
        _ => {
            return Err(format!(
                "tensor `upsampler.0.weight` has shape {up:?}; expected a 3x3 conv weight \
                 [out channels × scale², {feature_channels}, 3, 3]"
            ))
        }
    };
    let (upscale, out_channels) = scale_and_out_channels(outputs, in_channels)
        .filter(|(s, _)| *s <= MAX_SCALE)
        .ok_or_else(|| {
            format!(
                "tensor `upsampler.0.weight` has {outputs} outputs: not 1, 3, 4 or \
                 {in_channels} channels times a square scale up to {MAX_SCALE}²"
            )
        })?;
    let fc = feature_channels;
    let mut shapes = conv3xc_shapes("conv_1", in_channels, fc);
    for b in 1..=BLOCKS {
        for c in 1..=3 {
            shapes.extend(conv3xc_shapes(&format!("block_{b}.c{c}_r"), fc, fc));
        }
    }
    shapes.push(("conv_cat.weight".into(), vec![fc, 4 * fc, 1, 1]));
    shapes.push(("conv_cat.bias".into(), vec![fc]));
    shapes.extend(conv3xc_shapes("conv_2", fc, fc));
    shapes.push(("upsampler.0.weight".into(), vec![outputs, fc, 3, 3]));
    shapes.push(("upsampler.0.bias".into(), vec![outputs]));
    for (name, shape) in &shapes {
        expect_shape(dict, name, shape)?;
    }
    Ok(SpanParams {
        in_channels,
        out_channels,
        feature_channels,
        upscale,
        norm: !dict.contains_key(NO_NORM_KEY),
    })
}

/// A SPAN state dict of the given sizes, shapes only (zeros).
#[cfg(test)]
pub(crate) fn synthetic_span(
    in_channels: usize,
    out_channels: usize,
    fc: usize,
    upscale: usize,
    norm: bool,
) -> StateDict {
    use candle_core::{DType, Device, Tensor};
    let mut shapes = conv3xc_shapes("conv_1", in_channels, fc);
    for b in 1..=BLOCKS {
        for c in 1..=3 {
            shapes.extend(conv3xc_shapes(&format!("block_{b}.c{c}_r"), fc, fc));
        }
    }
    shapes.push(("conv_cat.weight".into(), vec![fc, 4 * fc, 1, 1]));
    shapes.push(("conv_cat.bias".into(), vec![fc]));
    shapes.extend(conv3xc_shapes("conv_2", fc, fc));
    let outputs = out_channels * upscale * upscale;
    shapes.push(("upsampler.0.weight".into(), vec![outputs, fc, 3, 3]));
    shapes.push(("upsampler.0.bias".into(), vec![outputs]));
    if !norm {
        shapes.push((NO_NORM_KEY.into(), vec![1]));
    }
    shapes
        .into_iter()
        .map(|(k, s)| (k, Tensor::zeros(s, DType::F32, &Device::Cpu).unwrap()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_and_channels_follow_spandrels_candidates() {
        assert_eq!(scale_and_out_channels(48, 3), Some((4, 3)));
        assert_eq!(scale_and_out_channels(12, 3), Some((2, 3)));
        assert_eq!(scale_and_out_channels(3, 3), Some((1, 3)));
        // 1 channel in, 48 outputs: 48 is no square, 48 / 3 is: RGB out at x4.
        assert_eq!(scale_and_out_channels(48, 1), Some((4, 3)));
        assert_eq!(scale_and_out_channels(64, 4), Some((4, 4)));
        assert_eq!(scale_and_out_channels(9, 1), Some((3, 1)));
        // 4 × 3 channels or 2 × 12: the input's count wins.
        assert_eq!(scale_and_out_channels(12, 12), Some((1, 12)));
        assert_eq!(scale_and_out_channels(7, 3), None);
    }

    /// spandrel's own detection test cases (tests/test_SPAN.py).
    #[test]
    fn reads_every_hyper_parameter_from_shapes() {
        for (i, o, fc, s, norm) in [
            (3, 3, 48, 4, true),
            (1, 3, 48, 4, true),
            (1, 1, 48, 4, false),
            (4, 4, 48, 4, true),
            (3, 3, 32, 4, true),
            (3, 3, 64, 4, false),
            (3, 3, 48, 1, true),
            (3, 3, 48, 2, true),
            (3, 3, 48, 8, true),
        ] {
            let dict = synthetic_span(i, o, fc, s, norm);
            assert!(is_span(&dict));
            let p = span_params(&dict).unwrap();
            assert_eq!(
                p,
                SpanParams {
                    in_channels: i,
                    out_channels: o,
                    feature_channels: fc,
                    upscale: s,
                    norm,
                }
            );
        }
    }

    #[test]
    fn a_missing_or_mis_shaped_tensor_is_named() {
        let mut dict = synthetic_span(3, 3, 4, 2, true);
        dict.remove("block_4.c2_r.conv.1.bias");
        let err = span_params(&dict).unwrap_err();
        assert!(err.contains("block_4.c2_r.conv.1.bias"), "{err}");
        let mut dict = synthetic_span(3, 3, 4, 2, true);
        let bad = candle_core::Tensor::zeros(
            (4, 8, 1, 1),
            candle_core::DType::F32,
            &candle_core::Device::Cpu,
        )
        .unwrap();
        dict.insert("conv_2.conv.0.weight".into(), bad);
        let err = span_params(&dict).unwrap_err();
        assert!(
            err.contains("conv_2.conv.0.weight")
                && err.contains("[4, 8, 1, 1]")
                && err.contains("[8, 4, 1, 1]"),
            "{err}"
        );
    }
}
