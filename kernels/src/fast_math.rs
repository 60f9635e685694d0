//! Vectorisable f32 elementwise maths for the kernels — `exp`, `erf`, SiLU, erf-GELU and a
//! row softmax — compiled three times (AVX-512, AVX2+FMA, baseline) and chosen at run time.
//!
//! candle's CPU unary ops call libm once per element (`erff`, `expf`), which the compiler cannot
//! vectorise; the erf-GELU of one GEGLU feed-forward at a 64×64 latent then takes longer than
//! the linear layer feeding it. Here:
//! - `exp` is Cody–Waite range reduction x = n·ln2 + r, |r| ≤ ln2/2, a degree-7 Taylor
//!   polynomial for eʳ (truncation below 1e-8 relative) and 2ⁿ built in the exponent bits;
//! - `erf` is the odd/even rational approximation x·P(x²)/Q(x²) on [-4, 4] (clamped beyond,
//!   where erf is ±1 in f32) that Eigen and TensorFlow use for f32.
//!
//! Both are checked against f64 references in the tests below (exp within 2e-7 relative, erf
//! within 5e-7). SiLU and GELU are then formed as torch forms them: x·σ(x) = x / (1 + e⁻ˣ) and
//! ½·x·(1 + erf(x/√2)).

/// Defines `pub fn $name(args)` that runs `$body` compiled for AVX-512, for AVX2+FMA or for the
/// baseline target, whichever the CPU running it supports ([`simd_level`]). A variant runs
/// only on a CPU with every feature it is compiled for: executing an instruction the CPU lacks
/// is undefined behaviour, not a fault.
macro_rules! multiversion {
    ($(#[$meta:meta])* pub fn $name:ident($($arg:ident : $ty:ty),* $(,)?) $body:block) => {
        $(#[$meta])*
        pub fn $name($($arg: $ty),*) {
            #[inline(always)]
            fn body($($arg: $ty),*) $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
                unsafe fn v4($($arg: $ty),*) {
                    body($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn v3($($arg: $ty),*) {
                    body($($arg),*)
                }
                match $crate::fast_math::simd_level() {
                    // SAFETY: `v4` is compiled for avx512f, avx512vl, avx2 and fma, and
                    // `SimdLevel::V4` means the running CPU was found to have all four.
                    $crate::fast_math::SimdLevel::V4 => return unsafe { v4($($arg),*) },
                    // SAFETY: `v3` is compiled for avx2 and fma, and `SimdLevel::V3` means the
                    // running CPU was found to have both.
                    $crate::fast_math::SimdLevel::V3 => return unsafe { v3($($arg),*) },
                    $crate::fast_math::SimdLevel::Baseline => {}
                }
            }
            body($($arg),*)
        }
    };
}

/// The widest instruction set the [`multiversion`] functions may use on this CPU.
#[cfg(target_arch = "x86_64")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SimdLevel {
    Baseline,
    /// avx2 and fma.
    V3,
    /// avx512f, avx512vl, avx2 and fma.
    V4,
}

/// The running CPU's [`SimdLevel`], detected on the first call (every feature a variant is
/// compiled for is checked) and then read from one atomic: the transform loops call into
/// these functions hundreds of thousands of times per network.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) fn simd_level() -> SimdLevel {
    match SIMD_LEVEL.load(std::sync::atomic::Ordering::Relaxed) {
        2 => SimdLevel::V4,
        1 => SimdLevel::V3,
        0 => SimdLevel::Baseline,
        _ => detect_simd_level(),
    }
}

/// [`SimdLevel`] as 0, 1, 2; `u8::MAX` until detected.
#[cfg(target_arch = "x86_64")]
static SIMD_LEVEL: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(u8::MAX);

#[cfg(target_arch = "x86_64")]
#[cold]
#[inline(never)]
fn detect_simd_level() -> SimdLevel {
    let v4 = std::is_x86_feature_detected!("avx512f")
        && std::is_x86_feature_detected!("avx512vl")
        && std::is_x86_feature_detected!("avx2")
        && std::is_x86_feature_detected!("fma");
    let v3 = std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma");
    let (level, code) = if v4 {
        (SimdLevel::V4, 2)
    } else if v3 {
        (SimdLevel::V3, 1)
    } else {
        (SimdLevel::Baseline, 0)
    };
    SIMD_LEVEL.store(code, std::sync::atomic::Ordering::Relaxed);
    level
}

/// For the other CPU kernels' loops (the Winograd transforms).
pub(crate) use multiversion;

const LOG2_E: f32 = std::f32::consts::LOG2_E;
/// ln 2 split so that n·LN2_HI is exact for the |n| ≤ 128 used here.
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// 1.5·2²³: adding it to |v| < 2²² rounds v to an integer kept in the low mantissa bits.
const ROUND_MAGIC: f32 = 12_582_912.0;

/// eˣ for f32, relative error below 2e-7 over the whole finite range; 0 below -87.3 (where
/// f32 would go subnormal) and +inf above 88.7.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    let xc = x.clamp(-87.3, 88.7);
    // n = round(x·log2 e) by the 1.5·2²³ trick: after the add, the float's low mantissa bits
    // hold n itself, so no float→int conversion (which Rust saturates, blocking vectors).
    let t = xc * LOG2_E + ROUND_MAGIC;
    let n = t - ROUND_MAGIC;
    let n_bits = t.to_bits().wrapping_sub(ROUND_MAGIC.to_bits());
    let r = xc - n * LN2_HI - n * LN2_LO;
    // eʳ by Horner, Taylor to r⁷ (|r| ≤ 0.35: remainder < 1e-8 relative).
    let p = 1.0 / 5040.0;
    let p = p * r + 1.0 / 720.0;
    let p = p * r + 1.0 / 120.0;
    let p = p * r + 1.0 / 24.0;
    let p = p * r + 1.0 / 6.0;
    let p = p * r + 0.5;
    let p = p * r + 1.0;
    let p = p * r + 1.0;
    let two_n = f32::from_bits(n_bits.wrapping_add(127) << 23);
    let y = p * two_n;
    if x > 88.7 {
        f32::INFINITY
    } else if x < -87.3 {
        0.0
    } else {
        y
    }
}

/// erf(x) for f32 (absolute error about 1e-7).
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let p = -2.726_142_3e-10f32;
    let p = p * x2 + 2.770_681_4e-8;
    let p = p * x2 + -2.101_024e-6;
    let p = p * x2 + -5.692_506_4e-5;
    let p = p * x2 + -7.349_906_3e-4;
    let p = p * x2 + -2.954_6e-3;
    let p = p * x2 + -1.609_603_3e-2;
    let q = -1.456_607_2e-5f32;
    let q = q * x2 + -2.133_740_6e-4;
    let q = q * x2 + -1.682_827e-3;
    let q = q * x2 + -7.373_329e-3;
    let q = q * x2 + -1.426_474e-2;
    x * p / q
}

/// SiLU: x·σ(x).
#[inline(always)]
pub fn silu(x: f32) -> f32 {
    x / (1.0 + exp(-x))
}

/// The exact (erf) GELU: ½·x·(1 + erf(x/√2)).
#[inline(always)]
pub fn gelu_erf(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

multiversion! {
    /// out[i] = x[i]·scale + shift, then SiLU when `silu`: one channel of a group norm.
    pub fn affine_silu(x: &[f32], out: &mut [f32], scale: f32, shift: f32, silu_after: bool) {
        if silu_after {
            for (o, &v) in out.iter_mut().zip(x) {
                *o = silu(v * scale + shift);
            }
        } else {
            for (o, &v) in out.iter_mut().zip(x) {
                *o = v * scale + shift;
            }
        }
    }
}

multiversion! {
    /// dst[i] += a·src[i].
    pub fn axpy(dst: &mut [f32], a: f32, src: &[f32]) {
        for (d, &s) in dst.iter_mut().zip(src) {
            *d += a * s;
        }
    }
}

multiversion! {
    /// out[i] = GELU(x[i]) (the exact, erf form).
    pub fn gelu_erf_slice(x: &[f32], out: &mut [f32]) {
        for (o, &v) in out.iter_mut().zip(x) {
            *o = gelu_erf(v);
        }
    }
}

multiversion! {
    /// out = (x - mean)·inv_std·w + b: one normalised row.
    pub fn affine_row(x: &[f32], out: &mut [f32], mean: f32, inv_std: f32, w: &[f32], b: &[f32]) {
        let n = out.len();
        let (x, w, b) = (&x[..n], &w[..n], &b[..n]);
        for i in 0..n {
            out[i] = (x[i] - mean) * inv_std * w[i] + b[i];
        }
    }
}

multiversion! {
    /// x = GELU(x), in place (the erf form).
    pub fn gelu_erf_in_place(x: &mut [f32]) {
        for v in x.iter_mut() {
            *v = gelu_erf(*v);
        }
    }
}

multiversion! {
    /// One GEGLU row: out[j] = value[j]·GELU(gate[j]).
    pub fn geglu_row(value: &[f32], gate: &[f32], out: &mut [f32]) {
        for ((o, &v), &g) in out.iter_mut().zip(value).zip(gate) {
            *o = v * gelu_erf(g);
        }
    }
}

/// Mean and 1/√(variance + eps) of `x` (biased variance, as torch's norms): f64 statistics
/// from vectorised f32 partial sums, in two passes, the second centred on the first's mean
/// and corrected for that centre's rounding to f32.
pub fn mean_inv_std(x: &[f32], eps: f64) -> (f64, f64) {
    let n = x.len().max(1) as f64;
    let mut acc = [0f64; 2];
    sum_and_centred_squares(x, 0.0, &mut acc);
    let mean = acc[0] / n;
    let mut acc = [0f64; 2];
    sum_and_centred_squares(x, mean as f32, &mut acc);
    let offset = acc[0] / n;
    let var = (acc[1] / n - offset * offset).max(0.0);
    (mean, 1.0 / (var + eps).sqrt())
}

multiversion! {
    /// Adds Σ (x - centre) and Σ (x - centre)² of `x` to `acc`,
    /// accumulating 16-wide f32 partial sums into f64 every block so that long groups keep
    /// f64 accuracy.
    pub fn sum_and_centred_squares(x: &[f32], centre: f32, acc: &mut [f64; 2]) {
        const LANES: usize = 16;
        const BLOCK: usize = LANES * 64;
        for block in x.chunks(BLOCK) {
            let mut s = [0f32; LANES];
            let mut q = [0f32; LANES];
            let mut lanes = block.chunks_exact(LANES);
            // Two passes over the (L1-resident) block, one accumulator array each: the
            // compiler turns each lane loop into one vector operation only when a loop
            // updates a single array.
            for chunk in &mut lanes {
                for i in 0..LANES {
                    s[i] += chunk[i] - centre;
                }
            }
            for chunk in block.chunks_exact(LANES) {
                for i in 0..LANES {
                    let d = chunk[i] - centre;
                    q[i] += d * d;
                }
            }
            let mut st = 0f64;
            let mut qt = 0f64;
            for &v in lanes.remainder() {
                let v = v - centre;
                st += v as f64;
                qt += (v * v) as f64;
            }
            acc[0] += s.iter().map(|&v| v as f64).sum::<f64>() + st;
            acc[1] += q.iter().map(|&v| v as f64).sum::<f64>() + qt;
        }
    }
}

multiversion! {
    /// Softmax of one row, in place: max, then exp(x - max) with its sum, then the scaling,
    /// each a vectorised pass (partial maxima and sums in 16 f32 lanes, as torch's kernel).
    pub fn softmax_row(row: &mut [f32]) {
        const LANES: usize = 16;
        let mut m = [f32::NEG_INFINITY; LANES];
        let mut chunks = row.chunks_exact(LANES);
        for chunk in &mut chunks {
            for i in 0..LANES {
                m[i] = if chunk[i] > m[i] { chunk[i] } else { m[i] };
            }
        }
        let mut max = f32::NEG_INFINITY;
        for &v in m.iter().chain(chunks.remainder()) {
            max = if v > max { v } else { max };
        }
        if max == f32::NEG_INFINITY {
            // An all -inf row (everything masked): torch gives NaN; so does 0/0 below.
            max = 0.0;
        }
        let mut s = [0f32; LANES];
        let mut chunks = row.chunks_exact_mut(LANES);
        for chunk in &mut chunks {
            for v in chunk.iter_mut() {
                *v = exp(*v - max);
            }
            for i in 0..LANES {
                s[i] += chunk[i];
            }
        }
        let mut sum: f32 = s.iter().sum();
        for v in chunks.into_remainder() {
            *v = exp(*v - max);
            sum += *v;
        }
        let inv = 1.0 / sum;
        for v in row.iter_mut() {
            *v *= inv;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::{erf64, gelu64};

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn simd_level_has_every_feature_it_promises() {
        let has = |f: &str| match f {
            "avx512f" => std::is_x86_feature_detected!("avx512f"),
            "avx512vl" => std::is_x86_feature_detected!("avx512vl"),
            "avx2" => std::is_x86_feature_detected!("avx2"),
            _ => std::is_x86_feature_detected!("fma"),
        };
        let level = simd_level();
        assert_eq!(level, simd_level(), "detected once, then read back");
        match level {
            SimdLevel::V4 => assert!(["avx512f", "avx512vl", "avx2", "fma"]
                .iter()
                .all(|f| has(f))),
            SimdLevel::V3 => assert!(has("avx2") && has("fma")),
            SimdLevel::Baseline => assert!(!(has("avx2") && has("fma"))),
        }
    }

    #[test]
    fn exp_is_within_2e_7_relative() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let want = (x as f64).exp();
            let rel = ((exp(x) as f64 - want) / want).abs();
            worst = worst.max(rel);
            x += 0.0137;
        }
        assert!(worst < 2e-7, "worst relative error {worst}");
        assert_eq!(exp(-200.0), 0.0);
        assert_eq!(exp(200.0), f32::INFINITY);
        assert_eq!(exp(0.0), 1.0);
    }

    #[test]
    fn erf_and_gelu_are_within_5e_7() {
        let mut worst = 0f64;
        let mut x = -6.0f32;
        while x < 6.0 {
            worst = worst.max((erf(x) as f64 - erf64(x as f64)).abs());
            x += 0.00731;
        }
        assert!(worst < 5e-7, "worst erf error {worst}");
        for &x in &[-3.0f32, -0.5, 0.0, 0.3, 1.0, 2.5] {
            let want = gelu64(x as f64);
            assert!((gelu_erf(x) as f64 - want).abs() < 1e-6, "gelu({x})");
            let want_silu = x as f64 / (1.0 + (-x as f64).exp());
            assert!((silu(x) as f64 - want_silu).abs() < 5e-7, "silu({x})");
        }
    }

    #[test]
    fn softmax_row_matches_an_f64_softmax() {
        for len in [1usize, 7, 16, 77, 1000] {
            let x: Vec<f32> = (0..len)
                .map(|i| (i as f32 * 0.61).cos() * 9.0 - 2.0)
                .collect();
            let mut y = x.clone();
            softmax_row(&mut y);
            let m = x.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b as f64));
            let z: f64 = x.iter().map(|&v| (v as f64 - m).exp()).sum();
            for (&yi, &xi) in y.iter().zip(&x) {
                let want = (xi as f64 - m).exp() / z;
                assert!(
                    (yi as f64 - want).abs() <= 1e-6 * want.max(1e-3),
                    "len {len}: {yi} vs {want}"
                );
            }
        }
        let mut masked = vec![0.5f32, f32::NEG_INFINITY, 1.5];
        softmax_row(&mut masked);
        assert_eq!(masked[1], 0.0);
        assert!((masked[0] + masked[2] - 1.0).abs() < 1e-6);
    }

    #[test]
    fn slice_kernels_agree_with_the_scalar_forms() {
        let x: Vec<f32> = (0..1000).map(|i| (i as f32 * 0.37).sin() * 5.0).collect();
        let mut out = vec![0f32; x.len()];
        affine_silu(&x, &mut out, 0.5, 0.25, true);
        for (o, &v) in out.iter().zip(&x) {
            assert_eq!(*o, silu(v * 0.5 + 0.25));
        }
        affine_silu(&x, &mut out, 0.5, 0.25, false);
        assert_eq!(out[7], x[7] * 0.5 + 0.25);
        let gate: Vec<f32> = x.iter().map(|v| v * 0.7 - 0.1).collect();
        geglu_row(&x, &gate, &mut out);
        for i in 0..x.len() {
            assert_eq!(out[i], x[i] * gelu_erf(gate[i]));
        }
        let mut acc = [0f64; 2];
        sum_and_centred_squares(&x, 0.5, &mut acc);
        let s: f64 = x.iter().map(|&v| v as f64 - 0.5).sum();
        let q: f64 = x.iter().map(|&v| (v as f64 - 0.5).powi(2)).sum();
        assert!(
            (acc[0] - s).abs() < 1e-3 && (acc[1] - q).abs() < 1e-2,
            "{acc:?} {s} {q}"
        );
    }
}
