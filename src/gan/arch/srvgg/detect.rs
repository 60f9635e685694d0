//! SRVGGNetCompact's hyper-parameters read from a state dict (`body.0` ... `body.N`, every
//! module of the PyTorch `body` list taking an index), as spandrel's Compact `load` reads them.

use super::output_resize::{read_output_resize, OUTPUT_RESIZE_KEY};
use super::{SrvggAct, SrvggParams};
use crate::gan::arch::shapes::{conv3x3_dims, expect_convs, expect_shape, Reason};
use crate::gan::StateDict;

/// Whether the dict holds SRVGGNetCompact's identifying tensors (and not RRDBNet's, whose
/// blocks are also under `body.`).
pub(super) fn is_srvgg(dict: &StateDict) -> bool {
    dict.contains_key("body.0.weight") && !dict.contains_key("conv_first.weight")
}

/// Most middle convolutions: the released models have 16 and 32.
pub(crate) const MAX_CONVS: usize = 256;

/// The hyper-parameters of a dict that [`is_srvgg`], after every tensor's shape has been
/// checked against them.
pub(super) fn srvgg_params(dict: &StateDict) -> Result<SrvggParams, Reason> {
    let (num_feat, in_channels) = conv3x3_dims(dict, "body.0.weight")?;
    // The highest body index holding a 4-d weight is the last conv.
    let last = dict
        .iter()
        .filter(|(_, t)| t.rank() == 4)
        .filter_map(|(k, _)| {
            k.strip_prefix("body.")?
                .strip_suffix(".weight")?
                .parse()
                .ok()
        })
        .max()
        .unwrap_or(0usize);
    if last > 2 * MAX_CONVS + 2 {
        return Err(format!(
            "SRVGGNetCompact-like tensors run up to body.{last}: more than the {MAX_CONVS} \
             middle convolutions supported"
        ));
    }
    if last < 2 || last % 2 != 0 {
        return Err(format!(
            "SRVGGNetCompact-like tensors end at body.{last}; expected the last conv at an even \
             index >= 2"
        ));
    }
    let (last_out, _) = conv3x3_dims(dict, &format!("body.{last}.weight"))?;
    // The last conv feeds a pixel shuffle back to the input's channels.
    let out_channels = in_channels;
    let square = last_out / out_channels;
    let upscale = (1..=16).find(|s| s * s == square && last_out % out_channels == 0);
    let Some(upscale) = upscale else {
        return Err(format!(
            "the last conv body.{last} has {last_out} outputs, not {out_channels} × a square \
             upscale factor up to 16²"
        ));
    };
    // PReLU keeps a slope per channel; ReLU / LeakyReLU hold nothing, so the weights cannot
    // tell them apart: ReLU is assumed.
    let act = if dict.contains_key("body.1.weight") {
        SrvggAct::PRelu
    } else {
        SrvggAct::Relu
    };
    let num_conv = (last - 2) / 2;
    // body = [conv, act, (conv, act) × num_conv, conv]: module 2k is the k-th conv.
    let mut convs: Vec<(String, usize, usize)> = (0..=num_conv)
        .map(|k| {
            let c_in = if k == 0 { in_channels } else { num_feat };
            (format!("body.{}", 2 * k), num_feat, c_in)
        })
        .collect();
    convs.push((format!("body.{last}"), last_out, num_feat));
    expect_convs(dict, &convs)?;
    if act == SrvggAct::PRelu {
        for k in 0..=num_conv {
            expect_shape(dict, &format!("body.{}.weight", 2 * k + 1), &[num_feat])?;
        }
    }
    let output_resize = read_output_resize(dict.get(OUTPUT_RESIZE_KEY))?;
    if let Some(r) = &output_resize {
        let scale = upscale as f32 * r.factor;
        if scale.fract() != 0.0 || !(1.0..=16.0).contains(&scale) {
            return Err(format!(
                "`{OUTPUT_RESIZE_KEY}` resizes the x{upscale} output by {}: that is no whole \
                 scale from 1 to 16",
                r.factor
            ));
        }
    }
    Ok(SrvggParams {
        in_channels,
        out_channels,
        num_feat,
        num_conv,
        upscale,
        act,
        output_resize,
    })
}

/// The smallest SRVGGNetCompact state dict, shapes only (zeros): 3 channels, nf 4,
/// `num_conv` middle convs, ×`upscale`, PReLU slopes when `prelu`.
#[cfg(test)]
pub(crate) fn synthetic_srvgg(num_conv: usize, upscale: usize, prelu: bool) -> StateDict {
    use candle_core::{DType, Device, Tensor};
    let nf = 4;
    let mut convs: Vec<(String, usize, usize)> = (0..=num_conv)
        .map(|k| (format!("body.{}", 2 * k), nf, if k == 0 { 3 } else { nf }))
        .collect();
    convs.push((
        format!("body.{}", 2 * num_conv + 2),
        3 * upscale * upscale,
        nf,
    ));
    let mut dict = crate::gan::arch::shapes::synthetic_convs(&convs);
    if prelu {
        for k in 0..=num_conv {
            let slopes = Tensor::zeros(nf, DType::F32, &Device::Cpu).unwrap();
            dict.insert(format!("body.{}.weight", 2 * k + 1), slopes);
        }
    }
    dict
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_depth_scale_and_activation_from_shapes() {
        for (num_conv, upscale, prelu) in [(1, 4, true), (3, 2, false), (0, 1, true)] {
            let dict = synthetic_srvgg(num_conv, upscale, prelu);
            assert!(is_srvgg(&dict));
            let p = srvgg_params(&dict).unwrap();
            let act = if prelu {
                SrvggAct::PRelu
            } else {
                SrvggAct::Relu
            };
            assert_eq!(
                p,
                SrvggParams {
                    in_channels: 3,
                    out_channels: 3,
                    num_feat: 4,
                    num_conv,
                    upscale,
                    act,
                    output_resize: None,
                }
            );
        }
    }

    #[test]
    fn a_last_conv_without_a_square_factor_is_refused() {
        let mut dict = synthetic_srvgg(1, 2, true);
        let odd = candle_core::Tensor::zeros(
            (5, 4, 3, 3),
            candle_core::DType::F32,
            &candle_core::Device::Cpu,
        )
        .unwrap();
        dict.insert("body.4.weight".into(), odd);
        let err = srvgg_params(&dict).unwrap_err();
        assert!(err.contains("body.4") && err.contains("square"), "{err}");
    }
}
