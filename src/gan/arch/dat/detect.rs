//! DAT's hyper-parameters read from a state dict's names and shapes, as spandrel 0.4.2's
//! `architectures/DAT/__init__.py` (`DATArch.load`) reads them, then every tensor checked
//! against the layout they imply (`layout.rs`), so that a malformed file is refused by name
//! before anything is built.

use candle_core::DType;

use super::layout::{pos_dim, upsample_steps, TensorRole};
use super::{DatParams, DatUpsampler, ResiConnection};
use crate::gan::arch::shapes::{dims, expect_shape, Reason, MAX_CHANNELS};
use crate::gan::StateDict;

/// The tensors DAT is recognised by: the parts of spandrel's `KeyCondition` that no other
/// architecture has (the spatial gate's depthwise conv, the interaction module, the dynamic
/// position bias), without the derived buffers (`relative_position_index`, masks) that a
/// file may leave out. The rest of spandrel's list is then required by name.
const IDENTIFYING: &[&str] = &[
    "conv_first.weight",
    "before_RG.1.weight",
    "layers.0.blocks.0.attn.qkv.weight",
    "layers.0.blocks.0.attn.channel_interaction.1.weight",
    "layers.0.blocks.0.attn.spatial_interaction.0.weight",
    "layers.0.blocks.0.attn.attns.0.pos.pos_proj.weight",
    "layers.0.blocks.0.ffn.sg.conv.weight",
];

/// The buffer spandrel reads the split size from: its last row is (H_sp − 1, W_sp − 1).
const RPE_BIASES: &str = "layers.0.blocks.0.attn.attns.0.rpe_biases";

/// The shift mask whose shape gives `img_size` (spandrel reads this one only).
const MASK: &str = "layers.0.blocks.2.attn.attn_mask_0";

/// Most residual groups (the published models have 1 and 6).
pub(crate) const MAX_LAYERS: usize = 32;
/// Most blocks in a group (DAT-light has 18).
pub(crate) const MAX_DEPTH: usize = 64;
/// Longest window side (the published models use 8, 16 and 32).
pub(crate) const MAX_SPLIT: usize = 64;
/// Largest scale.
pub(crate) const MAX_SCALE: usize = 16;

/// Whether the dict holds DAT's identifying tensors.
pub(super) fn is_dat(dict: &StateDict) -> bool {
    IDENTIFYING.iter().all(|k| dict.contains_key(*k))
}

/// spandrel's `get_seq_len`: one more than the largest index `i` of any `prefix.i.…` key.
fn seq_len(dict: &StateDict, prefix: &str) -> usize {
    let prefix = format!("{prefix}.");
    dict.keys()
        .filter_map(|k| {
            let rest = k.strip_prefix(&prefix)?;
            rest.split('.').next()?.parse::<usize>().ok()
        })
        .max()
        .map_or(0, |i| i.saturating_add(1))
}

/// The hyper-parameters of a dict that [`is_dat`], after every tensor's shape has been
/// checked against them.
pub(super) fn dat_params(dict: &StateDict) -> Result<DatParams, Reason> {
    let first = dims(dict, "conv_first.weight")?;
    let (embed_dim, in_channels) = match first.as_slice() {
        [c, i, 3, 3] if (1..=MAX_CHANNELS).contains(c) && (1..=MAX_CHANNELS).contains(i) => {
            (*c, *i)
        }
        _ => {
            return Err(format!(
                "tensor `conv_first.weight` has shape {first:?}; expected a 3x3 conv weight with \
                 1 to {MAX_CHANNELS} output and input channels"
            ))
        }
    };
    if embed_dim < 32 || embed_dim % 2 != 0 {
        return Err(format!(
            "DAT with embed_dim {embed_dim} (`conv_first.weight` {first:?}): the reference needs \
             an even width of at least 32 (its position-bias MLP is embed_dim / 32 wide)"
        ));
    }
    let num_layers = seq_len(dict, "layers");
    if num_layers > MAX_LAYERS {
        return Err(format!(
            "DAT with {num_layers} residual groups: at most {MAX_LAYERS} are supported"
        ));
    }
    let mut depth = Vec::with_capacity(num_layers);
    let mut num_heads = Vec::with_capacity(num_layers);
    for i in 0..num_layers {
        let d = seq_len(dict, &format!("layers.{i}.blocks"));
        if d == 0 || d > MAX_DEPTH {
            return Err(format!(
                "DAT residual group layers.{i} has {d} blocks; expected 1 to {MAX_DEPTH}"
            ));
        }
        depth.push(d);
        num_heads.push(read_heads(dict, i, d)?);
    }
    let split_size = read_split(dict)?;
    let (upsampler, upscale, num_feat) = read_upsampler(dict, in_channels)?;
    let resi_connection = if dict.contains_key("conv_after_body.weight") {
        ResiConnection::OneConv
    } else {
        ResiConnection::ThreeConv
    };
    let fc1 = dims(dict, "layers.0.blocks.0.ffn.fc1.weight")?;
    let Some(&fc1_out) = fc1.first() else {
        return Err(format!(
            "tensor `layers.0.blocks.0.ffn.fc1.weight` has shape {fc1:?}; expected a matrix"
        ));
    };
    let expansion_factor = fc1_out as f64 / embed_dim as f64;
    // `int(dim * expansion_factor)`, as the reference sizes the layer.
    let ffn_hidden = (embed_dim as f64 * expansion_factor) as usize;
    if ffn_hidden < 2 || ffn_hidden % 2 != 0 || ffn_hidden > 8 * MAX_CHANNELS {
        return Err(format!(
            "DAT with an SGFN hidden width of {ffn_hidden} (`layers.0.blocks.0.ffn.fc1.weight` \
             {fc1:?}): the spatial gate splits it in two even halves, at most {} wide",
            4 * MAX_CHANNELS
        ));
    }
    let img_size = match dict.get(MASK).map(|t| t.dims().to_vec()) {
        Some(d) => match d.as_slice() {
            [x, y, _] => (x.saturating_mul(*y) as f64).sqrt() as usize,
            _ => {
                return Err(format!(
                    "tensor `{MASK}` has shape {d:?}; expected 3 dimensions"
                ))
            }
        },
        None => 64,
    };
    let params = DatParams {
        in_channels,
        embed_dim,
        depth,
        num_heads,
        split_size,
        expansion_factor,
        ffn_hidden,
        qkv_bias: dict.contains_key("layers.0.blocks.0.attn.qkv.bias"),
        resi_connection,
        upsampler,
        num_feat,
        upscale,
        img_range: 1.0,
        img_size,
    };
    check_heads(&params)?;
    let layout = params.state_dict_layout();
    for entry in &layout {
        if entry.role == TensorRole::Weight || dict.contains_key(&entry.name) {
            expect_shape(dict, &entry.name, &entry.shape)?;
        }
    }
    // As spandrel's strict `load_state_dict`: a tensor the layout lacks means the file is not
    // what its shapes say (a qkv bias in some blocks only, a stray group).
    if dict.len() > layout.len() || layout.iter().any(|e| !dict.contains_key(&e.name)) {
        let known: std::collections::HashSet<&str> =
            layout.iter().map(|e| e.name.as_str()).collect();
        let mut extra: Vec<&str> = dict
            .keys()
            .map(String::as_str)
            .filter(|k| !known.contains(k))
            .collect();
        extra.sort_unstable();
        if let Some(first) = extra.first() {
            return Err(format!(
                "unexpected tensor `{first}` ({} in all) for DAT with {}: the reference would \
                 not load it either",
                extra.len(),
                summary(&params)
            ));
        }
    }
    Ok(params)
}

/// The hyper-parameters that decide which tensors exist, for messages.
fn summary(p: &DatParams) -> String {
    format!(
        "depth {:?}, {}, {}, {}",
        p.depth,
        if p.qkv_bias {
            "qkv bias"
        } else {
            "no qkv bias"
        },
        p.resi_connection.name(),
        p.upsampler.name()
    )
}

/// Heads of group `i` (`depth` blocks): the channel block's temperatures when there is one,
/// else twice the heads of a window orientation (the reference can only be rebuilt with an
/// even count then).
fn read_heads(dict: &StateDict, i: usize, depth: usize) -> Result<usize, Reason> {
    let (name, d) = if depth >= 2 {
        let name = format!("layers.{i}.blocks.1.attn.temperature");
        let d = dims(dict, &name)?;
        let heads = match d.as_slice() {
            [h, 1, 1] => Some(*h),
            _ => None,
        };
        (name, heads.ok_or(d))
    } else {
        let name = format!("layers.{i}.blocks.0.attn.attns.0.pos.pos3.2.weight");
        let d = dims(dict, &name)?;
        let heads = match d.as_slice() {
            [h, _] => h.checked_mul(2),
            _ => None,
        };
        (name, heads.ok_or(d))
    };
    match d {
        Ok(h) if (2..=MAX_CHANNELS).contains(&h) => Ok(h),
        Ok(h) => Err(format!(
            "tensor `{name}` gives group layers.{i} {h} heads; expected 2 to {MAX_CHANNELS}"
        )),
        Err(d) => Err(format!(
            "tensor `{name}` has shape {d:?}; expected [heads, 1, 1] temperatures or a \
             [heads / 2, pos_dim] projection"
        )),
    }
}

/// The split size from the last row of the first window's `rpe_biases`, checked against the
/// table's length.
fn read_split(dict: &StateDict) -> Result<[usize; 2], Reason> {
    let t = dict
        .get(RPE_BIASES)
        .ok_or_else(|| format!("missing tensor `{RPE_BIASES}`"))?;
    let bad = |why: &str| format!("tensor `{RPE_BIASES}` {:?}: {why}", t.dims());
    let rows = match t.dims() {
        [r, 2] if *r > 0 => *r,
        _ => return Err(bad("expected a [rows, 2] table of window offsets")),
    };
    let last = t
        .narrow(0, rows - 1, 1)
        .and_then(|r| r.to_dtype(DType::F64))
        .and_then(|r| r.flatten_all())
        .and_then(|r| r.to_vec1::<f64>())
        .map_err(|e| bad(&e.to_string()))?;
    let side = |v: f64| {
        let ok = v.fract() == 0.0 && (0.0..MAX_SPLIT as f64).contains(&v);
        ok.then_some(v as usize + 1)
    };
    let (Some(s0), Some(s1)) = (match last.as_slice() {
        [a, b] => (side(*a), side(*b)),
        _ => (None, None),
    }) else {
        return Err(bad(&format!(
            "its last row {last:?} is not (rows − 1, columns − 1) of a window of 1 to \
             {MAX_SPLIT} pixels a side"
        )));
    };
    if rows != (2 * s0 - 1) * (2 * s1 - 1) {
        return Err(bad(&format!(
            "a {s0}x{s1} window has {} offsets",
            (2 * s0 - 1) * (2 * s1 - 1)
        )));
    }
    if s0.max(s1) % s0.min(s1) != 0 {
        return Err(format!(
            "DAT with {s0}x{s1} windows: the reference pads to a multiple of the longer side, \
             which must then be a multiple of the shorter one"
        ));
    }
    Ok([s0, s1])
}

/// The upsampler, the scale and `num_feat`, as spandrel reads them: `conv_last` means the
/// pixel-shuffle reconstruction (`get_pixelshuffle_params`), its absence the direct one.
fn read_upsampler(
    dict: &StateDict,
    in_channels: usize,
) -> Result<(DatUpsampler, usize, usize), Reason> {
    let conv = |name: &str| -> Result<(usize, usize), Reason> {
        let d = dims(dict, name)?;
        match d.as_slice() {
            [o, i, 3, 3] if *i > 0 && *o <= MAX_CHANNELS * MAX_SCALE * MAX_SCALE => Ok((*o, *i)),
            _ => Err(format!(
                "tensor `{name}` has shape {d:?}; expected a 3x3 conv weight"
            )),
        }
    };
    let (upsampler, scale, num_feat) = if dict.contains_key("conv_last.weight") {
        let (mut scale, mut num_feat) = (1usize, 64usize);
        for i in (0..10).step_by(2) {
            let name = format!("upsample.{i}.weight");
            if !dict.contains_key(&name) {
                break;
            }
            let (o, nf) = conv(&name)?;
            num_feat = nf;
            scale = scale.saturating_mul((o / nf).isqrt());
        }
        (DatUpsampler::PixelShuffle, scale, num_feat)
    } else {
        let (o, nf) = conv("upsample.0.weight")?;
        let scale = ((o / in_channels) as f64).sqrt() as usize;
        (DatUpsampler::PixelShuffleDirect, scale, nf)
    };
    let buildable = match upsampler {
        DatUpsampler::PixelShuffle => scale == 1 || !upsample_steps(scale).is_empty(),
        DatUpsampler::PixelShuffleDirect => scale >= 1,
    };
    if !buildable || scale > MAX_SCALE || num_feat > MAX_CHANNELS {
        return Err(format!(
            "DAT {} upsampler of scale {scale} and {num_feat} features: expected a scale of 1 \
             to {MAX_SCALE} (for pixelshuffle a power of two or 3) and at most {MAX_CHANNELS} \
             features",
            upsampler.name()
        ));
    }
    Ok((upsampler, scale, num_feat))
}

/// Head counts the reference can split the channels into: half of them per window
/// orientation over half the channels, all of them over all the channels in channel blocks.
fn check_heads(p: &DatParams) -> Result<(), Reason> {
    let c = p.embed_dim;
    for (i, (&heads, &depth)) in p.num_heads.iter().zip(&p.depth).enumerate() {
        let window_ok = (c / 2) % (heads / 2) == 0;
        let channel_ok = depth < 2 || c % heads == 0;
        if !window_ok || !channel_ok {
            let source = if depth >= 2 {
                format!("layers.{i}.blocks.1.attn.temperature")
            } else {
                format!("layers.{i}.blocks.0.attn.attns.0.pos.pos3.2.weight")
            };
            return Err(format!(
                "DAT group layers.{i}: the {heads} heads of tensor `{source}` do not divide \
                 embed_dim {c} (half of them over {} channels per window orientation)",
                c / 2
            ));
        }
    }
    if pos_dim(c) == 0 {
        return Err(format!(
            "DAT with embed_dim {c}: no position-bias MLP width"
        ));
    }
    Ok(())
}

/// A DAT state dict of `params`, shapes only (a zero broadcast to each shape, no memory per
/// element) but for the `rpe_biases` tables, which hold the window offsets the split size is
/// read from: for detection tests of full-size layouts.
pub fn synthetic_dat(params: &DatParams) -> crate::error::Result<StateDict> {
    use candle_core::{Device, Tensor};
    let zero = Tensor::zeros((), DType::F32, &Device::Cpu)?;
    let [s0, s1] = params.split_size;
    params
        .state_dict_layout()
        .into_iter()
        .map(|e| {
            let t = if e.name.ends_with("attns.0.rpe_biases") {
                super::pos_bias::offsets_table(s0, s1)?
            } else if e.name.ends_with("attns.1.rpe_biases") {
                super::pos_bias::offsets_table(s1, s0)?
            } else {
                zero.broadcast_as(e.shape.as_slice())?
            };
            Ok((e.name, t))
        })
        .collect()
}

/// Small hyper-parameters for tests: embed 32, depth [2], heads [2], 2×4 windows, x2.
#[cfg(test)]
pub(crate) fn tiny_params() -> DatParams {
    DatParams {
        in_channels: 3,
        embed_dim: 32,
        depth: vec![2],
        num_heads: vec![2],
        split_size: [2, 4],
        expansion_factor: 2.0,
        ffn_hidden: 64,
        qkv_bias: true,
        resi_connection: ResiConnection::OneConv,
        upsampler: DatUpsampler::PixelShuffleDirect,
        num_feat: 32,
        upscale: 2,
        img_range: 1.0,
        img_size: 64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gan::arch::ArchConfig;

    #[test]
    fn reads_back_the_parameters_of_a_synthetic_dict() -> crate::error::Result<()> {
        let mut variants = vec![tiny_params()];
        let mut p = tiny_params();
        p.depth = vec![3, 1];
        p.num_heads = vec![4, 2];
        p.split_size = [4, 4];
        p.qkv_bias = false;
        p.resi_connection = ResiConnection::ThreeConv;
        p.upsampler = DatUpsampler::PixelShuffle;
        p.num_feat = 64;
        p.upscale = 3;
        p.in_channels = 1;
        p.img_size = 16;
        variants.push(p);
        for p in variants {
            let dict = synthetic_dat(&p)?;
            assert!(is_dat(&dict));
            assert_eq!(dat_params(&dict), Ok(p));
        }
        Ok(())
    }

    #[test]
    fn malformed_dicts_are_refused_by_name() -> crate::error::Result<()> {
        let p = tiny_params();
        let zero = candle_core::Tensor::zeros((), DType::F32, &candle_core::Device::Cpu)?;
        let name = "layers.0.blocks.1.ffn.sg.norm.bias";
        let mut dict = synthetic_dat(&p)?;
        dict.remove(name);
        let err = dat_params(&dict).unwrap_err();
        assert!(err.contains(name) && err.contains("missing"), "{err}");
        let mut dict = synthetic_dat(&p)?;
        dict.insert(name.into(), zero.broadcast_as(7)?);
        let err = dat_params(&dict).unwrap_err();
        assert!(
            err.contains(name) && err.contains("[7]") && err.contains("[32]"),
            "{err}"
        );
        // 3×2 windows: the longer side is no multiple of the shorter.
        let mut dict = synthetic_dat(&p)?;
        dict.insert(
            RPE_BIASES.into(),
            super::super::pos_bias::offsets_table(3, 2)?,
        );
        let err = dat_params(&dict).unwrap_err();
        assert!(err.contains("3x2"), "{err}");
        // A tensor the hyper-parameters do not make (spandrel's strict load refuses it).
        let mut dict = synthetic_dat(&p)?;
        dict.insert("layers.0.blocks.0.attn.extra".into(), zero.clone());
        let err = dat_params(&dict).unwrap_err();
        assert!(
            err.contains("unexpected tensor `layers.0.blocks.0.attn.extra`"),
            "{err}"
        );
        // An optional buffer that is there must have its shape.
        let mut dict = synthetic_dat(&p)?;
        let mask = "layers.0.blocks.0.attn.attns.1.relative_position_index";
        dict.insert(mask.into(), zero.broadcast_as((3, 3))?);
        let err = dat_params(&dict).unwrap_err();
        assert!(err.contains(mask), "{err}");
        Ok(())
    }

    /// Every tensor of the layout, left out or grown by one along its first dimension: a
    /// weight is refused by name either way, a buffer may be left out but not misshapen.
    #[test]
    fn every_tensor_is_checked() -> crate::error::Result<()> {
        let mut p = tiny_params();
        p.depth = vec![3];
        p.img_size = 16;
        let zero = candle_core::Tensor::zeros((), DType::F32, &candle_core::Device::Cpu)?;
        for entry in p.state_dict_layout() {
            let mut dict = synthetic_dat(&p)?;
            dict.remove(&entry.name);
            let identifying = IDENTIFYING.contains(&entry.name.as_str());
            match (entry.role, identifying) {
                (_, true) => assert!(!is_dat(&dict), "{}", entry.name),
                (TensorRole::Weight, false) => {
                    // Named, or (where its absence changes what the shapes say: a qkv bias,
                    // `conv_last`, `conv_after_body`) refused for the tensors that no longer fit.
                    let err = dat_params(&dict).unwrap_err();
                    assert!(err.contains("tensor `"), "{}: {err}", entry.name);
                    if !["qkv.bias", "conv_last.weight", "conv_after_body.weight"]
                        .iter()
                        .any(|k| entry.name.ends_with(k))
                    {
                        assert!(err.contains(&entry.name), "{}: {err}", entry.name);
                    }
                }
                (TensorRole::Buffer, false) if entry.name == RPE_BIASES => {
                    assert!(dat_params(&dict).unwrap_err().contains(RPE_BIASES));
                }
                (TensorRole::Buffer, false) if entry.name == MASK => {
                    // img_size falls back to 64, which the other masks (of 16) contradict, as
                    // they would in spandrel's strict load.
                    let err = dat_params(&dict).unwrap_err();
                    assert!(
                        err.contains("attn_mask_1") && err.contains("[512, 8, 8]"),
                        "{err}"
                    );
                }
                (TensorRole::Buffer, false) => {
                    assert_eq!(dat_params(&dict), Ok(p.clone()), "{}", entry.name);
                }
            }
            let mut shape = entry.shape.clone();
            match shape.first_mut() {
                Some(d) => *d += 1,
                None => shape.push(2),
            }
            let mut dict = synthetic_dat(&p)?;
            dict.insert(entry.name.clone(), zero.broadcast_as(shape.as_slice())?);
            let err = dat_params(&dict).unwrap_err();
            assert!(
                err.contains(&entry.name) || entry.name == RPE_BIASES,
                "{}: {err}",
                entry.name
            );
        }
        Ok(())
    }

    #[test]
    fn published_presets_are_named() -> crate::error::Result<()> {
        let light = DatParams {
            embed_dim: 60,
            depth: vec![18],
            num_heads: vec![6],
            split_size: [8, 32],
            ffn_hidden: 120,
            resi_connection: ResiConnection::ThreeConv,
            ..tiny_params()
        };
        let dict = synthetic_dat(&light)?;
        let got = dat_params(&dict).expect("DAT-light detected");
        assert_eq!(got.preset(), Some("DAT-light"));
        assert_eq!(got.size_tag(), "light");
        assert!(
            got.describe().starts_with("DAT x2 (DAT-light:"),
            "{}",
            got.describe()
        );
        Ok(())
    }
}
