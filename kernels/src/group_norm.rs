//! `torch.nn.GroupNorm` (affine) over a contiguous (B, C, spatial…) buffer, optionally fused
//! with the SiLU that nearly always follows it in diffusers' networks: one kernel in place of
//! the half-dozen full-size temporaries a tensor-op formulation needs. Groups are spread over
//! the threads.
//!
//! Statistics are two-pass (mean, then centred squares) with f64 accumulation, so half
//! precision inputs neither overflow nor lose the mean: for f32 with vectorised f32 partial
//! sums folded into f64 every 1024 values ([`group_norm_f32`]); for other element types in
//! eight f64 lanes ([`group_norm`]).

use crate::fast_math::{affine_silu, mean_inv_std};
use crate::parallel::{for_each_chunk_mut, threads_for};

/// The layer: its shape, eps, affine parameters and whether SiLU follows.
#[derive(Debug, Clone, Copy)]
pub struct GroupNormParams<'a> {
    /// Channels per image (C).
    pub channels: usize,
    /// Values per channel (the product of the spatial dimensions).
    pub spatial: usize,
    /// Groups; divides `channels`.
    pub groups: usize,
    pub eps: f64,
    /// C values each.
    pub weight: &'a [f32],
    pub bias: &'a [f32],
    /// SiLU(GroupNorm(x)).
    pub silu: bool,
}

impl GroupNormParams<'_> {
    fn check(&self, len: usize) {
        assert!(self.groups > 0 && self.channels % self.groups == 0);
        assert_eq!(self.weight.len(), self.channels);
        assert_eq!(self.bias.len(), self.channels);
        let image = self.channels * self.spatial;
        assert!(
            image == 0 || len % image == 0,
            "group norm: not a whole number of images"
        );
    }
}

/// GroupNorm of an f32 (B, C, spatial) buffer.
///
/// # Panics
/// When the buffers do not match the parameters.
pub fn group_norm_f32(x: &[f32], p: &GroupNormParams, threads: usize) -> Vec<f32> {
    p.check(x.len());
    let mut out = vec![0f32; x.len()];
    for_each_group(x, &mut out, p, threads, |xg, og, w, b| {
        let (mean, inv_std) = mean_inv_std(xg, p.eps);
        for_each_channel(
            xg,
            og,
            p.spatial,
            (w, b),
            (mean, inv_std),
            |xc, oc, scale, shift| affine_silu(xc, oc, scale, shift, p.silu),
        );
    });
    out
}

/// GroupNorm of a buffer of any element type that converts to and from f64 (f16, bf16, f64);
/// the affine map and SiLU run in f32, as for [`group_norm_f32`].
///
/// # Panics
/// When the buffers do not match the parameters.
pub fn group_norm<E: Copy + Send + Sync>(
    x: &[E],
    p: &GroupNormParams,
    threads: usize,
    to_f64: impl Fn(E) -> f64 + Sync,
    from_f64: impl Fn(f64) -> E + Sync,
) -> Vec<E> {
    p.check(x.len());
    let mut out = vec![from_f64(0.0); x.len()];
    for_each_group(x, &mut out, p, threads, |xg, og, w, b| {
        let n = xg.len() as f64;
        // Two passes (mean, then centred squares) with f64 lanes: exact enough in any dtype,
        // and the lane layout lets the compiler vectorise the sums.
        let mean = lane_sum(xg, &to_f64, |v| v) / n;
        let var = lane_sum(xg, &to_f64, |v| (v - mean) * (v - mean)) / n;
        let inv_std = 1.0 / (var + p.eps).sqrt();
        for_each_channel(
            xg,
            og,
            p.spatial,
            (w, b),
            (mean, inv_std),
            |xc, oc, scale, shift| {
                for (o, &v) in oc.iter_mut().zip(xc) {
                    let y = to_f64(v) as f32 * scale + shift;
                    let y = if p.silu { y / (1.0 + (-y).exp()) } else { y };
                    *o = from_f64(y as f64);
                }
            },
        );
    });
    out
}

/// Runs `affine(x_channel, out_channel, scale, shift)` on each channel of a group, with the
/// group's statistics folded into the channel's weight and bias: y = x·scale + shift.
fn for_each_channel<E>(
    xg: &[E],
    og: &mut [E],
    spatial: usize,
    (w, b): (&[f32], &[f32]),
    (mean, inv_std): (f64, f64),
    mut affine: impl FnMut(&[E], &mut [E], f32, f32),
) {
    for (ch, (xc, oc)) in xg.chunks(spatial).zip(og.chunks_mut(spatial)).enumerate() {
        let scale = (inv_std * w[ch] as f64) as f32;
        let shift = (b[ch] as f64 - mean * inv_std * w[ch] as f64) as f32;
        affine(xc, oc, scale, shift);
    }
}

/// Runs `normalise(x_group, out_group, weight, bias)` on every group (its channels are
/// contiguous, `spatial` values each), the groups split evenly over the threads.
fn for_each_group<E: Copy + Send + Sync>(
    x: &[E],
    out: &mut [E],
    p: &GroupNormParams,
    threads: usize,
    normalise: impl Fn(&[E], &mut [E], &[f32], &[f32]) + Sync,
) {
    let per_group_channels = p.channels / p.groups;
    let group_len = per_group_channels * p.spatial;
    if group_len == 0 {
        return;
    }
    let total_groups = x.len() / group_len;
    let threads = threads_for(threads, total_groups, x.len());
    let groups_per_thread = total_groups.div_ceil(threads);
    let span = groups_per_thread * group_len;
    for_each_chunk_mut(out, span, |t, os| {
        let xs = &x[t * span..t * span + os.len()];
        for (i, (xg, og)) in xs
            .chunks(group_len)
            .zip(os.chunks_mut(group_len))
            .enumerate()
        {
            let g = (t * groups_per_thread + i) % p.groups;
            let c0 = g * per_group_channels;
            let channels = c0..c0 + per_group_channels;
            normalise(xg, og, &p.weight[channels.clone()], &p.bias[channels]);
        }
    });
}

/// Sum of `f(x)` over a slice, in eight f64 lanes.
fn lane_sum<E: Copy>(x: &[E], to_f64: impl Fn(E) -> f64, f: impl Fn(f64) -> f64) -> f64 {
    let mut lanes = [0f64; 8];
    let mut chunks = x.chunks_exact(8);
    for chunk in &mut chunks {
        for (lane, &v) in lanes.iter_mut().zip(chunk) {
            *lane += f(to_f64(v));
        }
    }
    let tail: f64 = chunks.remainder().iter().map(|&v| f(to_f64(v))).sum();
    lanes.iter().sum::<f64>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    /// torch's formula in f64.
    fn naive(x: &[f32], p: &GroupNormParams) -> Vec<f64> {
        let group_len = p.channels / p.groups * p.spatial;
        let mut out = vec![0f64; x.len()];
        for (gi, xg) in x.chunks(group_len).enumerate() {
            let n = xg.len() as f64;
            let mean = xg.iter().map(|&v| v as f64).sum::<f64>() / n;
            let var = xg.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
            let inv = 1.0 / (var + p.eps).sqrt();
            for (i, &v) in xg.iter().enumerate() {
                let c = (gi % p.groups) * (p.channels / p.groups) + i / p.spatial;
                let y = (v as f64 - mean) * inv * p.weight[c] as f64 + p.bias[c] as f64;
                out[gi * group_len + i] = if p.silu { y / (1.0 + (-y).exp()) } else { y };
            }
        }
        out
    }

    /// Both kernels against the formula, on one thread and (above the parallel threshold) on
    /// several, on inputs with an offset mean.
    #[test]
    fn kernels_match_the_formula() {
        for (b, channels, spatial, groups, threads) in [
            (2usize, 8usize, 35usize, 4usize, 1usize),
            (2, 32, 48 * 48, 8, 3),
            (1, 6, 1, 3, 2),
        ] {
            let weight: Vec<f32> = (0..channels).map(|c| 0.7 + 0.03 * c as f32).collect();
            let bias: Vec<f32> = (0..channels).map(|c| 0.1 - 0.02 * c as f32).collect();
            let x: Vec<f32> = (0..b * channels * spatial)
                .map(|i| ((i * 7919 % 1013) as f32) * 0.004 + 0.5)
                .collect();
            for silu in [false, true] {
                let p = GroupNormParams {
                    channels,
                    spatial,
                    groups,
                    eps: 1e-6,
                    weight: &weight,
                    bias: &bias,
                    silu,
                };
                let want = naive(&x, &p);
                let fast = group_norm_f32(&x, &p, threads);
                let lanes = group_norm(&x, &p, threads, |v| v as f64, |v| v as f32);
                for ((f, l), w) in fast.iter().zip(&lanes).zip(&want) {
                    assert!((*f as f64 - w).abs() < 1e-5, "f32 kernel: {f} vs {w}");
                    assert!((*l as f64 - w).abs() < 1e-5, "lane kernel: {l} vs {w}");
                }
                let wide = group_norm(
                    &x.iter().map(|&v| v as f64).collect::<Vec<_>>(),
                    &p,
                    threads,
                    |v| v,
                    |v| v,
                );
                for (g, w) in wide.iter().zip(&want) {
                    assert!((g - w).abs() < 1e-5);
                }
            }
        }
    }

    /// The statistics helper against f64 sums, on long groups with a large mean.
    #[test]
    fn statistics_keep_f64_accuracy() {
        let x: Vec<f32> = (0..100_003)
            .map(|i| 1000.0 + ((i * 37 % 101) as f32) * 0.01)
            .collect();
        let (mean, inv_std) = mean_inv_std(&x, 0.0);
        let m = x.iter().map(|&v| v as f64).sum::<f64>() / x.len() as f64;
        let var = x.iter().map(|&v| (v as f64 - m).powi(2)).sum::<f64>() / x.len() as f64;
        // The mean from f32 partial sums (relative error ~1e-7); the variance centred on it and
        // corrected for its error, so nearly exact although the mean is 10⁴ × the spread.
        assert!((mean - m).abs() < 1e-6 * m, "{mean} vs {m}");
        let rel = (inv_std * var.sqrt() - 1.0).abs();
        assert!(rel < 1e-6, "{inv_std} vs {}: {rel}", 1.0 / var.sqrt());
    }
}
