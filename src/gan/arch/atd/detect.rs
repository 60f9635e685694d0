//! ATD's hyper-parameters read from a state dict, as spandrel 0.4.2
//! `architectures/ATD/__init__.py` (`ATDArch.load`) reads them, then every tensor the
//! configuration reads checked for presence and shape.

use super::config::NUM_FEAT;
use super::AtdParams;
use crate::gan::arch::shapes::{conv3x3_dims, dims, Reason, MAX_CHANNELS};
use crate::gan::arch::swin::detect::{
    check_bias_size, check_optional, check_tensors, count, window_from_index,
};
use crate::gan::arch::swin::{shuffle_stages, tail_tensors, ResiConnection, TailDims, Upsampler};
use crate::gan::StateDict;

const LAYER0: &str = "layers.0.residual_group.layers.0";

/// spandrel's `KeyCondition.has_all(...)`.
pub(super) fn is_atd(dict: &StateDict) -> bool {
    const TOP: &[&str] = &[
        "relative_position_index_SA",
        "conv_first.weight",
        "conv_first.bias",
        "layers.0.residual_group.td",
        "norm.weight",
        "norm.bias",
    ];
    const LAYER: &[&str] = &[
        "sigma",
        "norm1.weight",
        "norm1.bias",
        "norm2.weight",
        "norm2.bias",
        "norm3.weight",
        "norm3.bias",
        "wqkv.weight",
        "attn_win.relative_position_bias_table",
        "attn_win.proj.weight",
        "attn_win.proj.bias",
        "attn_atd.scale",
        "attn_atd.wq.weight",
        "attn_atd.wk.weight",
        "attn_atd.wv.weight",
        "attn_aca.logit_scale",
        "attn_aca.proj.weight",
        "convffn.fc1.weight",
        "convffn.fc1.bias",
        "convffn.dwconv.depthwise_conv.0.weight",
        "convffn.dwconv.depthwise_conv.0.bias",
        "convffn.fc2.weight",
        "convffn.fc2.bias",
    ];
    TOP.iter().all(|k| dict.contains_key(*k))
        && LAYER
            .iter()
            .all(|k| dict.contains_key(&format!("{LAYER0}.{k}")))
}

/// The prefix of layer `j` of group `i`.
pub(super) fn layer_prefix(i: usize, j: usize) -> String {
    format!("layers.{i}.residual_group.layers.{j}")
}

pub(super) fn tail_dims(p: &AtdParams) -> TailDims {
    TailDims {
        embed: p.embed_dim,
        num_feat: NUM_FEAT,
        out_channels: p.in_channels,
        scale: p.upscale,
    }
}

/// The tensors of one transformer layer, `(name, shape)`; the last of a group has no
/// dictionary update (`norm3`, `sigma`).
fn layer_tensors(
    p: &AtdParams,
    heads: usize,
    prefix: &str,
    last: bool,
) -> Vec<(String, Vec<usize>)> {
    let (c, m, r, hid, k) = (
        p.embed_dim,
        p.num_tokens,
        p.reducted_dim,
        p.mlp_hidden,
        p.convffn_kernel_size,
    );
    let span = 2 * p.window_size - 1;
    let mut t: Vec<(&str, Vec<usize>)> = vec![
        ("norm1.weight", vec![c]),
        ("norm1.bias", vec![c]),
        ("norm2.weight", vec![c]),
        ("norm2.bias", vec![c]),
        ("wqkv.weight", vec![3 * c, c]),
        (
            "attn_win.relative_position_bias_table",
            vec![span * span, heads],
        ),
        ("attn_win.proj.weight", vec![c, c]),
        ("attn_win.proj.bias", vec![c]),
        ("attn_atd.scale", vec![m]),
        ("attn_atd.wq.weight", vec![r, c]),
        ("attn_atd.wk.weight", vec![r, c]),
        ("attn_atd.wv.weight", vec![c, c]),
        ("attn_aca.logit_scale", vec![1, 1]),
        ("attn_aca.proj.weight", vec![c, c]),
        ("convffn.fc1.weight", vec![hid, c]),
        ("convffn.fc1.bias", vec![hid]),
        ("convffn.dwconv.depthwise_conv.0.weight", vec![hid, 1, k, k]),
        ("convffn.dwconv.depthwise_conv.0.bias", vec![hid]),
        ("convffn.fc2.weight", vec![c, hid]),
        ("convffn.fc2.bias", vec![c]),
    ];
    if p.qkv_bias {
        t.extend([
            ("wqkv.bias", vec![3 * c]),
            ("attn_atd.wq.bias", vec![r]),
            ("attn_atd.wk.bias", vec![r]),
            ("attn_atd.wv.bias", vec![c]),
            ("attn_aca.proj.bias", vec![c]),
        ]);
    }
    if !last {
        t.extend([
            ("norm3.weight", vec![m]),
            ("norm3.bias", vec![m]),
            ("sigma", vec![m, 1]),
        ]);
    }
    t.into_iter()
        .map(|(k, s)| (format!("{prefix}.{k}"), s))
        .collect()
}

/// Every tensor the network reads, `(name, shape)`.
pub(super) fn atd_tensors(p: &AtdParams) -> Vec<(String, Vec<usize>)> {
    let c = p.embed_dim;
    let mut t = vec![
        (
            "conv_first.weight".to_string(),
            vec![c, p.in_channels, 3, 3],
        ),
        ("conv_first.bias".to_string(), vec![c]),
    ];
    if p.patch_norm {
        t.push(("patch_embed.norm.weight".into(), vec![c]));
        t.push(("patch_embed.norm.bias".into(), vec![c]));
    }
    for (i, (&depth, &heads)) in p.depths.iter().zip(&p.num_heads).enumerate() {
        t.push((
            format!("layers.{i}.residual_group.td"),
            vec![p.num_tokens, c],
        ));
        for j in 0..depth {
            t.extend(layer_tensors(p, heads, &layer_prefix(i, j), j + 1 == depth));
        }
        t.extend(p.resi_connection.tensors(&format!("layers.{i}.conv"), c));
    }
    t.push(("norm.weight".into(), vec![c]));
    t.push(("norm.bias".into(), vec![c]));
    t.extend(p.resi_connection.tensors("conv_after_body", c));
    t.extend(tail_tensors(p.upsampler, &tail_dims(p)));
    t
}

/// spandrel's `get_pixelshuffle_params(state_dict, "upsample")`: the product of the factors
/// of `upsample.0`, `upsample.2`, ….
fn pixelshuffle_upscale(dict: &StateDict) -> Result<usize, Reason> {
    let mut upscale = 1;
    for i in (0..10).step_by(2) {
        let name = format!("upsample.{i}.weight");
        if !dict.contains_key(&name) {
            break;
        }
        let (out, inp) = conv3x3_dims(dict, &name)?;
        upscale *= (out / inp.max(1)).isqrt();
    }
    Ok(upscale)
}

/// A positive size from dimension `axis` of tensor `name`, at most `max`.
fn size_of(dict: &StateDict, name: &str, axis: usize, max: usize) -> Result<usize, Reason> {
    let d = dims(dict, name)?;
    match d.get(axis) {
        Some(&v) if (1..=max).contains(&v) => Ok(v),
        _ => Err(format!(
            "tensor `{name}` has shape {d:?}; expected a size of 1 to {max} in dimension {axis}"
        )),
    }
}

/// The hyper-parameters of a dict that [`is_atd`], after every tensor's shape has been
/// checked against them.
pub(super) fn atd_params(dict: &StateDict) -> Result<AtdParams, Reason> {
    let has = |k: &str| dict.contains_key(k);
    if has("absolute_pos_embed") {
        return Err(
            "ATD with an absolute position embedding (`absolute_pos_embed`, `ape=True`): it \
             only fits the training size and no released model has one"
                .into(),
        );
    }
    let (embed_dim, in_channels) = conv3x3_dims(dict, "conv_first.weight")?;
    let window_size = window_from_index(dict, "relative_position_index_SA")?;
    let groups = count(dict, "layers", "ATD groups")?;
    let mut depths = Vec::with_capacity(groups);
    let mut num_heads = Vec::with_capacity(groups);
    for i in 0..groups {
        depths.push(count(
            dict,
            &format!("layers.{i}.residual_group.layers"),
            "transformer layers",
        )?);
        let table = format!(
            "{}.attn_win.relative_position_bias_table",
            layer_prefix(i, 0)
        );
        let heads = match dims(dict, &table)?.as_slice() {
            [_, h] if *h >= 1 && embed_dim % h == 0 => *h,
            d => {
                return Err(format!(
                    "tensor `{table}` has shape {d:?}; expected (positions, heads) with the \
                     heads dividing embed_dim {embed_dim}"
                ))
            }
        };
        check_bias_size(window_size, heads)?;
        num_heads.push(heads);
    }
    let num_tokens = size_of(dict, &format!("{LAYER0}.attn_atd.scale"), 0, 4096)?;
    let reducted_dim = size_of(
        dict,
        &format!("{LAYER0}.attn_atd.wq.weight"),
        0,
        MAX_CHANNELS,
    )?;
    let dw = format!("{LAYER0}.convffn.dwconv.depthwise_conv.0.weight");
    let convffn_kernel_size = size_of(dict, &dw, 2, 31)?;
    if convffn_kernel_size % 2 == 0 {
        return Err(format!(
            "tensor `{dw}`: an even ConvFFN kernel of {convffn_kernel_size}; the reference pads \
             (k − 1) / 2 and needs it odd"
        ));
    }
    let mlp_hidden = size_of(
        dict,
        &format!("{LAYER0}.convffn.fc1.weight"),
        0,
        16 * MAX_CHANNELS,
    )?;
    let qkv_bias = has(&format!("{LAYER0}.wqkv.bias"));
    let patch_norm = has("patch_embed.norm.weight");
    let resi_connection = if has("layers.0.conv.weight") {
        ResiConnection::OneConv
    } else {
        ResiConnection::ThreeConv
    };
    if resi_connection == ResiConnection::ThreeConv && embed_dim < 4 {
        return Err(format!(
            "ATD 3conv with embed_dim {embed_dim}: needs at least 4 channels"
        ));
    }
    let (upsampler, upscale) = if has("conv_up1.weight") {
        (Upsampler::NearestConv, 4)
    } else if has("conv_before_upsample.0.weight") {
        // 1 when there is no `upsample.0` (an empty `Upsample`, as the reference builds).
        let upscale = pixelshuffle_upscale(dict)?;
        if shuffle_stages(upscale).is_none() {
            return Err(format!(
                "ATD pixelshuffle upsampling by {upscale}: the reference supports 2^n and 3"
            ));
        }
        (Upsampler::PixelShuffle, upscale)
    } else if has("conv_last.weight") {
        (Upsampler::None, 1)
    } else {
        let out = size_of(dict, "upsample.0.weight", 0, 64 * 64 * MAX_CHANNELS)?;
        let upscale = (out / in_channels.max(1)).isqrt();
        if upscale == 0 {
            return Err(format!(
                "tensor `upsample.0.weight`: {out} outputs for {in_channels} channels is no \
                 pixel-shuffle factor"
            ));
        }
        (Upsampler::PixelShuffleDirect, upscale)
    };
    let light = upsampler == Upsampler::PixelShuffleDirect && embed_dim == 48;
    let p = AtdParams {
        in_channels,
        embed_dim,
        depths,
        num_heads,
        window_size,
        category_size: if light { 128 } else { 256 },
        num_tokens,
        reducted_dim,
        convffn_kernel_size,
        mlp_hidden,
        qkv_bias,
        patch_norm,
        upscale,
        img_range: 1.0,
        upsampler,
        resi_connection,
        norm: !has("no_norm"),
    };
    check_tensors(dict, &atd_tensors(&p))?;
    let n = window_size * window_size;
    check_optional(dict, "relative_position_index_SA", &[n, n])?;
    Ok(p)
}

impl AtdParams {
    /// Every tensor of spandrel's `ATD(...).state_dict()` for these hyper-parameters,
    /// `(name, shape)`: the parameters and the `relative_position_index_SA` (and `no_norm`)
    /// buffers.
    pub fn state_dict_layout(&self) -> Vec<(String, Vec<usize>)> {
        let n = self.window_size * self.window_size;
        let mut t = atd_tensors(self);
        t.push(("relative_position_index_SA".into(), vec![n, n]));
        if !self.norm {
            t.push(("no_norm".into(), vec![1]));
        }
        t
    }
}

/// An ATD state dict of `p`'s layout, shapes only (a zero broadcast to each shape, no memory
/// per element): for detection tests, full-size presets included.
pub fn synthetic_atd(p: &AtdParams) -> StateDict {
    use candle_core::{DType, Device, Tensor};
    let (Ok(zero), Ok(index)) = (
        Tensor::zeros((), DType::F32, &Device::Cpu),
        Tensor::zeros((), DType::I64, &Device::Cpu),
    ) else {
        return StateDict::new();
    };
    p.state_dict_layout()
        .into_iter()
        .filter_map(|(name, shape)| {
            let base = if name == "relative_position_index_SA" {
                &index
            } else {
                &zero
            };
            Some((name, base.broadcast_as(shape).ok()?))
        })
        .collect()
}

/// A small ATD configuration for tests: embed 8, groups of 2 and 3 layers.
#[cfg(test)]
pub(crate) fn tiny_params(upsampler: Upsampler, resi: ResiConnection, upscale: usize) -> AtdParams {
    AtdParams {
        in_channels: 3,
        embed_dim: 8,
        depths: vec![2, 3],
        num_heads: vec![2, 4],
        window_size: 4,
        category_size: 256,
        num_tokens: 6,
        reducted_dim: 3,
        convffn_kernel_size: 5,
        mlp_hidden: 12,
        qkv_bias: true,
        patch_norm: true,
        upscale,
        img_range: 1.0,
        upsampler,
        resi_connection: resi,
        norm: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tail_and_option_is_read_back() {
        for (upsampler, upscale) in [
            (Upsampler::PixelShuffle, 2),
            (Upsampler::PixelShuffle, 3),
            (Upsampler::PixelShuffle, 1),
            (Upsampler::PixelShuffleDirect, 4),
            (Upsampler::NearestConv, 4),
            (Upsampler::None, 1),
        ] {
            for resi in [ResiConnection::OneConv, ResiConnection::ThreeConv] {
                let want = tiny_params(upsampler, resi, upscale);
                let dict = synthetic_atd(&want);
                assert!(is_atd(&dict));
                assert_eq!(atd_params(&dict), Ok(want));
            }
        }
        let want = AtdParams {
            qkv_bias: false,
            patch_norm: false,
            norm: false,
            embed_dim: 48,
            num_heads: vec![4, 4],
            category_size: 128,
            ..tiny_params(Upsampler::PixelShuffleDirect, ResiConnection::OneConv, 3)
        };
        let dict = synthetic_atd(&want);
        assert_eq!(atd_params(&dict), Ok(want));
    }

    #[test]
    fn missing_and_misshaped_tensors_are_named() {
        let p = tiny_params(Upsampler::PixelShuffle, ResiConnection::ThreeConv, 2);
        let mut dict = synthetic_atd(&p);
        let name = "layers.1.residual_group.layers.1.attn_aca.proj.weight";
        dict.remove(name);
        let err = atd_params(&dict).unwrap_err();
        assert!(err.contains(name) && err.contains("missing"), "{err}");
        let mut dict = synthetic_atd(&p);
        let name = "layers.1.residual_group.layers.0.sigma";
        let t = candle_core::Tensor::zeros(5, candle_core::DType::F32, &candle_core::Device::Cpu)
            .unwrap();
        dict.insert(name.into(), t);
        let err = atd_params(&dict).unwrap_err();
        assert!(
            err.contains(name) && err.contains("[5]") && err.contains("[6, 1]"),
            "{err}"
        );
    }
}
