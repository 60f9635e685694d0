//! SRResNet's hyper-parameters read from a state dict in BasicSR's `MSRResNet` names: widths
//! from `conv_first` and `conv_last`, the depth from the `body.N.conv1` sequence, the scale
//! from the upsampling convs (`upconv2` present: ×4; else `upconv1`'s outputs nf · s²).
//! RRDBNet shares `conv_first`, `conv_hr` and `conv_last`; it is told apart by its `conv_body`
//! and `body.N.rdbN` blocks, which an MSRResNet never has.

use super::SrResNetParams;
use crate::gan::arch::shapes::{conv3x3_dims, count_from, expect_convs, Reason};
use crate::gan::StateDict;

/// Whether the dict holds MSRResNet's identifying tensors (and none of RRDBNet's).
pub(super) fn is_srresnet(dict: &StateDict) -> bool {
    [
        "conv_first.weight",
        "body.0.conv1.weight",
        "upconv1.weight",
        "conv_last.weight",
    ]
    .iter()
    .all(|k| dict.contains_key(*k))
        && !dict.contains_key("conv_body.weight")
}

/// Most residual blocks: the released models have 16.
const MAX_BLOCKS: usize = 256;

/// The hyper-parameters of a dict that [`is_srresnet`], after every tensor's shape has been
/// checked against them.
pub(super) fn srresnet_params(dict: &StateDict) -> Result<SrResNetParams, Reason> {
    let (num_feat, in_channels) = conv3x3_dims(dict, "conv_first.weight")?;
    let (out_channels, _) = conv3x3_dims(dict, "conv_last.weight")?;
    if in_channels != out_channels {
        return Err(format!(
            "SRResNet with {in_channels} input and {out_channels} output channels: the \
             upsampled input is added to the output, so they must be equal"
        ));
    }
    let num_block = count_from(dict, 0, |b| format!("body.{b}.conv1.weight"));
    if num_block > MAX_BLOCKS {
        return Err(format!(
            "SRResNet with {num_block} residual blocks: at most {MAX_BLOCKS} are supported"
        ));
    }
    let (up1, _) = conv3x3_dims(dict, "upconv1.weight")?;
    let two_steps = dict.contains_key("upconv2.weight");
    let upscale = if two_steps {
        4
    } else if up1 == 4 * num_feat {
        2
    } else if up1 == 9 * num_feat {
        3
    } else {
        return Err(format!(
            "tensor `upconv1.weight` has {up1} outputs; an MSRResNet of {num_feat} features has \
             {} (×2) or {} (×3), or {} followed by upconv2 (×4)",
            4 * num_feat,
            9 * num_feat,
            4 * num_feat
        ));
    };
    let nf = num_feat;
    let mut convs = vec![("conv_first".to_string(), nf, in_channels)];
    for b in 0..num_block {
        convs.push((format!("body.{b}.conv1"), nf, nf));
        convs.push((format!("body.{b}.conv2"), nf, nf));
    }
    if two_steps {
        convs.push(("upconv1".into(), 4 * nf, nf));
        convs.push(("upconv2".into(), 4 * nf, nf));
    } else {
        convs.push(("upconv1".into(), nf * upscale * upscale, nf));
    }
    convs.push(("conv_hr".into(), nf, nf));
    convs.push(("conv_last".into(), out_channels, nf));
    expect_convs(dict, &convs)?;
    Ok(SrResNetParams {
        in_channels,
        out_channels,
        num_feat,
        num_block,
        upscale,
    })
}

/// The smallest MSRResNet state dict, shapes only (zeros): 3 channels, nf 4, `num_block`
/// blocks, ×`upscale`.
#[cfg(test)]
pub(crate) fn synthetic_srresnet(num_block: usize, upscale: usize) -> StateDict {
    let nf = 4;
    let mut convs = vec![("conv_first".to_string(), nf, 3)];
    for b in 0..num_block {
        convs.push((format!("body.{b}.conv1"), nf, nf));
        convs.push((format!("body.{b}.conv2"), nf, nf));
    }
    if upscale == 4 {
        convs.push(("upconv1".into(), 4 * nf, nf));
        convs.push(("upconv2".into(), 4 * nf, nf));
    } else {
        convs.push(("upconv1".into(), nf * upscale * upscale, nf));
    }
    convs.push(("conv_hr".into(), nf, nf));
    convs.push(("conv_last".into(), 3, nf));
    crate::gan::arch::shapes::synthetic_convs(&convs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_depth_and_scale_from_shapes() {
        for (nb, s) in [(1, 2), (3, 3), (2, 4)] {
            let dict = synthetic_srresnet(nb, s);
            assert!(is_srresnet(&dict));
            let p = srresnet_params(&dict).unwrap();
            assert_eq!(
                p,
                SrResNetParams {
                    in_channels: 3,
                    out_channels: 3,
                    num_feat: 4,
                    num_block: nb,
                    upscale: s,
                }
            );
        }
    }

    #[test]
    fn rrdbnet_dicts_are_not_claimed() {
        let rrdb = crate::gan::arch::rrdbnet::synthetic_rrdbnet(3, 2);
        assert!(!is_srresnet(&rrdb));
        // Even with an upconv1 and a body.0.conv1, conv_body marks RRDBNet.
        let mut dict = synthetic_srresnet(1, 2);
        let conv_body = rrdb.get("conv_body.weight").unwrap().clone();
        dict.insert("conv_body.weight".into(), conv_body);
        assert!(!is_srresnet(&dict));
    }

    #[test]
    fn an_odd_upconv_is_refused() {
        let mut dict = synthetic_srresnet(1, 2);
        let odd = candle_core::Tensor::zeros(
            (20, 4, 3, 3),
            candle_core::DType::F32,
            &candle_core::Device::Cpu,
        )
        .unwrap();
        dict.insert("upconv1.weight".into(), odd);
        let err = srresnet_params(&dict).unwrap_err();
        assert!(
            err.contains("upconv1.weight") && err.contains("20"),
            "{err}"
        );
    }
}
