//! torch's CPU random generator, so that a seed means the same noise here as in diffusers.
//!
//! diffusers draws all its noise with `torch.randn(shape, generator=g, dtype=dtype)` on
//! `g = torch.Generator("cpu").manual_seed(S)`: the image noise, then the latents, then whatever a
//! stochastic solver draws inside `step`. [`TorchRng`] replays that stream. It follows these
//! PyTorch sources (checked against torch 2.15):
//!
//! - `aten/src/ATen/core/MT19937RNGEngine.h`: the engine is plain MT19937, seeded with
//!   `init_genrand` on the **low 32 bits** of the 64-bit seed (`seed & 0xffffffff`).
//! - `aten/src/ATen/CPUGeneratorImpl.cpp`: `manual_seed` clears the cached normals and reseeds;
//!   `random64()` is two engine outputs, the first one in the high half.
//! - `aten/src/ATen/core/TransformationHelper.h`: `uniform_real<T>` keeps the low
//!   `digits(T)` bits (24 for f32 from one 32-bit draw, 53 for f64 from `random64()`) and scales by
//!   `2^-digits`, giving a uniform in `[0, 1)`.
//! - `aten/src/ATen/native/cpu/DistributionTemplates.h` (`normal_kernel`, `normal_fill`,
//!   `NormalFill16`): a contiguous tensor of at least 16 elements is first filled with uniforms,
//!   then Box–Muller runs on blocks of 16 (radius from the first 8, angle from the last 8); when
//!   the size is not a multiple of 16, 16 **fresh** uniforms overwrite the last 16 slots and get the
//!   same transform. Smaller tensors are filled one element at a time by
//! - `aten/src/ATen/core/DistributionsHelper.h` (`normal_distribution<double>`): f64 Box–Muller
//!   from two f64 uniforms, returning `r·cos θ` and caching `r·sin θ` in the generator for the
//!   next small draw. The cache outlives the call and is skipped (not consumed) by the ≥16 path.
//!
//! The f32 block transform here is torch's portable `NormalFill16`, the one its AVX-512, default
//! (no-SIMD) and ARM builds run: `log`/`sqrt` in f32, the angle and `sin`/`cos` in f64, the
//! product rounded to f32. torch's AVX2-only build swaps in polynomial approximations
//! (`avx_mathfun.h`), so on such a CPU torch's own results differ from this in the last bit or so.

use std::f64::consts::TAU;
use std::fmt;

use candle_core::{DType, Device, Shape, Tensor};

use crate::{Error, Result};

/// MT19937 state size and shift (`MERSENNE_STATE_N`, `MERSENNE_STATE_M`).
const MT_N: usize = 624;
const MT_M: usize = 397;
const MATRIX_A: u32 = 0x9908_b0df;
const UPPER_MASK: u32 = 0x8000_0000;
const LOWER_MASK: u32 = 0x7fff_ffff;

/// The Mersenne Twister as torch's `at::mt19937`. torch counts down `left_` and regenerates the
/// whole state lazily on the first draw after seeding; an index that starts at `MT_N` does the same.
#[derive(Clone)]
struct Mt19937 {
    state: [u32; MT_N],
    next: usize,
}

impl Mt19937 {
    /// `init_genrand`: torch passes `seed & 0xffffffff`, so seeds equal mod 2^32 coincide.
    fn new(seed: u32) -> Self {
        let mut state = [0u32; MT_N];
        state[0] = seed;
        for j in 1..MT_N {
            let prev = state[j - 1];
            state[j] = 1_812_433_253u32
                .wrapping_mul(prev ^ (prev >> 30))
                .wrapping_add(j as u32);
        }
        Self { state, next: MT_N }
    }

    fn twist(&mut self) {
        let mix = |u: u32, v: u32| -> u32 {
            let y = (u & UPPER_MASK) | (v & LOWER_MASK);
            (y >> 1) ^ if v & 1 != 0 { MATRIX_A } else { 0 }
        };
        for k in 0..MT_N {
            let next = self.state[(k + 1) % MT_N];
            self.state[k] = self.state[(k + MT_M) % MT_N] ^ mix(self.state[k], next);
        }
        self.next = 0;
    }

    #[inline]
    fn next_u32(&mut self) -> u32 {
        if self.next >= MT_N {
            self.twist();
        }
        let mut y = self.state[self.next];
        self.next += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }
}

/// A random generator that reproduces `torch.Generator("cpu").manual_seed(seed)` followed by
/// successive `torch.randn` calls, value for value.
///
/// Only the element count of each call matters (torch fills in contiguous order), but the split
/// into calls does: a call of n ≥ 16 values and a call of n < 16 values take different paths,
/// and an odd number of small draws leaves a cached value behind for the next small call.
#[derive(Clone)]
pub struct TorchRng {
    mt: Mt19937,
    /// The seed as given, kept for `Debug` and [`TorchRng::seed`] (torch's `initial_seed()`).
    seed: u64,
    /// torch's `next_double_normal_sample_`: the `r·sin θ` half of the last scalar Box–Muller
    /// pair, served to the next scalar draw. (torch also has a float cache, which no CPU `randn`
    /// path touches, so it is not kept here.)
    next_double_normal: Option<f64>,
}

impl fmt::Debug for TorchRng {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The 624-word state is noise to a reader; the seed and position say where we are.
        f.debug_struct("TorchRng")
            .field("seed", &self.seed)
            .field("mt_index", &self.mt.next)
            .field("next_double_normal", &self.next_double_normal)
            .finish()
    }
}

impl TorchRng {
    /// A generator in the state of `torch.Generator("cpu").manual_seed(seed)`. torch accepts
    /// seeds in `-2^63..2^64` and stores negative ones as their two's complement, which is what
    /// `seed as u64` gives for an `i64`.
    pub fn new(seed: u64) -> Self {
        Self {
            // torch's `mt19937_engine::init_with_uint32` keeps only the low 32 bits.
            mt: Mt19937::new(seed as u32),
            seed,
            next_double_normal: None,
        }
    }

    /// The seed this generator was created with (torch's `initial_seed()`).
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// `uniform_real_distribution<float>(0, 1)`: the low 24 bits of one draw, times 2^-24. Exact
    /// in f32, in `[0, 1)`.
    #[inline]
    fn uniform_f32(&mut self) -> f32 {
        (self.mt.next_u32() & 0x00ff_ffff) as f32 * (1.0 / 16_777_216.0)
    }

    /// `uniform_real_distribution<double>(0, 1)`: `random64()` (first draw high) masked to 53
    /// bits, times 2^-53. Note this keeps only 21 bits of the first draw.
    #[inline]
    fn uniform_f64(&mut self) -> f64 {
        let hi = u64::from(self.mt.next_u32());
        let lo = u64::from(self.mt.next_u32());
        let bits = ((hi << 32) | lo) & ((1u64 << 53) - 1);
        bits as f64 * (1.0 / 9_007_199_254_740_992.0)
    }

    /// One value of `at::normal_distribution<double>(0, 1)`, the path of tensors under 16
    /// elements. Note the roles: the *first* uniform is the angle, the *second* the radius (the
    /// opposite of the 16-wide path), and the radius uses `log1p(-u)`.
    fn normal_scalar(&mut self) -> f64 {
        if let Some(cached) = self.next_double_normal.take() {
            return cached;
        }
        let u1 = self.uniform_f64();
        let u2 = self.uniform_f64();
        let r = (-2.0 * (-u2).ln_1p()).sqrt();
        let theta = TAU * u1;
        let (sin, cos) = theta.sin_cos();
        self.next_double_normal = Some(r * sin);
        r * cos
    }

    /// Fills `out` with what `torch.randn(out.len(), generator=g, dtype=torch.float32)` returns.
    /// [`TorchRng::randn`] without the allocation.
    pub fn fill_randn(&mut self, out: &mut [f32]) {
        let n = out.len();
        if n < 16 {
            // `normal_kernel`'s fallback: element-wise f64 Box–Muller, cast to f32.
            for x in out.iter_mut() {
                *x = self.normal_scalar() as f32;
            }
            return;
        }
        for x in out.iter_mut() {
            *x = self.uniform_f32();
        }
        for block in out.chunks_exact_mut(16) {
            box_muller16_f32(block);
        }
        if n % 16 != 0 {
            // torch does not transform the leftover uniforms: it draws 16 new ones over the last
            // 16 slots, so the values before them (already normal) are partly overwritten.
            let tail = &mut out[n - 16..];
            for x in tail.iter_mut() {
                *x = self.uniform_f32();
            }
            box_muller16_f32(tail);
        }
    }

    /// `torch.randn(n, generator=g, dtype=torch.float32)`, in fill order.
    pub fn randn(&mut self, n: usize) -> Vec<f32> {
        let mut out = vec![0f32; n];
        self.fill_randn(&mut out);
        out
    }

    /// Fills `out` with what `torch.randn(out.len(), generator=g, dtype=torch.float64)` returns.
    /// The structure is that of [`TorchRng::fill_randn`] with f64 uniforms, each taking two
    /// engine draws; values under 16 elements are the same as the f32 path's before its cast.
    pub fn fill_randn_f64(&mut self, out: &mut [f64]) {
        let n = out.len();
        if n < 16 {
            for x in out.iter_mut() {
                *x = self.normal_scalar();
            }
            return;
        }
        for x in out.iter_mut() {
            *x = self.uniform_f64();
        }
        for block in out.chunks_exact_mut(16) {
            box_muller16_f64(block);
        }
        if n % 16 != 0 {
            let tail = &mut out[n - 16..];
            for x in tail.iter_mut() {
                *x = self.uniform_f64();
            }
            box_muller16_f64(tail);
        }
    }

    /// `torch.randn(n, generator=g, dtype=torch.float64)`, in fill order.
    pub fn randn_f64(&mut self, n: usize) -> Vec<f64> {
        let mut out = vec![0f64; n];
        self.fill_randn_f64(&mut out);
        out
    }

    /// diffusers' `randn_tensor` with a CPU generator: `torch.randn(shape, dtype=dtype)` on the
    /// CPU, then moved to `device`.
    ///
    /// For f16 and bf16 torch runs the f32 algorithm and rounds each value (its scalar path
    /// converts f64 → f32 → half, too), so drawing in f32 and casting on the CPU is exact. f64
    /// has its own stream ([`TorchRng::randn_f64`]). Other dtypes are refused before anything is
    /// drawn, so an error leaves the stream untouched.
    pub fn randn_tensor(
        &mut self,
        shape: impl Into<Shape>,
        dtype: DType,
        device: &Device,
    ) -> Result<Tensor> {
        let shape = shape.into();
        let n = shape.elem_count();
        let cpu = match dtype {
            DType::F32 | DType::F16 | DType::BF16 => {
                Tensor::from_vec(self.randn(n), shape, &Device::Cpu)?.to_dtype(dtype)?
            }
            DType::F64 => Tensor::from_vec(self.randn_f64(n), shape, &Device::Cpu)?,
            other => {
                return Err(Error::option(
                    "dtype",
                    format!(
                        "random noise is drawn as f16, bf16, f32 or f64, not {}",
                        other.as_str()
                    ),
                ))
            }
        };
        Ok(cpu.to_device(device)?)
    }
}

/// torch's portable `NormalFill16<float>` on one block: `u1 = 1 - d[j]` (so the log never sees
/// 0), `r = sqrt(-2 ln u1)` in f32, `θ = 2π·u2` with 2π a double so θ, cos and sin are f64,
/// and `r·cos θ` rounded once from f64 to f32. (torch writes `fma(r·cos θ, std, mean)`, which is
/// the product itself for std 1 and mean 0.)
#[inline]
fn box_muller16_f32(block: &mut [f32]) {
    // Callers pass exactly 16 values: radius inputs in the first 8, angles in the last 8.
    let (first, second) = block.split_at_mut(8);
    for (a, b) in first.iter_mut().zip(second.iter_mut()) {
        let u1 = 1.0f32 - *a;
        let radius = (-2.0f32 * u1.ln()).sqrt();
        let theta = TAU * f64::from(*b);
        let (sin, cos) = theta.sin_cos();
        *a = (f64::from(radius) * cos) as f32;
        *b = (f64::from(radius) * sin) as f32;
    }
}

/// `NormalFill16<double>`: the same transform entirely in f64.
#[inline]
fn box_muller16_f64(block: &mut [f64]) {
    let (first, second) = block.split_at_mut(8);
    for (a, b) in first.iter_mut().zip(second.iter_mut()) {
        let radius = (-2.0 * (1.0 - *a).ln()).sqrt();
        let (sin, cos) = (TAU * *b).sin_cos();
        *a = radius * cos;
        *b = radius * sin;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mt19937_matches_the_reference_sequence() {
        // Matsumoto–Nishimura's reference: seed 5489 starts with 3499211612, and the C++
        // standard requires the 10000th output of a default-seeded mt19937 to be 4123659995.
        let mut mt = Mt19937::new(5489);
        assert_eq!(mt.next_u32(), 3_499_211_612);
        let mut last = 0;
        for _ in 1..10_000 {
            last = mt.next_u32();
        }
        assert_eq!(last, 4_123_659_995);
    }

    #[test]
    fn same_seed_same_stream() {
        let mut a = TorchRng::new(42);
        let mut b = TorchRng::new(42);
        for n in [1, 7, 16, 37, 3, 4096] {
            assert_eq!(a.randn(n), b.randn(n));
        }
    }

    #[test]
    fn different_seeds_differ() {
        for n in [1, 15, 16, 100] {
            assert_ne!(TorchRng::new(0).randn(n), TorchRng::new(1).randn(n));
            assert_ne!(TorchRng::new(42).randn(n), TorchRng::new(43).randn(n));
        }
    }

    #[test]
    fn only_the_low_32_bits_of_the_seed_count() {
        let a = TorchRng::new(5).randn(40);
        assert_eq!(a, TorchRng::new((1 << 32) + 5).randn(40));
        assert_eq!(a, TorchRng::new(0xffff_ffff_0000_0005).randn(40));
        assert_eq!(TorchRng::new(5).seed(), 5);
    }

    #[test]
    fn small_draws_share_the_cached_pair() {
        // Two single draws are the cos and the cached sin of one pair: the same as one draw of 2.
        let mut a = TorchRng::new(3);
        let pair = a.randn(2);
        let mut b = TorchRng::new(3);
        let first = b.randn(1);
        let second = b.randn(1);
        assert_eq!(pair, [first[0], second[0]]);
        // ... and a big draw in between neither uses nor clears the cache.
        let mut c = TorchRng::new(3);
        let first = c.randn(1);
        let _ = c.randn(64);
        let after = c.randn(1);
        assert_eq!([first[0], after[0]], *pair);
    }

    #[test]
    fn odd_sizes_redraw_the_tail() {
        // n = 17 transforms the first 16 uniforms, then draws 16 fresh ones into slots 1..17: the
        // first value equals that of n = 16, the rest come from the fresh block.
        let a = TorchRng::new(9).randn(16);
        let b = TorchRng::new(9).randn(17);
        assert_eq!(a[0], b[0]);
        assert_ne!(a[1..], b[1..]);
        // A multiple of 16 is a plain prefix of a longer multiple of 16.
        let c = TorchRng::new(9).randn(64);
        assert_eq!(a, c[..16]);
    }

    #[test]
    fn empty_draws_consume_nothing() {
        let mut a = TorchRng::new(11);
        assert!(a.randn(0).is_empty());
        assert_eq!(a.randn(20), TorchRng::new(11).randn(20));
    }

    #[test]
    fn values_look_standard_normal() {
        let v = TorchRng::new(123).randn(1 << 18);
        let n = v.len() as f64;
        let mean = v.iter().map(|&x| f64::from(x)).sum::<f64>() / n;
        let var = v
            .iter()
            .map(|&x| (f64::from(x) - mean).powi(2))
            .sum::<f64>()
            / n;
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 1.0).abs() < 0.01, "variance {var}");
        assert!(v.iter().all(|x| x.is_finite()));
    }

    #[test]
    fn randn_tensor_has_the_shape_and_dtype_and_the_stream() -> Result<()> {
        let mut rng = TorchRng::new(5);
        let t = rng.randn_tensor((1, 3, 4, 5), DType::F32, &Device::Cpu)?;
        assert_eq!(t.dims(), [1, 3, 4, 5]);
        let flat: Vec<f32> = t.flatten_all()?.to_vec1()?;
        assert_eq!(flat, TorchRng::new(5).randn(60));
        let h = TorchRng::new(5).randn_tensor(60, DType::F16, &Device::Cpu)?;
        assert_eq!(h.dtype(), DType::F16);
        Ok(())
    }

    #[test]
    fn non_float_dtypes_are_refused_without_drawing() {
        let mut rng = TorchRng::new(8);
        let err = rng.randn_tensor((2, 2), DType::U8, &Device::Cpu);
        assert!(matches!(err, Err(Error::InvalidOption { .. })));
        assert_eq!(rng.randn(20), TorchRng::new(8).randn(20));
    }
}
