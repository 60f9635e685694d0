//! OmniSR's hyper-parameters read from a state dict, as spandrel 0.4.2's
//! `architectures/OmniSR/__init__.py` reads them: widths and the bias flag from `input`, scale
//! and output channels from the pixel-shuffle conv `up.0`, the group and block counts from the
//! `residual_layer` sequences, the window from the relative position bias table (8 when there
//! is none). Every other tensor's shape is then checked against them.

use super::config::HEADS;
use super::OmniSrParams;
use crate::gan::arch::shapes::{dims, expect_shape, Reason, MAX_CHANNELS};
use crate::gan::StateDict;

/// The tensors spandrel recognises OmniSR by.
pub(super) const IDENTIFYING: [&str; 3] = [
    "residual_layer.0.residual_layer.0.layer.0.fn.0.weight",
    "input.weight",
    "up.0.weight",
];

/// Whether the dict holds OmniSR's identifying tensors.
pub(super) fn is_omnisr(dict: &StateDict) -> bool {
    IDENTIFYING.iter().all(|k| dict.contains_key(*k))
}

/// The first block's relative position bias table: `(2·window − 1)²` rows, one column per
/// head.
const REL_POS_BIAS: &str = "residual_layer.0.residual_layer.0.layer.2.fn.rel_pos_bias.weight";

/// spandrel's default window, used when the weights have no bias table to read it from.
const DEFAULT_WINDOW: usize = 8;
/// Most groups / blocks per group: the published models have 5 groups of 1 block.
const MAX_DEPTH: usize = 64;
/// Largest window: the published models use 8; the table of a window of 64 already has
/// 16 129 rows.
const MAX_WINDOW: usize = 64;
/// Largest scale (pixel-shuffle factor).
const MAX_SCALE: usize = 16;

/// `get_seq_len`: one more than the largest index `i` of a key `{prefix}.{i}.…`.
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
        .map_or(0, |i| i + 1)
}

/// spandrel's `get_scale_and_output_channels`: the first of (input channels, 3, 4, 1) that
/// divides the pixel-shuffle conv's outputs into a square.
fn scale_and_out_channels(shuffled: usize, in_channels: usize) -> Option<(usize, usize)> {
    [in_channels, 3, 4, 1].into_iter().find_map(|c| {
        if c == 0 || shuffled % c != 0 {
            return None;
        }
        let square = shuffled / c;
        let s = (1..=MAX_SCALE).find(|s| s * s == square)?;
        Some((s, c))
    })
}

/// The hyper-parameters of a dict that [`is_omnisr`], after every tensor's shape has been
/// checked against them.
pub(super) fn omnisr_params(dict: &StateDict) -> Result<OmniSrParams, Reason> {
    let input = dims(dict, "input.weight")?;
    let [num_feat, in_channels, 3, 3] = input[..] else {
        return Err(format!(
            "tensor `input.weight` has shape {input:?}; expected a 3x3 conv weight"
        ));
    };
    if !(1..=MAX_CHANNELS).contains(&num_feat) || !(1..=4).contains(&in_channels) {
        return Err(format!(
            "tensor `input.weight` has shape {input:?}: 1 to {MAX_CHANNELS} features from 1 to \
             4 image channels expected"
        ));
    }
    if num_feat % HEADS != 0 {
        return Err(format!(
            "OmniSR with {num_feat} features: its attentions split them into {HEADS} heads, so \
             the count must be a multiple of {HEADS}"
        ));
    }
    let bias = dict.contains_key("input.bias");
    let up = dims(dict, "up.0.weight")?;
    let [shuffled, _, 3, 3] = up[..] else {
        return Err(format!(
            "tensor `up.0.weight` has shape {up:?}; expected a 3x3 conv weight"
        ));
    };
    let (up_scale, out_channels) =
        scale_and_out_channels(shuffled, in_channels).ok_or_else(|| {
            format!(
                "the upsampling conv `up.0.weight` has {shuffled} outputs: not 1, 3 or 4 \
                 channels × a square scale up to {MAX_SCALE}²"
            )
        })?;
    let res_num = seq_len(dict, "residual_layer");
    let block_num = seq_len(dict, "residual_layer.0.residual_layer").saturating_sub(1);
    if res_num > MAX_DEPTH || block_num > MAX_DEPTH {
        return Err(format!(
            "OmniSR with {res_num} groups of {block_num} blocks: at most {MAX_DEPTH} of each \
             are supported"
        ));
    }
    let (pe, window_size) = match dict.get(REL_POS_BIAS) {
        None => (false, DEFAULT_WINDOW),
        Some(table) => {
            let rows = table.dims().first().copied().unwrap_or(0);
            // (2w − 1)² rows: spandrel's int((sqrt(rows) + 1) / 2).
            let window = (1..=MAX_WINDOW).find(|w| (2 * w - 1) * (2 * w - 1) == rows);
            let Some(window) = window else {
                return Err(format!(
                    "tensor `{REL_POS_BIAS}` has shape {:?}: its rows must be (2·window − 1)² \
                     for a window of 1 to {MAX_WINDOW}",
                    table.dims()
                ));
            };
            (true, window)
        }
    };
    let p = OmniSrParams {
        in_channels,
        out_channels,
        num_feat,
        block_num,
        res_num,
        window_size,
        pe,
        up_scale,
        bias,
    };
    for (name, shape) in expected_shapes(&p) {
        expect_shape(dict, &name, &shape)?;
    }
    Ok(p)
}

/// Every tensor the network reads, with its shape, in module order.
pub(super) fn expected_shapes(p: &OmniSrParams) -> Vec<(String, Vec<usize>)> {
    let c = p.num_feat;
    let mut out: Vec<(String, Vec<usize>)> = Vec::new();
    let mut conv = |name: String, c_out: usize, c_in: usize, k: usize, bias: bool| {
        if bias {
            out.push((format!("{name}.bias"), vec![c_out]));
        }
        out.push((format!("{name}.weight"), vec![c_out, c_in, k, k]));
    };
    conv("input".into(), c, p.in_channels, 3, p.bias);
    for r in 0..p.res_num {
        let group = format!("residual_layer.{r}");
        for b in 0..p.block_num {
            let l = format!("{group}.residual_layer.{b}.layer");
            // MBConv (expansion 1): 1×1, depthwise 3×3, squeeze-excitation, 1×1.
            conv(format!("{l}.0.fn.0"), c, c, 1, true);
            conv(format!("{l}.0.fn.2"), c, 1, 3, true);
            conv(format!("{l}.0.fn.5"), c, c, 1, true);
            // Gated feed-forwards: 1×1 to 2c, depthwise 3×3, 1×1 back, no biases.
            for i in [4, 6, 10, 12] {
                conv(format!("{l}.{i}.fn.project_in"), 2 * c, c, 1, false);
                conv(format!("{l}.{i}.fn.dwconv"), 2 * c, 1, 3, false);
                conv(format!("{l}.{i}.fn.project_out"), c, c, 1, false);
            }
            // Channel attentions: 1×1 to qkv, depthwise 3×3, 1×1 out, no biases.
            for i in [5, 11] {
                conv(format!("{l}.{i}.fn.qkv"), 3 * c, c, 1, false);
                conv(format!("{l}.{i}.fn.qkv_dwconv"), 3 * c, 1, 3, false);
                conv(format!("{l}.{i}.fn.project_out"), c, c, 1, false);
            }
        }
        conv(
            format!("{group}.residual_layer.{}", p.block_num),
            c,
            c,
            1,
            p.bias,
        );
        let f = p.esa_channels();
        conv(format!("{group}.esa.conv1"), f, c, 1, true);
        conv(format!("{group}.esa.conv_f"), f, f, 1, true);
        conv(format!("{group}.esa.conv2"), f, f, 3, true);
        conv(format!("{group}.esa.conv3"), f, f, 3, true);
        conv(format!("{group}.esa.conv4"), c, f, 1, true);
    }
    conv("output".into(), c, c, 3, p.bias);
    conv(
        "up.0".into(),
        p.out_channels * p.up_scale * p.up_scale,
        c,
        3,
        p.bias,
    );
    // The non-conv parameters of each block.
    for r in 0..p.res_num {
        for b in 0..p.block_num {
            let l = format!("residual_layer.{r}.residual_layer.{b}.layer");
            out.push((format!("{l}.0.fn.4.gate.1.weight"), vec![c / 4, c]));
            out.push((format!("{l}.0.fn.4.gate.3.weight"), vec![c, c / 4]));
            for i in [2, 8] {
                out.push((format!("{l}.{i}.fn.to_qkv.weight"), vec![3 * c, c]));
                out.push((format!("{l}.{i}.fn.to_out.0.weight"), vec![c, c]));
                if p.pe {
                    let rows = (2 * p.window_size - 1) * (2 * p.window_size - 1);
                    out.push((format!("{l}.{i}.fn.rel_pos_bias.weight"), vec![rows, HEADS]));
                }
            }
            for i in [5, 11] {
                out.push((format!("{l}.{i}.fn.temperature"), vec![HEADS, 1, 1]));
            }
            for i in [2, 4, 5, 6, 8, 10, 11, 12] {
                out.push((format!("{l}.{i}.norm.weight"), vec![c]));
                out.push((format!("{l}.{i}.norm.bias"), vec![c]));
            }
        }
    }
    out
}

/// An OmniSR state dict of zeros with `p`'s shapes, for detection tests.
#[cfg(test)]
pub(crate) fn synthetic_omnisr(p: &OmniSrParams) -> StateDict {
    use candle_core::{DType, Device, Tensor};
    expected_shapes(p)
        .into_iter()
        .map(|(name, shape)| {
            let t = Tensor::zeros(shape, DType::F32, &Device::Cpu).expect("zeros");
            (name, t)
        })
        .collect()
}

/// The smallest useful OmniSR: nf 4, one group of one block, window 4, ×2.
#[cfg(test)]
pub(crate) fn tiny_params(pe: bool, bias: bool) -> OmniSrParams {
    OmniSrParams {
        in_channels: 3,
        out_channels: 3,
        num_feat: 4,
        block_num: 1,
        res_num: 1,
        window_size: if pe { 4 } else { DEFAULT_WINDOW },
        pe,
        up_scale: 2,
        bias,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_hyper_parameter_from_shapes() {
        for (pe, bias) in [(true, true), (false, false), (true, false)] {
            let mut p = tiny_params(pe, bias);
            p.res_num = 2;
            p.block_num = 3;
            p.up_scale = 3;
            let dict = synthetic_omnisr(&p);
            assert!(is_omnisr(&dict));
            assert_eq!(omnisr_params(&dict).unwrap(), p);
        }
    }

    #[test]
    fn thop_counters_and_odd_tables_are_handled() {
        let p = tiny_params(true, true);
        let mut dict = synthetic_omnisr(&p);
        let zero =
            candle_core::Tensor::zeros((1,), candle_core::DType::F32, &candle_core::Device::Cpu)
                .unwrap();
        dict.insert("residual_layer.total_ops".into(), zero.clone());
        assert_eq!(omnisr_params(&dict).unwrap(), p);
        let bad =
            candle_core::Tensor::zeros((50, 4), candle_core::DType::F32, &candle_core::Device::Cpu)
                .unwrap();
        dict.insert(REL_POS_BIAS.into(), bad);
        let err = omnisr_params(&dict).unwrap_err();
        assert!(
            err.contains(REL_POS_BIAS) && err.contains("[50, 4]"),
            "{err}"
        );
    }

    #[test]
    fn scale_and_channels_follow_spandrel() {
        assert_eq!(scale_and_out_channels(48, 3), Some((4, 3)));
        assert_eq!(scale_and_out_channels(12, 3), Some((2, 3)));
        assert_eq!(scale_and_out_channels(27, 3), Some((3, 3)));
        assert_eq!(scale_and_out_channels(4, 1), Some((2, 1)));
        assert_eq!(scale_and_out_channels(16, 3), Some((2, 4)));
        assert_eq!(scale_and_out_channels(7, 3), None);
    }
}
