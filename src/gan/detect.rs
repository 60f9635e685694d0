//! Which architecture a state dict holds, read from its tensor names and shapes alone (no
//! user flag), the way spandrel detects models. Keys are first brought to basicsr's names by
//! [`super::keys::normalise_keys`].

use std::path::Path;

use super::arch::{GanArch, RrdbNetParams, SrvggAct, SrvggParams};
use super::StateDict;
use crate::error::{Error, Result};

/// Detects the architecture of `dict` (already normalised); `path` names the file in errors.
pub fn detect_arch(dict: &StateDict, path: &Path) -> Result<GanArch> {
    let bad = |message: String| Error::Weights {
        path: path.to_path_buf(),
        message,
    };
    if dict.contains_key("conv_first.weight") && dict.contains_key("conv_body.weight") {
        return detect_rrdbnet(dict).map_err(bad);
    }
    if dict.contains_key("body.0.weight") && !dict.contains_key("conv_first.weight") {
        return detect_srvgg(dict).map_err(bad);
    }
    Err(bad(format!(
        "not a known architecture: found {} tensors ({}); expected RRDBNet (ESRGAN / \
         Real-ESRGAN: conv_first, body.N.rdbN.convN, conv_body, conv_up1, ...) or \
         SRVGGNetCompact (body.0 ... body.N)",
        dict.len(),
        sample_keys(dict)
    )))
}

/// A few keys, to tell the user what the file does hold.
fn sample_keys(dict: &StateDict) -> String {
    let mut keys: Vec<&str> = dict.keys().take(6).map(String::as_str).collect();
    if dict.len() > keys.len() {
        keys.push("...");
    }
    if keys.is_empty() {
        "none".into()
    } else {
        keys.join(", ")
    }
}

fn dims(dict: &StateDict, name: &str) -> std::result::Result<Vec<usize>, String> {
    dict.get(name)
        .map(|t| t.dims().to_vec())
        .ok_or_else(|| format!("missing tensor `{name}`"))
}

fn conv_dims(dict: &StateDict, name: &str) -> std::result::Result<(usize, usize), String> {
    let d = dims(dict, name)?;
    match d.as_slice() {
        [out, inp, 3, 3] => Ok((*out, *inp)),
        _ => Err(format!(
            "tensor `{name}` has shape {d:?}; expected a 3x3 conv weight"
        )),
    }
}

fn detect_rrdbnet(dict: &StateDict) -> std::result::Result<GanArch, String> {
    let (num_feat, first_in) = conv_dims(dict, "conv_first.weight")?;
    let (out_channels, _) = conv_dims(dict, "conv_last.weight")?;
    let (num_grow_ch, _) = conv_dims(dict, "body.0.rdb1.conv1.weight")?;
    let num_block = (0..)
        .take_while(|b| dict.contains_key(&format!("body.{b}.rdb1.conv1.weight")))
        .count();
    let num_upsample = (1..)
        .take_while(|i| dict.contains_key(&format!("conv_up{i}.weight")))
        .count();
    if num_upsample == 0 {
        return Err("RRDBNet without conv_up1: not an upscaling model".into());
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
    Ok(GanArch::RrdbNet(RrdbNetParams {
        in_channels,
        out_channels,
        num_feat,
        num_block,
        num_grow_ch,
        scale: up / unshuffle,
        unshuffle,
        num_upsample,
    }))
}

fn detect_srvgg(dict: &StateDict) -> std::result::Result<GanArch, String> {
    let (num_feat, in_channels) = conv_dims(dict, "body.0.weight")?;
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
    if last < 2 || last % 2 != 0 {
        return Err(format!(
            "SRVGGNetCompact-like tensors end at body.{last}; expected the last conv at an even \
             index >= 2"
        ));
    }
    let (last_out, _) = conv_dims(dict, &format!("body.{last}.weight"))?;
    // The last conv feeds a pixel shuffle back to the input's channels.
    let out_channels = in_channels;
    let square = last_out / out_channels;
    let upscale = (1..=16).find(|s| s * s == square && last_out % out_channels == 0);
    let Some(upscale) = upscale else {
        return Err(format!(
            "the last conv body.{last} has {last_out} outputs, not {out_channels} × a square \
             upscale factor"
        ));
    };
    // PReLU keeps a slope per channel; ReLU / LeakyReLU hold nothing, so the weights cannot
    // tell them apart: ReLU is assumed.
    let act = if dict.contains_key("body.1.weight") {
        SrvggAct::PRelu
    } else {
        SrvggAct::Relu
    };
    Ok(GanArch::Srvgg(SrvggParams {
        in_channels,
        out_channels,
        num_feat,
        num_conv: (last - 2) / 2,
        upscale,
        act,
    }))
}
