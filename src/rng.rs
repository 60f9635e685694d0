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
//!   the size is not a multiple of 16, 16 **fresh** uniforms overwrite the last 16 slots and get
//!   the same transform. f16/bf16 tensors compute in f32 the same way but draw block by block,
//!   so they skip the `n % 16` leftover uniforms the f32 path draws and throws away.
//! - `aten/src/ATen/core/DistributionsHelper.h` (`normal_distribution<double>`): tensors under 16
//!   elements are filled one value at a time by f64 Box–Muller from two f64 uniforms (the first
//!   gives the angle, the second the radius via `log1p`), returning `r·cos θ` and caching
//!   `r·sin θ` in the generator for the next small draw. The cache outlives the call and is
//!   neither used nor cleared by the ≥16 path.
//! - `aten/src/ATen/native/cpu/avx_mathfun.h` (`log256_ps`, `sincos256_ps`): see below.
//!
//! The f32 block transform exists twice in torch, and which one runs depends on the CPU torch
//! dispatches to, so torch's own f32 noise differs between machines: in torch 2.15 about 38% of
//! values differ between the two, by up to 2e-6 (a few ulps). [`NormalKernel`] picks one; [`TorchRng::new`] takes the one torch would
//! use on this machine:
//!
//! - [`NormalKernel::Avx2`]: x86-64 CPUs with AVX2 (torch's AVX2 *and* AVX-512 builds use it).
//!   Box–Muller entirely in f32 with the Cephes polynomials of `avx_mathfun.h`, compiled with
//!   fused multiply-adds. Ported here operation by operation; it needs nothing but IEEE f32
//!   arithmetic and `fma`, so it is bit-exact on every platform.
//! - [`NormalKernel::Portable`]: everything else (ARM, including Apple silicon, and x86 without
//!   AVX2). The same Box–Muller in f32 with the C library's `logf`, `sinf` and `cosf`; bit-exact
//!   where torch and this crate share that libm.
//!
//! f64 draws and draws under 16 values use the C library's f64 `log`/`log1p`/`sin`/`cos` the way
//! torch does, on every CPU.

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
    /// Which of torch's f32 Box–Muller block kernels to follow.
    kernel: NormalKernel,
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
            .field("kernel", &self.kernel)
            .field("mt_index", &self.mt.next)
            .field("next_double_normal", &self.next_double_normal)
            .finish()
    }
}

/// Which of torch's two CPU kernels for f32 `randn` blocks of 16 to reproduce. They consume the
/// same uniforms and differ by a few ulps in over a third of the values; f64 draws and draws of
/// fewer than 16 values are the same under both.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NormalKernel {
    /// torch's `NormalFill16<float>` specialisation for `CPU_CAPABILITY_AVX2`, which its AVX-512
    /// kernels use as well: f32 Cephes `log`/`sincos` from `avx_mathfun.h` with fused
    /// multiply-adds. What torch runs on any x86-64 CPU with AVX2 and FMA.
    Avx2,
    /// torch's generic `NormalFill16`: f32 with libm `logf`/`sinf`/`cosf`. What torch runs on ARM
    /// (Apple silicon included), on x86 without AVX2, and under `ATEN_CPU_CAPABILITY=default`.
    Portable,
}

impl NormalKernel {
    /// The kernel torch picks on the CPU this runs on (torch's dispatcher takes its AVX2 kernels
    /// when the CPU has AVX2 and FMA).
    pub fn host() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                return Self::Avx2;
            }
        }
        Self::Portable
    }
}

impl Default for NormalKernel {
    fn default() -> Self {
        Self::host()
    }
}

impl TorchRng {
    /// A generator in the state of `torch.Generator("cpu").manual_seed(seed)`, drawing as torch
    /// does on this machine ([`NormalKernel::host`]). torch accepts seeds in `-2^63..2^64` and
    /// stores negative ones as their two's complement, which is what `seed as u64` gives for an
    /// `i64`.
    pub fn new(seed: u64) -> Self {
        Self::with_kernel(seed, NormalKernel::host())
    }

    /// Like [`TorchRng::new`], reproducing torch on a given kind of CPU, e.g. to match noise
    /// recorded on another machine.
    pub fn with_kernel(seed: u64, kernel: NormalKernel) -> Self {
        Self {
            // torch's `mt19937_engine::init_with_uint32` keeps only the low 32 bits.
            mt: Mt19937::new(seed as u32),
            kernel,
            seed,
            next_double_normal: None,
        }
    }

    /// The seed this generator was created with (torch's `initial_seed()`).
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The f32 block kernel this generator follows.
    pub fn kernel(&self) -> NormalKernel {
        self.kernel
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
        self.fill_f32(out, true);
    }

    /// Fills `out` with the f32 values `torch.randn(out.len(), generator=g, dtype=...)` computes
    /// for `torch.float16` or `torch.bfloat16`, before rounding them to that dtype.
    ///
    /// The values are those of the f32 path when `out.len()` is a multiple of 16 or under 16, but
    /// not otherwise: torch's half-precision loop draws uniforms block by block through a stack
    /// buffer, so it never draws the `len % 16` leftovers that the f32 path draws and then
    /// overwrites. Its last 16 values therefore come from different uniforms, and the stream
    /// afterwards is `len % 16` draws behind the f32 one.
    pub fn fill_randn_for_half(&mut self, out: &mut [f32]) {
        self.fill_f32(out, false);
    }

    /// torch's `normal_kernel` for an f32 computation: element-wise f64 Box–Muller under 16
    /// values, else `normal_fill`. `draw_leftovers` is whether the uniforms of a final partial
    /// block are drawn (the f32 path) or skipped (the f16/bf16 path) before the tail's redraw.
    fn fill_f32(&mut self, out: &mut [f32], draw_leftovers: bool) {
        let n = out.len();
        if n < 16 {
            // Each value converted f64 -> f32, as torch's `static_cast<float>` (and, for half
            // types, `static_cast<Half>(double)`, which goes through float).
            for x in out.iter_mut() {
                *x = self.normal_scalar() as f32;
            }
            return;
        }
        let box_muller16: fn(&mut [f32]) = match self.kernel {
            NormalKernel::Avx2 => box_muller16_avx2,
            NormalKernel::Portable => box_muller16_portable,
        };
        let drawn = if draw_leftovers { n } else { n - n % 16 };
        for x in out[..drawn].iter_mut() {
            *x = self.uniform_f32();
        }
        for block in out.chunks_exact_mut(16) {
            box_muller16(block);
        }
        if n % 16 != 0 {
            // torch does not transform the leftover uniforms: it draws 16 new ones over the last
            // 16 slots, so the values before them (already normal) are partly overwritten.
            let tail = &mut out[n - 16..];
            for x in tail.iter_mut() {
                *x = self.uniform_f32();
            }
            box_muller16(tail);
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
    /// For f16 and bf16 torch computes in f32 and rounds each value, but with its own draw
    /// pattern for sizes that are not multiples of 16 ([`TorchRng::fill_randn_for_half`]). f64 has
    /// its own stream ([`TorchRng::randn_f64`]). Other dtypes are refused before anything is
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
            DType::F32 => Tensor::from_vec(self.randn(n), shape, &Device::Cpu)?,
            DType::F16 | DType::BF16 => {
                let mut values = vec![0f32; n];
                self.fill_randn_for_half(&mut values);
                // torch rounds each f32 result to nearest-even, as candle's cast does.
                Tensor::from_vec(values, shape, &Device::Cpu)?.to_dtype(dtype)?
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

/// torch's portable `NormalFill16<float>` on one block of 16, all in f32 with libm: `u1 = 1 -
/// d[j]` (so the log never sees 0), `r = sqrt(-2 ln u1)`, `θ = 2π·u2` computed with 2π as a
/// double and then stored in an f32 (torch's `const opmath_t theta`), `r·cos θ` and `r·sin θ`.
/// (torch writes `fma(r·cos θ, std, mean)`, which is the product itself for std 1 and mean 0.)
fn box_muller16_portable(block: &mut [f32]) {
    // Radius inputs in the first 8, angles in the last 8.
    let (first, second) = block.split_at_mut(8);
    for (a, b) in first.iter_mut().zip(second.iter_mut()) {
        let radius = (-2.0f32 * (1.0 - *a).ln()).sqrt();
        let theta = (TAU * f64::from(*b)) as f32;
        let (sin, cos) = theta.sin_cos();
        *a = radius * cos;
        *b = radius * sin;
    }
}

/// torch's AVX2 `NormalFill16<float>` on one block of 16, lane by lane: the same Box–Muller in
/// f32 throughout, with `log256_ps` and `sincos256_ps` from `avx_mathfun.h` (Cephes polynomials)
/// instead of libm.
fn box_muller16_avx2(block: &mut [f32]) {
    // `_mm256_set1_ps(2.0f * c10::pi<double>)`: 2π rounded to f32.
    const TWO_PI: f32 = TAU as f32;
    let (first, second) = block.split_at_mut(8);
    for (a, b) in first.iter_mut().zip(second.iter_mut()) {
        let radius = (-2.0f32 * cephes_log(1.0 - *a)).sqrt();
        let (sin, cos) = cephes_sincos(TWO_PI * *b);
        // `_mm256_fmadd_ps(r·cos, std, mean)` with std 1 and mean 0 is the product.
        *a = radius * cos;
        *b = radius * sin;
    }
}

// A note on `mul_add` in the two Cephes ports below. avx_mathfun writes every step as separate
// `_mm256_mul_ps` / `_mm256_add_ps`, but GCC implements those as plain vector `*` and `+`, and
// torch compiles its AVX2 kernels with `-mfma` under GCC's default `-ffp-contract=fast`: every
// product whose only use is an add or subtract becomes one fused multiply-add. The `mul_add`
// calls sit exactly where that happens; the plain products are those used by another product or
// a conversion. This was pinned against torch 2.15's outputs: the unfused reading differs in about
// 1% of values, and the order chosen for `y·z + e·q1` (the first product is the one fused) and
// the fused range reduction were both confirmed on values where the alternatives differ.

/// `log256_ps` for one lane, for `x` in `(0, 1]` (the only inputs Box–Muller gives it). Cephes'
/// logf: split off the exponent, bring the mantissa into `[sqrt(1/2), sqrt(2))`, then a degree-9
/// polynomial and `e·ln 2` in two parts.
#[inline]
fn cephes_log(x: f32) -> f32 {
    // avx_mathfun's constants are double literals stored into float arrays; they are given by
    // their f32 bits so no second decimal rounding can creep in (the C literal in the comment).
    const SQRTHF: f32 = f32::from_bits(0x3f35_04f3); // 0.707106781186547524
    const P: [f32; 9] = [
        f32::from_bits(0x3d90_21bb), // 7.0376836292E-2
        f32::from_bits(0xbdeb_d1b8), // -1.1514610310E-1
        f32::from_bits(0x3def_251a), // 1.1676998740E-1
        f32::from_bits(0xbdfe_5d4f), // -1.2420140846E-1
        f32::from_bits(0x3e11_e9bf), // 1.4249322787E-1
        f32::from_bits(0xbe2a_ae50), // -1.6668057665E-1
        f32::from_bits(0x3e4c_ceac), // 2.0000714765E-1
        f32::from_bits(0xbe7f_fffc), // -2.4999993993E-1
        f32::from_bits(0x3eaa_aaaa), // 3.3333331174E-1
    ];
    const Q1: f32 = f32::from_bits(0xb95e_8083); // -2.12194440e-4
    const Q2: f32 = f32::from_bits(0x3f31_8000); // 0.693359375
                                                 // Clamp denormals to the smallest normal, as avx_mathfun does.
    let x = x.max(f32::MIN_POSITIVE);
    let bits = x.to_bits();
    let mut e = ((bits >> 23) as i32 - 0x7f) as f32 + 1.0;
    // The mantissa with exponent -1: a value in [0.5, 1).
    let mut m = f32::from_bits((bits & !0x7f80_0000) | 0.5f32.to_bits());
    if m < SQRTHF {
        e -= 1.0;
        m = m - 1.0 + m;
    } else {
        m -= 1.0;
    }
    let z = m * m;
    let mut y = P[0];
    for &p in &P[1..] {
        y = y.mul_add(m, p);
    }
    y *= m;
    y = y.mul_add(z, e * Q1);
    y = (-z).mul_add(0.5, y);
    e.mul_add(Q2, m + y)
}

/// `sincos256_ps` for one lane: Cephes' sinf/cosf. Reduce by multiples of π/4 (an even octant
/// count j, with π/4 split in three parts for extra precision), evaluate the sine and cosine
/// polynomials on the remainder, and let j pick which is which and the signs.
#[inline]
fn cephes_sincos(x: f32) -> (f32, f32) {
    const FOUR_OVER_PI: f32 = f32::from_bits(0x3fa2_f983); // 1.27323954473516
    const MINUS_DP1: f32 = f32::from_bits(0xbf49_0000); // -0.78515625
    const MINUS_DP2: f32 = f32::from_bits(0xb97d_a000); // -2.4187564849853515625e-4
    const MINUS_DP3: f32 = f32::from_bits(0xb322_2169); // -3.77489497744594108e-8
    const SIN_P: [f32; 3] = [
        f32::from_bits(0xb94c_a1f9), // -1.9515295891E-4
        f32::from_bits(0x3c08_839e), // 8.3321608736E-3
        f32::from_bits(0xbe2a_aaa3), // -1.6666654611E-1
    ];
    const COS_P: [f32; 3] = [
        f32::from_bits(0x37cc_f5ce), // 2.443315711809948E-005
        f32::from_bits(0xbab6_061a), // -1.388731625493765E-003
        f32::from_bits(0x3d2a_aaa5), // 4.166664568298827E-002
    ];

    let sign_in = x.is_sign_negative();
    let mut x = x.abs();
    // Truncate, then round up to even: j = (j + 1) & !1.
    let j = (((x * FOUR_OVER_PI) as i32) + 1) & !1;
    let y = j as f32;
    let sin_negative = sign_in ^ (j & 4 != 0);
    let cos_negative = !(j - 2) & 4 != 0;
    // Which polynomial gives the sine: the sine one in octants 0 and 3 (mod 4), else the cosine.
    let sine_poly_for_sin = j & 2 == 0;

    x = y.mul_add(MINUS_DP1, x);
    x = y.mul_add(MINUS_DP2, x);
    x = y.mul_add(MINUS_DP3, x);

    let z = x * x;
    let mut yc = COS_P[0].mul_add(z, COS_P[1]);
    yc = yc.mul_add(z, COS_P[2]);
    yc *= z;
    yc = yc.mul_add(z, -(z * 0.5)) + 1.0;

    let mut ys = SIN_P[0].mul_add(z, SIN_P[1]);
    ys = ys.mul_add(z, SIN_P[2]);
    ys = (ys * z).mul_add(x, x);

    // avx_mathfun selects with masks and adds: the unselected term is +0.0, which only matters
    // for the sign of a zero, kept the same here.
    let (s_cos_part, s_sin_part) = if sine_poly_for_sin {
        (0.0, ys)
    } else {
        (yc, 0.0)
    };
    let sin = s_cos_part + s_sin_part;
    let cos = (yc - s_cos_part) + (ys - s_sin_part);
    (
        if sin_negative { -sin } else { sin },
        if cos_negative { -cos } else { cos },
    )
}

/// `NormalFill16<double>`: the portable transform entirely in f64 (torch has no SIMD variant for
/// doubles, and nothing in it can be fused).
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
    fn half_precision_skips_the_leftover_uniforms() {
        // f16/bf16 of 17 values: one block of uniforms 0..16, then the tail from 16..32; the
        // f32 path would draw 0..17 and take the tail from 17..33.
        let mut half = TorchRng::new(21);
        let mut values = [0f32; 17];
        half.fill_randn_for_half(&mut values);
        let reference = TorchRng::new(21).randn(32);
        assert_eq!(values[0], reference[0]);
        assert_eq!(values[1..], reference[16..]);
        // The stream goes on after 32 uniforms, not 33.
        let mut f32_path = TorchRng::new(21);
        let _ = f32_path.randn(32);
        assert_eq!(half.randn(16), f32_path.randn(16));
        // Multiples of 16 and small draws are the f32 path's.
        for n in [3, 16, 48] {
            let mut v = vec![0f32; n];
            TorchRng::new(4).fill_randn_for_half(&mut v);
            assert_eq!(v, TorchRng::new(4).randn(n));
        }
    }

    #[test]
    fn kernels_differ_only_in_the_f32_blocks() {
        let mut avx = TorchRng::with_kernel(17, NormalKernel::Avx2);
        let mut portable = TorchRng::with_kernel(17, NormalKernel::Portable);
        assert_eq!(avx.kernel(), NormalKernel::Avx2);
        assert_eq!(avx.randn(7), portable.randn(7));
        assert_eq!(avx.randn_f64(40), portable.randn_f64(40));
        let (a, p) = (avx.randn(4096), portable.randn(4096));
        assert_ne!(a, p);
        for (x, y) in a.iter().zip(&p) {
            assert!((x - y).abs() <= 4e-6 * x.abs().max(1.0), "{x} vs {y}");
        }
        // Same number of draws either way.
        assert_eq!(avx.randn(5), portable.randn(5));
    }

    #[test]
    fn cephes_ports_are_accurate() {
        // Not a parity check (the fixtures do that), a guard against a mistyped constant.
        for k in 1..=4096u32 {
            let u = k as f32 / 4096.0;
            let log_err = (f64::from(cephes_log(u)) - f64::from(u).ln()).abs();
            assert!(
                log_err <= 2.0 * f64::from(f32::EPSILON),
                "log({u}): {log_err}"
            );
            let theta = std::f32::consts::TAU * u;
            let (s, c) = cephes_sincos(theta);
            let t = f64::from(theta);
            assert!((f64::from(s) - t.sin()).abs() < 3e-7, "sin({theta})");
            assert!((f64::from(c) - t.cos()).abs() < 3e-7, "cos({theta})");
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn host_kernel_follows_the_cpu() {
        let simd = std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma");
        let expected = if simd {
            NormalKernel::Avx2
        } else {
            NormalKernel::Portable
        };
        assert_eq!(NormalKernel::host(), expected);
        assert_eq!(TorchRng::new(0).kernel(), expected);
    }

    #[test]
    fn non_float_dtypes_are_refused_without_drawing() {
        let mut rng = TorchRng::new(8);
        let err = rng.randn_tensor((2, 2), DType::U8, &Device::Cpu);
        assert!(matches!(err, Err(Error::InvalidOption { .. })));
        assert_eq!(rng.randn(20), TorchRng::new(8).randn(20));
    }
}
