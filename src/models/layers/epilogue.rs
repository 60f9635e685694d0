//! What a CPU convolution's output pass does besides storing the sum: add the bias and a
//! residual (a ResNet skip), then rectify per output channel (PReLU, ReLU, leaky ReLU:
//! negative values times the channel's slope). Fused there, these cost no extra pass over
//! the output; as separate tensor ops each is a read and a write of the whole activation,
//! which on the compact GAN's 64-channel layers cost as much as a fifth of the network.

/// The per-output-channel work of the output pass, in torch's order: conv + bias +
/// residual, then the rectifier.
#[derive(Debug, Clone, Copy, Default)]
pub struct Epilogue<'a> {
    /// C_out values.
    pub bias: Option<&'a [f32]>,
    /// The output's shape, (B, C_out, H_out, W_out).
    pub residual: Option<&'a [f32]>,
    /// C_out slopes: y < 0 becomes slope·y.
    pub negative_slopes: Option<&'a [f32]>,
}

impl Epilogue<'_> {
    pub fn bias_of(&self, channel: usize) -> f32 {
        self.bias.map_or(0.0, |b| b[channel])
    }

    pub fn slope_of(&self, channel: usize) -> Option<f32> {
        self.negative_slopes.map(|s| s[channel])
    }
}

/// dst = sum (+ residual), then rectified with `slope`: one output row's final store.
pub fn store_row(dst: &mut [f32], sum: &[f32], residual: Option<&[f32]>, slope: Option<f32>) {
    match (residual, slope) {
        (None, None) => dst.copy_from_slice(&sum[..dst.len()]),
        (Some(r), None) => {
            for ((d, &v), &r) in dst.iter_mut().zip(sum).zip(r) {
                *d = v + r;
            }
        }
        (None, Some(a)) => {
            for (d, &v) in dst.iter_mut().zip(sum) {
                *d = rectify(v, a);
            }
        }
        (Some(r), Some(a)) => {
            for ((d, &v), &r) in dst.iter_mut().zip(sum).zip(r) {
                *d = rectify(v + r, a);
            }
        }
    }
}

/// Rectifies a (B, C, plane) buffer in place: the pass for routes that cannot fuse it.
pub fn rectify_planes(buf: &mut [f32], plane: usize, slopes: &[f32]) {
    if plane == 0 || slopes.is_empty() {
        return;
    }
    for (i, p) in buf.chunks_exact_mut(plane).enumerate() {
        let a = slopes[i % slopes.len()];
        p.iter_mut().for_each(|v| *v = rectify(*v, a));
    }
}

/// v for v ≥ 0, a·v below (torch's PReLU / ReLU / leaky ReLU on one value).
#[inline(always)]
pub fn rectify(v: f32, a: f32) -> f32 {
    if v >= 0.0 {
        v
    } else {
        a * v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_sum_plus_residual_then_rectifies() {
        let sum = [-2.0f32, -0.5, 0.0, 1.5];
        let res = [1.0f32, 1.0, -1.0, -1.0];
        let mut dst = [9f32; 4];
        store_row(&mut dst, &sum, None, None);
        assert_eq!(dst, sum);
        store_row(&mut dst, &sum, Some(&res), None);
        assert_eq!(dst, [-1.0, 0.5, -1.0, 0.5]);
        store_row(&mut dst, &sum, None, Some(0.25));
        assert_eq!(dst, [-0.5, -0.125, 0.0, 1.5]);
        // The residual is added before rectifying, as in conv → add → PReLU.
        store_row(&mut dst, &sum, Some(&res), Some(0.0));
        assert_eq!(dst, [0.0, 0.5, 0.0, 0.5]);
        let mut planes = [-1.0f32, 2.0, -1.0, 2.0, -4.0, 4.0];
        rectify_planes(&mut planes, 2, &[0.5, 0.0]);
        assert_eq!(planes, [-0.5, 2.0, 0.0, 2.0, -2.0, 4.0]);
    }
}
