//! Blend weights: how much each tile's output counts at each output pixel.
//!
//! Where a tile borders another, its outer pixels lacked context, so its weight is zero across a
//! context margin, then rises smoothly across a cross-fade to 1 (MultiDiffusion-style weighted
//! averaging, but with the unreliable border discarded as Real-ESRGAN's `tile_pad` does). At the
//! image's own edges the weight stays 1: the untiled run has no more context there either.
//!
//! The rule, per pair of neighbouring tiles sharing `o` input pixels: each side discards
//! `m = floor(3·o / 8)` pixels ([`context_margin`]) and the middle `o − 2m` (about a quarter of
//! the overlap) is the cross-fade. For an operator whose output at a pixel depends only on input
//! within `r` pixels, every pixel with non-zero weight then saw all of its inputs when `m >= r`,
//! and the weights sum to a positive value everywhere when `2m < o`, which `m <= 3o/8` ensures.
//! The normalised blend of exact values is exact, so the tiled result equals the untiled one when
//! `3·overlap >= 8·r` ([`exact_overlap`]); the actual overlaps are never smaller than the option.

use crate::error::{Error, Result};

/// Input pixels discarded at a tile side that shares `overlap` pixels with its neighbour.
pub fn context_margin(overlap: usize) -> usize {
    overlap.saturating_mul(3) / 8
}

/// The smallest overlap at which the blend of an operator of receptive radius `radius` (input
/// pixels; a stack of `d` 3x3 convolutions has radius `d`) equals the untiled result.
pub fn exact_overlap(radius: usize) -> usize {
    radius.saturating_mul(8).div_ceil(3)
}

/// Weight of a tile side at distance `d` (input pixels, continuous) from the tile edge, when it
/// shares `overlap` pixels with its neighbour: 0 across the margin, a smoothstep across the
/// cross-fade, then 1. Smoothstep is symmetric (`s(t) + s(1 − t) = 1`), so two neighbours at the
/// nominal overlap already sum to 1; the normalisation handles the rest.
fn side_weight(d: f64, overlap: usize) -> f64 {
    let margin = context_margin(overlap) as f64;
    let fade = (overlap - 2 * context_margin(overlap)) as f64;
    if d <= margin {
        0.0
    } else if fade == 0.0 || d >= margin + fade {
        1.0
    } else {
        let t = (d - margin) / fade;
        t * t * (3.0 - 2.0 * t)
    }
}

/// Normalised weights of the tiles along one axis, at output resolution: entry `k` holds
/// `tile * scale` weights for the tile starting at `starts[k]`, and at every output position of
/// the axis the weights of the tiles covering it sum to 1. Because the 2-D weight of a tile is the
/// product of its row and column weights and the tiles form a grid, the 2-D weights also sum to
/// 1, so no weight accumulator is needed.
pub(crate) fn axis_weights(starts: &[usize], tile: usize, scale: usize) -> Result<Vec<Vec<f32>>> {
    let out_tile = tile * scale;
    let raw: Vec<Vec<f64>> = starts
        .iter()
        .enumerate()
        .map(|(k, &start)| {
            // Neighbour overlaps from the actual positions; an image edge has none.
            let before = k.checked_sub(1).map(|p| starts[p] + tile - start);
            let after = starts.get(k + 1).map(|&next| start + tile - next);
            (0..out_tile)
                .map(|j| {
                    // Distance of the output pixel's centre from each tile edge, in input pixels.
                    let d = (j as f64 + 0.5) / scale as f64;
                    before.map_or(1.0, |o| side_weight(d, o))
                        * after.map_or(1.0, |o| side_weight(tile as f64 - d, o))
                })
                .collect()
        })
        .collect();
    let len = starts.last().map_or(0, |&s| s + tile) * scale;
    let mut sum = vec![0.0f64; len];
    for (weights, &start) in raw.iter().zip(starts) {
        for (s, w) in sum[start * scale..].iter_mut().zip(weights) {
            *s += w;
        }
    }
    raw.iter()
        .zip(starts)
        .map(|(weights, &start)| {
            weights
                .iter()
                .zip(&sum[start * scale..])
                .map(|(&w, &s)| {
                    // Unreachable by the margin rule above; an error beats a NaN image.
                    if s > 0.0 {
                        Ok((w / s) as f32)
                    } else {
                        Err(Error::option("overlap", "tile blend weights vanish"))
                    }
                })
                .collect()
        })
        .collect()
}
