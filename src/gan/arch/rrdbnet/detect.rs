//! RRDBNet's hyper-parameters read from a state dict in basicsr's names (other ESRGAN layouts
//! are renamed first, see `keys.rs`), as spandrel's ESRGAN `load` reads them.

use super::RrdbNetParams;
use crate::gan::arch::shapes::{conv3x3_dims, count_from, expect_convs, Reason};
use crate::gan::arch::srvgg::OUTPUT_RESIZE_KEY;
use crate::gan::StateDict;

/// Whether the dict holds RRDBNet's identifying tensors.
pub(super) fn is_rrdbnet(dict: &StateDict) -> bool {
    dict.contains_key("conv_first.weight") && dict.contains_key("conv_body.weight")
}

/// Most ×2 upsampling convs: 4 is ×16, more than any released model (×8 is the largest).
pub(crate) const MAX_UPSAMPLE: usize = 4;
/// Most RRDB blocks: ESRGAN has 23, the anime models 6.
pub(crate) const MAX_BLOCKS: usize = 256;

/// The hyper-parameters of a dict that [`is_rrdbnet`], after every tensor's shape has been
/// checked against them (no arithmetic on a shape before its dimensions are known sane).
pub(super) fn rrdbnet_params(dict: &StateDict) -> Result<RrdbNetParams, Reason> {
    if dict.contains_key(OUTPUT_RESIZE_KEY) {
        return Err(format!(
            "`{OUTPUT_RESIZE_KEY}` (a resize of the output) is only supported for \
             SRVGGNetCompact, not RRDBNet"
        ));
    }
    let (num_feat, first_in) = conv3x3_dims(dict, "conv_first.weight")?;
    let (out_channels, _) = conv3x3_dims(dict, "conv_last.weight")?;
    let (num_grow_ch, _) = conv3x3_dims(dict, "body.0.rdb1.conv1.weight")?;
    let num_block = count_from(dict, 0, |b| format!("body.{b}.rdb1.conv1.weight"));
    if num_block > MAX_BLOCKS {
        return Err(format!(
            "RRDBNet with {num_block} RRDB blocks: at most {MAX_BLOCKS} are supported"
        ));
    }
    let num_upsample = count_from(dict, 1, |i| format!("conv_up{i}.weight"));
    if num_upsample == 0 {
        return Err("RRDBNet without conv_up1: not an upscaling model".into());
    }
    if num_upsample > MAX_UPSAMPLE {
        return Err(format!(
            "RRDBNet with {num_upsample} upsampling convs (conv_up1 ... conv_up{num_upsample}): \
             at most {MAX_UPSAMPLE} (x{}) are supported",
            1 << MAX_UPSAMPLE
        ));
    }
    // x2 and x1 Real-ESRGAN models pixel-unshuffle their input (×4 or ×16 channels).
    let unshuffle = if first_in == out_channels * 16 {
        4
    } else if first_in == out_channels * 4 {
        2
    } else {
        1
    };
    let in_channels = first_in / (unshuffle * unshuffle);
    let up = 1usize << num_upsample;
    if up % unshuffle != 0 {
        return Err(format!(
            "RRDBNet with {num_upsample} upsampling convs and a ×{unshuffle} pixel-unshuffled \
             input has no integer scale"
        ));
    }
    let (nf, gc) = (num_feat, num_grow_ch);
    let mut convs = vec![("conv_first".to_string(), nf, first_in)];
    for b in 0..num_block {
        for r in 1..=3 {
            for c in 1..=5 {
                let c_out = if c == 5 { nf } else { gc };
                convs.push((format!("body.{b}.rdb{r}.conv{c}"), c_out, nf + (c - 1) * gc));
            }
        }
    }
    convs.push(("conv_body".into(), nf, nf));
    convs.extend((1..=num_upsample).map(|i| (format!("conv_up{i}"), nf, nf)));
    convs.push(("conv_hr".into(), nf, nf));
    convs.push(("conv_last".into(), out_channels, nf));
    expect_convs(dict, &convs)?;
    Ok(RrdbNetParams {
        in_channels,
        out_channels,
        num_feat,
        num_block,
        num_grow_ch,
        scale: up / unshuffle,
        unshuffle,
        num_upsample,
    })
}

/// The smallest RRDBNet state dict, shapes only (zeros): `first_in` input channels to
/// conv_first (3, or 12 / 48 for the pixel-unshuffled x2 / x1), nf 4, gc 2, one block,
/// `num_upsample` upsampling convs, 3 output channels.
#[cfg(test)]
pub(crate) fn synthetic_rrdbnet(first_in: usize, num_upsample: usize) -> StateDict {
    let (nf, gc) = (4, 2);
    let mut convs = vec![("conv_first".to_string(), nf, first_in)];
    for r in 1..=3 {
        for c in 1..=5 {
            let c_out = if c == 5 { nf } else { gc };
            convs.push((format!("body.0.rdb{r}.conv{c}"), c_out, nf + (c - 1) * gc));
        }
    }
    convs.push(("conv_body".into(), nf, nf));
    convs.extend((1..=num_upsample).map(|i| (format!("conv_up{i}"), nf, nf)));
    convs.push(("conv_hr".into(), nf, nf));
    convs.push(("conv_last".into(), 3, nf));
    crate::gan::arch::shapes::synthetic_convs(&convs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_scale_and_unshuffle_from_shapes() {
        for (first_in, num_upsample, scale, unshuffle) in
            [(3, 2, 4, 1), (12, 2, 2, 2), (48, 2, 1, 4), (3, 3, 8, 1)]
        {
            let dict = synthetic_rrdbnet(first_in, num_upsample);
            assert!(is_rrdbnet(&dict));
            let p = rrdbnet_params(&dict).unwrap();
            assert_eq!(
                p,
                RrdbNetParams {
                    in_channels: 3,
                    out_channels: 3,
                    num_feat: 4,
                    num_block: 1,
                    num_grow_ch: 2,
                    scale,
                    unshuffle,
                    num_upsample,
                }
            );
        }
    }

    #[test]
    fn an_rrdbnet_without_upsampling_is_refused() {
        let dict = synthetic_rrdbnet(3, 0);
        assert!(is_rrdbnet(&dict));
        let err = rrdbnet_params(&dict).unwrap_err();
        assert!(err.contains("conv_up1"), "{err}");
    }
}
