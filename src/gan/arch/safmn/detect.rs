//! SAFMN's hyper-parameters read from a state dict, as spandrel 0.4.2's
//! `architectures/SAFMN/__init__.py` reads them: `dim` from `to_feat.weight`, the block count
//! from the highest `feats.N.` index, the CCM's width (hence `ffn_scale`) from
//! `feats.0.ccm.ccm.0.weight`, the scale from `to_img.0.weight`'s 3·scale² outputs. Every
//! tensor's shape is then checked against them, as PyTorch's strict `load_state_dict` would.

use super::config::LEVELS;
use super::SafmnParams;
use crate::gan::arch::shapes::{dims, expect_shape, Reason, MAX_CHANNELS};
use crate::gan::StateDict;

/// The tensors spandrel's `SAFMNArch` detects the architecture by.
const DETECT_KEYS: [&str; 9] = [
    "to_feat.weight",
    "feats.0.norm1.weight",
    "feats.0.norm2.weight",
    "feats.0.safm.mfr.0.weight",
    "feats.0.safm.mfr.3.weight",
    "feats.0.safm.aggr.weight",
    "feats.0.ccm.ccm.0.weight",
    "feats.0.ccm.ccm.2.weight",
    "to_img.0.weight",
];

/// Most blocks accepted: the released models have 8 (SAFMN) or 16 (SAFMN-L).
const MAX_BLOCKS: usize = 256;
/// Largest pixel-shuffle factor accepted (released models are x2 to x4).
const MAX_SCALE: usize = 16;

/// Whether the dict holds all of SAFMN's identifying tensors.
pub(super) fn is_safmn(dict: &StateDict) -> bool {
    DETECT_KEYS.iter().all(|k| dict.contains_key(*k))
}

/// spandrel's `get_seq_len(dict, "feats")`: one more than the highest `N` of `feats.N.*`.
fn block_count(dict: &StateDict) -> usize {
    dict.keys()
        .filter_map(|k| {
            k.strip_prefix("feats.")?
                .split('.')
                .next()?
                .parse::<usize>()
                .ok()
        })
        .max()
        .map_or(0, |n| n + 1)
}

/// Every tensor of a SAFMN of these sizes, with its shape.
pub(super) fn safmn_shapes(p: &SafmnParams) -> Vec<(String, Vec<usize>)> {
    let (d, h) = (p.dim, p.hidden_dim);
    let chunk = d / LEVELS;
    let mut shapes: Vec<(String, Vec<usize>)> = vec![
        ("to_feat.weight".into(), vec![d, 3, 3, 3]),
        ("to_feat.bias".into(), vec![d]),
    ];
    for b in 0..p.n_blocks {
        let mut conv = |name: String, shape: Vec<usize>| {
            shapes.push((format!("feats.{b}.{name}.bias"), vec![shape[0]]));
            shapes.push((format!("feats.{b}.{name}.weight"), shape));
        };
        conv("norm1".into(), vec![d]);
        conv("norm2".into(), vec![d]);
        for level in 0..LEVELS {
            conv(format!("safm.mfr.{level}"), vec![chunk, 1, 3, 3]);
        }
        conv("safm.aggr".into(), vec![d, d, 1, 1]);
        conv("ccm.ccm.0".into(), vec![h, d, 3, 3]);
        conv("ccm.ccm.2".into(), vec![d, h, 1, 1]);
    }
    let shuffled = 3 * p.upscale * p.upscale;
    shapes.push(("to_img.0.weight".into(), vec![shuffled, d, 3, 3]));
    shapes.push(("to_img.0.bias".into(), vec![shuffled]));
    shapes
}

/// The hyper-parameters of a dict that [`is_safmn`], after every tensor's shape has been
/// checked against them.
pub(super) fn safmn_params(dict: &StateDict) -> Result<SafmnParams, Reason> {
    let first = dims(dict, "to_feat.weight")?;
    let dim = match first.as_slice() {
        [d, 3, 3, 3] if (1..=MAX_CHANNELS).contains(d) => *d,
        _ => {
            return Err(format!(
                "tensor `to_feat.weight` has shape {first:?}; expected a 3x3 conv weight \
                 [dim, 3, 3, 3] (RGB input) with 1 to {MAX_CHANNELS} outputs"
            ))
        }
    };
    let n_blocks = block_count(dict);
    if n_blocks > MAX_BLOCKS {
        return Err(format!(
            "SAFMN with {n_blocks} blocks (feats.0 ... feats.{}): at most {MAX_BLOCKS} are \
             supported",
            n_blocks - 1
        ));
    }
    let ccm = dims(dict, "feats.0.ccm.ccm.0.weight")?;
    let hidden_dim = match ccm.as_slice() {
        [h, _, 3, 3] if (1..=8 * MAX_CHANNELS).contains(h) => *h,
        _ => {
            return Err(format!(
                "tensor `feats.0.ccm.ccm.0.weight` has shape {ccm:?}; expected a 3x3 conv \
                 weight [hidden, {dim}, 3, 3]"
            ))
        }
    };
    let to_img = dims(dict, "to_img.0.weight")?;
    let outputs = to_img.first().copied().unwrap_or(0);
    // spandrel: int(sqrt(outputs / 3)); the shape check below then requires 3·scale².
    let upscale = (outputs / 3).isqrt();
    if !(1..=MAX_SCALE).contains(&upscale) || outputs != 3 * upscale * upscale {
        return Err(format!(
            "tensor `to_img.0.weight` has shape {to_img:?}; expected [3 × scale², {dim}, 3, 3] \
             with a scale from 1 to {MAX_SCALE}"
        ));
    }
    let p = SafmnParams {
        dim,
        n_blocks,
        hidden_dim,
        upscale,
    };
    for (name, shape) in safmn_shapes(&p) {
        expect_shape(dict, &name, &shape)?;
    }
    Ok(p)
}

/// A SAFMN state dict of these sizes, shapes only (zeros).
#[cfg(test)]
pub(crate) fn synthetic_safmn(
    dim: usize,
    n_blocks: usize,
    hidden_dim: usize,
    upscale: usize,
) -> StateDict {
    use candle_core::{DType, Device, Tensor};
    let p = SafmnParams {
        dim,
        n_blocks,
        hidden_dim,
        upscale,
    };
    safmn_shapes(&p)
        .into_iter()
        .map(|(k, s)| (k, Tensor::zeros(s, DType::F32, &Device::Cpu).unwrap()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// spandrel's own detection test cases (tests/test_SAFMN.py) and a 16-block SAFMN-L.
    #[test]
    fn reads_every_hyper_parameter_from_shapes() {
        for (dim, n_blocks, hidden, upscale) in [
            (36, 8, 72, 4),
            (36, 8, 108, 3),
            (8, 3, 40, 2),
            (128, 16, 256, 2),
        ] {
            let dict = synthetic_safmn(dim, n_blocks, hidden, upscale);
            assert!(is_safmn(&dict));
            let p = safmn_params(&dict).unwrap();
            assert_eq!(
                p,
                SafmnParams {
                    dim,
                    n_blocks,
                    hidden_dim: hidden,
                    upscale,
                }
            );
            assert_eq!(p.ffn_scale(), hidden as f64 / dim as f64);
        }
    }

    #[test]
    fn a_missing_or_mis_shaped_tensor_is_named() {
        let mut dict = synthetic_safmn(8, 2, 16, 2);
        dict.remove("feats.1.safm.mfr.2.bias");
        let err = safmn_params(&dict).unwrap_err();
        assert!(err.contains("feats.1.safm.mfr.2.bias"), "{err}");
        let mut dict = synthetic_safmn(8, 2, 16, 2);
        let bad = candle_core::Tensor::zeros(
            (8, 8, 3, 3),
            candle_core::DType::F32,
            &candle_core::Device::Cpu,
        )
        .unwrap();
        dict.insert("feats.1.safm.aggr.weight".into(), bad);
        let err = safmn_params(&dict).unwrap_err();
        assert!(
            err.contains("feats.1.safm.aggr.weight")
                && err.contains("[8, 8, 3, 3]")
                && err.contains("[8, 8, 1, 1]"),
            "{err}"
        );
        let mut dict = synthetic_safmn(8, 1, 16, 2);
        let bad = candle_core::Tensor::zeros(
            (13, 8, 3, 3),
            candle_core::DType::F32,
            &candle_core::Device::Cpu,
        )
        .unwrap();
        dict.insert("to_img.0.weight".into(), bad);
        let err = safmn_params(&dict).unwrap_err();
        assert!(
            err.contains("to_img.0.weight") && err.contains("[13, 8, 3, 3]"),
            "{err}"
        );
    }
}
