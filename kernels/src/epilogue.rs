//! What an output pass does besides storing the sum, shared by the convolution, Winograd and
//! linear routes: add the bias and a residual (a ResNet or transformer skip), then an
//! activation (a per-channel rectifier: PReLU, ReLU, leaky ReLU; or the erf GELU). Fused there,
//! these cost no extra pass over the output; as separate tensor ops each is a read and a write
//! of the whole activation, which on the compact GAN's 64-channel layers cost as much as a
//! fifth of the network.
//!
//! The routes apply it in two ways, both here: a GEMM that accumulates starts from
//! residual + bias (`fill_accumulator`); a route that stores finished rows adds them on the
//! way (`store_row`). Each route keeps its summation order, so results are the same bits as
//! when each route had its own copy of these loops.

use std::mem::MaybeUninit;

use crate::fast_math::gelu_erf_in_place;

/// The per-output-channel work of an output pass, in torch's order: sum + bias + residual,
/// then the activation.
#[derive(Debug, Clone, Copy, Default)]
pub struct Epilogue<'a> {
    /// One value per output channel (a convolution's C_out, a linear layer's out features).
    pub bias: Option<&'a [f32]>,
    /// Shaped as the output.
    pub residual: Option<&'a [f32]>,
    pub activation: Activation<'a>,
}

/// The element-wise function that ends an output pass.
#[derive(Debug, Clone, Copy, Default)]
pub enum Activation<'a> {
    #[default]
    Identity,
    /// y < 0 becomes slope·y, one slope per output channel (PReLU; ReLU: all 0; leaky ReLU).
    Rectify(&'a [f32]),
    /// torch's exact (erf) GELU.
    GeluErf,
}

impl Epilogue<'_> {
    /// Channel `channel`'s bias, 0 without one.
    pub fn bias_of(&self, channel: usize) -> f32 {
        self.bias.map_or(0.0, |b| b[channel])
    }

    /// Channel `channel`'s rectifier slope, when the activation is a rectifier.
    pub fn slope_of(&self, channel: usize) -> Option<f32> {
        match self.activation {
            Activation::Rectify(s) => Some(s[channel]),
            _ => None,
        }
    }
}

impl Activation<'_> {
    /// Applies the activation to a channel-major (B, C, plane) buffer in place: the pass for
    /// routes that cannot fuse it into their stores.
    pub(crate) fn apply_planes(&self, buf: &mut [f32], plane: usize) {
        match *self {
            Activation::Identity => {}
            Activation::Rectify(slopes) => rectify_planes(buf, plane, slopes),
            Activation::GeluErf => gelu_erf_in_place(buf),
        }
    }

    /// The activation as a function of row stretches, for row-major outputs whose channels
    /// are the columns (linear layers); `None` for the identity.
    ///
    /// # Panics
    /// On a per-channel rectifier, which a row stretch cannot apply.
    pub(crate) fn row_post(&self) -> Option<fn(&mut [f32])> {
        match self {
            Activation::Identity => None,
            Activation::GeluErf => Some(gelu_erf_in_place),
            Activation::Rectify(_) => panic!("per-channel rectifiers apply to channel planes"),
        }
    }
}

/// Which index of a row-major (rows × n) block picks the bias value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BiasAlong {
    /// One value per row (channel-major outputs: convolutions).
    Rows,
    /// One value per column (row-major token outputs: linear layers).
    Cols,
}

/// An output element that can be set: an initialised f32 or an unwritten slot of a buffer's
/// spare capacity.
pub(crate) trait Slot {
    fn set(&mut self, v: f32);
}

impl Slot for f32 {
    #[inline(always)]
    fn set(&mut self, v: f32) {
        *self = v;
    }
}

impl Slot for MaybeUninit<f32> {
    #[inline(always)]
    fn set(&mut self, v: f32) {
        self.write(v);
    }
}

/// Sets a (rows × n) GEMM destination to what the GEMM should accumulate onto: residual + bias,
/// the residual, or the bias. Returns whether it wrote anything (the GEMM's `accumulate`);
/// when it did not, `dst` is untouched and the GEMM must overwrite it.
pub(crate) fn fill_accumulator<S: Slot>(
    dst: &mut [S],
    n: usize,
    bias: Option<&[f32]>,
    along: BiasAlong,
    residual: Option<&[f32]>,
) -> bool {
    if n == 0 || (bias.is_none() && residual.is_none()) {
        return bias.is_some() || residual.is_some();
    }
    for (i, row) in dst.chunks_exact_mut(n).enumerate() {
        let res = residual.map(|r| &r[i * n..(i + 1) * n]);
        match (res, bias, along) {
            (Some(r), Some(b), BiasAlong::Rows) => {
                let b = b[i];
                row.iter_mut().zip(r).for_each(|(d, &r)| d.set(r + b));
            }
            (Some(r), Some(b), BiasAlong::Cols) => {
                for ((d, &r), &b) in row.iter_mut().zip(r).zip(&b[..n]) {
                    d.set(r + b);
                }
            }
            (Some(r), None, _) => row.iter_mut().zip(r).for_each(|(d, &r)| d.set(r)),
            (None, Some(b), BiasAlong::Rows) => {
                let b = b[i];
                row.iter_mut().for_each(|d| d.set(b));
            }
            (None, Some(b), BiasAlong::Cols) => {
                row.iter_mut().zip(&b[..n]).for_each(|(d, &b)| d.set(b));
            }
            (None, None, _) => unreachable!("returned above"),
        }
    }
    true
}

/// dst = (sum + bias) + residual, then rectified with `slope`: one output row's final store.
/// `bias` has one value per element of the row (a linear layer's columns).
pub(crate) fn store_row(
    dst: &mut [f32],
    sum: &[f32],
    bias: Option<&[f32]>,
    residual: Option<&[f32]>,
    slope: Option<f32>,
) {
    let sum = &sum[..dst.len()];
    match (bias, residual, slope) {
        (None, None, None) => dst.copy_from_slice(sum),
        (None, Some(r), None) => {
            for ((d, &v), &r) in dst.iter_mut().zip(sum).zip(r) {
                *d = v + r;
            }
        }
        (None, None, Some(a)) => {
            for (d, &v) in dst.iter_mut().zip(sum) {
                *d = rectify(v, a);
            }
        }
        (None, Some(r), Some(a)) => {
            for ((d, &v), &r) in dst.iter_mut().zip(sum).zip(r) {
                *d = rectify(v + r, a);
            }
        }
        (Some(b), r, a) => {
            for (i, (d, &v)) in dst.iter_mut().zip(sum).enumerate() {
                let v = v + b[i];
                let v = match r {
                    Some(r) => v + r[i],
                    None => v,
                };
                *d = match a {
                    Some(a) => rectify(v, a),
                    None => v,
                };
            }
        }
    }
}

/// Rectifies a (B, C, plane) buffer in place, channel c with `slopes[c]`.
pub(crate) fn rectify_planes(buf: &mut [f32], plane: usize, slopes: &[f32]) {
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
pub(crate) fn rectify(v: f32, a: f32) -> f32 {
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
        store_row(&mut dst, &sum, None, None, None);
        assert_eq!(dst, sum);
        store_row(&mut dst, &sum, None, Some(&res), None);
        assert_eq!(dst, [-1.0, 0.5, -1.0, 0.5]);
        store_row(&mut dst, &sum, None, None, Some(0.25));
        assert_eq!(dst, [-0.5, -0.125, 0.0, 1.5]);
        // The residual is added before rectifying, as in conv → add → PReLU.
        store_row(&mut dst, &sum, None, Some(&res), Some(0.0));
        assert_eq!(dst, [0.0, 0.5, 0.0, 0.5]);
        // A per-column bias comes before the residual.
        let bias = [0.5f32, 0.5, 2.0, -2.0];
        store_row(&mut dst, &sum, Some(&bias), Some(&res), None);
        assert_eq!(dst, [-0.5, 1.0, 1.0, -1.5]);
        store_row(&mut dst, &sum, Some(&bias), None, Some(0.5));
        assert_eq!(dst, [-0.75, 0.0, 2.0, -0.25]);
        let mut planes = [-1.0f32, 2.0, -1.0, 2.0, -4.0, 4.0];
        rectify_planes(&mut planes, 2, &[0.5, 0.0]);
        assert_eq!(planes, [-0.5, 2.0, 0.0, 2.0, -2.0, 4.0]);
    }

    #[test]
    fn accumulator_starts_from_residual_plus_bias() {
        let res = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
        let bias = [10.0f32, 20.0, 30.0];
        // 2 rows × 3 columns, bias per row.
        let mut dst = [0f32; 6];
        assert!(fill_accumulator(
            &mut dst,
            3,
            Some(&bias),
            BiasAlong::Rows,
            Some(&res)
        ));
        assert_eq!(dst, [11.0, 12.0, 13.0, 24.0, 25.0, 26.0]);
        // Bias per column, into unwritten memory.
        let mut slots = [MaybeUninit::<f32>::uninit(); 6];
        assert!(fill_accumulator(
            &mut slots,
            3,
            Some(&bias),
            BiasAlong::Cols,
            Some(&res)
        ));
        // SAFETY: every slot was written above (2 full rows of 3).
        let got = slots.map(|s| unsafe { s.assume_init() });
        assert_eq!(got, [11.0, 22.0, 33.0, 14.0, 25.0, 36.0]);
        let mut dst = [7f32; 6];
        assert!(fill_accumulator(
            &mut dst,
            3,
            Some(&bias),
            BiasAlong::Cols,
            None
        ));
        assert_eq!(dst, [10.0, 20.0, 30.0, 10.0, 20.0, 30.0]);
        assert!(fill_accumulator(
            &mut dst,
            3,
            None,
            BiasAlong::Rows,
            Some(&res)
        ));
        assert_eq!(dst, res);
        // Nothing to start from: untouched, and the GEMM must overwrite.
        assert!(!fill_accumulator(&mut dst, 3, None, BiasAlong::Rows, None));
        assert_eq!(dst, res);
    }

    #[test]
    fn activations_on_planes() {
        let mut buf = [-1.0f32, 1.0, -2.0, 2.0];
        Activation::Rectify(&[0.5, 0.25]).apply_planes(&mut buf, 2);
        assert_eq!(buf, [-0.5, 1.0, -0.5, 2.0]);
        let mut g = [0.0f32, 1.0];
        Activation::GeluErf.apply_planes(&mut g, 1);
        assert_eq!(g[0], 0.0);
        assert!((g[1] - 0.841_344_7).abs() < 1e-6);
        assert!(Activation::Identity.row_post().is_none());
    }
}
