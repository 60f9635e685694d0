//! DRCT's hyper-parameters read from a state dict as spandrel 0.4.2
//! `architectures/DRCT/__init__.py` (`DRCTArch`) reads them, then every tensor the
//! configuration reads checked for presence and shape.

use super::{DrctParams, DrctResi};
use crate::gan::arch::shapes::{conv3x3_dims, dims, Reason, MAX_CHANNELS};
use crate::gan::arch::swin::detect::{
    check_bias_size, check_optional, check_tensors, count, MAX_WINDOW,
};
use crate::gan::arch::swin::{block_tensors, shuffle_stages, tail_tensors, TailDims, Upsampler};
use crate::gan::StateDict;

/// spandrel's identifying keys (`KeyCondition.has_all`).
const KEYS: &[&str] = &[
    "conv_first.weight",
    "conv_first.bias",
    "layers.0.swin1.norm1.weight",
    "layers.0.swin1.norm1.bias",
    "layers.0.swin1.attn.relative_position_bias_table",
    "layers.0.swin1.attn.relative_position_index",
    "layers.0.swin1.attn.qkv.weight",
    "layers.0.swin1.attn.proj.weight",
    "layers.0.swin1.attn.proj.bias",
    "layers.0.swin1.norm2.weight",
    "layers.0.swin1.mlp.fc1.weight",
    "layers.0.swin1.mlp.fc1.bias",
    "layers.0.swin1.mlp.fc2.weight",
    "layers.0.adjust1.weight",
    "layers.0.swin2.norm1.weight",
    "layers.0.adjust2.weight",
    "layers.0.swin3.norm1.weight",
    "layers.0.adjust3.weight",
    "layers.0.swin4.norm1.weight",
    "layers.0.adjust4.weight",
    "layers.0.swin5.norm1.weight",
    "layers.0.adjust5.weight",
    "norm.weight",
    "norm.bias",
];

/// The training-size buffer detection reads.
const MASK: &str = "layers.0.swin2.attn_mask";

pub(super) fn is_drct(dict: &StateDict) -> bool {
    KEYS.iter().all(|k| dict.contains_key(*k))
}

/// spandrel's `get_pixelshuffle_params(state_dict, "upsample")`: the product of
/// isqrt(out / in) over `upsample.0`, `upsample.2`, … (up to `upsample.8`).
fn pixelshuffle_upscale(dict: &StateDict) -> Result<usize, Reason> {
    let mut upscale = 1usize;
    for i in (0..10).step_by(2) {
        let name = format!("upsample.{i}.weight");
        if !dict.contains_key(&name) {
            break;
        }
        let (out, inp) = conv3x3_dims(dict, &name)?;
        upscale = upscale.saturating_mul((out / inp).isqrt());
    }
    Ok(upscale)
}

/// Every tensor the network reads, `(name, shape)`.
pub(super) fn drct_tensors(p: &DrctParams) -> Vec<(String, Vec<usize>)> {
    let c = p.embed_dim;
    let conv3 = |name: &str, out: usize, inp: usize| {
        [
            (format!("{name}.weight"), vec![out, inp, 3, 3]),
            (format!("{name}.bias"), vec![out]),
        ]
    };
    let mut t: Vec<(String, Vec<usize>)> = conv3("conv_first", c, p.in_channels).into();
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
    for layer in 0..p.num_heads.len() {
        for (k, d) in p.block_dims(layer).iter().enumerate() {
            let prefix = format!("layers.{layer}.swin{}", k + 1);
            t.extend(
                block_tensors(&prefix, d)
                    .into_iter()
                    .filter(|(name, _)| p.qkv_bias || !name.ends_with("attn.qkv.bias")),
            );
            let out = if k < 4 { p.gc } else { c };
            let adjust = format!("layers.{layer}.adjust{}", k + 1);
            t.push((format!("{adjust}.weight"), vec![out, d.dim, 1, 1]));
            t.push((format!("{adjust}.bias"), vec![out]));
        }
    }
    t.push(("norm.weight".into(), vec![c]));
    t.push(("norm.bias".into(), vec![c]));
    if p.resi_connection == DrctResi::OneConv {
        t.extend(conv3("conv_after_body", c, c));
    }
    if p.upsampler != Upsampler::None {
        let tail = TailDims {
            embed: c,
            num_feat: p.num_feat,
            out_channels: p.in_channels,
            scale: p.upscale,
        };
        t.extend(tail_tensors(p.upsampler, &tail));
    }
    t
}

/// The hyper-parameters of a dict that [`is_drct`], after every tensor's shape has been checked
/// against them.
pub(super) fn drct_params(dict: &StateDict) -> Result<DrctParams, Reason> {
    let has = |k: &str| dict.contains_key(k);
    let (embed_dim, in_channels) = conv3x3_dims(dict, "conv_first.weight")?;
    let layers = count(dict, "layers", "residual dense groups")?;

    let table0 = "layers.0.swin1.attn.relative_position_bias_table";
    let rows = dims(dict, table0)?.first().copied().unwrap_or(0);
    // spandrel: (isqrt(rows) + 1) // 2, rows being (2·window − 1)².
    let window_size = rows.isqrt().div_ceil(2);
    if !(1..=MAX_WINDOW).contains(&window_size) {
        return Err(format!(
            "tensor `{table0}` has {rows} rows: a window of {window_size}, expected 1 to \
             {MAX_WINDOW}"
        ));
    }
    let mut num_heads = Vec::with_capacity(layers);
    for i in 0..layers {
        let table = format!("layers.{i}.swin1.attn.relative_position_bias_table");
        let heads = match dims(dict, &table)?.as_slice() {
            [_, h] if (1..=embed_dim).contains(h) => *h,
            d => {
                return Err(format!(
                    "tensor `{table}` has shape {d:?}; expected (positions, heads) with 1 to \
                     embed_dim {embed_dim} heads"
                ))
            }
        };
        check_bias_size(window_size, heads)?;
        num_heads.push(heads);
    }
    let fc1 = "layers.0.swin1.mlp.fc1.weight";
    let mlp_hidden = match dims(dict, fc1)?.as_slice() {
        [h, _] if (1..=16 * MAX_CHANNELS).contains(h) => *h,
        d => {
            return Err(format!(
                "tensor `{fc1}` has shape {d:?}; expected (hidden, embed_dim)"
            ))
        }
    };

    let (upsampler, upscale) = if has("conv_last.weight") {
        let upscale = pixelshuffle_upscale(dict)?;
        if upscale < 2 || shuffle_stages(upscale).is_none() {
            return Err(format!(
                "DRCT pixelshuffle upsampling by {upscale}: the reference supports 2^n and 3"
            ));
        }
        (Upsampler::PixelShuffle, upscale)
    } else {
        (Upsampler::None, 1)
    };
    let resi_connection = if has("conv_after_body.weight") {
        DrctResi::OneConv
    } else {
        DrctResi::Identity
    };
    let adjust1 = "layers.0.adjust1.weight";
    let gc = match dims(dict, adjust1)?.as_slice() {
        [g, _, 1, 1] if (1..=MAX_CHANNELS).contains(g) => *g,
        d => {
            return Err(format!(
                "tensor `{adjust1}` has shape {d:?}; expected (gc, embed_dim, 1, 1)"
            ))
        }
    };
    // spandrel: isqrt(windows) · window from the stored shift mask, else the window itself
    // (then no block shifts).
    let img_size = match dict.get(MASK).and_then(|t| t.dims().first().copied()) {
        Some(windows) => windows.isqrt().saturating_mul(window_size),
        None => window_size,
    };
    if img_size == 0 || img_size > 1 << 16 {
        return Err(format!(
            "tensor `{MASK}` makes a training size of {img_size}: expected 1 to 65536"
        ));
    }
    let p = DrctParams {
        in_channels,
        embed_dim,
        depths: vec![6; layers],
        num_heads,
        window_size,
        mlp_hidden,
        gc,
        img_size,
        img_range: 1.0,
        upsampler,
        resi_connection,
        upscale,
        num_feat: 64,
        qkv_bias: has("layers.0.swin1.attn.qkv.bias"),
        patch_norm: has("patch_embed.norm.weight"),
        ape: has("absolute_pos_embed"),
    };
    for layer in 0..layers {
        for (k, d) in p.block_dims(layer).iter().enumerate() {
            if d.dim % d.heads != 0 {
                return Err(format!(
                    "DRCT group {layer} block swin{}: {} heads do not divide its {} channels \
                     (the reference cannot run it)",
                    k + 1,
                    d.heads,
                    d.dim
                ));
            }
        }
    }
    check_tensors(dict, &drct_tensors(&p))?;
    check_buffers(dict, &p)?;
    Ok(p)
}

/// The buffers a checkpoint carries (diffsr recomputes them) must fit the configuration.
fn check_buffers(dict: &StateDict, p: &DrctParams) -> Result<(), Reason> {
    let n = p.window_size * p.window_size;
    let windows = (p.img_size / p.window_size).saturating_pow(2);
    for layer in 0..p.num_heads.len() {
        for (k, d) in p.block_dims(layer).iter().enumerate() {
            let block = format!("layers.{layer}.swin{}", k + 1);
            check_optional(
                dict,
                &format!("{block}.attn.relative_position_index"),
                &[n, n],
            )?;
            if d.shift > 0 {
                check_optional(dict, &format!("{block}.attn_mask"), &[windows, n, n])?;
            }
        }
    }
    Ok(())
}

/// A DRCT state dict of zeros with `p`'s shapes, with spandrel's identifying buffer and, when
/// the training size is above the window, the shift mask detection reads it from.
#[cfg(test)]
pub(crate) fn synthetic_drct(p: &DrctParams) -> StateDict {
    use candle_core::{DType, Device, Tensor};
    let n = p.window_size * p.window_size;
    let mut dict: StateDict = drct_tensors(p)
        .into_iter()
        .map(|(k, s)| (k, Tensor::zeros(s, DType::F32, &Device::Cpu).unwrap()))
        .collect();
    let index = Tensor::zeros((n, n), DType::I64, &Device::Cpu).unwrap();
    dict.insert("layers.0.swin1.attn.relative_position_index".into(), index);
    if p.img_size > p.window_size {
        let windows = (p.img_size / p.window_size).pow(2);
        let mask = Tensor::zeros((windows, n, n), DType::F32, &Device::Cpu).unwrap();
        dict.insert(MASK.into(), mask);
    }
    dict
}

/// A small DRCT for tests: embed 12, groups of 3 and 2 heads, window 4, gc 5, training size
/// 16, pixelshuffle x2.
#[cfg(test)]
pub(crate) fn tiny_params() -> DrctParams {
    DrctParams {
        in_channels: 3,
        embed_dim: 12,
        depths: vec![6, 6],
        num_heads: vec![3, 2],
        window_size: 4,
        mlp_hidden: 18,
        gc: 5,
        img_size: 16,
        img_range: 1.0,
        upsampler: Upsampler::PixelShuffle,
        resi_connection: DrctResi::OneConv,
        upscale: 2,
        num_feat: 64,
        qkv_bias: true,
        patch_norm: true,
        ape: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_option_is_read_back() {
        let base = tiny_params();
        for p in [
            base.clone(),
            DrctParams {
                qkv_bias: false,
                patch_norm: false,
                ape: true,
                resi_connection: DrctResi::Identity,
                upscale: 3,
                ..base.clone()
            },
            DrctParams {
                upsampler: Upsampler::None,
                upscale: 1,
                img_size: 4,
                in_channels: 1,
                ..base.clone()
            },
        ] {
            let dict = synthetic_drct(&p);
            assert!(is_drct(&dict));
            assert_eq!(drct_params(&dict), Ok(p));
        }
        // Widths 12, 17, 22, 27, 32 with 3 heads: 3, 1, 2, 3, 1 heads; MLP 18, 25, 33, 27, 32.
        let d = base.block_dims(0);
        let heads: Vec<usize> = d.iter().map(|b| b.heads).collect();
        let hidden: Vec<usize> = d.iter().map(|b| b.hidden).collect();
        let shifts: Vec<usize> = d.iter().map(|b| b.shift).collect();
        assert_eq!(heads, [3, 1, 2, 3, 1]);
        assert_eq!(hidden, [18, 25, 33, 27, 32]);
        assert_eq!(shifts, [0, 2, 0, 2, 0]);
    }

    #[test]
    fn missing_misshaped_and_impossible_dicts_are_refused() {
        let p = tiny_params();
        let name = "layers.1.swin4.mlp.fc2.weight";
        let mut dict = synthetic_drct(&p);
        dict.remove(name);
        let err = drct_params(&dict).unwrap_err();
        assert!(err.contains(name) && err.contains("missing"), "{err}");

        let mut dict = synthetic_drct(&p);
        let name = "layers.0.adjust3.weight";
        let t = candle_core::Tensor::zeros(
            (5, 21, 1, 1),
            candle_core::DType::F32,
            &candle_core::Device::Cpu,
        )
        .unwrap();
        dict.insert(name.into(), t);
        let err = drct_params(&dict).unwrap_err();
        assert!(
            err.contains(name) && err.contains("[5, 21, 1, 1]") && err.contains("[5, 22, 1, 1]"),
            "{err}"
        );

        // 13 channels, 6 heads: blocks of 13 + k·gc whose cut heads do not divide them.
        let bad = DrctParams {
            embed_dim: 12,
            gc: 1,
            num_heads: vec![6, 6],
            ..p
        };
        let err = drct_params(&synthetic_drct(&bad)).unwrap_err();
        assert!(err.contains("do not divide"), "{err}");
    }
}
