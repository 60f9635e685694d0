//! RGT's hyper-parameters read from a state dict, as spandrel 0.4.2's
//! `architectures/RGT/__init__.py` reads them: channels and width from `conv_first.weight`,
//! the groups and their depths from the `layers.N.blocks.N.` indices, each group's heads from
//! its first position-bias MLP (`pos3.2`, half the heads, rounded to a divisor of the width),
//! `qkv_bias` from the presence of `qkv.bias`, `mlp_ratio` and `c_ratio` as ratios of
//! `fc1` and RG-SA's `conv`, the residual convs from `conv_after_body`'s key, the scale from
//! the upsampler's pixel-shuffle convs, and the rectangle window from the sizes of the first
//! `relative_position_index` and `rpe_biases` buffers. Every weight's shape is then checked
//! against them, as PyTorch's strict `load_state_dict` would; the other buffers (indices,
//! `rpe_biases`, the shift masks) are derived data that diffsr computes itself, so they are
//! only checked where present.

use super::config::{ResiConnection, NUM_FEAT};
use super::RgtParams;
use crate::gan::arch::shapes::{dims, expect_shape, Reason, MAX_CHANNELS};
use crate::gan::StateDict;

/// The tensors spandrel's `RGTArch` detects the architecture by (and one of
/// `conv_after_body.weight` / `conv_after_body.0.weight`).
const DETECT_KEYS: [&str; 15] = [
    "conv_first.weight",
    "before_RG.1.weight",
    "layers.0.blocks.0.gamma",
    "layers.0.blocks.0.norm1.weight",
    "layers.0.blocks.0.attn.qkv.weight",
    "layers.0.blocks.0.attn.proj.weight",
    RPE_BIASES,
    RELATIVE_POSITION_INDEX,
    "layers.0.blocks.0.attn.attns.0.pos.pos_proj.weight",
    "layers.0.blocks.0.mlp.fc1.weight",
    "layers.0.blocks.0.mlp.fc2.weight",
    "layers.0.blocks.0.norm2.weight",
    "norm.weight",
    "conv_before_upsample.0.weight",
    "conv_last.weight",
];

const RPE_BIASES: &str = "layers.0.blocks.0.attn.attns.0.rpe_biases";
const RELATIVE_POSITION_INDEX: &str = "layers.0.blocks.0.attn.attns.0.relative_position_index";

/// Most residual groups, and blocks per group, accepted (RGT has 8 × 6, RGT-S 6 × 6).
const MAX_GROUPS: usize = 64;
const MAX_DEPTH: usize = 64;
/// Most tokens per window accepted (RGT's 8 × 32 has 256): the position bias holds
/// heads · tokens² values per branch.
const MAX_WINDOW_TOKENS: usize = 4096;
/// Largest scale accepted (released models are x2 to x4).
const MAX_SCALE: usize = 16;

/// Whether the dict holds all of RGT's identifying tensors.
pub(super) fn is_rgt(dict: &StateDict) -> bool {
    DETECT_KEYS.iter().all(|k| dict.contains_key(*k))
        && (dict.contains_key("conv_after_body.weight")
            || dict.contains_key("conv_after_body.0.weight"))
}

/// spandrel's `get_seq_len(dict, prefix)`: one more than the highest `N` of `prefix.N.*`.
fn seq_len(dict: &StateDict, prefix: &str) -> usize {
    let prefix = format!("{prefix}.");
    dict.keys()
        .filter_map(|k| {
            k.strip_prefix(&prefix)?
                .split('.')
                .next()?
                .parse::<usize>()
                .ok()
        })
        .max()
        .map_or(0, |n| n + 1)
}

/// The first dimension of tensor `name`.
fn first_dim(dict: &StateDict, name: &str) -> Result<usize, Reason> {
    let d = dims(dict, name)?;
    d.first()
        .copied()
        .ok_or_else(|| format!("tensor `{name}` is a scalar; expected at least one dimension"))
}

/// `dims[0] / dims[1]` of a weight, as Python's true division.
fn ratio(dict: &StateDict, name: &str) -> Result<f64, Reason> {
    let d = dims(dict, name)?;
    match d.as_slice() {
        [out, inp, ..] if *inp > 0 => Ok(*out as f64 / *inp as f64),
        _ => Err(format!(
            "tensor `{name}` has shape {d:?}; expected a weight [out, in, ...]"
        )),
    }
}

/// spandrel's `_get_split_size`: the window (a × b, a ≤ b) with a·b tokens (the index's
/// side) and (2a − 1)(2b − 1) relative positions (the bias table's rows); a square one if it
/// fits, else powers of two.
pub(super) fn split_size(tokens: usize, positions: usize) -> Option<[usize; 2]> {
    let fits = |a: usize, b: usize| a * b == tokens && (2 * a - 1) * (2 * b - 1) == positions;
    let square = tokens.isqrt();
    if square > 0 && fits(square, square) {
        return Some([square, square]);
    }
    (1..10).find_map(|i| {
        (i + 1..10)
            .map(|j| (1usize << i, 1usize << j))
            .find(|&(a, b)| fits(a, b))
            .map(|(a, b)| [a, b])
    })
}

/// The group's heads from its Rwin-SA branch's head count (half, rounded down): spandrel
/// takes twice that when it divides the width, else one more.
fn group_heads(embed_dim: usize, heads_half: usize) -> usize {
    if embed_dim % (2 * heads_half) == 0 {
        2 * heads_half
    } else {
        2 * heads_half + 1
    }
}

/// The upsampler's scale, as spandrel's `get_pixelshuffle_params(dict, "upsample")`: the
/// product of `isqrt(out / in)` of `upsample.0/2/4/6/8.weight`.
fn pixelshuffle_scale(dict: &StateDict) -> Result<usize, Reason> {
    let mut scale = 1usize;
    for i in (0..10).step_by(2) {
        let name = format!("upsample.{i}.weight");
        let Some(t) = dict.get(&name) else { break };
        match t.dims() {
            [out, inp, ..] if *inp > 0 => scale = scale.saturating_mul((out / inp).isqrt()),
            d => {
                return Err(format!(
                    "tensor `{name}` has shape {d:?}; expected a conv weight"
                ))
            }
        }
    }
    Ok(scale)
}

/// Whether block `idx` of group `group` is a shifted Rwin-SA block (the reference's
/// condition on `rs_id` and `idx`).
pub(super) fn is_shifted(group: usize, idx: usize) -> bool {
    if group % 2 == 0 {
        idx >= 2 && (idx - 2) % 4 == 0
    } else {
        idx % 4 == 0
    }
}

/// The position-bias MLP's width: `DynamicPosBias(dim // 4)` of a branch of `dim // 2`
/// channels, whose `pos_dim` is a quarter again.
pub(super) fn pos_dim(embed_dim: usize) -> usize {
    embed_dim / 2 / 4 / 4
}

/// Every weight of an RGT of these sizes, with its shape.
pub(super) fn rgt_shapes(p: &RgtParams) -> Vec<(String, Vec<usize>)> {
    let c = p.embed_dim;
    let hidden = p.mlp_hidden();
    let cr = p.reduced_dim();
    let pd = pos_dim(c);
    let mut shapes: Vec<(String, Vec<usize>)> = Vec::new();
    let mut add = |name: String, shape: Vec<usize>| shapes.push((name, shape));
    let biased = |add: &mut dyn FnMut(String, Vec<usize>), prefix: String, shape: Vec<usize>| {
        add(format!("{prefix}.bias"), vec![shape[0]]);
        add(format!("{prefix}.weight"), shape);
    };
    let resi = |add: &mut dyn FnMut(String, Vec<usize>), prefix: &str| match p.resi_connection {
        ResiConnection::OneConv => {
            add(format!("{prefix}.weight"), vec![c, c, 3, 3]);
            add(format!("{prefix}.bias"), vec![c]);
        }
        ResiConnection::ThreeConv => {
            for (i, shape) in [
                vec![c / 4, c, 3, 3],
                vec![c / 4, c / 4, 1, 1],
                vec![c, c / 4, 3, 3],
            ]
            .into_iter()
            .enumerate()
            {
                add(format!("{prefix}.{}.bias", 2 * i), vec![shape[0]]);
                add(format!("{prefix}.{}.weight", 2 * i), shape);
            }
        }
    };
    biased(&mut add, "conv_first".into(), vec![c, p.in_chans, 3, 3]);
    biased(&mut add, "before_RG.1".into(), vec![c]);
    for (g, (&depth, &heads)) in p.depth.iter().zip(&p.num_heads).enumerate() {
        for j in 0..depth {
            let b = format!("layers.{g}.blocks.{j}");
            add(format!("{b}.gamma"), vec![c]);
            biased(&mut add, format!("{b}.norm1"), vec![c]);
            biased(&mut add, format!("{b}.norm2"), vec![c]);
            biased(&mut add, format!("{b}.mlp.fc1"), vec![hidden, c]);
            biased(&mut add, format!("{b}.mlp.sg.norm"), vec![hidden / 2]);
            biased(
                &mut add,
                format!("{b}.mlp.sg.conv"),
                vec![hidden / 2, 1, 3, 3],
            );
            biased(&mut add, format!("{b}.mlp.fc2"), vec![c, hidden / 2]);
            biased(&mut add, format!("{b}.attn.proj"), vec![c, c]);
            let linear =
                |add: &mut dyn FnMut(String, Vec<usize>), name: &str, o: usize, i: usize| {
                    add(format!("{b}.attn.{name}.weight"), vec![o, i]);
                    if p.qkv_bias {
                        add(format!("{b}.attn.{name}.bias"), vec![o]);
                    }
                };
            if j % 2 == 0 {
                linear(&mut add, "qkv", 3 * c, c);
                biased(&mut add, format!("{b}.attn.get_v"), vec![c, 1, 3, 3]);
                for branch in 0..2 {
                    let pos = format!("{b}.attn.attns.{branch}.pos");
                    biased(&mut add, format!("{pos}.pos_proj"), vec![pd, 2]);
                    for k in 1..=3 {
                        biased(&mut add, format!("{pos}.pos{k}.0"), vec![pd]);
                    }
                    biased(&mut add, format!("{pos}.pos1.2"), vec![pd, pd]);
                    biased(&mut add, format!("{pos}.pos2.2"), vec![pd, pd]);
                    biased(&mut add, format!("{pos}.pos3.2"), vec![heads / 2, pd]);
                }
            } else {
                biased(&mut add, format!("{b}.attn.reduction1"), vec![c, 1, 4, 4]);
                biased(&mut add, format!("{b}.attn.dwconv"), vec![c, 1, 3, 3]);
                biased(&mut add, format!("{b}.attn.conv"), vec![cr, c, 1, 1]);
                biased(&mut add, format!("{b}.attn.norm_act.0"), vec![cr]);
                linear(&mut add, "q", cr, c);
                linear(&mut add, "k", cr, cr);
                linear(&mut add, "v", c, cr);
                biased(&mut add, format!("{b}.attn.cpe"), vec![c, 1, 3, 3]);
            }
        }
        resi(&mut add, &format!("layers.{g}.conv"));
    }
    biased(&mut add, "norm".into(), vec![c]);
    resi(&mut add, "conv_after_body");
    biased(
        &mut add,
        "conv_before_upsample.0".into(),
        vec![NUM_FEAT, c, 3, 3],
    );
    for (i, factor) in upsample_stages(p.upscale).into_iter().enumerate() {
        biased(
            &mut add,
            format!("upsample.{}", 2 * i),
            vec![factor * factor * NUM_FEAT, NUM_FEAT, 3, 3],
        );
    }
    biased(
        &mut add,
        "conv_last".into(),
        vec![p.in_chans, NUM_FEAT, 3, 3],
    );
    shapes
}

/// The reference's `Upsample(scale, 64)`: pixel-shuffle factors, ×2 stages for a power of
/// two, one ×3 stage for 3 (none for 1). Other scales are refused by detection.
pub(super) fn upsample_stages(scale: usize) -> Vec<usize> {
    if scale == 3 {
        vec![3]
    } else {
        vec![2; scale.max(1).trailing_zeros() as usize]
    }
}

/// The shapes of the derived buffers of Rwin-SA block `prefix` (`…attn`) with a window of
/// `tokens` tokens and `positions` relative positions.
fn buffer_shapes(prefix: &str, tokens: usize, positions: usize) -> [(String, Vec<usize>); 4] {
    let branch = |i: usize, leaf: &str| format!("{prefix}.attns.{i}.{leaf}");
    [
        (branch(0, "relative_position_index"), vec![tokens, tokens]),
        (branch(1, "relative_position_index"), vec![tokens, tokens]),
        (branch(0, "rpe_biases"), vec![positions, 2]),
        (branch(1, "rpe_biases"), vec![positions, 2]),
    ]
}

/// Refuses hyper-parameters the reference cannot build or run (its modules assert or its
/// reshapes fail), with the reason.
fn check_buildable(p: &RgtParams) -> Result<(), Reason> {
    let c = p.embed_dim;
    if c % 2 != 0 || pos_dim(c) == 0 {
        return Err(format!(
            "RGT embed_dim {c}: the Rwin-SA branches split it in two halves with a position \
             bias of dim / 32 features, so it must be even and at least 32"
        ));
    }
    if p.resi_connection == ResiConnection::ThreeConv && c < 4 {
        return Err(format!(
            "RGT embed_dim {c} is too small for the 3conv residual"
        ));
    }
    let hidden = p.mlp_hidden();
    if hidden < 2 || hidden % 2 != 0 {
        return Err(format!(
            "RGT MLP width {hidden}: its gate splits it in two halves, so it must be even"
        ));
    }
    let cr = p.reduced_dim();
    for (g, (&depth, &heads)) in p.depth.iter().zip(&p.num_heads).enumerate() {
        let branch_heads = heads / 2;
        if branch_heads == 0 || (c / 2) % branch_heads != 0 {
            return Err(format!(
                "RGT group {g}: {heads} heads; each Rwin-SA branch has {branch_heads}, which \
                 must divide its {} channels",
                c / 2
            ));
        }
        if depth >= 2 && (c % heads != 0 || cr == 0 || cr % heads != 0) {
            return Err(format!(
                "RGT group {g}: {heads} heads must divide RG-SA's {c} and {cr} channels"
            ));
        }
    }
    Ok(())
}

/// The hyper-parameters of a dict that [`is_rgt`], after every weight's shape has been
/// checked against them.
pub(super) fn rgt_params(dict: &StateDict) -> Result<RgtParams, Reason> {
    let first = dims(dict, "conv_first.weight")?;
    let (embed_dim, in_chans) = match first.as_slice() {
        [c, i, 3, 3] if (1..=MAX_CHANNELS).contains(c) && (1..=4).contains(i) => (*c, *i),
        _ => {
            return Err(format!(
                "tensor `conv_first.weight` has shape {first:?}; expected a 3x3 conv weight \
                 [dim, channels, 3, 3] with 1 to 4 image channels and up to {MAX_CHANNELS} \
                 features"
            ))
        }
    };
    let groups = seq_len(dict, "layers");
    if !(1..=MAX_GROUPS).contains(&groups) {
        return Err(format!(
            "RGT with {groups} residual groups: 1 to {MAX_GROUPS} are supported"
        ));
    }
    let mut depth = Vec::with_capacity(groups);
    let mut num_heads = Vec::with_capacity(groups);
    for g in 0..groups {
        let d = seq_len(dict, &format!("layers.{g}.blocks"));
        if !(1..=MAX_DEPTH).contains(&d) {
            return Err(format!(
                "RGT group {g} has {d} blocks (layers.{g}.blocks.N): 1 to {MAX_DEPTH} are \
                 supported"
            ));
        }
        depth.push(d);
        let pos3 = format!("layers.{g}.blocks.0.attn.attns.0.pos.pos3.2.weight");
        let heads_half = first_dim(dict, &pos3)?;
        if !(1..=MAX_CHANNELS).contains(&heads_half) {
            return Err(format!(
                "tensor `{pos3}` has {heads_half} outputs; expected 1 to {MAX_CHANNELS} heads"
            ));
        }
        num_heads.push(group_heads(embed_dim, heads_half));
    }
    let qkv_bias = dict.contains_key("layers.0.blocks.0.attn.qkv.bias");
    let mlp_ratio = ratio(dict, "layers.0.blocks.0.mlp.fc1.weight")?;
    let resi_connection = if dict.contains_key("conv_after_body.weight") {
        ResiConnection::OneConv
    } else {
        ResiConnection::ThreeConv
    };
    // Only defined by a group with an RG-SA block; spandrel's default otherwise.
    let c_ratio = match depth.iter().position(|&d| d >= 2) {
        Some(g) => ratio(dict, &format!("layers.{g}.blocks.1.attn.conv.weight"))?,
        None => 0.5,
    };
    let upscale = pixelshuffle_scale(dict)?;
    if !(upscale.is_power_of_two() || upscale == 3) || upscale > MAX_SCALE {
        return Err(format!(
            "RGT upsampler of scale {upscale} (upsample.N.weight): the reference builds powers \
             of two up to {MAX_SCALE} and 3"
        ));
    }
    let tokens = first_dim(dict, RELATIVE_POSITION_INDEX)?;
    let positions = first_dim(dict, RPE_BIASES)?;
    let split = split_size(tokens, positions)
        .filter(|s| s[0] * s[1] <= MAX_WINDOW_TOKENS)
        .ok_or_else(|| {
            format!(
                "tensors `{RELATIVE_POSITION_INDEX}` ({tokens} tokens) and `{RPE_BIASES}` \
                 ({positions} positions) fit no window of at most {MAX_WINDOW_TOKENS} tokens"
            )
        })?;
    let p = RgtParams {
        in_chans,
        embed_dim,
        depth,
        num_heads,
        mlp_ratio,
        qkv_bias,
        upscale,
        resi_connection,
        split_size: split,
        c_ratio,
    };
    check_buildable(&p)?;
    for (name, shape) in rgt_shapes(&p) {
        expect_shape(dict, &name, &shape)?;
    }
    let positions = (2 * split[0] - 1) * (2 * split[1] - 1);
    for (g, &d) in p.depth.iter().enumerate() {
        for j in (0..d).step_by(2) {
            let prefix = format!("layers.{g}.blocks.{j}.attn");
            for (name, shape) in buffer_shapes(&prefix, tokens, positions) {
                if dict.contains_key(&name) {
                    expect_shape(dict, &name, &shape)?;
                }
            }
        }
    }
    Ok(p)
}

/// An RGT state dict of these hyper-parameters, shapes only (zeros), with the detected
/// buffers of the first block.
#[cfg(test)]
pub(crate) fn synthetic_rgt(p: &RgtParams) -> StateDict {
    use candle_core::{DType, Device, Tensor};
    let zeros = |s: Vec<usize>| Tensor::zeros(s, DType::F32, &Device::Cpu).unwrap();
    let mut dict: StateDict = rgt_shapes(p)
        .into_iter()
        .map(|(k, s)| (k, zeros(s)))
        .collect();
    let [a, b] = p.split_size;
    let tokens = a * b;
    let positions = (2 * a - 1) * (2 * b - 1);
    for (name, shape) in buffer_shapes("layers.0.blocks.0.attn", tokens, positions) {
        dict.insert(name, zeros(shape));
    }
    dict
}

/// RGT-S's hyper-parameters at another width / depth, for tests.
#[cfg(test)]
pub(crate) fn small_params(embed_dim: usize, depth: Vec<usize>, upscale: usize) -> RgtParams {
    let groups = depth.len();
    RgtParams {
        in_chans: 3,
        embed_dim,
        depth,
        num_heads: vec![6; groups],
        mlp_ratio: 2.0,
        qkv_bias: true,
        upscale,
        resi_connection: ResiConnection::OneConv,
        split_size: [8, 32],
        c_ratio: 0.5,
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, Tensor};

    use super::*;

    #[test]
    fn split_sizes_as_spandrel_solves_them() {
        assert_eq!(split_size(64, 225), Some([8, 8]));
        assert_eq!(split_size(256, 15 * 63), Some([8, 32]));
        assert_eq!(split_size(8, 3 * 7), Some([2, 4]));
        assert_eq!(split_size(16, 7 * 7), Some([4, 4]));
        assert_eq!(split_size(1, 1), Some([1, 1]));
        // 6 × 4 is no power-of-two pair with a < b, and 24 no square.
        assert_eq!(split_size(24, 11 * 7), None);
        assert_eq!(split_size(0, 0), None);
    }

    #[test]
    fn shifted_blocks_follow_the_group_parity() {
        let even: Vec<usize> = (0..12).filter(|&j| is_shifted(0, j)).collect();
        let odd: Vec<usize> = (0..12).filter(|&j| is_shifted(3, j)).collect();
        assert_eq!(even, [2, 6, 10]);
        assert_eq!(odd, [0, 4, 8]);
    }

    #[test]
    fn heads_are_read_as_spandrel_rounds_them() {
        assert_eq!(group_heads(180, 3), 6);
        assert_eq!(group_heads(64, 2), 4);
        // 3 heads: the branches have 1 each; 2 divides 66, so spandrel reads 2.
        assert_eq!(group_heads(66, 1), 2);
        assert_eq!(group_heads(45, 1), 3);
    }

    /// RGT-S and RGT (spandrel's test shapes), and a tiny 3conv model with other options.
    #[test]
    fn reads_every_hyper_parameter_from_shapes() {
        let rgt_s = small_params(180, vec![6; 6], 4);
        let rgt = RgtParams {
            depth: vec![6; 8],
            num_heads: vec![6; 8],
            upscale: 2,
            ..rgt_s.clone()
        };
        let tiny = RgtParams {
            in_chans: 1,
            embed_dim: 64,
            depth: vec![3, 1],
            num_heads: vec![2, 4],
            mlp_ratio: 1.5,
            qkv_bias: false,
            upscale: 3,
            resi_connection: ResiConnection::ThreeConv,
            split_size: [2, 4],
            c_ratio: 0.25,
        };
        // No group deep enough for RG-SA: c_ratio is spandrel's default.
        let shallow = RgtParams {
            depth: vec![1],
            num_heads: vec![4],
            c_ratio: 0.5,
            upscale: 1,
            split_size: [4, 4],
            ..tiny.clone()
        };
        for p in [rgt_s, rgt, tiny, shallow] {
            let dict = synthetic_rgt(&p);
            assert!(is_rgt(&dict));
            assert_eq!(rgt_params(&dict).unwrap(), p);
        }
    }

    #[test]
    fn a_missing_or_mis_shaped_tensor_is_named() {
        let p = small_params(48, vec![2, 2], 2);
        let mut dict = synthetic_rgt(&p);
        dict.remove("layers.1.blocks.1.attn.cpe.bias");
        let err = rgt_params(&dict).unwrap_err();
        assert!(err.contains("layers.1.blocks.1.attn.cpe.bias"), "{err}");
        let mut dict = synthetic_rgt(&p);
        let bad = Tensor::zeros((48, 1, 3, 3), DType::F32, &Device::Cpu).unwrap();
        dict.insert("layers.0.blocks.1.attn.reduction1.weight".into(), bad);
        let err = rgt_params(&dict).unwrap_err();
        assert!(
            err.contains("reduction1.weight")
                && err.contains("[48, 1, 3, 3]")
                && err.contains("[48, 1, 4, 4]"),
            "{err}"
        );
        // A buffer of another window than the first block's.
        let mut dict = synthetic_rgt(&p);
        let bad = Tensor::zeros((64, 64), DType::F32, &Device::Cpu).unwrap();
        dict.insert(
            "layers.1.blocks.0.attn.attns.1.relative_position_index".into(),
            bad,
        );
        let err = rgt_params(&dict).unwrap_err();
        assert!(
            err.contains("[64, 64]") && err.contains("[256, 256]"),
            "{err}"
        );
    }

    #[test]
    fn unbuildable_models_are_refused() {
        // Scale 6 (×2 then ×3 stages) is no scale the reference builds.
        let mut dict = synthetic_rgt(&small_params(48, vec![2], 2));
        let six = Tensor::zeros((576, 64, 3, 3), DType::F32, &Device::Cpu).unwrap();
        dict.insert("upsample.2.weight".into(), six);
        assert!(rgt_params(&dict).unwrap_err().contains("scale 6"));
        // Width 24: no position-bias features.
        let err = rgt_params(&synthetic_rgt(&small_params(24, vec![1], 2))).unwrap_err();
        assert!(err.contains("embed_dim 24"), "{err}");
    }
}
