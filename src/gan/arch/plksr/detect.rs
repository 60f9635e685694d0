//! PLKSR's and RealPLKSR's hyper-parameters read from a state dict, as spandrel 0.4.2's
//! `architectures/PLKSR/__init__.py` reads them: `dim` from `feats.0`, the depth from the
//! length of `feats`, the scale from the last conv's outputs (3·s²), EA from
//! `feats.1.attn.f.0`, the mixer from its kernel sides, the large kernel's kind, side and
//! channels from `feats.1.lk`, RealPLKSR's layer norm and DySample from their tensors. Every
//! other tensor's shape is then checked against them, so a malformed file is refused by name
//! before anything is built.

use super::config::{
    CcmType, LkType, PlksrParams, SPARSE_DILATIONS, SPARSE_KERNEL, SPARSE_REPORTED_KERNEL,
};
use super::real_config::{RealPlksrParams, NORM_GROUPS};
use crate::gan::arch::shapes::{dims, expect_shape, Reason, MAX_CHANNELS};
use crate::gan::StateDict;

/// Most blocks: the published models have 12 and 28.
pub(crate) const MAX_BLOCKS: usize = 256;
/// Largest kernel side: the published models use 13 and 17, spandrel's tests up to 27.
pub(crate) const MAX_KERNEL: usize = 63;
/// Largest scale (the last conv has 3·s² outputs).
pub(crate) const MAX_SCALE: usize = 16;

/// Whether the dict holds the tensors spandrel's `PLKSRArch` detects both networks by.
pub(super) fn is_plksr_family(dict: &StateDict) -> bool {
    let has = |k: &str| dict.contains_key(k);
    has("feats.0.weight")
        && (has("feats.1.lk.conv.weight")
            || has("feats.1.lk.convs.0.weight")
            || has("feats.1.lk.mn_conv.weight"))
        && has("feats.1.refine.weight")
        && (has("feats.1.channe_mixer.0.weight") || has("feats.1.channel_mixer.0.weight"))
}

/// PLKSR spells its mixer `channe_mixer` (the original code's typo), RealPLKSR
/// `channel_mixer`; spandrel checks the former first.
pub(super) fn has_plksr_mixer(dict: &StateDict) -> bool {
    dict.contains_key("feats.1.channe_mixer.0.weight")
}

/// What both networks read alike.
struct Common {
    dim: usize,
    /// `get_seq_len(state_dict, "feats")`: the highest `feats.N` index plus one.
    feats: usize,
    scale: usize,
    use_ea: bool,
}

fn common(dict: &StateDict, tail_offset: usize) -> Result<Common, Reason> {
    let head = dims(dict, "feats.0.weight")?;
    let dim = match head.as_slice() {
        [dim, 3, 3, 3] if (1..=MAX_CHANNELS).contains(dim) => *dim,
        _ => {
            return Err(format!(
                "tensor `feats.0.weight` has shape {head:?}; expected a 3x3 conv from 3 image \
                 channels to 1 to {MAX_CHANNELS} features, [dim, 3, 3, 3]"
            ))
        }
    };
    let feats = dict
        .keys()
        .filter_map(|k| {
            k.strip_prefix("feats.")?
                .split('.')
                .next()?
                .parse::<usize>()
                .ok()
        })
        .max()
        .map_or(0, |i| i + 1);
    if feats < tail_offset + 1 || feats - tail_offset - 1 > MAX_BLOCKS {
        return Err(format!(
            "`feats` has {feats} entries: expected the head conv, 1 to {MAX_BLOCKS} blocks and \
             the tail"
        ));
    }
    let last = format!("feats.{}.weight", feats - 1);
    let tail = dims(dict, &last)?;
    let scale = match tail.as_slice() {
        [out, _, 3, 3] => (*out / 3).isqrt(),
        _ => 0,
    };
    if !(1..=MAX_SCALE).contains(&scale) {
        return Err(format!(
            "tensor `{last}` has shape {tail:?}; expected the last 3x3 conv, to 3·scale² \
             channels for a scale of 1 to {MAX_SCALE}"
        ));
    }
    // spandrel builds 3·s² outputs from the floor of the square root; anything else fails
    // its strict load, so it is refused here by name.
    expect_conv(
        dict,
        &format!("feats.{}", feats - 1),
        [3 * scale * scale, dim, 3, 3],
    )?;
    expect_conv(dict, "feats.0", [dim, 3, 3, 3])?;
    Ok(Common {
        dim,
        feats,
        scale,
        // spandrel reads the weight; either tensor marks EA here, so that a file missing
        // the other is refused by name rather than run without its attention.
        use_ea: has_any(dict, &["feats.1.attn.f.0.weight", "feats.1.attn.f.0.bias"]),
    })
}

fn has_any(dict: &StateDict, keys: &[&str]) -> bool {
    keys.iter().any(|k| dict.contains_key(*k))
}

/// `prefix.weight` of `shape` and `prefix.bias` of its output channels.
fn expect_conv(dict: &StateDict, prefix: &str, shape: [usize; 4]) -> Result<(), Reason> {
    expect_shape(dict, &format!("{prefix}.weight"), &shape)?;
    expect_shape(dict, &format!("{prefix}.bias"), &shape[..1])
}

/// The large kernel's channels (`pdim`) from its first conv `name` ([pdim, pdim, k, k']).
fn lk_channels(dict: &StateDict, name: &str, dim: usize) -> Result<(usize, usize), Reason> {
    let d = dims(dict, name)?;
    match d.as_slice() {
        [p, q, k, _] if p == q && (1..=dim).contains(p) && (1..=MAX_KERNEL).contains(k) => {
            Ok((*p, *k))
        }
        _ => Err(format!(
            "tensor `{name}` has shape {d:?}; expected a [pdim, pdim, k, k] conv over 1 to \
             {dim} of the {dim} features, k up to {MAX_KERNEL}"
        )),
    }
}

/// Refuses even kernel sides: with padding k / 2 they grow the map by a pixel, which
/// PyTorch cannot write back into the sliced channels either.
fn odd_kernel(name: &str, k: usize) -> Result<(), Reason> {
    if k % 2 == 0 {
        return Err(format!(
            "`{name}` has an even kernel side {k}: PLKSR's 'same' padding needs an odd one"
        ));
    }
    Ok(())
}

/// The element-wise attention and refinement every block ends with.
fn expect_attn_refine(dict: &StateDict, b: &str, dim: usize, use_ea: bool) -> Result<(), Reason> {
    if use_ea {
        expect_conv(dict, &format!("{b}.attn.f.0"), [dim, dim, 3, 3])?;
    }
    expect_conv(dict, &format!("{b}.refine"), [dim, dim, 1, 1])
}

/// The hyper-parameters of a dict that [`is_plksr_family`] and [`has_plksr_mixer`].
pub(super) fn plksr_params(dict: &StateDict) -> Result<PlksrParams, Reason> {
    let c = common(dict, 1)?;
    let dim = c.dim;
    let side = |name: &str| -> Result<usize, Reason> {
        let d = dims(dict, name)?;
        match d.as_slice() {
            [_, _, k, _] => Ok(*k),
            _ => Err(format!(
                "tensor `{name}` has shape {d:?}; expected a conv weight"
            )),
        }
    };
    let ccm_type = match (
        side("feats.1.channe_mixer.0.weight")?,
        side("feats.1.channe_mixer.2.weight")?,
    ) {
        (3, 1) => CcmType::Ccm,
        (3, 3) => CcmType::Dccm,
        (1, 3) => CcmType::Iccm,
        (a, b) => {
            return Err(format!(
                "unknown channel mixer: `feats.1.channe_mixer.0` is {a}x{a} and `.2` is {b}x{b}; \
                 expected 3 and 1 (CCM), 3 and 3 (DCCM) or 1 and 3 (ICCM)"
            ))
        }
    };
    let (lk_type, pdim, kernel_size) = if dict.contains_key("feats.1.lk.conv.weight") {
        let (p, k) = lk_channels(dict, "feats.1.lk.conv.weight", dim)?;
        (LkType::Plk, p, k)
    } else if dict.contains_key("feats.1.lk.convs.0.weight") {
        let (p, _) = lk_channels(dict, "feats.1.lk.convs.0.weight", dim)?;
        (LkType::SparsePlk, p, SPARSE_REPORTED_KERNEL)
    } else {
        let (p, k) = lk_channels(dict, "feats.1.lk.mn_conv.weight", dim)?;
        (LkType::RectSparsePlk, p, k)
    };
    odd_kernel("feats.1.lk", kernel_size)?;
    if lk_type == LkType::RectSparsePlk {
        odd_kernel("feats.1.lk.nn_conv", kernel_size / 3)?;
    }
    if lk_type == LkType::SparsePlk
        && dict.contains_key(&format!(
            "feats.1.lk.convs.{}.weight",
            SPARSE_DILATIONS.len()
        ))
    {
        return Err(format!(
            "`feats.1.lk.convs` has more than {} convs: a SparsePLK with `use_max_kernel` or \
             other sparse kernels, which the weights cannot describe (spandrel builds four 5x5 \
             convs dilated 1 to 4)",
            SPARSE_DILATIONS.len()
        ));
    }
    let n_blocks = c.feats - 2;
    let (k0, k1) = ccm_type.kernels();
    for i in 1..=n_blocks {
        let b = format!("feats.{i}");
        expect_conv(dict, &format!("{b}.channe_mixer.0"), [2 * dim, dim, k0, k0])?;
        expect_conv(dict, &format!("{b}.channe_mixer.2"), [dim, 2 * dim, k1, k1])?;
        let (p, k) = (pdim, kernel_size);
        match lk_type {
            LkType::Plk => expect_conv(dict, &format!("{b}.lk.conv"), [p, p, k, k])?,
            LkType::SparsePlk => {
                for j in 0..SPARSE_DILATIONS.len() {
                    let s = SPARSE_KERNEL;
                    expect_conv(dict, &format!("{b}.lk.convs.{j}"), [p, p, s, s])?;
                }
            }
            LkType::RectSparsePlk => {
                let n = k / 3;
                expect_conv(dict, &format!("{b}.lk.mn_conv"), [p, p, k, n])?;
                expect_conv(dict, &format!("{b}.lk.nm_conv"), [p, p, n, k])?;
                expect_conv(dict, &format!("{b}.lk.nn_conv"), [p, p, n, n])?;
            }
        }
        expect_attn_refine(dict, &b, dim, c.use_ea)?;
    }
    Ok(PlksrParams {
        dim,
        n_blocks,
        scale: c.scale,
        ccm_type,
        lk_type,
        kernel_size,
        pdim,
        use_ea: c.use_ea,
    })
}

/// The hyper-parameters of a dict that [`is_plksr_family`] and not [`has_plksr_mixer`].
pub(super) fn real_plksr_params(dict: &StateDict) -> Result<RealPlksrParams, Reason> {
    // The tail sits after a Dropout2d, which takes an index and holds no tensor.
    let c = common(dict, 2)?;
    let dim = c.dim;
    let (pdim, kernel_size) = lk_channels(dict, "feats.1.lk.conv.weight", dim)?;
    odd_kernel("feats.1.lk.conv", kernel_size)?;
    // spandrel tests `feats.1.layer_norm.bias` and `to_img.init_pos`; any of their module's
    // tensors marks them here, so that a file missing one is refused naming it rather than
    // run as another variant.
    let layer_norm = has_any(
        dict,
        &["feats.1.layer_norm.bias", "feats.1.layer_norm.weight"],
    );
    let dysample = dict.keys().any(|k| k.starts_with("to_img."));
    if !layer_norm && dim % NORM_GROUPS != 0 {
        return Err(format!(
            "RealPLKSR with {dim} features and no layer norm: its GroupNorm needs a multiple \
             of {NORM_GROUPS}"
        ));
    }
    let n_blocks = c.feats - 3;
    for i in 1..=n_blocks {
        let b = format!("feats.{i}");
        let norm = if layer_norm { "layer_norm" } else { "norm" };
        expect_shape(dict, &format!("{b}.{norm}.weight"), &[dim])?;
        expect_shape(dict, &format!("{b}.{norm}.bias"), &[dim])?;
        expect_conv(dict, &format!("{b}.channel_mixer.0"), [2 * dim, dim, 3, 3])?;
        expect_conv(dict, &format!("{b}.channel_mixer.2"), [dim, 2 * dim, 3, 3])?;
        let (p, k) = (pdim, kernel_size);
        expect_conv(dict, &format!("{b}.lk.conv"), [p, p, k, k])?;
        expect_attn_refine(dict, &b, dim, c.use_ea)?;
    }
    let params = RealPlksrParams {
        dim,
        n_blocks,
        scale: c.scale,
        kernel_size,
        pdim,
        use_ea: c.use_ea,
        layer_norm,
        dysample,
    };
    if dysample {
        expect_dysample(dict, &params)?;
    }
    Ok(params)
}

/// DySample's tensors for RealPLKSR's choice: 3·s² channels in, `groups` from the scale, an
/// end conv to 3 channels unless the scale is 1.
fn expect_dysample(dict: &StateDict, p: &RealPlksrParams) -> Result<(), Reason> {
    let s2 = p.scale * p.scale;
    let (c, offsets) = (3 * s2, 2 * p.dysample_groups() * s2);
    expect_conv(dict, "to_img.offset", [offsets, c, 1, 1])?;
    expect_shape(dict, "to_img.scope.weight", &[offsets, c, 1, 1])?;
    expect_shape(dict, "to_img.init_pos", &[1, offsets, 1, 1])?;
    if p.scale != 1 {
        expect_conv(dict, "to_img.end_conv", [3, c, 1, 1])?;
    }
    Ok(())
}

/// Zero tensors of the given shapes, for the detection tests.
#[cfg(test)]
fn zeros_dict(shapes: Vec<(String, Vec<usize>)>) -> StateDict {
    use candle_core::{DType, Device, Tensor};
    shapes
        .into_iter()
        .map(|(k, s)| (k, Tensor::zeros(s, DType::F32, &Device::Cpu).unwrap()))
        .collect()
}

#[cfg(test)]
fn conv_shapes(out: &mut Vec<(String, Vec<usize>)>, prefix: &str, shape: [usize; 4]) {
    out.push((format!("{prefix}.weight"), shape.to_vec()));
    out.push((format!("{prefix}.bias"), vec![shape[0]]));
}

/// The smallest PLKSR state dict of the given kinds, shapes only (zeros): dim 8, pdim 2,
/// kernel 5 (RectSparsePLK: 9), EA, `n_blocks` blocks, ×`scale`.
#[cfg(test)]
pub(crate) fn synthetic_plksr(
    ccm: CcmType,
    lk: LkType,
    n_blocks: usize,
    scale: usize,
) -> StateDict {
    let (dim, p) = (8, 2);
    let mut s = Vec::new();
    conv_shapes(&mut s, "feats.0", [dim, 3, 3, 3]);
    let (k0, k1) = ccm.kernels();
    for i in 1..=n_blocks {
        let b = format!("feats.{i}");
        conv_shapes(
            &mut s,
            &format!("{b}.channe_mixer.0"),
            [2 * dim, dim, k0, k0],
        );
        conv_shapes(
            &mut s,
            &format!("{b}.channe_mixer.2"),
            [dim, 2 * dim, k1, k1],
        );
        match lk {
            LkType::Plk => conv_shapes(&mut s, &format!("{b}.lk.conv"), [p, p, 5, 5]),
            LkType::SparsePlk => {
                for j in 0..4 {
                    conv_shapes(&mut s, &format!("{b}.lk.convs.{j}"), [p, p, 5, 5]);
                }
            }
            LkType::RectSparsePlk => {
                conv_shapes(&mut s, &format!("{b}.lk.mn_conv"), [p, p, 9, 3]);
                conv_shapes(&mut s, &format!("{b}.lk.nm_conv"), [p, p, 3, 9]);
                conv_shapes(&mut s, &format!("{b}.lk.nn_conv"), [p, p, 3, 3]);
            }
        }
        conv_shapes(&mut s, &format!("{b}.attn.f.0"), [dim, dim, 3, 3]);
        conv_shapes(&mut s, &format!("{b}.refine"), [dim, dim, 1, 1]);
    }
    let tail = format!("feats.{}", n_blocks + 1);
    conv_shapes(&mut s, &tail, [3 * scale * scale, dim, 3, 3]);
    zeros_dict(s)
}

/// The smallest RealPLKSR state dict, shapes only (zeros): dim 8, pdim 2, kernel 5, no EA,
/// `n_blocks` blocks, ×`scale`, with layer norm and DySample as asked.
#[cfg(test)]
pub(crate) fn synthetic_real_plksr(
    n_blocks: usize,
    scale: usize,
    layer_norm: bool,
    dysample: bool,
) -> StateDict {
    let (dim, p) = (8, 2);
    let mut s = Vec::new();
    conv_shapes(&mut s, "feats.0", [dim, 3, 3, 3]);
    for i in 1..=n_blocks {
        let b = format!("feats.{i}");
        let norm = if layer_norm { "layer_norm" } else { "norm" };
        s.push((format!("{b}.{norm}.weight"), vec![dim]));
        s.push((format!("{b}.{norm}.bias"), vec![dim]));
        conv_shapes(
            &mut s,
            &format!("{b}.channel_mixer.0"),
            [2 * dim, dim, 3, 3],
        );
        conv_shapes(
            &mut s,
            &format!("{b}.channel_mixer.2"),
            [dim, 2 * dim, 3, 3],
        );
        conv_shapes(&mut s, &format!("{b}.lk.conv"), [p, p, 5, 5]);
        conv_shapes(&mut s, &format!("{b}.refine"), [dim, dim, 1, 1]);
    }
    let s2 = scale * scale;
    conv_shapes(
        &mut s,
        &format!("feats.{}", n_blocks + 2),
        [3 * s2, dim, 3, 3],
    );
    if dysample {
        let g = if scale % 2 == 1 { 3 } else { 4 };
        conv_shapes(&mut s, "to_img.offset", [2 * g * s2, 3 * s2, 1, 1]);
        s.push(("to_img.scope.weight".into(), vec![2 * g * s2, 3 * s2, 1, 1]));
        s.push(("to_img.init_pos".into(), vec![1, 2 * g * s2, 1, 1]));
        if scale != 1 {
            conv_shapes(&mut s, "to_img.end_conv", [3, 3 * s2, 1, 1]);
        }
    }
    zeros_dict(s)
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, Tensor};

    use super::*;

    #[test]
    fn reads_every_plksr_option() {
        for ccm in [CcmType::Ccm, CcmType::Iccm, CcmType::Dccm] {
            for lk in [LkType::Plk, LkType::SparsePlk, LkType::RectSparsePlk] {
                let dict = synthetic_plksr(ccm, lk, 2, 3);
                assert!(is_plksr_family(&dict) && has_plksr_mixer(&dict));
                let p = plksr_params(&dict).unwrap();
                let kernel = match lk {
                    LkType::Plk => 5,
                    LkType::SparsePlk => 17,
                    LkType::RectSparsePlk => 9,
                };
                assert_eq!(
                    p,
                    PlksrParams {
                        dim: 8,
                        n_blocks: 2,
                        scale: 3,
                        ccm_type: ccm,
                        lk_type: lk,
                        kernel_size: kernel,
                        pdim: 2,
                        use_ea: true,
                    }
                );
            }
        }
    }

    #[test]
    fn reads_every_real_plksr_option() {
        for (scale, layer_norm, dysample) in [
            (4, false, false),
            (2, true, true),
            (3, false, true),
            (1, true, true),
        ] {
            let dict = synthetic_real_plksr(2, scale, layer_norm, dysample);
            assert!(is_plksr_family(&dict) && !has_plksr_mixer(&dict));
            let p = real_plksr_params(&dict).unwrap();
            assert_eq!(
                p,
                RealPlksrParams {
                    dim: 8,
                    n_blocks: 2,
                    scale,
                    kernel_size: 5,
                    pdim: 2,
                    use_ea: false,
                    layer_norm,
                    dysample,
                }
            );
        }
    }

    #[test]
    fn malformed_dicts_are_refused_by_name() {
        let zeros = |s: &[usize]| Tensor::zeros(s, DType::F32, &Device::Cpu).unwrap();
        let mut dict = synthetic_plksr(CcmType::Dccm, LkType::SparsePlk, 1, 2);
        dict.insert("feats.1.lk.convs.4.weight".into(), zeros(&[2, 2, 5, 5]));
        let err = plksr_params(&dict).unwrap_err();
        assert!(err.contains("use_max_kernel"), "{err}");

        let mut dict = synthetic_plksr(CcmType::Ccm, LkType::Plk, 1, 2);
        dict.insert(
            "feats.1.channe_mixer.2.weight".into(),
            zeros(&[8, 16, 5, 5]),
        );
        let err = plksr_params(&dict).unwrap_err();
        assert!(err.contains("unknown channel mixer"), "{err}");

        let mut dict = synthetic_plksr(CcmType::Ccm, LkType::Plk, 1, 2);
        dict.insert("feats.1.lk.conv.weight".into(), zeros(&[2, 2, 4, 4]));
        let err = plksr_params(&dict).unwrap_err();
        assert!(err.contains("even kernel"), "{err}");

        let mut dict = synthetic_plksr(CcmType::Ccm, LkType::Plk, 1, 2);
        dict.insert("feats.2.weight".into(), zeros(&[13, 8, 3, 3]));
        let err = plksr_params(&dict).unwrap_err();
        assert!(
            err.contains("feats.2.weight") && err.contains("[13, 8, 3, 3]"),
            "{err}"
        );

        let mut dict = synthetic_real_plksr(1, 2, false, true);
        dict.remove("to_img.scope.weight");
        let err = real_plksr_params(&dict).unwrap_err();
        assert!(
            err.contains("missing tensor `to_img.scope.weight`"),
            "{err}"
        );
    }
}
