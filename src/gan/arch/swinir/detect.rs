//! SwinIR's hyper-parameters read from a state dict, as spandrel 0.4.2
//! `architectures/SwinIR/__init__.py` (`SwinIRArch.load`) reads them, then every tensor the
//! configuration reads checked for presence and shape.

use super::SwinIrParams;
use crate::gan::arch::shapes::{conv3x3_dims, dims, Reason, MAX_CHANNELS};
use crate::gan::arch::swin::detect::{
    check_bias_size, check_optional, check_tensors, count, img_size_from_mask, window_from_index,
};
use crate::gan::arch::swin::geometry::block_shift;
use crate::gan::arch::swin::{
    block_tensors, shuffle_stages, tail_tensors, BlockDims, ResiConnection, TailDims, Upsampler,
};
use crate::gan::StateDict;

const BLOCK0: &str = "layers.0.residual_group.blocks.0";

/// spandrel's detection keys, less the dicts Swin2SR claims (it is asked first there, and its
/// patch embedding is a conv, `patch_embed.proj`).
pub(super) fn is_swinir(dict: &StateDict) -> bool {
    let has = |k: &str| dict.contains_key(k);
    has(&format!("{BLOCK0}.norm1.weight"))
        && (has("conv_first.weight") || has("conv_first.1.weight"))
        && has(&format!("{BLOCK0}.mlp.fc1.bias"))
        && has(&format!("{BLOCK0}.attn.relative_position_index"))
        && !has("patch_embed.proj.weight")
}

/// spandrel's `get_pixelshuffle_params(state_dict, "upsample")`: the product of the factors
/// of `upsample.0`, `upsample.2`, … (up to `upsample.8`) and the input channels of the last.
fn pixelshuffle_params(dict: &StateDict) -> Result<(usize, usize), Reason> {
    let (mut upscale, mut num_feat) = (1, 64);
    for i in (0..10).step_by(2) {
        let name = format!("upsample.{i}.weight");
        if !dict.contains_key(&name) {
            break;
        }
        let (out, inp) = conv3x3_dims(dict, &name)?;
        num_feat = inp;
        upscale *= (out / inp).isqrt();
    }
    Ok((upscale, num_feat))
}

/// Every tensor the network reads, `(name, shape)`.
pub(super) fn swinir_tensors(p: &SwinIrParams) -> Vec<(String, Vec<usize>)> {
    let c = p.embed_dim;
    let s2 = p.start_unshuffle * p.start_unshuffle;
    let first = p.first_conv();
    let mut t = vec![
        (format!("{first}.weight"), vec![c, p.in_channels * s2, 3, 3]),
        (format!("{first}.bias"), vec![c]),
        ("patch_embed.norm.weight".into(), vec![c]),
        ("patch_embed.norm.bias".into(), vec![c]),
    ];
    for (i, (&depth, &heads)) in p.depths.iter().zip(&p.num_heads).enumerate() {
        for j in 0..depth {
            let d = block_dims(p, heads, j);
            t.extend(block_tensors(
                &format!("layers.{i}.residual_group.blocks.{j}"),
                &d,
            ));
        }
        t.extend(p.resi_connection.tensors(&format!("layers.{i}.conv"), c));
    }
    t.push(("norm.weight".into(), vec![c]));
    t.push(("norm.bias".into(), vec![c]));
    t.extend(p.resi_connection.tensors("conv_after_body", c));
    t.extend(tail_tensors(p.upsampler, &tail_dims(p)));
    t
}

/// Block `j`'s sizes in a stage of `heads` heads.
pub(super) fn block_dims(p: &SwinIrParams, heads: usize, j: usize) -> BlockDims {
    BlockDims {
        dim: p.embed_dim,
        heads,
        window: p.window_size,
        shift: block_shift(j, p.window_size, p.img_size),
        hidden: p.mlp_hidden,
    }
}

pub(super) fn tail_dims(p: &SwinIrParams) -> TailDims {
    TailDims {
        embed: p.embed_dim,
        num_feat: p.num_feat,
        out_channels: p.out_channels,
        scale: p.upscale,
    }
}

/// The hyper-parameters of a dict that [`is_swinir`], after every tensor's shape has been
/// checked against them.
pub(super) fn swinir_params(dict: &StateDict) -> Result<SwinIrParams, Reason> {
    let has = |k: &str| dict.contains_key(k);
    let upsampler = if has("conv_before_upsample.0.weight") {
        if has("conv_up1.weight") {
            Upsampler::NearestConv
        } else {
            Upsampler::PixelShuffle
        }
    } else if has("upsample.0.weight") {
        Upsampler::PixelShuffleDirect
    } else {
        Upsampler::None
    };
    let first_conv_nested = has("conv_first.1.weight");
    let first = if first_conv_nested {
        "conv_first.1.weight"
    } else {
        "conv_first.weight"
    };
    let (embed_dim, num_in_ch) = conv3x3_dims(dict, first)?;
    let start_unshuffle = if first_conv_nested {
        ((num_in_ch / 3) as f64).sqrt().round().max(1.0) as usize
    } else {
        1
    };
    let num_out_ch = if has("conv_last.weight") {
        conv3x3_dims(dict, "conv_last.weight")?.0
    } else {
        num_in_ch
    };
    let mut num_feat = 64;
    if has("conv_before_upsample.0.weight") {
        num_feat = conv3x3_dims(dict, "conv_before_upsample.0.weight")?.0;
    }
    let upscale = match upsampler {
        Upsampler::NearestConv => {
            // spandrel counts the keys holding "conv_up" that are not biases.
            let ups = dict
                .keys()
                .filter(|k| k.contains("conv_up") && !k.contains("bias"))
                .count();
            if !(1..=3).contains(&ups) {
                return Err(format!(
                    "SwinIR nearest+conv with {ups} upsampling convs: the reference builds 1 \
                     to 3 (x2, x4, x8)"
                ));
            }
            1 << ups
        }
        Upsampler::PixelShuffle => {
            let (upscale, _) = pixelshuffle_params(dict)?;
            if shuffle_stages(upscale).is_none() {
                return Err(format!(
                    "SwinIR pixelshuffle upsampling by {upscale}: the reference supports 2^n and 3"
                ));
            }
            upscale
        }
        Upsampler::PixelShuffleDirect => {
            let d = dims(dict, "upsample.0.bias")?;
            let out = d.first().copied().unwrap_or(0);
            ((out / num_out_ch.max(1)) as f64).sqrt() as usize
        }
        Upsampler::None => 1,
    };
    let window_size = window_from_index(dict, &format!("{BLOCK0}.attn.relative_position_index"))?;
    let hidden = dims(dict, &format!("{BLOCK0}.mlp.fc1.bias"))?;
    let mlp_hidden = match hidden.as_slice() {
        [h] if (1..=16 * MAX_CHANNELS).contains(h) => *h,
        _ => {
            return Err(format!(
                "tensor `{BLOCK0}.mlp.fc1.bias` has shape {hidden:?}; expected (hidden)"
            ))
        }
    };
    let img_size = img_size_from_mask(
        dict,
        "layers.0.residual_group.blocks.1.attn_mask",
        window_size,
        64,
    );
    let layers = count(dict, "layers", "residual stages")?;
    let mut depths = Vec::with_capacity(layers);
    let mut num_heads = Vec::with_capacity(layers);
    for i in 0..layers {
        let blocks = format!("layers.{i}.residual_group.blocks");
        depths.push(count(dict, &blocks, "Swin blocks")?);
        let table = format!("{blocks}.0.attn.relative_position_bias_table");
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
    let resi_connection = if has("conv_after_body.weight") {
        ResiConnection::OneConv
    } else {
        ResiConnection::ThreeConv
    };
    if resi_connection == ResiConnection::ThreeConv && embed_dim < 4 {
        return Err(format!(
            "SwinIR 3conv with embed_dim {embed_dim}: needs at least 4 channels"
        ));
    }
    let in_channels = num_in_ch / (start_unshuffle * start_unshuffle);
    if num_out_ch != in_channels {
        return Err(format!(
            "SwinIR's output has {num_out_ch} channels and its input {in_channels}: the \
             reference builds them equal"
        ));
    }
    if upscale < start_unshuffle || upscale % start_unshuffle != 0 {
        return Err(format!(
            "SwinIR upscaling by {upscale} after a x{start_unshuffle} unshuffle has no integer \
             scale"
        ));
    }
    let p = SwinIrParams {
        in_channels,
        out_channels: num_out_ch,
        embed_dim,
        depths,
        num_heads,
        window_size,
        mlp_hidden,
        img_size,
        // The JPEG models are the only ones with window 7, and they use this range.
        img_range: if window_size == 7 { 255.0 } else { 1.0 },
        upsampler,
        resi_connection,
        num_feat,
        upscale,
        start_unshuffle,
        first_conv_nested,
    };
    check_tensors(dict, &swinir_tensors(&p))?;
    check_buffers(dict, &p)?;
    Ok(p)
}

/// The buffers a checkpoint may carry (diffsr recomputes them) must fit the configuration.
fn check_buffers(dict: &StateDict, p: &SwinIrParams) -> Result<(), Reason> {
    let n = p.window_size * p.window_size;
    let windows = (p.img_size / p.window_size).saturating_pow(2);
    for (i, &depth) in p.depths.iter().enumerate() {
        for j in 0..depth {
            let block = format!("layers.{i}.residual_group.blocks.{j}");
            check_optional(
                dict,
                &format!("{block}.attn.relative_position_index"),
                &[n, n],
            )?;
            if block_shift(j, p.window_size, p.img_size) > 0 {
                check_optional(dict, &format!("{block}.attn_mask"), &[windows, n, n])?;
            }
        }
    }
    Ok(())
}

/// A SwinIR state dict of zeros with `p`'s shapes, with spandrel's identifying buffer.
#[cfg(test)]
pub(crate) fn synthetic_swinir(p: &SwinIrParams) -> StateDict {
    use candle_core::{DType, Device, Tensor};
    let n = p.window_size * p.window_size;
    let mut dict: StateDict = swinir_tensors(p)
        .into_iter()
        .map(|(k, s)| (k, Tensor::zeros(s, DType::F32, &Device::Cpu).unwrap()))
        .collect();
    let index = Tensor::zeros((n, n), DType::I64, &Device::Cpu).unwrap();
    dict.insert(format!("{BLOCK0}.attn.relative_position_index"), index);
    dict
}

/// A small SwinIR configuration for tests: embed 8, two stages of 2 and 1 blocks.
#[cfg(test)]
pub(crate) fn tiny_params(
    upsampler: Upsampler,
    resi: ResiConnection,
    upscale: usize,
) -> SwinIrParams {
    SwinIrParams {
        in_channels: 3,
        out_channels: 3,
        embed_dim: 8,
        depths: vec![2, 1],
        num_heads: vec![2, 1],
        window_size: 4,
        mlp_hidden: 16,
        img_size: 64,
        img_range: 1.0,
        upsampler,
        resi_connection: resi,
        // spandrel's 64 where the tail has no such layer.
        num_feat: match upsampler {
            Upsampler::PixelShuffle | Upsampler::NearestConv => 4,
            _ => 64,
        },
        upscale,
        start_unshuffle: 1,
        first_conv_nested: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tail_and_residual_is_read_back() {
        for (upsampler, upscale) in [
            (Upsampler::PixelShuffle, 2),
            (Upsampler::PixelShuffle, 3),
            (Upsampler::PixelShuffleDirect, 4),
            (Upsampler::NearestConv, 4),
            (Upsampler::None, 1),
        ] {
            for resi in [ResiConnection::OneConv, ResiConnection::ThreeConv] {
                let want = tiny_params(upsampler, resi, upscale);
                let dict = synthetic_swinir(&want);
                assert!(is_swinir(&dict));
                assert_eq!(swinir_params(&dict), Ok(want));
            }
        }
    }

    #[test]
    fn unshuffled_inputs_are_read_from_conv_first_1() {
        let want = SwinIrParams {
            start_unshuffle: 2,
            first_conv_nested: true,
            ..tiny_params(Upsampler::PixelShuffle, ResiConnection::OneConv, 4)
        };
        let dict = synthetic_swinir(&want);
        assert!(
            dict.contains_key("conv_first.1.weight") && !dict.contains_key("conv_first.weight")
        );
        assert!(is_swinir(&dict));
        let got = swinir_params(&dict).unwrap();
        assert_eq!(got, want);
        use crate::gan::arch::ArchConfig;
        assert_eq!((got.scale(), got.input_size().multiple), (2, 8));
    }

    #[test]
    fn missing_and_misshaped_tensors_are_named() {
        let p = tiny_params(Upsampler::PixelShuffle, ResiConnection::ThreeConv, 2);
        let mut dict = synthetic_swinir(&p);
        let name = "layers.1.residual_group.blocks.0.attn.proj.weight";
        dict.remove(name);
        let err = swinir_params(&dict).unwrap_err();
        assert!(err.contains(name) && err.contains("missing"), "{err}");
        let mut dict = synthetic_swinir(&p);
        let name = "layers.0.conv.2.weight";
        let t = candle_core::Tensor::zeros(
            (2, 2, 3, 3),
            candle_core::DType::F32,
            &candle_core::Device::Cpu,
        )
        .unwrap();
        dict.insert(name.into(), t);
        let err = swinir_params(&dict).unwrap_err();
        assert!(
            err.contains(name) && err.contains("[2, 2, 3, 3]") && err.contains("[2, 2, 1, 1]"),
            "{err}"
        );
    }
}
