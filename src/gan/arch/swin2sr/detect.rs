//! Swin2SR's hyper-parameters read from a state dict, as spandrel 0.4.2
//! `architectures/Swin2SR/__init__.py` (`Swin2SRArch.load`) reads them, then every tensor the
//! configuration reads checked for presence and shape.

use super::block::swin2_block_tensors;
use super::{Swin2SrParams, Swin2SrUpsampler};
use crate::gan::arch::shapes::{conv3x3_dims, dims, Reason, MAX_CHANNELS};
use crate::gan::arch::swin::detect::{
    check_bias_size, check_optional, check_tensors, count, window_from_index,
};
use crate::gan::arch::swin::geometry::block_shift;
use crate::gan::arch::swin::{
    shuffle_stages, tail_tensors, BlockDims, ResiConnection, TailDims, Upsampler,
};
use crate::gan::StateDict;

const BLOCK0: &str = "layers.0.residual_group.blocks.0";

/// spandrel's detection keys (Swin2SR is asked before SwinIR, whose keys it also has).
pub(super) fn is_swin2sr(dict: &StateDict) -> bool {
    [
        &format!("{BLOCK0}.norm1.weight"),
        "patch_embed.proj.weight",
        "conv_first.weight",
        &format!("{BLOCK0}.mlp.fc1.bias"),
        &format!("{BLOCK0}.attn.relative_position_index"),
    ]
    .iter()
    .all(|k| dict.contains_key(*k))
}

/// spandrel's `get_pixelshuffle_params(state_dict, "upsample")`.
fn pixelshuffle_upscale(dict: &StateDict) -> Result<usize, Reason> {
    let mut upscale = 1;
    for i in (0..10).step_by(2) {
        let name = format!("upsample.{i}.weight");
        if !dict.contains_key(&name) {
            break;
        }
        let (out, inp) = conv3x3_dims(dict, &name)?;
        upscale *= (out / inp).isqrt();
    }
    Ok(upscale)
}

pub(super) fn block_dims(p: &Swin2SrParams, heads: usize, j: usize) -> BlockDims {
    BlockDims {
        dim: p.embed_dim,
        heads,
        window: p.window_size,
        shift: block_shift(j, p.window_size, p.img_size),
        hidden: p.mlp_hidden,
    }
}

pub(super) fn tail_dims(p: &Swin2SrParams) -> TailDims {
    TailDims {
        embed: p.embed_dim,
        num_feat: p.num_feat,
        out_channels: p.in_channels,
        scale: p.upscale,
    }
}

fn conv(prefix: &str, c_out: usize, c_in: usize, k: usize) -> [(String, Vec<usize>); 2] {
    [
        (format!("{prefix}.weight"), vec![c_out, c_in, k, k]),
        (format!("{prefix}.bias"), vec![c_out]),
    ]
}

/// Every tensor the network reads, `(name, shape)`.
pub(super) fn swin2sr_tensors(p: &Swin2SrParams) -> Vec<(String, Vec<usize>)> {
    let c = p.embed_dim;
    let mut t = Vec::new();
    t.extend(conv("conv_first", c, p.in_channels, 3));
    t.extend(conv("patch_embed.proj", c, c, 1));
    if p.patch_norm {
        t.push(("patch_embed.norm.weight".into(), vec![c]));
        t.push(("patch_embed.norm.bias".into(), vec![c]));
    }
    if p.ape {
        t.push((
            "absolute_pos_embed".into(),
            vec![1, p.img_size * p.img_size, c],
        ));
    }
    for (i, (&depth, &heads)) in p.depths.iter().zip(&p.num_heads).enumerate() {
        for j in 0..depth {
            let prefix = format!("layers.{i}.residual_group.blocks.{j}");
            t.extend(swin2_block_tensors(
                &prefix,
                &block_dims(p, heads, j),
                p.qkv_bias,
            ));
        }
        t.extend(p.resi_connection.tensors(&format!("layers.{i}.conv"), c));
        t.extend(conv(&format!("layers.{i}.patch_embed.proj"), c, c, 1));
    }
    t.push(("norm.weight".into(), vec![c]));
    t.push(("norm.bias".into(), vec![c]));
    t.extend(p.resi_connection.tensors("conv_after_body", c));
    match p.upsampler {
        Swin2SrUpsampler::Shared(u) => t.extend(tail_tensors(u, &tail_dims(p))),
        Swin2SrUpsampler::PixelShuffleAux => {
            let (nf, out) = (p.num_feat, p.in_channels);
            t.extend(conv("conv_bicubic", nf, p.in_channels, 3));
            t.extend(conv("conv_before_upsample.0", nf, c, 3));
            t.extend(conv("conv_aux", out, nf, 3));
            // The reference builds conv_after_aux with 3 inputs whatever the channels.
            t.extend(conv("conv_after_aux.0", nf, 3, 3));
            for (i, r) in shuffle_stages(p.upscale)
                .unwrap_or_default()
                .iter()
                .enumerate()
            {
                t.extend(conv(&format!("upsample.{}", 2 * i), r * r * nf, nf, 3));
            }
            t.extend(conv("conv_last", out, nf, 3));
        }
    }
    t
}

/// The hyper-parameters of a dict that [`is_swin2sr`], after every tensor's shape has been
/// checked against them.
pub(super) fn swin2sr_params(dict: &StateDict) -> Result<Swin2SrParams, Reason> {
    let has = |k: &str| dict.contains_key(k);
    let (embed_dim, in_channels) = conv3x3_dims(dict, "conv_first.weight")?;
    let patch = dims(dict, "patch_embed.proj.weight")?;
    let patch_size = patch.get(2).copied().unwrap_or(0);
    if patch_size != 1 {
        return Err(format!(
            "Swin2SR with patch size {patch_size} (`patch_embed.proj.weight` {patch:?}): the \
             reference's forward runs patch size 1 only"
        ));
    }
    let ape = has("absolute_pos_embed");
    let patch_norm = has("patch_embed.norm.weight");
    let qkv_bias = has(&format!("{BLOCK0}.attn.q_bias"));
    let layers = count(dict, "layers", "residual stages")?;
    let mut depths = Vec::with_capacity(layers);
    let mut num_heads = Vec::with_capacity(layers);
    for i in 0..layers {
        let blocks = format!("layers.{i}.residual_group.blocks");
        depths.push(count(dict, &blocks, "Swin blocks")?);
        let name = format!("{blocks}.0.attn.logit_scale");
        let heads = match dims(dict, &name)?.as_slice() {
            [h, 1, 1] if *h >= 1 && embed_dim % h == 0 => *h,
            d => {
                return Err(format!(
                    "tensor `{name}` has shape {d:?}; expected (heads, 1, 1) with the heads \
                     dividing embed_dim {embed_dim}"
                ))
            }
        };
        num_heads.push(heads);
    }
    let fc1 = format!("{BLOCK0}.mlp.fc1.weight");
    let mlp_hidden = match dims(dict, &fc1)?.as_slice() {
        [h, _] if (1..=16 * MAX_CHANNELS).contains(h) => *h,
        d => {
            return Err(format!(
                "tensor `{fc1}` has shape {d:?}; expected (hidden, embed_dim)"
            ))
        }
    };
    let resi_connection = if has("conv_after_body.0.weight") {
        ResiConnection::ThreeConv
    } else if has("conv_after_body.weight") {
        ResiConnection::OneConv
    } else {
        return Err("Swin2SR without `conv_after_body`: unknown residual connection".into());
    };
    if resi_connection == ResiConnection::ThreeConv && embed_dim < 4 {
        return Err(format!(
            "Swin2SR 3conv with embed_dim {embed_dim}: needs at least 4"
        ));
    }
    let upsampler = if has("conv_bicubic.weight") {
        Swin2SrUpsampler::PixelShuffleAux
    } else if has("conv_hr.weight") {
        Swin2SrUpsampler::Shared(Upsampler::NearestConv)
    } else if has("conv_after_body_hf.weight") {
        return Err(
            "Swin2SR pixelshuffle_hf: the reference returns three images from it, which \
             spandrel cannot run either"
                .into(),
        );
    } else if has("conv_before_upsample.0.weight") {
        Swin2SrUpsampler::Shared(Upsampler::PixelShuffle)
    } else if has("upsample.0.weight") {
        Swin2SrUpsampler::Shared(Upsampler::PixelShuffleDirect)
    } else {
        Swin2SrUpsampler::Shared(Upsampler::None)
    };
    if upsampler == Swin2SrUpsampler::PixelShuffleAux && in_channels != 3 {
        return Err(format!(
            "Swin2SR pixelshuffle_aux with {in_channels} channels: the reference's              conv_after_aux takes 3"
        ));
    }
    let upscale = match upsampler {
        Swin2SrUpsampler::Shared(Upsampler::None) => 1,
        // The reference builds nearest+conv for x4 only.
        Swin2SrUpsampler::Shared(Upsampler::NearestConv) => 4,
        Swin2SrUpsampler::Shared(Upsampler::PixelShuffleDirect) => {
            let d = dims(dict, "upsample.0.weight")?;
            let out = d.first().copied().unwrap_or(0);
            ((out / in_channels) as f64).sqrt() as usize
        }
        _ => pixelshuffle_upscale(dict)?,
    };
    let needs_stages = matches!(
        upsampler,
        Swin2SrUpsampler::PixelShuffleAux | Swin2SrUpsampler::Shared(Upsampler::PixelShuffle)
    );
    if needs_stages && shuffle_stages(upscale).is_none() {
        return Err(format!(
            "Swin2SR pixelshuffle upsampling by {upscale}: the reference supports 2^n and 3"
        ));
    }
    if upscale == 0 {
        return Err("Swin2SR pixelshuffledirect with fewer outputs than channels".into());
    }
    let num_feat = if has("conv_before_upsample.0.weight") {
        conv3x3_dims(dict, "conv_before_upsample.0.weight")?.0
    } else {
        64
    };
    let window_size = window_from_index(dict, &format!("{BLOCK0}.attn.relative_position_index"))?;
    if window_size < 2 {
        return Err("Swin2SR with a 1-pixel window: its coordinate table divides by zero".into());
    }
    for &heads in &num_heads {
        check_bias_size(window_size, heads)?;
    }
    // As spandrel: the training size from blocks.1's mask (patches = √(windows · window²)),
    // else from the position embedding, else one window.
    let img_size = if let Some(t) = dict.get("layers.0.residual_group.blocks.1.attn_mask") {
        let windows = t.dims().first().copied().unwrap_or(0);
        (windows as f64 * (window_size * window_size) as f64).sqrt() as usize
    } else if ape {
        let patches = dims(dict, "absolute_pos_embed")?
            .get(1)
            .copied()
            .unwrap_or(0);
        (patches as f64).sqrt() as usize
    } else {
        window_size
    };
    let p = Swin2SrParams {
        in_channels,
        embed_dim,
        depths,
        num_heads,
        window_size,
        mlp_hidden,
        img_size,
        img_range: if window_size == 7 { 255.0 } else { 1.0 },
        qkv_bias,
        ape,
        patch_norm,
        upsampler,
        resi_connection,
        num_feat,
        upscale,
    };
    check_tensors(dict, &swin2sr_tensors(&p))?;
    check_buffers(dict, &p)?;
    Ok(p)
}

/// The buffers a checkpoint may carry (diffsr recomputes them) must fit the configuration.
fn check_buffers(dict: &StateDict, p: &Swin2SrParams) -> Result<(), Reason> {
    let (w, n) = (p.window_size, p.window_size * p.window_size);
    let windows = (p.img_size / w).saturating_pow(2);
    for (i, &depth) in p.depths.iter().enumerate() {
        for j in 0..depth {
            let attn = format!("layers.{i}.residual_group.blocks.{j}.attn");
            check_optional(dict, &format!("{attn}.relative_position_index"), &[n, n])?;
            let span = 2 * w - 1;
            check_optional(
                dict,
                &format!("{attn}.relative_coords_table"),
                &[1, span, span, 2],
            )?;
            if block_shift(j, w, p.img_size) > 0 {
                let mask = format!("layers.{i}.residual_group.blocks.{j}.attn_mask");
                check_optional(dict, &mask, &[windows, n, n])?;
            }
        }
    }
    Ok(())
}

/// A Swin2SR state dict of zeros with `p`'s shapes, with spandrel's identifying buffer.
#[cfg(test)]
pub(crate) fn synthetic_swin2sr(p: &Swin2SrParams) -> StateDict {
    use candle_core::{DType, Device, Tensor};
    let n = p.window_size * p.window_size;
    let mut dict: StateDict = swin2sr_tensors(p)
        .into_iter()
        .map(|(k, s)| (k, Tensor::zeros(s, DType::F32, &Device::Cpu).unwrap()))
        .collect();
    let index = Tensor::zeros((n, n), DType::I64, &Device::Cpu).unwrap();
    dict.insert(format!("{BLOCK0}.attn.relative_position_index"), index);
    dict
}

/// A small Swin2SR configuration for tests: embed 8, two stages of 1 and 2 blocks, window 4
/// (the training size is then one window: no attn_mask, so no shift, as spandrel infers).
#[cfg(test)]
pub(crate) fn tiny_swin2sr(upsampler: Swin2SrUpsampler, upscale: usize) -> Swin2SrParams {
    let tail_feat = matches!(
        upsampler,
        Swin2SrUpsampler::PixelShuffleAux
            | Swin2SrUpsampler::Shared(Upsampler::PixelShuffle | Upsampler::NearestConv)
    );
    Swin2SrParams {
        in_channels: 3,
        embed_dim: 8,
        depths: vec![1, 2],
        num_heads: vec![2, 1],
        window_size: 4,
        mlp_hidden: 16,
        img_size: 4,
        img_range: 1.0,
        qkv_bias: true,
        ape: false,
        patch_norm: true,
        upsampler,
        resi_connection: ResiConnection::OneConv,
        num_feat: if tail_feat { 4 } else { 64 },
        upscale,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tail_is_read_back() {
        for (upsampler, upscale) in [
            (Swin2SrUpsampler::Shared(Upsampler::PixelShuffle), 2),
            (Swin2SrUpsampler::Shared(Upsampler::PixelShuffleDirect), 3),
            (Swin2SrUpsampler::Shared(Upsampler::NearestConv), 4),
            (Swin2SrUpsampler::Shared(Upsampler::None), 1),
            (Swin2SrUpsampler::PixelShuffleAux, 4),
        ] {
            let want = tiny_swin2sr(upsampler, upscale);
            let dict = synthetic_swin2sr(&want);
            assert!(is_swin2sr(&dict));
            assert_eq!(swin2sr_params(&dict), Ok(want));
        }
    }
}
