//! Reading the Swin networks' common hyper-parameters from state-dict names and shapes, as
//! spandrel 0.4.2 does (`spandrel.util.get_seq_len`, the window size from
//! `relative_position_index`, the training size from `attn_mask`), and checking the tensors a
//! configuration reads before anything is built.

use crate::gan::arch::shapes::{dims, expect_shape, Reason};
use crate::gan::StateDict;

/// Largest window supported: 32 (HAT, DRCT and SwinIR use 7 to 16). A window of w makes
/// w⁴ · heads bias values per block.
pub const MAX_WINDOW: usize = 32;
/// Most stages, blocks per stage and heads: released models have at most 12 stages of 6 blocks
/// and 6 heads.
pub const MAX_COUNT: usize = 64;

/// Most relative-position bias values one block may hold (heads · window⁴): 64 Mi, 256 MB in
/// f32. Released models hold at most 6 heads × 16⁴ (0.4 Mi).
pub const MAX_BIAS_VALUES: usize = 1 << 26;

/// Refuses a stage whose bias (heads, window², window²) would exceed [`MAX_BIAS_VALUES`].
pub fn check_bias_size(window: usize, heads: usize) -> Result<(), Reason> {
    let n = window * window;
    if heads.saturating_mul(n).saturating_mul(n) > MAX_BIAS_VALUES {
        return Err(format!(
            "{heads} heads in windows of {window}: a bias of {heads}·{n}² values is more than \
             the {MAX_BIAS_VALUES} supported"
        ));
    }
    Ok(())
}

/// spandrel's `get_seq_len`: one past the largest N among keys `prefix.N.…`, 0 when none.
pub fn seq_len(dict: &StateDict, prefix: &str) -> usize {
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
        .map_or(0, |m| m + 1)
}

/// [`seq_len`], refused above [`MAX_COUNT`] (what) and at 0.
pub fn count(dict: &StateDict, prefix: &str, what: &str) -> Result<usize, Reason> {
    let n = seq_len(dict, prefix);
    if n == 0 {
        return Err(format!("no {what} (`{prefix}.0...`)"));
    }
    if n > MAX_COUNT {
        return Err(format!(
            "{n} {what} (`{prefix}.N`): at most {MAX_COUNT} are supported"
        ));
    }
    Ok(n)
}

/// The window side from a `relative_position_index` buffer (window², window²), as spandrel's
/// `int(sqrt(shape[0]))`, refused unless square and at most [`MAX_WINDOW`].
pub fn window_from_index(dict: &StateDict, name: &str) -> Result<usize, Reason> {
    let d = dims(dict, name)?;
    let n = d.first().copied().unwrap_or(0);
    let window = (1..=MAX_WINDOW).find(|w| w * w == n);
    match (window, d.as_slice()) {
        (Some(w), [a, b]) if a == b => Ok(w),
        _ => Err(format!(
            "tensor `{name}` has shape {d:?}; expected (window², window²) for a window of 1 to \
             {MAX_WINDOW}"
        )),
    }
}

/// The training resolution (`img_size`) from an `attn_mask` buffer (windows, n, n), as
/// spandrel's `int(sqrt(shape[0]) * window)`; `default` when there is none.
pub fn img_size_from_mask(dict: &StateDict, name: &str, window: usize, default: usize) -> usize {
    match dict.get(name).and_then(|t| t.dims().first().copied()) {
        // In floats: a damaged file's count may be near usize::MAX.
        Some(windows) => ((windows as f64).sqrt() * window as f64) as usize,
        None => default,
    }
}

/// Checks every `(name, shape)`: present with exactly that shape.
pub fn check_tensors(dict: &StateDict, expected: &[(String, Vec<usize>)]) -> Result<(), Reason> {
    expected
        .iter()
        .try_for_each(|(name, shape)| expect_shape(dict, name, shape))
}

/// Checks `name` has `shape` when the dict holds it (buffers a checkpoint may or may not
/// carry, whose values diffsr recomputes).
pub fn check_optional(dict: &StateDict, name: &str, shape: &[usize]) -> Result<(), Reason> {
    if dict.contains_key(name) {
        expect_shape(dict, name, shape)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, Tensor};

    use super::*;

    fn dict(entries: &[(&str, &[usize])]) -> StateDict {
        entries
            .iter()
            .map(|(k, s)| {
                let t = Tensor::zeros(*s, DType::F32, &Device::Cpu).unwrap();
                (k.to_string(), t)
            })
            .collect()
    }

    #[test]
    fn reads_lengths_windows_and_sizes() {
        let d = dict(&[
            ("layers.0.x", &[1]),
            ("layers.3.y.z", &[1]),
            ("layers.b.x", &[1]),
            ("a.0.relative_position_index", &[64, 64]),
            ("a.1.relative_position_index", &[64, 63]),
            ("a.1.attn_mask", &[64, 64, 64]),
        ]);
        assert_eq!(seq_len(&d, "layers"), 4);
        assert_eq!(seq_len(&d, "none"), 0);
        assert!(count(&d, "none", "stages")
            .unwrap_err()
            .contains("no stages"));
        assert_eq!(window_from_index(&d, "a.0.relative_position_index"), Ok(8));
        let err = window_from_index(&d, "a.1.relative_position_index").unwrap_err();
        assert!(err.contains("[64, 63]"), "{err}");
        assert_eq!(img_size_from_mask(&d, "a.1.attn_mask", 8, 64), 64);
        assert_eq!(img_size_from_mask(&d, "a.2.attn_mask", 8, 48), 48);
        assert!(check_optional(&d, "a.1.attn_mask", &[64, 64, 64]).is_ok());
        assert!(check_optional(&d, "missing", &[1]).is_ok());
        let err = check_optional(&d, "a.1.attn_mask", &[16, 64, 64]).unwrap_err();
        assert!(
            err.contains("[64, 64, 64]") && err.contains("[16, 64, 64]"),
            "{err}"
        );
    }
}
