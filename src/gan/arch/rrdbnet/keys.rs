//! The original ESRGAN repo's key layouts renamed to basicsr's, as spandrel's ESRGAN
//! support converts them: the "new arch" names (`RRDB_trunk`, `trunk_conv`, `upconv1`,
//! `HRconv`) and the "old arch" sequential names (`model.0`, `model.1.sub.N.RDB1.conv1.0`,
//! `model.3`, ...).

use crate::gan::StateDict;

/// Renames an ESRGAN-repo state dict into basicsr's layout; any other dict is returned as is.
pub(super) fn from_esrgan_layouts(dict: StateDict) -> StateDict {
    if dict.contains_key("model.0.weight") && dict.keys().any(|k| k.starts_with("model.1.sub.")) {
        return from_old_esrgan(dict);
    }
    if dict.contains_key("trunk_conv.weight") || dict.contains_key("RRDB_trunk.0.RDB1.conv1.weight")
    {
        return dict
            .into_iter()
            .map(|(k, v)| (rename_new_esrgan(&k), v))
            .collect();
    }
    dict
}

fn rename_new_esrgan(key: &str) -> String {
    let key = key
        .replacen("RRDB_trunk.", "body.", 1)
        .replacen("trunk_conv.", "conv_body.", 1)
        .replacen("HRconv.", "conv_hr.", 1);
    let key = match key.strip_prefix("upconv") {
        Some(rest) => format!("conv_up{rest}"),
        None => key,
    };
    key.replace(".RDB1.", ".rdb1.")
        .replace(".RDB2.", ".rdb2.")
        .replace(".RDB3.", ".rdb3.")
}

/// The old sequential layout: `model.0` is conv_first, `model.1.sub.{b}` the blocks and
/// `model.1.sub.{nb}` conv_body; then come the upsampling convs, conv_hr and conv_last at
/// increasing indices (activations and upsamplers take indices but hold no tensors).
fn from_old_esrgan(dict: StateDict) -> StateDict {
    let mut out = StateDict::new();
    let mut tail: Vec<(usize, String, candle_core::Tensor)> = Vec::new();
    let blocks = dict
        .keys()
        .filter_map(|k| {
            k.strip_prefix("model.1.sub.")?
                .split('.')
                .next()?
                .parse::<usize>()
                .ok()
        })
        .max()
        .unwrap_or(0);
    for (key, tensor) in dict {
        let Some(rest) = key.strip_prefix("model.") else {
            out.insert(key, tensor);
            continue;
        };
        let (index, suffix) = rest.split_once('.').unwrap_or((rest, ""));
        match (index.parse::<usize>(), suffix) {
            (Ok(0), s) => {
                out.insert(format!("conv_first.{s}"), tensor);
            }
            (Ok(1), s) => {
                let Some(sub) = s.strip_prefix("sub.") else {
                    out.insert(key, tensor);
                    continue;
                };
                let (b, inner) = sub.split_once('.').unwrap_or((sub, ""));
                if b.parse::<usize>().ok() == Some(blocks) && !inner.contains("RDB") {
                    out.insert(format!("conv_body.{inner}"), tensor);
                } else {
                    // `RDB1.conv1.0.weight` → `rdb1.conv1.weight`.
                    let inner = inner.replace("RDB", "rdb").replace(".0.", ".");
                    out.insert(format!("body.{b}.{inner}"), tensor);
                }
            }
            (Ok(i), s) => tail.push((i, s.to_string(), tensor)),
            (Err(_), _) => {
                out.insert(key, tensor);
            }
        }
    }
    let mut indices: Vec<usize> = tail.iter().map(|(i, _, _)| *i).collect();
    indices.sort_unstable();
    indices.dedup();
    let n = indices.len();
    for (i, suffix, tensor) in tail {
        let position = indices.iter().position(|&j| j == i).unwrap_or(0);
        let name = if n >= 2 && position == n - 1 {
            "conv_last".to_string()
        } else if n >= 2 && position == n - 2 {
            "conv_hr".to_string()
        } else {
            format!("conv_up{}", position + 1)
        };
        out.insert(format!("{name}.{suffix}"), tensor);
    }
    out
}
