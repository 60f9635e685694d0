//! Element-wise kernels with a vectorised erf: diffusers' GEGLU gate (value · GELU(gate), the
//! projection's two halves), torch's exact (erf) GELU (CLIP's MLP activation), and the
//! per-channel rectifier of the Real-ESRGAN networks (PReLU, ReLU, leaky ReLU).
//!
//! candle's CPU unary ops call libm's `erff` once per element, which the compiler cannot
//! vectorise; its `chunk` + `gelu_erf` + `mul` take three passes for GEGLU where this takes one.

use crate::epilogue::rectify;
use crate::fast_math::{geglu_row, gelu_erf_slice};
use crate::parallel::{for_each_chunk_mut, threads_for};

/// value · GELU(gate) for every `last`-long row [value | gate] of `x`: rows of `last / 2`.
///
/// # Panics
/// When `last` is odd or `x` is not a whole number of rows.
pub fn geglu(x: &[f32], last: usize, threads: usize) -> Vec<f32> {
    assert_eq!(last % 2, 0, "GEGLU: odd last dimension");
    let inner = last / 2;
    let rows = x.len().checked_div(last).unwrap_or(0);
    assert_eq!(rows * last, x.len(), "GEGLU: not a whole number of rows");
    let mut out = vec![0f32; rows * inner];
    if inner == 0 {
        return out;
    }
    let threads = threads_for(threads, rows, rows * inner);
    let per = rows.div_ceil(threads);
    for_each_chunk_mut(&mut out, per * inner, |i, o| {
        let src = &x[i * per * last..];
        for (row, o) in src.chunks_exact(last).zip(o.chunks_exact_mut(inner)) {
            let (value, gate) = row.split_at(inner);
            geglu_row(value, gate, o);
        }
    });
    out
}

/// GELU(x) with torch's exact (erf) form, element-wise.
pub fn gelu_erf(x: &[f32], threads: usize) -> Vec<f32> {
    let mut out = vec![0f32; x.len()];
    let threads = threads_for(threads, x.len(), x.len());
    let per = x.len().div_ceil(threads).max(1);
    for_each_chunk_mut(&mut out, per, |i, o| gelu_erf_slice(&x[i * per..], o));
    out
}

/// x where x ≥ 0, `slopes[c]·x` elsewhere, for x (B, C, plane) with C = `slopes.len()`.
pub fn prelu(x: &[f32], plane: usize, slopes: &[f32]) -> Vec<f32> {
    let mut out = vec![0f32; x.len()];
    if plane > 0 && !slopes.is_empty() {
        for (i, (o, s)) in out
            .chunks_exact_mut(plane)
            .zip(x.chunks_exact(plane))
            .enumerate()
        {
            let a = slopes[i % slopes.len()];
            for (o, &v) in o.iter_mut().zip(s) {
                *o = rectify(v, a);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::gelu64;

    #[test]
    fn geglu_and_gelu_match_the_f64_forms() {
        for (rows, last, threads) in [(18usize, 16usize, 1usize), (600, 512, 3), (1, 2, 2)] {
            let x: Vec<f32> = (0..rows * last)
                .map(|i| ((i * 7919 % 1013) as f32) * 0.006 - 3.0)
                .collect();
            let y = geglu(&x, last, threads);
            assert_eq!(y.len(), rows * last / 2);
            for (r, yr) in y.chunks(last / 2).enumerate() {
                for (j, &g) in yr.iter().enumerate() {
                    let want = x[r * last + j] as f64 * gelu64(x[r * last + last / 2 + j] as f64);
                    assert!((g as f64 - want).abs() < 2e-6, "({r}, {j}): {g} vs {want}");
                }
            }
        }
        let x: Vec<f32> = (0..210_000)
            .map(|i| ((i * 7919 % 1013) as f32) * 0.006 - 3.0)
            .collect();
        for threads in [1, 3] {
            let y = gelu_erf(&x, threads);
            for (&g, &v) in y.iter().zip(&x).step_by(97) {
                assert!((g as f64 - gelu64(v as f64)).abs() < 2e-6);
            }
        }
        assert!(gelu_erf(&[], 2).is_empty());
    }

    #[test]
    fn prelu_rectifies_per_channel() {
        let x = [-1.0f32, 2.0, -1.0, 2.0, -4.0, 4.0, -2.0, 0.0];
        assert_eq!(
            prelu(&x, 2, &[0.5, 0.0]),
            [-0.5, 2.0, 0.0, 2.0, -2.0, 4.0, 0.0, 0.0]
        );
    }
}
