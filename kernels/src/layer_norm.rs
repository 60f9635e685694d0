//! `nn.LayerNorm` over the last dimension: one pass per row with the vectorised sums of
//! `fast_math.rs` (the group norm's), tasks of a few rows spread over the thread pool. Statistics as torch
//! computes them: biased variance, eps inside the square root.

use crate::fast_math::{affine_row, mean_inv_std};
use crate::parallel::for_each_chunk_mut;

/// Rows per task: small enough to split the text encoder's 154 rows over the threads.
const ROWS_PER_TASK: usize = 16;

/// y = (x - mean) / sqrt(var + eps) · weight + bias over every `weight.len()`-long row of `x`.
///
/// # Panics
/// When `bias` is not as long as `weight`, or `x` is not a whole number of rows.
pub fn layer_norm(x: &[f32], weight: &[f32], bias: &[f32], eps: f32) -> Vec<f32> {
    let d = weight.len();
    assert_eq!(bias.len(), d);
    let mut out = vec![0f32; x.len()];
    if d == 0 {
        return out;
    }
    assert_eq!(x.len() % d, 0, "layer norm: not a whole number of rows");
    let task = d * ROWS_PER_TASK;
    for_each_chunk_mut(&mut out, task, |i, o| {
        let x = &x[i * task..i * task + o.len()];
        for (o, x) in o.chunks_exact_mut(d).zip(x.chunks_exact(d)) {
            normalise_row(x, o, weight, bias, eps);
        }
    });
    out
}

/// One row: the statistics in f64 (see [`mean_inv_std`]), then the affine map.
fn normalise_row(x: &[f32], out: &mut [f32], w: &[f32], b: &[f32], eps: f32) {
    let (mean, inv_std) = mean_inv_std(x, eps as f64);
    affine_row(x, out, mean as f32, inv_std as f32, w, b);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against torch's formula in f64, on rows with an offset mean (as residual streams have).
    #[test]
    fn equals_the_f64_formula() {
        for (rows, d) in [(154usize, 1024usize), (3, 5), (1, 37), (17, 64)] {
            let x: Vec<f32> = (0..rows * d)
                .map(|i| ((i * 7919 % 1013) as f32) * 0.004 + 3.0)
                .collect();
            let w: Vec<f32> = (0..d).map(|i| 1.0 + (i % 7) as f32 * 0.01).collect();
            let b: Vec<f32> = (0..d).map(|i| (i % 5) as f32 * 0.02 - 0.04).collect();
            let y = layer_norm(&x, &w, &b, 1e-5);
            for (r, (xr, yr)) in x.chunks(d).zip(y.chunks(d)).enumerate() {
                let mean = xr.iter().map(|&v| v as f64).sum::<f64>() / d as f64;
                let var = xr.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / d as f64;
                let inv = 1.0 / (var + 1e-5).sqrt();
                for i in 0..d {
                    let want = (xr[i] as f64 - mean) * inv * w[i] as f64 + b[i] as f64;
                    assert!((yr[i] as f64 - want).abs() < 3e-6, "row {r} col {i}");
                }
            }
        }
    }
}
